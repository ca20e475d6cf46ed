//! The overview page (`/`): plans' last success or failure and next runs, failing
//! repositories, archive size and deduplication, warnings, recent jobs.

use super::layout::{page, when};
use super::{seg, Answer, Ctx, Outcome, Route};
use crate::engine::Service;
use crate::fmt::human_bytes;
use hyper::Method;
use maud::html;

pub fn routes() -> Vec<Route> {
    vec![Route {
        method: Method::GET,
        pattern: "/",
        handler: overview,
    }]
}

fn overview(ctx: &Ctx) -> Outcome {
    let o = ctx.service.overview()?;
    let recent = ctx.service.jobs(10)?;
    let ratio = o.dedup_ratio();
    let body = html! {
        @if !o.warnings.is_empty() {
            section #warnings {
                h2 { "Warnings" }
                ul { @for w in &o.warnings { li.warning { (w) } } }
            }
        }
        div.cards {
            div.card #archive-size { "Archive" b { (human_bytes(o.archive_bytes)) } span.muted { (o.snapshots) " snapshots" }
                span.muted #archive-encryption { @if o.archive_encrypted { "encrypted (age)" } @else if o.archive_available { "not encrypted" } @else { "encryption not known" } }
                span.muted #archive-location { code { (o.archive_location) } @if let Some(e) = &o.archive_endpoint { " at " code { (e) } } }
                @if !o.archive_available { span.failed #archive-unavailable { "cannot be used now: see the warnings" } } }
            div.card #dedup { "Deduplication" b { @if let Some(r) = ratio { (format!("{r:.1}×")) } @else { "-" } }
                span.muted { (human_bytes(o.logical_bytes)) " of packs kept as " (human_bytes(o.archive_bytes)) } }
            div.card { "Connections" b { (o.connections) } a href="/connections" { "manage" } }
            div.card { "Repositories" b { (o.repositories) } a href="/repositories" { "browse" } }
        }
        h2 { "Plans" }
        @if o.plans.is_empty() {
            p.muted { "No plan yet. " a href="/plans/new" { "Create one" } " to back up on a schedule." }
        } @else {
            table #plans-overview {
                tr { th { "Plan" } th { "Last success" } th { "Last failure" } th { "Next runs" } }
                @for p in &o.plans {
                    tr data-plan=(p.name) {
                        td { a href={ "/plans/" (seg(&p.name)) } { (p.name) } @if !p.enabled { " " span.muted { "(disabled)" } } }
                        td.succeeded { (when(p.last_success)) }
                        td.failed { @if let Some(f) = &p.last_failure { (when(Some(f.at))) " " (f.state) " " a href={ "/jobs/" (f.job) } { "job " (f.job) } } @else { "-" } }
                        td { @if p.next_runs.is_empty() { "on demand" } @else { (p.next_runs.iter().take(2).map(|t| crate::fmt::fmt_time_in_offset(*t)).collect::<Vec<_>>().join(", ")) } }
                    }
                }
            }
        }
        h2 { "Failing repositories" }
        @if o.failing.is_empty() { p.muted #failing-none { "None: every repository's latest backup succeeded." } }
        @else {
            table #failing {
                tr { th { "Repository" } th { "Reason" } th { "Job" } }
                @for f in &o.failing {
                    tr { td { (f.connection) "/" (f.repository) } td.failed { (f.reason) } td { a href={ "/jobs/" (f.job) } { (f.job) } } }
                }
            }
        }
        h2 { "Recent jobs" }
        table #recent-jobs {
            tr { th { "Job" } th { "What" } th { "State" } th { "Progress" } th { "Started" } }
            @for j in &recent {
                tr data-live-job=(j.id) data-state=(j.state_name()) {
                    td { a href={ "/jobs/" (j.id) } { (j.id) } }
                    td { (j.kind.describe()) }
                    td { span data-field="state" class=(j.state_name()) { (j.state_name()) } }
                    td { progress max=(j.progress.repos_total.max(1)) value=(j.progress.repos_done) {} " " span data-field="counts" { (j.progress.repos_done) "/" (j.progress.repos_total) } }
                    td { (when(j.started_at)) }
                }
            }
        }
        p.muted { "Data dir " code { (o.data_dir) } " · reposafe " (o.version) }
    };
    Ok(Answer::Html(page(ctx, "Overview", "overview", body)))
}
