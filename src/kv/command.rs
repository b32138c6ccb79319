//! The commands a log entry carries and the results applying them produces, with their
//! versioned binary encoding.
//!
//! Both encodings start with a format version byte ([`COMMAND_VERSION`],
//! [`RESULT_VERSION`]) and then a type byte; integers are little-endian, byte strings are
//! `u32 length | bytes`, optional byte strings are `0` or `1 | bytes`, lists are
//! `u32 count | elements`, a session is `client_id u64 | seq u64`.
//!
//! ```text
//! command: 1 | type | fields
//!   1 Get      key
//!   2 Put      session key value
//!   3 Delete   session key
//!   4 Cas      session key expected:option new
//!   5 Txn      session compare:list(key op:u8 value) success:list(op) failure:list(op)
//!              op = 1 Put key value | 2 Delete key | 3 Get key | 4 Rmw rmw
//!              compare op = 1 Eq | 2 NotEq | 3 Exists | 4 Absent | 5 Lt | 6 Gt
//!   6 RegisterSession
//!   7 Rmw      session rmw
//!              rmw = 1 IncrBy key delta:i64 | 2 IncrByFloat key increment
//!                  | 3 Append key value | 4 Set key value condition:u8 get:u8
//!                  | 5 GetDel key | 6 SetIfAllAbsent list(key value)
//!                  | 7 DeleteMany list(key) | 8 Rename from to nx:u8
//!                  | 9 Copy from to replace:u8 | 10 FlushAll
//!                  | 11 Expire key deadline expire_condition:u8
//!                  | 12 Persist key | 13 GetEx key set_expiry
//!                  | 14 SetExpiring key value condition:u8 get:u8 set_expiry
//!              condition = 1 Always | 2 Absent | 3 Present
//!              expire_condition = 1 Always | 2 NoExpiry | 3 HasExpiry | 4 Later
//!                  | 5 Earlier | 6 EarlierThanOne
//!              deadline = 1 At at_ms:u64 | 2 After ms:u64
//!              set_expiry = 0 Clear | 1 Keep | 2 deadline
//!              (a Set whose expiry is Clear is written as tag 4; times are unix
//!              milliseconds, an After counted from the entry's time, see 8 At)
//!   8 At       now_ms:u64 command   (the leader's clock when it accepted `command`,
//!              any type but 8 and 9: keys it names that expired by then are deleted
//!              first, and it runs judged at that time)
//!   9 DeleteExpired now_ms:u64 list(key)   (sessionless: the leader's expiry cycle)
//!  15 Publish  session channel message
//! result: 1 | type | fields
//!   1 Ok | 2 Value option | 3 NotFound | 4 CasFailed option
//!   5 Txn succeeded:u8 list(op result) | 6 Registered client_id:u64
//!   7 SessionExpired | 8 StaleSequence | 9 Error message
//!   10 Integer i64 | 11 Unchanged | 12 Rejected value_error:u8
//!   op result = 1 Done | 2 Value option | 3 Integer i64 | 4 Unchanged
//!             | 5 Rejected value_error:u8
//!   value_error = 1 NotInteger | 2 Overflow | 3 NotFloat | 4 NanOrInfinity | 5 TooLarge
//! ```
//!
//! Tags are only ever added: an entry written by an older version decodes the same.
//!
//! Invariant: `decode_*(encode_*(x)) == x` for every value, and decoding arbitrary bytes
//! returns an error instead of panicking or allocating more than the input's length.
//! The same encoding is used inside log entries, in snapshots (recorded session results)
//! and inside client protocol frames, so each value has exactly one byte form.

use crate::wire::DecodeError;

use crate::wire::{Reader, put_bytes, put_option_bytes, put_u32, put_u64};

/// Format version of an encoded [`Command`].
pub const COMMAND_VERSION: u8 = 1;
/// Format version of an encoded [`CommandResult`].
pub const RESULT_VERSION: u8 = 1;

/// The session a write belongs to (Raft thesis §6.3): results are recorded per
/// `client_id` and `seq` so that a retried write is applied once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Session {
    /// The id returned by [`Command::RegisterSession`] (the index of that entry).
    pub client_id: u64,
    /// The client's sequence number for this request; each new request uses a new one.
    pub seq: u64,
}

/// One operation inside a [`Command::Txn`] branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
    },
    /// Removes `key` (no effect if absent).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Reads `key`, seeing the effects of earlier ops in the same branch.
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// A read-modify-write, seeing the effects of earlier ops in the same branch.
    Rmw(RmwOp),
}

/// When a [`RmwOp::Set`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SetCondition {
    /// Always.
    Always = 1,
    /// Only if the key is absent (Redis NX).
    Absent = 2,
    /// Only if the key exists (Redis XX).
    Present = 3,
}

impl SetCondition {
    fn from_u8(byte: u8) -> Option<SetCondition> {
        Some(match byte {
            1 => SetCondition::Always,
            2 => SetCondition::Absent,
            3 => SetCondition::Present,
            _ => return None,
        })
    }

    /// Whether a key whose current value is `current` is written.
    pub fn holds(self, current: Option<&[u8]>) -> bool {
        match self {
            SetCondition::Always => true,
            SetCondition::Absent => current.is_none(),
            SetCondition::Present => current.is_some(),
        }
    }
}

/// An expiry time as a command states it (unix milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Deadline {
    /// This absolute time (Redis EXAT/PXAT, EXPIREAT/PEXPIREAT).
    At(u64),
    /// This many milliseconds after the time the entry is judged at (Redis EX/PX,
    /// EXPIRE/PEXPIRE): the leader resolves it to an `At` when it stamps the command
    /// ([`Command::stamped`]); one left unresolved counts from the entry's time (0 for
    /// an entry without [`Command::At`]).
    After(u64),
}

impl Deadline {
    /// The absolute time, a relative one counted from `now_ms`.
    pub fn resolve(self, now_ms: u64) -> u64 {
        match self {
            Deadline::At(at_ms) => at_ms,
            Deadline::After(ms) => now_ms.saturating_add(ms),
        }
    }
}

/// What a [`RmwOp::Set`] or [`RmwOp::GetEx`] does to the key's expiry time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetExpiry {
    /// Removes it (a plain Redis SET, GETEX PERSIST).
    Clear,
    /// Keeps the one the key has (Redis KEEPTTL, GETEX without options).
    Keep,
    /// Sets it (Redis EX/PX/EXAT/PXAT).
    At(Deadline),
}

impl SetExpiry {
    fn resolved(self, now_ms: u64) -> SetExpiry {
        match self {
            SetExpiry::At(deadline) => SetExpiry::At(Deadline::At(deadline.resolve(now_ms))),
            other => other,
        }
    }
}

