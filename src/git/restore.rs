//! Restore: rebuilding a bare repository from archived pack files and a ref listing.
//!
//! Each pack is streamed into `objects/pack` byte for byte as it was archived, so it keeps its
//! name `pack-<hash>.pack`, and indexed in memory that does not grow with its size (see
//! `pack_receive`). Packs must be
//! self-contained, which every pack written by [`fetch_mirror()`](super::fetch_mirror) is. The
//! repository is assembled in a temporary directory next to the target and renamed into place
//! at the end, so a failed restore leaves no half-written repository behind.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufReader, Read},
    path::{Path, PathBuf},
    sync::atomic::AtomicBool,
};

use super::{
    fetch::{init_bare, open_mirror, remove_leftovers, remove_path, set_refs, sync_tree},
    pack_index::PackError,
    pack_receive::receive_pack,
    GitError, RefEntry, RefTarget,
};

/// Build a bare repository at `target` from `packs` (each a reader yielding one complete `.pack`
/// file) and `refs` (all refs, plus `HEAD`, usually symbolic).
///
/// `target` must be absent or an empty directory, otherwise [`GitError::TargetNotEmpty`] is
/// returned — unless `overwrite` is `true`, in which case whatever is there is replaced once the
/// new repository is complete. Every object ref must point to an object present in the packs
/// ([`GitError::MissingObject`] otherwise). Without a `HEAD` entry, `HEAD` points to
/// `refs/heads/main`, `refs/heads/master` or the first branch, in that order of preference.
pub fn restore_bare(
    target: &Path,
    packs: &mut dyn Iterator<Item = Result<Box<dyn Read + Send>, std::io::Error>>,
    refs: &[RefEntry],
    overwrite: bool,
) -> Result<(), GitError> {
    let refs = normalized_refs(refs)?;
    let target_state = target_state(target)?;
    if matches!(target_state, TargetState::NonEmpty) && !overwrite {
        return Err(GitError::TargetNotEmpty {
            path: target.to_owned(),
        });
    }

    let parent = match target.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(|err| GitError::io("create directory", &parent, err))?;
    let name = target
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "repository".into());
    let prefix = format!(".{name}.reposafe-restore-");
    remove_leftovers(&parent, &prefix);
    let staging = tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(&parent)
        .map_err(|err| GitError::io("create temporary directory in", &parent, err))?;
    tracing::info!(target: "reposafe::git", target = %target.display(), refs = refs.len(), "restoring repository");

    init_bare(staging.path(), false)?;
    let pack_dir = staging.path().join("objects").join("pack");
    let mut count = 0usize;
    for (index, pack) in packs.enumerate() {
        let pack = pack.map_err(|err| GitError::InvalidPack {
            index,
            message: format!("could not open it: {err}"),
        })?;
        write_pack(pack, &pack_dir, index)?;
        count += 1;
    }
    tracing::debug!(target: "reposafe::git", packs = count, "packs written and indexed");

    let repo = open_mirror(staging.path())?;
    let mut refs = refs;
    if !refs.iter().any(|r| r.name == "HEAD") {
        if let Some(branch) = default_head(&refs) {
            refs.push(RefEntry {
                name: "HEAD".into(),
                target: RefTarget::Symbolic(branch),
            });
        }
    }
    set_refs(&repo, staging.path(), &refs)?;
    drop(repo);
    sync_tree(staging.path())?;

    move_into_place(staging, target, target_state)
}

/// Validate `refs` and reject duplicates, before any expensive work.
fn normalized_refs(refs: &[RefEntry]) -> Result<Vec<RefEntry>, GitError> {
    let mut seen: BTreeMap<&str, &RefTarget> = BTreeMap::new();
    for entry in refs {
        if entry.name != "HEAD" && !entry.name.starts_with("refs/") {
            return Err(GitError::InvalidRef {
                name: entry.name.clone(),
                message: "only HEAD and names starting with refs/ can be restored".into(),
            });
        }
        if gix::refs::FullName::try_from(entry.name.as_str()).is_err() {
            return Err(GitError::InvalidRef {
                name: entry.name.clone(),
                message: "not a valid reference name".into(),
            });
        }
        match &entry.target {
            RefTarget::Object(hex) => {
                if gix::ObjectId::from_hex(hex.as_bytes()).is_err() {
                    return Err(GitError::InvalidRef {
                        name: entry.name.clone(),
                        message: format!("target {hex:?} is not a hex object id"),
                    });
                }
            }
            RefTarget::Symbolic(to) => {
                if gix::refs::FullName::try_from(to.as_str()).is_err() {
                    return Err(GitError::InvalidRef {
                        name: entry.name.clone(),
                        message: format!("symbolic target {to:?} is not a valid reference name"),
                    });
                }
            }
        }
        if let Some(previous) = seen.insert(&entry.name, &entry.target) {
            if previous != &entry.target {
                return Err(GitError::InvalidRef {
                    name: entry.name.clone(),
                    message: "listed more than once with different targets".into(),
                });
            }
        }
    }
    let mut out: Vec<RefEntry> = refs.to_vec();
    out.sort();
    out.dedup();
    Ok(out)
}

