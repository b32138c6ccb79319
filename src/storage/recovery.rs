//! Recovery: judging the segment files of a directory and repairing torn tails.
//!
//! [`scan_segment`] and [`list_segment_files`] are read-only and shared with the
//! `raftkv-log` tool, so the tool and the node agree on what is torn and what is
//! corrupt. [`recover`] follows the numbered steps of `docs/FORMAT.md`
//! ("Recovery"):
//!
//! 1. An unfinished `reset_to_snapshot` (a complete `reset.wal.tmp`) is finished:
//!    every segment is removed and the temp file renamed into place. An incomplete
//!    temp file is removed (the reset never happened).
//! 2. The last segment file, if shorter than a header or with an all-zero header,
//!    is the torn creation of a rolled segment: it is removed with a warning.
//! 3. Every segment but the last must have a valid header and, if its footer is
//!    trusted, a valid footer; without a footer (or with `verify_on_open`) each
//!    record is re-checksummed. Any problem is [`Error::Corruption`].
//! 4. The last segment is always re-checksummed. A short, bad-length, bad-kind or
//!    bad-crc record ends the log: the file is truncated there with a warning,
//!    unless a valid record follows it (then it is corruption, never dropped).
//!    A footer on the last segment (a crash right after a roll) is stripped. Zero
//!    bytes from a record boundary to the end of the file (a preallocated tail) end
//!    the log cleanly: nothing is cut and nothing is logged.
//! 5. Each segment must start right after its predecessor's last index, and its
//!    header's `prev_term` must be the predecessor's last term.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::format::{
    Footer, HEADER_BYTES, RESET_TEMP_NAME, SegmentHeader, TermRun, decode_footer, decode_record,
    parse_segment_name, peek_record, segment_name,
};
use super::hard_state::sync_dir;
use super::segment::Segment;
use super::{Error, Result, io_error};

/// Where and why a scan stopped before the end of a segment's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Byte offset of the bad record (or of the footer).
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
    /// True when the record itself does not decode (short, bad length/kind/crc): at
    /// the tail of the last segment that is a torn write. False for a record that
    /// decodes but does not fit (wrong index, decreasing term, bad footer).
    pub torn: bool,
    /// Offset of a valid record found after the bad one, if any.
    pub valid_after: Option<u64>,
}

/// What one segment file holds, as far as it is readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    /// The decoded header.
    pub header: SegmentHeader,
    /// Offsets of the good records, in index order.
    pub offsets: Vec<u32>,
    /// Term runs of the good records.
    pub runs: Vec<TermRun>,
    /// End of the good records.
    pub data_end: u64,
    /// Whether the file ends with a valid index footer.
    pub footer: bool,
    /// The first problem, if the scan stopped early.
    pub problem: Option<Problem>,
}

