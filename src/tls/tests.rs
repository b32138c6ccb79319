//! Goal: `certs init` writes certificates that the configurations load, a handshake
//! verifies them against the name dialed, and foreign or broken files are refused with
//! the file named. Method: certificates in temporary directories and rustls sessions
//! joined in memory (no sockets).

use std::os::unix::fs::PermissionsExt;

use super::certs::{self, member_name};
use super::*;

/// Moves TLS bytes between the two sessions until neither has any to send; the first
/// error of either side ends it.
fn handshake(
    client: &mut rustls::ClientConnection,
    server: &mut rustls::ServerConnection,
) -> Result<(), rustls::Error> {
    for _ in 0..20 {
        let mut to_server = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut to_server).expect("buffer");
        }
        if !to_server.is_empty() {
            server.read_tls(&mut to_server.as_slice()).expect("read");
            server.process_new_packets()?;
        }
        let mut to_client = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut to_client).expect("buffer");
        }
        if !to_client.is_empty() {
            client.read_tls(&mut to_client.as_slice()).expect("read");
            client.process_new_packets()?;
        }
        if to_server.is_empty() && to_client.is_empty() {
            break;
        }
    }
    Ok(())
}

fn node_server(dir: &Path, id: u64, client_ca: bool) -> ServerTls {
    let base = dir.join(member_name(id));
    let ca = dir.join("ca.pem");
    ServerTls::load(
        &base.with_extension("pem"),
        &PathBuf::from(format!("{}-key.pem", base.display())),
        client_ca.then_some(ca.as_path()),
    )
    .expect("server config")
}

#[test]
fn init_writes_a_ca_and_certificates_that_verify_by_ip_and_member_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = certs::init(dir.path(), &[1, 2, 3], &[]).expect("init");
    assert_eq!(report.written.len(), 2 + 3 * 2 + 2, "{report:?}");
    let key_mode = fs_mode(&dir.path().join("node-2-key.pem"));
    assert_eq!(key_mode & 0o777, 0o600, "a private key readable by others");
    let server = node_server(dir.path(), 2, false);
    let client = ClientTls::load(&dir.path().join("ca.pem"), None).expect("client config");
    for addr in ["127.0.0.1:7001", "localhost:7001", "node-2:7000"] {
        let mut c = client.session(addr).expect("session");
        let mut s = server.session().expect("session");
        handshake(&mut c, &mut s).unwrap_or_else(|e| panic!("{addr}: {e}"));
        assert!(!c.is_handshaking() && !s.is_handshaking(), "{addr}");
    }
    // A name the certificate does not carry is refused.
    let mut c = client.session("10.1.2.3:7001").expect("session");
    let mut s = server.session().expect("session");
    assert!(
        handshake(&mut c, &mut s).is_err(),
        "an unnamed address was accepted"
    );
}

#[test]
fn a_certificate_of_another_ca_is_refused_in_both_directions() {
    let ours = tempfile::tempdir().expect("tempdir");
    let theirs = tempfile::tempdir().expect("tempdir");
    certs::init(ours.path(), &[1], &[]).expect("init");
    certs::init(theirs.path(), &[1], &[]).expect("init");
    let client = ClientTls::load(&ours.path().join("ca.pem"), None).expect("client");
    let mut c = client.session("127.0.0.1:1").expect("session");
    let mut s = node_server(theirs.path(), 1, false)
        .session()
        .expect("session");
    assert!(
        handshake(&mut c, &mut s).is_err(),
        "a foreign server was trusted"
    );

    // A server that requires client certificates refuses a foreign one and none.
    let foreign = ClientTls::load(
        &ours.path().join("ca.pem"),
        Some((
            &theirs.path().join("client.pem"),
            &theirs.path().join("client-key.pem"),
        )),
    )
    .expect("client");
    let server = node_server(ours.path(), 1, true);
    for client in [foreign, client] {
        let mut c = client.session("127.0.0.1:1").expect("session");
        let mut s = server.session().expect("session");
        assert!(
            handshake(&mut c, &mut s).is_err(),
            "a client without our certificate got in"
        );
    }
    let own = ClientTls::load(
        &ours.path().join("ca.pem"),
        Some((
            &ours.path().join("client.pem"),
            &ours.path().join("client-key.pem"),
        )),
    )
    .expect("client");
    let mut c = own.session("127.0.0.1:1").expect("session");
    let mut s = server.session().expect("session");
    handshake(&mut c, &mut s).expect("our client certificate is accepted");
}

#[test]
fn a_second_init_keeps_the_ca_and_adds_nodes_that_chain_to_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs::init(dir.path(), &[1, 2], &[]).expect("init");
    let ca_before = std::fs::read(dir.path().join("ca.pem")).expect("ca");
    let report = certs::init(dir.path(), &[1, 2, 3], &["db.example".to_string()]).expect("again");
    assert_eq!(
        std::fs::read(dir.path().join("ca.pem")).expect("ca"),
        ca_before
    );
    assert_eq!(
        report.written,
        vec![
            dir.path().join("node-3.pem"),
            dir.path().join("node-3-key.pem")
        ]
    );
    let client = ClientTls::load(&dir.path().join("ca.pem"), None).expect("client");
    for (id, addr) in [(3, "db.example:7001"), (1, "127.0.0.1:7001")] {
        let mut c = client.session(addr).expect("session");
        let mut s = node_server(dir.path(), id, false)
            .session()
            .expect("session");
        handshake(&mut c, &mut s).unwrap_or_else(|e| panic!("node {id}: {e}"));
    }
}

#[test]
fn unusable_files_are_named_in_the_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs::init(dir.path(), &[1], &[]).expect("init");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let missing = dir.path().join("missing.pem");
    let key = dir.path().join("node-1-key.pem");
    for (cert, key) in [
        (&garbage, &key),
        (&missing, &key),
        (&dir.path().join("node-1.pem"), &garbage),
    ] {
        let error = ServerTls::load(cert, key, None).expect_err("loaded");
        let text = error.to_string();
        let named = [cert, key]
            .iter()
            .any(|p| text.contains(&p.display().to_string()));
        assert!(named, "{text}");
    }
    // A key that is not the certificate's: rustls refuses the pair, both files named.
    certs::init(&dir.path().join("other"), &[1], &[]).expect("init");
    let other_key = dir.path().join("other/node-1-key.pem");
    let error = ServerTls::load(&dir.path().join("node-1.pem"), &other_key, None)
        .expect_err("a mismatched key was accepted");
    assert!(error.to_string().contains("node-1.pem"), "{error}");
}

fn fs_mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
}
