//! The built-in dashboard: one server-rendered HTML page (connections, plans,
//! recent jobs with live progress, repositories) and its sign-in form. No
//! JavaScript framework; the page refreshes itself while jobs run.

pub mod oauth;

use crate::engine::{EngineError, Service};
use crate::fmt::{fmt_time, human_bytes};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "<style>body{font:14px system-ui;margin:2em}table{border-collapse:collapse}\
td,th{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left}\
progress{width:12em}.failed,.interrupted{color:#b00}.succeeded{color:#070}</style>";

/// The status page; `csrf` is the session's CSRF token when a browser session
/// (not a bearer client) asks: the page then carries it and a sign-out button.
pub fn status_page(service: &dyn Service, csrf: Option<&str>) -> Result<String, EngineError> {
    let overview = service.overview()?;
    let recent = service.jobs(20)?;
    let active = recent.iter().any(|j| !j.is_finished());
    let mut html = format!(
        "<!doctype html><meta charset=utf-8><title>reposafe</title>{}{STYLE}<h1>reposafe</h1>",
        if active {
            "<meta http-equiv=refresh content=2>"
        } else {
            ""
        }
    );
    if let Some(csrf) = csrf {
        html.push_str(&session_bar(csrf));
    }
    html.push_str(&format!(
        "<p>Data dir: <code>{}</code> &middot; archive size {}</p>",
        esc(&overview.data_dir),
        human_bytes(overview.archive_bytes)
    ));
    html.push_str("<h2>Jobs</h2><table><tr><th>Job</th><th>What</th><th>Trigger</th><th>State</th><th>Progress</th><th>Fetched</th><th>Stored</th><th>Started</th></tr>");
    for j in &recent {
        let what = j.kind.describe();
        let p = &j.progress;
        let state = j.state_name();
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{:?}</td><td class={state}>{state}</td><td><progress max={} value={}></progress> {}/{} ({} failed){}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            j.id,
            esc(&what),
            j.trigger,
            p.repos_total.max(1),
            p.repos_done,
            p.repos_done,
            p.repos_total,
            p.failed,
            p.notice.as_deref().map(|n| format!("<br><small>{}</small>", esc(n))).unwrap_or_default(),
            human_bytes(p.bytes_fetched),
            human_bytes(p.bytes_stored),
            j.started_at.map(fmt_time).unwrap_or_else(|| "queued".into()),
        ));
    }
    html.push_str("</table><h2>Plans</h2><table><tr><th>Plan</th><th>Connections</th><th>Schedule</th><th>Window</th><th>Last success</th></tr>");
    for p in service.plans()? {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.spec.name),
            esc(&p.spec.connections.join(", ")),
            esc(p.spec.schedule.as_deref().unwrap_or("on demand")),
            esc(p.spec.window.as_deref().unwrap_or("-")),
            p.status
                .last_success
                .map(fmt_time)
                .unwrap_or_else(|| "-".into())
        ));
    }
    html.push_str(
        "</table><h2>Connections</h2><table><tr><th>Name</th><th>Provider</th><th>Credential</th></tr>",
    );
    for c in service.connections()? {
        let c = c.connection;
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{} {} ********</td></tr>",
            esc(&c.name),
            esc(&c.provider),
            c.credential_kind,
            esc(c.credential_identity.as_deref().unwrap_or(""))
        ));
    }
    html.push_str("</table><h2>Repositories</h2><table><tr><th>Connection</th><th>Repository</th><th>Last seen</th><th>Last snapshot</th></tr>");
    for r in service.repositories(None)? {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.connection),
            esc(&r.full_name),
            fmt_time(r.last_seen),
            esc(r.last_snapshot.as_deref().unwrap_or("-"))
        ));
    }
    html.push_str("</table>");
    Ok(html)
}

/// The session's CSRF token (for scripts: `X-CSRF-Token`) and the sign-out form.
fn session_bar(csrf: &str) -> String {
    let csrf = esc(csrf);
    format!(
        "<meta name=csrf-token content=\"{csrf}\">\
         <form method=post action=/logout><input type=hidden name=csrf value=\"{csrf}\">\
         <button>Sign out</button></form>"
    )
}

/// The sign-in form (the admin token is in the data dir's `api-token` file).
pub fn login_page(error: Option<&str>) -> String {
    format!(
        "<!doctype html><meta charset=utf-8><title>reposafe: sign in</title>{STYLE}<h1>reposafe</h1>{}\
         <form method=post action=/login><p>Admin token (in the data dir's <code>api-token</code> file):\
         <p><input name=token type=password size=70 autofocus> <button>Sign in</button></form>",
        error
            .map(|e| format!("<p class=failed>{}</p>", esc(e)))
            .unwrap_or_default()
    )
}
