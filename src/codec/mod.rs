//! The codec chain: bytes <-> frames <-> messages.
//!
//! Each layer is a pair of functions, `decode(&mut input) -> Result<Option<T>, DecodeError>`
//! and `encode(&T, &mut Vec<u8>)`. "Need more bytes" is `Ok(None)`, never an error;
//! an error means the peer sent something malformed and its connection must be closed.
//! Layers compose: [`frame`] cuts a byte stream into length-prefixed frames, and the
//! message codecs turn one frame into one typed message.
//!
//! Layering: the codecs build on [`crate::wire`] (primitives and [`DecodeError`]), on
//! [`crate::raft::message`] (the peer protocol carries raft messages) and on
//! [`crate::kv::command`] (a client request carries a command in kv's own encoding);
//! none of those imports a codec.
//!
//! [`DecodeError`]: crate::wire::DecodeError

pub mod backup;
pub mod client;
pub mod frame;
pub mod http;
pub mod peer;
pub mod resp;
