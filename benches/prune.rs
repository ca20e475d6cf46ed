//! Archive lifecycle benchmarks (issue 15), side by side in one run against the test
//! Bitbucket server (real `git http-backend`). Run with `cargo bench --bench prune`.
//!
//! 1. A year of daily backups: a repository gets small pushes every day (one force-push
//!    that drops a third of the year's work, one `git gc` upstream), each day is backed up
//!    dated that day of 2025 (`backup --time`) and then `forget --keep-daily 7
//!    --keep-monthly 12 --prune` runs, as a plan with retention does. Measured: the
//!    archive against a fresh full backup of what the kept snapshots reach (their refs,
//!    restored and gathered in one repository; target ≤ 1.15×), the median backup time
//!    of the last ten days against that of days 2–11 (the mirror stays short: ≤ 1.2×;
//!    medians, as one backup takes about 0.1 s and a mean of three was mostly the
//!    machine's noise; each backup's time is divided by that of a `git ls-remote` of the
//!    same repository run right after it, so a machine that slows down between the two
//!    windows — other work on it — is not taken for a mirror that grew), prune's peak RSS
//!    (< 300 MB), and every kept snapshot restored ref for ref and `fsck`-clean.
//! 2. Prune of a large repository (default 100 MiB of packs in four fetches) against
//!    `git repack -a -d` of the same four packs (target ≤ 2×), and its peak RSS.
//!
//! Sizes: BENCH_PRUNE_DAYS (365), BENCH_PRUNE_COMMITS (5,000 commits before day 1),
//! BENCH_PRUNE_LARGE_MB (100), BENCH_PRUNE_LARGE_COMMITS (20,000).

use reposafe_testkit::gitutil;
use reposafe_testkit::{CloudServer, RepoMeta, TempDir};
use std::collections::BTreeMap;
use std::path::Path;

mod common;

use common::*;

/// The retention rules applied after each day's backup.
const RULES: [&str; 4] = ["--keep-daily", "7", "--keep-monthly", "12"];

/// Midday of day `day` (0-based) of 2025, as `backup --time` takes it.
fn day_of_2025(day: usize) -> String {
    let first = time::Date::from_calendar_date(2025, time::Month::January, 1).expect("date");
    let date = first + time::Duration::days(day as i64);
    format!("{date}T12:00Z")
}

