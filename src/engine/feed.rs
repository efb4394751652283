//! Followers of the change feed for downstream watchers (`ProfileService.WatchChanges`): each
//! reads the store's feed (`o/` keys) by sequence and waits for the next commit when it has
//! caught up. Owns the commit signal the write path (its committer thread) raises after every
//! applied batch and the "closing" signal of a shutdown.
//!
//! Must not: make the write path wait. It only replaces the value of a `tokio::sync::watch`
//! channel; a follower that falls behind (its client reads slowly) simply reads further back in
//! the store when it is asked for more, and never holds anything the write path needs.

use super::EngineError;
use crate::store::{ChangeEvent, Store, StoreError};
use std::sync::Arc;
use tokio::sync::watch;

/// The refusal of a change the feed no longer keeps, with what to do instead.
pub(super) fn trimmed(from: u64, start: u64) -> EngineError {
    EngineError::OutOfRange(format!(
        "the change feed keeps changes from sequence {start} on (feed.changes_kept); {from} was deleted: \
         read the profiles again with ExportProfiles and watch from its change_sequence + 1"
    ))
}

/// What the write path tells the followers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Signal {
    /// Batches applied since the start: a change wakes the followers.
    n_applied: u64,
    /// The service is shutting down: followers end.
    closing: bool,
}

/// The sending side, held by the engine and (a clone) by the writer.
#[derive(Clone)]
pub(super) struct FeedSignal(watch::Sender<Signal>);

impl FeedSignal {
    pub(super) fn new() -> FeedSignal {
        FeedSignal(watch::Sender::new(Signal::default()))
    }

    /// A batch was applied: its changes (if any) are in the store. Never blocks.
    pub(super) fn applied(&self) {
        self.0.send_modify(|signal| signal.n_applied += 1);
    }

    /// Ends every follower (after it has answered the call it is in).
    pub(super) fn close(&self) {
        self.0.send_modify(|signal| signal.closing = true);
    }

    /// A follower from `from_sequence`; with `from_oldest`, one asked for the oldest change
    /// kept, which moves on with the feed's start if a trim passes it before its first read.
    pub(super) fn follow(
        &self,
        store: Arc<Store>,
        from_sequence: u64,
        from_oldest: bool,
        batch_changes_max: usize,
    ) -> ChangeFollower {
        ChangeFollower {
            store,
            signal: self.0.subscribe(),
            next_sequence: from_sequence.max(1),
            from_oldest,
            batch_changes_max: batch_changes_max.max(1),
        }
    }
}

/// Reads the change feed from a sequence on, in order, each change once.
pub struct ChangeFollower {
    store: Arc<Store>,
    signal: watch::Receiver<Signal>,
    next_sequence: u64,
    /// Asked for the oldest change kept, and nothing read yet.
    from_oldest: bool,
    batch_changes_max: usize,
}

