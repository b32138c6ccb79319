//! Scenario tests of the core driven through the hand-driven [`Network`]:
//! elections, partitions, log repair, the Figure 8 commit rule, ReadIndex,
//! leadership transfer, snapshots and membership changes.

use std::sync::Arc;

use super::core::Role;
use super::error::Error;
use super::message::{
    ConfigChange, Configuration, Entry, EntryKind, HardState, Message, MessageBody, SnapshotChunk,
    SnapshotMeta, SnapshotResponse,
};
use super::network::{Network, test_config};
use super::raw_node::RawNode;
use super::store::{LogStore, MemStore};

fn propose(net: &mut Network, id: u64, count: usize) {
    for i in 0..count {
        net.node(id)
            .propose(vec![i as u8; 16])
            .expect("leader accepts");
    }
    net.deliver();
}

/// Goal: a campaign with pre-vote elects one leader without burning a term on
/// the pre-vote, and the no-op commits everywhere. Reference: section 5.2,
/// thesis 9.6 (pre-vote), section 8 (no-op).
#[test]
fn election_with_pre_vote() {
    let mut net = Network::new(&[1, 2, 3]);
    net.campaign(1);
    assert_eq!(net.leaders(), vec![(1, 1)]);
    for id in 1..=3 {
        let status = net.node(id).status();
        assert_eq!(
            (status.term, status.leader, status.commit),
            (1, 1, 1),
            "node {id}"
        );
        assert_eq!(
            net.applied[&id].iter().map(|e| e.kind).collect::<Vec<_>>(),
            vec![EntryKind::Noop]
        );
    }
}

/// Goal: elections also happen by timeout alone and elect exactly one leader
/// per term. Reference: section 5.2 (randomized timeouts).
#[test]
fn election_by_timeout() {
    let mut net = Network::new(&[1, 2, 3, 4, 5]);
    net.tick_all(40);
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1, "{leaders:?}");
}

/// Goal: a node with a stale log cannot win. Method: check-quorum off, so the
/// refusal comes from the log comparison, not from the leader lease.
/// Reference: section 5.4.1.
#[test]
fn stale_log_loses_election() {
    let config = Configuration::new([1, 2, 3], []);
    let stores = (1..=3)
        .map(|id| (id, MemStore::new(config.clone())))
        .collect();
    let mut net = Network::with_stores(stores, |id| {
        let mut config = test_config(id);
        config.check_quorum = false;
        config
    });
    net.campaign(1);
    net.isolate(3);
    propose(&mut net, 1, 3);
    net.recover();
    net.isolate(1);
    net.campaign(3);
    assert_ne!(net.node(3).status().role, Role::Leader);
    net.campaign(2);
    assert_eq!(net.node(2).status().role, Role::Leader);
}

/// Goal: an isolated follower that keeps timing out does not raise its term
/// (pre-vote fails), so rejoining does not depose the leader. Reference:
/// thesis section 9.6.
#[test]
fn isolated_follower_does_not_disrupt() {
    let mut net = Network::new(&[1, 2, 3]);
    net.campaign(1);
    net.isolate(3);
    net.tick(3, 100);
    assert_eq!(net.node(3).status().term, 1, "pre-vote kept the term");
    net.recover();
    net.tick_all(5);
    assert_eq!(net.leaders(), vec![(1, 1)]);
}

/// Goal: a leader cut off from the majority steps down by check-quorum, the
/// majority elects a new leader, and the old one follows it after healing
/// without disturbing its term. Reference: thesis sections 6.2 and 9.6.
#[test]
fn partitioned_leader_steps_down() {
    let mut net = Network::new(&[1, 2, 3]);
    net.campaign(1);
    net.isolate(1);
    // The marks of the round before the cut still count once: at most two timeouts.
    net.tick(1, 20);
    assert_eq!(net.node(1).status().role, Role::Follower, "check-quorum");
    net.tick_all(60);
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1);
    let (leader, term) = leaders[0];
    assert_ne!(leader, 1);
    net.recover();
    net.tick_all(5);
    assert_eq!(net.leaders(), vec![(leader, term)]);
    assert_eq!(net.node(1).status().leader, leader);
}

