//! `raftkv-server`: one raftkv node in the foreground, or a local loopback cluster.
//!
//! ```text
//! raftkv-server --config FILE                run one node from a TOML config file
//! raftkv-server --config FILE --join ADDR    start a new node that waits to be added
//! raftkv-server local [--nodes 3]            start a whole cluster on 127.0.0.1
//! ```
//! Exit codes: 0 after a clean shutdown (SIGINT/SIGTERM) or once the node was removed
//! from its cluster, 1 on a runtime failure (storage, network, a listen address in use,
//! named with its config key, an unreachable `--join` address, a data directory of a
//! removed node), 2 on a usage or configuration error, or a data directory that is not
//! this node's consistent state (another cluster's or node's, a log whose hard state is
//! missing or behind: the message names the file and the repair).

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use raftkv::client::{self, ClientOptions};
use raftkv::config::{Config, TlsPort};
use raftkv::raft::MemberState;
use raftkv::security::Security;
use raftkv::server::error::RunError;
use raftkv::server::event_loop::EventLoop;
use raftkv::server::fd_limit;
use raftkv::server::local::{self, LocalOptions};
use raftkv::server::node::{Node, OpenError};
use raftkv::server::removal_marker;
use raftkv::server::tls_ports::TlsPorts;
use raftkv::tls::{ClientTls, TlsError};

