//! The challenge-response of the peer handshake (docs/SECURITY.md, "Peer links").
//!
//! ```text
//!  dialer D                                   acceptor A
//!  Handshake{cluster, D id, addr, nonce_d} ──▶
//!                                         ◀── Answer{nonce_a, proof_a}
//!  checks proof_a
//!  Proof{proof_d}                          ──▶ checks proof_d; D's messages accepted
//!  sends Raft messages
//! ```
//!
//! `proof_x = HMAC-SHA256(secret, CONTEXT | role_x | cluster_id | D id | A id | nonce_d |
//! nonce_a)` with the integers little-endian. Each side's proof covers a nonce it did
//! not choose, so a recorded proof is worthless on another connection; the role byte
//! keeps the acceptor's proof from being reflected back as the dialer's; both ids are
//! covered, so a proof made for one member cannot be used by another.
//!
//! Invariant: the secret is never on the wire; proofs are compared in constant time
//! (`ring::hmac::verify`).

use std::io::{self, Read};

use ring::hmac;

use super::ClusterSecret;
use crate::raft::message::NodeId;

/// Bytes of a nonce and of a proof.
pub const NONCE_BYTES: usize = 32;
/// Bytes of a proof (an HMAC-SHA256 tag).
pub const PROOF_BYTES: usize = 32;

/// A random challenge.
pub type Nonce = [u8; NONCE_BYTES];
/// A proof of the secret.
pub type Proof = [u8; PROOF_BYTES];

const CONTEXT: &[u8] = b"raftkv peer handshake v1";

/// Which side of the connection a proof is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The node that dialed.
    Dialer = 1,
    /// The node that accepted.
    Acceptor = 2,
}

/// What one handshake's proofs cover besides the role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transcript {
    /// The cluster both claim.
    pub cluster_id: u64,
    /// The dialer's node id.
    pub dialer: NodeId,
    /// The acceptor's node id.
    pub acceptor: NodeId,
    /// The dialer's nonce.
    pub dialer_nonce: Nonce,
    /// The acceptor's nonce.
    pub acceptor_nonce: Nonce,
}

/// A fresh random nonce from the kernel's generator.
///
/// # Errors
/// `/dev/urandom` cannot be read.
pub fn fresh_nonce() -> io::Result<Nonce> {
    let mut nonce = [0; NONCE_BYTES];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut nonce)?;
    Ok(nonce)
}

/// The bytes a proof covers: the context, the role, the cluster id, both ids and both
/// nonces.
fn message(role: Role, transcript: &Transcript) -> Vec<u8> {
    let mut message = Vec::with_capacity(CONTEXT.len() + 1 + 3 * 8 + 2 * NONCE_BYTES);
    message.extend_from_slice(CONTEXT);
    message.push(role as u8);
    message.extend_from_slice(&transcript.cluster_id.to_le_bytes());
    message.extend_from_slice(&transcript.dialer.to_le_bytes());
    message.extend_from_slice(&transcript.acceptor.to_le_bytes());
    message.extend_from_slice(&transcript.dialer_nonce);
    message.extend_from_slice(&transcript.acceptor_nonce);
    message
}

fn key(secret: &ClusterSecret) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret.bytes())
}

/// The proof `role` sends for `transcript`: HMAC-SHA256 of [`message`] keyed with the
/// secret.
pub fn prove(secret: &ClusterSecret, role: Role, transcript: &Transcript) -> Proof {
    let tag = hmac::sign(&key(secret), &message(role, transcript));
    let mut proof = [0; PROOF_BYTES];
    proof.copy_from_slice(tag.as_ref());
    proof
}

/// Whether `proof` is `role`'s proof for `transcript` (constant-time comparison).
pub fn verify(secret: &ClusterSecret, role: Role, transcript: &Transcript, proof: &Proof) -> bool {
    hmac::verify(&key(secret), &message(role, transcript), proof).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> ClusterSecret {
        ClusterSecret::from_bytes(text.as_bytes().to_vec()).unwrap()
    }

    fn transcript() -> Transcript {
        Transcript {
            cluster_id: 7,
            dialer: 1,
            acceptor: 2,
            dialer_nonce: [1; NONCE_BYTES],
            acceptor_nonce: [2; NONCE_BYTES],
        }
    }

    /// Goal: a proof verifies only for the same secret, role and transcript.
    #[test]
    fn a_proof_binds_secret_role_ids_and_nonces() {
        let s = secret("0123456789abcdef");
        let t = transcript();
        let proof = prove(&s, Role::Dialer, &t);
        assert!(verify(&s, Role::Dialer, &t, &proof));
        assert!(!verify(&s, Role::Acceptor, &t, &proof), "reflected");
        assert!(!verify(
            &secret("0123456789abcdeX"),
            Role::Dialer,
            &t,
            &proof
        ));
        let changed = [
            Transcript { cluster_id: 8, ..t },
            Transcript { dialer: 3, ..t },
            Transcript { acceptor: 3, ..t },
            Transcript {
                dialer_nonce: [9; NONCE_BYTES],
                ..t
            },
            Transcript {
                acceptor_nonce: [9; NONCE_BYTES],
                ..t
            },
        ];
        for (i, other) in changed.iter().enumerate() {
            assert!(!verify(&s, Role::Dialer, other, &proof), "#{i}");
        }
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(fresh_nonce().unwrap(), fresh_nonce().unwrap());
    }
}
