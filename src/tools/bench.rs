//! raftkv-bench: the bundled benchmark client (library side of `tools/raftkv-bench.rs`).
//!
//! One run: find or start a cluster ([`cluster`]), note the leader and term, start one
//! thread per connection ([`worker`]) keeping `--pipeline` requests in flight, warm up,
//! measure for `--duration` seconds or `--requests` requests, stop, and report
//! throughput, latency percentiles from an HDR histogram, errors by kind, redirects and
//! retries ([`report`]). Keys come from [`keys`]; `--rate` uses the open-loop schedule of
//! [`rate`]; `--preload` first writes every key once ([`preload`]).

pub mod cluster;
pub mod cpu;
pub mod keys;
pub mod preload;
pub mod rate;
pub mod report;
pub mod worker;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::client::{self, Client, ClientOptions};
use crate::config::ConfigError;
use crate::raft::rng::Rng;
use crate::server::local::LocalError;
use crate::storage::FsyncMode;
use crate::tls::{ClientTls, TlsError};

use cluster::SpawnedCluster;
use cpu::CpuMeter;
use keys::{KEY_BYTES, KEYS_MAX, KeyChooser};
use rate::RateSchedule;
use report::{Latency, LeaderSnapshot, Report, RunConfig, percentile_distribution};
use worker::{Shared, WorkerPlan, WorkerTotals, Workload, run_worker};

/// Writes of one session that may be in flight at once: the cluster keeps the results of
/// this many seqs per session (`session_results_max`), so a re-sent write is still
/// recognised.
pub const WRITE_PIPELINE_MAX: usize = 128;

/// Largest latency recorded (longer ones are clamped): one minute, in nanoseconds.
const LATENCY_NANOS_MAX: u64 = 60_000_000_000;

/// The fsync mode of spawned nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FsyncChoice {
    /// One fdatasync per loop turn (durable).
    Always,
    /// No sync (measures everything but the disk).
    Never,
}

