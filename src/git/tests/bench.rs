//! Manual benchmarks (ignored by default): fetch and restore of generated repositories compared
//! with the `git` CLI, with peak memory. Run one at a time, in release mode, e.g.
//! `cargo test --release --lib git::tests::bench::many_commits -- --ignored --nocapture`.
//! Sizes: `REPOSAFE_BENCH_COMMITS` (default 20000), `REPOSAFE_BENCH_PACK_MB` (default 300).

use std::{
    fs,
    io::Write,
    path::Path,
    process::Stdio,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use secrecy::SecretString;

use super::{http_server, support::pack_readers, support::pseudo_random_bytes, support::Git};
use crate::git::{fetch_mirror, list_packs, restore_bare, FetchOptions, GitAuth};

pub(in crate::git) fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn status_kb(field: &str) -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Peak memory of this process while `f` runs: (VmHWM, peak RssAnon, peak RssFile) in MiB.
pub(in crate::git) fn measure<T>(label: &str, f: impl FnOnce() -> T) -> T {
    // Reset the peak RSS counter (Linux ≥ 4.0).
    let _ = fs::write("/proc/self/clear_refs", "5");
    let stop = Arc::new(AtomicBool::new(false));
    let peak_anon = Arc::new(AtomicU64::new(0));
    let peak_file = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak_anon, peak_file) = (stop.clone(), peak_anon.clone(), peak_file.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak_anon.fetch_max(status_kb("RssAnon:"), Ordering::Relaxed);
                peak_file.fetch_max(status_kb("RssFile:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let start = Instant::now();
    let out = f();
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    println!(
        "BENCH {label}: {:.2}s, VmHWM {} MiB (peak RssAnon {} MiB, peak RssFile {} MiB)",
        elapsed.as_secs_f64(),
        status_kb("VmHWM:") / 1024,
        peak_anon.load(Ordering::Relaxed) / 1024,
        peak_file.load(Ordering::Relaxed) / 1024,
    );
    out
}

fn time_cli(git: &Git, label: &str, dir: &Path, args: &[&str]) {
    let start = Instant::now();
    let out = git
        .command(dir)
        .args(args)
        .env("GIT_TRACE2_PERF", "")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "{label}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("BENCH {label}: {:.2}s", start.elapsed().as_secs_f64());
}

/// `/usr/bin/time -v`-like peak RSS of a git command, in MiB.
pub(in crate::git) fn cli_peak_rss(git: &Git, dir: &Path, args: &[&str]) -> Option<u64> {
    let out = std::process::Command::new("/usr/bin/time")
        .arg("-v")
        .arg("git")
        .args(args)
        .current_dir(dir)
        .envs(
            git.command(dir)
                .get_envs()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
        )
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stderr);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kb| kb / 1024)
}

pub(in crate::git) fn fast_import(git: &Git, repo: &Path, stream: impl FnOnce(&mut dyn Write)) {
    let mut child = git
        .command(repo)
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("fast-import");
    {
        let mut stdin = std::io::BufWriter::new(child.stdin.take().expect("stdin"));
        stream(&mut stdin);
        stdin.flush().expect("flush");
    }
    assert!(child.wait().expect("wait").success());
}

pub(in crate::git) fn data(out: &mut dyn Write, bytes: &[u8]) {
    writeln!(out, "data {}", bytes.len()).expect("write");
    out.write_all(bytes).expect("write");
    writeln!(out).expect("write");
}

fn fetch_opts<'a>(url: &'a str, auth: &'a GitAuth, interrupt: &'a AtomicBool) -> FetchOptions<'a> {
    FetchOptions {
        url,
        auth,
        progress: None,
        should_interrupt: interrupt,
        tls: None,
    }
}

