//! What the daemon does with time: queue a plan's job when its schedule fires
//! (waiting for its window to open), and once at start for schedules missed
//! while it was down. Plain functions over [`Jobs`], called by `serve` every
//! second, so tests can drive them with any clock.

use super::jobs::Jobs;
use super::plans;
use super::EngineError;
use crate::state::{JobKind, JobTarget, Plan, Trigger};
use time::OffsetDateTime;

fn targets(plan: &Plan) -> Vec<JobTarget> {
    plan.spec
        .connections
        .iter()
        .map(|c| JobTarget {
            connection: c.clone(),
            only: Vec::new(),
        })
        .collect()
}

/// Queues a plan's job now (or at its window's next opening).
fn fire(jobs: &Jobs, plan: &Plan, trigger: Trigger, now: OffsetDateTime) -> Result<u64, EngineError> {
    let not_before = match plans::window_of(&plan.spec)? {
        Some(w) => {
            let zone = plans::zone_of(&plan.spec)?;
            let open = w.next_open(now, &zone);
            (open > now).then_some(open)
        }
        None => None,
    };
    let job = jobs.submit(
        JobKind::Backup {
            plan: Some(plan.spec.name.clone()),
            targets: targets(plan),
        },
        trigger,
        not_before,
    )?;
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
                    tracing::info!("plan {}: the run due at {missed} was missed; queued job {id}", plan.spec.name);
                    queued.push(id);
                }
                Err(e) => tracing::warn!("plan {}: cannot queue the missed run: {e}", plan.spec.name),
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
    Ok(queued)
}
