//! `prune`: gives back the space of forgotten snapshots.
//!
//! Two steps (the design is in `docs/ARCHITECTURE.md`, "Retention, forget and prune"):
//!
//! 1. **Consolidate** each repository history whose snapshots name more than one pack
//!    (or that `forget` just thinned): under the repository's lock (its backups wait),
//!    one pack of exactly what the kept snapshots' refs reach is written from their packs
//!    (the mirror's copies when it has them, else the archived ones) with
//!    [`git::Consolidation`], stored as a blob, and every kept manifest of the history is
//!    rewritten in place to name it (same id, same refs). The mirror gets the same pack
//!    and drops the ones it replaces. The git part and the wiki part are done alike.
//! 2. **Sweep**, with every backup, restore, export and check of this process kept out
//!    ([`super::ArchiveGate`]): every blob no manifest names, directly or through an
//!    index blob, is deleted, then the accelerator entries naming deleted blobs.
//!
//! New data is always durable before old data goes, so a kill at any point leaves every
//! kept snapshot restorable: before a manifest's rewrite it names the old packs, which
//! only the sweep removes, and the sweep removes only what no manifest names. With
//! `dry_run` nothing is written and the report says what would be consolidated and swept.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use gix::hash::ObjectId;

use super::archive_gate::SharedGuard;
use super::service::{PruneReport, PruneRequest, PrunedHistory};
use super::{Context, EngineError};
use crate::archive::{BlobId, FileKind, GitPart, RepoIdentity, Snapshot};
use crate::git::{self, RefEntry, RefTarget};

/// Prunes the whole archive: consolidates every history with a pack chain, then sweeps.
pub fn prune(
    ctx: &Context,
    req: &PruneRequest,
    progress: &dyn PruneProgress,
) -> Result<PruneReport, EngineError> {
    let histories: Vec<RepoIdentity> = ctx
        .archive()?
        .histories()?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    prune_histories(ctx, &histories, &BTreeSet::new(), req.dry_run, progress)
}

/// What a prune reports as it goes (a CLI bar); every method does nothing by default.
pub trait PruneProgress: Sync {
    /// `n` histories are to be consolidated.
    fn histories(&self, _n: usize) {}
    /// Consolidating this history (`full_name`).
    fn history(&self, _full_name: &str) {}
    /// Consolidation is over; the sweep of unnamed blobs begins.
    fn sweeping(&self) {}
}

/// A prune that shows nothing.
pub struct NoPruneProgress;
impl PruneProgress for NoPruneProgress {}

/// One step of a prune's progress as data: what the daemon streams to a CLI that
/// prunes through it (`POST /api/v1/prune` with `Accept: text/event-stream`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PruneEvent {
    Histories(usize),
    History(String),
    Sweeping,
}

impl PruneEvent {
    /// Hands the step to `progress`.
    pub fn report_to(self, progress: &dyn PruneProgress) {
        match self {
            PruneEvent::Histories(n) => progress.histories(n),
            PruneEvent::History(name) => progress.history(&name),
            PruneEvent::Sweeping => progress.sweeping(),
        }
    }
}

/// A [`PruneProgress`] that hands each step to a function as a [`PruneEvent`].
pub struct PruneEvents<F>(pub F);

impl<F: Fn(PruneEvent) + Sync> PruneProgress for PruneEvents<F> {
    fn histories(&self, n: usize) {
        (self.0)(PruneEvent::Histories(n))
    }
    fn history(&self, full_name: &str) {
        (self.0)(PruneEvent::History(full_name.to_string()))
    }
    fn sweeping(&self) {
        (self.0)(PruneEvent::Sweeping)
    }
}

