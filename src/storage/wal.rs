//! The segmented write-ahead log.
//!
//! Entries are encoded into an in-memory buffer by [`Wal::append`] (no syscall);
//! [`Wal::sync`] writes that buffer with one `pwrite` and makes it durable with one
//! `fdatasync` (group commit), plus an fsync of the directory when segment files
//! were created since the last sync. A segment is sealed once an append would make
//! it larger than `segment_bytes`: its index footer is written, it is memory-mapped
//! for reads, and a new segment begins. The compaction marker (the index and term
//! just before the first entry) is the first segment's header, so compaction is
//! nothing but the removal of whole files.
//!
//! Invariants: there is always exactly one open segment (the tail), after all
//! sealed ones; segments hold consecutive indexes; terms never decrease.
//!
//! Failure: any error of a change (`append`, `sync`, `truncate_suffix`,
//! `compact_prefix`, `reset_to_snapshot`) marks the log failed, and every later
//! change returns [`Error::Failed`] without touching the disk. There is no rollback:
//! the caller drops the log and reopens it, and recovery decides from the disk alone.
//! Reads keep answering from memory, which may hold entries that never became durable.
//!
//! The one exception is a full disk ([`Error::NoSpace`]) while writing records, a
//! footer, a new segment or the reset temp file: the write is undone (the file is cut
//! back to the bytes written before it, so no partial record and no partial footer
//! stays in any file, and a segment counts as sealed only once its footer is whole),
//! the log stays usable, and what was appended stays buffered, so the next `sync`
//! writes it again. A failed fdatasync is fatal even when it reports ENOSPC: the
//! kernel may have dropped the dirty pages, and a retry could report a false success.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use memmap2::Mmap;

use super::format::{
    HEADER_BYTES, RESET_TEMP_NAME, SegmentHeader, encode_footer, encode_record, record_bytes,
    segment_name,
};
use super::hard_state::{self, sync_dir};
use super::lock::DirLock;
use super::recovery::{self, finish_reset};
use super::segment::{Budget, Segment, TailBytes};
use super::{Error, FsyncMode, Result, WalOptions, io_error, write_error};
use crate::raft::message::{Entry, HardState};

/// A read-only description of one segment, for tools and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The segment file.
    pub path: PathBuf,
    /// Index of its first entry (or of the entry it would hold first, when empty).
    pub first_index: u64,
    /// Index of its last entry; `first_index - 1` when empty.
    pub last_index: u64,
    /// Lowest and highest term of its entries; `None` when empty.
    pub terms: Option<(u64, u64)>,
    /// Number of entries.
    pub entry_count: u64,
    /// Bytes the segment takes (on disk plus not yet written, for the open one).
    pub bytes: u64,
    /// Whether the segment is sealed (has an index footer and is read-only).
    pub sealed: bool,
}

/// The write-ahead log of one node. See the module docs.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    options: WalOptions,
    _lock: DirLock,
    hard_state: HardState,
    /// Invariant: consecutive, each non-empty unless it is the first one.
    sealed: Vec<Segment>,
    /// Invariant: `tail.first_index == sealed.last().last_index() + 1`.
    tail: Segment,
    tail_file: File,
    /// Bytes of the tail already in the file; the rest of `tail.data_end` is `pending`.
    written: u64,
    /// Invariant: `written + pending.len() == tail.data_end`.
    pending: Vec<u8>,
    /// Whether the tail file changed since its last fdatasync.
    tail_dirty: bool,
    /// Sealed files written since the last sync; fdatasynced by the next one.
    unsynced_sealed: Vec<File>,
    /// Whether segment files were created since the last sync.
    dir_dirty: bool,
    scratch: Vec<u8>,
    /// Set when a write, sync or file operation failed: the log then refuses every
    /// change (see [`Error::Failed`]).
    failed: bool,
    /// Whether a preallocation already failed for lack of space (warned once).
    preallocate_warned: bool,
    /// Segments dropped by `compact_prefix` being unlinked (and the directory fsynced)
    /// on a helper thread, so deleting a large file never stalls the event loop.
    deleting: Option<JoinHandle<Result<()>>>,
    /// Test-only fault injection.
    #[cfg(test)]
    pub(crate) faults: super::fault::Faults,
}

impl Drop for Wal {
    /// Finishes a pending segment deletion before the directory lock is released.
    fn drop(&mut self) {
        if let Err(error) = self.finish_deleting() {
            log::error!("{}: compaction did not finish: {error}", self.dir.display());
        }
    }
}

