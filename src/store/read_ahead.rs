//! The writer's view of the store: the batches it has handed over for committing but that are
//! not applied yet, and the pairs read ahead for it.
//!
//! Handed batches: the writer prepares batch N+1 while a committer thread applies batch N
//! (`Store::hand_over`, `Store::commit_handed`). The writer's transactions (`Store::begin_kept`)
//! read through the handed batches, newest first, before the store, so they see every batch
//! the writer prepared whether it is applied yet or not. A handed batch leaves the view only
//! after the store holds it.
//!
//! Pairs read ahead: while the writer applies one batch, a second thread reads what the next
//! batches of its group will look up first (each record's stored version, the postings of its
//! blocking keys, the persons they name, name counts) through a transaction that keeps every
//! pair it reads here (`Store::begin_read_ahead`). The writer's transaction takes a kept pair
//! instead of asking the store, so the store's reads run on the other core.
//!
//! Exact, never stale. A kept pair holds what the store holds, except for keys a handed batch
//! writes, which the writer reads from that batch instead. Every commit, once applied, drops
//! the keys it wrote and counts itself; a pair
//! read ahead is kept only if no commit finished between its read and its keeping, so a pair
//! read before a commit's apply either is dropped by it or was never kept.
//!
//! Owns the handed batches, the kept pairs and their bound. Must not: know what a key means,
//! or make a commit wait for a read.

use super::kv::{KvStore, WriteBatch};
use super::writes::{KeyHash, Writes};
use super::StoreError;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// What the read-ahead did for the writer, since the store opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadAheadStats {
    /// Reads of the writer answered from kept pairs.
    pub n_hits: u64,
    /// Reads of the writer that went to the store.
    pub n_misses: u64,
    /// Pairs read ahead and kept.
    pub n_kept: u64,
    /// Kept pairs a commit dropped before the writer used them.
    pub n_dropped: u64,
}

/// A batch the writer handed over: its writes, readable until the store holds them.
pub struct HandedBatch {
    writes: Writes,
}

impl HandedBatch {
    pub(super) fn to_write_batch(&self) -> WriteBatch {
        let mut batch = WriteBatch::default();
        for (key, value) in self.writes.iter() {
            match value {
                Some(value) => batch.put(key.clone(), value.clone()),
                None => batch.delete(key.clone()),
            }
        }
        batch
    }
}

pub(super) struct ReadAhead {
    kept: Mutex<Kept>,
    /// Oldest first. Locked after `kept` when both are.
    handed: RwLock<VecDeque<Arc<HandedBatch>>>,
    bytes_max: AtomicU64,
    n_hits: AtomicU64,
    n_misses: AtomicU64,
    n_kept: AtomicU64,
    n_dropped: AtomicU64,
}

/// A kept pair remembers the batch it was read for (`tag`), so that it can be let go
/// once the writer has applied that batch.
#[derive(Default)]
struct Kept {
    gets: HashMap<Vec<u8>, (Option<Vec<u8>>, u64)>,
    bytes: usize,
    /// Commits finished (applied and dropped from here) since the store opened.
    n_commits: u64,
}

fn get_bytes(key: &[u8], value: &Option<Vec<u8>>) -> usize {
    key.len() + value.as_ref().map_or(0, Vec::len) + 32
}

impl ReadAhead {
    /// `bytes_max`: the most the kept pairs may hold; 0 keeps nothing.
    pub(super) fn new(bytes_max: usize) -> ReadAhead {
        ReadAhead {
            kept: Mutex::new(Kept::default()),
            handed: RwLock::new(VecDeque::new()),
            bytes_max: AtomicU64::new(bytes_max as u64),
            n_hits: AtomicU64::new(0),
            n_misses: AtomicU64::new(0),
            n_kept: AtomicU64::new(0),
            n_dropped: AtomicU64::new(0),
        }
    }

    pub(super) fn set_bytes_max(&self, bytes_max: usize) {
        self.bytes_max.store(bytes_max as u64, Ordering::Relaxed);
    }

    pub(super) fn stats(&self) -> ReadAheadStats {
        ReadAheadStats {
            n_hits: self.n_hits.load(Ordering::Relaxed),
            n_misses: self.n_misses.load(Ordering::Relaxed),
            n_kept: self.n_kept.load(Ordering::Relaxed),
            n_dropped: self.n_dropped.load(Ordering::Relaxed),
        }
    }

