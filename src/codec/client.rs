//! ClientMessageCodec: the client protocol, one message per frame ([`super::frame`]).
//!
//! Every message body is `version u8 | type u8 | request_id u64 | fields`, little-endian;
//! docs/FORMAT.md tabulates the types and their fields.
//! The request id is chosen by the client per connection and echoed in the response, so
//! a client may pipeline many requests and match the replies (which may come back out of
//! order: a stale read is answered before an earlier write commits).
//!
//! Writes carry a [`Command`] encoded exactly as in a log entry (`kv::command`), and
//! results carry a [`CommandResult`] encoded as the state machine records it, so the
//! server proposes and answers without re-encoding into a second format.
//!
//! Invariant: decoding never panics and allocates at most the frame's length: every
//! length and count is checked against the bytes left in the frame (`wire::Reader`).

use super::backup::{self, BackupReply, BackupRequest};
use crate::kv::command::{encode_command, encode_result, read_command, read_result};
use crate::kv::{Command, CommandResult, RangeQuery, RangeResult};
use crate::raft::message::NodeId;
use crate::wire::{Reader, len_u32, put_bytes, put_u32, put_u64};

use super::frame::FrameCodec;
use crate::wire::DecodeError;

/// Version byte at the start of every client message body.
pub const CLIENT_PROTOCOL_VERSION: u8 = 1;

/// A client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Chosen by the client, echoed in the [`Response`].
    pub request_id: u64,
    /// What is asked.
    pub body: RequestBody,
}

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestBody {
    /// Reads `key` without writing to the log: through ReadIndex on the leader
    /// (linearizable), or from the local state of whichever node receives it if `stale`.
    Get {
        /// The key.
        key: Vec<u8>,
        /// Serve from the local applied state, possibly stale.
        stale: bool,
    },
    /// A command to propose to the log: a write (Put, Delete, Cas, Txn, each with its
    /// session), `RegisterSession`, or a `Get` that must be ordered through the log.
    Command(Command),
    /// An ordered range read ([`RangeQuery`]), answered [`ResponseBody::Range`]: through
    /// ReadIndex on the leader like a Get, or from local state if `stale`.
    Range {
        /// The keys and what to answer of them.
        query: RangeQuery,
        /// Serve from the local applied state, possibly stale.
        stale: bool,
    },
    /// The expiry time of `key`, answered `Result(CommandResult::Integer(n))`: -2 if
    /// the key is absent (or expired), -1 if it has none, else the milliseconds left
    /// (or, with `absolute`, the unix time in milliseconds). Through ReadIndex on the
    /// leader, judged by its clock, like a Get; from local state and the receiving
    /// node's clock if `stale`.
    Ttl {
        /// The key.
        key: Vec<u8>,
        /// Answer the unix time instead of the time left.
        absolute: bool,
        /// Serve from the local applied state, possibly stale.
        stale: bool,
    },
    /// The node's view of the cluster ([`Status`]).
    Status,
    /// The node's counters ([`ResponseBody::Metrics`]).
    Metrics,
    /// A single-server membership change, leader only; answered
    /// `Result(CommandResult::Ok)` once the new configuration is committed.
    MemberChange(MemberChange),
    /// Hand leadership to voter `id` (Raft thesis section 3.10), leader only;
    /// answered `Result(CommandResult::Ok)` once the transfer has started (the
    /// target then campaigns at once; watch [`Status::leader_id`]).
    TransferLeader {
        /// The voter to lead next.
        id: NodeId,
    },
    /// A step of a snapshot save (`raftkv-cli snapshot save`), served by the node
    /// server; answered [`ResponseBody::Backup`].
    Backup(BackupRequest),
    /// Streams the changes this node applies to `key` (or, with `prefix`, to every key
    /// starting with it) from the next one on: first [`ResponseBody::Watch`] with a
    /// [`WatchKind::Started`] event, then one per change, all with this request's id,
    /// until the connection closes. Served by any node (client port only).
    Watch {
        /// The key, or the prefix.
        key: Vec<u8>,
        /// `key` is a prefix.
        prefix: bool,
    },
}

/// What a [`WatchEvent`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum WatchKind {
    /// The watch is in place; events follow from the entry after `revision`.
    Started = 1,
    /// The key was written; `value` is its value after the entry.
    Put = 2,
    /// The key was deleted.
    Delete = 3,
}

