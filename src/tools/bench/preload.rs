//! `--preload`: writes every key of `--keys` once (indexes `0..keys`, values of
//! `--value-bytes`) before the warm-up, so a measurement at ten million keys is one
//! command.
//!
//! `--connections` threads each write every `connections`-th index through one session
//! and one connection to the leader, `--pipeline` puts in flight. Progress (keys written,
//! rate) goes to stderr every few seconds.
//!
//! A leader change does not stop it: a `NotLeader` answer, a lost connection or a
//! timeout puts every unacknowledged index back in the queue, and the thread finds the
//! leader again among `member_addrs` and resends them (with new sequence numbers: a put
//! of the same value twice is harmless, and a fresh number cannot be refused as a stale
//! retry). It gives up when no leader takes its puts for [`RECOVERY_WINDOW`]. Any other
//! answer (a refused value, an expired session) fails the preload: a half-filled store
//! would make the figures after it meaningless.
//!
//! Invariant: every index below `keys` is acknowledged `Ok` at least once before
//! `preload` returns `Ok`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::client::{Client, ClientOptions, Pipeline};
use crate::codec::client::{RequestBody, ResponseBody};
use crate::kv::{Command, CommandResult, Session};

use super::BenchError;
use super::keys::key_bytes;

/// How often progress is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// How long a thread goes on looking for a leader that takes its puts before it fails.
pub const RECOVERY_WINDOW: Duration = Duration::from_secs(30);

/// Pause between attempts to reach a leader.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// What to fill and how.
#[derive(Debug, Clone)]
pub struct PreloadPlan {
    /// The leader's client address.
    pub leader_addr: String,
    /// Every member's client address, where a new leader is looked for.
    pub member_addrs: Vec<String>,
    /// Keys `0..keys` are written.
    pub keys: u64,
    /// The value written to each.
    pub value: Vec<u8>,
    /// Writer threads (one connection and session each).
    pub connections: usize,
    /// Puts in flight per connection.
    pub pipeline: usize,
    /// Timeouts and frame limit.
    pub options: ClientOptions,
}

/// Fills the store; returns how long it took.
///
/// # Errors
/// [`BenchError::Preload`] naming the first failure (a refused put, no leader for
/// [`RECOVERY_WINDOW`]), or when `interrupted` is set.
pub fn preload(plan: &PreloadPlan, interrupted: &AtomicBool) -> Result<Duration, BenchError> {
    let started = Instant::now();
    let written = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let results: Vec<Result<(), String>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..plan.connections)
            .map(|first| {
                let (written, stop) = (&written, &stop);
                scope.spawn(move || {
                    let result = fill_every_nth(plan, first as u64, written, stop);
                    if result.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    result
                })
            })
            .collect();
        let mut last = (Instant::now(), 0);
        while !handles.iter().all(|handle| handle.is_finished()) {
            thread::sleep(Duration::from_millis(50));
            if interrupted.load(Ordering::Relaxed) {
                stop.store(true, Ordering::Relaxed);
            }
            let now = Instant::now();
            if now.duration_since(last.0) >= PROGRESS_EVERY {
                let done = written.load(Ordering::Relaxed);
                let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
                eprintln!(
                    "preload: {done}/{} keys ({rate:.0} puts/s, {:.0} s)",
                    plan.keys,
                    started.elapsed().as_secs_f64()
                );
                last = (now, done);
            }
        }
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err("a preload thread panicked".into()))
            })
            .collect()
    });
    if let Some(Err(reason)) = results.into_iter().find(Result::is_err) {
        return Err(BenchError::Preload(reason));
    }
    if interrupted.load(Ordering::Relaxed) {
        return Err(BenchError::Preload("interrupted".into()));
    }
    let elapsed = started.elapsed();
    eprintln!(
        "preload: {} keys in {:.1} s",
        plan.keys,
        elapsed.as_secs_f64()
    );
    Ok(elapsed)
}

