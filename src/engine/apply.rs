//! Applying one logged batch to the store: cleanse, resolve, place, refresh the profiles it
//! touched, all in one store transaction with the batch's sequence. Deterministic: replaying
//! the same log entry on the same store gives the same persons and ids.
//!
//! For each record: cleanse it; find candidate persons through the blocking-key postings
//! (which include the records placed earlier in the same batch: the transaction reads its own
//! writes); let the matcher decide; join, create or merge; keep each person's identity
//! features and postings current; store the evidence and any review item.

use crate::catalog::Catalog;
use crate::cleanse::{cleanse_record, rules};
use crate::model::{
    Cause, CleanRecord, Decision, EpochMillis, Finding, PersonEvent, PersonId, RawRecord, RecordKey, SourceId,
    StewardAction, TagCode,
};
use crate::profile::{is_collective, offer, survive, survive_tags, RecordView};
use crate::resolve::features::is_fallback_key;
use crate::resolve::{self, blocking_keys, Candidate, Feature, Features, MatchModel, Placement};
use crate::store::{layout, AuditRecord, Postings, RecordHeader, Store, StoreError, StoredRecord, Txn};
use crate::wal::WalEntry;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// The decision for one admitted record of an entry, in entry order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub decision: Decision,
    pub person_id: PersonId,
}

/// A key held by more persons than this is too common to find candidates with.
pub const POSTINGS_CAP: usize = 32;
/// The most persons a name alone may be held by and still bring candidates: a name is far less
/// selective than the pairs of values the other keys hold.
pub const NAME_POSTINGS_CAP: usize = 8;

/// How many persons a blocking key may be held by and still be looked up.
pub fn postings_cap(key: &str) -> usize {
    if key.starts_with("nm/") {
        NAME_POSTINGS_CAP
    } else {
        POSTINGS_CAP
    }
}

/// The most candidate persons scored for one record: those sharing the most keys first.
pub const CANDIDATES_MAX: usize = 16;

/// A record's possible matches, for the stewards' review queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewItem {
    /// The person the record was placed in.
    pub person_id: PersonId,
    /// The persons it may also be, with their scores.
    pub candidates: Vec<resolve::ScoredCandidate>,
    /// The sequence of the batch that raised it.
    pub sequence: u64,
}

impl ReviewItem {
    /// The best candidate's probability: the queue's order.
    pub fn best(&self) -> f64 {
        self.candidates
            .iter()
            .map(|candidate| candidate.probability)
            .fold(0.0, f64::max)
    }
}

/// Whether a steward said two persons differ. A read error counts as "yes": the safe side is
/// not to merge.
pub(super) fn held_apart<'t>(txn: &'t Txn<'_>) -> impl Fn(&PersonId, &PersonId) -> bool + 't {
    move |a: &PersonId, b: &PersonId| txn.held_apart(a, b).unwrap_or(true)
}

/// The model the write path decides with: the stored one (completed with the levels added
/// since it was stored), or the shipped defaults.
pub fn current_model(txn: &Txn<'_>) -> Result<MatchModel, StoreError> {
    Ok(txn.model()?.map(MatchModel::completed).unwrap_or_default())
}

/// Where the writer's time goes, summed over the records applied: cleansing, finding
/// candidates, scoring and deciding (consolidation included), and everything written to the
/// store (records, features, postings, profiles, the commit).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StageTimes {
    pub records: u64,
    pub cleanse: Duration,
    pub candidates: Duration,
    pub scoring: Duration,
    pub store: Duration,
}

impl StageTimes {
    pub fn add(&mut self, other: &StageTimes) {
        self.records += other.records;
        self.cleanse += other.cleanse;
        self.candidates += other.candidates;
        self.scoring += other.scoring;
        self.store += other.store;
    }
}

/// Takes the entry by value: cleansing moves each record's strings instead of copying them.
pub fn apply_entry(store: &Store, catalog: &Catalog, entry: WalEntry) -> Result<Vec<Placed>, StoreError> {
    apply_entry_timed(store, catalog, entry, &mut StageTimes::default(), None)
}

/// Persons like a record's features, from the derived search index (fuzzy candidates).
pub type FuzzyCandidates<'f> = &'f dyn Fn(&Features) -> Vec<PersonId>;

/// `apply_entry`, adding the time of each stage to `times`. With `fuzzy`, a record for which
/// the exact keys find no possible match is also compared with the persons the index finds
/// most like it.
pub fn apply_entry_timed(
    store: &Store,
    catalog: &Catalog,
    entry: WalEntry,
    times: &mut StageTimes,
    fuzzy: Option<FuzzyCandidates<'_>>,
) -> Result<Vec<Placed>, StoreError> {
    let (placed, txn) = prepare_entry_timed(store, catalog, entry, times, fuzzy)?;
    let committing = Instant::now();
    txn.commit()?;
    times.store += committing.elapsed();
    Ok(placed)
}

