//! The per-connection state of a Redis client: commands become kv requests, replies
//! come back in request order.
//!
//! The event loop feeds [`RedisConn::on_command`] with decoded argument lists and
//! [`RedisConn::on_response`] with the node's (or the leader's) answers, sends what
//! [`RedisConn::take_submits`] returns, and writes what [`RedisConn::take_replies`]
//! encodes. This type does no IO, so it is tested with a fake node.
//!
//! Each command is a *slot* in a queue; slots start in order and their replies leave in
//! order, whatever order the kv answers arrive in. How commands map to the kv:
//! - GET / MGET / EXISTS / STRLEN: linearizable reads (ReadIndex); a read behind an
//!   unfinished write of the same connection goes through the log instead, so it sees
//!   that write; a write waits for earlier ReadIndex reads, so they cannot see it.
//! - plain SET: `Put`; MSET: one `Txn`; DEL of one key: `Delete`.
//! - every read-modify-write (SET NX/XX/GET, GETSET, SETNX, MSETNX, INCR*, DECR*,
//!   INCRBYFLOAT, APPEND, GETDEL, DEL of many keys): one `Command::Rmw`, decided when its
//!   entry is applied: one round trip, never a retry, and its errors ("value is not an
//!   integer") come from the state machine, alike on every replica. Writes pipeline.
//! - MULTI/EXEC: the ops of every queued command in one `Txn` (each op sees the earlier
//!   ones' writes); its compare requires every WATCHed key to still hold the value read
//!   at WATCH time, and a failed compare is EXEC's nil reply. WATCH runs alone: later
//!   commands of the connection wait for it.
//! - writes need a session: the first write registers one (`RegisterSession`).
//! - a `NotLeader` answer with the leader's address resends the request there
//!   ([`Target::Forward`]); while no leader is known the node holds the request for up
//!   to `limits.leader_wait_ms`, then the reply is `-TRYAGAIN`. Every failure of the
//!   node (`Unavailable`) is `-TRYAGAIN <reason>`; a reason that says "outcome unknown"
//!   (a write that timed out after it was sent) means it may have been applied. A reply
//!   only says OK for a write whose entry was applied.
//!
//! - KEYS, SCAN, DBSIZE, RANDOMKEY: native range reads (ReadIndex, like GET), page by
//!   page ([`crate::kv::RangeQuery`]); they wait for this connection's unfinished writes
//!   (a range cannot be ordered through the log), and writes wait for them. A SCAN
//!   cursor is the last key returned (`cursor`); a MATCH pattern's literal prefix
//!   narrows the range. RENAME/RENAMENX/COPY/FLUSHDB/FLUSHALL are read-modify-writes
//!   like INCR; UNLINK is DEL; TYPE is a read (every value is a string).
//! - expiry ([`expiry`]): EXPIRE & co., PERSIST, GETEX, SETEX and SET's EX/PX/EXAT/PXAT/
//!   KEEPTTL are read-modify-writes (the leader makes relative times absolute by its
//!   clock); TTL & co. are native `Ttl` reads (ReadIndex, judged by the leader's clock),
//!   ordered like range reads. Every linearizable read (GET, EXISTS, TYPE, KEYS, SCAN,
//!   DBSIZE, RANDOMKEY) leaves out keys whose expiry time has passed on the leader.
//! - HELLO, AUTH, CLIENT ID/INFO/SETNAME/GETNAME/SETINFO, CONFIG GET, COMMAND: answered
//!   here. HELLO 3 switches the connection to RESP3 from its own reply on (each slot
//!   keeps the protocol in force when its command arrived). AUTH and HELLO's AUTH
//!   check the users file when there is one (`access`), else answer as redis-server
//!   with no password configured; every command is checked by `access` first (NOAUTH,
//!   NOPERM; a refusal inside MULTI makes EXEC fail, as in Redis).
//! - CLIENT LIST / KILL and TIME: [`LocalQuery`]s the loop answers (it sees every
//!   connection of the node and the wall clock), in the slot's place in the order.
//! - SUBSCRIBE / PSUBSCRIBE / UNSUBSCRIBE / PUNSUBSCRIBE / RESET: the connection's
//!   subscriptions and subscribed mode (`subscribed`); the node's index is changed when
//!   the slot starts ([`pubsub`]). PUBLISH is a write (`Command::Publish`, one log entry
//!   every node delivers as it applies it); its reply counts this node's receivers, a
//!   [`LocalQuery`] like PUBSUB and CONFIG GET / SET (`notify-keyspace-events`,
//!   [`notify`], a setting of the node).
//! - WAIT: answered at once from the node's status, never blocking: on the leader, the
//!   replicas whose match index reaches the applied index (which covers every write of
//!   this connection, all applied before WAIT starts); on a follower, the replicas a
//!   commit guarantees (voters / 2).
//!
//! Back-pressure: the loop reads no further command while [`RedisConn::requests`] (the
//! queued slots) reaches `limits.requests_per_connection_max`, or while the finished
//! replies held here ([`RedisConn::reply_bytes`]) plus the unwritten output exceed
//! `limits.output_bytes_soft_max`; it disconnects when they would exceed
//! `limits.output_bytes_max`. So a client that pipelines without reading holds a bounded
//! number of requests and a bounded number of reply bytes.
//!
//! Invariant: slots `[0, started)` have been started, the rest have not; the counters
//! count the started slots not yet done; `done_bytes` is the sum of
//! `reply_bytes_hint` over the `Done` slots.

