//! The cluster secret: a file of at least [`SECRET_BYTES_MIN`] bytes shared by every
//! member (`security.cluster_secret_file`).
//!
//! Invariant: the bytes never leave this type except into the HMAC key
//! ([`ClusterSecret::bytes`] is crate-private); `Debug` prints `<redacted>`. Trailing
//! whitespace (the newline an editor adds) is not part of the secret, so `echo` and an
//! editor give the same secret.

use std::fmt;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Shortest accepted secret: 16 bytes (128 bits if random).
pub const SECRET_BYTES_MIN: usize = 16;

/// The shared secret of the cluster's members.
#[derive(Clone)]
pub struct ClusterSecret {
    bytes: Vec<u8>,
}

/// Why a secret or credentials file was refused.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file cannot be read.
    #[error("key `{key}`: cannot read {}: {source}", path.display())]
    Read {
        /// The config key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The read error.
        source: io::Error,
    },
    /// The file's content is unusable.
    #[error("key `{key}`: {}: {message}", path.display())]
    Invalid {
        /// The config key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong (never the content itself).
        message: String,
    },
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

impl ClusterSecret {
    /// Reads the secret from `path` (the value of `key`), warning when the file is
    /// readable or writable by others than its owner.
    ///
    /// # Errors
    /// The file cannot be read, or holds fewer than [`SECRET_BYTES_MIN`] bytes.
    pub fn load(path: &Path, key: &'static str) -> Result<ClusterSecret, SecretError> {
        let bytes = read_private(path, key)?;
        ClusterSecret::from_bytes(bytes).map_err(|message| SecretError::Invalid {
            key,
            path: path.to_path_buf(),
            message,
        })
    }

    /// The secret `bytes` (trailing whitespace removed).
    ///
    /// # Errors
    /// Fewer than [`SECRET_BYTES_MIN`] bytes remain.
    pub fn from_bytes(mut bytes: Vec<u8>) -> Result<ClusterSecret, String> {
        while bytes.last().is_some_and(u8::is_ascii_whitespace) {
            bytes.pop();
        }
        if bytes.len() < SECRET_BYTES_MIN {
            return Err(format!(
                "the secret has {} bytes, at least {SECRET_BYTES_MIN} are required",
                bytes.len()
            ));
        }
        Ok(ClusterSecret { bytes })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Reads a credentials file, warning (with the file's name, never its content) when
/// its mode lets others than the owner read or write it.
///
/// # Errors
/// The file cannot be read.
pub fn read_private(path: &Path, key: &'static str) -> Result<Vec<u8>, SecretError> {
    let read_error = |source| SecretError::Read {
        key,
        path: path.to_path_buf(),
        source,
    };
    let mode = std::fs::metadata(path)
        .map_err(read_error)?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        log::warn!(
            "{key}: {} is accessible to others than its owner (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        );
    }
    std::fs::read(path).map_err(read_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_secrets_are_refused_and_trailing_whitespace_ignored() {
        let cases: [(&[u8], Option<usize>); 4] = [
            (b"0123456789abcdef\n", Some(16)),
            (b"0123456789abcdef \r\n", Some(16)),
            (b"0123456789abcde\n", None),
            (b"", None),
        ];
        for (i, (input, want)) in cases.into_iter().enumerate() {
            let got = ClusterSecret::from_bytes(input.to_vec()).ok();
            assert_eq!(got.map(|s| s.bytes().len()), want, "#{i}");
        }
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        let secret = ClusterSecret::from_bytes(b"very-secret-value-123".to_vec()).unwrap();
        let shown = format!("{secret:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
    }

    #[test]
    fn load_names_the_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let err = ClusterSecret::load(&path, "security.cluster_secret_file").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("security.cluster_secret_file"), "{text}");
        assert!(text.contains("secret"), "{text}");
        std::fs::write(&path, "short").unwrap();
        let text = ClusterSecret::load(&path, "k").unwrap_err().to_string();
        assert!(text.contains("at least 16"), "{text}");
        assert!(!text.contains("short\""), "{text}");
    }
}
