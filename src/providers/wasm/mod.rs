//! Loading provider components with wasmtime and calling them under limits.
//!
//! Every released version of the provider world (`wit/v<major.minor>/`) has a
//! module here ([`v0_1`] … [`v0_5`]) with its own bindings, adapting them to one
//! version-independent interface: [`ProviderPre`] (a linked component) and
//! [`ProviderCalls`] (its exports in the host's types). Loading reads which
//! `reposafe:provider/provider@<version>` interface a component exports and links
//! it against that version's world; the rest of the host never sees the version.

#[macro_use]
mod glue;
mod v0_1;
mod v0_2;
mod v0_3;
mod v0_4;
mod v0_5;

use super::http::{GateError, HttpGate, Request, Response};
use super::{
    cache, DocumentPage, FileSource, MetadataKind, NewRepository, ProviderError, ProviderInfo,
    Repository, RepositoryParts, RestoreContext, RestoreDocument, RestoreKind, RestoreOutcome,
    RestoredDocument, Scope, WebhookRegistered, WebhookRequest,
};
use crate::vault::CredentialKind;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::Component;
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};

/// The world versions this host implements, newest first. A released version is
/// never changed and never dropped: every plugin built against one keeps loading.
const VERSIONS: &[WitVersion] = &[v0_5::WIT, v0_4::WIT, v0_3::WIT, v0_2::WIT, v0_1::WIT];

/// The interface every provider component exports, without its `@<version>`.
const PROVIDER_INTERFACE: &str = "reposafe:provider/provider";

/// The built-in providers, embedded at build time from `plugins/dist/`.
const BUILTIN: &[(&str, &[u8])] = &[
    (
        "bitbucket-cloud",
        include_bytes!("../../../plugins/dist/bitbucket-cloud.wasm"),
    ),
    (
        "bitbucket-dc",
        include_bytes!("../../../plugins/dist/bitbucket-dc.wasm"),
    ),
];

/// The environment variable naming (comma-separated) the plugin ids allowed to
/// replace a built-in provider.
pub const OVERRIDE_ENV: &str = "REPOSAFE_ALLOW_PLUGIN_OVERRIDE";

/// Refuses a plugin file that someone besides its owner may write, or that is not
/// owned by the user this process runs as: whoever can change it runs code with
/// the connections' credentials at their disposal.
fn check_plugin_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "it is writable by its group or by everyone (mode {mode:04o}); a plugin file must \
             be writable only by its owner (chmod go-w {})",
            path.display()
        ));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(format!(
            "it is owned by uid {} (mode {mode:04o}), not by the user reposafe runs as (uid {me})",
            meta.uid()
        ));
    }
    Ok(())
}

/// Linear memory a provider instance may use.
const MEMORY_LIMIT: usize = 64 << 20;
/// Elements one table may hold (real providers use a few dozen); without a cap a
/// plugin could allocate gigabytes of host memory through a table.
const TABLE_ELEMENTS_LIMIT: usize = 10_000;
/// Fuel (roughly wasm instructions) one call may burn: stops a looping plugin.
const FUEL_PER_CALL: u64 = 2_000_000_000;
/// Epoch tick length and per-call wall-clock backstop.
const TICK: Duration = Duration::from_millis(100);
const DEADLINE_TICKS: u64 = 15 * 60 * 10;
/// Most pages one scope listing may take (guards against a cursor loop).
const MAX_PAGES: usize = 100_000;
/// Most HTTP requests one plugin call (one `list-scopes`, one page of
/// `list-repositories`) may send; the next one is refused unsent and fails the call.
/// A real page takes one request, a scope listing a few.
pub const MAX_REQUESTS_PER_CALL: u32 = 1_000;
/// Most response-body bytes one plugin call may receive over all its requests
/// (each response is also capped at [`RetryPolicy::max_body`](super::http::RetryPolicy)).
pub const MAX_RESPONSE_BYTES_PER_CALL: u64 = 64 << 20;
/// Most bytes one `files.read` returns (world 0.4.0); a larger `length` is cut to it.
pub const MAX_FILE_READ: u32 = 4 << 20;
/// Most string bytes one call may return (the sum over a page's repositories or
/// the scopes' fields); a real page of 100 repositories is well under 1 MiB.
pub const MAX_RETURN_BYTES: usize = 16 << 20;

/// One world version the host implements.
struct WitVersion {
    /// The package version, e.g. `0.2.0`.
    version: &'static str,
    /// Links a component exporting this version's `provider` interface; the
    /// error says what the component lacks.
    link: fn(&Engine, &Component) -> Linked,
}

/// A component linked against its world version, or what it lacks.
type Linked = Result<Box<dyn ProviderPre>, String>;

/// A provider component linked against the world version it was built for.
trait ProviderPre: Send + Sync {
    /// The `reposafe:provider` package version, e.g. `0.2.0`.
    fn wit_version(&self) -> &'static str;
    /// A fresh instance in `store`.
    fn instantiate(
        &self,
        store: &mut Store<PluginState>,
    ) -> wasmtime::Result<Box<dyn ProviderCalls>>;
}

