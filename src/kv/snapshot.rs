//! Snapshot encoding of a [`KvStore`]: the map, the session table and the applied index.
//!
//! Format (little-endian):
//!
//! ```text
//! magic "RKVSNAP\0" (8) | version u32 | applied_index u64 | key_count u64 | session_count u64
//! key_count     x ( key: u32 len + bytes | value: u32 len + bytes )
//! session_count x ( client_id u64 | last_active_index u64 | evicted_seq_max u64
//!                   | result_count u32 | result_count x ( seq u64 | u32 len + encoded result ) )
//! expiry_count u64 (version 3)
//! expiry_count  x ( key: u32 len + bytes | expire_at_ms u64 )
//! crc32 u32 (crc32fast, over every byte before it)
//! ```
//!
//! Version 3 (written): keys in ascending byte order, sessions in ascending client id,
//! expiry times in ascending key order, each strictly (a repeat or a step back is
//! corrupt), so equal stores give equal bytes; every key with an expiry time must be in
//! the map. Version 2 (read only): the same without the expiry section (no key has an
//! expiry time). Version 1 (read only): the same fields in the old shard order (crc32 of the key /
//! a hash of the client id), restored by inserting each entry and refusing duplicates.
//!
//! Taking a snapshot without stalling the loop: [`KvStore::snapshot_view`] is O(1) and
//! copies no entry; the [`SnapshotView`] is `Send + 'static` and is encoded by a helper
//! thread ([`SnapshotView::write_throttled`], streaming into the snapshot file at a
//! bounded share of one core) while the loop keeps applying (each write then copies at
//! most its own path of the tree).
//!
//! Restoring streams too: [`KvStore::restore_from`] reads the image through a buffer
//! (hashing it on the way), builds the tree bottom-up from the sorted keys (versions 2 and 3)
//! and checks the crc at the end; no copy of the whole image is held. Every length is
//! checked against the bytes left before anything is allocated for it, and a parse
//! error is reported as a checksum mismatch when the crc does not match either, so
//! corrupt input is an error, never a panic, and is named as before.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::wire::DecodeError;

use super::bytes::{Key, Value};
use super::command::{encode_result, read_result};
use super::expiry::Expiries;
use super::ordmap::{OrdMap, OrdMapBuilder, OrdMapView};
use super::session::{SessionState, SessionTable};
use super::store::{KvConfig, KvStore};
use crate::wire::{Reader, len_u32, put_bytes, put_u32, put_u64};

/// Bytes of the restore's read buffer (less for a smaller image).
const READ_BUFFER_BYTES: usize = 1 << 20;

/// The first eight bytes of a kv snapshot.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"RKVSNAP\0";
/// The snapshot format version written by this code.
pub const SNAPSHOT_VERSION: u32 = 3;
/// The older version still read: sorted, without expiry times.
const SNAPSHOT_VERSION_NO_EXPIRY: u32 = 2;
/// The oldest version still read: the same fields in shard order.
const SNAPSHOT_VERSION_SHARD_ORDER: u32 = 1;
const HEADER_BYTES: usize = 8 + 4 + 8 + 8 + 8;
const CRC_BYTES: usize = 4;

/// Why a snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The bytes do not start with [`SNAPSHOT_MAGIC`] or are shorter than a header.
    #[error("not a kv snapshot (bad magic or too short)")]
    NotASnapshot,
    /// A version this code cannot read.
    #[error("unsupported kv snapshot version {0}")]
    UnsupportedVersion(u32),
    /// The trailing crc does not match the contents.
    #[error("kv snapshot checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// The crc stored in the snapshot.
        stored: u32,
        /// The crc of the bytes read.
        computed: u32,
    },
    /// The checksum matched but the contents are inconsistent.
    #[error("corrupt kv snapshot: {0}")]
    Corrupt(String),
    /// Reading the image failed.
    #[error("reading the kv snapshot failed: {0}")]
    Read(String),
}

/// Checks an image's trailing crc as its bytes stream by, without decoding or holding
/// it: a follower receiving a snapshot chunk by chunk verifies the whole image this way
/// before it installs it. The last [`CRC_BYTES`] bytes seen are held back from the hash,
/// since they may be the stored crc.
#[derive(Debug, Clone, Default)]
pub struct ImageCheck {
    hasher: crc32fast::Hasher,
    tail: Vec<u8>,
    len: u64,
}

