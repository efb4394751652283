//! Backups of the running service, and restores into a new data directory.
//!
//! A backup is a consistent snapshot of the store (`Store::open_snapshot`: copy-on-write, so
//! ingest goes on while it is read) written pair by pair through the `KvStore` boundary into a
//! backup directory (`crate::backup`), never a copy of sled's files. Its own thread reads it;
//! the writer thread never waits for more than one bounded page read.
//!
//! A restore runs offline: it checks the whole backup before writing anything, then loads the
//! pairs into a fresh store. It writes no write-ahead log (the first one opens after the
//! backup's applied sequence) and no index (rebuilt from the store's persons at the next start).
//!
//! Must not: run a backup on the writer thread; speak proto.

use super::{Engine, EngineError};
use crate::backup::{self, BackupManifest, BackupWriter, StoreSummary};
use crate::store::{DumpMeta, SnapshotStats, StoreError, StoreLoader, FORMAT_VERSION, UPGRADABLE_FORMAT_VERSION};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// How far a running backup is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackupProgress {
    pub n_keys: u64,
    /// Bytes of keys and values written.
    pub n_bytes: u64,
    /// Records and persons the snapshot holds (known from the start).
    pub n_records: u64,
    pub n_persons: u64,
    pub elapsed: Duration,
}

/// A finished backup.
#[derive(Debug, Clone)]
pub struct BackupDone {
    pub manifest: BackupManifest,
    pub elapsed: Duration,
    /// What keeping the snapshot cost the write path.
    pub cost: SnapshotStats,
}

/// A backup running on its own thread.
pub struct BackupRun {
    pub progress: watch::Receiver<BackupProgress>,
    pub finished: oneshot::Receiver<Result<BackupDone, EngineError>>,
}

impl Engine {
    /// Starts a backup of the store into `dir` (absolute, absent or empty, outside the data
    /// directory). Returns once the snapshot is open: from then on the backup holds exactly
    /// what the store held at that moment (every audit entry journaled before the call
    /// included), whatever is written meanwhile.
    pub fn start_backup(&self, dir: PathBuf) -> Result<BackupRun, EngineError> {
        backup::check_target(&dir)?;
        if is_inside(&dir, &self.config.data_dir) {
            return Err(EngineError::InvalidArgument(format!(
                "{} is inside the data directory; back up to a directory outside it",
                dir.display()
            )));
        }
        // The audit entries journaled so far belong in the backup: the store must hold them.
        // A running backup is said first: the audit's commits may be waiting for it.
        if self.store.snapshot_is_open() {
            return Err(running_backup());
        }
        self.audit.catch_up()?;
        let snapshot = self
            .store
            .open_snapshot(self.config.backup.preimage_bytes_max)
            .map_err(|error| match error {
                StoreError::SnapshotOpen => running_backup(),
                other => other.into(),
            })?;
        let writer = BackupWriter::create(&dir)?;
        let info = snapshot.info();
        let (progress_sender, progress) = watch::channel(BackupProgress {
            n_records: info.n_records,
            n_persons: info.n_persons,
            ..BackupProgress::default()
        });
        let (done, finished) = oneshot::channel();
        let page_keys = self.config.backup.page_keys;
        let cancelled = Arc::clone(&self.backup_cancelled);
        tracing::info!(
            dir = %dir.display(),
            applied_sequence = info.applied_sequence,
            n_records = info.n_records,
            "backup started"
        );
        std::thread::Builder::new()
            .name("popmaster-backup".into())
            .spawn(move || {
                let started = Instant::now();
                let result = dump(snapshot, writer, page_keys, &cancelled, &progress_sender, started);
                match &result {
                    Ok(finished) => tracing::info!(
                        applied_sequence = finished.manifest.applied_sequence,
                        n_keys = finished.manifest.n_keys,
                        n_bytes = finished.manifest.n_bytes,
                        elapsed_ms = finished.elapsed.as_millis() as u64,
                        n_commits_meanwhile = finished.cost.n_commits,
                        n_preimages = finished.cost.n_preimages,
                        preimage_bytes_peak = finished.cost.preimage_bytes_peak,
                        commit_wait_max_us = finished.cost.commit_wait_max.as_micros() as u64,
                        "backup written"
                    ),
                    Err(error) => tracing::error!(%error, "backup failed; its partial files were removed"),
                }
                let _ = done.send(result);
            })
            .map_err(|source| EngineError::Thread {
                thread: "backup",
                source,
            })?;
        Ok(BackupRun { progress, finished })
    }
}

