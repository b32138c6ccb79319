//! The role logic of Raft: elections (with pre-vote and check-quorum),
//! replication with flow control, commit, snapshots, leadership transfer and
//! ReadIndex. Pure: it reads its log through [`LogStore`], queues outgoing
//! messages, and never touches a clock or a socket. The driver API and the
//! durability contract live in `raw_node.rs`.
//!
//! Invariants:
//! - one vote per term, persisted (via the hard state) before the vote response
//!   leaves (`messages_after_sync`);
//! - a leader counts itself for commit only up to `log.persisted`;
//! - a leader commits only an entry of its own term by counting (section 5.4.2).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::error::{Error, StoreError};
use super::log::RaftLog;
use super::message::{
    AppendRequest, AppendResponse, ConfigChange, Configuration, Entry, EntryKind, Heartbeat,
    HeartbeatResponse, Message, MessageBody, NO_NODE, NodeId, ReadIndexRequest, ReadIndexResponse,
    Snapshot, SnapshotChunk, SnapshotMeta, SnapshotResponse, VoteRequest, VoteResponse,
};
use super::progress::{Progress, ProgressState};
use super::quorum::{self, VoteResult};
use super::read_only::{ReadOnly, ReadRequest, ReadState};
use super::rng::Rng;
use super::store::LogStore;

