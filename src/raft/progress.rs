//! What the leader knows about each follower's log (section 5.3 nextIndex /
//! matchIndex), the flow-control state that decides how it sends to it, and
//! the bounded window of appends in flight. Modelled on raft-rs `tracker/`.

use std::collections::VecDeque;

/// How the leader sends to a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    /// The follower's match point is unknown: one append at a time, waiting for
    /// its answer (or a heartbeat answer) before the next probe.
    Probe,
    /// The follower is known to match up to `match_index`: appends are pipelined
    /// optimistically, up to the inflight window.
    Replicate,
    /// The follower needs a snapshot; appends stop until it is installed.
    Snapshot,
}

/// A bounded FIFO of the last index of each append in flight.
///
/// Invariant: indexes increase from front to back; `len() <= capacity`.
#[derive(Debug, Clone)]
pub struct Inflights {
    indexes: VecDeque<u64>,
    capacity: usize,
}

impl Inflights {
    /// An empty window that holds up to `capacity` appends.
    pub fn new(capacity: usize) -> Inflights {
        Inflights {
            indexes: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
        }
    }

    /// Whether the window is full.
    pub fn full(&self) -> bool {
        self.indexes.len() >= self.capacity
    }

    /// Records an append whose last entry is `index`.
    ///
    /// # Panics
    /// When the window is full or `index` does not increase: the sender checks first.
    pub fn add(&mut self, index: u64) {
        assert!(!self.full(), "inflight window overflow");
        assert!(
            self.indexes.back().is_none_or(|&last| last < index),
            "inflight index goes back"
        );
        self.indexes.push_back(index);
    }

    /// Forgets every append ending at or below `index` (acknowledged).
    pub fn free_to(&mut self, index: u64) {
        while self.indexes.front().is_some_and(|&first| first <= index) {
            self.indexes.pop_front();
        }
    }

    /// Forgets everything.
    pub fn reset(&mut self) {
        self.indexes.clear();
    }

    /// Appends in flight.
    pub fn count(&self) -> usize {
        self.indexes.len()
    }
}

/// A follower found to have lost entries it had acknowledged ([`Progress::lost_log`]).
///
/// Such a member also forgot its vote, so it could vote twice in a term, and the
/// entries it lost may have counted for a commit: raftkv does not repair it (no
/// snapshot is sent: the leader's match point for it never goes back); the leader
/// reports it and an operator removes it and adds it again with an empty directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LostLog {
    /// The member.
    pub id: u64,
    /// The match index the leader holds for it.
    pub acknowledged: u64,
    /// The most its log holds now (its rejection's hint).
    pub holds: u64,
}

/// The leader's view of one follower.
///
/// Invariant: `match_index < next_index`.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Highest index known to be replicated on the follower.
    pub match_index: u64,
    /// Index of the next entry to send.
    pub next_index: u64,
    /// Flow-control state.
    pub state: ProgressState,
    /// In `Probe`: an append was sent and not yet answered.
    pub probe_sent: bool,
    /// Appends in flight in `Replicate`.
    pub inflights: Inflights,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// In `Snapshot`: the index of the snapshot being sent.
    pub snapshot_index: u64,
    /// In `Snapshot`: bytes the follower acknowledged holding (the next chunk's offset).
    pub snapshot_offset: u64,
    /// The follower rejected an append with a log that ends below `match_index`: it
    /// lost entries it had acknowledged (its data directory was wiped or replaced).
    pub lost_log: bool,
}

