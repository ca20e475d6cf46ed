//! The pack receiver and indexer against `git` itself: the `.idx` we write for packs made by
//! `git` (deltas, deep chains, in-pack ref-deltas, thin packs, large blobs) must be byte for
//! byte the one `git index-pack` writes, and bad packs must be refused without leftovers.

use std::{
    fs,
    io::{BufReader, Write},
    path::{Path, PathBuf},
    process::Stdio,
    sync::atomic::AtomicBool,
};

use super::support::{pseudo_random_bytes, Git};
use crate::git::{
    pack_index::PackError,
    pack_receive::{receive_pack, receive_pack_with_budget},
};

/// A repository with a file edited many times (long delta chains), several branches editing it
/// differently (delta trees with several children), a large incompressible blob, an edited
/// large blob, and an annotated tag.
fn history(git: &Git) -> PathBuf {
    let root = git.root();
    git.run(root, &["init", "-q", "work"]);
    let work = root.join("work");
    let mut text = String::new();
    for i in 0..3000 {
        text.push_str(&format!("line {i} {}\n", i * 7919 % 10007));
    }
    fs::write(work.join("big.bin"), pseudo_random_bytes(7, 300_000)).expect("write");
    for n in 0..60 {
        text = text.replacen(&format!("line {} ", n * 37), &format!("LINE {n} "), 1);
        text.push_str(&format!("appended {n}\n"));
        fs::write(work.join("text.txt"), &text).expect("write");
        fs::write(work.join(format!("small-{}.txt", n % 7)), format!("{n}\n")).expect("write");
        if n == 30 {
            let mut blob = pseudo_random_bytes(7, 300_000);
            blob[1000..1010].copy_from_slice(b"0123456789");
            fs::write(work.join("big.bin"), blob).expect("write");
        }
        git.run(&work, &["add", "."]);
        git.run(&work, &["commit", "-q", "-m", &format!("edit {n}")]);
        if n % 15 == 0 {
            git.run(&work, &["branch", &format!("b{n}")]);
        }
    }
    git.run(&work, &["tag", "-a", "v1", "-m", "annotated"]);
    for b in [0, 15, 30, 45] {
        git.run(&work, &["checkout", "-q", &format!("b{b}")]);
        fs::write(work.join("text.txt"), format!("{text}branch {b}\n")).expect("write");
        git.run(&work, &["commit", "-q", "-am", &format!("on b{b}")]);
    }
    git.run(&work, &["checkout", "-q", "main"]);
    work
}

/// Run `git pack-objects` in `repo` with `args` and `stdin`, returning the pack bytes.
fn pack_objects(git: &Git, repo: &Path, args: &[&str], stdin: &str) -> Vec<u8> {
    let mut child = git
        .command(repo)
        .arg("pack-objects")
        .args(args)
        .arg("--stdout")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pack-objects");
    let mut input = child.stdin.take().expect("stdin");
    let stdin = stdin.to_owned();
    let writer = std::thread::spawn(move || input.write_all(stdin.as_bytes()));
    let out = child.wait_with_output().expect("pack-objects");
    writer.join().expect("join").expect("write stdin");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The `.idx` `git index-pack` makes of `pack`.
fn git_index(git: &Git, pack: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("p.pack");
    fs::write(&path, pack).expect("write");
    git.run(
        dir.path(),
        &[
            "index-pack",
            "--index-version=2",
            path.to_str().expect("utf8"),
        ],
    );
    fs::read(path.with_extension("idx")).expect("idx")
}

/// Receive `pack` into a fresh directory; return the directory and the pack's hex name.
fn receive(pack: &[u8], thin_bases: Option<&gix::Repository>) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let never = AtomicBool::new(false);
    let received = receive_pack(
        &mut BufReader::new(pack),
        dir.path(),
        thin_bases.map(|repo| repo.objects.clone()),
        gix::hash::Kind::Sha1,
        &never,
    )
    .expect("receive")
    .expect("objects");
    let name = received.pack_hash.to_string();
    assert_eq!(
        received.pack_path,
        dir.path().join(format!("pack-{name}.pack"))
    );
    let files: Vec<String> = fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 2, "only the pack and its index: {files:?}");
    (dir, name)
}

fn all_objects(git: &Git, repo: &Path) -> String {
    git.run(repo, &["rev-list", "--objects", "--all"])
}

