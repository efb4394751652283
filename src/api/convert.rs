//! proto <-> domain mapping, and the admission checks that belong at the edge: the catalog
//! (known source, known and permitted tags) and the size limits.

use crate::catalog::Catalog;
use crate::config::LimitsConfig;
#[cfg(test)]
use crate::engine::ProfileView;
use crate::engine::{ChangeEvent, ChangeKind, PersonMatch, PersonQuery, ReviewItem};
use crate::model::{Decision, EpochMillis, Outcome, RawRecord, RecordKey, Rejection, SourceId, TagCode};
use crate::pb;
use crate::resolve::compare::levels_of;
use crate::resolve::decide::{describe_evidence, describe_score, Hold};
use crate::resolve::model::Score;
use crate::resolve::{Evidence, Feature, MatchModel, ScoredCandidate};
use std::collections::BTreeMap;

/// Admits one record or says why not. Empty values are dropped ("not recorded").
pub fn admit_record(record: pb::Record, catalog: &Catalog, limits: &LimitsConfig) -> Result<RawRecord, Rejection> {
    if record.source.trim().is_empty() {
        return Err(Rejection::MissingSource);
    }
    let source = SourceId::parse(&record.source).ok_or_else(|| Rejection::MalformedSource(truncate(&record.source)))?;
    if catalog.source(&source).is_none() {
        return Err(Rejection::UnknownSource(source.to_string()));
    }
    if record.record_id.is_empty() {
        return Err(Rejection::MissingRecordId);
    }
    if record.record_id.len() > limits.record_id_bytes_max {
        return Err(Rejection::RecordIdTooLong {
            max: limits.record_id_bytes_max,
        });
    }
    if record.record_id.chars().any(char::is_control) {
        return Err(Rejection::BadRecordId);
    }
    let observed_at = if record.observed_at.trim().is_empty() {
        None
    } else {
        let parsed = chrono::DateTime::parse_from_rfc3339(record.observed_at.trim())
            .map_err(|_| Rejection::BadObservedAt(truncate(&record.observed_at)))?;
        Some(parsed.timestamp_millis())
    };
    if record.tags.len() > limits.tags_per_record_max {
        return Err(Rejection::TooManyTags {
            n: record.tags.len(),
            max: limits.tags_per_record_max,
        });
    }
    let mut tags = BTreeMap::new();
    for (tag, value) in record.tags {
        let tag = TagCode::new(tag);
        catalog.check_tag(&source, &tag)?;
        if value.len() > limits.value_bytes_max {
            return Err(Rejection::ValueTooLong {
                tag: tag.to_string(),
                max: limits.value_bytes_max,
            });
        }
        if !value.trim().is_empty() {
            tags.insert(tag, value);
        }
    }
    if tags.is_empty() {
        return Err(Rejection::NoTags);
    }
    Ok(RawRecord {
        key: RecordKey {
            source,
            record_id: record.record_id,
        },
        observed_at,
        tags,
    })
}

/// Source codes and timestamps are not personal data, but a client's mistake may put
/// anything there: echo a short prefix only.
fn truncate(text: &str) -> String {
    text.chars().take(16).collect()
}

pub fn outcome_to_pb(record_index: u32, key: Option<&RecordKey>, outcome: Outcome) -> pb::RecordOutcome {
    let (source, record_id) = key
        .map(|key| (key.source.to_string(), key.record_id.clone()))
        .unwrap_or_default();
    match outcome {
        Outcome::Resolved { decision, person_id } => pb::RecordOutcome {
            record_index,
            source,
            record_id,
            decision: decision_to_pb(decision) as i32,
            person_id: person_id.to_string(),
            reason: String::new(),
            reason_code: String::new(),
        },
        Outcome::Rejected(rejection) => pb::RecordOutcome {
            record_index,
            source,
            record_id,
            decision: pb::Decision::Rejected as i32,
            person_id: String::new(),
            reason: rejection.to_string(),
            reason_code: rejection.code().to_string(),
        },
    }
}

pub fn decision_to_pb(decision: Decision) -> pb::Decision {
    match decision {
        Decision::Created => pb::Decision::Created,
        Decision::Matched => pb::Decision::Matched,
        Decision::Merged => pb::Decision::Merged,
        Decision::Review => pb::Decision::Review,
        Decision::Unchanged => pb::Decision::Unchanged,
    }
}

