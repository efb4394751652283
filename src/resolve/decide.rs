//! The entity-centric decision: the record is compared with each candidate person through all
//! of that person's values (the best level per feature), scored by the model, and placed.
//!
//! - At or above the match probability: join. Several persons that high: the record is the
//!   evidence that they are one, so they merge into one (the one with most records keeps its
//!   id), except persons holding different valid ID numbers, which never merge automatically.
//! - Between the review and match probabilities: a new person, and a review item for the
//!   stewards naming the possible matches.
//! - Below: a new person.
//! - The same valid ID number with a clearly different name is a duplicated number, not a
//!   match: a new person and a review item.
//!
//! Every decision keeps its evidence: the candidates, each feature's level and weight, the
//! prior and the total.

use super::compare::{compare_feature_with, AddressWords, Level};
use super::features::{conflicting_id_numbers, Feature, Features};
use super::model::{MatchModel, Score};
use crate::model::{Decision, PersonId};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// A candidate person as the engine read it from the store.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub person_id: PersonId,
    pub features: Features,
    pub n_records: u32,
    /// A steward said this person differs from the person the record was in before it was
    /// re-sent: the record must not join it.
    pub held_apart_from_record: bool,
}

/// Where the record goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Into an existing person.
    Join(PersonId),
    /// Into `into`, after merging `merged` into it.
    Merge { into: PersonId, merged: Vec<PersonId> },
    /// Into a new person.
    New,
}

/// Why a candidate was not joined although it scored high enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Hold {
    /// Both hold valid ID numbers and they differ.
    ConflictingIdNumbers,
    /// The same valid ID number, but the names are different: a duplicated number.
    SharedIdNumberDifferentName,
    /// A steward said they are different people.
    StewardSaidDifferent,
}

impl Hold {
    pub fn words(self) -> &'static str {
        match self {
            Hold::ConflictingIdNumbers => "different valid ID numbers never join automatically",
            Hold::SharedIdNumberDifferentName => {
                "the same ID number with a different name is a duplicated number, not a match"
            }
            Hold::StewardSaidDifferent => "a steward said these are different people",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredCandidate {
    pub person_id: PersonId,
    pub score: Score,
    pub probability: f64,
    pub hold: Option<Hold>,
}

/// What the decision rests on; stored with the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub decision: Decision,
    /// The person the record was placed in.
    pub person_id: Option<PersonId>,
    pub model_version: u64,
    pub match_probability: f64,
    pub review_probability: f64,
    /// The best-scoring candidates, best first (at most `CANDIDATES_KEPT`).
    pub candidates: Vec<ScoredCandidate>,
    /// Persons merged into `person_id` because of this record.
    pub merged: Vec<PersonId>,
    /// How many candidate persons the blocking keys found.
    pub n_candidates: usize,
    /// How many more the search index found (asked only when the keys found no possible
    /// match).
    pub n_index_candidates: usize,
}

/// How many scored candidates the evidence keeps.
pub const CANDIDATES_KEPT: usize = 3;

#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    pub placement: Placement,
    pub decision: Decision,
    /// Possible matches for the stewards' review queue (empty: nothing to review).
    pub review: Vec<ScoredCandidate>,
    pub evidence: Evidence,
}

/// Scores `record` against every candidate. `name_share` gives the share of records that
/// carry a name (for the term-frequency adjustment), `None` while too few records have names.
pub fn score(
    record: &Features,
    person: &Features,
    model: &MatchModel,
    n_persons: u64,
    name_share: &dyn Fn(&str) -> Option<f64>,
) -> Score {
    score_with(record, &AddressWords::of(record), person, model, n_persons, name_share)
}

/// `score` with the record's address words already computed, for one record against many
/// candidates.
fn score_with(
    record: &Features,
    record_words: &AddressWords,
    person: &Features,
    model: &MatchModel,
    n_persons: u64,
    name_share: &dyn Fn(&str) -> Option<f64>,
) -> Score {
    let mut comparisons = Vec::new();
    for feature in Feature::ALL {
        let Some((level, weak)) = compare_feature_with(feature, record, record_words, person) else {
            continue;
        };
        let share = if feature == Feature::Name && level == Level::Exact {
            record
                .texts(Feature::Name)
                .find(|name| person.texts(Feature::Name).any(|other| other == *name))
                .or_else(|| record.texts(Feature::Name).next())
                .and_then(name_share)
        } else {
            None
        };
        comparisons.push(model.weigh(feature, level, weak, share));
    }
    let total = comparisons.iter().map(|comparison| comparison.weight).sum();
    Score {
        comparisons,
        total,
        prior: model.prior(n_persons),
    }
}

