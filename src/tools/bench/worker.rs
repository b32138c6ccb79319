//! One benchmark connection: a thread that keeps up to `pipeline` requests in flight on
//! one [`Pipeline`], records each answer's latency, and survives leader changes.
//!
//! Closed loop: a new request is sent as soon as one is answered; latency runs from the
//! send. Open loop ([`RateSchedule`]): request `i` is due at a fixed time; it is sent then
//! if the pipeline has room, later otherwise, and its latency runs from the due time.
//!
//! Leader changes: a `NotLeader` answer with an address moves the connection there; a
//! lost connection, `Unavailable` or `NotLeader` without an address makes the worker
//! back off, find the leader again, and re-send every outstanding request with its
//! original session `seq`, so each write still applies once and its latency includes
//! the failover.
//!
//! Invariant: `pending` holds exactly the requests sent on the current connection and
//! not answered; after a reconnect they are re-sent under new request ids.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::client::{Client, ClientOptions, Error, Pipeline};
use crate::codec::client::{RequestBody, ResponseBody};
use crate::kv::{Command, CommandResult, Session};
use crate::server::backoff::Backoff;

use super::keys::{KeyChooser, key_bytes};
use super::rate::RateSchedule;
use crate::raft::rng::Rng;

/// What the requests do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Writes of `--value-bytes` values.
    Put,
    /// Reads (linearizable, or stale with `--stale`).
    Get,
    /// Reads with probability `--read-ratio`, writes otherwise.
    Mixed,
    /// Compare-and-swap from the written value to itself (fails on absent keys: run a
    /// put workload first).
    Cas,
}

impl Workload {
    /// Whether requests of this workload include writes (and so need a session).
    pub fn writes(self) -> bool {
        self != Workload::Get
    }
}

/// State shared by every worker and the main thread.
#[derive(Debug)]
pub struct Shared {
    /// When the run started (open-loop due times count from here).
    pub start: Instant,
    /// Answers before this instant are warm-up: not recorded.
    pub measure_from: Instant,
    /// Set to stop sending; workers then wait for their outstanding answers.
    pub stop: AtomicBool,
    /// Nanoseconds after `start` from which answers are no longer recorded
    /// (`u64::MAX` until the main thread stops the run).
    pub stop_at_nanos: AtomicU64,
    /// Measured requests still to send in `--requests` mode.
    pub tickets: Option<AtomicU64>,
    /// Answers recorded so far, for the progress line.
    pub completed: AtomicU64,
    /// Errors so far, for the progress line.
    pub errors: AtomicU64,
}

/// The fixed plan of one worker.
#[derive(Debug, Clone)]
pub struct WorkerPlan {
    /// Members' client addresses (for leader discovery).
    pub addrs: Vec<String>,
    /// A fixed member to talk to (stale reads spread over members), or `None` for the
    /// leader.
    pub member: Option<String>,
    /// What to send.
    pub workload: Workload,
    /// Fraction of reads in [`Workload::Mixed`].
    pub read_ratio: f64,
    /// Whether reads are stale.
    pub stale: bool,
    /// Key choice.
    pub keys: KeyChooser,
    /// The written value.
    pub value: Vec<u8>,
    /// Requests in flight.
    pub pipeline: usize,
    /// Open-loop schedule, `None` for closed loop.
    pub schedule: Option<RateSchedule>,
    /// Timeouts and backoff.
    pub options: ClientOptions,
    /// PRNG seed of this worker.
    pub seed: u64,
    /// Latencies in nanoseconds, shared with the progress line.
    pub histogram: Arc<Mutex<Histogram<u64>>>,
}

/// What one worker counted.
#[derive(Debug, Clone, Default)]
pub struct WorkerTotals {
    /// Answers recorded.
    pub completed: u64,
    /// The last recorded answer, in nanoseconds after the start.
    pub last_completion_nanos: u64,
    /// Failed requests by kind.
    pub errors: BTreeMap<&'static str, u64>,
    /// Reads of absent keys.
    pub not_found: u64,
    /// Compare-and-swaps that did not match.
    pub cas_failed: u64,
    /// Redirects followed.
    pub redirects: u64,
    /// Requests re-sent.
    pub retries: u64,
}

/// A request in flight.
#[derive(Debug)]
struct Pending {
    body: RequestBody,
    /// Due time (open loop) or first send time (closed loop): latency starts here.
    start: Instant,
    /// When it was last sent, for the request timeout.
    sent: Instant,
}

/// The worker's state.
struct Worker<'a> {
    plan: WorkerPlan,
    shared: &'a Shared,
    client: Client,
    client_id: Option<u64>,
    next_seq: u64,
    rng: Rng,
    key: Vec<u8>,
    pipeline: Option<Pipeline>,
    pending: HashMap<u64, Pending>,
    /// Requests created so far (the open-loop sequence number).
    created: u64,
    backoff: Backoff,
    totals: WorkerTotals,
}

