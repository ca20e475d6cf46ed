//! The command surface through a running daemon: [`Remote`] implements the
//! engine's [`Service`] as an HTTP client of `/api/v1`, with the admin token from
//! the data dir. When a daemon serves the data dir (its `daemon.json` names the
//! address and the daemon answers), the CLI uses this instead of opening the
//! database the daemon holds; requests and reports are the engine's own types.
//! Before the admin token (or any secret) is sent, whatever answers at that
//! address must prove it holds the instance key of `daemon.json` (a stale file
//! may point at a port some other program now has).

use super::serve::DAEMON_FILE;
use crate::api::TOKEN_FILE;
use crate::engine::archive_copy::CopyEvent;
use crate::engine::credentials::CredentialView;
use crate::engine::prune::PruneEvent;
use crate::engine::service::*;
use crate::engine::types::{Job, JobRecordResult, Plan, PlanSpec, RepoRecord};
use crate::engine::{
    backup_report_from_jobs, backup_targets, follow_job, restore_into::RestoredInto,
    restored_from_job, restored_into_from_job, BackupReport, EngineError, ErrorKind,
};
use anyhow::{Context as _, Result};
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use std::cell::Cell;
use std::path::Path;
use std::time::Duration;

/// A daemon reachable over its API.
pub struct Remote {
    base: String,
    token: SecretString,
    http: Client,
}

#[derive(serde::Deserialize)]
struct DaemonInfo {
    url: String,
    pid: u32,
    /// The daemon's instance key (written 0600 by the daemon).
    #[serde(default)]
    instance: Option<String>,
    #[serde(default)]
    tls_cert: Option<String>,
}

/// What answered at the address of `daemon.json`.
enum Answer {
    /// Nothing (connection refused, timeout, an error status).
    Nothing,
    /// This data dir's daemon: it proved the instance key.
    Proven,
    /// Something that did not prove it.
    Unproven,
}

