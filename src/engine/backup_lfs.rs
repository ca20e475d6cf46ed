//! The LFS part of a snapshot: the Git LFS objects every pointer in the repository
//! names, downloaded once each into the archive, and written back into a restored bare
//! repository (`lfs/objects/<oid[0..2]>/<oid[2..4]>/<oid>`) so `git lfs` works on it.
//!
//! A backup scans only the packs the previous snapshot did not have for pointers
//! (`git::lfs::pointers_in_packs`), adds the objects of the previous LFS part (held and
//! missing), takes those the archive already holds from its `index/lfs/` accelerator
//! (any repository's) and downloads the rest through `crate::lfs`. Objects still missing
//! are carried in the part with their reason and tried again on the next run; an
//! unchanged repository costs no LFS request at all.

use super::backup::BackupOptions;
use super::{Context, EngineError};
use crate::archive::{BlobId, LfsIndexEntry, LfsPart, MissingLfsObject, PutOutcome, Snapshot};
use crate::git::{self, LfsPointer};
use crate::lfs::{self, FetchOptions, LfsError};
use crate::providers::{failover, HttpGate};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The LFS part of a repository's new snapshot (see the module's doc). `scan_packs`: the
/// packs to look for pointers in (those not in the previous snapshot; every pack when it
/// had no LFS part). Fails only when the archive cannot be read or written, the mirror
/// cannot be read, the LFS URL is not one of the connection's hosts or the job was
/// stopped; objects the server does not give are in the part's `missing`. Returns the
/// part and the bytes it added to the archive (for the snapshot's `new_bytes`).
#[allow(clippy::too_many_arguments)]
pub(super) fn backup_lfs(
    ctx: &Context,
    gate: &HttpGate,
    lfs_url: &str,
    mirror: &Path,
    scan_packs: &[PathBuf],
    previous: Option<&LfsPart>,
    opts: &BackupOptions,
    repo: &str,
) -> Result<(LfsPart, u64), EngineError> {
    // oid → entry of what the snapshot holds; oid → size of what it still needs.
    let mut held: BTreeMap<String, LfsIndexEntry> = BTreeMap::new();
    let mut wanted: BTreeMap<String, u64> = BTreeMap::new();
    if let Some(prev) = previous {
        let entries: Vec<LfsIndexEntry> = ctx.archive()?.read_json(&prev.index)?;
        held.extend(entries.into_iter().map(|e| (e.oid.clone(), e)));
        wanted.extend(prev.missing.iter().map(|m| (m.oid.clone(), m.size)));
    }
    for p in git::lfs::pointers_in_packs(mirror, scan_packs)? {
        if !held.contains_key(&p.oid) {
            wanted.entry(p.oid).or_insert(p.size);
        }
    }
    let mut todo = Vec::new();
    for (oid, size) in wanted {
        match ctx.archive()?.lfs_blob(&oid)? {
            Some(blob) => {
                held.insert(oid.clone(), LfsIndexEntry { oid, size, blob });
            }
            None => todo.push(LfsPointer { oid, size }),
        }
    }
    let (mut missing, mut new_bytes) = (Vec::new(), 0);
    if !todo.is_empty() {
        let report = fetch(ctx, gate, lfs_url, &todo, opts)?;
        for (p, put) in report.stored {
            new_bytes += put.stored_bytes;
            held.insert(
                p.oid.clone(),
                LfsIndexEntry {
                    oid: p.oid,
                    size: p.size,
                    blob: put.id,
                },
            );
        }
        for (p, reason) in report.missing {
            // Stored before the transfer stopped (it records each object as it lands).
            if let Some(blob) = ctx.archive()?.lfs_blob(&p.oid)? {
                held.insert(
                    p.oid.clone(),
                    LfsIndexEntry {
                        oid: p.oid,
                        size: p.size,
                        blob,
                    },
                );
                continue;
            }
            opts.progress.notice(&format!(
                "{repo}: LFS object {} ({} bytes) not backed up: {reason}",
                p.oid, p.size
            ));
            missing.push(MissingLfsObject {
                oid: p.oid,
                size: p.size,
                reason,
            });
        }
    }
    let entries: Vec<LfsIndexEntry> = held.into_values().collect();
    let index = ctx.archive()?.put_json(&entries)?;
    Ok((
        LfsPart {
            index: index.id,
            objects: entries.len() as u64,
            bytes: entries.iter().map(|e| e.size).sum(),
            missing,
        },
        new_bytes + index.stored_bytes,
    ))
}