fn store_with(config: &Configuration, terms: &[u64], term: u64) -> MemStore {
    let mut store = MemStore::new(config.clone());
    let entries: Vec<Entry> = terms
        .iter()
        .enumerate()
        .map(|(j, &t)| Entry {
            index: j as u64 + 1,
            term: t,
            kind: EntryKind::Normal,
            data: Arc::from([]),
        })
        .collect();
    store.append(&entries);
    store.set_hard_state(HardState {
        term,
        vote: 0,
        commit: 1,
    });
    store
}

/// Goal: a follower with a divergent tail (Figure 7 case f) is repaired, and
/// the conflict hint needs one rejection where one-by-one decrements need
/// seven. Reference: section 5.3 (the optimisation after Figure 7).
#[test]
fn log_conflict_resolved_with_fast_backtracking() {
    let config = Configuration::new([1, 2, 3], []);
    let leader_log = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let stores = vec![
        (1, store_with(&config, &leader_log, 7)),
        (2, store_with(&config, &leader_log, 7)),
        (
            3,
            store_with(&config, &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3], 7),
        ),
    ];
    let mut net = Network::with_stores(stores, test_config);
    net.campaign(1);
    assert_eq!(net.leaders(), vec![(1, 8)]);
    let rejections = net
        .delivered
        .iter()
        .filter(|m| m.from == 3 && matches!(&m.body, MessageBody::AppendResponse(r) if r.reject))
        .count();
    assert_eq!(rejections, 1);
    assert_eq!(net.log_of(3), net.log_of(1));
    assert_eq!(net.node(3).status().commit, 11);
}

/// Goal: Figure 8. A leader of term 4 that replicated an entry of term 2 to a
/// majority must not commit it by counting; it commits once its own no-op
/// reaches a majority. Method: five stores with preset logs; node 1 wins
/// term 4 and can only reach node 3. Reference: section 5.4.2, Figure 8.
#[test]
fn commit_only_current_term_entries() {
    let config = Configuration::new([1, 2, 3, 4, 5], []);
    let logs: [&[u64]; 5] = [&[1, 2], &[1, 2], &[1], &[1], &[1, 3]];
    let stores = logs
        .iter()
        .enumerate()
        .map(|(i, terms)| {
            let mut store = MemStore::new(config.clone());
            let entries: Vec<Entry> = terms
                .iter()
                .enumerate()
                .map(|(j, &term)| Entry {
                    index: j as u64 + 1,
                    term,
                    kind: EntryKind::Normal,
                    data: Arc::from([]),
                })
                .collect();
            store.append(&entries);
            store.set_hard_state(HardState {
                term: 3,
                vote: 0,
                commit: 1,
            });
            (i as u64 + 1, store)
        })
        .collect();
    let mut net = Network::with_stores(stores, test_config);
    net.filter = Some(Box::new(|m| {
        m.from == 1 && m.to != 3 && matches!(m.body, MessageBody::Append(_))
    }));
    net.campaign(1);
    assert_eq!(net.leaders(), vec![(1, 4)]);
    assert_eq!(
        net.log_of(3),
        vec![(1, 1), (2, 2), (3, 4)],
        "node 3 caught up"
    );
    assert_eq!(
        net.node(1).status().commit,
        1,
        "index 2 (term 2) is on 3 of 5 but not committable"
    );
    net.recover();
    net.tick(1, 1);
    assert_eq!(net.node(1).status().commit, 3);
    assert_eq!(
        net.log_of(5),
        net.log_of(1),
        "node 5's term-3 entry was overwritten"
    );
}

/// Goal: ReadIndex returns the commit index after one heartbeat round shared
/// by every read queued together; a follower's read is forwarded; a new
/// leader answers only after its no-op commits. Reference: thesis section 6.4.
#[test]
fn read_index() {
    let mut net = Network::new(&[1, 2, 3]);
    net.filter = Some(Box::new(|m| {
        m.from == 1 && matches!(m.body, MessageBody::Append(_))
    }));
    net.campaign(1);
    net.node(1).read_index(b"early".to_vec()).expect("leader");
    net.deliver();
    assert!(
        net.read_states[&1].is_empty(),
        "no read before the no-op commits"
    );
    net.recover();
    net.tick(1, 1);
    assert_eq!(net.read_states[&1].len(), 1);
    assert_eq!(net.read_states[&1][0].index, 1);

    propose(&mut net, 1, 3);
    net.delivered.clear();
    net.node(1).read_index(b"a".to_vec()).expect("leader");
    net.node(1).read_index(b"b".to_vec()).expect("leader");
    net.deliver();
    let heartbeats = net
        .delivered
        .iter()
        .filter(|m| matches!(&m.body, MessageBody::Heartbeat(h) if h.context != 0))
        .count();
    assert_eq!(
        heartbeats, 2,
        "one round (one heartbeat per follower) for both reads"
    );
    let got: Vec<(Vec<u8>, u64)> = net.read_states[&1][1..]
        .iter()
        .map(|r| (r.context.clone(), r.index))
        .collect();
    assert_eq!(got, vec![(b"a".to_vec(), 4), (b"b".to_vec(), 4)]);

    net.node(2)
        .read_index(b"f".to_vec())
        .expect("follower knows the leader");
    net.deliver();
    assert_eq!(
        net.read_states[&2]
            .iter()
            .map(|r| r.index)
            .collect::<Vec<_>>(),
        vec![4]
    );
}

