//! Push-triggered backups. Each connection has a webhook secret (32 random bytes as
//! hex, made on first ask, sealed in the vault, kept in the state) that Bitbucket
//! signs its webhook bodies with (`X-Hub-Signature: sha256=<hex HMAC-SHA256 of the
//! raw body>`, checked here in constant time). An accepted push goes to the
//! [`Debouncer`]: a burst of pushes to one repository becomes one backup job of that
//! repository, queued `delay` after the last push of the burst.

use super::audit::{self, Actor};
use super::{Context, EngineError, Jobs};
use crate::providers::WebhookRegistered;
use crate::state::{JobKind, JobState, JobTarget, Trigger};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The default debounce delay (`hook_delay_secs`).
pub const DEFAULT_DELAY: Duration = Duration::from_secs(30);
/// At most this many repositories wait for their debounce delay at once.
const MAX_PENDING: usize = 10_000;

/// What to paste into Bitbucket's webhook form.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WebhookInfo {
    pub connection: String,
    /// `/hooks/NAME`, under the daemon's URL.
    pub path: String,
    /// The daemon's URL + `path`, when the answer came through the daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(serialize_with = "expose")]
    pub secret: SecretString,
    /// Seconds a push waits for more pushes before its backup is queued.
    pub delay_secs: u64,
}

fn expose<S: Serializer>(s: &SecretString, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.expose_secret())
}

/// A push accepted: the backup of `queued` (`scope/slug`) is queued after `after_secs`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HookQueued {
    pub queued: String,
    pub after_secs: u64,
}

/// What registering a connection's push webhook in its provider did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WebhookRegistration {
    pub connection: String,
    /// The URL the webhooks post to.
    pub url: String,
    /// Each scope's webhook, made or updated.
    pub registered: Vec<WebhookRegistered>,
    /// The scopes where it failed, and why.
    #[serde(default)]
    pub failed: Vec<ScopeFailure>,
}

/// A scope whose webhook could not be registered.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScopeFailure {
    pub scope: String,
    pub error: String,
}

