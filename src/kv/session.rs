//! The client session table (Raft thesis §6.3): the results of recent writes per client,
//! so that a retried write returns its recorded result instead of being applied again.
//!
//! Sessions are opened by a `RegisterSession` entry (the id is that entry's index) and
//! expire deterministically by log position: a session not used for more than
//! `session_idle_entries_max` log indexes is dropped when an entry past that distance is
//! applied, and when more than `sessions_max` sessions exist the least recently used is
//! dropped. Every replica applies the same entries, so every replica drops the same
//! sessions at the same index; no clock is read.
//!
//! Each session keeps the results of its `session_results_max` highest sequence numbers,
//! so a client may pipeline that many writes. A `seq` below every kept result is a stale
//! retry: the answer is `StaleSequence` (an error, not a guess), and nothing is applied.
//!
//! Invariant: `expiry` holds exactly one `(last_active_index, client_id)` pair per session.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use super::command::CommandResult;
use super::ordmap::{OrdMap, OrdMapView};

/// One client's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionState {
    /// The index of the last entry that used this session.
    pub(crate) last_active_index: u64,
    /// The highest seq whose result was dropped from `results`; results of seqs at or
    /// below it that are not in `results` are unknown.
    pub(crate) evicted_seq_max: u64,
    /// Invariant: sorted by seq, no duplicates, at most `session_results_max` long.
    pub(crate) results: VecDeque<(u64, CommandResult)>,
}

impl SessionState {
    /// Where `seq` is (`Ok`) or would go (`Err`) in `results`. A client's new writes
    /// carry increasing seqs, so the common answer is "after the last" and is found
    /// without a search.
    fn find(&self, seq: u64) -> Result<usize, usize> {
        match self.results.back() {
            Some(&(last, _)) if last < seq => Err(self.results.len()),
            None => Err(0),
            Some(_) => self.results.binary_search_by_key(&seq, |(s, _)| *s),
        }
    }
}

/// What the table says about a write before it is applied.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// New seq: apply the write, then [`SessionTable::record`] the result.
    Apply,
    /// Already applied (or refused): answer with this result and apply nothing.
    Answer(CommandResult),
}

/// All sessions plus the index that orders them by last use.
#[derive(Debug, Clone)]
pub(crate) struct SessionTable {
    /// Sessions are `Arc`-shared, so a copy-on-write leaf copy does not copy results.
    pub(crate) sessions: OrdMap<u64, Arc<SessionState>>,
    expiry: BTreeSet<(u64, u64)>,
}

impl SessionTable {
    /// An empty table.
    pub(crate) fn new() -> SessionTable {
        SessionTable {
            sessions: OrdMap::new(),
            expiry: BTreeSet::new(),
        }
    }

    /// The number of open sessions.
    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Opens session `client_id` at `index`, then evicts least recently used sessions
    /// beyond `sessions_max`.
    pub(crate) fn register(&mut self, client_id: u64, index: u64, sessions_max: usize) {
        self.insert(
            client_id,
            SessionState {
                last_active_index: index,
                evicted_seq_max: 0,
                results: VecDeque::new(),
            },
        );
        while self.sessions.len() > sessions_max.max(1) {
            let Some(&(_, oldest)) = self.expiry.first() else {
                break;
            };
            self.remove(oldest);
        }
    }

    /// Adds a session (also used when restoring a snapshot).
    pub(crate) fn insert(&mut self, client_id: u64, state: SessionState) {
        self.expiry.insert((state.last_active_index, client_id));
        if let Some(previous) = self.sessions.insert(client_id, Arc::new(state)) {
            self.expiry.remove(&(previous.last_active_index, client_id));
        }
    }

    fn remove(&mut self, client_id: u64) {
        if let Some(state) = self.sessions.remove(&client_id) {
            self.expiry.remove(&(state.last_active_index, client_id));
        }
    }

