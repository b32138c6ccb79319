//! Goal: the client follows redirects, retries with the same session seq, maps answers to
//! values or typed errors, and pipelines. Method: fake nodes, each a std `TcpListener`
//! thread on 127.0.0.1:0 speaking the client protocol through the crate's codec, with a
//! scripted answer per request and a log of every request received.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::codec::client::{ClientCodec, Request, RequestBody, Response, ResponseBody};
use crate::kv::{Command, CommandResult, Session};

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
