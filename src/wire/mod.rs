//! The bottom layer: little-endian primitives and the decode error shared by every
//! binary format (raft's configuration entries, the kv command and snapshot encodings,
//! the storage records, the peer and client wire codecs). It imports nothing from the
//! crate, so every other module may build on it and the arrows point one way.
//!
//! Invariant: a `Reader` never allocates more than the bytes it still holds. Every
//! length or count read from the input is checked against the remaining input before
//! anything is allocated for it, so hostile bytes cannot make a decoder allocate
//! unbounded memory, and every shortfall is an error, never a panic.

#[cfg(test)]
pub(crate) mod alloc_probe;

/// Why bytes could not be decoded. From a socket, any of these closes the connection.
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
    /// A body that does not parse (truncated field, bad enum value, trailing bytes).
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

/// A bounded cursor over an input slice.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    /// The bytes not read yet.
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `input`.
    pub(crate) fn new(input: &'a [u8]) -> Reader<'a> {
        Reader { rest: input }
    }

    fn take(&mut self, count: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if count > self.rest.len() {
            return Err(DecodeError::Malformed(what));
        }
        let (head, tail) = self.rest.split_at(count);
        self.rest = tail;
        Ok(head)
    }

    /// One byte.
    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    /// A boolean stored as one byte, 0 or 1.
    pub(crate) fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Malformed(what)),
        }
    }

    /// A little-endian u32.
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let bytes = self.take(4, what)?;
        Ok(u32::from_le_bytes(bytes.try_into().expect("took 4 bytes")))
    }

    /// A little-endian u64.
    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let bytes = self.take(8, what)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("took 8 bytes")))
    }

    /// Exactly `N` bytes (a fixed-size field: a nonce, a MAC).
    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, what)?;
        Ok(bytes.try_into().expect("took N bytes"))
    }

    /// A `u32` length followed by that many bytes, borrowed.
    pub(crate) fn slice(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(what)? as usize;
        self.take(len, what)
    }

    /// A `u32` length followed by that many bytes, copied.
    pub(crate) fn bytes(&mut self, what: &'static str) -> Result<Vec<u8>, DecodeError> {
        Ok(self.slice(what)?.to_vec())
    }

    /// A presence byte (0 or 1) followed, if 1, by [`Reader::bytes`].
    pub(crate) fn option_bytes(
        &mut self,
        what: &'static str,
    ) -> Result<Option<Vec<u8>>, DecodeError> {
        if self.bool(what)? {
            Ok(Some(self.bytes(what)?))
        } else {
            Ok(None)
        }
    }

    /// A `u32` length followed by that many bytes of UTF-8.
    pub(crate) fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let raw = self.slice(what)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Malformed(what))
    }

    /// A `u32` element count, checked against the remaining input assuming every element
    /// takes at least `element_bytes_min` bytes (so `Vec::with_capacity(count)` is bounded).
    pub(crate) fn count(
        &mut self,
        element_bytes_min: usize,
        what: &'static str,
    ) -> Result<usize, DecodeError> {
        let count = self.u32(what)? as usize;
        if count.saturating_mul(element_bytes_min.max(1)) > self.rest.len() {
            return Err(DecodeError::Malformed(what));
        }
        Ok(count)
    }

    /// The bytes not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// Succeeds only when every byte was consumed.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Malformed("trailing bytes"))
        }
    }
}

/// Appends a little-endian u32.
pub(crate) fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// Appends a little-endian u64.
pub(crate) fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// Appends a `u32` length and the bytes.
///
/// # Panics
/// If `bytes` is 4 GiB or longer: no frame or entry can carry that, so it is a caller bug.
pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, len_u32(bytes.len()));
    out.extend_from_slice(bytes);
}

/// Appends a presence byte and, if present, the bytes.
pub(crate) fn put_option_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            out.push(1);
            put_bytes(out, bytes);
        }
        None => out.push(0),
    }
}

/// A collection length as the `u32` the formats store.
///
/// # Panics
/// If `len` does not fit in a u32 (a caller bug: such a message could never be framed).
pub(crate) fn len_u32(len: usize) -> u32 {
    u32::try_from(len).expect("length fits in u32")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_lengths_are_bounded_by_the_input() {
        // A count of 2^32-1 elements with four bytes of input must fail before allocating.
        let mut input = Vec::new();
        put_u32(&mut input, u32::MAX);
        input.extend_from_slice(&[0; 4]);
        assert!(Reader::new(&input).count(1, "x").is_err());
        assert!(Reader::new(&input).bytes("x").is_err());
        let mut ok = Vec::new();
        put_bytes(&mut ok, b"abc");
        let mut reader = Reader::new(&ok);
        assert_eq!(reader.bytes("x").unwrap(), b"abc");
        assert!(reader.finish().is_ok());
    }
}
