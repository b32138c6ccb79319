//! One round of the suite: start a cluster behind the link proxies, run the workload
//! while the nemesis injects and heals faults, heal everything, then judge.
//!
//! Steps:
//! 1. start the nodes and wait for a leader;
//! 2. run the clients; every `quiet` interval inject one fault (or several, overlapping),
//!    hold them, heal them;
//! 3. stop the clients, heal, restart anything down, wait for a leader;
//! 4. read every key linearizably (recorded in the history, so the linearizability check
//!    covers "every acknowledged write is readable at the end");
//! 5. wait until every node has applied the same index, then read every key on every
//!    node locally (stale reads): all must equal the final reads;
//! 6. check the history per key; write `history.jsonl` and `nemesis.log` into the round
//!    directory, which also holds the node logs; remove it after a pass unless asked to
//!    keep it.
//!
//! Invariant: every wait is bounded in time; a round never hangs.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::check::{KvCall, Operation, Outcome};
use crate::client::Client;
use crate::raft::rng::Rng;

use super::checker::{CheckSummary, check_history};
use super::cluster::{ClusterOptions, FaultCluster, NodeState};
use super::history;
use super::nemesis::{FaultKind, Nemesis};
use super::workload::{self, WorkloadOptions, client_options, key_names, micros_since};

/// Time between two faults injected together.
const OVERLAP_GAP_MS: u64 = 300;

/// Time allowed for a leader after start or heal, and for convergence.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Settings of a round.
#[derive(Debug, Clone)]
pub struct RoundOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// The `raftkv-server` binary.
    pub server_exe: PathBuf,
    /// Parent directory of the round directories.
    pub dir: PathBuf,
    /// How long the workload runs.
    pub duration: Duration,
    /// The faults to cycle through (empty: no faults).
    pub nemesis: Vec<FaultKind>,
    /// Time without a fault before each injection, drawn from this range (ms).
    pub quiet_ms: (u64, u64),
    /// Faults injected together (300 ms apart) before each heal; 1 = one at a time.
    pub faults_at_once: usize,
    /// Time each fault is held, drawn from this range (ms).
    pub hold_ms: (u64, u64),
    /// Client threads.
    pub clients: usize,
    /// Keys.
    pub keys: usize,
    /// Client request timeout.
    pub request_timeout: Duration,
    /// `raft.tick_ms` of the nodes.
    pub tick_ms: u64,
    /// `snapshot.threshold_entries` of the nodes (`None`: the default).
    pub snapshot_entries: Option<u64>,
    /// Search budget per key.
    pub steps_max: u64,
    /// Keep the round directory even after a pass.
    pub keep: bool,
    /// Stale reads in the workload (a self-test: such rounds are expected to fail).
    pub stale_reads: bool,
    /// TLS on every port and link of the nodes (the proxies carry the TLS bytes).
    pub tls: bool,
}

/// Operation counts of a history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OperationCounts {
    /// All operations.
    pub total: usize,
    /// Acknowledged writes (put ok, cas swapped).
    pub writes_ok: usize,
    /// Reads that returned.
    pub reads: usize,
    /// Cas that found another value.
    pub cas_failed: usize,
    /// Operations of unknown outcome.
    pub unknown: usize,
}

impl OperationCounts {
    /// Counts the outcomes of `history`.
    pub fn of(history: &[Operation]) -> OperationCounts {
        let mut counts = OperationCounts {
            total: history.len(),
            ..OperationCounts::default()
        };
        for operation in history {
            match operation.outcome {
                Outcome::Ok => counts.writes_ok += 1,
                Outcome::Read(_) => counts.reads += 1,
                Outcome::CasFailed => counts.cas_failed += 1,
                Outcome::Failed | Outcome::Unknown => counts.unknown += 1,
            }
        }
        counts
    }
}

/// The verdict of a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Linearizable, converged, no crash.
    Pass,
    /// The checker found a violation or ran out of budget.
    Check(CheckSummary),
    /// After healing, nodes did not converge to the same applied index and values.
    Diverged(String),
    /// The cluster did not serve after healing (no leader, final reads failed).
    Unavailable(String),
    /// A node process exited without being killed.
    Crashed(Vec<String>),
}

impl Verdict {
    /// Whether the round passed.
    pub fn passed(&self) -> bool {
        *self == Verdict::Pass
    }

    /// A one-line (or, for violations, multi-line) account.
    pub fn describe(&self) -> String {
        match self {
            Verdict::Pass => "PASS".into(),
            Verdict::Check(summary) => format!("FAIL {}", summary.describe()),
            Verdict::Diverged(why) => format!("FAIL diverged: {why}"),
            Verdict::Unavailable(why) => format!("FAIL unavailable after heal: {why}"),
            Verdict::Crashed(which) => format!("FAIL crashed: {}", which.join("; ")),
        }
    }
}

