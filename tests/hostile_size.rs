//! Oversized requests against a 3-node cluster of real `raftkv-server` processes
//! (issue 13, item 1). Goal: a request too large for one log entry gets a clear error
//! naming `limits.entry_bytes_max` at the node it entered, whichever port and node
//! (leader or follower, which would forward it), nothing is proposed or forwarded, the
//! connection stays usable, and no node crashes. Method: send each oversized request
//! several times (a retrying client used to kill one leader after another), then check
//! every node is still running, none logged a panic, and writes still succeed through
//! every node.

mod common;

use std::time::Duration;

use common::{Cluster, eventually};
use raftkv::client::Error as ClientError;
use raftkv::kv::{Op, OpResult};
use redis::{Connection, RedisResult};

/// The value of the SET that crashed the leader on f982a67: the command fits one
/// 16 MiB frame, the AppendEntries carrying it did not.
const NEAR_FRAME_VALUE_BYTES: usize = 16_777_150;
/// Each SET of the MULTI/EXEC that crashed a node: alone under the frame limit, their
/// combined Txn over it.
const MULTI_VALUE_BYTES: usize = 9 * 1024 * 1024;
/// Default `limits.entry_bytes_max`.
const ENTRY_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Bytes a `Put` command takes in its log entry besides key and value: version and
/// type bytes, the session (two u64), two u32 lengths.
const PUT_OVERHEAD_BYTES: usize = 1 + 1 + 16 + 4 + 4;

fn connect(cluster: &Cluster, i: usize) -> Connection {
    let url = format!("redis://{}/", cluster.nodes[i].redis_addr);
    let client = redis::Client::open(url).expect("redis url");
    let con = client.get_connection().expect("connect to the redis port");
    con.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    con
}

fn set(con: &mut Connection, key: &str, value: &[u8]) -> RedisResult<()> {
    redis::cmd("SET").arg(key).arg(value).query(con)
}

/// Asserts that `error` is the entry-size refusal the issue asks for.
fn assert_entry_refusal(error: &str, what: &str) {
    assert!(
        error.contains("exceeds the limit of")
            && error.contains(&format!("{ENTRY_BYTES_MAX} bytes (limits.entry_bytes_max)")),
        "{what}: expected the limits.entry_bytes_max refusal, got: {error}"
    );
}

/// Every node still runs, none panicked, and a write through each node's Redis port
/// succeeds and is read back.
fn assert_cluster_healthy(cluster: &mut Cluster, tag: &str) {
    for i in 0..3 {
        assert!(
            cluster.wait_exit(i, Duration::ZERO).is_none(),
            "node {i} exited; log:\n{}",
            cluster.log_text(i)
        );
        let log = cluster.log_text(i);
        assert!(!log.contains("panicked"), "node {i} panicked:\n{log}");
    }
    for i in 0..3 {
        let mut con = connect(cluster, i);
        let key = format!("{tag}:after:{i}");
        eventually(|| set(&mut con, &key, b"fine"));
        let value: Vec<u8> = eventually(|| redis::cmd("GET").arg(&key).query(&mut con));
        assert_eq!(value, b"fine");
    }
}

#[test]
fn an_oversized_redis_set_is_refused_on_follower_and_leader() {
    let mut cluster = Cluster::start(3, |_| {});
    let leader = cluster.leader();
    let follower = (leader + 1) % 3;
    let value = vec![b'v'; NEAR_FRAME_VALUE_BYTES];
    for (name, node) in [("follower", follower), ("leader", leader)] {
        let mut con = connect(&cluster, node);
        eventually(|| set(&mut con, "warm", b"up"));
        // A client that retries: each attempt used to kill the leader of the moment.
        for attempt in 0..3 {
            let error = set(&mut con, "big", &value).expect_err("oversized SET succeeded");
            assert_entry_refusal(&error.to_string(), &format!("{name} attempt {attempt}"));
            // The same connection keeps working.
            let key = format!("{name}:small:{attempt}");
            eventually(|| set(&mut con, &key, b"ok"));
        }
        let big: Option<Vec<u8>> = redis::cmd("GET").arg("big").query(&mut con).unwrap();
        assert_eq!(big, None, "nothing of the refused SET was applied");
    }
    assert_cluster_healthy(&mut cluster, "set");
    eprintln!(
        "leader before: node {}, after: node {}",
        cluster.nodes[leader].id,
        cluster.nodes[cluster.leader()].id
    );
}

#[test]
fn a_multi_exec_of_two_9_mib_sets_is_refused() {
    let mut cluster = Cluster::start(3, |_| {});
    let leader = cluster.leader();
    let follower = (leader + 2) % 3;
    let value = vec![b'm'; MULTI_VALUE_BYTES];
    for (name, node) in [("follower", follower), ("leader", leader)] {
        let mut con = connect(&cluster, node);
        eventually(|| set(&mut con, "warm", b"up"));
        for attempt in 0..2 {
            // Command by command, so the test sees EXEC's own reply (an atomic pipeline
            // of the redis crate reports any top-level EXEC error without its text).
            let () = redis::cmd("MULTI").query(&mut con).unwrap();
            for key in ["m1", "m2"] {
                let queued: String = redis::cmd("SET")
                    .arg(key)
                    .arg(&value[..])
                    .query(&mut con)
                    .unwrap();
                assert_eq!(queued, "QUEUED");
            }
            let result: RedisResult<redis::Value> = redis::cmd("EXEC").query(&mut con);
            let error = result.expect_err("oversized MULTI/EXEC succeeded");
            assert_entry_refusal(&error.to_string(), &format!("{name} attempt {attempt}"));
            let key = format!("{name}:multi:{attempt}");
            eventually(|| set(&mut con, &key, b"ok"));
        }
        for key in ["m1", "m2"] {
            let got: Option<Vec<u8>> = redis::cmd("GET").arg(key).query(&mut con).unwrap();
            assert_eq!(got, None, "nothing of the refused transaction was applied");
        }
    }
    assert_cluster_healthy(&mut cluster, "multi");
}

