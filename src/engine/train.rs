//! Gathering the comparison patterns the model is trained on, from the store as it is: u from
//! random pairs of records of different persons, m by expectation maximisation
//! over the record pairs the blocking keys bring together. A seeded sample keeps the cost
//! bounded and the result repeatable on the same data.

use super::apply::{postings_cap, record_features};
use crate::catalog::Catalog;
use crate::model::{PersonId, RecordKey};
use crate::resolve::compare::compare_feature;
use crate::resolve::model::Pattern;
use crate::resolve::{blocking_keys, Feature, Features};
use crate::store::{Postings, Store, StoreError};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;

/// How many records are sampled.
const SAMPLE_RECORDS: usize = 4_000;
/// Random pairs drawn from the sample for u.
const RANDOM_PAIRS: usize = 200_000;
/// Candidate persons and records per person visited for each sampled record.
const CANDIDATES_PER_RECORD: usize = 10;
const RECORDS_PER_CANDIDATE: usize = 8;
const SEED: u64 = 0x5EED_7A1B;

/// Pattern samples for `resolve::model::train`.
pub struct TrainingSample {
    pub random_pairs: Vec<Pattern>,
    pub candidate_pairs: Vec<Pattern>,
}

pub fn pattern(a: &Features, b: &Features) -> Pattern {
    let mut pattern: Pattern = [None; 7];
    for (slot, feature) in Feature::ALL.into_iter().enumerate() {
        pattern[slot] = compare_feature(feature, a, b).map(|(level, _)| level);
    }
    pattern
}

pub fn sample(store: &Store, catalog: &Catalog) -> Result<TrainingSample, StoreError> {
    let mut rng = SmallRng::seed_from_u64(SEED);
    // Reservoir sample of record keys over one pass of the mapping.
    let mut reservoir: Vec<(RecordKey, PersonId)> = Vec::with_capacity(SAMPLE_RECORDS);
    let mut seen = 0usize;
    let mut after: Option<RecordKey> = None;
    loop {
        let page = store.mapping_page(after.as_ref(), 4_096)?;
        let done = page.len() < 4_096;
        after = page.last().map(|(key, _)| key.clone());
        for row in page {
            seen += 1;
            if reservoir.len() < SAMPLE_RECORDS {
                reservoir.push(row);
            } else {
                let slot = rng.gen_range(0..seen);
                if slot < SAMPLE_RECORDS {
                    reservoir[slot] = row;
                }
            }
        }
        if done {
            break;
        }
    }
    let txn = store.begin();
    let mut sampled: Vec<(RecordKey, PersonId, Features)> = Vec::with_capacity(reservoir.len());
    for (key, person_id) in reservoir {
        if let Some(record) = txn.record(&key)? {
            let features = record_features(&record, catalog);
            if !features.is_empty() {
                sampled.push((key, person_id, features));
            }
        }
    }
    let mut random_pairs = Vec::new();
    if sampled.len() >= 2 {
        for _ in 0..RANDOM_PAIRS {
            let first = rng.gen_range(0..sampled.len());
            let second = rng.gen_range(0..sampled.len());
            // Pairs already resolved to one person would count matches into u.
            if sampled[first].1 != sampled[second].1 {
                random_pairs.push(pattern(&sampled[first].2, &sampled[second].2));
            }
        }
    }
    let mut visited: BTreeSet<(RecordKey, RecordKey)> = BTreeSet::new();
    let mut candidate_pairs = Vec::new();
    for (key, _, features) in &sampled {
        let mut persons = BTreeSet::new();
        for blocking_key in blocking_keys(features) {
            if let Postings::Persons(found) = txn.postings(&blocking_key, postings_cap(&blocking_key))? {
                persons.extend(found);
            }
        }
        for person_id in persons.into_iter().take(CANDIDATES_PER_RECORD) {
            for other in txn.members(&person_id)?.into_iter().take(RECORDS_PER_CANDIDATE) {
                if other == *key {
                    continue;
                }
                let pair = if *key < other {
                    (key.clone(), other.clone())
                } else {
                    (other.clone(), key.clone())
                };
                if !visited.insert(pair) {
                    continue;
                }
                if let Some(record) = txn.record(&other)? {
                    candidate_pairs.push(pattern(features, &record_features(&record, catalog)));
                }
            }
        }
    }
    Ok(TrainingSample {
        random_pairs,
        candidate_pairs,
    })
}
