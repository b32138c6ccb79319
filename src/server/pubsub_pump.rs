//! Delivering what the node applied to its listeners: after the node's `before_sleep`,
//! the changes of the entries it applied ([`crate::replica::changes`]) become pub/sub
//! messages and keyspace notifications ([`super::redis::pubsub::Hub`]) and native watch
//! events ([`super::watch`]), written into the receiving connections' output buffers and
//! flushed with the turn's replies. A watch request on a client connection is taken
//! here too ([`Net::start_watch`]): it is answered by the loop, not the replica.
//!
//! Bounded, as Redis's `client-output-buffer-limit` for pub/sub: a receiver whose
//! unwritten output would pass `limits.output_bytes_max` is disconnected, never waited
//! for, so a subscriber that does not read cannot hold memory or the loop. Each message
//! is encoded once per protocol, whatever the number of receivers.
//!
//! Invariant: the node observes applied entries only while something here listens
//! ([`Net::observe`]), so a node without subscribers does no work per entry.

use super::net::{ConnKind, Net};
use super::watch::Watcher;
use crate::codec::client::{self as client_codec, Response, ResponseBody, WatchEvent, WatchKind};
use crate::codec::resp::Protocol;
use crate::replica::ClientRef;
use crate::replica::changes::{Applied, Observe};

impl Net {
    /// What the node must report about the entries it applies.
    pub(super) fn observe(&self) -> Observe {
        if !self.watches.is_empty() {
            Observe::EventsAndValues
        } else if !self.hub.is_idle() {
            Observe::Events
        } else {
            Observe::Off
        }
    }

    /// Starts the watch request `request_id` of client connection `client` on `key`
    /// (a prefix with `prefix`): answers `Started` at the node's `applied_index`; the
    /// events of every later entry follow.
    pub(super) fn start_watch(
        &mut self,
        client: ClientRef,
        request_id: u64,
        key: Vec<u8>,
        prefix: bool,
        applied_index: u64,
    ) {
        let watcher = Watcher { client, request_id };
        self.watches.add(watcher, key, prefix);
        let started = WatchEvent {
            revision: applied_index,
            kind: WatchKind::Started,
            key: Vec::new(),
            value: Vec::new(),
        };
        let response = Response {
            request_id,
            body: ResponseBody::Watch(started),
        };
        crate::replica::Outbox::reply(self, client, response);
    }

    /// Writes one watch event as a response frame to its watcher.
    fn send_watch_event(&mut self, watcher: Watcher, event: WatchEvent) {
        let codec = self.frame;
        let client = watcher.client;
        let Some(conn) = self.conns.get_mut(client.key) else {
            return;
        };
        if conn.generation != client.generation || conn.closing {
            return;
        }
        let response = Response {
            request_id: watcher.request_id,
            body: ResponseBody::Watch(event),
        };
        let queued = conn
            .io
            .queue_frame(&codec, |out| client_codec::encode_response(&response, out));
        match queued {
            Ok(()) => self.dirty.push(client.key),
            Err(e) => self.close_over_limit(client.key, format!("watcher is not reading: {e}")),
        }
    }

    /// Writes the messages of `applied` (in log order) to their receivers.
    pub(super) fn deliver_applied(&mut self, applied: &[Applied]) {
        for entry in applied {
            for (watcher, event) in self.watches.events(entry) {
                self.send_watch_event(watcher, event);
            }
            for delivery in self.hub.deliveries(entry) {
                let mut encoded: [Option<Vec<u8>>; 2] = [None, None];
                for client in delivery.to {
                    let Some(conn) = self.conns.get_mut(client.key) else {
                        continue;
                    };
                    if conn.generation != client.generation || conn.closing {
                        continue;
                    }
                    let ConnKind::Redis(redis) = &conn.kind else {
                        continue;
                    };
                    let protocol = redis.protocol();
                    let slot = usize::from(protocol == Protocol::Resp3);
                    let bytes = encoded[slot].get_or_insert_with(|| {
                        let mut out = Vec::new();
                        delivery.value.encode_as(protocol, &mut out);
                        out
                    });
                    match conn.io.queue(bytes) {
                        Ok(()) => self.dirty.push(client.key),
                        Err(e) => self.close_over_limit(
                            client.key,
                            format!("subscriber is not reading: {e}"),
                        ),
                    }
                }
            }
        }
    }
}
