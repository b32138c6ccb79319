//! Redis pumping: the chain RespCodec -> [`RedisConn`](super::redis::RedisConn) of a
//! Redis-port connection. The Redis state turns each command into client-protocol
//! requests; they go to the node
//! like any client's, or, on a follower answered NotLeader, over the forwarding link
//! ([`super::forward`]). Answers are fed back to the Redis state until it asks nothing
//! more, and its finished replies are queued in request order. Its local queries
//! (CLIENT LIST / KILL, TIME) are answered here, from every connection of the node and
//! the wall clock.
//!
//! Invariant (one durable sync per turn): a request the Redis state issues after the
//! node's `before_sleep` of this turn waits for the next turn's `before_sleep`; pumping
//! only records that such work is pending (`Net::redis_proposed`), so the loop's next
//! poll does not sleep.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::error::ProtocolError;
use super::event_loop::EventLoop;
use super::net::{ConnKind, FRAMES_PER_TURN_MAX, Net, REQUESTS_PER_SLICE_CHECK};
use super::node::{ClientRef, Outbox, Port};
use super::redis::LocalQuery;
use super::redis::command::config_get;
use crate::codec::resp::RespValue;

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
                    self.net.counts.client_auth_failures += redis.take_auth_failures();
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
            let (submits, queries) = match self.net.conns.get_mut(key).map(|c| &mut c.kind) {
                Some(ConnKind::Redis(redis)) => {
                    redis.set_now_ms(now_ms);
                    for change in redis.take_subscription_changes() {
                        self.net.hub.change(client, change);
                    }
                    (redis.take_submits(), redis.take_local_queries())
                }
                _ => return,
            };
            if submits.is_empty() && queries.is_empty() {
                break;
            }
            for (slot, query) in queries {
                let reply = self.net.answer_local(key, &query);
                if let Some(ConnKind::Redis(redis)) =
                    self.net.conns.get_mut(key).map(|c| &mut c.kind)
                {
                    redis.on_local_answer(slot, reply);
                }
            }
            for submit in submits {
                self.submit(Port::Redis, client, submit);
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
            // The Redis or HTTP connection may have closed meanwhile: nothing to serve.
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

    /// Pumps the Redis and HTTP connections that received answers this step.
    pub(super) fn pump_touched_redis(&mut self) {
        let mut touched = std::mem::take(&mut self.net.redis_touched);
        touched.sort_unstable();
        touched.dedup();
        for key in touched {
            match self.net.conns.get(key).map(|c| &c.kind) {
                Some(ConnKind::Redis(_)) => self.pump_redis(key),
                Some(ConnKind::Http(_)) => self.pump_http(key),
                _ => {}
            }
        }
    }
}

impl Net {
    /// The answer to a [`LocalQuery`] of Redis connection `key`: what needs every
    /// connection of the node (CLIENT LIST / KILL) or the wall clock (TIME).
    fn answer_local(&mut self, key: usize, query: &LocalQuery) -> RespValue {
        let redis_conns = || {
            self.conns.iter().filter_map(|(k, c)| match &c.kind {
                ConnKind::Redis(redis) if !c.closing => Some((k, redis)),
                _ => None,
            })
        };
        match query {
            LocalQuery::ClientList => {
                let mut text = String::new();
                for (_, redis) in redis_conns() {
                    text.push_str(&redis.client_line());
                    text.push('\n');
                }
                RespValue::Verbatim(text)
            }
            LocalQuery::Time => {
                // The wall clock, as Redis's TIME: not used for anything replicated.
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                RespValue::Array(Some(vec![
                    RespValue::bulk(now.as_secs().to_string()),
                    RespValue::bulk(now.subsec_micros().to_string()),
                ]))
            }
            LocalQuery::Pubsub(query) => self.hub.answer(query),
            LocalQuery::ConfigGet(patterns) => config_get(patterns, self.hub.notify),
            LocalQuery::ConfigSet(flags) => {
                self.hub.notify = *flags;
                RespValue::ok()
            }
            LocalQuery::ClientKill(filter) => {
                let caller = match self.conns.get(key).map(|c| &c.kind) {
                    Some(ConnKind::Redis(redis)) => redis.identity().id,
                    _ => 0,
                };
                let victims: Vec<usize> = redis_conns()
                    .filter(|(_, redis)| redis.kill_matches(filter, caller))
                    .map(|(k, _)| k)
                    .collect();
                let count = victims.len();
                for victim in victims {
                    self.close_later(victim, "CLIENT KILL".into());
                }
                match (filter.old_form, count) {
                    (true, 0) => RespValue::error("ERR No such client"),
                    (true, _) => RespValue::ok(),
                    (false, count) => RespValue::Integer(count as i64),
                }
            }
        }
    }

    /// Queues the finished in-order replies of Redis connection `key`; closes it after
    /// QUIT's reply.
    pub(super) fn write_redis_replies(&mut self, key: usize) {
        self.write_ordered_replies(key, "QUIT", |kind, out| match kind {
            ConnKind::Redis(redis) => Some(redis.take_replies(out)),
            _ => None,
        });
    }

    /// Encodes what `take` yields of connection `key`'s finished replies straight into
    /// its output buffer (the hard limit sees the bytes as they are produced, and there
    /// is no second copy). `take` answers `None` for a connection of another kind, and
    /// `Some(true)` when the last reply ends the connection: it is flushed and closed
    /// with `end_reason`.
    pub(super) fn write_ordered_replies(
        &mut self,
        key: usize,
        end_reason: &str,
        take: impl FnOnce(&mut ConnKind, &mut Vec<u8>) -> Option<bool>,
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut kind_matched = true;
        let mut end = false;
        let before = conn.io.pending_output_bytes();
        let kind = &mut conn.kind;
        let queued = conn.io.queue_with(|out| match take(kind, out) {
            Some(ends) => end = ends,
            None => kind_matched = false,
        });
        if !kind_matched {
            return;
        }
        if let Err(e) = queued {
            self.close_over_limit(key, format!("client is not reading: {e}"));
            return;
        }
        if conn.io.pending_output_bytes() > before {
            self.dirty.push(key);
        }
        if end {
            self.flush(key);
            self.close_later(key, end_reason.into());
            return;
        }
        self.maybe_resume(key);
    }
}
