//! A member whose data directory was wiped and that restarts under its old id, on real
//! server processes: the leader finds that it lost the log it had acknowledged and
//! refuses to repair it (it also forgot its vote), reporting the member and the repair
//! in its log and its `GET /events`; the wiped member stays empty instead of silently
//! serving a partial state. See docs/OPERATIONS.md, "A member that lost its data".

mod common;

use std::thread::sleep;
use std::time::{Duration, Instant};

use common::Cluster;
use common::http::Conn;

/// Goal: a wiped member restarted under its old id is reported by the leader (its log
/// names the member and the repair; `GET /events` holds a `member_lost_log` event with
/// the member's id and the index it had acknowledged), and is left empty, not repaired.
/// Method: three nodes; write 50 keys; wait until a follower applied them; kill it,
/// delete its data directory, start it again with the same config; keep writing (an
/// idle leader sends no append to reject) until the leader reports it (bounded).
#[test]
fn a_wiped_member_is_reported_not_silently_ignored() {
    let mut cluster = Cluster::start(3, |_| {});
    let leader = cluster.leader();
    let follower = (leader + 1) % 3;
    let mut client = cluster.client();
    for i in 0..50 {
        client
            .put(format!("k{i}").as_bytes(), b"v")
            .expect("put on a healthy cluster");
    }
    let applied = cluster.applied(leader);
    cluster.wait_applied(follower, applied);
    let id = cluster.nodes[follower].id;
    cluster.kill(follower);
    std::fs::remove_dir_all(cluster.data_dir(follower)).expect("wipe the data directory");
    cluster.start_node(follower);

    let wanted = format!("member {id} lost its log");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut more = 0;
    while !cluster.log_text(leader).contains(&wanted) {
        // Appends (which the member rejects) go out only for new entries.
        client
            .put(format!("more{more}").as_bytes(), b"v")
            .expect("put with two of three members up");
        more += 1;
        assert!(
            Instant::now() < deadline,
            "the leader did not report the wiped member {id} within 15 s; its log:\n{}",
            cluster.log_text(leader)
        );
        sleep(Duration::from_millis(50));
    }
    let log = cluster.log_text(leader);
    let line = log
        .lines()
        .find(|line| line.contains(&wanted))
        .expect("the report line");
    assert!(
        line.contains("ERROR") && line.contains(&format!("raftkv-cli member remove {id}")),
        "an error naming the repair: {line}"
    );

    let http = cluster.nodes[leader].http_addr.expect("http port");
    let events = Conn::open(http).call("GET", "/events", b"").json();
    let events = events.as_array().expect("a JSON array");
    let event = events
        .iter()
        .find(|e| e["kind"] == "member_lost_log")
        .unwrap_or_else(|| panic!("no member_lost_log event: {events:?}"));
    assert_eq!(event["member"], id, "{event}");
    assert!(
        event["acknowledged"].as_u64() >= Some(applied.min(50)),
        "{event}"
    );

    // Not repaired behind the operator's back: the member stays empty.
    let status = raftkv::client::status_at(&cluster.addr(follower), &common::options())
        .expect("the wiped member answers status");
    assert_eq!(
        (status.applied_index, status.last_index),
        (0, 0),
        "the wiped member holds nothing"
    );
}
