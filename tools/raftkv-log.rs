//! `raftkv-log`: inspect and repair a raftkv log directory (stat, dump, verify,
//! truncate, reset-hardstate), and seed a new cluster's node from a snapshot file
//! (snapshot-restore). All logic lives in `raftkv::tools::log_inspect`.

use clap::Parser;

fn main() {
    env_logger::init();
    let cli = raftkv::tools::log_inspect::Cli::parse();
    std::process::exit(raftkv::tools::log_inspect::run(&cli));
}