/// When a [`RmwOp::Expire`] changes a key's expiry time (Redis's NX/XX/GT/LT; a key
/// without one counts as expiring at infinity for `Later` and `Earlier`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ExpireCondition {
    /// Always.
    Always = 1,
    /// Only if the key has no expiry time (NX).
    NoExpiry = 2,
    /// Only if the key has one (XX).
    HasExpiry = 3,
    /// Only if the new time is later than the current one (GT).
    Later = 4,
    /// Only if the new time is earlier than the current one (LT).
    Earlier = 5,
    /// Only if the key has one and the new time is earlier (XX LT).
    EarlierThanOne = 6,
}

impl ExpireCondition {
    fn from_u8(byte: u8) -> Option<ExpireCondition> {
        Some(match byte {
            1 => ExpireCondition::Always,
            2 => ExpireCondition::NoExpiry,
            3 => ExpireCondition::HasExpiry,
            4 => ExpireCondition::Later,
            5 => ExpireCondition::Earlier,
            6 => ExpireCondition::EarlierThanOne,
            _ => return None,
        })
    }

    /// Whether a key whose expiry time is `current` (`None`: none) gets `new`.
    pub fn holds(self, current: Option<u64>, new: u64) -> bool {
        match self {
            ExpireCondition::Always => true,
            ExpireCondition::NoExpiry => current.is_none(),
            ExpireCondition::HasExpiry => current.is_some(),
            ExpireCondition::Later => current.is_some_and(|current| new > current),
            ExpireCondition::Earlier => current.is_none_or(|current| new < current),
            ExpireCondition::EarlierThanOne => current.is_some_and(|current| new < current),
        }
    }
}

/// A read-modify-write of string values, decided when the entry is applied from the values
/// it finds there: one log entry and one round trip, never a client-side retry, and the
/// same outcome on every replica. The results are [`OpResult`]s (inside a transaction)
/// or the equal [`CommandResult`]s (as a [`Command::Rmw`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RmwOp {
    /// Adds `delta` to the integer in `key` (absent: 0). Result: `Integer(new)`, or
    /// `Rejected(NotInteger | Overflow)` with nothing written.
    IncrBy {
        /// The key.
        key: Vec<u8>,
        /// The amount added (negative: a decrement).
        delta: i64,
    },
    /// Adds the float `increment` (its text, read as `kv::number::Decimal` does) to the
    /// float in `key` (absent: 0). Result: `Value(new text)`, or
    /// `Rejected(NotFloat | NanOrInfinity | Overflow)` with nothing written.
    IncrByFloat {
        /// The key.
        key: Vec<u8>,
        /// The increment, as the client wrote it.
        increment: Vec<u8>,
    },
    /// Appends `value` to `key` (absent: empty). Result: `Integer(new length)`, or
    /// `Rejected(TooLarge)` beyond [`crate::kv::RMW_VALUE_BYTES_MAX`].
    Append {
        /// The key.
        key: Vec<u8>,
        /// The suffix.
        value: Vec<u8>,
    },
    /// Sets `key` to `value` if `condition` holds, and its expiry time as `expiry`
    /// says. Result: with `get`, `Value(old)` whether or not it wrote; without,
    /// `Done`/`Ok` or `Unchanged`.
    Set {
        /// The key.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
        /// When to write.
        condition: SetCondition,
        /// Answer with the old value.
        get: bool,
        /// The key's expiry time after a write.
        expiry: SetExpiry,
    },
    /// Removes `key`. Result: `Value(old)`.
    GetDel {
        /// The key.
        key: Vec<u8>,
    },
    /// Sets every pair if no key of them exists, else none (Redis MSETNX). Result:
    /// `Integer(1)` if it wrote, `Integer(0)` if not.
    SetIfAllAbsent {
        /// The keys and their new values.
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// Removes every key. Result: `Integer(number of keys that existed)`.
    DeleteMany {
        /// The keys.
        keys: Vec<Vec<u8>>,
    },
    /// Moves the value of `from` to `to` (RENAME; with `only_if_absent`, RENAMENX).
    /// Result: `Rejected(NoSuchKey)` when `from` is absent; else RENAME `Done`,
    /// RENAMENX `Integer(1)` if it moved, `Integer(0)` if `to` exists.
    Rename {
        /// The key moved.
        from: Vec<u8>,
        /// Its new name.
        to: Vec<u8>,
        /// RENAMENX: only when `to` is absent.
        only_if_absent: bool,
    },
    /// Copies the value of `from` to `to` (COPY; `replace`: also over an existing
    /// `to`). Result: `Integer(1)` if it copied, `Integer(0)` if not.
    Copy {
        /// The source.
        from: Vec<u8>,
        /// The destination.
        to: Vec<u8>,
        /// Overwrite an existing destination.
        replace: bool,
    },
    /// Removes every key (FLUSHDB / FLUSHALL). Result: `Done`.
    FlushAll,
    /// Gives `key` the expiry time `at` if it exists and `condition` holds (EXPIRE,
    /// PEXPIRE, EXPIREAT, PEXPIREAT); a time not after the entry's time deletes the key
    /// instead. Result: `Integer(1)` if it set or deleted, `Integer(0)` if not.
    Expire {
        /// The key.
        key: Vec<u8>,
        /// The new expiry time.
        at: Deadline,
        /// When to change it.
        condition: ExpireCondition,
    },
    /// Removes the expiry time of `key` (PERSIST). Result: `Integer(1)` if it had one,
    /// `Integer(0)` if not (none, or absent).
    Persist {
        /// The key.
        key: Vec<u8>,
    },
    /// Reads `key` and changes its expiry time as `expiry` says if it exists (GETEX);
    /// a time not after the entry's time deletes it. Result: `Value(value)`.
    GetEx {
        /// The key.
        key: Vec<u8>,
        /// Its expiry time after the read.
        expiry: SetExpiry,
    },
}

