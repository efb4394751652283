//! Steward actions and record deletions on the write path: merge, unmerge, review decisions,
//! a deletion's re-clustering of the person that held the record, and an operator's
//! re-resolution of persons with the current model. They come through the
//! write-ahead log like a batch, so a replay repeats them exactly, and each leaves its mark in
//! the histories of the persons it touched.

use super::apply::{
    consolidate_as, count_names, load_records, merge_person, name_share, record_features, refresh_features, Placed,
    ReviewItem, Touched,
};
use crate::catalog::Catalog;
use crate::model::{Cause, Decision, EpochMillis, PersonEvent, PersonId, RecordKey, StewardAction};
use crate::resolve::{self, blocking_keys, Features, MatchModel};
use crate::store::{StoreError, Txn};
use std::collections::{BTreeMap, BTreeSet};

/// A person with more records than this is not re-clustered after a deletion: the pairwise
/// work grows with the square of its records. It keeps its records together.
pub const RECLUSTER_RECORDS_MAX: usize = 2_000;

/// Applies one action. Returns the persons it left, the main one first (the survivor of a
/// merge, the person a record was deleted from), then any new person with `Created`; empty
/// when there was nothing to do (the persons changed meanwhile, the record was already gone).
pub(super) fn apply_action(
    txn: &mut Txn<'_>,
    catalog: &Catalog,
    model: &MatchModel,
    action: &StewardAction,
    sequence: u64,
    at: EpochMillis,
    touched: &mut BTreeMap<PersonId, Touched>,
) -> Result<Vec<Placed>, StoreError> {
    match action {
        StewardAction::Merge { a, b, note } => {
            let (Some(a), Some(b)) = (current_person(txn, a)?, current_person(txn, b)?) else {
                return Ok(Vec::new());
            };
            let cause = Cause::Steward { note: note.clone() };
            Ok(merge_two(txn, &a, &b, at, cause, touched)?.into_iter().collect())
        }
        StewardAction::Unmerge { person, records, note } => {
            let Some(person) = current_person(txn, person)? else {
                return Ok(Vec::new());
            };
            let members: BTreeSet<RecordKey> = txn.members(&person)?.into_iter().collect();
            let moving: BTreeSet<RecordKey> = records.iter().filter(|key| members.contains(*key)).cloned().collect();
            if moving.is_empty() || moving.len() == members.len() {
                return Ok(Vec::new());
            }
            let new_person = txn.mint_person(sequence, 0);
            let cause = Cause::Steward { note: note.clone() };
            split_off(txn, catalog, &person, &new_person, &moving, cause, touched)?;
            // An unmerge overrides an earlier "these are one" across the records it separates;
            // each side stays held together within itself.
            let mut linked: [BTreeSet<RecordKey>; 2] = Default::default();
            for key in &moving {
                for other in txn.records_held_together(key)? {
                    if !moving.contains(&other) {
                        txn.release_together(key, &other);
                        linked[0].insert(key.clone());
                        linked[1].insert(other);
                    }
                }
            }
            for side in linked {
                txn.hold_together(&side.into_iter().collect::<Vec<_>>())?;
            }
            hold_apart(txn, &person, &new_person, note, touched)?;
            Ok(vec![
                Placed {
                    decision: Decision::Matched,
                    person_id: person,
                },
                Placed {
                    decision: Decision::Created,
                    person_id: new_person,
                },
            ])
        }
        StewardAction::ResolveReview {
            record,
            candidate,
            same,
            note,
        } => {
            let Some(mut item) = txn.review_item::<ReviewItem>(record)? else {
                return Ok(Vec::new());
            };
            let Some(position) = item.candidates.iter().position(|scored| scored.person_id == *candidate) else {
                return Ok(Vec::new());
            };
            item.candidates.remove(position);
            txn.set_review_item(record, (!item.candidates.is_empty()).then(|| (&item, item.best())))?;
            let (Some(header), Some(candidate)) = (txn.record_header(record)?, current_person(txn, candidate)?) else {
                return Ok(Vec::new());
            };
            let person = header.person_id;
            if person == candidate {
                return Ok(vec![Placed {
                    decision: Decision::Matched,
                    person_id: person,
                }]);
            }
            let cause = Cause::Steward { note: note.clone() };
            if *same {
                Ok(merge_two(txn, &person, &candidate, at, cause, touched)?
                    .into_iter()
                    .collect())
            } else {
                hold_apart(txn, &person, &candidate, note, touched)?;
                Ok(vec![Placed {
                    decision: Decision::Review,
                    person_id: person,
                }])
            }
        }
        StewardAction::DeleteRecord { record } => {
            let Some(stored) = txn.record(record)? else {
                return Ok(Vec::new());
            };
            let person = stored.header.person_id.clone();
            count_names(txn, &record_features(&stored, catalog), -1)?;
            txn.remove_member(&person, record)?;
            txn.delete_record(record)?;
            refresh_features(txn, catalog, &person)?;
            let change = touched.entry(person.clone()).or_default();
            change.full = true;
            change.events.push(PersonEvent::RecordRemoved {
                record: record.clone(),
                cause: Cause::Deletion,
            });
            let mut placed = vec![Placed {
                decision: Decision::Matched,
                person_id: person.clone(),
            }];
            let mut ids = NewIds::after(sequence, 0);
            for new_person in recluster(txn, catalog, model, &person, &mut ids, &Cause::Deletion, touched)? {
                placed.push(Placed {
                    decision: Decision::Created,
                    person_id: new_person,
                });
            }
            Ok(placed)
        }
        StewardAction::Reevaluate { persons } => {
            let mut ids = NewIds::after(sequence, 0);
            let mut changes = Vec::new();
            for person in persons {
                if let Some(person) = current_person(txn, person)? {
                    changes.extend(reevaluate(txn, catalog, model, &person, &mut ids, at, touched)?);
                }
            }
            Ok(changes)
        }
    }
}