/// Writes indexes `first, first + connections, ...` below `plan.keys`, finding the
/// leader again whenever the one it writes to stops taking puts.
fn fill_every_nth(
    plan: &PreloadPlan,
    first: u64,
    written: &AtomicU64,
    stop: &AtomicBool,
) -> Result<(), String> {
    let mut writer = Writer::connect(plan, &plan.leader_addr)?;
    let stride = plan.connections as u64;
    let mut next = first;
    // Indexes to send again after a leader change, and those in flight by request id.
    let mut resend: Vec<u64> = Vec::new();
    let mut in_flight: HashMap<u64, u64> = HashMap::new();
    let mut key = Vec::new();
    let mut failing_since: Option<Instant> = None;
    while next < plan.keys || !resend.is_empty() || !in_flight.is_empty() {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let sent = writer.fill(
            plan,
            &mut next,
            stride,
            &mut resend,
            &mut in_flight,
            &mut key,
        );
        let answer = sent.and_then(|()| {
            let deadline = Instant::now() + plan.options.request_timeout;
            writer
                .pipeline
                .recv(deadline)
                .map_err(|e| Retry(e.to_string()))
        });
        let reason = match answer {
            Ok(response) => match response.body {
                ResponseBody::Result(CommandResult::Ok) => {
                    if in_flight.remove(&response.request_id).is_some() {
                        written.fetch_add(1, Ordering::Relaxed);
                    }
                    failing_since = None;
                    continue;
                }
                ResponseBody::NotLeader { .. } => "the node is no longer the leader".to_string(),
                other => return Err(format!("a put was answered {other:?}")),
            },
            Err(Retry(reason)) => reason,
        };
        // Every unacknowledged put is sent again to whichever node leads now.
        resend.extend(in_flight.drain().map(|(_, index)| index));
        let since = *failing_since.get_or_insert_with(Instant::now);
        writer = loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            if since.elapsed() >= RECOVERY_WINDOW {
                return Err(format!(
                    "no leader took puts for {} s (last: {reason})",
                    RECOVERY_WINDOW.as_secs()
                ));
            }
            thread::sleep(RETRY_PAUSE);
            match Writer::find_leader(plan) {
                Ok(writer) => break writer,
                Err(_) => continue,
            }
        };
    }
    Ok(())
}

/// A failure after which the thread looks for the leader again.
struct Retry(String);

/// One session and one pipelined connection to the node believed to lead.
struct Writer {
    client_id: u64,
    seq: u64,
    pipeline: Pipeline,
}

impl Writer {
    /// Registers a session through `addr` and opens a pipeline to it.
    fn connect(plan: &PreloadPlan, addr: &str) -> Result<Writer, String> {
        let addrs = [addr.to_string()];
        let mut client =
            Client::connect(&addrs, plan.options.clone()).map_err(|e| e.to_string())?;
        let client_id = client.session_id().map_err(|e| e.to_string())?;
        let pipeline = plan
            .options
            .pipeline(addr, plan.options.connect_timeout)
            .map_err(|e| e.to_string())?;
        Ok(Writer {
            client_id,
            seq: 0,
            pipeline,
        })
    }

    /// Asks the members who leads now and connects to it.
    fn find_leader(plan: &PreloadPlan) -> Result<Writer, String> {
        let mut client =
            Client::connect(&plan.member_addrs, plan.options.clone()).map_err(|e| e.to_string())?;
        let leader = client.find_leader().map_err(|e| e.to_string())?;
        Writer::connect(plan, &leader.client_addr)
    }

    /// Submits puts until `plan.pipeline` are in flight: indexes to resend first, then
    /// new ones from `next` on.
    fn fill(
        &mut self,
        plan: &PreloadPlan,
        next: &mut u64,
        stride: u64,
        resend: &mut Vec<u64>,
        in_flight: &mut HashMap<u64, u64>,
        key: &mut Vec<u8>,
    ) -> Result<(), Retry> {
        while in_flight.len() < plan.pipeline {
            let index = match resend.pop() {
                Some(index) => index,
                None if *next < plan.keys => {
                    *next += stride;
                    *next - stride
                }
                None => break,
            };
            key_bytes(index, key);
            self.seq += 1;
            let put = Command::Put {
                session: Session {
                    client_id: self.client_id,
                    seq: self.seq,
                },
                key: key.clone(),
                value: plan.value.clone(),
            };
            let request_id = match self.pipeline.submit(RequestBody::Command(put)) {
                Ok(id) => id,
                Err(error) => {
                    resend.push(index);
                    return Err(Retry(error.to_string()));
                }
            };
            in_flight.insert(request_id, index);
        }
        Ok(())
    }
}