/// The exports of one provider instance, in the host's types, whatever world
/// version the component was built against. The outer error is a trap; the
/// inner one the provider's own answer.
trait ProviderCalls {
    fn info(&self, store: &mut Store<PluginState>) -> wasmtime::Result<ProviderInfo>;
    fn list_scopes(
        &self,
        store: &mut Store<PluginState>,
        conn: &ConnectionParams,
    ) -> wasmtime::Result<Result<Vec<Scope>, ProviderError>>;
    fn list_repositories(
        &self,
        store: &mut Store<PluginState>,
        conn: &ConnectionParams,
        scope: &str,
        cursor: Option<&str>,
    ) -> wasmtime::Result<Result<RepositoryPage, ProviderError>>;
    fn oauth_token_url(
        &self,
        store: &mut Store<PluginState>,
        conn: &ConnectionParams,
    ) -> wasmtime::Result<Option<String>>;
    /// `Ok(None)` when the provider cannot tell, and for every provider of a world
    /// version without the `principal` export.
    fn principal(
        &self,
        store: &mut Store<PluginState>,
        conn: &ConnectionParams,
    ) -> wasmtime::Result<Result<Option<String>, ProviderError>>;
    /// `Ok(None)` for a world version without `describe-repository` (before
    /// 0.3.0): the repository is git only.
    fn describe_repository(
        &self,
        store: &mut Store<PluginState>,
        conn: &ConnectionParams,
        repo: &Repository,
    ) -> wasmtime::Result<Result<Option<RepositoryParts>, ProviderError>>;
    /// [`ProviderError::Unsupported`] for a world version without `list-documents`.
    fn list_documents(
        &self,
        store: &mut Store<PluginState>,
        conn: &ConnectionParams,
        query: &DocumentQuery<'_>,
    ) -> wasmtime::Result<Result<DocumentPage, ProviderError>>;
    /// No kinds for a world version without `describe-scope`.
    fn describe_scope(
        &self,
        store: &mut Store<PluginState>,
        conn: &ConnectionParams,
        scope: &str,
    ) -> wasmtime::Result<Result<Vec<MetadataKind>, ProviderError>>;
    /// [`ProviderError::Unsupported`] for a world version without `list-scope-documents`.
    fn list_scope_documents(
        &self,
        store: &mut Store<PluginState>,
        conn: &ConnectionParams,
        query: &ScopeDocumentQuery<'_>,
    ) -> wasmtime::Result<Result<DocumentPage, ProviderError>>;
    /// [`ProviderError::Unsupported`] for a world version before 0.4.0 (the
    /// session then looks for the repository in its scope's listing).
    fn find_repository(
        &self,
        store: &mut Store<PluginState>,
        conn: &ConnectionParams,
        scope: &str,
        slug: &str,
    ) -> wasmtime::Result<Result<Option<Repository>, ProviderError>>;
    /// [`ProviderError::Unsupported`] for a world version before 0.4.0, as the
    /// two calls below.
    fn create_repository(
        &self,
        store: &mut Store<PluginState>,
        conn: &ConnectionParams,
        new: &NewRepository,
    ) -> wasmtime::Result<Result<Repository, ProviderError>>;
    fn restorable_kinds(
        &self,
        store: &mut Store<PluginState>,
        conn: &ConnectionParams,
        source_provider: &str,
    ) -> wasmtime::Result<Result<Vec<RestoreKind>, ProviderError>>;
    fn restore_documents(
        &self,
        store: &mut Store<PluginState>,
        conn: &ConnectionParams,
        query: &RestoreQuery<'_>,
    ) -> wasmtime::Result<Result<Vec<RestoredDocument>, ProviderError>>;
    /// [`ProviderError::Unsupported`] for a world version before 0.5.0.
    fn register_webhook(
        &self,
        store: &mut Store<PluginState>,
        conn: &ConnectionParams,
        scope: &str,
        hook: &WebhookRequest,
    ) -> wasmtime::Result<Result<WebhookRegistered, ProviderError>>;
}

/// The arguments of `restore-documents` besides the connection.
struct RestoreQuery<'a> {
    repo: &'a Repository,
    kind: &'a str,
    ctx: &'a RestoreContext,
    docs: &'a [RestoreDocument],
}

/// The answer of world `version` to a call `what` that world version `added` added.
fn unsupported(
    store: &Store<PluginState>,
    version: &str,
    what: &str,
    added: &str,
) -> ProviderError {
    ProviderError::Unsupported {
        provider: store.data().provider.clone(),
        version: version.to_string(),
        what: what.to_string(),
        added: added.to_string(),
    }
}

/// What one call is granted besides reading through its gate.
#[derive(Default)]
struct Grants {
    /// Write methods, as far as the gate allows them.
    writes: bool,
    /// The `files` import (inside `restore-documents`).
    files: Option<FileGrant>,
    /// A secret the host puts in the call's request bodies (inside `register-webhook`).
    secret: Option<SecretFill>,
}

impl Grants {
    /// Writes, nothing else.
    fn writing() -> Grants {
        Grants {
            writes: true,
            ..Grants::default()
        }
    }
}

/// A secret a call's requests carry without the plugin seeing it: the plugin
/// writes `placeholder` where it goes in a request body, the host replaces it
/// on the way out, and puts the placeholder back in place of the secret in any
/// response body (a server echoing it).
pub(super) struct SecretFill {
    placeholder: String,
    secret: secrecy::SecretString,
}

impl SecretFill {
    /// A fill with a fresh random placeholder for `secret`.
    fn new(secret: secrecy::SecretString) -> SecretFill {
        let mut bytes = [0u8; 16];
        rand::Rng::fill(&mut rand::rngs::OsRng, &mut bytes[..]);
        SecretFill {
            placeholder: format!("reposafe-secret-{}", hex::encode(bytes)),
            secret,
        }
    }

    /// `req` with the secret in place of the placeholder, when its body holds one.
    fn fill(&self, req: &Request) -> Option<Request> {
        use secrecy::ExposeSecret;
        let body = req.body.as_deref()?;
        let filled = replace_all(
            body,
            self.placeholder.as_bytes(),
            self.secret.expose_secret().as_bytes(),
        )?;
        Some(Request {
            body: Some(filled),
            ..req.clone()
        })
    }

    /// Hides the secret in a response body behind the placeholder.
    fn mask(&self, resp: &mut Response) {
        use secrecy::ExposeSecret;
        let secret = self.secret.expose_secret().as_bytes();
        if let Some(masked) = replace_all(&resp.body, secret, self.placeholder.as_bytes()) {
            resp.body = masked;
        }
    }
}

