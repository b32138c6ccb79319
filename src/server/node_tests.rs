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
    node.on_client_request(client, request, command_bytes, 0)
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
