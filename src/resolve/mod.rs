//! Resolution: decides which person a cleansed record is about. Pure: the engine gathers the
//! candidates from the store (exact blocking keys) and applies the placement.
//!
//! - `features`: what a record (or a person, over all its records) says about who it is, and
//!   the blocking keys that find candidates.
//! - `compare`: comparators, one level per feature.
//! - `model`: the Fellegi–Sunter model (m and u per level, term frequencies, training).
//! - `decide`: the entity-centric decision and its evidence.

pub mod compare;
pub mod decide;
pub mod features;
pub mod model;

pub use decide::{
    decide, decide_with_stewards, explain_pair, Candidate, Evidence, Placement, Resolution, ScoredCandidate,
};
pub use features::{blocking_keys, Feature, Features};
pub use model::MatchModel;
