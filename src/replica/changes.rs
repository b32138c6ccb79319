//! What an applied entry changed, told to the node's listeners: Redis pub/sub
//! subscribers (a [`Command::Publish`]), keyspace notifications and native watches (the
//! keys the entry wrote or deleted, with Redis's event names, `expired` for keys deleted
//! because their expiry time passed).
//!
//! The kv store reports only a command's result, so the changes are derived from the
//! decoded command, its result and the existence, just before the apply, of the keys a
//! delete may or may not have found (a transaction's `Delete` op answers `Done` either
//! way). This runs only while the driver asks for it ([`Observe`]), so a node nobody
//! listens to pays nothing.
//!
//! Invariants: the events of an entry are in the order its ops made them; an event is
//! reported only for a write the entry actually made (a refused or unchanged write, a
//! failed compare's branch that was not run, a delete of an absent key: none); every
//! replica derives the same events from the same log. Limits: a retried write answered
//! from its session's recorded result is reported again (the store does not tell a
//! retry from a first apply), and entries covered by an installed snapshot report
//! nothing.

use std::collections::HashMap;

use crate::kv::{Command, CommandResult, KvStore, Op, OpResult, RmwOp, SetExpiry, decode_command};

/// What the driver wants reported about applied entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Observe {
    /// Nothing (nobody listens).
    #[default]
    Off,
    /// Publishes and key events.
    Events,
    /// Publishes and key events, each written key's event with its value after the entry
    /// (native watches), and the state before a flush.
    EventsAndValues,
}

/// A key event, named as Redis names it in keyspace notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// SET, MSET, SETNX, GETSET, a put, a successful cas.
    Set,
    /// DEL, UNLINK, GETDEL, a delete.
    Del,
    /// INCR, INCRBY, DECR, DECRBY.
    IncrBy,
    /// INCRBYFLOAT.
    IncrByFloat,
    /// APPEND.
    Append,
    /// RENAME's source key.
    RenameFrom,
    /// RENAME's destination key.
    RenameTo,
    /// COPY's destination key.
    CopyTo,
    /// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT, SET and GETEX with an expiry time.
    Expire,
    /// PERSIST.
    Persist,
    /// A key deleted because its expiry time passed (the leader's expiry cycle, or a
    /// command that found it expired): Redis's `expired` class (`x`).
    Expired,
}

impl Event {
    /// The event's name in `__keyevent@0__:<name>` channels.
    pub fn name(self) -> &'static str {
        match self {
            Event::Set => "set",
            Event::Del => "del",
            Event::IncrBy => "incrby",
            Event::IncrByFloat => "incrbyfloat",
            Event::Append => "append",
            Event::RenameFrom => "rename_from",
            Event::RenameTo => "rename_to",
            Event::CopyTo => "copy_to",
            Event::Expire => "expire",
            Event::Persist => "persist",
            Event::Expired => "expired",
        }
    }

    /// Whether Redis files it under the string class (`$`); the others are generic (`g`).
    pub fn is_string(self) -> bool {
        matches!(
            self,
            Event::Set | Event::IncrBy | Event::IncrByFloat | Event::Append
        )
    }

    /// Whether the key is gone after it (a delete, for watches).
    pub fn deletes(self) -> bool {
        matches!(self, Event::Del | Event::RenameFrom | Event::Expired)
    }
}

/// One key event of an applied entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEvent {
    /// The key.
    pub key: Vec<u8>,
    /// What happened to it.
    pub event: Event,
    /// With [`Observe::EventsAndValues`], for an event that leaves the key present: its
    /// value after the whole entry.
    pub value: Option<Vec<u8>>,
}

/// What one applied entry changed.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The entry's log index: the revision of its changes.
    pub index: u64,
    /// The key events, in the order the entry made them.
    pub events: Vec<KeyEvent>,
    /// A PUBLISH: (channel, message).
    pub published: Option<(Vec<u8>, Vec<u8>)>,
    /// With [`Observe::EventsAndValues`], for an entry that flushed the store: the state
    /// just before it (an O(1)-shared copy), whose keys the flush deleted.
    pub flushed: Option<Box<KvStore>>,
}

impl Applied {
    /// Whether there is nothing to tell.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.published.is_none() && self.flushed.is_none()
    }
}

