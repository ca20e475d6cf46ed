//! Restoring snapshots into a provider: a repository put back where the team works, in
//! the same or another workspace/project or server, through a connection marked for
//! restore (`--allow-restore`).
//!
//! Per repository, in this order, each part reported on its own (git never depends on
//! the rest): find or create the target repository (the provider's `create-repository`,
//! with the original's settings) → upload the LFS objects (`lfs::upload_objects`) → push
//! the branches and tags (`git::push`, in-process send-pack) → push the wiki → write the
//! metadata kinds the provider can restore (`documents`). A restore never overwrites or
//! deletes anything on the server: a non-empty target is refused unless
//! `into_existing`, and then a ref that exists with another target is pushed under
//! `restored/<snapshot>/` beside it. Re-running an interrupted restore continues: refs
//! already equal are skipped, documents already created (recorded in state) are not sent
//! again.
//!
//! This module owns the request and report types and the orchestration; `refs` plans
//! and pushes the git parts, `documents` writes the metadata.

mod documents;
mod refs;

use super::restore::{choose, find_repository, SnapshotChoice};
use super::{Context, EngineError};
use crate::archive::{RepoIdentity, Snapshot};
use crate::providers::{HttpGate, NewRepository, ProviderError, ProviderSession, Repository};
use crate::state::Connection;
use crate::tls::TlsTrust;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;

pub use crate::state::RestoreTarget;
pub use refs::{plan_ref_updates, RefPlan};

/// How one part of a restore went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartStatus {
    Restored,
    /// Written, with items that were not (listed in `problems`) or that need the user.
    Partial,
    /// Deliberately not written (nothing to write, or the target cannot hold it).
    Skipped,
    Failed,
}

impl PartStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PartStatus::Restored => "restored",
            PartStatus::Partial => "partial",
            PartStatus::Skipped => "skipped",
            PartStatus::Failed => "failed",
        }
    }
}

/// What a push of a git part did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitRestored {
    /// Refs pushed, by the name they have on the server now.
    pub pushed: Vec<String>,
    /// Refs the server already had with the snapshot's target (nothing sent).
    pub unchanged: usize,
    /// Refs the server had with another target: (name in the snapshot, name pushed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub renamed: Vec<(String, String)>,
    /// Refs not pushed on purpose, and why (e.g. Data Center's `refs/pull-requests/*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<(String, String)>,
    /// Refs the server refused, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<(String, String)>,
    /// Pack bytes sent.
    pub pack_bytes: u64,
}

/// One part other than git: `lfs`, `wiki`, `metadata:<kind>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRestored {
    pub part: String,
    pub status: PartStatus,
    /// One line: what was written, or why not.
    pub detail: String,
    /// Items written (objects, documents).
    #[serde(default)]
    pub items: u64,
    /// What the user must finish by hand (a webhook's secret, a secured variable).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs_user: Vec<String>,
    /// Items not written, each with its reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// The restore of one repository into a provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoRestoredInto {
    /// The backed-up repository, `scope/slug`.
    pub source: String,
    pub snapshot: String,
    #[serde(with = "time::serde::rfc3339")]
    pub taken_at: OffsetDateTime,
    /// The target connection and repository (`scope/slug`).
    pub connection: String,
    pub target: String,
    /// The target repository was created by this restore.
    pub created: bool,
    /// `restored`, `partial` (git restored, some other part not) or `failed` (git not).
    pub status: PartStatus,
    /// Why the repository could not be restored (status `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitRestored>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PartRestored>,
}

/// What a restore into a provider did: one report per repository.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredInto {
    /// The job that ran it, when a daemon did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<u64>,
    pub repositories: Vec<RepoRestoredInto>,
}

/// How a restore runs: where it reports, what stops it.
#[derive(Clone)]
pub struct IntoOptions {
    pub interrupt: Arc<AtomicBool>,
    /// Hears one line per notable step (shown as the job's notice).
    pub notice: Arc<dyn Fn(&str) + Send + Sync>,
    /// Called when a repository starts and when it is done.
    pub started: Arc<dyn Fn(&str) + Send + Sync>,
    pub finished: Arc<dyn Fn(&RepoRestoredInto) + Send + Sync>,
    /// Repositories restored at once (many at once).
    pub concurrency: usize,
}

