//! The stewardship calls at the gRPC edge: deletion, merge, unmerge, the review queue,
//! history and lineage. Checks that each call is well-formed and maps between proto and the
//! engine; the rules live in the engine.

use super::auth::Identity;
use super::convert::{candidate_to_pb, decision_to_pb, format_millis};
use super::error::to_status;
use super::{access, blocking, from_hex, to_hex};
use crate::catalog::Catalog;
use crate::engine::{Engine, ReviewEntry, StewardOutcome, STEWARD_LIST_MAX};
use crate::model::{Actor, Cause, PersonEvent, PersonId, RecordKey, SourceId, TagCode};
use crate::pb;
use crate::profile::TagLineage;
use crate::resolve::decide::describe_evidence;
use crate::store::{ChangeKind, HistoryEntry};
use std::sync::Arc;
use tonic::Status;

/// The longest steward note kept.
pub const NOTE_CHARS_MAX: usize = 1_000;

pub fn record_key(source: &str, record_id: &str) -> Result<RecordKey, Status> {
    let source = SourceId::parse(source)
        .ok_or_else(|| Status::invalid_argument("source is not a source code (expected D01..D63)"))?;
    if record_id.is_empty() {
        return Err(Status::invalid_argument("record_id is empty"));
    }
    Ok(RecordKey {
        source,
        record_id: record_id.to_string(),
    })
}

fn record_ref_key(record: Option<&pb::RecordRef>) -> Result<RecordKey, Status> {
    let record = record.ok_or_else(|| Status::invalid_argument("record is required"))?;
    record_key(&record.source, &record.record_id)
}

fn person_id(field: &str, value: String) -> Result<PersonId, Status> {
    if value.trim().is_empty() {
        return Err(Status::invalid_argument(format!("{field} is empty")));
    }
    Ok(PersonId::new(value.trim()))
}

fn note(note: String) -> Result<String, Status> {
    if note.chars().count() > NOTE_CHARS_MAX {
        return Err(Status::invalid_argument(format!(
            "note is longer than {NOTE_CHARS_MAX} characters"
        )));
    }
    Ok(note)
}

fn record_ref(key: &RecordKey) -> pb::RecordRef {
    pb::RecordRef {
        source: key.source.to_string(),
        record_id: key.record_id.clone(),
        observed_at: String::new(),
    }
}

fn outcome_to_pb(outcome: StewardOutcome) -> pb::StewardResult {
    pb::StewardResult {
        sequence: outcome.sequence,
        person_id: outcome.person_id.map(|id| id.to_string()).unwrap_or_default(),
        new_person_ids: outcome.new_persons.iter().map(ToString::to_string).collect(),
    }
}

pub async fn delete_record(
    engine: &Engine,
    identity: &Identity,
    request: pb::DeleteRecordRequest,
    actor: Actor,
) -> Result<pb::StewardResult, Status> {
    let key = record_key(&request.source, &request.record_id)?;
    access::check_writer(identity, [key.source.as_str()], "DeleteRecord")?;
    let outcome = engine.delete_record(&key, Some(actor)).await.map_err(to_status)?;
    tracing::info!(record = %key, sequence = outcome.sequence, n_new_persons = outcome.new_persons.len(), "record deleted");
    Ok(outcome_to_pb(outcome))
}

pub async fn merge(engine: &Engine, request: pb::MergeRequest, actor: Actor) -> Result<pb::StewardResult, Status> {
    let a = person_id("person_a", request.person_a)?;
    let b = person_id("person_b", request.person_b)?;
    let outcome = engine
        .merge_persons(&a, &b, note(request.note)?, Some(actor))
        .await
        .map_err(to_status)?;
    tracing::info!(person_a = %a, person_b = %b, sequence = outcome.sequence, "steward merge");
    Ok(outcome_to_pb(outcome))
}

pub async fn unmerge(engine: &Engine, request: pb::UnmergeRequest, actor: Actor) -> Result<pb::StewardResult, Status> {
    let person = person_id("person_id", request.person_id)?;
    let records = request
        .records
        .iter()
        .map(|record| record_key(&record.source, &record.record_id))
        .collect::<Result<Vec<_>, _>>()?;
    let outcome = engine
        .unmerge(&person, records, note(request.note)?, Some(actor))
        .await
        .map_err(to_status)?;
    tracing::info!(person = %person, sequence = outcome.sequence, "steward unmerge");
    Ok(outcome_to_pb(outcome))
}

