//! [`KvStore`]: applies committed commands in log order, with client sessions.
//!
//! Invariant: the store's contents are a pure function of the sequence of
//! `(index, data)` pairs given to [`KvStore::apply`] / [`KvStore::advance_applied`] and
//! of its [`KvConfig`]; nothing reads a clock or a random source, so every replica that
//! applies the same log holds the same state and produces byte-identical snapshots.

use std::collections::HashMap;

use super::bytes::{Key, Value};
use super::command::{
    Command, CommandRef, CommandResult, Op, OpResult, RmwOp, Session, decode_command_ref,
};
use super::expiry::Expiries;
use super::ordmap::OrdMap;
use super::rmw::{NUMBER_TEXT_BYTES_MAX, RMW_VALUE_BYTES_MAX};
use super::session::{Admission, SessionTable};

/// Most value bytes one transaction may read. A larger one is refused whole at apply
/// time (every replica decides alike: the limit is a constant, not configuration), so a
/// small entry of many Gets of one large value cannot make every replica build and keep
/// a huge result. The reply of a transaction within it fits the default frame.
pub const TXN_READ_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// Parameters of the state machine. They are part of its deterministic behaviour:
/// every replica of a cluster must use the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvConfig {
    /// A session not used for more than this many log indexes expires.
    pub session_idle_entries_max: u64,
    /// Results kept per session: the number of writes a client may have in flight.
    pub session_results_max: usize,
    /// The most sessions kept; registering one more expires the least recently used.
    pub sessions_max: usize,
}

impl Default for KvConfig {
    fn default() -> KvConfig {
        KvConfig {
            session_idle_entries_max: 1_000_000,
            session_results_max: 128,
            sessions_max: 100_000,
        }
    }
}

/// The replicated key-value map plus the client session table.
///
/// The map is a persistent B+tree (`kv::ordmap`) of byte-string keys and values (inline
/// when short, `Arc`-shared when long: `kv::bytes`) rather than a `HashMap`: a
/// point-in-time [`KvStore::snapshot_view`] then costs one `Arc` clone, a helper thread
/// can encode it while the loop goes on applying, and each later write copies only its
/// own path (bounded, whatever the store's size). Key order is the iteration order, so
/// snapshots are byte-identical on every replica.
#[derive(Debug, Clone)]
pub struct KvStore {
    pub(crate) config: KvConfig,
    pub(crate) data: OrdMap<Key, Value>,
    pub(crate) sessions: SessionTable,
    /// Expiry times of keys in `data` (only of keys in `data`).
    pub(crate) expiries: Expiries,
    /// The time the entry being applied is judged at (its [`Command::At`], 0 without
    /// one): what a relative expiry time left unresolved counts from. Not state: set
    /// for each entry from the entry.
    pub(crate) entry_now_ms: u64,
    /// The keys the last applied entry deleted because their expiry time had passed.
    expired: Vec<Vec<u8>>,
    /// Invariant: the highest index given to `apply` or `advance_applied`.
    pub(crate) applied_index: u64,
}

impl KvStore {
    /// An empty store at applied index 0.
    pub fn new(config: KvConfig) -> KvStore {
        KvStore {
            config,
            data: OrdMap::new(),
            sessions: SessionTable::new(),
            expiries: Expiries::default(),
            entry_now_ms: 0,
            expired: Vec::new(),
            applied_index: 0,
        }
    }

    /// The configuration the store runs with.
    pub fn config(&self) -> KvConfig {
        self.config
    }

