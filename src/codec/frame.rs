//! FrameCodec: the first layer of every binary chain.
//!
//! Wire format: `len: u32 little-endian | body: [u8; len]`. A frame never exceeds
//! `frame_bytes_max` (checked before anything is buffered for it), so a peer that
//! announces a 4 GiB frame is rejected after four bytes instead of growing memory.
//!
//! Invariant: the encoder never writes a frame the decoder on the other side would
//! refuse. A body over the limit is an error ([`FrameTooLarge`], the output left as it
//! was), never a panic: message sizes follow from what clients send, so an oversized
//! one is an operating error the caller handles (drop a Raft message, answer a client
//! with an error), not a programming error.

use crate::wire::DecodeError;

/// Bytes taken by the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

/// A frame body over the codec's `frame_bytes_max`; nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame body of {len} bytes exceeds the limit of {max} bytes (limits.frame_bytes_max)")]
pub struct FrameTooLarge {
    /// The body's length.
    pub len: usize,
    /// The codec's `frame_bytes_max`.
    pub max: u32,
}

/// Splits an input buffer into frames and writes frames into an output buffer.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    /// The largest body accepted or produced, in bytes.
    pub frame_bytes_max: u32,
}

impl FrameCodec {
    /// A codec that accepts bodies up to `frame_bytes_max` bytes.
    pub fn new(frame_bytes_max: u32) -> FrameCodec {
        FrameCodec { frame_bytes_max }
    }

