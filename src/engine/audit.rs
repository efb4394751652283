//! The audit writer, in two threads. The journal thread appends audit entries in groups to
//! the audit journal (the write-ahead log's format, its own directory, one fdatasync a group)
//! and answers each caller once its entry is there, so that a read's answer never leaves
//! before its audit entry is durable, power loss included. The index thread then applies the
//! groups to the store in large batches (each entry with its index keys, and the month's
//! share counters, with the sequence of the last group applied), off the callers' path, and
//! checkpoints the store every `wal.checkpoint_interval_ms` so that the journal segments the
//! store holds durably are deleted. At start, journal groups the store has not applied are
//! applied first. Queries of the log wait for the index thread to apply what was journaled
//! before they began, so a caller reads its own entries. A journal write that fails is cut off
//! and only its calls are refused; a failed fdatasync refuses every later call (what reached the
//! disk is unknown). A batch the store refuses is tried again, with growing pauses, while queries
//! are refused; a long tag list the store already holds durably is named in the journal by its
//! hash.
//!
//! The pruner, a third thread, deletes entries past the retention (`audit.retention_days`)
//! every `audit.prune_interval_ms`, in bounded batches, keeping the share counters, and
//! deletes the shared tag lists of the days it has emptied. Its keys are `u/`, `ui/`, `ul/`
//! (`ut/` from format 7), `m/shares/`, `m/audit_serial` and `m/audit_journal_applied`. The
//! write path also writes `u/`, `ui/` and `ul/` keys, the entries of changes in the changes'
//! own transactions (durable with the change, through the write-ahead log), with serials of
//! its own (high bit set), so the two never write the same entry key (`ul/` lists are written
//! whole, the same by anyone). Decides nothing about what is audited; that is the api's.

use super::EngineError;
use crate::config::AuditConfig;
use crate::model::EpochMillis;
use crate::store::layout::{audit_day, DAY_MILLIS};
use crate::store::{
    shared_tag_list_hash, AuditBatchDone, AuditPage, AuditQuery, AuditRecord, ShareCount, Store, TagList,
};
use crate::wal::{LogEntry, Wal, WalError};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Entries one journal group may hold.
const GROUP_ENTRIES_MAX: usize = 1_024;
/// Keys one group (or one store batch of the index thread) may write, about: an entry writes
/// one index key per person it names, and a batch read names up to a thousand. It ends after
/// the entry that reaches it.
const GROUP_KEYS_MAX: usize = 65_536;
/// Entries waiting for the journal; callers wait when it is full.
const QUEUE_ENTRIES_MAX: usize = 8_192;
/// Journaled groups waiting for the index thread; the journal waits when it is full.
const INDEX_QUEUE_GROUPS_MAX: usize = 1_024;
/// How long a query waits for the index thread to apply what was journaled before it.
const QUERY_CATCH_UP_MAX: Duration = Duration::from_secs(10);

type Pending = (AuditRecord, oneshot::Sender<Result<(), String>>);

/// One group of entries as the journal holds it: its entries take the serials from
/// `first_serial` on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalGroup {
    sequence: u64,
    first_serial: u64,
    entries: Vec<JournalEntry>,
}

/// One entry as the journal holds it. A long tag list (a full profile's 2,091 codes) that the
/// store already holds durably, or that an earlier entry of the journal holds, is left out and
/// named by its hash, so a frame is not some thirty thousand bytes an entry. The store applies
/// the journal in order, so that earlier entry has written the list (`ul/<day><hash>`, the
/// entries' day) by then; the journal keeps it until a checkpoint has made the store's copy
/// durable. A list is named by hash only for an entry of the same day as the list held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct JournalEntry {
    /// Its `tags` are empty when `tags_by_hash`.
    record: AuditRecord,
    /// The hash of a tag list long enough to be shared (`ul/<day><hash>`).
    tag_list: Option<[u8; 16]>,
    /// The list is left out: the store held it durably, or an earlier entry of the journal
    /// holds it, when the entry was journaled.
    tags_by_hash: bool,
}

/// The shared tag lists the store is known to hold durably: written by the index thread before
/// one of its checkpoints. Pruning deletes only the lists of days before the retention's
/// cutoff, which no new entry names. Bounded: past `DURABLE_TAG_LISTS_MAX` it is emptied and
/// fills again.
type DurableTagLists = Mutex<HashSet<SharedList>>;

/// A shared tag list as the store keeps it (`ul/<day><hash>`): the day of the entries naming
/// it, and its hash.
type SharedList = (u32, [u8; 16]);

/// The shared list an entry's tags go to, if they are long enough to be shared.
fn shared_list(record: &AuditRecord) -> Option<SharedList> {
    shared_tag_list_hash(&record.tags).map(|hash| (audit_day(record.at), hash))
}
const DURABLE_TAG_LISTS_MAX: usize = 65_536;

impl LogEntry for JournalGroup {
    const LOG: &'static str = "audit journal";

    fn sequence(&self) -> u64 {
        self.sequence
    }

    fn decode(payload: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(payload)
    }
}

/// Where the journal lives and how it is cut and checkpointed.
#[derive(Debug, Clone)]
pub struct JournalConfig {
    pub dir: PathBuf,
    pub segment_bytes_max: u64,
    pub checkpoint_interval: Duration,
}

