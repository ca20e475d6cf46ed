//! Backup plans as plain functions over the state: validation (every field is
//! checked and a bad one is named), create/replace/delete, and the repository
//! selection a plan makes (include/exclude globs, auto-add).

use super::backup::{Selected, Selector};
use super::{Context, EngineError};
use crate::providers::Repository;
use crate::scheduler::{Schedule, Window, Zone};
use crate::state::{JobKind, JobTarget, Plan, PlanSpec, PlanStatus};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;

fn field(field: &str, message: impl Into<String>) -> EngineError {
    EngineError::Field {
        field: field.to_string(),
        message: message.into(),
    }
}

/// `*` matches any run of characters (`/` included), `?` one character.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Whether a plan's include/exclude patterns select a repository full name.
pub fn selects(spec: &PlanSpec, full_name: &str) -> bool {
    spec.include.iter().any(|p| glob_match(p, full_name))
        && !spec.exclude.iter().any(|p| glob_match(p, full_name))
}

/// The parsed schedule of a plan, if it has one.
pub fn schedule_of(spec: &PlanSpec) -> Result<Option<Schedule>, EngineError> {
    spec.schedule
        .as_deref()
        .map(|s| {
            Schedule::parse(s, spec.timezone.as_deref())
                .map_err(|e| field("schedule", e.to_string()))
        })
        .transpose()
}

/// The parsed window of a plan, if it has one.
pub fn window_of(spec: &PlanSpec) -> Result<Option<Window>, EngineError> {
    spec.window
        .as_deref()
        .map(|w| Window::parse(w).map_err(|e| field("window", e.to_string())))
        .transpose()
}

/// The time zone a plan's schedule and window are read in.
pub fn zone_of(spec: &PlanSpec) -> Result<Zone, EngineError> {
    Zone::parse(spec.timezone.as_deref()).map_err(|e| field("timezone", e.to_string()))
}

/// Checks every field of a plan; the error names the first bad one.
pub fn validate(ctx: &Context, spec: &PlanSpec) -> Result<(), EngineError> {
    let name_ok = !spec.name.is_empty()
        && spec.name.len() <= 64
        && spec
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !spec.name.starts_with('.');
    if !name_ok {
        return Err(field(
            "name",
            format!(
                "{:?} must be 1-64 letters, digits, '-', '_' or '.'",
                spec.name
            ),
        ));
    }
    if spec.connections.is_empty() {
        return Err(field("connections", "name at least one connection"));
    }
    for c in &spec.connections {
        if ctx.state.connection(c).is_err() {
            return Err(field(
                "connections",
                format!("connection {c:?} does not exist (see GET /api/v1/connections)"),
            ));
        }
    }
    if spec.include.is_empty() {
        return Err(field(
            "include",
            "give at least one repository or pattern; [\"*\"] selects every repository",
        ));
    }
    for (f, list) in [("include", &spec.include), ("exclude", &spec.exclude)] {
        if let Some(bad) = list.iter().find(|p| p.trim().is_empty()) {
            return Err(field(f, format!("pattern {bad:?} is empty")));
        }
    }
    if let Some(tz) = &spec.timezone {
        if spec.schedule.is_none() && spec.window.is_none() {
            return Err(field(
                "timezone",
                format!("{tz:?} is set but the plan has no schedule or window"),
            ));
        }
    }
    zone_of(spec)?;
    schedule_of(spec)?;
    window_of(spec)?;
    for id in &spec.additional_credentials {
        if id == "*" {
            continue;
        }
        let mut found = false;
        for c in &spec.connections {
            found |= ctx.state.scoped_credentials(c)?.iter().any(
                |s| matches!(&s.scope, crate::state::CredentialScope::Additional { id: i } if i == id),
            );
        }
        if !found {
            return Err(field(
                "additional_credentials",
                format!("no connection of the plan has an additional credential {id:?}; use \"*\" for all, or ids from the connection's credential list"),
            ));
        }
    }
    if spec.concurrency == Some(0) || spec.concurrency.is_some_and(|c| c > 64) {
        return Err(field("concurrency", "must be between 1 and 64"));
    }
    metadata_cadence(spec)?;
    retention_of(spec)?;
    check_of(spec)?;
    if let Some(target) = &spec.copy_to {
        if !super::archive_copy::target_exists(&ctx.data_dir, target) {
            return Err(field(
                "copy_to",
                format!("no copy target named {target:?}: save one with `reposafe archive copy --to LOCATION --save-as {target}`"),
            ));
        }
    }
    Ok(())
}

