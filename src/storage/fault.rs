//! Test-only storage fault injection (STYLE.md G.4): make the next write or the next
//! sync of a [`Wal`] fail, the way a full or dying disk does, and check that the log
//! then refuses changes and that a reopen keeps exactly what may be kept.
//!
//! A failing write lands its first half and then fails (a short write). A failing
//! sync writes, then fails instead of flushing, and zeroes the bytes that this sync
//! wrote: the kernel may drop dirty pages after a writeback error, so after a crash
//! those bytes are as good as never written. A write that finds the disk full lands
//! its first half and fails with ENOSPC, which the log must undo (and survive). Each
//! fault fires once.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{Error, Wal};

/// Faults armed on one [`Wal`]; each fires once.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// The next write of buffered records lands half its bytes and fails.
    pub fail_next_write: bool,
    /// The next sync writes, loses what it wrote and fails.
    pub fail_next_sync: bool,
    /// The next write of buffered records lands half its bytes and fails with ENOSPC.
    pub no_space_next_write: bool,
}

fn injected(path: &Path, what: &str) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(format!("injected {what} failure")),
    }
}

impl Faults {
    /// Fires the write fault: writes the first half of `bytes` at `at`, then fails.
    pub fn short_write(&mut self, file: &File, path: &Path, bytes: &[u8], at: u64) -> Error {
        self.fail_next_write = false;
        match file.write_all_at(&bytes[..bytes.len() / 2], at) {
            Ok(()) => injected(path, "write"),
            Err(source) => Error::Io {
                path: path.to_path_buf(),
                source,
            },
        }
    }

    /// Fires the disk-full fault: writes the first half of `bytes` at `at`, then
    /// fails with ENOSPC.
    pub fn no_space_write(&mut self, file: &File, bytes: &[u8], at: u64) -> std::io::Result<()> {
        self.no_space_next_write = false;
        file.write_all_at(&bytes[..bytes.len() / 2], at)?;
        Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
    }

    /// Fires the sync fault: zeroes `[from, to)` of `file`, then fails.
    pub fn failed_sync(&mut self, file: &File, path: &Path, from: u64, to: u64) -> Error {
        self.fail_next_sync = false;
        let zeroes = vec![0u8; (to - from) as usize];
        match file.write_all_at(&zeroes, from) {
            Ok(()) => injected(path, "fdatasync"),
            Err(source) => Error::Io {
                path: path.to_path_buf(),
                source,
            },
        }
    }
}

impl Wal {
    /// Arms the write fault (see the module docs).
    pub(crate) fn fail_next_write(&mut self) {
        self.faults.fail_next_write = true;
    }

    /// Arms the disk-full fault (see the module docs).
    pub(crate) fn no_space_next_write(&mut self) {
        self.faults.no_space_next_write = true;
    }

