//! The jobs pages: `/jobs` (recent jobs, each with its live progress bar) and
//! `/jobs/{id}` (one job: progress, times, per-repository results with their
//! reasons, per-credential counters, and Cancel while it runs).
//!
//! Live progress needs no reload: an element with `data-live-job` follows its job
//! over Server-Sent Events (`/api/v1/jobs/{id}/events`, `static/app.js`), updating its
//! progress bar, state and counts; when the job ends (`data-refresh-on-end`) the
//! page's `data-live` parts (the results table, the times, Cancel) are read again
//! and swapped in place.

use super::layout::{page, post_button};
use super::{seg, Answer, Ctx, Outcome, PageError, Route};
use crate::engine::types::{Job, JobProgress, JobRecordResult};
use crate::engine::{EngineError, Service};
use crate::fmt::{fmt_time, human_bytes};
use hyper::Method;
use maud::{html, Markup};

/// The jobs pages' routes.
pub fn routes() -> Vec<Route> {
    vec![
        Route {
            method: Method::GET,
            pattern: "/jobs",
            handler: list,
        },
        Route {
            method: Method::GET,
            pattern: "/jobs/{id}",
            handler: detail,
        },
        Route {
            method: Method::POST,
            pattern: "/jobs/{id}/cancel",
            handler: cancel,
        },
    ]
}

/// How many jobs the list shows.
const LIST_LIMIT: usize = 100;

/// The job id in the path.
fn job_id(ctx: &Ctx) -> Result<u64, PageError> {
    let raw = ctx.params.get("id").map(String::as_str).unwrap_or("");
    raw.parse().map_err(|_| {
        PageError::from(EngineError::NotFound(format!(
            "no job {raw:?}: job ids are numbers (see /jobs)"
        )))
    })
}

/// `GET /jobs`: the recent jobs, newest first.
fn list(ctx: &Ctx) -> Outcome {
    let jobs = ctx.service.jobs(LIST_LIMIT)?;
    let body = html! {
        @if jobs.is_empty() {
            p.empty { "No jobs yet. Run a plan (Plans → Run now) or wait for its schedule." }
        } @else {
            table #jobs {
                thead { tr {
                    th { "Job" } th { "What" } th { "Trigger" } th { "State" } th { "Progress" }
                    th { "Fetched" } th { "Stored" } th { "Started" } th { "Finished" }
                } }
                tbody { @for j in &jobs { (job_row(j)) } }
            }
        }
    };
    Ok(Answer::Html(page(ctx, "Jobs", "jobs", body)))
}

/// One row of the jobs table; a running job's row follows it live.
fn job_row(j: &Job) -> Markup {
    let p = &j.progress;
    html! {
        tr id=(format!("job-{}", j.id)) data-job=(j.id) data-live data-live-job=(j.id)
            data-state=(j.state_name()) data-refresh-on-end {
            td { a href=(format!("/jobs/{}", j.id)) { (j.id) } }
            td { (j.kind.describe()) }
            td { (trigger_name(j)) }
            td { span.job-state data-field="state" class=(j.state_name()) { (j.state_name()) } }
            td {
                (progress_bar(p, "job-progress", None))
                " " span data-field="counts" { (counts(p)) }
                br; small.muted data-field="notice" { @if let (false, Some(n)) = (j.is_finished(), &p.notice) { (n) } }
            }
            td data-field="fetched" { (human_bytes(p.bytes_fetched)) }
            td data-field="stored" { (human_bytes(p.bytes_stored)) }
            td { (j.started_at.map(fmt_time).unwrap_or_else(|| "-".into())) }
            td { (j.finished_at.map(fmt_time).unwrap_or_else(|| "-".into())) }
        }
    }
}

fn trigger_name(j: &Job) -> String {
    serde_json::to_value(j.trigger)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// `<progress>`: repositories done of all (an unknown total shows as 0 of 1).
fn progress_bar(p: &JobProgress, class: &str, id: Option<&str>) -> Markup {
    html! {
        progress class=(class) id=[id] max=(p.repos_total.max(1)) value=(p.repos_done.min(p.repos_total.max(1))) {
            (p.repos_done) "/" (p.repos_total)
        }
    }
}

/// `3/6 (1 failed)`: the counts as the live script (`app.js`, `showJob`) writes them.
fn counts(p: &JobProgress) -> String {
    format!("{}/{} ({} failed)", p.repos_done, p.repos_total, p.failed)
}

/// `GET /jobs/{id}`: one job.
fn detail(ctx: &Ctx) -> Outcome {
    let id = job_id(ctx)?;
    let job = ctx.service.job(id)?;
    let results = ctx.service.job_results(id)?;
    let p = &job.progress;
    let body = html! {
        section #job-live data-live-job=(job.id) data-state=(job.state_name()) data-refresh-on-end {
            p {
                (progress_bar(p, "job-progress", Some("job-progress")))
                " " span #job-state data-field="state" class=(job.state_name()) { (job.state_name()) }
                " " span #job-counts data-field="counts" { (counts(p)) }
            }
            p #job-notice .muted data-field="notice" { @if let (false, Some(n)) = (job.is_finished(), &p.notice) { (n) } }
        }
        (summary(&job))
        div #job-actions data-live {
            @if !job.is_finished() {
                (post_button(ctx, &format!("/jobs/{}/cancel", job.id), "Cancel", "cancel",
                    Some(&format!("Cancel job {}? Repositories in flight finish; the rest are left for later.", job.id))))
            }
        }
        h2 { "Repositories" }
        (results_table(&results))
        (credentials_table(p))
    };
    let title = format!("Job {}: {}", job.id, job.kind.describe());
    Ok(Answer::Html(page(ctx, &title, "jobs", body)))
}

