//! The safety invariants of Raft (Figure 3 of the paper), checked after every step of
//! the simulation from what the nodes expose: their role, term, commit and applied
//! indexes, the entries they append and the entries they apply.
//!
//! - Election Safety: at most one leader per term, over the whole run.
//! - Log Matching: an (index, term) pair identifies one entry payload and one term of
//!   the entry before it; by induction two logs holding the same (index, term) are equal
//!   up to there. Checked on every batch of entries a node appends.
//! - Leader Completeness: every committed entry is in the log of every leader of a later
//!   term (checked when a leader appears, and when an entry is first known committed).
//!   An entry is committed in some term at most the highest term any node had when it
//!   was first applied; only leaders of terms above that bound are checked, which is
//!   sound (a late leader of an older term may rightly lack an entry committed later).
//! - State Machine Safety: no two nodes apply different entries at one index.
//! - Per node: `applied <= committed <= last_index`, and the term never goes back (not
//!   even across a crash, since the term is persisted before it is acted upon).
//! - Commit quorum, in the configuration in force: when a leader advances its commit
//!   index to `c` in its term, a majority of the voters of its configuration in force
//!   (the latest one it appended, thesis section 4.1) hold entry `c` on their durable
//!   stores. Learners and removed nodes never count, and neither does a leader that
//!   is removing itself.

use std::collections::{BTreeMap, btree_map};

use raftkv::raft::core::Raft;
use raftkv::raft::{Entry, LogStore, MemStore, NodeId, Role, StoreError};

