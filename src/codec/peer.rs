//! PeerMessageCodec: Raft messages between nodes, one per frame.
//!
//! A peer connection opens with a [`PeerFrame::Handshake`] from the dialing side
//! (cluster id, node id, and the peer address it listens on, so that a node that
//! has no configuration yet — one started with `--join` — can answer the leader
//! that dialed it); every later frame is a [`PeerFrame::Message`]. The receiving
//! node refuses a handshake with a foreign cluster id.
//!
//! With a cluster secret (docs/SECURITY.md) the handshake carries the dialer's nonce
//! (type 2 instead of 1), the acceptor answers with [`PeerFrame::Answer`] (its nonce and
//! its proof) and the dialer sends [`PeerFrame::Proof`] before any message; the proofs
//! are made and checked by [`crate::security::peer_auth`]. Without a secret the
//! handshake is type 1 and nothing is answered, as before.
//!
//! Body layout (little-endian): `type: u8 | fields...`. Messages carry
//! `from: u64 | to: u64 | term: u64` after the type byte, then the kind's fields;
//! entries are `index: u64 | term: u64 | kind: u8 | data: u32 len + bytes`;
//! byte strings are `u32 len + bytes`; booleans one byte, 0 or 1. The full table
//! is in docs/FORMAT.md. Decoding checks every length against the frame before
//! allocating, and rejects trailing bytes.

use std::sync::Arc;

use crate::raft::message::{
    AppendRequest, AppendResponse, Configuration, Entry, EntryKind, Heartbeat, HeartbeatResponse,
    Message, MessageBody, NodeId, ReadIndexRequest, ReadIndexResponse, SnapshotChunk, SnapshotMeta,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use crate::security::peer_auth::{Nonce, Proof};
use crate::wire::DecodeError;
use crate::wire::{Reader, put_bytes, put_u32, put_u64};

/// One frame on a peer connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerFrame {
    /// The first frame of a connection: who is dialing, and for which cluster.
    Handshake {
        /// The cluster the dialer belongs to; must equal the receiver's.
        cluster_id: u64,
        /// The dialer's node id.
        node_id: NodeId,
        /// The address the dialer's peer listener is reachable at (`ip:port`).
        peer_addr: String,
        /// The dialer's challenge, when it authenticates with the cluster secret.
        nonce: Option<Nonce>,
    },
    /// The acceptor's reply to an authenticating handshake: its challenge, and its
    /// proof of the secret over both nonces.
    Answer {
        /// The acceptor's challenge.
        nonce: Nonce,
        /// The acceptor's proof.
        proof: Proof,
    },
    /// The dialer's proof of the secret over both nonces; the last frame before its
    /// messages.
    Proof(Proof),
    /// A Raft message.
    Message(Message),
}

const HANDSHAKE: u8 = 1;
const HANDSHAKE_WITH_NONCE: u8 = 2;
const ANSWER: u8 = 3;
const PROOF: u8 = 4;
const PRE_VOTE: u8 = 10;
const PRE_VOTE_RESPONSE: u8 = 11;
const VOTE: u8 = 12;
const VOTE_RESPONSE: u8 = 13;
const APPEND: u8 = 14;
const APPEND_RESPONSE: u8 = 15;
const HEARTBEAT: u8 = 16;
const HEARTBEAT_RESPONSE: u8 = 17;
const INSTALL_SNAPSHOT: u8 = 18;
const INSTALL_SNAPSHOT_RESPONSE: u8 = 19;
const TIMEOUT_NOW: u8 = 20;
const READ_INDEX: u8 = 21;
const READ_INDEX_RESPONSE: u8 = 22;

/// Bytes an encoded entry takes besides its data.
pub const ENTRY_OVERHEAD_BYTES: usize = 8 + 8 + 1 + 4;

/// Bytes an AppendEntries body takes besides its entries: type, from, to, term, prev
/// index, prev term, commit, entry count.
pub const APPEND_HEADER_BYTES: usize = 1 + 8 * 6 + 4;

