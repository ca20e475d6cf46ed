//! Backing up every repository of a connection.

use super::archive_gate::SharedGuard;
use super::backup_git;
use super::connections::tls_for;
use super::listing;
use super::{Context, EngineError};
use crate::archive::{
    GitPart, LfsPart, MetadataPart, RepoIdentity, Snapshot, SnapshotId, SnapshotStats,
    FORMAT_VERSION,
};
use crate::git;
use crate::providers::{
    CredentialStats, HttpGate, LoadedProvider, ProviderSession, Repository, RepositoryParts,
};
use crate::state::{Connection, RepoRecord};
use crate::tls::TlsTrust;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// Hears about a job's progress (CLI progress bars, API job status).
pub trait Progress: Send + Sync {
    fn listed(&self, _total: usize) {}
    fn started(&self, _repo: &str) {}
    fn fetched_bytes(&self, _repo: &str, _bytes: u64) {}
    fn finished(&self, _result: &RepoResult) {}
    fn notice(&self, _message: &str) {}
    /// The credentials' counters so far (after each repository).
    fn credentials(&self, _stats: &[CredentialStats]) {}
}

/// A progress sink that ignores everything.
pub struct NoProgress;
impl Progress for NoProgress {}

pub use Progress as BackupProgress;

/// What a plan decides about a listed repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selected {
    /// Back it up.
    Yes,
    /// Not part of the plan (its include/exclude patterns): left out of the job.
    No,
    /// Part of the listing but not backed up, for a reason the user should see
    /// (e.g. a new repository while the plan does not auto-add).
    Skip(String),
}

/// Decides per listed repository whether the job backs it up.
pub type Selector = Arc<dyn Fn(&Repository) -> Selected + Send + Sync>;

/// Options of a backup job.
pub struct BackupOptions {
    /// Repositories fetched at once.
    pub parallelism: usize,
    /// Only these repositories (full names); all when empty.
    pub only: Vec<String>,
    pub progress: Arc<dyn Progress>,
    /// Set to stop the job early; repositories in flight finish or fail cleanly.
    pub interrupt: Arc<AtomicBool>,
    /// A plan's selection; every repository when absent.
    pub select: Option<Selector>,
    /// No repository starts after this instant (the end of a backup window);
    /// those left are reported [`RepoOutcome::Deferred`].
    pub deadline: Option<Instant>,
    /// Attempts after the first for a repository whose fetch failed transiently
    /// (network errors, resets, time-outs, 5xx), with exponential back-off.
    pub retries: u32,
    /// First wait before such a retry; doubles each time (±25% jitter, at most 60 s).
    pub retry_base: Duration,
    /// Additional credentials of the connection to use besides the primary one
    /// (`*` = every enabled one); none by default.
    pub additional_credentials: Vec<String>,
    /// How often repositories' metadata is read (a plan's `metadata_every`).
    pub metadata: MetadataCadence,
    /// The time new snapshots are dated (`backup --time`, as restic's): in the past,
    /// and after each repository's newest snapshot. Now when absent.
    pub taken_at: Option<OffsetDateTime>,
}

/// How often a backup reads repositories' metadata: API requests are the scarce
/// resource (Bitbucket Cloud allows about 1,000 an hour per account, and an unchanged
/// repository costs one per kind), so a plan can read it less often than it fetches git.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MetadataCadence {
    /// Every run.
    #[default]
    EveryRun,
    /// When it was last read at least this long ago; otherwise the previous snapshot's
    /// metadata is carried forward.
    Every(Duration),
    /// Never: snapshots hold git, the wiki and LFS objects only.
    Never,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            parallelism: 4,
            only: Vec::new(),
            progress: Arc::new(NoProgress),
            interrupt: Arc::new(AtomicBool::new(false)),
            select: None,
            deadline: None,
            retries: 2,
            retry_base: Duration::from_secs(2),
            additional_credentials: Vec::new(),
            metadata: MetadataCadence::EveryRun,
            taken_at: None,
        }
    }
}

