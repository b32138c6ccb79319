//! Unit tests of the replica's fail-stop rule: a log store failure while the core reads
//! the log is an error of `step` (the driver stops), a refused message is not.
//! Method: node 1 of a three-node cluster over an in-memory log whose reads can be made
//! to fail, fed a vote request (the core reads its last term to answer it).

use std::cell::Cell;

use super::*;
use crate::codec::client::Response;
use crate::kv::SnapshotView;
use crate::raft::message::{
    Configuration, HardState, MessageBody, SnapshotChunk, SnapshotMeta, VoteRequest,
};
use crate::raft::{InitialState, LogStore, MemStore};

/// An in-memory log whose reads fail while `failing` is set.
struct FailingLog {
    store: MemStore,
    failing: Cell<bool>,
}

impl FailingLog {
    fn check(&self) -> Result<(), StoreError> {
        if self.failing.get() {
            return Err(StoreError::Failed("injected read failure".into()));
        }
        Ok(())
    }
}

impl LogStore for FailingLog {
    fn initial_state(&self) -> Result<InitialState, StoreError> {
        self.store.initial_state()
    }
    fn compacted(&self) -> (u64, u64) {
        self.store.compacted()
    }
    fn last_index(&self) -> u64 {
        self.store.last_index()
    }
    fn term(&self, index: u64) -> Result<u64, StoreError> {
        self.check()?;
        self.store.term(index)
    }
    fn entries(&self, low: u64, high: u64, bytes_max: u64) -> Result<Vec<Entry>, StoreError> {
        self.check()?;
        self.store.entries(low, high, bytes_max)
    }
    fn snapshot_meta(&self) -> SnapshotMeta {
        self.store.snapshot_meta()
    }
    fn snapshot_bytes(&self) -> u64 {
        self.store.snapshot_bytes()
    }
    fn snapshot_chunk(&self, offset: u64, bytes_max: u64) -> Result<Vec<u8>, StoreError> {
        self.store.snapshot_chunk(offset, bytes_max)
    }
}

impl ReplicaLog for FailingLog {
    fn snapshot_index(&self) -> u64 {
        self.store.compacted().0
    }
    fn set_hard_state(&mut self, hard_state: HardState) {
        self.store.set_hard_state(hard_state);
    }
    fn hard_state_unsaved(&self) -> bool {
        false
    }
    fn save_hard_state(&mut self) -> Result<(), WriteFailure> {
        Ok(())
    }
    fn write_snapshot_chunk(&mut self, chunk: &SnapshotChunk) -> Result<(), WriteFailure> {
        self.store.write_snapshot_chunk(chunk);
        Ok(())
    }
    fn install_snapshot(&mut self, meta: SnapshotMeta) -> Result<(), WriteFailure> {
        self.store.apply_snapshot(meta);
        Ok(())
    }
    fn append(&mut self, entries: &[Entry]) -> Result<(), WriteFailure> {
        self.store.append(entries);
        Ok(())
    }
    fn sync(&mut self) -> Result<SyncOutcome, WriteFailure> {
        Ok(SyncOutcome::Clean)
    }
    fn compact_saved(&mut self, _meta: SnapshotMeta) -> Result<(), WriteFailure> {
        Err(WriteFailure::Fatal("these tests save no snapshot".into()))
    }
    fn snapshot_source(&self) -> Result<Box<dyn std::io::Read + Send>, StoreError> {
        let data = self.store.stored_snapshot().data.clone();
        Ok(Box::new(std::io::Cursor::new(data)))
    }
    fn log_bytes(&self) -> u64 {
        0
    }
    fn log_bytes_since_snapshot(&self) -> u64 {
        0
    }
}

/// A writer whose jobs never finish (these tests take no snapshot).
struct NoSnapshots;

impl SnapshotWriter for NoSnapshots {
    fn start(&mut self, _meta: SnapshotMeta, _view: SnapshotView) -> Result<(), Error> {
        Ok(())
    }
    fn poll(&mut self) -> SnapshotPoll {
        SnapshotPoll::Running
    }
    fn start_restore(
        &mut self,
        _input: Box<dyn std::io::Read + Send>,
        _len: u64,
        _config: KvConfig,
    ) -> Result<(), Error> {
        Err(Error::SnapshotWrite(
            "these tests receive no snapshot".into(),
        ))
    }
    fn poll_restore(&mut self) -> Option<Result<KvStore, crate::kv::Error>> {
        None
    }
}

/// Drops everything.
struct Discard;

impl Outbox for Discard {
    fn send(&mut self, _message: &Message) -> usize {
        0
    }
    fn reply(&mut self, _client: ClientRef, _response: Response) {}
    fn flush_now(&mut self) {}
}

fn replica() -> Replica<FailingLog, NoSnapshots> {
    replica_over(MemStore::new(Configuration::new([1, 2, 3], [])))
}

