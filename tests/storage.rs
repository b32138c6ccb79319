//! Integration tests of the segmented WAL and the `raftkv-log` tool (issue 2, §4):
//! a model-based property test, torn tails cut at every byte, a flipped byte in a
//! sealed segment, and many small segments rolled, compacted and reopened.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use raftkv::raft::message::{Entry, EntryKind};
use raftkv::storage::{Error, FsyncMode, Wal, WalOptions};

fn options(segment_bytes: u64) -> WalOptions {
    WalOptions {
        segment_bytes,
        fsync: FsyncMode::Never,
        preallocate: true,
        verify_on_open: false,
    }
}

fn entry(index: u64, term: u64, size: usize) -> Entry {
    let data = (0..size).map(|k| (index as usize * 31 + k) as u8).collect();
    Entry {
        index,
        term,
        kind: if size == 0 {
            EntryKind::Noop
        } else {
            EntryKind::Normal
        },
        data,
    }
}

fn all(wal: &mut Wal) -> Vec<Entry> {
    let (lo, hi) = (wal.first_index(), wal.last_index() + 1);
    let mut out = Vec::new();
    while out.len() < (hi - lo) as usize {
        out.extend(wal.entries(lo + out.len() as u64, hi, 300).unwrap());
    }
    out
}

fn log_tool(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_raftkv-log"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        count: usize,
        size: usize,
        new_term: bool,
    },
    Sync,
    Truncate(u8),
    Compact(u8),
    SyncReopen,
    DropReopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..8, 0usize..90, any::<bool>())
            .prop_map(|(count, size, new_term)| Op::Append { count, size, new_term }),
        2 => Just(Op::Sync),
        1 => any::<u8>().prop_map(Op::Truncate),
        1 => any::<u8>().prop_map(Op::Compact),
        1 => Just(Op::SyncReopen),
        1 => Just(Op::DropReopen),
    ]
}

/// The model: the marker, the entries after it, and the last index that a sync made
/// durable and no truncation has removed since.
struct Model {
    marker: (u64, u64),
    entries: Vec<Entry>,
    durable_last: u64,
}

impl Model {
    fn last(&self) -> (u64, u64) {
        self.entries
            .last()
            .map_or(self.marker, |e| (e.index, e.term))
    }
}

fn check(wal: &mut Wal, model: &Model) {
    assert_eq!(wal.compacted(), model.marker);
    assert_eq!(wal.last_index(), model.last().0);
    assert_eq!(wal.term(model.marker.0), Some(model.marker.1));
    assert_eq!(all(wal), model.entries);
}

// Goal: random append/sync/truncate/compact/reopen sequences keep the log equal to
// an in-memory model. Method: after a sync+reopen the log equals the model exactly;
// after a reopen without sync (unsynced buffer dropped) it is a prefix of the model
// holding at least every synced entry not truncated since (truncate_suffix is
// durable after the next sync, compact_prefix at once).
proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn wal_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), options(400)).unwrap();
        let mut model = Model { marker: (0, 0), entries: Vec::new(), durable_last: 0 };
        for op in ops {
            match op {
                Op::Append { count, size, new_term } => {
                    let (last, term) = model.last();
                    let term = term.max(1) + u64::from(new_term);
                    let batch: Vec<Entry> =
                        (1..=count as u64).map(|k| entry(last + k, term, size)).collect();
                    wal.append(&batch).unwrap();
                    model.entries.extend(batch);
                }
                Op::Sync => {
                    wal.sync().unwrap();
                    model.durable_last = model.last().0;
                }
                Op::Truncate(at) => {
                    let from = model.marker.0 + 1 + u64::from(at) % (model.entries.len() as u64 + 1);
                    wal.truncate_suffix(from).unwrap();
                    model.entries.truncate((from - model.marker.0 - 1) as usize);
                    model.durable_last = model.durable_last.min(from - 1);
                }
                Op::Compact(at) => {
                    let upto = model.marker.0 + 1 + u64::from(at) % (model.entries.len() as u64 + 1);
                    wal.compact_prefix(upto).unwrap();
                    model.durable_last = model.last().0;
                    let marker = wal.compacted();
                    prop_assert!(marker.0 >= model.marker.0 && marker.0 < upto.max(model.marker.0 + 1));
                    let dropped = (marker.0 - model.marker.0) as usize;
                    if dropped > 0 {
                        prop_assert_eq!(marker.1, model.entries[dropped - 1].term);
                    }
                    model.entries.drain(..dropped);
                    model.marker = marker;
                }
                Op::SyncReopen => {
                    wal.sync().unwrap();
                    drop(wal);
                    wal = Wal::open(dir.path(), options(400)).unwrap();
                    model.durable_last = model.last().0;
                }
                Op::DropReopen => {
                    drop(wal);
                    wal = Wal::open(dir.path(), options(400)).unwrap();
                    let last = wal.last_index();
                    prop_assert!(last >= model.durable_last, "lost synced entries");
                    prop_assert!(last <= model.last().0, "invented entries");
                    model.entries.truncate((last - model.marker.0) as usize);
                    model.durable_last = last;
                }
            }
            check(&mut wal, &model);
        }
    }
}

