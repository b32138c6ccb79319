//! Peer links: every node dials every other member and sends its Raft messages on that
//! outbound link (handshake first: cluster id, node id, its peer address); it receives
//! messages on the links the others dialed.
//!
//! Invariants: a member has at most one outbound link (`PeerLink::conn`), and a peer's
//! messages are only taken from an inbound link that identified itself as that peer with
//! a handshake of this cluster. A broken link is redialed with exponential backoff and
//! jitter; messages for a peer without a connected link are dropped (Raft retransmits).
//! A link that falls silent without breaking is treated as broken: when messages went
//! to a peer and nothing came back from it for the longest election timeout (every
//! message we send gets an answer well within it), or a connect does not complete
//! within it, the outbound link and the peer's silent inbound ones are closed and
//! redialed ([`Net::recycle_silent_links`]), so a healed partition is not left to TCP's
//! retransmission backoff. The set of links follows the configuration in force
//! ([`Net::set_peers`]): a member added at runtime is dialed at the address carried in
//! the configuration, a removed one is dropped; a peer with no known address (the
//! leader, for a node started with `--join`) is dialed at the address it announced in
//! its handshake. With a cluster secret, the handshake is a challenge-response
//! ([`super::peer_auth`]) and a link carries messages only once both sides proved it.

use std::io;
use std::net::SocketAddr;

use log::{debug, info, warn};
use mio::Interest;
use mio::net::TcpStream;

use super::backoff::Backoff;
use super::connection::QueueFrameError;
use super::error::ProtocolError;
use super::net::{ConnKind, FRAMES_PER_TURN_MAX, Net};
use super::node::{Node, WantedPeer};
use super::peer_auth::Identified;
use crate::codec::peer::{self as peer_codec, PeerFrame};
use crate::raft;
use crate::raft::message::{Message, NodeId};
use crate::security::peer_auth::Nonce;

const RECONNECT_MIN_MS: u64 = 50;
const RECONNECT_MAX_MS: u64 = 2000;

pub(super) struct PeerLink {
    addr: SocketAddr,
    /// Slab key of the outbound connection, when one exists.
    conn: Option<usize>,
    backoff: Backoff,
    reconnect_pending: bool,
    /// When the outbound connection was dialed, in the loop's clock.
    dialed_ms: u64,
    /// When anything last arrived from the peer (on the links it dialed), in the loop's
    /// clock.
    heard_ms: u64,
    /// A message was queued for the peer since it was last heard from: an answer (at
    /// least a heartbeat response or a vote) is expected.
    sent_since_heard: bool,
    /// The link was recycled for silence and the peer has not been heard from since
    /// (later recycles of the same silence log at debug level).
    recycled: bool,
    /// The nonce of the outbound link's handshake while the peer has not proved the
    /// cluster secret; no message is sent on the link meanwhile.
    awaiting: Option<Nonce>,
}

impl Net {
    pub(super) fn dial(&mut self, peer: NodeId) {
        let Some(link) = self.peers.get(&peer) else {
            return;
        };
        if link.conn.is_some() {
            return;
        }
        let addr = link.addr;
        let nonce = match self.peer_auth.dial_nonce() {
            Ok(nonce) => nonce,
            Err(e) => {
                warn!("peer {peer}: no handshake nonce (/dev/urandom: {e}); not dialing");
                return;
            }
        };
        let result = TcpStream::connect(addr).and_then(|tcp| {
            let stream = self
                .tls
                .peer_link(peer, tcp)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            self.add(
                stream,
                ConnKind::PeerOut {
                    peer,
                    connected: false,
                },
                Interest::READABLE | Interest::WRITABLE,
            )
        });
        match result {
            Ok(key) => {
                let handshake = PeerFrame::Handshake {
                    cluster_id: self.cluster_id,
                    node_id: self.node_id,
                    peer_addr: self.peer_addr.clone(),
                    nonce,
                };
                let codec = self.frame;
                let conn = &mut self.conns[key];
                // Queued now, written once the connect completes (first WRITABLE event).
                let queued = conn
                    .io
                    .queue_frame(&codec, |out| peer_codec::encode(&handshake, out));
                if queued.is_err() {
                    self.close_later(key, "handshake does not fit the output buffer".into());
                }
                let now = self.now_ms();
                if let Some(link) = self.peers.get_mut(&peer) {
                    link.conn = Some(key);
                    link.dialed_ms = now;
                    link.sent_since_heard = false;
                    link.awaiting = nonce;
                }
            }
            Err(e) => debug!("peer {peer}: dial {addr} failed: {e}"),
        }
    }

