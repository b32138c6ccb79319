//! The network half of the loop: the connections (a slab of sockets with their buffers
//! and per-kind state), accepting within the connection limits, flushing, closing, and
//! the [`Outbox`] the node sends its messages and replies through. Peer links
//! ([`super::peer_links`]) and the forwarding link ([`super::forward`]) add their
//! methods to [`Net`] in their own modules.
//!
//! Invariants: a connection's token is its slab key plus [`FIRST_CONNECTION_TOKEN`], and
//! each connection has a generation number, so a reply for a closed connection is never
//! delivered to a new one that reused the slab slot. A connection is closed only at the
//! end of a step (`close_later`, then `close_pending`), so no method closes a connection
//! another one is still using. WRITABLE interest is registered only while output is
//! left after a partial write, or while an outbound connect completes.
//!
//! Connection limits (docs/CONFIG.md `[limits]`): client connections (client, Redis
//! and HTTP ports together) and inbound peer connections awaiting their handshake have separate
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
//! `output_bytes_soft_max` bytes (unwritten output plus finished Redis or HTTP replies
//! held for ordering); it is read again once replies drain (`maybe_resume`). A reply that would
//! make it owe more than `output_bytes_max` disconnects it, checked as the reply is
//! produced.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Poll, Token};
use slab::Slab;

use super::conn_limits::{self, Activity, RefusalLog, Timeouts, Watch};
use super::connection::{Connection, FlushOutcome, QueueFrameError};
use super::fd_limit;
use super::forward::ForwardLink;
use super::http::HttpConn;
use super::http::auth::HttpAccess;
use super::node::{ClientRef, Node, Outbox};
use super::peer_auth::PeerAuth;
use super::peer_links::PeerLink;
use super::redis::pubsub::Hub;
use super::redis::{Identity, RedisConn};
use super::tls_ports::TlsPorts;
use super::transport::Transport;
use super::watch::Watches;
use crate::codec::client::{self as client_codec, Response, ResponseBody};
use crate::codec::frame::FrameCodec;
use crate::codec::http::HttpCodec;
use crate::codec::resp::RespCodec;
use crate::config::Config;
use crate::raft::message::{Message, NodeId};
use crate::raft::rng::Rng;
use crate::replica::metrics::ConnectionMetrics;
use crate::security::{Security, Users};

/// Tokens below this are reserved for the listeners and the signal pipe.
pub const FIRST_CONNECTION_TOKEN: usize = 16;
/// Frames decoded per connection per turn, so one busy client cannot starve ticks.
pub(super) const FRAMES_PER_TURN_MAX: usize = 4096;
/// Client requests decoded between two looks at the clock for the turn's time slice.
pub(super) const REQUESTS_PER_SLICE_CHECK: usize = 32;

/// The listening port a connection was accepted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Listener {
    Peer,
    Client,
    Redis,
    Http,
}

/// What a connection is, with the state only that kind has.
pub(super) enum ConnKind {
    /// A client connection on the client port, with its requests read and not yet
    /// answered.
    Client { requests_owed: usize },
    /// A peer dialed us; `None` until its handshake arrives.
    PeerIn(Option<NodeId>),
    /// Our link to a peer; `connected` once the TCP connect completed.
    PeerOut { peer: NodeId, connected: bool },
    /// A Redis client on the Redis port, with its Redis state (queued commands and the
    /// replies held for ordering).
    Redis(Box<RedisConn>),
    /// An HTTP client on the HTTP port, with its queued requests and finished responses.
    Http(Box<HttpConn>),
    /// Our client-protocol link to the leader, carrying forwarded Redis requests;
    /// `connected` once the TCP connect completed.
    Forward { connected: bool },
}

impl ConnKind {
    fn accepted(listener: Listener) -> ConnKind {
        match listener {
            Listener::Peer => ConnKind::PeerIn(None),
            Listener::Client => ConnKind::Client { requests_owed: 0 },
            Listener::Redis => ConnKind::Redis(Box::default()),
            Listener::Http => ConnKind::Http(Box::default()),
        }
    }

    /// What the connection is, for log lines.
    pub(super) fn name(&self) -> &'static str {
        match self {
            ConnKind::Client { .. } => "a client connection",
            ConnKind::PeerIn(None) => "an unidentified inbound peer link",
            ConnKind::PeerIn(Some(_)) => "an inbound peer link",
            ConnKind::PeerOut { .. } => "an outbound peer link",
            ConnKind::Redis(_) => "a Redis connection",
            ConnKind::Http(_) => "an HTTP connection",
            ConnKind::Forward { .. } => "the forwarding link",
        }
    }

    /// An outbound connection whose TCP connect has not completed.
    pub(super) fn connecting(&self) -> bool {
        matches!(
            self,
            ConnKind::PeerOut {
                connected: false,
                ..
            } | ConnKind::Forward { connected: false }
        )
    }
}

