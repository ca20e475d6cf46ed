//! `reposafe notifications [show|set …|test]`: the notification settings (e-mail over
//! SMTP and a Slack-compatible webhook for failed jobs), their arguments, the command
//! (over `dyn Service`, so the same with or without a daemon) and its output.

use crate::engine::service::{
    ChannelResult, NotificationSettings, NotificationView, Service, SetNotifications,
    SettingsSource,
};
use crate::fmt::fmt_time;
use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use secrecy::ExposeSecret;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct NotificationsArgs {
    #[command(subcommand)]
    pub cmd: Option<NotificationsCmd>,
}

#[derive(Subcommand, Debug)]
pub enum NotificationsCmd {
    /// The settings in force, where they come from, and the last delivery (the default).
    Show {
        #[arg(long)]
        json: bool,
    },
    /// Change the settings; what is not given stays as it is.
    Set(Box<SetArgs>),
    /// Send a test message on every configured channel now.
    Test,
}

#[derive(Args, Debug, Default)]
pub struct SetArgs {
    /// Slack-compatible incoming-webhook URL (it holds a token: prefer --webhook-url-file).
    #[arg(long, conflicts_with_all = ["webhook_url_file", "no_webhook"])]
    pub webhook_url: Option<String>,
    /// File holding the webhook URL (`-` for standard input).
    #[arg(long, conflicts_with = "no_webhook")]
    pub webhook_url_file: Option<PathBuf>,
    /// Remove the webhook.
    #[arg(long)]
    pub no_webhook: bool,
    /// SMTP server host name.
    #[arg(long)]
    pub smtp_host: Option<String>,
    /// SMTP port [default by security: 587 starttls, 465 tls, 25 none].
    #[arg(long)]
    pub smtp_port: Option<u16>,
    /// starttls (default), tls or none.
    #[arg(long)]
    pub smtp_security: Option<String>,
    /// SMTP user name.
    #[arg(long)]
    pub smtp_username: Option<String>,
    /// File holding the SMTP password (`-` for standard input); sealed in the vault.
    #[arg(long, conflicts_with = "clear_smtp_password")]
    pub smtp_password_file: Option<PathBuf>,
    /// Forget the stored SMTP password.
    #[arg(long)]
    pub clear_smtp_password: bool,
    /// Sender, e.g. "reposafe <backup@example.com>".
    #[arg(long)]
    pub smtp_from: Option<String>,
    /// Recipient (repeat for several; replaces the list).
    #[arg(long)]
    pub smtp_to: Vec<String>,
    /// PEM file of CA certificates the SMTP server's certificate may chain to.
    #[arg(long)]
    pub smtp_ca_bundle: Option<PathBuf>,
    /// Remove the e-mail settings.
    #[arg(long, conflicts_with_all = ["smtp_host", "smtp_from", "smtp_to"])]
    pub no_smtp: bool,
    /// Also notify when a job ends partial (failed jobs always notify).
    #[arg(long)]
    pub on_partial: Option<bool>,
    /// Daily digest at HH:MM (the daemon's local time); `off` turns it off.
    #[arg(long)]
    pub daily_digest: Option<String>,
    /// The dashboard's address used in links (default: where the daemon listens).
    #[arg(long)]
    pub dashboard_url: Option<String>,
}

/// Runs the command; the exit code is 1 when a test delivery failed.
pub fn execute(service: &dyn Service, args: NotificationsArgs) -> Result<i32> {
    match args.cmd.unwrap_or(NotificationsCmd::Show { json: false }) {
        NotificationsCmd::Show { json: true } => super::output::json(&service.notifications()?)?,
        NotificationsCmd::Show { json: false } => show(&service.notifications()?),
        NotificationsCmd::Set(set) => {
            let current = service.notifications()?;
            let req = apply(current.settings, *set)?;
            show(&service.set_notifications(req)?);
        }
        NotificationsCmd::Test => {
            let results = service.test_notifications()?;
            print_results(&results);
            return Ok(if results.iter().all(|r| r.ok) { 0 } else { 1 });
        }
    }
    Ok(0)
}

