//! The NOSPACE alarm: what a node does when its data directory's disk is full.
//!
//! As etcd's NOSPACE alarm ("etcdserver: mvcc: database space exceeded"), a full disk
//! makes the node read-only, not dead. While the alarm is up the node:
//! - acknowledges nothing it could not persist: a `Ready` whose entries, snapshot or
//!   hard state did not reach the disk has its after-sync messages (votes, append
//!   acknowledgements) dropped, as the network may drop them, and is advanced without
//!   its entries and snapshot, so the core neither counts them persisted nor forgets
//!   them: every later `Ready` hands them out again, and the hard state waits in the
//!   log (`ReplicaLog::hard_state_unsaved`);
//! - refuses new writes with [`NoSpaceAlarm::refusal`] (Redis: `-ERR NOSPACE ...`);
//! - keeps serving reads, applying what was already durable, and keeps its term, vote
//!   and membership; a leader hands leadership to the most up-to-date voter (it cannot
//!   apply what commits without its own copy, so it could serve neither writes nor
//!   linearizable reads), and keeps sending appends and heartbeats until then;
//! - retries on its own every [`RETRY_INTERVAL_MS`], and leaves the alarm once every
//!   write that failed (log, hard state, received snapshot, its own snapshot) went
//!   through.
//!
//! Only `storage::Error::NoSpace` (and a snapshot write that found the disk full) raises
//! the alarm; every other write or sync error still stops the node (fail-stop).
//! Visible as the `storage.alarm_nospace` metric, in `raftkv-cli status`, and in the
//! log (one line when raised, one when cleared).
//!
//! Time is the driver's millisecond clock, passed in (the replica reads no clock).
//!
//! Invariant: `raised()` iff `log || snapshot`.

use log::{info, warn};

use crate::codec::client::ResponseBody;
use crate::storage;

/// How often a node in the alarm retries the writes that failed, in milliseconds.
pub const RETRY_INTERVAL_MS: u64 = 1000;

/// What could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The log: entries, the hard state or a snapshot received from the leader.
    Log,
    /// A snapshot this node built of its state machine.
    Snapshot,
}

/// The alarm's state. See the module docs.
#[derive(Debug, Default)]
pub struct NoSpaceAlarm {
    log: bool,
    snapshot: bool,
    /// When the failed writes are tried again.
    retry_at_ms: Option<u64>,
    /// When the alarm went up, for the "cleared" log line.
    raised_at_ms: Option<u64>,
}

impl NoSpaceAlarm {
    /// Whether the alarm is up.
    pub fn raised(&self) -> bool {
        self.log || self.snapshot
    }

    /// Whether `cause` keeps the alarm up.
    pub fn has(&self, cause: Cause) -> bool {
        match cause {
            Cause::Log => self.log,
            Cause::Snapshot => self.snapshot,
        }
    }

    /// Whether a write held back by the alarm may be tried now: always while the alarm
    /// is down, otherwise once the retry interval has passed.
    pub fn may_write(&self, now_ms: u64) -> bool {
        self.retry_at_ms.is_none_or(|at| now_ms >= at)
    }

    /// A write failed for lack of space (`what` says which): raises the alarm (logged
    /// once, when it goes up) and schedules the next retry.
    pub fn raise(&mut self, cause: Cause, what: &str, now_ms: u64) {
        if !self.raised() {
            warn!(
                "NOSPACE alarm raised: {what}; this node refuses writes until space is freed, \
                 keeps serving reads and retries every {} s",
                RETRY_INTERVAL_MS / 1000
            );
            self.raised_at_ms = Some(now_ms);
        }
        match cause {
            Cause::Log => self.log = true,
            Cause::Snapshot => self.snapshot = true,
        }
        self.retry_at_ms = Some(now_ms + RETRY_INTERVAL_MS);
    }

    /// The writes of `cause` went through; leaves the alarm (logged once) when nothing
    /// else holds it up.
    pub fn clear(&mut self, cause: Cause, now_ms: u64) {
        if !self.has(cause) {
            return;
        }
        match cause {
            Cause::Log => self.log = false,
            Cause::Snapshot => self.snapshot = false,
        }
        if !self.raised() {
            let lasted = self
                .raised_at_ms
                .take()
                .map_or(0, |at| now_ms.saturating_sub(at));
            info!("NOSPACE alarm cleared after {lasted} ms: disk space is back, writes accepted");
            self.retry_at_ms = None;
        }
    }

    /// The answer to a write while the alarm is up, `None` while it is down.
    pub fn refusal(&self, node_id: u64) -> Option<ResponseBody> {
        self.raised().then(|| {
            ResponseBody::Error(format!(
                "NOSPACE node {node_id} is out of disk space for its data directory; writes \
                 are refused until space is freed (reads are still served)"
            ))
        })
    }
}

/// Why a write of the log or of a snapshot failed, as far as the replica cares.
#[derive(Debug)]
pub enum WriteFailure {
    /// The disk is full; nothing was changed and the write may be retried (raises
    /// the alarm).
    NoSpace(String),
    /// Anything else: the replica must stop.
    Fatal(Box<dyn std::error::Error + Send + Sync>),
}

impl From<storage::Error> for WriteFailure {
    fn from(error: storage::Error) -> WriteFailure {
        if error.is_no_space() {
            WriteFailure::NoSpace(error.to_string())
        } else {
            WriteFailure::Fatal(Box::new(error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the alarm is up while any cause holds, retries wait RETRY_INTERVAL, and
    // clearing one cause leaves the other in force.
    #[test]
    fn causes_and_retry_interval() {
        let start = 5_000;
        let mut alarm = NoSpaceAlarm::default();
        assert!(!alarm.raised() && alarm.may_write(start));
        assert!(alarm.refusal(1).is_none());
        alarm.raise(Cause::Log, "test", start);
        alarm.raise(Cause::Snapshot, "test", start);
        assert!(alarm.raised() && !alarm.may_write(start));
        assert!(alarm.may_write(start + RETRY_INTERVAL_MS));
        match alarm.refusal(3) {
            Some(ResponseBody::Error(text)) => assert!(text.starts_with("NOSPACE node 3")),
            other => panic!("refusal: {other:?}"),
        }
        alarm.clear(Cause::Log, start);
        assert!(alarm.raised() && alarm.has(Cause::Snapshot) && !alarm.has(Cause::Log));
        alarm.clear(Cause::Snapshot, start);
        assert!(!alarm.raised() && alarm.may_write(start));
    }
}
