//! The gRPC edge: tonic services, proto <-> domain mapping and admission. Holds no business
//! rules; everything it decides is "is this call well-formed and within the limits".

pub mod access;
pub mod audit;
pub mod auth;
pub mod convert;
pub mod deadline;
pub mod encoded;
pub mod error;
pub mod limiter;
pub mod operations;
pub mod rebuild;
pub mod steward;

use crate::engine::{ChangeFollower, Engine, EngineError, StoredProfileView};
use crate::metrics::{BatchEnd, IngestTally, Metrics};
use crate::model::{Outcome, PersonId, RecordKey, SourceId};
use crate::pb;
use audit::{noted, AuditNote, RecentTagLists};
use auth::{identity, Identity};
use encoded::{EncodedBatch, EncodedChunk, EncodedProfile};
use error::to_status;
use futures::stream::{FuturesOrdered, StreamExt};
use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Batches of one stream that may be queued at the writer at once; answers keep their order.
const STREAM_BATCHES_IN_FLIGHT_MAX: usize = 8;
/// Rows per export chunk.
const EXPORT_CHUNK_ROWS: usize = 10_000;

/// A page token: the opaque store key a listing goes on from, sent as hex.
fn to_hex(bytes: &[u8]) -> String {
    crate::callers::to_hex(bytes)
}

/// The store key of a page token; `None` for text this service never gave.
fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|idx| u8::from_str_radix(&text[idx..idx + 2], 16).ok())
        .collect()
}

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The answer of a change logged with its actor: its audit entry was written with it.
fn logged_change<T>(answer: T) -> Response<T> {
    noted(answer, AuditNote::written_with_change())
}

/// An encoded answer as the message it encodes, with its audit note.
fn decoded<E, M>(response: Response<E>, decode: impl FnOnce(&E) -> Result<M, Status>) -> Result<Response<M>, Status> {
    let (metadata, encoded, extensions) = response.into_parts();
    Ok(Response::from_parts(metadata, decode(&encoded)?, extensions))
}

/// Runs blocking store reads off the async workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.expect("read task panicked")
}

#[derive(Clone)]
pub struct IngestApi {
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    stream_permits: Arc<Semaphore>,
}

impl IngestApi {
    pub fn new(engine: Arc<Engine>, metrics: Arc<Metrics>) -> Self {
        let permits = engine.config().server.concurrent_streams_max;
        IngestApi {
            engine,
            metrics,
            stream_permits: Arc::new(Semaphore::new(permits)),
        }
    }
}

type BoxStream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

/// The method ingest batches are audited under.
const INGEST_METHOD: &str = "IngestService/StreamRecords";

/// Admits, ingests and answers one batch, and counts it in the metrics.
async fn ingest_batch(
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    identity: Identity,
    batch: pb::RecordBatch,
) -> Result<pb::BatchOutcome, Status> {
    let started = Instant::now();
    let (batch_id, n_records) = (batch.batch_id, batch.records.len());
    let answer = admit_and_ingest(&engine, &identity, batch).await;
    // Every batch is audited, refused ones too. A logged batch's entry was written with it, in
    // its store transaction; any other's is written here, and an answer whose entry cannot be
    // written is an error.
    let (code, message) = match &answer {
        Ok(_) => (tonic::Code::Ok, ""),
        Err(status) => (status.code(), status.message()),
    };
    let audited = match &answer {
        Ok((outcome, _)) if outcome.sequence > 0 => Ok(()),
        _ => {
            let note = AuditNote::default().with_detail(format!("batch {batch_id}: {n_records} records"));
            audit::Auditor::new(Arc::clone(&engine))
                .call(&identity, INGEST_METHOD, code, message, note)
                .await
        }
    };
    let answer = match (answer, audited) {
        (answer, Ok(())) => answer,
        (_, Err(status)) => Err(status),
    };
    let end = match &answer {
        Ok((_, tally)) => BatchEnd::Acknowledged(*tally),
        Err(status)
            if matches!(
                status.code(),
                tonic::Code::InvalidArgument | tonic::Code::PermissionDenied
            ) =>
        {
            BatchEnd::Refused
        }
        Err(_) => BatchEnd::Failed,
    };
    metrics.count_batch(end, started.elapsed());
    answer.map(|(outcome, _)| outcome)
}

