//! The node's durable Raft log: the [`LogStore`] the consensus core reads, over the
//! segmented [`Wal`] and the latest snapshot file.
//!
//! Layout of a node's data directory: `wal/` (segments, hard state, LOCK),
//! `snapshots/` (the latest snapshot file) and `BOOTSTRAP` (the membership the
//! node started from: the config file's members, or empty for `--join`; an encoded
//! [`Configuration`], written once when the directory is new, so a restart uses the
//! same one whatever the config file or the command line say later) and `IDENTITY`
//! (cluster and node id, see `storage::identity`: a node refuses a directory that is
//! not its own, and a log whose hard state is missing or older than its last term).
//!
//! The driver's writes follow the core's Ready contract (see `raft::store`):
//! install a snapshot, append (truncating a conflicting suffix first), record the
//! hard state, then [`WalStore::sync`] once for the whole loop turn.
//!
//! Hard state: term and vote are saved atomically (temp file + fsync + rename) only
//! when one of them changes, which happens on elections, not on every write; the
//! commit index rides along. A restarted node may therefore see an older commit
//! index, which Raft tolerates: commit is re-learned from the leader.
//!
//! The latest snapshot stays on disk: the store holds its meta and an open
//! [`SnapshotImage`], whose ranges are read (pread) when a follower needs chunks and
//! which the replica restores from sequentially; no image of it is kept in memory.
//! Opening does not read the file through: the replica's restore (its first read, in
//! order) checks the crc as it goes and fails on a mismatch, so a restart reads the
//! file once. A refusal or bad meta found before that check is reported as the file's
//! damage when the file does not verify.
//!
//! Invariant: `snapshot_meta.index >= wal.compacted().0`, so every compacted entry is
//! covered by the snapshot; `image` is `Some` exactly when `snapshot_meta.index > 0`.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::raft::error::StoreError;
use crate::raft::message::{Configuration, Entry, HardState, Snapshot, SnapshotMeta};
use crate::raft::store::{InitialState, LogStore};
use crate::replica::alarm::WriteFailure;
use crate::replica::{ReplicaLog, SyncOutcome};
use crate::storage::hard_state::HARD_STATE_NAME;
use crate::storage::identity::{self, Identity};
use crate::storage::snapshot::{self, OpenSnapshot, SnapshotImage};
use crate::storage::{self, Wal, WalOptions};

/// Images at least this large are freed on a short-lived thread, not on the loop.
const FREE_OFF_LOOP_BYTES: usize = 1 << 20;

/// Frees a replaced snapshot image; a large one on a short-lived thread, so the loop
/// does not pay for unmapping it (inline when no thread can be started).
fn free_off_loop(image: Vec<u8>) {
    if image.len() < FREE_OFF_LOOP_BYTES {
        return;
    }
    // A failed spawn drops the closure, and the image with it, here.
    let _ = std::thread::Builder::new()
        .name("raftkv-free".into())
        .spawn(move || drop(image));
}

/// Closes a replaced snapshot's file on a short-lived thread: the file was unlinked when
/// its successor was saved, so closing its last descriptor frees its blocks, which takes
/// hundreds of milliseconds for a file of hundreds of megabytes (inline when no thread
/// can be started).
fn close_off_loop(image: Option<SnapshotImage>) {
    if let Some(image) = image {
        // A failed spawn drops the closure, and the image with it, here.
        let _ = std::thread::Builder::new()
            .name("raftkv-close".into())
            .spawn(move || drop(image));
    }
}

