//! Snapshot manifests: one small JSON file per repository backup, under
//! `snapshots/<repo-dir>/<snapshot-id>.json`.
//!
//! A manifest names the repository (connection, provider, stable id, full name),
//! when it was taken, the blob holding its refs and the blobs holding every git
//! pack needed to rebuild it. `<repo-dir>` is derived from the connection and the
//! repository's stable id, so renames on the server keep one history.

use super::{io_err, Archive, ArchiveError, BlobId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs;
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
    /// The connection's name, e.g. `acme`.
    pub connection: String,
    /// The provider id, e.g. `bitbucket-cloud`.
    pub provider: String,
    /// The provider's stable repository id (survives renames).
    pub repo_id: String,
    /// `scope/slug` at the time of the snapshot.
    pub full_name: String,
}

impl RepoIdentity {
    /// The directory under `snapshots/` holding this repository's manifests.
    pub fn dir_name(&self) -> String {
        let mut h = blake3::Hasher::new();
        h.update(self.connection.as_bytes());
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub format: u32,
    pub id: SnapshotId,
    pub repository: RepoIdentity,
    #[serde(with = "time::serde::rfc3339")]
    pub taken_at: OffsetDateTime,
    /// Blob with the refs (JSON list written by the engine).
    pub refs: BlobId,
    pub ref_count: u32,
    /// Blobs with every git pack the repository needs, in order.
    pub packs: Vec<BlobId>,
    #[serde(default)]
    pub main_branch: Option<String>,
    pub stats: SnapshotStats,
}

impl Archive {
    fn snapshot_path(&self, repo_dir: &str, id: &SnapshotId) -> PathBuf {
        self.root
            .join("snapshots")
            .join(repo_dir)
            .join(format!("{}.json", id.as_str()))
    }

    /// Writes a snapshot manifest atomically, after checking every blob it names is
    /// present. Returns the manifest's size in bytes.
    pub fn write_snapshot(&self, snap: &Snapshot) -> Result<u64, ArchiveError> {
        for id in snap.packs.iter().chain(std::iter::once(&snap.refs)) {
            if !self.has_blob(id) {
                return Err(ArchiveError::MissingBlob {
                    id: *id,
                    path: self.blob_path(id),
                });
            }
        }
        let bytes = serde_json::to_vec(snap).map_err(|e| ArchiveError::CorruptSnapshot {
            path: PathBuf::from(snap.id.as_str()),
            reason: e.to_string(),
        })?;
        let dest = self.snapshot_path(&snap.repository.dir_name(), &snap.id);
        self.write_atomic(&dest, &bytes)?;
        Ok(bytes.len() as u64)
    }

    fn read_snapshot_file(&self, path: &std::path::Path) -> Result<Snapshot, ArchiveError> {
        let bytes = fs::read(path).map_err(io_err(path))?;
        serde_json::from_slice(&bytes).map_err(|e| ArchiveError::CorruptSnapshot {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Every snapshot of one repository, oldest first.
    pub fn snapshots_of(&self, repo: &RepoIdentity) -> Result<Vec<Snapshot>, ArchiveError> {
        let dir = self.root.join("snapshots").join(repo.dir_name());
        let mut out = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err(&dir))?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) == Some("json") {
                out.push(self.read_snapshot_file(&path)?);
            }
        }
        out.sort_by(|a, b| (a.taken_at, &a.id).cmp(&(b.taken_at, &b.id)));
        Ok(out)
    }

    /// The newest snapshot of one repository, reading only the manifests of the newest
    /// second (ids start with their UTC time), not the whole history.
    pub fn latest_snapshot_of(
        &self,
        repo: &RepoIdentity,
    ) -> Result<Option<Snapshot>, ArchiveError> {
        let dir = self.root.join("snapshots").join(repo.dir_name());
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(&dir))?;
            if let Some(name) = entry.file_name().to_str() {
                if let Some(id) = name.strip_suffix(".json") {
                    if SnapshotId::parse(id).is_ok() {
                        names.push(name.to_string());
                    }
                }
            }
        }
        let Some(newest) = names.iter().max() else {
            return Ok(None);
        };
        // Several snapshots can share a second; compare their recorded times.
        let second = newest[..16].to_string();
        let mut best: Option<Snapshot> = None;
        for name in names.iter().filter(|n| n.starts_with(&second)) {
            let snap = self.read_snapshot_file(&dir.join(name))?;
            if best
                .as_ref()
                .is_none_or(|b| (snap.taken_at, &snap.id) > (b.taken_at, &b.id))
            {
                best = Some(snap);
            }
        }
        Ok(best)
    }

    /// Every snapshot in the archive, oldest first (disaster recovery: needs no state).
    pub fn all_snapshots(&self) -> Result<Vec<Snapshot>, ArchiveError> {
        let dir = self.root.join("snapshots");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let sub = entry.path();
            if !sub.is_dir() {
                continue;
            }
            for f in fs::read_dir(&sub).map_err(io_err(&sub))? {
                let f = f.map_err(io_err(&sub))?;
                let path = f.path();
                if path.extension().and_then(|e| e.to_str()) == Some("json") {
                    out.push(self.read_snapshot_file(&path)?);
                }
            }
        }
        out.sort_by(|a, b| (a.taken_at, &a.id).cmp(&(b.taken_at, &b.id)));
        Ok(out)
    }

    /// Finds a snapshot by id.
    pub fn find_snapshot(&self, id: &SnapshotId) -> Result<Snapshot, ArchiveError> {
        let dir = self.root.join("snapshots");
        let name = format!("{}.json", id.as_str());
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let candidate = entry.path().join(&name);
            if candidate.is_file() {
                return self.read_snapshot_file(&candidate);
            }
        }
        Err(ArchiveError::SnapshotNotFound { id: id.to_string() })
    }
}
