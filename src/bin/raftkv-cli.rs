//! raftkv-cli: the command-line client of a raftkv cluster.
//!
//! Each command is one call of [`raftkv::client::Client`], which finds the leader,
//! follows redirects and retries until `--timeout-ms`. `status` asks every member
//! directly (one attempt each), so an unreachable member shows as such.
//!
//! Exit codes: 0 ok, 1 not found, 2 usage error, 3 compare failed (cas, or a txn whose
//! conditions did not hold), 4 unavailable / timeout / unreachable, 5 any other error.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};
use raftkv::client::{CasOutcome, Client, ClientOptions, Error, TxnOutcome, metrics_at, status_at};
use raftkv::codec::client::Status;
use raftkv::kv::{Compare, CompareOp, Op, OpResult};

const EXIT_NOT_FOUND: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_COMPARE_FAILED: u8 = 3;
const EXIT_UNAVAILABLE: u8 = 4;
const EXIT_OTHER: u8 = 5;

const AFTER_HELP: &str = "\
Transactions:
  raftkv-cli --cluster A txn --if 'COND' ... --then 'OP' ... --else 'OP' ...
  Runs the --then ops if every --if condition holds, else the --else ops, atomically.
  Words are separated by spaces (keys and values cannot contain spaces here).
  Conditions: 'KEY = VALUE', 'KEY != VALUE', 'KEY < VALUE', 'KEY > VALUE' (bytewise),
              'KEY exists', 'KEY absent'.
  Ops:        'put KEY VALUE', 'del KEY', 'get KEY'.
  Prints 'then' or 'else' (the branch that ran), then one line per op: OK, the value
  read, or (nil). Example:
    raftkv-cli --cluster 127.0.0.1:7001 txn --if 'lock absent' \\
        --then 'put lock me' --else 'get lock'

Exit codes: 0 ok, 1 not found, 2 usage error, 3 cas or txn compare failed,
            4 unavailable, timeout or unreachable, 5 other errors.";

/// Command-line client of a raftkv cluster.
#[derive(Debug, Parser)]
#[command(name = "raftkv-cli", version, after_help = AFTER_HELP)]
struct Cli {
    /// Client addresses of cluster members (any subset), comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        required = true,
        value_name = "ADDR[,ADDR...]"
    )]
    cluster: Vec<String>,
    /// Time allowed for one request, retries and redirects included, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    #[command(subcommand)]
    command: CliCommand,
}

#[derive(Debug, Subcommand)]
enum CliCommand {
    /// Set KEY to VALUE.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Print the value of KEY (exit 1 if absent).
    Get {
        /// The key.
        key: String,
        /// Read from whichever member answers, possibly stale, instead of the leader.
        #[arg(long)]
        stale: bool,
    },
    /// Remove KEY (exit 1 if it was absent).
    Del {
        /// The key.
        key: String,
    },
    /// Set KEY to NEW if its value is EXPECTED: `cas KEY EXPECTED NEW`, or
    /// `cas --absent KEY NEW` to require that KEY is absent (exit 3 on mismatch).
    Cas {
        /// Require KEY to be absent instead of giving EXPECTED.
        #[arg(long)]
        absent: bool,
        /// The key.
        key: String,
        /// EXPECTED NEW, or NEW with --absent.
        #[arg(num_args = 1..=2, required = true, value_name = "EXPECTED NEW")]
        values: Vec<String>,
    },
    /// Atomic conditional transaction (syntax below; exit 3 if the else branch ran).
    Txn {
        /// A condition ('KEY = VALUE', 'KEY exists', ...); repeat for more.
        #[arg(long = "if", value_name = "COND")]
        conditions: Vec<String>,
        /// An op run when every condition holds ('put K V', 'del K', 'get K').
        #[arg(long = "then", value_name = "OP")]
        then_ops: Vec<String>,
        /// An op run otherwise.
        #[arg(long = "else", value_name = "OP")]
        else_ops: Vec<String>,
    },
    /// Print every member's id, address, role, term, commit/applied/last index, leader.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Add each node's metrics.
        #[arg(long)]
        verbose: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = ClientOptions {
        request_timeout: Duration::from_millis(cli.timeout_ms.max(1)),
        ..ClientOptions::default()
    };
    let code = match cli.command {
        CliCommand::Status { json, verbose } => status(&cli.cluster, &options, json, verbose),
        command => match Client::connect(&cli.cluster, options) {
            Ok(mut client) => run(&mut client, command),
            Err(error) => fail(&error),
        },
    };
    ExitCode::from(code)
}

