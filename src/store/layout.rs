//! The key layout, independent of the backend: every backend stores the same bytes.
//!
//! ```text
//! m/<name>                               metadata: format version, applied sequence, counters
//! r/<source>\0<record_id>                record header (person, observed_at, id number, findings)
//! v/<source>\0<record_id>\0<tag>         one tag of a record: raw and standardized value
//! p/<person_id>                          person header (version, record count)
//! a/<person_id>\0<source>\0<record_id>   membership: the records of a person
//! t/<person_id>\0<tag>                   one tag of the profile: winning value and provenance
//! k/id/<id_number>                       exact candidate key: normalized ID number -> person
//! o/<sequence, 8 bytes big-endian>       change feed (outbox) of person versions
//! ```
//!
//! Tags and record values are one key each, so no value grows past a few KiB: sled 0.34 writes
//! values (and leaf nodes) over about 128 KiB to blob files that it never fsyncs.

use crate::model::{PersonId, RecordKey, TagCode};

pub const SEP: u8 = 0;

pub const META_FORMAT: &[u8] = b"m/format";
pub const META_APPLIED_SEQUENCE: &[u8] = b"m/applied_sequence";
pub const META_NEXT_CHANGE: &[u8] = b"m/next_change";
pub const META_N_RECORDS: &[u8] = b"m/n_records";
pub const META_N_PERSONS: &[u8] = b"m/n_persons";

pub const RECORDS: &[u8] = b"r/";
pub const RECORD_TAGS: &[u8] = b"v/";
pub const PERSONS: &[u8] = b"p/";
pub const MEMBERS: &[u8] = b"a/";
pub const PROFILE_TAGS: &[u8] = b"t/";
pub const ID_NUMBER_KEYS: &[u8] = b"k/id/";
pub const CHANGES: &[u8] = b"o/";

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

pub fn record_tags_prefix(key: &RecordKey) -> Vec<u8> {
    let mut prefix = join(RECORD_TAGS, &[key.source.as_str(), &key.record_id]);
    prefix.push(SEP);
    prefix
}

pub fn record_tag(key: &RecordKey, tag: &TagCode) -> Vec<u8> {
    let mut full = record_tags_prefix(key);
    full.extend_from_slice(tag.as_str().as_bytes());
    full
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

pub fn profile_tag(person_id: &PersonId, tag: &TagCode) -> Vec<u8> {
    join(PROFILE_TAGS, &[person_id.as_str(), tag.as_str()])
}

pub fn id_number_key(id_number: &str) -> Vec<u8> {
    join(ID_NUMBER_KEYS, &[id_number])
}

pub fn change(sequence: u64) -> Vec<u8> {
    let mut key = CHANGES.to_vec();
    key.extend_from_slice(&sequence.to_be_bytes());
    key
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
        let short = RecordKey { source: source.clone(), record_id: "1".into() };
        let long = RecordKey { source, record_id: "12".into() };
        assert!(!record_tag(&long, &TagCode::new("name")).starts_with(&record_tags_prefix(&short)));
        assert_eq!(split_suffix(&member(&PersonId::new("P1"), &short), MEMBERS), vec!["P1", "D01", "1"]);
    }
}