/// Consolidates `histories` (those in `thinned`, by history directory, even when they
/// have a single pack: `forget` removed snapshots whose objects it may hold), then sweeps
/// the whole archive.
pub fn prune_histories(
    ctx: &Context,
    histories: &[RepoIdentity],
    thinned: &BTreeSet<String>,
    dry_run: bool,
    progress: &dyn PruneProgress,
) -> Result<PruneReport, EngineError> {
    let started = Instant::now();
    let mut report = PruneReport {
        dry_run,
        archive_bytes_before: ctx.archive()?.disk_usage()?,
        ..Default::default()
    };
    progress.histories(histories.len());
    for repo in histories {
        progress.history(&repo.full_name);
        let force = thinned.contains(&repo.dir_name());
        // One history that cannot be consolidated (a damaged pack) keeps its packs and
        // does not stop the others; the sweep never takes what its manifests name.
        match consolidate_history(ctx, repo, force, dry_run) {
            Ok(done) => report.histories.extend(done),
            Err(e) => report.failed.push(format!(
                "{} (connection {}): not consolidated: {e}",
                repo.full_name, repo.connection
            )),
        }
    }
    progress.sweeping();
    sweep(ctx, dry_run, &mut report)?;
    report.archive_bytes_after = if dry_run {
        report
            .archive_bytes_before
            .saturating_sub(report.bytes_freed)
    } else {
        ctx.archive()?.disk_usage()?
    };
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Which git part of a snapshot: the repository or its wiki.
#[derive(Clone, Copy)]
pub(super) enum Part {
    Git,
    Wiki,
}

impl Part {
    pub(super) fn name(self) -> &'static str {
        match self {
            Part::Git => "git",
            Part::Wiki => "wiki",
        }
    }

    pub(super) fn of(self, snap: &Snapshot) -> Option<&GitPart> {
        match self {
            Part::Git => Some(&snap.git),
            Part::Wiki => snap.wiki.as_ref(),
        }
    }

    fn of_mut(self, snap: &mut Snapshot) -> Option<&mut GitPart> {
        match self {
            Part::Git => Some(&mut snap.git),
            Part::Wiki => snap.wiki.as_mut(),
        }
    }

    /// The bare mirror this part is fetched into.
    fn mirror(self, ctx: &Context, repo: &RepoIdentity) -> PathBuf {
        let mirror = ctx.mirror_dir(repo);
        match self {
            Part::Git => mirror,
            Part::Wiki => Context::wiki_mirror_dir(&mirror),
        }
    }
}

/// Consolidates both git parts of one history, under its repository lock and the
/// archive gate (shared).
fn consolidate_history(
    ctx: &Context,
    repo: &RepoIdentity,
    force: bool,
    dry_run: bool,
) -> Result<Vec<PrunedHistory>, EngineError> {
    let _repo_lock = lock(ctx, repo)?;
    // Its new pack is stored before a manifest names it: a sweep (this process's, or
    // another appliance's on a shared archive) must wait, as for a backup.
    let archive = ctx.gate()?.shared()?;
    let mut out = Vec::new();
    for part in [Part::Git, Part::Wiki] {
        // Re-read per part: the git part's rewrite changed the manifests.
        let snaps = ctx.archive()?.snapshots_of(repo)?;
        let done = consolidate_part(ctx, repo, &snaps, part, force, dry_run, &archive)?;
        if let Some(done) = done {
            out.push(done);
        }
    }
    Ok(out)
}

/// Takes the repository's backup lock, waiting for a backup of it to finish.
fn lock(ctx: &Context, repo: &RepoIdentity) -> Result<super::repo_lock::RepoGuard, EngineError> {
    use super::repo_lock::{acquire, Wait, MAX_WAIT};
    let never = AtomicBool::new(false);
    let wait = Wait {
        interrupt: &never,
        deadline: None,
        max_wait: MAX_WAIT,
        on_wait: &|| tracing::info!(repository = %repo.full_name, "prune waits for a backup of it"),
    };
    acquire(&ctx.mirror_dir(repo), &wait).map_err(|why| {
        EngineError::Conflict(format!(
            "{}: a backup of it held the repository for too long ({why:?}); prune it later",
            repo.full_name
        ))
    })
}

/// The packs a part's snapshots name together, in first-use order.
fn pack_chain(snaps: &[Snapshot], part: Part) -> Vec<BlobId> {
    let mut seen = BTreeSet::new();
    snaps
        .iter()
        .filter_map(|s| part.of(s))
        .flat_map(|p| p.packs.iter())
        .filter(|id| seen.insert(**id))
        .copied()
        .collect()
}

