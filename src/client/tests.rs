//! Goal: the client follows redirects, retries with the same session seq, maps answers to
//! values or typed errors, pipelines, and sends membership changes to the leader,
//! retrying a promotion the leader defers. Method: fake nodes, each a std `TcpListener`
//! thread on 127.0.0.1:0 speaking the client protocol through the crate's codec, with a
//! scripted answer per request and a log of every request received.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::codec::client::{
    ClientCodec, Member, MemberChange, Request, RequestBody, Response, ResponseBody, Role, Status,
};
use crate::kv::{Command, CommandResult, Session};
use crate::raft::message::NodeId;

use super::*;

const FRAME_BYTES_MAX: u32 = 1 << 20;

/// What a fake node does with one request.
pub(crate) enum Reply {
    Answer(ResponseBody),
    /// Close the connection without answering.
    Drop,
    /// Never answer again on this connection (it stays open until the client closes it).
    Silence,
}

type Handler = dyn FnMut(&Request) -> Reply + Send;

/// A fake node: its address and every request it received.
pub(crate) struct FakeNode {
    pub(crate) addr: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl FakeNode {
    /// Serves every connection on its own thread; `handler` answers requests one at a
    /// time across all connections.
    pub(crate) fn spawn(handler: impl FnMut(&Request) -> Reply + Send + 'static) -> FakeNode {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr").to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
        let handler: Arc<Mutex<Box<Handler>>> = Arc::new(Mutex::new(Box::new(handler)));
        // The threads end with the test process.
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let log = Arc::clone(&log);
                let handler = Arc::clone(&handler);
                thread::spawn(move || serve(stream, &log, &handler));
            }
        });
        FakeNode { addr, requests }
    }

    pub(crate) fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("log lock").clone()
    }
}

/// Serves one connection until the client closes it or the handler drops it.
fn serve(mut stream: TcpStream, log: &Mutex<Vec<Request>>, handler: &Mutex<Box<Handler>>) {
    let codec = ClientCodec::new(FRAME_BYTES_MAX);
    let mut input = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut silent = false;
    loop {
        while let Ok(Some((consumed, request))) = codec.decode_request(&input) {
            input.drain(..consumed);
            if silent {
                continue;
            }
            log.lock().expect("log lock").push(request.clone());
            let reply = (handler.lock().expect("handler lock"))(&request);
            match reply {
                Reply::Answer(body) => {
                    let response = Response {
                        request_id: request.request_id,
                        body,
                    };
                    let mut out = Vec::new();
                    codec.encode_response(&response, &mut out).expect("encode");
                    if stream.write_all(&out).is_err() {
                        return;
                    }
                }
                Reply::Drop => return,
                Reply::Silence => silent = true,
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(count) => input.extend_from_slice(&chunk[..count]),
        }
    }
}

pub(crate) fn result(result: CommandResult) -> Reply {
    Reply::Answer(ResponseBody::Result(result))
}

/// A leader that registers session 7 and applies puts, cas and deletes over a map.
fn leader() -> FakeNode {
    let mut store = std::collections::BTreeMap::<Vec<u8>, Vec<u8>>::new();
    FakeNode::spawn(move |request| match &request.body {
        RequestBody::Command(Command::RegisterSession) => {
            result(CommandResult::Registered { client_id: 7 })
        }
        RequestBody::Command(Command::Put { key, value, .. }) => {
            store.insert(key.clone(), value.clone());
            result(CommandResult::Ok)
        }
        RequestBody::Command(Command::Delete { key, .. }) => match store.remove(key) {
            Some(_) => result(CommandResult::Ok),
            None => result(CommandResult::NotFound),
        },
        RequestBody::Command(Command::Cas {
            key, expected, new, ..
        }) => {
            let current = store.get(key).cloned();
            if current == *expected {
                store.insert(key.clone(), new.clone());
                result(CommandResult::Ok)
            } else {
                result(CommandResult::CasFailed { current })
            }
        }
        RequestBody::Get { key, .. } => result(CommandResult::Value(store.get(key).cloned())),
        other => Reply::Answer(ResponseBody::Error(format!("unexpected {other:?}"))),
    })
}

fn options(timeout_ms: u64) -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_millis(timeout_ms),
        connect_timeout: Duration::from_millis(timeout_ms),
        backoff_min_ms: 1,
        backoff_max_ms: 5,
        frame_bytes_max: FRAME_BYTES_MAX,
        tls: None,
    }
}

