//! The command surface: every user operation once, as a method of [`Service`] with
//! typed, serde-able requests and reports.
//!
//! Two implementations exist: [`super::LocalService`] runs the engine in this process
//! (the CLI without a daemon, and the daemon itself behind its API), and the CLI's
//! HTTP client of a running daemon. The front-ends (`cli`, `api`, `dashboard`) hold a
//! `dyn Service` and never reach the state or the archive themselves, so a command
//! gives the same answer whichever way it travels.

pub use super::archive_copy::ArchiveCopyReport;
pub use super::audit::{Actor, AuditEntry, AuditQuery};
use super::backup::{BackupReport, Progress};
use super::credentials::CredentialView;
pub use super::export::{ExportReport, ExportRequest};
pub use super::hooks::{HookQueued, ScopeFailure, WebhookInfo, WebhookRegistration};
pub use super::notifications::{Delivery, NotificationView, SetNotifications, SettingsSource};
pub use super::oauth::{OAuthBegin, OAuthFinish, OAuthStarted};
pub use super::overview::{FailingRepository, JobFailure, Overview, PlanGlance};
pub use super::plan_preview::{ConnectionMatch, PlanPreview};
use super::restore::RestoreReport;
pub use super::restore_into::{RestoreTarget, RestoredInto};
pub use super::show::{ShowReport, ShowRequest};
use super::EngineError;
use crate::archive::{RepoIdentity, Snapshot};
pub use crate::notify::{ChannelResult, NotificationSettings, SmtpSecurity, SmtpSettings};
use crate::providers::{ProviderInfo, Scope};
use crate::state::{Connection, ConnectionTls, Job, JobRecordResult, Plan, PlanSpec, RepoRecord};
use crate::vault::{Credential, CredentialKind};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use time::OffsetDateTime;

/// Every operation a user can ask of reposafe.
pub trait Service: Send + Sync {
    /// What the data dir holds and where (the dashboard's header).
    fn overview(&self) -> Result<Overview, EngineError>;
    /// Installed providers, and plugin files that did not load.
    fn providers(&self) -> Result<ProvidersReport, EngineError>;

    fn connections(&self) -> Result<Vec<ConnectionView>, EngineError>;
    fn connection(&self, name: &str) -> Result<ConnectionView, EngineError>;
    /// Adds a connection; verifies its credential first unless `verify` is off.
    fn add_connection(&self, req: AddConnection) -> Result<ConnectionAdded, EngineError>;
    fn test_connection(&self, name: &str) -> Result<ConnectionTested, EngineError>;
    /// Removes a connection; its snapshots stay in the archive.
    fn remove_connection(&self, name: &str) -> Result<Removed, EngineError>;
    /// Replaces a connection's certificate trust.
    fn set_connection_tls(&self, name: &str, req: SetTls) -> Result<TlsChanged, EngineError>;

    /// A connection's credentials, masked.
    fn credentials(&self, connection: &str) -> Result<Vec<CredentialView>, EngineError>;
    /// Adds a per-project (`project`) or an additional credential.
    fn add_credential(
        &self,
        connection: &str,
        req: AddCredential,
    ) -> Result<CredentialAdded, EngineError>;
    /// Removes `project:KEY` or an additional credential id.
    fn remove_credential(&self, connection: &str, id: &str) -> Result<Removed, EngineError>;
    fn set_credential_enabled(
        &self,
        connection: &str,
        id: &str,
        enabled: bool,
    ) -> Result<CredentialEnabled, EngineError>;
    fn test_credential(&self, connection: &str, id: &str) -> Result<CredentialTested, EngineError>;

    fn plans(&self) -> Result<Vec<Plan>, EngineError>;
    fn plan(&self, name: &str) -> Result<Plan, EngineError>;
    fn add_plan(&self, spec: PlanSpec) -> Result<Plan, EngineError>;
    fn update_plan(&self, name: &str, spec: PlanSpec) -> Result<Plan, EngineError>;
    fn remove_plan(&self, name: &str) -> Result<Removed, EngineError>;

