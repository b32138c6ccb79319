//! RedisCommandCodec, the second layer of the Redis chain: argument lists become typed
//! commands (with Redis's arity, syntax and integer error texts), and data commands are
//! evaluated over an [`Overlay`] of key values, which is how a command or a whole
//! MULTI/EXEC block turns into the ops of one atomic kv `Txn`.
//!
//! Invariant: parsing and evaluation are pure: no IO, no clock, no panics on any input.

use std::collections::HashMap;

use crate::codec::resp::RespValue;

/// A key or value: raw bytes.
pub type Bytes = Vec<u8>;

/// SET's condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetCond {
    /// Always set.
    Always,
    /// NX: only if absent.
    Absent,
    /// XX: only if present.
    Present,
}

/// A command over the keyspace (allowed inside MULTI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    /// GET key.
    Get(Bytes),
    /// STRLEN key.
    Strlen(Bytes),
    /// EXISTS key...
    Exists(Vec<Bytes>),
    /// MGET key...
    Mget(Vec<Bytes>),
    /// SET key value [NX|XX] [GET].
    Set {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// NX / XX.
        cond: SetCond,
        /// GET: reply with the old value.
        get: bool,
    },
    /// MSET key value ...
    Mset(Vec<(Bytes, Bytes)>),
    /// DEL key...
    Del(Vec<Bytes>),
    /// INCR / INCRBY / DECR / DECRBY, as a signed delta.
    Incr {
        /// The key.
        key: Bytes,
        /// The amount added.
        delta: i64,
    },
    /// APPEND key value.
    Append {
        /// The key.
        key: Bytes,
        /// The suffix.
        value: Bytes,
    },
    /// GETDEL key.
    Getdel(Bytes),
    /// PING [message].
    Ping(Option<Bytes>),
    /// ECHO message.
    Echo(Bytes),
}

/// A command about the connection or the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// MULTI.
    Multi,
    /// EXEC.
    Exec,
    /// DISCARD.
    Discard,
    /// WATCH key...
    Watch(Vec<Bytes>),
    /// UNWATCH.
    Unwatch,
    /// DBSIZE.
    Dbsize,
    /// INFO [section].
    Info(Option<String>),
    /// COMMAND [subcommand].
    Command(Option<String>),
    /// CLIENT SETNAME name.
    ClientSetname(Bytes),
    /// CLIENT GETNAME.
    ClientGetname,
    /// SELECT 0 (other databases are refused at parse time).
    Select,
    /// QUIT.
    Quit,
}

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A keyspace command.
    Data(Cmd),
    /// A connection or server command.
    Control(Control),
}

/// Name, arity (Redis convention: exact if positive, minimum if negative), flags, first
/// key, last key, key step: what `COMMAND` reports.
const TABLE: &[(&str, i64, &str, i64, i64, i64)] = &[
    ("get", 2, "readonly fast", 1, 1, 1),
    ("strlen", 2, "readonly fast", 1, 1, 1),
    ("exists", -2, "readonly fast", 1, -1, 1),
    ("mget", -2, "readonly fast", 1, -1, 1),
    ("set", -3, "write denyoom", 1, 1, 1),
    ("mset", -3, "write denyoom", 1, -1, 2),
    ("del", -2, "write", 1, -1, 1),
    ("incr", 2, "write denyoom fast", 1, 1, 1),
    ("incrby", 3, "write denyoom fast", 1, 1, 1),
    ("decr", 2, "write denyoom fast", 1, 1, 1),
    ("decrby", 3, "write denyoom fast", 1, 1, 1),
    ("append", 3, "write denyoom fast", 1, 1, 1),
    ("getdel", 2, "write fast", 1, 1, 1),
    ("ping", -1, "fast", 0, 0, 0),
    ("echo", 2, "fast", 0, 0, 0),
    ("multi", 1, "noscript fast", 0, 0, 0),
    ("exec", 1, "noscript", 0, 0, 0),
    ("discard", 1, "noscript fast", 0, 0, 0),
    ("watch", -2, "noscript fast", 1, -1, 1),
    ("unwatch", 1, "noscript fast", 0, 0, 0),
    ("dbsize", 1, "readonly fast", 0, 0, 0),
    ("info", -1, "loading stale", 0, 0, 0),
    ("command", -1, "loading stale", 0, 0, 0),
    ("client", -2, "admin noscript", 0, 0, 0),
    ("select", 2, "loading fast", 0, 0, 0),
    ("quit", 1, "fast", 0, 0, 0),
];

