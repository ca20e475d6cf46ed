//! Tests of the `git` module against real repositories made with the `git` CLI, over `file://`
//! and over HTTP through a tiny test-only CGI bridge to `git http-backend`.

pub(in crate::git) mod bench;
mod http_server;
mod lfs;
mod pack_index;
mod packed_refs;
pub(super) mod support;

use std::{
    fs,
    path::Path,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use secrecy::SecretString;

use super::{
    fetch_mirror, list_packs, restore_bare, FetchOptions, GitAuth, GitError, RefEntry, RefTarget,
};
use support::{dir_snapshot, file_contains, pack_readers, pseudo_random_bytes, Git};

const NO_AUTH: GitAuth = GitAuth::None;

fn fetch(mirror: &Path, url: &str) -> Result<super::FetchOutcome, GitError> {
    let interrupt = AtomicBool::new(false);
    fetch_mirror(
        mirror,
        &FetchOptions {
            url,
            auth: &NO_AUTH,
            progress: None,
            should_interrupt: &interrupt,
            tls: None,
        },
    )
}

/// An origin (bare) plus a work repository pushing into it, with branches, lightweight and
/// annotated tags and a binary file.
fn populated_origin(git: &Git) -> (std::path::PathBuf, std::path::PathBuf) {
    let root = git.root();
    let origin = root.join("origin.git");
    let work = root.join("work");
    git.run(root, &["init", "--bare", "-q", "origin.git"]);
    git.run(root, &["init", "-q", "work"]);
    fs::write(work.join("README.md"), "hello\n").expect("write");
    fs::write(work.join("blob.bin"), pseudo_random_bytes(1, 200_000)).expect("write");
    git.run(&work, &["add", "."]);
    git.run(&work, &["commit", "-q", "-m", "initial"]);
    git.run(&work, &["tag", "v1-light"]);
    fs::write(work.join("README.md"), "hello\nworld\n").expect("write");
    git.run(&work, &["commit", "-q", "-am", "second"]);
    git.run(&work, &["tag", "-a", "v2", "-m", "annotated v2"]);
    git.run(&work, &["branch", "feature"]);
    git.run(&work, &["branch", "old"]);
    git.run(&work, &["branch", "df"]);
    git.run(&work, &["checkout", "-q", "feature"]);
    fs::write(work.join("feature.txt"), "feature work\n").expect("write");
    git.run(&work, &["add", "."]);
    git.run(&work, &["commit", "-q", "-m", "feature"]);
    git.run(&work, &["checkout", "-q", "main"]);
    git.run(
        &work,
        &["remote", "add", "origin", origin.to_str().expect("utf8")],
    );
    git.run(&work, &["push", "-q", "origin", "--all"]);
    git.run(&work, &["push", "-q", "origin", "--tags"]);
    // A ref outside heads and tags, like Bitbucket's pull request refs.
    git.run(
        &origin,
        &[
            "update-ref",
            "refs/pull-requests/1/from",
            "refs/heads/feature",
        ],
    );
    (origin, work)
}

fn assert_refs_match(git: &Git, repo: &Path, refs: &[RefEntry]) {
    assert_eq!(
        git.refs_with_head(repo),
        refs,
        "refs of {} differ",
        repo.display()
    );
}

#[test]
fn mirror_fetch_update_and_restore_over_file_url() {
    let git = Git::new();
    let (origin, work) = populated_origin(&git);
    let url = format!("file://{}", origin.display());
    let mirror = git.root().join("mirrors").join("repo.git");

    // First fetch clones.
    let first = fetch(&mirror, &url).expect("clone");
    assert!(first.cloned);
    assert_eq!(first.new_packs, 1);
    assert_eq!(first.packs.len(), 1);
    assert!(
        first.bytes_received > 200_000,
        "binary file was transferred"
    );
    assert_eq!(
        first.packs[0].size,
        fs::metadata(&first.packs[0].path).expect("pack").len()
    );
    let expected = git.refs_with_head(&origin);
    assert_eq!(first.refs, expected);
    assert!(expected.contains(&RefEntry {
        name: "HEAD".into(),
        target: RefTarget::Symbolic("refs/heads/main".into())
    }));
    let annotated = git.run(&origin, &["rev-parse", "refs/tags/v2"]);
    assert!(
        expected.contains(&RefEntry {
            name: "refs/tags/v2".into(),
            target: RefTarget::Object(annotated.trim().into())
        }),
        "annotated tags are listed with the tag object id"
    );
    assert!(expected
        .iter()
        .any(|r| r.name == "refs/pull-requests/1/from"));
    assert_refs_match(&git, &mirror, &expected);
    git.fsck(&mirror);

    // Unchanged remote: nothing new, nothing written.
    let before = dir_snapshot(&mirror);
    let second = fetch(&mirror, &url).expect("no-op fetch");
    assert!(!second.cloned);
    assert_eq!(second.new_packs, 0);
    assert_eq!(second.bytes_received, 0);
    assert_eq!(second.refs, expected);
    assert_eq!(second.packs, first.packs);
    assert_eq!(
        dir_snapshot(&mirror),
        before,
        "a no-op fetch must not write anything"
    );

    // New commit, force-push, deleted branch and tag, and a branch replaced by a directory of refs.
    fs::write(work.join("README.md"), "hello\nworld\nagain\n").expect("write");
    git.run(&work, &["commit", "-q", "-am", "third"]);
    git.run(&work, &["push", "-q", "origin", "main"]);
    git.run(&work, &["checkout", "-q", "feature"]);
    git.run(&work, &["reset", "-q", "--hard", "main~1"]);
    fs::write(work.join("rewritten.txt"), "rewritten\n").expect("write");
    git.run(&work, &["add", "."]);
    git.run(&work, &["commit", "-q", "-m", "rewritten feature"]);
    git.run(&work, &["push", "-q", "--force", "origin", "feature"]);
    git.run(&work, &["checkout", "-q", "main"]);
    git.run(&work, &["push", "-q", "origin", "--delete", "old"]);
    git.run(&work, &["push", "-q", "origin", "--delete", "v1-light"]);
    git.run(&work, &["push", "-q", "origin", "--delete", "df"]);
    git.run(
        &work,
        &["push", "-q", "origin", "main:refs/heads/df/nested"],
    );
    // Point the remote HEAD elsewhere too.
    git.run(&origin, &["symbolic-ref", "HEAD", "refs/heads/feature"]);

    let third = fetch(&mirror, &url).expect("incremental fetch");
    assert!(!third.cloned);
    assert_eq!(third.new_packs, 1);
    assert_eq!(third.packs.len(), 2);
    assert!(
        third.bytes_received > 0 && third.bytes_received < 100_000,
        "incremental: {}",
        third.bytes_received
    );
    let expected = git.refs_with_head(&origin);
    assert!(!expected
        .iter()
        .any(|r| r.name == "refs/heads/old" || r.name == "refs/tags/v1-light"));
    assert_eq!(third.refs, expected);
    assert_refs_match(&git, &mirror, &expected);
    git.fsck(&mirror);

    // Restore from the packs into a fresh directory.
    let restored = git.root().join("restored").join("repo.git");
    let packs = list_packs(&mirror).expect("packs");
    assert_eq!(packs, third.packs);
    restore_bare(&restored, &mut pack_readers(&packs), &third.refs, false).expect("restore");
    git.fsck(&restored);
    assert_refs_match(&git, &restored, &expected);
    assert_eq!(
        git.run(&restored, &["symbolic-ref", "HEAD"]).trim(),
        "refs/heads/feature"
    );
    let restored_packs = list_packs(&restored).expect("restored packs");
    assert_eq!(
        restored_packs
            .iter()
            .map(|p| &p.pack_hash)
            .collect::<Vec<_>>(),
        packs.iter().map(|p| &p.pack_hash).collect::<Vec<_>>(),
        "packs keep their names"
    );
    let leftovers: Vec<_> = fs::read_dir(git.root().join("restored"))
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        leftovers,
        vec![std::ffi::OsString::from("repo.git")],
        "no temporary directories left"
    );

    // A non-empty target is refused unless overwriting is allowed.
    let err = restore_bare(&restored, &mut pack_readers(&packs), &third.refs, false)
        .expect_err("not empty");
    assert!(
        matches!(&err, GitError::TargetNotEmpty { path } if path == &restored),
        "{err}"
    );
    let first_refs = first.refs.clone();
    restore_bare(&restored, &mut pack_readers(&packs), &first_refs, true).expect("overwrite");
    git.fsck(&restored);
    assert_refs_match(&git, &restored, &first_refs);

    // A restore into an existing empty directory works.
    let empty_dir = git.root().join("empty-target");
    fs::create_dir(&empty_dir).expect("mkdir");
    restore_bare(&empty_dir, &mut pack_readers(&packs), &expected, false)
        .expect("restore into empty dir");
    git.fsck(&empty_dir);
}

