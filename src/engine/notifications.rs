//! Notification settings and deliveries: where the settings come from (stored in the
//! state's `settings_v1` by the dashboard/API/CLI; until then the config file's
//! `[notifications]` table), the secrets sealed in the vault (the SMTP password and
//! the webhook URL), the message of a job that ended failed (or partial, when asked),
//! sent on a thread of its own so a slow mail server never holds a job worker, the
//! daily digest, the alert of a disk running low, and "send test". The last
//! delivery's outcome is stored and shown.

use super::{Context, EngineError, Jobs};
use crate::notify::{self, ChannelResult, Message, NotificationSettings, NotifyError, Secrets};
use crate::state::{Job, JobState};
use crate::vault::{Credential, CredentialKind};
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

const KEY: &str = "notifications";
const LAST_DELIVERY: &str = "notifications.last_delivery";
const LAST_DIGEST: &str = "notifications.last_digest";
/// The disks the last low-space alert named (JSON list of paths).
const LOW_DISKS: &str = "notifications.low_disks";
/// How often the daemon looks at the disks for the low-space alert.
const DISK_CHECK_EVERY: Duration = Duration::from_secs(60);

/// The settings as stored: `settings.webhook_url` is always empty here, the URL and
/// the password are sealed (base64 of the age ciphertext).
#[derive(Default, Serialize, Deserialize)]
struct Stored {
    settings: NotificationSettings,
    #[serde(default)]
    webhook_sealed: Option<String>,
    #[serde(default)]
    password_sealed: Option<String>,
}

/// Where the settings in force come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SettingsSource {
    /// Set through the dashboard, the API or the CLI (kept in the data dir); the
    /// config file's `[notifications]` no longer applies.
    Stored,
    /// The config file's `[notifications]` table (nothing was set yet).
    ConfigFile,
    /// Nothing is set: no notification is sent.
    None,
}

/// One delivery: what was sent and how each channel took it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// `job 12 failed`, `daily digest`, `test`.
    pub what: String,
    pub results: Vec<ChannelResult>,
}

impl Delivery {
    /// The failed channels' errors, if any.
    pub fn failures(&self) -> Vec<String> {
        self.results
            .iter()
            .filter_map(|r| r.error.clone())
            .collect()
    }
}

/// The notification settings as shown: never a secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NotificationView {
    /// In force; `webhook_url` masked to its origin.
    pub settings: NotificationSettings,
    pub source: SettingsSource,
    pub smtp_password_set: bool,
    pub last_delivery: Option<Delivery>,
}

/// `PUT /api/v1/notifications`: replaces the settings. Secrets that cannot be read
/// back are kept when not given: the stored webhook URL when `webhook_url` is the
/// masked form a view shows, the SMTP password when `smtp_password` is absent (unless
/// `clear_smtp_password`).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetNotifications {
    pub settings: NotificationSettings,
    #[serde(default, serialize_with = "expose_opt")]
    pub smtp_password: Option<SecretString>,
    #[serde(default)]
    pub clear_smtp_password: bool,
}

fn expose_opt<S: Serializer>(s: &Option<SecretString>, ser: S) -> Result<S::Ok, S::Error> {
    match s {
        Some(s) => ser.serialize_some(s.expose_secret()),
        None => ser.serialize_none(),
    }
}

impl From<NotifyError> for EngineError {
    fn from(e: NotifyError) -> EngineError {
        match e {
            NotifyError::Field { field, message } => EngineError::Field { field, message },
            other => EngineError::Invalid(other.to_string()),
        }
    }
}