    /// Queues a job and returns at once (needs the daemon's workers).
    fn submit(&self, req: RunRequest) -> Result<Job, EngineError>;
    /// Runs a job to its end, reporting every change to `observer`.
    fn run(&self, req: RunRequest, observer: &dyn Observer) -> Result<Job, EngineError>;
    /// Backs up connections now (`backup` command): one report per connection.
    fn backup(
        &self,
        req: BackupRequest,
        observer: &dyn Observer,
    ) -> Result<Vec<BackupReport>, EngineError>;
    fn jobs(&self, limit: usize) -> Result<Vec<Job>, EngineError>;
    fn job(&self, id: u64) -> Result<Job, EngineError>;
    fn job_results(&self, id: u64) -> Result<Vec<JobRecordResult>, EngineError>;
    /// Follows a job until it ends.
    fn watch(&self, id: u64, observer: &dyn Observer) -> Result<Job, EngineError>;
    fn cancel(&self, id: u64) -> Result<Job, EngineError>;

    fn repositories(&self, connection: Option<&str>) -> Result<Vec<RepoRecord>, EngineError>;
    fn snapshots(&self, req: SnapshotsRequest) -> Result<SnapshotList, EngineError>;
    /// Rebuilds a bare repository from a snapshot.
    fn restore(
        &self,
        req: RestoreRequest,
        observer: &dyn Observer,
    ) -> Result<Restored, EngineError>;
    /// Restores snapshots into a provider (`req.target`): one repository, or every
    /// repository of `req.connection` when `req.repository` is empty.
    fn restore_into(
        &self,
        req: RestoreRequest,
        observer: &dyn Observer,
    ) -> Result<RestoredInto, EngineError>;
    /// Checks that every blob every snapshot needs is present (and, with
    /// `read_data`, intact), and what a damaged one costs.
    fn check(&self, req: CheckRequest) -> Result<CheckReport, EngineError>;
    /// Removes the snapshots a retention policy does not keep (or, `dry_run`, says
    /// which it would).
    fn forget(
        &self,
        req: ForgetRequest,
        observer: &dyn Observer,
    ) -> Result<ForgetReport, EngineError>;
    /// Gives back the space of forgotten snapshots: consolidates each history's packs
    /// into one pack of what its kept snapshots reach, then deletes every blob no
    /// snapshot names (or, `dry_run`, says what it would do).
    fn prune(&self, req: PruneRequest, observer: &dyn Observer)
        -> Result<PruneReport, EngineError>;
    /// Where the archive is, whether it is encrypted (and which sealed keys open it),
    /// and what it holds. Never a secret. An archive that cannot be used now is
    /// answered too: where it is recorded to be, and why (`unavailable`).
    fn archive(&self) -> Result<ArchiveInfo, EngineError>;
    /// Copies the archive of a running appliance to a saved target, a directory or an S3
    /// location given with its keys (`archive copy` beside the daemon), verifying every
    /// blob there; the copy's progress goes to `observer`.
    fn copy_archive(
        &self,
        req: CopyRequest,
        observer: &dyn Observer,
    ) -> Result<ArchiveCopyReport, EngineError>;
    /// Which of a repository's snapshots the retention of the plan that backs it up
    /// keeps, and by which rule (nothing is removed); `None` without such a plan.
    fn retention_view(&self, req: RetentionQuery) -> Result<Option<RetentionView>, EngineError>;
    /// What a snapshot holds; with a kind, that kind's documents.
    fn show(&self, req: ShowRequest) -> Result<ShowReport, EngineError>;
    /// Writes a snapshot out as plain files (bare repositories, documents, files).
    fn export(&self, req: ExportRequest) -> Result<ExportReport, EngineError>;

