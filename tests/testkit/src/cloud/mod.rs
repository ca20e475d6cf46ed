//! A test double of Bitbucket Cloud: the REST API 2.0 endpoints reposafe uses, the OAuth
//! client-credentials token endpoint, and git smart-HTTP hosting served by the real
//! `git http-backend` (see [`crate::cgi`]).
//!
//! It mimics what real Cloud does where clients commonly go wrong:
//! * realistic pagination (`pagelen` default 10, capped at 100, 1-based `page`, absolute
//!   `next` links that are absent on the last page);
//! * the `ssh` clone link comes first, and the `https` link carries a userinfo part;
//! * retired endpoints (`/2.0/workspaces`, `/2.0/user/permissions/workspaces`,
//!   `/2.0/repositories`) answer `410 Gone`;
//! * rate limiting answers `429` with the body `Rate limit for this resource has been
//!   exceeded` and **no** `Retry-After` header; the limit is per principal over a sliding
//!   window (60 s unless [`CloudServer::set_rate_limit_window`] says otherwise), and
//!   [`CloudServer::principal_load`] reports from the request log the most requests each
//!   principal sent within any such window;
//! * a credential can be revoked ([`CloudServer::revoke_token`]): it then gets `401`, as a
//!   deleted token does;
//! * workspace access tokens cannot list the user's workspaces (`403`) and are not users.
//!
//! Metadata (endpoints and their sources in [`meta`]): every repository has a
//! [`RepoMetadata`] — change it with [`CloudServer::metadata`] or fill it with
//! [`CloudServer::populate`] — served under `/2.0/repositories/{ws}/{slug}/…` (pull
//! requests with comments, activity and tasks; issues with comments, changes and
//! attachments; branch restrictions, branching model, default reviewers, deploy keys,
//! hooks, pipelines config/variables/schedules, environments and their variables,
//! downloads). Workspace level: `/2.0/workspaces/{ws}`, `/2.0/workspaces/{ws}/projects`
//! and `/projects/{key}/default-reviewers` ([`CloudServer::add_project`],
//! [`CloudServer::set_project_default_reviewers`]). Attachments and downloads answer 302
//! to a second origin ([`CloudServer::files`], see [`crate::files`]) that refuses the
//! credential. A credential can be limited to some OAuth scopes
//! ([`CloudServer::restrict_scopes`]): endpoints needing another answer 403 with
//! [`SCOPES_MESSAGE`] and `error.detail.{granted,required}`. Wikis: [`CloudServer::add_wiki`]
//! serves a bare repository at `<clone url>/wiki`. Requests can be counted per endpoint
//! kind ([`CloudServer::requests_by_endpoint`], [`CloudServer::count_requests`]).
//!
//! Credentials (each belongs to a *principal*, the account id used for rate limiting and
//! in the request log):
//!
//! | kind           | REST API                       | git over HTTPS                                 |
//! |----------------|--------------------------------|------------------------------------------------|
//! | API token      | `Basic email:token`            | `Basic x-bitbucket-api-token-auth:token`       |
//! | access token   | `Bearer token`                 | `Basic x-token-auth:token` (or `Bearer token`) |
//! | OAuth token    | `Bearer token` (until expiry)  | `Basic x-token-auth:token` (or `Bearer token`) |
//! | app password   | `Basic username:password`      | `Basic username:password`                      |
//!
//! Malformed requests get a 4xx answer, never a panic.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::cgi::{self, CgiRequest};
use crate::files::FileOrigin;
use crate::httputil::{self, Body};
use crate::lfs::{self, LfsStore};
use crate::metadata::{self, RepoMetadata, Spec};
use crate::tempdir::TempDir;

mod hooks;
mod import;
pub mod meta;
mod oauth;
mod write;
pub use hooks::NOT_OWNER_MESSAGE;
pub use meta::{MAX_ACTIVITY_PAGELEN, MAX_PR_PAGELEN, NO_ISSUE_TRACKER};

/// Cloud's message of a 403 for a credential without the scope an endpoint requires
/// (the body also has `error.detail.granted` and `error.detail.required`).
pub const SCOPES_MESSAGE: &str = "Your credentials lack one or more required privilege scopes.";

/// The exact body Bitbucket Cloud sends with a 429.
pub const RATE_LIMIT_BODY: &str = "Rate limit for this resource has been exceeded";
/// The `WWW-Authenticate` value of a 401.
pub const WWW_AUTHENTICATE_VALUE: &str = "Basic realm=\"Bitbucket.org HTTP\"";
/// Fixed `updated_on`/`created_on` of every repository.
pub const UPDATED_ON: &str = "2026-11-20T10:00:00.000000+00:00";

const MAX_FORM_BODY: usize = 64 * 1024;
/// The rate-limit window unless [`CloudServer::set_rate_limit_window`] changes it.
pub const DEFAULT_RATE_WINDOW: Duration = Duration::from_secs(60);

/// Repository metadata as exposed by the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoMeta {
    pub is_private: bool,
    /// `None` → `"mainbranch": null` (as for an empty repository).
    pub mainbranch: Option<String>,
    pub has_wiki: bool,
    /// `full_name` of the parent when the repository is a fork.
    pub parent: Option<String>,
    /// Bytes, as reported in `"size"`.
    pub size: u64,
}

impl Default for RepoMeta {
    fn default() -> Self {
        RepoMeta {
            is_private: true,
            mainbranch: Some("main".to_string()),
            has_wiki: false,
            parent: None,
            size: 0,
        }
    }
}

/// One request as seen by the server.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    pub method: String,
    /// Path plus query, e.g. `/2.0/repositories/ws?pagelen=100`.
    pub path: String,
    /// The authenticated principal (account id), if the credentials were valid.
    pub principal: Option<String>,
    pub status: u16,
    /// `true` for git smart-HTTP requests.
    pub is_git: bool,
    /// When the response (its head, for git) was ready.
    pub timestamp: Instant,
    /// When the request arrived (what the rate limiter counts).
    pub received: Instant,
    /// The principal of a revoked credential presented with this request (answered 401);
    /// `principal` is `None` then, as the credential is no longer valid.
    pub revoked_principal: Option<String>,
}

/// Per-principal load seen in a request log (see [`CloudServer::principal_load`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrincipalLoad {
    /// Requests authenticated as this principal (admitted or rejected, API and git alike).
    pub requests: usize,
    /// The most of those that arrived within any window of the given length.
    pub max_in_window: usize,
    /// How many of them were answered 429.
    pub rate_limited: usize,
}

/// Computes [`PrincipalLoad`] per principal from `log`, for windows of length `window`:
/// a request at `t` shares a window with every request that arrived in `(t - window, t]`.
/// Requests without a valid principal (401s) are not counted, as the limiter does not
/// count them either.
pub fn principal_load(log: &[LoggedRequest], window: Duration) -> BTreeMap<String, PrincipalLoad> {
    let mut times: BTreeMap<String, Vec<Instant>> = BTreeMap::new();
    let mut out: BTreeMap<String, PrincipalLoad> = BTreeMap::new();
    for r in log {
        let Some(p) = &r.principal else { continue };
        times.entry(p.clone()).or_default().push(r.received);
        let load = out.entry(p.clone()).or_default();
        load.requests += 1;
        if r.status == 429 {
            load.rate_limited += 1;
        }
    }
    for (p, mut ts) in times {
        ts.sort();
        let mut first = 0;
        let mut max = 0;
        for (last, t) in ts.iter().enumerate() {
            while t.duration_since(ts[first]) >= window {
                first += 1;
            }
            max = max.max(last - first + 1);
        }
        if let Some(load) = out.get_mut(&p) {
            load.max_in_window = max;
        }
    }
    out
}

