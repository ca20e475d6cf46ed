//! The HTTP JSON API (`/api/v1`), `/healthz`, `/metrics` and the dashboard
//! page, served with hyper. Owns the listener and its limits (`server`),
//! authentication (the admin bearer token or a dashboard session, `auth`),
//! request decoding and error mapping (by the engine error's class, never its
//! text); every operation is a call of the engine's `Service`, run off the async
//! threads. The route table (`handlers::TABLE`, listed by [`routes`]) is what
//! `docs/API.md` documents (a test checks the two agree).

mod auth;
pub use auth::ct_eq;
mod handlers;
pub use handlers::{DEFAULT_HEARTBEAT, HEARTBEAT_HEADER};
mod hooks;
mod metrics;
mod pages;
mod server;
mod session;
mod token;

pub use server::{serve, Limits};
pub use session::SESSION_COOKIE;
pub use token::{load_or_create_token, TOKEN_FILE};

use crate::engine::{EngineError, ErrorKind, LocalService};
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::body::{Body, Frame, Incoming};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// Every route: method and path pattern (`{x}` is a path parameter), from the
/// route table.
pub fn routes() -> Vec<(String, &'static str)> {
    handlers::TABLE
        .iter()
        .map(|r| (r.method.to_string(), r.pattern))
        .collect()
}

/// What the API needs.
pub struct Api {
    /// The engine over the daemon's running job queue.
    pub service: LocalService,
    pub token: SecretString,
    /// The instance key of this daemon (in `daemon.json`): `/healthz?challenge=`
    /// proves it without showing it (see [`instance_proof`]).
    pub instance: SecretString,
    /// Whether the daemon speaks TLS (its origin is `https://`, cookies are `Secure`).
    pub tls: bool,
    /// How long a client may take to send a request body.
    pub body_timeout: Duration,
    /// The signed-in dashboard browsers.
    sessions: session::Sessions,
    /// The rate limits of `/hooks/{connection}`.
    hook_limiter: hooks::HookLimiter,
    /// Where the admin token is kept (the sign-in page tells).
    pub token_file: String,
}

impl Api {
    pub fn new(service: LocalService, token: SecretString, instance: SecretString) -> Api {
        Api {
            service,
            token,
            instance,
            tls: false,
            body_timeout: Limits::default().timeout,
            sessions: session::Sessions::default(),
            hook_limiter: hooks::HookLimiter::default(),
            token_file: TOKEN_FILE.to_string(),
        }
    }
}

/// What a client must answer to `/healthz?challenge=C` to prove it is the daemon
/// whose `daemon.json` holds `instance`: keyed BLAKE3 of the challenge, hex.
pub fn instance_proof(instance: &str, challenge: &str) -> String {
    let key = blake3::hash(instance.as_bytes());
    blake3::keyed_hash(key.as_bytes(), challenge.as_bytes())
        .to_hex()
        .to_string()
}

pub type ApiBody = BoxBody<Bytes, Infallible>;
/// A request body (the connection's, or a form already read by `auth`).
pub type ReqBody = BoxBody<Bytes, hyper::Error>;

/// The largest request body the API reads.
pub const BODY_LIMIT: usize = 1 << 20;

/// An API failure: status and a message naming what is wrong.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            field: None,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

/// The status code of each class of engine error.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Provider => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The class of an error status the API answers itself (not from the engine).
fn kind_of(status: StatusCode) -> ErrorKind {
    match status.as_u16() {
        401 | 403 => ErrorKind::Unauthorized,
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Conflict,
        422 => ErrorKind::Provider,
        503 => ErrorKind::Unavailable,
        s if s >= 500 => ErrorKind::Internal,
        _ => ErrorKind::Invalid,
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        ApiError {
            status: status_of(e.kind()),
            message: e.to_string(),
            field: e.field().map(str::to_string),
        }
    }
}

pub fn json_response<T: Serialize>(status: StatusCode, v: &T) -> Response<ApiBody> {
    match serde_json::to_vec_pretty(v) {
        Ok(mut body) => {
            body.push(b'\n');
            reply(status, "application/json", body)
        }
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("cannot encode the answer: {e}\n").into_bytes(),
        ),
    }
}

pub fn reply(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<ApiBody> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert("content-type", v);
    }
    r
}

