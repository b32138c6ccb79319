//! `RawNode`: the driver's interface to the consensus core, and the `Ready`
//! contract.
//!
//! The driver (the server's event loop, the simulation, a test harness) owns a
//! `RawNode` and loops:
//! 1. feed inputs: `step(message)`, `tick()`, `propose(data)`, `read_index(ctx)`,
//!    `transfer_leader(id)`, `propose_config_change(change)`;
//! 2. if `has_ready()`, take `ready()`;
//! 3. send `Ready.messages` right away (the leader's appends, heartbeats,
//!    snapshot chunks: they acknowledge nothing of the local disk, thesis
//!    section 10.2.1);
//! 4. write `Ready.snapshot_chunks`, install `Ready.snapshot` into the store (its
//!    data: the chunks written), append `Ready.entries` (truncating
//!    the stored suffix from `entries[0].index` first, see `store.rs`), write
//!    `Ready.hard_state`, and MAKE ALL OF IT DURABLE (one sync);
//! 5. ONLY THEN send `Ready.messages_after_sync`: vote responses, append and
//!    snapshot acknowledgements, and everything else that carries a term, vote
//!    or log this node may have just changed. SENDING THEM BEFORE THE SYNC CAN
//!    LOSE COMMITTED ENTRIES OR ELECT TWO LEADERS IN ONE TERM AFTER A CRASH;
//! 6. apply `Ready.committed_entries` in order (and restore the state machine
//!    from `Ready.snapshot` if set); serve each `Ready.read_states` entry once
//!    the state machine applied its index;
//! 7. call `advance(ready)`.
//!
//! THE DRIVER MUST CALL `advance` BEFORE ANY OTHER CALL ON THE NODE once it
//! took a `Ready`. A crash between `ready()` and the sync loses only what
//! step 4 had not yet made durable, which is safe because nothing that depends
//! on it has left the node.
//!
//! The leader counts itself toward commit only for entries confirmed durable by
//! `advance`, so it never commits on an unsynced local write.

use std::sync::Arc;

use super::core::{Config, Raft, Role};
use super::error::Error;
use super::message::{
    ConfigChange, Configuration, Entry, EntryKind, HardState, Message, NodeId, Snapshot,
    SnapshotChunk, SnapshotMeta,
};
use super::progress::{LostLog, ProgressState};
use super::read_only::ReadState;
use super::store::LogStore;

/// What the node needs the driver to do; see the module docs for the order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ready {
    /// Messages that may be sent before the sync.
    pub messages: Vec<Message>,
    /// Messages that may be sent only after the sync.
    pub messages_after_sync: Vec<Message>,
    /// Entries to append to the store (truncating from `entries[0].index`).
    pub entries: Vec<Entry>,
    /// The hard state to persist, when it changed.
    pub hard_state: Option<HardState>,
    /// Committed entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// Chunks of a snapshot being received, in order, to write where the store
    /// keeps the one it receives: a chunk at offset 0 starts it afresh, a chunk
    /// already written (a retry) is skipped. Written before the sync: their
    /// acknowledgements are among `messages_after_sync`.
    pub snapshot_chunks: Vec<SnapshotChunk>,
    /// The snapshot whose chunks were all received (the last one in
    /// `snapshot_chunks` of this Ready): install it, made durable by the sync, in the
    /// store and the state machine.
    pub snapshot: Option<SnapshotMeta>,
    /// Confirmed linearizable reads.
    pub read_states: Vec<ReadState>,
}

/// The leader's view of one peer, for status output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer.
    pub id: NodeId,
    /// Highest index known replicated there.
    pub match_index: u64,
    /// Next index to send.
    pub next_index: u64,
    /// Flow-control state.
    pub state: ProgressState,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// It lost entries it had acknowledged ([`LostLog`]).
    pub lost_log: bool,
}

/// A snapshot of the node's state for the CLI and the simulation's checker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Current role.
    pub role: Role,
    /// Current term.
    pub term: u64,
    /// Vote in `term`.
    pub vote: NodeId,
    /// Known leader, or `NO_NODE`.
    pub leader: NodeId,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// Last index durable in the store.
    pub persisted: u64,
    /// Last index of the log.
    pub last_index: u64,
    /// The membership in force.
    pub config: Configuration,
    /// Index of the `Config` entry that put `config` in force (0 for the
    /// bootstrap configuration).
    pub config_index: u64,
    /// Per-peer progress (leader only; empty otherwise).
    pub progress: Vec<PeerStatus>,
}

/// Where this node stands in the configuration in force (its own view).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Votes and counts for commit.
    Voter,
    /// Receives the log; neither votes nor counts.
    Learner,
    /// Started with an empty configuration (`--join`) and no `Config` entry
    /// yet: it never campaigns and waits for a leader to add it.
    Joining,
    /// The configuration in force does not contain it: it was removed and
    /// the driver may shut it down (a leader that removed itself gets here once
    /// the removal committed).
    Removed,
}