#[test]
fn packs_are_self_contained_even_when_the_server_sends_thin_packs() {
    let git = Git::new();
    let root = git.root();
    git.run(root, &["init", "--bare", "-q", "origin.git"]);
    git.run(root, &["init", "-q", "work"]);
    let origin = root.join("origin.git");
    let work = root.join("work");
    // A large, compressible-but-not-trivial text file: small edits to it are sent as deltas
    // against the version the client already has, i.e. a thin pack.
    let mut text = String::new();
    for i in 0..20_000 {
        text.push_str(&format!("line {i} {}\n", i * 7919 % 10007));
    }
    fs::write(work.join("big.txt"), &text).expect("write");
    git.run(&work, &["add", "."]);
    git.run(&work, &["commit", "-q", "-m", "big"]);
    git.run(
        &work,
        &["remote", "add", "origin", origin.to_str().expect("utf8")],
    );
    git.run(&work, &["push", "-q", "origin", "main"]);
    let url = format!("file://{}", origin.display());
    let mirror = root.join("mirror.git");
    let first = fetch(&mirror, &url).expect("clone");

    text.push_str("one more line\n");
    fs::write(work.join("big.txt"), &text).expect("write");
    git.run(&work, &["commit", "-q", "-am", "edit"]);
    git.run(&work, &["push", "-q", "origin", "main"]);
    let out = fetch(&mirror, &url).expect("fetch");
    assert_eq!(out.new_packs, 1);
    let new_pack = out
        .packs
        .iter()
        .find(|p| !first.packs.contains(p))
        .expect("the incremental pack");
    // The server sent the edit as a delta against the blob we already had (a thin pack): few
    // bytes on the wire. The stored pack is bigger because the base was appended to it.
    assert!(
        out.bytes_received < 10_000,
        "the edit came as a delta: {}",
        out.bytes_received
    );
    assert!(
        new_pack.size > out.bytes_received + 10_000,
        "thin pack completed with its base: {} bytes stored, {} received",
        new_pack.size,
        out.bytes_received
    );

    // `git index-pack` (which fails on unresolved deltas) must accept the pack on its own.
    let scratch = root.join("scratch.git");
    git.run(root, &["init", "--bare", "-q", "scratch.git"]);
    let copy = scratch.join("objects/pack/copy.pack");
    fs::copy(&new_pack.path, &copy).expect("copy");
    git.run(&scratch, &["index-pack", copy.to_str().expect("utf8")]);

    // And our restore accepts each pack alone.
    for (i, pack) in out.packs.iter().enumerate() {
        let target = root.join(format!("alone-{i}.git"));
        restore_bare(
            &target,
            &mut pack_readers(std::slice::from_ref(pack)),
            &[],
            false,
        )
        .expect("a single pack restores on its own");
    }
}