/// A Raft-replicated key-value store node.
#[derive(Parser)]
#[command(name = "raftkv-server", version, about, long_about = None)]
#[command(args_conflicts_with_subcommands = true)]
struct Args {
    /// Run one node from this TOML config file (keys and defaults: docs/CONFIG.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Join the running cluster that has a member with this client address: start
    /// with no membership and wait until an operator adds this node
    /// (`raftkv-cli member add ID PEER_ADDR CLIENT_ADDR`); the config file's
    /// `members` then need list only this node. Ignored when the data directory
    /// already holds this node's state.
    #[arg(long, value_name = "ADDR", requires = "config")]
    join: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start a loopback cluster from the embedded default config, as child processes;
    /// prints each node's pid and addresses and paste-ready CLI and redis-cli lines. A
    /// node that exits is reported and the others keep running; Ctrl-C stops every node.
    Local {
        /// Number of nodes of a new cluster [default: 3]; a resumed cluster keeps its own.
        #[arg(long)]
        nodes: Option<usize>,
        /// Directory for configs, data and logs (default: a new directory under the
        /// system temp dir, kept after exit). A directory holding a cluster started here
        /// before resumes it: same ids, cluster id, ports and data.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// TLS on every port and link, with development certificates written to
        /// DIR/certs (`raftkv-cli certs init`); the printed commands use them.
        #[arg(long)]
        tls: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match (args.command, args.config) {
        (Some(Command::Local { nodes, dir, tls }), _) => run_local(nodes, dir, tls),
        (None, Some(path)) => run_node(&path, args.join.as_deref()),
        (None, None) => {
            eprintln!("raftkv-server: give --config FILE to run a node, or `local` for a cluster");
            eprintln!("try `raftkv-server --help`");
            ExitCode::from(2)
        }
    }
}

fn run_local(nodes: Option<usize>, dir: Option<PathBuf>, tls: bool) -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let options = LocalOptions {
        nodes,
        dir,
        tls,
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
        Err(e @ local::LocalError::Resume { .. }) => {
            eprintln!("raftkv-server local: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("raftkv-server local: {e}");
            ExitCode::from(1)
        }
    }
}

/// Why a node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
enum ServeError {
    /// The data directory is not this node's consistent state (exit code 2).
    #[error("refusing to start: {0}")]
    Refused(#[source] OpenError),
    /// The node's storage could not be opened.
    #[error("cannot open node storage: {0}")]
    Storage(#[source] OpenError),
    /// The removal marker of the data directory could not be read.
    #[error("{0}")]
    RemovalMarker(#[source] removal_marker::Error),
    /// The data directory is that of a node removed from its cluster.
    #[error(
        "this node was removed from its cluster (configuration committed at index {index}); \
         its data directory {} cannot serve again: start a new node with a new id and an \
         empty data directory (--join), then add it",
        data_dir.display()
    )]
    Removed { index: u64, data_dir: PathBuf },
    /// `--join` could not reach the cluster.
    #[error("--join {addr}: {source}")]
    Join { addr: String, source: JoinError },
    /// A listen address could not be bound; names the key and address, e.g. "key
    /// `listen_client`: cannot bind 127.0.0.1:7001: Address already in use".
    #[error("cannot listen: config {}: {source}", path.display())]
    Listen { path: PathBuf, source: io::Error },
    /// A TLS file of the config cannot be used (exit code 2).
    #[error("config {}: tls: {source}", path.display())]
    Tls { path: PathBuf, source: TlsError },
    /// The event loop stopped on a poll or storage failure.
    #[error("{0}; stopping")]
    Run(#[from] RunError),
}

impl ServeError {
    /// The process exit code (see the crate docs above).
    fn exit_code(&self) -> u8 {
        match self {
            ServeError::Refused(_) | ServeError::Tls { .. } => 2,
            _ => 1,
        }
    }
}

/// Why `--join` could not greet the cluster.
#[derive(Debug, thiserror::Error)]
enum JoinError {
    #[error("cannot reach the cluster within {} s: {source}", JOIN_CONTACT_TIMEOUT.as_secs())]
    Unreachable { source: client::Error },
    #[error("this node is not in its own members list")]
    NotAMember,
    #[error("tls: {0}")]
    Tls(TlsError),
}

fn run_node(path: &Path, join: Option<&str>) -> ExitCode {
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
    // After the logger, so a credentials file open to others is warned about.
    let security = match Security::load(&config.security) {
        Ok(security) => security,
        Err(e) => {
            eprintln!("raftkv-server: config {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    if security.cluster_secret.is_none() {
        log::info!(
            "no security.cluster_secret_file: peers are not authenticated, anyone who \
             reaches the peer port and knows the cluster id can join (docs/SECURITY.md)"
        );
    }
    if security.users.is_some() {
        log::warn!(
            "security.users_file protects the Redis and HTTP ports only: the client port \
             ({}) is not authenticated, keep it private (docs/SECURITY.md)",
            config.listen_client
        );
    }
    match serve(&config, path, join, &security) {
        Ok(()) => {
            log::info!("stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Opens the node of `config` (loaded from `path`), greets the cluster for `--join`, and
/// runs the event loop until a clean stop.
fn serve(
    config: &Config,
    path: &Path,
    join: Option<&str>,
    security: &Security,
) -> Result<(), ServeError> {
    log::info!(
        "node {} of cluster {}: peers on {}, clients on {}, data in {}",
        config.node_id,
        config.cluster_id,
        config.listen_peer,
        config.listen_client,
        config.data_dir.display()
    );
    // Certificates first: a file that cannot be used stops the node before it opens.
    let tls = TlsPorts::load(&config.tls).map_err(|source| ServeError::Tls {
        path: path.to_path_buf(),
        source,
    })?;
    // Every client connection is a file descriptor: take all the kernel allows.
    match fd_limit::raise_open_files_limit() {
        Ok(limit) if limit.after > limit.before => log::info!(
            "open-file limit raised from {} to {} (the hard limit is {})",
            limit.before,
            limit.after,
            limit.hard
        ),
        Ok(limit) => log::info!("open-file limit {} (the hard limit)", limit.after),
        Err(e) => log::warn!("cannot raise the open-file limit: {e}"),
    }
    let node = Node::open(config.clone(), join.is_some()).map_err(|e| match e {
        OpenError::Refused(_) => ServeError::Refused(e),
        OpenError::Failed(_) | OpenError::Replica(_) | OpenError::Backups { .. } => {
            ServeError::Storage(e)
        }
    })?;
    if let Some(index) = node.recorded_removal().map_err(ServeError::RemovalMarker)? {
        return Err(ServeError::Removed {
            index,
            data_dir: config.data_dir.clone(),
        });
    }
    if let Some(addr) = join
        && node.member_state() == MemberState::Joining
    {
        greet_cluster(config, addr).map_err(|source| ServeError::Join {
            addr: addr.to_string(),
            source,
        })?;
    }
    let mut event_loop =
        EventLoop::new(config, node, tls, security).map_err(|source| ServeError::Listen {
            path: path.to_path_buf(),
            source,
        })?;
    event_loop.run()?;
    Ok(())
}

/// How long `--join` keeps trying to reach the cluster before giving up.
const JOIN_CONTACT_TIMEOUT: Duration = Duration::from_secs(15);

/// Checks that the cluster at `addr` answers, and logs how to add this node.
fn greet_cluster(config: &Config, addr: &str) -> Result<(), JoinError> {
    // With TLS on the client port, the cluster's client ports speak TLS: trust its CA
    // and present this node's certificate.
    let tls = match (
        &config.tls.ca_file,
        &config.tls.cert_file,
        &config.tls.key_file,
    ) {
        (Some(ca), Some(cert), Some(key)) if config.tls.on(TlsPort::Client) => {
            Some(ClientTls::load(ca, Some((cert, key))).map_err(JoinError::Tls)?)
        }
        _ => None,
    };
    let options = ClientOptions {
        tls,
        ..ClientOptions::default()
    };
    let started = Instant::now();
    let status = loop {
        match client::status_at(addr, &options) {
            Ok(status) => break status,
            Err(source) if started.elapsed() >= JOIN_CONTACT_TIMEOUT => {
                return Err(JoinError::Unreachable { source });
            }
            Err(e) => {
                log::warn!("cannot reach {addr} yet: {e}; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    };
    let members: Vec<String> = status
        .members
        .iter()
        .map(|m| format!("{}{}", m.id, if m.voter { "" } else { " (learner)" }))
        .collect();
    if status.members.iter().any(|m| m.id == config.node_id) {
        log::info!("joining: the cluster already lists node {}", config.node_id);
        return Ok(());
    }
    let me = config.self_member().ok_or(JoinError::NotAMember)?;
    log::info!(
        "joining the cluster of {addr} (members {}; leader {}): waiting to be added; run\n  \
         raftkv-cli --cluster {addr} member add {} {} {}",
        members.join(", "),
        status.leader_id,
        config.node_id,
        me.peer_addr,
        me.client_addr
    );
    Ok(())
}
