//! Recovering mirrors after a crash. A process killed in the middle of a fetch can leave git
//! lock files (`packed-refs.lock`, `HEAD.lock`, `refs/**.lock`, …) and temporary pack files in
//! a mirror; from then on every ref update there would fail ("could not be obtained
//! immediately"). The data dir is held by one process at a time, so such files found the first
//! time this process uses a mirror are stale: they are removed then, once per mirror per
//! process (never while another fetch of this process may be holding them).
//!
//! A mirror that is still unusable afterwards (it cannot be opened, a pack does not match its
//! index, its refs are unreadable) is rebuilt from scratch by a fresh clone: a mirror is only a
//! cache, the archive keeps every pack it ever held. The damaged copy is moved aside first and
//! put back if the fresh clone fails, so a failed rebuild loses nothing either.

use std::{
    collections::BTreeSet,
    fs,
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    sync::Mutex,
};

use super::files::{list_packs, remove_mirror_leftovers, remove_stale_keep_files};
use super::mirror::open_mirror;
use crate::git::{error::chain, GitError, PackFile};

/// The mirrors this process has cleaned up already.
static PREPARED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Remove what a crashed process left of `mirror`, the first time this process uses it: stale
/// lock and temporary files inside it, and the damaged copy of an interrupted rebuild next to
/// it. Later calls (other fetches of this process, which may be running) do nothing. Returns
/// whether this was the first use (when the mirror's packs and refs are worth checking).
pub(super) fn remove_crash_leftovers_once(mirror: &Path) -> Result<bool, GitError> {
    let mut prepared = PREPARED.lock().unwrap_or_else(|e| e.into_inner());
    if prepared.contains(mirror) {
        return Ok(false);
    }
    if let Some(parent) = mirror.parent().filter(|p| !p.as_os_str().is_empty()) {
        remove_mirror_leftovers(parent, &broken_prefix(mirror));
    }
    if mirror.is_dir() {
        let removed = remove_stale_locks(mirror)?;
        remove_stale_keep_files(mirror)?;
        if removed > 0 {
            tracing::warn!(target: "reposafe::git", mirror = %mirror.display(), removed, "removed stale lock files left by an interrupted earlier run");
        }
    }
    prepared.insert(mirror.to_owned());
    Ok(true)
}

/// Forget that this process cleaned `mirror`, as if the next fetch ran in a new process.
#[cfg(test)]
pub(crate) fn forget_prepared(mirror: &Path) {
    PREPARED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(mirror);
    if let Some(parent) = mirror.parent() {
        super::files::forget_mirror_leftovers(parent);
    }
}

/// Remove every `*.lock` file at the top of `dir` (`packed-refs.lock`, `HEAD.lock`,
/// `config.lock`, `shallow.lock`, `index.lock`, …) and below `refs/` and `logs/`. Returns how
/// many were removed.
fn remove_stale_locks(dir: &Path) -> Result<usize, GitError> {
    let mut removed = remove_locks_in(dir, false)?;
    for sub in ["refs", "logs"] {
        removed += remove_locks_in(&dir.join(sub), true)?;
    }
    Ok(removed)
}