// Goal: a torn tail loses only unsynced records and never invents any. Method: sync
// N records, write M more, then cut the tail file at every byte offset inside the M
// records and reopen; once with the file shortened there (a file that grows as it is
// written) and once with zeroes from there to the preallocated end.
#[test]
fn torn_tail_at_every_offset() {
    let dir = tempfile::tempdir().unwrap();
    let synced: Vec<Entry> = (1..=6).map(|i| entry(i, 1, 20)).collect();
    let unsynced: Vec<Entry> = (7..=10).map(|i| entry(i, 2, 33)).collect();
    let (path, synced_len, full_len) = {
        let mut wal = Wal::open(dir.path(), options(1 << 20)).unwrap();
        wal.append(&synced).unwrap();
        wal.sync().unwrap();
        let synced_len = wal.total_bytes();
        wal.append(&unsynced).unwrap();
        wal.sync().unwrap();
        (
            wal.segments()[0].path.clone(),
            synced_len,
            wal.total_bytes(),
        )
    };
    let full = fs::read(&path).unwrap();
    assert_eq!(full.len(), 1 << 20, "the open segment is preallocated");
    assert!(full[full_len as usize..].iter().all(|&b| b == 0));
    let full = &full[..full_len as usize];
    let mut want: Vec<Entry> = synced.clone();
    want.extend(unsynced.iter().cloned());
    for cut in synced_len as usize..full.len() {
        for zero_fill in [false, true] {
            let mut torn = full[..cut].to_vec();
            if zero_fill {
                torn.resize(1 << 20, 0);
            }
            fs::write(&path, &torn).unwrap();
            let mut wal = Wal::open(dir.path(), options(1 << 20)).unwrap();
            let got = all(&mut wal);
            assert!(got.len() >= synced.len(), "cut {cut}: lost synced records");
            assert_eq!(got[..], want[..got.len()], "cut {cut}: invented records");
            wal.append(&[entry(got.len() as u64 + 1, 3, 5)]).unwrap();
            wal.sync().unwrap();
            drop(wal);
            let mut wal = Wal::open(dir.path(), options(1 << 20)).unwrap();
            assert_eq!(all(&mut wal).len(), got.len() + 1, "cut {cut}: append lost");
        }
    }
    // Zeroed space after the last record ends the log cleanly, preallocated or not.
    let mut zeroed = full.to_vec();
    zeroed.extend_from_slice(&[0u8; 4096]);
    fs::write(&path, &zeroed).unwrap();
    let mut wal = Wal::open(dir.path(), options(1 << 20)).unwrap();
    assert_eq!(all(&mut wal), want);
    drop(wal);
    // A bad record followed by a valid one is corruption, never silently dropped.
    let mut damaged = full.to_vec();
    damaged[synced_len as usize + 30] ^= 0xff;
    fs::write(&path, &damaged).unwrap();
    match Wal::open(dir.path(), options(1 << 20)) {
        Err(Error::Corruption { offset, .. }) => assert_eq!(offset, synced_len),
        other => panic!("damaged tail opened: {other:?}"),
    }
}

fn sealed_log(dir: &Path) -> Vec<PathBuf> {
    let mut wal = Wal::open(dir, options(512)).unwrap();
    let entries: Vec<Entry> = (1..=40).map(|i| entry(i, 1 + i / 10, 50)).collect();
    wal.append(&entries).unwrap();
    wal.sync().unwrap();
    let segments = wal.segments();
    assert!(segments.len() >= 4 && segments[0].sealed);
    segments.into_iter().map(|s| s.path).collect()
}