impl Default for IntoOptions {
    fn default() -> Self {
        IntoOptions {
            interrupt: Arc::new(AtomicBool::new(false)),
            notice: Arc::new(|_| {}),
            started: Arc::new(|_| {}),
            finished: Arc::new(|_| {}),
            concurrency: 4,
        }
    }
}

/// The connection a restore writes through, checked: marked for restore, not read-only.
/// Its gate grants writes; its provider session makes the calls.
pub struct Writer<'a> {
    ctx: &'a Context,
    conn: Connection,
    gate: Arc<HttpGate>,
    tls: Arc<TlsTrust>,
    session: ProviderSession<'a>,
    target: RestoreTarget,
}

/// Opens the target connection of a restore. Refuses, before any request is sent, a
/// connection that is read-only or not marked for restore, naming the setting.
pub fn open_writer<'a>(
    ctx: &'a Context,
    target: &RestoreTarget,
) -> Result<Writer<'a>, EngineError> {
    let conn = ctx.state.connection(&target.connection)?;
    refuse_unless_writable(&conn)?;
    let cred = ctx
        .vault
        .unseal(&ctx.state.sealed_credential(&conn.name)?)?;
    let tls = super::connections::tls_for(ctx, &conn.name)?;
    let gate = Arc::new(super::connections::gate_for(ctx, &conn, cred, &tls)?.allowing_writes());
    let session = ctx.providers.get(&conn.provider)?.session(
        &conn.settings,
        conn.credential_kind,
        gate.clone(),
    );
    Ok(Writer {
        ctx,
        conn,
        gate,
        tls,
        session,
        target: target.clone(),
    })
}

/// The error for a restore through a connection that may not write, if it may not.
pub fn refuse_unless_writable(conn: &Connection) -> Result<(), EngineError> {
    let message = if conn.read_only {
        format!(
            "connection {} is read-only (read_only = true): it never writes to {}; restore \
             through a connection added with --allow-restore",
            conn.name, conn.provider
        )
    } else if !conn.allow_restore {
        format!(
            "connection {} is not marked for restore (allow_restore = false): backup \
             connections never write; add a connection with a write credential and \
             --allow-restore to restore into {}",
            conn.name, conn.provider
        )
    } else {
        return Ok(());
    };
    Err(EngineError::Field {
        field: "target.connection".into(),
        message,
    })
}

/// The repositories a request restores: `repository` alone, or (when it is empty) every
/// repository of `connection` the state or the archive knows.
pub fn sources(
    ctx: &Context,
    repository: &str,
    connection: Option<&str>,
) -> Result<Vec<RepoIdentity>, EngineError> {
    if !repository.is_empty() {
        return Ok(vec![find_repository(ctx, repository, connection)?]);
    }
    let Some(connection) = connection else {
        return Err(EngineError::Invalid(
            "name a repository, or a connection (--connection) to restore all of its repositories"
                .into(),
        ));
    };
    let mut names: Vec<String> = ctx
        .state
        .repositories(Some(connection))?
        .into_iter()
        .map(|r| r.full_name)
        .collect();
    for (h, _) in ctx.archive()?.histories()? {
        if h.connection == connection {
            names.push(h.full_name);
        }
    }
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Err(EngineError::NotFound(format!(
            "connection {connection} has no backed-up repositories"
        )));
    }
    names
        .iter()
        .map(|n| find_repository(ctx, n, Some(connection)))
        .collect()
}

