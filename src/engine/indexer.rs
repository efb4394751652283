//! Keeps the derived candidate index caught up with the store's change feed. The index is
//! never written from the write path directly: it only replays the feed, so a rebuilt or
//! lagging index converges to the same state. A missing, damaged or incompatible index is
//! recreated and replayed from the start of the feed.

use super::EngineError;
use crate::config::IndexConfig;
use crate::model::PersonId;
use crate::resolve::{Feature, Features};
use crate::store::{ChangeKind, Store};
use popmaster_index::{CandidateIndex, CandidateQuery, IndexOp, PersonDoc};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Default)]
struct Signal {
    woken: bool,
    stopping: bool,
}

struct Shared {
    index: CandidateIndex,
    store: Arc<Store>,
    changes_per_round_max: usize,
    signal: Mutex<Signal>,
    condvar: Condvar,
}

pub(super) struct Indexer {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Fuzzy candidate search for the writer: the persons the index finds most like a record's
/// features. The index lags the store, so this can only add candidates; its trouble never
/// stops ingest (it is logged, and no candidate is returned).
#[derive(Clone)]
pub(super) struct FuzzyIndex(Arc<Shared>);

impl FuzzyIndex {
    pub(super) fn candidates(&self, features: &Features, k: usize) -> Vec<PersonId> {
        let first = |feature: Feature| features.texts(feature).next().map(str::to_string);
        let query = CandidateQuery {
            name: first(Feature::Name),
            id_number: first(Feature::IdNumber),
            birth_date: first(Feature::BirthDate),
            phone: first(Feature::Phone),
            address: first(Feature::Address),
        };
        match self.0.index.candidates(&query, k) {
            Ok(found) => found
                .into_iter()
                .map(|candidate| PersonId::new(candidate.person_id))
                .collect(),
            Err(error) => {
                tracing::warn!(%error, "fuzzy candidate search failed; matching with the exact keys only");
                Vec::new()
            }
        }
    }
}

/// Lets the writer tell the indexer that the feed has grown.
#[derive(Clone)]
pub(super) struct Wakeup(Arc<Shared>);

impl Wakeup {
    pub(super) fn wake(&self) {
        self.0.signal.lock().expect("lock poisoned").woken = true;
        self.0.condvar.notify_one();
    }
}

impl Indexer {
    pub(super) fn start(dir: &Path, config: &IndexConfig, store: Arc<Store>) -> Result<Indexer, EngineError> {
        let index_config = popmaster_index::IndexConfig {
            writer_memory_bytes: config.writer_memory_bytes,
            ..popmaster_index::IndexConfig::default()
        };
        // No index at all (a new data directory, a restore, an operator deleted it): say so
        // when there is a change feed to build it from, since searches are incomplete until then.
        let absent = std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none());
        let n_changes = store.change_sequence()?;
        if absent && n_changes > 0 {
            tracing::info!(
                n_changes,
                "no candidate index; building it from the change feed (searches find only exact-key matches until it catches up)"
            );
        }
        let index = match CandidateIndex::open(dir, &index_config) {
            Ok(index) => index,
            Err(error) if error.needs_rebuild() => {
                tracing::warn!(%error, "candidate index is unusable; recreating it and replaying the change feed");
                CandidateIndex::recreate(dir, &index_config)?
            }
            Err(error) => return Err(error.into()),
        };
        let shared = Arc::new(Shared {
            index,
            store,
            changes_per_round_max: config.changes_per_round_max,
            signal: Mutex::new(Signal::default()),
            condvar: Condvar::new(),
        });
        let interval = Duration::from_millis(config.refresh_interval_ms);
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("popmaster-indexer".into())
            .spawn(move || run(&thread_shared, interval))
            .map_err(|source| EngineError::Thread {
                thread: "indexer",
                source,
            })?;
        Ok(Indexer {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub(super) fn wakeup(&self) -> Wakeup {
        Wakeup(Arc::clone(&self.shared))
    }

    pub(super) fn fuzzy(&self) -> FuzzyIndex {
        FuzzyIndex(Arc::clone(&self.shared))
    }

    pub(super) fn watermark(&self) -> u64 {
        self.shared.index.watermark()
    }

    pub(super) fn num_persons(&self) -> u64 {
        self.shared.index.num_persons()
    }

    /// Catches up one last time, commits, and stops the thread.
    pub(super) async fn shutdown(&self) {
        {
            let mut signal = self.shared.signal.lock().expect("lock poisoned");
            signal.stopping = true;
        }
        self.shared.condvar.notify_one();
        let thread = self.thread.lock().expect("lock poisoned").take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

fn run(shared: &Shared, interval: Duration) {
    loop {
        let stopping = {
            let signal = shared.signal.lock().expect("lock poisoned");
            let (mut signal, _) = shared
                .condvar
                .wait_timeout_while(signal, interval, |signal| !signal.woken && !signal.stopping)
                .expect("lock poisoned");
            signal.woken = false;
            signal.stopping
        };
        if let Err(error) = catch_up(shared) {
            // Drop what was applied but not committed, so the retry starts from the watermark.
            tracing::error!(%error, "candidate index catch-up failed; will retry");
            if let Err(error) = shared.index.rollback() {
                tracing::error!(%error, "candidate index rollback failed");
            }
        }
        if stopping {
            return;
        }
    }
}

/// Applies every change after the index's watermark, in rounds, committing each round with
/// its last feed sequence.
fn catch_up(shared: &Shared) -> Result<(), EngineError> {
    loop {
        let from = shared.index.watermark() + 1;
        let changes = shared.store.changes_from(from, shared.changes_per_round_max)?;
        let Some((last_sequence, _)) = changes.last() else {
            return Ok(());
        };
        let last_sequence = *last_sequence;
        // Only the newest event of each person in the round matters.
        let mut latest: BTreeMap<PersonId, ChangeKind> = BTreeMap::new();
        for (_, event) in changes {
            latest.insert(event.person_id, event.kind);
        }
        let txn = shared.store.begin();
        let mut ops = Vec::with_capacity(latest.len());
        for (person_id, kind) in latest {
            let header = match kind {
                ChangeKind::Deleted | ChangeKind::MergedInto { .. } => None,
                ChangeKind::Created | ChangeKind::Updated | ChangeKind::Split { .. } => txn.person(&person_id)?,
            };
            // A person deleted after this event is removed now; its delete event follows.
            let Some(header) = header else {
                ops.push(IndexOp::Delete {
                    person_id: person_id.to_string(),
                });
                continue;
            };
            // Every value the person holds, not only the profile's winners: a record may meet
            // the person through an older name or address.
            let features: Features = txn.person_features(&person_id)?.unwrap_or_default();
            let values = |feature: Feature| -> Vec<String> { features.texts(feature).map(str::to_string).collect() };
            ops.push(IndexOp::Upsert(PersonDoc {
                person_id: person_id.to_string(),
                version: header.version,
                names: values(Feature::Name),
                id_numbers: values(Feature::IdNumber),
                birth_dates: values(Feature::BirthDate),
                phones: values(Feature::Phone),
                addresses: values(Feature::Address),
            }));
        }
        shared.index.apply(ops)?;
        shared.index.commit(last_sequence)?;
    }
}
