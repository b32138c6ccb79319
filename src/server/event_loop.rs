//! The node's one thread: a mio poll loop in the shape of redis's `aeMain`.
//!
//! `run` = `loop { turn() }`; a turn is `before_sleep` → `poll` (timeout = the next
//! timer deadline) → dispatch readiness events → expire timers. Exactly as in redis,
//! `before_sleep` runs first and is the only place that touches the disk and produces
//! replies: the node drains the consensus core's `Ready`, appends every new entry,
//! syncs ONCE for the whole turn (group commit), sends the messages that acknowledge
//! persisted state, applies committed entries, and queues client replies; then every
//! connection with output is flushed directly, registering WRITABLE only after a
//! partial write. Because replies are only produced after the sync in the same
//! function, redis's `AE_BARRIER` problem (replying before the fsync of the data it
//! acknowledges) cannot arise here.
//!
//! Connections live in a slab; a connection's token is its slab key plus
//! [`FIRST_CONNECTION_TOKEN`]. Each connection has a generation number so a reply for
//! a closed connection is never delivered to a new one that reused the slab slot.
//!
//! Peer links: every node dials every other member and sends its Raft messages on
//! that outbound link (handshake first: cluster id, node id, its peer address); it
//! receives messages on the links the others dialed. A broken link is redialed with
//! exponential backoff and jitter; messages for a peer without a link are dropped
//! (Raft retransmits). A link that falls silent without breaking is treated as broken:
//! when messages went to a peer and nothing came back from it for the longest election
//! timeout (every message we send gets an answer well within it), or a connect does not
//! complete within it, the outbound link and the peer's silent inbound ones are closed
//! and redialed (`Net::recycle_silent_links`), so a healed partition is not left to
//! TCP's retransmission backoff. The set of links follows the configuration in force
//! ([`Node::wanted_peers`], checked after every `before_sleep`): a member added at
//! runtime is dialed at the address carried in the configuration, a removed one is
//! dropped once the leader has let it go; a peer with no known address (the leader,
//! for a node started with `--join` that has no configuration yet) is dialed at the
//! address it announced in its handshake. A node that learns it was removed stops.
//!
//! Redis connections (the optional `listen_redis` port) run the chain RespCodec ->
//! [`RedisConn`]: the Redis state turns each command into client-protocol requests,
//! which go to the node like any client's, or, on a follower answered NotLeader, over
//! the one forwarding link (a client-protocol connection to the leader's client
//! address, with fresh request ids mapped back to the Redis connection). Replies are
//! queued per connection and written in request order. A forwarded request has the
//! deadline of a local one: past it, a write that was sent is answered "outcome
//! unknown", a read or a request never sent (its link still connecting) a definite
//! error; a request whose link failed before it was sent goes back to the node, which
//! redirects it to a newer leader or parks it until one is elected.
//!
//! Connection limits (docs/CONFIG.md `[limits]`): client connections (client and Redis
//! ports together) and inbound peer connections awaiting their handshake have separate
//! caps; identified peer links, outbound links and the forwarding link count against
//! neither, so no number of clients can starve the Raft traffic. At the handshake cap a
//! new peer connection evicts the oldest unidentified one, so junk connections cannot
//! lock a member out (its link identifies itself at once). A refused connection is
//! accepted and closed at once (also when the process is out of descriptors: a spare
//! descriptor is freed for that), counted, and logged at most once a second. A sweep,
//! about once a second, closes idle clients, half-sent requests (slowloris) and peers
//! that never identify themselves ([`conn_limits`]).
//!
//! Back-pressure, like redis's `client-output-buffer-limit`: a client connection is not
//! read while it has `requests_per_connection_max` requests in flight or owes more than
//! `output_bytes_soft_max` bytes (unwritten output plus finished Redis replies held for
//! ordering); it is read again once replies drain (`maybe_resume`). A reply that would
//! make it owe more than `output_bytes_max` disconnects it, checked as the reply is
//! produced. So one connection holds at most about `output_bytes_max` plus one reply of
//! output and a bounded number of pending requests, and its work per turn is bounded by
//! `FRAMES_PER_TURN_MAX`, `read_bytes_per_turn_max` and the in-flight cap. All client
//! reading and decoding of one turn also stops at a time slice (`Net::slice_end`, half
//! the slow-turn limit) and resumes next turn, whatever the number of busy clients.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use super::backoff::Backoff;
use super::conn_limits::{self, Activity, RefusalLog, Timeouts, Watch};
use super::connection::{Connection, FlushOutcome, QueueFrameError};
use super::fd_limit;
use super::metrics::ConnectionMetrics;
use super::node::{ClientRef, Node, Outbox, WantedPeer};
use super::redis::{RedisConn, Target};
use super::timer::{TimerId, TimerWheel};
use crate::codec::client::{self as client_codec, Request, RequestBody, Response, ResponseBody};
use crate::codec::frame::FrameCodec;
use crate::codec::peer::{self as peer_codec, PeerFrame};
use crate::codec::resp::RespCodec;
use crate::config::Config;
use crate::kv::Command;
use crate::raft;
use crate::raft::message::{Message, NodeId};
use crate::raft::rng::Rng;
use crate::wire::DecodeError;

const PEER_LISTENER: Token = Token(0);
const CLIENT_LISTENER: Token = Token(1);
const SIGNALS: Token = Token(2);
const REDIS_LISTENER: Token = Token(3);
/// Rounds of "drain the node, then send what the Redis connections asked next" per
/// `before_sleep`; a read-modify-write takes two (local read, then its Txn).
const REDIS_ROUNDS_MAX: usize = 4;
/// Tokens below this are reserved for the listeners and the signal pipe.
pub const FIRST_CONNECTION_TOKEN: usize = 16;

/// Frames decoded per connection per turn, so one busy client cannot starve ticks.
const FRAMES_PER_TURN_MAX: usize = 4096;
/// Client requests decoded between two looks at the clock for the turn's time slice.
const REQUESTS_PER_SLICE_CHECK: usize = 32;
const RECONNECT_MIN_MS: u64 = 50;
const RECONNECT_MAX_MS: u64 = 2000;

