//! Snapshot manifests: one small JSON file per repository backup, stored as a
//! [`FileKind::Snapshot`] with id `<repo-dir>/<snapshot-id>` (locally
//! `snapshots/<repo-dir>/<snapshot-id>.json`), created once and replaced only by prune's
//! [`Archive::rewrite_snapshot`] (same snapshot, its packs consolidated).
//!
//! A manifest names the repository (connection, provider, stable id, full name),
//! when it was taken, and its parts ([`super::parts`]): the blob holding its refs and
//! the blobs holding every git pack needed to rebuild it, and the wiki, LFS and
//! metadata parts when it has them. `<repo-dir>` is derived from the connection's
//! immutable id and the repository's stable id, so renames on the server keep one
//! history and a connection removed and added again under the same name starts a new one.

use super::backend::FileKind;
use super::parts::{GitPart, LfsPart, MetadataPart};
use super::{Archive, ArchiveError, BlobId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::path::PathBuf;
use time::OffsetDateTime;

/// A snapshot's id: `<UTC time as YYYYMMDDTHHMMSSZ>-<8 hex digits>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SnapshotId(String);

impl SnapshotId {
    /// A new id for a snapshot taken at `at`.
    pub fn new(at: OffsetDateTime) -> SnapshotId {
        let at = at.to_offset(time::UtcOffset::UTC);
        let r: u32 = rand::random();
        SnapshotId(format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z-{r:08x}",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second()
        ))
    }

    /// Parses and validates a user-given id.
    pub fn parse(s: &str) -> Result<SnapshotId, ArchiveError> {
        let ok = s.len() == 25
            && s.as_bytes()[8] == b'T'
            && s.as_bytes()[15] == b'Z'
            && s.as_bytes()[16] == b'-'
            && s.bytes()
                .enumerate()
                .all(|(i, b)| matches!(i, 8 | 15 | 16) || b.is_ascii_hexdigit());
        if ok {
            Ok(SnapshotId(s.to_string()))
        } else {
            Err(ArchiveError::InvalidSnapshotId(s.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SnapshotId({})", self.0)
    }
}

/// Which repository a snapshot is of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoIdentity {
    /// The connection's name, e.g. `acme` (for display and lookups by name).
    pub connection: String,
    /// The connection's immutable id, created once when it was added; empty in
    /// manifests written before ids existed, which means the name (see [`Self::history_key`]).
    #[serde(default)]
    pub connection_id: String,
    /// The provider id, e.g. `bitbucket-cloud`.
    pub provider: String,
    /// The provider's stable repository id (survives renames).
    pub repo_id: String,
    /// `scope/slug` at the time of the snapshot.
    pub full_name: String,
}

impl RepoIdentity {
    /// What keys this repository's history: the connection id, or its name for a
    /// manifest written before connection ids existed (connections of that time have
    /// `id = name`, so their `<repo-dir>` is unchanged).
    pub fn history_key(&self) -> &str {
        if self.connection_id.is_empty() {
            &self.connection
        } else {
            &self.connection_id
        }
    }

    /// The directory under `snapshots/` holding this repository's manifests (and the
    /// name of its mirror): the first 16 hex digits of BLAKE3(history key ‖ 0 ‖ repo id).
    pub fn dir_name(&self) -> String {
        let mut h = blake3::Hasher::new();
        h.update(self.history_key().as_bytes());
        h.update(&[0]);
        h.update(self.repo_id.as_bytes());
        hex::encode(&h.finalize().as_bytes()[..8])
    }
}

/// Sizes recorded with a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotStats {
    /// Bytes this snapshot added to the archive (blobs + manifest).
    pub new_bytes: u64,
    /// Uncompressed size of all packs the snapshot needs.
    pub pack_bytes: u64,
    /// Bytes received from the server by the fetch behind this snapshot.
    pub fetched_bytes: u64,
}

/// One backup of one repository at one point in time.
///
/// Format 2 (written now) keeps the repository's parts under `parts`: `git`, and
/// when present `wiki`, `lfs`, `metadata`. Format 1 (read only) had the git part's
/// fields at the top level and nothing else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawSnapshot", into = "RawSnapshot")]
pub struct Snapshot {
    pub format: u32,
    pub id: SnapshotId,
    pub repository: RepoIdentity,
    pub taken_at: OffsetDateTime,
    /// The repository itself.
    pub git: GitPart,
    /// Its wiki repository, when it has one.
    pub wiki: Option<GitPart>,
    /// Its Git LFS objects, when any pointer was found.
    pub lfs: Option<LfsPart>,
    /// Its metadata documents, when the provider lists any.
    pub metadata: Option<MetadataPart>,
    pub main_branch: Option<String>,
    pub stats: SnapshotStats,
}

impl Snapshot {
    /// Every blob the manifest names directly (index blobs name the rest).
    pub fn blobs(&self) -> impl Iterator<Item = &BlobId> {
        fn git(p: &GitPart) -> impl Iterator<Item = &BlobId> {
            std::iter::once(&p.refs).chain(p.packs.iter())
        }
        let wiki = self.wiki.iter().flat_map(git);
        let lfs = self.lfs.iter().map(|l| &l.index);
        let meta = self
            .metadata
            .iter()
            .flat_map(|m| m.kinds.values().map(|k| &k.index));
        git(&self.git).chain(wiki).chain(lfs).chain(meta)
    }

    /// What this snapshot lacks that the repository has, one line each (a kind the
    /// credential may not read, LFS objects the server did not give): empty for a
    /// complete snapshot.
    pub fn missing(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(m) = &self.metadata {
            out.extend(
                m.missing
                    .iter()
                    .map(|k| format!("{}: {}", k.kind, k.reason)),
            );
        }
        if let Some(l) = &self.lfs {
            if !l.missing.is_empty() {
                out.push(format!(
                    "lfs: {} object(s) not downloaded (first: {} {})",
                    l.missing.len(),
                    l.missing[0].oid,
                    l.missing[0].reason
                ));
            }
        }
        out
    }

    /// The names of the parts it holds (`git`, `wiki`, `lfs`, `metadata`).
    pub fn part_names(&self) -> Vec<&'static str> {
        let mut out = vec!["git"];
        if self.wiki.is_some() {
            out.push("wiki");
        }
        if self.lfs.is_some() {
            out.push("lfs");
        }
        if self.metadata.is_some() {
            out.push("metadata");
        }
        out
    }
}

