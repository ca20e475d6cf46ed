//! Loading provider components with wasmtime and calling them under limits.

use super::http::{GateError, HttpGate, Request};
use super::{
    cache, AuthScheme, CredentialSupport, ProviderError, ProviderInfo, Repository, Scope, Setting,
};
use crate::vault::CredentialKind;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};

wasmtime::component::bindgen!({
    path: "wit",
    world: "provider-plugin",
});

use self::exports::reposafe::provider::provider as guest;
use self::reposafe::provider::{http as wit_http, log as wit_log, types as wit};

/// The built-in providers, embedded at build time from `plugins/dist/`.
const BUILTIN: &[(&str, &[u8])] = &[
    (
        "bitbucket-cloud",
        include_bytes!("../../plugins/dist/bitbucket-cloud.wasm"),
    ),
    (
        "bitbucket-dc",
        include_bytes!("../../plugins/dist/bitbucket-dc.wasm"),
    ),
];

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

/// The store data of one provider call.
struct PluginState {
    provider: String,
    gate: Option<Arc<HttpGate>>,
    limits: StoreLimits,
}

impl wit::Host for PluginState {}

impl wit_http::Host for PluginState {
    fn send(&mut self, req: wit_http::Request) -> Result<wit_http::Response, wit_http::HttpError> {
        let Some(gate) = &self.gate else {
            return Err(wit_http::HttpError::Denied(
                "HTTP is not available in this call".into(),
            ));
        };
        let r = Request {
            method: req.method,
            url: req.url,
            headers: req.headers,
            body: req.body,
        };
        match gate.send(&r) {
            Ok(resp) => Ok(wit_http::Response {
                status: resp.status,
                headers: resp.headers,
                body: resp.body,
            }),
            Err(GateError::Denied(m)) => {
                tracing::warn!(provider = %self.provider, "denied plugin request: {m}");
                Err(wit_http::HttpError::Denied(m))
            }
            Err(GateError::Timeout(m)) => Err(wit_http::HttpError::Timeout(m)),
            Err(GateError::Transport(m)) => Err(wit_http::HttpError::Transport(m)),
            Err(GateError::TooLarge(m)) => Err(wit_http::HttpError::TooLarge(m)),
        }
    }
}

impl wit_log::Host for PluginState {
    fn log(&mut self, level: wit_log::Level, message: String) {
        let p = &self.provider;
        // Plugins see no secrets, but cap what they can push into our log.
        let message: String = message.chars().take(2000).collect();
        match level {
            wit_log::Level::Trace => tracing::trace!(provider = %p, "{message}"),
            wit_log::Level::Debug => tracing::debug!(provider = %p, "{message}"),
            wit_log::Level::Info => tracing::info!(provider = %p, "{message}"),
            wit_log::Level::Warn => tracing::warn!(provider = %p, "{message}"),
            wit_log::Level::Error => tracing::error!(provider = %p, "{message}"),
        }
    }
}

fn kind_to_wit(k: CredentialKind) -> wit::CredentialKind {
    match k {
        CredentialKind::ApiToken => wit::CredentialKind::ApiToken,
        CredentialKind::AccessToken => wit::CredentialKind::AccessToken,
        CredentialKind::OauthConsumer => wit::CredentialKind::OauthConsumer,
        CredentialKind::AppPassword => wit::CredentialKind::AppPassword,
        CredentialKind::HttpAccessToken => wit::CredentialKind::HttpAccessToken,
        CredentialKind::Basic => wit::CredentialKind::Basic,
    }
}

fn kind_from_wit(k: wit::CredentialKind) -> CredentialKind {
    match k {
        wit::CredentialKind::ApiToken => CredentialKind::ApiToken,
        wit::CredentialKind::AccessToken => CredentialKind::AccessToken,
        wit::CredentialKind::OauthConsumer => CredentialKind::OauthConsumer,
        wit::CredentialKind::AppPassword => CredentialKind::AppPassword,
        wit::CredentialKind::HttpAccessToken => CredentialKind::HttpAccessToken,
        wit::CredentialKind::Basic => CredentialKind::Basic,
    }
}