/// The plan's retention: its policy and how long a gone repository's snapshots are
/// spared (seconds; none: forever). `None` when the plan keeps everything.
pub fn retention_of(
    spec: &PlanSpec,
) -> Result<Option<(super::retention::Policy, Option<u64>)>, EngineError> {
    let grace = spec
        .keep_deleted_for
        .as_deref()
        .map(|d| super::retention::parse_duration(d).map_err(|e| field("keep_deleted_for", e)))
        .transpose()?;
    match &spec.retention {
        None => Ok(None),
        Some(p) if p.is_empty() => Err(field(
            "retention",
            "has no rule: give keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, \
             keep_yearly or keep_within_secs, or leave retention out to keep every snapshot"
                .to_string(),
        )),
        Some(p) => Ok(Some((p.clone(), grace))),
    }
}

/// The plan's scheduled check: how often (seconds) and what it asks; `None` without
/// `check_every`. A subset outside (0, 100] or `check_subset` alone is refused by name.
pub fn check_of(
    spec: &PlanSpec,
) -> Result<Option<(u64, super::service::CheckRequest)>, EngineError> {
    let Some(every) = spec.check_every.as_deref() else {
        return match spec.check_subset {
            None => Ok(None),
            Some(_) => Err(field(
                "check_subset",
                "needs check_every (how often the plan checks the archive)".to_string(),
            )),
        };
    };
    let secs = super::retention::parse_duration(every).map_err(|e| field("check_every", e))?;
    let req = match spec.check_subset {
        None => super::service::CheckRequest::default(),
        Some(p @ 1..=100) => super::service::CheckRequest {
            read_data: true,
            subset_percent: (p < 100).then_some(f64::from(p)),
        },
        Some(p) => {
            return Err(field(
                "check_subset",
                format!(
                    "{p}% is not a share of the archive: give a whole percentage from 1 to 100"
                ),
            ))
        }
    };
    Ok(Some((secs, req)))
}

/// How often a plan reads metadata (`metadata_every`).
pub fn metadata_cadence(spec: &PlanSpec) -> Result<MetadataCadence, EngineError> {
    match spec.metadata_every.as_deref().map(str::trim) {
        None | Some("") => Ok(MetadataCadence::EveryRun),
        Some("never") => Ok(MetadataCadence::Never),
        Some(text) => parse_interval(text)
            .map(MetadataCadence::Every)
            .ok_or_else(|| {
                field(
                    "metadata_every",
                    format!(
                        "{text:?} is not an interval: give a number and a unit (m, h, d), e.g. 30m, 6h, 1d, or never"
                    ),
                )
            }),
    }
}

/// `30m`, `6h`, `1d`: at least a minute, at most a year.
fn parse_interval(text: &str) -> Option<std::time::Duration> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = number.parse().ok()?;
    let secs = match unit {
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    (60..=366 * 86_400)
        .contains(&secs)
        .then(|| std::time::Duration::from_secs(secs))
}

pub use super::backup::MetadataCadence;

/// Creates a plan.
pub fn create_plan(ctx: &Context, spec: PlanSpec) -> Result<Plan, EngineError> {
    validate(ctx, &spec)?;
    let now = OffsetDateTime::now_utc();
    let plan = Plan {
        spec,
        status: PlanStatus {
            created_at: now,
            updated_at: now,
            last_fire: None,
            members: None,
            last_job: None,
            last_success: None,
            last_check: None,
        },
    };
    ctx.state.add_plan(&plan)?;
    Ok(plan)
}

