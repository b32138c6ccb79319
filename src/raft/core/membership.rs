//! Membership (thesis chapter 4): the configuration history from the compaction
//! point on, single-server changes, and releasing removed servers.
//!
//! Invariants: `config_history` is sorted by index and its last element is the
//! membership in force (the last `Config` entry appended, committed or not); a new
//! change is refused until the previous one and an entry of the leader's term have
//! committed; a removed server is replicated to until it acknowledges a heartbeat
//! that carries the release context of its removal.

use super::{Raft, Role};
use crate::raft::error::Error;
use crate::raft::message::{
    ConfigChange, Configuration, Entry, EntryKind, Heartbeat, MessageBody, NO_NODE, NodeId,
};
use crate::raft::progress::Progress;
use crate::raft::store::LogStore;

/// Set in the context of a heartbeat that tells a removed server its removal
/// committed (ReadIndex rounds, the other contexts, are small counters).
pub(super) const RELEASE_CONTEXT_BIT: u64 = 1 << 63;

impl<S: LogStore> Raft<S> {
    /// Reads the `Config` entries after the compaction point (restart only).
    pub(super) fn load_config_entries(&mut self) -> Result<(), Error> {
        let (mut next, last) = (self.log.first_index(), self.log.last_index());
        while next <= last {
            let batch = self
                .log
                .entries(next, last + 1, self.opts.message_bytes_max)?;
            next += batch.len() as u64;
            self.on_appended(u64::MAX, &batch);
        }
        Ok(())
    }

    /// Tracks `Config` entries among `entries`, appended after a rewrite of the
    /// log from index `from` (configurations at or after it are forgotten first).
    pub(super) fn on_appended(&mut self, from: u64, entries: &[Entry]) {
        let before = self.config_history.len();
        self.config_history.retain(|(index, _)| *index < from);
        let mut changed = self.config_history.len() != before;
        for entry in entries.iter().filter(|e| e.kind == EntryKind::Config) {
            match Configuration::decode(&entry.data) {
                Ok(config) => {
                    self.config_history.push((entry.index, config));
                    changed = true;
                }
                Err(error) => log::error!(
                    "node {}: bad config entry {}: {error}",
                    self.id,
                    entry.index
                ),
            }
        }
        if changed {
            let config = self
                .config_history
                .last()
                .map(|(_, c)| c.clone())
                .unwrap_or_default();
            self.set_membership(config);
        }
    }

    /// Puts `config` in force. A leader keeps replicating to the members it
    /// drops (their progress stays, outside every quorum) until they hold the
    /// removal and know its commit ([`Raft::announce_removal`]), so a removed
    /// server learns that it was removed and its driver can stop it.
    pub(super) fn set_membership(&mut self, config: Configuration) {
        let next = self.log.last_index() + 1;
        let inflight_count_max = self.opts.inflight_count_max;
        // A leader keeps every server it tracks: those the new configuration
        // drops, and those an earlier one dropped that have not been released.
        let leading = self.role == Role::Leader;
        self.progress
            .retain(|id, _| leading || config.contains(*id));
        for id in config.members() {
            if self.membership.contains(id) {
                self.progress
                    .entry(id)
                    .or_insert_with(|| Progress::new(next, inflight_count_max));
            } else {
                // A member added (again) is a new server: the progress of one removed
                // under this id (kept until it learned of its removal) says nothing of
                // its log, and its match index would never let it get a snapshot.
                self.progress
                    .insert(id, Progress::new(next, inflight_count_max));
            }
        }
        self.membership = config;
        if self.role == Role::Leader {
            self.needs_flush = true;
        }
    }

    /// Index of the `Config` entry in force (the snapshot's index, or 0, when
    /// the configuration predates the log).
    pub fn membership_index(&self) -> u64 {
        self.config_history.last().map_or(0, |(index, _)| *index)
    }

    /// The servers the configuration in force removed that hold the removal
    /// while it is committed, each with the commit index to tell it (at least
    /// the removal's index): they only need to learn that commit.
    pub(super) fn departing(&self) -> Vec<(NodeId, u64)> {
        let config_index = self.membership_index();
        if self.role != Role::Leader || self.log.committed < config_index {
            return Vec::new();
        }
        self.progress
            .iter()
            .filter(|(id, pr)| {
                **id != self.id && !self.membership.contains(**id) && pr.match_index >= config_index
            })
            .map(|(&id, pr)| (id, pr.match_index.min(self.log.committed)))
            .collect()
    }

    /// Tells the servers the configuration in force removed that their removal
    /// committed, once they hold it: a heartbeat carrying a commit index that
    /// covers it and the context [`Raft::release_context`]. The leader lets each
    /// go when it answers that heartbeat ([`Raft::handle_heartbeat_response`]);
    /// until then every heartbeat round repeats it, so a lost one is resent and a
    /// removed server does learn that it was removed (its driver then stops it).
    pub(super) fn announce_removal(&mut self) {
        let context = self.release_context();
        for (id, commit) in self.departing() {
            let body = MessageBody::Heartbeat(Heartbeat { commit, context });
            self.send(id, self.term, body);
        }
    }

    /// The heartbeat context that tells a removed server its removal committed:
    /// the index of the configuration in force with the top bit set, apart from
    /// the ReadIndex round numbers (small counters) and unique to this removal.
    pub(super) fn release_context(&self) -> u64 {
        RELEASE_CONTEXT_BIT | self.membership_index()
    }

