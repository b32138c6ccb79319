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
//! Streaming: [`save_with`] streams the data into the file as its producer writes it
//! (no image in memory), counting its length and computing its crc on the way; the
//! header's `data_len` is written in place afterwards and the header's crc is combined
//! with the data's (`crc32(header || data)` from the two parts). A saved or opened
//! snapshot is a [`SnapshotImage`]: an open file whose data is read in ranges
//! ([`SnapshotImage::read_at`], a pread) or sequentially ([`SnapshotImage::reader`]),
//! never held whole in memory.
//!
//! Opening for a restore reads the file once: [`open_latest_deferred`] checks the header
//! against the file's length and leaves the crc to the first sequential read of the
//! data (the restore), which hashes what it reads and fails the read that reaches the
//! end when the crc does not match, naming the file and offset as [`open_latest`] does.
//! Until then the image serves only that sequential read: a read elsewhere is refused
//! ([`Damage::Unverified`]), so nothing unverified leaves the file.
//!
//! Invariant: [`open_latest`] returns only a snapshot whose crc verified, and a
//! [`SnapshotImage`] hands out only bytes of a durable file that verified (or was just
//! written), or, while its check is deferred, the bytes its one sequential check reads.

use std::cell::RefCell;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"RKVSNAP1";
const HEADER_BYTES: usize = 8 + 8 + 8 + 4 + 8;
/// Offset of `data_len` in the header.
const DATA_LEN_AT: u64 = 28;
const CRC_BYTES: u64 = 4;
const SUFFIX: &str = ".snap";
/// Buffer of the streamed writes and of the crc check's reads.
const IO_BUFFER_BYTES: usize = 1 << 20;

/// A durable snapshot file, open for reading its data.
#[derive(Debug)]
pub struct SnapshotImage {
    file: File,
    path: PathBuf,
    /// Where the data starts in the file.
    data_offset: u64,
    /// Invariant: the file holds `data_len` data bytes at `data_offset`.
    data_len: u64,
    /// The crc check still to do (opened by [`open_latest_deferred`]); `None` once the
    /// file verified.
    deferred: RefCell<Option<DeferredCheck>>,
}

/// The crc check of a file opened without reading it: done by reading its data once, in
/// order, from the start.
#[derive(Debug)]
struct DeferredCheck {
    /// The crc of the header, the meta and the data before `upto`.
    hasher: crc32fast::Hasher,
    /// Data bytes hashed so far; `u64::MAX` once the check failed (every read refused).
    upto: u64,
    /// The crc stored at the end of the file.
    stored: u32,
}

/// A durable snapshot: where it sits in the log, its metadata and its data.
#[derive(Debug)]
pub struct OpenSnapshot {
    /// Index of the last entry the snapshot covers.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// Opaque metadata (the encoded cluster configuration).
    pub meta: Vec<u8>,
    /// The encoded state machine, on disk.
    pub image: SnapshotImage,
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
    /// A read other than the in-order one of a file whose crc is not checked yet.
    #[error("read out of order before the crc was checked")]
    Unverified,
    /// The header's lengths do not add up to the file size.
    #[error("lengths do not add up to the file size")]
    LengthMismatch,
}

impl SnapshotError {
    /// Whether the disk was full ([`save_with`] then removed its temp file: retry later).
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

impl SnapshotImage {
    /// The data's length in bytes.
    pub fn len(&self) -> u64 {
        self.data_len
    }

    /// Whether the data is empty.
    pub fn is_empty(&self) -> bool {
        self.data_len == 0
    }

    /// The file holding the data.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Up to `bytes_max` bytes of the data from `offset` (fewer at its end, none past it):
    /// one pread, whatever else reads the file meanwhile.
    ///
    /// # Errors
    /// IO errors, and a file shorter than it was when verified.
    /// While the crc check is deferred, only the next bytes in order are served, and the
    /// read reaching the end fails when the crc does not match.
    ///
    /// # Errors
    /// IO errors, a file shorter than it was when verified, and while the check is
    /// deferred: [`Damage::Unverified`] for a read out of order, [`Damage::CrcMismatch`].
    pub fn read_at(&self, offset: u64, bytes_max: u64) -> Result<Vec<u8>, SnapshotError> {
        let offset = offset.min(self.data_len);
        let len = bytes_max.min(self.data_len - offset);
        let mut bytes = vec![0; usize::try_from(len).unwrap_or(usize::MAX)];
        self.file
            .read_exact_at(&mut bytes, self.data_offset + offset)
            .map_err(io_err(&self.path))?;
        self.check_read(offset, &bytes)?;
        Ok(bytes)
    }