/// One event of a watch stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The log index of the entry that made the change (for `Started`: the node's
    /// applied index when the watch started).
    pub revision: u64,
    /// What happened.
    pub kind: WatchKind,
    /// The key (empty for `Started`).
    pub key: Vec<u8>,
    /// The value after a `Put` (empty otherwise).
    pub value: Vec<u8>,
}

/// A membership change asked of the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    /// Adds node `id` as a learner (it receives the log; promote it to vote).
    AddLearner {
        /// The new node's id (non-zero, never used by a member before).
        id: NodeId,
        /// The address its peers dial (`host:port`).
        peer_addr: String,
        /// The address its clients connect to (`host:port`).
        client_addr: String,
    },
    /// Makes learner `id` a voter; refused while it lags more than the leader's
    /// promotion distance.
    Promote {
        /// The learner.
        id: NodeId,
    },
    /// Removes voter or learner `id` (the leader included).
    Remove {
        /// The member.
        id: NodeId,
    },
}

/// A reply to one [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The id of the request answered.
    pub request_id: u64,
    /// The answer.
    pub body: ResponseBody,
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseBody {
    /// The state machine's result: `Value` for reads, `Ok` / `NotFound` / `CasFailed` /
    /// `Txn` / `Registered` / `SessionExpired` / `StaleSequence` for commands.
    Result(CommandResult),
    /// This node is not the leader; retry at the leader if one is known.
    NotLeader {
        /// The leader this node knows of, or `NO_NODE`.
        leader_id: NodeId,
        /// That leader's client address, when known.
        leader_client_addr: Option<String>,
    },
    /// The request cannot be served now (no leader, shutting down, overloaded); retry.
    Unavailable(String),
    /// The request was refused (for example a command too large for a log entry).
    Error(String),
    /// The answer to [`RequestBody::Range`].
    Range(RangeResult),
    /// The answer to [`RequestBody::Status`].
    Status(Status),
    /// The answer to [`RequestBody::Metrics`]: counter names and values, in the server's
    /// order.
    Metrics(Vec<(String, u64)>),
    /// The answer to [`RequestBody::Backup`].
    Backup(BackupReply),
    /// One event of the stream a [`RequestBody::Watch`] asked for.
    Watch(WatchEvent),
}

/// A node's Raft role as reported by [`Status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower = 1,
    /// Runs a pre-vote before campaigning.
    PreCandidate = 2,
    /// Campaigns for leadership.
    Candidate = 3,
    /// Leads the cluster.
    Leader = 4,
}

impl Role {
    fn from_u8(byte: u8) -> Option<Role> {
        Some(match byte {
            1 => Role::Follower,
            2 => Role::PreCandidate,
            3 => Role::Candidate,
            4 => Role::Leader,
            _ => return None,
        })
    }

    /// A short lowercase name for tables and logs.
    pub fn name(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        }
    }
}

/// One member of the cluster as a node knows it (the configuration in force).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's node id.
    pub id: NodeId,
    /// Votes and counts for commit (`false`: a learner).
    pub voter: bool,
    /// The address peers dial (empty when unknown).
    pub peer_addr: String,
    /// The address clients connect to (empty when unknown).
    pub client_addr: String,
    /// The last index known to be in the member's log: reported by the leader
    /// only (0 elsewhere).
    pub match_index: u64,
}

/// A node's view of itself and the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// This node's id.
    pub node_id: NodeId,
    /// This node's role.
    pub role: Role,
    /// This node's current term.
    pub term: u64,
    /// The leader this node knows of, or `NO_NODE`.
    pub leader_id: NodeId,
    /// The highest index known committed.
    pub commit_index: u64,
    /// The highest index applied to the state machine.
    pub applied_index: u64,
    /// The last index of this node's log.
    pub last_index: u64,
    /// Index of the `Config` entry in force (0: the bootstrap configuration).
    pub config_index: u64,
    /// How far behind its leader a learner may be to be promoted, in entries.
    pub promote_distance_max: u64,
    /// The members of the configuration in force, voters first (empty on a node
    /// started with `--join` that has not been added yet).
    pub members: Vec<Member>,
}

const REQ_GET: u8 = 1;
const REQ_COMMAND: u8 = 2;
const REQ_STATUS: u8 = 3;
const REQ_METRICS: u8 = 4;
const REQ_MEMBER_ADD_LEARNER: u8 = 5;
const REQ_MEMBER_PROMOTE: u8 = 6;
const REQ_MEMBER_REMOVE: u8 = 7;
const REQ_TRANSFER_LEADER: u8 = 8;
const REQ_RANGE: u8 = 9;
const REQ_TTL: u8 = 11;
const REQ_BACKUP: u8 = 10;
const REQ_WATCH: u8 = 16;

