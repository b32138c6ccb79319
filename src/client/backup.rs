//! [`Client::snapshot_save`]: a consistent snapshot of the cluster's state machine,
//! taken on the leader and pulled to the caller (the protocol in
//! [`crate::codec::backup`]). The whole exchange stays on one connection to one node,
//! because the node's job belongs to that connection.

use std::io::Write;
use std::thread::sleep;
use std::time::Duration;

use super::{Client, Error};
use crate::codec::backup::{BackupReply, BackupRequest};
use crate::codec::client::{RequestBody, ResponseBody};

/// How often the job is polled while the leader writes it.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// The chunk asked for per read (the node answers at most 1 MiB).
const CHUNK_BYTES: u64 = 1 << 20;

/// What [`Client::snapshot_save`] saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedSnapshot {
    /// Index of the last entry the snapshot covers.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// Bytes written (the whole snapshot file).
    pub bytes: u64,
}

/// Where a save is, for progress output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveProgress {
    /// The leader is writing the snapshot.
    Writing,
    /// `done` of `total` bytes received.
    Receiving {
        /// Bytes received so far.
        done: u64,
        /// The file's length.
        total: u64,
    },
}

impl Client {
    /// Asks the leader for a snapshot of the state machine as applied now (every write
    /// it acknowledged before), waits while it is written, and writes the file to `out`
    /// (the snapshot file format of docs/FORMAT.md, its crc over the whole file).
    /// `progress` hears of each step. The caller verifies the crc of what it wrote
    /// (`storage::snapshot::open`), which also catches a short write.
    ///
    /// # Errors
    /// [`Error::Refused`] if the node dropped the job (the connection broke, the
    /// leader failed to write it), or if the node answered a length other than the
    /// file's; any call error; [`Error::Output`] when writing to `out` fails.
    pub fn snapshot_save(
        &mut self,
        out: &mut dyn Write,
        mut progress: impl FnMut(SaveProgress),
    ) -> Result<SavedSnapshot, Error> {
        let id = match self.backup_step(BackupRequest::Start)? {
            BackupReply::Started { id } => id,
            other => return Err(self.unexpected_body(&ResponseBody::Backup(other))),
        };
        progress(SaveProgress::Writing);
        let saved = loop {
            match self.backup_step(BackupRequest::Poll { id })? {
                BackupReply::Running => sleep(POLL_INTERVAL),
                BackupReply::Ready { index, term, bytes } => {
                    break SavedSnapshot { index, term, bytes };
                }
                other => return Err(self.unexpected_body(&ResponseBody::Backup(other))),
            }
        };
        let mut offset = 0;
        while offset < saved.bytes {
            let read = BackupRequest::Read {
                id,
                offset,
                bytes_max: CHUNK_BYTES,
            };
            let chunk = match self.backup_step(read)? {
                BackupReply::Chunk(chunk) if !chunk.is_empty() => chunk,
                BackupReply::Chunk(_) => {
                    return Err(Error::Refused(format!(
                        "the snapshot ended at byte {offset} of the {} announced",
                        saved.bytes
                    )));
                }
                other => return Err(self.unexpected_body(&ResponseBody::Backup(other))),
            };
            out.write_all(&chunk).map_err(Error::Output)?;
            offset += chunk.len() as u64;
            progress(SaveProgress::Receiving {
                done: offset,
                total: saved.bytes,
            });
        }
        match self.backup_step(BackupRequest::Finish { id })? {
            BackupReply::Finished => Ok(saved),
            other => Err(self.unexpected_body(&ResponseBody::Backup(other))),
        }
    }

    fn backup_step(&mut self, step: BackupRequest) -> Result<BackupReply, Error> {
        match self.call(&RequestBody::Backup(step))? {
            ResponseBody::Backup(reply) => Ok(reply),
            other => Err(self.unexpected_body(&other)),
        }
    }
}
