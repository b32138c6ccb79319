//! Goal: every way a config can be wrong yields a message naming the file and the key.
//! Method: start from the embedded default and edit one line at a time.

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/raftkv/node1.toml"))
}

const MINIMAL: &str = r#"
node_id = 2
cluster_id = 7
data_dir = "/var/lib/raftkv"
listen_peer = "127.0.0.1:7002"
listen_client = "127.0.0.1:8002"

[[members]]
id = 1
peer_addr = "127.0.0.1:7001"
client_addr = "127.0.0.1:8001"

[[members]]
id = 2
peer_addr = "127.0.0.1:7002"
client_addr = "127.0.0.1:8002"
"#;

fn expect_key(text: &str, key: &str, fragment: &str) {
    let error = parse(text).expect_err("config must be rejected");
    assert_eq!(error.key(), Some(key), "{error}");
    let shown = error.to_string();
    assert!(
        shown.starts_with("config /etc/raftkv/node1.toml: key `"),
        "{shown}"
    );
    assert!(
        shown.contains(fragment),
        "{shown} should contain {fragment:?}"
    );
}

#[test]
fn minimal_config_gets_every_default() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.node_id, 2);
    assert_eq!(config.raft, RaftConfig::default());
    assert_eq!(config.limits, LimitsConfig::default());
    assert_eq!(config.storage, StorageConfig::default());
    assert_eq!(config.snapshot.threshold_entries, 100_000);
    assert_eq!(config.storage.slow_fsync_warn_ms, 100);
    assert_eq!(config.storage.fsync, FsyncMode::Always);
    assert_eq!(config.log.level, LogLevel::Info);
    assert_eq!(config.peers().map(|m| m.id).collect::<Vec<_>>(), vec![1]);
    assert_eq!(config.self_member().unwrap().client_addr.port(), 8002);
}

#[test]
fn embedded_default_is_valid_and_spells_out_every_default() {
    let config = Config::parse(DEFAULT_LOCAL_TOML, Path::new("/tmp/local.toml")).unwrap();
    assert_eq!(config.members.len(), 3);
    assert_eq!(config.raft, RaftConfig::default());
    assert_eq!(config.limits, LimitsConfig::default());
    assert_eq!(config.storage, StorageConfig::default());
    assert_eq!(config.snapshot, SnapshotConfig::default());
    assert_eq!(config.log, LogConfig::default());
    assert_eq!(config.data_dir, Path::new("/tmp/data/node-1"));
}