    /// Whether the file's crc was checked (always, but for a deferred open whose data
    /// was not read to the end yet).
    pub fn is_verified(&self) -> bool {
        self.deferred.borrow().is_none()
    }

    /// Feeds `bytes`, read at data `offset`, to the deferred crc check if there is one.
    fn check_read(&self, offset: u64, bytes: &[u8]) -> Result<(), SnapshotError> {
        let mut deferred = self.deferred.borrow_mut();
        let Some(check) = deferred.as_mut() else {
            return Ok(());
        };
        if offset != check.upto {
            return Err(self.corrupt(self.data_offset + offset, Damage::Unverified));
        }
        check.hasher.update(bytes);
        check.upto += bytes.len() as u64;
        if check.upto < self.data_len {
            return Ok(());
        }
        if check.hasher.clone().finalize() != check.stored {
            check.upto = u64::MAX;
            return Err(self.corrupt(self.data_offset + self.data_len, Damage::CrcMismatch));
        }
        *deferred = None;
        Ok(())
    }

    fn corrupt(&self, offset: u64, damage: Damage) -> SnapshotError {
        SnapshotError::Corrupt {
            path: self.path.clone(),
            offset,
            damage,
        }
    }

    /// The data from its first byte to its last, read sequentially (preads from its own
    /// position, so other readers of the file are unaffected).
    pub fn reader(&self) -> ImageReader<'_> {
        ImageReader {
            image: self,
            position: 0,
        }
    }
}

/// A sequential reader of a [`SnapshotImage`]'s data (wrap it in a `BufReader`).
pub struct ImageReader<'a> {
    image: &'a SnapshotImage,
    position: u64,
}

impl Read for ImageReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.image.data_len - self.position;
        let len = (buf.len() as u64).min(left) as usize;
        if len == 0 {
            return Ok(0);
        }
        let read = self
            .image
            .file
            .read_at(&mut buf[..len], self.image.data_offset + self.position)?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.image
            .check_read(self.position, &buf[..read])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.position += read as u64;
        Ok(read)
    }
}

/// A writer that counts and hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    written: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.written += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn header(index: u64, term: u64, meta: &[u8], data_len: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_BYTES + meta.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&index.to_le_bytes());
    bytes.extend_from_slice(&term.to_le_bytes());
    bytes.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&data_len.to_le_bytes());
    bytes.extend_from_slice(meta);
    bytes
}

/// Writes `data` durably into `dir` as the snapshot at `index` and `term` and removes
/// snapshot files older than it (the data in memory: a follower's received snapshot).
///
/// # Errors
/// As [`save_with`].
pub fn save(
    dir: &Path,
    index: u64,
    term: u64,
    meta: &[u8],
    data: &[u8],
) -> Result<OpenSnapshot, SnapshotError> {
    save_with(dir, index, term, meta, |out| out.write_all(data))
}

/// Writes the snapshot at `index` and `term` durably into `dir`, its data being what
/// `write_data` writes (streamed to the file through a buffer, never gathered), and
/// removes snapshot files older than it.
///
/// # Errors
/// Any IO error, `write_data`'s included; the previous snapshot stays in place when
/// writing fails, and a full disk leaves no temp file behind.
pub fn save_with(
    dir: &Path,
    index: u64,
    term: u64,
    meta: &[u8],
    write_data: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<OpenSnapshot, SnapshotError> {
    let final_path = dir.join(file_name(index, term));
    let temp_path = dir.join(format!("{}.tmp", file_name(index, term)));
    let written = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp_path)
        .and_then(|file| write_file(file, index, term, meta, write_data));
    let (file, data_len) = match written {
        Ok(done) => done,
        Err(source) => {
            // A temp file is never renamed into place after a failure, so a full disk
            // only costs this attempt: give the space back and let the caller retry.
            if super::is_no_space_io(&source) {
                let _ = fs::remove_file(&temp_path);
            }
            return Err(io_err(&temp_path)(source));
        }
    };
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
    Ok(OpenSnapshot {
        index,
        term,
        meta: meta.to_vec(),
        image: SnapshotImage {
            file,
            path: final_path,
            data_offset: (HEADER_BYTES + meta.len()) as u64,
            data_len,
            deferred: RefCell::new(None),
        },
    })
}

