//! [`SmallBytes`]: the keys ([`Key`]) and values ([`Value`]) of the kv map, stored inline
//! when short, `Arc`-shared when long.
//!
//! Applying a write is bound by cache misses, not instructions (a 100,000-key store does
//! not fit in cache): with every key and value behind its own pointer, each comparison of
//! a tree search chased a pointer, and replacing a value touched the old value's
//! reference count and malloc header to free it. Short keys and values live inside the
//! B-tree node instead: a search reads only the node, a put copies the bytes in and frees
//! nothing, and building one from a decoded entry allocates nothing. Copying a leaf for
//! copy-on-write then copies short entries with the node (no reference count to bump in
//! memory elsewhere) and shares long ones.
//!
//! Invariant: a `SmallBytes<N>` is `Inline` exactly when it is at most `N` bytes long.
//! Equality and order are those of the bytes, so the map's order (and the snapshot
//! encoding) is the same as with plain byte-string keys and values.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// The longest key kept inline: a [`Key`] is then 24 bytes, the size of a `Vec`.
pub(crate) const KEY_INLINE_BYTES_MAX: usize = 22;
/// The longest value kept inline: a [`Value`] is then 72 bytes, one pointer plus a 64-byte
/// value's heap block less than the shared form costs (see the module docs).
pub(crate) const VALUE_INLINE_BYTES_MAX: usize = 70;

/// A key of the kv map.
pub(crate) type Key = SmallBytes<KEY_INLINE_BYTES_MAX>;
/// A value of the kv map.
pub(crate) type Value = SmallBytes<VALUE_INLINE_BYTES_MAX>;

/// An immutable byte string, inline up to `N` bytes (`N` at most 255), shared beyond.
#[derive(Clone)]
pub(crate) enum SmallBytes<const N: usize> {
    /// Invariant: `len <= N`; bytes past `len` are zero.
    Inline {
        /// The number of bytes used.
        len: u8,
        /// The bytes, zero-padded.
        bytes: [u8; N],
    },
    /// Invariant: longer than `N` bytes.
    Shared(Arc<[u8]>),
}

impl<const N: usize> From<&[u8]> for SmallBytes<N> {
    fn from(source: &[u8]) -> SmallBytes<N> {
        match u8::try_from(source.len()) {
            Ok(len) if source.len() <= N => {
                let mut bytes = [0; N];
                bytes[..source.len()].copy_from_slice(source);
                SmallBytes::Inline { len, bytes }
            }
            _ => SmallBytes::Shared(Arc::from(source)),
        }
    }
}

impl<const N: usize> Deref for SmallBytes<N> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            SmallBytes::Inline { len, bytes } => &bytes[..usize::from(*len)],
            SmallBytes::Shared(bytes) => bytes,
        }
    }
}

impl<const N: usize> Borrow<[u8]> for SmallBytes<N> {
    fn borrow(&self) -> &[u8] {
        self
    }
}

impl<const N: usize> PartialEq for SmallBytes<N> {
    fn eq(&self, other: &SmallBytes<N>) -> bool {
        **self == **other
    }
}

impl<const N: usize> Eq for SmallBytes<N> {}

impl<const N: usize> PartialOrd for SmallBytes<N> {
    fn partial_cmp(&self, other: &SmallBytes<N>) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<const N: usize> Ord for SmallBytes<N> {
    fn cmp(&self, other: &SmallBytes<N>) -> Ordering {
        (**self).cmp(&**other)
    }
}

impl<const N: usize> fmt::Debug for SmallBytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_bytes_and_order_on_both_sides_of_the_inline_limit() {
        const INLINE_BYTES_MAX: usize = KEY_INLINE_BYTES_MAX;
        let lengths = [0, 1, 16, INLINE_BYTES_MAX, INLINE_BYTES_MAX + 1, 100];
        let mut keys: Vec<Vec<u8>> = lengths
            .iter()
            .flat_map(|&len| [vec![b'a'; len], vec![b'b'; len]])
            .collect();
        let built: Vec<Key> = keys.iter().map(|key| Key::from(&key[..])).collect();
        for (i, (key, want)) in built.iter().zip(&keys).enumerate() {
            assert_eq!(&key[..], &want[..], "#{i}: bytes");
            let inline = matches!(key, SmallBytes::Inline { .. });
            assert_eq!(
                inline,
                want.len() <= INLINE_BYTES_MAX,
                "#{i}: representation"
            );
        }
        let mut sorted = built.clone();
        sorted.sort();
        keys.sort();
        let sorted: Vec<&[u8]> = sorted.iter().map(|key| &key[..]).collect();
        let want: Vec<&[u8]> = keys.iter().map(|key| &key[..]).collect();
        assert_eq!(sorted, want, "keys sort as their bytes do");
        assert_eq!(std::mem::size_of::<Key>(), 24);
    }

    #[test]
    fn values_are_inline_up_to_their_limit_and_shared_beyond() {
        for len in [
            0,
            64,
            VALUE_INLINE_BYTES_MAX,
            VALUE_INLINE_BYTES_MAX + 1,
            300,
        ] {
            let source: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let value = Value::from(&source[..]);
            assert_eq!(&value[..], &source[..], "len {len}");
            let inline = matches!(value, SmallBytes::Inline { .. });
            assert_eq!(inline, len <= VALUE_INLINE_BYTES_MAX, "len {len}");
        }
        assert_eq!(std::mem::size_of::<Value>(), 72);
    }
}
