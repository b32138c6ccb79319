//! The glue between the network, the consensus core, the log and the state machine.
//!
//! The event loop hands the node decoded peer messages, client requests and ticks; once
//! per loop turn it calls [`Node::before_sleep`], which drains the core's `Ready` in
//! the order the Ready contract requires:
//! 1. send `messages` (the leader's appends and heartbeats may leave before its own
//!    fsync: Raft thesis §10.2.1; its match index only advances after `advance`);
//! 2. on the leader, apply committed entries, answer the clients waiting on them and
//!    the linearizable reads whose ReadIndex is now applied, and flush those replies:
//!    the core hands out only entries committed AND persisted in this node's log by an
//!    earlier sync, so nothing they depend on waits for this turn's sync (a follower,
//!    or a node installing a snapshot, does this after step 5 instead: the leader's
//!    commit waits for the follower's acknowledgement, not for its state machine);
//! 3. install a received snapshot, append `entries`, record the hard state;
//! 4. ONE sync for everything of this turn (group commit);
//! 5. send `messages_after_sync` (votes and append acknowledgements) and flush them.
//!
//! A full disk is not fatal: a write that finds no space raises the NOSPACE alarm
//! (`alarm`), which holds back the Ready that could not be persisted (its step 5
//! messages are dropped, its entries stay unstable in the core), refuses new writes,
//! keeps serving reads and retries every second. Any other storage error stops the node.
//!
//! A client write is acknowledged only in step 2, after the entry is committed (so
//! durable on a majority, this node's copy included by an earlier step 4). Linearizable
//! reads are batched: every read arriving in one turn shares one ReadIndex round.
//!
//! While no leader is known, reads, writes and membership changes are parked
//! ([`super::parked`]) until one is, for at most `limits.leader_wait_ms`, instead of
//! failing at once; they are served or redirected at the start of the next
//! `before_sleep` after a leader appears.
//!
//! Invariant: `pending_writes` maps a log index to the client waiting for it, with the
//! term the entry was proposed in; an entry applied at that index with another term
//! means the proposal was lost, and the client is told so.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::thread;
use std::time::Instant;

use log::{info, warn};

use super::alarm::{Cause, NoSpaceAlarm, WriteFailure};
use super::members::{self, MemberAddrs};
use super::metrics::Metrics;
use super::parked::ParkedRequests;
use super::removal_marker;
use super::timer::{TimerId, TimerWheel};
use super::wal_store::WalStore;
use crate::codec::client::{
    Member as StatusMember, MemberChange, Request, RequestBody, Response, ResponseBody,
    Role as StatusRole, Status,
};
use crate::config::Config;
use crate::kv::command::encoded_len;
use crate::kv::{
    Command, CommandResult, KvConfig, KvStore, LogSinceSnapshot, encode_command, snapshot_due,
};
use crate::raft::message::{
    ConfigChange, Entry, EntryKind, Message, NodeId, Snapshot, SnapshotMeta,
};
use crate::raft::{self, RawNode, Ready, Role};
use crate::storage::identity::Identity;
use crate::storage::snapshot::{self as snapshot_file, SnapshotError, SnapshotFile};

/// A client connection as the node knows it: slab key plus generation, so a reply to a
/// connection that has since closed is never delivered to a newer one in the same slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientRef {
    /// Slab key of the connection.
    pub key: usize,
    /// Generation of the connection in that slot.
    pub generation: u64,
}

/// Where the node puts what it wants sent. Implemented by the event loop's network.
pub trait Outbox {
    /// Queues a Raft message for its recipient; returns the bytes queued (0 if dropped).
    fn send(&mut self, message: &Message) -> usize;
    /// Queues a reply for a client.
    fn reply(&mut self, client: ClientRef, response: Response);
    /// Writes queued output now (used to get the leader's appends out before its fsync).
    fn flush_now(&mut self);
}

struct PendingWrite {
    client: ClientRef,
    request_id: u64,
    term: u64,
    deadline: TimerId,
}

struct PendingRead {
    client: ClientRef,
    request_id: u64,
    key: Vec<u8>,
    deadline: TimerId,
}

/// A client request deadline in the timer wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    /// The write proposed at this log index.
    Write(u64),
    /// A linearizable read.
    Read(ClientRef, u64),
    /// The end of a parked request's wait for a leader, by park id.
    Parked(u64),
}

/// Who waits for a reply, whatever the request was.
struct Waiter {
    client: ClientRef,
    request_id: u64,
    deadline: TimerId,
}

impl From<PendingWrite> for Waiter {
    fn from(write: PendingWrite) -> Waiter {
        Waiter {
            client: write.client,
            request_id: write.request_id,
            deadline: write.deadline,
        }
    }
}

impl From<PendingRead> for Waiter {
    fn from(read: PendingRead) -> Waiter {
        Waiter {
            client: read.client,
            request_id: read.request_id,
            deadline: read.deadline,
        }
    }
}

/// Replies to a waiting request and cancels its deadline.
fn finish(
    deadlines: &mut TimerWheel<Deadline>,
    out: &mut impl Outbox,
    waiter: Waiter,
    body: ResponseBody,
) {
    deadlines.cancel(waiter.deadline);
    reply_to(out, waiter, body);
}

/// Replies to a waiting request (its deadline already fired or cancelled).
fn reply_to(out: &mut impl Outbox, waiter: Waiter, body: ResponseBody) {
    let response = Response {
        request_id: waiter.request_id,
        body,
    };
    out.reply(waiter.client, response);
}

/// A snapshot being encoded and written on a helper thread.
struct SnapshotJob {
    meta: SnapshotMeta,
    started: Instant,
    /// The encoded state machine once its file is durable, or why writing failed.
    done: Receiver<Result<Vec<u8>, SnapshotError>>,
}

