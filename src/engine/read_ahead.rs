//! The read-ahead thread. The writer applies a group's batches one after the other on one
//! core; while it does, this thread reads what the batches after the current one will look up
//! first (`apply::read_ahead`: each record's stored version, its candidates' postings, persons
//! and features, its name counts), and the store keeps those pairs for the writer
//! (`store/read_ahead.rs`). The writer then finds most of its reads of the store already done,
//! on the other core.
//!
//! The kept pairs are exact at all times (every commit drops what it writes), so what the
//! writer decides does not depend on how far this thread got: it only changes how long the
//! writer takes.
//!
//! Owns the thread and its queue. Must not: write to the store, or ever make the writer wait
//! (a full queue drops the batch; a batch the writer has passed is skipped).

use super::apply;
use crate::catalog::Catalog;
use crate::model::{EpochMillis, RawRecord};
use crate::store::Store;
use crate::wal::WalEntry;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Batches waiting to be read ahead; more are not read ahead.
const QUEUE_BATCHES_MAX: usize = 64;

/// One batch to read ahead.
struct Job {
    sequence: u64,
    received_at: EpochMillis,
    records: Vec<RawRecord>,
}

pub(super) struct ReadAheadThread {
    sender: Option<SyncSender<Job>>,
    /// The sequence of the batch the writer is applying.
    writer_at: Arc<AtomicU64>,
    closing: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ReadAheadThread {
    pub(super) fn start(store: Arc<Store>, catalog: Arc<Catalog>) -> std::io::Result<ReadAheadThread> {
        let (sender, receiver) = sync_channel(QUEUE_BATCHES_MAX);
        let writer_at = Arc::new(AtomicU64::new(0));
        let closing = Arc::new(AtomicBool::new(false));
        let thread = {
            let (writer_at, closing) = (Arc::clone(&writer_at), Arc::clone(&closing));
            std::thread::Builder::new()
                .name("popmaster-read-ahead".into())
                .spawn(move || run(&store, &catalog, &receiver, &writer_at, &closing))?
        };
        Ok(ReadAheadThread {
            sender: Some(sender),
            writer_at,
            closing,
            thread: Some(thread),
        })
    }

    /// Queues a logged group's batches (record batches only) to be read ahead, in order.
    pub(super) fn submit(&self, entries: &[WalEntry]) {
        let Some(sender) = &self.sender else { return };
        for entry in entries.iter().filter(|entry| !entry.records.is_empty()) {
            let job = Job {
                sequence: entry.sequence,
                received_at: entry.received_at,
                records: entry.records.clone(),
            };
            match sender.try_send(job) {
                Ok(()) => {}
                // Behind by a whole queue: the writer reads for itself.
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }

    /// The writer starts applying the batch `sequence`: batches before it are not read ahead.
    pub(super) fn writer_at(&self, sequence: u64) {
        self.writer_at.store(sequence, Ordering::Release);
    }
}

impl Drop for ReadAheadThread {
    fn drop(&mut self) {
        self.closing.store(true, Ordering::Release);
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(store: &Store, catalog: &Catalog, receiver: &Receiver<Job>, writer_at: &AtomicU64, closing: &AtomicBool) {
    let passed = |sequence: u64| writer_at.load(Ordering::Acquire) > sequence || closing.load(Ordering::Acquire);
    while let Ok(job) = receiver.recv() {
        if passed(job.sequence) {
            continue;
        }
        let mut txn = store.begin_read_ahead(job.sequence);
        for raw in job.records {
            // At the bound, wait for the writer to let go of what it has applied.
            while store.read_ahead_is_full() && !passed(job.sequence) {
                std::thread::sleep(Duration::from_millis(1));
            }
            if passed(job.sequence) {
                break;
            }
            if let Err(error) = apply::read_ahead(&mut txn, catalog, raw, job.received_at) {
                // Only a lost speed-up: the writer reads the store itself and meets the error
                // there, where it counts.
                tracing::warn!(%error, sequence = job.sequence, "reading ahead of the writer failed");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{apply, Engine};
    use crate::catalog::Catalog;
    use crate::config::Config;
    use crate::model::{PersonId, RawRecord, RecordKey, TagCode};
    use crate::resolve::Evidence;
    use crate::store::{ProfileEntry, Store};
    use crate::synth::{Generator, SynthConfig};
    use crate::wal::WalEntry;
    use std::collections::{BTreeMap, BTreeSet};

    const RECEIVED_AT: i64 = 1_700_000_000_000;
    const BATCH_RECORDS: usize = 50;

    /// What the write path decided and kept: each record's person and evidence, each person's
    /// profile.
    #[derive(Debug, PartialEq)]
    struct Outcome {
        mapping: Vec<(RecordKey, PersonId)>,
        evidence: BTreeMap<RecordKey, Option<Evidence>>,
        profiles: BTreeMap<PersonId, BTreeMap<TagCode, ProfileEntry>>,
    }

    fn outcome(store: &Store) -> Outcome {
        let mapping = store.mapping_page(None, usize::MAX).expect("mapping");
        let txn = store.begin();
        let evidence = mapping
            .iter()
            .map(|(key, _)| (key.clone(), txn.evidence(key).expect("evidence")))
            .collect();
        let persons: BTreeSet<&PersonId> = mapping.iter().map(|(_, person)| person).collect();
        let profiles = persons
            .into_iter()
            .map(|person| (person.clone(), txn.profile(person, &[]).expect("profile")))
            .collect();
        Outcome {
            mapping,
            evidence,
            profiles,
        }
    }

    /// Loads the records through the engine, many batches at once so that the writer groups
    /// them, reads ahead and hands batches to the committer while it prepares the next; returns
    /// what it kept, the batches' sequences and the read-ahead hits.
    fn load(records: &[RawRecord], read_ahead_bytes_max: usize) -> (Outcome, Vec<u64>, u64) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        config.wal.read_ahead_bytes_max = read_ahead_bytes_max;
        let engine = Engine::open(&config, Catalog::shipped()).expect("engine opens");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let sequences = runtime.block_on(async {
            let batches: Vec<_> = records
                .chunks(BATCH_RECORDS)
                .map(|batch| engine.ingest(RECEIVED_AT, batch.to_vec(), Vec::new(), None))
                .collect();
            futures::future::join_all(batches)
                .await
                .into_iter()
                .map(|applied| applied.expect("ingest").sequence)
                .collect::<Vec<u64>>()
        });
        let kept = outcome(&engine.store);
        let hits = engine.store.read_ahead_stats().n_hits;
        runtime.block_on(engine.shutdown());
        (kept, sequences, hits)
    }

    /// The same batches applied one after the other, each committed before the next starts.
    fn apply_in_turn(records: &[RawRecord], sequences: &[u64]) -> Outcome {
        let store = Store::open(Box::new(crate::store::kv::MemKv::default())).expect("opens");
        let catalog = Catalog::shipped();
        for (batch, &sequence) in records.chunks(BATCH_RECORDS).zip(sequences) {
            let entry = WalEntry {
                sequence,
                received_at: RECEIVED_AT,
                records: batch.to_vec(),
                rejected: vec![],
                model: None,
                steward: None,
                actor: None,
            };
            apply::apply_entry(&store, &catalog, entry).expect("applies");
        }
        outcome(&store)
    }

    #[test]
    fn reading_ahead_and_committing_on_another_thread_change_nothing_but_the_time() {
        let config = SynthConfig {
            seed: 11,
            n_persons: 600,
            ..SynthConfig::default()
        };
        let mut records: Vec<RawRecord> = Generator::new(config, &Catalog::shipped())
            .map(|synth| synth.to_raw_record())
            .collect();
        // Re-sent records, some changed: replaced versions, moved records, profile updates.
        let resent: Vec<RawRecord> = records
            .iter()
            .step_by(7)
            .enumerate()
            .map(|(idx, record)| {
                let mut record = record.clone();
                if idx % 2 == 0 {
                    record.observed_at = Some(RECEIVED_AT - 1_000);
                }
                record
            })
            .collect();
        records.extend(resent);
        let (with, sequences, hits) = load(&records, 64 << 20);
        let (without, _, no_hits) = load(&records, 0);
        let in_turn = apply_in_turn(&records, &sequences);
        assert!(with.mapping.len() > 1_000);
        // Compared part by part, so that a failure names the part and not every record.
        for (name, outcome) in [("reading ahead", &with), ("not reading ahead", &without)] {
            assert!(outcome.mapping == in_turn.mapping, "{name}: records placed otherwise");
            assert!(outcome.evidence == in_turn.evidence, "{name}: other evidence");
            assert!(outcome.profiles == in_turn.profiles, "{name}: other profiles");
        }
        assert!(hits > 0, "the writer found reads done ahead");
        assert_eq!(no_hits, 0);
    }
}
