//! The HTTP(S) side of a fetch, and the translation of its failures into [`GitError`].
//!
//! gix speaks the smart-HTTP protocol; its requests go through [`Backend`], our
//! implementation of gix's `Http` trait on a blocking reqwest client, so that every
//! answer is seen whole. Per request the backend calls the pool's pacer, attaches the
//! `Authorization` header (held in memory only, never in git configuration), and applies
//! the connection's TLS trust and time-outs; redirects are refused (a credential never
//! follows one). The `Retry-After` of an error answer is kept, so a 429 becomes a
//! [`GitError::RateLimited`] carrying the wait the server asked for: gix's own reqwest
//! backend drops the headers of error answers (`error_for_status`), and reqwest has no
//! response hook (its connector layers see only connections, its retry classifier only
//! the status). Errors name the URL and never contain a secret.

use std::{
    io::{self, BufRead, Read, Write},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};

use gix::error::ErrorExt as _;
use gix::protocol::transport::client::blocking_io::{
    http::{self as gix_http, GetResponse, PostBodyDataKind, PostResponse},
    Transport,
};
use secrecy::{ExposeSecret as _, SecretString};

use crate::git::{error::chain, url::RemoteUrl, FetchOptions, GitAuth, GitError, Pacer};

/// How long to wait for a TCP/TLS connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the server may stay silent (waiting for response headers, or between two reads of
/// the response body) before the transfer is abandoned.
const STALL_TIMEOUT: Duration = Duration::from_secs(180);

/// The `Retry-After` value of the latest error answer of a fetch.
type RetryAfterSlot = Arc<Mutex<Option<String>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One fetch's connection to its remote: how to reach it, and what its failures mean.
pub(super) struct Session<'a> {
    remote: &'a RemoteUrl,
    auth: Option<&'a SecretString>,
    opts: &'a FetchOptions<'a>,
    /// Set when the server asked for credentials (a 401 challenge reached the handshake).
    pub challenged: AtomicBool,
    retry_after: RetryAfterSlot,
}

/// A connection to the remote for fetching.
pub(super) type Connection<'r, 'repo> =
    gix::remote::Connection<'r, 'static, 'repo, Box<dyn Transport + Send>>;

impl<'a> Session<'a> {
    pub fn new(
        remote: &'a RemoteUrl,
        auth: Option<&'a SecretString>,
        opts: &'a FetchOptions<'a>,
    ) -> Session<'a> {
        Session {
            remote,
            auth,
            opts,
            challenged: AtomicBool::new(false),
            retry_after: RetryAfterSlot::default(),
        }
    }

    /// The remote's URL.
    pub fn remote(&self) -> &'a RemoteUrl {
        self.remote
    }

    /// The fetch's options.
    pub fn opts(&self) -> &'a FetchOptions<'a> {
        self.opts
    }

    /// Connects `gix_remote` for fetching: through [`Backend`] for http(s), through
    /// gix's own transport for `file://` URLs and local paths.
    pub fn connect<'r, 'repo>(
        &self,
        gix_remote: &'r gix::Remote<'repo>,
    ) -> Result<Connection<'r, 'repo>, GitError> {
        let direction = gix::remote::Direction::Fetch;
        if !self.remote.is_http {
            return gix_remote
                .connect(direction)
                .map_err(|err| self.fail(err, Phase::Connect));
        }
        if self.auth.is_some() && self.remote.for_transport.starts_with("http://") {
            tracing::debug!(target: "reposafe::git", url = %self.remote.display, "sending credentials over unencrypted HTTP");
        }
        let (url, _configured) = gix_remote
            .sanitized_url_and_version(direction)
            .map_err(|err| self.fail(err, Phase::Connect))?;
        // Protocol v1: the ref advertisement comes with the first GET, so an unchanged
        // repository costs one HTTP request (v2 needs a second one for `ls-refs`).
        let version = gix::protocol::transport::Protocol::V1;
        let pacer = match self.opts.auth {
            GitAuth::Paced { before_request, .. } => Some(before_request.clone()),
            _ => None,
        };
        let backend = Backend::new(
            self.remote,
            self.auth.cloned(),
            self.opts.tls,
            pacer,
            self.retry_after.clone(),
        )?;
        let transport: Box<dyn Transport + Send> =
            Box::new(gix_http::Transport::new_http(backend, url, version, false));
        Ok(gix_remote.to_connection_with_transport(transport))
    }

    /// The [`GitError`] for a gix failure in `phase`.
    pub fn fail(&self, err: gix::Error, phase: Phase) -> GitError {
        map_fetch_error(
            err,
            phase,
            &Seen {
                url: &self.remote.display,
                challenged: self.challenged.load(Ordering::Relaxed),
                interrupted: self.opts.should_interrupt.load(Ordering::Relaxed),
                auth: self.auth,
                tls: self.opts.tls,
                retry_after: lock(&self.retry_after).clone(),
            },
        )
    }
}

