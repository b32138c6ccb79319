//! Native watches: which client-port requests of this node watch which key or prefix,
//! and the events an applied entry sends them ([`WatchEvent`]: revision = the entry's
//! log index, put with the value after the entry, or delete).
//!
//! A node serves its watches from what it applies itself (any node, leader or not), from
//! the next entry on; no history is kept, so a watch cannot start at an older revision,
//! and a node that catches up by installing a snapshot reports nothing for the entries
//! the snapshot covers. An entry reports one event per key (its state after the entry),
//! in the order the entry first touched the keys; a flush reports a delete of every
//! watched key it removed.
//!
//! Cost: an exact-key watch is found by one hash lookup per changed key; prefix watches
//! are checked per changed key (O(prefix watches)), as Redis checks patterns.
//!
//! Invariant: `by_client` counts the watches of each connection in `keys` and
//! `prefixes`, so [`Watches::has_client`] is O(1) and removal visits only a closing
//! connection's own entries when it has any.

use std::collections::HashMap;

use crate::codec::client::{WatchEvent, WatchKind};
use crate::kv::{KvStore, RangeQuery};
use crate::replica::ClientRef;
use crate::replica::changes::Applied;

/// One watch request: the connection and the request id its events answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watcher {
    /// The connection.
    pub client: ClientRef,
    /// The watch request's id.
    pub request_id: u64,
}

/// The watches of one node.
#[derive(Debug, Default)]
pub struct Watches {
    keys: HashMap<Vec<u8>, Vec<Watcher>>,
    prefixes: Vec<(Vec<u8>, Watcher)>,
    /// Invariant: see the module docs.
    by_client: HashMap<usize, usize>,
}

impl Watches {
    /// Adds a watch of `key` (or of the keys starting with it, with `prefix`).
    pub fn add(&mut self, watcher: Watcher, key: Vec<u8>, prefix: bool) {
        if prefix {
            self.prefixes.push((key, watcher));
        } else {
            self.keys.entry(key).or_default().push(watcher);
        }
        *self.by_client.entry(watcher.client.key).or_default() += 1;
    }

    /// Whether there is no watch at all.
    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    /// Whether connection `key` watches something (it is not idle then).
    pub fn has_client(&self, key: usize) -> bool {
        self.by_client.contains_key(&key)
    }

    /// Forgets the watches of a closed connection.
    pub fn remove_client(&mut self, client: ClientRef) {
        if self.by_client.remove(&client.key).is_none() {
            return;
        }
        self.keys.retain(|_, watchers| {
            watchers.retain(|w| w.client != client);
            !watchers.is_empty()
        });
        self.prefixes.retain(|(_, w)| w.client != client);
    }

    fn watchers_of<'a>(&'a self, key: &'a [u8]) -> impl Iterator<Item = Watcher> + 'a {
        let exact = self.keys.get(key).into_iter().flatten().copied();
        let prefixed = self
            .prefixes
            .iter()
            .filter(move |(p, _)| key.starts_with(p));
        exact.chain(prefixed.map(|(_, w)| *w))
    }

    /// The events of an applied entry, for their watchers.
    pub fn events(&self, applied: &Applied) -> Vec<(Watcher, WatchEvent)> {
        let mut out = Vec::new();
        if self.is_empty() {
            return out;
        }
        let mut last: HashMap<&[u8], usize> = HashMap::new();
        let mut order: Vec<(&[u8], WatchKind, &[u8])> = Vec::new();
        for event in &applied.events {
            let (kind, value) = match (&event.value, event.event.deletes()) {
                (Some(value), false) => (WatchKind::Put, value.as_slice()),
                _ => (WatchKind::Delete, &[][..]),
            };
            match last.get(event.key.as_slice()) {
                Some(&at) => order[at] = (&event.key, kind, value),
                None => {
                    last.insert(&event.key, order.len());
                    order.push((&event.key, kind, value));
                }
            }
        }
        if let Some(before) = &applied.flushed {
            for (watcher, key) in self.flushed_keys(before) {
                if !last.contains_key(key.as_slice()) {
                    let event = watch_event(applied.index, WatchKind::Delete, &key, &[]);
                    out.push((watcher, event));
                }
            }
        }
        for (key, kind, value) in order {
            for watcher in self.watchers_of(key) {
                out.push((watcher, watch_event(applied.index, kind, key, value)));
            }
        }
        out
    }