/// Runs one worker until the run stops and its outstanding requests are answered or
/// timed out.
pub fn run_worker(plan: WorkerPlan, shared: &Shared) -> WorkerTotals {
    let mut client = match Client::connect(&plan.addrs, plan.options.clone()) {
        Ok(client) => client,
        Err(error) => return failed_before_start(&error),
    };
    let client_id = if plan.workload.writes() {
        match client.session_id() {
            Ok(client_id) => Some(client_id),
            Err(error) => return failed_before_start(&error),
        }
    } else {
        None
    };
    let backoff = Backoff::new(plan.options.backoff_min_ms, plan.options.backoff_max_ms);
    let mut worker = Worker {
        rng: Rng::new(plan.seed),
        plan,
        shared,
        client,
        client_id,
        next_seq: 1,
        key: Vec::new(),
        pipeline: None,
        pending: HashMap::new(),
        created: 0,
        backoff,
        totals: WorkerTotals::default(),
    };
    worker.run();
    worker.totals
}

fn failed_before_start(error: &Error) -> WorkerTotals {
    let mut totals = WorkerTotals::default();
    totals.errors.insert(error.kind(), 1);
    totals
}

impl Worker<'_> {
    fn run(&mut self) {
        let mut stopping = false;
        loop {
            if self.pipeline.is_none() && !self.reconnect(None) {
                self.fail_pending("unavailable");
                return;
            }
            stopping = stopping || self.shared.stop.load(Ordering::Relaxed);
            if !stopping {
                stopping = self.submit_due();
            }
            if stopping && self.pending.is_empty() {
                return;
            }
            self.wait_for_answer(stopping);
        }
    }

    /// Sends every request that is due while the pipeline has room; `true` once no more
    /// requests may be sent (`--requests` used up).
    fn submit_due(&mut self) -> bool {
        while self.pending.len() < self.plan.pipeline {
            let now = Instant::now();
            let start = match self.plan.schedule {
                Some(schedule) => self.shared.start + schedule.due(self.created),
                None => now,
            };
            if start > now {
                return false;
            }
            if now >= self.shared.measure_from && !self.take_ticket() {
                return true;
            }
            let body = self.next_body();
            self.created += 1;
            if !self.send(body, start) {
                return false;
            }
        }
        false
    }

    fn take_ticket(&self) -> bool {
        match &self.shared.tickets {
            None => true,
            Some(tickets) => tickets
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    left.checked_sub(1)
                })
                .is_ok(),
        }
    }

    /// Queues `body` on the current connection; `false` if there is none or the request
    /// cannot be encoded (counted as an error).
    fn send(&mut self, body: RequestBody, start: Instant) -> bool {
        let Some(pipeline) = self.pipeline.as_mut() else {
            return false;
        };
        match pipeline.submit(body.clone()) {
            Ok(request_id) => {
                let sent = Instant::now();
                self.pending
                    .insert(request_id, Pending { body, start, sent });
                true
            }
            Err(error) => {
                self.count_error(error.kind());
                false
            }
        }
    }

    fn next_body(&mut self) -> RequestBody {
        let index = self.plan.keys.next_index(&mut self.rng);
        key_bytes(index, &mut self.key);
        let read = match self.plan.workload {
            Workload::Get => true,
            Workload::Mixed => self.rng.next_f64() < self.plan.read_ratio,
            Workload::Put | Workload::Cas => false,
        };
        if read {
            return RequestBody::Get {
                key: self.key.clone(),
                stale: self.plan.stale,
            };
        }
        let session = Session {
            client_id: self.client_id.unwrap_or(0),
            seq: self.next_seq,
        };
        self.next_seq += 1;
        let key = self.key.clone();
        let value = self.plan.value.clone();
        RequestBody::Command(match self.plan.workload {
            Workload::Cas => Command::Cas {
                session,
                key,
                expected: Some(value.clone()),
                new: value,
            },
            _ => Command::Put {
                session,
                key,
                value,
            },
        })
    }

    /// Waits for one answer, until the next due time (open loop, room in the pipeline)
    /// or the oldest request's timeout.
    fn wait_for_answer(&mut self, stopping: bool) {
        let now = Instant::now();
        let oldest_sent = self.pending.values().map(|pending| pending.sent).min();
        let timeout_at = oldest_sent.map(|sent| sent + self.plan.options.request_timeout);
        let next_due = match (self.plan.schedule, stopping) {
            (Some(schedule), false) if self.pending.len() < self.plan.pipeline => {
                Some(self.shared.start + schedule.due(self.created))
            }
            _ => None,
        };
        let Some(wait_until) = [timeout_at, next_due].into_iter().flatten().min() else {
            return;
        };
        if self.pending.is_empty() {
            thread::sleep(wait_until.saturating_duration_since(now));
            return;
        }
        let Some(pipeline) = self.pipeline.as_mut() else {
            return;
        };
        match pipeline.recv(wait_until) {
            Ok(response) => self.on_answer(response.request_id, response.body),
            Err(Error::Timeout) => {
                if timeout_at.is_some_and(|at| Instant::now() >= at) {
                    // Answers may still come for these on this connection: drop it, so
                    // a late answer cannot be taken for another request.
                    self.fail_pending("timeout");
                    self.pipeline = None;
                }
            }
            Err(error) => {
                self.count_error_kind_once(&error);
                self.resend_elsewhere(None);
            }
        }
    }

    fn on_answer(&mut self, request_id: u64, body: ResponseBody) {
        let Some(pending) = self.pending.remove(&request_id) else {
            return;
        };
        match body {
            ResponseBody::Result(result) => match result {
                CommandResult::Value(Some(_))
                | CommandResult::Ok
                | CommandResult::Txn { .. }
                | CommandResult::Integer(_)
                | CommandResult::Unchanged => self.record(&pending),
                CommandResult::Value(None) | CommandResult::NotFound => {
                    self.totals.not_found += 1;
                    self.record(&pending);
                }
                CommandResult::CasFailed { .. } => {
                    self.totals.cas_failed += 1;
                    self.record(&pending);
                }
                CommandResult::SessionExpired => self.count_error("session_expired"),
                CommandResult::StaleSequence => self.count_error("stale_sequence"),
                CommandResult::Error(_) | CommandResult::Rejected(_) => self.count_error("refused"),
                CommandResult::Registered { .. } => self.count_error("protocol"),
            },
            ResponseBody::NotLeader {
                leader_client_addr: Some(addr),
                ..
            } => {
                self.totals.redirects += 1;
                self.pending.insert(request_id, pending);
                self.resend_elsewhere(Some(addr));
            }
            ResponseBody::NotLeader { .. } | ResponseBody::Unavailable(_) => {
                self.pending.insert(request_id, pending);
                self.resend_elsewhere(None);
            }
            ResponseBody::Error(_) => self.count_error("refused"),
            ResponseBody::Status(_)
            | ResponseBody::Metrics(_)
            | ResponseBody::Range(_)
            | ResponseBody::Backup(_)
            | ResponseBody::Watch(_) => self.count_error("protocol"),
        }
    }

    fn record(&mut self, pending: &Pending) {
        let now = Instant::now();
        let since_start = now.saturating_duration_since(self.shared.start).as_nanos() as u64;
        if now < self.shared.measure_from
            || since_start >= self.shared.stop_at_nanos.load(Ordering::Relaxed)
        {
            return;
        }
        let latency = now.saturating_duration_since(pending.start).as_nanos() as u64;
        if let Ok(mut histogram) = self.plan.histogram.lock() {
            histogram.saturating_record(latency.max(1));
        }
        self.totals.completed += 1;
        self.totals.last_completion_nanos = since_start;
        self.shared.completed.fetch_add(1, Ordering::Relaxed);
    }

    fn count_error(&mut self, kind: &'static str) {
        *self.totals.errors.entry(kind).or_insert(0) += 1;
        self.shared.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Connection-level errors are retried, not failed: they count once as a retry
    /// cause, not per request.
    fn count_error_kind_once(&mut self, error: &Error) {
        if !matches!(error, Error::Io { .. }) {
            self.count_error(error.kind());
        }
    }

    fn fail_pending(&mut self, kind: &'static str) {
        for _ in 0..self.pending.len() {
            self.count_error(kind);
        }
        self.pending.clear();
    }

    /// Moves to `addr` (a redirect) or, after a backoff, to the leader found again, and
    /// re-sends every outstanding request.
    fn resend_elsewhere(&mut self, addr: Option<String>) {
        self.pipeline = None;
        if addr.is_none() {
            let delay = self.backoff.next_delay_ms(self.rng.next_u64());
            thread::sleep(Duration::from_millis(delay));
        }
        if !self.reconnect(addr) {
            self.fail_pending("unavailable");
        }
    }

    /// Opens a connection (to `addr`, the fixed member, or the leader) and re-sends the
    /// outstanding requests in their original order. `false` if the run stopped before a
    /// connection could be made.
    fn reconnect(&mut self, mut addr: Option<String>) -> bool {
        loop {
            let target = match (addr.take(), &self.plan.member) {
                (Some(addr), _) => Ok(addr),
                (None, Some(member)) => Ok(member.clone()),
                (None, None) => self.client.find_leader().map(|leader| leader.client_addr),
            };
            let connected = target.and_then(|target| {
                Pipeline::connect(
                    &target,
                    self.plan.options.connect_timeout,
                    self.plan.options.frame_bytes_max,
                )
            });
            match connected {
                Ok(pipeline) => {
                    self.pipeline = Some(pipeline);
                    self.backoff.reset();
                    break;
                }
                Err(_) if self.shared.stop.load(Ordering::Relaxed) => return false,
                Err(_) => {
                    let delay = self.backoff.next_delay_ms(self.rng.next_u64());
                    thread::sleep(Duration::from_millis(delay));
                }
            }
        }
        let mut outstanding: Vec<(u64, Pending)> = self.pending.drain().collect();
        outstanding.sort_by_key(|(request_id, _)| *request_id);
        for (_, pending) in outstanding {
            self.totals.retries += 1;
            self.send(pending.body, pending.start);
        }
        true
    }
}
