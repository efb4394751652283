//! Caller identity at the gRPC edge: the tower layer that authenticates every call
//! (`authorization: Bearer <token>`), authorizes it by the role its method needs, takes the
//! reader's purpose (`x-purpose`), and hands the handlers an `Identity`; the registry of
//! callers, reloaded from the callers file without a restart. Health and reflection stay open.
//! The finer rules (which sources a writer writes, which tags a reader reads) are in `access`.
//! Every call but health and reflection leaves an audit entry (`audit`), refusals included,
//! written before its answer goes out. Never logs a token; a denial names the caller id and
//! the method, nothing a caller sent.

use super::audit::{AuditNote, Auditor};
use super::limiter::{CallPermit, Limiter, RefusalAudit};
use crate::callers::{Caller, Callers, CallersError};
use crate::catalog::Catalog;
use crate::model::Actor;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use tonic::Status;

/// The header a reader states its purpose in (printable ASCII).
pub const PURPOSE_HEADER: &str = "x-purpose";
/// The same as binary metadata (base64 on the wire), for a purpose in any language.
pub const PURPOSE_BIN_HEADER: &str = "x-purpose-bin";

/// Who is calling and why: put into every authorized call's extensions by the layer.
#[derive(Debug, Clone)]
pub struct Identity {
    pub caller: Arc<Caller>,
    /// The stated purpose (required of reads when auth is on), checked for length and for
    /// control characters.
    pub purpose: Option<String>,
}

impl Identity {
    pub fn caller_id(&self) -> &str {
        &self.caller.id
    }

    /// This caller as the actor of a change made by `method`, for the change's audit entry.
    pub fn actor(&self, method: &str, detail: impl Into<String>) -> Actor {
        Actor {
            caller: self.caller.id.clone(),
            purpose: self.purpose.clone().unwrap_or_default(),
            action: method.to_string(),
            detail: detail.into(),
        }
    }
}

/// The identity of a call, as the layer left it. A call without one (which the layer never
/// lets through) is refused rather than served.
pub fn identity<T>(request: &tonic::Request<T>) -> Result<Identity, Status> {
    request
        .extensions()
        .get::<Identity>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("the call carries no caller identity"))
}

/// The callers in force: the open mode, or the latest valid version of the callers file.
pub struct CallerRegistry {
    mode: Mode,
}

enum Mode {
    Open(Arc<Caller>),
    File {
        path: PathBuf,
        catalog: Catalog,
        current: RwLock<Arc<Callers>>,
        /// The SHA-256 of the text last loaded or refused, so an unchanged file is not parsed
        /// (nor a bad one logged) again.
        last_text: Mutex<[u8; 32]>,
    },
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    Loaded {
        n_callers: usize,
    },
    /// The file was bad; the callers before it stay in force.
    Refused,
}

impl CallerRegistry {
    pub fn open() -> CallerRegistry {
        CallerRegistry {
            mode: Mode::Open(Arc::new(Caller::open())),
        }
    }

    /// Loads the callers file; a bad file at start is an error (nothing to fall back on).
    pub fn load(path: &Path, catalog: Catalog) -> Result<CallerRegistry, CallersError> {
        let text = std::fs::read_to_string(path).map_err(|source| CallersError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let callers = Callers::parse(&text, &catalog)?;
        tracing::info!(n_callers = callers.n_callers(), path = %path.display(), "callers loaded");
        Ok(CallerRegistry {
            mode: Mode::File {
                path: path.to_path_buf(),
                catalog,
                current: RwLock::new(Arc::new(callers)),
                last_text: Mutex::new(crate::callers::hash_token(&text)),
            },
        })
    }

    pub fn is_open(&self) -> bool {
        matches!(self.mode, Mode::Open(_))
    }

    /// Rereads the callers file. A file that cannot be read or parsed keeps the callers in
    /// force, and the log says why (once per version of the file).
    pub fn reload(&self) -> Reload {
        let Mode::File {
            path,
            catalog,
            current,
            last_text,
        } = &self.mode
        else {
            return Reload::Unchanged;
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) => {
                let fingerprint = crate::callers::hash_token(&format!("\0unreadable {}", error.kind()));
                let mut last = last_text.lock().expect("reload lock");
                if *last != fingerprint {
                    *last = fingerprint;
                    tracing::error!(path = %path.display(), %error, "cannot read the callers file; the callers loaded before stay in force");
                }
                return Reload::Refused;
            }
        };
        let fingerprint = crate::callers::hash_token(&text);
        let mut last = last_text.lock().expect("reload lock");
        if *last == fingerprint {
            return Reload::Unchanged;
        }
        *last = fingerprint;
        match Callers::parse(&text, catalog) {
            Ok(callers) => {
                let n_callers = callers.n_callers();
                *current.write().expect("callers lock") = Arc::new(callers);
                tracing::info!(n_callers, path = %path.display(), "callers reloaded");
                Reload::Loaded { n_callers }
            }
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "the callers file is invalid; the callers loaded before stay in force");
                Reload::Refused
            }
        }
    }

    /// The caller a bearer token belongs to.
    fn authenticate(&self, token: Option<&str>) -> Result<Arc<Caller>, Status> {
        match &self.mode {
            Mode::Open(caller) => Ok(Arc::clone(caller)),
            Mode::File { current, .. } => {
                let token = token.ok_or_else(|| {
                    Status::unauthenticated("no bearer token: send the header authorization: Bearer <token>")
                })?;
                let callers = Arc::clone(&current.read().expect("callers lock"));
                callers
                    .authenticate(token)
                    .ok_or_else(|| Status::unauthenticated("the bearer token is not valid (unknown or revoked)"))
            }
        }
    }
}