fn scheme_from_wit(s: wit::AuthScheme) -> AuthScheme {
    match s {
        wit::AuthScheme::BasicIdentity => AuthScheme::BasicIdentity,
        wit::AuthScheme::BasicFixedUser(u) => AuthScheme::BasicFixedUser(u),
        wit::AuthScheme::Bearer => AuthScheme::Bearer,
    }
}

fn error_from_wit(e: wit::ProviderError) -> ProviderError {
    match e {
        wit::ProviderError::Unauthorized(m) => ProviderError::Unauthorized(m),
        wit::ProviderError::Forbidden(m) => ProviderError::Forbidden(m),
        wit::ProviderError::NotFound(m) => ProviderError::NotFound(m),
        wit::ProviderError::RateLimited(m) => ProviderError::RateLimited(m),
        wit::ProviderError::Gone(m) => ProviderError::Gone(m),
        wit::ProviderError::Http(m) => ProviderError::Http(m),
        wit::ProviderError::InvalidResponse(m) => ProviderError::InvalidResponse(m),
        wit::ProviderError::InvalidSettings(m) => ProviderError::InvalidSettings(m),
    }
}

/// One loaded provider component.
pub struct LoadedProvider {
    info: ProviderInfo,
    pre: ProviderPluginPre<PluginState>,
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
    /// Loads the built-in providers and every `*.wasm` in `plugins_dir` (if given).
    /// Compiled components are cached in `cache_dir` (if given). A plugin that fails
    /// to load is recorded in `load_errors`; a plugin with the id of a built-in
    /// replaces it (so users can update a provider without a new release).
    pub fn load(
        plugins_dir: Option<&Path>,
        cache_dir: Option<&Path>,
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
            match LoadedProvider::load(&engine, bytes, "built-in", cache_dir) {
                Ok(p) => reg.insert(p),
                Err(e) => reg.load_errors.push(ProviderError::Load {
                    origin: format!("built-in {name}"),
                    reason: e.to_string(),
                }),
            }
        }
        if let Some(dir) = plugins_dir {
            let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
                Ok(rd) => rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("wasm"))
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => {
                    reg.load_errors.push(ProviderError::Load {
                        origin: dir.display().to_string(),
                        reason: e.to_string(),
                    });
                    Vec::new()
                }
            };
            files.sort();
            for f in files {
                let origin = f.display().to_string();
                let loaded = std::fs::read(&f)
                    .map_err(|e| ProviderError::Load {
                        origin: origin.clone(),
                        reason: e.to_string(),
                    })
                    .and_then(|bytes| LoadedProvider::load(&engine, &bytes, &origin, cache_dir));
                match loaded {
                    Ok(p) => reg.insert(p),
                    Err(e) => {
                        tracing::warn!("{e}");
                        reg.load_errors.push(e)
                    }
                }
            }
        }
        Ok(reg)
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
        let mut linker: Linker<PluginState> = Linker::new(engine);
        ProviderPlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| load_err(e.to_string()))?;
        let instance_pre = linker.instantiate_pre(&component).map_err(|e| {
            load_err(format!(
                "it does not implement the reposafe:provider@0.2.0 world this reposafe hosts \
                 (only http.send and log.log are available to plugins): {e:#}"
            ))
        })?;
        let pre = ProviderPluginPre::new(instance_pre).map_err(|e| {
            load_err(format!(
                "it does not export reposafe:provider/provider@0.2.0: {e:#}"
            ))
        })?;
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
            .call(None, |g, store| g.call_info(store))
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
            id: info.id,
            display_name: info.display_name,
            version: info.version,
            credential_kinds: info
                .credential_kinds
                .into_iter()
                .map(|c| CredentialSupport {
                    kind: kind_from_wit(c.kind),
                    api: scheme_from_wit(c.api),
                    git: scheme_from_wit(c.git),
                    deprecated: c.deprecated,
                })
                .collect(),
            settings: info
                .settings
                .into_iter()
                .map(|s| Setting {
                    name: s.name,
                    description: s.description,
                    required: s.required,
                    default_value: s.default_value,
                    is_url: s.is_url,
                })
                .collect(),
            origin: origin.to_string(),
        };
        Ok(p)
    }

    pub fn info(&self) -> &ProviderInfo {
        &self.info
    }

    /// Runs one export in a fresh store with limits. Traps, fuel exhaustion, deadline
    /// and memory limits become `ProviderError::Plugin`.
    fn call<T>(
        &self,
        gate: Option<Arc<HttpGate>>,
        f: impl FnOnce(&guest::Guest, &mut Store<PluginState>) -> wasmtime::Result<T>,
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
        let g = instance.reposafe_provider_provider();
        f(g, &mut store).map_err(|e| {
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

    /// A session for one connection: settings resolved, credential applied by `gate`.
    pub fn session(
        &self,
        settings: &BTreeMap<String, String>,
        kind: CredentialKind,
        gate: Arc<HttpGate>,
    ) -> ProviderSession<'_> {
        ProviderSession {
            provider: self,
            conn: wit::Connection {
                settings: settings
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                credential_kind: kind_to_wit(kind),
            },
            gate,
        }
    }

    /// The OAuth token URL for a connection's settings, if the provider has one.
    pub fn oauth_token_url(
        &self,
        settings: &BTreeMap<String, String>,
        kind: CredentialKind,
    ) -> Result<Option<String>, ProviderError> {
        let conn = wit::Connection {
            settings: settings
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            credential_kind: kind_to_wit(kind),
        };
        self.call(None, |g, s| g.call_oauth_token_url(s, &conn))
    }
}

/// Calls into one provider for one connection.
pub struct ProviderSession<'a> {
    provider: &'a LoadedProvider,
    conn: wit::Connection,
    gate: Arc<HttpGate>,
}