/// Header, meta, the streamed data, then the real `data_len` in place and the crc;
/// fsynced. Returns the file and the data's length.
fn write_file(
    file: File,
    index: u64,
    term: u64,
    meta: &[u8],
    write_data: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<(File, u64)> {
    let mut out = BufWriter::with_capacity(IO_BUFFER_BYTES, file);
    out.write_all(&header(index, term, meta, 0))?;
    let mut data = Hashing {
        inner: out,
        hasher: crc32fast::Hasher::new(),
        written: 0,
    };
    write_data(&mut data)?;
    data.flush()?;
    let Hashing {
        inner: out,
        hasher: data_crc,
        written: data_len,
    } = data;
    let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    let head = header(index, term, meta, data_len);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head);
    crc.combine(&data_crc);
    file.write_all_at(&data_len.to_le_bytes(), DATA_LEN_AT)?;
    let end = head.len() as u64 + data_len;
    file.write_all_at(&crc.finalize().to_le_bytes(), end)?;
    file.sync_all()?;
    Ok((file, data_len))
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

/// Opens the newest snapshot in `dir` (its crc checked by reading it once through a
/// buffer), or `None` when there is none.
///
/// # Errors
/// IO errors, and [`SnapshotError::Corrupt`] when the newest file does not verify:
/// a damaged snapshot is never silently replaced by an older one, because the log
/// below the newest snapshot may already be compacted away.
pub fn open_latest(dir: &Path) -> Result<Option<OpenSnapshot>, SnapshotError> {
    let Some(path) = list(dir)?.pop() else {
        return Ok(None);
    };
    open(path).map(Some)
}

/// Opens and verifies the snapshot file at `path`.
///
/// # Errors
/// As [`open_latest`].
pub fn open(path: PathBuf) -> Result<OpenSnapshot, SnapshotError> {
    let file = File::open(&path).map_err(io_err(&path))?;
    let verified = verify(&file).map_err(io_err(&path))?;
    let (head, meta_len, data_len) = match verified {
        Ok(parts) => parts,
        Err((offset, damage)) => {
            return Err(SnapshotError::Corrupt {
                path,
                offset,
                damage,
            });
        }
    };
    let mut meta = vec![0; meta_len];
    file.read_exact_at(&mut meta, HEADER_BYTES as u64)
        .map_err(io_err(&path))?;
    Ok(OpenSnapshot {
        index: u64::from_le_bytes(head[8..16].try_into().unwrap_or([0; 8])),
        term: u64::from_le_bytes(head[16..24].try_into().unwrap_or([0; 8])),
        meta,
        image: SnapshotImage {
            file,
            path,
            data_offset: (HEADER_BYTES + meta_len) as u64,
            data_len,
            deferred: RefCell::new(None),
        },
    })
}

/// Opens the newest snapshot in `dir` like [`open_latest`], but reads only its header,
/// meta and stored crc: the crc is checked by the first in-order read of its data to the
/// end (see the module docs), so a restore reads the file once.
///
/// # Errors
/// IO errors, and [`SnapshotError::Corrupt`] for a header that does not match the file.
pub fn open_latest_deferred(dir: &Path) -> Result<Option<OpenSnapshot>, SnapshotError> {
    let Some(path) = list(dir)?.pop() else {
        return Ok(None);
    };
    let headed = open_header(path)?;
    let mut stored = [0; CRC_BYTES as usize];
    headed
        .file
        .read_exact_at(&mut stored, headed.len - CRC_BYTES)
        .map_err(io_err(&headed.path))?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&headed.head);
    hasher.update(&headed.meta);
    let (index, term) = headed.position();
    let (meta, mut image) = headed.into_parts();
    image.deferred = RefCell::new(Some(DeferredCheck {
        hasher,
        upto: 0,
        stored: u32::from_le_bytes(stored),
    }));
    // Empty data has no read to check it: check it now.
    image.check_read(0, &[])?;
    Ok(Some(OpenSnapshot {
        index,
        term,
        meta,
        image,
    }))
}

/// Opens the snapshot at `index` and `term` that [`save_with`] made durable in `dir`
/// (by this process: its header is checked against the file's length, its crc is not
/// read again), reading only its header and meta.
///
/// # Errors
/// IO errors, no such file, and a header that does not match the file.
pub fn open_saved(dir: &Path, index: u64, term: u64) -> Result<OpenSnapshot, SnapshotError> {
    let (meta, image) = open_header(dir.join(file_name(index, term)))?.into_parts();
    Ok(OpenSnapshot {
        index,
        term,
        meta,
        image,
    })
}