#[test]
fn index_equals_git_index_pack_for_ofs_deltas_and_deep_chains() {
    let git = Git::new();
    let work = history(&git);
    // Allow very deep chains and wide windows so deltas nest deeply.
    let pack = pack_objects(
        &git,
        &work,
        &["--delta-base-offset", "--depth=200", "--window=50"],
        &all_objects(&git, &work),
    );
    let (dir, name) = receive(&pack, None);
    let stored = fs::read(dir.path().join(format!("pack-{name}.pack"))).expect("pack");
    assert_eq!(stored, pack, "the pack is stored byte for byte");
    let ours = fs::read(dir.path().join(format!("pack-{name}.idx"))).expect("idx");
    assert_eq!(ours, git_index(&git, &pack), "same .idx as git index-pack");

    // The pack did have deep chains (else this test proves little).
    let verify = git.run(
        dir.path(),
        &[
            "verify-pack",
            "-s",
            dir.path()
                .join(format!("pack-{name}.idx"))
                .to_str()
                .expect("utf8"),
        ],
    );
    assert!(
        verify.lines().any(|l| l.starts_with("chain length = 20")),
        "deep delta chains expected:\n{verify}"
    );
}

#[test]
fn dropping_and_rebuilding_bases_gives_the_same_index() {
    let git = Git::new();
    let work = history(&git);
    let pack = pack_objects(
        &git,
        &work,
        &["--delta-base-offset", "--depth=100", "--window=20"],
        &all_objects(&git, &work),
    );
    let dir = tempfile::tempdir().expect("tmp");
    let never = AtomicBool::new(false);
    // A budget of one byte: every base but the current one is dropped and rebuilt on demand.
    let received = receive_pack_with_budget(
        &mut BufReader::new(pack.as_slice()),
        dir.path(),
        None::<gix::objs::find::Never>,
        gix::hash::Kind::Sha1,
        1,
        &never,
    )
    .expect("receive")
    .expect("objects");
    let index = fs::read(received.pack_path.with_extension("idx")).expect("idx");
    assert_eq!(index, git_index(&git, &pack));
}

#[test]
fn in_pack_ref_deltas_are_resolved() {
    let git = Git::new();
    let work = history(&git);
    // Without --delta-base-offset, git writes REF_DELTA entries.
    let pack = pack_objects(&git, &work, &["--depth=50"], &all_objects(&git, &work));
    let (dir, name) = receive(&pack, None);
    let ours = fs::read(dir.path().join(format!("pack-{name}.idx"))).expect("idx");
    assert_eq!(ours, git_index(&git, &pack));
}

#[test]
fn thin_packs_are_completed_from_the_repository() {
    let git = Git::new();
    let work = history(&git);
    // The receiving side: a bare copy of the history, which has the bases.
    git.run(
        git.root(),
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().expect("utf8"),
            "have.git",
        ],
    );
    let repo = crate::git::fetch::open_mirror(&git.root().join("have.git")).expect("open");
    let pack = pack_objects(
        &git,
        &work,
        &["--revs", "--thin", "--delta-base-offset"],
        "main\n^main~5\n",
    );
    // git itself refuses the thin pack without its bases.
    let scratch = tempfile::tempdir().expect("tmp");
    fs::write(scratch.path().join("thin.pack"), &pack).expect("write");
    let refused = git
        .command(scratch.path())
        .args(["index-pack", "thin.pack"])
        .output()
        .expect("git");
    assert!(!refused.status.success(), "the pack is thin");

    let (dir, name) = receive(&pack, Some(&repo));
    let completed = fs::read(dir.path().join(format!("pack-{name}.pack"))).expect("pack");
    assert!(completed.len() > pack.len(), "bases were added");
    let ours = fs::read(dir.path().join(format!("pack-{name}.idx"))).expect("idx");
    assert_eq!(
        ours,
        git_index(&git, &completed),
        "self-contained, same index"
    );
}

#[test]
fn large_blobs_and_single_objects() {
    let git = Git::new();
    let root = git.root();
    git.run(root, &["init", "-q", "work"]);
    let work = root.join("work");
    // 3 MiB incompressible (streamed in many chunks), and an empty file.
    fs::write(work.join("large.bin"), pseudo_random_bytes(3, 3 << 20)).expect("write");
    fs::write(work.join("empty"), "").expect("write");
    git.run(&work, &["add", "."]);
    git.run(&work, &["commit", "-q", "-m", "large"]);
    let pack = pack_objects(
        &git,
        &work,
        &["--delta-base-offset"],
        &all_objects(&git, &work),
    );
    let (dir, name) = receive(&pack, None);
    let ours = fs::read(dir.path().join(format!("pack-{name}.idx"))).expect("idx");
    assert_eq!(ours, git_index(&git, &pack));
}

