//! The mirror directory itself: telling whether one exists, creating a bare repository
//! configured as a mirror, opening one in isolation (no global configuration, no
//! environment), and the atomic first clone: the mirror is built in a hidden temporary
//! directory next to its place, made durable, and renamed into place only on success, so
//! a failed first fetch (bad credentials, missing repository) leaves nothing behind.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

use secrecy::SecretString;

use super::fetch_into;
use super::files::{list_packs, remove_mirror_leftovers, sync_tree};
use crate::git::{error::chain, url::RemoteUrl, FetchOptions, FetchOutcome, GitError};

/// Configuration appended to every mirror we create. It keeps `git` itself, should anyone run it
/// in a mirror, from repacking or pruning, which would break the one-pack-per-fetch invariant.
const MIRROR_CONFIG: &str = "\
[core]
\tlogAllRefUpdates = false
[gc]
\tauto = 0
\tautoDetach = false
[maintenance]
\tauto = false
[receive]
\tautogc = false
[fetch]
\twriteCommitGraph = false
";

/// In-memory configuration for every repository this module opens.
fn config_overrides() -> [&'static str; 2] {
    ["core.logAllRefUpdates=false", "gc.auto=0"]
}

/// What is at a mirror's path.
pub(super) enum MirrorState {
    Absent,
    EmptyDir,
    Existing,
}

/// What is at `mirror`: nothing, an empty directory, or (presumably) a mirror.
pub(super) fn mirror_state(mirror: &Path) -> Result<MirrorState, GitError> {
    match fs::symlink_metadata(mirror) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(MirrorState::Absent),
        Err(err) => Err(GitError::io("inspect", mirror, err)),
        Ok(meta) if meta.is_dir() => {
            let mut entries =
                fs::read_dir(mirror).map_err(|err| GitError::io("read directory", mirror, err))?;
            Ok(if entries.next().is_none() {
                MirrorState::EmptyDir
            } else {
                MirrorState::Existing
            })
        }
        Ok(_) => Err(GitError::InvalidMirror {
            path: mirror.to_owned(),
            message: "it exists but is not a directory".into(),
        }),
    }
}

/// The first fetch: clone into a staging directory next to `mirror`, then rename it into place.
pub(super) fn clone_into_new_mirror(
    mirror: &Path,
    state: MirrorState,
    remote: &RemoteUrl,
    auth: Option<&SecretString>,
    opts: &FetchOptions,
) -> Result<FetchOutcome, GitError> {
    let parent = match mirror.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(|err| GitError::io("create directory", &parent, err))?;
    let name = mirror
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "mirror".into());
    let prefix = format!(".{name}.reposafe-new-");
    remove_mirror_leftovers(&parent, &prefix);
    let staging = tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(&parent)
        .map_err(|err| GitError::io("create temporary directory in", &parent, err))?;

    init_bare(staging.path(), true)?;
    let repo = open_mirror(staging.path())?;
    let mut out = fetch_into(&repo, staging.path(), remote, auth, opts, false)?;
    drop(repo);

    if matches!(state, MirrorState::EmptyDir) {
        fs::remove_dir(mirror)
            .map_err(|err| GitError::io("replace empty directory", mirror, err))?;
    }
    sync_tree(staging.path())?;
    let staged = staging.keep();
    if let Err(err) = fs::rename(&staged, mirror) {
        let _ = fs::remove_dir_all(&staged);
        return Err(GitError::io(
            "move the new mirror into place at",
            mirror,
            err,
        ));
    }
    out.packs = list_packs(mirror)?;
    out.cloned = true;
    Ok(out)
}

/// Create an empty bare repository at `dir`; with `mirror_config`, configure it as a mirror.
pub(crate) fn init_bare(dir: &Path, mirror_config: bool) -> Result<(), GitError> {
    gix::ThreadSafeRepository::init_opts(
        dir,
        gix::create::Kind::Bare,
        gix::create::Options::default(),
        gix::open::Options::isolated().config_overrides(config_overrides()),
    )
    .map_err(|err| {
        GitError::repo(
            dir,
            format!("could not create a bare repository: {}", chain(&err)),
        )
    })?;
    if !mirror_config {
        return Ok(());
    }
    let config = dir.join("config");
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(&config)
        .map_err(|err| GitError::io("open", &config, err))?;
    file.write_all(MIRROR_CONFIG.as_bytes())
        .map_err(|err| GitError::io("write", &config, err))?;
    Ok(())
}

/// Open the bare repository at `dir` without reading any global configuration or environment.
pub(crate) fn open_mirror(dir: &Path) -> Result<gix::Repository, GitError> {
    let repo = gix::open_opts(
        dir,
        gix::open::Options::isolated()
            .open_path_as_is(true)
            .config_overrides(config_overrides()),
    )
    .map_err(|err| GitError::InvalidMirror {
        path: dir.to_owned(),
        message: chain(&err),
    })?;
    if !repo.is_bare() {
        return Err(GitError::InvalidMirror {
            path: dir.to_owned(),
            message: "it is not a bare repository".into(),
        });
    }
    Ok(repo)
}
