//! Plans: the list; the create/edit form (connections, include/exclude with a
//! preview of the repositories they select now, auto-add, schedule with its
//! reading and next runs in the plan's zone, window, concurrency, read-only,
//! additional credentials); run now, enable/disable, delete.

use super::layout::{csrf_field, page, post_button, when};
use super::{redirect_error, redirect_ok, seg, Answer, Ctx, Outcome, PageError, Route};
use crate::engine::service::{PlanPreview, RunRequest};
use crate::engine::types::{Plan, PlanSpec};
use crate::engine::{retention, Service};
use hyper::Method;
use maud::{html, Markup};

pub fn routes() -> Vec<Route> {
    use Method as M;
    let r = |method, pattern, handler| Route {
        method,
        pattern,
        handler,
    };
    vec![
        r(M::GET, "/plans", list),
        r(M::GET, "/plans/new", new_page),
        r(M::POST, "/plans/new", create),
        r(M::POST, "/plans/preview", preview),
        r(M::GET, "/plans/{name}", show),
        r(M::POST, "/plans/{name}", save),
        r(M::POST, "/plans/{name}/run", run_now),
        r(M::POST, "/plans/{name}/enable", enable),
        r(M::POST, "/plans/{name}/disable", disable),
        r(M::POST, "/plans/{name}/delete", delete),
    ]
}

fn plan_path(name: &str) -> String {
    format!("/plans/{}", seg(name))
}

fn list(ctx: &Ctx) -> Outcome {
    let plans = ctx.service.plans()?;
    let body = html! {
        p { a #new-plan href="/plans/new" { "New plan" } }
        @if plans.is_empty() { p.muted { "No plan yet." } }
        table #plans {
            tr { th { "Plan" } th { "Connections" } th { "Schedule" } th { "Window" } th { "State" } th { "Last success" } th { "Last job" } }
            @for p in &plans {
                @let s = &p.spec;
                tr data-plan=(s.name) {
                    td { a href=(plan_path(&s.name)) { (s.name) } }
                    td { (s.connections.join(", ")) }
                    td { @if let Some(e) = &s.schedule { code { (e) } br; small.muted { (crate::engine::plans::describe_schedule(e).unwrap_or_default()) } } @else { "on demand" } }
                    td { (s.window.as_deref().unwrap_or("-")) }
                    td { @if s.enabled { span.on { "enabled" } } @else { span.off { "disabled" } } }
                    td { (when(p.status.last_success)) }
                    td { @if let Some(j) = p.status.last_job { a href={ "/jobs/" (j) } { (j) } } @else { "-" } }
                }
            }
        }
    };
    Ok(Answer::Html(page(ctx, "Plans", "plans", body)))
}

fn new_page(ctx: &Ctx) -> Outcome {
    let spec = PlanSpec {
        name: String::new(),
        connections: Vec::new(),
        include: vec!["*".into()],
        exclude: Vec::new(),
        auto_add: true,
        schedule: Some("0 2 * * *".into()),
        timezone: None,
        window: None,
        concurrency: None,
        read_only: false,
        enabled: true,
        run_missed: true,
        additional_credentials: Vec::new(),
        metadata_every: None,
        retention: None,
        keep_deleted_for: None,
        check_every: None,
        check_subset: None,
        copy_to: None,
    };
    form_page(ctx, "New plan", &spec, None, None)
}

/// The form, filled with `spec`; `existing` is the plan being edited.
fn form_page(
    ctx: &Ctx,
    title: &str,
    spec: &PlanSpec,
    existing: Option<&Plan>,
    preview: Option<Result<PlanPreview, String>>,
) -> Outcome {
    let action = existing.map_or("/plans/new".to_string(), |p| plan_path(&p.spec.name));
    let body = html! {
        @if let Some(p) = existing { (plan_actions(ctx, p)) }
        (plan_form(ctx, spec, &action, existing.is_some())?)
        @if let Some(p) = preview { (preview_section(p)) }
    };
    Ok(Answer::Html(page(ctx, title, "plans", body)))
}