impl Status {
    /// This node's place in the configuration it knows.
    pub fn member_state(&self) -> MemberState {
        if self.config.is_voter(self.id) {
            MemberState::Voter
        } else if self.config.is_learner(self.id) {
            MemberState::Learner
        } else if self.config.voters.is_empty() {
            MemberState::Joining
        } else {
            MemberState::Removed
        }
    }
}

/// The driver-facing Raft node over a [`LogStore`].
#[derive(Debug)]
pub struct RawNode<S> {
    core: Raft<S>,
    prev_hard_state: HardState,
}

impl<S: LogStore> RawNode<S> {
    /// A node (re)starting as a follower from `store`, drawing its election
    /// timeouts from a PRNG seeded with `rng_seed`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] or a store failure.
    pub fn new(config: Config, store: S, rng_seed: u64) -> Result<RawNode<S>, Error> {
        let core = Raft::new(config, store, rng_seed)?;
        let prev_hard_state = core.log.store.initial_state()?.hard_state;
        Ok(RawNode {
            core,
            prev_hard_state,
        })
    }

    /// Handles a message from a peer.
    ///
    /// # Errors
    /// A store failure.
    pub fn step(&mut self, message: Message) -> Result<(), Error> {
        self.core.step(message)
    }

    /// Advances logical time by one tick.
    ///
    /// # Errors
    /// A store failure.
    pub fn tick(&mut self) -> Result<(), Error> {
        self.core.tick()
    }

    /// Starts an election at once (bootstrap, tests).
    ///
    /// # Errors
    /// A store failure.
    pub fn campaign(&mut self) -> Result<(), Error> {
        self.core.campaign(false)
    }

    /// Proposes an application command; returns the index it will have if it commits.
    ///
    /// The payload is stored once and shared from then on (by the `Ready`, the
    /// appends to each follower and the committed entries), so a caller holding
    /// the bytes in a buffer passes `Arc::from(slice)`: that is the only copy.
    ///
    /// # Errors
    /// [`Error::NotLeader`] with a leader hint, [`Error::ProposalDropped`] during a transfer.
    pub fn propose(&mut self, data: impl Into<Arc<[u8]>>) -> Result<u64, Error> {
        self.core.propose(EntryKind::Normal, data.into())
    }

    /// Proposes a single-server membership change (thesis section 4.1): the
    /// new configuration is in force on this leader as soon as it is appended,
    /// and on each follower as soon as it appends it. Returns the entry's index;
    /// the change is done once that index commits (the driver sees the `Config`
    /// entry among the committed entries).
    ///
    /// Rules: one change at a time (the previous one, and an entry of the
    /// leader's term, must have committed); a learner is promoted only within
    /// [`Config::promote_distance_max`] entries of the leader's last index
    /// (see [`RawNode::learner_lag`]); removing the leader is allowed: it keeps
    /// leading until the removal commits, then steps down.
    ///
    /// # Errors
    /// As [`RawNode::propose`], plus [`Error::ConfigChangePending`],
    /// [`Error::InvalidConfigChange`] (adding a member, promoting a non-learner,
    /// removing a non-member or the last voter) and [`Error::LearnerBehind`].
    pub fn propose_config_change(&mut self, change: ConfigChange) -> Result<u64, Error> {
        self.core.propose_config_change(change)
    }

    /// [`RawNode::propose_config_change`] attaching `info`, opaque driver data
    /// (raftkv: the member's addresses), to the member that `AddLearner` or
    /// `AddVoter` adds; it then travels with every later configuration
    /// ([`Configuration::info`]) until that member is removed.
    ///
    /// # Errors
    /// As [`RawNode::propose_config_change`].
    pub fn propose_config_change_with_info(
        &mut self,
        change: ConfigChange,
        info: Vec<u8>,
    ) -> Result<u64, Error> {
        self.core.propose_config_change_with_info(change, info)
    }

    /// On the leader, how many entries the learner `id` lacks (leader's last
    /// index minus the learner's match index); `None` when this node does not
    /// lead or `id` is not a learner. A driver that wants to promote a learner
    /// "when it is ready" polls this until it is at most
    /// [`RawNode::promote_distance_max`].
    pub fn learner_lag(&self, id: NodeId) -> Option<u64> {
        self.core.learner_lag(id)
    }

    /// The configured [`Config::promote_distance_max`].
    pub fn promote_distance_max(&self) -> u64 {
        self.core.promote_distance_max()
    }

    /// Starts a linearizable read identified by `context`; the answer arrives as
    /// a [`ReadState`] in a later `Ready` (never, if leadership is lost meanwhile:
    /// callers time reads out).
    ///
    /// # Errors
    /// [`Error::NotLeader`] when no leader is known.
    pub fn read_index(&mut self, context: Vec<u8>) -> Result<(), Error> {
        self.core.read_index(context)
    }

