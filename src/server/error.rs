//! The server's typed errors, one per layer: [`ProtocolError`] is why the loop closes
//! one connection (the peer, client or leader broke the protocol; the node carries on),
//! [`RunError`] is why the loop itself stops (the node must not go on).
//!
//! Invariant: a `ProtocolError` never stops the node, a `RunError` always does.

use std::io;

use crate::raft::message::NodeId;
use crate::wire::DecodeError;

/// Why a connection is closed for what it sent.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// A client-port frame that does not decode.
    #[error("bad frame: {0}")]
    Frame(DecodeError),
    /// A client-port frame whose request does not decode.
    #[error("bad request: {0}")]
    Request(DecodeError),
    /// Redis-port input that is not RESP.
    #[error("bad RESP: {0}")]
    Resp(DecodeError),
    /// A frame from the leader on the forwarding link that does not decode.
    #[error("bad frame from the leader: {0}")]
    LeaderFrame(DecodeError),
    /// A response from the leader on the forwarding link that does not decode.
    #[error("bad response from the leader: {0}")]
    LeaderResponse(DecodeError),
    /// A peer frame that does not decode.
    #[error("bad peer frame: {0}")]
    PeerFrame(DecodeError),
    /// A handshake from a member of another cluster.
    #[error("handshake from node {node_id} of cluster {cluster_id}, we are cluster {ours}")]
    ForeignCluster {
        /// The node id it announced.
        node_id: NodeId,
        /// The cluster id it announced.
        cluster_id: u64,
        /// This node's cluster id.
        ours: u64,
    },
    /// A peer on the TLS peer port whose certificate does not name the member its
    /// handshake claims.
    #[error("handshake as node {0}, but its certificate does not name node-{0}")]
    CertificateNotForMember(NodeId),
    /// A peer that did not prove the cluster secret (or offered a proof this node, with
    /// no secret, cannot check). Counted in `net.peer_auth_failures`.
    #[error("peer authentication failed: {0}")]
    PeerAuth(&'static str),
    /// A handshake with no node id, or with this node's own.
    #[error("handshake with node id {0}")]
    BadNodeId(NodeId),
    /// A message whose sender or receiver is not the link's.
    #[error("message from {from} to {to} on the link of node {link}")]
    Misaddressed {
        /// The message's sender.
        from: NodeId,
        /// The message's receiver.
        to: NodeId,
        /// The node the link identified itself as.
        link: NodeId,
    },
    /// A frame of a kind this link does not carry (a message before the handshake, a
    /// second handshake, anything on an outbound link).
    #[error("unexpected {frame} on {link}")]
    Unexpected {
        /// The frame's kind.
        frame: &'static str,
        /// What the link is.
        link: &'static str,
    },
}

/// Why the loop stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// `poll` failed.
    #[error("poll failed: {0}")]
    Poll(#[source] io::Error),
    /// The log could not be written or synced: the node stops instead of acknowledging.
    #[error("storage failure: {0}")]
    Storage(#[from] crate::replica::Error),
}
