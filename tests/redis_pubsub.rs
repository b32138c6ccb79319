//! Redis pub/sub and keyspace notifications against a real 3-node cluster (issue 19 §3,
//! §4 push messages, §7 real clients): redis-py (RESP2 and RESP3) runs
//! `tests/clients/redis_py_pubsub.py` across three nodes, redis-cli subscribes on one node
//! and publishes on another, raw RESP checks the exact bytes of the subscribed mode (RESP2
//! refusals, RESP3 `>` pushes beside ordinary replies), and a subscriber that never reads
//! is disconnected at its output limit while the node keeps serving.
//!
//! The redis-py test skips, saying so on stderr, when python3 cannot import `redis` and
//! `RAFTKV_REQUIRE_CLIENTS` is unset; the redis-cli test likewise without `redis-cli`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cluster, eventually};

fn available(program: &str, args: &[&str]) -> bool {
    let probe = Command::new(program).args(args).output();
    matches!(probe, Ok(output) if output.status.success())
}

/// Whether a client program is there; without it the test is skipped (or fails under
/// `RAFTKV_REQUIRE_CLIENTS`).
fn client_available(test: &str, program: &str, args: &[&str]) -> bool {
    if available(program, args) {
        return true;
    }
    assert!(
        std::env::var_os("RAFTKV_REQUIRE_CLIENTS").is_none(),
        "RAFTKV_REQUIRE_CLIENTS is set but {program} {args:?} fails"
    );
    eprintln!("SKIPPED {test}: {program} {args:?} fails (set RAFTKV_REQUIRE_CLIENTS=1 to fail)");
    false
}

/// A raw RESP connection: commands written as arrays, replies read as bytes.
struct Raw {
    stream: TcpStream,
}

impl Raw {
    fn open(addr: SocketAddr) -> Raw {
        let stream = eventually(|| TcpStream::connect(addr));
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        Raw { stream }
    }

    fn send(&mut self, words: &[&str]) {
        let mut out = format!("*{}\r\n", words.len());
        for word in words {
            out.push_str(&format!("${}\r\n{word}\r\n", word.len()));
        }
        self.stream.write_all(out.as_bytes()).expect("write");
    }

