//! The archive: reposafe's backup format (described in `docs/ARCHITECTURE.md`).
//!
//! An archive holds content-addressed, verified, optionally zstd-compressed
//! **blobs** and small JSON **snapshot** manifests that refer to them. This module
//! owns the format; where the files live is a [`Backend`] (`backend.rs`, the local
//! directory in `local.rs`). Writes are crash-safe: every file is written whole and
//! atomically by the backend, and a snapshot manifest is written only after every blob
//! it names is durable, so a kill at any moment leaves every earlier snapshot readable
//! and no half snapshot visible. Nothing in here knows about git or Bitbucket: the
//! engine decides what a blob holds (a git pack, a refs list).

mod backend;
mod blob;
mod local;
#[cfg(test)]
mod memory;
mod parts;
mod snapshot;

pub use backend::{Backend, BackendError, FileKind, Source};
pub use blob::{BlobId, BlobReader, PutOutcome};
pub use local::LocalBackend;
pub use parts::{
    canonical_json, GitPart, LfsIndexEntry, LfsPart, MetadataIndex, MetadataItem, MetadataKindPart,
    MetadataPart, MissingKind, MissingLfsObject, StoredFile,
};
pub use snapshot::{RepoIdentity, Snapshot, SnapshotId, SnapshotStats};

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Version written to `FORMAT` and to new manifests; readers refuse archives of a
/// newer format. Format 1 archives are read as they are and marked format 2 when
/// opened (their manifests stay format 1; new ones are format 2).
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format this version reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;
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
    #[error("archive at {path} has format {found}, this reposafe reads formats {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}; upgrade reposafe")]
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
    #[error("snapshot {id} already exists in the archive ({path}); manifests are never replaced")]
    SnapshotExists { id: String, path: PathBuf },
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

/// An open archive, on any storage [`Backend`]. Cheap to clone (the backend is shared).
#[derive(Clone)]
pub struct Archive {
    backend: Arc<dyn Backend>,
}

impl fmt::Debug for Archive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Archive")
            .field("location", &self.backend.root_location())
            .finish()
    }
}

impl From<BackendError> for ArchiveError {
    fn from(e: BackendError) -> ArchiveError {
        ArchiveError::Io {
            path: e.location,
            source: e.source,
        }
    }
}

impl Archive {
    /// Opens the archive in the local directory `root`, creating an empty one if the
    /// directory is absent or empty.
    pub fn open_or_create(root: &Path) -> Result<Archive, ArchiveError> {
        Self::open_or_create_on(Arc::new(LocalBackend::new(root)))
    }

    /// Opens an existing archive in the local directory `root`, checking its format version.
    pub fn open(root: &Path) -> Result<Archive, ArchiveError> {
        Self::open_on(Arc::new(LocalBackend::new(root)))
    }