    /// The watched keys present in `before` (the state a flush removed), per watcher.
    fn flushed_keys(&self, before: &KvStore) -> Vec<(Watcher, Vec<u8>)> {
        let mut out = Vec::new();
        for (key, watchers) in &self.keys {
            if before.get(key).is_some() {
                out.extend(watchers.iter().map(|w| (*w, key.clone())));
            }
        }
        for (prefix, watcher) in &self.prefixes {
            let mut query = RangeQuery {
                keys_only: true,
                ..RangeQuery::prefix(prefix)
            };
            loop {
                let page = before.range(&query);
                let next = page.entries.last().map(|(key, _)| query.after(key));
                out.extend(page.entries.into_iter().map(|(key, _)| (*watcher, key)));
                match next {
                    Some(next) if page.more => query = next,
                    _ => break,
                }
            }
        }
        out
    }
}

fn watch_event(revision: u64, kind: WatchKind, key: &[u8], value: &[u8]) -> WatchEvent {
    WatchEvent {
        revision,
        kind,
        key: key.to_vec(),
        value: value.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{Command, KvConfig, Op, RmwOp, Session, command_to_vec};
    use crate::replica::changes::{Observe, apply_observed};

    fn watcher(key: usize, request_id: u64) -> Watcher {
        Watcher {
            client: ClientRef { key, generation: 1 },
            request_id,
        }
    }

    type Short = (u64, u64, WatchKind, String, String);

    fn run(watches: &Watches, kv: &mut KvStore, index: u64, command: &Command) -> Vec<Short> {
        let data = command_to_vec(command);
        let (_, applied) = apply_observed(kv, index, &data, Observe::EventsAndValues);
        let applied = applied.expect("observed");
        let short = |(w, e): &(Watcher, WatchEvent)| {
            let key = String::from_utf8_lossy(&e.key).into_owned();
            let value = String::from_utf8_lossy(&e.value).into_owned();
            (w.request_id, e.revision, e.kind, key, value)
        };
        watches.events(&applied).iter().map(short).collect()
    }

    /// Goal: exact and prefix watches get one event per changed key of an entry, with
    /// the entry's index, the value after it, deletes of keys a flush removed, and
    /// nothing once their connection closed. Method: apply real commands to a store with
    /// values observed and look at the events.
    #[test]
    fn watches_get_puts_deletes_and_flushes_of_their_keys() {
        let mut kv = KvStore::new(KvConfig::default());
        kv.apply(1, &command_to_vec(&Command::RegisterSession));
        let mut watches = Watches::default();
        watches.add(watcher(1, 7), b"a/x".to_vec(), false);
        watches.add(watcher(2, 9), b"a/".to_vec(), true);
        let session = |seq| Session { client_id: 1, seq };
        let txn = Command::Txn {
            session: session(1),
            compare: Vec::new(),
            success: vec![
                Op::Put {
                    key: b"a/x".to_vec(),
                    value: b"1".to_vec(),
                },
                Op::Put {
                    key: b"a/x".to_vec(),
                    value: b"2".to_vec(),
                },
                Op::Put {
                    key: b"a/y".to_vec(),
                    value: b"3".to_vec(),
                },
                Op::Put {
                    key: b"b".to_vec(),
                    value: b"4".to_vec(),
                },
            ],
            failure: Vec::new(),
        };
        let s = |text: &str| text.to_string();
        let got = run(&watches, &mut kv, 2, &txn);
        let want = vec![
            (7, 2, WatchKind::Put, s("a/x"), s("2")),
            (9, 2, WatchKind::Put, s("a/x"), s("2")),
            (9, 2, WatchKind::Put, s("a/y"), s("3")),
        ];
        assert_eq!(got, want);
        let flush = Command::Rmw {
            session: session(2),
            op: RmwOp::FlushAll,
        };
        let mut got = run(&watches, &mut kv, 3, &flush);
        got.sort();
        let want = vec![
            (7, 3, WatchKind::Delete, s("a/x"), s("")),
            (9, 3, WatchKind::Delete, s("a/x"), s("")),
            (9, 3, WatchKind::Delete, s("a/y"), s("")),
        ];
        assert_eq!(got, want);
        watches.remove_client(watcher(2, 9).client);
        assert!(!watches.has_client(2));
        let put = Command::Put {
            session: session(3),
            key: b"a/z".to_vec(),
            value: b"5".to_vec(),
        };
        assert!(run(&watches, &mut kv, 4, &put).is_empty());
    }
}
