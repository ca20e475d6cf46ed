//! The HTTP capability granted to providers: [`HttpGate`] sends a plugin's request
//! only to allowed origins, refuses plugin-set credentials, adds the connection's
//! `Authorization` header, applies time-outs and size limits, and fails over as the
//! one policy of [`failover`](super::failover) says (429 and 5xx retried honouring
//! `Retry-After`, capped; 401/403 move to the other credentials).

use super::failover::{self, Event, Outcome};
use super::pool::{CredentialPool, PoolExhausted};
use super::Authenticator;
use crate::tls::TlsTrust;
use secrecy::ExposeSecret;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Methods that only read, granted to every operation.
const READ_METHODS: [&str; 2] = ["GET", "HEAD"];
/// Methods never granted: they echo requests (credentials included) or tunnel.
const NEVER_METHODS: [&str; 2] = ["TRACE", "CONNECT"];

/// Headers a plugin may never set.
const FORBIDDEN_HEADERS: [&str; 4] = ["authorization", "proxy-authorization", "cookie", "host"];

/// Response headers never handed to a plugin: they set or carry session
/// credentials and authentication challenges.
const HIDDEN_RESPONSE_HEADERS: [&str; 6] = [
    "set-cookie",
    "set-cookie2",
    "www-authenticate",
    "proxy-authenticate",
    "authentication-info",
    "proxy-authentication-info",
];

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
}

pub use super::failover::parse_retry_after;

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
    /// A request outside what the call was granted (a method it may not use, an
    /// origin the credential is not for): the host fails the whole plugin call.
    #[error("request refused by the host: {0}")]
    Forbidden(String),
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
    /// Whether the operation may write (methods besides GET and HEAD). No
    /// operation writes yet: listing and metadata only read.
    writes: bool,
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
            writes: false,
        }
    }

    /// Grants write methods (POST, PUT, PATCH, DELETE...) to an operation that
    /// writes: a restore into the provider (an `allow_restore` connection) or a
    /// webhook's registration. Never for a `read_only` connection or plan; TRACE and
    /// CONNECT stay refused.
    pub fn allowing_writes(mut self) -> HttpGate {
        self.writes = true;
        self
    }

    /// Whether write methods are granted ([`allowing_writes`](Self::allowing_writes)).
    pub fn writes_allowed(&self) -> bool {
        self.writes
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

    /// The connection's HTTP client (its TLS trust, no redirects followed), for
    /// transfers the host makes itself (LFS objects, attachment files).
    pub fn client(&self) -> &reqwest::blocking::Client {
        &self.client
    }

    /// Why a request to the connection got no answer, naming the connection's TLS
    /// trust when a certificate was refused; `true` when retrying may help.
    pub fn describe_unsent(&self, e: reqwest::Error) -> (String, bool) {
        let unsent = self.unsent(e);
        (unsent.error.to_string(), unsent.network)
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
        let method = req.method.to_ascii_uppercase();
        let shown = strip_query(url.as_str());
        if NEVER_METHODS.contains(&method.as_str()) {
            return Err(GateError::Forbidden(format!(
                "{method} {shown}: the method {method} is never allowed; nothing was sent"
            )));
        }
        if !self.writes && !READ_METHODS.contains(&method.as_str()) {
            return Err(GateError::Forbidden(format!(
                "{method} {shown}: this operation only reads (GET and HEAD), it may not \
                 write; nothing was sent"
            )));
        }
        if !self.allowed.contains(&url.origin()) {
            return Err(GateError::Forbidden(format!(
                "{method} {shown}: host {} is not in this connection's allow-list ({}); \
                 nothing was sent",
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
        reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| GateError::Denied(format!("bad method {:?}", req.method)))
    }

    /// Says that the request waits `d` (`rate limited, waiting 30 s`).
    fn wait_notice(&self, d: Duration, why: &str) {
        self.notify(&format!("{why}, waiting {} s", failover::secs_ceil(d)));
        tracing::info!("{why}, waiting {:.1} s", d.as_secs_f64());
    }

    /// The failover policy of this gate's requests (see [`failover::classify`]).
    fn failover_policy(&self) -> failover::Policy {
        failover::Policy {
            retries: self.policy.max_retries,
            backoff: self.policy.base_backoff,
            network_wait_cap: NETWORK_WAIT_CAP.min(self.policy.max_wait),
            max_wait: self.policy.max_wait,
            rate_limit_retries: self.policy.max_retries + self.pool.len() as u32,
            when_exhausted: failover::WhenExhausted::GiveUp,
        }
    }

    /// Sends a plugin's request with the credential, failing over as
    /// [`failover::classify`] says: 429s cool the principal down and move to another
    /// credential, 401/403 take a credential out while others remain, network failures
    /// and 5xx are retried with back-off.
    pub fn send(&self, req: &Request) -> Result<Response, GateError> {
        let method = self.check(req)?;
        let mut request = ApiRequest {
            gate: self,
            req,
            method,
            lane: 0,
            sent_auth: None,
        };
        let notice = |m: &str| self.notify(m);
        let finished = failover::run(
            &self.pool,
            &self.failover_policy(),
            None,
            &notice,
            &mut request,
        );
        let resp = finished.output.map_err(|u| u.error)?;
        self.read_response(resp, request.sent_auth.as_ref())
    }

    /// The answer for the plugin: status, headers, body within the limit. No
    /// [`HIDDEN_RESPONSE_HEADERS`], and no header whose value holds the
    /// credential the host sent (`sent_auth`, the `Authorization` value), e.g. a
    /// server echoing it.
    fn read_response(
        &self,
        resp: reqwest::blocking::Response,
        sent_auth: Option<&secrecy::SecretString>,
    ) -> Result<Response, GateError> {
        let status = resp.status().as_u16();
        let auth = sent_auth.map(|a| a.expose_secret());
        // The credential without its scheme (`Bearer `, `Basic `).
        let token = auth
            .and_then(|a| a.split_once(' ').map(|(_, t)| t.trim()))
            .filter(|t| t.len() >= 4);
        let carries_credential =
            |v: &str| auth.is_some_and(|a| v.contains(a)) || token.is_some_and(|t| v.contains(t));
        let headers = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().ok()?.to_string(),
                ))
            })
            .filter(|(k, v)| {
                !HIDDEN_RESPONSE_HEADERS.contains(&k.as_str()) && !carries_credential(v)
            })
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
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    /// The error of a request that got no answer. `network`: worth retrying (a
    /// certificate failure is not: it does not heal by retrying).
    fn unsent(&self, e: reqwest::Error) -> Unsent {
        if let Some(detail) = crate::tls::certificate_problem(&e) {
            let msg = match &self.tls {
                Some(t) => t.describe_failure(&detail),
                None => format!("TLS certificate problem: {detail}"),
            };
            return Unsent {
                error: GateError::Transport(msg),
                network: false,
            };
        }
        let timed_out = e.is_timeout();
        let msg = error_chain(&e.without_url());
        Unsent {
            error: if timed_out {
                GateError::Timeout(msg)
            } else {
                GateError::Transport(msg)
            },
            network: true,
        }
    }
}

