//! Applying a [`RmwOp`]: the read-modify-writes of string values (INCR, APPEND, SET NX,
//! GETDEL, MSETNX, ...) decided at apply time from the values the store holds.
//!
//! Invariant: the outcome is a function of the op and the store's current values only
//! (integer and `Decimal` arithmetic, no float, no clock), so every replica applying the
//! entry writes the same bytes and gives the same answer; an op that refuses the value it
//! finds ([`OpResult::Rejected`]) writes nothing.

use super::bytes::{Key, Value};
use super::command::{OpResult, RmwOp, SetExpiry, ValueError};
use super::number::{Decimal, FloatError, parse_integer};
use super::store::KvStore;

/// The longest value a read-modify-write may make (APPEND): longer is refused with
/// Redis's "string exceeds maximum allowed size". A constant, not configuration, so
/// every replica decides alike; a value of this size still fits the default reply frame.
pub const RMW_VALUE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// The most bytes the text of an INCR or INCRBYFLOAT result takes (a sign, 21 whole
/// digits, a point and 17 fractional digits), for bounding a transaction's reply.
pub(crate) const NUMBER_TEXT_BYTES_MAX: usize = 40;

impl KvStore {
    /// Applies `op` (its session, if any, already admitted) and returns its result.
    pub(crate) fn apply_rmw(&mut self, op: RmwOp) -> OpResult {
        match op {
            RmwOp::IncrBy { key, delta } => self.incr_by(&key, delta),
            RmwOp::IncrByFloat { key, increment } => self.incr_by_float(&key, &increment),
            RmwOp::Append { key, value } => {
                let mut new = self.get(&key).map(<[u8]>::to_vec).unwrap_or_default();
                if new.len() + value.len() > RMW_VALUE_BYTES_MAX {
                    return OpResult::Rejected(ValueError::TooLarge);
                }
                new.extend_from_slice(&value);
                self.put(&key, &new);
                OpResult::Integer(new.len() as i64)
            }
            RmwOp::Set {
                key,
                value,
                condition,
                get,
                expiry,
            } => {
                let old = self.get(&key).map(<[u8]>::to_vec);
                let holds = condition.holds(old.as_deref());
                if holds {
                    match expiry {
                        SetExpiry::Clear => self.set_value(&key, &value),
                        SetExpiry::Keep => self.put(&key, &value),
                        SetExpiry::At(at) => {
                            self.put(&key, &value);
                            self.expiries.set(&key, at.resolve(self.entry_now_ms));
                        }
                    }
                }
                match (get, holds) {
                    (true, _) => OpResult::Value(old),
                    (false, true) => OpResult::Done,
                    (false, false) => OpResult::Unchanged,
                }
            }
            RmwOp::GetDel { key } => OpResult::Value(self.remove_key(&key).map(|old| old.to_vec())),
            RmwOp::SetIfAllAbsent { pairs } => {
                if pairs.iter().any(|(key, _)| self.get(key).is_some()) {
                    return OpResult::Integer(0);
                }
                for (key, value) in &pairs {
                    self.set_value(key, value);
                }
                OpResult::Integer(1)
            }
            RmwOp::DeleteMany { keys } => {
                let removed = keys
                    .iter()
                    .filter(|key| self.remove_key(key).is_some())
                    .count();
                OpResult::Integer(removed as i64)
            }
            RmwOp::Rename {
                from,
                to,
                only_if_absent,
            } => {
                if self.get(&from).is_none() {
                    return OpResult::Rejected(ValueError::NoSuchKey);
                }
                if only_if_absent && self.get(&to).is_some() {
                    return OpResult::Integer(0);
                }
                if from != to {
                    let expiry = self.expiries.get(&from);
                    if let Some(value) = self.remove_key(&from) {
                        self.insert_with_expiry(&to, value, expiry);
                    }
                }
                if only_if_absent {
                    OpResult::Integer(1)
                } else {
                    OpResult::Done
                }
            }
            RmwOp::Copy { from, to, replace } => {
                let Some(value) = self.data.get(&from[..]).cloned() else {
                    return OpResult::Integer(0);
                };
                if from == to || (!replace && self.get(&to).is_some()) {
                    return OpResult::Integer(0);
                }
                let expiry = self.expiries.get(&from);
                self.insert_with_expiry(&to, value, expiry);
                OpResult::Integer(1)
            }
            RmwOp::FlushAll => {
                self.data.clear();
                self.expiries.clear();
                OpResult::Done
            }
            RmwOp::Expire { key, at, condition } => {
                let at_ms = at.resolve(self.entry_now_ms);
                if self.get(&key).is_none() || !condition.holds(self.expiries.get(&key), at_ms) {
                    return OpResult::Integer(0);
                }
                self.set_expiry(&key, at_ms);
                OpResult::Integer(1)
            }
            RmwOp::Persist { key } => {
                OpResult::Integer(i64::from(self.expiries.remove(&key).is_some()))
            }
            RmwOp::GetEx { key, expiry } => {
                let value = self.get(&key).map(<[u8]>::to_vec);
                if value.is_some() {
                    match expiry {
                        SetExpiry::Keep => {}
                        SetExpiry::Clear => {
                            self.expiries.remove(&key);
                        }
                        SetExpiry::At(at) => self.set_expiry(&key, at.resolve(self.entry_now_ms)),
                    }
                }
                OpResult::Value(value)
            }
        }
    }

