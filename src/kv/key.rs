//! [`Key`]: a key of the kv map, stored inline when short so that the B-tree compares
//! keys without following a pointer.
//!
//! Applying a write spends most of its time searching a shard: each comparison with a
//! heap-allocated key is a pointer chase to memory that is rarely in cache (a 100,000-key
//! store does not fit in it). Keys of up to [`INLINE_BYTES_MAX`] bytes (the common case:
//! the benchmark's keys are 16 bytes) live inside the B-tree node instead, and building
//! one from a decoded entry allocates nothing. Longer keys are `Arc`-shared, so copying a
//! shard for copy-on-write never copies key bytes.
//!
//! Invariant: a key is `Inline` exactly when it is at most [`INLINE_BYTES_MAX`] bytes
//! long. Equality, order and the shard hash are those of the key's bytes, so the map's
//! order (and the snapshot encoding) is the same as with plain byte-string keys.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use super::shards::ShardKey;

/// The longest key kept inline (the enum is then 24 bytes, the size of a `Vec`).
pub(crate) const INLINE_BYTES_MAX: usize = 22;

/// A key of the kv map: its bytes, inline or shared.
#[derive(Clone)]
pub(crate) enum Key {
    /// Invariant: `len <= INLINE_BYTES_MAX`; bytes past `len` are zero.
    Inline {
        /// The number of bytes used.
        len: u8,
        /// The key, zero-padded.
        bytes: [u8; INLINE_BYTES_MAX],
    },
    /// Invariant: longer than `INLINE_BYTES_MAX` bytes.
    Shared(Arc<[u8]>),
}

impl From<&[u8]> for Key {
    fn from(key: &[u8]) -> Key {
        match u8::try_from(key.len()) {
            Ok(len) if key.len() <= INLINE_BYTES_MAX => {
                let mut bytes = [0; INLINE_BYTES_MAX];
                bytes[..key.len()].copy_from_slice(key);
                Key::Inline { len, bytes }
            }
            _ => Key::Shared(Arc::from(key)),
        }
    }
}

impl Deref for Key {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Shared(bytes) => bytes,
        }
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        **self == **other
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> Ordering {
        (**self).cmp(&**other)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl ShardKey for Key {
    fn shard_hash(&self) -> u32 {
        (**self).shard_hash()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_bytes_and_order_on_both_sides_of_the_inline_limit() {
        let lengths = [0, 1, 16, INLINE_BYTES_MAX, INLINE_BYTES_MAX + 1, 100];
        let mut keys: Vec<Vec<u8>> = lengths
            .iter()
            .flat_map(|&len| [vec![b'a'; len], vec![b'b'; len]])
            .collect();
        let built: Vec<Key> = keys.iter().map(|key| Key::from(&key[..])).collect();
        for (i, (key, want)) in built.iter().zip(&keys).enumerate() {
            assert_eq!(&key[..], &want[..], "#{i}: bytes");
            let inline = matches!(key, Key::Inline { .. });
            assert_eq!(
                inline,
                want.len() <= INLINE_BYTES_MAX,
                "#{i}: representation"
            );
            assert_eq!(key.shard_hash(), want[..].shard_hash(), "#{i}: hash");
        }
        let mut sorted = built.clone();
        sorted.sort();
        keys.sort();
        let sorted: Vec<&[u8]> = sorted.iter().map(|key| &key[..]).collect();
        let want: Vec<&[u8]> = keys.iter().map(|key| &key[..]).collect();
        assert_eq!(sorted, want, "keys sort as their bytes do");
        assert_eq!(std::mem::size_of::<Key>(), 24);
    }
}