/// What happened to one repository.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum RepoOutcome {
    /// A new snapshot was written.
    Snapshot {
        id: String,
        new_bytes: u64,
        fetched_bytes: u64,
    },
    /// Refs identical to the last snapshot: nothing stored.
    Unchanged {
        last_snapshot: String,
    },
    /// A snapshot (new, or the unchanged previous one when `new_bytes` is 0) holds the
    /// repository's git data but not everything: `missing` names each part or kind that
    /// could not be read and why (e.g. `pullrequests: needs read:pullrequest`).
    Partial {
        id: String,
        new_bytes: u64,
        fetched_bytes: u64,
        missing: Vec<String>,
    },
    Failed {
        reason: String,
    },
    /// Listed but deliberately not backed up; the reason says why.
    Skipped {
        reason: String,
    },
    /// Not started before the job's deadline (end of the backup window) or
    /// because the job was stopped; left for the next run.
    Deferred {
        reason: String,
    },
}

/// One repository's result.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RepoResult {
    pub full_name: String,
    pub outcome: RepoOutcome,
    pub seconds: f64,
    /// Fetch attempts made (retries of transient failures included).
    pub attempts: u32,
}

/// The result of a backup job.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BackupReport {
    pub connection: String,
    pub repositories: Vec<RepoResult>,
    pub seconds: f64,
    pub requests: u64,
    pub rate_limited: u64,
    /// What each credential of the pool did (requests, 429s, cool-downs, failure).
    pub credentials: Vec<CredentialStats>,
}

impl BackupReport {
    pub fn failed(&self) -> usize {
        self.repositories
            .iter()
            .filter(|r| matches!(r.outcome, RepoOutcome::Failed { .. }))
            .count()
    }
    pub fn new_bytes(&self) -> u64 {
        self.repositories
            .iter()
            .map(|r| match r.outcome {
                RepoOutcome::Snapshot { new_bytes, .. }
                | RepoOutcome::Partial { new_bytes, .. } => new_bytes,
                _ => 0,
            })
            .sum()
    }
}

/// Backs up a connection. Fails as a whole (writing nothing) when the repositories
/// cannot be listed, e.g. because the credential is refused; afterwards a failing
/// repository is reported in its result and never stops the others.
pub fn backup_connection(
    ctx: &Context,
    connection: &str,
    opts: &BackupOptions,
) -> Result<BackupReport, EngineError> {
    let started = Instant::now();
    check_taken_at(opts.taken_at)?;
    let conn = ctx.state.connection(connection)?;
    let cred = ctx
        .vault
        .unseal(&ctx.state.sealed_credential(connection)?)?;
    let tls = tls_for(ctx, connection)?;
    let gate = connection_gate(ctx, &conn, cred, &tls, opts)?;
    let provider = ctx.providers.get(&conn.provider)?;
    let session = provider.session(&conn.settings, conn.credential_kind, gate.clone());
    warn_about_connection(&conn, provider, opts)?;
    let listed = listing::list_repositories(ctx, &conn, &tls, &gate, &session, &opts.progress)
        .map_err(|e| match e {
            EngineError::Provider(e) => EngineError::Connection {
                connection: conn.name.clone(),
                reason: e.to_string(),
            },
            other => other,
        })?;
    let (repos, skipped) = selected_repositories(listed.repos, &conn, opts)?;
    opts.progress.listed(repos.len());

    let now = OffsetDateTime::now_utc();
    let records = listed_records(&conn, &repos, now);
    let metadata_read: HashMap<String, OffsetDateTime> = ctx
        .state
        .repositories(Some(&conn.name))?
        .into_iter()
        .filter_map(|r| Some((r.repo_id, r.metadata_read_at?)))
        .collect();
    ctx.state.upsert_repositories(&records)?;

    let job = RepoJob {
        conn: &conn,
        tls: &tls,
        opts,
        provider,
        scopes: Default::default(),
        metadata_read,
        metadata_read_now: Default::default(),
        started: now,
    };
    let repositories = back_up_each(ctx, &job, &repos, &skipped, &gate);
    let read_now = job.metadata_read_now.into_inner().unwrap_or_default();
    remember_results(ctx, records, &repositories, &read_now, now)?;

    let (mut requests, mut rate_limited) = (0, 0);
    for g in std::iter::once(&gate).chain(&listed.project_gates) {
        requests += g.stats.requests.load(Ordering::Relaxed);
        rate_limited += g.stats.rate_limited.load(Ordering::Relaxed);
    }
    Ok(BackupReport {
        connection: conn.name.clone(),
        repositories,
        seconds: started.elapsed().as_secs_f64(),
        requests,
        rate_limited,
        credentials: gate.pool().stats(),
    })
}

