//! The files of a mirror: listing its complete packs (`pack-<hash>.pack` with its `.idx`),
//! making a fetch's new pack, its index and `packed-refs` durable (fsync of the files and
//! their directory), and cleaning up what an interrupted run left behind (`.keep` and
//! temporary files, staging directories). The pack and index themselves are written by
//! `pack_receive` and `pack_index`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    sync::Mutex,
};

use crate::git::{GitError, PackFile};

/// List the packs of the mirror at `mirror`, sorted by pack hash.
///
/// Only complete packs are listed: a `pack-<hash>.pack` with its `.idx` next to it.
pub fn list_packs(mirror: &Path) -> Result<Vec<PackFile>, GitError> {
    let dir = mirror.join("objects").join("pack");
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && mirror.is_dir() => {
            return Err(GitError::InvalidMirror {
                path: mirror.to_owned(),
                message: "it has no objects/pack directory".into(),
            });
        }
        Err(err) => return Err(GitError::io("list packs in", dir, err)),
    };
    let mut packs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|err| GitError::io("list packs in", &dir, err))?;
        let file_name = entry.file_name();
        let Some(hash) = file_name
            .to_str()
            .and_then(|name| name.strip_prefix("pack-"))
            .and_then(|name| name.strip_suffix(".pack"))
        else {
            continue;
        };
        if !is_hex_hash(hash) {
            continue;
        }
        let path = entry.path();
        if !path.with_extension("idx").is_file() {
            // Still being written, or left behind by a crash before its index was in place.
            continue;
        }
        let size = entry
            .metadata()
            .map_err(|err| GitError::io("read metadata of", &path, err))?
            .len();
        packs.push(PackFile {
            path,
            pack_hash: hash.to_owned(),
            size,
        });
    }
    packs.sort_by(|a, b| a.pack_hash.cmp(&b.pack_hash));
    Ok(packs)
}

fn is_hex_hash(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64)
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Remove the staging directories in `parent` that a crashed earlier run left behind: exactly
/// `prefix` followed by the six random letters and digits of a temporary directory's name.
/// Nothing else is touched, in particular nothing a user named, nor a `.replaced-` copy.
pub(crate) fn remove_leftovers(parent: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    let names = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok());
    remove_staging_dirs(parent, prefix, names);
}

/// Remove each of `names` in `parent` that is a staging directory of `prefix` (an exact
/// staging name, and a directory, not a link).
fn remove_staging_dirs(parent: &Path, prefix: &str, names: impl IntoIterator<Item = String>) {
    for name in names {
        let path = parent.join(&name);
        if !is_staging_name(&name, prefix) || !fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir())
        {
            continue;
        }
        tracing::warn!(target: "reposafe::git", path = %path.display(), "removing leftover of an interrupted earlier run");
        if let Err(err) = fs::remove_dir_all(&path) {
            tracing::warn!(target: "reposafe::git", path = %path.display(), error = %err, "could not remove leftover");
        }
    }
}

/// The hidden entries (names starting with `.`) of each mirrors directory, as this process
/// first found them: what a crashed earlier run can have left there. Read once per directory
/// per process, so a data dir with thousands of mirrors is not listed once per mirror.
static HIDDEN_AT_START: Mutex<BTreeMap<PathBuf, BTreeSet<String>>> = Mutex::new(BTreeMap::new());

/// Like [`remove_leftovers`], for the mirrors directory `parent`: only entries that were
/// there when this process first looked qualify (this process's own staging directories
/// never do), and the directory is listed once per process.
pub(crate) fn remove_mirror_leftovers(parent: &Path, prefix: &str) {
    let mut hidden = HIDDEN_AT_START.lock().unwrap_or_else(|e| e.into_inner());
    let names = hidden.entry(parent.to_owned()).or_insert_with(|| {
        fs::read_dir(parent)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|name| name.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default()
    });
    let leftovers: Vec<String> = names
        .iter()
        .filter(|name| is_staging_name(name, prefix))
        .cloned()
        .collect();
    for name in &leftovers {
        names.remove(name);
    }
    drop(hidden);
    remove_staging_dirs(parent, prefix, leftovers);
}

/// Forget what this process found in `parent`, as if the next look were by a new process.
#[cfg(test)]
pub(crate) fn forget_mirror_leftovers(parent: &Path) {
    HIDDEN_AT_START
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(parent);
}

