//! A map split into copy-on-write shards, so that a consistent point-in-time view costs
//! one `Arc` clone per shard and can be encoded by a helper thread while the event loop
//! keeps applying writes.
//!
//! Each shard is an `Arc<BTreeMap>`, allocated on its first insert. [`Shards::view`]
//! clones the `Arc`s. A later write to a shard that a view still shares copies that one
//! shard first (`Arc::make_mut`), like the pages a forked redis child shares with its
//! parent. So after a view is taken, the loop pays at most one shard copy per shard
//! touched and never more than one full copy of the map in total per view. Callers keep
//! those copies cheap by storing short keys and values inline and long ones `Arc`-shared:
//! a shard copy then allocates only the B-tree nodes and never copies a long value.
//!
//! Invariant: the shard of a key is a pure function of its bytes ([`ShardKey`]), so
//! iteration order (shard by shard, keys sorted within a shard) and therefore snapshot
//! bytes are identical on every replica holding the same contents.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A key that knows its shard hash. The hash must be deterministic across processes
/// (never `RandomState`), because shard order is part of the snapshot format.
pub(crate) trait ShardKey {
    /// A stable hash of the key.
    fn shard_hash(&self) -> u32;
}

impl ShardKey for [u8] {
    fn shard_hash(&self) -> u32 {
        crc32fast::hash(self)
    }
}

impl ShardKey for u64 {
    fn shard_hash(&self) -> u32 {
        // SplitMix64 finaliser: sequential client ids spread over all shards.
        let mut z = self.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as u32
    }
}

/// A map of `K` to `V` in a power-of-two number of copy-on-write shards.
#[derive(Debug, Clone)]
pub(crate) struct Shards<K, V> {
    /// Invariant: the length is a power of two and every key sits in shard
    /// `key.shard_hash() & (len - 1)`; `None` is an empty shard never written.
    shards: Vec<Option<Arc<BTreeMap<K, V>>>>,
    /// Invariant: the total number of entries over all shards.
    len: usize,
}

impl<K: Ord + Clone + ShardKey, V: Clone> Shards<K, V> {
    /// An empty map with `shard_count` shards (rounded up to a power of two).
    pub(crate) fn new(shard_count: usize) -> Shards<K, V> {
        let count = shard_count.max(1).next_power_of_two();
        Shards {
            shards: vec![None; count],
            len: 0,
        }
    }

    fn index_of<Q: ShardKey + ?Sized>(&self, key: &Q) -> usize {
        key.shard_hash() as usize & (self.shards.len() - 1)
    }

    /// The number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The value of `key`.
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Ord + ShardKey + ?Sized,
    {
        self.shards[self.index_of(key)].as_ref()?.get(key)
    }

    fn shard_mut(&mut self, index: usize) -> &mut BTreeMap<K, V> {
        Arc::make_mut(self.shards[index].get_or_insert_with(Default::default))
    }

    /// Mutable access to the value of `key` (copies the shard if a view shares it).
    pub(crate) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Ord + ShardKey + ?Sized,
    {
        let index = self.index_of(key);
        self.shards[index].as_ref()?.get(key)?;
        self.shard_mut(index).get_mut(key)
    }

    /// Sets `key` to `value`, returning the previous value.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        let index = self.index_of(&key);
        let previous = self.shard_mut(index).insert(key, value);
        if previous.is_none() {
            self.len += 1;
        }
        previous
    }

    /// Removes `key`, returning its value.
    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ShardKey + ?Sized,
    {
        let index = self.index_of(key);
        // Only copy a shared shard when the key is really there.
        self.shards[index].as_ref()?.get(key)?;
        let removed = self.shard_mut(index).remove(key);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// A point-in-time view sharing every shard: O(shard count), no entry is copied.
    pub(crate) fn view(&self) -> ShardsView<K, V> {
        ShardsView {
            shards: self.shards.clone(),
            len: self.len,
        }
    }
}

/// An immutable point-in-time copy of a [`Shards`] map; `Send` when `K` and `V` are, so it
/// can be handed to a helper thread.
#[derive(Debug, Clone)]
pub(crate) struct ShardsView<K, V> {
    shards: Vec<Option<Arc<BTreeMap<K, V>>>>,
    len: usize,
}

impl<K, V> ShardsView<K, V> {
    /// The number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Entries in canonical order: shard by shard, sorted by key within a shard.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flatten().flat_map(|shard| shard.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::bytes::Key;

    #[test]
    fn a_view_is_unaffected_by_later_writes() {
        let mut map: Shards<Key, u32> = Shards::new(8);
        for i in 0..100u32 {
            map.insert(Key::from(&i.to_le_bytes()[..]), i);
        }
        let view = map.view();
        map.insert(Key::from(&b"new"[..]), 7);
        map.remove(&0u32.to_le_bytes()[..]);
        *map.get_mut(&1u32.to_le_bytes()[..]).unwrap() = 1000;
        assert_eq!(view.len(), 100);
        assert_eq!(view.iter().count(), 100);
        assert!(
            view.iter()
                .all(|(key, value)| key[..] == value.to_le_bytes())
        );
        assert_eq!(map.len(), 100);
        assert_eq!(map.get(&1u32.to_le_bytes()[..]), Some(&1000));
        assert_eq!(map.get(&b"new"[..]), Some(&7));
    }

    #[test]
    fn iteration_order_depends_only_on_contents() {
        let mut forward: Shards<u64, ()> = Shards::new(4);
        let mut backward: Shards<u64, ()> = Shards::new(4);
        for i in 0..50 {
            forward.insert(i, ());
            backward.insert(49 - i, ());
        }
        let a: Vec<u64> = forward.view().iter().map(|(k, _)| *k).collect();
        let b: Vec<u64> = backward.view().iter().map(|(k, _)| *k).collect();
        assert_eq!(a, b);
        assert_eq!(a.len(), 50);
    }
}
