//! The stewards' side of the facade: merge, unmerge, the review queue, record deletion, and
//! what a person's history and a tag's lineage say. Changes are checked here, against the
//! store as it is, so a mistake gets a specific error before anything is logged; the writer
//! applies them in log order (`steward.rs`), where a change that no longer applies (the
//! persons moved on meanwhile) does nothing.

use super::apply::{load_records, views_of, Placed, ReviewItem};
use super::steward::current_person;
use super::{Engine, EngineError};
use crate::model::{Actor, PersonId, RecordKey, StewardAction, TagCode};
use crate::profile::{self, TagLineage};
use crate::resolve::Evidence;
use crate::store::HistoryEntry;
use std::collections::BTreeSet;

/// The most records one unmerge may move, and the most history entries or review items one
/// page holds.
pub const STEWARD_LIST_MAX: usize = 1_000;

/// What a steward action did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StewardOutcome {
    /// The write-ahead-log sequence it was applied at.
    pub sequence: u64,
    /// The person that remains: the survivor of a merge, the person that kept its id.
    /// `None` when there was nothing left to do.
    pub person_id: Option<PersonId>,
    /// Persons the action created (an unmerge, a split after a deletion).
    pub new_persons: Vec<PersonId>,
}

/// A page of the review queue.
#[derive(Debug, Clone)]
pub struct ReviewPage {
    pub entries: Vec<ReviewEntry>,
    /// The token of the next page; `None` on the last.
    pub next: Option<Vec<u8>>,
    /// Items open in all.
    pub n_open: u64,
}

/// One open review item with what the matcher found.
#[derive(Debug, Clone)]
pub struct ReviewEntry {
    pub record: RecordKey,
    pub item: ReviewItem,
    pub evidence: Option<Evidence>,
}

impl Engine {
    async fn steward(&self, action: StewardAction, actor: Option<Actor>) -> Result<StewardOutcome, EngineError> {
        let applied = self.write_action(action, actor).await?;
        let mut placed = applied.placed.into_iter();
        let person_id = placed.next().map(|Placed { person_id, .. }| person_id);
        Ok(StewardOutcome {
            sequence: applied.sequence,
            person_id,
            new_persons: placed.map(|placed| placed.person_id).collect(),
        })
    }

    fn existing_person(&self, person_id: &PersonId) -> Result<PersonId, EngineError> {
        current_person(&self.store.begin(), person_id)?
            .ok_or_else(|| EngineError::NotFound(format!("person {person_id} not found")))
    }

    /// Joins two persons; the one with more records keeps its id, the other redirects to it.
    /// A steward's "different" between them is withdrawn.
    pub async fn merge_persons(
        &self,
        a: &PersonId,
        b: &PersonId,
        note: String,
        actor: Option<Actor>,
    ) -> Result<StewardOutcome, EngineError> {
        let (current_a, current_b) = (self.existing_person(a)?, self.existing_person(b)?);
        if current_a == current_b {
            return Err(EngineError::InvalidArgument(format!(
                "{a} and {b} are already one person ({current_a})"
            )));
        }
        self.steward(
            StewardAction::Merge {
                a: current_a,
                b: current_b,
                note,
            },
            actor,
        )
        .await
    }

    /// Moves `records` out of `person` into a new person and remembers that the two differ,
    /// so the matcher will not join them again.
    pub async fn unmerge(
        &self,
        person_id: &PersonId,
        records: Vec<RecordKey>,
        note: String,
        actor: Option<Actor>,
    ) -> Result<StewardOutcome, EngineError> {
        let person = self.existing_person(person_id)?;
        if records.is_empty() {
            return Err(EngineError::InvalidArgument(
                "name at least one record to move out".into(),
            ));
        }
        if records.len() > STEWARD_LIST_MAX {
            return Err(EngineError::InvalidArgument(format!(
                "at most {STEWARD_LIST_MAX} records can be moved at once"
            )));
        }
        let members: BTreeSet<RecordKey> = self.store.begin().members(&person)?.into_iter().collect();
        let moving: BTreeSet<RecordKey> = records.into_iter().collect();
        if let Some(stranger) = moving.iter().find(|key| !members.contains(*key)) {
            return Err(EngineError::InvalidArgument(format!(
                "record {stranger} does not belong to person {person}"
            )));
        }
        if moving.len() == members.len() {
            return Err(EngineError::InvalidArgument(format!(
                "that is every record of person {person}: at least one must stay"
            )));
        }
        self.steward(
            StewardAction::Unmerge {
                person,
                records: moving.into_iter().collect(),
                note,
            },
            actor,
        )
        .await
    }

