//! A test double of Bitbucket Data Center: the REST API 1.0 endpoints reposafe uses
//! (`/rest/api/1.0/projects`, `/rest/api/1.0/projects/{key}/repos`,
//! `/rest/api/1.0/repos`) and git smart-HTTP hosting under `/scm/<key>/<slug>.git`,
//! served by the real `git http-backend` (see [`crate::cgi`]), optionally over TLS
//! with a certificate signed by a [`TestCa`] and under a context path such as
//! `/bitbucket`.
//!
//! It mimics what real Data Center does where clients commonly go wrong:
//! * paged answers `{size, limit, isLastPage, start, nextPageStart, values}`: `limit`
//!   defaults to 25 and is capped at 1000, and a page may hold fewer values than
//!   `limit` (as when the server filters by permission), so only `nextPageStart` is a
//!   valid continuation, never `start + limit`;
//! * optionally the known bug of a page with `isLastPage: false` and no `nextPageStart`;
//! * clone links: `ssh` first, then `http` (named `http` even for an https URL), with
//!   the user name as userinfo for Basic callers; git URLs use the lower-case key;
//! * personal projects `~USER` are not in `/projects`, only in `/repos`;
//! * `429` with `Retry-After` (seconds) for the API and for git: injected
//!   ([`DcServer::fail_git_with_429`]) or from DC's rate limiter
//!   ([`DcServer::set_rate_limit`]: a token bucket per user, see [`RateLimit`]);
//! * 401 answers carry DC's `{"errors": [...]}` body.
//!
//! Metadata (see [`meta`] for the endpoints and their sources): every repository has a
//! [`RepoMetadata`] ([`DcServer::metadata`], [`DcServer::populate`]) served as pull
//! requests with activities, pull request settings, webhooks, branch permissions, default
//! reviewer conditions, the branch model and access keys; projects have default reviewers
//! and access keys; projects have webhooks that deliver signed `repo:refs_changed`
//! events (see [`hooks`]); Git LFS can be turned on per repository ([`DcServer::set_lfs_enabled`],
//! objects in [`DcServer::lfs`]). Requests can be counted by endpoint kind
//! ([`DcServer::requests_by_endpoint`], [`DcServer::count_requests`]).
//!
//! Credentials: users (`Basic user:password`, API and git), user HTTP access tokens
//! (`Bearer`, or `Basic user:token`; see what the user sees) and project HTTP access
//! tokens (`Bearer` only; see one project).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::cgi::{self, CgiRequest};
use crate::httputil::{self, Body};
use crate::lfs::{self, LfsStore};
use crate::metadata::{self, DeployKey, RepoMetadata, Spec};
use crate::tempdir::TempDir;
use crate::testca::TestCa;

mod hooks;
pub mod meta;
mod write;
pub use meta::NOT_PERMITTED;

/// Default and largest `limit` of a page, as on a default Data Center.
pub const DEFAULT_LIMIT: usize = 25;
pub const MAX_LIMIT: usize = 1000;

/// How to start the server.
#[derive(Debug, Clone, Default)]
pub struct DcOptions {
    /// Context path, e.g. `/bitbucket` (empty for none).
    pub context_path: String,
    /// Serve https with a certificate for `127.0.0.1` signed by a fresh [`TestCa`].
    pub tls: bool,
}

/// One request as seen by the server.
#[derive(Debug, Clone)]
pub struct DcRequest {
    pub method: String,
    /// Path plus query, as received (with the context path).
    pub path: String,
    /// The authenticated principal: a user name or `token:<name>`.
    pub principal: Option<String>,
    pub status: u16,
    pub is_git: bool,
    /// When the request arrived.
    pub received: Instant,
    /// When its answer (status and headers) was ready.
    pub timestamp: Instant,
    /// The answer's `Retry-After` in seconds, when it had one.
    pub retry_after: Option<u64>,
}

/// Bitbucket Data Center's rate limiting, as its administration guide describes it
/// ("Improving instance stability with rate limiting"): every HTTP request with Basic
/// or Bearer credentials — REST API and git over HTTP alike — takes one token from
/// its user's bucket; the bucket holds at most `capacity` tokens (DC's "token bucket
/// size", 60 by default) and refills at `per_second` tokens a second (the "refill
/// rate", 5 by default), starting full. An empty bucket answers `429 Too Many
/// Requests` with `Retry-After`: the whole seconds until the next token (at least 1)
/// and DC's `{"errors": [...]}` body; the rejected request takes no token.
/// Anonymous requests are not limited. (Jira and Confluence Data Center also send
/// `X-RateLimit-*` headers; Bitbucket's guide names none, so neither does the double,
/// and a client must not need them.) One bucket per user, as on a one-node instance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub capacity: u32,
    pub per_second: f64,
}

/// One user's bucket: the tokens it held at `at`.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    /// Takes a token from `bucket` (created full), or says how many whole seconds
    /// until one is there.
    fn take(&self, bucket: &mut Option<Bucket>, now: Instant) -> Result<(), u64> {
        let b = bucket.get_or_insert(Bucket {
            tokens: f64::from(self.capacity),
            at: now,
        });
        let refilled = now.duration_since(b.at).as_secs_f64() * self.per_second;
        b.tokens = (b.tokens + refilled).min(f64::from(self.capacity));
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let secs = ((1.0 - b.tokens) / self.per_second).ceil();
        Err((secs as u64).max(1))
    }
}