impl ImageCheck {
    /// A check of an image of which nothing was seen yet.
    pub fn new() -> ImageCheck {
        ImageCheck::default()
    }

    /// Feeds the next bytes of the image.
    pub fn update(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if bytes.len() >= CRC_BYTES {
            self.hasher.update(&self.tail);
            let (body, tail) = bytes.split_at(bytes.len() - CRC_BYTES);
            self.hasher.update(body);
            self.tail.clear();
            self.tail.extend_from_slice(tail);
        } else {
            self.tail.extend_from_slice(bytes);
            let over = self.tail.len().saturating_sub(CRC_BYTES);
            self.hasher.update(&self.tail[..over]);
            self.tail.drain(..over);
        }
    }

    /// Bytes seen.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no byte was seen.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the bytes seen are a whole image: at least a header and a crc, and the
    /// last four bytes the crc32 of all the bytes before them.
    ///
    /// # Errors
    /// [`Error::NotASnapshot`] when too short, [`Error::ChecksumMismatch`].
    pub fn verify(&self) -> Result<(), Error> {
        if self.len < (HEADER_BYTES + CRC_BYTES) as u64 {
            return Err(Error::NotASnapshot);
        }
        let stored = u32::from_le_bytes(self.tail[..].try_into().unwrap_or([0; 4]));
        let computed = self.hasher.clone().finalize();
        if stored != computed {
            return Err(Error::ChecksumMismatch { stored, computed });
        }
        Ok(())
    }
}

/// A point-in-time copy of a store, cheap to take, encodable from another thread.
#[derive(Debug, Clone)]
pub struct SnapshotView {
    applied_index: u64,
    data: OrdMapView<Key, Value>,
    sessions: OrdMapView<u64, Arc<SessionState>>,
    expiries: OrdMapView<Key, u64>,
}

/// A writer that feeds everything it writes into a crc.
struct CrcWriter<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    written: u64,
}

impl<W: Write> CrcWriter<W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        self.inner.write_all(bytes)
    }
}

/// Entries are staged in a buffer of about this size before each write, so that a
/// helper thread writing to a file makes few large writes.
const STAGE_BYTES: usize = 256 * 1024;

impl SnapshotView {
    /// The index the snapshot reflects (every entry up to it is applied, none after).
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// The number of keys in the snapshot.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the snapshot holds no key.
    pub fn is_empty(&self) -> bool {
        self.data.len() == 0
    }

    /// Streams the encoded snapshot into `out`, returning the bytes written. Meant for a
    /// helper thread (`std::thread::spawn(move || view.write_to(file))`).
    ///
    /// # Errors
    /// Any error of `out`.
    pub fn write_to<W: Write>(&self, out: W) -> io::Result<u64> {
        self.write_paced(out, || {})
    }

    /// [`SnapshotView::write_to`], calling `pace` after each staged chunk of about 256 KiB.
    fn write_paced<W: Write>(&self, out: W, mut pace: impl FnMut()) -> io::Result<u64> {
        let mut out = CrcWriter {
            inner: out,
            hasher: crc32fast::Hasher::new(),
            written: 0,
        };
        let mut stage = Vec::with_capacity(STAGE_BYTES + 1024);
        stage.extend_from_slice(&SNAPSHOT_MAGIC);
        put_u32(&mut stage, SNAPSHOT_VERSION);
        put_u64(&mut stage, self.applied_index);
        put_u64(&mut stage, self.data.len() as u64);
        put_u64(&mut stage, self.sessions.len() as u64);
        for (key, value) in self.data.iter() {
            put_bytes(&mut stage, key);
            put_bytes(&mut stage, value);
            if stage.len() >= STAGE_BYTES {
                out.put(&stage)?;
                stage.clear();
                pace();
            }
        }
        let mut encoded = Vec::new();
        for (client_id, state) in self.sessions.iter() {
            put_u64(&mut stage, *client_id);
            put_u64(&mut stage, state.last_active_index);
            put_u64(&mut stage, state.evicted_seq_max);
            put_u32(&mut stage, len_u32(state.results.len()));
            for (seq, result) in &state.results {
                put_u64(&mut stage, *seq);
                encoded.clear();
                encode_result(result, &mut encoded);
                put_bytes(&mut stage, &encoded);
            }
            if stage.len() >= STAGE_BYTES {
                out.put(&stage)?;
                stage.clear();
                pace();
            }
        }
        put_u64(&mut stage, self.expiries.len() as u64);
        for (key, at) in self.expiries.iter() {
            put_bytes(&mut stage, key);
            put_u64(&mut stage, *at);
            if stage.len() >= STAGE_BYTES {
                out.put(&stage)?;
                stage.clear();
                pace();
            }
        }
        out.put(&stage)?;
        let crc = out.hasher.clone().finalize();
        out.inner.write_all(&crc.to_le_bytes())?;
        out.inner.flush()?;
        Ok(out.written + CRC_BYTES as u64)
    }