/// Whether `name` is `prefix` plus the 6 random alphanumeric characters of a `tempfile` name.
fn is_staging_name(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|rest| rest.len() == 6 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// `fsync` the file or directory at `path`.
pub(crate) fn sync_file(path: &Path) -> Result<(), GitError> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|err| GitError::io("sync to disk", path, err))
}

/// `fsync` every file and directory below `root`, and `root` itself.
pub(crate) fn sync_tree(root: &Path) -> Result<(), GitError> {
    for entry in fs::read_dir(root).map_err(|err| GitError::io("read directory", root, err))? {
        let entry = entry.map_err(|err| GitError::io("read directory", root, err))?;
        let path = entry.path();
        let file_type = entry
            .file_type()
            .map_err(|err| GitError::io("inspect", &path, err))?;
        if file_type.is_dir() {
            sync_tree(&path)?;
        } else if file_type.is_file() {
            sync_file(&path)?;
        }
    }
    sync_file(root)
}

/// Remove what an interrupted earlier fetch may have left in `objects/pack`: `.keep` files next
/// to complete packs, and temporary files of packs and indices that were never finished.
pub(super) fn remove_stale_keep_files(dir: &Path) -> Result<(), GitError> {
    let pack_dir = dir.join("objects").join("pack");
    let Ok(entries) = fs::read_dir(&pack_dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let stale = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
            (n.starts_with("pack-") && n.ends_with(".keep")) || n.starts_with(".tmp")
        });
        if stale && entry.file_type().is_ok_and(|t| t.is_file()) {
            tracing::debug!(target: "reposafe::git", path = %path.display(), "removing leftover of an interrupted fetch");
            fs::remove_file(&path).map_err(|err| GitError::io("remove", &path, err))?;
        }
    }
    Ok(())
}

/// Make the packs a fetch added (and their indices), the pack directory and `packed-refs`
/// durable before anyone archives them or relies on them.
pub(super) fn sync_new_packs(dir: &Path, new: &[&PackFile]) -> Result<(), GitError> {
    if new.is_empty() {
        return Ok(());
    }
    for pack in new {
        sync_file(&pack.path)?;
        sync_file(&pack.index_path())?;
    }
    sync_file(&dir.join("objects").join("pack"))?;
    let packed_refs = dir.join("packed-refs");
    if packed_refs.is_file() {
        sync_file(&packed_refs)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_hashes_are_lowercase_hex_of_sha1_or_sha256_length() {
        assert!(is_hex_hash(&"a".repeat(40)));
        assert!(is_hex_hash(&"0".repeat(64)));
        assert!(!is_hex_hash(&"A".repeat(40)));
        assert!(!is_hex_hash("abc"));
    }

    #[test]
    fn only_exact_staging_names_are_leftovers() {
        let prefix = ".repo.git.reposafe-restore-";
        assert!(is_staging_name(".repo.git.reposafe-restore-a1B2c3", prefix));
        assert!(!is_staging_name(
            ".repo.git.reposafe-restore-a1B2c3.replaced",
            prefix
        ));
        assert!(!is_staging_name(
            "repo.git.replaced-20261130T094318Z",
            prefix
        ));
        assert!(!is_staging_name(".repo.git.reposafe-restore-", prefix));
        assert!(!is_staging_name("repo.git", prefix));
    }

    #[test]
    fn mirror_leftovers_are_those_found_first_and_never_this_processs_own() {
        let parent = tempfile::tempdir().expect("tempdir");
        let prefix = ".m.git.reposafe-new-";
        let leftover = parent.path().join(".m.git.reposafe-new-a1B2c3");
        let users = parent.path().join(".m.git.reposafe-new-mine");
        fs::create_dir_all(leftover.join("objects")).expect("mkdir");
        fs::create_dir(&users).expect("mkdir");
        remove_mirror_leftovers(parent.path(), prefix);
        assert!(!leftover.exists(), "a crashed run's staging directory goes");
        assert!(users.exists(), "a directory the user named stays");
        // Made after this process first looked: this process's own, never removed.
        let own = parent.path().join(".m.git.reposafe-new-Z9y8x7");
        fs::create_dir(&own).expect("mkdir");
        remove_mirror_leftovers(parent.path(), prefix);
        assert!(own.exists(), "this process's own staging directory stays");
        forget_mirror_leftovers(parent.path());
        remove_mirror_leftovers(parent.path(), prefix);
        assert!(!own.exists(), "a new process finds it a leftover");
    }
}
