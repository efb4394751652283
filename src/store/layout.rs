//! The key layout, independent of the backend: every backend stores the same bytes.
//!
//! ```text
//! m/<name>                               metadata: format version, applied sequence, counters
//! m/source_records/<source>              how many records of a source are stored
//! r/<source>\0<record_id>                a record: person, observed_at, findings, every tag
//! p/<person_id>                          person header (version, record count)
//! a/<person_id>\0<source>\0<record_id>   membership: the records of a person
//! t/<person_id>\0<group>                 the profile tags of one group: canonical tags (group
//!                                        empty) or one department's tags (group = its source)
//! b/<blocking key>                       exact candidate key postings, one value: the persons
//!                                        holding a value (`id/<ID number>`, `ph/<phone>`,
//!                                        `nd/<name, birth date>`..), or the mark that more persons
//!                                        hold it than the matcher looks at (too common to look
//!                                        candidates up with)
//! f/<person_id>                          the person's identity features (what the matcher reads)
//! l/<person_id>                          alias: a person merged into another -> the survivor
//! n/<name>                               how many records carry a name (term frequency)
//! x/<source>\0<record_id>                the evidence of the record's last resolution
//! v/<source>\0<record_id>                the record's open review item (possible matches)
//! q/<source>                            quality counters of a source, one value: rule id (or
//!                                        #records, #rejected) -> count
//! o/<sequence, 8 bytes big-endian>       change feed (outbox) of person versions, from
//!                                        `m/feed_start` on (older ones trimmed)
//! h/<person_id>\0<version, 8 bytes BE>    the person's history: what each version changed, and why
//! d/<person_id>\0<person_id>              a steward said the two persons differ (both directions)
//! s/<source>\0<record_id>\0<source>\0<record_id>   a steward said the two records' persons are one
//!                                        (both directions; keeps them together when a person is
//!                                        re-clustered after a deletion)
//! w/<rank, 8 bytes BE>\0<source>\0<record_id>   the review queue by best score (highest first)
//! c/<key>\0<part, 2 bytes big-endian>    continuation parts of a value longer than one part
//! u/<at ms, 8 bytes BE><serial, 8 bytes BE>   the audit log: one entry per audited call, by
//!                                        time; deleted only past the retention
//! ui/c/<caller>\0<at ms><serial>        the audit log by caller (empty value): one per entry
//! ui/p/<person_id>\0<at ms><serial>     the audit log by person (empty value): one per person
//!                                        an entry names; written and deleted with the entry
//! ul/<day, 4 bytes BE><16 bytes of SHA-256>   a tag list the audit entries of one day (UTC, counted
//!                                        from 1970) share (every list of 16 tags or more); written
//!                                        with the day's first entry that names it, deleted when
//!                                        the day's entries are pruned
//! ut/<16 bytes of SHA-256>               a shared tag list as format 7 kept it, for any day;
//!                                        deleted once every entry from before format 8 is pruned
//! m/shares/<YYYY-MM>\0<caller>           profiles shared to a caller in a month, and its calls
//! ```
//!
//! Values are packed (a record is one value, a profile is one value per tag group) because
//! sled costs about 10 µs per key written. A value longer than `VALUE_PART_BYTES` is split
//! into parts, so no stored item comes near the size (about 128 KiB for a value or a whole
//! leaf of 16 items) where sled 0.34 writes blob files that it never fsyncs.

use crate::model::{PersonId, RecordKey, SourceId, TagCode};

pub const SEP: u8 = 0;

