//! raftkv-cli with binary values and range reads, against a real 3-node cluster (issue 19
//! §2 and §6): `put KEY -` stores stdin byte for byte (NUL, CR, LF, invalid UTF-8),
//! `get --raw` writes it back unchanged, `--hex` both ways, and `range` answers the keys
//! of a range, a prefix, a limit, keys only and a count, in key order, across the
//! native protocol's 1 MiB pages; `put --ttl` writes a key that expires by the
//! leader's clock and `ttl` reports the time it has left (issue 19 §1).

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::{Cluster, eventually};

const CLI: &str = env!("CARGO_BIN_EXE_raftkv-cli");

fn cli(addrs: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(CLI)
        .arg("--cluster")
        .arg(addrs)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run raftkv-cli");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("raftkv-cli output")
}

fn ok(addrs: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let out = cli(addrs, args, stdin);
    assert!(
        out.status.success(),
        "raftkv-cli {args:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Goal: `put --ttl` sets a key that `ttl` shows counting down and that then expires
/// (get exits 1), a key without one shows -1, an absent key exits 1, and a TTL of 0 is a
/// usage error. Method: the CLI against a real cluster, a 2 s TTL.
#[test]
fn put_with_a_ttl_expires_and_ttl_reports_the_time_left() {
    let cluster = Cluster::start(3, |_| {});
    let addrs = cluster.addrs().join(",");
    let mut client = cluster.client();
    eventually(|| client.put(b"warm", b"up"));
    let put_at = std::time::Instant::now();
    assert_eq!(
        ok(&addrs, &["put", "lease", "held", "--ttl", "2"], b""),
        b"OK
"
    );
    let seconds = String::from_utf8(ok(&addrs, &["ttl", "lease"], b"")).unwrap();
    assert!(
        ["1\n", "2\n"].contains(&seconds.as_str()),
        "ttl: {seconds:?}"
    );
    let ms: u64 = String::from_utf8(ok(&addrs, &["ttl", "lease", "--ms"], b""))
        .unwrap()
        .trim()
        .parse()
        .expect("milliseconds");
    assert!((1..=2000).contains(&ms), "ttl --ms: {ms}");
    assert_eq!(ok(&addrs, &["get", "lease"], b""), b"held\n");
    assert_eq!(ok(&addrs, &["ttl", "warm"], b""), b"-1\n");
    assert_eq!(
        cli(&addrs, &["ttl", "no such key"], b"").status.code(),
        Some(1)
    );
    assert_eq!(
        cli(&addrs, &["put", "k", "v", "--ttl", "0"], b"")
            .status
            .code(),
        Some(2)
    );
    let deadline = put_at + std::time::Duration::from_secs(15);
    while cli(&addrs, &["get", "lease"], b"").status.code() != Some(1) {
        assert!(
            std::time::Instant::now() < deadline,
            "the key never expired"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        put_at.elapsed() >= std::time::Duration::from_millis(1500),
        "expired after only {:?}",
        put_at.elapsed()
    );
    assert_eq!(cli(&addrs, &["ttl", "lease"], b"").status.code(), Some(1));
}

/// Goal: a value with every byte value survives `put -` then `get --raw` exactly, and
/// `--hex` encodes and decodes it; a bad hex value is a usage error (exit 2).
#[test]
fn binary_values_round_trip_through_stdin_raw_and_hex() {
    let cluster = Cluster::start(3, |_| {});
    let addrs = cluster.addrs().join(",");
    let mut client = cluster.client();
    eventually(|| client.put(b"warm", b"up"));
    let value: Vec<u8> = (0..=255u8).chain(*b"\r\n\0 end\n").collect();
    assert_eq!(ok(&addrs, &["put", "bin", "-"], &value), b"OK\n");
    assert_eq!(ok(&addrs, &["get", "bin", "--raw"], b""), value);
    assert_eq!(client.get(b"bin").unwrap().as_deref(), Some(&value[..]));
    let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        ok(&addrs, &["get", "bin", "--hex"], b""),
        format!("{hex}\n").into_bytes()
    );
    assert_eq!(ok(&addrs, &["put", "h", &hex, "--hex"], b""), b"OK\n");
    assert_eq!(ok(&addrs, &["get", "h", "--raw"], b""), value);
    assert_eq!(ok(&addrs, &["put", "h2", "-", "--hex"], b"00ff\n"), b"OK\n");
    assert_eq!(client.get(b"h2").unwrap(), Some(vec![0, 255]));
    assert_eq!(
        cli(&addrs, &["put", "bad", "0g", "--hex"], b"")
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        ok(&addrs, &["get", "warm"], b""),
        b"up\n",
        "the default output"
    );
}

/// Goal: `range` prints the keys of [START, END), of a prefix, up to a limit, keys only
/// or counted, in key order, also when the answer takes several 1 MiB pages.
#[test]
fn range_reads_prefixes_limits_and_counts() {
    let cluster = Cluster::start(3, |_| {});
    let addrs = cluster.addrs().join(",");
    let mut client = cluster.client();
    for key in ["a", "b/1", "b/2", "b/3", "c"] {
        eventually(|| client.put(key.as_bytes(), format!("v{key}").as_bytes()));
    }
    // 40 values of 64 KiB: 2.5 MiB, three pages.
    let big = vec![b'x'; 64 * 1024];
    for i in 0..40 {
        client.put(format!("z/{i:02}").as_bytes(), &big).unwrap();
    }
    let lines = |out: Vec<u8>| -> Vec<String> {
        String::from_utf8_lossy(&out)
            .lines()
            .map(str::to_string)
            .collect()
    };
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["range", "b/", "c"],
            vec!["b/1", "vb/1", "b/2", "vb/2", "b/3", "vb/3"],
        ),
        (
            vec!["range", "--prefix", "b/", "--keys-only"],
            vec!["b/1", "b/2", "b/3"],
        ),
        (
            vec!["range", "b/", "--limit", "2", "--keys-only"],
            vec!["b/1", "b/2"],
        ),
        (vec!["range", "--prefix", "b/", "--count"], vec!["3"]),
        (vec!["range", "--count"], vec!["45"]),
        (vec!["range", "--prefix", "nothing"], vec![]),
        (vec!["range", "c", "d", "--stale", "--keys-only"], vec!["c"]),
        (
            vec![
                "range",
                "--prefix",
                "62",
                "--hex",
                "--keys-only",
                "--limit",
                "1",
            ],
            vec!["622f31"],
        ),
    ];
    for (i, (args, want)) in cases.into_iter().enumerate() {
        let got = eventually(|| {
            let out = cli(&addrs, &args, b"");
            if out.status.success() {
                Ok(lines(out.stdout))
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        });
        assert_eq!(got, want, "#{i}: {args:?}");
    }
    let big_keys = lines(ok(&addrs, &["range", "--prefix", "z/"], b""));
    assert_eq!(big_keys.len(), 80, "40 keys and their values across pages");
    let want: Vec<String> = (0..40).map(|i| format!("z/{i:02}")).collect();
    let got: Vec<String> = big_keys.iter().step_by(2).cloned().collect();
    assert_eq!(got, want);
}

/// Goal: `get --raw` into a full disk (`/dev/full`) fails with a message on stderr and
/// exit 5 instead of exiting 0 with the value lost; into a pipe whose reader has gone
/// (`| head -c0`) it is not an error (exit 0).
#[test]
fn a_failed_stdout_is_an_error_and_a_closed_pipe_is_not() {
    let cluster = Cluster::start(3, |_| {});
    let addrs = cluster.addrs().join(",");
    let mut client = cluster.client();
    let value = vec![b'x'; 1 << 20];
    eventually(|| client.put(b"big", &value));

    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("open /dev/full");
    let out = Command::new(CLI)
        .args(["--cluster", &addrs, "get", "big", "--raw"])
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .expect("run raftkv-cli");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("writing to stdout"), "{stderr}");

    let mut child = Command::new(CLI)
        .args(["--cluster", &addrs, "get", "big", "--raw"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run raftkv-cli");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("raftkv-cli output");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
