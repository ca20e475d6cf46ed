//! Refs as git would leave them: one `packed-refs` file, byte for byte what `git pack-refs
//! --all` writes (annotated tags peeled), no loose refs, in mirrors and restores alike.

use std::{fs, path::Path};

use super::{fetch, support::Git};
use crate::git::{list_packs, restore_bare, GitError};

/// Every file below `dir/refs` (loose refs).
fn loose_refs(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path.display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(&dir.join("refs"), &mut out);
    out
}

/// What git itself writes for the refs of `repo`: a `git clone --mirror` of it, packed.
fn gits_packed_refs(git: &Git, repo: &Path) -> String {
    let copy = git.root().join(format!(
        "git-packed-{}.git",
        repo.file_name().and_then(|n| n.to_str()).unwrap_or("repo")
    ));
    let _ = fs::remove_dir_all(&copy);
    git.clone_mirror(repo, &copy);
    git.run(&copy, &["pack-refs", "--all"]);
    fs::read_to_string(copy.join("packed-refs")).expect("git's packed-refs")
}

/// An origin with `tags` tags (every other one annotated) and `prs` pull-request refs.
fn origin_with_many_refs(git: &Git, tags: usize, prs: usize) -> std::path::PathBuf {
    let root = git.root();
    let work = root.join("many-work");
    git.run(root, &["init", "-q", "many-work"]);
    let mut stdin = String::new();
    for i in 0..20 {
        fs::write(work.join("file.txt"), format!("version {i}\n")).expect("write");
        git.run(&work, &["add", "."]);
        git.run(&work, &["commit", "-q", "-m", &format!("c{i}")]);
    }
    for t in 0..tags {
        let at = format!("HEAD~{}", t % 20);
        if t % 2 == 0 {
            git.run(
                &work,
                &["tag", "-a", &format!("v{t}"), "-m", "release", &at],
            );
        } else {
            stdin.push_str(&format!("create refs/tags/v{t} {at}\n"));
        }
    }
    for pr in 0..prs {
        stdin.push_str(&format!(
            "create refs/pull-requests/{pr}/from HEAD~{}\n",
            pr % 20
        ));
    }
    let mut child = git
        .command(&work)
        .args(["update-ref", "--stdin"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("update-ref");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write");
    assert!(child.wait().expect("update-ref").success());
    let origin = root.join("many.git");
    git.clone_mirror(&work, &origin);
    origin
}

#[test]
fn mirror_and_restore_write_one_packed_refs_file_like_git() {
    let git = Git::new();
    let origin = origin_with_many_refs(&git, 400, 600);
    let url = format!("file://{}", origin.display());
    let mirror = git.root().join("mirror.git");
    let fetched = fetch(&mirror, &url).expect("clone");
    assert!(fetched.refs.len() > 1000, "{} refs", fetched.refs.len());
    git.fsck(&mirror);
    assert_eq!(loose_refs(&mirror), Vec::<String>::new(), "loose refs");
    let expected = gits_packed_refs(&git, &origin);
    assert!(expected.contains("\n^"), "git peels annotated tags");
    assert_eq!(
        fs::read_to_string(mirror.join("packed-refs")).expect("packed-refs"),
        expected,
        "the mirror's packed-refs is what git writes"
    );

    let restored = git.root().join("restored.git");
    let packs = list_packs(&mirror).expect("packs");
    restore_bare(
        &restored,
        &mut super::support::pack_readers(&packs),
        &fetched.refs,
        false,
    )
    .expect("restore");
    git.fsck(&restored);
    assert_eq!(loose_refs(&restored), Vec::<String>::new(), "loose refs");
    assert_eq!(
        fs::read_to_string(restored.join("packed-refs")).expect("packed-refs"),
        expected,
        "the restore's packed-refs is what git writes"
    );
    assert_eq!(git.refs_with_head(&restored), git.refs_with_head(&origin));
}

#[test]
fn loose_refs_in_a_mirror_are_folded_in_and_deleted_refs_lose_their_reflogs() {
    let git = Git::new();
    let origin = origin_with_many_refs(&git, 10, 10);
    let url = format!("file://{}", origin.display());
    let mirror = git.root().join("mirror.git");
    fetch(&mirror, &url).expect("clone");
    // Someone ran git in the mirror: a stale loose ref with a reflog, and a reflog of a ref
    // the remote is about to delete.
    let logged = ["-c", "core.logAllRefUpdates=always"];
    git.run(
        &mirror,
        &[logged[0], logged[1], "update-ref", "refs/tags/v1", "HEAD~3"],
    );
    git.run(
        &mirror,
        &[
            logged[0],
            logged[1],
            "update-ref",
            "refs/pull-requests/3/from",
            "HEAD~4",
        ],
    );
    assert!(mirror.join("logs/refs/pull-requests/3/from").is_file());
    assert!(!loose_refs(&mirror).is_empty());
    // On the remote: a deleted ref, and a new ref where a deleted one was a directory.
    git.run(&origin, &["update-ref", "-d", "refs/pull-requests/3/from"]);
    git.run(&origin, &["update-ref", "-d", "refs/pull-requests/4/from"]);
    git.run(&origin, &["update-ref", "refs/pull-requests/4", "HEAD"]);

    let fetched = fetch(&mirror, &url).expect("fetch");
    assert_eq!(fetched.refs, git.refs_with_head(&origin));
    assert_eq!(git.refs_with_head(&mirror), git.refs_with_head(&origin));
    assert_eq!(loose_refs(&mirror), Vec::<String>::new(), "loose refs");
    assert!(
        !mirror.join("logs/refs/pull-requests/3/from").exists(),
        "the deleted ref's reflog is gone"
    );
    git.fsck(&mirror);
}

#[test]
fn a_held_packed_refs_lock_is_an_error_naming_it_and_is_left_alone() {
    let git = Git::new();
    let origin = origin_with_many_refs(&git, 2, 2);
    let url = format!("file://{}", origin.display());
    let mirror = git.root().join("mirror.git");
    fetch(&mirror, &url).expect("clone");
    let before = git.refs_with_head(&mirror);
    let lock = mirror.join("packed-refs.lock");
    fs::write(&lock, "held by another git").expect("lock");
    git.run(&origin, &["update-ref", "refs/heads/new", "HEAD~1"]);

    let err = fetch(&mirror, &url).expect_err("lock held");
    assert!(matches!(err, GitError::Repository { .. }), "{err:?}");
    assert!(err.to_string().contains("packed-refs.lock"), "{err}");
    assert_eq!(
        fs::read_to_string(&lock).expect("lock kept"),
        "held by another git"
    );
    assert_eq!(git.refs_with_head(&mirror), before, "refs unchanged");
}
