//! The audit log (`audit_v1`): every change an admin (or a webhook) made, in order.
//! Key: a sequence number (u64, growing from 1); value: the JSON [`AuditEntry`].
//! Append-only: this module has no update and no delete, and neither has any other
//! (removing a connection or a plan leaves its entries). Created by `State::migrate`.

use super::{State, StateError};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::fmt;
use time::OffsetDateTime;

pub(super) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_v1");

/// Who made a change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "kebab-case")]
pub enum Actor {
    /// The command line in this process (no daemon).
    Cli,
    /// An API client with the admin token (the CLI through the daemon, scripts).
    Token,
    /// A dashboard session, by a short tag of its id (never the id itself).
    Session(String),
    /// A push webhook of this connection.
    Webhook(String),
    /// The daemon's scheduler.
    Scheduler,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Cli => f.write_str("cli"),
            Actor::Token => f.write_str("token"),
            Actor::Session(tag) => write!(f, "session {tag}"),
            Actor::Webhook(connection) => write!(f, "webhook {connection}"),
            Actor::Scheduler => f.write_str("scheduler"),
        }
    }
}

/// One recorded change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub actor: Actor,
    /// What was done, e.g. `connection.add`, `plan.update`, `webhook.refused`.
    pub action: String,
    /// What it was done to, e.g. a connection name, `acme/cred-1`, `job 12`.
    pub object: String,
    /// More about it (never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl State {
    /// Appends an entry (numbered after the last one) and returns it.
    pub fn append_audit(
        &self,
        actor: &Actor,
        action: &str,
        object: &str,
        detail: Option<&str>,
    ) -> Result<AuditEntry, StateError> {
        let e = self.db_err();
        let tx = self.db.begin_write().map_err(|x| e(x.into()))?;
        let entry = {
            let mut t = tx.open_table(AUDIT).map_err(|x| e(x.into()))?;
            let last = t.last().map_err(|x| e(x.into()))?.map(|(k, _)| k.value());
            let entry = AuditEntry {
                seq: last.unwrap_or(0) + 1,
                time: OffsetDateTime::now_utc(),
                actor: actor.clone(),
                action: action.to_string(),
                object: object.to_string(),
                detail: detail.map(str::to_string),
            };
            let json = self.encode(&entry)?;
            t.insert(entry.seq, json.as_slice())
                .map_err(|x| e(x.into()))?;
            entry
        };
        tx.commit().map_err(|x| e(x.into()))?;
        Ok(entry)
    }

    /// The newest `limit` entries numbered below `before` (all when `None`), newest
    /// first.
    pub fn audit(&self, limit: usize, before: Option<u64>) -> Result<Vec<AuditEntry>, StateError> {
        let e = self.db_err();
        let tx = self.db.begin_read().map_err(|x| e(x.into()))?;
        let t = tx.open_table(AUDIT).map_err(|x| e(x.into()))?;
        let range = t
            .range(..before.unwrap_or(u64::MAX))
            .map_err(|x| e(x.into()))?;
        let mut out = Vec::new();
        for item in range.rev().take(limit) {
            let (k, v) = item.map_err(|x| e(x.into()))?;
            out.push(Self::decode("audit", &k.value().to_string(), v.value())?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_numbered_in_order_and_paged_newest_first() {
        let dir = tempfile::tempdir().expect("tmp");
        let state = State::open(dir.path()).expect("open");
        for i in 0..5 {
            let object = format!("plan-{i}");
            state
                .append_audit(&Actor::Token, "plan.add", &object, None)
                .expect("append");
        }
        state
            .append_audit(
                &Actor::Session("ab12cd34".into()),
                "plan.remove",
                "plan-0",
                Some("x"),
            )
            .expect("append");
        let all = state.audit(100, None).expect("read");
        let seqs: Vec<u64> = all.iter().map(|a| a.seq).collect();
        assert_eq!(seqs, [6, 5, 4, 3, 2, 1]);
        assert_eq!(all[0].actor.to_string(), "session ab12cd34");
        let page = state.audit(2, Some(4)).expect("page");
        let seqs: Vec<u64> = page.iter().map(|a| a.seq).collect();
        assert_eq!(seqs, [3, 2]);
        drop(state);
        // Numbering goes on after a reopen.
        let state = State::open(dir.path()).expect("reopen");
        let next = state
            .append_audit(&Actor::Cli, "connection.remove", "acme", None)
            .expect("append");
        assert_eq!(next.seq, 7);
    }
}
