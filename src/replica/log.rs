//! What a replica needs from its log besides the core's read access: the writes of
//! the Ready contract and the compaction after a snapshot. `server::wal_store::WalStore`
//! implements it on disk; the simulation implements it in memory, with a volatile half
//! that a crash loses and a durable half that only `sync` fills.
//!
//! Invariant (for implementations): nothing written since the last successful `sync`
//! may be counted durable; after `sync` returns `Ok`, everything written before it is.

use super::alarm::WriteFailure;
use crate::raft::LogStore;
use crate::raft::message::{Entry, HardState, Snapshot};

/// What one `sync` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    /// Nothing needed flushing (or syncs are off): no fdatasync was issued.
    Clean,
    /// One fdatasync was issued and took this long (measured by the log, since the
    /// replica reads no clock).
    Flushed {
        /// Its duration in microseconds.
        micros: u64,
    },
}

/// The writable, durable log of one replica.
pub trait ReplicaLog: LogStore {
    /// Index of the latest snapshot the log holds (0 when none).
    fn snapshot_index(&self) -> u64;

    /// Records the hard state the core handed out; [`ReplicaLog::save_hard_state`]
    /// writes it.
    fn set_hard_state(&mut self, hard_state: HardState);

    /// Whether the recorded hard state's term or vote is not written yet.
    fn hard_state_unsaved(&self) -> bool;

    /// Writes the recorded hard state if its term or vote changed since the last save.
    ///
    /// # Errors
    /// [`WriteFailure::NoSpace`]: nothing changed, retry; otherwise fatal.
    fn save_hard_state(&mut self) -> Result<(), WriteFailure>;

    /// Installs a snapshot received from the leader: stores it, then drops the log.
    ///
    /// # Errors
    /// [`WriteFailure::NoSpace`]: the log is unchanged, retry; otherwise fatal.
    fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), WriteFailure>;

    /// Appends entries, first truncating a conflicting stored suffix; entries already
    /// held with the same term are skipped (a retry after a full disk).
    ///
    /// # Errors
    /// [`WriteFailure::NoSpace`]: retry with the same entries; otherwise fatal.
    fn append(&mut self, entries: &[Entry]) -> Result<(), WriteFailure>;

    /// Makes everything written so far durable (one group commit).
    ///
    /// # Errors
    /// [`WriteFailure::NoSpace`]: nothing flushed, retry; otherwise fatal: nothing may
    /// be acknowledged after it.
    fn sync(&mut self) -> Result<SyncOutcome, WriteFailure>;

    /// Adopts a snapshot of the replica's own state machine whose data is already
    /// durable (the [`super::SnapshotWriter`] saved it), then drops the entries it covers.
    ///
    /// # Errors
    /// [`WriteFailure::NoSpace`]: the entries stay until the next snapshot; otherwise
    /// fatal.
    fn compact_saved(&mut self, snapshot: Snapshot) -> Result<(), WriteFailure>;

    /// Bytes the log takes on its medium (a metric).
    fn log_bytes(&self) -> u64;

    /// Bytes of the log above the latest snapshot: what the snapshot policy
    /// ([`super::snapshot_policy::snapshot_due`]) weighs against the snapshot's size.
    fn log_bytes_since_snapshot(&self) -> u64;

    /// Bytes of the latest snapshot's encoded state machine (0 when none).
    fn snapshot_bytes(&self) -> u64;
}
