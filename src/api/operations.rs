//! The operators' calls that work on the service as a whole: rebuilding the candidate index.
//! Maps proto to engine calls and back; the work itself is the engine's.

use super::error::to_status;
use crate::engine::{Engine, RebuildPhase, RebuildProgress};
use crate::pb;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

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