impl RmwOp {
    /// Appends the keys the op names to `keys`.
    fn keys<'a>(&'a self, keys: &mut Vec<&'a [u8]>) {
        match self {
            RmwOp::IncrBy { key, .. }
            | RmwOp::IncrByFloat { key, .. }
            | RmwOp::Append { key, .. }
            | RmwOp::Set { key, .. }
            | RmwOp::GetDel { key }
            | RmwOp::Expire { key, .. }
            | RmwOp::Persist { key }
            | RmwOp::GetEx { key, .. } => keys.push(key),
            RmwOp::SetIfAllAbsent { pairs } => keys.extend(pairs.iter().map(|(k, _)| &k[..])),
            RmwOp::DeleteMany { keys: named } => keys.extend(named.iter().map(|k| &k[..])),
            RmwOp::Rename { from, to, .. } | RmwOp::Copy { from, to, .. } => {
                keys.push(from);
                keys.push(to);
            }
            RmwOp::FlushAll => {}
        }
    }

    /// The Redis command it implements, in lower case (for logs and dumps).
    pub fn name(&self) -> &'static str {
        match self {
            RmwOp::IncrBy { .. } => "incrby",
            RmwOp::IncrByFloat { .. } => "incrbyfloat",
            RmwOp::Append { .. } => "append",
            RmwOp::Set { .. } => "set",
            RmwOp::GetDel { .. } => "getdel",
            RmwOp::SetIfAllAbsent { .. } => "msetnx",
            RmwOp::DeleteMany { .. } => "del",
            RmwOp::Rename {
                only_if_absent: false,
                ..
            } => "rename",
            RmwOp::Rename { .. } => "renamenx",
            RmwOp::Copy { .. } => "copy",
            RmwOp::FlushAll => "flushall",
            RmwOp::Expire { .. } => "pexpireat",
            RmwOp::Persist { .. } => "persist",
            RmwOp::GetEx { .. } => "getex",
        }
    }
}

/// Why a read-modify-write refused the value it found; nothing was written. The texts
/// are Redis's (without its `ERR ` prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ValueError {
    /// The value is not a 64-bit integer.
    NotInteger = 1,
    /// The sum is beyond the range of an `i64` (or of a float's `Decimal`).
    Overflow = 2,
    /// The value (or the increment) is not a float.
    NotFloat = 3,
    /// The sum would be infinite.
    NanOrInfinity = 4,
    /// The new value would be longer than [`crate::kv::RMW_VALUE_BYTES_MAX`].
    TooLarge = 5,
    /// The key the op needs does not exist (RENAME).
    NoSuchKey = 6,
}

impl ValueError {
    fn from_u8(byte: u8) -> Option<ValueError> {
        Some(match byte {
            1 => ValueError::NotInteger,
            2 => ValueError::Overflow,
            3 => ValueError::NotFloat,
            4 => ValueError::NanOrInfinity,
            5 => ValueError::TooLarge,
            6 => ValueError::NoSuchKey,
            _ => return None,
        })
    }
}

impl std::fmt::Display for ValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ValueError::NotInteger => "value is not an integer or out of range",
            ValueError::Overflow => "increment or decrement would overflow",
            ValueError::NotFloat => "value is not a valid float",
            ValueError::NanOrInfinity => "increment would produce NaN or Infinity",
            ValueError::TooLarge => "string exceeds maximum allowed size (proto-max-bulk-len)",
            ValueError::NoSuchKey => "no such key",
        })
    }
}

/// How a [`Compare`] tests the current value of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CompareOp {
    /// The key exists and its value equals the operand.
    Eq = 1,
    /// The key is absent or its value differs from the operand.
    NotEq = 2,
    /// The key exists (operand ignored).
    Exists = 3,
    /// The key is absent (operand ignored).
    Absent = 4,
    /// The key exists and its value is bytewise less than the operand.
    Lt = 5,
    /// The key exists and its value is bytewise greater than the operand.
    Gt = 6,
}

impl CompareOp {
    fn from_u8(byte: u8) -> Option<CompareOp> {
        Some(match byte {
            1 => CompareOp::Eq,
            2 => CompareOp::NotEq,
            3 => CompareOp::Exists,
            4 => CompareOp::Absent,
            5 => CompareOp::Lt,
            6 => CompareOp::Gt,
            _ => return None,
        })
    }

    /// Whether a key whose current value is `current` passes the test against `operand`.
    pub fn holds(self, current: Option<&[u8]>, operand: &[u8]) -> bool {
        match self {
            CompareOp::Eq => current == Some(operand),
            CompareOp::NotEq => current != Some(operand),
            CompareOp::Exists => current.is_some(),
            CompareOp::Absent => current.is_none(),
            CompareOp::Lt => current.is_some_and(|value| value < operand),
            CompareOp::Gt => current.is_some_and(|value| value > operand),
        }
    }
}

/// One condition of a [`Command::Txn`]; all conditions must hold for the success branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    /// The key tested.
    pub key: Vec<u8>,
    /// The test.
    pub op: CompareOp,
    /// The operand (empty and ignored for `Exists` / `Absent`).
    pub value: Vec<u8>,
}

/// A command carried by a `Normal` log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A read ordered through the log (no session: reads are idempotent).
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// Sets `key` to `value`. Result: `Ok`.
    Put {
        /// The writer's session.
        session: Session,
        /// The key.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
    },
    /// Removes `key`. Result: `Ok` if it existed, `NotFound` otherwise.
    Delete {
        /// The writer's session.
        session: Session,
        /// The key.
        key: Vec<u8>,
    },
    /// Sets `key` to `new` if its value is `expected` (`None`: the key must be absent).
    /// Result: `Ok` or `CasFailed { current }`.
    Cas {
        /// The writer's session.
        session: Session,
        /// The key.
        key: Vec<u8>,
        /// The value required; `None` requires the key to be absent.
        expected: Option<Vec<u8>>,
        /// The value written on success.
        new: Vec<u8>,
    },
    /// Runs `success` if every `compare` holds, else `failure`, atomically.
    /// Result: `Txn { succeeded, results }` with one result per op run.
    Txn {
        /// The writer's session.
        session: Session,
        /// Conditions, all of which must hold.
        compare: Vec<Compare>,
        /// Ops run when every condition holds.
        success: Vec<Op>,
        /// Ops run otherwise.
        failure: Vec<Op>,
    },
    /// Opens a client session. Result: `Registered { client_id }`, the entry's index.
    RegisterSession,
    /// One read-modify-write (see [`RmwOp`] for its results).
    Rmw {
        /// The writer's session.
        session: Session,
        /// The operation.
        op: RmwOp,
    },
    /// `command` judged at `now_ms`, the leader's clock (unix milliseconds) when it
    /// accepted it ([`Command::stamped`]): the keys it names whose expiry time is not
    /// after `now_ms` are deleted first, then it runs as it would alone. Never nested,
    /// never around a `DeleteExpired`. Result: `command`'s.
    At {
        /// The time it is judged at.
        now_ms: u64,
        /// The command.
        command: Box<Command>,
    },
    /// Deletes each of `keys` whose expiry time is not after `now_ms`, proposed by the
    /// leader's expiry cycle without a session (nobody waits for it); a key set again
    /// meanwhile, without an expiry time or with a later one, stays. Result:
    /// `Integer(number deleted)`.
    DeleteExpired {
        /// The time the leader judged by, unix milliseconds.
        now_ms: u64,
        /// The keys it found expired.
        keys: Vec<Vec<u8>>,
    },
    /// Publishes `message` on the Redis pub/sub `channel`: no state change (result `Ok`);
    /// every node delivers it to its own subscribers when it applies the entry, so a
    /// message reaches every node, in log order.
    Publish {
        /// The publisher's session (a retried PUBLISH is applied once).
        session: Session,
        /// The channel.
        channel: Vec<u8>,
        /// The payload.
        message: Vec<u8>,
    },
}

