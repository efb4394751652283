//! The engine: the write path and the read path as one facade. Orders the write-ahead log,
//! cleanse, resolve, store and index, and acknowledges only what is durable. Speaks model
//! types, never proto.
//!
//! Write path: `ingest` queues a batch for the single writer thread, which group-commits
//! queued batches to the WAL (one fdatasync), applies each to the store in one transaction,
//! and answers. The indexer thread follows the store's change feed into the tantivy index.
//!
//! Read path: profiles (one, many, by ID number, by record, or all of them page by page for
//! an export), the change feed for watchers (`feed`, woken by the writer after every applied
//! batch), person search (`search`), the explanations of decisions.
//!
//! Operations: a consistent backup of the running service and an offline restore (`backup`).
//!
//! Audit: the audit log's writer thread and its queries (`audit`); what is audited is the api's.

mod apply;
mod audit;
mod backup;
mod committer;
mod disk;
mod feed;
mod indexer;
mod read_ahead;
mod reevaluation;
mod search;
mod steward;
mod stewardship;
mod train;

pub use crate::store::{ChangeEvent, ChangeKind};
pub use apply::{Placed, ReviewItem, StageTimes};
pub use audit::AuditLog;
pub use backup::{restore, BackupDone, BackupProgress, BackupRun, RestoreStage};
pub use feed::ChangeFollower;
pub use indexer::{RebuildPhase, RebuildProgress};
pub use reevaluation::{Reevaluated, ReevaluationProgress, REEVALUATE_CHUNK_PERSONS};
pub use search::{PersonMatch, PersonQuery, SearchResult};
pub use stewardship::{ReviewEntry, ReviewPage, StewardOutcome, STEWARD_LIST_MAX};

