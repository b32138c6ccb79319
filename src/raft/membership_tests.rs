//! Scenario tests of membership changes driven through the hand-driven
//! [`Network`]: a leader removing itself, a removed node coming back, learner
//! promotion gated on catch-up, a node started empty (`--join`) that waits to be
//! added, and leadership transfer around configuration changes. Each test cites
//! the Raft thesis (Ongaro 2014) section it checks.

use super::core::Role;
use super::error::Error;
use super::message::{ConfigChange, Configuration, MessageBody, NodeId};
use super::network::{Network, test_config};
use super::raw_node::MemberState;
use super::store::{LogStore, MemStore};

fn propose(net: &mut Network, id: NodeId, count: usize) {
    for i in 0..count {
        net.node(id)
            .propose(vec![i as u8; 16])
            .expect("leader accepts");
    }
    net.deliver();
}

fn change(net: &mut Network, id: NodeId, change: ConfigChange) -> u64 {
    let index = net
        .node(id)
        .propose_config_change(change)
        .expect("change accepted");
    net.deliver();
    index
}

fn sent_by(net: &Network, id: NodeId) -> usize {
    net.delivered.iter().filter(|m| m.from == id).count()
}

/// Goal: a leader that removes itself keeps leading without counting itself
/// until the removal commits, then steps down, hands over with TimeoutNow and
/// sends nothing more; the remaining voters carry on. Method: node 3's acks are
/// dropped so {2, 3} cannot commit although {1, 2} of the old configuration
/// could. Reference: thesis section 4.2.2.
#[test]
fn leader_removes_itself() {
    let mut net = Network::new(&[1, 2, 3]);
    net.campaign(1);
    net.filter = Some(Box::new(|m| {
        m.from == 3 && matches!(m.body, MessageBody::AppendResponse(_))
    }));
    let index = change(&mut net, 1, ConfigChange::RemoveNode(1));
    let status = net.node(1).status();
    assert_eq!(status.role, Role::Leader, "leads until the removal commits");
    assert!(status.commit < index, "the leader does not count itself");
    assert_eq!(status.config, Configuration::new([2, 3], []));
    net.node(1)
        .propose(b"during".to_vec())
        .expect("still leads");
    net.deliver();

    net.recover();
    net.tick(1, 1);
    let status = net.node(1).status();
    assert_eq!(status.role, Role::Follower);
    assert_eq!(status.member_state(), MemberState::Removed);
    assert!(status.commit > index);
    assert_eq!(net.node(1).removed_at(), Some(index));
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1, "TimeoutNow elected a successor at once");
    let (leader, term) = leaders[0];
    assert!(leader == 2 || leader == 3);
    assert_eq!(term, 2);

    net.delivered.clear();
    net.tick(1, 50);
    net.tick_all(50);
    assert_eq!(sent_by(&net, 1), 0, "no heartbeats, no campaigns");
    assert_eq!(net.leaders(), vec![(leader, term)]);
    propose(&mut net, leader, 2);
    let status = net.node(leader).status();
    assert_eq!(status.commit, status.last_index, "{{2, 3}} commit alone");
}