impl Command {
    /// The session of a write, `None` for `Get` and `RegisterSession`.
    pub fn session(&self) -> Option<Session> {
        match self {
            Command::Put { session, .. }
            | Command::Delete { session, .. }
            | Command::Cas { session, .. }
            | Command::Txn { session, .. }
            | Command::Rmw { session, .. }
            | Command::Publish { session, .. } => Some(*session),
            Command::At { command, .. } => command.session(),
            Command::Get { .. } | Command::RegisterSession | Command::DeleteExpired { .. } => None,
        }
    }

    /// The command as the leader proposes it at `now_ms` (its clock, unix
    /// milliseconds): wrapped in [`Command::At`] with every relative expiry time made
    /// absolute, unless its outcome cannot depend on time (a Put, a `RegisterSession`, a
    /// `Publish`, one already stamped or a `DeleteExpired`), which is returned as it is.
    pub fn stamped(self, now_ms: u64) -> Command {
        let resolve = |op: &mut RmwOp| match op {
            RmwOp::Set { expiry, .. } | RmwOp::GetEx { expiry, .. } => {
                *expiry = expiry.resolved(now_ms);
            }
            RmwOp::Expire { at, .. } => *at = Deadline::At(at.resolve(now_ms)),
            _ => {}
        };
        let mut command = match self {
            Command::Put { .. }
            | Command::RegisterSession
            | Command::Publish { .. }
            | Command::At { .. }
            | Command::DeleteExpired { .. } => return self,
            command => command,
        };
        match &mut command {
            Command::Rmw { op, .. } => resolve(op),
            Command::Txn {
                success, failure, ..
            } => {
                for op in success.iter_mut().chain(failure.iter_mut()) {
                    if let Op::Rmw(op) = op {
                        resolve(op);
                    }
                }
            }
            _ => {}
        }
        Command::At {
            now_ms,
            command: Box::new(command),
        }
    }

    /// Every key the command names (reads and writes), in no particular order; a key
    /// may repeat. FLUSHALL names none.
    pub fn keys(&self) -> Vec<&[u8]> {
        let mut keys: Vec<&[u8]> = Vec::new();
        match self {
            Command::Get { key }
            | Command::Put { key, .. }
            | Command::Delete { key, .. }
            | Command::Cas { key, .. } => keys.push(key),
            Command::Txn {
                compare,
                success,
                failure,
                ..
            } => {
                keys.extend(compare.iter().map(|c| &c.key[..]));
                for op in success.iter().chain(failure) {
                    match op {
                        Op::Put { key, .. } | Op::Delete { key } | Op::Get { key } => {
                            keys.push(key);
                        }
                        Op::Rmw(op) => op.keys(&mut keys),
                    }
                }
            }
            Command::Rmw { op, .. } => op.keys(&mut keys),
            Command::At { command, .. } => return command.keys(),
            Command::DeleteExpired { keys: named, .. } => {
                keys.extend(named.iter().map(|k| &k[..]));
            }
            Command::RegisterSession | Command::Publish { .. } => {}
        }
        keys
    }
}

/// The result of one [`Op`] of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// A `Put` or `Delete` ran.
    Done,
    /// A `Get` (or a read-modify-write answering with a value) read this value
    /// (`None`: absent).
    Value(Option<Vec<u8>>),
    /// A read-modify-write's integer answer.
    Integer(i64),
    /// A conditional read-modify-write whose condition did not hold wrote nothing.
    Unchanged,
    /// A read-modify-write refused the value it found and wrote nothing.
    Rejected(ValueError),
}

/// What applying a command produced. Deterministic: every replica computes the same one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandResult {
    /// A put, a delete of an existing key, or a successful cas.
    Ok,
    /// The value a get read (`None`: absent).
    Value(Option<Vec<u8>>),
    /// A delete found no such key.
    NotFound,
    /// A cas did not match; nothing was written.
    CasFailed {
        /// The value found (`None`: absent).
        current: Option<Vec<u8>>,
    },
    /// A transaction ran one of its branches.
    Txn {
        /// Whether every compare held (the success branch ran).
        succeeded: bool,
        /// One result per op of the branch that ran.
        results: Vec<OpResult>,
    },
    /// A session was opened; use `client_id` in every later write.
    Registered {
        /// The new session's id (the index of the registering entry).
        client_id: u64,
    },
    /// The write's session is unknown: it expired or was never registered. Nothing was
    /// applied; the client must register a new session (and may not know whether its
    /// earlier in-flight writes were applied).
    SessionExpired,
    /// The write's `seq` is older than the results still kept for its session: it is a
    /// stale retry whose outcome is no longer known. Nothing was applied.
    StaleSequence,
    /// The entry was not a valid command (undecodable, or an index already applied);
    /// nothing was applied.
    Error(String),
    /// A read-modify-write's integer answer.
    Integer(i64),
    /// A conditional read-modify-write whose condition did not hold wrote nothing.
    Unchanged,
    /// A read-modify-write refused the value it found and wrote nothing.
    Rejected(ValueError),
}

impl From<OpResult> for CommandResult {
    /// The result of a [`Command::Rmw`] whose op, inside a transaction, gave `result`.
    fn from(result: OpResult) -> CommandResult {
        match result {
            OpResult::Done => CommandResult::Ok,
            OpResult::Value(value) => CommandResult::Value(value),
            OpResult::Integer(value) => CommandResult::Integer(value),
            OpResult::Unchanged => CommandResult::Unchanged,
            OpResult::Rejected(error) => CommandResult::Rejected(error),
        }
    }
}

fn encode_session(session: Session, out: &mut Vec<u8>) {
    put_u64(out, session.client_id);
    put_u64(out, session.seq);
}

fn decode_session(input: &mut Reader<'_>) -> Result<Session, DecodeError> {
    Ok(Session {
        client_id: input.u64("session client id")?,
        seq: input.u64("session seq")?,
    })
}

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_GET: u8 = 3;
const OP_RMW: u8 = 4;

