//! The repositories pages: `/repositories` (every repository backed up, `?q=` filters
//! by connection or name) and `/repositories/{connection}/{workspace}/{slug}` (its
//! snapshots: time, size, new bytes, parts; restore to a directory and, where a
//! connection allows restores, into Bitbucket).
//!
//! A restore is two steps: the form (a GET, nothing changes) leads to a confirmation
//! page naming the target (`#confirm-target`); its button POSTs the same request, which
//! queues the restore job and goes to the job's page.

use super::layout::{csrf_field, page};
use super::{Answer, Ctx, Outcome, PageError, Route};
use crate::engine::overview::FailingRepository;
use crate::engine::service::{
    ForgetSnapshot, RestoreRequest, RetentionQuery, RetentionView, SnapshotsRequest,
};
use crate::engine::types::Snapshot;
use crate::engine::types::{RepoRecord, RestoreTarget};
use crate::engine::{EngineError, Service};
use crate::fmt::{fmt_time, human_bytes};
use hyper::Method;
use maud::{html, Markup};
use std::collections::{BTreeMap, HashMap};

/// The repositories pages' routes.
pub fn routes() -> Vec<Route> {
    vec![
        route(Method::GET, "/repositories", list),
        route(
            Method::GET,
            "/repositories/{connection}/{workspace}/{slug}",
            repository,
        ),
        route(
            Method::GET,
            "/repositories/{connection}/{workspace}/{slug}/restore",
            confirm_disk,
        ),
        route(
            Method::POST,
            "/repositories/{connection}/{workspace}/{slug}/restore",
            restore_disk,
        ),
        route(
            Method::GET,
            "/repositories/{connection}/{workspace}/{slug}/restore-into",
            confirm_into,
        ),
        route(
            Method::POST,
            "/repositories/{connection}/{workspace}/{slug}/restore-into",
            restore_into,
        ),
    ]
}

fn route(method: Method, pattern: &'static str, handler: fn(&Ctx) -> Outcome) -> Route {
    Route {
        method,
        pattern,
        handler,
    }
}

/// The repository a page is about: its connection and `workspace/slug`.
struct RepoPath {
    connection: String,
    full_name: String,
}

impl RepoPath {
    fn of(ctx: &Ctx) -> RepoPath {
        let p = |k: &str| ctx.params.get(k).cloned().unwrap_or_default();
        RepoPath {
            connection: p("connection"),
            full_name: format!("{}/{}", p("workspace"), p("slug")),
        }
    }

    fn href(&self) -> String {
        super::jobs::repo_href(&self.connection, &self.full_name)
    }
}

/// `GET /repositories[?q=]`: every repository, filtered by a case-insensitive part of
/// its connection or name.
fn list(ctx: &Ctx) -> Outcome {
    let q = ctx.query.get("q").map(|s| s.trim()).unwrap_or("");
    let mut repos = ctx.service.repositories(None)?;
    let needle = q.to_lowercase();
    repos.retain(|r| {
        needle.is_empty()
            || r.full_name.to_lowercase().contains(&needle)
            || r.connection.to_lowercase().contains(&needle)
    });
    repos.sort_by(|a, b| (&a.connection, &a.full_name).cmp(&(&b.connection, &b.full_name)));
    let failing: BTreeMap<(String, String), FailingRepository> = ctx
        .service
        .overview()?
        .failing
        .into_iter()
        .map(|f| ((f.connection.clone(), f.repository.clone()), f))
        .collect();
    let body = html! {
        form #repo-search method="get" action="/repositories" {
            input type="search" name="q" value=(q) placeholder="connection or workspace/slug";
            " " button #search { "Search" }
        }
        @if repos.is_empty() {
            p.empty { @if q.is_empty() { "No repositories yet: they appear after a connection's first backup." }
                @else { "No repository matches " code { (q) } "." } }
        } @else {
            table #repositories {
                thead { tr {
                    th { "Repository" } th { "Connection" } th { "Visibility" } th { "Size" }
                    th { "Last seen" } th { "Last snapshot" } th { "Status" }
                } }
                tbody { @for r in &repos {
                    (repo_row(r, failing.get(&(r.connection.clone(), r.full_name.clone()))))
                } }
            }
        }
    };
    Ok(Answer::Html(page(
        ctx,
        "Repositories",
        "repositories",
        body,
    )))
}