fn replica_over(store: MemStore) -> Replica<FailingLog, NoSnapshots> {
    let text = r#"
node_id = 1
cluster_id = 1
data_dir = "unused"
listen_peer = "127.0.0.1:17001"
listen_client = "127.0.0.1:18001"

[[members]]
id = 1
peer_addr = "127.0.0.1:17001"
client_addr = "127.0.0.1:18001"
"#;
    let config = Config::parse(text, std::path::Path::new("node.toml")).expect("config parses");
    let log = FailingLog {
        store,
        failing: Cell::new(false),
    };
    let raft_config = raft_config(&config);
    Replica::new(config, raft_config, log, NoSnapshots, 1).expect("replica starts")
}

fn vote_request(term: u64) -> Message {
    Message {
        from: 2,
        to: 1,
        term,
        body: MessageBody::Vote(VoteRequest {
            last_log_index: 0,
            last_log_term: 0,
            leadership_transfer: false,
        }),
    }
}

// Goal: a store failure while the core handles a message stops the replica (an error
// of `step`, which the server turns into a stop at its next turn), instead of a
// warning after which the node goes on with a log it cannot read.
#[test]
fn a_store_failure_in_step_is_an_error() {
    let mut replica = replica();
    replica.before_sleep(0, &mut Discard).expect("turn");
    replica.log().failing.set(true);
    match replica.step(vote_request(5)) {
        Err(Error::Store(StoreError::Failed(what))) => {
            assert!(what.to_string().contains("injected"))
        }
        other => panic!("step with a failing store: {other:?}"),
    }
}

// Goal: a message the core refuses or ignores (a stale term) is not an error: only
// storage failures stop the replica.
#[test]
fn a_stale_message_is_not_an_error() {
    let mut replica = replica();
    replica
        .step(vote_request(5))
        .expect("a vote request is handled");
    replica.before_sleep(0, &mut Discard).expect("turn");
    replica
        .step(vote_request(1))
        .expect("a stale vote request is only dropped");
    replica.before_sleep(0, &mut Discard).expect("turn");
    assert_eq!(replica.raw_node().raft().term, 5);
}

// Goal: the NOSPACE alarm going up and down is one event each, not one per turn.
#[test]
fn the_nospace_alarm_is_an_event_when_it_changes() {
    let mut replica = replica();
    replica.before_sleep(0, &mut Discard).expect("turn");
    replica.nospace.raise(alarm::Cause::Snapshot, "test", 10);
    replica.before_sleep(10, &mut Discard).expect("turn");
    replica.before_sleep(20, &mut Discard).expect("turn");
    replica.nospace.clear(alarm::Cause::Snapshot, 30);
    replica.before_sleep(30, &mut Discard).expect("turn");
    let alarms: Vec<(u64, &str)> = replica
        .events()
        .iter()
        .map(|e| (e.at_ms, e.kind.name()))
        .filter(|(_, kind)| kind.starts_with("alarm"))
        .collect();
    assert_eq!(alarms, [(10, "alarm_raised"), (30, "alarm_cleared")]);
}

/// A replica restarting over a log of `count` committed entries of `value_bytes` each,
/// none applied.
fn replica_with_backlog(count: u64, value_bytes: usize) -> Replica<FailingLog, NoSnapshots> {
    use crate::kv::command::{Command, Session, command_to_vec};
    use crate::raft::message::{Entry, EntryKind};
    let mut store = MemStore::new(Configuration::new([1, 2, 3], []));
    let entries: Vec<Entry> = (1..=count)
        .map(|index| {
            let command = Command::Put {
                session: Session {
                    client_id: 9,
                    seq: index,
                },
                key: index.to_be_bytes().to_vec(),
                value: vec![1; value_bytes],
            };
            Entry {
                index,
                term: 1,
                kind: EntryKind::Normal,
                data: command_to_vec(&command).into(),
            }
        })
        .collect();
    store.append(&entries);
    store.set_hard_state(HardState {
        term: 1,
        vote: 0,
        commit: count,
    });
    replica_over(store)
}

// Goal: a long backlog of committed entries (a restart replaying its log) is applied a
// bounded share per turn, the replica asking for the next turn without sleep until it
// is done, instead of in one long turn.
#[test]
fn a_long_backlog_is_applied_over_several_turns() {
    let (count, value_bytes) = (2000u64, 1024);
    let mut replica = replica_with_backlog(count, value_bytes);
    let turns_min = count * value_bytes as u64 / APPLY_BYTES_PER_TURN;
    let mut turns = 0;
    let mut applied = 0;
    loop {
        replica.before_sleep(0, &mut Discard).expect("turn");
        turns += 1;
        let now = replica.kv().applied_index();
        assert!(now > applied, "turn {turns} applied something");
        let bytes = (now - applied) * (value_bytes as u64 + 24);
        assert!(
            bytes <= APPLY_BYTES_PER_TURN + APPLY_BYTES_PER_READY + value_bytes as u64 + 100,
            "turn {turns} applied {bytes} bytes"
        );
        applied = now;
        if !replica.has_apply_backlog() {
            break;
        }
        assert!(turns < 100, "bounded");
    }
    assert_eq!(applied, count);
    assert!(turns >= turns_min, "{turns} turns, at least {turns_min}");
}
