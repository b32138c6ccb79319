//! Backup and restore against the real binaries (issue 19 §5): `raftkv-cli snapshot
//! save` pulls a consistent snapshot from the leader, `raftkv-log snapshot-restore`
//! seeds each node of a NEW cluster from it, and the new cluster serves exactly the
//! keys and values the old one held when the save started, with their expiry times.
//!
//! `RAFTKV_BACKUP_KEYS` changes the number of preloaded keys (default one million).

mod common;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::AtomicBool;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{Cluster, eventually, options};
use raftkv::client::Client;
use raftkv::config::Config;
use raftkv::kv::RangeQuery;
use raftkv::tools::bench::preload::{PreloadPlan, preload};

const CLI: &str = env!("CARGO_BIN_EXE_raftkv-cli");
const LOG: &str = env!("CARGO_BIN_EXE_raftkv-log");

/// One Redis command on a new connection to `addr`; its one-line reply, without CRLF.
fn redis(addr: SocketAddr, args: &[&str]) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to the redis port");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    let mut out = format!("*{}\r\n", args.len());
    for arg in args {
        out.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(out.as_bytes()).expect("send");
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .expect("a reply");
    line.trim_end().to_string()
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"))
}

fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every key and value of the store in order (linearizable pages): their count and a
/// hash of them all.
fn digest(client: &mut Client) -> (u64, u64) {
    let all = client
        .range(&RangeQuery::default(), false)
        .expect("range over the whole store");
    let mut hasher = DefaultHasher::new();
    all.entries.hash(&mut hasher);
    (all.entries.len() as u64, hasher.finish())
}