/// Longest back-off after a network failure of an API request.
const NETWORK_WAIT_CAP: Duration = Duration::from_secs(10);

/// Why an attempt got no response.
struct Unsent {
    error: GateError,
    /// A network failure (retried), not a refusal by the host or a certificate failure.
    network: bool,
}

/// What one attempt of an API request gives back.
type Sent = Result<reqwest::blocking::Response, Unsent>;

/// One API request of a plugin, as [`failover::run`] makes it.
struct ApiRequest<'g> {
    gate: &'g HttpGate,
    req: &'g Request,
    method: reqwest::Method,
    /// The credential of the latest attempt.
    lane: usize,
    /// The `Authorization` value of the latest attempt, to keep it out of what
    /// the plugin gets back.
    sent_auth: Option<secrecy::SecretString>,
}

/// The `Retry-After` of a response, when it has a readable one.
fn retry_after(resp: &reqwest::blocking::Response) -> Option<Duration> {
    resp.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, time::OffsetDateTime::now_utc()))
}

impl failover::Attempts for ApiRequest<'_> {
    type Output = Sent;

    fn attempt(&mut self, lane: usize, _attempt: u32) -> Sent {
        self.lane = lane;
        let gate = self.gate;
        gate.pool.pace(lane, &|m| gate.notify(m));
        gate.stats.requests.fetch_add(1, Ordering::Relaxed);
        let auth = gate.pool.auth(lane);
        let denied = |e: String| Unsent {
            error: GateError::Denied(e),
            network: false,
        };
        let header = auth.api_header().map_err(|e| denied(e.to_string()))?;
        let mut rb = gate.client.request(self.method.clone(), &self.req.url);
        for (k, v) in &self.req.headers {
            rb = rb.header(k, v);
        }
        rb = rb.header("Authorization", header.expose_secret());
        self.sent_auth = Some(header);
        if let Some(b) = &self.req.body {
            rb = rb.body(b.clone());
        }
        let resp = rb.send().map_err(|e| gate.unsent(e))?;
        if resp.status().as_u16() == 401 && auth.kind().is_oauth() {
            // An expired or revoked token: the next attempt fetches a new one.
            auth.invalidate();
        }
        Ok(resp)
    }

    fn outcome(&self, output: &Sent) -> Outcome {
        match output {
            Err(u) if u.network => Outcome::Network,
            Err(_) => Outcome::Final,
            Ok(resp) => {
                let status = resp.status().as_u16();
                let oauth = self.gate.pool.auth(self.lane).kind().is_oauth();
                Outcome::from_status(status, retry_after(resp), oauth, || {
                    format!(
                        "the server answered {status} to {}",
                        strip_query(&self.req.url)
                    )
                })
            }
        }
    }

    fn event(&mut self, event: &Event<'_>, output: &Sent) {
        let gate = self.gate;
        match event {
            Event::RateLimited {
                credential,
                cooldown,
                others,
                going_on,
            } => {
                gate.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                if *others {
                    gate.notify(&format!(
                        "credential {credential} rate limited, cooling down {} s; another credential takes over",
                        failover::secs_ceil(*cooldown)
                    ));
                } else {
                    gate.wait_notice(*cooldown, "rate limited");
                }
                if *going_on {
                    gate.stats.retries.fetch_add(1, Ordering::Relaxed);
                }
            }
            Event::Refused { credential } => {
                let status = output.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
                gate.notify(&format!(
                    "credential {credential} answered {status}; continuing with the others"
                ));
            }
            Event::Retrying { after } => {
                let why = match output {
                    Err(u) => u.error.to_string(),
                    Ok(resp) if resp.status().is_server_error() => {
                        format!("server error {}", resp.status().as_u16())
                    }
                    // A renewed OAuth token: no wait, nothing to say.
                    Ok(_) => return,
                };
                gate.stats.retries.fetch_add(1, Ordering::Relaxed);
                gate.wait_notice(*after, &why);
            }
        }
    }

    fn no_credential(&mut self, err: PoolExhausted) -> Sent {
        Err(Unsent {
            error: GateError::Denied(err.to_string()),
            network: false,
        })
    }
}