/// Replaces a plan's settings, keeping its history.
pub fn replace_plan(ctx: &Context, name: &str, spec: PlanSpec) -> Result<Plan, EngineError> {
    if spec.name != name {
        return Err(field(
            "name",
            format!(
                "{:?} differs from the plan being replaced ({name:?}); plans cannot be renamed",
                spec.name
            ),
        ));
    }
    validate(ctx, &spec)?;
    Ok(ctx.state.update_plan(name, |p| {
        p.spec = spec;
        p.status.updated_at = OffsetDateTime::now_utc();
        p.clone()
    })?)
}

/// What "run now" can name.
#[derive(Clone, Debug)]
pub enum RunTarget {
    Plan(String),
    Connection(String),
    /// A repository full name, optionally within one connection.
    Repository {
        repository: String,
        connection: Option<String>,
    },
}

/// The backup job of a plan: every one of its connections (its selection
/// applies when the job runs).
pub fn plan_job(spec: &PlanSpec) -> JobKind {
    JobKind::Backup {
        plan: Some(spec.name.clone()),
        targets: spec
            .connections
            .iter()
            .map(|c| JobTarget {
                connection: c.clone(),
                only: Vec::new(),
            })
            .collect(),
    }
}

/// The backup job that runs a plan, a connection or one repository now.
pub fn job_for(ctx: &Context, target: &RunTarget) -> Result<JobKind, EngineError> {
    Ok(match target {
        RunTarget::Plan(p) => plan_job(&ctx.state.plan(p)?.spec),
        RunTarget::Connection(c) => {
            ctx.state.connection(c)?;
            JobKind::Backup {
                plan: None,
                targets: vec![JobTarget {
                    connection: c.clone(),
                    only: Vec::new(),
                }],
            }
        }
        RunTarget::Repository {
            repository,
            connection,
        } => {
            let id = super::find_repository(ctx, repository, connection.as_deref())?;
            JobKind::Backup {
                plan: None,
                targets: vec![JobTarget {
                    connection: id.connection,
                    only: vec![id.full_name],
                }],
            }
        }
    })
}

/// A schedule in words (the dashboard's reading of a cron expression).
pub use crate::scheduler::describe as describe_schedule;

/// The selector a plan's job uses for one connection: include/exclude, and with
/// auto-add off, only the repositories adopted on the plan's first run.
/// Returns the selector and the list it adopted (to store after a first run).
pub fn selector(plan: &Plan, connection: &str) -> (Selector, Arc<Mutex<Vec<String>>>) {
    let spec = plan.spec.clone();
    let members: Option<HashSet<String>> = if spec.auto_add {
        None
    } else {
        plan.status
            .members
            .as_ref()
            .map(|m| m.iter().cloned().collect())
    };
    let adopted = Arc::new(Mutex::new(Vec::new()));
    let adopted2 = adopted.clone();
    let conn = connection.to_string();
    let f = move |r: &Repository| {
        if !selects(&spec, &r.full_name) {
            return Selected::No;
        }
        let key = format!("{conn}/{}", r.full_name);
        if let Some(m) = &members {
            if !m.contains(&key) {
                return Selected::Skip(format!(
                    "new repository; plan {} does not auto-add new repositories (enable auto_add or list it in include)",
                    spec.name
                ));
            }
        }
        if let Ok(mut a) = adopted2.lock() {
            a.push(key);
        }
        Selected::Yes
    };
    (Arc::new(f), adopted)
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("*", "acme/api"));
        assert!(glob_match("acme/*", "acme/api"));
        assert!(glob_match("acme/api-?", "acme/api-1"));
        assert!(!glob_match("acme/api-?", "acme/api-10"));
        assert!(glob_match("*/api*", "acme/api-10"));
        assert!(!glob_match("acme/api", "acme/api2"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
    }
}
