//! The store: the only source of truth. Owns the key layout, the value encoding, the format
//! version and atomic write batches, over the narrow `KvStore` boundary; and for backups, a
//! consistent snapshot of every pair while writes go on (`snapshot`) and the loading of such
//! pairs into a new store (`StoreLoader`). Knows nothing of how records are resolved; the
//! engine decides, the store keeps.

mod audit;
pub mod kv;
pub mod layout;
mod read_ahead;
mod redo;
mod snapshot;
mod writes;

pub use read_ahead::{HandedBatch, ReadAheadStats};
pub use snapshot::SnapshotStats;

use crate::model::{Cause, EpochMillis, Finding, PersonEvent, PersonId, RecordKey, SourceId, TagCode, TagValue};
pub use audit::{
    month_of, put_audit_entry, shared_tag_list_hash, AuditBatchDone, AuditPage, AuditQuery, AuditRecord, ShareCount,
    TagList, AUDIT_BATCH_ENTRIES_MAX, AUDIT_SCAN_MAX,
};
use kv::{KvStore, WriteBatch};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The on-disk format this build reads and writes.
/// 2: findings carry the original value; the WAL logs rejections; quality counters.
/// 3: blocking-key postings, person features, aliases, name counts, evidence, review items.
/// 5: stored records counted per source (`m/source_records/`); a format 4 store is upgraded
/// in place when it is opened.
/// 6: the audit log indexed by caller and by person (`ui/`); a format 5 store is upgraded in
/// place when it is opened (and a format 4 store through 5).
/// 7: a blocking key's postings are one value (`b/`), read with one lookup instead of a scan,
/// and a source's quality counters are one value (`q/<source>`); a format 6 store is upgraded
/// in place when it is opened.
/// 8: the tag lists audit entries share are kept per day (`ul/<day><hash>`), so pruning a day's
/// entries deletes its lists; a format 7 store is upgraded in place when it is opened, keeping
/// its undated lists (`ut/<hash>`) until every entry from before the upgrade is pruned.
pub const FORMAT_VERSION: u32 = 8;

/// The oldest format this build upgrades in place, one format at a time: 4 -> 5 counts the
/// records per source, 5 -> 6 indexes the audit log, 6 -> 7 packs the postings and the quality
/// counters, 7 -> 8 dates the audit log's shared tag lists.
pub const UPGRADABLE_FORMAT_VERSION: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("person {0} not found")]
    PersonNotFound(PersonId),
    #[error("data directory has format {found}, this build reads {expected}")]
    IncompatibleFormat { found: u32, expected: u32 },
    #[error("stored value under a {kind} key cannot be decoded: {message}")]
    Corrupt { kind: &'static str, message: String },
    #[error("the store holds data but no format version: it was never written to the end (an interrupted restore?); restore again into an empty directory")]
    Unfinished,
    #[error("a snapshot of the store is already open (another backup is running)")]
    SnapshotOpen,
    #[error("the store directory already holds data; a restore writes only into an empty one")]
    NotEmpty,
    #[error("a batch stopped part-way into the store, so nothing is read from it until a restart completes the batch (from the redo log)")]
    Torn,
    #[error("the change feed keeps changes from sequence {start} on; {from} was trimmed")]
    FeedTrimmed { from: u64, start: u64 },
    #[error(transparent)]
    Sled(#[from] sled::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Log(#[from] crate::wal::WalError),
}

/// A record as stored. The header comes first in the encoding, so it can be read from the
/// first part of a long record alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordHeader {
    pub person_id: PersonId,
    pub observed_at: EpochMillis,
    pub id_number: Option<String>,
    pub findings: Vec<Finding>,
    /// Write-ahead-log sequence of the batch that stored this version.
    pub sequence: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    pub header: RecordHeader,
    pub tags: BTreeMap<TagCode, TagValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonHeader {
    pub version: u64,
    pub n_records: u32,
}

/// The winning value of one profile tag and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileEntry {
    pub value: String,
    pub source: SourceId,
    pub record_id: String,
    pub observed_at: EpochMillis,
}

/// One profile entry borrowed from its stored group, without a copy of any string. The tag is
/// checked text; the value, source and record id are the bytes stored: they were text when
/// written, a read that passes them on as they are does not check them again (sled checks
/// every page it reads against its CRC), and one that reads them as text checks them then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProfileEntryRef<'a> {
    pub tag: &'a str,
    pub value: &'a [u8],
    pub source: &'a [u8],
    pub record_id: &'a [u8],
    pub observed_at: EpochMillis,
}

impl<'a> ProfileEntryRef<'a> {
    /// The value as text.
    pub fn value_text(&self) -> Result<&'a str, StoreError> {
        std::str::from_utf8(self.value).map_err(|_| group_corrupt("a value is not UTF-8"))
    }
}

fn group_corrupt(message: &str) -> StoreError {
    StoreError::Corrupt {
        kind: "profile group",
        message: message.to_string(),
    }
}

/// Walks a stored profile group (postcard's encoding of `BTreeMap<TagCode, ProfileEntry>`: the
/// number of entries, then each tag and the entry's fields in order, strings as a length and
/// bytes, the time zigzag-encoded) without serde: a full profile's read is mostly this walk,
/// and serde's borrowed strings checked every value as text on the way. It reads what
/// `decode` reads: bytes after the last entry are ignored there, and here.
struct GroupReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> GroupReader<'a> {
    fn varint(&mut self) -> Result<u64, StoreError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .bytes
                .get(self.at)
                .ok_or_else(|| group_corrupt("it ends inside a number"))?;
            self.at += 1;
            if shift == 63 && byte > 1 {
                return Err(group_corrupt("a number is larger than 64 bits"));
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(group_corrupt("a number is longer than ten bytes"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let len = usize::try_from(self.varint()?).map_err(|_| group_corrupt("a string is too long"))?;
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| group_corrupt("it ends inside a string"))?;
        let bytes = &self.bytes[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    /// Every entry of `bytes`, in the group's (tag) order, to `out`.
    fn read_group(
        bytes: &'a [u8],
        out: &mut Vec<ProfileEntryRef<'a>>,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<(), StoreError> {
        let mut reader = GroupReader { bytes, at: 0 };
        let n = reader.varint()?;
        for _ in 0..n {
            let tag = std::str::from_utf8(reader.bytes()?).map_err(|_| group_corrupt("a tag is not UTF-8"))?;
            let value = reader.bytes()?;
            let source = reader.bytes()?;
            let record_id = reader.bytes()?;
            let zigzag = reader.varint()?;
            let observed_at = (zigzag >> 1) as i64 ^ -((zigzag & 1) as i64);
            if wanted(tag) {
                out.push(ProfileEntryRef {
                    tag,
                    value,
                    source,
                    record_id,
                    observed_at,
                });
            }
        }
        Ok(())
    }
}

/// A person's profile groups as read, not yet decoded, and the tags asked for (empty: all).
/// A group is stored as a map of tag to entry, which postcard encodes exactly like a list of
/// pairs.
#[derive(Debug, Clone)]
pub struct StoredProfile {
    groups: Vec<Vec<u8>>,
    tag_mask: Vec<TagCode>,
}

impl StoredProfile {
    /// The entries asked for, sorted by tag, borrowed from the groups.
    pub fn entries(&self) -> Result<Vec<ProfileEntryRef<'_>>, StoreError> {
        // Room for every entry at once: the count each group starts with, where it is no
        // more than the group's bytes could hold (five at least an entry).
        let room: usize = self
            .groups
            .iter()
            .map(|bytes| {
                let n = GroupReader { bytes, at: 0 }.varint().unwrap_or(0);
                usize::try_from(n).unwrap_or(usize::MAX).min(bytes.len() / 5)
            })
            .sum();
        let mut entries = Vec::with_capacity(if self.tag_mask.is_empty() { room } else { 0 });
        let wanted = |tag: &str| self.tag_mask.is_empty() || self.tag_mask.iter().any(|want| want.as_str() == tag);
        for bytes in &self.groups {
            GroupReader::read_group(bytes, &mut entries, wanted)?;
        }
        // Each group is in tag order already: a stable sort merges those runs.
        entries.sort_by(|a, b| a.tag.cmp(b.tag));
        Ok(entries)
    }

    /// A profile stored as these groups, for tests of what reads it.
    #[cfg(test)]
    pub fn from_groups(groups: &[BTreeMap<TagCode, ProfileEntry>], tag_mask: &[TagCode]) -> StoredProfile {
        StoredProfile {
            groups: groups.iter().map(encode).collect(),
            tag_mask: tag_mask.to_vec(),
        }
    }

    /// The entries asked for, sorted by tag, owned.
    pub fn into_entries(self) -> Result<Vec<(TagCode, ProfileEntry)>, StoreError> {
        let mut entries = Vec::new();
        for bytes in &self.groups {
            let group: Vec<(TagCode, ProfileEntry)> = decode("profile group", bytes)?;
            if self.tag_mask.is_empty() {
                entries.extend(group);
            } else {
                entries.extend(group.into_iter().filter(|(tag, _)| self.tag_mask.contains(tag)));
            }
        }
        entries.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
        Ok(entries)
    }
}

/// What happened to a person at one version, as the change feed says it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    /// A new person (its first version).
    Created,
    /// The person's records or tags changed.
    Updated,
    /// A new person made of records split off `from`.
    Split { from: PersonId },
    /// The person was merged into `survivor`; its id redirects there.
    MergedInto { survivor: PersonId },
    /// The person has no records left.
    Deleted,
}

/// One version of a person: when, which change-feed entry announced it, what happened and
/// which profile tags changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub version: u64,
    pub change_sequence: u64,
    pub at: EpochMillis,
    pub kind: ChangeKind,
    pub events: Vec<PersonEvent>,
    /// The tags whose winning value appeared, changed or disappeared, at most
    /// `HISTORY_TAGS_MAX` of them; `n_changed_tags` counts them all.
    pub changed_tags: Vec<TagCode>,
    pub n_changed_tags: u32,
}

/// The most changed tags a history entry lists by name.
pub const HISTORY_TAGS_MAX: usize = 64;

/// The tags a new profile version changed.
#[derive(Default)]
struct ChangedTags {
    tags: Vec<TagCode>,
    n: u32,
}

impl ChangedTags {
    fn extend(&mut self, tags: impl IntoIterator<Item = TagCode>) {
        for tag in tags {
            self.n += 1;
            if self.tags.len() < HISTORY_TAGS_MAX {
                self.tags.push(tag);
            }
        }
    }

    /// The tags whose winning value or provenance differs between two versions of a group.
    fn diff(&mut self, old: &BTreeMap<TagCode, ProfileEntry>, new: &BTreeMap<TagCode, ProfileEntry>) {
        let gone = old.keys().filter(|tag| !new.contains_key(*tag));
        let changed = new
            .iter()
            .filter(|(tag, entry)| old.get(*tag) != Some(entry))
            .map(|(tag, _)| tag);
        let mut tags: Vec<TagCode> = gone.chain(changed).cloned().collect();
        tags.sort();
        self.extend(tags);
    }
}

/// One page of the review queue: the items, and the key to start the next page after.
pub type ReviewPage<T> = (Vec<(RecordKey, T)>, Option<Vec<u8>>);

/// A review item with its place in the queue.
#[derive(Serialize, Deserialize)]
struct Queued<T> {
    rank: u64,
    item: T,
}

/// The queue order of a review item: higher probabilities first.
fn review_rank(best: f64) -> u64 {
    u64::MAX - (best.clamp(0.0, 1.0) * 1e12) as u64
}

/// One entry of the change feed: a person reached `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEvent {
    pub person_id: PersonId,
    pub version: u64,
    pub kind: ChangeKind,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub n_records: u64,
    pub n_persons: u64,
    pub n_review_items: u64,
    pub applied_sequence: u64,
    pub change_sequence: u64,
    pub size_on_disk: u64,
    /// Records stored per source, in source order; sources with none left out.
    pub records_by_source: Vec<(SourceId, u64)>,
}

pub struct Store {
    kv: GuardedKv,
    /// Every write batch goes through it, so that an open snapshot keeps what it needs.
    cow: snapshot::CopyOnWrite,
    /// Pairs read ahead of the writer; every commit drops the keys it writes from it.
    read_ahead: read_ahead::ReadAhead,
    /// Held while a group of audit entries is written (in three commits) and while a snapshot
    /// opens, so a snapshot never holds half of a group.
    audit_groups: std::sync::Mutex<()>,
    /// With it, handed batches are applied key by key behind it (`commit_handed`); without
    /// (stores not opened by the engine), as one atomic batch.
    redo: std::sync::Mutex<Option<redo::RedoLog>>,
}

/// The backend as the store's readers see it: a read waits while a batch is being applied key
/// by key (`apply_unseen`), so it sees the batch whole or not at all, as with an atomic batch.
/// The writer and its read-ahead read around it (`unguarded`): they read the batches handed
/// over before the store, and a commit drops the pairs read ahead of what it wrote only once
/// it is whole (`store/read_ahead.rs`), so a half-applied batch cannot mislead them.
///
/// A batch that fails or panics part-way leaves the store torn: from then on a guarded read,
/// and every write, is refused (`StoreError::Torn`) rather than shown half a batch. The write path has
/// stopped by then too; a restart applies the batch again whole from the redo log.
struct GuardedKv {
    kv: Box<dyn KvStore>,
    applying: std::sync::RwLock<()>,
    torn: AtomicBool,
}

/// Marks the store torn when dropped armed: an apply that returns early or unwinds.
struct TornUnlessDone<'a>(&'a AtomicBool, bool);

impl Drop for TornUnlessDone<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.store(true, Ordering::Release);
        }
    }
}

impl GuardedKv {
    fn new(kv: Box<dyn KvStore>) -> GuardedKv {
        GuardedKv {
            kv,
            applying: std::sync::RwLock::default(),
            torn: AtomicBool::new(false),
        }
    }

    fn refuse_torn(&self) -> Result<(), StoreError> {
        if self.torn.load(Ordering::Acquire) {
            return Err(StoreError::Torn);
        }
        Ok(())
    }

    /// Waits out a batch being applied; refuses a torn store. A panic while applying poisons
    /// the lock, and leaves the store torn: that is what this reports, not the poison.
    fn read_guard(&self) -> Result<std::sync::RwLockReadGuard<'_, ()>, StoreError> {
        let guard = self.applying.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.refuse_torn()?;
        Ok(guard)
    }

    fn unguarded(&self) -> &dyn KvStore {
        self.kv.as_ref()
    }

    /// Applies the writes one at a time, in order, while no guarded read runs.
    fn apply_unseen(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let _applying = self.applying.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.refuse_torn()?;
        let mut done = TornUnlessDone(&self.torn, false);
        let mut writes = batch.writes;
        let second_half = writes.split_off(writes.len() / 2);
        self.kv.apply_each(WriteBatch { writes })?;
        if crate::crash_point::reached("store-half-applied") {
            return Err(StoreError::Io(std::io::Error::other(
                "refused at the crash point store-half-applied",
            )));
        }
        self.kv.apply_each(WriteBatch { writes: second_half })?;
        done.1 = true;
        Ok(())
    }
}

impl KvStore for GuardedKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let _reading = self.read_guard()?;
        self.kv.get(key)
    }

    fn scan(&self, prefix: &[u8], start: Option<&[u8]>, limit: usize) -> Result<Vec<kv::KvPair>, StoreError> {
        let _reading = self.read_guard()?;
        self.kv.scan(prefix, start, limit)
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.refuse_torn()?;
        self.kv.apply(batch)
    }

    fn apply_each(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.refuse_torn()?;
        self.kv.apply_each(batch)
    }

    fn checkpoint(&self) -> Result<(), StoreError> {
        self.kv.checkpoint()
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.kv.size_on_disk()
    }
}

