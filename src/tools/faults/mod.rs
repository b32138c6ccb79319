//! The fault-injection suite: real `raftkv-server` processes, a nemesis that kills,
//! pauses and partitions them, a recorded concurrent workload, and checkers.
//!
//! - [`proxy`]: one TCP proxy per directed peer link (pass, drop, stall, delay).
//! - [`cluster`]: the node processes wired through the proxies; kill, pause, heal.
//! - [`nemesis`]: the fault kinds and how each is injected.
//! - [`workload`]: client threads doing put / get / cas, recording every operation.
//! - [`history`]: the JSON-lines history format, for keeping and re-checking.
//! - [`checker`]: per-key linearizability with a step budget.
//! - [`round`]: one round = start, workload + faults, heal, final reads, checks.
//!
//! Used by `tools/raftkv-faults.rs` (long runs) and `tests/faults.rs` (short scenarios).

pub mod checker;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod proxy;
pub mod round;
pub mod workload;
