//! What a plan would do, before it is saved: its schedule in words and its next
//! runs in the plan's time zone, its window, and which repositories its
//! include/exclude patterns select now (each connection listed live, through its
//! primary credential).

use super::connections::{session_for, tls_for};
use super::overview::next_runs;
use super::plans::{schedule_of, selects, window_of, zone_of};
use super::{Context, EngineError};
use crate::state::PlanSpec;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// How many next runs a preview lists.
pub const NEXT_RUNS: usize = 5;

/// A plan's schedule and selection, previewed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PlanPreview {
    /// The schedule in words (none: runs on demand only).
    pub reading: Option<String>,
    /// The zone the schedule and window are read in.
    pub timezone: String,
    /// The next 5 runs, each with the offset of the plan's zone (RFC 3339).
    #[serde(default, with = "crate::fmt::rfc3339_list")]
    pub next_runs: Vec<OffsetDateTime>,
    /// Per connection: the repositories the patterns select now.
    pub connections: Vec<ConnectionMatch>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ConnectionMatch {
    pub connection: String,
    /// Full names selected (sorted).
    pub matching: Vec<String>,
    /// How many listed repositories the patterns leave out.
    pub left_out: usize,
    /// Why the connection could not be listed.
    #[serde(default)]
    pub error: Option<String>,
}

/// Previews `spec` at `now`: the schedule, window and zone must be valid (the error
/// names the field); a connection that cannot be listed is reported, not fatal.
pub fn preview(
    ctx: &Context,
    spec: &PlanSpec,
    now: OffsetDateTime,
) -> Result<PlanPreview, EngineError> {
    let zone = zone_of(spec)?;
    let schedule = schedule_of(spec)?;
    window_of(spec)?;
    Ok(PlanPreview {
        reading: schedule
            .as_ref()
            .and_then(|s| crate::scheduler::describe(s.expression())),
        timezone: zone.name().to_string(),
        next_runs: next_runs(spec, now, NEXT_RUNS)?,
        connections: spec
            .connections
            .iter()
            .map(|c| match matching(ctx, c, spec) {
                Ok(m) => m,
                Err(e) => ConnectionMatch {
                    connection: c.clone(),
                    error: Some(e.to_string()),
                    ..ConnectionMatch::default()
                },
            })
            .collect(),
    })
}

fn matching(ctx: &Context, name: &str, spec: &PlanSpec) -> Result<ConnectionMatch, EngineError> {
    let conn = ctx.state.connection(name)?;
    let cred = ctx.vault.unseal(&ctx.state.sealed_credential(name)?)?;
    let tls = tls_for(ctx, name)?;
    let session = session_for(ctx, &conn, cred, &tls)?;
    let mut out = ConnectionMatch {
        connection: name.to_string(),
        ..ConnectionMatch::default()
    };
    for scope in session.list_scopes()? {
        for repo in session.list_repositories(&scope.key)? {
            if selects(spec, &repo.full_name) {
                out.matching.push(repo.full_name);
            } else {
                out.left_out += 1;
            }
        }
    }
    out.matching.sort();
    Ok(out)
}
