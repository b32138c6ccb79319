//! The server's [`SnapshotWriter`]: each snapshot is encoded and written on a helper
//! thread over a copy-on-write view of the state machine, so the loop keeps serving
//! heartbeats meanwhile; the loop only takes the view and, at the end, compacts the log.
//! The encoding streams straight into the snapshot file (`storage::snapshot::save_with`):
//! no image of the state machine is built in memory, here or in the log.
//!
//! Invariant: `done` is `Some` exactly while a job started and has not been reported.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::thread;

use crate::kv::SnapshotView;
use crate::raft::message::SnapshotMeta;
use crate::replica::alarm::WriteFailure;
use crate::replica::{Error, SnapshotPoll, SnapshotWriter};
use crate::storage::snapshot::{self as snapshot_file, OpenSnapshot, SnapshotError};

/// Writes snapshot files into one directory, one helper thread per snapshot.
pub struct SnapshotThread {
    dir: PathBuf,
    /// Share of one core the encoding may use (`snapshot.encode_cpu_percent`).
    cpu_percent: u32,
    /// The encoded state machine's length once its file is durable, or why writing
    /// failed.
    done: Option<Receiver<Result<u64, SnapshotError>>>,
}

impl SnapshotThread {
    /// A writer of snapshot files into `dir` whose encoding uses at most
    /// `cpu_percent` of one core.
    pub fn new(dir: PathBuf, cpu_percent: u32) -> SnapshotThread {
        SnapshotThread {
            dir,
            cpu_percent,
            done: None,
        }
    }
}

/// Encodes `view` as the snapshot `meta` into a durable file in `dir`, at most at
/// `cpu_percent` of a core, and releases the view (run on a helper thread: this is the
/// whole cost of a snapshot).
///
/// # Errors
/// As [`snapshot_file::save_with`].
pub fn encode_into(
    dir: &Path,
    meta: &SnapshotMeta,
    view: SnapshotView,
    cpu_percent: u32,
) -> Result<OpenSnapshot, SnapshotError> {
    let config = meta.config.encode();
    snapshot_file::save_with(dir, meta.index, meta.term, &config, |out| {
        view.write_throttled(out, cpu_percent).map(drop)
    })
}

impl SnapshotWriter for SnapshotThread {
    fn start(&mut self, meta: SnapshotMeta, view: SnapshotView) -> Result<(), Error> {
        let dir = self.dir.clone();
        let (done_tx, done) = mpsc::channel();
        let cpu_percent = self.cpu_percent;
        thread::Builder::new()
            .name("raftkv-snapshot".into())
            .spawn(move || {
                let result = encode_into(&dir, &meta, view, cpu_percent);
                let _ = done_tx.send(result.map(|saved| saved.image.len()));
            })
            .map_err(|e| Error::SnapshotWrite(Box::new(e)))?;
        self.done = Some(done);
        Ok(())
    }

    fn poll(&mut self) -> SnapshotPoll {
        let Some(done) = &self.done else {
            return SnapshotPoll::Running;
        };
        let poll = match done.try_recv() {
            Err(TryRecvError::Empty) => return SnapshotPoll::Running,
            Ok(Ok(bytes)) => SnapshotPoll::Written(bytes),
            Ok(Err(e)) if e.is_no_space() => {
                SnapshotPoll::Failed(WriteFailure::NoSpace(e.to_string()))
            }
            Ok(Err(e)) => SnapshotPoll::Failed(WriteFailure::Fatal(Box::new(e))),
            Err(TryRecvError::Disconnected) => {
                SnapshotPoll::Failed(WriteFailure::Fatal("the snapshot thread died".into()))
            }
        };
        self.done = None;
        poll
    }
}