impl Remote {
    /// The daemon of a data dir, if one runs.
    pub fn discover(data_dir: &Path) -> Result<Option<Remote>> {
        let path = data_dir.join(DAEMON_FILE);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(None);
        };
        let Ok(info) = serde_json::from_str::<DaemonInfo>(&text) else {
            return Ok(None);
        };
        let alive = pid_alive(info.pid);
        if !alive {
            return Ok(None); // left by a daemon that was killed
        }
        let http = client(&info)?;
        let base = info.url.trim_end_matches('/').to_string();
        match prove(&http, &base, info.instance.as_deref()) {
            Answer::Nothing => return Ok(None),
            Answer::Proven => {}
            Answer::Unproven => anyhow::bail!(
                "{} names a daemon at {base} (pid {}), but what answers there is not the daemon \
                 of {} (it cannot prove the instance key of {}); the admin token was not sent. \
                 If no reposafe daemon serves this data dir, remove {} (a daemon started by an \
                 older reposafe: restart it)",
                path.display(),
                info.pid,
                data_dir.display(),
                path.display(),
                path.display()
            ),
        }
        let token = std::fs::read_to_string(data_dir.join(TOKEN_FILE)).with_context(|| {
            format!(
                "a daemon serves {} but its admin token {} cannot be read (run as the daemon's user?)",
                data_dir.display(),
                data_dir.join(TOKEN_FILE).display()
            )
        })?;
        Ok(Some(Remote {
            base,
            token: SecretString::from(token.trim().to_string()),
            http,
        }))
    }

    fn req(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token.expose_secret())
    }

    /// Sends a request and decodes the answer; an error answer becomes the engine
    /// error it was on the daemon (its class, text and field).
    fn send<T: DeserializeOwned>(&self, rb: RequestBuilder, what: &str) -> Result<T, EngineError> {
        let resp = self.sent(rb, what)?;
        answer(resp, what)
    }

    fn sent(&self, rb: RequestBuilder, what: &str) -> Result<Response, EngineError> {
        send_to(&self.base, rb, what)
    }

    /// POSTs a long call (a prune) and follows it: the daemon streams its progress as
    /// Server-Sent Events, handed to `on_progress` as they come, and ends with the
    /// report or the error. No time limit on the work, only on silence: the daemon
    /// says it is alive as often as it announces in [`crate::api::HEARTBEAT_HEADER`]
    /// ([`crate::api::DEFAULT_HEARTBEAT`] if it does not), so [`silence_limit`] of that
    /// without a word means it is stuck or the connection is gone.
    fn post_following<T: DeserializeOwned, E: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
        on_progress: impl Fn(E),
    ) -> Result<T, EngineError> {
        let what = format!("POST {path}");
        let rb = self
            .req(Method::POST, path)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .timeout(LONG_WORK)
            .json(body);
        // A blocking read has no limit of its own but the whole call's: the call runs
        // on a thread of its own, and silence is timed here.
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        let (base, asked) = (self.base.clone(), what.clone());
        std::thread::Builder::new()
            .name("reposafe-follow".into())
            .spawn(move || listen(&base, rb, &asked, &tx))
            .map_err(|e| EngineError::Internal(format!("{what}: cannot start a thread: {e}")))?;
        let beat = Cell::new(crate::api::DEFAULT_HEARTBEAT);
        let silent = || {
            EngineError::Internal(format!(
                "{what}: the daemon at {} said nothing for {} s, though it says it is alive every {} s while it works: it is stuck or the connection to it was lost; the work may still be running there (see its log)",
                self.base,
                silence_limit(beat.get()).as_secs_f64(),
                beat.get().as_secs_f64()
            ))
        };
        let mut heard = std::iter::from_fn(|| match rx.recv_timeout(silence_limit(beat.get())) {
            Ok(heard) => Some(Ok(heard)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Some(Err(silent())),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
        });
        match heard.next() {
            Some(Ok(Heard::Stream { heartbeat })) => {
                if let Some(announced) = heartbeat {
                    beat.set(announced);
                }
                let lines = heard.map(|h| match h {
                    Ok(Heard::Line(line)) => line.map_err(|e| {
                        EngineError::Internal(format!("{what}: the daemon's answer broke off: {e}"))
                    }),
                    Ok(Heard::Head(_) | Heard::Stream { .. }) => Err(EngineError::Internal(
                        format!("{what}: a second answer from the daemon"),
                    )),
                    Err(e) => Err(e),
                });
                follow_events(lines, &what, on_progress)
            }
            Some(Ok(Heard::Head(Ok(whole)))) => answer(whole, &what),
            Some(Ok(Heard::Head(Err(e)))) | Some(Err(e)) => Err(e),
            Some(Ok(Heard::Line(_))) | None => Err(EngineError::Internal(format!(
                "{what}: the daemon's answer broke off before it began"
            ))),
        }
    }
}

/// The time limit of a request answered when long work is done (a week: the work,
/// not the client, decides).
const LONG_WORK: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long a followed call may hear nothing from a daemon that says it is alive every
/// `heartbeat`: four of them.
fn silence_limit(heartbeat: Duration) -> Duration {
    heartbeat.saturating_mul(4)
}

/// Sends `rb` to the daemon at `base`, naming it when nothing answers.
fn send_to(base: &str, rb: RequestBuilder, what: &str) -> Result<Response, EngineError> {
    rb.send().map_err(|e| {
        EngineError::Internal(format!("{what}: the daemon at {base} did not answer: {e}"))
    })
}

/// What the thread of a followed call hears from the daemon.
enum Heard {
    /// The whole answer (an error, or a daemon answering at once), or why none came.
    Head(Result<Response, EngineError>),
    /// A stream of events follows, in which the daemon says it is alive every
    /// `heartbeat` it announced ([`crate::api::HEARTBEAT_HEADER`]; `None`: not said).
    Stream { heartbeat: Option<Duration> },
    /// One line of the stream of events.
    Line(std::io::Result<String>),
}

