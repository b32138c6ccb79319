//! The forwarding link: a follower's client-protocol connection to the leader's client
//! address, carrying the requests of its Redis and HTTP connections that the node
//! answered NotLeader, under fresh request ids mapped back to the connection.
//!
//! Invariants: every forwarded request in `ForwardLink::pending` has one live timer in
//! its `deadlines` (cancelled when it leaves `pending`), so it is answered exactly once:
//! by the leader's reply, by its deadline, or when its link closes. A request whose
//! `unsent` body is still held was never written to a socket, so nothing of it was
//! applied: at its deadline it gets a definite error, and when its link closes it goes
//! back to the node (`handed_back`), which redirects it to a newer leader or parks it.
//! A write that was sent and not answered has an unknown outcome, a read a definite
//! error. At most one link is current (`conn`); a link marked for closing takes nothing.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;

use log::debug;
use mio::Interest;
use mio::net::TcpStream;

use super::connection::QueueFrameError;
use super::error::ProtocolError;
use super::net::{ConnKind, FRAMES_PER_TURN_MAX, Net};
use super::node::{ClientRef, Outbox};
use crate::codec::client::{self as client_codec, Request, RequestBody, Response, ResponseBody};
use crate::kv::Command;
use crate::replica::timer::{TimerId, TimerWheel};

/// The link a follower forwards Redis requests on.
///
/// Invariant: every request in `pending` has one live timer in `deadlines` (cancelled
/// when it leaves `pending`); a request whose `unsent` body is still held was never
/// written to a socket, so whatever happens to it, nothing was applied.
pub(super) struct ForwardLink {
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
pub(super) struct Forwarded {
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
    pub(super) fn new(request_timeout_ms: u64) -> ForwardLink {
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

    /// The earliest deadline of a forwarded request, in the loop's clock.
    pub(super) fn next_deadline(&mut self) -> Option<u64> {
        self.deadlines.next_deadline()
    }

    /// Takes the requests never sent on a link that closed, for the node.
    pub(super) fn take_handed_back(&mut self) -> Vec<(ClientRef, Request, String)> {
        std::mem::take(&mut self.handed_back)
    }
}

/// Whether a request may change the state machine (a read never does).
fn changes_state(body: &RequestBody) -> bool {
    !matches!(
        body,
        RequestBody::Get { .. }
            | RequestBody::Range { .. }
            | RequestBody::Status
            | RequestBody::Metrics
            | RequestBody::Command(Command::Get { .. })
    )
}

impl Net {
    /// Sends `request` of Redis connection `client` to the leader at `addr` over the
    /// forwarding link, (re)dialing it if it goes elsewhere or does not exist. The
    /// request gets the deadline of a local one (`limits.request_timeout_ms` from
    /// `now_ms`). While the link connects, the request waits unencoded.
    ///
    /// Returns the request, unsent, when the link cannot even be dialed.
    pub(super) fn forward(
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
                .and_then(|tcp| {
                    let stream = self
                        .tls
                        .forward_link(addr, tcp)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
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
            .is_some_and(|c| matches!(c.kind, ConnKind::Forward { connected: true }));
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
    pub(super) fn send_unsent(&mut self, key: usize) {
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
    pub(super) fn expire_forwards(&mut self, now_ms: u64) {
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
    /// node (`EventLoop::hand_back_unforwarded`), as nothing of it was sent.
    pub(super) fn on_forward_closed(&mut self, key: usize) {
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

    /// Hands the leader's answers on link `key` to the Redis connections they belong to.
    ///
    /// # Errors
    /// The leader sent something that is not a response frame: the link is closed.
    pub(super) fn decode_forward_frames(&mut self, key: usize) -> Result<(), ProtocolError> {
        for _ in 0..FRAMES_PER_TURN_MAX {
            let conn = &mut self.conns[key];
            let response = match conn.io.next_frame(&self.frame) {
                Ok(Some(body)) => {
                    client_codec::decode_response(body).map_err(ProtocolError::LeaderResponse)?
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(ProtocolError::LeaderFrame(e)),
            };
            if let Some(forwarded) = self.forward.pending.remove(&response.request_id) {
                self.forward.deadlines.cancel(forwarded.timer);
                let response = Response {
                    request_id: forwarded.request_id,
                    body: response.body,
                };
                self.reply(forwarded.client, response);
            }
        }
        self.conns[key].unread = true;
        Ok(())
    }
}