struct Repo {
    id: u64,
    path: PathBuf,
    public: bool,
    metadata: RepoMetadata,
    /// Git LFS enabled (`/rest/git-lfs/admin/.../enabled` answers 204, the batch API works).
    lfs: bool,
    description: Option<String>,
    forkable: bool,
}

struct Project {
    id: u64,
    name: String,
    /// Owner user name of a personal project.
    owner: Option<String>,
    repos: BTreeMap<String, Repo>,
    default_reviewers: Vec<String>,
    access_keys: Vec<DeployKey>,
    /// Project webhooks (see [`hooks`]).
    hooks: Vec<hooks::ProjectHook>,
}

impl Project {
    fn new(id: u64, name: &str, owner: Option<String>) -> Project {
        Project {
            id,
            name: name.to_string(),
            owner,
            repos: BTreeMap::new(),
            default_reviewers: Vec::new(),
            access_keys: Vec::new(),
            hooks: Vec::new(),
        }
    }
}

#[derive(Clone)]
enum TokenScope {
    User(String),
    Project(String),
}

#[derive(Default)]
struct State {
    /// By upper-case key.
    projects: BTreeMap<String, Project>,
    /// user → password
    users: BTreeMap<String, String>,
    /// token → (name, scope)
    tokens: BTreeMap<String, (String, TokenScope)>,
    /// user → project keys
    grants: BTreeMap<String, Vec<String>>,
    /// (user, or `token:KEY` for a project token; project key): REPO_ADMIN on its repositories.
    admins: Vec<(String, String)>,
    /// Order pull requests by `createdDate` instead of `updatedDate`.
    pr_order_created: bool,
    next_id: u64,
    page_cap: usize,
    missing_next_page_start: Vec<String>,
    api_429: Option<(usize, u64)>,
    git_429: Option<(usize, u64)>,
    rate_limit: Option<RateLimit>,
    /// principal → its token bucket (under [`State::rate_limit`]).
    buckets: BTreeMap<String, Bucket>,
    log: Vec<DcRequest>,
    /// Principals (user names, `token:…`) that may read but not push (receive-pack → 403).
    read_only: Vec<String>,
}

impl State {
    /// DC's rate limiter on a request of `principal` (anonymous ones pass): `Err` with
    /// the `Retry-After` seconds when its bucket is empty.
    fn rate_limited(&mut self, principal: Option<&str>) -> Result<(), u64> {
        let (Some(limit), Some(principal)) = (self.rate_limit, principal) else {
            return Ok(());
        };
        let mut bucket = self.buckets.remove(principal);
        let taken = limit.take(&mut bucket, Instant::now());
        if let Some(b) = bucket {
            self.buckets.insert(principal.to_string(), b);
        }
        taken
    }
}

