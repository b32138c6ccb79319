//! Issue 13, items 4 and 5, against real `raftkv-server` processes: every request gets
//! an answer in bounded time, elections do not turn into errors, and a link that fell
//! silent is redialed so a healed node rejoins quickly.
//!
//! Timing figures are printed (run with `--nocapture` to see them); the assertions use
//! bounds generous enough for a loaded 2-core machine, each of which the code before
//! the fix misses by far (a reply that never comes, an error instead of a wait).

mod common;

use std::path::PathBuf;
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

use common::{Cluster, eventually};
use raftkv::client::{Pipeline, status_at};
use raftkv::codec::client::{RequestBody, ResponseBody};
use raftkv::kv::{Command, Session};
use raftkv::raft::message::NO_NODE;
use raftkv::tools::faults::cluster::{ClusterOptions, FaultCluster};
use raftkv::tools::faults::proxy::LinkMode;
use redis::{Connection, RedisResult};

fn connect(cluster: &Cluster, i: usize, read_timeout: Duration) -> Connection {
    let url = format!("redis://{}/", cluster.nodes[i].redis_addr);
    let client = redis::Client::open(url).expect("redis url");
    let con = client.get_connection().expect("connect to the redis port");
    con.set_read_timeout(Some(read_timeout))
        .expect("read timeout");
    con
}

fn set(con: &mut Connection, key: &str, value: &str) -> RedisResult<()> {
    redis::cmd("SET").arg(key).arg(value).query(con)
}

fn get(con: &mut Connection, key: &str) -> RedisResult<Option<String>> {
    redis::cmd("GET").arg(key).query(con)
}

/// Waits until node `i` reports no leader (it is campaigning), for at most 10 s.
fn wait_no_leader(cluster: &Cluster, i: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if status_at(&cluster.addr(i), &common::options()).is_ok_and(|s| s.leader_id == 0) {
            return;
        }
        assert!(Instant::now() < deadline, "node {i} still sees a leader");
        sleep(Duration::from_millis(20));
    }
}

/// Goal: a request a follower forwards to a leader that cannot answer gets a reply by
/// its deadline (issue 13 item 4: before, SET and GET got none for 12 s). Method: stop
/// the leader with SIGSTOP (the follower still believes in it and its kernel still
/// takes the bytes), send a SET and a GET on open Redis connections to the follower at
/// once, and time the replies: the write says its outcome is unknown, both arrive
/// within `request_timeout_ms` plus slack.
#[test]
fn forwarded_requests_to_a_stopped_leader_are_answered_by_the_deadline() {
    const TIMEOUT_MS: u64 = 1500;
    let bound = Duration::from_millis(TIMEOUT_MS + 2500);
    let cluster = Cluster::start(3, |c| c.limits.request_timeout_ms = TIMEOUT_MS);
    let leader = cluster.leader();
    let follower = (leader + 1) % 3;
    let read_timeout = Duration::from_millis(TIMEOUT_MS + 6000);
    let mut set_con = connect(&cluster, follower, read_timeout);
    let mut get_con = connect(&cluster, follower, read_timeout);
    // Opens the write session and the forwarding link first, as a running client would.
    eventually(|| set(&mut set_con, "warm", "1"));
    assert_eq!(
        eventually(|| get(&mut get_con, "warm")).as_deref(),
        Some("1")
    );

    cluster.pause(leader, true);
    let reader = thread::spawn(move || {
        let started = Instant::now();
        let reply = get(&mut get_con, "warm");
        (started.elapsed(), reply)
    });
    let started = Instant::now();
    let write = set(&mut set_con, "k", "v");
    let write_elapsed = started.elapsed();
    let (read_elapsed, read) = reader.join().expect("reader thread");
    cluster.pause(leader, false);
    println!(
        "SET answered after {} ms: {write:?}; GET after {} ms: {read:?} \
         (request_timeout_ms = {TIMEOUT_MS})",
        write_elapsed.as_millis(),
        read_elapsed.as_millis()
    );

    let error = write.expect_err("a stopped leader cannot apply the write");
    assert!(!error.is_io_error(), "SET got no reply: {error}");
    assert!(
        error.to_string().contains("outcome unknown"),
        "a forwarded write that timed out says its outcome is unknown: {error}"
    );
    assert!(
        write_elapsed < bound,
        "SET answered after {write_elapsed:?}"
    );
    if let Err(error) = &read {
        assert!(!error.is_io_error(), "GET got no reply: {error}");
    }
    assert!(read_elapsed < bound, "GET answered after {read_elapsed:?}");
}