/// One connection of the slab.
pub(super) struct Conn {
    pub(super) kind: ConnKind,
    pub(super) io: Connection<Transport>,
    pub(super) generation: u64,
    /// WRITABLE interest is registered (after a partial write or while connecting).
    writable: bool,
    /// The read limit stopped reading: read again next turn even without an event.
    pub(super) unread: bool,
    /// Traffic times for the timeouts of [`conn_limits`].
    pub(super) activity: Activity,
    /// Back-pressure stopped reading this client connection; `maybe_resume` restarts it.
    pub(super) paused: bool,
    /// A close is already pending (so it is counted and logged once).
    pub(super) closing: bool,
}

/// The limits on client connections and inbound peer handshakes.
#[derive(Debug, Clone, Copy)]
pub(super) struct ClientLimits {
    /// `limits.client_connections_max`, capped by the open-file limit.
    pub(super) connections_max: usize,
    pub(super) handshakes_max: usize,
    pub(super) requests_max: usize,
    pub(super) output_soft_bytes_max: usize,
    pub(super) timeouts: Timeouts,
}

impl Conn {
    pub(super) fn is_client(&self) -> bool {
        matches!(
            self.kind,
            ConnKind::Client { .. } | ConnKind::Redis(_) | ConnKind::Http(_)
        )
    }

    /// Whether the connection waits for pushes (a Redis subscriber).
    pub(super) fn is_listening(&self) -> bool {
        matches!(&self.kind, ConnKind::Redis(redis) if redis.is_subscribed())
    }

    /// Requests in flight and finished reply bytes held outside the output buffer.
    pub(super) fn owed(&self) -> (usize, usize) {
        match &self.kind {
            ConnKind::Redis(redis) => (redis.requests(), redis.reply_bytes()),
            ConnKind::Http(http) => (http.requests(), http.reply_bytes()),
            ConnKind::Client { requests_owed } => (*requests_owed, 0),
            _ => (0, 0),
        }
    }

    /// Whether this client connection may take another request (the soft limits).
    pub(super) fn has_room(&self, limits: &ClientLimits) -> bool {
        let (requests, held) = self.owed();
        requests < limits.requests_max
            && self.io.pending_output_bytes() + held <= limits.output_soft_bytes_max
    }

    fn watch(&self) -> Watch {
        match self.kind {
            ConnKind::Client { .. } | ConnKind::Redis(_) | ConnKind::Http(_) => Watch::Client,
            ConnKind::PeerIn(None) => Watch::Handshake,
            ConnKind::PeerIn(Some(_)) | ConnKind::PeerOut { .. } | ConnKind::Forward { .. } => {
                Watch::Exempt
            }
        }
    }
}