    /// Looks for one complete frame at the start of `input`.
    ///
    /// Returns `Ok(Some((consumed, body)))`: `consumed` is the number of bytes the frame
    /// takes in `input` (header + body) and `body` borrows the body. `Ok(None)` means more
    /// bytes are needed.
    ///
    /// # Errors
    /// [`DecodeError::TooLarge`] when the prefix announces more than `frame_bytes_max`.
    pub fn decode<'a>(&self, input: &'a [u8]) -> Result<Option<(usize, &'a [u8])>, DecodeError> {
        let Some(header) = input.get(..FRAME_HEADER_BYTES) else {
            return Ok(None);
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        if len > self.frame_bytes_max {
            return Err(DecodeError::TooLarge {
                len: u64::from(len),
                max: u64::from(self.frame_bytes_max),
            });
        }
        let end = FRAME_HEADER_BYTES + len as usize;
        match input.get(FRAME_HEADER_BYTES..end) {
            Some(body) => Ok(Some((end, body))),
            None => Ok(None),
        }
    }

    /// Appends one frame to `out`, with the body produced by `write_body`.
    ///
    /// The length prefix is patched in after the body is written, so the body is encoded
    /// straight into `out` without an intermediate buffer.
    ///
    /// # Errors
    /// [`FrameTooLarge`] when the body exceeds `frame_bytes_max`; `out` is then truncated
    /// back to its length before the call.
    pub fn encode_with(
        &self,
        out: &mut Vec<u8>,
        write_body: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), FrameTooLarge> {
        let start = out.len();
        out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
        write_body(out);
        let len = out.len() - start - FRAME_HEADER_BYTES;
        if len > self.frame_bytes_max as usize {
            out.truncate(start);
            return Err(FrameTooLarge {
                len,
                max: self.frame_bytes_max,
            });
        }
        // Cannot truncate: `len <= frame_bytes_max`, a u32.
        out[start..start + FRAME_HEADER_BYTES].copy_from_slice(&(len as u32).to_le_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::wire::alloc_probe::peak_bytes;

    #[test]
    fn round_trips_and_waits_for_partial_input() {
        let codec = FrameCodec::new(16);
        let mut out = Vec::new();
        codec
            .encode_with(&mut out, |b| b.extend_from_slice(b"hello"))
            .unwrap();
        codec
            .encode_with(&mut out, |b| b.extend_from_slice(b""))
            .unwrap();
        for cut in 0..9 {
            assert_eq!(codec.decode(&out[..cut]), Ok(None), "#{cut}: partial frame");
        }
        let (used, body) = codec.decode(&out).unwrap().unwrap();
        assert_eq!((used, body), (9, &b"hello"[..]));
        let (used2, body2) = codec.decode(&out[used..]).unwrap().unwrap();
        assert_eq!((used2, body2), (4, &b""[..]));
    }

    #[test]
    fn rejects_oversized_prefix_before_buffering_the_body() {
        let codec = FrameCodec::new(1024);
        let input = u32::MAX.to_le_bytes();
        assert_eq!(
            codec.decode(&input),
            Err(DecodeError::TooLarge {
                len: u64::from(u32::MAX),
                max: 1024
            })
        );
    }

    #[test]
    fn an_oversized_body_is_an_error_and_leaves_the_output_as_it_was() {
        // Goal: the encoder refuses what the decoder would refuse, without panicking.
        let codec = FrameCodec::new(8);
        let mut out = b"keep".to_vec();
        let cases: [(usize, bool); 4] = [(0, true), (8, true), (9, false), (1 << 20, false)];
        for (i, (len, fits)) in cases.into_iter().enumerate() {
            let before = out.clone();
            let result = codec.encode_with(&mut out, |b| b.resize(b.len() + len, 7));
            if fits {
                assert_eq!(result, Ok(()), "#{i}");
                let (used, body) = codec.decode(&out[before.len()..]).unwrap().unwrap();
                assert_eq!((used, body.len()), (FRAME_HEADER_BYTES + len, len), "#{i}");
            } else {
                assert_eq!(result, Err(FrameTooLarge { len, max: 8 }), "#{i}");
                assert_eq!(out, before, "#{i}: output untouched");
            }
        }
        let message = FrameTooLarge { len: 9, max: 8 }.to_string();
        assert!(message.contains("limits.frame_bytes_max"), "{message}");
    }

    proptest! {
        /// Arbitrary bytes never panic the decoder, a frame it returns lies within the
        /// input, and a length prefix over the limit is refused from the four header
        /// bytes alone, before any body is buffered.
        #[test]
        fn arbitrary_bytes_never_panic_and_frames_lie_within_the_input(
            input in proptest::collection::vec(any::<u8>(), 0..64),
            max in 0u32..48,
        ) {
            let codec = FrameCodec::new(max);
            let (decoded, allocated) = peak_bytes(|| codec.decode(&input));
            prop_assert_eq!(allocated, 0, "the frame layer only borrows");
            match decoded {
                Ok(Some((used, body))) => {
                    prop_assert!(used <= input.len());
                    prop_assert_eq!(used, FRAME_HEADER_BYTES + body.len());
                    prop_assert!(body.len() <= max as usize);
                }
                Ok(None) => prop_assert!(
                    input.len() < FRAME_HEADER_BYTES
                        || input.len() < FRAME_HEADER_BYTES + announced(&input)
                ),
                Err(DecodeError::TooLarge { len, .. }) => {
                    prop_assert!(len > u64::from(max));
                    let header = &input[..FRAME_HEADER_BYTES];
                    prop_assert!(codec.decode(header).is_err(), "refused on the header");
                }
                Err(other) => prop_assert!(false, "unexpected error {other}"),
            }
        }

        #[test]
        fn encode_then_decode_round_trips_or_refuses(len in 0usize..64, max in 0u32..48) {
            let codec = FrameCodec::new(max);
            let mut out = Vec::new();
            let result = codec.encode_with(&mut out, |b| b.resize(b.len() + len, 1));
            if len <= max as usize {
                prop_assert!(result.is_ok());
                let decoded = codec.decode(&out).unwrap().unwrap();
                prop_assert_eq!(decoded, (out.len(), &out[FRAME_HEADER_BYTES..]));
            } else {
                prop_assert!(result.is_err());
                prop_assert!(out.is_empty());
            }
        }
    }

    fn announced(input: &[u8]) -> usize {
        u32::from_le_bytes([input[0], input[1], input[2], input[3]]) as usize
    }
}
