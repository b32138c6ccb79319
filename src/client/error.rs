//! The errors of the client library.
//!
//! "Not found" and "compare failed" are values, not errors ([`Option`],
//! [`super::CasOutcome`], [`super::TxnOutcome`]); an [`Error`] means the request has no
//! answer from the cluster, or an answer the client cannot use.

use std::io;

/// Why a request has no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cluster answered that it cannot serve the request now (no leader, an
    /// election, shutting down) until the request's deadline passed.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// The request's deadline passed without an answer.
    #[error("no answer before the request deadline")]
    Timeout,
    /// A socket operation failed (refused, reset, closed) and retries did not succeed
    /// before the deadline.
    #[error("connection to {addr} failed: {source}")]
    Io {
        /// The address of the node.
        addr: String,
        /// What failed.
        source: io::Error,
    },
    /// A node sent bytes that do not decode, or an answer of the wrong kind.
    #[error("protocol error from {addr}: {reason}")]
    Protocol {
        /// The address of the node.
        addr: String,
        /// What was wrong.
        reason: String,
    },
    /// The address is a Redis (RESP) port, not a client port: the node answered in the
    /// Redis protocol.
    #[error(
        "{addr} speaks the Redis protocol, not the raftkv client protocol; use the client \
         port (listen_client)"
    )]
    RedisPort {
        /// The address given.
        addr: String,
    },
    /// The cluster refused the request (for example, a command too large for one entry).
    #[error("request refused: {0}")]
    Refused(String),
    /// The request cannot be sent (too large for one frame, no address given).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The session of this client expired on the cluster while a retried write was in
    /// flight: whether that write was applied is unknown. The next write opens a new
    /// session.
    #[error("session expired; the outcome of the last write is unknown")]
    SessionExpired,
    /// The cluster no longer remembers the outcome of this retried write (its sequence
    /// number is older than the results kept for the session).
    #[error("stale sequence number; the outcome of the last write is unknown")]
    StaleSequence,
    /// Writing what a call received to the caller's output failed (a snapshot save).
    #[error("writing the output failed: {0}")]
    Output(#[source] io::Error),
}

impl Error {
    /// A short stable name of the error kind, for counters and exit codes.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Unavailable(_) => "unavailable",
            Error::Timeout => "timeout",
            Error::Io { .. } => "io",
            Error::Protocol { .. } => "protocol",
            Error::RedisPort { .. } => "redis_port",
            Error::Refused(_) => "refused",
            Error::Invalid(_) => "invalid",
            Error::SessionExpired => "session_expired",
            Error::StaleSequence => "stale_sequence",
            Error::Output(_) => "output",
        }
    }
}