/// The request: the settings in force with the flags given applied.
fn apply(mut s: NotificationSettings, a: SetArgs) -> Result<SetNotifications> {
    if let Some(url) = a.webhook_url {
        s.webhook_url = Some(url);
    }
    if let Some(path) = &a.webhook_url_file {
        let url = super::read_secret(path, "webhook URL")?;
        s.webhook_url = Some(url.expose_secret().to_string());
    }
    if a.no_webhook {
        s.webhook_url = None;
    }
    let touches_smtp = a.smtp_host.is_some()
        || a.smtp_port.is_some()
        || a.smtp_security.is_some()
        || a.smtp_username.is_some()
        || a.smtp_from.is_some()
        || !a.smtp_to.is_empty()
        || a.smtp_ca_bundle.is_some();
    if touches_smtp {
        let mut m = s.smtp.take().unwrap_or_default();
        set(&mut m.host, a.smtp_host);
        m.port = a.smtp_port.or(m.port);
        if let Some(sec) = a.smtp_security {
            m.security = sec
                .parse()
                .map_err(|e| anyhow::anyhow!("--smtp-security: {e}"))?;
        }
        if let Some(u) = a.smtp_username {
            m.username = Some(u).filter(|u| !u.is_empty());
        }
        set(&mut m.from, a.smtp_from);
        if !a.smtp_to.is_empty() {
            m.to = a.smtp_to;
        }
        if let Some(path) = &a.smtp_ca_bundle {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the CA bundle {}", path.display()))?;
            m.ca_bundle_pem = Some(pem);
        }
        s.smtp = Some(m);
    }
    if a.no_smtp {
        s.smtp = None;
    }
    if let Some(p) = a.on_partial {
        s.on_partial = p;
    }
    match a.daily_digest.as_deref() {
        Some("off") | Some("") => s.daily_digest = None,
        Some(at) => s.daily_digest = Some(at.to_string()),
        None => {}
    }
    if let Some(u) = a.dashboard_url {
        s.dashboard_url = Some(u).filter(|u| !u.is_empty());
    }
    let smtp_password = match &a.smtp_password_file {
        Some(path) => Some(super::read_secret(path, "SMTP password")?),
        None => None,
    };
    Ok(SetNotifications {
        settings: s,
        smtp_password,
        clear_smtp_password: a.clear_smtp_password,
    })
}

fn set(field: &mut String, value: Option<String>) {
    if let Some(v) = value {
        *field = v;
    }
}

fn show(v: &NotificationView) {
    let source = match v.source {
        SettingsSource::Stored => "stored in the data dir (set through the dashboard, API or CLI)",
        SettingsSource::ConfigFile => "the config file's [notifications] (nothing stored yet)",
        SettingsSource::None => "none set: no notification is sent",
    };
    println!("source: {source}");
    let s = &v.settings;
    println!("webhook: {}", s.webhook_url.as_deref().unwrap_or("none"));
    match &s.smtp {
        Some(m) => {
            println!(
                "email: {} ({}) from {} to {}",
                m.endpoint(),
                m.security.as_str(),
                m.from,
                m.to.join(", ")
            );
            if let Some(u) = &m.username {
                let pw = if v.smtp_password_set {
                    "set"
                } else {
                    "not set"
                };
                println!("email user: {u} (password {pw})");
            }
            if m.ca_bundle_pem.is_some() {
                println!("email CA bundle: stored");
            }
        }
        None => println!("email: none"),
    }
    println!("failed jobs: notify");
    println!(
        "partial jobs: {}",
        if s.on_partial { "notify" } else { "no" }
    );
    println!(
        "daily digest: {}",
        s.daily_digest.as_deref().unwrap_or("off")
    );
    if let Some(u) = &s.dashboard_url {
        println!("links to: {u}");
    }
    if let Some(d) = &v.last_delivery {
        println!(
            "last delivery: {} ({}) at {}",
            d.what,
            outcome(&d.results),
            fmt_time(d.at)
        );
        for r in d.results.iter().filter(|r| !r.ok) {
            println!(
                "  {}: {}",
                r.channel,
                r.error.as_deref().unwrap_or("failed")
            );
        }
    }
}

fn outcome(results: &[ChannelResult]) -> String {
    results
        .iter()
        .map(|r| format!("{} {}", r.channel, if r.ok { "ok" } else { "failed" }))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_results(results: &[ChannelResult]) {
    for r in results {
        match &r.error {
            None => println!("{}: sent", r.channel),
            Some(e) => println!("{}: failed: {e}", r.channel),
        }
    }
}
