//! Restoring the state machine from a snapshot received from the leader, off the
//! replica's turn: decoding an image of millions of keys takes seconds, during which the
//! replica must keep answering heartbeats (or it would time out and start elections).
//!
//! Once the log installed the snapshot ([`super::ReplicaLog::install_snapshot`]), the
//! replica hands a reader of its data ([`super::ReplicaLog::snapshot_source`]) to its
//! [`SnapshotWriter`] ([`SnapshotWriter::start_restore`]: a helper thread in the server,
//! a stepped executor in the simulation) and polls it once per turn; the finished map is
//! adopted in one short turn. Meanwhile the old state machine stays in place: reads wait
//! for their index to be applied, and the entries committed after the snapshot are held,
//! in order, and applied once it is adopted, [`super::APPLY_BYTES_PER_TURN`] per turn.
//!
//! Invariants: while a restore runs (`restoring` is set) or entries are held, every
//! committed entry joins `held` instead of being applied, so entries are applied in log
//! order and only onto the state machine of the latest snapshot; no snapshot of this
//! replica's own is started while a restore runs (the state machine is stale).

use std::collections::VecDeque;

use log::info;

use super::events::EventKind;
use super::requests::Outbox;
use super::{APPLY_BYTES_PER_TURN, Error, Replica, ReplicaLog, SnapshotWriter};
use crate::raft::message::{Entry, SnapshotMeta};
use crate::raft::store::entry_bytes;

/// The restore in progress and the entries waiting for it.
#[derive(Debug, Default)]
pub(super) struct Restore {
    /// The snapshot whose state machine is being restored.
    restoring: Option<SnapshotMeta>,
    /// Committed entries after it, in log order, to apply once it is adopted.
    held: VecDeque<Entry>,
}

impl Restore {
    /// Whether committed entries must be held rather than applied now.
    pub(super) fn holds(&self) -> bool {
        self.restoring.is_some() || !self.held.is_empty()
    }

    /// Whether a restore runs.
    pub(super) fn is_running(&self) -> bool {
        self.restoring.is_some()
    }

    /// Whether held entries wait while no restore runs (the driver must not sleep).
    pub(super) fn has_backlog(&self) -> bool {
        self.restoring.is_none() && !self.held.is_empty()
    }

    /// Holds a committed entry until the restore is adopted.
    pub(super) fn hold(&mut self, entry: &Entry) {
        self.held.push_back(entry.clone());
    }
}

impl<L: ReplicaLog, W: SnapshotWriter> Replica<L, W> {
    /// Starts restoring the state machine of the snapshot `meta` the log just installed.
    ///
    /// # Errors
    /// The log's data cannot be opened, or the job cannot be started.
    pub(super) fn start_restore(&mut self, meta: &SnapshotMeta) -> Result<(), Error> {
        let input = self.raw.store().snapshot_source().map_err(Error::Store)?;
        let bytes = self.raw.store().snapshot_bytes();
        self.snapshots
            .start_restore(input, bytes, self.kv.config())?;
        info!(
            "restoring the state machine of snapshot {} ({bytes} bytes) off the loop",
            meta.index
        );
        self.restore.restoring = Some(meta.clone());
        Ok(())
    }

    /// Adopts the restored state machine once the writer has it, then applies held
    /// entries, at most [`APPLY_BYTES_PER_TURN`] of them per turn.
    ///
    /// # Errors
    /// The image does not decode: fatal.
    pub(super) fn poll_restore(&mut self, out: &mut impl Outbox) -> Result<(), Error> {
        if let Some(index) = self.restore.restoring.as_ref().map(|meta| meta.index) {
            match self.snapshots.poll_restore() {
                None => return Ok(()),
                Some(Err(source)) => return Err(Error::SnapshotRestore { index, source }),
                Some(Ok(kv)) => {
                    self.kv = kv;
                    if let Some(meta) = self.restore.restoring.take() {
                        self.on_restored(&meta);
                    }
                }
            }
        }
        let mut applied = 0;
        while applied < APPLY_BYTES_PER_TURN {
            let Some(entry) = self.restore.held.pop_front() else {
                break;
            };
            applied += entry_bytes(&entry);
            self.apply(&entry, out);
        }
        Ok(())
    }

    fn on_restored(&mut self, meta: &SnapshotMeta) {
        let index = meta.index;
        let bytes = self.raw.store().snapshot_bytes();
        self.metrics.on_snapshot_installed(bytes);
        self.members_applied = meta.config.members().collect();
        let message = format!(
            "installed snapshot at index {index} ({} keys, {bytes} bytes)",
            self.kv.len()
        );
        let term = self.raw.raft().term;
        let fields = [("index", index), ("bytes", bytes)];
        self.events
            .record(EventKind::SnapshotInstalled, term, &fields, message);
    }
}