/// Errors opening or writing the node's storage. All are fatal for the node.
#[derive(Debug, thiserror::Error)]
pub enum StoreOpenError {
    /// The WAL failed.
    #[error(transparent)]
    Wal(#[from] storage::Error),
    /// The snapshot file failed.
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    /// The snapshot's stored configuration does not decode.
    #[error("snapshot {0}: bad configuration")]
    SnapshotConfig(PathBuf),
    /// The stored bootstrap configuration does not decode.
    #[error("{0}: bad bootstrap configuration")]
    BootstrapConfig(PathBuf),
    /// The data directory belongs to another cluster or another node.
    #[error(
        "{path}: this data directory belongs to node {} of cluster {}, but the config says \
         node {} of cluster {}; refusing to start on another node's state. Repair: point \
         `data_dir` at this node's own directory, or fix `node_id`/`cluster_id` in the config; \
         to start this node afresh, move the directory aside and start it with an empty one \
         (`--join` to add it to a running cluster)",
        found.node_id, found.cluster_id, wanted.node_id, wanted.cluster_id
    )]
    NotOwnDirectory {
        /// The identity file.
        path: PathBuf,
        /// What the file says.
        found: Identity,
        /// What the config says.
        wanted: Identity,
    },
    /// The log holds entries (or a snapshot) but its hard state file is missing or
    /// older than the log: the node may have voted in a term it no longer knows.
    #[error(
        "{path}: {problem}, but the log reaches index {last_index} in term {last_term}; the \
         node may have voted in a term it no longer remembers (it could vote twice), so it \
         refuses to start. Repair, with the node stopped: take the highest `term` that \
         `raftkv-cli status` shows on the live members, add one, and run `raftkv-log \
         reset-hardstate {dir} --term <that term> --yes`; or remove this node from the \
         cluster, empty its data directory and add it again (`--join`)",
        dir = parent_of(.path).display()
    )]
    HardStateBehind {
        /// The hard state file.
        path: PathBuf,
        /// "is missing" or "holds term N".
        problem: String,
        /// The log's last index (or the snapshot's).
        last_index: u64,
        /// Its term.
        last_term: u64,
    },
}

/// The directory holding `path` (the log directory of the hard state file).
fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or(path)
}

impl StoreOpenError {
    /// Whether the disk was full and nothing was changed (the caller may retry).
    pub fn is_no_space(&self) -> bool {
        match self {
            StoreOpenError::Wal(e) => e.is_no_space(),
            StoreOpenError::Snapshot(e) => e.is_no_space(),
            _ => false,
        }
    }

    /// Whether the directory was refused as not this node's consistent state (an
    /// operator must repair it; `raftkv-server` exits 2), rather than failing to open.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            StoreOpenError::NotOwnDirectory { .. } | StoreOpenError::HardStateBehind { .. }
        )
    }
}

/// The Raft log of one node, on disk.
pub struct WalStore {
    /// A `RefCell` because the WAL reads its open segment through a reused buffer
    /// (`&mut self`) while the core reads through `&self`; the loop is single-threaded.
    wal: RefCell<Wal>,
    snapshot_meta: SnapshotMeta,
    image: Option<SnapshotImage>,
    snapshot_dir: PathBuf,
    bootstrap: Configuration,
    /// Term and vote last written to disk, to skip rewriting on commit-only changes.
    saved_hard_state: HardState,
    /// The latest hard state handed to us (commit included).
    hard_state: HardState,
}

impl WalStore {
    /// Opens (recovering) the log under `data_dir`. `bootstrap` is the membership
    /// to start from (used below the first snapshot) when the directory is new; it
    /// is then saved in `BOOTSTRAP`, and a later open uses the saved one instead.
    /// `identity` is who the config says this node is: a new directory records it in
    /// `IDENTITY` (so does an old one that lacks the file), a directory recording
    /// another identity is refused.
    ///
    /// # Errors
    /// Locked directory, corruption (naming file and offset), IO errors; refusals
    /// ([`StoreOpenError::is_refusal`]): another node's directory, a log whose hard
    /// state is missing or older than its last term.
    pub fn open(
        data_dir: &Path,
        options: WalOptions,
        bootstrap: Configuration,
        identity: Identity,
    ) -> Result<WalStore, StoreOpenError> {
        let wal_dir = data_dir.join("wal");
        let snapshot_dir = data_dir.join("snapshots");
        std::fs::create_dir_all(&snapshot_dir).map_err(storage::io_error(&snapshot_dir))?;
        let wal = Wal::open(&wal_dir, options)?;
        // The crc is checked by the restore's read of the file (one pass, not two).
        let latest = snapshot::open_latest_deferred(&snapshot_dir)?;
        let fresh = latest.is_none() && wal.last_index() == 0 && wal.hard_state().term == 0;
        check_own_state(data_dir, &wal, latest.as_ref(), identity)
            .map_err(|e| damage_first(latest.as_ref(), e))?;
        let bootstrap = bootstrap_config(data_dir, bootstrap, fresh)?;
        let (snapshot_meta, image) = match latest {
            Some(file) => {
                let path = file.image.path().to_path_buf();
                let (meta, image) = opened_meta(file, &snapshot_dir)
                    .map_err(|e| snapshot::open(path).map_or_else(StoreOpenError::from, |_| e))?;
                (meta, Some(image))
            }
            None => {
                let meta = SnapshotMeta {
                    index: 0,
                    term: 0,
                    config: bootstrap.clone(),
                };
                (meta, None)
            }
        };
        let hard_state = wal.hard_state();
        Ok(WalStore {
            wal: RefCell::new(wal),
            snapshot_meta,
            image,
            snapshot_dir,
            bootstrap,
            saved_hard_state: hard_state,
            hard_state,
        })
    }