const RESP_RESULT: u8 = 1;
const RESP_NOT_LEADER: u8 = 2;
const RESP_UNAVAILABLE: u8 = 3;
const RESP_ERROR: u8 = 4;
const RESP_STATUS: u8 = 5;
const RESP_METRICS: u8 = 6;
const RESP_RANGE: u8 = 7;
const RESP_BACKUP: u8 = 10;
const RESP_WATCH: u8 = 16;

/// Range flags: leave the values out, answer a count only, serve stale.
const RANGE_KEYS_ONLY: u8 = 1;
const RANGE_COUNT_ONLY: u8 = 2;
const RANGE_STALE: u8 = 4;
const TTL_ABSOLUTE: u8 = 1;
const TTL_STALE: u8 = 2;

/// Appends the body of `request` (no frame header) to `out`.
pub fn encode_request(request: &Request, out: &mut Vec<u8>) {
    out.push(CLIENT_PROTOCOL_VERSION);
    let kind = match &request.body {
        RequestBody::Get { .. } => REQ_GET,
        RequestBody::Command(_) => REQ_COMMAND,
        RequestBody::Status => REQ_STATUS,
        RequestBody::Metrics => REQ_METRICS,
        RequestBody::MemberChange(MemberChange::AddLearner { .. }) => REQ_MEMBER_ADD_LEARNER,
        RequestBody::MemberChange(MemberChange::Promote { .. }) => REQ_MEMBER_PROMOTE,
        RequestBody::MemberChange(MemberChange::Remove { .. }) => REQ_MEMBER_REMOVE,
        RequestBody::TransferLeader { .. } => REQ_TRANSFER_LEADER,
        RequestBody::Range { .. } => REQ_RANGE,
        RequestBody::Ttl { .. } => REQ_TTL,
        RequestBody::Backup(_) => REQ_BACKUP,
        RequestBody::Watch { .. } => REQ_WATCH,
    };
    out.push(kind);
    put_u64(out, request.request_id);
    match &request.body {
        RequestBody::Get { key, stale } => {
            put_bytes(out, key);
            out.push(u8::from(*stale));
        }
        RequestBody::Command(command) => encode_command(command, out),
        RequestBody::Range { query, stale } => {
            put_bytes(out, &query.start);
            match &query.end {
                Some(end) => {
                    out.push(1);
                    put_bytes(out, end);
                }
                None => out.push(0),
            }
            put_u64(out, query.limit);
            let mut flags = 0;
            for (on, flag) in [
                (query.keys_only, RANGE_KEYS_ONLY),
                (query.count_only, RANGE_COUNT_ONLY),
                (*stale, RANGE_STALE),
            ] {
                if on {
                    flags |= flag;
                }
            }
            out.push(flags);
        }
        RequestBody::Ttl {
            key,
            absolute,
            stale,
        } => {
            put_bytes(out, key);
            let absolute = if *absolute { TTL_ABSOLUTE } else { 0 };
            out.push(absolute | if *stale { TTL_STALE } else { 0 });
        }
        RequestBody::Watch { key, prefix } => {
            put_bytes(out, key);
            out.push(u8::from(*prefix));
        }
        RequestBody::Status | RequestBody::Metrics => {}
        RequestBody::MemberChange(MemberChange::AddLearner {
            id,
            peer_addr,
            client_addr,
        }) => {
            put_u64(out, *id);
            put_bytes(out, peer_addr.as_bytes());
            put_bytes(out, client_addr.as_bytes());
        }
        RequestBody::MemberChange(MemberChange::Promote { id } | MemberChange::Remove { id })
        | RequestBody::TransferLeader { id } => put_u64(out, *id),
        RequestBody::Backup(request) => backup::encode_request(request, out),
    }
}

/// Decodes one request body (the contents of one frame).
///
/// # Errors
/// [`DecodeError::UnknownType`] for an unknown message type, [`DecodeError::Malformed`]
/// for anything else that does not parse exactly.
pub fn decode_request(body: &[u8]) -> Result<Request, DecodeError> {
    decode_request_with_command_bytes(body).map(|(request, _)| request)
}