    /// Transfers leadership to `to` (leader only); proposals, configuration
    /// changes included, are refused until it succeeds or an election timeout
    /// passes.
    ///
    /// # Errors
    /// [`Error::NotLeader`], [`Error::NotVoter`] when `to` is not a voter.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), Error> {
        self.core.transfer_leader(to)
    }

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.core.term,
            vote: self.core.vote,
            commit: self.core.log.committed,
        }
    }

    /// Whether [`RawNode::ready`] has anything to hand out.
    pub fn has_ready(&self) -> bool {
        let core = &self.core;
        core.needs_flush()
            || !core.messages.is_empty()
            || !core.messages_after_sync.is_empty()
            || !core.read_states.is_empty()
            || !core.log.unstable_entries().is_empty()
            || !core.snapshot_chunks.is_empty()
            || core.log.unstable_snapshot().is_some()
            || core.log.has_next_committed()
            || self.hard_state() != self.prev_hard_state
    }

    /// Takes the pending work; see the module docs for what to do with it.
    ///
    /// # Errors
    /// A store failure.
    pub fn ready(&mut self) -> Result<Ready, Error> {
        self.core.flush()?;
        let hard_state = self.hard_state();
        let changed = (hard_state != self.prev_hard_state).then_some(hard_state);
        self.prev_hard_state = hard_state;
        let core = &mut self.core;
        Ok(Ready {
            messages: std::mem::take(&mut core.messages),
            messages_after_sync: std::mem::take(&mut core.messages_after_sync),
            entries: core.log.unstable_entries().to_vec(),
            hard_state: changed,
            committed_entries: core.log.next_committed(core.committed_bytes_max())?,
            snapshot_chunks: core.snapshot_chunks.clone(),
            snapshot: core.log.unstable_snapshot().cloned(),
            read_states: std::mem::take(&mut core.read_states),
        })
    }

    /// Acknowledges that the driver handled `ready` (made it durable, sent,
    /// applied).
    ///
    /// # Errors
    /// A store failure.
    pub fn advance(&mut self, ready: Ready) -> Result<(), Error> {
        let written = ready
            .snapshot_chunks
            .len()
            .min(self.core.snapshot_chunks.len());
        self.core.snapshot_chunks.drain(..written);
        let log = &mut self.core.log;
        log.on_persisted(
            ready.snapshot.map(|meta| meta.index),
            ready.entries.last().map(|e| e.index),
        );
        if let Some(last) = ready.committed_entries.last() {
            log.applied = log.applied.max(last.index);
        }
        self.core.note_membership();
        self.core.on_persisted()
    }

    /// The index of the committed configuration that removed this node, once it
    /// knows it ([`Raft::removed_at`]); the driver then stops the node.
    pub fn removed_at(&self) -> Option<u64> {
        self.core.removed_at()
    }

    /// A snapshot at the applied index `index` with the state machine image
    /// `data`; the driver stores it and compacts its log (`MemStore::compact`).
    ///
    /// # Errors
    /// [`Error::SnapshotIndex`] when `index` is not applied or already compacted.
    pub fn build_snapshot(&mut self, index: u64, data: Vec<u8>) -> Result<Snapshot, Error> {
        self.core.build_snapshot(index, data)
    }

    /// The followers this leader found to have lost their log since the last call
    /// (each once per leadership), for the driver to report.
    pub fn take_lost_logs(&mut self) -> Vec<LostLog> {
        std::mem::take(&mut self.core.lost_logs)
    }

    /// The node's state.
    pub fn status(&self) -> Status {
        let core = &self.core;
        let progress = if core.role == Role::Leader {
            core.progress
                .iter()
                .map(|(&id, pr)| PeerStatus {
                    id,
                    match_index: pr.match_index,
                    next_index: pr.next_index,
                    state: pr.state,
                    recent_active: pr.recent_active,
                    lost_log: pr.lost_log,
                })
                .collect()
        } else {
            Vec::new()
        };
        Status {
            id: core.id,
            role: core.role,
            term: core.term,
            vote: core.vote,
            leader: core.leader,
            commit: core.log.committed,
            applied: core.log.applied,
            persisted: core.log.persisted,
            last_index: core.log.last_index(),
            config: core.membership.clone(),
            config_index: core.membership_index(),
            progress,
        }
    }

    /// The store (read access, e.g. for the simulation's checker).
    pub fn store(&self) -> &S {
        &self.core.log.store
    }

    /// The store, for the driver's writes (steps 4 of the module docs, compaction).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.core.log.store
    }

    /// The core, for white-box tests and the simulation's checker.
    pub fn raft(&self) -> &Raft<S> {
        &self.core
    }
}
