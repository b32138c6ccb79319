//! Log replication (sections 5.3 and 5.4.2, Figure 13): appends and snapshot chunks
//! on both sides, flow control through [`Progress`], and the commit rule.
//!
//! Invariants: a leader commits by counting only entries of its own term (unless the
//! `sim-faults` switch says otherwise); it counts itself only up to what the driver
//! persisted; an append below the follower's commit index is answered with that index,
//! never applied over committed entries.

use super::{Raft, Role};
use crate::raft::error::{Error, StoreError};
use crate::raft::message::{
    AppendRequest, AppendResponse, Heartbeat, MessageBody, NodeId, SnapshotChunk, SnapshotMeta,
    SnapshotResponse,
};
use crate::raft::progress::{LostLog, ProgressState};
use crate::raft::quorum;
use crate::raft::store::LogStore;

/// Appends one flush sends a follower at most (each up to `message_bytes_max`): a
/// follower far behind (a member just past its snapshot install) is caught up over many
/// turns, more going out as its acknowledgements come back (each sets `needs_flush`),
/// rather than the whole inflight window being read from the log and encoded in one
/// turn (seconds for millions of entries). New entries fit one append, so a follower
/// that keeps up gets one append per flush either way.
const APPENDS_PER_FLUSH_MAX: usize = 4;

impl<S: LogStore> Raft<S> {
    /// Figure 2, AppendEntries receiver, with the conflict hint of section 5.3.
    pub(super) fn handle_append(&mut self, from: NodeId, req: AppendRequest) -> Result<(), Error> {
        self.election_elapsed = 0;
        self.leader = from;
        let committed = self.log.committed;
        let response = if req.prev_log_index < committed {
            AppendResponse {
                reject: false,
                index: committed,
                conflict_term: 0,
                conflict_index: 0,
            }
        } else {
            match self.log.maybe_append(
                req.prev_log_index,
                req.prev_log_term,
                req.commit,
                &req.entries,
            )? {
                Some((last_new, rewritten_from)) => {
                    if let Some(from_index) = rewritten_from {
                        let offset = (from_index - req.prev_log_index - 1) as usize;
                        self.on_appended(from_index, &req.entries[offset..]);
                    }
                    AppendResponse {
                        reject: false,
                        index: last_new,
                        conflict_term: 0,
                        conflict_index: 0,
                    }
                }
                None => {
                    let hint = req.prev_log_index.min(self.log.last_index());
                    let (conflict_index, conflict_term) =
                        self.log.find_conflict_by_term(hint, req.prev_log_term);
                    AppendResponse {
                        reject: true,
                        index: req.prev_log_index,
                        conflict_term,
                        conflict_index,
                    }
                }
            }
        };
        self.send(from, self.term, MessageBody::AppendResponse(response));
        Ok(())
    }

    /// Figure 13 receiver, with offset-based resumption: the answer always says
    /// how many bytes of this snapshot are held, so a lost chunk is resent. The core
    /// holds no data: each chunk that continues the transfer goes to the driver
    /// (`Ready::snapshot_chunks`), which writes it to disk, and the answer goes out
    /// after the driver's sync (`messages_after_sync`), so it acknowledges only written
    /// bytes; the last chunk completes the install (`Ready::snapshot`). A chunk of
    /// another snapshot at offset 0 starts a new transfer (the unwritten chunks of the
    /// old one are dropped); at any other offset it is answered with offset 0.
    pub(super) fn handle_snapshot_chunk(&mut self, from: NodeId, chunk: SnapshotChunk) {
        let (index, term) = (chunk.meta.index, chunk.meta.term);
        if index <= self.log.committed || self.log.match_term(index, term) {
            // The log already holds the snapshot's last entry (Figure 13 step 6): it is
            // committed, and the entries after it stay.
            self.log.commit_to(index);
            self.respond_snapshot(from, index, chunk.offset, true);
            return;
        }
        let held = match &self.incoming_snapshot {
            Some((meta, held)) if *meta == chunk.meta => *held,
            _ => 0,
        };
        if chunk.offset != held {
            self.respond_snapshot(from, index, held, false);
            return;
        }
        if held == 0 {
            self.snapshot_chunks.clear();
        }
        let offset = held + chunk.data.len() as u64;
        let done = chunk.done;
        let meta = chunk.meta.clone();
        self.snapshot_chunks.push(chunk);
        if done {
            self.incoming_snapshot = None;
            self.restore(meta);
        } else {
            self.incoming_snapshot = Some((meta, offset));
        }
        self.respond_snapshot(from, index, offset, done);
    }

    fn respond_snapshot(&mut self, to: NodeId, index: u64, offset: u64, done: bool) {
        let response = SnapshotResponse {
            index,
            offset,
            done,
        };
        self.send(
            to,
            self.term,
            MessageBody::InstallSnapshotResponse(response),
        );
    }

