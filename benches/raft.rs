//! The consensus core's own ceiling: proposals committed per second through an
//! in-memory 3-node cluster (MemStore, no IO, messages passed in a queue), for
//! batches of 1 and 64 proposals per round. Each iteration proposes one batch
//! on the leader and pumps Ready/step until the leader has committed it.

use std::collections::VecDeque;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use raftkv::raft::{Config, Configuration, MemStore, Message, RawNode, Role};

struct Cluster {
    nodes: Vec<RawNode<MemStore>>,
    queue: VecDeque<Message>,
}

impl Cluster {
    fn new() -> Cluster {
        let config = Configuration::new([1, 2, 3], []);
        let nodes = (1..=3)
            .map(|id| {
                RawNode::new(Config::new(id), MemStore::new(config.clone()), id)
                    .expect("valid config")
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            queue: VecDeque::new(),
        };
        cluster.nodes[0].campaign().expect("campaign");
        cluster.pump();
        assert_eq!(cluster.nodes[0].status().role, Role::Leader);
        cluster
    }

    /// Handles every Ready as the driver contract says, delivering messages until quiet.
    fn pump(&mut self) {
        loop {
            for node in &mut self.nodes {
                while node.has_ready() {
                    let ready = node.ready().expect("ready");
                    self.queue.extend(ready.messages.iter().cloned());
                    let store = node.store_mut();
                    store.append(&ready.entries);
                    if let Some(hard_state) = ready.hard_state {
                        store.set_hard_state(hard_state);
                    }
                    self.queue.extend(ready.messages_after_sync.iter().cloned());
                    node.advance(ready).expect("advance");
                }
            }
            let Some(message) = self.queue.pop_front() else {
                return;
            };
            let to = (message.to - 1) as usize;
            self.nodes[to].step(message).expect("step");
        }
    }

    /// Proposes `batch` entries of `payload` bytes and waits for their commit;
    /// compacts the stores now and then so memory stays flat.
    fn round(&mut self, batch: usize, payload: &[u8]) {
        let mut last = 0;
        for _ in 0..batch {
            // One copy per proposal, as a server copies a command out of its input buffer.
            last = self.nodes[0].propose(payload).expect("leader");
        }
        self.pump();
        assert!(self.nodes[0].status().commit >= last);
        if last % 8192 < batch as u64 {
            for node in &mut self.nodes {
                let applied = node.status().applied;
                let snapshot = node.build_snapshot(applied, Vec::new()).expect("applied");
                node.store_mut().compact(snapshot);
            }
        }
    }
}

fn propose_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("raft_propose_commit_3_nodes");
    let payload = vec![7u8; 64];
    for batch in [1usize, 64] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("batch", batch), &batch, |b, &batch| {
            let mut cluster = Cluster::new();
            b.iter(|| cluster.round(batch, &payload));
        });
    }
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    propose_commit(&mut criterion);
    criterion.final_summary();
}
