//! The job queue: backup and restore jobs run on a bounded pool of worker
//! threads, with live progress, cancellation, per-repository results stored as
//! they happen, and a graceful shutdown. A job record is written when it is
//! queued, starts, every few seconds while it runs, and when it ends, so after a
//! crash the daemon knows which jobs were cut off (see
//! [`State::interrupt_unfinished_jobs`](crate::state::State::interrupt_unfinished_jobs)).
//! A panic never takes a worker down: a repository that panics fails with the
//! panic's message ([`guard_repository`]), a job whose runner panics fails, and
//! the worker goes on with the next job. A job's final state is decided by one
//! pure function, [`final_state`].

use super::backup::{
    backup_connection, BackupOptions, MetadataCadence, Progress, RepoOutcome, RepoResult,
};
use super::plans;
use super::restore::{find_repository, restore, SnapshotChoice};
use super::restore_into;
use super::{Context, EngineError};
use crate::archive::SnapshotId;
use crate::state::{
    CredentialCounters, Job, JobKind, JobProgress, JobRecordResult, JobState, JobTarget, Plan,
    ResultStatus, Trigger,
};
use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// A job in memory while it is queued or running.
pub struct LiveJob {
    job: Mutex<Job>,
    cancel: Arc<AtomicBool>,
    /// Bumped on every change (SSE streams send when it moves).
    version: AtomicU64,
    /// When the record was last stored, and the [`version`](Self::version) it had then.
    last_persist: Mutex<(Instant, u64)>,
    /// Bytes fetched so far per repository in flight.
    fetched: Mutex<HashMap<String, u64>>,
}

impl LiveJob {
    fn new(job: Job) -> LiveJob {
        LiveJob {
            job: Mutex::new(job),
            cancel: Arc::new(AtomicBool::new(false)),
            version: AtomicU64::new(0),
            last_persist: Mutex::new((Instant::now(), u64::MAX)),
            fetched: Mutex::new(HashMap::new()),
        }
    }

    /// A copy of the job as it is now.
    pub fn snapshot(&self) -> Option<Job> {
        Some(self.lock().clone())
    }

    fn update(&self, f: impl FnOnce(&mut Job)) {
        f(&mut self.lock());
        self.version.fetch_add(1, Ordering::SeqCst);
    }

    /// The record, also after a panic while it was held (the record stays
    /// usable: its fields are plain data), so a panic never freezes a job.
    fn lock(&self) -> std::sync::MutexGuard<'_, Job> {
        self.job.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How a job's run ended, as far as its final state is concerned.
#[derive(Clone, Copy, Debug)]
pub struct JobEnding<'a> {
    /// Its counters at the end.
    pub progress: &'a JobProgress,
    /// The runner itself failed (an error before or instead of the
    /// repositories, or a panic).
    pub failed: bool,
    /// Someone asked the job to stop (a cancel, or the shutdown).
    pub stop_requested: bool,
    /// reposafe is shutting down.
    pub shutting_down: bool,
}

/// The state a job ends in. Precedence, first match wins:
/// 1. the runner failed → `failed`;
/// 2. shutting down with repositories left → `interrupted`;
/// 3. cancelled (a stop request outside a shutdown) → `cancelled`;
/// 4. repositories left for the next window and none failed → `partial`;
/// 5. some failed → `failed` when nothing was backed up (every repository
///    failed or was skipped), else `partial`;
/// 6. otherwise → `succeeded`.
pub fn final_state(e: &JobEnding) -> JobState {
    let p = e.progress;
    if e.failed {
        JobState::Failed
    } else if e.shutting_down && p.deferred > 0 {
        JobState::Interrupted
    } else if e.stop_requested && !e.shutting_down {
        JobState::Cancelled
    } else if p.deferred > 0 && p.failed == 0 {
        JobState::Partial
    } else if p.failed > 0 {
        if p.failed + p.skipped >= p.repos_total && p.snapshots + p.unchanged == 0 {
            JobState::Failed
        } else {
            JobState::Partial
        }
    } else {
        JobState::Succeeded
    }
}

/// The message of a caught panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Runs `f`, turning a panic into an error naming its message.
pub(crate) fn catch_panic<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f))
        .map_err(|p| format!("{what} panicked: {}", panic_message(p.as_ref())))
}

/// Backs up one repository with `f` (the per-repository boundary of a backup):
/// a panic in it becomes the repository's `failed` outcome carrying the panic's
/// message, and the other repositories go on.
pub(crate) fn guard_repository(
    repo: &str,
    f: impl FnOnce() -> Result<RepoOutcome, EngineError>,
) -> Result<RepoOutcome, EngineError> {
    catch_panic(&format!("backing up {repo}"), || {
        #[cfg(test)]
        faults::hit(&format!("repository {repo}"));
        f()
    })
    .unwrap_or_else(|reason| Ok(RepoOutcome::Failed { reason }))
}

/// Settings of the job runner.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// Jobs running at once.
    pub workers: usize,
    /// Repositories backed up at once per job unless a plan says otherwise.
    pub parallel: usize,
    /// Retries of a repository whose fetch failed transiently.
    pub retries: u32,
    /// First back-off of those retries (`REPOSAFE_RETRY_BASE_MS` overrides).
    pub retry_base: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        RunnerConfig {
            workers: 2,
            parallel: cores.clamp(2, 8),
            retries: 2,
            retry_base: std::env::var("REPOSAFE_RETRY_BASE_MS")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_millis)
                .unwrap_or(Duration::from_secs(2)),
        }
    }
}

struct Queue {
    waiting: VecDeque<u64>,
    live: HashMap<u64, Arc<LiveJob>>,
    running: usize,
}

/// The job queue and its workers.
pub struct Jobs {
    ctx: Arc<Context>,
    config: RunnerConfig,
    queue: Mutex<Queue>,
    wake: Condvar,
    stopping: AtomicBool,
    notifications: Arc<super::notifications::Notifications>,
}

impl Jobs {
    /// A runner over a context. Jobs left queued or running by an earlier process
    /// are marked interrupted first.
    pub fn new(ctx: Arc<Context>, config: RunnerConfig) -> Result<Arc<Jobs>, EngineError> {
        let cut = ctx
            .state
            .interrupt_unfinished_jobs("reposafe stopped while this job was queued or running")?;
        if !cut.is_empty() {
            tracing::warn!("jobs interrupted by the previous stop: {cut:?}");
        }
        Ok(Arc::new(Jobs {
            ctx,
            config,
            queue: Mutex::new(Queue {
                waiting: VecDeque::new(),
                live: HashMap::new(),
                running: 0,
            }),
            wake: Condvar::new(),
            stopping: AtomicBool::new(false),
            notifications: Arc::default(),
        }))
    }

    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// Notifications of failed jobs (settings' defaults, links, deliveries in flight).
    pub fn notifications(&self) -> &Arc<super::notifications::Notifications> {
        &self.notifications
    }