struct Shared {
    state: Mutex<State>,
    base_url: String,
    context_path: String,
    cgi_home: PathBuf,
    /// Git LFS objects (keyed by upper-case project key and slug).
    lfs: Arc<LfsStore>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The Bitbucket Data Center test double. Starts on `127.0.0.1:<random port>`; stops on drop.
pub struct DcServer {
    shared: Arc<Shared>,
    ca: Option<TestCa>,
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: Option<oneshot::Sender<()>>,
    lfs_shutdown: Option<oneshot::Sender<()>>,
    _home: TempDir,
    _lfs_dir: TempDir,
}

impl DcServer {
    pub fn start(opts: DcOptions) -> DcServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("set_nonblocking");
        let addr = listener.local_addr().expect("local_addr");
        let home = TempDir::new("reposafe-testkit-dc-home");
        let context_path = opts.context_path.trim_end_matches('/').to_string();
        assert!(
            context_path.is_empty() || context_path.starts_with('/'),
            "the context path must start with /"
        );
        let ca = opts.tls.then(|| TestCa::new("reposafe test CA"));
        let scheme = if opts.tls { "https" } else { "http" };
        // LFS objects come from a second (plain http) origin, as in the Cloud double.
        let downloads = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 (LFS)");
        downloads.set_nonblocking(true).expect("set_nonblocking");
        let downloads_addr = downloads.local_addr().expect("local_addr");
        let lfs_dir = TempDir::new("reposafe-testkit-dc-lfs");
        let lfs = Arc::new(LfsStore::new(
            lfs_dir.path(),
            format!("http://{downloads_addr}"),
        ));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_id: 1,
                page_cap: MAX_LIMIT,
                ..State::default()
            }),
            base_url: format!("{scheme}://{addr}{context_path}"),
            context_path,
            cgi_home: home.path().to_path_buf(),
            lfs: lfs.clone(),
        });
        let acceptor = ca
            .as_ref()
            .map(|ca| tokio_rustls::TlsAcceptor::from(ca.server_config(&["127.0.0.1"])));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("testkit-dc")
            .enable_all()
            .build()
            .expect("tokio runtime");
        let (tx, rx) = oneshot::channel();
        let sh = shared.clone();
        runtime.spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("[testkit] cannot adopt listener: {e}");
                    return;
                }
            };
            serve(listener, acceptor, sh, rx).await;
        });
        let (lfs_tx, lfs_rx) = oneshot::channel();
        runtime.spawn(async move {
            match tokio::net::TcpListener::from_std(downloads) {
                Ok(l) => lfs::serve_downloads(l, lfs, lfs_rx).await,
                Err(e) => eprintln!("[testkit] cannot adopt the LFS listener: {e}"),
            }
        });
        DcServer {
            shared,
            ca,
            runtime: Some(runtime),
            shutdown: Some(tx),
            lfs_shutdown: Some(lfs_tx),
            _home: home,
            _lfs_dir: lfs_dir,
        }
    }

    /// `http(s)://127.0.0.1:PORT<context path>`: the connection's `base-url`.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The PEM of the CA that signed the server's certificate (TLS servers only).
    pub fn ca_pem(&self) -> Option<String> {
        self.ca.as_ref().map(TestCa::ca_pem)
    }

    /// Creates a project (no-op if it exists).
    pub fn add_project(&self, key: &str, name: &str) {
        let mut st = self.shared.lock();
        let id = st.next_id;
        let key = key.to_ascii_uppercase();
        if !st.projects.contains_key(&key) {
            st.next_id += 1;
            st.projects.insert(key, Project::new(id, name, None));
        }
    }

    /// Registers `key/slug` served from the bare repository `bare_repo`; returns its id.
    /// A key `~user` adds a repository to `user`'s personal project.
    pub fn add_repo(&self, key: &str, slug: &str, bare_repo: &Path, public: bool) -> u64 {
        let upper = key.to_ascii_uppercase();
        if let Some(user) = key.strip_prefix('~') {
            let mut st = self.shared.lock();
            if !st.projects.contains_key(&upper) {
                let id = st.next_id;
                st.next_id += 1;
                st.projects.insert(
                    upper.clone(),
                    Project::new(id, user, Some(user.to_string())),
                );
            }
        } else {
            self.add_project(key, key);
        }
        let path = std::fs::canonicalize(bare_repo).unwrap_or_else(|_| bare_repo.to_path_buf());
        let mut st = self.shared.lock();
        let id = st.next_id;
        st.next_id += 1;
        if let Some(p) = st.projects.get_mut(&upper) {
            let old = p.repos.remove(slug);
            let (metadata, lfs) = old.map(|r| (r.metadata, r.lfs)).unwrap_or_default();
            p.repos.insert(
                slug.to_string(),
                Repo {
                    id,
                    path,
                    public,
                    metadata,
                    lfs,
                    description: None,
                    forkable: true,
                },
            );
        }
        id
    }

    /// A user with a password (`Basic user:password` for API and git).
    pub fn add_user(&self, user: &str, password: &str) {
        self.shared
            .lock()
            .users
            .insert(user.to_string(), password.to_string());
    }

    /// Lets `user` read project `key`.
    pub fn grant(&self, user: &str, key: &str) {
        self.shared
            .lock()
            .grants
            .entry(user.to_string())
            .or_default()
            .push(key.to_ascii_uppercase());
    }

    /// A user's HTTP access token: sees what the user sees.
    pub fn add_user_token(&self, user: &str, token: &str) {
        self.shared.lock().tokens.insert(
            token.to_string(),
            (format!("token:{user}"), TokenScope::User(user.to_string())),
        );
    }

    /// Makes a principal (a user name, or `token:<user>` / `token:<KEY>` for an access token)
    /// read-only for git: its `git-receive-pack` requests get 403, as on Data Center for a
    /// user or token with read permission only; fetching still works.
    pub fn set_read_only(&self, principal: &str) {
        self.shared.lock().read_only.push(principal.to_string());
    }

    /// A project HTTP access token: sees project `key` only; `Bearer` only.
    pub fn add_project_token(&self, key: &str, token: &str) {
        let key = key.to_ascii_uppercase();
        self.shared.lock().tokens.insert(
            token.to_string(),
            (format!("token:{key}"), TokenScope::Project(key)),
        );
    }

    /// At most `n` values per page (whatever `limit` says).
    pub fn set_page_cap(&self, n: usize) {
        self.shared.lock().page_cap = n.max(1);
    }

    /// Pages of project `key`'s repository list that are not the last one say
    /// `isLastPage: false` but carry no `nextPageStart` (the known server bug).
    pub fn omit_next_page_start(&self, key: &str) {
        self.shared
            .lock()
            .missing_next_page_start
            .push(key.to_ascii_uppercase());
    }

    /// The next `n` REST API requests answer 429 with `Retry-After: secs`.
    pub fn fail_api_with_429(&self, n: usize, retry_after_secs: u64) {
        self.shared.lock().api_429 = Some((n, retry_after_secs));
    }

    /// The next `n` git requests answer 429 with `Retry-After: secs`.
    pub fn fail_git_with_429(&self, n: usize, retry_after_secs: u64) {
        self.shared.lock().git_429 = Some((n, retry_after_secs));
    }

    /// Turns on DC's rate limiting (see [`RateLimit`]): a bucket of `capacity` tokens
    /// per user, refilled at `per_second` tokens a second, for REST and git requests.
    /// Every bucket starts full.
    pub fn set_rate_limit(&self, capacity: u32, per_second: f64) {
        assert!(capacity > 0 && per_second > 0.0, "an empty rate limit");
        let mut st = self.shared.lock();
        st.rate_limit = Some(RateLimit {
            capacity,
            per_second,
        });
        st.buckets.clear();
    }

    /// Turns DC's rate limiting off.
    pub fn clear_rate_limit(&self) {
        let mut st = self.shared.lock();
        st.rate_limit = None;
        st.buckets.clear();
    }

    /// The rate limit in force, if any.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.shared.lock().rate_limit
    }

    /// Reads or changes the metadata of repository `key/slug` (see [`crate::metadata`])
    /// under the server's lock. Cloud-only parts (issues, pipelines, environments,
    /// downloads) are not served by DC. Panics if the repository was not added.
    pub fn metadata<R>(&self, key: &str, slug: &str, f: impl FnOnce(&mut RepoMetadata) -> R) -> R {
        let mut st = self.shared.lock();
        let repo = st
            .projects
            .get_mut(&key.to_ascii_uppercase())
            .and_then(|p| p.repos.get_mut(slug))
            .unwrap_or_else(|| panic!("no repository {key}/{slug}: add_repo first"));
        f(&mut repo.metadata)
    }

    /// Fills the metadata of `key/slug` with [`metadata::populate`].
    pub fn populate(&self, key: &str, slug: &str, spec: &Spec) {
        self.metadata(key, slug, |m| metadata::populate(m, spec));
    }

    /// Gives `user` (or, with `token:KEY`, project `KEY`'s tokens) REPO_ADMIN on the
    /// repositories of project `key` (and PROJECT_ADMIN): needed for webhooks, branch
    /// permissions and access keys, which answer 401 otherwise.
    pub fn grant_admin(&self, user: &str, key: &str) {
        self.shared
            .lock()
            .admins
            .push((user.to_string(), key.to_ascii_uppercase()));
    }

    /// Sets the project-level default reviewers of `key`.
    pub fn set_project_default_reviewers(&self, key: &str, users: &[&str]) {
        self.add_project(key, key);
        if let Some(p) = self
            .shared
            .lock()
            .projects
            .get_mut(&key.to_ascii_uppercase())
        {
            p.default_reviewers = users.iter().map(|u| u.to_string()).collect();
        }
    }

    /// Adds a project-level SSH access key.
    pub fn add_project_access_key(&self, key: &str, label: &str, public_key: &str) {
        self.add_project(key, key);
        let mut st = self.shared.lock();
        let id = st.next_id;
        st.next_id += 1;
        if let Some(p) = st.projects.get_mut(&key.to_ascii_uppercase()) {
            p.access_keys.push(DeployKey {
                id,
                label: label.to_string(),
                key: public_key.to_string(),
                created_ms: metadata::CLOCK_START_MS,
            });
        }
    }

    /// Makes `order=NEWEST|OLDEST` sort pull requests by `createdDate` instead of
    /// `updatedDate` (the default; DC's reference does not name the date), so a test can
    /// check that a client does not depend on either.
    pub fn set_pr_order_by_created(&self, yes: bool) {
        self.shared.lock().pr_order_created = yes;
    }

    /// Turns Git LFS on or off for `key/slug` (off by default, as on DC).
    pub fn set_lfs_enabled(&self, key: &str, slug: &str, enabled: bool) {
        let mut st = self.shared.lock();
        if let Some(r) = st
            .projects
            .get_mut(&key.to_ascii_uppercase())
            .and_then(|p| p.repos.get_mut(slug))
        {
            r.lfs = enabled;
        }
    }

    /// The LFS objects: `lfs().add(&KEY.to_uppercase(), slug, bytes)` (the project key in
    /// upper case). Batch API: `<clone url>/info/lfs/objects/batch`.
    pub fn lfs(&self) -> &LfsStore {
        &self.shared.lfs
    }

    /// How many logged requests have a path (with query) for which `pred` holds.
    pub fn count_requests(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.shared
            .lock()
            .log
            .iter()
            .filter(|r| pred(&r.path))
            .count()
    }

    /// Logged REST requests counted by endpoint kind ([`httputil::endpoint_kind`], context
    /// path removed), e.g. `/rest/api/1.0/projects/{key}/repos/{slug}/pull-requests`.
    pub fn requests_by_endpoint(&self) -> BTreeMap<String, usize> {
        let ctx = self.shared.context_path.clone();
        let mut out = BTreeMap::new();
        for r in self.shared.lock().log.iter().filter(|r| !r.is_git) {
            let path = r.path.strip_prefix(ctx.as_str()).unwrap_or(&r.path);
            *out.entry(httputil::endpoint_kind(path)).or_default() += 1;
        }
        out
    }

    /// Every request since the start (or the last [`clear_log`](Self::clear_log)).
    pub fn request_log(&self) -> Vec<DcRequest> {
        self.shared.lock().log.clone()
    }

    pub fn clear_log(&self) {
        self.shared.lock().log.clear();
    }
}

