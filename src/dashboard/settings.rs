//! The settings page (`/settings`): notifications of failed jobs — the outgoing
//! webhook (Slack-compatible) and e-mail over SMTP — where the settings in force come
//! from (stored, or the config file's `[notifications]`), "send test" with a result
//! per channel, and the last delivery's outcome. Secrets are write-only here: the
//! webhook URL shows as its origin (sent back unchanged, it keeps the stored one) and
//! the SMTP password field is always empty (empty keeps the stored one).

use super::layout::{csrf_field, page, when};
use super::{redirect_error, redirect_ok, Answer, Ctx, Outcome, Route};
use crate::engine::service::{
    ChannelResult, NotificationSettings, NotificationView, Service, SetNotifications,
    SettingsSource, SmtpSecurity, SmtpSettings,
};
use hyper::Method;
use maud::{html, Markup};
use secrecy::SecretString;

pub fn routes() -> Vec<Route> {
    vec![
        Route {
            method: Method::GET,
            pattern: "/settings",
            handler: |ctx| show(ctx, None),
        },
        Route {
            method: Method::POST,
            pattern: "/settings/notifications",
            handler: save,
        },
        Route {
            method: Method::POST,
            pattern: "/settings/notifications/test",
            handler: send_test,
        },
    ]
}

fn show(ctx: &Ctx, tested: Option<Result<Vec<ChannelResult>, String>>) -> Outcome {
    let v = ctx.service.notifications()?;
    let body = html! {
        h2 { "Notifications" }
        p #notifications-source { (source_text(v.source)) }
        (test_result(tested.as_ref()))
        (form(ctx, &v))
        form.inline method="post" action="/settings/notifications/test" {
            (csrf_field(ctx))
            button #send-test { "Send test" }
            " "
            span.muted { "sends a test message on every channel saved above" }
        }
        (last_delivery(&v))
    };
    Ok(Answer::Html(page(ctx, "Settings", "settings", body)))
}

fn source_text(source: SettingsSource) -> &'static str {
    match source {
        SettingsSource::Stored => {
            "In force: the settings saved here (the config file's [notifications] no longer applies)."
        }
        SettingsSource::ConfigFile => {
            "In force: the config file's [notifications] table. Saving this form stores settings that replace it."
        }
        SettingsSource::None => "No notification is set: failed jobs are only shown here and in the logs.",
    }
}

