//! `raftkv-log`: read-only inspection (`stat`, `dump`, `verify`) and two explicit
//! repairs (`truncate`, `reset-hardstate`) of a log directory, and `snapshot-restore`
//! (see [`super::restore`]), which writes a new cluster node's data directory from a
//! snapshot file.
//!
//! The read-only commands take no lock, so they can run beside a live node (they
//! warn that the log may be changing); they judge files with the same scanner as
//! recovery ([`crate::storage::recovery::scan_segment`]), re-checksumming every
//! record. The repairs take the directory lock (refusing while a node holds it)
//! and move or copy every file they change into `DIR/backup-<unix seconds>/`.
//!
//! Exit codes: 0 success / clean, 1 corrupt log or failed repair, 2 usage error.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::kv::{Command as KvCommand, Session, decode_command};
use crate::raft::message::{Configuration, EntryKind};
use crate::replica::members::MemberAddrs;
use crate::storage::format::{HEADER_BYTES, decode_record};
use crate::storage::hard_state::{self, sync_dir};
use crate::storage::lock::DirLock;
use crate::storage::recovery::{SegmentScan, list_segment_files, scan_segment};
use crate::storage::{Error, Result};

/// Command line of `raftkv-log`.
#[derive(Debug, Parser)]
#[command(
    name = "raftkv-log",
    about = "Inspect and repair a raftkv log directory"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Segments (index and term ranges, sizes), hard state, compaction marker, totals.
    Stat {
        /// The log directory.
        dir: PathBuf,
    },
    /// One line per entry: index, term, kind, size, payload preview.
    Dump {
        /// The log directory.
        dir: PathBuf,
        /// First index to print.
        #[arg(long)]
        from: Option<u64>,
        /// Last index to print (inclusive).
        #[arg(long)]
        to: Option<u64>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Check every header, record crc, footer and the index continuity.
    Verify {
        /// The log directory.
        dir: PathBuf,
    },
    /// Remove every entry after INDEX, keeping backups of the changed files.
    Truncate {
        /// The log directory.
        dir: PathBuf,
        /// The last index to keep.
        #[arg(long)]
        after: u64,
        /// Confirm the repair.
        #[arg(long)]
        yes: bool,
    },
    /// Replace a missing or stale HARDSTATE with term TERM and no vote (a node refuses
    /// to start on a log whose hard state is missing or older than its last term).
    /// TERM must be higher than every term the cluster reached, so the node cannot have
    /// voted in it: one more than the highest `term` that `raftkv-cli status` shows.
    ResetHardstate {
        /// The log directory (the node's `data_dir/wal`).
        dir: PathBuf,
        /// The new term; at least the log's last term.
        #[arg(long)]
        term: u64,
        /// Confirm the repair.
        #[arg(long)]
        yes: bool,
    },
    /// Write the data directory of one node of a NEW cluster whose state machine
    /// starts from a snapshot FILE (run once per node, same file, cluster id and
    /// members, own node id); refuses a corrupt file and a non-empty directory.
    SnapshotRestore {
        /// The snapshot file (a `.snap` file from a node's `data_dir/snapshots`).
        file: PathBuf,
        /// The new node's data directory (absent or empty).
        #[arg(long)]
        data_dir: PathBuf,
        /// The new node's id.
        #[arg(long)]
        node_id: u64,
        /// The new cluster's id.
        #[arg(long)]
        cluster_id: u64,
        /// Every member of the new cluster: ID=PEER_ADDR,CLIENT_ADDR (repeat).
        #[arg(long = "member", required = true)]
        members: Vec<crate::tools::restore::RestoreMember>,
    },
}