/// Applies the `Normal` entry `(index, data)` to `kv` as [`KvStore::apply`] does, and
/// returns its result with what it changed (`None` when `observe` is off or the entry
/// does not decode).
pub fn apply_observed(
    kv: &mut KvStore,
    index: u64,
    data: &[u8],
    observe: Observe,
) -> (CommandResult, Option<Applied>) {
    let command = match (observe, decode_command(data)) {
        (Observe::Off, _) | (_, Err(_)) => return (kv.apply(index, data), None),
        // A stamped command's changes are its inner command's (plus the expired keys).
        (_, Ok(Command::At { command, .. })) => *command,
        (_, Ok(command)) => command,
    };
    let mut existed = HashMap::new();
    for key in keys_maybe_deleted(&command) {
        existed.insert(key.to_vec(), kv.get(key).is_some());
    }
    let flushed =
        (observe == Observe::EventsAndValues && flushes(&command)).then(|| Box::new(kv.clone()));
    let result = kv.apply(index, data);
    // Keys found expired are deleted before the command runs (`Command::At`).
    let expired = kv.expired_by_last_apply().to_vec();
    let mut applied = Applied {
        index,
        events: Vec::new(),
        published: None,
        flushed: None,
    };
    let mut tracker = Tracker {
        existed,
        events: &mut applied.events,
    };
    // Gone before the command ran (`write` records it absent for the command's deletes).
    for key in expired {
        tracker.write(key, Event::Expired);
    }
    match (command, &result) {
        (Command::Put { key, .. } | Command::Cas { key, .. }, CommandResult::Ok) => {
            tracker.write(key, Event::Set);
        }
        (Command::Delete { key, .. }, CommandResult::Ok) => tracker.write(key, Event::Del),
        (
            Command::Txn {
                success, failure, ..
            },
            CommandResult::Txn { succeeded, results },
        ) => {
            let ops = if *succeeded { success } else { failure };
            for (op, result) in ops.into_iter().zip(results) {
                tracker.op(op, result);
            }
            applied.flushed = flushed;
        }
        (Command::Rmw { op, .. }, result) => {
            if let Some(result) = op_result(result) {
                tracker.rmw(op, &result);
                applied.flushed = flushed;
            }
        }
        (
            Command::Publish {
                channel, message, ..
            },
            CommandResult::Ok,
        ) => applied.published = Some((channel, message)),
        _ => {}
    }
    for event in &mut applied.events {
        // An expiry time already passed deletes the key: Redis reports a `del`.
        if event.event == Event::Expire && kv.get(&event.key).is_none() {
            event.event = Event::Del;
        }
    }
    if observe == Observe::EventsAndValues {
        for event in &mut applied.events {
            if !event.event.deletes() {
                event.value = kv.get(&event.key).map(<[u8]>::to_vec);
            }
        }
    }
    (result, Some(applied))
}

/// The keys whose deletion the result alone does not tell apart from a no-op.
fn keys_maybe_deleted(command: &Command) -> Vec<&[u8]> {
    fn rmw<'a>(op: &'a RmwOp, keys: &mut Vec<&'a [u8]>) {
        if let RmwOp::DeleteMany { keys: many } = op {
            keys.extend(many.iter().map(Vec::as_slice));
        }
    }
    let mut keys = Vec::new();
    match command {
        Command::Txn {
            success, failure, ..
        } => {
            for op in success.iter().chain(failure) {
                match op {
                    Op::Delete { key } => keys.push(key.as_slice()),
                    Op::Rmw(op) => rmw(op, &mut keys),
                    Op::Put { .. } | Op::Get { .. } => {}
                }
            }
        }
        Command::Rmw { op, .. } => rmw(op, &mut keys),
        _ => {}
    }
    keys
}

/// Whether the command may flush the store.
fn flushes(command: &Command) -> bool {
    match command {
        Command::Rmw { op, .. } => *op == RmwOp::FlushAll,
        Command::Txn {
            success, failure, ..
        } => success
            .iter()
            .chain(failure)
            .any(|op| *op == Op::Rmw(RmwOp::FlushAll)),
        _ => false,
    }
}

/// The op result a `Command::Rmw`'s result stands for (`None`: nothing ran).
fn op_result(result: &CommandResult) -> Option<OpResult> {
    Some(match result {
        CommandResult::Ok => OpResult::Done,
        CommandResult::Value(value) => OpResult::Value(value.clone()),
        CommandResult::Integer(value) => OpResult::Integer(*value),
        CommandResult::Unchanged => OpResult::Unchanged,
        CommandResult::Rejected(error) => OpResult::Rejected(*error),
        _ => return None,
    })
}

/// Replays an entry's ops with their results, tracking which keys exist.
struct Tracker<'a> {
    /// Existence before the entry of the keys in `keys_maybe_deleted`, then as the
    /// replayed ops leave it.
    existed: HashMap<Vec<u8>, bool>,
    events: &'a mut Vec<KeyEvent>,
}

