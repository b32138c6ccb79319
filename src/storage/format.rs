//! Every on-disk constant and byte layout of the log, in one place.
//!
//! All integers are little-endian. Checksums are CRC-32/IEEE (the `crc32fast`
//! crate, polynomial 0x04C11DB7 reflected), not CRC-32C. `docs/FORMAT.md` is the
//! prose version of this file; the two must agree.
//!
//! ```text
//! segment file  NNNNNNNNNNNNNNNNNNNN.wal   (20-digit zero-padded first index)
//!   header   32 B  magic[8] | first_index u64 | prev_term u64 | version u32 | crc u32
//!   records  each 8-byte aligned:
//!            crc u32 | len u32 | index u64 | term u64 | kind u8 | payload | zero pad
//!            len = 17 + payload bytes (everything after `len` up to the payload end)
//!            crc covers bytes 4 .. 8 + len (len, index, term, kind, payload)
//!   footer   (sealed segments only, starts at data_end, 8-byte aligned)
//!            offsets u32 x count | zero pad to 8 | runs (first_index u64, term u64) x n
//!            trailer 32 B: data_end u64 | count u32 | runs u32 | zero u32 | crc u32 | magic[8]
//!            crc covers the footer from data_end up to (not including) the crc field
//! ```
//!
//! Invariants: a zero `len` or `kind` is invalid, so zero bytes end a log cleanly; a
//! record never claims more than [`PAYLOAD_BYTES_MAX`] of payload, so a corrupt length
//! is rejected before anything is allocated for it.

use std::sync::Arc;

use crate::raft::message::{Entry, EntryKind};

/// First eight bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"\x9fRKVWAL\n";
/// Last eight bytes of every sealed segment (the footer trailer's magic).
pub const FOOTER_MAGIC: [u8; 8] = *b"\x9fRKVIDX\n";
/// Format version written in segment headers.
pub const SEGMENT_VERSION: u32 = 1;
/// Size of the segment header.
pub const HEADER_BYTES: usize = 32;
/// Size of a record's fixed part (crc, len, index, term, kind).
pub const RECORD_HEADER_BYTES: usize = 25;
/// `len` of a record with an empty payload.
pub const RECORD_LEN_MIN: u32 = 17;
/// The largest payload a record may carry (a bound checked before allocation).
pub const PAYLOAD_BYTES_MAX: usize = 256 << 20;
/// Size of the footer trailer.
pub const TRAILER_BYTES: usize = 32;
/// File-name suffix of segments.
pub const SEGMENT_SUFFIX: &str = ".wal";
/// Temporary segment written by `reset_to_snapshot` before it replaces the log.
pub const RESET_TEMP_NAME: &str = "reset.wal.tmp";
/// Name of the lock file.
pub const LOCK_NAME: &str = "LOCK";

/// Rounds `n` up to a multiple of 8.
pub fn align8(n: usize) -> usize {
    (n + 7) & !7
}

/// The file name of the segment whose first index is `first_index`.
pub fn segment_name(first_index: u64) -> String {
    format!("{first_index:020}{SEGMENT_SUFFIX}")
}

/// Parses a segment file name; `None` for any other file.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// A decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Index of the first record the segment holds (or would hold).
    pub first_index: u64,
    /// Term of the entry at `first_index - 1` (0 when there is none).
    pub prev_term: u64,
}

impl SegmentHeader {
    /// The 32 header bytes.
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..16].copy_from_slice(&self.first_index.to_le_bytes());
        out[16..24].copy_from_slice(&self.prev_term.to_le_bytes());
        out[24..28].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        let crc = crc32fast::hash(&out[0..28]);
        out[28..32].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and checks a header.
    ///
    /// # Errors
    /// A reason and the offset of the bad field when the magic, version or crc is wrong.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, (u64, &'static str)> {
        if bytes.len() < HEADER_BYTES {
            return Err((bytes.len() as u64, "short segment header"));
        }
        if bytes[0..8] != SEGMENT_MAGIC {
            return Err((0, "bad segment magic"));
        }
        if u32_at(bytes, 24) != SEGMENT_VERSION {
            return Err((24, "unsupported segment version"));
        }
        if crc32fast::hash(&bytes[0..28]) != u32_at(bytes, 28) {
            return Err((28, "bad segment header crc"));
        }
        Ok(SegmentHeader {
            first_index: u64_at(bytes, 8),
            prev_term: u64_at(bytes, 16),
        })
    }
}

