//! The role logic of Raft: elections (with pre-vote and check-quorum),
//! replication with flow control, commit, snapshots, leadership transfer and
//! ReadIndex. Pure: it reads its log through [`LogStore`], queues outgoing
//! messages, and never touches a clock or a socket. The driver API and the
//! durability contract live in `raw_node.rs`.
//!
//! This file holds the state, the role changes and the dispatch of inputs
//! (`step`, `propose`, `transfer_leader`, snapshots); each protocol part is an
//! `impl Raft` block of its own: `election` (timers, votes), `replication`
//! (appends, snapshot chunks, commit), `membership` (configuration changes and
//! removals) and `read_index` (linearizable reads).
//!
//! Invariants:
//! - one vote per term, persisted (via the hard state) before the vote response
//!   leaves (`messages_after_sync`);
//! - a leader counts itself for commit only up to `log.persisted`;
//! - a leader commits only an entry of its own term by counting (section 5.4.2).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::error::Error;
use super::log::RaftLog;
use super::message::{
    Configuration, Entry, EntryKind, HeartbeatResponse, Message, MessageBody, NO_NODE, NodeId,
    Snapshot, SnapshotChunk, SnapshotMeta, VoteResponse,
};
use super::progress::{LostLog, Progress};
use super::read_only::{ReadOnly, ReadRequest, ReadState};
use super::rng::Rng;
use super::store::LogStore;

mod election;
mod membership;
mod read_index;
mod replication;

/// Tuning of one node. Times are in ticks (the driver decides a tick's length).
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's id (not [`NO_NODE`]).
    pub id: NodeId,
    /// Election timeout: a random value in `[election_ticks, 2 * election_ticks)`
    /// is drawn for each election round (section 5.2); also the check-quorum period.
    pub election_ticks: u64,
    /// Ticks between leader heartbeats; less than `election_ticks`.
    pub heartbeat_ticks: u64,
    /// Run a pre-vote round before a real election (thesis section 9.6).
    pub pre_vote: bool,
    /// A leader steps down when it did not hear from a majority within an
    /// election timeout, and followers ignore votes while they have a live leader.
    pub check_quorum: bool,
    /// Appends in flight per follower in the replicate state.
    pub inflight_count_max: usize,
    /// Entry bytes per append message (at least one entry is always sent).
    pub message_bytes_max: u64,
    /// Data bytes per InstallSnapshot chunk.
    pub snapshot_chunk_bytes_max: u64,
    /// Entry bytes handed out for applying per `Ready`.
    pub committed_bytes_max: u64,
    /// The index the state machine has applied at start (entries after it are
    /// delivered again); raised to the compaction point.
    pub applied: u64,
    /// A learner is promoted only when its match index is at most this many
    /// entries behind the leader's last index (thesis section 4.2.1: a voter that
    /// cannot keep up would stall commits until it catches up).
    pub promote_distance_max: u64,
    /// Test-only switches that disable one safety rule each.
    #[cfg(feature = "sim-faults")]
    #[doc(hidden)]
    pub faults: Faults,
}

/// Safety rules a simulation can switch off to check that its checker notices.
#[cfg(feature = "sim-faults")]
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Commit by counting replicas of entries of any term (breaks section 5.4.2).
    pub commit_old_terms: bool,
    /// Grant votes without the up-to-date check (breaks section 5.4.1).
    pub vote_for_stale_logs: bool,
}