// Goal: one flipped byte in a sealed segment is reported with its file and offset by
// both open (with verify_on_open, or at read time when the footer is trusted) and
// `raftkv-log verify`.
#[test]
fn flipped_byte_in_sealed_segment() {
    let dir = tempfile::tempdir().unwrap();
    let paths = sealed_log(dir.path());
    let dir_arg = dir.path().to_str().unwrap();
    assert_eq!(log_tool(&["verify", dir_arg]).0, 0);
    let mut bytes = fs::read(&paths[1]).unwrap();
    let record_at = 32 + 88; // the second record of segment 1 (records of 50 B take 80 B)
    let record_at = record_at - 8;
    bytes[record_at + 40] ^= 0x10;
    fs::write(&paths[1], &bytes).unwrap();

    let verify = WalOptions {
        verify_on_open: true,
        ..options(512)
    };
    match Wal::open(dir.path(), verify) {
        Err(Error::Corruption { file, offset, .. }) => {
            assert_eq!((file, offset), (paths[1].clone(), record_at as u64));
        }
        other => panic!("corrupt segment opened: {other:?}"),
    }
    let mut wal = Wal::open(dir.path(), options(512)).unwrap();
    let index = wal.segments()[1].first_index + 1;
    match wal.entry(index) {
        Err(Error::Corruption { file, offset, .. }) => {
            assert_eq!((file, offset), (paths[1].clone(), record_at as u64));
        }
        other => panic!("corrupt entry read: {other:?}"),
    }
    drop(wal);
    let (code, text) = log_tool(&["verify", dir_arg]);
    assert_eq!(code, 1, "{text}");
    let name = paths[1].file_name().unwrap().to_str().unwrap();
    assert!(
        text.contains(&format!("{name}: byte offset {record_at}: corrupt")),
        "{text}"
    );

    // A flipped header byte fails even the trusting open.
    let mut bytes = fs::read(&paths[0]).unwrap();
    bytes[9] ^= 1;
    fs::write(&paths[0], &bytes).unwrap();
    match Wal::open(dir.path(), options(512)) {
        Err(Error::Corruption {
            file, offset: 28, ..
        }) => assert_eq!(file, paths[0]),
        other => panic!("bad header opened: {other:?}"),
    }
}