struct Repo {
    path: PathBuf,
    meta: RepoMeta,
    uuid: String,
    metadata: RepoMetadata,
    /// The bare repository of its wiki, served at `<clone url>/wiki`.
    wiki: Option<PathBuf>,
    /// The key of its project.
    project: String,
    /// The status of its last issue import (`GET …/issues/import`).
    import_job: Option<Value>,
}

/// A project of a workspace (every workspace has `PROJ`, the project of its repositories).
struct ProjectMeta {
    name: String,
    default_reviewers: Vec<String>,
}

struct Workspace {
    uuid: String,
    repos: BTreeMap<String, Repo>,
    projects: BTreeMap<String, ProjectMeta>,
}

struct Consumer {
    principal: String,
    key: String,
    secret: String,
    expires_in: u64,
    /// The registered callback URL (authorization code grant).
    callback: Option<String>,
}

struct OAuthToken {
    principal: String,
    expires_at: Instant,
}

#[derive(Default)]
struct State {
    workspaces: BTreeMap<String, Workspace>,
    /// (principal, email, token)
    api_tokens: Vec<(String, String, String)>,
    /// (principal, workspace, token)
    access_tokens: Vec<(String, String, String)>,
    consumers: Vec<Consumer>,
    oauth_tokens: HashMap<String, OAuthToken>,
    /// refresh token → consumer key
    refresh_tokens: HashMap<String, String>,
    /// The authorization code grant's codes, the consent mode and grant counts.
    oauth: oauth::OAuthState,
    /// (principal, username, password)
    app_passwords: Vec<(String, String, String)>,
    grants: HashMap<String, BTreeSet<String>>,
    rate_limit: Option<u32>,
    /// `None`: 60 s.
    rate_window: Option<Duration>,
    windows: HashMap<String, VecDeque<Instant>>,
    /// Revoked credentials: (principal, secret).
    revoked: Vec<(String, String)>,
    fail_next_429: usize,
    fail_next_git_503: usize,
    log: Vec<LoggedRequest>,
    /// (principal or credential secret, granted scopes): credentials not listed have all.
    scopes: Vec<(String, Vec<String>)>,
    /// Principals or credential secrets that may read but not push (receive-pack → 403).
    read_only: Vec<String>,
    /// Workspace webhooks (see [`hooks`]).
    hooks: hooks::Hooks,
}

struct Shared {
    state: Mutex<State>,
    base_url: String,
    /// LFS objects and the download origin's grants.
    lfs: Arc<LfsStore>,
    /// Where attachments and downloads redirect to.
    files: Arc<FileOrigin>,
    /// Empty HOME for the CGI processes.
    cgi_home: PathBuf,
    /// Where repositories created through the API live.
    created_root: PathBuf,
}

impl State {
    fn rate_window(&self) -> Duration {
        self.rate_window.unwrap_or(DEFAULT_RATE_WINDOW)
    }

