//! Delivering what the node applied to its listeners: after the node's `before_sleep`,
//! the changes of the entries it applied ([`crate::replica::changes`]) become pub/sub
//! messages and keyspace notifications ([`super::redis::pubsub::Hub`]), written into
//! the receiving connections' output buffers and flushed with the turn's replies.
//!
//! Bounded, as Redis's `client-output-buffer-limit` for pub/sub: a receiver whose
//! unwritten output would pass `limits.output_bytes_max` is disconnected, never waited
//! for, so a subscriber that does not read cannot hold memory or the loop. Each message
//! is encoded once per protocol, whatever the number of receivers.
//!
//! Invariant: the node observes applied entries only while something here listens
//! ([`Net::observe`]), so a node without subscribers does no work per entry.

use super::net::{ConnKind, Net};
use crate::codec::resp::Protocol;
use crate::replica::changes::{Applied, Observe};

impl Net {
    /// What the node must report about the entries it applies.
    pub(super) fn observe(&self) -> Observe {
        if self.hub.is_idle() {
            Observe::Off
        } else {
            Observe::Events
        }
    }

    /// Writes the messages of `applied` (in log order) to their receivers.
    pub(super) fn deliver_applied(&mut self, applied: &[Applied]) {
        for entry in applied {
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
