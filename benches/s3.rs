//! The archive on S3 (issue 16) against a local SeaweedFS: a full backup and a restore
//! of a large repository (a 1 GiB pack by default, `BENCH_S3_MB`) to the bucket vs to
//! the local file system (restores: the fastest of three), with peak RSS, beside moving
//! the pack file(s) alone with the same client; and the requests an unchanged re-run of
//! `BENCH_S3_REPOS` repositories makes to the object store.

mod common;
#[path = "../tests/common/s3.rs"]
mod s3;

use common::*;
use reposafe_testkit::{gitutil, CloudServer, RepoMeta, TempDir};
use s3::Weed;
use std::path::Path;

const BUCKET: &str = "bench";

fn init_s3(weed: &Weed, data: &Path, files: &Path, prefix: &str) {
    let args = weed.init_args(&format!("s3://{BUCKET}/{prefix}"), files);
    timed(reposafe(data).args(&args));
}

fn large(weed: &Weed) -> String {
    let mb = env_usize("BENCH_S3_MB", 1024);
    let commits = env_usize("BENCH_S3_COMMITS", 2000).max(mb);
    let server = CloudServer::start();
    let src = TempDir::new("bench-s3-src");
    let bare = large_repo(src.path(), commits, mb);
    let pack = packs_size(&bare);
    server.add_workspace("big");
    server.add_repo("big", "large", &bare, RepoMeta::default());
    server.add_api_token("bench", EMAIL, TOKEN);
    server.grant("bench", "big");
    let files = TempDir::new("bench-s3-files");
    let mut rows = Vec::new();
    let mut copy = None;
    for (name, prefix) in [("local", None), ("s3", Some("large"))] {
        let data = TempDir::new("bench-s3-data");
        if let Some(prefix) = prefix {
            init_s3(weed, data.path(), files.path(), prefix);
        }
        add_connection(&server, data.path(), "big", files.path());
        let server_cpu = weed.cpu_secs();
        let backup = timed(reposafe(data.path()).args(["backup", "big"]));
        let server_cpu = weed.cpu_secs() - server_cpu;
        let restore = fastest_restore(data.path(), &bare, name);
        eprintln!(
            "{name}: backup {:.2} s ({} MiB RSS), restore {:.2} s ({} MiB RSS)",
            backup.secs,
            backup.max_rss_kib / 1024,
            restore.secs,
            restore.max_rss_kib / 1024
        );
        rows.push((backup, restore, server_cpu));
        if prefix.is_none() {
            // The local archive copied to the bucket, every blob read back there.
            let url = format!("s3://{BUCKET}/copied");
            let mut args = weed.init_args(&url, files.path());
            args.splice(0..3, ["archive", "copy", "--to", &url].map(String::from));
            copy = Some(timed(reposafe(data.path()).args(&args)));
        }
    }
    let (local, s3) = (&rows[0], &rows[1]);
    let copy = copy.expect("the copy ran");
    let bare = bare_transfer(weed, &bare);
    let backup_ratio = s3.0.secs / local.0.secs;
    let restore_ratio = s3.1.secs / local.1.secs;
    let rss = s3.0.max_rss_kib.max(s3.1.max_rss_kib);
    // The time targets are reported, not enforced, until they are met (see issue 16's
    // note): the upload to a server on the same two cores is what costs.
    let met = |ratio: f64| if ratio <= 1.3 { "met" } else { "NOT MET yet" };
    format!(
        "## Large repository to S3 ({:.0} MiB pack; SeaweedFS on this machine)\n\
         backup:  local {:.2} s, S3 {:.2} s: {backup_ratio:.2}x (target <= 1.3x: {})\n\
         CPU during the backup: reposafe local {:.2} s, S3 {:.2} s; the S3 server {:.2} s \
         (of {:.2} s wall x 2 cores)\n\
         a bare upload of the source's pack file(s) with the same S3 client, nothing else: \
         {:.2} s (the S3 server {:.2} CPU-s); S3 backup - local backup = {:.2} s\n\
         restore: local {:.2} s, S3 {:.2} s: {restore_ratio:.2}x (target <= 1.3x: {})\n\
         a bare download of the same file(s) with the same S3 client, nothing else: {:.2} s \
         (the S3 server {:.2} CPU-s); S3 restore - local restore = {:.2} s\n\
         peak RSS on S3: backup {} MiB, restore {} MiB (target < 300 MiB)\n\
         archive copy of the local archive to S3 (every blob read back there): {:.2} s, \
         {:.0} MiB/s, peak RSS {} MiB\n{}\n",
        pack as f64 / 1048576.0,
        local.0.secs,
        s3.0.secs,
        met(backup_ratio),
        local.0.cpu_secs,
        s3.0.cpu_secs,
        s3.2,
        s3.0.secs,
        bare.upload_secs,
        bare.upload_server_cpu,
        s3.0.secs - local.0.secs,
        local.1.secs,
        s3.1.secs,
        met(restore_ratio),
        bare.download_secs,
        bare.download_server_cpu,
        s3.1.secs - local.1.secs,
        s3.0.max_rss_kib / 1024,
        s3.1.max_rss_kib / 1024,
        copy.secs,
        pack as f64 / 1048576.0 / copy.secs,
        copy.max_rss_kib / 1024,
        if rss.max(copy.max_rss_kib) < 300 * 1024 {
            "PASS"
        } else {
            "FAIL"
        }
    )
}