pub mod access;
mod client;
pub mod command;
mod cursor;
pub mod expiry;
mod glob;
mod info;
pub mod notify;
pub mod pubsub;
mod scan;
mod subscribed;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use self::access::Access;
pub use self::client::{Identity, LocalQuery};
pub use self::command::KillFilter;
use self::command::{Bytes, Cmd, Control, Parsed, command_reply, parse};
use self::pubsub::{PubsubQuery, SubscriptionChange};
use self::scan::RangeJob;
use self::subscribed::{Kind, Subscriptions};
use crate::codec::client::{Request, RequestBody, Response, ResponseBody, Role, Status};
use crate::codec::resp::{Protocol, RespValue};
use crate::kv::{Command, CommandResult, Compare, CompareOp, Op, OpResult, RangeQuery, Session};
use crate::kv::{SetCondition, SetExpiry};
use crate::security::Users;
/// Times a request follows a `NotLeader` answer.
const FORWARDS_MAX: u8 = 3;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// This node.
    Local,
    /// The leader at this client address, over the forwarding link.
    Forward(String),
}

/// A request to send on behalf of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submit {
    /// The request (ids are unique per connection).
    pub request: Request,
    /// Where to send it.
    pub target: Target,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// No ordering constraint (local answers).
    Free,
    /// Reads.
    Read,
    /// Range reads: ReadIndex only, so they wait for the connection's writes.
    Scan,
    /// Single-request writes: pipelined behind each other.
    Write,
    /// Runs alone.
    Exclusive,
}

#[derive(Debug)]
enum Job {
    Reply(RespValue),
    Read {
        cmd: Cmd,
    },
    Put {
        key: Bytes,
        value: Bytes,
    },
    Mset(Vec<(Bytes, Bytes)>),
    DelOne(Bytes),
    /// A read-modify-write: one `Command::Rmw`.
    Rmw {
        cmd: Cmd,
    },
    /// An EXEC of these queued commands: one `Txn`.
    Exec {
        cmds: Vec<Cmd>,
    },
    Watch(Vec<Bytes>),
    /// Forgets the watched keys and replies with the value (UNWATCH, DISCARD, EXECABORT).
    Unwatch(RespValue),
    /// A command built on range reads, with the page to read next.
    Range {
        what: RangeJob,
        query: RangeQuery,
    },
    /// INFO [section], asked at this loop clock (ms since the node started).
    Info(Option<String>, u64),
    /// Answered by the loop.
    Local(LocalQuery),
    /// WAIT: how many replicas hold this connection's writes.
    Wait,
    /// A TTL-family read of the key's expiry time.
    Ttl {
        key: Bytes,
        query: expiry::TtlQuery,
    },
    /// A subscription command: changes to the node's index, made when it starts (after
    /// every earlier command), and its confirmations.
    Hub {
        changes: Vec<SubscriptionChange>,
        reply: RespValue,
    },
    /// PUBLISH: a log entry every node delivers as it applies it; the reply counts this
    /// node's receivers.
    Publish {
        channel: Bytes,
        message: Bytes,
    },
}

enum Step {
    Send(Vec<RequestBody>),
    /// Ask the loop; its answer is the reply.
    Local(LocalQuery),
    Done(RespValue),
}

#[derive(Debug)]
enum SlotState {
    Waiting,
    Running {
        parts: Vec<Option<ResponseBody>>,
        missing: usize,
    },
    Done(RespValue),
}

#[derive(Debug)]
struct Slot {
    job: Job,
    class: Class,
    state: SlotState,
    /// Started as ReadIndex reads (a later write must wait for it).
    index_read: bool,
    /// Close the connection once this reply is written.
    quit: bool,
    /// The protocol the reply is written in (HELLO's own reply is in the new one).
    protocol: Protocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Slot(u64, usize),
    Session,
}