/// The URL of the connection's webhook under `base_url` (the daemon's address as
/// the server reaches it).
pub fn hook_url(base_url: &str, connection: &str) -> Result<String, EngineError> {
    let base = base_url.trim().trim_end_matches('/');
    let bad = |why: &str| EngineError::Field {
        field: "url".into(),
        message: format!("{base_url:?} {why}"),
    };
    let parsed = url::Url::parse(base).map_err(|e| bad(&format!("is not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(bad("must be an http:// or https:// address of this daemon"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() || !parsed.username().is_empty() {
        return Err(bad("must be a plain address (no user, query or fragment)"));
    }
    Ok(format!("{base}/hooks/{connection}"))
}

/// Registers the connection's push webhook (posting to `base_url`'s
/// `/hooks/NAME`, signed with its secret) on every scope the connection
/// covers, through its provider. Refused, before any request, for a read-only
/// connection. Fails when no scope took it, with the first scope's error.
pub fn register(
    ctx: &Context,
    connection: &str,
    base_url: &str,
) -> Result<WebhookRegistration, EngineError> {
    let conn = ctx.state.connection(connection)?;
    if conn.read_only {
        return Err(EngineError::Field {
            field: "connection".into(),
            message: format!(
                "connection {connection} is read-only (read_only = true): reposafe never writes \
                 to it, so it cannot register the webhook; add it in Bitbucket by hand with \
                 the URL and secret of `reposafe connection webhook {connection}`"
            ),
        });
    }
    let url = hook_url(base_url, connection)?;
    let secret = secret(ctx, connection, true)?
        .ok_or_else(|| EngineError::Internal("the webhook secret was not stored".into()))?;
    let cred = ctx
        .vault
        .unseal(&ctx.state.sealed_credential(&conn.name)?)?;
    let tls = super::connections::tls_for(ctx, &conn.name)?;
    let gate = super::connections::gate_for(ctx, &conn, cred, &tls)?.allowing_writes();
    let session = ctx.providers.get(&conn.provider)?.session(
        &conn.settings,
        conn.credential_kind,
        Arc::new(gate),
    );
    let mut registered = Vec::new();
    let mut errors = Vec::new();
    for scope in session.list_scopes()? {
        match session.register_webhook(&scope.key, &url, secret.clone(), HOOK_DESCRIPTION) {
            Ok(r) => registered.push(r),
            Err(e) => errors.push((scope.key, e)),
        }
    }
    if registered.is_empty() && !errors.is_empty() {
        let (_, first) = errors.swap_remove(0);
        return Err(first.into());
    }
    Ok(WebhookRegistration {
        connection: connection.to_string(),
        url,
        registered,
        failed: errors
            .into_iter()
            .map(|(scope, e)| ScopeFailure {
                scope,
                error: e.to_string(),
            })
            .collect(),
    })
}

/// The webhook's name in the server's list.
const HOOK_DESCRIPTION: &str = "reposafe push-triggered backups";

/// The connection's webhook secret, made and stored on first ask (`create`).
pub fn secret(
    ctx: &Context,
    connection: &str,
    create: bool,
) -> Result<Option<SecretString>, EngineError> {
    if let Some(sealed) = ctx.state.webhook_secret(connection)? {
        return Ok(Some(ctx.vault.unseal_secret(&sealed)?));
    }
    ctx.state.connection(connection)?;
    if !create {
        return Ok(None);
    }
    let fresh = new_secret();
    // Two first asks at once: the first stored wins, both answer it.
    if !ctx
        .state
        .set_webhook_secret(connection, &ctx.vault.seal_secret(&fresh)?, true)?
    {
        return secret(ctx, connection, false);
    }
    Ok(Some(fresh))
}

/// Replaces the connection's webhook secret (the old one stops working at once).
pub fn rotate(ctx: &Context, connection: &str) -> Result<SecretString, EngineError> {
    let fresh = new_secret();
    ctx.state
        .set_webhook_secret(connection, &ctx.vault.seal_secret(&fresh)?, false)?;
    Ok(fresh)
}

fn new_secret() -> SecretString {
    let mut bytes = [0u8; 32];
    rand::Rng::fill(&mut rand::rngs::OsRng, &mut bytes[..]);
    SecretString::from(hex::encode(bytes))
}

/// Why a signature was refused (never showing the secret or the expected value).
pub fn signature_problem(
    secret: &SecretString,
    body: &[u8],
    header: Option<&str>,
) -> Option<String> {
    let Some(header) = header.map(str::trim) else {
        return Some("no X-Hub-Signature header (set the webhook's secret in Bitbucket)".into());
    };
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return Some("X-Hub-Signature is not `sha256=<hex>`".into());
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return Some("X-Hub-Signature is not `sha256=<hex>`".into());
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes()) else {
        return Some("the webhook secret cannot key an HMAC".into());
    };
    mac.update(body);
    // `verify_slice` compares in constant time.
    match mac.verify_slice(&sig) {
        Ok(()) => None,
        Err(_) => Some(
            "X-Hub-Signature does not match the body and this connection's webhook secret".into(),
        ),
    }
}

/// A repository name as a push names it: `scope/slug`, printable, not too long.
pub fn check_repository(repository: &str) -> Result<(), EngineError> {
    let ok = repository.len() <= 512
        && !repository.chars().any(char::is_control)
        && repository
            .split_once('/')
            .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty() && !b.contains('/'));
    if ok {
        return Ok(());
    }
    Err(EngineError::Field {
        field: "repository".into(),
        message: "the push names no repository as scope/slug".into(),
    })
}

/// The name the state knows the repository by (Bitbucket's case may differ), else as given.
pub fn known_name(
    ctx: &Context,
    connection: &str,
    repository: &str,
) -> Result<String, EngineError> {
    let known = ctx.state.repositories(Some(connection))?;
    Ok(known
        .into_iter()
        .map(|r| r.full_name)
        .find(|n| n.eq_ignore_ascii_case(repository))
        .unwrap_or_else(|| repository.to_string()))
}

type Key = (String, String);

/// Pushes waiting for their delay, and whether the thread that queues them runs.
#[derive(Default)]
struct Pending {
    due: HashMap<Key, Instant>,
    started: bool,
}

/// A burst of pushes to one repository → one backup, queued `delay` after the last.
pub struct Debouncer {
    pending: Mutex<Pending>,
    wake: Condvar,
    delay_ms: AtomicU64,
}