/// `haystack` with every `from` replaced by `to`; `None` when it holds no `from`.
fn replace_all(haystack: &[u8], from: &[u8], to: &[u8]) -> Option<Vec<u8>> {
    if from.is_empty() || !haystack.windows(from.len()).any(|w| w == from) {
        return None;
    }
    let mut out = Vec::with_capacity(haystack.len() + to.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The `files` import granted to one `restore-documents` call: its source, and
/// the blobs the call's documents name (no other may be read).
struct FileGrant {
    source: Arc<dyn FileSource>,
    blobs: BTreeSet<String>,
}

/// The arguments of `list-documents` besides the connection.
struct DocumentQuery<'a> {
    repo: &'a Repository,
    kind: &'a str,
    since: Option<&'a str>,
    cursor: Option<&'a str>,
}

/// The arguments of `list-scope-documents` besides the connection.
struct ScopeDocumentQuery<'a> {
    scope: &'a str,
    kind: &'a str,
    cursor: Option<&'a str>,
}

/// The parts of a connection a provider sees (the WIT `connection` record).
#[derive(Clone, Debug)]
struct ConnectionParams {
    settings: Vec<(String, String)>,
    kind: CredentialKind,
}

impl ConnectionParams {
    fn new(settings: &BTreeMap<String, String>, kind: CredentialKind) -> ConnectionParams {
        ConnectionParams {
            settings: settings
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            kind,
        }
    }
}

/// One page of a scope's repositories (the WIT `repository-page` record).
struct RepositoryPage {
    repositories: Vec<Repository>,
    next: Option<String>,
}

/// Levels of the `log` import.
enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// The store data of one provider call.
struct PluginState {
    provider: String,
    gate: Option<Arc<HttpGate>>,
    limits: StoreLimits,
    /// The first request outside what the call was granted (a method, an
    /// origin): the call fails with it whatever the plugin makes of the refusal.
    violation: Option<String>,
    /// Requests sent in this call (see [`MAX_REQUESTS_PER_CALL`]).
    requests: u32,
    /// Response-body bytes received in this call (see [`MAX_RESPONSE_BYTES_PER_CALL`]).
    response_bytes: u64,
    /// The per-call cap the plugin exceeded: the call fails with it, and no
    /// further request is sent.
    exceeded: Option<String>,
    /// The call may only read (GET and HEAD), whatever the gate allows: every
    /// call but `create-repository` and `restore-documents`.
    reads_only: bool,
    /// The `files` import, granted inside `restore-documents` only.
    files: Option<FileGrant>,
    /// The secret filled into request bodies, inside `register-webhook` only.
    secret: Option<SecretFill>,
}

impl PluginState {
    /// The `http.send` import: through the call's gate, if it has one.
    fn gate_send(&mut self, req: &Request) -> Result<Response, GateError> {
        let Some(gate) = &self.gate else {
            return Err(GateError::Denied(
                "HTTP is not available in this call".into(),
            ));
        };
        if let Some(cap) = &self.exceeded {
            return Err(GateError::Denied(format!("{cap}; nothing was sent")));
        }
        let method = req.method.to_ascii_uppercase();
        // TRACE and CONNECT: the gate refuses them for every call, saying so.
        let never = matches!(method.as_str(), "TRACE" | "CONNECT");
        if self.reads_only && !never && method != "GET" && method != "HEAD" {
            let shown = req.url.split('?').next().unwrap_or(&req.url);
            let m = format!(
                "{method} {shown}: this operation only reads (GET and HEAD), it may not write; \
                 nothing was sent"
            );
            tracing::warn!(provider = %self.provider, "refused plugin request: {m}");
            self.violation.get_or_insert_with(|| m.clone());
            return Err(GateError::Denied(m));
        }
        if self.requests >= MAX_REQUESTS_PER_CALL {
            let cap = format!(
                "it made more than {MAX_REQUESTS_PER_CALL} HTTP requests in one call (the \
                 limit per call); no further request was sent"
            );
            tracing::warn!(provider = %self.provider, "{cap}");
            self.exceeded = Some(cap.clone());
            return Err(GateError::Denied(cap));
        }
        self.requests += 1;
        let filled = self.secret.as_ref().and_then(|f| f.fill(req));
        let mut result = gate.send(filled.as_ref().unwrap_or(req));
        if let (Ok(resp), Some(fill)) = (&mut result, &self.secret) {
            fill.mask(resp);
        }
        if let Ok(resp) = &result {
            self.response_bytes = self.response_bytes.saturating_add(resp.body.len() as u64);
            if self.response_bytes > MAX_RESPONSE_BYTES_PER_CALL {
                let cap = format!(
                    "it received more than {} MiB of HTTP response bodies in one call (the \
                     limit per call); no further request was sent",
                    MAX_RESPONSE_BYTES_PER_CALL >> 20
                );
                tracing::warn!(provider = %self.provider, "{cap}");
                self.exceeded = Some(cap.clone());
                return Err(GateError::TooLarge(cap));
            }
        }
        match &result {
            Err(GateError::Denied(m)) => {
                tracing::warn!(provider = %self.provider, "denied plugin request: {m}");
            }
            Err(GateError::Forbidden(m)) => {
                tracing::warn!(provider = %self.provider, "refused plugin request: {m}");
                if self.violation.is_none() {
                    self.violation = Some(m.clone());
                }
            }
            _ => {}
        }
        result
    }

    /// The `files.read` import: only a blob named in the running call's
    /// documents, at most [`MAX_FILE_READ`] bytes.
    fn read_file(&self, blob: &str, offset: u64, length: u32) -> Result<Vec<u8>, String> {
        let Some(grant) = &self.files else {
            return Err("files are not available in this call (only in restore-documents)".into());
        };
        if !grant.blobs.contains(blob) {
            tracing::warn!(provider = %self.provider, "refused files.read of blob {blob:?}");
            return Err(format!(
                "blob {blob:?} is not a file of the documents being restored; only those may \
                 be read"
            ));
        }
        let length = length.min(MAX_FILE_READ);
        let mut bytes = grant.source.read(blob, offset, length)?;
        bytes.truncate(length as usize);
        Ok(bytes)
    }

