//! Keeps the derived candidate index caught up with the store, and rebuilds it beside the one in
//! use. The index is never written from the write path directly: it follows the store's change
//! feed, so a rebuilt or lagging index converges to the same state.
//!
//! A rebuild (at start when the index is missing, damaged, incompatible or empty while the
//! store holds persons; or `rebuild` on an operator's call) writes a new generation of the
//! index home from the store's persons, catches it up with the feed, and swaps it in under the
//! same lock the follower applies under: searches use the old index until the swap, and every
//! change made during the rebuild reaches the new one.

use super::EngineError;
use crate::config::IndexConfig;
use crate::model::PersonId;
use crate::resolve::{Feature, Features};
use crate::store::{ChangeKind, Store, StoreError, Txn};
use popmaster_index::{CandidateIndex, CandidateQuery, IndexHome, IndexOp, PersonDoc};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Persons read from the store and handed to the index at a time during a rebuild.
const REBUILD_PAGE: usize = 2_048;
/// How often a rebuild reports its progress.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// How long a retired index may stay in use by searches before it is closed anyway.
const RETIRE_WAIT: Duration = Duration::from_secs(10);

/// Where a rebuild is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebuildPhase {
    /// Reading the store's persons into the new index.
    Scanning,
    /// Applying the changes made since the scan began.
    CatchingUp,
    /// The new index answers every search.
    Done,
}

/// A rebuild's progress. `persons_total` is the number of persons when the scan began; changes
/// during the scan can make `persons_done` end a little above or below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildProgress {
    pub phase: RebuildPhase,
    pub persons_done: u64,
    pub persons_total: u64,
    pub elapsed: Duration,
    /// The change-feed position the new index has caught up to.
    pub watermark: u64,
}

#[derive(Default)]
struct Signal {
    woken: bool,
    stopping: bool,
}

struct Shared {
    /// The index searches and the follower use; replaced whole by a rebuild.
    index: RwLock<Arc<CandidateIndex>>,
    home: Mutex<IndexHome>,
    store: Arc<Store>,
    config: popmaster_index::IndexConfig,
    rebuild_config: popmaster_index::IndexConfig,
    changes_per_round_max: usize,
    /// The newest change-feed entries kept (`feed.changes_kept`); 0: all.
    changes_kept: u64,
    /// Held while changes are applied to the index in use, and while a rebuilt index is
    /// swapped in: the follower never applies to an index that is being replaced.
    applying: Mutex<()>,
    rebuilding: AtomicBool,
    signal: Mutex<Signal>,
    condvar: Condvar,
}

impl Shared {
    fn index(&self) -> Arc<CandidateIndex> {
        Arc::clone(&self.index.read().expect("lock poisoned"))
    }