// Goal: many small segments roll, compact and reopen with the marker kept; the tool
// sees the same segments, refuses truncate while locked, and truncates with backups.
#[test]
fn roll_compact_reopen_and_tool() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap().to_string();
    let mut wal = Wal::open(dir.path(), options(256)).unwrap();
    let entries: Vec<Entry> = (1..=200).map(|i| entry(i, 1 + i / 50, 40)).collect();
    for chunk in entries.chunks(7) {
        wal.append(chunk).unwrap();
        wal.sync().unwrap();
    }
    let segments = wal.segments();
    assert!(segments.len() > 50, "{} segments", segments.len());
    let (code, text) = log_tool(&["truncate", &dir_arg, "--after", "10", "--yes"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("locked"), "{text}");
    let (code, text) = log_tool(&["stat", &dir_arg]);
    assert_eq!(code, 0);
    assert!(
        text.contains("may be changing") && text.contains("200 entries"),
        "{text}"
    );

    wal.compact_prefix(120).unwrap();
    let (marker, term) = wal.compacted();
    assert!(marker < 120 && marker > 100, "marker {marker}");
    assert_eq!(term, entries[marker as usize - 1].term);
    assert_eq!(
        wal.entries(marker, marker + 1, 0).unwrap_err().to_string(),
        format!("entry {marker} is compacted")
    );
    drop(wal);
    let mut wal = Wal::open(dir.path(), options(256)).unwrap();
    assert_eq!(wal.compacted(), (marker, term));
    assert_eq!(all(&mut wal), entries[marker as usize..]);
    wal.reset_to_snapshot(500, 9).unwrap();
    assert_eq!(
        (wal.first_index(), wal.last_index(), wal.term(500)),
        (501, 500, Some(9))
    );
    wal.append(&(501..=540).map(|i| entry(i, 9, 40)).collect::<Vec<_>>())
        .unwrap();
    wal.sync().unwrap();
    drop(wal);

    let (code, text) = log_tool(&["dump", &dir_arg, "--from", "520", "--to", "521", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.starts_with("{\"index\":520,\"term\":9,\"kind\":\"normal\",\"bytes\":40"),
        "{text}"
    );
    // The open segment's preallocated zeroes are not "after" the last entry.
    let (code, text) = log_tool(&["truncate", &dir_arg, "--after", "540", "--yes"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("nothing after index 540"), "{text}");
    let (code, text) = log_tool(&["truncate", &dir_arg, "--after", "510", "--yes"]);
    assert_eq!(code, 0, "{text}");
    let backups = fs::read_dir(dir.path()).unwrap().filter(|e| {
        e.as_ref()
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("backup-")
    });
    assert_eq!(backups.count(), 1);
    let mut wal = Wal::open(dir.path(), options(256)).unwrap();
    assert_eq!((wal.compacted(), wal.last_index()), ((500, 9), 510));
    assert_eq!(
        all(&mut wal),
        (501..=510).map(|i| entry(i, 9, 40)).collect::<Vec<_>>()
    );
}

// Goal: `sync` says whether it flushed anything to the disk, so the node counts
// only real fdatasyncs (a loop turn that only moved the commit index appends
// nothing, and a log that never syncs flushes nothing).
#[test]
fn sync_reports_whether_it_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let always = WalOptions {
        fsync: FsyncMode::Always,
        ..options(64 * 1024)
    };
    let mut wal = Wal::open(dir.path(), always).unwrap();
    wal.sync().unwrap();
    assert!(!wal.sync().unwrap(), "nothing appended since the last sync");
    wal.append(&[entry(1, 1, 100)]).unwrap();
    assert!(wal.sync().unwrap(), "an append must be flushed");
    assert!(!wal.sync().unwrap(), "already flushed");
    // Rolling into new segments (sealed files, a directory change) is flushed too.
    let many: Vec<Entry> = (2..400).map(|i| entry(i, 1, 400)).collect();
    wal.append(&many).unwrap();
    assert!(wal.sync().unwrap());
    assert!(!wal.sync().unwrap());
    drop(wal);
    let mut wal = Wal::open(dir.path(), options(64 * 1024)).unwrap();
    wal.append(&[entry(400, 1, 100)]).unwrap();
    assert!(!wal.sync().unwrap(), "fsync = never flushes nothing");
    assert_eq!(wal.last_index(), 400);
}

#[test]
fn bytes_after_counts_the_log_above_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), options(64 * 1024)).unwrap();
    let entries: Vec<Entry> = (1..=400).map(|i| entry(i, 1, 500)).collect();
    wal.append(&entries).unwrap();
    wal.sync().unwrap();
    assert!(wal.segments().len() > 2, "several segments");
    let total = wal.total_bytes();
    assert_eq!(wal.bytes_after(0), total);
    assert_eq!(wal.bytes_after(400), 0);
    let half = wal.bytes_after(200);
    assert!(
        half > total * 4 / 10 && half < total * 6 / 10,
        "{half} of {total}"
    );
    assert!(wal.bytes_after(100) > half && half > wal.bytes_after(300));
}

/// Goal: a read of a long range with a small byte budget returns exactly the longest
/// prefix whose entries (payload plus the fixed record part) fit the budget, at least one
/// entry, from sealed segments and from the open one (written and pending bytes), so
/// reading only the bytes the budget can reach changes nothing. Method: entries of
/// 0..300 bytes over many small segments, the newest still pending; every start index
/// against budgets from 0 to a few records' worth, each compared with the model.
#[test]
fn a_budgeted_read_of_a_long_range_returns_the_prefix_that_fits() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), options(4096)).unwrap();
    let entries: Vec<Entry> = (1..=400u64)
        .map(|i| entry(i, 1, (i as usize * 37) % 300))
        .collect();
    wal.append(&entries[..350]).unwrap();
    wal.sync().unwrap();
    wal.append(&entries[350..]).unwrap();
    let cost = |e: &Entry| e.data.len() as u64 + 25;
    for lo in (1..=400u64).step_by(7) {
        for budget in [0, 1, 24, 25, 100, 333, 1000, 2500, 7777] {
            let got = wal.entries(lo, 401, budget).unwrap();
            let mut left = budget;
            let want: Vec<&Entry> = entries[(lo - 1) as usize..]
                .iter()
                .enumerate()
                .take_while(|(k, e)| {
                    let fits = *k == 0 || cost(e) <= left;
                    left = left.saturating_sub(cost(e));
                    fits
                })
                .map(|(_, e)| e)
                .collect();
            let got: Vec<&Entry> = got.iter().collect();
            assert_eq!(got, want, "lo {lo} budget {budget}");
        }
    }
}
