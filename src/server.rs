//! Runs the gRPC server: the three services, grpc.health.v1, server reflection, message
//! limits, the metrics of every call and the metrics endpoint, caller authentication and
//! authorization (refusing to serve a non-loopback address without a callers file, reloading
//! the callers file on SIGHUP and when it changes), and an orderly shutdown (stop accepting,
//! let in-flight calls finish within the grace period, finish queued batches, checkpoint the
//! store, commit the index, close the metrics endpoint).

use crate::api::audit::Auditor;
use crate::api::auth::{AuthLayer, CallerRegistry, Gate};
use crate::api::deadline::{CallBounds, DeadlineLayer};
use crate::api::encoded::ProfileRoutes;
use crate::api::limiter::{CallerBounds, Limiter, RefusalAudit};
use crate::api::{AdminApi, IngestApi, ProfileApi};
use crate::callers::CallersError;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::engine::{Engine, EngineError, EngineHealth};
use crate::metrics::endpoint::MetricsEndpoint;
use crate::metrics::rpc::RpcMetricsLayer;
use crate::metrics::{Metrics, MetricsError};
use crate::pb;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::codec::CompressionEncoding;
use tonic_health::ServingStatus;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("cannot build server reflection: {0}")]
    Reflection(String),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Callers(#[from] CallersError),
    #[error("cannot read {setting} {path}: {source}")]
    TlsFile {
        setting: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error(
        "refusing to serve {addr} without authentication: only a loopback address may run open. \
         Set auth.callers_file (see the README, Security), or listen on 127.0.0.1"
    )]
    OpenOnNonLoopback { addr: String },
}