#[test]
#[ignore = "benchmark; run manually"]
fn many_commits() {
    let commits = env_usize("REPOSAFE_BENCH_COMMITS", 20_000);
    let git = Git::new();
    let root = git.root();
    git.run(root, &["init", "--bare", "-q", "origin.git"]);
    let origin = root.join("origin.git");
    let started = Instant::now();
    fast_import(&git, &origin, |out| {
        let body: String = (0..40)
            .map(|i| format!("common line {i} of every file\n"))
            .collect();
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
            for k in 0..3 {
                let file = (n * 7 + k * 131) % 600;
                writeln!(out, "M 100644 inline dir{}/file{file}.txt", file % 30).expect("write");
                data(
                    out,
                    format!("{body}file {file} changed in commit {n}\n").as_bytes(),
                );
            }
            if n % 1000 == 0 {
                writeln!(
                    out,
                    "tag v{n}\nfrom :{n}\ntagger Bench <bench@example.com> {} +0000",
                    1_600_000_000 + n
                )
                .expect("write");
                data(out, format!("release {n}\n").as_bytes());
                writeln!(out, "reset refs/heads/branch-{n}\nfrom :{n}\n").expect("write");
            }
        }
    });
    // Make the origin look like a server's: one fully packed repository.
    git.run(&origin, &["repack", "-adq"]);
    git.run(&origin, &["symbolic-ref", "HEAD", "refs/heads/main"]);
    println!(
        "BENCH generated {commits} commits in {:.1}s; origin pack {} KiB",
        started.elapsed().as_secs_f64(),
        fs::read_dir(origin.join("objects/pack"))
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "pack"))
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum::<u64>()
            / 1024
    );

    let url = format!("file://{}", origin.display());
    let interrupt = AtomicBool::new(false);
    time_cli(
        &git,
        "git clone --mirror (file://)",
        root,
        &["clone", "-q", "--mirror", &url, "cli-file.git"],
    );
    if let Some(mb) = cli_peak_rss(
        &git,
        root,
        &["clone", "-q", "--mirror", &url, "cli-file-rss.git"],
    ) {
        println!("BENCH git clone --mirror (file://) peak RSS {mb} MiB (git process only, not upload-pack)");
    }
    let mirror = root.join("mirror-file.git");
    let out = measure("fetch_mirror clone (file://)", || {
        fetch_mirror(&mirror, &fetch_opts(&url, &GitAuth::None, &interrupt)).expect("fetch")
    });
    assert_eq!(out.refs, git.refs_with_head(&origin));
    measure("fetch_mirror no-op (file://)", || {
        fetch_mirror(&mirror, &fetch_opts(&url, &GitAuth::None, &interrupt)).expect("fetch")
    });
    time_cli(
        &git,
        "git fetch no-op (git remote update in cli mirror)",
        &root.join("cli-file.git"),
        &["fetch", "-q", "--prune"],
    );

    // HTTP through the test CGI bridge.
    let header = "Basic dXNlcjpwYXNz";
    let server = http_server::Server::start(root.to_owned(), header);
    let http_url = format!("{}/origin.git", server.base_url());
    let extra = format!("http.extraHeader=Authorization: {header}");
    time_cli(
        &git,
        "git clone --mirror (http)",
        root,
        &[
            "-c",
            &extra,
            "clone",
            "-q",
            "--mirror",
            &http_url,
            "cli-http.git",
        ],
    );
    let auth = GitAuth::Header(SecretString::from(header));
    let http_mirror = root.join("mirror-http.git");
    let out = measure("fetch_mirror clone (http)", || {
        fetch_mirror(&http_mirror, &fetch_opts(&http_url, &auth, &interrupt)).expect("fetch")
    });
    assert_eq!(out.refs, git.refs_with_head(&origin));
    measure("fetch_mirror no-op (http)", || {
        fetch_mirror(&http_mirror, &fetch_opts(&http_url, &auth, &interrupt)).expect("fetch")
    });

    // Restore.
    let packs = list_packs(&mirror).expect("packs");
    let target = root.join("restored.git");
    measure("restore_bare", || {
        restore_bare(&target, &mut pack_readers(&packs), &out.refs, false).expect("restore")
    });
    let scratch = root.join("index-pack.git");
    git.run(root, &["init", "--bare", "-q", "index-pack.git"]);
    let copy = scratch.join("objects/pack/copy.pack");
    fs::copy(&packs[0].path, &copy).expect("copy");
    time_cli(
        &git,
        "git index-pack (same pack)",
        &scratch,
        &["index-pack", copy.to_str().expect("utf8")],
    );
    let start = Instant::now();
    git.fsck(&target);
    println!(
        "BENCH git fsck --full of the restored repository: {:.2}s (ok)",
        start.elapsed().as_secs_f64()
    );
}