use crate::catalog::Catalog;
use crate::cleanse::id_number::normalize_id_number;
use crate::config::Config;
use crate::model::{Actor, EpochMillis, PersonId, RawRecord, RecordKey, SourceId, StewardAction, TagCode};
use crate::resolve::decide::Hold;
use crate::resolve::model::Score;
use crate::resolve::{self, Evidence, Features, MatchModel};
use crate::store::{PersonHeader, ProfileEntry, Store, StoreError, StoreStats, StoredProfile, Txn};
use crate::wal::{Wal, WalEntry, WalError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("cannot start the {thread} thread: {source}")]
    Thread {
        thread: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Index(#[from] popmaster_index::IndexError),
    #[error(transparent)]
    Backup(#[from] crate::backup::BackupError),
    #[error("the service is shutting down")]
    ShuttingDown,
    #[error("the write path has failed and stopped acknowledging; restart the service")]
    WritePathFailed,
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    OutOfRange(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// A read met concurrent changes each time it tried: worth retrying.
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("cannot write the audit log: {0}")]
    Audit(String),
}

/// A batch the writer applied: its sequence and one placement per admitted record.
#[derive(Debug, Clone)]
pub struct Applied {
    pub sequence: u64,
    pub placed: Vec<Placed>,
}

/// A profile as read, already narrowed to the requested tags.
#[derive(Debug, Clone)]
pub struct ProfileView {
    pub person_id: PersonId,
    pub version: u64,
    pub tags: Vec<(TagCode, ProfileEntry)>,
    pub records: Vec<RecordKey>,
    /// The id asked for, when it was merged into `person_id`.
    pub redirected_from: Option<PersonId>,
}

/// A profile as `ProfileView` holds it, with its tags still as stored, for a read that encodes
/// them at once without copying each string.
#[derive(Debug)]
pub struct StoredProfileView {
    pub person_id: PersonId,
    pub version: u64,
    pub tags: StoredProfile,
    pub records: Vec<RecordKey>,
    /// The id asked for, when it was merged into `person_id`.
    pub redirected_from: Option<PersonId>,
}

impl StoredProfileView {
    pub fn into_view(self) -> Result<ProfileView, EngineError> {
        Ok(ProfileView {
            tags: self.tags.into_entries()?,
            person_id: self.person_id,
            version: self.version,
            records: self.records,
            redirected_from: self.redirected_from,
        })
    }
}

/// How many merges an alias chain may record before it is taken for damage.
const ALIAS_HOPS_MAX: usize = 64;

#[derive(Debug, Clone)]
pub struct EngineStats {
    pub store: StoreStats,
    pub index_watermark: u64,
    pub index_persons: u64,
    /// Where the writer's time went since the start: the stages of applying, and the log.
    pub ingest: IngestTimes,
    /// How many of the writer's store reads the read-ahead did for it.
    pub read_ahead: crate::store::ReadAheadStats,
}

impl EngineStats {
    /// Change-feed entries the index has not applied yet.
    pub fn index_lag(&self) -> u64 {
        self.store.change_sequence.saturating_sub(self.index_watermark)
    }
}

/// The writer's time since the start: logging (append and fdatasync, once per group) and the
/// stages of applying each record.
#[derive(Debug, Default, Clone, Copy)]
pub struct IngestTimes {
    pub log: std::time::Duration,
    pub stages: StageTimes,
}

enum WriterMessage {
    /// An entry to log and apply; the writer gives it its sequence.
    Write {
        entry: Box<WalEntry>,
        reply: oneshot::Sender<Result<Applied, EngineError>>,
    },
    Shutdown(oneshot::Sender<()>),
}

pub struct Engine {
    store: Arc<Store>,
    catalog: Arc<Catalog>,
    config: Config,
    writer_queue: mpsc::Sender<WriterMessage>,
    write_path_failed: Arc<AtomicBool>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    indexer: indexer::Indexer,
    ingest_times: Arc<Mutex<IngestTimes>>,
    feed: feed::FeedSignal,
    /// A re-resolution of every person is running.
    reevaluating: AtomicBool,
    /// Refuses writes while the data directory's disk is nearly full.
    disk: disk::DiskGuard,
    /// Set at shutdown: a running backup stops and removes its partial files.
    backup_cancelled: Arc<AtomicBool>,
    audit: Arc<AuditLog>,
}

impl Engine {
    /// Opens the data directory: the store, the WAL (replaying what the store has not yet
    /// applied), and the index (catching up with the change feed), then starts the writer.
    pub fn open(config: &Config, catalog: Catalog) -> Result<Engine, EngineError> {
        let data_dir = &config.data_dir;
        std::fs::create_dir_all(data_dir).map_err(|source| EngineError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        let (store, n_redone) = Store::open_sled_with_redo(
            &data_dir.join("store"),
            config.storage.cache_capacity_bytes,
            &data_dir.join("redo"),
            config.wal.segment_bytes_max,
        )?;
        let store = Arc::new(store);
        if n_redone > 0 {
            tracing::info!(n_redone, "applied again the batches a stop cut short (redo log)");
        }
        let catalog = Arc::new(catalog);
        let applied_sequence = store.applied_sequence()?;
        let recovered = Wal::open(&data_dir.join("wal"), config.wal.segment_bytes_max, applied_sequence)?;
        let n_replayed = recovered.pending.len();
        if n_replayed > 0 {
            tracing::info!(n_replayed, applied_sequence, "replaying the write-ahead log");
        }
        for entry in recovered.pending {
            apply::apply_entry(&store, &catalog, entry)?;
        }
        if n_replayed > 0 {
            tracing::info!(
                n_replayed,
                applied_sequence = store.applied_sequence()?,
                "replayed the write-ahead log"
            );
        }
        if n_redone + n_replayed > 0 {
            // The replayed batches are not in the redo log: made durable now, they leave no
            // gap between the store and the redo log's next batch, whatever stops it next.
            store.checkpoint()?;
        }
        // The audit journal's entries the store lacks go in before anything serves.
        let journal = audit::JournalConfig {
            dir: data_dir.join("audit-journal"),
            segment_bytes_max: config.wal.segment_bytes_max,
            checkpoint_interval: config.wal.checkpoint_interval(),
        };
        let audit = Arc::new(AuditLog::start(Arc::clone(&store), &config.audit, journal)?);
        let indexer = indexer::Indexer::start(
            &data_dir.join("index"),
            &config.index,
            config.feed.changes_kept,
            Arc::clone(&store),
        )?;
        let (writer_queue, receiver) = mpsc::channel(config.wal.queue_batches_max);
        let write_path_failed = Arc::new(AtomicBool::new(false));
        let ingest_times = Arc::new(Mutex::new(IngestTimes::default()));
        let feed = feed::FeedSignal::new();
        store.set_read_ahead_bytes_max(config.wal.read_ahead_bytes_max);
        let read_ahead = (config.wal.read_ahead_bytes_max > 0)
            .then(|| read_ahead::ReadAheadThread::start(Arc::clone(&store), Arc::clone(&catalog)))
            .transpose()
            .map_err(|source| EngineError::Thread {
                thread: "read-ahead",
                source,
            })?;
        let committer = committer::Committer::start(
            Arc::clone(&store),
            committer::Signals {
                failed: Arc::clone(&write_path_failed),
                feed: feed.clone(),
                wake_indexer: {
                    let wakeup = indexer.wakeup();
                    Box::new(move || wakeup.wake())
                },
                times: Arc::clone(&ingest_times),
            },
        )
        .map_err(|source| EngineError::Thread {
            thread: "committer",
            source,
        })?;
        let writer = Writer {
            store: Arc::clone(&store),
            catalog: Arc::clone(&catalog),
            wal: recovered.wal,
            receiver,
            group_records_max: config.wal.group_records_max,
            checkpoint_interval: config.wal.checkpoint_interval(),
            failed: Arc::clone(&write_path_failed),
            fuzzy: (config.index.fuzzy_candidates > 0).then(|| (indexer.fuzzy(), config.index.fuzzy_candidates)),
            times: Arc::clone(&ingest_times),
            read_ahead,
            committer,
        };
        let writer_thread = std::thread::Builder::new()
            .name("popmaster-writer".into())
            .spawn(move || writer.run())
            .map_err(|source| EngineError::Thread {
                thread: "writer",
                source,
            })?;
        Ok(Engine {
            store,
            catalog,
            config: config.clone(),
            writer_queue,
            write_path_failed,
            writer_thread: Mutex::new(Some(writer_thread)),
            indexer,
            ingest_times,
            feed,
            reevaluating: AtomicBool::new(false),
            disk: disk::DiskGuard::new(data_dir, config.storage.min_free_bytes),
            backup_cancelled: Arc::new(AtomicBool::new(false)),
            audit,
        })
    }

    /// The audit log: its writer, and queries of it.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Logs, applies and answers one batch of admitted records (and the rules that refused
    /// the others, for the quality report). Returns once the batch is durable (fdatasync'ed
    /// in the WAL) and applied to the store, with the `actor`'s audit entry if there is one.
    pub async fn ingest(
        &self,
        received_at: EpochMillis,
        records: Vec<RawRecord>,
        rejected: Vec<(SourceId, String)>,
        actor: Option<Actor>,
    ) -> Result<Applied, EngineError> {
        self.write(received_at, records, rejected, None, None, actor).await
    }

    /// Logs and applies one steward action, deletion or re-resolution chunk: a write with no
    /// records, received now.
    async fn write_action(&self, action: StewardAction, actor: Option<Actor>) -> Result<Applied, EngineError> {
        self.write(
            chrono::Utc::now().timestamp_millis(),
            Vec::new(),
            Vec::new(),
            None,
            Some(action),
            actor,
        )
        .await
    }

    async fn write(
        &self,
        received_at: EpochMillis,
        records: Vec<RawRecord>,
        rejected: Vec<(SourceId, String)>,
        model: Option<Vec<u8>>,
        steward: Option<StewardAction>,
        actor: Option<Actor>,
    ) -> Result<Applied, EngineError> {
        if self.write_path_failed.load(Ordering::Acquire) {
            return Err(EngineError::WritePathFailed);
        }
        if let Err(free) = self.disk.check() {
            tracing::warn!(
                free_bytes = free,
                min_free_bytes = self.disk.min_free_bytes(),
                "write refused: the data directory's disk is nearly full"
            );
            return Err(EngineError::ResourceExhausted(format!(
                "the data directory's disk has {free} bytes free, below storage.min_free_bytes ({}); writes are refused until space is freed (reads go on)",
                self.disk.min_free_bytes()
            )));
        }
        let (reply, answer) = oneshot::channel();
        self.writer_queue
            .send(WriterMessage::Write {
                entry: Box::new(WalEntry {
                    sequence: 0,
                    received_at,
                    records,
                    rejected,
                    model,
                    steward,
                    actor,
                }),
                reply,
            })
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        answer.await.map_err(|_| EngineError::ShuttingDown)?
    }

    /// Finishes queued batches, checkpoints the store, commits the index and stops the
    /// background threads. Later ingests fail with `ShuttingDown`.
    pub async fn shutdown(&self) {
        // A backup first: a commit (the audit writer's too) may be waiting for it.
        self.backup_cancelled.store(true, Ordering::Release);
        // Then the audit threads, so the writer's last checkpoint makes every audit entry
        // durable too.
        let audit = Arc::clone(&self.audit);
        let _ = tokio::task::spawn_blocking(move || audit.close()).await;
        self.feed.close();
        let (done, finished) = oneshot::channel();
        if self.writer_queue.send(WriterMessage::Shutdown(done)).await.is_ok() {
            let _ = finished.await;
        }
        let writer_thread = self.writer_thread.lock().expect("lock poisoned").take();
        if let Some(thread) = writer_thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        self.indexer.shutdown().await;
    }

    /// The model the write path decides with now.
    pub fn model(&self) -> Result<MatchModel, EngineError> {
        Ok(apply::current_model(&self.store.begin())?)
    }

    /// Re-estimates the model from the stored data and installs it through the write path
    /// (logged like a batch, so every later decision, and a replay, uses it). Returns the new
    /// model and the number of random and candidate pairs it was trained on.
    pub async fn train_model(&self, actor: Option<Actor>) -> Result<(MatchModel, usize, usize), EngineError> {
        let store = Arc::clone(&self.store);
        let catalog = Arc::clone(&self.catalog);
        // Sampling and training take seconds on a large store: off the async workers.
        let (model, n_random, n_candidates) = tokio::task::spawn_blocking(move || -> Result<_, EngineError> {
            let current = apply::current_model(&store.begin())?;
            let sample = train::sample(&store, &catalog)?;
            if sample.candidate_pairs.is_empty() {
                return Err(EngineError::InvalidArgument(
                    "too little data to train on: no record shares a blocking key with another".into(),
                ));
            }
            let model = resolve::model::train(&current, &sample.random_pairs, &sample.candidate_pairs);
            Ok((model, sample.random_pairs.len(), sample.candidate_pairs.len()))
        })
        .await
        .map_err(|_| EngineError::ShuttingDown)??;
        let model = self.install_model(model, actor).await?;
        Ok((model, n_random, n_candidates))
    }

    /// Installs `model` as the next version, through the write path. Returns it as installed.
    pub async fn install_model(&self, mut model: MatchModel, actor: Option<Actor>) -> Result<MatchModel, EngineError> {
        model.validate().map_err(EngineError::InvalidArgument)?;
        model.version = self.model()?.version + 1;
        let encoded = postcard::to_stdvec(&model).expect("in-memory serialization of plain data cannot fail");
        self.write(
            chrono::Utc::now().timestamp_millis(),
            Vec::new(),
            Vec::new(),
            Some(encoded),
            None,
            actor,
        )
        .await?;
        Ok(model)
    }

    /// The evidence of a record's last resolution, and its open review item.
    pub fn explain_record(&self, key: &RecordKey) -> Result<Option<(Evidence, Option<ReviewItem>)>, EngineError> {
        let txn = self.store.begin();
        let Some(evidence) = txn.evidence::<Evidence>(key)? else {
            return Ok(None);
        };
        Ok(Some((evidence, txn.review_item(key)?)))
    }

    /// Two persons compared by the current model, as if one were a record of the other.
    pub fn explain_pair(&self, a: &PersonId, b: &PersonId) -> Result<(Score, Option<Hold>), EngineError> {
        let txn = self.store.begin();
        let model = apply::current_model(&txn)?;
        let features = |person_id: &PersonId| -> Result<Features, EngineError> {
            txn.person_features(person_id)?
                .ok_or_else(|| EngineError::NotFound(format!("person {person_id} not found")))
        };
        let (a, b) = (features(a)?, features(b)?);
        let name_share = apply::name_share(&txn, &model);
        Ok(resolve::explain_pair(&a, &b, &model, txn.n_persons()?, &name_share))
    }

    /// A person's profile. An id merged into another person is followed to the survivor, and
    /// the view says it was redirected.
    pub fn get_profile(&self, person_id: &PersonId, tag_mask: &[TagCode]) -> Result<Option<ProfileView>, EngineError> {
        profile_view(&self.store.begin(), person_id, tag_mask)
    }

    /// `get_profile` with the tags as stored, for a read that encodes them at once.
    pub fn get_stored_profile(
        &self,
        person_id: &PersonId,
        tag_mask: &[TagCode],
    ) -> Result<Option<StoredProfileView>, EngineError> {
        stored_profile_view(&self.store.begin(), person_id, tag_mask)
    }

    /// The profile of the person a record belongs to, with its tags as stored for a read that
    /// encodes them at once; `None` for a record never stored.
    pub fn get_stored_profile_by_record(
        &self,
        key: &RecordKey,
        tag_mask: &[TagCode],
    ) -> Result<Option<StoredProfileView>, EngineError> {
        let txn = self.store.begin();
        let Some(header) = txn.record_header(key)? else {
            return Ok(None);
        };
        match stored_profile_view(&txn, &header.person_id, tag_mask)? {
            Some(mut view) => {
                // The record names its person directly: no redirection to report.
                view.redirected_from = None;
                Ok(Some(view))
            }
            None => Err(StoreError::Corrupt {
                kind: "record",
                message: "a stored record names a person that does not exist".into(),
            }
            .into()),
        }
    }

    /// The sequence of the last change-feed entry.
    pub fn change_sequence(&self) -> Result<u64, EngineError> {
        Ok(self.store.change_sequence()?)
    }

    /// Follows the change feed from `from_sequence` (0: the oldest change it keeps), in
    /// batches of at most `server.watch_batch_changes_max`. A start beyond the end of the feed
    /// plus one is `OutOfRange`: no change will ever have that sequence next; so is one below
    /// the oldest change kept (`feed.changes_kept`), and a follower that falls that far behind
    /// ends with it.
    pub fn follow_changes(&self, from_sequence: u64) -> Result<ChangeFollower, EngineError> {
        let last_sequence = self.store.change_sequence()?;
        if from_sequence > last_sequence + 1 {
            return Err(EngineError::OutOfRange(format!(
                "from_sequence {from_sequence} is beyond the end of the change feed (last sequence {last_sequence})"
            )));
        }
        let start = self.store.feed_start()?;
        if (1..start).contains(&from_sequence) {
            return Err(feed::trimmed(from_sequence, start));
        }
        let from_oldest = from_sequence == 0;
        Ok(self.feed.follow(
            Arc::clone(&self.store),
            if from_oldest { start } else { from_sequence },
            from_oldest,
            self.config.server.watch_batch_changes_max,
        ))
    }

    /// Ends every change-feed follower: called when the service starts shutting down, so that
    /// open watch streams end instead of holding the shutdown.
    pub fn close_change_followers(&self) {
        self.feed.close();
    }

    /// The persons most like `query`, at most `top_k`, best first, scored by the current model.
    /// Candidates come from the exact blocking keys and from the search index (which lags the
    /// store by up to `index.refresh_interval_ms`).
    pub fn search_persons(&self, query: PersonQuery, top_k: usize) -> Result<SearchResult, EngineError> {
        let index = self.indexer.fuzzy();
        // Enough index candidates to fill the answer, and never fewer than the exact keys give.
        let k = top_k.max(apply::CANDIDATES_MAX);
        let fuzzy = move |features: &Features| index.candidates(features, k);
        search::search_persons(
            &self.store,
            &self.catalog,
            &fuzzy,
            query,
            top_k,
            chrono::Utc::now().timestamp_millis(),
        )
    }

    /// The profile of the person holding this resident ID number, given in any form a
    /// department might send it.
    pub fn get_profile_by_id_number(
        &self,
        raw_id_number: &str,
        tag_mask: &[TagCode],
    ) -> Result<Option<ProfileView>, EngineError> {
        self.get_stored_profile_by_id_number(raw_id_number, tag_mask)?
            .map(StoredProfileView::into_view)
            .transpose()
    }

    /// `get_profile_by_id_number` with the tags as stored.
    pub fn get_stored_profile_by_id_number(
        &self,
        raw_id_number: &str,
        tag_mask: &[TagCode],
    ) -> Result<Option<StoredProfileView>, EngineError> {
        let id_number = normalize_id_number(raw_id_number).map_err(|problem| {
            EngineError::InvalidArgument(format!("id_number is not a valid resident ID number: {problem}"))
        })?;
        let txn = self.store.begin();
        match txn.person_for_id_number(&id_number)? {
            Some(person_id) => stored_profile_view(&txn, &person_id, tag_mask),
            None => Ok(None),
        }
    }

    /// One page of the record -> person mapping, in key order after `after`.
    pub fn mapping_page(
        &self,
        after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<Vec<(RecordKey, PersonId)>, EngineError> {
        Ok(self.store.mapping_page(after, limit)?)
    }

    /// Profiles of the persons after `after` in person-id order, as stored (not decoded), from
    /// one read of at most `limit` persons, narrowed to `tag_mask`; with the id to pass as
    /// `after` for the next page (`None` after the last). Each page follows the store as it is when it is read: a person
    /// merged away before its page is read is not in it, and no alias is followed, so no
    /// person id is given twice across the pages.
    pub fn stored_profiles_page(
        &self,
        after: Option<&PersonId>,
        limit: usize,
        tag_mask: &[TagCode],
    ) -> Result<(Vec<StoredProfileView>, Option<PersonId>), EngineError> {
        let person_ids: Vec<PersonId> = (self.store.persons_page(after, limit)?.into_iter())
            .map(|(person_id, _)| person_id)
            .collect();
        let next = if person_ids.len() < limit {
            None
        } else {
            person_ids.last().cloned()
        };
        let txn = self.store.begin();
        let mut views = Vec::with_capacity(person_ids.len());
        for person_id in person_ids {
            if let Some(view) = stored_person(&txn, person_id, tag_mask)? {
                views.push(view);
            }
        }
        Ok((views, next))
    }

    /// Quality counters of one source, or of all sources: rule id (or `#records`,
    /// `#rejected`) -> count.
    pub fn quality(&self, source: Option<&SourceId>) -> Result<std::collections::BTreeMap<String, u64>, EngineError> {
        Ok(self.store.quality(source)?)
    }

    /// Rebuilds the candidate index from the store while the old one keeps answering, then
    /// swaps it in; changes made meanwhile reach the new index. Blocks until done (run it on a
    /// blocking thread); `progress` hears about it every quarter second and at each phase.
    pub fn rebuild_index(&self, progress: &mut dyn FnMut(&RebuildProgress)) -> Result<RebuildProgress, EngineError> {
        self.indexer.rebuild(progress)
    }

    pub fn stats(&self) -> Result<EngineStats, EngineError> {
        // The watermark first: it never passes the change sequence, so read in this order the
        // lag is never negative.
        let index_watermark = self.indexer.watermark();
        Ok(EngineStats {
            store: self.store.stats()?,
            index_watermark,
            index_persons: self.indexer.num_persons(),
            ingest: *self.ingest_times.lock().expect("lock poisoned"),
            read_ahead: self.store.read_ahead_stats(),
        })
    }

    /// What has failed for good, until a restart: what health checks and metrics report.
    pub fn health(&self) -> EngineHealth {
        EngineHealth {
            write_path_failed: self.write_path_failed.load(Ordering::Acquire),
            store_torn: self.store.is_torn(),
        }
    }
}

/// The engine's failures that only a restart ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineHealth {
    /// The write path has failed (a log append, apply or checkpoint error) and acknowledges
    /// nothing more.
    pub write_path_failed: bool,
    /// A batch stopped part-way into the store: nothing is read or written.
    pub store_torn: bool,
}

/// The person an id names now, with its header: itself, or the survivor it was merged into
/// (following the alias chain). `None` for an id never used.
pub(crate) fn current_person(
    txn: &Txn<'_>,
    person_id: &PersonId,
) -> Result<Option<(PersonId, PersonHeader)>, StoreError> {
    let mut current = person_id.clone();
    for _ in 0..=ALIAS_HOPS_MAX {
        if let Some(header) = txn.person(&current)? {
            return Ok(Some((current, header)));
        }
        match txn.alias(&current)? {
            Some(survivor) => current = survivor,
            None => return Ok(None),
        }
    }
    Ok(None)
}

/// How often a profile read is retried when its person changes while it is read.
const READ_ATTEMPTS_MAX: usize = 4;

/// One person's profile as stored, not following aliases: `None` once the person is gone
/// (merged away, deleted). Reads see commits as they land, so the version is read before and
/// after the profile and the read is repeated if a commit changed the person in between: the
/// view is one version of the person, never half of a merge.
fn stored_person(
    txn: &Txn<'_>,
    person_id: PersonId,
    tag_mask: &[TagCode],
) -> Result<Option<StoredProfileView>, EngineError> {
    for _ in 0..READ_ATTEMPTS_MAX {
        let Some(header) = txn.person(&person_id)? else {
            return Ok(None);
        };
        let tags = txn.stored_profile(&person_id, tag_mask)?;
        let records = txn.members(&person_id)?;
        match txn.person(&person_id)? {
            None => return Ok(None),
            Some(after) if after.version == header.version => {
                return Ok(Some(StoredProfileView {
                    version: header.version,
                    tags,
                    records,
                    redirected_from: None,
                    person_id,
                }))
            }
            Some(_) => continue,
        }
    }
    Err(changed_under_every_read(&person_id))
}

fn changed_under_every_read(person_id: &PersonId) -> EngineError {
    EngineError::Aborted(format!(
        "person {person_id} changed during each of {READ_ATTEMPTS_MAX} reads; retry"
    ))
}

/// A person's profile through `txn`, following an alias chain to the survivor.
fn profile_view(txn: &Txn<'_>, person_id: &PersonId, tag_mask: &[TagCode]) -> Result<Option<ProfileView>, EngineError> {
    stored_profile_view(txn, person_id, tag_mask)?
        .map(StoredProfileView::into_view)
        .transpose()
}

/// A person's profile through `txn` as stored (`stored_person`), following an alias chain to
/// the survivor, again if the survivor is merged away while it is read.
fn stored_profile_view(
    txn: &Txn<'_>,
    person_id: &PersonId,
    tag_mask: &[TagCode],
) -> Result<Option<StoredProfileView>, EngineError> {
    for _ in 0..READ_ATTEMPTS_MAX {
        let Some((current, _)) = current_person(txn, person_id)? else {
            return Ok(None);
        };
        if let Some(mut view) = stored_person(txn, current, tag_mask)? {
            view.redirected_from = (view.person_id != *person_id).then(|| person_id.clone());
            return Ok(Some(view));
        }
    }
    Err(changed_under_every_read(person_id))
}

struct Writer {
    store: Arc<Store>,
    catalog: Arc<Catalog>,
    wal: Wal,
    receiver: mpsc::Receiver<WriterMessage>,
    group_records_max: usize,
    checkpoint_interval: std::time::Duration,
    failed: Arc<AtomicBool>,
    /// The index and how many candidates to ask it for; `None`: exact keys only.
    fuzzy: Option<(indexer::FuzzyIndex, usize)>,
    times: Arc<Mutex<IngestTimes>>,
    /// Reads ahead of the writer on another core; `None` when `wal.read_ahead_bytes_max` is 0.
    read_ahead: Option<read_ahead::ReadAheadThread>,
    /// Applies the prepared batches to the store on another core, and answers them (it wakes
    /// the change-feed followers and the indexer after each).
    committer: committer::Committer,
}

type PendingReply = oneshot::Sender<Result<Applied, EngineError>>;

/// Answers each batch that will not be applied: the write path has failed.
fn refuse(replies: impl IntoIterator<Item = PendingReply>) {
    for reply in replies {
        let _ = reply.send(Err(EngineError::WritePathFailed));
    }
}

impl Writer {
    fn run(mut self) {
        let mut last_checkpoint = Instant::now();
        let mut dirty = false;
        loop {
            let message = match self.receiver.blocking_recv() {
                Some(message) => message,
                None => break,
            };
            let mut group: Vec<(WalEntry, PendingReply)> = Vec::new();
            let mut shutdown: Option<oneshot::Sender<()>> = None;
            let mut n_records = 0;
            let mut next = Some(message);
            while let Some(message) = next.take() {
                match message {
                    WriterMessage::Write { mut entry, reply } => {
                        n_records += entry.records.len();
                        entry.sequence = self.wal.next_sequence() + group.len() as u64;
                        group.push((*entry, reply));
                    }
                    WriterMessage::Shutdown(done) => {
                        shutdown = Some(done);
                        break;
                    }
                }
                if n_records < self.group_records_max {
                    next = self.receiver.try_recv().ok();
                }
            }
            if !group.is_empty() {
                dirty = true;
                if !self.commit_group(group) {
                    break;
                }
            }
            if let Some(done) = shutdown {
                self.receiver.close();
                self.checkpoint();
                let _ = done.send(());
                return;
            }
            if dirty && last_checkpoint.elapsed() >= self.checkpoint_interval {
                if !self.checkpoint() {
                    break;
                }
                last_checkpoint = Instant::now();
                dirty = false;
            }
        }
        // The queue closed or the write path failed: answer whatever is still queued.
        self.receiver.close();
        while let Ok(message) = self.receiver.try_recv() {
            match message {
                WriterMessage::Write { reply, .. } => {
                    let _ = reply.send(Err(EngineError::WritePathFailed));
                }
                WriterMessage::Shutdown(done) => {
                    let _ = done.send(());
                }
            }
        }
    }

    /// Logs the group with one fdatasync, then applies and answers each batch. Returns false
    /// when the write path must stop (fail-stop: an fsync error is never retried).
    fn commit_group(&mut self, group: Vec<(WalEntry, PendingReply)>) -> bool {
        let started = Instant::now();
        let (entries, replies): (Vec<WalEntry>, Vec<PendingReply>) = group.into_iter().unzip();
        if self.failed.load(Ordering::Acquire) {
            // The committer refused a batch: nothing more is logged, so nothing more is
            // replayed that its caller was told failed.
            refuse(replies);
            return false;
        }
        if let Some(read_ahead) = &self.read_ahead {
            // Starts during the fdatasync below.
            read_ahead.submit(&entries);
        }
        if let Err(error) = self.wal.append(&entries) {
            tracing::error!(%error, "write-ahead log append failed; the write path stops acknowledging");
            self.failed.store(true, Ordering::Release);
            refuse(replies);
            return false;
        }
        crate::crash_point::reached("wal-logged");
        let logged = started.elapsed();
        let mut stage_times = StageTimes::default();
        let mut replies = replies.into_iter();
        let n_batches = entries.len();
        for entry in entries {
            let reply = replies.next().expect("one reply per entry");
            if self.failed.load(Ordering::Acquire) {
                // The committer refused an earlier batch: nothing after it may be applied.
                refuse(std::iter::once(reply).chain(replies));
                return false;
            }
            let sequence = entry.sequence;
            let fuzzy = self
                .fuzzy
                .as_ref()
                .map(|(index, k)| move |features: &Features| index.candidates(features, *k));
            let fuzzy = fuzzy.as_ref().map(|search| search as apply::FuzzyCandidates<'_>);
            if let Some(read_ahead) = &self.read_ahead {
                read_ahead.writer_at(sequence);
            }
            let prepared = apply::prepare_entry_timed(&self.store, &self.catalog, entry, &mut stage_times, fuzzy)
                .and_then(|(placed, txn)| Ok((placed, txn.hand_over()?)));
            self.store.retire_read_ahead(sequence);
            match prepared {
                Ok((placed, handed)) => {
                    // Applied and answered by the committer, while this thread goes on.
                    self.committer.commit(handed, sequence, placed, reply);
                }
                Err(error) => {
                    // The batch is in the log and will be replayed at the next start.
                    tracing::error!(%error, sequence, "preparing a batch failed; the write path stops");
                    self.failed.store(true, Ordering::Release);
                    refuse(std::iter::once(reply).chain(replies));
                    return false;
                }
            }
        }
        {
            let mut times = self.times.lock().expect("lock poisoned");
            times.log += logged;
            times.stages.add(&stage_times);
        }
        tracing::debug!(
            n_batches,
            log_ms = logged.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "group committed"
        );
        true
    }

    /// Makes the store durable up to its applied sequence, then drops the WAL segments it
    /// covers.
    fn checkpoint(&mut self) -> bool {
        // Every batch handed over is applied first: the log is trimmed only up to what the
        // store holds durably.
        self.committer.drain();
        if self.failed.load(Ordering::Acquire) {
            // After a refused apply the store is not made durable as it is, nor the log
            // trimmed: the next start replays from what the store last held durably.
            return false;
        }
        let result = self.store.checkpoint().map_err(EngineError::from).and_then(|()| {
            let applied = self.store.applied_sequence()?;
            let n_trimmed = self.wal.trim(applied)?;
            crate::crash_point::reached("checkpoint-trimmed");
            Ok(n_trimmed)
        });
        match result {
            Ok(n_trimmed) => {
                tracing::debug!(n_trimmed, "checkpoint");
                true
            }
            Err(error) => {
                tracing::error!(%error, "checkpoint failed; the write path stops acknowledging");
                self.failed.store(true, Ordering::Release);
                false
            }
        }
    }
}
