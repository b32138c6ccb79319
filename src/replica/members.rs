//! Member addresses: what the server attaches to each member of a Raft
//! configuration (`Configuration::member_info`), so that every node learns from
//! the log, or from a snapshot, where to dial a member added at runtime and where
//! to redirect its clients.
//!
//! Encoding (the info bytes of one member): `version u8 = 1 | peer address |
//! client address`, each address a `u32` LE length and UTF-8 `ip:port`.
//!
//! Invariant: [`MemberAddrs::decode`] accepts exactly what [`MemberAddrs::encode`]
//! writes and never panics on other bytes.

use std::net::SocketAddr;

use crate::config::Config;
use crate::raft::message::{Configuration, NodeId};
use crate::wire::DecodeError;
use crate::wire::{Reader, put_bytes};

const MEMBER_ADDRS_VERSION: u8 = 1;

/// Where one member listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberAddrs {
    /// The address its peers dial for Raft traffic.
    pub peer: SocketAddr,
    /// The address its clients connect to.
    pub client: SocketAddr,
}

impl MemberAddrs {
    /// The member info bytes for these addresses.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![MEMBER_ADDRS_VERSION];
        put_bytes(&mut out, self.peer.to_string().as_bytes());
        put_bytes(&mut out, self.client.to_string().as_bytes());
        out
    }

    /// Reads member info bytes written by [`MemberAddrs::encode`].
    ///
    /// # Errors
    /// [`DecodeError::Malformed`] for another version, a bad address or trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<MemberAddrs, DecodeError> {
        let mut input = Reader::new(bytes);
        if input.u8("member info version")? != MEMBER_ADDRS_VERSION {
            return Err(DecodeError::Malformed("unknown member info version"));
        }
        let mut address = |what| {
            input.string(what).and_then(|text| {
                text.parse::<SocketAddr>()
                    .map_err(|_| DecodeError::Malformed("member address is not ip:port"))
            })
        };
        let peer = address("member peer address")?;
        let client = address("member client address")?;
        input.finish()?;
        Ok(MemberAddrs { peer, client })
    }
}

/// The addresses of member `id`: those carried by `membership`, else those of the
/// config file (the bootstrap members, whose configuration may carry none).
pub fn addrs_of(membership: &Configuration, config: &Config, id: NodeId) -> Option<MemberAddrs> {
    match membership.info(id).map(MemberAddrs::decode) {
        Some(Ok(addrs)) => Some(addrs),
        Some(Err(e)) => {
            log::warn!("member {id}: unreadable addresses in the configuration: {e}");
            None
        }
        None => config.member(id).map(|m| MemberAddrs {
            peer: m.peer_addr,
            client: m.client_addr,
        }),
    }
}

/// The bootstrap membership a node starts from: every member of the config file as
/// a voter with its addresses, or, for a node joining an existing cluster, nothing
/// (it waits for a leader to add it).
pub fn bootstrap_configuration(config: &Config, join: bool) -> Configuration {
    if join {
        return Configuration::default();
    }
    config.members.iter().fold(
        Configuration::new(config.members.iter().map(|m| m.id), []),
        |membership, m| {
            let addrs = MemberAddrs {
                peer: m.peer_addr,
                client: m.client_addr,
            };
            membership.with_info(m.id, addrs.encode())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: addresses round-trip and garbage is an error, never a panic.
    #[test]
    fn member_addrs_round_trip_and_reject_garbage() {
        let addrs = MemberAddrs {
            peer: "127.0.0.1:7001".parse().unwrap(),
            client: "[::1]:8001".parse().unwrap(),
        };
        let bytes = addrs.encode();
        assert_eq!(MemberAddrs::decode(&bytes), Ok(addrs));
        for len in 0..bytes.len() {
            assert!(MemberAddrs::decode(&bytes[..len]).is_err(), "prefix {len}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(MemberAddrs::decode(&trailing).is_err());
        let mut bad = vec![MEMBER_ADDRS_VERSION];
        put_bytes(&mut bad, b"not an address");
        put_bytes(&mut bad, b"127.0.0.1:1");
        assert!(MemberAddrs::decode(&bad).is_err());
    }
}
