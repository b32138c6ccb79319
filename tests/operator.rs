//! What an operator sees, against the real binaries: `raftkv-cli status` exit codes, the
//! metrics documented in docs/CONFIG.md moving under writes, `raftkv-server local`
//! (paste-ready lines, resume, a node exiting while the others serve), usage errors for
//! malformed addresses, a listen address in use named with its config key, the CLI at a
//! Redis port, and node ports a restarted node gets back (issue 13, items 8 and 9).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::Cluster;
use raftkv::config::Config;
use raftkv::server::local::write_local_configs;
use raftkv::server::ports::{PORT_FLOOR, lease_port};

const CLI: &str = env!("CARGO_BIN_EXE_raftkv-cli");
const SERVER: &str = env!("CARGO_BIN_EXE_raftkv-server");

/// Runs `raftkv-cli ARGS` (each call bounded by the CLI's own `--timeout-ms`).
fn cli(args: &[&str]) -> Output {
    Command::new(CLI)
        .args(args)
        .output()
        .expect("run raftkv-cli")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `raftkv-cli --cluster ADDRS status` until its exit code is `want` (at most
/// `timeout`); returns that run's stderr.
fn status_until(addrs: &str, want: i32, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let out = cli(&["--cluster", addrs, "--timeout-ms", "2000", "status"]);
        if out.status.code() == Some(want) {
            return text(&out.stderr);
        }
        assert!(
            Instant::now() < deadline,
            "status did not exit {want} within {timeout:?}: {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        sleep(Duration::from_millis(200));
    }
}

/// Goal: `status` exits 0 for a whole cluster, 6 naming the member that is down, and 4
/// saying no leader is known once two of three are down (etcdctl exits non-zero too).
/// Method: a real 3-node cluster; kill -9 a follower, then the leader.
#[test]
fn status_exit_code_names_a_member_down_and_no_leader() {
    let mut cluster = Cluster::start(3, |_| {});
    let leader = cluster.leader();
    let addrs = cluster.addrs().join(",");
    let whole = status_until(&addrs, 0, Duration::from_secs(10));
    assert!(whole.is_empty(), "{whole}");
    let follower = (leader + 1) % 3;
    cluster.kill(follower);
    let stderr = status_until(&addrs, 6, Duration::from_secs(10));
    let down = format!(
        "member {} ({}) does not answer",
        cluster.nodes[follower].id,
        cluster.addr(follower)
    );
    assert!(stderr.contains(&down), "{stderr}");
    cluster.kill(leader);
    // The survivor keeps naming the old leader until its election timeout.
    let stderr = status_until(&addrs, 4, Duration::from_secs(15));
    assert!(stderr.contains("no leader known"), "{stderr}");
}

/// A documented metric: its name pattern (`<id>` stands for a member id) and kind.
struct Documented {
    pattern: String,
    kind: String,
}

/// The metrics table of docs/CONFIG.md, `/ .p99`-style suffixes expanded.
fn documented_metrics() -> Vec<Documented> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/CONFIG.md");
    let doc = std::fs::read_to_string(&path).expect("docs/CONFIG.md");
    let section = doc.split("\n## Metrics").nth(1).expect("a Metrics section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut documented = Vec::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (names, kind) = (cells[1], cells[2].to_string());
        let names: Vec<&str> = names.split('`').skip(1).step_by(2).collect();
        let first = names[0];
        for name in &names {
            let pattern = match name.strip_prefix('.') {
                Some(suffix) => format!("{}.{suffix}", &first[..first.rfind('.').unwrap()]),
                None => name.to_string(),
            };
            documented.push(Documented {
                pattern,
                kind: kind.clone(),
            });
        }
    }
    assert!(documented.len() > 20, "metrics table not found in {path:?}");
    documented
}

/// Whether `name` is an instance of `pattern` (`<id>` = one or more digits).
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once("<id>") {
        None => pattern == name,
        Some((prefix, suffix)) => name
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(suffix))
            .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())),
    }
}

