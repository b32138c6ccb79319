//! Measures what a snapshot of a 1M-key store costs the event loop: taking the view,
//! the copy-on-write cost of the writes applied while a helper thread encodes it, the
//! encode itself (off the loop), and restore. Prints the figures; asserts nothing.
//!
//! `cargo run --release --example kv_snapshot -- [KEYS]` (default 1,000,000 keys of 16 B
//! with 64 B values).

use std::time::{Duration, Instant};

use raftkv::kv::{Command, KvConfig, KvStore, Session, command_to_vec};

fn key(i: u64) -> Vec<u8> {
    format!("{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).into_bytes()
}

fn put(seq: u64, key: Vec<u8>) -> Vec<u8> {
    command_to_vec(&Command::Put {
        session: Session { client_id: 1, seq },
        key,
        value: vec![b'v'; 64],
    })
}

fn main() {
    let keys: u64 = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(1_000_000);
    let mut store = KvStore::new(KvConfig::default());
    store.apply(1, &command_to_vec(&Command::RegisterSession));
    let started = Instant::now();
    for i in 0..keys {
        store.apply(i + 2, &put(i + 1, key(i)));
    }
    println!("load {keys} keys: {:?}", started.elapsed());
    let mut index = keys + 2;

    let started = Instant::now();
    let view = store.snapshot_view();
    println!("snapshot_view (on the loop): {:?}", started.elapsed());

    let encoder = std::thread::spawn(move || {
        let started = Instant::now();
        let bytes = view.encode();
        (started.elapsed(), bytes)
    });
    // The loop keeps applying while the helper encodes: each first write to a leaf
    // copies that leaf and its path.
    let mut worst = Duration::ZERO;
    let mut total = Duration::ZERO;
    let writes = 10_000;
    for i in 0..writes {
        let command = put(index, key(i * 7919 % keys));
        let started = Instant::now();
        store.apply(index, &command);
        let took = started.elapsed();
        worst = worst.max(took);
        total += took;
        index += 1;
    }
    println!("{writes} applies during the encode: total {total:?}, worst single apply {worst:?}");
    let (encode_time, bytes) = encoder.join().expect("encoder thread");
    println!(
        "encode on the helper thread: {encode_time:?}, {} MiB",
        bytes.len() / (1024 * 1024)
    );

    let started = Instant::now();
    for i in 0..1000 {
        store.apply(index, &put(index, key(i * 104_729 % keys + 1)));
        index += 1;
    }
    println!(
        "1000 applies with no view alive (baseline): {:?}",
        started.elapsed()
    );

    let mut batch_worst = Duration::ZERO;
    let started = Instant::now();
    let view = store.snapshot_view();
    let batch_started = Instant::now();
    for i in 0..1000 {
        store.apply(index, &put(index, key(i * 104_729 % keys)));
        index += 1;
    }
    batch_worst = batch_worst.max(batch_started.elapsed());
    // The helper thread owns the view and frees the replaced leaves, not the loop.
    std::thread::spawn(move || drop(view))
        .join()
        .expect("dropping thread");
    println!(
        "1000 applies to distinct leaves right after a view (one loop turn): {batch_worst:?} \
         (with the view and its release on another thread: {:?})",
        started.elapsed()
    );

    let started = Instant::now();
    let restored = KvStore::restore(KvConfig::default(), &bytes).expect("valid snapshot");
    println!("restore: {:?} ({} keys)", started.elapsed(), restored.len());

    let started = Instant::now();
    let deep: std::collections::BTreeMap<Vec<u8>, Vec<u8>> =
        (0..keys).map(|i| (key(i), vec![b'v'; 64])).collect();
    let built = started.elapsed();
    let started = Instant::now();
    let copy = deep.clone();
    println!(
        "for comparison, a deep clone of one 1M-entry BTreeMap: {:?} (built in {built:?})",
        started.elapsed()
    );
    drop(copy);
}