/// The heartbeat a daemon announced in its answer's head, if it did.
fn announced_heartbeat(resp: &Response) -> Option<Duration> {
    let ms = resp
        .headers()
        .get(crate::api::HEARTBEAT_HEADER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(Duration::from_millis(ms.max(100)))
}

/// Sends a followed call and hands over what comes back, line by line, until the
/// stream ends or nobody listens any more.
fn listen(base: &str, rb: RequestBuilder, what: &str, tx: &std::sync::mpsc::SyncSender<Heard>) {
    let resp = match send_to(base, rb, what) {
        Ok(resp) => resp,
        Err(e) => {
            let _ = tx.send(Heard::Head(Err(e)));
            return;
        }
    };
    let streamed = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !streamed || !resp.status().is_success() {
        let _ = tx.send(Heard::Head(Ok(resp)));
        return;
    }
    let heartbeat = announced_heartbeat(&resp);
    if tx.send(Heard::Stream { heartbeat }).is_err() {
        return;
    }
    for line in std::io::BufRead::lines(std::io::BufReader::new(resp)) {
        if tx.send(Heard::Line(line)).is_err() {
            return;
        }
    }
}

/// Reads Server-Sent Events, line by line, until `end` (the report) or `error` (the
/// daemon's error), handing each `progress` event to `on_progress`.
fn follow_events<T: DeserializeOwned, E: DeserializeOwned>(
    lines: impl Iterator<Item = Result<String, EngineError>>,
    what: &str,
    on_progress: impl Fn(E),
) -> Result<T, EngineError> {
    let mut event = String::new();
    for line in lines {
        let line = line?;
        if let Some(name) = line.strip_prefix("event: ") {
            event = name.to_string();
            continue;
        }
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        match event.as_str() {
            "progress" => {
                if let Ok(step) = serde_json::from_str(data) {
                    on_progress(step);
                }
            }
            "end" => {
                return serde_json::from_str(data)
                    .map_err(|e| EngineError::Internal(format!("{what}: unexpected answer: {e}")))
            }
            "error" => return Err(remote_error(data, what, "error event")),
            _ => {}
        }
    }
    Err(EngineError::Internal(format!(
        "{what}: the daemon stopped answering before the work was done; it may still be running (see its log)"
    )))
}

/// An error answer as the engine error it was on the daemon (its class, text and field).
fn remote_error(text: &str, what: &str, status: &str) -> EngineError {
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(b) => EngineError::Remote {
            kind: b.kind.unwrap_or(ErrorKind::Internal),
            message: b.error,
            field: b.field,
        },
        Err(_) => EngineError::Internal(format!("{what}: {status} from the daemon: {text}")),
    }
}

/// Decodes a daemon's answer; an error answer becomes the engine error it was there.
fn answer<T: DeserializeOwned>(resp: Response, what: &str) -> Result<T, EngineError> {
    let status = resp.status();
    let text = resp.text().unwrap_or_default();
    if !status.is_success() {
        let status = format!("HTTP {}", status.as_u16());
        return Err(remote_error(&text, what, &status));
    }
    serde_json::from_str(&text)
        .map_err(|e| EngineError::Internal(format!("{what}: unexpected answer: {e}")))
}

impl Remote {
    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, EngineError> {
        self.send(self.req(Method::GET, path), &format!("GET {path}"))
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, EngineError> {
        let what = format!("{method} {path}");
        self.send(self.req(method, path).json(body), &what)
    }

    fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, EngineError> {
        self.call(Method::POST, path, body)
    }

    /// A POST answered when long work is done: without the client's 10-minute limit.
    fn post_unlimited<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, EngineError> {
        let rb = self.req(Method::POST, path).timeout(LONG_WORK).json(body);
        self.send(rb, &format!("POST {path}"))
    }

    fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, EngineError> {
        self.send(self.req(Method::DELETE, path), &format!("DELETE {path}"))
    }

    /// Runs one backup job of a connection (or of one repository) to its end.
    fn backup_job(
        &self,
        req: RunRequest,
        observer: &dyn Observer,
    ) -> Result<(Job, Vec<JobRecordResult>), EngineError> {
        let job = self.run(req, observer)?;
        let results = self.job_results(job.id)?;
        Ok((job, results))
    }
}

/// Whether process `pid` runs (always assumed where `/proc` is not there to ask).
fn pid_alive(pid: u32) -> bool {
    !cfg!(target_os = "linux") || Path::new(&format!("/proc/{pid}")).exists()
}

/// The HTTP client for the daemon of `info` (trusting its TLS certificate).
fn client(info: &DaemonInfo) -> Result<Client> {
    let mut b = Client::builder()
        .timeout(Duration::from_secs(600))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(cert) = &info.tls_cert {
        let pem = std::fs::read(cert)
            .with_context(|| format!("cannot read the daemon's TLS certificate {cert}"))?;
        for c in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("the daemon's TLS certificate {cert} is not PEM"))?
        {
            b = b.add_root_certificate(c);
        }
    }
    b.build().context("cannot build the HTTP client")
}