/// The gate a connection's job goes through: the primary credential `cred` plus the
/// additional ones the plan enabled share one pool (listing and git fetches spread
/// over them), its notices shown as the job's. Warns first when TLS is not checked.
fn connection_gate(
    ctx: &Context,
    conn: &Connection,
    cred: crate::vault::Credential,
    tls: &Arc<TlsTrust>,
    opts: &BackupOptions,
) -> Result<Arc<HttpGate>, EngineError> {
    if tls.is_insecure() {
        opts.progress.notice(&tls.insecure_warning());
    }
    let progress = opts.progress.clone();
    Ok(Arc::new(
        super::credentials::pooled_gate(ctx, conn, cred, &opts.additional_credentials, tls)?
            .with_notice(move |m| progress.notice(m)),
    ))
}

/// Warns about a deprecated kind of credential and about plain `http://`.
fn warn_about_connection(
    conn: &Connection,
    provider: &LoadedProvider,
    opts: &BackupOptions,
) -> Result<(), EngineError> {
    if let Some(d) = provider
        .info()
        .support_for(conn.credential_kind)?
        .deprecated
        .as_ref()
    {
        opts.progress.notice(&format!(
            "warning: {} credentials: {d}",
            conn.credential_kind
        ));
    }
    if conn.settings.values().any(|v| v.starts_with("http://")) {
        opts.progress.notice(&format!(
            "warning: connection {} uses plain http://; credentials travel unencrypted",
            conn.name
        ));
    }
    Ok(())
}

/// A listed repository with the gate its requests go through.
type ListedRepo = (Repository, Arc<HttpGate>);

/// The listed repositories the job covers (the plan's selection, then `--only`),
/// with the reasons of those it lists but skips, by full name. A repository asked
/// for with `--only` that is not there fails the job.
fn selected_repositories(
    mut repos: Vec<ListedRepo>,
    conn: &Connection,
    opts: &BackupOptions,
) -> Result<(Vec<ListedRepo>, HashMap<String, String>), EngineError> {
    let mut skipped = HashMap::new();
    if let Some(select) = &opts.select {
        repos.retain(|(r, _)| match select(r) {
            Selected::Yes => true,
            Selected::No => false,
            Selected::Skip(reason) => {
                skipped.insert(r.full_name.clone(), reason);
                true
            }
        });
    }
    if let Some(want) = opts
        .only
        .iter()
        .find(|want| !repos.iter().any(|(r, _)| &r.full_name == *want))
    {
        return Err(EngineError::NotFound(format!(
            "repository {want} is not among the {} repositories connection {} can see{}",
            repos.len(),
            conn.name,
            if opts.select.is_some() {
                " and the plan selects"
            } else {
                ""
            }
        )));
    }
    if !opts.only.is_empty() {
        repos.retain(|(r, _)| opts.only.contains(&r.full_name));
    }
    Ok((repos, skipped))
}

/// The state's records of the listed repositories, seen `now`.
fn listed_records(conn: &Connection, repos: &[ListedRepo], now: OffsetDateTime) -> Vec<RepoRecord> {
    repos
        .iter()
        .map(|(r, _)| RepoRecord {
            connection: conn.name.clone(),
            repo_id: r.id.clone(),
            full_name: r.full_name.clone(),
            clone_url: r.clone_url.clone(),
            main_branch: r.main_branch.clone(),
            is_private: r.is_private,
            size: r.size,
            first_seen: now,
            last_seen: now,
            last_snapshot: None,
            metadata_read_at: None,
        })
        .collect()
}

