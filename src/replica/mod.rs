//! One replica of the replicated state machine, without IO: the consensus core
//! (`RawNode`), the kv state machine, the clients waiting on them and the snapshot
//! schedule. The server wraps it with sockets, the WAL and a snapshot thread
//! (`server::node`); the deterministic simulation (`tests/sim`) wraps the same type with
//! an in-memory log, a disk that loses unsynced writes and a stepped snapshot writer.
//!
//! A `Replica` reads no clock and touches no file: time comes in as `now_ms`, the log
//! through [`ReplicaLog`], snapshot writing through [`SnapshotWriter`], and everything
//! to send through an [`Outbox`].
//!
//! THE DRIVER'S CONTRACT:
//! 1. Feed inputs as they come: [`Replica::tick`] once per tick, [`Replica::step`] for
//!    each peer message, [`Replica::on_client_request`], [`Replica::on_client_closed`],
//!    and [`Replica::expire_deadlines`] once `now_ms` reaches [`Replica::next_deadline`].
//! 2. Call [`Replica::before_sleep`] once per loop turn, after the inputs of that turn.
//!    It drains the core's `Ready` in this order:
//!    1. send `messages` (the leader's appends and heartbeats may leave before its own
//!       sync: Raft thesis §10.2.1; its match index only advances after `advance`);
//!    2. on the leader, apply committed entries, answer the clients waiting on them and
//!       the linearizable reads whose ReadIndex is now applied, and flush those replies:
//!       the core hands out only entries committed AND persisted in this replica's log
//!       by an earlier sync, so nothing they depend on waits for this turn's sync (a
//!       follower, or a replica installing a snapshot, does this after step 5 instead);
//!    3. install a received snapshot, append `entries`, record the hard state;
//!    4. ONE sync for everything of this turn (group commit);
//!    5. send `messages_after_sync` (votes and append acknowledgements) and flush them.
//!
//!    It stops once the Readies of the turn carried [`APPLY_BYTES_PER_TURN`] of committed
//!    entries; [`Replica::has_apply_backlog`] then tells the driver to run the next turn
//!    without sleeping, so a long backlog is applied in short turns.
//! 3. While [`Replica::set_observe`] asks for changes, take [`Replica::take_applied`]
//!    after each `before_sleep`: they accumulate until taken.
//! 4. ANY `Err` FROM `tick`, `step` OR `before_sleep` IS FATAL: the driver must stop
//!    the replica and acknowledge nothing more; the log may hold writes the core does
//!    not know about. Refused inputs (a stale or dropped message, a refused proposal)
//!    are not errors.
//!
//! A full disk is not fatal: a write that finds no space raises the NOSPACE alarm
//! ([`alarm`]), which holds back the Ready that could not be persisted, refuses new
//! writes, keeps serving reads and retries every second.
//!
//! The parts: [`requests`] (client requests, pending writes and their deadlines),
//! `reads` (ReadIndex batching), [`parked`] (requests waiting for a leader),
//! [`snapshots`] (the snapshot schedule, over [`snapshot_policy`]), `membership` (validation of membership
//! changes), `status` (status, metrics and peer links), [`log`] (the log trait),
//! [`changes`] (what applied entries changed, for the server's subscribers and watches);
//! and three parts the server uses too: [`timer`] (the hashed timer wheel of the
//! deadlines), [`metrics`] (the node's counters) and [`members`] (the member addresses
//! carried in the Raft configuration).

pub mod alarm;
mod backup;
pub mod changes;
pub mod events;
pub mod expiry_cycle;
pub mod exposition;
pub mod log;
pub mod members;
mod membership;
pub mod metrics;
mod observe;
pub mod parked;
mod reads;
pub mod request_metrics;
pub mod requests;
mod restore;
pub mod round_trips;
pub mod snapshot_policy;
pub mod snapshots;
mod status;
pub mod timer;

use std::collections::{BTreeMap, BTreeSet};

use ::log::{info, warn};

