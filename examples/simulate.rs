//! The simulation soak runner: runs many seeds of the deterministic simulation (the
//! harness of `tests/sim/`) and prints progress; on the first failure it prints the seed
//! and the one-line command that replays it, and exits 1.
//!
//! `cargo run --release --example simulate -- --seeds 100000 --nodes 5 [--spares 2] [--first 0]`

#[path = "../tests/sim/mod.rs"]
mod sim;

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(about = "Run seeds of the deterministic raftkv simulation")]
struct Args {
    /// Number of seeds to run.
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// Cluster size.
    #[arg(long, default_value_t = 5)]
    nodes: u64,
    /// Spare nodes started empty, for membership changes (0: none).
    #[arg(long, default_value_t = 0)]
    spares: u64,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    first: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let started = Instant::now();
    let (mut events, mut operations) = (0u64, 0usize);
    let every = (args.seeds / 20).max(1);
    for (done, seed) in (args.first..args.first + args.seeds).enumerate() {
        let mut options = sim::Options::new(seed, args.nodes);
        options.spares = args.spares;
        match std::panic::catch_unwind(|| sim::run(&options)) {
            Ok(Ok(report)) => {
                events += report.events;
                operations += report.operations;
            }
            Ok(Err(failure)) => {
                eprintln!("FAILED: {failure}");
                return ExitCode::FAILURE;
            }
            Err(_) => {
                eprintln!(
                    "FAILED: seed {seed} ({} nodes) panicked\nreplay: RAFTKV_SEED={seed} \
                     RAFTKV_NODES={} RAFTKV_SPARES={} cargo test --release --test sim replay \
                     -- --nocapture",
                    args.nodes, args.nodes, args.spares
                );
                return ExitCode::FAILURE;
            }
        }
        let done = done as u64 + 1;
        if done.is_multiple_of(every) || done == args.seeds {
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "{done}/{} seeds ({} nodes) ok, {:.0} seeds/s, {events} events ({:.0} \
                 events/s), {operations} client operations checked",
                args.seeds,
                args.nodes,
                done as f64 / seconds,
                events as f64 / seconds
            );
        }
    }
    ExitCode::SUCCESS
}