/// Command-line options of `raftkv-bench`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "raftkv-bench",
    version,
    about = "Benchmark a raftkv cluster: throughput and latency percentiles.",
    after_help = "Examples:\n  raftkv-bench --spawn 3 --fsync always --connections 64 --pipeline 16 --duration 10\n  \
                  raftkv-bench --cluster 127.0.0.1:7001 --workload get --stale --rate 50000\n  \
                  raftkv-bench --spawn 3 --keys 10000000 --preload --connections 64 --pipeline 16 --duration 60"
)]
pub struct BenchArgs {
    /// Client addresses of a running cluster, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        conflicts_with = "spawn",
        required_unless_present = "spawn"
    )]
    pub cluster: Vec<String>,
    /// Start a local cluster of N nodes for the run (stopped and removed afterwards).
    #[arg(long, value_name = "N")]
    pub spawn: Option<usize>,
    /// Directory of the spawned cluster (kept); default: a temporary one (removed).
    #[arg(long, requires = "spawn")]
    pub dir: Option<PathBuf>,
    /// Fsync mode of the spawned nodes.
    #[arg(long, value_enum, default_value_t = FsyncChoice::Always)]
    pub fsync: FsyncChoice,
    /// What the requests do.
    #[arg(long, value_enum, default_value_t = Workload::Put)]
    pub workload: Workload,
    /// Fraction of reads in the mixed workload.
    #[arg(long, default_value_t = 0.5)]
    pub read_ratio: f64,
    /// Serve reads from any node's local state (possibly stale) instead of the leader.
    #[arg(long)]
    pub stale: bool,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Before the warm-up, write every one of the --keys keys once (--value-bytes each,
    /// --connections x --pipeline at a time, progress on stderr), so the run measures a
    /// store of that size.
    #[arg(long)]
    pub preload: bool,
    /// Zipf exponent of key popularity (uniform if absent), e.g. 0.99.
    #[arg(long, value_name = "S")]
    pub zipf: Option<f64>,
    /// Bytes per written value.
    #[arg(long, default_value_t = 64)]
    pub value_bytes: usize,
    /// Connections, one thread each.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// Stop after this many measured requests.
    #[arg(long, conflicts_with = "duration")]
    pub requests: Option<u64>,
    /// Measure for this many seconds (default 10 unless --requests is given).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
    pub warmup: f64,
    /// Open loop: send this many requests per second in total, latency measured from
    /// each request's intended send time. Default: closed loop.
    #[arg(long, value_name = "OPS_PER_SEC")]
    pub rate: Option<f64>,
    /// Time before an unanswered request counts as a timeout, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// PRNG seed of the key choice (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write the full latency histogram (HdrHistogram .hgrm text, microseconds) here.
    #[arg(long, value_name = "FILE")]
    pub hdr_out: Option<PathBuf>,
    /// Speak TLS to the --cluster nodes, whose certificates chain to this CA (PEM).
    #[arg(long, value_name = "FILE", conflicts_with = "spawn")]
    pub cacert: Option<PathBuf>,
    /// The spawned cluster speaks TLS on every port and link (development
    /// certificates in its directory, as `raftkv-server local --tls`).
    #[arg(long, requires = "spawn")]
    pub tls: bool,
    /// The TLS client side loaded from --cacert (or the spawned cluster's CA).
    #[arg(skip)]
    pub client_tls: Option<ClientTls>,
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Options that do not make sense together.
    #[error("{0}")]
    Usage(String),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The failure.
        source: std::io::Error,
    },
    /// The local cluster could not be set up.
    #[error(transparent)]
    Local(#[from] LocalError),
    /// A generated config could not be read back.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The cluster did not answer.
    #[error("cluster: {0}")]
    Client(#[from] client::Error),
    /// Filling the store before the run failed.
    #[error("preload: {0}")]
    Preload(String),
    /// The CA file cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A spawned node died during the run.
    #[error("node {id} exited ({status}); see {}", log.display())]
    NodeExited {
        /// The node.
        id: u64,
        /// How it exited.
        status: String,
        /// Its log.
        log: PathBuf,
    },
}

impl BenchArgs {
    /// Checks the options that clap cannot.
    ///
    /// # Errors
    /// [`BenchError::Usage`] naming the bad option.
    pub fn validate(&self) -> Result<(), BenchError> {
        let usage = |message: &str| Err(BenchError::Usage(message.into()));
        if self.connections == 0 || self.pipeline == 0 {
            return usage("--connections and --pipeline must be at least 1");
        }
        if self.workload.writes() && self.pipeline > WRITE_PIPELINE_MAX {
            return usage("--pipeline above 128 is refused for writes (session results kept)");
        }
        if self.keys == 0 || self.keys > KEYS_MAX {
            return usage("--keys must be between 1 and 10^15 - 1");
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return usage("--read-ratio must be between 0 and 1");
        }
        if self.zipf.is_some_and(|s| !(s > 0.0 && s.is_finite())) {
            return usage("--zipf must be positive");
        }
        if self
            .rate
            .is_some_and(|rate| !(rate > 0.0 && rate.is_finite()))
        {
            return usage("--rate must be positive");
        }
        let seconds_ok = |secs: f64| secs.is_finite() && secs >= 0.0;
        if !seconds_ok(self.warmup) || self.duration.is_some_and(|d| !seconds_ok(d) || d == 0.0) {
            return usage("--warmup and --duration must be non-negative seconds");
        }
        if self.requests == Some(0) || self.timeout_ms == 0 {
            return usage("--requests and --timeout-ms must be at least 1");
        }
        Ok(())
    }

    fn run_config(&self, nodes: usize) -> RunConfig {
        let spawned = self.spawn.is_some();
        RunConfig {
            cluster: if spawned { "spawned" } else { "external" }.into(),
            nodes,
            fsync: match (spawned, self.fsync) {
                (false, _) => "unknown".into(),
                (true, FsyncChoice::Always) => "always".into(),
                (true, FsyncChoice::Never) => "never".into(),
            },
            workload: format!("{:?}", self.workload).to_lowercase(),
            read_ratio: (self.workload == Workload::Mixed).then_some(self.read_ratio),
            stale: self.stale,
            keys: self.keys,
            distribution: self
                .zipf
                .map_or_else(|| "uniform".into(), |s| format!("zipf({s})")),
            key_bytes: KEY_BYTES,
            value_bytes: self.value_bytes,
            connections: self.connections,
            pipeline: self.pipeline,
            mode: match self.rate {
                Some(rate) => format!("open loop at {rate} ops/s (latency from intended send)"),
                None => "closed loop".into(),
            },
            warmup_secs: self.warmup,
            length: match self.requests {
                Some(requests) => format!("{requests} requests"),
                None => format!("{} s", self.duration_secs()),
            },
        }
    }

    fn duration_secs(&self) -> f64 {
        self.duration.unwrap_or(10.0)
    }

    fn client_options(&self) -> ClientOptions {
        ClientOptions {
            request_timeout: Duration::from_millis(self.timeout_ms),
            // Poll for a new leader at least every 100 ms, so a failover measured here is
            // the cluster's, not the backoff's.
            backoff_min_ms: 5,
            tls: self.client_tls.clone(),
            ..ClientOptions::default()
        }
    }
}

/// Runs the benchmark described by `args` and returns its report (after writing
/// `--hdr-out`). `interrupted` (set by SIGINT/SIGTERM) ends the run early, cleanly.
///
/// # Errors
/// [`BenchError`] if the options are invalid, the cluster cannot be started or reached,
/// or the histogram file cannot be written.
pub fn run(args: &BenchArgs, interrupted: &AtomicBool) -> Result<Report, BenchError> {
    args.validate()?;
    let mut spawned = match args.spawn {
        Some(nodes) => Some(SpawnedCluster::start(
            nodes,
            args.dir.as_deref(),
            match args.fsync {
                FsyncChoice::Always => FsyncMode::Always,
                FsyncChoice::Never => FsyncMode::Never,
            },
            &server_exe()?,
            args.tls,
        )?),
        None => None,
    };
    let ca = match &spawned {
        Some(cluster) => cluster.ca_file(),
        None => args.cacert.clone(),
    };
    let with_tls;
    let args = match ca {
        Some(ca) => {
            with_tls = BenchArgs {
                client_tls: Some(ClientTls::load(&ca, None)?),
                ..args.clone()
            };
            &with_tls
        }
        None => args,
    };
    let addrs = match &spawned {
        Some(cluster) => cluster.client_addrs(),
        None => args.cluster.clone(),
    };
    // A fresh cluster needs an election first: allow it more time than one request.
    let mut discovery = Client::connect(
        &addrs,
        ClientOptions {
            request_timeout: Duration::from_secs(15).max(Duration::from_millis(args.timeout_ms)),
            ..args.client_options()
        },
    )?;
    let leader_start = discovery.find_leader();
    if let (Err(_), Some(cluster)) = (&leader_start, spawned.as_mut()) {
        cluster.check_running()?;
    }
    let leader_start = leader_start?;
    let member_addrs: Vec<String> = match discovery.status() {
        Ok(status) => status.members.into_iter().map(|m| m.client_addr).collect(),
        Err(_) => addrs.clone(),
    };
    let nodes = member_addrs.len();
    if args.preload {
        let plan = preload::PreloadPlan {
            leader_addr: leader_start.client_addr.clone(),
            member_addrs: member_addrs.clone(),
            keys: args.keys,
            value: vec![b'p'; args.value_bytes],
            connections: args.connections,
            pipeline: args.pipeline,
            options: args.client_options(),
        };
        let preloaded = preload::preload(&plan, interrupted);
        if let (Err(_), Some(cluster)) = (&preloaded, spawned.as_mut()) {
            cluster.check_running()?;
        }
        preloaded?;
    }

    let mut cpu = CpuMeter::new(
        spawned
            .as_ref()
            .map(SpawnedCluster::processes)
            .unwrap_or_default(),
    );
    let (totals, histogram, elapsed) = drive(args, &addrs, &member_addrs, interrupted, &mut cpu);

    let leader_end = discovery.find_leader().ok();
    // A node that died during the run (someone testing failover) is worth a warning,
    // not the loss of the measurements.
    let warnings = match spawned.as_mut().map(SpawnedCluster::check_running) {
        Some(Err(error)) => vec![error.to_string()],
        _ => Vec::new(),
    };
    if let Some(path) = &args.hdr_out {
        std::fs::write(path, percentile_distribution(&histogram)).map_err(|source| {
            BenchError::Io {
                what: format!("write {}", path.display()),
                source,
            }
        })?;
    }
    let snapshot = |leader: &client::LeaderInfo| LeaderSnapshot {
        id: leader.id,
        term: leader.term,
        addr: leader.client_addr.clone(),
    };
    let elapsed_secs = elapsed.as_secs_f64();
    let node_cpu = cpu.report(Some(leader_start.id), totals.completed, elapsed_secs);
    Ok(Report {
        config: args.run_config(nodes),
        leader_start: Some(snapshot(&leader_start)),
        leader_end: leader_end.as_ref().map(snapshot),
        elapsed_secs,
        completed: totals.completed,
        throughput_ops_per_sec: if elapsed_secs > 0.0 {
            totals.completed as f64 / elapsed_secs
        } else {
            0.0
        },
        latency: Latency::from_histogram(&histogram),
        errors: totals
            .errors
            .iter()
            .map(|(kind, count)| ((*kind).to_string(), *count))
            .collect(),
        not_found: totals.not_found,
        cas_failed: totals.cas_failed,
        redirects: totals.redirects,
        retries: totals.retries,
        warnings,
        node_cpu,
    })
}

/// The `raftkv-server` binary next to the running executable.
fn server_exe() -> Result<PathBuf, BenchError> {
    let exe = std::env::current_exe().map_err(|source| BenchError::Io {
        what: "locate the running executable".into(),
        source,
    })?;
    let server = exe.with_file_name(format!("raftkv-server{}", std::env::consts::EXE_SUFFIX));
    if server.is_file() {
        Ok(server)
    } else {
        Err(BenchError::Usage(format!(
            "--spawn needs {} (build it with `cargo build --release`)",
            server.display()
        )))
    }
}

/// Runs the workers until the run ends; returns their merged totals, the merged
/// histogram and the measured window. `cpu` is sampled as the window starts and ends.
fn drive(
    args: &BenchArgs,
    addrs: &[String],
    member_addrs: &[String],
    interrupted: &AtomicBool,
    cpu: &mut CpuMeter,
) -> (WorkerTotals, Histogram<u64>, Duration) {
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let shared = Shared {
        start,
        measure_from,
        stop: AtomicBool::new(false),
        stop_at_nanos: AtomicU64::new(u64::MAX),
        tickets: args.requests.map(AtomicU64::new),
        completed: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    };
    let seed = args
        .seed
        .unwrap_or_else(|| clock_seed() ^ u64::from(std::process::id()));
    let plans: Vec<WorkerPlan> = (0..args.connections)
        .map(|index| worker_plan(args, addrs, member_addrs, index, seed))
        .collect();
    let histograms: Vec<Arc<Mutex<Histogram<u64>>>> = plans
        .iter()
        .map(|plan| Arc::clone(&plan.histogram))
        .collect();
    let progress = std::io::stderr().is_terminal();
    let end = args
        .requests
        .is_none()
        .then(|| measure_from + Duration::from_secs_f64(args.duration_secs()));
    let results: Vec<WorkerTotals> = thread::scope(|scope| {
        let handles: Vec<_> = plans
            .into_iter()
            .map(|plan| {
                let shared = &shared;
                scope.spawn(move || run_worker(plan, shared))
            })
            .collect();
        let watch = Watch {
            end,
            interrupted,
            progress,
        };
        supervise(&shared, &handles, &watch, &histograms, cpu);
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_default())
            .collect()
    });
    let mut totals = WorkerTotals::default();
    let mut histogram = new_histogram();
    for (result, worker_histogram) in results.iter().zip(&histograms) {
        merge_totals(&mut totals, result);
        if let Ok(worker_histogram) = worker_histogram.lock() {
            let _ = histogram.add(&*worker_histogram);
        }
    }
    let stopped = Duration::from_nanos(shared.stop_at_nanos.load(Ordering::Relaxed));
    let window_end = match end {
        Some(end) => start.checked_add(stopped).map_or(end, |stop| stop.min(end)),
        None => start + Duration::from_nanos(totals.last_completion_nanos),
    };
    (
        totals,
        histogram,
        window_end.saturating_duration_since(measure_from),
    )
}