struct Inflight {
    owner: Owner,
    body: RequestBody,
    forwards: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionState {
    None,
    Registering,
    Ready { client_id: u64, next_seq: u64 },
}

/// State the jobs share: the write session and the watched keys.
struct Shared {
    session: SessionState,
    watched: Vec<(Bytes, Option<Bytes>)>,
    /// A write was sent (WAIT counts the replicas holding it).
    wrote: bool,
    /// Subscription changes of started slots, for the node's index.
    hub_changes: Vec<SubscriptionChange>,
}

impl Shared {
    fn next_session(&mut self) -> Session {
        match &mut self.session {
            SessionState::Ready {
                client_id,
                next_seq,
            } => {
                let seq = *next_seq;
                *next_seq += 1;
                Session {
                    client_id: *client_id,
                    seq,
                }
            }
            // Jobs needing a session only start once it is ready (see `dispatch`).
            SessionState::None | SessionState::Registering => Session {
                client_id: 0,
                seq: 0,
            },
        }
    }
}

/// One Redis connection's state.
pub struct RedisConn {
    slots: VecDeque<Slot>,
    /// Id of `slots[0]`.
    first_id: u64,
    started: usize,
    unfinished: usize,
    unfinished_exclusive: usize,
    unfinished_writes: usize,
    unfinished_index_reads: usize,
    next_request_id: u64,
    inflight: HashMap<u64, Inflight>,
    outgoing: Vec<Submit>,
    shared: Shared,
    /// Commands queued by MULTI; `None` outside a transaction.
    multi: Option<Vec<Cmd>>,
    /// A command inside MULTI was refused: EXEC fails with EXECABORT.
    multi_dirty: bool,
    name: Option<Bytes>,
    /// Invariant: see the module docs.
    done_bytes: usize,
    identity: Identity,
    protocol: Protocol,
    lib_name: Bytes,
    lib_ver: Bytes,
    /// The loop's clock as of the last pump ([`RedisConn::set_now_ms`]).
    now_ms: u64,
    /// When the last command arrived, and its name (CLIENT LIST's `idle` and `cmd`).
    last_command_ms: u64,
    last_command: String,
    /// Local queries to hand to the loop, by slot id.
    local_queries: Vec<(u64, LocalQuery)>,
    /// The channels and patterns subscribed (as of the last command received).
    subscriptions: Subscriptions,
    /// Who the connection is authenticated as, and what it may run.
    access: Access,
}

impl Default for RedisConn {
    fn default() -> RedisConn {
        RedisConn::new()
    }
}

impl RedisConn {
    /// A fresh connection.
    pub fn new() -> RedisConn {
        RedisConn {
            slots: VecDeque::new(),
            first_id: 0,
            started: 0,
            unfinished: 0,
            unfinished_exclusive: 0,
            unfinished_writes: 0,
            unfinished_index_reads: 0,
            next_request_id: 1,
            inflight: HashMap::new(),
            outgoing: Vec::new(),
            shared: Shared {
                session: SessionState::None,
                watched: Vec::new(),
                wrote: false,
                hub_changes: Vec::new(),
            },
            multi: None,
            multi_dirty: false,
            name: None,
            done_bytes: 0,
            identity: Identity::default(),
            protocol: Protocol::Resp2,
            lib_name: Vec::new(),
            lib_ver: Vec::new(),
            now_ms: 0,
            last_command_ms: 0,
            last_command: "NULL".into(),
            local_queries: Vec::new(),
            subscriptions: Subscriptions::default(),
            access: Access::open(),
        }
    }

    /// Checks this connection's commands against `users` (`security.users_file`).
    pub fn require_auth(&mut self, users: Arc<Users>) {
        self.access = Access::checked(users);
    }

    /// Failed AUTHs and refused commands since the last call (`net.client_auth_failures`).
    pub fn take_auth_failures(&mut self) -> u64 {
        self.access.take_failures()
    }

    /// The protocol the connection speaks now (pushes are written in it).
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The channels and patterns the node's index may list for this connection (to
    /// remove it when it closes): those subscribed, and those an (P)UNSUBSCRIBE not yet
    /// started or taken will leave.
    pub fn subscription_names(&self) -> (Vec<Bytes>, Vec<Bytes>) {
        let (mut channels, mut patterns) = self.subscriptions.names();
        let unstarted = self
            .slots
            .iter()
            .skip(self.started)
            .filter_map(|slot| match &slot.job {
                Job::Hub { changes, .. } => Some(changes),
                _ => None,
            });
        for change in unstarted.flatten().chain(&self.shared.hub_changes) {
            match change {
                SubscriptionChange::Unsubscribe(name) => channels.push(name.clone()),
                SubscriptionChange::Punsubscribe(name) => patterns.push(name.clone()),
                SubscriptionChange::Subscribe(_) | SubscriptionChange::Psubscribe(_) => {}
            }
        }
        (channels, patterns)
    }

    /// Whether the connection listens to a channel or pattern (it is not idle then).
    pub fn is_subscribed(&self) -> bool {
        self.subscriptions.count() > 0
    }

    /// The subscription changes for the node's index since the last call.
    pub fn take_subscription_changes(&mut self) -> Vec<SubscriptionChange> {
        std::mem::take(&mut self.shared.hub_changes)
    }

    /// Names the connection (the loop, once it accepted it).
    pub fn identify(&mut self, identity: Identity) {
        self.now_ms = identity.opened_ms;
        self.last_command_ms = identity.opened_ms;
        self.identity = identity;
    }

    /// Who the connection is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The loop's clock now (ms), before commands or answers are fed in.
    pub fn set_now_ms(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
    }

    /// The questions for the loop (slot id, query).
    pub fn take_local_queries(&mut self) -> Vec<(u64, LocalQuery)> {
        std::mem::take(&mut self.local_queries)
    }

    /// The loop's answer to the local query of slot `id`.
    pub fn on_local_answer(&mut self, id: u64, reply: RespValue) {
        let Some(index) = id.checked_sub(self.first_id).map(|i| i as usize) else {
            return;
        };
        let asked = |job: &Job| matches!(job, Job::Local(_) | Job::Publish { .. });
        if matches!(self.slots.get(index), Some(slot) if asked(&slot.job)) {
            self.finish(index, reply);
            self.dispatch();
        }
    }

    /// Commands queued and not yet answered to the client (in flight or waiting).
    pub fn requests(&self) -> usize {
        self.slots.len()
    }

    /// About how many bytes the finished replies not yet taken will encode to.
    pub fn reply_bytes(&self) -> usize {
        self.done_bytes
    }

