//! raftkv-cli: the command-line client of a raftkv cluster.
//!
//! Each key-value command is one call of [`raftkv::client::Client`], which finds the
//! leader, follows redirects and retries until `--timeout-ms`. `status` asks every member
//! directly (one attempt each), so an unreachable member shows as such.
//!
//! Membership commands (`member list|add|promote|remove`, `transfer-leader`) talk to the
//! leader and may take longer than one request: they repeat retryable failures
//! (unavailable, timeout, unreachable) until their `--wait` bound, and `member add`
//! watches the new learner catch up before promoting it. Each prints one `OK: ...` line on
//! stdout when done; progress goes to stderr.
//!
//! Exit codes: 0 ok, 1 not found, 2 usage error (a malformed `--cluster` address, a Redis
//! port given as a client address), 3 compare failed (cas, or a txn whose
//! conditions did not hold), 4 unavailable / timeout / unreachable (for membership
//! commands: the wait ended first), 5 refused (an invalid membership change) or any other
//! error, 6 (`status` only) a member does not answer although the cluster has a leader.
//! `status` exits 4 when no member answers or none leads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};
use raftkv::client::{CasOutcome, Client, ClientOptions, Error, KeyTtl, TxnOutcome};
use raftkv::kv::{Compare, CompareOp, Op, OpResult};
use raftkv::raft::message::NodeId;
use raftkv::tls::ClientTls;

mod certs;
mod member;
mod snapshot;
mod status;
mod table;
mod values;
mod watch;

use values::Output;

const EXIT_NOT_FOUND: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_COMPARE_FAILED: u8 = 3;
const EXIT_UNAVAILABLE: u8 = 4;
const EXIT_OTHER: u8 = 5;
const EXIT_DEGRADED: u8 = 6;

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

Binary-safe values and ranges:
  printf 'a\0b' | raftkv-cli --cluster A put KEY -      # the value from stdin
  raftkv-cli --cluster A get KEY --raw > file           # the bytes, no newline
  raftkv-cli --cluster A put KEY 00ff --hex ; get KEY --hex
  raftkv-cli --cluster A range START END --limit N | --prefix P [--keys-only | --count]
  raftkv-cli --cluster A watch KEY | --prefix P     # changes, until interrupted
  raftkv-cli --cluster A put KEY VALUE --ttl 30 ; ttl KEY   # expiry, leader's clock

Membership (talks to the leader; retries until --wait):
  raftkv-cli --cluster A member list [--json]
  raftkv-cli --cluster A member add ID PEER_ADDR CLIENT_ADDR [--learner] [--wait SECS]
  raftkv-cli --cluster A member promote ID [--wait SECS]
  raftkv-cli --cluster A member remove ID [--wait SECS]
  raftkv-cli --cluster A transfer-leader ID [--wait SECS]
  `member add` adds ID as a learner, prints its lag to stderr while it catches up, then
  promotes it to voter (--learner: stop after adding). Start the new node first with
  `raftkv-server --config FILE --join CLUSTER_ADDR`.

TLS (docs/SECURITY.md):
  raftkv-cli certs init DIR [--nodes 3] [--host NAME]...   # a development CA and certs
  raftkv-cli --cluster A --cacert DIR/ca.pem [--cert F --key F] get KEY

Backup:
  raftkv-cli --cluster A snapshot save FILE   # from the leader, verified
  raftkv-log snapshot-restore FILE --data-dir DIR --node-id N --cluster-id C \\
      --member ID=PEER,CLIENT ...             # each node of a NEW cluster

Exit codes: 0 ok, 1 not found,
            2 usage error (also: a malformed --cluster address, or a Redis port given
              as a client address),
            3 cas or txn compare failed,
            4 unavailable, timeout or unreachable (membership: --wait ended first;
              status: no member answers, or none leads),
            5 refused (an invalid membership change) or other errors (also: writing
              stdout or the snapshot file failed; a closed pipe is not an error),
            6 status: a member does not answer (the others have a leader).
  status names each member that does not answer, and a missing leader, on stderr.";

/// Command-line client of a raftkv cluster.
#[derive(Debug, Parser)]
#[command(name = "raftkv-cli", version, after_help = AFTER_HELP)]
struct Cli {
    /// Client addresses of cluster members (any subset), comma-separated.
    /// Required by every command but `certs`.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "ADDR[,ADDR...]",
        value_parser = parse_addr
    )]
    cluster: Vec<String>,
    /// Time allowed for one request, retries and redirects included, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Speak TLS; the nodes' certificates must chain to this CA file (PEM) and name the
    /// address dialed.
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// A client certificate (PEM) to present, for nodes that require one (with --key).
    #[arg(long, value_name = "FILE", requires = "key", requires = "cacert")]
    cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    #[command(subcommand)]
    command: CliCommand,
}