/// What a method needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Health and reflection: no identity at all.
    Nothing,
    /// Any authenticated caller (the catalog).
    AnyCaller,
    /// A writer; which sources, the handler checks against each record.
    Writer,
    /// A reader with a purpose; which tags, the handler checks.
    Reader,
    /// A reader or a steward (ids, explanations and histories: no values).
    ReaderOrSteward,
    Steward,
    Operator,
}

impl Need {
    fn words(self) -> &'static str {
        match self {
            Need::Nothing | Need::AnyCaller => "any caller",
            Need::Writer => "the writer role",
            Need::Reader => "the reader role",
            Need::ReaderOrSteward => "the reader or the steward role",
            Need::Steward => "the steward role",
            Need::Operator => "the operator role",
        }
    }

    fn granted_to(self, caller: &Caller) -> bool {
        match self {
            Need::Nothing | Need::AnyCaller => true,
            Need::Writer => caller.is_writer(),
            Need::Reader => caller.reader.is_some(),
            Need::ReaderOrSteward => caller.reader.is_some() || caller.steward,
            Need::Steward => caller.steward,
            Need::Operator => caller.operator,
        }
    }
}

/// The role each method of the contract needs. A method missing here needs the operator role,
/// so a new RPC is closed until someone decides who may call it.
pub fn method_need(path: &str) -> Need {
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
        return Need::Operator;
    };
    match service {
        "grpc.health.v1.Health"
        | "grpc.reflection.v1.ServerReflection"
        | "grpc.reflection.v1alpha.ServerReflection" => Need::Nothing,
        "popmaster.v1.IngestService" => match method {
            "StreamRecords" | "DeleteRecord" => Need::Writer,
            _ => Need::Operator,
        },
        "popmaster.v1.ProfileService" => match method {
            "GetProfile"
            | "GetProfileByIdNumber"
            | "BatchGetProfiles"
            | "GetPersonByRecord"
            | "ExportProfiles"
            | "SearchPersons"
            | "GetTagLineage"
            | "ExportMapping"
            | "WatchChanges" => Need::Reader,
            "ExplainRecord" | "ExplainPair" | "GetProfileHistory" => Need::ReaderOrSteward,
            _ => Need::Operator,
        },
        "popmaster.v1.AdminService" => match method {
            "GetCatalog" => Need::AnyCaller,
            "Merge" | "Unmerge" | "ListReviewItems" | "ResolveReviewItem" => Need::Steward,
            _ => Need::Operator,
        },
        _ => Need::Operator,
    }
}

/// The method part of a path, for messages: `ProfileService/GetProfile`.
pub fn method_words(path: &str) -> &str {
    let path = path.trim_start_matches('/');
    path.split_once('.')
        .and_then(|(_, rest)| rest.rsplit_once('.').map(|(_, method)| method))
        .unwrap_or(path)
}

