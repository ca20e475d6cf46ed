//! Kill storm (issue 10, item 13): rounds of "push commits to some repositories, start
//! `reposafe backup`, `kill -9` it after a random delay" (0–1.5 s, at most about as long
//! as a backup takes here), through the real binary against
//! the test Bitbucket Cloud server. After every round `reposafe check` passes and every
//! snapshot of a sample repository restores and passes `git fsck --full`; at the end a
//! clean run backs up every repository without a failure, and the newest snapshots equal
//! the sources ref by ref. The delays come from a seeded generator: the seed is printed,
//! and `KILL_STORM_SEED=<seed>` replays a run.

mod common;

use common::*;
use reposafe_testkit::gitutil::FixtureOptions;
use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const WS: &str = "acme";
const ROUNDS: usize = 30;
/// The longest delay before the kill.
const MAX_DELAY_MS: u64 = 1500;
const REPOS: usize = 5;
/// Refs of the sample repository.
const MANY_REFS: usize = 500;

/// splitmix64: small, seeded, good enough to spread kill times.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A work clone of one source repository, to push commits from.
struct Source {
    full_name: String,
    bare: PathBuf,
    work: PathBuf,
}

impl Source {
    fn push_commit(&self, round: usize) {
        // Some incompressible bytes, so every fetch has a pack to receive and index.
        let file = self.work.join(format!("round-{round}.bin"));
        std::fs::write(&file, gitutil::pseudo_random_bytes(round as u64, 64 * 1024))
            .expect("write");
        gitutil::git(&self.work, &["add", "-A"]);
        gitutil::git(
            &self.work,
            &["commit", "--quiet", "-m", &format!("round {round}")],
        );
        gitutil::git(&self.work, &["push", "--quiet", "origin", "HEAD"]);
    }
}