    /// Whether the kept pairs are at their bound: a read ahead then waits for the writer.
    pub(super) fn is_full(&self) -> bool {
        let kept = self.kept.lock().expect("lock poisoned");
        kept.bytes as u64 >= self.bytes_max.load(Ordering::Relaxed)
    }

    /// Makes `writes` part of the writer's view until `committed` is called for them.
    pub(super) fn hand_over(&self, writes: Writes) -> Arc<HandedBatch> {
        let batch = Arc::new(HandedBatch { writes });
        self.handed
            .write()
            .expect("lock poisoned")
            .push_back(Arc::clone(&batch));
        batch
    }

    /// How many handed batches the store does not hold yet.
    #[cfg(test)]
    pub(super) fn n_handed(&self) -> usize {
        self.handed.read().expect("lock poisoned").len()
    }

    /// The writer's read of one key: from a handed batch, kept, or the store's.
    pub(super) fn get(&self, kv: &dyn KvStore, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        {
            let handed = self.handed.read().expect("lock poisoned");
            let hash = KeyHash::of(key);
            if let Some(value) = handed.iter().rev().find_map(|batch| batch.writes.get_hashed(key, hash)) {
                return Ok(value.clone());
            }
        }
        let kept = {
            let kept = self.kept.lock().expect("lock poisoned");
            kept.gets.get(key).map(|(value, _)| value.clone())
        };
        match kept {
            Some(value) => {
                self.n_hits.fetch_add(1, Ordering::Relaxed);
                Ok(value)
            }
            None => {
                self.n_misses.fetch_add(1, Ordering::Relaxed);
                kv.get(key)
            }
        }
    }

    /// The handed batches' writes under `prefix`, oldest batch first, each as `keep` makes it.
    /// Taken before the store is read: a batch leaves the view only once the store holds it,
    /// so the store read after it is at least as new.
    fn handed_under<T>(&self, prefix: &[u8], keep: impl Fn(&Option<Vec<u8>>) -> T) -> BTreeMap<Vec<u8>, T> {
        let handed = self.handed.read().expect("lock poisoned");
        let mut writes = BTreeMap::new();
        for batch in handed.iter() {
            for (key, value) in batch.writes.under(prefix) {
                writes.insert(key.clone(), keep(value));
            }
        }
        writes
    }