/// Segment files of `dir` as `(first_index, path)`, sorted by first index.
///
/// # Errors
/// [`Error::Io`] when the directory cannot be listed.
pub fn list_segment_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for item in fs::read_dir(dir).map_err(io_error(dir))? {
        let item = item.map_err(io_error(dir))?;
        if let Some(first) = item.file_name().to_str().and_then(parse_segment_name) {
            out.push((first, item.path()));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Scans the bytes of one segment file.
///
/// With `trust_footer`, a valid footer is taken as the index and records are not
/// re-checksummed (only the footer's own crc and its agreement with the header and
/// the last record's fixed part are checked). Otherwise every record up to the
/// footer (or the end of the file) is decoded and checked for crc, index
/// continuity and non-decreasing terms; a footer is then compared with the records.
///
/// # Errors
/// `(offset, reason)` when the header is bad: nothing in the file can be trusted.
pub fn scan_segment(bytes: &[u8], trust_footer: bool) -> Result<SegmentScan, (u64, String)> {
    let header = SegmentHeader::decode(bytes).map_err(|(at, why)| (at, why.to_string()))?;
    let footer = decode_footer(bytes);
    if let (Some(footer), true) = (&footer, trust_footer) {
        let problem = check_footer(bytes, &header, footer).map(|reason| Problem {
            offset: footer.data_end,
            reason: reason.to_string(),
            torn: false,
            valid_after: None,
        });
        let footer = footer.clone();
        let ok = problem.is_none();
        return Ok(SegmentScan {
            header,
            offsets: if ok { footer.offsets } else { Vec::new() },
            runs: if ok { footer.runs } else { Vec::new() },
            data_end: if ok {
                footer.data_end
            } else {
                HEADER_BYTES as u64
            },
            footer: true,
            problem,
        });
    }
    let limit = footer.as_ref().map_or(bytes.len(), |f| f.data_end as usize);
    let mut scan = scan_records(&bytes[..limit], header);
    if let Some(footer) = footer {
        scan.footer = true;
        let agrees = footer.offsets == scan.offsets && footer.runs == scan.runs;
        if scan.problem.is_none() && !agrees {
            scan.problem = Some(Problem {
                offset: footer.data_end,
                reason: "index footer disagrees with the records".to_string(),
                torn: false,
                valid_after: None,
            });
        }
    }
    Ok(scan)
}

/// Checks a crc-valid footer against the header and the last record's fixed part.
fn check_footer(bytes: &[u8], header: &SegmentHeader, footer: &Footer) -> Option<&'static str> {
    let Some(&last) = footer.offsets.last() else {
        return (footer.data_end != HEADER_BYTES as u64 || !footer.runs.is_empty())
            .then_some("index footer of an empty segment has data");
    };
    if footer.offsets[0] as usize != HEADER_BYTES
        || footer.offsets.windows(2).any(|w| w[0] >= w[1])
        || footer.runs.first().map(|r| r.first_index) != Some(header.first_index)
        || footer
            .runs
            .windows(2)
            .any(|w| w[0].first_index >= w[1].first_index || w[0].term > w[1].term)
    {
        return Some("index footer is inconsistent");
    }
    let last_index = header.first_index + footer.offsets.len() as u64 - 1;
    match peek_record(&bytes[last as usize..footer.data_end as usize]) {
        Some((index, _, size))
            if index == last_index && u64::from(last) + size as u64 == footer.data_end =>
        {
            None
        }
        _ => Some("index footer does not match the last record"),
    }
}

/// Decodes records from just after the header to the end of `bytes`.
fn scan_records(bytes: &[u8], header: SegmentHeader) -> SegmentScan {
    let mut scan = SegmentScan {
        header,
        offsets: Vec::new(),
        runs: Vec::new(),
        data_end: HEADER_BYTES as u64,
        footer: false,
        problem: None,
    };
    let mut at = HEADER_BYTES;
    let mut last_term = header.prev_term;
    while at < bytes.len() {
        let want = header.first_index + scan.offsets.len() as u64;
        let (reason, torn) = match decode_record(&bytes[at..]) {
            Err(reason) => (reason.to_string(), true),
            Ok(r) if r.index != want => {
                (format!("record has index {}, want {want}", r.index), false)
            }
            Ok(r) if r.term < last_term => {
                (format!("term {} after term {last_term}", r.term), false)
            }
            Ok(r) => {
                scan.offsets.push(at as u32);
                if scan.runs.last().is_none_or(|run| run.term != r.term) {
                    scan.runs.push(TermRun {
                        first_index: r.index,
                        term: r.term,
                    });
                }
                last_term = r.term;
                at += r.bytes;
                scan.data_end = at as u64;
                continue;
            }
        };
        if torn && all_zero(&bytes[at..]) {
            // Preallocated (or never written) space: the log ends cleanly here.
            break;
        }
        let valid_after = (at + 8..bytes.len())
            .step_by(8)
            .find(|&pos| decode_record(&bytes[pos..]).is_ok())
            .map(|pos| pos as u64);
        scan.problem = Some(Problem {
            offset: at as u64,
            reason,
            torn,
            valid_after,
        });
        break;
    }
    scan
}

/// Whether every byte is zero (a word-wise OR per block, so it vectorizes).
fn all_zero(bytes: &[u8]) -> bool {
    bytes
        .chunks(4096)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// Step 1: finishes or discards an interrupted `reset_to_snapshot`.
pub(crate) fn finish_reset(dir: &Path) -> Result<()> {
    let temp = dir.join(RESET_TEMP_NAME);
    let bytes = match fs::read(&temp) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(Error::Io { path: temp, source }),
    };
    match SegmentHeader::decode(&bytes) {
        Ok(header) if bytes.len() == HEADER_BYTES => {
            log::warn!(
                "{}: finishing an interrupted reset to a snapshot",
                temp.display()
            );
            for (_, path) in list_segment_files(dir)?.iter().rev() {
                fs::remove_file(path).map_err(io_error(path))?;
            }
            let path = dir.join(segment_name(header.first_index));
            fs::rename(&temp, &path).map_err(io_error(&path))?;
        }
        _ => {
            log::warn!(
                "{}: removing an unfinished reset to a snapshot",
                temp.display()
            );
            fs::remove_file(&temp).map_err(io_error(&temp))?;
        }
    }
    sync_dir(dir)
}

/// The recovered log: sealed segments (mapped) and the open tail with its file.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub sealed: Vec<Segment>,
    pub tail: Segment,
    pub tail_file: File,
}