#[derive(Debug, Subcommand)]
enum CliCommand {
    /// Set KEY to VALUE (`-`: the bytes of stdin, to its end).
    Put {
        /// The key.
        key: String,
        /// The value, or `-` to read it from stdin.
        value: String,
        /// VALUE (or stdin) is hexadecimal.
        #[arg(long)]
        hex: bool,
        /// The key expires this many seconds after the leader takes the write (as
        /// Redis `SET KEY VALUE EX SECONDS`).
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=4_000_000_000))]
        ttl: Option<u64>,
    },
    /// Print the seconds KEY has left before it expires, rounded up (-1: it never
    /// expires; exit 1 if absent), by the leader's clock.
    Ttl {
        /// The key.
        key: String,
        /// Print milliseconds instead of seconds.
        #[arg(long)]
        ms: bool,
    },
    /// Print the value of KEY (exit 1 if absent).
    Get {
        /// The key.
        key: String,
        /// Read from whichever member answers, possibly stale, instead of the leader.
        #[arg(long)]
        stale: bool,
        /// Write the value's bytes unchanged, with no newline.
        #[arg(long, conflicts_with = "hex")]
        raw: bool,
        /// Write the value in hexadecimal.
        #[arg(long)]
        hex: bool,
    },
    /// Print the keys in [START, END) in order, each followed by its value (one line
    /// each); every page of the answer is a linearizable read.
    Range {
        /// The first key (default: the first key of the store).
        #[arg(conflicts_with = "prefix")]
        start: Option<String>,
        /// The end, excluded (default: to the last key).
        #[arg(conflicts_with = "prefix")]
        end: Option<String>,
        /// The keys starting with P instead of START END.
        #[arg(long, value_name = "P")]
        prefix: Option<String>,
        /// At most N keys (0: all).
        #[arg(long, default_value_t = 0, value_name = "N")]
        limit: u64,
        /// Print the keys only.
        #[arg(long)]
        keys_only: bool,
        /// Print only the number of keys.
        #[arg(long, conflicts_with = "keys_only")]
        count: bool,
        /// Read from whichever member answers, possibly stale.
        #[arg(long)]
        stale: bool,
        /// Keys and values (and START, END, P) in hexadecimal.
        #[arg(long)]
        hex: bool,
    },
    /// Remove KEY (exit 1 if it was absent).
    Del {
        /// The key.
        key: String,
    },
    /// Add BY (default 1, may be negative) to the integer in KEY (absent: 0) and print
    /// the new value; refused (exit 5) if the value is not an integer or would overflow.
    Incr {
        /// The key.
        key: String,
        /// The amount added.
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        by: i64,
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
    /// Print the changes a member applies to KEY (or to the keys starting with P), one
    /// line each (`REVISION PUT KEY VALUE` or `REVISION DELETE KEY`), until interrupted.
    Watch {
        /// The key.
        #[arg(required_unless_present = "prefix", conflicts_with = "prefix")]
        key: Option<String>,
        /// Watch every key starting with P.
        #[arg(long, value_name = "P")]
        prefix: Option<String>,
        /// Print keys and values in hexadecimal.
        #[arg(long)]
        hex: bool,
    },
    /// List, add, promote or remove members.
    Member {
        #[command(subcommand)]
        command: MemberCommand,
    },
    /// Hand leadership to voter ID and wait until it leads; prints the new leader and term.
    TransferLeader {
        /// The voter to lead next.
        #[arg(value_parser = node_id_parser())]
        id: NodeId,
        /// Seconds to wait for ID to lead (exit 4 if it does not).
        #[arg(long, default_value_t = 10, value_name = "SECS")]
        wait: u64,
    },
    /// Save a consistent snapshot of the whole store from the leader.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Development TLS certificates (no --cluster needed).
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
}

/// The `certs` subcommands.
#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Write a development CA and certificates for nodes 1..=N and one client into DIR
    /// (an existing CA in DIR is kept and signs what is added).
    Init {
        /// The directory (created if needed).
        dir: PathBuf,
        /// Nodes 1..=N get a certificate (naming localhost, 127.0.0.1 and node-ID).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=1000))]
        nodes: u64,
        /// Another name every node certificate carries (a host name or IP address the
        /// nodes are reached at); repeatable.
        #[arg(long = "host", value_name = "NAME")]
        hosts: Vec<String>,
    },
}

/// The `snapshot` subcommands.
#[derive(Debug, Subcommand)]
enum SnapshotCommand {
    /// Write the state machine as the leader has applied it now (every write it
    /// acknowledged before) to FILE, verified; restore it into a new cluster with
    /// `raftkv-log snapshot-restore FILE ...`.
    Save {
        /// Where to write it (replaced only once the new file is complete and verified).
        file: PathBuf,
    },
}