#[test]
fn empty_remote_fetches_and_restores() {
    let git = Git::new();
    let root = git.root();
    git.run(root, &["init", "--bare", "-q", "empty.git"]);
    let origin = root.join("empty.git");
    let mirror = root.join("mirror.git");
    let url = origin.to_str().expect("utf8").to_owned(); // a plain local path
    let out = fetch(&mirror, &url).expect("empty clone");
    assert!(out.cloned);
    assert_eq!(out.new_packs, 0);
    assert!(out.packs.is_empty());
    assert_eq!(
        out.refs,
        vec![RefEntry {
            name: "HEAD".into(),
            target: RefTarget::Symbolic("refs/heads/main".into())
        }],
        "unborn HEAD is reported through protocol v2"
    );
    assert_eq!(
        git.run(&mirror, &["symbolic-ref", "HEAD"]).trim(),
        "refs/heads/main"
    );
    let again = fetch(&mirror, &url).expect("empty fetch again");
    assert_eq!(again.refs, out.refs);
    assert_eq!(again.new_packs, 0);

    let restored = root.join("restored.git");
    restore_bare(&restored, &mut std::iter::empty(), &out.refs, false).expect("restore empty");
    git.fsck(&restored);
    assert_eq!(
        git.run(&restored, &["symbolic-ref", "HEAD"]).trim(),
        "refs/heads/main"
    );
    assert_eq!(git.run(&restored, &["for-each-ref"]).trim(), "");
}

