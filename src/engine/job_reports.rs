//! Reports rebuilt from job records: what a front-end that followed a job (through
//! the daemon) shows, in the same types the engine returns in process.

use super::backup::{BackupReport, RepoOutcome, RepoResult};
use super::restore_into::RestoredInto;
use super::service::Observer;
use super::service::{RestoreRequest, Restored, Service, SnapshotsRequest};
use super::EngineError;
use crate::providers::CredentialStats;
use crate::state::{Job, JobRecordResult, JobState, ResultStatus};
use std::time::Duration;

/// Follows a job until it ends: `fetch` reads its latest record every `every`, and
/// the observer sees each change. The one polling loop of every `Service::watch`.
pub fn follow_job(
    fetch: &dyn Fn() -> Result<Job, EngineError>,
    observer: &dyn Observer,
    every: Duration,
) -> Result<Job, EngineError> {
    let mut last = String::new();
    loop {
        let job = fetch()?;
        let json = serde_json::to_string(&job).unwrap_or_default();
        if json != last {
            observer.job(&job);
            last = json;
        }
        if job.state.is_finished() {
            return Ok(job);
        }
        std::thread::sleep(every);
    }
}

/// A repository's outcome as a job recorded it.
fn outcome_of(r: &JobRecordResult) -> RepoOutcome {
    let reason = || r.reason.clone().unwrap_or_default();
    let snapshot = || r.snapshot.clone().unwrap_or_default();
    match r.status {
        ResultStatus::Snapshot | ResultStatus::Restored => RepoOutcome::Snapshot {
            id: snapshot(),
            new_bytes: r.new_bytes,
            fetched_bytes: r.fetched_bytes,
        },
        ResultStatus::Unchanged => RepoOutcome::Unchanged {
            last_snapshot: snapshot(),
        },
        ResultStatus::Skipped => RepoOutcome::Skipped { reason: reason() },
        ResultStatus::Deferred => RepoOutcome::Deferred { reason: reason() },
        ResultStatus::Failed => RepoOutcome::Failed { reason: reason() },
        ResultStatus::Partial => RepoOutcome::Partial {
            id: snapshot(),
            new_bytes: r.new_bytes,
            fetched_bytes: r.fetched_bytes,
            missing: reason().lines().map(str::to_string).collect(),
        },
    }
}

/// The backup report of one connection from the jobs that backed it up. A job that
/// could not list the connection's repositories fails the whole backup, as it does
/// in process.
pub fn backup_report_from_jobs(
    connection: &str,
    jobs: &[(Job, Vec<JobRecordResult>)],
) -> Result<BackupReport, EngineError> {
    let mut report = BackupReport {
        connection: connection.to_string(),
        repositories: Vec::new(),
        seconds: 0.0,
        requests: 0,
        rate_limited: 0,
        credentials: Vec::new(),
    };
    for (job, results) in jobs {
        if let Some(whole) = results.iter().find(|r| r.repository == "*") {
            return Err(EngineError::Connection {
                connection: connection.to_string(),
                reason: format!(
                    "backup failed; nothing was written: {}",
                    whole.reason.as_deref().unwrap_or("unknown error")
                ),
            });
        }
        if let (Some(s), Some(f)) = (job.started_at, job.finished_at) {
            report.seconds += (f - s).as_seconds_f64();
        }
        report
            .repositories
            .extend(results.iter().map(|r| RepoResult {
                full_name: r.repository.clone(),
                outcome: outcome_of(r),
                seconds: r.seconds,
                attempts: r.attempts,
            }));
        for c in job
            .progress
            .credentials
            .iter()
            .filter(|c| c.connection == connection)
        {
            report.requests += c.requests;
            report.rate_limited += c.rate_limited;
            report.credentials.push(CredentialStats {
                credential: c.credential.clone(),
                principal: c.principal.clone(),
                requests: c.requests,
                rate_limited: c.rate_limited,
                cooldowns: c.cooldowns,
                failed: c.failed.clone(),
            });
        }
    }
    Ok(report)
}

/// A restore job's result `reason` when it moved a repository aside: this prefix, then
/// where it is now.
pub(super) const REPLACED_PREFIX: &str = "the repository that was at the target was moved to ";

/// The report of a restore that ran as a job: its result names the snapshot, whose
/// manifest gives the rest. Used by every implementation that restores through jobs.
pub fn restored_from_job(
    service: &dyn Service,
    req: &RestoreRequest,
    job: &Job,
) -> Result<Restored, EngineError> {
    if job.state != JobState::Succeeded {
        // The job's error is the engine's own message, as a restore in process gives it.
        return Err(EngineError::Conflict(job.error.clone().unwrap_or_else(
            || format!("restore of {} ended {}", req.repository, job.state.as_str()),
        )));
    }
    let results = service.job_results(job.id)?;
    let snapshot = results
        .iter()
        .find_map(|r| r.snapshot.clone())
        .ok_or_else(|| EngineError::Internal(format!("job {} names no snapshot", job.id)))?;
    let list = service.snapshots(SnapshotsRequest {
        repository: req.repository.clone(),
        connection: req.connection.clone(),
        at: None,
    })?;
    let snap = list
        .snapshots
        .iter()
        .find(|s| s.id.as_str() == snapshot)
        .ok_or_else(|| EngineError::NotFound(format!("snapshot {snapshot}")))?;
    let mut report = super::restore::RestoreReport::of(snap, std::path::Path::new(&req.to));
    let note = results.iter().find_map(|r| r.reason.as_deref());
    report.set_replaced(note, REPLACED_PREFIX);
    Ok(Restored {
        repository: list.repository.full_name.clone(),
        report,
    })
}

/// The report of a restore-into job from its stored results. A job that failed before
/// any repository (a connection that may not write, no such repository) is its error.
pub fn restored_into_from_job(
    service: &dyn Service,
    job: &Job,
) -> Result<RestoredInto, EngineError> {
    let results = service.job_results(job.id)?;
    if results.is_empty() && job.state != JobState::Succeeded {
        return Err(EngineError::Conflict(job.error.clone().unwrap_or_else(
            || format!("restore job {} ended {}", job.id, job.state.as_str()),
        )));
    }
    Ok(RestoredInto {
        job: Some(job.id),
        repositories: super::restore_into::reports_of(&results),
    })
}
