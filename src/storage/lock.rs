//! The directory lock: a `LOCK` file held with an exclusive advisory lock
//! (`flock`) for as long as a [`crate::storage::Wal`] is open, so two processes
//! never write one log. The file holds the holder's pid, for error messages only.
//! The lock is released by the kernel when the process dies, so a crash never
//! leaves a stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::Path;

use super::format::LOCK_NAME;
use super::{Error, Result, io_error};

/// A held directory lock; dropping it releases the lock.
#[derive(Debug)]
pub struct DirLock {
    file: File,
}

impl Drop for DirLock {
    /// Unlocks explicitly rather than by closing: a child forked by another thread
    /// holds a copy of the descriptor until it execs, and an `flock` lock lives until
    /// the last copy closes, so closing alone could leave the directory locked.
    fn drop(&mut self) {
        if let Err(e) = self.file.unlock() {
            log::warn!("cannot unlock a data directory lock: {e}");
        }
    }
}

impl DirLock {
    /// Takes the lock of `dir` without waiting.
    ///
    /// # Errors
    /// [`Error::Locked`] when someone else holds it; [`Error::Io`] otherwise.
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(LOCK_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(Error::Locked {
                    dir: dir.to_path_buf(),
                    holder: (!holder.is_empty()).then(|| holder.to_string()),
                });
            }
            Err(TryLockError::Error(source)) => return Err(Error::Io { path, source }),
        }
        file.set_len(0).map_err(io_error(&path))?;
        writeln!(file, "pid {}", std::process::id()).map_err(io_error(&path))?;
        Ok(DirLock { file })
    }

    /// Whether some process holds the lock of `dir` right now (false when there is
    /// no lock file). Used by read-only tools to warn that the log may be changing.
    ///
    /// # Errors
    /// [`Error::Io`] when the lock file exists but cannot be opened.
    pub fn is_held(dir: &Path) -> Result<bool> {
        let path = dir.join(LOCK_NAME);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(Error::Io { path, source }),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(false),
            Err(TryLockError::WouldBlock) => Ok(true),
            Err(TryLockError::Error(source)) => Err(Error::Io { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: a second holder is refused while the first lives, and admitted after.
    #[test]
    fn exclusive_while_held() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!DirLock::is_held(dir.path()).unwrap());
        let lock = DirLock::acquire(dir.path()).unwrap();
        assert!(DirLock::is_held(dir.path()).unwrap());
        match DirLock::acquire(dir.path()) {
            Err(Error::Locked { holder, .. }) => {
                assert_eq!(holder, Some(format!("pid {}", std::process::id())));
            }
            other => panic!("second lock: {other:?}"),
        }
        drop(lock);
        assert!(!DirLock::is_held(dir.path()).unwrap());
        DirLock::acquire(dir.path()).unwrap();
    }
}