/// Writes one pack of what a part's kept refs reach and rewrites the manifests to name
/// it; `None` when there is nothing to do (no such part, or a single pack not thinned).
fn consolidate_part(
    ctx: &Context,
    repo: &RepoIdentity,
    snaps: &[Snapshot],
    part: Part,
    force: bool,
    dry_run: bool,
    archive_use: &SharedGuard<'_>,
) -> Result<Option<PrunedHistory>, EngineError> {
    let chain = pack_chain(snaps, part);
    let mirror = part.mirror(ctx, repo);
    if chain.is_empty()
        || (chain.len() == 1 && !force && mirror_is_compact(ctx, &mirror, &chain[0])?)
    {
        return Ok(None);
    }
    let mut done = PrunedHistory {
        repository: repo.full_name.clone(),
        connection: repo.connection.clone(),
        part: part.name().to_string(),
        snapshots: snaps.iter().filter(|s| part.of(s).is_some()).count(),
        packs_before: chain.len(),
        bytes_before: stored_sizes(ctx, &chain)?,
        ..Default::default()
    };
    if dry_run {
        return Ok(Some(done));
    }
    let mirror_packs = mirror_packs_in_chain(ctx, &mirror, &chain)?;
    let scratch = ctx.scratch_dir("prune");
    let mut sources = git::Consolidation::new(&scratch)?;
    let never = AtomicBool::new(false);
    for blob in &chain {
        match mirror_packs.get(blob) {
            Some((_, path)) => sources.add_pack_file(path)?,
            None => sources.add_pack_stream(ctx.archive()?.open_blob(blob)?)?,
        }
    }
    let tips = kept_tips(ctx, snaps, part)?;
    let out_dir = tempfile::Builder::new()
        .prefix(".reposafe-consolidated-")
        .tempdir_in(&scratch)
        .map_err(|e| EngineError::DataDir {
            path: scratch.clone(),
            reason: e.to_string(),
        })?;
    let pack = sources.write(&tips, out_dir.path(), &never)?;
    drop(sources);
    let stored = ctx.archive()?.put_file(&pack.path)?;
    ctx.archive()?.record_pack(&pack.pack_hash, &stored.id)?;
    let consolidated = Consolidated {
        blob: stored.id,
        size: pack.size,
    };
    done.snapshots = name_consolidated_pack(ctx, repo, snaps, part, &consolidated, archive_use)?;
    if done.snapshots == 0 {
        // Another appliance forgot or rewrote every one of them meanwhile: no manifest
        // names the new pack (the sweep takes it) and nothing was consolidated.
        return Ok(None);
    }
    let replaced: BTreeSet<String> = mirror_packs.values().map(|(h, _)| h.clone()).collect();
    if mirror.is_dir() {
        done.mirror_packs_removed = git::compact_mirror(&mirror, &pack, &replaced)?;
    }
    done.objects_before = pack.source_objects;
    done.objects_after = pack.objects;
    done.bytes_after = stored_sizes(ctx, &[stored.id])?;
    done.recompressed = pack.recompressed;
    Ok(Some(done))
}

/// A history part's consolidated pack, stored.
struct Consolidated {
    blob: BlobId,
    /// Its size as a pack file.
    size: u64,
}

/// Rewrites the manifests of `snaps` to name `pack` as their part's only pack; returns
/// how many of them name it now. A manifest another appliance forgot or rewrote since
/// it was read is left as that appliance made it, and not counted.
fn name_consolidated_pack(
    ctx: &Context,
    repo: &RepoIdentity,
    snaps: &[Snapshot],
    part: Part,
    pack: &Consolidated,
    archive_use: &SharedGuard<'_>,
) -> Result<usize, EngineError> {
    let mut named = 0;
    for snap in snaps {
        let mut new = snap.clone();
        let Some(git_part) = part.of_mut(&mut new) else {
            continue;
        };
        if git_part.packs == [pack.blob] {
            named += 1;
            continue;
        }
        git_part.packs = vec![pack.blob];
        if let Part::Git = part {
            new.stats.pack_bytes = pack.size;
        }
        // The pack it stored is still there (see `archive_lease`).
        archive_use.still_valid()?;
        if ctx.archive()?.rewrite_snapshot(&new)?.is_some() {
            named += 1;
        } else {
            tracing::info!(
                repository = %repo.full_name,
                snapshot = %new.id,
                "another appliance forgot or rewrote this snapshot meanwhile; left as it is"
            );
        }
    }
    Ok(named)
}