#[test]
fn every_key_is_in_the_embedded_default_and_documented() {
    let docs = include_str!("../docs/CONFIG.md");
    // Serializing a full config lists every key the struct knows.
    let config = parse(MINIMAL).unwrap();
    let all: toml::Table = toml::from_str(&config.to_toml().unwrap()).unwrap();
    let embedded: toml::Table = toml::from_str(DEFAULT_LOCAL_TOML).unwrap();
    let mut checked = 0;
    for (key, value) in &all {
        assert!(
            embedded.contains_key(key),
            "{key} missing from config/local.toml"
        );
        let leaves: Vec<String> = match value {
            toml::Value::Table(table) => {
                assert_eq!(
                    embedded[key].as_table().map(|t| t.len()),
                    Some(table.len()),
                    "[{key}] of config/local.toml"
                );
                table.keys().cloned().collect()
            }
            toml::Value::Array(_) => {
                vec!["id".into(), "peer_addr".into(), "client_addr".into()]
            }
            _ => vec![key.clone()],
        };
        for leaf in leaves {
            assert!(
                docs.contains(&format!("| `{leaf}` |")),
                "{key}.{leaf} not in CONFIG.md"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 36);
}

/// The `[security]` keys are optional, so a serialized config without them omits the
/// section (and `every_key_is_in_the_embedded_default_and_documented` does not see
/// them): this test lists them, checks each is documented, resolved against the
/// config's directory, and round-trips.
#[test]
fn security_keys_are_documented_resolved_and_round_trip() {
    let docs = include_str!("../docs/CONFIG.md");
    let text = format!(
        "{MINIMAL}\n[security]\ncluster_secret_file = \"secret\"\nusers_file = \"/abs/users\"\nmetrics_open = true\n"
    );
    let config = parse(&text).unwrap();
    assert_eq!(
        config.security.cluster_secret_file.as_deref(),
        Some(Path::new("/etc/raftkv/secret"))
    );
    assert_eq!(
        config.security.users_file.as_deref(),
        Some(Path::new("/abs/users"))
    );
    let all: toml::Table = toml::from_str(&config.to_toml().unwrap()).unwrap();
    let mut keys: Vec<&String> = all["security"].as_table().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["cluster_secret_file", "metrics_open", "users_file"]);
    for key in keys {
        assert!(
            docs.contains(&format!("| `{key}` |")),
            "{key} not in CONFIG.md"
        );
    }
    assert_eq!(parse(&config.to_toml().unwrap()).unwrap(), config);
    assert!(parse(MINIMAL).unwrap().security.is_off());
}

#[test]
fn to_toml_round_trips() {
    let config = parse(MINIMAL).unwrap();
    let text = config.to_toml().unwrap();
    assert_eq!(parse(&text).unwrap(), config);
}

#[test]
fn relative_data_dir_is_resolved_against_the_config_directory() {
    let text = MINIMAL.replace("\"/var/lib/raftkv\"", "\"data\"");
    assert_eq!(
        parse(&text).unwrap().data_dir,
        Path::new("/etc/raftkv/data")
    );
}

#[test]
fn each_validation_error_names_its_key() {
    let cases: &[(&str, &str, &str, &str)] = &[
        ("node_id = 2", "node_id = 0", "node_id", "must not be 0"),
        (
            "node_id = 2",
            "node_id = 3",
            "node_id",
            "one of the members",
        ),
        (
            "cluster_id = 7",
            "cluster_id = 0",
            "cluster_id",
            "must not be 0",
        ),
        (
            "data_dir = \"/var/lib/raftkv\"",
            "data_dir = \"\"",
            "data_dir",
            "empty",
        ),
        ("id = 1", "id = 0", "members[0].id", "must not be 0"),
        ("id = 1", "id = 2", "members[1].id", "duplicate"),
        ("7001", "7002", "members[1].peer_addr", "used twice"),
        (
            "client_addr = \"127.0.0.1:8001\"",
            "client_addr = \"127.0.0.1:7001\"",
            "members[0].client_addr",
            "used twice",
        ),
        (
            "listen_client = \"127.0.0.1:8002\"",
            "listen_client = \"127.0.0.1:7002\"",
            "listen_client",
            "differ",
        ),
        (
            "listen_client = \"127.0.0.1:8002\"",
            "listen_client = \"127.0.0.1:8002\"\nlisten_http = \"127.0.0.1:8002\"",
            "listen_http",
            "differ",
        ),
    ];
    for (i, (from, to, key, fragment)) in cases.iter().enumerate() {
        let text = MINIMAL.replacen(from, to, 1);
        assert_ne!(text, MINIMAL, "#{i}: edit did not apply");
        let error = parse(&text).expect_err("must be rejected");
        assert_eq!(error.key(), Some(*key), "#{i}: {error}");
        assert!(error.to_string().contains(fragment), "#{i}: {error}");
    }
}

#[test]
fn each_tunable_validation_error_names_its_key() {
    let cases: &[(&str, &str, &str)] = &[
        ("[raft]\ntick_ms = 0", "raft.tick_ms", "greater than 0"),
        (
            "[raft]\nheartbeat_ticks = 0",
            "raft.heartbeat_ticks",
            "greater than 0",
        ),
        (
            "[raft]\nheartbeat_ticks = 5\nelection_ticks = 5",
            "raft.election_ticks",
            "must be greater than raft.heartbeat_ticks",
        ),
        (
            "[limits]\ninflight_count_max = 0",
            "limits.inflight_count_max",
            "greater",
        ),
        (
            "[limits]\nconnections_max = 1024",
            "limits.connections_max",
            "limits.client_connections_max",
        ),
        (
            "[limits]\nclient_connections_max = 0",
            "limits.client_connections_max",
            "greater",
        ),
        (
            "[limits]\npartial_request_timeout_ms = 0",
            "limits.partial_request_timeout_ms",
            "greater",
        ),
        (
            "[limits]\nrequests_per_connection_max = 0",
            "limits.requests_per_connection_max",
            "greater",
        ),
        (
            "[limits]\noutput_bytes_soft_max = 100000000",
            "limits.output_bytes_soft_max",
            "at most limits.output_bytes_max",
        ),
        (
            "[limits]\nrequest_timeout_ms = 0",
            "limits.request_timeout_ms",
            "greater",
        ),
        (
            "[redis]\nnotify_keyspace_events = \"KEQ\"",
            "redis.notify_keyspace_events",
            "not a Redis event class",
        ),
        (
            "[limits]\nrequest_timeout_ms = 500\nleader_wait_ms = 501",
            "limits.leader_wait_ms",
            "must not exceed limits.request_timeout_ms",
        ),
        (
            "[limits]\nread_bytes_per_turn_max = 0",
            "limits.read_bytes_per_turn_max",
            "0",
        ),
        (
            "[limits]\nframe_bytes_max = 1024",
            "limits.message_bytes_max",
            "fit in a frame",
        ),
        (
            "[limits]\nentry_bytes_max = 0",
            "limits.entry_bytes_max",
            "greater",
        ),
        (
            "[limits]\nentry_bytes_max = 16777216",
            "limits.entry_bytes_max",
            "must be at most limits.frame_bytes_max - 74",
        ),
        (
            "[limits]\nentry_bytes_max = 16777143",
            "limits.entry_bytes_max",
            "AppendEntries frame",
        ),
        (
            "[limits]\noutput_bytes_max = 1024",
            "limits.output_bytes_max",
            "one frame",
        ),
        (
            "[storage]\nsegment_bytes = 100",
            "storage.segment_bytes",
            "at least 65536",
        ),
        (
            "[storage]\nslow_fsync_warn_ms = 0",
            "storage.slow_fsync_warn_ms",
            "greater",
        ),
        (
            "[snapshot]\nthreshold_entries = 0",
            "snapshot.threshold_entries",
            "greater",
        ),
        (
            "[snapshot]\nencode_cpu_percent = 0",
            "snapshot.encode_cpu_percent",
            "greater",
        ),
        (
            "[snapshot]\nencode_cpu_percent = 101",
            "snapshot.encode_cpu_percent",
            "at most 100",
        ),
        (
            "[snapshot]\nlog_growth_percent = 0",
            "snapshot.log_growth_percent",
            "greater",
        ),
    ];
    for (i, (section, key, fragment)) in cases.iter().enumerate() {
        let text = format!("{MINIMAL}\n{section}\n");
        let error = parse(&text).expect_err("must be rejected");
        assert_eq!(error.key(), Some(*key), "#{i}: {error}");
        assert!(error.to_string().contains(fragment), "#{i}: {error}");
    }
}

#[test]
fn an_entry_may_fill_a_frame_except_for_the_append_entries_framing() {
    let largest = 16 * 1024 * 1024 - 74;
    let text = format!("{MINIMAL}\n[limits]\nentry_bytes_max = {largest}\n");
    assert_eq!(parse(&text).unwrap().limits.entry_bytes_max, largest);
    assert_eq!(
        parse(MINIMAL).unwrap().limits.entry_bytes_max,
        4 * 1024 * 1024,
        "default"
    );
}

#[test]
fn election_error_message_is_the_documented_one() {
    let text = format!("{MINIMAL}\n[raft]\nheartbeat_ticks = 3\nelection_ticks = 2\n");
    assert_eq!(
        parse(&text).unwrap_err().to_string(),
        "config /etc/raftkv/node1.toml: key `raft.election_ticks`: \
             must be greater than raft.heartbeat_ticks"
    );
}

#[test]
fn missing_required_keys_are_named() {
    expect_key(
        &MINIMAL.replace("cluster_id = 7\n", ""),
        "cluster_id",
        "missing field",
    );
    expect_key(
        &MINIMAL.replace("client_addr = \"127.0.0.1:8002\"\n", ""),
        "members[1].client_addr",
        "missing field",
    );
}

#[test]
fn unknown_keys_are_named() {
    expect_key(&format!("colour = 3\n{MINIMAL}"), "colour", "unknown field");
    expect_key(
        &format!("{MINIMAL}\n[raft]\nelection_tick = 3\n"),
        "raft.election_tick",
        "unknown field",
    );
    expect_key(
        &format!("{MINIMAL}\n[raf]\ntick_ms = 3\n"),
        "raf",
        "unknown field",
    );
    expect_key(
        &MINIMAL.replacen("id = 1", "id = 1\nweight = 2", 1),
        "members[0].weight",
        "unknown field",
    );
}

#[test]
fn fsync_modes_use_the_storage_names() {
    for (name, mode) in [("always", FsyncMode::Always), ("never", FsyncMode::Never)] {
        let text = format!("{MINIMAL}\n[storage]\nfsync = \"{name}\"\n");
        let config = parse(&text).unwrap();
        assert_eq!(config.storage.fsync, mode);
        let rendered = config.to_toml().unwrap();
        assert!(
            rendered.contains(&format!("fsync = \"{name}\"")),
            "{rendered}"
        );
    }
}

#[test]
fn type_errors_are_named() {
    expect_key(
        &MINIMAL.replace("node_id = 2", "node_id = \"two\""),
        "node_id",
        "",
    );
    expect_key(
        &format!("{MINIMAL}\n[raft]\ntick_ms = -5\n"),
        "raft.tick_ms",
        "",
    );
    expect_key(
        &format!("{MINIMAL}\n[storage]\nfsync = \"sometimes\"\n"),
        "storage.fsync",
        "sometimes",
    );
    expect_key(
        &format!("{MINIMAL}\n[log]\nlevel = \"loud\"\n"),
        "log.level",
        "loud",
    );
    expect_key(
        &MINIMAL.replace("127.0.0.1:7001", "localhost"),
        "members[0].peer_addr",
        "",
    );
    expect_key(
        &format!("{MINIMAL}\n[limits]\nframe_bytes_max = 5000000000\n"),
        "limits.frame_bytes_max",
        "",
    );
}

#[test]
fn syntax_errors_give_line_and_column() {
    let error = parse("node_id = 1\ncluster_id = = 2\n").unwrap_err();
    match &error {
        ConfigError::Syntax { line, .. } => assert_eq!(*line, 2, "{error}"),
        other => panic!("expected a syntax error, got {other}"),
    }
    assert!(
        error
            .to_string()
            .starts_with("config /etc/raftkv/node1.toml: line 2")
    );
}

#[test]
fn unreadable_file_is_named() {
    let error = Config::load(Path::new("/nonexistent/raftkv.toml")).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("config /nonexistent/raftkv.toml: cannot read")
    );
}