#[test]
fn remote_that_lost_all_refs_empties_the_mirror() {
    let git = Git::new();
    let (origin, _work) = populated_origin(&git);
    let mirror = git.root().join("mirror.git");
    let url = format!("file://{}", origin.display());
    fetch(&mirror, &url).expect("clone");
    let names = git.run(&origin, &["for-each-ref", "--format=%(refname)"]);
    for name in names.lines() {
        git.run(&origin, &["update-ref", "-d", name]);
    }
    // Leftovers of a crashed fetch (another process) are cleaned up.
    let pack_dir = mirror.join("objects/pack");
    fs::write(pack_dir.join(".tmpAbCdEf"), "partial").expect("write");
    fs::write(pack_dir.join("pack-0123.keep"), "").expect("write");
    fs::write(mirror.join("packed-refs.lock"), "").expect("write");
    super::fetch::forget_prepared(&mirror);
    let out = fetch(&mirror, &url).expect("fetch from emptied remote");
    assert!(!pack_dir.join(".tmpAbCdEf").exists() && !pack_dir.join("pack-0123.keep").exists());
    assert!(!mirror.join("packed-refs.lock").exists());
    assert_eq!(out.refs, git.refs_with_head(&origin));
    assert_eq!(git.run(&mirror, &["for-each-ref"]).trim(), "");
    assert_eq!(out.packs.len(), 1, "objects stay in the immutable pack");
}

#[test]
fn missing_local_repository_is_not_found_and_leaves_nothing() {
    let git = Git::new();
    let mirror = git.root().join("mirror.git");
    let url = format!("file://{}", git.root().join("nope.git").display());
    let err = fetch(&mirror, &url).expect_err("no such repository");
    assert!(matches!(err, GitError::NotFound { .. }), "{err}");
    assert!(!mirror.exists());
    assert_eq!(
        fs::read_dir(git.root()).expect("dir").count(),
        0,
        "no temporary directory left"
    );
}

#[test]
fn interrupted_fetch_leaves_no_mirror() {
    let git = Git::new();
    let (origin, _work) = populated_origin(&git);
    let mirror = git.root().join("mirror.git");
    let interrupt = AtomicBool::new(true);
    let url = format!("file://{}", origin.display());
    let err = fetch_mirror(
        &mirror,
        &FetchOptions {
            url: &url,
            auth: &NO_AUTH,
            progress: None,
            should_interrupt: &interrupt,
            tls: None,
        },
    )
    .expect_err("interrupted");
    assert!(matches!(err, GitError::Interrupted { .. }), "{err}");
    assert!(!mirror.exists());
}

#[test]
fn progress_reports_received_bytes() {
    let git = Git::new();
    let (origin, _work) = populated_origin(&git);
    let mirror = git.root().join("mirror.git");
    let interrupt = AtomicBool::new(false);
    let last = AtomicU64::new(0);
    let calls = AtomicU64::new(0);
    let callback = |bytes: u64| {
        last.store(bytes, Ordering::Relaxed);
        calls.fetch_add(1, Ordering::Relaxed);
    };
    let url = format!("file://{}", origin.display());
    let out = fetch_mirror(
        &mirror,
        &FetchOptions {
            url: &url,
            auth: &NO_AUTH,
            progress: Some(&callback),
            should_interrupt: &interrupt,
            tls: None,
        },
    )
    .expect("fetch");
    assert!(calls.load(Ordering::Relaxed) >= 1);
    assert_eq!(last.load(Ordering::Relaxed), out.bytes_received);
}