/// What a timer in the wheel stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerEvent {
    /// One logical Raft tick.
    Tick,
    /// Dial the peer again.
    Reconnect(NodeId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnKind {
    /// A client connection on the client port.
    Client,
    /// A peer dialed us; `None` until its handshake arrives.
    PeerIn(Option<NodeId>),
    /// Our link to a peer; `connected` once the TCP connect completed.
    PeerOut { peer: NodeId, connected: bool },
    /// A Redis client on the Redis port (its state is in `Conn::redis`).
    Redis,
    /// Our client-protocol link to the leader, carrying forwarded Redis requests.
    Forward { connected: bool },
}

struct Conn {
    kind: ConnKind,
    io: Connection<TcpStream>,
    generation: u64,
    /// WRITABLE interest is registered (after a partial write or while connecting).
    writable: bool,
    /// The read limit stopped reading: read again next turn even without an event.
    unread: bool,
    /// The Redis state of a `ConnKind::Redis` connection.
    redis: Option<Box<RedisConn>>,
    /// Traffic times for the timeouts of [`conn_limits`].
    activity: Activity,
    /// Client-port requests read and not yet answered (a Redis connection counts its
    /// queued commands in `redis` instead).
    requests_owed: usize,
    /// Back-pressure stopped reading this client connection; `maybe_resume` restarts it.
    paused: bool,
    /// A close is already pending (so it is counted and logged once).
    closing: bool,
}

impl Conn {
    fn is_client(&self) -> bool {
        matches!(self.kind, ConnKind::Client | ConnKind::Redis)
    }

    /// Requests in flight and finished reply bytes held outside the output buffer.
    fn owed(&self) -> (usize, usize) {
        match &self.redis {
            Some(redis) => (redis.requests(), redis.reply_bytes()),
            None => (self.requests_owed, 0),
        }
    }

    /// Whether this client connection may take another request (the soft limits).
    fn has_room(&self, limits: &ClientLimits) -> bool {
        let (requests, held) = self.owed();
        requests < limits.requests_max
            && self.io.pending_output_bytes() + held <= limits.output_soft_bytes_max
    }

    fn watch(&self) -> Watch {
        match self.kind {
            ConnKind::Client | ConnKind::Redis => Watch::Client,
            ConnKind::PeerIn(None) => Watch::Handshake,
            ConnKind::PeerIn(Some(_)) | ConnKind::PeerOut { .. } | ConnKind::Forward { .. } => {
                Watch::Exempt
            }
        }
    }
}

/// The limits on client connections and inbound peer handshakes.
#[derive(Debug, Clone, Copy)]
struct ClientLimits {
    /// `limits.client_connections_max`, capped by the open-file limit.
    connections_max: usize,
    handshakes_max: usize,
    requests_max: usize,
    output_soft_bytes_max: usize,
    timeouts: Timeouts,
}

/// The link a follower forwards Redis requests on.
///
/// Invariant: every request in `pending` has one live timer in `deadlines` (cancelled
/// when it leaves `pending`); a request whose `unsent` body is still held was never
/// written to a socket, so whatever happens to it, nothing was applied.
struct ForwardLink {
    /// Slab key of the link and the leader client address it goes to.
    conn: Option<(usize, String)>,
    /// The leader client address of every forwarding link not yet closed, by slab key.
    addrs: HashMap<usize, String>,
    next_request_id: u64,
    /// Forwarded request id -> the request's state.
    pending: HashMap<u64, Forwarded>,
    /// Ids of requests waiting for their link to connect, in order.
    unsent: Vec<u64>,
    /// The forwarded requests' deadlines (`limits.request_timeout_ms`), by id.
    deadlines: TimerWheel<u64>,
    request_timeout_ms: u64,
    /// Requests never sent on a link that closed, for the node to redirect or park.
    handed_back: Vec<(ClientRef, Request, String)>,
}

/// A request on the forwarding link.
struct Forwarded {
    /// Slab key of the link it went on.
    link: usize,
    client: ClientRef,
    /// The Redis connection's own request id.
    request_id: u64,
    /// The request until the link connects and it is written; `None` once sent.
    unsent: Option<RequestBody>,
    /// The request may change state: a lost reply leaves its outcome unknown.
    write: bool,
    timer: TimerId,
}

impl ForwardLink {
    fn new(request_timeout_ms: u64) -> ForwardLink {
        ForwardLink {
            conn: None,
            addrs: HashMap::new(),
            next_request_id: 0,
            pending: HashMap::new(),
            unsent: Vec::new(),
            deadlines: TimerWheel::new(256, 4, 0),
            request_timeout_ms,
            handed_back: Vec::new(),
        }
    }
}

/// Whether a request may change the state machine (a read never does).
fn changes_state(body: &RequestBody) -> bool {
    !matches!(
        body,
        RequestBody::Get { .. }
            | RequestBody::Status
            | RequestBody::Metrics
            | RequestBody::Command(Command::Get { .. })
    )
}

struct PeerLink {
    addr: SocketAddr,
    /// Slab key of the outbound connection, when one exists.
    conn: Option<usize>,
    backoff: Backoff,
    reconnect_pending: bool,
    /// When the outbound connection was dialed, in the loop's clock.
    dialed_ms: u64,
    /// When anything last arrived from the peer (on the links it dialed), in the loop's
    /// clock.
    heard_ms: u64,
    /// A message was queued for the peer since it was last heard from: an answer (at
    /// least a heartbeat response or a vote) is expected.
    sent_since_heard: bool,
    /// The link was recycled for silence and the peer has not been heard from since
    /// (later recycles of the same silence log at debug level).
    recycled: bool,
}

/// The network half of the loop: sockets, buffers and peer links. Kept apart from the
/// [`Node`] so the node can push messages and replies into it while being borrowed.
struct Net {
    poll: Poll,
    conns: Slab<Conn>,
    peers: HashMap<NodeId, PeerLink>,
    /// Peer addresses announced in inbound handshakes.
    announced: HashMap<NodeId, SocketAddr>,
    /// The address this node announces in its handshakes.
    peer_addr: String,
    frame: FrameCodec,
    cluster_id: u64,
    node_id: NodeId,
    output_bytes_max: usize,
    read_bytes_per_turn_max: usize,
    limits: ClientLimits,
    /// Open client connections (client and Redis ports).
    client_count: usize,
    /// Inbound peer connections that have not identified themselves yet and are not
    /// closing.
    handshake_count: usize,
    /// Inbound peer connections in accept order, as (slab key, generation, loop turn
    /// of the accept), so the oldest unidentified one makes room for a new one at the
    /// cap; entries of connections that identified themselves or closed are skipped
    /// and pruned.
    handshake_queue: VecDeque<(usize, u64, u64)>,
    /// Loop turns so far: a connection accepted in this turn has not been read yet, so
    /// it is never evicted for want of a handshake (a flood in one burst cannot push a
    /// member's new link out before its handshake is read).
    turn: u64,
    /// The `net.*` counters (the gauges are filled in by `connection_metrics`).
    counts: ConnectionMetrics,
    refusals: RefusalLog,
    /// Closed and reopened around an accept when the process is out of descriptors.
    spare_fd: Option<File>,
    /// The loop's clock ([`Net::now_ms`]) as of the current step of the turn: one clock
    /// read per step instead of one per connection event.
    step_now_ms: u64,
    /// Client input is left for the next turn once the dispatch passes this instant
    /// (half of the slow-turn limit after it started), so however many clients are
    /// busy, one turn's reading and decoding stays within a bounded slice. Peer
    /// traffic is never deferred.
    slice_end: Instant,
    /// A client connection was read in this turn's slice (the first one always is, so
    /// clients make progress however long the peer traffic took).
    slice_served_client: bool,
    next_generation: u64,
    /// Slab keys with queued output to flush at the end of `before_sleep`.
    dirty: Vec<usize>,
    /// Slab keys to close at the end of the turn, with the reason to log.
    closing: Vec<(usize, String)>,
    /// The loop's clock origin: every `now_ms` of the loop counts from it.
    started: Instant,
    /// A peer link that carries nothing from its peer this long while messages go to
    /// it, or that does not connect within it, is closed and redialed: the longest
    /// election timeout (`2 * election_ticks * tick_ms`).
    silence_ms: u64,
    rng: Rng,
    resp: RespCodec,
    forward: ForwardLink,
    /// Redis connections that received answers and may have more to send or write.
    redis_touched: Vec<usize>,
    /// A Redis request went to the node after its `before_sleep`.
    redis_proposed: bool,
}

/// A running node: the event loop, the network and the node logic.
pub struct EventLoop {
    net: Net,
    node: Node,
    timers: TimerWheel<TimerEvent>,
    peer_listener: TcpListener,
    client_listener: TcpListener,
    redis_listener: Option<TcpListener>,
    signals: Signals,
    tick_ms: u64,
    slow_turn_ms: u64,
    stopping: bool,
    /// `before_sleep` handed back unforwarded requests that the node may have proposed:
    /// poll without sleeping so the next `before_sleep` persists and sends them.
    handed_back: bool,
    events: Events,
    /// Readiness of this turn's events, copied out of `events` before dispatching.
    ready_scratch: Vec<(Token, bool, bool)>,
    /// Connections with input left over from a bounded read, to read again this turn.
    unread_scratch: Vec<usize>,
    /// When the next timeout sweep is due.
    next_sweep_ms: u64,
}

/// The client limits of `config`, the connection cap lowered to what the open-file limit
/// leaves after [`fd_limit::RESERVED_FDS`] (the server raised it at start).
fn client_limits(config: &Config) -> ClientLimits {
    let limits = &config.limits;
    let mut connections_max = limits.client_connections_max;
    match fd_limit::open_files_limit() {
        Ok(fds) => {
            let room = fds.saturating_sub(fd_limit::RESERVED_FDS).max(1);
            if (room as usize) < connections_max {
                warn!(
                    "limits.client_connections_max = {connections_max} does not fit the \
                     open-file limit {fds} minus {} reserved: admitting at most {room} \
                     client connections",
                    fd_limit::RESERVED_FDS
                );
                connections_max = room as usize;
            }
        }
        Err(e) => warn!("cannot read the open-file limit: {e}"),
    }
    let idle_ms = limits.client_idle_timeout_ms;
    ClientLimits {
        connections_max,
        handshakes_max: limits.peer_handshakes_max,
        requests_max: limits.requests_per_connection_max,
        output_soft_bytes_max: limits.output_bytes_soft_max,
        timeouts: Timeouts {
            idle_ms: (idle_ms > 0).then_some(idle_ms),
            partial_ms: limits.partial_request_timeout_ms,
            handshake_ms: limits.peer_handshake_timeout_ms,
        },
    }
}

fn token_of(key: usize) -> Token {
    Token(key + FIRST_CONNECTION_TOKEN)
}

/// Binds the listener of config key `key`; an error names the key and the address
/// ("key `listen_client`: cannot bind 127.0.0.1:7001: Address already in use").
fn bind(addr: SocketAddr, key: &str) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("key `{key}`: cannot bind {addr}: {e}")))
}