/// Everything `apply_entry_timed` does but the commit: the batch's writes, in a transaction
/// of the writer (`Store::begin_kept`) to commit or hand over (`Txn::hand_over`).
pub fn prepare_entry_timed<'s>(
    store: &'s Store,
    catalog: &Catalog,
    entry: WalEntry,
    times: &mut StageTimes,
    fuzzy: Option<FuzzyCandidates<'_>>,
) -> Result<(Vec<Placed>, Txn<'s>), StoreError> {
    let started = Instant::now();
    let mut stage_times = StageTimes {
        records: entry.records.len() as u64,
        ..StageTimes::default()
    };
    let mut txn = store.begin_kept();
    if let Some(encoded) = &entry.model {
        let model: MatchModel = postcard::from_bytes(encoded).map_err(|error| StoreError::Corrupt {
            kind: "logged model",
            message: error.to_string(),
        })?;
        txn.put_model(&model)?;
    }
    let model = current_model(&txn)?;
    let at = entry.received_at;
    let mut touched: BTreeMap<PersonId, Touched> = BTreeMap::new();
    let mut placed = Vec::with_capacity(entry.records.len());
    if let Some(action) = &entry.steward {
        placed.extend(super::steward::apply_action(
            &mut txn,
            catalog,
            &model,
            action,
            entry.sequence,
            at,
            &mut touched,
        )?);
    }
    let repeated_in_batch: Vec<bool> = {
        let mut seen_keys: std::collections::HashSet<&RecordKey> = std::collections::HashSet::new();
        entry.records.iter().map(|raw| !seen_keys.insert(&raw.key)).collect()
    };
    for (record_idx, raw) in entry.records.into_iter().enumerate() {
        let stated_observed_at = raw.observed_at;
        let cleanse_started = Instant::now();
        let mut clean = cleanse_record(raw, entry.received_at, catalog);
        stage_times.cleanse += cleanse_started.elapsed();
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
        if let Some(owner) = clean
            .id_number
            .as_ref()
            .map(|id| txn.person_for_id_number(id))
            .transpose()?
            .flatten()
        {
            if names_another_person(&txn, &owner, &clean)? {
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
        let features = Features::of_record(&clean, catalog);
        let record_idx = u32::try_from(record_idx).expect("batches are bounded by the config");
        let mut emptied: Option<PersonId> = None;
        let mut kept: Option<PersonId> = None;
        // Persons a steward said differ from the record's previous person.
        let mut apart_from_previous: BTreeSet<PersonId> = BTreeSet::new();
        if let Some(previous) = &previous_record {
            let previous_person = previous.header.person_id.clone();
            let previous_features = record_features(previous, catalog);
            count_names(&mut txn, &previous_features, -1)?;
            touched
                .entry(previous_person.clone())
                .or_default()
                .removed
                .insert(clean.key.clone());
            if previous_features == features {
                // Same identity: the record stays where it is; only its other tags changed.
                kept = Some(previous_person);
            } else {
                txn.remove_member(&previous_person, &clean.key)?;
                refresh_features(&mut txn, catalog, &previous_person)?;
                apart_from_previous.extend(
                    txn.persons_held_apart(&previous_person)?
                        .into_iter()
                        .map(|(person_id, _)| person_id),
                );
                emptied = Some(previous_person);
            }
        }
        let (person_id, decision, resolution) = match kept {
            Some(person_id) => (person_id, Decision::Matched, None),
            None => {
                let candidates_started = Instant::now();
                let (fallback_keys, keys): (BTreeSet<String>, BTreeSet<String>) = blocking_keys(&features)
                    .into_iter()
                    .partition(|key| is_fallback_key(key));
                let mut candidates = gather_candidates_from(&mut txn, &keys, &BTreeSet::new())?;
                for candidate in &mut candidates {
                    candidate.held_apart_from_record = apart_from_previous.contains(&candidate.person_id);
                }
                let scoring_started = Instant::now();
                stage_times.candidates += scoring_started - candidates_started;
                let n_persons = txn.n_persons()?;
                let decide = |txn: &Txn<'_>, candidates: &[Candidate]| {
                    let name_share = name_share(txn, &model);
                    let held_apart = held_apart(txn);
                    resolve::decide_with_stewards(&features, candidates, &model, n_persons, &name_share, &held_apart)
                };
                let mut resolution = decide(&txn, &candidates);
                stage_times.scoring += scoring_started.elapsed();
                if resolution.decision == Decision::Created && !fallback_keys.is_empty() {
                    // Nothing possible through the paired keys: look further, on single values.
                    let fallback_started = Instant::now();
                    let known: BTreeSet<PersonId> = candidates.iter().map(|c| c.person_id.clone()).collect();
                    let mut more = gather_candidates_from(&mut txn, &fallback_keys, &known)?;
                    for candidate in &mut more {
                        candidate.held_apart_from_record = apart_from_previous.contains(&candidate.person_id);
                    }
                    let rescoring_started = Instant::now();
                    stage_times.candidates += rescoring_started - fallback_started;
                    if !more.is_empty() {
                        candidates.extend(more);
                        resolution = decide(&txn, &candidates);
                    }
                    stage_times.scoring += rescoring_started.elapsed();
                }
                if let Some(fuzzy) = fuzzy.filter(|_| resolution.decision == Decision::Created) {
                    let fuzzy_started = Instant::now();
                    let n_index_candidates = add_fuzzy_candidates(&txn, fuzzy, &features, &mut candidates)?;
                    let rescoring_started = Instant::now();
                    stage_times.candidates += rescoring_started - fuzzy_started;
                    if n_index_candidates > 0 {
                        resolution = decide(&txn, &candidates);
                        resolution.evidence.n_index_candidates = n_index_candidates;
                    }
                    stage_times.scoring += rescoring_started.elapsed();
                }
                let mut decision = resolution.decision;
                let person_id = match &resolution.placement {
                    Placement::Join(person_id) => person_id.clone(),
                    Placement::Merge { into, merged } => {
                        for loser in merged {
                            merge_person(&mut txn, loser, into, &mut touched, at, Cause::Matcher)?;
                        }
                        into.clone()
                    }
                    Placement::New => match emptied.take() {
                        // A record alone in its person stays there: same person, same id.
                        Some(previous) if txn.person(&previous)?.is_some_and(|header| header.n_records == 0) => {
                            if decision == Decision::Created {
                                decision = Decision::Matched;
                            }
                            previous
                        }
                        _ => txn.mint_person(entry.sequence, record_idx),
                    },
                };
                (person_id, decision, Some(resolution))
            }
        };
        if previous_record.is_some() {
            txn.add_member(&person_id, &clean.key)?;
        } else {
            txn.add_new_member(&person_id, &clean.key)?;
        }
        let new_keys = add_features(&mut txn, &person_id, &features)?;
        count_names(&mut txn, &features, 1)?;
        txn.count_quality(&clean.key.source, layout::QUALITY_RECORDS);
        for finding in &clean.findings {
            txn.count_quality(&clean.key.source, &finding.rule_id);
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
        let consolidate_started = Instant::now();
        let (person_id, consolidated) = consolidate(&mut txn, &model, &person_id, &new_keys, &mut touched, at)?;
        stage_times.scoring += consolidate_started.elapsed();
        let decision = if consolidated.is_empty() {
            decision
        } else {
            Decision::Merged
        };
        let previous_person = previous_record.as_ref().map(|previous| &previous.header.person_id);
        if previous_person == Some(&person_id) {
            touched
                .entry(person_id.clone())
                .or_default()
                .events
                .push(PersonEvent::RecordReplaced {
                    record: clean.key.clone(),
                });
        } else {
            if let Some(previous_person) = previous_person {
                if txn.person(previous_person)?.is_some() {
                    touched
                        .entry(previous_person.clone())
                        .or_default()
                        .events
                        .push(PersonEvent::RecordRemoved {
                            record: clean.key.clone(),
                            cause: Cause::Matcher,
                        });
                }
            }
            touched
                .entry(person_id.clone())
                .or_default()
                .events
                .push(PersonEvent::RecordAdded {
                    record: clean.key.clone(),
                    decision,
                });
        }
        if let Some(resolution) = resolution {
            let mut evidence = resolution.evidence;
            evidence.person_id = Some(person_id.clone());
            evidence.decision = decision;
            evidence.merged.extend(consolidated);
            txn.put_evidence(&clean.key, &evidence)?;
            let item = (!resolution.review.is_empty()).then(|| ReviewItem {
                person_id: person_id.clone(),
                candidates: resolution.review,
                sequence: entry.sequence,
            });
            txn.set_review_item(&clean.key, item.as_ref().map(|item| (item, item.best())))?;
        }
        placed.push(Placed { decision, person_id });
    }
    for (source, rule_id) in &entry.rejected {
        txn.count_quality(source, layout::QUALITY_REJECTED);
        txn.count_quality(source, rule_id);
    }
    if let Some(actor) = entry.actor {
        // In the change's own transaction: the entry is durable exactly when the change is.
        let named = entry
            .steward
            .as_ref()
            .map(StewardAction::named_persons)
            .unwrap_or_default();
        let persons: BTreeSet<String> = placed
            .iter()
            .map(|placed| &placed.person_id)
            .chain(touched.keys())
            .chain(named)
            .map(ToString::to_string)
            .collect();
        crate::store::put_audit_entry(
            &mut txn,
            layout::WRITE_PATH_AUDIT_SERIALS | entry.sequence,
            &AuditRecord {
                at,
                caller: actor.caller,
                purpose: actor.purpose,
                action: actor.action,
                outcome: "OK".into(),
                persons: persons.into_iter().collect(),
                tags: crate::store::TagList::default(),
                shares: 0,
                detail: if actor.detail.is_empty() {
                    format!("sequence {}", entry.sequence)
                } else {
                    format!("{}; sequence {}", actor.detail, entry.sequence)
                },
            },
        )?;
    }
    for (person_id, change) in touched {
        refresh_person(&mut txn, catalog, &person_id, change, at)?;
    }
    txn.set_applied_sequence(entry.sequence)?;
    stage_times.store = started
        .elapsed()
        .saturating_sub(stage_times.cleanse + stage_times.candidates + stage_times.scoring);
    times.add(&stage_times);
    Ok((placed, txn))
}

/// Reads, through a read-ahead transaction (`Store::begin_read_ahead`), what applying `raw`
/// will look up first: the record's stored version, evidence and review item, the person
/// holding its ID number, the postings of its blocking keys (paired, then stand-alone, as
/// `prepare_entry_timed` asks for them), the persons they name with their features, and its
/// name counts. Decides nothing and writes nothing: the writer reads the same keys again and
/// finds them kept.
pub(super) fn read_ahead(
    txn: &mut Txn<'_>,
    catalog: &Catalog,
    raw: RawRecord,
    received_at: EpochMillis,
) -> Result<(), StoreError> {
    let clean = cleanse_record(raw, received_at, catalog);
    txn.read_record(&clean.key)?;
    if let Some(id_number) = &clean.id_number {
        txn.person_for_id_number(id_number)?;
    }
    let features = Features::of_record(&clean, catalog);
    let (fallback_keys, keys): (BTreeSet<String>, BTreeSet<String>) = blocking_keys(&features)
        .into_iter()
        .partition(|key| is_fallback_key(key));
    let found = persons_sharing(txn, &keys, None)?;
    for person_id in &found {
        txn.read_person(person_id)?;
    }
    let known: BTreeSet<&PersonId> = found.iter().collect();
    for person_id in persons_sharing(txn, &fallback_keys, None)? {
        if !known.contains(&person_id) {
            txn.read_person(&person_id)?;
        }
    }
    for name in features.texts(Feature::Name) {
        txn.name_count(name)?;
    }
    Ok(())
}

/// The identity features of a stored record.
pub(super) fn record_features(record: &StoredRecord, catalog: &Catalog) -> Features {
    Features::of_tags(
        &record.tags,
        record.header.id_number.as_deref(),
        &record.header.findings,
        catalog,
    )
}

/// The persons sharing a blocking key with the record, those sharing the most keys first, at
/// most `CANDIDATES_MAX`, with their features.
pub(super) fn gather_candidates(txn: &mut Txn<'_>, features: &Features) -> Result<Vec<Candidate>, StoreError> {
    gather_candidates_from(txn, &blocking_keys(features), &BTreeSet::new())
}

/// The persons sharing one of `keys`, other than those in `known`, best first (see
/// `gather_candidates`).
fn gather_candidates_from(
    txn: &mut Txn<'_>,
    keys: &BTreeSet<String>,
    known: &BTreeSet<PersonId>,
) -> Result<Vec<Candidate>, StoreError> {
    let ranked = persons_sharing(txn, keys, None)?;
    let mut candidates = Vec::with_capacity(ranked.len());
    for person_id in ranked.into_iter().filter(|person_id| !known.contains(person_id)) {
        let Some(header) = txn.person(&person_id)? else {
            continue;
        };
        let features: Features = txn.person_features(&person_id)?.unwrap_or_default();
        candidates.push(Candidate {
            person_id,
            features,
            n_records: header.n_records,
            held_apart_from_record: false,
        });
    }
    Ok(candidates)
}

/// The persons (other than `except`) holding any of `keys`, those sharing the most keys first
/// (ties by id, so the order never depends on how they were found), at most `CANDIDATES_MAX`.
fn persons_sharing(
    txn: &mut Txn<'_>,
    keys: &BTreeSet<String>,
    except: Option<&PersonId>,
) -> Result<Vec<PersonId>, StoreError> {
    let mut shared: BTreeMap<PersonId, usize> = BTreeMap::new();
    for key in keys {
        for person_id in postings(txn, key)? {
            if Some(&person_id) != except {
                *shared.entry(person_id).or_default() += 1;
            }
        }
    }
    let mut ranked: Vec<(PersonId, usize)> = shared.into_iter().collect();
    ranked.sort_by(|(a_id, a_keys), (b_id, b_keys)| b_keys.cmp(a_keys).then_with(|| a_id.cmp(b_id)));
    Ok(ranked
        .into_iter()
        .take(CANDIDATES_MAX)
        .map(|(person_id, _)| person_id)
        .collect())
}

/// The persons holding a blocking key, none if it is too common; a key found too common for
/// the first time is marked, so that it keeps no more postings and is not counted again.
fn postings(txn: &mut Txn<'_>, key: &str) -> Result<Vec<PersonId>, StoreError> {
    match txn.postings(key, postings_cap(key))? {
        Postings::Persons(persons) => Ok(persons),
        Postings::Common { marked } => {
            if !marked {
                txn.mark_common_key(key)?;
            }
            Ok(Vec::new())
        }
    }
}

/// Adds the persons the index finds like the record, that the exact keys did not find, to
/// `candidates`. The index lags the store: a person it names may have been merged away since
/// (skipped), and the store's features, not the index's, are what gets compared. Returns how
/// many were added.
pub(super) fn add_fuzzy_candidates(
    txn: &Txn<'_>,
    fuzzy: FuzzyCandidates<'_>,
    features: &Features,
    candidates: &mut Vec<Candidate>,
) -> Result<usize, StoreError> {
    let known: BTreeSet<PersonId> = candidates.iter().map(|candidate| candidate.person_id.clone()).collect();
    let mut added = 0;
    for person_id in fuzzy(features) {
        if known.contains(&person_id) {
            continue;
        }
        let Some(header) = txn.person(&person_id)? else {
            continue;
        };
        let person_features: Features = txn.person_features(&person_id)?.unwrap_or_default();
        candidates.push(Candidate {
            person_id,
            features: person_features,
            n_records: header.n_records,
            held_apart_from_record: false,
        });
        added += 1;
    }
    Ok(added)
}

/// Adds a record's features to its person's, with the postings of any new blocking key.
/// Returns the new keys.
fn add_features(txn: &mut Txn<'_>, person_id: &PersonId, features: &Features) -> Result<BTreeSet<String>, StoreError> {
    let stored: Option<Features> = txn.person_features(person_id)?;
    let is_new = stored.is_none();
    let before = stored.unwrap_or_default();
    let mut held = before.clone();
    if !held.absorb(features) && !is_new {
        // Nothing new (the common case for a record of a known person): no key, no write.
        return Ok(BTreeSet::new());
    }
    let before = blocking_keys(&before);
    let new_keys: BTreeSet<String> = blocking_keys(&held).difference(&before).cloned().collect();
    for key in &new_keys {
        txn.add_posting(key, person_id)?;
    }
    txn.put_person_features(person_id, &held)?;
    Ok(new_keys)
}

/// The share of named records that carry a name, for the term-frequency adjustment; `None`
/// while too few records have names for the share to mean anything.
pub(super) fn name_share<'t>(txn: &'t Txn<'_>, model: &'t MatchModel) -> impl Fn(&str) -> Option<f64> + 't {
    move |name: &str| {
        let (count, total) = txn.name_count(name).ok()?;
        (total >= model.tf_min_records).then(|| count.max(1) as f64 / total as f64)
    }
}

