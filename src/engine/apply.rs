//! Applying one logged batch to the store: cleanse, resolve, place, refresh the profiles it
//! touched, all in one store transaction with the batch's sequence. Deterministic: replaying
//! the same log entry on the same store gives the same persons and ids.

use crate::catalog::Catalog;
use crate::cleanse::cleanse_record;
use crate::model::{Decision, PersonId, RecordKey};
use crate::profile::{survive, RecordView};
use crate::resolve::{decide, Evidence, Placement, Previous};
use crate::store::{layout, RecordHeader, Store, StoreError, StoredRecord, Txn};
use crate::wal::WalEntry;
use std::collections::BTreeSet;

/// The decision for one admitted record of an entry, in entry order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub decision: Decision,
    pub person_id: PersonId,
}

pub fn apply_entry(store: &Store, catalog: &Catalog, entry: &WalEntry) -> Result<Vec<Placed>, StoreError> {
    let mut txn = store.begin();
    let mut touched: BTreeSet<PersonId> = BTreeSet::new();
    let mut released_id_numbers: BTreeSet<String> = BTreeSet::new();
    let mut placed = Vec::with_capacity(entry.records.len());
    for (record_idx, raw) in entry.records.iter().enumerate() {
        let clean = cleanse_record(raw, entry.received_at, catalog);
        let previous_record = txn.record(&clean.key)?;
        if let Some(previous) = &previous_record {
            // A record re-sent without an observation time is the same observation.
            let same_time = raw
                .observed_at
                .is_none_or(|observed_at| observed_at == previous.header.observed_at);
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
            if previous.person_id != person_id {
                txn.remove_member(&previous.person_id, &clean.key)?;
                touched.insert(previous.person_id.clone());
            }
            if let Some(old_id_number) = &previous.id_number {
                released_id_numbers.insert(old_id_number.clone());
            }
        }
        txn.add_member(&person_id, &clean.key)?;
        if let Some(id_number) = &clean.id_number {
            txn.set_id_number_key(id_number, &person_id)?;
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
        touched.insert(person_id.clone());
        placed.push(Placed { decision, person_id });
    }
    for id_number in released_id_numbers {
        drop_key_if_orphaned(&mut txn, &id_number)?;
    }
    for person_id in &touched {
        refresh_person(&mut txn, catalog, person_id)?;
    }
    txn.set_applied_sequence(entry.sequence)?;
    txn.commit()?;
    Ok(placed)
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

/// Recomputes a person's profile from all its records and writes what changed.
fn refresh_person(txn: &mut Txn<'_>, catalog: &Catalog, person_id: &PersonId) -> Result<(), StoreError> {
    let members = txn.members(person_id)?;
    let mut loaded: Vec<(RecordKey, StoredRecord)> = Vec::with_capacity(members.len());
    for key in members {
        let record = txn.record(&key)?.ok_or_else(|| StoreError::Corrupt {
            kind: "membership",
            message: "a person lists a record that is not stored".into(),
        })?;
        loaded.push((key, record));
    }
    let views: Vec<RecordView<'_>> = loaded
        .iter()
        .map(|(key, record)| RecordView {
            key,
            observed_at: record.header.observed_at,
            tags: &record.tags,
        })
        .collect();
    let profile = survive(&views, catalog);
    let n_records = u32::try_from(loaded.len()).expect("a person holds fewer than 4 billion records");
    txn.write_person(person_id, n_records, &profile)?;
    Ok(())
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
            };
            apply_entry(&store, &catalog, &entry).expect("applies");
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

    #[test]
    fn replaying_an_entry_changes_nothing() {
        let store = Store::open(Box::new(MemKv::default())).expect("opens");
        let catalog = Catalog::shipped();
        let entry = WalEntry {
            sequence: 1,
            received_at: 0,
            records: records(),
        };
        let first = apply_entry(&store, &catalog, &entry).expect("applies");
        let stats = store.stats().expect("stats");
        let again = apply_entry(&store, &catalog, &entry).expect("applies");
        assert!(again.iter().all(|placed| placed.decision == Decision::Unchanged));
        let first_persons: Vec<&PersonId> = first.iter().map(|placed| &placed.person_id).collect();
        let again_persons: Vec<&PersonId> = again.iter().map(|placed| &placed.person_id).collect();
        assert_eq!(first_persons, again_persons);
        assert_eq!(store.stats().expect("stats").n_persons, stats.n_persons);
    }
}
