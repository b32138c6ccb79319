//! The node's one thread: a mio poll loop in the shape of redis's `aeMain`.
//!
//! `run` = `loop { turn() }`; a turn is `before_sleep` → `poll` (timeout = the next
//! timer deadline, 0 when work is pending) → dispatch readiness events (accept, read
//! until WouldBlock or the read limits, write) → expire timers. Exactly as in redis,
//! `before_sleep` runs first and is the only place that touches the disk and produces
//! replies: the node drains the consensus core's `Ready`, appends every new entry,
//! syncs ONCE for the whole turn (group commit), sends the messages that acknowledge
//! persisted state, applies committed entries, and queues client replies; then every
//! connection with output is flushed directly, registering WRITABLE only after a
//! partial write. Because replies are only produced after the sync in the same
//! function, redis's `AE_BARRIER` problem (replying before the fsync of the data it
//! acknowledges) cannot arise here.
//!
//! Invariants: the node's `before_sleep` runs once per turn, so there is at most one
//! durable sync per turn whichever port the entries came from; a request that reaches
//! the node after it (the next request of a Redis connection, one handed back by a
//! closed forwarding link) or a backlog of committed entries left for the next turn
//! (`replica::APPLY_BYTES_PER_TURN`) sets `work_pending`, and the next poll does not sleep. All
//! client reading and decoding of one turn stops at a time slice (`Net::slice_end`,
//! half the slow-turn limit) and resumes next turn, whatever the number of busy
//! clients; a connection's work per turn is bounded by `FRAMES_PER_TURN_MAX`,
//! `read_bytes_per_turn_max` and the in-flight cap. Peer traffic is never deferred.
//!
//! The parts the loop drives live beside it: `net` (connections, limits,
//! flushing, the node's outbox), `peer_links` (dial, handshake, backoff,
//! liveness), `forward` (the follower's forwarding link to the leader),
//! `redis_pump` (Redis connections) and `http_pump` (HTTP connections).

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use signal_hook_mio::v1_0::Signals;

use super::error::ProtocolError;
pub use super::error::RunError;
use super::net::{
    ConnKind, Connect, FIRST_CONNECTION_TOKEN, FRAMES_PER_TURN_MAX, Listener, Net,
    REQUESTS_PER_SLICE_CHECK,
};
use super::node::{ClientRef, Node, Outbox, Port};
use super::tls_ports::TlsPorts;
use crate::codec::client::{self as client_codec, RequestBody};
use crate::config::{Config, TlsConfig};
use crate::raft::message::NodeId;
use crate::replica::timer::TimerWheel;
use crate::security::Security;

const PEER_LISTENER: Token = Token(0);
const CLIENT_LISTENER: Token = Token(1);
const SIGNALS: Token = Token(2);
const REDIS_LISTENER: Token = Token(3);
const HTTP_LISTENER: Token = Token(4);

/// What a timer in the wheel stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerEvent {
    /// One logical Raft tick.
    Tick,
    /// Dial the peer again.
    Reconnect(NodeId),
}