    /// Starts the worker threads.
    pub fn start(self: &Arc<Self>) {
        for n in 0..self.config.workers.max(1) {
            let me = self.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("job-worker-{n}"))
                .spawn(move || me.worker());
            if let Err(e) = spawned {
                tracing::error!("cannot start job worker {n}: {e}");
            }
        }
    }

    /// Validates and queues a job.
    pub fn submit(
        &self,
        kind: JobKind,
        trigger: Trigger,
        not_before: Option<OffsetDateTime>,
    ) -> Result<Job, EngineError> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err(EngineError::Conflict(
                "reposafe is shutting down and accepts no new jobs".into(),
            ));
        }
        self.check(&kind)?;
        let job = self.ctx.state.create_job(kind, trigger, not_before)?;
        let mut q = self.lock();
        q.live.insert(job.id, Arc::new(LiveJob::new(job.clone())));
        q.waiting.push_back(job.id);
        drop(q);
        self.wake.notify_all();
        Ok(job)
    }

    fn check(&self, kind: &JobKind) -> Result<(), EngineError> {
        match kind {
            JobKind::Backup { plan, targets } => {
                if let Some(p) = plan {
                    self.ctx.state.plan(p)?;
                }
                if targets.is_empty() {
                    return Err(EngineError::Invalid(
                        "the job has nothing to back up".into(),
                    ));
                }
                for t in targets {
                    self.ctx.state.connection(&t.connection)?;
                }
            }
            JobKind::Restore {
                repository,
                connection,
                snapshot,
                to,
                ..
            } => {
                find_repository(&self.ctx, repository, connection.as_deref())?;
                if let Some(s) = snapshot {
                    SnapshotId::parse(s).map_err(|e| EngineError::Field {
                        field: "snapshot".into(),
                        message: e.to_string(),
                    })?;
                }
                if !std::path::Path::new(to).is_absolute() {
                    return Err(EngineError::Field {
                        field: "to".into(),
                        message: format!("{to:?} must be an absolute path on the server"),
                    });
                }
            }
            JobKind::RestoreInto {
                repository,
                connection,
                snapshot,
                at,
                target,
            } => {
                super::restore::choice_of(snapshot.as_deref(), *at)?;
                restore_into::refuse_unless_writable(
                    &self.ctx.state.connection(&target.connection)?,
                )?;
                restore_into::sources(&self.ctx, repository, connection.as_deref())?;
            }
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A job as it is now (live when queued or running).
    pub fn get(&self, id: u64) -> Result<Job, EngineError> {
        if let Some(j) = self.lock().live.get(&id).and_then(|l| l.snapshot()) {
            return Ok(j);
        }
        Ok(self.ctx.state.job(id)?)
    }

    /// Newest jobs first, live ones with their current progress.
    pub fn list(&self, limit: usize) -> Result<Vec<Job>, EngineError> {
        let mut jobs = self.ctx.state.jobs(limit)?;
        let q = self.lock();
        for j in jobs.iter_mut() {
            if let Some(l) = q.live.get(&j.id).and_then(|l| l.snapshot()) {
                *j = l;
            }
        }
        Ok(jobs)
    }

    /// Whether a job of this plan is queued or running.
    pub fn plan_active(&self, plan: &str) -> bool {
        self.lock().live.values().any(|l| {
            l.snapshot().is_some_and(
                |j| matches!(&j.kind, JobKind::Backup { plan: Some(p), .. } if p == plan),
            )
        })
    }

    /// Cancels a queued job at once, or asks a running one to stop after the
    /// repositories in flight.
    pub fn cancel(&self, id: u64) -> Result<Job, EngineError> {
        let mut q = self.lock();
        let Some(live) = q.live.get(&id).cloned() else {
            let job = self.ctx.state.job(id)?;
            return Err(EngineError::Conflict(format!(
                "job {id} already finished ({:?})",
                job.state
            )));
        };
        live.cancel.store(true, Ordering::SeqCst);
        if let Some(pos) = q.waiting.iter().position(|x| *x == id) {
            q.waiting.remove(pos);
            q.live.remove(&id);
            drop(q);
            live.update(|j| {
                j.state = JobState::Cancelled;
                j.finished_at = Some(OffsetDateTime::now_utc());
            });
            if let Some(j) = live.snapshot() {
                self.ctx.state.put_job(&j)?;
                return Ok(j);
            }
        }
        live.snapshot()
            .ok_or_else(|| EngineError::NotFound(format!("job {id}")))
    }

    /// Stops taking jobs, asks running ones to stop after the repositories in
    /// flight, waits up to `grace`, then records what is left as interrupted.
    pub fn shutdown(&self, grace: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        {
            let q = self.lock();
            for l in q.live.values() {
                l.cancel.store(true, Ordering::SeqCst);
            }
        }
        self.wake.notify_all();
        let until = Instant::now() + grace;
        loop {
            let running = self.lock().running;
            if running == 0 || Instant::now() >= until {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let left: Vec<Arc<LiveJob>> = self.lock().live.values().cloned().collect();
        for l in left {
            l.update(|j| {
                if !j.state.is_finished() {
                    j.state = JobState::Interrupted;
                    j.finished_at = Some(OffsetDateTime::now_utc());
                    j.error = Some("reposafe was stopped before this job finished".into());
                }
            });
            if let Some(j) = l.snapshot() {
                if let Err(e) = self.ctx.state.put_job(&j) {
                    tracing::warn!("job {}: cannot record that it was interrupted: {e}", j.id);
                }
            }
        }
    }

    fn next_runnable(&self) -> Option<Arc<LiveJob>> {
        let mut q = self.lock();
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return None;
            }
            let now = OffsetDateTime::now_utc();
            let pos = q.waiting.iter().position(|id| {
                q.live
                    .get(id)
                    .and_then(|l| l.snapshot())
                    .is_some_and(|j| j.not_before.is_none_or(|t| t <= now))
            });
            if let Some(pos) = pos {
                let id = q.waiting.remove(pos)?;
                q.running += 1;
                return q.live.get(&id).cloned();
            }
            let (g, _) = self
                .wake
                .wait_timeout(q, Duration::from_secs(1))
                .unwrap_or_else(|p| p.into_inner());
            q = g;
        }
    }

    fn worker(self: Arc<Self>) {
        while let Some(live) = self.next_runnable() {
            // `run` catches the job's own panics; this catches its bookkeeping's,
            // so the worker always lives on to the next job.
            if let Err(msg) = catch_panic("the job runner", || self.run(&live)) {
                tracing::error!("{msg}");
                live.update(|j| {
                    if !j.state.is_finished() {
                        j.state = JobState::Failed;
                        j.finished_at = Some(OffsetDateTime::now_utc());
                        j.progress.current.clear();
                        j.error = Some(msg);
                    }
                });
                self.persist(&live, true);
            }
            let mut q = self.lock();
            q.running -= 1;
            if let Some(j) = live.snapshot() {
                q.live.remove(&j.id);
            }
        }
    }

    /// Runs a job to its end on this thread (workers, and the CLI without a daemon),
    /// storing its progress meanwhile at least every [`PERSIST_EVERY`] (see [`heartbeat`]).
    pub fn run(&self, live: &Arc<LiveJob>) {
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let beat = s.spawn(|| heartbeat(&self.ctx, live, &done));
            self.run_to_end(live);
            done.store(true, Ordering::SeqCst);
            beat.thread().unpark();
        });
    }

    fn run_to_end(&self, live: &Arc<LiveJob>) {
        live.update(|j| {
            j.state = JobState::Running;
            j.started_at = Some(OffsetDateTime::now_utc());
        });
        self.persist(live, true);
        let Some(job) = live.snapshot() else { return };
        let outcome = catch_panic(&format!("job {}", job.id), || match &job.kind {
            JobKind::Backup { plan, targets } => {
                self.run_backup(live, &job, plan.as_deref(), targets)
            }
            JobKind::Restore { .. } => self.run_restore(live, &job),
            JobKind::RestoreInto { .. } => self.run_restore_into(live, &job),
        })
        .and_then(|r| r.map_err(|e| e.to_string()));
        if let Err(msg) = &outcome {
            tracing::warn!("{msg}");
        }
        let stop_requested = live.cancel.load(Ordering::SeqCst);
        let shutting_down = self.stopping.load(Ordering::SeqCst);
        let finished_at = OffsetDateTime::now_utc();
        let finish = |j: &mut Job| {
            j.finished_at = Some(finished_at);
            j.progress.current.clear();
            j.state = final_state(&JobEnding {
                progress: &j.progress,
                failed: outcome.is_err(),
                stop_requested,
                shutting_down,
            });
            match &outcome {
                Err(e) => j.error = Some(e.clone()),
                Ok(())
                    if j.state == JobState::Partial
                        && j.progress.deferred > 0
                        && j.progress.failed == 0 =>
                {
                    j.error = Some(format!(
                        "{} repositories were left for the next backup window",
                        j.progress.deferred
                    ));
                }
                Ok(()) => {}
            }
        };
        // The plan's status is written before the job shows as finished, so whoever
        // sees the job end also sees the plan's last run and last success.
        let mut check_failure: Option<String> = None;
        let fail_check = |j: &mut Job, failure: &Option<String>| {
            if let Some(f) = failure {
                j.state = JobState::Failed;
                j.error = Some(f.clone());
            }
        };
        if let Some(mut ended) = live.snapshot() {
            finish(&mut ended);
            let mut notes: Vec<String> = self.apply_retention(&ended).into_iter().collect();
            if let Some((note, failure)) = self.scheduled_check(&ended) {
                notes.push(note);
                check_failure = failure;
            }
            if let Some((note, failure)) = self.copy_after_run(live, &ended) {
                notes.push(note);
                check_failure = check_failure.or(failure);
            }
            if !notes.is_empty() {
                let note = notes.join("; ");
                live.update(|j| j.progress.notice = Some(note.clone()));
                ended.progress.notice = Some(note);
            }
            fail_check(&mut ended, &check_failure);
            self.record_in_plan(&ended);
        }
        // Stored before it shows as finished: whoever sees the job end live finds the
        // same ending in the state database.
        if let Some(mut ended) = live.snapshot() {
            finish(&mut ended);
            fail_check(&mut ended, &check_failure);
            store_ending(&self.ctx, live, &ended);
        }
        live.update(|j| {
            finish(j);
            fail_check(j, &check_failure);
        });
        self.persist(live, true);
        if let Some(j) = live.snapshot() {
            self.queue_resume(&j);
            self.notifications.job_finished(&self.ctx, &j);
        }
    }

    /// After a plan's successful run, its retention (before the job shows as finished,
    /// so whoever sees it end sees the snapshots that are left); the job's notice.
    fn apply_retention(&self, job: &Job) -> Option<String> {
        let plan = succeeded_plan(job)?;
        match super::forget::after_plan_run(&self.ctx, plan, job.id) {
            Ok(None) => None,
            Ok(Some(r)) => Some(format!(
                "retention: {} snapshots removed, {} kept{}",
                r.removed,
                r.kept,
                match (&r.prune, &r.prune_error) {
                    (_, Some(e)) => format!("; prune failed: {e}"),
                    (Some(p), None) => format!(
                        "; prune freed {}{}",
                        crate::fmt::human_bytes(p.bytes_freed),
                        if p.failed.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", p.failed.join("; "))
                        }
                    ),
                    (None, None) => String::new(),
                }
            )),
            Err(e) => {
                tracing::warn!(
                    "plan {plan}: retention not applied after job {}: {e}",
                    job.id
                );
                Some(format!("retention not applied: {e}"))
            }
        }
    }

    /// After a plan's successful run, its scheduled check (`check_every` passed since the
    /// last one): the job's notice, and the job's failure when the archive is damaged
    /// (the job then fails, which notifies).
    fn scheduled_check(&self, job: &Job) -> Option<(String, Option<String>)> {
        let plan = succeeded_plan(job)?;
        let p = self.ctx.state.plan(plan).ok()?;
        let (every, req) = match plans::check_of(&p.spec) {
            Ok(Some(c)) => c,
            Ok(None) => return None,
            Err(e) => return Some((format!("check not run: {e}"), None)),
        };
        let now = OffsetDateTime::now_utc();
        let due = p
            .status
            .last_check
            .is_none_or(|t| now - t >= time::Duration::seconds(every as i64));
        if !due {
            return None;
        }
        let checked = super::check::check(&self.ctx, &req);
        if let Err(e) = self
            .ctx
            .state
            .update_plan(plan, |p| p.status.last_check = Some(now))
        {
            tracing::warn!("plan {plan}: cannot record its check: {e}");
        }
        Some(match checked {
            Ok(r) if r.damaged.is_empty() && r.incomplete.is_empty() => (
                format!(
                    "check: {} snapshots, {} blobs present, {} read back: all intact",
                    r.snapshots, r.blobs, r.blobs_read
                ),
                None,
            ),
            Ok(r) => {
                let failure = format!(
                    "the archive check found damage: {} blobs damaged, {} snapshots affected, {} \
                     snapshot parts incomplete; run `reposafe check --read-data` for details",
                    r.damaged.len(),
                    r.affected.len(),
                    r.incomplete.len()
                );
                (failure.clone(), Some(failure))
            }
            Err(e) => {
                let failure = format!("the archive check could not run: {e}");
                (failure.clone(), Some(failure))
            }
        })
    }

    /// After a plan's run that succeeded or ended partial, its copy of the
    /// archive to a saved target (`copy_to`, shown live as the job's notice): the job's
    /// notice, and the job's failure when the copy fails or leaves something out (the
    /// job then fails, which notifies).
    fn copy_after_run(&self, live: &LiveJob, job: &Job) -> Option<(String, Option<String>)> {
        let plan = succeeded_or_partial_plan(job)?;
        let target = self.ctx.state.plan(plan).ok()?.spec.copy_to?;
        if live.cancel.load(Ordering::SeqCst) || self.stopping.load(Ordering::SeqCst) {
            return Some((
                format!("copy to {target} not started: the job was stopped"),
                None,
            ));
        }
        let progress = JobCopyProgress {
            live,
            stopping: &self.stopping,
            target: &target,
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
        };
        let to = super::archive_copy::CopyDestination::Saved(target.clone());
        Some(
            match super::archive_copy::copy_in_process(&self.ctx, to, None, &progress) {
                Ok(r) if r.tally.failed.is_empty() => (copy_note(&target, &r), None),
                Ok(r) => {
                    let failure = format!(
                        "the copy of the archive to {target} left {} thing(s) out: {}{}",
                        r.tally.failed.len(),
                        r.tally
                            .failed
                            .iter()
                            .take(5)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join("; "),
                        if r.tally.failed.len() > 5 {
                            "; …"
                        } else {
                            ""
                        }
                    );
                    (
                        format!("{}; {failure}", copy_note(&target, &r)),
                        Some(failure),
                    )
                }
                // Stopped with the job (or the daemon): what was copied stays, the
                // backup stands, and the next run resumes the copy.
                Err(
                    e @ EngineError::Archive(crate::archive::ArchiveError::CopyCancelled { .. }),
                ) => (e.to_string(), None),
                Err(e) => {
                    tracing::warn!(
                        "plan {plan}: the copy to {target} after job {} failed: {e}",
                        job.id
                    );
                    let failure = format!("the copy of the archive to {target} failed: {e}");
                    (failure.clone(), Some(failure))
                }
            },
        )
    }

    /// Records a plan's job as its last run (and last success when it succeeded).
    fn record_in_plan(&self, job: &Job) {
        let Some(plan) = plan_of(job) else {
            return;
        };
        let ok = matches!(job.state, JobState::Succeeded);
        let recorded = self.ctx.state.update_plan(plan, |p| {
            p.status.last_job = Some(job.id);
            if ok {
                p.status.last_success = job.finished_at;
            }
        });
        if let Err(e) = recorded {
            tracing::warn!(
                "plan {plan}: cannot record job {} as its last run (last success not updated): {e}",
                job.id
            );
        }
    }

    /// Queues a resume job at the next window opening for the repositories a plan's
    /// window cut off.
    fn queue_resume(&self, job: &Job) {
        let Some(plan) = plan_of(job) else {
            return;
        };
        if job.deferred.is_empty() || self.stopping.load(Ordering::SeqCst) {
            return;
        }
        let p = match self.ctx.state.plan(plan) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(
                    "plan {plan}: cannot read it to queue the resume of job {}: {e}",
                    job.id
                );
                return;
            }
        };
        let (Ok(Some(window)), Ok(schedule)) = (plans::window_of(&p.spec), plans::zone_of(&p.spec))
        else {
            return;
        };
        let now = OffsetDateTime::now_utc() + time::Duration::minutes(1);
        let open = window.next_open(now, &schedule);
        match self.submit(
            JobKind::Backup {
                plan: Some(plan.to_string()),
                targets: job.deferred.clone(),
            },
            Trigger::Resume,
            Some(open),
        ) {
            Ok(j) => tracing::info!(
                "plan {plan}: {} repositories left at the window's end resume in job {} at {open}",
                job.progress.deferred,
                j.id
            ),
            Err(e) => tracing::warn!("plan {plan}: cannot queue the resume job: {e}"),
        }
    }

    fn persist(&self, live: &LiveJob, force: bool) {
        persist(&self.ctx, live, force)
    }

    fn run_backup(
        &self,
        live: &Arc<LiveJob>,
        job: &Job,
        plan: Option<&str>,
        targets: &[JobTarget],
    ) -> Result<(), EngineError> {
        let plan = plan.map(|p| self.ctx.state.plan(p)).transpose()?;
        let deadline = window_deadline(plan.as_ref(), job)?;
        let parallelism = plan
            .as_ref()
            .and_then(|p| p.spec.concurrency)
            .map(|c| c as usize)
            .unwrap_or(self.config.parallel);
        let mut errors = Vec::new();
        for target in targets {
            if live.cancel.load(Ordering::SeqCst) {
                live.update(|j| j.deferred.push(target.clone()));
                continue;
            }
            let (select, adopted) = match &plan {
                Some(p) => {
                    let (s, a) = plans::selector(p, &target.connection);
                    (Some(s), Some(a))
                }
                None => (None, None),
            };
            #[cfg(test)]
            faults::hit(&format!("connection {}", target.connection));
            let sink = Arc::new(JobProgressSink {
                ctx: self.ctx.clone(),
                live: live.clone(),
                connection: target.connection.clone(),
            });
            let opts = BackupOptions {
                parallelism,
                only: target.only.clone(),
                progress: sink,
                interrupt: live.cancel.clone(),
                select,
                deadline,
                retries: self.config.retries,
                retry_base: self.config.retry_base,
                additional_credentials: plan
                    .as_ref()
                    .map(|p| p.spec.additional_credentials.clone())
                    .unwrap_or_default(),
                metadata: match &plan {
                    Some(p) => plans::metadata_cadence(&p.spec)?,
                    None => MetadataCadence::EveryRun,
                },
                taken_at: None,
            };
            match backup_connection(&self.ctx, &target.connection, &opts) {
                Ok(report) => {
                    record_deferred(live, target, &report.repositories);
                    if let (Some(p), Some(a)) = (&plan, adopted) {
                        self.adopt_first_members(p, &a);
                    }
                }
                Err(e) => errors.push(self.connection_failed(live, job, target, &e)),
            }
        }
        if !errors.is_empty() {
            live.update(|j| j.error = Some(errors.join("; ")));
        }
        Ok(())
    }

    /// After the first run of a plan that does not auto-add, the repositories it
    /// adopted (`adopted`) become its members.
    fn adopt_first_members(&self, plan: &Plan, adopted: &Mutex<Vec<String>>) {
        if plan.spec.auto_add || plan.status.members.is_some() {
            return;
        }
        let list = adopted.lock().map(|v| v.clone()).unwrap_or_default();
        let n = list.len();
        let recorded = self.ctx.state.update_plan(&plan.spec.name, |pl| {
            let m = pl.status.members.get_or_insert_with(Vec::new);
            m.extend(list);
            m.sort();
            m.dedup();
        });
        if let Err(e) = recorded {
            tracing::warn!(
                "plan {}: cannot record the {n} repositories of its first run as its members: {e}",
                plan.spec.name
            );
        }
    }

    /// A connection whose backup failed as a whole (it could not be listed): counted
    /// and stored as the job's result for it; the message for the job's error.
    fn connection_failed(
        &self,
        live: &LiveJob,
        job: &Job,
        target: &JobTarget,
        e: &EngineError,
    ) -> String {
        let msg = format!("connection {}: {e}", target.connection);
        tracing::warn!("job {}: {msg}", job.id);
        live.update(|j| {
            j.progress.failed += 1;
            j.progress.repos_total += 1;
            j.progress.repos_done += 1;
        });
        let stored = self.ctx.state.put_job_result(&JobRecordResult {
            job: job.id,
            connection: target.connection.clone(),
            repository: "*".into(),
            status: ResultStatus::Failed,
            snapshot: None,
            reason: Some(e.to_string()),
            new_bytes: 0,
            fetched_bytes: 0,
            seconds: 0.0,
            attempts: 1,
            detail: None,
        });
        if let Err(se) = stored {
            tracing::warn!(
                "job {}: cannot store the failure of connection {}: {se}",
                job.id,
                target.connection
            );
        }
        msg
    }

    fn run_restore(&self, live: &Arc<LiveJob>, job: &Job) -> Result<(), EngineError> {
        let JobKind::Restore {
            repository,
            connection,
            snapshot,
            at,
            to,
            force,
        } = &job.kind
        else {
            return Ok(());
        };
        live.update(|j| {
            j.progress.repos_total = 1;
            j.progress.current = vec![repository.clone()];
        });
        let repo = find_repository(&self.ctx, repository, connection.as_deref())?;
        let choice = match (snapshot, at) {
            (Some(s), _) => SnapshotChoice::Id(SnapshotId::parse(s)?),
            (None, Some(t)) => SnapshotChoice::At(*t),
            (None, None) => SnapshotChoice::Latest,
        };
        let report = restore(&self.ctx, &repo, &choice, std::path::Path::new(to), *force)?;
        live.update(|j| {
            j.progress.repos_done = 1;
            j.progress.snapshots = 1;
            j.progress.notice = Some(format!(
                "restored snapshot {} ({} refs) to {}{}",
                report.snapshot,
                report.refs,
                report.target,
                report
                    .replaced_note(&format!("; {}", super::job_reports::REPLACED_PREFIX))
                    .unwrap_or_default()
            ));
        });
        let stored = self.ctx.state.put_job_result(&JobRecordResult {
            job: job.id,
            connection: repo.connection.clone(),
            repository: repo.full_name.clone(),
            status: ResultStatus::Restored,
            snapshot: Some(report.snapshot.clone()),
            reason: report.replaced_note(super::job_reports::REPLACED_PREFIX),
            new_bytes: 0,
            fetched_bytes: 0,
            seconds: 0.0,
            attempts: 1,
            detail: None,
        });
        if let Err(e) = stored {
            tracing::warn!(
                "job {}: cannot store the result of restoring {}: {e}",
                job.id,
                repo.full_name
            );
        }
        Ok(())
    }

    /// A restore into a provider: each repository's report stored as its result as it
    /// finishes (status `restored`, `partial` or `failed`, the report in `detail`).
    fn run_restore_into(&self, live: &Arc<LiveJob>, job: &Job) -> Result<(), EngineError> {
        let JobKind::RestoreInto {
            repository,
            connection,
            snapshot,
            at,
            target,
        } = &job.kind
        else {
            return Ok(());
        };
        let choice = super::restore::choice_of(snapshot.as_deref(), *at)?;
        let writer = restore_into::open_writer(&self.ctx, target)?;
        let sources = restore_into::sources(&self.ctx, repository, connection.as_deref())?;
        live.update(|j| j.progress.repos_total = sources.len() as u64);
        let opts = self.restore_into_options(live, job.id);
        restore_into::restore_all(&writer, &sources, &choice, &opts)?;
        Ok(())
    }

    /// How a restore-into job reports: notices and repositories in flight in its
    /// progress, each repository's report stored as a result.
    fn restore_into_options(&self, live: &Arc<LiveJob>, job: u64) -> restore_into::IntoOptions {
        let (l1, l2, l3) = (live.clone(), live.clone(), live.clone());
        let ctx = self.ctx.clone();
        restore_into::IntoOptions {
            interrupt: live.cancel.clone(),
            notice: Arc::new(move |m: &str| l1.update(|j| j.progress.notice = Some(m.to_string()))),
            started: Arc::new(move |r: &str| l2.update(|j| j.progress.current.push(r.to_string()))),
            finished: Arc::new(move |r: &restore_into::RepoRestoredInto| {
                let stored = ctx.state.put_job_result(&restore_into::job_result(job, r));
                if let Err(e) = stored {
                    tracing::warn!("job {job}: cannot store the result of {}: {e}", r.source);
                }
                l3.update(|j| {
                    j.progress.current.retain(|c| c != &r.source);
                    j.progress.repos_done += 1;
                    match r.status {
                        restore_into::PartStatus::Failed => j.progress.failed += 1,
                        restore_into::PartStatus::Partial => {
                            j.progress.partial += 1;
                            j.progress.snapshots += 1;
                        }
                        _ => j.progress.snapshots += 1,
                    }
                });
            }),
            concurrency: 4,
        }
    }

    /// Runs a job synchronously without workers (the CLI when no daemon runs).
    pub fn run_now(
        &self,
        kind: JobKind,
        trigger: Trigger,
        on_change: &(dyn Fn(&Job) + Sync),
    ) -> Result<Job, EngineError> {
        self.check(&kind)?;
        let job = self.ctx.state.create_job(kind, trigger, None)?;
        let live = Arc::new(LiveJob::new(job));
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut seen = u64::MAX;
                while !done.load(Ordering::SeqCst) {
                    let v = live.version.load(Ordering::SeqCst);
                    if v != seen {
                        seen = v;
                        if let Some(j) = live.snapshot() {
                            on_change(&j);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            self.run(&live);
            done.store(true, Ordering::SeqCst);
        });
        // A failed job's notification goes out before the command ends.
        self.notifications.flush();
        let job = live
            .snapshot()
            .ok_or_else(|| EngineError::Internal("job record lost".into()))?;
        // The end is always shown, as a follower of a daemon's job always sees it.
        on_change(&job);
        Ok(job)
    }
}

