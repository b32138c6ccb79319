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
//!  sockets ─▶ server::event_loop   poll, accept, read into the connection's buffer
//!               ▼
//!             codec                 frame ─▶ peer / client / RESP message (decode)
//!               ▼
//!             replica (server::node until it lands): pending requests with
//!               deadlines, read batching, snapshot schedule; no IO, `now` passed in
//!               │ step / propose / read_index / tick
//!               ▼
//!             raft::RawNode         pure state machine ─▶ Ready
//!               ▼
//!  before_sleep (once per turn):
//!             1. storage::Wal       append Ready's entries + hard state, ONE fdatasync
//!             2. codec ─▶ sockets   send Ready's messages (votes and acks after 1)
//!             3. kv::KvStore        apply committed commands, answer waiting clients
//!             4. server::event_loop flush output; WRITABLE only for partial writes
//! ```
//!
//! # Layers (every arrow points down)
//!
//! - top: `tools` (bench, log inspection, fault runner) and the binaries, over
//!   `client` (blocking client library) and `server` (event loop, ports, node glue);
//! - `replica`: the IO-free driver between the server and raft/kv;
//! - [`codec`]: the wire protocols; builds on [`raft::message`] and [`kv::command`];
//! - [`storage`]: the WAL, hard state and snapshot files; stores [`raft::message`] types;
//! - [`kv`] (commands and their encoding, the store) and [`raft`] (consensus, no IO,
//!   no clock): neither imports the other, nor any codec;
//! - bottom: [`wire`] (byte primitives, [`wire::DecodeError`]) and [`check`]
//!   (history checkers), which import nothing from the crate.
//!
//! [`config`] reads the TOML file into the settings of each layer.
//! The design is written down in `docs/` and in each module's documentation.
#![deny(missing_docs)]

pub mod check;
pub mod client;
pub mod codec;
pub mod config;
pub mod kv;
pub mod raft;
pub mod replica;
pub mod server;
pub mod storage;
pub mod tools;
pub mod wire;