/// The HTTP client git transfers use: the connection's TLS trust, a connect time-out,
/// `timeout` (`None`: none) for each request until its answer's headers and between reads
/// of its body, and no redirects (a credential never follows one).
pub(in crate::git) fn http_client(
    remote: &RemoteUrl,
    with_auth: bool,
    tls: Option<&crate::tls::TlsTrust>,
    timeout: Option<Duration>,
) -> Result<reqwest::blocking::Client, GitError> {
    let refusal = if with_auth {
        "refusing to follow redirect after request headers were configured"
    } else {
        "refusing to follow a redirect"
    };
    let builder = reqwest::blocking::ClientBuilder::new()
        .http1_title_case_headers()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            attempt.error(refusal)
        }));
    // The connection's CA bundle (or insecure mode) applies to git as to its API.
    let builder = match tls {
        Some(tls) => tls.apply(builder),
        None => builder,
    };
    builder.build().map_err(|err| GitError::Transport {
        url: remote.display.clone(),
        message: format!(
            "could not configure the HTTP transport: {}",
            chain(&gix::Error::from_error(err))
        ),
    })
}

/// The requests of one fetch: a reqwest client, and what each request gets.
struct Client {
    http: reqwest::blocking::Client,
    auth: Option<SecretString>,
    pacer: Option<Pacer>,
    retry_after: RetryAfterSlot,
}

/// gix's `Http` backend for one fetch (see the module documentation).
pub(super) struct Backend {
    client: Arc<Client>,
}

impl Backend {
    fn new(
        remote: &RemoteUrl,
        auth: Option<SecretString>,
        tls: Option<&crate::tls::TlsTrust>,
        pacer: Option<Pacer>,
        retry_after: RetryAfterSlot,
    ) -> Result<Backend, GitError> {
        let http = http_client(remote, auth.is_some(), tls, Some(STALL_TIMEOUT))?;
        Ok(Backend {
            client: Arc::new(Client {
                http,
                auth,
                pacer,
                retry_after,
            }),
        })
    }

    /// A request to `url` with `headers` (`Name: value` lines), sent when its answer is
    /// first read.
    fn exchange(
        &self,
        method: reqwest::Method,
        url: &str,
        headers: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> gix::Result<Arc<Mutex<Exchange>>> {
        let url = reqwest::Url::parse(url).map_err(gix::Error::from_error)?;
        let mut request = reqwest::blocking::Request::new(method, url);
        for line in headers {
            let Some((name, value)) = line.as_ref().split_once(':') else {
                continue;
            };
            if let (Ok(name), Ok(value)) = (
                reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()),
                reqwest::header::HeaderValue::from_str(value.trim()),
            ) {
                request.headers_mut().append(name, value);
            }
        }
        Ok(Arc::new(Mutex::new(Exchange {
            client: self.client.clone(),
            state: State::Pending {
                request,
                body: Vec::new(),
            },
        })))
    }
}

impl gix_http::Http for Backend {
    type Headers = Headers;
    type ResponseBody = Body;
    type PostBody = PostBody;