/// Bytes one entry takes on disk, padding included.
pub fn record_bytes(payload_bytes: usize) -> usize {
    align8(RECORD_HEADER_BYTES + payload_bytes)
}

/// Appends the record of `entry` to `out`.
///
/// # Panics
/// If the payload exceeds [`PAYLOAD_BYTES_MAX`] (the caller bounds proposals).
pub fn encode_record(entry: &Entry, out: &mut Vec<u8>) {
    assert!(
        entry.data.len() <= PAYLOAD_BYTES_MAX,
        "entry payload too large"
    );
    let start = out.len();
    let len = RECORD_LEN_MIN + entry.data.len() as u32;
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&entry.index.to_le_bytes());
    out.extend_from_slice(&entry.term.to_le_bytes());
    out.push(entry.kind as u8);
    out.extend_from_slice(&entry.data);
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    out.resize(start + record_bytes(entry.data.len()), 0);
}

/// A record decoded in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// The entry's index.
    pub index: u64,
    /// The entry's term.
    pub term: u64,
    /// The entry's kind.
    pub kind: EntryKind,
    /// The payload, borrowed.
    pub payload: &'a [u8],
    /// Bytes the record takes, padding included.
    pub bytes: usize,
}

impl RecordView<'_> {
    /// An owned entry.
    pub fn to_entry(&self) -> Entry {
        Entry {
            index: self.index,
            term: self.term,
            kind: self.kind,
            data: Arc::from(self.payload),
        }
    }
}

/// Decodes the record at the start of `bytes`, checking length, kind and crc.
///
/// # Errors
/// A reason when the record is short, has a bad length or kind, or a bad crc.
pub fn decode_record(bytes: &[u8]) -> Result<RecordView<'_>, &'static str> {
    if bytes.len() < RECORD_HEADER_BYTES {
        return Err("short record header");
    }
    let len = u32_at(bytes, 4);
    if len < RECORD_LEN_MIN || (len - RECORD_LEN_MIN) as usize > PAYLOAD_BYTES_MAX {
        return Err("bad record length");
    }
    let end = 8 + len as usize;
    if bytes.len() < align8(end) {
        return Err("short record");
    }
    if crc32fast::hash(&bytes[4..end]) != u32_at(bytes, 0) {
        return Err("bad record crc");
    }
    let Some(kind) = EntryKind::from_u8(bytes[24]) else {
        return Err("bad record kind");
    };
    Ok(RecordView {
        index: u64_at(bytes, 8),
        term: u64_at(bytes, 16),
        kind,
        payload: &bytes[RECORD_HEADER_BYTES..end],
        bytes: align8(end),
    })
}

/// The index and term of the record at the start of `bytes`, without a crc check;
/// `None` when the fixed part is short or its length field is out of bounds.
pub fn peek_record(bytes: &[u8]) -> Option<(u64, u64, usize)> {
    if bytes.len() < RECORD_HEADER_BYTES {
        return None;
    }
    let len = u32_at(bytes, 4);
    if len < RECORD_LEN_MIN || (len - RECORD_LEN_MIN) as usize > PAYLOAD_BYTES_MAX {
        return None;
    }
    Some((
        u64_at(bytes, 8),
        u64_at(bytes, 16),
        align8(8 + len as usize),
    ))
}

/// A maximal run of consecutive entries with one term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermRun {
    /// Index of the run's first entry.
    pub first_index: u64,
    /// The term of every entry in the run.
    pub term: u64,
}

/// The in-file index of a sealed segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    /// Offset where the records end and the footer begins.
    pub data_end: u64,
    /// Offset of every record, in index order.
    pub offsets: Vec<u32>,
    /// Term runs of the records.
    pub runs: Vec<TermRun>,
}

/// Bytes taken by a footer over `count` records and `runs` term runs.
pub fn footer_bytes(count: usize, runs: usize) -> usize {
    align8(4 * count) + 16 * runs + TRAILER_BYTES
}