/// After a person gained values, compares it as a whole with the other persons holding its new
/// blocking keys, and merges those it now matches (never across different valid ID numbers).
/// This is what makes two persons one when the record that links them arrived before one of
/// them had the values that link them. Returns the surviving id and the persons merged.
fn consolidate(
    txn: &mut Txn<'_>,
    model: &MatchModel,
    person_id: &PersonId,
    new_keys: &BTreeSet<String>,
    touched: &mut BTreeMap<PersonId, Touched>,
    at: EpochMillis,
) -> Result<(PersonId, Vec<PersonId>), StoreError> {
    consolidate_as(txn, model, person_id, new_keys, touched, at, Cause::Matcher)
}

/// `consolidate`, with the cause the merges are recorded under.
pub(super) fn consolidate_as(
    txn: &mut Txn<'_>,
    model: &MatchModel,
    person_id: &PersonId,
    new_keys: &BTreeSet<String>,
    touched: &mut BTreeMap<PersonId, Touched>,
    at: EpochMillis,
    cause: Cause,
) -> Result<(PersonId, Vec<PersonId>), StoreError> {
    // The stand-alone keys are for a record nothing else places, not for whole persons.
    let paired: BTreeSet<String> = new_keys.iter().filter(|key| !is_fallback_key(key)).cloned().collect();
    let ranked = persons_sharing(txn, &paired, Some(person_id))?;
    let mut current = person_id.clone();
    let mut merged = Vec::new();
    for other in ranked {
        let (Some(current_header), Some(other_header)) = (txn.person(&current)?, txn.person(&other)?) else {
            continue;
        };
        let current_features: Features = txn.person_features(&current)?.unwrap_or_default();
        let other_features: Features = txn.person_features(&other)?.unwrap_or_default();
        let (score, hold) = {
            let name_share = name_share(txn, model);
            resolve::explain_pair(&current_features, &other_features, model, txn.n_persons()?, &name_share)
        };
        if hold.is_some() || score.probability() < model.match_probability || txn.held_apart(&current, &other)? {
            continue;
        }
        let keep_current = current_header.n_records > other_header.n_records
            || (current_header.n_records == other_header.n_records && current < other);
        let (survivor, loser) = if keep_current {
            (current.clone(), other)
        } else {
            (other, current.clone())
        };
        merge_person(txn, &loser, &survivor, touched, at, cause.clone())?;
        merged.push(loser);
        current = survivor;
    }
    Ok((current, merged))
}