/// The time before which entries are pruned at `now`, or `None` when they are kept forever
/// (`retention_days` 0).
pub fn prune_cutoff(now: EpochMillis, retention_days: u32) -> Option<EpochMillis> {
    (retention_days > 0).then(|| now.saturating_sub(i64::from(retention_days) * DAY_MILLIS))
}

/// How far the index thread has got, for queries to wait on.
#[derive(Default)]
struct IndexProgress {
    /// The last group applied to the store.
    applied: u64,
    /// Why the store refused the batch the index thread keeps trying, if it does.
    failed: Option<String>,
}

pub struct AuditLog {
    store: Arc<Store>,
    retention_days: u32,
    /// Taken at shutdown: later entries are refused.
    queue: Mutex<Option<mpsc::Sender<Pending>>>,
    journal_thread: Mutex<Option<JoinHandle<()>>>,
    index_thread: Mutex<Option<JoinHandle<()>>>,
    /// The last group journaled (and answered).
    journaled: Arc<AtomicU64>,
    progress: Arc<(Mutex<IndexProgress>, Condvar)>,
    /// Set at `close`: the index thread stops retrying a batch the store refuses.
    closing: Arc<AtomicBool>,
    /// Dropped at shutdown: the pruner stops after its current batch.
    pruner_stop: Mutex<Option<std_mpsc::Sender<()>>>,
    pruner: Mutex<Option<JoinHandle<()>>>,
}

impl AuditLog {
    /// Applies the journal groups the store lacks, then starts the journal and index threads,
    /// and the pruner unless entries are kept forever; all end at `close`.
    pub fn start(store: Arc<Store>, config: &AuditConfig, journal: JournalConfig) -> Result<AuditLog, EngineError> {
        let applied = store.audit_journal_applied()?;
        let recovered = Wal::<JournalGroup>::open(&journal.dir, journal.segment_bytes_max, applied)?;
        let n_replayed = recovered.pending.len();
        for group in recovered.pending {
            let records = store_records(group.entries);
            store.append_audit_journaled(group.first_serial, &records, group.sequence)?;
        }
        let wal = recovered.wal;
        if n_replayed > 0 {
            tracing::info!(n_replayed, "applied audit journal groups the store lacked");
        }
        let journaled_now = wal.next_sequence() - 1;
        let journaled = Arc::new(AtomicU64::new(journaled_now));
        let progress = Arc::new((
            Mutex::new(IndexProgress {
                applied: journaled_now,
                failed: None,
            }),
            Condvar::new(),
        ));
        // Nothing is known durable until the index thread's first checkpoint (a crash may have
        // left the store's last batches in the page cache only), which covers the groups
        // applied before it too: the journal keeps every segment until then.
        let durable = Arc::new(AtomicU64::new(0));
        let durable_lists: Arc<DurableTagLists> = Arc::default();
        let closing = Arc::new(AtomicBool::new(false));
        let (queue, receiver) = mpsc::channel::<Pending>(QUEUE_ENTRIES_MAX);
        let (to_index, index_receiver) = std_mpsc::sync_channel::<JournalGroup>(INDEX_QUEUE_GROUPS_MAX);
        let journal_thread = {
            let journaled = Arc::clone(&journaled);
            let durable = Arc::clone(&durable);
            let durable_lists = Arc::clone(&durable_lists);
            let next_serial = store.next_audit_serial()?;
            std::thread::Builder::new()
                .name("popmaster-audit".into())
                .spawn(move || {
                    journal_loop(
                        wal,
                        receiver,
                        to_index,
                        next_serial,
                        &journaled,
                        &durable,
                        &durable_lists,
                    )
                })
                .map_err(|source| EngineError::Thread {
                    thread: "audit journal",
                    source,
                })?
        };
        let index_thread = {
            let store = Arc::clone(&store);
            let progress = Arc::clone(&progress);
            let closing = Arc::clone(&closing);
            let interval = journal.checkpoint_interval;
            std::thread::Builder::new()
                .name("popmaster-audit-index".into())
                .spawn(move || {
                    index_loop(
                        &store,
                        index_receiver,
                        &progress,
                        &durable,
                        &durable_lists,
                        &closing,
                        interval,
                    )
                })
                .map_err(|source| EngineError::Thread {
                    thread: "audit index",
                    source,
                })?
        };
        let (pruner_stop, pruner) = if config.retention_days > 0 {
            let (stop, stopped) = std_mpsc::channel::<()>();
            let pruner_store = Arc::clone(&store);
            let retention_days = config.retention_days;
            let interval = config.prune_interval();
            let pruner = std::thread::Builder::new()
                .name("popmaster-audit-pruner".into())
                .spawn(move || loop {
                    let now = chrono::Utc::now().timestamp_millis();
                    let stop_requested = || matches!(stopped.try_recv(), Err(std_mpsc::TryRecvError::Disconnected));
                    if let Err(error) = prune_pass(&pruner_store, retention_days, now, &stop_requested) {
                        tracing::error!(%error, "cannot prune the audit log; trying again at the next interval");
                    }
                    match stopped.recv_timeout(interval) {
                        Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                        _ => break,
                    }
                })
                .map_err(|source| EngineError::Thread {
                    thread: "audit pruner",
                    source,
                })?;
            (Some(stop), Some(pruner))
        } else {
            (None, None)
        };
        Ok(AuditLog {
            store,
            retention_days: config.retention_days,
            queue: Mutex::new(Some(queue)),
            journal_thread: Mutex::new(Some(journal_thread)),
            index_thread: Mutex::new(Some(index_thread)),
            journaled,
            progress,
            closing,
            pruner_stop: Mutex::new(pruner_stop),
            pruner: Mutex::new(pruner),
        })
    }