/// Runs one key-value command and returns the exit code.
fn run(client: &mut Client, command: CliCommand) -> u8 {
    let outcome = match command {
        CliCommand::Put { key, value } => client
            .put(key.as_bytes(), value.as_bytes())
            .map(|()| print_line(b"OK")),
        CliCommand::Get { key, stale } => {
            let value = if stale {
                client.get_stale(key.as_bytes())
            } else {
                client.get(key.as_bytes())
            };
            value.map(|value| match value {
                Some(value) => print_line(&value),
                None => not_found(&key),
            })
        }
        CliCommand::Del { key } => client.delete(key.as_bytes()).map(|existed| {
            if existed {
                print_line(b"OK")
            } else {
                not_found(&key)
            }
        }),
        CliCommand::Cas {
            absent,
            key,
            values,
        } => {
            let (expected, new) = match (absent, values.as_slice()) {
                (true, [new]) => (None, new),
                (false, [expected, new]) => (Some(expected.as_bytes()), new),
                _ => usage_error("cas takes KEY EXPECTED NEW, or --absent KEY NEW"),
            };
            client
                .cas(key.as_bytes(), expected, new.as_bytes())
                .map(|outcome| match outcome {
                    CasOutcome::Swapped => print_line(b"OK"),
                    CasOutcome::Failed { current } => {
                        let current = current.map_or_else(
                            || "absent".to_string(),
                            |value| format!("{:?}", String::from_utf8_lossy(&value)),
                        );
                        eprintln!("cas failed: current value is {current}");
                        EXIT_COMPARE_FAILED
                    }
                })
        }
        CliCommand::Txn {
            conditions,
            then_ops,
            else_ops,
        } => {
            let (compare, success, failure) =
                parse_txn(&conditions, &then_ops, &else_ops).unwrap_or_else(|e| usage_error(&e));
            client
                .txn(&compare, &success, &failure)
                .map(|outcome| print_txn(&outcome))
        }
        CliCommand::Status { .. } => unreachable!("status is handled before connecting"),
    };
    outcome.unwrap_or_else(|error| fail(&error))
}

fn print_line(bytes: &[u8]) -> u8 {
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (a pipe into `head`) is not an error of the request.
    let _ = stdout
        .write_all(bytes)
        .and_then(|()| stdout.write_all(b"\n"));
    0
}

fn not_found(key: &str) -> u8 {
    eprintln!("not found: {key}");
    EXIT_NOT_FOUND
}

fn print_txn(outcome: &TxnOutcome) -> u8 {
    print_line(if outcome.succeeded { b"then" } else { b"else" });
    for result in &outcome.results {
        match result {
            OpResult::Done => print_line(b"OK"),
            OpResult::Value(Some(value)) => print_line(value),
            OpResult::Value(None) => print_line(b"(nil)"),
        };
    }
    if outcome.succeeded {
        0
    } else {
        EXIT_COMPARE_FAILED
    }
}

/// Prints the error and returns its exit code.
fn fail(error: &Error) -> u8 {
    eprintln!("raftkv-cli: {error}");
    exit_code(error)
}

fn exit_code(error: &Error) -> u8 {
    match error {
        Error::Unavailable(_) | Error::Timeout | Error::Io { .. } => EXIT_UNAVAILABLE,
        Error::Invalid(_) => EXIT_USAGE,
        Error::Protocol { .. }
        | Error::Refused(_)
        | Error::SessionExpired
        | Error::StaleSequence => EXIT_OTHER,
    }
}

/// Exits with clap's usage error format and code 2.
fn usage_error(message: &str) -> ! {
    Cli::command()
        .error(ErrorKind::InvalidValue, message)
        .exit()
}

type Txn = (Vec<Compare>, Vec<Op>, Vec<Op>);

/// Parses the `--if`, `--then` and `--else` texts (syntax in [`AFTER_HELP`]).
fn parse_txn(
    conditions: &[String],
    then_ops: &[String],
    else_ops: &[String],
) -> Result<Txn, String> {
    let compare = conditions
        .iter()
        .map(|text| parse_condition(text))
        .collect::<Result<_, _>>()?;
    let parse_ops = |texts: &[String]| {
        texts
            .iter()
            .map(|text| parse_op(text))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok((compare, parse_ops(then_ops)?, parse_ops(else_ops)?))
}

fn parse_condition(text: &str) -> Result<Compare, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let (key, op, value) = match words.as_slice() {
        [key, "exists"] => (key, CompareOp::Exists, ""),
        [key, "absent"] => (key, CompareOp::Absent, ""),
        [key, op, value] => {
            let op = match *op {
                "=" | "==" => CompareOp::Eq,
                "!=" => CompareOp::NotEq,
                "<" => CompareOp::Lt,
                ">" => CompareOp::Gt,
                other => return Err(format!("unknown comparison {other:?} in --if {text:?}")),
            };
            (key, op, *value)
        }
        _ => {
            return Err(format!(
                "--if {text:?}: expected 'KEY OP VALUE', 'KEY exists' or 'KEY absent'"
            ));
        }
    };
    Ok(Compare {
        key: key.as_bytes().to_vec(),
        op,
        value: value.as_bytes().to_vec(),
    })
}