    /// The principal of a revoked credential carried by `cred`, if any.
    fn revoked_principal(&self, cred: &Cred) -> Option<String> {
        let secret = match cred {
            Cred::Basic(_, s) | Cred::Bearer(s) => s,
            Cred::None | Cred::Malformed => return None,
        };
        self.revoked
            .iter()
            .find(|(_, s)| s == secret)
            .map(|(p, _)| p.clone())
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The Bitbucket Cloud test double. Starts on `127.0.0.1:<random port>`; stops on drop.
pub struct CloudServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: Option<oneshot::Sender<()>>,
    lfs_shutdown: Option<oneshot::Sender<()>>,
    files_shutdown: Option<oneshot::Sender<()>>,
    _home: TempDir,
    _lfs_dir: TempDir,
    _created: TempDir,
}

impl CloudServer {
    /// Binds `127.0.0.1:0` and serves on a private tokio runtime (2 worker threads).
    pub fn start() -> CloudServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("set_nonblocking");
        let addr = listener.local_addr().expect("local_addr");
        let home = TempDir::new("reposafe-testkit-cgi-home");
        // LFS objects are served from a second origin, like Bitbucket's storage host.
        let downloads = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 (LFS)");
        downloads.set_nonblocking(true).expect("set_nonblocking");
        let downloads_addr = downloads.local_addr().expect("local_addr");
        let lfs_dir = TempDir::new("reposafe-testkit-lfs");
        let created = TempDir::new("reposafe-testkit-created");
        let lfs = Arc::new(LfsStore::new(
            lfs_dir.path(),
            format!("http://{downloads_addr}"),
        ));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("testkit-cloud")
            .enable_all()
            .build()
            .expect("tokio runtime");
        let (files_tx, files_rx) = oneshot::channel();
        let files = FileOrigin::start(&runtime, files_rx);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            base_url: format!("http://{addr}"),
            lfs: lfs.clone(),
            files,
            cgi_home: home.path().to_path_buf(),
            created_root: created.path().to_path_buf(),
        });
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
            serve(listener, sh, rx).await;
        });
        let (lfs_tx, lfs_rx) = oneshot::channel();
        runtime.spawn(async move {
            match tokio::net::TcpListener::from_std(downloads) {
                Ok(l) => lfs::serve_downloads(l, lfs, lfs_rx).await,
                Err(e) => eprintln!("[testkit] cannot adopt the LFS listener: {e}"),
            }
        });
        CloudServer {
            shared,
            addr,
            runtime: Some(runtime),
            shutdown: Some(tx),
            lfs_shutdown: Some(lfs_tx),
            files_shutdown: Some(files_tx),
            _home: home,
            _lfs_dir: lfs_dir,
            _created: created,
        }
    }

    /// The repositories' Git LFS objects: add them, and see what was downloaded. The batch
    /// API is `<clone url>/info/lfs/objects/batch`; objects come from a second origin.
    pub fn lfs(&self) -> &LfsStore {
        &self.shared.lfs
    }

    /// `http://127.0.0.1:PORT` — both the API base and the git base.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The plain clone URL `http://127.0.0.1:PORT/{workspace}/{slug}.git` (no userinfo).
    pub fn git_url(&self, workspace: &str, slug: &str) -> String {
        format!("{}/{workspace}/{slug}.git", self.shared.base_url)
    }

    /// Creates a workspace (no-op if it exists).
    pub fn add_workspace(&self, slug: &str) {
        let mut st = self.shared.lock();
        st.workspaces
            .entry(slug.to_string())
            .or_insert_with(|| Workspace {
                uuid: uuid_for("workspace", slug),
                repos: BTreeMap::new(),
                projects: BTreeMap::from([(
                    "PROJ".to_string(),
                    ProjectMeta {
                        name: "Project".to_string(),
                        default_reviewers: Vec::new(),
                    },
                )]),
            });
    }

    /// Registers (or replaces) `workspace/slug`, served from the bare repository at
    /// `bare_repo`. The workspace is created if needed. Replacing keeps the repository's
    /// metadata and wiki.
    pub fn add_repo(&self, workspace: &str, slug: &str, bare_repo: &Path, meta: RepoMeta) {
        self.add_workspace(workspace);
        let path = std::fs::canonicalize(bare_repo).unwrap_or_else(|_| bare_repo.to_path_buf());
        let mut st = self.shared.lock();
        if let Some(ws) = st.workspaces.get_mut(workspace) {
            let old = ws.repos.remove(slug);
            let (metadata, wiki) = old.map(|r| (r.metadata, r.wiki)).unwrap_or_default();
            ws.repos.insert(
                slug.to_string(),
                Repo {
                    path,
                    meta,
                    uuid: uuid_for("repository", &format!("{workspace}/{slug}")),
                    metadata,
                    wiki,
                    project: "PROJ".to_string(),
                    import_job: None,
                },
            );
        }
    }

    /// Reads or changes the metadata of `workspace/slug` (pull requests, issues,
    /// settings, ...; see [`crate::metadata`]) under the server's lock.
    ///
    /// Panics if the repository was not added with [`add_repo`](Self::add_repo).
    pub fn metadata<R>(
        &self,
        workspace: &str,
        slug: &str,
        f: impl FnOnce(&mut RepoMetadata) -> R,
    ) -> R {
        self.with_repo(workspace, slug, |r| f(&mut r.metadata))
    }

    fn with_repo<R>(&self, workspace: &str, slug: &str, f: impl FnOnce(&mut Repo) -> R) -> R {
        let mut st = self.shared.lock();
        let repo = st
            .workspaces
            .get_mut(workspace)
            .and_then(|w| w.repos.get_mut(slug))
            .unwrap_or_else(|| panic!("no repository {workspace}/{slug}: add_repo first"));
        f(repo)
    }

    /// Fills the metadata of `workspace/slug` with [`metadata::populate`].
    pub fn populate(&self, workspace: &str, slug: &str, spec: &Spec) {
        self.metadata(workspace, slug, |m| metadata::populate(m, spec));
    }

    /// Serves the bare repository `bare_repo` as the wiki of `workspace/slug`, at
    /// `<clone url>/wiki` (`/{workspace}/{slug}.git/wiki`, as `https://bitbucket.org/{workspace}/{slug}.git/wiki`
    /// on Cloud) with the repository's authentication; the repository object then says
    /// `"has_wiki": true`. Restricted credentials also need the `wiki` scope.
    pub fn add_wiki(&self, workspace: &str, slug: &str, bare_repo: &Path) {
        let path = std::fs::canonicalize(bare_repo).unwrap_or_else(|_| bare_repo.to_path_buf());
        self.with_repo(workspace, slug, |r| r.wiki = Some(path));
    }

    /// The bare repository `workspace/slug` is served from (also one created through the
    /// API), e.g. to push to it directly in a test.
    ///
    /// Panics if there is no such repository.
    pub fn repo_path(&self, workspace: &str, slug: &str) -> PathBuf {
        self.with_repo(workspace, slug, |r| r.path.clone())
    }

    /// The bare repository of `workspace/slug`'s wiki, if it has one.
    pub fn wiki_path(&self, workspace: &str, slug: &str) -> Option<PathBuf> {
        self.with_repo(workspace, slug, |r| r.wiki.clone())
    }

    /// Whether `workspace/slug` exists (added, or created through the API).
    pub fn has_repo(&self, workspace: &str, slug: &str) -> bool {
        let st = self.shared.lock();
        st.workspaces
            .get(workspace)
            .is_some_and(|w| w.repos.contains_key(slug))
    }

    /// The wiki's clone URL `http://127.0.0.1:PORT/{workspace}/{slug}.git/wiki`.
    pub fn wiki_url(&self, workspace: &str, slug: &str) -> String {
        format!("{}/wiki", self.git_url(workspace, slug))
    }

    /// Adds (or renames) project `key` of `workspace` (`PROJ` always exists).
    pub fn add_project(&self, workspace: &str, key: &str, name: &str) {
        self.with_project(workspace, key, |p| p.name = name.to_string());
    }

    /// Sets the default reviewers of project `key` (creating it if needed).
    pub fn set_project_default_reviewers(&self, workspace: &str, key: &str, users: &[&str]) {
        let users = users.iter().map(|u| u.to_string()).collect();
        self.with_project(workspace, key, |p| p.default_reviewers = users);
    }

    /// Runs `f` on project `key` of `workspace`, creating both if needed.
    fn with_project(&self, workspace: &str, key: &str, f: impl FnOnce(&mut ProjectMeta)) {
        self.add_workspace(workspace);
        let mut st = self.shared.lock();
        if let Some(w) = st.workspaces.get_mut(workspace) {
            f(w.projects.entry(key.to_string()).or_insert(ProjectMeta {
                name: key.to_string(),
                default_reviewers: Vec::new(),
            }));
        }
    }

    /// Restricts a credential to `scopes` (Cloud's OAuth scope names: `repository`,
    /// `pullrequest`, `issue`, `wiki`, `webhook`, `pipeline`, `pipeline:variable`,
    /// `project`, `repository:admin`, ...). `who` is a principal (all its credentials) or
    /// one credential's secret (token, app password, OAuth access token). An endpoint
    /// whose scope is missing answers 403 with Cloud's body
    /// `{"type": "error", "error": {"message": "Your credentials lack one or more required privilege scopes.", "detail": {"granted": [...], "required": [...]}}}`.
    /// Unrestricted credentials have every scope.
    pub fn restrict_scopes(&self, who: &str, scopes: &[&str]) {
        let mut st = self.shared.lock();
        st.scopes.retain(|(k, _)| k != who);
        st.scopes.push((
            who.to_string(),
            scopes.iter().map(|s| s.to_string()).collect(),
        ));
    }

    /// Makes a credential read-only for git: `who` is a principal (all its credentials) or one
    /// credential's secret. Its `git-receive-pack` requests (advertisement and push) get 403,
    /// as on Bitbucket for a credential without write access; fetching still works.
    pub fn set_read_only(&self, who: &str) {
        self.shared.lock().read_only.push(who.to_string());
    }

    /// The origin attachments and downloads redirect to (downloads counted by name).
    pub fn files(&self) -> &FileOrigin {
        &self.shared.files
    }

    /// How many logged requests (API and git) have a path (with query) for which `pred`
    /// holds, e.g. `s.count_requests(|p| p.contains("/pullrequests"))`.
    pub fn count_requests(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.shared
            .lock()
            .log
            .iter()
            .filter(|r| pred(&r.path))
            .count()
    }

    /// The logged API requests counted by endpoint kind: the path without its query, with
    /// the workspace and repository replaced by `{ws}` and `{slug}` and ids by `{id}`,
    /// e.g. `/2.0/repositories/{ws}/{slug}/pullrequests/{id}/comments`.
    pub fn requests_by_endpoint(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for r in self.shared.lock().log.iter().filter(|r| !r.is_git) {
            *out.entry(httputil::endpoint_kind(&r.path)).or_default() += 1;
        }
        out
    }

    /// Unregisters `workspace/slug` (the bare repository is left on disk).
    pub fn remove_repo(&self, workspace: &str, slug: &str) {
        let mut st = self.shared.lock();
        if let Some(ws) = st.workspaces.get_mut(workspace) {
            ws.repos.remove(slug);
        }
    }

    /// API token: API `Basic email:token`; git `Basic x-bitbucket-api-token-auth:token`.
    pub fn add_api_token(&self, principal: &str, email: &str, token: &str) {
        self.shared
            .lock()
            .api_tokens
            .push((principal.into(), email.into(), token.into()));
    }

    /// Workspace access token: API `Bearer token`; git `Basic x-token-auth:token`. Sees only
    /// `workspace`; `/2.0/user` and `/2.0/user/workspaces` answer 403.
    pub fn add_access_token(&self, principal: &str, workspace: &str, token: &str) {
        self.shared
            .lock()
            .access_tokens
            .push((principal.into(), workspace.into(), token.into()));
    }

    /// OAuth consumer for the client-credentials grant; issued tokens live
    /// `expires_in_secs` seconds.
    pub fn add_oauth_consumer(
        &self,
        principal: &str,
        key: &str,
        secret: &str,
        expires_in_secs: u64,
    ) {
        self.push_consumer(principal, key, secret, None, expires_in_secs);
    }

    fn push_consumer(
        &self,
        principal: &str,
        key: &str,
        secret: &str,
        callback: Option<&str>,
        expires_in: u64,
    ) {
        self.shared.lock().consumers.push(Consumer {
            principal: principal.into(),
            key: key.into(),
            secret: secret.into(),
            expires_in,
            callback: callback.map(str::to_string),
        });
    }

    /// OAuth consumer for the authorization code grant (and the others), whose
    /// registered callback URL is `callback`: `GET /site/oauth2/authorize` consents at
    /// once (as the signed-in `principal`) and redirects there with a code, unless
    /// [`set_oauth_consent`](Self::set_oauth_consent) says the user denies.
    pub fn add_oauth_consumer_with_callback(
        &self,
        principal: &str,
        key: &str,
        secret: &str,
        callback: &str,
        expires_in_secs: u64,
    ) {
        self.push_consumer(principal, key, secret, Some(callback), expires_in_secs);
    }

    /// Whether the user grants access on the consent page (`false`: the authorize
    /// endpoint redirects with `error=access_denied`).
    pub fn set_oauth_consent(&self, grant: bool) {
        self.shared.lock().oauth.deny = !grant;
    }

    /// When on, a refresh token works once: each refresh answers a new one.
    pub fn rotate_refresh_tokens(&self, on: bool) {
        self.shared.lock().oauth.rotate_refresh = on;
    }

    /// Token endpoint grants issued so far, by `grant_type`.
    pub fn oauth_grants(&self) -> BTreeMap<String, usize> {
        self.shared.lock().oauth.grants.clone()
    }

    /// Ends every OAuth access token now (as if their `expires_in` had passed): they
    /// get 401 from then on.
    pub fn expire_oauth_access_tokens(&self) {
        self.shared.lock().oauth_tokens.clear();
    }

    /// Every OAuth access and refresh token issued so far (to check none leaked).
    pub fn oauth_tokens_issued(&self) -> Vec<String> {
        let st = self.shared.lock();
        st.oauth.issued.clone()
    }

    /// App password: `Basic username:password` for API and git.
    pub fn add_app_password(&self, principal: &str, username: &str, password: &str) {
        self.shared
            .lock()
            .app_passwords
            .push((principal.into(), username.into(), password.into()));
    }

    /// Lets `principal` see `workspace`.
    pub fn grant(&self, principal: &str, workspace: &str) {
        self.shared
            .lock()
            .grants
            .entry(principal.to_string())
            .or_default()
            .insert(workspace.to_string());
    }

    /// Per-principal limit over a sliding window (60 s unless
    /// [`set_rate_limit_window`](Self::set_rate_limit_window) changed it), counting API,
    /// OAuth-token and git requests alike; `None` disables it. Only admitted requests count;
    /// requests without valid credentials (401) are not counted. Resets the windows.
    pub fn set_rate_limit(&self, per_principal_per_minute: Option<u32>) {
        let mut st = self.shared.lock();
        st.rate_limit = per_principal_per_minute;
        st.windows.clear();
    }

    /// Length of the rate limiter's sliding window (default 60 s). Resets the windows.
    pub fn set_rate_limit_window(&self, window: Duration) {
        let mut st = self.shared.lock();
        st.rate_window = Some(window);
        st.windows.clear();
    }

    /// The rate limiter's window length.
    pub fn rate_limit_window(&self) -> Duration {
        self.shared.lock().rate_window()
    }

    /// [`principal_load`] of the request log over the rate limiter's window length.
    pub fn principal_load(&self) -> BTreeMap<String, PrincipalLoad> {
        let st = self.shared.lock();
        principal_load(&st.log, st.rate_window())
    }

    /// Revokes every API token, access token, OAuth access token and app password whose
    /// secret is `secret`: from now on it gets `401` (logged with `revoked_principal`).
    /// Returns how many credentials were revoked.
    pub fn revoke_token(&self, secret: &str) -> usize {
        let mut st = self.shared.lock();
        let mut revoked = Vec::new();
        st.api_tokens.retain(|(p, _, t)| {
            let hit = t == secret;
            if hit {
                revoked.push(p.clone());
            }
            !hit
        });
        st.access_tokens.retain(|(p, _, t)| {
            let hit = t == secret;
            if hit {
                revoked.push(p.clone());
            }
            !hit
        });
        st.app_passwords.retain(|(p, _, pw)| {
            let hit = pw == secret;
            if hit {
                revoked.push(p.clone());
            }
            !hit
        });
        if let Some(t) = st.oauth_tokens.remove(secret) {
            revoked.push(t.principal);
        }
        let n = revoked.len();
        for p in revoked {
            st.revoked.push((p, secret.to_string()));
        }
        n
    }

    /// The next `n` REST API requests (not git, not the OAuth endpoint) answer 429.
    /// The next `n` git requests (after authentication) answer 503, as a
    /// briefly overloaded server does.
    pub fn fail_next_git_with_503(&self, n: usize) {
        self.shared.lock().fail_next_git_503 = n;
    }

    pub fn fail_next_with_429(&self, n: usize) {
        self.shared.lock().fail_next_429 = n;
    }

    /// Every request so far (since the last [`clear_log`](Self::clear_log)).
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.shared.lock().log.clone()
    }

    pub fn clear_log(&self) {
        self.shared.lock().log.clear();
    }
}