const RMW_INCR_BY: u8 = 1;
const RMW_INCR_BY_FLOAT: u8 = 2;
const RMW_APPEND: u8 = 3;
const RMW_SET: u8 = 4;
const RMW_GET_DEL: u8 = 5;
const RMW_SET_IF_ALL_ABSENT: u8 = 6;
const RMW_DELETE_MANY: u8 = 7;
const RMW_RENAME: u8 = 8;
const RMW_COPY: u8 = 9;
const RMW_FLUSH_ALL: u8 = 10;
const RMW_EXPIRE: u8 = 11;
const RMW_PERSIST: u8 = 12;
const RMW_GET_EX: u8 = 13;
const RMW_SET_EXPIRING: u8 = 14;
const SET_EXPIRY_CLEAR: u8 = 0;
const SET_EXPIRY_KEEP: u8 = 1;
const DEADLINE_AT: u8 = 1;
const DEADLINE_AFTER: u8 = 2;

fn encode_deadline(deadline: Deadline, out: &mut Vec<u8>) {
    let (tag, ms) = match deadline {
        Deadline::At(at_ms) => (DEADLINE_AT, at_ms),
        Deadline::After(ms) => (DEADLINE_AFTER, ms),
    };
    out.push(tag);
    put_u64(out, ms);
}

fn decode_deadline(tag: u8, input: &mut Reader<'_>) -> Result<Deadline, DecodeError> {
    Ok(match tag {
        DEADLINE_AT => Deadline::At(input.u64("expiry time")?),
        DEADLINE_AFTER => Deadline::After(input.u64("expiry duration")?),
        _ => return Err(DecodeError::Malformed("expiry deadline")),
    })
}

/// `set_expiry`: 0 Clear, 1 Keep, or a deadline (whose tags are 1 and 2, shifted by 1).
fn encode_set_expiry(expiry: SetExpiry, out: &mut Vec<u8>) {
    match expiry {
        SetExpiry::Clear => out.push(SET_EXPIRY_CLEAR),
        SetExpiry::Keep => out.push(SET_EXPIRY_KEEP),
        SetExpiry::At(deadline) => {
            let start = out.len();
            encode_deadline(deadline, out);
            out[start] += 1;
        }
    }
}

fn decode_set_expiry(input: &mut Reader<'_>) -> Result<SetExpiry, DecodeError> {
    Ok(match input.u8("set expiry")? {
        SET_EXPIRY_CLEAR => SetExpiry::Clear,
        SET_EXPIRY_KEEP => SetExpiry::Keep,
        tag => SetExpiry::At(decode_deadline(tag - 1, input)?),
    })
}

fn encode_rmw(op: &RmwOp, out: &mut Vec<u8>) {
    match op {
        RmwOp::IncrBy { key, delta } => {
            out.push(RMW_INCR_BY);
            put_bytes(out, key);
            put_u64(out, *delta as u64);
        }
        RmwOp::IncrByFloat { key, increment } => {
            out.push(RMW_INCR_BY_FLOAT);
            put_bytes(out, key);
            put_bytes(out, increment);
        }
        RmwOp::Append { key, value } => {
            out.push(RMW_APPEND);
            put_bytes(out, key);
            put_bytes(out, value);
        }
        RmwOp::Set {
            key,
            value,
            condition,
            get,
            expiry,
        } => {
            out.push(if *expiry == SetExpiry::Clear {
                RMW_SET
            } else {
                RMW_SET_EXPIRING
            });
            put_bytes(out, key);
            put_bytes(out, value);
            out.push(*condition as u8);
            out.push(u8::from(*get));
            if *expiry != SetExpiry::Clear {
                encode_set_expiry(*expiry, out);
            }
        }
        RmwOp::GetDel { key } => {
            out.push(RMW_GET_DEL);
            put_bytes(out, key);
        }
        RmwOp::SetIfAllAbsent { pairs } => {
            out.push(RMW_SET_IF_ALL_ABSENT);
            put_u32(out, crate::wire::len_u32(pairs.len()));
            for (key, value) in pairs {
                put_bytes(out, key);
                put_bytes(out, value);
            }
        }
        RmwOp::DeleteMany { keys } => {
            out.push(RMW_DELETE_MANY);
            put_u32(out, crate::wire::len_u32(keys.len()));
            for key in keys {
                put_bytes(out, key);
            }
        }
        RmwOp::Rename {
            from,
            to,
            only_if_absent: flag,
        }
        | RmwOp::Copy {
            from,
            to,
            replace: flag,
        } => {
            out.push(if matches!(op, RmwOp::Rename { .. }) {
                RMW_RENAME
            } else {
                RMW_COPY
            });
            put_bytes(out, from);
            put_bytes(out, to);
            out.push(u8::from(*flag));
        }
        RmwOp::FlushAll => out.push(RMW_FLUSH_ALL),
        RmwOp::Expire { key, at, condition } => {
            out.push(RMW_EXPIRE);
            put_bytes(out, key);
            encode_deadline(*at, out);
            out.push(*condition as u8);
        }
        RmwOp::Persist { key } => {
            out.push(RMW_PERSIST);
            put_bytes(out, key);
        }
        RmwOp::GetEx { key, expiry } => {
            out.push(RMW_GET_EX);
            put_bytes(out, key);
            encode_set_expiry(*expiry, out);
        }
    }
}

/// The fields of a Set after its tag; `expiring`: tag 14, with a `set_expiry`.
fn decode_set(input: &mut Reader<'_>, expiring: bool) -> Result<RmwOp, DecodeError> {
    let key = input.bytes("set key")?;
    let value = input.bytes("set value")?;
    let condition = SetCondition::from_u8(input.u8("set condition")?)
        .ok_or(DecodeError::Malformed("set condition"))?;
    let get = input.bool("set get")?;
    let expiry = if expiring {
        decode_set_expiry(input)?
    } else {
        SetExpiry::Clear
    };
    Ok(RmwOp::Set {
        key,
        value,
        condition,
        get,
        expiry,
    })
}

