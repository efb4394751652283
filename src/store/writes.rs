//! A transaction's writes, pending or handed over: pairs in key order (for scans under a
//! prefix and for applying in order), with a set of their keys' hashes beside them, so that a
//! read of a key the batch does not write (most of them) costs one hash and one probe instead
//! of a walk down the ordered map comparing long keys with common prefixes.
//!
//! Owns: that pairing. Must not: know what a key means.

use rustc_hash::FxHashSet;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, BuildHasherDefault};

/// The hash a key is looked up by; computed once for a look through several batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct KeyHash(u64);

impl KeyHash {
    pub(super) fn of(key: &[u8]) -> KeyHash {
        KeyHash(BuildHasherDefault::<rustc_hash::FxHasher>::default().hash_one(key))
    }
}

/// Written values by key; `None` is a deletion.
#[derive(Debug, Default)]
pub(super) struct Writes {
    pairs: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The hash of every key in `pairs` (never removed: a key once written stays written).
    hashes: FxHashSet<KeyHash>,
}

impl Writes {
    pub(super) fn insert(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.hashes.insert(KeyHash::of(&key));
        self.pairs.insert(key, value);
    }

    pub(super) fn get(&self, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.get_hashed(key, KeyHash::of(key))
    }

    /// `get` with the key's hash already computed.
    pub(super) fn get_hashed(&self, key: &[u8], hash: KeyHash) -> Option<&Option<Vec<u8>>> {
        if self.hashes.contains(&hash) {
            self.pairs.get(key)
        } else {
            None
        }
    }

    /// The pairs whose key starts with `prefix`, in key order.
    pub(super) fn under<'w>(
        &'w self,
        prefix: &'w [u8],
    ) -> impl Iterator<Item = (&'w Vec<u8>, &'w Option<Vec<u8>>)> + 'w {
        self.pairs
            .range::<[u8], _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .take_while(move |(key, _)| key.starts_with(prefix))
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&Vec<u8>, &Option<Vec<u8>>)> {
        self.pairs.iter()
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.pairs.keys()
    }

    pub(super) fn into_pairs(self) -> impl Iterator<Item = (Vec<u8>, Option<Vec<u8>>)> {
        self.pairs.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever is written, a read finds exactly what an ordered map finds, and a scan
        /// under a prefix returns the same pairs in the same order.
        #[test]
        fn reads_and_scans_agree_with_an_ordered_map(
            ops in proptest::collection::vec((proptest::collection::vec(0u8..4, 0..5), proptest::option::of(any::<u8>())), 0..60),
            probes in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..5), 0..30),
        ) {
            let mut writes = Writes::default();
            let mut model: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
            for (key, value) in ops {
                let value = value.map(|byte| vec![byte]);
                writes.insert(key.clone(), value.clone());
                model.insert(key, value);
            }
            for probe in &probes {
                prop_assert_eq!(writes.get(probe), model.get(probe));
                let scanned: Vec<_> = writes.under(probe).collect();
                let expected: Vec<_> = model.iter().filter(|(key, _)| key.starts_with(probe)).collect();
                prop_assert_eq!(scanned, expected);
            }
            prop_assert!(writes.iter().eq(model.iter()));
        }
    }
}