#[test]
fn a_binary_put_that_nearly_fills_a_frame_is_refused_and_the_limit_is_exact() {
    let mut cluster = Cluster::start(3, |_| {});
    let leader = cluster.leader();
    let mut client = cluster.client();
    client.put(b"warm", b"up").expect("warm-up put");
    let near_frame = vec![b'b'; NEAR_FRAME_VALUE_BYTES];
    for attempt in 0..3 {
        match client.put(b"big", &near_frame) {
            Err(ClientError::Refused(message)) => {
                assert_entry_refusal(&message, &format!("binary attempt {attempt}"))
            }
            other => panic!("attempt {attempt}: expected a refusal, got {other:?}"),
        }
        client.put(b"small", b"ok").expect("the client still works");
    }
    // At the limit exactly the entry is accepted and replicated (one AppendEntries
    // carries a maximal entry); one byte more is refused.
    let key = b"edge";
    let at_limit = vec![b'e'; ENTRY_BYTES_MAX - PUT_OVERHEAD_BYTES - key.len()];
    client
        .put(key, &at_limit)
        .expect("an entry of exactly the limit");
    let over = vec![b'e'; at_limit.len() + 1];
    match client.put(key, &over) {
        Err(ClientError::Refused(message)) => assert_entry_refusal(&message, "limit + 1"),
        other => panic!("limit + 1: expected a refusal, got {other:?}"),
    }
    let applied = cluster.applied(leader);
    for i in 0..3 {
        cluster.wait_applied(i, applied);
        assert_eq!(cluster.read_at(i, key).as_deref(), Some(&at_limit[..]));
        assert_eq!(cluster.read_at(i, b"big"), None);
    }
    assert_cluster_healthy(&mut cluster, "binary");
}

#[test]
fn a_reply_too_large_for_a_frame_becomes_an_error_reply() {
    // A transaction within the entry limit and the read limit whose reply is not within
    // the frame: four reads of a 1000 KiB value with 3 MiB frames. The leader used to
    // panic encoding such a reply; now the client gets an error naming the frame limit,
    // and the connection and the cluster go on.
    let mut cluster = Cluster::start(3, |config| {
        config.limits.frame_bytes_max = 3 * 1024 * 1024;
        config.limits.entry_bytes_max = 1024 * 1024;
    });
    let mut client = cluster.client();
    let wide = vec![b'w'; 1000 * 1024];
    client
        .put(b"wide", &wide)
        .expect("a 1000 KiB value fits an entry");
    let reads = vec![
        Op::Get {
            key: b"wide".to_vec()
        };
        4
    ];
    for attempt in 0..2 {
        match client.txn(&[], &reads, &[]) {
            Err(ClientError::Refused(message)) => assert!(
                message.contains("reply not sent") && message.contains("limits.frame_bytes_max"),
                "attempt {attempt}: {message}"
            ),
            other => panic!("attempt {attempt}: expected a refusal, got {other:?}"),
        }
        client.put(b"small", b"ok").expect("the client still works");
    }
    let one = client
        .txn(&[], &reads[..1], &[])
        .expect("a reply that fits");
    assert_eq!(one.results, vec![OpResult::Value(Some(wide))]);
    assert_cluster_healthy(&mut cluster, "reply");
}

#[test]
fn a_transaction_reading_more_than_its_limit_is_refused_whole() {
    // A small entry of many reads of one large value (here 64 reads of 3 MiB, 192 MiB
    // of result) used to make every replica build that result and keep it in the
    // writer's session; now every replica refuses it at apply time, its writes too.
    let mut cluster = Cluster::start(3, |_| {});
    let mut client = cluster.client();
    client
        .put(b"wide", &vec![b'w'; 3 * 1024 * 1024])
        .expect("a 3 MiB value fits an entry");
    let mut ops = vec![Op::Put {
        key: b"marker".to_vec(),
        value: b"x".to_vec(),
    }];
    ops.extend((0..64).map(|_| Op::Get {
        key: b"wide".to_vec(),
    }));
    match client.txn(&[], &ops, &[]) {
        Err(ClientError::Refused(message)) => assert!(
            message.contains("transaction reads") && message.contains("nothing was applied"),
            "{message}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let applied = cluster.applied(cluster.leader());
    for i in 0..3 {
        cluster.wait_applied(i, applied);
        assert_eq!(cluster.read_at(i, b"marker"), None, "node {i}");
    }
    assert_cluster_healthy(&mut cluster, "read limit");
}
