//! The domain words of DESIGN.md as types: sources, tags, records, persons and decisions.
//! Plain data; no IO, no proto, no storage encoding.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A source department code such as `D07`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SourceId(String);

impl SourceId {
    /// Accepts `D` followed by two digits; the catalog decides whether the source exists.
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let bytes = raw.as_bytes();
        let well_formed = bytes.len() == 3
            && bytes[0].eq_ignore_ascii_case(&b'D')
            && bytes[1].is_ascii_digit()
            && bytes[2].is_ascii_digit();
        well_formed.then(|| SourceId(raw.to_ascii_uppercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tag code such as `name` or `d07.vehicle_plate`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TagCode(String);

impl TagCode {
    pub fn new(code: impl Into<String>) -> Self {
        TagCode(code.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for TagCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stable, opaque person id. Never reused; see `store::layout` for how it is made.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PersonId(String);

impl PersonId {
    pub fn new(id: impl Into<String>) -> Self {
        PersonId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PersonId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `(source, record_id)`: identifies a record across the whole service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RecordKey {
    pub source: SourceId,
    pub record_id: String,
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.source, self.record_id)
    }
}

/// Milliseconds since the Unix epoch, UTC.
pub type EpochMillis = i64;

/// A record as it arrived, after the catalog check but before cleansing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawRecord {
    pub key: RecordKey,
    /// When the source observed the values, if it said; otherwise the ingest time counts.
    pub observed_at: Option<EpochMillis>,
    /// Present tags only: empty values were dropped at the edge.
    pub tags: BTreeMap<TagCode, String>,
}

/// One tag of a cleansed record: the raw value and the standardized one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagValue {
    pub raw: String,
    pub standardized: String,
}

/// A record after cleansing: what the resolver and the store see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanRecord {
    pub key: RecordKey,
    pub observed_at: EpochMillis,
    pub tags: BTreeMap<TagCode, TagValue>,
    /// The normalized 18-digit resident ID number, if the record carries a valid one.
    pub id_number: Option<String>,
    pub findings: Vec<Finding>,
}

/// Something cleansing noticed: which rule fired on which tag (none for a record-level rule),
/// and the value as the source sent it. Stored with the record for stewards; never logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub rule_id: std::borrow::Cow<'static, str>,
    pub tag: Option<TagCode>,
    pub original: Option<String>,
}

/// What happened to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    Created,
    Matched,
    Merged,
    Review,
    Unchanged,
}

/// Why a record was refused. The message names the source or tag, never a personal value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("source is missing")]
    MissingSource,
    #[error("source {0:?} is not a source code (expected D01..D63)")]
    MalformedSource(String),
    #[error("source {0} is not in the catalog")]
    UnknownSource(String),
    #[error("record_id is missing")]
    MissingRecordId,
    #[error("record_id is longer than {max} bytes")]
    RecordIdTooLong { max: usize },
    #[error("record_id contains control characters")]
    BadRecordId,
    #[error("observed_at {0:?} is not an RFC 3339 time")]
    BadObservedAt(String),
    #[error("tag {tag} is not in the catalog")]
    UnknownTag { tag: String },
    #[error("tag {tag} belongs to source {owner}, not to {source_id}")]
    ForeignTag {
        tag: String,
        owner: String,
        source_id: String,
    },
    #[error("record has {n} tags, more than the limit of {max}")]
    TooManyTags { n: usize, max: usize },
    #[error("value of tag {tag} is longer than {max} bytes")]
    ValueTooLong { tag: String, max: usize },
    #[error("record has no tags")]
    NoTags,
}

impl Rejection {
    /// Stable machine-readable code for clients and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::MissingSource => "missing_source",
            Rejection::MalformedSource(_) => "malformed_source",
            Rejection::UnknownSource(_) => "unknown_source",
            Rejection::MissingRecordId => "missing_record_id",
            Rejection::RecordIdTooLong { .. } => "record_id_too_long",
            Rejection::BadRecordId => "bad_record_id",
            Rejection::BadObservedAt(_) => "bad_observed_at",
            Rejection::UnknownTag { .. } => "unknown_tag",
            Rejection::ForeignTag { .. } => "foreign_tag",
            Rejection::TooManyTags { .. } => "too_many_tags",
            Rejection::ValueTooLong { .. } => "value_too_long",
            Rejection::NoTags => "no_tags",
        }
    }
}

