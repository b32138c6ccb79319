//! What a replica needs from its log besides the core's read access: the writes of
//! the Ready contract and the compaction after a snapshot. `server::wal_store::WalStore`
//! implements it on disk; the simulation implements it in memory, with a volatile half
//! that a crash loses and a durable half that only `sync` fills.
//!
//! Invariant (for implementations): nothing written since the last successful `sync`
//! may be counted durable; after `sync` returns `Ok`, everything written before it is.
//!
//! [`SnapshotReader`] reads the log's snapshot data sequentially through
//! [`LogStore::snapshot_chunk`], so a replica restores its state machine from a snapshot
//! on disk without holding the whole image.

use std::io::{self, Read};

use super::alarm::WriteFailure;
use crate::raft::message::{Entry, HardState, SnapshotChunk, SnapshotMeta};
use crate::raft::{LogStore, StoreError};

/// Reads the latest snapshot's data of a log from its first byte to its last.
pub struct SnapshotReader<'a, L: LogStore> {
    log: &'a L,
    position: u64,
}

impl<'a, L: LogStore> SnapshotReader<'a, L> {
    /// A reader of `log`'s latest snapshot data from its start.
    pub fn new(log: &'a L) -> SnapshotReader<'a, L> {
        SnapshotReader { log, position: 0 }
    }
}

impl<L: LogStore> Read for SnapshotReader<'_, L> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let chunk = self
            .log
            .snapshot_chunk(self.position, buf.len() as u64)
            .map_err(io::Error::other)?;
        buf[..chunk.len()].copy_from_slice(&chunk);
        self.position += chunk.len() as u64;
        Ok(chunk.len())
    }
}

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

    /// Writes a chunk of a snapshot received from the leader where the log keeps the
    /// one being received (never in memory whole, on disk): a chunk at offset 0 starts
    /// it afresh, one already written is skipped (a retry after a full disk), any other
    /// must continue the data written.
    ///
    /// # Errors
    /// [`WriteFailure::NoSpace`]: nothing counts as written, retry; otherwise fatal (a
    /// chunk that does not continue the data included).
    fn write_snapshot_chunk(&mut self, chunk: &SnapshotChunk) -> Result<(), WriteFailure>;

    /// Installs the snapshot `meta` whose chunks were all written: checks the data
    /// whole, makes it the log's durable snapshot, then drops the log.
    ///
    /// # Errors
    /// [`WriteFailure::NoSpace`]: the log is unchanged, retry; otherwise fatal (data
    /// that does not verify included).
    fn install_snapshot(&mut self, meta: SnapshotMeta) -> Result<(), WriteFailure>;

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

    /// Adopts the snapshot `meta` of the replica's own state machine whose data is
    /// already durable where the log keeps snapshots (the [`super::SnapshotWriter`]
    /// saved it there; the log reads it from there, the replica never holds it), then
    /// drops the entries it covers.
    ///
    /// # Errors
    /// [`WriteFailure::NoSpace`]: the entries stay until the next snapshot; otherwise
    /// fatal (the saved data missing included).
    fn compact_saved(&mut self, meta: SnapshotMeta) -> Result<(), WriteFailure>;

    /// A reader of the latest snapshot's data from its first byte, that another thread
    /// may own (the restore of a received snapshot runs off the replica's turn).
    ///
    /// # Errors
    /// [`StoreError::Failed`] when it cannot be opened.
    fn snapshot_source(&self) -> Result<Box<dyn Read + Send>, StoreError>;

    /// Bytes the log takes on its medium (a metric).
    fn log_bytes(&self) -> u64;

    /// Bytes of the log above the latest snapshot: what the snapshot policy
    /// ([`super::snapshot_policy::snapshot_due`]) weighs against the snapshot's size.
    fn log_bytes_since_snapshot(&self) -> u64;
}
