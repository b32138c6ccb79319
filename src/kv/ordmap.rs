//! [`OrdMap`]: a persistent (copy-on-write) B+tree, so that a consistent point-in-time
//! view costs one `Arc` clone and a helper thread can encode it while the event loop
//! keeps applying writes.
//!
//! Every node sits behind an `Arc`. [`OrdMap::view`] clones the root's `Arc`. A later
//! write copies only the nodes on its own root-to-leaf path that a view still shares
//! (`Arc::make_mut`): at most [`LEAF_ENTRIES_MAX`] entries plus [`BRANCH_CHILDREN_MAX`]
//! child pointers per level, about 11 KiB at 10 million 96-byte entries (depth 5),
//! whatever the size of the map. Once copied, a node is the writer's own and the next
//! writes to it copy nothing until the next view.
//!
//! Memory: a leaf's vector grows [`LEAF_GROWTH`] entries at a time (never doubling),
//! a split into a leaf's last position (sequential loads, the restore of a snapshot)
//! leaves the full leaf full, and a mid split shrinks the left half, so the map costs
//! its entries plus a few percent.
//!
//! Invariants: entries of a leaf are sorted and unique; a branch with `n` children holds
//! `n - 1` separators, `separators[i]` is above every key of `children[i]` and at most
//! every key of `children[i + 1]`; no node is empty (an emptied leaf is unlinked, and a
//! root branch with one child is replaced by it); every leaf is at the same depth.
//! Iteration is in key order, so equal contents iterate, and encode, identically on
//! every replica.

use std::borrow::Borrow;
use std::sync::Arc;

mod builder;
pub(crate) use builder::OrdMapBuilder;

/// Most entries of a leaf: what the first write to it after a view copies.
pub(crate) const LEAF_ENTRIES_MAX: usize = 32;
/// Most children of a branch.
pub(crate) const BRANCH_CHILDREN_MAX: usize = 64;
/// A full leaf vector grows by this many entries (bounded slack per leaf).
const LEAF_GROWTH: usize = 8;

#[derive(Debug, Clone)]
enum Node<K, V> {
    Leaf(Vec<(K, V)>),
    Branch(Branch<K, V>),
}

#[derive(Debug, Clone)]
struct Branch<K, V> {
    separators: Vec<K>,
    children: Vec<Arc<Node<K, V>>>,
}

impl<K, V> Branch<K, V> {
    fn child_index<Q>(&self, key: &Q) -> usize
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.separators
            .partition_point(|separator| separator.borrow() <= key)
    }
}

/// A sorted map of `K` to `V` whose views share every node with it.
#[derive(Debug, Clone)]
pub(crate) struct OrdMap<K, V> {
    root: Option<Arc<Node<K, V>>>,
    /// Invariant: the number of entries.
    len: usize,
}

impl<K, V> Default for OrdMap<K, V> {
    fn default() -> OrdMap<K, V> {
        OrdMap { root: None, len: 0 }
    }
}

impl<K: Ord + Clone, V: Clone> OrdMap<K, V> {
    /// An empty map (allocates nothing).
    pub(crate) fn new() -> OrdMap<K, V> {
        OrdMap::default()
    }