impl Drop for DcServer {
    fn drop(&mut self) {
        for tx in [self.shutdown.take(), self.lfs_shutdown.take()]
            .into_iter()
            .flatten()
        {
            let _ = tx.send(());
        }
        if let Some(rt) = self.runtime.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                rt.shutdown_background();
            } else {
                rt.shutdown_timeout(Duration::from_secs(2));
            }
        }
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let sh = shared.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let sh = sh.clone();
                async move { Ok::<_, Infallible>(handle(sh, peer, req).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            match acceptor {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls) => {
                        let io = hyper_util::rt::TokioIo::new(tls);
                        let _ = builder.keep_alive(true).serve_connection(io, svc).await;
                    }
                    // The client refused our certificate (the point of some tests).
                    Err(e) => eprintln!("[testkit] TLS handshake with {peer} failed: {e}"),
                },
                None => {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = builder.keep_alive(true).serve_connection(io, svc).await;
                }
            }
        });
    }
}

struct Outcome {
    resp: Response<Body>,
    principal: Option<String>,
    is_git: bool,
}

async fn handle(shared: Arc<Shared>, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let received = Instant::now();
    let out = route(&shared, peer, req).await;
    let status = out.resp.status().as_u16();
    let retry_after = out
        .resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    shared.lock().log.push(DcRequest {
        method,
        path,
        principal: out.principal,
        status,
        is_git: out.is_git,
        received,
        timestamp: Instant::now(),
        retry_after,
    });
    out.resp
}

