//! The replica's part of a snapshot save (`raftkv-cli snapshot save`): on the leader, a
//! copy-on-write view of the state machine as applied now, with the snapshot meta of
//! that index. Every write acknowledged by this leader is applied before its
//! acknowledgement, so the view holds all of them. The driver encodes and serves the
//! view (`server::backup`); the replica does no IO for it.

use super::{Error, Replica, ReplicaLog, SnapshotWriter};
use crate::codec::client::ResponseBody;
use crate::kv::SnapshotView;
use crate::raft::message::SnapshotMeta;

impl<L: ReplicaLog, W: SnapshotWriter> Replica<L, W> {
    /// The state machine as applied now and its snapshot meta, on the leader; elsewhere
    /// the answer to give instead (a redirect to the leader, or unavailable).
    ///
    /// # Errors
    /// The outer error is a store failure reading the applied entry's term (fatal).
    pub fn backup_view(
        &mut self,
    ) -> Result<Result<(SnapshotMeta, SnapshotView), ResponseBody>, Error> {
        if let Some(refusal) = self.not_leader() {
            return Ok(Err(refusal));
        }
        let applied = self.kv.applied_index();
        let meta = self.raw.build_snapshot(applied, Vec::new())?.meta;
        Ok(Ok((meta, self.kv.snapshot_view())))
    }
}