pub async fn resolve_review_item(
    engine: &Engine,
    request: pb::ResolveReviewItemRequest,
    actor: Actor,
) -> Result<pb::StewardResult, Status> {
    let record = record_ref_key(request.record.as_ref())?;
    let candidate = person_id("candidate_person_id", request.candidate_person_id)?;
    let outcome = engine
        .resolve_review(&record, &candidate, request.same, note(request.note)?, Some(actor))
        .await
        .map_err(to_status)?;
    tracing::info!(record = %record, candidate = %candidate, same = request.same, "review item resolved");
    Ok(outcome_to_pb(outcome))
}

fn review_entry_to_pb(entry: ReviewEntry) -> pb::ReviewItem {
    pb::ReviewItem {
        record: Some(record_ref(&entry.record)),
        person_id: entry.item.person_id.to_string(),
        best_probability: entry.item.best(),
        candidates: entry.item.candidates.iter().map(candidate_to_pb).collect(),
        text: entry.evidence.as_ref().map(describe_evidence).unwrap_or_default(),
    }
}

pub async fn list_review_items(
    engine: Arc<Engine>,
    request: pb::ListReviewItemsRequest,
) -> Result<pb::ReviewItemPage, Status> {
    let page_size = match request.page_size {
        0 => 50,
        n => (n as usize).min(STEWARD_LIST_MAX),
    };
    let after = if request.page_token.is_empty() {
        None
    } else {
        Some(
            from_hex(&request.page_token)
                .ok_or_else(|| Status::invalid_argument("page_token is not one this service gave"))?,
        )
    };
    let page = blocking(move || engine.review_items(after.as_deref(), page_size))
        .await
        .map_err(to_status)?;
    Ok(pb::ReviewItemPage {
        items: page.entries.into_iter().map(review_entry_to_pb).collect(),
        next_page_token: page.next.map(|token| to_hex(&token)).unwrap_or_default(),
        n_open: page.n_open,
    })
}

fn cause_words(cause: &Cause) -> (&'static str, String) {
    match cause {
        Cause::Matcher => ("matcher", String::new()),
        Cause::Steward { note } => ("steward", note.clone()),
        Cause::Deletion => ("deletion", String::new()),
        Cause::Reevaluation => ("reevaluation", String::new()),
    }
}

fn event_to_pb(event: &PersonEvent) -> pb::PersonEvent {
    use pb::person_event::Kind;
    let mut out = pb::PersonEvent::default();
    let (kind, cause) = match event {
        PersonEvent::RecordAdded { record, decision } => {
            out.record = Some(record_ref(record));
            out.decision = decision_to_pb(*decision) as i32;
            (Kind::RecordAdded, None)
        }
        PersonEvent::RecordReplaced { record } => {
            out.record = Some(record_ref(record));
            (Kind::RecordReplaced, None)
        }
        PersonEvent::RecordRemoved { record, cause } => {
            out.record = Some(record_ref(record));
            (Kind::RecordRemoved, Some(cause))
        }
        PersonEvent::Absorbed { person, cause } => {
            out.person_id = person.to_string();
            (Kind::Absorbed, Some(cause))
        }
        PersonEvent::MergedInto { survivor, cause } => {
            out.person_id = survivor.to_string();
            (Kind::MergedInto, Some(cause))
        }
        PersonEvent::SplitOff { person, records, cause } => {
            out.person_id = person.to_string();
            out.records = records.iter().map(record_ref).collect();
            (Kind::SplitOff, Some(cause))
        }
        PersonEvent::SplitFrom { person, cause } => {
            out.person_id = person.to_string();
            (Kind::SplitFrom, Some(cause))
        }
        PersonEvent::HeldApart { person, note } => {
            out.person_id = person.to_string();
            out.note = note.clone();
            out.cause = "steward".into();
            (Kind::HeldApart, None)
        }
    };
    out.kind = kind as i32;
    if let Some(cause) = cause {
        let (words, note) = cause_words(cause);
        out.cause = words.into();
        out.note = note;
    } else if out.cause.is_empty() {
        out.cause = "matcher".into();
    }
    out
}

pub fn change_kind_words(kind: &ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Created => "created",
        ChangeKind::Updated => "updated",
        ChangeKind::Split { .. } => "split",
        ChangeKind::MergedInto { .. } => "merged_into",
        ChangeKind::Deleted => "deleted",
    }
}

