//! The hard state file `HARDSTATE`: term, vote and commit, replaced atomically.
//!
//! Layout (36 bytes, little-endian): `magic[8] | term u64 | vote u64 | commit u64 |
//! crc u32` with the CRC-32/IEEE over the first 32 bytes. Saving writes
//! `HARDSTATE.tmp`, fsyncs it, renames it over `HARDSTATE` and fsyncs the
//! directory, so a reader sees either the old or the new state, never a mix.
//! A missing file means the default (all zero) state.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use super::{Error, Result, io_error, write_error};
use crate::raft::message::HardState;

/// Name of the hard state file.
pub const HARD_STATE_NAME: &str = "HARDSTATE";
/// Name of the temporary file a save writes first.
pub const HARD_STATE_TEMP_NAME: &str = "HARDSTATE.tmp";
/// First eight bytes of the file.
pub const HARD_STATE_MAGIC: [u8; 8] = *b"\x9fRKVHST\n";
/// Size of the file.
pub const HARD_STATE_BYTES: usize = 36;

/// The file's bytes for `state`.
pub fn encode(state: &HardState) -> [u8; HARD_STATE_BYTES] {
    let mut out = [0u8; HARD_STATE_BYTES];
    out[0..8].copy_from_slice(&HARD_STATE_MAGIC);
    out[8..16].copy_from_slice(&state.term.to_le_bytes());
    out[16..24].copy_from_slice(&state.vote.to_le_bytes());
    out[24..32].copy_from_slice(&state.commit.to_le_bytes());
    let crc = crc32fast::hash(&out[0..32]);
    out[32..36].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes the file's bytes; a reason when they are not a valid hard state.
pub fn decode(bytes: &[u8]) -> Result<HardState, &'static str> {
    if bytes.len() != HARD_STATE_BYTES {
        return Err("hard state file has the wrong size");
    }
    if bytes[0..8] != HARD_STATE_MAGIC {
        return Err("bad hard state magic");
    }
    if crc32fast::hash(&bytes[0..32]).to_le_bytes() != bytes[32..36] {
        return Err("bad hard state crc");
    }
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(w)
    };
    Ok(HardState {
        term: word(8),
        vote: word(16),
        commit: word(24),
    })
}

/// Loads the hard state of `dir` (default when absent) and removes a leftover temp file.
///
/// # Errors
/// [`Error::Corruption`] when the file exists but is not valid; [`Error::Io`].
pub fn load(dir: &Path) -> Result<HardState> {
    let temp = dir.join(HARD_STATE_TEMP_NAME);
    match fs::remove_file(&temp) {
        Ok(()) => log::warn!("{}: removed an unfinished hard state save", temp.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(Error::Io { path: temp, source }),
    }
    read(dir)
}

/// Reads the hard state of `dir` without touching anything (default when absent).
///
/// # Errors
/// [`Error::Corruption`] when the file exists but is not valid; [`Error::Io`].
pub fn read(dir: &Path) -> Result<HardState> {
    let path = dir.join(HARD_STATE_NAME);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HardState::default()),
        Err(source) => return Err(Error::Io { path, source }),
    };
    decode(&bytes).map_err(|reason| Error::Corruption {
        file: path,
        offset: 0,
        reason: reason.to_string(),
    })
}

/// Saves `state` atomically and durably: temp file, fsync, rename, fsync of `dir`.
///
/// # Errors
/// [`Error::NoSpace`] (nothing changed; retry later); [`Error::Io`], which the caller
/// must treat as fatal.
pub fn save(dir: &Path, state: &HardState) -> Result<()> {
    write_durably(dir, HARD_STATE_NAME, HARD_STATE_TEMP_NAME, &encode(state))
}

/// Replaces `dir/name` with `bytes` atomically and durably: writes `dir/temp_name`,
/// fsyncs it, renames it over `name`, fsyncs `dir`. A crash leaves the old file or the
/// new one, never a mix.
///
/// # Errors
/// [`Error::NoSpace`] when the disk is full while the temp file is created or
/// written: the temp file is removed and `name` is untouched, so the caller may retry.
/// [`Error::Io`] naming the file for anything else (a failed fsync included).
pub fn write_durably(dir: &Path, name: &str, temp_name: &str, bytes: &[u8]) -> Result<()> {
    let temp = dir.join(temp_name);
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .and_then(|mut file| file.write_all(bytes).map(|()| file));
    let file = match written {
        Ok(file) => file,
        Err(source) => {
            let error = write_error(&temp)(source);
            if error.is_no_space() {
                // Best effort: give the space back; a leftover temp file is harmless
                // (the next save truncates it, `load` removes it).
                let _ = fs::remove_file(&temp);
            }
            return Err(error);
        }
    };
    file.sync_data().map_err(io_error(&temp))?;
    let path = dir.join(name);
    fs::rename(&temp, &path).map_err(io_error(&path))?;
    sync_dir(dir)
}

/// fsyncs a directory so that creations, renames and removals in it are durable.
///
/// # Errors
/// [`Error::Io`].
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: save/load round-trips, a leftover temp file is ignored, damage is reported.
    #[test]
    fn save_load_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), HardState::default());
        let state = HardState {
            term: 7,
            vote: 3,
            commit: 42,
        };
        save(dir.path(), &state).unwrap();
        fs::write(dir.path().join(HARD_STATE_TEMP_NAME), b"half").unwrap();
        assert_eq!(load(dir.path()).unwrap(), state);
        assert!(!dir.path().join(HARD_STATE_TEMP_NAME).exists());
        let path = dir.path().join(HARD_STATE_NAME);
        let mut bytes = fs::read(&path).unwrap();
        bytes[10] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(Error::Corruption { offset: 0, .. })
        ));
    }
}
