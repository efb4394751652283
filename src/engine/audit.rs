//! The audit writer: one thread that appends audit entries to the store in groups (one atomic
//! batch per group, with the month's share counters), and answers each caller once its entry
//! is applied, so that a read's answer never leaves before its audit entry is written. Its keys
//! are its own (`u/`, `m/shares/`, `m/audit_serial`); the write path never touches them.
//! Entries become durable with the store's next checkpoint, like everything sled holds.
//! Decides nothing about what is audited; that is the api's.

use super::EngineError;
use crate::store::{AuditPage, AuditQuery, AuditRecord, ShareCount, Store};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tokio::sync::{mpsc, oneshot};

/// Entries one group may hold: one store batch.
const GROUP_ENTRIES_MAX: usize = 1_024;
/// Entries waiting for the writer; callers wait when it is full.
const QUEUE_ENTRIES_MAX: usize = 8_192;

type Pending = (AuditRecord, oneshot::Sender<Result<(), String>>);

pub struct AuditLog {
    store: Arc<Store>,
    /// Taken at shutdown: later entries are refused.
    queue: Mutex<Option<mpsc::Sender<Pending>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl AuditLog {
    /// Starts the writer thread; it ends at `close`.
    pub fn start(store: Arc<Store>) -> Result<AuditLog, EngineError> {
        let mut next_serial = store.next_audit_serial()?;
        let (queue, mut receiver) = mpsc::channel::<Pending>(QUEUE_ENTRIES_MAX);
        let writer_store = Arc::clone(&store);
        let thread = std::thread::Builder::new()
            .name("popmaster-audit".into())
            .spawn(move || {
                while let Some(first) = receiver.blocking_recv() {
                    let mut group = vec![first];
                    while group.len() < GROUP_ENTRIES_MAX {
                        match receiver.try_recv() {
                            Ok(pending) => group.push(pending),
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
        Ok(AuditLog {
            store,
            queue: Mutex::new(Some(queue)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Writes what is queued and stops the writer; blocks until it has.
    pub fn close(&self) {
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

    pub fn query(&self, query: &AuditQuery, after: Option<&[u8]>, page_size: usize) -> Result<AuditPage, EngineError> {
        Ok(self.store.audit_page(query, after, page_size)?)
    }

    pub fn share_counts(&self, month: Option<&str>) -> Result<Vec<ShareCount>, EngineError> {
        Ok(self.store.share_counts(month)?)
    }
}