    /// Appends entries, first truncating a conflicting stored suffix (the driver's rule).
    /// Entries the log already holds with the same term are skipped (by Log Matching
    /// they are the same entries): what a retry after [`storage::Error::NoSpace`] finds,
    /// when the failed attempt appended part of the batch.
    ///
    /// # Errors
    /// [`storage::Error::NoSpace`]: retry with the same entries; other IO errors: fatal.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), storage::Error> {
        let wal = self.wal.get_mut();
        let held = entries
            .iter()
            .take_while(|e| e.index <= wal.last_index() && wal.term(e.index) == Some(e.term))
            .count();
        let entries = &entries[held..];
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index <= wal.last_index() {
            wal.truncate_suffix(first.index)?;
        }
        wal.append(entries)
    }

    /// Records the hard state the core handed out; [`WalStore::save_hard_state`]
    /// writes it.
    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    /// Whether the recorded hard state's term or vote is not on disk yet.
    pub fn hard_state_unsaved(&self) -> bool {
        let (saved, wanted) = (self.saved_hard_state, self.hard_state);
        (saved.term, saved.vote) != (wanted.term, wanted.vote)
    }

    /// Writes the recorded hard state when its term or vote changed since the last
    /// save (the commit index alone never costs a write).
    ///
    /// # Errors
    /// [`storage::Error::NoSpace`]: nothing changed, retry; other IO errors: fatal.
    pub fn save_hard_state(&mut self) -> Result<(), storage::Error> {
        if self.hard_state_unsaved() {
            let wanted = self.hard_state;
            self.wal.get_mut().save_hard_state(&wanted)?;
            self.saved_hard_state = wanted;
        }
        Ok(())
    }

    /// One fdatasync for everything appended since the last sync (group commit).
    /// Returns whether one was issued: not when nothing was appended since the last
    /// sync (a turn that only moved the commit index), nor with `fsync = "never"`.
    ///
    /// # Errors
    /// [`storage::Error::NoSpace`]: nothing flushed, the log still works, retry; other
    /// IO errors: fatal: the node must not acknowledge anything after this fails.
    pub fn sync(&mut self) -> Result<bool, storage::Error> {
        self.wal.get_mut().sync()
    }

    /// Installs a snapshot received from the leader: stores it, then drops the log.
    ///
    /// # Errors
    /// [`StoreOpenError::is_no_space`]: the log is unchanged, retry; others: fatal.
    pub fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StoreOpenError> {
        let Snapshot { meta, data } = snapshot;
        let saved = snapshot::save(
            &self.snapshot_dir,
            meta.index,
            meta.term,
            &meta.config.encode(),
            &data,
        )?;
        free_off_loop(data);
        self.wal
            .get_mut()
            .reset_to_snapshot(meta.index, meta.term)?;
        self.snapshot_meta = meta;
        close_off_loop(self.image.replace(saved.image));
        Ok(())
    }

    /// Adopts a snapshot this node built at an applied index and whose file is already
    /// durable in [`WalStore::snapshot_dir`] (written off the loop thread), then deletes
    /// the log segments it covers entirely.
    ///
    /// # Errors
    /// IO errors; fatal.
    pub fn compact_saved(&mut self, meta: SnapshotMeta) -> Result<(), StoreOpenError> {
        if meta.index <= self.snapshot_meta.index {
            return Ok(());
        }
        let started = Instant::now();
        let upto = meta.index;
        let saved = snapshot::open_saved(&self.snapshot_dir, meta.index, meta.term)?;
        self.snapshot_meta = meta;
        close_off_loop(self.image.replace(saved.image));
        self.wal.get_mut().compact_prefix(upto)?;
        log::info!(
            "snapshot at index {upto} adopted in {} us on the loop",
            started.elapsed().as_micros()
        );
        Ok(())
    }

    /// Where snapshot files live.
    pub fn snapshot_dir(&self) -> &Path {
        &self.snapshot_dir
    }

    /// Bytes of the log above the latest snapshot (the segment holding its index pro
    /// rata): what the snapshot policy weighs against the snapshot's size.
    pub fn log_bytes_since_snapshot(&self) -> u64 {
        self.wal.borrow().bytes_after(self.snapshot_meta.index)
    }

    /// Bytes of log segments on disk.
    pub fn log_bytes(&self) -> u64 {
        self.wal.borrow().total_bytes()
    }
}