    /// A decoded command (an empty list is ignored).
    pub fn on_command(&mut self, args: Vec<Bytes>) {
        if args.is_empty() {
            return;
        }
        self.last_command_ms = self.now_ms;
        self.last_command = String::from_utf8_lossy(&args[0]).to_lowercase();
        if self.last_command == "client"
            && let Some(sub) = args.get(1)
        {
            self.last_command = format!("client|{}", String::from_utf8_lossy(sub).to_lowercase());
        }
        if let Some(refusal) = self.access.gate(&args, &self.identity.addr) {
            self.multi_dirty |= self.multi.is_some();
            self.push(Job::Reply(refusal), false);
            self.dispatch();
            return;
        }
        let (job, quit) = self.job_for(args);
        self.push(job, quit);
        self.dispatch();
    }

    fn push(&mut self, job: Job, quit: bool) {
        let class = match &job {
            Job::Reply(_) | Job::Info(..) | Job::Local(_) => Class::Free,
            Job::Range { .. } | Job::Ttl { .. } => Class::Scan,
            Job::Wait => Class::Exclusive,
            Job::Read { .. } => Class::Read,
            Job::Put { .. }
            | Job::Mset(_)
            | Job::DelOne(_)
            | Job::Rmw { .. }
            | Job::Exec { .. } => Class::Write,
            Job::Watch(_) | Job::Unwatch(_) | Job::Hub { .. } => Class::Exclusive,
            Job::Publish { .. } => Class::Write,
        };
        self.slots.push_back(Slot {
            job,
            class,
            state: SlotState::Waiting,
            index_read: false,
            quit,
            protocol: self.protocol,
        });
    }

    fn job_for(&mut self, args: Vec<Bytes>) -> (Job, bool) {
        if self.multi.is_none()
            && let Some(reply) = self.subscriptions.intercept(self.protocol, &args)
        {
            return (Job::Reply(reply), false);
        }
        let parsed = parse(args);
        if let Some(queued) = &mut self.multi {
            return match parsed {
                Ok(Parsed::Data(cmd)) => {
                    queued.push(cmd);
                    (Job::Reply(RespValue::Simple("QUEUED".into())), false)
                }
                Ok(Parsed::Control(Control::Exec)) => {
                    let cmds = self.multi.take().unwrap_or_default();
                    if std::mem::take(&mut self.multi_dirty) {
                        let text = "EXECABORT Transaction discarded because of previous errors.";
                        return (Job::Unwatch(RespValue::error(text)), false);
                    }
                    (Job::Exec { cmds }, false)
                }
                Ok(Parsed::Control(Control::Discard)) => {
                    self.multi = None;
                    self.multi_dirty = false;
                    (Job::Unwatch(RespValue::ok()), false)
                }
                Ok(Parsed::Control(Control::Multi)) => (
                    Job::Reply(RespValue::error("ERR MULTI calls can not be nested")),
                    false,
                ),
                Ok(Parsed::Control(Control::Reset)) => self.job_for_control(Control::Reset),
                Ok(Parsed::Control(Control::Watch(_))) => (
                    Job::Reply(RespValue::error("ERR WATCH inside MULTI is not allowed")),
                    false,
                ),
                Ok(Parsed::Control(_)) => {
                    self.multi_dirty = true;
                    (
                        Job::Reply(RespValue::error(
                            "ERR command not allowed inside a transaction by raftkv",
                        )),
                        false,
                    )
                }
                Err(reply) => {
                    self.multi_dirty = true;
                    (Job::Reply(reply), false)
                }
            };
        }
        match parsed {
            Err(reply) => (Job::Reply(reply), false),
            Ok(Parsed::Data(cmd)) => (job_for_cmd(cmd), false),
            Ok(Parsed::Control(control)) => self.job_for_control(control),
        }
    }