    /// Stops the pruner (after its current batch), journals and applies what is queued and
    /// stops the journal and index threads; blocks until all have.
    pub fn close(&self) {
        drop(self.pruner_stop.lock().expect("audit lock").take());
        if let Some(pruner) = self.pruner.lock().expect("audit lock").take() {
            let _ = pruner.join();
        }
        drop(self.queue.lock().expect("audit lock").take());
        self.closing.store(true, Ordering::Release);
        if let Some(thread) = self.journal_thread.lock().expect("audit lock").take() {
            let _ = thread.join();
        }
        if let Some(thread) = self.index_thread.lock().expect("audit lock").take() {
            let _ = thread.join();
        }
    }

    /// Appends one entry and waits until it is in the journal, on stable storage. An entry
    /// that cannot be written is an error: the caller must not answer as if it were audited.
    pub async fn append(&self, record: AuditRecord) -> Result<(), EngineError> {
        let (reply, answer) = oneshot::channel();
        let queue = self
            .queue
            .lock()
            .expect("audit lock")
            .clone()
            .ok_or(EngineError::ShuttingDown)?;
        queue
            .send((record, reply))
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(EngineError::Audit(message)),
            Err(_) => Err(EngineError::ShuttingDown),
        }
    }

    /// Blocks until the store holds every entry journaled before the call: what a query or a
    /// backup must see.
    pub fn catch_up(&self) -> Result<(), EngineError> {
        let target = self.journaled.load(Ordering::Acquire);
        let (progress, applied) = &*self.progress;
        let guard = progress.lock().expect("audit lock");
        let (guard, _) = applied
            .wait_timeout_while(guard, QUERY_CATCH_UP_MAX, |progress| {
                progress.applied < target && progress.failed.is_none()
            })
            .expect("audit lock");
        if let Some(failed) = &guard.failed {
            return Err(EngineError::Audit(format!(
                "the audit entries are journaled but the store refuses them for now (the audit index thread keeps trying): {failed}"
            )));
        }
        if guard.applied < target {
            return Err(EngineError::Audit(format!(
                "the store is {} journal groups behind the audit journal after {} s; try again",
                target - guard.applied,
                QUERY_CATCH_UP_MAX.as_secs()
            )));
        }
        Ok(())
    }

    /// One pruning pass as the pruner runs it, at `now`: deletes every entry past the
    /// retention. Blocks; nothing when entries are kept forever.
    pub fn prune(&self, now: EpochMillis) -> Result<AuditBatchDone, EngineError> {
        Ok(prune_pass(&self.store, self.retention_days, now, &|| false)?)
    }

    /// A page of entries; blocks until the store holds what was journaled before the call.
    pub fn query(&self, query: &AuditQuery, after: Option<&[u8]>, page_size: usize) -> Result<AuditPage, EngineError> {
        self.catch_up()?;
        Ok(self.store.audit_page(query, after, page_size)?)
    }

    /// The share counters; blocks until the store holds what was journaled before the call.
    pub fn share_counts(&self, month: Option<&str>) -> Result<Vec<ShareCount>, EngineError> {
        self.catch_up()?;
        Ok(self.store.share_counts(month)?)
    }
}

