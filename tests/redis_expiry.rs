//! Key expiry on the Redis port of a real 3-node cluster (issue 19 §1): TTLs are set by
//! the leader's clock and carried in the log, expired keys vanish from linearizable
//! reads on the leader at once and from followers once the leader's delete replicates,
//! a TTL survives a restart of every node, `SET lock token NX PX 30000` keeps one
//! holder across a leader failover, the `expired` keyspace event is published, and
//! 100k keys expiring together are deleted without a long loop turn.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::resp::Resp;
use common::{Cluster, eventually};

/// Waits (at most 15 s) until `check` holds.
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(Instant::now() < deadline, "not within 15 s: {what}");
        sleep(Duration::from_millis(20));
    }
}

/// A Redis connection to the cluster's leader, once it accepts writes.
fn leader_conn(cluster: &Cluster) -> (usize, Resp) {
    let leader = cluster.leader();
    let mut con = Resp::connect(cluster.nodes[leader].redis_addr);
    eventually(|| match con.call("SET warm up").as_str() {
        "+OK\r\n" => Ok(()),
        other => Err(other.to_string()),
    });
    (leader, con)
}

/// Goal: a TTL set with SET PX counts down on the leader's clock; the key is gone from
/// the leader's linearizable reads once it expires (also before the replicated delete)
/// and from every follower's stale reads once the delete replicates; a key set again
/// without a TTL before its delete stays. Method: real binaries, raw RESP.
#[test]
fn keys_expire_on_leader_then_followers_and_a_reset_key_survives() {
    let cluster = Cluster::start(3, |_| {});
    let (leader, mut con) = leader_conn(&cluster);
    assert_eq!(con.call("SET k v PX 1500"), "+OK\r\n");
    assert_eq!(con.call("SET again v PX 1500"), "+OK\r\n");
    assert_eq!(con.call("SET again w"), "+OK\r\n");
    assert_eq!(con.integer("TTL again"), -1);
    let pttl = con.integer("PTTL k");
    assert!((1..=1500).contains(&pttl), "PTTL {pttl}");
    assert!((1..=2).contains(&con.integer("TTL k")));
    let follower = (leader + 1) % 3;
    wait_until("the follower holds k", || {
        cluster.read_at(follower, b"k").is_some()
    });
    let mut on_follower = Resp::connect(cluster.nodes[follower].redis_addr);
    assert!((1..=1500).contains(&on_follower.integer("PTTL k")));
    let set_at = Instant::now();
    wait_until("k expires on the leader", || con.call("GET k") == "$-1\r\n");
    assert!(
        set_at.elapsed() < Duration::from_millis(1500) + Duration::from_secs(1),
        "expired late"
    );
    assert_eq!(con.integer("EXISTS k"), 0);
    assert_eq!(con.call("TYPE k"), "+none\r\n");
    assert_eq!(con.integer("TTL k"), -2);
    assert_eq!(con.call("KEYS k"), "*0\r\n");
    for node in 0..3 {
        wait_until("the delete replicates", || {
            cluster.read_at(node, b"k").is_none()
        });
        assert_eq!(cluster.read_at(node, b"again"), Some(b"w".to_vec()));
    }
    assert_eq!(on_follower.call("GET k"), "$-1\r\n");
    assert_eq!(con.call("GET again"), "$1\r\nw\r\n");
    let info = con.call("INFO stats");
    assert!(!info.contains("expired_keys:0\r\n"), "{info}");
}

/// Goal: TTLs survive a restart of every node (the times are in the log and the
/// snapshot): a long one keeps counting from the same absolute time, a short one
/// expires after the restart. Method: kill -9 all three nodes, start them again.
#[test]
fn ttls_survive_a_restart_of_every_node() {
    let mut cluster = Cluster::start(3, |_| {});
    let (_, mut con) = leader_conn(&cluster);
    assert_eq!(con.call("SET long v EXAT 4000000000"), "+OK\r\n");
    assert_eq!(con.call("SET short v PX 3000"), "+OK\r\n");
    assert_eq!(con.call("SET forever v"), "+OK\r\n");
    drop(con);
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.start_node(i);
    }
    let (_, mut con) = leader_conn(&cluster);
    assert_eq!(con.integer("EXPIRETIME long"), 4_000_000_000);
    assert_eq!(con.integer("TTL forever"), -1);
    wait_until("short expires after the restart", || {
        con.integer("EXISTS short") == 0
    });
    assert_eq!(con.integer("EXISTS long forever"), 2);
}

