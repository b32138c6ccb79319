//! A snapshot received from the leader, written to disk chunk by chunk as it arrives,
//! so that a follower never holds the whole image in memory.
//!
//! The chunks go to one temp file in the snapshot directory, [`INCOMING_NAME`], laid out
//! as a snapshot file (`snapshot` module: header, meta, data, crc) whose `data_len` and
//! crc are written once the last chunk is in. [`IncomingSnapshot::finish`] then fsyncs
//! it and renames it into place like any snapshot (directory fsynced, older files
//! removed). A transfer that is abandoned (a newer snapshot, a restart) leaves the temp
//! file, which the next transfer truncates and [`remove_stale`] deletes at open.
//!
//! Invariants: the file holds exactly `written` data bytes after its header, received
//! in order: a chunk is written only at the offset where the data held ends (an offset
//! that does not continue it is [`SnapshotError::OutOfOrder`]); a write that fails
//! leaves `written` as it was, so the same chunk can be retried (a full disk); nothing
//! is renamed into place before the file is fsynced.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::snapshot::{
    DATA_LEN_AT, HEADER_BYTES, OpenSnapshot, OutOfOrder, SnapshotError, header, io_err,
    put_in_place,
};

/// Data bytes written between two `fdatasync`s of the temp file: the file is flushed as
/// it grows, so the final fsync of [`IncomingSnapshot::finish`] (on the loop's turn) has
/// little left to write, whatever the snapshot's size.
const SYNC_EVERY_BYTES: u64 = 16 << 20;

/// The temp file of the snapshot being received, in the snapshot directory.
pub const INCOMING_NAME: &str = "incoming.tmp";

/// The snapshot being received: its temp file and what it holds.
#[derive(Debug)]
pub struct IncomingSnapshot {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    index: u64,
    term: u64,
    meta: Vec<u8>,
    /// Data bytes written (the next chunk's offset).
    written: u64,
    /// Data bytes written since the last `fdatasync`.
    unsynced: u64,
    /// The crc of the header and meta as first written (`data_len` 0), combined with
    /// the data's at the end.
    data_crc: crc32fast::Hasher,
}

impl IncomingSnapshot {
    /// Starts receiving the snapshot at `index` and `term` with `meta` (the encoded
    /// configuration) into `dir`, replacing any earlier temp file.
    ///
    /// # Errors
    /// IO errors (a full disk included: [`SnapshotError::is_no_space`]).
    pub fn create(
        dir: &Path,
        index: u64,
        term: u64,
        meta: &[u8],
    ) -> Result<IncomingSnapshot, SnapshotError> {
        let path = dir.join(INCOMING_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .and_then(|file| {
                file.write_all_at(&header(index, term, meta, 0), 0)?;
                Ok(file)
            })
            .map_err(io_err(&path))?;
        Ok(IncomingSnapshot {
            dir: dir.to_path_buf(),
            path,
            file,
            index,
            term,
            meta: meta.to_vec(),
            written: 0,
            unsynced: 0,
            data_crc: crc32fast::Hasher::new(),
        })
    }

    /// Whether this is the transfer of the snapshot at `index` and `term`.
    pub fn is_of(&self, index: u64, term: u64) -> bool {
        (self.index, self.term) == (index, term)
    }

    /// Data bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes `data` at data offset `offset`, which must be where the data held ends.
    ///
    /// # Errors
    /// [`SnapshotError::OutOfOrder`]; IO errors, after which nothing counts as written.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), SnapshotError> {
        if offset != self.written {
            return Err(SnapshotError::OutOfOrder {
                path: self.path.clone(),
                source: OutOfOrder {
                    got: offset,
                    held: self.written,
                },
            });
        }
        let at = self.data_offset() + offset;
        self.file
            .write_all_at(data, at)
            .map_err(io_err(&self.path))?;
        let unsynced = self.unsynced + data.len() as u64;
        if unsynced >= SYNC_EVERY_BYTES {
            self.file.sync_data().map_err(io_err(&self.path))?;
        }
        self.unsynced = if unsynced >= SYNC_EVERY_BYTES {
            0
        } else {
            unsynced
        };
        self.data_crc.update(data);
        self.written += data.len() as u64;
        Ok(())
    }