/// An FNV-1a hash of an entry's kind and payload: equal entries, equal hashes.
pub fn entry_hash(entry: &Entry) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in std::iter::once(&(entry.kind as u8)).chain(entry.data.iter()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Everything the checks remember across steps.
#[derive(Debug, Default)]
pub struct Invariants {
    /// The one leader of each term seen so far.
    leaders: BTreeMap<u64, NodeId>,
    /// (index, term) -> (payload hash, term of the entry before it).
    appended: BTreeMap<(u64, u64), (u64, Option<u64>)>,
    /// index -> (term, payload hash) of the entry applied there, and the highest term
    /// of any node when it was first applied (it was committed in a term at most that).
    committed: BTreeMap<u64, (u64, u64, u64)>,
    /// The highest term each node has had.
    terms: BTreeMap<NodeId, u64>,
}

impl Invariants {
    /// Log Matching, for the entries a node is about to append; `prev_term` is the term
    /// of the entry before the first one in that node's log (`None` if compacted away).
    pub fn on_append(
        &mut self,
        node: NodeId,
        entries: &[Entry],
        mut prev_term: Option<u64>,
    ) -> Result<(), String> {
        for entry in entries {
            let seen = (entry_hash(entry), prev_term);
            match self.appended.entry((entry.index, entry.term)) {
                btree_map::Entry::Vacant(slot) => {
                    slot.insert(seen);
                }
                btree_map::Entry::Occupied(mut slot) => {
                    let (hash, prev) = *slot.get();
                    let prev_differs = matches!((prev, prev_term), (Some(a), Some(b)) if a != b);
                    if hash != seen.0 || prev_differs {
                        return Err(format!(
                            "Log Matching: node {node} appends ({}, {}) unlike another log \
                             (payload {hash:x} vs {:x}, previous term {prev:?} vs {prev_term:?})",
                            entry.index, entry.term, seen.0
                        ));
                    }
                    if prev.is_none() {
                        slot.get_mut().1 = prev_term;
                    }
                }
            }
            prev_term = Some(entry.term);
        }
        Ok(())
    }

    /// State Machine Safety, for an entry a node applies. Returns whether the entry was
    /// not known committed before (the caller then checks the current leaders hold it).
    pub fn on_apply(&mut self, node: NodeId, entry: &Entry) -> Result<bool, String> {
        let applied = (entry.term, entry_hash(entry));
        let term_max = self.terms.values().copied().max().unwrap_or(0);
        match self.committed.entry(entry.index) {
            btree_map::Entry::Vacant(slot) => {
                slot.insert((applied.0, applied.1, term_max));
                Ok(true)
            }
            btree_map::Entry::Occupied(slot) if (slot.get().0, slot.get().1) == applied => {
                Ok(false)
            }
            btree_map::Entry::Occupied(slot) => Err(format!(
                "State Machine Safety: node {node} applies (term {}, payload {:x}) at index {} \
                 where another node applied (term {}, payload {:x})",
                applied.0,
                applied.1,
                entry.index,
                slot.get().0,
                slot.get().1
            )),
        }
    }

    /// The per-node checks, Election Safety, and Leader Completeness for a new leader.
    pub fn check_node<S: LogStore>(&mut self, raft: &Raft<S>) -> Result<(), String> {
        let id = raft.id;
        let previous = self.terms.entry(id).or_insert(0);
        if raft.term < *previous {
            return Err(format!(
                "term of node {id} went back from {previous} to {}",
                raft.term
            ));
        }
        *previous = raft.term;
        let log = &raft.log;
        if !(log.applied <= log.committed && log.committed <= log.last_index()) {
            return Err(format!(
                "node {id}: applied {} <= committed {} <= last index {} does not hold",
                log.applied,
                log.committed,
                log.last_index()
            ));
        }
        if raft.role != Role::Leader {
            return Ok(());
        }
        match self.leaders.entry(raft.term) {
            btree_map::Entry::Occupied(slot) if *slot.get() == id => Ok(()),
            btree_map::Entry::Occupied(slot) => Err(format!(
                "Election Safety: nodes {} and {id} both lead term {}",
                slot.get(),
                raft.term
            )),
            btree_map::Entry::Vacant(slot) => {
                slot.insert(id);
                self.committed
                    .iter()
                    .filter(|(_, (_, _, bound))| *bound < raft.term)
                    .try_for_each(|(&index, &(term, _, _))| leader_holds(raft, index, term))
            }
        }
    }

    /// Leader Completeness for an entry just known committed: `raft`, if it leads a
    /// later term, must hold it.
    pub fn check_committed_in<S: LogStore>(
        &self,
        raft: &Raft<S>,
        index: u64,
    ) -> Result<(), String> {
        match self.committed.get(&index) {
            Some(&(term, _, bound)) if raft.role == Role::Leader && raft.term > bound => {
                leader_holds(raft, index, term)
            }
            _ => Ok(()),
        }
    }
}

/// Commit quorum: `raft` (a leader, or one that just stepped down after committing its
/// own removal, in the same term) advanced its commit index; `durable(id)` is node
/// `id`'s durable store.
pub fn check_commit_quorum<'a, S: LogStore>(
    raft: &Raft<S>,
    durable: impl Fn(NodeId) -> &'a MemStore,
) -> Result<(), String> {
    let index = raft.log.committed;
    let term = raft
        .log
        .term(index)
        .map_err(|e| format!("node {}: commit {index} unreadable: {e}", raft.id))?;
    let config = &raft.membership;
    let holders: Vec<NodeId> = config
        .voters
        .iter()
        .copied()
        .filter(|&id| {
            let store = durable(id);
            store.compacted().0 >= index || store.term(index) == Ok(term)
        })
        .collect();
    if holders.len() < config.voters.len() / 2 + 1 {
        return Err(format!(
            "Commit quorum: leader {} of term {} committed ({index}, {term}) held durably \
             only by {holders:?} of voters {:?}",
            raft.id, raft.term, config.voters
        ));
    }
    Ok(())
}

fn leader_holds<S: LogStore>(raft: &Raft<S>, index: u64, term: u64) -> Result<(), String> {
    match raft.log.term(index) {
        Ok(found) if found == term => Ok(()),
        Err(StoreError::Compacted(_)) => Ok(()),
        found => Err(format!(
            "Leader Completeness: leader {} of term {} has {found:?} at index {index}, \
             committed with term {term}",
            raft.id, raft.term
        )),
    }
}
