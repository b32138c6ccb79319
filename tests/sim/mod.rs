//! The deterministic simulation of a raftkv cluster: N production `Replica`s (the type
//! the server runs: core, state machine, pending requests with deadlines, batched
//! reads, apply before the sync on the leader, snapshots while writes go on) over
//! simulated disks ([`node`]) and a simulated network ([`network`]) with crashes and
//! restarts, simulated clients speaking the client protocol's requests ([`client`]),
//! and the Raft safety invariants ([`invariants`]) checked after every step; the client
//! history is checked for linearizability with `raftkv::check` at the end.
//!
//! Each event is one loop turn of one node: its input (a tick, a message, a client
//! request, an expired deadline), then `before_sleep`, as the server's event loop does.
//!
//! Time is virtual: events sit in one queue ordered by (time, sequence number) and the
//! clock jumps to the next one. Every random choice (delays, losses, faults, client
//! operations, the nodes' own election-timeout seeds) comes from ONE `Rng` seeded with
//! the run's seed, and no map is iterated in hash order, so a seed replays exactly.
//!
//! A run: a fault phase (partitions of any shape, loss, duplication, slow messages,
//! crashes, crashes before a sync, leadership transfers, and with spare nodes membership
//! changes: [`membership`]), then everything heals and every node restarts. Liveness is
//! asserted after the heal: within `LEADER_TICKS_MAX` ticks a leader exists, and by the
//! end (`END_TICKS` after the heal, clients stop starting new operations at
//! `CLIENTS_STOP_TICKS`) every client operation has completed and every member of the
//! final configuration has applied the whole log, to identical state machines.

pub mod client;
pub mod invariants;
pub mod membership;
pub mod network;
pub mod node;

use std::collections::BTreeMap;

use raftkv::check::{self, Operation};
use raftkv::codec::client::{MemberChange, Request, RequestBody, Response};
use raftkv::raft::core::Faults;
use raftkv::raft::core::Raft;
use raftkv::raft::rng::Rng;
use raftkv::raft::{ConfigChange, Configuration, MemStore, MemberState, Message, NodeId, Role};
use raftkv::replica::{self, ClientRef};

use client::{Client, ReplyTo, Send};
use invariants::Invariants;
use membership::Changes;
use network::{Network, Weather};
use node::{MemLog, SimNode, SimOutbox, Start, member};

/// Virtual time units per tick.
const TICK_UNITS: u64 = 10;
/// A client request not answered within this many units is retried elsewhere.
const REQUEST_TIMEOUT_UNITS: u64 = 300;
/// The connection the nemesis asks for leadership transfers and membership changes on;
/// its answers are dropped.
const NEMESIS: ClientRef = ClientRef {
    key: usize::MAX,
    generation: 0,
};
/// After the heal, a leader must exist within this many ticks.
const LEADER_TICKS_MAX: u64 = 100;
/// After the heal, clients start new operations for this many ticks.
const CLIENTS_STOP_TICKS: u64 = 100;
/// The run ends this many ticks after the heal; all operations must have completed.
const END_TICKS: u64 = 300;
/// Chance, per thousand syncs that write something, of a crash in the sync.
const CRASH_BEFORE_SYNC_PER_MILLE: u64 = 4;
/// Chance, per thousand steps in which a leader's commit index advanced, that it crashes
/// right after: the moments when a commit has not yet reached the followers.
const CRASH_AFTER_COMMIT_PER_MILLE: u64 = 100;
/// With spare nodes, the chance (percent) that a nemesis event is a membership change.
const MEMBERSHIP_CHANGE_PERCENT: u64 = 30;
/// A learner is promoted only within this many entries of the leader.
const PROMOTE_DISTANCE_MAX: u64 = 20;

/// What one run simulates.
#[derive(Debug, Clone)]
pub struct Options {
    /// The seed of the one RNG.
    pub seed: u64,
    /// Voters of the initial configuration (ids `1..=nodes`).
    pub nodes: u64,
    /// Nodes started empty (ids after the voters), for the membership nemesis to add;
    /// 0 turns membership changes off (and leaves the runs of a seed unchanged).
    pub spares: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// Length of the fault phase, in ticks.
    pub fault_ticks: u64,
    /// Safety rules of the core switched off (all on by default).
    pub faults: Faults,
    /// Rules of the replica (the driver) switched off (all on by default).
    pub replica_faults: replica::Faults,
}