/// Goal: a removed node that never learnt of its removal (it was cut off until
/// the leader that removed it lost leadership) cannot disrupt the
/// cluster when it comes back: its (pre-)votes are ignored by nodes that hear
/// from a leader (check-quorum) or refused for its stale log (pre-vote), so no
/// term changes and the leader stays. Method: table over the two mechanisms
/// alone and together; the node asks for votes in every case (the test would
/// fail if it did not try). Reference: thesis sections 4.2.3 and 9.6.
#[test]
fn removed_node_does_not_disrupt() {
    for (i, (pre_vote, check_quorum)) in [(true, true), (true, false), (false, true)]
        .into_iter()
        .enumerate()
    {
        let config = Configuration::new([1, 2, 3, 4], []);
        let stores = (1..=4)
            .map(|id| (id, MemStore::new(config.clone())))
            .collect();
        let mut net = Network::with_stores(stores, |id| {
            let mut config = test_config(id);
            config.pre_vote = pre_vote;
            config.check_quorum = check_quorum;
            config
        });
        net.campaign(1);
        net.isolate(4);
        change(&mut net, 1, ConfigChange::RemoveNode(4));
        propose(&mut net, 1, 3);
        // A new leader builds its progress from the configuration in force, so
        // nobody is left to tell node 4 of its removal.
        net.node(1).transfer_leader(2).expect("2 is a voter");
        net.deliver();
        assert_eq!(net.leaders(), vec![(2, 2)], "#{i}: transfer done");
        assert_eq!(net.node(4).status().member_state(), MemberState::Voter);
        net.tick(4, 30);
        net.recover();
        net.delivered.clear();
        net.tick_all(60);
        let asked = net.delivered.iter().filter(|m| {
            m.from == 4 && matches!(m.body, MessageBody::PreVote(_) | MessageBody::Vote(_))
        });
        assert!(asked.count() > 0, "#{i}: node 4 campaigns");
        assert_eq!(net.leaders(), vec![(2, 2)], "#{i}: leader kept");
        for id in 1..=3 {
            assert_eq!(net.node(id).status().term, 2, "#{i}: node {id} term");
        }
        propose(&mut net, 2, 1);
        let status = net.node(2).status();
        assert_eq!(status.commit, status.last_index, "#{i}: cluster works");
    }
}

/// Goal: a learner receives the log without voting or counting, is promoted
/// only once within `promote_distance_max` of the leader (with a clear error
/// before), and never campaigns. Reference: thesis section 4.2.1.
#[test]
fn learner_promoted_only_when_caught_up() {
    let config = Configuration::new([1, 2, 3], []);
    let mut stores: Vec<(NodeId, MemStore)> = (1..=3)
        .map(|id| (id, MemStore::new(config.clone())))
        .collect();
    stores.push((4, MemStore::new(Configuration::default())));
    let mut net = Network::with_stores(stores, |id| {
        let mut config = test_config(id);
        config.promote_distance_max = 5;
        config
    });
    net.campaign(1);
    net.isolate(4);
    change(&mut net, 1, ConfigChange::AddLearner(4));
    propose(&mut net, 1, 10);
    let last = net.node(1).status().last_index;
    assert_eq!(
        net.node(1).status().commit,
        last,
        "a learner does not count"
    );
    assert_eq!(net.node(1).learner_lag(4), Some(last));
    assert_eq!(net.node(2).learner_lag(4), None, "leader only");
    assert_eq!(net.node(1).learner_lag(3), None, "learners only");
    assert_eq!(
        net.node(1)
            .propose_config_change(ConfigChange::PromoteLearner(4)),
        Err(Error::LearnerBehind {
            id: 4,
            match_index: 0,
            last_index: last
        })
    );
    net.tick(4, 100);
    assert_eq!(sent_by(&net, 4), 0, "a learner never campaigns");

    net.recover();
    net.tick(1, 1);
    assert_eq!(net.node(1).learner_lag(4), Some(0));
    assert_eq!(net.node(4).status().member_state(), MemberState::Learner);
    change(&mut net, 1, ConfigChange::PromoteLearner(4));
    assert_eq!(
        net.node(4).status().config,
        Configuration::new([1, 2, 3, 4], [])
    );
    net.isolate(2);
    propose(&mut net, 1, 1);
    let status = net.node(1).status();
    assert_eq!(status.commit, status.last_index, "{{1, 3, 4}} of 4 commit");
}

