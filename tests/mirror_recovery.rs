//! A crash never leaves a repository stuck (issue 10, item 13), through the real binary:
//! stale git lock files and temporary packs that a killed backup left in a mirror are
//! removed by the next run, and a mirror damaged beyond that is rebuilt by a fresh fetch.

mod common;

use common::*;
use reposafe_testkit::gitutil::FixtureOptions;
use std::path::{Path, PathBuf};

const WS: &str = "acme";

fn setup(rs: &Reposafe) -> (CloudServer, TempDir, PathBuf) {
    let server = CloudServer::start();
    let dir = TempDir::new("reposafe-src");
    let opts = FixtureOptions {
        repos: 1,
        include_empty: false,
        ..FixtureOptions::default()
    };
    let repos = gitutil::make_workspace_fixture_with(&server, WS, dir.path(), &opts);
    rs.connect_cloud_with_token(&server, WS);
    let source = repos[0].path.clone();
    let full = format!("{WS}/{}", repos[0].slug);
    std::fs::write(rs.files.path().join("repo-name"), full).expect("write");
    (server, dir, source)
}

fn full_name(rs: &Reposafe) -> String {
    std::fs::read_to_string(rs.files.path().join("repo-name")).expect("name")
}

/// The only mirror of the data dir.
fn the_mirror(rs: &Reposafe) -> PathBuf {
    let mirrors: Vec<PathBuf> = std::fs::read_dir(rs.data_dir().join("mirrors"))
        .expect("mirrors dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "git"))
        .collect();
    assert_eq!(mirrors.len(), 1, "{mirrors:?}");
    mirrors[0].clone()
}

fn push_commit(bare: &Path, file: &str) {
    let work = TempDir::new("reposafe-push");
    let w = work.path().join("w");
    gitutil::git(
        work.path(),
        &["clone", "--quiet", &bare.display().to_string(), "w"],
    );
    std::fs::write(w.join(file), format!("{file}\n")).expect("write");
    gitutil::git(&w, &["add", "-A"]);
    gitutil::git(&w, &["commit", "--quiet", "-m", file]);
    gitutil::git(&w, &["push", "--quiet", "origin", "HEAD"]);
}

/// A backup with no failure whose newest snapshot restores to exactly the source's refs.
fn backup_and_compare(rs: &Reposafe, source: &Path) -> Run {
    let run = rs.run(&["backup", WS]);
    assert_eq!(run.code, 0, "backup failed:\n{}", run.all());
    let out = TempDir::new("reposafe-restore");
    let target = out.path().join("r.git");
    rs.run(&[
        "restore",
        &full_name(rs),
        "--to",
        &target.display().to_string(),
    ])
    .ok();
    gitutil::fsck(&target);
    assert_eq!(gitutil::refs_of(&target), gitutil::refs_of(source));
    run
}

#[test]
fn stale_lock_files_and_temporary_packs_do_not_block_the_next_backup() {
    let rs = Reposafe::new();
    let (_server, _src, source) = setup(&rs);
    backup_and_compare(&rs, &source);
    let mirror = the_mirror(&rs);
    // What `kill -9` in the middle of a fetch leaves behind.
    std::fs::write(mirror.join("packed-refs.lock"), "").expect("plant");
    std::fs::write(mirror.join("HEAD.lock"), "").expect("plant");
    let heads = mirror.join("refs").join("heads");
    std::fs::create_dir_all(&heads).expect("mkdir");
    std::fs::write(heads.join("main.lock"), "").expect("plant");
    let tmp_pack = mirror.join("objects/pack/.tmp-pack-Ab12Cd");
    std::fs::write(&tmp_pack, b"PACK\0\0\0\x02half").expect("plant");

    push_commit(&source, "after-crash.txt");
    backup_and_compare(&rs, &source);
    for stale in ["packed-refs.lock", "HEAD.lock", "refs/heads/main.lock"] {
        assert!(!mirror.join(stale).exists(), "{stale} is still there");
    }
    assert!(!tmp_pack.exists());
    // And again, with nothing left to clean.
    push_commit(&source, "later.txt");
    backup_and_compare(&rs, &source);
}

#[test]
fn a_damaged_mirror_is_rebuilt_and_the_backup_succeeds() {
    let rs = Reposafe::new();
    let (_server, _src, source) = setup(&rs);
    backup_and_compare(&rs, &source);
    let mirror = the_mirror(&rs);

    // `objects/` gone altogether.
    std::fs::remove_dir_all(mirror.join("objects")).expect("rm");
    push_commit(&source, "after-damage.txt");
    let run = backup_and_compare(&rs, &source);
    assert!(
        run.all().contains("rebuilt"),
        "a notice says so: {}",
        run.all()
    );

    // A truncated pack (its index intact): a later fetch may need its objects.
    let packs: Vec<PathBuf> = std::fs::read_dir(mirror.join("objects/pack"))
        .expect("pack dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .collect();
    assert!(!packs.is_empty());
    for pack in &packs {
        let len = std::fs::metadata(pack).expect("meta").len();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(pack)
            .expect("open");
        file.set_len(len / 2).expect("truncate");
    }
    push_commit(&source, "after-more-damage.txt");
    let run = backup_and_compare(&rs, &source);
    assert!(run.all().contains("rebuilt"), "{}", run.all());

    let leftovers: Vec<_> = std::fs::read_dir(rs.data_dir().join("mirrors"))
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| n.to_string_lossy().contains("reposafe-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let check = rs.run(&["check"]).ok();
    assert!(check.stdout.contains("all intact"), "{}", check.all());
}

#[test]
fn unreadable_refs_are_found_on_first_use_and_the_mirror_rebuilt() {
    let rs = Reposafe::new();
    let (_server, _src, source) = setup(&rs);
    backup_and_compare(&rs, &source);
    let mirror = the_mirror(&rs);
    let garbage = "this is not a packed-refs file\n";

    // Changed remote: the negotiation would read the refs.
    std::fs::write(mirror.join("packed-refs"), garbage).expect("damage");
    push_commit(&source, "after-ref-damage.txt");
    let run = backup_and_compare(&rs, &source);
    assert!(run.all().contains("rebuilt"), "{}", run.all());

    // Unchanged remote: the refs no longer match what the last fetch wrote.
    std::fs::write(mirror.join("packed-refs"), garbage).expect("damage");
    let run = backup_and_compare(&rs, &source);
    assert!(run.all().contains("rebuilt"), "{}", run.all());
    assert_ne!(
        std::fs::read_to_string(mirror.join("packed-refs")).expect("packed-refs"),
        garbage
    );
}