fn dump(
    mut snapshot: crate::store::Snapshot,
    mut writer: BackupWriter,
    page_keys: usize,
    cancelled: &AtomicBool,
    progress: &watch::Sender<BackupProgress>,
    started: Instant,
) -> Result<BackupDone, EngineError> {
    let info = snapshot.info();
    while let Some(page) = snapshot.next_page(page_keys)? {
        if cancelled.load(Ordering::Acquire) {
            // Dropping the writer removes what it wrote.
            return Err(EngineError::ShuttingDown);
        }
        for (key, value) in &page {
            writer.append(key, value)?;
        }
        progress.send_modify(|progress| {
            progress.n_keys = writer.n_keys();
            progress.n_bytes = writer.n_bytes();
            progress.elapsed = started.elapsed();
        });
    }
    let cost = snapshot.stats();
    // The snapshot is no longer needed while the files are made durable.
    drop(snapshot);
    let manifest = writer.finish(StoreSummary {
        store_format: info.format,
        applied_sequence: info.applied_sequence,
        change_sequence: info.change_sequence,
        n_records: info.n_records,
        n_persons: info.n_persons,
    })?;
    Ok(BackupDone {
        manifest,
        elapsed: started.elapsed(),
        cost,
    })
}

/// Whether `path` is `dir` or below it, comparing what exists of both after resolving links.
fn is_inside(path: &Path, dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    // The backup directory may not exist yet: resolve its nearest existing ancestor.
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name().map(|name| name.to_os_string()), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return false,
        }
    }
    let Ok(mut resolved) = existing.canonicalize() else {
        return false;
    };
    resolved.extend(rest.into_iter().rev());
    resolved.starts_with(&dir)
}

/// Where a restore is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreStage {
    /// Reading the whole backup and checking it; nothing is written yet.
    Verifying,
    /// Writing the pairs into the new store.
    Writing,
}

/// Restores the backup in `backup_dir` into a new data directory `data_dir` (absolute, absent
/// or empty). Checks the manifest and every frame of the dump first and writes nothing from a
/// damaged backup; then loads the store, makes it durable and opens it once to check it.
/// `progress` hears the stage, the dump bytes read and the dump's size.
pub fn restore(
    backup_dir: &Path,
    data_dir: &Path,
    cache_capacity_bytes: u64,
    progress: &mut dyn FnMut(RestoreStage, u64, u64),
) -> Result<BackupManifest, EngineError> {
    backup::check_target(data_dir)?;
    let manifest = backup::read_manifest(backup_dir, UPGRADABLE_FORMAT_VERSION..=FORMAT_VERSION)?;
    let mut meta = DumpMeta::default();
    backup::read_dump::<EngineError>(backup_dir, &manifest, |key, value, bytes_read| {
        meta.observe(key, value)?;
        progress(RestoreStage::Verifying, bytes_read, manifest.dump_bytes);
        Ok(())
    })?;
    let expected = DumpMeta {
        format: Some(manifest.store_format),
        applied_sequence: manifest.applied_sequence,
        change_sequence: manifest.change_sequence,
    };
    if meta != expected {
        return Err(backup::BackupError::Mismatch {
            what: format!(
                "the dump's metadata says store format {:?}, applied sequence {}, change sequence {}; the manifest says {}, {}, {}",
                meta.format,
                meta.applied_sequence,
                meta.change_sequence,
                manifest.store_format,
                manifest.applied_sequence,
                manifest.change_sequence
            ),
        }
        .into());
    }
    backup::create_target(data_dir)?;
    // The store goes where `Engine::open` looks for it; no `wal/`, no `index/`.
    let store_dir = data_dir.join("store");
    let mut loader = StoreLoader::create_sled(&store_dir, cache_capacity_bytes)?;
    backup::read_dump::<EngineError>(backup_dir, &manifest, |key, value, bytes_read| {
        loader.put(key, value)?;
        progress(RestoreStage::Writing, bytes_read, manifest.dump_bytes);
        Ok(())
    })?;
    let store = loader.finish()?;
    let applied_sequence = store.applied_sequence()?;
    drop(store);
    if applied_sequence != manifest.applied_sequence {
        return Err(EngineError::Store(StoreError::Corrupt {
            kind: "applied sequence",
            message: format!(
                "the restored store says {applied_sequence}, the backup {}",
                manifest.applied_sequence
            ),
        }));
    }
    backup::fsync_dir(data_dir)?;
    Ok(manifest)
}

fn running_backup() -> EngineError {
    EngineError::FailedPrecondition("a backup is already running; wait for it to finish".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_the_data_directory_are_recognized() {
        let temp = tempfile::tempdir().expect("temp dir");
        let data = temp.path().join("data");
        std::fs::create_dir_all(data.join("store")).expect("mkdir");
        assert!(is_inside(&data, &data));
        assert!(is_inside(&data.join("store"), &data));
        assert!(is_inside(&data.join("new").join("deeper"), &data));
        assert!(is_inside(&data.join("store").join("..").join("x"), &data));
        assert!(!is_inside(&temp.path().join("backup"), &data));
        assert!(!is_inside(&temp.path().join("data-backup"), &data));
    }
}
