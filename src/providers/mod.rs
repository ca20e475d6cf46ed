//! The provider host: loads provider WebAssembly components (built-in ones embedded
//! in the binary and `*.wasm` files from the data dir's `plugins/` folder) and runs
//! their calls under limits.
//!
//! Each call gets a fresh store (instantiated from a pre-linked `InstancePre`, so a
//! trap never poisons later calls) with a memory cap, a fuel budget (a looping
//! plugin is stopped) and an epoch deadline (wall-clock backstop). Plugins get
//! three capabilities: `http.send`, performed by [`http::HttpGate`] which adds
//! the credential and enforces the host allow-list, `log.log`, and (world 0.4.0,
//! inside `restore-documents` only) `files.read` of the stored files of the
//! documents being restored. Every call may only read (GET, HEAD) except
//! `create-repository` and `restore-documents`, and those write only through a
//! gate built with [`HttpGate::allowing_writes`].

pub mod auth;
mod cache;
pub mod failover;
pub mod http;
mod pacer;
pub mod pool;
mod wasm;

pub use auth::{AuthScheme, Authenticator};
pub use http::{HttpGate, RetryPolicy};
pub use pool::{CredentialPool, CredentialStats, PoolCredential, RateBudget};
pub use wasm::{LoadedProvider, ProviderRegistry, ProviderSession, MAX_FILE_READ, OVERRIDE_ENV};

use crate::vault::CredentialKind;
use std::collections::BTreeMap;

/// What a provider is and what it accepts (host-side copy of the WIT record).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ProviderInfo {
    pub id: String,
    pub display_name: String,
    pub version: String,
    pub credential_kinds: Vec<CredentialSupport>,
    pub settings: Vec<Setting>,
    /// Where the provider came from: `built-in` or the plugin file path.
    pub origin: String,
}

/// One setting a connection needs.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Setting {
    pub name: String,
    pub description: String,
    pub required: bool,
    pub default_value: Option<String>,
    pub is_url: bool,
}

/// How one credential kind is applied.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CredentialSupport {
    pub kind: CredentialKind,
    pub api: AuthScheme,
    pub git: AuthScheme,
    pub deprecated: Option<String>,
}

/// A scope (workspace, project) as listed by a provider.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Scope {
    pub key: String,
    pub name: String,
    pub kind: String,
}

/// A repository as listed by a provider.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Repository {
    pub id: String,
    pub full_name: String,
    pub slug: String,
    pub scope: String,
    pub clone_url: String,
    pub is_private: bool,
    pub main_branch: Option<String>,
    pub size: Option<u64>,
    pub updated: Option<String>,
    pub has_wiki: bool,
    pub has_lfs: bool,
    pub fork_parent: Option<String>,
}

/// What a repository holds besides its git repository (WIT 0.3.0 `repository-parts`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RepositoryParts {
    /// Extra git repositories, e.g. the wiki.
    pub git: Vec<GitPartSource>,
    /// The Git LFS server (`<clone url>/info/lfs`), `None` when the repository cannot have LFS.
    pub lfs_url: Option<String>,
    /// The metadata kinds, each listed with [`ProviderSession::list_documents`].
    pub metadata: Vec<MetadataKind>,
}

/// An extra git repository of a repository (WIT 0.3.0 `git-part`): `("wiki", "<clone url>/wiki")`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GitPartSource {
    pub name: String,
    pub url: String,
}

/// A metadata kind of a repository or scope (WIT 0.3.0 `metadata-kind`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MetadataKind {
    /// User-facing name, e.g. `pullrequests`.
    pub name: String,
    /// Honours `since` (items sorted by update time, only newer ones returned).
    pub incremental: bool,
}

/// A file the host downloads for a document (WIT 0.3.0 `file-ref`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileRef {
    pub name: String,
    pub url: String,
    pub size: Option<u64>,
}

/// One metadata item (WIT 0.3.0 `document`): `json` is the server's JSON with its
/// sub-lists embedded, never a secret.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Document {
    pub kind: String,
    pub id: String,
    /// RFC 3339.
    pub updated_on: Option<String>,
    pub json: String,
    pub files: Vec<FileRef>,
}

/// One page of documents (WIT 0.3.0 `document-page`); `next` is the opaque cursor.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DocumentPage {
    pub documents: Vec<Document>,
    pub next: Option<String>,
}

/// A repository to create in a provider (WIT 0.4.0 `new-repository`), from a
/// snapshot of a repository of this or another provider.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewRepository {
    /// Key of the scope to create it in (workspace slug, project key).
    pub scope: String,
    /// The new repository's slug (and name).
    pub slug: String,
    /// A project inside the scope (Bitbucket Cloud project key), if asked for.
    pub project: Option<String>,
    /// The id of the provider the snapshot was taken from: how to read `original`.
    pub source_provider: String,
    /// The repository as its provider listed it at backup time.
    pub source: Repository,
    /// The snapshot's `repository` document (JSON text), when it has one.
    pub original: Option<String>,
}

