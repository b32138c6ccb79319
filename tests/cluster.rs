//! Multi-process integration tests: real `raftkv-server` binaries on free loopback
//! ports with temp data dirs, driven through the client library.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Cluster;

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    format!("value-{i}").into_bytes()
}

/// Goal: a fresh cluster elects one leader and replicates every acknowledged write to
/// every node. Method: 1000 puts through the client, then stale reads on each node once
/// it applied the leader's commit index.
#[test]
fn three_nodes_elect_a_leader_and_replicate_1000_puts() {
    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.leader();
    let mut client = cluster.client();
    for i in 0..1000 {
        client.put(&key(i), &value(i)).expect("put");
    }
    let commit = cluster.applied(leader);
    for node in 0..3 {
        cluster.wait_applied(node, commit);
        for i in (0..1000).step_by(37) {
            assert_eq!(
                cluster.read_at(node, &key(i)),
                Some(value(i)),
                "node {node} key {i}"
            );
        }
    }
    assert_eq!(
        client.get(&key(999)).expect("linearizable get"),
        Some(value(999))
    );
}

/// Goal: kill -9 of the leader loses no acknowledged write, a new leader takes over,
/// and the old leader catches up after restarting. Also measures failover time
/// (kill to the first acknowledged write), printed for the record; set
/// `RAFTKV_FAILOVER_ROUNDS` for more kills than the default 3.
#[test]
fn leader_kill_loses_no_acknowledged_write() {
    let rounds: usize = std::env::var("RAFTKV_FAILOVER_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let mut cluster = Cluster::start(3, |_| {});
    let mut client = cluster.client();
    let mut acknowledged = 0;
    let mut failovers = Vec::new();
    for round in 0..rounds {
        for _ in 0..100 {
            client
                .put(&key(acknowledged), &value(acknowledged))
                .expect("put");
            acknowledged += 1;
        }
        let old = cluster.leader();
        let killed = Instant::now();
        cluster.kill(old);
        client
            .put(&key(acknowledged), &value(acknowledged))
            .expect("put after failover");
        acknowledged += 1;
        failovers.push(killed.elapsed());
        let new = cluster.leader();
        assert_ne!(new, old, "round {round}: the killed node cannot lead");
        cluster.start_node(old);
        let commit = cluster.applied(new);
        cluster.wait_applied(old, commit);
    }
    failovers.sort();
    let middle = failovers.len() / 2;
    let median = if failovers.len() % 2 == 0 {
        (failovers[middle - 1] + failovers[middle]) / 2
    } else {
        failovers[middle]
    };
    eprintln!(
        "failover (kill -9 to first acknowledged write) over {rounds} kills: median \
         {median:?}, max {:?}, all {failovers:?}",
        failovers[failovers.len() - 1]
    );
    for node in 0..3 {
        cluster.wait_applied(node, cluster.applied(cluster.leader()));
        for i in 0..acknowledged {
            assert_eq!(
                cluster.read_at(node, &key(i)),
                Some(value(i)),
                "node {node} key {i}"
            );
        }
    }
}

/// Goal: a full restart keeps all data, and a node whose tail segment lost a few bytes
/// (a torn write) recovers and rejoins. Method: stop all, cut node 3's tail segment 3
/// bytes into its last record, restart all, read everything.
#[test]
fn whole_cluster_restart_keeps_data_and_a_torn_tail_recovers() {
    let mut cluster = Cluster::start(3, |_| {});
    let mut client = cluster.client();
    for i in 0..300 {
        client.put(&key(i), &value(i)).expect("put");
    }
    let commit = cluster.applied(cluster.leader());
    for node in 0..3 {
        cluster.wait_applied(node, commit);
    }
    for node in 0..3 {
        cluster.kill(node);
    }
    let wal = cluster.data_dir(2).join("wal");
    let mut segments: Vec<_> = std::fs::read_dir(&wal)
        .expect("wal dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segments.sort();
    // Segments are preallocated: cut 3 bytes into the last record, not into the zeros.
    let tail = segments.last().expect("a segment");
    let bytes = std::fs::read(tail).expect("read tail");
    let data_end = bytes.iter().rposition(|&b| b != 0).expect("records") + 1;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(tail)
        .expect("open tail");
    file.set_len(data_end as u64 - 3).expect("cut the tail");
    for node in 0..3 {
        cluster.start_node(node);
    }
    let mut client = cluster.client();
    for i in 0..300 {
        assert_eq!(client.get(&key(i)).expect("get"), Some(value(i)), "key {i}");
    }
    client
        .put(b"after-restart", b"yes")
        .expect("put after restart");
    let commit = cluster.applied(cluster.leader());
    cluster.wait_applied(2, commit);
    assert_eq!(cluster.read_at(2, &key(299)), Some(value(299)));
}

/// Goal: a follower that missed more than the leader kept in its log catches up by
/// snapshot. Method: small snapshot threshold and segments, stop a follower, write
/// 5000 entries (several snapshots and compactions), restart it, read on it.
#[test]
fn far_behind_follower_catches_up_by_snapshot() {
    let mut cluster = Cluster::start(3, |config| {
        config.snapshot.threshold_entries = 500;
        config.storage.segment_bytes = 64 * 1024;
    });
    let leader = cluster.leader();
    let follower = (leader + 1) % 3;
    cluster.kill(follower);
    let mut client = cluster.client();
    for i in 0..5000 {
        client.put(&key(i), &value(i)).expect("put");
    }
    cluster.start_node(follower);
    let commit = cluster.applied(cluster.leader());
    cluster.wait_applied(follower, commit);
    for i in (0..5000).step_by(97) {
        assert_eq!(
            cluster.read_at(follower, &key(i)),
            Some(value(i)),
            "key {i}"
        );
    }
    let metrics = raftkv::client::metrics_at(&cluster.addr(cluster.leader()), &common::options())
        .expect("metrics");
    let snapshots = metrics
        .iter()
        .find(|(name, _)| name == "storage.snapshots_taken")
        .map(|(_, v)| *v);
    assert!(
        snapshots.unwrap_or(0) >= 1,
        "the leader took a snapshot: {metrics:?}"
    );
}

/// Goal: garbage and a 4 GiB length prefix close that connection only; the node keeps
/// serving everyone else.
#[test]
fn garbage_and_huge_frames_disconnect_only_that_client() {
    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.leader();
    let addr = cluster.addr(leader);
    for payload in [
        vec![0xff; 4],
        vec![5, 0, 0, 0, 0xee, 0xee, 0xee, 0xee, 0xee],
    ] {
        let mut stream = TcpStream::connect(&addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream.write_all(&payload).expect("write garbage");
        let mut buf = [0u8; 64];
        let read = stream.read(&mut buf);
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "connection closed, got {read:?}"
        );
    }
    let mut client = cluster.client();
    client.put(b"still", b"serving").expect("put after garbage");
    assert_eq!(
        client.get(b"still").expect("get"),
        Some(b"serving".to_vec())
    );
}

/// Goal: configuration errors name the file and the key, and exit with code 2.
#[test]
fn config_errors_name_the_key_and_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        ("node_id = 1\n", "cluster_id"),
        (
            "node_id = 1\ncluster_id = 7\ndata_dir = \"d\"\nlisten_peer = \"127.0.0.1:1\"\n\
             listen_client = \"127.0.0.1:2\"\nmembers = []\nbogus_key = 3\n",
            "bogus_key",
        ),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad-{i}.toml"));
        std::fs::write(&path, text).expect("write config");
        let output = Command::new(env!("CARGO_BIN_EXE_raftkv-server"))
            .arg("--config")
            .arg(&path)
            .output()
            .expect("run raftkv-server");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "#{i}: {stderr}");
        assert!(stderr.contains(key), "#{i}: stderr names `{key}`: {stderr}");
        assert!(
            stderr.contains(&*path.to_string_lossy()),
            "#{i}: names the file: {stderr}"
        );
    }
}
