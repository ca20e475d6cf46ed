//! `check --read-data`'s connectivity step: do each snapshot's packs hold every object
//! its refs reach? A blob can be intact and a snapshot still unrestorable, if the packs it
//! names were never the whole history (a bug, an archive assembled by hand).
//!
//! Per history and git part (`git`, `wiki`), snapshots oldest first: their pack lists
//! usually grow by one pack per snapshot, so one scratch repository is extended pack by
//! pack (each archived pack read, re-hashed and indexed once) and each snapshot's refs are
//! walked when it holds exactly that snapshot's packs; a list that is not an extension
//! starts a new scratch repository. A snapshot with a damaged pack is already reported and
//! skipped; one whose refs and packs equal an already walked one's is not walked again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;

use super::prune::{kept_tips, Part};
use super::service::IncompleteSnapshot;
use super::{Context, EngineError};
use crate::archive::{BlobId, Snapshot};
use crate::git::Consolidation;

/// Walks every snapshot whose packs are intact; returns those whose refs reach an
/// object their packs lack, and how many snapshot parts were walked.
pub(super) fn walk_snapshots(
    ctx: &Context,
    snaps: &[Snapshot],
    damaged: &BTreeSet<BlobId>,
) -> Result<(Vec<IncompleteSnapshot>, usize), EngineError> {
    let mut histories: BTreeMap<String, Vec<&Snapshot>> = BTreeMap::new();
    for s in snaps {
        histories
            .entry(s.repository.dir_name())
            .or_default()
            .push(s);
    }
    let (mut incomplete, mut walked) = (Vec::new(), 0);
    for history in histories.values_mut() {
        history.sort_by(|a, b| (a.taken_at, &a.id).cmp(&(b.taken_at, &b.id)));
        for part in [Part::Git, Part::Wiki] {
            walk_part(ctx, history, part, damaged, &mut incomplete, &mut walked)?;
        }
    }
    Ok((incomplete, walked))
}

/// A scratch repository and the packs it holds, in order.
struct Loaded {
    repo: Consolidation,
    packs: Vec<BlobId>,
}

fn walk_part(
    ctx: &Context,
    history: &[&Snapshot],
    part: Part,
    damaged: &BTreeSet<BlobId>,
    incomplete: &mut Vec<IncompleteSnapshot>,
    walked: &mut usize,
) -> Result<(), EngineError> {
    let never = AtomicBool::new(false);
    let scratch = ctx.scratch_dir("check");
    let mut loaded: Option<Loaded> = None;
    let mut done: BTreeSet<(BlobId, Vec<BlobId>)> = BTreeSet::new();
    for snap in history {
        let Some(git) = part.of(snap) else { continue };
        if git.packs.iter().any(|p| damaged.contains(p)) || damaged.contains(&git.refs) {
            continue;
        }
        if !done.insert((git.refs, git.packs.clone())) {
            continue;
        }
        let extends = loaded
            .as_ref()
            .is_some_and(|l| git.packs.starts_with(&l.packs));
        if !extends {
            loaded = Some(Loaded {
                repo: Consolidation::new(&scratch)?,
                packs: Vec::new(),
            });
        }
        let Some(l) = loaded.as_mut() else { continue };
        for blob in &git.packs[l.packs.len()..] {
            l.repo.add_pack_stream(ctx.archive()?.open_blob(blob)?)?;
            l.packs.push(*blob);
        }
        let tips = kept_tips(ctx, std::slice::from_ref(*snap), part)?;
        *walked += 1;
        if let Err(e) = l.repo.reachable(&tips, &never) {
            incomplete.push(IncompleteSnapshot {
                snapshot: snap.id.as_str().to_string(),
                repository: snap.repository.full_name.clone(),
                part: part.name().to_string(),
                error: e.to_string(),
            });
        }
    }
    Ok(())
}
