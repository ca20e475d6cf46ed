//! One file downloaded into the archive: a GET whose redirects are followed by hand so
//! the connection's credential never leaves the connection's origins, and whose body is
//! streamed into a blob while its size and SHA-256 are checked.

use super::{shown, LfsError};
use crate::archive::{Archive, ArchiveError, PutOutcome};
use crate::providers::failover;
use crate::providers::HttpGate;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Redirects followed at most.
const MAX_REDIRECTS: usize = 10;

/// Headers never carried to another origin by a redirect: they authenticate.
const SENSITIVE_HEADERS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

/// The longest wait between two attempts of a download.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Which form of the connection's credential a GET carries to the connection's origins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CredentialForm {
    /// The REST API's (attachments, downloads).
    Api,
    /// Git's (LFS objects, like the batch request).
    Git,
}

/// A GET to make: the URL and headers as given (opaque), and the credential to add
/// while the URL is one of the connection's origins.
pub(crate) struct Get<'a> {
    pub url: &'a str,
    pub headers: &'a [(String, String)],
    pub credential: CredentialForm,
}

/// What the downloaded content must be.
#[derive(Clone, Debug, Default)]
pub(crate) struct Expect {
    pub size: Option<u64>,
    /// The SHA-256 in lowercase hex (an LFS oid).
    pub sha256: Option<String>,
}

/// How often a download is tried, and the first wait between tries (doubling).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Retries {
    pub retries: u32,
    pub base: Duration,
}

/// How one try of a transfer ended.
pub(crate) enum Try<T> {
    Done(T),
    /// Not there, refused or corrupt: trying again does not help.
    Missing(String),
    /// A network failure, 429 or 5xx: worth another try after `after` (or the back-off).
    Again {
        reason: String,
        after: Option<Duration>,
    },
}

/// Downloads `get` into the archive, trying again after transient failures.
/// `Ok(Err(reason))`: the file could not be had (reported, nothing stored);
/// `Err`: the archive failed, or the job was stopped.
pub(crate) fn download(
    gate: &HttpGate,
    archive: &Archive,
    get: &Get<'_>,
    expect: &Expect,
    retries: Retries,
    interrupt: &AtomicBool,
    received: &AtomicU64,
) -> Result<Result<PutOutcome, String>, LfsError> {
    retrying(retries, interrupt, get.url, || {
        try_once(gate, archive, get, expect, received).map_err(LfsError::from)
    })
}

/// Runs `once` until it is done, refused, or failed transiently `retries.retries + 1`
/// times (waiting the server's `Retry-After`, else a doubling back-off, between tries).
/// `Ok(Err(reason))`: it could not be done; `Err`: fatal, or the job was stopped.
pub(crate) fn retrying<T>(
    retries: Retries,
    interrupt: &AtomicBool,
    url: &str,
    mut once: impl FnMut() -> Result<Try<T>, LfsError>,
) -> Result<Result<T, String>, LfsError> {
    let mut attempt = 0u32;
    loop {
        match once()? {
            Try::Done(done) => return Ok(Ok(done)),
            Try::Missing(reason) => return Ok(Err(reason)),
            Try::Again { reason, after } => {
                if attempt >= retries.retries {
                    return Ok(Err(format!("{reason} (tried {} times)", attempt + 1)));
                }
                if interrupt.load(Ordering::Relaxed) {
                    return Err(LfsError::Interrupted);
                }
                let backoff = retries
                    .base
                    .mul_f64(2f64.powi(attempt as i32) * failover::jitter());
                let wait = after.unwrap_or(backoff).min(MAX_BACKOFF);
                tracing::debug!("{}: {reason}; trying again in {wait:?}", shown(url));
                std::thread::sleep(wait);
                attempt += 1;
            }
        }
    }
}

/// Downloads the file at `url` (an issue attachment, a repository download) into the
/// archive, with the API form of the credential while on the connection's origins and
/// without it after a redirect elsewhere; checks its size when `expected_size` is
/// known. Nothing is stored when it fails.
pub fn download_file(
    gate: &HttpGate,
    archive: &Archive,
    url: &str,
    expected_size: Option<u64>,
) -> Result<PutOutcome, LfsError> {
    let get = Get {
        url,
        headers: &[],
        credential: CredentialForm::Api,
    };
    let expect = Expect {
        size: expected_size,
        sha256: None,
    };
    let retries = Retries {
        retries: 2,
        base: crate::providers::http::RetryPolicy::from_env()
            .base_backoff
            .min(Duration::from_secs(2)),
    };
    let (never, received) = (AtomicBool::new(false), AtomicU64::new(0));
    download(gate, archive, &get, &expect, retries, &never, &received)?.map_err(|reason| {
        LfsError::Download {
            url: shown(url),
            reason,
        }
    })
}