    /// [`SnapshotView::write_to`] using at most `cpu_percent` percent of one core (1 to
    /// 100): after each staged chunk the thread sleeps so that its busy time (encoding
    /// and writing) stays that share of the elapsed time. Meant for the snapshot helper
    /// thread, so it leaves the cores to the event loops.
    ///
    /// # Errors
    /// Any error of `out`.
    pub fn write_throttled<W: Write>(&self, out: W, cpu_percent: u32) -> io::Result<u64> {
        let mut busy_since = Instant::now();
        self.write_paced(out, || {
            std::thread::sleep(idle_after(busy_since.elapsed(), cpu_percent));
            busy_since = Instant::now();
        })
    }

    /// The encoded snapshot in memory.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self.write_to(&mut out) {
            Ok(_) => out,
            Err(error) => unreachable!("writing to a Vec cannot fail: {error}"),
        }
    }
}

/// How long to sleep after `busy` of work so that the work is `cpu_percent` (clamped to
/// 1..=100) of the elapsed time.
fn idle_after(busy: Duration, cpu_percent: u32) -> Duration {
    let percent = cpu_percent.clamp(1, 100);
    let idle = busy.as_nanos() * u128::from(100 - percent) / u128::from(percent);
    Duration::from_nanos(idle.try_into().unwrap_or(u64::MAX))
}

impl KvStore {
    /// A point-in-time view for a snapshot: O(1), copies no key or value.
    pub fn snapshot_view(&self) -> SnapshotView {
        SnapshotView {
            applied_index: self.applied_index,
            data: self.data.view(),
            sessions: self.sessions.view(),
            expiries: self.expiries.view(),
        }
    }

    /// The encoded snapshot of the current state (on the calling thread; see
    /// [`KvStore::snapshot_view`] for the non-blocking way).
    pub fn snapshot(&self) -> Vec<u8> {
        self.snapshot_view().encode()
    }

    /// Rebuilds a store from [`KvStore::snapshot`] bytes.
    ///
    /// # Errors
    /// As [`KvStore::restore_from`].
    pub fn restore(config: KvConfig, bytes: &[u8]) -> Result<KvStore, Error> {
        KvStore::restore_from(config, bytes, bytes.len() as u64)
    }

    /// Rebuilds a store from the `len` bytes of an image that `input` reads (from a
    /// file, say), streaming: the image is never held whole.
    ///
    /// # Errors
    /// [`Error`] when the bytes are not a snapshot, have another version, fail the crc
    /// check or are inconsistent (bad lengths, duplicate keys, wrong counts, trailing
    /// bytes), or cannot be read.
    pub fn restore_from(config: KvConfig, input: impl Read, len: u64) -> Result<KvStore, Error> {
        if len < (HEADER_BYTES + CRC_BYTES) as u64 {
            return Err(Error::NotASnapshot);
        }
        let mut body = Body::new(input, len - CRC_BYTES as u64);
        if body.take(8)? != SNAPSHOT_MAGIC {
            return Err(Error::NotASnapshot);
        }
        let version = body.u32()?;
        let (sorted, with_expiry) = match version {
            SNAPSHOT_VERSION => (true, true),
            SNAPSHOT_VERSION_NO_EXPIRY => (true, false),
            SNAPSHOT_VERSION_SHARD_ORDER => (false, false),
            other => return Err(Error::UnsupportedVersion(other)),
        };
        let parsed = parse_body(config, &mut body, sorted, with_expiry);
        let computed = match &parsed {
            // Only a fully read body has its crc; a read failure has none at all.
            Err(Error::Read(_)) => return parsed,
            Ok(_) => body.crc(),
            Err(_) => body.drain_crc()?,
        };
        let stored = u32::from_le_bytes(body.stored_crc()?);
        if stored != computed {
            return Err(Error::ChecksumMismatch { stored, computed });
        }
        parsed
    }
}