/// Goal: a million keys (and keys with distinct values, deletions, and the last write
/// acknowledged before the save) survive save, restore into three new data
/// directories, and a start of the new cluster, which then takes writes. The save is
/// asked of a follower, which redirects it to the leader.
#[test]
fn a_million_keys_round_trip_through_snapshot_save_and_restore_into_a_new_cluster() {
    let keys: u64 = std::env::var("RAFTKV_BACKUP_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let source = Cluster::start(3, |_| {});
    let leader = source.leader();
    let mut client = source.client();
    eventually(|| client.put(b"warm", b"up"));
    let plan = PreloadPlan {
        leader_addr: source.addr(leader),
        member_addrs: source.addrs(),
        keys,
        value: vec![b'p'; 16],
        connections: 8,
        pipeline: 64,
        options: options(),
    };
    let started = Instant::now();
    preload(&plan, &AtomicBool::new(false)).expect("preload");
    eprintln!(
        "preloaded {keys} keys in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for i in 0..1000 {
        let value = format!("distinct value {i} {}", "x".repeat(i % 50));
        client
            .put(format!("distinct/{i:04}").as_bytes(), value.as_bytes())
            .expect("put");
    }
    for i in 0..10u64 {
        let key = format!("k{:015}", i * 7);
        assert!(
            client.delete(key.as_bytes()).expect("delete"),
            "{key} existed"
        );
    }
    // Keys with expiry times: far ones (checked exactly) and one 10 minutes ahead.
    let redis_addr = source.nodes[leader].redis_addr;
    for i in 0..100 {
        let (key, at) = (format!("ttl/{i:03}"), (4_000_000_000u64 + i).to_string());
        assert_eq!(redis(redis_addr, &["SET", &key, "v", "EXAT", &at]), "+OK");
    }
    assert_eq!(
        redis(redis_addr, &["SET", "ttl/short", "v", "PX", "600000"]),
        "+OK"
    );
    client
        .put(b"last-acknowledged", b"before the save")
        .expect("put");
    let before = digest(&mut client);
    assert_eq!(
        before.0,
        keys - 10 + 1000 + 2 + 101,
        "the source holds every key"
    );

    let follower = (leader + 1) % 3;
    let file = source.dir.path().join("backup.snap");
    let file_arg = file.to_str().expect("utf-8 path");
    let started = Instant::now();
    let saved = run(
        CLI,
        &[
            "--cluster",
            &source.addr(follower),
            "snapshot",
            "save",
            file_arg,
        ],
    );
    assert_ok("snapshot save", &saved);
    let stdout = String::from_utf8_lossy(&saved.stdout);
    assert!(stdout.starts_with("OK: snapshot at index "), "{stdout}");
    eprintln!(
        "snapshot save: {} ({:.1} s, {} bytes)",
        stdout.trim(),
        started.elapsed().as_secs_f64(),
        std::fs::metadata(&file).expect("saved file").len()
    );
    assert!(!Path::new(&format!("{file_arg}.part")).exists());
    let backups = source.data_dir(leader).join("backups");
    eventually(|| {
        let left = std::fs::read_dir(&backups).map_or(0, |d| d.count());
        if left == 0 {
            Ok(())
        } else {
            Err(format!(
                "{left} job directories left in {}",
                backups.display()
            ))
        }
    });

    let mut target = Cluster::configure(3, |_| {});
    let cluster_id = Config::load(&target.nodes[0].config_path)
        .expect("config")
        .cluster_id;
    let members: Vec<String> = (target.nodes.iter())
        .map(|n| format!("{}={},{}", n.id, n.peer_addr, n.client_addr))
        .collect();
    for i in 0..3 {
        let data_dir = target.data_dir(i);
        let (node_id, cluster_id) = (target.nodes[i].id.to_string(), cluster_id.to_string());
        let mut args = vec![
            "snapshot-restore",
            file_arg,
            "--data-dir",
            data_dir.to_str().expect("utf-8 path"),
            "--node-id",
            &node_id,
            "--cluster-id",
            &cluster_id,
        ];
        for member in &members {
            args.extend(["--member", member]);
        }
        assert_ok("snapshot-restore", &run(LOG, &args));
    }
    for i in 0..3 {
        target.start_node(i);
    }
    let started = Instant::now();
    let mut restored = target.client();
    let last = eventually(|| restored.get(b"last-acknowledged"));
    eprintln!(
        "restored cluster serving after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(last.as_deref(), Some(&b"before the save"[..]));
    assert_eq!(digest(&mut restored), before, "the same keys and values");
    let redis_addr = target.nodes[target.leader()].redis_addr;
    for i in 0..100 {
        let key = format!("ttl/{i:03}");
        let want = format!(":{}", 4_000_000_000u64 + i);
        assert_eq!(redis(redis_addr, &["EXPIRETIME", &key]), want, "{key}");
    }
    let pttl = redis(redis_addr, &["PTTL", "ttl/short"]);
    let pttl: i64 = pttl[1..].parse().expect("PTTL is an integer");
    assert!(
        (1..=600_000).contains(&pttl),
        "ttl/short keeps its TTL: {pttl}"
    );

    restored.put(b"after-restore", b"yes").expect("a write");
    for i in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(20);
        while target.read_at(i, b"after-restore").is_none() {
            assert!(
                Instant::now() < deadline,
                "node {i} never applied the write"
            );
            sleep(Duration::from_millis(20));
        }
    }
}

/// Goal: a save whose file cannot be written fails with a message naming it and exit 5,
/// and creates nothing.
#[test]
fn a_snapshot_save_that_cannot_write_its_file_fails_cleanly() {
    let cluster = Cluster::start(3, |_| {});
    let mut client = cluster.client();
    eventually(|| client.put(b"k", b"v"));
    let leader = cluster.leader();
    let missing = cluster.dir.path().join("no-such-dir").join("backup.snap");
    let out = run(
        CLI,
        &[
            "--cluster",
            &cluster.addr(leader),
            "snapshot",
            "save",
            missing.to_str().expect("utf-8 path"),
        ],
    );
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-dir"), "{stderr}");

    assert!(!cluster.dir.path().join("no-such-dir").exists());
}