    /// The number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The value of `key`.
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let mut node = self.root.as_deref()?;
        loop {
            match node {
                Node::Branch(branch) => node = &branch.children[branch.child_index(key)],
                Node::Leaf(entries) => {
                    let found = entries.binary_search_by(|(k, _)| k.borrow().cmp(key));
                    return found.ok().map(|i| &entries[i].1);
                }
            }
        }
    }

    /// Entries whose key is at or above `start`, in ascending key order (one descent,
    /// then the iterator's walk: O(depth) to start, O(1) amortised per entry).
    pub(crate) fn iter_from<Q>(&self, start: &Q) -> Iter<'_, K, V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let mut stack = Vec::new();
        let mut node = self.root.as_deref();
        while let Some(current) = node {
            match current {
                Node::Branch(branch) => {
                    let index = branch.child_index(start);
                    // The walk goes on with the next child once this one is done.
                    stack.push((current, index + 1));
                    node = Some(&branch.children[index]);
                }
                Node::Leaf(entries) => {
                    let at = entries.partition_point(|(k, _)| k.borrow() < start);
                    stack.push((current, at));
                    node = None;
                }
            }
        }
        Iter { stack }
    }

    /// Removes every entry (views taken before keep theirs).
    pub(crate) fn clear(&mut self) {
        *self = OrdMap::new();
    }

    /// Mutable access to the value of `key` (copies the path a view shares, only when
    /// the key is there).
    pub(crate) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.get(key)?;
        let mut node = Arc::make_mut(self.root.as_mut()?);
        loop {
            match node {
                Node::Branch(branch) => {
                    let index = branch.child_index(key);
                    node = Arc::make_mut(&mut branch.children[index]);
                }
                Node::Leaf(entries) => {
                    let found = entries.binary_search_by(|(k, _)| k.borrow().cmp(key));
                    return found.ok().map(|i| &mut entries[i].1);
                }
            }
        }
    }

    /// Sets `key` to `value`, returning the previous value.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        let root = self
            .root
            .get_or_insert_with(|| Arc::new(Node::Leaf(Vec::new())));
        let (previous, split) = insert_into(Arc::make_mut(root), key, value);
        if let Some((separator, right)) = split {
            let left = Arc::clone(root);
            *root = Arc::new(Node::Branch(Branch {
                separators: vec![separator],
                children: vec![left, right],
            }));
        }
        if previous.is_none() {
            self.len += 1;
        }
        previous
    }

    /// Removes `key`, returning its value.
    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        // Only copy a shared path when the key is really there.
        self.get(key)?;
        let root = self.root.as_mut()?;
        let removed = remove_from(Arc::make_mut(root), key);
        if removed.is_some() {
            self.len -= 1;
        }
        loop {
            match self.root.as_deref() {
                Some(Node::Leaf(entries)) if entries.is_empty() => self.root = None,
                Some(Node::Branch(branch)) if branch.children.len() == 1 => {
                    self.root = Some(Arc::clone(&branch.children[0]));
                }
                _ => break,
            }
        }
        removed
    }

    /// A point-in-time view sharing every node: O(1), no entry is copied.
    pub(crate) fn view(&self) -> OrdMapView<K, V> {
        OrdMapView {
            root: self.root.clone(),
            len: self.len,
        }
    }
}

/// A node's split: the separator and the new right sibling.
type Split<K, V> = (K, Arc<Node<K, V>>);

/// Inserts into the subtree `node`; returns the previous value and, when `node` split,
/// the separator and the new right sibling.
fn insert_into<K: Ord + Clone, V: Clone>(
    node: &mut Node<K, V>,
    key: K,
    value: V,
) -> (Option<V>, Option<Split<K, V>>) {
    match node {
        Node::Leaf(entries) => {
            let position = match entries.binary_search_by(|(k, _)| k.cmp(&key)) {
                Ok(i) => return (Some(std::mem::replace(&mut entries[i].1, value)), None),
                Err(position) => position,
            };
            if entries.len() == entries.capacity() {
                entries.reserve_exact(LEAF_GROWTH);
            }
            entries.insert(position, (key, value));
            if entries.len() <= LEAF_ENTRIES_MAX {
                return (None, None);
            }
            let at = split_point(position, entries.len());
            let right = split_leaf(entries, at);
            let separator = right[0].0.clone();
            (None, Some((separator, Arc::new(Node::Leaf(right)))))
        }
        Node::Branch(branch) => {
            let index = branch.child_index(&key);
            let (previous, split) =
                insert_into(Arc::make_mut(&mut branch.children[index]), key, value);
            let Some((separator, right)) = split else {
                return (previous, None);
            };
            branch.separators.insert(index, separator);
            branch.children.insert(index + 1, right);
            if branch.children.len() <= BRANCH_CHILDREN_MAX {
                return (previous, None);
            }
            let at = split_point(index + 1, branch.children.len());
            let children = branch.children.split_off(at);
            let separators = branch.separators.split_off(at);
            let promoted = branch
                .separators
                .pop()
                .expect("a full branch has separators");
            branch.children.shrink_to_fit();
            branch.separators.shrink_to_fit();
            let right = Branch {
                separators,
                children,
            };
            (previous, Some((promoted, Arc::new(Node::Branch(right)))))
        }
    }
}