/// A profile as a message, built field by field: the reference the encoded answers
/// (`api::encoded`) are held to in their tests; the service itself encodes from the store.
#[cfg(test)]
pub fn profile_to_pb(view: ProfileView) -> pb::Profile {
    let n_records = u32::try_from(view.records.len()).unwrap_or(u32::MAX);
    let mut times = TimeFormatter::default();
    pb::Profile {
        redirected_from: view.redirected_from.map(|id| id.to_string()).unwrap_or_default(),
        person_id: view.person_id.to_string(),
        tags: view
            .tags
            .into_iter()
            .map(|(tag, entry)| pb::TagValue {
                tag: tag.into_string(),
                value: entry.value,
                source: entry.source.into_string(),
                record_id: entry.record_id,
                observed_at: times.format(entry.observed_at).to_string(),
                record: 0,
            })
            .collect(),
        n_records,
        version: view.version,
        records: view
            .records
            .into_iter()
            .map(|key| pb::RecordRef {
                source: key.source.to_string(),
                record_id: key.record_id,
                observed_at: String::new(),
            })
            .collect(),
    }
}

/// A compact profile (`GetProfileRequest.compact`) as the full one: each value's source,
/// record id and time filled in from the record it names, the records' times cleared. A
/// value naming no record, or one past the list, is left as it is.
pub fn expand_compact_profile(mut profile: pb::Profile) -> pb::Profile {
    for tag in &mut profile.tags {
        let Some(record) = (tag.record as usize)
            .checked_sub(1)
            .and_then(|at| profile.records.get(at))
        else {
            continue;
        };
        tag.source.clone_from(&record.source);
        tag.record_id.clone_from(&record.record_id);
        if tag.observed_at.is_empty() {
            tag.observed_at.clone_from(&record.observed_at);
        }
        tag.record = 0;
    }
    for record in &mut profile.records {
        record.observed_at.clear();
    }
    profile
}

/// Formats the times of one profile. A full profile's ~2,100 tags come from a few dozen
/// records: each of their times is formatted once.
#[derive(Default)]
pub struct TimeFormatter {
    times: Vec<(EpochMillis, String)>,
    last: String,
}

impl TimeFormatter {
    /// How many distinct times are kept.
    const KEPT_MAX: usize = 256;

    pub fn format(&mut self, millis: EpochMillis) -> &str {
        match self.times.iter().position(|(known, _)| *known == millis) {
            Some(at) => &self.times[at].1,
            None if self.times.len() < Self::KEPT_MAX => {
                self.times.push((millis, format_millis(millis)));
                &self.times[self.times.len() - 1].1
            }
            None => {
                self.last = format_millis(millis);
                &self.last
            }
        }
    }
}

pub fn format_millis(millis: EpochMillis) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Checks a tag mask against the catalog, naming the first unknown tag.
pub fn tag_mask(catalog: &Catalog, mask: Vec<String>) -> Result<Vec<TagCode>, tonic::Status> {
    mask.into_iter()
        .map(|tag| match catalog.tag(&tag) {
            Some(_) => Ok(TagCode::new(tag)),
            None => Err(tonic::Status::invalid_argument(format!(
                "tag_mask names tag {tag}, which is not in the catalog"
            ))),
        })
        .collect()
}

fn comparisons_to_pb(score: &Score) -> Vec<pb::FeatureComparison> {
    score
        .comparisons
        .iter()
        .map(|comparison| pb::FeatureComparison {
            feature: comparison.feature.label().to_string(),
            level: comparison.level.label().to_string(),
            weight: comparison.weight,
            weak: comparison.weak,
            term_frequency_adjusted: comparison.term_frequency.is_some(),
        })
        .collect()
}

fn score_to_pb(person_id: &str, score: &Score, hold: Option<Hold>) -> pb::CandidateScore {
    pb::CandidateScore {
        person_id: person_id.to_string(),
        probability: score.probability(),
        log_odds: score.log_odds(),
        prior: score.prior,
        comparisons: comparisons_to_pb(score),
        held_reason: hold.map(|hold| hold.words().to_string()).unwrap_or_default(),
    }
}

