//! `raftkv-cli status`: every member asked directly (one attempt each, so an
//! unreachable member shows as such), rendered as an aligned table or as JSON.

use std::collections::BTreeMap;

use raftkv::client::{ClientOptions, Error, metrics_at, status_at};
use raftkv::codec::client::Status;

use crate::table::align;
use crate::{EXIT_UNAVAILABLE, print_line};

/// One member's answer to `status`.
struct NodeReport {
    addr: String,
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
    if reports.iter().any(|report| report.status.is_ok()) {
        0
    } else {
        EXIT_UNAVAILABLE
    }
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
            addr,
            status,
            metrics: metrics.filter(|_| verbose),
            nospace,
        });
    }
    // Reachable nodes by id, then the unreachable ones.
    reports.sort_by_key(|report| match &report.status {
        Ok(status) => (0, status.node_id),
        Err(_) => (1, 0),
    });
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
                "-".into(),
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
                status: Ok(status),
                metrics: None,
                nospace: true,
            },
            NodeReport {
                addr: "127.0.0.1:7002".into(),
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
}