/// One try: the GET, then the body into the archive.
fn try_once(
    gate: &HttpGate,
    archive: &Archive,
    get: &Get<'_>,
    expect: &Expect,
    received: &AtomicU64,
) -> Result<Try<PutOutcome>, ArchiveError> {
    let (resp, lane) = match send(gate, get) {
        Ok(sent) => sent,
        Err(Unanswered { reason, retry }) => {
            return Ok(if retry {
                Try::Again {
                    reason,
                    after: None,
                }
            } else {
                Try::Missing(reason)
            })
        }
    };
    let status = resp.status();
    if !status.is_success() {
        return Ok(refused(gate, status, lane, &resp));
    }
    if let (Some(len), Some(size)) = (resp.content_length(), expect.size) {
        if len != size {
            return Ok(Try::Missing(format!(
                "the server sends {len} bytes, {size} expected; not stored"
            )));
        }
    }
    let mut reader = Verifying {
        inner: resp,
        hasher: expect.sha256.as_ref().map(|_| Sha256::new()),
        expect,
        read: 0,
        received,
        mismatch: None,
        transport: None,
    };
    match archive.put_reader(&mut reader) {
        Ok(put) => Ok(Try::Done(put)),
        Err(e) => Ok(match (reader.mismatch, reader.transport) {
            (Some(m), _) => Try::Missing(format!("{m}; not stored")),
            (None, Some(t)) => Try::Again {
                reason: format!("the download broke off: {t}"),
                after: None,
            },
            (None, None) => return Err(e),
        }),
    }
}

/// What a non-2xx answer means for the transfer.
pub(crate) fn refused<T>(
    gate: &HttpGate,
    status: reqwest::StatusCode,
    lane: Option<usize>,
    resp: &reqwest::blocking::Response,
) -> Try<T> {
    let code = status.as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| failover::parse_retry_after(v, time::OffsetDateTime::now_utc()));
    let answered = format!("the server answered {status}");
    match code {
        404 | 410 => Try::Missing(format!("{answered}: the object is not there")),
        429 => {
            // Our credential's principal cools down; a storage host's 429 is a wait only.
            let after = match lane {
                Some(lane) => Some(gate.pool().rate_limited(lane, retry_after)),
                None => retry_after,
            };
            Try::Again {
                reason: answered,
                after,
            }
        }
        500..=599 => Try::Again {
            reason: answered,
            after: retry_after,
        },
        401 | 403 if lane.is_some() => {
            if let Some(lane) = lane {
                let auth = gate.pool().auth(lane);
                if code == 401 && auth.kind().is_oauth() {
                    auth.invalidate();
                    return Try::Again {
                        reason: answered,
                        after: Some(Duration::ZERO),
                    };
                }
            }
            Try::Missing(format!("{answered}: the credential may not read it"))
        }
        _ => Try::Missing(answered),
    }
}

/// Why a GET got no answer; `retry`: a network failure worth another try.
pub(crate) struct Unanswered {
    pub reason: String,
    pub retry: bool,
}

/// Sends `get`, following redirects: the connection's credential (`get.credential`) is
/// added while the URL is one of the connection's origins and the given headers do
/// not authenticate already; after a redirect to another origin, neither it nor the
/// given headers that authenticate are sent. Returns the final answer and the
/// credential (pool lane) it was sent with.
pub(crate) fn send(
    gate: &HttpGate,
    get: &Get<'_>,
) -> Result<(reqwest::blocking::Response, Option<usize>), Unanswered> {
    send_with(gate, get, &|url| Ok(gate.client().get(url)))
}

/// The request of one hop of [`send_with`] (its method and body) to a URL.
pub(crate) type Hop<'a> = dyn Fn(&str) -> Result<reqwest::blocking::RequestBuilder, String> + 'a;

