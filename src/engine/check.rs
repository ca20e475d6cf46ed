//! `check`: is the archive whole, and what does a damaged blob cost?
//!
//! The **structure** check (always) reads every snapshot manifest and every index
//! blob the manifests name (LFS indexes, metadata kind indexes: small, and re-hashed
//! as they are read), and finds every blob any of them names present. It then reads
//! the accelerator indexes (`index/packs/`, `index/lfs/`) and reports entries naming
//! a missing blob (harmless — a backup re-stores what they point to — but a sign of
//! damage). With **`read_data`** every other blob is read back and re-hashed too, or a
//! random `subset_percent` of them (a fresh random choice each run, as restic's
//! `--read-data-subset`, so repeated subset checks cover the whole archive over time).
//!
//! A damaged blob is reported with every snapshot, repository and part that uses it,
//! and each affected snapshot with what still restores: the repository itself when its
//! `git` part is intact, and the other intact parts (`wiki`, `lfs`,
//! `metadata:<kind>`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::RngCore;

use super::service::{AffectedSnapshot, BlobUse, CheckReport, CheckRequest, Damage};
use super::{Context, EngineError};
use crate::archive::{
    Archive, ArchiveError, BlobId, FileKind, LfsIndexEntry, MetadataIndex, Snapshot,
};

/// Where a blob is used: the snapshot (index into the list) and the part.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Use {
    snapshot: usize,
    part: String,
}

/// Every blob the snapshots need, with its uses, and the damage found so far.
#[derive(Default)]
struct Needed {
    uses: BTreeMap<BlobId, BTreeSet<Use>>,
    damage: BTreeMap<BlobId, String>,
}

impl Needed {
    fn add(&mut self, id: BlobId, snapshot: usize, part: &str) {
        let part = part.to_string();
        self.uses
            .entry(id)
            .or_default()
            .insert(Use { snapshot, part });
    }
}

