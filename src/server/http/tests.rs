//! Goal: the HTTP connection state against a fake node that applies requests to a real
//! `KvStore` (the state machine that ships): responses keep request order, writes
//! register one session and carry increasing sequence numbers, NotLeader is followed,
//! failures map to their status codes, and a bad request closes the connection.

use super::*;
use crate::codec::client::{Member, Role};
use crate::codec::http::{Decoded, HttpCodec};
use crate::kv::{KvConfig, KvStore, command_to_vec};

struct FakeNode {
    store: KvStore,
    index: u64,
    /// Answer NotLeader (pointing at "leader:1") to local writes and reads.
    follower: bool,
    /// Answer every write with this instead of applying it.
    write_failure: Option<ResponseBody>,
    /// Sessions and sequence numbers of the writes applied.
    sessions: Vec<Session>,
}

impl NodePages for FakeNode {
    fn prometheus_text(&self) -> String {
        format!(
            "# TYPE raftkv_fake_applied gauge\nraftkv_fake_applied {}\n",
            self.index
        )
    }

    fn recent_events_json(&self) -> String {
        r#"[{"time_ms":1,"kind":"leader_changed","term":2,"message":"fake"}]"#.into()
    }
}

impl FakeNode {
    fn new() -> FakeNode {
        FakeNode {
            store: KvStore::new(KvConfig::default()),
            index: 0,
            follower: false,
            write_failure: None,
            sessions: Vec::new(),
        }
    }

    fn status(&self, node_id: u64) -> Status {
        Status {
            node_id,
            role: if node_id == 2 {
                Role::Leader
            } else {
                Role::Follower
            },
            term: 3,
            leader_id: 2,
            commit_index: self.index,
            applied_index: self.index,
            last_index: self.index,
            config_index: 0,
            promote_distance_max: 0,
            members: (1..=3)
                .map(|id| Member {
                    id,
                    voter: true,
                    peer_addr: String::new(),
                    client_addr: format!("leader:{id}"),
                    match_index: 0,
                })
                .collect(),
        }
    }

    fn answer(&mut self, submit: &Submit) -> ResponseBody {
        let local = submit.target == Target::Local;
        match &submit.request.body {
            RequestBody::Get { stale: false, .. } | RequestBody::Command(_)
                if self.follower && local =>
            {
                ResponseBody::NotLeader {
                    leader_id: 2,
                    leader_client_addr: Some("leader:2".into()),
                }
            }
            RequestBody::Get { key, .. } => ResponseBody::Result(CommandResult::Value(
                self.store.get(key).map(<[u8]>::to_vec),
            )),
            RequestBody::Command(command) => {
                if let Some(session) = command.session() {
                    self.sessions.push(session);
                    if let Some(failure) = &self.write_failure {
                        return failure.clone();
                    }
                }
                self.index += 1;
                ResponseBody::Result(self.store.apply(self.index, &command_to_vec(command)))
            }
            RequestBody::Status => ResponseBody::Status(self.status(if local { 1 } else { 2 })),
            RequestBody::Metrics
            | RequestBody::Range { .. }
            | RequestBody::MemberChange(_)
            | RequestBody::TransferLeader { .. }
            | RequestBody::Backup(_)
            | RequestBody::Ttl { .. }
            | RequestBody::Watch { .. } => ResponseBody::Error("no".into()),
        }
    }
}

/// Feeds `input` through the codec and the connection, answering every submit at once,
/// until nothing is left; returns the response bytes and whether the connection closes.
fn run(conn: &mut HttpConn, node: &mut FakeNode, input: &[u8]) -> (String, bool) {
    run_at(conn, node, input, None)
}

