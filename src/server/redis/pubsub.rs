//! The node's pub/sub index: which Redis connections of this node listen to which
//! channels and patterns, and the messages an applied entry sends them (a PUBLISH, or
//! the keyspace notifications of its key events under `notify-keyspace-events`).
//!
//! Every node keeps its own index and delivers what it applies itself, so a message
//! published on any node reaches the subscribers of every node, in log order. The
//! connection's own state ([`super::RedisConn`]) keeps its subscriptions (for replies
//! and counts) and hands the changes here ([`SubscriptionChange`]); the loop removes a
//! closed connection with [`Hub::remove`].
//!
//! Cost, as Redis: a message is matched against its channel by one hash lookup, so the
//! fan-out is O(subscribers of the channel), plus one glob match per distinct pattern.
//!
//! Invariant: a connection is listed under a channel (pattern) at most once, and a
//! channel (pattern) with no connection left is removed, so `PUBSUB CHANNELS` and
//! `NUMPAT` count only live ones.

use std::collections::HashMap;

use super::glob;
use super::notify::NotifyFlags;
use crate::codec::resp::RespValue;
use crate::replica::ClientRef;
use crate::replica::changes::Applied;

/// A change of one connection's subscriptions, for the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionChange {
    /// SUBSCRIBE of this channel.
    Subscribe(Vec<u8>),
    /// UNSUBSCRIBE of this channel.
    Unsubscribe(Vec<u8>),
    /// PSUBSCRIBE of this pattern.
    Psubscribe(Vec<u8>),
    /// PUNSUBSCRIBE of this pattern.
    Punsubscribe(Vec<u8>),
}

/// A question about the index (`PUBSUB ...`), answered by the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PubsubQuery {
    /// `PUBSUB CHANNELS [pattern]`.
    Channels(Option<Vec<u8>>),
    /// `PUBSUB NUMSUB [channel ...]`.
    Numsub(Vec<Vec<u8>>),
    /// `PUBSUB NUMPAT`.
    Numpat,
    /// PUBLISH's reply: the connections of this node that receive a message on this
    /// channel.
    Receivers(Vec<u8>),
}

/// A message to write to some connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The push (`message` or `pmessage`).
    pub value: RespValue,
    /// Who gets it.
    pub to: Vec<ClientRef>,
}

/// The index of one node.
#[derive(Debug, Default)]
pub struct Hub {
    channels: HashMap<Vec<u8>, Vec<ClientRef>>,
    patterns: HashMap<Vec<u8>, Vec<ClientRef>>,
    /// `notify-keyspace-events`.
    pub notify: NotifyFlags,
}

fn add(map: &mut HashMap<Vec<u8>, Vec<ClientRef>>, name: Vec<u8>, client: ClientRef) {
    let listeners = map.entry(name).or_default();
    if !listeners.contains(&client) {
        listeners.push(client);
    }
}

fn remove(map: &mut HashMap<Vec<u8>, Vec<ClientRef>>, name: &[u8], client: ClientRef) {
    if let Some(listeners) = map.get_mut(name) {
        listeners.retain(|c| *c != client);
        if listeners.is_empty() {
            map.remove(name);
        }
    }
}

impl Hub {
    /// An empty index with `notify-keyspace-events` set to `flags` (validated with the
    /// configuration; anything else is off).
    pub fn with_notify(flags: &str) -> Hub {
        Hub {
            notify: NotifyFlags::parse(flags.as_bytes()).unwrap_or_default(),
            ..Hub::default()
        }
    }

    /// Applies one connection's subscription change.
    pub fn change(&mut self, client: ClientRef, change: SubscriptionChange) {
        match change {
            SubscriptionChange::Subscribe(name) => add(&mut self.channels, name, client),
            SubscriptionChange::Unsubscribe(name) => remove(&mut self.channels, &name, client),
            SubscriptionChange::Psubscribe(name) => add(&mut self.patterns, name, client),
            SubscriptionChange::Punsubscribe(name) => remove(&mut self.patterns, &name, client),
        }
    }