use self::alarm::{Cause, NoSpaceAlarm, WriteFailure};
use self::changes::{Applied, Observe};
use self::events::{EVENTS_MAX, EventKind, Events};
use self::expiry_cycle::ExpiryClock;
pub use self::log::{ReplicaLog, SnapshotReader, SyncOutcome};
use self::reads::Reads;
pub use self::requests::{ClientRef, Outbox};
use self::requests::{Deadline, PendingWrite, finish};
use self::restore::Restore;
use self::snapshots::SnapshotJob;
pub use self::snapshots::{SnapshotPoll, SnapshotWriter};
pub use self::status::WantedPeer;
use crate::codec::client::ResponseBody;
use crate::config::Config;
use crate::kv::{CommandResult, KvConfig, KvStore};
use crate::raft::message::{Entry, EntryKind, Message, NodeId, SnapshotMeta};
use crate::raft::store::entry_bytes;
use crate::raft::{self, RawNode, Ready, Role, StoreError};
use crate::replica::metrics::Metrics;
use crate::replica::timer::TimerWheel;
use parked::ParkedRequests;

/// Why a replica must stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The log store failed while the core read it.
    #[error("the log store failed: {0}")]
    Store(#[source] StoreError),
    /// Writing or syncing the log failed.
    #[error("writing the log failed: {0}")]
    Write(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The snapshot in the log, or one received from the leader, does not restore.
    #[error("snapshot at index {index} does not restore: {source}")]
    SnapshotRestore {
        /// The snapshot's index.
        index: u64,
        /// Why it does not decode.
        #[source]
        source: crate::kv::Error,
    },
    /// Writing a snapshot of the state machine failed.
    #[error("writing the snapshot failed: {0}")]
    SnapshotWrite(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The core refused a call of the driver contract (a bug in this module).
    #[error("the consensus core refused the driver: {0}")]
    Core(#[source] raft::Error),
}

impl From<raft::Error> for Error {
    fn from(error: raft::Error) -> Error {
        match error {
            raft::Error::Store(e) => Error::Store(e),
            other => Error::Core(other),
        }
    }
}

/// Driver rules a simulation can switch off to check that its checks notice.
#[cfg(feature = "sim-faults")]
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// The leader counts its appends durable without syncing them (a leader's sync
    /// "is not needed since followers hold copies"): its acknowledgements can count a
    /// copy that a crash loses.
    pub ack_before_own_sync: bool,
    /// A batch of reads is served at the commit index without its ReadIndex round (a
    /// deposed leader that does not know it serves stale values).
    pub read_before_read_index: bool,
}

/// One replica: the core, its log, the state machine and waiting clients.
pub struct Replica<L: ReplicaLog, W: SnapshotWriter> {
    raw: RawNode<L>,
    kv: KvStore,
    config: Config,
    metrics: Metrics,
    /// Invariant: a log index maps to the client waiting for it, with the term the
    /// entry was proposed in; an entry applied at that index with another term means
    /// the proposal was lost, and the client is told so.
    pending_writes: BTreeMap<u64, PendingWrite>,
    reads: Reads,
    last_role: Role,
    last_leader: NodeId,
    /// The term at the end of the last turn (a candidate in a new term lost the last
    /// election and started another).
    last_term: u64,
    /// The members of the last configuration applied (for membership events).
    members_applied: BTreeSet<NodeId>,
    /// Whether the NOSPACE alarm was up at the end of the last turn.
    alarm_reported: bool,
    /// The recent events (`events`).
    events: Events,
    snapshots: W,
    snapshot_job: Option<SnapshotJob>,
    /// A received snapshot's state machine being restored off the turn.
    restore: Restore,
    /// See [`Replica::has_apply_backlog`].
    apply_backlog: bool,
    /// The NOSPACE alarm: up while a write failed for lack of disk space.
    nospace: NoSpaceAlarm,
    /// Client request deadlines (`limits.request_timeout_ms`), in the driver's clock.
    deadlines: TimerWheel<Deadline>,
    /// Requests waiting for a leader to be known (`limits.leader_wait_ms`).
    parked: ParkedRequests,
    /// Entries the last `before_sleep` synced, for the slow-turn warning.
    last_synced_entries: u64,
    /// What the peer links were last computed from: (index of the configuration
    /// in force, leader, peers the core tracks).
    peers_fingerprint: (u64, NodeId, usize),
    /// The expiry clock and the expiry cycle's entry in flight (`expiry_cycle`).
    expiry: ExpiryClock,
    /// What to report about applied entries (see [`changes`]).
    observe: Observe,
    /// The changes of the entries applied since the last [`Replica::take_applied`].
    applied: Vec<Applied>,
    #[cfg(feature = "sim-faults")]
    faults: Faults,
}

/// The core's settings from the node's configuration (election and heartbeat ticks,
/// flow-control and size limits, promotion distance).
pub fn raft_config(config: &Config) -> raft::Config {
    let mut raft_config = raft::Config::new(config.node_id);
    raft_config.election_ticks = u64::from(config.raft.election_ticks);
    raft_config.heartbeat_ticks = u64::from(config.raft.heartbeat_ticks);
    raft_config.inflight_count_max = config.limits.inflight_count_max;
    raft_config.message_bytes_max = config.limits.message_bytes_max;
    // A chunk fits a frame as a batch does (limits.message_bytes_max is validated so).
    raft_config.snapshot_chunk_bytes_max = config.limits.message_bytes_max;
    raft_config.promote_distance_max = config.raft.promote_distance_max;
    raft_config.committed_bytes_max = APPLY_BYTES_PER_READY;
    raft_config
}

/// Committed entry bytes after which one `before_sleep` takes no further `Ready` (so it
/// applies less than this plus [`APPLY_BYTES_PER_READY`]): a long backlog (a restart
/// replaying the log above its snapshot, a follower catching up) is applied over several
/// loop turns, each short, with the network served between.
pub const APPLY_BYTES_PER_TURN: u64 = 512 << 10;
/// Committed entry bytes one `Ready` hands out at most (a quarter of a turn's).
pub const APPLY_BYTES_PER_READY: u64 = APPLY_BYTES_PER_TURN / 4;

/// The state machine restored from `log`'s snapshot, streamed from it (a file, for the
/// server): no whole copy is held.
///
/// # Errors
/// [`Error::SnapshotRestore`] when it does not decode or its data cannot be read.
fn restore_from_log<L: ReplicaLog>(kv_config: KvConfig, log: &L) -> Result<KvStore, Error> {
    let index = log.snapshot_meta().index;
    let mut input = SnapshotReader::new(log);
    KvStore::restore_from(kv_config, &mut input, log.snapshot_bytes()).map_err(|source| {
        // The log may check its file's own crc as this read reaches the end
        // (`WalStore`): after a decoding error, read on, so that a damaged file is
        // named as such.
        let source = match source {
            crate::kv::Error::Read(_) => source,
            decoding => match std::io::copy(&mut input, &mut std::io::sink()) {
                Err(e) => crate::kv::Error::Read(e.to_string()),
                Ok(_) => decoding,
            },
        };
        Error::SnapshotRestore { index, source }
    })
}

impl<L: ReplicaLog, W: SnapshotWriter> Replica<L, W> {
    /// A replica over `log`: restores the state machine from the log's snapshot and
    /// builds the core with `raft_config` (its `applied` is set here) and `seed`.
    ///
    /// # Errors
    /// The log cannot be read, its snapshot does not restore, or the core refuses
    /// the configuration.
    pub fn new(
        config: Config,
        mut raft_config: raft::Config,
        log: L,
        snapshots: W,
        seed: u64,
    ) -> Result<Self, Error> {
        let members_applied = log
            .initial_state()
            .map_err(Error::Store)?
            .config
            .members()
            .collect();
        let index = log.snapshot_meta().index;
        let kv_config = KvConfig::default();
        let kv = if index == 0 {
            KvStore::new(kv_config)
        } else {
            restore_from_log(kv_config, &log)?
        };
        raft_config.applied = kv.applied_index();
        let raw = RawNode::new(raft_config, log, seed)?;
        let metrics = Metrics::new(config.storage.slow_fsync_warn_ms * 1000);
        Ok(Replica {
            raw,
            kv,
            metrics,
            pending_writes: BTreeMap::new(),
            reads: Reads::default(),
            last_role: Role::Follower,
            last_leader: raft::NO_NODE,
            last_term: 0,
            members_applied,
            alarm_reported: false,
            events: Events::new(EVENTS_MAX),
            snapshots,
            snapshot_job: None,
            restore: Restore::default(),
            apply_backlog: false,
            nospace: NoSpaceAlarm::default(),
            deadlines: TimerWheel::new(256, 4, 0),
            parked: ParkedRequests::default(),
            last_synced_entries: 0,
            peers_fingerprint: (u64::MAX, raft::NO_NODE, 0),
            expiry: ExpiryClock::default(),
            observe: Observe::Off,
            applied: Vec::new(),
            config,
            #[cfg(feature = "sim-faults")]
            faults: Faults::default(),
        })
    }

    /// Switches driver rules off (simulation only).
    #[cfg(feature = "sim-faults")]
    #[doc(hidden)]
    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// The consensus core, for observers (status, tests, the simulation's checks).
    pub fn raw_node(&self) -> &RawNode<L> {
        &self.raw
    }

    /// The log.
    pub fn log(&self) -> &L {
        self.raw.store()
    }

    /// The log, for the driver's own bookkeeping (never to write entries).
    pub fn log_mut(&mut self) -> &mut L {
        self.raw.store_mut()
    }

    /// The state machine.
    pub fn kv(&self) -> &KvStore {
        &self.kv
    }

    /// The node's metrics, for the driver to record network events.
    pub fn metrics_mut(&mut self) -> &mut Metrics {
        &mut self.metrics
    }

    /// One line on what the last `before_sleep` did and what waits (for slow-turn
    /// warnings; built on demand, as it is rarely needed).
    pub fn last_turn_summary(&self) -> String {
        format!(
            "synced {} entries, {} writes, {} reads and {} requests for a leader waiting",
            self.last_synced_entries,
            self.pending_writes.len(),
            self.reads.waiting(),
            self.parked.len()
        )
    }

    /// One logical clock tick.
    ///
    /// # Errors
    /// The log store failed: fatal (contract step 3).
    pub fn tick(&mut self) -> Result<(), Error> {
        match self.raw.tick() {
            Err(raft::Error::Store(e)) => Err(Error::Store(e)),
            Err(e) => {
                warn!("tick refused: {e}");
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    /// A message from a peer. A message the core refuses is dropped with a warning.
    ///
    /// # Errors
    /// The log store failed: fatal (contract step 3).
    pub fn step(&mut self, message: Message) -> Result<(), Error> {
        ::log::trace!("step {message:?}");
        match self.raw.step(message) {
            Err(raft::Error::Store(e)) => Err(Error::Store(e)),
            Err(e) => {
                warn!("dropped a peer message: {e}");
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    /// Drains the core's Ready once per loop turn (the module docs give the order).
    /// `now_ms`: the driver's clock, for the NOSPACE retries and snapshot timings.
    ///
    /// # Errors
    /// A storage failure; the driver must stop the replica: nothing after it may be
    /// acknowledged.
    pub fn before_sleep(&mut self, now_ms: u64, out: &mut impl Outbox) -> Result<(), Error> {
        self.events.set_now(now_ms);
        self.poll_restore(out)?;
        self.release_parked(out);
        self.run_expiry_cycle();
        self.start_read_round(out);
        let mut synced_entries = 0u64;
        let mut applied_bytes = 0u64;
        while self.raw.has_ready() && applied_bytes < APPLY_BYTES_PER_TURN {
            let mut ready = self.raw.ready()?;
            applied_bytes += ready.committed_entries.iter().map(entry_bytes).sum::<u64>();
            for message in ready.messages.drain(..) {
                let bytes = out.send(&message);
                self.metrics.on_message_sent(message.to, bytes as u64);
            }
            out.flush_now();
            // Committed entries are durable on a majority and in this replica's own
            // log (the core hands out only persisted ones), so they do not wait for
            // this turn's sync: the leader applies them and gets their replies out
            // before it. A follower syncs and acknowledges first, as the leader's
            // commit waits for its ack; with a snapshot to install, the state machine
            // restarts from it.
            let apply_early = ready.snapshot.is_none() && self.raw.raft().role == Role::Leader;
            if apply_early {
                self.apply_ready(&mut ready, out);
                out.flush_now();
            }
            let persisted = self.persist(&ready, now_ms)?;
            if persisted {
                synced_entries += ready.entries.len() as u64;
                if !ready.messages_after_sync.is_empty() {
                    for message in ready.messages_after_sync.drain(..) {
                        let bytes = out.send(&message);
                        self.metrics.on_message_sent(message.to, bytes as u64);
                    }
                    out.flush_now();
                }
            }
            if !apply_early {
                self.apply_ready(&mut ready, out);
            }
            if !persisted {
                // The NOSPACE alarm holds this Ready back (see `alarm`): nothing that
                // acknowledges it leaves, and the core keeps its entries and snapshot
                // unstable, to hand them out again with the next Ready.
                ready.messages_after_sync.clear();
                ready.entries.clear();
                ready.snapshot_chunks.clear();
                ready.snapshot = None;
                self.raw.advance(ready)?;
                break;
            }
            self.raw.advance(ready)?;
            self.metrics.on_commit(self.raw.raft().log.committed);
        }
        if self.nospace.has(Cause::Log) {
            // No Ready this turn carried the failed writes (an unsaved hard state
            // alone): retry them on their own.
            self.persist(&Ready::default(), now_ms)?;
        }
        if self.nospace.has(Cause::Log) {
            self.hand_off_leadership();
        }
        self.answer_reads(out);
        self.observe_role_change(out);
        self.report_lost_logs();
        self.maybe_snapshot(now_ms)?;
        self.observe_alarm();
        self.last_synced_entries = synced_entries;
        self.apply_backlog = (applied_bytes >= APPLY_BYTES_PER_TURN && self.raw.has_ready())
            || self.restore.has_backlog();
        Ok(())
    }

    /// What to report about the entries applied from now on (the node's listeners).
    pub fn set_observe(&mut self, observe: Observe) {
        self.observe = observe;
    }

    /// The index of the last entry applied to the state machine.
    pub fn applied_index(&self) -> u64 {
        self.kv.applied_index()
    }

    /// The changes of the entries applied since the last call, in log order.
    pub fn take_applied(&mut self) -> Vec<Applied> {
        std::mem::take(&mut self.applied)
    }

    /// Whether the last [`Replica::before_sleep`] stopped at [`APPLY_BYTES_PER_TURN`]
    /// with more committed entries to apply: the driver's next poll must not sleep.
    pub fn has_apply_backlog(&self) -> bool {
        self.apply_backlog
    }

    /// Steps 3 and 4 of the module docs for `ready`: makes its hard state, snapshot and
    /// entries durable, unless the NOSPACE alarm holds them back until its next retry.
    /// Returns whether they are durable now (a Ready with nothing to write always is).
    ///
    /// # Errors
    /// A storage failure other than a full disk: the replica must stop.
    fn persist(&mut self, ready: &Ready, now_ms: u64) -> Result<bool, Error> {
        let store = self.raw.store_mut();
        if let Some(hard_state) = ready.hard_state {
            store.set_hard_state(hard_state);
        }
        let needed = ready.snapshot.is_some()
            || !ready.snapshot_chunks.is_empty()
            || !ready.entries.is_empty()
            || store.hard_state_unsaved();
        let alarmed = self.nospace.has(Cause::Log);
        if !needed && !alarmed {
            return Ok(true);
        }
        if alarmed && !self.nospace.may_write(now_ms) {
            return Ok(!needed);
        }
        match self.write_ready(ready) {
            Ok(()) => {
                self.nospace.clear(Cause::Log, now_ms);
                Ok(true)
            }
            Err(WriteFailure::NoSpace(what)) => {
                self.nospace.raise(Cause::Log, &what, now_ms);
                Ok(false)
            }
            Err(WriteFailure::Fatal(e)) => Err(Error::Write(e)),
        }
    }

    /// Writes `ready`'s hard state, snapshot and entries, then syncs once. The hard
    /// state goes first: an entry or snapshot of a new term never reaches the disk
    /// before that term does (the open check of `WalStore` relies on it).
    fn write_ready(&mut self, ready: &Ready) -> Result<(), WriteFailure> {
        self.raw.store_mut().save_hard_state()?;
        for chunk in &ready.snapshot_chunks {
            self.raw.store_mut().write_snapshot_chunk(chunk)?;
        }
        if let Some(meta) = &ready.snapshot {
            self.install_snapshot(meta)?;
        }
        let store = self.raw.store_mut();
        let appended = ready.entries.len() as u64;
        store.append(&ready.entries)?;
        #[cfg(feature = "sim-faults")]
        if self.faults.ack_before_own_sync && self.raw.raft().role == Role::Leader {
            return Ok(());
        }
        let outcome = self.raw.store_mut().sync()?;
        // Only a real fdatasync counts, so entries per fsync is the true
        // group-commit factor (a commit-only Ready appends nothing to sync).
        if let SyncOutcome::Flushed { micros } = outcome
            && self.metrics.record_fsync(micros, appended)
        {
            warn!(
                "slow fsync: {} ms for {appended} entries (threshold {} ms)",
                micros / 1000,
                self.config.storage.slow_fsync_warn_ms
            );
        }
        Ok(())
    }

    /// A leader that cannot persist hands leadership to the most up-to-date voter: it
    /// cannot apply what commits without its own copy, so it could neither answer
    /// writes nor serve linearizable reads, while a follower with space can do both.
    /// Called after `advance` (the Ready contract), each turn while the alarm holds the
    /// log; a transfer in progress is left alone (the core ends it after an election
    /// timeout, and the next turn tries again).
    fn hand_off_leadership(&mut self) {
        let status = self.raw.status();
        if status.role != Role::Leader || self.raw.raft().transferee != raft::NO_NODE {
            return;
        }
        let target = status
            .progress
            .iter()
            .filter(|p| p.id != self.config.node_id && status.config.is_voter(p.id))
            .max_by_key(|p| (p.recent_active, p.match_index))
            .map(|p| p.id);
        let Some(id) = target else {
            return;
        };
        match self.raw.transfer_leader(id) {
            Ok(()) => info!("NOSPACE: this leader cannot persist; transferring leadership to {id}"),
            Err(e) => warn!("NOSPACE: cannot transfer leadership to {id}: {e}"),
        }
    }

    /// Applies `ready`'s committed entries, files its confirmed reads under their
    /// index and answers every read the state machine has caught up with.
    fn apply_ready(&mut self, ready: &mut Ready, out: &mut impl Outbox) {
        for entry in &ready.committed_entries {
            if self.restore.holds() {
                self.restore.hold(entry);
            } else {
                self.apply(entry, out);
            }
        }
        self.reads.on_read_states(ready.read_states.drain(..));
        self.answer_reads(out);
    }

    fn apply(&mut self, entry: &Entry, out: &mut impl Outbox) {
        if entry.index <= self.kv.applied_index() {
            return;
        }
        let result = match entry.kind {
            EntryKind::Normal => {
                let (result, applied) =
                    changes::apply_observed(&mut self.kv, entry.index, &entry.data, self.observe);
                self.expiry.expired_keys += self.kv.expired_by_last_apply().len() as u64;
                self.applied.extend(applied.filter(|a| !a.is_empty()));
                Some(result)
            }
            EntryKind::Noop => {
                self.kv.advance_applied(entry.index);
                None
            }
            EntryKind::Config => {
                self.kv.advance_applied(entry.index);
                match raft::Configuration::decode(&entry.data) {
                    Ok(config) => {
                        info!(
                            "configuration committed at index {}: voters {:?}, learners {:?}",
                            entry.index, config.voters, config.learners
                        );
                        self.observe_membership(&config, entry.index);
                    }
                    Err(e) => warn!("configuration entry {} does not decode: {e}", entry.index),
                }
                Some(CommandResult::Ok)
            }
        };
        self.metrics.on_apply(entry.index);
        let Some(waiting) = self.pending_writes.remove(&entry.index) else {
            return;
        };
        let body = match result {
            Some(result) if waiting.term == entry.term => {
                self.metrics.on_proposal_committed();
                ResponseBody::Result(result)
            }
            _ => {
                self.metrics.on_proposal_failed();
                ResponseBody::Unavailable(
                    "leadership changed before the write committed; it was not applied, retry"
                        .into(),
                )
            }
        };
        finish(&mut self.deadlines, out, waiting.into(), body);
    }

    fn observe_role_change(&mut self, out: &mut impl Outbox) {
        let raft = self.raw.raft();
        let (role, term, leader) = (raft.role, raft.term, raft.leader);
        self.observe_leader_and_elections(role, term, leader);
        if role == self.last_role {
            return;
        }
        info!("term {term}: role {:?} -> {role:?}", self.last_role);
        if self.last_role == Role::Leader {
            let body = self.redirect(leader);
            let unknown = ResponseBody::Unavailable(
                "leadership lost before the write committed; outcome unknown, retry".into(),
            );
            for (_, write) in std::mem::take(&mut self.pending_writes) {
                self.metrics.on_proposal_failed();
                finish(&mut self.deadlines, out, write.into(), unknown.clone());
            }
            for read in self.reads.take_confirmed_and_waiting() {
                finish(&mut self.deadlines, out, read.into(), body.clone());
            }
        }
        self.last_role = role;
    }

    /// Reports each member this leader found to have lost its log (see
    /// [`raft::progress::LostLog`]): an error line naming it and the repair, and a
    /// `member_lost_log` event.
    fn report_lost_logs(&mut self) {
        for lost in self.raw.take_lost_logs() {
            let id = lost.id;
            let message = format!(
                "member {id} lost its log: it had acknowledged index {} and now holds at most \
                 index {}, so its data directory was wiped or replaced; it also forgot its vote, \
                 so it is not repaired (no snapshot is sent to it). Repair: `raftkv-cli member \
                 remove {id}`, stop it, empty its data directory, start it with `--join` and \
                 add it again (`raftkv-cli member add {id} PEER_ADDR CLIENT_ADDR`); see \
                 docs/OPERATIONS.md, \"A member that lost its data\"",
                lost.acknowledged, lost.holds
            );
            ::log::error!("{message}");
            let term = self.raw.raft().term;
            let fields = [
                ("member", id),
                ("acknowledged", lost.acknowledged),
                ("holds", lost.holds),
            ];
            self.events
                .record(EventKind::MemberLostLog, term, &fields, message);
        }
    }

    /// Installs the received snapshot `meta` in the log and starts restoring its state
    /// machine off the turn (see [`restore`]).
    fn install_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), WriteFailure> {
        self.raw.store_mut().install_snapshot(meta.clone())?;
        self.start_restore(meta)
            .map_err(|e| WriteFailure::Fatal(Box::new(e)))
    }
}

#[cfg(test)]
mod tests;