impl Drop for CloudServer {
    fn drop(&mut self) {
        for tx in [
            self.shutdown.take(),
            self.lfs_shutdown.take(),
            self.files_shutdown.take(),
        ]
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
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let sh = sh.clone();
                async move { Ok::<_, Infallible>(handle(sh, peer, req).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(io, svc)
                .await;
        });
    }
}

/// Result of routing: the response plus what goes into the log.
struct Outcome {
    resp: Response<Body>,
    principal: Option<String>,
    is_git: bool,
}

impl Outcome {
    fn api(resp: Response<Body>, principal: Option<String>) -> Outcome {
        Outcome {
            resp,
            principal,
            is_git: false,
        }
    }
}

async fn handle(shared: Arc<Shared>, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let received = Instant::now();
    let cred = parse_auth(req.headers());
    let out = route(&shared, peer, req).await;
    let status = out.resp.status().as_u16();
    let mut st = shared.lock();
    let revoked_principal = if status == 401 && out.principal.is_none() {
        st.revoked_principal(&cred)
    } else {
        None
    };
    st.log.push(LoggedRequest {
        method,
        path,
        principal: out.principal,
        status,
        is_git: out.is_git,
        timestamp: Instant::now(),
        received,
        revoked_principal,
    });
    drop(st);
    out.resp
}

