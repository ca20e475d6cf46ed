//! The frame every dashboard page shares: head with the embedded stylesheet and
//! script, the navigation, the flash message of the last action, sign-out; and
//! the small pieces forms repeat (the CSRF field, a one-button POST form).

use super::Ctx;
use maud::{html, Markup, PreEscaped, DOCTYPE};

/// The stylesheet, served at `/static/app.css`.
pub const APP_CSS: &str = include_str!("static/app.css");
/// The script (live progress over SSE, confirmations), served at `/static/app.js`.
pub const APP_JS: &str = include_str!("static/app.js");

/// The navigation: id, path, label.
const NAV: [(&str, &str, &str); 7] = [
    ("overview", "/", "Overview"),
    ("connections", "/connections", "Connections"),
    ("plans", "/plans", "Plans"),
    ("jobs", "/jobs", "Jobs"),
    ("repositories", "/repositories", "Repositories"),
    ("audit", "/audit", "Audit log"),
    ("settings", "/settings", "Settings"),
];

/// A whole page: `active` is the navigation id to highlight.
pub fn page(ctx: &Ctx, title: &str, active: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="csrf-token" content=(ctx.csrf);
                title { (title) " · reposafe" }
                link rel="stylesheet" href="/static/app.css";
                script src="/static/app.js" defer {}
            }
            body {
                header {
                    a.brand href="/" { "reposafe" }
                    nav {
                        @for (id, href, label) in NAV {
                            a id={ "nav-" (id) } href=(href) class=[(id == active).then_some("active")] { (label) }
                        }
                    }
                    form.signout method="post" action="/logout" {
                        (csrf_field(ctx))
                        button #sign-out { "Sign out" }
                    }
                }
                main {
                    h1 { (title) }
                    (flash(ctx))
                    (body)
                }
            }
        }
    }
}

/// The message the last form left (`?ok=` / `?error=`).
fn flash(ctx: &Ctx) -> Markup {
    html! {
        @if let Some(ok) = ctx.query("ok") { p.flash.ok #flash role="status" { (ok) } }
        @if let Some(e) = ctx.query("error") { p.flash.error #flash role="alert" { (e) } }
    }
}

/// The hidden CSRF field every POST form carries.
pub fn csrf_field(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name="csrf" value=(ctx.csrf); }
}

/// A form of one button posting to `action`; with `confirm`, the browser asks
/// first (`data-confirm`, handled by app.js).
pub fn post_button(
    ctx: &Ctx,
    action: &str,
    label: &str,
    id: &str,
    confirm: Option<&str>,
) -> Markup {
    html! {
        form.inline method="post" action=(action) data-confirm=[confirm] {
            (csrf_field(ctx))
            button id=(id) { (label) }
        }
    }
}

/// A time as the dashboard shows it (UTC, to the second), or `-`.
pub fn when(t: Option<time::OffsetDateTime>) -> String {
    t.map(crate::fmt::fmt_time).unwrap_or_else(|| "-".into())
}

/// The sign-in page; on a fresh data dir it says where the admin token is.
pub fn login_page(error: Option<&str>, token_file: &str) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Sign in · reposafe" }
                style { (PreEscaped(APP_CSS)) }
            }
            body.login {
                main {
                    h1 { "reposafe" }
                    @if let Some(e) = error { p.flash.error role="alert" { (e) } }
                    form method="post" action="/login" {
                        p {
                            label for="token" { "Admin token" }
                            br;
                            input #token name="token" type="password" size="70" autofocus autocomplete="off";
                        }
                        button #sign-in { "Sign in" }
                    }
                    p.help {
                        "The admin token was created when the daemon first started. Read it on the machine running reposafe: "
                        code { "sudo cat " (token_file) }
                        ". Signing in keeps a session cookie in this browser (12 hours); the token itself is not stored."
                    }
                }
            }
        }
    }
    .into_string()
}
