//! `raftkv-cli status`: every member asked directly (one attempt each, so an
//! unreachable member shows as such), rendered as an aligned table or as JSON.
//!
//! The exit code tells a script (or a health check) whether the cluster is whole, as
//! etcdctl's does: 0 when every member answers and one of them leads, 4
//! ([`EXIT_UNAVAILABLE`]) when no member answers or none leads (no leader known: writes
//! cannot commit), 6 ([`EXIT_DEGRADED`]) when a leader is known but a member does not
//! answer; 2 when a given address is a Redis port. Each problem is also named on stderr
//! (which member, and why).

use std::collections::BTreeMap;

use raftkv::client::{ClientOptions, Error, metrics_at, status_at};
use raftkv::codec::client::Status;
use raftkv::raft::message::NodeId;

use crate::table::align;
use crate::{EXIT_DEGRADED, EXIT_UNAVAILABLE, EXIT_USAGE, print_line};

/// One member's answer to `status`.
struct NodeReport {
    addr: String,
    /// The member's id: from its own status, or from another member's list of members.
    id: Option<NodeId>,
    status: Result<Status, Error>,
    metrics: Option<Result<Vec<(String, u64)>, Error>>,
    /// Whether the node's NOSPACE alarm is up (its `storage.alarm_nospace` metric).
    nospace: bool,
}

/// Asks every member for its status (and metrics), prints the table or JSON.
pub(crate) fn status(addrs: &[String], options: &ClientOptions, json: bool, verbose: bool) -> u8 {
    let reports = gather(addrs, options, verbose);
    let text = if json {
        render_json(&reports)
    } else {
        render_table(&reports)
    };
    print_line(text.trim_end().as_bytes());
    let (code, problems) = health(&reports);
    for problem in problems {
        eprintln!("raftkv-cli: {problem}");
    }
    code
}

/// The exit code of `status` (see the module docs) and one line per problem found.
fn health(reports: &[NodeReport]) -> (u8, Vec<String>) {
    let mut problems = Vec::new();
    let mut redis_port = false;
    for report in reports {
        let Err(error) = &report.status else {
            continue;
        };
        let who = match report.id {
            Some(id) => format!("member {id} ({})", report.addr),
            None => report.addr.clone(),
        };
        if matches!(error, Error::RedisPort { .. }) {
            redis_port = true;
            problems.push(error.to_string());
        } else {
            problems.push(format!("{who} does not answer: {error}"));
        }
    }
    if redis_port {
        return (EXIT_USAGE, problems);
    }
    let answering: Vec<&Status> = reports
        .iter()
        .filter_map(|r| r.status.as_ref().ok())
        .collect();
    if answering.is_empty() {
        problems.push("no member answers".into());
        return (EXIT_UNAVAILABLE, problems);
    }
    if !answering
        .iter()
        .any(|status| status.leader_id == status.node_id)
    {
        let named: Vec<String> = answering
            .iter()
            .filter(|status| status.leader_id != raftkv::raft::message::NO_NODE)
            .map(|status| format!("node {} names node {}", status.node_id, status.leader_id))
            .collect();
        let detail = if named.is_empty() {
            String::new()
        } else {
            format!(" ({}, which does not answer as leader)", named.join(", "))
        };
        problems.push(format!(
            "no leader known: no answering member leads{detail}"
        ));
        return (EXIT_UNAVAILABLE, problems);
    }
    let code = if problems.is_empty() {
        0
    } else {
        EXIT_DEGRADED
    };
    (code, problems)
}

