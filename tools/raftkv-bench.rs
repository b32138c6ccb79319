//! `raftkv-bench`: the bundled benchmark client. All logic lives in
//! `raftkv::tools::bench`; this main parses options, installs the Ctrl-C flag (so a
//! spawned cluster is always stopped), and prints the report.
//!
//! Exit codes: 0 ok, 1 the run failed (cluster unreachable, node died, IO), 2 usage.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::Parser;
use raftkv::tools::bench::{BenchArgs, BenchError, run};

fn main() -> ExitCode {
    let args = BenchArgs::parse();
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(error) = signal_hook::flag::register(signal, Arc::clone(&interrupted)) {
            eprintln!("raftkv-bench: cannot install the signal handler: {error}");
            return ExitCode::from(1);
        }
    }
    match run(&args, &interrupted) {
        Ok(report) => {
            if args.json {
                println!("{}", report.render_json());
            } else {
                print!("{}", report.render_text());
            }
            ExitCode::SUCCESS
        }
        Err(error @ BenchError::Usage(_)) => {
            eprintln!("raftkv-bench: {error}");
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("raftkv-bench: {error}");
            ExitCode::from(1)
        }
    }
}