/// The daemon's side of notifications: the config file's defaults, the dashboard
/// address for links, and the deliveries in flight.
#[derive(Default)]
pub struct Notifications {
    defaults: Mutex<Option<NotificationSettings>>,
    base_url: Mutex<Option<String>>,
    pending: Mutex<Vec<JoinHandle<()>>>,
    /// When the disks were last looked at for the low-space alert.
    disks_checked: Mutex<Option<Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Notifications {
    /// The config file's `[notifications]` (used until settings are stored).
    pub fn set_defaults(&self, defaults: Option<NotificationSettings>) {
        *lock(&self.defaults) = defaults;
    }

    /// Where the dashboard is, for links (the daemon's URL).
    pub fn set_base_url(&self, url: String) {
        *lock(&self.base_url) = Some(url);
    }

    fn link(&self, settings: &NotificationSettings) -> Option<String> {
        settings
            .dashboard_url
            .clone()
            .or_else(|| lock(&self.base_url).clone())
            .map(|u| u.trim_end_matches('/').to_string())
    }

    /// The settings in force and their source (no secret unsealed).
    fn current(
        &self,
        ctx: &Context,
    ) -> Result<(NotificationSettings, SettingsSource, Option<Stored>), EngineError> {
        if let Some(stored) = load(ctx)? {
            return Ok((
                stored.settings.clone(),
                SettingsSource::Stored,
                Some(stored),
            ));
        }
        Ok(match lock(&self.defaults).clone() {
            Some(d) => (d, SettingsSource::ConfigFile, None),
            None => (NotificationSettings::default(), SettingsSource::None, None),
        })
    }

    /// The settings in force with their secrets unsealed.
    fn resolve(&self, ctx: &Context) -> Result<(NotificationSettings, Secrets), EngineError> {
        let (settings, _, stored) = self.current(ctx)?;
        let Some(stored) = stored else {
            let webhook_url = settings.webhook_url.clone().map(SecretString::from);
            let secrets = Secrets {
                webhook_url,
                smtp_password: None,
            };
            return Ok((settings, secrets));
        };
        let secrets = Secrets {
            webhook_url: unseal(ctx, stored.webhook_sealed.as_deref())?,
            smtp_password: unseal(ctx, stored.password_sealed.as_deref())?,
        };
        Ok((settings, secrets))
    }

    /// The view of the settings.
    pub fn view(&self, ctx: &Context) -> Result<NotificationView, EngineError> {
        let (mut settings, source, stored) = self.current(ctx)?;
        let smtp_password_set = match &stored {
            Some(s) => {
                if s.webhook_sealed.is_some() {
                    let url = unseal(ctx, s.webhook_sealed.as_deref())?;
                    settings.webhook_url = url.map(|u| notify::webhook::masked(u.expose_secret()));
                }
                s.password_sealed.is_some()
            }
            None => {
                settings.webhook_url = settings.webhook_url.map(|u| notify::webhook::masked(&u));
                settings
                    .smtp
                    .as_ref()
                    .is_some_and(|m| m.password_file.is_some())
            }
        };
        Ok(NotificationView {
            settings,
            source,
            smtp_password_set,
            last_delivery: last_delivery(ctx)?,
        })
    }

    /// Stores new settings (see [`SetNotifications`] for the secrets kept).
    pub fn set(
        &self,
        ctx: &Context,
        req: SetNotifications,
    ) -> Result<NotificationView, EngineError> {
        let mut settings = req.settings;
        let old = load(ctx)?.unwrap_or_default();
        let old_url = unseal(ctx, old.webhook_sealed.as_deref())?;
        let url = match settings.webhook_url.take() {
            Some(u) if u.trim().is_empty() => None,
            Some(u) => match &old_url {
                Some(old) if notify::webhook::masked(old.expose_secret()) == u => Some(old.clone()),
                _ => Some(SecretString::from(u.trim().to_string())),
            },
            None => None,
        };
        let mut check = settings.clone();
        check.webhook_url = url.as_ref().map(|u| u.expose_secret().to_string());
        check.validate()?;
        let password = match (req.smtp_password, req.clear_smtp_password) {
            (_, true) => None,
            (Some(p), false) => {
                if p.expose_secret().contains(['\n', '\r']) || p.expose_secret().is_empty() {
                    return Err(EngineError::Field {
                        field: "smtp_password".into(),
                        message: "is empty or holds a line break".into(),
                    });
                }
                Some(seal(ctx, &p)?)
            }
            (None, false) => old.password_sealed,
        };
        let stored = Stored {
            password_sealed: password.filter(|_| settings.smtp.is_some()),
            webhook_sealed: url.map(|u| seal(ctx, &u)).transpose()?,
            settings,
        };
        let json = serde_json::to_vec(&stored).map_err(|e| EngineError::Internal(e.to_string()))?;
        ctx.state.put_setting(KEY, &json)?;
        self.view(ctx)
    }

    /// Sends a test message on every channel now; one result per channel.
    pub fn test(&self, ctx: &Context) -> Result<Vec<ChannelResult>, EngineError> {
        let (settings, secrets) = self.resolve(ctx)?;
        if !secrets.any_channel(&settings) {
            return Err(EngineError::Invalid(
                "no notification channel is set: give an SMTP server or a webhook URL first".into(),
            ));
        }
        let msg = notify::test_message(self.link(&settings).as_deref());
        Ok(deliver(ctx, &settings, &secrets, &msg, "test".into()))
    }

    /// Called when a job ended: a failed (or, when asked, partial) job is reported on
    /// a thread of its own; errors are logged and kept as the last delivery.
    pub fn job_finished(self: &Arc<Self>, ctx: &Arc<Context>, job: &Job) {
        if !matches!(job.state, JobState::Failed | JobState::Partial) {
            return;
        }
        let id = job.id;
        let (ctx, job, me) = (ctx.clone(), job.clone(), self.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("notify-job-{}", job.id))
            .spawn(move || {
                if let Err(e) = me.send_job(&ctx, &job) {
                    tracing::warn!("job {}: cannot send its notification: {e}", job.id);
                }
            });
        match spawned {
            Ok(h) => {
                let mut pending = lock(&self.pending);
                pending.retain(|h| !h.is_finished());
                pending.push(h);
            }
            Err(e) => tracing::warn!("job {id}: cannot start the notification thread: {e}"),
        }
    }

    fn send_job(&self, ctx: &Context, job: &Job) -> Result<(), EngineError> {
        let (settings, secrets) = self.resolve(ctx)?;
        if !settings.wants(job.state) || !secrets.any_channel(&settings) {
            return Ok(());
        }
        let results = ctx.state.job_results(job.id)?;
        let msg = notify::job_message(job, &results, self.link(&settings).as_deref());
        let what = format!("job {} {}", job.id, job.state);
        deliver(ctx, &settings, &secrets, &msg, what);
        Ok(())
    }

    /// Waits for the deliveries in flight (the CLI before it exits).
    pub fn flush(&self) {
        let pending: Vec<JoinHandle<()>> = lock(&self.pending).drain(..).collect();
        for h in pending {
            let _ = h.join();
        }
    }

    /// The daily digest: sent once a day in the hour after the configured `HH:MM`
    /// (the daemon's local time), summing up the jobs finished in the last 24 hours
    /// and repeating what the overview warns of (a disk that stays low, an archive
    /// that cannot be used), so it is said again every day until it is fixed.
    pub fn tick(self: &Arc<Self>, jobs: &Jobs, now: OffsetDateTime) {
        let ctx = jobs.context();
        self.check_disks(ctx);
        let Ok((settings, _, _)) = self.current(ctx) else {
            return;
        };
        let Some(Ok((h, m))) = settings.daily_digest.as_deref().map(notify::digest_time) else {
            return;
        };
        let local = chrono::DateTime::from_timestamp(now.unix_timestamp(), 0)
            .map(|t| t.with_timezone(&chrono::Local).naive_local());
        let Some(local) = local else { return };
        let last = ctx.state.setting(LAST_DIGEST).ok().flatten();
        let last = last.as_deref().map(String::from_utf8_lossy);
        let Some(today) = digest_due((h, m), local, last.as_deref()) else {
            return;
        };
        if let Err(e) = ctx.state.put_setting(LAST_DIGEST, today.as_bytes()) {
            tracing::warn!("daily digest: cannot record it: {e}");
            return;
        }
        let since = now - time::Duration::hours(24);
        let finished: Vec<Job> = match jobs.list(10_000) {
            Ok(all) => all
                .into_iter()
                .filter(|j| j.finished_at.is_some_and(|f| f > since))
                .collect(),
            Err(e) => return tracing::warn!("daily digest: cannot list jobs: {e}"),
        };
        let (ctx, me) = (ctx.clone(), self.clone());
        let _ = std::thread::Builder::new()
            .name("notify-digest".into())
            .spawn(move || match me.resolve(&ctx) {
                Ok((settings, secrets)) if !secrets.any_channel(&settings) => {}
                Ok((settings, secrets)) => {
                    let warnings = super::overview::warnings_now(&ctx).unwrap_or_else(|e| {
                        vec![format!("what needs attention could not be read: {e}")]
                    });
                    let link = me.link(&settings);
                    let msg = notify::digest_message(&finished, &warnings, link.as_deref());
                    deliver(&ctx, &settings, &secrets, &msg, "daily digest".into());
                }
                Err(e) => tracing::warn!("daily digest: {e}"),
            });
    }
}

impl Notifications {
    /// The low-space alert, looked at most every [`DISK_CHECK_EVERY`] on a thread of
    /// its own (see [`Notifications::alert_low_disks`]).
    fn check_disks(self: &Arc<Self>, ctx: &Arc<Context>) {
        // Not before the daemon listens: the message's link would be missing.
        if lock(&self.base_url).is_none() {
            return;
        }
        {
            let mut last = lock(&self.disks_checked);
            if last.is_some_and(|t| t.elapsed() < DISK_CHECK_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let (ctx, me) = (ctx.clone(), self.clone());
        let spawned = std::thread::Builder::new()
            .name("notify-disks".into())
            .spawn(move || {
                if let Err(e) = me.alert_low_disks(&ctx) {
                    tracing::warn!("low disk space alert: {e}");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the low disk space alert's thread: {e}");
        }
    }

    /// Sends one message naming each disk that ran low since the last alert (a disk
    /// that recovered and runs low again is named again). The disks named are
    /// recorded once a channel took the message, so one set up later still alerts.
    fn alert_low_disks(&self, ctx: &Context) -> Result<(), EngineError> {
        use super::disk_space;
        let place = super::archive_location::recorded_place(ctx.data_dir())?;
        let low = disk_space::low_space(&disk_space::watched(ctx.data_dir(), &place));
        let alerted: Vec<PathBuf> = ctx
            .state
            .setting(LOW_DISKS)?
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        let fresh: Vec<&str> = disk_space::newly_low(&low, &alerted)
            .into_iter()
            .map(|l| l.warning.as_str())
            .collect();
        if !fresh.is_empty() {
            let (settings, secrets) = self.resolve(ctx)?;
            if !secrets.any_channel(&settings) {
                return Ok(());
            }
            let msg = notify::low_space_message(&fresh, self.link(&settings).as_deref());
            deliver(ctx, &settings, &secrets, &msg, "low disk space".into());
        }
        let low_now: Vec<PathBuf> = low.into_iter().map(|l| l.path).collect();
        if low_now != alerted {
            let json = serde_json::to_vec(&low_now)
                .map_err(|e| EngineError::Internal(format!("{LOW_DISKS}: {e}")))?;
            ctx.state.put_setting(LOW_DISKS, &json)?;
        }
        Ok(())
    }
}

/// The day to send the digest for, when one is due at local time `local`: in the hour
/// after `at` (hour, minute), unless one was sent that day (`last`).
fn digest_due(at: (u8, u8), local: chrono::NaiveDateTime, last: Option<&str>) -> Option<String> {
    use chrono::Timelike;
    let start = u32::from(at.0) * 60 + u32::from(at.1);
    let t = local.hour() * 60 + local.minute();
    let today = local.date().to_string();
    (t >= start && t < start + 60 && last != Some(today.as_str())).then_some(today)
}

/// Delivers, logs each failure and stores the outcome as the last delivery.
fn deliver(
    ctx: &Context,
    settings: &NotificationSettings,
    secrets: &Secrets,
    msg: &Message,
    what: String,
) -> Vec<ChannelResult> {
    let results = notify::deliver(settings, secrets, msg);
    for r in results.iter().filter(|r| !r.ok) {
        tracing::warn!(
            "notification ({what}) by {}: {}",
            r.channel,
            r.error.as_deref().unwrap_or("failed")
        );
    }
    let delivery = Delivery {
        at: OffsetDateTime::now_utc(),
        what,
        results: results.clone(),
    };
    match serde_json::to_vec(&delivery) {
        Ok(json) => {
            if let Err(e) = ctx.state.put_setting(LAST_DELIVERY, &json) {
                tracing::warn!("cannot record the notification's outcome: {e}");
            }
        }
        Err(e) => tracing::warn!("cannot record the notification's outcome: {e}"),
    }
    results
}

fn load(ctx: &Context) -> Result<Option<Stored>, EngineError> {
    match ctx.state.setting(KEY)? {
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            EngineError::Internal(format!("stored notification settings are unreadable: {e}"))
        }),
        None => Ok(None),
    }
}

/// The outcome of the last delivery, if any was made.
pub fn last_delivery(ctx: &Context) -> Result<Option<Delivery>, EngineError> {
    Ok(ctx
        .state
        .setting(LAST_DELIVERY)?
        .and_then(|b| serde_json::from_slice(&b).ok()))
}

fn seal(ctx: &Context, secret: &SecretString) -> Result<String, EngineError> {
    let sealed = ctx.vault.seal(&Credential {
        kind: CredentialKind::Basic,
        identity: Some("notifications".into()),
        secret: secret.clone(),
    })?;
    Ok(base64::engine::general_purpose::STANDARD.encode(sealed))
}

fn unseal(ctx: &Context, sealed: Option<&str>) -> Result<Option<SecretString>, EngineError> {
    let Some(b64) = sealed else { return Ok(None) };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| EngineError::Internal(format!("stored notification secret: {e}")))?;
    Ok(Some(ctx.vault.unseal(&bytes)?.secret))
}

/// The overview's warning when the last notification failed on some channel.
pub(super) fn delivery_warning(ctx: &Context) -> Result<Option<String>, EngineError> {
    Ok(last_delivery(ctx)?.and_then(|d| {
        let failures = d.failures();
        (!failures.is_empty()).then(|| {
            format!(
                "notification ({}) at {} failed: {}",
                d.what,
                crate::fmt::fmt_time(d.at),
                failures.join("; ")
            )
        })
    }))
}

/// The sealed secrets of the notification settings (for the vault's key check).
pub(super) fn sealed_secrets(state: &crate::state::State) -> Vec<Vec<u8>> {
    let Ok(Some(bytes)) = state.setting(KEY) else {
        return Vec::new();
    };
    let Ok(stored) = serde_json::from_slice::<Stored>(&bytes) else {
        return Vec::new();
    };
    [stored.webhook_sealed, stored.password_sealed]
        .into_iter()
        .flatten()
        .filter_map(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::SmtpSettings;

    fn smtp() -> SmtpSettings {
        SmtpSettings {
            host: "mail.example.com".into(),
            username: Some("backup".into()),
            from: "backup@example.com".into(),
            to: vec!["ops@example.com".into()],
            ..Default::default()
        }
    }

    #[test]
    fn secrets_are_sealed_masked_in_the_view_and_kept_when_sent_back() {
        let dir = tempfile::tempdir().expect("tmp");
        let ctx = Context::open(dir.path()).expect("open");
        let n = Notifications::default();
        assert_eq!(n.view(&ctx).expect("view").source, SettingsSource::None);
        n.set_defaults(Some(NotificationSettings {
            on_partial: true,
            ..Default::default()
        }));
        assert_eq!(
            n.view(&ctx).expect("view").source,
            SettingsSource::ConfigFile
        );

        let url = "https://hooks.example.com/services/T1/B2/sekrit-token";
        let set = SetNotifications {
            settings: NotificationSettings {
                webhook_url: Some(url.into()),
                smtp: Some(smtp()),
                ..Default::default()
            },
            smtp_password: Some(SecretString::from("pw-4711")),
            clear_smtp_password: false,
        };
        let v = n.set(&ctx, set).expect("set");
        assert_eq!(v.source, SettingsSource::Stored);
        assert_eq!(
            v.settings.webhook_url.as_deref(),
            Some("https://hooks.example.com/…")
        );
        assert!(v.smtp_password_set);
        assert!(!v.settings.on_partial, "stored settings replace the file's");

        // The view sent back unchanged keeps both secrets.
        let again = SetNotifications {
            settings: v.settings.clone(),
            ..Default::default()
        };
        n.set(&ctx, again).expect("set again");
        let (_, secrets) = n.resolve(&ctx).expect("resolve");
        assert_eq!(secrets.webhook_url.expect("url").expose_secret(), url);
        assert_eq!(
            secrets.smtp_password.expect("pw").expose_secret(),
            "pw-4711"
        );
        let raw = ctx.state.setting(KEY).expect("read").expect("stored");
        let raw = String::from_utf8_lossy(&raw);
        assert!(!raw.contains("sekrit") && !raw.contains("pw-4711"), "{raw}");
        assert_eq!(sealed_secrets(&ctx.state).len(), 2);

        // An empty URL removes the webhook; a wrong field is named and nothing changes.
        let mut s = v.settings.clone();
        s.webhook_url = Some(String::new());
        let cleared = SetNotifications {
            settings: s,
            clear_smtp_password: true,
            ..Default::default()
        };
        let v = n.set(&ctx, cleared).expect("clear");
        assert_eq!(v.settings.webhook_url, None);
        assert!(!v.smtp_password_set);
        let bad = SetNotifications {
            settings: NotificationSettings {
                daily_digest: Some("25:00".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let e = n.set(&ctx, bad).expect_err("bad time");
        assert_eq!(e.field(), Some("daily_digest"));
        assert!(n.view(&ctx).expect("view").settings.smtp.is_some());
    }

    #[test]
    fn the_daily_digest_is_due_once_a_day_in_the_hour_after_its_time() {
        let t = |d: u32, h: u32, m: u32| {
            chrono::NaiveDate::from_ymd_opt(2026, 11, d)
                .and_then(|d| d.and_hms_opt(h, m, 0))
                .expect("time")
        };
        assert_eq!(digest_due((7, 30), t(30, 7, 29), None), None, "not yet");
        let due = digest_due((7, 30), t(30, 7, 30), None);
        assert_eq!(due.as_deref(), Some("2026-11-30"));
        assert_eq!(digest_due((7, 30), t(30, 8, 29), Some("2026-11-29")), due);
        assert_eq!(
            digest_due((7, 30), t(30, 8, 0), due.as_deref()),
            None,
            "sent"
        );
        assert_eq!(
            digest_due((7, 30), t(30, 8, 30), None),
            None,
            "an hour late"
        );

        let msg = notify::digest_message(&[], &[], Some("http://127.0.0.1:8720"));
        assert!(
            msg.subject.ends_with("0 jobs, 0 failed, 0 partial"),
            "{msg:?}"
        );
        assert!(
            msg.text.ends_with("Jobs: http://127.0.0.1:8720/jobs"),
            "{msg:?}"
        );
        let low = "the disk of the data dir (/d): 1.0 GiB free of 100.0 GiB (1%)".to_string();
        let msg = notify::digest_message(
            &[],
            std::slice::from_ref(&low),
            Some("http://127.0.0.1:8720"),
        );
        assert!(msg.subject.ends_with("; 1 to act on"), "{msg:?}");
        assert!(
            msg.text.contains(&format!("\nTo act on now:\n- {low}\n")),
            "{msg:?}"
        );
        assert!(
            msg.text.ends_with("\nOverview: http://127.0.0.1:8720/"),
            "{msg:?}"
        );
    }

    #[test]
    fn send_test_without_a_channel_says_what_to_set() {
        let dir = tempfile::tempdir().expect("tmp");
        let ctx = Context::open(dir.path()).expect("open");
        let e = Notifications::default().test(&ctx).expect_err("no channel");
        assert!(e.to_string().contains("no notification channel"), "{e}");
    }
}
