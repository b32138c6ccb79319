//! PeerMessageCodec: Raft messages between nodes, one per frame.
//!
//! A peer connection opens with a [`PeerFrame::Handshake`] from the dialing side
//! (cluster id, node id, and the peer address it listens on, so that a node that
//! has no configuration yet — one started with `--join` — can answer the leader
//! that dialed it); every later frame is a [`PeerFrame::Message`]. The receiving
//! node refuses a handshake with a foreign cluster id.
//!
//! Body layout (little-endian): `type: u8 | fields...`. Messages carry
//! `from: u64 | to: u64 | term: u64` after the type byte, then the kind's fields;
//! entries are `index: u64 | term: u64 | kind: u8 | data: u32 len + bytes`;
//! byte strings are `u32 len + bytes`; booleans one byte, 0 or 1. The full table
//! is in docs/FORMAT.md. Decoding checks every length against the frame before
//! allocating, and rejects trailing bytes.

use std::sync::Arc;

use super::DecodeError;
use super::wire::{Reader, put_bytes, put_u32, put_u64};
use crate::raft::message::{
    AppendRequest, AppendResponse, Configuration, Entry, EntryKind, Heartbeat, HeartbeatResponse,
    Message, MessageBody, NodeId, ReadIndexRequest, ReadIndexResponse, SnapshotChunk, SnapshotMeta,
    SnapshotResponse, VoteRequest, VoteResponse,
};

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
    },
    /// A Raft message.
    Message(Message),
}

const HANDSHAKE: u8 = 1;
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
        } => {
            out.push(HANDSHAKE);
            put_u64(out, *cluster_id);
            put_u64(out, *node_id);
            put_bytes(out, peer_addr.as_bytes());
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
            put_u32(out, super::wire::len_u32(append.entries.len()));
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
    let frame = if type_byte == HANDSHAKE {
        PeerFrame::Handshake {
            cluster_id: reader.u64("handshake cluster id")?,
            node_id: reader.u64("handshake node id")?,
            peer_addr: reader.string("handshake peer address")?,
        }
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
            },
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
            let _ = decode(&body);
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
            let _ = decode(&body);
        }
    }
}
