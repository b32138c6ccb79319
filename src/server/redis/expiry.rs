//! The Redis expiry commands: EXPIRE / PEXPIRE / EXPIREAT / PEXPIREAT (NX, XX, GT, LT),
//! PERSIST, TTL / PTTL / EXPIRETIME / PEXPIRETIME, GETEX, SETEX / PSETEX and SET's
//! EX / PX / EXAT / PXAT / KEEPTTL options, parsed with redis-server 7's error texts into
//! kv expiry ops, and the TTL family's replies from the node's `Ttl` answer.
//!
//! Relative times stay relative here ([`Deadline::After`]): the leader makes them
//! absolute by its clock when it accepts the command (`Command::stamped`), so every
//! replica applies the same unix-millisecond time. A time already past (EXPIRE with a
//! negative count, an EXPIREAT in the past) is [`Deadline::At`]`(0)`: the entry deletes
//! the key, as Redis does.
//!
//! Invariant: pure (no clock, no IO), never panics on any input.

use super::command::{Bytes, Cmd, Control, Parsed, not_integer, parse_integer};
use crate::codec::resp::RespValue;
use crate::kv::{Deadline, ExpireCondition, SetCondition, SetExpiry};

/// A bound on the leader's clock (unix ms, about the year 2109) that Redis's check of a
/// relative time against its clock (`when > LLONG_MAX - now`) is made with here, as
/// parsing reads no clock.
const NOW_MS_BOUND: i64 = 1 << 42;

/// What a TTL-family command answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlQuery {
    /// In milliseconds (PTTL, PEXPIRETIME), else seconds.
    pub millis: bool,
    /// The unix time it expires at (EXPIRETIME, PEXPIRETIME), else the time left.
    pub absolute: bool,
}

impl TtlQuery {
    /// The reply from the node's answer in milliseconds (-2: no key, -1: no expiry
    /// time); seconds are rounded to the nearest, as Redis rounds them.
    pub fn reply(self, ms: i64) -> RespValue {
        RespValue::Integer(match ms {
            ..0 => ms,
            ms if self.millis => ms,
            ms => ms.saturating_add(500) / 1000,
        })
    }
}

fn err(text: impl Into<String>) -> RespValue {
    RespValue::error(text)
}

fn invalid_expire(command: &str) -> RespValue {
    err(format!("ERR invalid expire time in '{command}' command"))
}

/// Parses the expiry commands (`name` lower case, `rest` its arguments, arity already
/// checked); `None` for any other command.
pub fn parse(name: &str, mut rest: Vec<Bytes>) -> Option<Result<Parsed, RespValue>> {
    let data = |cmd| Ok(Parsed::Data(cmd));
    let ttl = |rest: Vec<Bytes>, millis, absolute| {
        let key = rest.into_iter().next().unwrap_or_default();
        Ok(Parsed::Control(Control::Ttl(
            key,
            TtlQuery { millis, absolute },
        )))
    };
    Some(match name {
        "expire" | "pexpire" | "expireat" | "pexpireat" => parse_expire(name, rest),
        "persist" => data(Cmd::Persist(rest.swap_remove(0))),
        "ttl" => ttl(rest, false, false),
        "pttl" => ttl(rest, true, false),
        "expiretime" => ttl(rest, false, true),
        "pexpiretime" => ttl(rest, true, true),
        "getex" => parse_getex(rest),
        "setex" | "psetex" => {
            let value = rest.pop().unwrap_or_default();
            let time = rest.pop().unwrap_or_default();
            let key = rest.pop().unwrap_or_default();
            let millis = name == "psetex";
            deadline(name, &time, millis, false).and_then(|at| {
                data(Cmd::Set {
                    key,
                    value,
                    cond: SetCondition::Always,
                    get: false,
                    expiry: SetExpiry::At(at),
                })
            })
        }
        _ => return None,
    })
}

