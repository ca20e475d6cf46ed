//! Push refusals as Bitbucket words them, for the doubles' repositories: pre-receive hook
//! scripts that print Bitbucket's messages (each line reaches the client as a `remote:` line)
//! and decline, and [`install_pre_receive`] to put one into a bare repository served by a
//! double (`git http-backend` runs it like Bitbucket's own hooks run).
//!
//! Sources of the wording: Atlassian's "Reduce repository size" page (the 4 GB limit), the
//! 100 MB push file size limit (first line as quoted by users; Atlassian's announcement of
//! 2024-05-06), Bitbucket Cloud branch restrictions (`Permission denied to update branch …`)
//! and Data Center branch permissions (`Branch … can only be modified through pull requests.`).

use std::path::Path;

/// Bitbucket Cloud, repository over its 4 GB limit (every ref is declined).
pub const CLOUD_REPOSITORY_SIZE_LIMIT: &str =
    "Repository is over the size limit (4 GB) and will not accept further additions.\n\
\n\
Learn how to reduce your repository size: https://confluence.atlassian.com/x/xgMvEw.\n";

/// Bitbucket Cloud, a pushed file of 100 MB or more.
pub const CLOUD_FILE_SIZE_LIMIT: &str = "Your push has been blocked because it includes at least one file that is 100 MB or larger. \
Bitbucket Cloud recommends using Git LFS for large files to prevent repositories from growing too large and reaching the 4GB repository size limit. \
If necessary, the file size limit can be disabled by a repository admin in Repository settings > Advanced.\n";

/// Bitbucket Cloud branch restriction on `branch` (a short name like `main`).
pub fn cloud_branch_restriction(branch: &str) -> String {
    format!("Permission denied to update branch {branch}.\n")
}

/// Bitbucket Data Center branch permission "prevent changes without a pull request" on
/// `full_ref` (like `refs/heads/main`).
pub fn dc_pull_request_only(full_ref: &str) -> String {
    format!(
        "----------------------------------------------------\n\
         Branch {full_ref} can only be modified through pull requests.\n\
         Check your branch permissions configuration with the project administrator.\n\
         ----------------------------------------------------\n"
    )
}

/// Installs a `pre-receive` hook in the bare repository `repo` that prints `message` (to
/// stderr, which receive-pack relays as `remote:` lines) and declines the push when a ref
/// the push updates matches `ref_glob` (a shell `case` pattern like `refs/heads/main` or
/// `*`): git then reports `pre-receive hook declined` for every ref of the push.
pub fn install_pre_receive(repo: &Path, ref_glob: &str, message: &str) {
    let quoted = message.replace('\'', "'\\''");
    let script = format!(
        "#!/bin/sh\n\
         declined=\n\
         while read old new name; do\n\
           case \"$name\" in {ref_glob}) declined=1 ;; esac\n\
         done\n\
         if [ -n \"$declined\" ]; then\n\
           printf '%s' '{quoted}' >&2\n\
           exit 1\n\
         fi\n\
         exit 0\n"
    );
    let hooks = repo.join("hooks");
    std::fs::create_dir_all(&hooks).expect("create hooks directory");
    let path = hooks.join("pre-receive");
    std::fs::write(&path, script).expect("write pre-receive hook");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("make the hook executable");
    }
}
