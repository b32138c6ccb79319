//! The membership nemesis: which single-server change the simulation asks the leader
//! for (thesis chapter 4). Spare nodes start empty, as a node started with `--join`
//! does (they also stand for a replacement whose disk was wiped: a fresh id, an empty
//! store); a change adds one as a learner, promotes a learner, or removes a voter, the
//! leader itself half of the time. Removed ids never come back, so no node is re-added
//! with a state it should not have, and the cluster never shrinks below two voters.
//!
//! Every choice draws from the simulation's one RNG, in a fixed order.

use std::collections::BTreeSet;

use raftkv::raft::rng::Rng;
use raftkv::raft::{ConfigChange, Configuration, NodeId};

/// What the nemesis has done to the membership so far.
#[derive(Debug, Default)]
pub struct Changes {
    /// Spares proposed as learners (each at most once).
    pub added: BTreeSet<NodeId>,
    /// Removals proposed.
    pub removed: u64,
}

impl Changes {
    /// The change to propose on `leader`, whose configuration in force is `config`, or
    /// `None` when nothing fits. `spares` are the ids started empty.
    pub fn pick(
        &self,
        rng: &mut Rng,
        leader: NodeId,
        config: &Configuration,
        spares: &[NodeId],
    ) -> Option<ConfigChange> {
        if let Some(&learner) = config.learners.first() {
            return Some(ConfigChange::PromoteLearner(learner));
        }
        let spare = spares.iter().copied().find(|id| !self.added.contains(id));
        let may_remove = self.removed < spares.len() as u64 && config.voters.len() >= 3;
        match (spare, may_remove, rng.range(0, 2)) {
            (Some(id), false, _) | (Some(id), true, 0) => Some(ConfigChange::AddLearner(id)),
            (_, true, _) => {
                let victim = if rng.range(0, 2) == 0 {
                    leader
                } else {
                    config.voters[rng.range(0, config.voters.len() as u64) as usize]
                };
                Some(ConfigChange::RemoveNode(victim))
            }
            (None, false, _) => None,
        }
    }

    /// Records a proposal the leader accepted.
    pub fn on_accepted(&mut self, change: ConfigChange) {
        match change {
            ConfigChange::AddLearner(id) | ConfigChange::AddVoter(id) => {
                self.added.insert(id);
            }
            ConfigChange::RemoveNode(_) => self.removed += 1,
            ConfigChange::PromoteLearner(_) => {}
        }
    }
}
