//! Snapshot files: the state machine image a log prefix was compacted into.
//!
//! One file per snapshot, `snap-<index:020>-<term:020>.snap`, written to a
//! temp file, fsynced, renamed into place and the directory fsynced, so a crash
//! leaves either the old snapshot or the new one, never half of one. Older
//! snapshots are removed only after the new one is durable.
//!
//! Layout (little-endian):
//! ```text
//! magic "RKVSNAP1" (8) | index u64 | term u64 | meta_len u32 | data_len u64
//! | meta [meta_len] | data [data_len] | crc32 u32 (over everything before it)
//! ```
//! `meta` is opaque here (the encoded cluster configuration); `data` is the
//! encoded state machine.
//!
//! Invariant: `load_latest` returns only a snapshot whose crc verified.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"RKVSNAP1";
const HEADER_BYTES: usize = 8 + 8 + 8 + 4 + 8;
const SUFFIX: &str = ".snap";

/// A snapshot as stored on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// Index of the last entry the snapshot covers.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// Opaque metadata (the encoded cluster configuration).
    pub meta: Vec<u8>,
    /// The encoded state machine.
    pub data: Vec<u8>,
}

/// Errors reading or writing snapshot files.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// An IO error on the named path.
    #[error("snapshot {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A snapshot file that does not verify.
    #[error("snapshot {path}: corrupt at byte offset {offset}: {damage}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset of the damaged field inside the file.
        offset: u64,
        /// What is wrong with it.
        damage: Damage,
    },
}

/// What is wrong with a snapshot file that does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    /// The file is shorter than a header and its crc.
    #[error("file of {len} bytes is shorter than a header")]
    Short {
        /// The file's length.
        len: u64,
    },
    /// The first eight bytes are not the snapshot magic.
    #[error("bad magic")]
    BadMagic,
    /// The crc at the end does not match the bytes before it.
    #[error("crc mismatch")]
    CrcMismatch,
    /// The header's lengths do not add up to the file size.
    #[error("lengths do not add up to the file size")]
    LengthMismatch,
}