/// Backs up each of `repos` on `opts.parallelism` threads; the results in `repos`'
/// order.
fn back_up_each(
    ctx: &Context,
    job: &RepoJob,
    repos: &[ListedRepo],
    skipped: &HashMap<String, String>,
    gate: &HttpGate,
) -> Vec<RepoResult> {
    let opts = job.opts;
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, RepoResult)>> = Mutex::new(Vec::new());
    let workers = opts.parallelism.clamp(1, 64).min(repos.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((repo, repo_gate)) = repos.get(i) else {
                    break;
                };
                let t = Instant::now();
                let mut attempts = 0;
                let outcome = match skipped.get(&repo.full_name) {
                    Some(reason) => RepoOutcome::Skipped {
                        reason: reason.clone(),
                    },
                    None => back_up_one(ctx, job, repo, repo_gate, &mut attempts),
                };
                let result = RepoResult {
                    full_name: repo.full_name.clone(),
                    outcome,
                    seconds: t.elapsed().as_secs_f64(),
                    attempts,
                };
                if let RepoOutcome::Failed { reason } = &result.outcome {
                    tracing::warn!("{}: {reason}", repo.full_name);
                }
                opts.progress.finished(&result);
                opts.progress.credentials(&gate.pool().stats());
                if let Ok(mut r) = results.lock() {
                    r.push((i, result));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// One repository's backup, unless the job was stopped or its window closed first:
/// under its lock, with prune's sweep kept away, a panic failing it alone.
fn back_up_one(
    ctx: &Context,
    job: &RepoJob,
    repo: &Repository,
    repo_gate: &Arc<HttpGate>,
    attempts: &mut u32,
) -> RepoOutcome {
    let opts = job.opts;
    if opts.interrupt.load(Ordering::Relaxed) {
        return RepoOutcome::Deferred {
            reason: "the job was stopped before this repository started".into(),
        };
    }
    if opts.deadline.is_some_and(|d| Instant::now() >= d) {
        return RepoOutcome::Deferred {
            reason: "the backup window closed before this repository started".into(),
        };
    }
    opts.progress.started(&repo.full_name);
    // One backup of a repository at a time (another job may hold it).
    let mirror = ctx.mirror_dir(&identity(job.conn, repo));
    let _held = match lock_repository(&mirror, &repo.full_name, opts) {
        Ok(held) => held,
        Err(outcome) => return outcome,
    };
    // A panic fails this repository alone, with its message. Prune's sweep waits until
    // its manifest names the blobs it stored or found (taken after the repository's
    // lock, as prune does).
    let guarded = super::jobs::guard_repository(&repo.full_name, || match ctx.gate()?.shared() {
        Ok(archive) => backup_repository(ctx, job, repo, repo_gate, attempts, &archive),
        Err(e) => Ok(RepoOutcome::Failed {
            reason: e.to_string(),
        }),
    });
    guarded.unwrap_or_else(|e| RepoOutcome::Failed {
        reason: e.to_string(),
    })
}

/// Records the newest snapshot of each repository, and when this job read its
/// metadata (`read_now`, by repository id).
fn remember_results(
    ctx: &Context,
    records: Vec<RepoRecord>,
    results: &[RepoResult],
    read_now: &HashSet<String>,
    now: OffsetDateTime,
) -> Result<(), EngineError> {
    let updated: Vec<RepoRecord> = records
        .into_iter()
        .zip(results)
        .filter_map(|(mut rec, res)| {
            if read_now.contains(&rec.repo_id) {
                rec.metadata_read_at = Some(now);
            }
            match &res.outcome {
                RepoOutcome::Snapshot { id, .. } | RepoOutcome::Partial { id, .. } => {
                    rec.last_snapshot = Some(id.clone());
                    Some(rec)
                }
                _ => rec.metadata_read_at.is_some().then_some(rec),
            }
        })
        .collect();
    ctx.state.upsert_repositories(&updated)?;
    Ok(())
}

/// Takes the repository's lock ([`super::repo_lock`]) for its whole backup, waiting
/// (with a notice) while another job backs it up; the outcome when it gives up.
fn lock_repository(
    mirror: &Path,
    repo: &str,
    opts: &BackupOptions,
) -> Result<super::repo_lock::RepoGuard, RepoOutcome> {
    use super::repo_lock::{acquire, NotAcquired, Wait, MAX_WAIT};
    let on_wait = || {
        opts.progress
            .notice(&format!("waiting for another job backing up {repo}"))
    };
    let wait = Wait {
        interrupt: &opts.interrupt,
        deadline: opts.deadline,
        max_wait: MAX_WAIT,
        on_wait: &on_wait,
    };
    acquire(mirror, &wait).map_err(|why| match why {
        NotAcquired::Interrupted => RepoOutcome::Deferred {
            reason: format!("the job was stopped while waiting for another job backing up {repo}"),
        },
        NotAcquired::Deadline => RepoOutcome::Deferred {
            reason: format!(
                "the backup window closed while waiting for another job backing up {repo}"
            ),
        },
        NotAcquired::TimedOut(d) => RepoOutcome::Failed {
            reason: format!(
                "another job has been backing up {repo} for more than {} minutes; not backed up by this job",
                d.as_secs() / 60
            ),
        },
    })
}

fn identity(conn: &Connection, repo: &Repository) -> RepoIdentity {
    RepoIdentity {
        connection: conn.name.clone(),
        connection_id: conn.id.clone(),
        provider: conn.provider.clone(),
        repo_id: repo.id.clone(),
        full_name: repo.full_name.clone(),
    }
}

/// What every repository of a backup job shares.
struct RepoJob<'a> {
    conn: &'a Connection,
    tls: &'a TlsTrust,
    opts: &'a BackupOptions,
    provider: &'a LoadedProvider,
    /// Scope-level metadata, read once per scope by the job.
    scopes: super::backup_metadata::ScopeCache,
    /// When each repository's metadata was last read (by repository id), before this job.
    metadata_read: HashMap<String, OffsetDateTime>,
    /// The repositories whose metadata this job read.
    metadata_read_now: Mutex<HashSet<String>>,
    /// When the job started.
    started: OffsetDateTime,
}

impl RepoJob<'_> {
    /// Whether this job reads `repo`'s metadata, or carries the previous snapshot's
    /// forward (the plan's `metadata_every` has not passed since it was last read).
    fn reads_metadata(&self, repo: &Repository, previous: Option<&Snapshot>) -> bool {
        match self.opts.metadata {
            MetadataCadence::EveryRun => true,
            MetadataCadence::Never => false,
            MetadataCadence::Every(every) => {
                let has_previous = previous.is_some_and(|p| p.metadata.is_some());
                let last = self.metadata_read.get(&repo.id);
                !has_previous || last.is_none_or(|at| self.started - *at >= every)
            }
        }
    }

    /// The provider's session for a repository, with the credential (gate) it is read with.
    fn session_for(&self, gate: &Arc<HttpGate>) -> ProviderSession<'_> {
        self.provider
            .session(&self.conn.settings, self.conn.credential_kind, gate.clone())
    }
}

