//! [`LocalBackend`]: an archive in a local directory, in the layout of
//! `docs/ARCHITECTURE.md` (`FORMAT`, `blobs/<2 hex>/<64 hex>`,
//! `snapshots/<repo-dir>/<id>.json`, `index/packs/<pack hash>`, `index/lfs/<sha256>`,
//! `keys/<name>` in an encrypted archive, `tmp/`).
//!
//! Every write goes to a file under `tmp/` (same file system as its target), is
//! fsynced, renamed into place, and its directory fsynced; `create_new` renames
//! without replacing (`renameat2(RENAME_NOREPLACE)`, or link + unlink). Every new
//! directory is made by [`create_dir_synced`], which fsyncs the parent of each
//! directory it creates, so no new entry up to the archive root is lost in a crash.

use super::backend::{layout, Backend, BackendError, FileKind, Source};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Directories of an archive, created by [`Backend::init`].
const DIRS: [&str; 4] = ["blobs", "snapshots", "tmp", "index/packs"];
const SNAPSHOT_EXT: &str = ".json";

/// An archive stored in a local directory.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
}

impl LocalBackend {
    /// A backend for the directory `root` (not touched until used).
    pub fn new(root: impl Into<PathBuf>) -> LocalBackend {
        LocalBackend { root: root.into() }
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The file's path, checking the id first.
    fn path(&self, kind: FileKind, id: &str) -> Result<PathBuf, BackendError> {
        kind.check_id(id, || self.location(kind, id))?;
        Ok(self.location(kind, id))
    }

    /// Moves a finished temporary file to `dest`: fsync, rename (or rename without
    /// replacing when `replace` is false), fsync the directory.
    fn commit(
        &self,
        tmp: tempfile::NamedTempFile,
        dest: &Path,
        replace: bool,
    ) -> Result<(), BackendError> {
        tmp.as_file().sync_all().map_err(err(tmp.path()))?;
        let parent = dest.parent().unwrap_or(&self.root);
        create_dir_synced(parent)?;
        let persisted = if replace {
            tmp.persist(dest).map(drop)
        } else {
            tmp.persist_noclobber(dest).map(drop)
        };
        persisted.map_err(|e| BackendError::new(dest, e.error))?;
        sync_dir(parent)
    }

    /// Streams `source` into a new temporary file under `tmp/`.
    fn fill_temp(&self, source: &mut dyn Read) -> Result<tempfile::NamedTempFile, BackendError> {
        let mut tmp = self.temp_file()?;
        let path = tmp.path().to_path_buf();
        let mut out = BufWriter::with_capacity(1 << 16, tmp.as_file_mut());
        io::copy(source, &mut out).map_err(err(&path))?;
        out.flush().map_err(err(&path))?;
        drop(out);
        Ok(tmp)
    }

    /// Files of one directory: (name, size when `sizes`, is a directory). An absent
    /// directory has none.
    fn entries(dir: &Path, sizes: bool) -> Result<Vec<(String, u64, bool)>, BackendError> {
        let it = match fs::read_dir(dir) {
            Ok(it) => it,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(BackendError::new(dir, e)),
        };
        let mut out = Vec::new();
        for entry in it {
            let entry = entry.map_err(err(dir))?;
            #[cfg(test)]
            tests::VISITED.with(|v| v.set(v.get() + 1));
            let Ok(name) = entry.file_name().into_string() else {
                continue; // not a name this backend writes
            };
            let is_dir = entry.file_type().map_err(err(&entry.path()))?.is_dir();
            let size = if sizes && !is_dir {
                entry.metadata().map_err(err(&entry.path()))?.len()
            } else {
                0
            };
            out.push((name, size, is_dir));
        }
        Ok(out)
    }

    /// Files (name, size when `sizes`) of the manifest directory `<base>/<dir>`; none when
    /// it is absent, is not a directory or `dir` is no directory name this backend writes.
    fn repo_dir_entries(
        base: &Path,
        dir: &str,
        sizes: bool,
    ) -> Result<Vec<(String, u64)>, BackendError> {
        if !FileKind::Snapshot.is_valid_id(&format!("{dir}/x")) {
            return Ok(Vec::new());
        }
        let path = base.join(dir);
        match Self::entries(&path, sizes) {
            Ok(found) => Ok(found
                .into_iter()
                .filter(|(_, _, is_dir)| !is_dir)
                .map(|(name, size, _)| (name, size))
                .collect()),
            Err(e) if e.source.kind() == io::ErrorKind::NotADirectory => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Files two levels deep (`<dir>/<file>`) whose directory name passes `want_dir`;
    /// ids are made from both names by `id_of`.
    fn scan_two_levels(
        &self,
        base: &Path,
        sizes: bool,
        want_dir: impl Fn(&str) -> bool,
        id_of: impl Fn(&str, &str) -> Option<String>,
    ) -> Result<Vec<(String, u64)>, BackendError> {
        let mut out = Vec::new();
        for (dir, _, is_dir) in Self::entries(base, false)? {
            if !is_dir || !want_dir(&dir) {
                continue;
            }
            for (name, size, is_dir) in Self::entries(&base.join(&dir), sizes)? {
                if let (false, Some(id)) = (is_dir, id_of(&dir, &name)) {
                    out.push((id, size));
                }
            }
        }
        Ok(out)
    }

    fn scan(
        &self,
        kind: FileKind,
        prefix: &str,
        sizes: bool,
    ) -> Result<Vec<(String, u64)>, BackendError> {
        let mut out = match kind {
            FileKind::Format => Self::entries(&self.root, sizes)?
                .into_iter()
                .filter(|(name, _, is_dir)| name == "FORMAT" && !is_dir)
                .map(|(_, size, _)| (String::new(), size))
                .collect(),
            FileKind::Blob => self.scan_two_levels(
                &self.root.join("blobs"),
                sizes,
                |dir| dir.len() == 2 && (dir.starts_with(prefix) || prefix.starts_with(dir)),
                |dir, name| name.starts_with(dir).then(|| name.to_string()),
            )?,
            FileKind::Snapshot => {
                let base = self.root.join("snapshots");
                let id_of = |dir: &str, name: &str| {
                    name.strip_suffix(SNAPSHOT_EXT)
                        .map(|stem| format!("{dir}/{stem}"))
                };
                match prefix.split_once('/') {
                    // One repository's directory (`<dir>/...`): read only it, not
                    // `snapshots/`, which has a directory per repository (reading it for
                    // each repository made a backup quadratic in their number).
                    Some((dir, _)) => Self::repo_dir_entries(&base, dir, sizes)?
                        .into_iter()
                        .filter_map(|(name, size)| id_of(dir, &name).map(|id| (id, size)))
                        .collect(),
                    None => self.scan_two_levels(&base, sizes, |d| d.starts_with(prefix), id_of)?,
                }
            }
            FileKind::Key | FileKind::Lock => {
                Self::entries(&self.root.join(layout::kind_dir(kind)), sizes)?
                    .into_iter()
                    .filter(|(_, _, is_dir)| !is_dir)
                    .map(|(name, size, _)| (name, size))
                    .collect()
            }
            FileKind::PackIndex | FileKind::LfsIndex => {
                Self::entries(&index_dir(&self.root, kind), sizes)?
                    .into_iter()
                    .filter(|(_, _, is_dir)| !is_dir)
                    .map(|(name, size, _)| (name, size))
                    .collect()
            }
        };
        out.retain(|(id, _)| id.starts_with(prefix) && kind.is_valid_id(id));
        out.sort();
        Ok(out)
    }
}

/// The directory of an accelerator index: `index/packs/` or `index/lfs/`.
fn index_dir(root: &Path, kind: FileKind) -> PathBuf {
    let name = if kind == FileKind::LfsIndex {
        "lfs"
    } else {
        "packs"
    };
    root.join("index").join(name)
}

fn err(path: &Path) -> impl FnOnce(io::Error) -> BackendError + '_ {
    move |e| BackendError::new(path, e)
}

fn sync_dir(dir: &Path) -> Result<(), BackendError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(err(dir))
}

/// Creates `dir` and its missing parents so that each new entry is durable: every
/// directory this creates is followed by an fsync of its parent (the directory
/// holding the new entry), top down, so after a crash a file renamed into `dir`
/// (and fsynced there) cannot vanish with a directory entry that never reached
/// the disk (new `blobs/xx/`, `snapshots/<dir>/`, a new archive root). Every
/// directory the backend creates goes through here. A directory that already
/// exists costs one `stat`; one created meanwhile by another writer counts as
/// new (its parent is synced too). Returns the directories whose entries were
/// synced, parents first.
pub(crate) fn create_dir_synced(dir: &Path) -> Result<Vec<PathBuf>, BackendError> {
    let mut missing = Vec::new();
    let mut cur = dir;
    loop {
        match fs::metadata(cur) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(BackendError::new(
                    cur,
                    io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "exists but is not a directory",
                    ),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(cur),
            Err(e) => return Err(BackendError::new(cur, e)),
        }
        match cur.parent() {
            Some(p) if !p.as_os_str().is_empty() => cur = p,
            _ => break,
        }
    }
    let mut synced = Vec::new();
    for new in missing.into_iter().rev() {
        match fs::create_dir(new) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && new.is_dir() => {}
            Err(e) => return Err(BackendError::new(new, e)),
        }
        let parent = match new.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        sync_dir(parent)?;
        synced.push(parent.to_path_buf());
    }
    Ok(synced)
}