fn api_out(resp: Response<Body>, principal: Option<String>) -> Outcome {
    Outcome {
        resp,
        principal,
        is_git: false,
    }
}

async fn route(shared: &Arc<Shared>, peer: SocketAddr, req: Request<Incoming>) -> Outcome {
    let raw = req.uri().path().to_string();
    let Some(rest) = raw.strip_prefix(shared.context_path.as_str()) else {
        return api_out(errors(StatusCode::NOT_FOUND, "Not found"), None);
    };
    let mut segs = Vec::new();
    for s in rest.trim_start_matches('/').split('/') {
        match httputil::percent_decode(s) {
            Some(d) => segs.push(d),
            None => return api_out(errors(StatusCode::BAD_REQUEST, "Malformed URL path"), None),
        }
    }
    let query = req.uri().query().unwrap_or("").to_string();
    let Some(params) = httputil::parse_form(&query) else {
        return api_out(
            errors(StatusCode::BAD_REQUEST, "Malformed query string"),
            None,
        );
    };
    let after_rest = segs.split_first().filter(|(first, _)| *first == "rest");
    if let Some((key, hook_path)) = after_rest.and_then(|(_, r)| hooks::matches(r)) {
        let (method, headers) = (req.method().clone(), req.headers().clone());
        let Ok(body) = http_body_util::BodyExt::collect(req.into_body()).await else {
            return api_out(errors(StatusCode::BAD_REQUEST, "Unreadable body"), None);
        };
        let body = body.to_bytes();
        let at = (key, hook_path);
        return hooks::handle(shared, (&method, &headers), at, &params, &body);
    }
    match segs.first().map(String::as_str) {
        Some("rest") if segs.len() >= 3 && req.method() != Method::GET => {
            let (method, headers) = (req.method().clone(), req.headers().clone());
            match http_body_util::BodyExt::collect(req.into_body()).await {
                Ok(body) => write::handle(shared, &method, &headers, &segs[1..], &body.to_bytes()),
                Err(_) => api_out(errors(StatusCode::BAD_REQUEST, "Unreadable body"), None),
            }
        }
        Some("rest") if segs.len() >= 3 => {
            api(shared, req.method(), req.headers(), &segs[1..], &params)
        }
        Some("scm") if segs.len() >= 4 => {
            let key = segs[1].clone();
            git(shared, peer, req, key, segs[2..].to_vec(), query).await
        }
        _ => api_out(
            errors(StatusCode::NOT_FOUND, &format!("No resource at {raw}")),
            None,
        ),
    }
}

// ---------------------------------------------------------------- responses

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(httputil::full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    r
}

/// Data Center's error body.
fn errors(status: StatusCode, message: &str) -> Response<Body> {
    json_response(
        status,
        &json!({"errors": [{"context": null, "message": message, "exceptionName": null}]}),
    )
}

fn unauthorized() -> Response<Body> {
    let mut r = errors(
        StatusCode::UNAUTHORIZED,
        "Authentication failed. Please check your credentials and try again.",
    );
    r.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Atlassian Bitbucket\""),
    );
    r
}

