//! The membership commands of raftkv-cli: `member list|add|promote|remove` and
//! `transfer-leader`. They talk to the leader through [`Membership`] (the client, or a
//! script in the tests), repeat retryable failures (unavailable, timeout, unreachable)
//! until their `--wait` bound, and print one `OK: ...` line when done; `member add`
//! watches the new learner catch up (its lag on stderr) before promoting it.

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use raftkv::client::{Client, Error};
use raftkv::codec::client::Status;
use raftkv::raft::message::NodeId;

use crate::table::align;
use crate::{EXIT_UNAVAILABLE, MemberCommand, exit_code, print_line};

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
pub(crate) trait Membership {
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

/// `raftkv-cli member ...`: the exit code (`cluster`: the addresses given, for hints).
pub(crate) fn run(api: &mut impl Membership, command: MemberCommand, cluster: &str) -> u8 {
    finish(member(api, command, cluster))
}

/// `raftkv-cli transfer-leader ID --wait SECS`: the exit code.
pub(crate) fn transfer(api: &mut impl Membership, id: NodeId, wait_secs: u64) -> u8 {
    finish(transfer_leader(
        api,
        id,
        &Wait::new(wait_secs, TRANSFER_POLL),
    ))
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

#[cfg(test)]
mod tests {
    //! Goal: the membership commands retry what may pass, stop on refusals and report the
    //! wait ending with exit 4; the member table shows roles, the leader and lag. Method: a
    //! scripted [`Membership`] that logs its calls, and tables of (input, want).
    use std::collections::VecDeque;

    use raftkv::codec::client::{Member, Role};

    use super::*;
    use crate::EXIT_OTHER;

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
}
