//! The operators' calls that rebuild derived state on a live service: the candidate index,
//! and every person's resolution under the current model. Maps proto to engine calls and
//! back; the work itself is the engine's.

use super::error::to_status;
use crate::engine::{Engine, RebuildPhase, RebuildProgress, Reevaluated, ReevaluationProgress};
use crate::model::Actor;
use crate::pb;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

pub type ReevaluateStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ReevaluateProgress, Status>> + Send>>;

pub type ProgressStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::RebuildIndexProgress, Status>> + Send>>;

/// Starts a rebuild on a blocking thread and streams its progress. A client that goes away
/// does not stop the rebuild: it finishes and swaps the new index in.
pub fn rebuild_index(engine: Arc<Engine>) -> ProgressStream {
    let (sender, receiver) = mpsc::channel(16);
    tokio::task::spawn_blocking(move || {
        tracing::info!("index rebuild requested");
        let mut report = |progress: &RebuildProgress| {
            // A full channel only drops an intermediate report; the last one is sent below.
            let _ = sender.try_send(Ok(progress_to_pb(progress)));
        };
        let result = engine.rebuild_index(&mut report);
        let last = match result {
            Ok(done) => Ok(progress_to_pb(&done)),
            Err(error) => Err(to_status(error)),
        };
        let _ = sender.blocking_send(last);
    });
    Box::pin(ReceiverStream::new(receiver))
}

fn progress_to_pb(progress: &RebuildProgress) -> pb::RebuildIndexProgress {
    use pb::rebuild_index_progress::Phase;
    let elapsed = progress.elapsed.as_secs_f64();
    let rate = if elapsed > 0.0 {
        progress.persons_done as f64 / elapsed
    } else {
        0.0
    };
    let left = progress.persons_total.saturating_sub(progress.persons_done) as f64;
    let (phase, eta_seconds) = match progress.phase {
        RebuildPhase::Scanning => (Phase::Scanning, if rate > 0.0 { left / rate } else { 0.0 }),
        RebuildPhase::CatchingUp => (Phase::CatchingUp, 0.0),
        RebuildPhase::Done => (Phase::Done, 0.0),
    };
    pb::RebuildIndexProgress {
        phase: phase as i32,
        persons_done: progress.persons_done,
        persons_total: progress.persons_total,
        elapsed_seconds: elapsed,
        persons_per_second: rate,
        eta_seconds,
        index_watermark: progress.watermark,
    }
}

/// Starts a re-resolution and streams one message per chunk. A client that goes away does not
/// stop it: every chunk is a logged write, and stopping halfway would leave the model applied
/// to some persons only.
pub fn reevaluate(engine: Arc<Engine>, actor: Actor) -> ReevaluateStream {
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        tracing::info!("re-resolution requested");
        // A slow client misses intermediate chunks' messages, never a change: the changes of
        // a message that could not be sent go with the next one, and the last one always goes.
        let mut unsent: Vec<pb::ReevaluateChange> = Vec::new();
        let mut report = |progress: &ReevaluationProgress| {
            if !progress.done {
                let mut message = reevaluation_to_pb(progress);
                message.changes.splice(0..0, unsent.drain(..));
                if let Err(tokio::sync::mpsc::error::TrySendError::Full(Ok(message))) = sender.try_send(Ok(message)) {
                    unsent = message.changes;
                }
            }
        };
        let result = engine.reevaluate(&mut report, Some(actor)).await;
        let last = match result {
            Ok(done) => {
                let mut message = reevaluation_to_pb(&done);
                message.changes.splice(0..0, unsent);
                Ok(message)
            }
            Err(error) => Err(to_status(error)),
        };
        let _ = sender.send(last).await;
    });
    Box::pin(ReceiverStream::new(receiver))
}

fn reevaluation_to_pb(progress: &ReevaluationProgress) -> pb::ReevaluateProgress {
    use pb::reevaluate_change::Kind;
    pb::ReevaluateProgress {
        persons_done: progress.persons_done,
        persons_total: progress.persons_total,
        n_splits: progress.n_splits,
        n_merges: progress.n_merges,
        elapsed_seconds: progress.elapsed.as_secs_f64(),
        changes: progress
            .changes
            .iter()
            .map(|change| match change {
                Reevaluated::Split { new_person } => pb::ReevaluateChange {
                    kind: Kind::Split as i32,
                    person_id: new_person.to_string(),
                },
                Reevaluated::Merged { survivor } => pb::ReevaluateChange {
                    kind: Kind::Merged as i32,
                    person_id: survivor.to_string(),
                },
            })
            .collect(),
        done: progress.done,
    }
}
