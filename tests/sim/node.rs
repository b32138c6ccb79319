//! One simulated server: the real `RawNode` over a `MemStore`, the real `KvStore`, and
//! the client requests waiting on them, driven exactly as the `Ready` contract says.
//!
//! Durability model: the `RawNode`'s own store is the page cache; `durable` is what a
//! sync has made durable. Handling a `Ready` sends `messages` at once, writes the page
//! cache, then syncs (replays the same writes on `durable`) and only then sends
//! `messages_after_sync`. A crash "before the sync" (drawn by the caller) stops after
//! the page-cache writes: the node is discarded, `durable` survives, and the after-sync
//! messages never leave. A restart builds a new `RawNode` and `KvStore` from `durable`.

use std::collections::BTreeMap;

use raftkv::kv::{CommandResult, KvConfig, KvStore};
use raftkv::raft::{Config, EntryKind, Error, LogStore, MemStore, Message, NodeId, Ready};

use super::invariants::Invariants;

/// Entries kept in the log beyond the applied index before the node compacts, small so
/// that snapshots (and InstallSnapshot to lagging followers) happen in most runs.
const COMPACT_ENTRIES_MIN: u64 = 48;

/// Who waits for an answer: a client's operation and the attempt that asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyTo {
    /// The client.
    pub client: usize,
    /// The client's operation.
    pub op_id: u64,
    /// The attempt of that operation.
    pub attempt: u32,
}

/// A client request as it reaches a node.
#[derive(Debug, Clone)]
pub enum RequestBody {
    /// An encoded kv command to propose (a write, a Get through the log, a registration).
    Propose(Vec<u8>),
    /// A linearizable read of `key` through ReadIndex.
    Read(Vec<u8>),
}

/// What a node answers.
#[derive(Debug, Clone)]
pub enum ReplyBody {
    /// The result of an applied command.
    Applied(CommandResult),
    /// The value a ReadIndex read found.
    Read(Option<Vec<u8>>),
    /// Not proposed: ask another node (the hint, if any).
    NotLeader(Option<NodeId>),
}

/// What handling inputs produced for the rest of the simulation.
#[derive(Debug, Default)]
pub struct Outputs {
    /// Raft messages to put on the network.
    pub messages: Vec<Message>,
    /// Answers to clients.
    pub replies: Vec<(ReplyTo, ReplyBody)>,
    /// Indexes first known committed by this step (for Leader Completeness).
    pub newly_committed: Vec<u64>,
}

/// A live node.
pub struct SimNode {
    /// The consensus core.
    pub raw: raftkv::raft::RawNode<MemStore>,
    /// The state machine.
    pub kv: KvStore,
    /// Proposed writes by index: the term they were proposed in, and who waits.
    writes: BTreeMap<u64, (u64, ReplyTo)>,
    /// ReadIndex reads by context number, before their `ReadState` arrives.
    reads: BTreeMap<u64, (ReplyTo, Vec<u8>)>,
    /// Confirmed reads waiting for the state machine to reach their index.
    confirmed_reads: Vec<(u64, ReplyTo, Vec<u8>)>,
    read_context_next: u64,
}

/// The Raft settings of the simulated cluster: small messages and chunks and a short
/// inflight window, so flow control and chunked snapshots are exercised.
pub fn raft_config(id: NodeId, applied: u64) -> Config {
    let mut config = Config::new(id);
    config.inflight_count_max = 4;
    config.message_bytes_max = 1;
    config.snapshot_chunk_bytes_max = 128;
    config.committed_bytes_max = 512;
    config.applied = applied;
    config
}