/// A change of a running job's progress is stored within this time (the record is written
/// when something changed at most every [`PERSIST_INTERVAL`], checked every [`HEARTBEAT`]).
pub const PERSIST_EVERY: Duration = Duration::from_secs(2);
const PERSIST_INTERVAL: Duration = Duration::from_millis(1500);
const HEARTBEAT: Duration = Duration::from_millis(500);

/// Stores a running job's progress until `done`: every [`HEARTBEAT`] it writes the record
/// if it changed (and [`PERSIST_INTERVAL`] has passed since the last write), so the stored
/// record never lags the live one by more than [`PERSIST_EVERY`], also while nothing
/// else happens (a long fetch's bytes, a wait for another job or a rate limit).
fn heartbeat(ctx: &Context, live: &LiveJob, done: &AtomicBool) {
    while !done.load(Ordering::SeqCst) {
        std::thread::park_timeout(HEARTBEAT);
        if !done.load(Ordering::SeqCst) {
            persist(ctx, live, false);
        }
    }
}

/// Stores a job's progress record: always when `force`, else when it changed since it
/// was last stored, at most every [`PERSIST_INTERVAL`]. Writes are serialised (the lock is
/// held while the record is taken and stored), so an older record never replaces a newer.
fn persist(ctx: &Context, live: &LiveJob, force: bool) {
    let mut last = live.last_persist.lock().unwrap_or_else(|p| p.into_inner());
    let version = live.version.load(Ordering::SeqCst);
    let (at, stored) = *last;
    if !force && (stored == version || at.elapsed() < PERSIST_INTERVAL) {
        return;
    }
    *last = (Instant::now(), version);
    if let Some(j) = live.snapshot() {
        if let Err(e) = ctx.state.put_job(&j) {
            tracing::warn!("job {}: cannot store its progress: {e}", j.id);
        }
    }
}