/// The time of a SET / GETEX / SETEX option, checked as Redis's
/// `getExpireMillisecondsOrReply`: a positive integer whose milliseconds, added to the
/// clock for a relative one, do not overflow.
fn deadline(
    command: &str,
    text: &[u8],
    millis: bool,
    absolute: bool,
) -> Result<Deadline, RespValue> {
    let value = parse_integer(text).ok_or_else(not_integer)?;
    if value <= 0 || (!millis && value > i64::MAX / 1000) {
        return Err(invalid_expire(command));
    }
    let ms = if millis { value } else { value * 1000 };
    if !absolute && ms > i64::MAX - NOW_MS_BOUND {
        return Err(invalid_expire(command));
    }
    let ms = ms.unsigned_abs();
    Ok(if absolute {
        Deadline::At(ms)
    } else {
        Deadline::After(ms)
    })
}

/// `EXPIRE key time [NX|XX|GT|LT]` and its three siblings: options first, then the
/// time, as redis-server checks them.
fn parse_expire(name: &str, mut rest: Vec<Bytes>) -> Result<Parsed, RespValue> {
    let options: Vec<Bytes> = rest.drain(2..).collect();
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for option in &options {
        match option.to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            _ => {
                return Err(err(format!(
                    "ERR Unsupported option {}",
                    String::from_utf8_lossy(option)
                )));
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Err(err(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if gt && lt {
        return Err(err(
            "ERR GT and LT options at the same time are not compatible",
        ));
    }
    let condition = match (nx, xx, gt, lt) {
        (true, ..) => ExpireCondition::NoExpiry,
        (_, _, true, _) => ExpireCondition::Later,
        (_, true, _, true) => ExpireCondition::EarlierThanOne,
        (_, _, _, true) => ExpireCondition::Earlier,
        (_, true, ..) => ExpireCondition::HasExpiry,
        _ => ExpireCondition::Always,
    };
    let time = rest.pop().unwrap_or_default();
    let key = rest.pop().unwrap_or_default();
    let millis = name.starts_with('p');
    let absolute = name.ends_with("at");
    let value = parse_integer(&time).ok_or_else(not_integer)?;
    let ms = if millis {
        value
    } else {
        value
            .checked_mul(1000)
            .ok_or_else(|| invalid_expire(name))?
    };
    if !absolute && ms > i64::MAX - NOW_MS_BOUND {
        return Err(invalid_expire(name));
    }
    let at = match (ms, absolute) {
        (..0, _) => Deadline::At(0),
        (ms, true) => Deadline::At(ms.unsigned_abs()),
        (ms, false) => Deadline::After(ms.unsigned_abs()),
    };
    Ok(Parsed::Data(Cmd::Expire { key, at, condition }))
}

/// `GETEX key [EX s|PX ms|EXAT t|PXAT t|PERSIST]`.
fn parse_getex(mut rest: Vec<Bytes>) -> Result<Parsed, RespValue> {
    let key = rest.remove(0);
    let mut words = rest.into_iter();
    let expiry = match (words.next(), words.next(), words.next()) {
        (None, ..) => SetExpiry::Keep,
        (Some(word), None, None) if word.eq_ignore_ascii_case(b"persist") => SetExpiry::Clear,
        (Some(word), Some(time), None) => match time_option(&word) {
            Some((millis, absolute)) => SetExpiry::At(deadline("getex", &time, millis, absolute)?),
            None => return Err(err("ERR syntax error")),
        },
        _ => return Err(err("ERR syntax error")),
    };
    Ok(Parsed::Data(Cmd::GetEx { key, expiry }))
}

/// Whether `word` is EX / PX / EXAT / PXAT: (in milliseconds, absolute).
fn time_option(word: &[u8]) -> Option<(bool, bool)> {
    Some(match word.to_ascii_uppercase().as_slice() {
        b"EX" => (false, false),
        b"PX" => (true, false),
        b"EXAT" => (false, true),
        b"PXAT" => (true, true),
        _ => return None,
    })
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT t|PXAT t|KEEPTTL]`, parsed as Redis 7's
/// `parseExtendedStringArgumentsOrReply`: an option may repeat, conflicting ones are a
/// syntax error, and the time is checked after every option.
pub fn parse_set(mut rest: Vec<Bytes>) -> Result<Cmd, RespValue> {
    let options: Vec<Bytes> = rest.drain(2..).collect();
    let value = rest.pop().unwrap_or_default();
    let key = rest.pop().unwrap_or_default();
    let mut cond = SetCondition::Always;
    let mut get = false;
    let mut keep_ttl = false;
    let mut time: Option<((bool, bool), &Bytes)> = None;
    let mut words = options.iter();
    while let Some(option) = words.next() {
        let upper = option.to_ascii_uppercase();
        match (upper.as_slice(), time_option(option)) {
            (b"NX", _) if cond != SetCondition::Present => cond = SetCondition::Absent,
            (b"XX", _) if cond != SetCondition::Absent => cond = SetCondition::Present,
            (b"GET", _) => get = true,
            (b"KEEPTTL", _) if time.is_none() => keep_ttl = true,
            (_, Some(kind)) if !keep_ttl && time.is_none_or(|(given, _)| given == kind) => {
                match words.next() {
                    Some(value) => time = Some((kind, value)),
                    None => return Err(err("ERR syntax error")),
                }
            }
            _ => return Err(err("ERR syntax error")),
        }
    }
    let expiry = match time {
        Some(((millis, absolute), text)) => SetExpiry::At(deadline("set", text, millis, absolute)?),
        None if keep_ttl => SetExpiry::Keep,
        None => SetExpiry::Clear,
    };
    Ok(Cmd::Set {
        key,
        value,
        cond,
        get,
        expiry,
    })
}

#[cfg(test)]
mod tests {
    //! Goal: redis-server 7's parsing and error texts for the expiry commands, and the
    //! ops they become. Method: tables of command lines.
    use super::*;
    use crate::kv::{OpResult, RmwOp};

    fn parsed(line: &str) -> Result<Parsed, RespValue> {
        let args: Vec<Bytes> = line.split(' ').map(|s| s.as_bytes().to_vec()).collect();
        super::super::command::parse(args)
    }

    #[test]
    fn errors_use_redis_texts() {
        let cases = [
            ("set k v EX 0", "ERR invalid expire time in 'set' command"),
            ("set k v PX -5", "ERR invalid expire time in 'set' command"),
            (
                "set k v EX 9223372036854776",
                "ERR invalid expire time in 'set' command",
            ),
            (
                "set k v EX x",
                "ERR value is not an integer or out of range",
            ),
            ("set k v EX 1 PX 1", "ERR syntax error"),
            ("set k v EX 1 KEEPTTL", "ERR syntax error"),
            ("set k v KEEPTTL PXAT 5", "ERR syntax error"),
            ("set k v EX", "ERR syntax error"),
            ("setex k 0 v", "ERR invalid expire time in 'setex' command"),
            (
                "psetex k x v",
                "ERR value is not an integer or out of range",
            ),
            ("expire k 10 FOO", "ERR Unsupported option FOO"),
            (
                "expire k 10 NX XX",
                "ERR NX and XX, GT or LT options at the same time are not compatible",
            ),
            (
                "pexpire k 10 GT LT",
                "ERR GT and LT options at the same time are not compatible",
            ),
            ("expire k x", "ERR value is not an integer or out of range"),
            (
                "expire k 9223372036854775807",
                "ERR invalid expire time in 'expire' command",
            ),
            ("getex k EX 0", "ERR invalid expire time in 'getex' command"),
            ("getex k PERSIST EX 1", "ERR syntax error"),
            ("getex k FOO", "ERR syntax error"),
            ("ttl", "ERR wrong number of arguments for 'ttl' command"),
            ("ttl a b", "ERR wrong number of arguments for 'ttl' command"),
        ];
        for (i, (line, want)) in cases.into_iter().enumerate() {
            assert_eq!(parsed(line), Err(RespValue::error(want)), "#{i}: {line}");
        }
    }

    #[test]
    fn commands_become_expiry_ops() {
        let op = |line: &str| match parsed(line) {
            Ok(Parsed::Data(cmd)) => cmd.rmw_op(),
            other => panic!("{line}: {other:?}"),
        };
        let set = |expiry| {
            Some(RmwOp::Set {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                condition: SetCondition::Always,
                get: false,
                expiry,
            })
        };
        let expire = |at, condition| {
            Some(RmwOp::Expire {
                key: b"k".to_vec(),
                at,
                condition,
            })
        };
        use ExpireCondition::*;
        assert_eq!(
            op("set k v EX 10"),
            set(SetExpiry::At(Deadline::After(10_000)))
        );
        assert_eq!(
            op("set k v px 5 px 7"),
            set(SetExpiry::At(Deadline::After(7)))
        );
        assert_eq!(
            op("set k v EXAT 10"),
            set(SetExpiry::At(Deadline::At(10_000)))
        );
        assert_eq!(op("set k v KEEPTTL"), set(SetExpiry::Keep));
        assert_eq!(op("set k v"), set(SetExpiry::Clear));
        assert_eq!(
            op("setex k 3 v"),
            set(SetExpiry::At(Deadline::After(3_000)))
        );
        assert_eq!(op("psetex k 3 v"), set(SetExpiry::At(Deadline::After(3))));
        assert_eq!(op("expire k 5"), expire(Deadline::After(5_000), Always));
        assert_eq!(op("expire k -5"), expire(Deadline::At(0), Always));
        assert_eq!(op("pexpireat k 77 xx"), expire(Deadline::At(77), HasExpiry));
        assert_eq!(
            op("expire k 1 XX GT"),
            expire(Deadline::After(1_000), Later)
        );
        assert_eq!(
            op("expire k 1 LT XX"),
            expire(Deadline::After(1_000), EarlierThanOne)
        );
        assert_eq!(op("expire k 1 LT"), expire(Deadline::After(1_000), Earlier));
        assert_eq!(
            op("expire k 1 nx"),
            expire(Deadline::After(1_000), NoExpiry)
        );
        assert_eq!(op("persist k"), Some(RmwOp::Persist { key: b"k".to_vec() }));
        let getex = |expiry| {
            Some(RmwOp::GetEx {
                key: b"k".to_vec(),
                expiry,
            })
        };
        assert_eq!(op("getex k"), getex(SetExpiry::Keep));
        assert_eq!(op("getex k persist"), getex(SetExpiry::Clear));
        assert_eq!(op("getex k pxat 9"), getex(SetExpiry::At(Deadline::At(9))));
        let Ok(Parsed::Data(cmd)) = parsed("expire k 5") else {
            panic!("expire parses");
        };
        assert_eq!(cmd.reply(vec![OpResult::Integer(1)]), RespValue::Integer(1));
    }

    #[test]
    fn ttl_replies_round_seconds_as_redis() {
        let ttl = TtlQuery {
            millis: false,
            absolute: false,
        };
        let pttl = TtlQuery {
            millis: true,
            absolute: false,
        };
        assert_eq!(ttl.reply(-2), RespValue::Integer(-2));
        assert_eq!(ttl.reply(-1), RespValue::Integer(-1));
        assert_eq!(ttl.reply(1_499), RespValue::Integer(1));
        assert_eq!(ttl.reply(1_500), RespValue::Integer(2));
        assert_eq!(ttl.reply(0), RespValue::Integer(0));
        assert_eq!(pttl.reply(1_499), RespValue::Integer(1_499));
        assert_eq!(
            parsed("PTTL k"),
            Ok(Parsed::Control(Control::Ttl(b"k".to_vec(), pttl)))
        );
    }
}