fn too_many(retry_after: u64) -> Response<Body> {
    let mut r = errors(
        StatusCode::TOO_MANY_REQUESTS,
        "You have been rate limited. Please try again later.",
    );
    if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
        r.headers_mut().insert(RETRY_AFTER, v);
    }
    r
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(httputil::full(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

// ---------------------------------------------------------------- auth

enum Cred {
    None,
    Basic(String, String),
    Bearer(String),
    Malformed,
}

fn parse_auth(headers: &HeaderMap) -> Cred {
    let Some(v) = headers.get(hyper::header::AUTHORIZATION) else {
        return Cred::None;
    };
    let Ok(v) = v.to_str() else {
        return Cred::Malformed;
    };
    let Some((scheme, rest)) = v.trim().split_once(' ') else {
        return Cred::Malformed;
    };
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        match decoded.as_deref().and_then(|s| s.split_once(':')) {
            Some((u, p)) => Cred::Basic(u.to_string(), p.to_string()),
            None => Cred::Malformed,
        }
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Cred::Bearer(rest.trim().to_string())
    } else {
        Cred::Malformed
    }
}

/// Who is calling and what they may see.
struct Caller {
    principal: String,
    /// User name shown in clone links (Basic callers).
    basic_user: Option<String>,
    scope: TokenScope,
}

fn identify(st: &State, cred: &Cred) -> Option<Caller> {
    match cred {
        Cred::Bearer(t) => st.tokens.get(t).map(|(name, scope)| Caller {
            principal: name.clone(),
            basic_user: None,
            scope: scope.clone(),
        }),
        Cred::Basic(u, p) => {
            if st.users.get(u) == Some(p) {
                return Some(Caller {
                    principal: u.clone(),
                    basic_user: Some(u.clone()),
                    scope: TokenScope::User(u.clone()),
                });
            }
            // A user's token as the password of that user (project tokens need Bearer).
            match st.tokens.get(p) {
                Some((name, TokenScope::User(owner))) if owner == u => Some(Caller {
                    principal: name.clone(),
                    basic_user: Some(u.clone()),
                    scope: TokenScope::User(u.clone()),
                }),
                _ => None,
            }
        }
        Cred::None | Cred::Malformed => None,
    }
}

fn can_see(st: &State, caller: &Caller, key: &str) -> bool {
    match &caller.scope {
        TokenScope::Project(k) => k == key,
        TokenScope::User(u) => {
            let personal = st
                .projects
                .get(key)
                .and_then(|p| p.owner.as_deref())
                .is_some_and(|o| o.eq_ignore_ascii_case(u));
            personal || st.grants.get(u).is_some_and(|g| g.iter().any(|k| k == key))
        }
    }
}

fn take_429(slot: &mut Option<(usize, u64)>) -> Option<u64> {
    match slot {
        Some((n, secs)) if *n > 0 => {
            *n -= 1;
            Some(*secs)
        }
        _ => None,
    }
}

// ---------------------------------------------------------------- REST API

fn page(
    params: &[(String, String)],
    cap: usize,
    items: Vec<Value>,
    omit_next: bool,
) -> Result<Value, &'static str> {
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let start = match get("start") {
        None => 0,
        Some(s) => s.parse::<usize>().map_err(|_| "start must be a number")?,
    };
    let limit = match get("limit") {
        None => DEFAULT_LIMIT,
        Some(s) => s
            .parse::<usize>()
            .map_err(|_| "limit must be a number")?
            .clamp(1, MAX_LIMIT),
    };
    let take = limit.min(cap);
    let values: Vec<Value> = items.iter().skip(start).take(take).cloned().collect();
    let end = start + values.len();
    let is_last = end >= items.len();
    let mut v = json!({
        "size": values.len(),
        "limit": limit,
        "isLastPage": is_last,
        "start": start,
        "values": values,
    });
    if !is_last && !omit_next {
        v["nextPageStart"] = json!(end);
    }
    Ok(v)
}

fn project_json(key: &str, p: &Project) -> Value {
    let mut v = json!({
        "key": key,
        "id": p.id,
        "name": p.name,
        "public": false,
        "type": if p.owner.is_some() { "PERSONAL" } else { "NORMAL" },
    });
    if let Some(o) = &p.owner {
        v["owner"] = json!({"name": o, "slug": o, "displayName": o, "type": "NORMAL"});
    }
    v
}

fn repo_json(
    base: &str,
    key: &str,
    p: &Project,
    slug: &str,
    r: &Repo,
    user: Option<&str>,
) -> Value {
    let lkey = key.to_ascii_lowercase();
    let http = match (user, base.split_once("://")) {
        (Some(u), Some((scheme, rest))) => format!("{scheme}://{u}@{rest}/scm/{lkey}/{slug}.git"),
        _ => format!("{base}/scm/{lkey}/{slug}.git"),
    };
    let mut v = json!({
        "slug": slug,
        "id": r.id,
        "name": slug,
        "hierarchyId": format!("{:020x}", r.id),
        "scmId": "git",
        "state": "AVAILABLE",
        "statusMessage": "Available",
        "forkable": r.forkable,
        "project": project_json(key, p),
        "public": r.public,
        "archived": false,
        "links": {
            "clone": [
                {"href": format!("ssh://git@127.0.0.1:7999/{lkey}/{slug}.git"), "name": "ssh"},
                {"href": http, "name": "http"}
            ],
            "self": [{"href": format!("{base}/projects/{key}/repos/{slug}/browse")}]
        }
    });
    if let Some(d) = &r.description {
        v["description"] = json!(d);
    }
    v
}

