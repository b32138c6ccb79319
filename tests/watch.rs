//! Native watches against a real 3-node cluster (issue 19 §3): `raftkv-cli watch
//! --prefix P` and `raftkv-cli watch KEY`, connected to a follower, print the puts and
//! deletes written through the leader, in log order with increasing revisions, and
//! nothing of other keys; a watcher that never reads is disconnected at its output limit.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Cluster, eventually};
use raftkv::client::{Pipeline, metrics_at, status_at};
use raftkv::codec::client::RequestBody;

const CLI: &str = env!("CARGO_BIN_EXE_raftkv-cli");

/// A running `raftkv-cli watch`, its stdout lines arriving on a channel.
struct Watching {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watching {
    /// Starts `raftkv-cli --cluster ADDR watch ARGS...` and waits for its `watching`
    /// line on stderr (the watch is then in place).
    fn start(addr: &str, args: &[&str]) -> Watching {
        let mut child = Command::new(CLI)
            .args(["--cluster", addr, "watch"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run raftkv-cli watch");
        let stderr = child.stderr.take().expect("stderr");
        let mut first = String::new();
        BufReader::new(stderr)
            .read_line(&mut first)
            .expect("stderr line");
        assert!(first.starts_with("watching "), "{first:?}");
        let stdout: ChildStdout = child.stdout.take().expect("stdout");
        let (send, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Watching { child, lines }
    }

    fn next(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a watch line within 10 s")
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (revision, the rest of the line).
fn split(line: &str) -> (u64, String) {
    let (revision, rest) = line.split_once(' ').expect("REVISION ...");
    (revision.parse().expect("revision"), rest.to_string())
}

/// Goal: a prefix watch and a key watch on a follower see the puts and deletes made
/// through the leader, in order, with increasing revisions, and only their keys.
/// Method: two `raftkv-cli watch` processes; writes with the client library; then
/// compare their output lines.
#[test]
fn cli_watches_on_a_follower_print_puts_and_deletes_in_order() {
    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.leader();
    let follower = cluster.nodes[(leader + 1) % 3].client_addr.to_string();
    let prefix = Watching::start(&follower, &["--prefix", "app/"]);
    let key = Watching::start(&follower, &["app/a"]);
    let mut client = cluster.client();
    eventually(|| client.put(b"app/a", b"1"));
    client.put(b"app/b", b"2").expect("put");
    client.put(b"other", b"x").expect("put");
    assert!(client.delete(b"app/a").expect("delete"));
    assert!(!client.delete(b"app/none").expect("delete"));
    client.put(b"app/a", b"3").expect("put");
    let want_prefix = ["PUT app/a 1", "PUT app/b 2", "DELETE app/a", "PUT app/a 3"];
    let got: Vec<(u64, String)> = want_prefix.iter().map(|_| split(&prefix.next())).collect();
    let rests: Vec<&str> = got.iter().map(|(_, rest)| rest.as_str()).collect();
    assert_eq!(rests, want_prefix);
    assert!(
        got.windows(2).all(|pair| pair[0].0 < pair[1].0),
        "revisions increase: {got:?}"
    );
    let want_key = ["PUT app/a 1", "DELETE app/a", "PUT app/a 3"];
    let got_key: Vec<(u64, String)> = want_key.iter().map(|_| split(&key.next())).collect();
    let rests: Vec<&str> = got_key.iter().map(|(_, rest)| rest.as_str()).collect();
    assert_eq!(rests, want_key);
    let revision = |rest: &str| got.iter().find(|(_, r)| r == rest).map(|(rev, _)| *rev);
    assert_eq!(
        Some(got_key[1].0),
        revision("DELETE app/a"),
        "one revision per entry"
    );
}

/// Goal: a watcher that never reads is disconnected once its unwritten output passes
/// `limits.output_bytes_max`, and the node keeps serving. Method: a small output limit,
/// a raw watch request on a follower whose answers are never read, 64 KiB puts under
/// the prefix through the leader until the follower counts an output-limit disconnect;
/// the follower answers status requests throughout.
#[test]
fn a_watcher_that_never_reads_is_disconnected_and_the_node_keeps_serving() {
    let cluster = Cluster::start(3, |config| {
        config.limits.frame_bytes_max = 2 * 1024 * 1024;
        config.limits.entry_bytes_max = 1024 * 1024;
        config.limits.output_bytes_soft_max = 1024 * 1024;
        config.limits.output_bytes_max = 2 * 1024 * 1024;
    });
    let leader = cluster.leader();
    let follower = cluster.nodes[(leader + 1) % 3].client_addr.to_string();
    let options = common::options();
    let mut slow =
        Pipeline::connect(&follower, Duration::from_secs(5), 2 * 1024 * 1024).expect("connect");
    slow.submit(RequestBody::Watch {
        key: b"big/".to_vec(),
        prefix: true,
    })
    .expect("submit");
    slow.flush().expect("send the watch");
    let disconnects = || {
        let metrics = metrics_at(&follower, &options).expect("the follower answers");
        let found = metrics
            .iter()
            .find(|(name, _)| name.contains("output_limit_disconnects"));
        found.map_or(0, |(_, value)| *value)
    };
    let mut client = cluster.client();
    let value = vec![b'v'; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut puts = 0;
    while disconnects() == 0 {
        assert!(
            Instant::now() < deadline,
            "still connected after {puts} puts"
        );
        eventually(|| client.put(format!("big/{puts}").as_bytes(), &value));
        puts += 1;
    }
    eprintln!("FIGURE slow_watcher_disconnected_after_puts={puts}");
    assert!(puts > 16, "disconnected before its output limit: {puts}");
    let status = status_at(&follower, &options).expect("status");
    assert!(status.applied_index > 0);
}