fn repo_row(r: &RepoRecord, failing: Option<&FailingRepository>) -> Markup {
    html! {
        tr data-repo=(format!("{}/{}", r.connection, r.full_name)) {
            td { a href=(super::jobs::repo_href(&r.connection, &r.full_name)) { (r.full_name) } }
            td { (r.connection) }
            td { @if r.is_private { "private" } @else { "public" } }
            td { (r.size.map(human_bytes).unwrap_or_else(|| "-".into())) }
            td { (fmt_time(r.last_seen)) }
            td { @match &r.last_snapshot {
                Some(id) => code { (snapshot_time(id)) },
                None => span.muted { "none yet" },
            } }
            td.status { @match failing {
                Some(f) => span.failed { "failing: " (f.reason) " (" a href={ "/jobs/" (f.job) } { "job " (f.job) } ")" },
                None => @if r.last_snapshot.is_some() { span.ok { "ok" } } @else { span.muted { "-" } },
            } }
        }
    }
}

/// A snapshot id's time (`20261130T221500Z-…` → `2026-11-30 22:15:00`), else the id.
fn snapshot_time(id: &str) -> String {
    let b = id.as_bytes();
    if id.len() >= 16 && id.is_ascii() && b[8] == b'T' && b[15] == b'Z' {
        format!(
            "{}-{}-{} {}:{}:{}",
            &id[0..4],
            &id[4..6],
            &id[6..8],
            &id[9..11],
            &id[11..13],
            &id[13..15]
        )
    } else {
        id.to_string()
    }
}

/// The snapshots of the repository in the path, newest first.
fn snapshots_of(ctx: &Ctx, repo: &RepoPath) -> Result<Vec<Snapshot>, PageError> {
    let list = ctx.service.snapshots(SnapshotsRequest {
        repository: repo.full_name.clone(),
        connection: Some(repo.connection.clone()),
        at: None,
    })?;
    let mut snaps = list.snapshots;
    snaps.sort_by_key(|s| std::cmp::Reverse(s.taken_at));
    Ok(snaps)
}

/// The connections a restore may write into (`allow_restore`).
fn restore_targets(ctx: &Ctx) -> Result<Vec<String>, PageError> {
    Ok(ctx
        .service
        .connections()?
        .into_iter()
        .filter(|c| c.connection.allow_restore)
        .map(|c| c.connection.name)
        .collect())
}

/// `GET /repositories/{connection}/{workspace}/{slug}`: its snapshots and restore forms.
fn repository(ctx: &Ctx) -> Outcome {
    let repo = RepoPath::of(ctx);
    let snaps = snapshots_of(ctx, &repo)?;
    let targets = restore_targets(ctx)?;
    let retention = ctx.service.retention_view(RetentionQuery {
        connection: repo.connection.clone(),
        repository: repo.full_name.clone(),
    });
    let verdicts: HashMap<String, String> = match &retention {
        Ok(Some(v)) => v
            .repository
            .snapshots
            .iter()
            .map(|s| (s.id.clone(), verdict(s)))
            .collect(),
        _ => HashMap::new(),
    };
    let body = html! {
        p.muted { "Connection " a href={ "/connections/" (super::seg(&repo.connection)) } { (repo.connection) } }
        h2 { "Snapshots" }
        @if snaps.is_empty() {
            p.empty { "No snapshot yet." }
        } @else {
            p.muted #retention { (retention_line(&retention)) }
            table #snapshots {
                thead { tr {
                    th { "Taken" } th { "Snapshot" } th { "Size" } th { "New bytes" } th { "Fetched" }
                    th { "Parts" } th { "Main branch" } th { "Missing" } th { "Retention" }
                } }
                tbody { @for s in &snaps { (snapshot_row(s, verdicts.get(s.id.as_str()))) } }
            }
            h2 { "Restore to a directory" }
            (disk_form(&repo, &snaps))
            @if !targets.is_empty() {
                h2 { "Restore into Bitbucket" }
                (into_form(&repo, &snaps, &targets))
            }
        }
    };
    Ok(Answer::Html(page(
        ctx,
        &repo.full_name,
        "repositories",
        body,
    )))
}

/// Which plan's retention applies, in words.
fn retention_line(view: &Result<Option<RetentionView>, EngineError>) -> Markup {
    html! {
        @match view {
            Ok(Some(v)) => { "Retention of plan " a href={ "/plans/" (super::seg(&v.plan)) } { (v.plan) } ": " (v.policy)
                @if let Some(why) = &v.repository.protected { " — " (why) } }
            Ok(None) => { "No plan with a retention backs this repository up: every snapshot is kept." }
            Err(e) => { "Retention unknown: " (e) }
        }
    }
}