/// Remembers that a steward said two persons differ, in both histories.
fn hold_apart(
    txn: &mut Txn<'_>,
    a: &PersonId,
    b: &PersonId,
    note: &str,
    touched: &mut BTreeMap<PersonId, Touched>,
) -> Result<(), StoreError> {
    txn.hold_apart(a, b, note)?;
    for (this, other) in [(a, b), (b, a)] {
        touched
            .entry(this.clone())
            .or_default()
            .events
            .push(PersonEvent::HeldApart {
                person: other.clone(),
                note: note.to_string(),
            });
    }
    Ok(())
}

/// The person an id names now: itself, or the survivor it was merged into.
pub(super) fn current_person(txn: &Txn<'_>, person_id: &PersonId) -> Result<Option<PersonId>, StoreError> {
    Ok(super::current_person(txn, person_id)?.map(|(current, _)| current))
}

/// Joins two persons for a steward: the one with more records (then the smaller id) keeps its
/// id; what stewards said about them is kept, except that they differ.
fn merge_two(
    txn: &mut Txn<'_>,
    a: &PersonId,
    b: &PersonId,
    at: EpochMillis,
    cause: Cause,
    touched: &mut BTreeMap<PersonId, Touched>,
) -> Result<Option<Placed>, StoreError> {
    if a == b {
        return Ok(None);
    }
    let (Some(header_a), Some(header_b)) = (txn.person(a)?, txn.person(b)?) else {
        return Ok(None);
    };
    let keep_a = header_a.n_records > header_b.n_records || (header_a.n_records == header_b.n_records && a < b);
    let (survivor, loser) = if keep_a { (a, b) } else { (b, a) };
    // Remembered at the record level, so re-clustering after a deletion keeps them together.
    let mut records = txn.members(survivor)?;
    records.extend(txn.members(loser)?);
    txn.hold_together(&records)?;
    txn.release_apart(survivor, loser);
    merge_person(txn, loser, survivor, touched, at, cause)?;
    Ok(Some(Placed {
        decision: Decision::Merged,
        person_id: survivor.clone(),
    }))
}

