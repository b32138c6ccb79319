//! Goal: the connection state machine against a fake node that applies requests to a
//! real `KvStore` (the state machine that ships), answering in a chosen order: replies
//! keep request order, read-modify-writes are one command each, WATCH aborts EXEC,
//! NotLeader is followed.

use super::pubsub::Hub;
use super::*;
use crate::kv::{KvConfig, KvStore, command_to_vec};

struct FakeNode {
    store: KvStore,
    /// The index of the last entry applied.
    index: u64,
    /// Answer NotLeader (pointing at "leader:1") to local writes.
    follower: bool,
    /// The node's pub/sub index (with this connection as client 0).
    hub: Hub,
    /// The loop queries `run` does not answer (CLIENT LIST / KILL, TIME), by slot id.
    unanswered: Vec<(u64, LocalQuery)>,
}

impl Default for FakeNode {
    fn default() -> FakeNode {
        FakeNode {
            store: KvStore::new(KvConfig::default()),
            index: 0,
            follower: false,
            hub: Hub::default(),
            unanswered: Vec::new(),
        }
    }
}

impl FakeNode {
    fn answer(&mut self, submit: &Submit) -> ResponseBody {
        let local = submit.target == Target::Local;
        match &submit.request.body {
            RequestBody::Get { key, .. } => {
                ResponseBody::Result(CommandResult::Value(self.value(key)))
            }
            RequestBody::Command(_) if self.follower && local => ResponseBody::NotLeader {
                leader_id: 2,
                leader_client_addr: Some("leader:1".into()),
            },
            RequestBody::Command(command) => ResponseBody::Result(self.apply(command)),
            RequestBody::Range { query, .. } => ResponseBody::Range(self.store.range(query)),
            RequestBody::Status
            | RequestBody::Metrics
            | RequestBody::MemberChange(_)
            | RequestBody::TransferLeader { .. }
            | RequestBody::Backup(_)
            | RequestBody::Ttl { .. }
            | RequestBody::Watch { .. } => ResponseBody::Error("no".into()),
        }
    }

    /// The loop's answer to a pub/sub or CONFIG query, as `redis_pump` gives it.
    fn local(&mut self, query: &LocalQuery) -> Option<RespValue> {
        Some(match query {
            LocalQuery::Pubsub(query) => self.hub.answer(query),
            LocalQuery::ConfigGet(patterns) => command::config_get(patterns, self.hub.notify),
            LocalQuery::ConfigSet(flags) => {
                self.hub.notify = *flags;
                RespValue::ok()
            }
            LocalQuery::ClientList | LocalQuery::ClientKill(_) | LocalQuery::Time => return None,
        })
    }

    fn apply(&mut self, command: &Command) -> CommandResult {
        self.index += 1;
        self.store.apply(self.index, &command_to_vec(command))
    }

    fn value(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.store.get(key).map(<[u8]>::to_vec)
    }