    fn job_for_control(&mut self, control: Control) -> (Job, bool) {
        let reply = |value| (Job::Reply(value), false);
        let hub_job = |(reply, changes)| (Job::Hub { changes, reply }, false);
        match control {
            Control::Multi => {
                self.multi = Some(Vec::new());
                reply(RespValue::ok())
            }
            Control::Exec => reply(RespValue::error("ERR EXEC without MULTI")),
            Control::Discard => reply(RespValue::error("ERR DISCARD without MULTI")),
            Control::Watch(keys) => (Job::Watch(keys), false),
            Control::Unwatch => (Job::Unwatch(RespValue::ok()), false),
            Control::Dbsize => (RangeJob::Dbsize.start(0), false),
            Control::Ttl(key, query) => (Job::Ttl { key, query }, false),
            Control::Keys(pattern) => {
                let found = Vec::new();
                (RangeJob::Keys { pattern, found }.start(0), false)
            }
            Control::Scan(scan) => (RangeJob::Scan(scan).start(0), false),
            Control::Randomkey => {
                let random = self.random();
                (
                    RangeJob::Randomkey { from_start: false }.start(random),
                    false,
                )
            }
            Control::Info(section) => (Job::Info(section, self.now_ms), false),
            Control::Command(sub, names) => reply(command_reply(sub.as_deref(), &names)),
            Control::ClientId => reply(RespValue::Integer(self.identity.id as i64)),
            Control::ClientInfo => reply(RespValue::Verbatim(format!("{}\n", self.client_line()))),
            Control::ClientList => (Job::Local(LocalQuery::ClientList), false),
            Control::ClientKill(filter) => (Job::Local(LocalQuery::ClientKill(filter)), false),
            Control::ClientSetinfo(is_name, value) => {
                if is_name {
                    self.lib_name = value;
                } else {
                    self.lib_ver = value;
                }
                reply(RespValue::ok())
            }
            Control::Hello {
                protocol,
                auth,
                name,
            } => {
                let addr = &self.identity.addr;
                let refusal = match &auth {
                    Some((user, pass)) => self.access.authenticate(Some(user), pass, addr),
                    None if !self.access.is_authenticated() => {
                        Some(RespValue::error(access::NOAUTH_HELLO))
                    }
                    None => None,
                };
                if let Some(refusal) = refusal {
                    return reply(refusal);
                }
                if let Some(name) = name {
                    self.name = (!name.is_empty()).then_some(name);
                }
                if let Some(protocol) = protocol {
                    self.protocol = protocol;
                }
                reply(self.hello_reply())
            }
            Control::Auth(user, pass) => {
                let addr = &self.identity.addr;
                let refusal = self.access.authenticate(user.as_deref(), &pass, addr);
                reply(refusal.unwrap_or_else(RespValue::ok))
            }
            Control::ConfigGet(patterns) => (Job::Local(LocalQuery::ConfigGet(patterns)), false),
            Control::ConfigSet(flags) => (Job::Local(LocalQuery::ConfigSet(flags)), false),
            Control::Subscribe(names) => {
                hub_job(self.subscriptions.subscribe(Kind::Channel, names))
            }
            Control::Psubscribe(names) => {
                hub_job(self.subscriptions.subscribe(Kind::Pattern, names))
            }
            Control::Unsubscribe(names) => {
                hub_job(self.subscriptions.unsubscribe(Kind::Channel, names))
            }
            Control::Punsubscribe(names) => {
                hub_job(self.subscriptions.unsubscribe(Kind::Pattern, names))
            }
            Control::Publish(channel, message) => (Job::Publish { channel, message }, false),
            Control::Pubsub(query) => (Job::Local(LocalQuery::Pubsub(query)), false),
            Control::Reset => {
                let changes = self.subscriptions.reset();
                self.protocol = Protocol::Resp2;
                self.name = None;
                self.multi = None;
                self.multi_dirty = false;
                self.shared.watched.clear();
                self.access.reset();
                hub_job((RespValue::Simple("RESET".into()), changes))
            }
            Control::Time => (Job::Local(LocalQuery::Time), false),
            Control::Wait => (Job::Wait, false),
            Control::ClientSetname(name) => {
                self.name = (!name.is_empty()).then_some(name);
                reply(RespValue::ok())
            }
            Control::ClientGetname => reply(RespValue::Bulk(self.name.clone())),
            Control::Select => reply(RespValue::ok()),
            Control::Quit => (Job::Reply(RespValue::ok()), true),
        }
    }

    /// An answer to a request this connection submitted.
    pub fn on_response(&mut self, response: Response) {
        let Some(inflight) = self.inflight.remove(&response.request_id) else {
            return;
        };
        let body = match response.body {
            ResponseBody::NotLeader {
                leader_client_addr: Some(addr),
                ..
            } if inflight.forwards < FORWARDS_MAX => {
                let target = Target::Forward(addr);
                self.send(inflight.owner, inflight.body, target, inflight.forwards + 1);
                return;
            }
            ResponseBody::NotLeader { .. } => ResponseBody::Unavailable("no leader".into()),
            ResponseBody::Result(CommandResult::SessionExpired) => {
                self.shared.session = SessionState::None;
                ResponseBody::Result(CommandResult::SessionExpired)
            }
            body => body,
        };
        match inflight.owner {
            Owner::Session => self.on_session_reply(body),
            Owner::Slot(id, part) => self.on_part(id, part, body),
        }
        self.dispatch();
    }

    fn on_session_reply(&mut self, body: ResponseBody) {
        if let ResponseBody::Result(CommandResult::Registered { client_id }) = body {
            self.shared.session = SessionState::Ready {
                client_id,
                next_seq: 1,
            };
            return;
        }
        self.shared.session = SessionState::None;
        // The slot that waited for the session gets the error; the next write retries.
        let index = self.started;
        if index < self.slots.len() {
            self.started += 1;
            self.count_start(index);
            self.finish(index, failure(&body));
        }
    }

    fn on_part(&mut self, id: u64, part: usize, body: ResponseBody) {
        let Some(index) = id.checked_sub(self.first_id).map(|i| i as usize) else {
            return;
        };
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        let SlotState::Running { parts, missing } = &mut slot.state else {
            return;
        };
        if let Some(place) = parts.get_mut(part)
            && place.is_none()
        {
            *place = Some(body);
            *missing -= 1;
        }
        if *missing > 0 {
            return;
        }
        let parts: Vec<ResponseBody> = std::mem::take(parts).into_iter().flatten().collect();
        let step = advance(&mut slot.job, &mut self.shared, parts);
        self.apply_step(index, step);
    }

    /// The requests to send now.
    pub fn take_submits(&mut self) -> Vec<Submit> {
        std::mem::take(&mut self.outgoing)
    }

    /// Encodes the finished replies at the front of the queue into `out`; returns true
    /// when a QUIT was answered (write `out`, then close).
    pub fn take_replies(&mut self, out: &mut Vec<u8>) -> bool {
        while let Some(slot) = self.slots.front() {
            let SlotState::Done(value) = &slot.state else {
                return false;
            };
            self.done_bytes = self.done_bytes.saturating_sub(reply_bytes_hint(value));
            value.encode_as(slot.protocol, out);
            let quit = slot.quit;
            self.slots.pop_front();
            self.first_id += 1;
            self.started -= 1;
            if quit {
                return true;
            }
        }
        false
    }

