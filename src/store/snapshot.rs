//! Consistent snapshots of the whole store while writes go on, for backups: a reader pages
//! through every key in order and sees each one as it was when the snapshot opened.
//!
//! Copy-on-write: while a snapshot is open, a commit first keeps the value each key it writes
//! had (its pre-image), unless the reader has already passed that key or a pre-image of it is
//! already kept. The reader takes a key's pre-image when there is one and the live value
//! otherwise. A commit and a page read exclude each other, so a page never sees half a
//! commit. The pre-images are bounded: past the bound a commit waits until the reader has
//! passed enough keys to free room, so ingest slows to the pace of the reader instead of
//! memory growing without end.
//!
//! A commit whose apply panics poisons the lock; what it guards is whole then (the pre-images
//! are kept before the apply), so later commits and reads take it as it is, and the store
//! below reports the torn batch (`StoreError::Torn`).
//!
//! Owns the one open snapshot and its pre-images. Must not: know what a key means, or hold a
//! commit for longer than one page read.

use super::kv::{KvPair, KvStore, WriteBatch};
use super::StoreError;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The commit path's side of snapshots: every write batch of the store goes through `apply`.
#[derive(Default)]
pub(super) struct CopyOnWrite {
    open: Mutex<Option<OpenSnapshot>>,
    /// Raised when the reader frees pre-images or the snapshot closes.
    room: Condvar,
    /// Commits waiting for the lock. The reader lets them go first: a mutex is not fair, and
    /// a reader that takes it again right after each page could keep a commit waiting.
    commits_waiting: AtomicUsize,
}

struct OpenSnapshot {
    /// The last key the reader has been given; `None` before the first page.
    passed: Option<Vec<u8>>,
    /// The reader has been given every key.
    complete: bool,
    /// Values at the snapshot of keys written since, beyond `passed` (`None`: absent then).
    preimages: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    preimage_bytes: usize,
    preimage_bytes_max: usize,
    stats: SnapshotStats,
}

/// What keeping a snapshot cost the write path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Commits while the snapshot was open.
    pub n_commits: u64,
    /// Pre-images kept.
    pub n_preimages: u64,
    /// The most bytes of pre-images held at once.
    pub preimage_bytes_peak: usize,
    /// The longest one commit waited for the reader: for a page read to end, or for room.
    pub commit_wait_max: Duration,
}

fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

impl CopyOnWrite {
    /// Applies `batch`, first keeping the pre-images an open snapshot still needs.
    pub(super) fn apply(&self, kv: &dyn KvStore, batch: WriteBatch) -> Result<(), StoreError> {
        self.apply_with(kv, batch, |batch| kv.apply(batch))
    }

    /// `apply`, with the writes applied one at a time (`KvStore::apply_each`).
    pub(super) fn apply_each(&self, kv: &dyn KvStore, batch: WriteBatch) -> Result<(), StoreError> {
        self.apply_with(kv, batch, |batch| kv.apply_each(batch))
    }

    /// `apply`, with the writes applied by `apply` (to `kv`).
    pub(super) fn apply_with(
        &self,
        kv: &dyn KvStore,
        batch: WriteBatch,
        apply: impl FnOnce(WriteBatch) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let started = Instant::now();
        self.commits_waiting.fetch_add(1, Ordering::AcqRel);
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        self.commits_waiting.fetch_sub(1, Ordering::AcqRel);
        let mut open = self
            .room
            .wait_while(open, |open| {
                open.as_ref()
                    .is_some_and(|open| !open.complete && open.preimage_bytes > open.preimage_bytes_max)
            })
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(snapshot) = open.as_mut() {
            snapshot.stats.n_commits += 1;
            snapshot.stats.commit_wait_max = snapshot.stats.commit_wait_max.max(started.elapsed());
            if !snapshot.complete {
                for (key, _) in &batch.writes {
                    let passed = snapshot
                        .passed
                        .as_deref()
                        .is_some_and(|passed| key.as_slice() <= passed);
                    if passed || snapshot.preimages.contains_key(key) {
                        continue;
                    }
                    let before = kv.get(key)?;
                    snapshot.preimage_bytes += key.len() + before.as_ref().map_or(0, Vec::len);
                    snapshot.preimages.insert(key.clone(), before);
                    snapshot.stats.n_preimages += 1;
                }
                snapshot.stats.preimage_bytes_peak = snapshot.stats.preimage_bytes_peak.max(snapshot.preimage_bytes);
            }
        }
        // Applied while holding the lock: a page read sees all of this batch or none of it.
        apply(batch)
    }