impl EventLoop {
    /// Binds the listeners and prepares the node; does not block.
    ///
    /// # Errors
    /// Binding a listen address or registering with the poller failed.
    pub fn new(config: &Config, node: Node) -> io::Result<EventLoop> {
        let poll = Poll::new()?;
        let mut peer_listener = bind(config.listen_peer, "listen_peer")?;
        let mut client_listener = bind(config.listen_client, "listen_client")?;
        poll.registry()
            .register(&mut peer_listener, PEER_LISTENER, Interest::READABLE)?;
        poll.registry()
            .register(&mut client_listener, CLIENT_LISTENER, Interest::READABLE)?;
        let redis_listener = match config.listen_redis {
            Some(addr) => {
                let mut listener = bind(addr, "listen_redis")?;
                poll.registry()
                    .register(&mut listener, REDIS_LISTENER, Interest::READABLE)?;
                Some(listener)
            }
            None => None,
        };
        let mut signals =
            Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let peer_addr = config
            .self_member()
            .map_or(config.listen_peer, |m| m.peer_addr)
            .to_string();
        let limits = client_limits(config);
        let net = Net {
            poll,
            conns: Slab::new(),
            peers: HashMap::new(),
            announced: HashMap::new(),
            peer_addr,
            frame: FrameCodec::new(config.limits.frame_bytes_max),
            cluster_id: config.cluster_id,
            node_id: config.node_id,
            output_bytes_max: config.limits.output_bytes_max,
            read_bytes_per_turn_max: config.limits.read_bytes_per_turn_max,
            limits,
            client_count: 0,
            handshake_count: 0,
            handshake_queue: VecDeque::new(),
            turn: 0,
            counts: ConnectionMetrics::default(),
            refusals: RefusalLog::default(),
            spare_fd: File::open("/dev/null").ok(),
            step_now_ms: 0,
            slice_end: Instant::now(),
            slice_served_client: false,
            next_generation: 1,
            dirty: Vec::new(),
            closing: Vec::new(),
            started: Instant::now(),
            silence_ms: 2 * u64::from(config.raft.election_ticks) * config.raft.tick_ms,
            rng: Rng::new(config.node_id ^ 0x9e37_79b9_7f4a_7c15),
            resp: RespCodec::new(config.limits.frame_bytes_max as usize),
            forward: ForwardLink::new(config.limits.request_timeout_ms),
            redis_touched: Vec::new(),
            redis_proposed: false,
        };
        Ok(EventLoop {
            net,
            node,
            timers: TimerWheel::new(512, 1, 0),
            peer_listener,
            client_listener,
            redis_listener,
            signals,
            tick_ms: config.raft.tick_ms,
            slow_turn_ms: (config.raft.tick_ms * u64::from(config.raft.heartbeat_ticks) / 2).max(1),
            stopping: false,
            handed_back: false,
            events: Events::with_capacity(1024),
            ready_scratch: Vec::new(),
            unread_scratch: Vec::new(),
            next_sweep_ms: 0,
        })
    }

    fn now_ms(&self) -> u64 {
        self.net.now_ms()
    }

    /// Runs until SIGINT/SIGTERM, then flushes, syncs and returns.
    ///
    /// # Errors
    /// A poll failure, or a storage failure: the node must stop rather than acknowledge
    /// anything it could not persist.
    pub fn run(&mut self) -> Result<(), RunError> {
        self.follow_membership();
        let now = self.now_ms();
        self.timers.schedule(now + self.tick_ms, TimerEvent::Tick);
        while !self.stopping {
            self.turn()?;
        }
        info!("shutting down: flushing and syncing");
        self.before_sleep()?;
        Ok(())
    }

    fn turn(&mut self) -> Result<(), RunError> {
        let turn_started = Instant::now();
        self.net.turn += 1;
        self.net.step_now_ms = self.now_ms();
        self.before_sleep()?;
        let next_deadline = [
            self.timers.next_deadline(),
            self.node.next_deadline(),
            self.net.forward.deadlines.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = match next_deadline {
            Some(deadline) => Duration::from_millis(deadline.saturating_sub(self.now_ms())),
            None => Duration::from_millis(self.tick_ms),
        };
        let timeout = if self.handed_back || self.net.conns.iter().any(|(_, c)| c.unread) {
            Duration::ZERO
        } else {
            timeout
        };
        let busy = turn_started.elapsed();
        match self.net.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(RunError::Poll(e)),
        }
        let dispatch_started = Instant::now();
        self.net.step_now_ms = self.now_ms();
        let slice = Duration::from_millis((self.slow_turn_ms / 2).max(1));
        self.net.slice_end = dispatch_started + slice;
        self.net.slice_served_client = false;
        // Scratch buffers kept across turns: no allocation per turn on the hot path.
        let mut ready = std::mem::take(&mut self.ready_scratch);
        ready.extend(self.events.iter().map(|e| {
            (
                e.token(),
                e.is_readable() || e.is_read_closed() || e.is_error(),
                e.is_writable(),
            )
        }));
        for (token, readable, writable) in ready.drain(..) {
            self.dispatch(token, readable, writable);
        }
        self.ready_scratch = ready;
        let mut unread = std::mem::take(&mut self.unread_scratch);
        unread.extend(
            self.net
                .conns
                .iter()
                .filter(|(_, c)| c.unread)
                .map(|(key, _)| key),
        );
        for key in unread.drain(..) {
            self.on_readable(key);
        }
        self.unread_scratch = unread;
        self.expire_timers();
        let now = self.now_ms();
        self.node.expire_deadlines(now, &mut self.net);
        if now >= self.next_sweep_ms {
            self.net.sweep(now);
            self.next_sweep_ms = now + self.net.limits.timeouts.sweep_interval_ms();
        }
        self.net.expire_forwards(now);
        self.net.close_pending(&mut self.node);
        // Run before_sleep next (the next turn starts with it), so nothing to track.
        let _ = self.hand_back_unforwarded();
        let connections = self.net.connection_metrics();
        self.node.metrics_mut().set_connections(connections);
        let busy = busy + dispatch_started.elapsed();
        let slow = busy.as_millis() as u64 > self.slow_turn_ms;
        if slow {
            warn!(
                "slow loop turn: {} ms of work (limit {} ms, half the heartbeat interval); {}",
                busy.as_millis(),
                self.slow_turn_ms,
                self.node.last_turn_summary()
            );
        }
        self.node.metrics_mut().on_loop_turn(slow);
        Ok(())
    }

    fn dispatch(&mut self, token: Token, readable: bool, writable: bool) {
        match token {
            PEER_LISTENER => self.accept(ConnKind::PeerIn(None)),
            CLIENT_LISTENER => self.accept(ConnKind::Client),
            REDIS_LISTENER => self.accept(ConnKind::Redis),
            SIGNALS => {
                for signal in self.signals.pending() {
                    info!("received signal {signal}: stopping");
                    self.stopping = true;
                }
            }
            Token(t) if t >= FIRST_CONNECTION_TOKEN => {
                let key = t - FIRST_CONNECTION_TOKEN;
                if !self.net.conns.contains(key) {
                    return;
                }
                if writable {
                    self.on_writable(key);
                }
                if readable {
                    self.on_readable(key);
                }
            }
            Token(_) => {}
        }
    }

