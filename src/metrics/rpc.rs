//! The tower layer on the gRPC server that counts and times every call: by service, method and
//! status code. It reads only the request path and the response's `grpc-status`; it never looks
//! into a message.
//!
//! A call is measured whole: from the moment the server hands it the request to the moment the
//! status goes out, which for a streaming call (`StreamRecords`, `WatchChanges`,
//! `ExportMapping`) is the end of the stream. The status comes in the response headers when a
//! call fails before answering (a "trailers-only" response) and in the trailers otherwise. A
//! call whose response is dropped before any status (the client went away, or the server's
//! grace period ran out) is counted as `CANCELLED`; a stream that ends with no status as
//! `UNKNOWN`.

use super::{code_name, Metrics};
use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// Wraps a service so that every call through it is measured in `Metrics`.
#[derive(Clone)]
pub struct RpcMetricsLayer {
    metrics: Arc<Metrics>,
}

impl RpcMetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        RpcMetricsLayer { metrics }
    }
}

impl<S> tower_layer::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetricsService {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

#[derive(Clone)]
pub struct RpcMetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, RequestBody, ResponseBody> tower_service::Service<http::Request<RequestBody>> for RpcMetricsService<S>
where
    S: tower_service::Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<MeteredBody<ResponseBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let call = Call::start(Arc::clone(&self.metrics), request.uri().path());
        let response = self.inner.call(request);
        // If this future is dropped before the response (the client reset the call), `call`
        // goes with it and counts the call as cancelled.
        Box::pin(async move {
            let response = response.await?;
            let mut call = Some(call);
            if let Some(code) = grpc_status(response.headers()) {
                if let Some(call) = call.take() {
                    call.end(code);
                }
            }
            Ok(response.map(|inner| MeteredBody { inner, call }))
        })
    }
}

/// The status code in a `grpc-status` header or trailer.
fn grpc_status(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?;
    Some(tonic::Code::from_bytes(value.as_bytes()))
}

/// One call being measured. It is counted once: at `end`, or when dropped unfinished.
struct Call {
    metrics: Arc<Metrics>,
    service: String,
    method: String,
    started: Instant,
    in_flight: Gauge,
    duration: Histogram,
    ended: bool,
}

impl Call {
    fn start(metrics: Arc<Metrics>, path: &str) -> Call {
        let labels = metrics.method_labels(path);
        let in_flight = metrics.rpc_in_flight.get_or_create_owned(&labels);
        in_flight.inc();
        let duration = metrics.rpc_seconds.get_or_create_owned(&labels);
        Call {
            metrics,
            service: labels.service,
            method: labels.method,
            started: Instant::now(),
            in_flight,
            duration,
            ended: false,
        }
    }

    fn end(mut self, code: tonic::Code) {
        self.finish(code);
    }

    fn finish(&mut self, code: tonic::Code) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let elapsed = self.started.elapsed();
        self.in_flight.dec();
        self.duration.observe(elapsed.as_secs_f64());
        let code = code_name(code);
        let labels = super::MethodCodeLabels {
            service: std::mem::take(&mut self.service),
            method: std::mem::take(&mut self.method),
            code,
        };
        self.metrics.rpc_requests.get_or_create(&labels).inc();
        tracing::debug!(
            service = %labels.service,
            method = %labels.method,
            code,
            duration_us = elapsed.as_micros() as u64,
            "call finished"
        );
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(tonic::Code::Cancelled);
    }
}

pin_project_lite::pin_project! {
    /// A response body that ends the call's measurement when its status goes out.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        let code = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame
                .trailers_ref()
                .map(|trailers| grpc_status(trailers).unwrap_or(tonic::Code::Unknown)),
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => Some(tonic::Code::Unknown),
            Poll::Pending => None,
        };
        if let Some(code) = code {
            if let Some(call) = this.call.take() {
                call.end(code);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
