//! Group commit on the Redis path (issue 14 §4): one durable sync per loop turn covers
//! everything appended in it, whichever port it came from. A Redis read-modify-write
//! (INCR) is a local read, then a Txn: the Txn the Redis connection issues once the
//! read is answered waits for the next turn instead of syncing again in this one.
//!
//! Real `raftkv-server` processes, real Redis clients (the `redis` crate) on the leader
//! and on a follower (which forwards to the leader) at the same time, pipelines of
//! INCR/SET/GET and MULTI/EXEC; then every node's `storage.fsync.count` is at most its
//! `loop.turns`.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, eventually};
use redis::Connection;

/// How long each client drives its workload.
const WORKLOAD: Duration = Duration::from_secs(3);
/// Redis clients per node (leader and one follower).
const CLIENTS_PER_NODE: usize = 3;

fn connect(cluster: &Cluster, i: usize) -> Connection {
    let url = format!("redis://{}/", cluster.nodes[i].redis_addr);
    let client = redis::Client::open(url).expect("redis url");
    let con = client.get_connection().expect("connect to the redis port");
    con.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    con
}

/// Pipelines of INCR/SET/GET and MULTI/EXEC on keys of `prefix` until `WORKLOAD` passed;
/// returns the number of INCRs acknowledged, checked against the counter's value.
fn drive(mut con: Connection, prefix: String) -> i64 {
    let counter = format!("{prefix}:counter");
    let started = Instant::now();
    let mut incrs = 0i64;
    while started.elapsed() < WORKLOAD {
        let mut pipe = redis::pipe();
        for i in 0..20 {
            pipe.incr(&counter, 1);
            pipe.set(format!("{prefix}:k{i}"), i).ignore();
            pipe.get(format!("{prefix}:k{i}")).ignore();
        }
        let counts: Vec<i64> = pipe.query(&mut con).expect("pipeline");
        assert_eq!(counts, ((incrs + 1)..=(incrs + 20)).collect::<Vec<i64>>());
        incrs += 20;
        let (a, b): (i64, i64) = redis::pipe()
            .atomic()
            .incr(&counter, 1)
            .incr(&counter, 1)
            .query(&mut con)
            .expect("MULTI/EXEC");
        assert_eq!((a, b), (incrs + 1, incrs + 2));
        incrs += 2;
    }
    let value: i64 = redis::cmd("GET")
        .arg(&counter)
        .query(&mut con)
        .expect("GET");
    assert_eq!(value, incrs, "every acknowledged INCR applied once");
    incrs
}

fn metric(metrics: &[(String, u64)], name: &str) -> u64 {
    metrics
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("metric {name} missing: {metrics:?}"))
}

/// Goal: under a Redis read-modify-write workload through the leader and a follower, no
/// node syncs its log more often than it turns its loop (the old loop synced up to four
/// times per turn on the Redis path).
#[test]
fn redis_workload_syncs_at_most_once_per_loop_turn() {
    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.leader();
    let follower = (leader + 1) % 3;
    for node in [leader, follower] {
        let mut con = connect(&cluster, node);
        eventually(|| {
            redis::cmd("SET")
                .arg("warm")
                .arg(node)
                .query::<()>(&mut con)
        });
    }
    let workers: Vec<_> = [leader, follower]
        .into_iter()
        .flat_map(|node| (0..CLIENTS_PER_NODE).map(move |c| (node, c)))
        .map(|(node, c)| {
            let con = connect(&cluster, node);
            std::thread::spawn(move || drive(con, format!("n{node}c{c}")))
        })
        .collect();
    let incrs: i64 = workers.into_iter().map(|w| w.join().expect("worker")).sum();
    assert!(incrs > 0);
    let stats: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut connect(&cluster, leader))
        .expect("INFO stats");
    assert!(stats.contains("loop_turn_us_max:"), "{stats}");
    let options = common::options();
    for (i, addr) in cluster.addrs().iter().enumerate() {
        let metrics = raftkv::client::metrics_at(addr, &options).expect("metrics");
        let fsyncs = metric(&metrics, "storage.fsync.count");
        let turns = metric(&metrics, "loop.turns");
        eprintln!("node {i}: {fsyncs} fsyncs in {turns} loop turns ({incrs} INCRs in all)");
        assert!(fsyncs > 0, "node {i} synced nothing: {metrics:?}");
        assert!(
            fsyncs <= turns,
            "node {i} (leader {leader}) synced {fsyncs} times in {turns} loop turns"
        );
    }
}
