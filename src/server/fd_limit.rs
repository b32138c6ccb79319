//! The process's open-file limit (`RLIMIT_NOFILE`): every client connection is a file
//! descriptor, and the common default soft limit (1024) is far below
//! `limits.client_connections_max`. The server raises the soft limit to the hard limit
//! at start; the event loop caps the client connections it admits below what is left,
//! so descriptors remain for the log segments, snapshots and peer links (running out
//! of them there would stop the node).

use std::io;

/// Descriptors kept for everything that is not a client connection.
pub const RESERVED_FDS: u64 = 256;

/// The soft limit is never raised past this, even when the hard limit is unlimited.
const RAISED_SOFT_MAX: u64 = 1 << 20;

/// The limit before and after [`raise_open_files_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFilesLimit {
    /// The soft limit found at start.
    pub before: u64,
    /// The soft limit now in force.
    pub after: u64,
    /// The hard limit.
    pub hard: u64,
}

fn get() -> io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own; no other memory.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit)
}

/// The soft open-file limit in force.
///
/// # Errors
/// `getrlimit` failed.
pub fn open_files_limit() -> io::Result<u64> {
    Ok(get()?.rlim_cur as u64)
}

/// Raises the soft open-file limit to the hard limit (at most 2^20).
///
/// # Errors
/// `getrlimit` or `setrlimit` failed; the limit is then unchanged.
pub fn raise_open_files_limit() -> io::Result<OpenFilesLimit> {
    let limit = get()?;
    let before = limit.rlim_cur as u64;
    let hard = limit.rlim_max as u64;
    let target = hard.min(RAISED_SOFT_MAX);
    if target > before {
        let raised = libc::rlimit {
            rlim_cur: target as libc::rlim_t,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(OpenFilesLimit {
        before,
        after: open_files_limit()?,
        hard,
    })
}

#[cfg(test)]
mod tests {
    //! Goal: raising never lowers the limit and ends at the hard limit (or 2^20).
    use super::*;

    #[test]
    fn raise_reaches_the_hard_limit_and_is_idempotent() {
        let first = raise_open_files_limit().unwrap();
        assert!(first.after >= first.before);
        assert_eq!(
            first.after,
            first.hard.min(RAISED_SOFT_MAX).max(first.before)
        );
        let second = raise_open_files_limit().unwrap();
        assert_eq!(second.before, first.after);
        assert_eq!(second.after, first.after);
    }
}