    /// Settles a review item's candidate: the same person (merge) or a different one (held
    /// apart from now on).
    pub async fn resolve_review(
        &self,
        record: &RecordKey,
        candidate: &PersonId,
        same: bool,
        note: String,
        actor: Option<Actor>,
    ) -> Result<StewardOutcome, EngineError> {
        let item: ReviewItem = self
            .store
            .begin()
            .review_item(record)?
            .ok_or_else(|| EngineError::NotFound(format!("record {record} has no open review item")))?;
        if !item.candidates.iter().any(|scored| scored.person_id == *candidate) {
            return Err(EngineError::InvalidArgument(format!(
                "person {candidate} is not a candidate of the review item of record {record}"
            )));
        }
        self.steward(
            StewardAction::ResolveReview {
                record: record.clone(),
                candidate: candidate.clone(),
                same,
                note,
            },
            actor,
        )
        .await
    }

    /// Deletes a record: its person is re-evaluated and splits if the record was the only
    /// bridge between groups of its records.
    pub async fn delete_record(&self, record: &RecordKey, actor: Option<Actor>) -> Result<StewardOutcome, EngineError> {
        if self.store.begin().record_header(record)?.is_none() {
            return Err(EngineError::NotFound(format!("record {record} not found")));
        }
        self.steward(StewardAction::DeleteRecord { record: record.clone() }, actor)
            .await
    }

    /// Open review items, the most likely matches first, with the token of the next page and
    /// how many items are open in all. `after` is the token the previous page returned.
    pub fn review_items(&self, after: Option<&[u8]>, limit: usize) -> Result<ReviewPage, EngineError> {
        let txn = self.store.begin();
        let (items, next) = txn.review_page::<ReviewItem>(after, limit.clamp(1, STEWARD_LIST_MAX))?;
        let entries = items
            .into_iter()
            .map(|(record, item)| {
                let evidence = txn.evidence::<Evidence>(&record)?;
                Ok(ReviewEntry { record, item, evidence })
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        Ok(ReviewPage {
            entries,
            next,
            n_open: txn.n_review_items()?,
        })
    }

    /// A person's history from `from_version` on, oldest first. A merged person's history
    /// ends with the merge (it is not redirected: its past is its own).
    pub fn history(
        &self,
        person_id: &PersonId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, EngineError> {
        let txn = self.store.begin();
        if txn.person(person_id)?.is_none() && txn.alias(person_id)?.is_none() {
            let first = txn.history(person_id, 0, 1)?;
            if first.is_empty() {
                return Err(EngineError::NotFound(format!("person {person_id} not found")));
            }
        }
        Ok(txn.history(person_id, from_version, limit.clamp(1, STEWARD_LIST_MAX))?)
    }

    /// Where one tag of a person's profile came from. An id merged into another person is
    /// followed to the survivor (returned alongside).
    pub fn lineage(&self, person_id: &PersonId, tag: &TagCode) -> Result<(PersonId, TagLineage), EngineError> {
        if self.catalog.tag(tag.as_str()).is_none() {
            return Err(EngineError::InvalidArgument(format!("tag {tag} is not in the catalog")));
        }
        let person = self.existing_person(person_id)?;
        let txn = self.store.begin();
        let loaded = load_records(&txn, &txn.members(&person)?)?;
        let lineage = profile::lineage(&views_of(&loaded), tag, &self.catalog);
        Ok((person, lineage))
    }
}
