//! [`MemoryBackend`]: an archive held in a map, for tests. It proves the storage
//! seam is real (the archive tests run on it as well as on the file system) and is
//! the reference the backend contract tests compare behaviours against.

use super::backend::{Backend, BackendError, FileKind, Source};
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::io::{self, Cursor, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

type Files = BTreeMap<(FileKind, String), Arc<[u8]>>;

/// Files in memory; a write replaces an entry in one step under a lock.
#[derive(Debug, Default)]
pub(crate) struct MemoryBackend {
    files: Mutex<Files>,
    /// Whether it presents itself as a store over a network ([`Backend::is_remote`]).
    remote: bool,
    /// Whether it presents itself as shared by several appliances ([`Backend::is_shared`]).
    shared: bool,
    /// What another appliance does right after the next read of a file of one kind.
    after_read: Mutex<Option<AfterRead>>,
}

/// A change by another appliance between a read and what the reader does next.
struct AfterRead {
    kind: FileKind,
    change: Box<dyn FnOnce(&MemoryBackend) + Send>,
}

impl std::fmt::Debug for AfterRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AfterRead({:?})", self.kind)
    }
}

impl MemoryBackend {
    /// A backend that presents itself as object storage, so files are stored the way
    /// they are uploaded there.
    pub(crate) fn remote() -> MemoryBackend {
        MemoryBackend {
            remote: true,
            ..MemoryBackend::default()
        }
    }

    /// A backend that presents itself as object storage shared with other appliances.
    pub(crate) fn shared() -> MemoryBackend {
        MemoryBackend {
            remote: true,
            shared: true,
            ..MemoryBackend::default()
        }
    }

    /// Makes `change` (another appliance's) right after the next read of a file of
    /// `kind`, before the reader's next step.
    pub(crate) fn after_next_read(
        &self,
        kind: FileKind,
        change: impl FnOnce(&MemoryBackend) + Send + 'static,
    ) {
        *self.after_read.lock().unwrap_or_else(|e| e.into_inner()) = Some(AfterRead {
            kind,
            change: Box::new(change),
        });
    }

    /// Runs the change waiting for a read of `kind`, if any.
    fn read_done(&self, kind: FileKind) {
        let due = self
            .after_read
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_if(|hook| hook.kind == kind);
        if let Some(hook) = due {
            (hook.change)(self);
        }
    }

    fn files(&self) -> MutexGuard<'_, Files> {
        // A panicking test thread cannot leave a half-inserted entry: recover the map.
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn checked(&self, kind: FileKind, id: &str) -> Result<(FileKind, String), BackendError> {
        kind.check_id(id, || self.location(kind, id))?;
        Ok((kind, id.to_string()))
    }

    fn not_found(&self, kind: FileKind, id: &str) -> BackendError {
        BackendError::new(
            self.location(kind, id),
            io::Error::new(io::ErrorKind::NotFound, "no such file"),
        )
    }
}

/// A file's version: a hash of its content, as an object store's ETag of a single PUT.
fn version_of(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

impl Backend for MemoryBackend {
    fn root_location(&self) -> PathBuf {
        PathBuf::from("memory:")
    }

    fn is_remote(&self) -> bool {
        self.remote
    }

    fn is_shared(&self) -> bool {
        self.shared
    }

    fn location(&self, kind: FileKind, id: &str) -> PathBuf {
        PathBuf::from(format!("memory:{kind:?}/{id}"))
    }

    fn is_empty(&self) -> Result<bool, BackendError> {
        // Key files without a FORMAT: an interrupted creation (as `LocalBackend`).
        Ok(self
            .files()
            .keys()
            .all(|(kind, _)| matches!(kind, FileKind::Key | FileKind::Lock)))
    }

    fn init(&self) -> Result<(), BackendError> {
        Ok(())
    }

    fn list_with_size(
        &self,
        kind: FileKind,
        prefix: &str,
    ) -> Result<Vec<(String, u64)>, BackendError> {
        Ok(self
            .files()
            .iter()
            .filter(|((k, id), _)| *k == kind && id.starts_with(prefix))
            .map(|((_, id), data)| (id.clone(), data.len() as u64))
            .collect())
    }

    fn exists(&self, kind: FileKind, id: &str) -> Result<bool, BackendError> {
        let key = self.checked(kind, id)?;
        Ok(self.files().contains_key(&key))
    }

    fn open_read(&self, kind: FileKind, id: &str) -> Result<Box<dyn Read + Send>, BackendError> {
        let key = self.checked(kind, id)?;
        let data = self.files().get(&key).cloned();
        self.read_done(kind);
        match data {
            Some(data) => Ok(Box::new(Cursor::new(data))),
            None => Err(self.not_found(kind, id)),
        }
    }

    fn write(&self, kind: FileKind, id: &str, source: Source<'_>) -> Result<(), BackendError> {
        let key = self.checked(kind, id)?;
        let mut data = Vec::new();
        let read = match source {
            Source::Bytes(b) => {
                data.extend_from_slice(b);
                Ok(0)
            }
            Source::Reader(r) => r.read_to_end(&mut data),
            Source::TempFile(t) => t.reopen().and_then(|mut f| f.read_to_end(&mut data)),
        };
        read.map_err(|e| BackendError::new(self.location(kind, id), e))?;
        self.files().insert(key, data.into());
        Ok(())
    }

    fn create_new(&self, kind: FileKind, id: &str, bytes: &[u8]) -> Result<(), BackendError> {
        let key = self.checked(kind, id)?;
        match self.files().entry(key) {
            Entry::Occupied(_) => Err(BackendError::new(
                self.location(kind, id),
                io::Error::new(io::ErrorKind::AlreadyExists, "file exists"),
            )),
            Entry::Vacant(v) => {
                v.insert(bytes.into());
                Ok(())
            }
        }
    }

    fn create_versioned(
        &self,
        kind: FileKind,
        id: &str,
        bytes: &[u8],
    ) -> Result<String, BackendError> {
        self.create_new(kind, id, bytes)?;
        Ok(version_of(bytes))
    }

    fn read_versioned(
        &self,
        kind: FileKind,
        id: &str,
    ) -> Result<Option<(Vec<u8>, String)>, BackendError> {
        let key = self.checked(kind, id)?;
        let got = self
            .files()
            .get(&key)
            .map(|data| (data.to_vec(), version_of(data)));
        self.read_done(kind);
        Ok(got)
    }

    fn replace_if(
        &self,
        kind: FileKind,
        id: &str,
        bytes: &[u8],
        version: &str,
    ) -> Result<Option<String>, BackendError> {
        let key = self.checked(kind, id)?;
        let mut files = self.files();
        match files.get_mut(&key) {
            Some(data) if version_of(data) == version => {
                *data = bytes.into();
                Ok(Some(version_of(bytes)))
            }
            _ => Ok(None),
        }
    }

    fn delete(&self, kind: FileKind, id: &str) -> Result<(), BackendError> {
        let key = self.checked(kind, id)?;
        self.files().remove(&key);
        Ok(())
    }

    fn clean_tmp(&self) -> Result<usize, BackendError> {
        Ok(0)
    }
}
