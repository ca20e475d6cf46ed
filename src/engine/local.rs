//! [`LocalService`]: the command surface run in this process, over a data dir's
//! [`Context`] and its job queue. The CLI uses it when no daemon serves the data dir;
//! the daemon's API and dashboard use it for every request.

use super::audit::{self, Actor};
use super::backup::{backup_connection, BackupOptions, BackupReport};
use super::credentials::{self, CredentialView};
use super::hooks::{self, Debouncer};
use super::job_reports::{follow_job, restored_from_job, restored_into_from_job};
use super::plans::{self, RunTarget};
use super::restore::{find_repository, restore, snapshots_of, SnapshotChoice};
use super::restore_into::RestoredInto;
use super::service::*;
use super::{connections, Context, EngineError, Jobs, RunnerConfig};
use crate::state::{Job, JobKind, JobRecordResult, Plan, PlanSpec, RepoRecord, Trigger};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The engine in this process. Cloning is cheap (see [`LocalService::acting`]).
#[derive(Clone)]
pub struct LocalService {
    jobs: Arc<Jobs>,
    /// Whether the job workers run (the daemon): jobs can be queued and followed.
    daemon: bool,
    /// The archive's totals for the overview, reused for a minute.
    totals: Arc<super::overview::TotalsCache>,
    /// Who the audit log names for the changes made through this service.
    actor: Actor,
    /// Pushes waiting for their debounce delay (the daemon's).
    hooks: Arc<Debouncer>,
}

impl LocalService {
    /// For one CLI command: jobs run in this process, to their end.
    pub fn open(data_dir: &Path) -> Result<LocalService, EngineError> {
        let ctx = Arc::new(Context::open(data_dir)?);
        Ok(LocalService {
            jobs: Jobs::new(ctx, RunnerConfig::default())?,
            daemon: false,
            totals: Arc::default(),
            actor: Actor::Cli,
            hooks: Debouncer::new(hooks::DEFAULT_DELAY),
        })
    }

    /// Over a job queue; `workers_running` says whether its workers were started
    /// (the daemon), so jobs can be queued and followed.
    pub fn over(jobs: Arc<Jobs>, workers_running: bool) -> LocalService {
        LocalService {
            jobs,
            daemon: workers_running,
            totals: Arc::default(),
            actor: Actor::Cli,
            hooks: Debouncer::new(hooks::DEFAULT_DELAY),
        }
    }

    /// The same service, with `actor` named in the audit log for its changes.
    pub fn acting(&self, actor: Actor) -> LocalService {
        LocalService {
            actor,
            ..self.clone()
        }
    }

    /// Sets how long a push waits for more pushes before its backup is queued.
    pub fn with_hook_delay(self, delay: Duration) -> LocalService {
        self.hooks.set_delay(delay);
        self
    }

    /// Records a change in the audit log (by this service's actor).
    pub fn record(&self, action: &str, object: &str, detail: Option<&str>) {
        audit::record(self.ctx(), &self.actor, action, object, detail);
    }

    /// Records a forget, prune or copy that failed after it may have changed something
    /// (removed manifests, deleted blobs, written a copy); a dry run or a refused
    /// request changed nothing.
    fn record_failure(&self, dry_run: bool, action: &str, object: &str, e: &EngineError) {
        let refused = matches!(
            e.kind(),
            super::ErrorKind::Invalid | super::ErrorKind::NotFound
        );
        if !dry_run && !refused {
            self.record(action, object, Some(&format!("failed: {e}")));
        }
    }

    /// Records `action` on `object` when `result` is a success; hands it on.
    fn audited<T>(
        &self,
        action: &str,
        object: &str,
        result: Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        if result.is_ok() {
            self.record(action, object, None);
        }
        result
    }

