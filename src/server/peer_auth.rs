//! The server side of peer authentication: the state of each handshake in progress and
//! the checks of [`crate::security::peer_auth`] applied to the frames of
//! [`super::peer_links`].
//!
//! Invariants:
//! 1. With a cluster secret, an inbound link stays unidentified (`PeerIn(None)`, under
//!    the handshake cap and timeout) until its dialer's proof verified: no message of
//!    an unproven peer reaches the node.
//! 2. With a cluster secret, nothing is sent on an outbound link but the handshake and
//!    the proof until the acceptor's proof verified ([`PeerLink`] `awaiting`): the
//!    node's messages never go to an impostor.
//! 3. Every refusal is counted in `net.peer_auth_failures` and logged with the remote
//!    address; the secret and the proofs are never logged.
//! 4. Without a secret, handshakes are the plain ones of before (insecure), and a peer
//!    that offers a nonce is refused: a mixed configuration fails loudly, not silently.
//!
//! [`PeerLink`]: super::peer_links::PeerLink

use std::collections::HashMap;

use log::warn;

use super::error::ProtocolError;
use super::net::Net;
use crate::codec::peer::{self as peer_codec, PeerFrame};
use crate::raft::message::NodeId;
use crate::security::ClusterSecret;
use crate::security::peer_auth::{self, Nonce, Proof, Role, Transcript};

/// Peer authentication state of a node.
#[derive(Debug, Default)]
pub(super) struct PeerAuth {
    /// The cluster secret; `None`: peers are not authenticated (insecure).
    pub(super) secret: Option<ClusterSecret>,
    /// Inbound connections that sent an authenticating handshake and owe their proof,
    /// by slab key.
    /// Invariant: an entry's connection is `PeerIn(None)` with the same generation.
    challenges: HashMap<usize, Challenge>,
}

#[derive(Debug)]
struct Challenge {
    generation: u64,
    peer_addr: String,
    transcript: Transcript,
}

/// An inbound link whose dialer proved itself (or, without a secret, announced
/// itself).
pub(super) struct Identified {
    pub(super) node_id: NodeId,
    pub(super) peer_addr: String,
}

impl PeerAuth {
    /// With `secret`, peers must prove it.
    pub(super) fn new(secret: Option<ClusterSecret>) -> PeerAuth {
        PeerAuth {
            secret,
            challenges: HashMap::new(),
        }
    }

    /// The nonce of a new outbound link's handshake (`None` without a secret).
    ///
    /// # Errors
    /// The kernel's random generator cannot be read.
    pub(super) fn dial_nonce(&self) -> std::io::Result<Option<Nonce>> {
        match self.secret {
            Some(_) => peer_auth::fresh_nonce().map(Some),
            None => Ok(None),
        }
    }

    /// Connection `key` closed: its challenge, if any, is void.
    pub(super) fn forget(&mut self, key: usize) {
        self.challenges.remove(&key);
    }
}

impl Net {
    /// Counts and logs (with the remote address) a peer that failed to authenticate;
    /// returns the error that closes its connection.
    fn refuse_peer(&mut self, key: usize, why: &'static str) -> ProtocolError {
        self.counts.peer_auth_failures += 1;
        let addr = self.conns.get(key).map_or_else(
            || "an unknown address".to_string(),
            |c| {
                c.io.stream()
                    .tcp()
                    .peer_addr()
                    .map_or_else(|_| "an unknown address".to_string(), |a| a.to_string())
            },
        );
        warn!(
            "refusing peer connection from {addr}: {why} (net.peer_auth_failures counts \
             refusals)"
        );
        ProtocolError::PeerAuth(why)
    }

