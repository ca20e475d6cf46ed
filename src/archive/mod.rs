//! The archive: reposafe's backup format (described in `docs/ARCHITECTURE.md`).
//!
//! An archive holds content-addressed, verified, optionally zstd-compressed
//! **blobs** and small JSON **snapshot** manifests that refer to them. This module
//! owns the format; where the files live is a [`Backend`] (`backend.rs`, the local
//! directory in `local.rs`). Writes are crash-safe: every file is written whole and
//! atomically by the backend, and a snapshot manifest is written only after every blob
//! it names is durable, so a kill at any moment leaves every earlier snapshot readable
//! and no half snapshot visible. Nothing in here knows about git or Bitbucket: the
//! engine decides what a blob holds (a git pack, a refs list). An archive may be
//! encrypted (`crypt.rs`): then every blob and manifest is age-encrypted to its key,
//! blob ids and index names are keyed, and opening it takes the key.

mod backend;
mod blob;
mod copy;
mod crypt;
mod local;
#[cfg(test)]
pub(crate) mod memory;
mod parts;
mod pipe;
mod s3;
mod snapshot;
mod writeback;

pub use backend::{Backend, BackendError, FileKind, Source};
pub use blob::{BlobId, BlobReader, PutOutcome};
pub use copy::{CopySession, CopyTally};
pub use crypt::{ArchiveKey, NotAKey};
pub use local::LocalBackend;
pub use parts::{
    canonical_json, GitPart, LfsIndexEntry, LfsPart, MetadataIndex, MetadataItem, MetadataKindPart,
    MetadataPart, MissingKind, MissingLfsObject, StoredFile,
};
pub use s3::{
    ca_certificates, environment_endpoint, environment_endpoint_named, settled_endpoint, S3Backend,
    S3Config,
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
/// The format of an encrypted archive (`reposafe-archive 3 encrypted <recipient>`):
/// versions that cannot decrypt refuse it instead of misreading its files.
pub const ENCRYPTED_FORMAT_VERSION: u32 = 3;
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
    #[error("archive at {path} has format {found}, this reposafe reads formats {OLDEST_FORMAT_VERSION} to {ENCRYPTED_FORMAT_VERSION}; upgrade reposafe")]
    UnsupportedFormat { path: PathBuf, found: String },
    /// The archive is encrypted and was opened without its key, or the other way round.
    #[error("archive at {path}: {reason}")]
    Encryption { path: PathBuf, reason: String },
    /// A key that is not this archive's.
    #[error("that key does not open the archive at {path}: it is the key of {found}, the archive's recipient is {expected}")]
    WrongKey {
        path: PathBuf,
        found: String,
        expected: String,
    },
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
    /// A copy of the archive (`archive copy`) that cannot go on.
    #[error("cannot copy the archive to {path}: {reason}")]
    Copy { path: PathBuf, reason: String },
    /// A copy stopped on request; what was copied stays, and the next copy resumes.
    #[error("the copy to {path} was stopped; what was copied stays, and the next copy resumes")]
    CopyCancelled { path: PathBuf },
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
    /// The key of an encrypted archive; `None` for a plain one.
    key: Option<Arc<ArchiveKey>>,
    /// A local copy of small blobs read or written (see [`Archive::with_small_blob_cache`]).
    small_blobs: Option<PathBuf>,
}

impl fmt::Debug for Archive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Archive")
            .field("location", &self.backend.root_location())
            .field("encrypted", &self.key.is_some())
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

/// What a store holds, read from its `FORMAT` before opening it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveLayout {
    /// Nothing yet: an archive may be created in it.
    Empty,
    /// A plain archive of this format.
    Plain { format: u32 },
    /// An encrypted archive whose key has this public recipient (`age1…`).
    Encrypted { recipient: String },
}