impl Options {
    /// The standard run of `nodes` nodes for `seed`.
    pub fn new(seed: u64, nodes: u64) -> Options {
        Options {
            seed,
            nodes,
            spares: 0,
            clients: 5,
            fault_ticks: 300,
            faults: Faults::default(),
            replica_faults: replica::Faults::default(),
        }
    }
}

/// What a successful run did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Report {
    /// Events processed.
    pub events: u64,
    /// Client operations in the checked history.
    pub operations: usize,
    /// Entries committed (the final commit index).
    pub committed: u64,
    /// Node crashes (before a sync or not).
    pub crashes: u64,
    /// Membership changes the leaders accepted.
    pub changes: u64,
}

/// A failed run: the seed to replay and what broke.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The options of the run.
    pub options: Options,
    /// Virtual time of the failure.
    pub time: u64,
    /// The violated invariant or the error.
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} ({} nodes, {} spares) failed at time {}: {}\nreplay: RAFTKV_SEED={} \
             RAFTKV_NODES={} RAFTKV_SPARES={} cargo test --release --test sim replay -- \
             --nocapture",
            self.options.seed,
            self.options.nodes,
            self.options.spares,
            self.time,
            self.message,
            self.options.seed,
            self.options.nodes,
            self.options.spares
        )
    }
}

#[derive(Debug)]
enum Event {
    Tick(NodeId, u64),
    /// Boxed, as are requests and replies, to keep queue entries small.
    Deliver(Box<Message>),
    Request(NodeId, ClientRef, Box<Request>),
    Reply(ClientRef, Box<Response>),
    /// The earliest request deadline of a node (of that incarnation) is due.
    Deadline(NodeId, u64),
    Timeout(usize, u64, u32),
    ClientStart(usize),
    Nemesis,
    Restart(NodeId),
    Heal,
    CheckLeader,
    StopClients,
}

struct Sim {
    options: Options,
    rng: Rng,
    now: u64,
    sequence: u64,
    queue: BTreeMap<(u64, u64), Event>,
    /// Index `id - 1`; `None` while crashed.
    nodes: Vec<Option<SimNode>>,
    /// What survived the last crash of each node (a live node's is in its `MemLog`).
    durable: Vec<MemStore>,
    /// The highest index whose applied entry each live node was checked for.
    applied_seen: Vec<u64>,
    /// When each live node's scheduled `Deadline` event fires.
    deadline_at: Vec<Option<u64>>,
    /// Bumped at each crash, so the ticks of a dead incarnation are ignored.
    incarnation: Vec<u64>,
    network: Network,
    clients: Vec<Client>,
    clients_stopped: bool,
    faults_over: bool,
    invariants: Invariants,
    changes: Changes,
    /// (node, index of the leader's configuration in force) for each removed node a
    /// leader stopped replicating to (released): it must know its removal from then on.
    released: Vec<(NodeId, u64)>,
    history: Vec<Operation>,
    report: Report,
}

/// Runs one simulation.
///
/// # Errors
/// The first invariant violation, liveness failure, core error or non-linearizable
/// history, with the time it happened.
pub fn run(options: &Options) -> Result<Report, Failure> {
    let mut sim = Sim::new(options.clone());
    match sim.run() {
        Ok(()) => Ok(sim.report),
        Err(message) => Err(Failure {
            options: options.clone(),
            time: sim.now,
            message,
        }),
    }
}

