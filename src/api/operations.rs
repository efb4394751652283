//! The operations calls at the gRPC edge: a backup of the running service with its progress,
//! and the export of every profile. Checks that each call is well-formed, maps between proto
//! and the engine, and bounds every stream; the work is the engine's.

use super::audit::{AuditNote, Auditor, RecentTagLists};
use super::auth::Identity;
use super::encoded::{self, EncodedChunk, EncodedProfile};
use super::error::to_status;
use super::{access, blocking, BoxStream};
use crate::engine::{BackupDone, BackupProgress, Engine, EngineError};
use crate::model::PersonId;
use crate::pb;
use crate::store::TagList;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// How often a backup's progress is sent.
const BACKUP_PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// Progress messages held for a slow client; more are dropped (the next one says it all).
const BACKUP_PROGRESS_BUFFER: usize = 4;

fn progress_to_pb(progress: &BackupProgress) -> pb::BackupProgress {
    let elapsed_ms = progress.elapsed.as_millis() as u64;
    pb::BackupProgress {
        n_keys_done: progress.n_keys,
        n_bytes_done: progress.n_bytes,
        n_records: progress.n_records,
        n_persons: progress.n_persons,
        elapsed_ms,
        bytes_per_second: (progress.n_bytes as f64 / progress.elapsed.as_secs_f64().max(1e-3)) as u64,
        done: None,
    }
}

fn done_to_pb(dir: &str, done: &BackupDone) -> pb::BackupProgress {
    let manifest = &done.manifest;
    let elapsed_ms = done.elapsed.as_millis() as u64;
    pb::BackupProgress {
        n_keys_done: manifest.n_keys,
        n_bytes_done: manifest.n_bytes,
        n_records: manifest.n_records,
        n_persons: manifest.n_persons,
        elapsed_ms,
        bytes_per_second: (manifest.n_bytes as f64 / done.elapsed.as_secs_f64().max(1e-3)) as u64,
        done: Some(pb::BackupManifest {
            dir: dir.to_string(),
            backup_format: manifest.backup_format,
            store_format: manifest.store_format,
            applied_sequence: manifest.applied_sequence,
            change_sequence: manifest.change_sequence,
            n_records: manifest.n_records,
            n_persons: manifest.n_persons,
            n_keys: manifest.n_keys,
            n_bytes: manifest.n_bytes,
            dump_bytes: manifest.dump_bytes,
            dump_crc32c: manifest.dump_crc32c,
            created_at: manifest.created_at.clone(),
            elapsed_ms,
            n_commits_during: done.cost.n_commits,
            commit_wait_max_micros: done.cost.commit_wait_max.as_micros() as u64,
        }),
    }
}