fn remove_locks_in(dir: &Path, recursive: bool) -> Result<usize, GitError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(GitError::io("read directory", dir, err)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|err| GitError::io("read directory", dir, err))?;
        let path = entry.path();
        let file_type = entry
            .file_type()
            .map_err(|err| GitError::io("inspect", &path, err))?;
        if file_type.is_dir() && recursive {
            removed += remove_locks_in(&path, true)?;
        } else if file_type.is_file() && path.extension().is_some_and(|ext| ext == "lock") {
            tracing::debug!(target: "reposafe::git", path = %path.display(), "removing stale lock file");
            fs::remove_file(&path)
                .map_err(|err| GitError::io("remove stale lock file", &path, err))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Open the mirror at `dir` and check that its packs are usable: every complete pack matches
/// its index (both carry the pack's checksum, which is also its name). Its refs are checked
/// by [`check_refs`] when the fetch finds them not exactly as the last fetch wrote them.
pub(super) fn open_checked(dir: &Path) -> Result<gix::Repository, GitError> {
    let repo = open_mirror(dir)?;
    for pack in list_packs(dir)? {
        check_pack(dir, &pack)?;
    }
    Ok(repo)
}

/// Check that every ref of the mirror `repo` at `dir` can be read (the negotiation reads
/// them all); [`GitError::InvalidMirror`] if not, and the mirror is rebuilt.
pub(super) fn check_refs(repo: &gix::Repository, dir: &Path) -> Result<(), GitError> {
    let damaged = |message: String| GitError::InvalidMirror {
        path: dir.to_owned(),
        message,
    };
    let refs = repo
        .references()
        .map_err(|err| damaged(format!("its refs are unreadable: {}", chain(&err))))?;
    let all = refs
        .all()
        .map_err(|err| damaged(format!("its refs are unreadable: {}", chain(&err))))?;
    for reference in all {
        reference.map_err(|err| damaged(format!("a ref is unreadable: {err}")))?;
    }
    Ok(())
}

/// A pack ends with its checksum (its name), and its index repeats that checksum just before
/// its own: a truncated or overwritten pack or index does not match.
fn check_pack(dir: &Path, pack: &PackFile) -> Result<(), GitError> {
    let damaged = |message: String| GitError::InvalidMirror {
        path: dir.to_owned(),
        message,
    };
    let Ok(checksum) = hex::decode(&pack.pack_hash) else {
        return Err(damaged(format!(
            "pack {} has an invalid name",
            pack.path.display()
        )));
    };
    let n = checksum.len() as u64;
    let pack_tail = read_tail(&pack.path, n, 12 + n)?;
    let index = pack.index_path();
    let index_tail = read_tail(&index, 2 * n, 8 + 2 * n)?;
    match (pack_tail, index_tail) {
        (Some(p), Some(i)) if p == checksum && i[..checksum.len()] == checksum[..] => Ok(()),
        _ => Err(damaged(format!(
            "pack {} does not match its name or its index (truncated or overwritten)",
            pack.path.display()
        ))),
    }
}

/// The last `len` bytes of the file at `path`, or `None` if it is shorter than `min_size`.
fn read_tail(path: &Path, len: u64, min_size: u64) -> Result<Option<Vec<u8>>, GitError> {
    let mut file = fs::File::open(path).map_err(|err| GitError::io("open", path, err))?;
    let size = file
        .metadata()
        .map_err(|err| GitError::io("read metadata of", path, err))?
        .len();
    if size < min_size {
        return Ok(None);
    }
    let mut tail = vec![0u8; len as usize];
    file.seek(SeekFrom::End(-(len as i64)))
        .and_then(|_| file.read_exact(&mut tail))
        .map_err(|err| GitError::io("read", path, err))?;
    Ok(Some(tail))
}

/// Whether `dir` looks like a repository this module created (a `config` or `HEAD` file), so
/// that rebuilding it replaces only a damaged cache, never someone's unrelated files.
pub(super) fn looks_like_a_repository(dir: &Path) -> bool {
    dir.join("config").is_file() || dir.join("HEAD").is_file()
}

/// The prefix of the names a damaged mirror is moved aside to while it is rebuilt.
fn broken_prefix(mirror: &Path) -> String {
    let name = mirror
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "mirror".into());
    format!(".{name}.reposafe-broken-")
}

/// Move the damaged `mirror` aside to a fresh `.<name>.reposafe-broken-XXXXXX` next to it.
/// Returns where it went.
pub(super) fn move_aside(mirror: &Path) -> Result<PathBuf, GitError> {
    let parent = match mirror.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let prefix = broken_prefix(mirror);
    let slot = tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(&parent)
        .map_err(|err| GitError::io("create temporary directory in", &parent, err))?;
    let aside = slot.keep();
    // Renaming a directory over an empty one replaces it.
    fs::rename(mirror, &aside)
        .map_err(|err| GitError::io("move aside the damaged mirror", mirror, err))?;
    Ok(aside)
}

/// After a rebuild: drop the damaged copy if the fresh clone is in place, or put it back.
pub(super) fn finish_rebuild(mirror: &Path, aside: &Path, rebuilt: bool) {
    let result = if rebuilt {
        fs::remove_dir_all(aside)
    } else if fs::symlink_metadata(mirror).is_err() {
        fs::rename(aside, mirror)
    } else {
        Ok(())
    };
    if let Err(err) = result {
        tracing::warn!(target: "reposafe::git", path = %aside.display(), error = %err, "could not clean up the damaged mirror's copy");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_locks_are_found_at_the_top_and_below_refs_only() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path();
        fs::create_dir_all(dir.join("refs/heads/feature")).expect("mkdir");
        fs::create_dir_all(dir.join("objects/pack")).expect("mkdir");
        for lock in ["packed-refs.lock", "HEAD.lock", "refs/heads/feature/x.lock"] {
            fs::write(dir.join(lock), "").expect("write");
        }
        fs::write(dir.join("packed-refs"), "").expect("write");
        fs::write(dir.join("objects/pack/unrelated.lock"), "").expect("write");
        assert_eq!(remove_stale_locks(dir).expect("removed"), 3);
        assert!(dir.join("packed-refs").is_file());
        assert!(!dir.join("packed-refs.lock").exists());
        assert!(!dir.join("refs/heads/feature/x.lock").exists());
        assert!(dir.join("objects/pack/unrelated.lock").exists());
    }
}
