//! `--preload`: writes every key of `--keys` once (indexes `0..keys`, values of
//! `--value-bytes`) before the warm-up, so a measurement at ten million keys is one
//! command.
//!
//! `--connections` threads each write every `connections`-th index through one session
//! and one connection to the leader, `--pipeline` puts in flight. Progress (keys written,
//! rate) goes to stderr every few seconds. Any answer but `Ok` fails the preload: it
//! runs against a cluster that is not being disturbed, and a half-filled store would
//! make the figures after it meaningless.

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

/// What to fill and how.
#[derive(Debug, Clone)]
pub struct PreloadPlan {
    /// The leader's client address.
    pub leader_addr: String,
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
/// [`BenchError::Preload`] naming the first failure (a refused put, a lost connection,
/// a timeout), or when `interrupted` is set.
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

/// Writes indexes `first, first + connections, ...` below `plan.keys`.
fn fill_every_nth(
    plan: &PreloadPlan,
    first: u64,
    written: &AtomicU64,
    stop: &AtomicBool,
) -> Result<(), String> {
    let addrs = [plan.leader_addr.clone()];
    let mut client = Client::connect(&addrs, plan.options.clone()).map_err(|e| e.to_string())?;
    let client_id = client.session_id().map_err(|e| e.to_string())?;
    let mut pipeline = Pipeline::connect(
        &plan.leader_addr,
        plan.options.connect_timeout,
        plan.options.frame_bytes_max,
    )
    .map_err(|e| e.to_string())?;
    let stride = plan.connections as u64;
    let mut next = first;
    let mut seq = 0;
    let mut key = Vec::new();
    while next < plan.keys || pipeline.in_flight() > 0 {
        while next < plan.keys && pipeline.in_flight() < plan.pipeline {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            key_bytes(next, &mut key);
            seq += 1;
            let put = Command::Put {
                session: Session { client_id, seq },
                key: key.clone(),
                value: plan.value.clone(),
            };
            pipeline
                .submit(RequestBody::Command(put))
                .map_err(|e| e.to_string())?;
            next += stride;
        }
        let deadline = Instant::now() + plan.options.request_timeout;
        let response = pipeline.recv(deadline).map_err(|e| e.to_string())?;
        match response.body {
            ResponseBody::Result(CommandResult::Ok) => {
                written.fetch_add(1, Ordering::Relaxed);
            }
            other => return Err(format!("a put was answered {other:?}")),
        }
    }
    Ok(())
}
