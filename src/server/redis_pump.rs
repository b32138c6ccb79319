//! Redis pumping: the chain RespCodec -> [`RedisConn`](super::redis::RedisConn) of a
//! Redis-port connection. The Redis state turns each command into client-protocol
//! requests; they go to the node
//! like any client's, or, on a follower answered NotLeader, over the forwarding link
//! ([`super::forward`]). Answers are fed back to the Redis state until it asks nothing
//! more, and its finished replies are queued in request order.
//!
//! Invariant (one durable sync per turn): a request the Redis state issues after the
//! node's `before_sleep` of this turn waits for the next turn's `before_sleep`; pumping
//! only records that such work is pending (`Net::redis_proposed`), so the loop's next
//! poll does not sleep.

use std::time::Instant;

use super::error::ProtocolError;
use super::event_loop::EventLoop;
use super::net::{ConnKind, FRAMES_PER_TURN_MAX, Net, REQUESTS_PER_SLICE_CHECK};
use super::node::{ClientRef, Outbox, Port};
use super::redis::Target;

impl EventLoop {
    /// Decodes the commands of Redis connection `key` and pumps it.
    ///
    /// # Errors
    /// The input is not RESP: an error reply is queued and the connection is closed.
    pub(super) fn decode_redis_commands(&mut self, key: usize) -> Result<(), ProtocolError> {
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
            let ConnKind::Redis(redis) = &mut conn.kind else {
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
                    return Err(ProtocolError::Resp(e));
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
            let submits = match self.net.conns.get_mut(key).map(|c| &mut c.kind) {
                Some(ConnKind::Redis(redis)) => redis.take_submits(),
                _ => return,
            };
            if submits.is_empty() {
                break;
            }
            for submit in submits {
                match submit.target {
                    Target::Local => {
                        match self.node.on_client_request(
                            Port::Redis,
                            client,
                            submit.request,
                            None,
                            now_ms,
                        ) {
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
                        match self.node.on_leader_unreachable(
                            Port::Redis,
                            client,
                            request,
                            &addr,
                            now_ms,
                        ) {
                            Some(response) => self.net.reply(client, response),
                            None => self.net.redis_proposed = true,
                        }
                    }
                }
            }
        }
        self.net.write_redis_replies(key);
    }

    /// Gives the node the forwarded requests that were never sent on a link that
    /// closed: it redirects them to a leader it now knows, or parks them until one is
    /// elected (see [`Node::on_leader_unreachable`]).
    ///
    /// Returns whether it handed any back: the node may have proposed them, so the loop
    /// runs `before_sleep` again without sleeping.
    pub(super) fn hand_back_unforwarded(&mut self) -> bool {
        let handed_back = self.net.forward.take_handed_back();
        if handed_back.is_empty() {
            return false;
        }
        let now_ms = self.now_ms();
        for (client, request, addr) in handed_back {
            // The Redis connection may have closed meanwhile: nothing to serve it for.
            let open = self
                .net
                .conns
                .get(client.key)
                .is_some_and(|c| c.generation == client.generation && !c.closing);
            if !open {
                continue;
            }
            if let Some(response) =
                self.node
                    .on_leader_unreachable(Port::Redis, client, request, &addr, now_ms)
            {
                self.net.reply(client, response);
            }
        }
        self.pump_touched_redis();
        self.net.flush_dirty();
        true
    }

    pub(super) fn pump_touched_redis(&mut self) {
        let mut touched = std::mem::take(&mut self.net.redis_touched);
        touched.sort_unstable();
        touched.dedup();
        for key in touched {
            self.pump_redis(key);
        }
    }
}

impl Net {
    /// Queues the finished in-order replies of Redis connection `key`.
    pub(super) fn write_redis_replies(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let ConnKind::Redis(redis) = &mut conn.kind else {
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