/// Every node's metrics, by node address, through `raftkv-cli status --verbose --json`.
fn metrics(addrs: &str) -> BTreeMap<String, BTreeMap<String, u64>> {
    let out = cli(&["--cluster", addrs, "status", "--verbose", "--json"]);
    assert!(out.status.success(), "status: {}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let mut by_node = BTreeMap::new();
    for node in json["nodes"].as_array().expect("nodes") {
        let metrics = node["metrics"].as_object().expect("metrics of every node");
        let values = metrics
            .iter()
            .map(|(name, value)| (name.clone(), value.as_u64().expect("u64")))
            .collect();
        by_node.insert(node["address"].as_str().unwrap().to_string(), values);
    }
    by_node
}

/// Metrics that writes alone do not move, with the reason; each must still be reported.
const NEEDS_FAULT: [(&str, &str); 17] = [
    (
        "kv_expiring_keys",
        "keys written with a TTL (tests/redis_expiry.rs)",
    ),
    (
        "kv_expired_keys",
        "keys whose TTL passed (tests/redis_expiry.rs)",
    ),
    (
        "net.peer_auth_failures",
        "a peer that fails the cluster-secret handshake (tests/auth_peers.rs)",
    ),
    (
        "net.client_auth_failures",
        "a wrong password or a missing permission (tests/auth_clients.rs)",
    ),
    (
        "net.tls_failures",
        "a failed TLS handshake on a TLS port (tests/tls.rs)",
    ),
    (
        "loop.slow_turns",
        "a loop turn longer than half the heartbeat: a stall",
    ),
    (
        "storage.fsync.slow_count",
        "an fsync longer than slow_fsync_warn_ms: a slow disk",
    ),
    (
        "peer.<id>.disconnects",
        "a lost peer link: a crash or a partition",
    ),
    (
        "storage.alarm_nospace",
        "a full disk (tests/hostile_storage.rs)",
    ),
    (
        "storage.nospace_alarms",
        "a full disk (tests/hostile_storage.rs)",
    ),
    (
        "net.peer_handshakes",
        "an inbound peer connection that has not identified itself (tests/hostile_connections.rs)",
    ),
    (
        "net.accepts_refused",
        "more clients than client_connections_max (tests/hostile_connections.rs)",
    ),
    (
        "net.idle_timeouts",
        "a client idle past client_idle_timeout_ms (tests/hostile_connections.rs)",
    ),
    (
        "net.partial_request_timeouts",
        "a request left half-sent: slowloris (tests/hostile_connections.rs)",
    ),
    (
        "net.handshake_timeouts",
        "a peer connection that never sends its handshake (tests/hostile_connections.rs)",
    ),
    (
        "net.reads_paused",
        "a client that pipelines without reading its replies (tests/hostile_connections.rs)",
    ),
    (
        "net.output_limit_disconnects",
        "a client that owes more than output_bytes_max (tests/hostile_connections.rs)",
    ),
];

/// Metrics set while the cluster starts (the election, the peer links), before any
/// write: checked to be non-zero, not to move. `loop.turn_us_max_recent` is a maximum
/// over the last 10-20 s: the longest turn is often the start's, so 200 writes need not
/// change it.
const SET_AT_START: [&str; 6] = [
    "loop.turn_us_max_recent",
    "raft.elections_started",
    "raft.elections_won",
    "raft.leader_changes",
    "peer.<id>.connected",
    "peer.<id>.connects",
];

/// Goal: every metric listed in docs/CONFIG.md moves in a cluster that takes writes
/// (`raft.commit_index` and `raft.committed_entries` stayed 0), apart from an explicit
/// list of those that need a fault; and every metric a node reports is documented.
/// Method: a real 3-node cluster with a small snapshot threshold (so snapshots happen);
/// metrics through the CLI before and after 200 writes. Counters and gauges must change
/// on some node; histogram entries must be non-zero on some node afterwards.
#[test]
fn documented_metrics_move_under_writes() {
    let cluster = Cluster::start(3, |config| config.snapshot.threshold_entries = 50);
    let leader = cluster.leader();
    let addrs = cluster.addrs().join(",");
    let before = metrics(&addrs);
    let mut client = cluster.client();
    for i in 0..200 {
        client
            .put(format!("key-{i}").as_bytes(), b"value")
            .expect("put");
    }
    let applied = cluster.applied(leader);
    for i in 0..3 {
        cluster.wait_applied(i, applied);
    }
    let after = metrics(&addrs);
    let documented = documented_metrics();
    let mut failures = Vec::new();
    for metric in &documented {
        let pattern = metric.pattern.as_str();
        let instances: Vec<(&String, &String, u64)> = after
            .iter()
            .flat_map(|(node, values)| values.iter().map(move |(n, v)| (node, n, *v)))
            .filter(|(_, name, _)| matches(pattern, name))
            .collect();
        if instances.is_empty() {
            failures.push(format!("{pattern}: documented but no node reports it"));
            continue;
        }
        if NEEDS_FAULT.iter().any(|(name, _)| *name == pattern) {
            continue;
        }
        let nonzero = instances.iter().any(|(_, _, value)| *value > 0);
        let moved = instances.iter().any(|(node, name, value)| {
            before.get(*node).and_then(|values| values.get(*name)) != Some(value)
        });
        let ok = if SET_AT_START.contains(&pattern) || metric.kind == "histogram" {
            nonzero
        } else {
            moved
        };
        if !ok {
            failures.push(format!(
                "{pattern} ({}) did not move under writes: {instances:?}; if it needs a \
                 fault, add it to NEEDS_FAULT with the reason",
                metric.kind
            ));
        }
    }
    let reported: BTreeSet<&String> = after.values().flat_map(BTreeMap::keys).collect();
    for name in reported {
        if !documented.iter().any(|m| matches(&m.pattern, name)) {
            failures.push(format!(
                "{name}: reported but not documented in docs/CONFIG.md"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A running `raftkv-server local` whose stdout is collected line by line.
struct Local {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Local {
    fn start(dir: &Path) -> Local {
        let mut child = Command::new(SERVER)
            .arg("local")
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn raftkv-server local");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let local = Local { child, lines };
        local.wait_line(
            |line| line.contains(" local --dir "),
            Duration::from_secs(20),
        );
        local
    }

    fn output(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The first line satisfying `predicate`, waiting up to `timeout` for it.
    fn wait_line(&self, predicate: impl Fn(&str) -> bool, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.output().into_iter().find(|l| predicate(l)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no such line within {timeout:?}:\n{}",
                self.output().join("\n")
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// The printed command line that contains `needle`, without its indentation.
    fn command(&self, needle: &str) -> String {
        self.wait_line(|l| l.contains(needle), Duration::from_secs(1))
            .trim()
            .to_string()
    }

    /// (id, pid, client address) of every node line.
    fn nodes(&self) -> Vec<(u64, i32, String)> {
        self.output()
            .iter()
            .filter_map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["node", id, "pid", pid, "client", client, ..] => {
                        Some((id.parse().ok()?, pid.parse().ok()?, client.to_string()))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// SIGTERM (Ctrl-C's effect), then its exit status, waiting at most 20 s.
    fn stop(&mut self) -> ExitStatus {
        signal(self.child.id() as i32, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "local did not stop within 20 s");
            sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let pids: Vec<i32> = self.nodes().iter().map(|n| n.1).collect();
            signal(self.child.id() as i32, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                sleep(Duration::from_millis(50));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                // local did not stop them: end the nodes it started, by pid, and it.
                for pid in pids {
                    signal(pid, libc::SIGKILL);
                }
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

fn signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Runs `sh -c LINE` until it succeeds (at most 15 s: the cluster may still be electing);
/// its stdout.
fn sh_until_ok(line: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = Command::new("sh").arg("-c").arg(line).output().expect("sh");
        if out.status.success() {
            return text(&out.stdout);
        }
        assert!(
            Instant::now() < deadline,
            "{line}: {:?}\n{}",
            out.status,
            text(&out.stderr)
        );
        sleep(Duration::from_millis(200));
    }
}

/// Goal: the lines `local` prints work when pasted: the raftkv-cli lines run as they
/// are (the binary by absolute path, not a `raftkv-cli` assumed on PATH) and the
/// redis-cli line is valid shell (it used to end in a parenthesis). Method: run `local`,
/// `sh -c` its put and get lines, `sh -n` its redis-cli line.
#[test]
fn local_prints_paste_ready_lines() {
    let dir = tempfile::tempdir().unwrap();
    let local = Local::start(&dir.path().join("cluster"));
    let put = local.command(" put hello world");
    assert!(put.starts_with('/'), "not an absolute path: {put}");
    assert_eq!(sh_until_ok(&put).trim(), "OK");
    assert_eq!(sh_until_ok(&local.command(" get hello")).trim(), "world");
    sh_until_ok(&local.command(" status"));
    let redis = local.command("redis-cli -p ");
    let parsed = Command::new("sh")
        .arg("-n")
        .arg("-c")
        .arg(&redis)
        .output()
        .unwrap();
    assert!(parsed.status.success(), "{redis}: {}", text(&parsed.stderr));
    // .ci/run's smoke test reads the port from this line with this sed expression.
    let port: String = redis["redis-cli -p ".len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert!(port.parse::<u16>().is_ok(), "{redis}");
}

/// Goal: `local --dir DIR` on a cluster it started before resumes that cluster (same
/// ports, cluster id and data) instead of writing new ports and a new cluster id that
/// strand it. Method: start, write, stop, start again on the same DIR, read back.
#[test]
fn local_resumes_the_cluster_in_its_dir() {
    let dir = tempfile::tempdir().unwrap();
    let cluster_dir = dir.path().join("cluster");
    let cluster_id = |dir: &PathBuf| {
        Config::load(&dir.join("node-1.toml"))
            .expect("config")
            .cluster_id
    };
    let mut first = Local::start(&cluster_dir);
    let nodes = first.nodes();
    assert_eq!(nodes.len(), 3, "{:?}", first.output());
    let id = cluster_id(&cluster_dir);
    sh_until_ok(&first.command(" put hello world"));
    assert!(first.stop().success());
    let second = Local::start(&cluster_dir);
    let resumed = second.nodes();
    let addrs = |nodes: &[(u64, i32, String)]| -> Vec<String> {
        nodes.iter().map(|n| n.2.clone()).collect()
    };
    assert_eq!(addrs(&resumed), addrs(&nodes));
    assert_eq!(cluster_id(&cluster_dir), id);
    assert!(
        second.output()[0].contains("(resumed)"),
        "{:?}",
        second.output()
    );
    assert_eq!(sh_until_ok(&second.command(" get hello")).trim(), "world");
}

/// Goal: when one node of `local` dies (kill -9 of the leader, as a user trying a
/// failover would), `local` reports it (id, status, log) and keeps the others running,
/// and they elect a new leader and serve. Method: kill -9 the leader's printed pid;
/// write through the printed CLI line afterwards; Ctrl-C still stops everything.
#[test]
fn local_reports_a_dead_node_and_keeps_the_others_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut local = Local::start(&dir.path().join("cluster"));
    let put = local.command(" put hello world");
    sh_until_ok(&put);
    let nodes = local.nodes();
    let addrs: Vec<String> = nodes.iter().map(|n| n.2.clone()).collect();
    let leader = common::leader_of(&addrs);
    let (id, pid, _) = nodes[leader].clone();
    signal(pid, libc::SIGKILL);
    let report = local.wait_line(
        |l| l.starts_with(&format!("node {id} exited on its own")),
        Duration::from_secs(10),
    );
    assert!(report.contains("signal: 9"), "{report}");
    assert!(report.contains(&format!("node-{id}.log")), "{report}");
    local.wait_line(
        |l| l.contains("2 node(s) keep running"),
        Duration::from_secs(1),
    );
    assert_eq!(
        sh_until_ok(&put.replace("hello world", "after failover")).trim(),
        "OK"
    );
    assert!(local.stop().success());
    for (_, pid, _) in nodes {
        // SAFETY: kill(2) with signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "node pid {pid} still runs after local stopped");
    }
}

/// Goal: a malformed `--cluster` address is a usage error at once (exit 2, naming it),
/// not 5 s of retries and exit 4. Method: run the CLI with `foo` and `foo:x`.
#[test]
fn malformed_cluster_address_is_a_usage_error() {
    for (args, bad) in [
        (["--cluster", "foo", "get", "k"], "foo"),
        (["--cluster", "127.0.0.1:7001,foo:x", "del", "k"], "foo:x"),
        (["--cluster", "foo", "status", "--json"], "foo"),
    ] {
        let started = Instant::now();
        let out = cli(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(&format!("{bad:?}")), "{stderr}");
        eprintln!("{args:?}: exit 2 after {:?}", started.elapsed());
    }
    let error = raftkv::client::Client::connect(&["foo".into()], common::options()).unwrap_err();
    assert!(
        matches!(error, raftkv::client::Error::Invalid(_)),
        "{error}"
    );
}

/// Goal: a listen address in use stops the server with a non-zero exit and a message
/// naming the address and its config key. Method: for each of listen_peer,
/// listen_client and listen_redis, hold that port and start a node on it.
#[test]
fn address_in_use_names_the_config_key() {
    for key in ["listen_peer", "listen_client", "listen_redis"] {
        let dir = tempfile::tempdir().unwrap();
        let configs = write_local_configs(1, dir.path()).expect("config");
        let node = &configs.nodes[0];
        let addr = match key {
            "listen_peer" => node.peer_addr,
            "listen_client" => node.client_addr,
            _ => node.redis_addr,
        };
        let _taken = TcpListener::bind(addr).expect("take the port");
        let mut child = Command::new(SERVER)
            .arg("--config")
            .arg(&node.config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{key}: the server kept running on a port in use");
            }
            sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(!status.success(), "{key}: {status}");
        let want = format!("key `{key}`: cannot bind {addr}: ");
        assert!(stderr.contains(&want), "{key}: {stderr}");
        assert!(stderr.contains("node-1.toml"), "{key}: {stderr}");
    }
}

/// Goal: the CLI pointed at a node's Redis port says so at once instead of timing out.
/// Method: a real node; `put` and `status` at its Redis address.
#[test]
fn cli_at_a_redis_port_says_so() {
    let cluster = Cluster::start(1, |_| {});
    cluster.leader();
    let redis = cluster.nodes[0].redis_addr.to_string();
    for args in [
        vec!["--cluster", &redis, "put", "k", "v"],
        vec!["--cluster", &redis, "status"],
    ] {
        let started = Instant::now();
        let out = cli(&args);
        let stderr = text(&out.stderr);
        let want = format!("{redis} speaks the Redis protocol, not the raftkv client protocol");
        assert!(stderr.contains(&want), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        eprintln!("{args:?}: answered after {:?}", started.elapsed());
    }
}

/// Goal: node ports are chosen outside the kernel's ephemeral range (which outgoing
/// connections draw from, so a port taken from it could be lost while its node is down)
/// and leased while the cluster lives; a killed node restarts on its port. Method: a
/// real cluster's ports against /proc/sys/net/ipv4/ip_local_port_range; kill -9 and
/// restart a node; it applies new writes.
#[test]
fn node_ports_are_outside_the_ephemeral_range_and_kept_across_restarts() {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap_or_else(|_| "32768 60999".into());
    let bounds: Vec<u16> = range
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect();
    let ephemeral = bounds[0]..=bounds[1];
    let mut cluster = Cluster::start(3, |_| {});
    for node in &cluster.nodes {
        for addr in [node.peer_addr, node.client_addr, node.redis_addr] {
            assert!(
                addr.port() >= PORT_FLOOR && !ephemeral.contains(&addr.port()),
                "{addr} is in the ephemeral range {ephemeral:?}"
            );
            assert!(
                lease_port(addr.port()).expect("lease").is_none(),
                "{addr} is not leased"
            );
        }
    }
    let leader = cluster.leader();
    let victim = (leader + 1) % 3;
    cluster.kill(victim);
    let mut client = cluster.client();
    client.put(b"while-down", b"1").expect("put");
    cluster.start_node(victim);
    client.put(b"after-restart", b"2").expect("put");
    let applied = cluster.applied(cluster.leader());
    cluster.wait_applied(victim, applied);
    assert_eq!(cluster.read_at(victim, b"while-down"), Some(b"1".to_vec()));
}
