//! Notifications: what reposafe tells an admin when a job fails (or ends partial), in
//! a daily digest, and when asked to "send test". Two channels: e-mail over SMTP
//! ([`mail`], lettre with rustls: STARTTLS, implicit TLS or plain) and an outgoing
//! webhook with a Slack-compatible JSON body ([`webhook`]). This module only formats
//! and delivers; the engine decides when, keeps the settings (state, config-file
//! defaults) and seals the secrets (the SMTP password and the webhook URL, which for
//! Slack carries its own token) in the vault. No error or log line holds a secret.

pub mod mail;
pub mod webhook;

use crate::state::{Job, JobRecordResult, JobState, ResultStatus};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// What can go wrong while checking or delivering a notification.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A setting is wrong; names the field.
    #[error("field `{field}`: {message}")]
    Field { field: String, message: String },
    /// The SMTP server at `endpoint` (host:port) refused or could not be reached.
    #[error("e-mail via SMTP server {endpoint}: {reason}")]
    Smtp { endpoint: String, reason: String },
    /// The webhook at `origin` (never the full URL: it may hold a token) failed.
    #[error("webhook {origin}: {reason}")]
    Webhook { origin: String, reason: String },
}

fn field(field: &str, message: impl Into<String>) -> NotifyError {
    NotifyError::Field {
        field: field.to_string(),
        message: message.into(),
    }
}

/// Where and when to notify. The secrets (the SMTP password, and the webhook URL once
/// stored) are kept apart, sealed; `webhook_url` here is what a user typed or, in a
/// view, a masked form.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationSettings {
    /// Slack-compatible incoming-webhook URL (`{"text": …}` is POSTed to it).
    #[serde(default)]
    pub webhook_url: Option<String>,
    #[serde(default)]
    pub smtp: Option<SmtpSettings>,
    /// Also notify on partial jobs (failed jobs always notify).
    #[serde(default)]
    pub on_partial: bool,
    /// `HH:MM` in the daemon's time zone: a daily summary of the last 24 hours' jobs.
    #[serde(default)]
    pub daily_digest: Option<String>,
    /// The dashboard's address for links in messages (default: where the daemon listens).
    #[serde(default)]
    pub dashboard_url: Option<String>,
}

/// How to reach the SMTP server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: String,
    /// Default by `security`: 587 (starttls), 465 (tls), 25 (none).
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub security: SmtpSecurity,
    /// User name for SMTP AUTH (the password is sealed in the vault).
    #[serde(default)]
    pub username: Option<String>,
    /// For the config file: a file holding the password (read at each send).
    #[serde(default)]
    pub password_file: Option<String>,
    /// Sender address, e.g. `reposafe <backup@example.com>`.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// PEM of CA certificates trusted besides the system's (a private mail relay).
    #[serde(default)]
    pub ca_bundle_pem: Option<String>,
}

/// Transport security of the SMTP connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (required: refused if not offered).
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
    /// No encryption (a relay on localhost only).
    None,
}

impl SmtpSecurity {
    pub fn as_str(self) -> &'static str {
        match self {
            SmtpSecurity::Starttls => "starttls",
            SmtpSecurity::Tls => "tls",
            SmtpSecurity::None => "none",
        }
    }
}

impl std::str::FromStr for SmtpSecurity {
    type Err = NotifyError;
    fn from_str(s: &str) -> Result<Self, NotifyError> {
        match s {
            "starttls" => Ok(SmtpSecurity::Starttls),
            "tls" => Ok(SmtpSecurity::Tls),
            "none" => Ok(SmtpSecurity::None),
            _ => Err(field("smtp.security", "is not one of starttls, tls, none")),
        }
    }
}

impl SmtpSettings {
    /// The port used: the given one or the security's default.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        })
    }

    /// `host:port`, as errors name the server.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.port())
    }
}

