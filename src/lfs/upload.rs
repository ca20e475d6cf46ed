//! A repository's LFS objects sent to a Git LFS server (restore into a provider): asked
//! for in batches (`operation: upload`), objects the server gives no `upload` action
//! already there; each other one PUT [`super::CONCURRENCY`] at a time with its content
//! streamed from the archive (the blob verified while read, and its SHA-256 checked
//! against the oid: a mismatch breaks the PUT off), then its `verify` action POSTed
//! when the server gave one. The credential and redirect rules are the downloads'
//! (`transfer::send_with`): the connection's credential only to the connection's
//! origins, a redirect elsewhere followed without it. Nothing is sent unless the
//! connection's gate allows writes.

use super::batch::{self, Action, Granted};
use super::transfer::{self, CredentialForm, Get, Retries, Try};
use super::{clipped, shown, LfsError, BATCH_SIZE, MEDIA_TYPE};
use crate::archive::{Archive, BlobId};
use crate::git::LfsPointer;
use crate::providers::failover;
use crate::providers::HttpGate;
use sha2::{Digest, Sha256};
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How [`upload_objects`] works.
pub struct UploadOptions<'a> {
    /// Uploads at once.
    pub concurrency: usize,
    /// The failover of the batch requests (that of the job's git fetches).
    pub policy: failover::Policy,
    /// Tries after the first of an upload that failed transiently (network, 429, 5xx).
    pub retries: u32,
    /// The first wait before such a try; doubles each time.
    pub retry_base: Duration,
    /// Set to stop: uploads in flight finish, no new one starts.
    pub interrupt: &'a AtomicBool,
    /// Called with the bytes of object content uploaded so far, after each object.
    pub progress: Option<&'a (dyn Fn(u64) + Sync)>,
}

/// What [`upload_objects`] did.
#[derive(Debug, Default)]
pub struct UploadReport {
    /// The objects uploaded (and verified when the server asked), sorted by oid.
    pub uploaded: Vec<LfsPointer>,
    /// The objects the server has already, sorted by oid.
    pub present: Vec<LfsPointer>,
    /// The objects not uploaded and why, sorted by oid.
    pub failed: Vec<(LfsPointer, String)>,
    /// Bytes of object content uploaded.
    pub uploaded_bytes: u64,
    /// Batch requests sent.
    pub batches: u64,
}

/// Uploads objects (each stored in `archive` as blob `BlobId`) to the LFS server at
/// `lfs_url` with the batch API, `operation: upload`: objects the answer gives no
/// `upload` action are already there (`present`); `upload` = PUT of the blob's content
/// streamed from the archive (verified while read), `verify` action POSTed when given.
/// A batch request that fails fails its objects (and those of later batches) with its
/// reason; one object's failure never fails the others. Refuses unless the gate allows
/// writes; fails only then, when the LFS URL is not one of the connection's origins,
/// or when the job is stopped.
pub fn upload_objects(
    gate: &HttpGate,
    archive: &Archive,
    lfs_url: &str,
    objects: &[(LfsPointer, BlobId)],
    opts: &UploadOptions<'_>,
) -> Result<UploadReport, LfsError> {
    if !gate.writes_allowed() {
        return Err(LfsError::WritesRefused {
            url: shown(lfs_url),
        });
    }
    let mut report = UploadReport::default();
    let sent = AtomicU64::new(0);
    let mut failed_batch: Option<String> = None;
    for chunk in objects.chunks(BATCH_SIZE) {
        // Objects whose upload URL expired before their turn are asked for again.
        let mut pending = chunk.to_vec();
        for _ in 0..BATCH_ROUNDS {
            if pending.is_empty() {
                break;
            }
            if opts.interrupt.load(Ordering::Relaxed) {
                return Err(LfsError::Interrupted);
            }
            if let Some(reason) = &failed_batch {
                report
                    .failed
                    .extend(pending.drain(..).map(|(p, _)| (p, reason.clone())));
                break;
            }
            report.batches += 1;
            let pointers: Vec<LfsPointer> = pending.iter().map(|(p, _)| p.clone()).collect();
            let grants = match batch::request_upload(
                gate,
                lfs_url,
                &pointers,
                &opts.policy,
                opts.interrupt,
            )? {
                Ok(grants) => grants,
                Err(reason) => {
                    failed_batch = Some(reason);
                    continue;
                }
            };
            let mut todo = Vec::with_capacity(grants.len());
            for ((pointer, granted), (_, blob)) in grants.into_iter().zip(&pending) {
                match granted {
                    Ok(Granted {
                        upload: Some(upload),
                        verify,
                    }) => todo.push(Job {
                        pointer,
                        blob: *blob,
                        upload,
                        verify,
                    }),
                    Ok(Granted { upload: None, .. }) => report.present.push(pointer),
                    Err(reason) => report.failed.push((pointer, reason)),
                }
            }
            pending = upload_all(gate, archive, &todo, opts, &sent, &mut report)?;
        }
        report.failed.extend(pending.into_iter().map(|(p, _)| {
            let reason = failed_batch.clone().unwrap_or_else(|| {
                "its upload URL expired before it could be used, every time it was asked for"
                    .to_string()
            });
            (p, reason)
        }));
    }
    report.uploaded_bytes = sent.into_inner();
    report.uploaded.sort();
    report.present.sort();
    report.failed.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(report)
}