impl Tracker<'_> {
    fn write(&mut self, key: Vec<u8>, event: Event) {
        self.existed.insert(key.clone(), !event.deletes());
        self.events.push(KeyEvent {
            key,
            event,
            value: None,
        });
    }

    /// A delete: an event only if the key existed.
    fn delete(&mut self, key: Vec<u8>) {
        if self.existed.get(&key).copied().unwrap_or(false) {
            self.write(key, Event::Del);
        }
    }

    fn op(&mut self, op: Op, result: &OpResult) {
        match op {
            Op::Put { key, .. } => self.write(key, Event::Set),
            Op::Delete { key } => self.delete(key),
            Op::Get { .. } => {}
            Op::Rmw(op) => self.rmw(op, result),
        }
    }

    fn rmw(&mut self, op: RmwOp, result: &OpResult) {
        if matches!(result, OpResult::Rejected(_) | OpResult::Unchanged) {
            return;
        }
        match op {
            RmwOp::IncrBy { key, .. } => self.write(key, Event::IncrBy),
            RmwOp::IncrByFloat { key, .. } => self.write(key, Event::IncrByFloat),
            RmwOp::Append { key, .. } => self.write(key, Event::Append),
            RmwOp::Set {
                key,
                condition,
                get,
                expiry,
                ..
            } => {
                let wrote = match result {
                    OpResult::Value(old) if get => condition.holds(old.as_deref()),
                    _ => true,
                };
                if wrote {
                    self.write(key.clone(), Event::Set);
                    if matches!(expiry, SetExpiry::At(_)) {
                        self.write(key, Event::Expire);
                    }
                }
            }
            RmwOp::Expire { key, .. } => {
                if *result == OpResult::Integer(1) {
                    self.write(key, Event::Expire);
                }
            }
            RmwOp::Persist { key } => {
                if *result == OpResult::Integer(1) {
                    self.write(key, Event::Persist);
                }
            }
            // GETEX PERSIST is not reported: the result does not tell whether the key
            // had an expiry time to remove.
            RmwOp::GetEx { key, expiry } => {
                if matches!(result, OpResult::Value(Some(_))) && matches!(expiry, SetExpiry::At(_))
                {
                    self.write(key, Event::Expire);
                }
            }
            RmwOp::GetDel { key } => {
                if matches!(result, OpResult::Value(Some(_))) {
                    self.write(key, Event::Del);
                }
            }
            RmwOp::SetIfAllAbsent { pairs } => {
                if *result == OpResult::Integer(1) {
                    for (key, _) in pairs {
                        self.write(key, Event::Set);
                    }
                }
            }
            RmwOp::DeleteMany { keys } => {
                for key in keys {
                    self.delete(key);
                }
            }
            RmwOp::Rename { from, to, .. } => {
                let moved = matches!(result, OpResult::Done | OpResult::Integer(1));
                if moved && from != to {
                    self.write(from, Event::RenameFrom);
                    self.write(to, Event::RenameTo);
                }
            }
            RmwOp::Copy { to, .. } => {
                if *result == OpResult::Integer(1) {
                    self.write(to, Event::CopyTo);
                }
            }
            // Redis sends no keyspace event for a flush; watches see `Applied::flushed`.
            RmwOp::FlushAll => self.existed.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{Deadline, ExpireCondition, KvConfig, Session, SetCondition, command_to_vec};

    fn session(seq: u64) -> Session {
        Session { client_id: 1, seq }
    }

    fn events(kv: &mut KvStore, index: u64, command: &Command) -> Vec<(String, &'static str)> {
        let data = command_to_vec(command);
        let (_, applied) = apply_observed(kv, index, &data, Observe::Events);
        let applied = applied.expect("observed");
        let name = |key: &[u8]| String::from_utf8_lossy(key).into_owned();
        let events = applied.events.iter();
        events.map(|e| (name(&e.key), e.event.name())).collect()
    }

    /// Goal: each kind of write reports Redis's event names, only for writes it made.
    /// Method: apply a sequence of commands and compare the events of each with a table.
    #[test]
    fn writes_report_redis_event_names_only_when_they_wrote() {
        let mut kv = KvStore::new(KvConfig::default());
        kv.apply(1, &command_to_vec(&Command::RegisterSession));
        let k = |s: &str| s.as_bytes().to_vec();
        let rmw = |seq, op| Command::Rmw {
            session: session(seq),
            op,
        };
        let cases: Vec<(Command, Vec<(&str, &str)>)> = vec![
            (
                Command::Put {
                    session: session(1),
                    key: k("a"),
                    value: k("1"),
                },
                vec![("a", "set")],
            ),
            (
                rmw(
                    2,
                    RmwOp::IncrBy {
                        key: k("a"),
                        delta: 2,
                    },
                ),
                vec![("a", "incrby")],
            ),
            (
                rmw(
                    3,
                    RmwOp::Set {
                        key: k("a"),
                        value: k("x"),
                        condition: SetCondition::Absent,
                        get: true,
                        expiry: SetExpiry::Clear,
                    },
                ),
                vec![],
            ),
            (
                rmw(
                    4,
                    RmwOp::DeleteMany {
                        keys: vec![k("nope"), k("a")],
                    },
                ),
                vec![("a", "del")],
            ),
            (
                Command::Txn {
                    session: session(5),
                    compare: Vec::new(),
                    success: vec![
                        Op::Put {
                            key: k("b"),
                            value: k("2"),
                        },
                        Op::Delete { key: k("absent") },
                        Op::Rmw(RmwOp::Rename {
                            from: k("b"),
                            to: k("c"),
                            only_if_absent: false,
                        }),
                        Op::Delete { key: k("c") },
                    ],
                    failure: Vec::new(),
                },
                vec![
                    ("b", "set"),
                    ("b", "rename_from"),
                    ("c", "rename_to"),
                    ("c", "del"),
                ],
            ),
            (
                Command::Delete {
                    session: session(6),
                    key: k("c"),
                },
                vec![],
            ),
            (
                Command::Publish {
                    session: session(7),
                    channel: k("ch"),
                    message: k("m"),
                },
                vec![],
            ),
            (
                rmw(
                    8,
                    RmwOp::Set {
                        key: k("e"),
                        value: k("v"),
                        condition: SetCondition::Always,
                        get: false,
                        expiry: SetExpiry::At(Deadline::At(100)),
                    },
                ),
                vec![("e", "set"), ("e", "expire")],
            ),
            (
                rmw(9, RmwOp::Persist { key: k("e") }),
                vec![("e", "persist")],
            ),
            (rmw(10, RmwOp::Persist { key: k("e") }), vec![]),
            (
                rmw(
                    11,
                    RmwOp::Expire {
                        key: k("e"),
                        at: Deadline::At(50),
                        condition: ExpireCondition::Always,
                    },
                ),
                vec![("e", "expire")],
            ),
            (
                Command::DeleteExpired {
                    now_ms: 49,
                    keys: vec![k("e")],
                },
                vec![],
            ),
            (
                Command::DeleteExpired {
                    now_ms: 50,
                    keys: vec![k("e")],
                },
                vec![("e", "expired")],
            ),
            (
                Command::Put {
                    session: session(12),
                    key: k("f"),
                    value: k("1"),
                },
                vec![("f", "set")],
            ),
            (
                rmw(
                    13,
                    RmwOp::Expire {
                        key: k("f"),
                        at: Deadline::At(10),
                        condition: ExpireCondition::Always,
                    },
                )
                .stamped(20),
                vec![("f", "del")],
            ),
            (
                Command::Put {
                    session: session(14),
                    key: k("g"),
                    value: k("1"),
                },
                vec![("g", "set")],
            ),
            (
                rmw(
                    15,
                    RmwOp::DeleteMany {
                        keys: vec![k("g"), k("none")],
                    },
                )
                .stamped(30),
                vec![("g", "del")],
            ),
        ];
        for (i, (command, want)) in cases.into_iter().enumerate() {
            let got = events(&mut kv, i as u64 + 2, &command);
            let want: Vec<(String, &str)> = want.into_iter().map(|(k, e)| (k.into(), e)).collect();
            assert_eq!(got, want, "#{i}: {command:?}");
        }
    }

    /// Goal: a publish is reported with its channel and message, and values come with
    /// the events when asked for. Method: apply both and look at the reports.
    #[test]
    fn publishes_and_values_are_reported() {
        let mut kv = KvStore::new(KvConfig::default());
        kv.apply(1, &command_to_vec(&Command::RegisterSession));
        let publish = Command::Publish {
            session: session(1),
            channel: b"ch".to_vec(),
            message: b"hello".to_vec(),
        };
        let (_, applied) = apply_observed(&mut kv, 2, &command_to_vec(&publish), Observe::Events);
        let published = applied.and_then(|a| a.published);
        assert_eq!(published, Some((b"ch".to_vec(), b"hello".to_vec())));
        let append = Command::Rmw {
            session: session(2),
            op: RmwOp::Append {
                key: b"k".to_vec(),
                value: b"xy".to_vec(),
            },
        };
        let data = command_to_vec(&append);
        let (_, applied) = apply_observed(&mut kv, 3, &data, Observe::EventsAndValues);
        let events = applied.map(|a| a.events).unwrap_or_default();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].value.as_deref(), Some(&b"xy"[..]));
        let again = Command::Rmw {
            session: session(3),
            op: RmwOp::Append {
                key: b"k".to_vec(),
                value: b"xy".to_vec(),
            },
        };
        let (_, off) = apply_observed(&mut kv, 4, &command_to_vec(&again), Observe::Off);
        assert!(off.is_none());
        assert_eq!(kv.get(b"k"), Some(&b"xyxy"[..]));
    }
}
