//! The text of `INFO`: Redis-style `# Section` blocks of `field:value` lines, with the
//! fields clients and exporters parse (server, clients, memory, persistence, stats,
//! replication, keyspace, as redis-server names them) filled from the node's status
//! and metrics, plus raftkv's own: the Raft view (role, term, leader, commit and applied
//! index, members), the event loop figures (in `# Stats`) and the storage figures.
//!
//! Invariant: rendering is pure (the uptime is passed in); a figure raftkv does not
//! track is written as Redis writes its idle value (0, `ok`), never left out, so parsers
//! find every field they look for.

use crate::codec::client::{Role, Status};

/// The Redis version raftkv reports (`INFO`, `HELLO`): the command set it follows.
pub const REDIS_VERSION: &str = "7.2.0";

/// The value of metric `name`, 0 when absent.
pub fn metric(metrics: &[(String, u64)], name: &str) -> u64 {
    metrics
        .iter()
        .find(|(n, _)| n == name)
        .map_or(0, |(_, v)| *v)
}

type Fields = Vec<(String, String)>;

fn fields(pairs: &[(&str, String)]) -> Fields {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.clone()))
        .collect()
}

/// The metrics whose names start with `prefix`, dots turned into underscores.
fn metrics_with(metrics: &[(String, u64)], prefix: &str) -> Fields {
    metrics
        .iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(name, value)| (name.replace('.', "_"), value.to_string()))
        .collect()
}

fn server(status: &Status, uptime_ms: u64) -> Fields {
    let uptime_s = uptime_ms / 1000;
    fields(&[
        ("redis_version", REDIS_VERSION.into()),
        ("raftkv_version", env!("CARGO_PKG_VERSION").into()),
        ("redis_git_sha1", "00000000".into()),
        ("redis_git_dirty", "0".into()),
        ("redis_mode", "standalone".into()),
        ("os", std::env::consts::OS.into()),
        ("arch_bits", (usize::BITS).to_string()),
        ("multiplexing_api", "epoll".into()),
        ("process_id", std::process::id().to_string()),
        ("run_id", format!("{:040x}", status.node_id)),
        ("uptime_in_seconds", uptime_s.to_string()),
        ("uptime_in_days", (uptime_s / 86_400).to_string()),
        ("hz", "10".into()),
    ])
}

fn replication(status: &Status) -> Fields {
    let leader = status.role == Role::Leader;
    let others: Vec<_> = status
        .members
        .iter()
        .filter(|m| m.id != status.node_id)
        .collect();
    let mut out = fields(&[
        ("role", if leader { "master" } else { "slave" }.into()),
        ("raft_role", status.role.name().into()),
    ]);
    if leader {
        out.push(("connected_slaves".into(), others.len().to_string()));
        for (i, member) in others.iter().enumerate() {
            let (ip, port) = split_addr(&member.client_addr);
            let lag = status.last_index.saturating_sub(member.match_index);
            out.push((
                format!("slave{i}"),
                format!(
                    "ip={ip},port={port},state=online,offset={},lag={lag}",
                    member.match_index
                ),
            ));
        }
    } else {
        let master = status.members.iter().find(|m| m.id == status.leader_id);
        let (ip, port) = split_addr(master.map_or("", |m| m.client_addr.as_str()));
        let link = if master.is_some() { "up" } else { "down" };
        out.extend(fields(&[
            ("master_host", ip.into()),
            ("master_port", port.into()),
            ("master_link_status", link.into()),
            ("master_sync_in_progress", "0".into()),
            ("slave_repl_offset", status.applied_index.to_string()),
            ("slave_read_only", "1".into()),
            ("connected_slaves", "0".into()),
        ]));
    }
    out.extend(fields(&[
        ("master_replid", format!("{:040x}", status.term)),
        ("master_repl_offset", status.last_index.to_string()),
    ]));
    out
}