    fn data_offset(&self) -> u64 {
        (HEADER_BYTES + self.meta.len()) as u64
    }

    /// Completes the file (`data_len`, crc), fsyncs it and renames it into place as the
    /// latest snapshot. On an error the transfer stays as it was and may be finished
    /// again (a full disk).
    ///
    /// # Errors
    /// IO errors.
    pub fn finish(&self) -> Result<OpenSnapshot, SnapshotError> {
        let head = header(self.index, self.term, &self.meta, self.written);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        crc.combine(&self.data_crc);
        let end = self.data_offset() + self.written;
        let file = self
            .file
            .write_all_at(&self.written.to_le_bytes(), DATA_LEN_AT)
            .and_then(|()| self.file.write_all_at(&crc.finalize().to_le_bytes(), end))
            .and_then(|()| self.file.set_len(end + 4))
            .and_then(|()| self.file.sync_all())
            .and_then(|()| self.file.try_clone())
            .map_err(io_err(&self.path))?;
        put_in_place(
            &self.dir,
            &self.path,
            file,
            (self.index, self.term),
            &self.meta,
            self.written,
        )
    }
}

/// Removes the temp file of a transfer that a stop interrupted, if any.
///
/// # Errors
/// IO errors other than the file not existing.
pub fn remove_stale(dir: &Path) -> Result<(), SnapshotError> {
    let path = dir.join(INCOMING_NAME);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&path)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::snapshot;

    const META: &[u8] = b"config";

    /// Goal: chunks written in order make the same file as a snapshot saved in one go
    /// (it opens, verifies and reads back the data), and the temp file is gone.
    #[test]
    fn chunks_make_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut incoming = IncomingSnapshot::create(dir.path(), 9, 2, META).unwrap();
        assert!(incoming.is_of(9, 2));
        for (i, chunk) in data.chunks(999).enumerate() {
            incoming.write_at(i as u64 * 999, chunk).unwrap();
        }
        assert_eq!(incoming.written(), data.len() as u64);
        let done = incoming.finish().unwrap();
        assert_eq!((done.index, done.term), (9, 2));
        assert!(!dir.path().join(INCOMING_NAME).exists());
        let opened = snapshot::open_latest(dir.path()).unwrap().unwrap();
        assert_eq!(opened.meta, META);
        assert_eq!(opened.image.read_at(0, 1 << 20).unwrap(), data);
    }

    /// Goal: a chunk that does not continue the data held is refused and changes
    /// nothing; the expected chunk is then accepted.
    #[test]
    fn out_of_order_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut incoming = IncomingSnapshot::create(dir.path(), 3, 1, META).unwrap();
        incoming.write_at(0, b"abc").unwrap();
        for offset in [0, 2, 4] {
            let error = incoming.write_at(offset, b"zz").unwrap_err();
            assert!(
                matches!(error, SnapshotError::OutOfOrder { source, .. }
                    if source == OutOfOrder { got: offset, held: 3 }),
                "{error}"
            );
        }
        incoming.write_at(3, b"de").unwrap();
        incoming.finish().unwrap();
        let opened = snapshot::open_latest(dir.path()).unwrap().unwrap();
        assert_eq!(opened.image.read_at(0, 100).unwrap(), b"abcde");
    }

    /// Goal: an interrupted transfer's temp file is removed at open, and removing
    /// none is no error.
    #[test]
    fn stale_temp_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut incoming = IncomingSnapshot::create(dir.path(), 3, 1, META).unwrap();
        incoming.write_at(0, b"abc").unwrap();
        assert!(dir.path().join(INCOMING_NAME).exists());
        remove_stale(dir.path()).unwrap();
        assert!(!dir.path().join(INCOMING_NAME).exists());
        remove_stale(dir.path()).unwrap();
        assert!(snapshot::open_latest(dir.path()).unwrap().is_none());
    }
}