/// Decodes one request body as [`decode_request`] does and, for a
/// [`RequestBody::Command`], also returns the bytes of `body` that encode the command.
/// Those are exactly the payload of its log entry (see the module docs), so the server
/// proposes them as they came instead of re-encoding the decoded command; decoding them
/// first validates them as the state machine will read them.
///
/// # Errors
/// As [`decode_request`].
pub fn decode_request_with_command_bytes(
    body: &[u8],
) -> Result<(Request, Option<&[u8]>), DecodeError> {
    let mut input = Reader::new(body);
    let kind = read_header(&mut input)?;
    let request_id = input.u64("request id")?;
    let mut command_bytes = None;
    let body = match kind {
        REQ_GET => RequestBody::Get {
            key: input.bytes("get key")?,
            stale: input.bool("get stale flag")?,
        },
        REQ_COMMAND => {
            let start = input.rest();
            let command = read_command(&mut input)?;
            command_bytes = Some(&start[..start.len() - input.rest().len()]);
            RequestBody::Command(command)
        }
        REQ_RANGE => {
            let start = input.bytes("range start")?;
            let end = if input.bool("range end presence")? {
                Some(input.bytes("range end")?)
            } else {
                None
            };
            let limit = input.u64("range limit")?;
            let flags = input.u8("range flags")?;
            if flags & !(RANGE_KEYS_ONLY | RANGE_COUNT_ONLY | RANGE_STALE) != 0 {
                return Err(DecodeError::Malformed("unknown range flags"));
            }
            RequestBody::Range {
                query: RangeQuery {
                    start,
                    end,
                    limit,
                    keys_only: flags & RANGE_KEYS_ONLY != 0,
                    count_only: flags & RANGE_COUNT_ONLY != 0,
                },
                stale: flags & RANGE_STALE != 0,
            }
        }
        REQ_TTL => {
            let key = input.bytes("ttl key")?;
            let flags = input.u8("ttl flags")?;
            if flags & !(TTL_ABSOLUTE | TTL_STALE) != 0 {
                return Err(DecodeError::Malformed("unknown ttl flags"));
            }
            RequestBody::Ttl {
                key,
                absolute: flags & TTL_ABSOLUTE != 0,
                stale: flags & TTL_STALE != 0,
            }
        }
        REQ_STATUS => RequestBody::Status,
        REQ_METRICS => RequestBody::Metrics,
        REQ_MEMBER_ADD_LEARNER => RequestBody::MemberChange(MemberChange::AddLearner {
            id: input.u64("member id")?,
            peer_addr: input.string("member peer address")?,
            client_addr: input.string("member client address")?,
        }),
        REQ_MEMBER_PROMOTE => RequestBody::MemberChange(MemberChange::Promote {
            id: input.u64("member id")?,
        }),
        REQ_MEMBER_REMOVE => RequestBody::MemberChange(MemberChange::Remove {
            id: input.u64("member id")?,
        }),
        REQ_TRANSFER_LEADER => RequestBody::TransferLeader {
            id: input.u64("transfer target")?,
        },
        REQ_BACKUP => RequestBody::Backup(backup::read_request(&mut input)?),
        REQ_WATCH => RequestBody::Watch {
            key: input.bytes("watch key")?,
            prefix: input.bool("watch prefix flag")?,
        },
        other => return Err(DecodeError::UnknownType(other)),
    };
    input.finish()?;
    Ok((Request { request_id, body }, command_bytes))
}

/// Appends the body of `response` (no frame header) to `out`.
pub fn encode_response(response: &Response, out: &mut Vec<u8>) {
    out.push(CLIENT_PROTOCOL_VERSION);
    let kind = match &response.body {
        ResponseBody::Result(_) => RESP_RESULT,
        ResponseBody::NotLeader { .. } => RESP_NOT_LEADER,
        ResponseBody::Unavailable(_) => RESP_UNAVAILABLE,
        ResponseBody::Error(_) => RESP_ERROR,
        ResponseBody::Status(_) => RESP_STATUS,
        ResponseBody::Metrics(_) => RESP_METRICS,
        ResponseBody::Range(_) => RESP_RANGE,
        ResponseBody::Backup(_) => RESP_BACKUP,
        ResponseBody::Watch(_) => RESP_WATCH,
    };
    out.push(kind);
    put_u64(out, response.request_id);
    match &response.body {
        ResponseBody::Result(result) => encode_result(result, out),
        ResponseBody::NotLeader {
            leader_id,
            leader_client_addr,
        } => {
            put_u64(out, *leader_id);
            match leader_client_addr {
                Some(addr) => {
                    out.push(1);
                    put_bytes(out, addr.as_bytes());
                }
                None => out.push(0),
            }
        }
        ResponseBody::Unavailable(message) | ResponseBody::Error(message) => {
            put_bytes(out, message.as_bytes());
        }
        ResponseBody::Status(status) => encode_status(status, out),
        ResponseBody::Range(result) => {
            put_u64(out, result.count);
            out.push(u8::from(result.more));
            put_u32(out, len_u32(result.entries.len()));
            for (key, value) in &result.entries {
                put_bytes(out, key);
                put_bytes(out, value);
            }
        }
        ResponseBody::Metrics(counters) => {
            put_u32(out, len_u32(counters.len()));
            for (name, value) in counters {
                put_bytes(out, name.as_bytes());
                put_u64(out, *value);
            }
        }
        ResponseBody::Backup(reply) => backup::encode_reply(reply, out),
        ResponseBody::Watch(event) => {
            put_u64(out, event.revision);
            out.push(event.kind as u8);
            put_bytes(out, &event.key);
            put_bytes(out, &event.value);
        }
    }
}

