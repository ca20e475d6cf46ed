//! `forget`: removes the snapshots a retention policy does not keep.
//!
//! Per repository history (one repository, a connection's, or every one), the
//! snapshots newest first go through [`retention::apply`]; those no rule keeps lose
//! their manifest (`dry_run`: nothing is removed, the report is the same). The newest
//! snapshot of a repository is always kept. A repository that disappeared from its
//! provider (its connection's latest listing did not name it, or the connection is gone)
//! keeps every snapshot unless `keep_deleted_for` has passed since it was last seen:
//! backups outlive their source. Forgetting frees only the manifests: the packs stay
//! shared with the kept snapshots until `prune` (asked with `prune`, and always after a
//! plan's retention) consolidates the thinned histories and sweeps.

use std::collections::{BTreeMap, BTreeSet};

use time::{Duration, OffsetDateTime};

use super::retention::{self, Policy};
use super::service::{
    ForgetReport, ForgetRepository, ForgetRequest, ForgetSnapshot, RetentionView,
};
use super::{Context, EngineError};
use crate::archive::{RepoIdentity, Snapshot};
use crate::scheduler::Zone;
use crate::state::{Actor, RepoRecord, StateError};

/// Applies the request's policy (see the module doc).
pub fn forget(
    ctx: &Context,
    req: &ForgetRequest,
    progress: &dyn super::prune::PruneProgress,
) -> Result<ForgetReport, EngineError> {
    if req.policy.is_empty() {
        return Err(EngineError::Field {
            field: "policy".into(),
            message: "give at least one rule (--keep-last, --keep-hourly, --keep-daily, \
                      --keep-weekly, --keep-monthly, --keep-yearly, --keep-within or --gfs): \
                      without one nothing would be kept but the newest snapshot"
                .into(),
        });
    }
    let zone = Zone::parse(req.zone.as_deref()).map_err(|e| EngineError::Field {
        field: "zone".into(),
        message: e.to_string(),
    })?;
    let histories = selected(ctx, req)?;
    let rules = Rules {
        policy: &req.policy,
        keep_deleted_for_secs: req.keep_deleted_for_secs,
        zone: &zone,
        dry_run: req.dry_run,
    };
    let mut report = forget_histories(ctx, &histories, &rules)?;
    if req.prune {
        report.prune = Some(prune_thinned(ctx, &histories, &report, progress)?);
    }
    Ok(report)
}

/// Prunes after a forget: consolidates the histories that lost snapshots (in the same
/// order as `report.repositories`), then sweeps the archive.
fn prune_thinned(
    ctx: &Context,
    histories: &[RepoIdentity],
    report: &ForgetReport,
    progress: &dyn super::prune::PruneProgress,
) -> Result<super::service::PruneReport, EngineError> {
    let thinned: Vec<RepoIdentity> = histories
        .iter()
        .zip(&report.repositories)
        .filter(|(_, r)| r.snapshots.iter().any(|s| !s.keep))
        .map(|(id, _)| id.clone())
        .collect();
    let dirs = thinned.iter().map(RepoIdentity::dir_name).collect();
    super::prune::prune_histories(ctx, &thinned, &dirs, report.dry_run, progress)
}

/// A policy and how it is applied.
pub struct Rules<'a> {
    pub policy: &'a Policy,
    /// See [`ForgetRequest::keep_deleted_for_secs`].
    pub keep_deleted_for_secs: Option<u64>,
    pub zone: &'a Zone,
    pub dry_run: bool,
}

/// Applies `rules` to each of these repository histories.
pub fn forget_histories(
    ctx: &Context,
    histories: &[RepoIdentity],
    rules: &Rules<'_>,
) -> Result<ForgetReport, EngineError> {
    let now = OffsetDateTime::now_utc();
    let mut report = ForgetReport {
        dry_run: rules.dry_run,
        ..Default::default()
    };
    let mut listings = Listings::default();
    for repo in histories {
        let records = listings.of(ctx, &repo.connection)?;
        let done = one_history(ctx, rules, now, repo, records)?;
        report.removed += done.snapshots.iter().filter(|s| !s.keep).count();
        report.kept += done.snapshots.iter().filter(|s| s.keep).count();
        report.repositories.push(done);
    }
    Ok(report)
}