/// What a blocking key's postings hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Postings {
    Persons(Vec<PersonId>),
    /// More persons than the cap. `marked`: the store already remembers it (`mark_common_key`).
    Common {
        marked: bool,
    },
}

/// A blocking key's postings as stored: the persons holding its value, in order, or the mark
/// that more persons hold it than the matcher looks at. The mark keeps the first person the
/// list held, so an ID number held by too many persons still names one holder
/// (`person_for_id_number`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum PostingList {
    Persons(Vec<String>),
    Common { first: Option<String> },
}

impl PostingList {
    fn common_from(persons: Vec<String>) -> PostingList {
        PostingList::Common {
            first: persons.into_iter().next(),
        }
    }
}

/// The most persons a posting list keeps: one more is stored as the common mark. Above every
/// cap the matcher looks up with, so a list always says whether it is over the cap.
pub const POSTINGS_KEPT_MAX: usize = 64;

/// How many pairs a scan reads per round trip.
const SCAN_PAGE: usize = 4_096;

/// What a snapshot holds, read when it opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub format: u32,
    pub applied_sequence: u64,
    pub change_sequence: u64,
    pub n_records: u64,
    pub n_persons: u64,
}

/// A consistent read of every key and value as stored (continuation parts and all), in key
/// order, while writes go on (see `snapshot`). One at a time; closed when dropped.
pub struct Snapshot {
    store: Arc<Store>,
    info: SnapshotInfo,
}

impl Snapshot {
    pub fn info(&self) -> SnapshotInfo {
        self.info
    }

    /// The next pairs in key order, from one bounded read of at most `limit` live keys;
    /// `None` once every pair has been given.
    pub fn next_page(&mut self, limit: usize) -> Result<Option<Vec<kv::KvPair>>, StoreError> {
        self.store.cow.next_page(&self.store.kv, limit)
    }

    /// What keeping the snapshot has cost the write path so far.
    pub fn stats(&self) -> SnapshotStats {
        self.store.cow.stats()
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        self.store.cow.close();
    }
}

/// The metadata a dump of raw pairs carries about the store it came from.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DumpMeta {
    pub format: Option<u32>,
    pub applied_sequence: u64,
    pub change_sequence: u64,
}

impl DumpMeta {
    /// Notes what `key` says, if it is one of the metadata keys.
    pub fn observe(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let small = |kind: &'static str| -> Result<&[u8], StoreError> {
            match split_parts_header(value)? {
                (1, bytes) => Ok(bytes),
                (n_parts, _) => Err(StoreError::Corrupt {
                    kind,
                    message: format!("{n_parts} parts, expected 1"),
                }),
            }
        };
        match key {
            layout::META_FORMAT => self.format = Some(decode("format", small("format")?)?),
            layout::META_APPLIED_SEQUENCE => self.applied_sequence = decode("counter", small("counter")?)?,
            layout::META_NEXT_CHANGE => self.change_sequence = decode("counter", small("counter")?)?,
            _ => {}
        }
        Ok(())
    }
}

/// Writes a dump of raw pairs into a new, empty store, in bounded batches. The format version
/// goes in last, so a store cut short (a crash, a damaged dump found half-way) is refused at
/// open (`StoreError::Unfinished`) instead of served.
pub struct StoreLoader {
    kv: Box<dyn KvStore>,
    batch: WriteBatch,
    batch_bytes: usize,
    format: Option<Vec<u8>>,
}

/// Bytes of one loader batch.
const LOAD_BATCH_BYTES: usize = 4 << 20;

impl StoreLoader {
    pub fn create_sled(dir: &Path, cache_capacity_bytes: u64) -> Result<StoreLoader, StoreError> {
        StoreLoader::create(Box::new(kv::SledKv::open(dir, cache_capacity_bytes)?))
    }

    pub fn create(kv: Box<dyn KvStore>) -> Result<StoreLoader, StoreError> {
        if !kv.scan(b"", None, 1)?.is_empty() {
            return Err(StoreError::NotEmpty);
        }
        Ok(StoreLoader {
            kv,
            batch: WriteBatch::default(),
            batch_bytes: 0,
            format: None,
        })
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        if key == layout::META_FORMAT {
            self.format = Some(value.to_vec());
            return Ok(());
        }
        self.batch_bytes += key.len() + value.len();
        self.batch.put(key.to_vec(), value.to_vec());
        if self.batch_bytes >= LOAD_BATCH_BYTES {
            self.kv.apply(std::mem::take(&mut self.batch))?;
            self.batch_bytes = 0;
        }
        Ok(())
    }

    /// Writes the rest and the format version, makes the store durable and opens it.
    pub fn finish(mut self) -> Result<Store, StoreError> {
        let format = self.format.take().ok_or_else(|| StoreError::Corrupt {
            kind: "format",
            message: "the dump holds no format version".into(),
        })?;
        self.kv.apply(std::mem::take(&mut self.batch))?;
        let mut last = WriteBatch::default();
        last.put(layout::META_FORMAT.to_vec(), format);
        self.kv.apply(last)?;
        self.kv.checkpoint()?;
        Store::open(self.kv)
    }
}

impl Store {
    /// Opens sled in `dir`, writing the format version into a new directory and refusing a
    /// directory written in another format.
    pub fn open_sled(dir: &Path, cache_capacity_bytes: u64) -> Result<Store, StoreError> {
        Store::open(Box::new(kv::SledKv::open(dir, cache_capacity_bytes)?))
    }

    /// `open_sled`, with batches handed over applied key by key behind the redo log in
    /// `redo_dir` (`store/redo.rs`). Batches the log holds past the store's applied sequence
    /// (a crash cut one short) are applied whole first, before anything else reads the store.
    pub fn open_sled_with_redo(
        dir: &Path,
        cache_capacity_bytes: u64,
        redo_dir: &Path,
        redo_segment_bytes_max: u64,
    ) -> Result<(Store, usize), StoreError> {
        let kv: Box<dyn KvStore> = Box::new(kv::SledKv::open(dir, cache_capacity_bytes)?);
        let (log, entries) = redo::RedoLog::open(redo_dir, redo_segment_bytes_max)?;
        let applied: u64 = match kv.get(layout::META_APPLIED_SEQUENCE)? {
            Some(bytes) => decode("applied sequence", split_parts_header(&bytes)?.1)?,
            None => 0,
        };
        let entries: Vec<_> = entries.into_iter().filter(|entry| entry.applied > applied).collect();
        if !entries.is_empty() {
            tracing::info!(
                n_batches = entries.len(),
                applied_sequence = applied,
                "applying again the batches a stop cut short (redo log)"
            );
        }
        let mut n_redone = 0;
        for entry in entries {
            if entry.applied != applied + n_redone as u64 + 1 {
                return Err(StoreError::Corrupt {
                    kind: "redo log",
                    message: format!(
                        "its batch of sequence {} does not follow the store's applied sequence {}: the redo log belongs to another store",
                        entry.applied,
                        applied + n_redone as u64
                    ),
                });
            }
            kv.apply(WriteBatch { writes: entry.writes })?;
            n_redone += 1;
        }
        let store = Store::open(kv)?;
        *store.redo.lock().expect("lock poisoned") = Some(log);
        Ok((store, n_redone))
    }

    pub fn open(kv: Box<dyn KvStore>) -> Result<Store, StoreError> {
        let store = Store {
            kv: GuardedKv::new(kv),
            cow: snapshot::CopyOnWrite::default(),
            read_ahead: read_ahead::ReadAhead::new(0),
            audit_groups: std::sync::Mutex::default(),
            redo: std::sync::Mutex::default(),
        };
        match store.begin().get(layout::META_FORMAT)? {
            Some(bytes) => {
                let found: u32 = decode("format", &bytes)?;
                if !(UPGRADABLE_FORMAT_VERSION..=FORMAT_VERSION).contains(&found) {
                    return Err(StoreError::IncompatibleFormat {
                        found,
                        expected: FORMAT_VERSION,
                    });
                }
                if found == 4 {
                    store.upgrade_from_format_4()?;
                }
                if found <= 5 {
                    store.upgrade_from_format_5()?;
                }
                if found <= 6 {
                    store.upgrade_from_format_6()?;
                }
                if found <= 7 {
                    store.upgrade_from_format_7()?;
                }
            }
            None => {
                // A restore writes the format version last: data without it is a restore
                // that never finished, not a new store.
                if !store.kv.scan(b"", None, 1)?.is_empty() {
                    return Err(StoreError::Unfinished);
                }
                let mut txn = store.begin();
                txn.put(layout::META_FORMAT.to_vec(), &FORMAT_VERSION)?;
                txn.commit()?;
            }
        }
        Ok(store)
    }

    /// Ends an upgrade done in batches: writes format version `version`, then makes the store
    /// durable.
    fn finish_upgrade(&self, version: u32) -> Result<(), StoreError> {
        let mut txn = self.begin();
        txn.put(layout::META_FORMAT.to_vec(), &version)?;
        txn.commit()?;
        self.checkpoint()
    }

    /// Format 4 -> 5: counts the stored records of each source (one pass over the record
    /// keys) and writes the counters with format version 5 in one atomic batch, then makes it
    /// durable. An upgrade cut short by a crash left nothing and runs again.
    fn upgrade_from_format_4(&self) -> Result<(), StoreError> {
        let mut counts: BTreeMap<SourceId, u64> = BTreeMap::new();
        let mut start: Option<Vec<u8>> = None;
        loop {
            let page = self.kv.scan(layout::RECORDS, start.as_deref(), SCAN_PAGE)?;
            let done = page.len() < SCAN_PAGE;
            for (key, _) in &page {
                let parts = layout::split_suffix(key, layout::RECORDS);
                let record_key = record_key_from(&parts, "record")?;
                *counts.entry(record_key.source).or_default() += 1;
            }
            match page.last() {
                Some((last, _)) if !done => {
                    let mut next = last.clone();
                    next.push(0);
                    start = Some(next);
                }
                _ => break,
            }
        }
        let mut txn = self.begin();
        for (source, n_records) in &counts {
            txn.put_small(layout::source_records(source), n_records)?;
        }
        txn.put(layout::META_FORMAT.to_vec(), &5u32)?;
        txn.commit()?;
        self.checkpoint()?;
        tracing::info!(
            from = 4,
            to = 5,
            n_sources = counts.len(),
            n_records = counts.values().sum::<u64>(),
            "upgraded the store format: counted the stored records of each source"
        );
        Ok(())
    }

    /// Format 5 -> 6: writes the index keys of every audit entry (by caller, by person) in
    /// bounded batches, then format version 6, then makes it durable. An upgrade cut short by a
    /// crash leaves format 5 and some index keys, and runs again from the start (writing a key
    /// twice is harmless).
    fn upgrade_from_format_5(&self) -> Result<(), StoreError> {
        tracing::info!(from = 5, to = 6, "upgrading the store format: indexing the audit log");
        let indexed = self.index_audit_entries()?;
        self.finish_upgrade(6)?;
        tracing::info!(
            from = 5,
            to = 6,
            n_entries = indexed.n_entries,
            n_index_keys = indexed.n_index_keys,
            "upgraded the store format: indexed the audit log by caller and by person"
        );
        Ok(())
    }

    /// Format 6 -> 7: packs each source's quality counters (`q/<source>\0<counter>`) into one
    /// value (`q/<source>`), and each blocking key's postings (`k/<key>\0<person>`, one key each)
    /// and its common mark (`g/<key>`) into one value (`b/<key>`), in bounded batches that
    /// each write the packed lists and delete the keys they replace; then format version 7,
    /// then makes it durable. An upgrade cut short by a crash leaves format 6, some packed lists
    /// and the keys not yet packed, and carries on: a list is merged with what is already
    /// packed for its key.
    fn upgrade_from_format_6(&self) -> Result<(), StoreError> {
        tracing::info!(from = 6, to = 7, "upgrading the store format: packing the postings");
        let mut n_postings = 0u64;
        loop {
            // Every round deletes what it read, so each starts from the front again.
            let page = self.kv.scan(layout::FORMAT_6_POSTINGS, None, SCAN_PAGE)?;
            if page.is_empty() {
                break;
            }
            let mut txn = self.begin();
            for (key, _) in &page {
                let parts = layout::split_suffix(key, layout::FORMAT_6_POSTINGS);
                let [blocking_key, person_id] = parts[..] else {
                    return Err(StoreError::Corrupt {
                        kind: "posting",
                        message: format!("expected a blocking key and a person, found {} parts", parts.len()),
                    });
                };
                txn.add_posting(blocking_key, &PersonId::new(person_id))?;
                txn.delete_small(key.clone());
                n_postings += 1;
            }
            txn.commit()?;
        }
        loop {
            let page = self.kv.scan(layout::FORMAT_6_COMMON_KEYS, None, SCAN_PAGE)?;
            if page.is_empty() {
                break;
            }
            let mut txn = self.begin();
            for (key, _) in &page {
                let blocking_key = layout::split_suffix(key, layout::FORMAT_6_COMMON_KEYS).concat();
                txn.mark_common_key(&blocking_key)?;
                txn.delete_small(key.clone());
            }
            txn.commit()?;
        }
        // A source's quality counters, one key each, become one value: few enough for one
        // atomic batch.
        let mut txn = self.begin();
        let mut n_counters = 0u64;
        for (key, stored) in self.kv.scan(layout::QUALITY, None, usize::MAX)? {
            let parts = layout::split_suffix(&key, layout::QUALITY);
            let [source, counter] = parts[..] else {
                continue; // packed already
            };
            let source = SourceId::parse(source).ok_or_else(|| StoreError::Corrupt {
                kind: "quality counter",
                message: format!("{source:?} is not a source"),
            })?;
            let count: u64 = decode("quality counter", split_parts_header(&stored)?.1)?;
            txn.count_quality_n(&source, counter, count);
            txn.delete_small(key);
            n_counters += 1;
        }
        txn.commit()?;
        self.finish_upgrade(7)?;
        tracing::info!(
            from = 6,
            to = 7,
            n_postings,
            n_counters,
            "upgraded the store format: packed the postings of each blocking key, and the quality counters of each source, into one value"
        );
        Ok(())
    }

    /// Format 7 -> 8: the shared tag lists of audit entries are kept per day from now on. The
    /// lists format 7 kept undated (`ut/<hash>`) stay, for the entries that name them, until
    /// pruning passes the time of this upgrade (`m/undated_tag_lists_until`, written with format
    /// version 8 in one atomic batch, only if there are such lists).
    fn upgrade_from_format_7(&self) -> Result<(), StoreError> {
        let n_undated = self.kv.scan(layout::UNDATED_AUDIT_TAG_LISTS, None, 1)?.len();
        let mut txn = self.begin();
        if n_undated > 0 {
            let now: EpochMillis = chrono::Utc::now().timestamp_millis();
            txn.put_small(layout::META_UNDATED_TAG_LISTS_UNTIL.to_vec(), &now)?;
        }
        txn.put(layout::META_FORMAT.to_vec(), &8u32)?;
        txn.commit()?;
        self.checkpoint()?;
        tracing::info!(
            from = 7,
            to = 8,
            undated_tag_lists = n_undated > 0,
            "upgraded the store format: the audit log's shared tag lists are kept per day"
        );
        Ok(())
    }