/// The JSON body of an error answer.
#[derive(Serialize)]
pub(crate) struct ErrorBody<'a> {
    error: &'a str,
    /// The error's class, so a client can rebuild it (see `engine::ErrorKind`).
    kind: ErrorKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub(crate) fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            error: &self.message,
            kind: kind_of(self.status),
            field: self.field.as_deref(),
        }
    }
}

pub(crate) fn error_response(e: ApiError) -> Response<ApiBody> {
    json_response(e.status, &e.body())
}

/// A streaming body fed from a channel (Server-Sent Events).
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(b)) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl ChannelBody {
    pub fn new(rx: mpsc::Receiver<Bytes>) -> ChannelBody {
        ChannelBody { rx }
    }
}

/// Reads a JSON request body (at most [`BODY_LIMIT`]).
pub async fn read_body(api: &Api, req: Request<ReqBody>) -> Result<Bytes, ApiError> {
    let (parts, body) = req.into_parts();
    read_limited(api, body, BODY_LIMIT, &parts.headers).await
}

/// Reads a body of at most `limit` bytes within the API's body timeout: 413 when
/// larger (at once when its `Content-Length` says so), 408 when too slow.
pub async fn read_limited(
    api: &Api,
    body: ReqBody,
    limit: usize,
    headers: &HeaderMap,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {} KiB", limit >> 10),
        )
    };
    let declared = headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(api.body_timeout, Limited::new(body, limit).collect()).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(ApiError::bad_request(format!(
            "cannot read the request body: {e}"
        ))),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s",
                api.body_timeout.as_secs_f32()
            ),
        )),
    }
}

/// Whether the request says its body is JSON.
pub fn is_json<B>(req: &Request<B>) -> bool {
    auth::header(req, "content-type").is_some_and(|t| {
        t.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("application/json")
    })
}

/// 415 unless the request body is declared JSON.
pub fn require_json<B>(req: &Request<B>) -> Result<(), ApiError> {
    if is_json(req) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!(
            "API request bodies are JSON: send `Content-Type: application/json` (got {})",
            auth::header(req, "content-type")
                .map(|t| format!("{t:?}"))
                .unwrap_or_else(|| "none".into())
        ),
    ))
}

/// Whether the request has a body (a length above zero, or chunked).
fn has_body<B>(req: &Request<B>) -> bool {
    req.headers().contains_key(hyper::header::TRANSFER_ENCODING)
        || auth::header(req, "content-length")
            .is_some_and(|l| l.trim().parse::<u64>().map_or(true, |n| n > 0))
}

/// `GET /healthz`: `{"status":"ok"}`, with `"proof"` of the instance key when
/// asked with `?challenge=` (at most 256 bytes).
fn health<B>(api: &Api, req: &Request<B>) -> Response<ApiBody> {
    let challenge = req.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "challenge")
            .map(|(_, v)| v.into_owned())
    });
    match challenge {
        None => reply(StatusCode::OK, "application/json", "{\"status\":\"ok\"}\n"),
        Some(c) if c.is_empty() || c.len() > 256 => error_response(ApiError {
            field: Some("challenge".into()),
            ..ApiError::bad_request("challenge: give 1 to 256 characters")
        }),
        Some(c) => json_response(
            StatusCode::OK,
            &serde_json::json!({
                "status": "ok",
                "proof": instance_proof(api.instance.expose_secret(), &c),
            }),
        ),
    }
}

/// Decodes JSON, naming the bad or unknown field in the error.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "the request needs a JSON body (Content-Type: application/json)",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let msg = without_quoted_values(&e.to_string());
        let field = msg
            .split('`')
            .nth(1)
            .filter(|_| msg.contains("field"))
            .map(str::to_string);
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("invalid JSON body: {msg}"),
            field,
        }
    })
}