/// The reports of the given addresses plus every member they name, once each.
fn gather(addrs: &[String], options: &ClientOptions, verbose: bool) -> Vec<NodeReport> {
    let mut queue: Vec<String> = addrs.to_vec();
    let mut reports: Vec<NodeReport> = Vec::new();
    while let Some(addr) = (!queue.is_empty()).then(|| queue.remove(0)) {
        if reports.iter().any(|report| report.addr == addr) {
            continue;
        }
        let status = status_at(&addr, options);
        if let Ok(status) = &status {
            queue.extend(
                status
                    .members
                    .iter()
                    .map(|member| member.client_addr.clone()),
            );
        }
        let metrics = status.is_ok().then(|| metrics_at(&addr, options));
        let nospace = matches!(&metrics, Some(Ok(counters))
            if counters.iter().any(|(name, value)| name == "storage.alarm_nospace" && *value > 0));
        reports.push(NodeReport {
            id: status.as_ref().ok().map(|status| status.node_id),
            addr,
            status,
            metrics: metrics.filter(|_| verbose),
            nospace,
        });
    }
    // Members that do not answer are named by the others' member lists.
    let named: Vec<(String, NodeId)> = reports
        .iter()
        .filter_map(|report| report.status.as_ref().ok())
        .flat_map(|status| &status.members)
        .map(|member| (member.client_addr.clone(), member.id))
        .collect();
    for report in &mut reports {
        if report.id.is_none() {
            report.id = named
                .iter()
                .find(|(addr, _)| *addr == report.addr)
                .map(|(_, id)| *id);
        }
    }
    // Reachable nodes by id, then the unreachable ones.
    reports.sort_by_key(|report| (report.status.is_err(), report.id));
    reports
}

fn render_table(reports: &[NodeReport]) -> String {
    let header = [
        "ID", "ADDRESS", "ROLE", "TERM", "COMMIT", "APPLIED", "LAST", "LEADER", "ALARM",
    ];
    let mut rows = vec![header.map(str::to_string).to_vec()];
    for report in reports {
        rows.push(match &report.status {
            Ok(status) => vec![
                status.node_id.to_string(),
                report.addr.clone(),
                status.role.name().to_string(),
                status.term.to_string(),
                status.commit_index.to_string(),
                status.applied_index.to_string(),
                status.last_index.to_string(),
                leader_name(status.leader_id),
                alarm_name(report.nospace),
            ],
            Err(error) => vec![
                report.id.map_or_else(|| "-".into(), |id| id.to_string()),
                report.addr.clone(),
                format!("unreachable ({})", error.kind()),
            ],
        });
    }
    let mut out = align(&rows);
    for report in reports.iter().filter(|report| report.nospace) {
        out.push_str(&format!(
            "\n{}: NOSPACE alarm: its data directory's disk is full; it refuses writes until \
             space is freed\n",
            report.addr
        ));
    }
    for report in reports {
        if let Some(metrics) = &report.metrics {
            out.push_str(&format!("\nmetrics of {}:\n", report.addr));
            match metrics {
                Ok(counters) => {
                    for (name, value) in counters {
                        out.push_str(&format!("  {name:<40} {value}\n"));
                    }
                }
                Err(error) => out.push_str(&format!("  unavailable: {error}\n")),
            }
        }
    }
    out
}

fn alarm_name(nospace: bool) -> String {
    if nospace { "NOSPACE" } else { "-" }.to_string()
}

fn leader_name(leader_id: u64) -> String {
    if leader_id == raftkv::raft::message::NO_NODE {
        "-".into()
    } else {
        leader_id.to_string()
    }
}

fn render_json(reports: &[NodeReport]) -> String {
    let nodes: Vec<serde_json::Value> = reports
        .iter()
        .map(|report| {
            let mut node = match &report.status {
                Ok(status) => serde_json::json!({
                    "address": report.addr,
                    "reachable": true,
                    "id": status.node_id,
                    "role": status.role.name(),
                    "term": status.term,
                    "commit_index": status.commit_index,
                    "applied_index": status.applied_index,
                    "last_index": status.last_index,
                    "leader_id": status.leader_id,
                    "alarms": if report.nospace { vec!["NOSPACE"] } else { Vec::new() },
                }),
                Err(error) => serde_json::json!({
                    "address": report.addr,
                    "reachable": false,
                    "id": report.id,
                    "error": error.to_string(),
                }),
            };
            if let (Some(Ok(counters)), Some(object)) = (&report.metrics, node.as_object_mut()) {
                let metrics: BTreeMap<&str, u64> = counters
                    .iter()
                    .map(|(name, value)| (name.as_str(), *value))
                    .collect();
                object.insert("metrics".into(), serde_json::json!(metrics));
            }
            node
        })
        .collect();
    serde_json::json!({ "nodes": nodes }).to_string()
}

