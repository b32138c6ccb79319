//! `raftkv-faults`: the long-running fault-injection suite against real `raftkv-server`
//! processes, and the re-checker of a kept history.
//!
//! ```text
//! raftkv-faults --duration 1h --nemesis all --nodes 3   rounds until the time is up
//! raftkv-faults --check DIR/history.jsonl               check a kept history again
//! ```
//! Prints one summary line per round; on the first failing round it prints the kept
//! folder (history, fault log, node logs and data) and how to re-check it, and exits 1.
//! Exit codes: 0 all rounds passed, 1 a round failed, 2 usage error, 3 IO error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use raftkv::tools::faults::checker::{STEPS_MAX_DEFAULT, check_history};
use raftkv::tools::faults::history;
use raftkv::tools::faults::nemesis::parse_kinds;
use raftkv::tools::faults::round::{RoundOptions, run_round};

/// Fault injection against a real raftkv cluster: kill -9, SIGSTOP, partitions, delay.
#[derive(Parser)]
#[command(name = "raftkv-faults", version, about, long_about = None)]
struct Args {
    /// Total run time, e.g. 90s, 10m, 1h.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    duration: Duration,
    /// Workload time of one round (each round starts a fresh cluster).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    round: Duration,
    /// Faults to inject: `all` or a comma-separated list of kill, pause, isolate-leader,
    /// majority-minority, bridge, one-way, stall-leader, delay.
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// Faults injected together before each heal (e.g. 2: a kill during a partition).
    #[arg(long, default_value_t = 1)]
    overlap: usize,
    /// Nodes per cluster.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Concurrent client threads.
    #[arg(long, default_value_t = 5)]
    clients: usize,
    /// Keys the clients share.
    #[arg(long, default_value_t = 5)]
    keys: usize,
    /// Client request timeout in milliseconds.
    #[arg(long, default_value_t = 1500)]
    request_timeout_ms: u64,
    /// Raft tick of the nodes in milliseconds.
    #[arg(long, default_value_t = 50)]
    tick_ms: u64,
    /// `snapshot.threshold_entries` of the nodes: small, so snapshots, log compaction and
    /// InstallSnapshot to restarted or cut-off nodes happen during the faults.
    #[arg(long, default_value_t = 2000)]
    snapshot_entries: u64,
    /// First seed (round N uses seed + N); default: from the clock.
    #[arg(long)]
    seed: Option<u64>,
    /// Directory for round folders (default: a new one under the temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the folder of passing rounds too.
    #[arg(long)]
    keep: bool,
    /// The server binary (default: `raftkv-server` next to this binary).
    #[arg(long)]
    server: Option<PathBuf>,
    /// Linearizability search budget per key, in steps.
    #[arg(long, default_value_t = STEPS_MAX_DEFAULT)]
    steps_max: u64,
    /// Self-test: the clients read with stale local reads from random nodes, which is
    /// not linearizable; under partitions a round must then FAIL.
    #[arg(long)]
    stale_reads: bool,
    /// TLS on every port and link of the nodes (development certificates in each round's
    /// directory); the link proxies carry the TLS bytes.
    #[arg(long)]
    tls: bool,
    /// Check this history file (JSON lines) instead of running.
    #[arg(long, value_name = "FILE")]
    check: Option<PathBuf>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a number and a unit (s, m, h)"))?;
    let seconds = match unit {
        "" | "s" => number,
        "m" => number * 60,
        "h" => number * 3600,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (s, m, h)")),
    };
    Ok(Duration::from_secs(seconds))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(path) = &args.check {
        return recheck(path, args.steps_max);
    }
    let nemesis = match parse_kinds(&args.nemesis) {
        Ok(kinds) => kinds,
        Err(message) => {
            eprintln!("raftkv-faults: --nemesis: {message}");
            return ExitCode::from(2);
        }
    };
    if !(1..=raftkv::server::local::NODES_MAX).contains(&args.nodes) || args.clients == 0 {
        eprintln!("raftkv-faults: --nodes must be 1..=9 and --clients at least 1");
        return ExitCode::from(2);
    }
    let server_exe = match args.server.clone().or_else(default_server) {
        Some(exe) => exe,
        None => {
            eprintln!("raftkv-faults: cannot find raftkv-server; give --server PATH");
            return ExitCode::from(2);
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seed = args.seed.unwrap_or(now.as_nanos() as u64);
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("raftkv-faults-{}", now.as_secs())));
    let options = RoundOptions {
        nodes: args.nodes,
        server_exe,
        dir,
        duration: args.round.min(args.duration),
        nemesis,
        quiet_ms: (500, 1500),
        faults_at_once: args.overlap,
        hold_ms: (1000, 3000),
        clients: args.clients,
        keys: args.keys,
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        tick_ms: args.tick_ms,
        snapshot_entries: Some(args.snapshot_entries),
        steps_max: args.steps_max,
        keep: args.keep,
        stale_reads: args.stale_reads,
        tls: args.tls,
    };
    run(&options, args.duration, seed)
}

fn run(options: &RoundOptions, total: Duration, seed: u64) -> ExitCode {
    println!(
        "raftkv-faults: {} nodes, {} clients, {} keys, rounds of {:?} for {:?}, seed {seed:#x}, dir {}",
        options.nodes,
        options.clients,
        options.keys,
        options.duration,
        total,
        options.dir.display()
    );
    let started = Instant::now();
    let (mut operations, mut faults, mut round) = (0, 0, 0u64);
    while started.elapsed() < total {
        let report = match run_round(options, round, seed.wrapping_add(round)) {
            Ok(report) => report,
            Err(error) => {
                eprintln!("raftkv-faults: round {round}: {error}");
                return ExitCode::from(3);
            }
        };
        println!("{}", report.summary());
        operations += report.counts.total;
        faults += report.faults.len();
        if !report.verdict.passed() {
            if let Some(dir) = &report.kept {
                println!(
                    "kept: {} (history.jsonl, nemesis.log, node-N.log, data)",
                    dir.display()
                );
                println!(
                    "re-check: raftkv-faults --check {}",
                    dir.join("history.jsonl").display()
                );
            }
            return ExitCode::from(1);
        }
        round += 1;
    }
    println!(
        "raftkv-faults: {round} rounds passed in {:.0}s: {operations} operations, {faults} faults",
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}

fn recheck(path: &PathBuf, steps_max: u64) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("raftkv-faults: {}: {error}", path.display());
            return ExitCode::from(3);
        }
    };
    let operations = match history::parse(&text) {
        Ok(operations) => operations,
        Err(error) => {
            eprintln!("raftkv-faults: {}: {error}", path.display());
            return ExitCode::from(2);
        }
    };
    let summary = check_history(&operations, steps_max);
    println!(
        "{}: {} operations: {}",
        path.display(),
        operations.len(),
        summary.describe()
    );
    if summary.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn default_server() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let server = exe.parent()?.join("raftkv-server");
    server.exists().then_some(server)
}