/// Batch requests made for one batch of objects at most.
const BATCH_ROUNDS: usize = 3;

/// An upload URL this close to its expiry is asked for anew instead (git-lfs's margin).
const EXPIRY_MARGIN: Duration = Duration::from_secs(5);

/// The largest answer read from an upload or verify request (for its message).
const MAX_MESSAGE: u64 = 64 << 10;

/// One object to upload, with the server's actions.
struct Job {
    pointer: LfsPointer,
    blob: BlobId,
    upload: Action,
    verify: Option<Action>,
}

/// Uploads the objects of one batch, `opts.concurrency` at a time; returns those whose
/// upload URL expired before their turn (not tried).
fn upload_all(
    gate: &HttpGate,
    archive: &Archive,
    todo: &[Job],
    opts: &UploadOptions<'_>,
    sent: &AtomicU64,
    report: &mut UploadReport,
) -> Result<Vec<(LfsPointer, BlobId)>, LfsError> {
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<(LfsPointer, Result<(), String>)>> = Mutex::new(Vec::new());
    let fatal: Mutex<Option<LfsError>> = Mutex::new(None);
    let expired: Mutex<Vec<(LfsPointer, BlobId)>> = Mutex::new(Vec::new());
    let retries = Retries {
        retries: opts.retries,
        base: opts.retry_base,
    };
    let workers = opts.concurrency.clamp(1, 64).min(todo.len());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                if opts.interrupt.load(Ordering::Relaxed) || lock(&fatal).is_some() {
                    break;
                }
                let Some(job) = todo.get(next.fetch_add(1, Ordering::SeqCst)) else {
                    break;
                };
                let soon = Instant::now() + EXPIRY_MARGIN;
                if [Some(&job.upload), job.verify.as_ref()]
                    .into_iter()
                    .flatten()
                    .any(|a| a.expires.is_some_and(|at| soon >= at))
                {
                    lock(&expired).push((job.pointer.clone(), job.blob));
                    continue;
                }
                match upload_one(gate, archive, job, retries, opts.interrupt) {
                    Ok(result) => {
                        if result.is_ok() {
                            let total = sent.fetch_add(job.pointer.size, Ordering::Relaxed)
                                + job.pointer.size;
                            if let Some(progress) = opts.progress {
                                progress(total);
                            }
                        }
                        lock(&done).push((job.pointer.clone(), result));
                    }
                    Err(e) => {
                        lock(&fatal).get_or_insert(e);
                    }
                }
            });
        }
    });
    if let Some(e) = fatal.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let done = done.into_inner().unwrap_or_else(|p| p.into_inner());
    let expired = expired.into_inner().unwrap_or_else(|p| p.into_inner());
    if done.len() + expired.len() < todo.len() {
        return Err(LfsError::Interrupted);
    }
    for (pointer, result) in done {
        match result {
            Ok(()) => report.uploaded.push(pointer),
            Err(reason) => report.failed.push((pointer, reason)),
        }
    }
    Ok(expired)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The PUT of one object, then its verify request; each tried again after transient