/// Checks the archive (see the module doc).
pub fn check(ctx: &Context, req: &CheckRequest) -> Result<CheckReport, EngineError> {
    let subset = subset_fraction(req)?;
    // Prune's sweep waits: a blob it deletes would show as damage.
    let archive_use = ctx.gate()?.shared()?;
    // The archive itself, not a local copy of its small blobs.
    let uncached = ctx.archive()?.without_cache();
    let archive = &uncached;
    let snaps = archive.all_snapshots()?;
    let (mut needed, indexes) = needed_by(archive, &snaps);
    for id in needed.uses.keys() {
        if !needed.damage.contains_key(id) {
            match archive.require_blobs([id]) {
                Ok(()) => {}
                Err(ArchiveError::MissingBlob { .. }) => {
                    needed.damage.insert(*id, "missing".to_string());
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    let mut report = CheckReport {
        snapshots: snaps.len(),
        blobs: needed.uses.len(),
        read_data: req.read_data || req.subset_percent.is_some(),
        subset_percent: req.subset_percent,
        ..Default::default()
    };
    if report.read_data {
        read_data(archive, &mut needed, &indexes, subset, &mut report);
    }
    report.index_warnings = index_warnings(archive)?;
    if req.read_data && req.subset_percent.is_none() {
        let damaged: BTreeSet<BlobId> = needed.damage.keys().copied().collect();
        (report.incomplete, report.snapshots_walked) =
            super::check_reach::walk_snapshots(ctx, &snaps, &damaged)?;
    }
    if !needed.damage.is_empty() {
        // In shared storage, a blob missing after this process's lease lapsed may have
        // been another appliance's prune, not damage (see `archive_lease`).
        archive_use.still_valid()?;
    }
    report.damaged = damage_list(&snaps, &needed);
    report.affected = affected(&snaps, &needed);
    Ok(report)
}

/// Every blob the archive's manifests name, directly or through their index blobs
/// (LFS, metadata): what prune's sweep must keep. Fails, naming it, when an index blob
/// cannot be read — what it names is then unknown, so nothing may be swept.
pub(super) fn referenced_blobs(archive: &Archive) -> Result<BTreeSet<BlobId>, EngineError> {
    let (needed, _) = needed_by(archive, &archive.all_snapshots()?);
    if let Some((id, error)) = needed.damage.iter().next() {
        return Err(EngineError::Conflict(format!(
            "index blob {id} cannot be read ({error}): the blobs it names are unknown, so \
             nothing is swept; run `reposafe check` to see what is damaged"
        )));
    }
    Ok(needed.uses.into_keys().collect())
}

/// The fraction of blobs to read back: 1 for `read_data`, the subset's share else.
fn subset_fraction(req: &CheckRequest) -> Result<f64, EngineError> {
    match req.subset_percent {
        None => Ok(1.0),
        Some(p) if p > 0.0 && p <= 100.0 => Ok(p / 100.0),
        Some(p) => Err(EngineError::Field {
            field: "subset".into(),
            message: format!("{p}% is not a share of the archive: give a percentage in (0, 100]"),
        }),
    }
}

/// Parsed index blobs by id: an index is shared by many snapshots, read once.
#[derive(Default)]
struct IndexCache {
    lfs: HashMap<BlobId, Result<Vec<LfsIndexEntry>, String>>,
    metadata: HashMap<BlobId, Result<MetadataIndex, String>>,
}

impl IndexCache {
    /// Whether `id` is an index blob, already read (so re-hashed) by the structure check.
    fn holds(&self, id: &BlobId) -> bool {
        self.lfs.contains_key(id) || self.metadata.contains_key(id)
    }
}

/// Every blob `snaps` need, with its uses (index blobs read once each, unreadable ones
/// recorded as damage).
fn needed_by(archive: &Archive, snaps: &[Snapshot]) -> (Needed, IndexCache) {
    let mut needed = Needed::default();
    let mut indexes = IndexCache::default();
    for (i, s) in snaps.iter().enumerate() {
        collect(archive, &mut indexes, &mut needed, i, s);
    }
    (needed, indexes)
}

/// Adds snapshot `i`'s blobs, reading its index blobs for the blobs they name.
fn collect(archive: &Archive, cache: &mut IndexCache, needed: &mut Needed, i: usize, s: &Snapshot) {
    for (part, git) in std::iter::once(("git", &s.git)).chain(s.wiki.iter().map(|w| ("wiki", w))) {
        needed.add(git.refs, i, part);
        git.packs.iter().for_each(|p| needed.add(*p, i, part));
    }
    if let Some(l) = &s.lfs {
        needed.add(l.index, i, "lfs");
        let entries = cache
            .lfs
            .entry(l.index)
            .or_insert_with(|| archive.read_json(&l.index).map_err(|e| e.to_string()));
        match entries {
            Ok(list) => list.iter().for_each(|e| needed.add(e.blob, i, "lfs")),
            Err(e) => {
                needed.damage.insert(l.index, e.clone());
            }
        }
    }
    for (kind, k) in s.metadata.iter().flat_map(|m| m.kinds.iter()) {
        let part = format!("metadata:{kind}");
        needed.add(k.index, i, &part);
        let index = cache
            .metadata
            .entry(k.index)
            .or_insert_with(|| archive.read_json(&k.index).map_err(|e| e.to_string()));
        match index {
            Ok(index) => {
                for item in &index.items {
                    needed.add(item.blob, i, &part);
                    item.files.iter().for_each(|f| needed.add(f.blob, i, &part));
                }
            }
            Err(e) => {
                needed.damage.insert(k.index, e.clone());
            }
        }
    }
}

/// Reads back (re-hashes) the present blobs not read yet, all or a random share.
fn read_data(
    archive: &Archive,
    needed: &mut Needed,
    indexes: &IndexCache,
    subset: f64,
    report: &mut CheckReport,
) {
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    let threshold = (subset * u64::MAX as f64) as u64;
    let chosen: Vec<BlobId> = needed
        .uses
        .keys()
        .filter(|id| !needed.damage.contains_key(id) && !indexes.holds(id))
        .filter(|id| subset >= 1.0 || draw(&key, id) <= threshold)
        .copied()
        .collect();
    for id in chosen {
        report.blobs_read += 1;
        match archive.verify_blob(&id) {
            Ok(len) => report.bytes_read += len,
            Err(e) => {
                needed.damage.insert(id, e.to_string());
            }
        }
    }
}

/// A uniform draw for `id` under this run's random `key`.
fn draw(key: &[u8; 32], id: &BlobId) -> u64 {
    let h = blake3::keyed_hash(key, id.to_hex().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// Accelerator index entries that name a missing or unreadable blob.
fn index_warnings(archive: &Archive) -> Result<Vec<String>, ArchiveError> {
    let mut out = Vec::new();
    for (kind, dir) in [
        (FileKind::PackIndex, "index/packs"),
        (FileKind::LfsIndex, "index/lfs"),
    ] {
        for (key, blob) in archive.index_entries(kind)? {
            match blob {
                Ok(id) if archive.has_blob(&id) => {}
                Ok(id) => out.push(format!(
                    "{dir}/{key} names blob {id}, which is missing (the next backup that \
                     needs it stores it again)"
                )),
                Err(e) => out.push(format!("{dir}/{key} is unreadable: {e}")),
            }
        }
    }
    Ok(out)
}

/// Each damaged blob with every use of it.
fn damage_list(snaps: &[Snapshot], needed: &Needed) -> Vec<Damage> {
    needed
        .damage
        .iter()
        .map(|(id, error)| Damage {
            blob: id.to_hex(),
            error: error.clone(),
            used_by: needed
                .uses
                .get(id)
                .into_iter()
                .flatten()
                .map(|u| BlobUse {
                    snapshot: snaps[u.snapshot].id.as_str().to_string(),
                    repository: snaps[u.snapshot].repository.full_name.clone(),
                    part: u.part.clone(),
                })
                .collect(),
        })
        .collect()
}

/// The parts of a snapshot as the check names them.
fn part_names(s: &Snapshot) -> Vec<String> {
    let mut out: Vec<String> = s
        .part_names()
        .into_iter()
        .filter(|p| *p != "metadata")
        .map(String::from)
        .collect();
    out.extend(
        s.metadata
            .iter()
            .flat_map(|m| m.kinds.keys().map(|k| format!("metadata:{k}"))),
    );
    out
}

/// Each snapshot a damaged blob touches, with its damaged and intact parts.
fn affected(snaps: &[Snapshot], needed: &Needed) -> Vec<AffectedSnapshot> {
    let mut damaged: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for id in needed.damage.keys() {
        for u in needed.uses.get(id).into_iter().flatten() {
            damaged
                .entry(u.snapshot)
                .or_default()
                .insert(u.part.clone());
        }
    }
    damaged
        .into_iter()
        .map(|(i, parts)| {
            let s = &snaps[i];
            AffectedSnapshot {
                snapshot: s.id.as_str().to_string(),
                repository: s.repository.full_name.clone(),
                restores: !parts.contains("git"),
                intact_parts: part_names(s)
                    .into_iter()
                    .filter(|p| !parts.contains(p))
                    .collect(),
                damaged_parts: parts.into_iter().collect(),
            }
        })
        .collect()
}
