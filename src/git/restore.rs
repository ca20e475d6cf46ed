//! Restore: rebuilding a bare repository from archived pack files and a ref listing.
//!
//! Each pack is streamed into `objects/pack` byte for byte as it was archived, so it keeps its
//! name `pack-<hash>.pack`, and indexed in memory that does not grow with its size (see
//! `pack_receive`). Packs must be
//! self-contained, which every pack written by [`fetch_mirror()`](super::fetch_mirror) is. The
//! repository is assembled in a temporary directory next to the target and renamed into place
//! at the end, so a failed restore leaves no half-written repository behind.
//!
//! Nothing is ever deleted: an existing target is replaced only when it is a git repository
//! and overwriting was asked for, and then it is moved aside to `<target>.replaced-<UTC time>`
//! (a non-git, non-empty directory or a file is always refused). Leftovers of an interrupted
//! earlier restore are recognized by their exact staging name, so a crash between the two
//! renames never costs the original on the next run.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufReader, Read},
    path::{Path, PathBuf},
    sync::atomic::AtomicBool,
};

use super::{
    fetch::{init_bare, open_mirror, remove_leftovers, set_refs, sync_file, sync_tree},
    pack_index::PackError,
    pack_receive::receive_pack,
    GitError, RefEntry, RefTarget,
};

/// Build a bare repository at `target` from `packs` (each a reader yielding one complete `.pack`
/// file) and `refs` (all refs, plus `HEAD`, usually symbolic).
///
/// `target` must be absent or an empty directory, otherwise [`GitError::TargetNotEmpty`] is
/// returned — unless `overwrite` is `true` and `target` is a git repository (bare or not), which
/// is then moved aside to `<target>.replaced-<UTC time>` once the new repository is complete
/// (returned in [`Restored::replaced`]). Anything else that is there (a non-empty directory that
/// is not a git repository, a file, a symbolic link) is refused with
/// [`GitError::TargetNotRepository`], whatever `overwrite` says. Every object ref must point to an object present in the packs
/// ([`GitError::MissingObject`] otherwise). Without a `HEAD` entry, `HEAD` points to
/// `refs/heads/main`, `refs/heads/master` or the first branch, in that order of preference.
pub fn restore_bare(
    target: &Path,
    packs: &mut dyn Iterator<Item = Result<Box<dyn Read + Send>, std::io::Error>>,
    refs: &[RefEntry],
    overwrite: bool,
) -> Result<Restored, GitError> {
    restore_bare_with(target, packs, refs, overwrite, &mut |_| Ok(()))
}

/// Files a restore adds to the finished repository before it is moved into place (e.g. Git
/// LFS objects under `lfs/objects/`): called with the staging repository's path.
pub type AddFiles<'a> = dyn FnMut(&Path) -> std::io::Result<()> + 'a;

/// [`restore_bare()`], with `add` writing more files into the repository before it is
/// synced and moved into place, so the target never shows a repository without them.
pub fn restore_bare_with(
    target: &Path,
    packs: &mut dyn Iterator<Item = Result<Box<dyn Read + Send>, std::io::Error>>,
    refs: &[RefEntry],
    overwrite: bool,
    add: &mut AddFiles<'_>,
) -> Result<Restored, GitError> {
    let refs = normalized_refs(refs)?;
    let target_state = check_target(target, overwrite)?;

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
    add(staging.path()).map_err(|err| GitError::io("add files to", staging.path(), err))?;
    sync_tree(staging.path())?;

    move_into_place(staging, target, target_state)
}

/// Checks that a restore may write to `target` (see [`restore_bare()`]): absent, an empty
/// directory, or a git repository when `overwrite`; the same errors as a restore there.
pub fn check_restore_target(target: &Path, overwrite: bool) -> Result<(), GitError> {
    check_target(target, overwrite).map(drop)
}

