//! The audit log's keys: entries by time (`u/<at><serial>`), never rewritten; an index of them
//! by caller (`ui/c/<caller>\0<at><serial>`) and by person (`ui/p/<person>\0<at><serial>`),
//! written and deleted in the same batch as the entry; and each month's share counters per
//! caller (`m/shares/<YYYY-MM>\0<caller>`), written in the same batch as the entries they
//! count and kept when entries are pruned. One entry and its index keys go in through
//! `put_audit_entry`, whoever writes it: the engine's audit writer, in groups with serials from
//! `m/audit_serial`, and the write path, one entry per change in the change's transaction with
//! serials `WRITE_PATH_AUDIT_SERIALS | sequence`. Long tag lists are stored once a day, by
//! day and hash (`ul/<day><hash>`). Entries older than the retention are pruned in bounded
//! batches (`prune_audit`), and with them the tag lists of the days they leave empty. Decides
//! nothing about what is audited, nor when entries expire.

use super::kv::KvStore;
use super::{decode, layout, Store, StoreError, Txn};
use crate::model::EpochMillis;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

/// One audited call: who, why, what, on whom, with which tags, and how it ended. Holds ids and
/// tag codes, never a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at: EpochMillis,
    /// The caller id; `unauthenticated` when no valid token came.
    pub caller: String,
    pub purpose: String,
    /// The method, e.g. `ProfileService/GetProfile`.
    pub action: String,
    /// The gRPC status code name (`OK`, `PERMISSION_DENIED`...), with the refusal's message.
    pub outcome: String,
    pub persons: Vec<String>,
    /// The tags returned (reads) or asked for.
    pub tags: TagList,
    /// Profiles shared to the caller by this call (each person returned counts once).
    pub shares: u64,
    /// What else identifies the call: a batch and its sequence, a record key, a directory.
    pub detail: String,
}

/// The tags an entry names, in an `Arc`: a reader's reads of full profiles name the same two
/// thousand tags call after call, and the reads that take their list from one `TagList` (see
/// `api::audit::RecentTagLists`) share its one allocation and hash it once. Stored, sent and
/// compared as the plain list of tags.
#[derive(Clone, Default)]
pub struct TagList(Arc<TagListInner>);

#[derive(Default)]
struct TagListInner {
    tags: Vec<String>,
    /// `tag_list_hash` of `tags`, once asked for.
    hash: OnceLock<[u8; 16]>,
}

impl TagList {
    /// The hash of the list (`tag_list_hash`), computed at its first use.
    fn hash(&self) -> [u8; 16] {
        *self.0.hash.get_or_init(|| tag_list_hash(&self.0.tags))
    }

    /// Whether the two are one list, not two equal ones.
    #[cfg(test)]
    pub fn is_same_list(&self, other: &TagList) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Whether this list holds exactly `tags`, in order.
    pub fn holds<'t>(&self, tags: impl ExactSizeIterator<Item = &'t str>) -> bool {
        self.0.tags.len() == tags.len() && self.0.tags.iter().zip(tags).all(|(held, tag)| held == tag)
    }
}

impl From<Vec<String>> for TagList {
    fn from(tags: Vec<String>) -> TagList {
        TagList(Arc::new(TagListInner {
            tags,
            hash: OnceLock::new(),
        }))
    }
}

impl FromIterator<String> for TagList {
    fn from_iter<I: IntoIterator<Item = String>>(tags: I) -> TagList {
        TagList::from(tags.into_iter().collect::<Vec<_>>())
    }
}

impl std::ops::Deref for TagList {
    type Target = [String];

    fn deref(&self) -> &[String] {
        &self.0.tags
    }
}

impl PartialEq for TagList {
    fn eq(&self, other: &TagList) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.tags == other.0.tags
    }
}

impl Eq for TagList {}

impl std::fmt::Debug for TagList {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.tags.fmt(formatter)
    }
}

impl Serialize for TagList {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.tags.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for TagList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<TagList, D::Error> {
        Vec::<String>::deserialize(deserializer).map(TagList::from)
    }
}

impl AuditRecord {
    /// The keys its entry writes (continuation parts of a long entry aside): the entry, its
    /// caller's index key and one index key per person it names.
    pub fn n_keys(&self) -> usize {
        2 + self.persons.len()
    }
}

/// What a query of the audit log asks for. Empty filters match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub caller: Option<String>,
    pub person: Option<String>,
    /// Inclusive, in milliseconds since the epoch.
    pub from: EpochMillis,
    /// Exclusive.
    pub to: EpochMillis,
}

impl AuditQuery {
    /// The keys the query reads, in time order: the index of its person (its caller, if any,
    /// is then a filter), else the index of its caller, else every entry.
    pub fn scan_prefix(&self) -> Vec<u8> {
        match (&self.person, &self.caller) {
            (Some(person), _) => layout::audit_person_prefix(person),
            (None, Some(caller)) => layout::audit_caller_prefix(caller),
            (None, None) => layout::AUDIT.to_vec(),
        }
    }

    /// Whether `token` is a page's `next` that this query could have given: a key of the
    /// family it reads, and of its caller or person, just past an entry's place.
    pub fn accepts_token(&self, token: &[u8]) -> bool {
        token
            .strip_prefix(self.scan_prefix().as_slice())
            .is_some_and(|rest| rest.len() == layout::AUDIT_PLACE_BYTES + 1 && rest[layout::AUDIT_PLACE_BYTES] == 0)
    }

    fn matches(&self, record: &AuditRecord) -> bool {
        self.caller.as_ref().is_none_or(|caller| *caller == record.caller)
            && self
                .person
                .as_ref()
                .is_none_or(|person| record.persons.iter().any(|held| held == person))
    }
}

/// A page of a query: the entries found, and where the next page starts (`None` at the end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    pub entries: Vec<AuditRecord>,
    pub next: Option<Vec<u8>>,
}

/// One caller's shares in one month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareCount {
    pub month: String,
    pub caller: String,
    pub n_shares: u64,
    pub n_calls: u64,
}

/// The month an entry counts in, in China Standard Time (UTC+8), the province's calendar.
pub fn month_of(at: EpochMillis) -> String {
    let offset = chrono::FixedOffset::east_opt(8 * 3600).expect("a valid offset");
    chrono::DateTime::from_timestamp_millis(at)
        .map(|time| time.with_timezone(&offset).format("%Y-%m").to_string())
        .unwrap_or_else(|| "0000-00".into())
}

/// How many audit entries (or index keys) one query reads at most before it returns a page
/// (possibly short) with a token to go on: a query over a year of reads must not hold a thread
/// for minutes.
pub const AUDIT_SCAN_MAX: usize = 50_000;

/// Entries one batch of pruning (or of indexing, at the upgrade to format 6) deletes or
/// indexes at most, so that it never holds the store long.
pub const AUDIT_BATCH_ENTRIES_MAX: usize = 10_000;

/// Keys one such batch writes at most, about (an entry may name thousands of persons): it ends
/// after the entry that reaches it.
pub const AUDIT_BATCH_KEYS_MAX: usize = 100_000;

/// Pairs one read of the audit keys takes.
const AUDIT_SCAN_PAGE: usize = 1_024;

