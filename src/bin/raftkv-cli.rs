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
//! Exit codes: 0 ok, 1 not found, 2 usage error, 3 compare failed (cas, or a txn whose
//! conditions did not hold), 4 unavailable / timeout / unreachable (for membership
//! commands: the wait ended first), 5 refused (an invalid membership change) or any other
//! error.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};
use raftkv::client::{CasOutcome, Client, ClientOptions, Error, TxnOutcome, metrics_at, status_at};
use raftkv::codec::client::Status;
use raftkv::kv::{Compare, CompareOp, Op, OpResult};
use raftkv::raft::message::NodeId;

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

Membership (talks to the leader; retries until --wait):
  raftkv-cli --cluster A member list [--json]
  raftkv-cli --cluster A member add ID PEER_ADDR CLIENT_ADDR [--learner] [--wait SECS]
  raftkv-cli --cluster A member promote ID [--wait SECS]
  raftkv-cli --cluster A member remove ID [--wait SECS]
  raftkv-cli --cluster A transfer-leader ID [--wait SECS]
  `member add` adds ID as a learner, prints its lag to stderr while it catches up, then
  promotes it to voter (--learner: stop after adding). Start the new node first with
  `raftkv-server --config FILE --join CLUSTER_ADDR`.

Exit codes: 0 ok, 1 not found, 2 usage error, 3 cas or txn compare failed,
            4 unavailable, timeout or unreachable (membership: --wait ended first),
            5 refused (an invalid membership change) or other errors.";

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

/// Node ids are non-zero (0 is `NO_NODE`).
fn node_id_parser() -> clap::builder::RangedU64ValueParser<NodeId> {
    clap::value_parser!(u64).range(1..)
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
            Ok(mut client) => match command {
                CliCommand::Member { command } => {
                    finish(member(&mut client, command, &cli.cluster.join(",")))
                }
                CliCommand::TransferLeader { id, wait } => {
                    let wait = Wait::new(wait, TRANSFER_POLL);
                    finish(transfer_leader(&mut client, id, &wait))
                }
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
        CliCommand::Status { .. }
        | CliCommand::Member { .. }
        | CliCommand::TransferLeader { .. } => {
            unreachable!("handled in main")
        }
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

/// How often `member add`/`promote` look at the learner's lag (and print it when it
/// changed), and how long they pause before repeating a retryable failure.
const MEMBER_POLL: Duration = Duration::from_secs(1);
/// How often `transfer-leader` asks who leads: an election takes a few hundred ms.
const TRANSFER_POLL: Duration = Duration::from_millis(100);

/// Why a command failed: the message for stderr and the exit code.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure {
            code: exit_code(&error),
            message: error.to_string(),
        }
    }
}

/// Prints the `OK: ...` line or the failure; returns the exit code.
fn finish(outcome: Result<String, Failure>) -> u8 {
    match outcome {
        Ok(line) => print_line(line.as_bytes()),
        Err(failure) => {
            eprintln!("raftkv-cli: {}", failure.message);
            failure.code
        }
    }
}

/// The calls the membership commands make: [`Client`] in use, a script in the tests.
trait Membership {
    fn leader_status(&mut self) -> Result<Status, Error>;
    fn add_learner(&mut self, id: NodeId, peer: &str, client: &str) -> Result<(), Error>;
    fn promote(&mut self, id: NodeId) -> Result<(), Error>;
    fn remove(&mut self, id: NodeId) -> Result<(), Error>;
    fn transfer_leader(&mut self, id: NodeId) -> Result<(), Error>;
}

impl Membership for Client {
    fn leader_status(&mut self) -> Result<Status, Error> {
        Client::leader_status(self)
    }
    fn add_learner(&mut self, id: NodeId, peer: &str, client: &str) -> Result<(), Error> {
        self.member_add_learner(id, peer, client)
    }
    fn promote(&mut self, id: NodeId) -> Result<(), Error> {
        self.member_promote(id)
    }
    fn remove(&mut self, id: NodeId) -> Result<(), Error> {
        self.member_remove(id)
    }
    fn transfer_leader(&mut self, id: NodeId) -> Result<(), Error> {
        Client::transfer_leader(self, id)
    }
}

