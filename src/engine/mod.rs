//! The engine: every user operation, written once. [`Service`] is the command
//! surface (typed requests and reports; [`LocalService`] runs it in this process,
//! the CLI's remote client runs it through the daemon's API); below it, backup and
//! restore jobs are plain functions over a [`Context`] (the data dir's state, vault,
//! archive and providers), whose fields only the engine sees. It is the only module
//! that wires the others together; `cli`, `api` and `dashboard` call it.
//!
//! Backup of a connection: list scopes and repositories through the provider,
//! then for each repository (in parallel) fetch into its bare mirror, store every
//! pack not yet archived, and write a snapshot manifest when its refs changed.
//! Restore: pick a snapshot by id or time and rebuild a bare repository from its
//! packs and refs (with its LFS objects, and its wiki beside it); `show` reads a
//! snapshot's parts and documents back, `export` writes all of it out as plain files.

mod archive_attach;
pub mod archive_copy;
mod archive_gate;
pub mod archive_keys;
mod archive_lease;
pub mod archive_location;
pub mod audit;
pub mod backup;
mod backup_git;
mod backup_lfs;
mod backup_metadata;
mod check;
mod check_reach;
mod connections;
pub mod credentials;
pub mod daemon;
mod data_dir;
mod disk_space;
pub mod export;
mod forget;
pub mod hooks;
mod job_reports;
pub mod jobs;
mod listing;
mod local;
pub mod notifications;
pub mod oauth;
pub mod overview;
pub mod plan_preview;
pub mod plans;
pub mod prune;
mod repo_lock;
mod restore;
pub mod restore_into;
pub mod retention;
pub mod s3_keys;
pub mod service;
pub mod show;
#[cfg(test)]
mod snapshot_fixture;

pub use backup::{
    backup_connection, BackupOptions, BackupReport, RepoOutcome, RepoResult, Selected,
};
pub use connections::{
    add_connection, add_project_credential, project_credentials, remove_connection,
    remove_project_credential, set_connection_tls, test_connection, KindAccess, NewConnection,
};
pub use job_reports::{
    backup_report_from_jobs, follow_job, restored_from_job, restored_into_from_job,
};
pub use jobs::{Jobs, RunnerConfig};
pub use local::{backup_targets, provider_id, LocalService};
pub use restore::{
    find_repository, restore, snapshots_of, wiki_target, RestoreReport, SnapshotChoice,
    WikiRestored,
};
pub use service::{Observer, Quiet, Service};

/// The data types requests and reports carry, from the modules below the engine, for
/// the front-ends (which reach none of those modules themselves).
pub mod types {
    pub use crate::archive::{RepoIdentity, Snapshot};
    pub use crate::notify::NotificationSettings;
    pub use crate::providers::ProviderInfo;
    pub use crate::state::{
        Connection, ConnectionTls, Job, JobKind, JobProgress, JobRecordResult, JobState, Plan,
        PlanSpec, RepoRecord, RestoreTarget,
    };
    pub use crate::vault::{Credential, CredentialKind};
}

