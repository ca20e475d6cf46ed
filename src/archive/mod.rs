//! The archive: reposafe's on-disk backup format (described in `docs/ARCHITECTURE.md`).
//!
//! An archive is a directory holding content-addressed, verified, optionally
//! zstd-compressed **blobs** and small JSON **snapshot** manifests that refer to
//! them. Writes are crash-safe: every file is written under `tmp/`, synced and
//! renamed into place, and a snapshot manifest is written only after every blob it
//! names is durable, so a kill at any moment leaves every earlier snapshot readable
//! and no half snapshot visible. Nothing in here knows about git or Bitbucket: the
//! engine decides what a blob holds (a git pack, a refs list).

mod blob;
mod snapshot;

pub use blob::{BlobId, BlobReader, PutOutcome};
pub use snapshot::{RepoIdentity, Snapshot, SnapshotId, SnapshotStats};

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Version written to `FORMAT`; readers refuse archives of a newer format.
pub const FORMAT_VERSION: u32 = 1;
const FORMAT_MAGIC: &str = "reposafe-archive";

/// What can go wrong reading or writing an archive. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive I/O error at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a reposafe archive (missing or unreadable FORMAT file)")]
    NotAnArchive { path: PathBuf },
    #[error("archive at {path} has format {found}, this reposafe reads format {FORMAT_VERSION}; upgrade reposafe")]
    UnsupportedFormat { path: PathBuf, found: String },
    #[error("blob {id} is missing from the archive ({path})")]
    MissingBlob { id: BlobId, path: PathBuf },
    #[error("blob {id} is corrupt: {reason} ({path})")]
    CorruptBlob {
        id: BlobId,
        path: PathBuf,
        reason: String,
    },
    #[error("snapshot {id} not found")]
    SnapshotNotFound { id: String },
    #[error("snapshot manifest {path} is unreadable: {reason}")]
    CorruptSnapshot { path: PathBuf, reason: String },
    #[error("invalid blob id {0:?}: expected 64 hex digits")]
    InvalidBlobId(String),
    #[error("invalid snapshot id {0:?}")]
    InvalidSnapshotId(String),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An open archive directory.
#[derive(Debug, Clone)]
pub struct Archive {
    root: PathBuf,
}

impl Archive {
    /// Opens the archive at `root`, creating an empty one if the directory is absent or empty.
    pub fn open_or_create(root: &Path) -> Result<Archive, ArchiveError> {
        let format = root.join("FORMAT");
        let is_empty_dir = match fs::read_dir(root) {
            Ok(mut it) => it.next().is_none(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(io_err(root)(e)),
        };
        if is_empty_dir {
            for sub in ["blobs", "snapshots", "tmp", "index/packs"] {
                let p = root.join(sub);
                fs::create_dir_all(&p).map_err(io_err(&p))?;
            }
            let archive = Archive {
                root: root.to_path_buf(),
            };
            archive.write_atomic(
                &format,
                format!("{FORMAT_MAGIC} {FORMAT_VERSION}\n").as_bytes(),
            )?;
            return Ok(archive);
        }
        Self::open(root)
    }

    /// Opens an existing archive, checking its format version.
    pub fn open(root: &Path) -> Result<Archive, ArchiveError> {
        let format = root.join("FORMAT");
        let text = fs::read_to_string(&format).map_err(|_| ArchiveError::NotAnArchive {
            path: root.to_path_buf(),
        })?;
        let mut parts = text.split_whitespace();
        if parts.next() != Some(FORMAT_MAGIC) {
            return Err(ArchiveError::NotAnArchive {
                path: root.to_path_buf(),
            });
        }
        let version = parts.next().unwrap_or("");
        if version.parse::<u32>().ok() != Some(FORMAT_VERSION) {
            return Err(ArchiveError::UnsupportedFormat {
                path: root.to_path_buf(),
                found: version.to_string(),
            });
        }
        for sub in ["blobs", "snapshots", "tmp", "index/packs"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(Archive {
            root: root.to_path_buf(),
        })
    }

    /// The archive's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Total bytes of blob and snapshot files on disk (what the archive costs).
    pub fn disk_usage(&self) -> Result<u64, ArchiveError> {
        fn walk(p: &Path) -> Result<u64, ArchiveError> {
            let mut total = 0;
            for entry in fs::read_dir(p).map_err(io_err(p))? {
                let entry = entry.map_err(io_err(p))?;
                let meta = entry.metadata().map_err(io_err(&entry.path()))?;
                if meta.is_dir() {
                    total += walk(&entry.path())?;
                } else {
                    total += meta.len();
                }
            }
            Ok(total)
        }
        Ok(walk(&self.root.join("blobs"))? + walk(&self.root.join("snapshots"))?)
    }

    /// A fresh temporary file path inside the archive (same file system as the targets).
    pub(crate) fn tmp_path(&self) -> PathBuf {
        let n: u64 = rand::random();
        self.root
            .join("tmp")
            .join(format!("{}-{n:016x}.tmp", std::process::id()))
    }

    /// Writes `bytes` to `dest` atomically: tmp file, fsync, rename, fsync directory.
    pub(crate) fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<(), ArchiveError> {
        let tmp = self.tmp_path();
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        drop(f);
        self.commit_tmp(&tmp, dest)
    }

    /// Renames a synced temporary file into place and syncs the directory.
    pub(crate) fn commit_tmp(&self, tmp: &Path, dest: &Path) -> Result<(), ArchiveError> {
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        fs::rename(tmp, dest).map_err(io_err(dest))?;
        if let Some(parent) = dest.parent() {
            File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(io_err(parent))?;
        }
        Ok(())
    }

    /// Removes temporary files left by an interrupted writer. Safe to call when no
    /// writer is running (the daemon does it at start).
    pub fn clean_tmp(&self) -> Result<usize, ArchiveError> {
        let dir = self.root.join("tmp");
        let mut n = 0;
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            fs::remove_file(entry.path()).map_err(io_err(&entry.path()))?;
            n += 1;
        }
        Ok(n)
    }

    /// Looks up the blob holding the git pack with the given pack hash, if archived.
    pub fn pack_blob(&self, pack_hash: &str) -> Result<Option<BlobId>, ArchiveError> {
        if pack_hash.is_empty() || !pack_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let p = self.root.join("index/packs").join(pack_hash);
        match fs::read_to_string(&p) {
            Ok(s) => {
                let id = BlobId::parse(s.trim())?;
                Ok(self.has_blob(&id).then_some(id))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Records that the pack with `pack_hash` is stored as blob `id`.
    pub fn record_pack(&self, pack_hash: &str, id: &BlobId) -> Result<(), ArchiveError> {
        if pack_hash.is_empty() || !pack_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ArchiveError::InvalidBlobId(pack_hash.to_string()));
        }
        let p = self.root.join("index/packs").join(pack_hash);
        self.write_atomic(&p, id.to_hex().as_bytes())
    }
}

/// Reads a whole stream, for small blobs such as refs lists.
pub(crate) fn read_all(mut r: impl Read, path: &Path) -> Result<Vec<u8>, ArchiveError> {
    let mut buf = Vec::new();
    r.read_to_end(&mut buf).map_err(io_err(path))?;
    Ok(buf)
}

#[cfg(test)]
mod tests;