/// When [`supervise`] ends the run, and whether it prints progress.
struct Watch<'a> {
    end: Option<Instant>,
    interrupted: &'a AtomicBool,
    progress: bool,
}

/// Waits for the end of the run (deadline, `--requests` used up, or interruption), then
/// tells the workers to stop; prints a progress line each second when asked to; samples
/// `cpu` when the measured window starts and when the run stops.
fn supervise(
    shared: &Shared,
    handles: &[thread::ScopedJoinHandle<'_, WorkerTotals>],
    watch: &Watch<'_>,
    histograms: &[Arc<Mutex<Histogram<u64>>>],
    cpu: &mut CpuMeter,
) {
    let Watch {
        end,
        interrupted,
        progress,
    } = *watch;
    let mut next_progress = shared.start + Duration::from_secs(1);
    let mut last_completed = 0;
    loop {
        let now = Instant::now();
        if !cpu.is_started() && now >= shared.measure_from {
            cpu.start();
        }
        let finished = handles.iter().all(|handle| handle.is_finished());
        if finished || end.is_some_and(|end| now >= end) || interrupted.load(Ordering::Relaxed) {
            let stop_at = now.saturating_duration_since(shared.start).as_nanos() as u64;
            shared.stop_at_nanos.store(stop_at, Ordering::Relaxed);
            shared.stop.store(true, Ordering::Relaxed);
            cpu.stop();
            if progress {
                eprintln!();
            }
            return;
        }
        if progress && now >= next_progress {
            let completed = shared.completed.load(Ordering::Relaxed);
            let mut merged = new_histogram();
            for histogram in histograms {
                if let Ok(histogram) = histogram.lock() {
                    let _ = merged.add(&*histogram);
                }
            }
            let phase = if now < shared.measure_from {
                " (warm-up)"
            } else {
                ""
            };
            eprint!(
                "\r{:>5.0}s  {:>9} ops/s  p99 {:>9.1} us  errors {}{phase}   ",
                now.saturating_duration_since(shared.start).as_secs_f64(),
                completed - last_completed,
                merged.value_at_quantile(0.99) as f64 / 1000.0,
                shared.errors.load(Ordering::Relaxed)
            );
            last_completed = completed;
            next_progress += Duration::from_secs(1);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn worker_plan(
    args: &BenchArgs,
    addrs: &[String],
    member_addrs: &[String],
    index: usize,
    seed: u64,
) -> WorkerPlan {
    // Stale reads may be served by every member: spread the connections over them.
    let member = (args.stale && args.workload == Workload::Get && !member_addrs.is_empty())
        .then(|| member_addrs[index % member_addrs.len()].clone());
    WorkerPlan {
        addrs: addrs.to_vec(),
        member,
        workload: args.workload,
        read_ratio: args.read_ratio,
        stale: args.stale,
        keys: KeyChooser::new(args.keys, args.zipf),
        value: vec![b'v'; args.value_bytes],
        pipeline: args.pipeline,
        schedule: args
            .rate
            .map(|rate| RateSchedule::new(rate, args.connections, index)),
        options: args.client_options(),
        seed: worker_seed(seed, index),
        histogram: Arc::new(Mutex::new(new_histogram())),
    }
}

fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts (1 <= low, high >= 2 * low, 3 digits).
    Histogram::new_with_bounds(1, LATENCY_NANOS_MAX, 3).expect("valid histogram bounds")
}

fn merge_totals(into: &mut WorkerTotals, from: &WorkerTotals) {
    into.completed += from.completed;
    into.last_completion_nanos = into.last_completion_nanos.max(from.last_completion_nanos);
    for (kind, count) in &from.errors {
        *into.errors.entry(kind).or_insert(0) += count;
    }
    into.not_found += from.not_found;
    into.cas_failed += from.cas_failed;
    into.redirects += from.redirects;
    into.retries += from.retries;
}

/// The key-choice seed of connection `index`: hashed, not stepped, because SplitMix64
/// seeded with `s + k * step` replays the stream of seed `s` shifted by k, and every
/// connection would then write the same keys.
fn worker_seed(seed: u64, index: usize) -> u64 {
    Rng::new(seed ^ (index as u64).rotate_left(32)).next_u64()
}

/// Nanoseconds of the wall clock, for a default seed that differs between runs.
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    //! Goal: a whole run against a fake one-node cluster sends exactly `--requests`
    //! measured writes, re-sends the writes in flight on a dropped connection with their
    //! original session seq, and reports them. Method: the client tests' fake node
    //! (a loopback listener speaking the protocol) playing a leader that drops a
    //! connection on every 40th put.
    use std::collections::HashSet;
    use std::sync::OnceLock;

    use clap::Parser;

    use super::*;

    #[test]
    fn connections_draw_different_keys() {
        let keys = |index| {
            let mut rng = Rng::new(worker_seed(7, index));
            (0..1000)
                .map(|_| rng.below(1_000_000))
                .collect::<std::collections::HashSet<u64>>()
        };
        let (first, second) = (keys(0), keys(1));
        assert!(first.intersection(&second).count() < 20, "streams overlap");
    }

    use crate::client::tests::{FakeNode, Reply, result};
    use crate::codec::client::{Member, RequestBody, ResponseBody, Role, Status};
    use crate::kv::{Command, CommandResult};

    fn fake_leader() -> FakeNode {
        let own_addr = Arc::new(OnceLock::<String>::new());
        let addr_for_handler = Arc::clone(&own_addr);
        let mut puts = 0u64;
        let mut sessions = 0u64;
        let node = FakeNode::spawn(move |request| match &request.body {
            RequestBody::Status => Reply::Answer(ResponseBody::Status(Status {
                node_id: 1,
                role: Role::Leader,
                term: 4,
                leader_id: 1,
                commit_index: 0,
                applied_index: 0,
                last_index: 0,
                config_index: 0,
                promote_distance_max: 1000,
                members: vec![Member {
                    id: 1,
                    voter: true,
                    peer_addr: String::new(),
                    client_addr: addr_for_handler.get().cloned().unwrap_or_default(),
                    match_index: 0,
                }],
            })),
            RequestBody::Command(Command::RegisterSession) => {
                sessions += 1;
                result(CommandResult::Registered {
                    client_id: sessions,
                })
            }
            RequestBody::Command(Command::Put { .. }) => {
                puts += 1;
                if puts.is_multiple_of(40) {
                    Reply::Drop
                } else {
                    result(CommandResult::Ok)
                }
            }
            _ => Reply::Answer(ResponseBody::Error("unexpected".into())),
        });
        own_addr.set(node.addr.clone()).expect("set once");
        node
    }

    #[test]
    fn a_run_sends_each_write_once_per_seq_and_reports_it() {
        let node = fake_leader();
        let args = BenchArgs::try_parse_from([
            "raftkv-bench",
            "--cluster",
            &node.addr,
            "--requests",
            "300",
            "--warmup",
            "0",
            "--connections",
            "2",
            "--pipeline",
            "8",
            "--keys",
            "50",
            "--zipf",
            "1.1",
            "--seed",
            "1",
        ])
        .expect("valid args");
        let report = run(&args, &AtomicBool::new(false)).expect("run");
        assert_eq!(report.completed, 300, "{}", report.render_text());
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(report.retries > 0, "dropped connections cause re-sends");
        assert_eq!(report.latency.count, 300);
        assert_eq!(report.leader_start.as_ref().map(|l| l.term), Some(4));
        assert_eq!(report.config.nodes, 1);
        let puts: Vec<(u64, u64)> = node
            .requests()
            .iter()
            .filter_map(|request| match &request.body {
                RequestBody::Command(Command::Put { session, .. }) => {
                    Some((session.client_id, session.seq))
                }
                _ => None,
            })
            .collect();
        let distinct: HashSet<(u64, u64)> = puts.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            300,
            "each measured write has its own (client, seq)"
        );
        assert!(puts.len() > 300, "re-sent writes reuse their seq");
    }

    #[test]
    fn options_are_validated() {
        let cases: [(&[&str], bool); 6] = [
            (&["--pipeline", "8"], true),
            (&["--pipeline", "0"], false),
            (&["--pipeline", "129"], false),
            (&["--pipeline", "500", "--workload", "get"], true),
            (&["--zipf", "0"], false),
            (&["--read-ratio", "1.5"], false),
        ];
        for (i, (extra, valid)) in cases.into_iter().enumerate() {
            let mut argv = vec!["raftkv-bench", "--cluster", "127.0.0.1:1"];
            argv.extend_from_slice(extra);
            let args = BenchArgs::try_parse_from(argv).expect("parses");
            assert_eq!(args.validate().is_ok(), valid, "#{i}: {extra:?}");
        }
        assert!(
            BenchArgs::try_parse_from(["raftkv-bench"]).is_err(),
            "no cluster"
        );
    }
}