/// Where an overfull node of `len` items splits after an insert at `position`: an
/// insert at the end (an ascending load) leaves the left node full, others split evenly.
fn split_point(position: usize, len: usize) -> usize {
    if position == len - 1 {
        len - 1
    } else {
        len / 2
    }
}

fn split_leaf<K, V>(entries: &mut Vec<(K, V)>, at: usize) -> Vec<(K, V)> {
    let mut right = Vec::with_capacity(LEAF_GROWTH.max(entries.len() - at));
    right.extend(entries.drain(at..));
    entries.shrink_to_fit();
    right
}

/// Removes `key` from the subtree `node` (which holds it), unlinking emptied children.
fn remove_from<K, V, Q>(node: &mut Node<K, V>, key: &Q) -> Option<V>
where
    K: Ord + Clone + Borrow<Q>,
    V: Clone,
    Q: Ord + ?Sized,
{
    match node {
        Node::Leaf(entries) => {
            let i = entries
                .binary_search_by(|(k, _)| k.borrow().cmp(key))
                .ok()?;
            let (_, value) = entries.remove(i);
            if entries.capacity() >= 2 * entries.len() + LEAF_GROWTH {
                entries.shrink_to_fit();
            }
            Some(value)
        }
        Node::Branch(branch) => {
            let index = branch.child_index(key);
            let removed = remove_from(Arc::make_mut(&mut branch.children[index]), key);
            let emptied = match &*branch.children[index] {
                Node::Leaf(entries) => entries.is_empty(),
                Node::Branch(child) => child.children.is_empty(),
            };
            if emptied && branch.children.len() > 1 {
                branch.children.remove(index);
                branch.separators.remove(index.saturating_sub(1));
            } else if emptied {
                branch.children.clear();
            }
            removed
        }
    }
}

/// An immutable point-in-time copy of an [`OrdMap`]; `Send` when `K` and `V` are, so it
/// can be handed to a helper thread.
#[derive(Debug, Clone)]
pub(crate) struct OrdMapView<K, V> {
    root: Option<Arc<Node<K, V>>>,
    len: usize,
}

impl<K, V> OrdMapView<K, V> {
    /// The number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Entries in ascending key order.
    pub(crate) fn iter(&self) -> Iter<'_, K, V> {
        Iter {
            stack: self
                .root
                .as_deref()
                .map(|root| (root, 0))
                .into_iter()
                .collect(),
        }
    }
}

