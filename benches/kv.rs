//! The state machine's apply cost: Put commands in their log encoding
//! (`kv::command_to_vec`: 16-byte keys, 64-byte values, 64 client sessions) applied to a
//! store holding 100,000 keys, as the leader applies them under the `put` workload of
//! `raftkv-bench`; once with no snapshot, once with a snapshot view taken every
//! `VIEW_EVERY` applies and kept alive until the next (so each node's first write after
//! it takes the copy-on-write path, as while a helper thread encodes a snapshot); and the
//! local read path (`KvStore::get`) for comparison. At `BIG_KEY_COUNT` (1M) keys:
//! taking a view (`view_take`), and a batch of puts applied right after a fresh view
//! that stays alive (`insert_after_view`: every write's first touch of a node copies it,
//! the loop's worst case while a helper thread encodes a snapshot).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use raftkv::kv::{Command, KvConfig, KvStore, Session, SnapshotView, command_to_vec};

/// Distinct keys, as in the end-to-end benchmark.
const KEY_COUNT: u64 = 100_000;
/// Distinct keys of the big-store figures.
const BIG_KEY_COUNT: u64 = 1_000_000;
/// Client sessions writing concurrently (the bench's 64 connections).
const SESSION_COUNT: u64 = 64;
/// Commands applied per measured iteration.
const BATCH: usize = 4096;
/// Applies between two snapshot views in the copy-on-write variant.
const VIEW_EVERY: u64 = 16_384;
/// Byte offset of the session's `seq` in an encoded Put (version, type, client id).
const SEQ_OFFSET: usize = 1 + 1 + 8;

/// SplitMix64: a deterministic key sequence without a `rand` dependency.
fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn key(n: u64, key_count: u64) -> Vec<u8> {
    format!("key-{:012}", n % key_count).into_bytes()
}

/// A store holding every key once, with `SESSION_COUNT` sessions (ids 1..=64).
struct Fixture {
    store: KvStore,
    index: u64,
    /// One encoded Put per slot; session `i % 64`, seq rewritten before each round.
    commands: Vec<Vec<u8>>,
    round: u64,
}

impl Fixture {
    fn new(key_count: u64) -> Fixture {
        let mut store = KvStore::new(KvConfig::default());
        let mut index = 0;
        for _ in 0..SESSION_COUNT {
            index += 1;
            store.apply(index, &command_to_vec(&Command::RegisterSession));
        }
        let put = |i: u64, seq: u64, key: Vec<u8>| {
            command_to_vec(&Command::Put {
                session: Session {
                    client_id: 1 + i % SESSION_COUNT,
                    seq,
                },
                key,
                value: vec![b'v'; 64],
            })
        };
        for n in 0..key_count {
            index += 1;
            store.apply(index, &put(n, 1 + n / SESSION_COUNT, key(n, key_count)));
        }
        let commands = (0..BATCH as u64)
            .map(|i| put(i, 0, key(mix(i), key_count)))
            .collect();
        Fixture {
            store,
            index,
            commands,
            round: key_count / SESSION_COUNT + 1,
        }
    }

    /// Gives every command a fresh seq (after every seq of the previous round).
    fn next_round(&mut self) {
        let per_session = BATCH as u64 / SESSION_COUNT + 1;
        self.round += per_session;
        for (i, command) in self.commands.iter_mut().enumerate() {
            let seq = self.round + i as u64 / SESSION_COUNT;
            command[SEQ_OFFSET..SEQ_OFFSET + 8].copy_from_slice(&seq.to_le_bytes());
        }
    }
}

fn apply_puts(c: &mut Criterion) {
    let mut group = c.benchmark_group("kv_apply_put_16b_64b");
    group.throughput(Throughput::Elements(BATCH as u64));
    for with_views in [false, true] {
        let name = if with_views {
            "view_every_16384"
        } else {
            "no_snapshot"
        };
        let mut fixture = Fixture::new(KEY_COUNT);
        let mut view: Option<SnapshotView> = None;
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iterations| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iterations {
                    fixture.next_round();
                    let start = Instant::now();
                    for command in &fixture.commands {
                        fixture.index += 1;
                        if with_views && fixture.index.is_multiple_of(VIEW_EVERY) {
                            view = Some(fixture.store.snapshot_view());
                        }
                        black_box(fixture.store.apply(fixture.index, command));
                    }
                    elapsed += start.elapsed();
                }
                elapsed
            });
        });
        drop(view);
    }
    group.finish();
}

fn big_store(c: &mut Criterion) {
    let mut group = c.benchmark_group("kv_1m_keys");
    let mut fixture = Fixture::new(BIG_KEY_COUNT);
    group.bench_function("view_take", |b| {
        b.iter(|| black_box(fixture.store.snapshot_view()));
    });
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("insert_after_view", |b| {
        b.iter_custom(|iterations| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iterations {
                fixture.next_round();
                let view = fixture.store.snapshot_view();
                let start = Instant::now();
                for command in &fixture.commands {
                    fixture.index += 1;
                    black_box(fixture.store.apply(fixture.index, command));
                }
                elapsed += start.elapsed();
                drop(view);
            }
            elapsed
        });
    });
    group.finish();
}

fn get(c: &mut Criterion) {
    let mut group = c.benchmark_group("kv_get_16b");
    group.throughput(Throughput::Elements(BATCH as u64));
    let fixture = Fixture::new(KEY_COUNT);
    let keys: Vec<Vec<u8>> = (0..BATCH as u64).map(|i| key(mix(i), KEY_COUNT)).collect();
    group.bench_function("local", |b| {
        b.iter(|| {
            for key in &keys {
                black_box(fixture.store.get(key));
            }
        });
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    apply_puts(&mut criterion);
    get(&mut criterion);
    big_store(&mut criterion);
    criterion.final_summary();
}