    /// Gives the present `key` the expiry time `at_ms`, or deletes it if that is not
    /// after the entry's time (as Redis does with a time in the past).
    fn set_expiry(&mut self, key: &[u8], at_ms: u64) {
        if at_ms <= self.entry_now_ms {
            self.remove_key(key);
        } else {
            self.expiries.set(key, at_ms);
        }
    }

    /// Writes `value` keeping the key's expiry time (APPEND, INCR, SET KEEPTTL).
    fn put(&mut self, key: &[u8], value: &[u8]) {
        self.data.insert(Key::from(key), Value::from(value));
    }

    /// Writes `value` under `key` with expiry time `expiry` (RENAME, COPY carry it).
    fn insert_with_expiry(&mut self, key: &[u8], value: Value, expiry: Option<u64>) {
        self.data.insert(Key::from(key), value);
        match expiry {
            Some(at) => self.expiries.set(key, at),
            None => {
                self.expiries.remove(key);
            }
        }
    }

    fn incr_by(&mut self, key: &[u8], delta: i64) -> OpResult {
        let current = match self.get(key) {
            None => 0,
            Some(value) => match parse_integer(value) {
                Some(current) => current,
                None => return OpResult::Rejected(ValueError::NotInteger),
            },
        };
        let Some(new) = current.checked_add(delta) else {
            return OpResult::Rejected(ValueError::Overflow);
        };
        self.put(key, new.to_string().as_bytes());
        OpResult::Integer(new)
    }