    fn accept(&mut self, kind: ConnKind) {
        loop {
            let listener = match kind {
                ConnKind::PeerIn(_) => &self.peer_listener,
                ConnKind::Redis => match &self.redis_listener {
                    Some(listener) => listener,
                    None => return,
                },
                _ => &self.client_listener,
            };
            match listener.accept() {
                Ok((stream, addr)) => self.net.admit(stream, addr, kind),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    // The connection stays in the backlog and an edge-triggered listener
                    // would not report it again: free the spare descriptor, accept the
                    // connection, close it (a clean refusal), take the spare back.
                    if !self.net.refuse_without_descriptors(listener) {
                        return;
                    }
                }
                Err(e) => {
                    warn!("accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn on_writable(&mut self, key: usize) {
        let conn = &mut self.net.conns[key];
        // A connected peer link with a backlog that drains: the peer is reading (a large
        // message such as a snapshot is on its way), so the link is not silent.
        let backlog = match conn.kind {
            ConnKind::PeerOut {
                peer,
                connected: true,
            } => Some((peer, conn.io.pending_output_bytes())),
            _ => None,
        };
        if conn.kind == (ConnKind::Forward { connected: false }) {
            match conn.io.stream().take_error() {
                Ok(None) if conn.io.stream().peer_addr().is_ok() => {
                    conn.kind = ConnKind::Forward { connected: true };
                    self.net.send_unsent(key);
                    self.net.flush(key);
                    return;
                }
                Ok(None) => return,
                Ok(Some(e)) | Err(e) => {
                    self.net.close_later(key, format!("connect failed: {e}"));
                    return;
                }
            }
        }
        if let ConnKind::PeerOut {
            peer,
            connected: false,
        } = conn.kind
        {
            match conn.io.stream().take_error() {
                Ok(None) if conn.io.stream().peer_addr().is_ok() => {
                    conn.kind = ConnKind::PeerOut {
                        peer,
                        connected: true,
                    };
                    info!("peer {peer}: connected");
                    self.node.metrics_mut().on_peer_connected(peer);
                    if let Some(link) = self.net.peers.get_mut(&peer) {
                        link.backoff.reset();
                    }
                }
                Ok(None) => return,
                Ok(Some(e)) | Err(e) => {
                    self.net.close_later(key, format!("connect failed: {e}"));
                    return;
                }
            }
        }
        self.net.flush(key);
        if let Some((peer, before)) = backlog
            && self
                .net
                .conns
                .get(key)
                .is_some_and(|c| c.io.pending_output_bytes() < before)
        {
            self.net.heard_from(peer);
        }
    }

    fn on_readable(&mut self, key: usize) {
        let limit = self.net.read_bytes_per_turn_max;
        let now_ms = self.net.step_now_ms;
        let Some(conn) = self.net.conns.get_mut(key) else {
            return;
        };
        if conn.paused || conn.closing {
            // Left unread (TCP back-pressure) until `maybe_resume` or the close.
            conn.unread = false;
            return;
        }
        if conn.is_client() {
            if self.net.slice_served_client && Instant::now() >= self.net.slice_end {
                conn.unread = true;
                return;
            }
            self.net.slice_served_client = true;
        }
        let outcome = match conn.io.read_available(limit) {
            Ok(outcome) => outcome,
            Err(e) => {
                self.net.close_later(key, format!("read error: {e}"));
                return;
            }
        };
        conn.unread = !outcome.drained && !outcome.closed;
        if outcome.bytes > 0 {
            conn.activity.on_traffic(now_ms);
        }
        let input_before = conn.io.input().len();
        let kind = conn.kind;
        if let ConnKind::PeerIn(Some(from)) = kind {
            self.node
                .metrics_mut()
                .on_message_received(from, outcome.bytes as u64);
            if outcome.bytes > 0 {
                self.net.heard_from(from);
            }
        }
        let result = match kind {
            ConnKind::Client => self.decode_client_frames(key),
            ConnKind::PeerIn(_) | ConnKind::PeerOut { .. } => self.decode_peer_frames(key),
            ConnKind::Redis => self.decode_redis_commands(key),
            ConnKind::Forward { .. } => self.decode_forward_frames(key),
        };
        if let Err(reason) = result {
            self.net.close_later(key, reason);
            return;
        }
        if let Some(conn) = self.net.conns.get_mut(key)
            && conn.is_client()
        {
            let left = conn.io.input().len();
            let paused = conn.paused;
            conn.activity
                .on_decoded(now_ms, left < input_before, left > 0, paused);
        }
        if outcome.closed {
            self.net
                .close_later(key, "closed by the remote side".into());
        }
    }

    fn decode_client_frames(&mut self, key: usize) -> Result<(), String> {
        let now_ms = self.now_ms();
        let generation = self.net.conns[key].generation;
        let client = ClientRef { key, generation };
        let limits = self.net.limits;
        for i in 0..FRAMES_PER_TURN_MAX {
            let conn = &mut self.net.conns[key];
            if !conn.has_room(&limits) {
                self.net.pause(key);
                return Ok(());
            }
            if i % REQUESTS_PER_SLICE_CHECK == REQUESTS_PER_SLICE_CHECK - 1
                && Instant::now() >= self.net.slice_end
            {
                break;
            }
            let body = match conn.io.next_frame(&self.net.frame) {
                Ok(Some(body)) => body,
                Ok(None) => return Ok(()),
                Err(e) => return Err(format!("bad frame: {e}")),
            };
            let (request, command_bytes) = client_codec::decode_request_with_command_bytes(body)
                .map_err(|e| format!("bad request: {e}"))?;
            conn.requests_owed += 1;
            if let Some(response) =
                self.node
                    .on_client_request(client, request, command_bytes, now_ms)
            {
                self.net.reply(client, response);
            }
        }
        self.net.conns[key].unread = true;
        Ok(())
    }

    fn decode_redis_commands(&mut self, key: usize) -> Result<(), String> {
        let limits = self.net.limits;
        let mut frames_left = true;
        for i in 0..FRAMES_PER_TURN_MAX {
            let conn = &mut self.net.conns[key];
            if !conn.has_room(&limits) {
                self.net.pause(key);
                frames_left = false;
                break;
            }
            if i % REQUESTS_PER_SLICE_CHECK == REQUESTS_PER_SLICE_CHECK - 1
                && Instant::now() >= self.net.slice_end
            {
                break;
            }
            let Some(redis) = conn.redis.as_mut() else {
                return Ok(());
            };
            match self.net.resp.decode(conn.io.input()) {
                Ok(Some((consumed, args))) => {
                    conn.io.consume(consumed);
                    redis.on_command(args);
                }
                Ok(None) => {
                    frames_left = false;
                    break;
                }
                Err(e) => {
                    let reply = format!("-ERR Protocol error: {e}\r\n");
                    if conn.io.queue(reply.as_bytes()).is_ok() {
                        self.net.flush(key);
                    }
                    return Err(format!("bad RESP: {e}"));
                }
            }
        }
        self.pump_redis(key);
        if frames_left && let Some(conn) = self.net.conns.get_mut(key) {
            conn.unread = true;
        }
        Ok(())
    }

    /// Sends what the Redis connection `key` asks for (answers the node gives at once
    /// are fed back until it asks nothing more), then queues its finished replies.
    fn pump_redis(&mut self, key: usize) {
        let now_ms = self.now_ms();
        let Some(generation) = self.net.conns.get(key).map(|c| c.generation) else {
            return;
        };
        let client = ClientRef { key, generation };
        loop {
            let submits = match self.net.conns.get_mut(key).and_then(|c| c.redis.as_mut()) {
                Some(redis) => redis.take_submits(),
                None => return,
            };
            if submits.is_empty() {
                break;
            }
            for submit in submits {
                match submit.target {
                    Target::Local => {
                        match self
                            .node
                            .on_client_request(client, submit.request, None, now_ms)
                        {
                            Some(response) => self.net.reply(client, response),
                            None => self.net.redis_proposed = true,
                        }
                    }
                    Target::Forward(addr) => {
                        let now_ms = self.now_ms();
                        let Some(request) = self.net.forward(client, submit.request, &addr, now_ms)
                        else {
                            continue;
                        };
                        match self
                            .node
                            .on_leader_unreachable(client, request, &addr, now_ms)
                        {
                            Some(response) => self.net.reply(client, response),
                            None => self.net.redis_proposed = true,
                        }
                    }
                }
            }
        }
        self.net.write_redis_replies(key);
    }

    fn decode_forward_frames(&mut self, key: usize) -> Result<(), String> {
        for _ in 0..FRAMES_PER_TURN_MAX {
            let conn = &mut self.net.conns[key];
            let response = match conn.io.next_frame(&self.net.frame) {
                Ok(Some(body)) => client_codec::decode_response(body)
                    .map_err(|e| format!("bad response from the leader: {e}"))?,
                Ok(None) => return Ok(()),
                Err(e) => return Err(format!("bad frame from the leader: {e}")),
            };
            if let Some(forwarded) = self.net.forward.pending.remove(&response.request_id) {
                self.net.forward.deadlines.cancel(forwarded.timer);
                let response = Response {
                    request_id: forwarded.request_id,
                    body: response.body,
                };
                self.net.reply(forwarded.client, response);
            }
        }
        self.net.conns[key].unread = true;
        Ok(())
    }

    /// Gives the node the forwarded requests that were never sent on a link that
    /// closed: it redirects them to a leader it now knows, or parks them until one is
    /// elected (see [`Node::on_leader_unreachable`]).
    ///
    /// Returns whether it handed any back: the node may have proposed them, so the loop
    /// runs `before_sleep` again without sleeping.
    fn hand_back_unforwarded(&mut self) -> bool {
        if self.net.forward.handed_back.is_empty() {
            return false;
        }
        let now_ms = self.now_ms();
        for (client, request, addr) in std::mem::take(&mut self.net.forward.handed_back) {
            // The Redis connection may have closed meanwhile: nothing to serve it for.
            let open = self
                .net
                .conns
                .get(client.key)
                .is_some_and(|c| c.generation == client.generation && !c.closing);
            if !open {
                continue;
            }
            if let Some(response) = self
                .node
                .on_leader_unreachable(client, request, &addr, now_ms)
            {
                self.net.reply(client, response);
            }
        }
        self.pump_touched_redis();
        self.net.flush_dirty();
        true
    }

    fn pump_touched_redis(&mut self) {
        let mut touched = std::mem::take(&mut self.net.redis_touched);
        touched.sort_unstable();
        touched.dedup();
        for key in touched {
            self.pump_redis(key);
        }
    }

    fn decode_peer_frames(&mut self, key: usize) -> Result<(), String> {
        for _ in 0..FRAMES_PER_TURN_MAX {
            let conn = &mut self.net.conns[key];
            let frame = match conn.io.next_frame(&self.net.frame) {
                Ok(Some(body)) => peer_codec::decode(body),
                Ok(None) => return Ok(()),
                Err(e) => Err(e),
            };
            let frame = frame.map_err(|e: DecodeError| format!("bad peer frame: {e}"))?;
            match (conn.kind, frame) {
                (
                    ConnKind::PeerIn(None),
                    PeerFrame::Handshake {
                        cluster_id,
                        node_id,
                        peer_addr,
                    },
                ) => {
                    if cluster_id != self.net.cluster_id {
                        return Err(format!(
                            "handshake from node {node_id} of cluster {cluster_id}, we are cluster {}",
                            self.net.cluster_id
                        ));
                    }
                    if node_id == raft::NO_NODE || node_id == self.net.node_id {
                        return Err(format!("handshake with node id {node_id}"));
                    }
                    if !conn.closing {
                        self.net.handshake_count = self.net.handshake_count.saturating_sub(1);
                    }
                    conn.kind = ConnKind::PeerIn(Some(node_id));
                    info!("peer {node_id}: inbound link up (it listens on {peer_addr})");
                    self.net.heard_from(node_id);
                    match peer_addr.parse::<SocketAddr>() {
                        Ok(addr) => {
                            self.net.announced.insert(node_id, addr);
                        }
                        Err(_) => warn!("peer {node_id} announced a bad address {peer_addr:?}"),
                    }
                }
                (ConnKind::PeerIn(Some(from)), PeerFrame::Message(message)) => {
                    if message.from != from || message.to != self.net.node_id {
                        return Err(format!(
                            "message from {} to {} on the link of node {from}",
                            message.from, message.to
                        ));
                    }
                    self.node.on_peer_message(message);
                }
                (kind, frame) => {
                    return Err(format!(
                        "unexpected {} on a {kind:?} link",
                        frame_name(&frame)
                    ));
                }
            }
        }
        self.net.conns[key].unread = true;
        Ok(())
    }

    fn expire_timers(&mut self) {
        let now = self.now_ms();
        let mut expired = Vec::new();
        self.timers.expire(now, &mut expired);
        for event in expired {
            match event {
                TimerEvent::Tick => {
                    self.node.tick();
                    self.timers.schedule(now + self.tick_ms, TimerEvent::Tick);
                }
                TimerEvent::Reconnect(peer) => {
                    if let Some(link) = self.net.peers.get_mut(&peer) {
                        link.reconnect_pending = false;
                    }
                    self.net.dial(peer);
                }
            }
        }
        let now = self.now_ms();
        self.net.recycle_silent_links(now);
        let wanted: Vec<NodeId> = self
            .net
            .peers
            .iter()
            .filter(|(_, link)| link.conn.is_none() && !link.reconnect_pending)
            .map(|(id, _)| *id)
            .collect();
        for peer in wanted {
            let random = self.net.rng.next_u64();
            if let Some(link) = self.net.peers.get_mut(&peer) {
                let delay = link.backoff.next_delay_ms(random);
                link.reconnect_pending = true;
                self.timers
                    .schedule(now + delay, TimerEvent::Reconnect(peer));
            }
        }
    }

    fn before_sleep(&mut self) -> Result<(), RunError> {
        for _ in 0..REDIS_ROUNDS_MAX {
            self.net.redis_proposed = false;
            self.node
                .before_sleep(&mut self.net)
                .map_err(RunError::Storage)?;
            self.pump_touched_redis();
            if !self.net.redis_proposed {
                break;
            }
        }
        self.net.flush_dirty();
        self.follow_membership();
        self.net.close_pending(&mut self.node);
        self.handed_back = self.hand_back_unforwarded();
        Ok(())
    }

    /// Adjusts the peer links to the configuration in force, and stops the loop
    /// once this node knows it was removed from the cluster.
    fn follow_membership(&mut self) {
        if let Some(wanted) = self.node.wanted_peers() {
            self.net.set_peers(&wanted);
        }
        if !self.stopping
            && let Some(index) = self.node.removed_at()
        {
            info!(
                "this node was removed from the cluster by the configuration committed at \
                 index {index}: stopping"
            );
            if let Err(e) = self.node.record_removal(index) {
                warn!("cannot record the removal in the data directory: {e}");
            }
            self.stopping = true;
        }
    }
}

fn frame_name(frame: &PeerFrame) -> &'static str {
    match frame {
        PeerFrame::Handshake { .. } => "handshake",
        PeerFrame::Message(_) => "message",
    }
}

/// Why the loop stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// `poll` failed.
    #[error("poll failed: {0}")]
    Poll(io::Error),
    /// The log could not be written or synced: the node stops instead of acknowledging.
    #[error("storage failure: {0}")]
    Storage(String),
}

impl Net {
    fn add(
        &mut self,
        mut stream: TcpStream,
        kind: ConnKind,
        interest: Interest,
    ) -> io::Result<usize> {
        stream.set_nodelay(true)?;
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        self.poll
            .registry()
            .register(&mut stream, token_of(key), interest)?;
        let generation = self.next_generation;
        self.next_generation += 1;
        entry.insert(Conn {
            kind,
            io: Connection::new(stream, self.output_bytes_max),
            generation,
            writable: interest.is_writable(),
            unread: false,
            redis: None,
            activity: Activity::new(self.step_now_ms),
            requests_owed: 0,
            paused: false,
            closing: false,
        });
        Ok(key)
    }