/// Runs one command; returns the process exit code.
pub fn run(cli: &Cli) -> i32 {
    let result = match &cli.command {
        Command::Stat { dir } => warn_live(dir).and_then(|()| stat(dir)),
        Command::Dump {
            dir,
            from,
            to,
            json,
        } => warn_live(dir)
            .and_then(|()| dump(dir, from.unwrap_or(0), to.unwrap_or(u64::MAX), *json)),
        Command::Verify { dir } => warn_live(dir).and_then(|()| verify(dir)),
        Command::Truncate { dir, after, yes } => {
            if !yes {
                eprintln!("raftkv-log: truncate rewrites the log; add --yes to confirm");
                return 2;
            }
            truncate(dir, *after)
        }
        Command::ResetHardstate { dir, term, yes } => {
            if !yes {
                eprintln!("raftkv-log: reset-hardstate replaces HARDSTATE; add --yes to confirm");
                return 2;
            }
            reset_hard_state(dir, *term)
        }
        Command::SnapshotRestore {
            file,
            data_dir,
            node_id,
            cluster_id,
            members,
        } => match crate::tools::restore::restore(file, data_dir, *node_id, *cluster_id, members) {
            Ok(done) => {
                println!(
                    "restored {} into {}: index {} term {} data bytes {}",
                    file.display(),
                    data_dir.display(),
                    done.index,
                    done.term,
                    done.data_bytes
                );
                return 0;
            }
            Err(e) => {
                eprintln!("raftkv-log: {e}");
                return 1;
            }
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("raftkv-log: {e}");
            1
        }
    }
}

/// The payload preview of `dump`: the decoded kv command of a normal entry (keys and
/// values shown as text when printable, hex otherwise, each cut at 32 bytes), the
/// members of a configuration entry with their addresses, and hex for anything that
/// does not decode.
pub fn payload_preview(kind: EntryKind, data: &[u8]) -> String {
    match kind {
        EntryKind::Noop => String::new(),
        EntryKind::Config => match Configuration::decode(data) {
            Ok(config) => {
                let mut text = format!("voters {:?} learners {:?}", config.voters, config.learners);
                for (id, info) in &config.member_info {
                    match MemberAddrs::decode(info) {
                        Ok(addrs) => {
                            text += &format!(" {id}=peer {} client {}", addrs.peer, addrs.client)
                        }
                        Err(_) => text += &format!(" {id}=info {}", hex(info)),
                    }
                }
                text
            }
            Err(_) => format!("undecodable config {}", hex(data)),
        },
        EntryKind::Normal => match decode_command(data) {
            Ok(command) => command_preview(&command),
            Err(_) => format!("undecodable {}", hex(data)),
        },
    }
}

fn command_preview(command: &KvCommand) -> String {
    let session = |s: &Session| format!(" (client {} seq {})", s.client_id, s.seq);
    match command {
        KvCommand::Get { key } => format!("get {}", text(key)),
        KvCommand::Put {
            session: s,
            key,
            value,
        } => {
            format!("put {} {}{}", text(key), text(value), session(s))
        }
        KvCommand::Delete { session: s, key } => format!("del {}{}", text(key), session(s)),
        KvCommand::Cas {
            session: s,
            key,
            expected,
            new,
        } => format!(
            "cas {} {} -> {}{}",
            text(key),
            expected
                .as_deref()
                .map_or_else(|| "(absent)".to_string(), text),
            text(new),
            session(s)
        ),
        KvCommand::Txn {
            session: s,
            compare,
            success,
            failure,
        } => format!(
            "txn {} compares, {} then-ops, {} else-ops{}",
            compare.len(),
            success.len(),
            failure.len(),
            session(s)
        ),
        KvCommand::RegisterSession => "register-session".to_string(),
        KvCommand::Rmw { session: s, op } => format!("rmw {}{}", op.name(), session(s)),
        KvCommand::At { now_ms, command } => {
            format!("at {now_ms}: {}", command_preview(command))
        }
        KvCommand::DeleteExpired { now_ms, keys } => {
            format!("delete-expired at {now_ms}: {} keys", keys.len())
        }
        KvCommand::Publish {
            session: s,
            channel,
            message,
        } => format!("publish {} {}{}", text(channel), text(message), session(s)),
    }
}

/// Printable ASCII as is (quoted), anything else as hex; at most 32 bytes.
fn text(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(32)];
    let more = if bytes.len() > 32 { "..." } else { "" };
    if shown.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}{more}", String::from_utf8_lossy(shown))
    } else {
        hex(bytes)
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(70);
    for byte in bytes.iter().take(32) {
        let _ = write!(out, "{byte:02x}");
    }
    if bytes.len() > 32 {
        out.push_str("...");
    }
    out
}

