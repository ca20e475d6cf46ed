//! Listing snapshots and restoring a repository from one.

use super::{Context, EngineError};
use crate::archive::{RepoIdentity, Snapshot, SnapshotId};
use crate::git::{self, RefEntry};
use std::path::Path;
use time::OffsetDateTime;

/// Which snapshot to restore.
#[derive(Clone, Debug)]
pub enum SnapshotChoice {
    Latest,
    /// The newest snapshot taken at or before this time.
    At(OffsetDateTime),
    Id(SnapshotId),
}

/// What a restore did.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RestoreReport {
    pub snapshot: String,
    #[serde(with = "time::serde::rfc3339")]
    pub taken_at: OffsetDateTime,
    pub refs: usize,
    pub packs: usize,
    pub target: String,
}

/// Finds a repository by full name (`scope/slug`), optionally within one
/// connection. Looks in the state first, then in the archive itself (so an archive
/// restored onto a fresh machine still works).
pub fn find_repository(
    ctx: &Context,
    full_name: &str,
    connection: Option<&str>,
) -> Result<RepoIdentity, EngineError> {
    let mut found: Vec<RepoIdentity> = Vec::new();
    for r in ctx.state.repositories(connection)? {
        if r.full_name == full_name {
            let provider = ctx
                .state
                .connection(&r.connection)
                .map(|c| c.provider)
                .unwrap_or_default();
            found.push(RepoIdentity {
                connection: r.connection,
                provider,
                repo_id: r.repo_id,
                full_name: r.full_name,
            });
        }
    }
    if found.is_empty() {
        for s in ctx.archive.all_snapshots()? {
            let id = s.repository;
            if id.full_name == full_name
                && connection.is_none_or(|c| c == id.connection)
                && !found
                    .iter()
                    .any(|f| f.connection == id.connection && f.repo_id == id.repo_id)
            {
                found.push(id);
            }
        }
    }
    match found.len() {
        0 => Err(EngineError::NotFound(format!(
            "no repository named {full_name}{} has been backed up (names are scope/slug, e.g. acme/api; see `reposafe repositories`)",
            connection
                .map(|c| format!(" in connection {c}"))
                .unwrap_or_default()
        ))),
        1 => Ok(found.remove(0)),
        _ => Err(EngineError::Ambiguous(format!(
            "{full_name} exists in several connections ({}); pass --connection",
            found
                .iter()
                .map(|f| f.connection.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Snapshots of a repository, oldest first.
pub fn snapshots_of(ctx: &Context, repo: &RepoIdentity) -> Result<Vec<Snapshot>, EngineError> {
    Ok(ctx.archive.snapshots_of(repo)?)
}

fn choose(
    ctx: &Context,
    repo: &RepoIdentity,
    choice: &SnapshotChoice,
) -> Result<Snapshot, EngineError> {
    let all = ctx.archive.snapshots_of(repo)?;
    let none = || {
        EngineError::NotFound(format!(
            "{} has no snapshots yet; run `reposafe backup {}` first",
            repo.full_name, repo.connection
        ))
    };
    match choice {
        SnapshotChoice::Latest => all.into_iter().last().ok_or_else(none),
        SnapshotChoice::At(t) => {
            let first = all.first().map(|s| s.taken_at);
            all.into_iter()
                .rev()
                .find(|s| s.taken_at <= *t)
                .ok_or_else(|| match first {
                    Some(first) => EngineError::NotFound(format!(
                        "{} has no snapshot at or before {t}; its first snapshot was taken at {first}",
                        repo.full_name
                    )),
                    None => none(),
                })
        }
        SnapshotChoice::Id(id) => all.into_iter().find(|s| &s.id == id).ok_or_else(|| {
            EngineError::NotFound(format!(
                "snapshot {id} is not a snapshot of {} (see `reposafe snapshots {}`)",
                repo.full_name, repo.full_name
            ))
        }),
    }
}

/// Restores a repository to a bare repository at `target`. Refuses a non-empty
/// target unless `overwrite`.
pub fn restore(
    ctx: &Context,
    repo: &RepoIdentity,
    choice: &SnapshotChoice,
    target: &Path,
    overwrite: bool,
) -> Result<RestoreReport, EngineError> {
    let snap = choose(ctx, repo, choice)?;
    let refs_bytes = ctx.archive.read_blob(&snap.refs)?;
    let refs: Vec<RefEntry> = serde_json::from_slice(&refs_bytes).map_err(|e| {
        EngineError::Internal(format!(
            "snapshot {}: refs blob {} is unreadable: {e}",
            snap.id, snap.refs
        ))
    })?;
    // Check every blob is present before writing anything.
    ctx.archive.require_blobs(&snap.packs)?;
    let archive = &ctx.archive;
    let mut packs = snap.packs.iter().map(|id| {
        archive
            .open_blob(id)
            .map(|r| Box::new(r) as Box<dyn std::io::Read + Send>)
            .map_err(|e| std::io::Error::other(e.to_string()))
    });
    git::restore_bare(target, &mut packs, &refs, overwrite)?;
    Ok(RestoreReport {
        snapshot: snap.id.to_string(),
        taken_at: snap.taken_at,
        refs: refs.len(),
        packs: snap.packs.len(),
        target: target.display().to_string(),
    })
}