    /// Records a queued or finished job (its id and what it does) when `result` is one.
    fn audited_job(
        &self,
        action: &str,
        result: Result<Job, EngineError>,
    ) -> Result<Job, EngineError> {
        if let Ok(job) = &result {
            let what = job.kind.describe();
            self.record(action, &format!("job {}", job.id), Some(&what));
        }
        result
    }

    /// Checks a push webhook's signature against the connection's secret: a missing
    /// connection is `NotFound`, a missing secret or a bad signature `Unauthorized`
    /// (recorded in the audit log and logged, never showing the secret).
    pub fn check_push_signature(
        &self,
        connection: &str,
        body: &[u8],
        signature: Option<&str>,
    ) -> Result<(), EngineError> {
        let problem = match hooks::secret(self.ctx(), connection, false)? {
            Some(secret) => hooks::signature_problem(&secret, body, signature),
            None => Some(format!(
                "connection {connection} has no webhook secret yet (see `reposafe connection webhook {connection}`)"
            )),
        };
        let Some(problem) = problem else {
            return Ok(());
        };
        tracing::warn!("webhook for connection {connection} refused: {problem}");
        audit::record(
            self.ctx(),
            &Actor::Webhook(connection.to_string()),
            "webhook.refused",
            connection,
            Some(&problem),
        );
        Err(EngineError::Unauthorized(format!(
            "webhook refused: {problem}"
        )))
    }

    fn webhook_info(&self, name: &str, secret: secrecy::SecretString) -> WebhookInfo {
        WebhookInfo {
            connection: name.to_string(),
            path: format!("/hooks/{name}"),
            url: None,
            secret,
            delay_secs: self.hooks.delay().as_secs(),
        }
    }

    pub fn jobs_queue(&self) -> &Arc<Jobs> {
        &self.jobs
    }

    /// Queues a restore job (the daemon's `POST /api/v1/restore`): to disk, or into a
    /// provider when the request has a `target`.
    pub fn submit_restore(&self, req: RestoreRequest) -> Result<Job, EngineError> {
        snapshot_choice(&req)?;
        if req.target.is_some() {
            let job = self
                .jobs
                .submit(restore_into_kind(req)?, Trigger::Manual, None);
            return self.audited_job("restore.start", job);
        }
        let kind = JobKind::Restore {
            repository: req.repository,
            connection: req.connection,
            snapshot: req.snapshot,
            at: req.at,
            to: req.to,
            force: req.force,
        };
        let job = self.jobs.submit(kind, Trigger::Manual, None);
        self.audited_job("restore.start", job)
    }

    fn ctx(&self) -> &Context {
        self.jobs.context()
    }

    fn view(&self, mut conn: crate::state::Connection) -> Result<ConnectionView, EngineError> {
        conn.allowed_origins = connections::credential_origins(self.ctx(), &conn)?;
        let tls = self.ctx().state.connection_tls(&conn.name)?;
        let project_credentials = self
            .ctx()
            .state
            .scoped_credentials(&conn.name)?
            .iter()
            .filter(|c| matches!(c.scope, crate::state::CredentialScope::Project { .. }))
            .count();
        let state = &self.ctx().state;
        let last_check = state.connection_check(&conn.name)?;
        let repos = state.repositories(Some(&conn.name))?;
        Ok(ConnectionView {
            tls: TlsSummary::of(&tls),
            project_credentials,
            last_check,
            repositories: repos.len(),
            last_backup: repos.iter().map(|r| r.last_seen).max(),
            connection: conn,
        })
    }

    /// Keeps the outcome of testing connection `name` (shown on its page and, when it
    /// failed, as a warning in the overview).
    fn record_check(&self, name: &str, error: Option<&EngineError>) -> Result<(), EngineError> {
        if let Some(EngineError::State(crate::state::StateError::NoSuchConnection(_))) = error {
            return Ok(());
        }
        let check = crate::state::ConnectionCheck {
            ok: error.is_none(),
            reason: error.map(|e| e.to_string()),
            at: time::OffsetDateTime::now_utc(),
        };
        Ok(self.ctx().state.record_connection_check(name, &check)?)
    }

