//! Linearizable reads, batched: every read arriving in one loop turn shares one
//! ReadIndex round (Raft thesis §6.4), started at the next `before_sleep`. A read is
//! served once its round's ReadState arrived AND the state machine applied up to the
//! read index the round returned.
//!
//! Invariant: a read is in exactly one of `this_turn` (no round yet), `by_context`
//! (round started, ReadState not yet in) or `by_index` (read index known, waiting for
//! the apply); each list is non-empty or absent from its map.

use std::collections::BTreeMap;

use super::requests::{ClientRef, Deadline, Outbox, Waiter, finish};
use super::{Replica, ReplicaLog, SnapshotWriter};
use crate::codec::client::ResponseBody;
use crate::kv::{CommandResult, KvStore, RangeQuery};
use crate::raft::ReadState;
use crate::replica::timer::{TimerId, TimerWheel};

/// What a read reads.
pub(super) enum ReadWhat {
    /// One key (a Get).
    Key(Vec<u8>),
    /// An ordered range.
    Range(RangeQuery),
    /// One key's expiry time (a Ttl request; `absolute`: as a unix time).
    Ttl {
        /// The key.
        key: Vec<u8>,
        /// Answer the unix time, not the time left.
        absolute: bool,
    },
}

impl ReadWhat {
    /// The answer from the applied state of `kv` for a reader at `now_ms` (unix
    /// milliseconds; 0: no clock): keys whose expiry time is not after it are absent.
    pub(super) fn answer(&self, kv: &KvStore, now_ms: u64) -> ResponseBody {
        let value = |key: &[u8]| kv.get_at(key, now_ms).map(<[u8]>::to_vec);
        match self {
            ReadWhat::Key(key) => ResponseBody::Result(CommandResult::Value(value(key))),
            ReadWhat::Range(query) => ResponseBody::Range(kv.range_at(query, now_ms)),
            ReadWhat::Ttl { key, absolute } => {
                let ttl = match (kv.get_at(key, now_ms), kv.expire_at(key)) {
                    (None, _) => -2,
                    (Some(_), None) => -1,
                    (Some(_), Some(at)) if *absolute => i64::try_from(at).unwrap_or(i64::MAX),
                    (Some(_), Some(at)) => {
                        i64::try_from(at.saturating_sub(now_ms)).unwrap_or(i64::MAX)
                    }
                };
                ResponseBody::Result(CommandResult::Integer(ttl))
            }
        }
    }
}

/// A linearizable read waiting to be served.
pub(super) struct PendingRead {
    pub(super) client: ClientRef,
    pub(super) request_id: u64,
    pub(super) what: ReadWhat,
    pub(super) deadline: TimerId,
}

impl From<PendingRead> for Waiter {
    fn from(read: PendingRead) -> Waiter {
        Waiter {
            client: read.client,
            request_id: read.request_id,
            deadline: read.deadline,
        }
    }
}

/// The reads of one replica, by stage (see the module docs).
#[derive(Default)]
pub(super) struct Reads {
    /// Reads that arrived this turn: one ReadIndex round is started for all of them.
    this_turn: Vec<PendingRead>,
    /// Reads waiting for the ReadState of their round, by round context.
    by_context: BTreeMap<u64, Vec<PendingRead>>,
    /// Reads whose read index is known, waiting for it to be applied.
    by_index: BTreeMap<u64, Vec<PendingRead>>,
    next_context: u64,
}

impl Reads {
    /// A read arrived (on the leader).
    pub(super) fn add(&mut self, read: PendingRead) {
        self.this_turn.push(read);
    }

    /// Reads whose read index is known (for the turn summary).
    pub(super) fn waiting(&self) -> usize {
        self.by_index.values().map(Vec::len).sum()
    }

    /// Reads whose ReadIndex round started and has not returned.
    #[cfg(test)]
    pub(super) fn in_round(&self) -> usize {
        self.by_context.values().map(Vec::len).sum()
    }