/// Goal: writes sent to a follower while the cluster replaces a dead leader wait for
/// the new leader instead of failing (issue 13 item 4: before, they failed with
/// TRYAGAIN until the election ended). Method: kill -9 the leader, then send SETs one
/// after another on an open Redis connection to a follower; every one must succeed.
#[test]
fn writes_to_a_follower_during_an_election_wait_for_the_new_leader() {
    let mut cluster = Cluster::start(3, |c| {
        c.limits.request_timeout_ms = 4000;
        c.limits.leader_wait_ms = 4000;
    });
    let leader = cluster.leader();
    let follower = (leader + 1) % 3;
    let mut con = connect(&cluster, follower, Duration::from_secs(15));
    eventually(|| set(&mut con, "warm", "1"));

    cluster.kill(leader);
    // Lets the follower see the forwarding link close (the kernel resets it at once),
    // so no SET below was written to the dead leader: those would rightly be "outcome
    // unknown". The election takes longer (an election timeout is 250-500 ms).
    sleep(Duration::from_millis(100));
    let started = Instant::now();
    let mut failures: Vec<String> = Vec::new();
    let mut successes = 0;
    let mut first_success = None;
    while successes < 20 && failures.len() < 500 && started.elapsed() < Duration::from_secs(20) {
        match set(&mut con, &format!("k{successes}"), "v") {
            Ok(()) => {
                successes += 1;
                first_success.get_or_insert(started.elapsed());
            }
            Err(e) => {
                failures.push(e.to_string());
                sleep(Duration::from_millis(10));
            }
        }
    }
    println!(
        "after the kill: first write succeeded after {:?}, {successes} succeeded, {} failed \
         (first failure: {:?})",
        first_success,
        failures.len(),
        failures.first()
    );
    assert!(failures.is_empty(), "writes failed: {failures:?}");
    assert_eq!(successes, 20);
}

/// Goal: a client-port request to a node that knows no leader waits for one, bounded
/// by `limits.leader_wait_ms`, then fails definitively; one parked when a leader
/// appears is served or redirected (issue 13 item 4: before, it failed at once).
/// Method: kill two of three nodes so the survivor campaigns without a leader; a
/// linearizable read waits the whole wait, then fails saying nothing was applied.
/// Then send another and restart a node: the read is answered (a value, or NotLeader
/// with the new leader's address, which the client library follows).
#[test]
fn a_request_with_no_leader_known_waits_for_one() {
    const WAIT_MS: u64 = 4000;
    let mut cluster = Cluster::start(3, |c| {
        c.limits.request_timeout_ms = WAIT_MS;
        c.limits.leader_wait_ms = WAIT_MS;
    });
    let leader = cluster.leader();
    let survivor = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    cluster.kill(leader);
    cluster.kill(other);
    wait_no_leader(&cluster, survivor);

    let mut pipeline = Pipeline::connect(&cluster.addr(survivor), Duration::from_secs(2), 1 << 24)
        .expect("connect");
    let read = || RequestBody::Get {
        key: b"k".to_vec(),
        stale: false,
    };
    let started = Instant::now();
    pipeline.submit(read()).expect("submit");
    let response = pipeline
        .recv(Instant::now() + Duration::from_secs(15))
        .expect("an answer");
    let waited = started.elapsed();
    println!(
        "no leader: answered after {} ms: {:?}",
        waited.as_millis(),
        response.body
    );
    match &response.body {
        ResponseBody::Unavailable(message) => assert!(
            message.contains("not applied"),
            "a definite failure: {message}"
        ),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        waited >= Duration::from_millis(WAIT_MS - 200),
        "answered after {waited:?}, before the wait of {WAIT_MS} ms ended"
    );

    let started = Instant::now();
    pipeline.submit(read()).expect("submit");
    // The request is parked before any leader can exist.
    sleep(Duration::from_millis(100));
    cluster.start_node(other);
    let response = pipeline
        .recv(Instant::now() + Duration::from_secs(15))
        .expect("an answer");
    println!(
        "leader elected meanwhile: answered after {} ms: {:?}",
        started.elapsed().as_millis(),
        response.body
    );
    match response.body {
        ResponseBody::Result(_)
        | ResponseBody::NotLeader {
            leader_client_addr: Some(_),
            ..
        } => {}
        other => panic!("expected a value or a redirect to the new leader, got {other:?}"),
    }
}

