//! The HTTP capability granted to providers: [`HttpGate`] sends a plugin's request
//! only to allowed origins, refuses plugin-set credentials, adds the connection's
//! `Authorization` header, applies time-outs and size limits, and retries 429 and
//! 5xx answers with back-off (honouring `Retry-After`, capped).

use super::pool::CredentialPool;
use super::Authenticator;
use crate::tls::TlsTrust;
use secrecy::ExposeSecret;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Headers a plugin may never set.
const FORBIDDEN_HEADERS: [&str; 4] = ["authorization", "proxy-authorization", "cookie", "host"];

/// Retry and limit settings.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts after the first one, for 429 / 5xx / transport errors.
    pub max_retries: u32,
    /// First back-off when the server gives no `Retry-After`; doubles each time.
    pub base_backoff: Duration,
    /// No single wait is longer than this.
    pub max_wait: Duration,
    /// Whole-request time-out.
    pub timeout: Duration,
    /// Largest response body accepted.
    pub max_body: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 6,
            base_backoff: Duration::from_secs(30),
            max_wait: Duration::from_secs(300),
            timeout: Duration::from_secs(60),
            max_body: 32 << 20,
        }
    }
}

impl RetryPolicy {
    /// The default policy, with the first back-off overridable by
    /// `REPOSAFE_RETRY_BASE_MS` (tests and impatient operators).
    pub fn from_env() -> RetryPolicy {
        let mut p = RetryPolicy::default();
        if let Some(ms) = std::env::var("REPOSAFE_RETRY_BASE_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            p.base_backoff = Duration::from_millis(ms);
        }
        p
    }

    /// Back-off before attempt `n` (1-based), with ±25% jitter, capped.
    pub fn backoff(&self, n: u32) -> Duration {
        let base = self.base_backoff.as_millis() as f64 * 2f64.powi(n.saturating_sub(1) as i32);
        let jitter = 0.75 + rand::random::<f64>() * 0.5;
        Duration::from_millis((base * jitter) as u64).min(self.max_wait)
    }
}

/// The wait a `Retry-After` value asks for: delta-seconds (what Bitbucket sends) or an
/// HTTP-date (a date in the past means no wait). `None` when unreadable. The caller caps it.
pub fn parse_retry_after(value: &str, now: time::OffsetDateTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
    let secs = (at - now).whole_seconds().max(0);
    Some(Duration::from_secs(secs as u64))
}

/// An error and its causes on one line (`error sending request: ...: Connection refused`).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// A request as a plugin sends it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

/// A response handed back to a plugin.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why the gate did not return a response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    #[error("request refused by the host: {0}")]
    Denied(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("transport error: {0}")]
    Transport(String),
    #[error("response too large: {0}")]
    TooLarge(String),
}

/// Counters of what a gate did.
#[derive(Debug, Default)]
pub struct GateStats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub rate_limited: AtomicU64,
}

/// A callback that hears about waits.
pub type NoticeFn = Box<dyn Fn(&str) + Send + Sync>;

/// The host side of the `http` import for one connection.
pub struct HttpGate {
    client: reqwest::blocking::Client,
    allowed: Vec<url::Origin>,
    pool: Arc<CredentialPool>,
    policy: RetryPolicy,
    pub stats: GateStats,
    /// Called with a human message when the gate waits (e.g. "rate limited, waiting 30 s").
    notice: Option<NoticeFn>,
    /// The connection's TLS trust, for certificate-failure messages.
    tls: Option<Arc<TlsTrust>>,
}

/// A URL without its query, for messages.
fn strip_query(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_string()
}

/// The shared HTTP client: no redirects (a credential must never follow one), rustls.
pub fn client(policy: &RetryPolicy) -> reqwest::blocking::Client {
    builder(policy)
        .build()
        .unwrap_or_else(|_| reqwest::blocking::Client::new())
}

fn builder(policy: &RetryPolicy) -> reqwest::blocking::ClientBuilder {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(policy.timeout)
        .connect_timeout(Duration::from_secs(30))
        .user_agent(concat!("reposafe/", env!("CARGO_PKG_VERSION")))
}

/// The HTTP client of one connection: [`client`] with the connection's TLS trust
/// (CA bundle, or the loudly warned insecure mode).
pub fn client_with_tls(
    policy: &RetryPolicy,
    tls: &TlsTrust,
) -> Result<reqwest::blocking::Client, GateError> {
    tls.apply(builder(policy))
        .build()
        .map_err(|e| GateError::Transport(format!("cannot build the HTTP client: {e}")))
}

