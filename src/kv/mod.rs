//! The key-value state machine applied from committed log entries.
//!
//! - [`command`]: the commands a `Normal` entry carries, their results, and the
//!   versioned binary encoding of both (also used inside client protocol frames).
//! - [`RmwOp`]: read-modify-writes (INCR, APPEND, SET NX, ...) decided at apply time
//!   (`rmw`), over numbers read and printed as Redis does ([`number`]).
//! - [`KvStore`]: applies commands in log order, deduplicates retried writes through
//!   client sessions (Raft thesis §6.3) that expire by log position, serves local reads
//!   and ordered range reads ([`RangeQuery`], `range`).
//! - expiry: keys may carry an absolute expiry time (unix milliseconds, `expiry`),
//!   set and cleared only by log entries; reads judge it by a time the caller passes
//!   ([`KvStore::get_at`]), and expired keys are deleted by entries the leader
//!   proposes (`RmwOp::DeleteExpired`), never by a clock at apply.
//! - snapshots: [`KvStore::snapshot_view`] takes a point-in-time view in O(1) that a
//!   helper thread encodes ([`SnapshotView::write_to`]); [`KvStore::restore`] checks a
//!   crc32 and every length before trusting a byte.
//!
//! Determinism: the state after applying a log prefix depends only on that prefix and on
//! [`KvConfig`], so replicas agree and snapshots of equal states are byte-identical.

mod bytes;
pub mod command;
mod expiry;
pub mod number;
mod ordmap;
mod range;
mod rmw;
mod session;
mod snapshot;
mod store;

pub use command::{
    Command, CommandResult, Compare, CompareOp, Deadline, ExpireCondition, Op, OpResult, RmwOp,
    Session, SetCondition, SetExpiry, ValueError, command_to_vec, decode_command, decode_result,
    encode_command, encode_result,
};
pub use range::{RANGE_REPLY_BYTES_MAX, RangeQuery, RangeResult, prefix_end};
pub use rmw::RMW_VALUE_BYTES_MAX;
pub use snapshot::{Error, ImageCheck, SNAPSHOT_MAGIC, SNAPSHOT_VERSION, SnapshotView};
pub use store::{KvConfig, KvStore};