fn parse_op(text: &str) -> Result<Op, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.as_slice() {
        ["put", key, value] => Ok(Op::Put {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
        }),
        ["del", key] => Ok(Op::Delete {
            key: key.as_bytes().to_vec(),
        }),
        ["get", key] => Ok(Op::Get {
            key: key.as_bytes().to_vec(),
        }),
        _ => Err(format!(
            "op {text:?}: expected 'put KEY VALUE', 'del KEY' or 'get KEY'"
        )),
    }
}

/// One member's answer to `status`.
struct NodeReport {
    addr: String,
    status: Result<Status, Error>,
    metrics: Option<Result<Vec<(String, u64)>, Error>>,
}

/// Asks every member for its status (and metrics), prints the table or JSON.
fn status(addrs: &[String], options: &ClientOptions, json: bool, verbose: bool) -> u8 {
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
        let metrics = (verbose && status.is_ok()).then(|| metrics_at(&addr, options));
        reports.push(NodeReport {
            addr,
            status,
            metrics,
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
        "ID", "ADDRESS", "ROLE", "TERM", "COMMIT", "APPLIED", "LAST", "LEADER",
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
            ],
            Err(error) => vec![
                "-".into(),
                report.addr.clone(),
                format!("unreachable ({})", error.kind()),
            ],
        });
    }
    let mut widths = vec![0; header.len()];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
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
    //! Goal: the txn syntax parses what --help documents and rejects the rest; the status
    //! table lines up and shows unreachable members. Method: tables of (input, want).
    use raftkv::codec::client::{Member, Role};

    use super::*;

    #[test]
    fn txn_syntax_parses_documented_forms() {
        let cases: [(&str, CompareOp, &str); 6] = [
            ("k = v", CompareOp::Eq, "v"),
            ("k != v", CompareOp::NotEq, "v"),
            ("k < v", CompareOp::Lt, "v"),
            ("k > v", CompareOp::Gt, "v"),
            ("k exists", CompareOp::Exists, ""),
            ("  k   absent ", CompareOp::Absent, ""),
        ];
        for (i, (text, op, value)) in cases.into_iter().enumerate() {
            let want = Compare {
                key: b"k".to_vec(),
                op,
                value: value.as_bytes().to_vec(),
            };
            assert_eq!(parse_condition(text), Ok(want), "#{i}: {text}");
        }
        assert_eq!(
            parse_op("put k v"),
            Ok(Op::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec()
            })
        );
        assert_eq!(parse_op("del k"), Ok(Op::Delete { key: b"k".to_vec() }));
        assert_eq!(parse_op("get k"), Ok(Op::Get { key: b"k".to_vec() }));
        for bad in ["k", "k ~ v", "k = v w", ""] {
            assert!(parse_condition(bad).is_err(), "condition {bad:?}");
        }
        for bad in ["put k", "del", "get a b", "incr k"] {
            assert!(parse_op(bad).is_err(), "op {bad:?}");
        }
        let parsed = parse_txn(&["a = 1".into()], &["put a 2".into()], &["get a".into()]);
        assert_eq!(
            parsed.map(|(c, s, f)| (c.len(), s.len(), f.len())),
            Ok((1, 1, 1))
        );
    }

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
            },
            NodeReport {
                addr: "127.0.0.1:7002".into(),
                status: Err(Error::Timeout),
                metrics: None,
            },
        ];
        let table = render_table(&reports);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("ID  ADDRESS         ROLE"), "{table}");
        assert!(
            lines[1].starts_with("1   127.0.0.1:7001  leader"),
            "{table}"
        );
        assert!(lines[2].ends_with("unreachable (timeout)"), "{table}");
        let json: serde_json::Value =
            serde_json::from_str(&render_json(&reports)).expect("valid JSON");
        assert_eq!(json["nodes"][0]["role"], "leader");
        assert_eq!(json["nodes"][1]["reachable"], false);
    }

    #[test]
    fn errors_map_to_documented_exit_codes() {
        let cases = [
            (Error::Timeout, EXIT_UNAVAILABLE),
            (Error::Unavailable("x".into()), EXIT_UNAVAILABLE),
            (Error::Invalid("x".into()), EXIT_USAGE),
            (Error::Refused("x".into()), EXIT_OTHER),
        ];
        for (i, (error, want)) in cases.into_iter().enumerate() {
            assert_eq!(exit_code(&error), want, "#{i}: {error}");
        }
    }
}