    fn job_kind(&self, req: &RunRequest) -> Result<JobKind, EngineError> {
        let target = match (&req.plan, &req.connection, &req.repository) {
            (Some(plan), None, None) => RunTarget::Plan(plan.clone()),
            (None, Some(connection), None) => RunTarget::Connection(connection.clone()),
            (None, connection, Some(repository)) => RunTarget::Repository {
                repository: repository.clone(),
                connection: connection.clone(),
            },
            _ => {
                return Err(EngineError::Invalid(
                    "run what? give a repository (scope/slug), a plan or a connection".into(),
                ))
            }
        };
        plans::job_for(self.ctx(), &target)
    }
}

/// Provider aliases users may type.
pub fn provider_id(alias: &str) -> &str {
    match alias {
        "cloud" => "bitbucket-cloud",
        "dc" | "datacenter" | "server" => "bitbucket-dc",
        other => other,
    }
}

/// The connection names a backup request names (every one of `service` for `all`).
pub fn backup_targets(
    req: &BackupRequest,
    service: &dyn Service,
) -> Result<Vec<String>, EngineError> {
    let names = if req.all {
        service
            .connections()?
            .into_iter()
            .map(|c| c.connection.name)
            .collect()
    } else {
        req.connections.clone()
    };
    if names.is_empty() {
        return Err(EngineError::Invalid(
            "name a connection to back up (see `reposafe connection list`) or pass --all".into(),
        ));
    }
    Ok(names)
}

impl Service for LocalService {
    fn overview(&self) -> Result<Overview, EngineError> {
        super::overview::overview(self.ctx(), &self.totals, time::OffsetDateTime::now_utc())
    }

    fn providers(&self) -> Result<ProvidersReport, EngineError> {
        let p = &self.ctx().providers;
        Ok(ProvidersReport {
            providers: p.infos().into_iter().cloned().collect(),
            not_loaded: p.load_errors.iter().map(|e| e.to_string()).collect(),
        })
    }

    fn connections(&self) -> Result<Vec<ConnectionView>, EngineError> {
        self.ctx()
            .state
            .connections()?
            .into_iter()
            .map(|c| self.view(c))
            .collect()
    }

    fn connection(&self, name: &str) -> Result<ConnectionView, EngineError> {
        self.view(self.ctx().state.connection(name)?)
    }

    fn add_connection(&self, req: AddConnection) -> Result<ConnectionAdded, EngineError> {
        let name = req.name.clone();
        let new = connections::NewConnection {
            name: req.name,
            provider: provider_id(&req.provider).to_string(),
            settings: req.settings,
            credential: req.credential.into_credential("credential.")?,
            read_only: req.read_only,
            allow_restore: req.allow_restore,
            rate_limit: req.rate_limit,
            tls: req.tls,
        };
        let (connection, warnings) = self.audited(
            "connection.add",
            &name,
            connections::add_connection(self.ctx(), new, req.verify),
        )?;
        if req.verify {
            // Adding checked it: that is its first check.
            self.record_check(&name, None)?;
        }
        Ok(ConnectionAdded {
            connection,
            warnings,
        })
    }

    fn test_connection(&self, name: &str) -> Result<ConnectionTested, EngineError> {
        let tested = connections::test_connection(self.ctx(), name);
        self.record_check(name, tested.as_ref().err())?;
        let (scopes, kinds) = tested?;
        Ok(ConnectionTested {
            connection: name.to_string(),
            ok: true,
            scopes,
            kinds,
        })
    }

    fn remove_connection(&self, name: &str) -> Result<Removed, EngineError> {
        self.audited(
            "connection.remove",
            name,
            connections::remove_connection(self.ctx(), name),
        )?;
        Ok(Removed {
            removed: name.to_string(),
            snapshots: Some("kept".into()),
        })
    }

