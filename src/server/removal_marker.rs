//! The `REMOVED` file: a node that learns it was removed from its cluster writes it
//! in its data directory before stopping, and a node refuses to start from a data
//! directory that has one (the cluster no longer counts it, and adding it back under
//! the same id with that old log would be unsafe; a replacement joins with a new id
//! and an empty directory).
//!
//! Content: one line, `removed at index N`. Invariant: the file is written (temp file,
//! fsync, rename) before the node stops, so it survives a crash right after.

use std::fs;
use std::path::Path;

use crate::storage::hard_state;

const MARKER_NAME: &str = "REMOVED";

/// Writes the marker for a removal committed at `index`.
///
/// # Errors
/// The file cannot be written; the message names it.
pub fn write(data_dir: &Path, index: u64) -> Result<(), String> {
    let text = format!("removed at index {index}\n");
    hard_state::write_durably(data_dir, MARKER_NAME, "REMOVED.tmp", text.as_bytes())
        .map_err(|e| e.to_string())
}

/// The removal index recorded in `data_dir`, if the marker exists.
///
/// # Errors
/// The marker exists but cannot be read or does not parse; the message names it.
pub fn read(data_dir: &Path) -> Result<Option<u64>, String> {
    let path = data_dir.join(MARKER_NAME);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    text.trim()
        .strip_prefix("removed at index ")
        .and_then(|n| n.parse().ok())
        .map(Some)
        .ok_or_else(|| format!("{}: unreadable content {text:?}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: the marker round-trips, its absence is not an error, garbage is.
    #[test]
    fn marker_round_trips_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), Ok(None));
        write(dir.path(), 4195).unwrap();
        assert_eq!(read(dir.path()), Ok(Some(4195)));
        fs::write(dir.path().join(MARKER_NAME), "something else").unwrap();
        assert!(read(dir.path()).is_err());
    }
}