/// Restores `sources` (each its snapshot chosen by `choice`) into the target, up to
/// `opts.concurrency` at once. One report per repository, in the order of `sources`; a
/// repository that fails does not stop the others.
pub fn restore_all(
    writer: &Writer<'_>,
    sources: &[RepoIdentity],
    choice: &SnapshotChoice,
    opts: &IntoOptions,
) -> Result<Vec<RepoRestoredInto>, EngineError> {
    if sources.len() > 1 && writer.target.as_name.is_some() {
        return Err(EngineError::Field {
            field: "target.as".into(),
            message: "`as` names one repository; restoring several, use `prefix`".into(),
        });
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<RepoRestoredInto>>> = Mutex::new(vec![None; sources.len()]);
    let workers = opts.concurrency.clamp(1, 8).min(sources.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(source) = sources.get(i) else { break };
                (opts.started)(&source.full_name);
                // Prune's sweep waits while this repository's snapshot is read.
                let report = match writer.ctx.gate().and_then(|gate| gate.shared()) {
                    // A panic fails this repository alone, with its message.
                    Ok(_archive) => crate::engine::jobs::catch_panic(
                        &format!("restoring {}", source.full_name),
                        || writer.restore(source, choice, opts),
                    )
                    .unwrap_or_else(|reason| {
                        writer.failed_before(source, None, EngineError::Internal(reason))
                    }),
                    Err(e) => writer.failed_before(source, None, e),
                };
                (opts.finished)(&report);
                results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(report);
            });
        }
    });
    Ok(results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .collect())
}