    fn set_connection_tls(&self, name: &str, req: SetTls) -> Result<TlsChanged, EngineError> {
        let tls = TlsSummary::of(&req.tls);
        let warnings = self.audited(
            "connection.tls",
            name,
            connections::set_connection_tls(self.ctx(), name, req.tls, req.verify),
        )?;
        Ok(TlsChanged {
            connection: name.to_string(),
            tls,
            warnings,
        })
    }

    fn credentials(&self, connection: &str) -> Result<Vec<CredentialView>, EngineError> {
        credentials::list_credentials(self.ctx(), connection)
    }

    fn add_credential(
        &self,
        connection: &str,
        req: AddCredential,
    ) -> Result<CredentialAdded, EngineError> {
        let input = CredentialInput {
            kind: req.kind,
            identity: req.identity,
            secret: req.secret,
        };
        let cred = input.into_credential("")?;
        let kind = cred.kind.as_str().to_string();
        let ctx = self.ctx();
        let (credential, warnings) = match req.project {
            Some(project) => {
                let warnings = connections::add_project_credential(
                    ctx, connection, &project, cred, req.verify,
                )?;
                let id = super::credentials::project_credential_id(&project);
                (AddedCredential::Project(id), warnings)
            }
            None => {
                let (view, warnings) = credentials::add_additional_credential(
                    ctx, connection, cred, req.label, req.verify,
                )?;
                (AddedCredential::Additional(view), warnings)
            }
        };
        let id = match &credential {
            AddedCredential::Project(id) => id.as_str(),
            AddedCredential::Additional(view) => view.id.as_str(),
        };
        self.record(
            "credential.add",
            &format!("{connection}/{id}"),
            Some(&format!("{kind} credential")),
        );
        Ok(CredentialAdded {
            credential,
            kind,
            warnings,
        })
    }

    fn remove_credential(&self, connection: &str, id: &str) -> Result<Removed, EngineError> {
        let removed = match id.strip_prefix("project:") {
            Some(key) => connections::remove_project_credential(self.ctx(), connection, key),
            None => credentials::remove_additional(self.ctx(), connection, id),
        };
        self.audited("credential.remove", &format!("{connection}/{id}"), removed)?;
        Ok(Removed {
            removed: id.to_string(),
            snapshots: None,
        })
    }

    fn set_credential_enabled(
        &self,
        connection: &str,
        id: &str,
        enabled: bool,
    ) -> Result<CredentialEnabled, EngineError> {
        self.audited(
            if enabled {
                "credential.enable"
            } else {
                "credential.disable"
            },
            &format!("{connection}/{id}"),
            credentials::set_additional_enabled(self.ctx(), connection, id, enabled),
        )?;
        Ok(CredentialEnabled {
            credential: id.to_string(),
            enabled,
        })
    }

    fn test_credential(&self, connection: &str, id: &str) -> Result<CredentialTested, EngineError> {
        let scopes = credentials::test_credential(self.ctx(), connection, id)?;
        Ok(CredentialTested {
            credential: id.to_string(),
            ok: true,
            scopes,
        })
    }

    fn plans(&self) -> Result<Vec<Plan>, EngineError> {
        Ok(self.ctx().state.plans()?)
    }

    fn plan(&self, name: &str) -> Result<Plan, EngineError> {
        Ok(self.ctx().state.plan(name)?)
    }

    fn add_plan(&self, spec: PlanSpec) -> Result<Plan, EngineError> {
        let name = spec.name.clone();
        self.audited("plan.add", &name, plans::create_plan(self.ctx(), spec))
    }

    fn update_plan(&self, name: &str, spec: PlanSpec) -> Result<Plan, EngineError> {
        self.audited(
            "plan.update",
            name,
            plans::replace_plan(self.ctx(), name, spec),
        )
    }