/// [`send`] with any method: `hop` makes the request (method, body) for each URL
/// tried, the first and each a redirect leads to.
pub(crate) fn send_with(
    gate: &HttpGate,
    get: &Get<'_>,
    hop: &Hop<'_>,
) -> Result<(reqwest::blocking::Response, Option<usize>), Unanswered> {
    let final_error = |reason: String| Unanswered {
        reason,
        retry: false,
    };
    let mut url = url::Url::parse(get.url)
        .map_err(|e| final_error(format!("{:?} is not a URL: {e}", shown(get.url))))?;
    let first_origin = url.origin();
    let given_auth = get
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("authorization"));
    for _ in 0..=MAX_REDIRECTS {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(final_error(format!(
                "{}: only http and https URLs are downloaded",
                shown(url.as_str())
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(final_error(format!(
                "{}: URLs with a user name or password are refused",
                shown(url.as_str())
            )));
        }
        let same_origin = url.origin() == first_origin;
        let mut rb = hop(url.as_str()).map_err(final_error)?;
        for (name, value) in get.headers {
            let sensitive = SENSITIVE_HEADERS.contains(&name.to_ascii_lowercase().as_str());
            if same_origin || !sensitive {
                rb = rb.header(name.as_str(), value.as_str());
            }
        }
        let mut lane = None;
        if gate.is_allowed(url.as_str()) && !(given_auth && same_origin) {
            let (l, header) = credential(gate, get.credential)?;
            rb = rb.header("Authorization", header.expose_secret());
            lane = Some(l);
        }
        let resp = rb.send().map_err(|e| {
            let (reason, retry) = gate.describe_unsent(e);
            Unanswered { reason, retry }
        })?;
        if !resp.status().is_redirection() {
            return Ok((resp, lane));
        }
        let Some(location) = resp.headers().get("location").and_then(|l| l.to_str().ok()) else {
            return Ok((resp, lane));
        };
        url = url.join(location).map_err(|e| {
            final_error(format!(
                "{} redirects to an unusable location: {e}",
                shown(url.as_str())
            ))
        })?;
    }
    Err(final_error(format!(
        "{}: more than {MAX_REDIRECTS} redirects",
        shown(get.url)
    )))
}

/// The pool's credential for one request, paced, in the form asked for.
fn credential(
    gate: &HttpGate,
    form: CredentialForm,
) -> Result<(usize, secrecy::SecretString), Unanswered> {
    let pool = gate.pool();
    let notice = |m: &str| gate.notify(m);
    let unusable = |reason: String| Unanswered {
        reason,
        retry: false,
    };
    let lane = pool
        .choose(&[], &notice)
        .map_err(|e| unusable(format!("no usable credential: {e}")))?;
    pool.pace(lane, &notice);
    gate.stats.requests.fetch_add(1, Ordering::Relaxed);
    let auth = pool.auth(lane);
    let header = match form {
        CredentialForm::Api => auth.api_header(),
        CredentialForm::Git => auth.git_header(),
    }
    .map_err(|e| unusable(e.to_string()))?;
    Ok((lane, header))
}

/// A reader over a download that counts and hashes what passes and fails at the end
/// (so the archive stores nothing) when the size or SHA-256 is not the expected one.
struct Verifying<'a, R> {
    inner: R,
    hasher: Option<Sha256>,
    expect: &'a Expect,
    read: u64,
    received: &'a AtomicU64,
    /// Set when the content is not what was expected.
    mismatch: Option<String>,
    /// Set when reading the body failed (the connection broke).
    transport: Option<String>,
}

impl<R: Read> Read for Verifying<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                self.transport = Some(e.to_string());
                return Err(e);
            }
        };
        if n == 0 {
            return match self.check_end() {
                None => Ok(0),
                Some(m) => Err(self.fail(m)),
            };
        }
        self.read += n as u64;
        self.received.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(size) = self.expect.size.filter(|s| self.read > *s) {
            return Err(self.fail(format!("the download is longer than {size} bytes")));
        }
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

impl<R> Verifying<'_, R> {
    /// What is wrong with the whole content, once read.
    fn check_end(&mut self) -> Option<String> {
        if let Some(size) = self.expect.size.filter(|s| self.read != *s) {
            return Some(format!(
                "the download has {} bytes, {size} expected",
                self.read
            ));
        }
        let (hasher, want) = (self.hasher.take()?, self.expect.sha256.as_ref()?);
        let got = hex::encode(hasher.finalize());
        (&got != want).then(|| format!("corrupt download: its content has SHA-256 {got}"))
    }

    fn fail(&mut self, mismatch: String) -> io::Error {
        let err = io::Error::new(io::ErrorKind::InvalidData, mismatch.clone());
        self.mismatch = Some(mismatch);
        err
    }
}