/// In-order iterator over an [`OrdMapView`]: a stack of nodes and the next position in
/// each (depth-bounded, so a few words).
pub(crate) struct Iter<'a, K, V> {
    stack: Vec<(&'a Node<K, V>, usize)>,
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<(&'a K, &'a V)> {
        loop {
            let (node, position) = self.stack.last_mut()?;
            let node: &'a Node<K, V> = node;
            match node {
                Node::Leaf(entries) => match entries.get(*position) {
                    Some((key, value)) => {
                        *position += 1;
                        return Some((key, value));
                    }
                    None => {
                        self.stack.pop();
                    }
                },
                Node::Branch(branch) => match branch.children.get(*position) {
                    Some(child) => {
                        *position += 1;
                        self.stack.push((child, 0));
                    }
                    None => {
                        self.stack.pop();
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::kv::bytes::Key;

    fn depth<K, V>(node: &Node<K, V>) -> usize {
        match node {
            Node::Leaf(_) => 1,
            Node::Branch(branch) => {
                let depths: Vec<usize> = branch.children.iter().map(|c| depth(c)).collect();
                assert!(depths.windows(2).all(|w| w[0] == w[1]), "uniform depth");
                assert_eq!(branch.separators.len() + 1, branch.children.len());
                assert!(!branch.children.is_empty());
                1 + depths[0]
            }
        }
    }

    #[test]
    fn a_view_is_unaffected_by_later_writes() {
        let mut map: OrdMap<Key, u32> = OrdMap::new();
        for i in 0..10_000u32 {
            map.insert(Key::from(&i.to_be_bytes()[..]), i);
        }
        let view = map.view();
        map.insert(Key::from(&b"new"[..]), 7);
        map.remove(&0u32.to_be_bytes()[..]);
        *map.get_mut(&1u32.to_be_bytes()[..]).unwrap() = 1000;
        assert_eq!(view.len(), 10_000);
        assert_eq!(view.iter().count(), 10_000);
        assert!(
            view.iter()
                .enumerate()
                .all(|(i, (key, value))| key[..] == value.to_be_bytes() && *value == i as u32)
        );
        assert_eq!(map.len(), 10_000);
        assert_eq!(map.get(&1u32.to_be_bytes()[..]), Some(&1000));
        assert_eq!(map.get(&b"new"[..]), Some(&7));
        assert_eq!(map.get(&0u32.to_be_bytes()[..]), None);
    }

    #[test]
    fn an_ascending_load_fills_its_leaves() {
        let mut map: OrdMap<u64, ()> = OrdMap::new();
        let count = 100_000u64;
        for i in 0..count {
            map.insert(i, ());
        }
        let mut leaves = 0;
        let mut stack = vec![map.root.as_deref().unwrap()];
        while let Some(node) = stack.pop() {
            match node {
                Node::Leaf(_) => leaves += 1,
                Node::Branch(branch) => stack.extend(branch.children.iter().map(|c| &**c)),
            }
        }
        assert_eq!(leaves, count.div_ceil(LEAF_ENTRIES_MAX as u64));
        assert!(depth(map.root.as_deref().unwrap()) <= 4);
    }

    #[test]
    fn removing_everything_leaves_an_empty_map() {
        let mut map: OrdMap<u64, u64> = OrdMap::new();
        for i in 0..5_000 {
            map.insert(i * 7919 % 5_000, i);
        }
        let view = map.view();
        for i in 0..5_000 {
            assert!(map.remove(&i).is_some(), "{i}");
        }
        assert_eq!(map.len(), 0);
        assert!(map.root.is_none());
        assert_eq!(view.iter().count(), 5_000);
    }

    proptest! {
        #[test]
        fn behaves_like_a_btreemap(ops in proptest::collection::vec((0u8..3, 0u16..600, any::<u32>()), 0..3000)) {
            let mut map: OrdMap<u16, u32> = OrdMap::new();
            let mut model = BTreeMap::new();
            let mut views = Vec::new();
            for (i, (op, key, value)) in ops.iter().enumerate() {
                match op {
                    0 => prop_assert_eq!(map.insert(*key, *value), model.insert(*key, *value)),
                    1 => prop_assert_eq!(map.remove(key), model.remove(key)),
                    _ => prop_assert_eq!(map.get(key), model.get(key)),
                }
                if i % 500 == 0 {
                    views.push((map.view(), model.clone()));
                }
            }
            prop_assert_eq!(map.len(), model.len());
            if let Some(root) = map.root.as_deref() {
                depth(root);
            }
            for start in [0u16, 1, 299, 300, 599, 600] {
                let got: Vec<(u16, u32)> = map.iter_from(&start).map(|(k, v)| (*k, *v)).collect();
                let want: Vec<(u16, u32)> = model.range(start..).map(|(k, v)| (*k, *v)).collect();
                prop_assert_eq!(got, want, "iter_from({})", start);
            }
            let got: Vec<(u16, u32)> = map.view().iter().map(|(k, v)| (*k, *v)).collect();
            let want: Vec<(u16, u32)> = model.into_iter().collect();
            prop_assert_eq!(got, want);
            for (view, model) in views {
                let got: Vec<(u16, u32)> = view.iter().map(|(k, v)| (*k, *v)).collect();
                let want: Vec<(u16, u32)> = model.into_iter().collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