    fn remove_plan(&self, name: &str) -> Result<Removed, EngineError> {
        self.audited("plan.remove", name, Ok(self.ctx().state.remove_plan(name)?))?;
        Ok(Removed {
            removed: name.to_string(),
            snapshots: None,
        })
    }

    fn submit(&self, req: RunRequest) -> Result<Job, EngineError> {
        if !self.daemon {
            return Err(EngineError::Conflict(
                "--detach needs a running daemon (`reposafe serve`) on this data dir".into(),
            ));
        }
        let kind = self.job_kind(&req)?;
        let job = self.jobs.submit(kind, Trigger::Manual, None);
        self.audited_job("run.submit", job)
    }

    fn run(&self, req: RunRequest, observer: &dyn Observer) -> Result<Job, EngineError> {
        let kind = self.job_kind(&req)?;
        if self.daemon {
            let job = self.jobs.submit(kind, Trigger::Manual, None);
            let job = self.audited_job("run.submit", job)?;
            return self.watch(job.id, observer);
        }
        let job = self
            .jobs
            .run_now(kind, Trigger::Manual, &|j: &Job| observer.job(j));
        self.audited_job("run", job)
    }

    fn backup(
        &self,
        req: BackupRequest,
        observer: &dyn Observer,
    ) -> Result<Vec<BackupReport>, EngineError> {
        let names = backup_targets(&req, self)?;
        let mut reports = Vec::new();
        for name in names {
            let opts = BackupOptions {
                parallelism: req.parallel.unwrap_or(BackupOptions::default().parallelism),
                only: req.repositories.clone(),
                progress: observer.backup_progress(&name),
                interrupt: observer.interrupt(),
                taken_at: req.taken_at,
                ..Default::default()
            };
            let report = backup_connection(self.ctx(), &name, &opts).map_err(|e| {
                EngineError::Connection {
                    connection: name.clone(),
                    reason: format!("backup failed; nothing was written: {e}"),
                }
            })?;
            self.record("backup", &name, None);
            reports.push(report);
        }
        Ok(reports)
    }

    fn jobs(&self, limit: usize) -> Result<Vec<Job>, EngineError> {
        self.jobs.list(limit)
    }

    fn job(&self, id: u64) -> Result<Job, EngineError> {
        self.jobs.get(id)
    }

    fn job_results(&self, id: u64) -> Result<Vec<JobRecordResult>, EngineError> {
        self.jobs.get(id)?;
        Ok(self.ctx().state.job_results(id)?)
    }

    fn watch(&self, id: u64, observer: &dyn Observer) -> Result<Job, EngineError> {
        if !self.daemon {
            return Err(EngineError::Conflict(
                "no daemon runs on this data dir, so no job is running (start `reposafe serve`)"
                    .into(),
            ));
        }
        follow_job(&|| self.jobs.get(id), observer, Duration::from_millis(250))
    }

    fn cancel(&self, id: u64) -> Result<Job, EngineError> {
        if !self.daemon {
            return Err(EngineError::Conflict(
                "no daemon runs on this data dir, so no job is running (start `reposafe serve`)"
                    .into(),
            ));
        }
        let job = self.jobs.cancel(id);
        self.audited_job("job.cancel", job)
    }

    fn repositories(&self, connection: Option<&str>) -> Result<Vec<RepoRecord>, EngineError> {
        Ok(self.ctx().state.repositories(connection)?)
    }

    fn snapshots(&self, req: SnapshotsRequest) -> Result<SnapshotList, EngineError> {
        let repository = find_repository(self.ctx(), &req.repository, req.connection.as_deref())?;
        let mut snapshots = snapshots_of(self.ctx(), &repository)?;
        if let Some(at) = req.at {
            snapshots.retain(|s| s.taken_at <= at);
        }
        Ok(SnapshotList {
            repository,
            snapshots,
        })
    }

