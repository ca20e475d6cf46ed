//! Writing a repository's refs the way `git pack-refs --all` leaves them: every direct ref in
//! one `packed-refs` file (sorted, annotated tags fully peeled), written to
//! `packed-refs.lock`, fsynced and renamed over the old file in one step; loose files only
//! where git keeps them (symbolic refs, and `HEAD`).
//!
//! There is no lock file per ref: the caller owns the repository (one operation per mirror in
//! this process, the data dir's lock across processes, or a restore's private staging
//! directory). The one `packed-refs.lock`, created exclusively, still keeps a concurrent git
//! out. Writing ten thousand refs is one file and one rename, instead of ten thousand lock
//! files, renames and directory walks.
//!
//! Crash safety: the new `packed-refs` is complete and fsynced before it replaces the old one.
//! Loose refs that would shadow it are removed afterwards; a crash in between leaves a mirror
//! whose refs differ from the remote's, which the next fetch corrects (the archive takes its
//! ref listing from the remote, never from the mirror).

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

use super::{error::chain, GitError, RefTarget};

/// The header git writes: every ref is listed with its peeled target when it has one.
const HEADER: &str = "# pack-refs with: peeled fully-peeled sorted \n";

/// Refs split as they are stored: direct refs in `packed-refs`, symbolic ones as loose files.
struct Rendered<'a> {
    packed: String,
    symbolic: BTreeMap<&'a str, &'a str>,
}

/// The `packed-refs` content for `refs` (sorted by name), with `peel(name, hex)` giving each
/// object ref's peeled target (for annotated tags), and the symbolic refs apart. Names are
/// checked when `check_names` (to write them; a listing from the remote was checked already).
fn render<'a>(
    refs: &BTreeMap<&'a str, &'a RefTarget>,
    check_names: bool,
    mut peel: impl FnMut(&str, &str) -> Result<Option<gix::ObjectId>, GitError>,
) -> Result<Rendered<'a>, GitError> {
    let mut packed = String::with_capacity(HEADER.len() + refs.len() * 100);
    packed.push_str(HEADER);
    let mut symbolic = BTreeMap::new();
    for (name, target) in refs {
        if check_names {
            check_name(name)?;
        }
        match target {
            RefTarget::Object(hex) => {
                let peeled = peel(name, hex)?;
                packed.extend(hex.chars().map(|c| c.to_ascii_lowercase()));
                packed.push(' ');
                packed.push_str(name);
                packed.push('\n');
                if let Some(peeled) = peeled {
                    packed.push('^');
                    packed.push_str(&peeled.to_string());
                    packed.push('\n');
                }
            }
            RefTarget::Symbolic(to) => {
                check_symbolic(name, to)?;
                symbolic.insert(*name, to.as_str());
            }
        }
    }
    Ok(Rendered { packed, symbolic })
}

/// Whether the refs of the repository at `dir` already are exactly `refs` and `head` (when
/// given), as [`write_refs`] would leave them, with `peeled` the peeled target of each
/// annotated tag as the remote advertised it: `packed-refs` byte for byte, no other loose
/// ref, `HEAD` as wanted. Reads two files and walks `refs/`; looks up no object.
pub(crate) fn already_written(
    dir: &Path,
    refs: &BTreeMap<&str, &RefTarget>,
    head: Option<&RefTarget>,
    peeled: &HashMap<String, gix::ObjectId>,
) -> Result<bool, GitError> {
    let rendered = render(refs, false, |name, _| Ok(peeled.get(name).copied()))?;
    if !file_is(&dir.join("packed-refs"), rendered.packed.as_bytes()) {
        return Ok(false);
    }
    if head.is_some_and(|head| !file_is(&dir.join("HEAD"), head_content(head).as_bytes())) {
        return Ok(false);
    }
    let mut loose = Vec::new();
    list_loose(&dir.join("refs"), "refs", &mut loose)?;
    Ok(loose.len() == rendered.symbolic.len()
        && loose.iter().all(|(name, path)| {
            rendered
                .symbolic
                .get(name.as_str())
                .is_some_and(|to| file_is(path, format!("ref: {to}\n").as_bytes()))
        }))
}