impl Wal {
    /// Opens (creating if needed) the log in `dir`: takes the directory lock, then
    /// recovers as described in `docs/FORMAT.md` ("Recovery").
    ///
    /// # Errors
    /// [`Error::Locked`] if another process holds the log; [`Error::Corruption`] naming
    /// file and offset for damage that is not a torn tail; [`Error::Io`].
    ///
    /// # Panics
    /// If `options.segment_bytes` exceeds [`WalOptions::SEGMENT_BYTES_MAX`].
    pub fn open(dir: &Path, options: WalOptions) -> Result<Wal> {
        assert!(
            options.segment_bytes <= WalOptions::SEGMENT_BYTES_MAX,
            "segment_bytes too large"
        );
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let lock = DirLock::acquire(dir)?;
        finish_reset(dir)?;
        let hard_state = hard_state::load(dir)?;
        let recovered = recovery::recover(
            dir,
            options.verify_on_open,
            options.fsync == FsyncMode::Always,
        )?;
        let written = recovered.tail.data_end;
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            options,
            _lock: lock,
            hard_state,
            sealed: recovered.sealed,
            tail: recovered.tail,
            tail_file: recovered.tail_file,
            written,
            pending: Vec::with_capacity(1 << 16),
            tail_dirty: false,
            unsynced_sealed: Vec::new(),
            deleting: None,
            dir_dirty: false,
            scratch: Vec::new(),
            failed: false,
            preallocate_warned: false,
            #[cfg(test)]
            faults: super::fault::Faults::default(),
        };
        wal.preallocate_tail();
        Ok(wal)
    }

    /// Reserves `segment_bytes` for the tail file (see [`WalOptions::preallocate`]).
    /// An optimisation only: a failure is logged (a full disk once per log: the
    /// appends that then fail raise the node's alarm) and the file grows as written.
    fn preallocate_tail(&mut self) {
        if !self.options.preallocate || self.written >= self.options.segment_bytes {
            return;
        }
        let Ok(len) = libc::off_t::try_from(self.options.segment_bytes) else {
            return;
        };
        // SAFETY: a plain syscall on an open descriptor owned by `tail_file`; mode 0
        // allocates without changing data, so zeroes appear after the file's end.
        let rc = unsafe { libc::fallocate(self.tail_file.as_raw_fd(), 0, 0, len) };
        if rc != 0 {
            let error = std::io::Error::last_os_error();
            let no_space = super::is_no_space_io(&error);
            if error.raw_os_error() != Some(libc::EOPNOTSUPP)
                && !(no_space && self.preallocate_warned)
            {
                log::warn!("{}: cannot preallocate: {error}", self.tail.path.display());
            }
            self.preallocate_warned |= no_space;
        }
    }

    /// Runs a change unless the log has failed, and marks it failed when the change
    /// returns an error: after a failed write or fdatasync the kernel may have dropped
    /// the data, so nothing in memory can be trusted to match the disk any more.
    fn guarded<T>(&mut self, change: impl FnOnce(&mut Wal) -> Result<T>) -> Result<T> {
        if self.failed {
            return Err(Error::Failed {
                dir: self.dir.clone(),
            });
        }
        let result = change(self);
        // NoSpace comes only from a change that undid itself (module docs).
        if result.as_ref().is_err_and(|e| !e.is_no_space()) {
            self.failed = true;
        }
        result
    }

    /// Appends entries in memory; nothing is written until [`Wal::sync`].
    ///
    /// # Errors
    /// [`Error::Io`] when sealing a full segment or creating the next one fails;
    /// [`Error::Failed`] after any earlier failure. An error leaves the log failed:
    /// drop it and reopen (recovery keeps what reached the disk whole). Except
    /// [`Error::NoSpace`] (the disk filled while sealing or creating a segment): the
    /// entries before the one that needed the new segment are appended, the rest are
    /// not, and the log stays usable.
    ///
    /// # Panics
    /// If the entries do not continue at `last_index() + 1`, a term decreases, or a
    /// payload exceeds [`super::format::PAYLOAD_BYTES_MAX`].
    pub fn append(&mut self, entries: &[Entry]) -> Result<()> {
        self.guarded(|wal| wal.append_entries(entries))
    }

    fn append_entries(&mut self, entries: &[Entry]) -> Result<()> {
        for entry in entries {
            assert_eq!(
                entry.index,
                self.last_index() + 1,
                "entries must be consecutive"
            );
            assert!(
                entry.term >= self.tail.last_term(),
                "terms must not decrease"
            );
            let size = record_bytes(entry.data.len()) as u64;
            if self.tail.count() > 0 && self.tail.data_end + size > self.options.segment_bytes {
                self.roll()?;
            }
            let offset = self.tail.data_end;
            encode_record(entry, &mut self.pending);
            self.tail.data_end += size;
            self.tail.file_bytes = self.tail.data_end;
            self.tail.push(offset, entry.index, entry.term);
        }
        Ok(())
    }

    /// Seals the tail (footer, one write, map) and starts the next segment. On
    /// [`Error::NoSpace`] the tail is left open, exactly as before the call (its
    /// records may now be written, but no footer is).
    fn roll(&mut self) -> Result<()> {
        let records_pending = self.pending.len();
        encode_footer(
            self.tail.data_end,
            &self.tail.offsets,
            &self.tail.runs,
            &mut self.pending,
        );
        if let Err(error) = self.write_pending() {
            // Not written at all (write_pending cut the file back): drop the footer.
            self.pending.truncate(records_pending);
            return Err(error);
        }
        let path = self.tail.path.clone();
        // The footer's trailer must end the file: drop the preallocated rest.
        self.tail_file
            .set_len(self.written)
            .map_err(io_error(&path))?;
        // SAFETY: the directory lock is held and a sealed segment is never written
        // while mapped (truncate_suffix drops the map before it reopens the file).
        let map = unsafe { Mmap::map(&self.tail_file) }.map_err(io_error(&path))?;
        let next_first = self.tail.last_index() + 1;
        let next_path = self.dir.join(segment_name(next_first));
        let next_file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&next_path)
            .map_err(write_error(&next_path))
        {
            Ok(file) => file,
            Err(error) => {
                if error.is_no_space() {
                    // Unseal: cut the footer off again, so the tail stays open.
                    drop(map);
                    self.tail_file
                        .set_len(self.tail.data_end)
                        .map_err(io_error(&path))?;
                    self.written = self.tail.data_end;
                }
                return Err(error);
            }
        };
        let header = SegmentHeader {
            first_index: next_first,
            prev_term: self.tail.last_term(),
        };
        let next = Segment {
            path: next_path,
            first_index: next_first,
            prev_term: header.prev_term,
            offsets: Vec::new(),
            runs: Vec::new(),
            data_end: HEADER_BYTES as u64,
            file_bytes: HEADER_BYTES as u64,
            map: None,
        };
        let mut sealed = std::mem::replace(&mut self.tail, next);
        sealed.file_bytes = map.len() as u64;
        sealed.map = Some(map);
        self.sealed.push(sealed);
        let sealed_file = std::mem::replace(&mut self.tail_file, next_file);
        if self.tail_dirty {
            self.unsynced_sealed.push(sealed_file);
        }
        self.pending.extend_from_slice(&header.encode());
        self.written = 0;
        self.dir_dirty = true;
        self.preallocate_tail();
        Ok(())
    }

    fn write_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let path = &self.tail.path;
        #[cfg(test)]
        if self.faults.fail_next_write {
            return Err(self.faults.short_write(
                &self.tail_file,
                path,
                &self.pending,
                self.written,
            ));
        }
        #[cfg(test)]
        let result = if self.faults.no_space_next_write {
            self.faults
                .no_space_write(&self.tail_file, &self.pending, self.written)
        } else {
            self.tail_file.write_all_at(&self.pending, self.written)
        };
        #[cfg(not(test))]
        let result = self.tail_file.write_all_at(&self.pending, self.written);
        if let Err(source) = result {
            let error = write_error(path)(source);
            if error.is_no_space() {
                // Part of it may have landed: cut the file back to the bytes written
                // before, so no partial record stays. `pending` keeps all of it.
                self.tail_file
                    .set_len(self.written)
                    .map_err(io_error(path))?;
            }
            return Err(error);
        }
        self.written += self.pending.len() as u64;
        self.pending.clear();
        self.tail_dirty = true;
        Ok(())
    }

    /// Writes everything appended and makes it durable: one fdatasync of the tail
    /// (plus one per segment sealed since the last sync) and an fsync of the
    /// directory when segments were created. Under [`FsyncMode::Never`] it only writes.
    /// Returns whether it flushed anything to the disk: `false` when nothing was
    /// appended or created since the last sync (no fdatasync issued), and always
    /// under [`FsyncMode::Never`].
    ///
    /// # Errors
    /// [`Error::Io`]; [`Error::Failed`] after any earlier failure. A failed sync
    /// leaves the log failed and is never retried (the kernel may have dropped the
    /// dirty pages): drop the log and reopen; only what an earlier successful sync
    /// covered is sure to be there. [`Error::NoSpace`] when the write before the
    /// fdatasync found the disk full: nothing was flushed, the log stays usable and
    /// the next `sync` writes the same bytes again.
    pub fn sync(&mut self) -> Result<bool> {
        self.guarded(Wal::sync_all)
    }

    fn sync_all(&mut self) -> Result<bool> {
        #[cfg(test)]
        let unsynced_from = self.written;
        self.write_pending()?;
        #[cfg(test)]
        if self.faults.fail_next_sync {
            return Err(self.faults.failed_sync(
                &self.tail_file,
                &self.tail.path,
                unsynced_from,
                self.written,
            ));
        }
        let flush = self.options.fsync == FsyncMode::Always;
        let flushed =
            flush && (self.tail_dirty || self.dir_dirty || !self.unsynced_sealed.is_empty());
        for file in self.unsynced_sealed.drain(..) {
            if flush {
                file.sync_data().map_err(io_error(&self.dir))?;
            }
        }
        if self.tail_dirty && flush {
            self.tail_file
                .sync_data()
                .map_err(io_error(&self.tail.path))?;
        }
        self.tail_dirty = false;
        if self.dir_dirty && flush {
            sync_dir(&self.dir)?;
        }
        self.dir_dirty = false;
        Ok(flushed)
    }

    /// The entry at `index`, or `None` outside `[first_index, last_index]`.
    ///
    /// # Errors
    /// [`Error::Corruption`] when the stored record fails its crc; [`Error::Io`].
    pub fn entry(&mut self, index: u64) -> Result<Option<Entry>> {
        if index < self.first_index() || index > self.last_index() {
            return Ok(None);
        }
        Ok(self.entries(index, index + 1, 0)?.pop())
    }

    /// Entries `[lo, hi)`, stopping before their size (payload plus 25 bytes each)
    /// would exceed `max_bytes`, but always at least one when the range is non-empty.
    /// Sees appended entries that are not yet synced.
    ///
    /// # Errors
    /// [`Error::Compacted`] when `lo < first_index()`; [`Error::Unavailable`] when
    /// `hi > last_index() + 1`; [`Error::Corruption`]; [`Error::Io`].
    pub fn entries(&mut self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>> {
        if lo < self.first_index() {
            return Err(Error::Compacted { index: lo });
        }
        if hi > self.last_index() + 1 {
            return Err(Error::Unavailable { index: hi - 1 });
        }
        let mut out = Vec::new();
        let mut budget = Budget { left: max_bytes };
        let mut lo = lo;
        let start = self.sealed.partition_point(|s| s.last_index() < lo);
        for segment in &self.sealed[start..] {
            if lo >= hi {
                return Ok(out);
            }
            let end = hi.min(segment.last_index() + 1);
            if segment.read_into(lo, end, None, &mut self.scratch, &mut budget, &mut out)? {
                return Ok(out);
            }
            lo = end;
        }
        if lo < hi {
            let tail = TailBytes {
                file: &self.tail_file,
                written: self.written,
                pending: &self.pending,
            };
            self.tail.read_into(
                lo,
                hi,
                Some(&tail),
                &mut self.scratch,
                &mut budget,
                &mut out,
            )?;
        }
        Ok(out)
    }

    /// Term of `index`, including the compaction marker; `None` outside
    /// `[compacted().0, last_index()]`.
    pub fn term(&self, index: u64) -> Option<u64> {
        if index >= self.tail.first_index - 1 {
            return self.tail.term(index);
        }
        let at = self.sealed.partition_point(|s| s.last_index() < index);
        match self.sealed.get(at) {
            Some(segment) => segment.term(index),
            None => None,
        }
    }

    fn first_segment(&self) -> &Segment {
        self.sealed.first().unwrap_or(&self.tail)
    }

    /// Index of the first entry; `last_index() + 1` when the log is empty.
    pub fn first_index(&self) -> u64 {
        self.first_segment().first_index
    }

    /// Index of the last entry; the marker index when the log is empty.
    pub fn last_index(&self) -> u64 {
        self.tail.last_index()
    }

    /// The compaction marker: index and term of the entry just before the first one.
    pub fn compacted(&self) -> (u64, u64) {
        let first = self.first_segment();
        (first.first_index - 1, first.prev_term)
    }

    /// Removes entries `>= from` (conflict resolution). Whole segments past `from`
    /// are removed durably at once (directory fsynced after each, newest first); the
    /// cut inside the segment holding `from` is durable after the next [`Wal::sync`].
    /// Until then a crash may bring the removed entries of that segment back, which
    /// Raft tolerates: they were never acknowledged in their new form.
    ///
    /// # Errors
    /// [`Error::Io`], which leaves the log failed; [`Error::Failed`].
    ///
    /// # Panics
    /// If `from <= compacted().0` (compacted entries cannot be truncated).
    pub fn truncate_suffix(&mut self, from: u64) -> Result<()> {
        self.guarded(|wal| wal.truncate_from(from))
    }

    fn truncate_from(&mut self, from: u64) -> Result<()> {
        assert!(
            from > self.compacted().0,
            "cannot truncate compacted entries"
        );
        if from > self.last_index() {
            return Ok(());
        }
        while self.tail.first_index > from {
            self.pop_tail()?;
        }
        let offset = self.tail.forget_from(from);
        if offset >= self.written {
            self.pending.truncate((offset - self.written) as usize);
        } else {
            self.pending.clear();
            // Shortening also drops the preallocation, which is then taken again, so
            // the space after `offset` reads as zeroes, never as the removed records.
            self.tail_file
                .set_len(offset)
                .map_err(io_error(&self.tail.path))?;
            self.written = offset;
            self.tail_dirty = true;
            self.preallocate_tail();
        }
        self.tail.file_bytes = self.tail.data_end;
        Ok(())
    }

    /// Removes the tail file and reopens the last sealed segment as the tail.
    fn pop_tail(&mut self) -> Result<()> {
        let mut segment = self
            .sealed
            .pop()
            .expect("a tail above `from` has a predecessor");
        fs::remove_file(&self.tail.path).map_err(io_error(&self.tail.path))?;
        sync_dir(&self.dir)?;
        segment.map = None;
        let path = segment.path.clone();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        file.set_len(segment.data_end).map_err(io_error(&path))?;
        segment.file_bytes = segment.data_end;
        self.written = segment.data_end;
        self.pending.clear();
        self.tail = segment;
        self.tail_file = file;
        self.tail_dirty = true;
        self.preallocate_tail();
        Ok(())
    }

    /// Syncs, then drops every sealed segment whose entries are all below `upto` from
    /// the log, and unlinks their files oldest first on a helper thread (then fsyncs
    /// the directory), so a large unlink never stalls the caller. The new marker (the
    /// first kept segment's header) is durable once that finishes: at the latest when
    /// the next `compact_prefix`, `reset_to_snapshot` or drop of the log returns. A
    /// crash before that only leaves older segments in place, which recovery reads as
    /// an earlier marker. The open segment is never removed, so the log may keep
    /// entries below `upto`.
    ///
    /// # Errors
    /// [`Error::Io`], which leaves the log failed; [`Error::Failed`].
    pub fn compact_prefix(&mut self, upto: u64) -> Result<()> {
        self.sync()?;
        self.guarded(|wal| wal.remove_below(upto))
    }

    fn remove_below(&mut self, upto: u64) -> Result<()> {
        self.finish_deleting()?;
        let count = self
            .sealed
            .iter()
            .take_while(|s| s.last_index() < upto)
            .count();
        if count == 0 {
            return Ok(());
        }
        let removed: Vec<Segment> = self.sealed.drain(..count).collect();
        let dir = self.dir.clone();
        let spawned = std::thread::Builder::new()
            .name("raftkv-wal-delete".into())
            .spawn(move || {
                for segment in removed {
                    let path = segment.path.clone();
                    drop(segment);
                    fs::remove_file(&path).map_err(io_error(&path))?;
                }
                sync_dir(&dir)
            });
        match spawned {
            Ok(handle) => {
                self.deleting = Some(handle);
                Ok(())
            }
            Err(source) => Err(Error::Io {
                path: self.dir.clone(),
                source,
            }),
        }
    }

    /// Waits for the segment deletion of the last `compact_prefix`, if any.
    fn finish_deleting(&mut self) -> Result<()> {
        match self.deleting.take().map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(error))) => Err(error),
            Some(Err(_)) => Err(Error::Io {
                path: self.dir.clone(),
                source: std::io::Error::other("the segment deletion thread panicked"),
            }),
        }
    }

    /// Drops every entry and sets the marker to `(index, term)` after a snapshot was
    /// installed; the next append starts at `index + 1`. Durable when it returns: a
    /// temp segment is synced first, and recovery finishes an interrupted reset.
    ///
    /// # Errors
    /// [`Error::Io`], which leaves the log failed; [`Error::Failed`];
    /// [`Error::NoSpace`] before anything changed.
    pub fn reset_to_snapshot(&mut self, index: u64, term: u64) -> Result<()> {
        self.guarded(|wal| wal.reset(index, term))
    }

    fn reset(&mut self, index: u64, term: u64) -> Result<()> {
        self.finish_deleting()?;
        let temp = self.dir.join(RESET_TEMP_NAME);
        let header = SegmentHeader {
            first_index: index + 1,
            prev_term: term,
        };
        let written = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .and_then(|file| file.write_all_at(&header.encode(), 0).map(|()| file));
        let file = match written {
            Ok(file) => file,
            Err(source) => {
                let error = write_error(&temp)(source);
                if error.is_no_space() {
                    // The reset has not begun: the old segments are all in place.
                    fs::remove_file(&temp).map_err(io_error(&temp))?;
                }
                return Err(error);
            }
        };
        file.sync_all().map_err(io_error(&temp))?;
        sync_dir(&self.dir)?;
        self.unsynced_sealed.clear();
        for segment in std::iter::once(&self.tail).chain(self.sealed.iter().rev()) {
            fs::remove_file(&segment.path).map_err(io_error(&segment.path))?;
        }
        let path = self.dir.join(segment_name(index + 1));
        fs::rename(&temp, &path).map_err(io_error(&path))?;
        sync_dir(&self.dir)?;
        self.sealed.clear();
        self.tail = Segment {
            path,
            first_index: index + 1,
            prev_term: term,
            offsets: Vec::new(),
            runs: Vec::new(),
            data_end: HEADER_BYTES as u64,
            file_bytes: HEADER_BYTES as u64,
            map: None,
        };
        self.tail_file = file;
        self.written = HEADER_BYTES as u64;
        self.pending.clear();
        self.tail_dirty = false;
        self.dir_dirty = false;
        self.preallocate_tail();
        Ok(())
    }

    /// Saves the hard state atomically and durably (temp file, fsync, rename, fsync of
    /// the directory: three flushes, so call it only when term or vote change).
    ///
    /// # Errors
    /// [`Error::NoSpace`]: nothing changed, retry later; [`Error::Io`]: fatal.
    pub fn save_hard_state(&mut self, state: &HardState) -> Result<()> {
        hard_state::save(&self.dir, state)?;
        self.hard_state = *state;
        Ok(())
    }

    /// The last saved hard state (loaded at open; default when never saved).
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every segment, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let info = |s: &Segment| SegmentInfo {
            path: s.path.clone(),
            first_index: s.first_index,
            last_index: s.last_index(),
            terms: s.runs.first().map(|first| (first.term, s.last_term())),
            entry_count: s.count(),
            bytes: s.file_bytes,
            sealed: s.map.is_some(),
        };
        self.sealed
            .iter()
            .chain(std::iter::once(&self.tail))
            .map(info)
            .collect()
    }

    /// Bytes of the entries above `index`, estimated without reading: whole segments
    /// above it, and a segment holding it pro rata by entry count.
    pub fn bytes_after(&self, index: u64) -> u64 {
        let share = |s: &Segment| {
            let (first, count) = (s.first_index, s.count());
            if first > index {
                s.file_bytes
            } else if count == 0 || s.last_index() <= index {
                0
            } else {
                let above = u128::from(s.last_index() - index);
                (u128::from(s.file_bytes) * above / u128::from(count)) as u64
            }
        };
        self.sealed.iter().map(share).sum::<u64>() + share(&self.tail)
    }

    /// Bytes of all segments together.
    pub fn total_bytes(&self) -> u64 {
        self.sealed.iter().map(|s| s.file_bytes).sum::<u64>() + self.tail.file_bytes
    }
}