/// Why [`Node::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data directory holds state that is not this node's, or not consistent: the
    /// node must not start on it; the message names the file and the repair.
    #[error("{0}")]
    Refused(String),
    /// The storage could not be opened.
    #[error("{0}")]
    Failed(String),
}

/// One node's state: the core, its log, the state machine and waiting clients.
pub struct Node {
    raw: RawNode<WalStore>,
    kv: KvStore,
    config: Config,
    metrics: Metrics,
    pending_writes: HashMap<u64, PendingWrite>,
    /// Reads that arrived this turn: one ReadIndex round is started for all of them.
    reads_this_turn: Vec<PendingRead>,
    /// Reads waiting for the ReadState of their round, by round context.
    reads_by_context: HashMap<u64, Vec<PendingRead>>,
    /// Reads whose read index is known, waiting for it to be applied.
    reads_by_index: BTreeMap<u64, Vec<PendingRead>>,
    next_read_context: u64,
    last_role: Role,
    last_leader: NodeId,
    last_term: u64,
    snapshot_job: Option<SnapshotJob>,
    /// The NOSPACE alarm: up while a write failed for lack of disk space.
    nospace: NoSpaceAlarm,
    /// Client request deadlines (`limits.request_timeout_ms`), in the loop's clock.
    deadlines: TimerWheel<Deadline>,
    /// Requests waiting for a leader to be known (`limits.leader_wait_ms`).
    parked: ParkedRequests,
    /// What the last `before_sleep` did, for the slow-turn warning.
    turn_summary: String,
    /// What the peer links were last computed from: (index of the configuration
    /// in force, leader, peers the core tracks).
    peers_fingerprint: (u64, NodeId, usize),
}

/// A peer the node wants a link to, with its address when the configuration or
/// the config file gives one (`None`: keep the link's address, or use the one the
/// peer announced when it dialed us).
pub type WantedPeer = (NodeId, Option<SocketAddr>);

impl Node {
    /// Opens the node's storage, restores the state machine from the latest snapshot
    /// and builds the consensus core.
    ///
    /// # Errors
    /// [`OpenError::Refused`] for a data directory that is not this node's consistent
    /// state (another cluster's or node's, a log without its hard state);
    /// [`OpenError::Failed`] for storage that cannot be opened (locked, corrupt,
    /// unreadable) or a corrupt snapshot.
    /// `join`: the node starts with an empty membership and waits for a leader to
    /// add it (`raftkv-server --join`); ignored when the data directory already
    /// holds a node, which always restarts from its saved bootstrap membership.
    pub fn open(config: Config, join: bool) -> Result<Node, OpenError> {
        let bootstrap = members::bootstrap_configuration(&config, join);
        let options = crate::storage::WalOptions {
            segment_bytes: config.storage.segment_bytes,
            fsync: config.storage.fsync,
            ..crate::storage::WalOptions::default()
        };
        let identity = Identity {
            cluster_id: config.cluster_id,
            node_id: config.node_id,
        };
        let store =
            WalStore::open(&config.data_dir, options, bootstrap, identity).map_err(|e| {
                if e.is_refusal() {
                    OpenError::Refused(e.to_string())
                } else {
                    OpenError::Failed(e.to_string())
                }
            })?;
        let snapshot = store.latest_snapshot();
        let kv_config = KvConfig::default();
        let kv = if snapshot.meta.index == 0 {
            KvStore::new(kv_config)
        } else {
            KvStore::restore(kv_config, &snapshot.data).map_err(|e| {
                OpenError::Failed(format!("snapshot at index {}: {e}", snapshot.meta.index))
            })?
        };
        let mut raft_config = raft::Config::new(config.node_id);
        raft_config.election_ticks = u64::from(config.raft.election_ticks);
        raft_config.heartbeat_ticks = u64::from(config.raft.heartbeat_ticks);
        raft_config.inflight_count_max = config.limits.inflight_count_max;
        raft_config.message_bytes_max = config.limits.message_bytes_max;
        // A chunk fits a frame as a batch does (limits.message_bytes_max is validated so).
        raft_config.snapshot_chunk_bytes_max = config.limits.message_bytes_max;
        raft_config.applied = kv.applied_index();
        raft_config.promote_distance_max = config.raft.promote_distance_max;
        let seed = config.node_id ^ (std::process::id() as u64) << 32;
        let raw =
            RawNode::new(raft_config, store, seed).map_err(|e| OpenError::Failed(e.to_string()))?;
        let metrics = Metrics::new(config.storage.slow_fsync_warn_ms * 1000);
        Ok(Node {
            raw,
            kv,
            metrics,
            pending_writes: HashMap::new(),
            reads_this_turn: Vec::new(),
            reads_by_context: HashMap::new(),
            reads_by_index: BTreeMap::new(),
            next_read_context: 1,
            last_role: Role::Follower,
            last_leader: raft::NO_NODE,
            last_term: 0,
            snapshot_job: None,
            nospace: NoSpaceAlarm::default(),
            deadlines: TimerWheel::new(256, 4, 0),
            parked: ParkedRequests::default(),
            turn_summary: String::new(),
            peers_fingerprint: (u64::MAX, raft::NO_NODE, 0),
            config,
        })
    }

    /// The index of the committed configuration that removed this node, once the
    /// node knows it (the driver then stops it: it is no longer a member). Only a
    /// committed removal of a node that a committed configuration listed counts
    /// ([`RawNode::removed_at`]): a joining node that installs a snapshot from
    /// before its addition, or one whose uncommitted addition was truncated, is
    /// not removed.
    pub fn removed_at(&self) -> Option<u64> {
        self.raw.removed_at()
    }