    // issue 14 (lead)
    /// What a plan would do before it is saved: its schedule in words, its next runs,
    /// and the repositories it selects now.
    fn preview_plan(&self, spec: PlanSpec) -> Result<PlanPreview, EngineError>;

    // issue 14 (O): OAuth "Connect", credential rotation, connection edits.
    /// Starts adding a connection through the provider's OAuth consent page (needs
    /// the daemon: the browser comes back to its `/oauth/callback`).
    fn oauth_begin(&self, req: OAuthBegin) -> Result<OAuthStarted, EngineError>;
    /// The callback of a Connect flow: exchanges the code and adds the connection.
    fn oauth_finish(&self, req: OAuthFinish) -> Result<ConnectionAdded, EngineError>;
    /// Replaces a connection's primary credential (verified first unless told not to).
    fn rotate_credential(
        &self,
        name: &str,
        req: RotateCredential,
    ) -> Result<ConnectionAdded, EngineError>;
    /// Changes a connection's flags, rate limit and host-free settings.
    fn edit_connection(&self, name: &str, req: EditConnection) -> Result<Connection, EngineError>;

    // issue 14 (N): notifications
    /// The notification settings in force (secrets masked), where they come from and
    /// the last delivery's outcome.
    fn notifications(&self) -> Result<NotificationView, EngineError>;
    /// Replaces the notification settings (stored; the config file's then no longer apply).
    fn set_notifications(&self, req: SetNotifications) -> Result<NotificationView, EngineError>;
    /// Sends a test message on every configured channel: one result per channel.
    fn test_notifications(&self) -> Result<Vec<ChannelResult>, EngineError>;

    // issue 14 (W): push-triggered backups and the audit log.
    /// A connection's push-webhook path and secret (the secret is made on first ask).
    fn webhook(&self, name: &str) -> Result<WebhookInfo, EngineError>;
    /// Replaces a connection's webhook secret; the old one stops working at once.
    fn rotate_webhook_secret(&self, name: &str) -> Result<WebhookInfo, EngineError>;
    /// Registers the connection's push webhook in Bitbucket through its provider
    /// (world 0.5.0), on every scope it covers, posting to `req.url`'s `/hooks/NAME`.
    fn register_webhook(
        &self,
        name: &str,
        req: RegisterWebhook,
    ) -> Result<WebhookRegistration, EngineError>;
    /// A signed push of `repository` (`scope/slug`) arrived for `connection`: its backup
    /// is queued after the debounce delay (a burst of pushes makes one backup).
    fn push_received(&self, connection: &str, repository: &str) -> Result<HookQueued, EngineError>;
    /// A dashboard sign-in (`ok`) or a refused one, for the audit log.
    fn record_sign_in(&self, ok: bool) -> Result<(), EngineError>;
    /// A dashboard sign-out, for the audit log.
    fn record_sign_out(&self) -> Result<(), EngineError>;
    /// The audit log, newest first.
    fn audit(&self, query: AuditQuery) -> Result<Vec<AuditEntry>, EngineError>;
}

/// Where a front-end wants to see long work progress.
pub trait Observer: Sync {
    /// The latest state of a job being followed.
    fn job(&self, _job: &Job) {}
    /// A progress sink for a backup of `connection` run in this process.
    fn backup_progress(&self, _connection: &str) -> Arc<dyn Progress> {
        Arc::new(super::backup::NoProgress)
    }
    /// A flag that stops in-process work early when set (Ctrl-C).
    fn interrupt(&self) -> Arc<AtomicBool> {
        Arc::new(AtomicBool::new(false))
    }
    /// Where a prune run in this process reports its progress.
    fn prune_progress(&self) -> Arc<dyn super::prune::PruneProgress> {
        Arc::new(super::prune::NoPruneProgress)
    }
    /// Where an archive copy run in this process reports its progress.
    fn copy_progress(&self) -> Arc<dyn super::archive_copy::CopyProgress> {
        Arc::new(super::archive_copy::NoCopyProgress)
    }
}