impl Backend for LocalBackend {
    fn root_location(&self) -> PathBuf {
        self.root.clone()
    }

    fn location(&self, kind: FileKind, id: &str) -> PathBuf {
        self.root.join(layout::path_of(kind, id))
    }

    /// Empty: the directory is absent, empty, or holds only the empty directories
    /// `init` creates and `keys/` (as left by a creator stopped before it wrote `FORMAT`).
    fn is_empty(&self) -> Result<bool, BackendError> {
        let empty_dir = |p: &Path| Self::entries(p, false).map(|e| e.is_empty());
        for (name, _, is_dir) in Self::entries(&self.root, false)? {
            let sub = self.root.join(&name);
            let empty_layout_dir = is_dir
                && match name.as_str() {
                    "blobs" | "snapshots" => empty_dir(&sub)?,
                    // Key files without a FORMAT are a creation that was interrupted:
                    // nothing was encrypted to them, and the next creation removes them.
                    // Temporary files are never content (a creation or copy killed
                    // before its FORMAT leaves them).
                    "keys" | "locks" | "tmp" => true,
                    "index" => {
                        let mut only_empty_indexes = true;
                        for (inner, _, inner_is_dir) in Self::entries(&sub, false)? {
                            only_empty_indexes &= matches!(inner.as_str(), "packs" | "lfs")
                                && inner_is_dir
                                && empty_dir(&sub.join(&inner))?;
                        }
                        only_empty_indexes
                    }
                    _ => false,
                };
            if !empty_layout_dir {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn init(&self) -> Result<(), BackendError> {
        for sub in DIRS {
            create_dir_synced(&self.root.join(sub))?;
        }
        Ok(())
    }

    fn list_with_size(
        &self,
        kind: FileKind,
        prefix: &str,
    ) -> Result<Vec<(String, u64)>, BackendError> {
        self.scan(kind, prefix, true)
    }

    fn list(&self, kind: FileKind, prefix: &str) -> Result<Vec<String>, BackendError> {
        Ok(self
            .scan(kind, prefix, false)?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    fn exists(&self, kind: FileKind, id: &str) -> Result<bool, BackendError> {
        let path = self.path(kind, id)?;
        match fs::metadata(&path) {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(BackendError::new(path, e)),
        }
    }

    fn open_read(&self, kind: FileKind, id: &str) -> Result<Box<dyn Read + Send>, BackendError> {
        let path = self.path(kind, id)?;
        let file = File::open(&path).map_err(err(&path))?;
        Ok(Box::new(file))
    }

    fn temp_file(&self) -> Result<tempfile::NamedTempFile, BackendError> {
        let dir = self.tmp_dir();
        tempfile::Builder::new()
            .prefix(&format!("{}-", std::process::id()))
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(err(&dir))
    }

    fn write(&self, kind: FileKind, id: &str, source: Source<'_>) -> Result<(), BackendError> {
        let dest = self.path(kind, id)?;
        let tmp = match source {
            Source::Bytes(mut bytes) => self.fill_temp(&mut bytes)?,
            Source::Reader(reader) => self.fill_temp(reader)?,
            Source::TempFile(t) if t.path().parent() == Some(self.tmp_dir().as_path()) => t,
            Source::TempFile(t) => {
                // Elsewhere (maybe another file system): copy, then drop the original.
                let mut f = t.reopen().map_err(err(t.path()))?;
                self.fill_temp(&mut f)?
            }
        };
        self.commit(tmp, &dest, true)
    }

    fn create_new(&self, kind: FileKind, id: &str, bytes: &[u8]) -> Result<(), BackendError> {
        let dest = self.path(kind, id)?;
        let mut bytes = bytes;
        let tmp = self.fill_temp(&mut bytes)?;
        self.commit(tmp, &dest, false)
    }

    fn delete(&self, kind: FileKind, id: &str) -> Result<(), BackendError> {
        let path = self.path(kind, id)?;
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(path.parent().unwrap_or(&self.root)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BackendError::new(path, e)),
        }
    }

    fn clean_tmp(&self) -> Result<usize, BackendError> {
        let dir = self.tmp_dir();
        let mut n = 0;
        for entry in fs::read_dir(&dir).map_err(err(&dir))? {
            let entry = entry.map_err(err(&dir))?;
            fs::remove_file(entry.path()).map_err(err(&entry.path()))?;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Directory entries this thread's backends have read (see `entries`).
        pub(super) static VISITED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// Listing one repository's manifests reads its directory only, not the directory
    /// of every repository (which made each backup of N repositories read N² entries).
    #[test]
    fn one_repositorys_manifests_are_listed_without_reading_the_others() {
        let tmp = tempfile::tempdir().expect("tmp");
        let b = LocalBackend::new(tmp.path().join("archive"));
        b.init().expect("init");
        let snapshots = tmp.path().join("archive/snapshots");
        for r in 0..300 {
            fs::create_dir(snapshots.join(format!("{r:016x}"))).expect("mkdir");
        }
        let mine = "00000000000000aa";
        for id in ["20260101T000000Z-00000001", "20260102T000000Z-00000002"] {
            fs::write(snapshots.join(mine).join(format!("{id}.json")), "{}").expect("write");
        }
        fs::write(snapshots.join(mine).join("stray.tmp"), "").expect("write");
        VISITED.with(|v| v.set(0));
        let ids = b
            .list(FileKind::Snapshot, &format!("{mine}/"))
            .expect("list");
        assert_eq!(
            ids,
            [
                format!("{mine}/20260101T000000Z-00000001"),
                format!("{mine}/20260102T000000Z-00000002")
            ]
        );
        assert_eq!(VISITED.with(|v| v.get()), 3, "entries read");
        // Absent, or not a directory, or not a name this backend writes: nothing.
        assert!(b
            .list(FileKind::Snapshot, "0123/")
            .expect("absent")
            .is_empty());
        fs::write(snapshots.join("0000000000000bbb"), "").expect("write");
        let not_dir = b.list(FileKind::Snapshot, "0000000000000bbb/");
        assert!(not_dir.expect("a file").is_empty());
        assert!(b.list(FileKind::Snapshot, "../").expect("bad").is_empty());
        // The whole archive is still listed from every directory.
        assert_eq!(b.list(FileKind::Snapshot, "").expect("all").len(), 2);
    }

    /// The helper every new directory goes through creates the missing parents and
    /// syncs the parent of each new directory, top down; an existing one costs
    /// nothing. (That the fsync reaches the disk cannot be observed from a test; the
    /// sync calls can: each would fail with the directory's path.)
    #[test]
    fn create_dir_synced_creates_parents_and_syncs_each_new_entry() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("archive");
        let dir = root.join("snapshots").join("0123abcd");
        let synced = create_dir_synced(&dir).expect("create");
        assert!(dir.is_dir());
        assert_eq!(
            synced,
            vec![
                tmp.path().to_path_buf(),
                root.clone(),
                root.join("snapshots")
            ]
        );
        assert!(create_dir_synced(&dir).expect("again").is_empty());
        let blobs = root.join("blobs").join("ab");
        assert_eq!(
            create_dir_synced(&blobs).expect("blobs"),
            vec![root.clone(), root.join("blobs")]
        );
        let file = root.join("FORMAT");
        fs::write(&file, "x").expect("write");
        let e = create_dir_synced(&file.join("sub")).expect_err("a file is in the way");
        assert!(e.to_string().contains("FORMAT"), "{e}");
    }

    /// Writing a blob and a snapshot into a new archive creates their directories
    /// through the helper (the layout exists afterwards and reads back).
    #[test]
    fn writes_into_new_directories_are_complete() {
        let tmp = tempfile::tempdir().expect("tmp");
        let b = LocalBackend::new(tmp.path().join("archive"));
        b.init().expect("init");
        let id = "ab".repeat(32);
        b.write(FileKind::Blob, &id, Source::Bytes(b"blob"))
            .expect("blob");
        assert!(tmp.path().join("archive/blobs/ab").join(&id).is_file());
    }
}