fn encode_status(status: &Status, out: &mut Vec<u8>) {
    put_u64(out, status.node_id);
    out.push(status.role as u8);
    put_u64(out, status.term);
    put_u64(out, status.leader_id);
    put_u64(out, status.commit_index);
    put_u64(out, status.applied_index);
    put_u64(out, status.last_index);
    put_u64(out, status.config_index);
    put_u64(out, status.promote_distance_max);
    put_u32(out, len_u32(status.members.len()));
    for member in &status.members {
        put_u64(out, member.id);
        out.push(u8::from(member.voter));
        put_bytes(out, member.peer_addr.as_bytes());
        put_bytes(out, member.client_addr.as_bytes());
        put_u64(out, member.match_index);
    }
}

fn read_status(input: &mut Reader<'_>) -> Result<Status, DecodeError> {
    let node_id = input.u64("status node id")?;
    let role = Role::from_u8(input.u8("status role")?).ok_or(DecodeError::Malformed("role"))?;
    let term = input.u64("status term")?;
    let leader_id = input.u64("status leader id")?;
    let commit_index = input.u64("status commit index")?;
    let applied_index = input.u64("status applied index")?;
    let last_index = input.u64("status last index")?;
    let config_index = input.u64("status config index")?;
    let promote_distance_max = input.u64("status promotion distance")?;
    // Smallest member: id + flag + two empty addresses + match index = 25 bytes.
    let count = input.count(25, "status member count")?;
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        members.push(Member {
            id: input.u64("member id")?,
            voter: input.bool("member voter flag")?,
            peer_addr: input.string("member peer address")?,
            client_addr: input.string("member client address")?,
            match_index: input.u64("member match index")?,
        });
    }
    Ok(Status {
        node_id,
        role,
        term,
        leader_id,
        commit_index,
        applied_index,
        last_index,
        config_index,
        promote_distance_max,
        members,
    })
}

/// Decodes one response body (the contents of one frame).
///
/// # Errors
/// As [`decode_request`].
pub fn decode_response(body: &[u8]) -> Result<Response, DecodeError> {
    let mut input = Reader::new(body);
    let kind = read_header(&mut input)?;
    let request_id = input.u64("request id")?;
    let body = match kind {
        RESP_RESULT => ResponseBody::Result(read_result(&mut input)?),
        RESP_NOT_LEADER => ResponseBody::NotLeader {
            leader_id: input.u64("leader id")?,
            leader_client_addr: if input.bool("leader address presence")? {
                Some(input.string("leader address")?)
            } else {
                None
            },
        },
        RESP_UNAVAILABLE => ResponseBody::Unavailable(input.string("unavailable reason")?),
        RESP_ERROR => ResponseBody::Error(input.string("error message")?),
        RESP_STATUS => ResponseBody::Status(read_status(&mut input)?),
        RESP_RANGE => {
            let count = input.u64("range count")?;
            let more = input.bool("range more flag")?;
            // Smallest entry: two empty byte strings = 8 bytes.
            let len = input.count(8, "range entry count")?;
            let mut entries = Vec::with_capacity(len);
            for _ in 0..len {
                entries.push((input.bytes("range key")?, input.bytes("range value")?));
            }
            ResponseBody::Range(RangeResult {
                entries,
                count,
                more,
            })
        }
        RESP_METRICS => {
            // Smallest counter: empty name + value = 12 bytes.
            let count = input.count(12, "metrics count")?;
            let mut counters = Vec::with_capacity(count);
            for _ in 0..count {
                counters.push((input.string("metric name")?, input.u64("metric value")?));
            }
            ResponseBody::Metrics(counters)
        }
        RESP_BACKUP => ResponseBody::Backup(backup::read_reply(&mut input)?),
        RESP_WATCH => ResponseBody::Watch(WatchEvent {
            revision: input.u64("watch revision")?,
            kind: match input.u8("watch kind")? {
                1 => WatchKind::Started,
                2 => WatchKind::Put,
                3 => WatchKind::Delete,
                _ => return Err(DecodeError::Malformed("watch kind")),
            },
            key: input.bytes("watch key")?,
            value: input.bytes("watch value")?,
        }),
        other => return Err(DecodeError::UnknownType(other)),
    };
    input.finish()?;
    Ok(Response { request_id, body })
}