/// A purpose as sent: printable ASCII (gRPC metadata is ASCII), not empty, within the bound.
fn purpose(headers: &http::HeaderMap, bytes_max: usize) -> Result<Option<String>, Status> {
    let text = match (headers.get(PURPOSE_HEADER), headers.get(PURPOSE_BIN_HEADER)) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(Status::invalid_argument(format!(
                "state the purpose once: in {PURPOSE_HEADER} or in {PURPOSE_BIN_HEADER}, not both"
            )))
        }
        (Some(value), None) => value
            .to_str()
            .ok()
            .filter(|text| text.bytes().all(|byte| (0x20..0x7f).contains(&byte)))
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "{PURPOSE_HEADER} must be printable ASCII; state another purpose in {PURPOSE_BIN_HEADER} (UTF-8)"
                ))
            })?
            .to_string(),
        (None, Some(value)) => {
            let mut only = http::HeaderMap::new();
            only.insert(PURPOSE_BIN_HEADER, value.clone());
            tonic::metadata::MetadataMap::from_headers(only)
                .get_bin(PURPOSE_BIN_HEADER)
                .and_then(|value| value.to_bytes().ok())
                .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok())
                .filter(|text| !text.chars().any(char::is_control))
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "{PURPOSE_BIN_HEADER} must be base64 of UTF-8 text without control characters"
                    ))
                })?
        }
    };
    let text = text.trim();
    if text.len() > bytes_max {
        return Err(Status::invalid_argument(format!(
            "the purpose is longer than {bytes_max} bytes"
        )));
    }
    Ok((!text.is_empty()).then(|| text.to_string()))
}

fn bearer_token(headers: &http::HeaderMap) -> Result<Option<&str>, Status> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization header is not ASCII"))?;
    match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Ok(Some(token.trim()))
        }
        _ => Err(Status::unauthenticated(
            "the authorization header is not \"Bearer <token>\"",
        )),
    }
}

/// Decides one call: its identity, or the status that refuses it.
pub struct Gate {
    registry: Arc<CallerRegistry>,
    purpose_bytes_max: usize,
    limiter: Limiter,
    refusal_audit: RefusalAudit,
}

/// An admitted call: who, and the caller's open-call permit, held until the call ends.
pub struct Admitted {
    pub identity: Identity,
    pub permit: Option<CallPermit>,
}

/// A refused call: the status, and the caller when it was known (for the audit).
pub struct Refusal {
    pub status: Status,
    pub caller: Option<Arc<Caller>>,
}

impl Gate {
    pub fn new(
        registry: Arc<CallerRegistry>,
        purpose_bytes_max: usize,
        limiter: Limiter,
        refusal_audit: RefusalAudit,
    ) -> Gate {
        Gate {
            registry,
            purpose_bytes_max,
            limiter,
            refusal_audit,
        }
    }

    /// `None` for a call that needs no identity (health, reflection).
    pub fn admit(&self, path: &str, headers: &http::HeaderMap) -> Result<Option<Admitted>, Refusal> {
        let need = method_need(path);
        if need == Need::Nothing {
            return Ok(None);
        }
        let refuse = |status: Status, caller: Option<Arc<Caller>>| Refusal { status, caller };
        let token = bearer_token(headers).map_err(|status| refuse(status, None))?;
        let caller = self
            .registry
            .authenticate(token)
            .map_err(|status| refuse(status, None))?;
        let method = method_words(path);
        if !need.granted_to(&caller) {
            let status = Status::permission_denied(format!(
                "caller {} may not call {method}: it needs {}",
                caller.id,
                need.words()
            ));
            return Err(refuse(status, Some(caller)));
        }
        let purpose =
            purpose(headers, self.purpose_bytes_max).map_err(|status| refuse(status, Some(Arc::clone(&caller))))?;
        if need == Need::Reader && purpose.is_none() && !self.registry.is_open() {
            let status = Status::permission_denied(format!(
                "caller {} must state the purpose of {method} in the {PURPOSE_HEADER} header",
                caller.id
            ));
            return Err(refuse(status, Some(caller)));
        }
        // Last: a refused call takes nothing from the caller's bucket.
        let permit = self
            .limiter
            .admit(&caller)
            .map_err(|status| refuse(status, Some(Arc::clone(&caller))))?;
        Ok(Some(Admitted {
            identity: Identity { caller, purpose },
            permit,
        }))
    }
}

/// The tower layer that puts the gate in front of every service and audits every call.
#[derive(Clone)]
pub struct AuthLayer {
    gate: Arc<Gate>,
    auditor: Arc<Auditor>,
}

