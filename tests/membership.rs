//! Membership changes on real `raftkv-server` processes: growing a cluster under load,
//! removing the leader, replacing a node whose disk was wiped (issue 8). Every write
//! acknowledged during the changes must be readable at the end, on every member.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{Cluster, options};
use raftkv::client::{Client, Error};
use raftkv::codec::client::Status;

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

fn value(i: u64) -> Vec<u8> {
    format!("value-{i}").into_bytes()
}

/// Puts `key(i) = value(i)` for i = 0, 1, 2, ... until stopped; remembers which were
/// acknowledged. Failed puts (elections, the leader leaving) are skipped, not retried
/// forever: their outcome is unknown, so the final check does not count them.
struct Writer {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<BTreeSet<u64>>>,
    handle: Option<thread::JoinHandle<u64>>,
}

impl Writer {
    fn start(cluster: &Cluster) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
        let mut client = cluster.client();
        let (stop_flag, acked) = (Arc::clone(&stop), Arc::clone(&acknowledged));
        let handle = thread::spawn(move || {
            let mut i = 0;
            while !stop_flag.load(Ordering::Relaxed) {
                if client.put(&key(i), &value(i)).is_ok() {
                    acked.lock().expect("lock").insert(i);
                }
                i += 1;
            }
            i
        });
        Writer {
            stop,
            acknowledged,
            handle: Some(handle),
        }
    }

    fn count(&self) -> usize {
        self.acknowledged.lock().expect("lock").len()
    }

    /// Waits until `more` further writes were acknowledged (bounded).
    fn wait_for(&self, more: usize) {
        let target = self.count() + more;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.count() < target {
            assert!(
                Instant::now() < deadline,
                "writes stalled at {}",
                self.count()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(mut self) -> (BTreeSet<u64>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let attempted = self.handle.take().expect("running").join().expect("writer");
        let acknowledged = std::mem::take(&mut *self.acknowledged.lock().expect("lock"));
        (acknowledged, attempted)
    }
}

/// The leader's status, retried through elections (bounded).
fn leader_status(admin: &mut Client) -> Status {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match admin.leader_status() {
            Ok(status) => return status,
            Err(e) => assert!(Instant::now() < deadline, "no leader status: {e}"),
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn voters(status: &Status) -> Vec<u64> {
    status
        .members
        .iter()
        .filter(|m| m.voter)
        .map(|m| m.id)
        .collect()
}

/// Adds node `i` of `cluster` as a learner, then promotes it once it caught up.
fn add_and_promote(cluster: &Cluster, admin: &mut Client, i: usize) {
    let node = &cluster.nodes[i];
    admin
        .member_add_learner(
            node.id,
            &node.peer_addr.to_string(),
            &node.client_addr.to_string(),
        )
        .expect("add learner");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match admin.member_promote(node.id) {
            Ok(()) => break,
            Err(Error::Unavailable(reason) | Error::Refused(reason))
                if Instant::now() < deadline =>
            {
                eprintln!("promote {}: {reason}; retrying", node.id);
            }
            Err(e) => panic!("promote {}: {e}", node.id),
        }
    }
    let status = leader_status(admin);
    assert!(voters(&status).contains(&node.id), "{:?}", status.members);
    let member = status
        .members
        .iter()
        .find(|m| m.id == node.id)
        .expect("listed");
    assert_eq!(member.peer_addr, node.peer_addr.to_string());
    assert_eq!(member.client_addr, node.client_addr.to_string());
}

fn index_of(cluster: &Cluster, id: u64) -> usize {
    cluster
        .nodes
        .iter()
        .position(|n| n.id == id)
        .expect("known node")
}

/// Goal: the operator's whole membership workflow on real processes, with no
/// acknowledged write lost: grow 3 -> 5 under load (new nodes started with `--join`,
/// caught up by snapshot, promoted), remove the leader (it commits its removal, steps
/// down and exits; the rest elect a leader), and replace a node whose disk was wiped
/// (a new id joins, then the dead id is removed). A removed node's data directory
/// refuses to start again. Method: a writer puts distinct keys throughout; at the end
/// every acknowledged key is read back through the leader and, on every member, from
/// its local state.
#[test]
fn grow_remove_leader_and_replace_a_wiped_node_under_load() {
    let mut cluster = Cluster::start(3, |config| {
        config.snapshot.threshold_entries = 400;
        config.storage.segment_bytes = 64 * 1024;
    });
    cluster.leader();
    let mut admin = Client::connect(&cluster.addrs(), options()).expect("admin client");
    let writer = Writer::start(&cluster);
    writer.wait_for(3000);

    // Grow 3 -> 5 while writes go on; the log is compacted, so both catch up by snapshot.
    for _ in 0..2 {
        let joining = cluster.start_joining_node(0);
        let id = cluster.nodes[joining].id;
        let status = raftkv::client::status_at(&cluster.addr(joining), &options());
        assert!(
            status.is_err() || status.as_ref().is_ok_and(|s| s.members.is_empty()),
            "a joining node has no membership before it is added: {status:?}"
        );
        add_and_promote(&cluster, &mut admin, joining);
        writer.wait_for(200);
        assert!(
            cluster.log_text(joining).contains("installed snapshot"),
            "node {id} caught up by snapshot"
        );
    }
    let status = leader_status(&mut admin);
    assert_eq!(voters(&status), vec![1, 2, 3, 4, 5]);

    // Remove the leader: it commits the removal, steps down and exits; a new one leads.
    let old = cluster.leader();
    let old_id = cluster.nodes[old].id;
    admin.member_remove(old_id).expect("remove the leader");
    let exit = cluster.wait_exit(old, Duration::from_secs(15));
    assert!(
        exit.is_some_and(|s| s.success()),
        "the removed leader exits cleanly: {exit:?}"
    );
    assert!(cluster.log_text(old).contains("removed from the cluster"));
    let status = leader_status(&mut admin);
    assert_ne!(status.leader_id, old_id);
    assert!(!voters(&status).contains(&old_id));
    assert_eq!(voters(&status).len(), 4);
    writer.wait_for(200);

    // Its data directory may not serve again.
    cluster.start_node(old);
    let again = cluster.wait_exit(old, Duration::from_secs(15));
    assert!(
        again.is_some_and(|s| s.code() == Some(1)),
        "a removed node refuses to restart: {again:?}"
    );

    // Replace a follower whose disk was wiped: kill it, wipe it, a new id joins in its
    // place, then the dead id is removed.
    let leader_id = leader_status(&mut admin).leader_id;
    let dead = (0..cluster.nodes.len())
        .find(|&i| {
            let id = cluster.nodes[i].id;
            id != leader_id && id != old_id && voters(&status).contains(&id)
        })
        .expect("a follower");
    let dead_id = cluster.nodes[dead].id;
    cluster.kill(dead);
    std::fs::remove_dir_all(cluster.data_dir(dead)).expect("wipe the data dir");
    let via = index_of(&cluster, leader_id);
    let replacement = cluster.start_joining_node(via);
    add_and_promote(&cluster, &mut admin, replacement);
    admin.member_remove(dead_id).expect("remove the dead node");
    writer.wait_for(200);
    let (acknowledged, attempted) = writer.stop();

    let status = leader_status(&mut admin);
    let mut expected: Vec<u64> = [1, 2, 3, 4, 5, cluster.nodes[replacement].id]
        .into_iter()
        .filter(|&id| id != old_id && id != dead_id)
        .collect();
    expected.sort_unstable();
    assert_eq!(voters(&status), expected);
    eprintln!(
        "{} of {attempted} writes acknowledged across 5 membership changes",
        acknowledged.len()
    );

    // No acknowledged write lost: read back through the leader, and on every member.
    let mut reader = cluster.client();
    for &i in &acknowledged {
        assert_eq!(reader.get(&key(i)).expect("get"), Some(value(i)), "key {i}");
    }
    let commit = status.commit_index;
    for &id in &expected {
        let i = index_of(&cluster, id);
        cluster.wait_applied(i, commit);
        for &k in acknowledged.iter().step_by(97) {
            assert_eq!(
                cluster.read_at(i, &key(k)),
                Some(value(k)),
                "node {id} key {k}"
            );
        }
    }
}

/// Goal: membership requests that do not apply are refused with a clear error and
/// change nothing; transfer-leader moves leadership to the chosen voter. Method: on a
/// 3-node cluster, add an existing id, add an id with a member's address, remove a
/// non-member, promote a non-member, transfer to a non-member, then transfer to a
/// follower and check it leads.
#[test]
fn invalid_membership_requests_are_refused_and_transfer_moves_leadership() {
    let cluster = Cluster::start(3, |_| {});
    cluster.leader();
    let mut admin = Client::connect(&cluster.addrs(), options()).expect("admin client");
    let before = leader_status(&mut admin);
    let taken = cluster.nodes[1].peer_addr.to_string();
    let refusals = [
        admin.member_add_learner(2, "127.0.0.1:1", "127.0.0.1:2"),
        admin.member_add_learner(9, &taken, "127.0.0.1:2"),
        admin.member_add_learner(9, "not-an-address", "127.0.0.1:2"),
        admin.member_add_learner(0, "127.0.0.1:1", "127.0.0.1:2"),
        admin.member_remove(9),
        admin.member_promote(9),
        admin.transfer_leader(9),
    ];
    for (i, refusal) in refusals.into_iter().enumerate() {
        assert!(
            matches!(refusal, Err(Error::Refused(_))),
            "request {i}: {refusal:?}"
        );
    }
    let after = leader_status(&mut admin);
    assert_eq!(voters(&after), voters(&before), "nothing changed");
    assert_eq!(after.members.len(), before.members.len());
    assert_eq!(after.config_index, before.config_index);

    let target = after
        .members
        .iter()
        .map(|m| m.id)
        .find(|&id| id != after.leader_id)
        .expect("a follower");
    admin.transfer_leader(target).expect("transfer");
    let deadline = Instant::now() + Duration::from_secs(10);
    while leader_status(&mut admin).leader_id != target {
        assert!(
            Instant::now() < deadline,
            "leadership did not move to {target}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}
