//! Client authentication on the Redis port against real processes (docs/SECURITY.md,
//! "Clients").
//!
//! Goal: with `security.users_file`, clients authenticate with AUTH / HELLO AUTH and
//! run only what their permissions allow, with redis-server's error texts. Method: the
//! same raw RESP pipeline to raftkv and to a redis-server with the equivalent ACL users,
//! replies compared byte for byte; then redis-cli and redis-py as real clients. Each
//! external program is skipped, saying so, when absent, unless
//! `RAFTKV_REQUIRE_CLIENTS` is set.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::resp::{RedisServer, exchange};
use common::{Cluster, eventually, options};
use raftkv::client::metrics_at;
use raftkv::security::users::password_hash_hex;
use raftkv::server::ports::lease_loopback_ports;

fn available(program: &str, args: &[&str], test: &str) -> bool {
    let found = Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("RAFTKV_REQUIRE_CLIENTS").is_none(),
            "RAFTKV_REQUIRE_CLIENTS is set but {program} is missing"
        );
        eprintln!("SKIPPED {test}: {program} is not installed");
    }
    found
}

/// The users of every test: `default` may do everything, `reader` only read, `ops`
/// only administer.
fn users_file(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("users");
    let text = format!(
        "# raftkv users\n\
         user default on #{} read write admin\n\
         user reader on #{} read\n\
         user ops on #{} admin\n\
         user gone off #{} read write admin\n",
        password_hash_hex(b"pw"),
        password_hash_hex(b"rpw"),
        password_hash_hex(b"opw"),
        password_hash_hex(b"gpw"),
    );
    std::fs::write(&path, text).expect("write users");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

fn secured_cluster(users: &std::path::Path) -> Cluster {
    let users = users.to_path_buf();
    Cluster::start(1, move |config| {
        config.security.users_file = Some(users.clone());
    })
}

fn metric(addr: &str, name: &str) -> u64 {
    metrics_at(addr, &options())
        .expect("metrics")
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("metric {name} missing"))
}

/// Reference: redis-server 7 ACL behaviour. Unknown commands and bad arities first,
/// then NOAUTH before AUTH, WRONGPASS for a wrong password, unknown or disabled user
/// (the connection stays as it was), NOPERM for a missing permission, RESET back to
/// unauthenticated; the bytes must be redis-server's.
#[test]
fn auth_and_permission_replies_match_redis_server() {
    if !available(
        "redis-server",
        &["--version"],
        "auth_and_permission_replies_match",
    ) {
        return;
    }
    let lease = lease_loopback_ports(1).expect("lease a port");
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port"])
        .arg(lease[0].addr().port().to_string())
        .args(["--save", "", "--appendonly", "no", "--databases", "1"])
        .args(["--requirepass", "pw"])
        .args([
            "--user", "reader", "on", ">rpw", "~*", "&*", "+@read", "+ping",
        ])
        .args(["--user", "gone", "off", ">gpw", "~*", "&*", "+@all"])
        .stdout(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let _server = RedisServer(child);
    let dir = tempfile::tempdir().expect("dir");
    let cluster = secured_cluster(&users_file(dir.path()));
    cluster.leader();
    let raftkv_addr = cluster.nodes[0].redis_addr.to_string();
    let server_addr = lease[0].addr().to_string();
    eventually(
        || match exchange(&raftkv_addr, &["AUTH pw", "SET warm up"]).0 {
            reply if reply == b"+OK\r\n+OK\r\n" => Ok(()),
            reply => Err(String::from_utf8_lossy(&reply).into_owned()),
        },
    );
    let commands = [
        "PING",
        "GET k",
        "GET",
        "HELLO 3",
        "AUTH wrong",
        "AUTH nobody pw",
        "AUTH reader wrong",
        "AUTH gone gpw",
        "PING",
        "AUTH reader rpw",
        "PING",
        "GET nokey",
        "SET k v",
        "DEL k",
        "CONFIG GET timeout",
        "CLIENT LIST",
        "PUBLISH c m",
        "AUTH reader wrong",
        "GET nokey",
        "AUTH pw",
        "SET k v",
        "GET k",
        "DEL k",
        "RESET",
        "GET k",
        "HELLO 2 AUTH reader bad",
        "QUIT",
    ];
    let (ours, client_addr) = exchange(&raftkv_addr, &commands);
    let (theirs, _) = exchange(&server_addr, &commands);
    assert_eq!(
        String::from_utf8_lossy(&ours),
        String::from_utf8_lossy(&theirs),
        "raftkv (left) and redis-server (right) differ"
    );
    assert!(String::from_utf8_lossy(&ours).contains("NOPERM"));
    // 4 NOAUTH, 5 WRONGPASS, 5 NOPERM (HELLO 3 before AUTH is refused too).
    let node = cluster.addr(0);
    assert!(metric(&node, "net.client_auth_failures") >= 14);
    let log = cluster.log_text(0);
    for what in ["(NOAUTH)", "(WRONGPASS)", "(NOPERM)"] {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("redis client {client_addr}")) && l.contains(what)),
            "no {what} line naming {client_addr}:\n{log}"
        );
    }
    assert!(
        !log.contains("rpw") && !log.contains(" pw"),
        "a password in the log"
    );
}