/// Bytes an AppendEntries carrying one entry takes besides the entry's data: an entry of
/// `limits.entry_bytes_max` needs a frame of at least that much more.
pub const ENTRY_FRAME_OVERHEAD_BYTES: usize = APPEND_HEADER_BYTES + ENTRY_OVERHEAD_BYTES;

/// Frame bytes kept free beyond `limits.message_bytes_max` for what a message carries
/// besides its entries or snapshot chunk: the AppendEntries header (entries are counted
/// with a header larger than their wire one, see `raft::store::entry_bytes`), or the
/// InstallSnapshot header with the cluster configuration (about 40 bytes per member).
pub const MESSAGE_HEADROOM_BYTES: usize = 64 * 1024;

/// Appends the body of `frame` to `out` (the frame layer adds the length prefix).
pub fn encode(frame: &PeerFrame, out: &mut Vec<u8>) {
    match frame {
        PeerFrame::Handshake {
            cluster_id,
            node_id,
            peer_addr,
            nonce,
        } => {
            out.push(if nonce.is_some() {
                HANDSHAKE_WITH_NONCE
            } else {
                HANDSHAKE
            });
            put_u64(out, *cluster_id);
            put_u64(out, *node_id);
            put_bytes(out, peer_addr.as_bytes());
            if let Some(nonce) = nonce {
                out.extend_from_slice(nonce);
            }
        }
        PeerFrame::Answer { nonce, proof } => {
            out.push(ANSWER);
            out.extend_from_slice(nonce);
            out.extend_from_slice(proof);
        }
        PeerFrame::Proof(proof) => {
            out.push(PROOF);
            out.extend_from_slice(proof);
        }
        PeerFrame::Message(message) => encode_message(message, out),
    }
}

/// Appends the body of one Raft message to `out`.
pub fn encode_message(message: &Message, out: &mut Vec<u8>) {
    out.push(type_byte(&message.body));
    put_u64(out, message.from);
    put_u64(out, message.to);
    put_u64(out, message.term);
    match &message.body {
        MessageBody::PreVote(vote) | MessageBody::Vote(vote) => {
            put_u64(out, vote.last_log_index);
            put_u64(out, vote.last_log_term);
            out.push(u8::from(vote.leadership_transfer));
        }
        MessageBody::PreVoteResponse(response) | MessageBody::VoteResponse(response) => {
            out.push(u8::from(response.granted));
        }
        MessageBody::Append(append) => {
            put_u64(out, append.prev_log_index);
            put_u64(out, append.prev_log_term);
            put_u64(out, append.commit);
            put_u32(out, crate::wire::len_u32(append.entries.len()));
            for entry in &append.entries {
                encode_entry(entry, out);
            }
        }
        MessageBody::AppendResponse(response) => {
            out.push(u8::from(response.reject));
            put_u64(out, response.index);
            put_u64(out, response.conflict_term);
            put_u64(out, response.conflict_index);
        }
        MessageBody::Heartbeat(heartbeat) => {
            put_u64(out, heartbeat.commit);
            put_u64(out, heartbeat.context);
        }
        MessageBody::HeartbeatResponse(response) => put_u64(out, response.context),
        MessageBody::InstallSnapshot(chunk) => {
            put_u64(out, chunk.meta.index);
            put_u64(out, chunk.meta.term);
            put_bytes(out, &chunk.meta.config.encode());
            put_u64(out, chunk.offset);
            put_bytes(out, &chunk.data);
            out.push(u8::from(chunk.done));
        }
        MessageBody::InstallSnapshotResponse(response) => {
            put_u64(out, response.index);
            put_u64(out, response.offset);
            out.push(u8::from(response.done));
        }
        MessageBody::TimeoutNow => {}
        MessageBody::ReadIndex(request) => put_bytes(out, &request.context),
        MessageBody::ReadIndexResponse(response) => {
            put_bytes(out, &response.context);
            put_u64(out, response.index);
        }
    }
}

