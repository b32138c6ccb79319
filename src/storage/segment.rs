//! One segment in memory: its record-offset index, term runs and bytes.
//!
//! A sealed segment is read through a read-only memory map; the open (tail)
//! segment is read through its file plus the bytes appended but not yet written
//! ([`TailBytes`]). Every read checks the record's crc, so damage inside a sealed
//! segment whose footer was trusted at open still surfaces as
//! [`Error::Corruption`], never as a wrong entry.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::format::{TermRun, decode_record};
use super::{Error, Result, io_error};
use crate::raft::message::Entry;

/// Bytes a record takes on disk beyond what a [`Budget`] counts for it (records are
/// padded to a multiple of 8, `format::align8`).
const RECORD_PADDING_MAX: u64 = 7;

/// The in-memory index of one segment file.
#[derive(Debug)]
pub(crate) struct Segment {
    /// The segment file.
    pub path: PathBuf,
    /// Index of the first record (also in the file name and header).
    pub first_index: u64,
    /// Term of entry `first_index - 1`.
    pub prev_term: u64,
    /// Invariant: `offsets[k]` is the byte offset of entry `first_index + k`; increasing.
    pub offsets: Vec<u32>,
    /// Invariant: first indexes strictly increase, terms never decrease.
    pub runs: Vec<TermRun>,
    /// Where the last record ends (the footer of a sealed segment starts here).
    pub data_end: u64,
    /// File length including the footer (sealed) or `data_end` (open).
    pub file_bytes: u64,
    /// The read-only map of a sealed segment; `None` for the open one.
    pub map: Option<Mmap>,
}

/// The open segment's bytes: `written` of them in the file, the rest in `pending`.
#[derive(Debug)]
pub(crate) struct TailBytes<'a> {
    pub file: &'a File,
    pub written: u64,
    pub pending: &'a [u8],
}

impl Segment {
    /// Number of entries.
    pub fn count(&self) -> u64 {
        self.offsets.len() as u64
    }

    /// Index of the last entry, `first_index - 1` when empty.
    pub fn last_index(&self) -> u64 {
        self.first_index + self.count() - 1
    }

    /// Term of the last entry, `prev_term` when empty.
    pub fn last_term(&self) -> u64 {
        self.runs.last().map_or(self.prev_term, |run| run.term)
    }

    /// Term of `index` in this segment (`first_index - 1` answers `prev_term`).
    pub fn term(&self, index: u64) -> Option<u64> {
        if index + 1 == self.first_index {
            return Some(self.prev_term);
        }
        if index < self.first_index || index > self.last_index() {
            return None;
        }
        let at = self.runs.partition_point(|run| run.first_index <= index);
        Some(self.runs[at - 1].term)
    }

    /// Records one more entry at `offset`.
    pub fn push(&mut self, offset: u64, index: u64, term: u64) {
        debug_assert_eq!(index, self.last_index() + 1);
        self.offsets.push(offset as u32);
        if self.runs.last().is_none_or(|run| run.term != term) {
            self.runs.push(TermRun {
                first_index: index,
                term,
            });
        }
    }

    /// Forgets entries `>= from`; returns the byte offset where they began.
    pub fn forget_from(&mut self, from: u64) -> u64 {
        let keep = from.saturating_sub(self.first_index) as usize;
        if keep >= self.offsets.len() {
            return self.data_end;
        }
        let offset = u64::from(self.offsets[keep]);
        self.offsets.truncate(keep);
        let runs = self.runs.partition_point(|run| run.first_index < from);
        self.runs.truncate(runs);
        self.data_end = offset;
        offset
    }

    /// Byte range of entries `[lo, hi)`, both inside this segment.
    fn byte_range(&self, lo: u64, hi: u64) -> (u64, u64) {
        let start = u64::from(self.offsets[(lo - self.first_index) as usize]);
        let end = match self.offsets.get((hi - self.first_index) as usize) {
            Some(offset) => u64::from(*offset),
            None => self.data_end,
        };
        (start, end)
    }