/// What a round did and found.
#[derive(Debug, Clone)]
pub struct RoundReport {
    /// The round number.
    pub round: u64,
    /// The seed of the workload and the nemesis.
    pub seed: u64,
    /// Wall time of the whole round.
    pub elapsed: Duration,
    /// The recorded operations (workload and final reads).
    pub counts: OperationCounts,
    /// Every fault injected, with its time in ms since the workload started.
    pub faults: Vec<(u64, String)>,
    /// The verdict.
    pub verdict: Verdict,
    /// The round directory (history, nemesis log, node logs and data), if kept.
    pub kept: Option<PathBuf>,
}

impl RoundReport {
    /// The summary line printed per round.
    pub fn summary(&self) -> String {
        let c = &self.counts;
        let kinds: BTreeSet<&str> = self
            .faults
            .iter()
            .filter_map(|(_, f)| f.split([' ', ':']).next())
            .collect();
        let kinds: Vec<&str> = kinds.into_iter().collect();
        format!(
            "round {} seed {:#x} {:.1}s: {} ops ({} writes ok, {} reads, {} cas-failed, {} unknown), \
             {} faults [{}] -> {}",
            self.round,
            self.seed,
            self.elapsed.as_secs_f64(),
            c.total,
            c.writes_ok,
            c.reads,
            c.cas_failed,
            c.unknown,
            self.faults.len(),
            kinds.join(","),
            self.verdict.describe(),
        )
    }
}

/// Runs round `round` with `seed`.
///
/// # Errors
/// Starting processes, proxies or threads, or writing the round directory failed.
pub fn run_round(options: &RoundOptions, round: u64, seed: u64) -> io::Result<RoundReport> {
    let started = Instant::now();
    let dir = options.dir.join(format!("round-{round}"));
    let mut cluster = FaultCluster::start(&ClusterOptions {
        nodes: options.nodes,
        server_exe: options.server_exe.clone(),
        dir: dir.clone(),
        tick_ms: options.tick_ms,
        snapshot_entries: options.snapshot_entries,
        tls: options.tls,
    })?;
    let mut history = Vec::new();
    let mut faults = Vec::new();
    let verdict = if cluster.wait_leader(SETTLE_TIMEOUT).is_none() {
        Verdict::Unavailable("no leader after start".into())
    } else {
        let clock = Instant::now();
        let mut crashed = run_workload(
            options,
            seed,
            &mut cluster,
            clock,
            &mut history,
            &mut faults,
        )?;
        crashed.extend(cluster.crashed());
        crashed.dedup();
        cluster.heal()?;
        if crashed.is_empty() {
            judge(options, &cluster, clock, &mut history)
        } else {
            Verdict::Crashed(crashed)
        }
    };
    write_records(&dir, &history, &faults)?;
    drop(cluster);
    let keep = options.keep || !verdict.passed();
    if !keep {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(RoundReport {
        round,
        seed,
        elapsed: started.elapsed(),
        counts: OperationCounts::of(&history),
        faults,
        verdict,
        kept: keep.then_some(dir),
    })
}

/// Steps 2-3: the clients and the nemesis; returns nodes that crashed meanwhile.
fn run_workload(
    options: &RoundOptions,
    seed: u64,
    cluster: &mut FaultCluster,
    clock: Instant,
    history: &mut Vec<Operation>,
    faults: &mut Vec<(u64, String)>,
) -> io::Result<Vec<String>> {
    let stop = Arc::new(AtomicBool::new(false));
    let workload = WorkloadOptions {
        clients: options.clients,
        keys: options.keys,
        request_timeout: options.request_timeout,
        seed,
        stale_reads: options.stale_reads,
        tls: cluster.client_tls().cloned(),
    };
    let handles = workload::spawn(&cluster.client_addrs(), &workload, &stop, clock)?;
    let mut nemesis = Nemesis::new(options.nemesis.clone(), seed.rotate_left(17));
    let mut rng = Rng::new(seed.rotate_left(31));
    let end = clock + options.duration;
    let mut crashed = Vec::new();
    let mut result = Ok(());
    while Instant::now() < end && result.is_ok() {
        sleep_until(end, rng.range(options.quiet_ms.0, options.quiet_ms.1 + 1));
        crashed.extend(cluster.crashed());
        if Instant::now() >= end || options.nemesis.is_empty() {
            continue;
        }
        let at_once = options.faults_at_once.max(1);
        for k in 0..at_once {
            if k > 0 {
                // Let the cluster react (a new leader) so the next fault hits a new shape.
                sleep_until(end, OVERLAP_GAP_MS);
            }
            if result.is_ok() {
                result = nemesis.inject(cluster).map(|fault| {
                    faults.push((clock.elapsed().as_millis() as u64, fault));
                });
            }
        }
        sleep_until(end, rng.range(options.hold_ms.0, options.hold_ms.1 + 1));
        crashed.extend(cluster.crashed());
        if result.is_ok() {
            result = nemesis.heal(cluster);
            faults_log_heal(faults, at_once, clock);
        }
    }
    stop.store(true, Ordering::SeqCst);
    for handle in handles {
        match handle.join() {
            Ok(operations) => history.extend(operations),
            Err(_) => return Err(io::Error::other("a client thread panicked")),
        }
    }
    result.map(|()| crashed)
}

/// Marks the end of the last `count` faults in the log.
fn faults_log_heal(faults: &mut [(u64, String)], count: usize, clock: Instant) {
    let healed = clock.elapsed().as_millis();
    let first = faults.len().saturating_sub(count);
    for (_, fault) in &mut faults[first..] {
        let _ = write!(fault, " (healed at {healed} ms)");
    }
}

fn sleep_until(end: Instant, ms: u64) {
    let remaining = end.saturating_duration_since(Instant::now());
    sleep(Duration::from_millis(ms).min(remaining));
}

/// Steps 3-6 after the heal: leader, final reads, convergence, linearizability.
fn judge(
    options: &RoundOptions,
    cluster: &FaultCluster,
    clock: Instant,
    history: &mut Vec<Operation>,
) -> Verdict {
    if cluster.wait_leader(SETTLE_TIMEOUT).is_none() {
        return Verdict::Unavailable("no leader after heal".into());
    }
    let finals = match final_reads(cluster, options.keys, clock, history) {
        Ok(finals) => finals,
        Err(why) => return Verdict::Unavailable(why),
    };
    if let Err(why) = converge(cluster, &finals) {
        return Verdict::Diverged(why);
    }
    let summary = check_history(history, options.steps_max);
    if summary.passed() {
        Verdict::Pass
    } else {
        Verdict::Check(summary)
    }
}

/// A key and the value its final linearizable read returned (`None`: absent).
type FinalRead = (Vec<u8>, Option<Vec<u8>>);

/// Step 4: one linearizable read per key, recorded; retried until [`SETTLE_TIMEOUT`].
fn final_reads(
    cluster: &FaultCluster,
    keys: usize,
    clock: Instant,
    history: &mut Vec<Operation>,
) -> Result<Vec<FinalRead>, String> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let options = client_options(SETTLE_TIMEOUT, cluster.client_tls());
    let mut client =
        Client::connect(&cluster.client_addrs(), options).map_err(|e| e.to_string())?;
    let mut finals = Vec::new();
    for key in key_names(keys) {
        loop {
            let invoke = micros_since(clock);
            let result = client.get(&key);
            let complete = micros_since(clock);
            let outcome = match &result {
                Ok(value) => Outcome::Read(value.clone()),
                Err(_) => Outcome::Unknown,
            };
            history.push(Operation {
                client: 0,
                key: key.clone(),
                call: KvCall::Get,
                outcome,
                invoke,
                complete,
            });
            match result {
                Ok(value) => {
                    finals.push((key.clone(), value));
                    break;
                }
                Err(error) if Instant::now() >= deadline => {
                    return Err(format!(
                        "final read of {:?}: {error}",
                        String::from_utf8_lossy(&key)
                    ));
                }
                Err(_) => sleep(Duration::from_millis(100)),
            }
        }
    }
    Ok(finals)
}

