//! The fault-injection suite, short version: real `raftkv-server` processes behind link
//! proxies, a concurrent put/get/cas workload, and a nemesis; each round must stay
//! linearizable, keep every acknowledged write, and converge after healing. Plus proof
//! that the checker, fed through the suite's own history format, rejects the three
//! classic bugs. The long version is `raftkv-faults` (docs/FAULTS.md).

use std::path::PathBuf;
use std::time::Duration;

use raftkv::check::{KvCall, Operation, Outcome};
use raftkv::tools::faults::checker::{STEPS_MAX_DEFAULT, check_history};
use raftkv::tools::faults::cluster::{ClusterOptions, FaultCluster};
use raftkv::tools::faults::history;
use raftkv::tools::faults::nemesis::FaultKind;
use raftkv::tools::faults::proxy::LinkMode;
use raftkv::tools::faults::round::{RoundOptions, Verdict, run_round};

fn test_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("raftkv-faults-test-{}-{name}", std::process::id()))
}

fn options(name: &str, nemesis: Vec<FaultKind>) -> RoundOptions {
    RoundOptions {
        nodes: 3,
        server_exe: PathBuf::from(env!("CARGO_BIN_EXE_raftkv-server")),
        dir: test_dir(name),
        duration: Duration::from_secs(15),
        nemesis,
        quiet_ms: (400, 900),
        faults_at_once: 1,
        hold_ms: (1000, 2000),
        clients: 4,
        keys: 4,
        request_timeout: Duration::from_millis(1500),
        tick_ms: 50,
        // Snapshots every 1000 entries: restarted and cut-off nodes catch up by snapshot.
        snapshot_entries: Some(1000),
        steps_max: STEPS_MAX_DEFAULT,
        keep: false,
        stale_reads: false,
        tls: false,
    }
}

/// Runs one round and asserts it passed with real traffic and real faults.
fn run_scenario(name: &str, nemesis: Vec<FaultKind>, seed: u64) {
    run_round_of(&options(name, nemesis), name, seed);
}

/// Runs the round of `options` and asserts it passed with real traffic and real faults.
fn run_round_of(options: &RoundOptions, name: &str, seed: u64) {
    let report = run_round(options, 0, seed).expect("round runs");
    eprintln!("{name}: {}", report.summary());
    for (at_ms, fault) in &report.faults {
        eprintln!("  {at_ms:>6} ms {fault}");
    }
    assert!(
        report.verdict.passed(),
        "{}\nkept: {:?}; re-check with raftkv-faults --check <kept>/history.jsonl",
        report.verdict.describe(),
        report.kept
    );
    assert!(
        report.faults.len() >= 4,
        "faults injected: {:?}",
        report.faults
    );
    assert!(
        report.counts.writes_ok >= 100,
        "writes acknowledged: {:?}",
        report.counts
    );
    assert!(report.counts.reads >= 100, "reads: {:?}", report.counts);
    let _ = std::fs::remove_dir_all(&options.dir);
}

/// Goal: crashes lose nothing acknowledged. Method: kill -9 the leader (mostly) or a
/// follower, restart it on the same data dir after 1-2 s, over and over.
#[test]
fn kill_and_restart_stays_linearizable() {
    run_scenario("kill", vec![FaultKind::Kill], 0x6b69_6c6c);
}

/// Goal: no partition shape breaks safety. Method: through the link proxies, isolate the
/// leader, split majority/minority, bridge two halves through one node, drop one
/// direction only, and stall the leader's links (data held, delivered late on heal).
#[test]
fn partitions_stay_linearizable() {
    run_scenario(
        "partitions",
        vec![
            FaultKind::IsolateLeader,
            FaultKind::Bridge,
            FaultKind::OneWay,
            FaultKind::MajorityMinority,
            FaultKind::StallLeader,
        ],
        0x7061_7274,
    );
}

/// Goal: TLS on every port and link changes nothing about safety or failover. Method:
/// the same round with `tls` (mutual-TLS peer links through the proxies, TLS clients):
/// kill -9 and restart, isolate the leader, split majority/minority.
#[test]
fn crashes_and_partitions_stay_linearizable_with_tls() {
    let nemesis = vec![
        FaultKind::Kill,
        FaultKind::IsolateLeader,
        FaultKind::MajorityMinority,
    ];
    let options = RoundOptions {
        tls: true,
        ..options("tls", nemesis)
    };
    run_round_of(&options, "tls", 0x746c_7321);
}

/// Goal: a paused node (a stalled VM, a long GC) that wakes up believing it leads does
/// no harm, nor do slow links. Method: SIGSTOP/SIGCONT alternated with link delay.
#[test]
fn pauses_and_delays_stay_linearizable() {
    run_scenario(
        "pause",
        vec![FaultKind::Pause, FaultKind::Delay],
        0x7061_7573,
    );
}