/// The reply to `COMMAND` (every command's info) or `COMMAND COUNT`; other subcommands
/// (DOCS, INFO) get an empty list, which redis-cli accepts.
pub fn command_reply(sub: Option<&str>) -> RespValue {
    match sub {
        None => RespValue::Array(Some(TABLE.iter().map(command_info).collect())),
        Some("count") => RespValue::Integer(TABLE.len() as i64),
        Some(_) => RespValue::Array(Some(Vec::new())),
    }
}

fn command_info(entry: &(&str, i64, &str, i64, i64, i64)) -> RespValue {
    let (name, arity, flags, first, last, step) = *entry;
    let flags = flags
        .split(' ')
        .map(|f| RespValue::Simple(f.to_string()))
        .collect();
    RespValue::Array(Some(vec![
        RespValue::Bulk(Some(name.as_bytes().to_vec())),
        RespValue::Integer(arity),
        RespValue::Array(Some(flags)),
        RespValue::Integer(first),
        RespValue::Integer(last),
        RespValue::Integer(step),
    ]))
}

fn err(text: impl Into<String>) -> RespValue {
    RespValue::error(text)
}

/// Redis's error for a value or argument that is not a 64-bit integer.
pub fn not_integer() -> RespValue {
    err("ERR value is not an integer or out of range")
}

/// Parses an integer the way Redis's `string2ll` does: optional '-', digits, no
/// leading zeros, no '+', no spaces.
pub fn parse_integer(bytes: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let value: i64 = text.parse().ok()?;
    (value.to_string() == text).then_some(value)
}

/// Parses one command. `Err` is the error reply to give.
///
/// # Errors
/// Unknown command, wrong arity, bad integer or syntax error, as Redis words them.
pub fn parse(mut args: Vec<Bytes>) -> Result<Parsed, RespValue> {
    if args.is_empty() {
        return Err(err("ERR empty command"));
    }
    let name = String::from_utf8_lossy(&args[0]).to_lowercase();
    let Some(&(_, arity, ..)) = TABLE.iter().find(|entry| entry.0 == name) else {
        let mut text = format!("ERR unknown command '{}', with args beginning with:", name);
        for arg in args.iter().skip(1).take(8) {
            text.push_str(&format!(" '{}'", String::from_utf8_lossy(arg)));
        }
        return Err(err(text));
    };
    let count = args.len() as i64;
    if (arity > 0 && count != arity) || (arity < 0 && count < -arity) {
        return Err(err(format!(
            "ERR wrong number of arguments for '{name}' command"
        )));
    }
    let mut rest: Vec<Bytes> = args.drain(1..).collect();
    let one = |rest: &mut Vec<Bytes>| rest.swap_remove(0);
    let data = |cmd| Ok(Parsed::Data(cmd));
    let control = |c| Ok(Parsed::Control(c));
    match name.as_str() {
        "get" => data(Cmd::Get(one(&mut rest))),
        "strlen" => data(Cmd::Strlen(one(&mut rest))),
        "exists" => data(Cmd::Exists(rest)),
        "mget" => data(Cmd::Mget(rest)),
        "set" => parse_set(rest).map(Parsed::Data),
        "mset" => {
            if !rest.len().is_multiple_of(2) {
                return Err(err("ERR wrong number of arguments for 'mset' command"));
            }
            let mut pairs = Vec::with_capacity(rest.len() / 2);
            let mut iter = rest.into_iter();
            while let (Some(key), Some(value)) = (iter.next(), iter.next()) {
                pairs.push((key, value));
            }
            data(Cmd::Mset(pairs))
        }
        "del" => data(Cmd::Del(rest)),
        "incr" | "decr" => {
            let delta = if name == "incr" { 1 } else { -1 };
            data(Cmd::Incr {
                key: one(&mut rest),
                delta,
            })
        }
        "incrby" | "decrby" => {
            let amount = parse_integer(&rest[1]).ok_or_else(not_integer)?;
            let delta = if name == "incrby" {
                amount
            } else {
                amount
                    .checked_neg()
                    .ok_or_else(|| err("ERR decrement would overflow"))?
            };
            data(Cmd::Incr {
                key: one(&mut rest),
                delta,
            })
        }
        "append" => {
            let value = rest.pop().unwrap_or_default();
            data(Cmd::Append {
                key: one(&mut rest),
                value,
            })
        }
        "getdel" => data(Cmd::Getdel(one(&mut rest))),
        "ping" => match rest.len() {
            0 => data(Cmd::Ping(None)),
            1 => data(Cmd::Ping(Some(one(&mut rest)))),
            _ => Err(err("ERR wrong number of arguments for 'ping' command")),
        },
        "echo" => data(Cmd::Echo(one(&mut rest))),
        "multi" => control(Control::Multi),
        "exec" => control(Control::Exec),
        "discard" => control(Control::Discard),
        "watch" => control(Control::Watch(rest)),
        "unwatch" => control(Control::Unwatch),
        "dbsize" => control(Control::Dbsize),
        "info" => control(Control::Info(
            rest.first()
                .map(|s| String::from_utf8_lossy(s).to_lowercase()),
        )),
        "command" => control(Control::Command(
            rest.first()
                .map(|s| String::from_utf8_lossy(s).to_lowercase()),
        )),
        "client" => parse_client(rest),
        "select" => match parse_integer(&rest[0]) {
            Some(0) => control(Control::Select),
            Some(_) => Err(err("ERR DB index is out of range")),
            None => Err(not_integer()),
        },
        _ => control(Control::Quit),
    }
}

