//! The snapshot schedule: once the log has grown enough since the last snapshot
//! ([`snapshot_due`]: `snapshot.threshold_entries` entries at least, and
//! `snapshot.log_growth_percent` of the snapshot's size in log bytes), the replica takes
//! a copy-on-write view of the state machine (O(1)) and hands it to a [`SnapshotWriter`], which encodes it and makes it
//! durable off the replica's turn (a helper thread in the server, a stepped executor in
//! the simulation). When the writer reports the data durable, the log adopts the
//! snapshot and drops the entries it covers; the replica keeps serving meanwhile.
//!
//! Invariant: at most one job runs; its meta is the core's snapshot meta at the index
//! the view was taken at (`view.applied_index() == meta.index`).

use log::info;

use super::alarm::{Cause, WriteFailure};
use super::events::EventKind;
use super::snapshot_policy::{LogSinceSnapshot, snapshot_due};
use super::{Error, Replica, ReplicaLog};
use crate::kv::SnapshotView;
use crate::raft::message::SnapshotMeta;

/// What a [`SnapshotWriter`] says of its job.
#[derive(Debug)]
pub enum SnapshotPoll {
    /// Still encoding or writing.
    Running,
    /// Durable where the log keeps snapshots ([`super::ReplicaLog::compact_saved`]
    /// adopts it from there); the encoded state machine's length in bytes.
    Written(u64),
    /// It failed; a full disk ([`WriteFailure::NoSpace`]) raises the NOSPACE alarm and
    /// is retried, anything else stops the replica.
    Failed(WriteFailure),
}

/// Encodes and saves snapshots of the state machine, one job at a time.
pub trait SnapshotWriter {
    /// Starts encoding `view` and saving it durably as the snapshot `meta`.
    ///
    /// # Errors
    /// The job could not be started (fatal).
    fn start(&mut self, meta: SnapshotMeta, view: SnapshotView) -> Result<(), Error>;

    /// How the job started last is doing (polled once per turn while it runs).
    fn poll(&mut self) -> SnapshotPoll;
}

/// The job in progress.
pub(super) struct SnapshotJob {
    meta: SnapshotMeta,
    started_ms: u64,
}

impl<L: ReplicaLog, W: SnapshotWriter> Replica<L, W> {
    /// Starts a snapshot when the log has grown past the threshold, and adopts one whose
    /// data is durable.
    ///
    /// # Errors
    /// A snapshot or compaction failed for another reason than a full disk.
    pub(super) fn maybe_snapshot(&mut self, now_ms: u64) -> Result<(), Error> {
        if let Some(job) = &self.snapshot_job {
            match self.snapshots.poll() {
                SnapshotPoll::Running => {}
                SnapshotPoll::Written(bytes) => {
                    let (meta, elapsed_ms) =
                        (job.meta.clone(), now_ms.saturating_sub(job.started_ms));
                    self.snapshot_job = None;
                    self.nospace.clear(Cause::Snapshot, now_ms);
                    let index = meta.index;
                    match self.raw.store_mut().compact_saved(meta) {
                        Ok(()) => {}
                        // The sync before the compaction found the disk full: the
                        // entries stay until the next snapshot; the entries it could
                        // not write are retried with the log's next Ready.
                        Err(WriteFailure::NoSpace(what)) => {
                            self.nospace.raise(Cause::Log, &what, now_ms);
                        }
                        Err(WriteFailure::Fatal(e)) => return Err(Error::Write(e)),
                    }
                    self.metrics.on_snapshot(bytes, elapsed_ms);
                    let message = format!(
                        "snapshot at index {index}: {bytes} bytes written in {elapsed_ms} ms \
                         off the loop; log compacted"
                    );
                    let fields = [("index", index), ("bytes", bytes), ("ms", elapsed_ms)];
                    let term = self.raw.raft().term;
                    self.events
                        .record(EventKind::SnapshotTaken, term, &fields, message);
                }
                SnapshotPoll::Failed(WriteFailure::NoSpace(what)) => {
                    self.snapshot_job = None;
                    let what = format!("writing the snapshot failed: {what}");
                    self.nospace.raise(Cause::Snapshot, &what, now_ms);
                }
                SnapshotPoll::Failed(WriteFailure::Fatal(e)) => {
                    return Err(Error::SnapshotWrite(e));
                }
            }
            return Ok(());
        }
        if self.nospace.has(Cause::Snapshot) && !self.nospace.may_write(now_ms) {
            return Ok(());
        }
        let applied = self.kv.applied_index();
        let store = self.raw.store();
        let log = LogSinceSnapshot {
            entries: applied.saturating_sub(store.snapshot_index()),
            log_bytes: store.log_bytes_since_snapshot(),
            snapshot_bytes: store.snapshot_bytes(),
            // Set by the previous turn: its committed entries were not all applied.
            replaying: self.apply_backlog,
        };
        if !snapshot_due(&self.config.snapshot, log) {
            return Ok(());
        }
        let meta = self.raw.build_snapshot(applied, Vec::new())?.meta;
        let view = self.kv.snapshot_view();
        info!("snapshot at index {applied} started: {} keys", view.len());
        self.snapshots.start(meta.clone(), view)?;
        self.snapshot_job = Some(SnapshotJob {
            meta,
            started_ms: now_ms,
        });
        Ok(())
    }
}