    /// The value of `key` in the applied state (a local read: linearizable only after a
    /// ReadIndex round has confirmed the applied index, stale otherwise).
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.data.get(key).map(|value| &value[..])
    }

    /// The value of `key` as a read at time `now_ms` (absolute unix milliseconds, the
    /// reader's clock) sees it: absent when its expiry time is not after `now_ms`, even
    /// though the entry deleting it is not applied yet.
    pub fn get_at(&self, key: &[u8], now_ms: u64) -> Option<&[u8]> {
        match self.expiries.get(key) {
            Some(at) if at <= now_ms => None,
            _ => self.get(key),
        }
    }

    /// The expiry time of `key` (absolute unix milliseconds), `None` if it has none or
    /// is absent.
    pub fn expire_at(&self, key: &[u8]) -> Option<u64> {
        self.expiries.get(key)
    }

    /// The number of keys with an expiry time.
    pub fn expiring_len(&self) -> usize {
        self.expiries.len()
    }

    /// Up to `max` keys whose expiry time is not after `now_ms`, earliest first: what the
    /// leader's expiry cycle proposes to delete (`RmwOp::DeleteExpired`). O(log n + max).
    pub fn expired_keys(&self, now_ms: u64, max: usize) -> Vec<Vec<u8>> {
        self.expiries.due(now_ms, max)
    }

    /// The keys the last [`KvStore::apply`] deleted because their expiry time had
    /// passed by the entry's time (a `DeleteExpired`, or the keys an `At` command named),
    /// in the order deleted: what the `expired` keyspace events report.
    pub fn expired_by_last_apply(&self) -> &[Vec<u8>] {
        &self.expired
    }

    /// Deletes `key` if its expiry time is not after `now_ms`; returns whether it did.
    fn delete_if_expired(&mut self, key: &[u8], now_ms: u64) -> bool {
        if self.expiries.get(key).is_some_and(|at| at <= now_ms) && self.remove_key(key).is_some() {
            self.expired.push(key.to_vec());
            return true;
        }
        false
    }

    /// Sets `key` to `value` and removes its expiry time (a plain write).
    pub(crate) fn set_value(&mut self, key: &[u8], value: &[u8]) {
        self.data.insert(Key::from(key), Value::from(value));
        self.expiries.remove(key);
    }

    /// Removes `key` and its expiry time, returning its value.
    pub(crate) fn remove_key(&mut self, key: &[u8]) -> Option<Value> {
        let old = self.data.remove(key)?;
        self.expiries.remove(key);
        Some(old)
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.data.len() == 0
    }

    /// The number of open client sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The index of the last entry applied (0 before any).
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Applies the committed `Normal` entry at `index` whose payload is `data`.
    ///
    /// Returns the result to give the client that proposed it (if it is waiting). A payload
    /// that does not decode, or an `index` not above [`KvStore::applied_index`], yields
    /// [`CommandResult::Error`] and changes nothing (an undecodable entry still advances
    /// the applied index: it is committed and every replica skips it alike).
    pub fn apply(&mut self, index: u64, data: &[u8]) -> CommandResult {
        if index <= self.applied_index {
            return CommandResult::Error(format!(
                "entry {index} is not above the applied index {}",
                self.applied_index
            ));
        }
        self.advance_applied(index);
        self.expired.clear();
        self.entry_now_ms = 0;
        // Puts and deletes borrow their bytes from the entry: a put copies its key and
        // value once, into the map, instead of into owned vectors first.
        match decode_command_ref(data) {
            Ok(CommandRef::Put {
                session,
                key,
                value,
            }) => self.write(index, session, |store| {
                store.set_value(key, value);
                CommandResult::Ok
            }),
            Ok(CommandRef::Delete { session, key }) => {
                self.write(index, session, |store| match store.remove_key(key) {
                    Some(_) => CommandResult::Ok,
                    None => CommandResult::NotFound,
                })
            }
            Ok(CommandRef::Owned(command)) => self.execute(index, command),
            Err(error) => CommandResult::Error(format!("entry {index} does not decode: {error}")),
        }
    }

    /// Records that the entry at `index` was applied without a kv command (a no-op or a
    /// configuration entry), so the applied index and session expiry follow the log.
    /// An `index` not above the applied index is ignored.
    pub fn advance_applied(&mut self, index: u64) {
        if index > self.applied_index {
            self.applied_index = index;
            self.sessions
                .expire(index, self.config.session_idle_entries_max);
        }
    }

    fn execute(&mut self, index: u64, command: Command) -> CommandResult {
        match command {
            Command::At { now_ms, command } => {
                for key in command.keys() {
                    self.delete_if_expired(key, now_ms);
                }
                self.entry_now_ms = now_ms;
                self.execute(index, *command)
            }
            Command::DeleteExpired { now_ms, keys } => {
                let deleted = keys
                    .iter()
                    .filter(|key| self.delete_if_expired(key, now_ms))
                    .count();
                CommandResult::Integer(deleted as i64)
            }
            Command::Get { key } => CommandResult::Value(self.get(&key).map(<[u8]>::to_vec)),
            Command::RegisterSession => {
                self.sessions
                    .register(index, index, self.config.sessions_max);
                CommandResult::Registered { client_id: index }
            }
            write => match write.session() {
                Some(session) => self.write(index, session, |store| store.execute_write(write)),
                None => CommandResult::Error("command without a session".to_owned()),
            },
        }
    }

    /// Runs `run` for the write of `session` at `index` unless the session table already
    /// knows its answer (a retry, an expired session, a stale seq), and records its result.
    fn write(
        &mut self,
        index: u64,
        session: Session,
        run: impl FnOnce(&mut KvStore) -> CommandResult,
    ) -> CommandResult {
        match self.sessions.admit(session.client_id, session.seq, index) {
            Admission::Answer(result) => result,
            Admission::Apply => {
                let result = run(self);
                self.sessions.record(
                    session.client_id,
                    session.seq,
                    &result,
                    self.config.session_results_max,
                );
                result
            }
        }
    }

    fn execute_write(&mut self, write: Command) -> CommandResult {
        match write {
            Command::Put { key, value, .. } => {
                self.set_value(&key, &value);
                CommandResult::Ok
            }
            Command::Delete { key, .. } => match self.remove_key(&key) {
                Some(_) => CommandResult::Ok,
                None => CommandResult::NotFound,
            },
            Command::Cas {
                key, expected, new, ..
            } => {
                let current = self.get(&key);
                if current == expected.as_deref() {
                    self.set_value(&key, &new);
                    CommandResult::Ok
                } else {
                    CommandResult::CasFailed {
                        current: current.map(<[u8]>::to_vec),
                    }
                }
            }
            Command::Txn {
                compare,
                success,
                failure,
                ..
            } => {
                let succeeded = compare.iter().all(|condition| {
                    condition
                        .op
                        .holds(self.get(&condition.key), &condition.value)
                });
                let ops = if succeeded { success } else { failure };
                let result_bytes = self.txn_read_bytes(&ops);
                if result_bytes > TXN_READ_BYTES_MAX {
                    return CommandResult::Error(format!(
                        "transaction reads {result_bytes} bytes, more than the limit of \
                         {TXN_READ_BYTES_MAX}; nothing was applied"
                    ));
                }
                let results = ops.into_iter().map(|op| self.execute_op(op)).collect();
                CommandResult::Txn { succeeded, results }
            }
            Command::Rmw { op, .. } => self.apply_rmw(op).into(),
            Command::Get { .. }
            | Command::RegisterSession
            | Command::At { .. }
            | Command::DeleteExpired { .. } => CommandResult::Error("not a write".to_owned()),
            // Delivered by each node as it applies the entry; the state is unchanged.
            Command::Publish { .. } => CommandResult::Ok,
        }
    }

    /// The bytes of the values that `ops` would read, each op seeing the earlier ops'
    /// writes, without running them. A read-modify-write counts as writing the longest
    /// value it might (its condition is not evaluated here). Allocates only for a branch
    /// that writes and reads.
    fn txn_read_bytes(&self, ops: &[Op]) -> u64 {
        let mut written: HashMap<&[u8], usize> = HashMap::new();
        let mut total = 0u64;
        for op in ops {
            let len = |written: &HashMap<&[u8], usize>, key: &[u8]| match written.get(key) {
                Some(&len) => len,
                None => self.get(key).map_or(0, <[u8]>::len),
            };
            match op {
                Op::Put { key, value } => {
                    written.insert(key, value.len());
                }
                Op::Delete { key } => {
                    written.insert(key, 0);
                }
                Op::Get { key } => total = total.saturating_add(len(&written, key) as u64),
                Op::Rmw(rmw) => match rmw {
                    RmwOp::IncrBy { key, .. } | RmwOp::IncrByFloat { key, .. } => {
                        written.insert(key, NUMBER_TEXT_BYTES_MAX);
                        total = total.saturating_add(NUMBER_TEXT_BYTES_MAX as u64);
                    }
                    RmwOp::Append { key, value } => {
                        let new = len(&written, key) + value.len();
                        written.insert(key, new.min(RMW_VALUE_BYTES_MAX));
                    }
                    RmwOp::Set {
                        key, value, get, ..
                    } => {
                        let old = len(&written, key);
                        if *get {
                            total = total.saturating_add(old as u64);
                        }
                        written.insert(key, old.max(value.len()));
                    }
                    RmwOp::GetDel { key } => {
                        total = total.saturating_add(len(&written, key) as u64);
                        written.insert(key, 0);
                    }
                    RmwOp::SetIfAllAbsent { pairs } => {
                        for (key, value) in pairs {
                            let old = len(&written, key);
                            written.insert(key, old.max(value.len()));
                        }
                    }
                    RmwOp::DeleteMany { keys } => {
                        for key in keys {
                            written.insert(key, 0);
                        }
                    }
                    RmwOp::Rename { from, to, .. } | RmwOp::Copy { from, to, .. } => {
                        let moved = len(&written, from);
                        let old = len(&written, to);
                        written.insert(to, old.max(moved));
                    }
                    RmwOp::GetEx { key, .. } => {
                        total = total.saturating_add(len(&written, key) as u64);
                    }
                    // Later reads are counted at the values held now: an upper bound.
                    RmwOp::FlushAll | RmwOp::Expire { .. } | RmwOp::Persist { .. } => {}
                },
            }
        }
        total
    }

    fn execute_op(&mut self, op: Op) -> OpResult {
        match op {
            Op::Put { key, value } => {
                self.set_value(&key, &value);
                OpResult::Done
            }
            Op::Delete { key } => {
                self.remove_key(&key);
                OpResult::Done
            }
            Op::Get { key } => OpResult::Value(self.get(&key).map(<[u8]>::to_vec)),
            Op::Rmw(op) => self.apply_rmw(op),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::kv::command::{Compare, CompareOp, Session, command_to_vec, strategy};

    fn store_with_session() -> (KvStore, u64) {
        let mut store = KvStore::new(KvConfig::default());
        let result = store.apply(1, &command_to_vec(&Command::RegisterSession));
        assert_eq!(result, CommandResult::Registered { client_id: 1 });
        (store, 1)
    }

    /// Goal: a transaction that would read more than TXN_READ_BYTES_MAX is refused
    /// whole (none of its writes applied), counting values its own earlier ops wrote,
    /// and one just within the limit runs.
    #[test]
    fn a_transaction_reading_too_much_is_refused_whole() {
        let (mut store, client_id) = store_with_session();
        let half = (TXN_READ_BYTES_MAX / 2) as usize;
        assert_eq!(
            store.apply(2, &put(client_id, 1, b"big", &vec![7; half])),
            CommandResult::Ok
        );
        let txn = |seq: u64, ops: Vec<Op>| {
            command_to_vec(&Command::Txn {
                session: Session { client_id, seq },
                compare: Vec::new(),
                success: ops,
                failure: Vec::new(),
            })
        };
        let get = || Op::Get {
            key: b"big".to_vec(),
        };
        let within = store.apply(3, &txn(2, vec![get(), get()]));
        assert!(matches!(
            within,
            CommandResult::Txn {
                succeeded: true,
                ..
            }
        ));
        let marker = Op::Put {
            key: b"marker".to_vec(),
            value: b"x".to_vec(),
        };
        let over = store.apply(4, &txn(3, vec![marker, get(), get(), get()]));
        assert!(
            matches!(&over, CommandResult::Error(text) if text.contains("nothing was applied")),
            "{over:?}"
        );
        assert_eq!(store.get(b"marker"), None);
        let rewrite = Op::Put {
            key: b"big".to_vec(),
            value: vec![1; half + 1],
        };
        let own_write = store.apply(5, &txn(4, vec![rewrite, get(), get()]));
        assert!(
            matches!(own_write, CommandResult::Error(_)),
            "{own_write:?}"
        );
        assert_eq!(store.get(b"big").map(<[u8]>::len), Some(half));
    }

    fn put(client_id: u64, seq: u64, key: &[u8], value: &[u8]) -> Vec<u8> {
        command_to_vec(&Command::Put {
            session: Session { client_id, seq },
            key: key.to_vec(),
            value: value.to_vec(),
        })
    }

    #[test]
    fn commands_produce_their_documented_results() {
        let (mut store, id) = store_with_session();
        let session = |seq| Session { client_id: id, seq };
        let cases: Vec<(Command, CommandResult)> = vec![
            (
                Command::Get { key: b"a".to_vec() },
                CommandResult::Value(None),
            ),
            (
                Command::Delete {
                    session: session(1),
                    key: b"a".to_vec(),
                },
                CommandResult::NotFound,
            ),
            (
                Command::Cas {
                    session: session(2),
                    key: b"a".to_vec(),
                    expected: None,
                    new: b"1".to_vec(),
                },
                CommandResult::Ok,
            ),
            (
                Command::Cas {
                    session: session(3),
                    key: b"a".to_vec(),
                    expected: Some(b"0".to_vec()),
                    new: b"2".to_vec(),
                },
                CommandResult::CasFailed {
                    current: Some(b"1".to_vec()),
                },
            ),
            (
                Command::Txn {
                    session: session(4),
                    compare: vec![Compare {
                        key: b"a".to_vec(),
                        op: CompareOp::Eq,
                        value: b"1".to_vec(),
                    }],
                    success: vec![
                        Op::Put {
                            key: b"b".to_vec(),
                            value: b"x".to_vec(),
                        },
                        Op::Delete { key: b"a".to_vec() },
                        Op::Get { key: b"b".to_vec() },
                        Op::Get { key: b"a".to_vec() },
                    ],
                    failure: vec![Op::Put {
                        key: b"c".to_vec(),
                        value: b"y".to_vec(),
                    }],
                },
                CommandResult::Txn {
                    succeeded: true,
                    results: vec![
                        OpResult::Done,
                        OpResult::Done,
                        OpResult::Value(Some(b"x".to_vec())),
                        OpResult::Value(None),
                    ],
                },
            ),
            (
                Command::Delete {
                    session: session(5),
                    key: b"b".to_vec(),
                },
                CommandResult::Ok,
            ),
            (
                Command::Put {
                    session: Session {
                        client_id: 99,
                        seq: 1,
                    },
                    key: b"z".to_vec(),
                    value: vec![],
                },
                CommandResult::SessionExpired,
            ),
        ];
        for (i, (command, want)) in cases.into_iter().enumerate() {
            let got = store.apply(2 + i as u64, &command_to_vec(&command));
            assert_eq!(got, want, "#{i}: {command:?}");
        }
        assert!(store.is_empty());
        assert_eq!(store.get(b"z"), None, "an expired session writes nothing");
    }

    #[test]
    fn a_retried_write_is_applied_once() {
        // Reference: Raft thesis §6.3. The retry of seq 1 must not undo the later put.
        let (mut store, id) = store_with_session();
        assert_eq!(
            store.apply(2, &put(id, 1, b"k", b"first")),
            CommandResult::Ok
        );
        assert_eq!(
            store.apply(3, &put(id, 2, b"k", b"second")),
            CommandResult::Ok
        );
        assert_eq!(
            store.apply(4, &put(id, 1, b"k", b"first")),
            CommandResult::Ok
        );
        assert_eq!(store.get(b"k"), Some(&b"second"[..]));
    }

    #[test]
    fn a_stale_retry_beyond_the_result_window_is_refused() {
        let config = KvConfig {
            session_results_max: 2,
            ..KvConfig::default()
        };
        let mut store = KvStore::new(config);
        store.apply(1, &command_to_vec(&Command::RegisterSession));
        for seq in 1..=3 {
            store.apply(1 + seq, &put(1, seq, b"k", &[seq as u8]));
        }
        assert_eq!(
            store.apply(5, &put(1, 1, b"k", b"old")),
            CommandResult::StaleSequence
        );
        assert_eq!(store.get(b"k"), Some(&[3u8][..]));
    }

    #[test]
    fn sessions_expire_by_log_position() {
        let config = KvConfig {
            session_idle_entries_max: 10,
            ..KvConfig::default()
        };
        let mut store = KvStore::new(config);
        store.apply(1, &command_to_vec(&Command::RegisterSession));
        store.advance_applied(11);
        assert_eq!(store.session_count(), 1, "idle for exactly the limit: kept");
        store.advance_applied(12);
        assert_eq!(store.session_count(), 0);
        assert_eq!(
            store.apply(13, &put(1, 1, b"k", b"v")),
            CommandResult::SessionExpired
        );
    }

    #[test]
    fn bad_entries_give_errors_not_panics() {
        let (mut store, id) = store_with_session();
        assert!(matches!(
            store.apply(2, &[1, 2, 3]),
            CommandResult::Error(_)
        ));
        assert_eq!(
            store.applied_index(),
            2,
            "a committed bad entry is still applied"
        );
        assert!(matches!(
            store.apply(2, &put(id, 1, b"k", b"v")),
            CommandResult::Error(_)
        ));
        assert_eq!(store.get(b"k"), None);
    }

    proptest! {
        /// Goal: the store behaves like a plain map for every command sequence. Method:
        /// apply random commands through fresh sessions and compare with a model map.
        #[test]
        fn matches_a_model_map(commands in proptest::collection::vec(strategy::command(), 0..40)) {
            let (mut store, id) = store_with_session();
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            for (i, command) in commands.into_iter().enumerate() {
                let seq = i as u64 + 1;
                let command = with_session(command, Session { client_id: id, seq });
                store.apply(seq + 1, &command_to_vec(&command));
                apply_model(&mut model, &command);
            }
            let got: BTreeMap<Vec<u8>, Vec<u8>> =
                store.data.view().iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            prop_assert_eq!(store.len(), model.len());
            prop_assert_eq!(got, model);
        }
    }

    fn with_session(command: Command, new: Session) -> Command {
        match command {
            Command::Put { key, value, .. } => Command::Put {
                session: new,
                key,
                value,
            },
            Command::Delete { key, .. } => Command::Delete { session: new, key },
            Command::Cas {
                key,
                expected,
                new: value,
                ..
            } => Command::Cas {
                session: new,
                key,
                expected,
                new: value,
            },
            Command::Txn {
                compare,
                success,
                failure,
                ..
            } => Command::Txn {
                session: new,
                compare,
                success,
                failure,
            },
            Command::Rmw { op, .. } => Command::Rmw { session: new, op },
            other => other,
        }
    }

    fn apply_model(model: &mut BTreeMap<Vec<u8>, Vec<u8>>, command: &Command) {
        let run = |model: &mut BTreeMap<Vec<u8>, Vec<u8>>, op: &Op| match op {
            Op::Put { key, value } => {
                model.insert(key.clone(), value.clone());
            }
            Op::Delete { key } => {
                model.remove(key);
            }
            Op::Get { .. } => {}
            Op::Rmw(rmw) => crate::kv::rmw::tests::apply_model(model, rmw),
        };
        match command {
            Command::Put { key, value, .. } => {
                model.insert(key.clone(), value.clone());
            }
            Command::Delete { key, .. } => {
                model.remove(key);
            }
            Command::Cas {
                key, expected, new, ..
            } => {
                if model.get(key) == expected.as_ref() {
                    model.insert(key.clone(), new.clone());
                }
            }
            Command::Txn {
                compare,
                success,
                failure,
                ..
            } => {
                let ok = compare
                    .iter()
                    .all(|c| c.op.holds(model.get(&c.key).map(Vec::as_slice), &c.value));
                for op in if ok { success } else { failure } {
                    run(model, op);
                }
            }
            Command::Rmw { op, .. } => crate::kv::rmw::tests::apply_model(model, op),
            Command::At { command, .. } => apply_model(model, command),
            // The model holds no expiry times: the model tests propose no timed deletes.
            Command::Get { .. }
            | Command::RegisterSession
            | Command::Publish { .. }
            | Command::DeleteExpired { .. } => {}
        }
    }
}