/// Downloads `todo` into the archive, recording each object in `index/lfs/` as it lands
/// (a run stopped half-way keeps what it got).
fn fetch(
    ctx: &Context,
    gate: &HttpGate,
    lfs_url: &str,
    todo: &[LfsPointer],
    opts: &BackupOptions,
) -> Result<lfs::FetchReport, EngineError> {
    let archive = ctx.archive()?;
    let record = |p: &LfsPointer, put: &PutOutcome| archive.record_lfs(&p.oid, &put.id);
    // The batch requests fail over like the job's git fetches.
    let policy = failover::Policy::backing_off(
        opts.retries,
        opts.retry_base,
        MAX_BACKOFF,
        ctx.retry.max_retries + gate.pool().len() as u32,
    );
    let fetch_opts = FetchOptions {
        concurrency: lfs::CONCURRENCY,
        policy,
        retries: opts.retries,
        retry_base: opts.retry_base,
        interrupt: &opts.interrupt,
        on_stored: &record,
    };
    match lfs::fetch_objects(gate, archive, lfs_url, todo, &fetch_opts) {
        Ok(report) => Ok(report),
        Err(LfsError::Archive(a)) => Err(EngineError::Archive(a)),
        // The whole transfer stopped (a stopped job, an LFS URL outside the connection's
        // hosts): every object not stored is missing, for that reason.
        Err(other) => Ok(lfs::FetchReport {
            missing: todo
                .iter()
                .map(|p| (p.clone(), other.to_string()))
                .collect(),
            ..Default::default()
        }),
    }
}

/// Longest wait between two tries of an LFS request.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The LFS part of the snapshot `backup_repository` is writing, the bytes it added and,
/// when the LFS server could not be used, why: none when no pointer was ever found.
/// `lfs_url` is the LFS server the provider reports (`<clone url>/info/lfs`). A failure
/// keeps the previous snapshot's part (its objects are archived) and is reported: it
/// never fails the git part.
#[allow(clippy::too_many_arguments)]
pub(super) fn lfs_part(
    ctx: &Context,
    gate: &HttpGate,
    lfs_url: &str,
    mirror: &Path,
    packs: &[(PathBuf, BlobId)],
    previous: Option<&Snapshot>,
    opts: &BackupOptions,
    repo: &str,
) -> (Option<LfsPart>, u64, Option<String>) {
    let prev_lfs = previous.and_then(|s| s.lfs.as_ref());
    // A format-2 snapshot without an LFS part had no pointer in its packs: only the
    // packs it lacks can add some. Format 1 never looked.
    let scan: Vec<PathBuf> = packs
        .iter()
        .filter(|(_, blob)| match previous {
            Some(s) if s.format >= 2 => !s.git.packs.contains(blob),
            _ => true,
        })
        .map(|(path, _)| path.clone())
        .collect();
    if scan.is_empty() && prev_lfs.is_none_or(|p| p.missing.is_empty()) {
        return (prev_lfs.cloned(), 0, None);
    }
    match backup_lfs(ctx, gate, lfs_url, mirror, &scan, prev_lfs, opts, repo) {
        Ok((part, _)) if part.objects == 0 && part.missing.is_empty() && prev_lfs.is_none() => {
            (None, 0, None)
        }
        Ok((part, bytes)) => (Some(part), bytes, None),
        Err(e) => {
            opts.progress
                .notice(&format!("{repo}: LFS objects not backed up: {e}"));
            (prev_lfs.cloned(), 0, Some(e.to_string()))
        }
    }
}

/// Writes the LFS objects of `part` into the bare repository at `bare_repo`
/// (`lfs/objects/<oid[0..2]>/<oid[2..4]>/<oid>`), each checked against its SHA-256 and
/// size while written, through a temporary file renamed into place. Returns how many.
pub(super) fn write_lfs_objects(
    ctx: &Context,
    part: &LfsPart,
    bare_repo: &Path,
) -> Result<u64, EngineError> {
    let entries: Vec<LfsIndexEntry> = ctx.archive()?.read_json(&part.index)?;
    ctx.archive()?
        .require_blobs(entries.iter().map(|e| &e.blob))?;
    let objects = bare_repo.join("lfs").join("objects");
    for e in &entries {
        if e.oid.len() != 64
            || !e
                .oid
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(EngineError::Internal(format!(
                "LFS index {} names an invalid oid {:?}",
                part.index, e.oid
            )));
        }
        let dir = objects.join(&e.oid[0..2]).join(&e.oid[2..4]);
        write_object(ctx, e, &dir)?;
    }
    Ok(entries.len() as u64)
}

/// Writes one object into `dir`, verified.
fn write_object(ctx: &Context, e: &LfsIndexEntry, dir: &Path) -> Result<(), EngineError> {
    let io = |path: &Path, err: std::io::Error| EngineError::DataDir {
        path: path.to_path_buf(),
        reason: err.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|err| io(dir, err))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".lfs-restore-")
        .tempfile_in(dir)
        .map_err(|err| io(dir, err))?;
    let mut reader = ctx.archive()?.open_blob(&e.blob)?;
    let (mut hasher, mut len) = (Sha256::new(), 0u64);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).map_err(|err| {
            EngineError::Internal(format!("LFS object {}: blob {}: {err}", e.oid, e.blob))
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
        tmp.write_all(&buf[..n])
            .map_err(|err| io(tmp.path(), err))?;
    }
    let sha = hex::encode(hasher.finalize());
    if sha != e.oid || len != e.size {
        return Err(EngineError::Internal(format!(
            "LFS object {} in blob {} has SHA-256 {sha} and {len} bytes, not the {} bytes its oid names",
            e.oid, e.blob, e.size
        )));
    }
    tmp.as_file()
        .sync_all()
        .map_err(|err| io(tmp.path(), err))?;
    let path = dir.join(&e.oid);
    tmp.persist(&path).map_err(|err| io(&path, err.error))?;
    Ok(())
}