impl AuthLayer {
    pub fn new(gate: Arc<Gate>, auditor: Arc<Auditor>) -> Self {
        AuthLayer { gate, auditor }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            gate: Arc::clone(&self.gate),
            auditor: Arc::clone(&self.auditor),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    gate: Arc<Gate>,
    auditor: Arc<Auditor>,
}

impl<S, RequestBody, ResponseBody> tower_service::Service<http::Request<RequestBody>> for AuthService<S>
where
    S: tower_service::Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    ResponseBody: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<PermittedBody<ResponseBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<RequestBody>) -> Self::Future {
        let method = method_words(request.uri().path()).to_string();
        let auditor = Arc::clone(&self.auditor);
        match self.gate.admit(request.uri().path(), request.headers()) {
            Ok(None) => {
                let answer = self.inner.call(request);
                Box::pin(async move { Ok(answer.await?.map(|inner| PermittedBody { inner, permit: None })) })
            }
            Err(refusal) => {
                // Anyone who reaches the port can be refused for want of a token, and a caller
                // over its limits is refused as fast as it calls: those refusals are audited (and
                // logged) at a bounded rate, the rest counted.
                let flood_kind = match (&refusal.caller, refusal.status.code()) {
                    (None, _) => Some(""),
                    (Some(caller), tonic::Code::ResourceExhausted) => Some(caller.id.as_str()),
                    (Some(_), _) => None,
                };
                let left_out = flood_kind.map_or(Some(0), |kind| {
                    self.gate.refusal_audit.admit(kind, std::time::Instant::now())
                });
                let status = refusal.status.clone();
                let Some(left_out) = left_out else {
                    return Box::pin(async move { Ok(status.into_http::<PermittedBody<ResponseBody>>()) });
                };
                tracing::info!(
                    method,
                    caller = refusal.caller.as_ref().map_or("", |caller| caller.id.as_str()),
                    code = ?refusal.status.code(),
                    "call refused"
                );
                if left_out > 0 {
                    tracing::warn!(
                        n_refusals = left_out,
                        "refusals were not audited one by one (over auth.refusal_audit_per_second)"
                    );
                }
                let detail = match (refusal.caller.is_none(), peer_address(&request)) {
                    (false, _) if left_out == 0 => String::new(),
                    (false, _) => format!("{left_out} earlier refusals over its limits were not audited one by one"),
                    (true, peer) => {
                        let peer = peer.map_or_else(|| "unknown".to_string(), |peer| peer.to_string());
                        if left_out == 0 {
                            format!("peer {peer}")
                        } else {
                            format!("peer {peer}; {left_out} earlier refusals without a valid token were not audited one by one")
                        }
                    }
                };
                let stated = purpose(request.headers(), usize::MAX).ok().flatten();
                Box::pin(async move {
                    // The refusal stands whether or not its entry could be written.
                    let _ = auditor.refused(&method, &refusal, stated.as_deref(), detail).await;
                    Ok(status.into_http::<PermittedBody<ResponseBody>>())
                })
            }
            Ok(Some(Admitted { identity, permit })) => {
                request.extensions_mut().insert(identity.clone());
                let answer = self.inner.call(request);
                Box::pin(async move {
                    let mut response = answer.await?;
                    let note = response.extensions_mut().remove::<AuditNote>().unwrap_or_default();
                    // A refusal or failure comes as a trailers-only answer: its status is in the
                    // headers. Otherwise the call answered (a stream: it opened).
                    let (code, message) = match Status::from_header_map(response.headers()) {
                        Some(status) => (status.code(), status.message().to_string()),
                        None => (tonic::Code::Ok, String::new()),
                    };
                    if code == tonic::Code::Ok && note.written {
                        return Ok(response.map(|inner| PermittedBody { inner, permit }));
                    }
                    if code == tonic::Code::DeadlineExceeded {
                        // The caller's deadline is upon the call: answer now, or tonic cancels
                        // it. Nothing is shared, and the entry is written all the same.
                        tokio::spawn(async move {
                            let _ = auditor.call(&identity, &method, code, &message, note).await;
                        });
                        return Ok(response.map(|inner| PermittedBody { inner, permit }));
                    }
                    match auditor.call(&identity, &method, code, &message, note).await {
                        // The permit goes with the answer: a stream holds it until it ends.
                        Ok(()) => Ok(response.map(|inner| PermittedBody { inner, permit })),
                        // Nothing leaves unaudited.
                        Err(status) => Ok(status.into_http::<PermittedBody<ResponseBody>>()),
                    }
                })
            }
        }
    }
}

