//! The Redis port with a real Redis client (the `redis` crate) against a 3-node cluster
//! of real `raftkv-server` processes: single commands, a pipelined workload and
//! MULTI/EXEC/WATCH on the leader and on a follower (which forwards), and the same
//! after the leader is killed with kill -9.

mod common;

use common::{Cluster, eventually};
use redis::{Commands, Connection, RedisResult};

fn connect(cluster: &Cluster, i: usize) -> Connection {
    let url = format!("redis://{}/", cluster.nodes[i].redis_addr);
    let client = redis::Client::open(url).expect("redis url");
    client.get_connection().expect("connect to the redis port")
}

fn exercise(con: &mut Connection, prefix: &str) {
    let key = |name: &str| format!("{prefix}:{name}");
    let () = con.set(key("a"), "1").unwrap();
    assert_eq!(con.get::<_, String>(key("a")).unwrap(), "1");
    assert_eq!(con.incr::<_, _, i64>(key("a"), 41).unwrap(), 42);
    assert_eq!(con.decr::<_, _, i64>(key("a"), 2).unwrap(), 40);
    assert_eq!(con.append::<_, _, i64>(key("s"), "ab").unwrap(), 2);
    assert_eq!(con.strlen::<_, i64>(key("s")).unwrap(), 2);
    assert_eq!(
        con.exists::<_, i64>(&[key("a"), key("s"), key("x")])
            .unwrap(),
        2
    );
    let nx: Option<String> = redis::cmd("SET")
        .arg(key("a"))
        .arg("9")
        .arg("NX")
        .query(con)
        .unwrap();
    assert_eq!(nx, None, "SET NX on an existing key");
    let old: Option<String> = redis::cmd("SET")
        .arg(key("a"))
        .arg("7")
        .arg("GET")
        .query(con)
        .unwrap();
    assert_eq!(old.as_deref(), Some("40"));
    assert_eq!(con.get_del::<_, String>(key("a")).unwrap(), "7");
    assert_eq!(con.del::<_, i64>(&[key("a"), key("s")]).unwrap(), 1);
    let () = con.set(key("t"), "abc").unwrap();
    let err = con.incr::<_, _, i64>(key("t"), 1).unwrap_err();
    assert!(err.to_string().contains("not an integer"), "{err}");
    let unknown: RedisResult<()> = redis::cmd("BGSAVE").query(con);
    assert!(unknown.unwrap_err().to_string().contains("unknown command"));

    // A pipelined workload: replies come back in request order.
    let mut pipe = redis::pipe();
    for i in 0..200 {
        pipe.set(key(&format!("p{i}")), i).ignore();
        pipe.incr(key("counter"), 1);
    }
    let counts: Vec<i64> = pipe.query(con).unwrap();
    assert_eq!(counts, (1..=200).collect::<Vec<i64>>());
    let keys: Vec<String> = (0..200).map(|i| key(&format!("p{i}"))).collect();
    let values: Vec<i64> = con.mget(&keys).unwrap();
    assert_eq!(values, (0..200).collect::<Vec<i64>>());

    // MULTI/EXEC is one atomic entry; WATCH aborts it when a watched key changed.
    let (a, b): (i64, i64) = redis::pipe()
        .atomic()
        .incr(key("m"), 5)
        .incr(key("m"), 1)
        .query(con)
        .unwrap();
    assert_eq!((a, b), (5, 6));
    let () = redis::cmd("WATCH").arg(key("m")).query(con).unwrap();
    let () = con.set(key("m"), "100").unwrap();
    let aborted: Option<(i64,)> = redis::pipe().atomic().incr(key("m"), 1).query(con).unwrap();
    assert_eq!(aborted, None, "EXEC after a watched key changed");
    let () = redis::cmd("WATCH").arg(key("m")).query(con).unwrap();
    let done: Option<(i64,)> = redis::pipe().atomic().incr(key("m"), 1).query(con).unwrap();
    assert_eq!(done, Some((101,)));
}

#[test]
fn commands_pipelines_and_transactions_on_leader_and_follower() {
    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.leader();
    let follower = (leader + 1) % 3;
    let mut con = connect(&cluster, leader);
    eventually(|| {
        redis::cmd("SET")
            .arg("warm")
            .arg("up")
            .query::<()>(&mut con)
    });
    exercise(&mut con, "leader");
    let mut con = connect(&cluster, follower);
    exercise(&mut con, "follower");
    let info: String = redis::cmd("INFO").arg("raft").query(&mut con).unwrap();
    assert!(info.contains("raft_role:follower"), "{info}");
    assert!(
        info.contains(&format!("raft_leader_id:{}", cluster.nodes[leader].id)),
        "{info}"
    );
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn writes_and_transactions_go_on_after_the_leader_is_killed() {
    let mut cluster = Cluster::start(3, |_| {});
    let leader = cluster.leader();
    let survivor = (leader + 1) % 3;
    let mut con = connect(&cluster, survivor);
    eventually(|| con.incr::<_, _, i64>("kills", 1));
    cluster.kill(leader);
    // The survivor's link to the old leader breaks; it answers TRYAGAIN until a new
    // leader is known, then forwards (or serves, if it won).
    let after: i64 = eventually(|| con.incr("kills", 1));
    assert!(after >= 2, "the acknowledged increment survived: {after}");
    let value: i64 = eventually(|| con.get("kills"));
    assert_eq!(value, after);
    let mut con = connect(&cluster, survivor);
    exercise(&mut con, "after-kill");
}
