//! What the daemon does with time: queue a plan's job when its schedule fires
//! (waiting for its window to open), and once at start for schedules missed
//! while it was down. Plain functions over [`Jobs`], called by `serve` every
//! second, so tests can drive them with any clock.

use super::jobs::Jobs;
use super::plans;
use super::EngineError;
use crate::state::{Plan, Trigger};
use time::OffsetDateTime;

/// Queues a plan's job now (or at its window's next opening).
fn fire(
    jobs: &Jobs,
    plan: &Plan,
    trigger: Trigger,
    now: OffsetDateTime,
) -> Result<u64, EngineError> {
    let not_before = match plans::window_of(&plan.spec)? {
        Some(w) => {
            let zone = plans::zone_of(&plan.spec)?;
            let open = w.next_open(now, &zone);
            (open > now).then_some(open)
        }
        None => None,
    };
    let job = jobs.submit(plans::plan_job(&plan.spec), trigger, not_before)?;
    Ok(job.id)
}

/// At start: for every enabled plan whose schedule fired while the daemon was
/// down (since its last handled fire, or its creation), queue one job.
pub fn catch_up(jobs: &Jobs, now: OffsetDateTime, enabled: bool) -> Result<Vec<u64>, EngineError> {
    let mut queued = Vec::new();
    for plan in jobs.context().state.plans()? {
        let Ok(Some(schedule)) = plans::schedule_of(&plan.spec) else {
            continue;
        };
        let since = plan.status.last_fire.unwrap_or(plan.status.created_at);
        let Some(missed) = schedule.missed_since(since, now) else {
            continue;
        };
        if enabled && plan.spec.enabled && plan.spec.run_missed {
            match fire(jobs, &plan, Trigger::Missed, now) {
                Ok(id) => {
                    tracing::info!(
                        "plan {}: the run due at {missed} was missed; queued job {id}",
                        plan.spec.name
                    );
                    queued.push(id);
                }
                Err(e) => {
                    tracing::warn!("plan {}: cannot queue the missed run: {e}", plan.spec.name)
                }
            }
        }
        jobs.context()
            .state
            .update_plan(&plan.spec.name, |p| p.status.last_fire = Some(missed))?;
    }
    Ok(queued)
}

