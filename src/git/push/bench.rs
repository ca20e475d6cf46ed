//! Manual benchmark (ignored by default): [`push()`](super::push) of a big repository into an
//! empty repository on the Cloud double vs `git push --mirror` of the same repository into
//! another empty one, side by side, best of 2, with peak memory. Run in release mode:
//! `cargo test --release --lib git::push::bench -- --ignored --nocapture`.
//! Sizes: `REPOSAFE_BENCH_COMMITS` (default 50000), `REPOSAFE_BENCH_PACK_MB` (default 300).

use std::{path::Path, sync::atomic::AtomicBool, time::Instant};

use reposafe_testkit::{CloudServer, RepoMeta};

use super::tests::{basic, creations, packs_of, Files};
use super::{advertised_refs, push, PushOptions};
use crate::git::tests::{
    bench::{cli_peak_rss, data, env_usize, fast_import, measure},
    support::{pseudo_random_bytes, Git},
};

/// `commits` commits on `main` (one small text file changed in each, a tag and a branch every
/// 5000) plus 1 MiB incompressible blobs added along the way until the pack reaches `mb` MiB.
fn generate(git: &Git, origin: &Path, commits: usize, mb: usize) {
    fast_import(git, origin, |out| {
        let blob_every = (commits / mb.max(1)).max(1);
        let mut blobs = 0;
        for n in 1..=commits {
            writeln!(out, "commit refs/heads/main\nmark :{n}").expect("write");
            writeln!(
                out,
                "committer Bench <bench@example.com> {} +0000",
                1_600_000_000 + n
            )
            .expect("write");
            data(out, format!("commit {n}\n").as_bytes());
            if n > 1 {
                writeln!(out, "from :{}", n - 1).expect("write");
            }
            let file = n % 500;
            writeln!(out, "M 100644 inline src/file{file}.txt").expect("write");
            data(
                out,
                format!("file {file}\nchanged in commit {n}\n").as_bytes(),
            );
            if n % blob_every == 0 && blobs < mb {
                writeln!(out, "M 100644 inline assets/blob{blobs}.bin").expect("write");
                data(out, &pseudo_random_bytes(blobs as u64 + 1, 1 << 20));
                blobs += 1;
            }
            if n % 5000 == 0 {
                writeln!(out, "reset refs/heads/branch-{n}\nfrom :{n}\n").expect("write");
                writeln!(
                    out,
                    "tag v{n}\nfrom :{n}\ntagger Bench <bench@example.com> 1600000000 +0000"
                )
                .expect("write");
                data(out, format!("release {n}\n").as_bytes());
            }
        }
    });
}

#[test]
#[ignore = "benchmark; run manually"]
fn push_big_repository_vs_git_push_mirror() {
    let commits = env_usize("REPOSAFE_BENCH_COMMITS", 50_000);
    let mb = env_usize("REPOSAFE_BENCH_PACK_MB", 300);
    let git = Git::new();
    let root = git.root();
    git.run(root, &["init", "--bare", "-q", "origin.git"]);
    let origin = root.join("origin.git");
    let started = Instant::now();
    generate(&git, &origin, commits, mb);
    git.run(&origin, &["repack", "-adq"]);
    let packs = packs_of(&origin);
    let pack_bytes: u64 = packs
        .iter()
        .map(|p| p.metadata().map(|m| m.len()).unwrap_or(0))
        .sum();
    println!(
        "BENCH generated {commits} commits, {} pack(s) of {} MiB in {:.1}s",
        packs.len(),
        pack_bytes >> 20,
        started.elapsed().as_secs_f64()
    );

    let server = CloudServer::start();
    server.add_api_token("restorer", "restorer@example.com", "bench-token");
    server.grant("restorer", "dr");
    let auth = basic("x-bitbucket-api-token-auth", "bench-token");
    let updates = creations(&git, &origin);
    let interrupt = AtomicBool::new(false);
    let (mut ours, mut theirs) = (f64::MAX, f64::MAX);
    for round in 0..2 {
        for (who, slug) in [
            ("ours", format!("app{round}")),
            ("git", format!("git{round}")),
        ] {
            let bare = root.join(format!("{slug}.git"));
            git.run(root, &["init", "--bare", "-q", &format!("{slug}.git")]);
            server.add_repo("dr", &slug, &bare, RepoMeta::default());
            let url = server.git_url("dr", &slug);
            let t = Instant::now();
            if who == "ours" {
                let opts = PushOptions {
                    url: &url,
                    auth: &auth,
                    tls: None,
                    progress: None,
                    should_interrupt: &interrupt,
                };
                let report = measure(&format!("git::push round {round}"), || {
                    let remote = advertised_refs(&opts).expect("advertisement");
                    push(&opts, &remote, &updates, &Files(packs.clone())).expect("push")
                });
                assert!(report.refs.iter().all(|(_, r)| r.is_ok()));
                ours = ours.min(t.elapsed().as_secs_f64());
            } else {
                let with_auth = url.replacen(
                    "http://",
                    "http://x-bitbucket-api-token-auth:bench-token@",
                    1,
                );
                git.run(&origin, &["push", "-q", "--mirror", &with_auth]);
                let secs = t.elapsed().as_secs_f64();
                println!("BENCH git push --mirror round {round}: {secs:.2}s");
                theirs = theirs.min(secs);
            }
            assert_eq!(
                git.run(
                    &bare,
                    &["for-each-ref", "--format=%(refname) %(objectname)"]
                ),
                git.run(
                    &origin,
                    &["for-each-ref", "--format=%(refname) %(objectname)"]
                ),
            );
        }
    }
    git.fsck(&root.join("app0.git"));
    if let Some(rss) = {
        let slug = "git-rss";
        let bare = root.join(format!("{slug}.git"));
        git.run(root, &["init", "--bare", "-q", &format!("{slug}.git")]);
        server.add_repo("dr", slug, &bare, RepoMeta::default());
        let url = server.git_url("dr", slug).replacen(
            "http://",
            "http://x-bitbucket-api-token-auth:bench-token@",
            1,
        );
        cli_peak_rss(&git, &origin, &["push", "-q", "--mirror", &url])
    } {
        println!("BENCH git push --mirror peak RSS {rss} MiB (git process only)");
    }
    println!(
        "BENCH best of 2: git::push {ours:.2}s, git push --mirror {theirs:.2}s, ratio {:.2}x",
        ours / theirs
    );
}