/// failures. `Ok(Err(reason))`: this object failed.
fn upload_one(
    gate: &HttpGate,
    archive: &Archive,
    job: &Job,
    retries: Retries,
    interrupt: &AtomicBool,
) -> Result<Result<(), String>, LfsError> {
    let put = retrying_send(gate, &job.upload, retries, interrupt, &|url| {
        let content = Checked::open(archive, &job.pointer, &job.blob)?;
        Ok(gate
            .client()
            .put(url)
            .header("Content-Type", "application/octet-stream")
            .body(reqwest::blocking::Body::sized(content, job.pointer.size)))
    })?;
    if let Err(reason) = put {
        return Ok(Err(format!("upload refused or failed: {reason}")));
    }
    let Some(verify) = &job.verify else {
        return Ok(Ok(()));
    };
    let body = serde_json::json!({"oid": job.pointer.oid, "size": job.pointer.size}).to_string();
    let verified = retrying_send(gate, verify, retries, interrupt, &|url| {
        Ok(gate
            .client()
            .post(url)
            .header("Accept", MEDIA_TYPE)
            .header("Content-Type", MEDIA_TYPE)
            .body(body.clone()))
    })?;
    Ok(verified.map_err(|reason| format!("uploaded, but the server did not verify it: {reason}")))
}

/// Sends the request `hop` makes to `action` (its headers as given, the connection's
/// git credential while on the connection's origins), tried again after transient
/// failures; any 2xx answer is success.
fn retrying_send(
    gate: &HttpGate,
    action: &Action,
    retries: Retries,
    interrupt: &AtomicBool,
    hop: &transfer::Hop<'_>,
) -> Result<Result<(), String>, LfsError> {
    let get = Get {
        url: &action.href,
        headers: &action.headers,
        credential: CredentialForm::Git,
    };
    transfer::retrying(retries, interrupt, &action.href, || {
        let (resp, lane) = match transfer::send_with(gate, &get, hop) {
            Ok(sent) => sent,
            Err(unanswered) if unanswered.retry => {
                return Ok(Try::Again {
                    reason: unanswered.reason,
                    after: None,
                })
            }
            Err(unanswered) => return Ok(Try::Missing(unanswered.reason)),
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(Try::Done(()));
        }
        Ok(match status.as_u16() {
            401 | 403 | 404 | 410 | 422 => Try::Missing(format!(
                "{} answered {status}{}",
                shown(&action.href),
                message(resp)
            )),
            _ => transfer::refused(gate, status, lane, &resp),
        })
    })
}

/// `: <the server's message>` from an error answer (JSON `message`, else its text).
fn message(resp: reqwest::blocking::Response) -> String {
    let mut body = Vec::new();
    if resp.take(MAX_MESSAGE).read_to_end(&mut body).is_err() {
        return String::new();
    }
    let text = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    match clipped(&text, 200) {
        t if t.is_empty() => String::new(),
        t => format!(": {t}"),
    }
}

/// An object's content read from its archive blob (whose reader checks the blob's
/// BLAKE3 and length at the end) while its SHA-256 and size are checked against the
/// pointer: a mismatch fails the last read, so the PUT breaks off unfinished.
struct Checked {
    inner: Box<dyn Read + Send>,
    hasher: Sha256,
    oid: String,
    size: u64,
    read: u64,
    /// The end was reached and checked.
    done: bool,
}

impl Checked {
    fn open(archive: &Archive, pointer: &LfsPointer, blob: &BlobId) -> Result<Checked, String> {
        let inner = archive
            .open_blob(blob)
            .map_err(|e| format!("the archived object cannot be read: {e}"))?;
        Ok(Checked {
            inner: Box::new(inner),
            hasher: Sha256::new(),
            oid: pointer.oid.clone(),
            size: pointer.size,
            read: 0,
            done: false,
        })
    }
}

impl Read for Checked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if n > 0 {
            self.hasher.update(&buf[..n]);
            return Ok(n);
        }
        let got = hex::encode(std::mem::take(&mut self.hasher).finalize());
        if self.read != self.size || got != self.oid {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the archived object has {} bytes and SHA-256 {got}, not those of its pointer",
                    self.read
                ),
            ));
        }
        self.done = true;
        Ok(0)
    }
}