/// One tick: queue the job of every enabled plan whose next fire time (after
/// the last handled one) has come. A plan whose previous job is still queued
/// or running is not queued twice; that fire is logged and dropped.
pub fn tick(jobs: &Jobs, now: OffsetDateTime) -> Result<Vec<u64>, EngineError> {
    let mut queued = Vec::new();
    for plan in jobs.context().state.plans()? {
        if !plan.spec.enabled {
            continue;
        }
        let schedule = match plans::schedule_of(&plan.spec) {
            Ok(Some(s)) => s,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("plan {}: {e}", plan.spec.name);
                continue;
            }
        };
        let since = plan.status.last_fire.unwrap_or(plan.status.created_at);
        let Some(due) = schedule.next_after(since) else {
            continue;
        };
        if due > now {
            continue;
        }
        // Handle the newest due time only; older ones collapse into it.
        let due = schedule.missed_since(since, now).unwrap_or(due);
        if jobs.plan_active(&plan.spec.name) {
            tracing::warn!(
                "plan {}: the run due at {due} is skipped because its previous job is still queued or running",
                plan.spec.name
            );
        } else {
            match fire(jobs, &plan, Trigger::Schedule, now) {
                Ok(id) => queued.push(id),
                Err(e) => tracing::warn!("plan {}: cannot queue its run: {e}", plan.spec.name),
            }
        }
        jobs.context()
            .state
            .update_plan(&plan.spec.name, |p| p.status.last_fire = Some(due))?;
    }
    jobs.notifications().tick(jobs, now);
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Context, RunnerConfig};
    use crate::state::{Connection, JobState, PlanSpec};
    use crate::vault::CredentialKind;
    use std::sync::Arc;
    use time::macros::datetime;

    fn spec(name: &str, schedule: &str, window: Option<&str>) -> PlanSpec {
        PlanSpec {
            name: name.into(),
            connections: vec!["acme".into()],
            include: vec!["*".into()],
            exclude: vec![],
            auto_add: true,
            schedule: Some(schedule.into()),
            timezone: Some("UTC".into()),
            window: window.map(str::to_string),
            concurrency: None,
            read_only: false,
            enabled: true,
            run_missed: true,
            additional_credentials: vec![],
            metadata_every: None,
            retention: None,
            keep_deleted_for: None,
            check_every: None,
            check_subset: None,
            copy_to: None,
        }
    }

    /// A runner without workers: jobs are queued, never run.
    fn jobs() -> (tempfile::TempDir, Arc<Jobs>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = Context::open(dir.path()).expect("context");
        ctx.state
            .add_connection(
                &Connection {
                    name: "acme".into(),
                    provider: "bitbucket-cloud".into(),
                    settings: Default::default(),
                    credential_kind: CredentialKind::AccessToken,
                    credential_identity: None,
                    read_only: false,
                    allow_restore: false,
                    rate_limit: None,
                    principal: None,
                    id: Connection::new_id(),
                    allowed_origins: Vec::new(),
                    created_at: OffsetDateTime::UNIX_EPOCH,
                },
                b"sealed",
            )
            .expect("connection");
        let jobs = Jobs::new(Arc::new(ctx), RunnerConfig::default()).expect("jobs");
        (dir, jobs)
    }

    fn add(jobs: &Jobs, spec: PlanSpec, created: OffsetDateTime) {
        let ctx = jobs.context();
        plans::create_plan(ctx, spec.clone()).expect("plan");
        ctx.state
            .update_plan(&spec.name, |p| p.status.created_at = created)
            .expect("update");
    }

    #[test]
    fn tick_fires_once_per_due_time_and_not_while_the_previous_job_waits() {
        let (_d, jobs) = jobs();
        add(
            &jobs,
            spec("nightly", "0 3 * * *", None),
            datetime!(2026-01-01 00:00 UTC),
        );
        assert!(tick(&jobs, datetime!(2026-01-01 02:59:59 UTC))
            .unwrap()
            .is_empty());
        let fired = tick(&jobs, datetime!(2026-01-01 03:00:01 UTC)).unwrap();
        assert_eq!(fired.len(), 1);
        let job = jobs.get(fired[0]).unwrap();
        assert_eq!(job.trigger, Trigger::Schedule);
        assert_eq!(job.state, JobState::Queued);
        assert!(tick(&jobs, datetime!(2026-01-01 03:00:30 UTC))
            .unwrap()
            .is_empty());
        // Next day, the first job still queued: that fire is skipped, not doubled.
        assert!(tick(&jobs, datetime!(2026-01-02 03:00:01 UTC))
            .unwrap()
            .is_empty());
        let plan = jobs.context().state.plan("nightly").unwrap();
        assert_eq!(plan.status.last_fire, Some(datetime!(2026-01-02 03:00 UTC)));
    }

    #[test]
    fn a_job_due_outside_its_window_waits_for_the_opening() {
        let (_d, jobs) = jobs();
        add(
            &jobs,
            spec("windowed", "0 3 * * *", Some("01:00-02:00")),
            datetime!(2026-01-01 00:00 UTC),
        );
        let fired = tick(&jobs, datetime!(2026-01-01 03:00:01 UTC)).unwrap();
        let job = jobs.get(fired[0]).unwrap();
        assert_eq!(job.not_before, Some(datetime!(2026-01-02 01:00 UTC)));
    }

    #[test]
    fn missed_schedules_run_once_at_start_unless_turned_off() {
        let (_d, jobs) = jobs();
        add(
            &jobs,
            spec("daily", "@daily", None),
            datetime!(2026-01-01 12:00 UTC),
        );
        let mut off = spec("off", "@daily", None);
        off.run_missed = false;
        add(&jobs, off, datetime!(2026-01-01 12:00 UTC));
        let now = datetime!(2026-01-05 08:00 UTC);
        let queued = catch_up(&jobs, now, true).unwrap();
        assert_eq!(
            queued.len(),
            1,
            "one run for four missed days, none for `off`"
        );
        assert_eq!(jobs.get(queued[0]).unwrap().trigger, Trigger::Missed);
        for name in ["daily", "off"] {
            let p = jobs.context().state.plan(name).unwrap();
            assert_eq!(p.status.last_fire, Some(datetime!(2026-01-05 00:00 UTC)));
        }
        // Handled: the next tick the same morning queues nothing more.
        assert!(tick(&jobs, now).unwrap().is_empty());
        assert!(catch_up(&jobs, now, true).unwrap().is_empty());
    }
}