fn type_byte(body: &MessageBody) -> u8 {
    match body {
        MessageBody::PreVote(_) => PRE_VOTE,
        MessageBody::PreVoteResponse(_) => PRE_VOTE_RESPONSE,
        MessageBody::Vote(_) => VOTE,
        MessageBody::VoteResponse(_) => VOTE_RESPONSE,
        MessageBody::Append(_) => APPEND,
        MessageBody::AppendResponse(_) => APPEND_RESPONSE,
        MessageBody::Heartbeat(_) => HEARTBEAT,
        MessageBody::HeartbeatResponse(_) => HEARTBEAT_RESPONSE,
        MessageBody::InstallSnapshot(_) => INSTALL_SNAPSHOT,
        MessageBody::InstallSnapshotResponse(_) => INSTALL_SNAPSHOT_RESPONSE,
        MessageBody::TimeoutNow => TIMEOUT_NOW,
        MessageBody::ReadIndex(_) => READ_INDEX,
        MessageBody::ReadIndexResponse(_) => READ_INDEX_RESPONSE,
    }
}

fn encode_entry(entry: &Entry, out: &mut Vec<u8>) {
    put_u64(out, entry.index);
    put_u64(out, entry.term);
    out.push(entry.kind as u8);
    put_bytes(out, &entry.data);
}

/// Decodes one frame body.
///
/// # Errors
/// [`DecodeError::UnknownType`] for an unknown type byte, [`DecodeError::Malformed`]
/// for a truncated or inconsistent body or trailing bytes.
pub fn decode(body: &[u8]) -> Result<PeerFrame, DecodeError> {
    let mut reader = Reader::new(body);
    let type_byte = reader.u8("message type")?;
    let frame = if type_byte == HANDSHAKE || type_byte == HANDSHAKE_WITH_NONCE {
        PeerFrame::Handshake {
            cluster_id: reader.u64("handshake cluster id")?,
            node_id: reader.u64("handshake node id")?,
            peer_addr: reader.string("handshake peer address")?,
            nonce: if type_byte == HANDSHAKE_WITH_NONCE {
                Some(reader.array("handshake nonce")?)
            } else {
                None
            },
        }
    } else if type_byte == ANSWER {
        PeerFrame::Answer {
            nonce: reader.array("answer nonce")?,
            proof: reader.array("answer proof")?,
        }
    } else if type_byte == PROOF {
        PeerFrame::Proof(reader.array("proof")?)
    } else if (PRE_VOTE..=READ_INDEX_RESPONSE).contains(&type_byte) {
        let from = reader.u64("message from")?;
        let to = reader.u64("message to")?;
        let term = reader.u64("message term")?;
        let body = decode_body(type_byte, &mut reader)?;
        PeerFrame::Message(Message {
            from,
            to,
            term,
            body,
        })
    } else {
        return Err(DecodeError::UnknownType(type_byte));
    };
    reader.finish()?;
    Ok(frame)
}

