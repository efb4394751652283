//! Applying one logged batch to the store: cleanse, resolve, place, refresh the profiles it
//! touched, all in one store transaction with the batch's sequence. Deterministic: replaying
//! the same log entry on the same store gives the same persons and ids.

use crate::catalog::Catalog;
use crate::cleanse::cleanse_record;
use crate::model::{Decision, PersonId, RecordKey};
use crate::profile::{survive, RecordView};
use crate::resolve::{decide, Evidence, Placement, Previous};
use crate::store::{layout, RecordHeader, Store, StoreError, Txn};
use crate::wal::WalEntry;
use std::collections::{BTreeMap, BTreeSet};

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
        let previous_header = txn.record_header(&clean.key)?;
        if let Some(previous) = &previous_header {
            // A record re-sent without an observation time is the same observation.
            let same_time = raw.observed_at.is_none_or(|observed_at| observed_at == previous.observed_at);
            let same_content = same_time && txn.record_tags(&clean.key)? == clean.tags;
            if same_content {
                placed.push(Placed {
                    decision: Decision::Unchanged,
                    person_id: previous.person_id.clone(),
                });
                continue;
            }
        }
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
                txn.remove_member(&previous.person_id, &clean.key);
                touched.insert(previous.person_id.clone());
            }
            if let Some(old_id_number) = &previous.id_number {
                released_id_numbers.insert(old_id_number.clone());
            }
        }
        txn.add_member(&person_id, &clean.key)?;
        if let Some(id_number) = &clean.id_number {
            txn.set_id_number_key(id_number, &person_id);
        }
        let header = RecordHeader {
            person_id: person_id.clone(),
            observed_at: clean.observed_at,
            id_number: clean.id_number.clone(),
            findings: clean.findings.clone(),
            sequence: entry.sequence,
        };
        txn.put_record(&clean.key, &header, &clean.tags)?;
        touched.insert(person_id.clone());
        placed.push(Placed { decision, person_id });
    }
    for id_number in released_id_numbers {
        drop_key_if_orphaned(&mut txn, &id_number)?;
    }
    for person_id in &touched {
        refresh_person(&mut txn, catalog, person_id)?;
    }
    txn.set_applied_sequence(entry.sequence);
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
    txn.remove_id_number_key(id_number);
    Ok(())
}

/// Recomputes a person's profile from all its records and writes what changed.
fn refresh_person(txn: &mut Txn<'_>, catalog: &Catalog, person_id: &PersonId) -> Result<(), StoreError> {
    let members = txn.members(person_id)?;
    let mut loaded: Vec<(RecordKey, i64, BTreeMap<_, _>)> = Vec::with_capacity(members.len());
    for key in members {
        let header = txn.record_header(&key)?.ok_or_else(|| StoreError::Corrupt {
            kind: "membership",
            message: "a person lists a record that is not stored".into(),
        })?;
        let tags = txn.record_tags(&key)?;
        loaded.push((key, header.observed_at, tags));
    }
    let views: Vec<RecordView<'_>> = loaded
        .iter()
        .map(|(key, observed_at, tags)| RecordView {
            key,
            observed_at: *observed_at,
            tags,
        })
        .collect();
    let profile = survive(&views, catalog);
    let n_records = u32::try_from(loaded.len()).expect("a person holds fewer than 4 billion records");
    txn.write_person(person_id, n_records, &profile)?;
    Ok(())
}
