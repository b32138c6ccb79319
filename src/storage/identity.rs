//! The identity file `IDENTITY` of a node's data directory: which cluster and which
//! node the directory belongs to, so a node never starts on another node's state.
//!
//! Layout (28 bytes, little-endian): `magic[8] | cluster_id u64 | node_id u64 | crc u32`
//! with the CRC-32/IEEE over the first 24 bytes. Written once, with
//! [`write_durably`](super::hard_state::write_durably), when the directory is first
//! initialised (or, for a directory from before this file existed, on its first open).
//!
//! Invariant: a directory's identity never changes once written.

use std::fs;
use std::path::Path;

use super::hard_state::write_durably;
use super::{Error, Result};

/// Name of the identity file (in the node's data directory, beside `wal/`).
pub const IDENTITY_NAME: &str = "IDENTITY";
/// Name of the temporary file the save writes first.
pub const IDENTITY_TEMP_NAME: &str = "IDENTITY.tmp";
/// First eight bytes of the file.
pub const IDENTITY_MAGIC: [u8; 8] = *b"\x9fRKVIDN\n";
/// Size of the file.
pub const IDENTITY_BYTES: usize = 28;

/// The cluster and node a data directory belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// The config's `cluster_id`.
    pub cluster_id: u64,
    /// The config's `node_id`.
    pub node_id: u64,
}

impl Identity {
    /// The file's bytes.
    pub fn encode(&self) -> [u8; IDENTITY_BYTES] {
        let mut out = [0u8; IDENTITY_BYTES];
        out[0..8].copy_from_slice(&IDENTITY_MAGIC);
        out[8..16].copy_from_slice(&self.cluster_id.to_le_bytes());
        out[16..24].copy_from_slice(&self.node_id.to_le_bytes());
        let crc = crc32fast::hash(&out[0..24]);
        out[24..28].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes the file's bytes; a reason when they are not a valid identity.
    pub fn decode(bytes: &[u8]) -> Result<Identity, &'static str> {
        if bytes.len() != IDENTITY_BYTES {
            return Err("identity file has the wrong size");
        }
        if bytes[0..8] != IDENTITY_MAGIC {
            return Err("bad identity magic");
        }
        if crc32fast::hash(&bytes[0..24]).to_le_bytes() != bytes[24..28] {
            return Err("bad identity crc");
        }
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(w)
        };
        Ok(Identity {
            cluster_id: word(8),
            node_id: word(16),
        })
    }
}

/// The identity saved in `data_dir`, `None` when there is none.
///
/// # Errors
/// [`Error::Corruption`] when the file exists but is not valid; [`Error::Io`].
pub fn read(data_dir: &Path) -> Result<Option<Identity>> {
    let path = data_dir.join(IDENTITY_NAME);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Io { path, source }),
    };
    Identity::decode(&bytes)
        .map(Some)
        .map_err(|reason| Error::Corruption {
            file: path,
            offset: 0,
            reason: reason.to_string(),
        })
}

/// Saves `identity` in `data_dir` atomically and durably.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn save(data_dir: &Path, identity: Identity) -> Result<()> {
    write_durably(
        data_dir,
        IDENTITY_NAME,
        IDENTITY_TEMP_NAME,
        &identity.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: save/read round-trips, absence is `None`, damage is reported with the file.
    #[test]
    fn save_read_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let identity = Identity {
            cluster_id: 7,
            node_id: 3,
        };
        save(dir.path(), identity).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(identity));
        let path = dir.path().join(IDENTITY_NAME);
        let mut bytes = fs::read(&path).unwrap();
        bytes[9] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            read(dir.path()),
            Err(Error::Corruption { offset: 0, .. })
        ));
    }
}