/// What completing an outbound connect found.
pub(super) enum Connect {
    /// Not complete yet: wait for the next WRITABLE event.
    Pending,
    /// The connect completed; the connection is marked connected.
    Done,
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

/// The network half of the loop: sockets, buffers and peer links. Kept apart from the
/// [`Node`] so the node can push messages and replies into it while being borrowed.
/// Its fields are open to the loop's sibling modules, which add their methods to it.
pub(super) struct Net {
    pub(super) poll: Poll,
    pub(super) conns: Slab<Conn>,
    pub(super) peers: HashMap<NodeId, PeerLink>,
    /// Peer addresses announced in inbound handshakes.
    pub(super) announced: HashMap<NodeId, SocketAddr>,
    /// The address this node announces in its handshakes.
    pub(super) peer_addr: String,
    pub(super) frame: FrameCodec,
    pub(super) cluster_id: u64,
    pub(super) node_id: NodeId,
    /// The cluster secret and the peer handshakes in progress ([`super::peer_auth`]).
    pub(super) peer_auth: PeerAuth,
    /// The users of the client ports (`security.users_file`); `None`: no checks.
    pub(super) users: Option<Arc<Users>>,
    /// `security.metrics_open`: the HTTP port's `/metrics` needs no credentials.
    pub(super) metrics_open: bool,
    pub(super) output_bytes_max: usize,
    pub(super) read_bytes_per_turn_max: usize,
    pub(super) limits: ClientLimits,
    /// Open client connections (client and Redis ports).
    pub(super) client_count: usize,
    /// Open Redis connections (counted in `client_count` too).
    pub(super) redis_count: usize,
    /// Open HTTP-port connections (counted in `client_count` too).
    pub(super) http_count: usize,
    /// Inbound peer connections that have not identified themselves yet and are not
    /// closing.
    pub(super) handshake_count: usize,
    /// Inbound peer connections in accept order, as (slab key, generation, loop turn
    /// of the accept), so the oldest unidentified one makes room for a new one at the
    /// cap; entries of connections that identified themselves or closed are skipped
    /// and pruned.
    pub(super) handshake_queue: VecDeque<(usize, u64, u64)>,
    /// Loop turns so far: a connection accepted in this turn has not been read yet, so
    /// it is never evicted for want of a handshake (a flood in one burst cannot push a
    /// member's new link out before its handshake is read).
    pub(super) turn: u64,
    /// The `net.*` counters (the gauges are filled in by `connection_metrics`).
    pub(super) counts: ConnectionMetrics,
    pub(super) refusals: RefusalLog,
    /// Rate limit of the TLS failure warnings.
    pub(super) tls_failure_log: RefusalLog,
    /// Closed and reopened around an accept when the process is out of descriptors.
    pub(super) spare_fd: Option<File>,
    /// The loop's clock ([`Net::now_ms`]) as of the current step of the turn: one clock
    /// read per step instead of one per connection event.
    pub(super) step_now_ms: u64,
    /// Client input is left for the next turn once the dispatch passes this instant
    /// (half of the slow-turn limit after it started), so however many clients are
    /// busy, one turn's reading and decoding stays within a bounded slice. Peer
    /// traffic is never deferred.
    pub(super) slice_end: Instant,
    /// A client connection was read in this turn's slice (the first one always is, so
    /// clients make progress however long the peer traffic took).
    pub(super) slice_served_client: bool,
    pub(super) next_generation: u64,
    /// Slab keys with queued output to flush at the end of `before_sleep`.
    pub(super) dirty: Vec<usize>,
    /// Slab keys to close at the end of the turn, with the reason to log.
    pub(super) closing: Vec<(usize, String)>,
    /// The loop's clock origin: every `now_ms` of the loop counts from it.
    pub(super) started: Instant,
    /// A peer link that carries nothing from its peer this long while messages go to
    /// it, or that does not connect within it, is closed and redialed: the longest
    /// election timeout (`2 * election_ticks * tick_ms`).
    pub(super) silence_ms: u64,
    pub(super) rng: Rng,
    pub(super) resp: RespCodec,
    pub(super) http: HttpCodec,
    /// The address of the HTTP listener (`listen_http`), shown in the cluster status.
    pub(super) http_addr: Option<String>,
    pub(super) forward: ForwardLink,
    /// Redis and HTTP connections that received answers and may have more to send or
    /// write.
    pub(super) redis_touched: Vec<usize>,
    /// A Redis or HTTP request went to the node after its `before_sleep`.
    pub(super) redis_proposed: bool,
    /// The Redis connections' channel and pattern subscriptions, and the node's
    /// `notify-keyspace-events`.
    pub(super) hub: Hub,
    /// The native watches of the client-port connections.
    pub(super) watches: Watches,
    /// The TLS sides of the listeners and links (replaced on SIGHUP).
    pub(super) tls: TlsPorts,
}

impl Net {
    /// The network state of a node of `config`, polling with `poll`.
    pub(super) fn new(config: &Config, poll: Poll, tls: TlsPorts, security: &Security) -> Net {
        let peer_addr = config
            .self_member()
            .map_or(config.listen_peer, |m| m.peer_addr)
            .to_string();
        Net {
            poll,
            conns: Slab::new(),
            peers: HashMap::new(),
            announced: HashMap::new(),
            peer_addr,
            frame: FrameCodec::new(config.limits.frame_bytes_max),
            cluster_id: config.cluster_id,
            node_id: config.node_id,
            peer_auth: PeerAuth::new(security.cluster_secret.clone()),
            users: security.users.clone(),
            metrics_open: config.security.metrics_open,
            output_bytes_max: config.limits.output_bytes_max,
            read_bytes_per_turn_max: config.limits.read_bytes_per_turn_max,
            limits: client_limits(config),
            client_count: 0,
            redis_count: 0,
            http_count: 0,
            handshake_count: 0,
            handshake_queue: VecDeque::new(),
            turn: 0,
            counts: ConnectionMetrics::default(),
            refusals: RefusalLog::default(),
            tls_failure_log: RefusalLog::default(),
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
            http: HttpCodec::new(
                super::http_pump::HEAD_BYTES_MAX,
                config.limits.frame_bytes_max as usize,
            ),
            http_addr: config.listen_http.map(|addr| addr.to_string()),
            forward: ForwardLink::new(config.limits.request_timeout_ms),
            redis_touched: Vec::new(),
            redis_proposed: false,
            hub: Hub::with_notify(&config.redis.notify_keyspace_events),
            watches: Watches::default(),
            tls,
        }
    }

