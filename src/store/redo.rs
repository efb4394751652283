//! The redo log of the batches the committer applies key by key (`Store::commit_handed`).
//!
//! sled 0.34 applies an atomic batch under its process-wide lock, taken exclusively: while the
//! committer applied a batch of some 13,000 keys, every read of the store waited, the writer's
//! too, so the writer and the committer took turns instead of working at once. A batch is now
//! written to this log (one fdatasync), then applied one key at a time, which takes sled's lock
//! shared: the writer reads on meanwhile (through the batches it handed over, which the store's
//! half-applied keys cannot confuse), and the store's other readers wait for the batch as
//! before (`Store`'s `applying` lock). The batch's applied sequence is written last, so a crash
//! keeps a prefix of the batches written this way followed by part of one, and the sequence
//! names the last whole one. At the next start the entries after it are applied again, whole,
//! before the write-ahead log is replayed: a batch's writes are exact values, so writing them
//! again over a part of themselves gives the batch.
//!
//! An entry is kept until a checkpoint of the store covers its sequence.
//!
//! Owns the log's entries and their trimming. Must not: decide what a batch holds.

use super::kv::WriteBatch;
use super::StoreError;
use crate::wal::{LogEntry, Wal};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::Path;

/// One batch as the log holds it.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct RedoEntry {
    /// The log's own sequence (dense, from 1).
    sequence: u64,
    /// The write-ahead-log sequence the batch applies: the store's applied sequence once the
    /// batch is in.
    pub(super) applied: u64,
    pub(super) writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl LogEntry for RedoEntry {
    const LOG: &'static str = "redo log";

    fn sequence(&self) -> u64 {
        self.sequence
    }

    fn decode(payload: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(payload)
    }
}

pub(super) struct RedoLog {
    wal: Wal<RedoEntry>,
    /// (own sequence, applied sequence) of every entry not trimmed yet, oldest first.
    held: VecDeque<(u64, u64)>,
}

impl RedoLog {
    /// Opens the log in `dir` (cutting off a torn last frame, a batch never applied) and
    /// returns every entry it holds, oldest first.
    pub(super) fn open(dir: &Path, segment_bytes_max: u64) -> Result<(RedoLog, Vec<RedoEntry>), StoreError> {
        let recovered = Wal::<RedoEntry>::open(dir, segment_bytes_max, 0)?;
        let held = recovered
            .pending
            .iter()
            .map(|entry| (entry.sequence, entry.applied))
            .collect();
        Ok((
            RedoLog {
                wal: recovered.wal,
                held,
            },
            recovered.pending,
        ))
    }

    /// Appends the batch that applies `applied` and returns once it is on stable storage; gives
    /// the batch back.
    pub(super) fn append(&mut self, applied: u64, batch: WriteBatch) -> Result<WriteBatch, StoreError> {
        let entry = RedoEntry {
            sequence: self.wal.next_sequence(),
            applied,
            writes: batch.writes,
        };
        self.wal.append(std::slice::from_ref(&entry))?;
        self.held.push_back((entry.sequence, applied));
        Ok(WriteBatch { writes: entry.writes })
    }

    /// Deletes the segments whose every entry applies a sequence at or below `durable` (one
    /// that a checkpoint made durable in the store). The segment being written stays.
    pub(super) fn trim(&mut self, durable: u64) -> Result<(), StoreError> {
        let mut covered = None;
        while let Some(&(sequence, applied)) = self.held.front() {
            if applied > durable {
                break;
            }
            covered = Some(sequence);
            self.held.pop_front();
        }
        if let Some(sequence) = covered {
            self.wal.trim(sequence)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: u8) -> WriteBatch {
        let mut batch = WriteBatch::default();
        batch.put(vec![b'k', n], vec![n; 100]);
        batch.delete(vec![b'd', n]);
        batch
    }

    #[test]
    fn entries_come_back_in_order_and_trimming_keeps_what_no_checkpoint_covers() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut log, entries) = RedoLog::open(dir.path(), 300).expect("open");
        assert!(entries.is_empty());
        for applied in 5..10 {
            let given_back = log.append(applied, batch(applied as u8)).expect("append");
            assert_eq!(given_back.writes, batch(applied as u8).writes);
        }
        log.trim(7).expect("trim");
        drop(log);
        let (_, entries) = RedoLog::open(dir.path(), 300).expect("reopen");
        let applied: Vec<u64> = entries.iter().map(|entry| entry.applied).collect();
        assert!(applied.ends_with(&[8, 9]), "{applied:?}");
        assert!(
            applied.len() < 5,
            "segments covered by sequence 7 are gone: {applied:?}"
        );
        assert_eq!(entries.last().expect("an entry").writes, batch(9).writes);
    }
}