impl Sim {
    fn new(options: Options) -> Sim {
        let ids: Vec<NodeId> = (1..=options.nodes + options.spares).collect();
        let membership = Configuration::new(1..=options.nodes, []);
        let mut rng = Rng::new(options.seed);
        let clients = (0..options.clients)
            .map(|i| Client::new(i, rng.range(1, options.nodes + 1)))
            .collect();
        Sim {
            rng,
            now: 0,
            sequence: 0,
            queue: BTreeMap::new(),
            nodes: ids.iter().map(|_| None).collect(),
            durable: ids
                .iter()
                .map(|&id| {
                    let voter = id <= options.nodes;
                    MemStore::new(if voter {
                        membership.clone()
                    } else {
                        Configuration::default()
                    })
                })
                .collect(),
            applied_seen: vec![0; ids.len()],
            deadline_at: vec![None; ids.len()],
            incarnation: vec![0; ids.len()],
            network: Network::default(),
            clients,
            clients_stopped: false,
            faults_over: false,
            invariants: Invariants::default(),
            changes: Changes::default(),
            released: Vec::new(),
            history: Vec::new(),
            report: Report::default(),
            options,
        }
    }

    fn at(&mut self, delay: u64, event: Event) {
        self.sequence += 1;
        self.queue.insert((self.now + delay, self.sequence), event);
    }

    fn run(&mut self) -> Result<(), String> {
        for id in 1..=self.ids_max() {
            self.start_node(id)?;
        }
        for client in 0..self.clients.len() {
            let delay = self.rng.range(0, 50);
            self.at(delay, Event::ClientStart(client));
        }
        let heal = self.options.fault_ticks * TICK_UNITS;
        let first_fault = self.rng.range(50, 200);
        self.at(first_fault, Event::Nemesis);
        self.at(heal, Event::Heal);
        self.at(heal + LEADER_TICKS_MAX * TICK_UNITS, Event::CheckLeader);
        self.at(heal + CLIENTS_STOP_TICKS * TICK_UNITS, Event::StopClients);
        let end = heal + END_TICKS * TICK_UNITS;
        while let Some(((time, _), event)) = self.queue.pop_first() {
            if time > end {
                break;
            }
            self.now = time;
            self.report.events += 1;
            self.handle(event)?;
            self.check_nodes()?;
        }
        self.now = end;
        self.check_end()
    }

