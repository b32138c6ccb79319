//! The stable log as the core sees it (`LogStore`, read-only) and `MemStore`,
//! an in-memory implementation used by tests, the simulation and benches.
//!
//! THE DRIVER WRITES, THE CORE ONLY READS. After taking a `Ready`, the driver:
//! 1. writes `Ready.snapshot_chunks` where it keeps the snapshot being received
//!    (`MemStore::write_snapshot_chunk`); if `Ready.snapshot` is set, installs it,
//!    its data those chunks: the store drops every entry and becomes compacted at the
//!    snapshot's (index, term) (`MemStore::apply_snapshot`);
//! 2. appends `Ready.entries`; IF `entries[0].index <= last_index()`, IT FIRST
//!    TRUNCATES THE STORED SUFFIX FROM `entries[0].index` (a conflicting tail
//!    replaced by the leader's entries), as `MemStore::append` does;
//! 3. writes `Ready.hard_state` if set;
//! 4. makes all of that durable, then calls `RawNode::advance`.
//!
//! Compaction is the driver's job too: `RawNode::build_snapshot` returns a
//! snapshot at an applied index, and the driver stores it and drops the entries
//! it covers (`MemStore::compact`).

use super::error::StoreError;
use super::message::{Configuration, Entry, HardState, Snapshot, SnapshotChunk, SnapshotMeta};

/// What a restarting node reads from its store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitialState {
    /// The last durable hard state.
    pub hard_state: HardState,
    /// The membership at the compaction point (the latest snapshot's, or the
    /// bootstrap configuration when there is no snapshot). The core scans the
    /// entries after the compaction point for later `Config` entries.
    pub config: Configuration,
}

/// Read access to the durable log.
///
/// Invariant: entries `first_index()..=last_index()` are stored and consecutive;
/// `compacted()` is the (index, term) of the entry just before `first_index()`.
pub trait LogStore {
    /// The hard state and configuration to start from.
    ///
    /// # Errors
    /// [`StoreError::Failed`] when the store cannot be read.
    fn initial_state(&self) -> Result<InitialState, StoreError>;

    /// (index, term) of the last entry covered by the snapshot; (0, 0) when none.
    fn compacted(&self) -> (u64, u64);

    /// Index of the first stored entry: `compacted().0 + 1`.
    fn first_index(&self) -> u64 {
        self.compacted().0 + 1
    }

    /// Index of the last stored entry (`compacted().0` when no entry is stored).
    fn last_index(&self) -> u64;

    /// Term of the entry at `index`, for `index` in `compacted().0..=last_index()`.
    ///
    /// # Errors
    /// [`StoreError::Compacted`] below the range, [`StoreError::Unavailable`] above it,
    /// [`StoreError::Failed`] on an IO or corruption error.
    fn term(&self, index: u64) -> Result<u64, StoreError>;

    /// Entries `[low, high)`, stopping before the total payload exceeds
    /// `bytes_max` but always returning at least one entry for a non-empty range.
    ///
    /// # Errors
    /// As [`LogStore::term`], for any index of the range outside the stored entries.
    fn entries(&self, low: u64, high: u64, bytes_max: u64) -> Result<Vec<Entry>, StoreError>;

    /// The latest snapshot's metadata (index 0 when there is none).
    fn snapshot_meta(&self) -> SnapshotMeta;

    /// Bytes of the latest snapshot's data (0 when there is none).
    fn snapshot_bytes(&self) -> u64;

    /// Up to `bytes_max` bytes of the latest snapshot's data from `offset` (fewer at
    /// its end, none past it). A store on disk reads just that range, so sending a
    /// snapshot never copies it whole.
    ///
    /// # Errors
    /// [`StoreError::Failed`] when it cannot be read.
    fn snapshot_chunk(&self, offset: u64, bytes_max: u64) -> Result<Vec<u8>, StoreError>;
}

/// The size an entry counts for against byte limits: payload plus a fixed header.
pub fn entry_bytes(entry: &Entry) -> u64 {
    entry.data.len() as u64 + 24
}

/// Takes entries from `entries` while they fit in `bytes_max` (at least one).
pub fn limit_bytes(entries: &mut Vec<Entry>, bytes_max: u64) {
    let mut total = 0;
    let keep = entries
        .iter()
        .position(|e| {
            total += entry_bytes(e);
            total > bytes_max
        })
        .unwrap_or(entries.len());
    entries.truncate(keep.max(1));
}

/// An in-memory [`LogStore`]: everything it holds counts as durable.
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    hard_state: HardState,
    snapshot: Snapshot,
    /// Invariant: consecutive, starting at `snapshot.meta.index + 1`.
    entries: Vec<Entry>,
    /// The data of the snapshot being received, as far as its chunks were written.
    incoming: Vec<u8>,
}

impl MemStore {
    /// An empty log for a new cluster with the given membership.
    pub fn new(config: Configuration) -> MemStore {
        let meta = SnapshotMeta {
            index: 0,
            term: 0,
            config,
        };
        MemStore {
            snapshot: Snapshot {
                meta,
                data: Vec::new(),
            },
            ..MemStore::default()
        }
    }