/// The fastest of three restores of `big/large` (each checked ref for ref against
/// `bare`), with the highest peak RSS of the three: one run swings by 2x on a machine
/// of two cores shared with the S3 server.
fn fastest_restore(data: &Path, bare: &Path, name: &str) -> Timed {
    let mut runs: Vec<Timed> = (0..3)
        .map(|_| {
            let to = TempDir::new("bench-s3-restore");
            let restore = timed(
                reposafe(data)
                    .args(["restore", "big/large", "--to"])
                    .arg(to.path().join("r.git")),
            );
            assert_eq!(
                gitutil::refs_of(&to.path().join("r.git")),
                gitutil::refs_of(bare),
                "{name} restore"
            );
            restore
        })
        .collect();
    let peak = runs.iter().map(|r| r.max_rss_kib).max().unwrap_or(0);
    runs.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    let mut fastest = runs.swap_remove(0);
    fastest.max_rss_kib = peak;
    fastest
}

/// The wall time and the S3 server's CPU seconds of moving the pack file(s) alone.
struct BareTransfer {
    upload_secs: f64,
    upload_server_cpu: f64,
    download_secs: f64,
    download_server_cpu: f64,
}

/// Uploads the pack files of `bare` to the bucket with the product's S3 client and
/// nothing else (no git, no encoding), then reads them back the same way: the floors
/// under what a backup and a restore on S3 add to local ones.
fn bare_transfer(weed: &Weed, bare: &Path) -> BareTransfer {
    use reposafe::archive::{Backend, FileKind, Source};
    let scratch = TempDir::new("bench-s3-bare");
    let store = weed.store(BUCKET, "bare", scratch.path());
    let packs: Vec<_> = std::fs::read_dir(bare.join("objects/pack"))
        .expect("pack dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .collect();
    let server_cpu = weed.cpu_secs();
    let start = std::time::Instant::now();
    for (n, pack) in packs.iter().enumerate() {
        let mut file = std::fs::File::open(pack).expect("open pack");
        store
            .write(
                FileKind::Blob,
                &format!("{n:064x}"),
                Source::Reader(&mut file),
            )
            .expect("bare upload");
    }
    let (upload_secs, upload_server_cpu) =
        (start.elapsed().as_secs_f64(), weed.cpu_secs() - server_cpu);
    let server_cpu = weed.cpu_secs();
    let start = std::time::Instant::now();
    for n in 0..packs.len() {
        let mut read = store
            .open_read(FileKind::Blob, &format!("{n:064x}"))
            .expect("bare download");
        std::io::copy(&mut read, &mut std::io::sink()).expect("bare download");
    }
    BareTransfer {
        upload_secs,
        upload_server_cpu,
        download_secs: start.elapsed().as_secs_f64(),
        download_server_cpu: weed.cpu_secs() - server_cpu,
    }
}

/// The requests the run's S3 client reports (`object store: N requests`, logged at info).
fn requests_of(data: &Path, args: &[&str]) -> u64 {
    let out = reposafe(data)
        .args(args)
        .env("REPOSAFE_LOG", "info")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.split("object store: ").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn unchanged(weed: &Weed) -> String {
    let n = env_usize("BENCH_S3_REPOS", 100);
    let server = CloudServer::start();
    let src = TempDir::new("bench-s3-repos");
    let opts = gitutil::FixtureOptions {
        repos: n,
        commits: 20,
        binary_bytes: 4096,
        ..gitutil::FixtureOptions::default()
    };
    gitutil::make_workspace_fixture_with(&server, "acme", src.path(), &opts);
    server.add_api_token("bench", EMAIL, TOKEN);
    server.grant("bench", "acme");
    let data = TempDir::new("bench-s3-data");
    let files = TempDir::new("bench-s3-files");
    init_s3(weed, data.path(), files.path(), "many");
    add_connection(&server, data.path(), "acme", files.path());
    let first = requests_of(data.path(), &["backup", "acme", "--parallel", "8"]);
    let again = requests_of(data.path(), &["backup", "acme", "--parallel", "8"]);
    let per_repo = again as f64 / n as f64;
    format!(
        "## Unchanged re-run of {n} repositories on S3\n\
         first backup: {first} requests; unchanged re-run: {again} requests, {per_repo:.2} per repository (target <= 2)\n{}\n",
        if per_repo <= 2.0 { "PASS" } else { "FAIL" }
    )
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let want = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let weed = Weed::start_with_bucket(BUCKET);
    let mut report = String::from("# reposafe benchmarks: the archive on S3\n\n");
    if want("unchanged") {
        report.push_str(&unchanged(&weed));
    }
    if want("large") {
        report.push_str(&large(&weed));
    }
    println!("{report}");
    if report.contains("FAIL") {
        std::process::exit(1);
    }
}