pub fn candidate_to_pb(candidate: &ScoredCandidate) -> pb::CandidateScore {
    score_to_pb(candidate.person_id.as_str(), &candidate.score, candidate.hold)
}

pub fn explanation_to_pb(key: &RecordKey, evidence: &Evidence, review: Option<&ReviewItem>) -> pb::RecordExplanation {
    pb::RecordExplanation {
        source: key.source.to_string(),
        record_id: key.record_id.clone(),
        decision: decision_to_pb(evidence.decision) as i32,
        person_id: evidence.person_id.as_ref().map(ToString::to_string).unwrap_or_default(),
        model_version: evidence.model_version,
        match_probability: evidence.match_probability,
        review_probability: evidence.review_probability,
        n_candidates: u32::try_from(evidence.n_candidates).unwrap_or(u32::MAX),
        candidates: evidence.candidates.iter().map(candidate_to_pb).collect(),
        merged: evidence.merged.iter().map(ToString::to_string).collect(),
        review_candidates: review
            .map(|item| item.candidates.iter().map(candidate_to_pb).collect())
            .unwrap_or_default(),
        text: describe_evidence(evidence),
    }
}

pub fn pair_to_pb(person_a: &str, score: &Score, hold: Option<Hold>) -> pb::PairExplanation {
    let mut text = describe_score(score);
    if let Some(hold) = hold {
        text.push_str(&format!("\nheld: {}", hold.words()));
    }
    pb::PairExplanation {
        score: Some(score_to_pb(person_a, score, hold)),
        text,
    }
}

/// A record key from a call, checked against the catalog and the limits. The messages name
/// the field, never echo more than a short prefix of what was sent.
pub fn record_key(
    source: &str,
    record_id: String,
    catalog: &Catalog,
    limits: &LimitsConfig,
) -> Result<RecordKey, tonic::Status> {
    if source.trim().is_empty() {
        return Err(tonic::Status::invalid_argument("source is empty"));
    }
    let source = SourceId::parse(source).ok_or_else(|| {
        tonic::Status::invalid_argument(format!(
            "source {} is not a source code (expected D01..D63)",
            truncate(source)
        ))
    })?;
    if catalog.source(&source).is_none() {
        return Err(tonic::Status::invalid_argument(format!(
            "source {source} is not in the catalog"
        )));
    }
    if record_id.is_empty() {
        return Err(tonic::Status::invalid_argument("record_id is empty"));
    }
    if record_id.len() > limits.record_id_bytes_max || record_id.chars().any(char::is_control) {
        return Err(tonic::Status::invalid_argument(format!(
            "record_id is longer than {} bytes or holds a control character, so no record has it",
            limits.record_id_bytes_max
        )));
    }
    Ok(RecordKey { source, record_id })
}

/// The change kind on the wire. Exhaustive on purpose: a new kind in the store must be given
/// its proto kind here.
pub fn change_kind_to_pb(kind: &ChangeKind) -> pb::ChangeKind {
    match kind {
        ChangeKind::Created => pb::ChangeKind::Created,
        ChangeKind::Updated => pb::ChangeKind::Updated,
        ChangeKind::Deleted => pb::ChangeKind::Deleted,
        ChangeKind::MergedInto { .. } => pb::ChangeKind::Merged,
        ChangeKind::Split { .. } => pb::ChangeKind::Split,
    }
}

pub fn change_to_pb(sequence: u64, event: ChangeEvent) -> pb::PersonChange {
    let (merged_into, split_from) = match &event.kind {
        ChangeKind::MergedInto { survivor } => (survivor.to_string(), String::new()),
        ChangeKind::Split { from } => (String::new(), from.to_string()),
        _ => (String::new(), String::new()),
    };
    pb::PersonChange {
        sequence,
        kind: change_kind_to_pb(&event.kind) as i32,
        version: event.version,
        person_id: event.person_id.to_string(),
        merged_into,
        split_from,
    }
}

/// How many persons a search returns when the call does not say.
pub const SEARCH_RESULTS_DEFAULT: usize = 10;

