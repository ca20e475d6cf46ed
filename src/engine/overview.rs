//! The appliance at a glance (the dashboard's overview and `GET /api/v1/status`):
//! archive size against what its snapshots hold (deduplication), each plan's last
//! success and failure and next runs, the repositories whose latest backup failed,
//! and warnings an admin should act on (the archive that cannot be used, a disk running
//! low, a plugin that did not load, a credential that failed in the last job, a
//! connection whose last check failed, a notification not delivered), which the daily
//! digest repeats.

use super::plans::{schedule_of, zone_of};
use super::{Context, EngineError};
use crate::state::{Job, JobKind, JobState, Plan};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// How many recent jobs the overview reads for failures and warnings.
const RECENT_JOBS: usize = 50;
/// How long the archive totals (a read of every manifest) are reused.
const TOTALS_TTL: Duration = Duration::from_secs(60);
/// How long the totals of an archive in object storage are reused, its size included:
/// measuring it lists every object of the archive (a request per thousand).
const SHARED_TOTALS_TTL: Duration = Duration::from_secs(900);

/// The data dir at a glance.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Overview {
    pub data_dir: String,
    pub archive_bytes: u64,
    /// Where the archive is: a directory, or `s3://BUCKET/PREFIX`.
    #[serde(default)]
    pub archive_location: String,
    /// The S3 endpoint of an archive in a bucket (`AWS` for AWS's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_endpoint: Option<String>,
    /// Whether the archive can be used now (when not, the first warning says why, and
    /// the totals are the last measured).
    #[serde(default = "available")]
    pub archive_available: bool,
    /// Whether the archive is encrypted at rest (of one that cannot be used now: as
    /// the data dir records it, which only an archive in a bucket does).
    #[serde(default)]
    pub archive_encrypted: bool,
    pub version: String,
    /// What the snapshots' packs add up to, uncompressed and counted once per
    /// snapshot: what keeping every snapshot as a full copy would take.
    #[serde(default)]
    pub logical_bytes: u64,
    #[serde(default)]
    pub snapshots: u64,
    #[serde(default)]
    pub connections: usize,
    #[serde(default)]
    pub repositories: usize,
    #[serde(default)]
    pub plans: Vec<PlanGlance>,
    /// Repositories whose latest result in the recent jobs is a failure.
    #[serde(default)]
    pub failing: Vec<FailingRepository>,
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// An overview from an older daemon said nothing of the archive's availability.
fn available() -> bool {
    true
}

impl Overview {
    /// Logical bytes per archived byte, when both are known.
    pub fn dedup_ratio(&self) -> Option<f64> {
        (self.archive_bytes > 0 && self.logical_bytes > 0)
            .then(|| self.logical_bytes as f64 / self.archive_bytes as f64)
    }
}