pub const META_FORMAT: &[u8] = b"m/format";
pub const META_APPLIED_SEQUENCE: &[u8] = b"m/applied_sequence";
pub const META_NEXT_CHANGE: &[u8] = b"m/next_change";
pub const META_N_RECORDS: &[u8] = b"m/n_records";
pub const META_N_PERSONS: &[u8] = b"m/n_persons";
pub const META_N_NAMED_RECORDS: &[u8] = b"m/n_named_records";
pub const META_N_REVIEW_ITEMS: &[u8] = b"m/n_review_items";
pub const META_MODEL: &[u8] = b"m/model";
/// Prefix of the per-source stored-record counters (`m/source_records/<source>`).
pub const META_SOURCE_RECORDS: &[u8] = b"m/source_records/";
/// The serial the next audit entry takes.
pub const META_AUDIT_SERIAL: &[u8] = b"m/audit_serial";
/// The sequence of the last audit journal group applied (written with its entries).
pub const META_AUDIT_JOURNAL_APPLIED: &[u8] = b"m/audit_journal_applied";
/// Prefix of the monthly share counters (`m/shares/<YYYY-MM>\0<caller>`).
pub const META_SHARES: &[u8] = b"m/shares/";
/// The first sequence the change feed still holds (absent: 1, nothing trimmed). Raised before
/// the entries below it are deleted.
pub const META_FEED_START: &[u8] = b"m/feed_start";

pub const RECORDS: &[u8] = b"r/";
pub const PERSONS: &[u8] = b"p/";
pub const MEMBERS: &[u8] = b"a/";
pub const PROFILE_TAGS: &[u8] = b"t/";
pub const POSTING_LISTS: &[u8] = b"b/";
/// Format 6 and earlier: one key per posting (`k/<blocking key>\0<person_id>`), read by the
/// upgrade to format 7 only.
pub const FORMAT_6_POSTINGS: &[u8] = b"k/";
pub const PERSON_FEATURES: &[u8] = b"f/";
/// Format 6 and earlier: the mark of a common key (`g/<blocking key>`), read by the upgrade to
/// format 7 only.
pub const FORMAT_6_COMMON_KEYS: &[u8] = b"g/";
pub const ALIASES: &[u8] = b"l/";
pub const NAME_COUNTS: &[u8] = b"n/";
pub const EVIDENCE: &[u8] = b"x/";
pub const REVIEW_ITEMS: &[u8] = b"v/";
pub const CHANGES: &[u8] = b"o/";
pub const CONTINUATIONS: &[u8] = b"c/";
pub const QUALITY: &[u8] = b"q/";
pub const HISTORY: &[u8] = b"h/";
pub const HELD_APART: &[u8] = b"d/";
pub const HELD_TOGETHER: &[u8] = b"s/";
pub const REVIEW_QUEUE: &[u8] = b"w/";
pub const AUDIT: &[u8] = b"u/";
/// Prefix of the audit log's index by caller (`ui/c/<caller>\0<at><serial>`).
pub const AUDIT_BY_CALLER: &[u8] = b"ui/c/";
/// Prefix of the audit log's index by person (`ui/p/<person_id>\0<at><serial>`).
pub const AUDIT_BY_PERSON: &[u8] = b"ui/p/";
/// Tag lists the audit entries of one day share, by day and hash (`ul/<day><16 bytes>`).
pub const AUDIT_TAG_LISTS: &[u8] = b"ul/";
/// Tag lists audit entries share, by hash alone, as format 7 kept them (`ut/<16 bytes>`).
pub const UNDATED_AUDIT_TAG_LISTS: &[u8] = b"ut/";
/// The time (ms) before which audit entries may name undated tag lists (`ut/`): when the store
/// was upgraded to format 8. Absent when there are none.
pub const META_UNDATED_TAG_LISTS_UNTIL: &[u8] = b"m/undated_tag_lists_until";
/// Quality counter of the records a source sent (admitted ones).
pub const QUALITY_RECORDS: &str = "#records";
/// Quality counter of the records of a source that were refused.
pub const QUALITY_REJECTED: &str = "#rejected";

/// The largest part of a value stored under one key: 16 of them stay far below sled's blob
/// threshold.
pub const VALUE_PART_BYTES: usize = 6 * 1024;

fn join(prefix: &[u8], parts: &[&str]) -> Vec<u8> {
    let mut key = prefix.to_vec();
    for (part_idx, part) in parts.iter().enumerate() {
        if part_idx > 0 {
            key.push(SEP);
        }
        key.extend_from_slice(part.as_bytes());
    }
    key
}