/// The journal thread: takes the queued entries in groups, appends each group with one
/// fdatasync, answers its callers, and hands it to the index thread. Deletes the journal
/// segments the store holds durably (`durable`) before each append. After a failed append
/// it refuses every later entry: the journal's tail is then unknown.
fn journal_loop(
    mut wal: Wal<JournalGroup>,
    mut receiver: mpsc::Receiver<Pending>,
    to_index: std_mpsc::SyncSender<JournalGroup>,
    mut next_serial: u64,
    journaled: &AtomicU64,
    durable: &AtomicU64,
    durable_lists: &DurableTagLists,
) {
    let mut failed: Option<String> = None;
    let mut trimmed = 0;
    // The long tag lists this thread has journaled in full (bounded like `durable_lists`).
    let mut journaled_lists: HashSet<SharedList> = HashSet::new();
    while let Some(first) = receiver.blocking_recv() {
        let mut n_keys = first.0.n_keys();
        let mut group = vec![first];
        while group.len() < GROUP_ENTRIES_MAX && n_keys < GROUP_KEYS_MAX {
            match receiver.try_recv() {
                Ok(pending) => {
                    n_keys += pending.0.n_keys();
                    group.push(pending);
                }
                Err(_) => break,
            }
        }
        let (records, replies): (Vec<AuditRecord>, Vec<_>) = group.into_iter().unzip();
        if let Some(message) = &failed {
            for reply in replies {
                let _ = reply.send(Err(message.clone()));
            }
            continue;
        }
        let durable_now = durable.load(Ordering::Acquire);
        if durable_now > trimmed {
            match wal.trim(durable_now) {
                Ok(_) => trimmed = durable_now,
                Err(error) => tracing::warn!(%error, "cannot delete old audit journal segments; trying again later"),
            }
        }
        let mut listed_here = Vec::new();
        let entries = {
            let durable_lists = durable_lists.lock().expect("audit lock");
            records
                .into_iter()
                .map(|mut record| {
                    let list = shared_list(&record);
                    let tags_by_hash = list.is_some_and(|list| {
                        durable_lists.contains(&list) || journaled_lists.contains(&list) || listed_here.contains(&list)
                    });
                    if tags_by_hash {
                        record.tags = TagList::default();
                    } else if let Some(list) = list {
                        listed_here.push(list);
                    }
                    JournalEntry {
                        record,
                        tag_list: list.map(|(_, hash)| hash),
                        tags_by_hash,
                    }
                })
                .collect()
        };
        let group = JournalGroup {
            sequence: wal.next_sequence(),
            first_serial: next_serial,
            entries,
        };
        let answer = match wal.append(std::slice::from_ref(&group)) {
            Ok(()) => {
                next_serial += group.entries.len() as u64;
                journaled.store(group.sequence, Ordering::Release);
                if journaled_lists.len() + listed_here.len() > DURABLE_TAG_LISTS_MAX {
                    journaled_lists.clear();
                }
                journaled_lists.extend(listed_here);
                Ok(())
            }
            Err(error @ WalError::TailUnknown(_)) => {
                tracing::error!(%error, n_entries = group.entries.len(), "cannot journal audit entries, and the journal's tail is unknown; every later audited call is refused until a restart");
                let message = format!("the audit journal failed: {error}");
                failed = Some(message.clone());
                Err(message)
            }
            Err(error) => {
                // Nothing of the group is in the journal: its calls are refused, later ones
                // are journaled again (once the disk has room, say).
                tracing::error!(%error, n_entries = group.entries.len(), "cannot journal audit entries; their calls are refused");
                Err(format!("the audit journal failed: {error}"))
            }
        };
        let journaled_ok = answer.is_ok();
        for reply in replies {
            let _ = reply.send(answer.clone());
        }
        if journaled_ok && to_index.send(group).is_err() {
            // The index thread has stopped; the journal keeps the group for the next start.
            tracing::error!("the audit index thread has stopped; journaled entries wait for the next start");
        }
    }
}

/// The index thread: applies journaled groups to the store, as many as are waiting in one
/// batch (bounded by `GROUP_KEYS_MAX`), and checkpoints the store every `interval` it has
/// applied anything, publishing the last group the checkpoint made durable.
fn index_loop(
    store: &Store,
    receiver: std_mpsc::Receiver<JournalGroup>,
    progress: &(Mutex<IndexProgress>, Condvar),
    durable: &AtomicU64,
    durable_lists: &DurableTagLists,
    closing: &AtomicBool,
    interval: Duration,
) {
    let mut checkpoints = Checkpoints {
        last: Instant::now(),
        applied_since: None,
        lists_since: Vec::new(),
        durable,
        durable_lists,
        interval,
    };
    let mut carried: Option<JournalGroup> = None;
    let mut failed = false;
    loop {
        let first = match carried.take() {
            Some(group) => group,
            None => match receiver.recv_timeout(interval.max(Duration::from_millis(1))) {
                Ok(group) => group,
                Err(std_mpsc::RecvTimeoutError::Timeout) => {
                    checkpoints.run_if_due(store);
                    continue;
                }
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            },
        };
        if failed {
            // Left for the next start, which applies it from the journal.
            continue;
        }
        let mut last_sequence = first.sequence;
        let first_serial = first.first_serial;
        let n_keys_of = |entries: &[JournalEntry]| entries.iter().map(|entry| entry.record.n_keys()).sum::<usize>();
        let mut n_keys = n_keys_of(&first.entries);
        let mut entries = first.entries;
        while n_keys < GROUP_KEYS_MAX {
            match receiver.try_recv() {
                Ok(group) if group.first_serial == first_serial + entries.len() as u64 => {
                    n_keys += n_keys_of(&group.entries);
                    last_sequence = group.sequence;
                    entries.extend(group.entries);
                }
                Ok(group) => {
                    carried = Some(group);
                    break;
                }
                Err(_) => break,
            }
        }
        let new_lists: Vec<SharedList> = entries
            .iter()
            .filter(|entry| !entry.tags_by_hash)
            .filter_map(|entry| entry.tag_list.map(|hash| (audit_day(entry.record.at), hash)))
            .collect();
        let records = store_records(entries);
        let (state, applied) = progress;
        let mut retry_after = Duration::from_millis(100);
        loop {
            match store.append_audit_journaled(first_serial, &records, last_sequence) {
                Ok(()) => {
                    let mut state = state.lock().expect("audit lock");
                    state.applied = last_sequence;
                    state.failed = None;
                    checkpoints.applied_since = Some(last_sequence);
                    checkpoints.lists_since.extend(new_lists);
                    break;
                }
                Err(error) => {
                    tracing::error!(%error, n_entries = records.len(), retry_in_ms = retry_after.as_millis() as u64, "cannot apply journaled audit entries to the store; trying again (they are in the journal)");
                    state.lock().expect("audit lock").failed = Some(error.to_string());
                    applied.notify_all();
                    if closing.load(Ordering::Acquire) {
                        // The next start applies them from the journal.
                        failed = true;
                        break;
                    }
                    std::thread::sleep(retry_after);
                    retry_after = (retry_after * 2).min(Duration::from_secs(5));
                }
            }
        }
        applied.notify_all();
        checkpoints.run_if_due(store);
    }
    // At shutdown the engine's last checkpoint makes what was applied durable; the journal
    // behind it is deleted at the next start.
}

