//! `RaftLog`: the log as the core sees it, the durable part (through
//! [`LogStore`]) plus an unstable tail not yet handed to the driver, and the
//! three positions committed, persisted and applied.
//!
//! Invariants:
//! - `applied <= committed`; entries are delivered for applying only up to
//!   `min(committed, persisted)`, so the state machine never runs ahead of the
//!   durable log.
//! - the unstable entries are consecutive; the first one is at most the stable
//!   last index + 1 (a lower first index replaces a stale stored suffix).
//! - an unstable snapshot, when present, replaces the whole stored log; the
//!   unstable entries then start right after it.

use super::error::StoreError;
use super::message::{Entry, SnapshotMeta};
use super::store::{LogStore, limit_bytes};

/// The stable log plus the unstable tail.
#[derive(Debug)]
pub struct RaftLog<S> {
    /// The durable log (the driver writes it, the core reads it).
    pub store: S,
    unstable_snapshot: Option<SnapshotMeta>,
    unstable: Vec<Entry>,
    /// Highest index known committed. Invariant: `committed <= last_index()`.
    pub committed: u64,
    /// Highest index the driver confirmed durable (through `advance`).
    pub persisted: u64,
    /// Highest index handed out for applying and acknowledged.
    pub applied: u64,
}

impl<S: LogStore> RaftLog<S> {
    /// A log over `store`, with the committed and applied indexes the node restarts from.
    pub fn new(store: S, committed: u64, applied: u64) -> RaftLog<S> {
        let (compacted, last) = (store.compacted().0, store.last_index());
        let committed = committed.clamp(compacted, last);
        let applied = applied.clamp(compacted, committed);
        RaftLog {
            store,
            unstable_snapshot: None,
            unstable: Vec::new(),
            committed,
            persisted: last,
            applied,
        }
    }

    fn stable_last(&self) -> u64 {
        match &self.unstable_snapshot {
            Some(meta) => meta.index,
            None => self.store.last_index(),
        }
    }

    /// (index, term) of the compaction point (a pending snapshot's, if any).
    pub fn compacted(&self) -> (u64, u64) {
        match &self.unstable_snapshot {
            Some(meta) => (meta.index, meta.term),
            None => self.store.compacted(),
        }
    }

    /// Index of the first entry still in the log.
    pub fn first_index(&self) -> u64 {
        self.compacted().0 + 1
    }

    /// Index of the last entry.
    pub fn last_index(&self) -> u64 {
        self.unstable
            .last()
            .map_or_else(|| self.stable_last(), |e| e.index)
    }

    /// Term of the entry at `index`.
    ///
    /// # Errors
    /// [`StoreError::Compacted`] / [`StoreError::Unavailable`] outside the log, or a store failure.
    pub fn term(&self, index: u64) -> Result<u64, StoreError> {
        if let Some(first) = self.unstable.first()
            && index >= first.index
        {
            return match self.unstable.get((index - first.index) as usize) {
                Some(entry) => Ok(entry.term),
                None => Err(StoreError::Unavailable(index)),
            };
        }
        if index > self.stable_last() {
            return Err(StoreError::Unavailable(index));
        }
        match &self.unstable_snapshot {
            Some(meta) if index == meta.index => Ok(meta.term),
            Some(_) => Err(StoreError::Compacted(index)),
            None => self.store.term(index),
        }
    }

    /// Term of the last entry.
    ///
    /// # Errors
    /// A store failure.
    pub fn last_term(&self) -> Result<u64, StoreError> {
        self.term(self.last_index())
    }

    /// Whether the entry at `index` has `term` (false when unknown).
    pub fn match_term(&self, index: u64, term: u64) -> bool {
        self.term(index) == Ok(term)
    }

    /// Whether a log ending at (`last_index`, `last_term`) is at least as up to
    /// date as this one (section 5.4.1).
    ///
    /// # Errors
    /// A store failure.
    pub fn is_up_to_date(&self, last_index: u64, last_term: u64) -> Result<bool, StoreError> {
        let my_term = self.last_term()?;
        Ok(last_term > my_term || (last_term == my_term && last_index >= self.last_index()))
    }