/// What pruning or indexing did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditBatchDone {
    pub n_entries: u64,
    pub n_index_keys: u64,
    /// Shared tag lists deleted (pruning): those of the days before the cutoff's day, whose
    /// entries are all pruned.
    pub n_tag_lists: u64,
    /// No entry is left to do (before the cutoff, when pruning), nor a tag list of a day
    /// before the cutoff's.
    pub finished: bool,
}

/// Writes one audit entry under `u/<at><serial>` and its index keys (by its caller, and by
/// each person it names) into `txn`, so that they commit together. Counts no shares (that is
/// `Store::append_audit`'s, for the entries of the audit writer). `serial` orders entries of the
/// same millisecond and must be unique: the audit writer takes them from `m/audit_serial`;
/// another writer needs a space of its own (a high bit set, say).
pub fn put_audit_entry(txn: &mut Txn<'_>, serial: u64, record: &AuditRecord) -> Result<(), StoreError> {
    put_entry(txn, serial, record, None)
}

/// `put_audit_entry`; with `stored_tags`, the entry's tag list is the one the store holds under
/// that hash for the entry's day (`ul/<day><hash>`, written by an earlier entry), and
/// `record.tags` is not read.
fn put_entry(
    txn: &mut Txn<'_>,
    serial: u64,
    record: &AuditRecord,
    stored_tags: Option<[u8; 16]>,
) -> Result<(), StoreError> {
    let tags = if let Some(hash) = stored_tags {
        if !txn.holds(&layout::audit_tag_list(layout::audit_day(record.at), &hash))? {
            return Err(StoreError::Corrupt {
                kind: "audit entry",
                message: "an audit journal entry names a shared tag list the store lacks".into(),
            });
        }
        StoredTags::Shared(hash)
    } else if let Some(hash) = shared_tag_list_hash(&record.tags) {
        let key = layout::audit_tag_list(layout::audit_day(record.at), &hash);
        if !txn.holds(&key)? {
            txn.put(key, &record.tags)?;
        }
        StoredTags::Shared(hash)
    } else {
        StoredTags::Listed(record.tags.to_vec())
    };
    let stored = StoredEntry {
        at: record.at,
        caller: &record.caller,
        purpose: &record.purpose,
        action: &record.action,
        outcome: &record.outcome,
        persons: &record.persons,
        tags,
        shares: record.shares,
        detail: &record.detail,
    };
    txn.put(layout::audit(record.at, serial), &(ENTRY_WITH_SHARED_TAGS, stored))?;
    for key in index_keys(&layout::audit(record.at, serial), record) {
        txn.put_small(key, &())?;
    }
    Ok(())
}

/// A tag list this long or longer (a profile read returns hundreds, the same for every read of
/// one reader's grant) is stored once a day, under its day and hash (`ul/<day><hash>`), and the
/// day's entries refer to it: an entry of a full-profile read takes about a hundred bytes
/// instead of some thirty thousand. Shorter lists are stored in the entry.
const SHARED_TAG_LIST_MIN: usize = 16;

/// The first byte of an entry stored by this version: the entry follows, its tag list inline
/// or shared. An entry stored before starts with its time as a zigzag varint, which is never 1
/// for a time after 1970 (1 encodes -1 ms).
const ENTRY_WITH_SHARED_TAGS: u8 = 1;

#[derive(Serialize)]
struct StoredEntry<'a> {
    at: EpochMillis,
    caller: &'a str,
    purpose: &'a str,
    action: &'a str,
    outcome: &'a str,
    persons: &'a [String],
    tags: StoredTags,
    shares: u64,
    detail: &'a str,
}

#[derive(Deserialize)]
struct ReadEntry {
    at: EpochMillis,
    caller: String,
    purpose: String,
    action: String,
    outcome: String,
    persons: Vec<String>,
    tags: StoredTags,
    shares: u64,
    detail: String,
}

#[derive(Serialize, Deserialize)]
enum StoredTags {
    Listed(Vec<String>),
    /// The hash of a list stored under `ul/<day><hash>`, the day being the entry's (or, for an
    /// entry from before format 8, under `ut/<hash>`).
    Shared([u8; 16]),
}

/// The hash a tag list is stored under (`ul/<day><hash>`), for a list long enough to be stored
/// once a day and shared; `None` for a list kept in its entry.
pub fn shared_tag_list_hash(tags: &TagList) -> Option<[u8; 16]> {
    (tags.len() >= SHARED_TAG_LIST_MIN).then(|| tags.hash())
}

/// The first 16 bytes of the SHA-256 of the tags, each ended by a newline.
fn tag_list_hash(tags: &[String]) -> [u8; 16] {
    use sha2::Digest;
    // One update of the whole list: two small updates a tag cost more than the hashing.
    let mut listed = Vec::with_capacity(tags.iter().map(|tag| tag.len() + 1).sum());
    for tag in tags {
        listed.extend_from_slice(tag.as_bytes());
        listed.push(b'\n');
    }
    let digest = sha2::Sha256::digest(&listed);
    let mut hash = [0; 16];
    hash.copy_from_slice(&digest[..16]);
    hash
}

/// Days before an entry's own that `list_of_before_format_8` looks through.
const FORMAT_7_JOURNAL_DAYS: u32 = 31;

/// The stored list with `hash` that an entry of `day` from a journal written before format 8
/// names: format 7's undated list, or the list of an earlier day, back to
/// `FORMAT_7_JOURNAL_DAYS` days (a journal holds what the store had not applied, minutes at
/// most in a running service). Looked for only when the day's own list is missing.
fn list_of_before_format_8(txn: &Txn<'_>, day: u32, hash: &[u8; 16]) -> Result<Option<Vec<u8>>, StoreError> {
    if let Some(undated) = txn.get(&layout::undated_audit_tag_list(hash))? {
        return Ok(Some(undated));
    }
    for earlier in (day.saturating_sub(FORMAT_7_JOURNAL_DAYS)..day).rev() {
        if let Some(list) = txn.get(&layout::audit_tag_list(earlier, hash))? {
            return Ok(Some(list));
        }
    }
    Ok(None)
}

#[cfg(test)]
impl Store {
    /// The day of each shared tag list kept, in key order.
    pub(crate) fn audit_tag_list_days(&self) -> Result<Vec<u32>, StoreError> {
        let prefix = layout::AUDIT_TAG_LISTS;
        Ok(self
            .kv
            .scan(prefix, None, usize::MAX)?
            .into_iter()
            .map(|(key, _)| u32::from_be_bytes(key[prefix.len()..prefix.len() + 4].try_into().expect("4 bytes")))
            .collect())
    }
}

/// The entry stored under `entry_key` as `value` (by this version, or before, as a bare
/// `AuditRecord`), with a shared tag list read back; `None` when its list is gone because
/// pruning deleted the entry too since `value` was read (reads are not snapshots).
fn read_entry(txn: &Txn<'_>, entry_key: &[u8], value: &[u8]) -> Result<Option<AuditRecord>, StoreError> {
    let (mut record, shared) = decode_entry(value)?;
    if let Some(hash) = shared {
        let dated = txn.get(&layout::audit_tag_list(layout::audit_day(record.at), &hash))?;
        let stored = match dated {
            Some(bytes) => Some(bytes),
            None => txn.get(&layout::undated_audit_tag_list(&hash))?,
        };
        record.tags = match stored {
            Some(bytes) => decode("audit tag list", &bytes)?,
            None if !txn.holds(entry_key)? => return Ok(None),
            None => {
                return Err(StoreError::Corrupt {
                    kind: "audit entry",
                    message: "its shared tag list is missing".into(),
                })
            }
        };
    }
    Ok(Some(record))
}