fn parse_set(mut rest: Vec<Bytes>) -> Result<Cmd, RespValue> {
    let options: Vec<Bytes> = rest.drain(2..).collect();
    let value = rest.pop().unwrap_or_default();
    let key = rest.pop().unwrap_or_default();
    let mut cond = SetCond::Always;
    let mut get = false;
    for option in options {
        match option.to_ascii_uppercase().as_slice() {
            b"NX" if cond != SetCond::Present => cond = SetCond::Absent,
            b"XX" if cond != SetCond::Absent => cond = SetCond::Present,
            b"GET" => get = true,
            b"EX" | b"PX" | b"EXAT" | b"PXAT" | b"KEEPTTL" => {
                return Err(err("ERR expiry options are not supported by raftkv"));
            }
            _ => return Err(err("ERR syntax error")),
        }
    }
    Ok(Cmd::Set {
        key,
        value,
        cond,
        get,
    })
}

fn parse_client(mut rest: Vec<Bytes>) -> Result<Parsed, RespValue> {
    let sub = String::from_utf8_lossy(&rest[0]).to_lowercase();
    match (sub.as_str(), rest.len()) {
        ("setname", 2) => {
            let name = rest.swap_remove(1);
            if name.iter().any(|&b| b <= b' ' || b > b'~') {
                return Err(err(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                ));
            }
            Ok(Parsed::Control(Control::ClientSetname(name)))
        }
        ("getname", 1) => Ok(Parsed::Control(Control::ClientGetname)),
        ("setname" | "getname", _) => Err(err(format!(
            "ERR wrong number of arguments for 'client|{sub}' command"
        ))),
        _ => Err(err(format!(
            "ERR unknown subcommand '{sub}'. Try CLIENT HELP."
        ))),
    }
}

