//! TLS on every port and link, against the real binaries (issue 18 §1).
//!
//! Goal: a cluster with TLS on its client, Redis, HTTP and peer ports elects a leader
//! over mutual-TLS peer links, forwards over a TLS link, and serves raftkv-cli,
//! redis-cli, curl and openssl; plaintext and foreign certificates are refused, counted
//! and logged; a peer whose certificate names another member is refused; SIGHUP makes
//! new connections use rotated certificates while open ones go on; an unusable file
//! stops the node with its name. Method: `raftkv-cli certs init` writes a CA and
//! per-node certificates into a temp dir; tests/common starts the nodes with `[tls]`
//! pointing at them.
//!
//! The redis-cli, curl and openssl parts skip, saying so on stderr, when the tool is
//! missing and `RAFTKV_REQUIRE_CLIENTS` is unset (CI sets it).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{Cluster, eventually, options};
use raftkv::client::{Client, ClientOptions, metrics_at};
use raftkv::codec::frame::FrameCodec;
use raftkv::codec::peer::{self, PeerFrame};
use raftkv::config::{Config, TlsConfig, TlsPort};
use raftkv::tls::{ClientTls, load_certificates};

const CLI: &str = env!("CARGO_BIN_EXE_raftkv-cli");

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn text(output: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `raftkv-cli certs init DIR --nodes N`.
fn certs_init(dir: &Path, nodes: u64) {
    let out = run(
        CLI,
        &[
            "certs",
            "init",
            &dir.display().to_string(),
            "--nodes",
            &nodes.to_string(),
        ],
    );
    assert!(out.status.success(), "certs init: {}", text(&out));
}

fn tls_for(certs: &Path, id: u64) -> TlsConfig {
    TlsConfig {
        ports: vec![
            TlsPort::Client,
            TlsPort::Redis,
            TlsPort::Http,
            TlsPort::Peer,
        ],
        cert_file: Some(certs.join(format!("node-{id}.pem"))),
        key_file: Some(certs.join(format!("node-{id}-key.pem"))),
        ca_file: Some(certs.join("ca.pem")),
        client_ca_file: None,
    }
}

/// A 3-node cluster with TLS on every port, certificates from `certs`.
fn tls_cluster(certs: &Path) -> Cluster {
    let certs = certs.to_path_buf();
    Cluster::start(3, move |config: &mut Config| {
        config.tls = tls_for(&certs, config.node_id);
    })
}

fn tls_options(certs: &Path) -> ClientOptions {
    ClientOptions {
        tls: Some(ClientTls::load(&certs.join("ca.pem"), None).expect("client tls")),
        ..options()
    }
}

/// The index of the leader, asked over TLS.
fn tls_leader(cluster: &Cluster, options: &ClientOptions) -> usize {
    let mut client = Client::connect(&cluster.addrs(), options.clone()).expect("client");
    let leader = eventually(|| client.find_leader());
    cluster
        .nodes
        .iter()
        .position(|n| n.id == leader.id)
        .expect("the leader is a member")
}

/// A 3-node TLS cluster, its certificates, client options that trust them, and the
/// index of its leader (asked over TLS).
struct TlsFixture {
    certs: tempfile::TempDir,
    cluster: Cluster,
    tls: ClientOptions,
    leader: usize,
}

fn tls_fixture() -> TlsFixture {
    let certs = tempfile::tempdir().expect("certs dir");
    certs_init(certs.path(), 3);
    let cluster = tls_cluster(certs.path());
    let tls = tls_options(certs.path());
    let leader = tls_leader(&cluster, &tls);
    TlsFixture {
        certs,
        cluster,
        tls,
        leader,
    }
}

fn metric(addr: &str, options: &ClientOptions, name: &str) -> u64 {
    let metrics = eventually(|| metrics_at(addr, options));
    metrics
        .iter()
        .find(|(n, _)| n == name)
        .map_or_else(|| panic!("no metric {name}"), |(_, v)| *v)
}

fn tool_available(tool: &str, test: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var_os("RAFTKV_REQUIRE_CLIENTS").is_none(),
            "RAFTKV_REQUIRE_CLIENTS is set but {tool} is missing"
        );
        eprintln!("SKIPPED part of {test}: {tool} is missing");
    }
    found
}