/// Backs up one repository: its git data (fetch, new packs archived), then what the
/// provider reports besides (wiki, LFS objects, metadata), and writes a snapshot if
/// any part changed. `attempts` is set to the git fetch attempts made (transient
/// failures retried). Only a failure of the git part fails the repository: any other
/// part that cannot be read is named in the outcome ([`RepoOutcome::Partial`]).
fn backup_repository(
    ctx: &Context,
    job: &RepoJob<'_>,
    repo: &Repository,
    gate: &Arc<HttpGate>,
    attempts: &mut u32,
    archive_use: &SharedGuard<'_>,
) -> Result<RepoOutcome, EngineError> {
    *attempts = 1;
    let clone_url = allowed_url(gate, &repo.full_name, &repo.clone_url)?;
    let ident = identity(job.conn, repo);
    let mirror = ctx.mirror_dir(&ident);
    let previous = ctx.archive()?.latest_snapshot_of(&ident)?;
    check_after_previous(job.opts.taken_at, previous.as_ref(), &repo.full_name)?;
    let target = backup_git::FetchTarget {
        ctx,
        conn: job.conn,
        gate,
        tls: job.tls,
        opts: job.opts,
        repo: &repo.full_name,
        mirror: &mirror,
    };
    let fetched = target.fetch(&mirror, clone_url.as_str(), attempts)?;
    let mut stored = backup_git::Stored::default();
    let git = stored.archive_git(ctx, &fetched, &mirror, previous.as_ref().map(|p| &p.git))?;

    let mut parts = OtherParts::default();
    let session = job.session_for(gate);
    match session.describe_repository(repo) {
        Ok(None) => {}
        Ok(Some(described)) => {
            parts = backup_other_parts(
                job,
                &session,
                &target,
                repo,
                &described,
                previous.as_ref(),
                &mut stored,
            )
        }
        Err(e) => parts.missing.push(format!(
            "parts: the provider could not say what {} holds besides git: {e}",
            repo.full_name
        )),
    }
    finish_snapshot(
        ctx,
        archive_use,
        ident,
        repo,
        previous,
        git,
        parts,
        stored,
        fetched.bytes_received,
        job.opts.taken_at,
    )
}