impl Cmd {
    /// The keys whose current values the command needs.
    pub fn read_keys(&self) -> Vec<Bytes> {
        match self {
            Cmd::Get(key) | Cmd::Strlen(key) | Cmd::Getdel(key) => vec![key.clone()],
            Cmd::Incr { key, .. } | Cmd::Append { key, .. } => vec![key.clone()],
            Cmd::Exists(keys) | Cmd::Mget(keys) | Cmd::Del(keys) => keys.clone(),
            Cmd::Set { key, cond, get, .. } => {
                if *cond == SetCond::Always && !*get {
                    Vec::new()
                } else {
                    vec![key.clone()]
                }
            }
            Cmd::Mset(_) | Cmd::Ping(_) | Cmd::Echo(_) => Vec::new(),
        }
    }

    /// Whether the command never writes.
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            Cmd::Get(_) | Cmd::Strlen(_) | Cmd::Exists(_) | Cmd::Mget(_)
        )
    }
}

/// Key values as a command sees them: the values read, then the command's own writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overlay {
    /// Current value per known key (`None`: absent).
    pub values: HashMap<Bytes, Option<Bytes>>,
    /// Keys written, in order of first write.
    pub written: Vec<Bytes>,
}

impl Overlay {
    /// An overlay over the values read.
    pub fn new(values: HashMap<Bytes, Option<Bytes>>) -> Overlay {
        Overlay {
            values,
            written: Vec::new(),
        }
    }

    fn get(&self, key: &[u8]) -> Option<&Bytes> {
        self.values.get(key).and_then(Option::as_ref)
    }

    fn set(&mut self, key: &[u8], value: Option<Bytes>) {
        if !self.written.iter().any(|k| k == key) {
            self.written.push(key.to_vec());
        }
        self.values.insert(key.to_vec(), value);
    }

    /// The final value of every written key, in order of first write.
    pub fn writes(&self) -> Vec<(Bytes, Option<Bytes>)> {
        self.written
            .iter()
            .map(|key| (key.clone(), self.get(key).cloned()))
            .collect()
    }
}

fn bulk(value: Option<&Bytes>) -> RespValue {
    RespValue::Bulk(value.cloned())
}

/// Runs `cmd` over `db`, returning its reply. Runtime errors (INCR of a non-integer)
/// are replies and write nothing, as in Redis.
pub fn eval(cmd: &Cmd, db: &mut Overlay) -> RespValue {
    match cmd {
        Cmd::Get(key) => bulk(db.get(key)),
        Cmd::Strlen(key) => RespValue::Integer(db.get(key).map_or(0, Vec::len) as i64),
        Cmd::Exists(keys) => {
            RespValue::Integer(keys.iter().filter(|k| db.get(k).is_some()).count() as i64)
        }
        Cmd::Mget(keys) => RespValue::Array(Some(keys.iter().map(|k| bulk(db.get(k))).collect())),
        Cmd::Set {
            key,
            value,
            cond,
            get,
        } => {
            let old = db.get(key).cloned();
            let allowed = match cond {
                SetCond::Always => true,
                SetCond::Absent => old.is_none(),
                SetCond::Present => old.is_some(),
            };
            if allowed {
                db.set(key, Some(value.clone()));
            }
            match (get, allowed) {
                (true, _) => RespValue::Bulk(old),
                (false, true) => RespValue::ok(),
                (false, false) => RespValue::Bulk(None),
            }
        }
        Cmd::Mset(pairs) => {
            for (key, value) in pairs {
                db.set(key, Some(value.clone()));
            }
            RespValue::ok()
        }
        Cmd::Del(keys) => {
            let mut removed = 0;
            for key in keys {
                if db.get(key).is_some() {
                    db.set(key, None);
                    removed += 1;
                }
            }
            RespValue::Integer(removed)
        }
        Cmd::Incr { key, delta } => {
            let current = match db.get(key) {
                None => 0,
                Some(value) => match parse_integer(value) {
                    Some(n) => n,
                    None => return not_integer(),
                },
            };
            let Some(new) = current.checked_add(*delta) else {
                return err("ERR increment or decrement would overflow");
            };
            db.set(key, Some(new.to_string().into_bytes()));
            RespValue::Integer(new)
        }
        Cmd::Append { key, value } => {
            let mut new = db.get(key).cloned().unwrap_or_default();
            new.extend_from_slice(value);
            let len = new.len() as i64;
            db.set(key, Some(new));
            RespValue::Integer(len)
        }
        Cmd::Getdel(key) => {
            let old = db.get(key).cloned();
            if old.is_some() {
                db.set(key, None);
            }
            RespValue::Bulk(old)
        }
        Cmd::Ping(None) => RespValue::Simple("PONG".into()),
        Cmd::Ping(Some(message)) | Cmd::Echo(message) => RespValue::Bulk(Some(message.clone())),
    }
}