const BOOTSTRAP_NAME: &str = "BOOTSTRAP";

/// The meta of a snapshot opened from `dir`, and its image.
fn opened_meta(
    file: OpenSnapshot,
    dir: &Path,
) -> Result<(SnapshotMeta, SnapshotImage), StoreOpenError> {
    let config = Configuration::decode(&file.meta)
        .map_err(|_| StoreOpenError::SnapshotConfig(dir.to_path_buf()))?;
    let meta = SnapshotMeta {
        index: file.index,
        term: file.term,
        config,
    };
    Ok((meta, file.image))
}

/// `error`, found before the crc of the `latest` snapshot was checked, unless that
/// snapshot's file does not verify: then the damage (file and offset) is the error, since
/// the header and meta that led to `error` cannot be trusted.
fn damage_first(latest: Option<&OpenSnapshot>, error: StoreOpenError) -> StoreOpenError {
    match latest {
        Some(file) if !file.image.is_verified() => {
            match snapshot::open(file.image.path().to_path_buf()) {
                Err(damage) => damage.into(),
                Ok(_) => error,
            }
        }
        _ => error,
    }
}

/// Refuses a data directory that is not this node's consistent state (see
/// [`StoreOpenError::NotOwnDirectory`] and [`StoreOpenError::HardStateBehind`]), then
/// records `wanted` in `IDENTITY` when the directory has none yet.
///
/// Why the hard state check is sound: the driver saves the hard state before it
/// appends entries or installs a snapshot of a newer term (`WalStore::persist`), so
/// in a directory this code wrote the hard state's term is never below the log's.
fn check_own_state(
    data_dir: &Path,
    wal: &Wal,
    snapshot: Option<&OpenSnapshot>,
    wanted: Identity,
) -> Result<(), StoreOpenError> {
    let saved = identity::read(data_dir)?;
    if let Some(found) = saved
        && found != wanted
    {
        return Err(StoreOpenError::NotOwnDirectory {
            path: data_dir.join(identity::IDENTITY_NAME),
            found,
            wanted,
        });
    }
    let mut last = (wal.last_index(), wal.term(wal.last_index()).unwrap_or(0));
    if let Some(file) = snapshot
        && file.index > last.0
    {
        last = (file.index, file.term);
    }
    let hard_state_path = wal.dir().join(HARD_STATE_NAME);
    let term = wal.hard_state().term;
    if last.0 > 0 && term < last.1 {
        let problem = if hard_state_path.exists() {
            format!("the hard state holds term {term}")
        } else {
            "the hard state file is missing".to_string()
        };
        return Err(StoreOpenError::HardStateBehind {
            path: hard_state_path,
            problem,
            last_index: last.0,
            last_term: last.1,
        });
    }
    if saved.is_none() {
        identity::save(data_dir, wanted)?;
        if last.0 > 0 || term > 0 {
            log::info!(
                "{}: recorded this directory's identity (node {} of cluster {})",
                data_dir.join(identity::IDENTITY_NAME).display(),
                wanted.node_id,
                wanted.cluster_id
            );
        }
    }
    Ok(())
}

