//! Everything durable: the segmented write-ahead log, the hard state, the
//! directory lock and the snapshot files (those received from the leader written
//! chunk by chunk, [`incoming`]).
//!
//! [`Wal`] is the one entry point of the node: [`Wal::open`] takes the lock and
//! recovers, `append` buffers, `sync` makes everything appended durable with one
//! fdatasync (group commit). The byte layouts live in [`format`] and
//! `docs/FORMAT.md`; [`recovery`] holds the read-only scanner that both the
//! node and the `raftkv-log` tool use, so they judge a log the same way.
//!
//! A full disk is the one write failure that is not fatal: [`Error::NoSpace`] means
//! the change was undone and the log still works (the node then raises its NOSPACE
//! alarm and retries); every other write error, and any failed fsync, is fail-stop.

#[cfg(test)]
mod fault;
pub mod format;
pub mod hard_state;
pub mod identity;
pub mod incoming;
pub mod lock;
pub mod recovery;
mod segment;
pub mod snapshot;
pub mod wal;

use std::path::{Path, PathBuf};

pub use wal::{SegmentInfo, Wal};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call on `path` failed. Fatal for the log that returned it.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The log is damaged in a way recovery must not guess about.
    #[error("corrupt log: {file} at byte offset {offset}: {reason}")]
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damage inside `file`.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Another process (or another `Wal` in this one) holds the directory lock.
    #[error("{dir} is locked by another process{}", holder.as_deref().map(|h| format!(" ({h})")).unwrap_or_default())]
    Locked {
        /// The log directory.
        dir: PathBuf,
        /// What the lock file says about its holder, if anything.
        holder: Option<String>,
    },
    /// An earlier write, sync or file operation of this log failed, so it refuses
    /// every change: drop it and reopen the directory (recovery keeps every record
    /// that reached the disk whole, and everything an earlier sync covered).
    #[error("{dir}: the log failed earlier; reopen it")]
    Failed {
        /// The log directory.
        dir: PathBuf,
    },
    /// The disk holding `path` is full (ENOSPC, or EDQUOT: over quota). Unlike every
    /// other write error this one leaves the log working: the change was undone (no
    /// partial record or footer is left in a file; entries appended but not written
    /// stay buffered for the next [`Wal::sync`]), so the caller may retry once space
    /// was freed. Never returned for a failed fdatasync, which stays fatal.
    #[error("{path}: no space left on the device")]
    NoSpace {
        /// The file or directory whose write needed space.
        path: PathBuf,
    },
    /// The requested entry lies at or below the compaction marker.
    #[error("entry {index} is compacted")]
    Compacted {
        /// The requested index.
        index: u64,
    },
    /// The requested entry lies beyond the last index.
    #[error("entry {index} is not in the log yet")]
    Unavailable {
        /// The requested index.
        index: u64,
    },
}

impl Error {
    /// Whether this is [`Error::NoSpace`]: the disk is full and the log still works.
    pub fn is_no_space(&self) -> bool {
        matches!(self, Error::NoSpace { .. })
    }
}

/// Whether an OS error says the disk (or the user's quota) is full.
pub fn is_no_space_io(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// Result of storage operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps an IO error with the path it concerns. The path is copied only when there
/// is an error, so the hot path (`write_pending`, `sync`) does not allocate.
pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Like [`io_error`], but an out-of-space error becomes [`Error::NoSpace`]: for writes
/// whose failure the caller undoes (or that leave nothing behind), never for a sync.
pub(crate) fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| {
        if is_no_space_io(&source) {
            Error::NoSpace {
                path: path.to_path_buf(),
            }
        } else {
            Error::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

/// Whether `sync` really flushes to stable storage. Also the config's
/// `storage.fsync` key, spelled `"always"` / `"never"` there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// fdatasync on every `sync` (and fsync of the directory when files changed).
    #[default]
    Always,
    /// Write but never flush. UNSAFE: a power loss loses acknowledged writes.
    /// For benchmarks only.
    Never,
}

/// How a log is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalOptions {
    /// A segment is sealed and a new one started before an append would make it
    /// larger than this (a single larger entry still gets a segment of its own).
    pub segment_bytes: u64,
    /// Whether `sync` flushes.
    pub fsync: FsyncMode,
    /// Reserve `segment_bytes` of disk for the open segment with `fallocate`, so an
    /// append inside it does not grow the file and its fdatasync need not flush the
    /// new size (see the bench figures in `docs/FORMAT.md`). Sealing trims a segment
    /// to its data and footer; zeroed space after the last record ends the log cleanly.
    /// Ignored where the file system cannot preallocate.
    pub preallocate: bool,
    /// Re-checksum every record of sealed segments at open instead of trusting
    /// their index footers (slower; reads always check the crc of what they return).
    pub verify_on_open: bool,
}

impl WalOptions {
    /// The largest accepted `segment_bytes`, so record offsets fit the footer's u32.
    pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;
}

impl Default for WalOptions {
    fn default() -> WalOptions {
        WalOptions {
            segment_bytes: 64 << 20,
            fsync: FsyncMode::Always,
            preallocate: true,
            verify_on_open: false,
        }
    }
}
