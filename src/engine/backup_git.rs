//! A repository's git parts in a backup: the fetch into its bare mirror (failing over
//! across the job's credentials as every provider request does) and the archiving of
//! the mirror's packs and refs as a snapshot's [`GitPart`]. Used for the repository
//! itself and for its wiki.

use super::backup::BackupOptions;
use super::{Context, EngineError};
use crate::archive::{BlobId, GitPart};
use crate::git::{self, FetchOptions, GitError};
use crate::providers::failover::{self, Event, Outcome};
use crate::providers::pool::PoolExhausted;
use crate::providers::{CredentialPool, HttpGate};
use crate::state::Connection;
use crate::tls::TlsTrust;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// What a repository's fetches share: where to fetch from and with which credentials.
pub(super) struct FetchTarget<'a> {
    pub ctx: &'a Context,
    pub conn: &'a Connection,
    pub gate: &'a HttpGate,
    pub tls: &'a TlsTrust,
    pub opts: &'a BackupOptions,
    /// The repository's full name, for progress and notices.
    pub repo: &'a str,
    /// The repository's mirror (its wiki's is beside it).
    pub mirror: &'a Path,
}

impl FetchTarget<'_> {
    /// Fetches `url` into the bare mirror at `mirror`. `attempts` is set to the fetch
    /// attempts made.
    ///
    /// The fetch fails over as every provider request does (`failover`): each attempt
    /// goes to the pool's credential with the most budget left, and every HTTP request of
    /// it is paced on that credential's principal. A 429 cools the principal down (the
    /// server's `Retry-After` when git could read it) and the fetch moves on; a 401/403
    /// takes the credential out of the job when others remain; network failures and 5xx
    /// are retried with back-off.
    pub fn fetch(
        &self,
        mirror: &Path,
        url: &str,
        attempts: &mut u32,
    ) -> Result<git::FetchOutcome, EngineError> {
        if let Some(parent) = mirror.parent() {
            std::fs::create_dir_all(parent).map_err(|e| EngineError::DataDir {
                path: parent.to_path_buf(),
                reason: e.to_string(),
            })?;
        }
        let (opts, name) = (self.opts, self.repo.to_string());
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
        let pool = self.gate.pool().clone();
        let mut fetch = GitFetch {
            conn: self.conn,
            gate: self.gate,
            pool: &pool,
            mirror,
            url,
            tls: self.tls,
            opts,
            on_bytes: &on_bytes,
            repo: self.repo,
        };
        let policy = failover::Policy::backing_off(
            opts.retries,
            opts.retry_base,
            MAX_FETCH_BACKOFF,
            self.ctx.retry.max_retries + pool.len() as u32,
        );
        let notice = |m: &str| opts.progress.notice(m);
        let finished = failover::run(&pool, &policy, Some(&opts.interrupt), &notice, &mut fetch);
        *attempts = finished.attempts;
        finished.output
    }
}

/// What a repository's backup stored so far, and the packs it archived.
#[derive(Default)]
pub(super) struct Stored {
    /// Bytes added to the archive.
    pub new_bytes: u64,
    /// Uncompressed size of every pack the git parts need.
    pub pack_bytes: u64,
    /// Every pack of the repository's mirror (not the wiki's), with its blob.
    pub repo_packs: Vec<(PathBuf, BlobId)>,
}