/// Whether the mirror (if any) holds just the one pack the history names: else a
/// prune killed while compacting it left old packs (or half-removed ones) beside the
/// consolidated one.
fn mirror_is_compact(ctx: &Context, mirror: &Path, pack: &BlobId) -> Result<bool, EngineError> {
    if !mirror.is_dir() {
        return Ok(true);
    }
    if !git::strays(mirror)?.is_empty() {
        return Ok(false);
    }
    let packs = git::list_packs(mirror)?;
    Ok(match packs.as_slice() {
        [] => true,
        [only] => ctx.archive()?.pack_blob(&only.pack_hash)?.as_ref() == Some(pack),
        _ => false,
    })
}

/// Stored bytes of these blobs together.
fn stored_sizes(ctx: &Context, blobs: &[BlobId]) -> Result<u64, EngineError> {
    let mut total = 0;
    for b in blobs {
        total += ctx.archive()?.stored_size(b)?.unwrap_or(0);
    }
    Ok(total)
}

/// The mirror's packs that are archived as one of `chain`'s blobs: blob → (pack hash,
/// path). Empty when there is no mirror.
fn mirror_packs_in_chain(
    ctx: &Context,
    mirror: &Path,
    chain: &[BlobId],
) -> Result<BTreeMap<BlobId, (String, PathBuf)>, EngineError> {
    if !mirror.is_dir() {
        return Ok(BTreeMap::new());
    }
    let wanted: BTreeSet<&BlobId> = chain.iter().collect();
    let mut out = BTreeMap::new();
    for pack in git::list_packs(mirror)? {
        if let Some(blob) = ctx.archive()?.pack_blob(&pack.pack_hash)? {
            if wanted.contains(&blob) {
                out.insert(blob, (pack.pack_hash, pack.path));
            }
        }
    }
    Ok(out)
}

/// Every object the part's refs point to, over all these snapshots.
pub(super) fn kept_tips(
    ctx: &Context,
    snaps: &[Snapshot],
    part: Part,
) -> Result<Vec<ObjectId>, EngineError> {
    let mut refs_blobs = BTreeSet::new();
    let mut tips = BTreeSet::new();
    for snap in snaps {
        let Some(p) = part.of(snap) else { continue };
        if !refs_blobs.insert(p.refs) {
            continue;
        }
        let refs: Vec<RefEntry> = ctx.archive()?.read_json(&p.refs)?;
        for r in refs {
            if let RefTarget::Object(hex) = &r.target {
                let id = ObjectId::from_hex(hex.as_bytes()).map_err(|e| {
                    EngineError::Internal(format!(
                        "snapshot {} names ref {} with an invalid object id {hex:?}: {e}",
                        snap.id, r.name
                    ))
                })?;
                tips.insert(id);
            }
        }
    }
    Ok(tips.into_iter().collect())
}