/// Everything after the version: the map (bottom-up when `sorted`), the sessions, the
/// expiry times (`with_expiry`), and nothing left over.
fn parse_body<R: Read>(
    config: KvConfig,
    body: &mut Body<R>,
    sorted: bool,
    with_expiry: bool,
) -> Result<KvStore, Error> {
    let mut store = KvStore::new(config);
    store.applied_index = body.u64()?;
    let key_count = body.u64()?;
    let session_count = body.u64()?;
    store.data = if sorted {
        let mut builder = OrdMapBuilder::new();
        for _ in 0..key_count {
            let key = Key::from(body.slice()?);
            let value = Value::from(body.slice()?);
            if !builder.push(key, value) {
                return Err(Error::Corrupt("keys out of order".to_owned()));
            }
        }
        builder.finish()
    } else {
        let mut map = OrdMap::new();
        for _ in 0..key_count {
            let key = Key::from(body.slice()?);
            let value = Value::from(body.slice()?);
            if map.insert(key, value).is_some() {
                return Err(Error::Corrupt("duplicate key".to_owned()));
            }
        }
        map
    };
    // The sessions are what is left of the body: read them from memory.
    let rest = body.take(usize::try_from(body.left()).unwrap_or(usize::MAX))?;
    let mut input = Reader::new(rest);
    store.sessions = read_sessions(&mut input, session_count, sorted)?;
    if with_expiry {
        store.expiries = read_expiries(&mut input, &store.data)?;
    }
    input.finish().map_err(corrupt)?;
    Ok(store)
}

/// The image's bytes before its crc, read through a buffer and hashed as they arrive.
///
/// Invariant: `buffer[start..end]` is read and hashed but not taken; `unread` bytes of
/// the body are still in `input`.
struct Body<R> {
    input: R,
    hasher: crc32fast::Hasher,
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    unread: u64,
}

impl<R: Read> Body<R> {
    fn new(input: R, body_len: u64) -> Body<R> {
        let buffer_len =
            usize::try_from(body_len).map_or(READ_BUFFER_BYTES, |n| n.min(READ_BUFFER_BYTES));
        Body {
            input,
            hasher: crc32fast::Hasher::new(),
            buffer: vec![0; buffer_len],
            start: 0,
            end: 0,
            unread: body_len,
        }
    }

    /// Bytes of the body not taken yet.
    fn left(&self) -> u64 {
        (self.end - self.start) as u64 + self.unread
    }

    /// The next `n` bytes, refused when the body holds fewer (nothing is allocated for
    /// more than the body holds).
    fn take(&mut self, n: usize) -> Result<&[u8], Error> {
        if n as u64 > self.left() {
            return Err(Error::Corrupt("a length runs past the end".to_owned()));
        }
        if self.end - self.start < n {
            self.fill(n)?;
        }
        let at = self.start;
        self.start += n;
        Ok(&self.buffer[at..at + n])
    }

    /// Reads until at least `n` bytes are buffered (`n <= left()`).
    fn fill(&mut self, n: usize) -> Result<(), Error> {
        self.buffer.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if self.buffer.len() < n {
            self.buffer.resize(n, 0);
        }
        while self.end < n {
            let room = (self.buffer.len() - self.end) as u64;
            let chunk = room.min(self.unread) as usize;
            let fresh = &mut self.buffer[self.end..self.end + chunk];
            self.input
                .read_exact(fresh)
                .map_err(|e| Error::Read(e.to_string()))?;
            self.hasher.update(fresh);
            self.end += chunk;
            self.unread -= chunk as u64;
        }
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, Error> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn u64(&mut self) -> Result<u64, Error> {
        let bytes = self.take(8)?;
        let mut word = [0; 8];
        word.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(word))
    }

    /// A `u32` length and that many bytes.
    fn slice(&mut self) -> Result<&[u8], Error> {
        let len = self.u32()?;
        self.take(len as usize)
    }

    /// The crc of the whole body (every byte read).
    fn crc(&self) -> u32 {
        self.hasher.clone().finalize()
    }