fn check_target(target: &Path, overwrite: bool) -> Result<TargetState, GitError> {
    let state = target_state(target)?;
    match state {
        TargetState::Other => Err(GitError::TargetNotRepository {
            path: target.to_owned(),
        }),
        TargetState::Repository if !overwrite => Err(GitError::TargetNotEmpty {
            path: target.to_owned(),
        }),
        _ => Ok(state),
    }
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
/// Writes one archived pack into `pack_dir` byte for byte and indexes it (a restore, and
/// prune's scratch repositories).
pub(super) fn write_pack(
    pack: Box<dyn Read + Send>,
    pack_dir: &Path,
    index: usize,
) -> Result<(), GitError> {
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

/// What [`restore_bare()`] did besides writing the repository.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Where the git repository that was at the target was moved (`<target>.replaced-<time>`),
    /// when one was replaced.
    pub replaced: Option<PathBuf>,
}

enum TargetState {
    Absent,
    EmptyDir,
    /// A git repository: bare (`HEAD`, `objects/`, `refs/`) or with a `.git` directory.
    Repository,
    /// Anything else: never replaced.
    Other,
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
            } else if is_git_repository(target) {
                TargetState::Repository
            } else {
                TargetState::Other
            })
        }
        Ok(_) => Ok(TargetState::Other),
    }
}

/// Whether `dir` is a git repository: a bare one (`HEAD` file, `objects/` and `refs/`
/// directories) or a work tree with a `.git` directory. Symbolic links are not followed.
fn is_git_repository(dir: &Path) -> bool {
    let is = |name: &str, dir_wanted: bool| {
        fs::symlink_metadata(dir.join(name)).is_ok_and(|m| {
            if dir_wanted {
                m.is_dir()
            } else {
                m.is_file()
            }
        })
    };
    (is("HEAD", false) && is("objects", true) && is("refs", true)) || is(".git", true)
}

/// A free name next to `target` for the repository it replaces: `<target>.replaced-<UTC time>`,
/// with `-2`, `-3`, … appended if that exists already.
fn aside_path(target: &Path) -> Result<PathBuf, GitError> {
    let now = time::OffsetDateTime::now_utc();
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let base = target.as_os_str().to_owned();
    for n in 1..1000u32 {
        let mut name = base.clone();
        name.push(format!(".replaced-{stamp}"));
        if n > 1 {
            name.push(format!("-{n}"));
        }
        let path = PathBuf::from(name);
        if fs::symlink_metadata(&path).is_err() {
            return Ok(path);
        }
    }
    Err(GitError::io(
        "find a free name to move aside",
        target,
        std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "too many replaced copies",
        ),
    ))
}

/// Rename the finished repository in `staging` to `target`. A git repository at the target
/// (allowed by `state`, checked by the caller) is moved aside first and never deleted.
fn move_into_place(
    staging: tempfile::TempDir,
    target: &Path,
    state: TargetState,
) -> Result<Restored, GitError> {
    let aside = match state {
        TargetState::Absent => None,
        TargetState::EmptyDir => {
            fs::remove_dir(target)
                .map_err(|err| GitError::io("replace empty directory", target, err))?;
            None
        }
        TargetState::Repository => {
            let aside = aside_path(target)?;
            fs::rename(target, &aside)
                .map_err(|err| GitError::io("move aside the existing repository", target, err))?;
            tracing::warn!(target: "reposafe::git", from = %target.display(), to = %aside.display(), "existing repository moved aside");
            Some(aside)
        }
        TargetState::Other => {
            return Err(GitError::TargetNotRepository {
                path: target.to_owned(),
            })
        }
    };
    let staged = staging.keep();
    if let Err(err) = fs::rename(&staged, target) {
        if let Some(aside) = &aside {
            if let Err(back) = fs::rename(aside, target) {
                tracing::warn!(target: "reposafe::git", path = %aside.display(), error = %back, "could not move the replaced repository back; it is kept there");
            }
        }
        let _ = fs::remove_dir_all(&staged);
        return Err(GitError::io(
            "move the restored repository into place at",
            target,
            err,
        ));
    }
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_file(parent)?;
    }
    tracing::info!(target: "reposafe::git", target = %target.display(), "repository restored");
    Ok(Restored { replaced: aside })
}