/// A journal group's entries as the store takes them: each with the hash of its tag list when
/// the store already holds that list.
fn store_records(entries: Vec<JournalEntry>) -> Vec<(AuditRecord, Option<[u8; 16]>)> {
    entries
        .into_iter()
        .map(|entry| {
            let stored = if entry.tags_by_hash { entry.tag_list } else { None };
            (entry.record, stored)
        })
        .collect()
}

/// The index thread's checkpoints of the store, for the journal's sake.
struct Checkpoints<'a> {
    last: Instant,
    /// The last group applied since the last checkpoint.
    applied_since: Option<u64>,
    /// The shared tag lists written (or found) since the last checkpoint.
    lists_since: Vec<SharedList>,
    /// Published after each checkpoint: the last group it made durable, and its lists.
    durable: &'a AtomicU64,
    durable_lists: &'a DurableTagLists,
    interval: Duration,
}

impl Checkpoints<'_> {
    fn run_if_due(&mut self, store: &Store) {
        let Some(applied) = self.applied_since else {
            return;
        };
        if self.last.elapsed() < self.interval {
            return;
        }
        self.last = Instant::now();
        match store.checkpoint() {
            Ok(()) => {
                self.durable.fetch_max(applied, Ordering::AcqRel);
                self.applied_since = None;
                let mut durable_lists = self.durable_lists.lock().expect("audit lock");
                if durable_lists.len() + self.lists_since.len() > DURABLE_TAG_LISTS_MAX {
                    durable_lists.clear();
                }
                durable_lists.extend(self.lists_since.drain(..));
            }
            Err(error) => {
                tracing::error!(%error, "cannot checkpoint the store for the audit journal; trying again later")
            }
        }
    }
}