/// Starts a backup and streams its progress until it is durable. The backup runs on: a
/// client that goes away does not stop it (the server log says when it is written).
pub async fn backup(engine: Arc<Engine>, request: pb::BackupRequest) -> Result<BoxStream<pb::BackupProgress>, Status> {
    if request.dir.trim().is_empty() {
        return Err(Status::invalid_argument("dir is empty"));
    }
    let dir = request.dir;
    let target = PathBuf::from(&dir);
    let run = blocking(move || engine.start_backup(target)).await.map_err(to_status)?;
    let (sender, receiver) = mpsc::channel(BACKUP_PROGRESS_BUFFER);
    tokio::spawn(async move {
        let mut progress = run.progress;
        let mut finished = run.finished;
        let mut ticker = tokio::time::interval(BACKUP_PROGRESS_INTERVAL);
        loop {
            tokio::select! {
                result = &mut finished => {
                    let message = match result {
                        Ok(Ok(done)) => Ok(done_to_pb(&dir, &done)),
                        Ok(Err(error)) => Err(to_status(error)),
                        Err(_) => Err(Status::internal("the backup thread ended without an answer; see the server log")),
                    };
                    let _ = sender.send(message).await;
                    return;
                }
                _ = ticker.tick() => {
                    let current = progress_to_pb(&progress.borrow_and_update());
                    // A slow client misses intermediate progress, never the end.
                    let _ = sender.try_send(Ok(current));
                }
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(receiver)))
}

/// Streams every profile, a page of persons at a time, through a bounded channel: a slow
/// client stops the reading, and nothing is held for it but the channel. Each page is read and
/// encoded off the async workers, each profile straight from its stored groups
/// (`encoded::profile`), full or compact.
pub async fn export_profiles(
    engine: Arc<Engine>,
    identity: Identity,
    request: pb::ExportProfilesRequest,
    tag_lists: Arc<RecentTagLists>,
) -> Result<BoxStream<EncodedChunk>, Status> {
    let method = "ProfileService/ExportProfiles";
    let mask = access::read_mask(&identity, engine.catalog(), method, request.tag_mask)?;
    let grant = Arc::new(access::reader_grant(&identity, method)?.clone());
    let compact = request.compact;
    let config = engine.config();
    let (page_persons, buffer) = (config.export.page_persons, config.export.buffer_chunks);
    // A chunk is sent before it would pass half the message limit, so one profile more
    // always fits.
    let chunk_bytes_max = config.limits.message_bytes_max / 2;
    let (sender, receiver) = mpsc::channel(buffer);
    let audit = ChunkAudit {
        auditor: Auditor::new(Arc::clone(&engine)),
        identity,
    };
    let start_engine = Arc::clone(&engine);
    let change_sequence = blocking(move || start_engine.change_sequence())
        .await
        .map_err(to_status)?;
    tokio::spawn(async move {
        let mut after: Option<PersonId> = None;
        let mut start = Some(change_sequence);
        let mut pending = PendingChunk::default();
        let mut n_persons = 0u64;
        loop {
            let (page_engine, page_grant, page_lists) =
                (Arc::clone(&engine), Arc::clone(&grant), Arc::clone(&tag_lists));
            let page_after = after.clone();
            let page_mask = mask.clone();
            let page = blocking(move || {
                let (views, next) = page_engine.stored_profiles_page(page_after.as_ref(), page_persons, &page_mask)?;
                let mut exported = Vec::with_capacity(views.len());
                for view in &views {
                    let (profile, tags) = encoded::profile(&page_grant, page_engine.catalog(), view, compact)?;
                    exported.push(ExportedProfile {
                        person_id: view.person_id.to_string(),
                        tags: page_lists.list(&tags),
                        profile,
                    });
                }
                Ok::<_, EngineError>((exported, next))
            })
            .await;
            let (exported, next) = match page {
                Ok(page) => page,
                Err(error) => {
                    let _ = sender.send(Err(to_status(error))).await;
                    return;
                }
            };
            for profile in exported {
                // The field's tag and length prefix: a few bytes per profile.
                let profile_bytes = profile.profile.as_bytes().len() + 8;
                if !pending.is_empty()
                    && pending.chunk.len() + profile_bytes > chunk_bytes_max
                    && !send_chunk(&sender, &audit, std::mem::take(&mut pending), &mut start).await
                {
                    return;
                }
                pending.push(profile);
                n_persons += 1;
            }
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
            if !pending.is_empty() && !send_chunk(&sender, &audit, std::mem::take(&mut pending), &mut start).await {
                return;
            }
        }
        // The last chunk; also the first (with the start sequence) of an export of no one.
        if (!pending.is_empty() || start.is_some()) && !send_chunk(&sender, &audit, pending, &mut start).await {
            return;
        }
        tracing::debug!(n_persons, "profile export ended");
    });
    Ok(Box::pin(ReceiverStream::new(receiver)))
}

/// One profile of an export, encoded, with what its chunk's audit entry names of it.
struct ExportedProfile {
    person_id: String,
    profile: EncodedProfile,
    tags: TagList,
}

/// A chunk being filled, and what its audit entry will name: its persons and the union of
/// their tags.
#[derive(Default)]
struct PendingChunk {
    chunk: EncodedChunk,
    persons: Vec<String>,
    /// The first profile's tags: while every profile has the same (full profiles share one
    /// list), they are the union.
    first_tags: Option<TagList>,
    /// The union, once a profile's tags differ from the first's.
    union: Option<BTreeSet<String>>,
}

impl PendingChunk {
    fn is_empty(&self) -> bool {
        self.persons.is_empty()
    }

    fn push(&mut self, exported: ExportedProfile) {
        self.chunk.push_profile(&exported.profile);
        self.persons.push(exported.person_id);
        match &self.first_tags {
            None => self.first_tags = Some(exported.tags),
            Some(first) if self.union.is_none() && *first == exported.tags => {}
            Some(first) => self
                .union
                .get_or_insert_with(|| first.iter().cloned().collect())
                .extend(exported.tags.iter().cloned()),
        }
    }

    /// The chunk's audit note, and the chunk.
    fn into_parts(self) -> (AuditNote, EncodedChunk) {
        let tags = match (self.union, self.first_tags) {
            (Some(union), _) => union.into_iter().collect::<Vec<_>>().into(),
            (None, Some(first)) => first,
            (None, None) => TagList::default(),
        };
        (
            AuditNote::shared_profiles(self.persons, tags).with_detail("export chunk"),
            self.chunk,
        )
    }
}

/// Who an export shares its chunks with.
struct ChunkAudit {
    auditor: Auditor,
    identity: Identity,
}

/// Audits and sends one chunk; the first carries the change-feed sequence the export started
/// at. False when the client has gone, or the chunk's audit entry could not be written (the
/// stream then ends with that status, and the chunk is not sent).
async fn send_chunk(
    sender: &mpsc::Sender<Result<EncodedChunk, Status>>,
    audit: &ChunkAudit,
    pending: PendingChunk,
    start: &mut Option<u64>,
) -> bool {
    let shares_someone = !pending.is_empty();
    let (note, chunk) = pending.into_parts();
    if shares_someone {
        let written = audit
            .auditor
            .call(
                &audit.identity,
                "ProfileService/ExportProfiles",
                tonic::Code::Ok,
                "",
                note,
            )
            .await;
        if let Err(status) = written {
            let _ = sender.send(Err(status)).await;
            return false;
        }
    }
    sender.send(Ok(chunk.finish(start.take().unwrap_or(0)))).await.is_ok()
}
