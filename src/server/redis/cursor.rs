//! SCAN cursors: the position of a scan is the last key it returned, written as a
//! decimal number (clients such as redis-py read the cursor as an integer): the
//! big-endian number whose bytes are `0x01` followed by the key. `0` starts (and ends)
//! a scan. Resuming just after that key is what gives Redis's guarantee: every key
//! present for the whole scan is returned (keys are visited in order, each once).
//!
//! Invariant: a cursor encodes at most [`CURSOR_KEY_BYTES_MAX`] key bytes (a longer
//! key's cursor is its prefix of that length, resumed from inclusively: a key may then
//! be returned twice, never skipped); decoding refuses longer or malformed text, so
//! both directions take bounded time on any input.

/// The most key bytes a cursor carries.
pub const CURSOR_KEY_BYTES_MAX: usize = 256;
/// The most digits a cursor has (`0x01` plus 256 bytes is below 10^620).
const CURSOR_DIGITS_MAX: usize = 620;

/// Where a scan resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// Just after this key (it was returned).
    After(Vec<u8>),
    /// At this key prefix, inclusively (the cursor of a long key).
    From(Vec<u8>),
}

/// The cursor that resumes after `key`.
pub fn encode(key: &[u8]) -> String {
    let truncated = key.len() > CURSOR_KEY_BYTES_MAX;
    let key = &key[..key.len().min(CURSOR_KEY_BYTES_MAX)];
    // The marker byte says how to resume: 1 after the key, 2 from the prefix.
    let mut number = vec![if truncated { 2 } else { 1 }];
    number.extend_from_slice(key);
    let mut digits = Vec::new();
    while number.iter().any(|&b| b != 0) {
        let mut remainder = 0u32;
        for byte in number.iter_mut() {
            let value = (remainder << 8) | u32::from(*byte);
            *byte = (value / 10) as u8;
            remainder = value % 10;
        }
        digits.push(b'0' + remainder as u8);
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

/// The resume point of `cursor`: `None` for `0` (the start).
///
/// # Errors
/// Not a cursor this server gave (Redis's "invalid cursor").
pub fn decode(cursor: &[u8]) -> Result<Option<Resume>, ()> {
    if cursor == b"0" {
        return Ok(None);
    }
    if cursor.is_empty() || cursor.len() > CURSOR_DIGITS_MAX || cursor[0] == b'0' {
        return Err(());
    }
    let mut number: Vec<u8> = Vec::new();
    for &c in cursor {
        if !c.is_ascii_digit() {
            return Err(());
        }
        let mut carry = u32::from(c - b'0');
        for byte in number.iter_mut().rev() {
            let value = u32::from(*byte) * 10 + carry;
            *byte = value as u8;
            carry = value >> 8;
        }
        while carry > 0 {
            number.insert(0, carry as u8);
            carry >>= 8;
        }
    }
    let (marker, key) = number.split_first().ok_or(())?;
    match marker {
        1 => Ok(Some(Resume::After(key.to_vec()))),
        2 => Ok(Some(Resume::From(key.to_vec()))),
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    //! Goal: cursors round-trip any key (leading zero bytes, 0xff, the long-key prefix
    //! form) and refuse what they did not produce.
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_foreign_text() {
        let long = vec![7u8; CURSOR_KEY_BYTES_MAX + 5];
        let cases: Vec<(Vec<u8>, Resume)> = vec![
            (b"".to_vec(), Resume::After(Vec::new())),
            (b"k".to_vec(), Resume::After(b"k".to_vec())),
            (vec![0, 0, 255], Resume::After(vec![0, 0, 255])),
            (
                long.clone(),
                Resume::From(long[..CURSOR_KEY_BYTES_MAX].to_vec()),
            ),
        ];
        for (i, (key, want)) in cases.into_iter().enumerate() {
            let cursor = encode(&key);
            assert!(cursor.bytes().all(|c| c.is_ascii_digit()), "#{i}: {cursor}");
            assert_eq!(decode(cursor.as_bytes()), Ok(Some(want)), "#{i}");
        }
        assert_eq!(encode(b"k"), (256 + u32::from(b'k')).to_string());
        assert_eq!(decode(b"0"), Ok(None));
        for bad in [&b""[..], b"01", b"12x", b"3", &[b'9'; 700]] {
            assert_eq!(decode(bad), Err(()), "{bad:?}");
        }
    }
}