#[cfg(test)]
mod tests {
    //! Goal: Redis's error texts and command semantics, checked table-driven.
    use super::*;

    fn args(line: &str) -> Vec<Bytes> {
        line.split(' ').map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn parse_errors_use_redis_texts() {
        let cases = [
            ("GET", "ERR wrong number of arguments for 'get' command"),
            ("get a b", "ERR wrong number of arguments for 'get' command"),
            (
                "FLUSHALL x",
                "ERR unknown command 'flushall', with args beginning with: 'x'",
            ),
            (
                "incrby k 1.5",
                "ERR value is not an integer or out of range",
            ),
            ("incrby k 01", "ERR value is not an integer or out of range"),
            (
                "decrby k -9223372036854775808",
                "ERR decrement would overflow",
            ),
            ("set k v NX XX", "ERR syntax error"),
            ("set k v FOO", "ERR syntax error"),
            ("select 1", "ERR DB index is out of range"),
            ("select x", "ERR value is not an integer or out of range"),
            (
                "mset a 1 b",
                "ERR wrong number of arguments for 'mset' command",
            ),
            (
                "client kill",
                "ERR unknown subcommand 'kill'. Try CLIENT HELP.",
            ),
        ];
        for (i, (line, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                parse(args(line)),
                Err(RespValue::error(want)),
                "#{i}: {line}"
            );
        }
        assert_eq!(
            parse(args("SeT k v nx get")),
            Ok(Parsed::Data(Cmd::Set {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                cond: SetCond::Absent,
                get: true
            }))
        );
    }

    #[test]
    fn eval_follows_redis_semantics() {
        let mut db = Overlay::new(HashMap::from([
            (b"n".to_vec(), Some(b"10".to_vec())),
            (b"s".to_vec(), Some(b"abc".to_vec())),
            (b"x".to_vec(), None),
        ]));
        let cases: Vec<(&str, RespValue)> = vec![
            ("incr n", RespValue::Integer(11)),
            ("decrby n 20", RespValue::Integer(-9)),
            ("incr s", not_integer()),
            ("append s de", RespValue::Integer(5)),
            ("strlen s", RespValue::Integer(5)),
            ("set x 1 XX", RespValue::Bulk(None)),
            ("set x 1 NX GET", RespValue::Bulk(None)),
            ("set x 2 NX", RespValue::Bulk(None)),
            ("set x 3 GET", RespValue::Bulk(Some(b"1".to_vec()))),
            ("exists x n x q", RespValue::Integer(3)),
            ("getdel x", RespValue::Bulk(Some(b"3".to_vec()))),
            ("del x n", RespValue::Integer(1)),
            ("get n", RespValue::Bulk(None)),
        ];
        for (i, (line, want)) in cases.into_iter().enumerate() {
            let Ok(Parsed::Data(cmd)) = parse(args(line)) else {
                panic!("#{i}: {line} does not parse");
            };
            assert_eq!(eval(&cmd, &mut db), want, "#{i}: {line}");
        }
        assert_eq!(
            db.writes(),
            vec![
                (b"n".to_vec(), None),
                (b"s".to_vec(), Some(b"abcde".to_vec())),
                (b"x".to_vec(), None),
            ]
        );
        let mut db = Overlay::new(HashMap::from([(
            b"m".to_vec(),
            Some(i64::MAX.to_string().into_bytes()),
        )]));
        let Ok(Parsed::Data(cmd)) = parse(args("incr m")) else {
            panic!("incr parses");
        };
        assert_eq!(
            eval(&cmd, &mut db),
            RespValue::error("ERR increment or decrement would overflow")
        );
        assert!(db.writes().is_empty());
    }
}