#[test]
fn restore_rejects_refs_to_missing_objects_and_leaves_nothing() {
    let git = Git::new();
    let (origin, _work) = populated_origin(&git);
    let mirror = git.root().join("mirror.git");
    let out = fetch(&mirror, &format!("file://{}", origin.display())).expect("clone");
    let mut refs = out.refs.clone();
    refs.push(RefEntry {
        name: "refs/heads/ghost".into(),
        target: RefTarget::Object("1234567890123456789012345678901234567890".into()),
    });
    let parent = git.root().join("restore-here");
    let target = parent.join("repo.git");
    let err = restore_bare(&target, &mut pack_readers(&out.packs), &refs, false)
        .expect_err("missing object");
    assert!(
        matches!(&err, GitError::MissingObject { name, .. } if name == "refs/heads/ghost"),
        "{err}"
    );
    assert!(!target.exists());
    assert_eq!(
        fs::read_dir(&parent).expect("dir").count(),
        0,
        "no temporary directory left"
    );

    let bad = vec![RefEntry {
        name: "refs/heads/../evil".into(),
        target: RefTarget::Object("1234567890123456789012345678901234567890".into()),
    }];
    let err =
        restore_bare(&target, &mut pack_readers(&out.packs), &bad, false).expect_err("bad name");
    assert!(matches!(err, GitError::InvalidRef { .. }), "{err}");

    // A truncated pack is refused.
    let bytes = fs::read(&out.packs[0].path).expect("read");
    let truncated: Box<dyn std::io::Read + Send> =
        Box::new(std::io::Cursor::new(bytes[..bytes.len() / 2].to_vec()));
    let err = restore_bare(&target, &mut std::iter::once(Ok(truncated)), &[], false)
        .expect_err("truncated");
    assert!(
        matches!(err, GitError::InvalidPack { index: 0, .. }),
        "{err}"
    );
    assert!(!target.exists());
}

#[test]
fn restore_replaces_only_git_repositories_and_moves_them_aside() {
    let git = Git::new();
    let (origin, work) = populated_origin(&git);
    let mirror = git.root().join("mirror.git");
    let out = fetch(&mirror, &format!("file://{}", origin.display())).expect("clone");
    let parent = git.root().join("targets");
    fs::create_dir(&parent).expect("mkdir");

    // A non-empty directory that is not a git repository, or a file: refused even with
    // overwriting allowed, and untouched.
    let plain = parent.join("plain");
    fs::create_dir(&plain).expect("mkdir");
    fs::write(plain.join("notes.txt"), "mine").expect("write");
    let file = parent.join("file");
    fs::write(&file, "mine too").expect("write");
    for target in [&plain, &file] {
        let err = restore_bare(target, &mut pack_readers(&out.packs), &out.refs, true)
            .expect_err("not a repository");
        assert!(
            matches!(&err, GitError::TargetNotRepository { path } if path == target),
            "{err}"
        );
        assert!(
            err.to_string().contains(&target.display().to_string()),
            "{err}"
        );
    }
    assert_eq!(
        fs::read_to_string(plain.join("notes.txt")).expect("kept"),
        "mine"
    );
    assert_eq!(fs::read_to_string(&file).expect("kept"), "mine too");

    // A work tree (with `.git`) is replaced only with overwriting allowed, and moved aside.
    let err = restore_bare(&work, &mut pack_readers(&out.packs), &out.refs, false)
        .expect_err("not empty");
    assert!(matches!(err, GitError::TargetNotEmpty { .. }), "{err}");
    let head_before = git.run(&work, &["rev-parse", "HEAD"]);
    let restored = restore_bare(&work, &mut pack_readers(&out.packs), &out.refs, true)
        .expect("replace work tree");
    let aside = restored.replaced.expect("moved aside");
    assert!(
        aside
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("work.replaced-")),
        "{}",
        aside.display()
    );
    assert_eq!(git.run(&aside, &["rev-parse", "HEAD"]), head_before);
    git.fsck(&work);
    assert_refs_match(&git, &work, &out.refs);

    // A bare repository is replaced the same way; a second replacement gets its own name.
    let again =
        restore_bare(&work, &mut pack_readers(&out.packs), &out.refs, true).expect("replace bare");
    let aside2 = again.replaced.expect("moved aside");
    assert_ne!(aside, aside2);
    git.fsck(&aside2);
    git.fsck(&work);
}

