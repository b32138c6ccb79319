//! WAL benchmarks: append+sync per batch size next to the raw write+fdatasync of
//! the same bytes in the same directory (the yardstick), and the reopen time of a
//! 1 GiB log of sealed segments. Warm-up and measurement are short so the whole
//! run takes well under two minutes.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::Duration;

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
            data: vec![7; payload],
        })
        .collect()
}

fn append_sync(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal");
    for payload in PAYLOADS {
        for count in BATCHES {
            let dir = tempfile::tempdir().expect("temp dir");
            group.throughput(Throughput::Elements(count as u64));
            let bytes = vec![7u8; count * record_bytes(payload)];
            let id = format!("{count}x{payload}B");
            group.bench_function(BenchmarkId::new("raw_write_fdatasync", &id), |b| {
                let path = dir.path().join("raw");
                let mut file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("raw file");
                b.iter(|| {
                    file.write_all(&bytes).expect("write");
                    file.sync_data().expect("fdatasync");
                });
            });
            group.bench_function(BenchmarkId::new("append_sync", &id), |b| {
                let mut wal =
                    Wal::open(&dir.path().join("wal"), WalOptions::default()).expect("open");
                let mut entries = batch(1, count, payload);
                b.iter(|| {
                    let next = wal.last_index() + 1;
                    for (k, entry) in entries.iter_mut().enumerate() {
                        entry.index = next + k as u64;
                    }
                    wal.append(&entries).expect("append");
                    wal.sync().expect("sync");
                });
            });
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
