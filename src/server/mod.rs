//! The node server: one thread, one mio event loop, and the independent parts it uses.
//!
//! [`backoff`] (reconnect delays) is sans-IO: time and randomness are passed in.
//! [`connection`] (per-socket buffers) is generic over the stream, so it is tested with
//! mock streams. The timer wheel, the metrics and the member addresses are the
//! replica's ([`crate::replica`]), which the server uses too.
//! [`local`] starts a loopback cluster of child processes for `raftkv-server local`, on
//! ports leased by [`ports`] (outside the ephemeral range, so restarted nodes get them back).
//! [`conn_limits`] decides the connection timeouts (sans-IO); [`fd_limit`] raises the
//! open-file limit the client connections need.
//! [`removal_marker`] is the file a removed node leaves in its data directory;
//! [`node`] wraps the IO-free [`crate::replica::Replica`] with the WAL ([`wal_store`])
//! and the snapshot helper thread ([`snapshot_thread`]).
//!
//! [`event_loop`] is the loop itself (poll, accept, read, one `before_sleep`, write); it
//! drives `net` (connections, limits, flushing, the node's outbox), `peer_links` (dial,
//! handshake, backoff, liveness), `forward` (a follower's forwarding link to the leader)
//! `redis_pump` (Redis connections), `pubsub_pump` (what the node applied, to its
//! Redis subscribers and the native [`watch`]es) and `http_pump` (HTTP connections, whose state is [`http`]). [`error`] holds the server's typed errors.

pub mod backoff;
pub mod backup;
pub mod conn_limits;
pub mod connection;
pub mod error;
pub mod event_loop;
pub mod fd_limit;
mod forward;
pub mod http;
mod http_pump;
pub mod local;
mod net;
pub mod node;
mod peer_auth;
mod peer_links;
pub mod ports;
mod pubsub_pump;
pub mod redis;
mod redis_pump;
pub mod removal_marker;
pub mod snapshot_thread;
pub mod tls_ports;
mod transport;
pub mod wal_store;
pub mod watch;