/// The `member` subcommands.
#[derive(Debug, Subcommand)]
enum MemberCommand {
    /// Print the members as the leader sees them: role, addresses, match index, lag.
    ///
    /// MATCH is the last log index the leader knows the member holds; LAG is how many
    /// entries of the leader's log it is missing.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add node ID as a learner, wait until it has caught up, then promote it to voter.
    Add {
        /// The new node's id (non-zero, not used by a member).
        #[arg(value_parser = node_id_parser())]
        id: NodeId,
        /// The ip:port the new node's peers dial.
        peer_addr: SocketAddr,
        /// The ip:port the new node's clients connect to.
        client_addr: SocketAddr,
        /// Stop after adding it as a learner (promote later with `member promote`).
        #[arg(long)]
        learner: bool,
        /// Seconds to keep trying, catch-up included (exit 4 after; the node stays a learner).
        #[arg(long, default_value_t = 300, value_name = "SECS")]
        wait: u64,
    },
    /// Promote learner ID to voter once it has caught up.
    Promote {
        /// The learner.
        #[arg(value_parser = node_id_parser())]
        id: NodeId,
        /// Seconds to keep trying, catch-up included (exit 4 after).
        #[arg(long, default_value_t = 300, value_name = "SECS")]
        wait: u64,
    },
    /// Remove member ID (a learner or a voter, the leader included).
    Remove {
        /// The member.
        #[arg(value_parser = node_id_parser())]
        id: NodeId,
        /// Seconds to keep trying (exit 4 after).
        #[arg(long, default_value_t = 300, value_name = "SECS")]
        wait: u64,
    },
}

/// A `--cluster` address: `HOST:PORT`, else a usage error naming it (exit 2).
fn parse_addr(text: &str) -> Result<String, String> {
    raftkv::client::check_addr(text)
        .map(|()| text.to_string())
        .map_err(|error| match error {
            Error::Invalid(message) => message,
            other => other.to_string(),
        })
}

/// Node ids are non-zero (0 is `NO_NODE`).
fn node_id_parser() -> clap::builder::RangedU64ValueParser<NodeId> {
    clap::value_parser!(u64).range(1..)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let CliCommand::Certs {
        command: CertsCommand::Init { dir, nodes, hosts },
    } = &cli.command
    {
        return ExitCode::from(certs::init(dir, *nodes, hosts));
    }
    if cli.cluster.is_empty() {
        Cli::command()
            .error(
                ErrorKind::MissingRequiredArgument,
                "the following required arguments were not provided:\n  --cluster <ADDR[,ADDR...]>",
            )
            .exit();
    }
    let tls = cli.cacert.as_deref().map(|ca| {
        let identity = cli.cert.as_deref().zip(cli.key.as_deref());
        ClientTls::load(ca, identity).unwrap_or_else(|e| usage_error(&e.to_string()))
    });
    let options = ClientOptions {
        request_timeout: Duration::from_millis(cli.timeout_ms.max(1)),
        tls,
        ..ClientOptions::default()
    };
    let code = match cli.command {
        CliCommand::Status { json, verbose } => {
            status::status(&cli.cluster, &options, json, verbose)
        }
        CliCommand::Watch { key, prefix, hex } => {
            let is_prefix = prefix.is_some();
            let key = key.or(prefix).unwrap_or_default();
            match watch::run(&cli.cluster, &options, key.as_bytes(), is_prefix, hex) {
                Ok(()) => 0,
                Err(error) => fail(&error),
            }
        }
        command => match Client::connect(&cli.cluster, options) {
            Ok(mut client) => match command {
                CliCommand::Member { command } => {
                    member::run(&mut client, command, &cli.cluster.join(","))
                }
                CliCommand::TransferLeader { id, wait } => member::transfer(&mut client, id, wait),
                CliCommand::Snapshot {
                    command: SnapshotCommand::Save { file },
                } => snapshot::save(&mut client, &file),
                command => run(&mut client, command),
            },
            Err(error) => fail(&error),
        },
    };
    ExitCode::from(code)
}