fn warn_live(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(Error::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        });
    }
    if DirLock::is_held(dir)? {
        eprintln!(
            "warning: {} is locked by a running node; the log may be changing",
            dir.display()
        );
    }
    Ok(())
}

/// One segment file read into memory and scanned (every record re-checksummed).
struct Loaded {
    path: PathBuf,
    first: u64,
    bytes: Vec<u8>,
    scan: Result<SegmentScan, (u64, String)>,
}

impl Loaded {
    /// Bytes in use: the file length, except that the zeroed (preallocated) rest of
    /// a clean open segment does not count.
    fn used(&self) -> u64 {
        match &self.scan {
            Ok(scan) if !scan.footer && scan.problem.is_none() => scan.data_end,
            _ => self.bytes.len() as u64,
        }
    }
}

fn load(dir: &Path) -> Result<Vec<Loaded>> {
    let mut out = Vec::new();
    for (first, path) in list_segment_files(dir)? {
        let bytes = fs::read(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let scan = scan_segment(&bytes, false);
        out.push(Loaded {
            path,
            first,
            bytes,
            scan,
        });
    }
    Ok(out)
}

fn name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn stat(dir: &Path) -> Result<i32> {
    let segments = load(dir)?;
    let (mut entries, mut bytes) = (0u64, 0u64);
    println!(
        "{:<26} {:>21} {:>13} {:>9} {:>12}  state",
        "segment", "indexes", "terms", "entries", "bytes"
    );
    for (i, seg) in segments.iter().enumerate() {
        bytes += seg.used();
        let Ok(scan) = &seg.scan else {
            println!("{:<26} unreadable header", name(&seg.path));
            continue;
        };
        let count = scan.offsets.len() as u64;
        entries += count;
        let terms = match (scan.runs.first(), scan.runs.last()) {
            (Some(a), Some(b)) => format!("{}..{}", a.term, b.term),
            _ => "-".to_string(),
        };
        let state = match (i + 1 == segments.len(), scan.footer) {
            (_, true) => "sealed",
            (true, false) => "open",
            (false, false) => "sealed (no footer)",
        };
        let damaged = if scan.problem.is_some() {
            ", damaged (run verify)"
        } else {
            ""
        };
        println!(
            "{:<26} {:>21} {:>13} {:>9} {:>12}  {state}{damaged}",
            name(&seg.path),
            format!(
                "{}..{}",
                scan.header.first_index,
                scan.header.first_index + count - 1
            ),
            terms,
            count,
            seg.used()
        );
    }
    let hs = hard_state::read(dir)?;
    println!(
        "hard state: term {} vote {} commit {}",
        hs.term, hs.vote, hs.commit
    );
    if let Some(Ok(first)) = segments.first().map(|s| &s.scan) {
        println!(
            "compaction marker: index {} term {}",
            first.header.first_index - 1,
            first.header.prev_term
        );
    }
    println!(
        "total: {} segments, {entries} entries, {bytes} bytes",
        segments.len()
    );
    Ok(0)
}

/// A segment's scan, or the corruption it found, named by file and offset.
fn corruption_checked(
    scan: Result<SegmentScan, (u64, String)>,
    file: &Path,
) -> Result<SegmentScan> {
    scan.map_err(|(offset, reason)| Error::Corruption {
        file: file.to_path_buf(),
        offset,
        reason,
    })
}

fn dump(dir: &Path, from: u64, to: u64, json: bool) -> Result<i32> {
    for seg in load(dir)? {
        let scan = corruption_checked(seg.scan, &seg.path)?;
        for &offset in &scan.offsets {
            let Ok(record) = decode_record(&seg.bytes[offset as usize..]) else {
                continue;
            };
            if record.index < from || record.index > to {
                continue;
            }
            let preview = payload_preview(record.kind, record.payload);
            if json {
                println!(
                    "{{\"index\":{},\"term\":{},\"kind\":\"{}\",\"bytes\":{},\"preview\":\"{preview}\"}}",
                    record.index,
                    record.term,
                    record.kind.name(),
                    record.payload.len()
                );
            } else {
                let (index, term, kind) = (record.index, record.term, record.kind.name());
                println!("{index} {term} {kind} {} {preview}", record.payload.len());
            }
        }
        if let Some(problem) = scan.problem {
            eprintln!(
                "{}: stopped at byte offset {}: {}",
                seg.path.display(),
                problem.offset,
                problem.reason
            );
        }
    }
    Ok(0)
}

fn verify(dir: &Path) -> Result<i32> {
    let segments = load(dir)?;
    let mut corrupt = 0;
    let mut prev: Option<(u64, u64)> = None;
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        let path = seg.path.display();
        let scan = match &seg.scan {
            Ok(scan) => scan,
            Err((offset, reason)) => {
                println!("{path}: byte offset {offset}: corrupt: {reason}");
                corrupt += 1;
                prev = None;
                continue;
            }
        };
        if scan.header.first_index != seg.first {
            println!("{path}: byte offset 8: corrupt: header first index differs from the name");
            corrupt += 1;
        }
        if let Some((last_index, last_term)) = prev {
            if scan.header.first_index != last_index + 1 {
                println!("{path}: byte offset 8: corrupt: index gap after {last_index}");
                corrupt += 1;
            } else if scan.header.prev_term != last_term {
                println!("{path}: byte offset 16: corrupt: prev_term differs from {last_term}");
                corrupt += 1;
            }
        }
        if let Some(problem) = &scan.problem {
            let (offset, reason) = (problem.offset, &problem.reason);
            if last && problem.torn && problem.valid_after.is_none() {
                println!("{path}: byte offset {offset}: torn tail ({reason}); open truncates it");
            } else {
                println!("{path}: byte offset {offset}: corrupt: {reason}");
                corrupt += 1;
            }
        }
        let count = scan.offsets.len() as u64;
        let last_term = scan.runs.last().map_or(scan.header.prev_term, |r| r.term);
        prev = Some((scan.header.first_index + count - 1, last_term));
    }
    if let Err(e) = hard_state::read(dir) {
        println!("{e}");
        corrupt += 1;
    }
    if corrupt > 0 {
        println!("{corrupt} problem(s) found");
        return Ok(1);
    }
    println!("ok: {} segments verified", segments.len());
    Ok(0)
}