/// Snapshot ids of the only repository of `data`, oldest first.
fn snapshot_ids(data: &Path, repo: &str) -> Vec<String> {
    let out = reposafe(data)
        .args(["snapshots", repo, "--json"])
        .output()
        .expect("snapshots");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut ids: Vec<(String, String)> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|s| {
            (
                s["taken_at"].as_str().unwrap_or("").to_string(),
                s["id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    ids.sort();
    ids.into_iter().map(|(_, id)| id).collect()
}

/// Commits `n` small changes in the work clone `w`.
fn small_changes(w: &Path, day: usize, n: usize) {
    for c in 0..n {
        std::fs::write(
            w.join(format!("src/file{c}.txt")),
            format!("day {day} change {c}\n").repeat(20),
        )
        .expect("write");
        gitutil::git(
            w,
            &["commit", "--quiet", "-am", &format!("day {day} change {c}")],
        );
    }
}

/// Median of the backup seconds of these days.
fn median(secs: &[f64]) -> f64 {
    let mut sorted = secs.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn bench_year_of_daily_backups() -> String {
    let days = env_usize("BENCH_PRUNE_DAYS", 365).clamp(8, 365);
    let server = CloudServer::start();
    let src = TempDir::new("bench-year");
    let bare = large_repo(src.path(), env_usize("BENCH_PRUNE_COMMITS", 5_000), 0);
    server.add_workspace("year");
    server.add_repo("year", "repo", &bare, RepoMeta::default());
    server.add_api_token("bench", EMAIL, TOKEN);
    server.grant("bench", "year");
    let data = TempDir::new("bench-data");
    let files = TempDir::new("bench-files");
    add_connection(&server, data.path(), "year", files.path());
    let work = TempDir::new("bench-work");
    let w = work.path().join("w");
    gitutil::git(
        work.path(),
        &["clone", "--quiet", &bare.display().to_string(), "w"],
    );
    let repo = "year/repo";
    let (auth, url) = (git_auth_config(), server.git_url("year", "repo"));
    let mut backup_secs = Vec::with_capacity(days);
    let mut listing_secs = Vec::with_capacity(days);
    let (mut prune_secs, mut prune_rss) = (0.0, 0u64);
    let mut refs_of: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for day in 0..days {
        if day == days / 3 {
            // A force-push: main goes back 200 commits and takes a new direction.
            gitutil::git(&w, &["reset", "--quiet", "--hard", "HEAD~200"]);
        }
        if day == 2 * days / 3 {
            gitutil::git(&bare, &["gc", "--quiet"]);
        }
        small_changes(&w, day, 3);
        gitutil::git(&w, &["push", "--quiet", "--force", "origin", "main"]);
        let at = day_of_2025(day);
        backup_secs.push(timed(reposafe(data.path()).args(["backup", "year", "--time", &at])).secs);
        // The machine's speed at this moment: the same server, the same repository.
        listing_secs.push(
            timed(gitutil::git_command(work.path()).args([
                "-c",
                &auth,
                "ls-remote",
                "--quiet",
                &url,
            ]))
            .secs,
        );
        let ids = snapshot_ids(data.path(), repo);
        refs_of.insert(
            ids.last().expect("snapshot").clone(),
            gitutil::refs_of(&bare),
        );
        let t = timed(
            reposafe(data.path())
                .args(["forget", repo, "--prune"])
                .args(RULES),
        );
        prune_secs += t.secs;
        prune_rss = prune_rss.max(t.max_rss_kib);
    }
    let archive = archive_size(data.path());
    let mirror_packs = std::fs::read_dir(data.path().join("mirrors"))
        .expect("mirrors")
        .flatten()
        .map(|m| {
            std::fs::read_dir(m.path().join("objects/pack"))
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.path().extension().is_some_and(|x| x == "pack"))
                        .count()
                })
                .unwrap_or(0)
        })
        .sum::<usize>();
    // Every kept snapshot restores to the refs the source had when it was taken; the
    // restored repositories are gathered into one (refs/kept/<i>/…) for the fresh backup.
    let kept = snapshot_ids(data.path(), repo);
    let restores = TempDir::new("bench-restores");
    let union = restores.path().join("union.git");
    gitutil::init_bare(&union);
    for (i, id) in kept.iter().enumerate() {
        let to = restores.path().join(format!("r{i}.git"));
        let out = reposafe(data.path())
            .args(["restore", repo, "--snapshot", id, "--to"])
            .arg(&to)
            .output()
            .expect("restore");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        gitutil::fsck(&to);
        assert_eq!(gitutil::refs_of(&to), refs_of[id], "snapshot {id}");
        gitutil::git(
            &union,
            &[
                "fetch",
                "--quiet",
                &to.display().to_string(),
                &format!("+refs/*:refs/kept/{i}/*"),
            ],
        );
    }
    // A fresh full backup of what the kept snapshots reach: the gathered repository.
    server.add_workspace("kept");
    server.add_repo("kept", "repo", &union, RepoMeta::default());
    server.grant("bench", "kept");
    let fresh = TempDir::new("bench-fresh");
    add_connection(&server, fresh.path(), "kept", files.path());
    timed(reposafe(fresh.path()).args(["backup", "kept"]));
    let fresh_size = archive_size(fresh.path());
    let size_ratio = archive as f64 / fresh_size as f64;
    // Days 2-11 and the last ten (fewer when fewer days run), never overlapping.
    let window = ((days - 1) / 2).min(10);
    let early = median(&backup_secs[1..1 + window]);
    let late = median(&backup_secs[days - window..]);
    let raw_ratio = late / early;
    let per_listing: Vec<f64> = backup_secs
        .iter()
        .zip(&listing_secs)
        .map(|(backup, listing)| backup / listing)
        .collect();
    let early_relative = median(&per_listing[1..1 + window]);
    let late_relative = median(&per_listing[days - window..]);
    let fetch_ratio = late_relative / early_relative;
    let rss_mb = prune_rss as f64 / 1024.0;
    let pass = size_ratio <= 1.15 && fetch_ratio <= 1.2 && rss_mb < 300.0;
    format!(
        "## {days} daily backups, each followed by forget --keep-daily 7 --keep-monthly 12 --prune\n\
         archive after the last prune: {:.2} MiB in {} snapshots; a fresh full backup of what \
         they reach: {:.2} MiB; ratio {size_ratio:.3}x (target <= 1.15x)\n\
         mirror packs after the last prune: {mirror_packs}\n\
         backup time, median of days 2-{}: {early:.3} s; of the last {window} days: {late:.3} s \
         ({raw_ratio:.2}x); relative to a `git ls-remote` of the same repository run right after each: \
         {early_relative:.2} and {late_relative:.2}: ratio {fetch_ratio:.2}x (target <= 1.2x)\n\
         forget + prune: {:.3} s per day on average; peak RSS {rss_mb:.0} MB (target < 300 MB)\n\
         every kept snapshot restored ref-identical and fsck-clean: {}\n{}\n",
        archive as f64 / 1048576.0,
        kept.len(),
        fresh_size as f64 / 1048576.0,
        1 + window,
        prune_secs / days as f64,
        kept.len(),
        if pass { "PASS" } else { "FAIL" }
    )
}

fn bench_prune_vs_repack() -> String {
    let mb = env_usize("BENCH_PRUNE_LARGE_MB", 100);
    let commits = env_usize("BENCH_PRUNE_LARGE_COMMITS", 20_000).max(mb + 4);
    let server = CloudServer::start();
    let src = TempDir::new("bench-large");
    let full = large_repo(src.path(), commits, mb);
    // The server's repository grows in four pushes, each backed up: four packs.
    let served = src.path().join("served.git");
    gitutil::init_bare(&served);
    server.add_workspace("big");
    server.add_repo("big", "repo", &served, RepoMeta::default());
    server.add_api_token("bench", EMAIL, TOKEN);
    server.grant("bench", "big");
    let data = TempDir::new("bench-data");
    let files = TempDir::new("bench-files");
    add_connection(&server, data.path(), "big", files.path());
    let stops = [mb / 4 + 1, mb / 2 + 1, 3 * mb / 4 + 1, commits];
    for (i, stop) in stops.iter().enumerate() {
        let rev = format!("main~{}", commits - stop);
        gitutil::git(
            &full,
            &[
                "push",
                "--quiet",
                "--force",
                &served.display().to_string(),
                &format!("{rev}:refs/heads/main"),
            ],
        );
        if i == 0 {
            gitutil::git(&served, &["symbolic-ref", "HEAD", "refs/heads/main"]);
        }
        timed(reposafe(data.path()).args(["backup", "big"]));
    }
    let mirror = std::fs::read_dir(data.path().join("mirrors"))
        .expect("mirrors")
        .flatten()
        .map(|e| e.path())
        .find(|p| !p.to_string_lossy().ends_with(".wiki.git"))
        .expect("mirror");
    let packs_before = packs_size(&mirror);
    // git's turn first, on a copy of the mirror with the same four packs.
    let copy = TempDir::new("bench-repack");
    let copied = copy.path().join("m.git");
    gitutil::git(
        copy.path(),
        &[
            "clone",
            "--quiet",
            "--mirror",
            "--no-hardlinks",
            &mirror.display().to_string(),
            "m.git",
        ],
    );
    // `clone --mirror` repacks into one; put the four original packs back instead.
    let pack_dir = copied.join("objects/pack");
    std::fs::remove_dir_all(&pack_dir).expect("rm packs");
    std::fs::create_dir_all(&pack_dir).expect("mkdir");
    for e in std::fs::read_dir(mirror.join("objects/pack"))
        .expect("packs")
        .flatten()
    {
        std::fs::copy(e.path(), pack_dir.join(e.file_name())).expect("copy pack");
    }
    let git = timed(gitutil::git_command(&copied).args(["repack", "-a", "-d", "-q"]));
    let git_size = packs_size(&copied);
    let ours = timed(reposafe(data.path()).args(["prune"]));
    let ratio = ours.secs / git.secs;
    let rss_mb = ours.max_rss_kib as f64 / 1024.0;
    let pass = ratio <= 2.0 && rss_mb < 300.0;
    format!(
        "## prune of a {:.0} MiB repository (four fetches) vs git repack -a -d\n\
         git repack -a -d: {:.2} s → {:.1} MiB; reposafe prune: {:.2} s → {:.1} MiB in its mirror, \
         archive {:.1} MiB; ratio {ratio:.2}x (target <= 2x); peak RSS {rss_mb:.0} MB (target < 300 MB)\n{}\n",
        packs_before as f64 / 1048576.0,
        git.secs,
        git_size as f64 / 1048576.0,
        ours.secs,
        packs_size(&mirror) as f64 / 1048576.0,
        archive_size(data.path()) as f64 / 1048576.0,
        if pass { "PASS" } else { "FAIL" }
    )
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let want = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let mut report = String::from("# reposafe prune benchmarks\n\n");
    if want("repack") {
        report.push_str(&bench_prune_vs_repack());
    }
    if want("year") {
        report.push_str(&bench_year_of_daily_backups());
    }
    println!("{report}");
    if report.contains("FAIL") {
        std::process::exit(1);
    }
}