/// An observer that shows nothing.
pub struct Quiet;
impl Observer for Quiet {}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProvidersReport {
    pub providers: Vec<ProviderInfo>,
    /// Plugin files that could not be loaded, with the reason.
    pub not_loaded: Vec<String>,
}

/// A connection as shown to users: never a secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConnectionView {
    #[serde(flatten)]
    pub connection: Connection,
    /// Its certificate trust: `system`, `ca-bundle` or `insecure`.
    pub tls: TlsSummary,
    /// How many per-project credentials it has.
    pub project_credentials: usize,
    /// The outcome of its last test (`connection test`, the dashboard's Test).
    #[serde(default)]
    pub last_check: Option<crate::state::ConnectionCheck>,
    /// How many repositories its backups have seen.
    #[serde(default)]
    pub repositories: usize,
    /// When a backup last listed its repositories.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_backup: Option<OffsetDateTime>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsSummary {
    pub insecure: bool,
    /// The CA bundle's file name as given, when one is stored.
    pub ca_bundle: Option<String>,
}

impl TlsSummary {
    pub fn of(tls: &ConnectionTls) -> TlsSummary {
        TlsSummary {
            insecure: tls.insecure,
            ca_bundle: tls.ca_bundle_pem.as_ref().map(|_| {
                tls.ca_bundle_file
                    .clone()
                    .unwrap_or_else(|| "(stored)".into())
            }),
        }
    }
}

/// A credential as given by a user. The secret is write-only: it is serialized only
/// to travel to the daemon, and its `Debug` is redacted.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialInput {
    pub kind: String,
    #[serde(default)]
    pub identity: Option<String>,
    #[serde(serialize_with = "expose_secret")]
    pub secret: SecretString,
}

/// Serializes a secret (write-only request fields travelling to the daemon).
pub(crate) fn expose_secret<S: Serializer>(s: &SecretString, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.expose_secret())
}

/// [`expose_secret`] for an optional secret (skipped when absent).
pub(crate) fn expose_optional_secret<S: Serializer>(
    s: &Option<SecretString>,
    ser: S,
) -> Result<S::Ok, S::Error> {
    match s {
        Some(s) => expose_secret(s, ser),
        None => ser.serialize_none(),
    }
}

impl CredentialInput {
    pub fn from_credential(c: Credential) -> CredentialInput {
        CredentialInput {
            kind: c.kind.as_str().to_string(),
            identity: c.identity,
            secret: c.secret,
        }
    }

    /// Checks the kind and that the secret is not empty; `field` prefixes the names.
    pub fn into_credential(self, field: &str) -> Result<Credential, EngineError> {
        let kind: CredentialKind = self.kind.parse().map_err(|e| EngineError::Field {
            field: format!("{field}kind"),
            message: format!("{e}"),
        })?;
        if self.secret.expose_secret().trim().is_empty() {
            return Err(EngineError::Field {
                field: format!("{field}secret"),
                message: "is empty".into(),
            });
        }
        Ok(Credential {
            kind,
            identity: self.identity,
            secret: self.secret,
        })
    }
}

fn yes() -> bool {
    true
}

/// `connection add`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddConnection {
    pub name: String,
    /// Provider id or alias (`cloud`, `dc`).
    pub provider: String,
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    pub credential: CredentialInput,
    #[serde(default = "yes")]
    pub verify: bool,
    #[serde(default)]
    pub read_only: bool,
    /// The connection may be written to by restores (and only by them).
    #[serde(default)]
    pub allow_restore: bool,
    /// Request budget of each principal: `60/min`, `1000/h`, `60/10s`.
    #[serde(default)]
    pub rate_limit: Option<String>,
    #[serde(default)]
    pub tls: ConnectionTls,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConnectionAdded {
    pub connection: Connection,
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConnectionTested {
    pub connection: String,
    pub ok: bool,
    pub scopes: Vec<Scope>,
    /// Which metadata kinds the credential can read (empty for a git-only provider).
    #[serde(default)]
    pub kinds: Vec<super::connections::KindAccess>,
}

/// What a remove removed; snapshots are never removed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Removed {
    pub removed: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<String>,
}

