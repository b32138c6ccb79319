//! The blocking client library, used by `raftkv-cli`, `raftkv-bench` and the tests.
//!
//! - [`Client`]: typed calls (`get`, `get_stale`, `put`, `delete`, `cas`, `txn`,
//!   `status`, `metrics`) with leader discovery, `NotLeader` redirects, retries with
//!   backoff bounded by a per-request timeout, and a session so a retried write applies
//!   once; [`Client::snapshot_save`] pulls a snapshot of the state machine.
//! - [`Pipeline`]: one connection with many requests in flight, replies matched by
//!   request id (for the benchmark).
//! - [`status_at`] / [`metrics_at`]: one node, one attempt (for `raftkv-cli status`).
//! - [`check_addr`]: the `HOST:PORT` syntax, checked before any connection.
//! - [`watch`]: a stream of the changes one node applies to a key or prefix.
//!
//! Plain `std::net::TcpStream`, no async runtime: one client per thread.

mod addr;
mod backup;
mod cluster;
mod error;
mod pipeline;
mod stream;
mod watch;

pub use addr::check_addr;
pub use backup::{SaveProgress, SavedSnapshot};
pub use cluster::{
    CasOutcome, Client, ClientOptions, ClientStats, KeyTtl, LeaderInfo, TxnOutcome, leader_of,
    metrics_at, status_at,
};
pub use error::Error;
pub use pipeline::{FIRST_REQUEST_ID, Pipeline};
pub use watch::watch;

#[cfg(test)]
pub(crate) mod tests;