/// Moves `records` out of `from` into the new person `to`, with their features and postings;
/// both histories say so.
fn split_off(
    txn: &mut Txn<'_>,
    catalog: &Catalog,
    from: &PersonId,
    to: &PersonId,
    records: &BTreeSet<RecordKey>,
    cause: Cause,
    touched: &mut BTreeMap<PersonId, Touched>,
) -> Result<(), StoreError> {
    for key in records {
        txn.remove_member(from, key)?;
        txn.add_member(to, key)?;
        txn.set_record_person(key, to)?;
    }
    refresh_features(txn, catalog, from)?;
    refresh_features(txn, catalog, to)?;
    let change = touched.entry(from.clone()).or_default();
    change.full = true;
    change.events.push(PersonEvent::SplitOff {
        person: to.clone(),
        records: records.iter().cloned().collect(),
        cause: cause.clone(),
    });
    let change = touched.entry(to.clone()).or_default();
    change.full = true;
    change.events.push(PersonEvent::SplitFrom {
        person: from.clone(),
        cause,
    });
    Ok(())
}

/// After a record left `person`, checks that its other records still hold together, the way
/// the matcher would place them arriving in their original order (each joins the group it
/// matches; a record matching several groups joins them), keeping records a steward joined
/// together. If the deleted record was the only bridge, the groups become separate persons:
/// the largest keeps the id. Returns the new persons.
fn recluster(
    txn: &mut Txn<'_>,
    catalog: &Catalog,
    model: &MatchModel,
    person: &PersonId,
    ids: &mut NewIds,
    cause: &Cause,
    touched: &mut BTreeMap<PersonId, Touched>,
) -> Result<Vec<PersonId>, StoreError> {
    let members = txn.members(person)?;
    if members.len() <= 1 || members.len() > RECLUSTER_RECORDS_MAX {
        return Ok(Vec::new());
    }
    let mut loaded = load_records(txn, &members)?;
    loaded.sort_by(|(a_key, a), (b_key, b)| a.header.sequence.cmp(&b.header.sequence).then_with(|| a_key.cmp(b_key)));
    let keys: Vec<RecordKey> = loaded.iter().map(|(key, _)| key.clone()).collect();
    let features: Vec<Features> = loaded
        .iter()
        .map(|(_, record)| record_features(record, catalog))
        .collect();
    let n_persons = txn.n_persons()?;
    let mut groups = Groups::new(keys.len());
    {
        let name_share = name_share(txn, model);
        let mut group_features: BTreeMap<usize, Features> = BTreeMap::new();
        for (idx, record) in features.iter().enumerate() {
            let matching: Vec<usize> = group_features
                .iter()
                .filter(|(_, held)| {
                    let (score, hold) = resolve::explain_pair(record, held, model, n_persons, &name_share);
                    hold.is_none() && score.probability() >= model.match_probability
                })
                .map(|(root, _)| *root)
                .collect();
            let mut joined = record.clone();
            for root in &matching {
                if let Some(held) = group_features.remove(root) {
                    joined.absorb(&held);
                }
                groups.union(*root, idx);
            }
            group_features.insert(groups.find(idx), joined);
        }
    }
    let position: BTreeMap<&RecordKey, usize> = keys.iter().enumerate().map(|(idx, key)| (key, idx)).collect();
    for (idx, key) in keys.iter().enumerate() {
        for other in txn.records_held_together(key)? {
            if let Some(&other_idx) = position.get(&other) {
                groups.union(idx, other_idx);
            }
        }
    }
    let mut clusters: BTreeMap<usize, BTreeSet<RecordKey>> = BTreeMap::new();
    for (idx, key) in keys.iter().enumerate() {
        clusters.entry(groups.find(idx)).or_default().insert(key.clone());
    }
    if clusters.len() <= 1 {
        return Ok(Vec::new());
    }
    let mut clusters: Vec<BTreeSet<RecordKey>> = clusters.into_values().collect();
    // The largest group keeps the id; ties go to the group with the smallest record key.
    clusters.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.first().cmp(&b.first())));
    let mut new_persons = Vec::new();
    for cluster in clusters.iter().skip(1) {
        let new_person = ids.next(txn);
        split_off(txn, catalog, person, &new_person, cluster, cause.clone(), touched)?;
        new_persons.push(new_person);
    }
    Ok(new_persons)
}