    pub(super) fn add(
        &mut self,
        mut stream: Transport,
        kind: ConnKind,
        interest: Interest,
    ) -> io::Result<usize> {
        stream.tcp().set_nodelay(true)?;
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
            activity: Activity::new(self.step_now_ms),
            paused: false,
            closing: false,
        });
        Ok(key)
    }

    pub(super) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Completes the TCP connect of outbound connection `key` on its WRITABLE event.
    ///
    /// # Errors
    /// The connect failed; the caller closes the connection.
    pub(super) fn finish_connect(&mut self, key: usize) -> io::Result<Connect> {
        let conn = &mut self.conns[key];
        if let Some(e) = conn.io.stream().tcp().take_error()? {
            return Err(e);
        }
        if conn.io.stream().tcp().peer_addr().is_err() {
            return Ok(Connect::Pending);
        }
        match &mut conn.kind {
            ConnKind::PeerOut { connected, .. } | ConnKind::Forward { connected } => {
                *connected = true;
            }
            _ => {}
        }
        Ok(Connect::Done)
    }

    pub(super) fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.kind.connecting() {
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
            if conn.is_client() {
                let written = before - conn.io.pending_output_bytes();
                self.counts.client_bytes_sent += written as u64;
            }
            conn.activity.on_traffic(self.step_now_ms);
            self.maybe_resume(key);
        }
    }

    pub(super) fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for key in dirty.drain(..) {
            self.flush(key);
        }
        self.dirty = dirty;
    }

    pub(super) fn close_later(&mut self, key: usize, reason: String) {
        if let Some(conn) = self.conns.get_mut(key) {
            if conn.closing {
                return;
            }
            conn.closing = true;
            if matches!(conn.kind, ConnKind::PeerIn(None)) {
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
                c.generation == generation && matches!(c.kind, ConnKind::PeerIn(None)) && !c.closing
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
    pub(super) fn close_over_limit(&mut self, key: usize, reason: String) {
        if self.conns.get(key).is_some_and(|c| !c.closing) {
            self.counts.output_limit_disconnects += 1;
            self.close_later(key, reason);
        }
    }

    /// Back-pressure: stop reading client connection `key` (see the module docs).
    pub(super) fn pause(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key)
            && !conn.paused
        {
            conn.paused = true;
            conn.unread = false;
            self.counts.reads_paused += 1;
        }
    }

    /// Reads paused connection `key` again once it is back under the soft limits.
    pub(super) fn maybe_resume(&mut self, key: usize) {
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
    pub(super) fn admit(&mut self, stream: TcpStream, addr: SocketAddr, listener: Listener) {
        let peer = listener == Listener::Peer;
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
        let laddr = stream.local_addr().map_or(String::new(), |a| a.to_string());
        let stream = match self.tls.accepted(listener, stream) {
            Ok(stream) => stream,
            Err(e) => {
                warn!("cannot start TLS for the connection from {addr}: {e}");
                return;
            }
        };
        match self.add(stream, ConnKind::accepted(listener), Interest::READABLE) {
            Err(e) => warn!("cannot register connection from {addr}: {e}"),
            Ok(key) => {
                let conn = &mut self.conns[key];
                if let ConnKind::Redis(redis) = &mut conn.kind {
                    redis.identify(Identity {
                        id: conn.generation,
                        addr: addr.to_string(),
                        laddr,
                        opened_ms: self.step_now_ms,
                    });
                    if let Some(users) = &self.users {
                        redis.require_auth(users.clone());
                    }
                }
                if let (ConnKind::Http(http), Some(users)) = (&mut conn.kind, &self.users) {
                    let access =
                        HttpAccess::checked(users.clone(), self.metrics_open, addr.to_string());
                    http.require_auth(access);
                }
                if peer {
                    self.handshake_count += 1;
                    let generation = self.conns[key].generation;
                    self.handshake_queue.push_back((key, generation, self.turn));
                    if self.handshake_queue.len() > 2 * self.limits.handshakes_max {
                        let conns = &self.conns;
                        self.handshake_queue.retain(|&(key, generation, _)| {
                            conns.get(key).is_some_and(|c| {
                                c.generation == generation
                                    && matches!(c.kind, ConnKind::PeerIn(None))
                            })
                        });
                    }
                } else {
                    self.client_count += 1;
                    match listener {
                        Listener::Redis => self.redis_count += 1,
                        Listener::Http => self.http_count += 1,
                        Listener::Client | Listener::Peer => {}
                    }
                }
                debug!("accepted {listener:?} connection from {addr}");
            }
        }
    }

    /// `accept` failed for want of descriptors: frees the spare one to accept and close
    /// the waiting connection. False when nothing more can be accepted now.
    pub(super) fn refuse_without_descriptors(&mut self, listener: &TcpListener) -> bool {
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

    /// Connection `key` failed its TLS session (`error`): counted, logged with the
    /// remote address (at most once a second), and closed.
    pub(super) fn on_tls_failure(&mut self, key: usize, error: &io::Error) {
        self.counts.tls_failures += 1;
        if let Some(conn) = self.conns.get(key)
            && let Some(suppressed) = self.tls_failure_log.on_refusal(self.step_now_ms)
        {
            let from = conn
                .io
                .stream()
                .tcp()
                .peer_addr()
                .map_or_else(|_| "an unknown address".to_string(), |a| a.to_string());
            let more = if suppressed > 0 {
                format!("; {suppressed} more since the last report")
            } else {
                String::new()
            };
            warn!(
                "TLS failure on {} with {from}: {error}{more} (net.tls_failures counts them)",
                conn.kind.name()
            );
        }
        self.close_later(key, format!("TLS failure: {error}"));
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
    pub(super) fn sweep(&mut self, now_ms: u64) {
        let timeouts = self.limits.timeouts;
        let watches = &self.watches;
        let expired: Vec<(usize, conn_limits::Expiry)> = self
            .conns
            .iter()
            .filter(|(_, conn)| !conn.closing)
            .filter_map(|(key, conn)| {
                // A subscriber or watcher waits for pushes, as Redis exempts a
                // subscriber from `timeout`.
                let listening = conn.is_listening() || watches.has_client(key);
                let busy = conn.owed().0 > 0 || listening;
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
    pub(super) fn connection_metrics(&self) -> ConnectionMetrics {
        ConnectionMetrics {
            client_connections: self.client_count as u64,
            redis_connections: self.redis_count as u64,
            http_connections: self.http_count as u64,
            peer_handshakes: self.handshake_count as u64,
            ..self.counts
        }
    }

    pub(super) fn close_pending(&mut self, node: &mut Node) {
        for (key, reason) in std::mem::take(&mut self.closing) {
            let Some(mut conn) = self.conns.try_remove(key) else {
                continue;
            };
            let _ = self.poll.registry().deregister(conn.io.stream_mut());
            self.peer_auth.forget(key);
            if conn.is_client() {
                self.client_count = self.client_count.saturating_sub(1);
            }
            let client = ClientRef {
                key,
                generation: conn.generation,
            };
            match &conn.kind {
                ConnKind::Redis(redis) => {
                    let (channels, patterns) = redis.subscription_names();
                    self.hub.remove(client, &channels, &patterns);
                }
                ConnKind::Client { .. } => self.watches.remove_client(client),
                _ => {}
            }
            match conn.kind {
                ConnKind::Redis(_) => self.redis_count = self.redis_count.saturating_sub(1),
                ConnKind::Http(_) => self.http_count = self.http_count.saturating_sub(1),
                _ => {}
            }
            match conn.kind {
                ConnKind::Client { .. } | ConnKind::Redis(_) | ConnKind::Http(_) => {
                    debug!("client connection closed: {reason}")
                }
                ConnKind::Forward { .. } => {
                    info!("forwarding link to the leader closed: {reason}");
                    self.on_forward_closed(key);
                }
                ConnKind::PeerIn(from) => info!("inbound peer link from {from:?} closed: {reason}"),
                ConnKind::PeerOut { peer, connected } => {
                    self.on_peer_link_closed(key, peer, connected, &reason, node);
                }
            }
            if conn.is_client() {
                node.on_client_closed(client);
            }
        }
    }
}

impl Outbox for Net {
    fn send(&mut self, message: &Message) -> usize {
        self.send_to_peer(message)
    }

    fn reply(&mut self, client: ClientRef, response: Response) {
        let codec = self.frame;
        let Some(conn) = self.conns.get_mut(client.key) else {
            return;
        };
        if conn.generation != client.generation {
            return;
        }
        if let ConnKind::Redis(redis) = &mut conn.kind {
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
        if let ConnKind::Http(http) = &mut conn.kind {
            http.on_response(response, self.http_addr.as_deref());
            self.redis_touched.push(client.key);
            return;
        }
        if let ConnKind::Client { requests_owed } = &mut conn.kind {
            *requests_owed = requests_owed.saturating_sub(1);
        }
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