    /// Forgets a closed connection, given the channels and patterns it listened to.
    pub fn remove(&mut self, client: ClientRef, channels: &[Vec<u8>], patterns: &[Vec<u8>]) {
        for name in channels {
            remove(&mut self.channels, name, client);
        }
        for name in patterns {
            remove(&mut self.patterns, name, client);
        }
    }

    /// Whether no connection listens to anything, and no keyspace notification can be
    /// sent: applied entries need not be observed for Redis.
    pub fn is_idle(&self) -> bool {
        self.channels.is_empty() && self.patterns.is_empty()
    }

    /// The answer to a [`PubsubQuery`], as Redis 7 gives it for this node's connections.
    pub fn answer(&self, query: &PubsubQuery) -> RespValue {
        match query {
            PubsubQuery::Channels(pattern) => {
                let mut names: Vec<&Vec<u8>> = self
                    .channels
                    .keys()
                    .filter(|name| pattern.as_ref().is_none_or(|p| glob::matches(p, name)))
                    .collect();
                names.sort();
                RespValue::Array(Some(names.into_iter().map(RespValue::bulk).collect()))
            }
            PubsubQuery::Numsub(names) => {
                let mut reply = Vec::with_capacity(2 * names.len());
                for name in names {
                    let count = self.channels.get(name).map_or(0, Vec::len);
                    reply.push(RespValue::bulk(name));
                    reply.push(RespValue::Integer(count as i64));
                }
                RespValue::Array(Some(reply))
            }
            PubsubQuery::Numpat => RespValue::Integer(self.patterns.len() as i64),
            PubsubQuery::Receivers(channel) => {
                let direct = self.channels.get(channel).map_or(0, Vec::len);
                let by_pattern: usize = self
                    .patterns
                    .iter()
                    .filter(|(pattern, _)| glob::matches(pattern, channel))
                    .map(|(_, listeners)| listeners.len())
                    .sum();
                RespValue::Integer((direct + by_pattern) as i64)
            }
        }
    }

    /// The messages of `message` on `channel`: one `message` push to the channel's
    /// subscribers, one `pmessage` per matching pattern to that pattern's.
    pub fn publish(&self, channel: &[u8], message: &[u8], out: &mut Vec<Delivery>) {
        if let Some(listeners) = self.channels.get(channel) {
            out.push(Delivery {
                value: RespValue::Push(vec![
                    RespValue::bulk("message"),
                    RespValue::bulk(channel),
                    RespValue::bulk(message),
                ]),
                to: listeners.clone(),
            });
        }
        for (pattern, listeners) in &self.patterns {
            if glob::matches(pattern, channel) {
                out.push(Delivery {
                    value: RespValue::Push(vec![
                        RespValue::bulk("pmessage"),
                        RespValue::bulk(pattern),
                        RespValue::bulk(channel),
                        RespValue::bulk(message),
                    ]),
                    to: listeners.clone(),
                });
            }
        }
    }