impl Writer<'_> {
    /// Restores one repository; never fails as a whole: what went wrong is in the report.
    pub fn restore(
        &self,
        source: &RepoIdentity,
        choice: &SnapshotChoice,
        opts: &IntoOptions,
    ) -> RepoRestoredInto {
        let snap = match choose(self.ctx, source, choice) {
            Ok(s) => s,
            Err(e) => return self.failed_before(source, None, e),
        };
        let target = match self.target_name(source) {
            Ok(t) => t,
            Err(e) => return self.failed_before(source, Some(&snap), e),
        };
        let mut report = RepoRestoredInto {
            source: source.full_name.clone(),
            snapshot: snap.id.to_string(),
            taken_at: snap.taken_at,
            connection: self.conn.name.clone(),
            target: target.clone(),
            created: false,
            status: PartStatus::Restored,
            error: None,
            git: None,
            parts: Vec::new(),
        };
        if let Err(e) = self.restore_parts(&snap, &target, &mut report, opts) {
            report.status = PartStatus::Failed;
            report.error = Some(e.to_string());
            return report;
        }
        let partial = report.git.as_ref().is_some_and(|g| !g.refused.is_empty())
            || report
                .parts
                .iter()
                .any(|p| matches!(p.status, PartStatus::Partial | PartStatus::Failed));
        if partial {
            report.status = PartStatus::Partial;
        }
        report
    }

    /// Every part of `snap` into `target`; an error means git was not restored.
    fn restore_parts(
        &self,
        snap: &Snapshot,
        target: &str,
        report: &mut RepoRestoredInto,
        opts: &IntoOptions,
    ) -> Result<(), EngineError> {
        let (repo, created) = self.find_or_create(snap, target)?;
        report.created = created;
        (opts.notice)(&format!(
            "{}: {} {target} on {}",
            snap.repository.full_name,
            if created { "created" } else { "restoring into" },
            self.conn.name
        ));
        let parts = self.describe_target(&repo, report);
        let lfs_url = parts.as_ref().and_then(|p| p.lfs_url.clone());
        if let Some(lfs) = self.upload_lfs(snap, lfs_url.as_deref(), opts)? {
            report.parts.push(lfs);
        }
        let git = self.push_git(snap, &repo.clone_url, opts)?;
        report.git = Some(git);
        if snap.wiki.is_some() {
            report
                .parts
                .push(self.push_wiki(snap, parts.as_ref(), opts));
        }
        let renamed = report
            .git
            .as_ref()
            .map(|g| g.renamed.clone())
            .unwrap_or_default();
        if snap.metadata.is_some() {
            let docs = documents::Documents {
                ctx: self.ctx,
                session: &self.session,
                conn: &self.conn,
                snap,
                repo: &repo,
                renamed,
                interrupt: &opts.interrupt,
            };
            report.parts.extend(docs.restore_all());
        }
        Ok(())
    }

    /// What the target repository holds besides git (its wiki, LFS server); a failure
    /// is reported as a part and means "none".
    fn describe_target(
        &self,
        repo: &Repository,
        report: &mut RepoRestoredInto,
    ) -> Option<crate::providers::RepositoryParts> {
        match self.session.describe_repository(repo) {
            Ok(p) => p,
            Err(ProviderError::Unsupported { .. }) => None,
            Err(e) => {
                report.parts.push(PartRestored {
                    part: "describe".into(),
                    status: PartStatus::Failed,
                    detail: format!("could not read what the target repository holds: {e}"),
                    items: 0,
                    needs_user: Vec::new(),
                    problems: Vec::new(),
                });
                None
            }
        }
    }

    /// The report of a repository that failed before anything was written.
    fn failed_before(
        &self,
        source: &RepoIdentity,
        snap: Option<&Snapshot>,
        e: EngineError,
    ) -> RepoRestoredInto {
        RepoRestoredInto {
            source: source.full_name.clone(),
            snapshot: snap.map(|s| s.id.to_string()).unwrap_or_default(),
            taken_at: snap.map_or(OffsetDateTime::UNIX_EPOCH, |s| s.taken_at),
            connection: self.conn.name.clone(),
            target: self.target.as_name.clone().unwrap_or_default(),
            created: false,
            status: PartStatus::Failed,
            error: Some(e.to_string()),
            git: None,
            parts: Vec::new(),
        }
    }

    /// `scope/slug` of the target: `as`, else the source's slug (with the prefix) in the
    /// connection's scope (its only one, or the source's scope when the connection sees it).
    fn target_name(&self, source: &RepoIdentity) -> Result<String, EngineError> {
        if let Some(name) = &self.target.as_name {
            return match name.split_once('/') {
                Some((scope, slug))
                    if !scope.is_empty() && !slug.is_empty() && !slug.contains('/') =>
                {
                    Ok(name.clone())
                }
                _ => Err(EngineError::Field {
                    field: "target.as".into(),
                    message: format!("{name:?} is not scope/slug (e.g. acme-dr/api)"),
                }),
            };
        }
        let (source_scope, slug) = source
            .full_name
            .split_once('/')
            .unwrap_or(("", source.full_name.as_str()));
        let prefix = self.target.prefix.as_deref().unwrap_or("");
        let scopes = self.session.list_scopes()?;
        let scope = match scopes.as_slice() {
            [only] => only.key.clone(),
            many => match many.iter().find(|s| s.key == source_scope) {
                Some(s) => s.key.clone(),
                None => {
                    return Err(EngineError::Field {
                        field: "target.as".into(),
                        message: format!(
                        "connection {} sees {} scopes ({}); name the target with --as scope/slug",
                        self.conn.name,
                        many.len(),
                        many.iter()
                            .map(|s| s.key.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    })
                }
            },
        };
        Ok(format!("{scope}/{prefix}{slug}"))
    }

    /// The target repository: found, or created with the original's settings.
    fn find_or_create(
        &self,
        snap: &Snapshot,
        target: &str,
    ) -> Result<(Repository, bool), EngineError> {
        let (scope, slug) = target.split_once('/').unwrap_or(("", target));
        if let Some(repo) = self.session.find_repository(scope, slug)? {
            return Ok((repo, false));
        }
        let new = NewRepository {
            scope: scope.to_string(),
            slug: slug.to_string(),
            project: self.target.project.clone(),
            source_provider: snap.repository.provider.clone(),
            source: self.source_listing(snap),
            original: documents::single_document(self.ctx, snap, "repository"),
        };
        let repo = self
            .session
            .create_repository(&new)
            .map_err(|e| EngineError::Connection {
                connection: self.conn.name.clone(),
                reason: format!("could not create repository {target}: {e}"),
            })?;
        Ok((repo, true))
    }

    /// The source repository as it was last listed (what the state remembers of it).
    fn source_listing(&self, snap: &Snapshot) -> Repository {
        let id = &snap.repository;
        let record = self
            .ctx
            .state
            .repository(&id.connection, &id.repo_id)
            .ok()
            .flatten();
        let (scope, slug) = id.full_name.split_once('/').unwrap_or(("", &id.full_name));
        Repository {
            id: id.repo_id.clone(),
            full_name: id.full_name.clone(),
            slug: slug.to_string(),
            scope: scope.to_string(),
            clone_url: record
                .as_ref()
                .map(|r| r.clone_url.clone())
                .unwrap_or_default(),
            is_private: record.as_ref().is_none_or(|r| r.is_private),
            main_branch: record.as_ref().and_then(|r| r.main_branch.clone()),
            size: record.as_ref().and_then(|r| r.size),
            updated: None,
            has_wiki: snap.wiki.is_some(),
            has_lfs: snap.lfs.is_some(),
            fork_parent: None,
        }
    }
}

/// A repository's report as a job result: status `restored`, `partial` or `failed`; the
/// reason lists what went wrong (one line each); `detail` holds the whole report.
pub fn job_result(job: u64, r: &RepoRestoredInto) -> crate::state::JobRecordResult {
    use crate::state::ResultStatus;
    let status = match r.status {
        PartStatus::Failed => ResultStatus::Failed,
        PartStatus::Partial => ResultStatus::Partial,
        PartStatus::Restored | PartStatus::Skipped => ResultStatus::Restored,
    };
    let mut reasons: Vec<String> = r.error.iter().cloned().collect();
    if let Some(g) = &r.git {
        reasons.extend(g.refused.iter().map(|(n, why)| format!("git {n}: {why}")));
    }
    reasons.extend(
        r.parts
            .iter()
            .filter(|p| matches!(p.status, PartStatus::Partial | PartStatus::Failed))
            .map(|p| format!("{}: {}", p.part, p.detail)),
    );
    crate::state::JobRecordResult {
        job,
        connection: r.connection.clone(),
        repository: r.source.clone(),
        status,
        snapshot: (!r.snapshot.is_empty()).then(|| r.snapshot.clone()),
        reason: (!reasons.is_empty()).then(|| reasons.join("\n")),
        new_bytes: 0,
        fetched_bytes: 0,
        seconds: 0.0,
        attempts: 1,
        detail: serde_json::to_value(r).ok(),
    }
}

/// The reports a restore-into job stored, in the order of its results.
pub fn reports_of(results: &[crate::state::JobRecordResult]) -> Vec<RepoRestoredInto> {
    results
        .iter()
        .filter_map(|r| r.detail.clone())
        .filter_map(|d| serde_json::from_value(d).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(read_only: bool, allow_restore: bool) -> Connection {
        Connection {
            name: "dr".into(),
            provider: "bitbucket-cloud".into(),
            settings: Default::default(),
            credential_kind: crate::vault::CredentialKind::ApiToken,
            credential_identity: None,
            read_only,
            allow_restore,
            rate_limit: None,
            principal: None,
            id: "c1".into(),
            allowed_origins: Vec::new(),
            created_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn only_a_connection_marked_for_restore_may_write() {
        let err = refuse_unless_writable(&conn(false, false)).unwrap_err();
        assert!(err.to_string().contains("allow_restore"), "{err}");
        assert_eq!(err.field(), Some("target.connection"));
        let err = refuse_unless_writable(&conn(true, true)).unwrap_err();
        assert!(err.to_string().contains("read_only"), "{err}");
        refuse_unless_writable(&conn(false, true)).unwrap();
    }

    #[test]
    fn a_report_becomes_a_job_result_and_back() {
        let report = RepoRestoredInto {
            source: "acme/app".into(),
            snapshot: "S".into(),
            taken_at: OffsetDateTime::UNIX_EPOCH,
            connection: "dr".into(),
            target: "dr-ws/app".into(),
            created: true,
            status: PartStatus::Partial,
            error: None,
            git: Some(GitRestored::default()),
            parts: vec![PartRestored {
                part: "metadata:webhooks".into(),
                status: PartStatus::Partial,
                detail: "1 restored".into(),
                items: 1,
                needs_user: vec!["re-enter the secret of webhook CI".into()],
                problems: Vec::new(),
            }],
        };
        let r = job_result(7, &report);
        assert_eq!(r.status, crate::state::ResultStatus::Partial);
        assert_eq!(r.reason.as_deref(), Some("metadata:webhooks: 1 restored"));
        assert_eq!(reports_of(&[r]), vec![report]);
    }
}
