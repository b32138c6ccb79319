//! A Redis connection's subscriptions and the subscribed mode, as redis-server 7 has
//! them: (P)SUBSCRIBE / (P)UNSUBSCRIBE confirm each channel or pattern with its
//! running count; while a RESP2 connection holds a subscription it may only run
//! (P)SUBSCRIBE, (P)UNSUBSCRIBE, PING (answered `["pong", arg]`), QUIT and RESET, any
//! other command getting Redis's error; a RESP3 connection gets its confirmations and
//! messages as `>` pushes and may run any command.
//!
//! The connection's own sets are updated when the command arrives (so the mode and the
//! counts follow the command order); the node's index ([`super::pubsub::Hub`]) is
//! changed when the command's slot starts, after every earlier command finished, so no
//! message of a channel is written before its confirmation.
//!
//! Invariant: `channels` and `patterns` are exactly what the index lists for this
//! connection once the started slots' changes are taken.

use std::collections::BTreeSet;

use super::command::{Bytes, is_known};
use super::pubsub::SubscriptionChange;
use crate::codec::resp::{Protocol, RespValue};

/// The commands a RESP2 connection may run while subscribed.
const ALLOWED: [&str; 7] = [
    "subscribe",
    "psubscribe",
    "unsubscribe",
    "punsubscribe",
    "ping",
    "quit",
    "reset",
];

/// One connection's channels and patterns.
#[derive(Debug, Default)]
pub struct Subscriptions {
    channels: BTreeSet<Bytes>,
    patterns: BTreeSet<Bytes>,
}

/// Which kind of name a subscription command is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Channels (SUBSCRIBE / UNSUBSCRIBE).
    Channel,
    /// Patterns (PSUBSCRIBE / PUNSUBSCRIBE).
    Pattern,
}

impl Subscriptions {
    /// Channels plus patterns (the count in every confirmation).
    pub fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    /// The channels and the patterns (for removing a closed connection from the index).
    pub fn names(&self) -> (Vec<Bytes>, Vec<Bytes>) {
        let channels = self.channels.iter().cloned().collect();
        (channels, self.patterns.iter().cloned().collect())
    }

    /// (Number of channels, number of patterns), for `CLIENT LIST`.
    pub fn sizes(&self) -> (usize, usize) {
        (self.channels.len(), self.patterns.len())
    }

    /// SUBSCRIBE / PSUBSCRIBE `names`: the confirmations, and the index changes.
    pub fn subscribe(
        &mut self,
        kind: Kind,
        names: Vec<Bytes>,
    ) -> (RespValue, Vec<SubscriptionChange>) {
        let mut replies = Vec::with_capacity(names.len());
        let mut changes = Vec::new();
        for name in names {
            let added = match kind {
                Kind::Channel => self.channels.insert(name.clone()),
                Kind::Pattern => self.patterns.insert(name.clone()),
            };
            if added {
                changes.push(match kind {
                    Kind::Channel => SubscriptionChange::Subscribe(name.clone()),
                    Kind::Pattern => SubscriptionChange::Psubscribe(name.clone()),
                });
            }
            let word = match kind {
                Kind::Channel => "subscribe",
                Kind::Pattern => "psubscribe",
            };
            replies.push(confirmation(word, Some(name), self.count()));
        }
        (RespValue::Replies(replies), changes)
    }

    /// UNSUBSCRIBE / PUNSUBSCRIBE `names` (none: all of that kind): the confirmations
    /// (one with a nil name when there was nothing to leave), and the index changes.
    pub fn unsubscribe(
        &mut self,
        kind: Kind,
        names: Vec<Bytes>,
    ) -> (RespValue, Vec<SubscriptionChange>) {
        let word = match kind {
            Kind::Channel => "unsubscribe",
            Kind::Pattern => "punsubscribe",
        };
        let set = match kind {
            Kind::Channel => &self.channels,
            Kind::Pattern => &self.patterns,
        };
        let names = if names.is_empty() {
            set.iter().cloned().collect()
        } else {
            names
        };
        if names.is_empty() {
            let reply = confirmation(word, None, self.count());
            return (RespValue::Replies(vec![reply]), Vec::new());
        }
        let mut replies = Vec::with_capacity(names.len());
        let mut changes = Vec::new();
        for name in names {
            let removed = match kind {
                Kind::Channel => self.channels.remove(&name),
                Kind::Pattern => self.patterns.remove(&name),
            };
            if removed {
                changes.push(match kind {
                    Kind::Channel => SubscriptionChange::Unsubscribe(name.clone()),
                    Kind::Pattern => SubscriptionChange::Punsubscribe(name.clone()),
                });
            }
            replies.push(confirmation(word, Some(name), self.count()));
        }
        (RespValue::Replies(replies), changes)
    }