fn decode_rmw(input: &mut Reader<'_>) -> Result<RmwOp, DecodeError> {
    Ok(match input.u8("rmw type")? {
        RMW_INCR_BY => RmwOp::IncrBy {
            key: input.bytes("incr key")?,
            delta: input.u64("incr delta")? as i64,
        },
        RMW_INCR_BY_FLOAT => RmwOp::IncrByFloat {
            key: input.bytes("incr float key")?,
            increment: input.bytes("incr float increment")?,
        },
        RMW_APPEND => RmwOp::Append {
            key: input.bytes("append key")?,
            value: input.bytes("append value")?,
        },
        RMW_SET => decode_set(input, false)?,
        RMW_SET_EXPIRING => decode_set(input, true)?,
        RMW_GET_DEL => RmwOp::GetDel {
            key: input.bytes("getdel key")?,
        },
        RMW_SET_IF_ALL_ABSENT => {
            // Smallest pair: two empty byte strings = 8 bytes.
            let count = input.count(8, "msetnx pair count")?;
            let mut pairs = Vec::with_capacity(count);
            for _ in 0..count {
                pairs.push((input.bytes("msetnx key")?, input.bytes("msetnx value")?));
            }
            RmwOp::SetIfAllAbsent { pairs }
        }
        RMW_DELETE_MANY => {
            let count = input.count(4, "delete key count")?;
            let mut keys = Vec::with_capacity(count);
            for _ in 0..count {
                keys.push(input.bytes("delete key")?);
            }
            RmwOp::DeleteMany { keys }
        }
        RMW_RENAME => RmwOp::Rename {
            from: input.bytes("rename from")?,
            to: input.bytes("rename to")?,
            only_if_absent: input.bool("rename nx")?,
        },
        RMW_COPY => RmwOp::Copy {
            from: input.bytes("copy from")?,
            to: input.bytes("copy to")?,
            replace: input.bool("copy replace")?,
        },
        RMW_FLUSH_ALL => RmwOp::FlushAll,
        RMW_EXPIRE => {
            let key = input.bytes("expire key")?;
            let tag = input.u8("expire deadline")?;
            RmwOp::Expire {
                key,
                at: decode_deadline(tag, input)?,
                condition: ExpireCondition::from_u8(input.u8("expire condition")?)
                    .ok_or(DecodeError::Malformed("expire condition"))?,
            }
        }
        RMW_PERSIST => RmwOp::Persist {
            key: input.bytes("persist key")?,
        },
        RMW_GET_EX => RmwOp::GetEx {
            key: input.bytes("getex key")?,
            expiry: decode_set_expiry(input)?,
        },
        other => return Err(DecodeError::UnknownType(other)),
    })
}

/// The number of bytes [`encode_rmw`] appends for `op`.
fn rmw_encoded_len(op: &RmwOp) -> usize {
    const LEN: usize = 4;
    let bytes = |b: &[u8]| LEN + b.len();
    1 + match op {
        RmwOp::IncrBy { key, .. } => bytes(key) + 8,
        RmwOp::IncrByFloat { key, increment } => bytes(key) + bytes(increment),
        RmwOp::Append { key, value } => bytes(key) + bytes(value),
        RmwOp::Set {
            key, value, expiry, ..
        } => {
            bytes(key)
                + bytes(value)
                + 2
                + match expiry {
                    SetExpiry::Clear => 0,
                    SetExpiry::Keep => 1,
                    SetExpiry::At(_) => 9,
                }
        }
        RmwOp::GetEx { key, expiry } => {
            bytes(key)
                + match expiry {
                    SetExpiry::Clear | SetExpiry::Keep => 1,
                    SetExpiry::At(_) => 9,
                }
        }
        RmwOp::GetDel { key } => bytes(key),
        RmwOp::SetIfAllAbsent { pairs } => {
            LEN + pairs
                .iter()
                .map(|(k, v)| bytes(k) + bytes(v))
                .sum::<usize>()
        }
        RmwOp::DeleteMany { keys } => LEN + keys.iter().map(|k| bytes(k)).sum::<usize>(),
        RmwOp::Rename { from, to, .. } | RmwOp::Copy { from, to, .. } => {
            bytes(from) + bytes(to) + 1
        }
        RmwOp::FlushAll => 0,
        RmwOp::Expire { key, .. } => bytes(key) + 10,
        RmwOp::Persist { key } => bytes(key),
    }
}

fn encode_ops(ops: &[Op], out: &mut Vec<u8>) {
    put_u32(out, crate::wire::len_u32(ops.len()));
    for op in ops {
        match op {
            Op::Put { key, value } => {
                out.push(OP_PUT);
                put_bytes(out, key);
                put_bytes(out, value);
            }
            Op::Delete { key } => {
                out.push(OP_DELETE);
                put_bytes(out, key);
            }
            Op::Get { key } => {
                out.push(OP_GET);
                put_bytes(out, key);
            }
            Op::Rmw(op) => {
                out.push(OP_RMW);
                encode_rmw(op, out);
            }
        }
    }
}

fn decode_ops(input: &mut Reader<'_>) -> Result<Vec<Op>, DecodeError> {
    // Smallest op: a read-modify-write without fields (FLUSHALL) = 2 bytes.
    let count = input.count(2, "txn op count")?;
    let mut ops = Vec::with_capacity(count);
    for _ in 0..count {
        ops.push(match input.u8("txn op type")? {
            OP_PUT => Op::Put {
                key: input.bytes("txn put key")?,
                value: input.bytes("txn put value")?,
            },
            OP_DELETE => Op::Delete {
                key: input.bytes("txn delete key")?,
            },
            OP_GET => Op::Get {
                key: input.bytes("txn get key")?,
            },
            OP_RMW => Op::Rmw(decode_rmw(input)?),
            _ => return Err(DecodeError::Malformed("txn op type")),
        });
    }
    Ok(ops)
}

const CMD_GET: u8 = 1;
const CMD_PUT: u8 = 2;
const CMD_DELETE: u8 = 3;
const CMD_CAS: u8 = 4;
const CMD_TXN: u8 = 5;
const CMD_REGISTER: u8 = 6;
const CMD_RMW: u8 = 7;
const CMD_AT: u8 = 8;
const CMD_DELETE_EXPIRED: u8 = 9;
const CMD_PUBLISH: u8 = 15;

/// Appends the encoding of `command` (version byte first) to `out`.
pub fn encode_command(command: &Command, out: &mut Vec<u8>) {
    out.push(COMMAND_VERSION);
    match command {
        Command::Get { key } => {
            out.push(CMD_GET);
            put_bytes(out, key);
        }
        Command::Put {
            session,
            key,
            value,
        } => {
            out.push(CMD_PUT);
            encode_session(*session, out);
            put_bytes(out, key);
            put_bytes(out, value);
        }
        Command::Delete { session, key } => {
            out.push(CMD_DELETE);
            encode_session(*session, out);
            put_bytes(out, key);
        }
        Command::Cas {
            session,
            key,
            expected,
            new,
        } => {
            out.push(CMD_CAS);
            encode_session(*session, out);
            put_bytes(out, key);
            put_option_bytes(out, expected.as_deref());
            put_bytes(out, new);
        }
        Command::Txn {
            session,
            compare,
            success,
            failure,
        } => {
            out.push(CMD_TXN);
            encode_session(*session, out);
            put_u32(out, crate::wire::len_u32(compare.len()));
            for condition in compare {
                put_bytes(out, &condition.key);
                out.push(condition.op as u8);
                put_bytes(out, &condition.value);
            }
            encode_ops(success, out);
            encode_ops(failure, out);
        }
        Command::RegisterSession => out.push(CMD_REGISTER),
        Command::Rmw { session, op } => {
            out.push(CMD_RMW);
            encode_session(*session, out);
            encode_rmw(op, out);
        }
        Command::At { now_ms, command } => {
            out.push(CMD_AT);
            put_u64(out, *now_ms);
            encode_command(command, out);
        }
        Command::DeleteExpired { now_ms, keys } => {
            out.push(CMD_DELETE_EXPIRED);
            put_u64(out, *now_ms);
            put_u32(out, crate::wire::len_u32(keys.len()));
            for key in keys {
                put_bytes(out, key);
            }
        }
        Command::Publish {
            session,
            channel,
            message,
        } => {
            out.push(CMD_PUBLISH);
            encode_session(*session, out);
            put_bytes(out, channel);
            put_bytes(out, message);
        }
    }
}