fn file_is(path: &Path, content: &[u8]) -> bool {
    fs::read(path).is_ok_and(|bytes| bytes == content)
}

/// Make the refs under `refs/` of the repository at `dir` exactly `refs` (full names, all
/// starting with `refs/`), and `HEAD` equal to `head` when given. Every object target must
/// exist in `repo` ([`GitError::MissingObject`] otherwise); annotated tags are peeled by
/// reading them from `repo`.
pub(crate) fn write_refs(
    repo: &gix::Repository,
    dir: &Path,
    refs: &BTreeMap<&str, &RefTarget>,
    head: Option<&RefTarget>,
) -> Result<(), GitError> {
    let rendered = render(refs, true, |name, hex| Ok(resolve(repo, dir, name, hex)?.1))?;
    replace_file(dir, "packed-refs", rendered.packed.as_bytes())?;
    sync_loose_refs(dir, refs, &rendered.symbolic)?;
    if let Some(head) = head {
        write_head(repo, dir, head)?;
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), GitError> {
    if !name.starts_with("refs/") {
        return Err(GitError::InvalidRef {
            name: name.to_owned(),
            message: "only HEAD and names starting with refs/ are allowed".into(),
        });
    }
    gix::refs::FullName::try_from(name).map_err(|err| GitError::InvalidRef {
        name: name.to_owned(),
        message: err.to_string(),
    })?;
    Ok(())
}

fn check_symbolic(name: &str, to: &str) -> Result<(), GitError> {
    gix::refs::FullName::try_from(to).map_err(|_| GitError::InvalidRef {
        name: name.to_owned(),
        message: format!("symbolic target {to:?} is not a valid reference name"),
    })?;
    Ok(())
}

/// The object `hex` names, checked to exist, and what it peels to when it is a tag.
fn resolve(
    repo: &gix::Repository,
    dir: &Path,
    name: &str,
    hex: &str,
) -> Result<(gix::ObjectId, Option<gix::ObjectId>), GitError> {
    let id = gix::ObjectId::from_hex(hex.as_bytes()).map_err(|err| GitError::InvalidRef {
        name: name.to_owned(),
        message: format!("target {hex:?} is not an object id: {err}"),
    })?;
    if id.kind() != repo.object_hash() {
        return Err(GitError::InvalidRef {
            name: name.to_owned(),
            message: format!("target {hex} does not use the repository's object hash"),
        });
    }
    let missing = || GitError::MissingObject {
        name: name.to_owned(),
        oid: hex.to_owned(),
        path: dir.to_owned(),
    };
    let header = repo
        .try_find_header(id)
        .map_err(|err| {
            GitError::repo(dir, format!("could not read object {hex}: {}", chain(&err)))
        })?
        .ok_or_else(missing)?;
    if header.kind() != gix::object::Kind::Tag {
        return Ok((id, None));
    }
    let peeled = repo
        .find_object(id)
        .and_then(|tag| tag.peel_tags_to_end())
        .map_err(|_| missing())?;
    Ok((id, Some(peeled.id)))
}

/// Remove every loose ref under `refs/` but the symbolic ones wanted as they are (a loose
/// direct ref would shadow its `packed-refs` line), with the reflogs of refs no longer
/// wanted, and the directories that leaves empty; then write the wanted symbolic refs that
/// are missing.
fn sync_loose_refs(
    dir: &Path,
    wanted: &BTreeMap<&str, &RefTarget>,
    symbolic: &BTreeMap<&str, &str>,
) -> Result<(), GitError> {
    let mut loose = Vec::new();
    list_loose(&dir.join("refs"), "refs", &mut loose)?;
    let mut present = Vec::new();
    let mut removed_any = false;
    for (name, path) in loose {
        let keep = symbolic
            .get(name.as_str())
            .is_some_and(|to| file_is(&path, format!("ref: {to}\n").as_bytes()));
        if keep {
            present.push(name);
            continue;
        }
        fs::remove_file(&path).map_err(|err| GitError::io("remove loose ref", &path, err))?;
        removed_any = true;
        if !wanted.contains_key(name.as_str()) {
            remove_reflog(dir, &name)?;
        }
    }
    if removed_any {
        remove_empty_dirs(&dir.join("refs"), true);
    }
    for (name, to) in symbolic {
        if present.iter().any(|p| p == name) {
            continue;
        }
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .map_err(|err| GitError::io("create directory", parent, err))?;
        }
        replace_file(dir, name, format!("ref: {to}\n").as_bytes())?;
    }
    Ok(())
}