    /// The handed batches' pairs under `prefix`, the newer over the older (`None`: deleted).
    pub(super) fn handed_pairs_under(&self, prefix: &[u8]) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        self.handed_under(prefix, Clone::clone)
    }

    /// A read ahead of one key for the batch `tag`: read from the store and kept, unless a
    /// commit finished meanwhile.
    pub(super) fn read_get(&self, kv: &dyn KvStore, key: &[u8], tag: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let n_commits = {
            let mut kept = self.kept.lock().expect("lock poisoned");
            // Kept already (another record of the group looked it up): kept for this batch
            // too, no second read.
            if let Some((value, old_tag)) = kept.gets.get_mut(key) {
                *old_tag = (*old_tag).max(tag);
                return Ok(value.clone());
            }
            kept.n_commits
        };
        let value = kv.get(key)?;
        let mut kept = self.kept.lock().expect("lock poisoned");
        if kept.n_commits == n_commits && (kept.bytes as u64) < self.bytes_max.load(Ordering::Relaxed) {
            if let Some((_, old_tag)) = kept.gets.get_mut(key) {
                *old_tag = (*old_tag).max(tag);
            } else {
                kept.bytes += get_bytes(key, &value);
                kept.gets.insert(key.to_vec(), (value.clone(), tag));
                self.n_kept.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(value)
    }

    /// Runs a commit: `apply`s `batch`, then drops what is kept of the keys it wrote. With
    /// `handed`, the batch is the oldest handed one, and leaves the writer's view in the same
    /// step.
    pub(super) fn commit(
        &self,
        batch: WriteBatch,
        handed: Option<&Arc<HandedBatch>>,
        apply: impl FnOnce(WriteBatch) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let keys: Vec<Vec<u8>> = match handed {
            Some(_) => Vec::new(),
            None => batch.writes.iter().map(|(key, _)| key.clone()).collect(),
        };
        apply(batch)?;
        let mut kept = self.kept.lock().expect("lock poisoned");
        kept.n_commits += 1;
        let mut n_dropped = 0;
        {
            let written: Box<dyn Iterator<Item = &Vec<u8>>> = match handed {
                Some(handed) => Box::new(handed.writes.keys()),
                None => Box::new(keys.iter()),
            };
            if !kept.gets.is_empty() {
                for key in written {
                    if let Some((value, _)) = kept.gets.remove(key) {
                        kept.bytes -= get_bytes(key, &value);
                        n_dropped += 1;
                    }
                }
            }
        }
        self.n_dropped.fetch_add(n_dropped, Ordering::Relaxed);
        if let Some(handed) = handed {
            let mut queue = self.handed.write().expect("lock poisoned");
            let oldest = queue.pop_front();
            debug_assert!(
                oldest.is_some_and(|oldest| Arc::ptr_eq(&oldest, handed)),
                "handed batches are committed in the order handed"
            );
        }
        Ok(())
    }

    /// Lets go of what was read ahead for batches up to `tag`, which the writer has applied.
    pub(super) fn retire(&self, tag: u64) {
        let mut kept = self.kept.lock().expect("lock poisoned");
        if kept.gets.is_empty() {
            return;
        }
        let mut bytes = kept.bytes;
        kept.gets.retain(|key, (value, kept_for)| {
            let keep = *kept_for > tag;
            if !keep {
                bytes -= get_bytes(key, value);
            }
            keep
        });
        kept.bytes = bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::kv::MemKv;

    fn put(kv: &MemKv, read_ahead: &ReadAhead, key: &[u8], value: &[u8]) {
        let mut batch = WriteBatch::default();
        batch.put(key.to_vec(), value.to_vec());
        read_ahead.commit(batch, None, |batch| kv.apply(batch)).expect("commit");
    }

    #[test]
    fn a_commit_drops_what_it_writes() {
        let kv = MemKv::default();
        let read_ahead = ReadAhead::new(1 << 20);
        put(&kv, &read_ahead, b"a", b"1");
        assert_eq!(read_ahead.read_get(&kv, b"a", 1).expect("read"), Some(b"1".to_vec()));
        assert_eq!(read_ahead.read_get(&kv, b"b", 1).expect("read"), None);
        assert_eq!(read_ahead.get(&kv, b"a").expect("get"), Some(b"1".to_vec()));
        assert_eq!(read_ahead.stats().n_hits, 1);
        put(&kv, &read_ahead, b"a", b"2");
        put(&kv, &read_ahead, b"b", b"3");
        assert_eq!(read_ahead.get(&kv, b"a").expect("get"), Some(b"2".to_vec()));
        assert_eq!(read_ahead.get(&kv, b"b").expect("get"), Some(b"3".to_vec()));
        assert_eq!(read_ahead.stats().n_dropped, 2);
    }

    #[test]
    fn a_pair_kept_already_is_not_read_again() {
        let kv = MemKv::default();
        let read_ahead = ReadAhead::new(1 << 20);
        put(&kv, &read_ahead, b"a", b"1");
        read_ahead.read_get(&kv, b"a", 1).expect("read");
        // Written behind the kept pairs' back (not through a commit): a second read ahead
        // answers from what is kept, and keeps it for the later batch.
        kv.apply({
            let mut batch = WriteBatch::default();
            batch.put(b"a".to_vec(), b"2".to_vec());
            batch
        })
        .expect("apply");
        assert_eq!(read_ahead.read_get(&kv, b"a", 2).expect("read"), Some(b"1".to_vec()));
        assert_eq!(read_ahead.stats().n_kept, 1);
        read_ahead.retire(1);
        assert_eq!(
            read_ahead.get(&kv, b"a").expect("get"),
            Some(b"1".to_vec()),
            "kept for batch 2"
        );
    }

    #[test]
    fn retired_and_bounded() {
        let kv = MemKv::default();
        let read_ahead = ReadAhead::new(1 << 20);
        put(&kv, &read_ahead, b"a", b"1");
        read_ahead.read_get(&kv, b"a", 1).expect("read");
        read_ahead.read_get(&kv, b"b", 2).expect("read");
        read_ahead.retire(1);
        read_ahead.get(&kv, b"a").expect("get");
        read_ahead.get(&kv, b"b").expect("get");
        assert_eq!((read_ahead.stats().n_hits, read_ahead.stats().n_misses), (1, 1));
        read_ahead.retire(2);
        assert!(!read_ahead.is_full());
        assert_eq!(read_ahead.kept.lock().expect("lock").bytes, 0);
        let small = ReadAhead::new(30);
        small.read_get(&kv, b"a", 1).expect("read");
        assert!(small.is_full());
        small.read_get(&kv, b"b", 1).expect("read");
        assert_eq!(
            small.kept.lock().expect("lock").gets.len(),
            1,
            "nothing kept past the bound"
        );
    }
}
