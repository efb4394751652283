//! Deadlines at the gRPC edge: the tower layer that ends a call at its deadline with
//! `DEADLINE_EXCEEDED`. The deadline is the caller's (`grpc-timeout`, for the whole call, a
//! stream included) or the server's own bound on how long a call may take to answer
//! (`server.call_deadline_ms`, `server.admin_call_deadline_ms`), whichever comes first.
//!
//! tonic also honours `grpc-timeout`, but answers `CANCELLED` when it fires; this layer answers
//! a little before it, so the caller hears the status gRPC specifies and the audit layer around
//! it sees the call end. A call whose deadline has passed before it runs is not run at all.
//! Work already handed to the engine (a logged write, a blocking read) is not undone.

use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tonic::Status;

/// How much earlier than the caller's deadline the call is ended, so this layer's answer goes
/// out before tonic's own timer (1 ms granularity) cancels the call.
const ANSWER_MARGIN: Duration = Duration::from_millis(5);

/// The server's bounds on how long a call may take to answer (a stream: to open). `None`: no
/// bound of the server's; the caller's deadline still holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallBounds {
    /// Ingest and profile calls.
    pub call_max: Option<Duration>,
    /// Admin calls: training a model or a steward's action may take long on a large store.
    pub admin_call_max: Option<Duration>,
}

#[derive(Clone)]
pub struct DeadlineLayer {
    bounds: CallBounds,
}

impl DeadlineLayer {
    pub fn new(bounds: CallBounds) -> Self {
        DeadlineLayer { bounds }
    }
}

impl<S> tower_layer::Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            inner,
            bounds: self.bounds,
        }
    }
}

#[derive(Clone)]
pub struct DeadlineService<S> {
    inner: S,
    bounds: CallBounds,
}

/// Whose deadline a call has, for the message that ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Whose {
    Caller(Duration),
    Server(Duration),
}

impl Whose {
    fn status(self) -> Status {
        match self {
            Whose::Caller(timeout) => Status::deadline_exceeded(format!(
                "the call did not finish within the caller's deadline (grpc-timeout {} ms); a write it made may have been applied, read it back",
                timeout.as_millis()
            )),
            Whose::Server(bound) => Status::deadline_exceeded(format!(
                "the call did not answer within the server's bound of {} ms (server.call_deadline_ms or server.admin_call_deadline_ms); a write it made may have been applied, read it back",
                bound.as_millis()
            )),
        }
    }
}

/// A call's deadlines: the one its answer must meet, and the caller's for the whole call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Deadlines {
    answer: Option<(Instant, Whose)>,
    whole_call: Option<(Instant, Whose)>,
}

fn deadlines(path: &str, headers: &http::HeaderMap, bounds: CallBounds, now: Instant) -> Deadlines {
    let caller =
        grpc_timeout(headers).map(|timeout| (now + timeout.saturating_sub(ANSWER_MARGIN), Whose::Caller(timeout)));
    let bound = if path.starts_with("/popmaster.v1.AdminService/") {
        bounds.admin_call_max
    } else if path.starts_with("/popmaster.v1.") {
        bounds.call_max
    } else {
        None
    };
    let server = bound.map(|bound| (now + bound, Whose::Server(bound)));
    let answer = match (caller, server) {
        (Some(caller), Some(server)) => Some(if server.0 < caller.0 { server } else { caller }),
        (caller, server) => caller.or(server),
    };
    Deadlines {
        answer,
        whole_call: caller,
    }
}

/// The caller's `grpc-timeout` (`<at most 8 digits><H|M|S|m|u|n>`); `None` when absent or not
/// well formed (as tonic treats it).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let text = headers.get("grpc-timeout")?.to_str().ok()?;
    let unit = text.chars().last()?;
    let digits = &text[..text.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(value * 3_600),
        'M' => Duration::from_secs(value * 60),
        'S' => Duration::from_secs(value),
        'm' => Duration::from_millis(value),
        'u' => Duration::from_micros(value),
        'n' => Duration::from_nanos(value),
        _ => return None,
    })
}

