//! Peer authentication against real `raftkv-server` processes (docs/SECURITY.md,
//! "Peer links").
//!
//! Goal: with `security.cluster_secret_file`, knowing the cluster id no longer makes a
//! peer. Method: a 3-node cluster where one node has another secret (it must neither
//! join nor disturb the two others, which keep their leader and take writes; the
//! refusals are counted and logged with the address), and raw TCP clients that send
//! well-formed handshakes without a valid proof (refused at once, counted, logged).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{Cluster, options};
use raftkv::client::{Client, metrics_at, status_at};
use raftkv::codec::frame::FrameCodec;
use raftkv::codec::peer::{self as peer_codec, PeerFrame};
use raftkv::config::Config;

const SECRET: &str = "correct horse battery staple 42";

fn write_secret(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{text}\n")).expect("write secret");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

fn metric(addr: &str, name: &str) -> u64 {
    let metrics = metrics_at(addr, &options()).expect("metrics");
    metrics
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("metric {name} missing"))
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        sleep(Duration::from_millis(50));
    }
}

/// One frame body as the peer port reads it.
fn framed(frame: &PeerFrame) -> Vec<u8> {
    let mut out = Vec::new();
    FrameCodec::new(1 << 20)
        .encode_with(&mut out, |body| peer_codec::encode(frame, body))
        .expect("small frame");
    out
}

/// Whether the server closed `stream` within `timeout` (EOF or reset), reading and
/// keeping whatever it sent before.
fn closed_within(stream: &mut TcpStream, timeout: Duration, got: &mut Vec<u8>) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let deadline = Instant::now() + timeout;
    let mut buf = [0; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

/// Reference: docs/SECURITY.md "Peer links". A member with the wrong secret is
/// refused by both others, which go on electing, keeping their leader and committing
/// writes without it; each refusal is in `net.peer_auth_failures` and the log names
/// the refused node's address.
#[test]
fn a_node_with_the_wrong_secret_cannot_join_or_disturb_the_cluster() {
    let secrets = tempfile::tempdir().expect("dir");
    let good = write_secret(secrets.path(), "secret", SECRET);
    let wrong = write_secret(secrets.path(), "wrong", "another secret of 30 bytes....");
    let mut cluster = Cluster::configure(3, |config| {
        config.security.cluster_secret_file = Some(good.clone());
    });
    let path = &cluster.nodes[2].config_path;
    let mut config = Config::load(path).expect("config");
    config.security.cluster_secret_file = Some(wrong.clone());
    std::fs::write(path, config.to_toml().expect("toml")).expect("write config");
    for i in 0..3 {
        cluster.start_node(i);
    }
    let good_addrs = vec![cluster.addr(0), cluster.addr(1)];
    let mut client = Client::connect(&good_addrs, options()).expect("client");
    for i in 0..20 {
        let key = format!("k{i}");
        common::eventually(|| client.put(key.as_bytes(), b"v"));
    }
    let leader = cluster.leader();
    assert!(leader < 2, "the impostor cannot lead");
    let before = status_at(&cluster.addr(leader), &options()).expect("status");
    // The impostor keeps dialing (and timing out into elections) meanwhile.
    sleep(Duration::from_secs(2));
    client
        .put(b"after", b"v")
        .expect("the cluster still takes writes");
    let after = status_at(&cluster.addr(leader), &options()).expect("status");
    assert_eq!(
        (after.leader_id, after.term),
        (before.leader_id, before.term),
        "the impostor disturbed the leader"
    );
    let follower = 1 - leader;
    cluster.wait_applied(follower, after.applied_index);
    assert_eq!(cluster.read_at(follower, b"after"), Some(b"v".to_vec()));
    let impostor = status_at(&cluster.addr(2), &options()).expect("impostor status");
    assert!(
        impostor.applied_index < before.applied_index,
        "the impostor got the log: {} >= {}",
        impostor.applied_index,
        before.applied_index
    );
    let impostor_peer = cluster.nodes[2].peer_addr.to_string();
    for i in 0..2 {
        let failures = metric(&cluster.addr(i), "net.peer_auth_failures");
        assert!(failures >= 1, "node {i} counted no refusal");
        let log = cluster.log_text(i);
        assert!(
            log.contains(&format!("refusing peer connection from {impostor_peer}")),
            "node {i} did not log the impostor's address {impostor_peer}:\n{log}"
        );
        assert!(!log.contains(SECRET), "node {i} logged the secret");
    }
    assert!(metric(&cluster.addr(2), "net.peer_auth_failures") >= 1);
}

/// A raw client that knows the cluster id and sends a well-formed handshake without a
/// proof (the handshake of a node with no secret), or with a nonce and then a wrong
/// proof, is refused and its connection closed; the proof the node answers with does
/// not carry the secret.
#[test]
fn a_handshake_without_a_valid_proof_is_refused() {
    let secrets = tempfile::tempdir().expect("dir");
    let good = write_secret(secrets.path(), "secret", SECRET);
    let cluster = Cluster::start(1, |config| {
        config.security.cluster_secret_file = Some(good.clone());
    });
    cluster.leader();
    let config = Config::load(&cluster.nodes[0].config_path).expect("config");
    let peer_port = cluster.nodes[0].peer_addr;
    let handshake = |nonce| PeerFrame::Handshake {
        cluster_id: config.cluster_id,
        node_id: 7,
        peer_addr: "127.0.0.1:9".into(),
        nonce,
    };

    let mut plain = TcpStream::connect(peer_port).expect("connect");
    let plain_addr = plain.local_addr().expect("addr").to_string();
    plain.write_all(&framed(&handshake(None))).expect("send");
    let mut got = Vec::new();
    assert!(
        closed_within(&mut plain, Duration::from_secs(5), &mut got),
        "a handshake without proof was accepted"
    );
    assert!(got.is_empty(), "the refused dialer was answered");

    let mut forged = TcpStream::connect(peer_port).expect("connect");
    let forged_addr = forged.local_addr().expect("addr").to_string();
    forged
        .write_all(&framed(&handshake(Some([5; 32]))))
        .expect("send");
    // 4-byte length, type 3, a 32-byte nonce, a 32-byte proof.
    let mut answer = [0; 4 + 1 + 32 + 32];
    forged
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    forged
        .read_exact(&mut answer)
        .expect("the node answers the challenge");
    assert_eq!(answer[4], 3, "an answer frame");
    assert!(
        !answer
            .windows(8)
            .any(|w| SECRET.as_bytes().windows(8).any(|s| s == w)),
        "the secret is on the wire"
    );
    forged
        .write_all(&framed(&PeerFrame::Proof([0; 32])))
        .expect("send");
    let mut more = Vec::new();
    assert!(
        closed_within(&mut forged, Duration::from_secs(5), &mut more),
        "a wrong proof was accepted"
    );
    assert!(more.is_empty(), "the refused dialer got messages");

    let addr = cluster.addr(0);
    wait_until("both refusals counted", Duration::from_secs(5), || {
        metric(&addr, "net.peer_auth_failures") >= 2
    });
    let log = cluster.log_text(0);
    for (who, why) in [(plain_addr, "without proof"), (forged_addr, "wrong proof")] {
        assert!(
            log.lines().any(
                |l| l.contains(&format!("refusing peer connection from {who}")) && l.contains(why)
            ),
            "no refusal of {who} ({why}) in the log:\n{log}"
        );
    }
    // The node still serves.
    let mut client = cluster.client();
    client.put(b"k", b"v").expect("put");
}