    /// An inbound handshake of `node_id` (cluster id and node id already checked):
    /// identifies the link at once without a secret, or answers the challenge.
    ///
    /// # Errors
    /// The handshake does not match this node's authentication (invariant 4), or the
    /// answer cannot be queued.
    pub(super) fn on_inbound_handshake(
        &mut self,
        key: usize,
        node_id: NodeId,
        peer_addr: String,
        nonce: Option<Nonce>,
    ) -> Result<Option<Identified>, ProtocolError> {
        let (secret, dialer_nonce) = match (self.peer_auth.secret.clone(), nonce) {
            (None, None) => return Ok(Some(Identified { node_id, peer_addr })),
            (None, Some(_)) => {
                return Err(self.refuse_peer(
                    key,
                    "it authenticates but this node has no security.cluster_secret_file",
                ));
            }
            (Some(_), None) => {
                return Err(self.refuse_peer(key, "a handshake without proof of the secret"));
            }
            (Some(secret), Some(nonce)) => (secret, nonce),
        };
        let acceptor_nonce = peer_auth::fresh_nonce().map_err(|_| {
            ProtocolError::PeerAuth("cannot read /dev/urandom for a handshake nonce")
        })?;
        let transcript = Transcript {
            cluster_id: self.cluster_id,
            dialer: node_id,
            acceptor: self.node_id,
            dialer_nonce,
            acceptor_nonce,
        };
        let answer = PeerFrame::Answer {
            nonce: acceptor_nonce,
            proof: peer_auth::prove(&secret, Role::Acceptor, &transcript),
        };
        self.queue_peer_frame(key, &answer)?;
        let generation = self.conns[key].generation;
        self.peer_auth.challenges.insert(
            key,
            Challenge {
                generation,
                peer_addr,
                transcript,
            },
        );
        Ok(None)
    }

    /// Whether inbound connection `key` sent its handshake and owes its proof.
    pub(super) fn is_challenged(&self, key: usize) -> bool {
        let generation = self.conns.get(key).map(|c| c.generation);
        self.peer_auth
            .challenges
            .get(&key)
            .is_some_and(|c| Some(c.generation) == generation)
    }

    /// The dialer's proof on inbound connection `key`.
    ///
    /// # Errors
    /// No challenge is pending, or the proof is wrong.
    pub(super) fn on_inbound_proof(
        &mut self,
        key: usize,
        proof: &Proof,
    ) -> Result<Identified, ProtocolError> {
        let generation = self.conns.get(key).map(|c| c.generation);
        let challenge = match self.peer_auth.challenges.remove(&key) {
            Some(c) if Some(c.generation) == generation => c,
            _ => return Err(self.refuse_peer(key, "a proof without a handshake")),
        };
        let secret = self.peer_auth.secret.as_ref();
        let valid = secret
            .is_some_and(|s| peer_auth::verify(s, Role::Dialer, &challenge.transcript, proof));
        if !valid {
            return Err(self.refuse_peer(key, "a wrong proof of the cluster secret"));
        }
        Ok(Identified {
            node_id: challenge.transcript.dialer,
            peer_addr: challenge.peer_addr,
        })
    }

    /// The acceptor's answer on our outbound link `key` to `peer`, sent with
    /// `dialer_nonce`: checks its proof and sends ours.
    ///
    /// # Errors
    /// The link expected no answer, or the acceptor's proof is wrong.
    pub(super) fn on_outbound_answer(
        &mut self,
        key: usize,
        peer: NodeId,
        dialer_nonce: Option<Nonce>,
        acceptor_nonce: Nonce,
        proof: &Proof,
    ) -> Result<(), ProtocolError> {
        let (Some(secret), Some(dialer_nonce)) = (self.peer_auth.secret.clone(), dialer_nonce)
        else {
            return Err(self.refuse_peer(key, "an answer no handshake asked for"));
        };
        let transcript = Transcript {
            cluster_id: self.cluster_id,
            dialer: self.node_id,
            acceptor: peer,
            dialer_nonce,
            acceptor_nonce,
        };
        if !peer_auth::verify(&secret, Role::Acceptor, &transcript, proof) {
            return Err(self.refuse_peer(
                key,
                "the node we dialed did not prove the cluster secret for its member id",
            ));
        }
        let ours = PeerFrame::Proof(peer_auth::prove(&secret, Role::Dialer, &transcript));
        self.queue_peer_frame(key, &ours)
    }

    fn queue_peer_frame(&mut self, key: usize, frame: &PeerFrame) -> Result<(), ProtocolError> {
        let codec = self.frame;
        self.conns[key]
            .io
            .queue_frame(&codec, |out| peer_codec::encode(frame, out))
            .map_err(|_| ProtocolError::PeerAuth("the handshake does not fit the output buffer"))?;
        self.dirty.push(key);
        Ok(())
    }
}
