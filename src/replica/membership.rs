//! Validation of membership changes asked by clients (`raftkv-cli member`): a change
//! is checked against the configuration in force (ids, addresses that must not clash,
//! the last voter) before it is proposed, and a retried request whose change already
//! committed gets the same answer as the first. Reference: thesis chapter 4.

use std::net::SocketAddr;

use log::info;

use super::{Replica, ReplicaLog, SnapshotWriter};
use crate::codec::client::{MemberChange, ResponseBody};
use crate::raft;
use crate::raft::message::ConfigChange;
use crate::replica::members::MemberAddrs;

impl<L: ReplicaLog, W: SnapshotWriter> Replica<L, W> {
    /// Checks a membership change against the configuration in force and proposes
    /// it: the index to wait for, `None` when the change is already committed (a
    /// retried request), or the error reply.
    pub(super) fn propose_member_change(
        &mut self,
        change: MemberChange,
    ) -> Result<Option<u64>, ResponseBody> {
        let raft = self.raw.raft();
        let membership = &raft.membership;
        let error = |message: String| Err(ResponseBody::Error(message));
        let already_done = if raft.membership_index() <= raft.log.committed {
            Ok(None)
        } else {
            Err(ResponseBody::Unavailable(
                "a membership change is not committed yet; retry".into(),
            ))
        };
        let (change, info) = match change {
            MemberChange::AddLearner {
                id,
                peer_addr,
                client_addr,
            } => {
                if id == raft::NO_NODE {
                    return error("node id 0 is reserved".into());
                }
                let parse = |what: &str, text: &str| {
                    text.parse::<SocketAddr>().map_err(|_| {
                        ResponseBody::Error(format!("{what} {text:?} is not an ip:port address"))
                    })
                };
                let addrs = MemberAddrs {
                    peer: parse("peer address", &peer_addr)?,
                    client: parse("client address", &client_addr)?,
                };
                if membership.contains(id) {
                    // A retried request after the change committed: same answer.
                    return match self.addrs(id) {
                        Some(known) if known == addrs => already_done,
                        _ => error(format!("node {id} is already a member")),
                    };
                }
                for other in membership.members() {
                    let Some(used) = self.addrs(other) else {
                        continue;
                    };
                    let clash = [addrs.peer, addrs.client]
                        .iter()
                        .any(|a| *a == used.peer || *a == used.client);
                    if clash {
                        return error(format!("an address of node {id} is used by node {other}"));
                    }
                }
                (ConfigChange::AddLearner(id), addrs.encode())
            }
            MemberChange::Promote { id } => {
                if membership.is_voter(id) {
                    return already_done;
                }
                if !membership.is_learner(id) {
                    return error(format!("node {id} is not a learner"));
                }
                (ConfigChange::PromoteLearner(id), Vec::new())
            }
            MemberChange::Remove { id } => {
                if !membership.contains(id) {
                    return error(format!("node {id} is not a member"));
                }
                if membership.voters == [id] {
                    return error(format!("node {id} is the last voter"));
                }
                (ConfigChange::RemoveNode(id), Vec::new())
            }
        };
        let max = self.raw.promote_distance_max();
        match self.raw.propose_config_change_with_info(change, info) {
            Ok(index) => {
                info!("membership change {change:?} proposed at index {index}");
                Ok(Some(index))
            }
            Err(raft::Error::LearnerBehind {
                id,
                match_index,
                last_index,
            }) => Err(ResponseBody::Unavailable(format!(
                "learner {id} is {} entries behind the leader (it holds {match_index} of \
                 {last_index}; promotion needs at most {max}); retry when it has caught up",
                last_index - match_index.min(last_index)
            ))),
            Err(raft::Error::ConfigChangePending) => Err(ResponseBody::Unavailable(
                "another membership change is not committed yet (or this leader's first entry \
                 is not); retry"
                    .into(),
            )),
            Err(raft::Error::InvalidConfigChange) => Err(ResponseBody::Error(format!(
                "{change:?} does not apply to the configuration in force"
            ))),
            Err(e) => Err(self.refusal(e)),
        }
    }
}
