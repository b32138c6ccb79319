//! The HTTP/JSON port against real `raftkv-server` processes (issue 16 §1, §2).
//!
//! Goal: a curl-like session through a follower does what docs/HTTP.md says (writes and
//! linearizable reads forwarded to the leader, 404/409 answers, status, health,
//! version), keep-alive pipelines are answered in order, and the port's limits hold:
//! 431, 413 and 400 answer and close, a slowloris request is closed by
//! `partial_request_timeout_ms`, and connections past `client_connections_max` are
//! refused. Method: raw HTTP/1.1 over std `TcpStream` (tests/common/http.rs), so the
//! bytes the node sends are checked as they are.

mod common;

use std::io::Write;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::http::{Conn, Reply, request_bytes};
use common::{Cluster, eventually};
use serde_json::json;

fn http_addr(cluster: &Cluster, i: usize) -> std::net::SocketAddr {
    cluster.nodes[i].http_addr.expect("an HTTP address")
}

/// Retries a request on fresh connections until it answers `want` (a fresh cluster may
/// still be electing), for at most 15 s.
fn call_until(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    want: u16,
) -> Reply {
    eventually(|| {
        let mut conn = Conn::try_open(addr).map_err(|e| e.to_string())?;
        conn.send(method, path, &[], body);
        let reply = conn.read_reply().ok_or("closed without a reply")?;
        if reply.status == want {
            Ok(reply)
        } else {
            Err(format!(
                "{method} {path}: {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ))
        }
    })
}

/// Goal: the README's curl session, and the rest of the API, through a follower.
#[test]
fn curl_session_through_a_follower() {
    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.leader();
    let follower = (leader + 1) % 3;
    let addr = http_addr(&cluster, follower);
    call_until(addr, "PUT", "/kv/name", br#"{"value": "RaftKV"}"#, 200);
    let mut conn = Conn::open(addr);
    let got = conn.call("GET", "/kv/name", b"");
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), json!({"key": "name", "value": "RaftKV"}));
    // The write went through the log: the leader's own state has it.
    assert_eq!(
        cluster.read_at(leader, b"name").as_deref(),
        Some(&b"RaftKV"[..])
    );

    let missing = conn.call("GET", "/kv/nothing-here", b"");
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].is_string());

    // A percent-encoded key and a raw value that is not UTF-8.
    conn.send(
        "PUT",
        "/kv/a%2Fb%20c",
        &[("Content-Type", "application/octet-stream")],
        b"\xff\x00",
    );
    assert_eq!(conn.read_reply().expect("reply").status, 200);
    let binary = conn.call("GET", "/kv/a%2Fb%20c", b"");
    assert_eq!(
        binary.json(),
        json!({"key": "a/b c", "value_base64": "/wA="})
    );
    assert_eq!(
        cluster.read_at(leader, b"a/b c").as_deref(),
        Some(&b"\xff\x00"[..])
    );

    // Compare-and-swap: the first succeeds, the same again fails with 409.
    let cas = br#"{"compare": [{"key": "name", "op": "eq", "value": "RaftKV"}],
                   "success": [{"op": "put", "key": "name", "value": "v2"}],
                   "failure": [{"op": "get", "key": "name"}]}"#;
    let first = conn.call("POST", "/txn", cas);
    assert_eq!(first.status, 200, "{:?}", first.json());
    assert_eq!(first.json()["succeeded"], true);
    let second = conn.call("POST", "/txn", cas);
    assert_eq!(second.status, 409);
    assert_eq!(second.json()["results"], json!([{"value": "v2"}]));

    let deleted = conn.call("DELETE", "/kv/name", b"");
    assert_eq!(deleted.json(), json!({"key": "name", "deleted": true}));
    assert_eq!(conn.call("GET", "/kv/name", b"").status, 404);

    let status = conn.call("GET", "/cluster/status", b"").json();
    let leader_id = cluster.nodes[leader].id;
    assert_eq!(status["node_id"], cluster.nodes[follower].id);
    assert_eq!(status["leader_id"], leader_id);
    let members = status["members"].as_array().expect("members");
    assert_eq!(members.len(), 3);
    let leaders: Vec<_> = members.iter().filter(|m| m["role"] == "leader").collect();
    assert_eq!(leaders.len(), 1, "{status}");
    assert_eq!(leaders[0]["id"], leader_id);
    assert!(leaders[0]["commit_index"].as_u64() > Some(0), "{status}");
    assert!(members.iter().all(|m| m["lag"].is_u64()), "{status}");

    let health = call_until(addr, "GET", "/health", b"", 200);
    assert_eq!(health.json()["healthy"], true);
    let version = conn.call("GET", "/version", b"");
    assert_eq!(version.json()["version"], env!("CARGO_PKG_VERSION"));
    let page = conn.call("GET", "/", b"");
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(String::from_utf8_lossy(&page.body).contains("raftkv"));

    // Expect: 100-continue gets the interim answer before the body is sent.
    let body = br#"{"value": "after continue"}"#;
    let head = format!(
        "PUT /kv/continued HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.stream.write_all(head.as_bytes()).expect("write head");
    assert_eq!(conn.read_reply().expect("100 Continue").status, 100);
    conn.stream.write_all(body).expect("write body");
    assert_eq!(conn.read_reply().expect("PUT reply").status, 200);
    let continued = conn.call("GET", "/kv/continued", b"");
    assert_eq!(continued.json()["value"], "after continue");

    // A stale read is served by the follower itself once it applied the write.
    conn.call("PUT", "/kv/stale", br#"{"value": "s"}"#);
    let stale = call_until(addr, "GET", "/kv/stale?stale=true", b"", 200);
    assert_eq!(stale.json()["value"], "s");
}

/// Goal: pipelined requests on one keep-alive connection are answered in request
/// order, and each read sees the writes sent before it on the connection.
#[test]
fn pipelined_requests_are_answered_in_order() {
    let cluster = Cluster::start(3, |_| {});
    let follower = (cluster.leader() + 1) % 3;
    let addr = http_addr(&cluster, follower);
    call_until(addr, "PUT", "/kv/warm", br#"{"value": "up"}"#, 200);
    let mut conn = Conn::open(addr);
    let mut batch = Vec::new();
    for i in 0..20 {
        let body = format!(r#"{{"value": "{i}"}}"#);
        batch.extend(request_bytes("PUT", "/kv/p", &[], body.as_bytes()));
        batch.extend(request_bytes("GET", "/kv/p", &[], b""));
    }
    batch.extend(request_bytes("GET", "/version", &[], b""));
    conn.stream.write_all(&batch).expect("write pipeline");
    for i in 0..20 {
        let put = conn.read_reply().expect("PUT reply");
        assert_eq!(put.status, 200, "PUT #{i}");
        let get = conn.read_reply().expect("GET reply");
        assert_eq!(get.json()["value"], i.to_string(), "GET #{i}");
    }
    let last = conn.read_reply().expect("version reply");
    assert!(last.json()["version"].is_string());
}

/// Goal: each limit answers with its status and closes, and a request never finished
/// is closed by the slowloris timeout. Method: one node with a 1 s partial-request
/// timeout and room for few client connections.
#[test]
fn limits_answer_and_close() {
    const CONNECTIONS_MAX: usize = 6;
    let cluster = Cluster::start(1, |config| {
        config.limits.partial_request_timeout_ms = 1000;
        config.limits.client_connections_max = CONNECTIONS_MAX;
    });
    let addr = http_addr(&cluster, 0);
    call_until(addr, "GET", "/health", b"", 200);

    // 431: a head over 16 KiB.
    let mut conn = Conn::open(addr);
    let huge = "x".repeat(20 * 1024);
    conn.send("GET", "/version", &[("X-Huge", &huge)], b"");
    let reply = conn.read_reply().expect("431 reply");
    assert_eq!(reply.status, 431);
    assert!(reply.json()["error"].is_string());
    assert!(
        conn.wait_closed(Duration::from_secs(5)).is_some(),
        "open after 431"
    );

    // 413: a body announced larger than limits.frame_bytes_max (16 MiB by default).
    let mut conn = Conn::open(addr);
    let head = "PUT /kv/big HTTP/1.1\r\nContent-Length: 17000000\r\n\r\n";
    conn.stream.write_all(head.as_bytes()).expect("write");
    let reply = conn.read_reply().expect("413 reply");
    assert_eq!(reply.status, 413);
    assert!(
        conn.wait_closed(Duration::from_secs(5)).is_some(),
        "open after 413"
    );

    // 400: garbage, answered after the request before it, then closed.
    let mut conn = Conn::open(addr);
    let mut input = request_bytes("GET", "/version", &[], b"");
    input.extend_from_slice(b"\x00\x01 garbage\r\n\r\n");
    conn.stream.write_all(&input).expect("write");
    assert_eq!(conn.read_reply().expect("version").status, 200);
    let reply = conn.read_reply().expect("400 reply");
    assert_eq!(reply.status, 400);
    assert!(reply.json()["error"].is_string());
    assert!(
        conn.wait_closed(Duration::from_secs(5)).is_some(),
        "open after 400"
    );

    // Slowloris: half a request, never finished, is closed by the 1 s timeout (the
    // sweep runs about once a second).
    let mut slow = Conn::open(addr);
    slow.stream.write_all(b"GET /vers").expect("write");
    let took = slow.wait_closed(Duration::from_secs(10));
    assert!(took.is_some(), "a half-sent request was not closed");

    // The connection cap: CONNECTIONS_MAX open ones work, the next is closed at once.
    let mut open: Vec<Conn> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while open.len() < CONNECTIONS_MAX {
        let mut conn = Conn::open(addr);
        conn.send("GET", "/version", &[], b"");
        match conn.read_reply() {
            Some(reply) if reply.status == 200 => open.push(conn),
            // Closed connections of the cases above may not be counted out yet.
            _ => {
                assert!(
                    Instant::now() < deadline,
                    "only {} connections admitted",
                    open.len()
                );
                sleep(Duration::from_millis(100));
            }
        }
    }
    let mut refused = Conn::open(addr);
    refused.send("GET", "/version", &[], b"");
    assert!(
        refused.read_reply().is_none(),
        "a connection past the cap was served"
    );
    // The admitted ones keep working.
    for conn in &mut open {
        assert_eq!(conn.call("GET", "/version", b"").status, 200);
    }
    drop(open);
    call_until(addr, "GET", "/version", b"", 200);
}

/// `promtool check metrics` on `text`; `None` (skipped, loudly) when promtool is not
/// installed and RAFTKV_REQUIRE_PROMTOOL is unset.
fn promtool_check_metrics(text: &[u8]) -> Option<std::process::Output> {
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if std::env::var_os("RAFTKV_REQUIRE_PROMTOOL").is_none() => {
            eprintln!("SKIPPED promtool check: promtool does not run ({e})");
            return None;
        }
        Err(e) => panic!("RAFTKV_REQUIRE_PROMTOOL is set but promtool does not run: {e}"),
    };
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text)
        .expect("promtool reads stdin");
    Some(child.wait_with_output().expect("promtool runs"))
}

/// The `raftkv_*` metric names an alert rule or dashboard file refers to.
fn referenced_metrics(path: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("monitoring file");
    let mut names: Vec<String> = text
        .match_indices("raftkv_")
        .map(|(i, _)| {
            text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Goal: a running node serves `GET /metrics` in a format promtool accepts, with every
/// metric docs/monitoring's alert rules and dashboard use (on the leader, which alone
/// exports its followers' lag), and `GET /events` with the election that made its
/// leader; on a follower too. Method: scrape both over the real
/// HTTP port after a write.
#[test]
fn metrics_and_events_are_served_by_every_node() {
    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.leader();
    let follower = (leader + 1) % 3;
    call_until(
        http_addr(&cluster, follower),
        "PUT",
        "/kv/scraped",
        br#"{"value": "yes"}"#,
        200,
    );
    let mut wanted = referenced_metrics("docs/monitoring/alerts.yml");
    wanted.extend(referenced_metrics("docs/monitoring/grafana-dashboard.json"));
    assert!(wanted.len() >= 8, "the rules refer to metrics: {wanted:?}");
    for node in [leader, follower] {
        let mut conn = Conn::open(http_addr(&cluster, node));
        let metrics = conn.call("GET", "/metrics", b"");
        assert_eq!(metrics.status, 200);
        assert_eq!(
            metrics.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let text = String::from_utf8(metrics.body.clone()).expect("UTF-8 text");
        // The leader's view of its followers (lag, activity) is the leader's alone.
        for name in wanted.iter().filter(|_| node == leader) {
            // A histogram is referred to by its _bucket/_sum/_count series.
            assert!(
                text.lines().any(|line| line.starts_with(name.as_str())),
                "node {node}: {name} is not exported:\n{text}"
            );
        }
        if let Some(output) = promtool_check_metrics(&metrics.body) {
            assert!(
                output.status.success(),
                "promtool check metrics on node {node}: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let events = conn.call("GET", "/events", b"").json();
        let events = events.as_array().expect("a JSON array");
        assert!(
            events
                .iter()
                .any(|e| e["kind"] == "leader_changed" && e["time_ms"].as_u64() > Some(0)),
            "node {node}: {events:?}"
        );
    }
}