/// Asks `base` to prove the instance key with a fresh challenge (no token sent).
fn prove(http: &Client, base: &str, instance: Option<&str>) -> Answer {
    #[derive(serde::Deserialize)]
    struct Health {
        #[serde(default)]
        proof: Option<String>,
    }
    let mut bytes = [0u8; 32];
    rand::Rng::fill(&mut rand::rngs::OsRng, &mut bytes[..]);
    let challenge = hex::encode(bytes);
    let resp = http
        .get(format!("{base}/healthz?challenge={challenge}"))
        .timeout(Duration::from_secs(30))
        .send();
    let health = match resp {
        Ok(r) if r.status().is_success() => r.json::<Health>().ok(),
        _ => return Answer::Nothing,
    };
    let (Some(instance), Some(proof)) = (instance, health.and_then(|h| h.proof)) else {
        return Answer::Unproven;
    };
    let want = crate::api::instance_proof(instance, &challenge);
    if crate::api::ct_eq(want.as_bytes(), proof.as_bytes()) {
        Answer::Proven
    } else {
        Answer::Unproven
    }
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    kind: Option<ErrorKind>,
    #[serde(default)]
    field: Option<String>,
}

/// Percent-encodes a path segment or query value.
fn q(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn connection_path(name: &str) -> String {
    format!("/api/v1/connections/{}", q(name))
}

fn credential_path(connection: &str, id: &str) -> String {
    format!("{}/credentials/{}", connection_path(connection), q(id))
}

impl Service for Remote {
    fn overview(&self) -> Result<Overview, EngineError> {
        self.get("/api/v1/status")
    }

    fn providers(&self) -> Result<ProvidersReport, EngineError> {
        self.get("/api/v1/providers")
    }

    fn connections(&self) -> Result<Vec<ConnectionView>, EngineError> {
        self.get("/api/v1/connections")
    }

    fn connection(&self, name: &str) -> Result<ConnectionView, EngineError> {
        self.get(&connection_path(name))
    }

    fn add_connection(&self, req: AddConnection) -> Result<ConnectionAdded, EngineError> {
        self.post("/api/v1/connections", &req)
    }

    fn test_connection(&self, name: &str) -> Result<ConnectionTested, EngineError> {
        self.post(&format!("{}/test", connection_path(name)), &json!({}))
    }

    fn remove_connection(&self, name: &str) -> Result<Removed, EngineError> {
        self.delete(&connection_path(name))
    }

    fn set_connection_tls(&self, name: &str, req: SetTls) -> Result<TlsChanged, EngineError> {
        self.call(Method::PUT, &format!("{}/tls", connection_path(name)), &req)
    }

    fn credentials(&self, connection: &str) -> Result<Vec<CredentialView>, EngineError> {
        self.get(&format!("{}/credentials", connection_path(connection)))
    }

    fn add_credential(
        &self,
        connection: &str,
        req: AddCredential,
    ) -> Result<CredentialAdded, EngineError> {
        self.post(
            &format!("{}/credentials", connection_path(connection)),
            &req,
        )
    }

    fn remove_credential(&self, connection: &str, id: &str) -> Result<Removed, EngineError> {
        self.delete(&credential_path(connection, id))
    }

    fn set_credential_enabled(
        &self,
        connection: &str,
        id: &str,
        enabled: bool,
    ) -> Result<CredentialEnabled, EngineError> {
        let action = if enabled { "enable" } else { "disable" };
        let path = format!("{}/{action}", credential_path(connection, id));
        self.post(&path, &json!({}))
    }

    fn test_credential(&self, connection: &str, id: &str) -> Result<CredentialTested, EngineError> {
        self.post(
            &format!("{}/test", credential_path(connection, id)),
            &json!({}),
        )
    }

    fn plans(&self) -> Result<Vec<Plan>, EngineError> {
        self.get("/api/v1/plans")
    }

    fn plan(&self, name: &str) -> Result<Plan, EngineError> {
        self.get(&format!("/api/v1/plans/{}", q(name)))
    }

    fn add_plan(&self, spec: PlanSpec) -> Result<Plan, EngineError> {
        self.post("/api/v1/plans", &spec)
    }

    fn update_plan(&self, name: &str, spec: PlanSpec) -> Result<Plan, EngineError> {
        self.call(Method::PUT, &format!("/api/v1/plans/{}", q(name)), &spec)
    }

    fn remove_plan(&self, name: &str) -> Result<Removed, EngineError> {
        self.delete(&format!("/api/v1/plans/{}", q(name)))
    }

    fn submit(&self, req: RunRequest) -> Result<Job, EngineError> {
        self.post("/api/v1/run", &req)
    }

    fn run(&self, req: RunRequest, observer: &dyn Observer) -> Result<Job, EngineError> {
        let job = self.submit(req)?;
        self.watch(job.id, observer)
    }

    fn backup(
        &self,
        req: BackupRequest,
        observer: &dyn Observer,
    ) -> Result<Vec<BackupReport>, EngineError> {
        if req.taken_at.is_some() {
            return Err(EngineError::Field {
                field: "time".into(),
                message: "the daemon runs backups as jobs dated when they run; stop it (or use another data dir) to back up with --time".into(),
            });
        }
        let names = backup_targets(&req, self)?;
        let mut reports = Vec::new();
        for name in names {
            let runs: Vec<RunRequest> = if req.repositories.is_empty() {
                vec![RunRequest {
                    connection: Some(name.clone()),
                    ..Default::default()
                }]
            } else {
                req.repositories
                    .iter()
                    .map(|repo| RunRequest {
                        connection: Some(name.clone()),
                        repository: Some(repo.clone()),
                        plan: None,
                    })
                    .collect()
            };
            let mut done = Vec::new();
            for run in runs {
                done.push(self.backup_job(run, observer)?);
            }
            reports.push(backup_report_from_jobs(&name, &done)?);
        }
        Ok(reports)
    }

    fn jobs(&self, limit: usize) -> Result<Vec<Job>, EngineError> {
        self.get(&format!("/api/v1/jobs?limit={limit}"))
    }

    fn job(&self, id: u64) -> Result<Job, EngineError> {
        self.get(&format!("/api/v1/jobs/{id}"))
    }

    fn job_results(&self, id: u64) -> Result<Vec<JobRecordResult>, EngineError> {
        self.get(&format!("/api/v1/jobs/{id}/results"))
    }

    fn watch(&self, id: u64, observer: &dyn Observer) -> Result<Job, EngineError> {
        follow_job(&|| self.job(id), observer, Duration::from_millis(300))
    }

    fn cancel(&self, id: u64) -> Result<Job, EngineError> {
        self.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({}))
    }

    fn repositories(&self, connection: Option<&str>) -> Result<Vec<RepoRecord>, EngineError> {
        self.get(&match connection {
            Some(c) => format!("/api/v1/repositories?connection={}", q(c)),
            None => "/api/v1/repositories".into(),
        })
    }

    fn snapshots(&self, req: SnapshotsRequest) -> Result<SnapshotList, EngineError> {
        let mut path = format!("/api/v1/snapshots?repository={}", q(&req.repository));
        if let Some(c) = &req.connection {
            path.push_str(&format!("&connection={}", q(c)));
        }
        if let Some(at) = req.at {
            path.push_str(&format!("&at={}", q(&rfc3339(at)?)));
        }
        self.get(&path)
    }

    fn restore(
        &self,
        req: RestoreRequest,
        observer: &dyn Observer,
    ) -> Result<Restored, EngineError> {
        let job: Job = self.post("/api/v1/restore", &req)?;
        let job = self.watch(job.id, observer)?;
        restored_from_job(self, &req, &job)
    }

    fn restore_into(
        &self,
        req: RestoreRequest,
        observer: &dyn Observer,
    ) -> Result<RestoredInto, EngineError> {
        let job: Job = self.post("/api/v1/restore", &req)?;
        let job = self.watch(job.id, observer)?;
        restored_into_from_job(self, &job)
    }

    fn check(&self, req: CheckRequest) -> Result<CheckReport, EngineError> {
        // A check that reads every blob takes as long as the archive is big.
        self.post_unlimited("/api/v1/check", &req)
    }

    /// The daemon forgets (and prunes), streaming a prune's progress to `observer`.
    fn forget(
        &self,
        req: ForgetRequest,
        observer: &dyn Observer,
    ) -> Result<ForgetReport, EngineError> {
        let progress = observer.prune_progress();
        self.post_following("/api/v1/forget", &req, |step: PruneEvent| {
            step.report_to(progress.as_ref())
        })
    }

    fn archive(&self) -> Result<ArchiveInfo, EngineError> {
        self.get("/api/v1/archive")
    }

    /// The daemon copies, streaming its progress to `observer`.
    fn copy_archive(
        &self,
        req: CopyRequest,
        observer: &dyn Observer,
    ) -> Result<ArchiveCopyReport, EngineError> {
        let progress = observer.copy_progress();
        self.post_following("/api/v1/archive/copy", &req, |step: CopyEvent| {
            step.report_to(progress.as_ref())
        })
    }

    /// The daemon prunes, streaming its progress to `observer`.
    fn prune(
        &self,
        req: PruneRequest,
        observer: &dyn Observer,
    ) -> Result<PruneReport, EngineError> {
        let progress = observer.prune_progress();
        self.post_following("/api/v1/prune", &req, |step: PruneEvent| {
            step.report_to(progress.as_ref())
        })
    }

    fn retention_view(&self, req: RetentionQuery) -> Result<Option<RetentionView>, EngineError> {
        self.post("/api/v1/retention", &req)
    }

    fn show(&self, req: ShowRequest) -> Result<ShowReport, EngineError> {
        let mut path = format!("/api/v1/show?repository={}", q(&req.repository));
        let at = req.at.map(rfc3339).transpose()?;
        let optional = [
            ("connection", req.connection),
            ("snapshot", req.snapshot),
            ("at", at),
            ("kind", req.kind),
        ];
        for (name, value) in optional {
            if let Some(v) = value {
                path.push_str(&format!("&{name}={}", q(&v)));
            }
        }
        self.get(&path)
    }

    fn export(&self, req: ExportRequest) -> Result<ExportReport, EngineError> {
        // The daemon answers when the export is written, which takes as long as the
        // snapshot is big.
        self.post_unlimited("/api/v1/export", &req)
    }

    // issue 14 (lead)
    fn preview_plan(&self, spec: PlanSpec) -> Result<PlanPreview, EngineError> {
        self.post("/api/v1/plans/preview", &spec)
    }

    // issue 14 (O)
    fn oauth_begin(&self, req: OAuthBegin) -> Result<OAuthStarted, EngineError> {
        self.post("/api/v1/oauth/begin", &req)
    }

    fn oauth_finish(&self, _req: OAuthFinish) -> Result<ConnectionAdded, EngineError> {
        Err(EngineError::Conflict(
            "a Connect flow is finished by the browser at the daemon's /oauth/callback".into(),
        ))
    }

    fn rotate_credential(
        &self,
        name: &str,
        req: RotateCredential,
    ) -> Result<ConnectionAdded, EngineError> {
        let path = format!("{}/credential", connection_path(name));
        self.call(Method::PUT, &path, &req)
    }

    fn edit_connection(
        &self,
        name: &str,
        req: EditConnection,
    ) -> Result<crate::engine::types::Connection, EngineError> {
        self.call(Method::PUT, &connection_path(name), &req)
    }

    // issue 14 (N): notifications
    fn notifications(&self) -> Result<NotificationView, EngineError> {
        self.get("/api/v1/notifications")
    }

    fn set_notifications(&self, req: SetNotifications) -> Result<NotificationView, EngineError> {
        self.call(Method::PUT, "/api/v1/notifications", &req)
    }

    fn test_notifications(&self) -> Result<Vec<ChannelResult>, EngineError> {
        // Each channel may take its full timeout (an SMTP server that does not answer).
        let path = "/api/v1/notifications/test";
        let rb = self
            .req(Method::POST, path)
            .timeout(Duration::from_secs(120))
            .json(&serde_json::json!({}));
        self.send(rb, &format!("POST {path}"))
    }

    // issue 14 (W): push-triggered backups and the audit log.
    fn webhook(&self, name: &str) -> Result<WebhookInfo, EngineError> {
        let info: WebhookInfo = self.get(&format!("{}/webhook", connection_path(name)))?;
        Ok(self.with_url(info))
    }

    fn rotate_webhook_secret(&self, name: &str) -> Result<WebhookInfo, EngineError> {
        let path = format!("{}/webhook/rotate", connection_path(name));
        let info: WebhookInfo = self.post(&path, &json!({}))?;
        Ok(self.with_url(info))
    }

    fn register_webhook(
        &self,
        name: &str,
        req: RegisterWebhook,
    ) -> Result<WebhookRegistration, EngineError> {
        let path = format!("{}/webhook/register", connection_path(name));
        self.post(&path, &req)
    }

    fn push_received(&self, _: &str, _: &str) -> Result<HookQueued, EngineError> {
        Err(EngineError::Conflict(
            "pushes reach the daemon as signed webhooks at /hooks/{connection}, not through the API"
                .into(),
        ))
    }

    fn record_sign_in(&self, _: bool) -> Result<(), EngineError> {
        Err(EngineError::Conflict(
            "sign-ins are recorded by the daemon's /login".into(),
        ))
    }

    fn record_sign_out(&self) -> Result<(), EngineError> {
        Err(EngineError::Conflict(
            "sign-outs are recorded by the daemon's /logout".into(),
        ))
    }

    fn audit(&self, query: AuditQuery) -> Result<Vec<AuditEntry>, EngineError> {
        let mut path = format!("/api/v1/audit?limit={}", query.limit.unwrap_or(100));
        if let Some(before) = query.before {
            path.push_str(&format!("&before={before}"));
        }
        self.get(&path)
    }
}

