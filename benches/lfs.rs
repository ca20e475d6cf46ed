//! Git LFS benchmark, side by side in one run against the Cloud test double (batch API on
//! the git origin, objects streamed from a second storage origin). Run with
//! `cargo bench --bench lfs`.
//!
//! 1. Throughput: a first `reposafe backup` of a repository with BENCH_LFS_OBJECTS (16)
//!    LFS objects of BENCH_LFS_MB (32) MiB, against `git lfs fetch --all` of the same
//!    objects from the same server into a clone; interleaved, best of BENCH_ROUNDS (3).
//!    reposafe fsyncs what it stores (a backup is not taken until it is on disk); git lfs
//!    does not, and returns while its objects are still only in the page cache. So git
//!    lfs is timed twice: until it returns, and until its objects are on disk (`sync`
//!    right after it, timed with it). Target: reposafe ≥ 0.8 × the throughput of git lfs
//!    with its objects on disk; the ratio to git lfs returning is printed beside it. Each
//!    run starts with every dirty page written out (`sync`, not timed), so it does not
//!    share the disk with the writeback of the fixtures or of the run before.
//! 2. Peak RSS of `reposafe backup` with one object of BENCH_LFS_BIG_MB (1024) MiB.
//!    Target: < 300 MB.

use reposafe_testkit::gitutil::{self, WorkRepo};
use reposafe_testkit::{CloudServer, RepoMeta, TempDir};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

mod common;

use common::*;

/// A repository `slug` of workspace `ws` whose `main` has `objects` LFS files of `mb`
/// MiB each (pointers in git, objects in the double's LFS store). Returns the bytes.
fn lfs_repo(server: &CloudServer, dir: &Path, slug: &str, objects: usize, mb: usize) -> u64 {
    let mut work = WorkRepo::new();
    work.write(
        ".gitattributes",
        "*.bin filter=lfs diff=lfs merge=lfs -text\n",
    );
    let mut total = 0;
    for i in 0..objects {
        let content = gitutil::pseudo_random_bytes(1000 + i as u64, mb << 20);
        let oid = server.lfs().add("acme", slug, &content);
        total += content.len() as u64;
        work.write(
            &format!("f{i}.bin"),
            format!(
                "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {}\n",
                content.len()
            ),
        );
    }
    work.commit("LFS files");
    let bare = dir.join(format!("{slug}.git"));
    gitutil::init_bare(&bare);
    work.push_mirror(&bare);
    server.add_repo("acme", slug, &bare, RepoMeta::default());
    total
}

/// One `reposafe backup` of `slug` into a fresh data dir: (seconds, peak RSS KiB).
fn reposafe_backup(server: &CloudServer, slug: &str) -> (f64, u64) {
    let data = TempDir::new("bench-lfs-data");
    let files = TempDir::new("bench-lfs-files");
    add_connection(server, data.path(), "acme", files.path());
    settle_disk();
    let t = timed(reposafe(data.path()).args([
        "backup",
        "acme",
        "--repo",
        &format!("acme/{slug}"),
        "--json",
    ]));
    assert!(
        t.stdout.contains("\"snapshot\""),
        "the backup wrote no snapshot: {}",
        t.stdout
    );
    (t.secs, t.max_rss_kib)
}

/// How long `git lfs fetch --all` took: until it returned, and until its objects were on
/// disk.
struct GitLfsTimes {
    returned: f64,
    on_disk: f64,
}

/// `git lfs fetch --all` of `slug` into a fresh clone, then `sync`.
fn git_lfs_fetch(server: &CloudServer, slug: &str) -> GitLfsTimes {
    let dir = TempDir::new("bench-lfs-git");
    // The credential in the URL, as tests/lfs_double.rs proves git-lfs takes it.
    let url = server.git_url("acme", slug).replacen(
        "http://",
        &format!("http://x-bitbucket-api-token-auth:{TOKEN}@"),
        1,
    );
    gitutil::git_with_env(
        dir.path(),
        &["clone", "--quiet", &url, "clone"],
        &[("GIT_LFS_SKIP_SMUDGE", "1")],
    );
    let clone = dir.path().join("clone");
    let mut cmd = Command::new("git");
    cmd.current_dir(&clone).args(["lfs", "fetch", "--all"]);
    settle_disk();
    let started = Instant::now();
    let t = timed(&mut cmd);
    settle_disk();
    let on_disk = started.elapsed().as_secs_f64();
    assert!(
        common::dir_size(&clone.join(".git/lfs/objects")) > 0,
        "git lfs fetched nothing"
    );
    GitLfsTimes {
        returned: t.secs,
        on_disk,
    }
}

fn main() {
    let objects = env_usize("BENCH_LFS_OBJECTS", 16);
    let mb = env_usize("BENCH_LFS_MB", 32);
    let big_mb = env_usize("BENCH_LFS_BIG_MB", 1024);
    let rounds = env_usize("BENCH_ROUNDS", 3);
    let server = CloudServer::start();
    server.add_api_token("bench", EMAIL, TOKEN);
    server.grant("bench", "acme");
    let src = TempDir::new("bench-lfs-src");

    println!("LFS throughput: {objects} objects x {mb} MiB, best of {rounds}, interleaved");
    let bytes = lfs_repo(&server, src.path(), "media", objects, mb);
    let (mut ours, mut theirs, mut theirs_on_disk) = (f64::MAX, f64::MAX, f64::MAX);
    for round in 1..=rounds {
        let (secs, rss) = reposafe_backup(&server, "media");
        let git = git_lfs_fetch(&server, "media");
        println!(
            "  round {round}: reposafe backup {secs:.2} s (peak RSS {} MB), git lfs fetch --all \
             {:.2} s, its objects on disk {:.2} s",
            rss / 1024,
            git.returned,
            git.on_disk
        );
        ours = ours.min(secs);
        theirs = theirs.min(git.returned);
        theirs_on_disk = theirs_on_disk.min(git.on_disk);
    }
    let mib = bytes as f64 / (1 << 20) as f64;
    let (ours_tp, git_tp, git_disk_tp) = (mib / ours, mib / theirs, mib / theirs_on_disk);
    let ratio = ours_tp / git_disk_tp;
    println!(
        "  reposafe {ours_tp:.0} MiB/s, git lfs with its objects on disk {git_disk_tp:.0} MiB/s: \
         ratio {ratio:.2} (target >= 0.8)"
    );
    println!(
        "  git lfs until it returns (objects still in the page cache) {git_tp:.0} MiB/s: ratio {:.2}",
        ours_tp / git_tp
    );

    println!("Peak RSS with one {big_mb} MiB object");
    lfs_repo(&server, src.path(), "big", 1, big_mb);
    let (secs, rss) = reposafe_backup(&server, "big");
    println!(
        "  reposafe backup {secs:.2} s, peak RSS {} MB (target < 300 MB)",
        rss / 1024
    );
    let pass = ratio >= 0.8 && rss / 1024 < 300;
    println!("{}", if pass { "PASS" } else { "FAIL" });
    if !pass {
        std::process::exit(1);
    }
}