    fn dial(&mut self, peer: NodeId) {
        let Some(link) = self.peers.get(&peer) else {
            return;
        };
        if link.conn.is_some() {
            return;
        }
        let addr = link.addr;
        let result = TcpStream::connect(addr).and_then(|stream| {
            self.add(
                stream,
                ConnKind::PeerOut {
                    peer,
                    connected: false,
                },
                Interest::READABLE | Interest::WRITABLE,
            )
        });
        match result {
            Ok(key) => {
                let handshake = PeerFrame::Handshake {
                    cluster_id: self.cluster_id,
                    node_id: self.node_id,
                    peer_addr: self.peer_addr.clone(),
                };
                let codec = self.frame;
                let conn = &mut self.conns[key];
                // Queued now, written once the connect completes (first WRITABLE event).
                let queued = conn
                    .io
                    .queue_frame(&codec, |out| peer_codec::encode(&handshake, out));
                if queued.is_err() {
                    self.close_later(key, "handshake does not fit the output buffer".into());
                }
                let now = self.now_ms();
                if let Some(link) = self.peers.get_mut(&peer) {
                    link.conn = Some(key);
                    link.dialed_ms = now;
                    link.sent_since_heard = false;
                }
            }
            Err(e) => debug!("peer {peer}: dial {addr} failed: {e}"),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Something arrived from `peer`, or it read a backlog we are sending it: its
    /// links are alive.
    fn heard_from(&mut self, peer: NodeId) {
        let now = self.now_ms();
        if let Some(link) = self.peers.get_mut(&peer) {
            link.heard_ms = now;
            link.sent_since_heard = false;
            link.recycled = false;
        }
    }

    /// Closes (for a redial with the usual backoff) every outbound peer link that
    /// did not connect within `silence_ms`, or that carried messages to its peer while
    /// nothing came back for `silence_ms`, and the silent inbound links of that peer.
    ///
    /// Why: a connection behind a route that dropped packets stays open, and after the
    /// route heals TCP resends only when its retransmission backoff expires (seconds
    /// after a partition of a few seconds); a fresh connection carries traffic after
    /// one round trip. A peer answers every message we send within an election
    /// timeout (heartbeat responses, votes), so silence that long means a dead link.
    fn recycle_silent_links(&mut self, now_ms: u64) {
        let silence_ms = self.silence_ms;
        let mut silent = Vec::new();
        for (&peer, link) in &self.peers {
            let Some(key) = link.conn else {
                continue;
            };
            let quiet_since = link.heard_ms.max(link.dialed_ms);
            if now_ms.saturating_sub(quiet_since) < silence_ms {
                continue;
            }
            let connected = self.conns.get(key).is_some_and(|c| {
                matches!(
                    c.kind,
                    ConnKind::PeerOut {
                        connected: true,
                        ..
                    }
                )
            });
            if !connected {
                silent.push((peer, key, "the connect did not complete"));
            } else if link.sent_since_heard {
                silent.push((peer, key, "nothing came back"));
            }
        }
        for (peer, key, what) in silent {
            let reason = format!("{what} within {silence_ms} ms; redialing");
            let Some(link) = self.peers.get_mut(&peer) else {
                continue;
            };
            if link.recycled {
                debug!("peer {peer}: link still silent: {reason}");
            } else {
                info!("peer {peer}: link silent: {reason}");
            }
            link.recycled = true;
            link.sent_since_heard = false;
            self.close_later(key, reason.clone());
            let inbound: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| c.kind == ConnKind::PeerIn(Some(peer)))
                .map(|(k, _)| k)
                .collect();
            for key in inbound {
                self.close_later(key, format!("silent for {silence_ms} ms"));
            }
        }
    }

    /// Keeps links to exactly the `wanted` peers: dials new ones (at the given
    /// address, else the one they announced), redials one whose address changed,
    /// and closes the links of peers no longer wanted.
    fn set_peers(&mut self, wanted: &[WantedPeer]) {
        let unwanted: Vec<NodeId> = self
            .peers
            .keys()
            .filter(|id| !wanted.iter().any(|(w, _)| w == *id))
            .copied()
            .collect();
        for id in unwanted {
            if let Some(link) = self.peers.remove(&id) {
                info!("peer {id}: no longer a member, dropping its link");
                if let Some(key) = link.conn {
                    self.close_later(key, "peer is no longer a member".into());
                }
            }
        }
        for &(id, addr) in wanted {
            let Some(addr) = addr.or_else(|| self.announced.get(&id).copied()) else {
                if !self.peers.contains_key(&id) {
                    debug!("peer {id}: no address known yet");
                }
                continue;
            };
            match self.peers.get_mut(&id) {
                Some(link) if link.addr == addr => continue,
                Some(link) => {
                    info!("peer {id}: address {} -> {addr}", link.addr);
                    link.addr = addr;
                    if let Some(key) = link.conn.take() {
                        self.close_later(key, "peer address changed".into());
                    }
                }
                None => {
                    info!("peer {id}: linking to {addr}");
                    let link = PeerLink {
                        addr,
                        conn: None,
                        backoff: Backoff::new(RECONNECT_MIN_MS, RECONNECT_MAX_MS),
                        reconnect_pending: false,
                        dialed_ms: 0,
                        heard_ms: 0,
                        sent_since_heard: false,
                        recycled: false,
                    };
                    self.peers.insert(id, link);
                }
            }
            self.dial(id);
        }
    }

    fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let ConnKind::PeerOut {
            connected: false, ..
        }
        | ConnKind::Forward { connected: false } = conn.kind
        {
            return;
        }
        let before = conn.io.pending_output_bytes();
        match conn.io.flush() {
            Ok(FlushOutcome::Done) => {
                if conn.writable {
                    conn.writable = false;
                    let token = token_of(key);
                    if let Err(e) = self.poll.registry().reregister(
                        conn.io.stream_mut(),
                        token,
                        Interest::READABLE,
                    ) {
                        self.close_later(key, format!("reregister failed: {e}"));
                    }
                }
            }
            Ok(FlushOutcome::Partial) => {
                if !conn.writable {
                    conn.writable = true;
                    let token = token_of(key);
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if let Err(e) =
                        self.poll
                            .registry()
                            .reregister(conn.io.stream_mut(), token, interest)
                    {
                        self.close_later(key, format!("reregister failed: {e}"));
                    }
                }
            }
            Err(e) => self.close_later(key, format!("write error: {e}")),
        }
        if let Some(conn) = self.conns.get_mut(key)
            && conn.io.pending_output_bytes() < before
        {
            conn.activity.on_traffic(self.step_now_ms);
            self.maybe_resume(key);
        }
    }

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for key in dirty.drain(..) {
            self.flush(key);
        }
        self.dirty = dirty;
    }

