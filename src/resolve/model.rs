//! The Fellegi–Sunter scoring model: for every feature level an m probability (the level among
//! records of one person) and a u probability (among records of different persons). A level's
//! weight is log2(m / u); a comparison's score is the sum of its weights plus the prior odds
//! that two records are of one person. The shipped defaults are reasoned from how departments
//! record people; `train` re-estimates them from the ingested data (u from random pairs, m by
//! expectation maximisation over candidate pairs, as Splink does).

use super::compare::{levels_of, Level};
use super::features::Feature;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// m and u of one level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LevelParams {
    pub m: f64,
    pub u: f64,
}

impl LevelParams {
    pub fn weight(self) -> f64 {
        (self.m / self.u).log2()
    }
}

/// The model. Stored in the store, versioned; every decision names the version that made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchModel {
    /// 0 for the shipped defaults; each training stores the next version.
    pub version: u64,
    pub params: BTreeMap<Feature, BTreeMap<Level, LevelParams>>,
    /// Positive weights of weak values (flagged by cleansing) are multiplied by this.
    pub weak_discount: f64,
    /// A person is joined at this match probability or above.
    pub match_probability: f64,
    /// Between this and `match_probability` the pair goes to the review queue.
    pub review_probability: f64,
    /// The prior odds that a record and a candidate person are one person are 1 to the number
    /// of persons stored, but never better than 1 to this.
    pub min_population: u64,
    /// Exact name agreement is weighted by how common the name is (term frequency) once this
    /// many records carry a name; before, the level's u is used.
    pub tf_min_records: u64,
    /// Records and candidate pairs the model was trained on (0 for the defaults).
    pub trained_on_pairs: u64,
}

fn level(m: f64, u: f64) -> LevelParams {
    LevelParams { m, u }
}

impl Default for MatchModel {
    /// Reasoned defaults. u of an exact agreement is about one over the number of distinct
    /// values (ID numbers are unique, birth dates spread over ~22,000 days); m reflects how
    /// often departments record a person's value with an error or a stale copy (phones and
    /// addresses change, so their m of an exact agreement is lower).
    fn default() -> Self {
        use Feature::*;
        use Level::*;
        let params: [(Feature, Vec<(Level, LevelParams)>); 7] = [
            (
                IdNumber,
                vec![
                    (Exact, level(0.95, 1e-8)),
                    (OneSubstitution, level(0.02, 1e-7)),
                    (Transposition, level(0.01, 1e-8)),
                    (Different, level(0.02, 1.0)),
                ],
            ),
            (
                OtherId,
                vec![
                    (Exact, level(0.9, 1e-6)),
                    (Transposition, level(0.05, 2e-5)),
                    (Different, level(0.05, 1.0)),
                ],
            ),
            (
                Name,
                vec![
                    (Exact, level(0.8, 1e-3)),
                    (Phonetic, level(0.05, 2e-3)),
                    (Close, level(0.08, 5e-3)),
                    (Similar, level(0.04, 0.03)),
                    (Different, level(0.03, 0.96)),
                ],
            ),
            (
                BirthDate,
                vec![
                    (Exact, level(0.9, 5e-5)),
                    (DayMonthSwapped, level(0.01, 1e-5)),
                    (OneDigit, level(0.05, 5e-4)),
                    (SameYear, level(0.02, 0.015)),
                    (Different, level(0.02, 0.98)),
                ],
            ),
            (Gender, vec![(Exact, level(0.98, 0.5)), (Different, level(0.02, 0.5))]),
            (
                Phone,
                vec![
                    (Exact, level(0.6, 1e-6)),
                    (LastEight, level(0.02, 1e-6)),
                    (Different, level(0.38, 1.0)),
                ],
            ),
            (
                Address,
                vec![
                    (SameStreet, level(0.55, 1e-4)),
                    (MostlySame, level(0.05, 1e-3)),
                    (SameDistrict, level(0.1, 0.009)),
                    (SameCity, level(0.1, 0.05)),
                    (Different, level(0.2, 0.94)),
                ],
            ),
        ];
        MatchModel {
            version: 0,
            params: params
                .into_iter()
                .map(|(feature, levels)| (feature, levels.into_iter().collect()))
                .collect(),
            weak_discount: 0.5,
            match_probability: 0.99,
            review_probability: 0.5,
            min_population: 1_000,
            tf_min_records: 1_000,
            trained_on_pairs: 0,
        }
    }
}

