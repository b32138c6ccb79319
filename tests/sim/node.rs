//! One simulated server: the production [`Replica`] (the same type `raftkv-server`
//! runs) over an in-memory log with a simulated disk ([`MemLog`]) and a deterministic
//! snapshot executor ([`StepSnapshots`]); what it sends is collected in a [`SimOutbox`].
//!
//! Durability model: `MemLog::volatile` is the page cache the core reads; `durable` is
//! what a sync made durable. Every write goes to the page cache and is queued; `sync`
//! replays the queue on `durable`. A crash discards the replica and keeps `durable`
//! only, so unsynced writes are lost. A crash during a sync (drawn per sync with
//! something to write, `crash_per_mille`) fails the sync: the replica's `before_sleep`
//! returns the error (the server stops there too), so the after-sync messages never
//! leave, while what it sent or answered before the sync (the leader's appends and its
//! apply-before-sync replies) is out.
//!
//! A snapshot job finishes after a seeded number of polls (one per `before_sleep`), so
//! snapshots complete while writes go on; its data counts durable when it finishes, as
//! the server's snapshot file is synced before the thread reports.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use raftkv::codec::client::Response;
use raftkv::config::{Config, LimitsConfig, Member, SnapshotConfig};
use raftkv::kv::{KvConfig, KvStore, SnapshotView};
use raftkv::raft::rng::Rng;
use raftkv::raft::{
    Entry, HardState, InitialState, LogStore, MemStore, Message, NodeId, Snapshot, SnapshotChunk,
    SnapshotMeta, StoreError,
};
use raftkv::replica::alarm::WriteFailure;
use raftkv::replica::{
    self, ClientRef, Outbox, Replica, ReplicaLog, SnapshotPoll, SnapshotWriter, SyncOutcome,
};

/// A simulated server.
pub type SimNode = Replica<MemLog, StepSnapshots>;

/// Entries applied since the last snapshot before the replica takes the next one, small
/// so that snapshots (and InstallSnapshot to lagging followers) happen in most runs.
const SNAPSHOT_ENTRIES: u64 = 48;
/// A request the replica has not answered within this many units gets Unavailable
/// (below the clients' own timeout, so both paths run).
pub const REQUEST_TIMEOUT_UNITS: u64 = 250;
/// How long a request waits for a leader to be known.
const LEADER_WAIT_UNITS: u64 = 100;
/// Most polls a snapshot job takes.
const SNAPSHOT_POLLS_MAX: u64 = 12;

/// A write not yet synced.
#[derive(Debug, Clone)]
enum Write {
    HardState(HardState),
    SnapshotChunk(SnapshotChunk),
    Snapshot(SnapshotMeta),
    Entries(Vec<Entry>),
}

/// The simulated disk of one node (see the module docs).
#[derive(Debug)]
pub struct MemLog {
    volatile: MemStore,
    durable: MemStore,
    unsynced: Vec<Write>,
    /// The hard state last written (to the page cache).
    saved_hard_state: HardState,
    rng: Rng,
    /// Chance per thousand syncs with something to write that the node crashes in it.
    pub crash_per_mille: u64,
    crashed: bool,
    /// Batches appended since the last [`MemLog::take_appended`], with the term of the
    /// entry before each batch (`None` when compacted away), for Log Matching.
    appended: Vec<(Vec<Entry>, Option<u64>)>,
    /// The snapshot file of this node's directory, shared with its [`StepSnapshots`].
    saved: SavedFile,
}

/// The snapshot file a [`StepSnapshots`] job saved and [`MemLog::compact_saved`] adopts:
/// the applied index it covers and the encoded data, as in the server's directory.
type SavedFile = Arc<Mutex<Option<(u64, Vec<u8>)>>>;

impl MemLog {
    /// A disk holding `durable`, its page cache equal to it.
    pub fn new(durable: MemStore, seed: u64, crash_per_mille: u64) -> MemLog {
        MemLog {
            saved_hard_state: durable.hard_state(),
            volatile: durable.clone(),
            durable,
            unsynced: Vec::new(),
            rng: Rng::new(seed),
            crash_per_mille,
            crashed: false,
            appended: Vec::new(),
            saved: SavedFile::default(),
        }
    }