/// A running node: the event loop, the network and the node logic.
pub struct EventLoop {
    pub(super) net: Net,
    pub(super) node: Node,
    timers: TimerWheel<TimerEvent>,
    peer_listener: TcpListener,
    client_listener: TcpListener,
    redis_listener: Option<TcpListener>,
    http_listener: Option<TcpListener>,
    signals: Signals,
    /// `[tls]`, read again on SIGHUP.
    tls_config: TlsConfig,
    tick_ms: u64,
    slow_turn_ms: u64,
    stopping: bool,
    /// Requests reached the node after its `before_sleep` (unforwarded ones handed back,
    /// the next requests of Redis connections): poll without sleeping so the next
    /// `before_sleep` persists and sends them.
    work_pending: bool,
    events: Events,
    /// Readiness of this turn's events, copied out of `events` before dispatching.
    ready_scratch: Vec<(Token, bool, bool)>,
    /// Connections with input left over from a bounded read, to read again this turn.
    unread_scratch: Vec<usize>,
    /// When the next timeout sweep is due.
    next_sweep_ms: u64,
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
    pub fn new(
        config: &Config,
        node: Node,
        tls: TlsPorts,
        security: &Security,
    ) -> io::Result<EventLoop> {
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
        let http_listener = match config.listen_http {
            Some(addr) => {
                let mut listener = bind(addr, "listen_http")?;
                poll.registry()
                    .register(&mut listener, HTTP_LISTENER, Interest::READABLE)?;
                Some(listener)
            }
            None => None,
        };
        let mut signals = Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGHUP,
        ])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let net = Net::new(config, poll, tls, security);
        Ok(EventLoop {
            net,
            node,
            timers: TimerWheel::new(512, 1, 0),
            peer_listener,
            client_listener,
            redis_listener,
            http_listener,
            signals,
            tls_config: config.tls.clone(),
            tick_ms: config.raft.tick_ms,
            slow_turn_ms: (config.raft.tick_ms * u64::from(config.raft.heartbeat_ticks) / 2).max(1),
            stopping: false,
            work_pending: false,
            events: Events::with_capacity(1024),
            ready_scratch: Vec::new(),
            unread_scratch: Vec::new(),
            next_sweep_ms: 0,
        })
    }

    pub(super) fn now_ms(&self) -> u64 {
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
        self.node.metrics_mut().on_loop_turn_started();
        self.net.step_now_ms = self.now_ms();
        self.before_sleep()?;
        let next_deadline = [
            self.timers.next_deadline(),
            self.node.next_deadline(),
            self.net.forward.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = match next_deadline {
            Some(deadline) => Duration::from_millis(deadline.saturating_sub(self.now_ms())),
            None => Duration::from_millis(self.tick_ms),
        };
        let timeout = if self.work_pending || self.net.conns.iter().any(|(_, c)| c.unread) {
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
        let busy_us = u64::try_from(busy.as_micros()).unwrap_or(u64::MAX);
        self.node
            .metrics_mut()
            .on_loop_turn_ended(now, busy_us, slow);
        Ok(())
    }

    fn dispatch(&mut self, token: Token, readable: bool, writable: bool) {
        match token {
            PEER_LISTENER => self.accept(Listener::Peer),
            CLIENT_LISTENER => self.accept(Listener::Client),
            REDIS_LISTENER => self.accept(Listener::Redis),
            HTTP_LISTENER => self.accept(Listener::Http),
            SIGNALS => {
                let signals: Vec<i32> = self.signals.pending().collect();
                for signal in signals {
                    if signal == signal_hook::consts::SIGHUP {
                        self.reload_tls();
                    } else {
                        info!("received signal {signal}: stopping");
                        self.stopping = true;
                    }
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

    /// SIGHUP: reads the TLS files again; new connections use them, open ones keep
    /// theirs. A file that cannot be used keeps the running certificates.
    fn reload_tls(&mut self) {
        if self.tls_config.ports.is_empty() {
            info!("received SIGHUP: no TLS configured, nothing to reload");
            return;
        }
        match TlsPorts::load(&self.tls_config) {
            Ok(tls) => {
                self.net.tls = tls;
                info!("received SIGHUP: TLS certificates reloaded; new connections use them");
            }
            Err(e) => {
                warn!("received SIGHUP: TLS reload failed, keeping the running certificates: {e}")
            }
        }
    }

    fn accept(&mut self, port: Listener) {
        loop {
            let listener = match port {
                Listener::Peer => &self.peer_listener,
                Listener::Redis => match &self.redis_listener {
                    Some(listener) => listener,
                    None => return,
                },
                Listener::Http => match &self.http_listener {
                    Some(listener) => listener,
                    None => return,
                },
                Listener::Client => &self.client_listener,
            };
            match listener.accept() {
                Ok((stream, addr)) => self.net.admit(stream, addr, port),
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
        let connecting = self.net.conns[key].kind.connecting();
        if connecting {
            match self.net.finish_connect(key) {
                Ok(Connect::Pending) => return,
                Ok(Connect::Done) => self.on_connected(key),
                Err(e) => {
                    self.net.close_later(key, format!("connect failed: {e}"));
                    return;
                }
            }
        }
        // A connected peer link with a backlog that drains: the peer is reading (a large
        // message such as a snapshot is on its way), so the link is not silent.
        let conn = &self.net.conns[key];
        let backlog = match conn.kind {
            ConnKind::PeerOut { peer, .. } if !connecting => {
                Some((peer, conn.io.pending_output_bytes()))
            }
            _ => None,
        };
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

    /// Outbound connection `key` completed its connect: a peer link resets its backoff,
    /// the forwarding link writes the requests that waited for it.
    fn on_connected(&mut self, key: usize) {
        match self.net.conns[key].kind {
            ConnKind::PeerOut { peer, .. } => self.net.on_peer_connected(peer, &mut self.node),
            ConnKind::Forward { .. } => self.net.send_unsent(key),
            _ => {}
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
            Err(e)
                if e.kind() == io::ErrorKind::InvalidData
                    && conn.io.stream().session().is_some() =>
            {
                self.net.on_tls_failure(key, &e);
                return;
            }
            Err(e) => {
                self.net.close_later(key, format!("read error: {e}"));
                return;
            }
        };
        conn.unread = !outcome.drained && !outcome.closed;
        if conn.io.stream().wants_flush() {
            // TLS handshake records produced by the read, which the socket did not take.
            self.net.dirty.push(key);
        }
        if outcome.bytes > 0 {
            conn.activity.on_traffic(now_ms);
            if conn.is_client() {
                self.net.counts.client_bytes_received += outcome.bytes as u64;
            }
        }
        let input_before = conn.io.input().len();
        if let ConnKind::PeerIn(Some(from)) = conn.kind {
            self.node
                .metrics_mut()
                .on_message_received(from, outcome.bytes as u64);
            if outcome.bytes > 0 {
                self.net.heard_from(from);
            }
        }
        let result = match self.net.conns[key].kind {
            ConnKind::Client { .. } => self.decode_client_frames(key),
            ConnKind::PeerIn(_) | ConnKind::PeerOut { .. } => {
                self.net.decode_peer_frames(key, &mut self.node)
            }
            ConnKind::Redis(_) => self.decode_redis_commands(key),
            ConnKind::Http(_) => {
                self.decode_http_requests(key);
                Ok(())
            }
            ConnKind::Forward { .. } => self.net.decode_forward_frames(key),
        };
        if let Err(e) = result {
            if matches!(e, ProtocolError::CertificateNotForMember(_)) {
                let error = io::Error::new(io::ErrorKind::PermissionDenied, e.to_string());
                self.net.on_tls_failure(key, &error);
            } else {
                self.net.close_later(key, e.to_string());
            }
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

    /// Hands the requests of client connection `key` to the node.
    ///
    /// # Errors
    /// A frame or request does not decode: the connection is closed.
    fn decode_client_frames(&mut self, key: usize) -> Result<(), ProtocolError> {
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
                Err(e) => return Err(ProtocolError::Frame(e)),
            };
            let (request, command_bytes) = client_codec::decode_request_with_command_bytes(body)
                .map_err(ProtocolError::Request)?;
            if let ConnKind::Client { requests_owed } = &mut conn.kind {
                *requests_owed += 1;
            }
            if let RequestBody::Watch { key, prefix } = request.body {
                let applied_index = self.node.applied_index();
                let request_id = request.request_id;
                self.net
                    .start_watch(client, request_id, key, prefix, applied_index);
                continue;
            }
            if let Some(response) =
                self.node
                    .on_client_request(Port::Client, client, request, command_bytes, now_ms)
            {
                self.net.reply(client, response);
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
                TimerEvent::Reconnect(peer) => self.net.redial(peer),
            }
        }
        let now = self.now_ms();
        self.net.recycle_silent_links(now);
        for (peer, delay_ms) in self.net.schedule_redials() {
            self.timers
                .schedule(now + delay_ms, TimerEvent::Reconnect(peer));
        }
    }

    /// Drains the node once (its one sync of the turn), then lets the Redis connections
    /// that got answers issue their next requests. Those wait for the next turn's
    /// `before_sleep`, and the poll in between does not sleep: one durable sync per turn
    /// covers everything appended in it, whichever port it came from.
    fn before_sleep(&mut self) -> Result<(), RunError> {
        self.net.redis_proposed = false;
        self.node.set_observe(self.net.observe());
        self.node.before_sleep(&mut self.net)?;
        let applied = self.node.take_applied();
        self.net.deliver_applied(&applied);
        self.pump_touched_redis();
        self.net.flush_dirty();
        self.follow_membership();
        self.net.close_pending(&mut self.node);
        let handed_back = self.hand_back_unforwarded();
        // A backlog of committed entries is applied a bounded share per turn.
        self.work_pending = handed_back || self.net.redis_proposed || self.node.has_apply_backlog();
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