/// Step 5: the same applied index everywhere, then the same values everywhere.
fn converge(cluster: &FaultCluster, finals: &[FinalRead]) -> Result<(), String> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let applied = loop {
        let statuses: Vec<Option<u64>> = (0..cluster.len())
            .map(|i| {
                cluster
                    .status(i, Duration::from_secs(1))
                    .map(|s| s.applied_index)
            })
            .collect();
        let first = statuses[0];
        if first.is_some() && statuses.iter().all(|s| *s == first) {
            break first.unwrap_or_default();
        }
        if Instant::now() >= deadline {
            return Err(format!("applied indexes still differ: {statuses:?}"));
        }
        sleep(Duration::from_millis(100));
    };
    let addrs = cluster.client_addrs();
    let mut problems = String::new();
    for (i, addr) in addrs.iter().enumerate() {
        if cluster.state(i) != NodeState::Up {
            let _ = write!(problems, " n{} is not up;", i + 1);
            continue;
        }
        let mut client = Client::connect(
            std::slice::from_ref(addr),
            client_options(SETTLE_TIMEOUT, cluster.client_tls()),
        )
        .map_err(|e| e.to_string())?;
        for (key, value) in finals {
            match client.get_stale(key) {
                Ok(local) if local == *value => {}
                Ok(local) => {
                    let _ = write!(
                        problems,
                        " n{} has {:?}={:?} but the final read saw {:?};",
                        i + 1,
                        String::from_utf8_lossy(key),
                        local.as_deref().map(String::from_utf8_lossy),
                        value.as_deref().map(String::from_utf8_lossy),
                    );
                }
                Err(error) => {
                    let _ = write!(problems, " n{} stale read failed: {error};", i + 1);
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("at applied index {applied}:{problems}"))
    }
}

/// Step 6: the history and the fault log, next to the node logs.
fn write_records(
    dir: &std::path::Path,
    history: &[Operation],
    faults: &[(u64, String)],
) -> io::Result<()> {
    std::fs::write(dir.join("history.jsonl"), history::render(history))?;
    let mut log = String::new();
    for (at_ms, fault) in faults {
        let _ = writeln!(log, "{at_ms:>8} ms  {fault}");
    }
    std::fs::write(dir.join("nemesis.log"), log)
}
