//! Unit tests of [`Node`] without sockets: node 1 of a two-node cluster, driven
//! through its public inputs (ticks, peer messages, client requests) and
//! `before_sleep`, with a recording [`Outbox`] and a scripted node 2 that grants
//! votes and acknowledges appends (and, when told, heartbeats).
//!
//! Invariant: every test starts from a fresh data directory and elects node 1 first.

use super::*;
use crate::codec::client::{
    RequestBody, ResponseBody, decode_request_with_command_bytes, encode_request,
};
use crate::kv::{Command, CommandResult, Session};
use crate::raft::Role;
use crate::raft::message::{AppendResponse, HeartbeatResponse, MessageBody, VoteResponse};

/// Everything the node asked to send.
#[derive(Default)]
struct Recorder {
    sent: Vec<Message>,
    replies: Vec<(ClientRef, Response)>,
}

impl Outbox for Recorder {
    fn send(&mut self, message: &Message) -> usize {
        self.sent.push(message.clone());
        1
    }

    fn reply(&mut self, client: ClientRef, response: Response) {
        self.replies.push((client, response));
    }

    fn flush_now(&mut self) {}
}

fn config(dir: &std::path::Path) -> Config {
    let text = format!(
        r#"
node_id = 1
cluster_id = 1
data_dir = "{}"
listen_peer = "127.0.0.1:17001"
listen_client = "127.0.0.1:18001"

[[members]]
id = 1
peer_addr = "127.0.0.1:17001"
client_addr = "127.0.0.1:18001"

[[members]]
id = 2
peer_addr = "127.0.0.1:17002"
client_addr = "127.0.0.1:18002"
"#,
        dir.display()
    );
    Config::parse(&text, &dir.join("node.toml")).expect("test config parses")
}

/// Node 2 answers what node 1 sent it: grants votes, acknowledges appends, and
/// answers heartbeats when `heartbeats` is set.
fn answer_as_peer(node: &mut Node, out: &mut Recorder, heartbeats: bool) {
    for message in std::mem::take(&mut out.sent) {
        let body = match message.body {
            MessageBody::PreVote(_) => MessageBody::PreVoteResponse(VoteResponse { granted: true }),
            MessageBody::Vote(_) => MessageBody::VoteResponse(VoteResponse { granted: true }),
            MessageBody::Append(append) => MessageBody::AppendResponse(AppendResponse {
                reject: false,
                index: append.prev_log_index + append.entries.len() as u64,
                conflict_term: 0,
                conflict_index: 0,
            }),
            MessageBody::Heartbeat(heartbeat) if heartbeats => {
                MessageBody::HeartbeatResponse(HeartbeatResponse {
                    context: heartbeat.context,
                })
            }
            _ => continue,
        };
        node.on_peer_message(Message {
            from: 2,
            to: 1,
            term: message.term,
            body,
        });
    }
}

/// Opens node 1 in `dir` and makes it the leader with its first entry applied.
fn elected_leader(dir: &std::path::Path) -> (Node, Recorder) {
    let mut node = Node::open(config(dir), false).expect("node opens");
    let mut out = Recorder::default();
    for _ in 0..200 {
        node.tick();
        node.before_sleep(&mut out).expect("turn");
        answer_as_peer(&mut node, &mut out, true);
        node.before_sleep(&mut out).expect("turn");
        let raft = node.replica.raw_node().raft();
        if raft.role == Role::Leader && node.replica.kv().applied_index() >= raft.log.committed {
            answer_as_peer(&mut node, &mut out, true);
            node.before_sleep(&mut out).expect("turn");
            out.sent.clear();
            return (node, out);
        }
    }
    panic!("node 1 did not become leader");
}

/// Sends `request` through the client codec, as the event loop does.
fn submit(node: &mut Node, client: ClientRef, request: &Request) -> Option<Response> {
    let mut body = Vec::new();
    encode_request(request, &mut body);
    let (request, command_bytes) =
        decode_request_with_command_bytes(&body).expect("request decodes");
    node.on_client_request(Port::Client, client, request, command_bytes, 0)
}

fn metric(node: &mut Node, name: &str) -> u64 {
    node.replica
        .metrics_snapshot()
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
        .unwrap_or_else(|| panic!("no metric {name}"))
}

const CLIENT: ClientRef = ClientRef {
    key: 7,
    generation: 1,
};

fn command(request_id: u64, command: Command) -> Request {
    Request {
        request_id,
        body: RequestBody::Command(command),
    }
}

fn result_of(out: &Recorder, request_id: u64) -> Option<&ResponseBody> {
    out.replies
        .iter()
        .find(|(client, r)| *client == CLIENT && r.request_id == request_id)
        .map(|(_, r)| &r.body)
}