    fn close_later(&mut self, key: usize, reason: String) {
        if let Some(conn) = self.conns.get_mut(key) {
            if conn.closing {
                return;
            }
            conn.closing = true;
            if conn.kind == ConnKind::PeerIn(None) {
                self.handshake_count = self.handshake_count.saturating_sub(1);
            }
        }
        self.closing.push((key, reason));
    }

    /// Closes the oldest inbound peer connection still waiting for its handshake, so a
    /// new one (perhaps a member's, which identifies itself at once) gets its slot:
    /// junk connections cannot lock members out of the peer port. False when none accepted
    /// before this turn waits.
    fn evict_oldest_handshake(&mut self) -> bool {
        while let Some(&(key, generation, turn)) = self.handshake_queue.front() {
            if turn == self.turn {
                return false;
            }
            self.handshake_queue.pop_front();
            let waiting = self.conns.get(key).is_some_and(|c| {
                c.generation == generation && c.kind == ConnKind::PeerIn(None) && !c.closing
            });
            if waiting {
                let max = self.limits.handshakes_max;
                let reason = format!(
                    "no handshake yet and limits.peer_handshakes_max ({max}) reached: \
                     making room for a newer connection"
                );
                self.on_refused(&format!("on the peer port: {reason}"));
                self.close_later(key, reason);
                return true;
            }
        }
        false
    }

    /// Closes client connection `key` for exceeding `limits.output_bytes_max`.
    fn close_over_limit(&mut self, key: usize, reason: String) {
        if self.conns.get(key).is_some_and(|c| !c.closing) {
            self.counts.output_limit_disconnects += 1;
            self.close_later(key, reason);
        }
    }