    /// Records in the data directory that this node was removed at `index`, so that
    /// it refuses to start from it again.
    ///
    /// # Errors
    /// The marker could not be written.
    pub fn record_removal(&self, index: u64) -> Result<(), String> {
        removal_marker::write(&self.config.data_dir, index)
    }

    /// The index this node's data directory records its removal at, if it does.
    ///
    /// # Errors
    /// The marker exists but cannot be read.
    pub fn recorded_removal(&self) -> Result<Option<u64>, String> {
        removal_marker::read(&self.config.data_dir)
    }

    /// Where this node stands: voter, learner, joining (empty membership) or removed.
    pub fn member_state(&self) -> raft::MemberState {
        self.raw.status().member_state()
    }

    /// The peers to keep links to, when that set may have changed since the last
    /// call: the members of the configuration in force, the servers the leader
    /// still replicates to (members being removed), and the leader.
    pub fn wanted_peers(&mut self) -> Option<Vec<WantedPeer>> {
        let raft = self.raw.raft();
        let fingerprint = (raft.membership_index(), raft.leader, raft.progress.len());
        if fingerprint == self.peers_fingerprint {
            return None;
        }
        self.peers_fingerprint = fingerprint;
        let mut ids: Vec<NodeId> = raft
            .membership
            .members()
            .chain(raft.progress.keys().copied())
            .chain([raft.leader])
            .filter(|&id| id != raft::NO_NODE && id != self.config.node_id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        Some(
            ids.into_iter()
                .map(|id| (id, self.addrs(id).map(|a| a.peer)))
                .collect(),
        )
    }

    fn addrs(&self, id: NodeId) -> Option<MemberAddrs> {
        members::addrs_of(&self.raw.raft().membership, &self.config, id)
    }

    /// The node's metrics, for the loop to record network events.
    pub fn metrics_mut(&mut self) -> &mut Metrics {
        &mut self.metrics
    }

    /// One line on what the last `before_sleep` did (for slow-turn warnings).
    pub fn last_turn_summary(&self) -> &str {
        &self.turn_summary
    }

    /// One logical clock tick.
    pub fn tick(&mut self) {
        if let Err(e) = self.raw.tick() {
            warn!("tick failed: {e}");
        }
    }

    /// A message from a peer.
    pub fn on_peer_message(&mut self, message: Message) {
        log::trace!("step {message:?}");
        if let Err(e) = self.raw.step(message) {
            warn!("dropped a peer message: {e}");
        }
    }

    /// A client connection closed: forget what it was waiting for (its writes may
    /// still commit; nobody is told), wherever its reads wait, and cancel their
    /// deadlines.
    pub fn on_client_closed(&mut self, client: ClientRef) {
        for parked in self.parked.take_client(client) {
            self.deadlines.cancel(parked.timer);
        }
        let deadlines = &mut self.deadlines;
        self.pending_writes.retain(|_, write| {
            let keep = write.client != client;
            if !keep {
                deadlines.cancel(write.deadline);
            }
            keep
        });
        let mut forget = |reads: &mut Vec<PendingRead>| {
            reads.retain(|read| {
                let keep = read.client != client;
                if !keep {
                    deadlines.cancel(read.deadline);
                }
                keep
            });
        };
        forget(&mut self.reads_this_turn);
        self.reads_by_context.values_mut().for_each(&mut forget);
        self.reads_by_index.values_mut().for_each(&mut forget);
        self.reads_by_context.retain(|_, reads| !reads.is_empty());
        self.reads_by_index.retain(|_, reads| !reads.is_empty());
    }

    /// A decoded client request at `now_ms` (the loop's clock). Returns the reply when it
    /// can be given at once; otherwise the reply comes from `before_sleep`, or a timeout
    /// from [`Node::expire_deadlines`]. While no leader is known, a read, write or
    /// membership change waits for one (`limits.leader_wait_ms`, see [`super::parked`]).
    ///
    /// `command_bytes`: for a [`RequestBody::Command`], the bytes it was decoded from
    /// (its log encoding, from `decode_request_with_command_bytes`), proposed as they
    /// are; `None` (requests built in the server, as the Redis port's) encodes the
    /// command. Ignored for other requests.
    pub fn on_client_request(
        &mut self,
        client: ClientRef,
        request: Request,
        command_bytes: Option<&[u8]>,
        now_ms: u64,
    ) -> Option<Response> {
        let deadline_ms = now_ms + self.config.limits.request_timeout_ms;
        let raft = self.raw.raft();
        let waits = matches!(
            request.body,
            RequestBody::Get { stale: false, .. }
                | RequestBody::Command(_)
                | RequestBody::MemberChange(_)
        ) && raft.role != Role::Leader
            && raft.leader == raft::NO_NODE;
        if !waits {
            return self.handle_request(client, request, command_bytes, deadline_ms);
        }
        match self.park(client, request, command_bytes, now_ms, deadline_ms, None) {
            Ok(()) => None,
            Err(request) => self.handle_request(client, request, command_bytes, deadline_ms),
        }
    }

    /// A request the Redis port could not forward: the link to the leader at
    /// `leader_addr` (a client address) failed before the request was sent. If this
    /// node now knows another leader (or is the leader), the request goes there as any
    /// other; otherwise it waits for a leader elsewhere like a request with no leader
    /// known, and fails definitively (not applied) when the wait ends.
    pub fn on_leader_unreachable(
        &mut self,
        client: ClientRef,
        request: Request,
        leader_addr: &str,
        now_ms: u64,
    ) -> Option<Response> {
        let raft = self.raw.raft();
        let same_leader = raft.role != Role::Leader
            && raft.leader != raft::NO_NODE
            && self.leader_client_addr().as_deref() == Some(leader_addr);
        if !same_leader {
            return self.on_client_request(client, request, None, now_ms);
        }
        let deadline_ms = now_ms + self.config.limits.request_timeout_ms;
        let unreachable = Some(leader_addr.to_string());
        match self.park(client, request, None, now_ms, deadline_ms, unreachable) {
            Ok(()) => None,
            Err(request) => Some(Response {
                request_id: request.request_id,
                body: ResponseBody::Unavailable(format!(
                    "cannot reach the leader at {leader_addr}; the request was not sent, retry"
                )),
            }),
        }
    }

    /// Parks a request until a leader is known, for at most `limits.leader_wait_ms` and
    /// never past `deadline_ms`; hands it back when waiting is off or the bounds are hit.
    fn park(
        &mut self,
        client: ClientRef,
        request: Request,
        command_bytes: Option<&[u8]>,
        now_ms: u64,
        deadline_ms: u64,
        unreachable: Option<String>,
    ) -> Result<(), Request> {
        let wait_ms = self.config.limits.leader_wait_ms;
        if wait_ms == 0 {
            return Err(request);
        }
        let until_ms = (now_ms + wait_ms).min(deadline_ms);
        let deadlines = &mut self.deadlines;
        self.parked.park(
            client,
            request,
            command_bytes,
            deadline_ms,
            unreachable,
            |id| deadlines.schedule(until_ms, Deadline::Parked(id)),
        )
    }

    /// The client address of the leader this node knows (not itself), if any.
    fn leader_client_addr(&self) -> Option<String> {
        let leader = self.raw.raft().leader;
        if leader == raft::NO_NODE || leader == self.config.node_id {
            return None;
        }
        self.addrs(leader).map(|a| a.client.to_string())
    }

    /// Once a leader is known, serves the parked requests on it (this node) or
    /// answers them `NotLeader` with its address; a request that waits for a leader
    /// other than the one it could not reach stays while that one still leads.
    fn release_parked(&mut self, out: &mut impl Outbox) {
        if self.parked.is_empty() {
            return;
        }
        let raft = self.raw.raft();
        let is_leader = raft.role == Role::Leader;
        if !is_leader && raft.leader == raft::NO_NODE {
            return;
        }
        let leader_addr = self.leader_client_addr();
        let released = self.parked.take_released(|parked| {
            is_leader || parked.unreachable.is_none() || parked.unreachable != leader_addr
        });
        for parked in released {
            self.deadlines.cancel(parked.timer);
            let client = parked.client;
            let bytes = parked.command_bytes.as_deref();
            if let Some(response) =
                self.handle_request(client, parked.request, bytes, parked.deadline_ms)
            {
                out.reply(client, response);
            }
        }
    }

    /// Serves, redirects or refuses a request whose deadline is `deadline_ms`.
    fn handle_request(
        &mut self,
        client: ClientRef,
        request: Request,
        command_bytes: Option<&[u8]>,
        deadline_ms: u64,
    ) -> Option<Response> {
        let request_id = request.request_id;
        let reply = |body| Some(Response { request_id, body });
        // Reads, also those ordered through the log (a Redis read behind a write), are
        // still served; only what changes state is refused.
        let changes_state = match &request.body {
            RequestBody::Command(command) => !matches!(command, Command::Get { .. }),
            RequestBody::MemberChange(_) => true,
            _ => false,
        };
        if changes_state && let Some(body) = self.nospace.refusal(self.config.node_id) {
            return reply(body);
        }
        match request.body {
            RequestBody::Status => reply(ResponseBody::Status(self.status())),
            RequestBody::MemberChange(change) => {
                if let Some(body) = self.not_leader() {
                    return reply(body);
                }
                match self.propose_member_change(change) {
                    Ok(Some(index)) => {
                        self.wait_for_commit(client, request_id, index, deadline_ms);
                        None
                    }
                    Ok(None) => reply(ResponseBody::Result(CommandResult::Ok)),
                    Err(body) => reply(body),
                }
            }
            RequestBody::TransferLeader { id } => match self.raw.transfer_leader(id) {
                Ok(()) => {
                    info!("transferring leadership to {id} (asked by a client)");
                    reply(ResponseBody::Result(CommandResult::Ok))
                }
                Err(raft::Error::NotVoter(id)) => reply(ResponseBody::Error(format!(
                    "node {id} is not a voter; leadership goes to voters only"
                ))),
                Err(e) => reply(self.refusal(e)),
            },
            RequestBody::Metrics => reply(ResponseBody::Metrics(self.metrics_snapshot())),
            RequestBody::Get { key, stale: true } => {
                let value = self.kv.get(&key).map(<[u8]>::to_vec);
                reply(ResponseBody::Result(CommandResult::Value(value)))
            }
            RequestBody::Get { key, stale: false } => {
                // Its size as a log entry, as it would be forwarded or ordered via the log.
                let entry_bytes = encoded_len(&Command::Get { key: Vec::new() }) + key.len();
                if let Some(body) = self.oversized(entry_bytes).or_else(|| self.not_leader()) {
                    return reply(body);
                }
                let deadline = self
                    .deadlines
                    .schedule(deadline_ms, Deadline::Read(client, request_id));
                self.reads_this_turn.push(PendingRead {
                    client,
                    request_id,
                    key,
                    deadline,
                });
                None
            }
            RequestBody::Command(command) => {
                let entry_bytes = command_bytes.map_or_else(|| encoded_len(&command), <[u8]>::len);
                // Checked first, so a follower refuses it too instead of redirecting.
                if let Some(body) = self.oversized(entry_bytes).or_else(|| self.not_leader()) {
                    return reply(body);
                }
                // The one copy of the command: from the input buffer into the
                // payload every later clone of the entry shares.
                let data: Arc<[u8]> = match command_bytes {
                    Some(bytes) => Arc::from(bytes),
                    None => {
                        let mut data = Vec::with_capacity(entry_bytes);
                        encode_command(&command, &mut data);
                        data.into()
                    }
                };
                match self.raw.propose(data) {
                    Ok(index) => {
                        self.metrics.on_proposal();
                        self.wait_for_commit(client, request_id, index, deadline_ms);
                        None
                    }
                    Err(e) => reply(self.refusal(e)),
                }
            }
        }
    }

    /// Files the client's wait for the entry proposed at `index` in this term.
    fn wait_for_commit(
        &mut self,
        client: ClientRef,
        request_id: u64,
        index: u64,
        deadline_ms: u64,
    ) {
        let term = self.raw.raft().term;
        let deadline = self.deadlines.schedule(deadline_ms, Deadline::Write(index));
        self.pending_writes.insert(
            index,
            PendingWrite {
                client,
                request_id,
                term,
                deadline,
            },
        );
    }

    /// Checks a membership change against the configuration in force and proposes
    /// it: the index to wait for, `None` when the change is already committed (a
    /// retried request), or the error reply.
    fn propose_member_change(&mut self, change: MemberChange) -> Result<Option<u64>, ResponseBody> {
        let raft = self.raw.raft();
        let membership = &raft.membership;
        let error = |message: String| Err(ResponseBody::Error(message));
        let already_done = if raft.membership_index() <= raft.log.committed {
            Ok(None)
        } else {
            Err(ResponseBody::Unavailable(
                "a membership change is not committed yet; retry".into(),
            ))
        };
        let (change, info) = match change {
            MemberChange::AddLearner {
                id,
                peer_addr,
                client_addr,
            } => {
                if id == raft::NO_NODE {
                    return error("node id 0 is reserved".into());
                }
                let parse = |what: &str, text: &str| {
                    text.parse::<SocketAddr>().map_err(|_| {
                        ResponseBody::Error(format!("{what} {text:?} is not an ip:port address"))
                    })
                };
                let addrs = MemberAddrs {
                    peer: parse("peer address", &peer_addr)?,
                    client: parse("client address", &client_addr)?,
                };
                if membership.contains(id) {
                    // A retried request after the change committed: same answer.
                    return match self.addrs(id) {
                        Some(known) if known == addrs => already_done,
                        _ => error(format!("node {id} is already a member")),
                    };
                }
                for other in membership.members() {
                    let Some(used) = self.addrs(other) else {
                        continue;
                    };
                    let clash = [addrs.peer, addrs.client]
                        .iter()
                        .any(|a| *a == used.peer || *a == used.client);
                    if clash {
                        return error(format!("an address of node {id} is used by node {other}"));
                    }
                }
                (ConfigChange::AddLearner(id), addrs.encode())
            }
            MemberChange::Promote { id } => {
                if membership.is_voter(id) {
                    return already_done;
                }
                if !membership.is_learner(id) {
                    return error(format!("node {id} is not a learner"));
                }
                (ConfigChange::PromoteLearner(id), Vec::new())
            }
            MemberChange::Remove { id } => {
                if !membership.contains(id) {
                    return error(format!("node {id} is not a member"));
                }
                if membership.voters == [id] {
                    return error(format!("node {id} is the last voter"));
                }
                (ConfigChange::RemoveNode(id), Vec::new())
            }
        };
        let max = self.raw.promote_distance_max();
        match self.raw.propose_config_change_with_info(change, info) {
            Ok(index) => {
                info!("membership change {change:?} proposed at index {index}");
                Ok(Some(index))
            }
            Err(raft::Error::LearnerBehind {
                id,
                match_index,
                last_index,
            }) => Err(ResponseBody::Unavailable(format!(
                "learner {id} is {} entries behind the leader (it holds {match_index} of \
                 {last_index}; promotion needs at most {max}); retry when it has caught up",
                last_index - match_index.min(last_index)
            ))),
            Err(raft::Error::ConfigChangePending) => Err(ResponseBody::Unavailable(
                "another membership change is not committed yet (or this leader's first entry \
                 is not); retry"
                    .into(),
            )),
            Err(raft::Error::InvalidConfigChange) => Err(ResponseBody::Error(format!(
                "{change:?} does not apply to the configuration in force"
            ))),
            Err(e) => Err(self.refusal(e)),
        }
    }

    /// The refusal of a request whose log entry would take `entry_bytes`, when that is
    /// over `limits.entry_bytes_max`: such an entry could not be replicated in one
    /// AppendEntries frame, so it is refused where it enters, before it is proposed or
    /// forwarded.
    fn oversized(&self, entry_bytes: usize) -> Option<ResponseBody> {
        let max = self.config.limits.entry_bytes_max;
        (entry_bytes as u64 > max).then(|| {
            ResponseBody::Error(format!(
                "request of {entry_bytes} bytes exceeds the limit of {max} bytes \
                 (limits.entry_bytes_max)"
            ))
        })
    }

    fn not_leader(&self) -> Option<ResponseBody> {
        let raft = self.raw.raft();
        if raft.role == Role::Leader {
            return None;
        }
        Some(self.redirect(raft.leader))
    }

    fn redirect(&self, leader: NodeId) -> ResponseBody {
        match self.addrs(leader) {
            Some(addrs) if leader != self.config.node_id => ResponseBody::NotLeader {
                leader_id: leader,
                leader_client_addr: Some(addrs.client.to_string()),
            },
            _ => ResponseBody::Unavailable("no leader known; an election is in progress".into()),
        }
    }

    fn refusal(&self, error: raft::Error) -> ResponseBody {
        match error {
            raft::Error::NotLeader { leader } => self.redirect(leader.unwrap_or(raft::NO_NODE)),
            raft::Error::ProposalDropped => ResponseBody::Unavailable(
                "a leadership transfer is in progress; retry at the new leader".into(),
            ),
            other => ResponseBody::Unavailable(other.to_string()),
        }
    }

    fn status(&self) -> Status {
        let status = self.raw.status();
        Status {
            node_id: self.config.node_id,
            role: match status.role {
                Role::Follower => StatusRole::Follower,
                Role::PreCandidate => StatusRole::PreCandidate,
                Role::Candidate => StatusRole::Candidate,
                Role::Leader => StatusRole::Leader,
            },
            term: status.term,
            leader_id: status.leader,
            commit_index: status.commit,
            applied_index: self.kv.applied_index(),
            last_index: status.last_index,
            config_index: status.config_index,
            promote_distance_max: self.raw.promote_distance_max(),
            members: status
                .config
                .members()
                .map(|id| {
                    let addrs = self.addrs(id);
                    StatusMember {
                        id,
                        voter: status.config.is_voter(id),
                        peer_addr: addrs.map_or_else(String::new, |a| a.peer.to_string()),
                        client_addr: addrs.map_or_else(String::new, |a| a.client.to_string()),
                        match_index: status
                            .progress
                            .iter()
                            .find(|p| p.id == id)
                            .map_or(0, |p| p.match_index),
                    }
                })
                .collect(),
        }
    }

    fn metrics_snapshot(&mut self) -> Vec<(String, u64)> {
        self.metrics.set_log_bytes(self.raw.store().log_bytes());
        let mut rendered = self.metrics.render();
        rendered.push(("kv_keys".into(), self.kv.len() as u64));
        rendered.push(("kv_sessions".into(), self.kv.session_count() as u64));
        rendered
    }

    /// Drains the core's Ready once per loop turn (see the module docs for the order).
    ///
    /// # Errors
    /// A storage failure; the caller must stop the node: nothing after it may be
    /// acknowledged.
    pub fn before_sleep(&mut self, out: &mut impl Outbox) -> Result<(), String> {
        self.release_parked(out);
        if !self.reads_this_turn.is_empty() {
            let context = self.next_read_context;
            self.next_read_context += 1;
            let reads = std::mem::take(&mut self.reads_this_turn);
            match self.raw.read_index(context.to_le_bytes().to_vec()) {
                Ok(()) => {
                    self.reads_by_context.insert(context, reads);
                }
                Err(e) => {
                    let body = self.refusal(e);
                    for read in reads {
                        finish(&mut self.deadlines, out, read.into(), body.clone());
                    }
                }
            }
        }
        let mut synced_entries = 0u64;
        while self.raw.has_ready() {
            let mut ready = self.raw.ready().map_err(|e| e.to_string())?;
            for message in ready.messages.drain(..) {
                let bytes = out.send(&message);
                self.metrics.on_message_sent(message.to, bytes as u64);
            }
            out.flush_now();
            // Committed entries are durable on a majority and in this node's own log
            // (the core hands out only persisted ones), so they do not wait for this
            // turn's sync: the leader applies them and gets their replies out before it.
            // A follower syncs and acknowledges first, as the leader's commit waits for
            // its ack; with a snapshot to install, the state machine restarts from it.
            let apply_early = ready.snapshot.is_none() && self.raw.raft().role == Role::Leader;
            if apply_early {
                self.apply_ready(&mut ready, out);
                out.flush_now();
            }
            let persisted = self.persist(&ready)?;
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
                ready.snapshot = None;
                self.raw.advance(ready).map_err(|e| e.to_string())?;
                break;
            }
            self.raw.advance(ready).map_err(|e| e.to_string())?;
            self.metrics.on_commit(self.raw.raft().log.committed);
        }
        if self.nospace.has(Cause::Log) {
            // No Ready this turn carried the failed writes (an unsaved hard state
            // alone): retry them on their own.
            self.persist(&Ready::default())?;
        }
        if self.nospace.has(Cause::Log) {
            self.hand_off_leadership();
        }
        self.answer_reads(out);
        self.observe_role_change(out);
        self.maybe_snapshot()?;
        self.metrics.set_alarm_nospace(self.nospace.raised());
        self.turn_summary = format!(
            "synced {synced_entries} entries, {} writes, {} reads and {} requests for a \
             leader waiting",
            self.pending_writes.len(),
            self.reads_by_index.values().map(Vec::len).sum::<usize>(),
            self.parked.len()
        );
        Ok(())
    }

