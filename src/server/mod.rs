//! The node server: one thread, one mio event loop, and the independent parts it uses.
//!
//! [`timer`] (hashed timer wheel) and [`backoff`] (reconnect delays) are sans-IO: time
//! and randomness are passed in. [`connection`] (per-socket buffers) is generic over the
//! stream, so it is tested with mock streams. [`metrics`] holds the node's counters.
//! [`local`] starts a loopback cluster of child processes for `raftkv-server local`.
//! [`members`] encodes the member addresses carried in the Raft configuration;
//! [`removal_marker`] is the file a removed node leaves in its data directory;
//! [`parked`] holds the requests that wait for a leader to be known.

pub mod backoff;
pub mod connection;
pub mod event_loop;
pub mod local;
pub mod members;
pub mod metrics;
pub mod node;
pub mod parked;
pub mod redis;
pub mod removal_marker;
pub mod timer;
pub mod wal_store;