/// Remove the empty directories below `path` (never `refs/heads` and `refs/tags`, which git
/// creates, nor `path` itself when `top`). Best effort: a directory that cannot be removed
/// only costs a little time in later walks.
fn remove_empty_dirs(path: &Path, top: bool) {
    let Ok(entries) = fs::read_dir(path) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_empty_dirs(&entry.path(), false);
        }
    }
    let kept = top || path.ends_with("refs/heads") || path.ends_with("refs/tags");
    if !kept {
        let _ = fs::remove_dir(path);
    }
}

/// Every loose ref file below `path` (the directory of ref name `prefix`), with its name.
fn list_loose(path: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> Result<(), GitError> {
    let entries = match fs::read_dir(path) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(GitError::io("read directory", path, err)),
    };
    for entry in entries {
        let entry = entry.map_err(|err| GitError::io("read directory", path, err))?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        let name = format!("{prefix}/{file_name}");
        let file_type = entry
            .file_type()
            .map_err(|err| GitError::io("inspect", entry.path(), err))?;
        if file_type.is_dir() {
            list_loose(&entry.path(), &name, out)?;
        } else if file_type.is_file() && !file_name.ends_with(".lock") {
            out.push((name, entry.path()));
        }
    }
    Ok(())
}

fn remove_reflog(dir: &Path, name: &str) -> Result<(), GitError> {
    let log = dir.join("logs").join(name);
    match fs::remove_file(&log) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(GitError::io("remove reflog", &log, err))
        }
        _ => Ok(()),
    }
}

/// What the `HEAD` file holds when it points at `target`.
fn head_content(target: &RefTarget) -> String {
    match target {
        RefTarget::Symbolic(to) => format!("ref: {to}\n"),
        RefTarget::Object(hex) => format!("{hex}\n"),
    }
}

/// Point `HEAD` at `target` (checked: a valid name, or an object that exists) unless it
/// already does.
fn write_head(repo: &gix::Repository, dir: &Path, target: &RefTarget) -> Result<(), GitError> {
    match target {
        RefTarget::Symbolic(to) => check_symbolic("HEAD", to)?,
        RefTarget::Object(hex) => {
            resolve(repo, dir, "HEAD", hex)?;
        }
    }
    let content = head_content(target);
    if file_is(&dir.join("HEAD"), content.as_bytes()) {
        return Ok(());
    }
    replace_file(dir, "HEAD", content.as_bytes())
}

/// Replace `dir/name` by `content` atomically: written to `name.lock` (created exclusively,
/// so a concurrent git is kept out), fsynced, and renamed over it.
fn replace_file(dir: &Path, name: &str, content: &[u8]) -> Result<(), GitError> {
    let path = dir.join(name);
    let lock = dir.join(format!("{name}.lock"));
    let mut file = match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&lock)
    {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(GitError::repo(
                dir,
                format!("{} exists: another process is updating this repository's references; if none is, remove the file", lock.display()),
            ))
        }
        Err(err) => return Err(GitError::io("create", &lock, err)),
    };
    let written = file
        .write_all(content)
        .and_then(|()| file.sync_all())
        .map_err(|err| GitError::io("write", &lock, err))
        .and_then(|()| fs::rename(&lock, &path).map_err(|err| GitError::io("rename", &lock, err)));
    if written.is_err() {
        let _ = fs::remove_file(&lock);
    }
    written
}