fn history_entry_to_pb(identity: &Identity, catalog: &Catalog, entry: &HistoryEntry) -> pb::HistoryEntry {
    let changed_tags = access::changed_tags(identity, catalog, entry.changed_tags.clone());
    let n_hidden = entry.changed_tags.len() - changed_tags.len();
    pb::HistoryEntry {
        version: entry.version,
        at: format_millis(entry.at),
        change_sequence: entry.change_sequence,
        kind: change_kind_words(&entry.kind).into(),
        events: entry.events.iter().map(event_to_pb).collect(),
        changed_tags: changed_tags.iter().map(ToString::to_string).collect(),
        // The tags the caller may not read are left out of the count too.
        n_changed_tags: entry
            .n_changed_tags
            .saturating_sub(u32::try_from(n_hidden).unwrap_or(u32::MAX)),
    }
}

pub async fn profile_history(
    engine: Arc<Engine>,
    identity: Identity,
    request: pb::GetProfileHistoryRequest,
) -> Result<pb::ProfileHistory, Status> {
    let person = person_id("person_id", request.person_id)?;
    let page_size = match request.page_size {
        0 => 100,
        n => (n as usize).min(STEWARD_LIST_MAX),
    };
    let lookup = person.clone();
    let history_engine = Arc::clone(&engine);
    let entries = blocking(move || history_engine.history(&lookup, request.from_version, page_size))
        .await
        .map_err(to_status)?;
    let next_version = if entries.len() == page_size {
        entries.last().map_or(0, |entry| entry.version + 1)
    } else {
        0
    };
    Ok(pb::ProfileHistory {
        person_id: person.to_string(),
        entries: entries
            .iter()
            .map(|entry| history_entry_to_pb(&identity, engine.catalog(), entry))
            .collect(),
        next_version,
    })
}

fn lineage_to_pb(person: &PersonId, tag: &TagCode, lineage: TagLineage) -> pb::TagLineage {
    let winner_key = lineage
        .winner
        .as_ref()
        .map(|entry| (entry.source.clone(), entry.record_id.clone()));
    pb::TagLineage {
        person_id: person.to_string(),
        tag: tag.to_string(),
        winner: lineage.winner.map(|entry| pb::TagValue {
            tag: tag.to_string(),
            value: entry.value,
            source: entry.source.to_string(),
            record_id: entry.record_id,
            observed_at: format_millis(entry.observed_at),
            record: 0,
        }),
        rule: lineage.rule.label().into(),
        reason: lineage.reason,
        contributions: lineage
            .contributions
            .into_iter()
            .map(|contribution| pb::TagContribution {
                winner: winner_key.as_ref()
                    == Some(&(contribution.key.source.clone(), contribution.key.record_id.clone())),
                record: Some(record_ref(&contribution.key)),
                observed_at: format_millis(contribution.observed_at),
                raw: contribution.raw,
                standardized: contribution.standardized,
            })
            .collect(),
        values: lineage
            .values
            .into_iter()
            .map(|value| pb::DistinctValue {
                value: value.value,
                first_seen: format_millis(value.first_seen),
                last_seen: format_millis(value.last_seen),
                sources: value.sources.iter().map(ToString::to_string).collect(),
                n_records: u32::try_from(value.n_records).unwrap_or(u32::MAX),
            })
            .collect(),
    }
}

pub async fn tag_lineage(
    engine: Arc<Engine>,
    identity: Identity,
    request: pb::GetTagLineageRequest,
) -> Result<pb::TagLineage, Status> {
    let person = person_id("person_id", request.person_id)?;
    if request.tag.is_empty() {
        return Err(Status::invalid_argument("tag is empty"));
    }
    let tag = TagCode::new(request.tag);
    access::check_lineage_tag(&identity, engine.catalog(), &tag)?;
    let grant = access::reader_grant(&identity, "ProfileService/GetTagLineage")?;
    let lookup_tag = tag.clone();
    let lineage_engine = Arc::clone(&engine);
    let (person, lineage) = blocking(move || lineage_engine.lineage(&person, &lookup_tag))
        .await
        .map_err(to_status)?;
    let lineage = access::lineage(grant, engine.catalog(), &tag, lineage);
    Ok(lineage_to_pb(&person, &tag, lineage))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_refuse_garbage() {
        let token = vec![0x77, 0x2f, 0, 0xff, 0x10];
        assert_eq!(from_hex(&to_hex(&token)), Some(token));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("é1"), None);
    }
}