#[cfg(test)]
mod tests {
    //! Goal: the status table lines up and marks unreachable members; the JSON says the
    //! same. Method: rendered reports checked cell by cell.

    use raftkv::codec::client::{Member, Role};

    use super::*;

    #[test]
    fn status_table_aligns_columns_and_marks_unreachable_members() {
        let status = Status {
            node_id: 1,
            role: Role::Leader,
            term: 3,
            leader_id: 1,
            commit_index: 10,
            applied_index: 9,
            last_index: 11,
            config_index: 0,
            promote_distance_max: 1000,
            members: vec![Member {
                id: 1,
                voter: true,
                peer_addr: "127.0.0.1:6001".into(),
                client_addr: "127.0.0.1:7001".into(),
                match_index: 11,
            }],
        };
        let reports = [
            NodeReport {
                addr: "127.0.0.1:7001".into(),
                id: Some(1),
                status: Ok(status),
                metrics: None,
                nospace: true,
            },
            NodeReport {
                addr: "127.0.0.1:7002".into(),
                id: None,
                status: Err(Error::Timeout),
                metrics: None,
                nospace: false,
            },
        ];
        let table = render_table(&reports);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert!(lines[0].starts_with("ID  ADDRESS         ROLE"), "{table}");
        assert!(
            lines[1].starts_with("1   127.0.0.1:7001  leader"),
            "{table}"
        );
        assert!(lines[1].ends_with("NOSPACE"), "{table}");
        assert!(lines[2].ends_with("unreachable (timeout)"), "{table}");
        assert!(lines[4].contains("NOSPACE alarm"), "{table}");
        let json: serde_json::Value =
            serde_json::from_str(&render_json(&reports)).expect("valid JSON");
        assert_eq!(json["nodes"][0]["role"], "leader");
        assert_eq!(json["nodes"][0]["alarms"][0], "NOSPACE");
        assert_eq!(json["nodes"][1]["reachable"], false);
    }

    #[test]
    fn health_names_members_down_and_a_missing_leader() {
        let status = |id: NodeId, leader_id: NodeId| Status {
            node_id: id,
            role: if id == leader_id {
                Role::Leader
            } else {
                Role::Follower
            },
            term: 2,
            leader_id,
            commit_index: 1,
            applied_index: 1,
            last_index: 1,
            config_index: 0,
            promote_distance_max: 1000,
            members: Vec::new(),
        };
        let report = |id: NodeId, status: Result<Status, Error>| NodeReport {
            addr: format!("127.0.0.1:700{id}"),
            id: Some(id),
            status,
            metrics: None,
            nospace: false,
        };
        let whole = [report(1, Ok(status(1, 1))), report(2, Ok(status(2, 1)))];
        assert_eq!(health(&whole), (0, Vec::new()));
        let degraded = [report(1, Ok(status(1, 1))), report(2, Err(Error::Timeout))];
        let (code, problems) = health(&degraded);
        assert_eq!(code, EXIT_DEGRADED);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("member 2 (127.0.0.1:7002) does not answer"));
        let leaderless = [report(1, Err(Error::Timeout)), report(2, Ok(status(2, 1)))];
        let (code, problems) = health(&leaderless);
        assert_eq!(code, EXIT_UNAVAILABLE);
        assert!(problems[1].starts_with("no leader known"), "{problems:?}");
        assert!(problems[1].contains("node 2 names node 1"), "{problems:?}");
        let (code, _) = health(&[report(1, Err(Error::Timeout))]);
        assert_eq!(code, EXIT_UNAVAILABLE);
    }
}
