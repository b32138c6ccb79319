//! Loopback ports for nodes that may be restarted: chosen outside the kernel's
//! ephemeral range and leased, so a node that is down for a while gets its port back.
//!
//! A port taken with `bind 127.0.0.1:0` comes from the ephemeral range
//! (`/proc/sys/net/ipv4/ip_local_port_range`), which the kernel also hands out as the
//! local port of every outgoing connection: while a node is down, one of the cluster's
//! own links may take its port, and the restarted node fails with "Address already in
//! use". So [`lease_loopback_ports`] picks random ports *outside* that range (ports from
//! [`PORT_FLOOR`] up to it, or above it), keeps only those that bind right now, and
//! leases each one: an exclusive `flock` on `<temp dir>/raftkv-port-locks/<port>.lock`,
//! held by the returned [`PortLease`]. Every raftkv process that picks ports here (test
//! binaries running in parallel, `raftkv-server local`, the fault and bench tools) skips
//! a leased port, so two clusters never share one even when both are down.
//!
//! Invariant: while a [`PortLease`] lives, no other caller of this module in any process
//! is handed its port. The kernel releases the lock when the process dies, so a crash
//! leaves nothing stale behind. The lock files themselves stay (empty; deleting one
//! could race with another process locking it).

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Lowest port handed out (below it live well-known and registered services).
pub const PORT_FLOOR: u16 = 10_000;

/// The ephemeral range when `/proc` does not say (Linux's default).
const EPHEMERAL_DEFAULT: (u16, u16) = (32_768, 60_999);

/// Random candidates tried per port wanted before giving up.
const ATTEMPTS_PER_PORT: usize = 200;

/// One leased loopback port; dropping it ends the lease.
#[derive(Debug)]
pub struct PortLease {
    addr: SocketAddr,
    file: File,
}

impl PortLease {
    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for PortLease {
    /// Unlocks explicitly: a child forked by another thread holds a copy of the
    /// descriptor until it execs, and the lock lives until the last copy closes.
    fn drop(&mut self) {
        if let Err(e) = self.file.unlock() {
            log::warn!("cannot unlock the lease of port {}: {e}", self.addr.port());
        }
    }
}

/// `count` distinct loopback ports outside the ephemeral range, each free when chosen
/// and leased until its [`PortLease`] drops.
///
/// # Errors
/// The lock directory cannot be created, or not enough free ports were found.
pub fn lease_loopback_ports(count: usize) -> io::Result<Vec<PortLease>> {
    let ranges = candidate_ranges(ephemeral_range());
    let total: u32 = ranges
        .iter()
        .map(|(low, high)| u32::from(high - low) + 1)
        .sum();
    if total == 0 {
        return Err(io::Error::other(
            "no port outside the ephemeral range (ip_local_port_range) to choose from",
        ));
    }
    let mut leases: Vec<PortLease> = Vec::with_capacity(count);
    let mut rng = seed();
    for _ in 0..count.saturating_mul(ATTEMPTS_PER_PORT) {
        if leases.len() == count {
            break;
        }
        let port = nth_port(&ranges, (next_random(&mut rng) % u64::from(total)) as u32);
        if leases.iter().any(|lease| lease.addr.port() == port) {
            continue;
        }
        if let Some(lease) = lease_port(port)? {
            leases.push(lease);
        }
    }
    if leases.len() < count {
        return Err(io::Error::other(format!(
            "found only {} of {count} free loopback ports outside the ephemeral range",
            leases.len()
        )));
    }
    Ok(leases)
}

/// Leases `port` if no other process holds its lease and it binds on 127.0.0.1 now;
/// `None` otherwise.
///
/// # Errors
/// The lock directory or file cannot be created or locked for another reason.
pub fn lease_port(port: u16) -> io::Result<Option<PortLease>> {
    let dir = lock_dir();
    std::fs::create_dir_all(&dir)
        .map_err(|e| io::Error::new(e.kind(), format!("create {}: {e}", dir.display())))?;
    let path = dir.join(format!("{port}.lock"));
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(None),
        Err(TryLockError::Error(e)) => {
            return Err(io::Error::new(
                e.kind(),
                format!("lock {}: {e}", path.display()),
            ));
        }
    }
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    // Dropping `file` on the way out releases the lock of a port someone else uses.
    Ok(TcpListener::bind(addr)
        .is_ok()
        .then_some(PortLease { addr, file }))
}

fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("raftkv-port-locks")
}

/// The kernel's ephemeral port range, inclusive.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| parse_range(&text))
        .unwrap_or(EPHEMERAL_DEFAULT)
}

fn parse_range(text: &str) -> Option<(u16, u16)> {
    let mut words = text.split_whitespace().map(str::parse::<u16>);
    let (low, high) = (words.next()?.ok()?, words.next()?.ok()?);
    (low <= high).then_some((low, high))
}

/// The inclusive ranges of ports at or above [`PORT_FLOOR`] outside `ephemeral`.
fn candidate_ranges((low, high): (u16, u16)) -> Vec<(u16, u16)> {
    let mut ranges = Vec::new();
    if low > PORT_FLOOR {
        ranges.push((PORT_FLOOR, low - 1));
    }
    if high < u16::MAX {
        ranges.push((high.max(PORT_FLOOR - 1) + 1, u16::MAX));
    }
    ranges
}

/// The `n`-th port of `ranges` counted from the first (`n` < their total size).
fn nth_port(ranges: &[(u16, u16)], mut n: u32) -> u16 {
    for &(low, high) in ranges {
        let size = u32::from(high - low) + 1;
        if n < size {
            return low + n as u16;
        }
        n -= size;
    }
    unreachable!("nth_port is called with n below the ranges' total size")
}

/// A seed that differs between processes and between calls in one process.
fn seed() -> u64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32) ^ CALLS.fetch_add(1, Ordering::Relaxed) << 48
}

/// SplitMix64: spreading the choice is all that is needed.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    //! Goal: ports come from outside the ephemeral range, are distinct, and a leased port
    //! is never handed out again while leased. Method: real leases on this machine, and
    //! the range arithmetic on tables.
    use super::*;

    #[test]
    fn candidate_ranges_skip_the_ephemeral_range() {
        let cases = [
            ((32_768, 60_999), vec![(10_000, 32_767), (61_000, 65_535)]),
            ((1_024, 65_535), vec![]),
            ((40_000, 65_535), vec![(10_000, 39_999)]),
            ((1_024, 20_000), vec![(20_001, 65_535)]),
        ];
        for (i, (range, want)) in cases.into_iter().enumerate() {
            assert_eq!(candidate_ranges(range), want, "#{i}: {range:?}");
        }
        let ranges = candidate_ranges((32_768, 60_999));
        assert_eq!(nth_port(&ranges, 0), 10_000);
        assert_eq!(nth_port(&ranges, 22_767), 32_767);
        assert_eq!(nth_port(&ranges, 22_768), 61_000);
        assert_eq!(parse_range("32768\t60999\n"), Some((32_768, 60_999)));
        assert_eq!(parse_range("x"), None);
    }

    #[test]
    fn leased_ports_are_outside_the_ephemeral_range_and_exclusive() {
        let (low, high) = ephemeral_range();
        let leases = lease_loopback_ports(12).expect("ports");
        let mut ports: Vec<u16> = leases.iter().map(|l| l.addr().port()).collect();
        for port in &ports {
            assert!(
                *port >= PORT_FLOOR && !(low..=high).contains(port),
                "{port}"
            );
        }
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 12);
        // Leased: nobody else gets it (the lock is per open file, so this holds within
        // one process as well as across processes).
        assert!(lease_port(ports[0]).expect("lease").is_none());
        drop(leases);
        let again = lease_port(ports[0]).expect("lease");
        // Free again once released (unless another process took it meanwhile).
        assert!(again.is_some() || TcpListener::bind(("127.0.0.1", ports[0])).is_err());
    }
}