/// The bound of a membership command: a deadline and the pause between two looks.
struct Wait {
    secs: u64,
    deadline: Instant,
    poll: Duration,
}

impl Wait {
    fn new(secs: u64, poll: Duration) -> Wait {
        Wait {
            secs,
            deadline: Instant::now() + Duration::from_secs(secs),
            poll,
        }
    }

    /// Pauses one poll interval, cut at the deadline; `false` once the deadline passed.
    fn pause(&self) -> bool {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return false;
        }
        thread::sleep(self.poll.min(remaining));
        true
    }
}

/// Failures that may pass: the cluster is electing, changing, or was not reached.
fn retryable(error: &Error) -> bool {
    matches!(
        error,
        Error::Unavailable(_) | Error::Timeout | Error::Io { .. }
    )
}

/// Repeats `call` while it fails retryably and `wait` lasts.
fn retry<T>(wait: &Wait, mut call: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    loop {
        match call() {
            Err(error) if retryable(&error) && wait.pause() => {}
            outcome => return outcome,
        }
    }
}

/// Runs one `member` subcommand.
fn member(
    api: &mut impl Membership,
    command: MemberCommand,
    cluster: &str,
) -> Result<String, Failure> {
    let mut stderr = std::io::stderr();
    match command {
        MemberCommand::List { json } => {
            let status = api.leader_status()?;
            Ok(if json {
                members_json(&status)
            } else {
                members_table(&status).trim_end().to_string()
            })
        }
        MemberCommand::Add {
            id,
            peer_addr,
            client_addr,
            learner,
            wait,
        } => {
            let addrs = (peer_addr.to_string(), client_addr.to_string());
            let wait = Wait::new(wait, MEMBER_POLL);
            member_add(api, id, &addrs, learner, &wait, &mut stderr, cluster)
        }
        MemberCommand::Promote { id, wait } => {
            promote_when_caught_up(api, id, &Wait::new(wait, MEMBER_POLL), &mut stderr)?;
            Ok(format!("OK: node {id} is a voter"))
        }
        MemberCommand::Remove { id, wait } => member_remove(api, id, &Wait::new(wait, MEMBER_POLL)),
    }
}

/// `member add`: adds `id` as a learner, then (unless `learner_only`) promotes it once
/// it has caught up. Any failure after the add says that the node is a learner now.
fn member_add(
    api: &mut impl Membership,
    id: NodeId,
    (peer_addr, client_addr): &(String, String),
    learner_only: bool,
    wait: &Wait,
    progress: &mut dyn Write,
    cluster: &str,
) -> Result<String, Failure> {
    // Adding the same learner with the same addresses again answers Ok, so a retry
    // after a lost answer is safe.
    retry(wait, || api.add_learner(id, peer_addr, client_addr))?;
    if learner_only {
        return Ok(format!("OK: node {id} added as a learner"));
    }
    let _ = writeln!(
        progress,
        "node {id} added as a learner; waiting for it to catch up"
    );
    promote_when_caught_up(api, id, wait, progress).map_err(|failure| Failure {
        code: failure.code,
        message: format!(
            "{}; node {id} is a learner now: promote it later with \
             `raftkv-cli --cluster {cluster} member promote {id}`",
            failure.message
        ),
    })?;
    Ok(format!("OK: node {id} added and promoted to voter"))
}