fn setup(rs: &Reposafe, scratch: &Path) -> (CloudServer, Vec<Source>) {
    let server = CloudServer::start();
    let opts = FixtureOptions {
        repos: REPOS,
        commits: 2,
        binary_bytes: 256 * 1024,
        include_empty: false,
        ..FixtureOptions::default()
    };
    let repos = gitutil::make_workspace_fixture_with(&server, WS, &scratch.join("src"), &opts);
    server.add_api_token("acct-1", EMAIL, API_TOKEN);
    server.grant("acct-1", WS);
    let tok = rs.secret_file("token.txt", API_TOKEN).display().to_string();
    rs.add_cloud(
        &server,
        WS,
        &["--api-token-email", EMAIL, "--api-token-file", &tok],
    )
    .ok();
    // Many refs in one repository (as pull-request refs give on Bitbucket): every ref update
    // rewrites `packed-refs` under `packed-refs.lock`, so kills often land while it is held.
    let head = gitutil::git(&repos[0].path, &["rev-parse", "HEAD"]);
    let many: String = (0..MANY_REFS)
        .map(|i| format!("create refs/pull-requests/{i}/from {}\n", head.trim()))
        .collect();
    let mut child = gitutil::git_command(&repos[0].path)
        .args(["update-ref", "--stdin"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("git update-ref");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(many.as_bytes())
        .expect("write refs");
    assert!(child.wait().expect("wait").success(), "git update-ref");
    let sources = repos
        .iter()
        .map(|r| {
            let work = scratch.join("work").join(&r.slug);
            std::fs::create_dir_all(scratch.join("work")).expect("mkdir");
            gitutil::git(
                &scratch.join("work"),
                &["clone", "--quiet", &r.path.display().to_string(), &r.slug],
            );
            Source {
                full_name: format!("{WS}/{}", r.slug),
                bare: r.path.clone(),
                work,
            }
        })
        .collect();
    (server, sources)
}

/// The ids of the snapshots of `repo` (none before its first completed backup).
fn snapshot_ids(rs: &Reposafe, repo: &str) -> Vec<String> {
    let run = rs.run(&["snapshots", repo, "--json"]);
    if run.code != 0 {
        assert!(
            run.stderr.contains("no repository named"),
            "snapshots {repo}: {}",
            run.all()
        );
        return Vec::new();
    }
    let list: serde_json::Value = serde_json::from_str(&run.stdout).expect("snapshots --json");
    list.as_array()
        .expect("array")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect()
}

fn restore(rs: &Reposafe, repo: &str, selector: &[&str], scratch: &Path, name: &str) -> PathBuf {
    let target = scratch.join("restores").join(name);
    let t = target.display().to_string();
    let mut args = vec!["restore", repo, "--to", t.as_str()];
    args.extend_from_slice(selector);
    rs.run(&args).ok();
    gitutil::fsck(&target);
    target
}

#[test]
fn kill_storm_never_leaves_a_repository_stuck() {
    let seed = std::env::var("KILL_STORM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    println!("kill storm seed: {seed} (replay with KILL_STORM_SEED={seed})");
    let mut rng = Rng(seed);
    let rs = Reposafe::new();
    let scratch = TempDir::new("reposafe-storm");
    let (_server, sources) = setup(&rs, scratch.path());
    let sample = &sources[1];
    let mut verified: BTreeSet<String> = BTreeSet::new();
    let started = Instant::now();

    let (mut killed, mut finished) = (0, Vec::new());
    for round in 0..ROUNDS {
        // The sample and the one with many refs change every round; the others now and then.
        for (i, source) in sources.iter().enumerate() {
            if i <= 1 || rng.below(2) == 0 {
                source.push_commit(round);
            }
        }
        // Random in 0–1.5 s, but no longer than the last backup that finished took (with a
        // margin), so that most rounds do kill one.
        let window = finished.last().map_or(MAX_DELAY_MS, |&ms| {
            (ms as u64 * 5 / 4).clamp(50, MAX_DELAY_MS)
        });
        let delay = Duration::from_millis(rng.below(window));
        match rs.killed_after(&["backup", WS], delay) {
            None => killed += 1,
            Some(took) => finished.push(took.as_millis()),
        }
        let check = rs.run(&["check", "--read-data"]);
        assert_eq!(
            check.code,
            0,
            "round {round} (seed {seed}): check failed:\n{}",
            check.all()
        );
        // Snapshots never change once written: each is restored once, `check` re-hashes
        // all of them every round.
        for id in snapshot_ids(&rs, &sample.full_name) {
            if verified.insert(id.clone()) {
                restore(
                    &rs,
                    &sample.full_name,
                    &["--snapshot", &id],
                    scratch.path(),
                    &format!("{id}.git"),
                );
            }
        }
    }
    println!(
        "{ROUNDS} rounds, {killed} backups killed, the others took {finished:?} ms; \
         {} snapshots of {} restored, {:.1} s",
        verified.len(),
        sample.full_name,
        started.elapsed().as_secs_f64()
    );

    // A clean run backs up every repository, and the newest snapshots are the sources.
    let run = rs.run(&["backup", WS, "--json"]);
    assert_eq!(run.code, 0, "seed {seed}: final backup:\n{}", run.all());
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    let repos = report["repositories"].as_array().expect("repositories");
    assert_eq!(repos.len(), REPOS, "{report}");
    for r in repos {
        let status = r["outcome"]["status"].as_str().unwrap_or("?");
        assert!(
            status == "snapshot" || status == "unchanged",
            "seed {seed}: {r}"
        );
    }
    for source in &sources {
        let name = source.full_name.replace('/', "_");
        let target = restore(
            &rs,
            &source.full_name,
            &[],
            scratch.path(),
            &format!("final-{name}.git"),
        );
        assert_eq!(
            gitutil::refs_of(&target),
            gitutil::refs_of(&source.bare),
            "seed {seed}: {}",
            source.full_name
        );
    }
}