impl Config {
    /// Defaults for node `id`: election 10 ticks, heartbeat 2, pre-vote and
    /// check-quorum on, 256 appends in flight, 1 MiB messages, 1 MiB chunks,
    /// learners promoted within 1000 entries of the leader.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_ticks: 10,
            heartbeat_ticks: 2,
            pre_vote: true,
            check_quorum: true,
            inflight_count_max: 256,
            message_bytes_max: 1 << 20,
            snapshot_chunk_bytes_max: 1 << 20,
            committed_bytes_max: 16 << 20,
            applied: 0,
            promote_distance_max: 1000,
            #[cfg(feature = "sim-faults")]
            faults: Faults::default(),
        }
    }

    /// Checks the values make sense.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the offending field.
    pub fn validate(&self) -> Result<(), Error> {
        let problem = if self.id == NO_NODE {
            "id must not be 0"
        } else if self.heartbeat_ticks == 0 {
            "heartbeat_ticks must be positive"
        } else if self.election_ticks <= self.heartbeat_ticks {
            "election_ticks must exceed heartbeat_ticks"
        } else if self.inflight_count_max == 0 {
            "inflight_count_max must be positive"
        } else if self.snapshot_chunk_bytes_max == 0 {
            "snapshot_chunk_bytes_max must be positive"
        } else {
            return Ok(());
        };
        Err(Error::InvalidConfig(problem))
    }

    fn commit_old_terms(&self) -> bool {
        #[cfg(feature = "sim-faults")]
        return self.faults.commit_old_terms;
        #[cfg(not(feature = "sim-faults"))]
        false
    }

    fn vote_for_stale_logs(&self) -> bool {
        #[cfg(feature = "sim-faults")]
        return self.faults.vote_for_stale_logs;
        #[cfg(not(feature = "sim-faults"))]
        false
    }
}

/// A node's role (section 5.1, plus the pre-vote phase of thesis section 9.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Answers leaders and candidates.
    Follower,
    /// Asks whether it could win before disturbing anyone.
    PreCandidate,
    /// Runs an election in a new term.
    Candidate,
    /// Replicates the log.
    Leader,
}

/// The Raft state machine of one node.
#[derive(Debug)]
pub struct Raft<S> {
    /// This node's id.
    pub id: NodeId,
    /// Current term (Figure 2).
    pub term: u64,
    /// Vote cast in `term`, or [`NO_NODE`].
    pub vote: NodeId,
    /// Current role.
    pub role: Role,
    /// The leader of `term` as far as this node knows, or [`NO_NODE`].
    pub leader: NodeId,
    /// The log.
    pub log: RaftLog<S>,
    /// The membership in force: that of the last `Config` entry in the log.
    pub membership: Configuration,
    /// (index, configuration) from the compaction point on, to find the
    /// membership at any index and to fall back when a conflicting tail goes.
    /// Invariant: sorted by index; the last element is `membership`.
    config_history: Vec<(u64, Configuration)>,
    /// The leader's view of every member (itself included).
    pub progress: BTreeMap<NodeId, Progress>,
    votes: BTreeMap<NodeId, bool>,
    pub(crate) messages: Vec<Message>,
    pub(crate) messages_after_sync: Vec<Message>,
    pub(crate) read_states: Vec<ReadState>,
    opts: Config,
    election_elapsed: u64,
    heartbeat_elapsed: u64,
    randomized_election_ticks: u64,
    /// The node leadership is being transferred to, or [`NO_NODE`].
    pub transferee: NodeId,
    pending_config_index: u64,
    read_only: ReadOnly,
    reads_before_noop: Vec<ReadRequest>,
    /// Appends to send at the next flush (new entries or a new commit index).
    needs_flush: bool,
    /// The snapshot being received and the data bytes received of it (handed to the
    /// driver or waiting in `snapshot_chunks`); the core never holds its data.
    incoming_snapshot: Option<(SnapshotMeta, u64)>,
    /// Received chunks for the driver to write, in order, until it confirms them
    /// written (`advance`); acknowledged only after that (`messages_after_sync`).
    pub(crate) snapshot_chunks: Vec<SnapshotChunk>,
    /// Followers found to have lost their log, not yet taken by the driver.
    pub(crate) lost_logs: Vec<LostLog>,
    /// The latest snapshot's meta and length while sending it; its data is read from
    /// the store chunk by chunk, never copied whole.
    outgoing_snapshot: Option<(SnapshotMeta, u64)>,
    /// This node was listed by the configuration in force at its commit index
    /// at some point since it started (see [`Raft::removed_at`]).
    been_member: bool,
    rng: Rng,
}