    /// Redis's order of checks: the stored value, then the increment, must be floats;
    /// then a sum with an infinity is refused, then one beyond the `Decimal` range.
    fn incr_by_float(&mut self, key: &[u8], increment: &[u8]) -> OpResult {
        let current = self.get(key).map_or(Ok(Decimal::ZERO), Decimal::parse);
        let increment = Decimal::parse(increment);
        let (current, increment) = match (current, increment) {
            (Ok(current), Ok(increment)) => (current, increment),
            (Err(FloatError::Invalid), _) | (_, Err(FloatError::Invalid)) => {
                return OpResult::Rejected(ValueError::NotFloat);
            }
            (Err(FloatError::Infinite), _) | (_, Err(FloatError::Infinite)) => {
                return OpResult::Rejected(ValueError::NanOrInfinity);
            }
            (Err(FloatError::OutOfRange), _) | (_, Err(FloatError::OutOfRange)) => {
                return OpResult::Rejected(ValueError::Overflow);
            }
        };
        let Some(new) = current.checked_add(increment) else {
            return OpResult::Rejected(ValueError::Overflow);
        };
        let text = new.to_string().into_bytes();
        self.put(key, &text);
        OpResult::Value(Some(text))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Goal: every op's Redis semantics and error texts, applied through `KvStore::apply`
    //! as committed entries (so the session path is the one that ships).
    use std::collections::BTreeMap;

    use super::*;
    use crate::kv::command::{Command, CommandResult, Op, Session, SetCondition, command_to_vec};
    use crate::kv::{KvConfig, KvStore};

    /// The effect of `op` on a plain map, written independently of `apply_rmw`, for the
    /// store's model test.
    pub(crate) fn apply_model(model: &mut BTreeMap<Vec<u8>, Vec<u8>>, op: &RmwOp) {
        match op {
            RmwOp::IncrBy { key, delta } => {
                let current = model.get(key).map_or(Some(0), |v| parse_integer(v));
                if let Some(new) = current.and_then(|c| c.checked_add(*delta)) {
                    model.insert(key.clone(), new.to_string().into_bytes());
                }
            }
            RmwOp::IncrByFloat { key, increment } => {
                let current = model
                    .get(key)
                    .map_or(Ok(Decimal::ZERO), |v| Decimal::parse(v));
                if let (Ok(current), Ok(increment)) = (current, Decimal::parse(increment))
                    && let Some(new) = current.checked_add(increment)
                {
                    model.insert(key.clone(), new.to_string().into_bytes());
                }
            }
            RmwOp::Append { key, value } => {
                let mut new = model.get(key).cloned().unwrap_or_default();
                new.extend_from_slice(value);
                if new.len() <= RMW_VALUE_BYTES_MAX {
                    model.insert(key.clone(), new);
                }
            }
            RmwOp::Set {
                key,
                value,
                condition,
                ..
            } => {
                if condition.holds(model.get(key).map(Vec::as_slice)) {
                    model.insert(key.clone(), value.clone());
                }
            }
            RmwOp::GetDel { key } => {
                model.remove(key);
            }
            RmwOp::SetIfAllAbsent { pairs } => {
                if pairs.iter().all(|(key, _)| !model.contains_key(key)) {
                    for (key, value) in pairs {
                        model.insert(key.clone(), value.clone());
                    }
                }
            }
            RmwOp::DeleteMany { keys } => {
                for key in keys {
                    model.remove(key);
                }
            }
            RmwOp::Rename {
                from,
                to,
                only_if_absent,
            } => {
                let blocked = *only_if_absent && model.contains_key(to);
                if !blocked && let Some(value) = model.remove(from) {
                    model.insert(to.clone(), value);
                }
            }
            RmwOp::Copy { from, to, replace } => {
                let blocked = from == to || (!*replace && model.contains_key(to));
                if !blocked && let Some(value) = model.get(from).cloned() {
                    model.insert(to.clone(), value);
                }
            }
            RmwOp::FlushAll => model.clear(),
            RmwOp::Expire { .. } | RmwOp::Persist { .. } | RmwOp::GetEx { .. } => {
                panic!("the value model holds no expiry times: `strategy::rmw` omits {op:?}")
            }
        }
    }

    struct Applier {
        store: KvStore,
        index: u64,
        seq: u64,
    }

    impl Applier {
        fn new() -> Applier {
            let mut store = KvStore::new(KvConfig::default());
            store.apply(1, &command_to_vec(&Command::RegisterSession));
            Applier {
                store,
                index: 1,
                seq: 0,
            }
        }

        fn run(&mut self, op: RmwOp) -> CommandResult {
            self.seq += 1;
            self.index += 1;
            let session = Session {
                client_id: 1,
                seq: self.seq,
            };
            let command = Command::Rmw { session, op };
            self.store.apply(self.index, &command_to_vec(&command))
        }

        fn value(&self, key: &str) -> Option<String> {
            self.store
                .get(key.as_bytes())
                .map(|v| String::from_utf8_lossy(v).into_owned())
        }
    }

    fn key(name: &str) -> Vec<u8> {
        name.as_bytes().to_vec()
    }

    fn incr(name: &str, delta: i64) -> RmwOp {
        RmwOp::IncrBy {
            key: key(name),
            delta,
        }
    }

    fn incr_float(name: &str, increment: &str) -> RmwOp {
        RmwOp::IncrByFloat {
            key: key(name),
            increment: key(increment),
        }
    }

    fn set(name: &str, value: &str, condition: SetCondition, get: bool) -> RmwOp {
        RmwOp::Set {
            key: key(name),
            value: key(value),
            condition,
            get,
            expiry: SetExpiry::Clear,
        }
    }

    fn text(value: &str) -> CommandResult {
        CommandResult::Value(Some(key(value)))
    }

    /// Goal: RENAME / RENAMENX / COPY / FLUSHALL decided at apply time as Redis
    /// decides them (a missing source is "no such key" for RENAME, 0 for COPY; NX and
    /// REPLACE respected; a key renamed to itself stays).
    #[test]
    fn renames_copies_and_flushes_follow_redis() {
        let mut kv = Applier::new();
        let rename = |from: &str, to: &str, only_if_absent| RmwOp::Rename {
            from: key(from),
            to: key(to),
            only_if_absent,
        };
        let copy = |from: &str, to: &str, replace| RmwOp::Copy {
            from: key(from),
            to: key(to),
            replace,
        };
        let cases: Vec<(RmwOp, CommandResult)> = vec![
            (
                set("a", "1", SetCondition::Always, false),
                CommandResult::Ok,
            ),
            (
                set("b", "2", SetCondition::Always, false),
                CommandResult::Ok,
            ),
            (
                rename("x", "y", false),
                CommandResult::Rejected(ValueError::NoSuchKey),
            ),
            (rename("a", "b", true), CommandResult::Integer(0)),
            (rename("a", "a", false), CommandResult::Ok),
            (rename("a", "c", false), CommandResult::Ok),
            (rename("c", "d", true), CommandResult::Integer(1)),
            (copy("d", "b", false), CommandResult::Integer(0)),
            (copy("d", "b", true), CommandResult::Integer(1)),
            (copy("d", "e", false), CommandResult::Integer(1)),
            (copy("x", "e", true), CommandResult::Integer(0)),
        ];
        for (i, (op, want)) in cases.into_iter().enumerate() {
            let described = format!("{op:?}");
            assert_eq!(kv.run(op), want, "#{i}: {described}");
        }
        let values: Vec<Option<String>> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|k| kv.value(k))
            .collect();
        let one = || Some("1".to_string());
        assert_eq!(values, vec![None, one(), None, one(), one()]);
        assert_eq!(kv.run(RmwOp::FlushAll), CommandResult::Ok);
        assert!(kv.store.is_empty());
        assert_eq!(ValueError::NoSuchKey.to_string(), "no such key");
    }