/// Watches learner `id` through the leader's status, printing its lag to `progress`
/// when it changes, and asks for its promotion whenever the lag is within the leader's
/// promotion distance, until it is a voter or `wait` ends.
fn promote_when_caught_up(
    api: &mut impl Membership,
    id: NodeId,
    wait: &Wait,
    progress: &mut dyn Write,
) -> Result<(), Failure> {
    let mut last_lag = None;
    let mut last_refusal: Option<Error> = None;
    loop {
        match api.leader_status() {
            Ok(status) => {
                let Some(member) = status.members.iter().find(|member| member.id == id) else {
                    return Err(Error::Refused(format!("node {id} is not a member")).into());
                };
                if member.voter {
                    return Ok(());
                }
                let lag = status.last_index.saturating_sub(member.match_index);
                let distance_max = status.promote_distance_max;
                if last_lag != Some(lag) {
                    let _ = writeln!(
                        progress,
                        "node {id}: {lag} entries behind the leader (promotion at <= {distance_max})"
                    );
                    last_lag = Some(lag);
                }
                if lag <= distance_max {
                    match api.promote(id) {
                        Ok(()) => return Ok(()),
                        Err(error) if retryable(&error) => last_refusal = Some(error),
                        Err(error) => return Err(error.into()),
                    }
                }
            }
            Err(error) if retryable(&error) => last_refusal = Some(error),
            Err(error) => return Err(error.into()),
        }
        if !wait.pause() {
            let lag = last_lag.map_or_else(|| "unknown".into(), |lag| format!("{lag} entries"));
            let last = last_refusal.map_or_else(String::new, |error| format!("; last: {error}"));
            return Err(Failure {
                code: EXIT_UNAVAILABLE,
                message: format!(
                    "node {id} was not promoted within {} s (lag {lag}{last})",
                    wait.secs
                ),
            });
        }
    }
}

