//! The node server: one thread, one mio event loop, and the independent parts it uses.
//!
//! [`timer`] (hashed timer wheel), [`backoff`] (reconnect delays), [`connection`]
//! (per-socket buffers) and [`metrics`] are sans-IO or generic over the stream so they
//! are unit-tested without sockets or clocks; [`local`] starts a loopback cluster of
//! child processes for `raftkv-server local`.

pub mod backoff;
pub mod connection;
pub mod local;
pub mod metrics;
pub mod timer;