fn sessions(node: &FakeNode) -> Vec<Session> {
    node.requests()
        .iter()
        .filter_map(|request| match &request.body {
            RequestBody::Command(command) => command.session(),
            _ => None,
        })
        .collect()
}

#[test]
fn follows_not_leader_to_the_leader_and_maps_results_to_values() {
    let leader = leader();
    let leader_addr = leader.addr.clone();
    let follower = FakeNode::spawn(move |_| {
        Reply::Answer(ResponseBody::NotLeader {
            leader_id: 2,
            leader_client_addr: Some(leader_addr.clone()),
        })
    });
    let mut client =
        Client::connect(std::slice::from_ref(&follower.addr), options(2000)).expect("client");
    assert_eq!(client.get(b"k").expect("get"), None, "absent key is None");
    client.put(b"k", b"v1").expect("put");
    assert_eq!(client.get(b"k").expect("get").as_deref(), Some(&b"v1"[..]));
    let failed = client.cas(b"k", Some(b"nope"), b"v2").expect("cas");
    assert_eq!(
        failed,
        CasOutcome::Failed {
            current: Some(b"v1".to_vec())
        }
    );
    let swapped = client.cas(b"k", Some(b"v1"), b"v2").expect("cas");
    assert_eq!(swapped, CasOutcome::Swapped);
    assert!(client.delete(b"k").expect("delete"), "existed");
    assert!(!client.delete(b"k").expect("delete"), "already gone");
    // One redirect: afterwards the client stays on the leader.
    assert_eq!(client.stats().redirects, 1);
    assert_eq!(follower.requests().len(), 1);
    assert_eq!(client.client_id(), Some(7));
    let seqs: Vec<u64> = sessions(&leader)
        .iter()
        .map(|session| session.seq)
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5], "one new seq per write");
}

#[test]
fn a_write_retried_after_a_dropped_connection_keeps_its_seq() {
    // Reference: Raft thesis §6.3: a retried command carries the same serial number.
    let mut puts = 0;
    let node = FakeNode::spawn(move |request| match &request.body {
        RequestBody::Command(Command::RegisterSession) => {
            result(CommandResult::Registered { client_id: 3 })
        }
        RequestBody::Command(Command::Put { .. }) => {
            puts += 1;
            if puts == 1 {
                Reply::Drop
            } else {
                result(CommandResult::Ok)
            }
        }
        _ => Reply::Drop,
    });
    let mut client =
        Client::connect(std::slice::from_ref(&node.addr), options(2000)).expect("client");
    client
        .put(b"a", b"1")
        .expect("put survives a dropped connection");
    client.put(b"b", b"2").expect("second put");
    let sent = sessions(&node);
    let want = [(3, 1), (3, 1), (3, 2)].map(|(client_id, seq)| Session { client_id, seq });
    assert_eq!(
        sent, want,
        "the retry re-sent seq 1; the next write took seq 2"
    );
    assert_eq!(client.stats().retries, 1);
}

#[test]
fn retries_unavailable_then_reports_it_at_the_deadline() {
    let mut answered = 0;
    let flaky = FakeNode::spawn(move |_| {
        answered += 1;
        if answered <= 2 {
            Reply::Answer(ResponseBody::Unavailable("election".into()))
        } else {
            result(CommandResult::Value(Some(b"x".to_vec())))
        }
    });
    let mut client =
        Client::connect(std::slice::from_ref(&flaky.addr), options(2000)).expect("client");
    assert_eq!(
        client.get_stale(b"k").expect("get").as_deref(),
        Some(&b"x"[..])
    );
    assert_eq!(client.stats().retries, 2);

    let down = FakeNode::spawn(|_| Reply::Answer(ResponseBody::Unavailable("no leader".into())));
    let mut client =
        Client::connect(std::slice::from_ref(&down.addr), options(300)).expect("client");
    let error = client.get(b"k").expect_err("never available");
    assert!(
        matches!(error, Error::Unavailable(ref reason) if reason == "no leader"),
        "{error}"
    );
}