    /// Back-pressure: stop reading client connection `key` (see the module docs).
    fn pause(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key)
            && !conn.paused
        {
            conn.paused = true;
            conn.unread = false;
            self.counts.reads_paused += 1;
        }
    }

    /// Reads paused connection `key` again once it is back under the soft limits.
    fn maybe_resume(&mut self, key: usize) {
        let limits = self.limits;
        if let Some(conn) = self.conns.get_mut(key)
            && conn.paused
            && conn.has_room(&limits)
        {
            conn.paused = false;
            // Edge-triggered: the input that waited will not be reported again.
            conn.unread = true;
        }
    }

    /// Admits an accepted connection, or closes it at once when its limit is reached.
    fn admit(&mut self, stream: TcpStream, addr: SocketAddr, kind: ConnKind) {
        let peer = matches!(kind, ConnKind::PeerIn(_));
        let (count, max, key_name) = if peer {
            let max = self.limits.handshakes_max;
            (self.handshake_count, max, "limits.peer_handshakes_max")
        } else {
            let max = self.limits.connections_max;
            (self.client_count, max, "limits.client_connections_max")
        };
        if count >= max && !(peer && self.evict_oldest_handshake()) {
            drop(stream);
            self.on_refused(&format!("from {addr}: {key_name} ({max}) reached"));
            return;
        }
        match self.add(stream, kind, Interest::READABLE) {
            Err(e) => warn!("cannot register connection from {addr}: {e}"),
            Ok(key) => {
                if peer {
                    self.handshake_count += 1;
                    let generation = self.conns[key].generation;
                    self.handshake_queue.push_back((key, generation, self.turn));
                    if self.handshake_queue.len() > 2 * self.limits.handshakes_max {
                        let conns = &self.conns;
                        self.handshake_queue.retain(|&(key, generation, _)| {
                            conns.get(key).is_some_and(|c| {
                                c.generation == generation && c.kind == ConnKind::PeerIn(None)
                            })
                        });
                    }
                } else {
                    self.client_count += 1;
                }
                if kind == ConnKind::Redis {
                    self.conns[key].redis = Some(Box::new(RedisConn::new()));
                }
                debug!("accepted {kind:?} connection from {addr}");
            }
        }
    }

    /// `accept` failed for want of descriptors: frees the spare one to accept and close
    /// the waiting connection. False when nothing more can be accepted now.
    fn refuse_without_descriptors(&mut self, listener: &TcpListener) -> bool {
        let Some(spare) = self.spare_fd.take() else {
            self.on_refused("(out of file descriptors, no spare descriptor)");
            return false;
        };
        drop(spare);
        let accepted = listener.accept();
        // Taken back after the refused connection closed, so its descriptor is free.
        let accepted = accepted.map(|(stream, addr)| {
            drop(stream);
            addr
        });
        self.spare_fd = File::open("/dev/null").ok();
        match accepted {
            Ok(addr) => {
                self.on_refused(&format!("from {addr}: out of file descriptors"));
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) => {
                self.on_refused(&format!("(out of file descriptors: {e})"));
                false
            }
        }
    }

    fn on_refused(&mut self, what: &str) {
        self.counts.accepts_refused += 1;
        if let Some(suppressed) = self.refusals.on_refusal(self.step_now_ms) {
            let more = if suppressed > 0 {
                format!("; {suppressed} more refused since the last report")
            } else {
                String::new()
            };
            warn!("refusing connection {what}{more} (net.accepts_refused counts them)");
        }
    }

    /// Closes the connections whose timeout passed (see [`conn_limits`]); about once a
    /// second, so its O(connections) cost is not paid every turn.
    fn sweep(&mut self, now_ms: u64) {
        let timeouts = self.limits.timeouts;
        let expired: Vec<(usize, conn_limits::Expiry)> = self
            .conns
            .iter()
            .filter(|(_, conn)| !conn.closing)
            .filter_map(|(key, conn)| {
                let busy = conn.owed().0 > 0;
                let expiry = conn.activity.expiry(conn.watch(), busy, &timeouts, now_ms);
                expiry.map(|expiry| (key, expiry))
            })
            .collect();
        for (key, expiry) in expired {
            let counter = match expiry {
                conn_limits::Expiry::Idle => &mut self.counts.idle_timeouts,
                conn_limits::Expiry::PartialRequest => &mut self.counts.partial_request_timeouts,
                conn_limits::Expiry::Handshake => &mut self.counts.handshake_timeouts,
            };
            *counter += 1;
            self.close_later(key, expiry.reason().into());
        }
        if let Some(suppressed) = self.refusals.take_suppressed(now_ms) {
            warn!("{suppressed} more connections refused since the last report");
        }
    }

    /// The `net.*` metrics as of now.
    fn connection_metrics(&self) -> ConnectionMetrics {
        ConnectionMetrics {
            client_connections: self.client_count as u64,
            peer_handshakes: self.handshake_count as u64,
            ..self.counts
        }
    }

    fn close_pending(&mut self, node: &mut Node) {
        for (key, reason) in std::mem::take(&mut self.closing) {
            let Some(mut conn) = self.conns.try_remove(key) else {
                continue;
            };
            let _ = self.poll.registry().deregister(conn.io.stream_mut());
            if conn.is_client() {
                self.client_count = self.client_count.saturating_sub(1);
            }
            match conn.kind {
                ConnKind::Client | ConnKind::Redis => {
                    debug!("client connection closed: {reason}")
                }
                ConnKind::Forward { .. } => {
                    info!("forwarding link to the leader closed: {reason}");
                    self.on_forward_closed(key);
                }
                ConnKind::PeerIn(from) => info!("inbound peer link from {from:?} closed: {reason}"),
                ConnKind::PeerOut { peer, connected } => {
                    if connected {
                        info!("peer {peer}: link closed: {reason}");
                        node.metrics_mut().on_peer_disconnected(peer);
                    } else {
                        debug!("peer {peer}: connect failed: {reason}");
                    }
                    if let Some(link) = self.peers.get_mut(&peer)
                        && link.conn == Some(key)
                    {
                        link.conn = None;
                    }
                }
            }
            if matches!(conn.kind, ConnKind::Client | ConnKind::Redis) {
                node.on_client_closed(ClientRef {
                    key,
                    generation: conn.generation,
                });
            }
        }
    }
}

impl Net {
    /// Sends `request` of Redis connection `client` to the leader at `addr` over the
    /// forwarding link, (re)dialing it if it goes elsewhere or does not exist. The
    /// request gets the deadline of a local one (`limits.request_timeout_ms` from
    /// `now_ms`). While the link connects, the request waits unencoded.
    ///
    /// Returns the request, unsent, when the link cannot even be dialed.
    fn forward(
        &mut self,
        client: ClientRef,
        request: Request,
        addr: &str,
        now_ms: u64,
    ) -> Option<Request> {
        let request_id = request.request_id;
        if let Some((key, link_addr)) = &self.forward.conn
            && link_addr != addr
        {
            self.close_later(*key, format!("the leader moved to {addr}"));
            self.forward.conn = None;
        }
        // A link marked for closing this turn takes nothing more: what it carried is
        // answered when it closes, and a new link carries this request.
        if let Some((key, _)) = &self.forward.conn
            && self.conns.get(*key).is_none_or(|c| c.closing)
        {
            self.forward.conn = None;
        }
        if self.forward.conn.is_none() {
            let dialed = addr
                .parse::<SocketAddr>()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
                .and_then(TcpStream::connect)
                .and_then(|stream| {
                    let kind = ConnKind::Forward { connected: false };
                    self.add(stream, kind, Interest::READABLE | Interest::WRITABLE)
                });
            match dialed {
                Ok(key) => {
                    self.forward.conn = Some((key, addr.to_string()));
                    self.forward.addrs.insert(key, addr.to_string());
                }
                Err(e) => {
                    debug!("cannot dial the leader {addr}: {e}");
                    return Some(request);
                }
            }
        }
        let (key, _) = self.forward.conn.clone()?;
        self.forward.next_request_id += 1;
        let id = self.forward.next_request_id;
        let deadline_ms = now_ms + self.forward.request_timeout_ms;
        let timer = self.forward.deadlines.schedule(deadline_ms, id);
        let connected = self
            .conns
            .get(key)
            .is_some_and(|c| c.kind == ConnKind::Forward { connected: true });
        let forwarded = Forwarded {
            link: key,
            client,
            request_id,
            write: changes_state(&request.body),
            unsent: Some(request.body),
            timer,
        };
        self.forward.pending.insert(id, forwarded);
        if connected {
            self.send_forwarded(key, id);
        } else {
            self.forward.unsent.push(id);
        }
        None
    }