impl<S: LogStore> Raft<S> {
    /// A follower restarting from `store`.
    ///
    /// # Errors
    /// An invalid config or a store failure.
    pub fn new(opts: Config, store: S, seed: u64) -> Result<Raft<S>, Error> {
        opts.validate()?;
        let initial = store.initial_state()?;
        let log = RaftLog::new(store, initial.hard_state.commit, opts.applied);
        let mut raft = Raft {
            id: opts.id,
            term: initial.hard_state.term,
            vote: initial.hard_state.vote,
            role: Role::Follower,
            leader: NO_NODE,
            membership: initial.config.clone(),
            config_history: vec![(log.compacted().0, initial.config)],
            log,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            messages: Vec::new(),
            messages_after_sync: Vec::new(),
            read_states: Vec::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_ticks: opts.election_ticks,
            transferee: NO_NODE,
            pending_config_index: 0,
            read_only: ReadOnly::default(),
            reads_before_noop: Vec::new(),
            needs_flush: false,
            incoming_snapshot: None,
            snapshot_chunks: Vec::new(),
            lost_logs: Vec::new(),
            outgoing_snapshot: None,
            been_member: false,
            rng: Rng::new(seed),
            opts,
        };
        raft.set_membership(raft.membership.clone());
        raft.load_config_entries()?;
        raft.become_follower(raft.term, NO_NODE);
        raft.note_membership();
        Ok(raft)
    }

    /// Queues a message. What the leader sends as leader (appends, heartbeats,
    /// snapshot chunks, TimeoutNow, read answers) does not acknowledge anything
    /// of its own disk and may leave at once (thesis section 10.2.1); every other
    /// message may carry a term, vote or log this node just changed, so it waits
    /// for the sync.
    fn send(&mut self, to: NodeId, term: u64, body: MessageBody) {
        let immediate = matches!(
            body,
            MessageBody::Append(_)
                | MessageBody::Heartbeat(_)
                | MessageBody::InstallSnapshot(_)
                | MessageBody::TimeoutNow
                | MessageBody::ReadIndexResponse(_)
        );
        let message = Message {
            from: self.id,
            to,
            term,
            body,
        };
        if immediate {
            self.messages.push(message);
        } else {
            self.messages_after_sync.push(message);
        }
    }

    fn reset(&mut self, term: u64) {
        if term != self.term {
            self.term = term;
            self.vote = NO_NODE;
        }
        self.leader = NO_NODE;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.randomized_election_ticks = self
            .rng
            .range(self.opts.election_ticks, 2 * self.opts.election_ticks);
        self.transferee = NO_NODE;
        self.votes.clear();
        self.read_only.reset();
        self.reads_before_noop.clear();
        self.needs_flush = false;
        let (next, persisted) = (self.log.last_index() + 1, self.log.persisted);
        let membership = &self.membership;
        self.progress.retain(|id, _| membership.contains(*id));
        for (&id, pr) in self.progress.iter_mut() {
            *pr = Progress::new(next, self.opts.inflight_count_max);
            if id == self.id {
                pr.match_index = persisted;
                pr.recent_active = true;
            }
        }
    }