/// The ids of the persons one log entry creates: from its sequence and a running slot, so a
/// replay gives the same ids.
pub(super) struct NewIds {
    sequence: u64,
    slot: u32,
}

impl NewIds {
    pub(super) fn after(sequence: u64, used: u32) -> NewIds {
        NewIds { sequence, slot: used }
    }

    fn next(&mut self, txn: &mut Txn<'_>) -> PersonId {
        self.slot = self.slot.saturating_add(1);
        txn.mint_person(self.sequence, self.slot)
    }
}

/// Re-resolves one person with the current model: splits it when its records no longer hold
/// together (records a steward joined stay together), then merges each part with the persons
/// it now matches on its blocking keys (never with a person a steward held apart). Returns
/// what changed: `Created` for each part split off, `Merged` (the survivor) for each merge.
fn reevaluate(
    txn: &mut Txn<'_>,
    catalog: &Catalog,
    model: &MatchModel,
    person: &PersonId,
    ids: &mut NewIds,
    at: EpochMillis,
    touched: &mut BTreeMap<PersonId, Touched>,
) -> Result<Vec<Placed>, StoreError> {
    let mut changes = Vec::new();
    let mut parts = vec![person.clone()];
    for new_person in recluster(txn, catalog, model, person, ids, &Cause::Reevaluation, touched)? {
        changes.push(Placed {
            decision: Decision::Created,
            person_id: new_person.clone(),
        });
        parts.push(new_person);
    }
    for part in parts {
        let Some(current) = current_person(txn, &part)? else {
            continue;
        };
        let features: Features = txn.person_features(&current)?.unwrap_or_default();
        let keys = blocking_keys(&features);
        let (survivor, merged) = consolidate_as(txn, model, &current, &keys, touched, at, Cause::Reevaluation)?;
        changes.extend(merged.iter().map(|_| Placed {
            decision: Decision::Merged,
            person_id: survivor.clone(),
        }));
    }
    Ok(changes)
}

/// Union–find over record positions.
struct Groups {
    parent: Vec<usize>,
}

impl Groups {
    fn new(n: usize) -> Groups {
        Groups {
            parent: (0..n).collect(),
        }
    }

    fn find(&mut self, mut idx: usize) -> usize {
        while self.parent[idx] != idx {
            self.parent[idx] = self.parent[self.parent[idx]];
            idx = self.parent[idx];
        }
        idx
    }