use crate::archive::{Archive, ArchiveError};
use crate::git::GitError;
use crate::providers::{ProviderError, ProviderRegistry, RetryPolicy};
use crate::state::{State, StateError};
use crate::vault::{Vault, VaultError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Everything a job needs from one data dir.
/// Its fields are the engine's own: front-ends go through [`Service`].
pub struct Context {
    data_dir: PathBuf,
    state: Arc<State>,
    vault: Arc<Vault>,
    /// The archive and its gate: see [`Context::archive`].
    archive: archive_attach::Attachment,
    providers: ProviderRegistry,
    retry: RetryPolicy,
    /// OAuth "Connect" flows waiting for their callback (issue 14, O).
    oauth: oauth::PendingFlows,
}

impl Context {
    /// Opens (creating when absent) a data dir: `state.redb`, `vault.key`,
    /// `archive/`, `mirrors/`, `plugins/` and `cache/`.
    pub fn open(data_dir: &Path) -> Result<Context, EngineError> {
        // Everything created from here on is owner-only, whatever the umask; an
        // existing directory chosen by the user keeps its modes, with a warning.
        data_dir::private_umask();
        let created = !data_dir.exists();
        std::fs::create_dir_all(data_dir).map_err(|e| EngineError::DataDir {
            path: data_dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        if !created {
            data_dir::warn_loose_modes(data_dir);
        }
        let state = Arc::new(State::open(data_dir)?);
        // Never a new key over sealed credentials, never the other mode's secret.
        let vault = Vault::open_checked(data_dir, &data_dir::sealed_credentials(&state)?)?;
        // An archive that does not open now is opened at its first use (see
        // `archive_attach`): the rest of the data dir works meanwhile.
        let archive = archive_attach::Attachment::open(data_dir, &vault);
        // Leftovers of a killed prune or check (their scratch repositories).
        for operation in ["prune", "check"] {
            let _ = std::fs::remove_dir_all(data_dir.join("tmp").join(operation));
        }
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
            vault: Arc::new(vault),
            archive,
            providers,
            retry: RetryPolicy::from_env(),
            oauth: oauth::PendingFlows::default(),
        })
    }

    /// This data dir over `archive` instead of its own (tests: an archive in memory
    /// that presents itself as shared with other appliances).
    #[cfg(test)]
    pub(crate) fn with_archive(mut self, archive: Archive) -> Context {
        self.archive = archive_attach::Attachment::to(archive, &self.data_dir).expect("gate");
        self
    }

    /// The archive, opened now if it was not (a failure names the reason, and is
    /// answered again without a new attempt for a while: see `archive_attach`).
    pub(crate) fn archive(&self) -> Result<&Archive, EngineError> {
        Ok(&self.archive.get(&self.data_dir, &self.vault)?.archive)
    }

    /// The gate every user of the archive passes (see [`Context::archive`]).
    pub(crate) fn gate(&self) -> Result<&archive_gate::ArchiveGate, EngineError> {
        Ok(&self.archive.get(&self.data_dir, &self.vault)?.gate)
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Removes the archive's in-flight files left by an interrupted process (the
    /// daemon at start: the data dir's lock says no other process writes). An archive
    /// that did not open has them removed when it opens, before its first use.
    pub fn clean_archive_tmp(&self) -> Result<usize, EngineError> {
        self.archive.clean_tmp()
    }

    /// Scratch space of an operation (`prune`, `check`) under `<data>/tmp/`: it holds
    /// only temporary directories, and whatever a killed process left there is removed
    /// when the data dir is next opened (one process has it at a time).
    pub(crate) fn scratch_dir(&self, operation: &str) -> PathBuf {
        self.data_dir.join("tmp").join(operation)
    }

    /// Where a repository's bare mirror lives.
    pub fn mirror_dir(&self, repo: &crate::archive::RepoIdentity) -> PathBuf {
        self.data_dir
            .join("mirrors")
            .join(format!("{}.git", repo.dir_name()))
    }

    /// Where the bare mirror of a repository's wiki lives (beside the repository's).
    pub fn wiki_mirror_dir(mirror: &Path) -> PathBuf {
        mirror.with_extension("wiki.git")
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
    /// The archive did not open (its store does not answer, or refuses): see
    /// `archive_attach`. Nothing was read from it or written to it.
    #[error("the archive cannot be used now: {0}")]
    ArchiveUnavailable(String),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("connection {connection}: {reason}")]
    Connection { connection: String, reason: String },
    /// The provider answered something unusable (a clone URL that is not a URL, or
    /// that points outside the connection's hosts).
    #[error("{0}")]
    ProviderAnswer(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Ambiguous(String),
    /// The request is wrong (never used for faults on this side: see `Internal`).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A request field is wrong; the API answers 400 naming it.
    #[error("field `{field}`: {message}")]
    Field { field: String, message: String },
    /// The request conflicts with the current state (e.g. cancelling a finished job).
    #[error("{0}")]
    Conflict(String),
    /// The caller is not allowed (a wrong token at the API).
    #[error("{0}")]
    Unauthorized(String),
    /// A fault on this side (not the request's): e.g. a record that cannot be encoded.
    #[error("{0}")]
    Internal(String),
    /// An error answered by a daemon, kept with its class and text.
    #[error("{message}")]
    Remote {
        kind: ErrorKind,
        message: String,
        field: Option<String>,
    },
}

/// The class of an [`EngineError`]: what the API maps to a status code, and what a
/// remote client maps back. Chosen by variant, never by message text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is wrong (a field, a name that is ambiguous, bad input).
    Invalid,
    NotFound,
    Conflict,
    Unauthorized,
    /// The provider or the server behind a connection refused or failed.
    Provider,
    /// Something this side depends on (the archive's store) does not answer now.
    Unavailable,
    Internal,
}

impl EngineError {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        use crate::state::StateError as S;
        use crate::vault::VaultError as V;
        use ArchiveError as A;
        match self {
            EngineError::Field { .. } | EngineError::Invalid(_) | EngineError::Ambiguous(_) => {
                ErrorKind::Invalid
            }
            EngineError::NotFound(_) => ErrorKind::NotFound,
            EngineError::Conflict(_) => ErrorKind::Conflict,
            EngineError::Unauthorized(_) => ErrorKind::Unauthorized,
            EngineError::Connection { .. }
            | EngineError::Provider(_)
            | EngineError::ProviderAnswer(_) => ErrorKind::Provider,
            EngineError::State(S::NoSuchConnection(_) | S::NoSuchPlan(_) | S::NoSuchJob(_)) => {
                ErrorKind::NotFound
            }
            EngineError::State(S::ConnectionExists(_) | S::PlanExists(_)) => ErrorKind::Conflict,
            EngineError::Vault(V::Invalid(_) | V::UnknownKind) => ErrorKind::Invalid,
            EngineError::Archive(A::SnapshotNotFound { .. }) => ErrorKind::NotFound,
            EngineError::Archive(
                A::Encryption { .. }
                | A::Copy { .. }
                | A::CopyCancelled { .. }
                | A::NotAnArchive { .. }
                | A::UnsupportedFormat { .. },
            ) => ErrorKind::Conflict,
            EngineError::Archive(A::WrongKey { .. }) => ErrorKind::Invalid,
            EngineError::Archive(A::InvalidSnapshotId(_) | A::InvalidBlobId(_)) => {
                ErrorKind::Invalid
            }
            EngineError::ArchiveUnavailable(_) => ErrorKind::Unavailable,
            EngineError::Remote { kind, .. } => *kind,
            EngineError::DataDir { .. }
            | EngineError::Git(_)
            | EngineError::State(_)
            | EngineError::Vault(_)
            | EngineError::Archive(_)
            | EngineError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The request field this error names, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            EngineError::Field { field, .. } => Some(field),
            EngineError::Remote { field, .. } => field.as_deref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{EngineError as E, ErrorKind as K};
    use crate::state::StateError;

    /// The class (and so the API status) follows the variant, not the message.
    #[test]
    fn errors_are_classed_by_variant() {
        let cases = [
            (E::Invalid("x".into()), K::Invalid),
            (
                E::Field {
                    field: "schedule".into(),
                    message: "not found".into(),
                },
                K::Invalid,
            ),
            (E::NotFound("invalid".into()), K::NotFound),
            (E::Conflict("invalid".into()), K::Conflict),
            (E::Internal("invalid input".into()), K::Internal),
            (E::ProviderAnswer("invalid".into()), K::Provider),
            (E::ArchiveUnavailable("invalid".into()), K::Unavailable),
            (E::State(StateError::NoSuchPlan("p".into())), K::NotFound),
            (E::State(StateError::PlanExists("p".into())), K::Conflict),
            (
                E::Archive(crate::archive::ArchiveError::NotAnArchive {
                    path: "/srv/photos".into(),
                }),
                K::Conflict,
            ),
            (
                E::Vault(crate::vault::VaultError::Decrypt("invalid".into())),
                K::Internal,
            ),
            (
                E::Remote {
                    kind: K::Conflict,
                    message: "m".into(),
                    field: None,
                },
                K::Conflict,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.kind(), want, "{e:?}");
        }
        let field = E::Field {
            field: "window".into(),
            message: "bad".into(),
        };
        assert_eq!(field.field(), Some("window"));
    }
}