/// `connection tls`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetTls {
    #[serde(default)]
    pub tls: ConnectionTls,
    #[serde(default = "yes")]
    pub verify: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TlsChanged {
    pub connection: String,
    pub tls: TlsSummary,
    pub warnings: Vec<String>,
}

/// `connection credential add`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddCredential {
    pub kind: String,
    #[serde(default)]
    pub identity: Option<String>,
    #[serde(serialize_with = "expose_secret")]
    pub secret: SecretString,
    /// A project key: the credential is used for that project instead of the default.
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default = "yes")]
    pub verify: bool,
}

/// Which credential was added.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AddedCredential {
    /// `project:KEY`.
    Project(String),
    Additional(CredentialView),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CredentialAdded {
    pub credential: AddedCredential,
    pub kind: String,
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CredentialEnabled {
    pub credential: String,
    pub enabled: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CredentialTested {
    pub credential: String,
    pub ok: bool,
    /// How many scopes (workspaces, projects) it sees.
    pub scopes: usize,
}

/// Run now: exactly one of `plan`, `connection` or `repository` (optionally with
/// `connection`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    #[serde(default)]
    pub plan: Option<String>,
    #[serde(default)]
    pub connection: Option<String>,
    #[serde(default)]
    pub repository: Option<String>,
}

/// `backup`: connections (or all of them), optionally only some repositories.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BackupRequest {
    pub connections: Vec<String>,
    pub all: bool,
    pub repositories: Vec<String>,
    pub parallel: Option<usize>,
    /// Date the new snapshots this time instead of now (`backup --time`).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub taken_at: Option<OffsetDateTime>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotsRequest {
    pub repository: String,
    #[serde(default)]
    pub connection: Option<String>,
    /// Only snapshots taken at or before this time.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub at: Option<OffsetDateTime>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotList {
    pub repository: RepoIdentity,
    pub snapshots: Vec<Snapshot>,
}

/// `restore`: a snapshot (latest, `snapshot` id, or newest at or before `at`) into
/// `to` (an absolute path on the daemon's machine), or into a provider through
/// `target` (a connection marked for restore). With `target`, an empty `repository`
/// restores every repository of `connection`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    #[serde(default)]
    pub repository: String,
    #[serde(default)]
    pub connection: Option<String>,
    #[serde(default)]
    pub snapshot: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub at: Option<OffsetDateTime>,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub force: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RestoreTarget>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Restored {
    pub repository: String,
    #[serde(flatten)]
    pub report: RestoreReport,
}

/// `forget`: where, and the policy.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgetRequest {
    /// One repository (`ws/slug`); with `connection`, the one of that connection.
    #[serde(default)]
    pub repository: Option<String>,
    /// Every repository of this connection (alone), or which one `repository` is.
    #[serde(default)]
    pub connection: Option<String>,
    /// Every repository history in the archive.
    #[serde(default)]
    pub all: bool,
    pub policy: super::retention::Policy,
    /// Seconds after a repository disappeared from its provider before the policy
    /// applies to it; none: never (its snapshots are kept).
    #[serde(default)]
    pub keep_deleted_for_secs: Option<u64>,
    /// The zone calendar rules read times in (IANA name or `UTC`); default UTC.
    #[serde(default)]
    pub zone: Option<String>,
    /// Report only; remove nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Prune afterwards (`forget --prune`): consolidate the histories that lost
    /// snapshots and sweep what no snapshot names.
    #[serde(default)]
    pub prune: bool,
}