impl<S, RequestBody, ResponseBody> tower_service::Service<http::Request<RequestBody>> for DeadlineService<S>
where
    S: tower_service::Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    ResponseBody: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<DeadlineBody<ResponseBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let now = Instant::now();
        let Deadlines { answer, whole_call } = deadlines(request.uri().path(), request.headers(), self.bounds, now);
        let Some((answer_by, whose)) = answer else {
            let answer = self.inner.call(request);
            return Box::pin(async move { Ok(answer.await?.map(|body| DeadlineBody::new(body, None))) });
        };
        if answer_by <= now {
            // Past its deadline before it ran: nothing of it runs.
            return Box::pin(async move { Ok(whose.status().into_http()) });
        }
        let answer = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout_at(answer_by, answer).await {
                Ok(response) => Ok(response?.map(|body| DeadlineBody::new(body, whole_call))),
                Err(_) => Ok(whose.status().into_http()),
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that ends with `DEADLINE_EXCEEDED` trailers when the caller's deadline
    /// passes before it has ended (a stream).
    pub struct DeadlineBody<B> {
        #[pin]
        inner: B,
        deadline: Option<(Pin<Box<Sleep>>, Whose)>,
        ended: bool,
    }
}

impl<B> DeadlineBody<B> {
    fn new(inner: B, deadline: Option<(Instant, Whose)>) -> Self {
        DeadlineBody {
            inner,
            deadline: deadline.map(|(at, whose)| (Box::pin(tokio::time::sleep_until(at)), whose)),
            ended: false,
        }
    }
}

impl<B: Default> Default for DeadlineBody<B> {
    fn default() -> Self {
        DeadlineBody::new(B::default(), None)
    }
}

