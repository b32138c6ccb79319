//! What a replica tells about itself: the `Status` and `Metrics` replies, where it
//! stands in the membership, and the peers the driver should keep links to.

use std::net::SocketAddr;

use super::{Replica, ReplicaLog, SnapshotWriter};
use crate::codec::client::{Member as StatusMember, Role as StatusRole, Status};
use crate::raft::message::NodeId;
use crate::raft::{self, Role};
use crate::replica::members::{self, MemberAddrs};

/// A peer the node wants a link to, with its address when the configuration or
/// the config file gives one (`None`: keep the link's address, or use the one the
/// peer announced when it dialed us).
pub type WantedPeer = (NodeId, Option<SocketAddr>);

impl<L: ReplicaLog, W: SnapshotWriter> Replica<L, W> {
    /// The index of the committed configuration that removed this node, once the
    /// node knows it (the driver then stops it: it is no longer a member). Only a
    /// committed removal of a node that a committed configuration listed counts
    /// ([`raft::RawNode::removed_at`]).
    pub fn removed_at(&self) -> Option<u64> {
        self.raw.removed_at()
    }

    /// Where this node stands: voter, learner, joining (empty membership) or removed.
    pub fn member_state(&self) -> raft::MemberState {
        self.raw.status().member_state()
    }

    /// The peers to keep links to, when that set may have changed since the last
    /// call: the members of the configuration in force, the servers the leader
    /// still replicates to (members being removed), and the leader.
    pub fn wanted_peers(&mut self) -> Option<Vec<WantedPeer>> {
        let raft = self.raw.raft();
        let fingerprint = (raft.membership_index(), raft.leader, raft.progress.len());
        if fingerprint == self.peers_fingerprint {
            return None;
        }
        self.peers_fingerprint = fingerprint;
        let mut ids: Vec<NodeId> = raft
            .membership
            .members()
            .chain(raft.progress.keys().copied())
            .chain([raft.leader])
            .filter(|&id| id != raft::NO_NODE && id != self.config.node_id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        Some(
            ids.into_iter()
                .map(|id| (id, self.addrs(id).map(|a| a.peer)))
                .collect(),
        )
    }

    /// The addresses of member `id`: from the configuration entry, else the config file.
    pub(super) fn addrs(&self, id: NodeId) -> Option<MemberAddrs> {
        members::addrs_of(&self.raw.raft().membership, &self.config, id)
    }

    pub(super) fn status(&self) -> Status {
        let status = self.raw.status();
        Status {
            node_id: self.config.node_id,
            role: match status.role {
                Role::Follower => StatusRole::Follower,
                Role::PreCandidate => StatusRole::PreCandidate,
                Role::Candidate => StatusRole::Candidate,
                Role::Leader => StatusRole::Leader,
            },
            term: status.term,
            leader_id: status.leader,
            commit_index: status.commit,
            applied_index: self.kv.applied_index(),
            last_index: status.last_index,
            config_index: status.config_index,
            promote_distance_max: self.raw.promote_distance_max(),
            members: status
                .config
                .members()
                .map(|id| {
                    let addrs = self.addrs(id);
                    StatusMember {
                        id,
                        voter: status.config.is_voter(id),
                        peer_addr: addrs.map_or_else(String::new, |a| a.peer.to_string()),
                        client_addr: addrs.map_or_else(String::new, |a| a.client.to_string()),
                        match_index: status
                            .progress
                            .iter()
                            .find(|p| p.id == id)
                            .map_or(0, |p| p.match_index),
                    }
                })
                .collect(),
        }
    }

    /// The `Metrics` reply: the node's counters plus the log and state machine sizes.
    pub fn metrics_snapshot(&mut self) -> Vec<(String, u64)> {
        self.metrics.set_log_bytes(self.raw.store().log_bytes());
        let mut rendered = self.metrics.render();
        rendered.push(("kv_keys".into(), self.kv.len() as u64));
        rendered.push(("kv_sessions".into(), self.kv.session_count() as u64));
        rendered.push(("kv_expiring_keys".into(), self.kv.expiring_len() as u64));
        rendered.push(("kv_expired_keys".into(), self.expiry.expired_keys));
        rendered
    }
}