/// The histories the request names: one repository, a connection's, or all.
fn selected(ctx: &Context, req: &ForgetRequest) -> Result<Vec<RepoIdentity>, EngineError> {
    let chosen = [req.repository.is_some(), req.all]
        .iter()
        .filter(|b| **b)
        .count()
        + usize::from(req.repository.is_none() && req.connection.is_some());
    if chosen != 1 {
        return Err(EngineError::Field {
            field: "repository".into(),
            message: "name what to forget in: one repository (ws/slug), --connection NAME, \
                      or --all"
                .into(),
        });
    }
    let all = ctx.archive()?.histories()?;
    let picked: Vec<RepoIdentity> = all
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| req.connection.as_ref().is_none_or(|c| *c == id.connection))
        .filter(|id| req.repository.as_ref().is_none_or(|r| *r == id.full_name))
        .collect();
    if picked.is_empty() {
        if let Some(r) = &req.repository {
            return Err(EngineError::NotFound(format!(
                "no snapshots of {r} in the archive"
            )));
        }
    }
    Ok(picked)
}

/// When the repository was last seen by its connection's listings, if it has
/// disappeared since (`None`: still there). A backup records the repositories it
/// lists with one time, so one missing from the newest listing has an older time.
/// (A backup of selected repositories only — a plan's patterns, a webhook — records
/// only those: the others then count as disappeared until the next listing names
/// them, so they are kept: the safe side.)
fn disappeared_since(
    records: Option<&[RepoRecord]>,
    repo: &RepoIdentity,
    newest_taken: OffsetDateTime,
) -> Option<OffsetDateTime> {
    let Some(of_connection) = records else {
        return Some(newest_taken);
    };
    let newest_listing = of_connection.iter().map(|r| r.last_seen).max()?;
    match of_connection.iter().find(|r| r.repo_id == repo.repo_id) {
        None => Some(newest_taken),
        Some(r) if r.last_seen < newest_listing => Some(r.last_seen),
        Some(_) => None,
    }
}

/// Each connection's repository records, read once per connection for a whole
/// forget (`None`: the connection is gone).
#[derive(Default)]
struct Listings(BTreeMap<String, Option<Vec<RepoRecord>>>);

impl Listings {
    fn of(
        &mut self,
        ctx: &Context,
        connection: &str,
    ) -> Result<Option<&[RepoRecord]>, EngineError> {
        if !self.0.contains_key(connection) {
            let records = match ctx.state.connection(connection) {
                Ok(_) => Some(ctx.state.repositories(Some(connection))?),
                Err(StateError::NoSuchConnection(_)) => None,
                Err(e) => return Err(e.into()),
            };
            self.0.insert(connection.to_string(), records);
        }
        Ok(self.0.get(connection).and_then(|r| r.as_deref()))
    }
}

/// Why a repository gone since `since` keeps every snapshot, unless the grace period
/// `grace_secs` has passed by `now`.
fn protection(
    since: OffsetDateTime,
    grace_secs: Option<u64>,
    now: OffsetDateTime,
) -> Option<String> {
    // Longer than `Duration` holds: as good as forever (a cast would wrap negative
    // and end the protection at once).
    let grace = grace_secs.map(|s| Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX)));
    match grace {
        Some(g) if now - since >= g => None,
        _ => Some(format!(
            "not in its connection's latest listing (last listed {}): its snapshots are kept{}",
            crate::fmt::fmt_time(since),
            match grace {
                Some(_) => " (keep_deleted_for has not passed)",
                None => " (keep_deleted_for: forever)",
            }
        )),
    }
}

/// The verdicts on one repository's snapshots, applied unless `dry_run`.
fn one_history(
    ctx: &Context,
    rules: &Rules<'_>,
    now: OffsetDateTime,
    repo: &RepoIdentity,
    records: Option<&[RepoRecord]>,
) -> Result<ForgetRepository, EngineError> {
    let mut snaps: Vec<Snapshot> = ctx.archive()?.snapshots_of(repo)?;
    snaps.reverse();
    let newest_taken = snaps.first().map_or(now, |s| s.taken_at);
    let protected = disappeared_since(records, repo, newest_taken)
        .and_then(|since| protection(since, rules.keep_deleted_for_secs, now));
    let policy = if protected.is_some() {
        Policy::default()
    } else {
        rules.policy.clone()
    };
    let taken: Vec<OffsetDateTime> = snaps.iter().map(|s| s.taken_at).collect();
    let verdicts = retention::apply(&taken, &policy, rules.zone);
    let mut out = ForgetRepository {
        repository: repo.full_name.clone(),
        connection: repo.connection.clone(),
        protected,
        snapshots: Vec::new(),
    };
    for (snap, v) in snaps.iter().zip(verdicts) {
        if !v.keep && !rules.dry_run {
            ctx.archive()?.delete_snapshot(snap)?;
        }
        out.snapshots.push(ForgetSnapshot {
            id: snap.id.as_str().to_string(),
            taken_at: snap.taken_at,
            keep: v.keep,
            reasons: v
                .reasons
                .iter()
                .map(|r| r.to_string())
                .chain(out.protected.as_ref().map(|_| "disappeared".to_string()))
                .collect(),
        });
    }
    Ok(out)
}

