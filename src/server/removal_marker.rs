//! The `REMOVED` file: a node that learns it was removed from its cluster writes it
//! in its data directory before stopping, and a node refuses to start from a data
//! directory that has one (the cluster no longer counts it, and adding it back under
//! the same id with that old log would be unsafe; a replacement joins with a new id
//! and an empty directory).
//!
//! Content: one line, `removed at index N`. Invariant: the file is written (temp file,
//! fsync, rename) before the node stops, so it survives a crash right after.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::storage::{self, hard_state};

const MARKER_NAME: &str = "REMOVED";

/// Why the marker could not be written or read; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing the marker failed.
    #[error("cannot write the removal marker: {0}")]
    Write(#[source] storage::Error),
    /// The marker exists but cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The marker's path.
        path: PathBuf,
        /// Why it cannot be read.
        source: io::Error,
    },
    /// The marker does not hold `removed at index N`.
    #[error("{}: unreadable content {text:?}", path.display())]
    Unreadable {
        /// The marker's path.
        path: PathBuf,
        /// What it holds.
        text: String,
    },
}

/// Writes the marker for a removal committed at `index`.
///
/// # Errors
/// The file cannot be written.
pub fn write(data_dir: &Path, index: u64) -> Result<(), Error> {
    let text = format!("removed at index {index}\n");
    hard_state::write_durably(data_dir, MARKER_NAME, "REMOVED.tmp", text.as_bytes())
        .map_err(Error::Write)
}

/// The removal index recorded in `data_dir`, if the marker exists.
///
/// # Errors
/// The marker exists but cannot be read or does not parse.
pub fn read(data_dir: &Path) -> Result<Option<u64>, Error> {
    let path = data_dir.join(MARKER_NAME);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Read { path, source }),
    };
    match text
        .trim()
        .strip_prefix("removed at index ")
        .and_then(|n| n.parse().ok())
    {
        Some(index) => Ok(Some(index)),
        None => Err(Error::Unreadable { path, text }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: the marker round-trips, its absence is not an error, garbage is.
    #[test]
    fn marker_round_trips_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        write(dir.path(), 4195).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(4195));
        fs::write(dir.path().join(MARKER_NAME), "something else").unwrap();
        assert!(read(dir.path()).is_err());
    }
}
