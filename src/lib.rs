//! raftkv: a Raft-replicated key-value store.
//!
//! Each node is one process running one thread: a mio event loop that reads
//! length-prefixed frames from sockets, feeds them through a codec chain into
//! the Raft state machine ([`raft`]), and persists entries to a checksummed,
//! segmented write-ahead log ([`storage`]) with one fdatasync per loop turn.
//! Committed entries are applied to the key-value state machine ([`kv`]).
//!
//! The design is written down in `docs/` and in each module's documentation.
#![deny(missing_docs)]

pub mod check;
pub mod client;
pub mod codec;
pub mod config;
pub mod kv;
pub mod raft;
pub mod server;
pub mod storage;
pub mod tools;
pub mod wire;