pub fn record(key: &RecordKey) -> Vec<u8> {
    join(RECORDS, &[key.source.as_str(), &key.record_id])
}

pub fn person(person_id: &PersonId) -> Vec<u8> {
    join(PERSONS, &[person_id.as_str()])
}

pub fn members_prefix(person_id: &PersonId) -> Vec<u8> {
    let mut prefix = join(MEMBERS, &[person_id.as_str()]);
    prefix.push(SEP);
    prefix
}

pub fn member(person_id: &PersonId, key: &RecordKey) -> Vec<u8> {
    join(MEMBERS, &[person_id.as_str(), key.source.as_str(), &key.record_id])
}

pub fn profile_prefix(person_id: &PersonId) -> Vec<u8> {
    let mut prefix = join(PROFILE_TAGS, &[person_id.as_str()]);
    prefix.push(SEP);
    prefix
}

pub fn profile_group(person_id: &PersonId, group: &str) -> Vec<u8> {
    join(PROFILE_TAGS, &[person_id.as_str(), group])
}

/// The profile group of a tag: its owning source for a department tag (`d07.x` -> `D07`),
/// empty for a canonical tag.
pub fn profile_group_of(tag: &TagCode) -> String {
    match tag.as_str().split_once('.') {
        Some((owner, _)) => owner.to_ascii_uppercase(),
        None => String::new(),
    }
}

/// The quality counters of a source, one value (counter -> count).
pub fn quality(source: &SourceId) -> Vec<u8> {
    join(QUALITY, &[source.as_str()])
}

/// The counter of the records of `source` that are stored now (re-sent records count once,
/// deleted ones not at all; unlike the quality counter `#records`, which counts every version
/// a source sent).
pub fn source_records(source: &SourceId) -> Vec<u8> {
    join(META_SOURCE_RECORDS, &[source.as_str()])
}

/// Milliseconds in a day.
pub const DAY_MILLIS: i64 = 24 * 3_600 * 1_000;

/// The day (UTC, counted from 1970-01-01) of a time in ms; times before 1970 do not occur and
/// count as day 0.
pub fn audit_day(at_millis: i64) -> u32 {
    u32::try_from(at_millis.max(0) / DAY_MILLIS).unwrap_or(u32::MAX)
}

/// A tag list the audit entries of day `day` share, by the first 16 bytes of its SHA-256.
pub fn audit_tag_list(day: u32, hash: &[u8; 16]) -> Vec<u8> {
    let mut key = audit_tag_lists_of_day(day);
    key.extend_from_slice(hash);
    key
}

/// The first key of day `day`'s shared tag lists; every list of an earlier day sorts before it.
pub fn audit_tag_lists_of_day(day: u32) -> Vec<u8> {
    let mut key = AUDIT_TAG_LISTS.to_vec();
    key.extend_from_slice(&day.to_be_bytes());
    key
}

/// A shared tag list as format 7 kept it, by hash alone.
pub fn undated_audit_tag_list(hash: &[u8; 16]) -> Vec<u8> {
    let mut key = UNDATED_AUDIT_TAG_LISTS.to_vec();
    key.extend_from_slice(hash);
    key
}

/// The serials of audit entries the write path writes with its changes: the high bit set, then
/// the write's log sequence, so they never meet the audit writer's serials (counted from 0) and
/// a replayed write rewrites its entry in place.
pub const WRITE_PATH_AUDIT_SERIALS: u64 = 1 << 63;

/// Bytes of an audit entry's place in time: its time (8 bytes BE), then its serial (8 bytes
/// BE). Every audit key ends with them, so every audit key family sorts by time.
pub const AUDIT_PLACE_BYTES: usize = 16;

fn audit_place(at_millis: i64, serial: u64) -> [u8; AUDIT_PLACE_BYTES] {
    let mut place = [0; AUDIT_PLACE_BYTES];
    // Times before 1970 do not occur; clamp rather than wrap.
    place[..8].copy_from_slice(&u64::try_from(at_millis).unwrap_or(0).to_be_bytes());
    place[8..].copy_from_slice(&serial.to_be_bytes());
    place
}

