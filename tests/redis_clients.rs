//! Real Redis clients against a real 3-node cluster (issue 19 §7): redis-py with its
//! default settings (RESP3 through HELLO 3) runs `tests/clients/redis_py_app.py`, and
//! the `redis` crate (over RESP3) scans and renames. The compatibility checks are the
//! clients' own parsers, not this project's encoder.
//!
//! The redis-py test skips, saying so on stderr, when python3 cannot import `redis` and
//! `RAFTKV_REQUIRE_CLIENTS` is unset; CI sets it (and installs redis-py), so there a
//! missing client fails.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Cluster, eventually};
use redis::Commands;

fn redis_py_available() -> bool {
    let probe = Command::new("python3")
        .args(["-c", "import redis"])
        .output();
    matches!(probe, Ok(output) if output.status.success())
}

/// Goal: an application on redis-py 8 defaults connects over RESP3 and gets Redis's
/// answers to the connect-time commands, a SCAN over 100k keys (every key at least once,
/// while other keys change, also through a follower), KEYS, TYPE, RENAME, FLUSHDB and
/// the INFO sections redis-py parses. Method: the script asserts, this test checks its
/// exit status and reports its figures.
#[test]
fn redis_py_with_default_settings_runs_the_application_scenario() {
    if !redis_py_available() {
        assert!(
            std::env::var_os("RAFTKV_REQUIRE_CLIENTS").is_none(),
            "RAFTKV_REQUIRE_CLIENTS is set but python3 cannot import redis \
             (pip install redis)"
        );
        eprintln!(
            "SKIPPED redis_py_with_default_settings_runs_the_application_scenario: \
             python3 cannot import redis (pip install redis; set RAFTKV_REQUIRE_CLIENTS=1 \
             to make this a failure)"
        );
        return;
    }
    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.leader();
    let follower = (leader + 1) % 3;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/redis_py_app.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(cluster.nodes[leader].redis_addr.to_string())
        .arg(cluster.nodes[follower].redis_addr.to_string())
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    for line in stdout.lines().filter(|l| l.starts_with("FIGURE ")) {
        eprintln!("{line}");
    }
    assert!(
        output.status.success() && stdout.lines().any(|l| l == "OK"),
        "redis-py scenario failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
}

/// Goal: a second client stack (the `redis` crate, RESP3) sees SCAN return every key
/// once at least across cursor calls, RENAME / RENAMENX / TYPE / DBSIZE / FLUSHALL as
/// Redis answers them, a cache entry with a TTL expire and SET NX PX keep one lock
/// holder, on a follower (forwarded to the leader) as on the leader.
#[test]
fn the_redis_crate_scans_and_renames_over_resp3() {
    let cluster = Cluster::start(3, |_| {});
    let leader = cluster.leader();
    for node in [leader, (leader + 1) % 3] {
        let url = format!("redis://{}/?protocol=resp3", cluster.nodes[node].redis_addr);
        let client = redis::Client::open(url).expect("redis url");
        let mut con = eventually(|| client.get_connection());
        let () = eventually(|| redis::cmd("FLUSHALL").query(&mut con));
        let mut pipe = redis::pipe();
        for i in 0..5000 {
            pipe.set(format!("k:{i}"), i).ignore();
        }
        let () = pipe.query(&mut con).unwrap();
        let () = con.set("other", "x").unwrap();
        let started = Instant::now();
        let mut seen = HashSet::new();
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg("k:*")
                .arg("COUNT")
                .arg(300)
                .query(&mut con)
                .unwrap();
            seen.extend(keys);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        eprintln!(
            "FIGURE node {node}: SCAN of 5000 keys took {:?}",
            started.elapsed()
        );
        assert_eq!(seen.len(), 5000);
        assert!(!seen.contains("other"), "MATCH filters");
        assert_eq!(con.keys::<_, Vec<String>>("k:1??").unwrap().len(), 100);
        let dbsize: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
        assert_eq!(dbsize, 5001);
        let () = con.rename("k:1", "renamed").unwrap();
        assert!(!con.rename_nx::<_, _, bool>("renamed", "k:2").unwrap());
        let missing: redis::RedisResult<()> = con.rename("k:1", "x");
        assert!(missing.unwrap_err().to_string().contains("no such key"));
        let kind: String = redis::cmd("TYPE").arg("renamed").query(&mut con).unwrap();
        assert_eq!(kind, "string");
        let value: i64 = con.get("renamed").unwrap();
        assert_eq!(value, 1);
        // A cache entry with a TTL, and a lock with SET NX PX.
        let () = con.set_ex("cache", "v", 1).unwrap();
        let ttl: i64 = con.ttl("cache").unwrap();
        assert!((0..=1).contains(&ttl), "TTL {ttl}");
        let set_at = Instant::now();
        while con.get::<_, Option<String>>("cache").unwrap().is_some() {
            assert!(
                set_at.elapsed() < Duration::from_secs(10),
                "the cache entry never expired"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            set_at.elapsed() >= Duration::from_millis(500),
            "expired early"
        );
        let lock = |con: &mut redis::Connection, token: &str| -> Option<String> {
            redis::cmd("SET")
                .arg("lock")
                .arg(token)
                .arg("NX")
                .arg("PX")
                .arg(30000)
                .query(con)
                .unwrap()
        };
        assert_eq!(lock(&mut con, "a").as_deref(), Some("OK"));
        assert_eq!(lock(&mut con, "b"), None, "a second holder");
        let pttl: i64 = con.pttl("lock").unwrap();
        assert!((29_000..=30_000).contains(&pttl), "PTTL {pttl}");
        let () = redis::cmd("FLUSHALL").query(&mut con).unwrap();
        let empty: Vec<String> = con.keys("*").unwrap();
        assert!(empty.is_empty());
    }
}