    /// The deliveries of an applied entry: its PUBLISH, and the keyspace notifications
    /// of its key events that `notify` enables.
    pub fn deliveries(&self, applied: &Applied) -> Vec<Delivery> {
        let mut out = Vec::new();
        if self.is_idle() {
            return out;
        }
        if let Some((channel, message)) = &applied.published {
            self.publish(channel, message, &mut out);
        }
        if !self.notify.any() {
            return out;
        }
        for event in &applied.events {
            let (keyspace, keyevent) = self.notify.channels_for(event.event);
            let name = event.event.name().as_bytes();
            if keyspace {
                let mut channel = b"__keyspace@0__:".to_vec();
                channel.extend_from_slice(&event.key);
                self.publish(&channel, name, &mut out);
            }
            if keyevent {
                let mut channel = b"__keyevent@0__:".to_vec();
                channel.extend_from_slice(name);
                self.publish(&channel, &event.key, &mut out);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::changes::{Event, KeyEvent};

    fn client(key: usize) -> ClientRef {
        ClientRef { key, generation: 1 }
    }

    fn applied(published: Option<(&str, &str)>, events: &[(&str, Event)]) -> Applied {
        Applied {
            index: 7,
            events: events
                .iter()
                .map(|(key, event)| KeyEvent {
                    key: key.as_bytes().to_vec(),
                    event: *event,
                    value: None,
                })
                .collect(),
            published: published.map(|(c, m)| (c.as_bytes().to_vec(), m.as_bytes().to_vec())),
            flushed: None,
        }
    }

    /// Goal: a message reaches the channel's subscribers and each matching pattern's,
    /// and the PUBSUB answers count live subscriptions only. Method: subscribe three
    /// connections, publish, unsubscribe and ask again.
    #[test]
    fn messages_reach_channel_and_pattern_subscribers() {
        let mut hub = Hub::default();
        hub.change(client(1), SubscriptionChange::Subscribe(b"news".to_vec()));
        hub.change(client(1), SubscriptionChange::Subscribe(b"news".to_vec()));
        hub.change(client(2), SubscriptionChange::Subscribe(b"news".to_vec()));
        hub.change(client(3), SubscriptionChange::Psubscribe(b"n*".to_vec()));
        hub.change(client(3), SubscriptionChange::Psubscribe(b"x*".to_vec()));
        let out = hub.deliveries(&applied(Some(("news", "hi")), &[]));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].to, vec![client(1), client(2)]);
        assert_eq!(out[1].to, vec![client(3)]);
        let RespValue::Push(parts) = &out[1].value else {
            panic!("not a push: {:?}", out[1].value);
        };
        assert_eq!(parts[0], RespValue::bulk("pmessage"));
        assert_eq!(parts[1], RespValue::bulk("n*"));
        let receivers = PubsubQuery::Receivers(b"news".to_vec());
        assert_eq!(hub.answer(&receivers), RespValue::Integer(3));
        assert_eq!(hub.answer(&PubsubQuery::Numpat), RespValue::Integer(2));
        hub.change(client(2), SubscriptionChange::Unsubscribe(b"news".to_vec()));
        hub.remove(client(1), &[b"news".to_vec()], &[]);
        let channels = hub.answer(&PubsubQuery::Channels(None));
        assert_eq!(channels, RespValue::Array(Some(Vec::new())));
        let numsub = hub.answer(&PubsubQuery::Numsub(vec![b"news".to_vec()]));
        let want = vec![RespValue::bulk("news"), RespValue::Integer(0)];
        assert_eq!(numsub, RespValue::Array(Some(want)));
    }

    /// Goal: key events become `__keyspace@0__` / `__keyevent@0__` messages only for
    /// the classes and channel kinds enabled. Method: a subscriber of both channels,
    /// with notifications off, then `K$` only.
    #[test]
    fn keyspace_notifications_follow_the_flags() {
        let mut hub = Hub::default();
        let space = b"__keyspace@0__:k".to_vec();
        hub.change(client(1), SubscriptionChange::Subscribe(space));
        hub.change(
            client(1),
            SubscriptionChange::Psubscribe(b"__keyevent@0__:*".to_vec()),
        );
        let entry = applied(None, &[("k", Event::Set), ("k", Event::Del)]);
        assert!(hub.deliveries(&entry).is_empty(), "off by default");
        hub.notify = NotifyFlags::parse(b"K$").expect("flags");
        let out = hub.deliveries(&entry);
        assert_eq!(out.len(), 1, "{out:?}");
        let want = RespValue::Push(vec![
            RespValue::bulk("message"),
            RespValue::bulk("__keyspace@0__:k"),
            RespValue::bulk("set"),
        ]);
        assert_eq!(out[0].value, want);
        hub.notify = NotifyFlags::parse(b"AKE").expect("flags");
        assert_eq!(hub.deliveries(&entry).len(), 4);
    }
}