/// A plan's state at a glance.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlanGlance {
    pub name: String,
    pub enabled: bool,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_success: Option<OffsetDateTime>,
    #[serde(default)]
    pub last_failure: Option<JobFailure>,
    /// The next scheduled runs (none: on demand, or disabled).
    #[serde(default, with = "crate::fmt::rfc3339_list")]
    pub next_runs: Vec<OffsetDateTime>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobFailure {
    pub job: u64,
    /// `failed`, `partial` or `interrupted`.
    pub state: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FailingRepository {
    pub connection: String,
    pub repository: String,
    pub job: u64,
    pub reason: String,
}

/// Archive totals (size, logical bytes, snapshot count). A local archive's are reused
/// for [`TOTALS_TTL`] while its size on disk (the key) stays the same: a new snapshot
/// shows at once, an unchanged archive is not read again on every page view. An
/// archive in object storage is measured at most every [`SHARED_TOTALS_TTL`], and the
/// last totals stand in while the store cannot be reached.
#[derive(Default)]
pub struct TotalsCache(Mutex<Option<CachedTotals>>);

#[derive(Clone, Copy)]
struct CachedTotals {
    at: Instant,
    archive_bytes: u64,
    logical: u64,
    snapshots: u64,
}

/// Builds the overview.
pub fn overview(
    ctx: &Context,
    cache: &TotalsCache,
    now: OffsetDateTime,
) -> Result<Overview, EngineError> {
    let repos = ctx.state.repositories(None)?;
    let place = super::archive_location::recorded_place(&ctx.data_dir)?;
    let (archive_bytes, logical_bytes, snapshots, unavailable) = match archive_totals(ctx, cache) {
        Ok((bytes, logical, snapshots)) => (bytes, logical, snapshots, None),
        // The rest of the overview still answers: the archive is named first.
        Err(e @ EngineError::ArchiveUnavailable(_)) => {
            let (bytes, logical, snapshots) = last_totals(cache);
            (bytes, logical, snapshots, Some(e))
        }
        Err(e) => return Err(e),
    };
    let attached = ctx.archive.current();
    let jobs = ctx.state.jobs(RECENT_JOBS)?;
    let warnings = warnings(ctx, &place, unavailable.as_ref(), &jobs)?;
    Ok(Overview {
        data_dir: ctx.data_dir.display().to_string(),
        archive_bytes,
        archive_location: match attached {
            Some(a) => a.archive.location().display().to_string(),
            None => place.location,
        },
        archive_endpoint: place.endpoint,
        archive_available: attached.is_some(),
        archive_encrypted: match attached {
            Some(a) => a.archive.key().is_some(),
            None => place.encrypted_to.is_some(),
        },
        version: env!("CARGO_PKG_VERSION").to_string(),
        logical_bytes,
        snapshots,
        connections: ctx.state.connections()?.len(),
        repositories: repos.len(),
        plans: ctx
            .state
            .plans()?
            .iter()
            .map(|p| plan_glance(p, &jobs, now))
            .collect(),
        failing: failing_repositories(ctx, &jobs)?,
        warnings,
    })
}

/// [`warnings`] as they stand now, for the daily digest: the archive is opened if it
/// is not yet, nothing is measured.
pub(super) fn warnings_now(ctx: &Context) -> Result<Vec<String>, EngineError> {
    let place = super::archive_location::recorded_place(&ctx.data_dir)?;
    let unavailable = match ctx.archive() {
        Ok(_) => None,
        Err(e @ EngineError::ArchiveUnavailable(_)) => Some(e),
        Err(e) => return Err(e),
    };
    let jobs = ctx.state.jobs(RECENT_JOBS)?;
    warnings(ctx, &place, unavailable.as_ref(), &jobs)
}

/// What an admin should act on now, most urgent first: the archive that cannot be used
/// (`unavailable`, when opening it failed), a disk running low, a plugin that did not
/// load, a credential that failed in a recent job (`jobs`, newest first), a connection
/// whose last check failed, a notification that was not delivered. The overview shows
/// them; the daily digest repeats them.
pub(super) fn warnings(
    ctx: &Context,
    place: &super::archive_location::RecordedPlace,
    unavailable: Option<&EngineError>,
    jobs: &[Job],
) -> Result<Vec<String>, EngineError> {
    let mut warnings = Vec::new();
    if let Some(e) = unavailable {
        warnings.push(format!(
            "{e}; backups, restores and checks fail until it can, and the backups it holds are not touched"
        ));
    }
    let disks = super::disk_space::watched(&ctx.data_dir, place);
    warnings.extend(
        super::disk_space::low_space(&disks)
            .into_iter()
            .map(|low| low.warning),
    );
    warnings.extend(
        ctx.providers
            .load_errors
            .iter()
            .map(|e| format!("a provider plugin did not load: {e}")),
    );
    warnings.extend(credential_warnings(jobs));
    warnings.extend(
        ctx.state
            .connection_checks()?
            .into_iter()
            .filter_map(|(name, c)| {
                (!c.ok).then(|| {
                    format!(
                        "connection {name}: its last check failed at {}: {}",
                        crate::fmt::fmt_time(c.at),
                        c.reason.unwrap_or_default()
                    )
                })
            }),
    );
    // issue 14 (N): a notification that could not be delivered
    warnings.extend(super::notifications::delivery_warning(ctx)?);
    Ok(warnings)
}

/// The last totals measured (zeros before the first): what an archive that cannot be
/// used now showed.
fn last_totals(cache: &TotalsCache) -> (u64, u64, u64) {
    let guard = cache.0.lock().unwrap_or_else(|p| p.into_inner());
    guard.map_or((0, 0, 0), |c| (c.archive_bytes, c.logical, c.snapshots))
}

/// The archive's size, the logical bytes its snapshots hold and their number, from
/// `cache` while fresh: a local archive is measured on every call (re-read when its size
/// changed), one in object storage at most every [`SHARED_TOTALS_TTL`].
fn archive_totals(ctx: &Context, cache: &TotalsCache) -> Result<(u64, u64, u64), EngineError> {
    let archive = ctx.archive()?;
    let mut guard = cache.0.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = *guard {
        if archive.is_shared() && c.at.elapsed() < SHARED_TOTALS_TTL {
            return Ok((c.archive_bytes, c.logical, c.snapshots));
        }
    }
    let archive_bytes = match (archive.disk_usage(), *guard) {
        (Ok(bytes), _) => bytes,
        (Err(e), Some(c)) if archive.is_shared() => {
            tracing::warn!("the archive's size could not be measured, showing the last: {e}");
            return Ok((c.archive_bytes, c.logical, c.snapshots));
        }
        (Err(e), _) => return Err(e.into()),
    };
    if let Some(c) = *guard {
        if c.archive_bytes == archive_bytes && c.at.elapsed() < TOTALS_TTL {
            return Ok((archive_bytes, c.logical, c.snapshots));
        }
    }
    let mut logical = 0u64;
    let mut count = 0u64;
    for (identity, _) in archive.histories()? {
        for s in archive.snapshots_of(&identity)? {
            logical += s.stats.pack_bytes;
            count += 1;
        }
    }
    *guard = Some(CachedTotals {
        at: Instant::now(),
        archive_bytes,
        logical,
        snapshots: count,
    });
    Ok((archive_bytes, logical, count))
}

fn plan_glance(plan: &Plan, jobs: &[Job], now: OffsetDateTime) -> PlanGlance {
    let last_failure = jobs
        .iter()
        .filter(
            |j| matches!(&j.kind, JobKind::Backup { plan: Some(p), .. } if *p == plan.spec.name),
        )
        .find(|j| {
            matches!(
                j.state,
                JobState::Failed | JobState::Partial | JobState::Interrupted
            )
        })
        .map(|j| JobFailure {
            job: j.id,
            state: j.state_name().to_string(),
            at: j.finished_at.unwrap_or(j.created_at),
        });
    PlanGlance {
        name: plan.spec.name.clone(),
        enabled: plan.spec.enabled,
        last_success: plan.status.last_success,
        last_failure,
        next_runs: if plan.spec.enabled {
            next_runs(&plan.spec, now, 5).unwrap_or_default()
        } else {
            Vec::new()
        },
    }
}

/// The next `n` times a plan's schedule fires after `now` (empty: on demand), each
/// with the offset of the plan's zone at that time.
pub fn next_runs(
    spec: &crate::state::PlanSpec,
    now: OffsetDateTime,
    n: usize,
) -> Result<Vec<OffsetDateTime>, EngineError> {
    let Some(schedule) = schedule_of(spec)? else {
        return Ok(Vec::new());
    };
    let zone = zone_of(spec)?;
    let mut out = Vec::with_capacity(n);
    let mut t = now;
    while out.len() < n {
        match schedule.next_after(t) {
            Some(next) => {
                out.push(zone.shown_in(next));
                t = next;
            }
            None => break,
        }
    }
    Ok(out)
}

/// A credential taken out of its newest job (401/403), once per credential.
fn credential_warnings(jobs: &[Job]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for j in jobs {
        for c in &j.progress.credentials {
            if !seen.insert((c.connection.clone(), c.credential.clone())) {
                continue;
            }
            if let Some(why) = &c.failed {
                out.push(format!(
                    "connection {}: credential {} ({}) failed in job {}: {why}",
                    c.connection, c.credential, c.principal, j.id
                ));
            }
        }
    }
    out
}

/// Repositories whose newest result in the recent backup jobs is a failure.
fn failing_repositories(
    ctx: &Context,
    jobs: &[Job],
) -> Result<Vec<FailingRepository>, EngineError> {
    let mut latest: BTreeMap<(String, String), Option<FailingRepository>> = BTreeMap::new();
    for j in jobs
        .iter()
        .filter(|j| matches!(j.kind, JobKind::Backup { .. }) && j.is_finished())
    {
        for r in ctx.state.job_results(j.id)? {
            let key = (r.connection.clone(), r.repository.clone());
            if latest.contains_key(&key) {
                continue;
            }
            let failed = r.status == crate::state::ResultStatus::Failed;
            latest.insert(
                key,
                failed.then(|| FailingRepository {
                    connection: r.connection,
                    repository: r.repository,
                    job: j.id,
                    reason: r.reason.unwrap_or_default(),
                }),
            );
        }
    }
    Ok(latest.into_values().flatten().collect())
}