    /// What survives a crash.
    pub fn durable(&self) -> &MemStore {
        &self.durable
    }

    /// Takes what survives a crash (the node is discarded).
    pub fn take_durable(&mut self) -> MemStore {
        std::mem::take(&mut self.durable)
    }

    /// Whether a sync crashed.
    pub fn crashed(&self) -> bool {
        self.crashed
    }

    /// The batches appended since the last call.
    pub fn take_appended(&mut self) -> Vec<(Vec<Entry>, Option<u64>)> {
        std::mem::take(&mut self.appended)
    }
}

/// Replays one write on `store`. Entries at or below its compaction point are skipped:
/// a snapshot of this node's own, saved meanwhile, already covers them.
fn replay(store: &mut MemStore, write: Write) {
    match write {
        Write::HardState(hard_state) => store.set_hard_state(hard_state),
        Write::SnapshotChunk(chunk) => store.write_snapshot_chunk(&chunk),
        Write::Snapshot(meta) => store.apply_snapshot(meta),
        Write::Entries(entries) => {
            let compacted = store.compacted().0;
            let kept: Vec<Entry> = entries
                .into_iter()
                .filter(|e| e.index > compacted)
                .collect();
            store.append(&kept);
        }
    }
}

impl LogStore for MemLog {
    fn initial_state(&self) -> Result<InitialState, StoreError> {
        self.volatile.initial_state()
    }
    fn compacted(&self) -> (u64, u64) {
        self.volatile.compacted()
    }
    fn last_index(&self) -> u64 {
        self.volatile.last_index()
    }
    fn term(&self, index: u64) -> Result<u64, StoreError> {
        self.volatile.term(index)
    }
    fn entries(&self, low: u64, high: u64, bytes_max: u64) -> Result<Vec<Entry>, StoreError> {
        self.volatile.entries(low, high, bytes_max)
    }
    fn snapshot_meta(&self) -> SnapshotMeta {
        self.volatile.snapshot_meta()
    }
    fn snapshot_bytes(&self) -> u64 {
        self.volatile.snapshot_bytes()
    }
    fn snapshot_chunk(&self, offset: u64, bytes_max: u64) -> Result<Vec<u8>, StoreError> {
        self.volatile.snapshot_chunk(offset, bytes_max)
    }
}

impl ReplicaLog for MemLog {
    fn snapshot_index(&self) -> u64 {
        self.volatile.compacted().0
    }

    fn set_hard_state(&mut self, hard_state: HardState) {
        self.volatile.set_hard_state(hard_state);
    }

    /// Unlike the WAL, the commit index is written too (and synced with the turn): a
    /// removed node that crashes and restarts still knows its removal committed (the
    /// server stops such a node for good instead, with its removal marker).
    fn hard_state_unsaved(&self) -> bool {
        self.saved_hard_state != self.volatile.hard_state()
    }

    fn save_hard_state(&mut self) -> Result<(), WriteFailure> {
        if self.hard_state_unsaved() {
            let wanted = self.volatile.hard_state();
            self.unsynced.push(Write::HardState(wanted));
            self.saved_hard_state = wanted;
        }
        Ok(())
    }

    fn write_snapshot_chunk(&mut self, chunk: &SnapshotChunk) -> Result<(), WriteFailure> {
        self.volatile.write_snapshot_chunk(chunk);
        self.unsynced.push(Write::SnapshotChunk(chunk.clone()));
        Ok(())
    }