/// An entry as stored, and the hash of its shared tag list if it has one (its `tags` are then
/// empty): enough for its index keys, without reading the list.
fn decode_entry(value: &[u8]) -> Result<(AuditRecord, Option<[u8; 16]>), StoreError> {
    if value.first() != Some(&ENTRY_WITH_SHARED_TAGS) {
        return Ok((decode("audit entry", value)?, None));
    }
    let (_, entry): (u8, ReadEntry) = decode("audit entry", value)?;
    let (tags, shared) = match entry.tags {
        StoredTags::Listed(tags) => (tags, None),
        StoredTags::Shared(hash) => (Vec::new(), Some(hash)),
    };
    let record = AuditRecord {
        at: entry.at,
        caller: entry.caller,
        purpose: entry.purpose,
        action: entry.action,
        outcome: entry.outcome,
        persons: entry.persons,
        tags: tags.into(),
        shares: entry.shares,
        detail: entry.detail,
    };
    Ok((record, shared))
}

/// The index keys of the entry stored under `entry_key`.
fn index_keys(entry_key: &[u8], record: &AuditRecord) -> Vec<Vec<u8>> {
    let place = &entry_key[layout::AUDIT.len()..];
    let with_place = |mut prefix: Vec<u8>| {
        prefix.extend_from_slice(place);
        prefix
    };
    std::iter::once(with_place(layout::audit_caller_prefix(&record.caller)))
        .chain(
            record
                .persons
                .iter()
                .map(|person| with_place(layout::audit_person_prefix(person))),
        )
        .collect()
}

impl Store {
    /// The serial the next audit entry takes (serials order entries of the same millisecond).
    pub fn next_audit_serial(&self) -> Result<u64, StoreError> {
        self.begin().counter(layout::META_AUDIT_SERIAL)
    }

    /// Appends `records` (serials from `first_serial` on) and adds their shares to the month
    /// counters, in one atomic batch.
    pub fn append_audit(&self, first_serial: u64, records: &[AuditRecord]) -> Result<(), StoreError> {
        self.append_audit_entries(first_serial, records.iter().map(|record| (record, None)), None)
    }

    /// `append_audit` of the entries of audit journal groups up to `journal_sequence`, which
    /// is recorded in the same batch. An entry with a hash has its tag list in the store
    /// already, under that hash (`put_entry`).
    pub fn append_audit_journaled(
        &self,
        first_serial: u64,
        records: &[(AuditRecord, Option<[u8; 16]>)],
        journal_sequence: u64,
    ) -> Result<(), StoreError> {
        self.append_audit_entries(
            first_serial,
            records.iter().map(|(record, stored_tags)| (record, *stored_tags)),
            Some(journal_sequence),
        )
    }

    /// The sequence of the last audit journal group applied; 0 before the first.
    pub fn audit_journal_applied(&self) -> Result<u64, StoreError> {
        self.begin().counter(layout::META_AUDIT_JOURNAL_APPLIED)
    }

    /// Writes the new shared tag lists, then the entries, then, in one atomic batch, the
    /// month's share counters, the next
    /// serial and the journal sequence. The entries go first and one key at a time
    /// (`Txn::commit_each`): a group of searches writes thousands of keys, and an atomic batch
    /// of them would hold every read of the store off until all were in (sled's batches take
    /// its process-wide lock exclusively). Writing an entry twice writes the same keys and
    /// values, so a crash before the atomic batch, which has the journal group applied again
    /// at the next start, leaves nothing twice; the share counters, which are not idempotent,
    /// are only in the atomic batch. A snapshot opens between groups only
    /// (`Store::open_snapshot` takes the same lock), so a backup holds an entry only with its
    /// counters.
    fn append_audit_entries<'r>(
        &self,
        first_serial: u64,
        records: impl Iterator<Item = (&'r AuditRecord, Option<[u8; 16]>)>,
        journal_sequence: Option<u64>,
    ) -> Result<(), StoreError> {
        let _group = self.audit_groups.lock().expect("lock poisoned");
        let records: Vec<_> = records.collect();
        // New shared tag lists go in before the entries naming them, so a query reading while
        // the entries go in finds each entry's list.
        let mut lists = self.begin();
        for (record, stored_tags) in &records {
            let day = layout::audit_day(record.at);
            match stored_tags {
                Some(hash) => {
                    let key = layout::audit_tag_list(day, hash);
                    if lists.holds(&key)? {
                        continue;
                    }
                    // A journal written before format 8 names a list by hash whatever its day:
                    // a list format 7 kept undated, or one an earlier entry of the journal
                    // held in full, kept now under that entry's day. The day gets its copy.
                    if let Some(earlier) = list_of_before_format_8(&lists, day, hash)? {
                        let tags: Vec<String> = decode("audit tag list", &earlier)?;
                        lists.put(key, &tags)?;
                    }
                }
                None => {
                    if let Some(hash) = shared_tag_list_hash(&record.tags) {
                        let key = layout::audit_tag_list(day, &hash);
                        if !lists.holds(&key)? {
                            lists.put(key, &record.tags)?;
                        }
                    }
                }
            }
        }
        lists.commit_each()?;
        let mut entries = self.begin();
        let mut shares: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        let mut n_records = 0;
        for (offset, (record, stored_tags)) in records.into_iter().enumerate() {
            n_records += 1;
            put_entry(&mut entries, first_serial + offset as u64, record, stored_tags)?;
            if record.shares > 0 {
                let counts = shares.entry((month_of(record.at), record.caller.clone())).or_default();
                counts.0 += record.shares;
                counts.1 += 1;
            }
        }
        entries.commit_each()?;
        let mut txn = self.begin();
        if let Some(sequence) = journal_sequence {
            txn.put_small(layout::META_AUDIT_JOURNAL_APPLIED.to_vec(), &sequence)?;
        }
        for ((month, caller), (n_shares, n_calls)) in shares {
            let key = layout::share_count(&month, &caller);
            let (before_shares, before_calls): (u64, u64) = match txn.get(&key)? {
                Some(bytes) => decode("share count", &bytes)?,
                None => (0, 0),
            };
            txn.put_small(key, &(before_shares + n_shares, before_calls + n_calls))?;
        }
        txn.put_small(layout::META_AUDIT_SERIAL.to_vec(), &(first_serial + n_records))?;
        txn.commit()
    }

