//! ReadIndex reads (thesis section 6.4): a leader serves a read at its commit index
//! once an entry of its term has committed and a heartbeat round confirmed it still
//! leads; a follower forwards the request to its leader.
//!
//! Invariant: no read is answered at a commit index older than the leader's no-op of
//! its current term (such reads wait in `reads_before_noop`).

use super::{Raft, Role};
use crate::raft::error::Error;
use crate::raft::message::{MessageBody, NO_NODE, ReadIndexRequest, ReadIndexResponse};
use crate::raft::quorum;
use crate::raft::read_only::{ReadRequest, ReadState};
use crate::raft::store::LogStore;

impl<S: LogStore> Raft<S> {
    /// Starts a linearizable read (thesis section 6.4).
    ///
    /// # Errors
    /// [`Error::NotLeader`] when no leader is known to forward to.
    pub fn read_index(&mut self, context: Vec<u8>) -> Result<(), Error> {
        if self.role == Role::Leader {
            self.handle_read_request(ReadRequest {
                context,
                from: self.id,
            });
            return Ok(());
        }
        if self.leader == NO_NODE {
            return Err(Error::NotLeader { leader: None });
        }
        self.send(
            self.leader,
            self.term,
            MessageBody::ReadIndex(ReadIndexRequest { context }),
        );
        Ok(())
    }

    pub(super) fn handle_read_request(&mut self, request: ReadRequest) {
        if !self.committed_in_current_term() {
            self.reads_before_noop.push(request);
        } else if quorum::has_majority(&self.membership, |id| id == self.id) {
            self.respond_read(request, self.log.committed);
        } else {
            self.read_only.add(request);
        }
    }

    pub(super) fn respond_read(&mut self, request: ReadRequest, index: u64) {
        if request.from == self.id {
            self.read_states.push(ReadState {
                context: request.context,
                index,
            });
        } else {
            let body = MessageBody::ReadIndexResponse(ReadIndexResponse {
                context: request.context,
                index,
            });
            self.send(request.from, self.term, body);
        }
    }
}