    #[test]
    fn counters_follow_redis_and_refuse_bad_values_without_writing() {
        use ValueError::*;
        let mut kv = Applier::new();
        let cases: Vec<(RmwOp, CommandResult)> = vec![
            (incr("n", 1), CommandResult::Integer(1)),
            (incr("n", -11), CommandResult::Integer(-10)),
            (
                set("s", "abc", SetCondition::Always, false),
                CommandResult::Ok,
            ),
            (incr("s", 1), CommandResult::Rejected(NotInteger)),
            (
                set("m", "9223372036854775807", SetCondition::Always, false),
                CommandResult::Ok,
            ),
            (incr("m", 1), CommandResult::Rejected(Overflow)),
            (incr("m", -1), CommandResult::Integer(i64::MAX - 1)),
            (
                set("sp", " 1", SetCondition::Always, false),
                CommandResult::Ok,
            ),
            (incr("sp", 1), CommandResult::Rejected(NotInteger)),
            (
                set("f", "10.5", SetCondition::Always, false),
                CommandResult::Ok,
            ),
            (incr_float("f", "0.1"), text("10.6")),
            (incr("f", 1), CommandResult::Rejected(NotInteger)),
            (
                set("e", "5.0e3", SetCondition::Always, false),
                CommandResult::Ok,
            ),
            (incr_float("e", "200"), text("5200")),
            (incr_float("new", "-1.25"), text("-1.25")),
            (incr_float("f", "nan"), CommandResult::Rejected(NotFloat)),
            (
                incr_float("f", "inf"),
                CommandResult::Rejected(NanOrInfinity),
            ),
            (incr_float("s", "inf"), CommandResult::Rejected(NotFloat)),
            (incr_float("s", "1"), CommandResult::Rejected(NotFloat)),
            (
                set("i", "-inf", SetCondition::Always, false),
                CommandResult::Ok,
            ),
            (incr_float("i", "1"), CommandResult::Rejected(NanOrInfinity)),
            (incr_float("f", "1e30"), CommandResult::Rejected(Overflow)),
        ];
        for (i, (op, want)) in cases.into_iter().enumerate() {
            let described = format!("{op:?}");
            assert_eq!(kv.run(op), want, "#{i}: {described}");
        }
        assert_eq!(kv.value("n").as_deref(), Some("-10"));
        assert_eq!(kv.value("s").as_deref(), Some("abc"), "refused: unchanged");
        assert_eq!(kv.value("f").as_deref(), Some("10.6"));
        assert_eq!(kv.value("e").as_deref(), Some("5200"));
        assert_eq!(
            ValueError::NotInteger.to_string(),
            "value is not an integer or out of range"
        );
    }