    fn get(
        &mut self,
        url: &str,
        _base_url: &str,
        headers: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> gix::Result<GetResponse<Headers, Body>> {
        let exchange = self.exchange(reqwest::Method::GET, url, headers)?;
        Ok(GetResponse {
            headers: Headers::new(exchange.clone()),
            body: Body::new(exchange),
        })
    }

    fn post(
        &mut self,
        url: &str,
        _base_url: &str,
        headers: impl IntoIterator<Item = impl AsRef<str>>,
        _body: PostBodyDataKind,
    ) -> gix::Result<PostResponse<Headers, Body, PostBody>> {
        // The body is collected, then sent with the request when the answer is first
        // read: upload-pack requests are want/have lists, small enough for memory.
        let exchange = self.exchange(reqwest::Method::POST, url, headers)?;
        Ok(PostResponse {
            post_body: PostBody(exchange.clone()),
            headers: Headers::new(exchange.clone()),
            body: Body::new(exchange),
        })
    }

    fn configure(&mut self, _config: &dyn std::any::Any) -> gix::Result {
        Ok(())
    }
}

impl Client {
    /// Sends `request` (paced, with the credential) and returns a success answer, or the
    /// error gix expects for an error answer (as its own backend words it).
    fn send(
        &self,
        mut request: reqwest::blocking::Request,
        body: Vec<u8>,
    ) -> io::Result<reqwest::blocking::Response> {
        if request.method() == reqwest::Method::POST {
            *request.body_mut() = Some(body.into());
        }
        if let Some(pacer) = &self.pacer {
            (pacer.0)();
        }
        if let Some(auth) = &self.auth {
            let mut value = reqwest::header::HeaderValue::from_str(auth.expose_secret())
                .map_err(|_| {
                    io::Error::other(gix::error::validation(
                        "the Authorization header value contains characters that are not allowed in HTTP headers",
                    ))
                })?;
            value.set_sensitive(true);
            request
                .headers_mut()
                .insert(reqwest::header::AUTHORIZATION, value);
        }
        let answer = self
            .http
            .execute(request)
            .map_err(|err| io::Error::other(classify_reqwest(err)))?;
        let status = answer.status();
        if !status.is_client_error() && !status.is_server_error() {
            return Ok(answer);
        }
        *lock(&self.retry_after) = answer
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if status == reqwest::StatusCode::UNAUTHORIZED {
            let www_authenticate = answer
                .headers()
                .get_all(reqwest::header::WWW_AUTHENTICATE)
                .iter()
                .map(|value| value.as_bytes().into())
                .collect();
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                gix::protocol::transport::client::AuthenticationRequired { www_authenticate },
            ));
        }
        let kind = if status.is_server_error() && status != reqwest::StatusCode::NOT_IMPLEMENTED {
            io::ErrorKind::ConnectionAborted
        } else {
            io::ErrorKind::Other
        };
        let message = gix::error::Message::new(format!("Received HTTP status {}", status.as_str()));
        let err = match answer.error_for_status_ref() {
            Err(err) => classify_reqwest(err).and_raise(message),
            Ok(_) => gix::Error::from_error(message),
        };
        Err(io::Error::new(kind, err))
    }
}

/// A reqwest error with the classification gix's own backend gives it.
fn classify_reqwest(err: reqwest::Error) -> gix::Error {
    use gix::error::{Class, ClassificationMarker};
    use reqwest::StatusCode;
    let class = match err.status() {
        Some(StatusCode::FORBIDDEN) => Some(Class::PermissionDenied),
        Some(StatusCode::CONFLICT) => Some(Class::Conflict),
        Some(StatusCode::NOT_IMPLEMENTED) => Some(Class::Unsupported),
        _ if err.is_timeout()
            || err.is_connect()
            || err.status().is_some_and(|s| s.is_server_error()) =>
        {
            Some(Class::Retryable)
        }
        _ => None,
    };
    match class {
        Some(class) => gix::Error::from_error(ClassificationMarker::with_source(class, err)),
        None => gix::Error::from_error(err),
    }
}

/// One request and its answer, shared by its body writer and its two readers.
struct Exchange {
    client: Arc<Client>,
    state: State,
}

enum State {
    /// Not sent yet: the request, and the body written so far.
    Pending {
        request: reqwest::blocking::Request,
        body: Vec<u8>,
    },
    /// Being sent.
    Sending,
    /// A success answer: its header lines and body, until their readers take them.
    Answered {
        headers: Option<Vec<u8>>,
        body: Option<reqwest::blocking::Response>,
    },
    /// No usable answer; the error goes to the first reader.
    Failed { error: Option<io::Error> },
}