fn form(ctx: &Ctx, v: &NotificationView) -> Markup {
    let s = &v.settings;
    let m = s.smtp.clone().unwrap_or_default();
    let security = s.smtp.as_ref().map(|m| m.security).unwrap_or_default();
    let password_hint = if v.smtp_password_set {
        "stored — leave empty to keep"
    } else {
        "none stored"
    };
    html! {
        form #notifications method="post" action="/settings/notifications" {
            (csrf_field(ctx))
            fieldset {
                legend { "When" }
                p {
                    label.check { input type="checkbox" checked disabled; " failed jobs (always)" } " "
                    label.check { input type="checkbox" name="on_partial" value="1" checked[s.on_partial]; " partial jobs (some repositories failed)" }
                }
                p { label for="daily-digest" { "Daily digest at" }
                    input #daily-digest type="text" name="daily_digest" pattern="[0-2][0-9]:[0-5][0-9]" placeholder="07:30" value=[s.daily_digest.as_deref()];
                    span.help { " HH:MM in the daemon's time zone; empty: no digest" } }
                p { label for="dashboard-url" { "Dashboard address" }
                    input #dashboard-url type="url" name="dashboard_url" placeholder="where the daemon listens" value=[s.dashboard_url.as_deref()];
                    span.help { " for the links in messages" } }
            }
            fieldset {
                legend { "Webhook (Slack-compatible: {\"text\": …})" }
                p { label for="webhook-url-input" { "URL" }
                    input #webhook-url-input type="text" name="webhook_url" placeholder="https://hooks.slack.com/services/…" value=[s.webhook_url.as_deref()];
                    span.help { " empty: no webhook" } }
            }
            fieldset {
                legend { "E-mail (SMTP)" }
                p { label for="smtp-host" { "Server" } input #smtp-host type="text" name="smtp_host" value=(m.host); span.help { " empty: no e-mail" } }
                p { label for="smtp-port" { "Port" } input #smtp-port type="number" name="smtp_port" min="1" max="65535" placeholder="587" value=[m.port]; }
                p { label for="smtp-security" { "Security" }
                    select #smtp-security name="smtp_security" {
                        @for sec in [SmtpSecurity::Starttls, SmtpSecurity::Tls, SmtpSecurity::None] {
                            option value=(sec.as_str()) selected[sec == security] { (sec.as_str()) }
                        }
                    }
                }
                p { label for="smtp-username" { "User" } input #smtp-username type="text" name="smtp_username" autocomplete="off" value=[m.username.as_deref()]; }
                p { label for="smtp-password" { "Password" } input #smtp-password type="password" name="smtp_password" autocomplete="new-password" placeholder=(password_hint); " "
                    label.check { input type="checkbox" name="clear_smtp_password" value="1"; " forget the stored password" } }
                p { label for="smtp-from" { "From" } input #smtp-from type="text" name="smtp_from" placeholder="reposafe <backup@example.com>" value=(m.from); }
                p { label for="smtp-to" { "To" } textarea #smtp-to name="smtp_to" rows="3" { (m.to.join("\n")) } span.help { " one address per line" } }
                p { label for="smtp-ca" { "Extra CA certificates" }
                    textarea #smtp-ca name="smtp_ca_bundle_pem" rows="3" { (m.ca_bundle_pem.as_deref().unwrap_or("")) }
                    span.help { " PEM, for a private mail relay" } }
            }
            button #save-notifications { "Save" }
        }
    }
}

fn test_result(tested: Option<&Result<Vec<ChannelResult>, String>>) -> Markup {
    html! {
        @match tested {
            None => {}
            Some(Err(e)) => { div #test-result { p.flash.error { (e) } } }
            Some(Ok(results)) => {
                div #test-result {
                    ul {
                        @for r in results {
                            li data-channel=(r.channel) class=(if r.ok { "succeeded" } else { "failed" }) {
                                b { (r.channel) } ": "
                                @match &r.error { None => { "sent" } Some(e) => { "failed: " (e) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn last_delivery(v: &NotificationView) -> Markup {
    html! {
        @if let Some(d) = &v.last_delivery {
            h2 { "Last delivery" }
            table #last-delivery {
                tr { th { "When" } th { "What" } th { "Channel" } th { "Outcome" } }
                @for r in &d.results {
                    tr {
                        td { (when(Some(d.at))) } td { (d.what) } td { (r.channel) }
                        td class=(if r.ok { "succeeded" } else { "failed" }) {
                            @match &r.error { None => { "sent" } Some(e) => { (e) } }
                        }
                    }
                }
            }
        }
    }
}

fn save(ctx: &Ctx) -> Outcome {
    let req = match request(ctx) {
        Ok(r) => r,
        Err(e) => return redirect_error("/settings", e),
    };
    match ctx.service.set_notifications(req) {
        Ok(_) => redirect_ok("/settings", "Notification settings saved."),
        Err(e) => redirect_error("/settings", e),
    }
}

/// The request the form describes.
fn request(ctx: &Ctx) -> Result<SetNotifications, String> {
    let f = ctx.form;
    let smtp = match f.get("smtp_host") {
        None => None,
        Some(host) => Some(SmtpSettings {
            host: host.to_string(),
            port: match f.get("smtp_port") {
                Some(p) => Some(
                    p.parse()
                        .map_err(|_| format!("smtp_port: {p:?} is not a port number"))?,
                ),
                None => None,
            },
            security: match f.get("smtp_security") {
                Some(s) => s.parse().map_err(|e| format!("{e}"))?,
                None => SmtpSecurity::default(),
            },
            username: f.get("smtp_username").map(str::to_string),
            password_file: None,
            from: f.get("smtp_from").unwrap_or_default().to_string(),
            to: f
                .lines("smtp_to")
                .iter()
                .flat_map(|l| l.split(','))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
            ca_bundle_pem: f.get("smtp_ca_bundle_pem").map(str::to_string),
        }),
    };
    Ok(SetNotifications {
        settings: NotificationSettings {
            webhook_url: f.get("webhook_url").map(str::to_string),
            smtp,
            on_partial: f.checked("on_partial"),
            daily_digest: f.get("daily_digest").map(str::to_string),
            dashboard_url: f.get("dashboard_url").map(str::to_string),
        },
        smtp_password: f
            .raw("smtp_password")
            .map(|p| SecretString::from(p.to_string())),
        clear_smtp_password: f.checked("clear_smtp_password"),
    })
}

fn send_test(ctx: &Ctx) -> Outcome {
    let tested = ctx.service.test_notifications().map_err(|e| e.to_string());
    show(ctx, Some(tested))
}