async fn route(shared: &Arc<Shared>, peer: SocketAddr, req: Request<Incoming>) -> Outcome {
    let raw_path = req.uri().path().to_string();
    let mut segs = Vec::new();
    for s in raw_path.trim_start_matches('/').split('/') {
        match httputil::percent_decode(s) {
            Some(d) => segs.push(d),
            None => {
                return Outcome::api(error(StatusCode::BAD_REQUEST, "Malformed URL path"), None)
            }
        }
    }
    let query = req.uri().query().unwrap_or("").to_string();
    let Some(params) = httputil::parse_form(&query) else {
        return Outcome::api(
            error(StatusCode::BAD_REQUEST, "Malformed query string"),
            None,
        );
    };
    match segs.first().map(String::as_str) {
        Some("2.0") => {
            while segs.len() > 1 && segs.last().is_some_and(|s| s.is_empty()) {
                segs.pop();
            }
            let (head, body) = req.into_parts();
            let body = if head.method == Method::GET || head.method == Method::HEAD {
                bytes::Bytes::new()
            } else {
                match http_body_util::Limited::new(body, write::MAX_WRITE_BODY)
                    .collect()
                    .await
                {
                    Ok(b) => b.to_bytes(),
                    Err(_) => {
                        return Outcome::api(
                            error(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large"),
                            None,
                        )
                    }
                }
            };
            let call = ApiCall {
                method: &head.method,
                headers: &head.headers,
                path: &segs[1..],
                params: &params,
                body: &body,
            };
            api(shared, &call)
        }
        Some("site") if segs.len() == 3 && segs[1] == "oauth2" && segs[2] == "access_token" => {
            oauth::token(shared, req).await
        }
        Some("site") if segs.len() == 3 && segs[1] == "oauth2" && segs[2] == "authorize" => {
            oauth::authorize(shared, &req, &params)
        }
        Some(ws) if !ws.is_empty() && ws != "site" && is_git_path(&segs) => {
            let ws = ws.to_string();
            git(shared, peer, req, ws, segs[1..].to_vec(), query).await
        }
        _ => Outcome::api(
            error(
                StatusCode::NOT_FOUND,
                &format!("Resource not found: {raw_path}"),
            ),
            None,
        ),
    }
}

/// `/{workspace}/{slug}.git/...` or `/{workspace}/{slug}/{info|git-upload-pack|...}`.
fn is_git_path(segs: &[String]) -> bool {
    segs.len() >= 3
        && (segs[1].ends_with(".git")
            || matches!(
                segs[2].as_str(),
                "info" | "git-upload-pack" | "git-receive-pack" | "HEAD" | "objects"
            ))
}

// ---------------------------------------------------------------- responses

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(httputil::full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(
        status,
        &json!({"type": "error", "error": {"message": message}}),
    )
}

fn unauthorized() -> Response<Body> {
    let mut r = error(StatusCode::UNAUTHORIZED, "Invalid or missing credentials");
    r.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static(WWW_AUTHENTICATE_VALUE),
    );
    r
}

fn git_unauthorized() -> Response<Body> {
    let mut r = Response::new(httputil::full("Unauthorized\n"));
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    r.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static(WWW_AUTHENTICATE_VALUE),
    );
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(httputil::full(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

fn too_many() -> Response<Body> {
    text(StatusCode::TOO_MANY_REQUESTS, RATE_LIMIT_BODY)
}

// ---------------------------------------------------------------- auth

#[derive(Debug, Clone, PartialEq)]
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
    let v = v.trim();
    let Some((scheme, rest)) = v.split_once(' ') else {
        return Cred::Malformed;
    };
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(rest) else {
            return Cred::Malformed;
        };
        let Ok(s) = String::from_utf8(bytes) else {
            return Cred::Malformed;
        };
        match s.split_once(':') {
            Some((u, p)) => Cred::Basic(u.to_string(), p.to_string()),
            None => Cred::Malformed,
        }
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Cred::Bearer(rest.to_string())
    } else {
        Cred::Malformed
    }
}

#[derive(Debug, Clone)]
enum Kind {
    ApiToken,
    AccessToken(String),
    OAuth,
    AppPassword(String),
}

#[derive(Debug, Clone)]
struct Identity {
    principal: String,
    kind: Kind,
}

impl Identity {
    fn can_see(&self, st: &State, ws: &str) -> bool {
        match &self.kind {
            Kind::AccessToken(own) => own == ws,
            _ => st
                .grants
                .get(&self.principal)
                .is_some_and(|g| g.contains(ws)),
        }
    }

    /// The user shown in the https clone link's userinfo.
    fn link_user(&self) -> String {
        match &self.kind {
            Kind::AppPassword(u) => u.clone(),
            Kind::AccessToken(_) => "x-token-auth".to_string(),
            _ => self.principal.clone(),
        }
    }
}

fn bearer_identity(st: &State, token: &str) -> Option<Identity> {
    if let Some((p, ws, _)) = st.access_tokens.iter().find(|(_, _, t)| t == token) {
        return Some(Identity {
            principal: p.clone(),
            kind: Kind::AccessToken(ws.clone()),
        });
    }
    match st.oauth_tokens.get(token) {
        Some(t) if Instant::now() < t.expires_at => Some(Identity {
            principal: t.principal.clone(),
            kind: Kind::OAuth,
        }),
        _ => None,
    }
}

fn app_password_identity(st: &State, user: &str, pass: &str) -> Option<Identity> {
    st.app_passwords
        .iter()
        .find(|(_, u, p)| u == user && p == pass)
        .map(|(pr, u, _)| Identity {
            principal: pr.clone(),
            kind: Kind::AppPassword(u.clone()),
        })
}

fn api_identity(st: &State, cred: &Cred) -> Option<Identity> {
    match cred {
        Cred::Basic(user, pass) => {
            if let Some((p, _, _)) = st
                .api_tokens
                .iter()
                .find(|(_, e, t)| e == user && t == pass)
            {
                return Some(Identity {
                    principal: p.clone(),
                    kind: Kind::ApiToken,
                });
            }
            app_password_identity(st, user, pass)
        }
        Cred::Bearer(t) => bearer_identity(st, t),
        Cred::None | Cred::Malformed => None,
    }
}

fn git_identity(st: &State, cred: &Cred) -> Option<Identity> {
    match cred {
        Cred::Basic(user, pass) if user == "x-bitbucket-api-token-auth" => st
            .api_tokens
            .iter()
            .find(|(_, _, t)| t == pass)
            .map(|(p, _, _)| Identity {
                principal: p.clone(),
                kind: Kind::ApiToken,
            }),
        Cred::Basic(user, pass) if user == "x-token-auth" => bearer_identity(st, pass),
        Cred::Basic(user, pass) => app_password_identity(st, user, pass),
        Cred::Bearer(t) => bearer_identity(st, t),
        Cred::None | Cred::Malformed => None,
    }
}