async fn admit_and_ingest(
    engine: &Engine,
    identity: &Identity,
    batch: pb::RecordBatch,
) -> Result<(pb::BatchOutcome, IngestTally), Status> {
    let limits = &engine.config().limits;
    if batch.records.len() > limits.batch_records_max {
        return Err(Status::invalid_argument(format!(
            "batch {} has {} records, more than the limit of {}",
            batch.batch_id,
            batch.records.len(),
            limits.batch_records_max
        )));
    }
    // Before anything is admitted: a batch holding one record of another source is refused
    // whole, so nothing of it is applied.
    access::check_writer(
        identity,
        batch.records.iter().map(|record| record.source.as_str()),
        &format!("batch {}", batch.batch_id),
    )?;
    let received_at = now_millis();
    let mut admitted = Vec::new();
    let mut slots = Vec::with_capacity(batch.records.len());
    for record in batch.records {
        let key_hint = (record.source.clone(), record.record_id.clone());
        match convert::admit_record(record, engine.catalog(), limits) {
            Ok(raw) => {
                slots.push(Ok(raw.key.clone()));
                admitted.push(raw);
            }
            Err(rejection) => slots.push(Err((key_hint, rejection))),
        }
    }
    let n_admitted = admitted.len();
    // Refusals are logged too, by source and rule, so the quality report counts them.
    let refused: Vec<(SourceId, String)> = slots
        .iter()
        .filter_map(|slot| match slot {
            Err(((source, _), rejection)) => Some((
                SourceId::parse(source)?,
                crate::cleanse::rules::rule_for_rejection(rejection).to_string(),
            )),
            Ok(_) => None,
        })
        .collect();
    let (sequence, mut placed) = if admitted.is_empty() && refused.is_empty() {
        (0, Vec::new().into_iter())
    } else {
        let n_records = admitted.len() + refused.len();
        let actor = identity.actor(INGEST_METHOD, format!("batch {}: {n_records} records", batch.batch_id));
        let applied = engine
            .ingest(received_at, admitted, refused, Some(actor))
            .await
            .map_err(to_status)?;
        (applied.sequence, applied.placed.into_iter())
    };
    let mut outcomes = Vec::with_capacity(slots.len());
    let mut tally = IngestTally::default();
    for (record_idx, slot) in slots.into_iter().enumerate() {
        let record_index = u32::try_from(record_idx).expect("batch size is bounded");
        let outcome = match slot {
            Ok(key) => {
                let placed = placed.next().expect("one placement per admitted record");
                tally.add(placed.decision);
                let outcome = Outcome::Resolved {
                    decision: placed.decision,
                    person_id: placed.person_id,
                };
                convert::outcome_to_pb(record_index, Some(&key), outcome)
            }
            Err(((source, record_id), rejection)) => {
                tally.rejected += 1;
                let mut outcome = convert::outcome_to_pb(record_index, None, Outcome::Rejected(rejection));
                outcome.source = source.chars().take(16).collect();
                outcome.record_id = record_id
                    .chars()
                    .take(engine.config().limits.record_id_bytes_max)
                    .collect();
                outcome
            }
        };
        outcomes.push(outcome);
    }
    tracing::debug!(
        batch_id = batch.batch_id,
        sequence,
        n_admitted,
        n_rejected = tally.rejected,
        "batch ingested"
    );
    let outcome = pb::BatchOutcome {
        batch_id: batch.batch_id,
        durable: true,
        outcomes,
        sequence,
    };
    Ok((outcome, tally))
}

#[tonic::async_trait]
impl pb::ingest_service_server::IngestService for IngestApi {
    async fn delete_record(
        &self,
        request: Request<pb::DeleteRecordRequest>,
    ) -> Result<Response<pb::StewardResult>, Status> {
        let identity = identity(&request)?;
        let request = request.into_inner();
        let actor = identity.actor(
            "IngestService/DeleteRecord",
            format!("record {}/{}", request.source.trim(), request.record_id),
        );
        steward::delete_record(&self.engine, &identity, request, actor)
            .await
            .map(logged_change)
    }

    type StreamRecordsStream = BoxStream<pb::BatchOutcome>;

