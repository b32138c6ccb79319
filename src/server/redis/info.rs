//! The text of `INFO`: Redis-style `# Section` blocks of `field:value` lines, with the
//! node's Raft view (role, term, leader, commit and applied index, members), its event
//! loop figures (`# Stats`: turns, the longest turn) and its storage figures, taken from
//! the node's status and metrics.

use crate::codec::client::{Role, Status};

/// The value of metric `name`, 0 when absent.
pub fn metric(metrics: &[(String, u64)], name: &str) -> u64 {
    metrics
        .iter()
        .find(|(n, _)| n == name)
        .map_or(0, |(_, v)| *v)
}

/// Renders the sections selected by `section` (`None`, `all`, `default`, `everything`:
/// every section).
pub fn render(section: Option<&str>, status: &Status, metrics: &[(String, u64)]) -> String {
    let role = match status.role {
        Role::Leader => "master",
        _ => "slave",
    };
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
    let sections: Vec<(&str, Vec<(String, String)>)> = vec![
        (
            "server",
            vec![
                ("redis_version".into(), "7.0.0".into()),
                ("raftkv_version".into(), env!("CARGO_PKG_VERSION").into()),
                ("redis_mode".into(), "standalone".into()),
                ("process_id".into(), std::process::id().to_string()),
            ],
        ),
        (
            "replication",
            vec![
                ("role".into(), role.into()),
                ("raft_role".into(), status.role.name().into()),
            ],
        ),
        (
            "raft",
            vec![
                ("raft_node_id".into(), status.node_id.to_string()),
                ("raft_role".into(), status.role.name().into()),
                ("raft_term".into(), status.term.to_string()),
                ("raft_leader_id".into(), status.leader_id.to_string()),
                ("raft_leader_client_addr".into(), leader_addr),
                ("raft_commit_index".into(), status.commit_index.to_string()),
                (
                    "raft_applied_index".into(),
                    status.applied_index.to_string(),
                ),
                ("raft_last_index".into(), status.last_index.to_string()),
                ("raft_members".into(), members.join(",")),
            ],
        ),
        (
            "stats",
            metrics
                .iter()
                .filter(|(name, _)| name.starts_with("loop."))
                .map(|(name, value)| (name.replace('.', "_"), value.to_string()))
                .collect(),
        ),
        (
            "storage",
            metrics
                .iter()
                .filter(|(name, _)| name.starts_with("storage."))
                .map(|(name, value)| (name.replace('.', "_"), value.to_string()))
                .collect(),
        ),
        (
            "keyspace",
            vec![(
                "db0".into(),
                format!("keys={},expires=0,avg_ttl=0", metric(metrics, "kv_keys")),
            )],
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