/// Whether `principal` (or the secret of `cred`) was made read-only.
fn read_only(list: &[String], principal: &str, cred: &Cred) -> bool {
    let secret = match cred {
        Cred::Basic(_, s) | Cred::Bearer(s) => Some(s.as_str()),
        Cred::None | Cred::Malformed => None,
    };
    list.iter()
        .any(|who| who == principal || Some(who.as_str()) == secret)
}

/// Sliding-window check; records the request when admitted.
fn admit(st: &mut State, principal: &str) -> bool {
    let Some(limit) = st.rate_limit else {
        return true;
    };
    let now = Instant::now();
    let length = st.rate_window();
    let window = st.windows.entry(principal.to_string()).or_default();
    while window
        .front()
        .is_some_and(|t| now.duration_since(*t) >= length)
    {
        window.pop_front();
    }
    if window.len() >= limit as usize {
        return false;
    }
    window.push_back(now);
    true
}

// ---------------------------------------------------------------- REST API

/// One REST API request.
struct ApiCall<'a> {
    method: &'a Method,
    headers: &'a HeaderMap,
    path: &'a [String],
    params: &'a [(String, String)],
    body: &'a [u8],
}

fn api(shared: &Shared, call: &ApiCall) -> Outcome {
    let (method, path, params) = (call.method, call.path, call.params);
    let cred = parse_auth(call.headers);
    let mut st = shared.lock();
    let ident = api_identity(&st, &cred);
    let principal = ident.as_ref().map(|i| i.principal.clone());
    if st.fail_next_429 > 0 {
        st.fail_next_429 -= 1;
        return Outcome::api(too_many(), principal);
    }
    let Some(ident) = ident else {
        return Outcome::api(unauthorized(), None);
    };
    if !admit(&mut st, &ident.principal) {
        return Outcome::api(too_many(), principal);
    }
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    if let ["workspaces", ws, "hooks", rest @ ..] = p.as_slice() {
        let resp = hooks::api(&shared.base_url, &mut st, (&ident, &cred), call, (ws, rest));
        return Outcome::api(resp, principal);
    }
    if let ["repositories", ws, slug, rest @ ..] = p.as_slice() {
        if write::handles(method, rest) {
            let resp = write_api(shared, &mut st, (&ident, &cred), call, (ws, slug, rest));
            return Outcome::api(resp, principal);
        }
    }
    if let Some(resp) = metadata_api(shared, &st, &ident, &cred, method, &p, params) {
        return Outcome::api(resp, principal);
    }
    let known = matches!(
        p.as_slice(),
        ["user"]
            | ["user", "workspaces"]
            | ["workspaces"]
            | ["user", "permissions", "workspaces"]
            | ["repositories"]
            | ["workspaces", _]
            | ["repositories", _]
            | ["repositories", _, _]
    );
    if matches!(p.as_slice(), ["repositories", _] | ["repositories", _, _]) {
        if let Some(denied) = scope_denied(&st, &ident, &cred, "repository") {
            return Outcome::api(denied, principal);
        }
    }
    if known && method != Method::GET {
        return Outcome::api(
            error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
            principal,
        );
    }
    let base = &shared.base_url;
    let resp = match p.as_slice() {
        _ if !known => error(StatusCode::NOT_FOUND, &format!("Resource not found: /2.0/{}", p.join("/"))),
        ["user"] => match ident.kind {
            Kind::AccessToken(_) => error(
                StatusCode::FORBIDDEN,
                "Access tokens are not associated with a user account",
            ),
            _ => json_response(StatusCode::OK, &user_json(&ident.principal)),
        },
        ["user", "workspaces"] => match ident.kind {
            Kind::AccessToken(_) => error(
                StatusCode::FORBIDDEN,
                "Your credentials lack one or more required privilege scopes.",
            ),
            _ => {
                let items: Vec<Value> = st
                    .workspaces
                    .iter()
                    .filter(|(slug, _)| ident.can_see(&st, slug))
                    .map(|(slug, ws)| {
                        json!({
                            "type": "workspace_access",
                            "permission": "member",
                            "administrator": false,
                            "workspace": workspace_json(base, slug, ws),
                            "links": {"self": {"href": format!("{base}/2.0/user/workspaces/{slug}")}},
                        })
                    })
                    .collect();
                paginate(items, base, "/2.0/user/workspaces", params)
            }
        },
        ["workspaces"] | ["user", "permissions", "workspaces"] | ["repositories"] => error(
            StatusCode::GONE,
            "This API is no longer supported. For information about its removal, please refer to the deprecation notice at: https://developer.atlassian.com/cloud/bitbucket/changelog/#CHANGE-2770",
        ),
        ["workspaces", ws] => match st.workspaces.get(*ws) {
            None => error(StatusCode::NOT_FOUND, &format!("No workspace with identifier '{ws}'.")),
            Some(_) if !ident.can_see(&st, ws) => {
                error(StatusCode::FORBIDDEN, "You do not have access to this workspace.")
            }
            Some(w) => json_response(StatusCode::OK, &workspace_json(base, ws, w)),
        },
        ["repositories", ws] => match st.workspaces.get(*ws) {
            None => error(StatusCode::NOT_FOUND, &format!("No workspace with identifier '{ws}'.")),
            Some(_) if !ident.can_see(&st, ws) => {
                error(StatusCode::FORBIDDEN, "You do not have access to this workspace.")
            }
            Some(w) => {
                let user = ident.link_user();
                let items = w.repos.iter().map(|(slug, r)| repo_json(base, &user, ws, w, slug, r)).collect();
                paginate(items, base, &format!("/2.0/repositories/{}", httputil::percent_encode(ws)), params)
            }
        },
        ["repositories", ws, slug] => match st.workspaces.get(*ws) {
            None => error(StatusCode::NOT_FOUND, &format!("No workspace with identifier '{ws}'.")),
            Some(_) if !ident.can_see(&st, ws) => {
                error(StatusCode::FORBIDDEN, "You do not have access to this repository.")
            }
            Some(w) => match w.repos.get(*slug) {
                None => error(StatusCode::NOT_FOUND, &format!("Repository {ws}/{slug} not found")),
                Some(r) => json_response(StatusCode::OK, &repo_json(base, &ident.link_user(), ws, w, slug, r)),
            },
        },
        _ => error(StatusCode::NOT_FOUND, "Resource not found"),
    };
    Outcome::api(resp, principal)
}

fn paginate(
    items: Vec<Value>,
    base: &str,
    path: &str,
    params: &[(String, String)],
) -> Response<Body> {
    paginate_max(items, base, path, params, 100, false)
}

/// The scopes `cred` (of `ident`) was restricted to, if it was.
fn restricted_scopes<'a>(st: &'a State, ident: &Identity, cred: &Cred) -> Option<&'a [String]> {
    let secret = match cred {
        Cred::Basic(_, s) | Cred::Bearer(s) => Some(s.as_str()),
        Cred::None | Cred::Malformed => None,
    };
    st.scopes
        .iter()
        .find(|(k, _)| Some(k.as_str()) == secret)
        .or_else(|| st.scopes.iter().find(|(k, _)| *k == ident.principal))
        .map(|(_, g)| g.as_slice())
}