/// Runs one key-value command and returns the exit code.
fn run(client: &mut Client, command: CliCommand) -> u8 {
    let outcome = match command {
        CliCommand::Put {
            key,
            value,
            hex,
            ttl,
        } => {
            let value = values::read_value(&value, hex).unwrap_or_else(|e| usage_error(&e));
            let written = match ttl {
                Some(seconds) => {
                    client.put_with_ttl(key.as_bytes(), &value, Duration::from_secs(seconds))
                }
                None => client.put(key.as_bytes(), &value),
            };
            written.map(|()| print_line(b"OK"))
        }
        CliCommand::Ttl { key, ms } => client.ttl(key.as_bytes()).map(|ttl| match ttl {
            KeyTtl::Absent => not_found(&key),
            KeyTtl::Persistent => print_line(b"-1"),
            KeyTtl::Expires(left) => {
                let shown = if ms {
                    left.as_millis()
                } else {
                    left.as_millis().div_ceil(1000)
                };
                print_line(shown.to_string().as_bytes())
            }
        }),
        CliCommand::Get {
            key,
            stale,
            raw,
            hex,
        } => {
            let value = if stale {
                client.get_stale(key.as_bytes())
            } else {
                client.get(key.as_bytes())
            };
            value.map(|value| match value {
                Some(value) => Output::of(raw, hex).print(&value),
                None => not_found(&key),
            })
        }
        CliCommand::Range {
            start,
            end,
            prefix,
            limit,
            keys_only,
            count,
            stale,
            hex,
        } => values::range(
            client,
            &values::RangeArgs {
                start,
                end,
                prefix,
                limit,
                keys_only,
                count,
                stale,
                hex,
            },
        ),
        CliCommand::Del { key } => client.delete(key.as_bytes()).map(|existed| {
            if existed {
                print_line(b"OK")
            } else {
                not_found(&key)
            }
        }),
        CliCommand::Incr { key, by } => client
            .incr(key.as_bytes(), by)
            .map(|value| print_line(value.to_string().as_bytes())),
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
        CliCommand::Status { .. }
        | CliCommand::Watch { .. }
        | CliCommand::Member { .. }
        | CliCommand::TransferLeader { .. }
        | CliCommand::Snapshot { .. }
        | CliCommand::Certs { .. } => {
            unreachable!("handled in main")
        }
    };
    outcome.unwrap_or_else(|error| fail(&error))
}

fn print_line(bytes: &[u8]) -> u8 {
    values::write_stdout(&[bytes, b"\n"])
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
            OpResult::Integer(value) => print_line(value.to_string().as_bytes()),
            OpResult::Unchanged => print_line(b"(unchanged)"),
            OpResult::Rejected(error) => print_line(format!("(error) {error}").as_bytes()),
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
        Error::Invalid(_) | Error::RedisPort { .. } => EXIT_USAGE,
        Error::Protocol { .. }
        | Error::Refused(_)
        | Error::SessionExpired
        | Error::StaleSequence
        | Error::Output(_) => EXIT_OTHER,
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

#[cfg(test)]
mod tests {
    //! Goal: the txn syntax parses what --help documents and rejects the rest; the status
    //! and member tables line up and show what they promise; the membership commands
    //! retry what may pass, stop on refusals and report the wait ending with exit 4.
    //! Method: tables of (input, want), and a scripted [`Membership`] that logs its calls.

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
    fn membership_arguments_parse_and_bad_ones_are_usage_errors() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["raftkv-cli", "--cluster", "127.0.0.1:7001"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv).map(|cli| cli.command)
        };
        let add = parse(&[
            "member",
            "add",
            "4",
            "127.0.0.1:6004",
            "127.0.0.1:7004",
            "--learner",
        ]);
        assert!(
            matches!(
                add,
                Ok(CliCommand::Member {
                    command: MemberCommand::Add {
                        id: 4,
                        learner: true,
                        wait: 300,
                        ..
                    }
                })
            ),
            "{add:?}"
        );
        let transfer = parse(&["transfer-leader", "2"]);
        assert!(
            matches!(transfer, Ok(CliCommand::TransferLeader { id: 2, wait: 10 })),
            "{transfer:?}"
        );
        let promote = parse(&["member", "promote", "4", "--wait", "5"]);
        assert!(
            matches!(
                promote,
                Ok(CliCommand::Member {
                    command: MemberCommand::Promote { id: 4, wait: 5 }
                })
            ),
            "{promote:?}"
        );
        let bad: [&[&str]; 4] = [
            &["member", "remove", "0"],
            &["member", "add", "4", "localhost", "127.0.0.1:7004"],
            &["member", "add", "4", "127.0.0.1:6004"],
            &["transfer-leader", "x"],
        ];
        for (i, args) in bad.into_iter().enumerate() {
            let error = parse(args).expect_err("rejected");
            assert_eq!(error.exit_code(), i32::from(EXIT_USAGE), "#{i}: {args:?}");
        }
    }

    #[test]
    fn errors_map_to_documented_exit_codes() {
        let cases = [
            (Error::Timeout, EXIT_UNAVAILABLE),
            (Error::Unavailable("x".into()), EXIT_UNAVAILABLE),
            (Error::Invalid("x".into()), EXIT_USAGE),
            (Error::Refused("x".into()), EXIT_OTHER),
            (
                Error::RedisPort {
                    addr: "127.0.0.1:6379".into(),
                },
                EXIT_USAGE,
            ),
        ];
        for (i, (error, want)) in cases.into_iter().enumerate() {
            assert_eq!(exit_code(&error), want, "#{i}: {error}");
        }
    }
}