    /// Opens the snapshot; `read_info` runs while no commit can happen, so what it reads is the
    /// state the snapshot keeps.
    pub(super) fn open<T>(
        &self,
        preimage_bytes_max: usize,
        read_info: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.is_some() {
            return Err(StoreError::SnapshotOpen);
        }
        let info = read_info()?;
        *open = Some(OpenSnapshot {
            passed: None,
            complete: false,
            preimages: BTreeMap::new(),
            preimage_bytes: 0,
            preimage_bytes_max,
            stats: SnapshotStats::default(),
        });
        Ok(info)
    }

    pub(super) fn is_open(&self) -> bool {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).is_some()
    }

    pub(super) fn close(&self) {
        *self.open.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.room.notify_all();
    }

    pub(super) fn stats(&self) -> SnapshotStats {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|open| open.stats)
            .unwrap_or_default()
    }

    /// The next keys of the snapshot in order, from a read of at most `limit` live keys (the
    /// page may hold fewer: keys created since the snapshot are left out); `None` once every
    /// key has been given.
    pub(super) fn next_page(&self, kv: &dyn KvStore, limit: usize) -> Result<Option<Vec<KvPair>>, StoreError> {
        assert!(limit > 0, "a page holds at least one key");
        while self.commits_waiting.load(Ordering::Acquire) > 0 {
            std::thread::yield_now();
        }
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let snapshot = open.as_mut().expect("the snapshot is open while its reader lives");
        if snapshot.complete {
            return Ok(None);
        }
        let start = snapshot.passed.as_deref().map(successor);
        let live = kv.scan(b"", start.as_deref(), limit)?;
        let complete = live.len() < limit;
        // The pre-images of the keys this page covers: every kept one after `passed` up to the
        // page's last key (to the end, on the last page).
        let covered = match (complete, live.last()) {
            (false, Some((last, _))) => {
                let beyond = snapshot.preimages.split_off(&successor(last));
                std::mem::replace(&mut snapshot.preimages, beyond)
            }
            _ => std::mem::take(&mut snapshot.preimages),
        };
        let freed: usize = covered
            .iter()
            .map(|(key, value)| key.len() + value.as_ref().map_or(0, Vec::len))
            .sum();
        snapshot.preimage_bytes -= freed;
        let mut page = Vec::with_capacity(live.len());
        let mut covered = covered.into_iter().peekable();
        let mut last_key = None;
        for (key, value) in live {
            while let Some((kept_key, before)) = covered.next_if(|(kept_key, _)| *kept_key < key) {
                if let Some(before) = before {
                    page.push((kept_key, before));
                }
            }
            match covered.next_if(|(kept_key, _)| *kept_key == key) {
                Some((kept_key, Some(before))) => page.push((kept_key, before)),
                Some((_, None)) => {}
                None => page.push((key.clone(), value)),
            }
            last_key = Some(key);
        }
        page.extend(covered.filter_map(|(key, before)| before.map(|before| (key, before))));
        if complete {
            snapshot.complete = true;
        } else {
            snapshot.passed = last_key;
        }
        drop(open);
        self.room.notify_all();
        Ok(Some(page))
    }
}

#[cfg(test)]
mod tests {
    use super::super::kv::MemKv;
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn batch(writes: &[(Vec<u8>, Option<Vec<u8>>)]) -> WriteBatch {
        let mut batch = WriteBatch::default();
        for (key, value) in writes {
            match value {
                Some(value) => batch.put(key.clone(), value.clone()),
                None => batch.delete(key.clone()),
            }
        }
        batch
    }

    #[derive(Debug, Clone)]
    enum Step {
        Write(Vec<(u8, Option<u8>)>),
        Read(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            proptest::collection::vec((0u8..40, proptest::option::of(any::<u8>())), 1..6).prop_map(Step::Write),
            (1usize..6).prop_map(Step::Read),
        ]
    }