    /// The `log.log` import.
    fn write_log(&self, level: LogLevel, message: &str) {
        let p = &self.provider;
        // Plugins see no secrets, but cap what they can push into our log.
        let message: String = message.chars().take(2000).collect();
        match level {
            LogLevel::Trace => tracing::trace!(provider = %p, "{message}"),
            LogLevel::Debug => tracing::debug!(provider = %p, "{message}"),
            LogLevel::Info => tracing::info!(provider = %p, "{message}"),
            LogLevel::Warn => tracing::warn!(provider = %p, "{message}"),
            LogLevel::Error => tracing::error!(provider = %p, "{message}"),
        }
    }
}

/// The supported versions, for messages: `0.2.0, 0.1.0`.
fn supported_versions() -> String {
    VERSIONS
        .iter()
        .map(|v| v.version)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Links `component` against the world version whose `provider` interface it
/// exports; the error names the version it wants and the supported ones.
fn link(engine: &Engine, component: &Component) -> Linked {
    let exports: Vec<String> = component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let prefix = format!("{PROVIDER_INTERFACE}@");
    let exported: Vec<&str> = exports
        .iter()
        .filter_map(|name| name.strip_prefix(&prefix))
        .collect();
    if let Some(v) = VERSIONS.iter().find(|v| exported.contains(&v.version)) {
        return (v.link)(engine, component);
    }
    Err(match exported.first() {
        Some(wanted) => format!(
            "it is built for reposafe:provider@{wanted} (it exports {prefix}{wanted}), a version \
             this reposafe does not implement; supported versions: {}",
            supported_versions()
        ),
        None => format!(
            "it exports no {PROVIDER_INTERFACE} interface (its exports: {}); supported \
             versions: {}",
            if exports.is_empty() {
                "none".to_string()
            } else {
                exports.join(", ")
            },
            supported_versions()
        ),
    })
}

/// One loaded provider component.
pub struct LoadedProvider {
    info: ProviderInfo,
    pre: Box<dyn ProviderPre>,
    engine: Engine,
}

/// Every provider available to this process, plus the plugins that failed to load.
pub struct ProviderRegistry {
    providers: Vec<LoadedProvider>,
    /// Plugins that could not be loaded, with why. They do not stop the others.
    pub load_errors: Vec<ProviderError>,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for ProviderRegistry {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

fn engine() -> Result<Engine, ProviderError> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.consume_fuel(true);
    config.epoch_interruption(true);
    Engine::new(&config).map_err(|e| ProviderError::Load {
        origin: "wasmtime engine".into(),
        reason: e.to_string(),
    })
}

impl ProviderRegistry {
    /// Loads the built-in providers and every `*.wasm` in `plugins_dir` (if given),
    /// allowing the plugins whose ids `REPOSAFE_ALLOW_PLUGIN_OVERRIDE` names
    /// (comma-separated) to replace a built-in provider; see [`load_with`](Self::load_with).
    pub fn load(
        plugins_dir: Option<&Path>,
        cache_dir: Option<&Path>,
    ) -> Result<ProviderRegistry, ProviderError> {
        let allow: Vec<String> = std::env::var(OVERRIDE_ENV)
            .unwrap_or_default()
            .split(',')
            .map(|id| id.trim().to_string())
            .filter(|id| !id.is_empty())
            .collect();
        Self::load_with(plugins_dir, cache_dir, &allow)
    }

    /// Loads the built-in providers and every `*.wasm` in `plugins_dir` (if given).
    /// Compiled components are cached in `cache_dir` (if given). A plugin that fails
    /// to load is recorded in `load_errors`, and so is a plugin file that others
    /// can write or that is not owned by this process's user, and a plugin with
    /// the id of a built-in provider unless `allow_override` names that id (then
    /// it replaces the built-in one).
    pub fn load_with(
        plugins_dir: Option<&Path>,
        cache_dir: Option<&Path>,
        allow_override: &[String],
    ) -> Result<ProviderRegistry, ProviderError> {
        let engine = engine()?;
        let stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| ProviderError::Load {
                    origin: "epoch thread".into(),
                    reason: e.to_string(),
                })?;
        }
        let mut reg = ProviderRegistry {
            providers: Vec::new(),
            load_errors: Vec::new(),
            stop_ticker: stop,
        };
        for (name, bytes) in BUILTIN {
            match LoadedProvider::load(&engine, bytes, super::BUILTIN_ORIGIN, cache_dir) {
                Ok(p) => reg.insert(p),
                Err(e) => reg.load_errors.push(ProviderError::Load {
                    origin: format!("built-in {name}"),
                    reason: e.to_string(),
                }),
            }
        }
        if let Some(dir) = plugins_dir {
            reg.load_plugins(&engine, dir, cache_dir, allow_override);
        }
        Ok(reg)
    }

    /// Loads every `*.wasm` of `dir` (see [`load_with`](Self::load_with)).
    fn load_plugins(
        &mut self,
        engine: &Engine,
        dir: &Path,
        cache_dir: Option<&Path>,
        allow_override: &[String],
    ) {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("wasm"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                self.load_errors.push(ProviderError::Load {
                    origin: dir.display().to_string(),
                    reason: e.to_string(),
                });
                Vec::new()
            }
        };
        files.sort();
        for f in files {
            let origin = f.display().to_string();
            let load_err = |reason: String| ProviderError::Load {
                origin: origin.clone(),
                reason,
            };
            let loaded = check_plugin_file(&f)
                .and_then(|()| std::fs::read(&f).map_err(|e| e.to_string()))
                .map_err(load_err)
                .and_then(|bytes| LoadedProvider::load(engine, &bytes, &origin, cache_dir))
                .and_then(|p| {
                    let id = &p.info.id;
                    let builtin = self
                        .providers
                        .iter()
                        .any(|q| &q.info.id == id && q.info.is_builtin());
                    if builtin && !allow_override.contains(id) {
                        return Err(load_err(format!(
                            "its id {id:?} is the id of a built-in provider, so it is not \
                             loaded; to replace the built-in provider with this file, set \
                             {OVERRIDE_ENV}={id}"
                        )));
                    }
                    Ok(p)
                });
            match loaded {
                Ok(p) => self.insert(p),
                Err(e) => {
                    tracing::warn!("{e}");
                    self.load_errors.push(e)
                }
            }
        }
    }

    fn insert(&mut self, p: LoadedProvider) {
        self.providers.retain(|q| q.info.id != p.info.id);
        self.providers.push(p);
    }

    /// Every loaded provider's description.
    pub fn infos(&self) -> Vec<&ProviderInfo> {
        self.providers.iter().map(|p| &p.info).collect()
    }

    /// The provider with `id`.
    pub fn get(&self, id: &str) -> Result<&LoadedProvider, ProviderError> {
        self.providers
            .iter()
            .find(|p| p.info.id == id)
            .ok_or_else(|| ProviderError::UnknownProvider(id.to_string()))
    }
}