    /// RESET: leaves everything without confirmations; the index changes.
    pub fn reset(&mut self) -> Vec<SubscriptionChange> {
        let channels = std::mem::take(&mut self.channels);
        let patterns = std::mem::take(&mut self.patterns);
        let channels = channels.into_iter().map(SubscriptionChange::Unsubscribe);
        channels
            .chain(patterns.into_iter().map(SubscriptionChange::Punsubscribe))
            .collect()
    }

    /// In RESP2 subscribed mode, the reply that replaces running `args`: Redis's refusal
    /// of a command not allowed there, or PING's `["pong", arg]`. `None`: run it.
    pub fn intercept(&self, protocol: Protocol, args: &[Bytes]) -> Option<RespValue> {
        if protocol != Protocol::Resp2 || self.count() == 0 {
            return None;
        }
        let name = String::from_utf8_lossy(args.first()?).to_lowercase();
        if name == "ping" && args.len() <= 2 {
            let arg = args.get(1).cloned().unwrap_or_default();
            return Some(RespValue::Array(Some(vec![
                RespValue::bulk("pong"),
                RespValue::Bulk(Some(arg)),
            ])));
        }
        if ALLOWED.contains(&name.as_str()) || !is_known(&name) {
            return None;
        }
        let full = match (name.as_str(), args.get(1)) {
            ("client" | "config" | "command" | "pubsub", Some(sub)) => {
                format!("{name}|{}", String::from_utf8_lossy(sub).to_lowercase())
            }
            _ => name,
        };
        Some(RespValue::error(format!(
            "ERR Can't execute '{full}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / \
             QUIT / RESET are allowed in this context"
        )))
    }
}

/// `[word, name, count]` as a push (an array in RESP2).
fn confirmation(word: &str, name: Option<Bytes>, count: usize) -> RespValue {
    RespValue::Push(vec![
        RespValue::bulk(word),
        RespValue::Bulk(name),
        RespValue::Integer(count as i64),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<Bytes> {
        line.split(' ').map(|w| w.as_bytes().to_vec()).collect()
    }

    /// Goal: confirmations carry the running count, repeated names change nothing in
    /// the index, and an UNSUBSCRIBE of nothing answers a nil name. Method: a sequence
    /// of commands with the replies and changes expected.
    #[test]
    fn confirmations_count_and_changes_follow_redis() {
        let mut subs = Subscriptions::default();
        let (reply, changes) = subs.subscribe(Kind::Channel, args("a b a"));
        let counts: Vec<RespValue> = match reply {
            RespValue::Replies(replies) => replies,
            other => panic!("{other:?}"),
        };
        assert_eq!(counts[2], confirmation("subscribe", Some(b"a".to_vec()), 2));
        assert_eq!(changes.len(), 2);
        let (_, changes) = subs.subscribe(Kind::Pattern, args("n*"));
        assert_eq!(
            changes,
            vec![SubscriptionChange::Psubscribe(b"n*".to_vec())]
        );
        let (reply, changes) = subs.unsubscribe(Kind::Channel, Vec::new());
        let want = RespValue::Replies(vec![
            confirmation("unsubscribe", Some(b"a".to_vec()), 2),
            confirmation("unsubscribe", Some(b"b".to_vec()), 1),
        ]);
        assert_eq!(reply, want);
        assert_eq!(changes.len(), 2);
        let (reply, _) = subs.unsubscribe(Kind::Channel, Vec::new());
        let want = RespValue::Replies(vec![confirmation("unsubscribe", None, 1)]);
        assert_eq!(reply, want);
        assert_eq!(subs.reset().len(), 1);
        assert_eq!(subs.count(), 0);
    }

    /// Goal: RESP2 subscribed mode allows only Redis's set of commands, with its error
    /// text, and answers PING as an array; RESP3 and unsubscribed connections run
    /// anything. Method: a table of commands in both protocols.
    #[test]
    fn resp2_subscribed_mode_refuses_other_commands() {
        let mut subs = Subscriptions::default();
        assert_eq!(subs.intercept(Protocol::Resp2, &args("get k")), None);
        subs.subscribe(Kind::Channel, args("c"));
        let refusal = |full: &str| {
            Some(RespValue::error(format!(
                "ERR Can't execute '{full}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING \
                 / QUIT / RESET are allowed in this context"
            )))
        };
        let pong = |arg: &str| {
            Some(RespValue::Array(Some(vec![
                RespValue::bulk("pong"),
                RespValue::bulk(arg),
            ])))
        };
        let cases = [
            ("GET k", refusal("get")),
            ("client list", refusal("client|list")),
            ("PING", pong("")),
            ("ping hi", pong("hi")),
            ("SUBSCRIBE d", None),
            ("punsubscribe", None),
            ("nosuchcommand", None),
        ];
        for (i, (line, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                subs.intercept(Protocol::Resp2, &args(line)),
                want,
                "#{i}: {line}"
            );
            assert_eq!(
                subs.intercept(Protocol::Resp3, &args(line)),
                None,
                "#{i}: {line}"
            );
        }
    }
}