/// Deletes every blob no manifest names, and accelerator entries naming deleted or
/// absent blobs, with the archive closed to every other user of this process.
fn sweep(ctx: &Context, dry_run: bool, report: &mut PruneReport) -> Result<(), EngineError> {
    let alone = ctx.gate()?.exclusive()?;
    let referenced = super::check::referenced_blobs(ctx.archive()?)?;
    for (id, size) in ctx.archive()?.list_blobs()? {
        if referenced.contains(&id) {
            continue;
        }
        if !dry_run {
            alone.still_held()?;
            ctx.archive()?.delete_blob(&id)?;
        }
        report.blobs_removed += 1;
        report.bytes_freed += size;
    }
    // Every blob no manifest names is gone now (or was never there), so an entry naming
    // one is stale; an entry naming a needed but missing blob stays for `check` to report.
    for kind in [FileKind::PackIndex, FileKind::LfsIndex] {
        for (key, blob) in ctx.archive()?.index_entries(kind)? {
            let stale = blob.map_or(true, |id| !referenced.contains(&id));
            if stale {
                if !dry_run {
                    alone.still_held()?;
                    ctx.archive()?.delete_index_entry(kind, &key)?;
                }
                report.index_entries_removed += 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::Backend;
    use crate::engine::snapshot_fixture::{Fixture, Parts};
    use std::sync::Mutex;

    /// Everything a prune reported, in order.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<String>>);

    impl PruneProgress for Recorded {
        fn histories(&self, n: usize) {
            self.0.lock().expect("lock").push(format!("histories {n}"));
        }
        fn history(&self, full_name: &str) {
            self.0
                .lock()
                .expect("lock")
                .push(format!("history {full_name}"));
        }
        fn sweeping(&self) {
            self.0.lock().expect("lock").push("sweeping".into());
        }
    }

    /// Another appliance forgets a history's snapshots while this prune consolidates
    /// it: every rewrite finds its manifest gone, so no manifest names the new pack and
    /// the history is not reported as consolidated; where one is left, it is counted.
    #[test]
    fn a_history_forgotten_by_another_appliance_meanwhile_is_not_reported_consolidated() {
        let (f, store) = Fixture::shared();
        let mut repo = Fixture::repo(&[("a.txt", b"one\n")]);
        let (first, _) = f.git_part(&repo);
        repo.write("b.txt", b"two\n");
        repo.commit("second");
        let (mut second, _) = f.git_part(&repo);
        // Both packs, so that no snapshot names the consolidated pack alone already.
        second.packs.insert(0, first.packs[0]);
        let with = |git: &GitPart| Parts {
            git: Some(git.clone()),
            ..Parts::default()
        };
        f.write(1_700_000_000, with(&first));
        let last = f.write(1_700_000_100, with(&second));
        let repo_id = last.repository.clone();
        let snaps = f.archive().snapshots_of(&repo_id).expect("snapshots");
        assert_eq!(pack_chain(&snaps, Part::Git).len(), 2);
        let forget = |snap: &Snapshot| {
            let manifest = format!("{}/{}", repo_id.dir_name(), snap.id.as_str());
            store
                .delete(FileKind::Snapshot, &manifest)
                .expect("the other appliance forgets");
        };
        let archive_use = f.ctx.gate().expect("gate").shared().expect("archive use");
        let consolidate = |snaps: &[Snapshot]| {
            consolidate_part(
                &f.ctx,
                &repo_id,
                snaps,
                Part::Git,
                false,
                false,
                &archive_use,
            )
            .expect("consolidate")
        };

        snaps.iter().for_each(forget);
        let done = consolidate(&snaps);
        assert!(done.is_none(), "nothing was consolidated: {done:?}");
        assert!(f
            .archive()
            .snapshots_of(&repo_id)
            .expect("snapshots")
            .is_empty());

        f.write(1_700_000_000, with(&first));
        f.write(1_700_000_100, with(&second));
        let snaps = f.archive().snapshots_of(&repo_id).expect("snapshots");
        forget(&snaps[0]);
        let done = consolidate(&snaps).expect("one snapshot is left to consolidate");
        assert_eq!(done.snapshots, 1, "the forgotten one is not counted");
        let kept = f.archive().snapshots_of(&repo_id).expect("snapshots");
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].git.packs.len(), 1, "it names the consolidated pack");
    }

    #[test]
    fn a_prune_reports_each_history_then_the_sweep() {
        let f = Fixture::new();
        f.write(1_700_000_000, Parts::default());
        let recorded = Recorded::default();
        prune(&f.ctx, &PruneRequest { dry_run: true }, &recorded).expect("prune");
        assert_eq!(
            *recorded.0.lock().expect("lock"),
            vec!["histories 1", "history ws/app", "sweeping"]
        );
    }
}
