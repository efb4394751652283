//! The narrow key-value boundary every storage backend implements: ordered keys, atomic
//! batched writes, prefix scans, and a durable checkpoint. sled is the one backend today;
//! a distributed transactional store can replace it without touching anything above `store`.

use super::StoreError;
use std::path::{Path, PathBuf};

/// One atomic group of writes. `None` deletes the key.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    pub(crate) writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteBatch {
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.push((key, Some(value)));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.writes.push((key, None));
    }

    pub fn len(&self) -> usize {
        self.writes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

pub type KvPair = (Vec<u8>, Vec<u8>);

pub trait KvStore: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Ascending pairs whose key starts with `prefix`, starting at `start` (inclusive) when
    /// given, at most `limit`.
    fn scan(&self, prefix: &[u8], start: Option<&[u8]>, limit: usize) -> Result<Vec<KvPair>, StoreError>;
    /// Applies every write or none, also across a crash.
    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError>;
    /// Applies the writes one at a time, in order: each is atomic, the batch is not. Reads and
    /// writes of other threads go on between them, and a crash keeps a prefix of them, as it
    /// keeps a prefix of the batches. For idempotent writes that a later `apply` records as
    /// done. A backend without a cheaper way applies them as one batch.
    fn apply_each(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.apply(batch)
    }
    /// Makes every applied batch durable against power loss before returning.
    fn checkpoint(&self) -> Result<(), StoreError>;
    fn size_on_disk(&self) -> Result<u64, StoreError>;
}

/// sled 0.34.7, one tree. One tree because `apply_batch` is atomic within a tree only.
pub struct SledKv {
    db: sled::Db,
    tree: sled::Tree,
    dir: PathBuf,
}

impl SledKv {
    /// Opens sled in `dir`. sled's flusher thread lets go of the directory's lock a moment
    /// after the last handle is dropped, so a store closed and opened again in one process
    /// (a restart in place) may find it still held: the open is retried for up to 3 s while
    /// the lock is busy. Another process holding it fails after that.
    pub fn open(dir: &Path, cache_capacity_bytes: u64) -> Result<SledKv, StoreError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let db = loop {
            match sled::Config::new()
                .path(dir)
                .cache_capacity(cache_capacity_bytes)
                .open()
            {
                Err(sled::Error::Io(error))
                    if error.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                result => break result?,
            }
        };
        let tree = db.open_tree("popmaster")?;
        Ok(SledKv {
            db,
            tree,
            dir: dir.to_path_buf(),
        })
    }
}

/// The first key after every key starting with `prefix` (`None`: no such key, the prefix is
/// all 0xFF).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl KvStore for SledKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(key)?.map(|value| value.to_vec()))
    }

    fn scan(&self, prefix: &[u8], start: Option<&[u8]>, limit: usize) -> Result<Vec<KvPair>, StoreError> {
        let mut out = Vec::new();
        let start = start.unwrap_or(prefix).to_vec();
        // A bounded range lets sled stop at the end of the prefix instead of reading ahead.
        let iter = match prefix_end(prefix) {
            Some(end) => self.tree.range(start..end),
            None => self.tree.range(start..),
        };
        for item in iter {
            let (key, value) = item?;
            if !key.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((key.to_vec(), value.to_vec()));
        }
        Ok(out)
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut sled_batch = sled::Batch::default();
        for (key, value) in batch.writes {
            match value {
                Some(value) => sled_batch.insert(key, value),
                None => sled_batch.remove(key),
            }
        }
        self.tree.apply_batch(sled_batch)?;
        Ok(())
    }

    /// `insert` and `remove` take sled's process-wide lock shared, where `apply_batch` takes it
    /// exclusively and so holds every read off until the whole batch is in.
    fn apply_each(&self, batch: WriteBatch) -> Result<(), StoreError> {
        for (key, value) in batch.writes {
            match value {
                Some(value) => self.tree.insert(key, value)?,
                None => self.tree.remove(key)?,
            };
        }
        Ok(())
    }

    fn checkpoint(&self) -> Result<(), StoreError> {
        // sled's flush writes its buffers and calls sync_file_range, which survives a process
        // kill but not power loss; fsync every file and directory it owns to close the gap.
        self.db.flush()?;
        fsync_tree(&self.dir)?;
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

/// fsyncs every regular file below `dir`, then every directory, deepest first. A file or
/// directory removed while it runs (sled drops old snapshot files as it flushes, and two
/// threads checkpoint) needs nothing but the removal made durable, which its parent's fsync does.
pub fn fsync_tree(dir: &Path) -> std::io::Result<()> {
    let gone = |error: &std::io::Error| error.kind() == std::io::ErrorKind::NotFound;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let result = entry.file_type().and_then(|file_type| {
            if file_type.is_dir() {
                fsync_tree(&entry.path())
            } else if file_type.is_file() {
                std::fs::File::open(entry.path())?.sync_all()
            } else {
                Ok(())
            }
        });
        match result {
            Err(error) if !gone(&error) => return Err(error),
            _ => {}
        }
    }
    std::fs::File::open(dir)?.sync_all()
}