/// Stores a job's ending before the live record shows it, under the lock of [`persist`]
/// (so a periodic store of the running record cannot come after it).
fn store_ending(ctx: &Context, live: &LiveJob, ended: &Job) {
    let mut last = live.last_persist.lock().unwrap_or_else(|p| p.into_inner());
    // The running record is not stored again over the ending until the live one changes.
    *last = (Instant::now(), live.version.load(Ordering::SeqCst));
    if let Err(e) = ctx.state.put_job(ended) {
        tracing::warn!("job {}: cannot store its ending: {e}", ended.id);
    }
}

/// Stores one repository's result of a job.
fn record(ctx: &Context, job: u64, connection: &str, r: &RepoResult) {
    let (status, snapshot, reason, new_bytes, fetched_bytes) = match &r.outcome {
        RepoOutcome::Snapshot {
            id,
            new_bytes,
            fetched_bytes,
        } => (
            ResultStatus::Snapshot,
            Some(id.clone()),
            None,
            *new_bytes,
            *fetched_bytes,
        ),
        RepoOutcome::Unchanged { last_snapshot } => (
            ResultStatus::Unchanged,
            Some(last_snapshot.clone()),
            None,
            0,
            0,
        ),
        RepoOutcome::Partial {
            id,
            new_bytes,
            fetched_bytes,
            missing,
        } => (
            ResultStatus::Partial,
            Some(id.clone()),
            Some(missing.join("\n")),
            *new_bytes,
            *fetched_bytes,
        ),
        RepoOutcome::Failed { reason } => (ResultStatus::Failed, None, Some(reason.clone()), 0, 0),
        RepoOutcome::Skipped { reason } => {
            (ResultStatus::Skipped, None, Some(reason.clone()), 0, 0)
        }
        RepoOutcome::Deferred { reason } => {
            (ResultStatus::Deferred, None, Some(reason.clone()), 0, 0)
        }
    };
    let rec = JobRecordResult {
        job,
        connection: connection.to_string(),
        repository: r.full_name.clone(),
        status,
        snapshot,
        reason,
        new_bytes,
        fetched_bytes,
        seconds: r.seconds,
        attempts: r.attempts,
        detail: None,
    };
    if let Err(e) = ctx.state.put_job_result(&rec) {
        tracing::warn!("job {job}: cannot store the result of {}: {e}", r.full_name);
    }
}