    /// Writes the requests that waited for forwarding link `key` to connect.
    fn send_unsent(&mut self, key: usize) {
        for id in std::mem::take(&mut self.forward.unsent) {
            if self.forward.pending.get(&id).is_some_and(|f| f.link == key) {
                self.send_forwarded(key, id);
            } else if self.forward.pending.contains_key(&id) {
                self.forward.unsent.push(id);
            }
        }
    }

    /// Encodes forwarded request `id` onto link `key`.
    fn send_forwarded(&mut self, key: usize, id: u64) {
        let Some(forwarded) = self.forward.pending.get_mut(&id) else {
            return;
        };
        let Some(body) = forwarded.unsent.take() else {
            return;
        };
        let request = Request {
            request_id: id,
            body,
        };
        let codec = self.frame;
        let queued = self.conns.get_mut(key).map(|conn| {
            conn.io
                .queue_frame(&codec, |out| client_codec::encode_request(&request, out))
        });
        let body = match queued {
            Some(Ok(())) => {
                self.dirty.push(key);
                return;
            }
            // Not sent, so a definite refusal; the link carries on.
            Some(Err(QueueFrameError::TooLarge(e))) => {
                ResponseBody::Error(format!("request not forwarded: {e}"))
            }
            _ => ResponseBody::Unavailable(
                "the link to the leader is congested; the request was not sent".into(),
            ),
        };
        if let Some(forwarded) = self.forward.pending.remove(&id) {
            self.forward.deadlines.cancel(forwarded.timer);
            let response = Response {
                request_id: forwarded.request_id,
                body,
            };
            self.reply(forwarded.client, response);
        }
    }

    /// Answers every forwarded request whose deadline passed by `now_ms`: a write that
    /// was sent has an unknown outcome (the leader may still apply it; the Redis
    /// connection's write session makes a retry safe), a read or an unsent request
    /// gets a definite error.
    fn expire_forwards(&mut self, now_ms: u64) {
        let mut expired = Vec::new();
        self.forward.deadlines.expire(now_ms, &mut expired);
        for &id in &expired {
            let Some(forwarded) = self.forward.pending.remove(&id) else {
                continue;
            };
            let timeout = self.forward.request_timeout_ms;
            let message = if forwarded.unsent.is_some() {
                let addr = self.forward.addrs.get(&forwarded.link).cloned();
                let addr = addr.unwrap_or_default();
                // A link that has not connected in a whole request timeout will not:
                // close it, so the requests behind this one go back to the node (and
                // to another leader) instead of expiring here one by one.
                self.close_later(
                    forwarded.link,
                    format!("did not connect to {addr} within {timeout} ms"),
                );
                format!(
                    "the link to the leader {addr} did not connect within {timeout} ms \
                     (limits.request_timeout_ms); the request was not sent, retry"
                )
            } else if forwarded.write {
                format!(
                    "no answer from the leader within {timeout} ms (limits.request_timeout_ms); \
                     outcome unknown"
                )
            } else {
                format!(
                    "no answer from the leader within {timeout} ms (limits.request_timeout_ms); \
                     the read was not served, retry"
                )
            };
            let response = Response {
                request_id: forwarded.request_id,
                body: ResponseBody::Unavailable(message),
            };
            self.reply(forwarded.client, response);
        }
        if !expired.is_empty() {
            let pending = &self.forward.pending;
            self.forward.unsent.retain(|id| pending.contains_key(id));
        }
    }

    /// The forwarding link `key` closed: a request written on it has an unknown outcome
    /// if it is a write (a read simply failed); one never written is handed back to the
    /// node ([`EventLoop::hand_back_unforwarded`]), as nothing of it was sent.
    fn on_forward_closed(&mut self, key: usize) {
        if self.forward.conn.as_ref().is_some_and(|(k, _)| *k == key) {
            self.forward.conn = None;
        }
        let addr = self.forward.addrs.remove(&key).unwrap_or_default();
        let lost: Vec<u64> = self
            .forward
            .pending
            .iter()
            .filter(|(_, forwarded)| forwarded.link == key)
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            let Some(forwarded) = self.forward.pending.remove(&id) else {
                continue;
            };
            self.forward.deadlines.cancel(forwarded.timer);
            let request_id = forwarded.request_id;
            let message = match forwarded.unsent {
                Some(body) => {
                    let request = Request { request_id, body };
                    let back = (forwarded.client, request, addr.clone());
                    self.forward.handed_back.push(back);
                    continue;
                }
                None if forwarded.write => "the link to the leader closed; outcome unknown",
                None => "the link to the leader closed before the read was answered; retry",
            };
            let body = ResponseBody::Unavailable(message.into());
            self.reply(forwarded.client, Response { request_id, body });
        }
        let pending = &self.forward.pending;
        self.forward.unsent.retain(|id| pending.contains_key(id));
    }

    /// Queues the finished in-order replies of Redis connection `key`.
    fn write_redis_replies(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(redis) = conn.redis.as_mut() else {
            return;
        };
        let mut quit = false;
        let before = conn.io.pending_output_bytes();
        // Encoded straight into the output buffer: the hard limit sees the bytes as
        // they are produced, and there is no second copy.
        let queued = conn.io.queue_with(|out| quit = redis.take_replies(out));
        if let Err(e) = queued {
            self.close_over_limit(key, format!("client is not reading: {e}"));
            return;
        }
        if conn.io.pending_output_bytes() > before {
            self.dirty.push(key);
        }
        if quit {
            self.flush(key);
            self.close_later(key, "QUIT".into());
            return;
        }
        self.maybe_resume(key);
    }
}

impl Outbox for Net {
    fn send(&mut self, message: &Message) -> usize {
        log::trace!("send {message:?}");
        let Some(link) = self.peers.get_mut(&message.to) else {
            return 0;
        };
        let Some(key) = link.conn else {
            return 0;
        };
        link.sent_since_heard = true;
        let codec = self.frame;
        let Some(conn) = self.conns.get_mut(key) else {
            return 0;
        };
        if let ConnKind::PeerOut {
            connected: false, ..
        } = conn.kind
        {
            return 0;
        }
        let before = conn.io.pending_output_bytes();
        match conn
            .io
            .queue_frame(&codec, |out| peer_codec::encode_message(message, out))
        {
            Ok(()) => {
                self.dirty.push(key);
                conn.io.pending_output_bytes() - before
            }
            // Entries are bounded (limits.entry_bytes_max) and batches split below the
            // frame limit, so this is not expected; dropping is safe: Raft retransmits.
            Err(QueueFrameError::TooLarge(e)) => {
                warn!("dropped a message to {}: {e}", message.to);
                0
            }
            Err(e) => {
                self.close_later(key, format!("peer is not reading: {e}"));
                0
            }
        }
    }

    fn reply(&mut self, client: ClientRef, response: Response) {
        let codec = self.frame;
        let Some(conn) = self.conns.get_mut(client.key) else {
            return;
        };
        if conn.generation != client.generation {
            return;
        }
        if let Some(redis) = conn.redis.as_mut() {
            redis.on_response(response);
            self.redis_touched.push(client.key);
            // The hard limit counts the finished replies held for ordering too.
            let owed = conn.io.pending_output_bytes() + redis.reply_bytes();
            if owed > self.output_bytes_max {
                let max = self.output_bytes_max;
                let reason = format!("client is not reading: {owed} reply bytes owed > {max}");
                self.close_over_limit(client.key, reason);
            }
            return;
        }
        conn.requests_owed = conn.requests_owed.saturating_sub(1);
        let mut queued = conn
            .io
            .queue_frame(&codec, |out| client_codec::encode_response(&response, out));
        if let Err(QueueFrameError::TooLarge(e)) = queued {
            // A reply too large for a frame (a Txn reading many large values): the
            // client gets an error reply in its place.
            let refusal = Response {
                request_id: response.request_id,
                body: ResponseBody::Error(format!("reply not sent: {e}")),
            };
            queued = conn
                .io
                .queue_frame(&codec, |out| client_codec::encode_response(&refusal, out));
        }
        match queued {
            Ok(()) => {
                self.dirty.push(client.key);
                self.maybe_resume(client.key);
            }
            Err(e) => {
                self.close_over_limit(client.key, format!("client is not reading: {e}"));
            }
        }
    }

    fn flush_now(&mut self) {
        self.flush_dirty();
    }
}
