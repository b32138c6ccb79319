//! Goal: the connection state machine against a fake node that applies requests to a
//! map, answering in a chosen order: replies keep request order, read-modify-writes
//! retry on a failed compare, WATCH aborts EXEC, NotLeader is followed.

use std::collections::HashMap;

use super::*;
use crate::kv::Op;

#[derive(Default)]
struct FakeNode {
    data: HashMap<Bytes, Bytes>,
    /// Answer NotLeader (pointing at "leader:1") to local writes.
    follower: bool,
}

impl FakeNode {
    fn answer(&mut self, submit: &Submit) -> ResponseBody {
        let local = submit.target == Target::Local;
        match &submit.request.body {
            RequestBody::Get { key, .. } | RequestBody::Command(Command::Get { key }) => {
                ResponseBody::Result(CommandResult::Value(self.data.get(key).cloned()))
            }
            RequestBody::Command(_) if self.follower && local => ResponseBody::NotLeader {
                leader_id: 2,
                leader_client_addr: Some("leader:1".into()),
            },
            RequestBody::Command(command) => ResponseBody::Result(self.apply(command)),
            RequestBody::Status
            | RequestBody::Metrics
            | RequestBody::MemberChange(_)
            | RequestBody::TransferLeader { .. } => ResponseBody::Error("no".into()),
        }
    }

    fn apply(&mut self, command: &Command) -> CommandResult {
        match command {
            Command::RegisterSession => CommandResult::Registered { client_id: 7 },
            Command::Put { key, value, .. } => {
                self.data.insert(key.clone(), value.clone());
                CommandResult::Ok
            }
            Command::Delete { key, .. } => match self.data.remove(key) {
                Some(_) => CommandResult::Ok,
                None => CommandResult::NotFound,
            },
            Command::Txn {
                compare,
                success,
                failure,
                ..
            } => {
                let holds = compare.iter().all(|c| {
                    c.op.holds(self.data.get(&c.key).map(Vec::as_slice), &c.value)
                });
                let ops = if holds { success } else { failure };
                let results = ops
                    .iter()
                    .map(|op| match op {
                        Op::Put { key, value } => {
                            self.data.insert(key.clone(), value.clone());
                            OpResult::Done
                        }
                        Op::Delete { key } => {
                            self.data.remove(key);
                            OpResult::Done
                        }
                        Op::Get { key } => OpResult::Value(self.data.get(key).cloned()),
                    })
                    .collect();
                CommandResult::Txn {
                    succeeded: holds,
                    results,
                }
            }
            other => CommandResult::Error(format!("unexpected {other:?}")),
        }
    }
}

fn args(line: &str) -> Vec<Bytes> {
    line.split(' ').map(|s| s.as_bytes().to_vec()).collect()
}

