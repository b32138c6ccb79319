//! FrameCodec: the first layer of every binary chain.
//!
//! Wire format: `len: u32 little-endian | body: [u8; len]`. A frame never exceeds
//! `frame_bytes_max` (checked before anything is buffered for it), so a peer that
//! announces a 4 GiB frame is rejected after four bytes instead of growing memory.

use super::DecodeError;

/// Bytes taken by the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

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
    /// # Panics
    /// If the body exceeds `frame_bytes_max`: producers must split their messages to fit
    /// (a programming error, not an input error).
    pub fn encode_with(&self, out: &mut Vec<u8>, write_body: impl FnOnce(&mut Vec<u8>)) {
        let start = out.len();
        out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
        write_body(out);
        let len = out.len() - start - FRAME_HEADER_BYTES;
        assert!(
            len <= self.frame_bytes_max as usize,
            "frame body of {len} bytes exceeds the limit of {}",
            self.frame_bytes_max
        );
        out[start..start + FRAME_HEADER_BYTES].copy_from_slice(&(len as u32).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_waits_for_partial_input() {
        let codec = FrameCodec::new(16);
        let mut out = Vec::new();
        codec.encode_with(&mut out, |b| b.extend_from_slice(b"hello"));
        codec.encode_with(&mut out, |b| b.extend_from_slice(b""));
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
}