    /// Installs a completely received snapshot, dropping the log (Figure 13 steps
    /// 7-8; step 6, a log that holds its last entry, is checked on each chunk).
    fn restore(&mut self, meta: SnapshotMeta) {
        self.config_history = vec![(meta.index, meta.config.clone())];
        self.set_membership(meta.config.clone());
        self.log.restore(meta);
    }

    pub(super) fn handle_append_response(
        &mut self,
        from: NodeId,
        r: AppendResponse,
    ) -> Result<(), Error> {
        if r.reject {
            let hint = if r.conflict_term > 0 {
                self.log
                    .find_conflict_by_term(r.conflict_index, r.conflict_term)
                    .0
            } else {
                r.conflict_index
            };
            let Some(pr) = self.progress.get_mut(&from) else {
                return Ok(());
            };
            if pr.note_lost_log(r.index, r.conflict_index) {
                let lost = LostLog {
                    id: from,
                    acknowledged: pr.match_index,
                    holds: r.conflict_index,
                };
                self.lost_logs.push(lost);
            }
            if pr.maybe_decrease_to(r.index, hint) {
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
                self.send_append(from, false)?;
            }
            return Ok(());
        }
        let Some(pr) = self.progress.get_mut(&from) else {
            return Ok(());
        };
        if !pr.maybe_update(r.index) {
            return Ok(());
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot if pr.match_index >= pr.snapshot_index => pr.become_probe(),
            ProgressState::Snapshot => {}
            ProgressState::Replicate => pr.inflights.free_to(r.index),
        }
        let caught_up = pr.match_index == self.log.last_index();
        if !self.maybe_commit()? && !self.membership.contains(from) {
            self.announce_removal();
        }
        self.needs_flush = true;
        if from == self.transferee && caught_up {
            self.send(from, self.term, MessageBody::TimeoutNow);
        }
        Ok(())
    }