impl<B: Body> Body for DeadlineBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            if frame.is_none() {
                *this.ended = true;
            }
            return Poll::Ready(frame);
        }
        if let Some((sleep, whose)) = this.deadline {
            if sleep.as_mut().poll(cx).is_ready() {
                *this.ended = true;
                let mut trailers = http::HeaderMap::new();
                // A status whose message cannot be a header value is not one of ours.
                let _ = whose.status().add_header(&mut trailers);
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::convert::Infallible;
    use tower_layer::Layer;
    use tower_service::Service;

    fn headers(timeout: Option<&str>) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        if let Some(timeout) = timeout {
            map.insert("grpc-timeout", http::HeaderValue::from_str(timeout).expect("ascii"));
        }
        map
    }

    #[test]
    fn grpc_timeouts_are_read_as_the_spec_writes_them() {
        assert_eq!(grpc_timeout(&headers(Some("1H"))), Some(Duration::from_secs(3_600)));
        assert_eq!(grpc_timeout(&headers(Some("2M"))), Some(Duration::from_secs(120)));
        assert_eq!(grpc_timeout(&headers(Some("30S"))), Some(Duration::from_secs(30)));
        assert_eq!(grpc_timeout(&headers(Some("250m"))), Some(Duration::from_millis(250)));
        assert_eq!(
            grpc_timeout(&headers(Some("99999999u"))),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(grpc_timeout(&headers(Some("0n"))), Some(Duration::ZERO));
        for bad in ["", "m", "123456789m", "12x", "-1S", "1.5S", "S1"] {
            assert_eq!(grpc_timeout(&headers(Some(bad))), None, "{bad:?}");
        }
        assert_eq!(grpc_timeout(&headers(None)), None);
    }

    #[test]
    fn the_earlier_deadline_wins_and_admin_calls_have_their_own_bound() {
        let now = Instant::now();
        let bounds = CallBounds {
            call_max: Some(Duration::from_secs(30)),
            admin_call_max: None,
        };
        let profile = "/popmaster.v1.ProfileService/GetProfile";
        let short = deadlines(profile, &headers(Some("100m")), bounds, now);
        assert_eq!(
            short.answer.map(|(_, whose)| whose),
            Some(Whose::Caller(Duration::from_millis(100)))
        );
        assert_eq!(short.answer.map(|(at, _)| at), Some(now + Duration::from_millis(95)));
        assert_eq!(short.whole_call, short.answer);
        let long = deadlines(profile, &headers(Some("1M")), bounds, now);
        assert_eq!(
            long.answer,
            Some((now + Duration::from_secs(30), Whose::Server(Duration::from_secs(30))))
        );
        assert_eq!(
            long.whole_call.map(|(_, whose)| whose),
            Some(Whose::Caller(Duration::from_secs(60)))
        );
        let none = deadlines(profile, &headers(None), bounds, now);
        assert_eq!(none.whole_call, None);
        let train = deadlines("/popmaster.v1.AdminService/TrainModel", &headers(None), bounds, now);
        assert_eq!(train.answer, None);
        let health = deadlines("/grpc.health.v1.Health/Check", &headers(None), bounds, now);
        assert_eq!(health.answer, None);
    }

    /// A service that answers after `delay` with a body of `frames` frames, one every `delay`.
    #[derive(Clone)]
    struct Slow {
        delay: Duration,
        frames: usize,
    }

    impl Service<http::Request<()>> for Slow {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _request: http::Request<()>) -> Self::Future {
            let Slow { delay, frames } = self.clone();
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                let stream = futures::stream::unfold(0, move |sent| async move {
                    if sent == frames {
                        return None;
                    }
                    tokio::time::sleep(delay).await;
                    Some((Ok::<_, Status>(Frame::data(bytes::Bytes::from_static(b"x"))), sent + 1))
                });
                Ok(http::Response::new(tonic::body::Body::new(
                    http_body_util::StreamBody::new(stream),
                )))
            })
        }
    }

    fn request(timeout: Option<&str>) -> http::Request<()> {
        let mut request = http::Request::builder()
            .uri("/popmaster.v1.ProfileService/GetProfile")
            .body(())
            .expect("request");
        *request.headers_mut() = headers(timeout);
        request
    }

    fn status_of(headers: &http::HeaderMap) -> Option<Status> {
        Status::from_header_map(headers)
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_answer_ends_at_the_earlier_deadline() {
        let bounds = CallBounds {
            call_max: Some(Duration::from_millis(500)),
            admin_call_max: None,
        };
        let mut service = DeadlineLayer::new(bounds).layer(Slow {
            delay: Duration::from_secs(1),
            frames: 0,
        });
        let by_server = service.call(request(None)).await.expect("answer");
        let status = status_of(by_server.headers()).expect("a status");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert!(
            status.message().contains("server's bound of 500 ms"),
            "{}",
            status.message()
        );

        let by_caller = service.call(request(Some("200m"))).await.expect("answer");
        let status = status_of(by_caller.headers()).expect("a status");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert!(status.message().contains("grpc-timeout 200 ms"), "{}", status.message());

        let expired = service.call(request(Some("1m"))).await.expect("answer");
        assert_eq!(
            status_of(expired.headers()).map(|status| status.code()),
            Some(tonic::Code::DeadlineExceeded)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_ends_with_deadline_exceeded_trailers_at_the_callers_deadline() {
        let mut service = DeadlineLayer::new(CallBounds::default()).layer(Slow {
            delay: Duration::from_millis(100),
            frames: 100,
        });
        let response = service.call(request(Some("1S"))).await.expect("answer");
        assert!(status_of(response.headers()).is_none(), "the stream opened");
        let mut body = response.into_body();
        let mut n_data = 0;
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("frame");
            if frame.is_data() {
                n_data += 1;
            } else {
                trailers = frame.into_trailers().ok();
            }
        }
        // Opened after 100 ms, then a frame every 100 ms until the deadline at 995 ms.
        assert_eq!(n_data, 8);
        let status = status_of(&trailers.expect("trailers")).expect("a status");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);

        let mut unbounded = DeadlineLayer::new(CallBounds::default()).layer(Slow {
            delay: Duration::from_millis(1),
            frames: 3,
        });
        let body = unbounded.call(request(None)).await.expect("answer").into_body();
        let collected = body.collect().await.expect("body");
        assert_eq!(collected.to_bytes().len(), 3);
    }
}