/// Whether two sets of features must not be joined automatically whatever their score.
fn hold_of(a: &Features, b: &Features, score: &Score) -> Option<Hold> {
    if conflicting_id_numbers(a, b) {
        return Some(Hold::ConflictingIdNumbers);
    }
    let same_valid_id = !a.valid_id_numbers().is_disjoint(&b.valid_id_numbers());
    if same_valid_id && score.level_of(Feature::Name) == Some(Level::Different) {
        return Some(Hold::SharedIdNumberDifferentName);
    }
    None
}

pub fn decide(
    record: &Features,
    candidates: &[Candidate],
    model: &MatchModel,
    n_persons: u64,
    name_share: &dyn Fn(&str) -> Option<f64>,
) -> Resolution {
    decide_with_stewards(record, candidates, model, n_persons, name_share, &|_, _| false)
}

/// `decide`, respecting what stewards said: `held_apart(a, b)` tells whether a steward said
/// persons `a` and `b` differ. Such persons are never joined or merged, and not queued for
/// review again.
pub fn decide_with_stewards(
    record: &Features,
    candidates: &[Candidate],
    model: &MatchModel,
    n_persons: u64,
    name_share: &dyn Fn(&str) -> Option<f64>,
    held_apart: &dyn Fn(&PersonId, &PersonId) -> bool,
) -> Resolution {
    let record_words = AddressWords::of(record);
    let mut scored: Vec<(ScoredCandidate, &Candidate)> = candidates
        .iter()
        .map(|candidate| {
            let score = score_with(record, &record_words, &candidate.features, model, n_persons, name_share);
            let probability = score.probability();
            let hold = if candidate.held_apart_from_record {
                Some(Hold::StewardSaidDifferent)
            } else {
                hold_of(record, &candidate.features, &score)
            };
            (
                ScoredCandidate {
                    person_id: candidate.person_id.clone(),
                    score,
                    probability,
                    hold,
                },
                candidate,
            )
        })
        .collect();
    // Best first; ties by id so the order never depends on how candidates were found.
    scored.sort_by(|(a, _), (b, _)| {
        b.score
            .log_odds()
            .total_cmp(&a.score.log_odds())
            .then_with(|| a.person_id.cmp(&b.person_id))
    });
    let strong: Vec<&Candidate> = scored
        .iter()
        .filter(|(scored, _)| scored.probability >= model.match_probability && scored.hold.is_none())
        .map(|(_, candidate)| *candidate)
        .collect();
    let mut review: Vec<ScoredCandidate> = Vec::new();
    let (placement, decision) = match strong.as_slice() {
        [] => {
            review.extend(
                scored
                    .iter()
                    .filter(|(scored, _)| scored.probability >= model.review_probability)
                    .map(|(scored, _)| scored.clone()),
            );
            let decision = if review.is_empty() {
                Decision::Created
            } else {
                Decision::Review
            };
            (Placement::New, decision)
        }
        [best, others @ ..] => {
            // The record joins its best match; the other matches merge with it unless their
            // ID numbers conflict with what the group already holds.
            let mut joined = best.features.clone();
            let mut group: Vec<&Candidate> = vec![best];
            for candidate in others {
                let apart = group
                    .iter()
                    .any(|member| held_apart(&member.person_id, &candidate.person_id));
                if apart {
                    continue;
                }
                if conflicting_id_numbers(&joined, &candidate.features) {
                    if let Some((scored, _)) = scored.iter().find(|(s, _)| s.person_id == candidate.person_id) {
                        review.push(scored.clone());
                    }
                    continue;
                }
                joined.absorb(&candidate.features);
                group.push(candidate);
            }
            // The survivor of a merge: most records, then the smallest id (deterministic).
            let survivor = group
                .iter()
                .max_by(|a, b| {
                    a.n_records
                        .cmp(&b.n_records)
                        .then_with(|| b.person_id.cmp(&a.person_id))
                })
                .expect("the group holds the best match");
            let mut merged: Vec<PersonId> = group
                .iter()
                .filter(|candidate| candidate.person_id != survivor.person_id)
                .map(|candidate| candidate.person_id.clone())
                .collect();
            merged.sort();
            if merged.is_empty() {
                (Placement::Join(survivor.person_id.clone()), Decision::Matched)
            } else {
                (
                    Placement::Merge {
                        into: survivor.person_id.clone(),
                        merged,
                    },
                    Decision::Merged,
                )
            }
        }
    };
    // A held candidate that scored as a match is the stewards' to judge (unless they did).
    for (scored, _) in &scored {
        if scored.hold.is_some_and(|hold| hold != Hold::StewardSaidDifferent)
            && scored.probability >= model.review_probability
            && !review.iter().any(|item| item.person_id == scored.person_id)
        {
            review.push(scored.clone());
        }
    }
    let decision = if decision == Decision::Created && !review.is_empty() {
        Decision::Review
    } else {
        decision
    };
    let person_id = match &placement {
        Placement::Join(person_id) | Placement::Merge { into: person_id, .. } => Some(person_id.clone()),
        Placement::New => None,
    };
    let merged = match &placement {
        Placement::Merge { merged, .. } => merged.clone(),
        _ => Vec::new(),
    };
    let evidence = Evidence {
        decision,
        person_id,
        model_version: model.version,
        match_probability: model.match_probability,
        review_probability: model.review_probability,
        candidates: scored
            .iter()
            .take(CANDIDATES_KEPT)
            .map(|(scored, _)| scored.clone())
            .collect(),
        merged,
        n_candidates: candidates.len(),
        n_index_candidates: 0,
    };
    Resolution {
        placement,
        decision,
        review,
        evidence,
    }
}