/// A snapshot file whose header was checked against its length (its crc not read).
struct Headed {
    file: File,
    path: PathBuf,
    len: u64,
    head: [u8; HEADER_BYTES],
    meta: Vec<u8>,
    data_len: u64,
}

impl Headed {
    /// The index and term the header names.
    fn position(&self) -> (u64, u64) {
        (
            u64::from_le_bytes(self.head[8..16].try_into().unwrap_or([0; 8])),
            u64::from_le_bytes(self.head[16..24].try_into().unwrap_or([0; 8])),
        )
    }

    /// The meta and the image (whose crc counts as checked).
    fn into_parts(self) -> (Vec<u8>, SnapshotImage) {
        let image = SnapshotImage {
            file: self.file,
            path: self.path,
            data_offset: (HEADER_BYTES + self.meta.len()) as u64,
            data_len: self.data_len,
            deferred: RefCell::new(None),
        };
        (self.meta, image)
    }
}

/// Opens the file at `path` and reads its header and meta, the header checked against
/// the file's length.
fn open_header(path: PathBuf) -> Result<Headed, SnapshotError> {
    let file = File::open(&path).map_err(io_err(&path))?;
    let len = file.metadata().map_err(io_err(&path))?.len();
    let (head, meta_len, data_len) = match read_header(&file, len).map_err(io_err(&path))? {
        Ok(parts) => parts,
        Err((offset, damage)) => {
            return Err(SnapshotError::Corrupt {
                path,
                offset,
                damage,
            });
        }
    };
    let mut meta = vec![0; meta_len];
    file.read_exact_at(&mut meta, HEADER_BYTES as u64)
        .map_err(io_err(&path))?;
    Ok(Headed {
        file,
        path,
        len,
        head,
        meta,
        data_len,
    })
}

/// The header of a file of `len` bytes checked against that length: the header,
/// `meta_len` and `data_len`, or the damage found first.
fn read_header(file: &File, len: u64) -> io::Result<Verified> {
    if len < HEADER_BYTES as u64 + CRC_BYTES {
        return Ok(Err((0, Damage::Short { len })));
    }
    let mut head = [0; HEADER_BYTES];
    file.read_exact_at(&mut head, 0)?;
    if &head[..8] != MAGIC {
        return Ok(Err((0, Damage::BadMagic)));
    }
    Ok(parse_header(&head, len - CRC_BYTES).map(|(meta_len, data_len)| (head, meta_len, data_len)))
}

/// Checks the whole file's crc (streaming), then its header against its length.
/// Returns the header, `meta_len` and `data_len`, or the damage found first.
type Verified = Result<([u8; HEADER_BYTES], usize, u64), (u64, Damage)>;

fn verify(file: &File) -> io::Result<Verified> {
    let len = file.metadata()?.len();
    if len < HEADER_BYTES as u64 + CRC_BYTES {
        return Ok(Err((0, Damage::Short { len })));
    }
    let mut head = [0; HEADER_BYTES];
    file.read_exact_at(&mut head, 0)?;
    if &head[..8] != MAGIC {
        return Ok(Err((0, Damage::BadMagic)));
    }
    let body_len = len - CRC_BYTES;
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = vec![0; IO_BUFFER_BYTES];
    let mut at = 0;
    while at < body_len {
        let n = (body_len - at).min(IO_BUFFER_BYTES as u64) as usize;
        file.read_exact_at(&mut buffer[..n], at)?;
        hasher.update(&buffer[..n]);
        at += n as u64;
    }
    let mut stored = [0; CRC_BYTES as usize];
    file.read_exact_at(&mut stored, body_len)?;
    if hasher.finalize() != u32::from_le_bytes(stored) {
        return Ok(Err((body_len, Damage::CrcMismatch)));
    }
    Ok(parse_header(&head, body_len).map(|(meta_len, data_len)| (head, meta_len, data_len)))
}