/// Takes the directory lock for a repair; `None` (after saying so) while a node holds it.
fn lock_for(dir: &Path, what: &str) -> Result<Option<DirLock>> {
    match DirLock::acquire(dir) {
        Ok(lock) => Ok(Some(lock)),
        Err(e @ Error::Locked { .. }) => {
            eprintln!("raftkv-log: refusing to {what}: {e}; stop the node first");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// A new `DIR/backup-<unix seconds>/` directory.
fn backup_dir(dir: &Path) -> Result<PathBuf> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let backup = dir.join(format!("backup-{stamp}"));
    fs::create_dir_all(&backup).map_err(|source| Error::Io {
        path: backup.clone(),
        source,
    })?;
    Ok(backup)
}

fn reset_hard_state(dir: &Path, term: u64) -> Result<i32> {
    let Some(_lock) = lock_for(dir, "reset the hard state")? else {
        return Ok(1);
    };
    let mut last_term = 0;
    for seg in load(dir)? {
        let scan = corruption_checked(seg.scan, &seg.path)?;
        let segment_last = scan
            .runs
            .last()
            .map_or(scan.header.prev_term, |run| run.term);
        last_term = last_term.max(segment_last);
    }
    // Not the log's last term itself: the node may have voted in it, and the reset
    // clears the vote, so it could vote twice in that term.
    if term <= last_term {
        eprintln!(
            "raftkv-log: --term {term} is not above the log's last term {last_term}; give one \
             more than the highest term the live members show (`raftkv-cli status`)"
        );
        return Ok(1);
    }
    let path = dir.join(hard_state::HARD_STATE_NAME);
    if path.exists() {
        let backup = backup_dir(dir)?;
        let saved = backup.join(hard_state::HARD_STATE_NAME);
        fs::copy(&path, &saved).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        sync_dir(&backup)?;
        println!("old {} kept in {}", name(&path), backup.display());
    }
    let state = crate::raft::message::HardState {
        term,
        vote: 0,
        commit: 0,
    };
    hard_state::save(dir, &state)?;
    println!(
        "{}: term {term}, no vote (the log's last term is {last_term})",
        path.display()
    );
    Ok(0)
}

fn truncate(dir: &Path, after: u64) -> Result<i32> {
    let Some(_lock) = lock_for(dir, "truncate")? else {
        return Ok(1);
    };
    let segments = load(dir)?;
    let mut plan: Vec<(PathBuf, Option<u64>)> = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        let scan = seg
            .scan
            .as_ref()
            .map_err(|(offset, reason)| Error::Corruption {
                file: seg.path.clone(),
                offset: *offset,
                reason: reason.clone(),
            })?;
        let first = scan.header.first_index;
        if i == 0 && after + 1 < first {
            eprintln!(
                "raftkv-log: index {after} is below the compaction marker {}",
                first - 1
            );
            return Ok(1);
        }
        if first > after + 1 || (first == after + 1 && i > 0) {
            plan.push((seg.path.clone(), None));
            continue;
        }
        let keep = (after + 1 - first) as usize;
        let cut = match scan.offsets.get(keep) {
            Some(offset) => u64::from(*offset),
            None if keep == scan.offsets.len() => scan.data_end,
            None if scan.problem.is_none() => continue,
            None => {
                eprintln!(
                    "raftkv-log: entry {after} is not readable in {}",
                    seg.path.display()
                );
                return Ok(1);
            }
        };
        if cut < seg.used() {
            plan.push((seg.path.clone(), Some(cut.max(HEADER_BYTES as u64))));
        }
    }
    if plan.is_empty() {
        println!("nothing after index {after}; no file changed");
        return Ok(0);
    }
    let backup = backup_dir(dir)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    for (path, cut) in plan.iter().rev() {
        let saved = backup.join(name(path));
        match cut {
            None => fs::rename(path, &saved).map_err(io(path))?,
            Some(len) => {
                fs::copy(path, &saved).map_err(io(path))?;
                let file = fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io(path))?;
                file.set_len(*len).map_err(io(path))?;
                file.sync_all().map_err(io(path))?;
            }
        }
        println!(
            "{}: {} (backup in {})",
            name(path),
            cut.map_or("removed".to_string(), |l| format!("cut to {l} bytes")),
            backup.display()
        );
    }
    sync_dir(&backup)?;
    sync_dir(dir)?;
    Ok(0)
}