/// Feeds a backup's progress into a live job.
struct JobProgressSink {
    ctx: Arc<Context>,
    live: Arc<LiveJob>,
    connection: String,
}

impl Progress for JobProgressSink {
    fn listed(&self, total: usize) {
        self.live.update(|j| j.progress.repos_total += total as u64);
        persist(&self.ctx, &self.live, true);
    }
    fn started(&self, repo: &str) {
        self.live
            .update(|j| j.progress.current.push(repo.to_string()));
        persist(&self.ctx, &self.live, false);
    }
    fn fetched_bytes(&self, repo: &str, bytes: u64) {
        let delta = match self.live.fetched.lock() {
            Ok(mut m) => {
                let prev = m.insert(repo.to_string(), bytes).unwrap_or(0);
                bytes.saturating_sub(prev)
            }
            Err(_) => 0,
        };
        self.live.update(|j| j.progress.bytes_fetched += delta);
    }
    fn finished(&self, r: &RepoResult) {
        let already = self
            .live
            .fetched
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&r.full_name))
            .unwrap_or(0);
        self.live.update(|j| {
            let p = &mut j.progress;
            p.repos_done += 1;
            p.current.retain(|c| c != &r.full_name);
            match &r.outcome {
                RepoOutcome::Snapshot {
                    new_bytes,
                    fetched_bytes,
                    ..
                } => {
                    p.snapshots += 1;
                    p.bytes_stored += new_bytes;
                    p.bytes_fetched += fetched_bytes.saturating_sub(already);
                }
                RepoOutcome::Partial {
                    new_bytes,
                    fetched_bytes,
                    ..
                } => {
                    p.partial += 1;
                    if *new_bytes > 0 {
                        p.snapshots += 1;
                    } else {
                        p.unchanged += 1;
                    }
                    p.bytes_stored += new_bytes;
                    p.bytes_fetched += fetched_bytes.saturating_sub(already);
                }
                RepoOutcome::Unchanged { .. } => p.unchanged += 1,
                RepoOutcome::Failed { .. } => p.failed += 1,
                RepoOutcome::Skipped { .. } => p.skipped += 1,
                RepoOutcome::Deferred { .. } => p.deferred += 1,
            }
        });
        // Results are stored as they happen, so a crash keeps them.
        let id = self.live.snapshot().map(|j| j.id).unwrap_or(0);
        record(&self.ctx, id, &self.connection, r);
        persist(&self.ctx, &self.live, false);
    }
    fn notice(&self, message: &str) {
        self.live
            .update(|j| j.progress.notice = Some(message.to_string()));
    }
    fn credentials(&self, stats: &[crate::providers::CredentialStats]) {
        let conn = self.connection.clone();
        self.live.update(|j| {
            let list = &mut j.progress.credentials;
            list.retain(|c| c.connection != conn);
            list.extend(stats.iter().map(|s| CredentialCounters {
                connection: conn.clone(),
                credential: s.credential.clone(),
                principal: s.principal.clone(),
                requests: s.requests,
                rate_limited: s.rate_limited,
                cooldowns: s.cooldowns,
                failed: s.failed.clone(),
            }));
        });
    }
}