fn api(
    shared: &Shared,
    method: &Method,
    headers: &HeaderMap,
    path: &[String],
    params: &[(String, String)],
) -> Outcome {
    let cred = parse_auth(headers);
    let mut st = shared.lock();
    let caller = identify(&st, &cred);
    let principal = caller.as_ref().map(|c| c.principal.clone());
    if let Some(secs) = take_429(&mut st.api_429) {
        return api_out(too_many(secs), principal);
    }
    if let Err(secs) = st.rate_limited(principal.as_deref()) {
        return api_out(too_many(secs), principal);
    }
    let Some(caller) = caller else {
        return api_out(unauthorized(), None);
    };
    if method != Method::GET {
        return api_out(
            errors(StatusCode::METHOD_NOT_ALLOWED, "Only GET is supported here"),
            principal,
        );
    }
    let all: Vec<&str> = path.iter().map(String::as_str).collect();
    let base = shared.base_url.as_str();
    let user = caller.basic_user.as_deref();
    if let Some(resp) = metadata_api(base, &st, &caller, &all, params) {
        return api_out(resp, principal);
    }
    let p = match all.as_slice() {
        ["api", "1.0", rest @ ..] => rest.to_vec(),
        _ => {
            return api_out(
                errors(StatusCode::NOT_FOUND, "No such REST resource"),
                principal,
            )
        }
    };
    let cap = st.page_cap;
    let result = match p.as_slice() {
        ["projects"] => {
            let items = st
                .projects
                .iter()
                .filter(|(k, pr)| pr.owner.is_none() && can_see(&st, &caller, k))
                .map(|(k, pr)| project_json(k, pr))
                .collect();
            page(params, cap, items, false)
        }
        ["projects", key, "repos"] => {
            let key = key.to_ascii_uppercase();
            let Some(pr) = st.projects.get(&key) else {
                return api_out(
                    errors(
                        StatusCode::NOT_FOUND,
                        &format!("Project {key} does not exist."),
                    ),
                    principal,
                );
            };
            if !can_see(&st, &caller, &key) {
                return api_out(
                    errors(
                        StatusCode::UNAUTHORIZED,
                        &format!("You are not permitted to access project {key}"),
                    ),
                    principal,
                );
            }
            let items = pr
                .repos
                .iter()
                .map(|(slug, r)| repo_json(base, &key, pr, slug, r, user))
                .collect();
            let omit = st.missing_next_page_start.contains(&key);
            page(params, cap, items, omit)
        }
        ["repos"] => {
            let items = st
                .projects
                .iter()
                .filter(|(k, _)| can_see(&st, &caller, k))
                .flat_map(|(k, pr)| {
                    pr.repos
                        .iter()
                        .map(move |(slug, r)| repo_json(base, k, pr, slug, r, user))
                })
                .collect();
            page(params, cap, items, false)
        }
        _ => {
            return api_out(
                errors(StatusCode::NOT_FOUND, "No such REST resource"),
                principal,
            )
        }
    };
    match result {
        Ok(v) => api_out(json_response(StatusCode::OK, &v), principal),
        Err(msg) => api_out(errors(StatusCode::BAD_REQUEST, msg), principal),
    }
}

/// Whether `caller` has REPO_ADMIN in project `key`.
fn is_admin(st: &State, caller: &Caller, key: &str) -> bool {
    let who = match &caller.scope {
        TokenScope::User(u) => u.clone(),
        TokenScope::Project(k) => format!("token:{k}"),
    };
    st.admins.iter().any(|(u, k)| *u == who && k == key)
}

/// `(root, key, slug, rest)` of a metadata path after `/rest/`: `api/1.0/projects/{key}[/repos/{slug}]/…`
/// or `{plugin}/{version}/projects/{key}[/repos/{slug}]/…` (`git-lfs/admin/…` too).
fn split_meta_path<'a>(p: &[&'a str]) -> Option<(&'a str, &'a str, Option<&'a str>, Vec<&'a str>)> {
    let (root, rest) = match p {
        ["api", "1.0", rest @ ..] => ("api", rest),
        [root @ ("branch-permissions" | "default-reviewers" | "branch-utils" | "keys"), _, rest @ ..] => {
            (*root, rest)
        }
        ["git-lfs", "admin", rest @ ..] => ("git-lfs", rest),
        _ => return None,
    };
    match rest {
        ["projects", key, "repos", slug, tail @ ..] => {
            Some((root, key, Some(*slug), tail.to_vec()))
        }
        ["projects", _, "repos"] => None,
        ["projects", key, tail @ ..] => Some((root, key, None, tail.to_vec())),
        _ => None,
    }
}

/// The metadata endpoints (see [`meta`]); `None` for other paths.
fn metadata_api(
    base: &str,
    st: &State,
    caller: &Caller,
    p: &[&str],
    params: &[(String, String)],
) -> Option<Response<Body>> {
    let (root, key, slug, rest) = split_meta_path(p)?;
    let key = key.to_ascii_uppercase();
    let Some(project) = st.projects.get(&key) else {
        return Some(errors(
            StatusCode::NOT_FOUND,
            &format!("Project {key} does not exist."),
        ));
    };
    if !can_see(st, caller, &key) {
        return Some(errors(
            StatusCode::UNAUTHORIZED,
            &format!("You are not permitted to access project {key}"),
        ));
    }
    let Some(slug) = slug else {
        return meta::project_endpoint(base, st, caller, (&key, project), (root, &rest), params);
    };
    let Some(repo) = project.repos.get(slug) else {
        return Some(errors(
            StatusCode::NOT_FOUND,
            &format!("Repository {key}/{slug} does not exist."),
        ));
    };
    let ctx = meta::Ctx {
        base,
        key: &key,
        project,
        slug,
        repo,
        user: caller.basic_user.as_deref(),
    };
    meta::repo_endpoint(&ctx, st, caller, root, &rest, params)
}