// Goal: a write is proposed from the bytes the client sent and applied as sent,
// and only turns that appended entries count as fsyncs: the turn that just moves
// the commit index (no fdatasync) leaves the group-commit metrics alone.
#[test]
fn writes_apply_as_sent_and_only_real_fsyncs_count() {
    let dir = tempfile::tempdir().unwrap();
    let (mut node, mut out) = elected_leader(dir.path());
    assert!(submit(&mut node, CLIENT, &command(1, Command::RegisterSession)).is_none());
    node.before_sleep(&mut out).unwrap();
    answer_as_peer(&mut node, &mut out, true);
    node.before_sleep(&mut out).unwrap();
    let Some(ResponseBody::Result(CommandResult::Registered { client_id })) = result_of(&out, 1)
    else {
        panic!("no session: {:?}", out.replies);
    };
    let session = Session {
        client_id: *client_id,
        seq: 1,
    };
    let (fsyncs, entries) = (
        metric(&mut node, "storage.fsync.count"),
        metric(&mut node, "storage.fsync.entries.sum"),
    );
    let put = Command::Put {
        session,
        key: b"key".to_vec(),
        value: b"value".to_vec(),
    };
    assert!(submit(&mut node, CLIENT, &command(2, put)).is_none());
    node.before_sleep(&mut out).unwrap();
    assert_eq!(metric(&mut node, "storage.fsync.count"), fsyncs + 1);
    assert_eq!(result_of(&out, 2), None, "answered before commit");
    answer_as_peer(&mut node, &mut out, true);
    node.before_sleep(&mut out).unwrap();
    assert_eq!(
        result_of(&out, 2),
        Some(&ResponseBody::Result(CommandResult::Ok))
    );
    assert_eq!(node.replica.kv().get(b"key"), Some(&b"value"[..]));
    assert_eq!(metric(&mut node, "storage.fsync.count"), fsyncs + 1);
    assert_eq!(metric(&mut node, "storage.fsync.entries.sum"), entries + 1);
}

// Goal: when a client's connection closes, its write and its reads waiting for a
// ReadIndex round are dropped with their deadlines, while another client's read
// in the same round is still served.
#[test]
fn a_closed_client_is_forgotten_wherever_its_requests_wait() {
    let dir = tempfile::tempdir().unwrap();
    let (mut node, mut out) = elected_leader(dir.path());
    let other = ClientRef {
        key: 8,
        generation: 1,
    };
    let get = |request_id| Request {
        request_id,
        body: RequestBody::Get {
            key: b"key".to_vec(),
            stale: false,
        },
    };
    assert!(submit(&mut node, CLIENT, &command(1, Command::RegisterSession)).is_none());
    assert!(submit(&mut node, CLIENT, &get(2)).is_none());
    assert!(submit(&mut node, other, &get(3)).is_none());
    node.before_sleep(&mut out).unwrap();
    assert_eq!(
        node.replica.waiting_counts(),
        (1, 2),
        "(writes, reads in a round)"
    );
    node.on_client_closed(CLIENT);
    assert_eq!(
        node.replica.waiting_counts(),
        (0, 1),
        "(writes, reads in a round)"
    );
    answer_as_peer(&mut node, &mut out, true);
    node.before_sleep(&mut out).unwrap();
    answer_as_peer(&mut node, &mut out, true);
    node.before_sleep(&mut out).unwrap();
    assert!(
        out.replies.iter().all(|(client, _)| *client != CLIENT),
        "{:?}",
        out.replies
    );
    assert_eq!(
        out.replies,
        vec![(
            other,
            Response {
                request_id: 3,
                body: ResponseBody::Result(CommandResult::Value(None)),
            }
        )]
    );
    assert_eq!(
        node.next_deadline(),
        None,
        "a deadline outlived its request"
    );
}

// Goal: a log the node can no longer read stops it, as a failed WAL write does: the
// store failure met while handling a peer message comes back from the next
// `before_sleep` (before, it was only a warning and the node went on). Method:
// overwrite the segment files under a leader, then make it re-read its log: node 2
// rejects an append above its match index, so the leader resends from there.
#[test]
fn a_log_read_failure_while_handling_a_message_stops_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let (mut node, mut out) = elected_leader(dir.path());
    let raft = node.replica.raw_node().raft();
    let (term, match_index) = (raft.term, raft.log.last_index());
    for request_id in 1..=2 {
        let register = command(request_id, Command::RegisterSession);
        assert!(submit(&mut node, CLIENT, &register).is_none());
        node.before_sleep(&mut out).expect("turn");
    }
    let mut overwritten = 0;
    let mut dirs = vec![dir.path().to_path_buf()];
    while let Some(at) = dirs.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "wal") {
                let bytes = std::fs::metadata(&path).unwrap().len() as usize;
                std::fs::write(&path, vec![0xa5; bytes]).unwrap();
                overwritten += 1;
            }
        }
    }
    assert!(overwritten > 0, "no segment file found");
    node.on_peer_message(Message {
        from: 2,
        to: 1,
        term,
        body: MessageBody::AppendResponse(AppendResponse {
            reject: true,
            index: match_index + 1,
            conflict_term: 0,
            conflict_index: match_index + 1,
        }),
    });
    match node.before_sleep(&mut out) {
        Err(replica::Error::Store(e)) => println!("stopped: {e}"),
        other => panic!("a node that cannot read its log goes on: {other:?}"),
    }
}

