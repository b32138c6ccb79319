//! The CPU cost of TLS per connection and per byte, both sides in one process (no
//! sockets): a full handshake between a client and a server session with certificates
//! from `raftkv::tls::certs` (ECDSA P-256, as `certs init` writes them), once with only
//! the server presenting a certificate (the client ports) and once mutual (the peer
//! links); and encrypting plus decrypting 64 KiB of application data on an established
//! session (what a busy connection pays per byte).

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use raftkv::tls::{ClientTls, ServerTls, certs};

/// Moves records between the sessions until neither has any to send.
fn pump(client: &mut rustls::ClientConnection, server: &mut rustls::ServerConnection) {
    loop {
        let mut moved = false;
        let mut buffer = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buffer).expect("client records");
        }
        if !buffer.is_empty() {
            moved = true;
            let mut input = buffer.as_slice();
            while !input.is_empty() {
                server.read_tls(&mut input).expect("server reads");
                server.process_new_packets().expect("server accepts");
            }
        }
        buffer.clear();
        while server.wants_write() {
            server.write_tls(&mut buffer).expect("server records");
        }
        if !buffer.is_empty() {
            moved = true;
            let mut input = buffer.as_slice();
            while !input.is_empty() {
                client.read_tls(&mut input).expect("client reads");
                client.process_new_packets().expect("client accepts");
            }
        }
        if !moved {
            return;
        }
    }
}

fn configs(dir: &Path, mutual: bool) -> (ClientTls, ServerTls) {
    let ca = dir.join("ca.pem");
    let identity = (dir.join("client.pem"), dir.join("client-key.pem"));
    let client = ClientTls::load(
        &ca,
        mutual.then_some((identity.0.as_path(), identity.1.as_path())),
    )
    .expect("client config");
    let server = ServerTls::load(
        &dir.join("node-1.pem"),
        &dir.join("node-1-key.pem"),
        mutual.then_some(ca.as_path()),
    )
    .expect("server config");
    (client, server)
}

fn handshakes(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    certs::init(dir.path(), &[1], &[]).expect("certificates");
    let mut group = c.benchmark_group("tls_handshake");
    for (name, mutual) in [("server_certificate", false), ("mutual", true)] {
        let (client, server) = configs(dir.path(), mutual);
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut c = client.session("127.0.0.1:7001").expect("session");
                let mut s = server.session().expect("session");
                pump(&mut c, &mut s);
                assert!(!c.is_handshaking() && !s.is_handshaking());
                black_box((c, s))
            });
        });
    }
    group.finish();
}

fn records(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    certs::init(dir.path(), &[1], &[]).expect("certificates");
    let (client, server) = configs(dir.path(), false);
    let mut c_session = client.session("127.0.0.1:7001").expect("session");
    let mut s_session = server.session().expect("session");
    pump(&mut c_session, &mut s_session);
    let payload = vec![0x5a_u8; 64 * 1024];
    let mut received = vec![0_u8; payload.len()];
    let mut group = c.benchmark_group("tls_records");
    group.throughput(Throughput::Bytes(payload.len() as u64));
    group.bench_function("encrypt_decrypt_64k", |b| {
        b.iter(|| {
            use std::io::{Read, Write};
            // 16 KiB at a time: the receiver holds at most that much unread plaintext.
            for (piece, out) in payload
                .chunks(16 * 1024)
                .zip(received.chunks_mut(16 * 1024))
            {
                c_session.writer().write_all(piece).expect("write");
                pump(&mut c_session, &mut s_session);
                s_session.reader().read_exact(out).expect("read");
            }
            black_box(&received);
        });
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    handshakes(&mut criterion);
    records(&mut criterion);
    criterion.final_summary();
}