fn default_head(refs: &[RefEntry]) -> Option<String> {
    let has = |name: &str| refs.iter().any(|r| r.name == name);
    ["refs/heads/main", "refs/heads/master"]
        .into_iter()
        .find(|name| has(name))
        .map(str::to_owned)
        .or_else(|| {
            refs.iter()
                .find(|r| r.name.starts_with("refs/heads/"))
                .map(|r| r.name.clone())
        })
}

/// Stream one pack into `pack_dir` and build its index, in memory independent of the pack size.
fn write_pack(pack: Box<dyn Read + Send>, pack_dir: &Path, index: usize) -> Result<(), GitError> {
    let mut reader = BufReader::with_capacity(64 * 1024, pack);
    let never_interrupt = AtomicBool::new(false);
    // Restored packs are written exactly as archived: no thin-pack completion, which would
    // change their content and name. Packs from `fetch_mirror()` are self-contained.
    let received = receive_pack(
        &mut reader,
        pack_dir,
        None::<gix::objs::find::Never>,
        gix::hash::Kind::Sha1,
        &never_interrupt,
    )
    .map_err(|err| match err {
        PackError::Io { action, source } => GitError::InvalidPack {
            index,
            message: format!("could not {action}: {source}"),
        },
        err => GitError::InvalidPack {
            index,
            message: err.to_string(),
        },
    })?;
    match received {
        Some(received) => tracing::debug!(
            target: "reposafe::git",
            index,
            objects = received.num_objects,
            pack = %received.pack_hash,
            "pack restored"
        ),
        None => tracing::debug!(target: "reposafe::git", index, "empty pack skipped"),
    }
    Ok(())
}

enum TargetState {
    Absent,
    EmptyDir,
    NonEmpty,
}

fn target_state(target: &Path) -> Result<TargetState, GitError> {
    match fs::symlink_metadata(target) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(TargetState::Absent),
        Err(err) => Err(GitError::io("inspect", target, err)),
        Ok(meta) if meta.is_dir() => {
            let mut entries =
                fs::read_dir(target).map_err(|err| GitError::io("read directory", target, err))?;
            Ok(if entries.next().is_none() {
                TargetState::EmptyDir
            } else {
                TargetState::NonEmpty
            })
        }
        Ok(_) => Ok(TargetState::NonEmpty),
    }
}

/// Rename the finished repository in `staging` to `target`, replacing what is there as allowed
/// by `state` (checked by the caller).
fn move_into_place(
    staging: tempfile::TempDir,
    target: &Path,
    state: TargetState,
) -> Result<(), GitError> {
    // Move whatever is at the target aside first, so it can be put back if the rename fails.
    let aside = match state {
        TargetState::Absent => None,
        TargetState::EmptyDir => {
            fs::remove_dir(target)
                .map_err(|err| GitError::io("replace empty directory", target, err))?;
            None
        }
        TargetState::NonEmpty => {
            let mut aside = staging.path().as_os_str().to_owned();
            aside.push(".replaced");
            let aside = PathBuf::from(aside);
            fs::rename(target, &aside)
                .map_err(|err| GitError::io("move aside the existing", target, err))?;
            Some(aside)
        }
    };
    let staged = staging.keep();
    if let Err(err) = fs::rename(&staged, target) {
        if let Some(aside) = &aside {
            let _ = fs::rename(aside, target);
        }
        let _ = fs::remove_dir_all(&staged);
        return Err(GitError::io(
            "move the restored repository into place at",
            target,
            err,
        ));
    }
    if let Some(aside) = aside {
        if let Err(err) = remove_path(&aside) {
            tracing::warn!(target: "reposafe::git", path = %aside.display(), error = %err, "could not remove the replaced repository");
        }
    }
    tracing::info!(target: "reposafe::git", target = %target.display(), "repository restored");
    Ok(())
}