    fn stopping(&self) -> bool {
        self.signal.lock().expect("lock poisoned").stopping
    }
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
        match self.0.index().candidates(&query, k) {
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

/// Lets the write path (its committer thread) tell the indexer that the feed has grown.
#[derive(Clone)]
pub(super) struct Wakeup(Arc<Shared>);

impl Wakeup {
    pub(super) fn wake(&self) {
        self.0.signal.lock().expect("lock poisoned").woken = true;
        self.0.condvar.notify_one();
    }
}

impl Indexer {
    /// Opens the index home at `root` and the generation in use (recreating it, with a warning,
    /// when it is damaged or of another format), and starts the follower thread. An empty
    /// index over a store that holds persons is rebuilt from the store by that thread.
    pub(super) fn start(
        root: &Path,
        config: &IndexConfig,
        changes_kept: u64,
        store: Arc<Store>,
    ) -> Result<Indexer, EngineError> {
        let index_config = popmaster_index::IndexConfig {
            writer_memory_bytes: config.writer_memory_bytes,
            ..popmaster_index::IndexConfig::default()
        };
        let rebuild_config = popmaster_index::IndexConfig {
            writer_memory_bytes: config.rebuild_memory_bytes,
            writer_threads: config.rebuild_threads,
        };
        let home = IndexHome::open(root)?;
        let dir = home.current_dir();
        let index = match CandidateIndex::open(&dir, &index_config) {
            Ok(index) => index,
            Err(error) if error.needs_rebuild() => {
                tracing::warn!(%error, "candidate index is unusable; rebuilding it from the store");
                CandidateIndex::recreate(&dir, &index_config)?
            }
            Err(error) => return Err(error.into()),
        };
        let shared = Arc::new(Shared {
            index: RwLock::new(Arc::new(index)),
            home: Mutex::new(home),
            store,
            config: index_config,
            rebuild_config,
            changes_per_round_max: config.changes_per_round_max,
            changes_kept,
            applying: Mutex::new(()),
            rebuilding: AtomicBool::new(false),
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
        self.shared.index().watermark()
    }

    pub(super) fn num_persons(&self) -> u64 {
        self.shared.index().num_persons()
    }

    /// Rebuilds the index from the store beside the one in use and swaps it in (see the
    /// module documentation). Blocks until done; `progress` hears about it every quarter
    /// second and at each phase. One rebuild at a time: a second call fails with
    /// `FailedPrecondition`.
    pub(super) fn rebuild(&self, progress: &mut dyn FnMut(&RebuildProgress)) -> Result<RebuildProgress, EngineError> {
        rebuild(&self.shared, progress)
    }

    /// Catches up one last time, commits, and stops the thread. A rebuild in progress stops
    /// at its next page and leaves the index in use as it was.
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
    build_if_empty(shared);
    // Behind the feed at start (a stop came before the last changes were indexed): the first
    // round runs at once, not an interval later, so search is current as soon as it can be.
    let mut first_round_behind = behind_at_start(shared);
    let mut last_round = Instant::now();
    loop {
        let stopping = if first_round_behind {
            shared.stopping()
        } else {
            let signal = shared.signal.lock().expect("lock poisoned");
            let (signal, _) = shared
                .condvar
                .wait_timeout_while(signal, interval, |signal| !signal.woken && !signal.stopping)
                .expect("lock poisoned");
            // Woken sooner than `interval` after the last round: the rest of the interval
            // first, so a steady stream of batches is indexed in one commit (one new segment,
            // fewer merges) an interval rather than one a batch. Stopping cuts it short.
            let rest = interval.saturating_sub(last_round.elapsed());
            let (mut signal, _) = shared
                .condvar
                .wait_timeout_while(signal, rest, |signal| !signal.stopping)
                .expect("lock poisoned");
            signal.woken = false;
            signal.stopping
        };
        last_round = Instant::now();
        let mut behind_the_feed = false;
        {
            let _applying = shared.applying.lock().expect("lock poisoned");
            let index = shared.index();
            match catch_up(&shared.store, &index, shared.changes_per_round_max) {
                Ok(()) => {
                    if first_round_behind {
                        tracing::info!(
                            watermark = index.watermark(),
                            "candidate index caught up with the change feed"
                        );
                    }
                    if let Err(error) = trim_feed(shared, &index) {
                        tracing::error!(%error, "cannot trim the change feed; trying again after the next round");
                    }
                }
                Err(EngineError::Store(StoreError::FeedTrimmed { from, start })) => {
                    // An index older than the feed (one put back from elsewhere): what it
                    // missed is gone from the feed, so it is built again from the persons.
                    tracing::warn!(
                        from,
                        start,
                        "the candidate index is behind the change feed's oldest change; rebuilding it from the store"
                    );
                    behind_the_feed = true;
                }
                Err(error) => {
                    // Drop what was applied but not committed, so the retry starts from the
                    // watermark.
                    tracing::error!(%error, "candidate index catch-up failed; will retry");
                    if let Err(error) = index.rollback() {
                        tracing::error!(%error, "candidate index rollback failed");
                    }
                }
            }
        }
        first_round_behind = false;
        if behind_the_feed && !stopping {
            match rebuild(shared, &mut |_| {}) {
                // Shutting down, or an operator's rebuild is already running: it brings the
                // index past the feed's start.
                Ok(_) | Err(EngineError::ShuttingDown) | Err(EngineError::FailedPrecondition(_)) => {}
                Err(error) => tracing::error!(%error, "rebuilding the candidate index failed; will retry"),
            }
        }
        if stopping {
            return;
        }
    }
}

/// Change-feed entries one commit of a trim deletes.
const TRIM_KEYS_MAX: usize = 10_000;

/// Change-feed entries one round deletes at most, so that a long backlog (a lowered
/// `changes_kept`, an upgraded store) is trimmed over many rounds instead of holding the
/// follower, a rebuild's swap or a shutdown for one long round.
const TRIM_ROUND_KEYS_MAX: u64 = 100_000;

/// Trims the change feed to its newest `changes_kept` entries, never past what `index` has
/// applied (the feed is what it follows). Runs on the follower with `applying` held, and not
/// while a rebuild runs (a rebuild follows the feed from where it started reading the store,
/// which may be behind the index in use; one that starts after this check starts at or past
/// the index's watermark, so nothing it needs is trimmed) nor while a backup's snapshot is
/// open (each deletion would keep a pre-image and fill its budget). The start is raised only
/// once the feed holds a tenth more than it keeps, so watchers at the oldest change are not
/// refused every round and the store is not written every round.
fn trim_feed(shared: &Shared, index: &CandidateIndex) -> Result<(), EngineError> {
    let store = &shared.store;
    if shared.changes_kept == 0 || shared.rebuilding.load(Ordering::Acquire) || store.snapshot_is_open() {
        return Ok(());
    }
    let last = store.change_sequence()?;
    let start = store.feed_start()?;
    let slack = (shared.changes_kept / 10).max(1);
    let held = (last + 1).saturating_sub(start);
    let new_start = if held > shared.changes_kept + slack {
        (last - shared.changes_kept + 1).min(index.watermark().saturating_add(1))
    } else {
        start
    };
    let (n_deleted, done) = store.trim_changes(new_start, TRIM_KEYS_MAX, TRIM_ROUND_KEYS_MAX)?;
    if n_deleted > 0 {
        tracing::debug!(start = new_start.max(start), n_deleted, done, "change feed trimmed");
    }
    Ok(())
}

/// Whether the index is behind the change feed as the follower starts, logged (not when the
/// feed's position cannot be read: the rounds report that).
fn behind_at_start(shared: &Shared) -> bool {
    let watermark = shared.index().watermark();
    let Ok(change_sequence) = shared.store.change_sequence() else {
        return false;
    };
    if change_sequence <= watermark {
        return false;
    }
    tracing::info!(
        watermark,
        change_sequence,
        "candidate index catching up with the change feed"
    );
    true
}

/// A new or recreated index over a store that already holds persons is built from the
/// persons (one read of each), not by replaying the whole change feed.
fn build_if_empty(shared: &Shared) {
    let change_sequence = match shared.store.change_sequence() {
        Ok(sequence) => sequence,
        Err(error) => {
            tracing::error!(%error, "cannot read the change feed position; following the feed from the index's watermark");
            return;
        }
    };
    if shared.index().watermark() > 0 || change_sequence == 0 {
        return;
    }
    tracing::info!(
        change_sequence,
        "candidate index is empty; building it from the store's persons"
    );
    match rebuild(shared, &mut |_| {}) {
        Ok(done) => tracing::info!(
            persons = done.persons_done,
            elapsed_ms = done.elapsed.as_millis() as u64,
            watermark = done.watermark,
            "candidate index built from the store"
        ),
        Err(EngineError::ShuttingDown) => {}
        Err(error) => {
            tracing::error!(%error, "building the candidate index from the store failed; replaying the change feed instead");
        }
    }
}

/// Clears the rebuilding flag however the rebuild ends.
struct RebuildingFlag<'a>(&'a AtomicBool);

impl Drop for RebuildingFlag<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

fn rebuild(shared: &Shared, progress: &mut dyn FnMut(&RebuildProgress)) -> Result<RebuildProgress, EngineError> {
    if shared.rebuilding.swap(true, Ordering::AcqRel) {
        return Err(EngineError::FailedPrecondition(
            "an index rebuild is already running; wait for it to finish".into(),
        ));
    }
    let _flag = RebuildingFlag(&shared.rebuilding);
    let (generation, dir) = shared.home.lock().expect("lock poisoned").prepare_next()?;
    tracing::info!(generation, "index rebuild started");
    let result = build_generation(shared, generation, &dir, progress);
    match &result {
        Ok(done) => tracing::info!(
            generation,
            persons = done.persons_done,
            elapsed_ms = done.elapsed.as_millis() as u64,
            watermark = done.watermark,
            "index rebuild finished; the new index answers"
        ),
        Err(error) => {
            tracing::warn!(generation, %error, "index rebuild did not finish; the index in use is unchanged");
            if let Err(error) = shared.home.lock().expect("lock poisoned").remove_generation(generation) {
                tracing::warn!(generation, %error, "cannot remove the unfinished index generation; it goes at the next start");
            }
        }
    }
    result
}

fn build_generation(
    shared: &Shared,
    generation: u64,
    dir: &Path,
    progress: &mut dyn FnMut(&RebuildProgress),
) -> Result<RebuildProgress, EngineError> {
    let started = Instant::now();
    let store = &shared.store;
    // Every change up to here is in the store; later ones are in the feed after it.
    let from_change = store.change_sequence()?;
    let mut state = RebuildProgress {
        phase: RebuildPhase::Scanning,
        persons_done: 0,
        persons_total: store.begin().n_persons()?,
        elapsed: Duration::ZERO,
        watermark: 0,
    };
    progress(&state);
    let index = CandidateIndex::recreate(dir, &shared.rebuild_config)?;
    let mut after: Option<PersonId> = None;
    let mut reported = Instant::now();
    loop {
        if shared.stopping() {
            return Err(EngineError::ShuttingDown);
        }
        let page = store.persons_page(after.as_ref(), REBUILD_PAGE)?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        let txn = store.begin();
        let ops = page
            .into_iter()
            .map(|(person_id, header)| upsert(&txn, person_id, header.version))
            .collect::<Result<Vec<_>, EngineError>>()?;
        state.persons_done += ops.len() as u64;
        index.apply(ops)?;
        if reported.elapsed() >= PROGRESS_INTERVAL {
            state.elapsed = started.elapsed();
            progress(&state);
            reported = Instant::now();
        }
    }
    index.commit(from_change)?;
    // Reopen with the follower's writer: the rebuild's threads and memory are not needed any
    // more.
    drop(index);
    let index = Arc::new(CandidateIndex::open(dir, &shared.config)?);
    state.phase = RebuildPhase::CatchingUp;
    state.watermark = from_change;
    state.elapsed = started.elapsed();
    progress(&state);
    // Most of the changes made during the scan, without holding the follower.
    catch_up(store, &index, shared.changes_per_round_max)?;
    let retired = {
        let _applying = shared.applying.lock().expect("lock poisoned");
        catch_up(store, &index, shared.changes_per_round_max)?;
        let mut home = shared.home.lock().expect("lock poisoned");
        let retired_generation = home.current();
        // Durable first: a crash from here on starts with the new generation, which is
        // complete and committed.
        home.promote(generation)?;
        let retired = std::mem::replace(&mut *shared.index.write().expect("lock poisoned"), Arc::clone(&index));
        (retired_generation, retired)
    };
    retire(shared, retired);
    state.phase = RebuildPhase::Done;
    state.watermark = index.watermark();
    state.elapsed = started.elapsed();
    progress(&state);
    Ok(state)
}

/// Closes a replaced index once the searches still using it are done, and deletes its files.
fn retire(shared: &Shared, (generation, index): (u64, Arc<CandidateIndex>)) {
    let waiting = Instant::now();
    while Arc::strong_count(&index) > 1 && waiting.elapsed() < RETIRE_WAIT {
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(index);
    if let Err(error) = shared.home.lock().expect("lock poisoned").remove_generation(generation) {
        tracing::warn!(generation, %error, "cannot remove the replaced index generation; it goes at the next start");
    }
}

/// Applies every change after the index's watermark, in rounds, committing each round with
/// its last feed sequence.
fn catch_up(store: &Store, index: &CandidateIndex, changes_per_round_max: usize) -> Result<(), EngineError> {
    loop {
        let from = index.watermark() + 1;
        let changes = store.changes_from(from, changes_per_round_max)?;
        let Some((last_sequence, _)) = changes.last() else {
            return Ok(());
        };
        let last_sequence = *last_sequence;
        // Only the newest event of each person in the round matters.
        let mut latest: BTreeMap<PersonId, ChangeKind> = BTreeMap::new();
        for (_, event) in changes {
            latest.insert(event.person_id, event.kind);
        }
        let txn = store.begin();
        let mut ops = Vec::with_capacity(latest.len());
        for (person_id, kind) in latest {
            let header = match kind {
                ChangeKind::Deleted | ChangeKind::MergedInto { .. } => None,
                ChangeKind::Created | ChangeKind::Updated | ChangeKind::Split { .. } => txn.person(&person_id)?,
            };
            // A person deleted after this event is removed now; its delete event follows.
            match header {
                Some(header) => ops.push(upsert(&txn, person_id, header.version)?),
                None => ops.push(IndexOp::Delete {
                    person_id: person_id.to_string(),
                }),
            }
        }
        index.apply(ops)?;
        crate::crash_point::reached("index-applied");
        index.commit(last_sequence)?;
        crate::crash_point::reached("index-committed");
    }
}

/// The index document of a person: every value it holds, not only the profile's winners (a
/// record may meet the person through an older name or address).
fn upsert(txn: &Txn<'_>, person_id: PersonId, version: u64) -> Result<IndexOp, EngineError> {
    let features: Features = txn.person_features(&person_id)?.unwrap_or_default();
    let values = |feature: Feature| -> Vec<String> { features.texts(feature).map(str::to_string).collect() };
    Ok(IndexOp::Upsert(PersonDoc {
        person_id: person_id.to_string(),
        version,
        names: values(Feature::Name),
        id_numbers: values(Feature::IdNumber),
        birth_dates: values(Feature::BirthDate),
        phones: values(Feature::Phone),
        addresses: values(Feature::Address),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::engine::apply;
    use crate::model::RawRecord;
    use crate::store::kv::MemKv;
    use crate::synth::{Generator, SynthConfig};
    use crate::wal::WalEntry;
    use popmaster_index::Candidate;

    /// 2024-05-01.
    const NOW: i64 = 1_714_521_600_000;

    fn config() -> IndexConfig {
        IndexConfig {
            refresh_interval_ms: 10,
            // Small rounds: the follower builds its index in many commits, merges and
            // deletions among them.
            changes_per_round_max: 37,
            rebuild_threads: 2,
            rebuild_memory_bytes: 32 * 1024 * 1024,
            ..IndexConfig::default()
        }
    }

    /// Applies a synthetic population to the store in batches of 100 records, as the writer
    /// would, waking the follower after each.
    fn ingest(store: &Store, catalog: &Catalog, seed: u64, n_persons: usize, wake: Option<&Wakeup>) {
        let records: Vec<RawRecord> = Generator::new(
            SynthConfig {
                seed,
                n_persons,
                ..SynthConfig::default()
            },
            catalog,
        )
        .map(|synth| synth.to_raw_record())
        .collect();
        for chunk in records.chunks(100) {
            let entry = WalEntry {
                sequence: store.applied_sequence().expect("reads") + 1,
                received_at: NOW,
                records: chunk.to_vec(),
                rejected: vec![],
                model: None,
                steward: None,
                actor: None,
            };
            apply::apply_entry(store, catalog, entry).expect("applies");
            if let Some(wake) = wake {
                wake.wake();
            }
        }
    }

    fn wait_caught_up(indexer: &Indexer, store: &Store) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while indexer.watermark() < store.change_sequence().expect("reads") {
            assert!(Instant::now() < deadline, "the follower did not catch up");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// For every person: the top candidates for all its values, and for its name alone.
    fn answers(indexer: &Indexer, store: &Store) -> Vec<Vec<Candidate>> {
        let index = indexer.shared.index();
        let txn = store.begin();
        let mut answers = Vec::new();
        for (person_id, _) in store.persons_page(None, usize::MAX).expect("scans") {
            let features: Features = txn.person_features(&person_id).expect("reads").expect("stored");
            let first = |feature: Feature| features.texts(feature).next().map(str::to_string);
            let whole = CandidateQuery {
                name: first(Feature::Name),
                id_number: first(Feature::IdNumber),
                birth_date: first(Feature::BirthDate),
                phone: first(Feature::Phone),
                address: first(Feature::Address),
            };
            let name_only = CandidateQuery {
                name: first(Feature::Name),
                ..CandidateQuery::default()
            };
            for query in [whole, name_only] {
                answers.push(index.candidates(&query, 10).expect("searches"));
            }
        }
        answers
    }

    fn same(left: &[Vec<Candidate>], right: &[Vec<Candidate>]) {
        assert_eq!(left.len(), right.len());
        for (i, (l, r)) in left.iter().zip(right).enumerate() {
            assert_eq!(l, r, "query {i}");
        }
    }

    fn shut_down(indexer: &Indexer) {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(indexer.shutdown());
    }

    fn generations(root: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(root)
            .expect("lists")
            .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_rebuilt_index_answers_like_the_followed_one_and_catches_changes_made_meanwhile() {
        let catalog = Catalog::shipped();
        let store = Arc::new(Store::open(Box::new(MemKv::default())).expect("opens"));
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("index");
        let indexer = Indexer::start(&root, &config(), 0, Arc::clone(&store)).expect("starts");

        // The follower indexes a population batch by batch.
        ingest(&store, &catalog, 1, 300, Some(&indexer.wakeup()));
        wait_caught_up(&indexer, &store);
        let followed = answers(&indexer, &store);
        assert_eq!(indexer.num_persons(), store.begin().n_persons().expect("reads"));

        // A rebuild from the store answers every query exactly as the followed index did.
        let mut phases = Vec::new();
        let done = indexer
            .rebuild(&mut |progress| phases.push(progress.phase))
            .expect("rebuilds");
        assert_eq!(done.phase, RebuildPhase::Done);
        assert_eq!(done.persons_done, store.begin().n_persons().expect("reads"));
        assert_eq!(done.watermark, store.change_sequence().expect("reads"));
        assert_eq!(phases.first(), Some(&RebuildPhase::Scanning));
        assert!(phases.contains(&RebuildPhase::CatchingUp), "{phases:?}");
        assert_eq!(phases.last(), Some(&RebuildPhase::Done));
        same(&answers(&indexer, &store), &followed);
        assert_eq!(
            generations(&root),
            ["CURRENT", "g2"],
            "the replaced generation is removed"
        );

        // Records arriving after the scan began reach the new index through the feed.
        let mut arrived = false;
        let wake = indexer.wakeup();
        indexer
            .rebuild(&mut |progress| {
                if progress.phase == RebuildPhase::Scanning && !arrived {
                    arrived = true;
                    ingest(&store, &catalog, 2, 150, Some(&wake));
                }
            })
            .expect("rebuilds");
        assert!(arrived);
        wait_caught_up(&indexer, &store);
        assert_eq!(indexer.num_persons(), store.begin().n_persons().expect("reads"));
        let after_concurrent = answers(&indexer, &store);
        // ... and it answers as one rebuilt with nothing moving.
        indexer.rebuild(&mut |_| {}).expect("rebuilds");
        same(&answers(&indexer, &store), &after_concurrent);
        assert_eq!(generations(&root), ["CURRENT", "g4"]);

        // Reopened, the home keeps the last generation and its watermark.
        shut_down(&indexer);
        drop((indexer, wake));
        let reopened = Indexer::start(&root, &config(), 0, Arc::clone(&store)).expect("starts");
        assert_eq!(reopened.watermark(), store.change_sequence().expect("reads"));
        same(&answers(&reopened, &store), &after_concurrent);
        shut_down(&reopened);
    }

    #[test]
    fn an_empty_index_over_a_populated_store_is_built_at_start_and_one_rebuild_runs_at_a_time() {
        let catalog = Catalog::shipped();
        let store = Arc::new(Store::open(Box::new(MemKv::default())).expect("opens"));
        ingest(&store, &catalog, 3, 100, None);
        let dir = tempfile::tempdir().expect("temp dir");
        let indexer = Indexer::start(&dir.path().join("index"), &config(), 0, Arc::clone(&store)).expect("starts");
        wait_caught_up(&indexer, &store);
        assert_eq!(indexer.num_persons(), store.begin().n_persons().expect("reads"));

        indexer.shared.rebuilding.store(true, Ordering::Release);
        match indexer.rebuild(&mut |_| {}) {
            Err(EngineError::FailedPrecondition(message)) => {
                assert_eq!(message, "an index rebuild is already running; wait for it to finish");
            }
            other => panic!("expected FailedPrecondition, got {other:?}"),
        }
        indexer.shared.rebuilding.store(false, Ordering::Release);
        shut_down(&indexer);
    }
}
