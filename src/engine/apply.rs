//! Applying one logged batch to the store: cleanse, resolve, place, refresh the profiles it
//! touched, all in one store transaction with the batch's sequence. Deterministic: replaying
//! the same log entry on the same store gives the same persons and ids.

use crate::catalog::Catalog;
use crate::cleanse::{cleanse_record, rules};
use crate::model::{CleanRecord, Decision, Finding, PersonId, RecordKey, SourceId, TagCode};
use crate::profile::{offer, survive_tags, RecordView};
use crate::resolve::{decide, Evidence, Placement, Previous};
use crate::store::{layout, RecordHeader, Store, StoreError, StoredRecord, Txn};
use crate::wal::WalEntry;
use std::collections::{BTreeMap, BTreeSet};

/// The decision for one admitted record of an entry, in entry order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub decision: Decision,
    pub person_id: PersonId,
}

/// Takes the entry by value: cleansing moves each record's strings instead of copying them.
pub fn apply_entry(store: &Store, catalog: &Catalog, entry: WalEntry) -> Result<Vec<Placed>, StoreError> {
    let mut txn = store.begin();
    let mut touched: BTreeMap<PersonId, Touched> = BTreeMap::new();
    let mut released_id_numbers: BTreeSet<String> = BTreeSet::new();
    let mut placed = Vec::with_capacity(entry.records.len());
    let repeated_in_batch: Vec<bool> = {
        let mut seen_keys: std::collections::HashSet<&RecordKey> = std::collections::HashSet::new();
        entry.records.iter().map(|raw| !seen_keys.insert(&raw.key)).collect()
    };
    for (record_idx, raw) in entry.records.into_iter().enumerate() {
        let stated_observed_at = raw.observed_at;
        let mut clean = cleanse_record(raw, entry.received_at, catalog);
        if repeated_in_batch[record_idx] {
            clean.findings.push(Finding {
                rule_id: rules::DUPLICATE_IN_BATCH.into(),
                tag: None,
                original: None,
            });
        }
        let previous_record = txn.record(&clean.key)?;
        if let Some(previous) = &previous_record {
            // A record re-sent without an observation time is the same observation.
            let same_time = stated_observed_at.is_none_or(|observed_at| observed_at == previous.header.observed_at);
            if same_time && previous.tags == clean.tags {
                placed.push(Placed {
                    decision: Decision::Unchanged,
                    person_id: previous.header.person_id.clone(),
                });
                continue;
            }
        }
        let previous_header = previous_record.map(|record| record.header);
        let id_number_owner = match &clean.id_number {
            Some(id_number) => txn.person_for_id_number(id_number)?,
            None => None,
        };
        if let Some(owner) = &id_number_owner {
            if names_another_person(&txn, owner, &clean)? {
                let original = clean
                    .tags
                    .get(&TagCode::new("id_number"))
                    .map(|value| value.raw.clone());
                clean.findings.push(Finding {
                    rule_id: rules::SHARED_ID_NUMBER.into(),
                    tag: Some(TagCode::new("id_number")),
                    original,
                });
            }
        }
        let previous = match &previous_header {
            Some(header) => Some(Previous {
                person_id: header.person_id.clone(),
                person_has_other_records: txn.members(&header.person_id)?.len() > 1,
            }),
            None => None,
        };
        let evidence = Evidence {
            id_number_owner,
            previous,
        };
        let record_idx = u32::try_from(record_idx).expect("batches are bounded by the config");
        let (person_id, decision) = match decide(&clean, &evidence) {
            Placement::Existing { person_id, decision } => (person_id, decision),
            Placement::New => (layout::person_id_for(entry.sequence, record_idx), Decision::Created),
        };
        if let Some(previous) = &previous_header {
            // The old version leaves its person's profile whether or not the record moves.
            touched
                .entry(previous.person_id.clone())
                .or_default()
                .removed
                .insert(clean.key.clone());
            if previous.person_id != person_id {
                txn.remove_member(&previous.person_id, &clean.key)?;
            }
            if let Some(old_id_number) = &previous.id_number {
                released_id_numbers.insert(old_id_number.clone());
            }
        }
        txn.add_member(&person_id, &clean.key)?;
        if let Some(id_number) = &clean.id_number {
            txn.set_id_number_key(id_number, &person_id)?;
        }
        txn.count_quality(&clean.key.source, layout::QUALITY_RECORDS)?;
        for finding in &clean.findings {
            txn.count_quality(&clean.key.source, &finding.rule_id)?;
        }
        let stored = StoredRecord {
            header: RecordHeader {
                person_id: person_id.clone(),
                observed_at: clean.observed_at,
                id_number: clean.id_number.clone(),
                findings: clean.findings,
                sequence: entry.sequence,
            },
            tags: clean.tags,
        };
        txn.put_record(&clean.key, &stored)?;
        touched
            .entry(person_id.clone())
            .or_default()
            .added
            .insert(clean.key.clone());
        placed.push(Placed { decision, person_id });
    }
    for (source, rule_id) in &entry.rejected {
        txn.count_quality(source, layout::QUALITY_REJECTED)?;
        txn.count_quality(source, rule_id)?;
    }
    for id_number in released_id_numbers {
        drop_key_if_orphaned(&mut txn, &id_number)?;
    }
    for (person_id, change) in &touched {
        refresh_person(&mut txn, catalog, person_id, change)?;
    }
    txn.set_applied_sequence(entry.sequence)?;
    txn.commit()?;
    Ok(placed)
}