/// Goal: a node started with no configuration (`--join`) stays silent and never
/// campaigns, then once added accepts the leader's snapshot (the log it needs
/// is compacted) and appends, and can later lead. Reference: thesis sections
/// 4.1 (a new server starts with no configuration) and 4.2.1.
#[test]
fn joining_node_waits_then_catches_up_by_snapshot() {
    let mut net = Network::new(&[1, 2, 3]);
    net.add_node(4, MemStore::new(Configuration::default()), test_config(4));
    net.campaign(1);
    net.tick(4, 100);
    let status = net.node(4).status();
    assert_eq!(status.member_state(), MemberState::Joining);
    assert_eq!((status.term, status.role), (0, Role::Follower));
    assert_eq!(sent_by(&net, 4), 0, "waits silently");

    propose(&mut net, 1, 20);
    let applied = net.node(1).status().applied;
    let snapshot = net
        .node(1)
        .build_snapshot(applied, b"image".to_vec())
        .expect("applied index");
    net.node(1).store_mut().compact(snapshot);
    change(&mut net, 1, ConfigChange::AddLearner(4));
    net.tick(1, 3);
    let store = net.nodes[&4].store();
    assert_eq!(store.compacted().0, applied, "caught up by snapshot");
    assert_eq!(store.stored_snapshot().data, b"image");
    assert_eq!(net.log_of(4), net.log_of(1));
    assert_eq!(net.node(4).status().member_state(), MemberState::Learner);

    change(&mut net, 1, ConfigChange::PromoteLearner(4));
    net.node(1).transfer_leader(4).expect("leader");
    net.deliver();
    assert_eq!(net.leaders(), vec![(4, 2)]);
    propose(&mut net, 4, 1);
    let (log_2, log_4) = (net.log_of(2), net.log_of(4));
    assert!(log_2.ends_with(&log_4), "{log_2:?} vs {log_4:?}");
    assert_eq!(net.node(2).status().commit, net.node(4).status().last_index);
}

/// Goal: leadership transfer and configuration changes interact safely: a
/// transfer target must be a voter of the configuration in force (not a
/// learner, not a node being removed); no change is accepted during a
/// transfer; a transfer while a change is uncommitted hands the change over;
/// a new leader accepts a change only once an entry of its term committed.
/// Reference: thesis sections 3.10, 4.1 and its single-server errata.
#[test]
fn transfer_and_config_changes() {
    let mut net = Network::new(&[1, 2, 3]);
    net.add_node(4, MemStore::new(Configuration::default()), test_config(4));
    net.filter = Some(Box::new(|m| {
        m.from == 1 && matches!(m.body, MessageBody::Append(_))
    }));
    net.campaign(1);
    assert_eq!(
        net.node(1)
            .propose_config_change(ConfigChange::AddLearner(4)),
        Err(Error::ConfigChangePending),
        "no change before the no-op of the term commits"
    );
    net.recover();
    net.tick(1, 1);
    change(&mut net, 1, ConfigChange::AddLearner(4));
    net.tick(1, 1);
    assert_eq!(net.node(1).transfer_leader(4), Err(Error::NotVoter(4)));
    assert_eq!(net.node(1).transfer_leader(9), Err(Error::NotVoter(9)));

    net.isolate(2);
    net.node(1).transfer_leader(2).expect("leader");
    assert_eq!(
        net.node(1)
            .propose_config_change(ConfigChange::PromoteLearner(4)),
        Err(Error::ProposalDropped),
        "no change during a transfer"
    );
    net.tick(1, 10);
    assert_eq!(net.leaders(), vec![(1, 1)], "transfer given up");

    // A change appended but not committed, then a transfer: the target gets the
    // entry before TimeoutNow, leads with it, and commits it with its no-op.
    net.recover();
    net.filter = Some(Box::new(|m| {
        matches!(m.body, MessageBody::AppendResponse(_))
    }));
    let index = net
        .node(1)
        .propose_config_change(ConfigChange::RemoveNode(3))
        .expect("previous committed");
    net.deliver();
    assert!(net.node(1).status().commit < index);
    assert_eq!(net.node(1).transfer_leader(3), Err(Error::NotVoter(3)));
    net.recover();
    net.node(1).transfer_leader(2).expect("leader");
    // The acks were lost: the next heartbeat round finds node 2 caught up.
    net.tick(1, 1);
    assert_eq!(net.leaders(), vec![(2, 2)]);
    let status = net.node(2).status();
    assert_eq!(status.config, Configuration::new([1, 2], [4]));
    assert!(status.commit > index, "committed by the new leader's no-op");
    assert_eq!(
        net.node(2)
            .propose_config_change(ConfigChange::RemoveNode(4)),
        Ok(status.last_index + 1)
    );
}