/// The bootstrap membership of the node in `data_dir`: the saved one if any; else
/// `wanted`, saved first (temp file, fsync, rename, directory fsync) when the
/// directory is `fresh`. A directory written before `BOOTSTRAP` existed keeps
/// using `wanted` (the config file's members), as it always did.
fn bootstrap_config(
    data_dir: &Path,
    wanted: Configuration,
    fresh: bool,
) -> Result<Configuration, StoreOpenError> {
    let path = data_dir.join(BOOTSTRAP_NAME);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let saved = Configuration::decode(&bytes)
                .map_err(|_| StoreOpenError::BootstrapConfig(path.clone()))?;
            if saved.voters != wanted.voters {
                log::info!(
                    "{}: starting from the saved bootstrap membership {:?}; the config file's \
                     members and --join apply to an empty data directory only",
                    path.display(),
                    saved.voters
                );
            }
            Ok(saved)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if fresh {
                storage::hard_state::write_durably(
                    data_dir,
                    BOOTSTRAP_NAME,
                    "BOOTSTRAP.tmp",
                    &wanted.encode(),
                )?;
            }
            Ok(wanted)
        }
        Err(e) => Err(storage::io_error(&path)(e).into()),
    }
}

fn store_error(error: storage::Error) -> StoreError {
    match error {
        storage::Error::Compacted { index } => StoreError::Compacted(index),
        storage::Error::Unavailable { index } => StoreError::Unavailable(index),
        other => StoreError::failed(other),
    }
}

impl LogStore for WalStore {
    fn initial_state(&self) -> Result<InitialState, StoreError> {
        let config = if self.snapshot_meta.index == 0 {
            self.bootstrap.clone()
        } else {
            self.snapshot_meta.config.clone()
        };
        Ok(InitialState {
            hard_state: self.hard_state,
            config,
        })
    }

    fn compacted(&self) -> (u64, u64) {
        self.wal.borrow().compacted()
    }

    fn last_index(&self) -> u64 {
        self.wal.borrow().last_index()
    }

    fn term(&self, index: u64) -> Result<u64, StoreError> {
        let wal = self.wal.borrow();
        match wal.term(index) {
            Some(term) => Ok(term),
            None if index < wal.compacted().0 => Err(StoreError::Compacted(index)),
            None => Err(StoreError::Unavailable(index)),
        }
    }

    fn entries(&self, low: u64, high: u64, bytes_max: u64) -> Result<Vec<Entry>, StoreError> {
        self.wal
            .borrow_mut()
            .entries(low, high, bytes_max)
            .map_err(store_error)
    }

    fn snapshot_meta(&self) -> SnapshotMeta {
        self.snapshot_meta.clone()
    }

    fn snapshot_bytes(&self) -> u64 {
        self.image.as_ref().map_or(0, SnapshotImage::len)
    }

    fn snapshot_chunk(&self, offset: u64, bytes_max: u64) -> Result<Vec<u8>, StoreError> {
        match &self.image {
            Some(image) => image.read_at(offset, bytes_max).map_err(StoreError::failed),
            None => Ok(Vec::new()),
        }
    }
}

impl From<StoreOpenError> for WriteFailure {
    fn from(error: StoreOpenError) -> WriteFailure {
        if error.is_no_space() {
            WriteFailure::NoSpace(error.to_string())
        } else {
            WriteFailure::Fatal(Box::new(error))
        }
    }
}

/// The replica's writes map onto the WAL's; the fdatasync is timed here, since the
/// replica reads no clock.
impl ReplicaLog for WalStore {
    fn snapshot_index(&self) -> u64 {
        self.snapshot_meta.index
    }

    fn set_hard_state(&mut self, hard_state: HardState) {
        WalStore::set_hard_state(self, hard_state);
    }

    fn hard_state_unsaved(&self) -> bool {
        WalStore::hard_state_unsaved(self)
    }

    fn save_hard_state(&mut self) -> Result<(), WriteFailure> {
        Ok(WalStore::save_hard_state(self)?)
    }

    fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), WriteFailure> {
        Ok(WalStore::install_snapshot(self, snapshot)?)
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), WriteFailure> {
        Ok(WalStore::append(self, entries)?)
    }

    fn sync(&mut self) -> Result<SyncOutcome, WriteFailure> {
        let started = Instant::now();
        let flushed = WalStore::sync(self)?;
        Ok(if flushed {
            SyncOutcome::Flushed {
                micros: started.elapsed().as_micros() as u64,
            }
        } else {
            SyncOutcome::Clean
        })
    }

    fn compact_saved(&mut self, meta: SnapshotMeta) -> Result<(), WriteFailure> {
        Ok(WalStore::compact_saved(self, meta)?)
    }

    fn log_bytes(&self) -> u64 {
        WalStore::log_bytes(self)
    }

    fn log_bytes_since_snapshot(&self) -> u64 {
        WalStore::log_bytes_since_snapshot(self)
    }
}