/// A snapshot's fate under the plan's retention.
fn verdict(s: &ForgetSnapshot) -> String {
    if s.keep {
        format!("kept: {}", s.reasons.join(", "))
    } else {
        "goes after the plan's next successful run".to_string()
    }
}

fn snapshot_row(s: &Snapshot, retention: Option<&String>) -> Markup {
    let missing = s.missing();
    html! {
        tr data-snapshot=(s.id.as_str()) {
            td { (fmt_time(s.taken_at)) }
            td { code { (s.id.as_str()) } }
            td { (human_bytes(s.stats.pack_bytes)) }
            td { (human_bytes(s.stats.new_bytes)) }
            td { (human_bytes(s.stats.fetched_bytes)) }
            td.parts { (s.part_names().join(", ")) }
            td { (s.main_branch.as_deref().unwrap_or("-")) }
            td { @for m in &missing { span.failed { (m) } br; } }
            td.retention { (retention.map_or("-", String::as_str)) }
        }
    }
}

/// A `<select name=snapshot>` of the snapshots, newest first (selected).
fn snapshot_select(snaps: &[Snapshot]) -> Markup {
    html! {
        select name="snapshot" {
            @for s in snaps {
                option value=(s.id.as_str()) { (fmt_time(s.taken_at)) " — " (s.id.as_str()) }
            }
        }
    }
}

fn disk_form(repo: &RepoPath, snaps: &[Snapshot]) -> Markup {
    html! {
        form #restore-disk method="get" action=(format!("{}/restore", repo.href())) {
            p { label { "Snapshot " (snapshot_select(snaps)) } }
            p { label { "Directory on the appliance (absolute path; a bare repository is written there) "
                input type="text" name="to" size="50" required placeholder="/srv/restore/repo.git"; } }
            p { label { input type="checkbox" name="force"; " Replace the directory if it is not empty" } }
            button #restore-disk-submit { "Restore…" }
        }
    }
}

fn into_form(repo: &RepoPath, snaps: &[Snapshot], targets: &[String]) -> Markup {
    html! {
        form #restore-into method="get" action=(format!("{}/restore-into", repo.href())) {
            p { label { "Snapshot " (snapshot_select(snaps)) } }
            p { label { "Into connection " select name="target" {
                @for t in targets { option value=(t) { (t) } }
            } } }
            p { label { "As (workspace/slug; empty: " code { (repo.full_name) } " in the target's scope) "
                input type="text" name="as" placeholder=(repo.full_name); } }
            p { label { "Project key for a new repository (Cloud) " input type="text" name="project"; } }
            p { label { input type="checkbox" name="into_existing";
                " Write into an existing repository (refs there are never overwritten)" } }
            button #restore-into-submit { "Restore…" }
        }
    }
}

/// A checkbox's value as a form or query sends it (`on`).
fn is_on(v: Option<&String>) -> bool {
    matches!(v.map(String::as_str), Some("on" | "true" | "1" | "yes"))
}

/// The restore-to-directory request of a query (`GET …/restore`).
fn disk_request(
    repo: &RepoPath,
    q: &BTreeMap<String, String>,
) -> Result<RestoreRequest, EngineError> {
    let to = q.get("to").map(|s| s.trim()).unwrap_or("");
    if to.is_empty() || !to.starts_with('/') {
        return Err(EngineError::Field {
            field: "to".into(),
            message:
                "give the absolute path of a directory on the appliance, e.g. /srv/restore/repo.git"
                    .into(),
        });
    }
    Ok(RestoreRequest {
        repository: repo.full_name.clone(),
        connection: Some(repo.connection.clone()),
        snapshot: q.get("snapshot").filter(|s| !s.is_empty()).cloned(),
        at: None,
        to: to.to_string(),
        force: is_on(q.get("force")),
        target: None,
    })
}