fn read_header(input: &mut Reader<'_>) -> Result<u8, DecodeError> {
    if input.u8("protocol version")? != CLIENT_PROTOCOL_VERSION {
        return Err(DecodeError::Malformed(
            "unsupported client protocol version",
        ));
    }
    input.u8("message type")
}

/// The client chain: [`FrameCodec`] then the client messages, for a byte stream.
#[derive(Debug, Clone, Copy)]
pub struct ClientCodec {
    /// The frame layer (its `frame_bytes_max` bounds every message).
    pub frame: FrameCodec,
}

impl ClientCodec {
    /// A codec accepting message bodies up to `frame_bytes_max` bytes.
    pub fn new(frame_bytes_max: u32) -> ClientCodec {
        ClientCodec {
            frame: FrameCodec::new(frame_bytes_max),
        }
    }

    /// Decodes the first request in `input`: `Ok(Some((consumed, request)))`, or
    /// `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    /// A frame too large or a body that does not decode: close the connection.
    pub fn decode_request(&self, input: &[u8]) -> Result<Option<(usize, Request)>, DecodeError> {
        match self.frame.decode(input)? {
            Some((consumed, body)) => Ok(Some((consumed, decode_request(body)?))),
            None => Ok(None),
        }
    }

    /// Decodes the first response in `input`, as [`ClientCodec::decode_request`].
    ///
    /// # Errors
    /// As [`ClientCodec::decode_request`].
    pub fn decode_response(&self, input: &[u8]) -> Result<Option<(usize, Response)>, DecodeError> {
        match self.frame.decode(input)? {
            Some((consumed, body)) => Ok(Some((consumed, decode_response(body)?))),
            None => Ok(None),
        }
    }

    /// Appends `request` as one frame to `out`.
    ///
    /// # Errors
    /// [`DecodeError::TooLarge`] (and `out` unchanged) when the body exceeds the frame
    /// limit; the peer would refuse it.
    pub fn encode_request(&self, request: &Request, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let mut body = Vec::new();
        encode_request(request, &mut body);
        self.frame_body(&body, out)
    }

    /// Appends `response` as one frame to `out`.
    ///
    /// # Errors
    /// As [`ClientCodec::encode_request`]; the server should then answer with a short
    /// [`ResponseBody::Error`] instead.
    pub fn encode_response(
        &self,
        response: &Response,
        out: &mut Vec<u8>,
    ) -> Result<(), DecodeError> {
        let mut body = Vec::new();
        encode_response(response, &mut body);
        self.frame_body(&body, out)
    }

