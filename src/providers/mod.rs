//! The provider host: loads provider WebAssembly components (built-in ones embedded
//! in the binary and `*.wasm` files from the data dir's `plugins/` folder) and runs
//! their calls under limits.
//!
//! Each call gets a fresh store (instantiated from a pre-linked `InstancePre`, so a
//! trap never poisons later calls) with a memory cap, a fuel budget (a looping
//! plugin is stopped) and an epoch deadline (wall-clock backstop). Plugins get
//! exactly two capabilities: `http.send`, performed by [`http::HttpGate`] which adds
//! the credential and enforces the host allow-list, and `log.log`.

pub mod auth;
mod cache;
pub mod failover;
pub mod http;
pub mod pool;
mod wasm;

pub use auth::{AuthScheme, Authenticator};
pub use http::{HttpGate, RetryPolicy};
pub use pool::{CredentialPool, CredentialStats, PoolCredential, RateBudget};
pub use wasm::{LoadedProvider, ProviderRegistry, ProviderSession};

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

impl ProviderInfo {
    /// The support entry for a credential kind, or an error naming the kinds accepted.
    pub fn support_for(&self, kind: CredentialKind) -> Result<&CredentialSupport, ProviderError> {
        self.credential_kinds
            .iter()
            .find(|c| c.kind == kind)
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
            let value = given
                .get(&s.name)
                .filter(|v| !v.trim().is_empty())
                .cloned()
                .or_else(|| s.default_value.clone());
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

    /// The allow-list of origins derived from the URL settings.
    pub fn allowed_origins(&self, settings: &BTreeMap<String, String>) -> Vec<url::Origin> {
        self.settings
            .iter()
            .filter(|s| s.is_url)
            .filter_map(|s| settings.get(&s.name))
            .filter_map(|v| url::Url::parse(v).ok())
            .map(|u| u.origin())
            .collect()
    }
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
}