impl ChangeFollower {
    /// The next changes (at most the configured batch, consecutive, in feed order), waiting for
    /// a commit when there are none yet. `None` once the service is closing.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<(u64, ChangeEvent)>>, EngineError> {
        loop {
            // Mark the signal seen before reading: a commit after this point wakes the wait
            // below even if the read missed its changes.
            if self.signal.borrow_and_update().closing {
                return Ok(None);
            }
            let store = Arc::clone(&self.store);
            let (from, limit) = (self.next_sequence, self.batch_changes_max);
            let changes = match tokio::task::spawn_blocking(move || store.changes_from(from, limit))
                .await
                .map_err(|_| EngineError::ShuttingDown)?
            {
                Err(StoreError::FeedTrimmed { start, .. }) if self.from_oldest => {
                    self.next_sequence = start;
                    continue;
                }
                Err(StoreError::FeedTrimmed { from, start }) => return Err(trimmed(from, start)),
                other => other?,
            };
            // Past the first read, every change is one the client must get: a trim that passes
            // the follower from then on refuses it, even one asked for the oldest change.
            self.from_oldest = false;
            if let Some((last_sequence, _)) = changes.last() {
                self.next_sequence = last_sequence + 1;
                return Ok(Some(changes));
            }
            if self.signal.changed().await.is_err() {
                // The engine is gone.
                return Ok(None);
            }
        }
    }

    /// The sequence the next change will have.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PersonId, RecordKey, SourceId};
    use crate::store::kv::MemKv;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn store() -> Arc<Store> {
        Arc::new(Store::open(Box::new(MemKv::default())).expect("opens"))
    }

    /// Commits one version of each person, as the writer would, and raises the signal.
    fn commit(store: &Store, signal: &FeedSignal, persons: &[&str]) {
        let mut txn = store.begin();
        for person in persons {
            let person_id = PersonId::new(*person);
            let key = RecordKey {
                source: SourceId::parse("D01").expect("well-formed"),
                record_id: format!("r-{person}"),
            };
            txn.add_member(&person_id, &key).expect("member");
            txn.write_person(&person_id, &BTreeMap::new(), 0, Vec::new())
                .expect("person");
        }
        txn.commit().expect("commit");
        signal.applied();
    }

    fn sequences(batch: &[(u64, ChangeEvent)]) -> Vec<u64> {
        batch.iter().map(|(sequence, _)| *sequence).collect()
    }

    #[tokio::test]
    async fn pages_then_waits_for_the_next_commit() {
        let store = store();
        let signal = FeedSignal::new();
        commit(&store, &signal, &["P1", "P2", "P3"]);
        let mut follower = signal.follow(Arc::clone(&store), 0, true, 2);
        let first = follower.next_batch().await.expect("read").expect("open");
        assert_eq!(sequences(&first), [1, 2]);
        let second = follower.next_batch().await.expect("read").expect("open");
        assert_eq!(sequences(&second), [3]);
        assert_eq!(second[0].1.person_id, PersonId::new("P3"));

        // Caught up: the follower waits until a commit raises the signal.
        let waiting = tokio::spawn(async move { (follower.next_batch().await, follower) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "nothing new: the follower waits");
        commit(&store, &signal, &["P4"]);
        let (third, mut follower) = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken by the commit")
            .expect("task");
        assert_eq!(sequences(&third.expect("read").expect("open")), [4]);
        assert_eq!(follower.next_sequence(), 5);

        // Closing ends a waiting follower.
        let waiting = tokio::spawn(async move { follower.next_batch().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        signal.close();
        let ended = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken by closing")
            .expect("task");
        assert!(ended.expect("no error").is_none());
    }

    #[tokio::test]
    async fn resumes_from_a_sequence() {
        let store = store();
        let signal = FeedSignal::new();
        commit(&store, &signal, &["P1", "P2", "P3", "P4"]);
        let mut follower = signal.follow(Arc::clone(&store), 3, false, 100);
        let batch = follower.next_batch().await.expect("read").expect("open");
        assert_eq!(sequences(&batch), [3, 4]);
    }

    /// A trim that passes a follower: one asked for the oldest change moves on with the feed's
    /// start until it has sent something; one asked for a sequence, or one that has sent, is
    /// refused with what to do instead.
    #[tokio::test]
    async fn a_trim_moves_an_oldest_follower_on_and_refuses_the_others() {
        let store = store();
        let signal = FeedSignal::new();
        commit(&store, &signal, &["P1", "P2", "P3", "P4", "P5"]);
        let mut oldest = signal.follow(Arc::clone(&store), 1, true, 2);
        let mut from_two = signal.follow(Arc::clone(&store), 2, false, 2);
        let mut sent = signal.follow(Arc::clone(&store), 1, true, 2);
        assert_eq!(
            sequences(&sent.next_batch().await.expect("read").expect("open")),
            [1, 2]
        );
        store.trim_changes(4, 10, 10).expect("trim");
        assert_eq!(
            sequences(&oldest.next_batch().await.expect("read").expect("open")),
            [4, 5]
        );
        for follower in [&mut from_two, &mut sent] {
            match follower.next_batch().await {
                Err(EngineError::OutOfRange(message)) => {
                    assert!(message.contains("from sequence 4"), "{message}");
                    assert!(message.contains("ExportProfiles"), "{message}");
                }
                other => panic!("not refused: {other:?}"),
            }
        }

        // One asked for the oldest change that has read the feed's end waits for new changes:
        // a trim that passes it before it reads them refuses it, never skips them.
        let mut waiting_oldest = signal.follow(Arc::clone(&store), 6, true, 2);
        let waiting = tokio::spawn(async move { waiting_oldest.next_batch().await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "nothing new: the follower waits");
        commit(&store, &FeedSignal::new(), &["P6", "P7"]);
        store.trim_changes(7, 10, 10).expect("trim");
        signal.applied();
        let refused = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("task");
        assert!(matches!(refused, Err(EngineError::OutOfRange(_))), "{refused:?}");
    }
}