/// The comparison of two persons, as a steward asks for it.
pub fn explain_pair(
    a: &Features,
    b: &Features,
    model: &MatchModel,
    n_persons: u64,
    name_share: &dyn Fn(&str) -> Option<f64>,
) -> (Score, Option<Hold>) {
    let score = score(a, b, model, n_persons, name_share);
    let hold = hold_of(a, b, &score);
    (score, hold)
}

/// A score in words: one line per feature, then the total.
pub fn describe_score(score: &Score) -> String {
    let mut out = String::new();
    for comparison in &score.comparisons {
        let _ = write!(
            out,
            "{}: {} ({:+.1}",
            comparison.feature.label(),
            comparison.level.label(),
            comparison.weight
        );
        if comparison.term_frequency.is_some() {
            out.push_str(", weighted by how common the name is");
        }
        if comparison.weak {
            out.push_str(", discounted: cleansing flagged a value");
        }
        out.push_str(")\n");
    }
    let _ = write!(
        out,
        "evidence {:+.1}, prior {:+.1}: match probability {:.4}",
        score.total,
        score.prior,
        score.probability()
    );
    out
}

/// A score in one short line: each feature's level in words ("name: the same pinyin; birth
/// date: the same"), weak values marked; the weights are left to `describe_score`.
pub fn describe_levels(score: &Score) -> String {
    let parts: Vec<String> = score
        .comparisons
        .iter()
        .map(|comparison| {
            let flagged = if comparison.weak { " (flagged value)" } else { "" };
            format!("{}: {}{flagged}", comparison.feature.label(), comparison.level.label())
        })
        .collect();
    parts.join("; ")
}

