//! Opening a data dir safely: private file modes whatever the caller's umask,
//! a warning naming anything already readable by others, and the sealed
//! credentials the vault must be able to open (so a lost `vault.key` or a mixed
//! passphrase/key-file setup is refused instead of papered over).

use super::EngineError;
use crate::state::State;
use std::path::Path;

/// Entries of a data dir checked for loose modes at open (besides the dir).
const CHECKED: [&str; 5] = ["state.redb", "vault.key", "api-token", "archive", "mirrors"];

/// Makes everything this process creates from now on private to its user
/// (directories 0700, files 0600): the archive, mirrors, state, cache and
/// restored repositories hold the backed-up code. Process-wide (`umask 0077`),
/// so files written by libraries (redb, gix) are covered too.
pub(super) fn private_umask() {
    #[cfg(unix)]
    // SAFETY: umask only replaces the process's file mode creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Warns about an existing data dir (or its main entries) that group or others can
/// read, write or enter, naming the path and its mode.
pub(super) fn warn_loose_modes(data_dir: &Path) {
    for path in loose_modes(data_dir) {
        tracing::warn!(
            "{} has mode {:04o}: group or others can access the backups or secrets in it; run `chmod -R go-rwx {}`",
            path.0.display(),
            path.1,
            data_dir.display()
        );
    }
}

/// The data dir and its main entries whose mode lets group or others in, with
/// their modes.
pub(super) fn loose_modes(data_dir: &Path) -> Vec<(std::path::PathBuf, u32)> {
    let mut out = Vec::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let paths = std::iter::once(data_dir.to_path_buf())
            .chain(CHECKED.iter().map(|name| data_dir.join(name)));
        for path in paths {
            if let Ok(meta) = std::fs::symlink_metadata(&path) {
                let mode = meta.permissions().mode() & 0o7777;
                if mode & 0o077 != 0 {
                    out.push((path, mode));
                }
            }
        }
    }
    out
}

/// Every sealed credential stored in the data dir (connections' and scoped ones).
pub(super) fn sealed_credentials(state: &State) -> Result<Vec<Vec<u8>>, EngineError> {
    let mut out = Vec::new();
    for conn in state.connections()? {
        out.push(state.sealed_credential(&conn.name)?);
        out.extend(
            state
                .scoped_credentials(&conn.name)?
                .into_iter()
                .map(|c| c.sealed),
        );
    }
    out.extend(super::notifications::sealed_secrets(state));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn loose_modes_are_named() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let set = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod")
        };
        set(dir.path(), 0o700);
        std::fs::create_dir(dir.path().join("archive")).expect("mkdir");
        set(&dir.path().join("archive"), 0o700);
        assert!(loose_modes(dir.path()).is_empty());
        set(dir.path(), 0o755);
        set(&dir.path().join("archive"), 0o750);
        let found = loose_modes(dir.path());
        assert_eq!(
            found,
            vec![
                (dir.path().to_path_buf(), 0o755),
                (dir.path().join("archive"), 0o750)
            ]
        );
    }
}