    /// Files the reads of each round whose ReadState arrived under its read index.
    pub(super) fn on_read_states(&mut self, states: impl Iterator<Item = ReadState>) {
        for state in states {
            let context = state
                .context
                .get(..8)
                .and_then(|c| c.try_into().ok())
                .map(u64::from_le_bytes);
            if let Some(reads) = context.and_then(|c| self.by_context.remove(&c)) {
                self.by_index.entry(state.index).or_default().extend(reads);
            }
        }
    }

    /// Takes one read wherever it waits (its deadline fired).
    pub(super) fn take(&mut self, client: ClientRef, request_id: u64) -> Option<PendingRead> {
        let matches = |r: &PendingRead| r.client == client && r.request_id == request_id;
        let lists = self
            .by_context
            .values_mut()
            .chain(self.by_index.values_mut())
            .chain(std::iter::once(&mut self.this_turn));
        let mut taken = None;
        for list in lists {
            if let Some(at) = list.iter().position(matches) {
                taken = Some(list.remove(at));
                break;
            }
        }
        self.by_context.retain(|_, reads| !reads.is_empty());
        self.by_index.retain(|_, reads| !reads.is_empty());
        taken
    }

    /// Forgets every read of `client` (its connection closed) and cancels their timers.
    pub(super) fn forget_client(
        &mut self,
        client: ClientRef,
        deadlines: &mut TimerWheel<Deadline>,
    ) {
        let mut forget = |reads: &mut Vec<PendingRead>| {
            reads.retain(|read| {
                let keep = read.client != client;
                if !keep {
                    deadlines.cancel(read.deadline);
                }
                keep
            });
        };
        forget(&mut self.this_turn);
        self.by_context.values_mut().for_each(&mut forget);
        self.by_index.values_mut().for_each(&mut forget);
        self.by_context.retain(|_, reads| !reads.is_empty());
        self.by_index.retain(|_, reads| !reads.is_empty());
    }

    /// Takes every read whose round started (leadership was lost: they are redirected).
    pub(super) fn take_confirmed_and_waiting(&mut self) -> Vec<PendingRead> {
        let waiting = std::mem::take(&mut self.by_context).into_values().flatten();
        let confirmed = std::mem::take(&mut self.by_index).into_values().flatten();
        waiting.chain(confirmed).collect()
    }
}

impl<L: ReplicaLog, W: SnapshotWriter> Replica<L, W> {
    /// Starts one ReadIndex round for the reads of this turn; a refused round answers
    /// them with the refusal (a redirect to the leader).
    pub(super) fn start_read_round(&mut self, out: &mut impl Outbox) {
        if self.reads.this_turn.is_empty() {
            return;
        }
        let reads = std::mem::take(&mut self.reads.this_turn);
        #[cfg(feature = "sim-faults")]
        if self.faults.read_before_read_index {
            let committed = self.raw.raft().log.committed;
            self.reads
                .by_index
                .entry(committed)
                .or_default()
                .extend(reads);
            return;
        }
        let context = self.reads.next_context;
        self.reads.next_context += 1;
        match self.raw.read_index(context.to_le_bytes().to_vec()) {
            Ok(()) => {
                self.reads.by_context.insert(context, reads);
            }
            Err(e) => {
                let body = self.refusal(e);
                for read in reads {
                    finish(&mut self.deadlines, out, read.into(), body.clone());
                }
            }
        }
    }

    /// Answers every read whose read index the state machine has applied.
    pub(super) fn answer_reads(&mut self, out: &mut impl Outbox) {
        let applied = self.kv.applied_index();
        while let Some(entry) = self.reads.by_index.first_entry() {
            if *entry.key() > applied {
                break;
            }
            for read in entry.remove() {
                let body = read.what.answer(&self.kv, self.expiry.now_ms());
                finish(&mut self.deadlines, out, read.into(), body);
            }
        }
    }
}
