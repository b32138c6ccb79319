//! Turns what changed in a turn into events and counters: the leader this node knows
//! of, its elections, the membership applied and the NOSPACE alarm. Each change is one
//! [`Events::record`](super::events::Events::record) (a log line and a ring entry).
//!
//! Elections are seen at the end of each turn, from the role and term: a node that
//! becomes candidate, or stays candidate in a new term (a split vote), started one;
//! a candidate that becomes leader won it; one that does anything else (follower, or
//! candidate again in a later term) lost it. A node that went from follower to leader
//! within one turn (a single voter) started and won one.
//!
//! Invariant: `members_applied` is the membership of the last configuration applied
//! (or of the snapshot the state machine was restored from).

use super::events::{EventKind, Events};
use super::{Replica, ReplicaLog, SnapshotWriter};
use crate::raft::message::{Configuration, NodeId};
use crate::raft::{self, Role};

impl<L: ReplicaLog, W: SnapshotWriter> Replica<L, W> {
    /// The events kept, oldest first (for `GET /events`).
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Records a leader change and the start and end of elections, comparing the
    /// role, term and leader at the end of this turn with those of the last one.
    pub(super) fn observe_leader_and_elections(&mut self, role: Role, term: u64, leader: NodeId) {
        let (last_role, last_term) = (self.last_role, self.last_term);
        if leader != self.last_leader {
            let previous = self.last_leader;
            let message = format!(
                "term {term}: leader is now {} (was {})",
                node_name(leader),
                node_name(previous)
            );
            let fields = [("leader", leader), ("previous", previous)];
            self.events
                .record(EventKind::LeaderChanged, term, &fields, message);
            self.last_leader = leader;
            self.metrics.on_leader_change();
        }
        let became_leader = role == Role::Leader && last_role != Role::Leader;
        let campaigned =
            role == Role::Candidate && (last_role != Role::Candidate || term != last_term);
        let candidacy_ended =
            last_role == Role::Candidate && (role != Role::Candidate || term != last_term);
        if candidacy_ended && !became_leader {
            self.metrics.on_election_lost();
            let message = format!(
                "term {last_term}: election lost; now {role:?} in term {term}, leader {}",
                node_name(leader)
            );
            self.events
                .record(EventKind::ElectionLost, last_term, &[], message);
        }
        if campaigned || (became_leader && last_role != Role::Candidate) {
            self.metrics.on_election_started();
            let message = format!("term {term}: this node started an election");
            self.events
                .record(EventKind::ElectionStarted, term, &[], message);
        }
        if became_leader {
            self.metrics.on_election_won();
            let message = format!("term {term}: this node won its election and leads");
            self.events
                .record(EventKind::ElectionWon, term, &[], message);
        }
        self.last_term = term;
    }

    /// A configuration entry at `index` was applied: one event per member added or
    /// removed since the last one applied.
    pub(super) fn observe_membership(&mut self, config: &Configuration, index: u64) {
        let term = self.raw.raft().term;
        let members: std::collections::BTreeSet<NodeId> = config.members().collect();
        for &id in members.difference(&self.members_applied) {
            let role = if config.is_voter(id) {
                "voter"
            } else {
                "learner"
            };
            let message = format!("member {id} added as a {role} at index {index}");
            let fields = [("member", id), ("index", index)];
            self.events
                .record(EventKind::MemberAdded, term, &fields, message);
        }
        for &id in self.members_applied.difference(&members) {
            let message = format!("member {id} removed at index {index}");
            let fields = [("member", id), ("index", index)];
            self.events
                .record(EventKind::MemberRemoved, term, &fields, message);
        }
        self.members_applied = members;
    }

    /// Records the NOSPACE alarm going up or down since the last turn, and sets its
    /// gauge.
    pub(super) fn observe_alarm(&mut self) {
        let raised = self.nospace.raised();
        self.metrics.set_alarm_nospace(raised);
        if raised == self.alarm_reported {
            return;
        }
        self.alarm_reported = raised;
        let term = self.raw.raft().term;
        let (kind, message) = if raised {
            (
                EventKind::AlarmRaised,
                "the data directory's disk is full: writes are refused (NOSPACE)",
            )
        } else {
            (
                EventKind::AlarmCleared,
                "disk space is back: writes are accepted again",
            )
        };
        self.events.record(
            kind,
            term,
            &[("nospace", u64::from(raised))],
            message.to_string(),
        );
    }
}

/// A node id for messages: `none` for no node.
fn node_name(id: NodeId) -> String {
    if id == raft::NO_NODE {
        "none".to_string()
    } else {
        id.to_string()
    }
}