/// Set in the context of a heartbeat that tells a removed server its removal
/// committed (ReadIndex rounds, the other contexts, are small counters).
const RELEASE_CONTEXT_BIT: u64 = 1 << 63;

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
    incoming_snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    outgoing_snapshot: Option<Snapshot>,
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

    /// Reads the `Config` entries after the compaction point (restart only).
    fn load_config_entries(&mut self) -> Result<(), Error> {
        let (mut next, last) = (self.log.first_index(), self.log.last_index());
        while next <= last {
            let batch = self
                .log
                .entries(next, last + 1, self.opts.message_bytes_max)?;
            next += batch.len() as u64;
            self.on_appended(u64::MAX, &batch);
        }
        Ok(())
    }

    /// Tracks `Config` entries among `entries`, appended after a rewrite of the
    /// log from index `from` (configurations at or after it are forgotten first).
    fn on_appended(&mut self, from: u64, entries: &[Entry]) {
        let before = self.config_history.len();
        self.config_history.retain(|(index, _)| *index < from);
        let mut changed = self.config_history.len() != before;
        for entry in entries.iter().filter(|e| e.kind == EntryKind::Config) {
            match Configuration::decode(&entry.data) {
                Ok(config) => {
                    self.config_history.push((entry.index, config));
                    changed = true;
                }
                Err(error) => log::error!(
                    "node {}: bad config entry {}: {error}",
                    self.id,
                    entry.index
                ),
            }
        }
        if changed {
            let config = self
                .config_history
                .last()
                .map(|(_, c)| c.clone())
                .unwrap_or_default();
            self.set_membership(config);
        }
    }

    /// Puts `config` in force. A leader keeps replicating to the members it
    /// drops (their progress stays, outside every quorum) until they hold the
    /// removal and know its commit ([`Raft::announce_removal`]), so a removed
    /// server learns that it was removed and its driver can stop it.
    fn set_membership(&mut self, config: Configuration) {
        let next = self.log.last_index() + 1;
        let inflight_count_max = self.opts.inflight_count_max;
        // A leader keeps every server it tracks: those the new configuration
        // drops, and those an earlier one dropped that have not been released.
        let leading = self.role == Role::Leader;
        self.progress
            .retain(|id, _| leading || config.contains(*id));
        for id in config.members() {
            self.progress
                .entry(id)
                .or_insert_with(|| Progress::new(next, inflight_count_max));
        }
        self.membership = config;
        if self.role == Role::Leader {
            self.needs_flush = true;
        }
    }

    /// Index of the `Config` entry in force (the snapshot's index, or 0, when
    /// the configuration predates the log).
    pub fn membership_index(&self) -> u64 {
        self.config_history.last().map_or(0, |(index, _)| *index)
    }

    /// The servers the configuration in force removed that hold the removal
    /// while it is committed, each with the commit index to tell it (at least
    /// the removal's index): they only need to learn that commit.
    fn departing(&self) -> Vec<(NodeId, u64)> {
        let config_index = self.membership_index();
        if self.role != Role::Leader || self.log.committed < config_index {
            return Vec::new();
        }
        self.progress
            .iter()
            .filter(|(id, pr)| {
                **id != self.id && !self.membership.contains(**id) && pr.match_index >= config_index
            })
            .map(|(&id, pr)| (id, pr.match_index.min(self.log.committed)))
            .collect()
    }

    /// Tells the servers the configuration in force removed that their removal
    /// committed, once they hold it: a heartbeat carrying a commit index that
    /// covers it and the context [`Raft::release_context`]. The leader lets each
    /// go when it answers that heartbeat ([`Raft::handle_heartbeat_response`]);
    /// until then every heartbeat round repeats it, so a lost one is resent and a
    /// removed server does learn that it was removed (its driver then stops it).
    fn announce_removal(&mut self) {
        let context = self.release_context();
        for (id, commit) in self.departing() {
            let body = MessageBody::Heartbeat(Heartbeat { commit, context });
            self.send(id, self.term, body);
        }
    }

    /// The heartbeat context that tells a removed server its removal committed:
    /// the index of the configuration in force with the top bit set, apart from
    /// the ReadIndex round numbers (small counters) and unique to this removal.
    fn release_context(&self) -> u64 {
        RELEASE_CONTEXT_BIT | self.membership_index()
    }

    /// Remembers whether the configuration in force at the commit index lists
    /// this node (the driver calls it after each `Ready`, via `advance`).
    pub(crate) fn note_membership(&mut self) {
        if self
            .config_at(self.log.committed)
            .is_some_and(|config| config.contains(self.id))
        {
            self.been_member = true;
        }
    }

    /// The index of the committed configuration that removed this node, once
    /// this node knows it: the configuration in force does not list it, is
    /// committed, and a committed configuration before it did list it (one still
    /// in its log, or one this node held committed earlier). A
    /// configuration that listed it but was never committed (a truncated
    /// `AddLearner`) does not count, nor does a snapshot from before its
    /// addition that a joining node installs: neither means it was removed.
    pub fn removed_at(&self) -> Option<u64> {
        let index = self.membership_index();
        if self.membership.contains(self.id)
            || self.membership.voters.is_empty()
            || self.log.committed < index
        {
            return None;
        }
        // Every configuration in the history precedes the committed one in force,
        // so it is committed too.
        let listed_before = self
            .config_history
            .iter()
            .any(|(_, config)| config.contains(self.id));
        (listed_before || self.been_member).then_some(index)
    }

    /// The membership in force at `index`, if still known.
    pub fn config_at(&self, index: u64) -> Option<&Configuration> {
        self.config_history
            .iter()
            .rev()
            .find(|(at, _)| *at <= index)
            .map(|(_, c)| c)
    }

    fn forget_configs_before(&mut self, index: u64) {
        let keep_from = self
            .config_history
            .iter()
            .rposition(|(at, _)| *at <= index)
            .unwrap_or(0);
        self.config_history.drain(..keep_from);
    }

    // ----- output -----

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

    // ----- role changes -----

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

    fn promotable(&self) -> bool {
        self.membership.is_voter(self.id)
    }

    /// Starts an election now (pre-vote first when enabled and not a transfer).
    ///
    /// # Errors
    /// A store failure.
    pub fn campaign(&mut self, transfer: bool) -> Result<(), Error> {
        if self.role == Role::Leader || !self.promotable() {
            return Ok(());
        }
        self.election_elapsed = 0;
        self.randomized_election_ticks = self
            .rng
            .range(self.opts.election_ticks, 2 * self.opts.election_ticks);
        let pre_vote = self.opts.pre_vote && !transfer;
        let term = if pre_vote {
            self.become_pre_candidate();
            self.term + 1
        } else {
            self.become_candidate();
            self.term
        };
        if self.record_vote(self.id, true, pre_vote)? {
            return Ok(());
        }
        self.request_votes(term, pre_vote, transfer)
    }

    /// Sends a (pre-)vote request for `term` to every other voter.
    ///
    /// # Errors
    /// A store failure.
    fn request_votes(&mut self, term: u64, pre_vote: bool, transfer: bool) -> Result<(), Error> {
        let request = VoteRequest {
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term()?,
            leadership_transfer: transfer,
        };
        let voters: Vec<NodeId> = self
            .membership
            .voters
            .iter()
            .copied()
            .filter(|&id| id != self.id)
            .collect();
        for id in voters {
            let body = if pre_vote {
                MessageBody::PreVote(request)
            } else {
                MessageBody::Vote(request)
            };
            self.send(id, term, body);
        }
        Ok(())
    }

    /// Counts a vote; returns true when the election ended (won or lost).
    ///
    /// # Errors
    /// A store failure.
    fn record_vote(&mut self, from: NodeId, granted: bool, pre_vote: bool) -> Result<bool, Error> {
        self.votes.entry(from).or_insert(granted);
        match quorum::vote_result(&self.membership, |id| self.votes.get(&id).copied()) {
            VoteResult::Won if pre_vote => {
                self.become_candidate();
                self.campaign_after_pre_vote()?;
            }
            VoteResult::Won => self.become_leader(),
            VoteResult::Lost => self.become_follower(self.term, NO_NODE),
            VoteResult::Pending => return Ok(false),
        }
        Ok(true)
    }

    /// The real election after a won pre-vote (already a candidate).
    fn campaign_after_pre_vote(&mut self) -> Result<(), Error> {
        if self.record_vote(self.id, true, false)? {
            return Ok(());
        }
        self.request_votes(self.term, false, false)
    }

    // ----- inputs -----

    /// Advances logical time by one tick.
    ///
    /// # Errors
    /// A store failure.
    pub fn tick(&mut self) -> Result<(), Error> {
        if self.role == Role::Leader {
            return self.tick_leader();
        }
        self.election_elapsed += 1;
        if self.promotable() && self.election_elapsed >= self.randomized_election_ticks {
            self.campaign(false)?;
        }
        Ok(())
    }

    fn tick_leader(&mut self) -> Result<(), Error> {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.opts.election_ticks {
            self.election_elapsed = 0;
            if self.opts.check_quorum && !self.quorum_active() {
                log::debug!("node {} lost contact with a majority, steps down", self.id);
                self.become_follower(self.term, NO_NODE);
                return Ok(());
            }
            // Thesis section 3.10: give up a transfer after an election timeout.
            self.transferee = NO_NODE;
        }
        if self.heartbeat_elapsed >= self.opts.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat(self.read_only.pending_context());
        }
        Ok(())
    }

    /// Whether a majority was heard from since the last call; resets the marks.
    fn quorum_active(&mut self) -> bool {
        let id = self.id;
        let active = quorum::has_majority(&self.membership, |peer| {
            peer == id || self.progress.get(&peer).is_some_and(|pr| pr.recent_active)
        });
        for (&peer, pr) in self.progress.iter_mut() {
            pr.recent_active = peer == id;
        }
        active
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

    /// Proposes a single-server membership change, effective once appended.
    ///
    /// # Errors
    /// [`Error::ConfigChangePending`] until the previous change committed,
    /// [`Error::InvalidConfigChange`], or the errors of [`Raft::propose`].
    pub fn propose_config_change(&mut self, change: ConfigChange) -> Result<u64, Error> {
        self.propose_config_change_with_info(change, Vec::new())
    }

    /// [`Raft::propose_config_change`], attaching `info` (opaque driver data such
    /// as addresses; empty for none) to the member the change adds or keeps.
    ///
    /// # Errors
    /// As [`Raft::propose_config_change`].
    pub fn propose_config_change_with_info(
        &mut self,
        change: ConfigChange,
        info: Vec<u8>,
    ) -> Result<u64, Error> {
        if self.role == Role::Leader && self.pending_config_index > self.log.committed {
            return Err(Error::ConfigChangePending);
        }
        let config = self
            .membership
            .apply(change)
            .ok_or(Error::InvalidConfigChange)?;
        let config = match change {
            ConfigChange::AddVoter(id) | ConfigChange::AddLearner(id) if !info.is_empty() => {
                config.with_info(id, info)
            }
            _ => config,
        };
        if let ConfigChange::PromoteLearner(id) = change
            && let Some(lag) = self.learner_lag(id)
            && lag > self.opts.promote_distance_max
        {
            let last_index = self.log.last_index();
            return Err(Error::LearnerBehind {
                id,
                match_index: last_index - lag,
                last_index,
            });
        }
        let index = self.propose(EntryKind::Config, config.encode().into())?;
        self.pending_config_index = index;
        Ok(index)
    }

    /// Starts a linearizable read (thesis section 6.4).
    ///
    /// # Errors
    /// [`Error::NotLeader`] when no leader is known to forward to.
    pub fn read_index(&mut self, context: Vec<u8>) -> Result<(), Error> {
        if self.role == Role::Leader {
            self.handle_read_request(ReadRequest {
                context,
                from: self.id,
            });
            return Ok(());
        }
        if self.leader == NO_NODE {
            return Err(Error::NotLeader { leader: None });
        }
        self.send(
            self.leader,
            self.term,
            MessageBody::ReadIndex(ReadIndexRequest { context }),
        );
        Ok(())
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

    /// Section 5.2 and 5.4.1: one vote per term, only for an up-to-date log.
    fn handle_vote_request(
        &mut self,
        from: NodeId,
        term: u64,
        pre_vote: bool,
        req: VoteRequest,
    ) -> Result<(), Error> {
        let can_vote = self.vote == from
            || (self.vote == NO_NODE && self.leader == NO_NODE)
            || (pre_vote && term > self.term);
        let up_to_date = self.opts.vote_for_stale_logs()
            || self
                .log
                .is_up_to_date(req.last_log_index, req.last_log_term)?;
        let granted = can_vote && up_to_date;
        if pre_vote {
            let reply_term = if granted { term } else { self.term };
            self.send(
                from,
                reply_term,
                MessageBody::PreVoteResponse(VoteResponse { granted }),
            );
        } else {
            if granted {
                self.election_elapsed = 0;
                self.vote = from;
            }
            self.send(
                from,
                self.term,
                MessageBody::VoteResponse(VoteResponse { granted }),
            );
        }
        Ok(())
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

    /// Figure 2, AppendEntries receiver, with the conflict hint of section 5.3.
    fn handle_append(&mut self, from: NodeId, req: AppendRequest) -> Result<(), Error> {
        self.election_elapsed = 0;
        self.leader = from;
        let committed = self.log.committed;
        let response = if req.prev_log_index < committed {
            AppendResponse {
                reject: false,
                index: committed,
                conflict_term: 0,
                conflict_index: 0,
            }
        } else {
            match self.log.maybe_append(
                req.prev_log_index,
                req.prev_log_term,
                req.commit,
                &req.entries,
            )? {
                Some((last_new, rewritten_from)) => {
                    if let Some(from_index) = rewritten_from {
                        let offset = (from_index - req.prev_log_index - 1) as usize;
                        self.on_appended(from_index, &req.entries[offset..]);
                    }
                    AppendResponse {
                        reject: false,
                        index: last_new,
                        conflict_term: 0,
                        conflict_index: 0,
                    }
                }
                None => {
                    let hint = req.prev_log_index.min(self.log.last_index());
                    let (conflict_index, conflict_term) =
                        self.log.find_conflict_by_term(hint, req.prev_log_term);
                    AppendResponse {
                        reject: true,
                        index: req.prev_log_index,
                        conflict_term,
                        conflict_index,
                    }
                }
            }
        };
        self.send(from, self.term, MessageBody::AppendResponse(response));
        Ok(())
    }

    /// Figure 13 receiver, with offset-based resumption: the answer always says
    /// how many bytes of this snapshot are held, so a lost chunk is resent.
    fn handle_snapshot_chunk(&mut self, from: NodeId, chunk: SnapshotChunk) {
        let index = chunk.meta.index;
        if index <= self.log.committed {
            let response = SnapshotResponse {
                index,
                offset: chunk.offset,
                done: true,
            };
            self.send(
                from,
                self.term,
                MessageBody::InstallSnapshotResponse(response),
            );
            return;
        }
        let held = match &self.incoming_snapshot {
            Some((meta, data)) if *meta == chunk.meta => data.len() as u64,
            _ => 0,
        };
        if chunk.offset != held {
            let response = SnapshotResponse {
                index,
                offset: held,
                done: false,
            };
            self.send(
                from,
                self.term,
                MessageBody::InstallSnapshotResponse(response),
            );
            return;
        }
        let (meta, mut data) = match self.incoming_snapshot.take() {
            Some((meta, data)) if held > 0 => (meta, data),
            _ => (chunk.meta, Vec::new()),
        };
        data.extend_from_slice(&chunk.data);
        let offset = data.len() as u64;
        if chunk.done {
            self.restore(Snapshot { meta, data });
        } else {
            self.incoming_snapshot = Some((meta, data));
        }
        let response = SnapshotResponse {
            index,
            offset,
            done: chunk.done,
        };
        self.send(
            from,
            self.term,
            MessageBody::InstallSnapshotResponse(response),
        );
    }

    /// Installs a complete snapshot, dropping the conflicting log (Figure 13
    /// steps 6-8), unless the log already holds its last entry.
    fn restore(&mut self, snapshot: Snapshot) {
        let meta = &snapshot.meta;
        if self.log.match_term(meta.index, meta.term) {
            self.log.commit_to(meta.index);
            return;
        }
        self.config_history = vec![(meta.index, meta.config.clone())];
        self.set_membership(meta.config.clone());
        self.log.restore(snapshot);
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

    fn handle_append_response(&mut self, from: NodeId, r: AppendResponse) -> Result<(), Error> {
        if r.reject {
            let hint = if r.conflict_term > 0 {
                self.log
                    .find_conflict_by_term(r.conflict_index, r.conflict_term)
                    .0
            } else {
                r.conflict_index
            };
            let Some(pr) = self.progress.get_mut(&from) else {
                return Ok(());
            };
            if pr.maybe_decrease_to(r.index, hint) {
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
                self.send_append(from, false)?;
            }
            return Ok(());
        }
        let Some(pr) = self.progress.get_mut(&from) else {
            return Ok(());
        };
        if !pr.maybe_update(r.index) {
            return Ok(());
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot if pr.match_index >= pr.snapshot_index => pr.become_probe(),
            ProgressState::Snapshot => {}
            ProgressState::Replicate => pr.inflights.free_to(r.index),
        }
        let caught_up = pr.match_index == self.log.last_index();
        if !self.maybe_commit()? && !self.membership.contains(from) {
            self.announce_removal();
        }
        self.needs_flush = true;
        if from == self.transferee && caught_up {
            self.send(from, self.term, MessageBody::TimeoutNow);
        }
        Ok(())
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, context: u64) -> Result<(), Error> {
        if context & RELEASE_CONTEXT_BIT != 0 {
            if context == self.release_context() && !self.membership.contains(from) {
                self.progress.remove(&from);
                log::info!(
                    "node {}: {from} knows of its removal at {}, no longer replicated to",
                    self.id,
                    self.membership_index()
                );
            }
            return Ok(());
        }
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return Ok(());
        };
        pr.probe_sent = false;
        if pr.state == ProgressState::Replicate && pr.inflights.full() {
            // An append may have been lost; make room so a probe can go out.
            pr.inflights.reset();
        }
        if pr.state == ProgressState::Snapshot {
            self.send_snapshot_chunk(from)?;
        } else if pr.match_index < last {
            self.send_append(from, true)?;
        }
        if context != 0 {
            for (request, index) in self.read_only.ack(&self.membership, self.id, from, context) {
                self.respond_read(request, index);
            }
        }
        Ok(())
    }

    fn handle_snapshot_response(&mut self, from: NodeId, r: SnapshotResponse) -> Result<(), Error> {
        let Some(pr) = self.progress.get_mut(&from) else {
            return Ok(());
        };
        if pr.state != ProgressState::Snapshot || r.index != pr.snapshot_index {
            return Ok(());
        }
        if r.done {
            pr.maybe_update(r.index);
            pr.become_probe();
            self.maybe_commit()?;
            self.needs_flush = true;
            return Ok(());
        }
        if r.offset == pr.snapshot_offset {
            return Ok(()); // a duplicate answer; the heartbeat path resends if lost
        }
        pr.snapshot_offset = r.offset;
        self.send_snapshot_chunk(from)
    }

    fn handle_read_request(&mut self, request: ReadRequest) {
        if !self.committed_in_current_term() {
            self.reads_before_noop.push(request);
        } else if quorum::has_majority(&self.membership, |id| id == self.id) {
            self.respond_read(request, self.log.committed);
        } else {
            self.read_only.add(request);
        }
    }

    fn respond_read(&mut self, request: ReadRequest, index: u64) {
        if request.from == self.id {
            self.read_states.push(ReadState {
                context: request.context,
                index,
            });
        } else {
            let body = MessageBody::ReadIndexResponse(ReadIndexResponse {
                context: request.context,
                index,
            });
            self.send(request.from, self.term, body);
        }
    }

    fn committed_in_current_term(&self) -> bool {
        self.log.term(self.log.committed) == Ok(self.term)
    }

    /// Section 5.3/5.4.2: commit the majority match index if it is of this term.
    fn maybe_commit(&mut self) -> Result<bool, Error> {
        let majority = quorum::committed_index(&self.membership, |id| {
            self.progress.get(&id).map_or(0, |pr| pr.match_index)
        });
        let index = majority.min(self.log.last_index());
        let previous = self.log.committed;
        if index <= previous {
            return Ok(false);
        }
        if !self.opts.commit_old_terms() && self.log.term(index)? != self.term {
            return Ok(false);
        }
        self.log.commit_to(index);
        self.needs_flush = true;
        if self.committed_in_current_term() {
            for request in std::mem::take(&mut self.reads_before_noop) {
                self.handle_read_request(request);
            }
        }
        // The removal just committed: tell the removed servers that hold it (later
        // acks of theirs and every heartbeat round repeat it until they answer).
        if (previous + 1..=index).contains(&self.membership_index()) {
            self.announce_removal();
        }
        self.maybe_step_down_removed()?;
        Ok(true)
    }

    /// Thesis section 4.2.2: a leader that removed itself keeps managing the
    /// cluster (without counting itself) until the configuration without it
    /// commits, then steps down. Before it does, it sends the new commit index
    /// to everyone and a TimeoutNow to the most up-to-date voter, so a successor
    /// is elected at once instead of after an election timeout (section 3.10).
    /// As a follower outside the configuration it never campaigns again, and no
    /// leader sends to it, so it sends no more heartbeats or appends.
    fn maybe_step_down_removed(&mut self) -> Result<(), Error> {
        let config_index = self.membership_index();
        if self.membership.is_voter(self.id) || config_index > self.log.committed {
            return Ok(());
        }
        self.flush()?;
        let last = self.log.last_index();
        let successor = self
            .membership
            .voters
            .iter()
            .filter_map(|id| self.progress.get(id).map(|pr| (pr.match_index, *id)))
            .filter(|&(match_index, _)| match_index == last)
            .max();
        if let Some((_, id)) = successor {
            self.send(id, self.term, MessageBody::TimeoutNow);
        }
        log::info!(
            "node {} committed its own removal at {config_index}, steps down",
            self.id
        );
        self.become_follower(self.term, NO_NODE);
        Ok(())
    }

    /// Entries the learner `id` lacks compared with the leader's last index;
    /// `None` unless this node leads and `id` is a learner.
    pub fn learner_lag(&self, id: NodeId) -> Option<u64> {
        if self.role != Role::Leader || !self.membership.is_learner(id) {
            return None;
        }
        let last = self.log.last_index();
        let match_index = self.progress.get(&id).map_or(0, |pr| pr.match_index);
        Some(last - match_index.min(last))
    }

    /// The configured promotion distance ([`Config::promote_distance_max`]).
    pub fn promote_distance_max(&self) -> u64 {
        self.opts.promote_distance_max
    }

    // ----- sending -----

    /// Sends the next append to `to` unless its progress is paused; returns
    /// whether a message went out. Falls back to a snapshot when the entries
    /// it needs are compacted.
    fn send_append(&mut self, to: NodeId, send_if_empty: bool) -> Result<bool, Error> {
        let Some(pr) = self.progress.get(&to) else {
            return Ok(false);
        };
        if to == self.id || pr.is_paused() {
            return Ok(false);
        }
        let (next, last) = (pr.next_index, self.log.last_index());
        let prev_term = self.log.term(next - 1);
        let entries = self
            .log
            .entries(next, last + 1, self.opts.message_bytes_max);
        match (prev_term, entries) {
            (Ok(prev_log_term), Ok(entries)) => {
                if entries.is_empty() && !send_if_empty {
                    return Ok(false);
                }
                if let Some(pr) = self.progress.get_mut(&to) {
                    pr.sent_append(entries.last().map(|e| e.index));
                }
                let req = AppendRequest {
                    prev_log_index: next - 1,
                    prev_log_term,
                    entries,
                    commit: self.log.committed,
                };
                self.send(to, self.term, MessageBody::Append(req));
                Ok(true)
            }
            (Err(StoreError::Compacted(_)), _) | (_, Err(StoreError::Compacted(_))) => {
                self.send_snapshot_chunk(to)?;
                Ok(true)
            }
            (Err(error), _) | (_, Err(error)) => Err(error.into()),
        }
    }

    /// Sends the chunk at the acknowledged offset of the latest snapshot,
    /// switching `to` to the snapshot state if needed.
    fn send_snapshot_chunk(&mut self, to: NodeId) -> Result<(), Error> {
        let compacted = self.log.store.compacted().0;
        if self
            .outgoing_snapshot
            .as_ref()
            .is_none_or(|s| s.meta.index != compacted)
        {
            self.outgoing_snapshot = Some(self.log.store.snapshot()?);
        }
        let Some(snapshot) = &self.outgoing_snapshot else {
            return Ok(());
        };
        let Some(pr) = self.progress.get_mut(&to) else {
            return Ok(());
        };
        if pr.state != ProgressState::Snapshot || pr.snapshot_index != snapshot.meta.index {
            pr.become_snapshot(snapshot.meta.index);
        }
        let len = snapshot.data.len() as u64;
        let offset = pr.snapshot_offset.min(len);
        let end = offset
            .saturating_add(self.opts.snapshot_chunk_bytes_max)
            .min(len);
        let chunk = SnapshotChunk {
            meta: snapshot.meta.clone(),
            offset,
            data: snapshot.data[offset as usize..end as usize].to_vec(),
            done: end == len,
        };
        self.send(to, self.term, MessageBody::InstallSnapshot(chunk));
        Ok(())
    }

    /// A heartbeat to every peer; those whose removal committed and who hold
    /// it get the release context instead (see [`Raft::announce_removal`]).
    fn broadcast_heartbeat(&mut self, read_context: u64) {
        let departing = self.departing();
        let release_context = self.release_context();
        let peers: Vec<(NodeId, u64)> = self
            .progress
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(&id, pr)| (id, pr.match_index.min(self.log.committed)))
            .collect();
        for (id, commit) in peers {
            let context = if departing.iter().any(|(d, _)| *d == id) {
                release_context
            } else {
                read_context
            };
            self.send(
                id,
                self.term,
                MessageBody::Heartbeat(Heartbeat { commit, context }),
            );
        }
    }

    /// Whether [`Raft::flush`] has work.
    pub fn needs_flush(&self) -> bool {
        self.role == Role::Leader && (self.needs_flush || self.read_only.has_open())
    }

    /// Sends what proposals, commits and reads since the last flush call for:
    /// one append per follower covering all new entries (batching), and one
    /// heartbeat round for all the reads queued meanwhile.
    ///
    /// # Errors
    /// A store failure.
    pub fn flush(&mut self) -> Result<(), Error> {
        if self.role != Role::Leader {
            return Ok(());
        }
        if let Some(context) = self.read_only.start_round(self.log.committed) {
            self.broadcast_heartbeat(context);
        }
        if std::mem::take(&mut self.needs_flush) {
            let peers: Vec<NodeId> = self
                .progress
                .keys()
                .copied()
                .filter(|&id| id != self.id)
                .collect();
            for id in peers {
                let mut send_if_empty = true;
                while self.send_append(id, send_if_empty)? {
                    send_if_empty = false;
                }
            }
        }
        Ok(())
    }

    /// The driver persisted everything handed out: the leader may now count
    /// itself for those entries.
    ///
    /// # Errors
    /// A store failure.
    pub fn on_persisted(&mut self) -> Result<(), Error> {
        if self.role != Role::Leader {
            return Ok(());
        }
        let persisted = self.log.persisted;
        if let Some(pr) = self.progress.get_mut(&self.id)
            && pr.maybe_update(persisted)
        {
            self.maybe_commit()?;
        }
        Ok(())
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