    pub(super) fn handle_heartbeat_response(
        &mut self,
        from: NodeId,
        context: u64,
    ) -> Result<(), Error> {
        if context & super::membership::RELEASE_CONTEXT_BIT != 0 {
            if context == self.release_context() && !self.membership.contains(from) {
                self.progress.remove(&from);
                log::info!(
                    "node {}: {from} knows of its removal at {}, no longer replicated to",
                    self.id,
                    self.membership_index()
                );
            }
            return Ok(());
        }
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return Ok(());
        };
        pr.probe_sent = false;
        if pr.state == ProgressState::Replicate && pr.inflights.full() {
            // An append may have been lost; make room so a probe can go out.
            pr.inflights.reset();
        }
        if pr.state == ProgressState::Snapshot {
            self.send_snapshot_chunk(from)?;
        } else if pr.match_index < last {
            self.send_append(from, true)?;
        }
        if context != 0 {
            for (request, index) in self.read_only.ack(&self.membership, self.id, from, context) {
                self.respond_read(request, index);
            }
        }
        Ok(())
    }

    pub(super) fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        r: SnapshotResponse,
    ) -> Result<(), Error> {
        let Some(pr) = self.progress.get_mut(&from) else {
            return Ok(());
        };
        if pr.state != ProgressState::Snapshot || r.index != pr.snapshot_index {
            return Ok(());
        }
        if r.done {
            pr.maybe_update(r.index);
            pr.become_probe();
            self.maybe_commit()?;
            self.needs_flush = true;
            return Ok(());
        }
        if r.offset == pr.snapshot_offset {
            return Ok(()); // a duplicate answer; the heartbeat path resends if lost
        }
        pr.snapshot_offset = r.offset;
        self.send_snapshot_chunk(from)
    }

    /// Section 5.3/5.4.2: commit the majority match index if it is of this term.
    fn maybe_commit(&mut self) -> Result<bool, Error> {
        let majority = quorum::committed_index(&self.membership, |id| {
            self.progress.get(&id).map_or(0, |pr| pr.match_index)
        });
        let index = majority.min(self.log.last_index());
        let previous = self.log.committed;
        if index <= previous {
            return Ok(false);
        }
        if !self.opts.commit_old_terms() && self.log.term(index)? != self.term {
            return Ok(false);
        }
        self.log.commit_to(index);
        self.needs_flush = true;
        if self.committed_in_current_term() {
            for request in std::mem::take(&mut self.reads_before_noop) {
                self.handle_read_request(request);
            }
        }
        // The removal just committed: tell the removed servers that hold it (later
        // acks of theirs and every heartbeat round repeat it until they answer).
        if (previous + 1..=index).contains(&self.membership_index()) {
            self.announce_removal();
        }
        self.maybe_step_down_removed()?;
        Ok(true)
    }

    pub(super) fn committed_in_current_term(&self) -> bool {
        self.log.match_term(self.log.committed, self.term)
    }

    /// Sends the next append to `to` unless its progress is paused; returns
    /// whether a message went out. Falls back to a snapshot when the entries
    /// it needs are compacted.
    pub(super) fn send_append(&mut self, to: NodeId, send_if_empty: bool) -> Result<bool, Error> {
        let Some(pr) = self.progress.get(&to) else {
            return Ok(false);
        };
        if to == self.id || pr.is_paused() {
            return Ok(false);
        }
        let (next, last) = (pr.next_index, self.log.last_index());
        let prev_term = self.log.term(next - 1);
        let entries = self
            .log
            .entries(next, last + 1, self.opts.message_bytes_max);
        match (prev_term, entries) {
            (Ok(prev_log_term), Ok(entries)) => {
                if entries.is_empty() && !send_if_empty {
                    return Ok(false);
                }
                if let Some(pr) = self.progress.get_mut(&to) {
                    pr.sent_append(entries.last().map(|e| e.index));
                }
                let req = AppendRequest {
                    prev_log_index: next - 1,
                    prev_log_term,
                    entries,
                    commit: self.log.committed,
                };
                self.send(to, self.term, MessageBody::Append(req));
                Ok(true)
            }
            (Err(StoreError::Compacted(_)), _) | (_, Err(StoreError::Compacted(_))) => {
                self.send_snapshot_chunk(to)?;
                Ok(true)
            }
            (Err(error), _) | (_, Err(error)) => Err(error.into()),
        }
    }

    /// Sends the chunk at the acknowledged offset of the latest snapshot,
    /// switching `to` to the snapshot state if needed.
    fn send_snapshot_chunk(&mut self, to: NodeId) -> Result<(), Error> {
        let compacted = self.log.store.compacted().0;
        if self
            .outgoing_snapshot
            .as_ref()
            .is_none_or(|(meta, _)| meta.index != compacted)
        {
            let store = &self.log.store;
            self.outgoing_snapshot = Some((store.snapshot_meta(), store.snapshot_bytes()));
        }
        let Some((meta, len)) = &self.outgoing_snapshot else {
            return Ok(());
        };
        let Some(pr) = self.progress.get_mut(&to) else {
            return Ok(());
        };
        if pr.state != ProgressState::Snapshot || pr.snapshot_index != meta.index {
            pr.become_snapshot(meta.index);
        }
        let len = *len;
        let offset = pr.snapshot_offset.min(len);
        let end = offset
            .saturating_add(self.opts.snapshot_chunk_bytes_max)
            .min(len);
        let data = self.log.store.snapshot_chunk(offset, end - offset)?;
        let chunk = SnapshotChunk {
            meta: meta.clone(),
            offset,
            done: offset + data.len() as u64 == len,
            data,
        };
        self.send(to, self.term, MessageBody::InstallSnapshot(chunk));
        Ok(())
    }

    /// A heartbeat to every peer; those whose removal committed and who hold
    /// it get the release context instead (see [`Raft::announce_removal`]).
    pub(super) fn broadcast_heartbeat(&mut self, read_context: u64) {
        let departing = self.departing();
        let release_context = self.release_context();
        let peers: Vec<(NodeId, u64)> = self
            .progress
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(&id, pr)| (id, pr.match_index.min(self.log.committed)))
            .collect();
        for (id, commit) in peers {
            let context = if departing.iter().any(|(d, _)| *d == id) {
                release_context
            } else {
                read_context
            };
            self.send(
                id,
                self.term,
                MessageBody::Heartbeat(Heartbeat { commit, context }),
            );
        }
    }

    /// Whether [`Raft::flush`] has work.
    pub fn needs_flush(&self) -> bool {
        self.role == Role::Leader && (self.needs_flush || self.read_only.has_open())
    }

    /// Sends what proposals, commits and reads since the last flush call for:
    /// one append per follower covering all new entries (batching), and one
    /// heartbeat round for all the reads queued meanwhile.
    ///
    /// # Errors
    /// A store failure.
    pub fn flush(&mut self) -> Result<(), Error> {
        if self.role != Role::Leader {
            return Ok(());
        }
        if let Some(context) = self.read_only.start_round(self.log.committed) {
            self.broadcast_heartbeat(context);
        }
        if std::mem::take(&mut self.needs_flush) {
            let peers: Vec<NodeId> = self
                .progress
                .keys()
                .copied()
                .filter(|&id| id != self.id)
                .collect();
            for id in peers {
                let mut send_if_empty = true;
                for _ in 0..APPENDS_PER_FLUSH_MAX {
                    if !self.send_append(id, send_if_empty)? {
                        break;
                    }
                    send_if_empty = false;
                }
            }
        }
        Ok(())
    }

    /// The driver persisted everything handed out: the leader may now count
    /// itself for those entries.
    ///
    /// # Errors
    /// A store failure.
    pub fn on_persisted(&mut self) -> Result<(), Error> {
        if self.role != Role::Leader {
            return Ok(());
        }
        let persisted = self.log.persisted;
        if let Some(pr) = self.progress.get_mut(&self.id)
            && pr.maybe_update(persisted)
        {
            self.maybe_commit()?;
        }
        Ok(())
    }
}