/// One feature's comparison and what it weighed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub feature: Feature,
    pub level: Level,
    /// A weak value (flagged by cleansing) was involved: its weight was discounted.
    pub weak: bool,
    /// The name's weight was adjusted for how common the name is.
    pub term_frequency: Option<f64>,
    pub weight: f64,
}

/// The score of a record against a candidate person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub comparisons: Vec<Comparison>,
    /// Sum of the comparison weights (log2 Bayes factor).
    pub total: f64,
    /// log2 of the prior odds.
    pub prior: f64,
}

impl Score {
    /// log2 posterior odds.
    pub fn log_odds(&self) -> f64 {
        self.total + self.prior
    }

    pub fn probability(&self) -> f64 {
        let odds = self.log_odds().exp2();
        if odds.is_infinite() {
            1.0
        } else {
            odds / (1.0 + odds)
        }
    }

    pub fn level_of(&self, feature: Feature) -> Option<Level> {
        self.comparisons
            .iter()
            .find(|comparison| comparison.feature == feature)
            .map(|comparison| comparison.level)
    }
}

impl MatchModel {
    pub fn params(&self, feature: Feature, level: Level) -> LevelParams {
        self.params
            .get(&feature)
            .and_then(|levels| levels.get(&level))
            .copied()
            .unwrap_or_else(|| {
                // A stored model always has every level (`validate`); fall back to the default.
                MatchModel::default().params[&feature][&level]
            })
    }

    /// The model with every level `levels_of` names: a model stored by an earlier version
    /// lacks the levels added since, which take the shipped defaults' parameters (and are
    /// estimated by the next training).
    pub fn completed(mut self) -> MatchModel {
        let defaults = MatchModel::default();
        for feature in Feature::ALL {
            let levels = self.params.entry(feature).or_default();
            for level in levels_of(feature) {
                levels.entry(*level).or_insert(defaults.params[&feature][level]);
            }
        }
        self
    }

    /// The weight of one comparison. `name_share`, for an exact name agreement, is the share of
    /// records carrying that name; it replaces u when the store holds enough names.
    pub fn weigh(&self, feature: Feature, level: Level, weak: bool, name_share: Option<f64>) -> Comparison {
        let params = self.params(feature, level);
        let term_frequency = name_share.filter(|_| feature == Feature::Name && level == Level::Exact);
        let mut weight = match term_frequency {
            Some(share) => (params.m / share.max(params.u.min(1e-7))).log2(),
            None => params.weight(),
        };
        if weak && weight > 0.0 {
            weight *= self.weak_discount;
        }
        Comparison {
            feature,
            level,
            weak,
            term_frequency,
            weight,
        }
    }

    pub fn prior(&self, n_persons: u64) -> f64 {
        -(n_persons.max(self.min_population) as f64).log2()
    }

    /// Refuses a model that lacks a level, has probabilities outside (0, 1] or thresholds out of
    /// order.
    pub fn validate(&self) -> Result<(), String> {
        for feature in Feature::ALL {
            for level in levels_of(feature) {
                let Some(params) = self.params.get(&feature).and_then(|levels| levels.get(level)) else {
                    return Err(format!("no parameters for {} / {:?}", feature.label(), level));
                };
                let valid = |p: f64| p > 0.0 && p <= 1.0;
                if !valid(params.m) || !valid(params.u) {
                    return Err(format!("m or u of {} / {:?} is outside (0, 1]", feature.label(), level));
                }
            }
        }
        let ordered = 0.0 < self.review_probability
            && self.review_probability <= self.match_probability
            && self.match_probability < 1.0;
        if !ordered {
            return Err("thresholds must satisfy 0 < review <= match < 1".into());
        }
        if !(0.0..=1.0).contains(&self.weak_discount) {
            return Err("weak_discount must lie in [0, 1]".into());
        }
        Ok(())
    }
}

