//! The engine: backup and restore jobs as plain functions over a [`Context`]
//! (the data dir's state, vault, archive and providers). It is the only module
//! that wires the others together; the CLI (and later the API) call it.
//!
//! Backup of a connection: list scopes and repositories through the provider,
//! then for each repository (in parallel) fetch into its bare mirror, store every
//! pack not yet archived, and write a snapshot manifest when its refs changed.
//! Restore: pick a snapshot by id or time and rebuild a bare repository from its
//! packs and refs.

pub mod backup;
mod connections;
pub mod credentials;
pub mod daemon;
pub mod jobs;
mod listing;
pub mod plans;
mod restore;

pub use backup::{
    backup_connection, BackupOptions, BackupReport, RepoOutcome, RepoResult, Selected,
};
pub use connections::{
    add_connection, add_project_credential, project_credentials, remove_connection,
    remove_project_credential, set_connection_tls, test_connection, NewConnection,
};
pub use jobs::{Jobs, RunnerConfig};
pub use restore::{find_repository, restore, snapshots_of, RestoreReport, SnapshotChoice};

use crate::archive::{Archive, ArchiveError};
use crate::git::GitError;
use crate::providers::{ProviderError, ProviderRegistry, RetryPolicy};
use crate::state::{State, StateError};
use crate::vault::{Vault, VaultError};
use std::path::{Path, PathBuf};

/// Everything a job needs from one data dir.
pub struct Context {
    pub data_dir: PathBuf,
    pub state: State,
    pub vault: Vault,
    pub archive: Archive,
    pub providers: ProviderRegistry,
    pub retry: RetryPolicy,
}

impl Context {
    /// Opens (creating when absent) a data dir: `state.redb`, `vault.key`,
    /// `archive/`, `mirrors/`, `plugins/` and `cache/`.
    pub fn open(data_dir: &Path) -> Result<Context, EngineError> {
        let created = !data_dir.exists();
        std::fs::create_dir_all(data_dir).map_err(|e| EngineError::DataDir {
            path: data_dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        // A data dir we create holds secrets' key and backups: owner only. An existing
        // directory chosen by the user keeps its permissions.
        #[cfg(unix)]
        if created {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700));
        }
        let state = State::open(data_dir)?;
        let vault = Vault::open(data_dir)?;
        let archive = Archive::open_or_create(&data_dir.join("archive"))?;
        // `REPOSAFE_COMPONENT_CACHE` shares one compiled-component cache between data
        // dirs (the test suite uses it so each provider is compiled once per run).
        let component_cache = std::env::var_os("REPOSAFE_COMPONENT_CACHE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.join("cache").join("components"));
        let providers =
            ProviderRegistry::load(Some(&data_dir.join("plugins")), Some(&component_cache))?;
        for e in &providers.load_errors {
            tracing::warn!("{e}");
        }
        Ok(Context {
            data_dir: data_dir.to_path_buf(),
            state,
            vault,
            archive,
            providers,
            retry: RetryPolicy::from_env(),
        })
    }

    /// Where a repository's bare mirror lives.
    pub fn mirror_dir(&self, repo: &crate::archive::RepoIdentity) -> PathBuf {
        self.data_dir
            .join("mirrors")
            .join(format!("{}.git", repo.dir_name()))
    }
}

/// What can go wrong in a job. Messages name the thing that is wrong and never
/// contain a secret.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("data dir {path}: {reason}")]
    DataDir { path: PathBuf, reason: String },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("connection {connection}: {reason}")]
    Connection { connection: String, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Ambiguous(String),
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A request field is wrong; the API answers 400 naming it.
    #[error("field `{field}`: {message}")]
    Field { field: String, message: String },
    /// The request conflicts with the current state (e.g. cancelling a finished job).
    #[error("{0}")]
    Conflict(String),
}