    fn install_snapshot(&mut self, meta: SnapshotMeta) -> Result<(), WriteFailure> {
        self.volatile.apply_snapshot(meta.clone());
        self.unsynced.push(Write::Snapshot(meta));
        Ok(())
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), WriteFailure> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let prev_term = self.volatile.term(first.index - 1).ok();
        self.appended.push((entries.to_vec(), prev_term));
        self.volatile.append(entries);
        self.unsynced.push(Write::Entries(entries.to_vec()));
        Ok(())
    }

    fn sync(&mut self) -> Result<SyncOutcome, WriteFailure> {
        if self.unsynced.is_empty() {
            return Ok(SyncOutcome::Clean);
        }
        if self.rng.range(0, 1000) < self.crash_per_mille {
            self.crashed = true;
            return Err(WriteFailure::Fatal(
                "simulated crash during the sync".into(),
            ));
        }
        for write in self.unsynced.drain(..) {
            replay(&mut self.durable, write);
        }
        Ok(SyncOutcome::Flushed { micros: 0 })
    }

    /// Takes the data from the snapshot file the executor saved ([`SavedFile`]).
    fn compact_saved(&mut self, meta: SnapshotMeta) -> Result<(), WriteFailure> {
        let saved = self
            .saved
            .lock()
            .map_err(|_| WriteFailure::Fatal("poisoned".into()))?
            .take();
        let data = match saved {
            Some((index, data)) if index == meta.index => data,
            _ => return Err(WriteFailure::Fatal("no saved snapshot file".into())),
        };
        let snapshot = Snapshot { meta, data };
        self.durable.compact(snapshot.clone());
        self.volatile.compact(snapshot);
        Ok(())
    }

    fn snapshot_source(&self) -> Result<Box<dyn std::io::Read + Send>, StoreError> {
        let data = self.volatile.stored_snapshot().data.clone();
        Ok(Box::new(std::io::Cursor::new(data)))
    }

    fn log_bytes(&self) -> u64 {
        0
    }

    /// Read every turn, so computed over the stored entries without copying them.
    fn log_bytes_since_snapshot(&self) -> u64 {
        self.volatile
            .all_entries()
            .iter()
            .map(|e| e.data.len() as u64)
            .sum()
    }
}

/// Snapshot jobs that finish after a seeded number of polls.
pub struct StepSnapshots {
    job: Option<(SnapshotView, u64)>,
    /// A restore's result and the polls left before it is handed out.
    restore: Option<(Result<KvStore, raftkv::kv::Error>, u64)>,
    rng: Rng,
    saved: SavedFile,
}

impl SnapshotWriter for StepSnapshots {
    fn start(&mut self, _meta: SnapshotMeta, view: SnapshotView) -> Result<(), replica::Error> {
        let polls = self.rng.range(1, SNAPSHOT_POLLS_MAX + 1);
        self.job = Some((view, polls));
        Ok(())
    }

    /// Decodes at once; the result is handed out after a seeded number of polls, so
    /// committed entries are held meanwhile and heartbeats answered.
    fn start_restore(
        &mut self,
        mut input: Box<dyn std::io::Read + Send>,
        len: u64,
        config: KvConfig,
    ) -> Result<(), replica::Error> {
        let polls = self.rng.range(1, SNAPSHOT_POLLS_MAX + 1);
        let mut data = Vec::new();
        let result = match input.read_to_end(&mut data) {
            Ok(_) => KvStore::restore_from(config, &data[..], len),
            Err(e) => Err(raftkv::kv::Error::Read(e.to_string())),
        };
        self.restore = Some((result, polls));
        Ok(())
    }

    fn poll_restore(&mut self) -> Option<Result<KvStore, raftkv::kv::Error>> {
        match self.restore.take() {
            Some((result, polls)) if polls <= 1 => Some(result),
            Some((result, polls)) => {
                self.restore = Some((result, polls - 1));
                None
            }
            None => None,
        }
    }

    fn poll(&mut self) -> SnapshotPoll {
        match self.job.take() {
            None => SnapshotPoll::Running,
            Some((view, polls)) if polls <= 1 => {
                let data = view.encode();
                let bytes = data.len() as u64;
                match self.saved.lock() {
                    Ok(mut saved) => *saved = Some((view.applied_index(), data)),
                    Err(_) => return SnapshotPoll::Failed(WriteFailure::Fatal("poisoned".into())),
                }
                SnapshotPoll::Written(bytes)
            }
            Some((view, polls)) => {
                self.job = Some((view, polls - 1));
                SnapshotPoll::Running
            }
        }
    }
}