/// The recent events as parsed JSON objects.
fn events(node: &Node) -> Vec<serde_json::Value> {
    let text = node.recent_events_json();
    match serde_json::from_str(&text) {
        Ok(serde_json::Value::Array(events)) => events,
        other => panic!("events are not a JSON array: {other:?} from {text}"),
    }
}

fn kinds(events: &[serde_json::Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e["kind"].as_str()).collect()
}

// Goal: winning an election shows as events, oldest first, each with a wall-clock
// time, the term, a message and its details (the new leader's id).
#[test]
fn an_election_won_is_recorded_as_events_with_wall_clock_times() {
    let dir = tempfile::tempdir().unwrap();
    let before = wall_clock_ms();
    let (node, _out) = elected_leader(dir.path());
    let after = wall_clock_ms();
    let events = events(&node);
    let kinds = kinds(&events);
    let started = kinds.iter().position(|k| *k == "election_started");
    let won = kinds.iter().position(|k| *k == "election_won");
    assert!(
        matches!((started, won), (Some(s), Some(w)) if s < w),
        "{kinds:?}"
    );
    let leader = events
        .iter()
        .find(|e| e["kind"] == "leader_changed")
        .expect("a leader_changed event");
    assert_eq!(leader["leader"], 1);
    assert_eq!(leader["previous"], 0);
    for (i, event) in events.iter().enumerate() {
        let time_ms = event["time_ms"].as_u64().expect("time_ms");
        assert!((before..=after).contains(&time_ms), "#{i}: {event}");
        assert!(event["term"].as_u64().expect("term") >= 1, "#{i}: {event}");
        assert!(!event["message"].as_str().expect("message").is_empty());
    }
}

// Goal: an applied membership change and the loss of leadership to a higher term
// are events, with the member's and the new leader's ids.
#[test]
fn a_member_added_and_a_new_leader_are_events() {
    let dir = tempfile::tempdir().unwrap();
    let (mut node, mut out) = elected_leader(dir.path());
    let add = Request {
        request_id: 1,
        body: RequestBody::MemberChange(crate::codec::client::MemberChange::AddLearner {
            id: 3,
            peer_addr: "127.0.0.1:17003".into(),
            client_addr: "127.0.0.1:18003".into(),
        }),
    };
    assert!(submit(&mut node, CLIENT, &add).is_none());
    for _ in 0..3 {
        node.before_sleep(&mut out).unwrap();
        answer_as_peer(&mut node, &mut out, true);
    }
    node.before_sleep(&mut out).unwrap();
    let events = events(&node);
    let added = events
        .iter()
        .find(|e| e["kind"] == "member_added")
        .unwrap_or_else(|| panic!("no member_added in {events:?}"));
    assert_eq!(added["member"], 3);
    let term = node.replica.raw_node().raft().term;
    node.on_peer_message(Message {
        from: 2,
        to: 1,
        term: term + 1,
        body: MessageBody::Heartbeat(crate::raft::message::Heartbeat {
            commit: 0,
            context: 0,
        }),
    });
    node.before_sleep(&mut out).unwrap();
    let events = self::events(&node);
    let last = events.last().expect("events");
    assert_eq!(last["kind"], "leader_changed", "{events:?}");
    assert_eq!(
        (last["leader"].clone(), last["previous"].clone()),
        (2.into(), 1.into())
    );
    assert_eq!(last["term"], term + 1);
}