    async fn stream_records(
        &self,
        request: Request<Streaming<pb::RecordBatch>>,
    ) -> Result<Response<Self::StreamRecordsStream>, Status> {
        let permit = Arc::clone(&self.stream_permits).try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "too many concurrent ingest streams (limit {}); retry later",
                self.engine.config().server.concurrent_streams_max
            ))
        })?;
        let identity = identity(&request)?;
        let mut inbound = request.into_inner();
        let engine = Arc::clone(&self.engine);
        let metrics = Arc::clone(&self.metrics);
        let idle_timeout = Duration::from_millis(engine.config().server.stream_idle_timeout_ms);
        let (sender, receiver) = mpsc::channel(STREAM_BATCHES_IN_FLIGHT_MAX);
        tokio::spawn(async move {
            let _permit = permit;
            let mut in_flight = FuturesOrdered::new();
            let mut inbound_done = false;
            loop {
                tokio::select! {
                    biased;
                    Some(answer) = in_flight.next(), if !in_flight.is_empty() => {
                        let answer: Result<pb::BatchOutcome, Status> = answer;
                        let failed = answer.is_err();
                        if sender.send(answer).await.is_err() || failed {
                            return;
                        }
                    }
                    message = tokio::time::timeout(idle_timeout, inbound.message()),
                        if !inbound_done && in_flight.len() < STREAM_BATCHES_IN_FLIGHT_MAX => {
                        match message {
                            Ok(Ok(Some(batch))) => in_flight.push_back(ingest_batch(
                                Arc::clone(&engine),
                                Arc::clone(&metrics),
                                identity.clone(),
                                batch,
                            )),
                            Ok(Ok(None)) => inbound_done = true,
                            Ok(Err(status)) => {
                                // A message the server could not decode (too large, malformed)
                                // or a broken connection: answer with the status and stop.
                                tracing::debug!(code = ?status.code(), "ingest stream failed on the inbound side");
                                let _ = sender.send(Err(status)).await;
                                return;
                            }
                            Err(_) => {
                                let status = Status::deadline_exceeded(format!(
                                    "ingest stream sent nothing for {} s and was closed",
                                    idle_timeout.as_secs()
                                ));
                                let _ = sender.send(Err(status)).await;
                                return;
                            }
                        }
                    }
                    else => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

/// How many times `limits.message_bytes_max` a gzip client's `BatchGetProfiles` answer may take
/// before it is compressed. gzip makes about a quarter of a profile (a full synthetic profile
/// of 137 kB came to 35 kB), so a larger answer would seldom fit compressed, and refusing it
/// early bounds what one call builds (64 MiB by default, not the 170 MB of a thousand full
/// profiles).
const GZIP_BUILT_BYTES_FACTOR: usize = 4;

#[derive(Clone)]
pub struct ProfileApi {
    engine: Arc<Engine>,
    watch_permits: Arc<Semaphore>,
    tag_lists: Arc<RecentTagLists>,
}

impl ProfileApi {
    /// `GetProfile`, answered with the profile encoded straight from the store.
    pub async fn get_profile_encoded(
        &self,
        request: Request<pb::GetProfileRequest>,
    ) -> Result<Response<EncodedProfile>, Status> {
        let identity = identity(&request)?;
        let request = request.into_inner();
        if request.person_id.is_empty() {
            return Err(Status::invalid_argument("person_id is empty"));
        }
        let method = "ProfileService/GetProfile";
        let mask = access::read_mask(&identity, self.engine.catalog(), method, request.tag_mask)?;
        let person_id = PersonId::new(request.person_id);
        let lookup = person_id.clone();
        self.encoded_read(identity, method, request.compact, move |engine| {
            engine.get_stored_profile(&lookup, &mask)
        })
        .await?
        .ok_or_else(|| Status::not_found(format!("person {person_id} not found")))
    }

    /// `GetProfileByIdNumber`, answered with the profile encoded straight from the store.
    pub async fn get_profile_by_id_number_encoded(
        &self,
        request: Request<pb::GetProfileByIdNumberRequest>,
    ) -> Result<Response<EncodedProfile>, Status> {
        let identity = identity(&request)?;
        let request = request.into_inner();
        let method = "ProfileService/GetProfileByIdNumber";
        access::check_lookup_by(&identity, self.engine.catalog(), method, "id_number")?;
        let mask = access::read_mask(&identity, self.engine.catalog(), method, request.tag_mask)?;
        self.encoded_read(identity, method, request.compact, move |engine| {
            engine.get_stored_profile_by_id_number(&request.id_number, &mask)
        })
        .await?
        .ok_or_else(|| Status::not_found("no person holds this ID number"))
    }

    /// `ExportProfiles`, each chunk of profiles encoded straight from the store.
    pub async fn export_profiles_encoded(
        &self,
        request: Request<pb::ExportProfilesRequest>,
    ) -> Result<Response<BoxStream<EncodedChunk>>, Status> {
        let identity = identity(&request)?;
        let tag_lists = Arc::clone(&self.tag_lists);
        operations::export_profiles(Arc::clone(&self.engine), identity, request.into_inner(), tag_lists)
            .await
            .map(Response::new)
    }

    /// `BatchGetProfiles`, each profile encoded straight from the store as `GetProfile`
    /// encodes it, read and encoded one at a time off the async workers.
    pub async fn batch_get_profiles_encoded(
        &self,
        request: Request<pb::BatchGetProfilesRequest>,
    ) -> Result<Response<EncodedBatch>, Status> {
        let identity = identity(&request)?;
        // The message size limit applies to the answer as sent: compressed, for a client that
        // takes gzip, so only tonic can tell whether that fits.
        let gzip = request
            .metadata()
            .get("grpc-accept-encoding")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.split(',').any(|encoding| encoding.trim() == "gzip"));
        let request = request.into_inner();
        let limits = &self.engine.config().limits;
        let (ids_max, bytes_max) = (limits.batch_get_persons_max, limits.message_bytes_max);
        // Built uncompressed, a gzip client's answer is bounded too, so that one that gzip
        // could not bring under the limit is refused before it is all in memory.
        let built_max = if gzip {
            bytes_max.saturating_mul(GZIP_BUILT_BYTES_FACTOR)
        } else {
            bytes_max
        };
        if request.person_ids.is_empty() {
            return Err(Status::invalid_argument("person_ids is empty"));
        }
        if request.person_ids.len() > ids_max {
            return Err(Status::invalid_argument(format!(
                "person_ids has {} ids, more than the limit of {ids_max}",
                request.person_ids.len()
            )));
        }
        if let Some(position) = request.person_ids.iter().position(String::is_empty) {
            return Err(Status::invalid_argument(format!("person_ids[{position}] is empty")));
        }
        let method = "ProfileService/BatchGetProfiles";
        let mask = access::read_mask(&identity, self.engine.catalog(), method, request.tag_mask)?;
        let mut seen = std::collections::HashSet::new();
        let person_ids: Vec<PersonId> = request
            .person_ids
            .into_iter()
            .filter(|id| seen.insert(id.clone()))
            .map(PersonId::new)
            .collect();
        let compact = request.compact;
        let engine = Arc::clone(&self.engine);
        let tag_lists = Arc::clone(&self.tag_lists);
        blocking(move || {
            let grant = access::reader_grant(&identity, method)?;
            let n_persons = person_ids.len();
            let too_big = || {
                let limit = if gzip {
                    format!(
                        "{built_max} bytes before compression ({GZIP_BUILT_BYTES_FACTOR} times \
                         limits.message_bytes_max, the most a compressed answer is built to)"
                    )
                } else {
                    format!("limits.message_bytes_max ({bytes_max} bytes)")
                };
                Status::out_of_range(format!(
                    "the profiles of these {n_persons} persons take more than {limit}; \
                     ask for fewer persons, a tag mask or compact profiles"
                ))
            };
            let mut answer = EncodedBatch::default();
            let mut not_found = Vec::new();
            let mut persons = Vec::new();
            // The union of the shared tags; most profiles of a batch share the same ones.
            let mut tags: BTreeSet<String> = BTreeSet::new();
            let mut last_tags: Vec<String> = Vec::new();
            for person_id in &person_ids {
                let Some(view) = engine.get_stored_profile(person_id, &mask).map_err(to_status)? else {
                    not_found.push(person_id.to_string());
                    continue;
                };
                let (profile, shared) = encoded::profile(grant, engine.catalog(), &view, compact).map_err(to_status)?;
                answer.push_profile(&profile);
                if answer.len() > built_max {
                    return Err(too_big());
                }
                if !shared.iter().eq(last_tags.iter()) {
                    tags.extend(shared.iter().map(|tag| tag.to_string()));
                    last_tags = shared.iter().map(|tag| tag.to_string()).collect();
                }
                persons.push(view.person_id.to_string());
            }
            let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
            let answer = answer.finish(&not_found);
            if answer.len() > built_max {
                return Err(too_big());
            }
            let note = AuditNote::shared_profiles(persons, tag_lists.list(&tags));
            Ok(noted(answer, note))
        })
        .await
    }

    /// `GetPersonByRecord`, answered with the profile encoded straight from the store.
    pub async fn get_person_by_record_encoded(
        &self,
        request: Request<pb::GetPersonByRecordRequest>,
    ) -> Result<Response<EncodedProfile>, Status> {
        let identity = identity(&request)?;
        let request = request.into_inner();
        let key = convert::record_key(
            &request.source,
            request.record_id,
            self.engine.catalog(),
            &self.engine.config().limits,
        )?;
        let method = "ProfileService/GetPersonByRecord";
        let mask = access::read_mask(&identity, self.engine.catalog(), method, request.tag_mask)?;
        let lookup = key.clone();
        self.encoded_read(identity, method, request.compact, move |engine| {
            engine.get_stored_profile_by_record(&lookup, &mask)
        })
        .await?
        .ok_or_else(|| Status::not_found(format!("record {key} is not stored")))
    }

    /// Reads one profile with `read` off the async workers, and encodes it there as the
    /// caller's grant shows it (compact or not), noted for the audit as shared.
    async fn encoded_read(
        &self,
        identity: Identity,
        method: &'static str,
        compact: bool,
        read: impl FnOnce(&Engine) -> Result<Option<StoredProfileView>, EngineError> + Send + 'static,
    ) -> Result<Option<Response<EncodedProfile>>, Status> {
        let engine = Arc::clone(&self.engine);
        let tag_lists = Arc::clone(&self.tag_lists);
        blocking(move || {
            let grant = access::reader_grant(&identity, method)?;
            let Some(view) = read(&engine).map_err(to_status)? else {
                return Ok(None);
            };
            let (profile, tags) = encoded::profile(grant, engine.catalog(), &view, compact).map_err(to_status)?;
            let note = AuditNote::shared_profile(view.person_id.to_string(), tag_lists.list(&tags));
            Ok(Some(noted(profile, note)))
        })
        .await
    }

    pub fn new(engine: Arc<Engine>) -> Self {
        let permits = engine.config().server.watch_streams_max;
        ProfileApi {
            engine,
            watch_permits: Arc::new(Semaphore::new(permits)),
            tag_lists: Arc::default(),
        }
    }
}

/// Forwards a change-feed follower's batches to one watch stream until the client goes away or
/// the service closes. The channel is bounded: a slow client holds this task (which then
/// reads nothing), never the writer.
async fn forward_changes(
    mut follower: ChangeFollower,
    sender: mpsc::Sender<Result<pb::ChangeBatch, Status>>,
    permit: OwnedSemaphorePermit,
) {
    let _permit = permit;
    let from_sequence = follower.next_sequence();
    loop {
        let next = tokio::select! {
            next = follower.next_batch() => next,
            () = sender.closed() => break,
        };
        let changes = match next {
            Ok(Some(changes)) => changes,
            Ok(None) => break,
            Err(error) => {
                let _ = sender.send(Err(to_status(error))).await;
                break;
            }
        };
        let batch = pb::ChangeBatch {
            changes: changes
                .into_iter()
                .map(|(sequence, event)| convert::change_to_pb(sequence, event))
                .collect(),
        };
        if sender.send(Ok(batch)).await.is_err() {
            break;
        }
    }
    tracing::debug!(
        from_sequence,
        next_sequence = follower.next_sequence(),
        "watch stream ended"
    );
}

#[tonic::async_trait]
impl pb::profile_service_server::ProfileService for ProfileApi {
    async fn get_profile_history(
        &self,
        request: Request<pb::GetProfileHistoryRequest>,
    ) -> Result<Response<pb::ProfileHistory>, Status> {
        let identity = identity(&request)?;
        steward::profile_history(Arc::clone(&self.engine), identity, request.into_inner())
            .await
            .map(|history| {
                let note = AuditNote::persons([history.person_id.clone()]);
                noted(history, note)
            })
    }

    async fn get_tag_lineage(
        &self,
        request: Request<pb::GetTagLineageRequest>,
    ) -> Result<Response<pb::TagLineage>, Status> {
        let identity = identity(&request)?;
        steward::tag_lineage(Arc::clone(&self.engine), identity, request.into_inner())
            .await
            .map(|lineage| {
                let mut note = AuditNote::persons([lineage.person_id.clone()]).with_tags([lineage.tag.clone()]);
                note.shares = 1;
                noted(lineage, note)
            })
    }

    async fn explain_record(
        &self,
        request: Request<pb::ExplainRecordRequest>,
    ) -> Result<Response<pb::RecordExplanation>, Status> {
        let request = request.into_inner();
        let source = SourceId::parse(&request.source)
            .ok_or_else(|| Status::invalid_argument("source is not a source code (expected D01..D63)"))?;
        if request.record_id.is_empty() {
            return Err(Status::invalid_argument("record_id is empty"));
        }
        let key = RecordKey {
            source,
            record_id: request.record_id,
        };
        let engine = Arc::clone(&self.engine);
        let lookup = key.clone();
        let found = blocking(move || engine.explain_record(&lookup))
            .await
            .map_err(to_status)?;
        match found {
            Some((evidence, review)) => Ok(Response::new(convert::explanation_to_pb(
                &key,
                &evidence,
                review.as_ref(),
            ))),
            None => Err(Status::not_found(format!("record {key} has no stored decision"))),
        }
    }

    async fn explain_pair(
        &self,
        request: Request<pb::ExplainPairRequest>,
    ) -> Result<Response<pb::PairExplanation>, Status> {
        let request = request.into_inner();
        if request.person_a.is_empty() || request.person_b.is_empty() {
            return Err(Status::invalid_argument("person_a and person_b are both required"));
        }
        let engine = Arc::clone(&self.engine);
        let (a, b) = (PersonId::new(request.person_a), PersonId::new(request.person_b));
        let person_a = a.to_string();
        let (score, hold) = blocking(move || engine.explain_pair(&a, &b)).await.map_err(to_status)?;
        Ok(Response::new(convert::pair_to_pb(&person_a, &score, hold)))
    }

    /// Served by `encoded::ProfileRoutes` as encoded bytes; this decodes them for a server
    /// that mounts the generated service alone.
    async fn get_profile(&self, request: Request<pb::GetProfileRequest>) -> Result<Response<pb::Profile>, Status> {
        decoded(self.get_profile_encoded(request).await?, EncodedProfile::decode)
    }

    async fn get_profile_by_id_number(
        &self,
        request: Request<pb::GetProfileByIdNumberRequest>,
    ) -> Result<Response<pb::Profile>, Status> {
        decoded(
            self.get_profile_by_id_number_encoded(request).await?,
            EncodedProfile::decode,
        )
    }

    /// Served by `encoded::ProfileRoutes` as encoded bytes; this decodes them.
    async fn batch_get_profiles(
        &self,
        request: Request<pb::BatchGetProfilesRequest>,
    ) -> Result<Response<pb::BatchGetProfilesResponse>, Status> {
        decoded(self.batch_get_profiles_encoded(request).await?, EncodedBatch::decode)
    }

    /// Served by `encoded::ProfileRoutes` as encoded bytes; this decodes them.
    async fn get_person_by_record(
        &self,
        request: Request<pb::GetPersonByRecordRequest>,
    ) -> Result<Response<pb::Profile>, Status> {
        decoded(
            self.get_person_by_record_encoded(request).await?,
            EncodedProfile::decode,
        )
    }

    type WatchChangesStream = BoxStream<pb::ChangeBatch>;

    async fn watch_changes(
        &self,
        request: Request<pb::WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        let from_sequence = request.into_inner().from_sequence;
        let permit = Arc::clone(&self.watch_permits).try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "too many concurrent watch streams (limit {}); retry later",
                self.engine.config().server.watch_streams_max
            ))
        })?;
        let engine = Arc::clone(&self.engine);
        let follower = blocking(move || engine.follow_changes(from_sequence))
            .await
            .map_err(to_status)?;
        let (sender, receiver) = mpsc::channel(self.engine.config().server.watch_buffer_batches);
        tokio::spawn(forward_changes(follower, sender, permit));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn search_persons(
        &self,
        request: Request<pb::SearchPersonsRequest>,
    ) -> Result<Response<pb::SearchPersonsResponse>, Status> {
        let identity = identity(&request)?;
        let request = request.into_inner();
        access::check_search(
            &identity,
            self.engine.catalog(),
            &[
                ("name", !request.name.trim().is_empty()),
                ("id_number", !request.id_number.trim().is_empty()),
                ("birth_date", !request.birth_date.trim().is_empty()),
                ("gender", !request.gender.trim().is_empty()),
                ("phone", !request.phone.trim().is_empty()),
                ("address", !request.address.trim().is_empty()),
            ],
        )?;
        let used: Vec<&'static str> = [
            ("name", &request.name),
            ("id_number", &request.id_number),
            ("birth_date", &request.birth_date),
            ("gender", &request.gender),
            ("phone", &request.phone),
            ("address", &request.address),
        ]
        .into_iter()
        .filter(|(_, value)| !value.trim().is_empty())
        .map(|(tag, _)| tag)
        .collect();
        let (query, top_k) = convert::person_query(request, &self.engine.config().limits)?;
        let engine = Arc::clone(&self.engine);
        let result = blocking(move || engine.search_persons(query, top_k))
            .await
            .map_err(to_status)?;
        let answer = pb::SearchPersonsResponse {
            persons: result.matches.iter().map(convert::person_match_to_pb).collect(),
            n_candidates: u32::try_from(result.n_candidates).unwrap_or(u32::MAX),
        };
        let note = AuditNote::persons(answer.persons.iter().map(|found| found.person_id.clone())).with_tags(used);
        Ok(noted(answer, note))
    }

    type ExportProfilesStream = BoxStream<pb::ProfileChunk>;

    async fn export_profiles(
        &self,
        request: Request<pb::ExportProfilesRequest>,
    ) -> Result<Response<Self::ExportProfilesStream>, Status> {
        let chunks = self.export_profiles_encoded(request).await?.into_inner();
        Ok(Response::new(Box::pin(
            chunks.map(|chunk| chunk.and_then(|chunk| chunk.decode())),
        )))
    }

    type ExportMappingStream = BoxStream<pb::MappingChunk>;

    async fn export_mapping(
        &self,
        _request: Request<pb::ExportMappingRequest>,
    ) -> Result<Response<Self::ExportMappingStream>, Status> {
        let engine = Arc::clone(&self.engine);
        let (sender, receiver) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut after: Option<RecordKey> = None;
            loop {
                let page_engine = Arc::clone(&engine);
                let page_after = after.clone();
                let page = blocking(move || page_engine.mapping_page(page_after.as_ref(), EXPORT_CHUNK_ROWS)).await;
                let page = match page {
                    Ok(page) => page,
                    Err(error) => {
                        let _ = sender.send(Err(to_status(error))).await;
                        return;
                    }
                };
                let done = page.len() < EXPORT_CHUNK_ROWS;
                after = page.last().map(|(key, _)| key.clone());
                let rows = page
                    .into_iter()
                    .map(|(key, person_id)| pb::MappingRow {
                        source: key.source.to_string(),
                        record_id: key.record_id,
                        person_id: person_id.to_string(),
                    })
                    .collect();
                if sender.send(Ok(pb::MappingChunk { rows })).await.is_err() || done {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

#[derive(Clone)]
pub struct AdminApi {
    engine: Arc<Engine>,
}

impl AdminApi {
    pub fn new(engine: Arc<Engine>) -> Self {
        AdminApi { engine }
    }
}

#[tonic::async_trait]
impl pb::admin_service_server::AdminService for AdminApi {
    type BackupStream = BoxStream<pb::BackupProgress>;

    async fn backup(&self, request: Request<pb::BackupRequest>) -> Result<Response<Self::BackupStream>, Status> {
        operations::backup(Arc::clone(&self.engine), request.into_inner())
            .await
            .map(Response::new)
    }

    async fn merge(&self, request: Request<pb::MergeRequest>) -> Result<Response<pb::StewardResult>, Status> {
        let identity = identity(&request)?;
        let request = request.into_inner();
        let actor = identity.actor(
            "AdminService/Merge",
            format!("merge {} and {}", request.person_a.trim(), request.person_b.trim()),
        );
        steward::merge(&self.engine, request, actor).await.map(logged_change)
    }

    async fn unmerge(&self, request: Request<pb::UnmergeRequest>) -> Result<Response<pb::StewardResult>, Status> {
        let identity = identity(&request)?;
        let request = request.into_inner();
        let actor = identity.actor(
            "AdminService/Unmerge",
            format!(
                "unmerge {} records from {}",
                request.records.len(),
                request.person_id.trim()
            ),
        );
        steward::unmerge(&self.engine, request, actor).await.map(logged_change)
    }

    async fn list_review_items(
        &self,
        request: Request<pb::ListReviewItemsRequest>,
    ) -> Result<Response<pb::ReviewItemPage>, Status> {
        steward::list_review_items(Arc::clone(&self.engine), request.into_inner())
            .await
            .map(Response::new)
    }

    async fn resolve_review_item(
        &self,
        request: Request<pb::ResolveReviewItemRequest>,
    ) -> Result<Response<pb::StewardResult>, Status> {
        let identity = identity(&request)?;
        let request = request.into_inner();
        let detail = format!(
            "review item {}: {} {}",
            request
                .record
                .as_ref()
                .map_or_else(String::new, |record| format!("{}/{}", record.source, record.record_id)),
            if request.same { "same as" } else { "different from" },
            request.candidate_person_id.trim()
        );
        let actor = identity.actor("AdminService/ResolveReviewItem", detail);
        steward::resolve_review_item(&self.engine, request, actor)
            .await
            .map(logged_change)
    }

    async fn get_catalog(&self, _request: Request<pb::GetCatalogRequest>) -> Result<Response<pb::Catalog>, Status> {
        let catalog = self.engine.catalog();
        Ok(Response::new(pb::Catalog {
            sources: catalog
                .sources()
                .map(|source| pb::SourceInfo {
                    code: source.code.clone(),
                    name: source.name.clone(),
                    authority_rank: source.authority_rank,
                })
                .collect(),
            tags: catalog
                .tags()
                .iter()
                .map(|tag| pb::TagInfo {
                    code: tag.code.clone(),
                    label: tag.label.clone(),
                    value_type: format!("{:?}", tag.value_type),
                    sensitivity: format!("{:?}", tag.sensitivity),
                    identity_role: format!("{:?}", tag.identity_role),
                    survivorship: tag.survivorship.label().into(),
                    owner_source: tag.owner_source.clone(),
                })
                .collect(),
        }))
    }

    async fn get_quality_report(
        &self,
        request: Request<pb::GetQualityReportRequest>,
    ) -> Result<Response<pb::QualityReport>, Status> {
        let raw_source = request.into_inner().source;
        let source = if raw_source.trim().is_empty() {
            None
        } else {
            let source = SourceId::parse(&raw_source)
                .filter(|source| self.engine.catalog().source(source).is_some())
                .ok_or_else(|| Status::invalid_argument("source is not a source code of the catalog (D01..D63)"))?;
            Some(source)
        };
        let engine = Arc::clone(&self.engine);
        let lookup = source.clone();
        let counts = blocking(move || engine.quality(lookup.as_ref()))
            .await
            .map_err(to_status)?;
        let count = |key: &str| counts.get(key).copied().unwrap_or(0);
        Ok(Response::new(pb::QualityReport {
            source: source.map(|source| source.to_string()).unwrap_or_default(),
            n_records: count(crate::store::layout::QUALITY_RECORDS),
            n_rejected: count(crate::store::layout::QUALITY_REJECTED),
            rules: crate::cleanse::rules::RULES
                .iter()
                .map(|rule| pb::RuleCount {
                    rule_id: rule.id.to_string(),
                    rule_class: format!("{:?}", rule.class),
                    action: format!("{:?}", rule.action),
                    applies_to: rule.applies_to.to_string(),
                    description: rule.description.to_string(),
                    count: count(rule.id),
                })
                .collect(),
        }))
    }

    async fn get_stats(&self, _request: Request<pb::GetStatsRequest>) -> Result<Response<pb::Stats>, Status> {
        let engine = Arc::clone(&self.engine);
        let stats = blocking(move || engine.stats()).await.map_err(to_status)?;
        Ok(Response::new(pb::Stats {
            n_records: stats.store.n_records,
            n_persons: stats.store.n_persons,
            applied_sequence: stats.store.applied_sequence,
            change_sequence: stats.store.change_sequence,
            index_watermark: stats.index_watermark,
            index_persons: stats.index_persons,
            store_bytes: stats.store.size_on_disk,
            n_review_items: stats.store.n_review_items,
            index_lag: stats.index_lag(),
            sources: stats
                .store
                .records_by_source
                .iter()
                .map(|(source, n_records)| pb::SourceRecords {
                    source: source.to_string(),
                    n_records: *n_records,
                })
                .collect(),
            ingest_cost: Some(pb::IngestCost {
                n_records: stats.ingest.stages.records,
                log_micros: stats.ingest.log.as_micros() as u64,
                cleanse_micros: stats.ingest.stages.cleanse.as_micros() as u64,
                candidates_micros: stats.ingest.stages.candidates.as_micros() as u64,
                scoring_micros: stats.ingest.stages.scoring.as_micros() as u64,
                store_micros: stats.ingest.stages.store.as_micros() as u64,
                reads_read_ahead: stats.read_ahead.n_hits,
                reads_by_writer: stats.read_ahead.n_misses,
            }),
        }))
    }

    async fn query_audit(&self, request: Request<pb::QueryAuditRequest>) -> Result<Response<pb::AuditPage>, Status> {
        audit::query_audit(Arc::clone(&self.engine), request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_share_counts(
        &self,
        request: Request<pb::GetShareCountsRequest>,
    ) -> Result<Response<pb::ShareCounts>, Status> {
        audit::share_counts(Arc::clone(&self.engine), request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_model(&self, _request: Request<pb::GetModelRequest>) -> Result<Response<pb::ModelInfo>, Status> {
        let engine = Arc::clone(&self.engine);
        let model = blocking(move || engine.model()).await.map_err(to_status)?;
        Ok(Response::new(convert::model_to_pb(&model, 0, 0)))
    }

    async fn install_model(
        &self,
        request: Request<pb::InstallModelRequest>,
    ) -> Result<Response<pb::ModelInfo>, Status> {
        let actor = identity(&request)?.actor("AdminService/InstallModel", "a match model");
        let model: crate::resolve::MatchModel = serde_json::from_str(&request.into_inner().model_json)
            .map_err(|error| Status::invalid_argument(format!("model_json is not a model: {error}")))?;
        let model = self.engine.install_model(model, Some(actor)).await.map_err(to_status)?;
        tracing::info!(version = model.version, "installed a match model");
        Ok(logged_change(convert::model_to_pb(&model, 0, 0)))
    }

    type RebuildIndexStream = rebuild::ProgressStream;
    type ReevaluateStream = rebuild::ReevaluateStream;

    async fn reevaluate(
        &self,
        request: Request<pb::ReevaluateRequest>,
    ) -> Result<Response<Self::ReevaluateStream>, Status> {
        let actor = identity(&request)?.actor("AdminService/Reevaluate", "a chunk of persons re-resolved");
        Ok(Response::new(rebuild::reevaluate(Arc::clone(&self.engine), actor)))
    }

    async fn rebuild_index(
        &self,
        _request: Request<pb::RebuildIndexRequest>,
    ) -> Result<Response<Self::RebuildIndexStream>, Status> {
        Ok(Response::new(rebuild::rebuild_index(Arc::clone(&self.engine))))
    }

    async fn train_model(&self, request: Request<pb::TrainModelRequest>) -> Result<Response<pb::ModelInfo>, Status> {
        let actor = identity(&request)?.actor("AdminService/TrainModel", "a match model trained on the stored data");
        let (model, n_random, n_candidates) = self.engine.train_model(Some(actor)).await.map_err(to_status)?;
        tracing::info!(
            version = model.version,
            n_random,
            n_candidates,
            "trained and installed a new match model"
        );
        Ok(logged_change(convert::model_to_pb(&model, n_random, n_candidates)))
    }
}