/// After a successful run of plan `plan` (job `job`): the plan's retention applied to
/// the repositories the run backed up, in the plan's zone, audited as the scheduler's.
/// `None` when the plan keeps every snapshot.
pub fn after_plan_run(
    ctx: &Context,
    plan: &str,
    job: u64,
) -> Result<Option<ForgetReport>, EngineError> {
    let spec = ctx.state.plan(plan)?.spec;
    let Some((policy, grace)) = super::plans::retention_of(&spec)? else {
        return Ok(None);
    };
    let zone = super::plans::zone_of(&spec)?;
    let backed_up: BTreeSet<(String, String)> = ctx
        .state
        .job_results(job)?
        .into_iter()
        .map(|r| (r.connection, r.repository))
        .collect();
    let histories: Vec<RepoIdentity> = ctx
        .archive()?
        .histories()?
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| backed_up.contains(&(id.connection.clone(), id.full_name.clone())))
        .collect();
    let rules = Rules {
        policy: &policy,
        keep_deleted_for_secs: grace,
        zone: &zone,
        dry_run: false,
    };
    let mut report = forget_histories(ctx, &histories, &rules)?;
    if report.removed > 0 {
        // The space of what the plan's retention let go comes back at once; a prune
        // that fails leaves the forget done (the next prune catches up).
        let pruned = match prune_thinned(ctx, &histories, &report, &super::prune::NoPruneProgress) {
            Ok(p) => {
                let freed = format!("prune freed {} bytes", p.bytes_freed);
                report.prune = Some(p);
                freed
            }
            Err(e) => {
                let e = e.to_string();
                report.prune_error = Some(e.clone());
                format!("prune failed: {e}")
            }
        };
        let detail = format!(
            "after job {job}: {} snapshots removed, {} kept; {pruned}",
            report.removed, report.kept
        );
        super::audit::record(
            ctx,
            &Actor::Scheduler,
            "snapshots.forget",
            &format!("plan {plan}"),
            Some(&detail),
        );
    }
    Ok(Some(report))
}

/// The first plan (by name) that backs up `full_name` of `connection` and has a
/// retention: which of its snapshots that retention keeps, by which rule (a dry run).
pub fn plan_view(
    ctx: &Context,
    connection: &str,
    full_name: &str,
) -> Result<Option<RetentionView>, EngineError> {
    let mut plans = ctx.state.plans()?;
    plans.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    let Some((plan, policy, grace)) = plans.into_iter().find_map(|p| {
        let covers = p.spec.connections.iter().any(|c| c == connection)
            && super::plans::selects(&p.spec, full_name);
        let (policy, grace) = super::plans::retention_of(&p.spec).ok().flatten()?;
        covers.then_some((p, policy, grace))
    }) else {
        return Ok(None);
    };
    // The history a lookup by name uses, found through the state (no manifest read).
    let repo = match super::restore::find_repository(ctx, full_name, Some(connection)) {
        Ok(repo) => repo,
        Err(EngineError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let zone = super::plans::zone_of(&plan.spec)?;
    let rules = Rules {
        policy: &policy,
        keep_deleted_for_secs: grace,
        zone: &zone,
        dry_run: true,
    };
    let report = forget_histories(ctx, &[repo], &rules)?;
    Ok(report
        .repositories
        .into_iter()
        .next()
        .map(|repository| RetentionView {
            plan: plan.spec.name.clone(),
            policy: super::retention::describe(Some(&policy)),
            repository,
        }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_gone_repository_is_protected_until_its_grace_period_has_passed_however_long() {
        let since = datetime!(2026-01-01 00:00 UTC);
        let now = datetime!(2026-03-01 00:00 UTC);
        let day = 86_400;
        assert!(protection(since, None, now).is_some());
        assert!(protection(since, Some(365 * day), now).is_some());
        assert!(protection(since, Some(30 * day), now).is_none());
        // 300 billion years: more seconds than an i64 holds, still a grace period.
        let huge = crate::engine::retention::parse_duration("300000000000y").expect("duration");
        assert!(huge > i64::MAX as u64);
        assert!(protection(since, Some(huge), now).is_some());
        assert!(protection(since, Some(u64::MAX), now).is_some());
    }
}