    #[test]
    fn strings_follow_redis_semantics() {
        use SetCondition::*;
        let mut kv = Applier::new();
        let append = |name: &str, value: &str| RmwOp::Append {
            key: key(name),
            value: key(value),
        };
        let pairs = |list: &[(&str, &str)]| RmwOp::SetIfAllAbsent {
            pairs: list.iter().map(|(k, v)| (key(k), key(v))).collect(),
        };
        let cases: Vec<(RmwOp, CommandResult)> = vec![
            (append("a", "ab"), CommandResult::Integer(2)),
            (append("a", "cd"), CommandResult::Integer(4)),
            (set("a", "x", Absent, false), CommandResult::Unchanged),
            (set("b", "x", Present, false), CommandResult::Unchanged),
            (set("b", "1", Absent, false), CommandResult::Ok),
            (set("b", "2", Present, true), text("1")),
            (set("c", "3", Absent, true), CommandResult::Value(None)),
            (set("c", "4", Absent, true), text("3")),
            (set("a", "new", Always, true), text("abcd")),
            (RmwOp::GetDel { key: key("a") }, text("new")),
            (RmwOp::GetDel { key: key("a") }, CommandResult::Value(None)),
            (pairs(&[("p", "1"), ("q", "2")]), CommandResult::Integer(1)),
            (pairs(&[("r", "1"), ("q", "3")]), CommandResult::Integer(0)),
            (
                RmwOp::DeleteMany {
                    keys: vec![key("p"), key("p"), key("zz"), key("q")],
                },
                CommandResult::Integer(2),
            ),
        ];
        for (i, (op, want)) in cases.into_iter().enumerate() {
            let described = format!("{op:?}");
            assert_eq!(kv.run(op), want, "#{i}: {described}");
        }
        let values: Vec<Option<String>> = ["a", "b", "c", "p", "q", "r"]
            .iter()
            .map(|k| kv.value(k))
            .collect();
        let want = [None, Some("2"), Some("3"), None, None, None];
        assert_eq!(values, want.map(|v| v.map(str::to_owned)));
    }

    #[test]
    fn an_append_beyond_the_value_limit_is_refused() {
        let mut kv = Applier::new();
        let half = vec![b'x'; RMW_VALUE_BYTES_MAX / 2];
        let append = |value: &[u8]| RmwOp::Append {
            key: key("big"),
            value: value.to_vec(),
        };
        assert_eq!(
            kv.run(append(&half)),
            CommandResult::Integer(half.len() as i64)
        );
        assert_eq!(
            kv.run(append(&half)),
            CommandResult::Integer(RMW_VALUE_BYTES_MAX as i64)
        );
        assert_eq!(
            kv.run(append(b"y")),
            CommandResult::Rejected(ValueError::TooLarge)
        );
        assert_eq!(kv.value("big").map(|v| v.len()), Some(RMW_VALUE_BYTES_MAX));
    }

    /// Reference: Raft thesis §6.3. A retried INCR (same session and seq, a new entry)
    /// answers the recorded result and does not add again.
    #[test]
    fn a_retried_increment_is_applied_once() {
        let mut kv = Applier::new();
        let command = Command::Rmw {
            session: Session {
                client_id: 1,
                seq: 1,
            },
            op: incr("n", 5),
        };
        let entry = command_to_vec(&command);
        assert_eq!(kv.store.apply(2, &entry), CommandResult::Integer(5));
        assert_eq!(kv.store.apply(3, &entry), CommandResult::Integer(5));
        assert_eq!(kv.value("n").as_deref(), Some("5"));
    }

    /// Goal: inside a transaction each op sees the earlier ops' writes, and a refused op
    /// is one result among the others (as in a Redis EXEC), not an abort.
    #[test]
    fn transaction_ops_see_each_other_and_keep_going_after_a_refusal() {
        let mut kv = Applier::new();
        kv.index += 1;
        let txn = Command::Txn {
            session: Session {
                client_id: 1,
                seq: 1,
            },
            compare: Vec::new(),
            success: vec![
                Op::Rmw(incr("n", 2)),
                Op::Rmw(incr("n", 3)),
                Op::Put {
                    key: key("s"),
                    value: key("x"),
                },
                Op::Rmw(incr("s", 1)),
                Op::Get { key: key("n") },
            ],
            failure: Vec::new(),
        };
        let got = kv.store.apply(kv.index, &command_to_vec(&txn));
        let want = CommandResult::Txn {
            succeeded: true,
            results: vec![
                OpResult::Integer(2),
                OpResult::Integer(5),
                OpResult::Done,
                OpResult::Rejected(ValueError::NotInteger),
                OpResult::Value(Some(key("5"))),
            ],
        };
        assert_eq!(got, want);
    }
}