fn corruption(file: &Path, offset: u64, reason: impl Into<String>) -> Error {
    Error::Corruption {
        file: file.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

/// Steps 2 to 5. Creates segment 1 when the directory holds none. `flush` is false
/// under [`super::FsyncMode::Never`]: a truncated tail is then not fsynced.
pub(crate) fn recover(dir: &Path, verify: bool, flush: bool) -> Result<Recovered> {
    let mut files = list_segment_files(dir)?;
    remove_torn_creation(dir, &mut files)?;
    if files.is_empty() {
        let path = dir.join(segment_name(1));
        let header = SegmentHeader {
            first_index: 1,
            prev_term: 0,
        };
        fs::write(&path, header.encode()).map_err(io_error(&path))?;
        File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(io_error(&path))?;
        sync_dir(dir)?;
        files.push((1, path));
    }
    let mut sealed: Vec<Segment> = Vec::with_capacity(files.len());
    let last_at = files.len() - 1;
    for (first, path) in &files[..last_at] {
        let file = File::open(path).map_err(io_error(path))?;
        // SAFETY: the directory lock is held, so no other process writes these files,
        // and this process never writes a sealed segment while it is mapped.
        let map = unsafe { Mmap::map(&file) }.map_err(io_error(path))?;
        let scan = scan_segment(&map, !verify).map_err(|(at, why)| corruption(path, at, why))?;
        if let Some(problem) = scan.problem {
            return Err(corruption(path, problem.offset, problem.reason));
        }
        let segment = to_segment(path, *first, scan, map.len() as u64, Some(map))?;
        check_continuity(sealed.last(), &segment)?;
        sealed.push(segment);
    }
    let (first, path) = &files[last_at];
    let (tail, tail_file) = recover_tail(path, *first, flush)?;
    check_continuity(sealed.last(), &tail)?;
    Ok(Recovered {
        sealed,
        tail,
        tail_file,
    })
}

/// Step 2.
fn remove_torn_creation(dir: &Path, files: &mut Vec<(u64, PathBuf)>) -> Result<()> {
    let Some((first, path)) = files.last() else {
        return Ok(());
    };
    let mut head = [0u8; HEADER_BYTES];
    let mut file = File::open(path).map_err(io_error(path))?;
    let mut got = 0;
    while got < HEADER_BYTES {
        match file.read(&mut head[got..]).map_err(io_error(path))? {
            0 => break,
            n => got += n,
        }
    }
    if got == HEADER_BYTES && head.iter().any(|&b| b != 0) {
        return Ok(());
    }
    if files.len() == 1 && *first != 1 {
        return Err(corruption(path, 0, "the only segment has no header"));
    }
    log::warn!(
        "{}: removing a segment whose creation was torn (offset 0)",
        path.display()
    );
    fs::remove_file(path).map_err(io_error(path))?;
    sync_dir(dir)?;
    files.pop();
    Ok(())
}

/// Step 4.
fn recover_tail(path: &Path, first: u64, flush: bool) -> Result<(Segment, File)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_error(path))?;
    // SAFETY: the directory lock is held, so no other process changes the file; the
    // map is dropped before this function shortens it.
    let map = unsafe { Mmap::map(&file) }.map_err(io_error(path))?;
    let scan = scan_segment(&map, false).map_err(|(at, why)| corruption(path, at, why));
    drop(map);
    let mut scan = scan?;
    let mut cut = scan.footer.then_some(scan.data_end);
    if let Some(problem) = scan.problem.take() {
        if !problem.torn {
            return Err(corruption(path, problem.offset, problem.reason));
        }
        if let Some(valid) = problem.valid_after {
            let reason = format!(
                "{} but a valid record follows at offset {valid}",
                problem.reason
            );
            return Err(corruption(path, problem.offset, reason));
        }
        log::warn!(
            "{}: torn write at byte offset {} ({}): truncating the log there",
            path.display(),
            problem.offset,
            problem.reason
        );
        cut = Some(problem.offset);
    }
    if let Some(len) = cut {
        file.set_len(len).map_err(io_error(path))?;
        if flush {
            file.sync_all().map_err(io_error(path))?;
        }
    }
    let data_end = scan.data_end;
    let segment = to_segment(path, first, scan, data_end, None)?;
    Ok((segment, file))
}

fn to_segment(
    path: &Path,
    first: u64,
    scan: SegmentScan,
    file_bytes: u64,
    map: Option<Mmap>,
) -> Result<Segment> {
    if scan.header.first_index != first {
        return Err(corruption(
            path,
            8,
            "header first index does not match the file name",
        ));
    }
    Ok(Segment {
        path: path.to_path_buf(),
        first_index: first,
        prev_term: scan.header.prev_term,
        offsets: scan.offsets,
        runs: scan.runs,
        data_end: scan.data_end,
        file_bytes,
        map,
    })
}

/// Step 5.
fn check_continuity(prev: Option<&Segment>, next: &Segment) -> Result<()> {
    let Some(prev) = prev else {
        return Ok(());
    };
    if next.first_index != prev.last_index() + 1 {
        let reason = format!(
            "index gap: segment starts at {}, previous ends at {}",
            next.first_index,
            prev.last_index()
        );
        return Err(corruption(&next.path, 8, reason));
    }
    if next.prev_term != prev.last_term() {
        let reason = format!(
            "header prev_term {} differs from the previous segment's last term {}",
            next.prev_term,
            prev.last_term()
        );
        return Err(corruption(&next.path, 16, reason));
    }
    Ok(())
}