    /// Reads the rest of the body (after a parse error), returning its crc.
    fn drain_crc(&mut self) -> Result<u32, Error> {
        while self.unread > 0 {
            self.start = self.end;
            let chunk = self.unread.min(self.buffer.len() as u64) as usize;
            self.fill(chunk)?;
        }
        Ok(self.crc())
    }

    /// The four crc bytes after the body.
    fn stored_crc(&mut self) -> Result<[u8; CRC_BYTES], Error> {
        let mut crc = [0; CRC_BYTES];
        self.input
            .read_exact(&mut crc)
            .map_err(|e| Error::Read(e.to_string()))?;
        Ok(crc)
    }
}

/// The expiry section: keys strictly ascending, each a key of `data`.
fn read_expiries(input: &mut Reader<'_>, data: &OrdMap<Key, Value>) -> Result<Expiries, Error> {
    let count = input.u64("expiry count").map_err(corrupt)?;
    // Smallest entry: an empty key and its time = 12 bytes.
    if count > (input.rest().len() / 12) as u64 {
        return Err(Error::Corrupt("expiry count runs past the end".to_owned()));
    }
    let mut builder = OrdMapBuilder::new();
    for _ in 0..count {
        let key = input.slice("expiry key").map_err(corrupt)?;
        let at = input.u64("expiry time").map_err(corrupt)?;
        if data.get(key).is_none() {
            return Err(Error::Corrupt("expiry time of an absent key".to_owned()));
        }
        if !builder.push(Key::from(key), at) {
            return Err(Error::Corrupt("expiry times out of order".to_owned()));
        }
    }
    Ok(Expiries::from_by_key(builder.finish()))
}

fn read_sessions(input: &mut Reader<'_>, count: u64, sorted: bool) -> Result<SessionTable, Error> {
    let mut table = SessionTable::new();
    let mut previous = None;
    for _ in 0..count {
        let client_id = input.u64("client id").map_err(corrupt)?;
        if sorted && previous.is_some_and(|previous| previous >= client_id) {
            return Err(Error::Corrupt("sessions out of order".to_owned()));
        }
        previous = Some(client_id);
        let last_active_index = input.u64("last active index").map_err(corrupt)?;
        let evicted_seq_max = input.u64("evicted seq").map_err(corrupt)?;
        let result_count = input.count(12, "result count").map_err(corrupt)?;
        let mut results = std::collections::VecDeque::with_capacity(result_count);
        for _ in 0..result_count {
            let seq = input.u64("result seq").map_err(corrupt)?;
            let mut encoded = Reader::new(input.slice("result").map_err(corrupt)?);
            let result = read_result(&mut encoded).map_err(corrupt)?;
            encoded.finish().map_err(corrupt)?;
            if results.back().is_some_and(|(last, _)| *last >= seq) {
                return Err(Error::Corrupt("session results out of order".to_owned()));
            }
            results.push_back((seq, result));
        }
        if table.sessions.get(&client_id).is_some() {
            return Err(Error::Corrupt("duplicate session".to_owned()));
        }
        table.insert(
            client_id,
            SessionState {
                last_active_index,
                evicted_seq_max,
                results,
            },
        );
    }
    Ok(table)
}

