//! RedisCommandCodec, the second layer of the Redis chain: argument lists become typed
//! commands (with Redis's arity, syntax and integer error texts); a data command becomes
//! kv ops ([`Cmd::ops`], one kv `RmwOp` for a read-modify-write, decided when its entry is
//! applied), and the ops' results become its reply ([`Cmd::reply`]). A MULTI/EXEC block
//! is the ops of all its commands in one `Txn`.
//!
//! Invariant: parsing and the mappings are pure: no IO, no clock, no panics on any input.

use super::expiry::{self, TtlQuery};
use super::notify::NotifyFlags;
use super::pubsub::PubsubQuery;
use super::{cursor, glob};
use crate::codec::resp::{Protocol, RespValue};
use crate::kv::{Deadline, ExpireCondition, Op, OpResult, RmwOp, SetCondition, SetExpiry};

/// A key or value: raw bytes.
pub type Bytes = Vec<u8>;

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
    /// `SET key value [NX|XX] [GET] [EX|PX|EXAT|PXAT time|KEEPTTL]`; `GETSET key
    /// value` is `SET key value GET`, SETEX / PSETEX are SET EX / PX ([`expiry`]).
    Set {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// NX / XX.
        cond: SetCondition,
        /// GET: reply with the old value.
        get: bool,
        /// The key's expiry time after the write (plain SET: none).
        expiry: SetExpiry,
    },
    /// EXPIRE / PEXPIRE / EXPIREAT / PEXPIREAT key time [NX|XX|GT|LT].
    Expire {
        /// The key.
        key: Bytes,
        /// The new expiry time.
        at: Deadline,
        /// When to change it.
        condition: ExpireCondition,
    },
    /// PERSIST key.
    Persist(Bytes),
    /// `GETEX key [EX|PX|EXAT|PXAT time|PERSIST]`.
    GetEx {
        /// The key.
        key: Bytes,
        /// Its expiry time after the read.
        expiry: SetExpiry,
    },
    /// SETNX key value (replies 1 or 0).
    Setnx {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// MSET key value ...
    Mset(Vec<(Bytes, Bytes)>),
    /// MSETNX key value ...
    Msetnx(Vec<(Bytes, Bytes)>),
    /// DEL key...
    Del(Vec<Bytes>),
    /// INCR / INCRBY / DECR / DECRBY, as a signed delta.
    Incr {
        /// The key.
        key: Bytes,
        /// The amount added.
        delta: i64,
    },
    /// INCRBYFLOAT key increment (the increment is read when the entry is applied, as
    /// Redis reads it when the command runs).
    IncrByFloat {
        /// The key.
        key: Bytes,
        /// The increment's text.
        increment: Bytes,
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
    /// TYPE key (`string` or `none`: every value is a string).
    Type(Bytes),
    /// RENAME / RENAMENX.
    Rename {
        /// The key moved.
        from: Bytes,
        /// The new name.
        to: Bytes,
        /// RENAMENX.
        only_if_absent: bool,
    },
    /// `COPY source destination [DB 0] [REPLACE]`.
    Copy {
        /// The source.
        from: Bytes,
        /// The destination.
        to: Bytes,
        /// REPLACE.
        replace: bool,
    },
    /// FLUSHDB / FLUSHALL [ASYNC|SYNC]: one log entry, applied in log order.
    Flush,
    /// `PING [message]`.
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
    /// TTL / PTTL / EXPIRETIME / PEXPIRETIME key (a read of the key's expiry time).
    Ttl(Bytes, TtlQuery),
    /// KEYS pattern.
    Keys(Bytes),
    /// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]`.
    Scan(Scan),
    /// RANDOMKEY.
    Randomkey,
    /// `INFO [section]`.
    Info(Option<String>),
    /// `COMMAND [subcommand [name ...]]`.
    Command(Option<String>, Vec<String>),
    /// CLIENT SETNAME name.
    ClientSetname(Bytes),
    /// CLIENT GETNAME.
    ClientGetname,
    /// CLIENT ID.
    ClientId,
    /// CLIENT INFO.
    ClientInfo,
    /// CLIENT LIST (of this node's Redis connections).
    ClientList,
    /// CLIENT KILL, old form (`addr`: `+OK` or an error) or filters (the count).
    ClientKill(KillFilter),
    /// `CLIENT SETINFO LIB-NAME|LIB-VER value`: (is the name, value).
    ClientSetinfo(bool, Bytes),
    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`.
    Hello {
        /// The protocol asked for (`None`: keep the current one).
        protocol: Option<Protocol>,
        /// AUTH's user and password.
        auth: Option<(Bytes, Bytes)>,
        /// SETNAME's name.
        name: Option<Bytes>,
    },
    /// `AUTH [user] password`.
    Auth(Option<Bytes>, Bytes),
    /// `CONFIG GET pattern...`.
    ConfigGet(Vec<Bytes>),
    /// TIME.
    Time,
    /// `WAIT numreplicas timeout` (both checked; answered at once, see `RedisConn`).
    Wait,
    /// SELECT 0 (other databases are refused at parse time).
    Select,
    /// QUIT.
    Quit,
    /// `SUBSCRIBE channel...`.
    Subscribe(Vec<Bytes>),
    /// `UNSUBSCRIBE [channel...]`.
    Unsubscribe(Vec<Bytes>),
    /// `PSUBSCRIBE pattern...`.
    Psubscribe(Vec<Bytes>),
    /// `PUNSUBSCRIBE [pattern...]`.
    Punsubscribe(Vec<Bytes>),
    /// `PUBLISH channel message`.
    Publish(Bytes, Bytes),
    /// `PUBSUB CHANNELS|NUMSUB|NUMPAT ...`.
    Pubsub(PubsubQuery),
    /// `CONFIG SET notify-keyspace-events flags` (the one setting a node changes live).
    ConfigSet(NotifyFlags),
    /// RESET.
    Reset,
}

/// A parsed SCAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Where to resume (`None`: the start).
    pub resume: Option<cursor::Resume>,
    /// MATCH.
    pub pattern: Option<Bytes>,
    /// COUNT (default 10): the keys visited by this call.
    pub count: u64,
    /// TYPE is given and is not `string`: no key matches.
    pub no_type_match: bool,
}

/// Which connections CLIENT KILL closes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KillFilter {
    /// The old form (`CLIENT KILL addr`): reply `+OK`, or an error when none matched.
    pub old_form: bool,
    /// ID filter.
    pub id: Option<u64>,
    /// ADDR filter (`ip:port` of the client).
    pub addr: Option<String>,
    /// LADDR filter (`ip:port` of the server's side).
    pub laddr: Option<String>,
    /// SKIPME yes (the default of the new form): never the calling connection.
    pub skip_me: bool,
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
    ("setnx", 3, "write denyoom fast", 1, 1, 1),
    ("getset", 3, "write denyoom fast", 1, 1, 1),
    ("mset", -3, "write denyoom", 1, -1, 2),
    ("msetnx", -3, "write denyoom", 1, -1, 2),
    ("del", -2, "write", 1, -1, 1),
    ("incr", 2, "write denyoom fast", 1, 1, 1),
    ("incrby", 3, "write denyoom fast", 1, 1, 1),
    ("decr", 2, "write denyoom fast", 1, 1, 1),
    ("decrby", 3, "write denyoom fast", 1, 1, 1),
    ("incrbyfloat", 3, "write denyoom fast", 1, 1, 1),
    ("append", 3, "write denyoom fast", 1, 1, 1),
    ("getdel", 2, "write fast", 1, 1, 1),
    ("type", 2, "readonly fast", 1, 1, 1),
    ("expire", -3, "write fast", 1, 1, 1),
    ("pexpire", -3, "write fast", 1, 1, 1),
    ("expireat", -3, "write fast", 1, 1, 1),
    ("pexpireat", -3, "write fast", 1, 1, 1),
    ("persist", 2, "write fast", 1, 1, 1),
    ("ttl", 2, "readonly fast", 1, 1, 1),
    ("pttl", 2, "readonly fast", 1, 1, 1),
    ("expiretime", 2, "readonly fast", 1, 1, 1),
    ("pexpiretime", 2, "readonly fast", 1, 1, 1),
    ("getex", -2, "write fast", 1, 1, 1),
    ("setex", 4, "write denyoom", 1, 1, 1),
    ("psetex", 4, "write denyoom", 1, 1, 1),
    ("unlink", -2, "write fast", 1, -1, 1),
    ("rename", 3, "write", 1, 2, 1),
    ("renamenx", 3, "write fast", 1, 2, 1),
    ("copy", -3, "write denyoom", 1, 2, 1),
    ("flushdb", -1, "write", 0, 0, 0),
    ("flushall", -1, "write", 0, 0, 0),
    ("keys", 2, "readonly", 0, 0, 0),
    ("scan", -2, "readonly", 0, 0, 0),
    ("randomkey", 1, "readonly", 0, 0, 0),
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
    ("hello", -1, "noscript loading stale fast no_auth", 0, 0, 0),
    ("auth", -2, "noscript loading stale fast no_auth", 0, 0, 0),
    ("config", -2, "admin noscript loading stale", 0, 0, 0),
    ("time", 1, "loading stale fast", 0, 0, 0),
    ("wait", 3, "noscript", 0, 0, 0),
    ("subscribe", -2, "pubsub noscript loading stale", 0, 0, 0),
    ("unsubscribe", -1, "pubsub noscript loading stale", 0, 0, 0),
    ("psubscribe", -2, "pubsub noscript loading stale", 0, 0, 0),
    ("punsubscribe", -1, "pubsub noscript loading stale", 0, 0, 0),
    ("publish", 3, "pubsub loading stale fast", 0, 0, 0),
    ("pubsub", -2, "pubsub loading stale", 0, 0, 0),
    ("reset", 1, "noscript loading stale fast no_auth", 0, 0, 0),
];

/// The flags of the command `args` names, when it is known and has a valid number of
/// arguments (what Redis checks before authentication and permissions).
pub fn flags_of(args: &[Bytes]) -> Option<&'static str> {
    let name = String::from_utf8_lossy(args.first()?).to_lowercase();
    let &(_, arity, flags, ..) = TABLE.iter().find(|entry| entry.0 == name)?;
    let count = args.len() as i64;
    let valid = (arity > 0 && count == arity) || (arity < 0 && count >= -arity);
    valid.then_some(flags)
}

/// Whether `name` (lower case) is a command raftkv knows.
pub fn is_known(name: &str) -> bool {
    TABLE.iter().any(|entry| entry.0 == name)
}

/// What `CONFIG GET` reports: the settings clients and exporters read, with the values
/// that describe raftkv (every write is durable in the Raft log before its reply, one
/// database, no eviction, no RDB saves).
const CONFIG: &[(&str, &str)] = &[
    ("appendfsync", "always"),
    ("appendonly", "yes"),
    ("databases", "1"),
    ("maxmemory", "0"),
    ("maxmemory-policy", "noeviction"),
    ("notify-keyspace-events", ""),
    ("save", ""),
    ("timeout", "0"),
];

/// The one setting `CONFIG SET` changes (per node, not replicated).
pub const NOTIFY_KEYSPACE_EVENTS: &str = "notify-keyspace-events";

/// The reply to `CONFIG GET patterns...`: every setting a pattern matches (a map in
/// RESP3, a flat array in RESP2, as Redis 7), with the node's `notify` flags.
pub fn config_get(patterns: &[Bytes], notify: NotifyFlags) -> RespValue {
    let notify = notify.to_string();
    RespValue::Map(
        CONFIG
            .iter()
            .filter(|(name, _)| {
                let name = name.as_bytes();
                patterns
                    .iter()
                    .any(|p| glob::matches(&p.to_ascii_lowercase(), name))
            })
            .map(|&(name, value)| {
                let value = if name == NOTIFY_KEYSPACE_EVENTS {
                    notify.as_str()
                } else {
                    value
                };
                (RespValue::bulk(name), RespValue::bulk(value))
            })
            .collect(),
    )
}

/// The reply to `COMMAND` (every command's info), `COMMAND COUNT`, `COMMAND LIST`,
/// `COMMAND INFO [name...]` (nil for an unknown name) and `COMMAND DOCS [name...]` (a
/// map of name to its summary and group, unknown names left out, as Redis 7).
pub fn command_reply(sub: Option<&str>, names: &[String]) -> RespValue {
    let find = |name: &String| TABLE.iter().find(|entry| entry.0 == name.to_lowercase());
    let chosen: Vec<_> = if names.is_empty() {
        TABLE.iter().collect()
    } else {
        names.iter().filter_map(find).collect()
    };
    match sub {
        None => RespValue::Array(Some(TABLE.iter().map(command_info).collect())),
        Some("count") => RespValue::Integer(TABLE.len() as i64),
        Some("list") => RespValue::Array(Some(
            TABLE.iter().map(|entry| RespValue::bulk(entry.0)).collect(),
        )),
        Some("info") if names.is_empty() => {
            RespValue::Array(Some(TABLE.iter().map(command_info).collect()))
        }
        Some("info") => RespValue::Array(Some(
            names
                .iter()
                .map(|name| find(name).map_or(RespValue::Bulk(None), command_info))
                .collect(),
        )),
        Some("docs") => RespValue::Map(
            chosen
                .into_iter()
                .map(|entry| {
                    let group = if entry.2.contains("write") || entry.2.contains("readonly") {
                        "string"
                    } else {
                        "connection"
                    };
                    let docs = RespValue::Map(vec![
                        (RespValue::bulk("summary"), RespValue::bulk(entry.0)),
                        (RespValue::bulk("since"), RespValue::bulk("1.0.0")),
                        (RespValue::bulk("group"), RespValue::bulk(group)),
                    ]);
                    (RespValue::bulk(entry.0), docs)
                })
                .collect(),
        ),
        Some(other) => err(format!(
            "ERR unknown subcommand '{other}'. Try COMMAND HELP."
        )),
    }
}

/// One command's `COMMAND INFO` entry, the ten fields of Redis 7 (ACL categories, tips,
/// key specifications and subcommands empty).
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
        RespValue::Array(Some(Vec::new())),
        RespValue::Array(Some(Vec::new())),
        RespValue::Array(Some(Vec::new())),
        RespValue::Array(Some(Vec::new())),
    ]))
}

fn err(text: impl Into<String>) -> RespValue {
    RespValue::error(text)
}

/// Redis's error for a value or argument that is not a 64-bit integer.
pub fn not_integer() -> RespValue {
    err("ERR value is not an integer or out of range")
}

pub use crate::kv::number::parse_integer;

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
        "set" => expiry::parse_set(rest).map(Parsed::Data),
        "setnx" | "getset" => {
            let value = rest.pop().unwrap_or_default();
            let key = one(&mut rest);
            data(match name.as_str() {
                "setnx" => Cmd::Setnx { key, value },
                _ => Cmd::Set {
                    key,
                    value,
                    cond: SetCondition::Always,
                    get: true,
                    expiry: SetExpiry::Clear,
                },
            })
        }
        "mset" => data(Cmd::Mset(pairs(&name, rest)?)),
        "msetnx" => data(Cmd::Msetnx(pairs(&name, rest)?)),
        "incrbyfloat" => {
            let increment = rest.pop().unwrap_or_default();
            data(Cmd::IncrByFloat {
                key: one(&mut rest),
                increment,
            })
        }
        "del" | "unlink" => data(Cmd::Del(rest)),
        "type" => data(Cmd::Type(one(&mut rest))),
        "rename" | "renamenx" => {
            let to = rest.pop().unwrap_or_default();
            data(Cmd::Rename {
                from: one(&mut rest),
                to,
                only_if_absent: name == "renamenx",
            })
        }
        "copy" => parse_copy(rest).map(Parsed::Data),
        "flushdb" | "flushall" => match rest.as_slice() {
            [] => data(Cmd::Flush),
            [mode] if matches!(mode.to_ascii_lowercase().as_slice(), b"async" | b"sync") => {
                data(Cmd::Flush)
            }
            _ => Err(err("ERR syntax error")),
        },
        "keys" => control(Control::Keys(one(&mut rest))),
        "scan" => parse_scan(rest).map(|scan| Parsed::Control(Control::Scan(scan))),
        "randomkey" => control(Control::Randomkey),
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
        "command" => {
            let mut words = rest.iter().map(|s| String::from_utf8_lossy(s).into_owned());
            let given = words.next();
            let sub = given.as_ref().map(|s| s.to_lowercase());
            if let (Some(given), Some(sub)) = (&given, &sub)
                && !matches!(sub.as_str(), "count" | "list" | "info" | "docs")
            {
                return Err(err(format!(
                    "ERR unknown subcommand '{given}'. Try COMMAND HELP."
                )));
            }
            control(Control::Command(sub, words.collect()))
        }
        "client" => parse_client(rest),
        "hello" => parse_hello(rest),
        "auth" => match rest.len() {
            1 => control(Control::Auth(None, one(&mut rest))),
            2 => {
                let pass = rest.pop().unwrap_or_default();
                control(Control::Auth(Some(one(&mut rest)), pass))
            }
            _ => Err(err("ERR syntax error")),
        },
        "config" => {
            let sub = String::from_utf8_lossy(&rest[0]).to_lowercase();
            match sub.as_str() {
                "get" if rest.len() >= 2 => control(Control::ConfigGet(rest.split_off(1))),
                "get" => Err(err(
                    "ERR wrong number of arguments for 'config|get' command",
                )),
                "set" => parse_config_set(&rest[1..]),
                "resetstat" | "rewrite" => Err(err(format!(
                    "ERR CONFIG {} is not supported by raftkv: settings come from the \
                     server's configuration file",
                    sub.to_uppercase()
                ))),
                _ => Err(err(format!(
                    "ERR unknown subcommand '{}'. Try CONFIG HELP.",
                    String::from_utf8_lossy(&rest[0])
                ))),
            }
        }
        "time" => control(Control::Time),
        "wait" => {
            parse_integer(&rest[0]).ok_or_else(not_integer)?;
            match parse_integer(&rest[1]) {
                Some(timeout) if timeout < 0 => Err(err("ERR timeout is negative")),
                Some(_) => control(Control::Wait),
                None => Err(err("ERR timeout is not an integer or out of range")),
            }
        }
        "select" => match parse_integer(&rest[0]) {
            Some(0) => control(Control::Select),
            Some(_) => Err(err("ERR DB index is out of range")),
            None => Err(not_integer()),
        },
        "subscribe" => control(Control::Subscribe(rest)),
        "unsubscribe" => control(Control::Unsubscribe(rest)),
        "psubscribe" => control(Control::Psubscribe(rest)),
        "punsubscribe" => control(Control::Punsubscribe(rest)),
        "publish" => {
            let message = rest.pop().unwrap_or_default();
            control(Control::Publish(one(&mut rest), message))
        }
        "pubsub" => parse_pubsub(rest),
        "reset" => control(Control::Reset),
        "quit" => control(Control::Quit),
        _ => expiry::parse(&name, rest).unwrap_or_else(|| Err(err("ERR unknown command"))),
    }
}

fn parse_pubsub(mut rest: Vec<Bytes>) -> Result<Parsed, RespValue> {
    let given = String::from_utf8_lossy(&rest[0]).into_owned();
    let sub = given.to_lowercase();
    let query = match (sub.as_str(), rest.len()) {
        ("channels", 1) => PubsubQuery::Channels(None),
        ("channels", 2) => PubsubQuery::Channels(rest.pop()),
        ("numsub", _) => PubsubQuery::Numsub(rest.split_off(1)),
        ("numpat", 1) => PubsubQuery::Numpat,
        ("channels" | "numpat", _) => {
            return Err(err(format!(
                "ERR wrong number of arguments for 'pubsub|{sub}' command"
            )));
        }
        _ => {
            return Err(err(format!(
                "ERR unknown subcommand '{given}'. Try PUBSUB HELP."
            )));
        }
    };
    Ok(Parsed::Control(Control::Pubsub(query)))
}

/// `CONFIG SET name value ...`: only `notify-keyspace-events` (the rest of the
/// configuration comes from the server's file).
fn parse_config_set(pairs: &[Bytes]) -> Result<Parsed, RespValue> {
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        return Err(err(
            "ERR wrong number of arguments for 'config|set' command",
        ));
    }
    let mut flags = None;
    for pair in pairs.chunks(2) {
        let name = String::from_utf8_lossy(&pair[0]).to_lowercase();
        if name != NOTIFY_KEYSPACE_EVENTS {
            return Err(err(format!(
                "ERR CONFIG SET of '{name}' is not supported by raftkv: settings come from \
                 the server's configuration file (only {NOTIFY_KEYSPACE_EVENTS} is set live)"
            )));
        }
        flags = Some(NotifyFlags::parse(&pair[1]).ok_or_else(|| {
            err(format!(
                "ERR CONFIG SET failed (possibly related to argument \
                 '{NOTIFY_KEYSPACE_EVENTS}') - Invalid event class character. Use \
                 'Ag$lshzxeKEtmdn'."
            ))
        })?);
    }
    Ok(Parsed::Control(Control::ConfigSet(
        flags.unwrap_or_default(),
    )))
}

fn pairs(name: &str, rest: Vec<Bytes>) -> Result<Vec<(Bytes, Bytes)>, RespValue> {
    if !rest.len().is_multiple_of(2) {
        return Err(err(format!(
            "ERR wrong number of arguments for '{name}' command"
        )));
    }
    let mut pairs = Vec::with_capacity(rest.len() / 2);
    let mut iter = rest.into_iter();
    while let (Some(key), Some(value)) = (iter.next(), iter.next()) {
        pairs.push((key, value));
    }
    Ok(pairs)
}

fn parse_copy(rest: Vec<Bytes>) -> Result<Cmd, RespValue> {
    let mut words = rest.into_iter();
    let (from, to) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    let mut replace = false;
    while let Some(option) = words.next() {
        match option.to_ascii_uppercase().as_slice() {
            b"REPLACE" => replace = true,
            b"DB" => match words.next().as_deref().map(parse_integer) {
                Some(Some(0)) => {}
                Some(Some(_)) => return Err(err("ERR DB index is out of range")),
                Some(None) => return Err(not_integer()),
                None => return Err(err("ERR syntax error")),
            },
            _ => return Err(err("ERR syntax error")),
        }
    }
    if from == to {
        return Err(err("ERR source and destination objects are the same"));
    }
    Ok(Cmd::Copy { from, to, replace })
}

fn parse_scan(rest: Vec<Bytes>) -> Result<Scan, RespValue> {
    let mut words = rest.into_iter();
    let cursor = words.next().unwrap_or_default();
    let resume = cursor::decode(&cursor).map_err(|()| err("ERR invalid cursor"))?;
    let mut scan = Scan {
        resume,
        pattern: None,
        count: 10,
        no_type_match: false,
    };
    while let Some(option) = words.next() {
        let Some(value) = words.next() else {
            return Err(err("ERR syntax error"));
        };
        match option.to_ascii_uppercase().as_slice() {
            b"MATCH" => scan.pattern = Some(value),
            b"COUNT" => match parse_integer(&value) {
                Some(count) if count >= 1 => scan.count = count as u64,
                Some(_) => return Err(err("ERR syntax error")),
                None => return Err(not_integer()),
            },
            b"TYPE" => scan.no_type_match = !value.eq_ignore_ascii_case(b"string"),
            _ => return Err(err("ERR syntax error")),
        }
    }
    Ok(scan)
}

/// Client names may not hold spaces or control bytes (Redis's rule).
fn check_name(name: &[u8]) -> Result<(), RespValue> {
    if name.iter().any(|&b| b <= b' ' || b > b'~') {
        return Err(err(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    Ok(())
}

fn parse_client(mut rest: Vec<Bytes>) -> Result<Parsed, RespValue> {
    let sub = String::from_utf8_lossy(&rest[0]).to_lowercase();
    let control = |c| Ok(Parsed::Control(c));
    match (sub.as_str(), rest.len()) {
        ("setname", 2) => {
            let name = rest.swap_remove(1);
            check_name(&name)?;
            control(Control::ClientSetname(name))
        }
        ("getname", 1) => control(Control::ClientGetname),
        ("id", 1) => control(Control::ClientId),
        ("info", 1) => control(Control::ClientInfo),
        ("list", _) => control(Control::ClientList),
        ("setinfo", 3) => {
            let value = rest.swap_remove(2);
            let attr = String::from_utf8_lossy(&rest[1]).to_lowercase();
            let is_name = match attr.as_str() {
                "lib-name" => true,
                "lib-ver" => false,
                _ => {
                    let attr = String::from_utf8_lossy(&rest[1]).into_owned();
                    return Err(err(format!("ERR Unrecognized option '{attr}'")));
                }
            };
            if value.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
                return Err(err(format!(
                    "ERR {attr} cannot contain spaces, newlines or special characters."
                )));
            }
            control(Control::ClientSetinfo(is_name, value))
        }
        ("kill", 2) => control(Control::ClientKill(KillFilter {
            old_form: true,
            addr: Some(String::from_utf8_lossy(&rest[1]).into_owned()),
            ..KillFilter::default()
        })),
        ("kill", n) if n > 2 && n % 2 == 1 => parse_kill_filters(&rest[1..]).map(Parsed::Control),
        ("kill", 1) => Err(err(
            "ERR wrong number of arguments for 'client|kill' command",
        )),
        ("kill", _) => Err(err("ERR syntax error")),
        ("setname" | "getname" | "id" | "info" | "setinfo", _) => Err(err(format!(
            "ERR wrong number of arguments for 'client|{sub}' command"
        ))),
        _ => Err(err(format!(
            "ERR unknown subcommand '{}'. Try CLIENT HELP.",
            String::from_utf8_lossy(&rest[0])
        ))),
    }
}

fn parse_kill_filters(words: &[Bytes]) -> Result<Control, RespValue> {
    let mut filter = KillFilter {
        skip_me: true,
        ..KillFilter::default()
    };
    for pair in words.chunks(2) {
        let value = String::from_utf8_lossy(&pair[1]).into_owned();
        match pair[0].to_ascii_lowercase().as_slice() {
            b"id" => match value.parse::<u64>() {
                Ok(id) if id > 0 => filter.id = Some(id),
                _ => return Err(err("ERR client-id should be greater than 0")),
            },
            b"addr" => filter.addr = Some(value),
            b"laddr" => filter.laddr = Some(value),
            b"skipme" => match value.to_ascii_lowercase().as_str() {
                "yes" => filter.skip_me = true,
                "no" => filter.skip_me = false,
                _ => return Err(err("ERR syntax error")),
            },
            _ => return Err(err("ERR syntax error")),
        }
    }
    Ok(Control::ClientKill(filter))
}

fn parse_hello(rest: Vec<Bytes>) -> Result<Parsed, RespValue> {
    let mut words = rest.into_iter();
    let Some(version) = words.next() else {
        return Ok(Parsed::Control(Control::Hello {
            protocol: None,
            auth: None,
            name: None,
        }));
    };
    let protocol = match parse_integer(&version) {
        Some(2) => Protocol::Resp2,
        Some(3) => Protocol::Resp3,
        Some(_) => return Err(err("NOPROTO unsupported protocol version")),
        None => {
            return Err(err(
                "ERR Protocol version is not an integer or out of range",
            ));
        }
    };
    let (mut auth, mut name) = (None, None);
    while let Some(option) = words.next() {
        let text = String::from_utf8_lossy(&option).into_owned();
        match text.to_ascii_lowercase().as_str() {
            "auth" => match (words.next(), words.next()) {
                (Some(user), Some(pass)) => auth = Some((user, pass)),
                _ => return Err(err(format!("ERR Syntax error in HELLO option '{text}'"))),
            },
            "setname" => match words.next() {
                Some(value) => {
                    check_name(&value)?;
                    name = Some(value);
                }
                None => return Err(err(format!("ERR Syntax error in HELLO option '{text}'"))),
            },
            _ => return Err(err(format!("ERR Syntax error in HELLO option '{text}'"))),
        }
    }
    Ok(Parsed::Control(Control::Hello {
        protocol: Some(protocol),
        auth,
        name,
    }))
}

/// The answer to AUTH (or HELLO's AUTH) when no password is configured, as
/// redis-server gives it: the `default` user has `nopass`, so it takes any password;
/// any other user does not exist; AUTH with a password alone is a configuration
/// mistake. `None`: authenticated.
pub fn auth_refusal(user: Option<&[u8]>) -> Option<RespValue> {
    match user {
        None => Some(err(
            "ERR AUTH <password> called without any password configured for the default \
             user. Are you sure your configuration is correct?",
        )),
        Some(b"default") => None,
        Some(_) => Some(err(
            "WRONGPASS invalid username-password pair or user is disabled.",
        )),
    }
}

impl Cmd {
    /// The keys a read-only command reads (empty for the others).
    pub fn read_keys(&self) -> Vec<Bytes> {
        match self {
            Cmd::Get(key) | Cmd::Strlen(key) | Cmd::Type(key) => vec![key.clone()],
            Cmd::Exists(keys) | Cmd::Mget(keys) => keys.clone(),
            _ => Vec::new(),
        }
    }

    /// Whether the command never writes.
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            Cmd::Get(_) | Cmd::Strlen(_) | Cmd::Exists(_) | Cmd::Mget(_) | Cmd::Type(_)
        )
    }

    /// The one kv read-modify-write the command is, if it is one.
    pub fn rmw_op(&self) -> Option<RmwOp> {
        Some(match self {
            Cmd::Set {
                key,
                value,
                cond,
                get,
                expiry,
            } => RmwOp::Set {
                key: key.clone(),
                value: value.clone(),
                condition: *cond,
                get: *get,
                expiry: *expiry,
            },
            Cmd::Expire { key, at, condition } => RmwOp::Expire {
                key: key.clone(),
                at: *at,
                condition: *condition,
            },
            Cmd::Persist(key) => RmwOp::Persist { key: key.clone() },
            Cmd::GetEx { key, expiry } => RmwOp::GetEx {
                key: key.clone(),
                expiry: *expiry,
            },
            Cmd::Setnx { key, value } => RmwOp::Set {
                key: key.clone(),
                value: value.clone(),
                condition: SetCondition::Absent,
                get: false,
                expiry: SetExpiry::Clear,
            },
            Cmd::Msetnx(pairs) => RmwOp::SetIfAllAbsent {
                pairs: pairs.clone(),
            },
            Cmd::Del(keys) => RmwOp::DeleteMany { keys: keys.clone() },
            Cmd::Incr { key, delta } => RmwOp::IncrBy {
                key: key.clone(),
                delta: *delta,
            },
            Cmd::IncrByFloat { key, increment } => RmwOp::IncrByFloat {
                key: key.clone(),
                increment: increment.clone(),
            },
            Cmd::Append { key, value } => RmwOp::Append {
                key: key.clone(),
                value: value.clone(),
            },
            Cmd::Getdel(key) => RmwOp::GetDel { key: key.clone() },
            Cmd::Rename {
                from,
                to,
                only_if_absent,
            } => RmwOp::Rename {
                from: from.clone(),
                to: to.clone(),
                only_if_absent: *only_if_absent,
            },
            Cmd::Copy { from, to, replace } => RmwOp::Copy {
                from: from.clone(),
                to: to.clone(),
                replace: *replace,
            },
            Cmd::Flush => RmwOp::FlushAll,
            Cmd::Type(_)
            | Cmd::Get(_)
            | Cmd::Strlen(_)
            | Cmd::Exists(_)
            | Cmd::Mget(_)
            | Cmd::Mset(_)
            | Cmd::Ping(_)
            | Cmd::Echo(_) => return None,
        })
    }

    /// The kv ops that run the command inside a transaction, in order; [`Cmd::reply`]
    /// takes their results.
    pub fn ops(&self) -> Vec<Op> {
        if let Some(op) = self.rmw_op() {
            return match op {
                RmwOp::Set {
                    key,
                    value,
                    condition: SetCondition::Always,
                    get: false,
                    expiry: SetExpiry::Clear,
                } => vec![Op::Put { key, value }],
                op => vec![Op::Rmw(op)],
            };
        }
        match self {
            Cmd::Mset(pairs) => pairs
                .iter()
                .map(|(key, value)| Op::Put {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            cmd => cmd
                .read_keys()
                .into_iter()
                .map(|key| Op::Get { key })
                .collect(),
        }
    }

    /// The reply, from the results of the command's [`Cmd::ops`] (or, for a read, of one
    /// read per key). A refused value is the command's error, in Redis's words.
    pub fn reply(&self, results: Vec<OpResult>) -> RespValue {
        if let Some(OpResult::Rejected(error)) = results
            .iter()
            .find(|result| matches!(result, OpResult::Rejected(_)))
        {
            return err(format!("ERR {error}"));
        }
        let unexpected = || err("ERR unexpected reply from the node");
        let mut values = results.into_iter();
        match self {
            Cmd::Ping(None) => RespValue::Simple("PONG".into()),
            Cmd::Ping(Some(message)) | Cmd::Echo(message) => RespValue::Bulk(Some(message.clone())),
            Cmd::Mset(_) => RespValue::ok(),
            Cmd::Exists(_) => {
                let found = values.filter(|v| matches!(v, OpResult::Value(Some(_))));
                RespValue::Integer(found.count() as i64)
            }
            Cmd::Mget(_) => RespValue::Array(Some(
                values
                    .map(|value| match value {
                        OpResult::Value(value) => RespValue::Bulk(value),
                        _ => RespValue::Bulk(None),
                    })
                    .collect(),
            )),
            cmd => match (cmd, values.next()) {
                (Cmd::Strlen(_), Some(OpResult::Value(value))) => {
                    RespValue::Integer(value.map_or(0, |v| v.len()) as i64)
                }
                (Cmd::Type(_), Some(OpResult::Value(value))) => {
                    RespValue::Simple(if value.is_some() { "string" } else { "none" }.into())
                }
                (Cmd::Setnx { .. }, Some(OpResult::Done)) => RespValue::Integer(1),
                (Cmd::Setnx { .. }, Some(OpResult::Unchanged)) => RespValue::Integer(0),
                (_, Some(OpResult::Value(value))) => RespValue::Bulk(value),
                (_, Some(OpResult::Integer(value))) => RespValue::Integer(value),
                (_, Some(OpResult::Done)) => RespValue::ok(),
                (_, Some(OpResult::Unchanged)) => RespValue::Bulk(None),
                _ => unexpected(),
            },
        }
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
                "BGSAVE x",
                "ERR unknown command 'bgsave', with args beginning with: 'x'",
            ),
            ("flushall x", "ERR syntax error"),
            ("scan 5", "ERR invalid cursor"),
            ("scan 0 count 0", "ERR syntax error"),
            (
                "scan 0 count x",
                "ERR value is not an integer or out of range",
            ),
            ("scan 0 match", "ERR syntax error"),
            (
                "copy a a",
                "ERR source and destination objects are the same",
            ),
            ("copy a b db 1", "ERR DB index is out of range"),
            (
                "rename a",
                "ERR wrong number of arguments for 'rename' command",
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
                "msetnx a 1 b",
                "ERR wrong number of arguments for 'msetnx' command",
            ),
            (
                "setnx a",
                "ERR wrong number of arguments for 'setnx' command",
            ),
            (
                "client kill",
                "ERR wrong number of arguments for 'client|kill' command",
            ),
            (
                "client bogus",
                "ERR unknown subcommand 'bogus'. Try CLIENT HELP.",
            ),
            ("hello 4", "NOPROTO unsupported protocol version"),
            (
                "hello x",
                "ERR Protocol version is not an integer or out of range",
            ),
            ("hello 3 auth u", "ERR Syntax error in HELLO option 'auth'"),
            ("hello 3 foo", "ERR Syntax error in HELLO option 'foo'"),
            ("auth a b c", "ERR syntax error"),
            ("wait 1 -1", "ERR timeout is negative"),
            ("wait x 0", "ERR value is not an integer or out of range"),
            ("client setinfo foo x", "ERR Unrecognized option 'foo'"),
            (
                "config foo",
                "ERR unknown subcommand 'foo'. Try CONFIG HELP.",
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
                cond: SetCondition::Absent,
                get: true,
                expiry: SetExpiry::Clear,
            }))
        );
    }

    /// Goal: each command's ops and the reply built from their results, as Redis
    /// replies, including a refused value's error text.
    #[test]
    fn commands_map_to_ops_and_results_to_redis_replies() {
        use OpResult::*;
        let value = |v: &str| Value(Some(v.as_bytes().to_vec()));
        let bulk = |v: &str| RespValue::Bulk(Some(v.as_bytes().to_vec()));
        let cases: Vec<(&str, usize, Vec<OpResult>, RespValue)> = vec![
            ("incr n", 1, vec![Integer(11)], RespValue::Integer(11)),
            (
                "incr s",
                1,
                vec![Rejected(crate::kv::ValueError::NotInteger)],
                not_integer(),
            ),
            ("incrbyfloat f 0.1", 1, vec![value("10.6")], bulk("10.6")),
            ("append s de", 1, vec![Integer(5)], RespValue::Integer(5)),
            ("strlen s", 1, vec![value("abcde")], RespValue::Integer(5)),
            ("set x 1", 1, vec![Done], RespValue::ok()),
            ("set x 1 XX", 1, vec![Unchanged], RespValue::Bulk(None)),
            (
                "set x 1 NX GET",
                1,
                vec![Value(None)],
                RespValue::Bulk(None),
            ),
            ("getset x 3", 1, vec![value("1")], bulk("1")),
            ("setnx x 3", 1, vec![Unchanged], RespValue::Integer(0)),
            ("setnx y 3", 1, vec![Done], RespValue::Integer(1)),
            ("msetnx a 1 b 2", 1, vec![Integer(1)], RespValue::Integer(1)),
            ("mset a 1 b 2", 2, vec![Done, Done], RespValue::ok()),
            (
                "exists x n q",
                3,
                vec![value("1"), Value(None), value("")],
                RespValue::Integer(2),
            ),
            ("getdel x", 1, vec![value("3")], bulk("3")),
            ("del x n", 1, vec![Integer(1)], RespValue::Integer(1)),
            ("ping", 0, vec![], RespValue::Simple("PONG".into())),
            (
                "type x",
                1,
                vec![value("1")],
                RespValue::Simple("string".into()),
            ),
            (
                "type n",
                1,
                vec![Value(None)],
                RespValue::Simple("none".into()),
            ),
            ("rename a b", 1, vec![Done], RespValue::ok()),
            (
                "rename a b",
                1,
                vec![Rejected(crate::kv::ValueError::NoSuchKey)],
                RespValue::error("ERR no such key"),
            ),
            ("renamenx a b", 1, vec![Integer(0)], RespValue::Integer(0)),
            (
                "copy a b replace",
                1,
                vec![Integer(1)],
                RespValue::Integer(1),
            ),
            ("flushdb async", 1, vec![Done], RespValue::ok()),
            ("unlink a b", 1, vec![Integer(2)], RespValue::Integer(2)),
        ];
        for (i, (line, op_count, results, want)) in cases.into_iter().enumerate() {
            let Ok(Parsed::Data(cmd)) = parse(args(line)) else {
                panic!("#{i}: {line} does not parse");
            };
            assert_eq!(cmd.ops().len(), op_count, "#{i}: {line} ops");
            assert_eq!(cmd.reply(results), want, "#{i}: {line}");
        }
        let Ok(Parsed::Data(cmd)) = parse(args("incrbyfloat k nan")) else {
            panic!("incrbyfloat parses whatever its increment: Redis reads it at run time");
        };
        assert_eq!(
            cmd.rmw_op(),
            Some(RmwOp::IncrByFloat {
                key: b"k".to_vec(),
                increment: b"nan".to_vec()
            })
        );
    }
}