    /// Something arrived from `peer`, or it read a backlog we are sending it: its
    /// links are alive.
    pub(super) fn heard_from(&mut self, peer: NodeId) {
        let now = self.now_ms();
        if let Some(link) = self.peers.get_mut(&peer) {
            link.heard_ms = now;
            link.sent_since_heard = false;
            link.recycled = false;
        }
    }

    /// Outbound link `key` to `peer` connected.
    pub(super) fn on_peer_connected(&mut self, peer: NodeId, node: &mut Node) {
        info!("peer {peer}: connected");
        node.metrics_mut().on_peer_connected(peer);
        if let Some(link) = self.peers.get_mut(&peer) {
            link.backoff.reset();
        }
    }

    /// Closes (for a redial with the usual backoff) every outbound peer link that
    /// did not connect within `silence_ms`, or that carried messages to its peer while
    /// nothing came back for `silence_ms`, and the silent inbound links of that peer.
    ///
    /// Why: a connection behind a route that dropped packets stays open, and after the
    /// route heals TCP resends only when its retransmission backoff expires (seconds
    /// after a partition of a few seconds); a fresh connection carries traffic after
    /// one round trip. A peer answers every message we send within an election
    /// timeout (heartbeat responses, votes), so silence that long means a dead link.
    pub(super) fn recycle_silent_links(&mut self, now_ms: u64) {
        let silence_ms = self.silence_ms;
        let mut silent = Vec::new();
        for (&peer, link) in &self.peers {
            let Some(key) = link.conn else {
                continue;
            };
            let quiet_since = link.heard_ms.max(link.dialed_ms);
            if now_ms.saturating_sub(quiet_since) < silence_ms {
                continue;
            }
            let connected = self.conns.get(key).is_some_and(|c| {
                matches!(
                    c.kind,
                    ConnKind::PeerOut {
                        connected: true,
                        ..
                    }
                )
            });
            if !connected {
                silent.push((peer, key, "the connect did not complete"));
            } else if link.sent_since_heard {
                silent.push((peer, key, "nothing came back"));
            }
        }
        for (peer, key, what) in silent {
            let reason = format!("{what} within {silence_ms} ms; redialing");
            let Some(link) = self.peers.get_mut(&peer) else {
                continue;
            };
            if link.recycled {
                debug!("peer {peer}: link still silent: {reason}");
            } else {
                info!("peer {peer}: link silent: {reason}");
            }
            link.recycled = true;
            link.sent_since_heard = false;
            self.close_later(key, reason.clone());
            let inbound: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| matches!(c.kind, ConnKind::PeerIn(Some(p)) if p == peer))
                .map(|(k, _)| k)
                .collect();
            for key in inbound {
                self.close_later(key, format!("silent for {silence_ms} ms"));
            }
        }
    }

    /// The peers that have no link and no redial scheduled, with the delay of their
    /// next dial (the backoff's); each is marked as having its redial scheduled.
    pub(super) fn schedule_redials(&mut self) -> Vec<(NodeId, u64)> {
        let unlinked: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, link)| link.conn.is_none() && !link.reconnect_pending)
            .map(|(id, _)| *id)
            .collect();
        let mut redials = Vec::with_capacity(unlinked.len());
        for peer in unlinked {
            let random = self.rng.next_u64();
            if let Some(link) = self.peers.get_mut(&peer) {
                link.reconnect_pending = true;
                redials.push((peer, link.backoff.next_delay_ms(random)));
            }
        }
        redials
    }

    /// The redial of `peer` is due.
    pub(super) fn redial(&mut self, peer: NodeId) {
        if let Some(link) = self.peers.get_mut(&peer) {
            link.reconnect_pending = false;
        }
        self.dial(peer);
    }

    /// Keeps links to exactly the `wanted` peers: dials new ones (at the given
    /// address, else the one they announced), redials one whose address changed,
    /// and closes the links of peers no longer wanted.
    pub(super) fn set_peers(&mut self, wanted: &[WantedPeer]) {
        let unwanted: Vec<NodeId> = self
            .peers
            .keys()
            .filter(|id| !wanted.iter().any(|(w, _)| w == *id))
            .copied()
            .collect();
        for id in unwanted {
            if let Some(link) = self.peers.remove(&id) {
                info!("peer {id}: no longer a member, dropping its link");
                if let Some(key) = link.conn {
                    self.close_later(key, "peer is no longer a member".into());
                }
            }
        }
        for &(id, addr) in wanted {
            let Some(addr) = addr.or_else(|| self.announced.get(&id).copied()) else {
                if !self.peers.contains_key(&id) {
                    debug!("peer {id}: no address known yet");
                }
                continue;
            };
            match self.peers.get_mut(&id) {
                Some(link) if link.addr == addr => continue,
                Some(link) => {
                    info!("peer {id}: address {} -> {addr}", link.addr);
                    link.addr = addr;
                    if let Some(key) = link.conn.take() {
                        self.close_later(key, "peer address changed".into());
                    }
                }
                None => {
                    info!("peer {id}: linking to {addr}");
                    let link = PeerLink {
                        addr,
                        conn: None,
                        backoff: Backoff::new(RECONNECT_MIN_MS, RECONNECT_MAX_MS),
                        reconnect_pending: false,
                        dialed_ms: 0,
                        heard_ms: 0,
                        sent_since_heard: false,
                        recycled: false,
                        awaiting: None,
                    };
                    self.peers.insert(id, link);
                }
            }
            self.dial(id);
        }
    }

    /// Queues `message` on the outbound link to its receiver; returns the bytes queued
    /// (0 when the peer has no connected link: Raft retransmits).
    pub(super) fn send_to_peer(&mut self, message: &Message) -> usize {
        log::trace!("send {message:?}");
        let Some(link) = self.peers.get_mut(&message.to) else {
            return 0;
        };
        let Some(key) = link.conn else {
            return 0;
        };
        if link.awaiting.is_some() {
            return 0;
        }
        link.sent_since_heard = true;
        let codec = self.frame;
        let Some(conn) = self.conns.get_mut(key) else {
            return 0;
        };
        if let ConnKind::PeerOut {
            connected: false, ..
        } = conn.kind
        {
            return 0;
        }
        let before = conn.io.pending_output_bytes();
        match conn
            .io
            .queue_frame(&codec, |out| peer_codec::encode_message(message, out))
        {
            Ok(()) => {
                self.dirty.push(key);
                conn.io.pending_output_bytes() - before
            }
            // Entries are bounded (limits.entry_bytes_max) and batches split below the
            // frame limit, so this is not expected; dropping is safe: Raft retransmits.
            Err(QueueFrameError::TooLarge(e)) => {
                warn!("dropped a message to {}: {e}", message.to);
                0
            }
            Err(e) => {
                self.close_later(key, format!("peer is not reading: {e}"));
                0
            }
        }
    }

    /// Outbound link `key` to `peer` closed (`connected` if its connect had completed).
    pub(super) fn on_peer_link_closed(
        &mut self,
        key: usize,
        peer: NodeId,
        connected: bool,
        reason: &str,
        node: &mut Node,
    ) {
        if connected {
            info!("peer {peer}: link closed: {reason}");
            node.metrics_mut().on_peer_disconnected(peer);
        } else {
            debug!("peer {peer}: connect failed: {reason}");
        }
        if let Some(link) = self.peers.get_mut(&peer)
            && link.conn == Some(key)
        {
            link.conn = None;
        }
    }

    /// Takes the handshake and then the Raft messages of peer connection `key`.
    ///
    /// # Errors
    /// The peer broke the protocol (see [`ProtocolError`]): the link is closed.
    pub(super) fn decode_peer_frames(
        &mut self,
        key: usize,
        node: &mut Node,
    ) -> Result<(), ProtocolError> {
        for _ in 0..FRAMES_PER_TURN_MAX {
            let conn = &mut self.conns[key];
            let frame = match conn.io.next_frame(&self.frame) {
                Ok(Some(body)) => peer_codec::decode(body),
                Ok(None) => return Ok(()),
                Err(e) => Err(e),
            };
            let frame = frame.map_err(ProtocolError::PeerFrame)?;
            let inbound = match conn.kind {
                ConnKind::PeerIn(identified) => Some(identified),
                _ => None,
            };
            let outbound = match conn.kind {
                ConnKind::PeerOut { peer, .. } => Some(peer),
                _ => None,
            };
            let challenged = self.is_challenged(key);
            match (inbound, frame) {
                (
                    Some(None),
                    PeerFrame::Handshake {
                        cluster_id,
                        node_id,
                        peer_addr,
                        nonce,
                    },
                ) if !challenged => {
                    if cluster_id != self.cluster_id {
                        return Err(ProtocolError::ForeignCluster {
                            node_id,
                            cluster_id,
                            ours: self.cluster_id,
                        });
                    }
                    if node_id == raft::NO_NODE || node_id == self.node_id {
                        return Err(ProtocolError::BadNodeId(node_id));
                    }
                    if !self.tls.names_member(self.conns[key].io.stream(), node_id) {
                        return Err(ProtocolError::CertificateNotForMember(node_id));
                    }
                    if let Some(peer) = self.on_inbound_handshake(key, node_id, peer_addr, nonce)? {
                        self.identify_inbound(key, peer);
                    }
                }
                (Some(None), PeerFrame::Proof(proof)) => {
                    let peer = self.on_inbound_proof(key, &proof)?;
                    self.identify_inbound(key, peer);
                }
                (Some(Some(from)), PeerFrame::Message(message)) => {
                    if message.from != from || message.to != self.node_id {
                        return Err(ProtocolError::Misaddressed {
                            from: message.from,
                            to: message.to,
                            link: from,
                        });
                    }
                    node.on_peer_message(message);
                }
                (None, PeerFrame::Answer { nonce, proof }) if outbound.is_some() => {
                    let peer = outbound.unwrap_or(raft::NO_NODE);
                    let link = self.peers.get_mut(&peer).filter(|l| l.conn == Some(key));
                    let dialer_nonce = link.and_then(|l| l.awaiting.take());
                    self.on_outbound_answer(key, peer, dialer_nonce, nonce, &proof)?;
                    info!("peer {peer}: outbound link authenticated");
                }
                (_, frame) => {
                    return Err(ProtocolError::Unexpected {
                        frame: frame_name(&frame),
                        link: self.conns[key].kind.name(),
                    });
                }
            }
        }
        self.conns[key].unread = true;
        Ok(())
    }
}

impl Net {
    /// Inbound link `key` is `peer`'s from now on: its messages are taken.
    fn identify_inbound(&mut self, key: usize, peer: Identified) {
        let Identified { node_id, peer_addr } = peer;
        let conn = &mut self.conns[key];
        if !conn.closing {
            self.handshake_count = self.handshake_count.saturating_sub(1);
        }
        conn.kind = ConnKind::PeerIn(Some(node_id));
        info!("peer {node_id}: inbound link up (it listens on {peer_addr})");
        self.heard_from(node_id);
        match peer_addr.parse::<SocketAddr>() {
            Ok(addr) => {
                self.announced.insert(node_id, addr);
            }
            Err(_) => warn!("peer {node_id} announced a bad address {peer_addr:?}"),
        }
    }
}

fn frame_name(frame: &PeerFrame) -> &'static str {
    match frame {
        PeerFrame::Handshake { .. } => "handshake",
        PeerFrame::Answer { .. } => "handshake answer",
        PeerFrame::Proof(_) => "handshake proof",
        PeerFrame::Message(_) => "message",
    }
}