/// The outcome of one record of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Resolved { decision: Decision, person_id: PersonId },
    Rejected(Rejection),
}

/// Who or what caused a change of a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cause {
    /// The matcher, deciding on records as they arrive.
    Matcher,
    /// A steward, with the note they gave.
    Steward { note: String },
    /// A source deleted a record.
    Deletion,
    /// An operator's re-resolution of every person, after the model or the rules changed.
    Reevaluation,
}

/// One thing that happened to a person: a line of its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PersonEvent {
    /// A record was placed in the person: a new record, or one re-sent and placed here.
    RecordAdded { record: RecordKey, decision: Decision },
    /// A record the person holds was re-sent with other values; its identity did not change.
    RecordReplaced { record: RecordKey },
    /// A record left the person: re-sent and placed elsewhere, or deleted by its source.
    RecordRemoved { record: RecordKey, cause: Cause },
    /// Another person was merged into this one (its id now redirects here).
    Absorbed { person: PersonId, cause: Cause },
    /// This person was merged into another; its id redirects there from now on.
    MergedInto { survivor: PersonId, cause: Cause },
    /// Some of this person's records were moved out into a new person.
    SplitOff {
        person: PersonId,
        records: Vec<RecordKey>,
        cause: Cause,
    },
    /// This person was made of records split off another.
    SplitFrom { person: PersonId, cause: Cause },
    /// A steward said this person and another are different people: the matcher will not join
    /// them again.
    HeldApart { person: PersonId, note: String },
}

/// Who asked for a change, as the audit log keeps it. Logged with the change, so the change's
/// audit entry is written in the change's own store transaction: one is never durable without
/// the other. Holds ids, never a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The caller id (`open` in the open mode).
    pub caller: String,
    pub purpose: String,
    /// The method, e.g. `AdminService/Merge`.
    pub action: String,
    /// What identifies the change: a batch and its records, a record key, the persons merged.
    pub detail: String,
}

/// A steward's action, logged like a batch so a replay repeats it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StewardAction {
    /// Join two persons; the one with more records keeps its id.
    Merge { a: PersonId, b: PersonId, note: String },
    /// Move `records` out of `person` into a new person, and remember that the two differ.
    Unmerge {
        person: PersonId,
        records: Vec<RecordKey>,
        note: String,
    },
    /// Settle the review item of `record` about `candidate`: the same person (merge) or not
    /// (hold apart).
    ResolveReview {
        record: RecordKey,
        candidate: PersonId,
        same: bool,
        note: String,
    },
    /// A source withdraws one of its records.
    DeleteRecord { record: RecordKey },
    /// Re-resolve these persons with the current model: split a person whose records no
    /// longer hold together, merge it with the persons it now matches. What stewards said
    /// (records held together, persons held apart) stands.
    Reevaluate { persons: Vec<PersonId> },
}

impl StewardAction {
    /// The persons the action names (an audit entry's persons include them).
    pub fn named_persons(&self) -> Vec<&PersonId> {
        match self {
            StewardAction::Merge { a, b, .. } => vec![a, b],
            StewardAction::Unmerge { person, .. } => vec![person],
            StewardAction::ResolveReview { candidate, .. } => vec![candidate],
            StewardAction::DeleteRecord { .. } => Vec::new(),
            StewardAction::Reevaluate { persons } => persons.iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_codes() {
        assert_eq!(SourceId::parse("D07").map(|s| s.to_string()), Some("D07".into()));
        assert_eq!(SourceId::parse(" d07 ").map(|s| s.to_string()), Some("D07".into()));
        assert_eq!(SourceId::parse("D7"), None);
        assert_eq!(SourceId::parse("X07"), None);
        assert_eq!(SourceId::parse("D０7"), None);
    }
}