/// The number of bytes [`encode_command`] appends for `command`, computed without
/// encoding it: the size of its log entry, checked against `limits.entry_bytes_max`
/// before a command built in the server (the Redis port's) is encoded or proposed.
pub fn encoded_len(command: &Command) -> usize {
    const HEADER: usize = 2; // version, type
    const SESSION: usize = 16;
    const LEN: usize = 4;
    let bytes = |b: &[u8]| LEN + b.len();
    let ops = |ops: &[Op]| {
        LEN + ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value } => 1 + bytes(key) + bytes(value),
                Op::Delete { key } | Op::Get { key } => 1 + bytes(key),
                Op::Rmw(op) => 1 + rmw_encoded_len(op),
            })
            .sum::<usize>()
    };
    HEADER
        + match command {
            Command::Get { key } => bytes(key),
            Command::Put { key, value, .. } => SESSION + bytes(key) + bytes(value),
            Command::Delete { key, .. } => SESSION + bytes(key),
            Command::Cas {
                key, expected, new, ..
            } => SESSION + bytes(key) + 1 + expected.as_deref().map_or(0, bytes) + bytes(new),
            Command::Txn {
                compare,
                success,
                failure,
                ..
            } => {
                let compare: usize = compare
                    .iter()
                    .map(|c| bytes(&c.key) + 1 + bytes(&c.value))
                    .sum();
                SESSION + LEN + compare + ops(success) + ops(failure)
            }
            Command::RegisterSession => 0,
            Command::Rmw { op, .. } => SESSION + rmw_encoded_len(op),
            Command::At { command, .. } => 8 + encoded_len(command),
            Command::DeleteExpired { keys, .. } => {
                8 + LEN + keys.iter().map(|k| bytes(k)).sum::<usize>()
            }
            Command::Publish {
                channel, message, ..
            } => SESSION + bytes(channel) + bytes(message),
        }
}

/// The encoding of `command` as a new vector (the payload of a log entry).
pub fn command_to_vec(command: &Command) -> Vec<u8> {
    let mut out = Vec::new();
    encode_command(command, &mut out);
    out
}

/// Decodes a command that must fill `input` exactly.
///
/// # Errors
/// [`DecodeError::Malformed`] on an unknown version, truncation or trailing bytes;
/// [`DecodeError::UnknownType`] on an unknown command type.
pub fn decode_command(input: &[u8]) -> Result<Command, DecodeError> {
    let mut reader = Reader::new(input);
    let command = read_command(&mut reader)?;
    reader.finish()?;
    Ok(command)
}

/// A decoded command whose hot cases borrow their byte strings from the entry, so that
/// applying them copies each key and value once, straight into the map.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CommandRef<'a> {
    /// [`Command::Put`], borrowed.
    Put {
        /// The writer's session.
        session: Session,
        /// The key.
        key: &'a [u8],
        /// The new value.
        value: &'a [u8],
    },
    /// [`Command::Delete`], borrowed.
    Delete {
        /// The writer's session.
        session: Session,
        /// The key.
        key: &'a [u8],
    },
    /// Any other command, decoded into owned values.
    Owned(Command),
}

/// Decodes a command that must fill `input` exactly, borrowing the byte strings of a Put
/// or a Delete from `input`. Accepts and rejects exactly what [`decode_command`] does.
///
/// # Errors
/// As [`decode_command`].
pub(crate) fn decode_command_ref(input: &[u8]) -> Result<CommandRef<'_>, DecodeError> {
    let mut reader = Reader::new(input);
    let command = match input {
        [COMMAND_VERSION, CMD_PUT, ..] => {
            reader.u8("command version")?;
            reader.u8("command type")?;
            CommandRef::Put {
                session: decode_session(&mut reader)?,
                key: reader.slice("put key")?,
                value: reader.slice("put value")?,
            }
        }
        [COMMAND_VERSION, CMD_DELETE, ..] => {
            reader.u8("command version")?;
            reader.u8("command type")?;
            CommandRef::Delete {
                session: decode_session(&mut reader)?,
                key: reader.slice("delete key")?,
            }
        }
        _ => CommandRef::Owned(read_command(&mut reader)?),
    };
    reader.finish()?;
    Ok(command)
}

/// Reads one command from `input`, leaving the bytes after it.
pub(crate) fn read_command(input: &mut Reader<'_>) -> Result<Command, DecodeError> {
    if input.u8("command version")? != COMMAND_VERSION {
        return Err(DecodeError::Malformed("unsupported command version"));
    }
    let command = match input.u8("command type")? {
        CMD_GET => Command::Get {
            key: input.bytes("get key")?,
        },
        CMD_PUT => Command::Put {
            session: decode_session(input)?,
            key: input.bytes("put key")?,
            value: input.bytes("put value")?,
        },
        CMD_DELETE => Command::Delete {
            session: decode_session(input)?,
            key: input.bytes("delete key")?,
        },
        CMD_CAS => Command::Cas {
            session: decode_session(input)?,
            key: input.bytes("cas key")?,
            expected: input.option_bytes("cas expected")?,
            new: input.bytes("cas new value")?,
        },
        CMD_TXN => {
            let session = decode_session(input)?;
            // Smallest compare: empty key + op byte + empty value = 9 bytes.
            let count = input.count(9, "txn compare count")?;
            let mut compare = Vec::with_capacity(count);
            for _ in 0..count {
                let key = input.bytes("txn compare key")?;
                let op = CompareOp::from_u8(input.u8("txn compare op")?)
                    .ok_or(DecodeError::Malformed("txn compare op"))?;
                let value = input.bytes("txn compare value")?;
                compare.push(Compare { key, op, value });
            }
            Command::Txn {
                session,
                compare,
                success: decode_ops(input)?,
                failure: decode_ops(input)?,
            }
        }
        CMD_REGISTER => Command::RegisterSession,
        CMD_RMW => Command::Rmw {
            session: decode_session(input)?,
            op: decode_rmw(input)?,
        },
        CMD_AT => {
            let now_ms = input.u64("at time")?;
            let command = read_command(input)?;
            if matches!(command, Command::At { .. } | Command::DeleteExpired { .. }) {
                return Err(DecodeError::Malformed("at around at or delete-expired"));
            }
            Command::At {
                now_ms,
                command: Box::new(command),
            }
        }
        CMD_DELETE_EXPIRED => {
            let now_ms = input.u64("expired now")?;
            let count = input.count(4, "expired key count")?;
            let mut keys = Vec::with_capacity(count);
            for _ in 0..count {
                keys.push(input.bytes("expired key")?);
            }
            Command::DeleteExpired { now_ms, keys }
        }
        CMD_PUBLISH => Command::Publish {
            session: decode_session(input)?,
            channel: input.bytes("publish channel")?,
            message: input.bytes("publish message")?,
        },
        other => return Err(DecodeError::UnknownType(other)),
    };
    Ok(command)
}