/// An in-memory backend with the same semantics, for tests of the layers above.
#[derive(Default)]
pub struct MemKv {
    map: std::sync::RwLock<std::collections::BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl KvStore for MemKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map.read().expect("lock poisoned").get(key).cloned())
    }

    fn scan(&self, prefix: &[u8], start: Option<&[u8]>, limit: usize) -> Result<Vec<KvPair>, StoreError> {
        let map = self.map.read().expect("lock poisoned");
        Ok(map
            .range(start.unwrap_or(prefix).to_vec()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .take(limit)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut map = self.map.write().expect("lock poisoned");
        for (key, value) in batch.writes {
            match value {
                Some(value) => map.insert(key, value),
                None => map.remove(&key),
            };
        }
        Ok(())
    }

    fn checkpoint(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}

/// A backend that refuses atomic batches on demand (the next `n`, counted down), for tests of
/// how the layers above take a failed write. Writes applied one at a time go through.
#[cfg(test)]
pub struct FailingKv {
    inner: MemKv,
    refusals: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

#[cfg(test)]
impl FailingKv {
    /// Refuses as many applies as `refusals` holds when they come, counting it down.
    pub fn new(inner: MemKv, refusals: std::sync::Arc<std::sync::atomic::AtomicUsize>) -> FailingKv {
        FailingKv { inner, refusals }
    }
}

#[cfg(test)]
impl KvStore for FailingKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }

    fn scan(&self, prefix: &[u8], start: Option<&[u8]>, limit: usize) -> Result<Vec<KvPair>, StoreError> {
        self.inner.scan(prefix, start, limit)
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        let refused = self
            .refusals
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(1))
            .is_ok();
        if refused {
            return Err(std::io::Error::other("injected: the disk refuses the write").into());
        }
        self.inner.apply(batch)
    }

    fn apply_each(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.inner.apply_each(batch)
    }

    fn checkpoint(&self) -> Result<(), StoreError> {
        self.inner.checkpoint()
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.size_on_disk()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"k/a"), Some(b"k/b".to_vec()));
        assert_eq!(prefix_end(&[b'k', 0xFF]), Some(b"l".to_vec()));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
    }

    #[test]
    fn sled_scans_stay_in_their_prefix() {
        let dir = tempfile::tempdir().expect("temp dir");
        let kv = SledKv::open(dir.path(), 1 << 20).expect("opens");
        let mut batch = WriteBatch::default();
        for key in [&b"a/1"[..], b"a/2", b"a/3", b"a0", b"b/1", &[b'a', b'/', 0xFF]] {
            batch.writes.push((key.to_vec(), Some(b"v".to_vec())));
        }
        kv.apply(batch).expect("apply");
        let keys = |start: Option<&[u8]>, limit| -> Vec<Vec<u8>> {
            kv.scan(b"a/", start, limit)
                .expect("scan")
                .into_iter()
                .map(|(key, _)| key)
                .collect()
        };
        assert_eq!(
            keys(None, 10),
            [
                b"a/1".to_vec(),
                b"a/2".to_vec(),
                b"a/3".to_vec(),
                vec![b'a', b'/', 0xFF]
            ]
        );
        assert_eq!(keys(Some(b"a/2"), 2), [b"a/2".to_vec(), b"a/3".to_vec()]);
    }
}
