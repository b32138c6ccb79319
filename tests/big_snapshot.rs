//! Snapshots that live on disk, end to end on real server processes: a follower far
//! behind installs a snapshot sent in many chunks (each read from the leader's snapshot
//! file), and every node, restarted, restores its state machine from its own file.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Cluster;

const KEYS: usize = 2000;
/// Far above the chunk size below, so the install takes dozens of chunks.
const VALUE_BYTES: usize = 700;
const CHUNK_BYTES: u64 = 64 * 1024;

fn key(i: usize) -> Vec<u8> {
    format!("big-{i:06}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    let mut value = format!("value-{i}-").into_bytes();
    value.resize(VALUE_BYTES, b'v');
    value
}

/// The one snapshot file in a node's data directory.
fn snapshot_file(data_dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(data_dir.join("snapshots"))
        .expect("snapshot dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.to_string_lossy().ends_with(".snap"))
        .collect();
    assert_eq!(
        files.len(),
        1,
        "one snapshot file in {}",
        data_dir.display()
    );
    files[0].clone()
}

/// The size of the one snapshot file in a node's data directory.
fn snapshot_file_bytes(data_dir: &Path) -> u64 {
    std::fs::metadata(snapshot_file(data_dir))
        .expect("metadata")
        .len()
}

/// Flips one bit of the byte at `at` in the file at `path`.
fn flip_bit(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).expect("read snapshot");
    bytes[at] ^= 0x10;
    std::fs::write(path, bytes).expect("write snapshot");
}

/// Goal: a snapshot streamed from the leader's file in chunks installs on a follower
/// that missed the whole history, and a restart of every node serves the same data from
/// the snapshot files (restored from disk) plus the log above them. Method: small
/// snapshot threshold and chunk size; stop a follower, write 2000 700-byte values
/// (about 1.4 MB of state, over 20 chunks), restart it and read every 50th key on it;
/// then stop and restart all three and read every key through the leader. Last, a
/// node whose snapshot file has one damaged byte (read once at a restart, its crc
/// checked as it restores) refuses to start, naming the file and the crc's offset, and
/// starts and catches up once the byte is repaired.
#[test]
fn a_chunked_snapshot_installs_and_every_node_restores_from_its_file() {
    let mut cluster = Cluster::start(3, |config| {
        config.snapshot.threshold_entries = 500;
        config.storage.segment_bytes = 256 * 1024;
        config.limits.message_bytes_max = CHUNK_BYTES;
    });
    let leader = cluster.leader();
    let follower = (leader + 1) % 3;
    cluster.kill(follower);
    let mut client = cluster.client();
    for i in 0..KEYS {
        client.put(&key(i), &value(i)).expect("put");
    }
    cluster.start_node(follower);
    let commit = cluster.applied(cluster.leader());
    cluster.wait_applied(follower, commit);
    for i in (0..KEYS).step_by(50) {
        assert_eq!(
            cluster.read_at(follower, &key(i)),
            Some(value(i)),
            "key {i}"
        );
    }
    let log = cluster.log_text(follower);
    assert!(log.contains("installed snapshot"), "by snapshot: {log}");
    let installed = snapshot_file_bytes(&cluster.data_dir(follower));
    assert!(
        installed > 16 * CHUNK_BYTES,
        "a snapshot of many chunks: {installed} bytes"
    );
    drop(client);
    for node in 0..3 {
        cluster.kill(node);
    }
    for node in 0..3 {
        cluster.start_node(node);
    }
    let mut client = cluster.client();
    for i in 0..KEYS {
        assert_eq!(client.get(&key(i)).expect("get"), Some(value(i)), "key {i}");
    }
    client
        .put(b"after-restart", b"yes")
        .expect("put after restart");
    let commit = cluster.applied(cluster.leader());
    for node in 0..3 {
        cluster.wait_applied(node, commit);
        assert_eq!(cluster.read_at(node, &key(KEYS - 1)), Some(value(KEYS - 1)));
    }

    let damaged = (cluster.leader() + 1) % 3;
    cluster.kill(damaged);
    let file = snapshot_file(&cluster.data_dir(damaged));
    let len = snapshot_file_bytes(&cluster.data_dir(damaged));
    let middle = usize::try_from(len / 2).expect("small file");
    flip_bit(&file, middle);
    cluster.start_node(damaged);
    let status = cluster
        .wait_exit(damaged, Duration::from_secs(30))
        .expect("a node on a damaged snapshot stops");
    assert!(!status.success(), "exit status {status}");
    let log = cluster.log_text(damaged);
    let named = format!(
        "snapshot {}: corrupt at byte offset {}: crc mismatch",
        file.display(),
        len - 4
    );
    assert!(log.contains(&named), "{named} in {log}");
    flip_bit(&file, middle);
    cluster.start_node(damaged);
    cluster.wait_applied(damaged, commit);
    assert_eq!(
        cluster.read_at(damaged, b"after-restart"),
        Some(b"yes".to_vec())
    );
}