impl Progress {
    /// A follower to probe from `next_index`.
    pub fn new(next_index: u64, inflight_count_max: usize) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights: Inflights::new(inflight_count_max),
            recent_active: false,
            snapshot_index: 0,
            snapshot_offset: 0,
            lost_log: false,
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.state = state;
        self.probe_sent = false;
        self.inflights.reset();
        self.snapshot_index = 0;
        self.snapshot_offset = 0;
    }

    /// Back to probing right after the match point (or after the snapshot just installed).
    pub fn become_probe(&mut self) {
        let next = if self.state == ProgressState::Snapshot {
            (self.match_index + 1).max(self.snapshot_index + 1)
        } else {
            self.match_index + 1
        };
        self.reset_state(ProgressState::Probe);
        self.next_index = next;
    }

    /// Pipelining from the match point.
    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next_index = self.match_index + 1;
    }

    /// Sending snapshot `index`, from byte 0.
    pub fn become_snapshot(&mut self, index: u64) {
        self.reset_state(ProgressState::Snapshot);
        self.snapshot_index = index;
    }

    /// Records that the follower holds everything up to `index`. Returns whether
    /// the match index moved.
    pub fn maybe_update(&mut self, index: u64) -> bool {
        let moved = index > self.match_index;
        if moved {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index + 1);
        moved
    }

    /// Handles a rejection of the append after `rejected`, with the follower's
    /// hint `match_hint` (the highest index that may match). Returns false when
    /// the rejection is stale (answers an older append) and must be ignored.
    pub fn maybe_decrease_to(&mut self, rejected: u64, match_hint: u64) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.match_index {
                return false;
            }
            self.next_index = self.match_index + 1;
            return true;
        }
        if self.next_index == 0 || self.next_index - 1 != rejected {
            return false;
        }
        self.next_index = rejected.min(match_hint + 1).max(self.match_index + 1);
        self.probe_sent = false;
        true
    }

    /// Whether a rejection of the append after `rejected`, whose follower's log ends at
    /// `follower_last` at most (its conflict hint), shows the follower lost entries it
    /// acknowledged: it holds less than `match_index` although the append came after
    /// that match point (so the rejection is not a stale answer to an older append).
    /// Records it; true only the first time.
    pub fn note_lost_log(&mut self, rejected: u64, follower_last: u64) -> bool {
        let lost =
            !self.lost_log && rejected >= self.match_index && follower_last < self.match_index;
        self.lost_log |= lost;
        lost
    }

    /// Whether the leader must hold appends back for now.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot => true,
        }
    }

    /// Records that an append ending at `last_index` (none if empty) was sent.
    pub fn sent_append(&mut self, last_index: Option<u64>) {
        match self.state {
            ProgressState::Replicate => {
                if let Some(last) = last_index {
                    self.next_index = last + 1;
                    self.inflights.add(last);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: the window fills, pauses sending, and frees on acknowledgement.
    #[test]
    fn inflights_window() {
        let mut pr = Progress::new(1, 2);
        pr.become_replicate();
        pr.sent_append(Some(3));
        assert!(!pr.is_paused());
        pr.sent_append(Some(5));
        assert!(pr.is_paused(), "two appends in flight fill a window of two");
        assert_eq!(pr.next_index, 6);
        assert!(pr.maybe_update(3));
        pr.inflights.free_to(3);
        assert_eq!(pr.inflights.count(), 1);
        assert!(!pr.is_paused());
    }

    /// Goal: rejections move next_index back using the hint, never below
    /// match + 1, and stale rejections are ignored. Reference: section 5.3.
    #[test]
    fn decrease_with_hints() {
        // (state, match, next, rejected, hint) -> (accepted, next after)
        let cases = [
            (ProgressState::Probe, 0, 10, 9, 4, true, 5),
            (ProgressState::Probe, 0, 10, 5, 4, false, 10),
            (ProgressState::Probe, 6, 10, 9, 2, true, 7),
            (ProgressState::Probe, 0, 10, 9, 20, true, 9),
            (ProgressState::Replicate, 5, 12, 8, 0, true, 6),
            (ProgressState::Replicate, 5, 12, 5, 0, false, 12),
        ];
        for (i, (state, matched, next, rejected, hint, ok, want)) in cases.into_iter().enumerate() {
            let mut pr = Progress::new(next, 4);
            pr.match_index = matched;
            pr.state = state;
            pr.probe_sent = true;
            assert_eq!(pr.maybe_decrease_to(rejected, hint), ok, "#{i}");
            assert_eq!(pr.next_index, want, "#{i}");
        }
    }

    /// Goal: a follower whose log ends below its acknowledged match point is noted as
    /// having lost its log once; a stale rejection (of an append before the match
    /// point) or a hint at or above the match point is not such a loss.
    #[test]
    fn lost_log_noted_once() {
        let mut pr = Progress::new(11, 4);
        pr.match_index = 10;
        pr.become_replicate();
        assert!(
            !pr.note_lost_log(8, 0),
            "answers an append before the match point"
        );
        assert!(!pr.note_lost_log(12, 10), "holds the match point");
        assert!(pr.note_lost_log(10, 0), "empty log after acknowledging 10");
        assert!(pr.lost_log);
        assert!(!pr.note_lost_log(10, 0), "noted once");
    }

    /// Goal: after a snapshot, probing resumes after the snapshot index.
    #[test]
    fn probe_after_snapshot() {
        let mut pr = Progress::new(3, 4);
        pr.become_snapshot(50);
        assert!(pr.is_paused());
        pr.become_probe();
        assert_eq!(pr.next_index, 51);
        assert_eq!(pr.state, ProgressState::Probe);
    }
}