/// Goal: the lock pattern keeps one holder across a leader failover while the lock has
/// not expired. Method: take `SET lock token NX PX 30000` on the leader, kill it, and
/// try to take the lock on the new leader.
#[test]
fn set_nx_px_lock_has_one_holder_across_a_leader_failover() {
    let mut cluster = Cluster::start(3, |_| {});
    let (leader, mut con) = leader_conn(&cluster);
    assert_eq!(con.call("SET lock first NX PX 30000"), "+OK\r\n");
    assert_eq!(con.call("SET lock second NX PX 30000"), "$-1\r\n");
    drop(con);
    cluster.kill(leader);
    let (_, mut con) = leader_conn(&cluster);
    assert_eq!(con.call("SET lock second NX PX 30000"), "$-1\r\n");
    assert_eq!(con.call("GET lock"), "$5\r\nfirst\r\n");
    let pttl = con.integer("PTTL lock");
    assert!((15_000..=30_000).contains(&pttl), "PTTL {pttl}");
}

/// Goal: a key deleted by expiry raises `__keyevent@0__:expired` on a subscribed node.
/// Method: subscribe on a follower, set a key with a short TTL on the leader.
#[test]
fn an_expired_key_raises_the_expired_keyspace_event() {
    let cluster = Cluster::start(3, |_| {});
    let (leader, mut con) = leader_conn(&cluster);
    let follower = (leader + 1) % 3;
    let mut sub = Resp::connect(cluster.nodes[follower].redis_addr);
    assert_eq!(sub.call("CONFIG SET notify-keyspace-events Ex"), "+OK\r\n");
    sub.send(&["SUBSCRIBE", "__keyevent@0__:expired"]);
    assert!(sub.reply().contains("subscribe"));
    assert_eq!(con.call("SET gone v PX 200"), "+OK\r\n");
    let event = sub.reply();
    assert_eq!(
        event,
        "*3\r\n$7\r\nmessage\r\n$22\r\n__keyevent@0__:expired\r\n$4\r\ngone\r\n"
    );
}

/// The leader's counts of loop turns: (all, at most 100 ms), from `GET /metrics`.
fn loop_turns(addr: SocketAddr) -> (u64, u64) {
    let mut stream = TcpStream::connect(addr).expect("connect to the HTTP port");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: raftkv\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read /metrics");
    let value = |prefix: &str| {
        let line = text.lines().find(|l| l.starts_with(prefix));
        let line = line.unwrap_or_else(|| panic!("{prefix} in /metrics"));
        let number = line.rsplit(' ').next().expect("a value");
        number.parse::<f64>().expect("a number") as u64
    };
    (
        value("raftkv_loop_turn_duration_seconds_count"),
        value("raftkv_loop_turn_duration_seconds_bucket{le=\"0.1\"}"),
    )
}

/// Goal: 100k keys that expire at the same instant are all deleted, their deletion
/// spread over loop turns of bounded work: no turn of the leader's loop takes over
/// 100 ms while they expire. Method: read the leader's clock (TIME), write the keys in
/// MULTI/EXEC batches of 1000 with `PXAT` 6 s later (about 1 s after the writes end),
/// then compare the leader's turn-duration histogram from the end of the writes to the
/// last delete.
#[test]
fn hundred_thousand_keys_expire_without_a_long_loop_turn() {
    let cluster = Cluster::start(3, |_| {});
    let (leader, mut con) = leader_conn(&cluster);
    let http = cluster.nodes[leader].http_addr.expect("an HTTP port");
    assert_eq!(con.call("DEL warm"), ":1\r\n");
    let time = con.call("TIME");
    let seconds: u64 = time
        .split("\r\n")
        .nth(2)
        .expect("seconds")
        .parse()
        .expect("a number");
    let at = (seconds * 1000 + 6000).to_string();
    let started = Instant::now();
    for batch in 0..100 {
        con.send(&["MULTI"]);
        for i in 0..1000 {
            let key = format!("ttl:{batch}:{i}");
            con.send(&["SET", &key, "v", "PXAT", &at]);
        }
        con.send(&["EXEC"]);
        assert_eq!(con.reply(), "+OK\r\n");
        for _ in 0..1000 {
            assert_eq!(con.reply(), "+QUEUED\r\n");
        }
        assert!(con.reply().starts_with("*1000\r\n"));
    }
    let written = started.elapsed();
    assert_eq!(con.integer("DBSIZE"), 100_000, "written in {written:?}");
    let before = loop_turns(http);
    wait_until("every key expires", || con.integer("DBSIZE") == 0);
    wait_until("every key is deleted", || {
        con.call("INFO stats").contains("expired_keys:100000\r\n")
    });
    let gone = started.elapsed();
    let after = loop_turns(http);
    let long_turns = (after.0 - after.1) - (before.0 - before.1);
    eprintln!(
        "100k keys: written in {written:?}, all deleted {gone:?} after the first write; \
         leader loop turns meanwhile {} (over 100 ms: {long_turns})",
        after.0 - before.0
    );
    assert_eq!(long_turns, 0, "leader loop turns over 100 ms");
}