    /// Appends entries, first truncating the stored suffix from `entries[0].index`
    /// when that index is already stored (the driver's rule, see the module docs).
    ///
    /// # Panics
    /// If `entries[0].index` would leave a gap after the last index, or lies at or
    /// below the compaction point: the core never produces such a batch.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let offset = self.snapshot.meta.index + 1;
        assert!(
            first.index >= offset && first.index <= self.last_index() + 1,
            "append at {} outside [{offset}, {}]",
            first.index,
            self.last_index() + 1
        );
        self.entries.truncate((first.index - offset) as usize);
        self.entries.extend_from_slice(entries);
    }

    /// Stores the hard state.
    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    /// Writes a chunk of the snapshot being received (`Ready::snapshot_chunks`): one at
    /// offset 0 starts it afresh, one already held is skipped.
    ///
    /// # Panics
    /// When the chunk neither starts nor continues the data held: the core hands
    /// chunks out in order.
    pub fn write_snapshot_chunk(&mut self, chunk: &SnapshotChunk) {
        let end = chunk.offset + chunk.data.len() as u64;
        if chunk.offset == 0 {
            self.incoming.clear();
        } else if end <= self.incoming.len() as u64 {
            return;
        }
        assert_eq!(
            chunk.offset,
            self.incoming.len() as u64,
            "chunk out of order"
        );
        self.incoming.extend_from_slice(&chunk.data);
    }

    /// Installs the snapshot `meta` received from the leader, its data the chunks
    /// written: drops the whole log.
    pub fn apply_snapshot(&mut self, meta: SnapshotMeta) {
        self.entries.clear();
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        let data = std::mem::take(&mut self.incoming);
        self.snapshot = Snapshot { meta, data };
    }

    /// Keeps `snapshot` (built by `RawNode::build_snapshot`) and drops the entries
    /// it covers. A snapshot not newer than the current one is ignored.
    pub fn compact(&mut self, snapshot: Snapshot) {
        let (old, new) = (self.snapshot.meta.index, snapshot.meta.index);
        if new <= old {
            return;
        }
        let covered = ((new - old) as usize).min(self.entries.len());
        self.entries.drain(..covered);
        self.snapshot = snapshot;
    }

    /// The stored hard state.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Every stored entry (after the compaction point).
    pub fn all_entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The stored snapshot, borrowed.
    pub fn stored_snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    fn check(&self, index: u64) -> Result<usize, StoreError> {
        let offset = self.snapshot.meta.index;
        if index <= offset {
            return Err(StoreError::Compacted(index));
        }
        if index > self.last_index() {
            return Err(StoreError::Unavailable(index));
        }
        Ok((index - offset - 1) as usize)
    }
}

impl LogStore for MemStore {
    fn initial_state(&self) -> Result<InitialState, StoreError> {
        Ok(InitialState {
            hard_state: self.hard_state,
            config: self.snapshot.meta.config.clone(),
        })
    }

    fn compacted(&self) -> (u64, u64) {
        (self.snapshot.meta.index, self.snapshot.meta.term)
    }

    fn last_index(&self) -> u64 {
        self.snapshot.meta.index + self.entries.len() as u64
    }

    fn term(&self, index: u64) -> Result<u64, StoreError> {
        if index == self.snapshot.meta.index {
            return Ok(self.snapshot.meta.term);
        }
        Ok(self.entries[self.check(index)?].term)
    }

    fn entries(&self, low: u64, high: u64, bytes_max: u64) -> Result<Vec<Entry>, StoreError> {
        if low >= high {
            return Ok(Vec::new());
        }
        let (from, to) = (self.check(low)?, self.check(high - 1)? + 1);
        let mut out = self.entries[from..to].to_vec();
        limit_bytes(&mut out, bytes_max);
        Ok(out)
    }

    fn snapshot_meta(&self) -> SnapshotMeta {
        self.snapshot.meta.clone()
    }

    fn snapshot_bytes(&self) -> u64 {
        self.snapshot.data.len() as u64
    }

    fn snapshot_chunk(&self, offset: u64, bytes_max: u64) -> Result<Vec<u8>, StoreError> {
        Ok(chunk_of(&self.snapshot.data, offset, bytes_max).to_vec())
    }
}

/// Up to `bytes_max` bytes of `data` from `offset` (empty past its end).
fn chunk_of(data: &[u8], offset: u64, bytes_max: u64) -> &[u8] {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(data.len());
    let len = usize::try_from(bytes_max)
        .unwrap_or(usize::MAX)
        .min(data.len() - start);
    &data[start..start + len]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::message::EntryKind;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal,
            data: vec![0; 8].into(),
        }
    }

    /// Goal: the driver's append rule truncates a conflicting suffix, compaction
    /// keeps terms at the compaction point, and reads outside the range are errors.
    #[test]
    fn append_truncates_and_compact_drops_prefix() {
        let mut store = MemStore::new(Configuration::new([1], []));
        store.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        store.append(&[entry(2, 2)]);
        assert_eq!(store.last_index(), 2);
        assert_eq!(store.term(2), Ok(2));
        assert_eq!(store.term(3), Err(StoreError::Unavailable(3)));
        store.append(&[entry(3, 2), entry(4, 2)]);
        let meta = SnapshotMeta {
            index: 2,
            term: 2,
            config: Configuration::new([1], []),
        };
        store.compact(Snapshot {
            meta,
            data: vec![9],
        });
        assert_eq!(store.compacted(), (2, 2));
        assert_eq!(store.first_index(), 3);
        assert_eq!(store.term(2), Ok(2));
        assert_eq!(store.term(1), Err(StoreError::Compacted(1)));
        assert_eq!(
            store.entries(3, 5, 0).map(|e| e.len()),
            Ok(1),
            "byte limit keeps one"
        );
        assert_eq!(store.entries(3, 5, 1000).map(|e| e.len()), Ok(2));
        assert!(store.entries(2, 4, 1000).is_err());
    }
}