    /// A read view, or the start of a write: reads see the transaction's own writes.
    pub fn begin(&self) -> Txn<'_> {
        self.begin_with(Reads::Store)
    }

    /// `begin`, for the writer: a read not written by the transaction takes the pair read
    /// ahead for it, if there is one (always the store's current value, see `read_ahead`).
    pub fn begin_kept(&self) -> Txn<'_> {
        self.begin_with(Reads::Kept)
    }

    /// A transaction that only reads, on behalf of the writer: every pair it reads from the
    /// store is kept for the writer's transaction of batch `tag`. Never committed.
    pub fn begin_read_ahead(&self, tag: u64) -> Txn<'_> {
        self.begin_with(Reads::Ahead(tag))
    }

    fn begin_with(&self, reads: Reads) -> Txn<'_> {
        Txn {
            store: self,
            pending: writes::Writes::default(),
            minted: HashSet::new(),
            quality_counted: BTreeMap::new(),
            reads,
        }
    }

    /// How much the pairs read ahead of the writer may hold; 0 (the default) keeps nothing.
    pub fn set_read_ahead_bytes_max(&self, bytes_max: usize) {
        self.read_ahead.set_bytes_max(bytes_max);
    }

    /// Commits the oldest batch handed over (`Txn::hand_over`), the one of write-ahead-log
    /// sequence `sequence`. With a redo log, the batch goes into it, then into the store key
    /// by key with its applied sequence last (`store/redo.rs`): the writer reads on meanwhile,
    /// other readers wait for it.
    pub fn commit_handed(&self, handed: &Arc<HandedBatch>, sequence: u64) -> Result<(), StoreError> {
        self.read_ahead.commit(handed.to_write_batch(), Some(handed), |batch| {
            let logged = match self.redo.lock().expect("lock poisoned").as_mut() {
                Some(log) => log.append(sequence, batch)?,
                None => return self.cow.apply(&self.kv, batch),
            };
            crate::crash_point::reached("redo-logged");
            let mut batch = logged;
            if let Some(at) = batch
                .writes
                .iter()
                .position(|(key, _)| key.as_slice() == layout::META_APPLIED_SEQUENCE)
            {
                let applied = batch.writes.remove(at);
                batch.writes.push(applied);
            }
            self.cow
                .apply_with(&self.kv, batch, |batch| self.kv.apply_unseen(batch))
        })
    }

    /// Batches handed over that the store does not hold yet.
    #[cfg(test)]
    pub fn n_handed(&self) -> usize {
        self.read_ahead.n_handed()
    }

    /// Whether the pairs read ahead are at their bound.
    pub fn read_ahead_is_full(&self) -> bool {
        self.read_ahead.is_full()
    }

    /// Lets go of the pairs read ahead for batches up to `tag`, once the writer applied them.
    pub fn retire_read_ahead(&self, tag: u64) {
        self.read_ahead.retire(tag);
    }

    pub fn read_ahead_stats(&self) -> ReadAheadStats {
        self.read_ahead.stats()
    }

    /// Makes every batch applied so far durable, and lets the redo log go of them.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        // Read first: every batch up to it is in the store when the flush starts.
        let applied = self.applied_sequence()?;
        self.kv.checkpoint()?;
        crate::crash_point::reached("checkpoint-flushed");
        if let Some(log) = self.redo.lock().expect("lock poisoned").as_mut() {
            log.trim(applied)?;
        }
        Ok(())
    }

    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let txn = self.begin();
        Ok(StoreStats {
            n_records: txn.counter(layout::META_N_RECORDS)?,
            n_persons: txn.counter(layout::META_N_PERSONS)?,
            n_review_items: txn.counter(layout::META_N_REVIEW_ITEMS)?,
            applied_sequence: txn.counter(layout::META_APPLIED_SEQUENCE)?,
            change_sequence: txn.counter(layout::META_NEXT_CHANGE)?,
            size_on_disk: self.kv.size_on_disk()?,
            records_by_source: self.records_by_source()?,
        })
    }

    /// Records stored per source, in source order; sources with none left out. Reads one
    /// counter per source, never the records.
    pub fn records_by_source(&self) -> Result<Vec<(SourceId, u64)>, StoreError> {
        let mut counts = Vec::new();
        for (key, value) in self.begin().scan_all(layout::META_SOURCE_RECORDS)? {
            let parts = layout::split_suffix(&key, layout::META_SOURCE_RECORDS);
            let source = parts
                .first()
                .and_then(|source| SourceId::parse(source))
                .ok_or_else(|| StoreError::Corrupt {
                    kind: "source records counter",
                    message: "source in key is malformed".into(),
                })?;
            let n_records: u64 = decode("source records counter", &value)?;
            if n_records > 0 {
                counts.push((source, n_records));
            }
        }
        Ok(counts)
    }

    /// Whether a batch stopped part-way into the store (`StoreError::Torn`): nothing is read
    /// or written until a restart.
    pub fn is_torn(&self) -> bool {
        self.kv.torn.load(Ordering::Acquire)
    }

    /// A snapshot is open (a backup is running).
    pub fn snapshot_is_open(&self) -> bool {
        self.cow.is_open()
    }

    /// Opens the one snapshot of the store (`SnapshotOpen` while another is open). Past
    /// `preimage_bytes_max` of kept values, commits wait for the snapshot's reader.
    pub fn open_snapshot(self: &Arc<Self>, preimage_bytes_max: usize) -> Result<Snapshot, StoreError> {
        let _between_audit_groups = self.audit_groups.lock().expect("lock poisoned");
        let info = self.cow.open(preimage_bytes_max, || {
            let txn = self.begin();
            Ok(SnapshotInfo {
                format: FORMAT_VERSION,
                applied_sequence: txn.counter(layout::META_APPLIED_SEQUENCE)?,
                change_sequence: txn.counter(layout::META_NEXT_CHANGE)?,
                n_records: txn.counter(layout::META_N_RECORDS)?,
                n_persons: txn.counter(layout::META_N_PERSONS)?,
            })
        })?;
        Ok(Snapshot {
            store: Arc::clone(self),
            info,
        })
    }

    pub fn applied_sequence(&self) -> Result<u64, StoreError> {
        self.begin().counter(layout::META_APPLIED_SEQUENCE)
    }

    /// The sequence of the last change-feed entry (0 while the feed is empty).
    pub fn change_sequence(&self) -> Result<u64, StoreError> {
        self.begin().counter(layout::META_NEXT_CHANGE)
    }

    /// The first sequence the change feed holds: 1 until it is trimmed (`trim_changes`).
    pub fn feed_start(&self) -> Result<u64, StoreError> {
        Ok(self.begin().counter(layout::META_FEED_START)?.max(1))
    }

    /// Change-feed entries with sequence >= `from`, at most `limit`. `FeedTrimmed` when `from`
    /// is below the feed's start, also when a trim raised it during the read: never a read
    /// that silently skips trimmed changes.
    pub fn changes_from(&self, from: u64, limit: usize) -> Result<Vec<(u64, ChangeEvent)>, StoreError> {
        let check = || -> Result<(), StoreError> {
            let start = self.feed_start()?;
            if from < start {
                return Err(StoreError::FeedTrimmed { from, start });
            }
            Ok(())
        };
        check()?;
        let first = layout::change(from);
        let page = self.kv.scan(layout::CHANGES, Some(&first), limit)?;
        // A trim raises the start before it deletes: if it deleted any of what this read
        // would have seen, the start is above `from` now.
        check()?;
        page.into_iter()
            .map(|(key, value)| {
                let sequence =
                    u64::from_be_bytes(
                        key[layout::CHANGES.len()..]
                            .try_into()
                            .map_err(|_| StoreError::Corrupt {
                                kind: "change",
                                message: "key is not 8 bytes".into(),
                            })?,
                    );
                let (_, event) = split_parts_header(&value)?;
                Ok((sequence, decode("change", event)?))
            })
            .collect()
    }

    /// Trims the change feed to the entries from sequence `start` on: first raises the feed's
    /// start (one atomic write, so readers asking for less are refused from then on), then
    /// deletes the entries below it, at most `keys_max` a commit, one key at a time, and at
    /// most `budget` in all, stopping early if a backup's snapshot opens. What is left below
    /// the start (past the budget, after a crash between the two steps) goes at the next call,
    /// whatever its `start`; a `start` at or below the current one lowers nothing. A call with
    /// nothing to delete reads one key. Returns the entries deleted, and whether none is left
    /// below the start.
    pub fn trim_changes(&self, start: u64, keys_max: usize, budget: u64) -> Result<(u64, bool), StoreError> {
        assert!(keys_max > 0 && budget > 0, "a trim deletes at least one key");
        if start > self.feed_start()? {
            let mut txn = self.begin();
            txn.put_small(layout::META_FEED_START.to_vec(), &start)?;
            txn.commit()?;
        }
        let below = layout::change(self.feed_start()?);
        // The oldest entry first, alone: most calls find nothing below the start.
        let nothing_below = |store: &Store| -> Result<bool, StoreError> {
            let oldest = store.kv.scan(layout::CHANGES, None, 1)?;
            Ok(oldest.first().is_none_or(|(key, _)| *key >= below))
        };
        let mut n_deleted = 0;
        loop {
            if nothing_below(self)? {
                return Ok((n_deleted, true));
            }
            // A backup opened meanwhile: each deletion would keep a pre-image for it.
            if n_deleted >= budget || self.snapshot_is_open() {
                return Ok((n_deleted, false));
            }
            let limit = keys_max.min(usize::try_from(budget - n_deleted).unwrap_or(usize::MAX));
            let page = self.kv.scan(layout::CHANGES, None, limit)?;
            let mut txn = self.begin();
            let mut n = 0;
            for (key, _) in page.into_iter().take_while(|(key, _)| *key < below) {
                txn.delete_small(key);
                n += 1;
            }
            txn.commit_each()?;
            n_deleted += n;
        }
    }

    /// Quality counters (rule id or record/rejection totals -> count) of one source, or summed
    /// over every source.
    pub fn quality(&self, source: Option<&SourceId>) -> Result<BTreeMap<String, u64>, StoreError> {
        let txn = self.begin();
        match source {
            Some(source) => txn.quality_counts(source),
            None => {
                let mut counts: BTreeMap<String, u64> = BTreeMap::new();
                for value in txn.scan_all(layout::QUALITY)?.into_values() {
                    let of_source: BTreeMap<String, u64> = decode("quality counters", &value)?;
                    for (counter, count) in of_source {
                        *counts.entry(counter).or_default() += count;
                    }
                }
                Ok(counts)
            }
        }
    }

    /// Record -> person mapping in key order, starting after `after`, at most `limit` rows.
    pub fn mapping_page(
        &self,
        after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<Vec<(RecordKey, PersonId)>, StoreError> {
        // The immediate successor of the last key: keys never contain a 0 byte of their own.
        let start = after.map(|key| {
            let mut start = layout::record(key);
            start.push(0);
            start
        });
        self.kv
            .scan(layout::RECORDS, start.as_deref(), limit)?
            .into_iter()
            .map(|(key, value)| {
                let parts = layout::split_suffix(&key, layout::RECORDS);
                let (_, first_part) = split_parts_header(&value)?;
                let (header, _): (RecordHeader, _) =
                    postcard::take_from_bytes(first_part).map_err(|error| StoreError::Corrupt {
                        kind: "record",
                        message: error.to_string(),
                    })?;
                let record_key = record_key_from(&parts, "record")?;
                Ok((record_key, header.person_id))
            })
            .collect()
    }
    /// Live persons in id order, starting after `after`, at most `limit`, each with its header
    /// (merged-away and deleted persons have none). Each page is one bounded scan: callers
    /// walking every person (the index rebuild) never hold the writer or much memory.
    pub fn persons_page(
        &self,
        after: Option<&PersonId>,
        limit: usize,
    ) -> Result<Vec<(PersonId, PersonHeader)>, StoreError> {
        let start = after.map(|person_id| {
            let mut start = layout::person(person_id);
            start.push(0);
            start
        });
        let txn = self.begin();
        self.kv
            .scan(layout::PERSONS, start.as_deref(), limit)?
            .into_iter()
            .map(|(key, stored)| {
                let person_id = PersonId::new(layout::split_suffix(&key, layout::PERSONS).concat());
                let value = txn.join_parts(&key, &stored)?;
                Ok((person_id, decode("person", &value)?))
            })
            .collect()
    }
}

fn record_key_from(parts: &[&str], kind: &'static str) -> Result<RecordKey, StoreError> {
    match parts {
        [source, record_id] => Ok(RecordKey {
            source: SourceId::parse(source).ok_or_else(|| StoreError::Corrupt {
                kind,
                message: "source in key is malformed".into(),
            })?,
            record_id: record_id.to_string(),
        }),
        _ => Err(StoreError::Corrupt {
            kind,
            message: format!("key has {} parts, expected 2", parts.len()),
        }),
    }
}

/// A stored value starts with its number of parts (u16 LE); the first part follows.
fn split_parts_header(stored: &[u8]) -> Result<(u16, &[u8]), StoreError> {
    if stored.len() < 2 {
        return Err(StoreError::Corrupt {
            kind: "value",
            message: "shorter than its part header".into(),
        });
    }
    Ok((u16::from_le_bytes([stored[0], stored[1]]), &stored[2..]))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("in-memory serialization of plain data cannot fail")
}

fn decode<T: DeserializeOwned>(kind: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|error| StoreError::Corrupt {
        kind,
        message: error.to_string(),
    })
}

/// Reads see the store plus this transaction's own writes; `commit` applies every write
/// atomically. Three writers commit: the engine's writer thread, the audit writer and the audit
/// pruner. They share only audit keys, and never the same one (the write path's audit serials
/// have the high bit set; the pruner deletes only entries past the retention), so there are no
/// conflicts to detect yet.
pub struct Txn<'s> {
    store: &'s Store,
    pending: writes::Writes,
    /// Persons this transaction minted (`mint_person`): nothing of them is stored yet, so
    /// their keys are read from the pending writes alone.
    minted: HashSet<Vec<u8>>,
    /// Quality counts not written yet (`count_quality`).
    quality_counted: BTreeMap<SourceId, BTreeMap<String, u64>>,
    reads: Reads,
}

/// Where a transaction's reads of the store go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reads {
    /// To the store.
    Store,
    /// To the pairs read ahead, then the store.
    Kept,
    /// To the store, keeping each pair for the writer's transaction of this batch.
    Ahead(u64),
}