#[cfg(test)]
mod preview_tests {
    use super::*;
    use crate::kv::command_to_vec;

    /// Goal: `dump` shows decoded kv commands and configurations, and hex for bytes
    /// that do not decode.
    #[test]
    fn previews_decode_commands_and_fall_back_to_hex() {
        let put = command_to_vec(&KvCommand::Put {
            session: Session {
                client_id: 7,
                seq: 3,
            },
            key: b"hello".to_vec(),
            value: vec![0, 1],
        });
        let config = Configuration::new([1, 2], [3]).encode();
        let addrs = MemberAddrs {
            peer: "127.0.0.1:7003".parse().unwrap(),
            client: "127.0.0.1:8003".parse().unwrap(),
        };
        let with_addrs = Configuration::new([1, 2], [3])
            .with_info(3, addrs.encode())
            .encode();
        let cases: [(EntryKind, &[u8], &str); 5] = [
            (
                EntryKind::Normal,
                &put,
                "put \"hello\" 0001 (client 7 seq 3)",
            ),
            (EntryKind::Config, &config, "voters [1, 2] learners [3]"),
            (
                EntryKind::Config,
                &with_addrs,
                "voters [1, 2] learners [3] 3=peer 127.0.0.1:7003 client 127.0.0.1:8003",
            ),
            (EntryKind::Normal, &[0xff, 0xee], "undecodable ffee"),
            (EntryKind::Noop, &[], ""),
        ];
        for (i, (kind, data, want)) in cases.into_iter().enumerate() {
            assert_eq!(payload_preview(kind, data), want, "#{i}");
        }
    }
}