fn to_repo(r: wit::Repository) -> Repository {
    Repository {
        id: r.id,
        full_name: r.full_name,
        slug: r.slug,
        scope: r.scope,
        clone_url: r.clone_url,
        is_private: r.is_private,
        main_branch: r.main_branch,
        size: r.size,
        updated: r.updated,
        has_wiki: r.has_wiki,
        has_lfs: r.has_lfs,
        fork_parent: r.fork_parent,
    }
}

impl ProviderSession<'_> {
    pub fn gate(&self) -> &Arc<HttpGate> {
        &self.gate
    }

    /// The scopes the credential can see (or the one named in the settings).
    pub fn list_scopes(&self) -> Result<Vec<Scope>, ProviderError> {
        let conn = &self.conn;
        self.provider
            .call(Some(self.gate.clone()), |g, s| g.call_list_scopes(s, conn))?
            .map_err(error_from_wit)
            .map(|v| {
                v.into_iter()
                    .map(|s| Scope {
                        key: s.key,
                        name: s.name,
                        kind: s.kind,
                    })
                    .collect()
            })
    }

    /// Checks the credential works: lists the scopes and the first page of
    /// repositories of each (a named scope alone makes no request). Returns the scopes.
    pub fn verify(&self) -> Result<Vec<Scope>, ProviderError> {
        let scopes = self.list_scopes()?;
        for scope in &scopes {
            let conn = &self.conn;
            self.provider
                .call(Some(self.gate.clone()), |g, s| {
                    g.call_list_repositories(s, conn, &scope.key, None)
                })?
                .map_err(error_from_wit)?;
        }
        Ok(scopes)
    }

    /// Checks the credential can list one scope: the first page of its repositories.
    pub fn verify_scope(&self, scope: &str) -> Result<(), ProviderError> {
        let conn = &self.conn;
        self.provider
            .call(Some(self.gate.clone()), |g, s| {
                g.call_list_repositories(s, conn, scope, None)
            })?
            .map_err(error_from_wit)?;
        Ok(())
    }

    /// The account the credential acts as, if the provider can tell.
    pub fn principal(&self) -> Result<Option<String>, ProviderError> {
        let conn = &self.conn;
        self.provider
            .call(Some(self.gate.clone()), |g, s| g.call_principal(s, conn))?
            .map_err(error_from_wit)
    }

    /// Every repository of a scope, following the provider's pages.
    pub fn list_repositories(&self, scope: &str) -> Result<Vec<Repository>, ProviderError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..MAX_PAGES {
            let conn = &self.conn;
            let c = cursor.clone();
            let page = self
                .provider
                .call(Some(self.gate.clone()), |g, s| {
                    g.call_list_repositories(s, conn, scope, c.as_deref())
                })?
                .map_err(error_from_wit)?;
            out.extend(page.repositories.into_iter().map(to_repo));
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
}