    /// The entries matching `query`, oldest first, from `after` (a `next` of an earlier page of
    /// the same query) on: at most `page_size`, reading at most `AUDIT_SCAN_MAX` keys. A query
    /// by person or caller reads that index's keys of its time range and each entry they point
    /// to; a query with neither reads the entries of its time range.
    pub fn audit_page(
        &self,
        query: &AuditQuery,
        after: Option<&[u8]>,
        page_size: usize,
    ) -> Result<AuditPage, StoreError> {
        let txn = self.begin();
        let prefix = query.scan_prefix();
        let by_index = prefix != layout::AUDIT;
        let first = layout::audit_index(&prefix, query.from, 0);
        let end = layout::audit_index(&prefix, query.to, 0);
        let mut start = match after {
            Some(after) if after > first.as_slice() => after.to_vec(),
            _ => first,
        };
        let mut entries = Vec::new();
        let mut n_scanned = 0usize;
        loop {
            let page = self.kv.scan(&prefix, Some(&start), AUDIT_SCAN_PAGE)?;
            let exhausted = page.len() < AUDIT_SCAN_PAGE;
            for (key, stored) in page {
                if key >= end {
                    return Ok(AuditPage { entries, next: None });
                }
                let mut next = key.clone();
                next.push(0);
                start = next;
                n_scanned += 1;
                let entry = if by_index {
                    // An entry pruned since its index key was read is gone; so is a key of
                    // another person or caller whose id extends this one's.
                    match layout::audit_entry_of_index(&key, &prefix) {
                        Some(entry_key) => txn.get(&entry_key)?.map(|value| (entry_key, value)),
                        None => None,
                    }
                } else {
                    Some((key.clone(), txn.join_parts(&key, &stored)?))
                };
                if let Some((entry_key, value)) = entry {
                    // `None`: pruned, with its day's tag list, since it was read.
                    if let Some(record) = read_entry(&txn, &entry_key, &value)? {
                        if query.matches(&record) {
                            entries.push(record);
                        }
                    }
                }
                if entries.len() == page_size || n_scanned == AUDIT_SCAN_MAX {
                    return Ok(AuditPage {
                        entries,
                        next: Some(start),
                    });
                }
            }
            if exhausted {
                return Ok(AuditPage { entries, next: None });
            }
        }
    }