/// Recomputes a person's features from its records after one left, dropping the postings of
/// values no record holds any more.
pub(super) fn refresh_features(txn: &mut Txn<'_>, catalog: &Catalog, person_id: &PersonId) -> Result<(), StoreError> {
    let before: Features = txn.person_features(person_id)?.unwrap_or_default();
    let mut after = Features::default();
    for (_, record) in load_records(txn, &txn.members(person_id)?)? {
        after.absorb(&record_features(&record, catalog));
    }
    let (old_keys, new_keys) = (blocking_keys(&before), blocking_keys(&after));
    for key in old_keys.difference(&new_keys) {
        txn.remove_posting(key, person_id)?;
    }
    for key in new_keys.difference(&old_keys) {
        txn.add_posting(key, person_id)?;
    }
    txn.put_person_features(person_id, &after)
}

/// Moves every record of `loser` into `survivor`, hands its features, postings and steward
/// decisions over, and retires its id as an alias of the survivor; both histories say so.
pub(super) fn merge_person(
    txn: &mut Txn<'_>,
    loser: &PersonId,
    survivor: &PersonId,
    touched: &mut BTreeMap<PersonId, Touched>,
    at: EpochMillis,
    cause: Cause,
) -> Result<(), StoreError> {
    for key in txn.members(loser)? {
        txn.remove_member(loser, &key)?;
        txn.add_member(survivor, &key)?;
        txn.set_record_person(&key, survivor)?;
    }
    let loser_features: Features = txn.person_features(loser)?.unwrap_or_default();
    for key in blocking_keys(&loser_features) {
        txn.remove_posting(&key, loser)?;
    }
    add_features(txn, survivor, &loser_features)?;
    txn.move_held_apart(loser, survivor)?;
    txn.retire_person(loser, survivor, at, cause.clone())?;
    // What the batch did to the loser so far is now the survivor's story.
    let loser_events = touched.remove(loser).map(|change| change.events).unwrap_or_default();
    let change = touched.entry(survivor.clone()).or_default();
    change.full = true;
    change.events.extend(loser_events);
    change.events.push(PersonEvent::Absorbed {
        person: loser.clone(),
        cause,
    });
    Ok(())
}