#[test]
fn crash_leftovers_next_to_the_target_are_never_the_original() {
    let git = Git::new();
    let (origin, _work) = populated_origin(&git);
    let mirror = git.root().join("mirror.git");
    let out = fetch(&mirror, &format!("file://{}", origin.display())).expect("clone");
    let parent = git.root().join("restores");
    fs::create_dir(&parent).expect("mkdir");
    // What a crash between the renames leaves: the original moved aside (in the naming of
    // this version and of earlier ones) and the target absent; plus a half-written staging
    // directory, which is the only thing that may go.
    let keep = [
        parent.join("repo.git.replaced-20260101T000000Z"),
        parent.join(".repo.git.reposafe-restore-Ab12Cd.replaced"),
        parent.join(".repo.git.reposafe-restore-mine"),
    ];
    for dir in &keep {
        fs::create_dir(dir).expect("mkdir");
        fs::write(dir.join("HEAD"), "ref: refs/heads/main\n").expect("write");
    }
    let staging = parent.join(".repo.git.reposafe-restore-Xy34Zw");
    fs::create_dir(&staging).expect("mkdir");
    let target = parent.join("repo.git");
    restore_bare(&target, &mut pack_readers(&out.packs), &out.refs, false).expect("restore");
    git.fsck(&target);
    for dir in &keep {
        assert!(dir.join("HEAD").is_file(), "{} was deleted", dir.display());
    }
    assert!(!staging.exists(), "the staging leftover is cleaned up");
}

