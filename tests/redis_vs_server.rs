//! The Redis port against a real redis-server, byte for byte (issue 19 §4): the same
//! raw RESP commands go to both, over RESP2 and after `HELLO 3`, and the replies must be
//! identical, for the commands whose answer does not depend on the server (errors,
//! keyspace commands, AUTH without a password, RESP3 nulls). Skips, saying so, when no
//! `redis-server` is installed (`apt-get install redis-server`).

mod common;

use std::process::{Command, Stdio};

use common::resp::{RedisServer, exchange};
use common::{Cluster, eventually};
use raftkv::server::ports::lease_loopback_ports;

/// Goal: for these commands raftkv's replies are redis-server's bytes. Method: one
/// connection each, the same pipeline of commands, compare the whole reply streams.
#[test]
fn replies_match_redis_server_byte_for_byte() {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED replies_match_redis_server_byte_for_byte: no redis-server installed");
        return;
    }
    let lease = lease_loopback_ports(1).expect("lease a port");
    let server_addr = lease[0].addr().to_string();
    let child = Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &lease[0].addr().port().to_string(),
        ])
        .args(["--save", "", "--appendonly", "no", "--databases", "1"])
        .stdout(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let _server = RedisServer(child);
    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.leader();
    let raftkv_addr = cluster.nodes[leader].redis_addr.to_string();
    eventually(|| {
        let reply = exchange(&raftkv_addr, &["SET warm up"]).0;
        if reply == b"+OK\r\n" {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&reply).into_owned())
        }
    });
    let commands = [
        "FLUSHALL",
        "SET a 1",
        "SET b 2",
        "GET nokey",
        "TYPE a",
        "TYPE nokey",
        "EXISTS a b nokey",
        "RENAME a c",
        "RENAME nokey d",
        "RENAMENX c b",
        "RENAMENX c e",
        "COPY e f",
        "COPY e f",
        "COPY e f REPLACE",
        "COPY e e",
        "UNLINK f nokey",
        "KEYS e",
        "DBSIZE",
        "SCAN notacursor",
        "SCAN 0 COUNT 0",
        "FLUSHDB ASYNC",
        "FLUSHDB NOW",
        "DBSIZE",
        "RANDOMKEY",
        "SCAN 0",
        "AUTH secret",
        "AUTH default secret",
        "AUTH someone secret",
        "HELLO 4",
        "HELLO x",
        "HELLO 3 AUTH u",
        "HELLO 3 BOGUS",
        "CLIENT KILL",
        "CLIENT KILL ID 0",
        "CLIENT KILL 1.2.3.4:5",
        "CLIENT BOGUS",
        "CLIENT SETNAME has space",
        "CONFIG BOGUS",
        "CONFIG GET maxmemory",
        "CONFIG GET databases",
        "WAIT 0 -1",
        "WAIT x 0",
        "WAIT 0 x",
        "COMMAND BOGUS",
        "SELECT 1",
        // Expiry (times far enough that a run's delay cannot change a rounded TTL).
        "SET t1 v EX 100",
        "TTL t1",
        "SET t1 v",
        "TTL t1",
        "SET t1 v PX 100000",
        "TTL t1",
        "SET t1 w KEEPTTL",
        "TTL t1",
        "GET t1",
        "SET t1 v EX 0",
        "SET t1 v EX x",
        "SET t1 v EX 1 PX 1",
        "SET t1 v EX 10 KEEPTTL",
        "SET t1 v EX",
        "SET t1 v EX 9223372036854776",
        "SET t1 v PX 5 PX 100000",
        "TTL t1",
        "SET t2 v EXAT 4000000000",
        "EXPIRETIME t2",
        "PEXPIRETIME t2",
        "SET t3 v PXAT 4000000000123",
        "PEXPIRETIME t3",
        "EXPIRETIME t3",
        "TTL nokey",
        "PTTL nokey",
        "EXPIRETIME nokey",
        "PEXPIRETIME nokey",
        "SET plain v",
        "TTL plain",
        "PTTL plain",
        "EXPIRETIME plain",
        "EXPIRE nokey 10",
        "EXPIRE plain 100 XX",
        "EXPIRE plain 100 GT",
        "EXPIRE plain 100 NX",
        "TTL plain",
        "EXPIRE plain 50 NX",
        "EXPIRE plain 50 GT",
        "EXPIRE plain 200 GT",
        "TTL plain",
        "EXPIRE plain 150 LT",
        "TTL plain",
        "EXPIRE plain 300 XX LT",
        "EXPIRE plain 10 XX LT",
        "TTL plain",
        "EXPIRE plain 10 FOO",
        "EXPIRE plain 10 NX XX",
        "EXPIRE plain 10 GT LT",
        "EXPIRE plain x",
        "EXPIRE plain 9223372036854775807",
        "PEXPIRE plain 5000 xx",
        "TTL plain",
        "PERSIST plain",
        "PERSIST plain",
        "PERSIST nokey",
        "TTL plain",
        "PEXPIREAT t2 4000000001000",
        "EXPIRETIME t2",
        "EXPIREAT t2 4000000002",
        "PEXPIRETIME t2",
        "EXPIRE plain -1",
        "EXISTS plain",
        "GET plain",
        "TYPE plain",
        "EXPIREAT t3 1",
        "EXISTS t3",
        "SETEX s1 100 v",
        "TTL s1",
        "PSETEX s2 100000 v",
        "TTL s2",
        "SETEX s1 0 v",
        "SETEX s1 x v",
        "PSETEX s1 -1 v",
        "SETEX s1 10",
        "GETEX s1",
        "TTL s1",
        "GETEX s1 PERSIST",
        "TTL s1",
        "GETEX s1 EX 50",
        "TTL s1",
        "GETEX s1 EXAT 4000000000",
        "EXPIRETIME s1",
        "GETEX nokey EX 5",
        "GETEX s1 EX 0",
        "GETEX s1 PERSIST EX 1",
        "GETEX s1 FOO",
        "GETEX s1 EX",
        "SET g v EX 100 GET",
        "SET g w NX EX 5",
        "TTL g",
        "GETSET g x",
        "TTL g",
        "SET g v XX PX 100000 GET",
        "TTL g",
        "MULTI",
        "EXPIRE g 30",
        "PERSIST g",
        "SET h v EX 70",
        "EXEC",
        "TTL g",
        "TTL h",
        "EXPIRE h 0",
        "EXISTS g h",
        "DBSIZE",
        // An empty keyspace, so RANDOMKEY below answers a null, not one of several keys
        // chosen at random.
        "FLUSHDB",
    ];
    let resp3 = ["HELLO 3 SETNAME x", "GET nokey", "MGET nokey", "RANDOMKEY"];
    let want = exchange(&server_addr, &commands).0;
    let got = exchange(&raftkv_addr, &commands).0;
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want),
        "RESP2 replies"
    );
    // HELLO's map names the server's version and connection id: compare what follows.
    let tail = |reply: Vec<u8>| {
        let text = String::from_utf8_lossy(&reply).into_owned();
        text[text.find("modules\r\n*0\r\n").expect("HELLO map") + 13..].to_string()
    };
    assert_eq!(
        tail(exchange(&raftkv_addr, &resp3).0),
        tail(exchange(&server_addr, &resp3).0),
        "RESP3 replies"
    );
}
