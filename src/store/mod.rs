//! The store: the only source of truth. Owns the key layout, the value encoding, the format
//! version and atomic write batches, over the narrow `KvStore` boundary. Knows nothing of how
//! records are resolved; the engine decides, the store keeps.

pub mod kv;
pub mod layout;

use crate::model::{EpochMillis, Finding, PersonId, RecordKey, SourceId, TagCode, TagValue};
use kv::{KvStore, WriteBatch};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The on-disk format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("person {0} not found")]
    PersonNotFound(PersonId),
    #[error("data directory has format {found}, this build reads {expected}")]
    IncompatibleFormat { found: u32, expected: u32 },
    #[error("stored value under a {kind} key cannot be decoded: {message}")]
    Corrupt { kind: &'static str, message: String },
    #[error(transparent)]
    Sled(#[from] sled::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A record as stored, without its tags (they are one key each).
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    Upserted,
    Deleted,
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
    pub applied_sequence: u64,
    pub change_sequence: u64,
    pub size_on_disk: u64,
}

pub struct Store {
    kv: Box<dyn KvStore>,
}

/// How many pairs a scan reads per round trip.
const SCAN_PAGE: usize = 4_096;

impl Store {
    /// Opens sled in `dir`, writing the format version into a new directory and refusing a
    /// directory written in another format.
    pub fn open_sled(dir: &Path, cache_capacity_bytes: u64) -> Result<Store, StoreError> {
        Store::open(Box::new(kv::SledKv::open(dir, cache_capacity_bytes)?))
    }

    pub fn open(kv: Box<dyn KvStore>) -> Result<Store, StoreError> {
        match kv.get(layout::META_FORMAT)? {
            Some(bytes) => {
                let found: u32 = decode("format", &bytes)?;
                if found != FORMAT_VERSION {
                    return Err(StoreError::IncompatibleFormat {
                        found,
                        expected: FORMAT_VERSION,
                    });
                }
            }
            None => {
                let mut batch = WriteBatch::default();
                batch.put(layout::META_FORMAT.to_vec(), encode(&FORMAT_VERSION));
                kv.apply(batch)?;
            }
        }
        Ok(Store { kv })
    }

    /// A read view, or the start of a write: reads see the transaction's own writes.
    pub fn begin(&self) -> Txn<'_> {
        Txn {
            store: self,
            pending: BTreeMap::new(),
        }
    }

    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.kv.checkpoint()
    }

    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let txn = self.begin();
        Ok(StoreStats {
            n_records: txn.counter(layout::META_N_RECORDS)?,
            n_persons: txn.counter(layout::META_N_PERSONS)?,
            applied_sequence: txn.counter(layout::META_APPLIED_SEQUENCE)?,
            change_sequence: txn.counter(layout::META_NEXT_CHANGE)?,
            size_on_disk: self.kv.size_on_disk()?,
        })
    }

    pub fn applied_sequence(&self) -> Result<u64, StoreError> {
        self.begin().counter(layout::META_APPLIED_SEQUENCE)
    }

    /// Change-feed entries with sequence >= `from`, at most `limit`.
    pub fn changes_from(&self, from: u64, limit: usize) -> Result<Vec<(u64, ChangeEvent)>, StoreError> {
        let start = layout::change(from);
        self.kv
            .scan(layout::CHANGES, Some(&start), limit)?
            .into_iter()
            .map(|(key, value)| {
                let sequence = u64::from_be_bytes(key[layout::CHANGES.len()..].try_into().map_err(|_| {
                    StoreError::Corrupt {
                        kind: "change",
                        message: "key is not 8 bytes".into(),
                    }
                })?);
                Ok((sequence, decode("change", &value)?))
            })
            .collect()
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
                let header: RecordHeader = decode("record", &value)?;
                let record_key = record_key_from(&parts, "record")?;
                Ok((record_key, header.person_id))
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
/// atomically. One writer at a time (the engine's), so there are no conflicts to detect yet.
pub struct Txn<'s> {
    store: &'s Store,
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Txn<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.pending.get(key) {
            Some(value) => Ok(value.clone()),
            None => self.store.kv.get(key),
        }
    }

    /// Every pair under `prefix`, merging pending writes over the store.
    fn scan_all(&self, prefix: &[u8]) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StoreError> {
        let mut merged = BTreeMap::new();
        let mut start: Option<Vec<u8>> = None;
        loop {
            let page = self.store.kv.scan(prefix, start.as_deref(), SCAN_PAGE)?;
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
        for (key, value) in self.pending.range(prefix.to_vec()..) {
            if !key.starts_with(prefix) {
                break;
            }
            match value {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        Ok(merged)
    }

    fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) {
        self.pending.insert(key, Some(encode(value)));
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.pending.insert(key, None);
    }

    fn counter(&self, key: &[u8]) -> Result<u64, StoreError> {
        match self.get(key)? {
            Some(bytes) => decode("counter", &bytes),
            None => Ok(0),
        }
    }

    fn add_to_counter(&mut self, key: &[u8], delta: i64) -> Result<(), StoreError> {
        let value = self.counter(key)?.checked_add_signed(delta).expect("counters never go below zero");
        self.put(key.to_vec(), &value);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn commit(self) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for (key, value) in self.pending {
            match value {
                Some(value) => batch.put(key, value),
                None => batch.delete(key),
            }
        }
        self.store.kv.apply(batch)
    }

    // --- records ---

    pub fn record_header(&self, key: &RecordKey) -> Result<Option<RecordHeader>, StoreError> {
        self.get(&layout::record(key))?
            .map(|bytes| decode("record", &bytes))
            .transpose()
    }

    pub fn record_tags(&self, key: &RecordKey) -> Result<BTreeMap<TagCode, TagValue>, StoreError> {
        let prefix = layout::record_tags_prefix(key);
        self.scan_all(&prefix)?
            .into_iter()
            .map(|(full, value)| {
                let tag = std::str::from_utf8(&full[prefix.len()..]).map_err(|_| StoreError::Corrupt {
                    kind: "record tag",
                    message: "tag code is not UTF-8".into(),
                })?;
                Ok((TagCode::new(tag), decode("record tag", &value)?))
            })
            .collect()
    }

    /// Writes a record version: the header and its tags, replacing any earlier version.
    pub fn put_record(
        &mut self,
        key: &RecordKey,
        header: &RecordHeader,
        tags: &BTreeMap<TagCode, TagValue>,
    ) -> Result<(), StoreError> {
        let existed = self.record_header(key)?.is_some();
        if existed {
            for old_tag in self.record_tags(key)?.into_keys() {
                if !tags.contains_key(&old_tag) {
                    self.delete(layout::record_tag(key, &old_tag));
                }
            }
        } else {
            self.add_to_counter(layout::META_N_RECORDS, 1)?;
        }
        self.put(layout::record(key), header);
        for (tag, value) in tags {
            self.put(layout::record_tag(key, tag), value);
        }
        Ok(())
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

    pub fn add_member(&mut self, person_id: &PersonId, key: &RecordKey) -> Result<(), StoreError> {
        if self.person(person_id)?.is_none() {
            self.add_to_counter(layout::META_N_PERSONS, 1)?;
            self.put(
                layout::person(person_id),
                &PersonHeader {
                    version: 0,
                    n_records: 0,
                },
            );
        }
        self.put(layout::member(person_id, key), &());
        Ok(())
    }

    pub fn remove_member(&mut self, person_id: &PersonId, key: &RecordKey) {
        self.delete(layout::member(person_id, key));
    }

    pub fn profile(&self, person_id: &PersonId) -> Result<BTreeMap<TagCode, ProfileEntry>, StoreError> {
        let prefix = layout::profile_prefix(person_id);
        self.scan_all(&prefix)?
            .into_iter()
            .map(|(full, value)| {
                let tag = std::str::from_utf8(&full[prefix.len()..]).map_err(|_| StoreError::Corrupt {
                    kind: "profile tag",
                    message: "tag code is not UTF-8".into(),
                })?;
                Ok((TagCode::new(tag), decode("profile tag", &value)?))
            })
            .collect()
    }

    /// Replaces the profile with `profile` (writing only the tags that changed), sets the
    /// record count, bumps the version and appends to the change feed. A person left with no
    /// records is deleted. Returns the new version.
    pub fn write_person(
        &mut self,
        person_id: &PersonId,
        n_records: u32,
        profile: &BTreeMap<TagCode, ProfileEntry>,
    ) -> Result<u64, StoreError> {
        let header = self.person(person_id)?.ok_or_else(|| StoreError::PersonNotFound(person_id.clone()))?;
        let old_profile = self.profile(person_id)?;
        for tag in old_profile.keys() {
            if !profile.contains_key(tag) {
                self.delete(layout::profile_tag(person_id, tag));
            }
        }
        for (tag, entry) in profile {
            if old_profile.get(tag) != Some(entry) {
                self.put(layout::profile_tag(person_id, tag), entry);
            }
        }
        let version = header.version + 1;
        let kind = if n_records == 0 {
            self.delete(layout::person(person_id));
            self.add_to_counter(layout::META_N_PERSONS, -1)?;
            ChangeKind::Deleted
        } else {
            self.put(layout::person(person_id), &PersonHeader { version, n_records });
            ChangeKind::Upserted
        };
        let change_sequence = self.counter(layout::META_NEXT_CHANGE)? + 1;
        self.put(layout::META_NEXT_CHANGE.to_vec(), &change_sequence);
        self.put(
            layout::change(change_sequence),
            &ChangeEvent {
                person_id: person_id.clone(),
                version,
                kind,
            },
        );
        Ok(version)
    }

    // --- exact candidate keys ---

    pub fn person_for_id_number(&self, id_number: &str) -> Result<Option<PersonId>, StoreError> {
        self.get(&layout::id_number_key(id_number))?
            .map(|bytes| decode("id number key", &bytes))
            .transpose()
    }

    pub fn set_id_number_key(&mut self, id_number: &str, person_id: &PersonId) {
        self.put(layout::id_number_key(id_number), person_id);
    }

    pub fn remove_id_number_key(&mut self, id_number: &str) {
        self.delete(layout::id_number_key(id_number));
    }

    // --- progress ---

    pub fn set_applied_sequence(&mut self, sequence: u64) {
        self.put(layout::META_APPLIED_SEQUENCE.to_vec(), &sequence);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(record_id: &str) -> RecordKey {
        RecordKey {
            source: SourceId::parse("D01").expect("well-formed"),
            record_id: record_id.into(),
        }
    }

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<TagCode, TagValue> {
        pairs
            .iter()
            .map(|(tag, value)| {
                (
                    TagCode::new(*tag),
                    TagValue {
                        raw: value.to_string(),
                        standardized: value.to_string(),
                    },
                )
            })
            .collect()
    }

    fn header(person: &str) -> RecordHeader {
        RecordHeader {
            person_id: PersonId::new(person),
            observed_at: 0,
            id_number: None,
            findings: vec![],
            sequence: 1,
        }
    }

    #[test]
    fn replacing_a_record_drops_its_old_tags() {
        let store = Store::open(Box::new(kv::MemKv::default())).expect("opens");
        let mut txn = store.begin();
        txn.put_record(&key("1"), &header("P1"), &tags(&[("name", "a"), ("phone", "1")]))
            .expect("put");
        txn.commit().expect("commit");
        let mut txn = store.begin();
        txn.put_record(&key("1"), &header("P1"), &tags(&[("name", "b")])).expect("put");
        assert_eq!(txn.record_tags(&key("1")).expect("read"), tags(&[("name", "b")]));
        txn.commit().expect("commit");
        assert_eq!(store.begin().record_tags(&key("1")).expect("read"), tags(&[("name", "b")]));
        assert_eq!(store.stats().expect("stats").n_records, 1);
    }

    /// Regression (issue 2): paging must not skip keys that extend the last key of a page
    /// (record "k10" sorts between "k1" and "k2").
    #[test]
    fn mapping_pages_cover_every_record() {
        let store = Store::open(Box::new(kv::MemKv::default())).expect("opens");
        let mut txn = store.begin();
        for n in 0..250 {
            txn.put_record(&key(&format!("k{n}")), &header("P1"), &tags(&[("name", "a")]))
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
        assert_eq!(seen.iter().collect::<std::collections::BTreeSet<_>>().len(), 250);
    }

    #[test]
    fn uncommitted_writes_are_invisible_to_others() {
        let store = Store::open(Box::new(kv::MemKv::default())).expect("opens");
        let mut txn = store.begin();
        txn.put_record(&key("1"), &header("P1"), &tags(&[("name", "a")])).expect("put");
        assert!(txn.record_header(&key("1")).expect("read").is_some());
        assert!(store.begin().record_header(&key("1")).expect("read").is_none());
        drop(txn);
        assert!(store.begin().record_header(&key("1")).expect("read").is_none());
    }

    #[test]
    fn sled_refuses_another_format() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let kv = kv::SledKv::open(dir.path(), 1 << 24).expect("opens");
            let mut batch = WriteBatch::default();
            batch.put(layout::META_FORMAT.to_vec(), encode(&(FORMAT_VERSION + 1)));
            kv.apply(batch).expect("writes");
            kv.checkpoint().expect("checkpoint");
        }
        let error = Store::open_sled(dir.path(), 1 << 24).err().expect("refused");
        assert!(matches!(error, StoreError::IncompatibleFormat { found: 2, expected: 1 }), "{error}");
    }

    #[test]
    fn no_blob_files_for_the_largest_records() {
        // The limits of the edge (max tags, max value length) keep every stored value far below
        // sled's blob threshold; write the largest records allowed and look.
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open_sled(dir.path(), 1 << 24).expect("opens");
        let limits = crate::config::LimitsConfig::default();
        let long_value = "长".repeat(limits.value_bytes_max / 3);
        for record_idx in 0..40 {
            let mut txn = store.begin();
            let record_tags: BTreeMap<TagCode, TagValue> = (0..limits.tags_per_record_max)
                .map(|tag_idx| {
                    (
                        TagCode::new(format!("d01.t{tag_idx}")),
                        TagValue {
                            raw: long_value.clone(),
                            standardized: long_value.clone(),
                        },
                    )
                })
                .collect();
            txn.put_record(&key(&record_idx.to_string()), &header("P1"), &record_tags)
                .expect("put");
            txn.commit().expect("commit");
        }
        store.checkpoint().expect("checkpoint");
        let blobs = dir.path().join("blobs");
        let n_blobs = std::fs::read_dir(&blobs).map(|entries| entries.count()).unwrap_or(0);
        assert_eq!(n_blobs, 0, "sled wrote values to never-fsynced blob files");
    }
}