/// Goal: leadership transfer catches the target up and hands over with
/// TimeoutNow; proposals are refused meanwhile; an unreachable target makes
/// the leader give up after an election timeout. Reference: thesis 3.10.
#[test]
fn leadership_transfer() {
    let mut net = Network::new(&[1, 2, 3]);
    net.campaign(1);
    net.isolate(3);
    propose(&mut net, 1, 4);
    net.node(1).transfer_leader(3).expect("leader");
    assert_eq!(net.node(1).propose(vec![1]), Err(Error::ProposalDropped));
    net.tick(1, 10);
    assert_eq!(net.leaders(), vec![(1, 1)], "transfer given up");
    net.node(1).propose(vec![1]).expect("accepted again");
    net.recover();
    net.tick(1, 2);
    net.node(1).transfer_leader(3).expect("leader");
    net.deliver();
    assert_eq!(net.leaders(), vec![(3, 2)]);
    assert_eq!(net.log_of(3), net.log_of(1));
}

/// Goal: a follower behind the leader's compaction point gets the snapshot in
/// chunks; a lost chunk is resent from the offset the follower holds; the
/// follower installs it and catches up. Reference: section 7, Figure 13.
#[test]
fn snapshot_to_lagging_follower_with_lost_chunk() {
    let config = Configuration::new([1, 2, 3], []);
    let stores = (1..=3)
        .map(|id| (id, MemStore::new(config.clone())))
        .collect();
    let mut net = Network::with_stores(stores, |id| {
        let mut config = test_config(id);
        config.snapshot_chunk_bytes_max = 10;
        config
    });
    net.campaign(1);
    net.isolate(3);
    propose(&mut net, 1, 20);
    let applied = net.node(1).status().applied;
    assert_eq!(applied, 21);
    let data: Vec<u8> = (0..95).collect();
    let snapshot = net
        .node(1)
        .build_snapshot(applied, data.clone())
        .expect("applied index");
    net.node(1).store_mut().compact(snapshot);
    propose(&mut net, 1, 2);
    net.recover();
    let mut chunks_seen = 0;
    net.filter = Some(Box::new(move |m| {
        if matches!(m.body, MessageBody::InstallSnapshot(_)) {
            chunks_seen += 1;
            return chunks_seen == 3;
        }
        false
    }));
    net.tick(1, 15);
    let store = net.nodes[&3].store();
    assert_eq!(store.compacted(), (21, 1));
    assert_eq!(store.stored_snapshot().data, data);
    assert_eq!(net.log_of(3), net.log_of(1));
    assert_eq!(net.node(3).status().commit, 23);
}

/// What one Ready of a follower receiving a snapshot carried: its chunks, the
/// snapshot to install, and the chunk acknowledgements (sent after the sync). The
/// Ready is handled as a driver does (chunks written, the snapshot installed).
type ChunkTurn = (
    Vec<SnapshotChunk>,
    Option<SnapshotMeta>,
    Vec<SnapshotResponse>,
);

fn chunk_turn(node: &mut RawNode<MemStore>) -> ChunkTurn {
    let ready = node.ready().expect("ready");
    assert!(
        !ready
            .messages
            .iter()
            .any(|m| matches!(m.body, MessageBody::InstallSnapshotResponse(_))),
        "a chunk is acknowledged only after the sync"
    );
    let acks = ready
        .messages_after_sync
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::InstallSnapshotResponse(r) => Some(r),
            _ => None,
        })
        .collect();
    for chunk in &ready.snapshot_chunks {
        node.store_mut().write_snapshot_chunk(chunk);
    }
    if let Some(meta) = &ready.snapshot {
        node.store_mut().apply_snapshot(meta.clone());
    }
    let turn = (ready.snapshot_chunks.clone(), ready.snapshot.clone(), acks);
    node.advance(ready).expect("advance");
    turn
}

