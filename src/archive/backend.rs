//! The archive's storage seam: the [`Backend`] trait through which [`super::Archive`]
//! lists, reads, writes and deletes its files by **kind and id**, never by path.
//!
//! `Archive` keeps everything that makes the format (blob encoding, compression,
//! verification, manifests); a backend only stores opaque bytes under names. The
//! local file system ([`super::LocalBackend`]) is the first implementation; an object
//! store can be another without touching the format. Modelled on rustic_core's
//! backend: a small set of kinds, whole-file and streaming reads, atomic writes and
//! an atomic create-if-absent for files that must never be replaced.

use std::fmt;
use std::io::{self, Read};
use std::path::PathBuf;

/// What a stored file is. Each kind has its own id syntax ([`FileKind::check_id`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileKind {
    /// The format marker (`FORMAT`): a single file whose id is the empty string.
    Format,
    /// A blob: id = 64 lowercase hex digits (its BLAKE3).
    Blob,
    /// A snapshot manifest: id = `<repo-dir>/<snapshot-id>`, so listing with the
    /// prefix `<repo-dir>/` yields one repository's history.
    Snapshot,
    /// A pack index entry: id = the git pack hash (hex digits).
    PackIndex,
    /// An LFS index entry: id = the LFS object's sha256 (64 lowercase hex digits).
    LfsIndex,
    /// A sealed copy of an encrypted archive's key: id = a name (letters, digits, `-`, `_`).
    Key,
    /// A lease of an archive shared by several appliances (object storage): id = a name.
    Lock,
}

/// Longest id component accepted; ids are hashes and timestamps, far shorter.
const MAX_COMPONENT: usize = 128;

fn is_component(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_COMPONENT
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl FileKind {
    /// Whether `id` is a well-formed id of this kind. Ids never contain `.`, so no id
    /// can name a path outside its kind's place.
    pub fn is_valid_id(self, id: &str) -> bool {
        match self {
            FileKind::Format => id.is_empty(),
            FileKind::Blob | FileKind::LfsIndex => {
                id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            }
            FileKind::Snapshot => match id.split_once('/') {
                Some((dir, name)) => is_component(dir) && is_component(name),
                None => false,
            },
            FileKind::Key | FileKind::Lock => is_component(id),
            FileKind::PackIndex => {
                !id.is_empty()
                    && id.len() <= MAX_COMPONENT
                    && id.bytes().all(|b| b.is_ascii_hexdigit())
            }
        }
    }

    /// Checks `id`, failing with `InvalidInput` naming the kind and id.
    pub fn check_id(self, id: &str, location: impl Fn() -> PathBuf) -> Result<(), BackendError> {
        if self.is_valid_id(id) {
            Ok(())
        } else {
            Err(BackendError::new(
                location(),
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("invalid {self:?} id {id:?}"),
                ),
            ))
        }
    }
}

/// A storage failure, naming where (a path, or a URL for a remote backend).
#[derive(Debug, thiserror::Error)]
#[error("{location}: {source}")]
pub struct BackendError {
    pub location: PathBuf,
    #[source]
    pub source: io::Error,
}

impl BackendError {
    pub fn new(location: impl Into<PathBuf>, source: io::Error) -> BackendError {
        BackendError {
            location: location.into(),
            source,
        }
    }

    /// The kind of the underlying error: `NotFound` for an absent file,
    /// `AlreadyExists` from [`Backend::create_new`], `InvalidInput` for a bad id.
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }
}

/// The content handed to [`Backend::write`].
pub enum Source<'a> {
    /// Bytes in memory (small files).
    Bytes(&'a [u8]),
    /// A stream, read to its end. If it fails, nothing is stored.
    Reader(&'a mut dyn Read),
    /// A finished file from [`Backend::temp_file`]; a backend may move it into place
    /// instead of copying it. It is removed in every case.
    TempFile(tempfile::NamedTempFile),
}

impl fmt::Debug for Source<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Source::Reader(_) => f.write_str("Reader"),
            Source::TempFile(t) => write!(f, "TempFile({})", t.path().display()),
        }
    }
}

/// Where an archive's files are stored. All methods take `&self` and may be called
/// from several threads at once.
///
/// Contract (checked for every implementation by `archive::contract` tests):
/// - `write` is atomic: readers see the old content or the whole new content, never
///   part of it, and a failed write (e.g. a source that errors) leaves nothing new.
///   A successful `write` is durable when it returns.
/// - `create_new` stores the file only if no file of that kind and id exists, as one
///   atomic step, else fails with `AlreadyExists`; for manifests and locks.
/// - `open_read` streams: memory use does not grow with the file's size.
/// - Ids are checked with [`FileKind::check_id`]; an invalid id fails with `InvalidInput`.
/// - Reading an absent file fails with `NotFound`; deleting one succeeds.
pub trait Backend: Send + Sync {
    /// Where the whole store is, for messages (a directory, a bucket URL).
    fn root_location(&self) -> PathBuf;

