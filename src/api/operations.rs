//! The operations calls at the gRPC edge: the export of every profile. Checks that each call is
//! well-formed, maps between proto and the engine, and bounds every stream; the work is the
//! engine's.

use super::error::to_status;
use super::{blocking, convert, BoxStream};
use crate::engine::Engine;
use crate::model::PersonId;
use crate::pb;
use prost::Message;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// Streams every profile, a page of persons at a time, through a bounded channel: a slow
/// client stops the reading, and nothing is held for it but the channel.
pub async fn export_profiles(
    engine: Arc<Engine>,
    request: pb::ExportProfilesRequest,
) -> Result<BoxStream<pb::ProfileChunk>, Status> {
    let mask = convert::tag_mask(engine.catalog(), request.tag_mask)?;
    let config = engine.config();
    let (page_persons, buffer) = (config.export.page_persons, config.export.buffer_chunks);
    // A chunk is sent before it would pass half the message limit, so one profile more
    // always fits.
    let chunk_bytes_max = config.limits.message_bytes_max / 2;
    let (sender, receiver) = mpsc::channel(buffer);
    let start_engine = Arc::clone(&engine);
    let change_sequence = blocking(move || start_engine.stats())
        .await
        .map_err(to_status)?
        .store
        .change_sequence;
    tokio::spawn(async move {
        let mut after: Option<PersonId> = None;
        let mut start = Some(change_sequence);
        let mut pending: Vec<pb::Profile> = Vec::new();
        let mut pending_bytes = 0usize;
        let mut n_persons = 0u64;
        loop {
            let page_engine = Arc::clone(&engine);
            let page_after = after.clone();
            let page_mask = mask.clone();
            let page = blocking(move || page_engine.profiles_page(page_after.as_ref(), page_persons, &page_mask)).await;
            let (views, next) = match page {
                Ok(page) => page,
                Err(error) => {
                    let _ = sender.send(Err(to_status(error))).await;
                    return;
                }
            };
            for view in views {
                let profile = convert::profile_to_pb(view);
                // The field's tag and length prefix: a few bytes per profile.
                let profile_bytes = profile.encoded_len() + 8;
                if !pending.is_empty() && pending_bytes + profile_bytes > chunk_bytes_max {
                    if !send_chunk(&sender, std::mem::take(&mut pending), &mut start).await {
                        return;
                    }
                    pending_bytes = 0;
                }
                pending_bytes += profile_bytes;
                pending.push(profile);
                n_persons += 1;
            }
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
            if !pending.is_empty() {
                if !send_chunk(&sender, std::mem::take(&mut pending), &mut start).await {
                    return;
                }
                pending_bytes = 0;
            }
        }
        // The last chunk; also the first (with the start sequence) of an export of no one.
        if (!pending.is_empty() || start.is_some()) && !send_chunk(&sender, pending, &mut start).await {
            return;
        }
        tracing::debug!(n_persons, "profile export ended");
    });
    Ok(Box::pin(ReceiverStream::new(receiver)))
}

/// Sends one chunk; the first carries the change-feed sequence the export started at. False
/// when the client has gone.
async fn send_chunk(
    sender: &mpsc::Sender<Result<pb::ProfileChunk, Status>>,
    profiles: Vec<pb::Profile>,
    start: &mut Option<u64>,
) -> bool {
    let chunk = pb::ProfileChunk {
        profiles,
        change_sequence: start.take().unwrap_or(0),
    };
    sender.send(Ok(chunk)).await.is_ok()
}