    /// Opens the archive stored in `backend`, creating an empty one if the store is empty.
    pub fn open_or_create_on(backend: Arc<dyn Backend>) -> Result<Archive, ArchiveError> {
        if backend.is_empty()? {
            backend.init()?;
            let format = format!("{FORMAT_MAGIC} {FORMAT_VERSION}\n");
            match backend.create_new(FileKind::Format, "", format.as_bytes()) {
                Ok(()) => return Ok(Archive { backend }),
                // Another process created it meanwhile: check what it wrote.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
        }
        Self::open_on(backend)
    }

    /// Opens the existing archive stored in `backend`, checking its format version.
    pub fn open_on(backend: Arc<dyn Backend>) -> Result<Archive, ArchiveError> {
        let not_an_archive = || ArchiveError::NotAnArchive {
            path: backend.root_location(),
        };
        let bytes = backend
            .read(FileKind::Format, "")
            .map_err(|_| not_an_archive())?;
        let text = String::from_utf8(bytes).map_err(|_| not_an_archive())?;
        let mut parts = text.split_whitespace();
        if parts.next() != Some(FORMAT_MAGIC) {
            return Err(not_an_archive());
        }
        let version = parts.next().unwrap_or("");
        let readable = OLDEST_FORMAT_VERSION..=FORMAT_VERSION;
        match version.parse::<u32>() {
            Ok(v) if readable.contains(&v) => {
                backend.init()?;
                if v < FORMAT_VERSION {
                    // Older reposafe versions must refuse the format-2 manifests
                    // written from now on, instead of misreading them.
                    let format = format!("{FORMAT_MAGIC} {FORMAT_VERSION}\n");
                    backend.write(FileKind::Format, "", Source::Bytes(format.as_bytes()))?;
                }
                Ok(Archive { backend })
            }
            _ => Err(ArchiveError::UnsupportedFormat {
                path: backend.root_location(),
                found: version.to_string(),
            }),
        }
    }

    /// Total stored bytes of blobs and snapshot manifests (what the archive costs).
    pub fn disk_usage(&self) -> Result<u64, ArchiveError> {
        let mut total = 0;
        for kind in [FileKind::Blob, FileKind::Snapshot] {
            total += self
                .backend
                .list_with_size(kind, "")?
                .iter()
                .map(|(_, size)| size)
                .sum::<u64>();
        }
        Ok(total)
    }

    /// Removes temporary files left by an interrupted writer. Safe to call when no
    /// writer is running (the daemon does it at start).
    pub fn clean_tmp(&self) -> Result<usize, ArchiveError> {
        Ok(self.backend.clean_tmp()?)
    }

    /// Looks up the blob holding the git pack with the given pack hash, if archived.
    pub fn pack_blob(&self, pack_hash: &str) -> Result<Option<BlobId>, ArchiveError> {
        self.indexed_blob(FileKind::PackIndex, pack_hash)
    }

    /// Records that the pack with `pack_hash` is stored as blob `id`.
    pub fn record_pack(&self, pack_hash: &str, id: &BlobId) -> Result<(), ArchiveError> {
        self.record_index(FileKind::PackIndex, pack_hash, id)
    }

    /// Every entry of an accelerator index (`index/packs/`, `index/lfs/`): its key and
    /// the blob it names (or why that could not be read).
    pub fn index_entries(&self, kind: FileKind) -> Result<Vec<IndexEntry>, ArchiveError> {
        let keys = self.backend.list(kind, "")?;
        Ok(keys
            .into_iter()
            .map(|key| {
                let blob = self
                    .backend
                    .read(kind, &key)
                    .map_err(ArchiveError::from)
                    .and_then(|b| BlobId::parse(String::from_utf8_lossy(&b).trim()));
                (key, blob)
            })
            .collect())
    }

    /// Removes an accelerator index entry (prune, when its blob is gone).
    pub fn delete_index_entry(&self, kind: FileKind, key: &str) -> Result<(), ArchiveError> {
        self.backend.delete(kind, key)?;
        Ok(())
    }

    /// The blob an accelerator index (`index/packs/`, `index/lfs/`) names for `key`, if
    /// the entry exists and the blob is present.
    pub(crate) fn indexed_blob(
        &self,
        kind: FileKind,
        key: &str,
    ) -> Result<Option<BlobId>, ArchiveError> {
        if !kind.is_valid_id(key) {
            return Ok(None);
        }
        match self.backend.read(kind, key) {
            Ok(bytes) => {
                let id = BlobId::parse(String::from_utf8_lossy(&bytes).trim())?;
                Ok(self.has_blob(&id).then_some(id))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Records in an accelerator index that `key` is stored as blob `id`.
    pub(crate) fn record_index(
        &self,
        kind: FileKind,
        key: &str,
        id: &BlobId,
    ) -> Result<(), ArchiveError> {
        if !kind.is_valid_id(key) {
            return Err(ArchiveError::InvalidBlobId(key.to_string()));
        }
        let hex = id.to_hex();
        self.backend
            .write(kind, key, Source::Bytes(hex.as_bytes()))?;
        Ok(())
    }
}

/// An accelerator index entry: its key and the blob it names (or why that could not
/// be read).
pub type IndexEntry = (String, Result<BlobId, ArchiveError>);

/// Reads a whole stream, for small blobs such as refs lists.
pub(crate) fn read_all(mut r: impl Read, path: &Path) -> Result<Vec<u8>, ArchiveError> {
    let mut buf = Vec::new();
    r.read_to_end(&mut buf).map_err(io_err(path))?;
    Ok(buf)
}

#[cfg(test)]
mod contract;
#[cfg(test)]
mod tests;
