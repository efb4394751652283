//! The committer thread: applies the batches the writer prepared to the store, in the order
//! they were logged, and answers each one once the store holds it. The writer hands a batch
//! over (`Txn::hand_over`) and goes on to prepare the next on its own core; its reads see the
//! batches handed over as if they were applied (`store/read_ahead.rs`), so what it decides is
//! what it would decide if it applied each batch itself.
//!
//! At most `HANDED_MAX` batches wait here; past that the writer waits for the store. A batch
//! the store refuses stops the write path (fail-stop, like a refused apply before): it and
//! every batch after it is answered with an error, and the log replays them at the next start.
//!
//! Owns the thread, its queue and the answers. Must not: decide anything, or answer a batch
//! before the store holds it.

use super::apply::Placed;
use super::feed::FeedSignal;
use super::indexer::Wakeup;
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
}

/// What the committer tells when a batch is applied, and where it counts the time.
pub(super) struct Signals {
    pub(super) failed: Arc<AtomicBool>,
    pub(super) feed: FeedSignal,
    pub(super) indexer_wakeup: Wakeup,
    pub(super) times: Arc<Mutex<IngestTimes>>,
}

impl Committer {
    pub(super) fn start(store: Arc<Store>, signals: Signals) -> std::io::Result<Committer> {
        let (sender, receiver) = sync_channel(HANDED_MAX);
        let thread = std::thread::Builder::new()
            .name("popmaster-committer".into())
            .spawn(move || run(&store, &signals, &receiver))?;
        Ok(Committer {
            sender: Some(sender),
            thread: Some(thread),
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

fn run(store: &Store, signals: &Signals, receiver: &Receiver<Message>) {
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
        if signals.failed.load(Ordering::Acquire) {
            let _ = reply.send(Err(EngineError::WritePathFailed));
            continue;
        }
        let started = Instant::now();
        match store.commit_handed(&handed) {
            Ok(()) => {
                signals.times.lock().expect("lock poisoned").stages.store += started.elapsed();
                signals.feed.applied();
                signals.indexer_wakeup.wake();
                let _ = reply.send(Ok(Applied { sequence, placed }));
            }
            Err(error) => {
                // The batch is in the log and will be replayed at the next start.
                tracing::error!(%error, sequence, "store apply failed; the write path stops");
                signals.failed.store(true, Ordering::Release);
                let _ = reply.send(Err(EngineError::WritePathFailed));
            }
        }
    }
}