/// Sends every command, then applies submitted requests in order (as the log would) but
/// delivers the answers newest first (the worst order for reply ordering), until none is
/// left; returns the reply bytes.
fn run(conn: &mut RedisConn, node: &mut FakeNode, lines: &[&str]) -> String {
    for line in lines {
        conn.on_command(args(line));
    }
    let mut out = Vec::new();
    loop {
        conn.take_replies(&mut out);
        let submits = conn.take_submits();
        if submits.is_empty() {
            break;
        }
        let answers: Vec<Response> = submits
            .iter()
            .map(|submit| Response {
                request_id: submit.request.request_id,
                body: node.answer(submit),
            })
            .collect();
        for response in answers.into_iter().rev() {
            conn.on_response(response);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn pipelined_commands_reply_in_order() {
    let mut conn = RedisConn::new();
    let mut node = FakeNode::default();
    let lines = [
        "SET a 1",
        "GET a",
        "INCR a",
        "APPEND a x",
        "GET a",
        "DEL a b",
        "EXISTS a",
        "PING",
        "MSET b 2 c 3",
        "MGET b c d",
    ];
    let got = run(&mut conn, &mut node, &lines);
    assert_eq!(
        got,
        "+OK\r\n$1\r\n1\r\n:2\r\n:2\r\n$2\r\n2x\r\n:1\r\n:0\r\n+PONG\r\n+OK\r\n\
         *3\r\n$1\r\n2\r\n$1\r\n3\r\n$-1\r\n"
    );
}

#[test]
fn a_failed_compare_is_retried_with_the_current_value() {
    let mut conn = RedisConn::new();
    let mut node = FakeNode::default();
    assert_eq!(run(&mut conn, &mut node, &["SET n 5"]), "+OK\r\n");
    conn.on_command(args("INCR n"));
    // The stale read sees 5; another client writes 40 before the Txn commits.
    let reads = conn.take_submits();
    for submit in reads {
        let body = node.answer(&submit);
        conn.on_response(Response {
            request_id: submit.request.request_id,
            body,
        });
    }
    node.data.insert(b"n".to_vec(), b"40".to_vec());
    assert_eq!(run(&mut conn, &mut node, &[]), ":41\r\n");
}

#[test]
fn watch_aborts_exec_when_the_value_changed() {
    let mut conn = RedisConn::new();
    let mut node = FakeNode::default();
    let got = run(
        &mut conn,
        &mut node,
        &["WATCH w", "MULTI", "INCR w", "SET z 1"],
    );
    assert_eq!(got, "+OK\r\n+OK\r\n+QUEUED\r\n+QUEUED\r\n");
    node.data.insert(b"w".to_vec(), b"9".to_vec());
    assert_eq!(run(&mut conn, &mut node, &["EXEC"]), "*-1\r\n");
    assert_eq!(node.data.get(b"z".as_slice()), None);
    let got = run(
        &mut conn,
        &mut node,
        &["WATCH w", "MULTI", "INCR w", "SET z 1", "EXEC"],
    );
    assert_eq!(
        got,
        "+OK\r\n+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:10\r\n+OK\r\n"
    );
    let got = run(&mut conn, &mut node, &["MULTI", "GET", "EXEC", "EXEC"]);
    assert_eq!(
        got,
        "+OK\r\n-ERR wrong number of arguments for 'get' command\r\n\
         -EXECABORT Transaction discarded because of previous errors.\r\n\
         -ERR EXEC without MULTI\r\n"
    );
}

#[test]
fn writes_on_a_follower_are_forwarded_to_the_leader() {
    let mut conn = RedisConn::new();
    let mut node = FakeNode {
        follower: true,
        ..FakeNode::default()
    };
    assert_eq!(
        run(&mut conn, &mut node, &["SET f 1", "INCR f"]),
        "+OK\r\n:2\r\n"
    );
    conn.on_command(args("SET g 1"));
    let submit = conn.take_submits().pop().expect("a request");
    conn.on_response(Response {
        request_id: submit.request.request_id,
        body: ResponseBody::Unavailable("no leader known".into()),
    });
    let mut out = Vec::new();
    conn.take_replies(&mut out);
    assert_eq!(out, b"-TRYAGAIN no leader known\r\n");
}

#[test]
fn quit_and_connection_commands() {
    let mut conn = RedisConn::new();
    let mut node = FakeNode::default();
    let got = run(
        &mut conn,
        &mut node,
        &[
            "CLIENT SETNAME app",
            "CLIENT GETNAME",
            "SELECT 0",
            "ECHO hi",
        ],
    );
    assert_eq!(got, "+OK\r\n$3\r\napp\r\n+OK\r\n$2\r\nhi\r\n");
    conn.on_command(args("QUIT"));
    let mut out = Vec::new();
    assert!(conn.take_replies(&mut out));
    assert_eq!(out, b"+OK\r\n");
}

/// Goal: the loop's back-pressure inputs are right: every queued command counts until its
/// reply is taken, and finished replies held behind an unfinished one count their bytes.
#[test]
fn held_requests_and_reply_bytes_are_counted_until_taken() {
    let mut conn = RedisConn::new();
    let mut node = FakeNode::default();
    node.data.insert(b"big".to_vec(), vec![b'v'; 10_000]);
    conn.on_command(args("GET big"));
    conn.on_command(args("GET big"));
    conn.on_command(args("PING"));
    assert_eq!(conn.requests(), 3);
    // PING is done but waits behind the reads: its reply is held.
    let ping_bytes = conn.reply_bytes();
    assert!((7..=64).contains(&ping_bytes), "{ping_bytes}");
    // Answer only the second read: its 10,000 bytes are held too.
    let submits = conn.take_submits();
    assert_eq!(submits.len(), 2);
    let answer = |submit: &Submit, node: &mut FakeNode| Response {
        request_id: submit.request.request_id,
        body: node.answer(submit),
    };
    conn.on_response(answer(&submits[1], &mut node));
    let mut out = Vec::new();
    conn.take_replies(&mut out);
    assert!(out.is_empty());
    assert!(conn.reply_bytes() >= 10_000 + ping_bytes);
    conn.on_response(answer(&submits[0], &mut node));
    conn.take_replies(&mut out);
    assert_eq!(conn.requests(), 0);
    assert_eq!(conn.reply_bytes(), 0);
    assert!(out.len() > 20_000 && out.ends_with(b"+PONG\r\n"));
}