/// The comparison levels of one pair of records, one slot per `Feature::ALL` (`None`: a side
/// had no value).
pub type Pattern = [Option<Level>; 7];

/// Smallest probability training writes, so no weight becomes infinite.
const PROBABILITY_FLOOR: f64 = 1e-9;

/// How many pairs' worth of weight the current estimate keeps against the data: a level the
/// sample hardly shows keeps roughly its current probability instead of collapsing to zero
/// (which would make its weight minus infinity: one missing word in an address would forbid
/// a match).
const PRIOR_PAIRS: f64 = 10.0;

/// A probability estimated from `count` of `n` observations, shrunk towards `prior`.
fn smoothed(count: f64, n: f64, prior: f64) -> f64 {
    ((count + PRIOR_PAIRS * prior) / (n + PRIOR_PAIRS)).clamp(PROBABILITY_FLOOR, 1.0)
}

/// Re-estimates the model from the data: u from `random_pairs` (pairs of records drawn at
/// random from different persons), then m by expectation maximisation over `candidate_pairs`
/// (pairs the blocking keys bring together) with u held fixed. Both are shrunk towards the
/// current model by `PRIOR_PAIRS` pseudo-observations, so a level the samples hardly show keeps
/// about its current probability. Thresholds and the other settings are kept.
pub fn train(current: &MatchModel, random_pairs: &[Pattern], candidate_pairs: &[Pattern]) -> MatchModel {
    let mut model = current.clone();
    for (slot, feature) in Feature::ALL.into_iter().enumerate() {
        let levels = levels_of(feature);
        let observed: Vec<Level> = random_pairs.iter().filter_map(|pattern| pattern[slot]).collect();
        if observed.is_empty() {
            continue;
        }
        let n = observed.len() as f64;
        for level in levels {
            let count = observed.iter().filter(|seen| *seen == level).count() as f64;
            if let Some(params) = model.params.get_mut(&feature).and_then(|params| params.get_mut(level)) {
                params.u = smoothed(count, n, params.u);
            }
        }
    }
    if candidate_pairs.is_empty() {
        model.trained_on_pairs = random_pairs.len() as u64;
        return model;
    }
    let mut lambda = 0.5_f64;
    for _ in 0..30 {
        let mut m_sums: BTreeMap<(Feature, Level), f64> = BTreeMap::new();
        let mut m_totals: BTreeMap<Feature, f64> = BTreeMap::new();
        let mut p_sum = 0.0;
        for pattern in candidate_pairs {
            let mut log_bayes = 0.0;
            for (slot, feature) in Feature::ALL.into_iter().enumerate() {
                if let Some(level) = pattern[slot] {
                    log_bayes += model.params(feature, level).weight();
                }
            }
            let odds = (lambda / (1.0 - lambda)) * log_bayes.exp2();
            let p_match = if odds.is_infinite() { 1.0 } else { odds / (1.0 + odds) };
            p_sum += p_match;
            for (slot, feature) in Feature::ALL.into_iter().enumerate() {
                if let Some(level) = pattern[slot] {
                    *m_sums.entry((feature, level)).or_default() += p_match;
                    *m_totals.entry(feature).or_default() += p_match;
                }
            }
        }
        lambda = (p_sum / candidate_pairs.len() as f64).clamp(1e-6, 1.0 - 1e-6);
        for feature in Feature::ALL {
            let Some(total) = m_totals.get(&feature).copied().filter(|total| *total > 0.0) else {
                continue;
            };
            for level in levels_of(feature) {
                let count = m_sums.get(&(feature, *level)).copied().unwrap_or(0.0);
                let prior = current.params(feature, *level).m;
                if let Some(params) = model.params.get_mut(&feature).and_then(|params| params.get_mut(level)) {
                    params.m = smoothed(count, total, prior);
                }
            }
        }
    }
    model.trained_on_pairs = (random_pairs.len() + candidate_pairs.len()) as u64;
    model
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_ordered() {
        let model = MatchModel::default();
        model.validate().expect("valid");
        for feature in Feature::ALL {
            let weights: Vec<f64> = levels_of(feature)
                .iter()
                .map(|level| model.params(feature, *level).weight())
                .collect();
            assert!(weights[0] > 0.0, "{feature:?} agreement is evidence for a match");
            assert!(
                *weights.last().expect("levels") < 0.0,
                "{feature:?} disagreement is evidence against"
            );
        }
    }

    #[test]
    fn common_names_weigh_less_than_rare_ones() {
        let model = MatchModel::default();
        let common = model.weigh(Feature::Name, Level::Exact, false, Some(0.0025));
        let rare = model.weigh(Feature::Name, Level::Exact, false, Some(1e-6));
        assert!(
            rare.weight > common.weight + 8.0,
            "{} vs {}",
            rare.weight,
            common.weight
        );
        let untouched = model.weigh(Feature::BirthDate, Level::Exact, false, Some(0.5));
        assert_eq!(untouched.term_frequency, None);
    }

    #[test]
    fn weak_values_weigh_less() {
        let model = MatchModel::default();
        let clean = model.weigh(Feature::IdNumber, Level::OneSubstitution, false, None);
        let weak = model.weigh(Feature::IdNumber, Level::OneSubstitution, true, None);
        assert!((weak.weight - clean.weight / 2.0).abs() < 1e-9);
        let disagreement = model.weigh(Feature::Name, Level::Different, true, None);
        assert_eq!(
            disagreement.weight,
            model.params(Feature::Name, Level::Different).weight()
        );
    }

    #[test]
    fn a_model_stored_before_a_level_existed_is_completed_with_the_default() {
        let mut old = MatchModel::default();
        let trained = level(0.8, 2e-4);
        old.params
            .get_mut(&Feature::Address)
            .expect("address")
            .insert(Level::SameStreet, trained);
        old.params
            .get_mut(&Feature::Address)
            .expect("address")
            .remove(&Level::MostlySame);
        assert!(old.validate().is_err());
        let completed = old.completed();
        completed.validate().expect("complete");
        assert_eq!(completed.params(Feature::Address, Level::SameStreet), trained);
        assert_eq!(
            completed.params(Feature::Address, Level::MostlySame),
            MatchModel::default().params(Feature::Address, Level::MostlySame)
        );
    }

    #[test]
    fn validation_names_the_problem() {
        let mut model = MatchModel::default();
        model
            .params
            .get_mut(&Feature::Phone)
            .expect("phone")
            .remove(&Level::LastEight);
        assert!(model.validate().expect_err("incomplete").contains("phone"));
        let model = MatchModel {
            review_probability: 0.999,
            ..MatchModel::default()
        };
        assert!(model.validate().is_err());
    }

    /// EM recovers the m of a feature from unlabelled pairs: half the candidate pairs are
    /// matches whose names agree 90% of the time.
    #[test]
    fn training_estimates_m_and_u() {
        let mut random = Vec::new();
        for idx in 0..10_000 {
            let mut pattern: Pattern = [None; 7];
            pattern[2] = Some(if idx % 1000 == 0 {
                Level::Exact
            } else {
                Level::Different
            });
            pattern[3] = Some(if idx % 500 == 0 { Level::Exact } else { Level::Different });
            random.push(pattern);
        }
        let mut candidates = Vec::new();
        for idx in 0..2_000 {
            let mut pattern: Pattern = [None; 7];
            let is_match = idx % 2 == 0;
            pattern[2] = Some(if is_match && idx % 20 != 0 {
                Level::Exact
            } else {
                Level::Different
            });
            pattern[3] = Some(if is_match { Level::Exact } else { Level::Different });
            candidates.push(pattern);
        }
        let model = train(&MatchModel::default(), &random, &candidates);
        model.validate().expect("valid");
        let name_exact = model.params(Feature::Name, Level::Exact);
        assert!((name_exact.u - 0.001).abs() < 1e-5, "{}", name_exact.u);
        assert!((name_exact.m - 0.9).abs() < 0.02, "{}", name_exact.m);
        let dob_exact = model.params(Feature::BirthDate, Level::Exact);
        assert!(dob_exact.m > 0.98, "{}", dob_exact.m);
        // Levels the samples never showed keep small u's.
        assert!(model.params(Feature::IdNumber, Level::Exact).u <= 1e-8);
    }
}