    /// Remembers whether the configuration in force at the commit index lists
    /// this node (the driver calls it after each `Ready`, via `advance`).
    pub(crate) fn note_membership(&mut self) {
        if self
            .config_at(self.log.committed)
            .is_some_and(|config| config.contains(self.id))
        {
            self.been_member = true;
        }
    }

    /// The index of the committed configuration that removed this node, once
    /// this node knows it: the configuration in force does not list it, is
    /// committed, and a committed configuration before it did list it (one still
    /// in its log, or one this node held committed earlier). A
    /// configuration that listed it but was never committed (a truncated
    /// `AddLearner`) does not count, nor does a snapshot from before its
    /// addition that a joining node installs: neither means it was removed.
    pub fn removed_at(&self) -> Option<u64> {
        let index = self.membership_index();
        if self.membership.contains(self.id)
            || self.membership.voters.is_empty()
            || self.log.committed < index
        {
            return None;
        }
        // Every configuration in the history precedes the committed one in force,
        // so it is committed too.
        let listed_before = self
            .config_history
            .iter()
            .any(|(_, config)| config.contains(self.id));
        (listed_before || self.been_member).then_some(index)
    }

    /// The membership in force at `index`, if still known.
    pub fn config_at(&self, index: u64) -> Option<&Configuration> {
        self.config_history
            .iter()
            .rev()
            .find(|(at, _)| *at <= index)
            .map(|(_, c)| c)
    }

    pub(super) fn forget_configs_before(&mut self, index: u64) {
        let keep_from = self
            .config_history
            .iter()
            .rposition(|(at, _)| *at <= index)
            .unwrap_or(0);
        self.config_history.drain(..keep_from);
    }

    /// Proposes a single-server membership change, effective once appended.
    ///
    /// # Errors
    /// [`Error::ConfigChangePending`] until the previous change committed,
    /// [`Error::InvalidConfigChange`], or the errors of [`Raft::propose`].
    pub fn propose_config_change(&mut self, change: ConfigChange) -> Result<u64, Error> {
        self.propose_config_change_with_info(change, Vec::new())
    }

    /// [`Raft::propose_config_change`], attaching `info` (opaque driver data such
    /// as addresses; empty for none) to the member the change adds or keeps.
    ///
    /// # Errors
    /// As [`Raft::propose_config_change`].
    pub fn propose_config_change_with_info(
        &mut self,
        change: ConfigChange,
        info: Vec<u8>,
    ) -> Result<u64, Error> {
        if self.role == Role::Leader && self.pending_config_index > self.log.committed {
            return Err(Error::ConfigChangePending);
        }
        let config = self
            .membership
            .apply(change)
            .ok_or(Error::InvalidConfigChange)?;
        let config = match change {
            ConfigChange::AddVoter(id) | ConfigChange::AddLearner(id) if !info.is_empty() => {
                config.with_info(id, info)
            }
            _ => config,
        };
        if let ConfigChange::PromoteLearner(id) = change
            && let Some(lag) = self.learner_lag(id)
            && lag > self.opts.promote_distance_max
        {
            let last_index = self.log.last_index();
            return Err(Error::LearnerBehind {
                id,
                match_index: last_index - lag,
                last_index,
            });
        }
        let index = self.propose(EntryKind::Config, config.encode().into())?;
        self.pending_config_index = index;
        Ok(index)
    }

    /// Thesis section 4.2.2: a leader that removed itself keeps managing the
    /// cluster (without counting itself) until the configuration without it
    /// commits, then steps down. Before it does, it sends the new commit index
    /// to everyone and a TimeoutNow to the most up-to-date voter, so a successor
    /// is elected at once instead of after an election timeout (section 3.10).
    /// As a follower outside the configuration it never campaigns again, and no
    /// leader sends to it, so it sends no more heartbeats or appends.
    pub(super) fn maybe_step_down_removed(&mut self) -> Result<(), Error> {
        let config_index = self.membership_index();
        if self.membership.is_voter(self.id) || config_index > self.log.committed {
            return Ok(());
        }
        self.flush()?;
        let last = self.log.last_index();
        let successor = self
            .membership
            .voters
            .iter()
            .filter_map(|id| self.progress.get(id).map(|pr| (pr.match_index, *id)))
            .filter(|&(match_index, _)| match_index == last)
            .max();
        if let Some((_, id)) = successor {
            self.send(id, self.term, MessageBody::TimeoutNow);
        }
        log::info!(
            "node {} committed its own removal at {config_index}, steps down",
            self.id
        );
        self.become_follower(self.term, NO_NODE);
        Ok(())
    }

    /// Entries the learner `id` lacks compared with the leader's last index;
    /// `None` unless this node leads and `id` is a learner.
    pub fn learner_lag(&self, id: NodeId) -> Option<u64> {
        if self.role != Role::Leader || !self.membership.is_learner(id) {
            return None;
        }
        let last = self.log.last_index();
        let match_index = self.progress.get(&id).map_or(0, |pr| pr.match_index);
        Some(last - match_index.min(last))
    }

    /// The configured promotion distance ([`Config::promote_distance_max`](super::Config::promote_distance_max)).
    pub fn promote_distance_max(&self) -> u64 {
        self.opts.promote_distance_max
    }
}
