//! The errors of the consensus layer: what a caller of `RawNode` can get back,
//! and what a `LogStore` implementation reports.

use super::message::NodeId;

/// Why a `LogStore` read failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The index is at or below the compaction point (only a snapshot covers it).
    #[error("index {0} is compacted")]
    Compacted(u64),
    /// The index is beyond the last index.
    #[error("index {0} is beyond the last index")]
    Unavailable(u64),
    /// The underlying storage failed (IO error, corruption); the node should stop.
    /// The source is the store's own error, which names the file (and, for
    /// corruption, the byte offset).
    #[error("log store failed: {0}")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// [`StoreError::Failed`] carrying `source`.
    pub fn failed(source: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        StoreError::Failed(Box::new(source))
    }
}

/// Indices compare by value; a failure equals only itself (the same boxed source),
/// as a store's error has no equality of its own.
impl PartialEq for StoreError {
    fn eq(&self, other: &StoreError) -> bool {
        match (self, other) {
            (StoreError::Compacted(a), StoreError::Compacted(b))
            | (StoreError::Unavailable(a), StoreError::Unavailable(b)) => a == b,
            (StoreError::Failed(a), StoreError::Failed(b)) => std::ptr::addr_eq(&**a, &**b),
            _ => false,
        }
    }
}

impl Eq for StoreError {}

/// Why a `RawNode` call was refused or failed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Only the leader accepts this call; `leader` is the last known leader, if any.
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader {
        /// The leader this node believes in, to redirect the client to.
        leader: Option<NodeId>,
    },
    /// The leader is transferring leadership and refuses new proposals meanwhile.
    #[error("proposal dropped during leadership transfer")]
    ProposalDropped,
    /// A configuration change is still uncommitted; changes go one at a time.
    #[error("a configuration change is already in progress")]
    ConfigChangePending,
    /// The change does not apply to the current configuration.
    #[error("invalid configuration change")]
    InvalidConfigChange,
    /// A learner is too far behind the leader to be promoted yet
    /// (`Config::promote_distance_max`); retry once it caught up.
    #[error("learner {id} is not caught up: it matches index {match_index} of {last_index}")]
    LearnerBehind {
        /// The learner.
        id: NodeId,
        /// The highest index the leader knows it holds.
        match_index: u64,
        /// The leader's last index.
        last_index: u64,
    },
    /// The node named is not a voter of the configuration in force (a
    /// leadership transfer target must be one).
    #[error("node {0} is not a voter")]
    NotVoter(NodeId),
    /// The snapshot index is not within the applied, uncompacted log.
    #[error("cannot snapshot at index {0}")]
    SnapshotIndex(u64),
    /// A configuration value is out of range.
    #[error("invalid raft config: {0}")]
    InvalidConfig(&'static str),
    /// The log store failed; the node must stop.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_store_failure_keeps_its_source() {
        let io = std::io::Error::other("segment 7 at byte offset 4096: bad crc");
        let error = Error::from(StoreError::failed(io));
        // `Error::Store` is transparent: its source is the store's own cause.
        let source = error.source().expect("the store error keeps its cause");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("the io error");
        assert_eq!(io.to_string(), "segment 7 at byte offset 4096: bad crc");
        assert_eq!(StoreError::Compacted(3), StoreError::Compacted(3));
        assert_ne!(
            StoreError::failed(std::io::Error::other("a")),
            StoreError::Unavailable(1)
        );
    }
}