    /// Steps 3 and 4 of the module docs for `ready`: makes its hard state, snapshot and
    /// entries durable, unless the NOSPACE alarm holds them back until its next retry.
    /// Returns whether they are durable now (a Ready with nothing to write always is).
    ///
    /// # Errors
    /// A storage failure other than a full disk: the node must stop.
    fn persist(&mut self, ready: &Ready) -> Result<bool, String> {
        let store = self.raw.store_mut();
        if let Some(hard_state) = ready.hard_state {
            store.set_hard_state(hard_state);
        }
        let needed =
            ready.snapshot.is_some() || !ready.entries.is_empty() || store.hard_state_unsaved();
        let alarmed = self.nospace.has(Cause::Log);
        if !needed && !alarmed {
            return Ok(true);
        }
        let now = Instant::now();
        if alarmed && !self.nospace.may_write(now) {
            return Ok(!needed);
        }
        match self.write_ready(ready) {
            Ok(()) => {
                self.nospace.clear(Cause::Log, now);
                Ok(true)
            }
            Err(WriteFailure::NoSpace(what)) => {
                self.nospace.raise(Cause::Log, &what, now);
                Ok(false)
            }
            Err(WriteFailure::Fatal(e)) => Err(e),
        }
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

    /// Writes `ready`'s hard state, snapshot and entries, then syncs once. The hard
    /// state goes first: an entry or snapshot of a new term never reaches the disk
    /// before that term does (the open check of `WalStore` relies on it).
    fn write_ready(&mut self, ready: &Ready) -> Result<(), WriteFailure> {
        self.raw.store_mut().save_hard_state()?;
        if let Some(snapshot) = &ready.snapshot {
            self.install_snapshot(snapshot)?;
        }
        let store = self.raw.store_mut();
        let appended = ready.entries.len() as u64;
        store.append(&ready.entries)?;
        let started = Instant::now();
        let flushed = store.sync()?;
        let micros = started.elapsed().as_micros() as u64;
        // Only a real fdatasync counts, so entries per fsync is the true
        // group-commit factor (a commit-only Ready appends nothing to sync).
        if flushed && self.metrics.record_fsync(micros, appended) {
            warn!(
                "slow fsync: {} ms for {appended} entries (threshold {} ms)",
                micros / 1000,
                self.config.storage.slow_fsync_warn_ms
            );
        }
        Ok(())
    }

    /// Applies `ready`'s committed entries, files its confirmed reads under their
    /// index and answers every read the state machine has caught up with.
    fn apply_ready(&mut self, ready: &mut Ready, out: &mut impl Outbox) {
        for entry in &ready.committed_entries {
            self.apply(entry, out);
        }
        for read_state in ready.read_states.drain(..) {
            let context = read_state
                .context
                .get(..8)
                .and_then(|c| c.try_into().ok())
                .map(u64::from_le_bytes);
            if let Some(reads) = context.and_then(|c| self.reads_by_context.remove(&c)) {
                self.reads_by_index
                    .entry(read_state.index)
                    .or_default()
                    .extend(reads);
            }
        }
        self.answer_reads(out);
    }

    fn apply(&mut self, entry: &Entry, out: &mut impl Outbox) {
        if entry.index <= self.kv.applied_index() {
            return;
        }
        let result = match entry.kind {
            EntryKind::Normal => Some(self.kv.apply(entry.index, &entry.data)),
            EntryKind::Noop => {
                self.kv.advance_applied(entry.index);
                None
            }
            EntryKind::Config => {
                self.kv.advance_applied(entry.index);
                match raft::Configuration::decode(&entry.data) {
                    Ok(config) => info!(
                        "configuration committed at index {}: voters {:?}, learners {:?}",
                        entry.index, config.voters, config.learners
                    ),
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
            Some(result) if waiting.term == entry.term => ResponseBody::Result(result),
            _ => ResponseBody::Unavailable(
                "leadership changed before the write committed; it was not applied, retry".into(),
            ),
        };
        finish(&mut self.deadlines, out, waiting.into(), body);
    }

    /// The earliest client request deadline, in the loop's clock.
    pub fn next_deadline(&mut self) -> Option<u64> {
        self.deadlines.next_deadline()
    }

    /// Answers every request whose deadline passed by `now_ms` with Unavailable: a write
    /// may still commit later (its outcome is unknown to the client, whose session makes
    /// a retry safe); a read is simply not served.
    pub fn expire_deadlines(&mut self, now_ms: u64, out: &mut impl Outbox) {
        let mut expired = Vec::new();
        self.deadlines.expire(now_ms, &mut expired);
        for deadline in expired {
            let (waiter, what) = match deadline {
                Deadline::Write(index) => {
                    let Some(write) = self.pending_writes.remove(&index) else {
                        continue;
                    };
                    (
                        Waiter::from(write),
                        "write timed out before it committed; outcome unknown",
                    )
                }
                Deadline::Read(client, request_id) => {
                    let Some(read) = self.take_read(client, request_id) else {
                        continue;
                    };
                    (
                        Waiter::from(read),
                        "read timed out before leadership was confirmed",
                    )
                }
                Deadline::Parked(id) => {
                    let Some(parked) = self.parked.take(id) else {
                        continue;
                    };
                    let what = match &parked.unreachable {
                        Some(addr) => format!(
                            "cannot reach the leader at {addr} and no other leader was \
                             elected in time (limits.leader_wait_ms); the request was not \
                             applied, retry"
                        ),
                        None => "no leader elected in time (limits.leader_wait_ms); the \
                                 request was not applied, retry"
                            .into(),
                    };
                    let response = Response {
                        request_id: parked.request.request_id,
                        body: ResponseBody::Unavailable(what),
                    };
                    out.reply(parked.client, response);
                    continue;
                }
            };
            reply_to(out, waiter, ResponseBody::Unavailable(what.into()));
        }
    }

    fn take_read(&mut self, client: ClientRef, request_id: u64) -> Option<PendingRead> {
        let matches = |r: &PendingRead| r.client == client && r.request_id == request_id;
        let lists = self
            .reads_by_context
            .values_mut()
            .chain(self.reads_by_index.values_mut())
            .chain(std::iter::once(&mut self.reads_this_turn));
        for list in lists {
            if let Some(at) = list.iter().position(matches) {
                return Some(list.swap_remove(at));
            }
        }
        None
    }

    fn answer_reads(&mut self, out: &mut impl Outbox) {
        let applied = self.kv.applied_index();
        while let Some(entry) = self.reads_by_index.first_entry() {
            if *entry.key() > applied {
                break;
            }
            for read in entry.remove() {
                let value = self.kv.get(&read.key).map(<[u8]>::to_vec);
                let body = ResponseBody::Result(CommandResult::Value(value));
                finish(&mut self.deadlines, out, read.into(), body);
            }
        }
    }

    fn observe_role_change(&mut self, out: &mut impl Outbox) {
        let raft = self.raw.raft();
        let (role, term, leader) = (raft.role, raft.term, raft.leader);
        if term != self.last_term {
            self.last_term = term;
        }
        if leader != self.last_leader {
            info!("term {term}: leader is now {leader}");
            self.last_leader = leader;
            self.metrics.on_leader_change();
        }
        if role == self.last_role {
            return;
        }
        info!("term {term}: role {:?} -> {role:?}", self.last_role);
        match role {
            Role::Candidate => self.metrics.on_election_started(),
            Role::Leader => self.metrics.on_election_won(),
            Role::Follower | Role::PreCandidate => {}
        }
        if self.last_role == Role::Leader {
            let body = self.redirect(leader);
            let unknown = ResponseBody::Unavailable(
                "leadership lost before the write committed; outcome unknown, retry".into(),
            );
            for (_, write) in self.pending_writes.drain() {
                finish(&mut self.deadlines, out, write.into(), unknown.clone());
            }
            let reads = self.reads_by_context.drain().flat_map(|(_, r)| r);
            let reads: Vec<PendingRead> = reads
                .chain(self.reads_by_index.split_off(&0).into_values().flatten())
                .collect();
            for read in reads {
                finish(&mut self.deadlines, out, read.into(), body.clone());
            }
        }
        self.last_role = role;
    }

    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), WriteFailure> {
        let index = snapshot.meta.index;
        let kv = KvStore::restore(self.kv.config(), &snapshot.data).map_err(|e| {
            WriteFailure::Fatal(format!(
                "snapshot {index} from the leader does not restore: {e}"
            ))
        })?;
        self.raw.store_mut().install_snapshot(snapshot.clone())?;
        self.kv = kv;
        info!(
            "installed snapshot at index {index} ({} keys)",
            self.kv.len()
        );
        Ok(())
    }

    /// Starts a snapshot when the log has grown past the threshold, and adopts one whose
    /// file is durable. Encoding and writing run on a helper thread over a copy-on-write
    /// view of the map, so the loop keeps serving heartbeats meanwhile; the loop only
    /// takes the view (O(1)) and, at the end, deletes the covered segments.
    fn maybe_snapshot(&mut self) -> Result<(), String> {
        let now = Instant::now();
        if let Some(job) = &self.snapshot_job {
            match job.done.try_recv() {
                Ok(Ok(data)) => {
                    let meta = job.meta.clone();
                    let elapsed = job.started.elapsed();
                    self.snapshot_job = None;
                    self.nospace.clear(Cause::Snapshot, now);
                    let (index, bytes) = (meta.index, data.len() as u64);
                    let compact_started = Instant::now();
                    match self
                        .raw
                        .store_mut()
                        .compact_saved(Snapshot { meta, data })
                        .map_err(WriteFailure::from)
                    {
                        Ok(()) => {}
                        // The sync before the compaction found the disk full: the
                        // segments stay until the next snapshot; the entries it
                        // could not write are retried with the log's next Ready.
                        Err(WriteFailure::NoSpace(what)) => {
                            self.nospace.raise(Cause::Log, &what, now);
                        }
                        Err(WriteFailure::Fatal(e)) => return Err(e),
                    }
                    self.metrics.on_snapshot(bytes);
                    info!(
                        "snapshot at index {index}: {bytes} bytes written in {} ms off the \
                         loop; compacting the log took {} us on the loop",
                        elapsed.as_millis(),
                        compact_started.elapsed().as_micros()
                    );
                }
                Ok(Err(e)) if e.is_no_space() => {
                    self.snapshot_job = None;
                    let what = format!("writing the snapshot failed: {e}");
                    self.nospace.raise(Cause::Snapshot, &what, now);
                }
                Ok(Err(e)) => return Err(format!("writing the snapshot failed: {e}")),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => {
                    return Err("the snapshot thread died".into());
                }
            }
            return Ok(());
        }
        if self.nospace.has(Cause::Snapshot) && !self.nospace.may_write(now) {
            return Ok(());
        }
        let applied = self.kv.applied_index();
        let snapshot_index = self.raw.store().latest_snapshot().meta.index;
        let log = LogSinceSnapshot {
            entries: applied.saturating_sub(snapshot_index),
            log_bytes: self.raw.store().log_bytes_since_snapshot(),
            snapshot_bytes: self.raw.store().latest_snapshot().data.len() as u64,
        };
        if !snapshot_due(&self.config.snapshot, log) {
            return Ok(());
        }
        let meta = self
            .raw
            .build_snapshot(applied, Vec::new())
            .map_err(|e| e.to_string())?
            .meta;
        let view_started = Instant::now();
        let view = self.kv.snapshot_view();
        info!(
            "snapshot at index {applied} started: {} keys, view taken in {} us on the loop",
            view.len(),
            view_started.elapsed().as_micros()
        );
        let dir = self.raw.store().snapshot_dir().to_path_buf();
        let file_meta = meta.clone();
        let (done_tx, done) = mpsc::channel();
        let cpu_percent = self.config.snapshot.encode_cpu_percent;
        thread::Builder::new()
            .name("raftkv-snapshot".into())
            .spawn(move || {
                let data = view.encode_throttled(cpu_percent);
                drop(view);
                let file = SnapshotFile {
                    index: file_meta.index,
                    term: file_meta.term,
                    meta: file_meta.config.encode(),
                    data,
                };
                let result = snapshot_file::save(&dir, &file).map(|_| file.data);
                let _ = done_tx.send(result);
            })
            .map_err(|e| format!("cannot start the snapshot thread: {e}"))?;
        self.snapshot_job = Some(SnapshotJob {
            meta,
            started: Instant::now(),
            done,
        });
        Ok(())
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