    /// Reads until the bytes received end with `want` (or 10 s pass); returns them.
    fn read_until(&mut self, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).ends_with(want) {
            assert!(
                Instant::now() < deadline,
                "wanted {want:?} at the end of {:?}",
                String::from_utf8_lossy(&got)
            );
            match self.stream.read(&mut buf) {
                Ok(0) => panic!("closed; got {:?}", String::from_utf8_lossy(&got)),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }
}

/// Goal: redis-py subscribers on two nodes (RESP2 channel, RESP3 pattern) receive what
/// is published on the third, in order; PUBSUB answers per node; a keyspace
/// notification listener sees writes made on another node. Method: the script asserts,
/// this test checks its exit status and reports the round-trip figures.
#[test]
fn redis_py_subscribers_on_every_node_receive_publishes_and_notifications() {
    let test = "redis_py_subscribers_on_every_node_receive_publishes_and_notifications";
    if !client_available(test, "python3", &["-c", "import redis"]) {
        return;
    }
    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.leader();
    let addr = |i: usize| cluster.nodes[i % 3].redis_addr.to_string();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/redis_py_pubsub.py"
    );
    let output = Command::new("python3")
        .arg(script)
        .args([addr(leader), addr(leader + 1), addr(leader + 2)])
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    for line in stdout.lines().filter(|l| l.starts_with("FIGURE ")) {
        eprintln!("{line}");
    }
    assert!(
        output.status.success() && stdout.lines().any(|l| l == "OK"),
        "redis-py pub/sub scenario failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
}

/// Goal: `redis-cli SUBSCRIBE` on a follower prints a message published with
/// `redis-cli PUBLISH` on the leader. Method: run both programs and read the
/// subscriber's output lines.
#[test]
fn redis_cli_subscriber_on_a_follower_gets_a_publish_on_the_leader() {
    let test = "redis_cli_subscriber_on_a_follower_gets_a_publish_on_the_leader";
    if !client_available(test, "redis-cli", &["--version"]) {
        return;
    }
    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.leader();
    let host_port = |i: usize| {
        let addr = cluster.nodes[i].redis_addr;
        (addr.ip().to_string(), addr.port().to_string())
    };
    let (host, port) = host_port((leader + 1) % 3);
    let mut subscriber = Command::new("redis-cli")
        .args(["-h", &host, "-p", &port, "SUBSCRIBE", "cli-news"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-cli SUBSCRIBE");
    let mut lines = BufReader::new(subscriber.stdout.take().expect("stdout")).lines();
    let mut next = || lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!([next(), next(), next()], ["subscribe", "cli-news", "1"]);
    let (host, port) = host_port(leader);
    let publish = Command::new("redis-cli")
        .args([
            "-h",
            &host,
            "-p",
            &port,
            "PUBLISH",
            "cli-news",
            "from the leader",
        ])
        .output()
        .expect("redis-cli PUBLISH");
    assert_eq!(String::from_utf8_lossy(&publish.stdout).trim(), "0");
    assert_eq!(
        [next(), next(), next()],
        ["message", "cli-news", "from the leader"]
    );
    subscriber.kill().expect("kill redis-cli");
    subscriber.wait().expect("reap redis-cli");
}

/// Goal: the subscribed mode as redis-server 7 writes it: a RESP2 subscriber gets
/// arrays and Redis's refusal of GET; a RESP3 subscriber gets `>` pushes and may run GET
/// between messages; `redis.notify_keyspace_events` in the config file turns keyevent
/// notifications on at start. Method: raw RESP on a follower, PUBLISH and SET on the
/// leader.
#[test]
fn subscribed_mode_refuses_in_resp2_and_pushes_in_resp3() {
    let cluster = Cluster::start(3, |config| {
        config.redis.notify_keyspace_events = "E$".into();
    });
    let leader = cluster.leader();
    let follower = (leader + 1) % 3;
    let mut resp2 = Raw::open(cluster.nodes[follower].redis_addr);
    resp2.send(&["SUBSCRIBE", "c"]);
    resp2.read_until("*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n");
    resp2.send(&["GET", "k"]);
    resp2.read_until(
        "-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / \
         RESET are allowed in this context\r\n",
    );
    let mut resp3 = Raw::open(cluster.nodes[follower].redis_addr);
    resp3.send(&["HELLO", "3"]);
    resp3.read_until("$7\r\nmodules\r\n*0\r\n");
    resp3.send(&["SUBSCRIBE", "c"]);
    resp3.read_until(">3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n");
    let mut publisher = Raw::open(cluster.nodes[leader].redis_addr);
    publisher.send(&["PUBLISH", "c", "m1"]);
    publisher.read_until(":0\r\n");
    resp2.read_until("*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nm1\r\n");
    resp3.read_until(">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nm1\r\n");
    resp3.send(&["GET", "nokey"]);
    resp3.read_until("_\r\n");
    resp3.send(&["SUBSCRIBE", "__keyevent@0__:set"]);
    resp3.read_until(":2\r\n");
    publisher.send(&["SET", "k", "v"]);
    publisher.read_until("+OK\r\n");
    resp3.read_until(">3\r\n$7\r\nmessage\r\n$18\r\n__keyevent@0__:set\r\n$1\r\nk\r\n");
    resp2.send(&["RESET"]);
    resp2.read_until("+RESET\r\n");
    resp2.send(&["GET", "nokey"]);
    resp2.read_until("$-1\r\n");
}

/// Goal: a subscriber that never reads is disconnected once its unwritten output passes
/// `limits.output_bytes_max`, and the node keeps serving the other clients meanwhile.
/// Method: a small output limit, a raw subscriber that never reads, 64 KiB messages
/// published through the leader until PUBSUB NUMSUB on the subscriber's node says it
/// is gone; a PING to that node is answered throughout.
#[test]
fn a_subscriber_that_never_reads_is_disconnected_and_the_node_keeps_serving() {
    let cluster = Cluster::start(3, |config| {
        config.limits.frame_bytes_max = 2 * 1024 * 1024;
        config.limits.entry_bytes_max = 1024 * 1024;
        config.limits.output_bytes_soft_max = 1024 * 1024;
        config.limits.output_bytes_max = 2 * 1024 * 1024;
    });
    let leader = cluster.leader();
    let node = (leader + 1) % 3;
    let mut slow = Raw::open(cluster.nodes[node].redis_addr);
    slow.send(&["SUBSCRIBE", "firehose"]);
    slow.read_until(":1\r\n");
    let url = |i: usize| format!("redis://{}/", cluster.nodes[i].redis_addr);
    let open = |i: usize| {
        let client = redis::Client::open(url(i)).expect("redis url");
        eventually(|| client.get_connection())
    };
    let mut publisher = open(leader);
    let mut watcher = open(node);
    let payload = "x".repeat(64 * 1024);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut published = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "still subscribed after {published} messages"
        );
        let _: i64 = redis::cmd("PUBLISH")
            .arg("firehose")
            .arg(&payload)
            .query(&mut publisher)
            .expect("publish");
        published += 1;
        let pong: String = redis::cmd("PING").query(&mut watcher).expect("ping");
        assert_eq!(pong, "PONG");
        let numsub: (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("firehose")
            .query(&mut watcher)
            .expect("numsub");
        if numsub.1 == 0 {
            break;
        }
    }
    eprintln!("FIGURE slow_subscriber_disconnected_after_messages={published}");
    assert!(
        published > 16,
        "disconnected before its output limit: {published}"
    );
    let info: String = redis::cmd("INFO").query(&mut watcher).expect("info");
    assert!(info.contains("redis_version"), "{info}");
}