/// `meta_len` and `data_len` of a header whose file holds `body_len` bytes before its
/// crc, or the damage when they do not add up to it.
fn parse_header(head: &[u8; HEADER_BYTES], body_len: u64) -> Result<(usize, u64), (u64, Damage)> {
    let meta_len = u32::from_le_bytes(head[24..28].try_into().unwrap_or([0; 4]));
    let data_len = u64::from_le_bytes(head[28..36].try_into().unwrap_or([0; 8]));
    let total = (HEADER_BYTES as u64)
        .checked_add(u64::from(meta_len))
        .and_then(|n| n.checked_add(data_len));
    if total != Some(body_len) {
        return Err((24, Damage::LengthMismatch));
    }
    Ok((meta_len as usize, data_len))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const META: &[u8] = b"cfg";

    fn data() -> Vec<u8> {
        (0..3000u32).map(|i| (i % 251) as u8).collect()
    }

    fn read_all(image: &SnapshotImage) -> Vec<u8> {
        let mut bytes = Vec::new();
        image.reader().read_to_end(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn save_then_open_returns_the_newest_and_removes_older() {
        let dir = tempfile::tempdir().unwrap();
        assert!(open_latest(dir.path()).unwrap().is_none());
        save(dir.path(), 10, 3, META, &data()).unwrap();
        let saved = save(dir.path(), 20, 3, META, &data()).unwrap();
        assert_eq!(read_all(&saved.image), data());
        let opened = open_latest(dir.path()).unwrap().unwrap();
        assert_eq!((opened.index, opened.term), (20, 3));
        assert_eq!(opened.meta, META);
        assert_eq!(opened.image.len(), 3000);
        assert_eq!(read_all(&opened.image), data());
        assert_eq!(list(dir.path()).unwrap().len(), 1);
    }

    /// Goal: data streamed in many small writes makes the same file, byte for byte, as
    /// the data saved from memory (header length and crc filled in afterwards), and
    /// ranges read back are the data's.
    #[test]
    fn a_streamed_save_is_the_same_file_and_reads_back_in_ranges() {
        let (streamed_dir, whole_dir) =
            (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let data = data();
        let streamed = save_with(streamed_dir.path(), 7, 2, META, |out| {
            data.chunks(7).try_for_each(|chunk| out.write_all(chunk))
        })
        .unwrap();
        let whole = save(whole_dir.path(), 7, 2, META, &data).unwrap();
        let (a, b) = (
            fs::read(streamed.image.path()).unwrap(),
            fs::read(whole.image.path()).unwrap(),
        );
        assert_eq!(a, b);
        assert_eq!(a.len(), HEADER_BYTES + META.len() + data.len() + 4);
        let image = &open_latest(streamed_dir.path()).unwrap().unwrap().image;
        assert_eq!(image.read_at(0, 100).unwrap(), &data[..100]);
        assert_eq!(image.read_at(2990, 100).unwrap(), &data[2990..]);
        assert_eq!(image.read_at(3000, 100).unwrap(), b"");
        assert_eq!(image.read_at(9000, 100).unwrap(), b"");
    }

    #[test]
    fn a_failing_producer_leaves_the_previous_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), 10, 3, META, &data()).unwrap();
        let failed = save_with(dir.path(), 20, 3, META, |out| {
            out.write_all(b"partial")?;
            Err(io::Error::other("producer failed"))
        });
        assert!(failed.is_err());
        assert_eq!(open_latest(dir.path()).unwrap().unwrap().index, 10);
    }

    #[test]
    fn a_flipped_byte_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = save(dir.path(), 10, 3, META, &data())
            .unwrap()
            .image
            .path()
            .to_path_buf();
        let mut bytes = fs::read(&path).unwrap();
        let crc_offset = bytes.len() as u64 - 4;
        for (at, want) in [
            (0, (0, Damage::BadMagic)),
            (9, (crc_offset, Damage::CrcMismatch)),
            (30, (crc_offset, Damage::CrcMismatch)),
            (40, (crc_offset, Damage::CrcMismatch)),
            (bytes.len() - 1, (crc_offset, Damage::CrcMismatch)),
        ] {
            bytes[at] ^= 0x40;
            fs::write(&path, &bytes).unwrap();
            let err = open_latest(dir.path()).unwrap_err();
            let SnapshotError::Corrupt { offset, damage, .. } = err else {
                panic!("#{at}: {err}");
            };
            assert_eq!((offset, damage), want, "#{at}");
            bytes[at] ^= 0x40;
        }
        fs::write(&path, &bytes[..20]).unwrap();
        assert!(matches!(
            open_latest(dir.path()),
            Err(SnapshotError::Corrupt {
                damage: Damage::Short { len: 20 },
                ..
            })
        ));
        fs::write(&path, &bytes).unwrap();
        assert_eq!(
            read_all(&open_latest(dir.path()).unwrap().unwrap().image),
            data()
        );
    }

    /// Goal: a deferred open reads the file once: its in-order read of the data checks
    /// the crc, the read reaching the end fails on a damaged byte (of the data or of the
    /// header, naming the file and the crc's offset), reads out of order are refused
    /// until the check passed, and a failed check serves nothing afterwards.
    #[test]
    fn a_deferred_open_checks_the_crc_on_its_one_in_order_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = save(dir.path(), 10, 3, META, &data())
            .unwrap()
            .image
            .path()
            .to_path_buf();
        let opened = open_latest_deferred(dir.path()).unwrap().unwrap();
        assert_eq!((opened.index, opened.term), (10, 3));
        assert_eq!(opened.meta, META);
        assert!(!opened.image.is_verified());
        let refused = opened.image.read_at(100, 10).unwrap_err();
        assert!(
            matches!(
                refused,
                SnapshotError::Corrupt {
                    damage: Damage::Unverified,
                    ..
                }
            ),
            "{refused}"
        );
        assert_eq!(read_all(&opened.image), data());
        assert!(opened.image.is_verified());
        assert_eq!(opened.image.read_at(100, 10).unwrap(), &data()[100..110]);

        let mut bytes = fs::read(&path).unwrap();
        let crc_offset = bytes.len() as u64 - 4;
        for at in [HEADER_BYTES + META.len() + 1500, 17] {
            bytes[at] ^= 0x40;
            fs::write(&path, &bytes).unwrap();
            let opened = open_latest_deferred(dir.path()).unwrap().unwrap();
            // In 1000-byte ranges, as a replica restoring through its log reads.
            assert_eq!(opened.image.read_at(0, 1000).unwrap().len(), 1000);
            assert_eq!(opened.image.read_at(1000, 1000).unwrap().len(), 1000);
            let err = opened.image.read_at(2000, 1000).unwrap_err();
            let SnapshotError::Corrupt {
                path: named,
                offset,
                damage,
            } = &err
            else {
                panic!("#{at}: {err}");
            };
            assert_eq!(
                (named, *offset, *damage),
                (&path, crc_offset, Damage::CrcMismatch)
            );
            assert!(!opened.image.is_verified());
            assert!(
                opened.image.read_at(0, 10).is_err(),
                "#{at}: served after a failure"
            );
            let reader = open_latest_deferred(dir.path()).unwrap().unwrap();
            let mut sink = Vec::new();
            let io_err = reader.image.reader().read_to_end(&mut sink).unwrap_err();
            assert!(
                io_err.to_string().contains("crc mismatch"),
                "#{at}: {io_err}"
            );
            bytes[at] ^= 0x40;
        }
        fs::write(&path, &bytes[..20]).unwrap();
        assert!(matches!(
            open_latest_deferred(dir.path()),
            Err(SnapshotError::Corrupt {
                damage: Damage::Short { len: 20 },
                ..
            })
        ));
    }

    #[test]
    fn a_deferred_open_of_empty_data_checks_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = save(dir.path(), 4, 1, META, b"")
            .unwrap()
            .image
            .path()
            .to_path_buf();
        let opened = open_latest_deferred(dir.path()).unwrap().unwrap();
        assert!(opened.image.is_verified());
        let mut bytes = fs::read(&path).unwrap();
        bytes[9] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            open_latest_deferred(dir.path()),
            Err(SnapshotError::Corrupt {
                damage: Damage::CrcMismatch,
                ..
            })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Goal: a damaged or hostile snapshot file is an error, never a panic, and what
        /// opening it reads into memory (the meta) is within the file. Method: arbitrary
        /// bytes, and a valid magic and crc around arbitrary header lengths.
        #[test]
        fn arbitrary_files_never_panic_and_read_within_the_file(
            header in proptest::collection::vec(any::<u8>(), 28..=28),
            tail in proptest::collection::vec(any::<u8>(), 0..96),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(file_name(1, 1));
            fs::write(&path, &tail).unwrap();
            prop_assert!(open(path.clone()).is_err() || tail.len() >= HEADER_BYTES + 4);
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&header);
            bytes.extend_from_slice(&tail);
            let crc = crc32fast::hash(&bytes);
            bytes.extend_from_slice(&crc.to_le_bytes());
            fs::write(&path, &bytes).unwrap();
            if let Ok(opened) = open(path) {
                prop_assert!(opened.meta.len() as u64 + opened.image.len() <= bytes.len() as u64);
                prop_assert_eq!(read_all(&opened.image).len() as u64, opened.image.len());
            }
        }
    }
}
