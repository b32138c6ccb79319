//! `raftkv-bench --preload` against the real binaries when the leader changes under it.
//!
//! Goal: killing the leader in the middle of a preload does not abort it; every key is
//! written once the run ends (the preload finds the new leader and resends what was
//! not acknowledged). Method: a 3-node cluster, `raftkv-bench --cluster ... --preload`
//! as a child process, SIGKILL of the leader once it has applied a fifth of the keys,
//! then a count of the keys on a survivor.

mod common;

use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{Cluster, eventually};
use raftkv::kv::RangeQuery;

const BENCH: &str = env!("CARGO_BIN_EXE_raftkv-bench");
const KEYS: u64 = 200_000;

#[test]
fn a_preload_survives_the_leaders_death_and_writes_every_key() {
    let mut cluster = Cluster::start(3, |_| {});
    let leader = cluster.leader();
    let mut client = cluster.client();
    eventually(|| client.put(b"warm", b"up"));
    let start_index = cluster.applied(leader);

    let log_path = std::env::temp_dir().join(format!("bench-preload-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).expect("bench log");
    let mut bench = Command::new(BENCH)
        .args(["--cluster", &cluster.addrs().join(",")])
        .args(["--preload", "--keys", &KEYS.to_string()])
        .args(["--connections", "4", "--pipeline", "8"])
        .args(["--duration", "1", "--warmup", "0", "--timeout-ms", "2000"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start raftkv-bench");

    // Kill the leader a fifth of the way in.
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.applied(leader) < start_index + KEYS / 5 {
        assert!(Instant::now() < deadline, "the preload made no progress");
        assert!(
            bench.try_wait().expect("bench").is_none(),
            "the bench ended before the leader was killed: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        sleep(Duration::from_millis(10));
    }
    cluster.kill(leader);

    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = bench.try_wait().expect("bench") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = bench.kill();
            panic!("raftkv-bench did not finish within 120 s");
        }
        sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    let _ = std::fs::remove_file(&log_path);
    assert!(
        status.success(),
        "raftkv-bench failed ({status}):\n{output}"
    );
    assert!(
        output.contains(&format!("preload: {KEYS} keys in")),
        "no completed preload in:\n{output}"
    );

    let survivor = (0..3).find(|&i| i != leader).expect("a survivor");
    let mut client = raftkv::client::Client::connect(&[cluster.addr(survivor)], common::options())
        .expect("client");
    let query = RangeQuery {
        count_only: true,
        ..RangeQuery::prefix(b"k")
    };
    let counted = eventually(|| client.range(&query, false)).count;
    assert_eq!(counted, KEYS, "keys present after the preload");
}