#[test]
fn errors_distinguish_timeout_io_and_refusal() {
    let silent = FakeNode::spawn(|_| Reply::Silence);
    let mut client =
        Client::connect(std::slice::from_ref(&silent.addr), options(100)).expect("client");
    let error = client.get(b"k").expect_err("no answer");
    assert!(matches!(error, Error::Timeout), "{error}");

    // A port nobody listens on: bind, note the port, close.
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_addr = closed.local_addr().expect("addr").to_string();
    drop(closed);
    let mut client = Client::connect(&[closed_addr], options(100)).expect("client");
    let error = client.get(b"k").expect_err("refused");
    assert!(matches!(error, Error::Io { .. }), "{error}");

    let refusing = FakeNode::spawn(|_| Reply::Answer(ResponseBody::Error("too large".into())));
    let mut client =
        Client::connect(std::slice::from_ref(&refusing.addr), options(1000)).expect("client");
    let error = client.get(b"k").expect_err("refused");
    assert!(
        matches!(error, Error::Refused(ref m) if m == "too large"),
        "{error}"
    );
    assert!(Client::connect(&[], options(100)).is_err(), "no address");
}

#[test]
fn an_expired_session_is_renewed_only_when_the_write_was_sent_once() {
    let mut registrations = 0;
    let mut puts = 0;
    let node = FakeNode::spawn(move |request| match &request.body {
        RequestBody::Command(Command::RegisterSession) => {
            registrations += 1;
            result(CommandResult::Registered {
                client_id: registrations,
            })
        }
        RequestBody::Command(Command::Put { .. }) => {
            puts += 1;
            match puts {
                1 => result(CommandResult::SessionExpired),
                2 => result(CommandResult::Ok),
                3 => Reply::Drop,
                _ => result(CommandResult::SessionExpired),
            }
        }
        _ => Reply::Drop,
    });
    let mut client =
        Client::connect(std::slice::from_ref(&node.addr), options(2000)).expect("client");
    // Sent once and refused: nothing applied, so a new session may repeat it.
    client.put(b"a", b"1").expect("renewed session");
    assert_eq!(client.client_id(), Some(2));
    // Sent twice (the first attempt's connection dropped): the outcome is unknown.
    let error = client.put(b"b", b"2").expect_err("unknown outcome");
    assert!(matches!(error, Error::SessionExpired), "{error}");
    assert_eq!(client.client_id(), None, "the next write registers again");
}

#[test]
fn pipeline_matches_out_of_order_replies_by_request_id() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    thread::spawn(move || {
        let codec = ClientCodec::new(FRAME_BYTES_MAX);
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let mut input = Vec::new();
        let mut requests = Vec::new();
        let mut chunk = [0u8; 4096];
        while requests.len() < 3 {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(count) => input.extend_from_slice(&chunk[..count]),
            }
            while let Ok(Some((consumed, request))) = codec.decode_request(&input) {
                input.drain(..consumed);
                requests.push(request);
            }
        }
        let mut out = Vec::new();
        for request in requests.iter().rev() {
            let RequestBody::Get { key, .. } = &request.body else {
                return;
            };
            let response = Response {
                request_id: request.request_id,
                body: ResponseBody::Result(CommandResult::Value(Some(key.clone()))),
            };
            codec.encode_response(&response, &mut out).expect("encode");
        }
        let _ = stream.write_all(&out);
    });
    let mut pipeline =
        Pipeline::connect(&addr, Duration::from_secs(1), FRAME_BYTES_MAX).expect("connect");
    let mut sent = Vec::new();
    for key in [b"a", b"b", b"c"] {
        let body = RequestBody::Get {
            key: key.to_vec(),
            stale: true,
        };
        sent.push((pipeline.submit(body).expect("submit"), key.to_vec()));
    }
    assert_eq!(pipeline.in_flight(), 3);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut received = Vec::new();
    for _ in 0..3 {
        let response = pipeline.recv(deadline).expect("reply");
        let ResponseBody::Result(CommandResult::Value(Some(key))) = response.body else {
            panic!("unexpected {:?}", response.body);
        };
        received.push((response.request_id, key));
    }
    assert_eq!(pipeline.in_flight(), 0);
    received.reverse();
    assert_eq!(received, sent, "every reply carries its request's id");
}