impl NotificationSettings {
    /// Checks every field, naming the first wrong one.
    pub fn validate(&self) -> Result<(), NotifyError> {
        if let Some(url) = &self.webhook_url {
            webhook::check_url(url)?;
        }
        if let Some(url) = &self.dashboard_url {
            match url::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => return Err(field("dashboard_url", "is not an http(s) URL")),
            }
        }
        if let Some(at) = &self.daily_digest {
            digest_time(at)?;
        }
        if let Some(smtp) = &self.smtp {
            mail::validate(smtp)?;
        }
        Ok(())
    }

    /// Whether a job that ended in `state` is worth a message.
    pub fn wants(&self, state: JobState) -> bool {
        match state {
            JobState::Failed => true,
            JobState::Partial => self.on_partial,
            _ => false,
        }
    }
}

/// `HH:MM` → (hour, minute).
pub fn digest_time(at: &str) -> Result<(u8, u8), NotifyError> {
    let bad = || field("daily_digest", format!("{at:?} is not a time like 07:30"));
    let (h, m) = at.split_once(':').ok_or_else(bad)?;
    let (h, m): (u8, u8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 || at.len() != 5 {
        return Err(bad());
    }
    Ok((h, m))
}

/// The secrets of the channels, unsealed for one delivery.
#[derive(Default)]
pub struct Secrets {
    pub webhook_url: Option<SecretString>,
    pub smtp_password: Option<SecretString>,
}

impl Secrets {
    /// Whether a message would go anywhere: an SMTP server or a webhook URL is set.
    pub fn any_channel(&self, settings: &NotificationSettings) -> bool {
        settings.smtp.is_some() || self.webhook_url.is_some()
    }
}

/// One message, as both channels send it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub subject: String,
    pub text: String,
}

/// How one channel's delivery went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelResult {
    /// `email` or `webhook`.
    pub channel: String,
    pub ok: bool,
    #[serde(default)]
    pub error: Option<String>,
}

/// Sends `msg` on every configured channel; one result per channel (none when no
/// channel is set).
pub fn deliver(
    settings: &NotificationSettings,
    secrets: &Secrets,
    msg: &Message,
) -> Vec<ChannelResult> {
    let mut out = Vec::new();
    if let Some(smtp) = &settings.smtp {
        let r = mail::send(smtp, secrets.smtp_password.as_ref(), msg);
        out.push(result("email", r));
    }
    if let Some(url) = &secrets.webhook_url {
        out.push(result("webhook", webhook::send(url, msg)));
    }
    out
}

fn result(channel: &str, r: Result<(), NotifyError>) -> ChannelResult {
    ChannelResult {
        channel: channel.to_string(),
        ok: r.is_ok(),
        error: r.err().map(|e| e.to_string()),
    }
}

/// The message of a job that ended failed or partial: what it did, its state, its
/// error and each failed repository with the reason, and a link to its page.
pub fn job_message(job: &Job, results: &[JobRecordResult], link: Option<&str>) -> Message {
    let what = job.kind.describe();
    let subject = format!("reposafe: job {} {} ({what})", job.id, job.state);
    let mut text = format!("reposafe job {} ({what}) {}", job.id, job.state);
    let p = &job.progress;
    if p.repos_total > 0 {
        text.push_str(&format!(
            ": {} of {} repositories failed, {} new snapshots, {} unchanged",
            p.failed, p.repos_total, p.snapshots, p.unchanged
        ));
    }
    text.push('.');
    if let Some(e) = &job.error {
        text.push_str(&format!("\nError: {e}"));
    }
    let failed: Vec<&JobRecordResult> = results
        .iter()
        .filter(|r| matches!(r.status, ResultStatus::Failed | ResultStatus::Partial))
        .collect();
    if !failed.is_empty() {
        text.push_str("\nFailed repositories:");
        for r in failed.iter().take(50) {
            let reason = r.reason.as_deref().unwrap_or("no reason recorded");
            text.push_str(&format!("\n- {}/{}: {reason}", r.connection, r.repository));
        }
        if failed.len() > 50 {
            text.push_str(&format!("\n… and {} more", failed.len() - 50));
        }
    }
    if let Some(link) = link {
        text.push_str(&format!("\nDetails: {link}/jobs/{}", job.id));
    }
    Message { subject, text }
}