/// Deletes the entries older than the retention at `now`, batch by batch, until none is left
/// or `stop_requested` says so between two batches. Logs a line when it deleted anything.
fn prune_pass(
    store: &Store,
    retention_days: u32,
    now: EpochMillis,
    stop_requested: &dyn Fn() -> bool,
) -> Result<AuditBatchDone, crate::store::StoreError> {
    let mut pass = AuditBatchDone::default();
    let Some(cutoff) = prune_cutoff(now, retention_days) else {
        pass.finished = true;
        return Ok(pass);
    };
    loop {
        let batch = store.prune_audit(cutoff)?;
        pass.n_entries += batch.n_entries;
        pass.n_index_keys += batch.n_index_keys;
        pass.n_tag_lists += batch.n_tag_lists;
        if batch.finished {
            pass.finished = true;
            break;
        }
        if stop_requested() {
            break;
        }
    }
    if pass.n_entries > 0 || pass.n_tag_lists > 0 {
        let cutoff_time = chrono::DateTime::from_timestamp_millis(cutoff)
            .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default();
        tracing::info!(
            n_entries = pass.n_entries,
            n_index_keys = pass.n_index_keys,
            n_tag_lists = pass.n_tag_lists,
            cutoff = %cutoff_time,
            retention_days,
            finished = pass.finished,
            "pruned audit entries past the retention"
        );
    }
    Ok(pass)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::kv::MemKv;
    use std::time::{Duration, Instant};

    #[track_caller]
    fn check_cutoff(now: EpochMillis, retention_days: u32, expected: Option<EpochMillis>) {
        assert_eq!(prune_cutoff(now, retention_days), expected);
    }

    #[test]
    fn the_cutoff_is_the_retention_before_now() {
        let now = 1_768_000_000_000;
        check_cutoff(now, 0, None);
        check_cutoff(now, 1, Some(now - 86_400_000));
        check_cutoff(now, 1_095, Some(now - 1_095 * 86_400_000));
        check_cutoff(0, 36_500, Some(-36_500 * 86_400_000));
        check_cutoff(i64::MIN + 1, 1, Some(i64::MIN));
    }

    fn entry(at: EpochMillis, caller: &str) -> AuditRecord {
        AuditRecord {
            at,
            caller: caller.into(),
            purpose: "case-1".into(),
            action: "ProfileService/GetProfile".into(),
            outcome: "OK".into(),
            persons: vec!["P1".into()],
            tags: vec!["name".to_string()].into(),
            shares: 1,
            detail: String::new(),
        }
    }

    fn callers(store: &Store) -> Vec<String> {
        let everything = everything();
        let by_person = AuditQuery {
            person: Some("P1".into()),
            ..everything.clone()
        };
        let page = store.audit_page(&everything, None, 100).expect("page");
        let indexed = store.audit_page(&by_person, None, 100).expect("page");
        assert_eq!(page.entries, indexed.entries, "the index follows the entries");
        page.entries.into_iter().map(|entry| entry.caller).collect()
    }

    fn everything() -> AuditQuery {
        AuditQuery {
            from: 0,
            to: i64::MAX,
            ..AuditQuery::default()
        }
    }

    fn days(n: i64) -> i64 {
        n * DAY_MILLIS
    }

    fn journal_dir() -> tempfile::TempDir {
        tempfile::tempdir().expect("temp dir")
    }

    fn journal_config(dir: &tempfile::TempDir) -> JournalConfig {
        JournalConfig {
            dir: dir.path().join("audit-journal"),
            segment_bytes_max: 1 << 20,
            checkpoint_interval: Duration::from_secs(30),
        }
    }

    /// An audit log on a new store whose index thread checkpoints every millisecond, so that
    /// the lists it writes are soon held durably; with its journal directory and configuration.
    fn checkpointing_every_ms() -> (Arc<Store>, tempfile::TempDir, JournalConfig, AuditLog) {
        let store = Arc::new(Store::open(Box::new(MemKv::default())).expect("store"));
        let journal = journal_dir();
        let config = JournalConfig {
            checkpoint_interval: Duration::from_millis(1),
            ..journal_config(&journal)
        };
        let audit = AuditLog::start(Arc::clone(&store), &AuditConfig::default(), config.clone()).expect("start");
        (store, journal, config, audit)
    }

    /// Every entry the journal in `config.dir` holds, in order.
    fn journal_entries(config: &JournalConfig) -> Vec<JournalEntry> {
        let groups = Wal::<JournalGroup>::open(&config.dir, 1 << 20, 0)
            .expect("journal")
            .pending;
        groups.into_iter().flat_map(|group| group.entries).collect()
    }

    /// Entries as the journal holds them before their tag lists are known to the store.
    fn journaled(records: Vec<AuditRecord>) -> Vec<JournalEntry> {
        records
            .into_iter()
            .map(|record| JournalEntry {
                tag_list: shared_tag_list_hash(&record.tags),
                record,
                tags_by_hash: false,
            })
            .collect()
    }

    fn full_read(at: EpochMillis) -> AuditRecord {
        AuditRecord {
            tags: (0..40).map(|n| format!("d{n:02}.tag")).collect(),
            ..entry(at, "portal")
        }
    }

    /// Shared lists are kept per day: the first entry of a new day holds its list in full
    /// though the store holds the same list for the day before, and the store keeps it again.
    #[test]
    fn a_new_day_journals_its_tag_list_in_full() {
        let (store, _journal, config, audit) = checkpointing_every_ms();
        let now = chrono::Utc::now().timestamp_millis();
        let yesterday_evening = now - now % DAY_MILLIS - 1_000;
        let runtime = runtime();
        runtime
            .block_on(audit.append(full_read(yesterday_evening)))
            .expect("append");
        audit.catch_up().expect("caught up");
        std::thread::sleep(Duration::from_millis(20));
        runtime
            .block_on(audit.append(full_read(yesterday_evening + 2_000)))
            .expect("append");
        runtime
            .block_on(audit.append(full_read(yesterday_evening + 3_000)))
            .expect("append");
        audit.catch_up().expect("caught up");
        let page = audit.query(&everything(), None, 10).expect("query");
        assert_eq!(page.entries.len(), 3);
        assert_eq!(page.entries[1], full_read(yesterday_evening + 2_000));
        audit.close();
        let entries = journal_entries(&config);
        let in_full: Vec<bool> = entries.iter().map(|entry| !entry.tags_by_hash).collect();
        assert_eq!(in_full, [true, true, false]);
        let day = audit_day(yesterday_evening);
        assert_eq!(store.audit_tag_list_days().expect("lists"), [day, day + 1]);
    }

    /// Once a checkpoint has made a long tag list durable in the store, the journal names it
    /// by its hash instead of holding it again; the entries read back whole, and a start
    /// applies such an entry from the journal.
    #[test]
    fn the_journal_names_a_tag_list_the_store_holds_by_its_hash() {
        let (store, _journal, config, audit) = checkpointing_every_ms();
        // Midday today: the entries below are of one day.
        let now = chrono::Utc::now().timestamp_millis();
        let now = now - now % DAY_MILLIS + DAY_MILLIS / 2;
        let runtime = runtime();
        runtime.block_on(audit.append(full_read(now))).expect("append");
        audit.catch_up().expect("caught up");
        // The index thread checkpoints right after it applies (the interval is 1 ms).
        std::thread::sleep(Duration::from_millis(20));
        runtime.block_on(audit.append(full_read(now + 1))).expect("append");
        audit.catch_up().expect("caught up");
        let everything = everything();
        let page = audit.query(&everything, None, 10).expect("query");
        assert_eq!(page.entries, vec![full_read(now), full_read(now + 1)]);
        audit.close();
        let entries = journal_entries(&config);
        assert_eq!(entries.len(), 2);
        assert!(!entries[0].tags_by_hash && entries[0].record.tags.len() == 40);
        assert!(
            entries[1].tags_by_hash && entries[1].record.tags.is_empty(),
            "{:?}",
            entries[1]
        );

        // A start applies such an entry the store lacks, with its list from the store.
        let mut wal = Wal::<JournalGroup>::open(&config.dir, 1 << 20, 0).expect("journal").wal;
        let mut later = entries[1].clone();
        later.record.at = now + 2;
        wal.append(&[JournalGroup {
            sequence: wal.next_sequence(),
            first_serial: 2,
            entries: vec![later],
        }])
        .expect("journal");
        drop(wal);
        let audit = AuditLog::start(Arc::clone(&store), &AuditConfig::default(), config.clone()).expect("restart");
        let page = audit.query(&everything, None, 10).expect("query");
        assert_eq!(page.entries.len(), 3);
        assert_eq!(page.entries[2], full_read(now + 2));
        audit.close();

        // An entry naming a list the store lacks is damage, not an entry to drop quietly.
        let other = journal_dir();
        let other_config = journal_config(&other);
        let mut wal = Wal::<JournalGroup>::open(&other_config.dir, 1 << 20, 0)
            .expect("journal")
            .wal;
        wal.append(&[JournalGroup {
            sequence: 1,
            first_serial: 0,
            entries: vec![entries[1].clone()],
        }])
        .expect("journal");
        drop(wal);
        let empty = Arc::new(Store::open(Box::new(MemKv::default())).expect("store"));
        let error = AuditLog::start(empty, &AuditConfig::default(), other_config)
            .err()
            .expect("refused");
        assert!(error.to_string().contains("shared tag list the store lacks"), "{error}");
    }

    /// A long tag list is journaled in full once: later entries name it by its hash even
    /// before a checkpoint. A store that lost every entry (a crash before any checkpoint)
    /// gets them all back from the journal, the list from the entry that holds it.
    #[test]
    fn the_journal_holds_a_tag_list_once_and_a_store_that_lost_it_gets_it_back() {
        let store = Arc::new(Store::open(Box::new(MemKv::default())).expect("store"));
        let journal = journal_dir();
        let config = journal_config(&journal);
        let audit = AuditLog::start(Arc::clone(&store), &AuditConfig::default(), config.clone()).expect("start");
        let now = chrono::Utc::now().timestamp_millis();
        let runtime = runtime();
        for at in now..now + 3 {
            runtime.block_on(audit.append(full_read(at))).expect("append");
        }
        audit.catch_up().expect("caught up");
        audit.close();
        let entries = journal_entries(&config);
        assert_eq!(entries.len(), 3);
        assert!(!entries[0].tags_by_hash && entries[0].record.tags.len() == 40);
        for later in &entries[1..] {
            assert!(later.tags_by_hash && later.record.tags.is_empty(), "{later:?}");
        }

        let lost_everything = Arc::new(Store::open(Box::new(MemKv::default())).expect("store"));
        let audit = AuditLog::start(lost_everything, &AuditConfig::default(), config).expect("restart");
        let page = audit.query(&everything(), None, 10).expect("query");
        assert_eq!(page.entries, (now..now + 3).map(full_read).collect::<Vec<_>>());
        audit.close();
    }

    /// A batch the store refuses is tried again until it takes it, once; meanwhile queries
    /// say why they cannot answer, and the call itself was answered from the journal.
    #[test]
    fn a_batch_the_store_refuses_is_tried_again() {
        let fails = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let kv = crate::store::kv::FailingKv::new(MemKv::default(), Arc::clone(&fails));
        let store = Arc::new(Store::open(Box::new(kv)).expect("store"));
        let journal = journal_dir();
        let audit = AuditLog::start(
            Arc::clone(&store),
            &AuditConfig {
                retention_days: 0,
                ..AuditConfig::default()
            },
            journal_config(&journal),
        )
        .expect("start");
        // The log has started: only the index thread's batches fail from here.
        fails.store(2, Ordering::Release);
        let now = chrono::Utc::now().timestamp_millis();
        runtime()
            .block_on(audit.append(entry(now, "portal")))
            .expect("answered from the journal");
        let mut refused = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match audit.catch_up() {
                Ok(()) => break,
                Err(error) => refused = Some(error.to_string()),
            }
            assert!(Instant::now() < deadline, "never applied: {refused:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let refused = refused.expect("a query during the failures is refused");
        assert!(refused.contains("injected: the disk refuses the write"), "{refused}");
        assert_eq!(callers(&store), ["portal"]);
        audit.close();
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime")
    }

    /// An answered entry is in the journal, and a query right after sees it: the query waits
    /// for the index thread.
    #[test]
    fn a_query_sees_every_entry_answered_before_it() {
        let store = Arc::new(Store::open(Box::new(MemKv::default())).expect("store"));
        let journal = journal_dir();
        let audit =
            AuditLog::start(Arc::clone(&store), &AuditConfig::default(), journal_config(&journal)).expect("start");
        let now = chrono::Utc::now().timestamp_millis();
        runtime().block_on(async {
            for n in 0..50 {
                audit.append(entry(now + n, &format!("c{n}"))).await.expect("append");
            }
        });
        let everything = everything();
        let page = audit.query(&everything, None, 100).expect("query");
        assert_eq!(page.entries.len(), 50);
        let counts = audit.share_counts(None).expect("counts");
        assert_eq!(counts.iter().map(|count| count.n_calls).sum::<u64>(), 50);
        audit.close();
        let journaled = Wal::<JournalGroup>::open(&journal_config(&journal).dir, 1 << 20, 0).expect("journal");
        let n_journaled: usize = journaled.pending.iter().map(|group| group.entries.len()).sum();
        assert_eq!(n_journaled, 50, "every answered entry is in the journal");
    }

    /// Groups journaled but never applied (the process died between the two) are applied at
    /// the next start, with their serials, and only those.
    #[test]
    fn the_next_start_applies_what_the_journal_holds_and_the_store_lacks() {
        let journal = journal_dir();
        let config = journal_config(&journal);
        let now = chrono::Utc::now().timestamp_millis();
        let store = Arc::new(Store::open(Box::new(MemKv::default())).expect("store"));
        store
            .append_audit_journaled(0, &[(entry(now, "applied"), None)], 1)
            .expect("append");
        let mut wal = Wal::<JournalGroup>::open(&config.dir, 1 << 20, 0).expect("journal").wal;
        let groups = [
            JournalGroup {
                sequence: 1,
                first_serial: 0,
                entries: journaled(vec![entry(now, "applied")]),
            },
            JournalGroup {
                sequence: 2,
                first_serial: 1,
                entries: journaled(vec![entry(now + 1, "lost-1"), entry(now + 2, "lost-2")]),
            },
        ];
        wal.append(&groups).expect("journal");
        drop(wal);
        let audit = AuditLog::start(Arc::clone(&store), &AuditConfig::default(), config.clone()).expect("start");
        assert_eq!(callers(&store), ["applied", "lost-1", "lost-2"]);
        assert_eq!(store.audit_journal_applied().expect("applied"), 2);
        runtime()
            .block_on(audit.append(entry(now + 3, "after")))
            .expect("append");
        audit.catch_up().expect("caught up");
        assert_eq!(callers(&store), ["applied", "lost-1", "lost-2", "after"]);
        audit.close();
        // Started again on the same store, nothing is applied twice.
        let audit = AuditLog::start(Arc::clone(&store), &AuditConfig::default(), config).expect("restart");
        assert_eq!(callers(&store), ["applied", "lost-1", "lost-2", "after"]);
        audit.close();
    }

    /// A pass at an injected time deletes what is past the retention then. The entries lie in
    /// the future, so the pruner's own pass at the real time leaves them.
    #[test]
    fn a_pass_at_an_injected_now_deletes_past_the_retention() {
        let store = Arc::new(Store::open(Box::new(MemKv::default())).expect("store"));
        let now = chrono::Utc::now().timestamp_millis() + days(1_000);
        store
            .append_audit(
                0,
                &[
                    entry(now - days(31), "old"),
                    entry(now - days(30) - 1, "just-old"),
                    entry(now - days(30), "kept"),
                    entry(now - days(1), "recent"),
                ],
            )
            .expect("append");
        let config = AuditConfig {
            retention_days: 30,
            prune_interval_ms: 3_600_000,
        };
        let journal = journal_dir();
        let audit = AuditLog::start(Arc::clone(&store), &config, journal_config(&journal)).expect("start");
        assert_eq!(callers(&store), ["old", "just-old", "kept", "recent"]);
        let pass = audit.prune(now).expect("prune");
        assert_eq!((pass.n_entries, pass.n_index_keys, pass.finished), (2, 4, true));
        assert_eq!(callers(&store), ["kept", "recent"]);
        assert_eq!(audit.prune(now).expect("prune").n_entries, 0);
        assert_eq!(audit.prune(now + days(30)).expect("prune").n_entries, 2);
        assert_eq!(callers(&store), Vec::<String>::new());
        assert_eq!(
            store
                .share_counts(None)
                .expect("counts")
                .iter()
                .map(|count| count.n_calls)
                .sum::<u64>(),
            4
        );
        audit.close();
    }

    /// The pruner passes at start, then every interval; `close` stops it at once, not at the
    /// end of its interval. With a retention of 0 nothing is pruned.
    #[test]
    fn the_pruner_runs_at_start_and_stops_at_close() {
        let store = Arc::new(Store::open(Box::new(MemKv::default())).expect("store"));
        let now = chrono::Utc::now().timestamp_millis();
        store
            .append_audit(0, &[entry(now - days(40), "old"), entry(now - days(1), "recent")])
            .expect("append");
        let forever = AuditConfig {
            retention_days: 0,
            prune_interval_ms: 1,
        };
        let journal = journal_dir();
        let audit = AuditLog::start(Arc::clone(&store), &forever, journal_config(&journal)).expect("start");
        assert_eq!(audit.prune(now + days(10_000)).expect("prune").n_entries, 0);
        std::thread::sleep(Duration::from_millis(50));
        audit.close();
        assert_eq!(callers(&store), ["old", "recent"]);

        let config = AuditConfig {
            retention_days: 30,
            prune_interval_ms: 3_600_000,
        };
        let audit = AuditLog::start(Arc::clone(&store), &config, journal_config(&journal)).expect("start");
        let deadline = Instant::now() + Duration::from_secs(10);
        // Polled through the entries alone: `callers` also compares the entries with their
        // index, two reads the pruner may pass between.
        while store.audit_page(&everything(), None, 100).expect("page").entries.len() > 1 {
            assert!(Instant::now() < deadline, "the pruner did not pass at start");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(callers(&store), ["recent"]);
        let closing = Instant::now();
        audit.close();
        assert!(
            closing.elapsed() < Duration::from_secs(5),
            "close waited for the interval"
        );
    }
}
