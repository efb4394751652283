//! The audit writer: one thread that appends audit entries to the store in groups (one atomic
//! batch per group, each entry with its index keys, and the month's share counters), and
//! answers each caller once its entry is applied, so that a read's answer never leaves before
//! its audit entry is written; and the pruner: a second thread that deletes entries past the
//! retention (`audit.retention_days`) every `audit.prune_interval_ms`, in bounded batches,
//! keeping the share counters. Its keys are `u/`, `ui/`, `ut/`, `m/shares/` and
//! `m/audit_serial`. The write path also writes `u/` and `ui/` keys, the entries of changes in
//! the changes' own transactions, with serials of its own (high bit set), so the two never
//! write the same key (`ut/` lists are written whole, the same by anyone). These entries become
//! durable with the store's next checkpoint, like everything sled holds. Decides nothing about what is audited;
//! that is the api's.

use super::EngineError;
use crate::config::AuditConfig;
use crate::model::EpochMillis;
use crate::store::{AuditBatchDone, AuditPage, AuditQuery, AuditRecord, ShareCount, Store};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tokio::sync::{mpsc, oneshot};

/// Entries one group may hold: one store batch.
const GROUP_ENTRIES_MAX: usize = 1_024;
/// Keys one group may write, about: an entry writes one index key per person it names, and a
/// batch read names up to a thousand. The group ends after the entry that reaches it.
const GROUP_KEYS_MAX: usize = 65_536;
/// Entries waiting for the writer; callers wait when it is full.
const QUEUE_ENTRIES_MAX: usize = 8_192;

const DAY_MILLIS: i64 = 24 * 3_600 * 1_000;

type Pending = (AuditRecord, oneshot::Sender<Result<(), String>>);

/// The time before which entries are pruned at `now`, or `None` when they are kept forever
/// (`retention_days` 0).
pub fn prune_cutoff(now: EpochMillis, retention_days: u32) -> Option<EpochMillis> {
    (retention_days > 0).then(|| now.saturating_sub(i64::from(retention_days) * DAY_MILLIS))
}

pub struct AuditLog {
    store: Arc<Store>,
    retention_days: u32,
    /// Taken at shutdown: later entries are refused.
    queue: Mutex<Option<mpsc::Sender<Pending>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Dropped at shutdown: the pruner stops after its current batch.
    pruner_stop: Mutex<Option<std_mpsc::Sender<()>>>,
    pruner: Mutex<Option<JoinHandle<()>>>,
}

impl AuditLog {
    /// Starts the writer thread, and the pruner unless entries are kept forever; both end at
    /// `close`.
    pub fn start(store: Arc<Store>, config: &AuditConfig) -> Result<AuditLog, EngineError> {
        let mut next_serial = store.next_audit_serial()?;
        let (queue, mut receiver) = mpsc::channel::<Pending>(QUEUE_ENTRIES_MAX);
        let writer_store = Arc::clone(&store);
        let thread = std::thread::Builder::new()
            .name("popmaster-audit".into())
            .spawn(move || {
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
                    let result = writer_store.append_audit(next_serial, &records);
                    let answer = match result {
                        Ok(()) => {
                            next_serial += records.len() as u64;
                            Ok(())
                        }
                        Err(error) => {
                            tracing::error!(%error, n_entries = records.len(), "cannot write audit entries");
                            Err(error.to_string())
                        }
                    };
                    for reply in replies {
                        let _ = reply.send(answer.clone());
                    }
                }
            })
            .map_err(|source| EngineError::Thread {
                thread: "audit",
                source,
            })?;
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
            thread: Mutex::new(Some(thread)),
            pruner_stop: Mutex::new(pruner_stop),
            pruner: Mutex::new(pruner),
        })
    }

    /// Stops the pruner (after its current batch), writes what is queued and stops the
    /// writer; blocks until both have.
    pub fn close(&self) {
        drop(self.pruner_stop.lock().expect("audit lock").take());
        if let Some(pruner) = self.pruner.lock().expect("audit lock").take() {
            let _ = pruner.join();
        }
        drop(self.queue.lock().expect("audit lock").take());
        if let Some(thread) = self.thread.lock().expect("audit lock").take() {
            let _ = thread.join();
        }
    }

    /// Appends one entry and waits until it is written. An entry that cannot be written is an
    /// error: the caller must not answer as if it were audited.
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

    /// One pruning pass as the pruner runs it, at `now`: deletes every entry past the
    /// retention. Blocks; nothing when entries are kept forever.
    pub fn prune(&self, now: EpochMillis) -> Result<AuditBatchDone, EngineError> {
        Ok(prune_pass(&self.store, self.retention_days, now, &|| false)?)
    }

    pub fn query(&self, query: &AuditQuery, after: Option<&[u8]>, page_size: usize) -> Result<AuditPage, EngineError> {
        Ok(self.store.audit_page(query, after, page_size)?)
    }

    pub fn share_counts(&self, month: Option<&str>) -> Result<Vec<ShareCount>, EngineError> {
        Ok(self.store.share_counts(month)?)
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
        if batch.finished {
            pass.finished = true;
            break;
        }
        if stop_requested() {
            break;
        }
    }
    if pass.n_entries > 0 {
        let cutoff_time = chrono::DateTime::from_timestamp_millis(cutoff)
            .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default();
        tracing::info!(
            n_entries = pass.n_entries,
            n_index_keys = pass.n_index_keys,
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
            tags: vec!["name".into()],
            shares: 1,
            detail: String::new(),
        }
    }

    fn callers(store: &Store) -> Vec<String> {
        let everything = AuditQuery {
            from: 0,
            to: i64::MAX,
            ..AuditQuery::default()
        };
        let by_person = AuditQuery {
            person: Some("P1".into()),
            ..everything.clone()
        };
        let page = store.audit_page(&everything, None, 100).expect("page");
        let indexed = store.audit_page(&by_person, None, 100).expect("page");
        assert_eq!(page.entries, indexed.entries, "the index follows the entries");
        page.entries.into_iter().map(|entry| entry.caller).collect()
    }

    fn days(n: i64) -> i64 {
        n * DAY_MILLIS
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
        let audit = AuditLog::start(Arc::clone(&store), &config).expect("start");
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
        let audit = AuditLog::start(Arc::clone(&store), &forever).expect("start");
        assert_eq!(audit.prune(now + days(10_000)).expect("prune").n_entries, 0);
        std::thread::sleep(Duration::from_millis(50));
        audit.close();
        assert_eq!(callers(&store), ["old", "recent"]);

        let config = AuditConfig {
            retention_days: 30,
            prune_interval_ms: 3_600_000,
        };
        let audit = AuditLog::start(Arc::clone(&store), &config).expect("start");
        let deadline = Instant::now() + Duration::from_secs(10);
        while callers(&store).len() > 1 {
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