impl Exchange {
    /// Sends the request unless that happened already.
    fn send(&mut self) {
        let (request, body) = match std::mem::replace(&mut self.state, State::Sending) {
            State::Pending { request, body } => (request, body),
            other => {
                self.state = other;
                return;
            }
        };
        self.state = match self.client.send(request, body) {
            Ok(answer) => {
                let mut headers = Vec::new();
                for (name, value) in answer.headers() {
                    headers.extend_from_slice(name.as_str().as_bytes());
                    headers.push(b':');
                    headers.extend_from_slice(value.as_bytes());
                    headers.push(b'\n');
                }
                State::Answered {
                    headers: Some(headers),
                    body: Some(answer),
                }
            }
            Err(error) => State::Failed { error: Some(error) },
        };
    }

    /// The error for a reader that finds no answer to take.
    fn error(&mut self) -> io::Error {
        match &mut self.state {
            State::Failed { error } => error
                .take()
                .unwrap_or_else(|| io::Error::other("the HTTP request failed")),
            _ => io::Error::other("the HTTP answer was already read"),
        }
    }

    fn take_headers(&mut self) -> io::Result<Vec<u8>> {
        self.send();
        match &mut self.state {
            State::Answered { headers, .. } => headers.take().ok_or_else(|| self.error()),
            _ => Err(self.error()),
        }
    }

    fn take_body(&mut self) -> io::Result<reqwest::blocking::Response> {
        self.send();
        match &mut self.state {
            State::Answered { body, .. } => body.take().ok_or_else(|| self.error()),
            _ => Err(self.error()),
        }
    }
}

/// The body of a POST request, collected until the answer is read.
pub(super) struct PostBody(Arc<Mutex<Exchange>>);

impl Write for PostBody {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut lock(&self.0).state {
            State::Pending { body, .. } => {
                body.extend_from_slice(buf);
                Ok(buf.len())
            }
            _ => Err(io::Error::other(
                "the request body was written after the request was sent",
            )),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The header lines (`name:value`) of an answer; reading them sends the request.
pub(super) struct Headers {
    exchange: Arc<Mutex<Exchange>>,
    lines: Option<io::Cursor<Vec<u8>>>,
}

impl Headers {
    fn new(exchange: Arc<Mutex<Exchange>>) -> Headers {
        Headers {
            exchange,
            lines: None,
        }
    }

    fn lines(&mut self) -> io::Result<&mut io::Cursor<Vec<u8>>> {
        if self.lines.is_none() {
            let bytes = lock(&self.exchange).take_headers()?;
            self.lines = Some(io::Cursor::new(bytes));
        }
        Ok(self.lines.get_or_insert_with(Default::default))
    }
}

impl Read for Headers {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.lines()?.read(buf)
    }
}

impl BufRead for Headers {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.lines()?.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        if let Some(lines) = &mut self.lines {
            lines.consume(amount);
        }
    }
}

/// The body of an answer; reading it sends the request if its headers were not read.
pub(super) struct Body {
    exchange: Arc<Mutex<Exchange>>,
    answer: Option<io::BufReader<reqwest::blocking::Response>>,
}

impl Body {
    fn new(exchange: Arc<Mutex<Exchange>>) -> Body {
        Body {
            exchange,
            answer: None,
        }
    }

    fn answer(&mut self) -> io::Result<&mut io::BufReader<reqwest::blocking::Response>> {
        if self.answer.is_none() {
            let answer = lock(&self.exchange).take_body()?;
            self.answer = Some(io::BufReader::with_capacity(64 * 1024, answer));
        }
        match &mut self.answer {
            Some(answer) => Ok(answer),
            None => Err(io::Error::other("the HTTP answer is missing")),
        }
    }
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.answer()?.read(buf)
    }
}

impl BufRead for Body {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.answer()?.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        if let Some(answer) = &mut self.answer {
            answer.consume(amount);
        }
    }
}

/// Checks that the `Authorization` header value can be sent.
pub(in crate::git) fn validate_header_value(
    value: &SecretString,
    url: &str,
) -> Result<(), GitError> {
    match reqwest::header::HeaderValue::from_str(value.expose_secret()) {
        Ok(_) if !value.expose_secret().trim().is_empty() => Ok(()),
        _ => Err(GitError::InvalidAuth {
            url: url.to_owned(),
        }),
    }
}