/// What one step of a replica sent.
#[derive(Debug, Default)]
pub struct SimOutbox {
    /// Raft messages to put on the network.
    pub messages: Vec<Message>,
    /// Answers to clients.
    pub replies: Vec<(ClientRef, Response)>,
}

impl Outbox for SimOutbox {
    fn send(&mut self, message: &Message) -> usize {
        self.messages.push(message.clone());
        1
    }
    fn reply(&mut self, client: ClientRef, response: Response) {
        self.replies.push((client, response));
    }
    fn flush_now(&mut self) {}
}

/// The made-up addresses of node `id` (never bound: the simulation has no sockets;
/// they only name the leader in redirects).
pub fn member(id: NodeId) -> Member {
    let port = |base: u64| {
        format!("127.0.0.1:{}", base + id)
            .parse()
            .expect("an address")
    };
    Member {
        id,
        peer_addr: port(17_000),
        client_addr: port(18_000),
    }
}

/// The node configuration of simulated node `id` among `ids_max` nodes.
fn node_config(id: NodeId, ids_max: u64) -> Config {
    let me = member(id);
    Config {
        node_id: id,
        cluster_id: 1,
        data_dir: PathBuf::new(),
        listen_peer: me.peer_addr,
        listen_client: me.client_addr,
        listen_redis: None,
        listen_http: None,
        members: (1..=ids_max).map(member).collect(),
        raft: Default::default(),
        limits: LimitsConfig {
            request_timeout_ms: REQUEST_TIMEOUT_UNITS,
            leader_wait_ms: LEADER_WAIT_UNITS,
            ..LimitsConfig::default()
        },
        storage: Default::default(),
        snapshot: SnapshotConfig {
            threshold_entries: SNAPSHOT_ENTRIES,
            // The entry floor alone decides, so snapshots (and InstallSnapshot) stay
            // frequent whatever the state machine's size.
            log_growth_percent: 1,
            ..SnapshotConfig::default()
        },
        log: Default::default(),
        redis: Default::default(),
        tls: Default::default(),
        security: Default::default(),
    }
}

/// The Raft settings of the simulated cluster: small messages and chunks and a short
/// inflight window, so flow control and chunked snapshots are exercised.
fn raft_config(id: NodeId) -> raftkv::raft::Config {
    let mut config = raftkv::raft::Config::new(id);
    config.inflight_count_max = 4;
    config.message_bytes_max = 1;
    config.snapshot_chunk_bytes_max = 128;
    config.committed_bytes_max = 512;
    config
}

/// How a node (re)starts.
pub struct Start<'a> {
    /// The node.
    pub id: NodeId,
    /// Nodes in the simulation.
    pub ids_max: u64,
    /// Its durable store.
    pub durable: &'a MemStore,
    /// Seeds its RNGs (core, disk, snapshot executor).
    pub rng: &'a mut Rng,
    /// See [`MemLog::crash_per_mille`].
    pub crash_per_mille: u64,
    /// Core rules switched off.
    pub faults: raftkv::raft::core::Faults,
    /// Driver rules switched off.
    pub replica_faults: replica::Faults,
    /// [`raftkv::raft::Config::promote_distance_max`].
    pub promote_distance_max: u64,
}

/// A node (re)starting from its durable store.
pub fn start(start: Start<'_>) -> Result<SimNode, String> {
    let mut raft = raft_config(start.id);
    raft.faults = start.faults;
    raft.promote_distance_max = start.promote_distance_max;
    let log = MemLog::new(
        start.durable.clone(),
        start.rng.next_u64(),
        start.crash_per_mille,
    );
    let snapshots = StepSnapshots {
        restore: None,
        job: None,
        rng: Rng::new(start.rng.next_u64()),
        saved: Arc::clone(&log.saved),
    };
    let config = node_config(start.id, start.ids_max);
    let seed = start.rng.next_u64();
    let mut node = Replica::new(config, raft, log, snapshots, seed)
        .map_err(|e| format!("node {}: start: {e}", start.id))?;
    node.set_faults(start.replica_faults);
    Ok(node)
}