/// Appends the footer of a segment whose records end at `data_end` (a multiple of 8).
pub fn encode_footer(data_end: u64, offsets: &[u32], runs: &[TermRun], out: &mut Vec<u8>) {
    assert_eq!(data_end % 8, 0, "records end on an 8-byte boundary");
    let start = out.len();
    for offset in offsets {
        out.extend_from_slice(&offset.to_le_bytes());
    }
    out.resize(start + align8(4 * offsets.len()), 0);
    for run in runs {
        out.extend_from_slice(&run.first_index.to_le_bytes());
        out.extend_from_slice(&run.term.to_le_bytes());
    }
    out.extend_from_slice(&data_end.to_le_bytes());
    out.extend_from_slice(&(offsets.len() as u32).to_le_bytes());
    out.extend_from_slice(&(runs.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&FOOTER_MAGIC);
}

/// Decodes the footer at the end of a segment file's bytes, or `None` when the file
/// does not end with a complete, checksummed, self-consistent footer.
pub fn decode_footer(file: &[u8]) -> Option<Footer> {
    let trailer_at = file.len().checked_sub(TRAILER_BYTES)?;
    let trailer = &file[trailer_at..];
    if trailer[24..32] != FOOTER_MAGIC {
        return None;
    }
    let data_end = u64_at(trailer, 0);
    let count = u32_at(trailer, 8) as usize;
    let run_count = u32_at(trailer, 12) as usize;
    let start = usize::try_from(data_end).ok()?;
    if start < HEADER_BYTES || start % 8 != 0 || start > trailer_at {
        return None;
    }
    if start.checked_add(footer_bytes(count, run_count))? != file.len() {
        return None;
    }
    if crc32fast::hash(&file[start..trailer_at + 20]) != u32_at(trailer, 20) {
        return None;
    }
    let offsets: Vec<u32> = (0..count).map(|i| u32_at(file, start + 4 * i)).collect();
    let runs_at = start + align8(4 * count);
    let runs: Vec<TermRun> = (0..run_count)
        .map(|i| TermRun {
            first_index: u64_at(file, runs_at + 16 * i),
            term: u64_at(file, runs_at + 16 * i + 8),
        })
        .collect();
    Some(Footer {
        data_end,
        offsets,
        runs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Goal: every record and footer that encodes decodes to the same value, and
    // arbitrary bytes never panic the decoders (STYLE G.6).
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn record_round_trip(index in 1u64.., term in 0u64.., kind in 1u8..4,
                             data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let kind = EntryKind::from_u8(kind).unwrap();
            let entry = Entry { index, term, kind, data: data.into() };
            let mut out = vec![0xAA];
            encode_record(&entry, &mut out);
            prop_assert_eq!((out.len() - 1) % 8, 0);
            let view = decode_record(&out[1..]).unwrap();
            prop_assert_eq!(view.bytes, out.len() - 1);
            prop_assert_eq!(view.to_entry(), entry);
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_record(&bytes);
            let _ = peek_record(&bytes);
            let _ = decode_footer(&bytes);
            let _ = SegmentHeader::decode(&bytes);
        }
    }

    #[test]
    fn zero_bytes_are_not_a_record() {
        assert_eq!(decode_record(&[0u8; 64]), Err("bad record length"));
    }

    #[test]
    fn footer_round_trip_and_flip() {
        let offsets = [32u32, 64, 96];
        let runs = [
            TermRun {
                first_index: 5,
                term: 1,
            },
            TermRun {
                first_index: 7,
                term: 2,
            },
        ];
        let mut file = vec![0u8; 128];
        encode_footer(128, &offsets, &runs, &mut file);
        assert_eq!(file.len(), 128 + footer_bytes(3, 2));
        let footer = decode_footer(&file).unwrap();
        assert_eq!(
            footer,
            Footer {
                data_end: 128,
                offsets: offsets.to_vec(),
                runs: runs.to_vec()
            }
        );
        for at in 128..file.len() {
            let mut bad = file.clone();
            bad[at] ^= 0x01;
            assert_eq!(
                decode_footer(&bad),
                None,
                "#{at}: flipped footer byte accepted"
            );
        }
    }

    #[test]
    fn names() {
        let cases = [
            ("00000000000000000042.wal", Some(42)),
            ("42.wal", None),
            ("LOCK", None),
        ];
        for (i, (name, want)) in cases.iter().enumerate() {
            assert_eq!(parse_segment_name(name), *want, "#{i}: {name}");
        }
        assert_eq!(segment_name(42), "00000000000000000042.wal");
    }
}