impl Remote {
    /// The webhook's full URL under this daemon's address.
    fn with_url(&self, mut info: WebhookInfo) -> WebhookInfo {
        info.url = Some(format!("{}{}", self.base, info.path));
        info
    }
}

/// A time as RFC 3339, for a query.
fn rfc3339(at: time::OffsetDateTime) -> Result<String, EngineError> {
    at.format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| EngineError::Internal(format!("cannot format a time: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// The lines of `stream`, as a followed call hears them.
    fn lines_of(stream: &str) -> impl Iterator<Item = Result<String, EngineError>> + '_ {
        stream.lines().map(|l| Ok(l.to_string()))
    }

    #[test]
    fn a_followed_call_hands_over_its_steps_then_ends_with_the_report_or_the_error() {
        let steps = Mutex::new(Vec::new());
        let stream = "event: progress\ndata: {\"histories\":2}\n\n\
                      event: progress\ndata: \"sweeping\"\n\n\
                      event: end\ndata: {\"n\":7}\n\n";
        let end: serde_json::Value = follow_events(lines_of(stream), "POST /p", |s: PruneEvent| {
            steps.lock().expect("steps").push(s)
        })
        .expect("end");
        assert_eq!(end["n"], 7);
        assert_eq!(
            *steps.lock().expect("steps"),
            [PruneEvent::Histories(2), PruneEvent::Sweeping]
        );

        let failed =
            "event: error\ndata: {\"error\":\"appliance x is pruning\",\"kind\":\"conflict\"}\n\n";
        let err =
            follow_events::<serde_json::Value, PruneEvent>(lines_of(failed), "POST /p", |_| {})
                .expect_err("error");
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert!(err.to_string().contains("appliance x is pruning"), "{err}");

        let cut = "event: progress\ndata: \"sweeping\"\n\n";
        let err = follow_events::<serde_json::Value, PruneEvent>(lines_of(cut), "POST /p", |_| {})
            .expect_err("cut");
        assert!(err.to_string().contains("may still be running"), "{err}");
    }
}