/// [`run`] on a node whose HTTP address is `http_addr`.
fn run_at(
    conn: &mut HttpConn,
    node: &mut FakeNode,
    input: &[u8],
    http_addr: Option<&str>,
) -> (String, bool) {
    let codec = HttpCodec::new(1024, 1024);
    let mut input = input.to_vec();
    loop {
        match codec.decode(&input) {
            Ok(Decoded::Request(used, request)) => {
                input.drain(..used);
                conn.on_request(*request, node);
            }
            Ok(Decoded::Partial { .. }) => break,
            Err(e) => {
                conn.on_bad_request(HttpResponse::json(e.status(), json::error_body("bad")));
                break;
            }
        }
    }
    loop {
        let submits = conn.take_submits();
        if submits.is_empty() {
            break;
        }
        for submit in submits {
            let body = node.answer(&submit);
            let response = Response {
                request_id: submit.request.request_id,
                body,
            };
            conn.on_response(response, http_addr);
        }
    }
    let mut out = Vec::new();
    let close = conn.take_replies(&mut out);
    (String::from_utf8(out).expect("utf-8"), close)
}

fn statuses(text: &str) -> Vec<u16> {
    text.match_indices("HTTP/1.1 ")
        .map(|(i, _)| text[i + 9..i + 12].parse().expect("status"))
        .collect()
}