/// 403 with Cloud's scopes body when the credential lacks `required`.
fn scope_denied(
    st: &State,
    ident: &Identity,
    cred: &Cred,
    required: &str,
) -> Option<Response<Body>> {
    let granted = restricted_scopes(st, ident, cred)?;
    if meta::scope_ok(granted, required) {
        return None;
    }
    Some(json_response(
        StatusCode::FORBIDDEN,
        &json!({"type": "error", "error": {"message": SCOPES_MESSAGE,
            "detail": {"granted": granted, "required": [required]}}}),
    ))
}

/// A write endpoint (see [`write`]): access and scope checked here.
fn write_api(
    shared: &Shared,
    st: &mut State,
    (ident, cred): (&Identity, &Cred),
    call: &ApiCall,
    (ws, slug, rest): (&str, &str, &[&str]),
) -> Response<Body> {
    if !st.workspaces.contains_key(ws) {
        return error(
            StatusCode::NOT_FOUND,
            &format!("No workspace with identifier '{ws}'."),
        );
    }
    if !ident.can_see(st, ws) {
        return error(
            StatusCode::FORBIDDEN,
            "You do not have access to this repository.",
        );
    }
    if let Some(denied) = scope_denied(st, ident, cred, write::required_scope(call.method, rest)) {
        return denied;
    }
    let users = write::known_users(st, ws);
    let content_type = call
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let user = ident.link_user();
    let req = write::WriteRequest {
        base: &shared.base_url,
        method: call.method,
        rest,
        ws,
        slug,
        content_type,
        body: call.body,
        user: &user,
        principal: &ident.principal,
        created_root: &shared.created_root,
        users: &users,
    };
    write::answer(st, &req, ws)
}

/// The repository metadata and workspace project endpoints; `None` for other paths.
fn metadata_api(
    shared: &Shared,
    st: &State,
    ident: &Identity,
    cred: &Cred,
    method: &Method,
    p: &[&str],
    params: &[(String, String)],
) -> Option<Response<Body>> {
    let (ws, required, rest) = match p {
        ["repositories", ws, _, rest @ ..] if !rest.is_empty() => {
            (*ws, meta::required_scope(rest), rest)
        }
        ["workspaces", ws, "projects", ..] => (*ws, "project", &p[2..]),
        _ => return None,
    };
    if method != Method::GET {
        return Some(error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"));
    }
    let Some(w) = st.workspaces.get(ws) else {
        return Some(error(
            StatusCode::NOT_FOUND,
            &format!("No workspace with identifier '{ws}'."),
        ));
    };
    if !ident.can_see(st, ws) {
        return Some(error(
            StatusCode::FORBIDDEN,
            "You do not have access to this repository.",
        ));
    }
    if let Some(denied) = scope_denied(st, ident, cred, required) {
        return Some(denied);
    }
    let base = &shared.base_url;
    if p[0] == "workspaces" {
        return Some(projects_api(base, ws, w, rest, params));
    }
    let slug = p[2];
    let Some(r) = w.repos.get(slug) else {
        return Some(error(
            StatusCode::NOT_FOUND,
            &format!("Repository {ws}/{slug} not found"),
        ));
    };
    let ctx = meta::RepoCtx {
        base,
        ws,
        slug,
        repo_uuid: &r.uuid,
        files: &shared.files,
    };
    Some(meta::repo_endpoint(&ctx, &r.metadata, rest, params))
}

/// `/2.0/workspaces/{ws}/projects[/{key}[/default-reviewers]]`.
fn projects_api(
    base: &str,
    ws: &str,
    w: &Workspace,
    rest: &[&str],
    params: &[(String, String)],
) -> Response<Body> {
    let project = |key: &str, pm: &ProjectMeta| {
        let href = format!("{base}/2.0/workspaces/{ws}/projects/{key}");
        json!({
            "type": "project", "key": key, "uuid": uuid_for("project", &format!("{ws}/{key}")),
            "name": pm.name, "description": "", "is_private": true,
            "created_on": UPDATED_ON, "updated_on": UPDATED_ON,
            "has_publicly_visible_repos": false,
            "owner": {"type": "team", "username": ws, "display_name": ws, "uuid": w.uuid},
            "links": {"self": {"href": href}, "html": {"href": format!("{base}/{ws}/workspace/projects/{key}")},
                      "repositories": {"href": format!("{base}/2.0/repositories/{ws}?q=project.key=\"{key}\"")}},
        })
    };
    let path = format!(
        "/2.0/workspaces/{}/{}",
        httputil::percent_encode(ws),
        rest.join("/")
    );
    match rest {
        ["projects"] => {
            let items = w.projects.iter().map(|(k, pm)| project(k, pm)).collect();
            paginate(items, base, &path, params)
        }
        ["projects", key, tail @ ..] => match (w.projects.get(*key), tail) {
            (None, _) => error(StatusCode::NOT_FOUND, &format!("Project {key} not found")),
            (Some(pm), []) => json_response(StatusCode::OK, &project(key, pm)),
            (Some(pm), ["default-reviewers"]) => {
                let items = pm
                    .default_reviewers
                    .iter()
                    .map(|u| {
                        json!({
                            "type": "default_reviewer_and_type", "reviewer_type": "project",
                            "user": meta::user_json(base, u),
                        })
                    })
                    .collect();
                paginate(items, base, &path, params)
            }
            _ => error(StatusCode::NOT_FOUND, "Resource not found"),
        },
        _ => error(StatusCode::NOT_FOUND, "Resource not found"),
    }
}

/// Cloud's paging: `pagelen` default 10, at most `max` (more is clamped, or a 400 when
/// `strict`), 1-based `page`, absolute `next`/`previous` links.
fn paginate_max(
    items: Vec<Value>,
    base: &str,
    path: &str,
    params: &[(String, String)],
    max: usize,
    strict: bool,
) -> Response<Body> {
    let get = |name: &str| {
        params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let pagelen = match get("pagelen") {
        None => 10,
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n as usize > max && strict => {
                return error(StatusCode::BAD_REQUEST, &format!("Invalid pagelen: {v:?}"))
            }
            Ok(n) if n >= 1 => (n as usize).min(max),
            _ => return error(StatusCode::BAD_REQUEST, &format!("Invalid pagelen: {v:?}")),
        },
    };
    let page = match get("page") {
        None => 1,
        Some(v) => match v.parse::<u64>() {
            Ok(n) if (1..=1_000_000).contains(&n) => n as usize,
            _ => return error(StatusCode::BAD_REQUEST, &format!("Invalid page: {v:?}")),
        },
    };
    let size = items.len();
    let start = (page - 1).saturating_mul(pagelen);
    let values: Vec<Value> = items.into_iter().skip(start).take(pagelen).collect();
    let link = |p: usize| {
        let mut pairs: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| k != "page")
            .cloned()
            .collect();
        pairs.push(("page".to_string(), p.to_string()));
        format!("{base}{path}?{}", httputil::encode_form(&pairs))
    };
    let mut body = json!({"pagelen": pagelen, "size": size, "values": values, "page": page});
    if start.saturating_add(pagelen) < size {
        body["next"] = Value::String(link(page + 1));
    }
    if page > 1 {
        body["previous"] = Value::String(link(page - 1));
    }
    json_response(StatusCode::OK, &body)
}

fn user_json(principal: &str) -> Value {
    json!({
        "type": "user",
        "account_id": principal,
        "uuid": uuid_for("user", principal),
        "display_name": format!("Test User {principal}"),
        "nickname": principal,
        "account_status": "active",
        "created_on": "2020-01-01T00:00:00.000000+00:00",
        "has_2fa_enabled": null,
        "is_staff": false,
        "links": {},
    })
}