/// Partitions the leader of a fresh 3-node proxied cluster with `mode` on all its links
/// both ways for `partition`, heals, and returns how long after the heal the old leader
/// knew the new one, or `None` if it did not within `limit`.
fn rejoin_after_partition(
    mode: LinkMode,
    partition: Duration,
    limit: Duration,
) -> Option<Duration> {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = FaultCluster::start(&ClusterOptions {
        nodes: 3,
        server_exe: PathBuf::from(env!("CARGO_BIN_EXE_raftkv-server")),
        dir: dir.path().to_path_buf(),
        tick_ms: 50,
        snapshot_entries: None,
        tls: false,
    })
    .expect("cluster");
    let old = cluster
        .wait_leader(Duration::from_secs(15))
        .expect("a leader");
    let others: Vec<usize> = (0..3).filter(|&n| n != old).collect();
    let cut = Instant::now();
    for &other in &others {
        cluster.set_link(old, other, mode);
        cluster.set_link(other, old, mode);
    }
    let new_leader = |cluster: &FaultCluster| {
        others.iter().copied().find(|&n| {
            cluster
                .status(n, Duration::from_millis(300))
                .is_some_and(|s| s.leader_id == s.node_id)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let new = loop {
        if let Some(new) = new_leader(&cluster) {
            break new;
        }
        assert!(Instant::now() < deadline, "no new leader behind the cut");
        sleep(Duration::from_millis(50));
    };
    sleep(partition.saturating_sub(cut.elapsed()));
    let new_term = cluster
        .status(new, Duration::from_secs(1))
        .expect("status")
        .term;
    for &other in &others {
        cluster.set_link(old, other, LinkMode::Pass);
        cluster.set_link(other, old, LinkMode::Pass);
    }
    let healed = Instant::now();
    while healed.elapsed() < limit {
        if cluster
            .status(old, Duration::from_millis(300))
            // It knows a leader of the new term or a later one (the leadership may
            // move again after the heal on a loaded machine).
            .is_some_and(|s| s.leader_id != NO_NODE && s.term >= new_term)
        {
            return Some(healed.elapsed());
        }
        sleep(Duration::from_millis(10));
    }
    None
}

/// Goal: after a partition heals, the old leader learns the new leader within about
/// an election timeout plus a round trip (issue 13 item 5: before, 3.6-4.3 s, because
/// peer links were redialed only when they broke, not when they fell silent). Method:
/// the link proxies blackhole every link of the leader both ways for 3 s (connections
/// stay open and lose what they carry; those hit stay silent after the heal, as TCP
/// connections in retransmission backoff do), then pass; time until the old leader's
/// status names the new leader. Also a stall (held data arrives on heal), which must
/// stay fast.
#[test]
fn a_healed_old_leader_learns_the_new_leader_quickly() {
    // Typically 0.4-0.5 s; the bound is loose because a loaded 2-core machine running
    // the other tests of this file beside it has shown one 5.8 s rejoin in about ten
    // runs (a redial that lands in the reconnect backoff). The old code never rejoins
    // within `limit`.
    let bound = Duration::from_millis(8000);
    let limit = Duration::from_secs(10);
    let partition = Duration::from_secs(3);
    let blackhole = rejoin_after_partition(LinkMode::Blackhole, partition, limit);
    let stall = rejoin_after_partition(LinkMode::Stall, partition, limit);
    println!(
        "old leader knew the new leader after the heal: blackhole {blackhole:?}, stall {stall:?}"
    );
    let blackhole =
        blackhole.expect("the old leader never learned the new leader after a blackhole");
    assert!(blackhole < bound, "blackhole: rejoined after {blackhole:?}");
    let stall = stall.expect("the old leader never learned the new leader after a stall");
    assert!(stall < bound, "stall: rejoined after {stall:?}");
}

/// Goal: the client library's per-request deadline also bounds sending (issue 13 item
/// 4, the binary port: a client's request to a follower is redirected, so its deadline
/// is the client's own; `Client` waits with `Pipeline::recv`). Method: SIGSTOP a node,
/// queue 64 MiB of puts on a pipeline to it (more than the socket buffers take) and wait
/// for a reply with a 1.5 s deadline: it must return an error by then instead of
/// blocking in `write`.
#[test]
fn a_request_to_a_stopped_node_returns_by_its_deadline() {
    let cluster = Cluster::start(3, |_| {});
    cluster.leader();
    let mut pipeline =
        Pipeline::connect(&cluster.addr(0), Duration::from_secs(2), 1 << 24).expect("connect");
    cluster.pause(0, true);
    let (done_tx, done) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for seq in 1..=8 {
            let put = Command::Put {
                session: Session { client_id: 1, seq },
                key: b"big".to_vec(),
                value: vec![7u8; 8 << 20],
            };
            pipeline.submit(RequestBody::Command(put)).expect("submit");
        }
        let started = Instant::now();
        let result = pipeline.recv(started + Duration::from_millis(1500));
        let _ = done_tx.send((started.elapsed(), result.map_err(|e| e.to_string())));
    });
    let outcome = done.recv_timeout(Duration::from_secs(10));
    cluster.pause(0, false);
    let (elapsed, result) = outcome.expect("the requests did not return within 10 s");
    println!(
        "requests to a stopped node returned after {} ms: {result:?}",
        elapsed.as_millis()
    );
    assert!(result.is_err(), "a stopped node cannot answer");
    assert!(
        elapsed < Duration::from_millis(4000),
        "returned after {elapsed:?}"
    );
}