/// Goal: a follower holds no snapshot data itself: it hands each chunk that continues
/// the transfer to the driver and acknowledges it after the sync; a chunk at another
/// offset is answered with the bytes held and handed out nowhere; the first chunk of a
/// newer snapshot restarts the transfer; the last chunk completes the install.
/// Reference: Figure 13, with the driver writing the chunks (raw_node contract step 4).
#[test]
fn follower_hands_snapshot_chunks_to_the_driver() {
    let config = Configuration::new([1, 2], []);
    let mut node = RawNode::new(test_config(2), MemStore::new(config.clone()), 7).expect("node");
    let meta = |index| SnapshotMeta {
        index,
        term: 1,
        config: config.clone(),
    };
    let chunk = |index, offset, data: &[u8], done| Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::InstallSnapshot(SnapshotChunk {
            meta: meta(index),
            offset,
            data: data.to_vec(),
            done,
        }),
    };
    let ack = |index, offset, done| SnapshotResponse {
        index,
        offset,
        done,
    };
    node.step(chunk(10, 0, b"abc", false)).expect("step");
    let (chunks, snapshot, acks) = chunk_turn(&mut node);
    assert_eq!((chunks.len(), snapshot), (1, None));
    assert_eq!(acks, [ack(10, 3, false)]);
    node.step(chunk(10, 5, b"zz", false)).expect("step");
    let (chunks, _, acks) = chunk_turn(&mut node);
    assert!(
        chunks.is_empty(),
        "a chunk at the wrong offset is not written"
    );
    assert_eq!(acks, [ack(10, 3, false)]);
    node.step(chunk(12, 0, b"xy", false)).expect("step");
    assert_eq!(chunk_turn(&mut node).2, [ack(12, 2, false)]);
    node.step(chunk(12, 2, b"z", true)).expect("step");
    let (chunks, snapshot, acks) = chunk_turn(&mut node);
    assert_eq!((chunks.len(), snapshot), (1, Some(meta(12))));
    assert_eq!(acks, [ack(12, 3, true)]);
    assert_eq!(node.store().stored_snapshot().data, b"xyz");
    assert_eq!(node.store().compacted(), (12, 1));
    assert_eq!(node.status().commit, 12);
    node.step(chunk(12, 0, b"xy", false)).expect("step");
    let (chunks, _, acks) = chunk_turn(&mut node);
    assert!(
        chunks.is_empty(),
        "an installed snapshot is not received again"
    );
    assert_eq!(acks, [ack(12, 0, true)]);
}

/// Goal: single-server changes are stored in the log and used for quorums
/// from the moment they are appended; a learner catches up without voting;
/// changes go one at a time. Reference: thesis section 4.1.
#[test]
fn config_change() {
    let mut net = Network::new(&[1, 2, 3]);
    net.add_node(4, MemStore::new(Configuration::default()), test_config(4));
    net.campaign(1);
    net.node(1)
        .propose_config_change(ConfigChange::AddLearner(4))
        .expect("leader");
    assert_eq!(
        net.node(1).propose_config_change(ConfigChange::AddVoter(5)),
        Err(Error::ConfigChangePending)
    );
    net.deliver();
    net.tick(1, 2);
    assert_eq!(
        net.node(4).status().config,
        Configuration::new([1, 2, 3], [4])
    );
    assert_eq!(net.log_of(4), net.log_of(1));
    net.node(1)
        .propose_config_change(ConfigChange::PromoteLearner(4))
        .expect("previous committed");
    net.deliver();
    net.node(1)
        .propose_config_change(ConfigChange::RemoveNode(2))
        .expect("previous committed");
    net.deliver();
    assert_eq!(
        net.node(1).status().config,
        Configuration::new([1, 3, 4], [])
    );
    net.isolate(2);
    net.isolate(3);
    propose(&mut net, 1, 1);
    let commit = net.node(1).status().commit;
    assert_eq!(
        commit,
        net.node(1).status().last_index,
        "1 and 4 are a majority of {{1, 3, 4}}"
    );
    assert_eq!(net.node(4).status().commit, commit);
}
