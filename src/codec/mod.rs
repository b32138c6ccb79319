//! The codec chain: bytes <-> frames <-> messages.
//!
//! Each layer is a pair of functions, `decode(&mut input) -> Result<Option<T>, DecodeError>`
//! and `encode(&T, &mut Vec<u8>)`. "Need more bytes" is `Ok(None)`, never an error;
//! an error means the peer sent something malformed and its connection must be closed.
//! Layers compose: [`frame`] cuts a byte stream into length-prefixed frames, and the
//! message codecs turn one frame into one typed message.

#[cfg(test)]
pub(crate) mod alloc_probe;
pub mod client;
pub mod frame;
pub mod peer;
pub mod resp;
pub mod wire;

/// Why a byte stream could not be decoded. Any of these closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A length prefix announced more bytes than the configured maximum.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The configured maximum.
        max: u64,
    },
    /// A message type byte that this codec does not know.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// A frame whose body does not parse (truncated field, bad enum value, trailing bytes).
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}
