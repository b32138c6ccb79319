//! `raftkv-server`: one raftkv node in the foreground, or a local loopback cluster.
//!
//! ```text
//! raftkv-server --config FILE        run one node from a TOML config file
//! raftkv-server local [--nodes 3]    start a whole cluster on 127.0.0.1 as child processes
//! ```
//! Exit codes: 0 after a clean shutdown (SIGINT/SIGTERM), 1 on a runtime failure
//! (storage, network), 2 on a usage or configuration error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use raftkv::config::Config;
use raftkv::server::event_loop::EventLoop;
use raftkv::server::local::{self, LocalOptions};
use raftkv::server::node::Node;

/// A Raft-replicated key-value store node.
#[derive(Parser)]
#[command(name = "raftkv-server", version, about, long_about = None)]
#[command(args_conflicts_with_subcommands = true)]
struct Args {
    /// Run one node from this TOML config file (keys and defaults: docs/CONFIG.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start a loopback cluster from the embedded default config, as child processes;
    /// prints each node's client address and a CLI example; Ctrl-C stops every node.
    Local {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Directory for configs, data and logs (default: a new directory under the
        /// system temp dir, kept after exit).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match (args.command, args.config) {
        (Some(Command::Local { nodes, dir }), _) => run_local(nodes, dir),
        (None, Some(path)) => run_node(&path),
        (None, None) => {
            eprintln!("raftkv-server: give --config FILE to run a node, or `local` for a cluster");
            eprintln!("try `raftkv-server --help`");
            ExitCode::from(2)
        }
    }
}

fn run_local(nodes: usize, dir: Option<PathBuf>) -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let options = LocalOptions {
        nodes,
        dir,
        ..LocalOptions::default()
    };
    match local::run_local(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(local::LocalError::NodeCount(n)) => {
            eprintln!(
                "raftkv-server local: --nodes must be between 1 and {}, got {n}",
                local::NODES_MAX
            );
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("raftkv-server local: {e}");
            ExitCode::from(1)
        }
    }
}

fn run_node(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("raftkv-server: {e}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(config.log.level.to_level_filter().as_str()),
    )
    .format_timestamp_millis()
    .init();
    log::info!(
        "node {} of cluster {}: peers on {}, clients on {}, data in {}",
        config.node_id,
        config.cluster_id,
        config.listen_peer,
        config.listen_client,
        config.data_dir.display()
    );
    let node = match Node::open(config.clone()) {
        Ok(node) => node,
        Err(e) => {
            log::error!("cannot open node storage: {e}");
            return ExitCode::from(1);
        }
    };
    let mut event_loop = match EventLoop::new(&config, node) {
        Ok(event_loop) => event_loop,
        Err(e) => {
            log::error!("cannot listen: {e}");
            return ExitCode::from(1);
        }
    };
    match event_loop.run() {
        Ok(()) => {
            log::info!("stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("{e}; stopping");
            ExitCode::from(1)
        }
    }
}