/// The job's times, counters and error (re-read live).
fn summary(job: &Job) -> Markup {
    let p = &job.progress;
    let time = |t: Option<time::OffsetDateTime>| t.map(fmt_time).unwrap_or_else(|| "-".into());
    html! {
        dl #job-summary data-live {
            dt { "Trigger" } dd { (trigger_name(job)) }
            dt { "Queued" } dd { (fmt_time(job.created_at)) }
            @if let Some(nb) = job.not_before { dt { "Not before" } dd { (fmt_time(nb)) } }
            dt { "Started" } dd { (time(job.started_at)) }
            dt { "Finished" } dd { (time(job.finished_at)) }
            dt { "Snapshots" } dd { (p.snapshots) " new, " (p.unchanged) " unchanged, "
                (p.partial) " partial, " (p.skipped) " skipped, " (p.deferred) " deferred, " (p.failed) " failed" }
            dt { "Fetched" } dd { (human_bytes(p.bytes_fetched)) }
            dt { "Stored" } dd { (human_bytes(p.bytes_stored)) }
            @if !p.current.is_empty() { dt { "In flight" } dd { (p.current.join(", ")) } }
            @if let Some(e) = &job.error { dt { "Error" } dd.error #job-error { (e) } }
            @if !job.deferred.is_empty() {
                dt { "Deferred" } dd { @for t in &job.deferred { (t.connection) ": " (t.only.join(", ")) br; } }
            }
        }
    }
}

/// Each repository's result: status, snapshot, sizes, time, tries and reason.
fn results_table(results: &[JobRecordResult]) -> Markup {
    html! {
        table #results data-live {
            thead { tr {
                th { "Connection" } th { "Repository" } th { "Result" } th { "Snapshot" }
                th { "New" } th { "Fetched" } th { "Seconds" } th { "Tries" } th { "Reason" }
            } }
            tbody {
                @for r in results {
                    tr data-repo=(format!("{}/{}", r.connection, r.repository)) {
                        td { (r.connection) }
                        td { a href=(repo_href(&r.connection, &r.repository)) { (r.repository) } }
                        td { span.(r.status.as_str()) { (r.status.as_str()) } }
                        td { @if let Some(s) = &r.snapshot { code { (s) } } }
                        td { (human_bytes(r.new_bytes)) }
                        td { (human_bytes(r.fetched_bytes)) }
                        td { (format!("{:.1}", r.seconds)) }
                        td { (r.attempts) }
                        td.reason { @if let Some(why) = &r.reason { (why) } }
                    }
                }
            }
        }
    }
}

/// The repository page of `connection`'s `scope/slug`.
pub fn repo_href(connection: &str, full_name: &str) -> String {
    let path: Vec<String> = full_name.split('/').map(seg).collect();
    format!("/repositories/{}/{}", seg(connection), path.join("/"))
}

/// What each credential did in the job (requests, 429s, cool-downs, failure).
fn credentials_table(p: &JobProgress) -> Markup {
    html! {
        div #job-credentials-part data-live {
            @if !p.credentials.is_empty() {
                h2 { "Credentials" }
                table #job-credentials {
                    thead { tr {
                        th { "Connection" } th { "Credential" } th { "Principal" } th { "Requests" }
                        th { "Rate limited" } th { "Cool-downs" } th { "Failed" }
                    } }
                    tbody {
                        @for c in &p.credentials {
                            tr {
                                td { (c.connection) } td { (c.credential) } td { (c.principal) }
                                td { (c.requests) } td { (c.rate_limited) } td { (c.cooldowns) }
                                td.failed { @if let Some(f) = &c.failed { (f) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `POST /jobs/{id}/cancel`: asks the job to stop; back to its page.
fn cancel(ctx: &Ctx) -> Outcome {
    let id = job_id(ctx)?;
    let back = format!("/jobs/{id}");
    match ctx.service.cancel(id) {
        Ok(_) => Ok(Answer::Redirect(format!("{back}?ok=cancel+requested"))),
        Err(e) => super::redirect_error(&back, e),
    }
}
