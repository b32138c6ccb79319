//! Storage that fails safe (issue 13, items 6 and 7), on real `raftkv-server`
//! processes.
//!
//! Item 7: a node refuses a data directory that is not its own consistent state (a log
//! whose HARDSTATE is missing or older than its last term, another cluster's or another
//! node's directory) with exit code 2 and a message naming the file and the repair; a
//! normal restart, and a restart after the named repair, still work.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::Cluster;
use raftkv::config::Config;
use raftkv::raft::message::HardState;
use raftkv::storage::{Wal, WalOptions, hard_state};

/// A 3-node cluster that committed a few writes, with one follower stopped (kill -9);
/// returns the cluster and that follower's index.
fn cluster_with_stopped_follower() -> (Cluster, usize) {
    let mut cluster = Cluster::start(3, |_| {});
    let mut client = cluster.client();
    for i in 0..20u32 {
        client
            .put(format!("k{i}").as_bytes(), b"v")
            .expect("put before the restart");
    }
    let leader = cluster.leader();
    let follower = (leader + 1) % 3;
    let applied = cluster.applied(leader);
    cluster.wait_applied(follower, applied);
    cluster.kill(follower);
    (cluster, follower)
}

/// Starts node `i` and expects it to refuse its data directory: exit code 2 within
/// 10 s, and a log line naming `file` and containing `repair`.
fn assert_refused(cluster: &mut Cluster, i: usize, file: &str, repair: &str) {
    let before = cluster.log_text(i).len();
    cluster.start_node(i);
    let status = cluster
        .wait_exit(i, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("node {i} started on a directory that is not its own"));
    let log = cluster.log_text(i)[before..].to_string();
    assert_eq!(status.code(), Some(2), "exit code; log:\n{log}");
    assert!(log.contains(file), "the message names {file}:\n{log}");
    assert!(log.contains(repair), "the message names the repair:\n{log}");
}

/// Starts node `i` and expects it to serve again: it catches up with the leader.
fn assert_serves(cluster: &mut Cluster, i: usize) {
    cluster.start_node(i);
    let leader = cluster.leader();
    let mut client = cluster.client();
    client.put(b"after", b"restart").expect("put after restart");
    let applied = cluster.applied(leader);
    cluster.wait_applied(i, applied);
    assert_eq!(cluster.read_at(i, b"after"), Some(b"restart".to_vec()));
}

fn raftkv_log(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_raftkv-log"))
        .args(args)
        .output()
        .expect("run raftkv-log");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// Index and term of the last entry in the log directory `wal_dir`.
fn last_entry(wal_dir: &Path) -> (u64, u64) {
    let wal = Wal::open(wal_dir, WalOptions::default()).expect("open the stopped node's log");
    let last = wal.last_index();
    (last, wal.term(last).expect("last term"))
}

/// Rewrites node `i`'s config file through `change`.
fn edit_config(cluster: &Cluster, i: usize, change: impl Fn(&mut Config)) {
    let path = &cluster.nodes[i].config_path;
    let mut config = Config::load(path).expect("config");
    change(&mut config);
    std::fs::write(path, config.to_toml().expect("toml")).expect("write config");
}

// Goal: the defect of issue 13 item 7: with HARDSTATE deleted and the log intact, the
// node restarted at term 0 with no vote (and could vote twice in one term). Now it
// refuses (exit 2, naming HARDSTATE and `raftkv-log reset-hardstate`); the named
// repair with a term above the cluster's lets it rejoin. Reference: Raft section 5.1
// (currentTerm and votedFor are persistent state).
#[test]
fn missing_hard_state_is_refused_then_repaired() {
    let (mut cluster, follower) = cluster_with_stopped_follower();
    let wal_dir = cluster.data_dir(follower).join("wal");
    std::fs::remove_file(wal_dir.join("HARDSTATE")).expect("delete HARDSTATE");
    assert_refused(
        &mut cluster,
        follower,
        "HARDSTATE",
        "raftkv-log reset-hardstate",
    );
    let leader = cluster.leader();
    let term = raftkv::client::status_at(&cluster.addr(leader), &common::options())
        .expect("leader status")
        .term;
    let wal = wal_dir.to_str().expect("utf-8 path");
    let (code, text) = raftkv_log(&["reset-hardstate", wal, "--term", "0", "--yes"]);
    assert_eq!(code, 1, "a term below the log's is refused: {text}");
    let next = (term + 1).to_string();
    let (code, text) = raftkv_log(&["reset-hardstate", wal, "--term", &next, "--yes"]);
    assert_eq!(code, 0, "reset-hardstate: {text}");
    assert_serves(&mut cluster, follower);
}

// Goal: a HARDSTATE whose term is older than the log's last term (written with the
// storage API) is refused the same way.
#[test]
fn hard_state_older_than_the_log_is_refused() {
    let (mut cluster, follower) = cluster_with_stopped_follower();
    let wal_dir = cluster.data_dir(follower).join("wal");
    let (last_index, last_term) = last_entry(&wal_dir);
    assert!(last_index > 0 && last_term > 0, "the follower holds a log");
    let stale = HardState {
        term: last_term - 1,
        vote: 0,
        commit: 0,
    };
    hard_state::save(&wal_dir, &stale).expect("write an older hard state");
    assert_refused(
        &mut cluster,
        follower,
        "HARDSTATE",
        "raftkv-log reset-hardstate",
    );
}

// Goal: a data directory of cluster A started with a config of cluster B is refused
// (exit 2, naming IDENTITY); with its own config back, the node serves again.
#[test]
fn data_dir_of_another_cluster_is_refused() {
    let (mut cluster, follower) = cluster_with_stopped_follower();
    let own = Config::load(&cluster.nodes[follower].config_path)
        .expect("config")
        .cluster_id;
    edit_config(&cluster, follower, |c| c.cluster_id = own + 1);
    assert_refused(&mut cluster, follower, "IDENTITY", "data_dir");
    edit_config(&cluster, follower, |c| c.cluster_id = own);
    assert_serves(&mut cluster, follower);
}

// Goal: a node started on another node's data directory (same cluster) is refused.
#[test]
fn data_dir_of_another_node_is_refused() {
    let (mut cluster, follower) = cluster_with_stopped_follower();
    let leader = cluster.leader();
    let other = (0..3)
        .find(|&i| i != follower && i != leader)
        .expect("node");
    cluster.kill(other);
    let other_dir = cluster.data_dir(other);
    let own_dir = cluster.data_dir(follower);
    edit_config(&cluster, follower, |c| c.data_dir = other_dir.clone());
    assert_refused(&mut cluster, follower, "IDENTITY", "node_id");
    edit_config(&cluster, follower, |c| c.data_dir = own_dir.clone());
    cluster.start_node(other);
    assert_serves(&mut cluster, follower);
}

// Goal: a normal restart still works, and so does a directory written before IDENTITY
// existed (the file is then written on open).
#[test]
fn normal_restart_and_old_directory_still_work() {
    let (mut cluster, follower) = cluster_with_stopped_follower();
    let identity = cluster.data_dir(follower).join("IDENTITY");
    assert!(identity.exists(), "a new directory records its identity");
    assert_serves(&mut cluster, follower);
    cluster.kill(follower);
    std::fs::remove_file(&identity).expect("delete IDENTITY");
    assert_serves(&mut cluster, follower);
    assert!(
        identity.exists(),
        "an old directory gets its identity on open"
    );
}