    fn dispatch(&mut self) {
        while self.started < self.slots.len() && self.unfinished_exclusive == 0 {
            let index = self.started;
            let slot = &self.slots[index];
            let blocked = match slot.class {
                Class::Exclusive => self.unfinished > 0,
                Class::Write => self.unfinished_index_reads > 0,
                Class::Scan => self.unfinished_writes > 0,
                Class::Free | Class::Read => false,
            };
            if blocked {
                return;
            }
            let needs_session = slot.class == Class::Write;
            self.shared.wrote |= needs_session;
            if needs_session && !matches!(self.shared.session, SessionState::Ready { .. }) {
                if self.shared.session == SessionState::None {
                    self.shared.session = SessionState::Registering;
                    let body = RequestBody::Command(Command::RegisterSession);
                    self.send(Owner::Session, body, Target::Local, 0);
                }
                return;
            }
            let via_log = self.unfinished_writes > 0;
            self.started += 1;
            let slot = &mut self.slots[index];
            slot.index_read = (slot.class == Class::Read && !via_log) || slot.class == Class::Scan;
            self.count_start(index);
            if let Job::Local(query) = &self.slots[index].job {
                let id = self.first_id + index as u64;
                self.local_queries.push((id, query.clone()));
                self.slots[index].state = SlotState::Running {
                    parts: Vec::new(),
                    missing: 0,
                };
                continue;
            }
            let step = start(&mut self.slots[index].job, &mut self.shared, via_log);
            self.apply_step(index, step);
        }
    }

    fn count_start(&mut self, index: usize) {
        let slot = &self.slots[index];
        self.unfinished += 1;
        match slot.class {
            Class::Exclusive => {
                self.unfinished_exclusive += 1;
                self.unfinished_writes += 1;
            }
            Class::Write => self.unfinished_writes += 1,
            Class::Read | Class::Scan if slot.index_read => self.unfinished_index_reads += 1,
            Class::Read | Class::Scan | Class::Free => {}
        }
    }

    fn apply_step(&mut self, index: usize, step: Step) {
        match step {
            Step::Done(value) => self.finish(index, value),
            Step::Local(query) => {
                let id = self.first_id + index as u64;
                self.local_queries.push((id, query));
                self.slots[index].state = SlotState::Running {
                    parts: Vec::new(),
                    missing: 0,
                };
            }
            Step::Send(bodies) => {
                let id = self.first_id + index as u64;
                self.slots[index].state = SlotState::Running {
                    parts: bodies.iter().map(|_| None).collect(),
                    missing: bodies.len(),
                };
                for (part, body) in bodies.into_iter().enumerate() {
                    self.send(Owner::Slot(id, part), body, Target::Local, 0);
                }
            }
        }
    }

    fn finish(&mut self, index: usize, value: RespValue) {
        self.done_bytes += reply_bytes_hint(&value);
        let slot = &mut self.slots[index];
        slot.state = SlotState::Done(value);
        self.unfinished -= 1;
        match slot.class {
            Class::Exclusive => {
                self.unfinished_exclusive -= 1;
                self.unfinished_writes -= 1;
            }
            Class::Write => self.unfinished_writes -= 1,
            Class::Read | Class::Scan if slot.index_read => self.unfinished_index_reads -= 1,
            Class::Read | Class::Scan | Class::Free => {}
        }
    }