/// The evidence of one decision in words a steward can read.
pub fn describe_evidence(evidence: &Evidence) -> String {
    let mut out = String::new();
    let decision = match evidence.decision {
        Decision::Created => "a new person: no candidate reached the review threshold",
        Decision::Matched => "joined the person it matched",
        Decision::Merged => "joined the best match and merged the other matching persons into it",
        Decision::Review => "a new person, with possible matches sent to review",
        Decision::Unchanged => "unchanged: the record was re-sent as it was",
    };
    let _ = writeln!(
        out,
        "decision: {decision} (model version {}, match at probability {}, review at {})",
        evidence.model_version, evidence.match_probability, evidence.review_probability
    );
    let _ = writeln!(
        out,
        "{} candidate persons found by the blocking keys",
        evidence.n_candidates - evidence.n_index_candidates
    );
    if evidence.n_index_candidates > 0 {
        let _ = writeln!(
            out,
            "{} more found by the search index (name n-grams and pinyin, address words)",
            evidence.n_index_candidates
        );
    }
    for candidate in &evidence.candidates {
        let _ = writeln!(
            out,
            "candidate {} (probability {:.4}){}",
            candidate.person_id,
            candidate.probability,
            candidate
                .hold
                .map(|hold| format!(": held, {}", hold.words()))
                .unwrap_or_default()
        );
        for line in describe_score(&candidate.score).lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    if !evidence.merged.is_empty() {
        let merged: Vec<&str> = evidence.merged.iter().map(PersonId::as_str).collect();
        let _ = writeln!(out, "merged: {}", merged.join(", "));
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::features::FeatureValue;

    fn features(pairs: &[(Feature, &str)]) -> Features {
        let mut features = Features::default();
        for (feature, text) in pairs {
            features.insert(
                *feature,
                FeatureValue {
                    text: text.to_string(),
                    division: String::new(),
                    weak: false,
                },
            );
        }
        features
    }

    fn candidate(id: &str, n_records: u32, pairs: &[(Feature, &str)]) -> Candidate {
        Candidate {
            held_apart_from_record: false,
            person_id: PersonId::new(id),
            features: features(pairs),
            n_records,
        }
    }

    fn no_tf(_: &str) -> Option<f64> {
        None
    }

    const ID_A: &str = "33010619900102177X";
    const ID_B: &str = "110105194912310029";

    fn zhang_wei(id: Option<&str>) -> Vec<(Feature, &str)> {
        let mut pairs = vec![
            (Feature::Name, "张伟"),
            (Feature::BirthDate, "1990-01-02"),
            (Feature::Gender, "男"),
            (Feature::Phone, "13800001234"),
        ];
        if let Some(id) = id {
            pairs.push((Feature::IdNumber, id));
        }
        pairs
    }

    #[test]
    fn levels_in_one_line() {
        let record = features(&[
            (Feature::Name, "章伟"),
            (Feature::BirthDate, "1990-01-02"),
            (Feature::Phone, "13900000000"),
        ]);
        let person = features(&zhang_wei(Some(ID_A)));
        let score = score(&record, &person, &MatchModel::default(), 1_000, &no_tf);
        assert_eq!(
            describe_levels(&score),
            "name: the same pinyin; birth date: the same; phone: different"
        );
    }

    #[test]
    fn nothing_to_compare_creates_a_person() {
        let resolution = decide(&features(&zhang_wei(None)), &[], &MatchModel::default(), 10, &no_tf);
        assert_eq!(resolution.placement, Placement::New);
        assert_eq!(resolution.decision, Decision::Created);
    }

    #[test]
    fn a_clear_match_joins() {
        let record = features(&zhang_wei(None));
        let candidates = [candidate("P1", 1, &zhang_wei(Some(ID_A)))];
        let resolution = decide(&record, &candidates, &MatchModel::default(), 1_000_000, &no_tf);
        assert_eq!(resolution.placement, Placement::Join(PersonId::new("P1")));
        assert_eq!(resolution.decision, Decision::Matched);
        let text = describe_evidence(&resolution.evidence);
        assert!(text.contains("name: the same"), "{text}");
        assert!(text.contains("phone: the same"), "{text}");
    }

    #[test]
    fn name_alone_is_not_enough() {
        let record = features(&[(Feature::Name, "张伟")]);
        let candidates = [candidate("P1", 1, &zhang_wei(None))];
        let resolution = decide(&record, &candidates, &MatchModel::default(), 1_000_000, &no_tf);
        assert_eq!(resolution.placement, Placement::New);
    }

    #[test]
    fn different_valid_id_numbers_never_join() {
        let record = features(&zhang_wei(Some(ID_B)));
        let candidates = [candidate("P1", 1, &zhang_wei(Some(ID_A)))];
        let resolution = decide(&record, &candidates, &MatchModel::default(), 1_000, &no_tf);
        assert_eq!(resolution.placement, Placement::New);
        assert_eq!(
            resolution.decision,
            Decision::Review,
            "name, date and phone agree: a steward looks"
        );
        assert_eq!(resolution.evidence.candidates[0].hold, Some(Hold::ConflictingIdNumbers));
    }

    #[test]
    fn a_shared_id_number_with_another_name_goes_to_review() {
        let record = features(&[(Feature::Name, "李娜"), (Feature::IdNumber, ID_A)]);
        let candidates = [candidate("P1", 1, &zhang_wei(Some(ID_A)))];
        let resolution = decide(&record, &candidates, &MatchModel::default(), 1_000, &no_tf);
        assert_eq!(resolution.placement, Placement::New);
        assert_eq!(resolution.decision, Decision::Review);
        assert_eq!(resolution.review[0].hold, Some(Hold::SharedIdNumberDifferentName));
    }

    #[test]
    fn a_record_matching_two_persons_merges_them() {
        let record = features(&[
            (Feature::Name, "张伟"),
            (Feature::IdNumber, ID_A),
            (Feature::Phone, "13800001234"),
        ]);
        let candidates = [
            candidate("P2", 1, &[(Feature::Name, "张伟"), (Feature::IdNumber, ID_A)]),
            candidate("P1", 3, &[(Feature::Name, "张伟"), (Feature::Phone, "13800001234")]),
        ];
        let resolution = decide(&record, &candidates, &MatchModel::default(), 1_000, &no_tf);
        assert_eq!(
            resolution.placement,
            Placement::Merge {
                into: PersonId::new("P1"),
                merged: vec![PersonId::new("P2")]
            }
        );
        assert_eq!(resolution.decision, Decision::Merged);
    }

    #[test]
    fn persons_with_different_id_numbers_are_not_merged() {
        let record = features(&[
            (Feature::Name, "张伟"),
            (Feature::Phone, "13800001234"),
            (Feature::BirthDate, "1990-01-02"),
        ]);
        let candidates = [
            candidate("P1", 2, &zhang_wei(Some(ID_A))),
            candidate("P2", 1, &zhang_wei(Some(ID_B))),
        ];
        let resolution = decide(&record, &candidates, &MatchModel::default(), 1_000, &no_tf);
        assert_eq!(resolution.placement, Placement::Join(PersonId::new("P1")));
        assert_eq!(resolution.review.len(), 1);
        assert_eq!(resolution.review[0].person_id, PersonId::new("P2"));
    }

    #[test]
    fn the_record_joins_its_best_match_when_the_others_cannot_merge() {
        let record = features(&zhang_wei(None));
        // Both match; they hold different ID numbers, so they stay apart, and the record goes
        // to the better match even though the other person is bigger.
        let candidates = [
            candidate(
                "P1",
                5,
                &[
                    (Feature::Name, "张伟"),
                    (Feature::BirthDate, "1990-01-02"),
                    (Feature::IdNumber, ID_A),
                ],
            ),
            candidate("P2", 1, &zhang_wei(Some(ID_B))),
        ];
        let resolution = decide(&record, &candidates, &MatchModel::default(), 1_000, &no_tf);
        assert_eq!(resolution.placement, Placement::Join(PersonId::new("P2")));
        assert_eq!(resolution.review.len(), 1);
        assert_eq!(resolution.review[0].person_id, PersonId::new("P1"));
    }

    #[test]
    fn the_candidate_order_does_not_matter() {
        let record = features(&zhang_wei(None));
        let a = candidate("P1", 1, &zhang_wei(Some(ID_A)));
        let b = candidate("P2", 1, &[(Feature::Name, "张伟"), (Feature::BirthDate, "1990-01-02")]);
        let one = decide(&record, &[a.clone(), b.clone()], &MatchModel::default(), 1_000, &no_tf);
        let other = decide(&record, &[b, a], &MatchModel::default(), 1_000, &no_tf);
        assert_eq!(one, other);
    }

    #[test]
    fn common_names_need_more_evidence() {
        let record = features(&[(Feature::Name, "张伟"), (Feature::BirthDate, "1990-01-02")]);
        let candidates = [candidate(
            "P1",
            1,
            &[(Feature::Name, "张伟"), (Feature::BirthDate, "1990-01-02")],
        )];
        let model = MatchModel::default();
        let common = decide(&record, &candidates, &model, 10_000_000, &|_| Some(0.0025));
        let rare = decide(&record, &candidates, &model, 10_000_000, &|_| Some(1e-8));
        assert!(common.evidence.candidates[0].probability < rare.evidence.candidates[0].probability);
        assert_eq!(common.placement, Placement::New);
        assert_eq!(rare.placement, Placement::Join(PersonId::new("P1")));
    }
}