#[test]
fn pipeline_survives_a_receive_timeout() {
    // A node that answers 300 ms after reading: a short wait times out, a longer wait on
    // the same pipeline then gets the answer (the open-loop bench waits like this).
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    thread::spawn(move || {
        let codec = ClientCodec::new(FRAME_BYTES_MAX);
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let mut input = Vec::new();
        let mut chunk = [0u8; 4096];
        let request = loop {
            if let Ok(Some((_, request))) = codec.decode_request(&input) {
                break request;
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(count) => input.extend_from_slice(&chunk[..count]),
            }
        };
        thread::sleep(Duration::from_millis(300));
        let response = Response {
            request_id: request.request_id,
            body: ResponseBody::Result(CommandResult::Ok),
        };
        let mut out = Vec::new();
        codec.encode_response(&response, &mut out).expect("encode");
        let _ = stream.write_all(&out);
        // Keep the connection open until the client is done.
        let _ = stream.read(&mut chunk);
    });
    let mut pipeline =
        Pipeline::connect(&addr, Duration::from_secs(1), FRAME_BYTES_MAX).expect("connect");
    let request_id = pipeline.submit(RequestBody::Status).expect("submit");
    let short = pipeline.recv(Instant::now() + Duration::from_millis(50));
    assert!(matches!(short, Err(Error::Timeout)), "{short:?}");
    assert_eq!(pipeline.in_flight(), 1, "still waiting");
    let response = pipeline
        .recv(Instant::now() + Duration::from_secs(10))
        .expect("answer after the timeout");
    assert_eq!(response.request_id, request_id);
    assert_eq!(pipeline.in_flight(), 0);
}

fn bodies(node: &FakeNode) -> Vec<RequestBody> {
    node.requests()
        .into_iter()
        .map(|request| request.body)
        .collect()
}

#[test]
fn member_promote_retries_while_the_leader_defers_it() {
    // Reference: Raft thesis §4.2.1: a new server is promoted only once it has caught up;
    // the leader answers Unavailable until then and the client keeps asking.
    let mut promotes = 0;
    let leader = FakeNode::spawn(move |request| match &request.body {
        RequestBody::MemberChange(MemberChange::Promote { .. }) => {
            promotes += 1;
            if promotes <= 2 {
                Reply::Answer(ResponseBody::Unavailable(
                    "learner 4 is 2000 entries behind the leader".into(),
                ))
            } else {
                result(CommandResult::Ok)
            }
        }
        _ => Reply::Drop,
    });
    let mut client =
        Client::connect(std::slice::from_ref(&leader.addr), options(2000)).expect("client");
    client
        .member_promote(4)
        .expect("promoted after two deferrals");
    assert_eq!(client.stats().retries, 2);
    let promote = RequestBody::MemberChange(MemberChange::Promote { id: 4 });
    assert_eq!(bodies(&leader), vec![promote.clone(); 3]);

    // A learner that never catches up: the deadline ends the call with the leader's reason.
    let behind = FakeNode::spawn(|_| {
        Reply::Answer(ResponseBody::Unavailable(
            "learner 4 is 9000 entries behind the leader".into(),
        ))
    });
    let mut client =
        Client::connect(std::slice::from_ref(&behind.addr), options(200)).expect("client");
    let error = client.member_promote(4).expect_err("never caught up");
    assert!(
        matches!(error, Error::Unavailable(ref reason) if reason.contains("9000 entries")),
        "{error}"
    );
}