/// An audit entry: by time, then by serial (entries of one millisecond keep their order).
pub fn audit(at_millis: i64, serial: u64) -> Vec<u8> {
    let mut key = AUDIT.to_vec();
    key.extend_from_slice(&audit_place(at_millis, serial));
    key
}

/// (time, serial) of an audit entry's key.
pub fn parse_audit(key: &[u8]) -> Option<(i64, u64)> {
    let place = key.strip_prefix(AUDIT)?;
    if place.len() != AUDIT_PLACE_BYTES {
        return None;
    }
    let at = u64::from_be_bytes(place[..8].try_into().ok()?);
    let serial = u64::from_be_bytes(place[8..].try_into().ok()?);
    Some((i64::try_from(at).ok()?, serial))
}

/// The index keys of one caller's audit entries, in time order.
pub fn audit_caller_prefix(caller: &str) -> Vec<u8> {
    let mut prefix = join(AUDIT_BY_CALLER, &[caller]);
    prefix.push(SEP);
    prefix
}

/// The index keys of the audit entries naming one person, in time order.
pub fn audit_person_prefix(person_id: &str) -> Vec<u8> {
    let mut prefix = join(AUDIT_BY_PERSON, &[person_id]);
    prefix.push(SEP);
    prefix
}

/// A key in an audit index (`prefix` from `audit_caller_prefix` or `audit_person_prefix`) at
/// an entry's time and serial; with serial 0, where a time range starts or ends.
pub fn audit_index(prefix: &[u8], at_millis: i64, serial: u64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&audit_place(at_millis, serial));
    key
}

pub fn audit_by_caller(caller: &str, at_millis: i64, serial: u64) -> Vec<u8> {
    audit_index(&audit_caller_prefix(caller), at_millis, serial)
}

pub fn audit_by_person(person_id: &str, at_millis: i64, serial: u64) -> Vec<u8> {
    audit_index(&audit_person_prefix(person_id), at_millis, serial)
}

/// The entry key (`u/...`) an index key under `prefix` points to; `None` for a key that is not
/// `prefix` and a place (the key of another caller or person whose id extends this one, past
/// a separator of its own).
pub fn audit_entry_of_index(index_key: &[u8], prefix: &[u8]) -> Option<Vec<u8>> {
    let place = index_key.strip_prefix(prefix)?;
    if place.len() != AUDIT_PLACE_BYTES {
        return None;
    }
    let mut key = AUDIT.to_vec();
    key.extend_from_slice(place);
    Some(key)
}

pub fn share_count(month: &str, caller: &str) -> Vec<u8> {
    join(META_SHARES, &[month, caller])
}

/// The share counters of one month, or of all months.
pub fn share_count_prefix(month: Option<&str>) -> Vec<u8> {
    match month {
        Some(month) => {
            let mut prefix = join(META_SHARES, &[month]);
            prefix.push(SEP);
            prefix
        }
        None => META_SHARES.to_vec(),
    }
}

/// (month, caller) of a share counter key.
pub fn parse_share_count(key: &[u8]) -> Option<(String, String)> {
    let rest = key.strip_prefix(META_SHARES)?;
    let split = rest.iter().position(|&byte| byte == SEP)?;
    let month = std::str::from_utf8(&rest[..split]).ok()?;
    let caller = std::str::from_utf8(&rest[split + 1..]).ok()?;
    Some((month.to_string(), caller.to_string()))
}

pub fn continuation(key: &[u8], part: u16) -> Vec<u8> {
    let mut full = CONTINUATIONS.to_vec();
    full.extend_from_slice(key);
    full.push(SEP);
    full.extend_from_slice(&part.to_be_bytes());
    full
}

/// The postings of one blocking key: every person holding its value.
pub fn posting_list(blocking_key: &str) -> Vec<u8> {
    join(POSTING_LISTS, &[blocking_key])
}