#[test]
#[ignore = "benchmark; run manually"]
fn large_pack_memory() {
    let megabytes = env_usize("REPOSAFE_BENCH_PACK_MB", 300);
    let git = Git::new();
    let root = git.root();
    git.run(root, &["init", "--bare", "-q", "origin.git"]);
    let origin = root.join("origin.git");
    // Incompressible 1 MiB blobs, a few commits.
    fast_import(&git, &origin, |out| {
        let per_commit = 25;
        let mut n = 0;
        let mut commit = 0;
        while n < megabytes {
            commit += 1;
            writeln!(out, "commit refs/heads/main\nmark :{commit}").expect("write");
            writeln!(
                out,
                "committer Bench <bench@example.com> {} +0000",
                1_600_000_000 + commit
            )
            .expect("write");
            data(out, format!("commit {commit}\n").as_bytes());
            if commit > 1 {
                writeln!(out, "from :{}", commit - 1).expect("write");
            }
            for _ in 0..per_commit.min(megabytes - n) {
                writeln!(out, "M 100644 inline blobs/{n}.bin").expect("write");
                data(out, &pseudo_random_bytes(n as u64 + 1, 1 << 20));
                n += 1;
            }
        }
    });
    git.run(&origin, &["repack", "-adq"]);
    let url = format!("file://{}", origin.display());
    let interrupt = AtomicBool::new(false);
    let mirror = root.join("mirror.git");
    let out = measure(
        &format!("fetch_mirror clone of a {megabytes} MiB pack (file://)"),
        || fetch_mirror(&mirror, &fetch_opts(&url, &GitAuth::None, &interrupt)).expect("fetch"),
    );
    println!("BENCH received {} MiB", out.bytes_received >> 20);
    time_cli(
        &git,
        "git clone --mirror (file://)",
        root,
        &["clone", "-q", "--mirror", &url, "cli.git"],
    );
    if let Some(mb) = cli_peak_rss(
        &git,
        root,
        &["clone", "-q", "--mirror", &url, "cli-rss.git"],
    ) {
        println!("BENCH git clone --mirror peak RSS {mb} MiB (git process only)");
    }

    let header = "Basic dXNlcjpwYXNz";
    let server = http_server::Server::start(root.to_owned(), header);
    let http_url = format!("{}/origin.git", server.base_url());
    let auth = GitAuth::Header(SecretString::from(header));
    let http_mirror = root.join("mirror-http.git");
    measure(
        &format!("fetch_mirror clone of a {megabytes} MiB pack (http)"),
        || fetch_mirror(&http_mirror, &fetch_opts(&http_url, &auth, &interrupt)).expect("fetch"),
    );
    drop(server);

    let packs = list_packs(&mirror).expect("packs");
    let target = root.join("restored.git");
    measure(&format!("restore_bare of a {megabytes} MiB pack"), || {
        restore_bare(&target, &mut pack_readers(&packs), &out.refs, false).expect("restore")
    });
    git.fsck(&target);
    assert_eq!(git.refs_with_head(&target), out.refs);

    // For comparison: what gix-pack's own bundle writer (which memory-maps the whole pack while
    // resolving deltas) costs on the same pack. This was the indexing path before.
    let gix_dir = root.join("gix-bundle");
    fs::create_dir(&gix_dir).expect("dir");
    measure(
        &format!("gix Bundle::write_to_directory of the same {megabytes} MiB pack (old path)"),
        || {
            let mut reader = std::io::BufReader::new(fs::File::open(&packs[0].path).expect("open"));
            gix::odb::pack::Bundle::write_to_directory(
                &mut reader,
                Some(&gix_dir),
                &mut gix::progress::Discard,
                &AtomicBool::new(false),
                None::<gix::objs::find::Never>,
                gix::hash::Kind::Sha1,
                gix::odb::pack::bundle::write::Options {
                    thread_limit: None,
                    iteration_mode: gix::odb::pack::data::input::Mode::Verify,
                    index_version: gix::odb::pack::index::Version::V2,
                    alloc_limit_bytes: None,
                    compression: gix::zlib::Compression::BEST_SPEED,
                },
            )
            .expect("gix bundle write")
        },
    );
    let index_pack = root.join("index-pack.git");
    git.run(root, &["init", "--bare", "-q", "index-pack.git"]);
    let copy = index_pack.join("objects/pack/copy.pack");
    fs::copy(&packs[0].path, &copy).expect("copy");
    time_cli(
        &git,
        "git index-pack (same pack)",
        &index_pack,
        &["index-pack", copy.to_str().expect("utf8")],
    );
}