fn plan_actions(ctx: &Ctx, p: &Plan) -> Markup {
    let path = plan_path(&p.spec.name);
    html! {
        p #plan-actions {
            (post_button(ctx, &format!("{path}/run"), "Run now", "run-now", None)) " "
            @if p.spec.enabled { (post_button(ctx, &format!("{path}/disable"), "Disable", "disable", None)) }
            @else { (post_button(ctx, &format!("{path}/enable"), "Enable", "enable", None)) }
            " "
            (post_button(ctx, &format!("{path}/delete"), "Delete", "delete",
                Some(&format!("Delete plan {}? Its jobs and snapshots stay.", p.spec.name))))
        }
        p.muted #plan-retention { "Retention: " (crate::engine::retention::describe(p.spec.retention.as_ref()))
            " · gone repositories: " (p.spec.keep_deleted_for.as_deref().map_or("kept forever".to_string(), |d| format!("kept {d}, then the same rules")))
            }
        p.muted #plan-check { "Check: " (match &p.spec.check_every {
                None => "none".to_string(),
                Some(every) => format!("every {every}, {}; last {}", p.spec.check_subset.map_or("structure only".to_string(), |s| format!("{s}% read back")), when(p.status.last_check)),
            }) }
        p.muted #plan-copy { "Copy: " (p.spec.copy_to.as_deref().map_or("none".to_string(), |t| format!("to copy target {t} after each succeeded or partial run"))) }
        p.muted { "Last success " (when(p.status.last_success)) " · last job "
            @if let Some(j) = p.status.last_job { a href={ "/jobs/" (j) } { (j) } } @else { "-" } }
    }
}