#[test]
fn bad_packs_are_refused_without_leftovers() {
    let git = Git::new();
    let work = history(&git);
    let pack = pack_objects(
        &git,
        &work,
        &["--delta-base-offset"],
        &all_objects(&git, &work),
    );
    let never = AtomicBool::new(false);
    let attempt = |bytes: &[u8]| {
        let dir = tempfile::tempdir().expect("tmp");
        let result = receive_pack(
            &mut BufReader::new(bytes),
            dir.path(),
            None::<gix::objs::find::Never>,
            gix::hash::Kind::Sha1,
            &never,
        );
        let left = fs::read_dir(dir.path()).expect("dir").count();
        (result, left)
    };
    let mut truncated = pack.clone();
    truncated.truncate(pack.len() / 2);
    let mut flipped = pack.clone();
    let middle = pack.len() / 2;
    flipped[middle] ^= 0x55;
    let mut trailing = pack.clone();
    trailing.extend_from_slice(b"extra");
    for (label, bytes) in [
        ("truncated", truncated),
        ("flipped", flipped),
        ("trailing", trailing),
    ] {
        let (result, left) = attempt(&bytes);
        match result {
            Err(PackError::Corrupt(message)) => {
                assert!(!message.is_empty(), "{label}");
            }
            other => panic!("{label}: expected a corrupt-pack error, got {other:?}"),
        }
        assert_eq!(left, 0, "{label}: nothing left behind");
    }
    // A pack with no objects stores nothing.
    let empty = pack_objects(&git, &work, &[], "");
    let (result, left) = attempt(&empty);
    assert!(matches!(result, Ok(None)), "{result:?}");
    assert_eq!(left, 0);
}

#[test]
fn interrupt_stops_receiving() {
    let git = Git::new();
    let work = history(&git);
    let pack = pack_objects(&git, &work, &[], &all_objects(&git, &work));
    let dir = tempfile::tempdir().expect("tmp");
    let interrupted = AtomicBool::new(true);
    let result = receive_pack(
        &mut BufReader::new(pack.as_slice()),
        dir.path(),
        None::<gix::objs::find::Never>,
        gix::hash::Kind::Sha1,
        &interrupted,
    );
    assert!(matches!(result, Err(PackError::Interrupted)), "{result:?}");
    assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 0);
}

#[test]
fn thin_pack_over_http_is_completed_and_each_pack_restores_alone() {
    use crate::git::{fetch_mirror, restore_bare, FetchOptions, GitAuth};
    use secrecy::SecretString;

    let git = Git::new();
    let work = history(&git);
    let root = git.root();
    git.run(root, &["init", "-q", "--bare", "origin.git"]);
    let origin = root.join("origin.git");
    // Objects pushed later stay loose, so the server searches deltas afresh, against what the
    // client has: a thin pack.
    git.run(&origin, &["config", "receive.unpackLimit", "100000"]);
    let origin_path = origin.to_str().expect("utf8");
    // The server's history ends five commits earlier for the first fetch.
    git.run(
        &work,
        &["push", "-q", origin_path, "main~5:refs/heads/main"],
    );
    let header = "Basic dXNlcjpwYXNz";
    let server = super::http_server::Server::start(root.to_owned(), header);
    let url = format!("{}/origin.git", server.base_url());
    let auth = GitAuth::Header(SecretString::from(header));
    let never = AtomicBool::new(false);
    let fetch = |mirror: &Path| {
        fetch_mirror(
            mirror,
            &FetchOptions {
                url: &url,
                auth: &auth,
                progress: None,
                should_interrupt: &never,
                tls: None,
            },
        )
        .expect("fetch")
    };
    let mirror = root.join("mirror.git");
    let first = fetch(&mirror);

    // The remaining history arrives as a thin pack: deltas against blobs the mirror has.
    git.run(&work, &["push", "-q", origin_path, "main", "b45", "v1"]);
    let second = fetch(&mirror);
    assert_eq!(second.new_packs, 1);
    assert_eq!(second.refs, git.refs_with_head(&origin));
    git.fsck(&mirror);
    let new_pack = second
        .packs
        .iter()
        .find(|p| !first.packs.contains(p))
        .expect("new pack");
    // Self-contained: git indexes it alone, to the same .idx as ours.
    let stored = fs::read(&new_pack.path).expect("pack");
    assert_eq!(
        fs::read(new_pack.index_path()).expect("idx"),
        git_index(&git, &stored)
    );
    assert!(
        second.bytes_received < stored.len() as u64,
        "bases were added to the thin pack ({} received, {} stored)",
        second.bytes_received,
        stored.len()
    );

    // Restore from both packs: identical refs, fsck clean.
    let target = root.join("restored.git");
    let mut readers = super::support::pack_readers(&second.packs);
    restore_bare(&target, &mut readers, &second.refs, false).expect("restore");
    git.fsck(&target);
    assert_eq!(git.refs_with_head(&target), second.refs);
}