impl LoadedProvider {
    fn load(
        engine: &Engine,
        bytes: &[u8],
        origin: &str,
        cache_dir: Option<&Path>,
    ) -> Result<LoadedProvider, ProviderError> {
        let load_err = |reason: String| ProviderError::Load {
            origin: origin.to_string(),
            reason,
        };
        let component = cache::load_or_compile(engine, bytes, cache_dir)
            .map_err(|e| load_err(format!("not a valid WebAssembly component: {e:#}")))?;
        let pre = link(engine, &component).map_err(load_err)?;
        let mut p = LoadedProvider {
            info: ProviderInfo {
                id: String::new(),
                display_name: String::new(),
                version: String::new(),
                credential_kinds: Vec::new(),
                settings: Vec::new(),
                origin: origin.to_string(),
            },
            pre,
            engine: engine.clone(),
        };
        let info = p
            .call(None, |g, store| g.info(store))
            .map_err(|e| load_err(e.to_string()))?;
        if info.id.is_empty()
            || !info
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(load_err(format!(
                "its id {:?} is not lower-case kebab",
                info.id
            )));
        }
        p.info = ProviderInfo {
            origin: origin.to_string(),
            ..info
        };
        Ok(p)
    }

    pub fn info(&self) -> &ProviderInfo {
        &self.info
    }

    /// The `reposafe:provider` world version the component was built against, e.g. `0.2.0`.
    pub fn wit_version(&self) -> &'static str {
        self.pre.wit_version()
    }

    /// Runs one export in a fresh store with limits, granting it only GET and
    /// HEAD. Traps, fuel exhaustion, deadline and memory limits become
    /// `ProviderError::Plugin`.
    fn call<T>(
        &self,
        gate: Option<Arc<HttpGate>>,
        f: impl FnOnce(&dyn ProviderCalls, &mut Store<PluginState>) -> wasmtime::Result<T>,
    ) -> Result<T, ProviderError> {
        self.call_with(gate, Grants::default(), f)
    }

    /// [`call`](Self::call), with what `grants` adds.
    fn call_with<T>(
        &self,
        gate: Option<Arc<HttpGate>>,
        grants: Grants,
        f: impl FnOnce(&dyn ProviderCalls, &mut Store<PluginState>) -> wasmtime::Result<T>,
    ) -> Result<T, ProviderError> {
        let provider = if self.info.id.is_empty() {
            self.info.origin.clone()
        } else {
            self.info.id.clone()
        };
        let plugin_err = |reason: String| ProviderError::Plugin {
            provider: provider.clone(),
            reason,
        };
        let state = PluginState {
            provider: provider.clone(),
            gate,
            limits: StoreLimitsBuilder::new()
                .memory_size(MEMORY_LIMIT)
                .instances(8)
                .tables(8)
                .table_elements(TABLE_ELEMENTS_LIMIT)
                .memories(1)
                .trap_on_grow_failure(true)
                .build(),
            violation: None,
            requests: 0,
            response_bytes: 0,
            exceeded: None,
            reads_only: !grants.writes,
            files: grants.files,
            secret: grants.secret,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store
            .set_fuel(FUEL_PER_CALL)
            .map_err(|e| plugin_err(e.to_string()))?;
        store.set_epoch_deadline(DEADLINE_TICKS);
        store.epoch_deadline_trap();
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| plugin_err(format!("cannot instantiate: {e:#}")))?;
        let result = f(instance.as_ref(), &mut store);
        if let Some(cap) = store.data_mut().exceeded.take() {
            return Err(plugin_err(cap));
        }
        if let Some(v) = store.data_mut().violation.take() {
            return Err(plugin_err(format!(
                "it sent a request the host refused: {v}"
            )));
        }
        result.map_err(|e| {
            let detail = match e.downcast_ref::<wasmtime::Trap>() {
                Some(wasmtime::Trap::OutOfFuel) => {
                    "it ran too long without returning (CPU budget exhausted; a loop?)".to_string()
                }
                Some(wasmtime::Trap::Interrupt) => "it did not finish in time".to_string(),
                Some(wasmtime::Trap::MemoryOutOfBounds)
                | Some(wasmtime::Trap::UnreachableCodeReached) => {
                    format!("it crashed ({e})")
                }
                _ => format!("{e:#}"),
            };
            let detail = if detail.contains("memory") && detail.contains("grow") {
                format!(
                    "it exceeded its memory limit of {} MiB ({detail})",
                    MEMORY_LIMIT >> 20
                )
            } else {
                detail
            };
            plugin_err(detail)
        })
    }

    /// Fails a call whose answer (`what`) holds more than [`MAX_RETURN_BYTES`] of strings.
    fn check_returned(&self, what: &str, bytes: usize) -> Result<(), ProviderError> {
        if bytes <= MAX_RETURN_BYTES {
            return Ok(());
        }
        Err(ProviderError::Plugin {
            provider: self.info.id.clone(),
            reason: format!(
                "{what} holds {} MiB of text, more than the {} MiB one call may return",
                bytes >> 20,
                MAX_RETURN_BYTES >> 20
            ),
        })
    }

    /// A session for one connection: settings resolved, credential applied by `gate`.
    pub fn session(
        &self,
        settings: &BTreeMap<String, String>,
        kind: CredentialKind,
        gate: Arc<HttpGate>,
    ) -> ProviderSession<'_> {
        ProviderSession {
            provider: self,
            conn: ConnectionParams::new(settings, kind),
            gate,
        }
    }

    /// The OAuth token URL for a connection's settings, if the provider has one.
    pub fn oauth_token_url(
        &self,
        settings: &BTreeMap<String, String>,
        kind: CredentialKind,
    ) -> Result<Option<String>, ProviderError> {
        let conn = ConnectionParams::new(settings, kind);
        self.call(None, |g, s| g.oauth_token_url(s, &conn))
    }
}

