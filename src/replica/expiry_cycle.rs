//! The leader's expiry clock and active expiry cycle (Redis's active expiry, decided
//! by the leader and replicated as Redis replicas receive DELs).
//!
//! The driver gives the replica its expiry clock (unix milliseconds, `wall_ms`; the
//! server's runs on the monotonic clock from the wall time the process started, see
//! `server::node`). Once per loop turn the leader takes at most
//! [`EXPIRED_KEYS_PER_TURN`] keys whose expiry time has passed by that clock, earliest
//! first from the time-ordered index (O(log n + that many)), within half of
//! `limits.entry_bytes_max` of key bytes, and proposes them as one
//! sessionless `Command::DeleteExpired` carrying the time it judged by; applying it
//! deletes only the keys still expired at that time, so a key set again meanwhile
//! survives. One such entry is in flight at a time: the next turn after it is applied
//! takes the next batch, so a million keys expiring at once cost a bounded amount per
//! turn and are deleted over a few hundred commits. Followers never delete on their
//! own; they apply the leader's entries.
//!
//! The clock is also what client commands are stamped with (`Command::stamped`) and
//! what linearizable reads judge expiry by.
//!
//! Invariant: the clock given out ([`ExpiryClock::now_ms`]) never goes back, whatever
//! the driver passes; 0 means no clock (the simulation): no stamps, no cycle, no read
//! filter.

use super::{Replica, ReplicaLog, SnapshotWriter};
use crate::kv::{Command, encode_command};
use crate::raft::Role;

/// The most keys one `DeleteExpired` entry names (the work of one turn of the cycle).
pub const EXPIRED_KEYS_PER_TURN: usize = 1000;

/// The leader's expiry clock and the cycle's entry in flight.
#[derive(Debug, Default)]
pub(super) struct ExpiryClock {
    /// Invariant: the highest time given to `set` (0: none yet).
    wall_ms: u64,
    /// The log index and term of the last `DeleteExpired` proposed.
    in_flight: Option<(u64, u64)>,
    /// Keys this replica's state machine deleted because they expired (the
    /// `kv_expired_keys` counter, Redis's `expired_keys`).
    pub(super) expired_keys: u64,
}

impl ExpiryClock {
    /// The driver's clock now; a time before the last one is ignored.
    pub(super) fn set(&mut self, wall_ms: u64) {
        self.wall_ms = self.wall_ms.max(wall_ms);
    }

    /// The clock (0: none).
    pub(super) fn now_ms(&self) -> u64 {
        self.wall_ms
    }
}

impl<L: ReplicaLog, W: SnapshotWriter> Replica<L, W> {
    /// The driver's expiry clock (unix milliseconds), before the inputs of a turn.
    pub fn set_wall_clock_ms(&mut self, wall_ms: u64) {
        self.expiry.set(wall_ms);
    }

    /// On the leader with a clock, proposes the deletion of up to
    /// [`EXPIRED_KEYS_PER_TURN`] expired keys, unless the last such entry is not applied
    /// yet (in this term) or writes are refused (NOSPACE).
    pub(super) fn run_expiry_cycle(&mut self) {
        let now_ms = self.expiry.now_ms();
        if now_ms == 0 || self.raw.raft().role != Role::Leader || self.nospace.raised() {
            return;
        }
        let term = self.raw.raft().term;
        if let Some((index, proposed_term)) = self.expiry.in_flight
            && proposed_term == term
            && index > self.kv.applied_index()
        {
            return;
        }
        self.expiry.in_flight = None;
        let mut keys = self.kv.expired_keys(now_ms, EXPIRED_KEYS_PER_TURN);
        // Within half an entry's limit (a key alone always fits: it came in one).
        let bytes_max = self.config.limits.entry_bytes_max / 2;
        let mut bytes = 0u64;
        let fits = keys
            .iter()
            .take_while(|key| {
                bytes += key.len() as u64 + 4;
                bytes <= bytes_max
            })
            .count();
        keys.truncate(fits.max(1));
        if keys.is_empty() {
            return;
        }
        let mut data = Vec::new();
        encode_command(&Command::DeleteExpired { now_ms, keys }, &mut data);
        let data: std::sync::Arc<[u8]> = data.into();
        match self.raw.propose(data) {
            Ok(index) => self.expiry.in_flight = Some((index, term)),
            Err(e) => ::log::debug!("expiry cycle: proposal refused: {e}"),
        }
    }
}