    fn handle(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Tick(id, incarnation) => {
                if incarnation != self.incarnation[index(id)] {
                    return Ok(());
                }
                self.at(TICK_UNITS, Event::Tick(id, incarnation));
                self.with_node(id, |node, _, _| node.tick().map_err(|e| e.to_string()))
            }
            Event::Deliver(message) => self.with_node(message.to, |node, _, _| {
                node.step(*message).map_err(|e| e.to_string())
            }),
            Event::Request(id, client, request) => self.with_node(id, |node, out, now| {
                if let Some(response) = node.on_client_request(client, *request, None, now) {
                    out.replies.push((client, response));
                }
                Ok(())
            }),
            Event::Deadline(id, incarnation) => {
                if incarnation != self.incarnation[index(id)] {
                    return Ok(());
                }
                self.deadline_at[index(id)] = None;
                self.with_node(id, |node, out, now| {
                    node.expire_deadlines(now, out);
                    Ok(())
                })
            }
            Event::Reply(client, response) => self.on_reply(client, *response),
            Event::Timeout(client, op_id, attempt) => {
                if self.clients[client].attempt() == Some((op_id, attempt)) {
                    let ids_max = self.ids_max();
                    let send = self.clients[client].on_timeout(&mut self.rng, ids_max);
                    self.send_request(send, 0);
                }
                Ok(())
            }
            Event::ClientStart(client) => {
                if !self.clients_stopped && !self.clients[client].busy() {
                    let send = self.clients[client].start(&mut self.rng, self.now);
                    self.send_request(send, 0);
                }
                Ok(())
            }
            Event::Nemesis => self.nemesis(),
            Event::Restart(id) => self.start_node(id),
            Event::Heal => self.heal(),
            Event::CheckLeader => match self.leader() {
                Some(_) => Ok(()),
                None => Err(format!(
                    "liveness: no leader {LEADER_TICKS_MAX} ticks after the heal"
                )),
            },
            Event::StopClients => {
                self.clients_stopped = true;
                Ok(())
            }
        }
    }

    /// One loop turn of node `id`, if it is up: `input` (given the node, its outbox and
    /// the time), then `before_sleep`; checks what the turn appended and applied, and
    /// routes what it sent.
    fn with_node(
        &mut self,
        id: NodeId,
        input: impl FnOnce(&mut SimNode, &mut SimOutbox, u64) -> Result<(), String>,
    ) -> Result<(), String> {
        let i = index(id);
        let now = self.now;
        let Some(node) = self.nodes[i].as_mut() else {
            return Ok(());
        };
        let mut out = SimOutbox::default();
        let raft = node.raw_node().raft();
        let commit_before = raft.log.committed;
        let was_leader = raft.role == Role::Leader;
        let term_before = raft.term;
        let departed_before = departed(raft);
        input(node, &mut out, now)?;
        let crashed = match node.before_sleep(now, &mut out) {
            Ok(()) => false,
            Err(_) if node.log().crashed() => true,
            Err(error) => return Err(format!("node {id}: {error}")),
        };
        for (entries, prev_term) in node.log_mut().take_appended() {
            self.invariants.on_append(id, &entries, prev_term)?;
        }
        let newly_committed = self.check_applied(id)?;
        let raft = self.nodes[i].as_ref().expect("up").raw_node().raft();
        if was_leader && raft.term == term_before && raft.log.committed > commit_before {
            let (nodes, durable) = (&self.nodes, &self.durable);
            invariants::check_commit_quorum(raft, |id| durable_of(nodes, durable, id))?;
        }
        let is_leader = raft.role == Role::Leader;
        if is_leader && raft.term == term_before {
            let released = departed_before
                .into_iter()
                .filter(|id| !raft.progress.contains_key(id));
            let config_index = raft.membership_index();
            self.released.extend(released.map(|id| (id, config_index)));
        }
        let interesting = is_leader && (!was_leader || raft.log.committed > commit_before);
        if crashed
            || (interesting
                && self.rng.range(0, 1000) < crash_chance_after_commit(self.faults_over))
        {
            self.crash(id);
        } else {
            self.schedule_deadline(id);
        }
        self.route(out, newly_committed)
    }

    /// State Machine Safety for the entries node `id` applied since the last check;
    /// returns the indexes first known committed (for Leader Completeness). Entries a
    /// snapshot covered are skipped (the node installed the state, not the entries).
    fn check_applied(&mut self, id: NodeId) -> Result<Vec<u64>, String> {
        let i = index(id);
        let node = self.nodes[i].as_ref().expect("up");
        let applied = node.kv().applied_index();
        let log = &node.raw_node().raft().log;
        let from = (self.applied_seen[i] + 1).max(log.first_index());
        let mut newly_committed = Vec::new();
        if from <= applied {
            let entries = log
                .entries(from, applied + 1, u64::MAX)
                .map_err(|e| format!("node {id}: applied entries unreadable: {e}"))?;
            for entry in &entries {
                if self.invariants.on_apply(id, entry)? {
                    newly_committed.push(entry.index);
                }
            }
        }
        self.applied_seen[i] = self.applied_seen[i].max(applied);
        Ok(newly_committed)
    }

    /// Schedules a `Deadline` event for node `id`'s earliest request deadline, unless
    /// one fires earlier already.
    fn schedule_deadline(&mut self, id: NodeId) {
        let i = index(id);
        let Some(at) = self.nodes[i].as_mut().and_then(SimNode::next_deadline) else {
            return;
        };
        if self.deadline_at[i].is_some_and(|scheduled| scheduled <= at) {
            return;
        }
        self.deadline_at[i] = Some(at);
        let delay = at.saturating_sub(self.now);
        self.at(delay, Event::Deadline(id, self.incarnation[i]));
    }

    fn route(&mut self, out: SimOutbox, newly_committed: Vec<u64>) -> Result<(), String> {
        for message in out.messages {
            for delay in self.network.plan(&mut self.rng, message.from, message.to) {
                self.at(delay, Event::Deliver(Box::new(message.clone())));
            }
        }
        for (client, response) in out.replies {
            if client == NEMESIS {
                continue;
            }
            if let Some(delay) = self.client_delay() {
                self.at(delay, Event::Reply(client, Box::new(response)));
            }
        }
        for index in newly_committed {
            for node in self.nodes.iter().flatten() {
                self.invariants
                    .check_committed_in(node.raw_node().raft(), index)?;
            }
        }
        Ok(())
    }

    /// The delay of a client message, or `None` when it is lost.
    fn client_delay(&mut self) -> Option<u64> {
        if self.rng.range(0, 1000) < self.network.weather.drop_per_mille {
            return None;
        }
        Some(self.network.delay(&mut self.rng))
    }

    fn send_request(&mut self, send: Send, backoff: u64) {
        let Send { to, from, request } = send;
        self.at(
            REQUEST_TIMEOUT_UNITS,
            Event::Timeout(from.client, from.op_id, from.attempt),
        );
        if let Some(delay) = self.client_delay() {
            let client = from.client_ref();
            self.at(
                backoff + delay,
                Event::Request(to, client, Box::new(request)),
            );
        }
    }

    fn on_reply(&mut self, client: ClientRef, response: Response) -> Result<(), String> {
        let to = ReplyTo::of_reply(client, response.request_id);
        let ids_max = self.ids_max();
        let client = &mut self.clients[to.client];
        let (retry, finished) =
            client.on_reply(&mut self.rng, ids_max, to, response.body, self.now)?;
        let idle = !client.busy();
        if let Some(send) = retry {
            let backoff = self.rng.range(5, 30);
            self.send_request(send, backoff);
        }
        self.history.extend(finished);
        if idle {
            let think = self.rng.range(0, 40);
            self.at(think, Event::ClientStart(to.client));
        }
        Ok(())
    }

    fn start_node(&mut self, id: NodeId) -> Result<(), String> {
        let i = index(id);
        if self.nodes[i].is_some() {
            return Ok(());
        }
        let node = node::start(Start {
            id,
            ids_max: self.ids_max(),
            durable: &self.durable[i],
            rng: &mut self.rng,
            crash_per_mille: crash_chance_before_sync(self.faults_over),
            faults: self.options.faults,
            replica_faults: self.options.replica_faults,
            promote_distance_max: PROMOTE_DISTANCE_MAX,
        })?;
        self.applied_seen[i] = node.kv().applied_index();
        self.deadline_at[i] = None;
        self.nodes[i] = Some(node);
        let phase = self.rng.range(1, TICK_UNITS + 1);
        self.at(phase, Event::Tick(id, self.incarnation[i]));
        Ok(())
    }

    fn crash(&mut self, id: NodeId) {
        let i = index(id);
        let Some(mut node) = self.nodes[i].take() else {
            return;
        };
        self.durable[i] = node.log_mut().take_durable();
        self.incarnation[i] += 1;
        self.report.crashes += 1;
        let downtime = self.rng.range(10, 300);
        self.at(downtime, Event::Restart(id));
    }

    fn nemesis(&mut self) -> Result<(), String> {
        if self.faults_over {
            return Ok(());
        }
        let ids: Vec<NodeId> = (1..=self.ids_max()).collect();
        if self.options.spares > 0 && self.rng.range(0, 100) < MEMBERSHIP_CHANGE_PERCENT {
            self.change_membership()?;
            let next = self.rng.range(10, 120);
            self.at(next, Event::Nemesis);
            return Ok(());
        }
        match self.rng.range(0, 100) {
            0..25 => self.network.partition(&mut self.rng, &ids),
            25..40 => self.network.reconnect(),
            40..52 => {
                let id = self.rng.range(1, self.ids_max() + 1);
                self.crash(id);
            }
            52..68 => {
                if let Some(id) = self.leader() {
                    self.crash(id);
                }
            }
            68..84 => {
                self.network.weather = Weather {
                    drop_per_mille: self.rng.range(0, 200),
                    duplicate_per_mille: self.rng.range(0, 100),
                    slow_per_mille: self.rng.range(0, 150),
                };
            }
            84..94 => {
                if let Some(id) = self.leader() {
                    let to = self.rng.range(1, self.ids_max() + 1);
                    let request = Request {
                        request_id: 0,
                        body: RequestBody::TransferLeader { id: to },
                    };
                    self.with_node(id, |node, _, now| {
                        node.on_client_request(NEMESIS, request, None, now);
                        Ok(())
                    })?;
                }
            }
            _ => {}
        }
        let next = self.rng.range(10, 120);
        self.at(next, Event::Nemesis);
        Ok(())
    }

    /// Asks the current leader for the membership change [`Changes::pick`] chooses, as
    /// a client's `MemberChange` request (so the replica's validation runs). Refusals (a
    /// change pending, a learner behind, a transfer under way) are part of the game.
    fn change_membership(&mut self) -> Result<(), String> {
        let Some(leader) = self.leader() else {
            return Ok(());
        };
        let spares: Vec<NodeId> = (self.options.nodes + 1..=self.ids_max()).collect();
        let Some(node) = self.nodes[index(leader)].as_ref() else {
            return Ok(());
        };
        let config = node.raw_node().raft().membership.clone();
        let Some(change) = self.changes.pick(&mut self.rng, leader, &config, &spares) else {
            return Ok(());
        };
        let body = RequestBody::MemberChange(match change {
            ConfigChange::AddLearner(id) | ConfigChange::AddVoter(id) => {
                let addrs = member(id);
                MemberChange::AddLearner {
                    id,
                    peer_addr: addrs.peer_addr.to_string(),
                    client_addr: addrs.client_addr.to_string(),
                }
            }
            ConfigChange::PromoteLearner(id) => MemberChange::Promote { id },
            ConfigChange::RemoveNode(id) => MemberChange::Remove { id },
        });
        let request = Request {
            request_id: 0,
            body,
        };
        let mut accepted = false;
        self.with_node(leader, |node, _, now| {
            // No immediate answer: proposed, the answer comes when it commits.
            accepted = node
                .on_client_request(NEMESIS, request, None, now)
                .is_none();
            Ok(())
        })?;
        if accepted {
            self.changes.on_accepted(change);
            self.report.changes += 1;
        }
        Ok(())
    }

    fn heal(&mut self) -> Result<(), String> {
        self.faults_over = true;
        self.network.heal();
        for node in self.nodes.iter_mut().flatten() {
            node.log_mut().crash_per_mille = 0;
        }
        for id in 1..=self.ids_max() {
            self.start_node(id)?;
        }
        Ok(())
    }

    /// The highest id: the initial voters, then the spares.
    fn ids_max(&self) -> u64 {
        self.options.nodes + self.options.spares
    }

    /// The live leader of the highest term, if no live member of its configuration has a
    /// higher term (a removed node, which no leader talks to, may keep an old higher term
    /// and does not count).
    fn leader(&self) -> Option<NodeId> {
        let live = self.nodes.iter().flatten().map(|n| n.raw_node().raft());
        let leader: &Raft<MemLog> = live
            .clone()
            .filter(|r| r.role == Role::Leader)
            .max_by_key(|r| r.term)?;
        let deposed = live
            .filter(|r| leader.membership.contains(r.id))
            .any(|r| r.term > leader.term);
        (!deposed).then_some(leader.id)
    }

    fn check_nodes(&mut self) -> Result<(), String> {
        for node in self.nodes.iter().flatten() {
            self.invariants.check_node(node.raw_node().raft())?;
        }
        Ok(())
    }

    /// Liveness and convergence at the end, then linearizability of the history.
    fn check_end(&mut self) -> Result<(), String> {
        if let Some(client) = self.clients.iter().position(Client::busy) {
            return Err(format!(
                "liveness: client {client} still waits {END_TICKS} ticks after the heal"
            ));
        }
        let leader = self
            .leader()
            .ok_or_else(|| "liveness: no leader at the end".to_owned())?;
        let log = &self.nodes[index(leader)]
            .as_ref()
            .expect("leader is up")
            .raw_node()
            .raft()
            .log;
        let (commit, last) = (log.committed, log.last_index());
        if commit != last {
            return Err(format!(
                "liveness: leader {leader} committed {commit} of {last} entries at the end"
            ));
        }
        let members = self.nodes[index(leader)]
            .as_ref()
            .expect("leader is up")
            .raw_node()
            .raft()
            .membership
            .clone();
        self.check_removals_told(leader)?;
        let mut images = BTreeMap::new();
        for node in self.nodes.iter().flatten() {
            let id = node.raw_node().raft().id;
            if !members.contains(id) {
                continue;
            }
            if node.kv().applied_index() != commit {
                return Err(format!(
                    "liveness: node {id} applied {} of {commit} at the end",
                    node.kv().applied_index()
                ));
            }
            images.insert(node.kv().snapshot(), id);
        }
        if images.len() != 1 {
            return Err(format!(
                "state machines differ at index {commit}: {:?}",
                images.values().collect::<Vec<_>>()
            ));
        }
        self.report.committed = commit;
        self.report.operations = self.history.len();
        check::check(&self.history).map_err(|violation| format!("not linearizable: {violation}"))
    }
}