    /// Arms the sync fault (see the module docs).
    pub(crate) fn fail_next_sync(&mut self) {
        self.faults.fail_next_sync = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::message::{Entry, EntryKind};
    use crate::storage::{FsyncMode, WalOptions};

    fn options(segment_bytes: u64) -> WalOptions {
        WalOptions {
            segment_bytes,
            fsync: FsyncMode::Never,
            ..WalOptions::default()
        }
    }

    fn entries(lo: u64, hi: u64, size: usize) -> Vec<Entry> {
        (lo..hi)
            .map(|index| Entry {
                index,
                term: 1 + index / 7,
                kind: EntryKind::Normal,
                data: (0..size).map(|k| (index as usize * 13 + k) as u8).collect(),
            })
            .collect()
    }

    fn all(wal: &mut Wal) -> Vec<Entry> {
        let (lo, hi) = (wal.first_index(), wal.last_index() + 1);
        wal.entries(lo, hi, u64::MAX).unwrap()
    }

    fn assert_failed<T: std::fmt::Debug>(result: crate::storage::Result<T>) {
        match result {
            Err(Error::Failed { .. }) => {}
            other => panic!("a failed log accepted a change: {other:?}"),
        }
    }

    /// Every change of a failed log is refused.
    fn assert_refuses_changes(wal: &mut Wal) {
        let next = wal.last_index() + 1;
        assert_failed(wal.append(&entries(next, next + 1, 8)));
        assert_failed(wal.sync());
        assert_failed(wal.truncate_suffix(wal.last_index()));
        assert_failed(wal.compact_prefix(1));
        assert_failed(wal.reset_to_snapshot(100, 9));
    }

    // Goal: a failing sync returns an error, the log refuses further changes, and a
    // reopen shows exactly what earlier syncs covered.
    #[test]
    fn failed_sync_keeps_only_synced_entries() {
        let dir = tempfile::tempdir().unwrap();
        let synced = entries(1, 20, 40);
        let mut wal = Wal::open(dir.path(), options(1 << 20)).unwrap();
        wal.append(&synced).unwrap();
        wal.sync().unwrap();
        wal.append(&entries(20, 40, 40)).unwrap();
        wal.fail_next_sync();
        match wal.sync() {
            Err(Error::Io { source, .. }) => assert!(source.to_string().contains("injected")),
            other => panic!("failing sync returned {other:?}"),
        }
        assert_refuses_changes(&mut wal);
        drop(wal);
        let mut wal = Wal::open(dir.path(), options(1 << 20)).unwrap();
        assert_eq!(all(&mut wal), synced);
        wal.append(&entries(20, 22, 40)).unwrap();
        wal.sync().unwrap();
        assert_eq!(wal.last_index(), 21);
    }

    // Goal: a write that fails halfway through a batch leaves the log failed (never
    // half-usable), and a reopen keeps everything synced plus at most a prefix of the
    // batch: whole records that reached the disk, never an invented one.
    #[test]
    fn failed_write_mid_batch_never_invents_entries() {
        let dir = tempfile::tempdir().unwrap();
        let synced = entries(1, 10, 100);
        let batch = entries(10, 30, 100);
        let mut wal = Wal::open(dir.path(), options(1 << 20)).unwrap();
        wal.append(&synced).unwrap();
        wal.sync().unwrap();
        wal.append(&batch).unwrap();
        wal.fail_next_write();
        assert!(matches!(wal.sync(), Err(Error::Io { .. })));
        assert_refuses_changes(&mut wal);
        drop(wal);
        let mut wal = Wal::open(dir.path(), options(1 << 20)).unwrap();
        let got = all(&mut wal);
        let want: Vec<Entry> = synced.iter().chain(&batch).cloned().collect();
        assert!(got.len() >= synced.len(), "lost synced entries");
        // Half the batch's bytes landed: some whole records, not all of them.
        assert!(got.len() > synced.len() && got.len() < want.len());
        assert_eq!(got[..], want[..got.len()], "invented entries");
    }

    // Goal: a full disk at the write of a sync is undone, not fatal: the log keeps
    // working, no partial record stays in the file, the same entries go out with the
    // next sync, and a reopen (also one right after the failure) finds whole records only.
    #[test]
    fn no_space_write_is_undone_and_retried() {
        let dir = tempfile::tempdir().unwrap();
        let synced = entries(1, 10, 100);
        let batch = entries(10, 30, 100);
        let mut wal = Wal::open(dir.path(), options(1 << 20)).unwrap();
        wal.append(&synced).unwrap();
        wal.sync().unwrap();
        let file_bytes = std::fs::metadata(&wal.segments()[0].path).unwrap().len();
        wal.append(&batch).unwrap();
        wal.no_space_next_write();
        assert!(matches!(wal.sync(), Err(Error::NoSpace { .. })));
        let after = std::fs::metadata(&wal.segments()[0].path).unwrap().len();
        assert!(after <= file_bytes, "the half-written records were cut off");
        assert_eq!(wal.last_index(), 29, "appended entries stay buffered");
        wal.sync().unwrap();
        let want: Vec<Entry> = synced.iter().chain(&batch).cloned().collect();
        assert_eq!(all(&mut wal), want);
        drop(wal);
        let mut wal = Wal::open(dir.path(), options(1 << 20)).unwrap();
        assert_eq!(all(&mut wal), want);
    }

    // Goal: a full disk while a segment is sealed (the footer write) leaves the tail
    // open with no partial footer; retrying the rest of the batch rolls and syncs, and
    // every segment verifies on reopen (with every record re-checksummed).
    #[test]
    fn no_space_while_rolling_leaves_no_torn_footer() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), options(2048)).unwrap();
        let synced = entries(1, 10, 100);
        wal.append(&synced).unwrap();
        wal.sync().unwrap();
        let segments = wal.segments().len();
        wal.no_space_next_write();
        let more = entries(10, 60, 100);
        assert!(matches!(wal.append(&more), Err(Error::NoSpace { .. })));
        assert_eq!(wal.segments().len(), segments, "the tail stays open");
        let next = wal.last_index() + 1;
        wal.append(&more[(next - 10) as usize..]).unwrap();
        wal.sync().unwrap();
        let want: Vec<Entry> = synced.iter().chain(&more).cloned().collect();
        assert_eq!(all(&mut wal), want);
        drop(wal);
        let verify = WalOptions {
            verify_on_open: true,
            ..options(2048)
        };
        let mut wal = Wal::open(dir.path(), verify).unwrap();
        assert_eq!(all(&mut wal), want);
        assert!(wal.segments().len() > segments);
    }

    // Goal: a write that fails while a full segment is sealed (the footer write
    // inside `append`) fails the log; the reopen drops the torn footer and keeps
    // every synced entry across the earlier segments.
    #[test]
    fn failed_write_while_rolling() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), options(2048)).unwrap();
        let synced = entries(1, 40, 100);
        wal.append(&synced).unwrap();
        wal.sync().unwrap();
        let segments = wal.segments().len();
        wal.fail_next_write();
        // Enough to fill the open segment, so the append itself seals it.
        let more = entries(40, 80, 100);
        assert!(matches!(wal.append(&more), Err(Error::Io { .. })));
        assert_refuses_changes(&mut wal);
        drop(wal);
        let mut wal = Wal::open(dir.path(), options(2048)).unwrap();
        let got = all(&mut wal);
        let want: Vec<Entry> = synced.iter().chain(&more).cloned().collect();
        assert!(got.len() >= synced.len(), "lost synced entries");
        assert_eq!(got[..], want[..got.len()], "invented entries");
        assert_eq!(wal.segments().len(), segments);
        let next = wal.last_index() + 1;
        wal.append(&entries(next, next + 30, 100)).unwrap();
        wal.sync().unwrap();
        assert!(wal.segments().len() > segments);
    }
}