fn format_line(recipient: Option<&str>) -> String {
    match recipient {
        None => format!("{FORMAT_MAGIC} {FORMAT_VERSION}\n"),
        Some(r) => format!("{FORMAT_MAGIC} {ENCRYPTED_FORMAT_VERSION} encrypted {r}\n"),
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

    /// Reads what `backend` holds: nothing, a plain archive or an encrypted one.
    pub fn inspect_on(backend: &dyn Backend) -> Result<ArchiveLayout, ArchiveError> {
        let not_an_archive = || ArchiveError::NotAnArchive {
            path: backend.root_location(),
        };
        let bytes = match backend.read(FileKind::Format, "") {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound && backend.is_empty()? => {
                return Ok(ArchiveLayout::Empty)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_an_archive()),
            // Refused credentials, a network failure: say that, not "not an archive".
            Err(e) => return Err(e.into()),
        };
        let text = String::from_utf8(bytes).map_err(|_| not_an_archive())?;
        let mut words = text.split_whitespace();
        if words.next() != Some(FORMAT_MAGIC) {
            return Err(not_an_archive());
        }
        let version = words.next().unwrap_or("");
        let unsupported = || ArchiveError::UnsupportedFormat {
            path: backend.root_location(),
            found: version.to_string(),
        };
        match version.parse::<u32>() {
            Ok(v) if (OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&v) => {
                Ok(ArchiveLayout::Plain { format: v })
            }
            Ok(ENCRYPTED_FORMAT_VERSION) => match (words.next(), words.next()) {
                (Some("encrypted"), Some(r)) if r.starts_with("age1") => {
                    Ok(ArchiveLayout::Encrypted {
                        recipient: r.to_string(),
                    })
                }
                _ => Err(unsupported()),
            },
            _ => Err(unsupported()),
        }
    }

    /// Opens the archive stored in `backend`, creating an empty plain one if the store
    /// is empty. An encrypted archive needs [`Archive::open_encrypted_on`].
    pub fn open_or_create_on(backend: Arc<dyn Backend>) -> Result<Archive, ArchiveError> {
        let layout = Self::inspect_on(backend.as_ref())?;
        if layout != ArchiveLayout::Empty {
            return Self::open_plain_on(backend, layout);
        }
        backend.init()?;
        if !backend.is_shared() {
            Self::remove_key_files(backend.as_ref())?;
        }
        match backend.create_new(FileKind::Format, "", format_line(None).as_bytes()) {
            Ok(()) => Ok(Archive {
                backend,
                key: None,
                small_blobs: None,
            }),
            // Another process created it meanwhile: check what it wrote.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Self::open_on(backend),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens the existing plain archive stored in `backend`, checking its format version.
    pub fn open_on(backend: Arc<dyn Backend>) -> Result<Archive, ArchiveError> {
        let layout = Self::inspect_on(backend.as_ref())?;
        Self::open_plain_on(backend, layout)
    }

    /// Opens a plain archive whose `FORMAT` was read as `layout` (by [`Archive::inspect_on`]).
    pub fn open_plain_on(
        backend: Arc<dyn Backend>,
        layout: ArchiveLayout,
    ) -> Result<Archive, ArchiveError> {
        match layout {
            ArchiveLayout::Empty => Err(ArchiveError::NotAnArchive {
                path: backend.root_location(),
            }),
            ArchiveLayout::Plain { format } => {
                backend.init()?;
                if format < FORMAT_VERSION {
                    // Older reposafe versions must refuse the format-2 manifests
                    // written from now on, instead of misreading them.
                    let line = format_line(None);
                    backend.write(FileKind::Format, "", Source::Bytes(line.as_bytes()))?;
                }
                Ok(Archive {
                    backend,
                    key: None,
                    small_blobs: None,
                })
            }
            ArchiveLayout::Encrypted { recipient } => Err(ArchiveError::Encryption {
                path: backend.root_location(),
                reason: format!("it is encrypted (to {recipient}) and needs its key to open"),
            }),
        }
    }

    /// Opens the encrypted archive stored in `backend` with its key, checked against
    /// the recipient its `FORMAT` names.
    pub fn open_encrypted_on(
        backend: Arc<dyn Backend>,
        key: ArchiveKey,
    ) -> Result<Archive, ArchiveError> {
        match Self::inspect_on(backend.as_ref())? {
            ArchiveLayout::Encrypted { recipient } if recipient == key.recipient() => {
                backend.init()?;
                Ok(Archive {
                    backend,
                    key: Some(Arc::new(key)),
                    small_blobs: None,
                })
            }
            ArchiveLayout::Encrypted { recipient } => Err(ArchiveError::WrongKey {
                path: backend.root_location(),
                found: key.recipient(),
                expected: recipient,
            }),
            _ => Err(ArchiveError::Encryption {
                path: backend.root_location(),
                reason: "it is not an encrypted archive".into(),
            }),
        }
    }

    /// Creates an encrypted archive in `backend` with `key`, storing the sealed copies
    /// of the key `sealed` (name, bytes) first and `FORMAT` last, so an interrupted
    /// creation leaves a store that still counts as empty. The store must be empty or
    /// hold a plain archive without any data (as a first start of the daemon leaves it).
    pub fn create_encrypted_on(
        backend: Arc<dyn Backend>,
        key: ArchiveKey,
        sealed: &[(String, Vec<u8>)],
    ) -> Result<Archive, ArchiveError> {
        let location = backend.root_location();
        let layout = Self::inspect_on(backend.as_ref())?;
        match &layout {
            ArchiveLayout::Empty => {}
            // Another appliance may have this plain archive open: never convert it.
            ArchiveLayout::Plain { .. } if backend.is_shared() => {
                return Err(ArchiveError::Encryption {
                    path: location,
                    reason: "it already holds a plain archive (in shared storage one is never converted)".into(),
                })
            }
            ArchiveLayout::Plain { .. } if !Self::holds_data(backend.as_ref())? => {}
            ArchiveLayout::Plain { .. } => {
                return Err(ArchiveError::Encryption {
                    path: location,
                    reason: "it already holds a plain archive with backups; encryption is chosen when an archive is created".into(),
                })
            }
            ArchiveLayout::Encrypted { .. } => {
                return Err(ArchiveError::Encryption {
                    path: location,
                    reason: "it already holds an encrypted archive".into(),
                })
            }
        }
        if sealed.is_empty() {
            return Err(ArchiveError::Encryption {
                path: location,
                reason: "an encrypted archive needs at least one sealed copy of its key".into(),
            });
        }
        backend.init()?;
        if !backend.is_shared() {
            Self::remove_key_files(backend.as_ref())?;
        }
        for (name, bytes) in sealed {
            backend.create_new(FileKind::Key, name, bytes)?;
        }
        let line = format_line(Some(&key.recipient()));
        if layout == ArchiveLayout::Empty {
            // Only if no one created an archive here meanwhile.
            match backend.create_new(FileKind::Format, "", line.as_bytes()) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(ArchiveError::Encryption {
                        path: location,
                        reason: "another process created an archive here meanwhile; run `archive init` again to attach to it".into(),
                    })
                }
                other => other?,
            }
        } else {
            backend.write(FileKind::Format, "", Source::Bytes(line.as_bytes()))?;
        }
        Ok(Archive {
            backend,
            key: Some(Arc::new(key)),
            small_blobs: None,
        })
    }

    /// Whether the store holds any blob, manifest or index entry.
    fn holds_data(backend: &dyn Backend) -> Result<bool, ArchiveError> {
        for kind in [
            FileKind::Blob,
            FileKind::Snapshot,
            FileKind::PackIndex,
            FileKind::LfsIndex,
        ] {
            if !backend.list(kind, "")?.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn remove_key_files(backend: &dyn Backend) -> Result<(), ArchiveError> {
        for name in backend.list(FileKind::Key, "")? {
            backend.delete(FileKind::Key, &name)?;
        }
        Ok(())
    }

    /// The sealed copies of an encrypted archive's key in `backend`: (name, bytes).
    pub fn key_files_on(backend: &dyn Backend) -> Result<Vec<(String, Vec<u8>)>, ArchiveError> {
        backend
            .list(FileKind::Key, "")?
            .into_iter()
            .map(|name| {
                let bytes = backend.read(FileKind::Key, &name)?;
                Ok((name, bytes))
            })
            .collect()
    }

    /// The names of the sealed copies of this archive's key.
    pub fn key_file_names(&self) -> Result<Vec<String>, ArchiveError> {
        Ok(self.backend.list(FileKind::Key, "")?)
    }

    /// Stores another sealed copy of the key under a new name (never replacing one).
    pub fn add_key_file(&self, name: &str, sealed: &[u8]) -> Result<(), ArchiveError> {
        if self.key.is_none() {
            return Err(ArchiveError::Encryption {
                path: self.location(),
                reason: "it is not encrypted; it has no key to add a copy of".into(),
            });
        }
        Ok(self.backend.create_new(FileKind::Key, name, sealed)?)
    }

    /// Keeps a local copy of every small blob (index blobs, refs lists, documents)
    /// read or written in `dir`, so reading one again costs no request to an object
    /// store. The copies are checked against their ids when read: a stale or damaged
    /// one is read from the archive again.
    pub fn with_small_blob_cache(mut self, dir: PathBuf) -> Archive {
        self.small_blobs = Some(dir);
        self
    }

    /// The same archive without the small-blob cache: every read goes to the store
    /// (`check` verifies the archive, not a local copy).
    pub fn without_cache(&self) -> Archive {
        Archive {
            small_blobs: None,
            ..self.clone()
        }
    }

    /// Whether other appliances may use this archive at once (object storage).
    pub fn is_shared(&self) -> bool {
        self.backend.is_shared()
    }

    /// Every lease file: (name, content).
    pub fn leases(&self) -> Result<Vec<(String, Vec<u8>)>, ArchiveError> {
        let mut out = Vec::new();
        for name in self.backend.list(FileKind::Lock, "")? {
            match self.backend.read(FileKind::Lock, &name) {
                Ok(bytes) => out.push((name, bytes)),
                // Released between the listing and the read.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// Creates a lease file unless one of that name exists: its version when created,
    /// `None` when one exists.
    pub fn create_lease(&self, name: &str, content: &[u8]) -> Result<Option<String>, ArchiveError> {
        match self.backend.create_versioned(FileKind::Lock, name, content) {
            Ok(version) => Ok(Some(version)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces a lease file only while its version is still `version` (`If-Match`):
    /// the new version, or `None` when another writer replaced or removed it.
    pub fn replace_lease(
        &self,
        name: &str,
        content: &[u8],
        version: &str,
    ) -> Result<Option<String>, ArchiveError> {
        Ok(self
            .backend
            .replace_if(FileKind::Lock, name, content, version)?)
    }

    /// Reads a lease file with its version, `None` when there is none.
    pub fn read_lease_versioned(
        &self,
        name: &str,
    ) -> Result<Option<(Vec<u8>, String)>, ArchiveError> {
        Ok(self.backend.read_versioned(FileKind::Lock, name)?)
    }

    /// Writes (renews) a lease file.
    pub fn write_lease(&self, name: &str, content: &[u8]) -> Result<(), ArchiveError> {
        Ok(self
            .backend
            .write(FileKind::Lock, name, Source::Bytes(content))?)
    }

    /// Reads a lease file, `None` when there is none.
    pub fn read_lease(&self, name: &str) -> Result<Option<Vec<u8>>, ArchiveError> {
        match self.backend.read(FileKind::Lock, name) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a lease file.
    pub fn delete_lease(&self, name: &str) -> Result<(), ArchiveError> {
        Ok(self.backend.delete(FileKind::Lock, name)?)
    }

    /// The key of an encrypted archive.
    pub fn key(&self) -> Option<&ArchiveKey> {
        self.key.as_deref()
    }

    /// Where the archive is (a directory, a bucket URL).
    pub fn location(&self) -> PathBuf {
        self.backend.root_location()
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

    /// Every entry of an accelerator index (`index/packs/`, `index/lfs/`): its stored
    /// name (keyed in an encrypted archive) and the blob it names (or why that could
    /// not be read).
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

    /// Removes an accelerator index entry by its stored name, as [`Archive::index_entries`]
    /// lists it (prune, when its blob is gone).
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
        match self.backend.read(kind, &self.index_name(kind, key)) {
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
        self.backend.write(
            kind,
            &self.index_name(kind, key),
            Source::Bytes(hex.as_bytes()),
        )?;
        Ok(())
    }

    /// The stored name of an index entry for `key`: the key itself, or in an
    /// encrypted archive a keyed hash of it (names then reveal no pack hash or oid).
    fn index_name(&self, kind: FileKind, key: &str) -> String {
        match &self.key {
            Some(k) => k.index_name(kind, key),
            None => key.to_string(),
        }
    }
}

/// An accelerator index entry: its key and the blob it names (or why that could not
/// be read).
pub type IndexEntry = (String, Result<BlobId, ArchiveError>);

/// Writes a local cache file whole (a temporary file renamed into place), best effort:
/// a cache that cannot be written only costs a read from the store next time.
pub(crate) fn keep_copy(path: &Path, content: &[u8]) {
    let Some(dir) = path.parent() else { return };
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let kept = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&tmp, content))
        .and_then(|()| std::fs::rename(&tmp, path));
    if kept.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

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