/// A push webhook to register (WIT 0.5.0 `webhook-request`). The secret is not
/// in it: the provider writes `secret_placeholder` where the secret goes and the
/// host fills it in on the way out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookRequest {
    /// Where the server is to post its push events.
    pub url: String,
    pub secret_placeholder: String,
    /// The name shown in the server's webhook list.
    pub description: String,
}

/// A webhook a provider registered (WIT 0.5.0 `webhook-registered`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WebhookRegistered {
    /// Where, in words: `workspace acme`, `project PRJ`.
    pub target: String,
    /// The server's id of the webhook.
    pub id: String,
    /// An existing webhook with the same URL was updated instead of a new one made.
    pub updated: bool,
}

/// A metadata kind a provider can write back (WIT 0.4.0 `restore-kind`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RestoreKind {
    /// The kind's name in snapshots of the source provider, e.g. `pullrequests`.
    pub name: String,
    /// Every document of the kind goes in one call (an import replacing the
    /// whole kind); otherwise the host sends batches of at most 20.
    pub whole: bool,
}

/// A stored file of a document being restored (WIT 0.4.0 `restore-file`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RestoreFile {
    /// The file's name as it was backed up.
    pub name: String,
    /// The host's handle of the stored content, read with [`FileSource::read`].
    pub blob: String,
    pub size: u64,
}

/// One backed-up document to write back (WIT 0.4.0 `restore-document`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RestoreDocument {
    /// Its id in the snapshot.
    pub id: String,
    pub updated_on: Option<String>,
    /// The document as backed up (the source provider's JSON).
    pub json: String,
    pub files: Vec<RestoreFile>,
}

/// What a provider is told about the restore of one repository (WIT 0.4.0 `restore-context`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RestoreContext {
    pub source_provider: String,
    /// The snapshot's `scope/slug`.
    pub source_full_name: String,
    /// When the snapshot was taken (RFC 3339).
    pub snapshot_taken_at: String,
    /// Refs pushed under another name: (name in the snapshot, name pushed).
    pub renamed_refs: Vec<(String, String)>,
}

/// How one document was written back (WIT 0.4.0 `restore-outcome`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreOutcome {
    /// Written; its id on the server now.
    Restored(String),
    /// Written (or not creatable without it), but the user must finish it: what to do.
    NeedsUser { id: Option<String>, what: String },
    /// Deliberately not written, and why.
    Skipped(String),
    /// The server refused it: its answer.
    Failed(String),
}

/// The outcome for one [`RestoreDocument`], by its snapshot id (WIT 0.4.0 `restored-document`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RestoredDocument {
    pub id: String,
    pub outcome: RestoreOutcome,
}

/// The `files` import of world 0.4.0: the content of a stored blob. The host
/// calls it only for blobs named in the documents of the running
/// `restore-documents` call, with `length` at most [`MAX_FILE_READ`].
pub trait FileSource: Send + Sync {
    /// Up to `length` bytes of `blob` from `offset` (fewer, possibly none, at its
    /// end); the error says why it cannot be read.
    fn read(&self, blob: &str, offset: u64, length: u32) -> Result<Vec<u8>, String>;
}