impl Debouncer {
    pub fn new(delay: Duration) -> Arc<Debouncer> {
        Arc::new(Debouncer {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            delay_ms: AtomicU64::new(delay.as_millis() as u64),
        })
    }

    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms.load(Ordering::Relaxed))
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        // Plain inserts and removes: a panic cannot leave the map inconsistent.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes a push; its backup is queued on `jobs` `delay` after the last push.
    pub fn push(
        self: &Arc<Self>,
        jobs: &Arc<Jobs>,
        connection: &str,
        repository: &str,
    ) -> Result<Duration, EngineError> {
        let delay = self.delay();
        let key = (connection.to_string(), repository.to_string());
        let mut p = self.lock();
        if p.due.len() >= MAX_PENDING && !p.due.contains_key(&key) {
            return Err(EngineError::Conflict(format!(
                "{MAX_PENDING} repositories already wait for their push-triggered backup; try again later"
            )));
        }
        p.due.insert(key, Instant::now() + delay);
        if !p.started {
            let (me, jobs) = (self.clone(), jobs.clone());
            std::thread::Builder::new()
                .name("hook-debounce".into())
                .spawn(move || me.run(&jobs))
                .map_err(|e| {
                    EngineError::Internal(format!("cannot start the webhook thread: {e}"))
                })?;
            p.started = true;
        }
        drop(p);
        self.wake.notify_all();
        Ok(delay)
    }

    /// Queues each repository whose delay has passed, for ever (the daemon's life).
    fn run(&self, jobs: &Arc<Jobs>) {
        loop {
            for (connection, repository) in self.next_due() {
                submit(jobs, &connection, &repository);
            }
        }
    }

    /// Waits until some repositories' delays have passed, and takes them.
    fn next_due(&self) -> Vec<Key> {
        let mut p = self.lock();
        loop {
            let now = Instant::now();
            let ready: Vec<Key> = p
                .due
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(k, _)| k.clone())
                .collect();
            if !ready.is_empty() {
                for k in &ready {
                    p.due.remove(k);
                }
                return ready;
            }
            p = match p.due.values().min().copied() {
                Some(at) => {
                    self.wake
                        .wait_timeout(p, at - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.wake.wait(p).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }
}

/// Queues the backup of one pushed repository, unless one is already waiting in the queue.
fn submit(jobs: &Arc<Jobs>, connection: &str, repository: &str) {
    let kind = JobKind::Backup {
        plan: None,
        targets: vec![JobTarget {
            connection: connection.to_string(),
            only: vec![repository.to_string()],
        }],
    };
    let waiting = jobs.list(200).is_ok_and(|list| {
        list.iter()
            .any(|j| j.state == JobState::Queued && j.kind == kind)
    });
    if waiting {
        return;
    }
    let actor = Actor::Webhook(connection.to_string());
    match jobs.submit(kind, Trigger::Webhook, None) {
        Ok(job) => audit::record(
            jobs.context(),
            &actor,
            "run.submit",
            &format!("job {}", job.id),
            Some(&format!("backup of {connection}/{repository} after a push")),
        ),
        Err(e) => {
            tracing::warn!("webhook: cannot queue the backup of {connection}/{repository}: {e}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_urls_are_plain_http_addresses() {
        assert_eq!(
            hook_url("https://backup.example.com/", "acme").unwrap(),
            "https://backup.example.com/hooks/acme"
        );
        assert_eq!(
            hook_url(" http://10.0.0.5:8720 ", "dc-1").unwrap(),
            "http://10.0.0.5:8720/hooks/dc-1"
        );
        for bad in [
            "",
            "backup.example.com",
            "ftp://h",
            "https://u:p@h",
            "https://h/?x=1",
        ] {
            let e = hook_url(bad, "acme").unwrap_err().to_string();
            assert!(e.contains("url"), "{bad}: {e}");
        }
    }

    fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn signatures_are_checked() {
        let secret = SecretString::from("s3cret".to_string());
        let body = br#"{"push":{}}"#;
        assert_eq!(
            signature_problem(&secret, body, Some(&sign("s3cret", body))),
            None
        );
        let wrong = signature_problem(&secret, body, Some(&sign("other", body))).expect("refused");
        assert!(wrong.contains("does not match"), "{wrong}");
        assert!(!wrong.contains("s3cret"));
        assert!(signature_problem(&secret, body, None).is_some());
        assert!(signature_problem(&secret, body, Some("sha1=00")).is_some());
        assert!(signature_problem(&secret, body, Some("sha256=zz")).is_some());
        let tampered = signature_problem(&secret, b"{}", Some(&sign("s3cret", body)));
        assert!(tampered.is_some());
    }

    #[test]
    fn repository_names_are_scope_slash_slug() {
        assert!(check_repository("ws/repo").is_ok());
        for bad in ["", "ws", "/repo", "ws/", "a/b/c", "ws/re\npo"] {
            assert!(check_repository(bad).is_err(), "{bad:?}");
        }
    }
}