/// A manifest as stored: format 1 (git fields at the top) or 2 (`parts`).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSnapshot {
    format: u32,
    id: SnapshotId,
    repository: RepoIdentity,
    #[serde(with = "time::serde::rfc3339")]
    taken_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refs: Option<BlobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ref_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    packs: Option<Vec<BlobId>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parts: Option<RawParts>,
    #[serde(default)]
    main_branch: Option<String>,
    stats: SnapshotStats,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParts {
    git: GitPart,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wiki: Option<GitPart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lfs: Option<LfsPart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metadata: Option<MetadataPart>,
}

impl TryFrom<RawSnapshot> for Snapshot {
    type Error = String;

    fn try_from(raw: RawSnapshot) -> Result<Snapshot, String> {
        let parts = match (raw.format, raw.parts, raw.refs, raw.packs) {
            (1, None, Some(refs), Some(packs)) => RawParts {
                git: GitPart {
                    refs,
                    ref_count: raw.ref_count.unwrap_or(0),
                    packs,
                },
                wiki: None,
                lfs: None,
                metadata: None,
            },
            (1, ..) => return Err("format 1 manifest without refs and packs".into()),
            (2, Some(parts), None, None) => parts,
            (2, ..) => {
                return Err("format 2 manifest without parts (or with top-level refs)".into())
            }
            (n, ..) => {
                return Err(format!(
                    "manifest format {n}; this reposafe reads formats 1 and {}",
                    super::FORMAT_VERSION
                ))
            }
        };
        Ok(Snapshot {
            format: raw.format,
            id: raw.id,
            repository: raw.repository,
            taken_at: raw.taken_at,
            git: parts.git,
            wiki: parts.wiki,
            lfs: parts.lfs,
            metadata: parts.metadata,
            main_branch: raw.main_branch,
            stats: raw.stats,
        })
    }
}