#[test]
fn not_a_mirror_is_reported() {
    let git = Git::new();
    let (origin, _work) = populated_origin(&git);
    let mirror = git.root().join("occupied");
    fs::create_dir(&mirror).expect("mkdir");
    fs::write(mirror.join("file"), "x").expect("write");
    let err = fetch(&mirror, &format!("file://{}", origin.display())).expect_err("not a mirror");
    assert!(
        matches!(&err, GitError::InvalidMirror { path, .. } if path == &mirror),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// HTTP

const GOOD_HEADER: &str = "Basic dXNlcjpwYXNz";

fn http_fetch(
    mirror: &Path,
    url: &str,
    header: Option<&str>,
) -> Result<super::FetchOutcome, GitError> {
    let interrupt = AtomicBool::new(false);
    let auth = match header {
        Some(h) => GitAuth::Header(SecretString::from(h)),
        None => GitAuth::None,
    };
    fetch_mirror(
        mirror,
        &FetchOptions {
            url,
            auth: &auth,
            progress: None,
            should_interrupt: &interrupt,
            tls: None,
        },
    )
}

#[test]
fn http_fetch_with_auth_header() {
    let git = Git::new();
    let (origin, work) = populated_origin(&git);
    let server = http_server::Server::start(git.root().to_owned(), GOOD_HEADER);
    let url = format!("{}/origin.git", server.base_url());
    let mirror = git.root().join("mirrors").join("http.git");

    // Wrong or missing credentials fail fast, with the URL, and leave no mirror behind.
    for header in [Some("Basic d3Jvbmc6d3Jvbmc="), None] {
        let started = Instant::now();
        let err = http_fetch(&mirror, &url, header).expect_err("unauthorized");
        assert!(
            matches!(&err, GitError::Unauthorized { url: u } if u == &url),
            "{err}"
        );
        assert!(err.to_string().contains(&url));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no prompt, no hang"
        );
        assert!(!mirror.exists());
    }
    assert_eq!(
        fs::read_dir(git.root().join("mirrors"))
            .expect("dir")
            .count(),
        0
    );

    let out = http_fetch(&mirror, &url, Some(GOOD_HEADER)).expect("authorized clone");
    assert!(out.cloned);
    assert_eq!(out.new_packs, 1);
    assert_eq!(out.refs, git.refs_with_head(&origin));
    assert_refs_match(&git, &mirror, &out.refs);
    git.fsck(&mirror);

    // No-op fetch: one ref listing, no pack request.
    let fetch_commands_before = server.fetch_commands();
    let requests_before = server.requests();
    let again = http_fetch(&mirror, &url, Some(GOOD_HEADER)).expect("no-op");
    assert_eq!(again.new_packs, 0);
    assert_eq!(
        server.fetch_commands(),
        fetch_commands_before,
        "no fetch command was sent"
    );
    assert!(
        server.requests() - requests_before <= 2,
        "capabilities + ls-refs only"
    );

    // Incremental fetch over HTTP.
    fs::write(work.join("http.txt"), "over http\n").expect("write");
    git.run(&work, &["add", "."]);
    git.run(&work, &["commit", "-q", "-m", "http"]);
    git.run(&work, &["push", "-q", "origin", "main"]);
    let third = http_fetch(&mirror, &url, Some(GOOD_HEADER)).expect("incremental");
    assert_eq!(third.new_packs, 1);
    assert_refs_match(&git, &mirror, &git.refs_with_head(&origin));

    // Bad credentials against an existing mirror change nothing.
    let before = dir_snapshot(&mirror);
    let err = http_fetch(&mirror, &url, Some("Bearer nope")).expect_err("unauthorized");
    assert!(matches!(err, GitError::Unauthorized { .. }), "{err}");
    assert_eq!(dir_snapshot(&mirror), before);

    // The secret never reaches the disk.
    for needle in ["dXNlcjpwYXNz", "user:pass", "Authorization"] {
        assert!(
            !file_contains(&mirror, needle.as_bytes()),
            "{needle:?} found in the mirror directory"
        );
    }
    assert!(server.saw_authorized_request());

    // Unknown repository.
    let missing = format!("{}/missing.git", server.base_url());
    let err = http_fetch(&git.root().join("m2.git"), &missing, Some(GOOD_HEADER)).expect_err("404");
    assert!(
        matches!(&err, GitError::NotFound { url } if url == &missing),
        "{err}"
    );

    // Authenticated but not allowed.
    let forbidden = format!("{}/forbidden/origin.git", server.base_url());
    let err =
        http_fetch(&git.root().join("m3.git"), &forbidden, Some(GOOD_HEADER)).expect_err("403");
    assert!(
        matches!(&err, GitError::Forbidden { url } if url == &forbidden),
        "{err}"
    );
    assert!(!git.root().join("m3.git").exists());

    // Rate limited: the answer's Retry-After travels with the error (gix's own HTTP
    // backend drops it).
    let limited = format!("{}/limited/origin.git", server.base_url());
    let err = http_fetch(&git.root().join("m4.git"), &limited, Some(GOOD_HEADER)).expect_err("429");
    assert!(
        matches!(&err, GitError::RateLimited { url, retry_after } if url == &limited && retry_after.as_deref() == Some("7")),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert!(!git.root().join("m4.git").exists());
}

#[test]
fn http_credentials_in_url_are_used_but_never_shown() {
    let git = Git::new();
    let (origin, _work) = populated_origin(&git);
    let server = http_server::Server::start(git.root().to_owned(), GOOD_HEADER);
    let base = server.base_url();
    let with_creds = base.replacen("http://", "http://user:pass@", 1);
    let mirror = git.root().join("m.git");
    let out = http_fetch(&mirror, &format!("{with_creds}/origin.git"), None)
        .expect("basic auth from URL");
    assert_eq!(out.refs, git.refs_with_head(&origin));
    assert!(!file_contains(&mirror, b"user:pass"));

    let wrong = base.replacen("http://", "http://user:wrong@", 1);
    let err = http_fetch(
        &git.root().join("m2.git"),
        &format!("{wrong}/origin.git"),
        None,
    )
    .expect_err("401");
    let text = err.to_string();
    assert!(matches!(err, GitError::Unauthorized { .. }), "{text}");
    assert!(!text.contains("wrong") && !text.contains("user:"), "{text}");
}

#[test]
fn unreachable_server_is_a_transport_error() {
    let git = Git::new();
    // Nothing listens on a port we just bound and released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let url = format!("http://127.0.0.1:{port}/repo.git");
    let mirror = git.root().join("m.git");
    let err = http_fetch(&mirror, &url, Some(GOOD_HEADER)).expect_err("refused");
    assert!(
        matches!(&err, GitError::Transport { url: u, .. } if u == &url),
        "{err}"
    );
    assert!(err.is_transient());
    assert!(!err.to_string().contains("dXNlcjpwYXNz"), "{err}");
    assert!(!mirror.exists());
}