/// Calls into one provider for one connection.
pub struct ProviderSession<'a> {
    provider: &'a LoadedProvider,
    conn: ConnectionParams,
    gate: Arc<HttpGate>,
}

impl ProviderSession<'_> {
    pub fn gate(&self) -> &Arc<HttpGate> {
        &self.gate
    }

    /// The scopes the credential can see (or the one named in the settings).
    pub fn list_scopes(&self) -> Result<Vec<Scope>, ProviderError> {
        let conn = &self.conn;
        let scopes = self
            .provider
            .call(Some(self.gate.clone()), |g, s| g.list_scopes(s, conn))??;
        let bytes = scopes
            .iter()
            .map(|s| s.key.len() + s.name.len() + s.kind.len())
            .sum();
        self.provider.check_returned("its scope list", bytes)?;
        Ok(scopes)
    }

    /// One page of a scope's repositories, within [`MAX_RETURN_BYTES`].
    fn page(&self, scope: &str, cursor: Option<&str>) -> Result<RepositoryPage, ProviderError> {
        let conn = &self.conn;
        let page = self.provider.call(Some(self.gate.clone()), |g, s| {
            g.list_repositories(s, conn, scope, cursor)
        })??;
        let bytes = page
            .repositories
            .iter()
            .map(repository_bytes)
            .sum::<usize>()
            + page.next.as_ref().map_or(0, String::len);
        self.provider
            .check_returned(&format!("its page of the repositories of {scope}"), bytes)?;
        Ok(page)
    }

    /// Checks the credential works: lists the scopes and the first page of
    /// repositories of each (a named scope alone makes no request). Returns the scopes.
    pub fn verify(&self) -> Result<Vec<Scope>, ProviderError> {
        let scopes = self.list_scopes()?;
        for scope in &scopes {
            self.page(&scope.key, None)?;
        }
        Ok(scopes)
    }

    /// Checks the credential can list one scope: the first page of its repositories.
    pub fn verify_scope(&self, scope: &str) -> Result<(), ProviderError> {
        self.page(scope, None)?;
        Ok(())
    }

    /// The account the credential acts as, if the provider can tell.
    pub fn principal(&self) -> Result<Option<String>, ProviderError> {
        let conn = &self.conn;
        self.provider
            .call(Some(self.gate.clone()), |g, s| g.principal(s, conn))?
    }

    /// What `repo` holds besides its git repository (extra git parts such as the
    /// wiki, its LFS server, its metadata kinds); `Ok(None)` for a provider of a
    /// world before 0.3.0, which backs up git only. The call may only read.
    pub fn describe_repository(
        &self,
        repo: &Repository,
    ) -> Result<Option<RepositoryParts>, ProviderError> {
        let conn = &self.conn;
        let parts = self.provider.call(Some(self.gate.clone()), |g, s| {
            g.describe_repository(s, conn, repo)
        })??;
        if let Some(p) = &parts {
            let bytes = p
                .git
                .iter()
                .map(|g| g.name.len() + g.url.len())
                .sum::<usize>()
                + p.lfs_url.as_ref().map_or(0, String::len)
                + p.metadata.iter().map(|k| k.name.len()).sum::<usize>();
            self.provider.check_returned(
                &format!("its description of repository {}", repo.full_name),
                bytes,
            )?;
        }
        Ok(parts)
    }

    /// One page of the documents of metadata `kind` of `repo`: only items updated
    /// after `since` for an incremental kind when it is set; `cursor` is the
    /// previous page's `next`. Within [`MAX_RETURN_BYTES`]; the call may only read.
    /// [`ProviderError::Unsupported`] for a provider of a world before 0.3.0.
    pub fn list_documents(
        &self,
        repo: &Repository,
        kind: &str,
        since: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<DocumentPage, ProviderError> {
        let conn = &self.conn;
        let query = DocumentQuery {
            repo,
            kind,
            since,
            cursor,
        };
        let page = self.provider.call(Some(self.gate.clone()), |g, s| {
            g.list_documents(s, conn, &query)
        })??;
        self.provider.check_returned(
            &format!("its page of {kind} of {}", repo.full_name),
            document_page_bytes(&page),
        )?;
        Ok(page)
    }

    /// The metadata kinds of a scope (e.g. the workspace, its projects); empty
    /// for a provider of a world before 0.3.0. The call may only read.
    pub fn describe_scope(&self, scope: &str) -> Result<Vec<MetadataKind>, ProviderError> {
        let conn = &self.conn;
        let kinds = self.provider.call(Some(self.gate.clone()), |g, s| {
            g.describe_scope(s, conn, scope)
        })??;
        let bytes = kinds.iter().map(|k| k.name.len()).sum();
        self.provider
            .check_returned(&format!("its metadata kinds of {scope}"), bytes)?;
        Ok(kinds)
    }

    /// One page of the documents of metadata `kind` of a scope, as
    /// [`list_documents`](Self::list_documents).
    pub fn list_scope_documents(
        &self,
        scope: &str,
        kind: &str,
        cursor: Option<&str>,
    ) -> Result<DocumentPage, ProviderError> {
        let conn = &self.conn;
        let query = ScopeDocumentQuery {
            scope,
            kind,
            cursor,
        };
        let page = self.provider.call(Some(self.gate.clone()), |g, s| {
            g.list_scope_documents(s, conn, &query)
        })??;
        self.provider.check_returned(
            &format!("its page of {kind} of {scope}"),
            document_page_bytes(&page),
        )?;
        Ok(page)
    }

    /// Every repository of a scope, following the provider's pages.
    pub fn list_repositories(&self, scope: &str) -> Result<Vec<Repository>, ProviderError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..MAX_PAGES {
            let page = self.page(scope, cursor.as_deref())?;
            out.extend(page.repositories);
            match page.next {
                Some(n) if !seen.insert(n.clone()) => {
                    return Err(ProviderError::InvalidResponse(format!(
                        "listing of {scope} loops: page cursor {n:?} came back twice"
                    )))
                }
                Some(n) => cursor = Some(n),
                None => return Ok(out),
            }
        }
        Err(ProviderError::InvalidResponse(format!(
            "listing of {scope} has more than {MAX_PAGES} pages"
        )))
    }

    /// The repository `scope/slug`, or `None` when it does not exist. Only
    /// reads. A provider of a world before 0.4.0 has no `find-repository`: the
    /// repository is looked for in the listing of `scope`.
    pub fn find_repository(
        &self,
        scope: &str,
        slug: &str,
    ) -> Result<Option<Repository>, ProviderError> {
        let conn = &self.conn;
        let found = self.provider.call(Some(self.gate.clone()), |g, s| {
            g.find_repository(s, conn, scope, slug)
        })?;
        match found {
            Err(ProviderError::Unsupported { .. }) => {
                let repos = self.list_repositories(scope)?;
                Ok(repos
                    .into_iter()
                    .find(|r| r.slug.eq_ignore_ascii_case(slug)))
            }
            Err(e) => Err(e),
            Ok(repo) => {
                if let Some(r) = &repo {
                    self.provider.check_returned(
                        &format!("its answer for repository {scope}/{slug}"),
                        repository_bytes(r),
                    )?;
                }
                Ok(repo)
            }
        }
    }

    /// Creates the empty repository `new.scope/new.slug` with the settings of
    /// its snapshot that map onto this provider; [`ProviderError::Conflict`]
    /// when it exists. The call may write, as far as the gate allows.
    pub fn create_repository(&self, new: &NewRepository) -> Result<Repository, ProviderError> {
        let conn = &self.conn;
        let repo =
            self.provider
                .call_with(Some(self.gate.clone()), Grants::writing(), |g, s| {
                    g.create_repository(s, conn, new)
                })??;
        self.provider.check_returned(
            &format!(
                "its answer for the new repository {}/{}",
                new.scope, new.slug
            ),
            repository_bytes(&repo),
        )?;
        Ok(repo)
    }

    /// The metadata kinds of a snapshot of `source_provider` this provider can
    /// write back, in restore order. The call has no HTTP.
    pub fn restorable_kinds(
        &self,
        source_provider: &str,
    ) -> Result<Vec<RestoreKind>, ProviderError> {
        let conn = &self.conn;
        let kinds = self
            .provider
            .call(None, |g, s| g.restorable_kinds(s, conn, source_provider))??;
        let bytes = kinds.iter().map(|k| k.name.len()).sum();
        self.provider
            .check_returned("its restorable kinds", bytes)?;
        Ok(kinds)
    }

    /// Writes `docs` of `kind` into `repo`: one outcome per document. The call
    /// may write (as far as the gate allows) and read, with `files`, the blobs
    /// its documents name, and no other.
    pub fn restore_documents(
        &self,
        repo: &Repository,
        kind: &str,
        ctx: &RestoreContext,
        docs: &[RestoreDocument],
        files: Arc<dyn FileSource>,
    ) -> Result<Vec<RestoredDocument>, ProviderError> {
        let conn = &self.conn;
        let grant = FileGrant {
            source: files,
            blobs: docs
                .iter()
                .flat_map(|d| d.files.iter().map(|f| f.blob.clone()))
                .collect(),
        };
        let query = RestoreQuery {
            repo,
            kind,
            ctx,
            docs,
        };
        let outcomes = self.provider.call_with(
            Some(self.gate.clone()),
            Grants {
                files: Some(grant),
                ..Grants::writing()
            },
            |g, s| g.restore_documents(s, conn, &query),
        )??;
        let bytes = outcomes
            .iter()
            .map(|o| {
                o.id.len()
                    + match &o.outcome {
                        RestoreOutcome::Restored(t)
                        | RestoreOutcome::Skipped(t)
                        | RestoreOutcome::Failed(t) => t.len(),
                        RestoreOutcome::NeedsUser { id, what } => {
                            id.as_ref().map_or(0, String::len) + what.len()
                        }
                    }
            })
            .sum();
        self.provider.check_returned(
            &format!("its outcomes of restoring {kind} into {}", repo.full_name),
            bytes,
        )?;
        Ok(outcomes)
    }

    /// Registers a push webhook on `scope` posting to `url`, signed with
    /// `secret`. The provider sees only a placeholder; the host fills the secret
    /// into the request bodies of this call, which may write (as far as the
    /// gate allows).
    pub fn register_webhook(
        &self,
        scope: &str,
        url: &str,
        secret: secrecy::SecretString,
        description: &str,
    ) -> Result<WebhookRegistered, ProviderError> {
        let conn = &self.conn;
        let fill = SecretFill::new(secret);
        let hook = WebhookRequest {
            url: url.to_string(),
            secret_placeholder: fill.placeholder.clone(),
            description: description.to_string(),
        };
        let grants = Grants {
            secret: Some(fill),
            ..Grants::writing()
        };
        let registered = self
            .provider
            .call_with(Some(self.gate.clone()), grants, |g, s| {
                g.register_webhook(s, conn, scope, &hook)
            })??;
        self.provider.check_returned(
            &format!("its answer for the webhook on {scope}"),
            registered.target.len() + registered.id.len(),
        )?;
        Ok(registered)
    }
}