/// The address a call came from, as the transport saw it (plain TCP or TLS).
fn peer_address<B>(request: &http::Request<B>) -> Option<std::net::SocketAddr> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.get_ref().remote_addr())
        })
}

pin_project_lite::pin_project! {
    /// A response body that holds its call's open-call permit until it is dropped (a stream:
    /// when it ends).
    pub struct PermittedBody<B> {
        #[pin]
        inner: B,
        permit: Option<CallPermit>,
    }
}

impl<B: Default> Default for PermittedBody<B> {
    fn default() -> Self {
        PermittedBody {
            inner: B::default(),
            permit: None,
        }
    }
}

impl<B: Body> Body for PermittedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(path: &str, expected: Need) {
        assert_eq!(method_need(path), expected);
    }

    #[test]
    fn every_method_has_its_role() {
        check("/grpc.health.v1.Health/Check", Need::Nothing);
        check(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            Need::Nothing,
        );
        check("/popmaster.v1.IngestService/StreamRecords", Need::Writer);
        check("/popmaster.v1.IngestService/DeleteRecord", Need::Writer);
        check("/popmaster.v1.ProfileService/GetProfile", Need::Reader);
        check("/popmaster.v1.ProfileService/SearchPersons", Need::Reader);
        check("/popmaster.v1.ProfileService/GetProfileHistory", Need::ReaderOrSteward);
        check("/popmaster.v1.AdminService/Merge", Need::Steward);
        check("/popmaster.v1.AdminService/ResolveReviewItem", Need::Steward);
        check("/popmaster.v1.AdminService/Backup", Need::Operator);
        check("/popmaster.v1.AdminService/GetCatalog", Need::AnyCaller);
        check("/popmaster.v1.AdminService/SomethingNew", Need::Operator);
        check("/elsewhere.Service/Call", Need::Operator);
        check("garbage", Need::Operator);
    }

    #[test]
    fn method_names_for_messages() {
        assert_eq!(
            method_words("/popmaster.v1.ProfileService/GetProfile"),
            "ProfileService/GetProfile"
        );
        assert_eq!(method_words("/grpc.health.v1.Health/Check"), "Health/Check");
        assert_eq!(method_words("odd"), "odd");
    }

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                http::header::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                http::HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    #[test]
    fn bearer_tokens_and_purposes_are_read_strictly() {
        assert_eq!(bearer_token(&headers(&[])).ok(), Some(None));
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Bearer abc")])).ok(),
            Some(Some("abc"))
        );
        assert!(bearer_token(&headers(&[("authorization", "Basic abc")])).is_err());
        assert!(bearer_token(&headers(&[("authorization", "Bearer ")])).is_err());
        assert_eq!(
            purpose(&headers(&[("x-purpose", " case 12 ")]), 10).ok(),
            Some(Some("case 12".to_string()))
        );
        assert_eq!(purpose(&headers(&[("x-purpose", "  ")]), 10).ok(), Some(None));
        let too_long = purpose(&headers(&[("x-purpose", "a very long purpose")]), 10).expect_err("long");
        assert_eq!(too_long.message(), "the purpose is longer than 10 bytes");
        // 社保核查 (a social-security check) as binary metadata: base64 of its UTF-8.
        assert_eq!(
            purpose(&headers(&[("x-purpose-bin", "56S+5L+d5qC45p+l")]), 64).ok(),
            Some(Some("社保核查".to_string()))
        );
        // Unpadded base64 is what gRPC sends; padded is accepted too.
        assert_eq!(
            purpose(&headers(&[("x-purpose-bin", "Y2FzZSAx")]), 64).ok(),
            Some(Some("case 1".to_string()))
        );
        assert_eq!(
            purpose(&headers(&[("x-purpose-bin", "56S+5L+d5qC45p+l")]), 6)
                .expect_err("12 bytes")
                .message(),
            "the purpose is longer than 6 bytes"
        );
        for bad in [
            "not base64!",
            "AAE", /* 0x00 0x01: control characters */
            "/w",  /* 0xff: not UTF-8 */
        ] {
            let refused = purpose(&headers(&[("x-purpose-bin", bad)]), 64).expect_err(bad);
            assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{bad}");
        }
        let twice = purpose(&headers(&[("x-purpose", "a"), ("x-purpose-bin", "Yg")]), 64).expect_err("twice");
        assert!(twice.message().starts_with("state the purpose once"));
    }
}
