//! The audit log page (`/audit`): the newest entries of the append-only audit log
//! (when, who, what, on what), a hundred a page, older pages by `?before=SEQ`.

use super::layout::{page, when};
use super::{Answer, Ctx, Outcome, PageError, Route};
use crate::engine::service::AuditQuery;
use crate::engine::Service;
use hyper::Method;
use maud::html;

/// Entries a page shows.
const PAGE: usize = 100;

pub fn routes() -> Vec<Route> {
    vec![Route {
        method: Method::GET,
        pattern: "/audit",
        handler: audit_page,
    }]
}

fn audit_page(ctx: &Ctx) -> Outcome {
    let before = match ctx.query("before") {
        Some(b) => Some(b.parse::<u64>().map_err(|_| PageError::Field {
            field: "before".into(),
            message: format!("{b:?} is not an entry number"),
        })?),
        None => None,
    };
    let entries = ctx.service.audit(AuditQuery {
        limit: Some(PAGE),
        before,
    })?;
    let older = entries
        .last()
        .filter(|e| e.seq > 1 && entries.len() == PAGE)
        .map(|e| format!("/audit?before={}", e.seq));
    let body = html! {
        p.muted { "Every change made through the dashboard, the API, the command line or a push webhook, newest first. The log is append-only: nothing edits or deletes an entry." }
        @if entries.is_empty() {
            p #audit-empty { "Nothing recorded yet." }
        }
        table #audit {
            thead { tr { th { "#" } th { "time" } th { "actor" } th { "action" } th { "object" } th { "detail" } } }
            tbody {
                @for e in &entries {
                    tr data-seq=(e.seq) {
                        td { (e.seq) }
                        td { (when(Some(e.time))) }
                        td.actor { (e.actor.to_string()) }
                        td.action { (e.action) }
                        td.object { (e.object) }
                        td.detail { (e.detail.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
        @if let Some(href) = older {
            p { a #older href=(href) { "Older entries" } }
        }
    };
    Ok(Answer::Html(page(ctx, "Audit log", "audit", body)))
}