fn decode_body(type_byte: u8, reader: &mut Reader<'_>) -> Result<MessageBody, DecodeError> {
    let vote_request = |reader: &mut Reader<'_>| -> Result<VoteRequest, DecodeError> {
        Ok(VoteRequest {
            last_log_index: reader.u64("vote last log index")?,
            last_log_term: reader.u64("vote last log term")?,
            leadership_transfer: reader.bool("vote transfer flag")?,
        })
    };
    let vote_response = |reader: &mut Reader<'_>| -> Result<VoteResponse, DecodeError> {
        Ok(VoteResponse {
            granted: reader.bool("vote granted")?,
        })
    };
    Ok(match type_byte {
        PRE_VOTE => MessageBody::PreVote(vote_request(reader)?),
        VOTE => MessageBody::Vote(vote_request(reader)?),
        PRE_VOTE_RESPONSE => MessageBody::PreVoteResponse(vote_response(reader)?),
        VOTE_RESPONSE => MessageBody::VoteResponse(vote_response(reader)?),
        APPEND => {
            let prev_log_index = reader.u64("append prev index")?;
            let prev_log_term = reader.u64("append prev term")?;
            let commit = reader.u64("append commit")?;
            let count = reader.count(ENTRY_OVERHEAD_BYTES, "append entry count")?;
            let mut entries = Vec::with_capacity(count);
            for _ in 0..count {
                entries.push(decode_entry(reader)?);
            }
            MessageBody::Append(AppendRequest {
                prev_log_index,
                prev_log_term,
                entries,
                commit,
            })
        }
        APPEND_RESPONSE => MessageBody::AppendResponse(AppendResponse {
            reject: reader.bool("append response reject")?,
            index: reader.u64("append response index")?,
            conflict_term: reader.u64("append response conflict term")?,
            conflict_index: reader.u64("append response conflict index")?,
        }),
        HEARTBEAT => MessageBody::Heartbeat(Heartbeat {
            commit: reader.u64("heartbeat commit")?,
            context: reader.u64("heartbeat context")?,
        }),
        HEARTBEAT_RESPONSE => MessageBody::HeartbeatResponse(HeartbeatResponse {
            context: reader.u64("heartbeat response context")?,
        }),
        INSTALL_SNAPSHOT => {
            let index = reader.u64("snapshot index")?;
            let term = reader.u64("snapshot term")?;
            let config = Configuration::decode(reader.slice("snapshot config")?)?;
            MessageBody::InstallSnapshot(SnapshotChunk {
                meta: SnapshotMeta {
                    index,
                    term,
                    config,
                },
                offset: reader.u64("snapshot offset")?,
                data: reader.bytes("snapshot data")?,
                done: reader.bool("snapshot done")?,
            })
        }
        INSTALL_SNAPSHOT_RESPONSE => MessageBody::InstallSnapshotResponse(SnapshotResponse {
            index: reader.u64("snapshot response index")?,
            offset: reader.u64("snapshot response offset")?,
            done: reader.bool("snapshot response done")?,
        }),
        TIMEOUT_NOW => MessageBody::TimeoutNow,
        READ_INDEX => MessageBody::ReadIndex(ReadIndexRequest {
            context: reader.bytes("read index context")?,
        }),
        READ_INDEX_RESPONSE => MessageBody::ReadIndexResponse(ReadIndexResponse {
            context: reader.bytes("read index response context")?,
            index: reader.u64("read index response index")?,
        }),
        other => return Err(DecodeError::UnknownType(other)),
    })
}