/// `archive copy` through a running appliance: to a target saved by an earlier
/// `archive copy --save-as` (its keys stay in the appliance), to a directory, or to
/// an S3 location (its keys, if given, sealed in the vault when it is saved).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyRequest {
    /// A saved target's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// A directory (absent, empty, or holding an earlier copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<std::path::PathBuf>,
    /// An S3 location (keys from the appliance's own sources when it names none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<super::archive_location::S3Location>,
    /// Save the destination under this name (for `--target` and plans' `copy_to`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_as: Option<String>,
}

/// `prune`: the whole archive.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneRequest {
    /// Say what would be consolidated and freed; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// The archive as `archive show` prints it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ArchiveInfo {
    /// Where it is: a directory, or `s3://BUCKET/PREFIX`.
    pub location: String,
    /// The S3 endpoint its requests go to (`AWS` for AWS's own), for an archive in a bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Where the keys for a bucket come from, with the access key ID all but its last
    /// 4 characters hidden (never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_keys: Option<String>,
    /// Which CAs an https endpoint's certificate is checked against: the system's, and
    /// those of the CA bundle recorded with the location (`--ca-bundle` of `archive init` or
    /// `archive update`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_tls_trust: Option<String>,
    /// Why the archive cannot be used now (its store does not answer, or refuses, or
    /// its key is not given): the rest is then what this data dir records of it, and
    /// what only the archive itself can tell (its snapshots, its size) is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// Whether blobs and manifests are encrypted (chosen when the archive was created);
    /// absent when it cannot be told (the archive unavailable, nothing recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    /// The public recipient (`age1…`) of its key, when encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// The sealed copies of its key (`keys/<name>`), when encrypted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<ArchiveKeyInfo>,
    /// Snapshots in it (absent when it is unavailable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<usize>,
    /// Bytes of blobs and manifests (absent when it is unavailable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
    /// Bytes free on a local archive's disk, and the disk's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_free_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
    /// Copy targets saved by `archive copy --save-as` (names and locations only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy_targets: Vec<super::archive_copy::CopyTargetInfo>,
}

/// One sealed copy of an encrypted archive's key.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ArchiveKeyInfo {
    pub name: String,
    /// What opens it.
    pub opens_with: String,
}

/// What `prune` did (or would do).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PruneReport {
    pub dry_run: bool,
    /// Each history part whose packs were consolidated into one.
    pub histories: Vec<PrunedHistory>,
    /// Histories that could not be consolidated (they keep their packs), and why.
    #[serde(default)]
    pub failed: Vec<String>,
    /// Blobs no snapshot named, deleted, and their stored bytes.
    pub blobs_removed: usize,
    pub bytes_freed: u64,
    /// Accelerator index entries that named a deleted blob.
    pub index_entries_removed: usize,
    /// Stored bytes of the archive (blobs and manifests) before and after.
    pub archive_bytes_before: u64,
    pub archive_bytes_after: u64,
    pub seconds: f64,
}

/// One repository history part (`git` or `wiki`) consolidated by prune.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PrunedHistory {
    pub repository: String,
    pub connection: String,
    pub part: String,
    /// Snapshots of it (each now names the one pack).
    pub snapshots: usize,
    /// Packs the snapshots named before, and their stored bytes.
    pub packs_before: usize,
    pub bytes_before: u64,
    /// Objects in those packs, and in the consolidated pack (what the kept refs reach).
    pub objects_before: u64,
    pub objects_after: u64,
    /// Stored bytes of the consolidated pack.
    pub bytes_after: u64,
    /// Objects written whole because their stored delta base was not kept.
    pub recompressed: u64,
    /// Packs the repository's mirror dropped for the consolidated one.
    pub mirror_packs_removed: usize,
}

/// `retention_view`: one repository of one connection.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionQuery {
    pub connection: String,
    pub repository: String,
}

/// A plan's retention applied (as a dry run) to one repository.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RetentionView {
    pub plan: String,
    /// The policy in words (`keep daily 7, monthly 12`).
    pub policy: String,
    pub repository: ForgetRepository,
}