    fn send(&mut self, owner: Owner, body: RequestBody, target: Target, forwards: u8) {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.inflight.insert(
            request_id,
            Inflight {
                owner,
                body: body.clone(),
                forwards,
            },
        );
        self.outgoing.push(Submit {
            request: Request { request_id, body },
            target,
        });
    }
}

fn job_for_cmd(cmd: Cmd) -> Job {
    match cmd {
        Cmd::Ping(_) | Cmd::Echo(_) => Job::Reply(cmd.reply(Vec::new())),
        cmd if cmd.is_read_only() => Job::Read { cmd },
        Cmd::Set {
            key,
            value,
            cond: SetCondition::Always,
            get: false,
            expiry: SetExpiry::Clear,
        } => Job::Put { key, value },
        Cmd::Mset(pairs) => Job::Mset(pairs),
        Cmd::Del(keys) if keys.len() == 1 => {
            Job::DelOne(keys.into_iter().next().unwrap_or_default())
        }
        cmd => Job::Rmw { cmd },
    }
}

/// The transaction of an EXEC: every command's ops, run if every watched key still holds
/// the value seen at WATCH time.
fn exec_txn(cmds: &[Cmd], watched: Vec<(Bytes, Option<Bytes>)>, session: Session) -> Command {
    let compare = watched
        .into_iter()
        .map(|(key, seen)| match seen {
            Some(value) => Compare {
                key,
                op: CompareOp::Eq,
                value,
            },
            None => Compare {
                key,
                op: CompareOp::Absent,
                value: Vec::new(),
            },
        })
        .collect();
    Command::Txn {
        session,
        compare,
        success: cmds.iter().flat_map(Cmd::ops).collect(),
        failure: Vec::new(),
    }
}

/// EXEC's reply: one reply per command from its share of the results, or nil when a
/// watched key had changed.
fn exec_reply(cmds: &[Cmd], body: Option<ResponseBody>) -> RespValue {
    match body {
        Some(ResponseBody::Result(CommandResult::Txn {
            succeeded: true,
            results,
        })) => {
            let mut results = results.into_iter();
            let replies = cmds
                .iter()
                .map(|cmd| cmd.reply(results.by_ref().take(cmd.ops().len()).collect()))
                .collect();
            RespValue::Array(Some(replies))
        }
        Some(ResponseBody::Result(CommandResult::Txn {
            succeeded: false, ..
        })) => RespValue::Array(None),
        other => failure_of(other.as_ref()),
    }
}

/// The op result a `Command::Rmw`'s result stands for; `Err`: a failure, not a result.
fn rmw_result(result: CommandResult) -> Result<OpResult, CommandResult> {
    Ok(match result {
        CommandResult::Ok => OpResult::Done,
        CommandResult::Value(value) => OpResult::Value(value),
        CommandResult::Integer(value) => OpResult::Integer(value),
        CommandResult::Unchanged => OpResult::Unchanged,
        CommandResult::Rejected(error) => OpResult::Rejected(error),
        other => return Err(other),
    })
}

fn start(job: &mut Job, shared: &mut Shared, via_log: bool) -> Step {
    match job {
        Job::Reply(value) => Step::Done(std::mem::replace(value, RespValue::ok())),
        Job::Read { cmd } => Step::Send(
            cmd.read_keys()
                .into_iter()
                .map(|key| {
                    if via_log {
                        RequestBody::Command(Command::Get { key })
                    } else {
                        RequestBody::Get { key, stale: false }
                    }
                })
                .collect(),
        ),
        Job::Put { key, value } => Step::Send(vec![RequestBody::Command(Command::Put {
            session: shared.next_session(),
            key: std::mem::take(key),
            value: std::mem::take(value),
        })]),
        Job::Mset(pairs) => Step::Send(vec![RequestBody::Command(Command::Txn {
            session: shared.next_session(),
            compare: Vec::new(),
            success: std::mem::take(pairs)
                .into_iter()
                .map(|(key, value)| Op::Put { key, value })
                .collect(),
            failure: Vec::new(),
        })]),
        Job::DelOne(key) => Step::Send(vec![RequestBody::Command(Command::Delete {
            session: shared.next_session(),
            key: std::mem::take(key),
        })]),
        Job::Rmw { cmd } => match cmd.rmw_op() {
            Some(op) => Step::Send(vec![RequestBody::Command(Command::Rmw {
                session: shared.next_session(),
                op,
            })]),
            None => Step::Done(RespValue::error("ERR not a read-modify-write")),
        },
        Job::Exec { cmds } => {
            let watched = std::mem::take(&mut shared.watched);
            let txn = exec_txn(cmds, watched, shared.next_session());
            Step::Send(vec![RequestBody::Command(txn)])
        }
        Job::Watch(keys) => Step::Send(
            keys.iter()
                .map(|key| RequestBody::Get {
                    key: key.clone(),
                    stale: false,
                })
                .collect(),
        ),
        Job::Unwatch(reply) => {
            shared.watched.clear();
            Step::Done(std::mem::replace(reply, RespValue::ok()))
        }
        Job::Info(..) => Step::Send(vec![RequestBody::Status, RequestBody::Metrics]),
        Job::Range { query, .. } => Step::Send(vec![RequestBody::Range {
            query: query.clone(),
            stale: false,
        }]),
        Job::Wait => Step::Send(vec![RequestBody::Status]),
        Job::Ttl { key, query } => Step::Send(vec![RequestBody::Ttl {
            key: key.clone(),
            absolute: query.absolute,
            stale: false,
        }]),
        Job::Local(_) => Step::Done(RespValue::error("ERR unexpected local query")),
        Job::Hub { changes, reply } => {
            shared.hub_changes.append(changes);
            Step::Done(std::mem::replace(reply, RespValue::ok()))
        }
        Job::Publish { channel, message } => {
            Step::Send(vec![RequestBody::Command(Command::Publish {
                session: shared.next_session(),
                channel: channel.clone(),
                message: std::mem::take(message),
            })])
        }
    }
}

/// WAIT's answer from the node's status: on the leader, the members other than itself
/// whose log holds everything applied (this connection's writes were applied before
/// WAIT started, so they lie at or below the applied index; none written: every
/// replica); elsewhere, the replicas a commit guarantees (a majority of the voters,
/// leader excluded), since every acknowledged write is committed.
fn wait_replicas(status: &Status, wrote: bool) -> i64 {
    if status.role == Role::Leader {
        let needed = if wrote { status.applied_index } else { 0 };
        let replicas = status
            .members
            .iter()
            .filter(|m| m.id != status.node_id && m.match_index >= needed);
        return replicas.count() as i64;
    }
    let voters = status.members.iter().filter(|m| m.voter).count();
    (voters / 2) as i64
}

fn advance(job: &mut Job, shared: &mut Shared, parts: Vec<ResponseBody>) -> Step {
    match job {
        Job::Read { cmd } => {
            let mut values = Vec::with_capacity(parts.len());
            // By value: a large read result is not copied once more on its way out.
            for part in parts {
                match part {
                    ResponseBody::Result(CommandResult::Value(value)) => {
                        values.push(OpResult::Value(value));
                    }
                    other => return Step::Done(failure(&other)),
                }
            }
            Step::Done(cmd.reply(values))
        }
        Job::Put { .. } | Job::Mset(_) => match parts.first() {
            Some(ResponseBody::Result(CommandResult::Ok | CommandResult::Txn { .. })) => {
                Step::Done(RespValue::ok())
            }
            other => Step::Done(failure_of(other)),
        },
        Job::DelOne(_) => match parts.first() {
            Some(ResponseBody::Result(CommandResult::Ok)) => Step::Done(RespValue::Integer(1)),
            Some(ResponseBody::Result(CommandResult::NotFound)) => {
                Step::Done(RespValue::Integer(0))
            }
            other => Step::Done(failure_of(other)),
        },
        Job::Rmw { cmd } => match parts.into_iter().next() {
            Some(ResponseBody::Result(result)) => match rmw_result(result) {
                Ok(op_result) => Step::Done(cmd.reply(vec![op_result])),
                Err(other) => Step::Done(failure(&ResponseBody::Result(other))),
            },
            other => Step::Done(failure_of(other.as_ref())),
        },
        Job::Exec { cmds } => Step::Done(exec_reply(cmds, parts.into_iter().next())),
        Job::Watch(keys) => {
            for (key, part) in keys.iter().zip(&parts) {
                match part {
                    ResponseBody::Result(CommandResult::Value(value)) => {
                        if !shared.watched.iter().any(|(k, _)| k == key) {
                            shared.watched.push((key.clone(), value.clone()));
                        }
                    }
                    other => return Step::Done(failure(other)),
                }
            }
            Step::Done(RespValue::ok())
        }
        Job::Info(section, uptime_ms) => match (parts.first(), parts.get(1)) {
            (Some(ResponseBody::Status(status)), Some(ResponseBody::Metrics(metrics))) => {
                let text = info::render(section.as_deref(), status, metrics, *uptime_ms);
                Step::Done(RespValue::Verbatim(text))
            }
            (other, _) => Step::Done(failure_of(other)),
        },
        Job::Wait => match parts.first() {
            Some(ResponseBody::Status(status)) => {
                Step::Done(RespValue::Integer(wait_replicas(status, shared.wrote)))
            }
            other => Step::Done(failure_of(other)),
        },
        Job::Range { what, query } => match parts.into_iter().next() {
            Some(ResponseBody::Range(result)) => what.advance(query, result),
            other => Step::Done(failure_of(other.as_ref())),
        },
        Job::Ttl { query, .. } => match parts.first() {
            Some(ResponseBody::Result(CommandResult::Integer(ms))) => Step::Done(query.reply(*ms)),
            other => Step::Done(failure_of(other)),
        },
        Job::Publish { channel, .. } => match parts.first() {
            Some(ResponseBody::Result(CommandResult::Ok)) => Step::Local(LocalQuery::Pubsub(
                PubsubQuery::Receivers(std::mem::take(channel)),
            )),
            other => Step::Done(failure_of(other)),
        },
        Job::Reply(_) | Job::Unwatch(_) | Job::Local(_) | Job::Hub { .. } => {
            Step::Done(RespValue::error("ERR unexpected reply"))
        }
    }
}

/// About the encoded size of `value` (at least it, give or take the length digits).
fn reply_bytes_hint(value: &RespValue) -> usize {
    /// Type byte, the longest length or integer, CRLF.
    const HEADER_BYTES: usize = 24;
    match value {
        RespValue::Simple(text) | RespValue::Error(text) => text.len() + 3,
        RespValue::Integer(_) | RespValue::Bulk(None) | RespValue::Array(None) => HEADER_BYTES,
        RespValue::Bulk(Some(bytes)) => bytes.len() + HEADER_BYTES,
        RespValue::Array(Some(values)) | RespValue::Set(values) | RespValue::Push(values) => {
            HEADER_BYTES + values.iter().map(reply_bytes_hint).sum::<usize>()
        }
        RespValue::Replies(values) => values.iter().map(reply_bytes_hint).sum::<usize>(),
        RespValue::Map(pairs) => {
            let hint = |(key, value): &(RespValue, RespValue)| {
                reply_bytes_hint(key) + reply_bytes_hint(value)
            };
            HEADER_BYTES + pairs.iter().map(hint).sum::<usize>()
        }
        RespValue::Verbatim(text) => HEADER_BYTES + text.len() + 4,
    }
}

fn failure_of(body: Option<&ResponseBody>) -> RespValue {
    match body {
        Some(body) => failure(body),
        None => RespValue::error("ERR no reply from the node"),
    }
}

/// The error reply for an answer that is not the expected success.
fn failure(body: &ResponseBody) -> RespValue {
    let text = match body {
        ResponseBody::Unavailable(message) => format!("TRYAGAIN {message}"),
        ResponseBody::NotLeader { .. } => "TRYAGAIN no leader".into(),
        ResponseBody::Error(message) => format!("ERR {message}"),
        ResponseBody::Result(CommandResult::SessionExpired) => {
            "ERR the write session expired before this write; it was not applied, retry".into()
        }
        ResponseBody::Result(CommandResult::StaleSequence) => {
            "ERR stale write sequence; the write was not applied".into()
        }
        ResponseBody::Result(CommandResult::Error(message)) => format!("ERR {message}"),
        other => format!("ERR unexpected reply from the node: {other:?}"),
    };
    RespValue::error(text)
}

#[cfg(test)]
mod tests;