/// Waits until `log` (a node's log file) contains `needle`.
fn wait_log(cluster: &Cluster, i: usize, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cluster.log_text(i).contains(needle) {
        assert!(
            Instant::now() < deadline,
            "node {} never logged {needle:?}:\n{}",
            i + 1,
            cluster.log_text(i)
        );
        sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_tls_cluster_elects_serves_the_cli_and_refuses_plaintext_clients() {
    // A leader exists only if the mutual-TLS peer links work.
    let TlsFixture {
        certs,
        cluster,
        tls,
        leader,
    } = tls_fixture();
    let follower = (leader + 1) % 3;
    let ca = certs.path().join("ca.pem").display().to_string();

    let addr = cluster.addr(follower);
    let put = run(
        CLI,
        &[
            "--cluster",
            &addr,
            "--cacert",
            &ca,
            "put",
            "greeting",
            "hello over tls",
        ],
    );
    assert!(put.status.success(), "put: {}", text(&put));
    let get = run(
        CLI,
        &[
            "--cluster",
            &cluster.addr(leader),
            "--cacert",
            &ca,
            "get",
            "greeting",
        ],
    );
    assert!(get.status.success(), "get: {}", text(&get));
    assert_eq!(
        String::from_utf8_lossy(&get.stdout).trim(),
        "hello over tls"
    );

    // Plaintext to the TLS client port: a clean failure, counted and logged.
    let before = metric(&cluster.addr(leader), &tls, "net.tls_failures");
    let plain = ClientOptions {
        request_timeout: Duration::from_secs(2),
        ..options()
    };
    let started = Instant::now();
    let refused = raftkv::client::status_at(&cluster.addr(leader), &plain);
    assert!(
        refused.is_err(),
        "a plaintext client was served: {refused:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the refusal took {:?}",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&cluster.addr(leader), &tls, "net.tls_failures") <= before {
        assert!(
            Instant::now() < deadline,
            "the plaintext client was not counted"
        );
        sleep(Duration::from_millis(50));
    }
    wait_log(
        &cluster,
        leader,
        "TLS failure on a client connection with 127.0.0.1:",
    );

    // The CLI without --cacert fails too, and a CA that is not the cluster's is refused.
    let other = tempfile::tempdir().expect("other certs");
    certs_init(other.path(), 1);
    let other_ca = other.path().join("ca.pem").display().to_string();
    for args in [vec![], vec!["--cacert", other_ca.as_str()]] {
        let mut all = vec!["--cluster", addr.as_str(), "--timeout-ms", "2000"];
        all.extend(args.iter().copied());
        all.extend(["get", "greeting"]);
        let out = run(CLI, &all);
        assert!(!out.status.success(), "{all:?} succeeded: {}", text(&out));
    }
    // The cluster still serves.
    let get = run(
        CLI,
        &["--cluster", &addr, "--cacert", &ca, "get", "greeting"],
    );
    assert!(
        get.status.success(),
        "get after the refusals: {}",
        text(&get)
    );
}

#[test]
fn redis_cli_curl_and_openssl_reach_the_tls_ports() {
    let test = "redis_cli_curl_and_openssl_reach_the_tls_ports";
    let TlsFixture {
        certs,
        cluster,
        leader,
        ..
    } = tls_fixture();
    let follower = (leader + 1) % 3;
    let ca = certs.path().join("ca.pem").display().to_string();
    let node = &cluster.nodes[follower];

    if tool_available("redis-cli", test) {
        let port = node.redis_addr.port().to_string();
        let base = [
            "-h",
            "127.0.0.1",
            "-p",
            port.as_str(),
            "--tls",
            "--cacert",
            ca.as_str(),
        ];
        let redis = |args: &[&str]| {
            let mut all: Vec<&str> = base.to_vec();
            all.extend_from_slice(args);
            run("redis-cli", &all)
        };
        // A follower forwards the write to the leader over the TLS forwarding link.
        let set = redis(&["set", "via-redis", "secure"]);
        assert_eq!(
            String::from_utf8_lossy(&set.stdout).trim(),
            "OK",
            "{}",
            text(&set)
        );
        let get = redis(&["get", "via-redis"]);
        assert_eq!(
            String::from_utf8_lossy(&get.stdout).trim(),
            "secure",
            "{}",
            text(&get)
        );
        let plain = run("redis-cli", &["-h", "127.0.0.1", "-p", &port, "ping"]);
        assert!(
            !String::from_utf8_lossy(&plain.stdout).contains("PONG"),
            "plaintext redis-cli was answered: {}",
            text(&plain)
        );
    }

    if tool_available("curl", test) {
        let http = node.http_addr.expect("http address");
        let url = format!("https://{http}/kv/via-redis-or-http");
        let put = run(
            "curl",
            &[
                "-sS",
                "--cacert",
                &ca,
                "-X",
                "PUT",
                &url,
                "-d",
                "{\"value\": \"from curl\"}",
            ],
        );
        assert!(put.status.success(), "curl PUT: {}", text(&put));
        let get = run("curl", &["-sS", "--cacert", &ca, &url]);
        assert!(
            String::from_utf8_lossy(&get.stdout).contains("from curl"),
            "curl GET: {}",
            text(&get)
        );
        let plain = run(
            "curl",
            &["-sS", "--max-time", "5", &format!("http://{http}/health")],
        );
        assert!(
            !plain.status.success(),
            "plaintext HTTP was answered: {}",
            text(&plain)
        );
    }

    if tool_available("openssl", test) {
        let connect = node.client_addr.to_string();
        let out = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &connect,
                "-CAfile",
                &ca,
                "-verify_return_error",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("openssl");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("Verify return code: 0 (ok)"),
            "{}",
            text(&out)
        );
        let subject = format!("raftkv node {}", node.id);
        assert!(
            stdout.contains(&subject),
            "no {subject:?} in: {}",
            text(&out)
        );
    }
}

/// A TLS connection to `addr` that verifies the server as `server_name` and presents
/// `identity`; the handshake is completed (or its error returned).
fn raw_tls(
    addr: &str,
    ca: &Path,
    identity: (&Path, &Path),
    server_name: &str,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let tls = ClientTls::load(ca, Some(identity)).expect("client tls");
    let session = tls.session_named(server_name).expect("session");
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut stream = rustls::StreamOwned::new(session, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// Sends a peer handshake claiming `node_id` and waits for the node to close the link.
fn claim_and_wait_close(stream: &mut impl ReadWrite, cluster_id: u64, node_id: u64) -> bool {
    let frame = PeerFrame::Handshake {
        cluster_id,
        node_id,
        peer_addr: "127.0.0.1:1".into(),
        nonce: None,
    };
    let mut bytes = Vec::new();
    FrameCodec::new(1 << 20)
        .encode_with(&mut bytes, |out| peer::encode(&frame, out))
        .expect("frame");
    if stream
        .write_all(&bytes)
        .and_then(|()| stream.flush())
        .is_err()
    {
        return true;
    }
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return true,
            Ok(_) => {}
        }
    }
    false
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

#[test]
fn peers_with_a_foreign_certificate_or_another_members_are_refused_and_logged() {
    let TlsFixture {
        certs,
        cluster,
        tls,
        leader,
    } = tls_fixture();
    let target = (leader + 1) % 3;
    let peer_addr = cluster.nodes[target].peer_addr.to_string();
    let target_name = format!("node-{}", cluster.nodes[target].id);
    let cluster_id = Config::load(&cluster.nodes[0].config_path)
        .expect("config")
        .cluster_id;
    let ca = certs.path().join("ca.pem");
    let before = metric(&cluster.addr(target), &tls, "net.tls_failures");

    // A certificate from another CA: the handshake fails.
    let other = tempfile::tempdir().expect("other certs");
    certs_init(other.path(), 3);
    let foreign = (
        other.path().join("node-3.pem"),
        other.path().join("node-3-key.pem"),
    );
    let handshake =
        raw_tls(&peer_addr, &ca, (&foreign.0, &foreign.1), &target_name).and_then(|mut stream| {
            // TLS 1.3: the server's verdict on the client certificate arrives after the
            // client's side of the handshake is done, with the first read.
            let mut buf = [0u8; 1];
            match stream.read(&mut buf) {
                Ok(0) => Err(std::io::Error::other("closed")),
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            }
        });
    assert!(
        handshake.is_err(),
        "a certificate of another CA was accepted"
    );

    // A certificate of this cluster's CA for one member, claiming to be another.
    let leader_id = cluster.nodes[leader].id;
    let claimed = (1..=3)
        .find(|&id| id != leader_id && id != cluster.nodes[target].id)
        .expect("a third member");
    let own = (
        certs.path().join(format!("node-{leader_id}.pem")),
        certs.path().join(format!("node-{leader_id}-key.pem")),
    );
    let mut stream = raw_tls(&peer_addr, &ca, (&own.0, &own.1), &target_name).expect("tls");
    assert!(
        claim_and_wait_close(&mut stream, cluster_id, claimed),
        "a link claiming node {claimed} with node {leader_id}'s certificate stayed open"
    );
    wait_log(
        &cluster,
        target,
        &format!("certificate does not name node-{claimed}"),
    );
    wait_log(
        &cluster,
        target,
        "TLS failure on an unidentified inbound peer link with 127.0.0.1:",
    );
    let after = metric(&cluster.addr(target), &tls, "net.tls_failures");
    assert!(after >= before + 2, "tls_failures {before} -> {after}");

    // A plaintext peer handshake on the TLS peer port is refused too.
    let mut plain = TcpStream::connect(&peer_addr).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert!(
        claim_and_wait_close(&mut plain, cluster_id, claimed),
        "plaintext peer stayed open"
    );

    // The cluster is undisturbed.
    let mut client = Client::connect(&cluster.addrs(), tls.clone()).expect("client");
    eventually(|| client.put(b"after the intruders", b"fine"));
    assert_eq!(tls_leader(&cluster, &tls), leader, "the leader changed");
}

/// The leaf certificate a TLS client receives from `addr`.
fn served_certificate(addr: &str, ca: &Path) -> Vec<u8> {
    let tls = ClientTls::load(ca, None).expect("client tls");
    let session = tls.session(addr).expect("session");
    let mut tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut session = session;
    while session.is_handshaking() {
        session.complete_io(&mut tcp).expect("handshake");
    }
    session.peer_certificates().expect("certificates")[0].to_vec()
}

#[test]
fn sighup_rotates_certificates_for_new_connections_while_open_ones_go_on() {
    let TlsFixture {
        certs,
        cluster,
        tls,
        leader,
    } = tls_fixture();
    let ca = certs.path().join("ca.pem");
    let addr = cluster.addr(leader);
    let id = cluster.nodes[leader].id;
    let old = served_certificate(&addr, &ca);
    assert_eq!(
        old,
        load_certificates(&certs.path().join(format!("node-{id}.pem"))).unwrap()[0].to_vec()
    );

    // An open connection, made with the old certificate.
    let mut open = Client::connect(std::slice::from_ref(&addr), tls.clone()).expect("client");
    eventually(|| open.put(b"before", b"rotation"));

    // New certificates from the same CA, written over the old files.
    let fresh = tempfile::tempdir().expect("fresh dir");
    for file in ["ca.pem", "ca-key.pem"] {
        std::fs::copy(certs.path().join(file), fresh.path().join(file)).expect("copy ca");
    }
    certs_init(fresh.path(), 3);
    for file in [format!("node-{id}.pem"), format!("node-{id}-key.pem")] {
        std::fs::copy(fresh.path().join(&file), certs.path().join(&file)).expect("rotate");
    }
    let pid = cluster.pid(leader).expect("pid");
    let hup = run("kill", &["-HUP", &pid.to_string()]);
    assert!(hup.status.success(), "kill -HUP: {}", text(&hup));
    wait_log(&cluster, leader, "TLS certificates reloaded");

    let new = served_certificate(&addr, &ca);
    assert_ne!(new, old, "a new connection still got the old certificate");
    assert_eq!(
        new,
        load_certificates(&certs.path().join(format!("node-{id}.pem"))).unwrap()[0].to_vec()
    );
    // The connection opened before the rotation goes on.
    open.put(b"after", b"rotation")
        .expect("the open connection still works");
    assert_eq!(
        open.get(b"before").expect("get"),
        Some(b"rotation".to_vec())
    );

    // A reload that cannot read its files keeps the running certificates.
    std::fs::write(certs.path().join(format!("node-{id}.pem")), "garbage").expect("break");
    let hup = run("kill", &["-HUP", &pid.to_string()]);
    assert!(hup.status.success());
    wait_log(
        &cluster,
        leader,
        "TLS reload failed, keeping the running certificates",
    );
    assert_eq!(served_certificate(&addr, &ca), new);
}

/// Goal: a client that opens a TLS connection and stalls in the handshake (half a
/// ClientHello, then nothing) is closed by the idle timeout and does not hold up other
/// clients. Method: `client_idle_timeout_ms = 1000`, a raw TCP connection that sends a
/// TLS record header and 3 bytes of its body, a TLS client served meanwhile.
#[test]
fn a_client_stalled_in_the_tls_handshake_is_closed_by_the_idle_timeout() {
    let certs = tempfile::tempdir().expect("certs dir");
    certs_init(certs.path(), 3);
    let certs_dir = certs.path().to_path_buf();
    let cluster = Cluster::start(3, move |config: &mut Config| {
        config.tls = tls_for(&certs_dir, config.node_id);
        config.limits.client_idle_timeout_ms = 1000;
    });
    let tls = tls_options(certs.path());
    let leader = tls_leader(&cluster, &tls);
    let mut stalled = TcpStream::connect(cluster.addr(leader)).expect("connect");
    // A handshake record announcing 512 bytes, of which 3 arrive.
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01])
        .expect("write");
    let started = Instant::now();
    let mut client = Client::connect(&[cluster.addr(leader)], tls.clone()).expect("client");
    eventually(|| client.put(b"while stalled", b"served"));
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    let closed = matches!(stalled.read(&mut buf), Ok(0) | Err(_));
    assert!(closed, "the stalled handshake got an answer");
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "closed only after {:?}",
        started.elapsed()
    );
}

#[test]
fn a_node_whose_tls_file_cannot_be_used_exits_2_naming_it() {
    let certs = tempfile::tempdir().expect("certs dir");
    certs_init(certs.path(), 1);
    let missing: PathBuf = certs.path().join("no-such-cert.pem");
    let mut cluster = Cluster::configure(1, |config| {
        config.tls = TlsConfig {
            cert_file: Some(missing.clone()),
            ..tls_for(certs.path(), config.node_id)
        };
    });
    cluster.start_node(0);
    let status = cluster
        .wait_exit(0, Duration::from_secs(10))
        .expect("the node exited");
    assert_eq!(status.code(), Some(2), "{}", cluster.log_text(0));
    assert!(
        cluster.log_text(0).contains("no-such-cert.pem"),
        "{}",
        cluster.log_text(0)
    );
}