impl HttpGate {
    pub fn new(
        client: reqwest::blocking::Client,
        allowed: Vec<url::Origin>,
        auth: Arc<Authenticator>,
        policy: RetryPolicy,
    ) -> HttpGate {
        let pool = Arc::new(CredentialPool::single(
            auth,
            policy.base_backoff,
            policy.max_wait,
        ));
        HttpGate::with_pool(client, allowed, pool, policy)
    }

    /// A gate whose requests are spread over a pool of credentials.
    pub fn with_pool(
        client: reqwest::blocking::Client,
        allowed: Vec<url::Origin>,
        pool: Arc<CredentialPool>,
        policy: RetryPolicy,
    ) -> HttpGate {
        HttpGate {
            client,
            allowed,
            pool,
            policy,
            stats: GateStats::default(),
            notice: None,
            tls: None,
        }
    }

    /// Names the connection's TLS trust in certificate-failure messages.
    pub fn with_tls(mut self, tls: Arc<TlsTrust>) -> HttpGate {
        self.tls = Some(tls);
        self
    }

    /// [`on_notice`](Self::on_notice), by value.
    pub fn with_notice(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> HttpGate {
        self.on_notice(f);
        self
    }

    /// Sets a callback that hears about waits.
    pub fn on_notice(&mut self, f: impl Fn(&str) + Send + Sync + 'static) {
        self.notice = Some(Box::new(f));
    }

    /// The primary credential's authenticator.
    pub fn authenticator(&self) -> &Arc<Authenticator> {
        self.pool.auth(0)
    }

    /// The credentials this gate spreads requests over.
    pub fn pool(&self) -> &Arc<CredentialPool> {
        &self.pool
    }

    /// Tells the notice callback (job progress) something.
    pub fn notify(&self, message: &str) {
        if let Some(n) = &self.notice {
            n(message);
        }
    }

    /// Whether `url` is on the allow-list (same scheme, host and port as a URL setting).
    pub fn is_allowed(&self, url: &str) -> bool {
        url::Url::parse(url)
            .map(|u| self.allowed.contains(&u.origin()))
            .unwrap_or(false)
    }

    fn check(&self, req: &Request) -> Result<reqwest::Method, GateError> {
        let url = url::Url::parse(&req.url)
            .map_err(|e| GateError::Denied(format!("bad URL {:?}: {e}", req.url)))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(GateError::Denied(
                "URLs with embedded user names or passwords are not allowed".into(),
            ));
        }
        if !self.allowed.contains(&url.origin()) {
            return Err(GateError::Denied(format!(
                "host {} is not in this connection's allow-list ({})",
                url.host_str().unwrap_or("?"),
                self.allowed
                    .iter()
                    .map(|o| o.ascii_serialization())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        for (name, _) in &req.headers {
            if FORBIDDEN_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(GateError::Denied(format!(
                    "plugins may not set the {name} header; the host adds credentials"
                )));
            }
        }
        reqwest::Method::from_bytes(req.method.as_bytes())
            .map_err(|_| GateError::Denied(format!("bad method {:?}", req.method)))
    }

    /// Says that the next request waits `d` (the pool does the waiting).
    fn wait_notice(&self, d: Duration, why: &str) {
        self.notify(&format!(
            "{why}, waiting {} s",
            d.as_secs_f64().ceil() as u64
        ));
        tracing::info!("{why}, waiting {:.1} s", d.as_secs_f64());
    }

    fn wait(&self, d: Duration, why: &str) {
        if let Some(n) = &self.notice {
            n(&format!(
                "{why}, waiting {} s",
                d.as_secs_f64().ceil() as u64
            ));
        }
        tracing::info!("{why}, waiting {:.1} s", d.as_secs_f64());
        std::thread::sleep(d);
    }

    /// Sends a plugin's request with the credential, retrying transient failures.
    pub fn send(&self, req: &Request) -> Result<Response, GateError> {
        let method = self.check(req)?;
        let mut attempt = 0u32;
        let mut rate_limited = 0u32;
        let notice = |m: &str| self.notify(m);
        loop {
            attempt += 1;
            let lane = self
                .pool
                .choose(&[], &notice)
                .map_err(|e| GateError::Denied(e.to_string()))?;
            self.pool.pace(lane, &notice);
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let lane_auth = self.pool.auth(lane).clone();
            let auth = lane_auth
                .api_header()
                .map_err(|e| GateError::Denied(e.to_string()))?;
            let mut rb = self.client.request(method.clone(), &req.url);
            for (k, v) in &req.headers {
                rb = rb.header(k, v);
            }
            rb = rb.header("Authorization", auth.expose_secret());
            if let Some(b) = &req.body {
                rb = rb.body(b.clone());
            }
            let retries_left = attempt <= self.policy.max_retries;
            let resp = match rb.send() {
                Ok(r) => r,
                Err(e) => {
                    // A certificate failure does not heal by retrying: report it at once.
                    if let Some(detail) = crate::tls::certificate_problem(&e) {
                        let msg = match &self.tls {
                            Some(t) => t.describe_failure(&detail),
                            None => format!("TLS certificate problem: {detail}"),
                        };
                        return Err(GateError::Transport(msg));
                    }
                    let timed_out = e.is_timeout();
                    let msg = error_chain(&e.without_url());
                    let kind = if timed_out {
                        GateError::Timeout(msg)
                    } else {
                        GateError::Transport(msg)
                    };
                    if retries_left {
                        self.stats.retries.fetch_add(1, Ordering::Relaxed);
                        self.wait(
                            self.policy.backoff(attempt).min(Duration::from_secs(10)),
                            &format!("{kind}"),
                        );
                        continue;
                    }
                    return Err(kind);
                }
            };
            let status = resp.status().as_u16();
            if status == 429 {
                // The principal cools down; `choose` moves the request to another
                // credential, or waits for this one.
                self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                rate_limited += 1;
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, time::OffsetDateTime::now_utc()));
                let d = self.pool.rate_limited(lane, retry_after);
                if self.pool.usable_besides(lane) == 0 {
                    self.wait_notice(d, "rate limited");
                } else {
                    self.notify(&format!(
                        "credential {} rate limited, cooling down {} s; another credential takes over",
                        self.pool.id(lane),
                        d.as_secs_f64().ceil() as u64
                    ));
                }
                if rate_limited <= self.policy.max_retries + self.pool.len() as u32 {
                    attempt -= 1;
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            if (status == 401 || status == 403)
                && self.pool.len() > 1
                && self.pool.usable_besides(lane) > 0
                && !(status == 401
                    && lane_auth.kind() == crate::vault::CredentialKind::OauthConsumer
                    && attempt == 1)
            {
                self.pool.fail(
                    lane,
                    &format!("the server answered {status} to {}", strip_query(&req.url)),
                );
                self.notify(&format!(
                    "credential {} answered {status}; continuing with the others",
                    self.pool.id(lane)
                ));
                attempt -= 1;
                continue;
            }
            if (500..600).contains(&status) && retries_left {
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, time::OffsetDateTime::now_utc()));
                let d = retry_after
                    .unwrap_or_else(|| self.policy.backoff(attempt))
                    .min(self.policy.max_wait);
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                self.wait(d, &format!("server error {status}"));
                continue;
            }
            if status < 400 {
                self.pool.ok(lane);
            }
            if status == 401 && lane_auth.kind() == crate::vault::CredentialKind::OauthConsumer {
                // An expired or revoked token: fetch a new one once.
                lane_auth.invalidate();
                if attempt == 1 {
                    continue;
                }
            }
            let headers = resp
                .headers()
                .iter()
                .filter_map(|(k, v)| {
                    Some((
                        k.as_str().to_ascii_lowercase(),
                        v.to_str().ok()?.to_string(),
                    ))
                })
                .filter(|(k, _)| k != "set-cookie")
                .collect();
            if resp.content_length().unwrap_or(0) > self.policy.max_body {
                return Err(GateError::TooLarge(format!(
                    "{} bytes, the limit is {}",
                    resp.content_length().unwrap_or(0),
                    self.policy.max_body
                )));
            }
            let mut body = Vec::new();
            use std::io::Read;
            let mut limited = resp.take(self.policy.max_body + 1);
            limited
                .read_to_end(&mut body)
                .map_err(|e| GateError::Transport(e.to_string()))?;
            if body.len() as u64 > self.policy.max_body {
                return Err(GateError::TooLarge(format!(
                    "over {} bytes",
                    self.policy.max_body
                )));
            }
            return Ok(Response {
                status,
                headers,
                body,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = time::macros::datetime!(2026-11-22 10:00:00 UTC);
        assert_eq!(
            parse_retry_after(" 30 ", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 10:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