// ---------------------------------------------------------------- git

/// The Git LFS batch API of `key/slug` (404 when LFS is off, as DC answers).
async fn lfs_batch(
    shared: &Shared,
    req: Request<Incoming>,
    key: &str,
    slug: &str,
    enabled: bool,
    principal: Option<&str>,
) -> Response<Body> {
    if !enabled {
        let mut r = Response::new(httputil::full(
            json!({"message": "Git LFS is not enabled for this repository"}).to_string(),
        ));
        *r.status_mut() = StatusCode::NOT_FOUND;
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(lfs::LFS_MEDIA_TYPE));
        return r;
    }
    if req.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "Use POST\n");
    }
    match http_body_util::BodyExt::collect(req.into_body()).await {
        Ok(body) => {
            // A read-only principal may download but not upload (403, as DC answers).
            let may_write =
                principal.is_some_and(|p| !shared.lock().read_only.iter().any(|r| r == p));
            shared.lfs.batch_as(key, slug, &body.to_bytes(), may_write)
        }
        Err(_) => text(StatusCode::BAD_REQUEST, "Unreadable body\n"),
    }
}

async fn git(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
    key: String,
    segs: Vec<String>,
    query: String,
) -> Outcome {
    let out = |resp, principal| Outcome {
        resp,
        principal,
        is_git: true,
    };
    let slug = segs[0].strip_suffix(".git").unwrap_or(&segs[0]).to_string();
    let rest = &segs[1..];
    if slug.is_empty() || rest.iter().any(|s| s.is_empty() || s == "." || s == "..") {
        return out(text(StatusCode::BAD_REQUEST, "Bad git path\n"), None);
    }
    let key = key.to_ascii_uppercase();
    let cred = parse_auth(req.headers());
    let (principal, repo_path, lfs_on) = {
        let mut st = shared.lock();
        let caller = identify(&st, &cred);
        let principal = caller.as_ref().map(|c| c.principal.clone());
        if let Some(secs) = take_429(&mut st.git_429) {
            return out(too_many(secs), principal);
        }
        if let Err(secs) = st.rate_limited(principal.as_deref()) {
            return out(too_many(secs), principal);
        }
        let Some(caller) = caller else {
            let mut r = text(StatusCode::UNAUTHORIZED, "Authentication failed\n");
            r.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Atlassian Bitbucket\""),
            );
            return out(r, None);
        };
        let Some(repo) = st.projects.get(&key).and_then(|p| p.repos.get(&slug)) else {
            return out(
                text(StatusCode::NOT_FOUND, "Repository not found\n"),
                principal,
            );
        };
        if !can_see(&st, &caller, &key) {
            return out(text(StatusCode::FORBIDDEN, "Access denied\n"), principal);
        }
        if cgi::is_receive_pack(rest, &query) && st.read_only.contains(&caller.principal) {
            return out(text(StatusCode::FORBIDDEN, "Access denied\n"), principal);
        }
        (principal, repo.path.clone(), repo.lfs)
    };
    if rest == ["info", "lfs", "objects", "batch"] {
        let batch = lfs_batch(shared, req, &key, &slug, lfs_on, principal.as_deref()).await;
        return out(batch, principal);
    }
    let (Some(root), Some(name)) = (repo_path.parent(), repo_path.file_name()) else {
        return out(
            text(StatusCode::INTERNAL_SERVER_ERROR, "Bad repository path\n"),
            principal,
        );
    };
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let cgi_req = CgiRequest {
        project_root: root.to_path_buf(),
        path_info: format!("/{}/{}", name.to_string_lossy(), rest.join("/")),
        method: req.method().to_string(),
        query,
        content_type: header("content-type"),
        content_length: header("content-length").and_then(|v| v.parse().ok()),
        content_encoding: header("content-encoding"),
        git_protocol: header("git-protocol"),
        remote_user: principal.clone(),
        remote_addr: peer.ip().to_string(),
        home: shared.cgi_home.clone(),
    };
    let resp = cgi::run_git_http_backend(cgi_req, req.into_body()).await;
    out(resp, principal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_starts_full_refills_at_its_rate_and_names_the_wait() {
        let limit = RateLimit {
            capacity: 3,
            per_second: 2.0,
        };
        let t0 = Instant::now();
        let mut bucket = None;
        for _ in 0..3 {
            assert_eq!(limit.take(&mut bucket, t0), Ok(()));
        }
        // Empty: the next token is 0.5 s away, said as whole seconds.
        assert_eq!(limit.take(&mut bucket, t0), Err(1));
        assert_eq!(
            limit.take(&mut bucket, t0 + Duration::from_millis(600)),
            Ok(())
        );
        // A long pause refills only up to the capacity.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(limit.take(&mut bucket, later), Ok(()));
        }
        assert!(limit.take(&mut bucket, later).is_err());
        let slow = RateLimit {
            capacity: 1,
            per_second: 0.25,
        };
        let mut bucket = None;
        assert_eq!(slow.take(&mut bucket, t0), Ok(()));
        assert_eq!(slow.take(&mut bucket, t0), Err(4));
    }
}
