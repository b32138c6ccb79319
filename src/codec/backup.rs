//! The snapshot-save messages of the client protocol (`raftkv-cli snapshot save`): a
//! client asks the leader to write a consistent snapshot of its state machine, polls
//! until the file is written, then pulls it in chunks of its choosing and ends the job.
//!
//! Every exchange is one request and one immediate answer, so no request outlives the
//! request deadline however long the encoding takes, and the client sets the pace of
//! the transfer (a slow client never makes the node buffer the file).
//!
//! Invariant: decoding never panics and allocates at most the frame's length (the
//! chunk is a length-checked byte string, `wire::Reader`).

use crate::wire::{DecodeError, Reader, put_bytes, put_u64};

/// What a client asks of a snapshot save.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupRequest {
    /// Start writing a snapshot of the state machine as the node has applied it now
    /// (leader only); answered [`BackupReply::Started`].
    Start,
    /// How job `id` is doing; answered `Running` or `Ready`.
    Poll {
        /// The job.
        id: u64,
    },
    /// Up to `bytes_max` bytes of job `id`'s file from `offset`; answered `Chunk`
    /// (empty at the end of the file).
    Read {
        /// The job.
        id: u64,
        /// Where in the file.
        offset: u64,
        /// At most this many bytes (the node may answer fewer).
        bytes_max: u64,
    },
    /// Job `id` is done with: its file is removed; answered `Finished`.
    Finish {
        /// The job.
        id: u64,
    },
}

/// The node's answer to a [`BackupRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupReply {
    /// The job `id` was started.
    Started {
        /// Names the job in the next requests (on the same node).
        id: u64,
    },
    /// Still encoding.
    Running,
    /// The file is written and durable: the snapshot at `index` (of `term`), `bytes`
    /// long (the whole snapshot file, header and crc included).
    Ready {
        /// Index of the last entry the snapshot covers.
        index: u64,
        /// Term of that entry.
        term: u64,
        /// The file's length.
        bytes: u64,
    },
    /// Bytes of the file at the offset asked.
    Chunk(Vec<u8>),
    /// The job is gone.
    Finished,
}

const START: u8 = 1;
const POLL: u8 = 2;
const READ: u8 = 3;
const FINISH: u8 = 4;

const STARTED: u8 = 1;
const RUNNING: u8 = 2;
const READY: u8 = 3;
const CHUNK: u8 = 4;
const FINISHED: u8 = 5;

/// Appends the fields of `request` to `out`.
pub(crate) fn encode_request(request: &BackupRequest, out: &mut Vec<u8>) {
    match request {
        BackupRequest::Start => out.push(START),
        BackupRequest::Poll { id } => {
            out.push(POLL);
            put_u64(out, *id);
        }
        BackupRequest::Read {
            id,
            offset,
            bytes_max,
        } => {
            out.push(READ);
            put_u64(out, *id);
            put_u64(out, *offset);
            put_u64(out, *bytes_max);
        }
        BackupRequest::Finish { id } => {
            out.push(FINISH);
            put_u64(out, *id);
        }
    }
}

/// Reads the fields of a backup request.
///
/// # Errors
/// [`DecodeError::Malformed`] for an unknown kind or missing fields.
pub(crate) fn read_request(input: &mut Reader<'_>) -> Result<BackupRequest, DecodeError> {
    Ok(match input.u8("snapshot save request kind")? {
        START => BackupRequest::Start,
        POLL => BackupRequest::Poll {
            id: input.u64("snapshot save job")?,
        },
        READ => BackupRequest::Read {
            id: input.u64("snapshot save job")?,
            offset: input.u64("snapshot save offset")?,
            bytes_max: input.u64("snapshot save chunk size")?,
        },
        FINISH => BackupRequest::Finish {
            id: input.u64("snapshot save job")?,
        },
        _ => return Err(DecodeError::Malformed("unknown snapshot save request kind")),
    })
}

/// Appends the fields of `reply` to `out`.
pub(crate) fn encode_reply(reply: &BackupReply, out: &mut Vec<u8>) {
    match reply {
        BackupReply::Started { id } => {
            out.push(STARTED);
            put_u64(out, *id);
        }
        BackupReply::Running => out.push(RUNNING),
        BackupReply::Ready { index, term, bytes } => {
            out.push(READY);
            put_u64(out, *index);
            put_u64(out, *term);
            put_u64(out, *bytes);
        }
        BackupReply::Chunk(data) => {
            out.push(CHUNK);
            put_bytes(out, data);
        }
        BackupReply::Finished => out.push(FINISHED),
    }
}

/// Reads the fields of a backup reply.
///
/// # Errors
/// [`DecodeError::Malformed`] for an unknown kind or missing fields.
pub(crate) fn read_reply(input: &mut Reader<'_>) -> Result<BackupReply, DecodeError> {
    Ok(match input.u8("snapshot save reply kind")? {
        STARTED => BackupReply::Started {
            id: input.u64("snapshot save job")?,
        },
        RUNNING => BackupReply::Running,
        READY => BackupReply::Ready {
            index: input.u64("snapshot index")?,
            term: input.u64("snapshot term")?,
            bytes: input.u64("snapshot file length")?,
        },
        CHUNK => BackupReply::Chunk(input.bytes("snapshot chunk")?),
        FINISHED => BackupReply::Finished,
        _ => return Err(DecodeError::Malformed("unknown snapshot save reply kind")),
    })
}