const RES_OK: u8 = 1;
const RES_VALUE: u8 = 2;
const RES_NOT_FOUND: u8 = 3;
const RES_CAS_FAILED: u8 = 4;
const RES_TXN: u8 = 5;
const RES_REGISTERED: u8 = 6;
const RES_SESSION_EXPIRED: u8 = 7;
const RES_STALE_SEQUENCE: u8 = 8;
const RES_ERROR: u8 = 9;
const RES_INTEGER: u8 = 10;
const RES_UNCHANGED: u8 = 11;
const RES_REJECTED: u8 = 12;

const OPRES_DONE: u8 = 1;
const OPRES_VALUE: u8 = 2;
const OPRES_INTEGER: u8 = 3;
const OPRES_UNCHANGED: u8 = 4;
const OPRES_REJECTED: u8 = 5;

fn read_value_error(input: &mut Reader<'_>) -> Result<ValueError, DecodeError> {
    ValueError::from_u8(input.u8("value error")?).ok_or(DecodeError::Malformed("value error"))
}

/// Appends the encoding of `result` (version byte first) to `out`.
pub fn encode_result(result: &CommandResult, out: &mut Vec<u8>) {
    out.push(RESULT_VERSION);
    match result {
        CommandResult::Ok => out.push(RES_OK),
        CommandResult::Value(value) => {
            out.push(RES_VALUE);
            put_option_bytes(out, value.as_deref());
        }
        CommandResult::NotFound => out.push(RES_NOT_FOUND),
        CommandResult::CasFailed { current } => {
            out.push(RES_CAS_FAILED);
            put_option_bytes(out, current.as_deref());
        }
        CommandResult::Txn { succeeded, results } => {
            out.push(RES_TXN);
            out.push(u8::from(*succeeded));
            put_u32(out, crate::wire::len_u32(results.len()));
            for result in results {
                match result {
                    OpResult::Done => out.push(OPRES_DONE),
                    OpResult::Value(value) => {
                        out.push(OPRES_VALUE);
                        put_option_bytes(out, value.as_deref());
                    }
                    OpResult::Integer(value) => {
                        out.push(OPRES_INTEGER);
                        put_u64(out, *value as u64);
                    }
                    OpResult::Unchanged => out.push(OPRES_UNCHANGED),
                    OpResult::Rejected(error) => {
                        out.push(OPRES_REJECTED);
                        out.push(*error as u8);
                    }
                }
            }
        }
        CommandResult::Registered { client_id } => {
            out.push(RES_REGISTERED);
            put_u64(out, *client_id);
        }
        CommandResult::SessionExpired => out.push(RES_SESSION_EXPIRED),
        CommandResult::StaleSequence => out.push(RES_STALE_SEQUENCE),
        CommandResult::Error(message) => {
            out.push(RES_ERROR);
            put_bytes(out, message.as_bytes());
        }
        CommandResult::Integer(value) => {
            out.push(RES_INTEGER);
            put_u64(out, *value as u64);
        }
        CommandResult::Unchanged => out.push(RES_UNCHANGED),
        CommandResult::Rejected(error) => {
            out.push(RES_REJECTED);
            out.push(*error as u8);
        }
    }
}

/// Decodes a result that must fill `input` exactly.
///
/// # Errors
/// As [`decode_command`].
pub fn decode_result(input: &[u8]) -> Result<CommandResult, DecodeError> {
    let mut reader = Reader::new(input);
    let result = read_result(&mut reader)?;
    reader.finish()?;
    Ok(result)
}

/// Reads one result from `input`, leaving the bytes after it.
pub(crate) fn read_result(input: &mut Reader<'_>) -> Result<CommandResult, DecodeError> {
    if input.u8("result version")? != RESULT_VERSION {
        return Err(DecodeError::Malformed("unsupported result version"));
    }
    let result = match input.u8("result type")? {
        RES_OK => CommandResult::Ok,
        RES_VALUE => CommandResult::Value(input.option_bytes("value")?),
        RES_NOT_FOUND => CommandResult::NotFound,
        RES_CAS_FAILED => CommandResult::CasFailed {
            current: input.option_bytes("cas current")?,
        },
        RES_TXN => {
            let succeeded = input.bool("txn succeeded")?;
            let count = input.count(1, "txn result count")?;
            let mut results = Vec::with_capacity(count);
            for _ in 0..count {
                results.push(match input.u8("txn result type")? {
                    OPRES_DONE => OpResult::Done,
                    OPRES_VALUE => OpResult::Value(input.option_bytes("txn value")?),
                    OPRES_INTEGER => OpResult::Integer(input.u64("txn integer")? as i64),
                    OPRES_UNCHANGED => OpResult::Unchanged,
                    OPRES_REJECTED => OpResult::Rejected(read_value_error(input)?),
                    _ => return Err(DecodeError::Malformed("txn result type")),
                });
            }
            CommandResult::Txn { succeeded, results }
        }
        RES_REGISTERED => CommandResult::Registered {
            client_id: input.u64("client id")?,
        },
        RES_SESSION_EXPIRED => CommandResult::SessionExpired,
        RES_STALE_SEQUENCE => CommandResult::StaleSequence,
        RES_ERROR => CommandResult::Error(input.string("error message")?),
        RES_INTEGER => CommandResult::Integer(input.u64("integer")? as i64),
        RES_UNCHANGED => CommandResult::Unchanged,
        RES_REJECTED => CommandResult::Rejected(read_value_error(input)?),
        other => return Err(DecodeError::UnknownType(other)),
    };
    Ok(result)
}

/// Proptest strategies for commands and results, shared with the client codec tests.
#[cfg(test)]
#[path = "command_strategy.rs"]
pub(crate) mod strategy;

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