/// Where in a fetch a failure happened.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Connect,
    Handshake,
    Receive,
}

/// What a fetch had seen when it failed.
struct Seen<'a> {
    url: &'a str,
    /// The server asked for credentials.
    challenged: bool,
    interrupted: bool,
    auth: Option<&'a SecretString>,
    tls: Option<&'a crate::tls::TlsTrust>,
    /// The `Retry-After` of the latest error answer.
    retry_after: Option<String>,
}

fn map_fetch_error(err: gix::Error, phase: Phase, seen: &Seen<'_>) -> GitError {
    let url = seen.url.to_owned();
    let (challenged, interrupted, tls) = (seen.challenged, seen.interrupted, seen.tls);
    let message = redact_secret(chain(&err), seen.auth);
    tracing::debug!(target: "reposafe::git", %url, error = %message, "fetch failed");
    if interrupted || err.is_cancelled() {
        return GitError::Interrupted { url };
    }
    if crate::tls::is_certificate_text(&message) {
        let message = match tls {
            Some(tls) => tls.describe_failure(&message),
            None => format!("TLS certificate problem: {message}"),
        };
        return GitError::Certificate { url, message };
    }
    if challenged || err.is_unauthenticated() {
        return GitError::Unauthorized { url };
    }
    match http_status(&err).or_else(|| status_from_message(&message)) {
        Some(401) => return GitError::Unauthorized { url },
        Some(403) => return GitError::Forbidden { url },
        Some(404 | 410) => return GitError::NotFound { url },
        Some(429) => {
            return GitError::RateLimited {
                url,
                retry_after: seen.retry_after.clone(),
            }
        }
        _ => {}
    }
    if err.is_permission_denied() {
        return GitError::Forbidden { url };
    }
    if phase != Phase::Receive && err.is_not_found() {
        return GitError::NotFound { url };
    }
    GitError::Transport { url, message }
}

/// The HTTP status of the response that caused `err`, if any.
fn http_status(err: &gix::Error) -> Option<u16> {
    fn visit(err: &(dyn std::error::Error + 'static), depth: usize) -> Option<u16> {
        if depth > 16 {
            return None;
        }
        if let Some(err) = err.downcast_ref::<reqwest::Error>() {
            if let Some(status) = err.status() {
                return Some(status.as_u16());
            }
        }
        if let Some(err) = err.downcast_ref::<gix::Error>() {
            for inner in err.iter_errors() {
                if !std::ptr::addr_eq(inner, err) {
                    if let Some(status) = visit(inner, depth + 1) {
                        return Some(status);
                    }
                }
            }
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(status) = visit(inner, depth + 1) {
                return Some(status);
            }
        }
        err.source().and_then(|source| visit(source, depth + 1))
    }
    err.iter_errors().find_map(|e| visit(e, 0))
}

fn status_from_message(message: &str) -> Option<u16> {
    let rest = &message[message.find("HTTP status ")? + "HTTP status ".len()..];
    rest.get(..3)?.parse().ok()
}

/// Replace the authentication header value (and its credential part) in `message`, should the
/// transport ever have echoed it.
fn redact_secret(mut message: String, auth: Option<&SecretString>) -> String {
    if let Some(auth) = auth {
        let value = auth.expose_secret();
        let credential = value
            .split_once(' ')
            .map(|(_, c)| c)
            .unwrap_or(value)
            .trim();
        for secret in [value, credential] {
            if secret.len() >= 4 && message.contains(secret) {
                message = message.replace(secret, "[REDACTED]");
            }
        }
    }
    message
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn status_parsing() {
        assert_eq!(
            status_from_message("x: Received HTTP status 404: y"),
            Some(404)
        );
        assert_eq!(status_from_message("nothing"), None);
    }

    #[test]
    fn secrets_are_redacted() {
        let auth = SecretString::from("Basic c2VjcmV0OnRva2Vu");
        assert_eq!(
            redact_secret("header was Basic c2VjcmV0OnRva2Vu!".into(), Some(&auth)),
            "header was [REDACTED]!"
        );
        assert_eq!(
            redact_secret("c2VjcmV0OnRva2Vu".into(), Some(&auth)),
            "[REDACTED]"
        );
    }
}