fn decode_entry(reader: &mut Reader<'_>) -> Result<Entry, DecodeError> {
    let index = reader.u64("entry index")?;
    let term = reader.u64("entry term")?;
    let kind =
        EntryKind::from_u8(reader.u8("entry kind")?).ok_or(DecodeError::Malformed("entry kind"))?;
    // Straight from the frame into the shared payload: one copy, as before.
    let data = Arc::from(reader.slice("entry data")?);
    Ok(Entry {
        index,
        term,
        kind,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::alloc_probe::{BYTES_PER_INPUT_BYTE_MAX, assert_bounded};
    use proptest::prelude::*;

    fn samples() -> Vec<PeerFrame> {
        let message = |body| {
            PeerFrame::Message(Message {
                from: 1,
                to: 2,
                term: 7,
                body,
            })
        };
        let entry = |index, kind, data: &[u8]| Entry {
            index,
            term: 7,
            kind,
            data: Arc::from(data),
        };
        let vote = VoteRequest {
            last_log_index: 9,
            last_log_term: 6,
            leadership_transfer: true,
        };
        vec![
            PeerFrame::Handshake {
                cluster_id: 42,
                node_id: 3,
                peer_addr: "127.0.0.1:7003".into(),
                nonce: None,
            },
            PeerFrame::Handshake {
                cluster_id: 42,
                node_id: 3,
                peer_addr: "127.0.0.1:7003".into(),
                nonce: Some([7; 32]),
            },
            PeerFrame::Answer {
                nonce: [1; 32],
                proof: [2; 32],
            },
            PeerFrame::Proof([3; 32]),
            message(MessageBody::PreVote(vote)),
            message(MessageBody::Vote(vote)),
            message(MessageBody::PreVoteResponse(VoteResponse { granted: true })),
            message(MessageBody::VoteResponse(VoteResponse { granted: false })),
            message(MessageBody::Append(AppendRequest {
                prev_log_index: 4,
                prev_log_term: 5,
                entries: vec![
                    entry(5, EntryKind::Noop, b""),
                    entry(6, EntryKind::Normal, b"put x"),
                    entry(
                        7,
                        EntryKind::Config,
                        &Configuration::new([1, 2], [3]).encode(),
                    ),
                ],
                commit: 3,
            })),
            message(MessageBody::AppendResponse(AppendResponse {
                reject: true,
                index: 10,
                conflict_term: 4,
                conflict_index: 8,
            })),
            message(MessageBody::Heartbeat(Heartbeat {
                commit: 11,
                context: 2,
            })),
            message(MessageBody::HeartbeatResponse(HeartbeatResponse {
                context: 2,
            })),
            message(MessageBody::InstallSnapshot(SnapshotChunk {
                meta: SnapshotMeta {
                    index: 100,
                    term: 6,
                    config: Configuration::new([1, 2], []),
                },
                offset: 4096,
                data: vec![9; 100],
                done: false,
            })),
            message(MessageBody::InstallSnapshotResponse(SnapshotResponse {
                index: 100,
                offset: 4196,
                done: true,
            })),
            message(MessageBody::TimeoutNow),
            message(MessageBody::ReadIndex(ReadIndexRequest {
                context: b"ctx".to_vec(),
            })),
            message(MessageBody::ReadIndexResponse(ReadIndexResponse {
                context: b"ctx".to_vec(),
                index: 12,
            })),
        ]
    }

    #[test]
    fn every_kind_round_trips_and_every_truncation_is_an_error() {
        for (i, frame) in samples().into_iter().enumerate() {
            let mut body = Vec::new();
            encode(&frame, &mut body);
            assert_eq!(decode(&body), Ok(frame), "#{i}: round trip");
            for len in 0..body.len() {
                assert!(
                    decode(&body[..len]).is_err(),
                    "#{i}: prefix of {len} bytes decoded"
                );
            }
            body.push(0);
            assert!(decode(&body).is_err(), "#{i}: trailing byte accepted");
        }
    }

    #[test]
    fn unknown_type_is_named() {
        assert_eq!(decode(&[99, 0]), Err(DecodeError::UnknownType(99)));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            assert_bounded(&body, BYTES_PER_INPUT_BYTE_MAX, 0, |b| decode(b).is_ok());
        }

        /// A valid header of every message type followed by a hostile count or length
        /// (the AppendEntries entry count, a snapshot chunk's length...) and a few
        /// bytes: refused or decoded within the allocation bound.
        #[test]
        fn hostile_counts_allocate_within_the_input(
            type_byte in HANDSHAKE..=READ_INDEX_RESPONSE,
            fields in proptest::collection::vec(any::<u64>(), 0..6),
            claimed in any::<u32>(),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut body = vec![type_byte];
            for field in fields {
                put_u64(&mut body, field);
            }
            put_u32(&mut body, claimed);
            body.extend_from_slice(&tail);
            assert_bounded(&body, BYTES_PER_INPUT_BYTE_MAX, 0, |b| decode(b).is_ok());
        }

        #[test]
        fn mutated_valid_frames_never_panic(
            which in 0usize..14, at in any::<prop::sample::Index>(), byte in any::<u8>()
        ) {
            let frames = samples();
            let mut body = Vec::new();
            encode(&frames[which % frames.len()], &mut body);
            let at = at.index(body.len());
            body[at] = byte;
            assert_bounded(&body, BYTES_PER_INPUT_BYTE_MAX, 0, |b| decode(b).is_ok());
        }
    }

    /// Goal: whatever the client writes within `limits.entry_bytes_max`, the raft
    /// core's batching (`message_bytes_max`, snapshot chunks of the same size) never
    /// produces a message this codec cannot frame within `frame_bytes_max`, with the
    /// limits set as tight as the config validation allows. Method: three real
    /// `RawNode`s over `MemStore`s; a follower cut off while entries of random sizes
    /// (maximal ones included) are written, then reconnected to catch up from stored
    /// entries, then cut off again and brought back past a compaction so it needs a
    /// multi-chunk snapshot. Every message delivered is encoded and measured.
    mod batches_fit_frames {
        use std::collections::{BTreeMap, VecDeque};

        use proptest::prelude::*;

        use super::super::*;
        use crate::raft::{self, MemStore, RawNode};

        const FRAME_BYTES_MAX: usize = 100_000;
        const MESSAGE_BYTES_MAX: usize = FRAME_BYTES_MAX - MESSAGE_HEADROOM_BYTES;
        const ENTRY_BYTES_MAX: usize = FRAME_BYTES_MAX - ENTRY_FRAME_OVERHEAD_BYTES;

        #[derive(Default)]
        struct Seen {
            largest_frame: usize,
            multi_entry_appends: usize,
            maximal_entry_appends: usize,
            snapshot_chunks: usize,
        }

        struct Cluster {
            nodes: BTreeMap<NodeId, RawNode<MemStore>>,
            queue: VecDeque<Message>,
            isolated: Option<NodeId>,
            seen: Seen,
        }

        impl Cluster {
            fn new() -> Cluster {
                let membership = Configuration::new([1, 2, 3], []);
                let nodes = (1..=3)
                    .map(|id| {
                        let mut config = raft::Config::new(id);
                        config.election_ticks = 10;
                        config.heartbeat_ticks = 1;
                        config.message_bytes_max = MESSAGE_BYTES_MAX as u64;
                        config.snapshot_chunk_bytes_max = MESSAGE_BYTES_MAX as u64;
                        let store = MemStore::new(membership.clone());
                        (id, RawNode::new(config, store, id).expect("valid config"))
                    })
                    .collect();
                Cluster {
                    nodes,
                    queue: VecDeque::new(),
                    isolated: None,
                    seen: Seen::default(),
                }
            }

            fn node(&mut self, id: NodeId) -> &mut RawNode<MemStore> {
                self.nodes.get_mut(&id).expect("node")
            }

            /// Handles Readies and delivers messages until quiescent, measuring each.
            fn deliver(&mut self) {
                loop {
                    for node in self.nodes.values_mut() {
                        while node.has_ready() {
                            let ready = node.ready().expect("ready");
                            self.queue.extend(ready.messages.iter().cloned());
                            let store = node.store_mut();
                            for chunk in &ready.snapshot_chunks {
                                store.write_snapshot_chunk(chunk);
                            }
                            if let Some(snapshot) = &ready.snapshot {
                                store.apply_snapshot(snapshot.clone());
                            }
                            store.append(&ready.entries);
                            if let Some(hard_state) = ready.hard_state {
                                store.set_hard_state(hard_state);
                            }
                            self.queue.extend(ready.messages_after_sync.iter().cloned());
                            node.advance(ready).expect("advance");
                        }
                    }
                    let Some(message) = self.queue.pop_front() else {
                        return;
                    };
                    if self
                        .isolated
                        .is_some_and(|id| id == message.from || id == message.to)
                    {
                        continue;
                    }
                    self.measure(&message);
                    self.node(message.to).step(message).expect("step");
                }
            }

            fn measure(&mut self, message: &Message) {
                let mut body = Vec::new();
                encode_message(message, &mut body);
                assert!(
                    body.len() <= FRAME_BYTES_MAX,
                    "a message of {} bytes (type {}) does not fit a frame of {FRAME_BYTES_MAX}",
                    body.len(),
                    type_byte(&message.body)
                );
                let seen = &mut self.seen;
                seen.largest_frame = seen.largest_frame.max(body.len());
                match &message.body {
                    MessageBody::Append(append) => {
                        seen.multi_entry_appends += usize::from(append.entries.len() > 1);
                        seen.maximal_entry_appends += usize::from(
                            append
                                .entries
                                .iter()
                                .any(|e| e.data.len() == ENTRY_BYTES_MAX),
                        );
                    }
                    MessageBody::InstallSnapshot(_) => seen.snapshot_chunks += 1,
                    _ => {}
                }
            }

            fn tick_leader(&mut self, times: usize) {
                for _ in 0..times {
                    self.node(1).tick().expect("tick");
                    self.deliver();
                }
            }

            fn propose(&mut self, sizes: &[usize]) {
                for &size in sizes {
                    self.node(1).propose(vec![7u8; size]).expect("leader");
                    self.deliver();
                }
            }
        }

        fn entry_size() -> impl Strategy<Value = usize> {
            prop_oneof![
                Just(ENTRY_BYTES_MAX),
                Just(MESSAGE_BYTES_MAX),
                Just(MESSAGE_BYTES_MAX - 24),
                0usize..64,
                0usize..MESSAGE_BYTES_MAX / 3,
                0usize..=ENTRY_BYTES_MAX,
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(24))]
            #[test]
            fn every_message_fits_a_frame(
                sizes in proptest::collection::vec(entry_size(), 1..24),
                snapshot_bytes in MESSAGE_BYTES_MAX..4 * MESSAGE_BYTES_MAX,
            ) {
                let mut cluster = Cluster::new();
                cluster.node(1).campaign().expect("campaign");
                cluster.deliver();
                cluster.isolated = Some(3);
                // The maximal entry always goes first, so every case sends one alone.
                cluster.propose(&[ENTRY_BYTES_MAX]);
                cluster.propose(&sizes);
                cluster.isolated = None;
                cluster.tick_leader(3 + sizes.len());
                let last = cluster.node(1).status().last_index;
                prop_assert_eq!(cluster.node(3).status().last_index, last);
                prop_assert!(cluster.seen.maximal_entry_appends > 0);

                cluster.isolated = Some(3);
                cluster.propose(&sizes[..1]);
                let applied = cluster.node(1).status().applied;
                let data: Vec<u8> = (0..snapshot_bytes).map(|i| i as u8).collect();
                let snapshot = cluster.node(1).build_snapshot(applied, data).expect("applied");
                cluster.node(1).store_mut().compact(snapshot);
                cluster.isolated = None;
                cluster.tick_leader(8);
                prop_assert!(cluster.seen.snapshot_chunks >= 2);
                prop_assert_eq!(cluster.node(3).status().last_index, applied);
                prop_assert!(cluster.seen.largest_frame <= FRAME_BYTES_MAX);
            }
        }

        #[test]
        fn many_small_entries_are_batched_below_the_message_limit() {
            let mut cluster = Cluster::new();
            cluster.node(1).campaign().expect("campaign");
            cluster.deliver();
            cluster.isolated = Some(3);
            cluster.propose(&[MESSAGE_BYTES_MAX / 7; 40]);
            cluster.isolated = None;
            cluster.tick_leader(40);
            assert!(
                cluster.seen.multi_entry_appends > 0,
                "catching up used batches"
            );
            assert!(cluster.seen.largest_frame <= MESSAGE_BYTES_MAX + APPEND_HEADER_BYTES);
        }
    }
}