impl SnapshotError {
    /// Whether the disk was full ([`save`] then removed its temp file: retry later).
    pub fn is_no_space(&self) -> bool {
        matches!(self, SnapshotError::Io { source, .. } if super::is_no_space_io(source))
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn file_name(index: u64, term: u64) -> String {
    format!("snap-{index:020}-{term:020}{SUFFIX}")
}

/// Writes `snapshot` durably into `dir` and removes snapshot files older than it.
///
/// # Errors
/// Any IO error; the previous snapshot stays in place when writing fails.
pub fn save(dir: &Path, snapshot: &SnapshotFile) -> Result<PathBuf, SnapshotError> {
    let final_path = dir.join(file_name(snapshot.index, snapshot.term));
    let temp_path = dir.join(format!("{}.tmp", file_name(snapshot.index, snapshot.term)));
    let mut bytes =
        Vec::with_capacity(HEADER_BYTES + snapshot.meta.len() + snapshot.data.len() + 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&snapshot.index.to_le_bytes());
    bytes.extend_from_slice(&snapshot.term.to_le_bytes());
    bytes.extend_from_slice(&(snapshot.meta.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&(snapshot.data.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&snapshot.meta);
    bytes.extend_from_slice(&snapshot.data);
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp_path)
        .and_then(|mut file| {
            file.write_all(&bytes)?;
            file.sync_all()
        });
    if let Err(source) = written {
        // A temp file is never renamed into place after a failure, so a full disk
        // only costs this attempt: give the space back and let the caller retry.
        if super::is_no_space_io(&source) {
            let _ = fs::remove_file(&temp_path);
        }
        return Err(io_err(&temp_path)(source));
    }
    fs::rename(&temp_path, &final_path).map_err(io_err(&final_path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    // Only older files go: a newer snapshot installed meanwhile (from the leader) stays.
    for old in list(dir)? {
        if old < final_path {
            fs::remove_file(&old).map_err(io_err(&old))?;
        }
    }
    Ok(final_path)
}

/// Snapshot files in `dir`, oldest first (names sort by index).
fn list(dir: &Path) -> Result<Vec<PathBuf>, SnapshotError> {
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("snap-") && name.ends_with(SUFFIX) {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

/// Loads the newest snapshot in `dir`, or `None` when there is none.
///
/// # Errors
/// IO errors, and [`SnapshotError::Corrupt`] when the newest file does not verify:
/// a damaged snapshot is never silently replaced by an older one, because the log
/// below the newest snapshot may already be compacted away.
pub fn load_latest(dir: &Path) -> Result<Option<SnapshotFile>, SnapshotError> {
    let Some(path) = list(dir)?.pop() else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    File::open(&path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io_err(&path))?;
    decode(&bytes)
        .map(Some)
        .map_err(|(offset, damage)| SnapshotError::Corrupt {
            path,
            offset,
            damage,
        })
}

/// The file's contents, or the byte offset and kind of the first damage found.
fn decode(bytes: &[u8]) -> Result<SnapshotFile, (u64, Damage)> {
    if bytes.len() < HEADER_BYTES + 4 {
        let len = bytes.len() as u64;
        return Err((0, Damage::Short { len }));
    }
    if &bytes[..8] != MAGIC {
        return Err((0, Damage::BadMagic));
    }
    let (body, crc_bytes) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes(crc_bytes.try_into().expect("split off 4 bytes"));
    if crc32fast::hash(body) != stored {
        return Err((body.len() as u64, Damage::CrcMismatch));
    }
    let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().unwrap_or([0; 8]));
    let index = u64_at(8);
    let term = u64_at(16);
    let meta_len = u32::from_le_bytes(body[24..28].try_into().unwrap_or([0; 4])) as usize;
    let data_len = u64_at(28) as usize;
    if HEADER_BYTES
        .checked_add(meta_len)
        .and_then(|n| n.checked_add(data_len))
        != Some(body.len())
    {
        return Err((24, Damage::LengthMismatch));
    }
    let meta = body[HEADER_BYTES..HEADER_BYTES + meta_len].to_vec();
    let data = body[HEADER_BYTES + meta_len..].to_vec();
    Ok(SnapshotFile {
        index,
        term,
        meta,
        data,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::wire::alloc_probe::assert_bounded;

    fn sample(index: u64) -> SnapshotFile {
        SnapshotFile {
            index,
            term: 3,
            meta: b"cfg".to_vec(),
            data: vec![7; 1000],
        }
    }

    #[test]
    fn save_then_load_returns_the_newest_and_removes_older() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_latest(dir.path()).unwrap(), None);
        save(dir.path(), &sample(10)).unwrap();
        save(dir.path(), &sample(20)).unwrap();
        assert_eq!(load_latest(dir.path()).unwrap(), Some(sample(20)));
        assert_eq!(list(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn a_flipped_byte_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = save(dir.path(), &sample(10)).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let crc_offset = bytes.len() as u64 - 4;
        for (at, want) in [
            (0, (0, Damage::BadMagic)),
            (9, (crc_offset, Damage::CrcMismatch)),
            (40, (crc_offset, Damage::CrcMismatch)),
            (bytes.len() - 1, (crc_offset, Damage::CrcMismatch)),
        ] {
            bytes[at] ^= 0x40;
            fs::write(&path, &bytes).unwrap();
            let err = load_latest(dir.path()).unwrap_err();
            let SnapshotError::Corrupt { offset, damage, .. } = err else {
                panic!("#{at}: {err}");
            };
            assert_eq!((offset, damage), want, "#{at}");
            bytes[at] ^= 0x40;
        }
        fs::write(&path, &bytes).unwrap();
        assert_eq!(load_latest(dir.path()).unwrap(), Some(sample(10)));
    }

    proptest! {
        /// Goal: a damaged or hostile snapshot file is an error, never a panic, and
        /// decoding allocates no more than the copy of its meta and data (at most the
        /// file's size). Method: arbitrary bytes, and a valid
        /// magic and crc around arbitrary header lengths.
        #[test]
        fn arbitrary_bytes_never_panic_and_allocate_within_the_file(
            header in proptest::collection::vec(any::<u8>(), 28..=28),
            tail in proptest::collection::vec(any::<u8>(), 0..96),
        ) {
            let bounded =
                |b: &[u8]| assert_bounded(b, 1, 256, |b| decode(b).map(|f| f.data.len()));
            let _ = bounded(&tail);
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&header);
            bytes.extend_from_slice(&tail);
            let crc = crc32fast::hash(&bytes);
            bytes.extend_from_slice(&crc.to_le_bytes());
            if let Ok(len) = bounded(&bytes) {
                prop_assert!(len <= bytes.len());
            }
        }
    }
}