    /// Drops every session idle for more than `idle_entries_max` indexes before `index`.
    pub(crate) fn expire(&mut self, index: u64, idle_entries_max: u64) {
        while let Some(&(last_active, client_id)) = self.expiry.first() {
            if last_active.saturating_add(idle_entries_max) >= index {
                break;
            }
            self.remove(client_id);
        }
    }

    /// Decides whether write `seq` of `client_id`, applied at `index`, runs, and marks the
    /// session active at `index`.
    pub(crate) fn admit(&mut self, client_id: u64, seq: u64, index: u64) -> Admission {
        let Some(state) = self.sessions.get_mut(&client_id).map(Arc::make_mut) else {
            return Admission::Answer(CommandResult::SessionExpired);
        };
        let previous_active = state.last_active_index;
        state.last_active_index = index;
        let answer = match state.find(seq) {
            Ok(position) => Admission::Answer(state.results[position].1.clone()),
            Err(_) if seq <= state.evicted_seq_max => {
                Admission::Answer(CommandResult::StaleSequence)
            }
            Err(_) => Admission::Apply,
        };
        self.expiry.remove(&(previous_active, client_id));
        self.expiry.insert((index, client_id));
        answer
    }

    /// Records the result of write `seq` (after [`Admission::Apply`]).
    pub(crate) fn record(
        &mut self,
        client_id: u64,
        seq: u64,
        result: &CommandResult,
        results_max: usize,
    ) {
        let Some(state) = self.sessions.get_mut(&client_id).map(Arc::make_mut) else {
            return;
        };
        let position = match state.find(seq) {
            Ok(_) => return,
            Err(position) => position,
        };
        state.results.insert(position, (seq, result.clone()));
        while state.results.len() > results_max.max(1) {
            if let Some((evicted, _)) = state.results.pop_front() {
                state.evicted_seq_max = state.evicted_seq_max.max(evicted);
            }
        }
    }

    /// A point-in-time view for a snapshot.
    pub(crate) fn view(&self) -> OrdMapView<u64, Arc<SessionState>> {
        self.sessions.view()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_seq_is_answered_from_the_record_and_old_seqs_are_stale() {
        // Reference: Raft thesis §6.3 (duplicate detection with bounded result storage).
        let mut table = SessionTable::new();
        table.register(5, 5, 10);
        assert_eq!(
            table.admit(9, 1, 6),
            Admission::Answer(CommandResult::SessionExpired)
        );
        for seq in 1..=3 {
            assert_eq!(table.admit(5, seq, 6 + seq), Admission::Apply);
            table.record(5, seq, &CommandResult::Value(Some(vec![seq as u8])), 2);
        }
        assert_eq!(
            table.admit(5, 3, 20),
            Admission::Answer(CommandResult::Value(Some(vec![3])))
        );
        assert_eq!(
            table.admit(5, 1, 21),
            Admission::Answer(CommandResult::StaleSequence)
        );
        assert_eq!(table.admit(5, 4, 22), Admission::Apply);
    }

    #[test]
    fn idle_and_least_recently_used_sessions_expire_by_index() {
        let mut table = SessionTable::new();
        table.register(1, 1, 2);
        table.register(2, 2, 2);
        assert_eq!(table.admit(1, 1, 3), Admission::Apply);
        table.register(4, 4, 2); // evicts 2, the least recently used
        assert_eq!(
            table.admit(2, 1, 5),
            Admission::Answer(CommandResult::SessionExpired)
        );
        assert_eq!(table.len(), 2);
        table.expire(13, 10); // 1 was last active at 3: 3 + 10 >= 13, stays
        assert_eq!(table.len(), 2);
        table.expire(14, 10); // 1 expires (3 + 10 < 14); 4 stays (4 + 10 >= 14)
        assert_eq!(table.len(), 1);
        assert_eq!(
            table.admit(1, 2, 15),
            Admission::Answer(CommandResult::SessionExpired)
        );
        assert_eq!(table.admit(4, 1, 16), Admission::Apply);
    }
}