/// The text a repository record holds (for [`MAX_RETURN_BYTES`]).
fn repository_bytes(r: &Repository) -> usize {
    let opt = |o: &Option<String>| o.as_ref().map_or(0, String::len);
    r.id.len()
        + r.full_name.len()
        + r.slug.len()
        + r.scope.len()
        + r.clone_url.len()
        + opt(&r.main_branch)
        + opt(&r.updated)
        + opt(&r.fork_parent)
}

/// The text a page of documents holds (for [`MAX_RETURN_BYTES`]).
fn document_page_bytes(page: &DocumentPage) -> usize {
    let opt = |o: &Option<String>| o.as_ref().map_or(0, String::len);
    page.documents
        .iter()
        .map(|d| {
            d.kind.len()
                + d.id.len()
                + opt(&d.updated_on)
                + d.json.len()
                + d.files
                    .iter()
                    .map(|f| f.name.len() + f.url.len())
                    .sum::<usize>()
        })
        .sum::<usize>()
        + opt(&page.next)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every world directory `wit/v<major.minor>/` with the package version its
    /// `provider.wit` declares, oldest first.
    fn world_directories() -> Vec<(String, String)> {
        let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("wit");
        let mut out: Vec<(String, String)> = std::fs::read_dir(&wit)
            .expect("wit/ is readable")
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| {
                let dir = e.file_name().to_string_lossy().into_owned();
                let text = std::fs::read_to_string(e.path().join("provider.wit"))
                    .unwrap_or_else(|err| panic!("wit/{dir}/provider.wit: {err}"));
                let version = text
                    .lines()
                    .find_map(|l| l.strip_prefix("package reposafe:provider@"))
                    .and_then(|l| l.strip_suffix(';'))
                    .unwrap_or_else(|| panic!("wit/{dir} declares no package version"))
                    .to_string();
                assert!(
                    version.starts_with(&format!("{}.", dir.trim_start_matches('v'))),
                    "wit/{dir} declares {version}"
                );
                (dir, version)
            })
            .collect();
        out.sort_by_key(|(_, v)| {
            v.split('.')
                .map(|n| n.parse::<u64>().unwrap_or(u64::MAX))
                .collect::<Vec<_>>()
        });
        out
    }

    #[test]
    fn every_world_directory_has_a_version_module_newest_first() {
        let hosted: Vec<&str> = VERSIONS.iter().map(|v| v.version).collect();
        let worlds = world_directories();
        let declared: Vec<&str> = worlds.iter().rev().map(|(_, v)| v.as_str()).collect();
        assert_eq!(hosted, declared, "directories: {worlds:?}");
        assert_eq!(supported_versions(), "0.5.0, 0.4.0, 0.3.0, 0.2.0, 0.1.0");
    }

    #[test]
    fn a_webhook_secret_is_filled_in_on_the_way_out_and_masked_on_the_way_back() {
        let fill = SecretFill::new(secrecy::SecretString::from("s3cr3t-hex".to_string()));
        let body = format!(r#"{{"url":"u","secret":"{}"}}"#, fill.placeholder);
        let req = Request {
            method: "POST".into(),
            url: "https://api.example/hooks".into(),
            headers: Vec::new(),
            body: Some(body.into_bytes()),
        };
        let sent = fill.fill(&req).expect("the body holds the placeholder");
        assert_eq!(
            sent.body.as_deref(),
            Some(&br#"{"url":"u","secret":"s3cr3t-hex"}"#[..])
        );
        assert_eq!(sent.url, req.url);
        let plain = Request {
            body: Some(b"{}".to_vec()),
            ..req.clone()
        };
        assert!(fill.fill(&plain).is_none(), "nothing to fill");
        let mut echoed = Response {
            status: 201,
            headers: Vec::new(),
            body: br#"{"secret":"s3cr3t-hex","again":"s3cr3t-hex"}"#.to_vec(),
        };
        fill.mask(&mut echoed);
        let text = String::from_utf8(echoed.body).expect("utf-8");
        assert!(!text.contains("s3cr3t-hex"), "{text}");
        assert_eq!(text.matches(&fill.placeholder).count(), 2);
        assert_ne!(
            fill.placeholder,
            SecretFill::new(secrecy::SecretString::from("x".to_string())).placeholder,
            "each call gets its own placeholder"
        );
    }

    #[test]
    fn a_component_without_the_provider_interface_is_refused_naming_the_versions() {
        let engine = engine().expect("engine");
        // The empty component: a valid component exporting nothing.
        let component =
            Component::new(&engine, b"\0asm\x0d\0\x01\0").expect("the empty component compiles");
        let err = link(&engine, &component)
            .err()
            .expect("a component without the provider interface is refused");
        assert_eq!(
            err,
            "it exports no reposafe:provider/provider interface (its exports: none); \
             supported versions: 0.5.0, 0.4.0, 0.3.0, 0.2.0, 0.1.0"
        );
    }
}