    fn frame_body(&self, body: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        self.frame
            .encode_with(out, |frame| frame.extend_from_slice(body))
            .map_err(|e| DecodeError::TooLarge {
                len: e.len as u64,
                max: u64::from(e.max),
            })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::kv::command::strategy;
    use crate::wire::alloc_probe::{BYTES_PER_INPUT_BYTE_MAX, assert_bounded};

    fn text() -> impl Strategy<Value = String> {
        ".{0,6}"
    }

    fn backup_request() -> impl Strategy<Value = BackupRequest> {
        prop_oneof![
            Just(BackupRequest::Start),
            any::<u64>().prop_map(|id| BackupRequest::Poll { id }),
            any::<[u64; 3]>().prop_map(|[id, offset, bytes_max]| BackupRequest::Read {
                id,
                offset,
                bytes_max
            }),
            any::<u64>().prop_map(|id| BackupRequest::Finish { id }),
        ]
    }

    fn backup_reply() -> impl Strategy<Value = BackupReply> {
        prop_oneof![
            any::<u64>().prop_map(|id| BackupReply::Started { id }),
            Just(BackupReply::Running),
            any::<[u64; 3]>().prop_map(|[index, term, bytes]| BackupReply::Ready {
                index,
                term,
                bytes
            }),
            strategy::bytes().prop_map(BackupReply::Chunk),
            Just(BackupReply::Finished),
        ]
    }

    fn request() -> impl Strategy<Value = Request> {
        let body = prop_oneof![
            (strategy::bytes(), any::<bool>())
                .prop_map(|(key, stale)| RequestBody::Get { key, stale }),
            strategy::command().prop_map(RequestBody::Command),
            Just(RequestBody::Status),
            Just(RequestBody::Metrics),
            (any::<u64>(), text(), text()).prop_map(|(id, peer_addr, client_addr)| {
                RequestBody::MemberChange(MemberChange::AddLearner {
                    id,
                    peer_addr,
                    client_addr,
                })
            }),
            any::<u64>().prop_map(|id| RequestBody::MemberChange(MemberChange::Promote { id })),
            any::<u64>().prop_map(|id| RequestBody::MemberChange(MemberChange::Remove { id })),
            any::<u64>().prop_map(|id| RequestBody::TransferLeader { id }),
            (
                strategy::bytes(),
                proptest::option::of(strategy::bytes()),
                any::<u64>(),
                any::<[bool; 3]>()
            )
                .prop_map(|(start, end, limit, [keys_only, count_only, stale])| {
                    RequestBody::Range {
                        query: RangeQuery {
                            start,
                            end,
                            limit,
                            keys_only,
                            count_only,
                        },
                        stale,
                    }
                }),
            backup_request().prop_map(RequestBody::Backup),
            (strategy::bytes(), any::<bool>())
                .prop_map(|(key, prefix)| RequestBody::Watch { key, prefix }),
        ];
        (any::<u64>(), body).prop_map(|(request_id, body)| Request { request_id, body })
    }

    fn response() -> impl Strategy<Value = Response> {
        let member = (any::<u64>(), any::<bool>(), text(), text(), any::<u64>()).prop_map(
            |(id, voter, peer_addr, client_addr, match_index)| Member {
                id,
                voter,
                peer_addr,
                client_addr,
                match_index,
            },
        );
        let status = (
            (any::<u64>(), 1u8..=4, any::<u64>(), any::<u64>()),
            (any::<u64>(), any::<u64>(), any::<u64>()),
            (any::<u64>(), any::<u64>()),
            proptest::collection::vec(member, 0..4),
        )
            .prop_map(
                |(
                    (node_id, role, term, leader_id),
                    (commit, applied, last),
                    (config_index, promote_distance_max),
                    members,
                )| Status {
                    node_id,
                    role: Role::from_u8(role).expect("valid role byte"),
                    term,
                    leader_id,
                    commit_index: commit,
                    applied_index: applied,
                    last_index: last,
                    config_index,
                    promote_distance_max,
                    members,
                },
            );
        let entries = proptest::collection::vec((strategy::bytes(), strategy::bytes()), 0..3);
        let body = prop_oneof![
            strategy::result().prop_map(ResponseBody::Result),
            (entries, any::<u64>(), any::<bool>()).prop_map(|(entries, count, more)| {
                ResponseBody::Range(RangeResult {
                    entries,
                    count,
                    more,
                })
            }),
            (any::<u64>(), proptest::option::of(text())).prop_map(
                |(leader_id, leader_client_addr)| ResponseBody::NotLeader {
                    leader_id,
                    leader_client_addr
                }
            ),
            text().prop_map(ResponseBody::Unavailable),
            text().prop_map(ResponseBody::Error),
            status.prop_map(ResponseBody::Status),
            proptest::collection::vec((text(), any::<u64>()), 0..4).prop_map(ResponseBody::Metrics),
            backup_reply().prop_map(ResponseBody::Backup),
            (
                any::<u64>(),
                0usize..3,
                strategy::bytes(),
                strategy::bytes()
            )
                .prop_map(|(revision, kind, key, value)| ResponseBody::Watch(
                    WatchEvent {
                        revision,
                        kind: [WatchKind::Started, WatchKind::Put, WatchKind::Delete][kind],
                        key,
                        value,
                    }
                )),
        ];
        (any::<u64>(), body).prop_map(|(request_id, body)| Response { request_id, body })
    }

    proptest! {
        #[test]
        fn requests_round_trip_through_frames(requests in proptest::collection::vec(request(), 1..4)) {
            let codec = ClientCodec::new(1 << 16);
            let mut stream = Vec::new();
            for request in &requests {
                codec.encode_request(request, &mut stream).unwrap();
            }
            let mut decoded = Vec::new();
            let mut at = 0;
            while let Some((used, request)) = codec.decode_request(&stream[at..]).unwrap() {
                decoded.push(request);
                at += used;
            }
            prop_assert_eq!(at, stream.len());
            prop_assert_eq!(decoded, requests);
        }

        #[test]
        fn command_bytes_are_the_log_encoding_of_the_command(request in request()) {
            let mut body = Vec::new();
            encode_request(&request, &mut body);
            let (decoded, bytes) = decode_request_with_command_bytes(&body).unwrap();
            prop_assert_eq!(&decoded, &request);
            match &request.body {
                RequestBody::Command(command) => {
                    let mut logged = Vec::new();
                    encode_command(command, &mut logged);
                    prop_assert_eq!(bytes, Some(logged.as_slice()));
                }
                _ => prop_assert_eq!(bytes, None),
            }
        }

        #[test]
        fn responses_round_trip(response in response()) {
            let mut body = Vec::new();
            encode_response(&response, &mut body);
            prop_assert_eq!(decode_response(&body), Ok(response));
            for cut in 0..body.len() {
                prop_assert!(decode_response(&body[..cut]).is_err());
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            let codec = ClientCodec::new(64);
            let bounded = |decode: fn(&[u8]) -> bool| {
                assert_bounded(&bytes, BYTES_PER_INPUT_BYTE_MAX, 0, decode)
            };
            bounded(|b| decode_request(b).is_ok());
            bounded(|b| decode_response(b).is_ok());
            let _ = codec.decode_request(&bytes);
            let _ = codec.decode_response(&bytes);
            // Behind a valid version byte and a valid length prefix the body parser runs.
            let mut framed = Vec::new();
            let mut body = vec![CLIENT_PROTOCOL_VERSION];
            body.extend_from_slice(&bytes[..bytes.len().min(63)]);
            codec.frame.encode_with(&mut framed, |out| out.extend_from_slice(&body)).unwrap();
            let _ = codec.decode_request(&framed);
            let _ = codec.decode_response(&framed);
        }
    }

    proptest! {
        /// A valid header of every request and response type, then a hostile count or
        /// length (Txn op and compare counts, member and metric counts, result counts)
        /// and a few bytes: decoded or refused within the allocation bound.
        #[test]
        fn hostile_counts_allocate_within_the_input(
            kind in 1u8..=8,
            prefix in proptest::collection::vec(any::<u8>(), 0..40),
            claimed in any::<u32>(),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut body = vec![CLIENT_PROTOCOL_VERSION, kind];
            put_u64(&mut body, 1);
            // A command (or result) header, so the Txn and result lists are reached.
            body.extend_from_slice(&[1, kind.min(6)]);
            body.extend_from_slice(&prefix);
            put_u32(&mut body, claimed);
            body.extend_from_slice(&tail);
            for cut in [0, 10, 12] {
                let input = &body[cut..];
                let factor = BYTES_PER_INPUT_BYTE_MAX;
                assert_bounded(input, factor, 0, |b| decode_request(b).is_ok());
                assert_bounded(input, factor, 0, |b| decode_response(b).is_ok());
            }
        }
    }

    #[test]
    fn hostile_lengths_are_refused_without_allocating() {
        // A Metrics response claiming 2^32-1 counters in a 20-byte frame.
        let mut body = vec![CLIENT_PROTOCOL_VERSION, RESP_METRICS];
        put_u64(&mut body, 7);
        put_u32(&mut body, u32::MAX);
        assert!(matches!(
            decode_response(&body),
            Err(DecodeError::Malformed(_))
        ));
        let codec = ClientCodec::new(1024);
        let mut prefix = u32::MAX.to_le_bytes().to_vec();
        prefix.extend_from_slice(&[0; 16]);
        assert!(matches!(
            codec.decode_request(&prefix),
            Err(DecodeError::TooLarge { .. })
        ));
        assert_eq!(
            decode_request(&[CLIENT_PROTOCOL_VERSION, 99, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::UnknownType(99))
        );
    }

    #[test]
    fn an_oversized_message_is_an_error_and_leaves_the_buffer_alone() {
        let codec = ClientCodec::new(32);
        let request = Request {
            request_id: 1,
            body: RequestBody::Get {
                key: vec![0; 64],
                stale: false,
            },
        };
        let mut out = vec![9];
        assert!(matches!(
            codec.encode_request(&request, &mut out),
            Err(DecodeError::TooLarge { .. })
        ));
        assert_eq!(out, vec![9]);
    }
}
