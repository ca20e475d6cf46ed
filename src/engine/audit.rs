//! The audit log as the engine keeps it: who ([`Actor`]) changed what, appended to
//! the state's append-only `audit_v1` table after each change succeeded
//! ([`record`], the one helper every mutating `LocalService` method goes through),
//! and read back newest first ([`AuditQuery`]). Entries never hold a secret: they
//! name things (connections, credential ids, plans, jobs), never credentials.

use super::{Context, EngineError};
pub use crate::state::{Actor, AuditEntry};
use serde::{Deserialize, Serialize};

/// The most entries one query answers.
pub const MAX_LIMIT: usize = 1000;

/// `GET /api/v1/audit?limit&before`: the newest `limit` entries (default 100, at
/// most [`MAX_LIMIT`]) numbered below `before`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub before: Option<u64>,
}

/// Appends an entry. The change it records has happened already, so a failure to
/// write it is logged loudly rather than reported as the change's failure.
pub fn record(ctx: &Context, actor: &Actor, action: &str, object: &str, detail: Option<&str>) {
    if let Err(e) = ctx.state.append_audit(actor, action, object, detail) {
        tracing::error!("audit log: cannot record {action} {object} by {actor}: {e}");
    }
}

/// The entries a query asks for, newest first.
pub fn entries(ctx: &Context, q: &AuditQuery) -> Result<Vec<AuditEntry>, EngineError> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(EngineError::Field {
            field: "limit".into(),
            message: format!("give 1 to {MAX_LIMIT} (got {limit})"),
        });
    }
    Ok(ctx.state.audit(limit, q.before)?)
}