#[test]
fn member_changes_follow_the_leader_and_refusals_are_errors() {
    let leader = FakeNode::spawn(|request| match &request.body {
        RequestBody::MemberChange(MemberChange::AddLearner { .. })
        | RequestBody::TransferLeader { id: 2 } => result(CommandResult::Ok),
        RequestBody::MemberChange(MemberChange::Remove { id }) => {
            Reply::Answer(ResponseBody::Error(format!("node {id} is not a member")))
        }
        RequestBody::TransferLeader { id } => {
            Reply::Answer(ResponseBody::Error(format!("node {id} is not a voter")))
        }
        _ => Reply::Drop,
    });
    let leader_addr = leader.addr.clone();
    let follower = FakeNode::spawn(move |_| {
        Reply::Answer(ResponseBody::NotLeader {
            leader_id: 1,
            leader_client_addr: Some(leader_addr.clone()),
        })
    });
    let mut client =
        Client::connect(std::slice::from_ref(&follower.addr), options(2000)).expect("client");
    client
        .member_add_learner(4, "127.0.0.1:6004", "127.0.0.1:7004")
        .expect("added");
    let error = client.member_remove(9).expect_err("not a member");
    assert!(
        matches!(error, Error::Refused(ref m) if m == "node 9 is not a member"),
        "{error}"
    );
    let error = client.transfer_leader(4).expect_err("a learner");
    assert!(matches!(error, Error::Refused(_)), "{error}");
    client.transfer_leader(2).expect("transfer started");
    assert_eq!(client.stats().redirects, 1, "the follower was asked once");
    let want = vec![
        RequestBody::MemberChange(MemberChange::AddLearner {
            id: 4,
            peer_addr: "127.0.0.1:6004".into(),
            client_addr: "127.0.0.1:7004".into(),
        }),
        RequestBody::MemberChange(MemberChange::Remove { id: 9 }),
        RequestBody::TransferLeader { id: 4 },
        RequestBody::TransferLeader { id: 2 },
    ];
    assert_eq!(bodies(&leader), want);
}

/// The status of node `node_id`, which knows `leader_id` as leader; members 1 and 2 with
/// the given client addresses, match indexes known only by the leader.
fn status_of(node_id: NodeId, leader_id: NodeId, client_addrs: &[String; 2]) -> Status {
    let leads = node_id == leader_id;
    let members = client_addrs
        .iter()
        .zip(1..)
        .map(|(client_addr, id)| Member {
            id,
            voter: true,
            peer_addr: format!("127.0.0.1:600{id}"),
            client_addr: client_addr.clone(),
            match_index: if leads { 40 + id } else { 0 },
        })
        .collect();
    Status {
        node_id,
        role: if leads { Role::Leader } else { Role::Follower },
        term: 3,
        leader_id,
        commit_index: 41,
        applied_index: 41,
        last_index: 42,
        config_index: 0,
        promote_distance_max: 1000,
        members,
    }
}

/// Two fake nodes answering Status: node 2 (a follower) names node 1 as leader; node 1
/// believes `node1_leader` leads.
fn two_nodes(node1_leader: NodeId) -> (FakeNode, FakeNode) {
    // The addresses are known only once both listen: share them through a cell.
    let addrs: Arc<Mutex<[String; 2]>> = Arc::default();
    let spawn = |node_id: NodeId, leader_id: NodeId| {
        let addrs = Arc::clone(&addrs);
        FakeNode::spawn(move |request| match &request.body {
            RequestBody::Status => {
                let addrs = addrs.lock().expect("addrs lock").clone();
                Reply::Answer(ResponseBody::Status(status_of(node_id, leader_id, &addrs)))
            }
            _ => Reply::Drop,
        })
    };
    let node1 = spawn(1, node1_leader);
    let node2 = spawn(2, 1);
    *addrs.lock().expect("addrs lock") = [node1.addr.clone(), node2.addr.clone()];
    (node1, node2)
}

#[test]
fn leader_status_asks_the_leader_a_member_names() {
    let (node1, node2) = two_nodes(1);
    let mut client =
        Client::connect(std::slice::from_ref(&node2.addr), options(2000)).expect("client");
    let status = client.leader_status().expect("leader's status");
    assert_eq!((status.node_id, status.leader_id), (1, 1));
    let matches: Vec<u64> = status.members.iter().map(|m| m.match_index).collect();
    assert_eq!(matches, [41, 42], "the leader's match indexes");
    assert_eq!(bodies(&node1), [RequestBody::Status]);

    // Node 2 still names node 1, which has stepped down: no usable leader status.
    let (_node1, node2) = two_nodes(2);
    let mut client =
        Client::connect(std::slice::from_ref(&node2.addr), options(2000)).expect("client");
    let error = client.leader_status().expect_err("stale leader");
    assert!(
        matches!(error, Error::Unavailable(ref m) if m.contains("no longer leads")),
        "{error}"
    );
}
