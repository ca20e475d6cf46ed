//! Backing up every repository of a connection.

use super::connections::tls_for;
use super::listing;
use super::{Context, EngineError};
use crate::archive::{
    BlobId, GitPart, RepoIdentity, Snapshot, SnapshotId, SnapshotStats, FORMAT_VERSION,
};
use crate::git::{self, FetchOptions, GitAuth, GitError};
use crate::providers::failover::{self, Event, Outcome};
use crate::providers::pool::PoolExhausted;
use crate::providers::{CredentialPool, CredentialStats, HttpGate, Repository};
use crate::state::{Connection, RepoRecord};
use crate::tls::TlsTrust;
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
                RepoOutcome::Snapshot { new_bytes, .. } => new_bytes,
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
    let conn = ctx.state.connection(connection)?;
    let cred = ctx
        .vault
        .unseal(&ctx.state.sealed_credential(connection)?)?;
    let tls = tls_for(ctx, connection)?;
    if tls.is_insecure() {
        opts.progress.notice(&tls.insecure_warning());
    }
    let progress = opts.progress.clone();
    // The primary credential, plus the additional ones the plan enabled, share one
    // pool: listing and git fetches spread over them.
    let gate = Arc::new(
        super::credentials::pooled_gate(ctx, &conn, cred, &opts.additional_credentials, &tls)?
            .with_notice(move |m| progress.notice(m)),
    );
    let provider = ctx.providers.get(&conn.provider)?;
    let session = provider.session(&conn.settings, conn.credential_kind, gate.clone());
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
    let fail = |e: crate::providers::ProviderError| EngineError::Connection {
        connection: conn.name.clone(),
        reason: e.to_string(),
    };
    let listed = listing::list_repositories(ctx, &conn, &tls, &gate, &session, &opts.progress)
        .map_err(|e| match e {
            EngineError::Provider(e) => fail(e),
            other => other,
        })?;
    let mut repos = listed.repos;
    // Skip reasons by full name (a plan may list a repository but not back it up).
    let mut skipped: std::collections::HashMap<String, String> = Default::default();
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
    if !opts.only.is_empty() {
        for want in &opts.only {
            if !repos.iter().any(|(r, _)| &r.full_name == want) {
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
        }
        repos.retain(|(r, _)| opts.only.contains(&r.full_name));
    }
    let skip_reason = |i: usize| {
        repos
            .get(i)
            .and_then(|(r, _)| skipped.get(&r.full_name))
            .cloned()
    };
    opts.progress.listed(repos.len());

    let now = OffsetDateTime::now_utc();
    let records: Vec<RepoRecord> = repos
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
        })
        .collect();
    ctx.state.upsert_repositories(&records)?;

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
                let outcome = if let Some(reason) = skip_reason(i) {
                    RepoOutcome::Skipped { reason }
                } else if opts.interrupt.load(Ordering::Relaxed) {
                    RepoOutcome::Deferred {
                        reason: "the job was stopped before this repository started".into(),
                    }
                } else if opts.deadline.is_some_and(|d| Instant::now() >= d) {
                    RepoOutcome::Deferred {
                        reason: "the backup window closed before this repository started".into(),
                    }
                } else {
                    opts.progress.started(&repo.full_name);
                    // One backup of a repository at a time (another job may hold it).
                    let mirror = ctx.mirror_dir(&identity(&conn, repo));
                    match lock_repository(&mirror, &repo.full_name, opts) {
                        Err(outcome) => outcome,
                        // A panic fails this repository alone, with its message.
                        Ok(_held) => match super::jobs::guard_repository(&repo.full_name, || {
                            backup_repository(
                                ctx,
                                &conn,
                                repo_gate,
                                &tls,
                                repo,
                                opts,
                                &mut attempts,
                            )
                        }) {
                            Ok(o) => o,
                            Err(e) => RepoOutcome::Failed {
                                reason: e.to_string(),
                            },
                        },
                    }
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
    let repositories: Vec<RepoResult> = results.into_iter().map(|(_, r)| r).collect();

    // Remember the newest snapshot of each repository.
    let updated: Vec<RepoRecord> = records
        .into_iter()
        .zip(&repositories)
        .filter_map(|(mut rec, res)| match &res.outcome {
            RepoOutcome::Snapshot { id, .. } => {
                rec.last_snapshot = Some(id.clone());
                Some(rec)
            }
            _ => None,
        })
        .collect();
    ctx.state.upsert_repositories(&updated)?;

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

/// Backs up one repository: fetch, archive new packs, write a snapshot if refs changed.
/// `attempts` is set to the fetch attempts made (transient failures retried).
fn backup_repository(
    ctx: &Context,
    conn: &Connection,
    gate: &HttpGate,
    tls: &TlsTrust,
    repo: &Repository,
    opts: &BackupOptions,
    attempts: &mut u32,
) -> Result<RepoOutcome, EngineError> {
    *attempts = 1;
    let mut clone_url = url::Url::parse(&repo.clone_url).map_err(|e| {
        EngineError::ProviderAnswer(format!(
            "{}: clone URL {:?} is not a URL: {e}",
            repo.full_name, repo.clone_url
        ))
    })?;
    // Never send a credential to a URL carrying someone else's user name.
    let _ = clone_url.set_username("");
    let _ = clone_url.set_password(None);
    if !gate.is_allowed(clone_url.as_str()) {
        return Err(EngineError::ProviderAnswer(format!(
            "{}: clone URL host {} is not one of the connection's hosts; refusing to send the credential there",
            repo.full_name,
            clone_url.host_str().unwrap_or("?")
        )));
    }
    let ident = identity(conn, repo);
    let mirror = ctx.mirror_dir(&ident);
    if let Some(parent) = mirror.parent() {
        std::fs::create_dir_all(parent).map_err(|e| EngineError::DataDir {
            path: parent.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    let name = repo.full_name.clone();
    let progress = opts.progress.clone();
    let last_report = Mutex::new(Instant::now() - Duration::from_secs(1));
    let on_bytes = move |b: u64| {
        if let Ok(mut t) = last_report.lock() {
            if t.elapsed() >= Duration::from_millis(200) {
                *t = Instant::now();
                progress.fetched_bytes(&name, b);
            }
        }
    };
    // The fetch fails over as every provider request does (`failover`): each attempt
    // goes to the pool's credential with the most budget left, and every HTTP request of
    // it is paced on that credential's principal. A 429 cools the principal down (the
    // server's `Retry-After` when git could read it) and the fetch moves on; a 401/403
    // takes the credential out of the job when others remain; network failures and 5xx
    // are retried with back-off.
    let pool = gate.pool().clone();
    let mut fetch = GitFetch {
        conn,
        gate,
        pool: &pool,
        mirror: &mirror,
        url: clone_url.as_str(),
        tls,
        opts,
        on_bytes: &on_bytes,
        repo: &repo.full_name,
    };
    let policy = failover::Policy {
        retries: opts.retries,
        backoff: opts.retry_base,
        network_wait_cap: MAX_FETCH_BACKOFF,
        max_wait: MAX_FETCH_BACKOFF,
        rate_limit_retries: ctx.retry.max_retries + pool.len() as u32,
        when_exhausted: failover::WhenExhausted::BackOff,
    };
    let notice = |m: &str| opts.progress.notice(m);
    let finished = failover::run(&pool, &policy, Some(&opts.interrupt), &notice, &mut fetch);
    *attempts = finished.attempts;
    let fetched = finished.output?;

    // Archive every pack of the mirror that is not archived yet. Usually that is
    // the one pack this fetch produced; after a crash it also catches up earlier ones.
    let mut new_bytes = 0u64;
    let mut pack_bytes = 0u64;
    let mut packs: Vec<BlobId> = Vec::with_capacity(fetched.packs.len());
    for pack in &fetched.packs {
        pack_bytes += pack.size;
        let id = match ctx.archive.pack_blob(&pack.pack_hash)? {
            Some(id) => id,
            None => {
                let file = std::fs::File::open(&pack.path).map_err(|e| EngineError::DataDir {
                    path: pack.path.clone(),
                    reason: e.to_string(),
                })?;
                let out = ctx.archive.put_reader(file)?;
                ctx.archive.record_pack(&pack.pack_hash, &out.id)?;
                new_bytes += out.stored_bytes;
                out.id
            }
        };
        packs.push(id);
    }
    let refs_json = serde_json::to_vec(&fetched.refs)
        .map_err(|e| EngineError::Internal(format!("cannot encode refs: {e}")))?;
    let refs_put = ctx.archive.put_bytes(&refs_json)?;
    new_bytes += refs_put.stored_bytes;

    let git_part = GitPart {
        refs: refs_put.id,
        ref_count: fetched.refs.len() as u32,
        packs,
    };
    let previous = ctx.archive.latest_snapshot_of(&ident)?;
    // The Git LFS objects its pointers name (`backup_lfs`).
    let packs_at: Vec<_> = (fetched.packs.iter().map(|p| p.path.clone()))
        .zip(git_part.packs.iter().copied())
        .collect();
    let (lfs, lfs_bytes) = super::backup_lfs::lfs_part(
        ctx,
        gate,
        clone_url.as_str(),
        &mirror,
        &packs_at,
        previous.as_ref(),
        opts,
        &repo.full_name,
    );
    new_bytes += lfs_bytes;
    if let Some(prev) = &previous {
        if prev.git == git_part && prev.lfs == lfs {
            return Ok(RepoOutcome::Unchanged {
                last_snapshot: prev.id.to_string(),
            });
        }
    }
    let now = OffsetDateTime::now_utc();
    let mut snap = Snapshot {
        format: FORMAT_VERSION,
        id: SnapshotId::new(now),
        repository: ident,
        taken_at: now,
        git: git_part,
        wiki: None,
        lfs,
        metadata: None,
        main_branch: repo.main_branch.clone(),
        stats: SnapshotStats {
            new_bytes,
            pack_bytes,
            fetched_bytes: fetched.bytes_received,
        },
    };
    // Snapshot ids carry the second; keep them strictly ordered per repository.
    if let Some(prev) = &previous {
        if prev.taken_at >= snap.taken_at {
            snap.taken_at = prev.taken_at + time::Duration::milliseconds(1);
        }
    }
    let manifest = ctx.archive.write_snapshot(&snap)?;
    Ok(RepoOutcome::Snapshot {
        id: snap.id.to_string(),
        new_bytes: new_bytes + manifest,
        fetched_bytes: fetched.bytes_received,
    })
}

/// Longest back-off between two fetch attempts of a repository.
const MAX_FETCH_BACKOFF: Duration = Duration::from_secs(60);

/// One repository's git fetch, as [`failover::run`] makes it.
struct GitFetch<'a> {
    conn: &'a Connection,
    gate: &'a HttpGate,
    pool: &'a Arc<CredentialPool>,
    mirror: &'a Path,
    url: &'a str,
    tls: &'a TlsTrust,
    opts: &'a BackupOptions,
    on_bytes: &'a (dyn Fn(u64) + Sync),
    /// The repository's full name, for notices.
    repo: &'a str,
}

type Fetched = Result<git::FetchOutcome, EngineError>;

impl failover::Attempts for GitFetch<'_> {
    type Output = Fetched;

    fn attempt(&mut self, lane: usize, _attempt: u32) -> Fetched {
        let header = self.pool.auth(lane).git_header()?;
        let pacer = {
            let (pool, progress) = (self.pool.clone(), self.opts.progress.clone());
            git::Pacer(Arc::new(move || pool.pace(lane, &|m| progress.notice(m))))
        };
        let auth = GitAuth::Paced {
            header,
            before_request: pacer,
        };
        let fetch_opts = FetchOptions {
            url: self.url,
            auth: &auth,
            progress: Some(self.on_bytes),
            should_interrupt: &self.opts.interrupt,
            tls: Some(self.tls),
        };
        let out = git::fetch_mirror(self.mirror, &fetch_opts)?;
        if let Some(reason) = &out.rebuilt {
            // A crash (or the disk) damaged the mirror; the archive still has every pack.
            self.opts.progress.notice(&format!(
                "{}: its mirror was unusable and was rebuilt with a fresh fetch ({reason})",
                self.repo
            ));
        }
        Ok(out)
    }

    fn outcome(&self, output: &Fetched) -> Outcome {
        let git = match output {
            Ok(_) => return Outcome::Success,
            Err(EngineError::Git(g)) => g,
            Err(_) => return Outcome::Final,
        };
        match git {
            GitError::RateLimited { retry_after, .. } => Outcome::RateLimited {
                retry_after: retry_after
                    .as_deref()
                    .and_then(|v| failover::parse_retry_after(v, OffsetDateTime::now_utc())),
            },
            GitError::Unauthorized { .. } | GitError::Forbidden { .. } => Outcome::Refused {
                status: if matches!(git, GitError::Unauthorized { .. }) {
                    401
                } else {
                    403
                },
                renewable: false,
                reason: git.to_string(),
            },
            g if g.is_transient() => Outcome::Network,
            _ => Outcome::Final,
        }
    }

    fn event(&mut self, event: &Event<'_>, output: &Fetched) {
        let progress = &self.opts.progress;
        let repo = self.repo;
        match event {
            Event::RateLimited {
                credential,
                cooldown,
                others,
                going_on,
            } => {
                self.gate.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                if !going_on {
                    return;
                }
                let secs = failover::secs_ceil(*cooldown);
                progress.notice(&if *others {
                    format!(
                        "{repo}: credential {credential} rate limited (git), cooling down {secs} s; another credential takes over"
                    )
                } else {
                    format!("{repo}: rate limited (git), waiting {secs} s")
                });
            }
            Event::Refused { credential } => {
                if let Err(e) = output {
                    progress.notice(&format!(
                        "credential {credential} was refused ({e}); continuing with the others"
                    ));
                }
            }
            Event::Retrying { after } => {
                if let Err(e) = output {
                    progress.notice(&format!("{repo}: {e}; retrying in {} s", after.as_secs()));
                }
            }
        }
    }

    fn no_credential(&mut self, err: PoolExhausted) -> Fetched {
        Err(EngineError::Connection {
            connection: self.conn.name.clone(),
            reason: format!("{}: {err}", self.repo),
        })
    }
}