impl From<Snapshot> for RawSnapshot {
    fn from(s: Snapshot) -> RawSnapshot {
        let (refs, ref_count, packs, parts) = if s.format == 1 {
            (
                Some(s.git.refs),
                Some(s.git.ref_count),
                Some(s.git.packs),
                None,
            )
        } else {
            let parts = RawParts {
                git: s.git,
                wiki: s.wiki,
                lfs: s.lfs,
                metadata: s.metadata,
            };
            (None, None, None, Some(parts))
        };
        RawSnapshot {
            format: s.format,
            id: s.id,
            repository: s.repository,
            taken_at: s.taken_at,
            refs,
            ref_count,
            packs,
            parts,
            main_branch: s.main_branch,
            stats: s.stats,
        }
    }
}

/// The backend id of a manifest: `<repo-dir>/<snapshot-id>`.
fn manifest_id(repo_dir: &str, id: &SnapshotId) -> String {
    format!("{repo_dir}/{}", id.as_str())
}

impl Archive {
    /// Writes a snapshot manifest atomically, after checking every blob it names is
    /// present. A manifest is never replaced by another write (only by prune's
    /// [`Archive::rewrite_snapshot`]). Returns the manifest's size in bytes.
    pub fn write_snapshot(&self, snap: &Snapshot) -> Result<u64, ArchiveError> {
        self.require_blobs(snap.blobs())?;
        let mid = manifest_id(&snap.repository.dir_name(), &snap.id);
        let bytes = self.encode_manifest(snap, &mid)?;
        match self.backend.create_new(FileKind::Snapshot, &mid, &bytes) {
            Ok(()) => {
                self.cache_written(&mid, snap);
                Ok(bytes.len() as u64)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(ArchiveError::SnapshotExists {
                    id: snap.id.to_string(),
                    path: e.location,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces an existing manifest with `new`, the same snapshot (same repository
    /// history, id and time) whose parts name other blobs — prune's consolidation, the
    /// one place a manifest is rewritten. Every blob `new` names must be present; the
    /// replacement is atomic, so readers see the old manifest or the new one, and both
    /// restore the same refs. Returns the manifest's size in bytes.
    ///
    /// In a store shared with other appliances the manifest is replaced only while it
    /// is still the version read here (`If-Match`): `None` when another appliance
    /// forgot it or rewrote it meanwhile. It is then left as that appliance made it,
    /// so a snapshot forgotten elsewhere never comes back.
    pub fn rewrite_snapshot(&self, new: &Snapshot) -> Result<Option<u64>, ArchiveError> {
        let mid = manifest_id(&new.repository.dir_name(), &new.id);
        if !self.backend.is_shared() {
            let old = self.read_manifest(&mid)?;
            let bytes = self.checked_rewrite(&mid, &old, new)?;
            self.backend
                .write(FileKind::Snapshot, &mid, super::Source::Bytes(&bytes))?;
            self.cache_written(&mid, new);
            return Ok(Some(bytes.len() as u64));
        }
        let Some((stored, version)) = self.backend.read_versioned(FileKind::Snapshot, &mid)? else {
            return Ok(None);
        };
        let old = self.decode_manifest(&mid, stored)?;
        let bytes = self.checked_rewrite(&mid, &old, new)?;
        let replaced = self
            .backend
            .replace_if(FileKind::Snapshot, &mid, &bytes, &version)?;
        if let Some(version) = replaced {
            self.cache_manifest(&mid, Some(&version), new);
            return Ok(Some(bytes.len() as u64));
        }
        // A replace retried after its first try went through meets its own write.
        let now = self.backend.read_versioned(FileKind::Snapshot, &mid)?;
        Ok(now
            .filter(|(stored, _)| *stored == bytes)
            .map(|_| bytes.len() as u64))
    }

    /// `new` as stored, once checked as a rewrite of `old` (manifest `mid`): same
    /// repository and time, and every blob it names present.
    fn checked_rewrite(
        &self,
        mid: &str,
        old: &Snapshot,
        new: &Snapshot,
    ) -> Result<Vec<u8>, ArchiveError> {
        if old.taken_at != new.taken_at || old.repository.dir_name() != new.repository.dir_name() {
            return Err(ArchiveError::CorruptSnapshot {
                path: self.backend.location(FileKind::Snapshot, mid),
                reason: "a rewrite must keep the snapshot's repository and time".into(),
            });
        }
        self.require_blobs(new.blobs())?;
        self.encode_manifest(new, mid)
    }

    /// Removes a snapshot's manifest (its blobs stay: other snapshots share them).
    pub fn delete_snapshot(&self, snap: &Snapshot) -> Result<(), ArchiveError> {
        let mid = manifest_id(&snap.repository.dir_name(), &snap.id);
        self.backend.delete(FileKind::Snapshot, &mid)?;
        Ok(())
    }

    /// A manifest as stored: JSON, encrypted to the archive's key when it has one.
    fn encode_manifest(&self, snap: &Snapshot, mid: &str) -> Result<Vec<u8>, ArchiveError> {
        let corrupt = |reason: String| ArchiveError::CorruptSnapshot {
            path: self.backend.location(FileKind::Snapshot, mid),
            reason,
        };
        let json = serde_json::to_vec(snap).map_err(|e| corrupt(e.to_string()))?;
        match &self.key {
            Some(key) => key.encrypt(&json).map_err(|e| corrupt(e.to_string())),
            None => Ok(json),
        }
    }

    /// Reads one manifest by its backend id (decrypting it in an encrypted archive,
    /// where a plain manifest is refused).
    pub(super) fn read_manifest(&self, mid: &str) -> Result<Snapshot, ArchiveError> {
        let bytes = self.backend.read(FileKind::Snapshot, mid)?;
        self.decode_manifest(mid, bytes)
    }

    /// Decodes manifest `mid` as stored (`bytes`).
    pub(super) fn decode_manifest(
        &self,
        mid: &str,
        bytes: Vec<u8>,
    ) -> Result<Snapshot, ArchiveError> {
        let corrupt = |reason: String| ArchiveError::CorruptSnapshot {
            path: self.backend.location(FileKind::Snapshot, mid),
            reason,
        };
        let json = match &self.key {
            Some(key) => key.decrypt(&bytes).map_err(corrupt)?,
            None => bytes,
        };
        serde_json::from_slice(&json).map_err(|e| corrupt(e.to_string()))
    }

    /// Reads the manifests with these backend ids, oldest first.
    fn read_manifests(&self, mids: &[String]) -> Result<Vec<Snapshot>, ArchiveError> {
        let mut out = mids
            .iter()
            .map(|mid| self.read_manifest(mid))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| (a.taken_at, &a.id).cmp(&(b.taken_at, &b.id)));
        Ok(out)
    }

    /// Every snapshot of one repository, oldest first.
    pub fn snapshots_of(&self, repo: &RepoIdentity) -> Result<Vec<Snapshot>, ArchiveError> {
        let prefix = format!("{}/", repo.dir_name());
        self.read_manifests(&self.backend.list(FileKind::Snapshot, &prefix)?)
    }

    /// The newest snapshot of one repository, reading only the manifests of the newest
    /// second (ids start with their UTC time), not the whole history.
    pub fn latest_snapshot_of(
        &self,
        repo: &RepoIdentity,
    ) -> Result<Option<Snapshot>, ArchiveError> {
        let prefix = format!("{}/", repo.dir_name());
        let names: Vec<(String, Option<String>)> = self
            .backend
            .list_with_version(FileKind::Snapshot, &prefix)?
            .into_iter()
            .filter_map(|(mid, _, version)| Some((mid.strip_prefix(&prefix)?.to_string(), version)))
            .filter(|(name, _)| SnapshotId::parse(name).is_ok())
            .collect();
        let Some((newest, _)) = names.iter().max() else {
            return Ok(None);
        };
        // Several snapshots can share a second; compare their recorded times.
        let second = newest[..16].to_string();
        let mut best: Option<Snapshot> = None;
        for (name, version) in names.iter().filter(|(n, _)| n.starts_with(&second)) {
            let snap =
                self.read_manifest_version(&format!("{prefix}{name}"), version.as_deref())?;
            if best
                .as_ref()
                .is_none_or(|b| (snap.taken_at, &snap.id) > (b.taken_at, &b.id))
            {
                best = Some(snap);
            }
        }
        Ok(best)
    }

    /// Reads a manifest whose stored version (an object store's ETag) is `version`,
    /// from the small-blob cache when it holds a copy of that version: a rewrite by
    /// prune (from any appliance) gives the manifest a new version.
    fn read_manifest_version(
        &self,
        mid: &str,
        version: Option<&str>,
    ) -> Result<Snapshot, ArchiveError> {
        let Some(copy) = self.manifest_copy(mid, version) else {
            return self.read_manifest(mid);
        };
        if let Some(snap) = std::fs::read(&copy)
            .ok()
            .and_then(|b| serde_json::from_slice::<Snapshot>(&b).ok())
        {
            return Ok(snap);
        }
        let snap = self.read_manifest(mid)?;
        self.cache_manifest(mid, version, &snap);
        Ok(snap)
    }

    /// Where the cached copy of a manifest version lives, when there is a cache and a version.
    fn manifest_copy(&self, mid: &str, version: Option<&str>) -> Option<PathBuf> {
        let dir = self.small_blobs.as_ref()?;
        let tag = blake3::hash(version?.as_bytes()).to_hex();
        Some(
            dir.join("manifests")
                .join(format!("{}-{}.json", mid.replace('/', "_"), &tag[..16])),
        )
    }

    /// Keeps a copy of a manifest version (best effort).
    fn cache_manifest(&self, mid: &str, version: Option<&str>, snap: &Snapshot) {
        if let (Some(copy), Ok(json)) = (self.manifest_copy(mid, version), serde_json::to_vec(snap))
        {
            super::keep_copy(&copy, &json);
        }
    }

    /// Caches a manifest just written (asking the store for its version).
    fn cache_written(&self, mid: &str, snap: &Snapshot) {
        if self.small_blobs.is_none() {
            return;
        }
        if let Ok(Some(version)) = self.backend.version(FileKind::Snapshot, mid) {
            self.cache_manifest(mid, Some(&version), snap);
        }
    }

    /// How many snapshots the archive holds (counts manifests; reads none).
    pub fn snapshot_count(&self) -> Result<usize, ArchiveError> {
        Ok(self.backend.list(FileKind::Snapshot, "")?.len())
    }

    /// Every snapshot in the archive, oldest first (disaster recovery: needs no state).
    pub fn all_snapshots(&self) -> Result<Vec<Snapshot>, ArchiveError> {
        self.read_manifests(&self.backend.list(FileKind::Snapshot, "")?)
    }

    /// One identity per repository history in the archive (one per `<repo-dir>`),
    /// read from its newest manifest, with that manifest's time. Reads one manifest
    /// per history, not every snapshot.
    pub fn histories(&self) -> Result<Vec<(RepoIdentity, OffsetDateTime)>, ArchiveError> {
        let mut newest: std::collections::BTreeMap<String, String> = Default::default();
        for mid in self.backend.list(FileKind::Snapshot, "")? {
            let Some((dir, name)) = mid.split_once('/') else {
                continue;
            };
            if SnapshotId::parse(name).is_err() {
                continue;
            }
            let slot = newest.entry(dir.to_string()).or_default();
            if mid > *slot {
                *slot = mid;
            }
        }
        newest
            .values()
            .map(|mid| self.read_manifest(mid).map(|s| (s.repository, s.taken_at)))
            .collect()
    }

    /// Finds a snapshot by id.
    pub fn find_snapshot(&self, id: &SnapshotId) -> Result<Snapshot, ArchiveError> {
        let suffix = format!("/{}", id.as_str());
        match self
            .backend
            .list(FileKind::Snapshot, "")?
            .into_iter()
            .find(|mid| mid.ends_with(&suffix))
        {
            Some(mid) => self.read_manifest(&mid),
            None => Err(ArchiveError::SnapshotNotFound { id: id.to_string() }),
        }
    }
}
