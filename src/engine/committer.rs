//! The committer thread: applies the batches the writer prepared to the store, in the order
//! they were logged, and answers each one once the store holds it. The writer hands a batch
//! over (`Txn::hand_over`) and goes on to prepare the next on its own core; its reads see the
//! batches handed over as if they were applied (`store/read_ahead.rs`), so what it decides is
//! what it would decide if it applied each batch itself.
//!
//! At most `HANDED_MAX` batches wait here (and one is being applied); past that the writer
//! waits for the store. A batch the store refuses stops the write path (fail-stop): it and
//! every batch after it is answered with an error, the writer logs nothing more, and the log
//! replays them at the next start. Batches handed over before a failure elsewhere (a failed
//! log append, a batch that could not be prepared) are logged and prepared, so they are still
//! applied and answered.
//!
//! Owns the thread, its queue and the answers. Must not: decide anything, or answer a batch
//! before the store holds it.

use super::apply::Placed;
use super::feed::FeedSignal;
use super::{Applied, EngineError, IngestTimes, PendingReply};
use crate::store::{HandedBatch, Store};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

/// Batches handed over and not yet applied, at most.
const HANDED_MAX: usize = 2;

enum Message {
    Batch {
        handed: Arc<HandedBatch>,
        sequence: u64,
        placed: Vec<Placed>,
        reply: PendingReply,
    },
    /// Answered once every batch handed before it is applied (or refused).
    Drained(SyncSender<()>),
}

pub(super) struct Committer {
    sender: Option<SyncSender<Message>>,
    thread: Option<JoinHandle<()>>,
    failed: Arc<AtomicBool>,
}

/// What the committer tells when a batch is applied, and where it counts the time.
pub(super) struct Signals {
    pub(super) failed: Arc<AtomicBool>,
    pub(super) feed: FeedSignal,
    /// Tells the indexer that the change feed has grown.
    pub(super) wake_indexer: Box<dyn Fn() + Send>,
    pub(super) times: Arc<Mutex<IngestTimes>>,
}

impl Committer {
    pub(super) fn start(store: Arc<Store>, signals: Signals) -> std::io::Result<Committer> {
        let (sender, receiver) = sync_channel(HANDED_MAX);
        let failed = Arc::clone(&signals.failed);
        let thread = std::thread::Builder::new()
            .name("popmaster-committer".into())
            .spawn(move || {
                // A panic here would leave handed batches that nothing applies: stop the
                // write path, as for a refused apply.
                let _stop_on_panic = StopOnPanic(Arc::clone(&signals.failed));
                run(&store, &signals, &receiver);
            })?;
        Ok(Committer {
            sender: Some(sender),
            thread: Some(thread),
            failed,
        })
    }

    /// Queues a handed batch to be applied and answered; waits while `HANDED_MAX` are queued.
    pub(super) fn commit(&self, handed: Arc<HandedBatch>, sequence: u64, placed: Vec<Placed>, reply: PendingReply) {
        let message = Message::Batch {
            handed,
            sequence,
            placed,
            reply,
        };
        if let Err(unsent) = self.sender.as_ref().expect("open until dropped").send(message) {
            // The thread is gone (it panicked): nothing will apply the batch.
            self.failed.store(true, Ordering::Release);
            if let Message::Batch { reply, .. } = unsent.0 {
                let _ = reply.send(Err(EngineError::WritePathFailed));
            }
        }
    }

    /// Waits until every batch queued before is applied or refused.
    pub(super) fn drain(&self) {
        let (done, wait) = sync_channel(1);
        if self
            .sender
            .as_ref()
            .expect("open until dropped")
            .send(Message::Drained(done))
            .is_ok()
        {
            let _ = wait.recv();
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has applied what was queued.
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sets the failure flag when the thread unwinds.
struct StopOnPanic(Arc<AtomicBool>);

impl Drop for StopOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Release);
        }
    }
}

fn run(store: &Store, signals: &Signals, receiver: &Receiver<Message>) {
    // Set once the store refused a batch: every later one is refused too.
    let mut stopped = false;
    while let Ok(message) = receiver.recv() {
        let (handed, sequence, placed, reply) = match message {
            Message::Batch {
                handed,
                sequence,
                placed,
                reply,
            } => (handed, sequence, placed, reply),
            Message::Drained(done) => {
                let _ = done.send(());
                continue;
            }
        };
        if stopped {
            let _ = reply.send(Err(EngineError::WritePathFailed));
            continue;
        }
        let started = Instant::now();
        match store.commit_handed(&handed, sequence) {
            Ok(()) => {
                crate::crash_point::reached("store-applied");
                signals.times.lock().expect("lock poisoned").stages.store += started.elapsed();
                signals.feed.applied();
                (signals.wake_indexer)();
                let _ = reply.send(Ok(Applied { sequence, placed }));
                crate::crash_point::reached("answered");
            }
            Err(error) => {
                // The batch is in the log and will be replayed at the next start.
                tracing::error!(%error, sequence, "store apply failed; the write path stops");
                stopped = true;
                signals.failed.store(true, Ordering::Release);
                let _ = reply.send(Err(EngineError::WritePathFailed));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::kv::{FailingKv, MemKv};
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::oneshot;

    fn hand_over(store: &Store, key: &[u8]) -> Arc<HandedBatch> {
        let mut txn = store.begin_kept();
        txn.set_applied_sequence(key[0].into()).expect("write");
        txn.hand_over().expect("hand over")
    }

    #[test]
    fn a_refused_apply_stops_the_write_path_and_nothing_after_it_is_applied() {
        let refusals = Arc::new(AtomicUsize::new(0));
        let store =
            Arc::new(Store::open(Box::new(FailingKv::new(MemKv::default(), Arc::clone(&refusals)))).expect("opens"));
        let failed = Arc::new(AtomicBool::new(false));
        let committer = Committer::start(
            Arc::clone(&store),
            Signals {
                failed: Arc::clone(&failed),
                feed: FeedSignal::new(),
                wake_indexer: Box::new(|| {}),
                times: Arc::new(Mutex::new(IngestTimes::default())),
            },
        )
        .expect("starts");
        let commit = |sequence: u8| {
            let (reply, answer) = oneshot::channel();
            committer.commit(hand_over(&store, &[sequence]), sequence.into(), Vec::new(), reply);
            answer
        };
        let first = commit(1);
        committer.drain();
        assert_eq!(first.blocking_recv().expect("answered").expect("applied").sequence, 1);
        assert_eq!(store.applied_sequence().expect("reads"), 1);

        // The store refuses the next apply: that batch and the one after it fail.
        refusals.store(1, Ordering::Release);
        let second = commit(2);
        let third = commit(3);
        committer.drain();
        assert!(matches!(
            second.blocking_recv().expect("answered"),
            Err(EngineError::WritePathFailed)
        ));
        assert!(matches!(
            third.blocking_recv().expect("answered"),
            Err(EngineError::WritePathFailed)
        ));
        assert!(failed.load(Ordering::Acquire), "the write path stopped");
        assert_eq!(refusals.load(Ordering::Acquire), 0, "one apply was tried and refused");
        assert_eq!(
            store.applied_sequence().expect("reads"),
            1,
            "nothing after the refusal applied"
        );
    }
}