    fn restore(
        &self,
        req: RestoreRequest,
        observer: &dyn Observer,
    ) -> Result<Restored, EngineError> {
        if req.snapshot.is_some() && req.at.is_some() {
            return Err(EngineError::Invalid(
                "give either a snapshot id or a time (--at), not both".into(),
            ));
        }
        if self.daemon {
            // Through the queue, so the restore is a job like any other.
            let job = self.submit_restore(req.clone())?;
            let job = self.watch(job.id, observer)?;
            return restored_from_job(self, &req, &job);
        }
        let repo = find_repository(self.ctx(), &req.repository, req.connection.as_deref())?;
        let choice = snapshot_choice(&req)?;
        let report = restore(self.ctx(), &repo, &choice, Path::new(&req.to), req.force)?;
        self.record(
            "restore",
            &format!("{}/{}", repo.connection, repo.full_name),
            Some(&format!("to {}", req.to)),
        );
        Ok(Restored {
            repository: repo.full_name,
            report,
        })
    }

    fn restore_into(
        &self,
        req: RestoreRequest,
        observer: &dyn Observer,
    ) -> Result<RestoredInto, EngineError> {
        let kind = restore_into_kind(req)?;
        let job = if self.daemon {
            let job = self.jobs.submit(kind, Trigger::Manual, None);
            let job = self.audited_job("restore.start", job)?;
            self.watch(job.id, observer)?
        } else {
            let job = self
                .jobs
                .run_now(kind, Trigger::Manual, &|j: &Job| observer.job(j));
            self.audited_job("restore", job)?
        };
        restored_into_from_job(self, &job)
    }

    fn check(&self, req: CheckRequest) -> Result<CheckReport, EngineError> {
        super::check::check(self.ctx(), &req)
    }

    fn retention_view(&self, req: RetentionQuery) -> Result<Option<RetentionView>, EngineError> {
        super::forget::plan_view(self.ctx(), &req.connection, &req.repository)
    }

    fn forget(
        &self,
        req: ForgetRequest,
        observer: &dyn Observer,
    ) -> Result<ForgetReport, EngineError> {
        let object = req
            .repository
            .clone()
            .or_else(|| req.connection.clone())
            .unwrap_or_else(|| "all".into());
        let report = super::forget::forget(self.ctx(), &req, observer.prune_progress().as_ref())
            .inspect_err(|e| self.record_failure(req.dry_run, "snapshots.forget", &object, e))?;
        if !req.dry_run && report.removed > 0 {
            let detail = format!("{} snapshots removed, {} kept", report.removed, report.kept);
            self.record("snapshots.forget", &object, Some(&detail));
        }
        Ok(report)
    }

    fn archive(&self) -> Result<ArchiveInfo, EngineError> {
        let data_dir = &self.ctx().data_dir;
        match self.ctx().archive() {
            Ok(archive) => super::archive_keys::archive_info(archive, data_dir),
            Err(EngineError::ArchiveUnavailable(reason)) => {
                super::archive_keys::unavailable_archive_info(data_dir, reason)
            }
            Err(e) => Err(e),
        }
    }

    fn copy_archive(
        &self,
        req: CopyRequest,
        observer: &dyn Observer,
    ) -> Result<ArchiveCopyReport, EngineError> {
        use super::archive_copy::{copy_in_process, requested_destination, CopyDestination};
        let save_as = req.save_as.clone();
        let to = requested_destination(req)?;
        let object = match &to {
            CopyDestination::Saved(name) => name.clone(),
            CopyDestination::Directory(dir) => dir.display().to_string(),
            CopyDestination::S3(loc) => loc.identity(),
        };
        let progress = observer.copy_progress();
        let report = copy_in_process(self.ctx(), to, save_as.as_deref(), progress.as_ref())
            .inspect_err(|e| self.record_failure(false, "archive.copy", &object, e))?;
        let detail = format!(
            "{} snapshots and {} blobs copied, {} blobs repaired, {} left out",
            report.tally.snapshots_copied,
            report.tally.blobs_copied,
            report.tally.blobs_repaired,
            report.tally.failed.len()
        );
        self.record("archive.copy", &object, Some(&detail));
        Ok(report)
    }

