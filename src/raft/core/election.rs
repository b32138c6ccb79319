//! Elections (sections 5.2 and 5.4.1, pre-vote of thesis section 9.6): the
//! election and heartbeat timers, check-quorum, campaigning, counting votes and
//! answering vote requests.
//!
//! Invariants: one vote per term (a vote answer waits for the sync of the hard state
//! that records it); a vote is granted only to a log at least as up to date; only a
//! voter of the configuration in force campaigns.

use super::{Raft, Role};
use crate::raft::error::Error;
use crate::raft::message::{MessageBody, NO_NODE, NodeId, VoteRequest, VoteResponse};
use crate::raft::quorum::{self, VoteResult};
use crate::raft::store::LogStore;

impl<S: LogStore> Raft<S> {
    fn promotable(&self) -> bool {
        self.membership.is_voter(self.id)
    }

    /// Starts an election now (pre-vote first when enabled and not a transfer).
    ///
    /// # Errors
    /// A store failure.
    pub fn campaign(&mut self, transfer: bool) -> Result<(), Error> {
        if self.role == Role::Leader || !self.promotable() {
            return Ok(());
        }
        self.election_elapsed = 0;
        self.randomized_election_ticks = self
            .rng
            .range(self.opts.election_ticks, 2 * self.opts.election_ticks);
        let pre_vote = self.opts.pre_vote && !transfer;
        let term = if pre_vote {
            self.become_pre_candidate();
            self.term + 1
        } else {
            self.become_candidate();
            self.term
        };
        if self.record_vote(self.id, true, pre_vote)? {
            return Ok(());
        }
        self.request_votes(term, pre_vote, transfer)
    }

    /// Sends a (pre-)vote request for `term` to every other voter.
    ///
    /// # Errors
    /// A store failure.
    fn request_votes(&mut self, term: u64, pre_vote: bool, transfer: bool) -> Result<(), Error> {
        let request = VoteRequest {
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term()?,
            leadership_transfer: transfer,
        };
        let voters: Vec<NodeId> = self
            .membership
            .voters
            .iter()
            .copied()
            .filter(|&id| id != self.id)
            .collect();
        for id in voters {
            let body = if pre_vote {
                MessageBody::PreVote(request)
            } else {
                MessageBody::Vote(request)
            };
            self.send(id, term, body);
        }
        Ok(())
    }

    /// Counts a vote; returns true when the election ended (won or lost).
    ///
    /// # Errors
    /// A store failure.
    pub(super) fn record_vote(
        &mut self,
        from: NodeId,
        granted: bool,
        pre_vote: bool,
    ) -> Result<bool, Error> {
        self.votes.entry(from).or_insert(granted);
        match quorum::vote_result(&self.membership, |id| self.votes.get(&id).copied()) {
            VoteResult::Won if pre_vote => {
                self.become_candidate();
                self.campaign_after_pre_vote()?;
            }
            VoteResult::Won => self.become_leader(),
            VoteResult::Lost => self.become_follower(self.term, NO_NODE),
            VoteResult::Pending => return Ok(false),
        }
        Ok(true)
    }

    /// The real election after a won pre-vote (already a candidate).
    fn campaign_after_pre_vote(&mut self) -> Result<(), Error> {
        if self.record_vote(self.id, true, false)? {
            return Ok(());
        }
        self.request_votes(self.term, false, false)
    }

    /// Section 5.2 and 5.4.1: one vote per term, only for an up-to-date log.
    pub(super) fn handle_vote_request(
        &mut self,
        from: NodeId,
        term: u64,
        pre_vote: bool,
        req: VoteRequest,
    ) -> Result<(), Error> {
        let can_vote = self.vote == from
            || (self.vote == NO_NODE && self.leader == NO_NODE)
            || (pre_vote && term > self.term);
        let up_to_date = self.opts.vote_for_stale_logs()
            || self
                .log
                .is_up_to_date(req.last_log_index, req.last_log_term)?;
        let granted = can_vote && up_to_date;
        if pre_vote {
            let reply_term = if granted { term } else { self.term };
            self.send(
                from,
                reply_term,
                MessageBody::PreVoteResponse(VoteResponse { granted }),
            );
        } else {
            if granted {
                self.election_elapsed = 0;
                self.vote = from;
            }
            self.send(
                from,
                self.term,
                MessageBody::VoteResponse(VoteResponse { granted }),
            );
        }
        Ok(())
    }

    /// Advances logical time by one tick.
    ///
    /// # Errors
    /// A store failure.
    pub fn tick(&mut self) -> Result<(), Error> {
        if self.role == Role::Leader {
            return self.tick_leader();
        }
        self.election_elapsed += 1;
        if self.promotable() && self.election_elapsed >= self.randomized_election_ticks {
            self.campaign(false)?;
        }
        Ok(())
    }

    fn tick_leader(&mut self) -> Result<(), Error> {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.opts.election_ticks {
            self.election_elapsed = 0;
            if self.opts.check_quorum && !self.quorum_active() {
                log::debug!("node {} lost contact with a majority, steps down", self.id);
                self.become_follower(self.term, NO_NODE);
                return Ok(());
            }
            // Thesis section 3.10: give up a transfer after an election timeout.
            self.transferee = NO_NODE;
        }
        if self.heartbeat_elapsed >= self.opts.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat(self.read_only.pending_context());
        }
        Ok(())
    }

    /// Whether a majority was heard from since the last call; resets the marks.
    fn quorum_active(&mut self) -> bool {
        let id = self.id;
        let active = quorum::has_majority(&self.membership, |peer| {
            peer == id || self.progress.get(&peer).is_some_and(|pr| pr.recent_active)
        });
        for (&peer, pr) in self.progress.iter_mut() {
            pr.recent_active = peer == id;
        }
        active
    }
}