/// serde quotes the offending value of a bad body (`invalid type: string "…"`,
/// `unknown variant `…``), which may be a secret put in the wrong place by a client:
/// keep what was wrong, drop the value.
fn without_quoted_values(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    loop {
        let string = rest.find("string \"").map(|i| (i, "string", "\""));
        let variant = rest.find("variant `").map(|i| (i, "variant", "`"));
        let next = match (string, variant) {
            (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
            (a, b) => a.or(b),
        };
        let Some((i, word, quote)) = next else { break };
        out.push_str(&rest[..i + word.len()]);
        let value = &rest[i + word.len() + 1 + quote.len()..];
        // serde puts `", expected` / "`, expected" right after the value.
        rest = match value.find(&format!("{quote}, expected")) {
            Some(end) => &value[end + quote.len()..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

/// Handles one request.
pub async fn handle(
    api: Arc<Api>,
    req: Request<Incoming>,
) -> Result<Response<ApiBody>, Infallible> {
    let req = req.map(BodyExt::boxed);
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if path == "/healthz" {
        return Ok(if method == Method::GET {
            health(&api, &req)
        } else {
            error_response(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "use GET /healthz",
            ))
        });
    }
    if path == "/login" {
        return Ok(handlers::login(&api, req).await);
    }
    // Push webhooks: authenticated by their signature, not the token.
    if let Some(connection) = handlers::hook_connection(&path) {
        return Ok(hooks::handle(api, req, connection).await);
    }
    if method == Method::GET {
        if let Some(asset) = pages::asset(&path) {
            return Ok(asset);
        }
    }
    if path == "/oauth/callback" {
        // Before authentication: the Connect flow's single-use state is the proof.
        return Ok(handlers::dispatch(api, req, &method, &path)
            .await
            .unwrap_or_else(error_response));
    }
    let req = match auth::admit(&api, req).await {
        Ok(req) => req,
        Err(refused) => return Ok(refused),
    };
    // API bodies are JSON: a form or text body is refused before any route sees it.
    let checked = if path.starts_with("/api/") && has_body(&req) {
        require_json(&req)
    } else {
        Ok(())
    };
    let result = match checked {
        Ok(()) if pages::is_page(&method, &path) => pages::serve(api, req).await,
        Ok(()) => handlers::dispatch(api, req, &method, &path).await,
        Err(e) => Err(e),
    };
    Ok(match result {
        Ok(r) => r,
        Err(e) => {
            if e.status.is_server_error() {
                tracing::warn!("{method} {path}: {}", e.message);
            }
            error_response(e)
        }
    })
}

/// Runs blocking engine work off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::routes;

    /// Every class of engine error has its own status, and the class an error body
    /// carries maps back to the same status.
    #[test]
    fn statuses_by_error_class() {
        use super::{kind_of, status_of};
        use crate::engine::ErrorKind as K;
        let all = [
            K::Invalid,
            K::NotFound,
            K::Conflict,
            K::Unauthorized,
            K::Provider,
            K::Unavailable,
            K::Internal,
        ];
        let codes: Vec<u16> = all.iter().map(|k| status_of(*k).as_u16()).collect();
        assert_eq!(codes, [400, 404, 409, 401, 422, 503, 500]);
        for k in all {
            assert_eq!(kind_of(status_of(k)), k);
        }
    }

    /// A bad body's error names what was wrong but never echoes a quoted value (it
    /// may be a secret in the wrong place).
    #[test]
    fn body_errors_do_not_echo_values() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Inner {
            secret: String,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        enum Kind {
            A,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Body {
            credential: Inner,
            kind: Option<Kind>,
        }
        let e = super::decode::<Body>(br#"{"credential": "s3cret-Value"}"#).unwrap_err();
        assert!(!e.message.contains("s3cret-Value"), "{}", e.message);
        assert!(
            e.message
                .contains("invalid type: string, expected struct Inner"),
            "{}",
            e.message
        );
        let body = br#"{"credential": {"secret": "x"}, "kind": "s3cret-Variant"}"#;
        let e = super::decode::<Body>(body).unwrap_err();
        assert!(!e.message.contains("s3cret-Variant"), "{}", e.message);
        assert!(
            e.message.contains("unknown variant, expected `A`"),
            "{}",
            e.message
        );
        let e = super::decode::<Body>(br#"{"credential": {}, "x": 1}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("secret"), "{}", e.message);
    }

    /// docs/API.md documents exactly the routes the router serves.
    #[test]
    fn api_doc_matches_the_router() {
        let doc = include_str!("../../docs/API.md");
        let mut documented: Vec<(String, String)> = doc
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                if cells.len() < 4 {
                    return None;
                }
                let method = cells[1];
                if !["GET", "POST", "PUT", "DELETE"].contains(&method) {
                    return None;
                }
                let path = cells[2].trim_matches('`');
                let path = path.split('?').next().unwrap_or(path);
                Some((method.to_string(), path.to_string()))
            })
            .collect();
        let mut served: Vec<(String, String)> = routes()
            .into_iter()
            .map(|(m, p)| (m, p.to_string()))
            .collect();
        documented.sort();
        served.sort();
        assert_eq!(documented, served);
    }
}