    fn prune(
        &self,
        req: PruneRequest,
        observer: &dyn Observer,
    ) -> Result<PruneReport, EngineError> {
        let report = super::prune::prune(self.ctx(), &req, observer.prune_progress().as_ref())
            .inspect_err(|e| self.record_failure(req.dry_run, "archive.prune", "all", e))?;
        if !req.dry_run {
            let detail = format!(
                "{} histories consolidated, {} blobs ({} bytes) freed",
                report.histories.len(),
                report.blobs_removed,
                report.bytes_freed
            );
            self.record("archive.prune", "all", Some(&detail));
        }
        Ok(report)
    }

    fn show(&self, req: ShowRequest) -> Result<ShowReport, EngineError> {
        super::show::show(self.ctx(), &req)
    }

    fn export(&self, req: ExportRequest) -> Result<ExportReport, EngineError> {
        // In process also in the daemon: an export writes files, it changes no state.
        let object = format!(
            "{} {}",
            req.connection.as_deref().unwrap_or("-"),
            req.repository
        );
        self.audited("export", &object, super::export::export(self.ctx(), &req))
    }

    // issue 14 (W): push-triggered backups and the audit log.
    fn webhook(&self, name: &str) -> Result<WebhookInfo, EngineError> {
        let secret = hooks::secret(self.ctx(), name, true)?
            .ok_or_else(|| EngineError::Internal("the webhook secret was not stored".into()))?;
        Ok(self.webhook_info(name, secret))
    }

    fn rotate_webhook_secret(&self, name: &str) -> Result<WebhookInfo, EngineError> {
        let secret = self.audited("webhook.rotate", name, hooks::rotate(self.ctx(), name))?;
        Ok(self.webhook_info(name, secret))
    }

    fn register_webhook(
        &self,
        name: &str,
        req: RegisterWebhook,
    ) -> Result<WebhookRegistration, EngineError> {
        let done = hooks::register(self.ctx(), name, &req.url)?;
        let targets: Vec<&str> = done.registered.iter().map(|r| r.target.as_str()).collect();
        let detail = format!("{} on {}", done.url, targets.join(", "));
        self.record("webhook.register", name, Some(&detail));
        Ok(done)
    }

    fn push_received(&self, connection: &str, repository: &str) -> Result<HookQueued, EngineError> {
        if !self.daemon {
            return Err(EngineError::Conflict(
                "pushes are received by the daemon (`reposafe serve`) at /hooks/{connection}"
                    .into(),
            ));
        }
        hooks::check_repository(repository)?;
        self.ctx().state.connection(connection)?;
        let repository = hooks::known_name(self.ctx(), connection, repository)?;
        let delay = self.hooks.push(&self.jobs, connection, &repository)?;
        audit::record(
            self.ctx(),
            &Actor::Webhook(connection.to_string()),
            "webhook.accepted",
            &format!("{connection}/{repository}"),
            Some(&format!("backup queued after {} s", delay.as_secs())),
        );
        Ok(HookQueued {
            queued: repository,
            after_secs: delay.as_secs(),
        })
    }

    fn record_sign_in(&self, ok: bool) -> Result<(), EngineError> {
        let action = if ok {
            "session.sign-in"
        } else {
            "session.sign-in-refused"
        };
        self.record(action, "dashboard", None);
        Ok(())
    }

    fn record_sign_out(&self) -> Result<(), EngineError> {
        self.record("session.sign-out", "dashboard", None);
        Ok(())
    }

    fn audit(&self, query: AuditQuery) -> Result<Vec<AuditEntry>, EngineError> {
        audit::entries(self.ctx(), &query)
    }

