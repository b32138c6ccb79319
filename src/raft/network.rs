//! Test harness: a hand-driven network of `RawNode`s over `MemStore`s, in the
//! style of raft-rs `harness/src/network.rs`. Messages go through one FIFO
//! queue; `deliver` runs until quiescent. Links can be cut, nodes isolated, and
//! a filter can drop chosen messages. Each node's `Ready` is handled exactly as
//! the driver contract says (store snapshot, append, hard state, then advance).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::core::{Config, Role};
use super::message::{Configuration, Entry, Message, NodeId};
use super::raw_node::RawNode;
use super::read_only::ReadState;
use super::store::{LogStore, MemStore};

/// Decides whether a message is dropped.
pub type Filter = Box<dyn FnMut(&Message) -> bool>;

/// Nodes, their applied entries and read states, and the wire between them.
pub struct Network {
    pub nodes: BTreeMap<NodeId, RawNode<MemStore>>,
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    pub read_states: BTreeMap<NodeId, Vec<ReadState>>,
    queue: VecDeque<Message>,
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Drops the messages for which it returns true.
    pub filter: Option<Filter>,
    /// Every message delivered so far (for assertions on traffic).
    pub delivered: Vec<Message>,
}

/// The config used by the tests: small and fast.
pub fn test_config(id: NodeId) -> Config {
    let mut config = Config::new(id);
    config.election_ticks = 10;
    config.heartbeat_ticks = 1;
    config
}

impl Network {
    /// `ids` as voters, all with empty logs.
    pub fn new(ids: &[NodeId]) -> Network {
        let config = Configuration::new(ids.iter().copied(), []);
        let stores = ids
            .iter()
            .map(|&id| (id, MemStore::new(config.clone())))
            .collect();
        Network::with_stores(stores, test_config)
    }

    /// Nodes over the given stores, configured by `make_config`.
    pub fn with_stores(
        stores: Vec<(NodeId, MemStore)>,
        make_config: impl Fn(NodeId) -> Config,
    ) -> Network {
        let mut net = Network {
            nodes: BTreeMap::new(),
            applied: BTreeMap::new(),
            read_states: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            filter: None,
            delivered: Vec::new(),
        };
        for (id, store) in stores {
            net.add_node(id, store, make_config(id));
        }
        net
    }

    /// Adds (or restarts) a node.
    pub fn add_node(&mut self, id: NodeId, store: MemStore, config: Config) {
        let node = RawNode::new(config, store, id * 7919).expect("valid test node");
        self.nodes.insert(id, node);
        self.applied.entry(id).or_default();
    }

    /// The node `id`.
    pub fn node(&mut self, id: NodeId) -> &mut RawNode<MemStore> {
        self.nodes.get_mut(&id).expect("node exists")
    }

    /// Handles every pending `Ready` of every node, queueing their messages.
    pub fn process(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            while self.node(id).has_ready() {
                let node = self.nodes.get_mut(&id).expect("node exists");
                let ready = node.ready().expect("ready");
                self.queue.extend(ready.messages.iter().cloned());
                let store = node.store_mut();
                for chunk in &ready.snapshot_chunks {
                    store.write_snapshot_chunk(chunk);
                }
                if let Some(snapshot) = &ready.snapshot {
                    store.apply_snapshot(snapshot.clone());
                }
                store.append(&ready.entries);
                if let Some(hard_state) = ready.hard_state {
                    store.set_hard_state(hard_state);
                }
                self.queue.extend(ready.messages_after_sync.iter().cloned());
                let applied = self.applied.entry(id).or_default();
                applied.extend(ready.committed_entries.iter().cloned());
                self.read_states
                    .entry(id)
                    .or_default()
                    .extend(ready.read_states.iter().cloned());
                node.advance(ready).expect("advance");
            }
        }
    }

    /// Delivers messages until no node has anything to say.
    pub fn deliver(&mut self) {
        loop {
            self.process();
            let Some(message) = self.queue.pop_front() else {
                return;
            };
            if self.cut.contains(&(message.from, message.to))
                || !self.nodes.contains_key(&message.to)
            {
                continue;
            }
            if let Some(filter) = self.filter.as_mut()
                && filter(&message)
            {
                continue;
            }
            self.delivered.push(message.clone());
            self.node(message.to).step(message).expect("step");
        }
    }

    /// Ticks `id` `count` times, delivering after each tick.
    pub fn tick(&mut self, id: NodeId, count: usize) {
        for _ in 0..count {
            self.node(id).tick().expect("tick");
            self.deliver();
        }
    }

    /// Ticks every node `count` times, delivering after each round.
    pub fn tick_all(&mut self, count: usize) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for _ in 0..count {
            for &id in &ids {
                self.node(id).tick().expect("tick");
            }
            self.deliver();
        }
    }

    /// Makes `id` campaign and delivers.
    pub fn campaign(&mut self, id: NodeId) {
        self.node(id).campaign().expect("campaign");
        self.deliver();
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&mut self, a: NodeId, b: NodeId) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    /// Cuts `id` from everyone.
    pub fn isolate(&mut self, id: NodeId) {
        let ids: Vec<NodeId> = self
            .nodes
            .keys()
            .copied()
            .filter(|&other| other != id)
            .collect();
        for other in ids {
            self.cut(id, other);
        }
    }

    /// Heals every cut and removes the filter.
    pub fn recover(&mut self) {
        self.cut.clear();
        self.filter = None;
    }

    /// The nodes that believe they lead, with their terms.
    pub fn leaders(&self) -> Vec<(NodeId, u64)> {
        let statuses = self.nodes.values().map(|node| node.status());
        statuses
            .filter(|s| s.role == Role::Leader)
            .map(|s| (s.id, s.term))
            .collect()
    }

    /// (index, term) of every entry of `id`'s store.
    pub fn log_of(&self, id: NodeId) -> Vec<(u64, u64)> {
        let store = self.nodes[&id].store();
        let entries = store
            .entries(store.first_index(), store.last_index() + 1, u64::MAX)
            .unwrap_or_default();
        entries.iter().map(|e| (e.index, e.term)).collect()
    }
}