/// Refuses a `--time` in the future: later backups would be ordered before it.
fn check_taken_at(taken_at: Option<OffsetDateTime>) -> Result<(), EngineError> {
    match taken_at {
        Some(at) if at > OffsetDateTime::now_utc() => Err(EngineError::Field {
            field: "time".into(),
            message: format!(
                "{} is in the future; a backup can be dated now or earlier",
                crate::fmt::fmt_time(at)
            ),
        }),
        _ => Ok(()),
    }
}

/// Refuses a `--time` not after the repository's newest snapshot: a repository's
/// snapshots are ordered by the time they were taken.
fn check_after_previous(
    taken_at: Option<OffsetDateTime>,
    previous: Option<&Snapshot>,
    repo: &str,
) -> Result<(), EngineError> {
    match (taken_at, previous) {
        (Some(at), Some(prev)) if at <= prev.taken_at => Err(EngineError::Field {
            field: "time".into(),
            message: format!(
                "{repo}: {} is not after its newest snapshot {} (taken {}); snapshots of a repository are dated in order",
                crate::fmt::fmt_time(at),
                prev.id,
                crate::fmt::fmt_time(prev.taken_at)
            ),
        }),
        _ => Ok(()),
    }
}

/// What a repository holds besides git, as backed up by this run.
#[derive(Default)]
struct OtherParts {
    wiki: Option<GitPart>,
    lfs: Option<LfsPart>,
    metadata: Option<MetadataPart>,
    /// Parts that could not be read, one line each.
    missing: Vec<String>,
}

/// Backs up the wiki, the LFS objects and the metadata the provider described. A part
/// that fails is recorded in `missing` and the others go on.
#[allow(clippy::too_many_arguments)]
fn backup_other_parts(
    job: &RepoJob<'_>,
    session: &ProviderSession<'_>,
    target: &backup_git::FetchTarget<'_>,
    repo: &Repository,
    described: &RepositoryParts,
    previous: Option<&Snapshot>,
    stored: &mut backup_git::Stored,
) -> OtherParts {
    let ctx = target.ctx;
    let mut parts = OtherParts::default();
    for extra in &described.git {
        if extra.name != "wiki" {
            parts.missing.push(format!(
                "{}: a git part this version of reposafe does not store",
                extra.name
            ));
            continue;
        }
        match backup_wiki(
            target,
            &extra.url,
            stored,
            previous.and_then(|p| p.wiki.as_ref()),
        ) {
            Ok(wiki) => parts.wiki = wiki,
            // The wiki is on but was never written: there is nothing to back up.
            Err(EngineError::Git(git::GitError::NotFound { .. })) => {}
            Err(e) => parts.missing.push(format!("wiki: {e}")),
        }
    }
    if let Some(lfs_url) = &described.lfs_url {
        let (lfs, bytes, failure) = super::backup_lfs::lfs_part(
            ctx,
            target.gate,
            lfs_url,
            target.mirror,
            &stored.repo_packs,
            previous,
            job.opts,
            &repo.full_name,
        );
        stored.new_bytes += bytes;
        if let Some(part) = &lfs {
            parts.missing.extend(
                part.missing
                    .iter()
                    .map(|m| format!("lfs: object {} ({} bytes): {}", m.oid, m.size, m.reason)),
            );
        }
        parts.missing.extend(failure.map(|e| format!("lfs: {e}")));
        parts.lfs = lfs;
    }
    let previous_meta = previous.and_then(|p| p.metadata.as_ref());
    if job.opts.metadata == MetadataCadence::Never {
        // The plan backs up no metadata.
    } else if !described.metadata.is_empty() && !job.reads_metadata(repo, previous) {
        // Read recently (the plan's `metadata_every`): carried forward as it was.
        parts.metadata = previous_meta.cloned();
    } else if !described.metadata.is_empty() {
        let run = super::backup_metadata::MetadataRun {
            ctx,
            session,
            gate: target.gate,
            repo,
            scopes: &job.scopes,
        };
        let read = run.backup(&described.metadata, previous_meta, &mut stored.new_bytes);
        if let Ok(mut r) = job.metadata_read_now.lock() {
            r.insert(repo.id.clone());
        }
        match read {
            Ok(part) => {
                parts.missing.extend(
                    part.missing
                        .iter()
                        .map(|m| format!("{}: {}", m.kind, m.reason)),
                );
                parts.metadata = Some(part);
            }
            Err(e) => parts.missing.push(format!("metadata: {e}")),
        }
    }
    parts
}