impl ProviderInfo {
    /// The support entry for a credential kind, or an error naming the kinds accepted.
    pub fn support_for(&self, kind: CredentialKind) -> Result<&CredentialSupport, ProviderError> {
        self.credential_kinds
            .iter()
            .find(|c| c.kind == kind.provider_kind())
            .ok_or_else(|| ProviderError::UnsupportedCredential {
                provider: self.id.clone(),
                kind,
                accepted: self
                    .credential_kinds
                    .iter()
                    .map(|c| c.kind.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Fills defaults and checks required and URL settings; unknown names are refused.
    pub fn resolve_settings(
        &self,
        given: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, ProviderError> {
        for name in given.keys() {
            if !self.settings.iter().any(|s| &s.name == name) {
                return Err(ProviderError::InvalidSettings(format!(
                    "provider {} has no setting {name:?}; its settings are: {}",
                    self.id,
                    self.settings
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        let mut out = BTreeMap::new();
        for s in &self.settings {
            let explicit = given.get(&s.name).filter(|v| !v.trim().is_empty());
            if explicit.is_none() && s.is_url && s.default_value.is_some() && !self.is_builtin() {
                // A plugin's default would choose where the credential goes.
                return Err(ProviderError::InvalidSettings(format!(
                    "provider {} ({}) has a default for its URL setting {:?}, and a plugin's \
                     default is never trusted with the credential: set it explicitly with \
                     --set {}=URL",
                    self.id, self.origin, s.name, s.name
                )));
            }
            let value = explicit.cloned().or_else(|| s.default_value.clone());
            match value {
                Some(v) => {
                    if s.is_url {
                        let u = url::Url::parse(&v).map_err(|e| {
                            ProviderError::InvalidSettings(format!(
                                "setting {} = {v:?} is not a URL: {e}",
                                s.name
                            ))
                        })?;
                        if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
                            return Err(ProviderError::InvalidSettings(format!(
                                "setting {} = {v:?} must be an http(s) URL with a host",
                                s.name
                            )));
                        }
                        if !u.username().is_empty() || u.password().is_some() {
                            return Err(ProviderError::InvalidSettings(format!(
                                "setting {} must not contain a user name or password; give credentials separately",
                                s.name
                            )));
                        }
                    }
                    out.insert(s.name.clone(), v);
                }
                None if s.required => {
                    return Err(ProviderError::InvalidSettings(format!(
                        "provider {} needs the setting {:?} ({})",
                        self.id, s.name, s.description
                    )))
                }
                None => {}
            }
        }
        Ok(out)
    }

    /// Whether the provider is embedded in the binary (not a file of `plugins/`).
    pub fn is_builtin(&self) -> bool {
        self.origin == BUILTIN_ORIGIN
    }

    /// The origins a new connection's credential may be sent to, fixed when it is
    /// added: those of the URL settings the user set explicitly (`given`) and, for a
    /// built-in provider, of its defaults (`settings` are the resolved ones). A
    /// plugin's default never widens them (and [`resolve_settings`](Self::resolve_settings)
    /// refuses an unset plugin URL setting with a default).
    pub fn credential_origins(
        &self,
        given: &BTreeMap<String, String>,
        settings: &BTreeMap<String, String>,
    ) -> Vec<String> {
        self.origins_where(settings, |s, _| {
            self.is_builtin() || given.get(&s.name).is_some_and(|v| !v.trim().is_empty())
        })
    }

    /// The origins of a connection stored before they were fixed at `connection
    /// add`, derived from its stored settings: every URL setting of a built-in
    /// provider, and of a plugin only the values that are not the plugin's own
    /// default (a value equal to it cannot be told apart from one it chose).
    pub fn allowed_origins(&self, settings: &BTreeMap<String, String>) -> Vec<String> {
        self.origins_where(settings, |s, v| {
            self.is_builtin() || s.default_value.as_deref() != Some(v)
        })
    }

    fn origins_where(
        &self,
        settings: &BTreeMap<String, String>,
        keep: impl Fn(&Setting, &str) -> bool,
    ) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in self.settings.iter().filter(|s| s.is_url) {
            let Some(v) = settings.get(&s.name) else {
                continue;
            };
            if !keep(s, v) {
                continue;
            }
            if let Ok(u) = url::Url::parse(v) {
                let origin = u.origin().ascii_serialization();
                if u.origin().is_tuple() && !out.contains(&origin) {
                    out.push(origin);
                }
            }
        }
        out
    }
}

/// The [`ProviderInfo::origin`] of a provider embedded in the binary.
pub const BUILTIN_ORIGIN: &str = "built-in";

/// Parses stored origins (`https://host[:port]`) for an [`HttpGate`]; unreadable
/// ones are left out (they allow nothing).
pub fn parse_origins(origins: &[String]) -> Vec<url::Origin> {
    origins
        .iter()
        .filter_map(|o| url::Url::parse(o).ok())
        .map(|u| u.origin())
        .filter(|o| o.is_tuple())
        .collect()
}

/// What can go wrong talking to a provider. Never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("provider plugin {origin} cannot be loaded: {reason}")]
    Load { origin: String, reason: String },
    #[error("no provider with id {0:?} is installed (see `reposafe providers`)")]
    UnknownProvider(String),
    #[error("provider {provider} failed: {reason}")]
    Plugin { provider: String, reason: String },
    #[error("provider {provider} does not accept {kind} credentials; it accepts: {accepted}")]
    UnsupportedCredential {
        provider: String,
        kind: CredentialKind,
        accepted: String,
    },
    #[error("invalid connection settings: {0}")]
    InvalidSettings(String),
    #[error("credential refused by the server: {0}")]
    Unauthorized(String),
    #[error("permission denied by the server: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("rate limited by the server: {0}")]
    RateLimited(String),
    #[error("the server retired this endpoint (410 Gone): {0}")]
    Gone(String),
    #[error("HTTP error: {0}")]
    Http(String),
    #[error("the server answered something the provider could not read: {0}")]
    InvalidResponse(String),
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error(
        "provider {provider} is built for reposafe:provider@{version}, which has no {what} \
         ({added} added it)"
    )]
    Unsupported {
        provider: String,
        version: String,
        what: String,
        /// The world version that added it, e.g. `0.4.0`.
        added: String,
    },
    #[error("already exists or conflicts with what is there: {0}")]
    Conflict(String),
}