impl Stored {
    /// Archives every pack of a fetched mirror that is not archived yet (usually the one
    /// pack this fetch produced; after a crash also earlier ones) and its refs.
    ///
    /// When the refs equal `previous`'s and every pack is one `previous` names (known
    /// from the mirror's record of archived packs), nothing is looked up in the archive:
    /// an unchanged repository costs no request to an object store.
    pub fn archive_git(
        &mut self,
        ctx: &Context,
        fetched: &git::FetchOutcome,
        mirror: &Path,
        previous: Option<&GitPart>,
    ) -> Result<GitPart, EngineError> {
        let refs_json = serde_json::to_vec(&fetched.refs)
            .map_err(|e| EngineError::Internal(format!("cannot encode refs: {e}")))?;
        let mut known = ArchivedPacks::load(mirror);
        if let Some(part) = previous.and_then(|p| known.unchanged(ctx, fetched, &refs_json, p)) {
            self.note_packs(fetched, &part.packs);
            return Ok(part);
        }
        let mut packs: Vec<BlobId> = Vec::with_capacity(fetched.packs.len());
        for pack in &fetched.packs {
            let id = match ctx.archive()?.pack_blob(&pack.pack_hash)? {
                Some(id) => id,
                None => {
                    let out = ctx.archive()?.put_file(&pack.path)?;
                    ctx.archive()?.record_pack(&pack.pack_hash, &out.id)?;
                    self.new_bytes += out.stored_bytes;
                    out.id
                }
            };
            known.insert(&pack.pack_hash, id);
            packs.push(id);
        }
        known.save(mirror);
        self.note_packs(fetched, &packs);
        let refs_put = ctx.archive()?.put_bytes(&refs_json)?;
        self.new_bytes += refs_put.stored_bytes;
        Ok(GitPart {
            refs: refs_put.id,
            ref_count: fetched.refs.len() as u32,
            packs,
        })
    }

    /// Counts the fetched packs and, for the repository's own mirror (the first git
    /// part archived), remembers them with their blobs.
    fn note_packs(&mut self, fetched: &git::FetchOutcome, blobs: &[BlobId]) {
        self.pack_bytes += fetched.packs.iter().map(|p| p.size).sum::<u64>();
        if self.repo_packs.is_empty() {
            self.repo_packs = fetched
                .packs
                .iter()
                .zip(blobs)
                .map(|(p, id)| (p.path.clone(), *id))
                .collect();
        }
    }
}

/// The mirror's record of which blob holds each of its packs (`reposafe-packs` in the
/// mirror, lines `<pack hash> <blob id>`): a cache, only ever trusted for packs the
/// previous snapshot names, rebuilt from the archive's pack index when absent.
#[derive(Default)]
struct ArchivedPacks {
    blobs: std::collections::BTreeMap<String, BlobId>,
    changed: bool,
}

impl ArchivedPacks {
    const FILE: &'static str = "reposafe-packs";

    fn load(mirror: &Path) -> ArchivedPacks {
        let text = std::fs::read_to_string(mirror.join(Self::FILE)).unwrap_or_default();
        let blobs = text
            .lines()
            .filter_map(|l| {
                let (hash, blob) = l.split_once(' ')?;
                Some((hash.to_string(), BlobId::parse(blob).ok()?))
            })
            .collect();
        ArchivedPacks {
            blobs,
            changed: false,
        }
    }

    fn insert(&mut self, pack_hash: &str, id: BlobId) {
        if self.blobs.insert(pack_hash.to_string(), id) != Some(id) {
            self.changed = true;
        }
    }

    /// Written whole and renamed into place; a failure only costs lookups next time.
    fn save(&self, mirror: &Path) {
        if !self.changed || !mirror.is_dir() {
            return;
        }
        let text: String = self
            .blobs
            .iter()
            .map(|(hash, id)| format!("{hash} {id}\n"))
            .collect();
        crate::archive::keep_copy(&mirror.join(Self::FILE), text.as_bytes());
    }

    /// `previous` itself when the fetched refs encode to its refs blob and each fetched
    /// pack is recorded with a blob `previous` names.
    fn unchanged(
        &self,
        ctx: &Context,
        fetched: &git::FetchOutcome,
        refs_json: &[u8],
        previous: &GitPart,
    ) -> Option<GitPart> {
        if ctx.archive().ok()?.blob_id_of(refs_json) != previous.refs {
            return None;
        }
        let packs = fetched
            .packs
            .iter()
            .map(|p| {
                self.blobs
                    .get(&p.pack_hash)
                    .filter(|id| previous.packs.contains(id))
                    .copied()
            })
            .collect::<Option<Vec<BlobId>>>()?;
        (packs == previous.packs).then(|| previous.clone())
    }
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
        let progress = self.opts.progress.clone();
        let auth =
            super::credentials::paced_git_auth(self.pool, lane, move |m| progress.notice(m))?;
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