/// redis-cli with the password in REDISCLI_AUTH (never in argv): a reader reads and is
/// refused writes, an admin reads the config, no password gets NOAUTH.
#[test]
fn redis_cli_authenticates_and_gets_permission_errors() {
    if !available("redis-cli", &["--version"], "redis_cli_authenticates") {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let cluster = secured_cluster(&users_file(dir.path()));
    cluster.leader();
    let addr = cluster.nodes[0].redis_addr;
    let cli = |user: Option<&str>, password: Option<&str>, args: &[&str]| -> String {
        let mut command = Command::new("redis-cli");
        command
            .args(["-h", "127.0.0.1", "-p"])
            .arg(addr.port().to_string());
        if let Some(user) = user {
            command.args(["--user", user]);
        }
        if let Some(password) = password {
            command.env("REDISCLI_AUTH", password);
        }
        let output = command.args(args).output().expect("run redis-cli");
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        text.trim().to_string()
    };
    eventually(
        || match cli(None, Some("pw"), &["SET", "k", "v"]).as_str() {
            "OK" => Ok(()),
            other => Err(other.to_string()),
        },
    );
    assert_eq!(cli(Some("reader"), Some("rpw"), &["GET", "k"]), "v");
    assert_eq!(
        cli(Some("reader"), Some("rpw"), &["SET", "k", "w"]),
        "NOPERM this user has no permissions to run the 'set' command"
    );
    assert_eq!(
        cli(None, None, &["GET", "k"]),
        "NOAUTH Authentication required."
    );
    let wrong = cli(Some("reader"), Some("bad"), &["GET", "k"]);
    assert!(
        wrong.contains("WRONGPASS invalid username-password pair or user is disabled."),
        "{wrong}"
    );
    let config = cli(Some("ops"), Some("opw"), &["CONFIG", "GET", "timeout"]);
    assert_eq!(config, "timeout\n0");
    assert_eq!(cli(Some("reader"), Some("rpw"), &["GET", "k"]), "v");
}

/// redis-py over RESP2 (AUTH user pass) and RESP3 (HELLO 3 AUTH user pass): its
/// exception classes are chosen from the error prefixes, so these are Redis's.
#[test]
fn redis_py_authenticates_over_resp2_and_resp3() {
    if !available("python3", &["-c", "import redis"], "redis_py_authenticates") {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let cluster = secured_cluster(&users_file(dir.path()));
    cluster.leader();
    let addr = cluster.nodes[0].redis_addr;
    let script = r#"
import sys, time, redis
from redis.backoff import NoBackoff
from redis.retry import Retry
host, port = sys.argv[1], int(sys.argv[2])
# redis-py retries a refused connection with backoff (seconds); refusals are final here.
once = Retry(NoBackoff(), 0)
for attempt in range(100):
    try:
        redis.Redis(host=host, port=port, password="pw").set("k", "v")
        break
    except redis.exceptions.ResponseError:
        time.sleep(0.1)
for protocol in (2, 3):
    reader = redis.Redis(host=host, port=port, username="reader", password="rpw",
                         protocol=protocol)
    assert reader.get("k") == b"v", protocol
    try:
        reader.set("k", "w")
        raise SystemExit("a reader wrote")
    except redis.exceptions.NoPermissionError as e:
        assert "no permissions to run the 'set' command" in str(e), str(e)
    try:
        redis.Redis(host=host, port=port, username="reader", password="bad",
                    protocol=protocol, retry=once).ping()
        raise SystemExit("a wrong password was accepted")
    except redis.exceptions.AuthenticationError as e:
        assert "invalid username-password pair" in str(e), str(e)
# Without credentials: RESP2 gets NOAUTH at the first command, RESP3 at HELLO.
for protocol, text in ((2, "Authentication required"),
                       (3, "HELLO must be called with the client already authenticated")):
    try:
        redis.Redis(host=host, port=port, protocol=protocol, retry=once).get("k")
        raise SystemExit("no password was accepted")
    except redis.exceptions.AuthenticationError as e:
        assert text in str(e), str(e)
print("ok")
"#;
    let output = Command::new("python3")
        .args(["-c", script, "127.0.0.1"])
        .arg(addr.port().to_string())
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.trim() == "ok",
        "redis-py: {stdout}\n{stderr}"
    );
}

/// The HTTP port with the same users: Basic auth per request, 401 with
/// `WWW-Authenticate` without valid credentials, 403 without the route's permission,
/// `/health` open, `/metrics` closed unless `security.metrics_open`.
#[test]
fn http_port_takes_basic_auth_with_the_same_users() {
    use base64::Engine;
    let dir = tempfile::tempdir().expect("dir");
    let cluster = secured_cluster(&users_file(dir.path()));
    cluster.leader();
    let addr = cluster.nodes[0].http_addr.expect("an HTTP port");
    let basic = |user: &str, pass: &str| {
        let text = format!("{user}:{pass}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(text)
        )
    };
    let mut conn = eventually(|| common::http::Conn::try_open(addr));
    let mut call = |method: &str, path: &str, auth: Option<&str>, body: &[u8]| {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        conn.send(method, path, &headers, body);
        conn.read_reply().expect("a reply")
    };
    let (writer, reader) = (basic("default", "pw"), basic("reader", "rpw"));
    let put = eventually(
        || match call("PUT", "/kv/k", Some(&writer), br#"{"value": "v"}"#) {
            reply if reply.status == 200 => Ok(reply),
            reply => Err(format!("status {}", reply.status)),
        },
    );
    assert_eq!(put.status, 200);
    let cases: [(&str, &str, Option<&str>, u16); 7] = [
        ("GET", "/kv/k", None, 401),
        ("GET", "/kv/k", Some(&basic("reader", "bad")), 401),
        ("GET", "/kv/k", Some(&reader), 200),
        ("PUT", "/kv/k", Some(&reader), 403),
        ("GET", "/metrics", None, 401),
        ("GET", "/metrics", Some(&reader), 200),
        ("GET", "/health", None, 200),
    ];
    for (i, (method, path, auth, want)) in cases.into_iter().enumerate() {
        let reply = call(method, path, auth, br#"{"value": "w"}"#);
        assert_eq!(reply.status, want, "#{i}: {method} {path}");
        if want == 401 {
            assert_eq!(
                reply.header("www-authenticate"),
                Some("Basic realm=\"raftkv\", charset=\"UTF-8\""),
                "#{i}"
            );
        }
    }
    let get = call("GET", "/kv/k", Some(&reader), b"");
    assert!(
        String::from_utf8_lossy(&get.body).contains('v'),
        "the refused PUT wrote"
    );
    assert!(metric(&cluster.addr(0), "net.client_auth_failures") >= 4);
    let log = cluster.log_text(0);
    assert!(
        log.contains("http client 127.0.0.1:"),
        "no refusal with an address:\n{log}"
    );
    assert!(!log.contains("rpw"), "a password in the log");
}