/// Goal: a removed follower learns that it was removed — it receives the
/// removal entry and a commit index covering it — so its driver can stop it,
/// and the leader then stops sending to it; member info attached when adding
/// follows the configuration. Method: remove node 3 from {1, 2, 3}, first with
/// node 3 cut off (the leader keeps trying, outside the quorum, while {1, 2}
/// commit), then healed. Reference: thesis section 4.2.2 (etcd has removed
/// members told by their peers; here the leader tells them).
#[test]
fn removed_follower_learns_its_removal() {
    let mut net = Network::new(&[1, 2, 3]);
    net.campaign(1);
    net.filter = Some(Box::new(|m| m.to == 3 || m.from == 3));
    let index = change(&mut net, 1, ConfigChange::RemoveNode(3));
    let status = net.node(1).status();
    assert!(status.commit >= index, "{{1, 2}} commit the removal alone");
    assert!(
        net.node(1).raft().progress.contains_key(&3),
        "the leader keeps replicating to 3 until it holds its removal"
    );
    assert_eq!(net.node(3).status().member_state(), MemberState::Voter);

    net.recover();
    net.tick(1, 2);
    let status = net.node(3).status();
    assert_eq!(status.member_state(), MemberState::Removed);
    assert_eq!(status.config_index, index);
    assert!(status.commit >= index, "3 knows its removal committed");
    assert_eq!(net.node(3).removed_at(), Some(index));
    assert!(!net.node(1).raft().progress.contains_key(&3));
    net.delivered.clear();
    net.tick(1, 10);
    assert!(
        net.delivered.iter().all(|m| m.to != 3),
        "nothing is sent to a released node"
    );

    let added = net
        .node(1)
        .propose_config_change_with_info(ConfigChange::AddLearner(4), b"addr of 4".to_vec())
        .expect("add accepted");
    net.deliver();
    let config = net.node(2).status().config;
    assert_eq!(config.info(4), Some(&b"addr of 4"[..]));
    assert_eq!(net.node(2).status().config_index, added);
}

/// Goal: a node that held a configuration listing it which was never committed
/// (an `AddLearner` truncated by a new leader) does not count as removed when it
/// then installs a snapshot from before its (second) addition: the driver stops
/// a node only on a committed removal (`removed_at`), so a live learner is never
/// stopped by mistake. Method: node 1 appends `AddLearner(4)` reaching only node
/// 4, is isolated; node 2 or 3 leads, compacts, and adds 4 again; node 4 gets
/// the snapshot (whose configuration predates the add) but not the entries after
/// it. Reference: thesis section 4.1 (a server uses the latest configuration in
/// its log, committed or not; uncommitted ones may be truncated).
#[test]
fn truncated_addition_is_not_a_removal() {
    let mut net = Network::new(&[1, 2, 3]);
    net.add_node(4, MemStore::new(Configuration::default()), test_config(4));
    net.campaign(1);
    net.cut(1, 2);
    net.cut(1, 3);
    let stale = change(&mut net, 1, ConfigChange::AddLearner(4));
    let status = net.node(4).status();
    assert_eq!(
        status.member_state(),
        MemberState::Learner,
        "4 holds the add"
    );
    assert!(status.commit < stale, "but not committed");

    net.isolate(1);
    net.tick_all(40);
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1, "{leaders:?}");
    let (leader, term) = leaders[0];
    assert!(leader == 2 || leader == 3);
    assert!(term >= 2);
    propose(&mut net, leader, 5);
    let applied = net.node(leader).status().applied;
    let snapshot = net
        .node(leader)
        .build_snapshot(applied, b"image".to_vec())
        .expect("applied index");
    net.node(leader).store_mut().compact(snapshot);
    net.filter = Some(Box::new(|m| {
        m.to == 4 && matches!(&m.body, MessageBody::Append(a) if !a.entries.is_empty())
    }));
    let added = change(&mut net, leader, ConfigChange::AddLearner(4));
    net.tick(leader, 3);
    let status = net.node(4).status();
    assert_eq!(net.nodes[&4].store().compacted().0, applied, "by snapshot");
    assert_eq!(status.config, Configuration::new([1, 2, 3], []));
    assert!(status.commit >= status.config_index);
    assert_eq!(net.node(4).removed_at(), None, "never a committed member");

    net.filter = None;
    net.tick(leader, 3);
    let status = net.node(4).status();
    assert_eq!(status.member_state(), MemberState::Learner);
    assert!(status.commit >= added);
    assert_eq!(net.node(4).removed_at(), None);
}