fn corrupt(error: DecodeError) -> Error {
    Error::Corrupt(error.to_string())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::kv::command::{Command, CommandResult, Session, command_to_vec, strategy};
    use crate::wire::alloc_probe::{BYTES_PER_INPUT_BYTE_MAX, assert_bounded, peak_bytes};

    /// What an empty store allocates (nothing but its struct), whatever the input.
    fn empty_store_bytes() -> usize {
        peak_bytes(|| KvStore::new(KvConfig::default())).1
    }

    /// Goal: the streaming check accepts an image fed in pieces of any size (even
    /// pieces shorter than the crc) and refuses it with any byte flipped or cut short.
    #[test]
    fn image_check_streams() {
        let bytes = busy_store().snapshot();
        for piece in [1, 3, 4, 5, 17, bytes.len()] {
            let mut check = ImageCheck::new();
            for part in bytes.chunks(piece) {
                check.update(part);
            }
            assert_eq!(check.len(), bytes.len() as u64);
            assert_eq!(check.verify(), Ok(()), "pieces of {piece}");
        }
        for at in [0, 9, bytes.len() / 2, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1;
            let mut check = ImageCheck::new();
            check.update(&damaged);
            assert!(
                matches!(check.verify(), Err(Error::ChecksumMismatch { .. })),
                "flip at {at}"
            );
        }
        let mut short = ImageCheck::new();
        short.update(&bytes[..bytes.len() - 1]);
        assert!(short.verify().is_err());
    }

    fn busy_store() -> KvStore {
        let mut store = KvStore::new(KvConfig::default());
        store.apply(1, &command_to_vec(&Command::RegisterSession));
        for seq in 1..=50u64 {
            let command = Command::Put {
                session: Session { client_id: 1, seq },
                key: format!("key-{}", seq % 20).into_bytes(),
                value: seq.to_le_bytes().to_vec(),
            };
            store.apply(seq + 1, &command_to_vec(&command));
        }
        store
    }

    #[test]
    fn restore_gives_back_the_same_state() {
        let store = busy_store();
        let bytes = store.snapshot();
        let restored = KvStore::restore(KvConfig::default(), &bytes).unwrap();
        assert_eq!(restored.applied_index(), 51);
        assert_eq!(restored.len(), 20);
        assert_eq!(restored.session_count(), 1);
        assert_eq!(restored.snapshot(), bytes, "equal states encode equally");
        // The session table survived: a retry of seq 50 is answered, not re-applied.
        let mut restored = restored;
        let retry = Command::Put {
            session: Session {
                client_id: 1,
                seq: 50,
            },
            key: b"key-10".to_vec(),
            value: b"again".to_vec(),
        };
        assert_eq!(
            restored.apply(52, &command_to_vec(&retry)),
            CommandResult::Ok
        );
        assert_eq!(restored.get(b"key-10"), Some(&50u64.to_le_bytes()[..]));
    }

    #[test]
    fn a_view_taken_before_writes_encodes_the_old_state() {
        let mut store = busy_store();
        let before = store.snapshot();
        let view = store.snapshot_view();
        let command = Command::Delete {
            session: Session {
                client_id: 1,
                seq: 51,
            },
            key: b"key-1".to_vec(),
        };
        store.apply(52, &command_to_vec(&command));
        let encoded = std::thread::spawn(move || view.encode()).join().unwrap();
        assert_eq!(encoded, before);
        assert_ne!(store.snapshot(), before);
    }

    #[test]
    fn every_flipped_byte_and_every_cut_is_an_error() {
        let bytes = busy_store().snapshot();
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x40;
            assert!(
                KvStore::restore(KvConfig::default(), &damaged).is_err(),
                "#{i}: flip"
            );
            assert!(
                KvStore::restore(KvConfig::default(), &bytes[..i]).is_err(),
                "#{i}: cut"
            );
        }
    }

    #[test]
    fn a_valid_crc_over_inconsistent_contents_is_corrupt() {
        // Claim one more key than the body holds, then fix the crc.
        let mut bytes = busy_store().snapshot();
        let body_len = bytes.len() - CRC_BYTES;
        bytes[20] += 1; // key_count, low byte
        let crc = crc32fast::hash(&bytes[..body_len]);
        bytes[body_len..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            KvStore::restore(KvConfig::default(), &bytes),
            Err(Error::Corrupt(_))
        ));
    }

    /// A snapshot body of `keys` in the given order, with no session, as `version`
    /// (from version 3 with the expiry times `expiries`).
    fn hand_made(version: u32, keys: &[&[u8]]) -> Vec<u8> {
        hand_made_expiring(version, keys, &[])
    }

    fn hand_made_expiring(version: u32, keys: &[&[u8]], expiries: &[(&[u8], u64)]) -> Vec<u8> {
        let mut bytes = SNAPSHOT_MAGIC.to_vec();
        put_u32(&mut bytes, version);
        put_u64(&mut bytes, 9);
        put_u64(&mut bytes, keys.len() as u64);
        put_u64(&mut bytes, 0);
        for key in keys {
            put_bytes(&mut bytes, key);
            put_bytes(&mut bytes, b"v");
        }
        if version >= 3 {
            put_u64(&mut bytes, expiries.len() as u64);
            for (key, at) in expiries {
                put_bytes(&mut bytes, key);
                put_u64(&mut bytes, *at);
            }
        }
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    #[test]
    fn version_1_in_shard_order_is_still_read_and_rewritten_sorted() {
        let old = hand_made(1, &[b"c", b"a", b"b"]);
        let store = KvStore::restore(KvConfig::default(), &old).unwrap();
        assert_eq!(store.len(), 3);
        assert_eq!(store.applied_index(), 9);
        assert_eq!(store.snapshot(), hand_made(3, &[b"a", b"b", b"c"]));
        let duplicate = hand_made(1, &[b"a", b"a"]);
        assert!(matches!(
            KvStore::restore(KvConfig::default(), &duplicate),
            Err(Error::Corrupt(_))
        ));
    }

    #[test]
    fn version_2_refuses_keys_out_of_order() {
        for keys in [&[&b"b"[..], b"a"][..], &[b"a", b"a"]] {
            assert!(matches!(
                KvStore::restore(KvConfig::default(), &hand_made(2, keys)),
                Err(Error::Corrupt(_))
            ));
        }
        assert!(KvStore::restore(KvConfig::default(), &hand_made(4, &[])).is_err());
    }

    /// Goal: a version 2 image (before expiry times) still reads, with no key
    /// expiring, and is rewritten as version 3; a version 3 expiry section naming an
    /// absent key, or out of key order, is corrupt.
    #[test]
    fn version_2_is_still_read_and_expiry_sections_are_checked() {
        let old = hand_made(2, &[b"a", b"b"]);
        let store = KvStore::restore(KvConfig::default(), &old).unwrap();
        assert_eq!(store.len(), 2);
        assert_eq!(store.expiring_len(), 0);
        assert_eq!(store.snapshot(), hand_made(3, &[b"a", b"b"]));
        let good = hand_made_expiring(3, &[b"a", b"b"], &[(b"a", 7), (b"b", 5)]);
        let store = KvStore::restore(KvConfig::default(), &good).unwrap();
        assert_eq!(store.expire_at(b"a"), Some(7));
        assert_eq!(
            store.expired_keys(7, 10),
            vec![b"b".to_vec(), b"a".to_vec()]
        );
        for bad in [
            hand_made_expiring(3, &[b"a"], &[(b"z", 7)]),
            hand_made_expiring(3, &[b"a", b"b"], &[(b"b", 7), (b"a", 7)]),
        ] {
            assert!(matches!(
                KvStore::restore(KvConfig::default(), &bad),
                Err(Error::Corrupt(_))
            ));
        }
    }

    fn store_of(keys: u64) -> KvStore {
        let mut store = KvStore::new(KvConfig::default());
        store.apply(1, &command_to_vec(&Command::RegisterSession));
        for seq in 1..=keys {
            let command = Command::Put {
                session: Session { client_id: 1, seq },
                key: seq.to_be_bytes().to_vec(),
                value: vec![7; 64],
            };
            store.apply(seq + 1, &command_to_vec(&command));
        }
        store
    }

    /// Goal: the throttled, chunked write the snapshot thread streams into its file is
    /// the in-memory encoding byte for byte, and it pauses between chunks (counted, not
    /// timed).
    #[test]
    fn a_throttled_write_is_the_same_bytes_paced_per_chunk() {
        let view = store_of(20_000).snapshot_view();
        let full = view.encode();
        let mut throttled = Vec::new();
        let written = view.write_throttled(&mut throttled, 100).unwrap();
        assert_eq!(throttled, full);
        assert_eq!(written, full.len() as u64);
        let mut paces = 0;
        let mut paced = Vec::new();
        view.write_paced(&mut paced, || paces += 1).unwrap();
        assert_eq!(paced, full);
        assert!(
            full.len() > 4 * STAGE_BYTES,
            "several chunks: {}",
            full.len()
        );
        assert_eq!(paces, full.len() / STAGE_BYTES, "one pause per full chunk");
    }

    #[test]
    fn idle_time_keeps_the_work_at_its_share() {
        let busy = Duration::from_millis(10);
        assert_eq!(idle_after(busy, 20), Duration::from_millis(40));
        assert_eq!(idle_after(busy, 50), busy);
        assert_eq!(idle_after(busy, 100), Duration::ZERO);
        assert_eq!(
            idle_after(busy, 0),
            Duration::from_millis(990),
            "clamped to 1%"
        );
        assert_eq!(idle_after(busy, 250), Duration::ZERO, "clamped to 100%");
    }

    /// A reader handing out at most `step` bytes per call.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.step).min(self.bytes.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    /// Goal: restoring from a stream (several buffer refills, reads of any size) builds
    /// the same store as the bytes do: several tree levels deep, equal re-encoding, every
    /// key found, and writes after it work.
    #[test]
    fn a_streamed_restore_builds_the_same_store() {
        let store = store_of(150_000);
        let bytes = store.snapshot();
        assert!(bytes.len() > 8 * READ_BUFFER_BYTES, "several refills");
        let input = Trickle {
            bytes: &bytes,
            step: 100_003,
        };
        let mut restored =
            KvStore::restore_from(KvConfig::default(), input, bytes.len() as u64).unwrap();
        assert_eq!(restored.snapshot(), bytes);
        assert_eq!(restored.len(), 150_000);
        for seq in (1..=150_000u64).step_by(997) {
            assert_eq!(
                restored.get(&seq.to_be_bytes()),
                Some(&[7; 64][..]),
                "key {seq}"
            );
        }
        let command = Command::Delete {
            session: Session {
                client_id: 1,
                seq: 150_001,
            },
            key: 5u64.to_be_bytes().to_vec(),
        };
        restored.apply(150_002, &command_to_vec(&command));
        assert_eq!(restored.get(&5u64.to_be_bytes()), None);
        assert_eq!(restored.len(), 149_999);
    }

    #[test]
    fn a_failing_or_short_reader_is_an_error() {
        let bytes = busy_store().snapshot();
        let short = KvStore::restore_from(
            KvConfig::default(),
            &bytes[..bytes.len() - 1],
            bytes.len() as u64,
        );
        assert!(matches!(short, Err(Error::Read(_))), "{short:?}");
        let mut damaged = bytes.clone();
        damaged[40] ^= 0x01;
        assert!(matches!(
            KvStore::restore(KvConfig::default(), &damaged),
            Err(Error::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn views_and_stores_can_move_to_a_helper_thread() {
        fn assert_send<T: Send + 'static>() {}
        assert_send::<SnapshotView>();
        assert_send::<KvStore>();
    }

    proptest! {
        #[test]
        fn snapshots_round_trip(commands in proptest::collection::vec(strategy::command(), 0..30)) {
            let mut store = KvStore::new(KvConfig::default());
            for (i, command) in commands.iter().enumerate() {
                store.apply(i as u64 + 1, &command_to_vec(command));
            }
            let bytes = store.snapshot();
            let restored = KvStore::restore(KvConfig::default(), &bytes).unwrap();
            prop_assert_eq!(restored.snapshot(), bytes);
            prop_assert_eq!(restored.applied_index(), store.applied_index());
        }

        #[test]
        fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..80)) {
            // A valid header with a matching crc over random contents reaches the parser.
            let mut bytes = SNAPSHOT_MAGIC.to_vec();
            bytes.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
            bytes.extend_from_slice(&tail);
            let crc = crc32fast::hash(&bytes);
            bytes.extend_from_slice(&crc.to_le_bytes());
            let slack = empty_store_bytes();
            let restore = |b: &[u8]| KvStore::restore(KvConfig::default(), b).is_ok();
            assert_bounded(&bytes, BYTES_PER_INPUT_BYTE_MAX, slack, restore);
            assert_bounded(&tail, BYTES_PER_INPUT_BYTE_MAX, slack, restore);
        }

        /// A valid header and crc around hostile key and session counts and a few
        /// bytes: every count is paid for with input before anything is allocated for
        /// it, so restoring allocates within the bound whatever the counts claim.
        #[test]
        fn hostile_counts_allocate_within_the_input(
            key_count in any::<u64>(),
            session_count in any::<u64>(),
            tail in proptest::collection::vec(any::<u8>(), 0..96),
        ) {
            let mut bytes = SNAPSHOT_MAGIC.to_vec();
            bytes.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
            bytes.extend_from_slice(&7u64.to_le_bytes());
            bytes.extend_from_slice(&key_count.to_le_bytes());
            bytes.extend_from_slice(&session_count.to_le_bytes());
            bytes.extend_from_slice(&tail);
            let crc = crc32fast::hash(&bytes);
            bytes.extend_from_slice(&crc.to_le_bytes());
            let restore = |b: &[u8]| KvStore::restore(KvConfig::default(), b).is_ok();
            assert_bounded(&bytes, BYTES_PER_INPUT_BYTE_MAX, empty_store_bytes(), restore);
        }
    }
}