impl Sim {
    /// Removed nodes learn their removal (thesis section 4.2.2: a removed server
    /// must be told, so its driver can stop it). A node a leader released (stopped
    /// replicating to) knows that a committed configuration removed it: its own is
    /// committed and leaves it out. And after the quiet period (no faults since the
    /// heal, every node up) the final leader has released every server it removed:
    /// one it still tracks outside its configuration would never learn it.
    fn check_removals_told(&self, leader: NodeId) -> Result<(), String> {
        for &(id, config_index) in &self.released {
            let Some(node) = self.nodes[index(id)].as_ref() else {
                continue;
            };
            let status = node.raw_node().status();
            if status.member_state() != MemberState::Removed || status.commit < config_index {
                return Err(format!(
                    "removal: node {id} was released at config index {config_index} but is \
                     {:?} with commit {} (config index {})",
                    status.member_state(),
                    status.commit,
                    status.config_index
                ));
            }
        }
        let raft = self.nodes[index(leader)]
            .as_ref()
            .expect("leader is up")
            .raw_node()
            .raft();
        let untold = raft
            .progress
            .keys()
            .copied()
            .filter(|&id| id != leader && !raft.membership.contains(id))
            .find(|&id| self.nodes[index(id)].is_some());
        if let Some(id) = untold {
            let node = self.nodes[index(id)].as_ref().expect("found up");
            let status = node.raw_node().status();
            return Err(format!(
                "removal: leader {leader} (config index {}, commit {}) still replicates to \
                 removed node {id} at the end (its role {:?}, term {}, commit {}, config \
                 index {}, state {:?})",
                raft.membership_index(),
                raft.log.committed,
                status.role,
                status.term,
                status.commit,
                status.config_index,
                status.member_state()
            ));
        }
        Ok(())
    }
}

fn crash_chance_before_sync(faults_over: bool) -> u64 {
    if faults_over {
        0
    } else {
        CRASH_BEFORE_SYNC_PER_MILLE
    }
}

/// The durable store of node `id`: in its `MemLog` while it is up.
fn durable_of<'a>(
    nodes: &'a [Option<SimNode>],
    durable: &'a [MemStore],
    id: NodeId,
) -> &'a MemStore {
    match &nodes[index(id)] {
        Some(node) => node.log().durable(),
        None => &durable[index(id)],
    }
}

fn crash_chance_after_commit(faults_over: bool) -> u64 {
    if faults_over {
        0
    } else {
        CRASH_AFTER_COMMIT_PER_MILLE
    }
}

/// The servers a leader tracks outside its configuration (removed, not released).
fn departed(raft: &Raft<MemLog>) -> Vec<NodeId> {
    if raft.role != Role::Leader {
        return Vec::new();
    }
    raft.progress
        .keys()
        .copied()
        .filter(|&id| id != raft.id && !raft.membership.contains(id))
        .collect()
}

fn index(id: NodeId) -> usize {
    (id - 1) as usize
}