    /// Another client's write, through a session of its own.
    fn put(&mut self, key: &[u8], value: &[u8]) {
        let CommandResult::Registered { client_id } = self.apply(&Command::RegisterSession) else {
            panic!("a session is registered");
        };
        let put = Command::Put {
            session: Session { client_id, seq: 1 },
            key: key.to_vec(),
            value: value.to_vec(),
        };
        assert_eq!(self.apply(&put), CommandResult::Ok);
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
    let client = crate::replica::ClientRef {
        key: 0,
        generation: 1,
    };
    loop {
        conn.take_replies(&mut out);
        for change in conn.take_subscription_changes() {
            node.hub.change(client, change);
        }
        let mut answered = false;
        for (id, query) in conn.take_local_queries() {
            match node.local(&query) {
                Some(reply) => {
                    conn.on_local_answer(id, reply);
                    answered = true;
                }
                None => node.unanswered.push((id, query)),
            }
        }
        let submits = conn.take_submits();
        if submits.is_empty() && !answered {
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

/// Goal: a read-modify-write is one `Command::Rmw` whatever another client writes
/// meanwhile (no read, no compare, no retry), and its error is Redis's text.
#[test]
fn a_read_modify_write_is_one_command_decided_when_applied() {
    let mut conn = RedisConn::new();
    let mut node = FakeNode::default();
    assert_eq!(run(&mut conn, &mut node, &["SET n 5"]), "+OK\r\n");
    conn.on_command(args("INCR n"));
    let submits = conn.take_submits();
    assert!(
        matches!(
            &submits[..],
            [Submit {
                request: Request {
                    body: RequestBody::Command(Command::Rmw { .. }),
                    ..
                },
                ..
            }]
        ),
        "{submits:?}"
    );
    node.put(b"n", b"40");
    for submit in submits {
        let body = node.answer(&submit);
        conn.on_response(Response {
            request_id: submit.request.request_id,
            body,
        });
    }
    assert_eq!(run(&mut conn, &mut node, &[]), ":41\r\n");
    let got = run(
        &mut conn,
        &mut node,
        &[
            "SET s abc",
            "INCR s",
            "INCRBYFLOAT s 1",
            "SETNX s x",
            "SETNX t x",
            "GETSET t y",
            "MSETNX t 1 u 2",
            "MSETNX u 1 v 2",
            "DEL u v w",
            "INCRBYFLOAT f 10.5",
            "INCRBYFLOAT f 0.1",
        ],
    );
    assert_eq!(
        got,
        "+OK\r\n-ERR value is not an integer or out of range\r\n\
         -ERR value is not a valid float\r\n:0\r\n:1\r\n$1\r\nx\r\n:0\r\n:1\r\n:2\r\n\
         $4\r\n10.5\r\n$4\r\n10.6\r\n"
    );
}

/// Goal: commands queued in MULTI run as one transaction of their ops, each seeing the
/// earlier ones, and a refused op is an error inside EXEC's array (as in Redis).
#[test]
fn exec_runs_the_queued_read_modify_writes_in_one_transaction() {
    let mut conn = RedisConn::new();
    let mut node = FakeNode::default();
    let got = run(
        &mut conn,
        &mut node,
        &[
            "MULTI",
            "SET a x",
            "INCR a",
            "APPEND a y",
            "SETNX b 1",
            "INCRBY b 2",
            "MGET a b",
            "PING",
            "EXEC",
        ],
    );
    assert_eq!(
        got,
        "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n\
         +QUEUED\r\n*7\r\n+OK\r\n-ERR value is not an integer or out of range\r\n:2\r\n\
         :1\r\n:3\r\n*2\r\n$2\r\nxy\r\n$1\r\n3\r\n+PONG\r\n"
    );
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
    node.put(b"w", b"9");
    assert_eq!(run(&mut conn, &mut node, &["EXEC"]), "*-1\r\n");
    assert_eq!(node.value(b"z"), None);
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
    // One at a time: `run` answers newest first, so pipelined forwards would be resent
    // (and applied) in reverse order.
    assert_eq!(run(&mut conn, &mut node, &["SET f 1"]), "+OK\r\n");
    assert_eq!(run(&mut conn, &mut node, &["INCR f"]), ":2\r\n");
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
    node.put(b"big", &[b'v'; 10_000]);
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

/// Goal: HELLO switches the reply protocol from its own reply on (a RESP3 map, `_` for
/// nil; HELLO 2 back to `$-1`), and the connect-time commands answer as redis-server
/// does with no password configured (texts compared with redis-server 7).
#[test]
fn hello_switches_protocol_and_connect_commands_answer_as_redis() {
    let mut conn = RedisConn::new();
    conn.identify(Identity {
        id: 7,
        addr: "127.0.0.1:5000".into(),
        laddr: "127.0.0.1:6379".into(),
        opened_ms: 0,
    });
    let mut node = FakeNode::default();
    let lines = [
        "GET nokey",
        "HELLO 3 AUTH default pw SETNAME app",
        "GET nokey",
        "AUTH x",
        "AUTH default x",
        "HELLO 3 AUTH bob p",
        "CLIENT ID",
        "CLIENT GETNAME",
        "CLIENT SETINFO LIB-NAME redis-py",
        "CONFIG GET maxmemory* databases",
        "HELLO 2",
        "GET nokey",
        "CONFIG GET appendonly",
    ];
    let got = run(&mut conn, &mut node, &lines);
    let want = "$-1\r\n\
        %7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.2.0\r\n\
        $5\r\nproto\r\n:3\r\n$2\r\nid\r\n:7\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n\
        $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n\
        _\r\n\
        -ERR AUTH <password> called without any password configured for the default user. \
        Are you sure your configuration is correct?\r\n\
        +OK\r\n\
        -WRONGPASS invalid username-password pair or user is disabled.\r\n\
        :7\r\n\
        $3\r\napp\r\n\
        +OK\r\n\
        %3\r\n$9\r\ndatabases\r\n$1\r\n1\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n\
        $16\r\nmaxmemory-policy\r\n$10\r\nnoeviction\r\n";
    assert!(got.starts_with(want), "{got}");
    let rest = &got[want.len()..];
    assert!(
        rest.starts_with("*14\r\n$6\r\nserver\r\n"),
        "HELLO 2: {rest}"
    );
    assert!(
        rest.ends_with("$-1\r\n*2\r\n$10\r\nappendonly\r\n$3\r\nyes\r\n"),
        "{rest}"
    );
    let line = conn.client_line();
    assert!(
        line.starts_with("id=7 addr=127.0.0.1:5000 laddr=127.0.0.1:6379 fd=-1 name=app "),
        "{line}"
    );
    assert!(
        line.contains(" resp=2 lib-name=redis-py lib-ver="),
        "{line}"
    );
}

/// Goal: CLIENT LIST, KILL and TIME are handed to the loop (it sees every connection and
/// the clock) and their answers keep the reply order; KILL's filters select by id and
/// address and skip the caller unless SKIPME no.
#[test]
fn loop_queries_keep_order_and_kill_filters_select() {
    let mut conn = RedisConn::new();
    let mut node = FakeNode::default();
    conn.identify(Identity {
        id: 3,
        addr: "127.0.0.1:1".into(),
        ..Identity::default()
    });
    let got = run(&mut conn, &mut node, &["PING", "TIME", "PING"]);
    assert_eq!(got, "+PONG\r\n", "TIME waits for the loop's answer");
    let queries = std::mem::take(&mut node.unanswered);
    assert_eq!(queries.len(), 1);
    assert_eq!(queries[0].1, LocalQuery::Time);
    conn.on_local_answer(queries[0].0, RespValue::Integer(1));
    let mut out = Vec::new();
    conn.take_replies(&mut out);
    assert_eq!(out, b":1\r\n+PONG\r\n".to_vec());
    let filter = |line: &str| match parse(args(line)) {
        Ok(Parsed::Control(Control::ClientKill(filter))) => filter,
        other => panic!("{line}: {other:?}"),
    };
    let cases = [
        ("CLIENT KILL 127.0.0.1:1", 3, true),
        ("CLIENT KILL ID 3", 3, false),
        ("CLIENT KILL ID 3 SKIPME no", 3, true),
        ("CLIENT KILL ID 3", 4, true),
        ("CLIENT KILL ID 4", 9, false),
        ("CLIENT KILL ADDR 127.0.0.1:1", 9, true),
        ("CLIENT KILL ADDR 127.0.0.1:2", 9, false),
    ];
    for (i, (line, caller, want)) in cases.into_iter().enumerate() {
        assert_eq!(
            conn.kill_matches(&filter(line), caller),
            want,
            "#{i}: {line}"
        );
    }
}

/// Goal: SCAN returns every key present for the whole scan at least once, while other
/// clients write and delete keys between the calls (method: keys `k000..k299` stay,
/// others come and go; the cursor is followed until 0); KEYS, TYPE, RENAME, COPY,
/// DBSIZE, FLUSHDB answer as Redis; a range read waits for the connection's writes.
#[test]
fn scan_visits_every_stable_key_and_keyspace_commands_answer_as_redis() {
    let mut conn = RedisConn::new();
    let mut node = FakeNode::default();
    for i in 0..300 {
        node.put(format!("k{i:03}").as_bytes(), b"v");
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor = "0".to_string();
    for round in 0.. {
        assert!(round < 1000, "the scan ends");
        node.put(format!("k{:03}x{round}", round % 300).as_bytes(), b"new");
        let got = run(
            &mut conn,
            &mut node,
            &[&format!("SCAN {cursor} COUNT 17 MATCH k*")],
        );
        let mut lines = got.split("\r\n");
        assert_eq!(lines.next(), Some("*2"), "{got}");
        lines.next();
        cursor = lines.next().unwrap_or_default().to_string();
        seen.extend(lines.filter(|l| l.starts_with('k')).map(str::to_string));
        if cursor == "0" {
            break;
        }
    }
    for i in 0..300 {
        assert!(seen.contains(&format!("k{i:03}")), "k{i:03} missed");
    }
    let mut conn = RedisConn::new();
    let mut node = FakeNode::default();
    let lines = [
        "SET user:1 a",
        "SET user:2 b",
        "SET other c",
        "KEYS user:*",
        "TYPE user:1",
        "TYPE nope",
        "RENAME user:1 user:3",
        "RENAME nope x",
        "RENAMENX user:3 user:2",
        "COPY user:3 copied",
        "DBSIZE",
        "SCAN 0 TYPE hash",
        "EXISTS user:3 copied nope",
        "FLUSHDB",
        "DBSIZE",
        "RANDOMKEY",
    ];
    let got = run(&mut conn, &mut node, &lines);
    assert_eq!(
        got,
        "+OK\r\n+OK\r\n+OK\r\n*2\r\n$6\r\nuser:1\r\n$6\r\nuser:2\r\n+string\r\n+none\r\n\
         +OK\r\n-ERR no such key\r\n:0\r\n:1\r\n:4\r\n*2\r\n$1\r\n0\r\n*0\r\n:2\r\n\
         +OK\r\n:0\r\n$-1\r\n"
    );
}

/// Goal: WAIT's count from a status: on the leader the other members whose match index
/// reaches the applied index (all of them when the connection never wrote), on a
/// follower the replicas a commit guarantees.
#[test]
fn wait_counts_the_replicas_that_hold_the_writes() {
    use crate::codec::client::Member;
    let member = |id, match_index| Member {
        id,
        voter: true,
        peer_addr: String::new(),
        client_addr: String::new(),
        match_index,
    };
    let status = |role, applied_index| Status {
        node_id: 1,
        role,
        term: 2,
        leader_id: 1,
        commit_index: applied_index,
        applied_index,
        last_index: applied_index,
        config_index: 0,
        promote_distance_max: 0,
        members: vec![member(1, 10), member(2, 10), member(3, 7)],
    };
    let cases = [
        (Role::Leader, 10, true, 1),
        (Role::Leader, 7, true, 2),
        (Role::Leader, 10, false, 2),
        (Role::Follower, 10, true, 1),
    ];
    for (i, (role, applied, wrote, want)) in cases.into_iter().enumerate() {
        assert_eq!(wait_replicas(&status(role, applied), wrote), want, "#{i}");
    }
}

/// Goal: SUBSCRIBE / PSUBSCRIBE / UNSUBSCRIBE confirm as redis-server 7 does in RESP2
/// (arrays with running counts), RESP2 subscribed mode refuses other commands, PUBLISH
/// is one log entry answered with this node's receiver count, and CONFIG SET changes
/// what CONFIG GET shows. Method: a scripted session against the fake node.
#[test]
fn subscriptions_confirm_and_publish_counts_receivers() {
    let mut conn = RedisConn::new();
    let mut node = FakeNode::default();
    let got = run(
        &mut conn,
        &mut node,
        &[
            "SUBSCRIBE a b",
            "GET k",
            "PSUBSCRIBE n*",
            "PING",
            "UNSUBSCRIBE",
            "PUNSUBSCRIBE n*",
            "PUBLISH a hi",
            "CONFIG SET notify-keyspace-events KEA",
            "CONFIG GET notify-keyspace-events",
            "CONFIG SET notify-keyspace-events Q",
        ],
    );
    let want = "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n\
        *3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n\
        -ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / \
        RESET are allowed in this context\r\n\
        *3\r\n$10\r\npsubscribe\r\n$2\r\nn*\r\n:3\r\n\
        *2\r\n$4\r\npong\r\n$0\r\n\r\n\
        *3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:2\r\n\
        *3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:1\r\n\
        *3\r\n$12\r\npunsubscribe\r\n$2\r\nn*\r\n:0\r\n\
        :0\r\n\
        +OK\r\n\
        *2\r\n$22\r\nnotify-keyspace-events\r\n$3\r\nAKE\r\n\
        -ERR CONFIG SET failed (possibly related to argument 'notify-keyspace-events') - \
        Invalid event class character. Use 'Ag$lshzxeKEtmdn'.\r\n";
    assert_eq!(got, want);
    assert!(node.hub.is_idle(), "every subscription was left");
    let got = run(
        &mut conn,
        &mut node,
        &["HELLO 3", "SUBSCRIBE a", "PUBLISH a x"],
    );
    assert!(
        got.ends_with(">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n:1\r\n"),
        "{got}"
    );
    assert!(!node.hub.is_idle());
}

/// Goal: a connection closing with an UNSUBSCRIBE not yet started still names that
/// channel for removal from the node's index, and RESET inside MULTI resets. Method: an
/// UNSUBSCRIBE queued behind an unanswered write; then MULTI, RESET, GET.
#[test]
fn pending_unsubscribes_are_named_for_removal_and_reset_ends_multi() {
    let mut conn = RedisConn::new();
    let mut node = FakeNode::default();
    run(&mut conn, &mut node, &["HELLO 3", "SUBSCRIBE a"]);
    conn.on_command(args("SET k v"));
    conn.on_command(args("UNSUBSCRIBE a"));
    let (channels, _) = conn.subscription_names();
    assert_eq!(channels, vec![b"a".to_vec()], "the index still lists `a`");
    let mut conn = RedisConn::new();
    let got = run(&mut conn, &mut node, &["MULTI", "RESET", "GET nokey"]);
    assert_eq!(got, "+OK\r\n+RESET\r\n$-1\r\n");
}