    /// Where one file is, for messages. Does not check the id.
    fn location(&self, kind: FileKind, id: &str) -> PathBuf;

    /// Whether the store holds nothing at all (a new archive may be created in it).
    fn is_empty(&self) -> Result<bool, BackendError>;

    /// Prepares the store for use (creates directories); idempotent.
    fn init(&self) -> Result<(), BackendError>;

    /// Ids of `kind` starting with `prefix`, with their stored sizes in bytes, sorted by id.
    fn list_with_size(
        &self,
        kind: FileKind,
        prefix: &str,
    ) -> Result<Vec<(String, u64)>, BackendError>;

    /// Ids of `kind` starting with `prefix`, sorted.
    fn list(&self, kind: FileKind, prefix: &str) -> Result<Vec<String>, BackendError> {
        Ok(self
            .list_with_size(kind, prefix)?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// Whether the file exists.
    fn exists(&self, kind: FileKind, id: &str) -> Result<bool, BackendError>;

    /// Opens a file for streaming.
    fn open_read(&self, kind: FileKind, id: &str) -> Result<Box<dyn Read + Send>, BackendError>;

    /// Reads a whole file. For small files only.
    fn read(&self, kind: FileKind, id: &str) -> Result<Vec<u8>, BackendError> {
        let mut buf = Vec::new();
        self.open_read(kind, id)?
            .read_to_end(&mut buf)
            .map_err(|e| BackendError::new(self.location(kind, id), e))?;
        Ok(buf)
    }

    /// A new temporary file to build content in before [`Backend::write`] with
    /// [`Source::TempFile`]. Removed when dropped. The default lives in the system's
    /// temporary directory.
    fn temp_file(&self) -> Result<tempfile::NamedTempFile, BackendError> {
        tempfile::NamedTempFile::new().map_err(|e| BackendError::new(std::env::temp_dir(), e))
    }

    /// Stores a file atomically, replacing any file of that kind and id.
    fn write(&self, kind: FileKind, id: &str, source: Source<'_>) -> Result<(), BackendError>;

    /// Stores a file only if none of that kind and id exists (`AlreadyExists` if one does).
    fn create_new(&self, kind: FileKind, id: &str, bytes: &[u8]) -> Result<(), BackendError>;

    /// Removes a file; removing an absent file succeeds.
    fn delete(&self, kind: FileKind, id: &str) -> Result<(), BackendError>;

    /// Removes leftovers of interrupted writers; returns how many. Call only when no
    /// writer is running.
    fn clean_tmp(&self) -> Result<usize, BackendError>;

    /// The version of a file (an object store's ETag), `None` when the store has no
    /// such thing or the file is absent. Changes whenever the file is replaced.
    fn version(&self, _kind: FileKind, _id: &str) -> Result<Option<String>, BackendError> {
        Ok(None)
    }

    /// Stores a file only if none of that kind and id exists, like
    /// [`Backend::create_new`], and returns its version for [`Backend::replace_if`].
    /// Only stores shared by several appliances need it (the prune lease); the default
    /// is `Unsupported`.
    fn create_versioned(
        &self,
        kind: FileKind,
        id: &str,
        _bytes: &[u8],
    ) -> Result<String, BackendError> {
        Err(unsupported(self.location(kind, id)))
    }

    /// A whole (small) file with its version, `None` when it is absent.
    fn read_versioned(
        &self,
        kind: FileKind,
        id: &str,
    ) -> Result<Option<(Vec<u8>, String)>, BackendError> {
        Err(unsupported(self.location(kind, id)))
    }

    /// Replaces a file only while its version is still `version` (an object store's
    /// `If-Match`), as one atomic step: the new version, or `None` when the file was
    /// replaced or removed meanwhile (nothing is written then).
    fn replace_if(
        &self,
        kind: FileKind,
        id: &str,
        _bytes: &[u8],
        _version: &str,
    ) -> Result<Option<String>, BackendError> {
        Err(unsupported(self.location(kind, id)))
    }

    /// Ids of `kind` starting with `prefix`, with their sizes and versions (see
    /// [`Backend::version`]), sorted by id.
    fn list_with_version(
        &self,
        kind: FileKind,
        prefix: &str,
    ) -> Result<Vec<(String, u64, Option<String>)>, BackendError> {
        Ok(self
            .list_with_size(kind, prefix)?
            .into_iter()
            .map(|(id, size)| (id, size, None))
            .collect())
    }

    /// Whether writes go over a network (object storage): a file is then better hashed
    /// first and streamed up than encoded into a temporary copy and uploaded after.
    fn is_remote(&self) -> bool {
        false
    }

    /// Whether other processes (other appliances) may use the store at the same time,
    /// so that prune must take a lease in it (object storage), not only a lock in
    /// this process.
    fn is_shared(&self) -> bool {
        false
    }
}

/// The error of a versioned operation on a store without versions.
fn unsupported(location: PathBuf) -> BackendError {
    BackendError::new(
        location,
        io::Error::new(
            io::ErrorKind::Unsupported,
            "this store keeps no file versions (conditional replace)",
        ),
    )
}

/// The archive's layout as relative `/`-separated paths, shared by every backend that
/// stores files by path (the local directory, an object store's keys): `FORMAT`,
/// `blobs/<2 hex>/<64 hex>`, `snapshots/<repo-dir>/<id>.json`, `index/packs/<hash>`,
/// `index/lfs/<sha256>`, `keys/<name>`.
pub(crate) mod layout {
    use super::FileKind;

    pub const SNAPSHOT_EXT: &str = ".json";

    /// The directory (relative) holding every file of `kind`; empty for `Format`.
    pub fn kind_dir(kind: FileKind) -> &'static str {
        match kind {
            FileKind::Format => "",
            FileKind::Blob => "blobs",
            FileKind::Snapshot => "snapshots",
            FileKind::PackIndex => "index/packs",
            FileKind::LfsIndex => "index/lfs",
            FileKind::Key => "keys",
            FileKind::Lock => "locks",
        }
    }

    /// The relative path of a file (the id is not checked).
    pub fn path_of(kind: FileKind, id: &str) -> String {
        match kind {
            FileKind::Format => "FORMAT".into(),
            FileKind::Blob => format!("blobs/{}/{id}", id.get(..2).unwrap_or("")),
            FileKind::Snapshot => {
                let (dir, name) = id.split_once('/').unwrap_or(("", id));
                format!("snapshots/{dir}/{name}{SNAPSHOT_EXT}")
            }
            _ => format!("{}/{id}", kind_dir(kind)),
        }
    }

    /// The directory (relative) to list for the ids of `kind` starting with `prefix`:
    /// as deep as the prefix allows.
    pub fn list_dir(kind: FileKind, prefix: &str) -> String {
        match kind {
            FileKind::Blob if prefix.len() >= 2 => format!("blobs/{}", &prefix[..2]),
            FileKind::Snapshot => match prefix.split_once('/') {
                Some((dir, _)) => format!("snapshots/{dir}"),
                None => "snapshots".into(),
            },
            _ => kind_dir(kind).into(),
        }
    }

    /// The id of the file at relative path `rel` if it is a well-formed file of `kind`.
    pub fn id_of(kind: FileKind, rel: &str) -> Option<String> {
        let id = match kind {
            FileKind::Format => (rel == "FORMAT").then(String::new)?,
            FileKind::Blob => {
                let (dir, name) = rel.strip_prefix("blobs/")?.split_once('/')?;
                name.starts_with(dir).then(|| name.to_string())?
            }
            FileKind::Snapshot => {
                let (dir, file) = rel.strip_prefix("snapshots/")?.split_once('/')?;
                format!("{dir}/{}", file.strip_suffix(SNAPSHOT_EXT)?)
            }
            _ => rel
                .strip_prefix(kind_dir(kind))?
                .strip_prefix('/')?
                .to_string(),
        };
        kind.is_valid_id(&id).then_some(id)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn paths_and_ids_round_trip() {
            let blob = "ab".repeat(32);
            let cases = [
                (FileKind::Format, String::new()),
                (FileKind::Blob, blob.clone()),
                (FileKind::Snapshot, "00ff/20260101T000000Z-0000abcd".into()),
                (FileKind::PackIndex, "0123abcd".into()),
                (FileKind::LfsIndex, blob.clone()),
                (FileKind::Key, "vault-1".into()),
                (FileKind::Lock, "use-0123".into()),
            ];
            for (kind, id) in cases {
                let rel = path_of(kind, &id);
                assert_eq!(id_of(kind, &rel), Some(id.clone()), "{kind:?} {rel}");
                assert!(rel.starts_with(&list_dir(kind, &id)), "{kind:?} {rel}");
            }
            assert_eq!(id_of(FileKind::Blob, &format!("blobs/cd/{blob}")), None);
            assert_eq!(id_of(FileKind::Snapshot, "snapshots/x/y.tmp"), None);
            assert_eq!(id_of(FileKind::Key, "keys/../x"), None);
        }
    }
}