#[test]
fn pipelined_requests_answer_in_order_and_see_earlier_writes() {
    let mut node = FakeNode::new();
    let mut conn = HttpConn::new();
    let input = b"PUT /kv/a HTTP/1.1\r\nContent-Length: 15\r\n\r\n{\"value\": \"v1\"}\
                  GET /kv/a HTTP/1.1\r\n\r\n\
                  GET /kv/missing HTTP/1.1\r\n\r\n\
                  DELETE /kv/a HTTP/1.1\r\n\r\n\
                  DELETE /kv/a HTTP/1.1\r\n\r\n\
                  GET /version HTTP/1.1\r\n\r\n";
    let (text, close) = run(&mut conn, &mut node, input);
    assert!(!close);
    assert_eq!(
        statuses(&text),
        vec![200, 200, 404, 200, 200, 200],
        "{text}"
    );
    let bodies: Vec<&str> = text.split("\r\n\r\n").skip(1).collect();
    assert!(bodies[0].starts_with(r#"{"key":"a","ok":true}"#), "{text}");
    assert!(
        bodies[1].starts_with(r#"{"key":"a","value":"v1"}"#),
        "{text}"
    );
    assert!(bodies[3].starts_with(r#"{"deleted":true"#) || bodies[3].contains(r#""deleted":true"#));
    assert!(bodies[4].contains(r#""deleted":false"#), "{text}");
    // One session, sequence numbers 1, 2, 3 for the three writes.
    let seqs: Vec<u64> = node.sessions.iter().map(|s| s.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert!(
        node.sessions
            .iter()
            .all(|s| s.client_id == node.sessions[0].client_id)
    );
}

#[test]
fn a_follower_forwards_and_a_failed_compare_is_409() {
    let mut node = FakeNode::new();
    node.follower = true;
    let mut conn = HttpConn::new();
    let txn = br#"{"compare":[{"key":"a","op":"absent"}],"success":[{"op":"put","key":"a","value":"1"}],"failure":[{"op":"get","key":"a"}]}"#;
    let request = |body: &[u8]| {
        let mut out = format!(
            "POST /txn HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    };
    let (first, _) = run(&mut conn, &mut node, &request(txn));
    assert_eq!(statuses(&first), vec![200], "{first}");
    assert!(first.contains(r#""succeeded":true"#), "{first}");
    let (second, _) = run(&mut conn, &mut node, &request(txn));
    assert_eq!(statuses(&second), vec![409], "{second}");
    assert!(second.contains(r#""results":[{"value":"1"}]"#), "{second}");
    let (stale, _) = run(
        &mut conn,
        &mut node,
        b"GET /kv/a?stale=true HTTP/1.1\r\n\r\n",
    );
    assert_eq!(statuses(&stale), vec![200], "{stale}");
}

#[test]
fn failures_map_to_status_codes() {
    let cases: [(ResponseBody, u16); 6] = [
        (ResponseBody::Unavailable("no leader known".into()), 503),
        (
            ResponseBody::Unavailable("write timed out before it committed".into()),
            504,
        ),
        (
            ResponseBody::Error("NOSPACE node 3 is out of disk space".into()),
            507,
        ),
        (
            ResponseBody::Error("request of 9 bytes exceeds the limit of 8 bytes".into()),
            413,
        ),
        (ResponseBody::Error("bad request".into()), 400),
        (ResponseBody::Result(CommandResult::SessionExpired), 503),
    ];
    for (i, (failure, want)) in cases.into_iter().enumerate() {
        let mut node = FakeNode::new();
        node.write_failure = Some(failure);
        let mut conn = HttpConn::new();
        let input = b"PUT /kv/a HTTP/1.1\r\nContent-Type: application/octet-stream\r\n\
                      Content-Length: 1\r\n\r\nx";
        let (text, _) = run(&mut conn, &mut node, input);
        assert_eq!(statuses(&text), vec![want], "#{i}: {text}");
        assert!(text.contains(r#"{"error":"#), "#{i}: {text}");
        assert_eq!(want == 503, text.contains("Retry-After: 1"), "#{i}: {text}");
    }
}

#[test]
fn status_and_health_read_the_node() {
    let mut node = FakeNode::new();
    let mut conn = HttpConn::new();
    let input = b"GET /cluster/status HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\n\r\n";
    let (text, _) = run_at(&mut conn, &mut node, input, Some("127.0.0.1:80"));
    assert_eq!(statuses(&text), vec![200, 200], "{text}");
    // The follower asked the leader ("leader:2") for its view: the leader's row is known.
    assert!(text.contains(r#""role":"leader","term":3"#), "{text}");
    assert!(text.contains(r#""http_addr":"127.0.0.1:80""#), "{text}");
}

#[test]
fn a_bad_request_is_answered_after_earlier_ones_then_closes() {
    let mut node = FakeNode::new();
    let mut conn = HttpConn::new();
    let input = b"GET /version HTTP/1.1\r\n\r\n\x00garbage\r\n\r\nGET /version HTTP/1.1\r\n\r\n";
    let (text, close) = run(&mut conn, &mut node, input);
    assert!(close);
    assert_eq!(statuses(&text), vec![200, 400], "{text}");
    assert!(text.ends_with(r#"{"error":"bad"}"#), "{text}");
    assert!(conn.is_broken());
}

#[test]
fn connection_close_ends_after_its_response() {
    let mut node = FakeNode::new();
    let mut conn = HttpConn::new();
    let input = b"GET /version HTTP/1.1\r\nConnection: close\r\n\r\nGET /version HTTP/1.1\r\n\r\n";
    let (text, close) = run(&mut conn, &mut node, input);
    assert!(close);
    assert_eq!(statuses(&text), vec![200], "{text}");
    assert!(text.contains("Connection: close\r\n"), "{text}");
}

#[test]
fn metrics_and_events_are_the_nodes_pages() {
    let mut node = FakeNode::new();
    let mut conn = HttpConn::new();
    let input = b"PUT /kv/a HTTP/1.1\r\nContent-Length: 15\r\n\r\n{\"value\": \"v1\"}\
                  GET /metrics HTTP/1.1\r\n\r\n\
                  GET /events HTTP/1.1\r\n\r\n\
                  POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
    let (text, close) = run(&mut conn, &mut node, input);
    assert!(!close);
    assert_eq!(statuses(&text), vec![200, 200, 200, 405], "{text}");
    assert!(
        text.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{text}"
    );
    // Rendered as the request arrived (all three before the PUT was answered).
    assert!(text.contains("raftkv_fake_applied 0\n"), "{text}");
    assert!(text.contains(r#""kind":"leader_changed""#), "{text}");
}