/// A search's attributes and `top_k`, checked against the limits. Empty attributes are "not
/// given"; whether anything usable was given is the engine's to judge (after cleansing).
pub fn person_query(
    request: pb::SearchPersonsRequest,
    limits: &LimitsConfig,
) -> Result<(PersonQuery, usize), tonic::Status> {
    let top_k = match usize::try_from(request.top_k).unwrap_or(usize::MAX) {
        0 => SEARCH_RESULTS_DEFAULT,
        top_k if top_k > limits.search_results_max => {
            return Err(tonic::Status::invalid_argument(format!(
                "top_k {top_k} is more than the limit of {}",
                limits.search_results_max
            )))
        }
        top_k => top_k,
    };
    let attribute = |field: &'static str, value: String| -> Result<Option<String>, tonic::Status> {
        if value.len() > limits.value_bytes_max {
            return Err(tonic::Status::invalid_argument(format!(
                "{field} is longer than {} bytes",
                limits.value_bytes_max
            )));
        }
        Ok((!value.trim().is_empty()).then_some(value))
    };
    let query = PersonQuery {
        name: attribute("name", request.name)?,
        id_number: attribute("id_number", request.id_number)?,
        birth_date: attribute("birth_date", request.birth_date)?,
        gender: attribute("gender", request.gender)?,
        phone: attribute("phone", request.phone)?,
        address: attribute("address", request.address)?,
    };
    Ok((query, top_k))
}

pub fn person_match_to_pb(found: &PersonMatch) -> pb::PersonMatch {
    pb::PersonMatch {
        person_id: found.person_id.to_string(),
        probability: found.score.probability(),
        explanation: found.explanation.clone(),
        comparisons: comparisons_to_pb(&found.score),
    }
}