fn workspace_json(base: &str, slug: &str, ws: &Workspace) -> Value {
    json!({
        "type": "workspace",
        "slug": slug,
        "name": slug,
        "uuid": ws.uuid,
        "is_private": true,
        "links": {
            "self": {"href": format!("{base}/2.0/workspaces/{slug}")},
            "html": {"href": format!("{base}/{slug}/")},
        },
    })
}

fn repo_json(base: &str, user: &str, ws: &str, w: &Workspace, slug: &str, r: &Repo) -> Value {
    let host = base.trim_start_matches("http://");
    let full_name = format!("{ws}/{slug}");
    let mut v = json!({
        "type": "repository",
        "uuid": r.uuid,
        "full_name": full_name,
        "slug": slug,
        "name": slug,
        "description": r.metadata.settings.description,
        "scm": "git",
        "is_private": r.meta.is_private,
        "mainbranch": r.meta.mainbranch.as_ref().map(|b| json!({"type": "branch", "name": b})),
        "size": r.meta.size,
        "created_on": UPDATED_ON,
        "updated_on": UPDATED_ON,
        "has_wiki": r.meta.has_wiki || r.wiki.is_some(),
        "has_issues": r.metadata.issue_tracker,
        "fork_policy": r.metadata.settings.fork_policy,
        "language": r.metadata.settings.language,
        "website": r.metadata.settings.website,
        "links": {
            "self": {"href": format!("{base}/2.0/repositories/{full_name}")},
            "html": {"href": format!("{base}/{full_name}")},
            "avatar": {"href": format!("{base}/{full_name}/avatar/32/")},
            "clone": [
                {"name": "ssh", "href": format!("git@bitbucket.org:{full_name}.git")},
                {"name": "https", "href": format!("http://{}@{host}/{full_name}.git", httputil::percent_encode(user))},
            ],
        },
        "owner": {"type": "team", "username": ws, "display_name": ws, "uuid": w.uuid},
        "workspace": {"type": "workspace", "slug": ws, "name": ws, "uuid": w.uuid},
        "project": {"type": "project", "key": r.project,
                    "name": w.projects.get(&r.project).map_or("Project", |p| p.name.as_str()),
                    "uuid": uuid_for("project", ws)},
    });
    if let Some(parent) = &r.meta.parent {
        let pslug = parent.rsplit('/').next().unwrap_or(parent);
        v["parent"] = json!({
            "type": "repository",
            "full_name": parent,
            "name": pslug,
            "uuid": uuid_for("repository", parent),
            "links": {"self": {"href": format!("{base}/2.0/repositories/{parent}")}},
        });
    }
    v
}

// ---------------------------------------------------------------- git

async fn git(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
    ws: String,
    segs: Vec<String>,
    query: String,
) -> Outcome {
    let git_out = |resp, principal| Outcome {
        resp,
        principal,
        is_git: true,
    };
    let slug = segs[0].strip_suffix(".git").unwrap_or(&segs[0]).to_string();
    let rest = &segs[1..];
    if slug.is_empty() || rest.iter().any(|s| s.is_empty() || s == "." || s == "..") {
        return git_out(text(StatusCode::BAD_REQUEST, "Bad git path\n"), None);
    }
    let cred = parse_auth(req.headers());
    let (principal, remote_user, repo_path) = {
        let mut st = shared.lock();
        let Some(ident) = git_identity(&st, &cred) else {
            return git_out(git_unauthorized(), None);
        };
        let principal = Some(ident.principal.clone());
        if st.fail_next_git_503 > 0 {
            st.fail_next_git_503 -= 1;
            return git_out(
                text(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable\n"),
                principal,
            );
        }
        if !admit(&mut st, &ident.principal) {
            return git_out(too_many(), principal);
        }
        let Some(repo) = st.workspaces.get(&ws).and_then(|w| w.repos.get(&slug)) else {
            return git_out(
                text(StatusCode::NOT_FOUND, "Repository not found\n"),
                principal,
            );
        };
        if !ident.can_see(&st, &ws) {
            return git_out(text(StatusCode::FORBIDDEN, "Access denied\n"), principal);
        }
        if cgi::is_receive_pack(rest, &query) && read_only(&st.read_only, &ident.principal, &cred) {
            return git_out(text(StatusCode::FORBIDDEN, "Access denied\n"), principal);
        }
        let user = match &cred {
            Cred::Basic(u, _) => u.clone(),
            _ => ident.principal.clone(),
        };
        if rest.first().map(String::as_str) == Some("wiki") {
            let Some(wiki) = repo.wiki.clone() else {
                return git_out(
                    text(StatusCode::NOT_FOUND, "Repository not found\n"),
                    principal,
                );
            };
            if let Some(granted) = restricted_scopes(&st, &ident, &cred) {
                if !meta::scope_ok(granted, "wiki") {
                    return git_out(text(StatusCode::FORBIDDEN, "Access denied\n"), principal);
                }
            }
            (principal, user, wiki)
        } else {
            (principal, user, repo.path.clone())
        }
    };
    let rest = match rest.first().map(String::as_str) {
        Some("wiki") => &rest[1..],
        _ => rest,
    };
    if rest == ["info", "lfs", "objects", "batch"] {
        if req.method() != Method::POST {
            return git_out(
                text(StatusCode::METHOD_NOT_ALLOWED, "Use POST\n"),
                principal,
            );
        }
        let body = match req.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => {
                return git_out(
                    text(StatusCode::BAD_REQUEST, "Unreadable body\n"),
                    principal,
                )
            }
        };
        return git_out(shared.lfs.batch(&ws, &slug, &body), principal);
    }
    let (Some(root), Some(name)) = (repo_path.parent(), repo_path.file_name()) else {
        return git_out(
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
        remote_user: Some(remote_user),
        remote_addr: peer.ip().to_string(),
        home: shared.cgi_home.clone(),
    };
    let resp = cgi::run_git_http_backend(cgi_req, req.into_body()).await;
    git_out(resp, principal)
}

// ---------------------------------------------------------------- ids

fn hash64(seed: u64, data: &[u8]) -> u64 {
    // FNV-1a followed by a splitmix64 finaliser.
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    splitmix(h)
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Deterministic `{xxxxxxxx-xxxx-4xxx-8xxx-xxxxxxxxxxxx}` for an object.
fn uuid_for(kind: &str, name: &str) -> String {
    let data = format!("{kind}\0{name}");
    let a = hash64(1, data.as_bytes());
    let b = hash64(2, data.as_bytes());
    format!(
        "{{{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}}}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

fn random_token(len: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut state = nanos
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9)
        ^ (std::process::id() as u64) << 40;
    (0..len)
        .map(|_| {
            state = splitmix(state);
            ALPHABET[(state % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_shape() {
        let u = uuid_for("repository", "ws/a");
        assert_eq!(u.len(), 38, "{u}");
        assert!(u.starts_with('{') && u.ends_with('}'));
        assert_eq!(u, uuid_for("repository", "ws/a"));
        assert_ne!(u, uuid_for("repository", "ws/b"));
        assert_ne!(random_token(20), random_token(20));
    }
}