pub(super) fn count_names(txn: &mut Txn<'_>, features: &Features, delta: i64) -> Result<(), StoreError> {
    for name in features.texts(Feature::Name) {
        txn.count_name(name, delta)?;
    }
    Ok(())
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

/// What a batch did to one person's records.
#[derive(Default)]
pub(super) struct Touched {
    /// Records whose previous version this person held (replaced or moved away).
    removed: BTreeSet<RecordKey>,
    /// Records whose new version was placed in this person.
    added: BTreeSet<RecordKey>,
    /// Another person merged into this one: recompute the whole profile.
    pub(super) full: bool,
    /// What happened, for the person's history.
    pub(super) events: Vec<PersonEvent>,
}

/// Brings a person's profile up to date without reading every record when it can: tags won
/// by a removed record version are recomputed (from that department's records only, for a
/// department tag), then every added record competes for the tags it carries. The result
/// equals survivorship over all the person's records (see `profile::offer`).
pub(super) fn refresh_person(
    txn: &mut Txn<'_>,
    catalog: &Catalog,
    person_id: &PersonId,
    change: Touched,
    at: EpochMillis,
) -> Result<(), StoreError> {
    if txn.person(person_id)?.is_none() {
        return Ok(());
    }
    if change.full {
        let loaded = load_records(txn, &txn.members(person_id)?)?;
        let profile = survive(&views_of(&loaded), catalog);
        txn.write_person(person_id, &profile, at, change.events)?;
        return Ok(());
    }
    let mut profile = txn.profile(person_id, &[])?;
    let stale: BTreeSet<TagCode> = profile
        .iter()
        .filter(|(tag, _)| !is_collective(tag, catalog))
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
    // Most-frequent tags depend on every record: recompute those an added record carries, and
    // all of them when a record left.
    let mut collective: BTreeSet<TagCode> = loaded
        .iter()
        .flat_map(|(_, record)| record.tags.keys())
        .filter(|tag| is_collective(tag, catalog))
        .cloned()
        .collect();
    if !change.removed.is_empty() {
        collective.extend(profile.keys().filter(|tag| is_collective(tag, catalog)).cloned());
    }
    if !collective.is_empty() {
        let everyone = load_records(txn, &txn.members(person_id)?)?;
        let winners = survive_tags(&views_of(&everyone), &collective, catalog);
        profile.retain(|tag, _| !collective.contains(tag));
        profile.extend(winners);
    }
    txn.write_person(person_id, &profile, at, change.events)?;
    Ok(())
}

pub(super) fn load_records(txn: &Txn<'_>, keys: &[RecordKey]) -> Result<Vec<(RecordKey, StoredRecord)>, StoreError> {
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

pub(super) fn views_of(loaded: &[(RecordKey, StoredRecord)]) -> Vec<RecordView<'_>> {
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
                model: None,
                steward: None,
                actor: None,
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

    /// The partition of the stored records into persons.
    fn stored_partition(store: &Store) -> BTreeSet<BTreeSet<RecordKey>> {
        let mut persons: BTreeMap<PersonId, BTreeSet<RecordKey>> = BTreeMap::new();
        for (key, person_id) in store.mapping_page(None, usize::MAX).expect("mapping") {
            persons.entry(person_id).or_default().insert(key);
        }
        persons.into_values().collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// DESIGN.md's promise with deletes and re-sends interleaved: records loaded in any
        /// order and batching, some deleted (and some of those sent again later), some re-sent
        /// with other values that do not change who they are, end as the same persons as the
        /// surviving records loaded once.
        #[test]
        fn deletes_and_resends_in_any_order_give_the_same_persons(
            order in Just((0..60usize).collect::<Vec<_>>()).prop_shuffle(),
            fates in proptest::collection::vec(0u8..4, 60),
            batch_size in 1usize..20,
        ) {
            let records = records();
            let catalog = Catalog::shipped();
            let store = Store::open(Box::new(MemKv::default())).expect("opens");
            // 0: loaded once; 1: deleted; 2: deleted, then sent again; 3: re-sent with another
            // ethnicity (not an identity value).
            let mut loads: Vec<RawRecord> = order.iter().map(|&idx| records[idx].clone()).collect();
            let mut later: Vec<(Option<RecordKey>, Vec<RawRecord>)> = Vec::new();
            for &idx in &order {
                let record = &records[idx];
                match fates[idx] {
                    1 => later.push((Some(record.key.clone()), vec![])),
                    2 => later.push((Some(record.key.clone()), vec![record.clone()])),
                    3 => {
                        let mut changed = record.clone();
                        changed.tags.insert(TagCode::new("ethnicity"), "回族".into());
                        loads.push(changed);
                    }
                    _ => {}
                }
            }
            let mut sequence = 0;
            let mut apply = |records: Vec<RawRecord>, steward: Option<crate::model::StewardAction>| {
                sequence += 1;
                let entry = WalEntry { sequence, received_at: 0, records, rejected: vec![], model: None, steward, actor: None };
                apply_entry(&store, &catalog, entry).expect("applies");
            };
            for chunk in loads.chunks(batch_size) {
                apply(chunk.to_vec(), None);
            }
            for (deleted, resent) in later {
                apply(vec![], deleted.map(|record| crate::model::StewardAction::DeleteRecord { record }));
                if !resent.is_empty() {
                    apply(resent, None);
                }
            }
            let surviving: Vec<usize> = (0..records.len()).filter(|idx| fates[*idx] != 1).collect();
            prop_assert_eq!(stored_partition(&store), partition(&records, &surviving, 60));
            assert_profiles_consistent(&store, &catalog);
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
                let entry = WalEntry { sequence: batch_idx as u64 + 1, received_at: 0, records: chunk.to_vec(), rejected: vec![], model: None, steward: None, actor: None };
                apply_entry(&store, &catalog, entry.clone()).expect("applies");
            }
            assert_profiles_consistent(&store, &catalog);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        /// With most-frequent and most-complete rules, re-sends and moves keep every profile
        /// equal to survivorship over its records.
        #[test]
        fn collective_rules_stay_exact(resends in proptest::collection::vec((0usize..60, 0u32..4), 1..30), batch_size in 1usize..20) {
            let catalog = Catalog::shipped_with_rules(&[
                ("ethnicity", crate::catalog::Survivorship::MostFrequent),
                ("hukou_address", crate::catalog::Survivorship::MostComplete),
            ]);
            let store = Store::open(Box::new(MemKv::default())).expect("opens");
            let ethnicities = ["汉族", "回族", "满族", "壮族"];
            let places = ["杭州市", "杭州市西湖区", "杭州市西湖区文三路", "杭州市西湖区文三路1号"];
            let mut all: Vec<RawRecord> = records()
                .into_iter()
                .enumerate()
                .map(|(idx, mut record)| {
                    record.tags.insert(TagCode::new("ethnicity"), ethnicities[idx % 2].into());
                    record.tags.insert(TagCode::new("hukou_address"), places[idx % 4].into());
                    record
                })
                .collect();
            let base = all.clone();
            for (idx, variant) in resends {
                let mut record = base[idx].clone();
                record.tags.insert(TagCode::new("ethnicity"), ethnicities[variant as usize].into());
                if variant == 0 {
                    // Moves the record to another person, too.
                    record.tags.remove(&TagCode::new("id_number"));
                    record.tags.remove(&TagCode::new("hukou_address"));
                }
                all.push(record);
            }
            for (batch_idx, chunk) in all.chunks(batch_size).enumerate() {
                let entry = WalEntry { sequence: batch_idx as u64 + 1, received_at: 0, records: chunk.to_vec(), rejected: vec![], model: None, steward: None, actor: None };
                apply_entry(&store, &catalog, entry).expect("applies");
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

    /// A record whose paired keys all miss (its identifier has two digits swapped) is still
    /// placed, through the stand-alone keys the write path tries when nothing else matched.
    #[test]
    fn stand_alone_keys_place_what_paired_keys_miss() {
        let store = Store::open(Box::new(MemKv::default())).expect("opens");
        let catalog = Catalog::shipped();
        let entry = WalEntry {
            sequence: 1,
            received_at: 0,
            records: vec![
                raw("D05", "a", &[("name", "诸葛青云"), ("other_id", "E12345678")]),
                raw("D07", "b", &[("name", "诸葛青云"), ("other_id", "E12345687")]),
            ],
            rejected: vec![],
            model: None,
            steward: None,
            actor: None,
        };
        let placed = apply_entry(&store, &catalog, entry).expect("applies");
        assert_eq!(placed[1].decision, Decision::Matched, "{placed:?}");
        assert_eq!(placed[0].person_id, placed[1].person_id);
    }

    #[test]
    fn a_change_with_an_actor_is_audited_in_its_own_transaction() {
        use crate::model::Actor;
        use crate::store::AuditQuery;
        let store = Store::open(Box::new(MemKv::default())).expect("opens");
        let catalog = Catalog::shipped();
        let everything = AuditQuery {
            from: 0,
            to: i64::MAX,
            ..AuditQuery::default()
        };
        let entry = |sequence: u64, actor: Option<Actor>| WalEntry {
            sequence,
            received_at: 1_790_000_000_000 + sequence as i64,
            records: vec![
                raw(
                    "D05",
                    &format!("a{sequence}"),
                    &[("name", "诸葛青云"), ("other_id", "E12345678")],
                ),
                raw(
                    "D07",
                    &format!("b{sequence}"),
                    &[("name", "诸葛青云"), ("other_id", "E12345678")],
                ),
            ],
            rejected: vec![],
            model: None,
            steward: None,
            actor,
        };
        let actor = Actor {
            caller: "etl-d07".into(),
            purpose: String::new(),
            action: "IngestService/StreamRecords".into(),
            detail: "batch 3: 2 records".into(),
        };
        let placed = apply_entry(&store, &catalog, entry(1, Some(actor.clone()))).expect("applies");
        let audited = store.audit_page(&everything, None, 10).expect("page").entries;
        assert_eq!(audited.len(), 1);
        assert_eq!(
            (
                audited[0].caller.as_str(),
                audited[0].action.as_str(),
                audited[0].outcome.as_str()
            ),
            ("etl-d07", "IngestService/StreamRecords", "OK")
        );
        assert_eq!(audited[0].at, 1_790_000_000_001);
        assert_eq!(audited[0].detail, "batch 3: 2 records; sequence 1");
        assert_eq!(audited[0].persons, [placed[0].person_id.to_string()]);
        assert_eq!(audited[0].shares, 0);
        // A replay of the same entry rewrites its audit entry in place; a write of the service
        // itself leaves none.
        apply_entry(&store, &catalog, entry(1, Some(actor))).expect("replays");
        apply_entry(&store, &catalog, entry(2, None)).expect("applies");
        assert_eq!(store.audit_page(&everything, None, 10).expect("page").entries.len(), 1);
        // The audit writer's serials (from 0) never meet the write path's.
        assert_eq!(store.next_audit_serial().expect("serial"), 0);
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
            model: None,
            steward: None,
            actor: None,
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
            model: None,
            steward: None,
            actor: None,
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
