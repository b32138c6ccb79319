//! raftkv: a Raft-replicated key-value store.
//!
//! Each node is one process running one thread: a mio event loop that reads
//! length-prefixed frames from sockets, feeds them through a codec chain into
//! the Raft state machine ([`raft`]), and persists entries to a checksummed,
//! segmented write-ahead log ([`storage`]) with one fdatasync per loop turn.
//! Committed entries are applied to the key-value state machine ([`kv`]).
//!
//! # One loop turn, and who owns each step
//!
//! ```text
//!  sockets ─▶ server::event_loop   poll, accept, read until WouldBlock (server::net)
//!               ▼
//!             codec                 frame ─▶ peer / client / RESP message (decode)
//!               ▼
//!             server::node ─▶ replica::Replica   requests with deadlines, parked
//!               requests, read batching; no IO, `now_ms` passed in
//!               │ step / propose / read_index / tick
//!               ▼
//!             raft::RawNode         pure state machine ─▶ Ready
//!               ▼
//!  before_sleep (once per turn: replica::Replica::before_sleep)
//!             1. server::net        send Ready's messages (appends leave before the sync)
//!             2. kv::KvStore        leader: apply committed entries, answer clients
//!             3. server::wal_store  entries + hard state into storage::Wal, ONE fdatasync
//!             4. server::net        send votes and acks (only after 3 succeeded);
//!                                   a follower applies after 4
//!             5. replica::snapshots start or adopt a snapshot (server::snapshot_thread)
//!             6. server::event_loop flush output; WRITABLE only for partial writes
//! ```
//!
//! # Layers (every arrow points down)
//!
//! - top: `tools` (bench, log inspection, fault runner) and the binaries, over
//!   `client` (blocking client library) and `server` (event loop, ports, node glue);
//! - [`replica`]: the IO-free driver between the server and raft/kv, which the
//!   deterministic simulation (`tests/sim`) runs as the server does;
//! - [`codec`]: the wire protocols; builds on [`raft::message`] and [`kv::command`];
//! - [`storage`]: the WAL, hard state and snapshot files; stores [`raft::message`] types;
//! - [`kv`] (commands and their encoding, the store) and [`raft`] (consensus, no IO,
//!   no clock): neither imports the other, nor any codec;
//! - bottom: [`wire`] (byte primitives, [`wire::DecodeError`]) and [`check`]
//!   (history checkers), which import nothing from the crate.
//!
//! [`config`] reads the TOML file into the settings of each layer; [`tls`] turns its
//! certificate files into the rustls configurations that `server` and `client` use.
//! The design is written down in `docs/` and in each module's documentation.
#![deny(missing_docs)]

pub mod check;
pub mod client;
pub mod codec;
pub mod config;
pub mod kv;
pub mod raft;
pub mod replica;
pub mod security;
pub mod server;
pub mod storage;
pub mod tls;
pub mod tools;
pub mod wire;
