//! The `/metrics` endpoint: plain HTTP/1.1 on its own port (never the gRPC port), answering
//! `GET /metrics` in the Prometheus text format. Each scrape reads the gauges from the engine on
//! a blocking thread: counters of the store and the size of its one data file (no record is
//! read, no directory walked). Stops with the server.

use super::Metrics;
use crate::engine::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// Scrapers connected at once; a connection beyond this is closed at once. Prometheus keeps one
/// connection per target, so a handful is plenty, and the bound keeps idle connections from
/// piling up.
const CONNECTIONS_MAX: usize = 16;
/// A scraper must send its request headers within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait before accepting again after `accept` failed (out of file descriptors).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The running endpoint; `shutdown` stops it.
pub struct MetricsEndpoint {
    local_addr: Option<SocketAddr>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl MetricsEndpoint {
    /// Serves `/metrics` on `listener` until `shutdown`.
    pub fn start(listener: TcpListener, metrics: Arc<Metrics>, engine: Arc<Engine>) -> MetricsEndpoint {
        let local_addr = listener.local_addr().ok();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, metrics, engine, stopped));
        match local_addr {
            Some(addr) => tracing::info!(listen = %addr, "metrics endpoint serving /metrics"),
            None => tracing::info!("metrics endpoint serving /metrics"),
        }
        MetricsEndpoint { local_addr, stop, task }
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Closes the port and ends every open connection (a scrape in progress is cut off).
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    engine: Arc<Engine>,
    mut stopped: oneshot::Receiver<()>,
) {
    // Dropping the set at the end aborts the connections still open.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) if connections.len() < CONNECTIONS_MAX => {
                    connections.spawn(serve_connection(stream, Arc::clone(&metrics), Arc::clone(&engine)));
                }
                Ok(_) => tracing::warn!(connections_max = CONNECTIONS_MAX, "too many metrics connections; closed a new one"),
                Err(error) => {
                    tracing::warn!(%error, "metrics endpoint cannot accept a connection");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            },
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve_connection(stream: TcpStream, metrics: Arc<Metrics>, engine: Arc<Engine>) {
    let service = hyper::service::service_fn(move |request| {
        let metrics = Arc::clone(&metrics);
        let engine = Arc::clone(&engine);
        async move { Ok::<_, Infallible>(answer(&request, metrics, engine).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(error) = served {
        tracing::debug!(%error, "metrics connection ended with an error");
    }
}

fn plain(status: http::StatusCode, text: &'static str) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn answer<B>(
    request: &http::Request<B>,
    metrics: Arc<Metrics>,
    engine: Arc<Engine>,
) -> http::Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return plain(http::StatusCode::NOT_FOUND, "not found; the metrics are at /metrics\n");
    }
    if request.method() != http::Method::GET && request.method() != http::Method::HEAD {
        return plain(http::StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    let text = tokio::task::spawn_blocking(move || {
        let health = engine.health();
        let stats = match engine.stats() {
            Ok(stats) => {
                if metrics.note_store_readable(true) {
                    tracing::info!("metrics scrape reads the store again");
                }
                Some(stats)
            }
            Err(error) => {
                // Once when it starts, not at every scrape.
                if metrics.note_store_readable(false) {
                    tracing::error!(%error, "metrics scrape cannot read the store; answering without its figures");
                }
                None
            }
        };
        metrics.encode(stats.as_ref(), health)
    })
    .await
    .expect("metrics scrape task panicked");
    let mut response = http::Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(prometheus_client::encoding::prometheus_text::CONTENT_TYPE),
    );
    response
}
