//! WAL benchmarks: append+sync per batch size next to the raw write+fdatasync of
//! the same bytes in the same directory (the yardstick), and the reopen time of a
//! 1 GiB log of sealed segments. The log and the raw file are stepped alternately
//! in both measurements (each reports only its own step), so a neighbour loading
//! the disk slows both alike instead of skewing their ratio; after each size the
//! medians of all paired steps and their ratio are printed (`wal/paired/...`).
//! Warm-up and measurement are short so the whole run takes well under two minutes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use raftkv::raft::message::{Entry, EntryKind};
use raftkv::storage::format::record_bytes;
use raftkv::storage::{Wal, WalOptions};

const BATCHES: [usize; 3] = [1, 16, 256];
const PAYLOADS: [usize; 2] = [64, 1024];

fn batch(first: u64, count: usize, payload: usize) -> Vec<Entry> {
    (0..count as u64)
        .map(|k| Entry {
            index: first + k,
            term: 1,
            kind: EntryKind::Normal,
            data: vec![7; payload].into(),
        })
        .collect()
}

/// One raw file and one log in the same directory, stepped alternately so that both
/// see the same disk conditions (the machine's disk is shared and noisy: measuring
/// one for two seconds and then the other compares two different disks).
struct Pair {
    raw: File,
    raw_bytes: Vec<u8>,
    wal: Wal,
    entries: Vec<Entry>,
    /// Every `(raw, wal)` pair of step times, for the paired medians printed at the end.
    times: Vec<(Duration, Duration)>,
}

impl Pair {
    fn raw_step(&mut self) {
        self.raw.write_all(&self.raw_bytes).expect("write");
        self.raw.sync_data().expect("fdatasync");
    }

    fn wal_step(&mut self) {
        let next = self.wal.last_index() + 1;
        for (k, entry) in self.entries.iter_mut().enumerate() {
            entry.index = next + k as u64;
        }
        self.wal.append(&self.entries).expect("append");
        self.wal.sync().expect("sync");
    }
}

fn timed(step: fn(&mut Pair), pair: &mut Pair) -> Duration {
    let start = Instant::now();
    step(pair);
    start.elapsed()
}

/// Runs `iters` raw steps each followed by a log step; returns the total time of
/// the raw steps (`wal_measured` false) or of the log steps (true).
fn paired(pair: &mut Pair, iters: u64, wal_measured: bool) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let raw = timed(Pair::raw_step, pair);
        let wal = timed(Pair::wal_step, pair);
        pair.times.push((raw, wal));
        total += if wal_measured { wal } else { raw };
    }
    total
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}

/// Prints the medians of both steps over every paired iteration, and their ratio.
fn report(id: &str, count: usize, times: &[(Duration, Duration)]) {
    if times.is_empty() {
        return; // filtered out on the command line
    }
    let raw = median(times.iter().map(|t| t.0).collect());
    let wal = median(times.iter().map(|t| t.1).collect());
    println!(
        "wal/paired/{id}: {} pairs, median raw {raw:.1?}, append_sync {wal:.1?}, \
         ratio {:.2}, {:.0} entries/s",
        times.len(),
        wal.as_secs_f64() / raw.as_secs_f64(),
        count as f64 / wal.as_secs_f64()
    );
}

fn append_sync(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal");
    for payload in PAYLOADS {
        for count in BATCHES {
            let dir = tempfile::tempdir().expect("temp dir");
            let raw = OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.path().join("raw"))
                .expect("raw file");
            let mut pair = Pair {
                raw,
                raw_bytes: vec![7u8; count * record_bytes(payload)],
                wal: Wal::open(&dir.path().join("wal"), WalOptions::default()).expect("open"),
                entries: batch(1, count, payload),
                times: Vec::new(),
            };
            group.throughput(Throughput::Elements(count as u64));
            let id = format!("{count}x{payload}B");
            group.bench_function(BenchmarkId::new("raw_write_fdatasync", &id), |b| {
                b.iter_custom(|iters| paired(&mut pair, iters, false));
            });
            group.bench_function(BenchmarkId::new("append_sync", &id), |b| {
                b.iter_custom(|iters| paired(&mut pair, iters, true));
            });
            report(&id, count, &pair.times);
        }
    }
    group.finish();
}

fn reopen(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = WalOptions {
        fsync: raftkv::storage::FsyncMode::Never,
        ..WalOptions::default()
    };
    {
        let mut wal = Wal::open(dir.path(), options).expect("open");
        let mut entries = batch(1, 1024, 1024);
        while wal.total_bytes() < (1 << 30) + (64 << 20) {
            let next = wal.last_index() + 1;
            for (k, entry) in entries.iter_mut().enumerate() {
                entry.index = next + k as u64;
            }
            wal.append(&entries).expect("append");
            wal.sync().expect("sync");
        }
    }
    let mut group = c.benchmark_group("wal");
    group.sample_size(10);
    group.bench_function("reopen_1GiB_1KiB_entries", |b| {
        b.iter(|| Wal::open(dir.path(), options).expect("reopen"));
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .configure_from_args();
    append_sync(&mut c);
    reopen(&mut c);
    c.final_summary();
}