/// `host:port` split at the last colon (both empty when there is none).
fn split_addr(addr: &str) -> (&str, &str) {
    addr.rsplit_once(':').unwrap_or(("", ""))
}

fn raft(status: &Status) -> Fields {
    let leader_addr = status
        .members
        .iter()
        .find(|m| m.id == status.leader_id)
        .map_or(String::new(), |m| m.client_addr.clone());
    let members: Vec<String> = status
        .members
        .iter()
        .map(|m| format!("{}@{}", m.id, m.client_addr))
        .collect();
    fields(&[
        ("raft_node_id", status.node_id.to_string()),
        ("raft_role", status.role.name().into()),
        ("raft_term", status.term.to_string()),
        ("raft_leader_id", status.leader_id.to_string()),
        ("raft_leader_client_addr", leader_addr),
        ("raft_commit_index", status.commit_index.to_string()),
        ("raft_applied_index", status.applied_index.to_string()),
        ("raft_last_index", status.last_index.to_string()),
        ("raft_members", members.join(",")),
    ])
}

/// Renders the sections selected by `section` (`None`, `all`, `default`, `everything`:
/// every section), `uptime_ms` after the node started.
pub fn render(
    section: Option<&str>,
    status: &Status,
    metrics: &[(String, u64)],
    uptime_ms: u64,
) -> String {
    let keys = metric(metrics, "kv_keys");
    let mut stats = fields(&[
        (
            "rejected_connections",
            metric(metrics, "net.accepts_refused").to_string(),
        ),
        ("instantaneous_ops_per_sec", "0".into()),
        (
            "expired_keys",
            metric(metrics, "kv_expired_keys").to_string(),
        ),
        ("evicted_keys", "0".into()),
        ("pubsub_channels", "0".into()),
    ]);
    stats.extend(metrics_with(metrics, "loop."));
    stats.extend(metrics_with(metrics, "net."));
    let sections: Vec<(&str, Fields)> = vec![
        ("server", server(status, uptime_ms)),
        (
            "clients",
            fields(&[
                (
                    "connected_clients",
                    metric(metrics, "net.client_connections").to_string(),
                ),
                ("blocked_clients", "0".into()),
                ("tracking_clients", "0".into()),
            ]),
        ),
        (
            "memory",
            fields(&[
                ("used_memory", "0".into()),
                ("used_memory_human", "0B".into()),
                ("maxmemory", "0".into()),
                ("maxmemory_human", "0B".into()),
                ("maxmemory_policy", "noeviction".into()),
            ]),
        ),
        (
            "persistence",
            fields(&[
                ("loading", "0".into()),
                ("async_loading", "0".into()),
                ("rdb_changes_since_last_save", "0".into()),
                ("rdb_bgsave_in_progress", "0".into()),
                ("rdb_last_bgsave_status", "ok".into()),
                ("aof_enabled", "1".into()),
                ("aof_rewrite_in_progress", "0".into()),
                ("aof_last_write_status", "ok".into()),
            ]),
        ),
        ("stats", stats),
        ("replication", replication(status)),
        ("raft", raft(status)),
        ("storage", metrics_with(metrics, "storage.")),
        (
            "keyspace",
            // Redis leaves out an empty database.
            if keys == 0 {
                Vec::new()
            } else {
                let expires = metric(metrics, "kv_expiring_keys");
                vec![(
                    "db0".into(),
                    format!("keys={keys},expires={expires},avg_ttl=0"),
                )]
            },
        ),
    ];
    let all = matches!(section, None | Some("all" | "default" | "everything"));
    let mut text = String::new();
    for (name, fields) in sections {
        if !all && section != Some(name) {
            continue;
        }
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        let mut title = name.to_string();
        title[..1].make_ascii_uppercase();
        text.push_str(&format!("# {title}\r\n"));
        for (field, value) in fields {
            text.push_str(&format!("{field}:{value}\r\n"));
        }
    }
    text
}