    /// Entries `[low, high)` within `bytes_max` (at least one for a non-empty range).
    ///
    /// # Errors
    /// [`StoreError::Compacted`] when `low` is below the first index, or a store failure.
    pub fn entries(&self, low: u64, high: u64, bytes_max: u64) -> Result<Vec<Entry>, StoreError> {
        if low >= high {
            return Ok(Vec::new());
        }
        if low < self.first_index() {
            return Err(StoreError::Compacted(low));
        }
        let unstable_from = self.unstable.first().map_or(u64::MAX, |e| e.index);
        let mut out = Vec::new();
        if low < unstable_from {
            out = self.store.entries(
                low,
                high.min(unstable_from).min(self.stable_last() + 1),
                bytes_max,
            )?;
            let complete = out
                .last()
                .is_some_and(|e| e.index + 1 == high.min(unstable_from));
            if !complete {
                return Ok(out);
            }
        }
        if high > unstable_from {
            let from = (low.max(unstable_from) - unstable_from) as usize;
            let to = ((high - unstable_from) as usize).min(self.unstable.len());
            out.extend_from_slice(&self.unstable[from.min(to)..to]);
            limit_bytes(&mut out, bytes_max);
        }
        Ok(out)
    }

    /// Appends `entries` (consecutive), replacing everything from `entries[0].index` on.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        match self.unstable.first() {
            Some(start) if first.index >= start.index => {
                self.unstable.truncate((first.index - start.index) as usize);
            }
            _ => self.unstable.clear(),
        }
        self.persisted = self.persisted.min(first.index - 1);
        self.unstable.extend_from_slice(entries);
    }

    /// Appends `entry` after the last one, taking it by value (the leader's
    /// proposal: no copy of its payload).
    pub fn push(&mut self, entry: Entry) {
        debug_assert_eq!(
            entry.index,
            self.last_index() + 1,
            "push after the last entry"
        );
        self.persisted = self.persisted.min(entry.index - 1);
        self.unstable.push(entry);
    }

    /// The follower side of AppendEntries (Figure 2, receiver steps 2-5): when the
    /// log has (`prev_index`, `prev_term`), appends what is new in `entries`,
    /// advances the commit index to `min(commit, last new index)` and returns
    /// (last new index, index the log was rewritten from, if it was).
    ///
    /// # Errors
    /// A store failure.
    ///
    /// # Panics
    /// When `entries` conflict with a committed entry (see the assertion's comment).
    pub fn maybe_append(
        &mut self,
        prev_index: u64,
        prev_term: u64,
        commit: u64,
        entries: &[Entry],
    ) -> Result<Option<(u64, Option<u64>)>, StoreError> {
        if !self.match_term(prev_index, prev_term) {
            return Ok(None);
        }
        let last_new = prev_index + entries.len() as u64;
        let conflict = entries
            .iter()
            .position(|e| !self.match_term(e.index, e.term));
        if let Some(at) = conflict {
            // A committed entry is on a majority and may have been applied and
            // acknowledged: a leader that sends a different one broke Leader
            // Completeness (§5.4), and rewriting it here would lose an acknowledged write.
            assert!(
                entries[at].index > self.committed,
                "append would rewrite committed index {} (committed {})",
                entries[at].index,
                self.committed
            );
            self.append(&entries[at..]);
        }
        self.commit_to(commit.min(last_new));
        Ok(Some((last_new, conflict.map(|at| entries[at].index))))
    }

    /// etcd's `findConflictByTerm`: the last index at or below `index` whose term
    /// is at most `term`, with its term; term 0 when that falls below the log.
    pub fn find_conflict_by_term(&self, index: u64, term: u64) -> (u64, u64) {
        let mut index = index.min(self.last_index());
        loop {
            match self.term(index) {
                Ok(t) if t <= term => return (index, t),
                Ok(_) if index > 0 => index -= 1,
                _ => return (index, 0),
            }
        }
    }

    /// Raises the commit index to `index` (never lowers it, never past the last index).
    pub fn commit_to(&mut self, index: u64) {
        let index = index.min(self.last_index());
        if index > self.committed {
            self.committed = index;
        }
    }

    /// Whether entries wait to be applied.
    pub fn has_next_committed(&self) -> bool {
        self.committed.min(self.persisted) > self.applied && self.unstable_snapshot.is_none()
    }

    /// The next committed, persisted entries to apply, within `bytes_max`.
    ///
    /// # Errors
    /// A store failure.
    pub fn next_committed(&self, bytes_max: u64) -> Result<Vec<Entry>, StoreError> {
        if !self.has_next_committed() {
            return Ok(Vec::new());
        }
        let low = self.applied.max(self.compacted().0) + 1;
        self.entries(low, self.committed.min(self.persisted) + 1, bytes_max)
    }

    /// Entries not yet handed to the driver.
    pub fn unstable_entries(&self) -> &[Entry] {
        &self.unstable
    }

    /// The received snapshot not yet installed by the driver (its data is in the
    /// chunks handed out before it).
    pub fn unstable_snapshot(&self) -> Option<&SnapshotMeta> {
        self.unstable_snapshot.as_ref()
    }

    /// Replaces the whole log by the snapshot `meta` (a follower installing the
    /// leader's, whose data the driver received chunk by chunk).
    pub fn restore(&mut self, meta: SnapshotMeta) {
        self.unstable.clear();
        self.committed = meta.index;
        self.unstable_snapshot = Some(meta);
    }

    /// The driver made the handed-out snapshot and entries durable.
    pub fn on_persisted(&mut self, snapshot_index: Option<u64>, last_entry: Option<u64>) {
        if let Some(index) = snapshot_index {
            self.unstable_snapshot = None;
            self.persisted = index;
            self.applied = self.applied.max(index);
        }
        if let Some(last) = last_entry {
            self.unstable.retain(|e| e.index > last);
            self.persisted = last;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::message::{Configuration, EntryKind};
    use crate::raft::store::MemStore;
    use std::sync::Arc;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal,
            data: Arc::from([]),
        }
    }

    fn log_with(terms: &[u64]) -> RaftLog<MemStore> {
        let mut store = MemStore::new(Configuration::new([1], []));
        let entries: Vec<Entry> = terms
            .iter()
            .enumerate()
            .map(|(i, &t)| entry(i as u64 + 1, t))
            .collect();
        store.append(&entries);
        RaftLog::new(store, 0, 0)
    }

    /// Goal: a conflicting append replaces the stored suffix in the unstable
    /// tail, and reads see the new tail. Reference: Figure 2, receiver step 3.
    #[test]
    fn maybe_append_resolves_conflicts() {
        let mut log = log_with(&[1, 1, 2, 2]);
        assert_eq!(
            log.maybe_append(2, 2, 0, &[]).unwrap(),
            None,
            "prev term mismatch"
        );
        let got = log
            .maybe_append(2, 1, 3, &[entry(3, 3), entry(4, 3), entry(5, 3)])
            .unwrap();
        assert_eq!(got, Some((5, Some(3))));
        assert_eq!(log.last_index(), 5);
        assert_eq!(log.term(3), Ok(3));
        assert_eq!(log.committed, 3);
        assert_eq!(log.persisted, 2, "stored suffix from 3 is stale");
        let got = log.maybe_append(3, 3, 3, &[entry(4, 3)]).unwrap();
        assert_eq!(got, Some((4, None)), "a duplicate append changes nothing");
        assert_eq!(log.last_index(), 5);
        let all = log.entries(1, 6, u64::MAX).unwrap();
        assert_eq!(
            all.iter().map(|e| e.term).collect::<Vec<_>>(),
            vec![1, 1, 3, 3, 3]
        );
    }

    /// Goal: an append that conflicts with a committed entry is a programmer error
    /// (a broken leader), never a silent rewrite. Reference: section 5.4 (Leader
    /// Completeness). Method: commit index 3 of a log, then append a different term at 3.
    #[test]
    #[should_panic(expected = "append would rewrite committed index 3")]
    fn maybe_append_refuses_to_rewrite_a_committed_entry() {
        let mut log = log_with(&[1, 1, 1, 1]);
        log.commit_to(3);
        let _ = log.maybe_append(2, 1, 3, &[entry(3, 2)]);
    }

    /// Goal: a pushed entry lands after the stored ones, unstable until persisted.
    #[test]
    fn push_appends_after_the_last_entry() {
        let mut log = log_with(&[1, 1]);
        log.on_persisted(None, Some(2));
        log.push(entry(3, 2));
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.term(3), Ok(2));
        assert_eq!(log.unstable_entries(), &[entry(3, 2)]);
        assert_eq!(log.persisted, 2);
        assert_eq!(log.entries(1, 4, u64::MAX).unwrap().len(), 3);
    }

    /// Goal: the conflict hint skips a whole divergent term at once.
    /// Reference: section 5.3 (the optimisation after Figure 7), etcd findConflictByTerm.
    #[test]
    fn find_conflict_by_term_table() {
        let log = log_with(&[1, 1, 2, 2, 5, 5, 5]);
        let cases = [
            ((7, 5), (7, 5)),
            ((7, 4), (4, 2)),
            ((7, 1), (2, 1)),
            ((9, 3), (4, 2)),
            ((3, 0), (0, 0)),
        ];
        for (i, ((index, term), want)) in cases.into_iter().enumerate() {
            assert_eq!(log.find_conflict_by_term(index, term), want, "#{i}");
        }
    }

    /// Goal: the up-to-date check compares last terms, then lengths. Reference: 5.4.1.
    #[test]
    fn up_to_date_table() {
        let log = log_with(&[1, 2, 2]);
        let cases = [
            ((3, 2), true),
            ((2, 2), false),
            ((1, 3), true),
            ((9, 1), false),
        ];
        for (i, ((index, term), want)) in cases.into_iter().enumerate() {
            assert_eq!(log.is_up_to_date(index, term), Ok(want), "#{i}");
        }
    }
}