/// Test-only fault injection: panics at chosen points of the runner, keyed by
/// `repository <full name>` (inside the per-repository boundary) or
/// `connection <name>` (inside the per-job boundary, before the connection's
/// backup).
#[cfg(test)]
pub(crate) mod faults {
    use std::sync::Mutex;

    static ARMED: Mutex<Vec<String>> = Mutex::new(Vec::new());

    /// Makes every later [`hit`] of `key` panic.
    pub fn panic_at(key: &str) {
        ARMED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(key.to_string());
    }

    pub fn hit(key: &str) {
        let armed = ARMED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|k| k == key);
        if armed {
            panic!("injected fault at {key}");
        }
    }
}

/// What a plan's copy did, for its job's notice.
fn copy_note(target: &str, r: &super::archive_copy::ArchiveCopyReport) -> String {
    format!(
        "copy to {target} ({}): {} blobs ({}) copied, {} snapshots copied, {} there already",
        r.to,
        r.tally.blobs_copied + r.tally.blobs_repaired,
        crate::fmt::human_bytes(r.tally.bytes_copied),
        r.tally.snapshots_copied,
        r.tally.snapshots_present
    )
}

/// A plan's copy of the archive, shown as its job's notice; stops when the job is
/// cancelled or the daemon shuts down.
struct JobCopyProgress<'a> {
    live: &'a LiveJob,
    stopping: &'a AtomicBool,
    target: &'a str,
    total: AtomicU64,
    done: AtomicU64,
}

impl super::archive_copy::CopyProgress for JobCopyProgress<'_> {
    fn planned(&self, _blobs: u64, bytes: u64) {
        self.total.store(bytes, Ordering::SeqCst);
        self.blob_done(0);
    }

    fn blob_done(&self, bytes: u64) {
        let done = self.done.fetch_add(bytes, Ordering::SeqCst) + bytes;
        let total = self.total.load(Ordering::SeqCst);
        let note = format!(
            "copying the archive to {}: {} of {}",
            self.target,
            crate::fmt::human_bytes(done),
            crate::fmt::human_bytes(total)
        );
        self.live.update(|j| j.progress.notice = Some(note));
    }

    fn cancelled(&self) -> bool {
        self.live.cancel.load(Ordering::SeqCst) || self.stopping.load(Ordering::SeqCst)
    }
}

/// The plan a job ran, when it was a plan's backup.
fn plan_of(job: &Job) -> Option<&str> {
    match &job.kind {
        JobKind::Backup {
            plan: Some(plan), ..
        } => Some(plan),
        _ => None,
    }
}

/// The plan a job ran, when it was a plan's backup that succeeded or ended partial
/// (some repositories backed up): what a copy after the run takes.
fn succeeded_or_partial_plan(job: &Job) -> Option<&str> {
    plan_of(job).filter(|_| matches!(job.state, JobState::Succeeded | JobState::Partial))
}

/// The plan a job ran, when it was a plan's backup that succeeded (what runs the plan's
/// retention and check).
fn succeeded_plan(job: &Job) -> Option<&str> {
    plan_of(job).filter(|_| job.state == JobState::Succeeded)
}

/// When a scheduled run of `plan` stops starting repositories: its window's close
/// (now, when the window is shut). A manual "run now", or a plan without a window, has
/// none.
fn window_deadline(plan: Option<&Plan>, job: &Job) -> Result<Option<Instant>, EngineError> {
    let Some(p) = plan.filter(|_| job.trigger != Trigger::Manual) else {
        return Ok(None);
    };
    let Some(window) = plans::window_of(&p.spec)? else {
        return Ok(None);
    };
    let zone = plans::zone_of(&p.spec)?;
    let now = OffsetDateTime::now_utc();
    Ok(Some(match window.closes_at(now, &zone) {
        Some(close) => Instant::now() + (close - now).max(time::Duration::ZERO).unsigned_abs(),
        None => Instant::now(),
    }))
}