/// Serves gRPC on `listener`, and the metrics endpoint on `metrics_listener` if there is one,
/// until `shutdown` completes, then shuts down in order.
pub async fn serve(
    config: Config,
    catalog: Catalog,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let tls = server_tls(&config.tls)?;
    let registry = match &config.auth.callers_file {
        Some(path) => Arc::new(CallerRegistry::load(path, catalog.clone())?),
        None => {
            let local = listener.local_addr().ok();
            if !local.is_some_and(|addr| addr.ip().is_loopback()) {
                return Err(ServeError::OpenOnNonLoopback {
                    addr: local.map_or_else(|| "an unknown address".into(), |addr| addr.to_string()),
                });
            }
            tracing::warn!(
                listen = ?local,
                "AUTHENTICATION IS OFF: no auth.callers_file, so every local caller may read every \
                 profile unmasked, write every source and run every admin call. This open mode is \
                 for development on a loopback address only; set auth.callers_file for anything else"
            );
            Arc::new(CallerRegistry::open())
        }
    };
    // Before anything serves: a SIGHUP that came before the listener would end the process.
    let hangup = listen_for_hangup(&registry);
    let metrics = Arc::new(Metrics::new(&[
        pb::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    ])?);
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

    let ingest =
        pb::ingest_service_server::IngestServiceServer::new(IngestApi::new(Arc::clone(&engine), Arc::clone(&metrics)))
            .max_decoding_message_size(limits.message_bytes_max)
            .max_encoding_message_size(limits.message_bytes_max)
            .accept_compressed(CompressionEncoding::Gzip);
    let profiles = ProfileRoutes::new(ProfileApi::new(Arc::clone(&engine)), limits.message_bytes_max);
    let admin = pb::admin_service_server::AdminServiceServer::new(AdminApi::new(Arc::clone(&engine)))
        .max_decoding_message_size(limits.message_bytes_max)
        .max_encoding_message_size(limits.message_bytes_max);

    let local_addr = listener.local_addr().ok();
    let (stop_accepting, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut builder = transport_builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let router = builder
        .layer(RpcMetricsLayer::new(Arc::clone(&metrics)))
        .layer(AuthLayer::new(
            Arc::new(Gate::new(
                Arc::clone(&registry),
                config.auth.purpose_bytes_max,
                Limiter::new(CallerBounds {
                    calls_per_second: config.auth.calls_per_second,
                    calls_burst: config.auth.calls_burst,
                    concurrent_calls_max: config.auth.concurrent_calls_max,
                }),
                RefusalAudit::new(config.auth.refusal_audit_per_second, config.auth.refusal_audit_burst),
            )),
            Arc::new(Auditor::new(Arc::clone(&engine))),
        ))
        // Inside the auth layer, so a call ended at its deadline is audited like any other.
        .layer(DeadlineLayer::new(CallBounds {
            call_max: bound(config.server.call_deadline_ms),
            admin_call_max: bound(config.server.admin_call_deadline_ms),
        }))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(ingest)
        .add_service(profiles)
        .add_service(admin);
    let incoming = accepted_without_nagle(listener);
    let mut server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = stopped.await;
    }));
    let tls_mode = match (&config.tls.cert_file, &config.tls.client_ca_file) {
        (None, _) => "off",
        (Some(_), None) => "server",
        (Some(_), Some(_)) => "mutual",
    };
    tracing::info!(listen = ?local_addr, data_dir = %config.data_dir.display(), tls = tls_mode, "popmaster serving");
    let reloader = tokio::spawn(reload_callers(
        registry,
        Duration::from_millis(config.auth.reload_interval_ms),
        hangup,
    ));
    let metrics_endpoint =
        metrics_listener.map(|listener| MetricsEndpoint::start(listener, Arc::clone(&metrics), Arc::clone(&engine)));
    let health_watch = tokio::spawn(watch_health(Arc::clone(&engine), health_reporter.clone()));

    tokio::select! {
        result = &mut server => {
            // The transport ended on its own: an error, since nothing asked it to stop.
            reloader.abort();
            health_watch.abort();
            engine.shutdown().await;
            if let Some(endpoint) = metrics_endpoint {
                endpoint.shutdown().await;
            }
            return match result.expect("server task panicked") {
                Ok(()) => Ok(()),
                Err(error) => Err(error.into()),
            };
        }
        () = shutdown => {}
    }
    tracing::info!("shutting down: no new calls accepted");
    reloader.abort();
    // Before the ingest service is marked not serving, so nothing marks it serving again.
    health_watch.abort();
    health_reporter
        .set_not_serving::<pb::ingest_service_server::IngestServiceServer<IngestApi>>()
        .await;
    // Watch streams never end on their own: end them now, so they do not hold the graceful
    // shutdown for the whole grace period.
    engine.close_change_followers();
    let _ = stop_accepting.send(());
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let transport = match tokio::time::timeout(grace, &mut server).await {
        Ok(result) => result.expect("server task panicked"),
        Err(_) => {
            // Open streams can hold the transport's graceful shutdown forever; stop waiting.
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "calls still open after the grace period; closing them"
            );
            server.abort();
            Ok(())
        }
    };
    // A transport error at shutdown still lets queued batches finish and the store checkpoint.
    engine.shutdown().await;
    // Last: the metrics show the shutdown's progress until the engine has stopped.
    if let Some(endpoint) = metrics_endpoint {
        endpoint.shutdown().await;
    }
    transport?;
    tracing::info!("shutdown complete");
    Ok(())
}

/// The server's TLS settings from the PEM files the configuration names; `None` for plain text.
fn server_tls(tls: &crate::config::TlsConfig) -> Result<Option<tonic::transport::ServerTlsConfig>, ServeError> {
    let read = |setting: &'static str, path: &std::path::Path| {
        std::fs::read(path).map_err(|source| ServeError::TlsFile {
            setting,
            path: path.display().to_string(),
            source,
        })
    };
    let (Some(cert_file), Some(key_file)) = (&tls.cert_file, &tls.key_file) else {
        return Ok(None);
    };
    let identity =
        tonic::transport::Identity::from_pem(read("tls.cert_file", cert_file)?, read("tls.key_file", key_file)?);
    let mut server_tls = tonic::transport::ServerTlsConfig::new().identity(identity);
    if let Some(client_ca_file) = &tls.client_ca_file {
        server_tls = server_tls.client_ca_root(tonic::transport::Certificate::from_pem(read(
            "tls.client_ca_file",
            client_ca_file,
        )?));
    }
    Ok(Some(server_tls))
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

/// Listens for SIGHUP when there is a callers file to reread (the open mode leaves the signal's
/// default action alone).
#[cfg(unix)]
fn listen_for_hangup(registry: &CallerRegistry) -> Hangup {
    if registry.is_open() {
        return None;
    }
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; the callers file is still reread when it changes");
            None
        }
    }
}

#[cfg(not(unix))]
fn listen_for_hangup(_registry: &CallerRegistry) -> Hangup {}