/// The person a key or scan prefix belongs to: the id in a person's header, membership,
/// profile group, features, alias, history or held-apart key (the first of the two persons),
/// or in the key a continuation part continues.
pub fn person_of_key(key: &[u8]) -> Option<&[u8]> {
    let (prefix, rest) = key.split_at_checked(2)?;
    if prefix == CONTINUATIONS {
        return person_of_key(rest);
    }
    let person_scoped = [
        PERSONS,
        MEMBERS,
        PROFILE_TAGS,
        PERSON_FEATURES,
        ALIASES,
        HISTORY,
        HELD_APART,
    ];
    if !person_scoped.contains(&prefix) {
        return None;
    }
    rest.split(|byte| *byte == SEP).next()
}

pub fn person_features(person_id: &PersonId) -> Vec<u8> {
    join(PERSON_FEATURES, &[person_id.as_str()])
}

pub fn alias(person_id: &PersonId) -> Vec<u8> {
    join(ALIASES, &[person_id.as_str()])
}

pub fn name_count(name: &str) -> Vec<u8> {
    join(NAME_COUNTS, &[name])
}

pub fn evidence(key: &RecordKey) -> Vec<u8> {
    join(EVIDENCE, &[key.source.as_str(), &key.record_id])
}

pub fn review_item(key: &RecordKey) -> Vec<u8> {
    join(REVIEW_ITEMS, &[key.source.as_str(), &key.record_id])
}

pub fn change(sequence: u64) -> Vec<u8> {
    let mut key = CHANGES.to_vec();
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

pub fn history_prefix(person_id: &PersonId) -> Vec<u8> {
    let mut prefix = join(HISTORY, &[person_id.as_str()]);
    prefix.push(SEP);
    prefix
}

pub fn history(person_id: &PersonId, version: u64) -> Vec<u8> {
    let mut key = history_prefix(person_id);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

pub fn held_apart_prefix(person_id: &PersonId) -> Vec<u8> {
    let mut prefix = join(HELD_APART, &[person_id.as_str()]);
    prefix.push(SEP);
    prefix
}

pub fn held_apart(person_id: &PersonId, other: &PersonId) -> Vec<u8> {
    join(HELD_APART, &[person_id.as_str(), other.as_str()])
}

pub fn held_together_prefix(key: &RecordKey) -> Vec<u8> {
    let mut prefix = join(HELD_TOGETHER, &[key.source.as_str(), &key.record_id]);
    prefix.push(SEP);
    prefix
}

pub fn held_together(key: &RecordKey, other: &RecordKey) -> Vec<u8> {
    join(
        HELD_TOGETHER,
        &[
            key.source.as_str(),
            &key.record_id,
            other.source.as_str(),
            &other.record_id,
        ],
    )
}

/// The review queue's order: `rank` is the best candidate's probability scaled to u64 and
/// inverted, so the most likely matches come first.
pub fn review_queue(rank: u64, key: &RecordKey) -> Vec<u8> {
    let mut full = REVIEW_QUEUE.to_vec();
    full.extend_from_slice(&rank.to_be_bytes());
    full.push(SEP);
    full.extend_from_slice(key.source.as_str().as_bytes());
    full.push(SEP);
    full.extend_from_slice(key.record_id.as_bytes());
    full
}

/// The part of `key` after `prefix`, split at separators.
pub fn split_suffix<'k>(key: &'k [u8], prefix: &[u8]) -> Vec<&'k str> {
    key[prefix.len()..]
        .split(|byte| *byte == SEP)
        .map(|part| std::str::from_utf8(part).expect("keys are written from strings"))
        .collect()
}

