//! Restore-into-Bitbucket benchmark (issue 13), side by side with git in one run against the
//! Cloud test double (real `git http-backend`). Run with `cargo bench --bench push`.
//!
//! The repository `big/app` has BENCH_PUSH_COMMITS commits (default 50,000) with a tag and a
//! branch every 5,000, and BENCH_PUSH_PACK_MB MiB (default 300) of incompressible 1 MiB blobs,
//! made with `git fast-import` and repacked into one pack. It is backed up once; then per round
//! (best of 2, interleaved):
//!
//! * ours: `reposafe restore big/app --to-connection dr --as dr/app<N>` into a new, empty
//!   repository (the git part: one streamed push of the snapshot's pack);
//! * git: `git push --mirror` of the same repository into another empty repository on the
//!   same server.
//!
//! Targets: ours ≤ 1.3× git's time, peak RSS of every reposafe run < 300 MiB. Each restored
//! repository's refs are checked against the original with `git ls-remote`.

mod common;

use common::*;
use reposafe_testkit::gitutil;
use reposafe_testkit::{CloudServer, RepoMeta, TempDir};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn data(w: &mut dyn Write, bytes: &[u8]) -> std::io::Result<()> {
    writeln!(w, "data {}", bytes.len())?;
    w.write_all(bytes)?;
    writeln!(w)
}

/// The benchmark repository (see the module documentation), one pack.
fn big_repo(dir: &Path, commits: usize, mb: usize) -> PathBuf {
    let bare = dir.join("app.git");
    gitutil::init_bare(&bare);
    let mut child = fast_import(&bare);
    {
        let mut w = std::io::BufWriter::new(child.stdin.as_mut().expect("stdin"));
        let blob_every = (commits / mb.max(1)).max(1);
        let mut blobs = 0;
        let mut script = || -> std::io::Result<()> {
            for n in 1..=commits {
                writeln!(w, "commit refs/heads/main\nmark :{n}")?;
                writeln!(
                    w,
                    "committer Bench <bench@example.com> {} +0000",
                    1_600_000_000 + n
                )?;
                data(&mut w, format!("commit {n}\n").as_bytes())?;
                if n > 1 {
                    writeln!(w, "from :{}", n - 1)?;
                }
                let file = n % 500;
                writeln!(w, "M 100644 inline src/file{file}.txt")?;
                data(
                    &mut w,
                    format!("file {file}\nchanged in commit {n}\n").as_bytes(),
                )?;
                if n % blob_every == 0 && blobs < mb {
                    writeln!(w, "M 100644 inline assets/blob{blobs}.bin")?;
                    data(
                        &mut w,
                        &gitutil::pseudo_random_bytes(blobs as u64 + 1, 1 << 20),
                    )?;
                    blobs += 1;
                }
                if n % 5000 == 0 {
                    writeln!(w, "reset refs/heads/branch-{n}\nfrom :{n}\n")?;
                    writeln!(
                        w,
                        "tag v{n}\nfrom :{n}\ntagger Bench <bench@example.com> 1600000000 +0000"
                    )?;
                    data(&mut w, format!("release {n}\n").as_bytes())?;
                }
            }
            w.flush()
        };
        script().expect("write fast-import stream");
    }
    assert!(child.wait().expect("fast-import").success());
    let out = gitutil::git_command(&bare)
        .args(["repack", "-adq"])
        .output()
        .expect("repack");
    assert!(out.status.success());
    bare
}

/// `name id` lines of the refs (no HEAD) at `url` or in a local repository, sorted.
fn ls_remote(target: &str) -> String {
    let out = gitutil::git_command(Path::new("/"))
        .args(["-c", &git_auth_config(), "ls-remote", "--refs", target])
        .output()
        .expect("ls-remote");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines.join("\n")
}

fn main() {
    let commits = env_usize("BENCH_PUSH_COMMITS", 50_000);
    let mb = env_usize("BENCH_PUSH_PACK_MB", 300);
    let rounds = env_usize("BENCH_ROUNDS", 2);
    let server = CloudServer::start();
    let src = TempDir::new("bench-push");
    let t = Instant::now();
    let bare = big_repo(src.path(), commits, mb);
    eprintln!(
        "repository: {commits} commits, {:.1} MiB pack, made in {:.1} s",
        packs_size(&bare) as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );
    server.add_repo("big", "app", &bare, RepoMeta::default());
    server.add_workspace("dr");
    server.add_api_token("bench", EMAIL, TOKEN);
    server.grant("bench", "big");
    server.grant("bench", "dr");
    let data = TempDir::new("bench-push-data");
    let files = TempDir::new("bench-push-files");
    add_connection(&server, data.path(), "big", files.path());
    // The restore target: workspace `dr`, restores allowed.
    add_connection_as(
        &server,
        data.path(),
        "dr",
        files.path(),
        &["--name", "dr", "--allow-restore"],
    );
    let backup = timed(reposafe(data.path()).args(["backup", "big"]));
    eprintln!("backup: {:.2} s", backup.secs);
    let expected = ls_remote(&bare.display().to_string());

    let (mut ours, mut git) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let slug = format!("app{round}");
        let restore = timed(reposafe(data.path()).args([
            "restore",
            "big/app",
            "--to-connection",
            "dr",
            "--as",
            &format!("dr/{slug}"),
        ]));
        assert_eq!(
            ls_remote(&server.git_url("dr", &slug)),
            expected,
            "restored refs"
        );
        let target = src.path().join(format!("git{round}.git"));
        gitutil::init_bare(&target);
        server.add_repo("dr", &format!("git{round}"), &target, RepoMeta::default());
        let mirror = timed(
            gitutil::git_command(&bare)
                .args(["-c", &git_auth_config()])
                .args(["push", "--mirror", "--quiet"])
                .arg(server.git_url("dr", &format!("git{round}"))),
        );
        eprintln!(
            "round {round}: restore {:.2} s (peak RSS {} MiB), git push --mirror {:.2} s (peak RSS {} MiB)",
            restore.secs,
            restore.max_rss_kib / 1024,
            mirror.secs,
            mirror.max_rss_kib / 1024
        );
        ours.push(restore);
        git.push(mirror);
    }
    let best = |v: &[Timed]| v.iter().map(|t| t.secs).fold(f64::MAX, f64::min);
    let (o, g) = (best(&ours), best(&git));
    let rss = ours.iter().map(|t| t.max_rss_kib / 1024).max().unwrap_or(0);
    let ratio = o / g;
    println!(
        "# Restore into Bitbucket ({commits} commits, {:.0} MiB pack)\n\n\
         | | reposafe restore | git push --mirror | ratio | target |\n|---|---|---|---|---|\n\
         | time (best of {rounds}) | {o:.2} s | {g:.2} s | {ratio:.2}x | <= 1.3x |\n\
         | peak RSS | {rss} MiB | | | < 300 MiB |",
        packs_size(&bare) as f64 / 1048576.0
    );
    let pass = ratio <= 1.3 && rss < 300;
    println!("\n{}", if pass { "PASS" } else { "FAIL" });
    if !pass {
        std::process::exit(1);
    }
}
