//! [`OrdMapBuilder`]: builds an [`OrdMap`] bottom-up from entries in ascending key order
//! (a snapshot's restore), in O(n) with no search and no split: leaves are filled to
//! [`LEAF_ENTRIES_MAX`] one after the other, then each level of branches is made from
//! the level below, its children spread evenly over the fewest branches of at most
//! [`BRANCH_CHILDREN_MAX`].
//!
//! Invariants: the entries pushed are strictly ascending ([`OrdMapBuilder::push`] refuses
//! any other), so the map built holds the [`OrdMap`] invariants: sorted unique leaves, a
//! branch's separators are the first keys of its children after the first, no node is
//! empty, every leaf at the same depth, and a root that is a branch has two children or
//! more.

use std::sync::Arc;

use super::{BRANCH_CHILDREN_MAX, Branch, LEAF_ENTRIES_MAX, Node, OrdMap};

/// A node of the level being built and its first key.
type Child<K, V> = (K, Arc<Node<K, V>>);

/// Builds an [`OrdMap`] from strictly ascending entries.
pub(crate) struct OrdMapBuilder<K, V> {
    /// The leaf being filled (never more than [`LEAF_ENTRIES_MAX`] entries).
    leaf: Vec<(K, V)>,
    /// Full leaves so far, in key order.
    leaves: Vec<Child<K, V>>,
    len: usize,
}

impl<K: Ord + Clone, V: Clone> OrdMapBuilder<K, V> {
    /// A builder holding no entry.
    pub(crate) fn new() -> OrdMapBuilder<K, V> {
        OrdMapBuilder {
            leaf: Vec::new(),
            leaves: Vec::new(),
            len: 0,
        }
    }

    /// Adds an entry above every entry added so far; returns false, adding nothing, when
    /// `key` is not above the last key.
    pub(crate) fn push(&mut self, key: K, value: V) -> bool {
        let last = match self.leaf.last() {
            Some((last, _)) => Some(last),
            None => self.leaves.last().and_then(|(_, leaf)| match &**leaf {
                Node::Leaf(entries) => entries.last().map(|(last, _)| last),
                Node::Branch(_) => None,
            }),
        };
        if last.is_some_and(|last| *last >= key) {
            return false;
        }
        if self.leaf.len() == LEAF_ENTRIES_MAX {
            self.seal_leaf();
        }
        if self.leaf.capacity() == 0 {
            self.leaf.reserve_exact(LEAF_ENTRIES_MAX);
        }
        self.leaf.push((key, value));
        self.len += 1;
        true
    }

    fn seal_leaf(&mut self) {
        let mut entries = std::mem::take(&mut self.leaf);
        entries.shrink_to_fit();
        if let Some(first) = entries.first().map(|(key, _)| key.clone()) {
            self.leaves.push((first, Arc::new(Node::Leaf(entries))));
        }
    }

    /// The map of every entry pushed.
    pub(crate) fn finish(mut self) -> OrdMap<K, V> {
        self.seal_leaf();
        let mut level = std::mem::take(&mut self.leaves);
        while level.len() > 1 {
            level = branches_over(level);
        }
        OrdMap {
            root: level.pop().map(|(_, root)| root),
            len: self.len,
        }
    }
}

/// The level of branches above `children` (more than one): the fewest branches of at
/// most [`BRANCH_CHILDREN_MAX`] children, sizes differing by one at most.
fn branches_over<K, V>(children: Vec<Child<K, V>>) -> Vec<Child<K, V>> {
    let count = children.len().div_ceil(BRANCH_CHILDREN_MAX);
    let (base, extra) = (children.len() / count, children.len() % count);
    let mut parents = Vec::with_capacity(count);
    let mut children = children.into_iter();
    for i in 0..count {
        let size = base + usize::from(i < extra);
        let Some((first, node)) = children.next() else {
            break;
        };
        let mut branch = Branch {
            separators: Vec::with_capacity(size - 1),
            children: Vec::with_capacity(size),
        };
        branch.children.push(node);
        for (separator, node) in children.by_ref().take(size - 1) {
            branch.separators.push(separator);
            branch.children.push(node);
        }
        parents.push((first, Arc::new(Node::Branch(branch))));
    }
    parents
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The depth of `node`, checking the invariants of the module docs on the way.
    fn checked_depth<K: Ord, V>(node: &Node<K, V>, is_root: bool) -> usize {
        match node {
            Node::Leaf(entries) => {
                assert!(!entries.is_empty() && entries.len() <= LEAF_ENTRIES_MAX);
                assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
                1
            }
            Node::Branch(branch) => {
                assert!(branch.children.len() <= BRANCH_CHILDREN_MAX);
                assert!(branch.children.len() >= if is_root { 2 } else { 1 });
                assert_eq!(branch.separators.len() + 1, branch.children.len());
                let depths: Vec<usize> = branch
                    .children
                    .iter()
                    .map(|c| checked_depth(c, false))
                    .collect();
                assert!(depths.windows(2).all(|w| w[0] == w[1]), "uniform depth");
                1 + depths[0]
            }
        }
    }

    fn built(count: u64) -> OrdMap<u64, u64> {
        let mut builder = OrdMapBuilder::new();
        for key in 0..count {
            assert!(builder.push(key * 3, key));
        }
        builder.finish()
    }

    /// Goal: maps built bottom-up at the sizes where leaves and levels fill up hold every
    /// entry in order, find each key with the search of [`OrdMap::get`] (so separators
    /// are right), keep every invariant, and take writes as a map built by inserts does.
    #[test]
    fn built_maps_are_valid_trees_at_every_boundary() {
        let leaf = LEAF_ENTRIES_MAX as u64;
        let level = leaf * BRANCH_CHILDREN_MAX as u64;
        for count in [
            0,
            1,
            2,
            leaf - 1,
            leaf,
            leaf + 1,
            level,
            level + 1,
            level * 2 + 5,
            300_000,
        ] {
            let mut map = built(count);
            assert_eq!(map.len(), count as usize);
            if let Some(root) = map.root.as_deref() {
                checked_depth(root, true);
            }
            let got: Vec<(u64, u64)> = map.view().iter().map(|(k, v)| (*k, *v)).collect();
            assert_eq!(
                got,
                (0..count).map(|k| (k * 3, k)).collect::<Vec<_>>(),
                "{count}"
            );
            for key in 0..count {
                assert_eq!(map.get(&(key * 3)), Some(&key), "{count}: {key}");
                assert_eq!(map.get(&(key * 3 + 1)), None);
            }
            let mut model: BTreeMap<u64, u64> = got.into_iter().collect();
            for key in (0..count * 3 + 10).step_by(7) {
                assert_eq!(map.insert(key, 1), model.insert(key, 1));
                assert_eq!(map.remove(&(key / 2)), model.remove(&(key / 2)));
            }
            if let Some(root) = map.root.as_deref() {
                checked_depth(root, true);
            }
            let got: Vec<(u64, u64)> = map.view().iter().map(|(k, v)| (*k, *v)).collect();
            assert_eq!(
                got,
                model.into_iter().collect::<Vec<_>>(),
                "{count} after writes"
            );
        }
    }

    #[test]
    fn a_key_not_above_the_last_is_refused() {
        let mut builder = OrdMapBuilder::new();
        for key in 0..40u32 {
            assert!(builder.push(key, ()));
        }
        assert!(!builder.push(39, ()), "a repeat");
        assert!(!builder.push(3, ()), "a step back");
        assert!(builder.push(40, ()));
        assert_eq!(builder.finish().len(), 41);
    }
}