/// What `forget` removed (or would remove) and kept, per repository.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ForgetReport {
    pub dry_run: bool,
    pub removed: usize,
    pub kept: usize,
    pub repositories: Vec<ForgetRepository>,
    /// What the prune that followed did (`prune` asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<PruneReport>,
    /// Why the prune after a plan's retention failed (the forget itself was applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune_error: Option<String>,
}

/// One repository's snapshots, newest first, each with the rules that keep it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ForgetRepository {
    pub repository: String,
    pub connection: String,
    /// Why every snapshot is kept whatever the policy (it disappeared from Bitbucket).
    pub protected: Option<String>,
    pub snapshots: Vec<ForgetSnapshot>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ForgetSnapshot {
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub taken_at: time::OffsetDateTime,
    pub keep: bool,
    /// `last`, `hourly`, `daily`, `weekly`, `monthly`, `yearly`, `within`, `newest`,
    /// `disappeared` (the repository left its provider: see `protected`).
    pub reasons: Vec<String>,
}

/// `check`: what to verify.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// Read back and re-hash every blob, not only find it present.
    #[serde(default)]
    pub read_data: bool,
    /// Read back a random share of the blobs (percent, in (0, 100]); implies `read_data`.
    #[serde(default)]
    pub subset_percent: Option<f64>,
}

/// What `check` found.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CheckReport {
    pub snapshots: usize,
    /// Distinct blobs the snapshots need (manifests' and their indexes').
    pub blobs: usize,
    /// Whether blob contents were read back (all, or `subset_percent` of them).
    pub read_data: bool,
    pub subset_percent: Option<f64>,
    /// Blobs read back and re-hashed beyond the index blobs, and their bytes.
    pub blobs_read: usize,
    pub bytes_read: u64,
    /// Each missing or damaged blob with every snapshot part that uses it.
    pub damaged: Vec<Damage>,
    /// Each snapshot a damaged blob touches, with what still restores.
    pub affected: Vec<AffectedSnapshot>,
    /// Accelerator index entries naming a missing blob (not damage to any snapshot).
    pub index_warnings: Vec<String>,
    /// With `read_data` (all of it): snapshot parts whose refs were walked through their
    /// packs, and those whose refs reach an object their packs lack (not restorable).
    #[serde(default)]
    pub snapshots_walked: usize,
    #[serde(default)]
    pub incomplete: Vec<IncompleteSnapshot>,
}

/// A snapshot part (`git` or `wiki`) whose packs lack an object its refs reach.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IncompleteSnapshot {
    pub snapshot: String,
    pub repository: String,
    pub part: String,
    pub error: String,
}

/// A missing or damaged blob.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Damage {
    pub blob: String,
    pub error: String,
    pub used_by: Vec<BlobUse>,
}

/// One use of a blob: a snapshot's part (`git`, `wiki`, `lfs`, `metadata:<kind>`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlobUse {
    pub snapshot: String,
    pub repository: String,
    pub part: String,
}

/// A snapshot with damaged parts: `restores` when its `git` part is intact.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AffectedSnapshot {
    pub snapshot: String,
    pub repository: String,
    pub restores: bool,
    pub damaged_parts: Vec<String>,
    pub intact_parts: Vec<String>,
}

/// `connection rotate`: the connection's new primary credential.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateCredential {
    pub credential: CredentialInput,
    #[serde(default = "yes")]
    pub verify: bool,
}

/// `connection edit`: what to change (absent: unchanged).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditConnection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_restore: Option<bool>,
    /// A request budget such as `60/min`; `none` removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
    /// Settings that name no host (e.g. `workspace`); URL settings are fixed at add.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
}

/// Asks for a connection's push webhook to be registered in Bitbucket.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterWebhook {
    /// This daemon's address as Bitbucket reaches it, e.g.
    /// `https://backup.example.com` (the webhook posts to its `/hooks/NAME`).
    pub url: String,
}