    // issue 14 (lead)
    fn preview_plan(&self, spec: PlanSpec) -> Result<PlanPreview, EngineError> {
        super::plan_preview::preview(self.ctx(), &spec, time::OffsetDateTime::now_utc())
    }

    // issue 14 (O)
    fn oauth_begin(&self, req: OAuthBegin) -> Result<OAuthStarted, EngineError> {
        if !self.daemon {
            return Err(EngineError::Conflict(
                "Connect needs the daemon (`reposafe serve`): Bitbucket sends the browser back \
                 to its /oauth/callback"
                    .into(),
            ));
        }
        let name = req.name.clone();
        let started = super::oauth::begin(self.ctx(), req, &self.actor);
        // The callback comes back without a session: who began the flow is recorded here.
        self.audited("connection.connect", &name, started)
    }

    fn oauth_finish(&self, req: OAuthFinish) -> Result<ConnectionAdded, EngineError> {
        let done = super::oauth::finish(self.ctx(), req)?;
        let name = &done.connection.name;
        audit::record(
            self.ctx(),
            &done.actor,
            "connection.add",
            name,
            Some("by OAuth Connect"),
        );
        self.record_check(name, None)?;
        Ok(ConnectionAdded {
            connection: done.connection,
            warnings: done.warnings,
        })
    }

    fn rotate_credential(
        &self,
        name: &str,
        req: RotateCredential,
    ) -> Result<ConnectionAdded, EngineError> {
        let cred = req.credential.into_credential("credential.")?;
        let (connection, warnings) = self.audited(
            "credential.rotate",
            &format!("{name}/primary"),
            connections::rotate_credential(self.ctx(), name, cred, req.verify),
        )?;
        Ok(ConnectionAdded {
            connection,
            warnings,
        })
    }

    fn edit_connection(
        &self,
        name: &str,
        req: EditConnection,
    ) -> Result<crate::state::Connection, EngineError> {
        let edit = connections::ConnectionEdit {
            read_only: req.read_only,
            allow_restore: req.allow_restore,
            rate_limit: req.rate_limit.map(Some),
            settings: req.settings,
        };
        self.audited(
            "connection.edit",
            name,
            connections::edit_connection(self.ctx(), name, edit),
        )
    }

    // issue 14 (N): notifications
    fn notifications(&self) -> Result<NotificationView, EngineError> {
        self.jobs.notifications().view(self.ctx())
    }

    fn set_notifications(&self, req: SetNotifications) -> Result<NotificationView, EngineError> {
        let result = self.jobs.notifications().set(self.ctx(), req);
        self.audited("notifications.set", "notifications", result)
    }

    fn test_notifications(&self) -> Result<Vec<ChannelResult>, EngineError> {
        self.jobs.notifications().test(self.ctx())
    }
}

/// The job of a restore into a provider: the request checked (a target, no local path).
fn restore_into_kind(req: RestoreRequest) -> Result<JobKind, EngineError> {
    let Some(target) = req.target else {
        return Err(EngineError::Field {
            field: "target".into(),
            message: "a restore into a provider needs a target connection".into(),
        });
    };
    if !req.to.is_empty() || req.force {
        return Err(EngineError::Invalid(
            "restore either to a directory (`to`, `force`) or into a provider (`target`), not both"
                .into(),
        ));
    }
    if req.repository.is_empty() && req.connection.is_none() {
        return Err(EngineError::Invalid(
            "name a repository to restore, or a connection (--connection) to restore all of its \
             repositories"
                .into(),
        ));
    }
    Ok(JobKind::RestoreInto {
        repository: req.repository,
        connection: req.connection,
        snapshot: req.snapshot,
        at: req.at,
        target,
    })
}

/// Which snapshot a restore request names.
pub fn snapshot_choice(req: &RestoreRequest) -> Result<SnapshotChoice, EngineError> {
    super::restore::choice_of(req.snapshot.as_deref(), req.at)
}