    /// Deletes the oldest audit entries written before `before`, each with its index keys, in
    /// one atomic batch of at most `AUDIT_BATCH_ENTRIES_MAX` entries (and about
    /// `AUDIT_BATCH_KEYS_MAX` keys). Entries are found by the time in their key, whoever wrote
    /// them, and read for the index keys they have. The share counters stay.
    pub fn prune_audit(&self, before: EpochMillis) -> Result<AuditBatchDone, StoreError> {
        let end = layout::audit(before, 0);
        let mut txn = self.begin();
        let mut done = AuditBatchDone::default();
        let mut n_keys = 0usize;
        let mut start: Option<Vec<u8>> = None;
        'scan: loop {
            let page = self.kv.scan(layout::AUDIT, start.as_deref(), AUDIT_SCAN_PAGE)?;
            let exhausted = page.len() < AUDIT_SCAN_PAGE;
            for (key, stored) in page {
                if key >= end {
                    done.finished = true;
                    break 'scan;
                }
                let (record, _) = decode_entry(&txn.join_parts(&key, &stored)?)?;
                for index_key in index_keys(&key, &record) {
                    txn.delete_small(index_key);
                    done.n_index_keys += 1;
                }
                n_keys += record.n_keys();
                txn.delete(key.clone())?;
                done.n_entries += 1;
                if done.n_entries as usize == AUDIT_BATCH_ENTRIES_MAX || n_keys >= AUDIT_BATCH_KEYS_MAX {
                    break 'scan;
                }
                let mut next = key;
                next.push(0);
                start = Some(next);
            }
            if exhausted {
                done.finished = true;
                break;
            }
        }
        if done.finished {
            // Every entry before the cutoff is gone with this batch: so are the uses of the
            // tag lists of the days before the cutoff's day.
            done.finished = self.prune_tag_lists(&mut txn, before, &mut done.n_tag_lists, n_keys)?;
        }
        txn.commit()?;
        Ok(done)
    }

    /// Deletes, into `txn`, the shared tag lists of the days before `before`'s day, whose
    /// entries are all pruned, and the undated lists of format 7 once `before` has passed the
    /// upgrade to format 8 (every entry that could name them is pruned then), as long as the
    /// batch holds fewer than `AUDIT_BATCH_KEYS_MAX` keys (`n_keys` so far). Whether none is
    /// left.
    fn prune_tag_lists(
        &self,
        txn: &mut Txn<'_>,
        before: EpochMillis,
        n_deleted: &mut u64,
        mut n_keys: usize,
    ) -> Result<bool, StoreError> {
        let end = layout::audit_tag_lists_of_day(layout::audit_day(before));
        let undated_until: Option<EpochMillis> = txn
            .get(layout::META_UNDATED_TAG_LISTS_UNTIL)?
            .map(|bytes| decode("undated tag lists' time", &bytes))
            .transpose()?;
        let undated_prunable = undated_until.is_some_and(|until| until <= before);
        let families = [
            (layout::AUDIT_TAG_LISTS, Some(end)),
            (layout::UNDATED_AUDIT_TAG_LISTS, None),
        ];
        for (prefix, end) in families {
            if end.is_none() && !undated_prunable {
                continue;
            }
            let mut start: Option<Vec<u8>> = None;
            'family: loop {
                let page = self.kv.scan(prefix, start.as_deref(), AUDIT_SCAN_PAGE)?;
                let exhausted = page.len() < AUDIT_SCAN_PAGE;
                for (key, _) in page {
                    if end.as_ref().is_some_and(|end| key >= *end) {
                        break 'family;
                    }
                    if n_keys >= AUDIT_BATCH_KEYS_MAX {
                        return Ok(false);
                    }
                    n_keys += txn.delete(key.clone())?;
                    *n_deleted += 1;
                    let mut next = key;
                    next.push(0);
                    start = Some(next);
                }
                if exhausted {
                    break;
                }
            }
        }
        if undated_prunable {
            txn.delete(layout::META_UNDATED_TAG_LISTS_UNTIL.to_vec())?;
        }
        Ok(true)
    }

    /// Writes the index keys of every audit entry, in batches of at most
    /// `AUDIT_BATCH_ENTRIES_MAX` entries (and about `AUDIT_BATCH_KEYS_MAX` keys), each one
    /// atomic: the upgrade from format 5, whose entries have none. Writing a key twice is
    /// harmless, so an upgrade cut short runs again from the start.
    pub(super) fn index_audit_entries(&self) -> Result<AuditBatchDone, StoreError> {
        let mut done = AuditBatchDone::default();
        let mut start: Option<Vec<u8>> = None;
        let mut txn = self.begin();
        let mut n_batch_entries = 0usize;
        let mut n_batch_keys = 0usize;
        loop {
            let page = self.kv.scan(layout::AUDIT, start.as_deref(), AUDIT_SCAN_PAGE)?;
            let exhausted = page.len() < AUDIT_SCAN_PAGE;
            for (key, stored) in page {
                let (record, _) = decode_entry(&txn.join_parts(&key, &stored)?)?;
                for index_key in index_keys(&key, &record) {
                    txn.put_small(index_key, &())?;
                    done.n_index_keys += 1;
                }
                done.n_entries += 1;
                n_batch_entries += 1;
                n_batch_keys += record.n_keys();
                if n_batch_entries == AUDIT_BATCH_ENTRIES_MAX || n_batch_keys >= AUDIT_BATCH_KEYS_MAX {
                    std::mem::replace(&mut txn, self.begin()).commit()?;
                    n_batch_entries = 0;
                    n_batch_keys = 0;
                }
                let mut next = key;
                next.push(0);
                start = Some(next);
            }
            if exhausted {
                break;
            }
        }
        txn.commit()?;
        done.finished = true;
        Ok(done)
    }

    /// The share counters of one month (`YYYY-MM`), or of every month, by month and caller.
    pub fn share_counts(&self, month: Option<&str>) -> Result<Vec<ShareCount>, StoreError> {
        let prefix = layout::share_count_prefix(month);
        let txn = self.begin();
        let mut counts = Vec::new();
        for (key, value) in txn.scan_all(&prefix)? {
            let Some((month, caller)) = layout::parse_share_count(&key) else {
                continue;
            };
            let (n_shares, n_calls): (u64, u64) = decode("share count", &value)?;
            counts.push(ShareCount {
                month,
                caller,
                n_shares,
                n_calls,
            });
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::kv::{KvStore, MemKv, WriteBatch};

    fn entry(at: EpochMillis, caller: &str, persons: &[&str], shares: u64) -> AuditRecord {
        AuditRecord {
            at,
            caller: caller.into(),
            purpose: "case-1".into(),
            action: "ProfileService/GetProfile".into(),
            outcome: "OK".into(),
            persons: persons.iter().map(ToString::to_string).collect(),
            tags: vec!["name".to_string()].into(),
            shares,
            detail: String::new(),
        }
    }

    #[test]
    fn long_tag_lists_are_stored_once_and_read_back_and_entries_of_before_still_read() {
        let store = Store::open(Box::new(MemKv::default())).expect("store");
        let all_tags: Vec<String> = (0..2_091).map(|idx| format!("tag_{idx:04}")).collect();
        let mut full_read = entry(1_768_000_000_000, "portal", &["P1"], 1);
        full_read.tags = all_tags.clone().into();
        let mut other_person = full_read.clone();
        other_person.persons = vec!["P2".into()];
        let short = entry(1_768_000_000_001, "police", &["P1"], 1);
        store
            .append_audit(0, &[full_read.clone(), other_person.clone(), short.clone()])
            .expect("append");
        store.append_audit(3, &[full_read.clone()]).expect("append");
        // One list for the three full reads; the short one is in its entry.
        assert_eq!(
            store.kv.scan(layout::AUDIT_TAG_LISTS, None, 100).expect("scan").len(),
            1
        );
        let everything = AuditQuery {
            from: 0,
            to: i64::MAX,
            ..AuditQuery::default()
        };
        let read = store.audit_page(&everything, None, 100).expect("page").entries;
        assert_eq!(read, [full_read.clone(), other_person, full_read, short]);
        // A full read's entry is small: its list is not in it.
        let first = store.kv.scan(layout::AUDIT, None, 1).expect("scan");
        assert!(first[0].1.len() < 200, "{} bytes", first[0].1.len());

        // An entry stored by the version before (a bare record) still reads.
        let mut txn = store.begin();
        let before = entry(1_768_000_000_002, "auditor", &["P9"], 0);
        txn.put(layout::audit(before.at, 99), &before).expect("put");
        txn.commit().expect("commit");
        let read = store
            .audit_page(
                &AuditQuery {
                    person: Some("P9".into()),
                    ..everything.clone()
                },
                None,
                10,
            )
            .expect("page");
        // Not indexed (it was written bare): found by time, not by person.
        assert!(read.entries.is_empty());
        let by_time = store.audit_page(&everything, None, 100).expect("page").entries;
        assert_eq!(by_time.last(), Some(&before));
    }

    /// A day's shared tag lists go when its entries are pruned; the lists of the days still
    /// holding entries stay, and those entries read whole. The same list read on two days is
    /// kept once a day.
    #[test]
    fn pruning_a_days_entries_deletes_its_tag_lists() {
        const DAY: i64 = 86_400_000;
        let store = Store::open(Box::new(MemKv::default())).expect("store");
        let day_start = 1_768_003_200_000; // 2026-01-10T00:00:00Z
        let all_tags: Vec<String> = (0..40).map(|idx| format!("tag_{idx:02}")).collect();
        let other_tags: Vec<String> = (0..30).map(|idx| format!("other_{idx:02}")).collect();
        let read = |at: i64, tags: &[String]| {
            let mut record = entry(at, "portal", &["P1"], 1);
            record.tags = tags.to_vec().into();
            record
        };
        let records = [
            read(day_start, &all_tags),
            read(day_start + 5, &other_tags),
            read(day_start + DAY - 1, &all_tags),
            read(day_start + DAY, &all_tags),
            read(day_start + 2 * DAY + 7, &all_tags),
        ];
        store.append_audit(0, &records).expect("append");
        // Two lists on the first day, one on each of the next two.
        assert_eq!(n_keys(&store, layout::AUDIT_TAG_LISTS), 4);

        // A cutoff inside the second day prunes the first day's entries and lists, and the
        // second day's first entry, but not its list: a later entry of that day names it.
        let done = store.prune_audit(day_start + DAY + 1).expect("prune");
        assert_eq!((done.n_entries, done.n_tag_lists, done.finished), (4, 2, true));
        assert_eq!(n_keys(&store, layout::AUDIT_TAG_LISTS), 2);
        let everything = AuditQuery {
            from: 0,
            to: i64::MAX,
            ..AuditQuery::default()
        };
        let left = store.audit_page(&everything, None, 10).expect("page").entries;
        assert_eq!(left, [records[4].clone()]);

        // A cutoff at the start of the third day: the second day's list goes.
        let done = store.prune_audit(day_start + 2 * DAY).expect("prune");
        assert_eq!((done.n_entries, done.n_tag_lists, done.finished), (0, 1, true));
        assert_eq!(n_keys(&store, layout::AUDIT_TAG_LISTS), 1);
        let left = store.audit_page(&everything, None, 10).expect("page").entries;
        assert_eq!(left, [records[4].clone()]);
        // Nothing more to do.
        let done = store.prune_audit(day_start + 2 * DAY).expect("prune");
        assert_eq!((done.n_entries, done.n_tag_lists, done.finished), (0, 0, true));
    }

    /// Reads are not snapshots: an entry read just before pruning deleted it and its day's
    /// list is skipped, not taken for damage; a list missing under an entry still stored is.
    #[test]
    fn an_entry_pruned_while_it_is_read_is_skipped() {
        let store = Store::open(Box::new(MemKv::default())).expect("store");
        let mut read = entry(1_768_000_000_000, "portal", &["P1"], 1);
        read.tags = (0..40).map(|idx| format!("tag_{idx:02}")).collect();
        store.append_audit(0, &[read.clone(), read.clone()]).expect("append");
        let (key, stored) = store.kv.scan(layout::AUDIT, None, 1).expect("scan").remove(0);
        let txn = store.begin();
        let value = txn.join_parts(&key, &stored).expect("joined");
        assert_eq!(read_entry(&txn, &key, &value).expect("reads"), Some(read.clone()));

        store.prune_audit(read.at + 86_400_000).expect("prune");
        let txn = store.begin();
        assert_eq!(read_entry(&txn, &key, &value).expect("skipped"), None);

        // The list gone from under an entry the store still holds is damage.
        let mut batch = WriteBatch::default();
        batch.put(key.clone(), stored);
        store.kv.apply(batch).expect("entry back");
        let txn = store.begin();
        let error = read_entry(&txn, &key, &value).expect_err("damage");
        assert!(error.to_string().contains("its shared tag list is missing"), "{error}");
    }

    /// A format 7 store kept shared lists undated (`ut/<hash>`): its entries still read after
    /// the upgrade, a journal of before that names such a list by hash still applies (the day
    /// gets its copy), and the undated lists go once pruning passes the upgrade's time.
    #[test]
    fn undated_tag_lists_of_format_7_read_and_go_once_their_entries_are_pruned() {
        let dir = tempfile::tempdir().expect("temp dir");
        let before_upgrade = 1_768_000_000_000;
        let tags: Vec<String> = (0..40).map(|idx| format!("tag_{idx:02}")).collect();
        let hash = tag_list_hash(&tags);
        let mut old = entry(before_upgrade, "portal", &["P1"], 1);
        old.tags = tags.clone().into();
        {
            let store = Store::open_sled(dir.path(), 1 << 24).expect("store");
            let mut txn = store.begin();
            txn.put(layout::undated_audit_tag_list(&hash), &tags).expect("put");
            let stored = StoredEntry {
                at: old.at,
                caller: &old.caller,
                purpose: &old.purpose,
                action: &old.action,
                outcome: &old.outcome,
                persons: &old.persons,
                tags: StoredTags::Shared(hash),
                shares: old.shares,
                detail: &old.detail,
            };
            txn.put(layout::audit(old.at, 0), &(ENTRY_WITH_SHARED_TAGS, stored))
                .expect("put");
            txn.put(layout::META_FORMAT.to_vec(), &7u32).expect("put");
            txn.commit().expect("commit");
            store.checkpoint().expect("checkpoint");
        }
        let store = Store::open_sled(dir.path(), 1 << 24).expect("upgrades");
        let until: EpochMillis = decode(
            "until",
            &store
                .begin()
                .get(layout::META_UNDATED_TAG_LISTS_UNTIL)
                .expect("read")
                .expect("set by the upgrade"),
        )
        .expect("decodes");
        let everything = AuditQuery {
            from: 0,
            to: i64::MAX,
            ..AuditQuery::default()
        };
        assert_eq!(
            store.audit_page(&everything, None, 10).expect("page").entries,
            [old.clone()]
        );

        // A journal group of before the upgrade names the undated list by hash.
        let mut journaled = old.clone();
        journaled.at += 10;
        let mut named = journaled.clone();
        named.tags = TagList::default();
        store
            .append_audit_journaled(1, &[(named, Some(hash))], 1)
            .expect("applies");
        let day = layout::audit_day(journaled.at);
        assert!(store.begin().holds(&layout::audit_tag_list(day, &hash)).expect("read"));
        let read = store.audit_page(&everything, None, 10).expect("page").entries;
        assert_eq!(read, [old.clone(), journaled.clone()]);

        // An entry of the old journal named by hash a list that an earlier entry of the
        // journal held in full, of the day before: the later day gets its copy.
        let other_tags: Vec<String> = (0..20).map(|idx| format!("other_{idx:02}")).collect();
        let mut evening = entry(before_upgrade + 20, "portal", &["P2"], 1);
        evening.tags = other_tags.clone().into();
        let mut morning = evening.clone();
        morning.at += 86_400_000;
        let mut named = morning.clone();
        named.tags = TagList::default();
        let other_hash = tag_list_hash(&other_tags);
        store
            .append_audit_journaled(2, &[(evening.clone(), None), (named, Some(other_hash))], 2)
            .expect("applies");
        let read = store.audit_page(&everything, None, 10).expect("page").entries;
        assert_eq!(read, [old.clone(), journaled.clone(), evening, morning]);
        let done = store.prune_audit(journaled.at + 1_000).expect("prune");
        assert_eq!(done.n_entries, 3);

        // Pruning up to a time before the upgrade keeps the undated list.
        assert_eq!(n_keys(&store, layout::UNDATED_AUDIT_TAG_LISTS), 1);
        // Past the upgrade, every entry that could name it is gone: so is it, with the mark,
        // and the dated lists of the days before.
        let done = store.prune_audit(until + 1).expect("prune");
        assert_eq!((done.n_entries, done.n_tag_lists, done.finished), (1, 4, true));
        assert_eq!(n_keys(&store, layout::UNDATED_AUDIT_TAG_LISTS), 0);
        assert_eq!(n_keys(&store, layout::AUDIT_TAG_LISTS), 0);
        assert!(store
            .begin()
            .get(layout::META_UNDATED_TAG_LISTS_UNTIL)
            .expect("read")
            .is_none());
    }

    #[test]
    fn months_are_china_standard_time() {
        // 2026-01-31T16:00:00Z is 2026-02-01 00:00 in UTC+8.
        assert_eq!(month_of(1_769_875_200_000), "2026-02");
        assert_eq!(month_of(1_769_875_199_999), "2026-01");
    }

    #[test]
    fn entries_append_page_and_count_shares() {
        let store = Store::open(Box::new(MemKv::default())).expect("store");
        assert_eq!(store.next_audit_serial().expect("serial"), 0);
        let jan = 1_768_000_000_000; // 2026-01-10
        let feb = 1_770_700_000_000; // 2026-02-10
        store
            .append_audit(
                0,
                &[
                    entry(jan, "portal", &["P1"], 1),
                    entry(jan, "portal", &["P2", "P3"], 2),
                    entry(jan + 1, "police", &["P1"], 1),
                ],
            )
            .expect("append");
        store
            .append_audit(3, &[entry(feb, "portal", &["P1"], 1), entry(feb, "ops", &[], 0)])
            .expect("append");
        assert_eq!(store.next_audit_serial().expect("serial"), 5);

        let everything = AuditQuery {
            from: 0,
            to: i64::MAX,
            ..AuditQuery::default()
        };
        let all = store.audit_page(&everything, None, 100).expect("page");
        assert_eq!(all.entries.len(), 5);
        assert_eq!(all.next, None);
        let by_person = AuditQuery {
            person: Some("P1".into()),
            ..everything.clone()
        };
        let first = store.audit_page(&by_person, None, 2).expect("page");
        assert_eq!(
            first.entries.iter().map(|e| e.caller.as_str()).collect::<Vec<_>>(),
            ["portal", "police"]
        );
        let rest = store.audit_page(&by_person, first.next.as_deref(), 2).expect("page");
        assert_eq!(rest.entries.len(), 1);
        assert_eq!(rest.entries[0].at, feb);
        let january_portal = AuditQuery {
            caller: Some("portal".into()),
            from: jan,
            to: feb,
            ..AuditQuery::default()
        };
        assert_eq!(
            store
                .audit_page(&january_portal, None, 100)
                .expect("page")
                .entries
                .len(),
            2
        );

        let counts = store.share_counts(None).expect("counts");
        let summary: Vec<(&str, &str, u64, u64)> = counts
            .iter()
            .map(|c| (c.month.as_str(), c.caller.as_str(), c.n_shares, c.n_calls))
            .collect();
        assert_eq!(
            summary,
            [
                ("2026-01", "police", 1, 1),
                ("2026-01", "portal", 3, 2),
                ("2026-02", "portal", 1, 1)
            ]
        );
        assert_eq!(store.share_counts(Some("2026-02")).expect("counts").len(), 1);
    }

    /// A crash between a group's entries (written one key at a time) and its atomic batch of
    /// counters: the group applied again at the next start leaves every entry once and counts
    /// its shares once.
    #[test]
    fn a_group_applied_again_after_its_entries_alone_were_written_counts_once() {
        let refusals = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let kv = crate::store::kv::FailingKv::new(MemKv::default(), std::sync::Arc::clone(&refusals));
        let store = Store::open(Box::new(kv)).expect("store");
        refusals.store(1, std::sync::atomic::Ordering::Release);
        let mut full_read = entry(JAN, "portal", &["P1", "P2"], 2);
        full_read.tags = (0..40).map(|idx| format!("tag_{idx:02}")).collect();
        let group = [(full_read, None), (entry(JAN + 1, "ops", &["P3"], 1), None)];
        let refused = store
            .append_audit_journaled(0, &group, 1)
            .expect_err("the atomic batch is refused");
        assert!(refused.to_string().contains("injected"), "{refused}");
        assert_eq!(n_keys(&store, layout::AUDIT), 2, "the entries went in before the batch");
        assert_eq!(store.audit_journal_applied().expect("applied"), 0);
        assert!(store.share_counts(None).expect("counts").is_empty());

        store.append_audit_journaled(0, &group, 1).expect("applied again");
        assert_eq!(store.audit_journal_applied().expect("applied"), 1);
        assert_eq!(n_keys(&store, layout::AUDIT), 2);
        assert_eq!(n_keys(&store, layout::AUDIT_TAG_LISTS), 1);
        let counts: Vec<(String, u64, u64)> = store
            .share_counts(None)
            .expect("counts")
            .into_iter()
            .map(|count| (count.caller, count.n_shares, count.n_calls))
            .collect();
        assert_eq!(counts, [("ops".to_string(), 1, 1), ("portal".to_string(), 2, 1)]);
        let by_person = AuditQuery {
            person: Some("P1".into()),
            to: JAN + 10,
            ..AuditQuery::default()
        };
        let page = store.audit_page(&by_person, None, 10).expect("page");
        assert_eq!(page.entries.len(), 1);
        assert_eq!(page.entries[0].tags.len(), 40);
        assert_eq!(store.next_audit_serial().expect("serial"), 2);
    }

    /// Stored lists are keyed by this hash: it must not change between versions.
    #[test]
    fn a_tag_list_hash_is_the_sha256_of_its_lines() {
        let tags = ["name".to_string(), "phone".to_string()];
        assert_eq!(
            tag_list_hash(&tags),
            [171, 167, 178, 108, 235, 106, 5, 43, 189, 242, 168, 184, 217, 232, 155, 249]
        );
    }

    const JAN: EpochMillis = 1_768_000_000_000; // 2026-01-10

    fn mem_store() -> Store {
        Store::open(Box::new(MemKv::default())).expect("store")
    }

    fn n_keys(store: &Store, prefix: &[u8]) -> usize {
        store.kv.scan(prefix, None, usize::MAX).expect("scan").len()
    }

    /// Every page of `query`, `page_size` entries at most each, following the tokens (each
    /// one accepted by the query); the entries as (time, caller).
    fn all_pages(store: &Store, query: &AuditQuery, page_size: usize) -> (Vec<(EpochMillis, String)>, usize) {
        let mut entries = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        let mut n_pages = 0;
        loop {
            let page = store.audit_page(query, after.as_deref(), page_size).expect("page");
            n_pages += 1;
            assert!(page.entries.len() <= page_size);
            entries.extend(page.entries.into_iter().map(|entry| (entry.at, entry.caller)));
            match page.next {
                Some(next) => {
                    assert!(query.accepts_token(&next), "a token the query gave is accepted");
                    after = Some(next);
                }
                None => return (entries, n_pages),
            }
        }
    }

    /// Three callers reading four persons, one entry a second; each query through the index
    /// finds exactly what a filter over every entry finds, oldest first, across pages.
    #[test]
    fn queries_by_caller_and_person_read_the_index() {
        let store = mem_store();
        let callers = ["portal", "police", "ops"];
        let persons = ["P1", "P2", "P10", "P3"];
        let records: Vec<AuditRecord> = (0..90)
            .map(|idx| {
                let named: Vec<&str> = match idx % 4 {
                    0 => vec![],
                    1 => vec![persons[idx % 3]],
                    _ => vec![persons[idx % 4], persons[(idx + 1) % 4]],
                };
                entry(JAN + idx as i64 * 1_000, callers[idx % 3], &named, named.len() as u64)
            })
            .collect();
        store.append_audit(0, &records[..40]).expect("append");
        store.append_audit(40, &records[40..]).expect("append");
        assert_eq!(n_keys(&store, layout::AUDIT), 90);
        assert_eq!(n_keys(&store, layout::AUDIT_BY_CALLER), 90);
        let n_named: usize = records.iter().map(|record| record.persons.len()).sum();
        assert_eq!(n_keys(&store, layout::AUDIT_BY_PERSON), n_named);

        let cases = [
            (Some("portal"), None, 0, i64::MAX),
            (Some("police"), None, JAN + 10_000, JAN + 70_000),
            (None, Some("P1"), 0, i64::MAX),
            (None, Some("P10"), JAN, JAN + 45_000),
            (Some("ops"), Some("P2"), 0, i64::MAX),
            (Some("portal"), Some("P3"), JAN + 5_000, JAN + 80_000),
            (Some("nobody"), None, 0, i64::MAX),
            (None, Some("P4"), 0, i64::MAX),
            (None, None, JAN + 30_000, JAN + 60_000),
        ];
        for (caller, person, from, to) in cases {
            let query = AuditQuery {
                caller: caller.map(String::from),
                person: person.map(String::from),
                from,
                to,
            };
            let expected: Vec<(EpochMillis, String)> = records
                .iter()
                .filter(|record| query.matches(record) && (from..to).contains(&record.at))
                .map(|record| (record.at, record.caller.clone()))
                .collect();
            for page_size in [1, 4, 100] {
                let (found, n_pages) = all_pages(&store, &query, page_size);
                assert_eq!(found, expected, "{query:?}, pages of {page_size}");
                assert!(n_pages >= expected.len().div_ceil(page_size), "{query:?}");
            }
        }
    }

    /// A query by caller reads only its caller's keys: one rare caller's entries among more
    /// than `AUDIT_SCAN_MAX` of another come in one page, without a token.
    #[test]
    fn a_query_by_caller_does_not_scan_other_callers() {
        let store = mem_store();
        let mut records: Vec<AuditRecord> = (0..AUDIT_SCAN_MAX + 100)
            .map(|idx| entry(JAN + idx as i64, "portal", &[], 0))
            .collect();
        records.push(entry(JAN + AUDIT_SCAN_MAX as i64 + 500, "rare", &["P1"], 1));
        records.insert(0, entry(JAN - 1, "rare", &[], 0));
        store.append_audit(0, &records).expect("append");
        let by_caller = AuditQuery {
            caller: Some("rare".into()),
            from: 0,
            to: i64::MAX,
            ..AuditQuery::default()
        };
        let page = store.audit_page(&by_caller, None, 100).expect("page");
        assert_eq!(page.entries.len(), 2);
        assert_eq!(page.next, None);
        let everything = AuditQuery {
            from: 0,
            to: i64::MAX,
            ..AuditQuery::default()
        };
        let page = store.audit_page(&everything, None, 10).expect("page");
        assert_eq!(page.entries.len(), 10);
    }

    /// A token is good for the query family and the caller or person it came from only.
    #[test]
    fn page_tokens_belong_to_their_query() {
        let query = |caller: Option<&str>, person: Option<&str>| AuditQuery {
            caller: caller.map(String::from),
            person: person.map(String::from),
            from: 0,
            to: i64::MAX,
        };
        let token = |mut key: Vec<u8>| {
            key.push(0);
            key
        };
        let by_portal = token(layout::audit_by_caller("portal", JAN, 3));
        let by_p1 = token(layout::audit_by_person("P1", JAN, 3));
        let by_time = token(layout::audit(JAN, 3));
        let table = [
            (query(Some("portal"), None), &by_portal, true),
            (query(Some("portal"), None), &by_p1, false),
            (query(Some("portal"), None), &by_time, false),
            (query(Some("police"), None), &by_portal, false),
            (query(None, Some("P1")), &by_p1, true),
            (query(Some("portal"), Some("P1")), &by_p1, true),
            (query(Some("portal"), Some("P1")), &by_portal, false),
            (query(None, Some("P10")), &by_p1, false),
            (query(None, None), &by_time, true),
            (query(None, None), &by_portal, false),
        ];
        for (query, token, accepted) in table {
            assert_eq!(query.accepts_token(token), accepted, "{query:?}");
        }
        assert!(!query(None, None).accepts_token(&layout::audit(JAN, 3)), "not a token");
        assert!(!query(None, None).accepts_token(b"u/"));
    }

    /// Another writer's entry, written in its own transaction with a serial of its own space:
    /// found by caller and person like any, and no share counted.
    #[test]
    fn put_audit_entry_writes_the_entry_and_its_index_only() {
        let store = mem_store();
        store
            .append_audit(0, &[entry(JAN, "etl-d07", &["P1"], 0)])
            .expect("append");
        let mut txn = store.begin();
        put_audit_entry(&mut txn, 1 << 63 | 42, &entry(JAN, "etl-d07", &["P1", "P2"], 2)).expect("put");
        put_audit_entry(&mut txn, 1 << 63 | 43, &entry(JAN + 1, "etl-d08", &["P2"], 0)).expect("put");
        txn.commit().expect("commit");
        let by_person = AuditQuery {
            person: Some("P2".into()),
            caller: Some("etl-d07".into()),
            from: 0,
            to: i64::MAX,
        };
        let page = store.audit_page(&by_person, None, 10).expect("page");
        assert_eq!(page.entries, [entry(JAN, "etl-d07", &["P1", "P2"], 2)]);
        let by_person_only = AuditQuery {
            caller: None,
            ..by_person.clone()
        };
        assert_eq!(
            store.audit_page(&by_person_only, None, 10).expect("page").entries.len(),
            2
        );
        let by_caller = AuditQuery {
            caller: Some("etl-d07".into()),
            from: 0,
            to: i64::MAX,
            ..AuditQuery::default()
        };
        assert_eq!(store.audit_page(&by_caller, None, 10).expect("page").entries.len(), 2);
        assert!(store.share_counts(None).expect("counts").is_empty());
        assert_eq!(
            store.next_audit_serial().expect("serial"),
            1,
            "the audit writer's serials are its own"
        );
    }

    /// Pruning deletes the entries before the cutoff with every index key they have, in
    /// bounded batches, and keeps the later entries and every share counter.
    #[test]
    fn pruning_deletes_old_entries_and_their_index_keys_and_keeps_share_counts() {
        let store = mem_store();
        let n_old = AUDIT_BATCH_ENTRIES_MAX + 5;
        let cutoff = JAN + n_old as i64;
        let mut records: Vec<AuditRecord> = (0..n_old)
            .map(|idx| entry(JAN + idx as i64, "portal", &["P1", "P2"], 2))
            .collect();
        records.push(entry(cutoff, "portal", &["P1"], 1));
        records.push(entry(cutoff + 10, "police", &["P2"], 1));
        store.append_audit(0, &records).expect("append");
        let counts_before = store.share_counts(None).expect("counts");

        let first = store.prune_audit(cutoff).expect("prune");
        assert_eq!(
            first,
            AuditBatchDone {
                n_entries: AUDIT_BATCH_ENTRIES_MAX as u64,
                n_index_keys: 3 * AUDIT_BATCH_ENTRIES_MAX as u64,
                n_tag_lists: 0,
                finished: false
            }
        );
        let second = store.prune_audit(cutoff).expect("prune");
        assert_eq!(
            second,
            AuditBatchDone {
                n_entries: 5,
                n_index_keys: 15,
                n_tag_lists: 0,
                finished: true
            }
        );
        assert_eq!(store.prune_audit(cutoff).expect("prune").n_entries, 0);

        assert_eq!(n_keys(&store, layout::AUDIT), 2);
        assert_eq!(n_keys(&store, layout::AUDIT_BY_CALLER), 2);
        assert_eq!(n_keys(&store, layout::AUDIT_BY_PERSON), 2);
        let everything = AuditQuery {
            from: 0,
            to: i64::MAX,
            ..AuditQuery::default()
        };
        let (left, _) = all_pages(&store, &everything, 10);
        assert_eq!(left, [(cutoff, "portal".into()), (cutoff + 10, "police".into())]);
        let by_p2 = AuditQuery {
            person: Some("P2".into()),
            ..everything
        };
        assert_eq!(all_pages(&store, &by_p2, 10).0, [(cutoff + 10, "police".into())]);
        assert_eq!(store.share_counts(None).expect("counts"), counts_before);
    }

    /// An entry naming many persons writes many keys: a pruning batch ends after the entry
    /// that reaches `AUDIT_BATCH_KEYS_MAX`.
    #[test]
    fn pruning_batches_are_bounded_by_keys_too() {
        let store = mem_store();
        let persons: Vec<String> = (0..AUDIT_BATCH_KEYS_MAX / 3).map(|idx| format!("P{idx}")).collect();
        let persons: Vec<&str> = persons.iter().map(String::as_str).collect();
        let records: Vec<AuditRecord> = (0..5).map(|idx| entry(JAN + idx, "export", &persons, 0)).collect();
        store.append_audit(0, &records).expect("append");
        let first = store.prune_audit(JAN + 100).expect("prune");
        assert_eq!((first.n_entries, first.finished), (3, false));
        let second = store.prune_audit(JAN + 100).expect("prune");
        assert_eq!((second.n_entries, second.finished), (2, true));
        assert_eq!(n_keys(&store, layout::AUDIT_BY_PERSON), 0);
        assert_eq!(
            n_keys(&store, layout::CONTINUATIONS),
            0,
            "long entries go with their parts"
        );
    }
}