/// A stable, opaque person id from the position of the record that created it. splitmix64 is
/// a bijection on u64, so distinct positions give distinct ids without a shared counter, and a
/// replay of the write-ahead log recreates the same ids.
pub fn person_id_for(sequence: u64, record_idx: u32) -> PersonId {
    assert!(sequence < 1 << 44, "sequence space exhausted");
    let mut z = (sequence << 20 | u64::from(record_idx & 0xF_FFFF)).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    PersonId::new(format!("P{z:016X}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SourceId;

    #[test]
    fn the_person_of_a_key() {
        let someone = PersonId::new("P0123456789ABCDEF");
        let record = RecordKey {
            source: SourceId::parse("D07").expect("source"),
            record_id: "r1".into(),
        };
        for key in [
            person(&someone),
            members_prefix(&someone),
            member(&someone, &record),
            profile_group(&someone, "D07"),
            person_features(&someone),
            history(&someone, 3),
            held_apart(&someone, &PersonId::new("P1")),
            continuation(&profile_group(&someone, ""), 2),
        ] {
            assert_eq!(person_of_key(&key), Some(someone.as_str().as_bytes()), "{key:?}");
        }
        assert_eq!(person_of_key(&super::record(&record)), None);
        assert_eq!(person_of_key(&posting_list("id/1")), None);
        assert_eq!(person_of_key(&continuation(&evidence(&record), 1)), None);
        assert_eq!(person_of_key(b"p"), None);
    }

    #[test]
    fn person_ids_are_distinct_and_opaque() {
        let mut seen = std::collections::HashSet::new();
        for sequence in 1..200 {
            for record_idx in 0..50 {
                assert!(seen.insert(person_id_for(sequence, record_idx)));
            }
        }
        assert_eq!(person_id_for(1, 0).as_str().len(), 17);
        assert_ne!(person_id_for(1, 0), person_id_for(1, 1));
    }

    #[test]
    fn record_prefixes_do_not_overlap() {
        let source = SourceId::parse("D01").expect("well-formed");
        let short = RecordKey {
            source: source.clone(),
            record_id: "1".into(),
        };
        let long = RecordKey {
            source,
            record_id: "12".into(),
        };
        assert!(!profile_group(&PersonId::new("P12"), "").starts_with(&profile_prefix(&PersonId::new("P1"))));
        assert!(
            record(&long).starts_with(&record(&short)),
            "record keys are never scanned by a record's prefix"
        );
        assert_eq!(profile_group_of(&TagCode::new("d07.vehicle_plate")), "D07");
        assert_eq!(profile_group_of(&TagCode::new("name")), "");
        assert_eq!(
            split_suffix(&member(&PersonId::new("P1"), &short), MEMBERS),
            vec!["P1", "D01", "1"]
        );
    }

    #[track_caller]
    fn check_audit_index(prefix: &[u8], key: &[u8], entry: Option<(i64, u64)>) {
        let parsed = audit_entry_of_index(key, prefix).map(|entry_key| parse_audit(&entry_key).expect("an entry key"));
        assert_eq!(parsed, entry);
    }

    #[test]
    fn audit_keys_round_trip_and_sort_by_time() {
        let at = 1_768_000_000_000;
        assert_eq!(parse_audit(&audit(at, 7)), Some((at, 7)));
        assert_eq!(parse_audit(&audit(at, u64::MAX)), Some((at, u64::MAX)));
        assert_eq!(parse_audit(b"u/short"), None);
        assert_eq!(parse_audit(&audit_by_caller("portal", at, 7)), None);
        assert!(audit(at, u64::MAX) < audit(at + 1, 0));
        assert!(audit_by_person("P1", at, u64::MAX) < audit_by_person("P1", at + 1, 0));
        // The index families and the entries do not share a prefix.
        assert!(!audit_by_caller("portal", at, 7).starts_with(AUDIT));
        assert!(!audit_by_caller("portal", at, 7).starts_with(AUDIT_BY_PERSON));

        let portal = audit_caller_prefix("portal");
        let person = audit_person_prefix("P1");
        check_audit_index(&portal, &audit_by_caller("portal", at, 7), Some((at, 7)));
        check_audit_index(&person, &audit_by_person("P1", at, 9), Some((at, 9)));
        check_audit_index(&person, &audit_by_person("P10", at, 9), None);
        check_audit_index(&person, &audit_by_caller("P1", at, 9), None);
        // An id holding a separator of its own is another id's key, never this one's.
        check_audit_index(&person, &audit_by_person("P1\0x", at, 9), None);
        check_audit_index(&portal, &portal, None);
    }
}