    /// The end of the part of `[lo, hi)` a read with `budget_left` to spend can take:
    /// just past the first record the budget cannot reach (or `hi`). A record is at
    /// most [`RECORD_PADDING_MAX`] bytes longer on disk than what the budget counts for
    /// it, so a record whose end lies past `budget_left` plus that padding for every
    /// record up to it cannot be taken.
    fn budget_end(&self, lo: u64, hi: u64, budget_left: u64) -> u64 {
        if hi <= lo + 1 {
            return hi;
        }
        let first = self.first_index;
        let start = u64::from(self.offsets[(lo - first) as usize]);
        // Binary search for the first `j` in `(lo, hi)` where the records `[lo, j)`
        // (which end at entry `j`'s offset) are past the reach; `hi` when there is none.
        let (mut low, mut high) = (lo + 1, hi);
        while low < high {
            let j = low + (high - low) / 2;
            let end = u64::from(self.offsets[(j - first) as usize]) - start;
            if end.saturating_sub(RECORD_PADDING_MAX * (j - lo)) <= budget_left {
                low = j + 1;
            } else {
                high = j;
            }
        }
        low
    }

    /// Appends entries `[lo, hi)` of this segment to `out`, stopping before `bytes_max`
    /// would be exceeded (`entry_bytes` counts what is already in `out`) but always
    /// taking one entry when `out` is empty. Returns whether it stopped early. Only the
    /// bytes of the records the budget can reach are mapped or read (a long range asked
    /// for a small budget, as a replay of the log asks, costs what it returns).
    pub fn read_into(
        &self,
        lo: u64,
        hi: u64,
        tail: Option<&TailBytes<'_>>,
        scratch: &mut Vec<u8>,
        budget: &mut Budget,
        out: &mut Vec<Entry>,
    ) -> Result<bool> {
        let wanted = hi;
        let hi = self.budget_end(lo, hi, budget.left);
        let (start, end) = self.byte_range(lo, hi);
        let bytes: &[u8] = match (&self.map, tail) {
            (Some(map), _) => &map[start as usize..end as usize],
            (None, Some(tail)) => {
                tail_range(&self.path, tail, start, end, scratch)?;
                scratch
            }
            (None, None) => unreachable!("the open segment is read with its tail bytes"),
        };
        for index in lo..hi {
            let at =
                (u64::from(self.offsets[(index - self.first_index) as usize]) - start) as usize;
            let record =
                decode_record(&bytes[at..]).map_err(|reason| self.corrupt(index, reason))?;
            if record.index != index {
                return Err(self.corrupt(index, "record index does not match the index"));
            }
            if !budget.take(record.payload.len(), out.is_empty()) {
                return Ok(true);
            }
            out.push(record.to_entry());
        }
        Ok(hi < wanted)
    }

    fn corrupt(&self, index: u64, reason: &str) -> Error {
        Error::Corruption {
            file: self.path.clone(),
            offset: u64::from(self.offsets[(index - self.first_index) as usize]),
            reason: format!("entry {index}: {reason}"),
        }
    }
}

/// Copies bytes `[start, end)` of the open segment into `scratch`.
fn tail_range(
    path: &Path,
    tail: &TailBytes<'_>,
    start: u64,
    end: u64,
    scratch: &mut Vec<u8>,
) -> Result<()> {
    scratch.clear();
    scratch.resize((end - start) as usize, 0);
    let in_file = end.min(tail.written).saturating_sub(start) as usize;
    if in_file > 0 {
        tail.file
            .read_exact_at(&mut scratch[..in_file], start)
            .map_err(io_error(path))?;
    }
    if in_file < scratch.len() {
        let from = (start + in_file as u64 - tail.written) as usize;
        let need = scratch.len() - in_file;
        scratch[in_file..].copy_from_slice(&tail.pending[from..from + need]);
    }
    Ok(())
}

/// The `max_bytes` budget of a read: payload bytes plus the fixed record part.
#[derive(Debug)]
pub(crate) struct Budget {
    pub left: u64,
}

impl Budget {
    /// Takes one entry of `payload_bytes`; `force` takes it even over budget.
    fn take(&mut self, payload_bytes: usize, force: bool) -> bool {
        let cost = (payload_bytes + super::format::RECORD_HEADER_BYTES) as u64;
        if cost > self.left && !force {
            return false;
        }
        self.left = self.left.saturating_sub(cost);
        true
    }
}
