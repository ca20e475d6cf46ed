//! The HTTP JSON API (`/api/v1`), `/healthz`, `/metrics` and the dashboard
//! page, served with hyper. Owns routing, authentication (the admin bearer
//! token), request decoding and error mapping (by the engine error's class, never
//! its text); every operation is a call of the engine's `Service`, run off the
//! async threads. The route table (`handlers::TABLE`, listed by [`routes`]) is what
//! `docs/API.md` documents (a test checks the two agree).

mod handlers;
mod metrics;
mod token;

pub use token::{load_or_create_token, TOKEN_FILE};

use crate::engine::{EngineError, ErrorKind, LocalService};
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::body::{Body, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
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
}

pub type ApiBody = BoxBody<Bytes, Infallible>;

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
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The class of an error status the API answers itself (not from the engine).
fn kind_of(status: StatusCode) -> ErrorKind {
    match status.as_u16() {
        401 => ErrorKind::Unauthorized,
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Conflict,
        422 => ErrorKind::Provider,
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

fn error_response(e: ApiError) -> Response<ApiBody> {
    #[derive(Serialize)]
    struct Body<'a> {
        error: &'a str,
        /// The error's class, so a client can rebuild it (see `engine::ErrorKind`).
        kind: ErrorKind,
        #[serde(skip_serializing_if = "Option::is_none")]
        field: Option<&'a str>,
    }
    json_response(
        e.status,
        &Body {
            error: &e.message,
            kind: kind_of(e.status),
            field: e.field.as_deref(),
        },
    )
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

/// Whether the request carries the admin token (bearer header or dashboard cookie).
fn authorized(api: &Api, req: &Request<Incoming>) -> bool {
    let presented = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
        .or_else(|| {
            // The dashboard page in a browser sends the token as a cookie.
            req.headers()
                .get_all(hyper::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|c| c.trim().strip_prefix("reposafe_token="))
                .map(str::to_string)
                .next()
        });
    presented.is_some_and(|p| token_matches(api, &p))
}

/// Constant-time comparison of a presented token with the admin token.
fn token_matches(api: &Api, presented: &str) -> bool {
    let want = api.token.expose_secret().as_bytes();
    let got = presented.trim().as_bytes();
    if want.len() != got.len() {
        return false;
    }
    want.iter().zip(got).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Reads a JSON request body (at most 1 MiB).
pub async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    match Limited::new(req.into_body(), 1 << 20).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("cannot read the request body: {e}"),
        )),
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
        let msg = e.to_string();
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

/// Handles one request.
pub async fn handle(
    api: Arc<Api>,
    req: Request<Incoming>,
) -> Result<Response<ApiBody>, Infallible> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if path == "/healthz" {
        return Ok(if method == Method::GET {
            reply(StatusCode::OK, "application/json", "{\"status\":\"ok\"}\n")
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
    if !authorized(&api, &req) {
        if path == "/" && method == Method::GET {
            return Ok(handlers::login_page(None));
        }
        let mut r = error_response(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong admin token: send `Authorization: Bearer <token>` (the token is in the data dir's api-token file)",
        ));
        if let Ok(v) = "Bearer realm=\"reposafe\"".parse() {
            r.headers_mut().insert(hyper::header::WWW_AUTHENTICATE, v);
        }
        return Ok(r);
    }
    let result = handlers::dispatch(api, req, &method, &path).await;
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
            K::Internal,
        ];
        let codes: Vec<u16> = all.iter().map(|k| status_of(*k).as_u16()).collect();
        assert_eq!(codes, [400, 404, 409, 401, 422, 500]);
        for k in all {
            assert_eq!(kind_of(status_of(k)), k);
        }
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
