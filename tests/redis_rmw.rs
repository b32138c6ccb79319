//! Read-modify-writes on the Redis port of a real 3-node cluster: each is one command
//! decided when its entry is applied, so 50 clients incrementing one key all succeed and
//! end at the exact total (the optimistic compare-and-retry they replace gave up with
//! "ERR too much contention"), on the leader and through a follower; and their replies
//! and errors are Redis's, byte for byte (read off the socket, not through a client
//! library that rewords errors).

mod common;

use std::net::SocketAddr;
use std::thread;

use common::resp::Resp;
use common::{Cluster, eventually};

/// Checks each `(command, reply)` in order on `con`; keys get `prefix`.
fn expect_replies(con: &mut Resp, prefix: &str, cases: &[(&str, &str)]) {
    for (i, (line, want)) in cases.iter().enumerate() {
        let line = line.replace("{p}", prefix);
        assert_eq!(con.call(&line), *want, "#{i}: {line}");
    }
}

/// 50 clients each send 40 INCRs (pipelined, as redis-benchmark -P does) to `addr` on
/// one key; every reply must be an integer and the key must end at 2000.
fn fifty_clients_increment(addr: SocketAddr, key: &str) {
    const CLIENTS: usize = 50;
    const INCREMENTS: usize = 40;
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let key = key.to_string();
            thread::spawn(move || {
                let mut con = Resp::connect(addr);
                for _ in 0..INCREMENTS {
                    con.send(&["INCR", &key]);
                }
                (0..INCREMENTS)
                    .map(|_| con.reply())
                    .filter(|reply| !reply.starts_with(':'))
                    .collect::<Vec<String>>()
            })
        })
        .collect();
    for worker in workers {
        let errors = worker.join().expect("a client thread");
        assert!(
            errors.is_empty(),
            "INCR replies that are not integers: {errors:?}"
        );
    }
    let total = (CLIENTS * INCREMENTS).to_string();
    let want = format!("${}\r\n{total}\r\n", total.len());
    assert_eq!(Resp::connect(addr).call(&format!("GET {key}")), want);
}

#[test]
fn fifty_concurrent_incr_clients_reach_the_exact_total_on_leader_and_follower() {
    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.leader();
    let follower = (leader + 1) % 3;
    let mut warm = Resp::connect(cluster.nodes[follower].redis_addr);
    eventually(|| match warm.call("SET warm up").as_str() {
        "+OK\r\n" => Ok(()),
        other => Err(other.to_string()),
    });
    fifty_clients_increment(cluster.nodes[leader].redis_addr, "count:leader");
    fifty_clients_increment(cluster.nodes[follower].redis_addr, "count:follower");
}

#[test]
fn read_modify_writes_reply_and_refuse_as_redis_does() {
    let cluster = Cluster::start(3, |_| {});
    // The native client's incr is the same state-machine command as the Redis port's.
    let mut client = cluster.client();
    assert_eq!(eventually(|| client.incr(b"native", 5)), 5);
    assert_eq!(client.incr(b"native", -7).expect("incr"), -2);
    client.put(b"word", b"abc").expect("put");
    let refused = client.incr(b"word", 1).expect_err("not an integer");
    assert!(
        matches!(&refused, raftkv::client::Error::Refused(text)
            if text == "value is not an integer or out of range"),
        "{refused:?}"
    );
    let leader = cluster.leader();
    let follower = (leader + 1) % 3;
    for (node, prefix) in [(leader, "l"), (follower, "f")] {
        let mut con = Resp::connect(cluster.nodes[node].redis_addr);
        eventually(|| match con.call("SET warm up").as_str() {
            "+OK\r\n" => Ok(()),
            other => Err(other.to_string()),
        });
        expect_replies(
            &mut con,
            prefix,
            &[
                ("SET {p}s abc", "+OK\r\n"),
                (
                    "INCR {p}s",
                    "-ERR value is not an integer or out of range\r\n",
                ),
                ("SET {p}m 9223372036854775806", "+OK\r\n"),
                ("INCRBY {p}m 1", ":9223372036854775807\r\n"),
                (
                    "INCRBY {p}m 1",
                    "-ERR increment or decrement would overflow\r\n",
                ),
                ("DECRBY {p}n 5", ":-5\r\n"),
                ("DECR {p}n", ":-6\r\n"),
                ("INCRBYFLOAT {p}f 10.5", "$4\r\n10.5\r\n"),
                ("INCRBYFLOAT {p}f 0.1", "$4\r\n10.6\r\n"),
                ("SET {p}e 5.0e3", "+OK\r\n"),
                ("INCRBYFLOAT {p}e 200", "$4\r\n5200\r\n"),
                (
                    "INCRBYFLOAT {p}f nan",
                    "-ERR value is not a valid float\r\n",
                ),
                (
                    "INCRBYFLOAT {p}f inf",
                    "-ERR increment would produce NaN or Infinity\r\n",
                ),
                ("INCRBYFLOAT {p}s 1", "-ERR value is not a valid float\r\n"),
                ("GET {p}f", "$4\r\n10.6\r\n"),
                ("APPEND {p}a ab", ":2\r\n"),
                ("APPEND {p}a cd", ":4\r\n"),
                ("SETNX {p}a x", ":0\r\n"),
                ("SETNX {p}b 1", ":1\r\n"),
                ("SET {p}b 2 NX", "$-1\r\n"),
                ("SET {p}c 2 XX", "$-1\r\n"),
                ("SET {p}b 3 XX GET", "$1\r\n1\r\n"),
                ("SET {p}c 4 NX GET", "$-1\r\n"),
                ("GETSET {p}c 5", "$1\r\n4\r\n"),
                ("GETDEL {p}c", "$1\r\n5\r\n"),
                ("GETDEL {p}c", "$-1\r\n"),
                ("MSETNX {p}x 1 {p}y 2", ":1\r\n"),
                ("MSETNX {p}y 3 {p}z 4", ":0\r\n"),
                ("MGET {p}x {p}y {p}z", "*3\r\n$1\r\n1\r\n$1\r\n2\r\n$-1\r\n"),
                ("DEL {p}x {p}y {p}z {p}x", ":2\r\n"),
                ("MULTI", "+OK\r\n"),
                ("INCR {p}t", "+QUEUED\r\n"),
                ("INCR {p}s", "+QUEUED\r\n"),
                ("APPEND {p}t 0", "+QUEUED\r\n"),
                (
                    "EXEC",
                    "*3\r\n:1\r\n-ERR value is not an integer or out of range\r\n:2\r\n",
                ),
                ("GET {p}t", "$2\r\n10\r\n"),
            ],
        );
    }
}
