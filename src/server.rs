//! Runs the gRPC server: the three services, grpc.health.v1, server reflection, message
//! limits, and an orderly shutdown (stop accepting, let in-flight calls finish within the
//! grace period, finish queued batches, checkpoint the store, commit the index).

use crate::api::{AdminApi, IngestApi, ProfileApi};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::engine::{Engine, EngineError};
use crate::pb;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::codec::CompressionEncoding;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("cannot build server reflection: {0}")]
    Reflection(String),
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves on `listener` until `shutdown` completes, then shuts down in order.
pub async fn serve(
    config: Config,
    catalog: Catalog,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let engine_config = config.clone();
    let engine = tokio::task::spawn_blocking(move || Engine::open(&engine_config, catalog))
        .await
        .expect("engine open task panicked")?;
    let engine = Arc::new(engine);
    let limits = &config.limits;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<pb::ingest_service_server::IngestServiceServer<IngestApi>>()
        .await;
    health_reporter
        .set_serving::<pb::profile_service_server::ProfileServiceServer<ProfileApi>>()
        .await;
    health_reporter
        .set_serving::<pb::admin_service_server::AdminServiceServer<AdminApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|error| ServeError::Reflection(error.to_string()))?;

    let ingest = pb::ingest_service_server::IngestServiceServer::new(IngestApi::new(Arc::clone(&engine)))
        .max_decoding_message_size(limits.message_bytes_max)
        .max_encoding_message_size(limits.message_bytes_max)
        .accept_compressed(CompressionEncoding::Gzip);
    let profiles = pb::profile_service_server::ProfileServiceServer::new(ProfileApi::new(Arc::clone(&engine)))
        .max_decoding_message_size(limits.message_bytes_max)
        .max_encoding_message_size(limits.message_bytes_max)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    let admin = pb::admin_service_server::AdminServiceServer::new(AdminApi::new(Arc::clone(&engine)))
        .max_decoding_message_size(limits.message_bytes_max)
        .max_encoding_message_size(limits.message_bytes_max);

    let local_addr = listener.local_addr().ok();
    let (stop_accepting, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(ingest)
        .add_service(profiles)
        .add_service(admin);
    // Small answers must not wait for the peer's delayed ACK (Nagle): about 40 ms a call.
    let incoming = tokio_stream::StreamExt::map(TcpListenerStream::new(listener), |accepted| {
        accepted.and_then(|stream| {
            stream.set_nodelay(true)?;
            Ok(stream)
        })
    });
    let mut server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = stopped.await;
    }));
    tracing::info!(listen = ?local_addr, data_dir = %config.data_dir.display(), "popmaster serving");

    tokio::select! {
        result = &mut server => {
            // The transport ended on its own: an error, since nothing asked it to stop.
            engine.shutdown().await;
            return match result.expect("server task panicked") {
                Ok(()) => Ok(()),
                Err(error) => Err(error.into()),
            };
        }
        () = shutdown => {}
    }
    tracing::info!("shutting down: no new calls accepted");
    health_reporter
        .set_not_serving::<pb::ingest_service_server::IngestServiceServer<IngestApi>>()
        .await;
    // Watch streams never end on their own: end them now, so they do not hold the graceful
    // shutdown for the whole grace period.
    engine.close_change_followers();
    let _ = stop_accepting.send(());
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    match tokio::time::timeout(grace, &mut server).await {
        Ok(result) => result.expect("server task panicked")?,
        Err(_) => {
            // Open streams can hold the transport's graceful shutdown forever; stop waiting.
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "calls still open after the grace period; closing them"
            );
            server.abort();
        }
    }
    engine.shutdown().await;
    tracing::info!("shutdown complete");
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
pub async fn termination_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}