/// The daily digest of `jobs` (those finished in the last 24 hours) and of what needs
/// attention now (`warnings`, as the overview shows them).
pub fn digest_message(jobs: &[Job], warnings: &[String], link: Option<&str>) -> Message {
    let count = |s: JobState| jobs.iter().filter(|j| j.state == s).count();
    let (ok, partial, failed) = (
        count(JobState::Succeeded),
        count(JobState::Partial),
        count(JobState::Failed),
    );
    let mut subject = format!(
        "reposafe daily digest: {} jobs, {failed} failed, {partial} partial",
        jobs.len()
    );
    if !warnings.is_empty() {
        subject.push_str(&format!("; {} to act on", warnings.len()));
    }
    let mut text = format!(
        "reposafe, last 24 hours: {} jobs finished: {ok} succeeded, {partial} partial, {failed} failed.",
        jobs.len()
    );
    for j in jobs.iter().filter(|j| j.state != JobState::Succeeded) {
        text.push_str(&format!(
            "\n- job {} ({}) {}",
            j.id,
            j.kind.describe(),
            j.state
        ));
        if let Some(e) = &j.error {
            text.push_str(&format!(": {e}"));
        }
    }
    if !warnings.is_empty() {
        text.push_str("\nTo act on now:");
        for w in warnings {
            text.push_str(&format!("\n- {w}"));
        }
    }
    if let Some(link) = link {
        text.push_str(&format!("\nJobs: {link}/jobs"));
        if !warnings.is_empty() {
            text.push_str(&format!("\nOverview: {link}/"));
        }
    }
    Message { subject, text }
}

/// The alert of disks that ran low (`warnings`: each disk with what it has free), with
/// a link to the overview.
pub fn low_space_message(warnings: &[&str], link: Option<&str>) -> Message {
    let mut text =
        "reposafe: a disk it writes to is running out of space; backups fail once it is full."
            .to_string();
    for w in warnings {
        text.push_str(&format!("\n- {w}"));
    }
    if let Some(link) = link {
        text.push_str(&format!("\nOverview: {link}/"));
    }
    Message {
        subject: "reposafe: disk space low".into(),
        text,
    }
}

/// The message of "send test".
pub fn test_message(link: Option<&str>) -> Message {
    let mut text = "reposafe test notification: this channel works.".to_string();
    if let Some(link) = link {
        text.push_str(&format!("\nDashboard: {link}/"));
    }
    Message {
        subject: "reposafe test notification".into(),
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_field_by_field() {
        let mut s = NotificationSettings {
            daily_digest: Some("7:30".into()),
            ..Default::default()
        };
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("daily_digest"));
        s.daily_digest = Some("07:30".into());
        assert!(s.validate().is_ok());
        assert_eq!(digest_time("23:59").unwrap(), (23, 59));
        assert!(digest_time("24:00").is_err());
        s.webhook_url = Some("ftp://x".into());
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("webhook_url"));
        s.webhook_url = None;
        s.smtp = Some(SmtpSettings {
            host: "mail.example.com".into(),
            from: "reposafe <backup@example.com>".into(),
            to: vec![],
            ..Default::default()
        });
        assert!(s.validate().unwrap_err().to_string().contains("smtp.to"));
        assert_eq!(
            s.smtp.as_ref().map(|m| m.endpoint()).unwrap(),
            "mail.example.com:587"
        );
    }

    #[test]
    fn failed_and_partial_jobs_notify_as_configured() {
        let mut s = NotificationSettings::default();
        assert!(s.wants(JobState::Failed));
        assert!(!s.wants(JobState::Partial));
        assert!(!s.wants(JobState::Succeeded));
        s.on_partial = true;
        assert!(s.wants(JobState::Partial));
        assert!(!s.wants(JobState::Cancelled));
    }
}