pub fn model_to_pb(model: &MatchModel, n_random_pairs: usize, n_candidate_pairs: usize) -> pb::ModelInfo {
    let mut levels = Vec::new();
    for feature in Feature::ALL {
        for level in levels_of(feature) {
            let params = model.params(feature, *level);
            levels.push(pb::LevelWeight {
                feature: feature.label().to_string(),
                level: level.label().to_string(),
                m: params.m,
                u: params.u,
                weight: params.weight(),
            });
        }
    }
    pb::ModelInfo {
        version: model.version,
        match_probability: model.match_probability,
        review_probability: model.review_probability,
        levels,
        n_random_pairs: n_random_pairs as u64,
        n_candidate_pairs: n_candidate_pairs as u64,
        model_json: serde_json::to_string_pretty(model).expect("a model serializes to JSON"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(source: &str, record_id: &str, tags: &[(&str, &str)]) -> pb::Record {
        pb::Record {
            source: source.into(),
            record_id: record_id.into(),
            observed_at: String::new(),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[track_caller]
    fn check(record: pb::Record, expected_code: &str) {
        let catalog = Catalog::shipped();
        let limits = LimitsConfig::default();
        let code = match admit_record(record, &catalog, &limits) {
            Ok(_) => "admitted",
            Err(rejection) => rejection.code(),
        };
        assert_eq!(code, expected_code);
    }

    #[test]
    fn admission() {
        check(record("D07", "1", &[("name", "张伟")]), "admitted");
        check(record("", "1", &[("name", "张伟")]), "missing_source");
        check(record("X", "1", &[("name", "张伟")]), "malformed_source");
        check(record("D99", "1", &[("name", "张伟")]), "unknown_source");
        check(record("D07", "", &[("name", "张伟")]), "missing_record_id");
        check(record("D07", "a\u{0}b", &[("name", "张伟")]), "bad_record_id");
        check(
            record("D07", &"x".repeat(129), &[("name", "张伟")]),
            "record_id_too_long",
        );
        check(record("D07", "1", &[("nickname", "伟")]), "unknown_tag");
        check(record("D07", "1", &[("name", ""), ("phone", " ")]), "no_tags");
        check(record("D07", "1", &[("name", &"长".repeat(1000))]), "value_too_long");
        let mut bad_time = record("D07", "1", &[("name", "张伟")]);
        bad_time.observed_at = "yesterday".into();
        check(bad_time, "bad_observed_at");
        let too_many: Vec<(String, String)> = (0..300).map(|i| (format!("t{i}"), "v".to_string())).collect();
        let too_many: Vec<(&str, &str)> = too_many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        check(record("D07", "1", &too_many), "too_many_tags");
    }

    #[test]
    fn rejection_messages_name_the_tag_not_the_value() {
        let catalog = Catalog::shipped();
        let rejection = admit_record(
            record("D07", "1", &[("secret_tag", "13800001234")]),
            &catalog,
            &LimitsConfig::default(),
        )
        .expect_err("unknown tag");
        let message = rejection.to_string();
        assert!(message.contains("secret_tag"), "{message}");
        assert!(!message.contains("13800001234"), "{message}");
    }

    #[test]
    fn change_kinds() {
        assert_eq!(change_kind_to_pb(&ChangeKind::Created), pb::ChangeKind::Created);
        assert_eq!(change_kind_to_pb(&ChangeKind::Updated), pb::ChangeKind::Updated);
        assert_eq!(change_kind_to_pb(&ChangeKind::Deleted), pb::ChangeKind::Deleted);
        let survivor = crate::model::PersonId::new("P1");
        let merged = change_to_pb(
            7,
            ChangeEvent {
                person_id: crate::model::PersonId::new("P2"),
                version: 3,
                kind: ChangeKind::MergedInto { survivor },
            },
        );
        assert_eq!(merged.kind, pb::ChangeKind::Merged as i32);
        assert_eq!((merged.merged_into.as_str(), merged.split_from.as_str()), ("P1", ""));
    }

    #[track_caller]
    fn check_key(source: &str, record_id: &str, expected: &str) {
        let answer = match record_key(source, record_id.into(), &Catalog::shipped(), &LimitsConfig::default()) {
            Ok(key) => key.to_string(),
            Err(status) => format!("{:?}: {}", status.code(), status.message()),
        };
        assert_eq!(answer, expected);
    }

    #[test]
    fn record_keys_of_calls() {
        check_key("d07", "r1", "D07/r1");
        check_key(" ", "r1", "InvalidArgument: source is empty");
        check_key(
            "Dept7",
            "r1",
            "InvalidArgument: source Dept7 is not a source code (expected D01..D63)",
        );
        check_key("D99", "r1", "InvalidArgument: source D99 is not in the catalog");
        check_key("D07", "", "InvalidArgument: record_id is empty");
        check_key(
            "D07",
            &"x".repeat(129),
            "InvalidArgument: record_id is longer than 128 bytes or holds a control character, so no record has it",
        );
    }

    #[track_caller]
    fn check_top_k(top_k: u32, expected: &str) {
        let request = pb::SearchPersonsRequest {
            name: "张伟".into(),
            top_k,
            ..Default::default()
        };
        let answer = match person_query(request, &LimitsConfig::default()) {
            Ok((_, top_k)) => top_k.to_string(),
            Err(status) => format!("{:?}: {}", status.code(), status.message()),
        };
        assert_eq!(answer, expected);
    }

    #[test]
    fn search_top_k() {
        check_top_k(0, "10");
        check_top_k(1, "1");
        check_top_k(100, "100");
        check_top_k(101, "InvalidArgument: top_k 101 is more than the limit of 100");
    }

    #[test]
    fn search_attributes() {
        let request = pb::SearchPersonsRequest {
            name: "张伟".into(),
            phone: " ".into(),
            address: "长".repeat(1000),
            ..Default::default()
        };
        let error = person_query(request.clone(), &LimitsConfig::default()).expect_err("too long");
        assert_eq!(error.message(), "address is longer than 2048 bytes");
        let request = pb::SearchPersonsRequest {
            address: String::new(),
            ..request
        };
        let (query, _) = person_query(request, &LimitsConfig::default()).expect("admitted");
        assert_eq!(
            query,
            PersonQuery {
                name: Some("张伟".into()),
                ..PersonQuery::default()
            }
        );
    }

    proptest! {
        #[test]
        fn admission_never_panics(source in "\\PC{0,5}", record_id in "\\PC{0,10}", tag in "\\PC{0,10}", value in "\\PC{0,10}", time in "\\PC{0,30}") {
            let catalog = Catalog::shipped();
            let mut pb_record = record(&source, &record_id, &[(&tag, &value)]);
            pb_record.observed_at = time;
            let _ = admit_record(pb_record, &catalog, &LimitsConfig::default());
        }
    }
}