/// The restore-into request of a query (`GET …/restore-into`).
fn into_request(
    repo: &RepoPath,
    q: &BTreeMap<String, String>,
) -> Result<RestoreRequest, EngineError> {
    let given = |k: &str| {
        q.get(k)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let Some(connection) = given("target") else {
        return Err(EngineError::Field {
            field: "target".into(),
            message: "pick the connection to restore into".into(),
        });
    };
    Ok(RestoreRequest {
        repository: repo.full_name.clone(),
        connection: Some(repo.connection.clone()),
        snapshot: given("snapshot"),
        at: None,
        to: String::new(),
        force: false,
        target: Some(RestoreTarget {
            connection,
            as_name: given("as"),
            project: given("project"),
            into_existing: is_on(q.get("into_existing")),
            prefix: None,
        }),
    })
}

/// One of the two restores a repository page offers: its path below the repository's
/// page, its fields, how they make a request, and how the confirmation names the target.
struct Flow {
    suffix: &'static str,
    fields: &'static [&'static str],
    request: fn(&RepoPath, &BTreeMap<String, String>) -> Result<RestoreRequest, EngineError>,
    target: fn(&RepoPath, &RestoreRequest) -> Markup,
}

/// Restore to a directory on the appliance.
const DISK: Flow = Flow {
    suffix: "restore",
    fields: &["snapshot", "to", "force"],
    request: disk_request,
    target: disk_target,
};

/// Restore into Bitbucket through a connection that allows restores.
const INTO: Flow = Flow {
    suffix: "restore-into",
    fields: &["snapshot", "target", "as", "project", "into_existing"],
    request: into_request,
    target: into_target,
};

fn confirm_disk(ctx: &Ctx) -> Outcome {
    confirm(ctx, &DISK)
}

fn restore_disk(ctx: &Ctx) -> Outcome {
    submit(ctx, &DISK)
}

fn confirm_into(ctx: &Ctx) -> Outcome {
    confirm(ctx, &INTO)
}

fn restore_into(ctx: &Ctx) -> Outcome {
    submit(ctx, &INTO)
}

/// `GET …/<flow>?<fields>`: the confirmation page naming what is restored where, with
/// the button that POSTs the same fields; a wrong field goes back to the repository
/// page with the error, before anything is queued.
fn confirm(ctx: &Ctx, flow: &Flow) -> Outcome {
    let repo = RepoPath::of(ctx);
    let req = match (flow.request)(&repo, ctx.query) {
        Ok(r) => r,
        Err(e) => return super::redirect_error(&repo.href(), e),
    };
    let body = html! {
        p { "Snapshot " code { (req.snapshot.as_deref().unwrap_or("latest")) }
            " of " code { (repo.full_name) } " (connection " (repo.connection) ")" }
        p #confirm-target { ((flow.target)(&repo, &req)) }
        form method="post" action={ (repo.href()) "/" (flow.suffix) } {
            (csrf_field(ctx))
            @for name in flow.fields {
                input type="hidden" name=(name) value=(ctx.query(name).unwrap_or("").trim());
            }
            button #confirm { "Restore" } " "
            a href=(repo.href()) { "Back" }
        }
    };
    let title = format!("Restore {}", repo.full_name);
    Ok(Answer::Html(page(ctx, &title, "repositories", body)))
}

/// `POST …/<flow>`: queues the restore; on to the job's page.
fn submit(ctx: &Ctx, flow: &Flow) -> Outcome {
    let repo = RepoPath::of(ctx);
    let fields: BTreeMap<String, String> = flow
        .fields
        .iter()
        .filter_map(|n| ctx.form.get(n).map(|v| (n.to_string(), v.to_string())))
        .collect();
    let submitted = (flow.request)(&repo, &fields).and_then(|r| ctx.service.submit_restore(r));
    match submitted {
        Ok(job) => Ok(Answer::Redirect(format!("/jobs/{}", job.id))),
        Err(e) => super::redirect_error(&repo.href(), e),
    }
}

fn disk_target(_: &RepoPath, req: &RestoreRequest) -> Markup {
    html! {
        "Into the directory " code { (req.to) } " on the appliance"
        @if req.force { ", replacing what is there" } "."
    }
}

fn into_target(repo: &RepoPath, req: &RestoreRequest) -> Markup {
    let Some(t) = &req.target else {
        return html! {};
    };
    let name = t.as_name.clone().unwrap_or_else(|| repo.full_name.clone());
    html! {
        "Into Bitbucket: connection " strong { (t.connection) } ", repository " code { (name) }
        @if t.into_existing { " (an existing repository: its refs are never overwritten; differing refs go under " code { "restored/" } ")" }
        @else { " (a new repository the restore creates" @if let Some(p) = &t.project { ", in project " code { (p) } } ")" }
        "."
    }
}