/// The repositories of `target` the run deferred (stopped, or its window closed)
/// become a target of the job's resume.
fn record_deferred(live: &LiveJob, target: &JobTarget, results: &[RepoResult]) {
    let deferred: Vec<String> = results
        .iter()
        .filter(|r| matches!(r.outcome, RepoOutcome::Deferred { .. }))
        .map(|r| r.full_name.clone())
        .collect();
    if !deferred.is_empty() {
        live.update(|j| {
            j.deferred.push(JobTarget {
                connection: target.connection.clone(),
                only: deferred,
            })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{add_connection, NewConnection};
    use crate::vault::{Credential, CredentialKind};
    use reposafe_testkit::{gitutil, CloudServer, TempDir};
    use std::collections::BTreeMap;

    fn progress(total: u64, snapshots: u64, unchanged: u64, failed: u64) -> JobProgress {
        JobProgress {
            repos_total: total,
            repos_done: snapshots + unchanged + failed,
            snapshots,
            unchanged,
            failed,
            ..JobProgress::default()
        }
    }

    fn ending(p: &JobProgress, failed: bool, stop: bool, shutdown: bool) -> JobState {
        final_state(&JobEnding {
            progress: p,
            failed,
            stop_requested: stop,
            shutting_down: shutdown,
        })
    }

    #[test]
    fn final_state_precedence() {
        use JobState::*;
        let all_ok = progress(3, 2, 1, 0);
        let some_failed = progress(3, 2, 0, 1);
        let all_failed = progress(3, 0, 0, 3);
        let deferred = JobProgress {
            deferred: 2,
            ..progress(3, 1, 0, 0)
        };
        let deferred_and_failed = JobProgress {
            deferred: 1,
            ..progress(3, 1, 0, 1)
        };
        let failed_and_skipped = JobProgress {
            skipped: 1,
            ..progress(3, 0, 0, 2)
        };
        let skipped_only = JobProgress {
            skipped: 2,
            ..progress(2, 0, 0, 0)
        };
        // (progress, runner failed, stop requested, shutting down) → state
        let table: &[(&JobProgress, bool, bool, bool, JobState)] = &[
            // The runner's failure beats everything.
            (&all_ok, true, false, false, Failed),
            (&deferred, true, true, true, Failed),
            (&deferred, true, true, false, Failed),
            // A shutdown with work left interrupts; without, the counters decide.
            (&deferred, false, true, true, Interrupted),
            (&deferred_and_failed, false, true, true, Interrupted),
            (&all_ok, false, true, true, Succeeded),
            (&some_failed, false, true, true, Partial),
            // A cancel beats the counters.
            (&all_ok, false, true, false, Cancelled),
            (&deferred, false, true, false, Cancelled),
            (&all_failed, false, true, false, Cancelled),
            // Work left for the next window.
            (&deferred, false, false, false, Partial),
            (&deferred_and_failed, false, false, false, Partial),
            // Failures: partial while anything was backed up.
            (&some_failed, false, false, false, Partial),
            (&all_failed, false, false, false, Failed),
            (&failed_and_skipped, false, false, false, Failed),
            // Success, also when the plan skipped everything or there was nothing.
            (&all_ok, false, false, false, Succeeded),
            (&skipped_only, false, false, false, Succeeded),
            (&JobProgress::default(), false, false, false, Succeeded),
        ];
        for (i, (p, failed, stop, shutdown, want)) in table.iter().enumerate() {
            assert_eq!(
                ending(p, *failed, *stop, *shutdown),
                *want,
                "row {i}: {p:?} failed={failed} stop={stop} shutdown={shutdown}"
            );
        }
    }

    #[test]
    fn a_panic_is_caught_with_its_message() {
        let r = guard_repository("ws/ok", || {
            Ok(RepoOutcome::Unchanged {
                last_snapshot: "s".into(),
            })
        });
        assert!(matches!(r, Ok(RepoOutcome::Unchanged { .. })));
        let r = guard_repository("ws/bad", || panic!("index {} out of range", 7));
        match r {
            Ok(RepoOutcome::Failed { reason }) => {
                assert_eq!(reason, "backing up ws/bad panicked: index 7 out of range")
            }
            other => panic!("expected a failed outcome, got {other:?}"),
        }
    }

    const EMAIL: &str = "me@panicky.test";
    const TOKEN: &str = "ATATT3xFfGF0-jobs-unit-test-token";

    fn connect(ctx: &Context, name: &str, ws: &str, server: &CloudServer) {
        let base = server.base_url();
        add_connection(
            ctx,
            NewConnection {
                name: name.into(),
                provider: "bitbucket-cloud".into(),
                settings: BTreeMap::from([
                    ("workspace".to_string(), ws.to_string()),
                    ("api-base-url".to_string(), base.clone()),
                    ("git-base-url".to_string(), base),
                ]),
                credential: Credential {
                    kind: CredentialKind::ApiToken,
                    identity: Some(EMAIL.into()),
                    secret: TOKEN.to_string().into(),
                },
                read_only: false,
                allow_restore: false,
                rate_limit: None,
                tls: Default::default(),
            },
            true,
        )
        .expect("connection");
    }

    fn backup(connection: &str, only: &[String]) -> JobKind {
        JobKind::Backup {
            plan: None,
            targets: vec![JobTarget {
                connection: connection.into(),
                only: only.to_vec(),
            }],
        }
    }

    fn wait(jobs: &Jobs, id: u64) -> Job {
        let until = Instant::now() + Duration::from_secs(180);
        loop {
            let j = jobs.get(id).expect("job");
            if j.state.is_finished() {
                return j;
            }
            assert!(Instant::now() < until, "job {id} never finished: {j:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One worker: a repository that panics fails alone with the panic's
    /// message, a job whose runner panics fails, and the same worker then runs
    /// the next job to success.
    #[test]
    fn workers_survive_panics_of_a_repository_and_of_a_job() {
        const WS: &str = "panicky";
        let server = CloudServer::start();
        let src = TempDir::new("reposafe-jobs-src");
        let repos = gitutil::make_workspace_fixture(&server, WS, 3, src.path());
        server.add_api_token("acct-1", EMAIL, TOKEN);
        server.grant("acct-1", WS);
        let data = TempDir::new("reposafe-jobs-data");
        let ctx = Context::open(data.path()).expect("data dir");
        connect(&ctx, WS, WS, &server);
        connect(&ctx, "exploding", WS, &server);
        let config = RunnerConfig {
            workers: 1,
            parallel: 2,
            retry_base: Duration::from_millis(20),
            ..RunnerConfig::default()
        };
        let jobs = Jobs::new(Arc::new(ctx), config).expect("jobs");
        jobs.start();
        let names: Vec<String> = repos.iter().map(|(s, _)| format!("{WS}/{s}")).collect();
        faults::panic_at(&format!("repository {}", names[1]));
        faults::panic_at("connection exploding");

        let first = jobs
            .submit(backup(WS, &[]), Trigger::Manual, None)
            .expect("submit");
        let first = wait(&jobs, first.id);
        assert_eq!(first.state, JobState::Partial, "{first:?}");
        assert_eq!(
            (first.progress.snapshots, first.progress.failed),
            (2, 1),
            "{first:?}"
        );
        let results = jobs.context().state.job_results(first.id).expect("results");
        let failed = results
            .iter()
            .find(|r| r.repository == names[1])
            .expect("the panicking repository has a result");
        assert_eq!(failed.status, ResultStatus::Failed);
        assert_eq!(
            failed.reason.as_deref(),
            Some(
                format!(
                    "backing up {} panicked: injected fault at repository {}",
                    names[1], names[1]
                )
                .as_str()
            )
        );

        let second = jobs
            .submit(backup("exploding", &[]), Trigger::Manual, None)
            .expect("submit");
        let second = wait(&jobs, second.id);
        assert_eq!(second.state, JobState::Failed, "{second:?}");
        let error = second.error.clone().unwrap_or_default();
        assert!(
            error.contains("panicked: injected fault at connection exploding"),
            "{error}"
        );
        assert!(second.finished_at.is_some() && second.progress.current.is_empty());
        assert_eq!(
            jobs.context().state.job(second.id).expect("stored").state,
            JobState::Failed
        );

        let calm = [names[0].clone(), names[2].clone()];
        let third = jobs
            .submit(backup(WS, &calm), Trigger::Manual, None)
            .expect("submit");
        let third = wait(&jobs, third.id);
        assert_eq!(third.state, JobState::Succeeded, "{third:?}");
        assert_eq!(third.progress.unchanged, 2, "{third:?}");
        jobs.shutdown(Duration::from_secs(5));
    }

    /// While a job waits with nothing else happening (here for another job's backup of
    /// the same repository), its stored record catches up with its live progress within
    /// [`PERSIST_EVERY`], not only at its next event.
    #[test]
    fn progress_is_stored_within_two_seconds_while_nothing_else_happens() {
        use crate::engine::repo_lock::{acquire, Wait, MAX_WAIT};
        const WS: &str = "waiting";
        let server = CloudServer::start();
        let src = TempDir::new("reposafe-jobs-wait-src");
        let opts = gitutil::FixtureOptions {
            repos: 1,
            include_empty: false,
            ..gitutil::FixtureOptions::default()
        };
        let repos = gitutil::make_workspace_fixture_with(&server, WS, src.path(), &opts);
        let name = format!("{WS}/{}", repos[0].slug);
        server.add_api_token("acct-1", EMAIL, TOKEN);
        server.grant("acct-1", WS);
        let data = TempDir::new("reposafe-jobs-wait-data");
        let ctx = Context::open(data.path()).expect("data dir");
        connect(&ctx, WS, WS, &server);
        let config = RunnerConfig {
            workers: 1,
            parallel: 1,
            retry_base: Duration::from_millis(20),
            ..RunnerConfig::default()
        };
        let jobs = Jobs::new(Arc::new(ctx), config).expect("jobs");
        jobs.start();
        let first = jobs.submit(backup(WS, &[]), Trigger::Manual, None);
        assert_eq!(
            wait(&jobs, first.expect("submit").id).state,
            JobState::Succeeded
        );
        // Another backup of the repository holds it.
        let ctx = jobs.context();
        let (repo, _) = ctx
            .archive()
            .expect("archive")
            .histories()
            .expect("histories")
            .remove(0);
        let never = AtomicBool::new(false);
        let wait_for = Wait {
            interrupt: &never,
            deadline: None,
            max_wait: MAX_WAIT,
            on_wait: &|| {},
        };
        let held = acquire(&ctx.mirror_dir(&repo), &wait_for).expect("lock");
        let id = jobs
            .submit(backup(WS, &[]), Trigger::Manual, None)
            .expect("submit")
            .id;
        let waiting = |j: &Job| {
            j.progress.current == [name.clone()]
                && j.progress
                    .notice
                    .as_deref()
                    .is_some_and(|n| n.contains("waiting for another job"))
        };
        let until = Instant::now() + Duration::from_secs(60);
        while !waiting(&jobs.get(id).expect("live")) {
            assert!(Instant::now() < until, "{:?}", jobs.get(id));
            std::thread::sleep(Duration::from_millis(10));
        }
        let shown = Instant::now();
        loop {
            let stored = ctx.state.job(id).expect("stored");
            if waiting(&stored) {
                break;
            }
            assert!(
                shown.elapsed() < PERSIST_EVERY + Duration::from_millis(500),
                "the stored record lags the live one by more than 2 s: {stored:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(held);
        let second = wait(&jobs, id);
        assert_eq!(
            (second.state, second.progress.unchanged),
            (JobState::Succeeded, 1)
        );
        assert_eq!(
            ctx.state.job(id).expect("stored").state,
            JobState::Succeeded
        );
        jobs.shutdown(Duration::from_secs(5));
    }

    /// Two jobs backing up the same repositories at once (a plan's run and a manual
    /// run) through one runner with 2 workers: the per-repository lock makes the
    /// second wait for each repository the first is fetching, so neither deletes the
    /// other's temporary clone or packs. Both succeed and the archive checks clean.
    #[test]
    fn two_jobs_on_the_same_repositories_both_succeed() {
        use crate::engine::{LocalService, Service};
        const WS: &str = "overlap";
        let server = CloudServer::start();
        let src = TempDir::new("reposafe-jobs-overlap-src");
        // Big enough that a first clone takes a while, so the jobs overlap on it.
        let opts = gitutil::FixtureOptions {
            repos: 4,
            binary_bytes: 3 << 20,
            include_empty: false,
            ..gitutil::FixtureOptions::default()
        };
        let repos = gitutil::make_workspace_fixture_with(&server, WS, src.path(), &opts);
        server.add_api_token("acct-1", EMAIL, TOKEN);
        server.grant("acct-1", WS);
        let data = TempDir::new("reposafe-jobs-overlap-data");
        let ctx = Context::open(data.path()).expect("data dir");
        connect(&ctx, WS, WS, &server);
        let config = RunnerConfig {
            workers: 2,
            parallel: 4,
            retries: 0,
            retry_base: Duration::from_millis(20),
        };
        let ctx = Arc::new(ctx);
        let jobs = Jobs::new(ctx.clone(), config).expect("jobs");
        let a = jobs
            .submit(backup(WS, &[]), Trigger::Manual, None)
            .expect("submit a");
        let b = jobs
            .submit(backup(WS, &[]), Trigger::Manual, None)
            .expect("submit b");
        jobs.start();
        let (a, b) = (wait(&jobs, a.id), wait(&jobs, b.id));
        for j in [&a, &b] {
            let results = ctx.state.job_results(j.id).expect("results");
            let failed: Vec<_> = results
                .iter()
                .filter(|r| r.status == ResultStatus::Failed)
                .map(|r| (&r.repository, &r.reason))
                .collect();
            assert!(failed.is_empty(), "job {}: failed {failed:?}", j.id);
            assert_eq!(j.state, JobState::Succeeded, "{j:?}");
            assert_eq!(results.len(), repos.len(), "{results:?}");
        }
        let done = a.progress.snapshots + b.progress.snapshots;
        assert!(done >= repos.len() as u64, "{a:?} {b:?}");
        jobs.shutdown(Duration::from_secs(5));
        let service = LocalService::over(jobs.clone(), true);
        let read_all = crate::engine::service::CheckRequest {
            read_data: true,
            subset_percent: None,
        };
        let check = service.check(read_all).expect("check");
        assert!(check.damaged.is_empty(), "{:?}", check.damaged);
        assert_eq!(check.snapshots, done as usize);
    }
}