/// Whether another record of the same source in `owner` names a clearly different person
/// under the same ID number: both names present and not sharing a single character (a typo
/// keeps most of a name).
fn names_another_person(txn: &Txn<'_>, owner: &PersonId, clean: &CleanRecord) -> Result<bool, StoreError> {
    let name = TagCode::new("name");
    let Some(this_name) = clean.tags.get(&name).map(|value| value.standardized.as_str()) else {
        return Ok(false);
    };
    if this_name.is_empty() {
        return Ok(false);
    }
    for key in txn.members_of_source(owner, &clean.key.source)? {
        if key == clean.key {
            continue;
        }
        let Some(other) = txn.record(&key)? else { continue };
        let Some(other_name) = other.tags.get(&name).map(|value| value.standardized.as_str()) else {
            continue;
        };
        if !other_name.is_empty() && !other_name.chars().any(|c| this_name.contains(c)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Removes the ID-number key when no record of its person carries that number any more.
fn drop_key_if_orphaned(txn: &mut Txn<'_>, id_number: &str) -> Result<(), StoreError> {
    let Some(owner) = txn.person_for_id_number(id_number)? else {
        return Ok(());
    };
    for key in txn.members(&owner)? {
        let header = txn.record_header(&key)?;
        if header.and_then(|header| header.id_number).as_deref() == Some(id_number) {
            return Ok(());
        }
    }
    txn.remove_id_number_key(id_number)
}

/// What a batch did to one person's records.
#[derive(Default)]
struct Touched {
    /// Records whose previous version this person held (replaced or moved away).
    removed: BTreeSet<RecordKey>,
    /// Records whose new version was placed in this person.
    added: BTreeSet<RecordKey>,
}

/// Brings a person's profile up to date without reading every record when it can: tags won
/// by a removed record version are recomputed (from that department's records only, for a
/// department tag), then every added record competes for the tags it carries. The result
/// equals survivorship over all the person's records (see `profile::offer`).
fn refresh_person(
    txn: &mut Txn<'_>,
    catalog: &Catalog,
    person_id: &PersonId,
    change: &Touched,
) -> Result<(), StoreError> {
    let mut profile = txn.profile(person_id, &[])?;
    let stale: BTreeSet<TagCode> = profile
        .iter()
        .filter(|(_, entry)| {
            change
                .removed
                .iter()
                .any(|key| key.source == entry.source && key.record_id == entry.record_id)
        })
        .map(|(tag, _)| tag.clone())
        .collect();
    if !stale.is_empty() {
        profile.retain(|tag, _| !stale.contains(tag));
        let canonical_stale = stale.iter().any(|tag| layout::profile_group_of(tag).is_empty());
        let contenders = if canonical_stale {
            txn.members(person_id)?
        } else {
            let mut contenders = Vec::new();
            let sources: BTreeSet<String> = stale.iter().map(layout::profile_group_of).collect();
            for source in sources {
                if let Some(source) = SourceId::parse(&source) {
                    contenders.extend(txn.members_of_source(person_id, &source)?);
                }
            }
            contenders
        };
        let loaded = load_records(txn, &contenders)?;
        let views = views_of(&loaded);
        profile.extend(survive_tags(&views, &stale, catalog));
    }
    let added: Vec<RecordKey> = change.added.iter().cloned().collect();
    let mut loaded = load_records(txn, &added)?;
    // A record placed here and moved on later in the same batch no longer competes here.
    loaded.retain(|(_, record)| record.header.person_id == *person_id);
    for view in views_of(&loaded) {
        offer(&mut profile, &view, catalog);
    }
    txn.write_person(person_id, &profile)?;
    Ok(())
}

fn load_records(txn: &Txn<'_>, keys: &[RecordKey]) -> Result<Vec<(RecordKey, StoredRecord)>, StoreError> {
    keys.iter()
        .map(|key| {
            let record = txn.record(key)?.ok_or_else(|| StoreError::Corrupt {
                kind: "membership",
                message: "a person lists a record that is not stored".into(),
            })?;
            Ok((key.clone(), record))
        })
        .collect()
}

fn views_of(loaded: &[(RecordKey, StoredRecord)]) -> Vec<RecordView<'_>> {
    loaded
        .iter()
        .map(|(key, record)| RecordView {
            key,
            observed_at: record.header.observed_at,
            tags: &record.tags,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RawRecord, SourceId, TagCode};
    use crate::store::kv::MemKv;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// A small world: records of 12 ID numbers (some in legacy or lower-case form), some
    /// without a number, some re-sent with new content.
    fn records() -> Vec<RawRecord> {
        let ids = (0..12u32)
            .map(|n| {
                let first17 = format!("3301061985{:02}0{}{:03}", 1 + n % 12, 1 + n % 9, n);
                let digits: &[u8; 17] = first17.as_bytes().try_into().expect("17 digits");
                format!(
                    "{first17}{}",
                    char::from(crate::cleanse::id_number::check_digit(digits))
                )
            })
            .collect::<Vec<_>>();
        (0..60u32)
            .map(|n| {
                let source = SourceId::parse(&format!("D{:02}", 1 + n % 5)).expect("well-formed");
                let mut tags = BTreeMap::new();
                tags.insert(TagCode::new("name"), format!("人{}", n % 7));
                if n % 6 != 5 {
                    let id = &ids[(n % 12) as usize];
                    let form = match n % 3 {
                        0 => id.clone(),
                        1 => id.to_lowercase(),
                        _ => format!("{} {}", &id[..6], &id[6..]),
                    };
                    tags.insert(TagCode::new("id_number"), form);
                }
                RawRecord {
                    key: crate::model::RecordKey {
                        source,
                        record_id: format!("r{n}"),
                    },
                    observed_at: Some(i64::from(n) * 1_000),
                    tags,
                }
            })
            .collect()
    }

    /// Loads `records` in `order`, in batches of `batch_size`, and returns the partition of
    /// record keys into persons (person ids dropped: they depend on the order).
    fn partition(records: &[RawRecord], order: &[usize], batch_size: usize) -> BTreeSet<BTreeSet<RecordKey>> {
        let store = Store::open(Box::new(MemKv::default())).expect("opens");
        let catalog = Catalog::shipped();
        for (batch_idx, chunk) in order.chunks(batch_size).enumerate() {
            let entry = WalEntry {
                sequence: batch_idx as u64 + 1,
                received_at: 0,
                records: chunk.iter().map(|&idx| records[idx].clone()).collect(),
                rejected: vec![],
            };
            apply_entry(&store, &catalog, entry.clone()).expect("applies");
        }
        let mut persons: BTreeMap<PersonId, BTreeSet<RecordKey>> = BTreeMap::new();
        for (key, person_id) in store.mapping_page(None, usize::MAX).expect("mapping") {
            persons.entry(person_id).or_default().insert(key);
        }
        persons.into_values().collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// DESIGN.md: loading the same records in any order, in any batching, gives the same
        /// persons.
        #[test]
        fn any_order_gives_the_same_persons(order in Just((0..60usize).collect::<Vec<_>>()).prop_shuffle(), batch_size in 1usize..25) {
            let records = records();
            let in_order: Vec<usize> = (0..records.len()).collect();
            prop_assert_eq!(partition(&records, &order, batch_size), partition(&records, &in_order, 60));
        }
    }

    /// Every stored profile equals survivorship over all of its person's records.
    fn assert_profiles_consistent(store: &Store, catalog: &Catalog) {
        let txn = store.begin();
        let mut persons: BTreeMap<PersonId, Vec<RecordKey>> = BTreeMap::new();
        for (key, person_id) in store.mapping_page(None, usize::MAX).expect("mapping") {
            persons.entry(person_id).or_default().push(key);
        }
        for (person_id, keys) in persons {
            assert_eq!(txn.members(&person_id).expect("members"), keys);
            let header = txn.person(&person_id).expect("read").expect("person exists");
            assert_eq!(header.n_records as usize, keys.len());
            let loaded = load_records(&txn, &keys).expect("records");
            let expected = crate::profile::survive(&views_of(&loaded), catalog);
            assert_eq!(
                txn.profile(&person_id, &[]).expect("profile"),
                expected,
                "profile of {person_id}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Re-sends with new content (new names, new or removed ID numbers, so records move
        /// between persons) keep every profile equal to survivorship over its records.
        #[test]
        fn incremental_profiles_stay_exact(resends in proptest::collection::vec((0usize..60, 0u32..4, 0i64..100_000), 1..40), batch_size in 1usize..20) {
            let catalog = Catalog::shipped();
            let store = Store::open(Box::new(MemKv::default())).expect("opens");
            let mut all = records();
            let base = all.clone();
            for (idx, variant, time) in resends {
                let mut record = base[idx].clone();
                record.observed_at = Some(time);
                record.tags.insert(TagCode::new("name"), format!("改{variant}"));
                match variant {
                    0 => { record.tags.remove(&TagCode::new("id_number")); }
                    1 => { record.tags.insert(TagCode::new("id_number"), base[(idx + 1) % 60].tags.get(&TagCode::new("id_number")).cloned().unwrap_or_default()); }
                    _ => { record.tags.insert(TagCode::new("phone"), format!("1380000{variant:04}")); }
                }
                record.tags.retain(|_, value| !value.is_empty());
                all.push(record);
            }
            for (batch_idx, chunk) in all.chunks(batch_size).enumerate() {
                let entry = WalEntry { sequence: batch_idx as u64 + 1, received_at: 0, records: chunk.to_vec(), rejected: vec![] };
                apply_entry(&store, &catalog, entry.clone()).expect("applies");
            }
            assert_profiles_consistent(&store, &catalog);
        }
    }

    fn raw(source: &str, record_id: &str, tags: &[(&str, &str)]) -> RawRecord {
        RawRecord {
            key: crate::model::RecordKey {
                source: SourceId::parse(source).expect("well-formed"),
                record_id: record_id.into(),
            },
            observed_at: None,
            tags: tags
                .iter()
                .map(|(tag, value)| (TagCode::new(*tag), value.to_string()))
                .collect(),
        }
    }

    fn findings_of(store: &Store, source: &str, record_id: &str) -> Vec<String> {
        let key = crate::model::RecordKey {
            source: SourceId::parse(source).expect("well-formed"),
            record_id: record_id.into(),
        };
        let record = store.begin().record(&key).expect("read").expect("stored");
        record
            .header
            .findings
            .into_iter()
            .map(|finding| finding.rule_id.into_owned())
            .collect()
    }

    /// UNI-001 and UNI-002, the uniqueness rules that need the store.
    #[test]
    fn uniqueness_rules() {
        let store = Store::open(Box::new(MemKv::default())).expect("opens");
        let catalog = Catalog::shipped();
        let id = "33010619900102177X";
        let entry = WalEntry {
            sequence: 1,
            received_at: 0,
            records: vec![
                raw("D05", "a", &[("id_number", id), ("name", "张伟")]),
                raw("D05", "b", &[("id_number", id), ("name", "张玮")]),
                raw("D05", "c", &[("id_number", id), ("name", "李娜")]),
                raw("D07", "d", &[("id_number", id), ("name", "王芳")]),
                raw("D07", "e", &[("name", "赵敏")]),
                raw("D07", "e", &[("name", "赵敏"), ("phone", "13800000000")]),
            ],
            rejected: vec![(SourceId::parse("D07").expect("well-formed"), rules::UNKNOWN_TAG.into())],
        };
        apply_entry(&store, &catalog, entry.clone()).expect("applies");
        // A typo (张玮 for 张伟) is not a different person; 李娜 clearly is.
        assert!(!findings_of(&store, "D05", "b").contains(&rules::SHARED_ID_NUMBER.to_string()));
        assert!(findings_of(&store, "D05", "c").contains(&rules::SHARED_ID_NUMBER.to_string()));
        // Only records of the same source are compared.
        assert!(!findings_of(&store, "D07", "d").contains(&rules::SHARED_ID_NUMBER.to_string()));
        assert!(findings_of(&store, "D07", "e").contains(&rules::DUPLICATE_IN_BATCH.to_string()));
        let d07 = store
            .quality(Some(&SourceId::parse("D07").expect("well-formed")))
            .expect("quality");
        assert_eq!(d07.get(layout::QUALITY_REJECTED), Some(&1));
        assert_eq!(d07.get(rules::UNKNOWN_TAG), Some(&1));
        assert_eq!(d07.get(layout::QUALITY_RECORDS), Some(&3), "d, e and e's new version");
    }

    #[test]
    fn replaying_an_entry_changes_nothing() {
        let store = Store::open(Box::new(MemKv::default())).expect("opens");
        let catalog = Catalog::shipped();
        let entry = WalEntry {
            sequence: 1,
            received_at: 0,
            records: records(),
            rejected: vec![],
        };
        let first = apply_entry(&store, &catalog, entry.clone()).expect("applies");
        let stats = store.stats().expect("stats");
        let again = apply_entry(&store, &catalog, entry.clone()).expect("applies");
        assert!(again.iter().all(|placed| placed.decision == Decision::Unchanged));
        let first_persons: Vec<&PersonId> = first.iter().map(|placed| &placed.person_id).collect();
        let again_persons: Vec<&PersonId> = again.iter().map(|placed| &placed.person_id).collect();
        assert_eq!(first_persons, again_persons);
        assert_eq!(store.stats().expect("stats").n_persons, stats.n_persons);
    }
}