/// The retention rules: empty fields keep every snapshot.
fn keep_fieldset(spec: &PlanSpec) -> Markup {
    let r = spec.retention.clone().unwrap_or_default();
    let within = r
        .keep_within_secs
        .map(retention::format_duration)
        .unwrap_or_default();
    let deleted = spec.keep_deleted_for.clone().unwrap_or_default();
    html! {
        fieldset #keep {
            legend { "Keep (after each successful run; empty: every snapshot)" }
            @for (name, label, value) in [
                ("keep_last", "Last", r.keep_last), ("keep_hourly", "Hourly", r.keep_hourly),
                ("keep_daily", "Daily", r.keep_daily), ("keep_weekly", "Weekly", r.keep_weekly),
                ("keep_monthly", "Monthly", r.keep_monthly), ("keep_yearly", "Yearly", r.keep_yearly),
            ] {
                p { label for=(name) { (label) } input id=(name) type="number" min="0" name=(name) value=[value]; }
            }
            p { label for="keep_within" { "Within" } input #keep_within type="text" name="keep_within" value=(within) placeholder="e.g. 30d: all snapshots that recent"; }
            p { label for="keep_deleted_for" { "Repositories gone from Bitbucket" } input #keep_deleted_for type="text" name="keep_deleted_for" value=(deleted) placeholder="e.g. 1y (empty: kept forever)"; }
        }
        fieldset #check {
            legend { "Check the archive (after a successful run)" }
            p { label for="check_every" { "Every" } input #check_every type="text" name="check_every" value=(spec.check_every.clone().unwrap_or_default()) placeholder="e.g. 7d (empty: never)"; }
            p { label for="check_subset" { "Read back (%)" } input #check_subset type="text" name="check_subset" value=[spec.check_subset] placeholder="e.g. 10 (empty: structure only; 100: everything)"; }
        }
        fieldset #copy {
            legend { "Copy the archive (after each succeeded or partial run)" }
            p { label for="copy_to" { "To the saved copy target" } input #copy_to type="text" name="copy_to" value=(spec.copy_to.clone().unwrap_or_default()) placeholder="a name saved by `reposafe archive copy --save-as` (empty: no copy)"; }
        }
    }
}

/// The share of blobs a plan's check reads back (`None`: none given).
fn subset_of(f: &super::form::Form) -> Result<Option<u32>, PageError> {
    f.get("check_subset")
        .map(|v| {
            v.trim()
                .trim_end_matches('%')
                .parse::<u32>()
                .map_err(|_| PageError::Field {
                    field: "check_subset".into(),
                    message: format!("{v:?} is not a whole percentage"),
                })
        })
        .transpose()
}

/// The retention rules the form holds (`None`: none given).
fn retention_of(f: &super::form::Form) -> Result<Option<retention::Policy>, PageError> {
    let count = |name: &str| -> Result<Option<u32>, PageError> {
        f.get(name)
            .map(|v| {
                v.trim().parse::<u32>().map_err(|_| PageError::Field {
                    field: name.into(),
                    message: format!("{v:?} is not a number of snapshots"),
                })
            })
            .transpose()
    };
    let within = f
        .get("keep_within")
        .map(|v| {
            retention::parse_duration(v).map_err(|message| PageError::Field {
                field: "keep_within".into(),
                message,
            })
        })
        .transpose()?;
    let policy = retention::Policy {
        keep_last: count("keep_last")?,
        keep_hourly: count("keep_hourly")?,
        keep_daily: count("keep_daily")?,
        keep_weekly: count("keep_weekly")?,
        keep_monthly: count("keep_monthly")?,
        keep_yearly: count("keep_yearly")?,
        keep_within_secs: within,
    };
    Ok((!policy.is_empty()).then_some(policy))
}

fn plan_form(ctx: &Ctx, spec: &PlanSpec, action: &str, editing: bool) -> Result<Markup, PageError> {
    let conns = ctx.service.connections()?;
    let mut additional = Vec::new();
    for c in &conns {
        for cr in ctx.service.credentials(&c.connection.name)? {
            if cr.role == "additional" {
                additional.push((c.connection.name.clone(), cr));
            }
        }
    }
    let mode = match spec.additional_credentials.as_slice() {
        [] => "none",
        [all] if all == "*" => "all",
        _ => "pick",
    };
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    Ok(html! {
        form #plan-form method="post" action=(action) {
            (csrf_field(ctx))
            fieldset {
                legend { "What" }
                p { label for="plan-name" { "Name" } input #plan-name type="text" name="name" value=(spec.name) required readonly[editing]; }
                p { "Connections" br;
                    @for c in &conns {
                        @let n = &c.connection.name;
                        label.check { input type="checkbox" name="connections" value=(n) checked[spec.connections.contains(n)]; " " (n) } " "
                    }
                }
                p { label for="include" { "Include (one pattern per line; * = all)" } textarea #include name="include" { (spec.include.join("\n")) } }
                p { label for="exclude" { "Exclude" } textarea #exclude name="exclude" { (spec.exclude.join("\n")) } }
                p { label { input type="checkbox" name="auto_add" value="1" checked[spec.auto_add]; " add repositories created later automatically" } }
            }
            fieldset {
                legend { "When" }
                p { label for="schedule" { "Schedule (cron)" } input #schedule type="text" name="schedule" value=(text(&spec.schedule)) placeholder="0 2 * * * (empty: on demand)";
                    br; small #schedule-reading.muted { (spec.schedule.as_deref().and_then(crate::engine::plans::describe_schedule).unwrap_or_default()) } }
                p { label for="timezone" { "Time zone" } input #timezone type="text" name="timezone" value=(text(&spec.timezone)) placeholder="e.g. Europe/Warsaw (empty: the server's)"; }
                p { label for="window" { "Window" } input #window type="text" name="window" value=(text(&spec.window)) placeholder="e.g. 01:00-06:00"; }
                ol #next-runs {}
            }
            (keep_fieldset(spec))
            fieldset {
                legend { "How" }
                p { label for="concurrency" { "Concurrency" } input #concurrency type="number" min="1" max="64" name="concurrency" value=[spec.concurrency]; }
                p { label for="metadata-every" { "Read metadata every" } input #metadata-every type="text" name="metadata_every" value=(text(&spec.metadata_every)) placeholder="e.g. 6h, 1d, never (empty: every run)"; }
                p { label { input type="checkbox" name="read_only" value="1" checked[spec.read_only]; " read-only (never writes to the connections)" } }
                p { "Additional credentials" br;
                    @for (value, label) in [("none", "none"), ("all", "all enabled"), ("pick", "only these:")] {
                        label.check { input type="radio" name="additional" value=(value) checked[mode == value]; " " (label) } " "
                    }
                    @for (conn, cr) in &additional {
                        br; label.check { input type="checkbox" name="additional_credentials" value=(cr.id) checked[spec.additional_credentials.contains(&cr.id)];
                            " " (conn) " / " (cr.id) " " (cr.label.as_deref().unwrap_or("")) " (" (cr.principal.as_deref().unwrap_or("?")) ")" @if !cr.enabled { " — disabled" } }
                    }
                }
            }
            button #save { "Save plan" } " "
            button #preview formaction="/plans/preview" { "Preview" }
        }
    })
}

fn preview_section(p: Result<PlanPreview, String>) -> Markup {
    html! {
        section #plan-preview {
            h2 { "Preview" }
            @match p {
                Err(e) => { p.flash.error #preview-error { (e) } },
                Ok(p) => {
                    p { "Schedule: " strong #preview-reading { (p.reading.as_deref().unwrap_or("on demand only")) } " (" (p.timezone) ")" }
                    @if !p.next_runs.is_empty() {
                        ol #preview-runs { @for t in &p.next_runs { li { (crate::fmt::fmt_time_in_offset(*t)) } } }
                    }
                    @for c in &p.connections {
                        h3 { (c.connection) " — " (c.matching.len()) " selected, " (c.left_out) " left out" }
                        @if let Some(e) = &c.error { p.flash.error { (e) } }
                        ul #match-preview { @for r in &c.matching { li { (r) } } }
                    }
                }
            }
        }
    }
}

/// The plan spec the form describes; `existing` keeps what the form does not show.
fn spec_of(ctx: &Ctx, existing: Option<&PlanSpec>) -> Result<PlanSpec, PageError> {
    let f = ctx.form;
    let opt = |name: &str| f.get(name).map(str::to_string);
    let concurrency = match f.get("concurrency") {
        Some(c) => Some(c.parse::<u32>().map_err(|_| PageError::Field {
            field: "concurrency".into(),
            message: format!("{c:?} is not a number"),
        })?),
        None => None,
    };
    let additional = match f.get("additional").unwrap_or("none") {
        "all" => vec!["*".to_string()],
        "pick" => f
            .all("additional_credentials")
            .into_iter()
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    let include = f.lines("include");
    Ok(PlanSpec {
        name: match existing {
            Some(e) => e.name.clone(),
            None => f.required("name")?.to_string(),
        },
        connections: f
            .all("connections")
            .into_iter()
            .map(str::to_string)
            .collect(),
        include: if include.is_empty() {
            vec!["*".into()]
        } else {
            include
        },
        exclude: f.lines("exclude"),
        auto_add: f.checked("auto_add"),
        schedule: opt("schedule"),
        timezone: opt("timezone"),
        window: opt("window"),
        concurrency,
        read_only: f.checked("read_only"),
        enabled: existing.is_none_or(|e| e.enabled),
        run_missed: existing.is_none_or(|e| e.run_missed),
        additional_credentials: additional,
        metadata_every: opt("metadata_every"),
        retention: retention_of(f)?,
        keep_deleted_for: opt("keep_deleted_for"),
        check_every: opt("check_every"),
        check_subset: subset_of(f)?,
        copy_to: opt("copy_to"),
    })
}

fn create(ctx: &Ctx) -> Outcome {
    let spec = match spec_of(ctx, None) {
        Ok(s) => s,
        Err(e) => return new_form_again(ctx, &e),
    };
    match ctx.service.add_plan(spec.clone()) {
        Ok(p) => redirect_ok(
            &plan_path(&p.spec.name),
            &format!("plan {} created", p.spec.name),
        ),
        Err(e) => form_page(ctx, "New plan", &spec, None, Some(Err(e.to_string()))),
    }
}

/// The new-plan form again with what it held and why it was refused.
fn new_form_again(ctx: &Ctx, error: &PageError) -> Outcome {
    form_page(
        ctx,
        "New plan",
        &partial_spec(ctx),
        None,
        Some(Err(error.to_string())),
    )
}

/// What the form held, for showing it again after an error in it.
fn partial_spec(ctx: &Ctx) -> PlanSpec {
    let mut s = PlanSpec {
        name: ctx.form.get("name").unwrap_or("").to_string(),
        connections: ctx
            .form
            .all("connections")
            .into_iter()
            .map(str::to_string)
            .collect(),
        include: ctx.form.lines("include"),
        exclude: ctx.form.lines("exclude"),
        auto_add: ctx.form.checked("auto_add"),
        schedule: ctx.form.get("schedule").map(str::to_string),
        timezone: ctx.form.get("timezone").map(str::to_string),
        window: ctx.form.get("window").map(str::to_string),
        concurrency: None,
        read_only: ctx.form.checked("read_only"),
        enabled: true,
        run_missed: true,
        additional_credentials: Vec::new(),
        metadata_every: ctx.form.get("metadata_every").map(str::to_string),
        retention: retention_of(ctx.form).ok().flatten(),
        keep_deleted_for: ctx.form.get("keep_deleted_for").map(str::to_string),
        check_every: ctx.form.get("check_every").map(str::to_string),
        check_subset: subset_of(ctx.form).ok().flatten(),
        copy_to: ctx.form.get("copy_to").map(str::to_string),
    };
    if s.include.is_empty() {
        s.include = vec!["*".into()];
    }
    s
}

fn preview(ctx: &Ctx) -> Outcome {
    let existing = match ctx.form.get("name") {
        Some(n) => ctx.service.plan(n).ok(),
        None => None,
    };
    let spec = match spec_of(ctx, existing.as_ref().map(|p| &p.spec)) {
        Ok(s) => s,
        Err(e) => return new_form_again(ctx, &e),
    };
    let result = ctx
        .service
        .preview_plan(spec.clone())
        .map_err(|e| e.to_string());
    let title = if existing.is_some() {
        format!("Plan {}", spec.name)
    } else {
        "New plan".into()
    };
    form_page(ctx, &title, &spec, existing.as_ref(), Some(result))
}

fn show(ctx: &Ctx) -> Outcome {
    let plan = ctx.service.plan(ctx.param("name"))?;
    let preview = ctx
        .service
        .preview_plan(plan.spec.clone())
        .map_err(|e| e.to_string());
    form_page(
        ctx,
        &format!("Plan {}", plan.spec.name),
        &plan.spec.clone(),
        Some(&plan),
        Some(preview),
    )
}

fn save(ctx: &Ctx) -> Outcome {
    let name = ctx.param("name");
    let existing = ctx.service.plan(name)?;
    let spec = match spec_of(ctx, Some(&existing.spec)) {
        Ok(s) => s,
        Err(e) => return redirect_error(&plan_path(name), e),
    };
    match ctx.service.update_plan(name, spec.clone()) {
        Ok(_) => redirect_ok(&plan_path(name), &format!("plan {name} saved")),
        Err(e) => form_page(
            ctx,
            &format!("Plan {name}"),
            &spec,
            Some(&existing),
            Some(Err(e.to_string())),
        ),
    }
}

fn run_now(ctx: &Ctx) -> Outcome {
    let name = ctx.param("name");
    let req = RunRequest {
        plan: Some(name.to_string()),
        ..RunRequest::default()
    };
    match ctx.service.submit(req) {
        Ok(job) => Ok(Answer::Redirect(format!("/jobs/{}", job.id))),
        Err(e) => redirect_error(&plan_path(name), e),
    }
}

fn set_enabled(ctx: &Ctx, enabled: bool) -> Outcome {
    let name = ctx.param("name");
    let mut spec = ctx.service.plan(name)?.spec;
    spec.enabled = enabled;
    match ctx.service.update_plan(name, spec) {
        Ok(_) => redirect_ok(
            &plan_path(name),
            &format!(
                "plan {name} {}",
                if enabled { "enabled" } else { "disabled" }
            ),
        ),
        Err(e) => redirect_error(&plan_path(name), e),
    }
}

fn enable(ctx: &Ctx) -> Outcome {
    set_enabled(ctx, true)
}

fn disable(ctx: &Ctx) -> Outcome {
    set_enabled(ctx, false)
}

fn delete(ctx: &Ctx) -> Outcome {
    let name = ctx.param("name");
    match ctx.service.remove_plan(name) {
        Ok(_) => redirect_ok(
            "/plans",
            &format!("plan {name} deleted; its jobs and snapshots stay"),
        ),
        Err(e) => redirect_error(&plan_path(name), e),
    }
}
