//! HTTP pumping: the chain HttpCodec -> [`HttpConn`](super::http::HttpConn) of an
//! HTTP-port connection, driven like a Redis connection ([`super::redis_pump`]): the
//! HTTP state turns each request into client-protocol requests for the node (or, on a
//! follower answered NotLeader, for the leader over the forwarding link), answers are
//! fed back until it asks nothing more, and its finished responses are queued in
//! request order.
//!
//! Invariants: a request that cannot be decoded (431 head too large, 413 body too large,
//! 400 malformed) is answered after the responses owed before it, and the connection
//! closes once it is written: the rest of its input cannot be framed. One durable sync
//! per turn holds as for Redis: a request issued after the node's `before_sleep` only
//! marks work pending (`Net::redis_proposed`).

use std::time::Instant;

use super::event_loop::EventLoop;
use super::http::NodePages;
use super::net::{ConnKind, FRAMES_PER_TURN_MAX, Net, REQUESTS_PER_SLICE_CHECK};
use super::node::{ClientRef, Node, Outbox, Port};
use super::redis::{Submit, Target};
use crate::codec::http::{self, Decoded, HttpResponse};

/// The longest request head (request line and headers) accepted; longer: 431.
pub(super) const HEAD_BYTES_MAX: usize = 16 * 1024;

impl NodePages for Node {
    fn prometheus_text(&self) -> String {
        Node::prometheus_text(self)
    }

    fn recent_events_json(&self) -> String {
        Node::recent_events_json(self)
    }
}

impl EventLoop {
    /// Decodes the requests of HTTP connection `key` and pumps it. Input that is not a
    /// request within the limits is answered with its error status and the connection
    /// closes after the answer.
    pub(super) fn decode_http_requests(&mut self, key: usize) {
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
            let ConnKind::Http(state) = &mut conn.kind else {
                return;
            };
            if state.is_broken() {
                let left = conn.io.input().len();
                conn.io.consume(left);
                frames_left = false;
                break;
            }
            match self.net.http.decode(conn.io.input()) {
                Ok(Decoded::Request(consumed, request)) => {
                    conn.io.consume(consumed);
                    state.on_request(*request, &self.node);
                    self.net.counts.client_auth_failures += state.take_auth_failures();
                }
                Ok(Decoded::Partial { expects_continue }) => {
                    if expects_continue
                        && state.should_continue()
                        && conn.io.queue(http::CONTINUE).is_ok()
                    {
                        self.net.dirty.push(key);
                    }
                    frames_left = false;
                    break;
                }
                Err(e) => {
                    let body = super::http::json::error_body(&e.to_string());
                    state.on_bad_request(HttpResponse::json(e.status(), body));
                }
            }
        }
        self.pump_http(key);
        if frames_left && let Some(conn) = self.net.conns.get_mut(key) {
            conn.unread = true;
        }
    }

    /// Sends one request of an HTTP or Redis connection: to this node, or over the
    /// forwarding link to the leader (back to the node when the link cannot be dialed).
    pub(super) fn submit(&mut self, port: Port, client: ClientRef, submit: Submit) {
        let now_ms = self.now_ms();
        match submit.target {
            Target::Local => {
                match self
                    .node
                    .on_client_request(port, client, submit.request, None, now_ms)
                {
                    Some(response) => self.net.reply(client, response),
                    None => self.net.redis_proposed = true,
                }
            }
            Target::Forward(addr) => {
                let Some(request) = self.net.forward(client, submit.request, &addr, now_ms) else {
                    return;
                };
                match self
                    .node
                    .on_leader_unreachable(port, client, request, &addr, now_ms)
                {
                    Some(response) => self.net.reply(client, response),
                    None => self.net.redis_proposed = true,
                }
            }
        }
    }

    /// Sends what HTTP connection `key` asks for (answers the node gives at once are fed
    /// back until it asks nothing more), then queues its finished responses.
    pub(super) fn pump_http(&mut self, key: usize) {
        let Some(generation) = self.net.conns.get(key).map(|c| c.generation) else {
            return;
        };
        let client = ClientRef { key, generation };
        loop {
            let submits = match self.net.conns.get_mut(key).map(|c| &mut c.kind) {
                Some(ConnKind::Http(state)) => state.take_submits(),
                _ => return,
            };
            if submits.is_empty() {
                break;
            }
            for submit in submits {
                self.submit(Port::Http, client, submit);
            }
        }
        self.net.write_http_replies(key);
    }
}

impl Net {
    /// Queues the finished in-order responses of HTTP connection `key`; closes it once
    /// a response that ends the connection is written.
    pub(super) fn write_http_replies(&mut self, key: usize) {
        self.write_ordered_replies(
            key,
            "HTTP response ends the connection",
            |kind, out| match kind {
                ConnKind::Http(state) => Some(state.take_replies(out)),
                _ => None,
            },
        );
    }
}