/// `member remove`. A removal whose answer was lost is committed already, so its retry
/// is refused as "not a member": after a retryable failure, such a refusal counts as
/// done if the leader's configuration indeed lacks `id`.
fn member_remove(api: &mut impl Membership, id: NodeId, wait: &Wait) -> Result<String, Failure> {
    let mut retried = false;
    loop {
        match api.remove(id) {
            Ok(()) => return Ok(format!("OK: node {id} removed")),
            Err(error) if retryable(&error) => {
                if !wait.pause() {
                    return Err(error.into());
                }
                retried = true;
            }
            Err(error @ Error::Refused(_)) if retried => {
                let status = retry(wait, || api.leader_status())?;
                if status.members.iter().any(|member| member.id == id) {
                    return Err(error.into());
                }
                return Ok(format!("OK: node {id} removed"));
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// `transfer-leader`: asks the leader to hand over to `id`, then asks who leads until
/// `id` does or `wait` ends.
fn transfer_leader(api: &mut impl Membership, id: NodeId, wait: &Wait) -> Result<String, Failure> {
    retry(wait, || api.transfer_leader(id))?;
    let mut last_leader = None;
    loop {
        match api.leader_status() {
            Ok(status) if status.node_id == id => {
                return Ok(format!("OK: node {id} leads in term {}", status.term));
            }
            Ok(status) => last_leader = Some((status.node_id, status.term)),
            Err(error) if retryable(&error) => {}
            Err(error) => return Err(error.into()),
        }
        if !wait.pause() {
            let seen = last_leader.map_or_else(
                || "no leader seen".to_string(),
                |(leader, term)| format!("node {leader} leads in term {term}"),
            );
            return Err(Failure {
                code: EXIT_UNAVAILABLE,
                message: format!(
                    "node {id} did not take over within {} s ({seen})",
                    wait.secs
                ),
            });
        }
    }
}

/// The `member list` table: one row per member of the configuration in force.
fn members_table(status: &Status) -> String {
    let header = ["ID", "ROLE", "PEER ADDR", "CLIENT ADDR", "MATCH", "LAG"];
    let mut rows = vec![header.map(str::to_string).to_vec()];
    let or_dash = |text: &str| {
        if text.is_empty() {
            "-".to_string()
        } else {
            text.to_string()
        }
    };
    for member in &status.members {
        rows.push(vec![
            member.id.to_string(),
            member_role(status, member.id, member.voter),
            or_dash(&member.peer_addr),
            or_dash(&member.client_addr),
            member.match_index.to_string(),
            status
                .last_index
                .saturating_sub(member.match_index)
                .to_string(),
        ]);
    }
    align(&rows)
}

fn member_role(status: &Status, id: NodeId, voter: bool) -> String {
    match (voter, id == status.leader_id) {
        (true, true) => "voter (leader)".into(),
        (true, false) => "voter".into(),
        (false, _) => "learner".into(),
    }
}

/// The `member list --json` document.
fn members_json(status: &Status) -> String {
    let members: Vec<serde_json::Value> = status
        .members
        .iter()
        .map(|member| {
            serde_json::json!({
                "id": member.id,
                "role": if member.voter { "voter" } else { "learner" },
                "leader": member.id == status.leader_id,
                "peer_addr": member.peer_addr,
                "client_addr": member.client_addr,
                "match_index": member.match_index,
                "lag": status.last_index.saturating_sub(member.match_index),
            })
        })
        .collect();
    serde_json::json!({
        "leader_id": status.leader_id,
        "term": status.term,
        "last_index": status.last_index,
        "commit_index": status.commit_index,
        "config_index": status.config_index,
        "promote_distance_max": status.promote_distance_max,
        "members": members,
    })
    .to_string()
}

/// Left-aligned columns two spaces apart; trailing spaces trimmed.
fn align(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        widths.resize(widths.len().max(row.len()), 0);
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
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
    let mut out = align(&rows);
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
    //! and member tables line up and show what they promise; the membership commands
    //! retry what may pass, stop on refusals and report the wait ending with exit 4.
    //! Method: tables of (input, want), and a scripted [`Membership`] that logs its calls.
    use std::collections::VecDeque;

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

    fn member(id: NodeId, voter: bool, match_index: u64) -> Member {
        Member {
            id,
            voter,
            peer_addr: format!("127.0.0.1:600{id}"),
            client_addr: format!("127.0.0.1:700{id}"),
            match_index,
        }
    }

    /// The leader's status: node `leader_id` leads, last index 5000, promotion at <= 1000.
    fn leader_status(leader_id: NodeId, members: Vec<Member>) -> Status {
        Status {
            node_id: leader_id,
            role: Role::Leader,
            term: 4,
            leader_id,
            commit_index: 4990,
            applied_index: 4990,
            last_index: 5000,
            config_index: 4000,
            promote_distance_max: 1000,
            members,
        }
    }

    /// A scripted cluster: each call pops its next answer (`leader_status` repeats its
    /// last one when the script runs out) and is logged.
    #[derive(Default)]
    struct Script {
        statuses: VecDeque<Result<Status, Error>>,
        last_status: Option<Status>,
        answers: VecDeque<Result<(), Error>>,
        calls: Vec<String>,
    }

    impl Script {
        fn answer(&mut self, call: String) -> Result<(), Error> {
            self.calls.push(call);
            self.answers.pop_front().unwrap_or(Ok(()))
        }
    }

    impl Membership for Script {
        fn leader_status(&mut self) -> Result<Status, Error> {
            self.calls.push("status".into());
            match self.statuses.pop_front() {
                Some(Ok(status)) => {
                    self.last_status = Some(status.clone());
                    Ok(status)
                }
                Some(Err(error)) => Err(error),
                None => self.last_status.clone().ok_or(Error::Timeout),
            }
        }
        fn add_learner(&mut self, id: NodeId, peer: &str, client: &str) -> Result<(), Error> {
            self.answer(format!("add {id} {peer} {client}"))
        }
        fn promote(&mut self, id: NodeId) -> Result<(), Error> {
            self.answer(format!("promote {id}"))
        }
        fn remove(&mut self, id: NodeId) -> Result<(), Error> {
            self.answer(format!("remove {id}"))
        }
        fn transfer_leader(&mut self, id: NodeId) -> Result<(), Error> {
            self.answer(format!("transfer {id}"))
        }
    }

    /// A bound that never sleeps; `wait(0)` has ended already, so a loop stops after its
    /// first look (the tests that must run out of time use it).
    fn wait(secs: u64) -> Wait {
        Wait::new(secs, Duration::ZERO)
    }

    fn addrs() -> (String, String) {
        ("127.0.0.1:6004".into(), "127.0.0.1:7004".into())
    }

    fn with_learner(match_index: u64) -> Status {
        leader_status(
            1,
            vec![member(1, true, 5000), member(4, false, match_index)],
        )
    }

    #[test]
    fn member_add_waits_for_catch_up_then_promotes_and_retries_refusals() {
        let mut script = Script {
            statuses: [0, 0, 3000, 4500, 4600]
                .map(|match_index| Ok(with_learner(match_index)))
                .into(),
            answers: [
                Err(Error::Unavailable("another change".into())),
                Ok(()),
                Err(Error::Unavailable("learner 4 is 500 entries behind".into())),
                Ok(()),
            ]
            .into(),
            ..Script::default()
        };
        let mut progress = Vec::new();
        let outcome = member_add(
            &mut script,
            4,
            &addrs(),
            false,
            &wait(60),
            &mut progress,
            "A",
        );
        assert_eq!(
            outcome.expect("promoted"),
            "OK: node 4 added and promoted to voter"
        );
        let add = "add 4 127.0.0.1:6004 127.0.0.1:7004";
        let want = [
            add,
            add,
            "status",
            "status",
            "status",
            "status",
            "promote 4",
            "status",
        ];
        assert_eq!(script.calls[..want.len()], want, "{:?}", script.calls);
        assert_eq!(script.calls.len(), want.len() + 1, "{:?}", script.calls);
        assert_eq!(script.calls.last().map(String::as_str), Some("promote 4"));
        let progress = String::from_utf8(progress).expect("utf-8");
        let lag_lines: Vec<&str> = progress.lines().filter(|l| l.contains("behind")).collect();
        assert_eq!(
            lag_lines,
            [
                "node 4: 5000 entries behind the leader (promotion at <= 1000)",
                "node 4: 2000 entries behind the leader (promotion at <= 1000)",
                "node 4: 500 entries behind the leader (promotion at <= 1000)",
                "node 4: 400 entries behind the leader (promotion at <= 1000)",
            ],
            "one line per change of the lag:\n{progress}"
        );
    }

    #[test]
    fn member_add_that_runs_out_of_time_says_the_node_is_a_learner() {
        let mut script = Script {
            statuses: [Ok(with_learner(10))].into(),
            ..Script::default()
        };
        let outcome = member_add(
            &mut script,
            4,
            &addrs(),
            false,
            &wait(0),
            &mut Vec::new(),
            "A,B",
        );
        let failure = outcome.expect_err("never caught up");
        assert_eq!(failure.code, EXIT_UNAVAILABLE);
        for part in [
            "4990 entries",
            "is a learner now",
            "--cluster A,B member promote 4",
        ] {
            assert!(
                failure.message.contains(part),
                "{part}: {}",
                failure.message
            );
        }
        assert!(!script.calls.iter().any(|call| call.starts_with("promote")));

        let mut script = Script::default();
        let outcome = member_add(
            &mut script,
            4,
            &addrs(),
            true,
            &wait(0),
            &mut Vec::new(),
            "A",
        );
        assert_eq!(outcome.expect("added"), "OK: node 4 added as a learner");
        assert_eq!(
            script.calls,
            ["add 4 127.0.0.1:6004 127.0.0.1:7004"],
            "--learner stops"
        );
    }

    #[test]
    fn membership_refusals_exit_5_without_retrying() {
        let refused = || Err(Error::Refused("node 4 is already a member".into()));
        let mut script = Script {
            answers: [refused()].into(),
            ..Script::default()
        };
        let failure = member_add(
            &mut script,
            4,
            &addrs(),
            false,
            &wait(60),
            &mut Vec::new(),
            "A",
        )
        .expect_err("refused");
        assert_eq!((failure.code, script.calls.len()), (EXIT_OTHER, 1));

        let mut script = Script {
            statuses: [Ok(leader_status(1, vec![member(1, true, 5000)]))].into(),
            ..Script::default()
        };
        let failure =
            promote_when_caught_up(&mut script, 4, &wait(60), &mut Vec::new()).expect_err("no 4");
        assert_eq!(failure.code, EXIT_OTHER, "{}", failure.message);
        assert!(failure.message.contains("node 4 is not a member"));

        let mut script = Script {
            answers: [Err(Error::Refused("node 1 is the last voter".into()))].into(),
            ..Script::default()
        };
        let failure = member_remove(&mut script, 1, &wait(60)).expect_err("last voter");
        assert_eq!((failure.code, script.calls.len()), (EXIT_OTHER, 1));
    }

    #[test]
    fn member_promote_of_a_voter_is_done_at_once() {
        let mut script = Script {
            statuses: [Ok(leader_status(
                1,
                vec![member(1, true, 5000), member(4, true, 0)],
            ))]
            .into(),
            ..Script::default()
        };
        promote_when_caught_up(&mut script, 4, &wait(60), &mut Vec::new()).expect("voter");
        assert_eq!(script.calls, ["status"]);
    }

    #[test]
    fn a_retried_removal_refused_as_not_a_member_is_done_if_the_node_is_gone() {
        let not_member = || Err(Error::Refused("node 3 is not a member".into()));
        let mut script = Script {
            answers: [Err(Error::Timeout), not_member()].into(),
            statuses: [Ok(leader_status(1, vec![member(1, true, 5000)]))].into(),
            ..Script::default()
        };
        let outcome = member_remove(&mut script, 3, &wait(60));
        assert_eq!(outcome.expect("removed"), "OK: node 3 removed");
        assert_eq!(script.calls, ["remove 3", "remove 3", "status"]);

        // The same refusal without a retry before it: the id was never a member.
        let mut script = Script {
            answers: [not_member()].into(),
            ..Script::default()
        };
        let failure = member_remove(&mut script, 3, &wait(60)).expect_err("unknown id");
        assert_eq!(failure.code, EXIT_OTHER);
    }

    #[test]
    fn transfer_leader_polls_until_the_target_leads() {
        let mut script = Script {
            statuses: [
                Ok(leader_status(1, vec![])),
                Err(Error::Unavailable("no leader known".into())),
                Ok(Status {
                    term: 5,
                    ..leader_status(2, vec![])
                }),
            ]
            .into(),
            ..Script::default()
        };
        let outcome = transfer_leader(&mut script, 2, &wait(60));
        assert_eq!(outcome.expect("moved"), "OK: node 2 leads in term 5");
        assert_eq!(script.calls, ["transfer 2", "status", "status", "status"]);

        let mut script = Script {
            statuses: [Ok(leader_status(1, vec![]))].into(),
            ..Script::default()
        };
        let failure = transfer_leader(&mut script, 2, &wait(0)).expect_err("stays");
        assert_eq!(failure.code, EXIT_UNAVAILABLE);
        assert!(
            failure.message.contains("node 1 leads in term 4"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn member_table_marks_the_leader_and_shows_lag() {
        let mut learner = member(4, false, 4200);
        learner.client_addr = String::new();
        let status = leader_status(
            2,
            vec![member(2, true, 5000), member(1, true, 4999), learner],
        );
        let table = members_table(&status);
        let want = [
            "ID  ROLE            PEER ADDR       CLIENT ADDR     MATCH  LAG",
            "2   voter (leader)  127.0.0.1:6002  127.0.0.1:7002  5000   0",
            "1   voter           127.0.0.1:6001  127.0.0.1:7001  4999   1",
            "4   learner         127.0.0.1:6004  -               4200   800",
        ];
        assert_eq!(table.lines().collect::<Vec<_>>(), want, "{table}");
        let json: serde_json::Value =
            serde_json::from_str(&members_json(&status)).expect("valid JSON");
        assert_eq!(json["leader_id"], 2);
        assert_eq!(json["promote_distance_max"], 1000);
        assert_eq!(json["members"][0]["leader"], true);
        assert_eq!(json["members"][2]["role"], "learner");
        assert_eq!(json["members"][2]["lag"], 800);
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
        ];
        for (i, (error, want)) in cases.into_iter().enumerate() {
            assert_eq!(exit_code(&error), want, "#{i}: {error}");
        }
    }
}