/// Goal: the whole pipeline (workload, recorder, checker) catches a real anomaly of a
/// real cluster, not just hand-made histories. Method: read with stale local reads from
/// random nodes (followers apply after the leader acknowledges, and an isolated leader
/// keeps serving values the majority has overwritten); the round must fail with a
/// violation.
#[test]
fn stale_reads_under_partition_are_caught() {
    let mut options = options("stale", vec![FaultKind::IsolateLeader]);
    options.duration = Duration::from_secs(6);
    options.stale_reads = true;
    let report = run_round(&options, 0, 0x7374_616c).expect("round runs");
    eprintln!("stale: {}", report.summary());
    match &report.verdict {
        Verdict::Check(summary) => assert!(!summary.violations.is_empty(), "{summary:?}"),
        other => panic!(
            "expected a linearizability violation, got {}",
            other.describe()
        ),
    }
    let _ = std::fs::remove_dir_all(&options.dir);
}

/// Goal: the proxies really are on the peer path. Method: drop every link of the leader;
/// the others must elect a new leader, and after the heal the old one must follow it.
#[test]
fn isolating_the_leader_through_the_proxies_elects_another() {
    let dir = test_dir("isolate");
    let mut cluster = FaultCluster::start(&ClusterOptions {
        nodes: 3,
        server_exe: PathBuf::from(env!("CARGO_BIN_EXE_raftkv-server")),
        dir: dir.clone(),
        tick_ms: 50,
        snapshot_entries: None,
        tls: false,
    })
    .expect("cluster");
    let old = cluster
        .wait_leader(Duration::from_secs(15))
        .expect("a leader");
    for other in (0..3).filter(|&n| n != old) {
        cluster.set_link(old, other, LinkMode::Drop);
        cluster.set_link(other, old, LinkMode::Drop);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let new = loop {
        let leaders: Vec<usize> = (0..3)
            .filter(|&n| n != old)
            .filter(|&n| {
                cluster
                    .status(n, Duration::from_millis(300))
                    .is_some_and(|s| s.leader_id == s.node_id)
            })
            .collect();
        if let Some(&leader) = leaders.first() {
            break leader;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no new leader behind the cut"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    cluster.heal().expect("heal");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = cluster.status(old, Duration::from_millis(300));
        if status.is_some_and(|s| s.leader_id != s.node_id && s.leader_id != 0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "old leader n{} did not follow",
            old + 1
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_ne!(new, old);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}

fn op(client: u64, call: KvCall, outcome: Outcome, invoke: u64, complete: u64) -> Operation {
    Operation {
        client,
        key: b"k0".to_vec(),
        call,
        outcome,
        invoke,
        complete,
    }
}

fn put(value: &str) -> KvCall {
    KvCall::Put(value.as_bytes().to_vec())
}

fn read(value: Option<&str>) -> Outcome {
    Outcome::Read(value.map(|v| v.as_bytes().to_vec()))
}

/// Goal: the checker, reached through the suite's history file format, rejects each
/// classic bug and accepts its correct twin. Method: render each history to JSON lines,
/// parse it back, check it.
#[test]
fn checker_rejects_stale_read_lost_write_and_phantom_value() {
    let stale_read = vec![
        op(1, put("c1-1"), Outcome::Ok, 0, 10),
        op(1, put("c1-2"), Outcome::Ok, 20, 30),
        // Invoked after c1-2 was acknowledged, yet returns the older value.
        op(2, KvCall::Get, read(Some("c1-1")), 40, 50),
    ];
    let lost_write = vec![
        op(1, put("c1-1"), Outcome::Ok, 0, 10),
        // The acknowledged write is gone: the final read finds the key absent.
        op(0, KvCall::Get, read(None), 100, 110),
    ];
    let phantom = vec![
        op(1, put("c1-1"), Outcome::Ok, 0, 10),
        op(2, put("c2-1"), Outcome::Unknown, 5, 0),
        // Nobody ever wrote c3-9.
        op(3, KvCall::Get, read(Some("c3-9")), 20, 30),
    ];
    let correct = vec![
        op(1, put("c1-1"), Outcome::Ok, 0, 10),
        op(1, put("c1-2"), Outcome::Ok, 20, 30),
        op(2, put("c2-1"), Outcome::Unknown, 25, 0),
        op(3, KvCall::Get, read(Some("c1-2")), 40, 50),
        // The unknown write took effect late: allowed.
        op(0, KvCall::Get, read(Some("c2-1")), 100, 110),
    ];
    for (name, bad) in [
        ("stale read", stale_read),
        ("lost acknowledged write", lost_write),
        ("value never written", phantom),
    ] {
        let parsed = history::parse(&history::render(&bad)).expect("round trip");
        let summary = check_history(&parsed, STEPS_MAX_DEFAULT);
        assert_eq!(
            summary.violations.len(),
            1,
            "{name}: {}",
            summary.describe()
        );
        assert!(summary.budget_exceeded.is_empty(), "{name}");
    }
    let parsed = history::parse(&history::render(&correct)).expect("round trip");
    let summary = check_history(&parsed, STEPS_MAX_DEFAULT);
    assert!(summary.passed(), "correct history: {}", summary.describe());
}