impl Txn<'_> {
    fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(value) = self.pending.get(key) {
            return Ok(value.clone());
        }
        if self.is_minted_here(key) {
            return Ok(None);
        }
        let kv = self.store.kv.unguarded();
        match self.reads {
            Reads::Store => self.store.kv.get(key),
            Reads::Kept => self.store.read_ahead.get(kv, key),
            Reads::Ahead(tag) => self.store.read_ahead.read_get(kv, key, tag),
        }
    }

    /// Whether `key` holds a value: its first part alone is read, not the value's other
    /// parts.
    fn holds(&self, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.get_raw(key)?.is_some())
    }

    /// A whole value, its parts joined.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.get_raw(key)? {
            Some(stored) => Ok(Some(self.join_parts(key, &stored)?)),
            None => Ok(None),
        }
    }

    fn join_parts(&self, key: &[u8], stored: &[u8]) -> Result<Vec<u8>, StoreError> {
        let (n_parts, first) = split_parts_header(stored)?;
        let mut value = first.to_vec();
        for part in 1..n_parts {
            let continuation = self
                .get_raw(&layout::continuation(key, part))?
                .ok_or_else(|| StoreError::Corrupt {
                    kind: "value",
                    message: format!("part {part} of {n_parts} is missing"),
                })?;
            value.extend_from_slice(&continuation);
        }
        Ok(value)
    }

    /// The backend as this transaction reads it: the writer and its read-ahead around the
    /// store's guard (`GuardedKv`), every other reader through it.
    fn kv(&self) -> &dyn KvStore {
        match self.reads {
            Reads::Store => &self.store.kv,
            Reads::Kept | Reads::Ahead(_) => self.store.kv.unguarded(),
        }
    }

    /// Whether `key` (or a scan prefix) belongs to a person this transaction minted.
    fn is_minted_here(&self, key: &[u8]) -> bool {
        !self.minted.is_empty() && layout::person_of_key(key).is_some_and(|person| self.minted.contains(person))
    }

    /// Every whole value under `prefix`, merging pending writes over the store.
    fn scan_all(&self, prefix: &[u8]) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StoreError> {
        let minted_here = self.is_minted_here(prefix);
        // The writer's view: the batches it handed over, taken before the store is read.
        let handed = match self.reads {
            Reads::Kept if !minted_here => self.store.read_ahead.handed_pairs_under(prefix),
            _ => BTreeMap::new(),
        };
        let mut merged = BTreeMap::new();
        if !minted_here {
            let mut start: Option<Vec<u8>> = None;
            loop {
                let page = self.kv().scan(prefix, start.as_deref(), SCAN_PAGE)?;
                let done = page.len() < SCAN_PAGE;
                if let Some((last, _)) = page.last() {
                    let mut next = last.clone();
                    next.push(0);
                    start = Some(next);
                }
                merged.extend(page);
                if done {
                    break;
                }
            }
        }
        for (key, value) in handed {
            match value {
                Some(value) => merged.insert(key, value),
                None => merged.remove(&key),
            };
        }
        for (key, value) in self.pending.under(prefix) {
            match value {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        merged
            .into_iter()
            .map(|(key, stored)| {
                let value = self.join_parts(&key, &stored)?;
                Ok((key, value))
            })
            .collect()
    }

    fn stored_parts(&self, key: &[u8]) -> Result<u16, StoreError> {
        match self.get_raw(key)? {
            Some(stored) => Ok(split_parts_header(&stored)?.0),
            None => Ok(0),
        }
    }

    /// Writes a value, split into parts of at most `VALUE_PART_BYTES`.
    fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) -> Result<(), StoreError> {
        let old_parts = self.stored_parts(&key)?;
        self.put_over(key, value, old_parts)
    }

    /// `put` for a key that has never held a value (a person's next history version): there
    /// are no old parts to look up.
    fn put_new<T: Serialize>(&mut self, key: Vec<u8>, value: &T) -> Result<(), StoreError> {
        debug_assert!(matches!(self.get_raw(&key), Ok(None)), "a new key holds no value");
        self.put_over(key, value, 0)
    }

    /// Writes a value over one of `old_parts` parts.
    fn put_over<T: Serialize>(&mut self, key: Vec<u8>, value: &T, old_parts: u16) -> Result<(), StoreError> {
        let bytes = encode(value);
        let parts: Vec<&[u8]> = if bytes.is_empty() {
            vec![&[][..]]
        } else {
            bytes.chunks(layout::VALUE_PART_BYTES).collect()
        };
        let n_parts = u16::try_from(parts.len()).map_err(|_| StoreError::Corrupt {
            kind: "value",
            message: "value too large to store".into(),
        })?;
        for (part_idx, part) in parts.iter().enumerate().skip(1) {
            let part_no = u16::try_from(part_idx).expect("fewer than n_parts");
            self.pending
                .insert(layout::continuation(&key, part_no), Some(part.to_vec()));
        }
        for part_no in n_parts.max(1)..old_parts {
            self.pending.insert(layout::continuation(&key, part_no), None);
        }
        let mut first = Vec::with_capacity(2 + parts[0].len());
        first.extend_from_slice(&n_parts.to_le_bytes());
        first.extend_from_slice(parts[0]);
        self.pending.insert(key, Some(first));
        Ok(())
    }

    /// Writes a value that is always small (a counter, a marker, a person header): one part,
    /// so there are no old continuation parts to look up. Only for keys that never hold a
    /// value longer than one part.
    fn put_small<T: Serialize>(&mut self, key: Vec<u8>, value: &T) -> Result<(), StoreError> {
        let bytes = encode(value);
        debug_assert!(
            bytes.len() <= layout::VALUE_PART_BYTES,
            "a small value outgrew one part"
        );
        let mut first = Vec::with_capacity(2 + bytes.len());
        first.extend_from_slice(&1u16.to_le_bytes());
        first.extend_from_slice(&bytes);
        self.pending.insert(key, Some(first));
        Ok(())
    }

    /// Deletes a key written with `put_small`.
    fn delete_small(&mut self, key: Vec<u8>) {
        self.pending.insert(key, None);
    }

    /// Deletes a value and its continuation parts; how many keys that is.
    fn delete(&mut self, key: Vec<u8>) -> Result<usize, StoreError> {
        let n_parts = self.stored_parts(&key)?;
        for part_no in 1..n_parts {
            self.pending.insert(layout::continuation(&key, part_no), None);
        }
        self.pending.insert(key, None);
        Ok(usize::from(n_parts).max(1))
    }

    fn counter(&self, key: &[u8]) -> Result<u64, StoreError> {
        match self.get(key)? {
            Some(bytes) => decode("counter", &bytes),
            None => Ok(0),
        }
    }

    fn add_to_counter(&mut self, key: &[u8], delta: i64) -> Result<(), StoreError> {
        let value = self
            .counter(key)?
            .checked_add_signed(delta)
            .expect("counters never go below zero");
        self.put_small(key.to_vec(), &value)
    }

    pub fn commit(self) -> Result<(), StoreError> {
        let store = self.store;
        let batch = self.into_batch()?;
        store
            .read_ahead
            .commit(batch, None, |batch| store.cow.apply(&store.kv, batch))
    }

    /// Commits the writes one at a time (`KvStore::apply_each`), in key order: not atomic, but
    /// other reads and writes are not held off the store until all are in. Only for writes
    /// that can be written again (a crash keeps a prefix of them) and that a later atomic
    /// commit records as done.
    pub fn commit_each(self) -> Result<(), StoreError> {
        let store = self.store;
        let batch = self.into_batch()?;
        store
            .read_ahead
            .commit(batch, None, |batch| store.cow.apply_each(&store.kv, batch))
    }

    fn into_batch(mut self) -> Result<WriteBatch, StoreError> {
        debug_assert!(
            !matches!(self.reads, Reads::Ahead(_)),
            "a read-ahead transaction is never committed"
        );
        self.write_quality_counts()?;
        let mut batch = WriteBatch::default();
        for (key, value) in self.pending.into_pairs() {
            match value {
                Some(value) => batch.put(key, value),
                None => batch.delete(key),
            }
        }
        Ok(batch)
    }

    /// Hands the transaction's writes over to be committed on another thread: from now on the
    /// writer's transactions (`Store::begin_kept`) read them as if they were committed, until
    /// `Store::commit_handed` applies them. Handed batches are committed in the order handed.
    pub fn hand_over(mut self) -> Result<Arc<HandedBatch>, StoreError> {
        debug_assert_eq!(self.reads, Reads::Kept, "only the writer hands batches over");
        self.write_quality_counts()?;
        Ok(self.store.read_ahead.hand_over(self.pending))
    }

    // --- records ---

    pub fn record(&self, key: &RecordKey) -> Result<Option<StoredRecord>, StoreError> {
        self.get(&layout::record(key))?
            .map(|bytes| decode("record", &bytes))
            .transpose()
    }

    pub fn record_header(&self, key: &RecordKey) -> Result<Option<RecordHeader>, StoreError> {
        Ok(self.record(key)?.map(|record| record.header))
    }

    /// Writes a record version, replacing any earlier version.
    pub fn put_record(&mut self, key: &RecordKey, record: &StoredRecord) -> Result<(), StoreError> {
        if self.get_raw(&layout::record(key))?.is_none() {
            self.add_to_counter(layout::META_N_RECORDS, 1)?;
            self.add_to_counter(&layout::source_records(&key.source), 1)?;
        }
        self.put(layout::record(key), record)
    }

    // --- persons ---

    pub fn person(&self, person_id: &PersonId) -> Result<Option<PersonHeader>, StoreError> {
        self.get(&layout::person(person_id))?
            .map(|bytes| decode("person", &bytes))
            .transpose()
    }

    pub fn members(&self, person_id: &PersonId) -> Result<Vec<RecordKey>, StoreError> {
        let prefix = layout::members_prefix(person_id);
        self.scan_all(&prefix)?
            .into_keys()
            .map(|key| record_key_from(&layout::split_suffix(&key, &prefix), "membership"))
            .collect()
    }

    /// The records of a person that come from one source.
    pub fn members_of_source(&self, person_id: &PersonId, source: &SourceId) -> Result<Vec<RecordKey>, StoreError> {
        let prefix = layout::members_prefix(person_id);
        let mut source_prefix = prefix.clone();
        source_prefix.extend_from_slice(source.as_str().as_bytes());
        source_prefix.push(layout::SEP);
        self.scan_all(&source_prefix)?
            .into_keys()
            .map(|key| record_key_from(&layout::split_suffix(&key, &prefix), "membership"))
            .collect()
    }

    /// A new person's id, from the position of the write-ahead-log entry that creates it
    /// (`layout::person_id_for`). An entry is applied once, so nothing of the person is stored
    /// yet: this transaction reads its keys from its own writes, without asking the store.
    pub fn mint_person(&mut self, sequence: u64, slot: u32) -> PersonId {
        let person_id = layout::person_id_for(sequence, slot);
        debug_assert!(
            matches!(self.kv().get(&layout::person(&person_id)), Ok(None)),
            "a minted person is new"
        );
        self.minted.insert(person_id.as_str().as_bytes().to_vec());
        person_id
    }

    /// Adds a record to a person (creating the person if needed) and counts it.
    pub fn add_member(&mut self, person_id: &PersonId, key: &RecordKey) -> Result<(), StoreError> {
        let member_key = layout::member(person_id, key);
        let is_member = self.holds(&member_key)?;
        self.add_member_unless(person_id, member_key, is_member)
    }

    /// `add_member` for a record that was not stored before this transaction: no person holds
    /// it, unless this transaction made it a member already, so the store is not asked.
    pub fn add_new_member(&mut self, person_id: &PersonId, key: &RecordKey) -> Result<(), StoreError> {
        let member_key = layout::member(person_id, key);
        let is_member = matches!(self.pending.get(&member_key), Some(Some(_)));
        debug_assert_eq!(
            is_member,
            self.get_raw(&member_key).is_ok_and(|value| value.is_some()),
            "a record not stored before is a member only through this transaction"
        );
        self.add_member_unless(person_id, member_key, is_member)
    }

    fn add_member_unless(
        &mut self,
        person_id: &PersonId,
        member_key: Vec<u8>,
        is_member: bool,
    ) -> Result<(), StoreError> {
        let mut header = match self.person(person_id)? {
            Some(header) => header,
            None => {
                self.add_to_counter(layout::META_N_PERSONS, 1)?;
                PersonHeader {
                    version: 0,
                    n_records: 0,
                }
            }
        };
        if !is_member {
            header.n_records += 1;
            self.put_small(member_key, &())?;
        }
        self.put_small(layout::person(person_id), &header)
    }

    pub fn remove_member(&mut self, person_id: &PersonId, key: &RecordKey) -> Result<(), StoreError> {
        let member_key = layout::member(person_id, key);
        if self.holds(&member_key)? {
            let mut header = self
                .person(person_id)?
                .ok_or_else(|| StoreError::PersonNotFound(person_id.clone()))?;
            header.n_records = header.n_records.checked_sub(1).ok_or_else(|| StoreError::Corrupt {
                kind: "person",
                message: "record count below zero".into(),
            })?;
            self.put_small(layout::person(person_id), &header)?;
            self.delete_small(member_key);
        }
        Ok(())
    }

    /// The whole profile, or only the groups holding the tags of a non-empty `tag_mask`.
    pub fn profile(
        &self,
        person_id: &PersonId,
        tag_mask: &[TagCode],
    ) -> Result<BTreeMap<TagCode, ProfileEntry>, StoreError> {
        Ok(self.profile_entries(person_id, tag_mask)?.into_iter().collect())
    }

    /// `profile` as a list sorted by tag, for reads: no map is built.
    pub fn profile_entries(
        &self,
        person_id: &PersonId,
        tag_mask: &[TagCode],
    ) -> Result<Vec<(TagCode, ProfileEntry)>, StoreError> {
        self.stored_profile(person_id, tag_mask)?.into_entries()
    }

    /// The stored groups of the profile, or only those holding the tags of a non-empty
    /// `tag_mask`, undecoded: a read that encodes the profile at once walks them borrowed.
    pub fn stored_profile(&self, person_id: &PersonId, tag_mask: &[TagCode]) -> Result<StoredProfile, StoreError> {
        let groups: Vec<Vec<u8>> = if tag_mask.is_empty() {
            self.scan_all(&layout::profile_prefix(person_id))?
                .into_values()
                .collect()
        } else {
            let wanted: BTreeSet<String> = tag_mask.iter().map(layout::profile_group_of).collect();
            let mut groups = Vec::with_capacity(wanted.len());
            for group in wanted {
                if let Some(bytes) = self.get(&layout::profile_group(person_id, &group))? {
                    groups.push(bytes);
                }
            }
            groups
        };
        Ok(StoredProfile {
            groups,
            tag_mask: tag_mask.to_vec(),
        })
    }

    /// Replaces the profile with `profile` (writing only the groups that changed), bumps the
    /// version, records the version in the person's history with `events` and the tags that
    /// changed, and appends it to the change feed. A person left with no records is deleted.
    /// Returns the new version.
    pub fn write_person(
        &mut self,
        person_id: &PersonId,
        profile: &BTreeMap<TagCode, ProfileEntry>,
        at: EpochMillis,
        events: Vec<PersonEvent>,
    ) -> Result<u64, StoreError> {
        let header = self
            .person(person_id)?
            .ok_or_else(|| StoreError::PersonNotFound(person_id.clone()))?;
        let mut new_groups: BTreeMap<String, BTreeMap<TagCode, ProfileEntry>> = BTreeMap::new();
        for (tag, entry) in profile {
            new_groups
                .entry(layout::profile_group_of(tag))
                .or_default()
                .insert(tag.clone(), entry.clone());
        }
        let prefix = layout::profile_prefix(person_id);
        let old_groups = self.scan_all(&prefix)?;
        let mut changed = ChangedTags::default();
        for (key, bytes) in &old_groups {
            let group = std::str::from_utf8(&key[prefix.len()..]).map_err(|_| StoreError::Corrupt {
                kind: "profile group",
                message: "group name is not UTF-8".into(),
            })?;
            match new_groups.remove(group) {
                None => {
                    let old_group: BTreeMap<TagCode, ProfileEntry> = decode("profile group", bytes)?;
                    changed.extend(old_group.into_keys());
                    self.delete(key.clone())?;
                }
                Some(new_group) => {
                    let encoded = encode(&new_group);
                    if encoded != *bytes {
                        let old_group: BTreeMap<TagCode, ProfileEntry> = decode("profile group", bytes)?;
                        changed.diff(&old_group, &new_group);
                        self.put(key.clone(), &new_group)?;
                    }
                }
            }
        }
        for (group, entries) in new_groups {
            changed.extend(entries.keys().cloned());
            self.put(layout::profile_group(person_id, &group), &entries)?;
        }
        let version = header.version + 1;
        let n_records = header.n_records;
        let kind = if n_records == 0 {
            self.delete_small(layout::person(person_id));
            self.delete(layout::person_features(person_id))?;
            self.add_to_counter(layout::META_N_PERSONS, -1)?;
            ChangeKind::Deleted
        } else {
            self.put_small(layout::person(person_id), &PersonHeader { version, n_records })?;
            let split_from = events.iter().find_map(|event| match event {
                PersonEvent::SplitFrom { person, .. } => Some(person.clone()),
                _ => None,
            });
            match split_from {
                Some(from) if version == 1 => ChangeKind::Split { from },
                _ if version == 1 => ChangeKind::Created,
                _ => ChangeKind::Updated,
            }
        };
        self.record_version(person_id, version, at, kind, events, changed)?;
        Ok(version)
    }

    /// Appends a person's version to the change feed and its history.
    fn record_version(
        &mut self,
        person_id: &PersonId,
        version: u64,
        at: EpochMillis,
        kind: ChangeKind,
        events: Vec<PersonEvent>,
        changed: ChangedTags,
    ) -> Result<(), StoreError> {
        let change_sequence = self.counter(layout::META_NEXT_CHANGE)? + 1;
        self.put_small(layout::META_NEXT_CHANGE.to_vec(), &change_sequence)?;
        self.put_small(
            layout::change(change_sequence),
            &ChangeEvent {
                person_id: person_id.clone(),
                version,
                kind: kind.clone(),
            },
        )?;
        self.put_new(
            layout::history(person_id, version),
            &HistoryEntry {
                version,
                change_sequence,
                at,
                kind,
                events,
                changed_tags: changed.tags,
                n_changed_tags: changed.n,
            },
        )
    }

    /// A person's history from `from_version` on, oldest first, at most `limit` versions.
    /// A merged person's history ends with its merge; the survivor's goes on.
    pub fn history(
        &self,
        person_id: &PersonId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        debug_assert_ne!(self.reads, Reads::Kept, "reads the store alone, not the writer's view");
        let prefix = layout::history_prefix(person_id);
        let start = layout::history(person_id, from_version);
        let mut entries = Vec::new();
        for (key, _) in self.store.kv.scan(&prefix, Some(&start), limit)? {
            if let Some(bytes) = self.get(&key)? {
                entries.push(decode("history", &bytes)?);
            }
        }
        Ok(entries)
    }

    // --- matching ---

    pub fn n_persons(&self) -> Result<u64, StoreError> {
        self.counter(layout::META_N_PERSONS)
    }

    /// Open review items.
    pub fn n_review_items(&self) -> Result<u64, StoreError> {
        self.counter(layout::META_N_REVIEW_ITEMS)
    }

    fn posting_list(&self, blocking_key: &str) -> Result<Option<PostingList>, StoreError> {
        match self.get(&layout::posting_list(blocking_key))? {
            Some(bytes) => Ok(Some(decode("posting list", &bytes)?)),
            None => Ok(None),
        }
    }

    /// The persons holding a blocking key's value, unless more than `cap` do: then the value
    /// is too common to say anything (a shared phone, 张伟 born on a common day). One read.
    pub fn postings(&self, blocking_key: &str, cap: usize) -> Result<Postings, StoreError> {
        debug_assert!(cap < POSTINGS_KEPT_MAX, "a list must say whether it is over the cap");
        Ok(match self.posting_list(blocking_key)? {
            None => Postings::Persons(Vec::new()),
            Some(PostingList::Common { .. }) => Postings::Common { marked: true },
            Some(PostingList::Persons(persons)) if persons.len() > cap => Postings::Common { marked: false },
            Some(PostingList::Persons(persons)) => Postings::Persons(persons.into_iter().map(PersonId::new).collect()),
        })
    }

    /// Adds a person to a key's postings, unless the key is marked common: such a key is
    /// never looked up, so its postings would only cost writes and disk. A list that would
    /// keep more than `POSTINGS_KEPT_MAX` persons becomes the mark.
    pub fn add_posting(&mut self, blocking_key: &str, person_id: &PersonId) -> Result<(), StoreError> {
        let mut persons = match self.posting_list(blocking_key)? {
            Some(PostingList::Common { .. }) => return Ok(()),
            Some(PostingList::Persons(persons)) => persons,
            None => Vec::new(),
        };
        let Err(at) = persons.binary_search_by(|held| held.as_str().cmp(person_id.as_str())) else {
            return Ok(());
        };
        persons.insert(at, person_id.as_str().to_owned());
        let list = if persons.len() > POSTINGS_KEPT_MAX {
            PostingList::common_from(persons)
        } else {
            PostingList::Persons(persons)
        };
        self.put_small(layout::posting_list(blocking_key), &list)
    }

    /// Remembers that a blocking key is held by more persons than the matcher looks at, so
    /// later lookups find no candidates in it, and no more postings are kept for it.
    pub fn mark_common_key(&mut self, blocking_key: &str) -> Result<(), StoreError> {
        let marked = match self.posting_list(blocking_key)? {
            Some(PostingList::Persons(persons)) => PostingList::common_from(persons),
            Some(common @ PostingList::Common { .. }) => common,
            None => PostingList::Common { first: None },
        };
        self.put_small(layout::posting_list(blocking_key), &marked)
    }

    /// Removes a person from a key's postings (a key marked common stays marked, without the
    /// person if it was the one the mark kept).
    pub fn remove_posting(&mut self, blocking_key: &str, person_id: &PersonId) -> Result<(), StoreError> {
        let mut persons = match self.posting_list(blocking_key)? {
            Some(PostingList::Persons(persons)) => persons,
            Some(PostingList::Common { first: Some(first) }) if first == person_id.as_str() => {
                let marked = PostingList::Common { first: None };
                return self.put_small(layout::posting_list(blocking_key), &marked);
            }
            Some(PostingList::Common { .. }) | None => return Ok(()),
        };
        let Ok(at) = persons.binary_search_by(|held| held.as_str().cmp(person_id.as_str())) else {
            return Ok(());
        };
        persons.remove(at);
        if persons.is_empty() {
            self.delete_small(layout::posting_list(blocking_key));
            Ok(())
        } else {
            self.put_small(layout::posting_list(blocking_key), &PostingList::Persons(persons))
        }
    }

    /// The person holding a resident ID number (the first, if a duplicated number is held by
    /// several persons pending review).
    pub fn person_for_id_number(&self, id_number: &str) -> Result<Option<PersonId>, StoreError> {
        Ok(match self.posting_list(&format!("id/{id_number}"))? {
            Some(PostingList::Persons(persons)) => persons.into_iter().next().map(PersonId::new),
            Some(PostingList::Common { first }) => first.map(PersonId::new),
            None => None,
        })
    }

    /// Reads what the store keeps under a record's key (the record, its evidence and review
    /// item) without decoding it: for a read-ahead transaction, whose reads are kept for the
    /// writer.
    pub fn read_record(&self, key: &RecordKey) -> Result<(), StoreError> {
        self.get(&layout::record(key))?;
        self.get(&layout::evidence(key))?;
        self.get(&layout::review_item(key))?;
        Ok(())
    }

    /// Reads a person's header and features without decoding them: for a read-ahead
    /// transaction, whose reads are kept for the writer.
    pub fn read_person(&self, person_id: &PersonId) -> Result<(), StoreError> {
        self.get(&layout::person(person_id))?;
        self.get(&layout::person_features(person_id))?;
        Ok(())
    }

    /// A person's identity features, in the matcher's encoding.
    pub fn person_features<T: DeserializeOwned>(&self, person_id: &PersonId) -> Result<Option<T>, StoreError> {
        self.get(&layout::person_features(person_id))?
            .map(|bytes| decode("person features", &bytes))
            .transpose()
    }

    pub fn put_person_features<T: Serialize>(&mut self, person_id: &PersonId, features: &T) -> Result<(), StoreError> {
        self.put(layout::person_features(person_id), features)
    }

    /// The person a merged-away id now points to.
    pub fn alias(&self, person_id: &PersonId) -> Result<Option<PersonId>, StoreError> {
        self.get(&layout::alias(person_id))?
            .map(|bytes| decode("alias", &bytes))
            .transpose()
    }

    /// Removes a person whose records all moved to `survivor`: its header, profile and
    /// features go, its id becomes an alias of the survivor (and every alias of it is pointed
    /// at the survivor), and the change feed says it was deleted.
    /// Retires a person emptied by a merge: its id becomes an alias of `survivor`, its history
    /// ends with the merge, and the feed says where it went.
    pub fn retire_person(
        &mut self,
        person_id: &PersonId,
        survivor: &PersonId,
        at: EpochMillis,
        cause: Cause,
    ) -> Result<(), StoreError> {
        let header = self
            .person(person_id)?
            .ok_or_else(|| StoreError::PersonNotFound(person_id.clone()))?;
        if header.n_records != 0 {
            return Err(StoreError::Corrupt {
                kind: "person",
                message: "a person still holding records cannot be retired".into(),
            });
        }
        self.put_small(layout::alias(person_id), survivor)?;
        let prefix = layout::profile_prefix(person_id);
        let mut changed = ChangedTags::default();
        for (key, bytes) in self.scan_all(&prefix)? {
            let group: BTreeMap<TagCode, ProfileEntry> = decode("profile group", &bytes)?;
            changed.extend(group.into_keys());
            self.delete(key)?;
        }
        self.delete_small(layout::person(person_id));
        self.delete(layout::person_features(person_id))?;
        self.add_to_counter(layout::META_N_PERSONS, -1)?;
        let event = PersonEvent::MergedInto {
            survivor: survivor.clone(),
            cause,
        };
        let kind = ChangeKind::MergedInto {
            survivor: survivor.clone(),
        };
        self.record_version(person_id, header.version + 1, at, kind, vec![event], changed)
    }

    // --- steward decisions ---

    /// Remembers that a steward said two persons differ.
    pub fn hold_apart(&mut self, a: &PersonId, b: &PersonId, note: &str) -> Result<(), StoreError> {
        self.put_small(layout::held_apart(a, b), &note)?;
        self.put_small(layout::held_apart(b, a), &note)
    }

    /// Forgets that two persons were held apart (a steward merged them after all).
    pub fn release_apart(&mut self, a: &PersonId, b: &PersonId) {
        self.delete_small(layout::held_apart(a, b));
        self.delete_small(layout::held_apart(b, a));
    }

    pub fn held_apart(&self, a: &PersonId, b: &PersonId) -> Result<bool, StoreError> {
        self.holds(&layout::held_apart(a, b))
    }

    /// The persons a steward said differ from `person_id`, with the steward's note.
    pub fn persons_held_apart(&self, person_id: &PersonId) -> Result<Vec<(PersonId, String)>, StoreError> {
        let prefix = layout::held_apart_prefix(person_id);
        self.scan_all(&prefix)?
            .into_iter()
            .map(|(key, value)| {
                let other = PersonId::new(layout::split_suffix(&key, &prefix).concat());
                Ok((other, decode("steward note", &value)?))
            })
            .collect()
    }

    /// Hands what a steward said about `loser` over to `survivor` when they merge.
    pub fn move_held_apart(&mut self, loser: &PersonId, survivor: &PersonId) -> Result<(), StoreError> {
        for (other, note) in self.persons_held_apart(loser)? {
            self.release_apart(loser, &other);
            if other != *survivor {
                self.hold_apart(survivor, &other, &note)?;
            }
        }
        Ok(())
    }

    /// Remembers that a steward said these records are one person, so re-clustering after a
    /// deletion keeps them together: they are chained (each to the next), and a deleted
    /// record's neighbours are chained to each other, so the group stays connected.
    pub fn hold_together(&mut self, keys: &[RecordKey]) -> Result<(), StoreError> {
        for pair in keys.windows(2) {
            if pair[0] != pair[1] {
                self.put_small(layout::held_together(&pair[0], &pair[1]), &())?;
                self.put_small(layout::held_together(&pair[1], &pair[0]), &())?;
            }
        }
        Ok(())
    }

    pub fn records_held_together(&self, key: &RecordKey) -> Result<Vec<RecordKey>, StoreError> {
        let prefix = layout::held_together_prefix(key);
        self.scan_all(&prefix)?
            .into_keys()
            .map(|full| record_key_from(&layout::split_suffix(&full, &prefix), "held together"))
            .collect()
    }

    /// Forgets that a steward joined the persons of two records (an unmerge separated them).
    pub fn release_together(&mut self, a: &RecordKey, b: &RecordKey) {
        self.delete_small(layout::held_together(a, b));
        self.delete_small(layout::held_together(b, a));
    }

    /// Takes a deleted record out of what stewards said, keeping its neighbours connected.
    fn forget_held_together(&mut self, key: &RecordKey) -> Result<(), StoreError> {
        let neighbours = self.records_held_together(key)?;
        for other in &neighbours {
            self.release_together(key, other);
        }
        self.hold_together(&neighbours)
    }

    /// Deletes a record and everything kept about it: its evidence, its review item, what
    /// stewards said about it. Its person's membership is the caller's.
    pub fn delete_record(&mut self, key: &RecordKey) -> Result<(), StoreError> {
        if self.get_raw(&layout::record(key))?.is_none() {
            return Ok(());
        }
        self.add_to_counter(layout::META_N_RECORDS, -1)?;
        self.add_to_counter(&layout::source_records(&key.source), -1)?;
        self.delete(layout::record(key))?;
        self.delete(layout::evidence(key))?;
        self.set_review_item::<()>(key, None)?;
        self.forget_held_together(key)
    }

    /// Records carrying `name` (for the term-frequency adjustment) and records carrying any
    /// name.
    pub fn name_count(&self, name: &str) -> Result<(u64, u64), StoreError> {
        Ok((
            self.counter(&layout::name_count(name))?,
            self.counter(layout::META_N_NAMED_RECORDS)?,
        ))
    }

    pub fn count_name(&mut self, name: &str, delta: i64) -> Result<(), StoreError> {
        let key = layout::name_count(name);
        if self.counter(&key)?.checked_add_signed(delta) == Some(0) {
            self.delete_small(key);
        } else {
            self.add_to_counter(&key, delta)?;
        }
        self.add_to_counter(layout::META_N_NAMED_RECORDS, delta)
    }

    /// The evidence of a record's last resolution, in the matcher's encoding.
    pub fn evidence<T: DeserializeOwned>(&self, key: &RecordKey) -> Result<Option<T>, StoreError> {
        self.get(&layout::evidence(key))?
            .map(|bytes| decode("evidence", &bytes))
            .transpose()
    }

    pub fn put_evidence<T: Serialize>(&mut self, key: &RecordKey, evidence: &T) -> Result<(), StoreError> {
        self.put(layout::evidence(key), evidence)
    }

    /// Sets (or with `None` clears) the record's open review item; `best` (the highest
    /// candidate probability) orders the queue.
    pub fn set_review_item<T: Serialize>(
        &mut self,
        key: &RecordKey,
        item: Option<(&T, f64)>,
    ) -> Result<(), StoreError> {
        let storage_key = layout::review_item(key);
        // The rank is the value's first field: read it alone, whatever the item's type.
        let existing: Option<u64> = self
            .get(&storage_key)?
            .map(|bytes| {
                postcard::take_from_bytes::<u64>(&bytes)
                    .map(|(rank, _)| rank)
                    .map_err(|error| StoreError::Corrupt {
                        kind: "review item",
                        message: error.to_string(),
                    })
            })
            .transpose()?;
        if let Some(rank) = existing {
            self.delete_small(layout::review_queue(rank, key));
        }
        match item {
            Some((item, best)) => {
                if existing.is_none() {
                    self.add_to_counter(layout::META_N_REVIEW_ITEMS, 1)?;
                }
                let rank = review_rank(best);
                self.put_small(layout::review_queue(rank, key), &())?;
                self.put(storage_key, &Queued { rank, item })
            }
            None if existing.is_some() => {
                self.add_to_counter(layout::META_N_REVIEW_ITEMS, -1)?;
                self.delete(storage_key).map(drop)
            }
            None => Ok(()),
        }
    }

    pub fn review_item<T: DeserializeOwned>(&self, key: &RecordKey) -> Result<Option<T>, StoreError> {
        self.get(&layout::review_item(key))?
            .map(|bytes| decode::<Queued<T>>("review item", &bytes).map(|queued| queued.item))
            .transpose()
    }

    /// Open review items, the most likely matches first, after `after` (the last key of the
    /// previous page), at most `limit`; with the key to pass for the next page.
    pub fn review_page<T: DeserializeOwned>(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<ReviewPage<T>, StoreError> {
        debug_assert_ne!(self.reads, Reads::Kept, "reads the store alone, not the writer's view");
        let start = after.map(|after| {
            let mut start = after.to_vec();
            start.push(0);
            start
        });
        let mut items = Vec::new();
        let mut last = None;
        for (full, _) in self.store.kv.scan(layout::REVIEW_QUEUE, start.as_deref(), limit)? {
            let prefix_len = layout::REVIEW_QUEUE.len() + 8 + 1;
            let parts = layout::split_suffix(&full, &full[..prefix_len]);
            let key = record_key_from(&parts, "review queue")?;
            if let Some(item) = self.review_item(&key)? {
                items.push((key, item));
            }
            last = Some(full);
        }
        let next = if items.len() < limit { None } else { last };
        Ok((items, next))
    }

    /// The stored model, in the matcher's encoding.
    pub fn model<T: DeserializeOwned>(&self) -> Result<Option<T>, StoreError> {
        self.get(layout::META_MODEL)?
            .map(|bytes| decode("model", &bytes))
            .transpose()
    }

    pub fn put_model<T: Serialize>(&mut self, model: &T) -> Result<(), StoreError> {
        self.put(layout::META_MODEL.to_vec(), model)
    }

    /// Moves a record's stored version to another person (a merge): rewrites its header.
    pub fn set_record_person(&mut self, key: &RecordKey, person_id: &PersonId) -> Result<(), StoreError> {
        let mut record = self.record(key)?.ok_or_else(|| StoreError::Corrupt {
            kind: "membership",
            message: "a person lists a record that is not stored".into(),
        })?;
        record.header.person_id = person_id.clone();
        self.put(layout::record(key), &record)
    }

    // --- quality ---

    /// Counts one more hit of `counter` (a rule id, or `layout::QUALITY_RECORDS` /
    /// `layout::QUALITY_REJECTED`) for `source`.
    ///
    /// Counted in memory, written once per source when the transaction is committed or handed
    /// over.
    pub fn count_quality(&mut self, source: &SourceId, counter: &str) {
        self.count_quality_n(source, counter, 1);
    }

    fn count_quality_n(&mut self, source: &SourceId, counter: &str, n: u64) {
        *self
            .quality_counted
            .entry(source.clone())
            .or_default()
            .entry(counter.to_owned())
            .or_default() += n;
    }

    /// Adds the counts of `count_quality` to the stored ones. A source's counters are one
    /// small value: one per cleansing rule.
    fn write_quality_counts(&mut self) -> Result<(), StoreError> {
        for (source, counted) in std::mem::take(&mut self.quality_counted) {
            let mut counts = self.quality_counts(&source)?;
            for (counter, n) in counted {
                *counts.entry(counter).or_default() += n;
            }
            self.put_small(layout::quality(&source), &counts)?;
        }
        Ok(())
    }

    fn quality_counts(&self, source: &SourceId) -> Result<BTreeMap<String, u64>, StoreError> {
        match self.get(&layout::quality(source))? {
            Some(bytes) => decode("quality counters", &bytes),
            None => Ok(BTreeMap::new()),
        }
    }

    // --- progress ---

    pub fn set_applied_sequence(&mut self, sequence: u64) -> Result<(), StoreError> {
        self.put_small(layout::META_APPLIED_SEQUENCE.to_vec(), &sequence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend whose one-at-a-time applies stop after the first write, failing or
    /// panicking: a batch cut short in the middle.
    struct PartWayKv {
        inner: kv::MemKv,
        panics: bool,
    }

    impl KvStore for PartWayKv {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(key)
        }

        fn scan(&self, prefix: &[u8], start: Option<&[u8]>, limit: usize) -> Result<Vec<kv::KvPair>, StoreError> {
            self.inner.scan(prefix, start, limit)
        }

        fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
            self.inner.apply(batch)
        }

        fn apply_each(&self, mut batch: WriteBatch) -> Result<(), StoreError> {
            batch.writes.truncate(1);
            self.inner.apply_each(batch)?;
            if self.panics {
                panic!("injected: the apply panics after its first write");
            }
            Err(std::io::Error::other("injected: the disk refuses the second write").into())
        }

        fn checkpoint(&self) -> Result<(), StoreError> {
            self.inner.checkpoint()
        }

        fn size_on_disk(&self) -> Result<u64, StoreError> {
            self.inner.size_on_disk()
        }
    }

    /// A batch cut short (by an error or a panic) is never shown half-applied to guarded
    /// readers, and a panic does not turn every later read into one: each read is refused with
    /// `Torn`, as is the next apply. The writer's unguarded view still reads.
    #[test]
    fn a_batch_cut_short_leaves_the_store_refusing_guarded_reads() {
        for panics in [false, true] {
            let guarded = Arc::new(GuardedKv::new(Box::new(PartWayKv {
                inner: kv::MemKv::default(),
                panics,
            })));
            let mut batch = WriteBatch::default();
            batch.put(b"x/a".to_vec(), b"1".to_vec());
            batch.put(b"x/b".to_vec(), b"2".to_vec());
            let applying = Arc::clone(&guarded);
            let outcome = std::thread::spawn(move || applying.apply_unseen(batch)).join();
            match (panics, outcome) {
                (true, Err(_)) => {}
                (false, Ok(Err(StoreError::Io(_)))) => {}
                (_, other) => panic!("panics {panics}: unexpected outcome {other:?}"),
            }
            assert!(matches!(guarded.get(b"x/a"), Err(StoreError::Torn)), "panics {panics}");
            assert!(matches!(guarded.scan(b"x/", None, 10), Err(StoreError::Torn)));
            assert!(matches!(
                guarded.apply_unseen(WriteBatch::default()),
                Err(StoreError::Torn)
            ));
            assert!(matches!(guarded.apply(WriteBatch::default()), Err(StoreError::Torn)));
            assert!(matches!(
                guarded.apply_each(WriteBatch::default()),
                Err(StoreError::Torn)
            ));
            assert_eq!(guarded.unguarded().get(b"x/a").expect("unguarded"), Some(b"1".to_vec()));
            let status = crate::api::error::to_status(crate::engine::EngineError::Store(StoreError::Torn));
            assert_eq!(status.code(), tonic::Code::Unavailable);
        }
    }

    fn key(record_id: &str) -> RecordKey {
        RecordKey {
            source: SourceId::parse("D01").expect("well-formed"),
            record_id: record_id.into(),
        }
    }

    fn stored(person: &str, pairs: &[(&str, &str)]) -> StoredRecord {
        StoredRecord {
            header: RecordHeader {
                person_id: PersonId::new(person),
                observed_at: 0,
                id_number: None,
                findings: vec![],
                sequence: 1,
            },
            tags: pairs
                .iter()
                .map(|(tag, value)| {
                    let value = TagValue {
                        raw: value.to_string(),
                        standardized: value.to_string(),
                    };
                    (TagCode::new(*tag), value)
                })
                .collect(),
        }
    }

    fn mem_store() -> Store {
        Store::open(Box::new(kv::MemKv::default())).expect("opens")
    }

    #[test]
    fn the_writer_reads_handed_batches_before_the_store_holds_them() {
        let store = mem_store();
        let person = PersonId::new("P1");
        let mut txn = store.begin_kept();
        txn.add_member(&person, &key("a")).expect("add");
        txn.add_member(&person, &key("b")).expect("add");
        txn.add_posting("name/x", &person).expect("posting");
        txn.commit().expect("commit");

        // Batch 1: a record leaves, another joins, a posting goes.
        let mut txn = store.begin_kept();
        txn.remove_member(&person, &key("a")).expect("remove");
        txn.add_member(&person, &key("c")).expect("add");
        txn.remove_posting("name/x", &person).expect("posting");
        txn.add_posting("name/y", &person).expect("posting");
        txn.put_record(&key("c"), &stored("P1", &[("name", "张三")]))
            .expect("put");
        let first = txn.hand_over().expect("hand over");
        // Batch 2, prepared on top of batch 1.
        let mut txn = store.begin_kept();
        assert_eq!(txn.members(&person).expect("members"), vec![key("b"), key("c")]);
        assert_eq!(txn.postings("name/x", 10).expect("postings"), Postings::Persons(vec![]));
        assert_eq!(
            txn.postings("name/y", 10).expect("postings"),
            Postings::Persons(vec![person.clone()])
        );
        assert!(txn.record(&key("c")).expect("read").is_some());
        assert!(store.begin().record(&key("c")).expect("read").is_none());
        txn.add_member(&person, &key("d")).expect("add");
        let second = txn.hand_over().expect("hand over");
        assert_eq!(store.n_handed(), 2);

        // Other readers see only what the store holds.
        let reader = store.begin();
        assert_eq!(reader.members(&person).expect("members"), vec![key("a"), key("b")]);
        let writer = store.begin_kept();
        assert_eq!(
            writer.members(&person).expect("members"),
            vec![key("b"), key("c"), key("d")]
        );
        store.commit_handed(&first, 1).expect("commit");
        assert_eq!(
            store.begin().members(&person).expect("members"),
            vec![key("b"), key("c")]
        );
        assert_eq!(
            store.begin_kept().members(&person).expect("members"),
            vec![key("b"), key("c"), key("d")]
        );
        store.commit_handed(&second, 2).expect("commit");
        assert_eq!(store.n_handed(), 0);
        assert_eq!(
            store.begin().members(&person).expect("members"),
            vec![key("b"), key("c"), key("d")]
        );
    }

    /// A batch of `(key, value)` counters and the applied sequence, as a transaction writes
    /// them.
    fn counter_batch(store: &Store, counters: &[(&[u8], u64)], applied: u64) -> WriteBatch {
        let mut txn = store.begin();
        for (key, value) in counters {
            txn.put_small(key.to_vec(), value).expect("put");
        }
        txn.put_small(layout::META_APPLIED_SEQUENCE.to_vec(), &applied)
            .expect("put");
        txn.into_batch().expect("batch")
    }

    /// Handed batches go through the redo log and into sled key by key; a batch a crash cut
    /// short (in the log, part of it in sled, its applied sequence not) is applied whole at
    /// the next open; a log that does not continue the store is refused.
    #[test]
    fn a_batch_cut_short_is_applied_again_from_the_redo_log() {
        let dir = tempfile::tempdir().expect("dir");
        let (store_dir, redo_dir) = (dir.path().join("store"), dir.path().join("redo"));
        {
            let (store, n_redone) = Store::open_sled_with_redo(&store_dir, 1 << 20, &redo_dir, 1 << 20).expect("open");
            assert_eq!(n_redone, 0);
            let mut txn = store.begin_kept();
            txn.put_small(b"x/one".to_vec(), &1u64).expect("put");
            txn.put_small(layout::META_APPLIED_SEQUENCE.to_vec(), &1u64)
                .expect("put");
            let handed = txn.hand_over().expect("hand over");
            store.commit_handed(&handed, 1).expect("commit");
            assert_eq!(store.begin().counter(b"x/one").expect("read"), 1);
            assert_eq!(store.applied_sequence().expect("applied"), 1);
            store.checkpoint().expect("checkpoint");
        }
        // Batch 2 reaches the redo log; only its first write reaches the store.
        {
            let scratch = Store::open(Box::new(kv::MemKv::default())).expect("scratch");
            let batch = counter_batch(&scratch, &[(b"x/a", 2), (b"x/b", 3)], 2);
            let (mut log, held) = redo::RedoLog::open(&redo_dir, 1 << 20).expect("redo");
            assert_eq!(held.len(), 1);
            let batch = log.append(2, batch).expect("append");
            let first = batch
                .writes
                .iter()
                .find(|(key, _)| key.as_slice() == b"x/a")
                .expect("x/a")
                .clone();
            let kv = kv::SledKv::open(&store_dir, 1 << 20).expect("sled");
            kv.apply_each(WriteBatch { writes: vec![first] }).expect("apply");
            kv.checkpoint().expect("checkpoint");
        }
        {
            let (store, n_redone) = Store::open_sled_with_redo(&store_dir, 1 << 20, &redo_dir, 1 << 20).expect("open");
            assert_eq!(n_redone, 1);
            assert_eq!(store.applied_sequence().expect("applied"), 2);
            let txn = store.begin();
            assert_eq!(
                [b"x/one".as_slice(), b"x/a", b"x/b"].map(|key| txn.counter(key).expect("read")),
                [1, 2, 3]
            );
        }
        // A redo log of batches after 7 does not continue a store at 2.
        let other_redo = dir.path().join("other-redo");
        {
            let scratch = Store::open(Box::new(kv::MemKv::default())).expect("scratch");
            let (mut log, _) = redo::RedoLog::open(&other_redo, 1 << 20).expect("redo");
            log.append(8, counter_batch(&scratch, &[(b"x/c", 4)], 8))
                .expect("append");
        }
        let refused = Store::open_sled_with_redo(&store_dir, 1 << 20, &other_redo, 1 << 20)
            .err()
            .expect("refused");
        assert!(refused.to_string().contains("belongs to another store"), "{refused}");
    }

    #[test]
    fn a_pair_read_ahead_is_dropped_by_the_commit_that_writes_it() {
        let store = mem_store();
        store.set_read_ahead_bytes_max(1 << 20);
        let person = PersonId::new("P1");
        let mut txn = store.begin_kept();
        txn.add_member(&person, &key("a")).expect("add");
        txn.commit().expect("commit");
        let ahead = store.begin_read_ahead(7);
        assert!(ahead
            .person_for_id_number("110101199001011234")
            .expect("read")
            .is_none());
        assert!(ahead.record(&key("a")).expect("read").is_none());
        // The writer writes what was read ahead; its next transaction sees the write.
        let mut txn = store.begin_kept();
        txn.put_record(&key("a"), &stored("P1", &[("name", "张三")]))
            .expect("put");
        txn.add_posting("id/110101199001011234", &person).expect("posting");
        txn.commit().expect("commit");
        let txn = store.begin_kept();
        assert!(txn.record(&key("a")).expect("read").is_some());
        assert_eq!(
            txn.person_for_id_number("110101199001011234").expect("read"),
            Some(person.clone())
        );
        assert_eq!(store.read_ahead_stats().n_dropped, 2);
    }

    #[test]
    fn replacing_a_record_keeps_one_copy() {
        let store = mem_store();
        let mut txn = store.begin();
        txn.put_record(&key("1"), &stored("P1", &[("name", "a"), ("phone", "1")]))
            .expect("put");
        txn.commit().expect("commit");
        let mut txn = store.begin();
        txn.put_record(&key("1"), &stored("P1", &[("name", "b")])).expect("put");
        txn.commit().expect("commit");
        assert_eq!(
            store.begin().record(&key("1")).expect("read"),
            Some(stored("P1", &[("name", "b")]))
        );
        assert_eq!(store.stats().expect("stats").n_records, 1);
    }

    /// Values longer than one part are split, read back whole, and shrink cleanly.
    #[test]
    fn long_values_round_trip_through_parts() {
        let store = mem_store();
        let long = "长".repeat(3 * layout::VALUE_PART_BYTES);
        let mut txn = store.begin();
        txn.put_record(&key("1"), &stored("P1", &[("d01.note", &long)]))
            .expect("put");
        txn.commit().expect("commit");
        let n_continuations = |store: &Store| store.kv.scan(layout::CONTINUATIONS, None, 1_000).expect("scan").len();
        assert!(n_continuations(&store) >= 8);
        assert_eq!(
            store.begin().record(&key("1")).expect("read"),
            Some(stored("P1", &[("d01.note", &long)]))
        );
        let mut txn = store.begin();
        txn.put_record(&key("1"), &stored("P1", &[("name", "短")]))
            .expect("put");
        txn.commit().expect("commit");
        assert_eq!(n_continuations(&store), 0, "parts of the longer version are gone");
        assert_eq!(
            store.begin().record(&key("1")).expect("read"),
            Some(stored("P1", &[("name", "短")]))
        );
    }

    /// Regression (issue 2): paging must not skip keys that extend the last key of a page
    /// (record "k10" sorts between "k1" and "k2").
    #[test]
    fn mapping_pages_cover_every_record() {
        let store = mem_store();
        let mut txn = store.begin();
        for n in 0..250 {
            txn.put_record(&key(&format!("k{n}")), &stored("P1", &[("name", "a")]))
                .expect("put");
        }
        txn.commit().expect("commit");
        let mut seen = Vec::new();
        let mut after: Option<RecordKey> = None;
        loop {
            let page = store.mapping_page(after.as_ref(), 7).expect("page");
            after = page.last().map(|(key, _)| key.clone());
            let done = page.len() < 7;
            seen.extend(page.into_iter().map(|(key, _)| key.record_id));
            if done {
                break;
            }
        }
        assert_eq!(seen.len(), 250);
        assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 250);
    }

    #[test]
    fn profiles_are_grouped_and_masked() {
        let store = mem_store();
        let person_id = PersonId::new("P1");
        let entry = |value: &str| ProfileEntry {
            value: value.into(),
            source: SourceId::parse("D07").expect("well-formed"),
            record_id: "r".into(),
            observed_at: 0,
        };
        let profile: BTreeMap<TagCode, ProfileEntry> = [
            (TagCode::new("name"), entry("张伟")),
            (TagCode::new("phone"), entry("13800000000")),
            (TagCode::new("d07.vehicle_plate"), entry("浙A12345")),
        ]
        .into_iter()
        .collect();
        let mut txn = store.begin();
        txn.add_member(&person_id, &key("1")).expect("member");
        txn.write_person(&person_id, &profile, 0, Vec::new()).expect("write");
        txn.commit().expect("commit");
        let txn = store.begin();
        assert_eq!(txn.profile(&person_id, &[]).expect("read"), profile);
        let masked = txn
            .profile(&person_id, &[TagCode::new("d07.vehicle_plate"), TagCode::new("name")])
            .expect("read");
        assert_eq!(
            masked.keys().map(TagCode::as_str).collect::<Vec<_>>(),
            vec!["d07.vehicle_plate", "name"]
        );
        assert_eq!(store.changes_from(1, 10).expect("feed").len(), 1);
    }

    #[test]
    fn the_change_feed_is_read_by_sequence() {
        let store = mem_store();
        assert_eq!(store.change_sequence().expect("read"), 0);
        let mut txn = store.begin();
        for person in ["P1", "P2", "P1"] {
            let person_id = PersonId::new(person);
            txn.add_member(&person_id, &key(person)).expect("member");
            txn.write_person(&person_id, &BTreeMap::new(), 0, Vec::new())
                .expect("write");
        }
        txn.commit().expect("commit");
        assert_eq!(store.change_sequence().expect("read"), 3);
        let feed = |from, limit| -> Vec<(u64, String, u64)> {
            store
                .changes_from(from, limit)
                .expect("feed")
                .into_iter()
                .map(|(sequence, event)| (sequence, event.person_id.to_string(), event.version))
                .collect()
        };
        assert_eq!(
            feed(1, 10),
            [(1, "P1".into(), 1), (2, "P2".into(), 1), (3, "P1".into(), 2)]
        );
        assert_eq!(feed(2, 1), [(2, "P2".into(), 1)]);
        assert_eq!(feed(4, 10), []);
    }

    #[test]
    fn a_trimmed_feed_refuses_what_it_deleted_and_keeps_the_rest() {
        let store = mem_store();
        let mut txn = store.begin();
        for n in 1..=7 {
            let person_id = PersonId::new(format!("P{n}"));
            txn.add_member(&person_id, &key(&format!("r{n}"))).expect("member");
            txn.write_person(&person_id, &BTreeMap::new(), 0, Vec::new())
                .expect("write");
        }
        txn.commit().expect("commit");
        assert_eq!(store.feed_start().expect("start"), 1);
        // Two keys a commit, three at most a call: the deletions take two calls.
        assert_eq!(store.trim_changes(5, 2, 3).expect("trim"), (3, false));
        assert_eq!(store.trim_changes(5, 2, 10).expect("trim"), (1, true));
        assert_eq!(store.feed_start().expect("start"), 5);
        for from in [1, 4] {
            assert!(matches!(
                store.changes_from(from, 10),
                Err(StoreError::FeedTrimmed { from: f, start: 5 }) if f == from
            ));
        }
        let kept: Vec<u64> = store
            .changes_from(5, 10)
            .expect("kept")
            .into_iter()
            .map(|(sequence, _)| sequence)
            .collect();
        assert_eq!(kept, [5, 6, 7]);
        assert_eq!(store.kv.scan(layout::CHANGES, None, 10).expect("scan").len(), 3);
        // A start at or below the current one deletes nothing more and lowers nothing.
        assert_eq!(store.trim_changes(3, 2, 10).expect("trim"), (0, true));
        assert_eq!(store.feed_start().expect("start"), 5);
        // Entries left below the start (a crash between raising it and deleting) go at the
        // next trim.
        let mut txn = store.begin();
        txn.put_small(layout::change(2), &"left over").expect("put");
        txn.commit().expect("commit");
        assert_eq!(store.trim_changes(6, 10, 10).expect("trim"), (2, true));
        assert_eq!(store.kv.scan(layout::CHANGES, None, 10).expect("scan").len(), 2);
        assert_eq!(store.change_sequence().expect("sequence"), 7);
    }

    #[test]
    fn postings_beyond_the_cap_are_common_and_remembered() {
        let store = mem_store();
        let mut txn = store.begin();
        for n in 0..3 {
            txn.add_posting("nd/张伟\u{1f}19900102", &PersonId::new(format!("P{n}")))
                .expect("posting");
        }
        assert_eq!(
            txn.postings("nd/张伟\u{1f}19900102", 3).expect("read"),
            Postings::Persons(vec![PersonId::new("P0"), PersonId::new("P1"), PersonId::new("P2")])
        );
        assert_eq!(
            txn.postings("nd/张伟\u{1f}19900102", 2).expect("read"),
            Postings::Common { marked: false }
        );
        txn.mark_common_key("nd/张伟\u{1f}19900102").expect("mark");
        txn.commit().expect("commit");
        let mut txn = store.begin();
        assert_eq!(
            txn.postings("nd/张伟\u{1f}19900102", 10).expect("read"),
            Postings::Common { marked: true }
        );
        // A key found common keeps no more postings.
        txn.add_posting("nd/张伟\u{1f}19900102", &PersonId::new("P9"))
            .expect("posting");
        txn.commit().expect("commit");
        let txn = store.begin();
        assert_eq!(
            txn.posting_list("nd/张伟\u{1f}19900102").expect("read"),
            Some(PostingList::Common {
                first: Some("P0".into())
            })
        );
        // A key that merely extends another is not mistaken for it.
        assert_eq!(
            txn.postings("nd/张伟\u{1f}1990010", 10).expect("read"),
            Postings::Persons(vec![])
        );
        assert_eq!(txn.person_for_id_number("1").expect("read"), None);
    }

    #[test]
    fn a_posting_list_is_kept_in_order_and_bounded() {
        let store = mem_store();
        let mut txn = store.begin();
        for n in [3, 1, 2, 1] {
            txn.add_posting("ph/13800001234", &PersonId::new(format!("P{n}")))
                .expect("posting");
        }
        txn.commit().expect("commit");
        let mut txn = store.begin();
        assert_eq!(
            txn.postings("ph/13800001234", 8).expect("read"),
            Postings::Persons(["P1", "P2", "P3"].map(PersonId::new).to_vec())
        );
        txn.remove_posting("ph/13800001234", &PersonId::new("P2"))
            .expect("remove");
        txn.remove_posting("ph/13800001234", &PersonId::new("P7"))
            .expect("remove");
        assert_eq!(
            txn.postings("ph/13800001234", 8).expect("read"),
            Postings::Persons(["P1", "P3"].map(PersonId::new).to_vec())
        );
        for n in [1, 3] {
            txn.remove_posting("ph/13800001234", &PersonId::new(format!("P{n}")))
                .expect("remove");
        }
        assert_eq!(
            txn.posting_list("ph/13800001234").expect("read"),
            None,
            "an empty list is deleted"
        );
        for n in 0..=POSTINGS_KEPT_MAX {
            txn.add_posting("id/1", &PersonId::new(format!("P{n:03}")))
                .expect("posting");
        }
        assert_eq!(
            txn.posting_list("id/1").expect("read"),
            Some(PostingList::Common {
                first: Some("P000".into())
            }),
            "one more than a list keeps"
        );
        // An ID number held by too many persons still names the first of them, until it leaves.
        assert_eq!(
            txn.person_for_id_number("1").expect("read"),
            Some(PersonId::new("P000"))
        );
        txn.remove_posting("id/1", &PersonId::new("P001")).expect("remove");
        assert_eq!(
            txn.person_for_id_number("1").expect("read"),
            Some(PersonId::new("P000"))
        );
        txn.remove_posting("id/1", &PersonId::new("P000")).expect("remove");
        assert_eq!(txn.person_for_id_number("1").expect("read"), None);
        assert_eq!(
            txn.postings("id/1", 8).expect("read"),
            Postings::Common { marked: true }
        );
        txn.commit().expect("commit");
    }

    /// A format 6 store (one key per posting, common keys marked apart, one key per quality
    /// counter) is packed at open, in more than one batch, and an upgrade cut short carries on
    /// where it stopped.
    #[test]
    fn a_format_6_store_is_upgraded_by_packing_its_postings() {
        let dir = tempfile::tempdir().expect("temp dir");
        let n_postings = SCAN_PAGE + 100;
        let person = |n: usize| PersonId::new(format!("P{n:05}"));
        {
            let store = Store::open_sled(dir.path(), 1 << 24).expect("opens");
            let mut txn = store.begin();
            // What a format 6 build left: postings of 10 keys spread over the batches, a key
            // marked common (with postings from before it was), and one already packed by an
            // upgrade a crash cut short.
            for n in 0..n_postings {
                let posting = layout::FORMAT_6_POSTINGS
                    .iter()
                    .copied()
                    .chain(format!("nd/k{}\u{1f}1990", n % 10).into_bytes())
                    .chain([layout::SEP])
                    .chain(person(n).as_str().bytes())
                    .collect::<Vec<u8>>();
                txn.put_small(posting, &()).expect("put");
            }
            txn.put_small(b"k/ph/1\0P1".to_vec(), &()).expect("put");
            txn.put_small(b"g/ph/1".to_vec(), &()).expect("put");
            txn.put_small(b"k/id/1\0P2".to_vec(), &()).expect("put");
            txn.add_posting("id/1", &PersonId::new("P1")).expect("packed");
            // Quality counters, one key each.
            for (source, counter, count) in [("D07", "#records", 5u64), ("D07", "R001", 2), ("D09", "#records", 1)] {
                let key = [layout::QUALITY, source.as_bytes(), &[layout::SEP], counter.as_bytes()].concat();
                txn.put_small(key, &count).expect("put");
            }
            txn.put(layout::META_FORMAT.to_vec(), &6u32).expect("put");
            txn.commit().expect("commit");
            store.checkpoint().expect("checkpoint");
        }
        let store = Store::open_sled(dir.path(), 1 << 24).expect("upgrades");
        let txn = store.begin();
        let format: u32 =
            decode("format", &txn.get(layout::META_FORMAT).expect("read").expect("set")).expect("decodes");
        assert_eq!(format, FORMAT_VERSION);
        // 4,196 postings over 10 keys: every list is over what a list keeps.
        assert_eq!(
            txn.posting_list("nd/k3\u{1f}1990").expect("read"),
            Some(PostingList::Common {
                first: Some("P00003".into())
            })
        );
        assert_eq!(
            txn.postings("ph/1", 8).expect("read"),
            Postings::Common { marked: true }
        );
        assert_eq!(
            txn.postings("id/1", 8).expect("read"),
            Postings::Persons(vec![PersonId::new("P1"), PersonId::new("P2")])
        );
        assert_eq!(txn.person_for_id_number("1").expect("read"), Some(PersonId::new("P1")));
        for prefix in [layout::FORMAT_6_POSTINGS, layout::FORMAT_6_COMMON_KEYS] {
            assert!(
                store.kv.scan(prefix, None, 1).expect("scan").is_empty(),
                "nothing left unpacked"
            );
        }
        let d07 = SourceId::parse("D07").expect("source");
        assert_eq!(
            store.quality(Some(&d07)).expect("quality"),
            BTreeMap::from([("#records".to_string(), 5), ("R001".to_string(), 2)])
        );
        assert_eq!(store.quality(None).expect("quality")["#records"], 6);
        assert_eq!(
            store.kv.scan(layout::QUALITY, None, 10).expect("scan").len(),
            2,
            "one value a source"
        );
    }

    #[test]
    fn the_review_queue_pages_by_score() {
        let store = mem_store();
        let mut txn = store.begin();
        for (record_id, best) in [("low", 0.55), ("high", 0.98), ("mid", 0.7)] {
            txn.set_review_item(&key(record_id), Some((&record_id.to_string(), best)))
                .expect("set");
        }
        // Re-ranking an item moves it; clearing one removes it.
        txn.set_review_item(&key("mid"), Some((&"mid".to_string(), 0.99)))
            .expect("set");
        txn.commit().expect("commit");
        let txn = store.begin();
        let (first, next) = txn.review_page::<String>(None, 2).expect("page");
        assert_eq!(
            first.iter().map(|(_, item)| item.as_str()).collect::<Vec<_>>(),
            ["mid", "high"]
        );
        let (rest, next) = txn.review_page::<String>(next.as_deref(), 2).expect("page");
        assert_eq!(rest.iter().map(|(_, item)| item.as_str()).collect::<Vec<_>>(), ["low"]);
        assert!(next.is_none());
        let mut txn = store.begin();
        txn.set_review_item::<String>(&key("high"), None).expect("clear");
        txn.commit().expect("commit");
        let (all, _) = store.begin().review_page::<String>(None, 10).expect("page");
        assert_eq!(all.len(), 2);
        assert_eq!(store.stats().expect("stats").n_review_items, 2);
    }

    #[test]
    fn uncommitted_writes_are_invisible_to_others() {
        let store = mem_store();
        let mut txn = store.begin();
        txn.put_record(&key("1"), &stored("P1", &[("name", "a")])).expect("put");
        assert!(txn.record(&key("1")).expect("read").is_some());
        assert!(store.begin().record(&key("1")).expect("read").is_none());
        drop(txn);
        assert!(store.begin().record(&key("1")).expect("read").is_none());
    }

    fn everything(store: &Store) -> Vec<kv::KvPair> {
        store.kv.scan(b"", None, usize::MAX).expect("scan")
    }

    /// A snapshot loaded into a new store gives the same pairs; the loader refuses a store
    /// that holds anything, and a store holding data without its format version is refused.
    #[test]
    fn a_snapshot_loads_into_an_equal_store() {
        let store = Arc::new(mem_store());
        let mut txn = store.begin();
        for n in 0..30 {
            let long = "长".repeat(n * 300);
            txn.put_record(&key(&format!("r{n}")), &stored("P1", &[("d01.note", &long)]))
                .expect("put");
        }
        txn.set_applied_sequence(17).expect("sequence");
        txn.commit().expect("commit");
        let mut snapshot = store.open_snapshot(usize::MAX).expect("snapshot");
        assert_eq!(snapshot.info().applied_sequence, 17);
        assert_eq!(snapshot.info().n_records, 30);
        let mut meta = DumpMeta::default();
        let mut loader = StoreLoader::create(Box::new(kv::MemKv::default())).expect("loader");
        while let Some(page) = snapshot.next_page(7).expect("page") {
            for (key, value) in page {
                meta.observe(&key, &value).expect("meta");
                loader.put(&key, &value).expect("put");
            }
        }
        drop(snapshot);
        assert_eq!(
            meta,
            DumpMeta {
                format: Some(FORMAT_VERSION),
                applied_sequence: 17,
                change_sequence: 0
            }
        );
        let restored = loader.finish().expect("finish");
        assert_eq!(everything(&restored), everything(&store));
        assert_eq!(
            restored.begin().record(&key("r29")).expect("read"),
            store.begin().record(&key("r29")).expect("read")
        );

        let full = kv::MemKv::default();
        let mut batch = WriteBatch::default();
        batch.put(b"r/D01\0x".to_vec(), b"\x01\x00".to_vec());
        full.apply(batch).expect("apply");
        let full: Box<dyn KvStore> = Box::new(full);
        assert!(matches!(StoreLoader::create(full).err(), Some(StoreError::NotEmpty)));
        let unfinished = kv::MemKv::default();
        let mut batch = WriteBatch::default();
        batch.put(b"r/D01\0x".to_vec(), b"\x01\x00".to_vec());
        unfinished.apply(batch).expect("apply");
        assert!(matches!(
            Store::open(Box::new(unfinished)).err(),
            Some(StoreError::Unfinished)
        ));
    }

    #[test]
    fn persons_are_paged_in_id_order() {
        let store = mem_store();
        let mut txn = store.begin();
        for person in ["P3", "P1", "P2", "P10"] {
            txn.add_member(&PersonId::new(person), &key(person)).expect("member");
        }
        txn.commit().expect("commit");
        let ids =
            |page: Vec<(PersonId, PersonHeader)>| -> Vec<PersonId> { page.into_iter().map(|(id, _)| id).collect() };
        let page = ids(store.persons_page(None, 3).expect("page"));
        assert_eq!(page, [PersonId::new("P1"), PersonId::new("P10"), PersonId::new("P2")]);
        let rest = ids(store.persons_page(page.last(), 3).expect("page"));
        assert_eq!(rest, [PersonId::new("P3")]);
    }

    #[test]
    fn sled_refuses_another_format() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let store = Store::open_sled(dir.path(), 1 << 24).expect("opens");
            let mut txn = store.begin();
            txn.put(layout::META_FORMAT.to_vec(), &(FORMAT_VERSION + 1))
                .expect("put");
            txn.commit().expect("commit");
            store.checkpoint().expect("checkpoint");
        }
        let error = Store::open_sled(dir.path(), 1 << 24).err().expect("refused");
        assert!(
            matches!(error, StoreError::IncompatibleFormat { found, expected } if found == expected + 1),
            "{error}"
        );
    }

    fn source_key(source: &str, record_id: &str) -> RecordKey {
        RecordKey {
            source: SourceId::parse(source).expect("well-formed"),
            record_id: record_id.into(),
        }
    }

    fn counts(store: &Store) -> Vec<(String, u64)> {
        store
            .records_by_source()
            .expect("counts")
            .into_iter()
            .map(|(source, n)| (source.to_string(), n))
            .collect()
    }

    #[test]
    fn records_are_counted_per_source_once_each() {
        let store = mem_store();
        let mut txn = store.begin();
        for (source, record_id) in [("D07", "1"), ("D01", "1"), ("D07", "2"), ("D07", "1")] {
            txn.put_record(&source_key(source, record_id), &stored("P1", &[("name", "a")]))
                .expect("put");
        }
        txn.commit().expect("commit");
        assert_eq!(
            counts(&store),
            vec![("D01".into(), 1), ("D07".into(), 2)],
            "a re-send counts once"
        );
        let mut txn = store.begin();
        txn.delete_record(&source_key("D01", "1")).expect("delete");
        txn.delete_record(&source_key("D07", "1")).expect("delete");
        txn.delete_record(&source_key("D07", "9"))
            .expect("delete of a record never stored");
        txn.commit().expect("commit");
        assert_eq!(
            counts(&store),
            vec![("D07".into(), 1)],
            "a source with none left is left out"
        );
        assert_eq!(store.stats().expect("stats").records_by_source.len(), 1);
    }

    #[test]
    fn a_format_4_store_is_upgraded_by_counting_its_records() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let store = Store::open_sled(dir.path(), 1 << 24).expect("opens");
            let mut txn = store.begin();
            // More records than one scan page, over two sources.
            for record_idx in 0..SCAN_PAGE + 10 {
                let source = if record_idx % 3 == 0 { "D03" } else { "D05" };
                txn.put_record(&source_key(source, &record_idx.to_string()), &stored("P1", &[]))
                    .expect("put");
            }
            txn.commit().expect("commit");
            // What a format 4 build left: the same records, no per-source counters.
            let mut txn = store.begin();
            for (key, _) in store.kv.scan(layout::META_SOURCE_RECORDS, None, 100).expect("scan") {
                txn.delete_small(key);
            }
            txn.put(layout::META_FORMAT.to_vec(), &UPGRADABLE_FORMAT_VERSION)
                .expect("put");
            txn.commit().expect("commit");
            assert!(counts(&store).is_empty());
            store.checkpoint().expect("checkpoint");
        }
        let store = Store::open_sled(dir.path(), 1 << 24).expect("upgrades");
        let n_d03 = (SCAN_PAGE as u64 + 10).div_ceil(3);
        assert_eq!(
            counts(&store),
            vec![("D03".into(), n_d03), ("D05".into(), SCAN_PAGE as u64 + 10 - n_d03)]
        );
        let format: u32 = decode(
            "format",
            &store.begin().get(layout::META_FORMAT).expect("read").expect("set"),
        )
        .expect("decodes");
        assert_eq!(format, FORMAT_VERSION);
        drop(store);
        let store = Store::open_sled(dir.path(), 1 << 24).expect("opens upgraded");
        assert_eq!(counts(&store).len(), 2, "the upgrade is kept");
    }

    /// A format 5 store (audit entries, no index) is indexed at open: queries by caller and by
    /// person find its entries, across more than one batch of the upgrade.
    #[test]
    fn a_format_5_store_is_upgraded_by_indexing_its_audit_log() {
        let dir = tempfile::tempdir().expect("temp dir");
        let at = 1_768_000_000_000;
        let n_entries = AUDIT_BATCH_ENTRIES_MAX + 10;
        let record = |idx: usize| AuditRecord {
            at: at + idx as i64,
            caller: if idx.is_multiple_of(2) { "portal" } else { "police" }.into(),
            purpose: "case-1".into(),
            action: "ProfileService/GetProfile".into(),
            outcome: "OK".into(),
            persons: vec![format!("P{}", idx % 7)],
            tags: vec!["name".to_string()].into(),
            shares: 1,
            detail: String::new(),
        };
        {
            let store = Store::open_sled(dir.path(), 1 << 24).expect("opens");
            let records: Vec<AuditRecord> = (0..n_entries).map(record).collect();
            store.append_audit(0, &records).expect("append");
            // What a format 5 build left: the same entries, no index.
            let mut txn = store.begin();
            for prefix in [layout::AUDIT_BY_CALLER, layout::AUDIT_BY_PERSON] {
                for (key, _) in store.kv.scan(prefix, None, usize::MAX).expect("scan") {
                    txn.delete_small(key);
                }
            }
            txn.put(layout::META_FORMAT.to_vec(), &5u32).expect("put");
            txn.commit().expect("commit");
            assert!(store.kv.scan(b"ui/", None, 1).expect("scan").is_empty());
            store.checkpoint().expect("checkpoint");
        }
        let store = Store::open_sled(dir.path(), 1 << 24).expect("upgrades");
        let format: u32 = decode(
            "format",
            &store.begin().get(layout::META_FORMAT).expect("read").expect("set"),
        )
        .expect("decodes");
        assert_eq!(format, FORMAT_VERSION);
        let by_caller = AuditQuery {
            caller: Some("police".into()),
            from: 0,
            to: i64::MAX,
            ..AuditQuery::default()
        };
        let page = store
            .audit_page(&by_caller, None, AUDIT_BATCH_ENTRIES_MAX)
            .expect("page");
        assert_eq!(page.entries.len(), n_entries / 2);
        assert!(page.entries.iter().all(|entry| entry.caller == "police"));
        let by_person = AuditQuery {
            person: Some("P3".into()),
            caller: Some("portal".into()),
            ..by_caller
        };
        let page = store
            .audit_page(&by_person, None, AUDIT_BATCH_ENTRIES_MAX)
            .expect("page");
        let expected: Vec<AuditRecord> = (0..n_entries)
            .filter(|idx| idx % 2 == 0 && idx % 7 == 3)
            .map(record)
            .collect();
        assert_eq!(page.entries, expected);
        drop(store);
        let store = Store::open_sled(dir.path(), 1 << 24).expect("opens upgraded");
        assert_eq!(
            store
                .kv
                .scan(layout::AUDIT_BY_CALLER, None, usize::MAX)
                .expect("scan")
                .len(),
            n_entries,
            "indexed once"
        );
    }

    #[test]
    fn no_blob_files_for_the_largest_records() {
        // The edge limits (tags per record, value length) and value parts keep every stored
        // item far below sled's blob threshold; write the largest records allowed and look.
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open_sled(dir.path(), 1 << 24).expect("opens");
        let limits = crate::config::LimitsConfig::default();
        let long_value = "长".repeat(limits.value_bytes_max / 3);
        for record_idx in 0..40 {
            let mut record = stored("P1", &[]);
            for tag_idx in 0..limits.tags_per_record_max {
                let value = TagValue {
                    raw: long_value.clone(),
                    standardized: long_value.clone(),
                };
                record.tags.insert(TagCode::new(format!("d01.t{tag_idx}")), value);
            }
            let mut txn = store.begin();
            txn.put_record(&key(&record_idx.to_string()), &record).expect("put");
            txn.commit().expect("commit");
        }
        store.checkpoint().expect("checkpoint");
        let blobs = dir.path().join("blobs");
        let n_blobs = std::fs::read_dir(&blobs).map(|entries| entries.count()).unwrap_or(0);
        assert_eq!(n_blobs, 0, "sled wrote values to never-fsynced blob files");
    }

    mod profile_groups {
        use super::*;
        use proptest::prelude::*;

        fn group() -> impl Strategy<Value = BTreeMap<TagCode, ProfileEntry>> {
            let sources = prop_oneof![Just("D01"), Just("D07"), Just("D63")];
            let entry = ("\\PC{0,12}", sources, "\\PC{0,10}", any::<i64>()).prop_map(
                |(value, source, record_id, observed_at)| ProfileEntry {
                    value,
                    source: SourceId::parse(source).expect("source"),
                    record_id,
                    observed_at,
                },
            );
            proptest::collection::btree_map("[a-z0-9._]{0,20}".prop_map(TagCode::new), entry, 0..20)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]
            /// The walk over a stored group reads what serde's decoding of it reads, and a
            /// mask keeps the entries it names.
            #[test]
            fn walking_a_group_reads_what_serde_reads(tags in group(), n_groups in 1usize..4, keep in any::<bool>()) {
                // A tag lives in one group.
                let mut groups = vec![BTreeMap::new(); n_groups];
                for (at, (tag, entry)) in tags.into_iter().enumerate() {
                    groups[at % n_groups].insert(tag, entry);
                }
                let mask: Vec<TagCode> = if keep {
                    groups.iter().flat_map(|group| group.keys()).step_by(2).cloned().collect()
                } else {
                    Vec::new()
                };
                let stored = StoredProfile::from_groups(&groups, &mask);
                let walked: Vec<(TagCode, ProfileEntry)> = stored
                    .entries()
                    .expect("walks")
                    .into_iter()
                    .map(|entry| {
                        let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).expect("text");
                        (
                            TagCode::new(entry.tag.to_string()),
                            ProfileEntry {
                                value: entry.value_text().expect("text").to_string(),
                                source: SourceId::parse(&text(entry.source)).expect("source"),
                                record_id: text(entry.record_id),
                                observed_at: entry.observed_at,
                            },
                        )
                    })
                    .collect();
                prop_assert_eq!(walked, stored.into_entries().expect("decodes"));
            }

            /// A group cut short is refused as damaged, bytes after its last entry are
            /// ignored (as serde's decoding ignores them); any other damage is read or
            /// refused, never a panic.
            #[test]
            fn a_damaged_group_is_refused(group in group(), cut in any::<prop::sample::Index>(), flip in any::<(prop::sample::Index, u8)>()) {
                let whole = encode(&group);
                let refused = |bytes: Vec<u8>| {
                    let stored = StoredProfile { groups: vec![bytes], tag_mask: Vec::new() };
                    matches!(stored.entries(), Err(StoreError::Corrupt { kind: "profile group", .. }))
                };
                let short = whole[..cut.index(whole.len())].to_vec();
                prop_assert!(refused(short));
                let mut longer = whole.clone();
                longer.push(0);
                let stored = StoredProfile { groups: vec![longer], tag_mask: Vec::new() };
                prop_assert_eq!(stored.entries().expect("read").len(), group.len());
                let mut flipped = whole.clone();
                let at = flip.0.index(flipped.len());
                flipped[at] ^= flip.1;
                let _ = StoredProfile { groups: vec![flipped], tag_mask: Vec::new() }.entries();
            }
        }
    }
}
