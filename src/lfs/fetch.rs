//! A repository's LFS objects: asked for in batches, each batch's downloads run
//! [`super::CONCURRENCY`] at a time, each object reported stored or missing.

use super::batch::{self, Action};
use super::transfer::{self, CredentialForm, Expect, Get, Retries};
use super::{LfsError, BATCH_SIZE};
use crate::archive::{Archive, ArchiveError, PutOutcome};
use crate::git::LfsPointer;
use crate::providers::failover;
use crate::providers::HttpGate;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How [`fetch_objects`] works.
pub struct FetchOptions<'a> {
    /// Downloads at once.
    pub concurrency: usize,
    /// The failover of the batch requests (that of the job's git fetches).
    pub policy: failover::Policy,
    /// Tries after the first of a download that failed transiently (network, 429, 5xx).
    pub retries: u32,
    /// The first wait before such a try; doubles each time.
    pub retry_base: Duration,
    /// Set to stop: downloads in flight finish, no new one starts.
    pub interrupt: &'a AtomicBool,
    /// Called (from the download threads) for each object stored, before it is
    /// reported: the engine records it in the archive's LFS index here.
    pub on_stored: &'a (dyn Fn(&LfsPointer, &PutOutcome) -> Result<(), ArchiveError> + Sync),
}

/// What [`fetch_objects`] did.
#[derive(Debug, Default)]
pub struct FetchReport {
    /// The objects stored, with their blobs, sorted by oid.
    pub stored: Vec<(LfsPointer, PutOutcome)>,
    /// The objects not stored and why, sorted by oid.
    pub missing: Vec<(LfsPointer, String)>,
    /// Bytes of object content received.
    pub downloaded_bytes: u64,
    /// Batch requests sent.
    pub batches: u64,
}

/// Downloads `objects` from the LFS server at `lfs_url` into `archive`. A batch request
/// that fails reports its objects (and those of later batches) missing with its reason;
/// an object the server lacks or sends corrupt is reported missing alone; one whose
/// download URL expired before its turn (`expires_in`/`expires_at`, as git-lfs reads
/// them) is asked for again. Fails only
/// when the archive cannot be written, the LFS URL is not one of the connection's
/// origins, or the job is stopped.
pub fn fetch_objects(
    gate: &HttpGate,
    archive: &Archive,
    lfs_url: &str,
    objects: &[LfsPointer],
    opts: &FetchOptions<'_>,
) -> Result<FetchReport, LfsError> {
    let mut report = FetchReport::default();
    let received = AtomicU64::new(0);
    let mut failed_batch: Option<String> = None;
    for chunk in objects.chunks(BATCH_SIZE) {
        // Objects whose download URL expired before their turn are asked for again.
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
                    .missing
                    .extend(pending.drain(..).map(|p| (p, reason.clone())));
                break;
            }
            report.batches += 1;
            let todo = match batch::request(gate, lfs_url, &pending, &opts.policy, opts.interrupt)?
            {
                Ok(answers) => answers,
                Err(reason) => {
                    failed_batch = Some(reason);
                    continue;
                }
            };
            let mut ready = Vec::with_capacity(todo.len());
            for (pointer, action) in todo {
                match action {
                    Ok(action) => ready.push((pointer, action)),
                    Err(reason) => report.missing.push((pointer, reason)),
                }
            }
            pending = download_all(gate, archive, &ready, opts, &received, &mut report)?;
        }
        report.missing.extend(pending.into_iter().map(|p| {
            let reason = failed_batch.clone().unwrap_or_else(|| {
                "its download URL expired before it could be used, every time it was asked for"
                    .to_string()
            });
            (p, reason)
        }));
    }
    report.downloaded_bytes = received.into_inner();
    report.stored.sort_by(|a, b| a.0.cmp(&b.0));
    report.missing.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(report)
}

/// Batch requests made for one batch of objects at most: the first, and again for those
/// whose download URL expired before their turn.
const BATCH_ROUNDS: usize = 3;

/// A download URL this close to its expiry is asked for anew instead (git-lfs's margin).
const EXPIRY_MARGIN: Duration = Duration::from_secs(5);

/// Downloads the objects of one batch, `opts.concurrency` at a time; returns those whose
/// download URL expired before their turn (not tried).
fn download_all(
    gate: &HttpGate,
    archive: &Archive,
    todo: &[(LfsPointer, Action)],
    opts: &FetchOptions<'_>,
    received: &AtomicU64,
    report: &mut FetchReport,
) -> Result<Vec<LfsPointer>, LfsError> {
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<(LfsPointer, Result<PutOutcome, String>)>> = Mutex::new(Vec::new());
    let fatal: Mutex<Option<LfsError>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    let expired: Mutex<Vec<LfsPointer>> = Mutex::new(Vec::new());
    let retries = Retries {
        retries: opts.retries,
        base: opts.retry_base,
    };
    let workers = opts.concurrency.clamp(1, 64).min(todo.len());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                if stop.load(Ordering::Relaxed) || opts.interrupt.load(Ordering::Relaxed) {
                    break;
                }
                let Some((pointer, action)) = todo.get(next.fetch_add(1, Ordering::SeqCst)) else {
                    break;
                };
                if action
                    .expires
                    .is_some_and(|at| Instant::now() + EXPIRY_MARGIN >= at)
                {
                    if let Ok(mut e) = expired.lock() {
                        e.push(pointer.clone());
                    }
                    continue;
                }
                let get = Get {
                    url: &action.href,
                    headers: &action.headers,
                    credential: CredentialForm::Git,
                };
                let expect = Expect {
                    size: Some(pointer.size),
                    sha256: Some(pointer.oid.clone()),
                };
                let outcome = transfer::download(
                    gate,
                    archive,
                    &get,
                    &expect,
                    retries,
                    opts.interrupt,
                    received,
                )
                .and_then(|r| match r {
                    Ok(put) => (opts.on_stored)(pointer, &put)
                        .map(|()| Ok(put))
                        .map_err(LfsError::from),
                    Err(reason) => Ok(Err(reason)),
                });
                match outcome {
                    Ok(result) => {
                        if let Ok(mut d) = done.lock() {
                            d.push((pointer.clone(), result));
                        }
                    }
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        if let Ok(mut f) = fatal.lock() {
                            f.get_or_insert(e);
                        }
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
            Ok(put) => report.stored.push((pointer, put)),
            Err(reason) => report.missing.push((pointer, reason)),
        }
    }
    Ok(expired)
}
