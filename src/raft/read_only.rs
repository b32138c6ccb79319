//! ReadIndex bookkeeping (Raft thesis section 6.4).
//!
//! Reads queue in an *open* round until the leader next flushes its output;
//! then the round records the commit index and one heartbeat broadcast carries
//! its number as context. Every read queued in the round is served by that one
//! round of heartbeats: once a majority of voters answered a heartbeat with
//! context >= the round's number, the leader was still leader when the round
//! started, and each read may proceed once the state machine applied the
//! round's index.
//!
//! Invariant: broadcast rounds are ordered by number, and a round's index is the
//! commit index at the time its heartbeats were sent, which is at least the
//! commit index at the arrival of each of its reads (commit only grows).

use std::collections::{BTreeSet, VecDeque};

use super::message::{Configuration, NodeId};
use super::quorum;

/// A confirmed read: once the state machine applied `index`, the read identified
/// by `context` may be served (it is linearizable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's opaque id given to `read_index`.
    pub context: Vec<u8>,
    /// The index the state machine must have applied first.
    pub index: u64,
}

/// One read waiting for confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    /// The caller's opaque id.
    pub context: Vec<u8>,
    /// Who asked: the leader itself, or the follower that forwarded it.
    pub from: NodeId,
}

#[derive(Debug)]
struct Round {
    number: u64,
    index: u64,
    requests: Vec<ReadRequest>,
    acks: BTreeSet<NodeId>,
}

/// The leader's queue of ReadIndex rounds.
#[derive(Debug, Default)]
pub struct ReadOnly {
    last_number: u64,
    open: Vec<ReadRequest>,
    rounds: VecDeque<Round>,
}

impl ReadOnly {
    /// Queues a read in the open round.
    pub fn add(&mut self, request: ReadRequest) {
        self.open.push(request);
    }

    /// Whether reads wait for their round to start.
    pub fn has_open(&self) -> bool {
        !self.open.is_empty()
    }

    /// Starts the open round at `commit` and returns its number, the heartbeat
    /// context to broadcast; `None` when no read is queued.
    pub fn start_round(&mut self, commit: u64) -> Option<u64> {
        if self.open.is_empty() {
            return None;
        }
        self.last_number += 1;
        let requests = std::mem::take(&mut self.open);
        let round = Round {
            number: self.last_number,
            index: commit,
            requests,
            acks: BTreeSet::new(),
        };
        self.rounds.push_back(round);
        Some(self.last_number)
    }

    /// The newest unconfirmed round number (0 when none): periodic heartbeats
    /// carry it, so a lost heartbeat round is retried.
    pub fn pending_context(&self) -> u64 {
        self.rounds.back().map_or(0, |round| round.number)
    }

    /// Records that `from` answered a heartbeat with `context`, and returns the
    /// reads of every round now confirmed by a majority of `config`'s voters
    /// (`leader` counts itself), each with its read index.
    pub fn ack(
        &mut self,
        config: &Configuration,
        leader: NodeId,
        from: NodeId,
        context: u64,
    ) -> Vec<(ReadRequest, u64)> {
        for round in self
            .rounds
            .iter_mut()
            .take_while(|round| round.number <= context)
        {
            round.acks.insert(from);
        }
        let mut ready = Vec::new();
        while let Some(round) = self.rounds.front() {
            if !quorum::has_majority(config, |id| id == leader || round.acks.contains(&id)) {
                break;
            }
            if let Some(round) = self.rounds.pop_front() {
                ready.extend(
                    round
                        .requests
                        .into_iter()
                        .map(|request| (request, round.index)),
                );
            }
        }
        ready
    }

    /// Forgets every queued read (the node stopped being leader).
    pub fn reset(&mut self) {
        self.open.clear();
        self.rounds.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(context: u8, from: NodeId) -> ReadRequest {
        ReadRequest {
            context: vec![context],
            from,
        }
    }

    /// Goal: reads queued together share one round; a round is served once a
    /// majority acks it, and an ack for a later round confirms earlier ones.
    /// Reference: thesis section 6.4.
    #[test]
    fn rounds_are_shared_and_confirmed_by_majority() {
        let config = Configuration::new([1, 2, 3, 4, 5], []);
        let mut ro = ReadOnly::default();
        ro.add(read(1, 1));
        ro.add(read(2, 3));
        assert_eq!(ro.start_round(10), Some(1));
        assert_eq!(ro.start_round(11), None, "no read queued, no round");
        ro.add(read(3, 1));
        assert_eq!(ro.start_round(12), Some(2));
        assert_eq!(ro.pending_context(), 2);
        assert!(
            ro.ack(&config, 1, 2, 1).is_empty(),
            "leader + one ack is not a majority of 5"
        );
        let served = ro.ack(&config, 1, 4, 2);
        assert_eq!(
            served,
            vec![(read(1, 1), 10), (read(2, 3), 10)],
            "round 2 still needs one more"
        );
        let served = ro.ack(&config, 1, 5, 2);
        assert_eq!(served, vec![(read(3, 1), 12)]);
        assert_eq!(ro.pending_context(), 0);
    }
}