    /// Becomes a follower of `leader` (or of nobody) in `term`.
    pub fn become_follower(&mut self, term: u64, leader: NodeId) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
        log::debug!("node {} follows {leader} in term {term}", self.id);
    }

    fn become_pre_candidate(&mut self) {
        self.votes.clear();
        self.leader = NO_NODE;
        self.role = Role::PreCandidate;
        log::debug!("node {} starts pre-vote in term {}", self.id, self.term);
    }

    fn become_candidate(&mut self) {
        self.reset(self.term + 1);
        self.vote = self.id;
        self.role = Role::Candidate;
        log::debug!("node {} campaigns in term {}", self.id, self.term);
    }

    fn become_leader(&mut self) {
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader = self.id;
        // Section 8: a no-op of the new term lets earlier entries commit, and
        // ReadIndex waits for it (thesis section 6.4 step 1).
        let noop = Entry {
            index: self.log.last_index() + 1,
            term: self.term,
            kind: EntryKind::Noop,
            data: Arc::from([]),
        };
        self.log.append(std::slice::from_ref(&noop));
        // No configuration change before an entry of this term commits: that
        // is the fix to single-server changes (Ongaro, raft-dev 2015; thesis
        // section 4.1 errata). Without it, a leader elected in C could append C'
        // while another server still holds an uncommitted C'' of an older term,
        // and majorities of C' and C'' need not overlap.
        self.pending_config_index = noop.index;
        self.needs_flush = true;
        log::debug!("node {} leads term {}", self.id, self.term);
    }

    /// Appends a proposal (leader only).
    ///
    /// # Errors
    /// [`Error::NotLeader`], or [`Error::ProposalDropped`] during a transfer.
    pub fn propose(&mut self, kind: EntryKind, data: Arc<[u8]>) -> Result<u64, Error> {
        if self.role != Role::Leader {
            return Err(Error::NotLeader {
                leader: (self.leader != NO_NODE).then_some(self.leader),
            });
        }
        if self.transferee != NO_NODE {
            return Err(Error::ProposalDropped);
        }
        let index = self.log.last_index() + 1;
        let entry = Entry {
            index,
            term: self.term,
            kind,
            data,
        };
        // A clone shares the payload (`Arc`): no copy.
        let config_entry = (kind == EntryKind::Config).then(|| entry.clone());
        self.log.push(entry);
        if let Some(entry) = config_entry {
            self.on_appended(index, std::slice::from_ref(&entry));
        }
        self.needs_flush = true;
        Ok(index)
    }

    /// Starts a leadership transfer to `to` (thesis section 3.10). A transfer to
    /// itself or to the current transferee does nothing. The target must be a
    /// voter of the configuration in force (the latest appended, section 4.1),
    /// so a learner, a node being removed, or a stranger is refused.
    ///
    /// # Errors
    /// [`Error::NotLeader`] on a non-leader, [`Error::NotVoter`] for a target
    /// that is not a voter.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), Error> {
        if self.role != Role::Leader {
            return Err(Error::NotLeader {
                leader: (self.leader != NO_NODE).then_some(self.leader),
            });
        }
        if to == self.id || to == self.transferee {
            return Ok(());
        }
        if !self.membership.is_voter(to) {
            return Err(Error::NotVoter(to));
        }
        self.transferee = to;
        self.election_elapsed = 0;
        if self
            .progress
            .get(&to)
            .is_some_and(|pr| pr.match_index == self.log.last_index())
        {
            self.send(to, self.term, MessageBody::TimeoutNow);
        } else {
            self.send_append(to, false)?;
        }
        Ok(())
    }

    /// Handles a message from a peer.
    ///
    /// # Errors
    /// A store failure.
    pub fn step(&mut self, m: Message) -> Result<(), Error> {
        if m.term > self.term {
            if let MessageBody::PreVote(req) | MessageBody::Vote(req) = &m.body {
                // Thesis section 4.2.3: with a live leader, ignore disruptive candidates.
                let in_lease = self.opts.check_quorum
                    && self.leader != NO_NODE
                    && self.election_elapsed < self.opts.election_ticks;
                if in_lease && !req.leadership_transfer {
                    return Ok(());
                }
            }
            match &m.body {
                MessageBody::PreVote(_) => {}
                MessageBody::PreVoteResponse(r) if r.granted => {}
                MessageBody::Append(_)
                | MessageBody::Heartbeat(_)
                | MessageBody::InstallSnapshot(_) => self.become_follower(m.term, m.from),
                _ => self.become_follower(m.term, NO_NODE),
            }
        } else if m.term < self.term {
            match m.body {
                // A stale leader learns the new term and steps down, even if
                // pre-vote/check-quorum kept this node from bumping past it.
                MessageBody::Append(_) | MessageBody::Heartbeat(_) => {
                    self.send(
                        m.from,
                        self.term,
                        MessageBody::HeartbeatResponse(HeartbeatResponse { context: 0 }),
                    );
                }
                MessageBody::PreVote(_) => {
                    self.send(
                        m.from,
                        self.term,
                        MessageBody::PreVoteResponse(VoteResponse { granted: false }),
                    );
                }
                _ => {}
            }
            return Ok(());
        }
        match m.body {
            MessageBody::PreVote(req) => self.handle_vote_request(m.from, m.term, true, req),
            MessageBody::Vote(req) => self.handle_vote_request(m.from, m.term, false, req),
            body => match self.role {
                Role::Leader => self.step_leader(m.from, body),
                Role::Candidate | Role::PreCandidate => self.step_candidate(m.from, m.term, body),
                Role::Follower => self.step_follower(m.from, body),
            },
        }
    }

    fn step_candidate(&mut self, from: NodeId, term: u64, body: MessageBody) -> Result<(), Error> {
        match body {
            MessageBody::Append(_)
            | MessageBody::Heartbeat(_)
            | MessageBody::InstallSnapshot(_) => {
                self.become_follower(term, from);
                self.step_follower(from, body)
            }
            MessageBody::PreVoteResponse(r) if self.role == Role::PreCandidate => {
                self.record_vote(from, r.granted, true).map(|_| ())
            }
            MessageBody::VoteResponse(r) if self.role == Role::Candidate => {
                self.record_vote(from, r.granted, false).map(|_| ())
            }
            _ => Ok(()),
        }
    }

    fn step_follower(&mut self, from: NodeId, body: MessageBody) -> Result<(), Error> {
        match body {
            MessageBody::Append(req) => self.handle_append(from, req),
            MessageBody::Heartbeat(hb) => {
                self.election_elapsed = 0;
                self.leader = from;
                self.log.commit_to(hb.commit);
                let body = MessageBody::HeartbeatResponse(HeartbeatResponse {
                    context: hb.context,
                });
                self.send(from, self.term, body);
                Ok(())
            }
            MessageBody::InstallSnapshot(chunk) => {
                self.election_elapsed = 0;
                self.leader = from;
                self.handle_snapshot_chunk(from, chunk);
                Ok(())
            }
            MessageBody::TimeoutNow => self.campaign(true),
            MessageBody::ReadIndexResponse(r) => {
                self.read_states.push(ReadState {
                    context: r.context,
                    index: r.index,
                });
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn step_leader(&mut self, from: NodeId, body: MessageBody) -> Result<(), Error> {
        if let Some(pr) = self.progress.get_mut(&from) {
            pr.recent_active = true;
        } else if !matches!(body, MessageBody::ReadIndex(_)) {
            return Ok(());
        }
        match body {
            MessageBody::AppendResponse(r) => self.handle_append_response(from, r),
            MessageBody::HeartbeatResponse(r) => self.handle_heartbeat_response(from, r.context),
            MessageBody::InstallSnapshotResponse(r) => self.handle_snapshot_response(from, r),
            MessageBody::ReadIndex(r) => {
                self.handle_read_request(ReadRequest {
                    context: r.context,
                    from,
                });
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A snapshot of the state machine at `index` (applied, not compacted),
    /// carrying `data`, for the driver to store and compact its log with.
    ///
    /// # Errors
    /// [`Error::SnapshotIndex`] outside `compacted..=applied`, or a store failure.
    pub fn build_snapshot(&mut self, index: u64, data: Vec<u8>) -> Result<Snapshot, Error> {
        if index > self.log.applied || index < self.log.compacted().0 {
            return Err(Error::SnapshotIndex(index));
        }
        let term = self.log.term(index)?;
        let config = self
            .config_at(index)
            .cloned()
            .ok_or(Error::SnapshotIndex(index))?;
        self.forget_configs_before(index);
        Ok(Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                config,
            },
            data,
        })
    }

    /// The per-`Ready` limit on entry bytes handed out for applying.
    pub fn committed_bytes_max(&self) -> u64 {
        self.opts.committed_bytes_max
    }

    /// Current elapsed ticks of the election timer (for tests and status).
    pub fn election_elapsed(&self) -> u64 {
        self.election_elapsed
    }
}