/// The gRPC transport as the server sets it up, before TLS and the services: HTTP/2
/// keep-alives every 30 s. (`benches/read_load.rs --canned` serves through it too.)
pub fn transport_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder().http2_keepalive_interval(Some(Duration::from_secs(30)))
}

/// The connections `listener` accepts, with Nagle's algorithm off: small answers must not wait
/// for the peer's delayed ACK (about 40 ms a call).
pub fn accepted_without_nagle(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::StreamExt::map(TcpListenerStream::new(listener), |accepted| {
        accepted.and_then(|stream| {
            stream.set_nodelay(true)?;
            Ok(stream)
        })
    })
}

/// Rereads the callers file on SIGHUP and every `interval` (when it changed); a bad file keeps
/// the callers in force. Runs until aborted; does nothing in the open mode.
async fn reload_callers(registry: Arc<CallerRegistry>, interval: Duration, hangup: Hangup) {
    if registry.is_open() {
        return;
    }
    #[cfg(unix)]
    let mut hangup = hangup;
    #[cfg(not(unix))]
    let () = hangup;
    loop {
        #[cfg(unix)]
        {
            let signalled = async {
                match hangup.as_mut() {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = signalled => tracing::info!("SIGHUP: rereading the callers file"),
                () = tokio::time::sleep(interval) => {}
            }
        }
        #[cfg(not(unix))]
        tokio::time::sleep(interval).await;
        let registry = Arc::clone(&registry);
        let _ = tokio::task::spawn_blocking(move || registry.reload()).await;
    }
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

/// What the health service says, as (service name, status), from the engine's state: the
/// ingest service stops serving once the write path has failed (batches are refused until a
/// restart); every service, and the server as a whole (""), once the store is torn (nothing
/// can be read or written until a restart).
fn health_statuses(health: EngineHealth) -> [(&'static str, ServingStatus); 4] {
    let EngineHealth {
        write_path_failed,
        store_torn,
    } = health;
    use tonic::server::NamedService;
    let status = |failed: bool| {
        if failed {
            ServingStatus::NotServing
        } else {
            ServingStatus::Serving
        }
    };
    [
        ("", status(store_torn)),
        (
            <pb::ingest_service_server::IngestServiceServer<IngestApi> as NamedService>::NAME,
            status(write_path_failed || store_torn),
        ),
        (
            <pb::profile_service_server::ProfileServiceServer<ProfileApi> as NamedService>::NAME,
            status(store_torn),
        ),
        (
            <pb::admin_service_server::AdminServiceServer<AdminApi> as NamedService>::NAME,
            status(store_torn),
        ),
    ]
}

/// Keeps the health service's statuses in step with the engine, checking once a second.
async fn watch_health(engine: Arc<Engine>, reporter: tonic_health::server::HealthReporter) {
    let mut last = health_statuses(EngineHealth::default());
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    loop {
        interval.tick().await;
        let now = health_statuses(engine.health());
        if now == last {
            continue;
        }
        for ((service, status), (_, before)) in now.into_iter().zip(last) {
            if status != before {
                tracing::warn!(service, ?status, "health status changed");
                reporter.set_service_status(service, status).await;
            }
        }
        last = now;
    }
}

/// A bound in milliseconds from the configuration; 0 is none.
fn bound(millis: u64) -> Option<Duration> {
    (millis > 0).then(|| Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not_serving(write_path_failed: bool, store_torn: bool) -> Vec<&'static str> {
        health_statuses(EngineHealth {
            write_path_failed,
            store_torn,
        })
        .into_iter()
        .filter(|(_, status)| *status == ServingStatus::NotServing)
        .map(|(service, _)| service)
        .collect()
    }

    /// A failed write path takes the ingest service out; a torn store takes everything out,
    /// the server as a whole ("") too.
    #[test]
    fn health_follows_the_write_path_and_the_store() {
        assert!(not_serving(false, false).is_empty());
        assert_eq!(not_serving(true, false), ["popmaster.v1.IngestService"]);
        assert_eq!(
            not_serving(true, true),
            [
                "",
                "popmaster.v1.IngestService",
                "popmaster.v1.ProfileService",
                "popmaster.v1.AdminService"
            ]
        );
        assert_eq!(not_serving(false, true).len(), 4);
    }
}