/// Goal: the leader lets a removed follower go only once the follower has
/// acknowledged a heartbeat carrying a commit index that covers its removal, so
/// a lost "last heartbeat" is sent again and the removed server still learns
/// that it was removed (its driver stops it). Method: node 3 receives its removal
/// entry before it commits; every message to 3 carrying the commit is dropped
/// until the filter is lifted, then the leader ticks. Reference: thesis section
/// 4.2.2 (a removed server must stop; here the leader tells it).
#[test]
fn removed_follower_learns_its_removal_despite_a_lost_heartbeat() {
    let mut net = Network::new(&[1, 2, 3]);
    net.campaign(1);
    let index = net.node(1).status().last_index + 1;
    let dropping = std::rc::Rc::new(std::cell::Cell::new(true));
    let drop_commit = std::rc::Rc::clone(&dropping);
    net.filter = Some(Box::new(move |m| {
        let commit = match &m.body {
            MessageBody::Append(a) => a.commit,
            MessageBody::Heartbeat(h) => h.commit,
            _ => 0,
        };
        drop_commit.get() && m.to == 3 && commit >= index
    }));
    assert_eq!(change(&mut net, 1, ConfigChange::RemoveNode(3)), index);
    let status = net.node(3).status();
    assert_eq!(status.config_index, index, "3 holds its removal");
    assert!(status.commit < index, "but not its commit");
    assert!(net.node(1).status().commit >= index);

    dropping.set(false);
    net.tick(1, 3);
    let status = net.node(3).status();
    assert!(status.commit >= index, "the heartbeat was sent again");
    assert_eq!(net.node(3).removed_at(), Some(index));
    assert!(!net.node(1).raft().progress.contains_key(&3), "released");
    net.delivered.clear();
    net.tick(1, 10);
    assert!(net.delivered.iter().all(|m| m.to != 3 && m.from != 3));
}

/// Goal: a removed server that was unreachable while the next configuration
/// change committed still learns its removal once it is back: the leader keeps
/// tracking it across later changes until it is released. Method: node 3 is cut
/// off while {1, 2} commit its removal and then the addition of learner 4; the
/// link heals and the leader ticks. Reference: thesis section 4.2.2.
#[test]
fn removed_follower_learns_its_removal_after_a_later_change() {
    let mut net = Network::new(&[1, 2, 3]);
    net.add_node(4, MemStore::new(Configuration::default()), test_config(4));
    net.campaign(1);
    net.isolate(3);
    change(&mut net, 1, ConfigChange::RemoveNode(3));
    let added = change(&mut net, 1, ConfigChange::AddLearner(4));
    assert!(net.node(1).status().commit >= added);
    assert!(
        net.node(1).raft().progress.contains_key(&3),
        "still tracked"
    );

    net.recover();
    net.tick(1, 3);
    let status = net.node(3).status();
    assert_eq!(status.member_state(), MemberState::Removed);
    assert!(status.commit >= added);
    assert_eq!(net.node(3).removed_at(), Some(added));
    assert!(!net.node(1).raft().progress.contains_key(&3), "released");
}