    /// Joins two groups; the smaller root stays the root, so roots are the earliest records.
    fn union(&mut self, a: usize, b: usize) {
        let (root_a, root_b) = (self.find(a), self.find(b));
        let (low, high) = if root_a < root_b {
            (root_a, root_b)
        } else {
            (root_b, root_a)
        };
        self.parent[high] = low;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::apply::apply_entry;
    use crate::model::{RawRecord, SourceId, TagCode};
    use crate::store::kv::MemKv;
    use crate::store::{ChangeKind, Store};
    use crate::wal::WalEntry;

    fn key(record_id: &str) -> RecordKey {
        RecordKey {
            source: SourceId::parse("D01").expect("well-formed"),
            record_id: record_id.into(),
        }
    }

    fn raw(record_id: &str, tags: &[(&str, &str)]) -> RawRecord {
        RawRecord {
            key: key(record_id),
            observed_at: Some(1_000),
            tags: tags
                .iter()
                .map(|(tag, value)| (TagCode::new(*tag), value.to_string()))
                .collect(),
        }
    }

    struct World {
        store: Store,
        catalog: Catalog,
        sequence: u64,
    }

    impl World {
        fn new() -> World {
            World {
                store: Store::open(Box::new(MemKv::default())).expect("opens"),
                catalog: Catalog::shipped(),
                sequence: 0,
            }
        }

        fn apply(&mut self, records: Vec<RawRecord>, steward: Option<StewardAction>) -> Vec<Placed> {
            self.sequence += 1;
            let entry = WalEntry {
                sequence: self.sequence,
                received_at: self.sequence as i64 * 1_000,
                records,
                rejected: vec![],
                model: None,
                steward,
                actor: None,
            };
            apply_entry(&self.store, &self.catalog, entry).expect("applies")
        }

        fn person_of(&self, record_id: &str) -> PersonId {
            self.store
                .begin()
                .record_header(&key(record_id))
                .expect("read")
                .expect("stored")
                .person_id
        }
    }

    const ID: &str = "33010619900102177X";
    const PHONE: &str = "13812345678";

    /// r1 and r3 only meet through r2 (r1 -ID- r2 -phone- r3).
    fn bridged(world: &mut World) {
        world.apply(
            vec![
                raw("r1", &[("name", "王小明"), ("id_number", ID)]),
                raw("r2", &[("name", "王小明"), ("id_number", ID), ("phone", PHONE)]),
                raw("r3", &[("name", "王小明"), ("phone", PHONE)]),
            ],
            None,
        );
        assert_eq!(world.person_of("r1"), world.person_of("r3"));
    }

    #[test]
    fn deleting_the_only_bridge_splits_the_person() {
        let mut world = World::new();
        bridged(&mut world);
        let person = world.person_of("r1");
        let placed = world.apply(vec![], Some(StewardAction::DeleteRecord { record: key("r2") }));
        assert_eq!(placed.len(), 2, "the person and one new person: {placed:?}");
        assert!(world.store.begin().record(&key("r2")).expect("read").is_none());
        assert_eq!(world.person_of("r1"), person, "the earliest group keeps the id");
        assert_ne!(world.person_of("r3"), person);
        let new_person = world.person_of("r3");
        let history = world.store.begin().history(&new_person, 0, 10).expect("history");
        assert_eq!(history[0].kind, ChangeKind::Split { from: person.clone() });
        let history = world.store.begin().history(&person, 0, 10).expect("history");
        let last = history.last().expect("entries");
        assert!(last.events.iter().any(|event| matches!(
            event,
            PersonEvent::RecordRemoved {
                cause: Cause::Deletion,
                ..
            }
        )));
        assert!(last
            .events
            .iter()
            .any(|event| matches!(event, PersonEvent::SplitOff { .. })));
        // Deleting again does nothing.
        assert!(world
            .apply(vec![], Some(StewardAction::DeleteRecord { record: key("r2") }))
            .is_empty());
    }

    #[test]
    fn an_unmerge_is_respected_by_the_matcher() {
        let mut world = World::new();
        bridged(&mut world);
        let person = world.person_of("r1");
        let placed = world.apply(
            vec![],
            Some(StewardAction::Unmerge {
                person: person.clone(),
                records: vec![key("r3")],
                note: "different people sharing a phone".into(),
            }),
        );
        let new_person = placed[1].person_id.clone();
        assert_eq!(world.person_of("r3"), new_person);
        assert!(world.store.begin().held_apart(&person, &new_person).expect("read"));
        // A new record matching both persons strongly joins one and does not merge them.
        world.apply(
            vec![raw("r4", &[("name", "王小明"), ("id_number", ID), ("phone", PHONE)])],
            None,
        );
        assert_ne!(world.person_of("r1"), world.person_of("r3"));
        // r3 re-sent with a new address does not go back to the person it was taken from.
        world.apply(
            vec![raw(
                "r3",
                &[("name", "王小明"), ("phone", PHONE), ("address", "杭州西湖区文三路1号")],
            )],
            None,
        );
        assert_ne!(world.person_of("r3"), person);
        let history = world.store.begin().history(&new_person, 0, 10).expect("history");
        assert!(history[0]
            .events
            .iter()
            .any(|event| matches!(event, PersonEvent::HeldApart { person: other, .. } if *other == person)));
    }

    #[test]
    fn a_steward_merge_survives_a_deletion_and_can_be_undone() {
        let mut world = World::new();
        world.apply(
            vec![
                raw("a1", &[("name", "李四"), ("phone", "13900000001")]),
                raw("a2", &[("name", "李四"), ("phone", "13900000001")]),
                raw("b1", &[("name", "李四"), ("phone", "13700000002")]),
            ],
            None,
        );
        let (a, b) = (world.person_of("a1"), world.person_of("b1"));
        assert_ne!(a, b);
        let placed = world.apply(
            vec![],
            Some(StewardAction::Merge {
                a: b.clone(),
                b: a.clone(),
                note: "same resident, new phone".into(),
            }),
        );
        assert_eq!(placed[0].person_id, a, "the person with more records keeps its id");
        assert_eq!(world.person_of("b1"), a);
        assert_eq!(world.store.begin().alias(&b).expect("read"), Some(a.clone()));
        let history = world.store.begin().history(&b, 0, 10).expect("history");
        assert_eq!(
            history.last().expect("entries").kind,
            ChangeKind::MergedInto { survivor: a.clone() }
        );
        // The matcher alone would not keep b1 with a2; the steward's word does.
        world.apply(vec![], Some(StewardAction::DeleteRecord { record: key("a1") }));
        assert_eq!(world.person_of("a2"), world.person_of("b1"));
        // Merging one person with itself does nothing.
        assert!(world
            .apply(
                vec![],
                Some(StewardAction::Merge {
                    a: a.clone(),
                    b: b.clone(),
                    note: String::new()
                })
            )
            .is_empty());
    }

    #[test]
    fn review_decisions() {
        let mut world = World::new();
        // The same rare name and gender, nothing else: a possible match, not a sure one.
        world.apply(
            vec![
                raw("x1", &[("name", "欧阳娜娜"), ("gender", "女")]),
                raw("x2", &[("name", "欧阳娜娜"), ("gender", "女")]),
            ],
            None,
        );
        let item: ReviewItem = world
            .store
            .begin()
            .review_item(&key("x2"))
            .expect("read")
            .expect("a possible match waits for review");
        let candidate = item.candidates[0].person_id.clone();
        world.apply(
            vec![],
            Some(StewardAction::ResolveReview {
                record: key("x2"),
                candidate: candidate.clone(),
                same: false,
                note: "mother and daughter".into(),
            }),
        );
        assert!(world
            .store
            .begin()
            .review_item::<ReviewItem>(&key("x2"))
            .expect("read")
            .is_none());
        let x2_person = world.person_of("x2");
        assert!(world.store.begin().held_apart(&x2_person, &candidate).expect("read"));
        // A third record like both joins neither into one person, and raises no new review of
        // the pair the steward settled.
        world.apply(
            vec![raw("x3", &[("name", "欧阳娜娜"), ("gender", "女"), ("phone", PHONE)])],
            None,
        );
        assert_ne!(world.person_of("x1"), world.person_of("x2"));
        // "Same" merges the record's person with the candidate.
        let item: ReviewItem = world
            .store
            .begin()
            .review_item(&key("x3"))
            .expect("read")
            .expect("x3 may be either");
        let other = item.candidates[0].person_id.clone();
        let placed = world.apply(
            vec![],
            Some(StewardAction::ResolveReview {
                record: key("x3"),
                candidate: other.clone(),
                same: true,
                note: String::new(),
            }),
        );
        assert_eq!(placed[0].decision, Decision::Merged);
        assert_eq!(
            current_person(&world.store.begin(), &other).expect("read"),
            Some(world.person_of("x3"))
        );
    }
}