impl SimNode {
    /// A node (re)starting from its durable store.
    pub fn start(durable: &MemStore, config: Config, rng_seed: u64) -> Result<SimNode, String> {
        let snapshot = durable.snapshot().map_err(|e| e.to_string())?;
        let kv = if snapshot.meta.index == 0 {
            KvStore::new(KvConfig::default())
        } else {
            KvStore::restore(KvConfig::default(), &snapshot.data).map_err(|e| e.to_string())?
        };
        let raw = raftkv::raft::RawNode::new(config, durable.clone(), rng_seed)
            .map_err(|e| e.to_string())?;
        Ok(SimNode {
            raw,
            kv,
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            confirmed_reads: Vec::new(),
            read_context_next: 0,
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.raw.raft().id
    }

    /// Handles a client request: proposes it or starts a read, or answers `NotLeader`.
    pub fn handle_request(&mut self, from: ReplyTo, body: RequestBody, out: &mut Outputs) {
        let refused = match body {
            RequestBody::Propose(data) => match self.raw.propose(data) {
                Ok(index) => {
                    let term = self.raw.raft().term;
                    self.writes.insert(index, (term, from));
                    None
                }
                Err(error) => Some(error),
            },
            RequestBody::Read(key) => {
                let context = self.read_context_next;
                self.read_context_next += 1;
                match self.raw.read_index(context.to_le_bytes().to_vec()) {
                    Ok(()) => {
                        self.reads.insert(context, (from, key));
                        None
                    }
                    Err(error) => Some(error),
                }
            }
        };
        let hint = match refused {
            None => return,
            Some(Error::NotLeader { leader }) => leader,
            Some(_) => Some(self.id()),
        };
        out.replies.push((from, ReplyBody::NotLeader(hint)));
    }

    /// Handles every pending `Ready`. Returns `false` when `crash_before_sync` said the
    /// node crashed before syncing one (the caller discards the node).
    pub fn handle_ready(
        &mut self,
        durable: &mut MemStore,
        invariants: &mut Invariants,
        crash_before_sync: &mut dyn FnMut(&Ready) -> bool,
        out: &mut Outputs,
    ) -> Result<bool, String> {
        while self.raw.has_ready() {
            let mut ready = self.raw.ready().map_err(|e| e.to_string())?;
            if let Some(first) = ready.entries.first() {
                let prev_term = self.raw.raft().log.term(first.index - 1).ok();
                invariants.on_append(self.id(), &ready.entries, prev_term)?;
            }
            out.messages.append(&mut ready.messages);
            write_ready(self.raw.store_mut(), &ready);
            if crash_before_sync(&ready) {
                return Ok(false);
            }
            write_ready(durable, &ready);
            out.messages.append(&mut ready.messages_after_sync);
            self.apply(&mut ready, invariants, out)?;
            self.raw.advance(ready).map_err(|e| e.to_string())?;
            self.serve_reads(out);
            self.maybe_compact(durable)?;
        }
        Ok(true)
    }

    fn apply(
        &mut self,
        ready: &mut Ready,
        invariants: &mut Invariants,
        out: &mut Outputs,
    ) -> Result<(), String> {
        if let Some(snapshot) = &ready.snapshot {
            self.kv = KvStore::restore(KvConfig::default(), &snapshot.data)
                .map_err(|e| format!("node {}: snapshot restore: {e}", self.id()))?;
            let index = snapshot.meta.index;
            self.writes.retain(|&i, _| i > index);
        }
        for entry in &ready.committed_entries {
            if invariants.on_apply(self.id(), entry)? {
                out.newly_committed.push(entry.index);
            }
            let result = match entry.kind {
                EntryKind::Normal => Some(self.kv.apply(entry.index, &entry.data)),
                EntryKind::Noop | EntryKind::Config => {
                    self.kv.advance_applied(entry.index);
                    None
                }
            };
            if let Some(CommandResult::Error(message)) = &result {
                return Err(format!("node {}: kv apply error: {message}", self.id()));
            }
            let waiting = self.writes.remove(&entry.index);
            if let (Some((term, to)), Some(result)) = (waiting, result)
                && term == entry.term
            {
                out.replies.push((to, ReplyBody::Applied(result)));
            }
        }
        for state in ready.read_states.drain(..) {
            let bytes: [u8; 8] = state.context.as_slice().try_into().map_err(|_| {
                format!(
                    "node {}: read context of {} bytes",
                    self.id(),
                    state.context.len()
                )
            })?;
            if let Some((to, key)) = self.reads.remove(&u64::from_le_bytes(bytes)) {
                self.confirmed_reads.push((state.index, to, key));
            }
        }
        Ok(())
    }

    fn serve_reads(&mut self, out: &mut Outputs) {
        let applied = self.kv.applied_index();
        let kv = &self.kv;
        self.confirmed_reads.retain(|(index, to, key)| {
            if *index > applied {
                return true;
            }
            out.replies
                .push((*to, ReplyBody::Read(kv.get(key).map(<[u8]>::to_vec))));
            false
        });
    }

    fn maybe_compact(&mut self, durable: &mut MemStore) -> Result<(), String> {
        let applied = self.kv.applied_index();
        if applied < self.raw.store().first_index() + COMPACT_ENTRIES_MIN {
            return Ok(());
        }
        let snapshot = self
            .raw
            .build_snapshot(applied, self.kv.snapshot())
            .map_err(|e| format!("node {}: build_snapshot: {e}", self.id()))?;
        durable.compact(snapshot.clone());
        self.raw.store_mut().compact(snapshot);
        Ok(())
    }
}

/// Steps 4 of the `Ready` contract on one store: snapshot, entries, hard state.
fn write_ready(store: &mut MemStore, ready: &Ready) {
    if let Some(snapshot) = &ready.snapshot {
        store.apply_snapshot(snapshot.clone());
    }
    store.append(&ready.entries);
    if let Some(hard_state) = ready.hard_state {
        store.set_hard_state(hard_state);
    }
}