// Goal: an election the peer refuses its vote in is lost, and counted.
#[test]
fn a_refused_vote_is_a_lost_election() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::open(config(dir.path()), false).expect("node opens");
    let mut out = Recorder::default();
    for _ in 0..400 {
        node.tick();
        node.before_sleep(&mut out).unwrap();
        for message in std::mem::take(&mut out.sent) {
            let granted = matches!(message.body, MessageBody::PreVote(_));
            let body = match message.body {
                MessageBody::PreVote(_) => MessageBody::PreVoteResponse(VoteResponse { granted }),
                MessageBody::Vote(_) => MessageBody::VoteResponse(VoteResponse { granted }),
                _ => continue,
            };
            node.on_peer_message(Message {
                from: 2,
                to: 1,
                term: message.term,
                body,
            });
        }
        node.before_sleep(&mut out).unwrap();
        if kinds(&events(&node)).contains(&"election_lost") {
            assert_eq!(metric(&mut node, "raft.elections_won"), 0);
            let text = node.prometheus_text();
            assert!(
                text.contains("\nraftkv_raft_elections_lost_total 1\n"),
                "{text}"
            );
            return;
        }
    }
    panic!("no election_lost event: {:?}", kinds(&events(&node)));
}

/// The metric names (`raftkv_...`) a monitoring file refers to.
fn referenced_metrics(text: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("raftkv_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names.sort_unstable();
    names.dedup();
    names
}

/// The sample names of an exposition (labels and values stripped).
fn sample_names(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect()
}

/// Runs `promtool` with `args` and `stdin`; `None` when promtool is not installed and
/// RAFTKV_REQUIRE_PROMTOOL is unset (the test then skips, loudly).
fn promtool(args: &[&str], stdin: &str) -> Option<std::process::Output> {
    use std::io::Write as _;
    let child = std::process::Command::new("promtool")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if std::env::var_os("RAFTKV_REQUIRE_PROMTOOL").is_none() => {
            eprintln!(
                "SKIPPED: promtool is not installed ({e}); `apt-get install prometheus` \
                 provides it, and RAFTKV_REQUIRE_PROMTOOL=1 makes its absence a failure"
            );
            return None;
        }
        Err(e) => panic!("RAFTKV_REQUIRE_PROMTOOL is set but promtool does not run: {e}"),
    };
    let mut input = child.stdin.take().expect("piped stdin");
    input
        .write_all(stdin.as_bytes())
        .expect("promtool reads stdin");
    drop(input);
    Some(child.wait_with_output().expect("promtool runs"))
}

/// A leader that took writes with a connected peer: what a scrape of a live node
/// shows (the peer link counts are what the event loop records).
fn scraped_leader(dir: &std::path::Path) -> String {
    let (mut node, mut out) = elected_leader(dir);
    node.metrics_mut().on_peer_connected(2);
    node.metrics_mut().on_message_received(2, 64);
    assert!(submit(&mut node, CLIENT, &command(1, Command::RegisterSession)).is_none());
    for _ in 0..3 {
        node.before_sleep(&mut out).unwrap();
        answer_as_peer(&mut node, &mut out, true);
    }
    node.before_sleep(&mut out).unwrap();
    node.prometheus_text()
}

// Goal: the text of a real node (a leader over its WAL in a temp dir, after an
// election, a write and peer traffic) passes `promtool check metrics`, the alert
// rules pass `promtool check rules`, and every metric the rules and the Grafana
// dashboard use is exported with a sample.
#[test]
fn a_live_nodes_metrics_pass_promtool_and_cover_the_alerts_and_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let text = scraped_leader(dir.path());
    let monitoring = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/monitoring");
    let alerts = std::fs::read_to_string(monitoring.join("alerts.yml")).expect("alerts.yml");
    let dashboard =
        std::fs::read_to_string(monitoring.join("grafana-dashboard.json")).expect("dashboard");
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| p.len() >= 10));
    let samples = sample_names(&text);
    for (file, body) in [
        ("alerts.yml", &alerts),
        ("grafana-dashboard.json", &dashboard),
    ] {
        let names = referenced_metrics(body);
        assert!(names.len() >= 8, "{file}: {names:?}");
        for name in names {
            assert!(
                samples.contains(&name.as_str()),
                "{file}: {name} not exported:\n{text}"
            );
        }
    }
    assert!(
        samples.contains(&"raftkv_peer_round_trip_seconds_bucket"),
        "{text}"
    );
    let registered = r#"raftkv_requests_total{port="client",op="register_session",outcome="ok"} 1"#;
    assert!(text.lines().any(|l| l == registered), "{text}");
    let Some(metrics) = promtool(&["check", "metrics"], &text) else {
        return;
    };
    assert!(
        metrics.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&metrics.stdout),
        String::from_utf8_lossy(&metrics.stderr)
    );
    let rules_path = monitoring.join("alerts.yml");
    let rules_path = rules_path.to_str().expect("a UTF-8 path");
    let rules = promtool(&["check", "rules", rules_path], "").expect("promtool ran once");
    assert!(
        rules.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&rules.stdout),
        String::from_utf8_lossy(&rules.stderr)
    );
}