    fn key(n: u8) -> Vec<u8> {
        // Keys of different lengths that extend each other, so order is not just by length.
        format!("k{}", n % 20).repeat(1 + usize::from(n / 20)).into_bytes()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Whatever is written while the reader pages through, it reads the store exactly as
        /// it was when the snapshot opened; the live store has every write.
        #[test]
        fn a_snapshot_reads_the_store_as_it_was(
            initial in proptest::collection::btree_map(0u8..40, any::<u8>(), 0..30),
            steps in proptest::collection::vec(step(), 0..40),
        ) {
            let kv = MemKv::default();
            let cow = CopyOnWrite::default();
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            let writes: Vec<_> = initial.iter().map(|(k, v)| (key(*k), Some(vec![*v]))).collect();
            cow.apply(&kv, batch(&writes)).expect("apply");
            for (k, v) in writes {
                model.insert(k, v.expect("put"));
            }
            let at_snapshot = model.clone();
            cow.open(usize::MAX, || Ok(())).expect("opens");
            let mut read = Vec::new();
            for step in steps {
                match step {
                    Step::Write(writes) => {
                        let writes: Vec<_> = writes.iter().map(|(k, v)| (key(*k), v.map(|v| vec![v]))).collect();
                        cow.apply(&kv, batch(&writes)).expect("apply");
                        for (k, v) in writes {
                            match v {
                                Some(v) => model.insert(k, v),
                                None => model.remove(&k),
                            };
                        }
                    }
                    Step::Read(limit) => {
                        if let Some(page) = cow.next_page(&kv, limit).expect("page") {
                            read.extend(page);
                        }
                    }
                }
            }
            while let Some(page) = cow.next_page(&kv, 3).expect("page") {
                read.extend(page);
            }
            cow.close();
            prop_assert_eq!(read, at_snapshot.into_iter().collect::<Vec<_>>());
            let live: BTreeMap<_, _> = kv.scan(b"", None, usize::MAX).expect("scan").into_iter().collect();
            prop_assert_eq!(live, model);
        }
    }

    #[test]
    fn only_one_snapshot_at_a_time_and_none_after_close() {
        let kv = MemKv::default();
        let cow = CopyOnWrite::default();
        cow.open(0, || Ok(())).expect("opens");
        assert!(matches!(cow.open(0, || Ok(())), Err(StoreError::SnapshotOpen)));
        cow.close();
        cow.open(0, || Ok(())).expect("opens again");
        cow.close();
        cow.apply(&kv, batch(&[(b"a".to_vec(), Some(b"1".to_vec()))]))
            .expect("apply");
        assert_eq!(cow.stats(), SnapshotStats::default(), "no snapshot, nothing kept");
    }

    /// Past the bound, a commit waits for the reader, and goes on once the reader has passed
    /// the keys it kept.
    #[test]
    fn past_the_bound_a_commit_waits_for_the_reader() {
        let kv = Arc::new(MemKv::default());
        let cow = Arc::new(CopyOnWrite::default());
        let put = |key: &str| batch(&[(key.as_bytes().to_vec(), Some(vec![b'x'; 10]))]);
        for n in 0..10 {
            cow.apply(kv.as_ref(), put(&format!("a{n}"))).expect("apply");
        }
        cow.open(8, || Ok(())).expect("opens");
        // The first write keeps a pre-image (2 + 10 bytes): over the bound.
        cow.apply(kv.as_ref(), put("a5")).expect("apply");
        let (started_sender, started) = std::sync::mpsc::channel();
        let (done_sender, done) = std::sync::mpsc::channel();
        let writer = {
            let (kv, cow) = (Arc::clone(&kv), Arc::clone(&cow));
            std::thread::spawn(move || {
                started_sender.send(()).expect("send");
                cow.apply(kv.as_ref(), put("a7")).expect("apply");
                done_sender.send(()).expect("send");
            })
        };
        started.recv().expect("the writer started");
        assert!(
            done.recv_timeout(Duration::from_millis(200)).is_err(),
            "the second commit waits while the pre-images are over the bound"
        );
        // Reading past a5 frees its pre-image.
        let page = cow.next_page(kv.as_ref(), 7).expect("page").expect("a page");
        assert_eq!(page.len(), 7);
        done.recv_timeout(Duration::from_secs(10)).expect("the commit went on");
        writer.join().expect("writer thread");
        let stats = cow.stats();
        assert_eq!(stats.n_commits, 2);
        assert!(stats.commit_wait_max >= Duration::from_millis(150), "{stats:?}");
        cow.close();
    }
}