/// Fetches the wiki into its own mirror (`<repo-dir>.wiki.git`, beside the
/// repository's) and archives it; `None` when the wiki has no refs yet.
fn backup_wiki(
    target: &backup_git::FetchTarget<'_>,
    url: &str,
    stored: &mut backup_git::Stored,
    previous: Option<&GitPart>,
) -> Result<Option<GitPart>, EngineError> {
    let url = allowed_url(target.gate, &format!("{} (wiki)", target.repo), url)?;
    let wiki_mirror = Context::wiki_mirror_dir(target.mirror);
    let mut attempts = 0;
    let fetched = target.fetch(&wiki_mirror, url.as_str(), &mut attempts)?;
    if fetched.refs.is_empty() {
        return Ok(None);
    }
    stored
        .archive_git(target.ctx, &fetched, &wiki_mirror, previous)
        .map(Some)
}

/// Writes the snapshot of a repository's parts, unless every part equals the newest
/// snapshot's (then nothing is written).
#[allow(clippy::too_many_arguments)]
fn finish_snapshot(
    ctx: &Context,
    archive_use: &SharedGuard<'_>,
    ident: RepoIdentity,
    repo: &Repository,
    previous: Option<Snapshot>,
    git: GitPart,
    parts: OtherParts,
    stored: backup_git::Stored,
    fetched_bytes: u64,
    taken_at: Option<OffsetDateTime>,
) -> Result<RepoOutcome, EngineError> {
    let outcome = |id: String, new_bytes: u64| {
        if parts.missing.is_empty() {
            if new_bytes == 0 {
                RepoOutcome::Unchanged { last_snapshot: id }
            } else {
                RepoOutcome::Snapshot {
                    id,
                    new_bytes,
                    fetched_bytes,
                }
            }
        } else {
            RepoOutcome::Partial {
                id,
                new_bytes,
                fetched_bytes,
                missing: parts.missing.clone(),
            }
        }
    };
    if let Some(prev) = &previous {
        if prev.git == git
            && prev.wiki == parts.wiki
            && prev.lfs == parts.lfs
            && prev.metadata == parts.metadata
        {
            return Ok(outcome(prev.id.to_string(), 0));
        }
    }
    let now = taken_at.unwrap_or_else(OffsetDateTime::now_utc);
    let mut snap = Snapshot {
        format: FORMAT_VERSION,
        id: SnapshotId::new(now),
        repository: ident,
        taken_at: now,
        git,
        wiki: parts.wiki.clone(),
        lfs: parts.lfs.clone(),
        metadata: parts.metadata.clone(),
        main_branch: repo.main_branch.clone(),
        stats: SnapshotStats {
            new_bytes: stored.new_bytes,
            pack_bytes: stored.pack_bytes,
            fetched_bytes,
        },
    };
    // Snapshot ids carry the second; keep them strictly ordered per repository.
    if let Some(prev) = &previous {
        if prev.taken_at >= snap.taken_at {
            snap.taken_at = prev.taken_at + time::Duration::milliseconds(1);
        }
    }
    // What this backup found in the archive is still there (see `archive_lease`).
    archive_use.still_valid()?;
    let manifest = ctx.archive()?.write_snapshot(&snap)?;
    // A snapshot is never reported as storing 0 bytes: its manifest is new.
    Ok(outcome(snap.id.to_string(), stored.new_bytes + manifest))
}

/// `url` without any user name or password in it, refused unless its origin is one of
/// the connection's (the credential is sent there).
fn allowed_url(gate: &HttpGate, what: &str, url: &str) -> Result<url::Url, EngineError> {
    let mut parsed = url::Url::parse(url).map_err(|e| {
        EngineError::ProviderAnswer(format!("{what}: clone URL {url:?} is not a URL: {e}"))
    })?;
    // Never send a credential to a URL carrying someone else's user name.
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    if !gate.is_allowed(parsed.as_str()) {
        return Err(EngineError::ProviderAnswer(format!(
            "{what}: clone URL host {} is not one of the connection's hosts; refusing to send the credential there",
            parsed.host_str().unwrap_or("?")
        )));
    }
    Ok(parsed)
}
