//! Re-resolution of every person after the model, its thresholds or the rules changed. Walks
//! the persons in id order and sends them through the write path in chunks
//! (`StewardAction::Reevaluate`): each chunk is logged, applied in turn with ingest (which
//! goes on meanwhile), and repeated exactly by a replay. Splits and merges are recorded in the
//! persons' histories with the cause "reevaluation"; what stewards said stands.

use super::{Engine, EngineError};
use crate::model::{Actor, Decision, PersonId, StewardAction};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Persons re-resolved by one log entry: small enough that ingest waits little between them.
pub const REEVALUATE_CHUNK_PERSONS: usize = 256;

/// What one re-resolution changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reevaluated {
    /// Records of a person no longer matched the others; they form this new person.
    Split { new_person: PersonId },
    /// Two persons now match; this one kept its id.
    Merged { survivor: PersonId },
}

/// How far a re-resolution is, with the changes of the last chunk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReevaluationProgress {
    pub persons_done: u64,
    /// Persons when the walk began.
    pub persons_total: u64,
    pub n_splits: u64,
    pub n_merges: u64,
    pub elapsed: Duration,
    pub changes: Vec<Reevaluated>,
    pub done: bool,
}

/// Clears the flag however the walk ends.
struct Running<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Engine {
    /// Re-resolves every person with the current model (see the module documentation).
    /// `progress` hears about each chunk; the last report has `done`. One at a time: a
    /// second call fails with `FailedPrecondition`. Each chunk is audited as the `actor`'s.
    pub async fn reevaluate(
        &self,
        progress: &mut (dyn FnMut(&ReevaluationProgress) + Send),
        actor: Option<Actor>,
    ) -> Result<ReevaluationProgress, EngineError> {
        if self.reevaluating.swap(true, Ordering::AcqRel) {
            return Err(EngineError::FailedPrecondition(
                "a re-resolution is already running; wait for it to finish".into(),
            ));
        }
        let _running = Running(&self.reevaluating);
        let started = Instant::now();
        let mut state = ReevaluationProgress {
            persons_total: self.store.begin().n_persons()?,
            ..ReevaluationProgress::default()
        };
        tracing::info!(persons = state.persons_total, "re-resolution started");
        let mut after: Option<PersonId> = None;
        loop {
            let store = Arc::clone(&self.store);
            let from = after.clone();
            let page = tokio::task::spawn_blocking(move || store.persons_page(from.as_ref(), REEVALUATE_CHUNK_PERSONS))
                .await
                .map_err(|_| EngineError::ShuttingDown)??;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            let persons: Vec<PersonId> = page.into_iter().map(|(person_id, _)| person_id).collect();
            let n_persons = persons.len() as u64;
            let applied = self
                .write_action(StewardAction::Reevaluate { persons }, actor.clone())
                .await?;
            state.changes = applied
                .placed
                .into_iter()
                .filter_map(|placed| match placed.decision {
                    Decision::Created => Some(Reevaluated::Split {
                        new_person: placed.person_id,
                    }),
                    Decision::Merged => Some(Reevaluated::Merged {
                        survivor: placed.person_id,
                    }),
                    _ => None,
                })
                .collect();
            for change in &state.changes {
                match change {
                    Reevaluated::Split { .. } => state.n_splits += 1,
                    Reevaluated::Merged { .. } => state.n_merges += 1,
                }
            }
            state.persons_done += n_persons;
            state.elapsed = started.elapsed();
            progress(&state);
        }
        state.changes.clear();
        state.done = true;
        state.elapsed = started.elapsed();
        tracing::info!(
            persons = state.persons_done,
            n_splits = state.n_splits,
            n_merges = state.n_merges,
            elapsed_ms = state.elapsed.as_millis() as u64,
            "re-resolution finished"
        );
        progress(&state);
        Ok(state)
    }
}
