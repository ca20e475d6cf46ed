//! Large-workspace benchmark: a workspace of N small repositories (default 1,000) on the
//! test Bitbucket Cloud server (real `git http-backend` over loopback), backed up through a
//! real `reposafe serve` daemon (jobs of a plan with `metadata_every: never` submitted with
//! `POST /api/v1/run`; metadata is `benches/full_backup.rs`'s business), measured side by
//! side with git in one run, at each parallelism (default 4 and 8):
//!
//! 1. First backup ≤ 1.2 × `git clone --mirror` of every repository, as many at a time.
//! 2. Unchanged re-run ≤ 0.8 × `git ls-remote` of every repository, as many at a time;
//!    ≤ 1 git request (one ref listing) per repository, ≤ ceil(N/100) + 1 API requests,
//!    0 bytes added to the archive.
//! 3. The daemon's RSS (sampled from `/proc/<pid>/status`, VmRSS and VmHWM) stays < 300 MB
//!    through both runs, and the job's progress (`GET /api/v1/jobs/<id>`, polled every
//!    100 ms) never stands still for more than 2 s.
//!
//! Each pair is run twice (best of 2; git first in one round, reposafe first in the other).
//! Run with `cargo bench --bench workspace`; sizes: BENCH_WS_REPOS (repositories),
//! BENCH_WS_PARALLEL (comma-separated, e.g. `4,8`), BENCH_WS_ROUNDS (default 2),
//! BENCH_WS_COMMITS (commits per repository, default 3), BENCH_WS_BINARY_BYTES (default
//! 16 KiB); BENCH_WS_PROFILE (see [`profile`]) attaches a profiler to the unchanged re-run.

#[path = "../tests/common/mod.rs"]
mod common;

use common::s3::cpu_secs;
use common::{gitutil, wait_for_daemon, CloudServer, Reposafe, TempDir};
use reqwest::blocking::Client;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WS: &str = "acme";
const EMAIL: &str = "bench@acme.test";
const TOKEN: &str = "ATATT-bench-workspace-token";
const RSS_LIMIT_KIB: u64 = 300 * 1024;
const PROGRESS_GAP_LIMIT: Duration = Duration::from_secs(2);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn dir_size(p: &Path) -> u64 {
    common::files_under(p)
        .iter()
        .map(|f| f.metadata().map(|m| m.len()).unwrap_or(0))
        .sum()
}

fn archive_size(data: &Path) -> u64 {
    dir_size(&data.join("archive/blobs")) + dir_size(&data.join("archive/snapshots"))
}

/// VmRSS and VmHWM of a process, in KiB.
fn rss_of(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// A `reposafe serve` on the data dir, with an RSS sampler.
struct Daemon {
    child: Child,
    url: String,
    token: String,
    http: Client,
    peak_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Daemon {
    fn start(rs: &Reposafe, parallel: usize) -> Daemon {
        let log = std::fs::File::create(rs.files.path().join("serve.log")).expect("log file");
        let child = rs
            .cmd(&["serve", "--listen", "127.0.0.1:0"])
            .args(["--parallel", &parallel.to_string()])
            .env("REPOSAFE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start reposafe serve");
        let (url, token) = wait_for_daemon(rs.data_dir());
        let (peak_kib, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (pid, peak, halt) = (child.id(), peak_kib.clone(), stop.clone());
        std::thread::spawn(move || {
            while !halt.load(Ordering::SeqCst) {
                if let Some((rss, hwm)) = rss_of(pid) {
                    peak.fetch_max(rss.max(hwm), Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Daemon {
            child,
            url,
            token,
            http: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            peak_kib,
            stop,
        }
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().expect("request to the daemon");
        let status = resp.status();
        let text = resp.text().expect("body");
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).expect("JSON answer")
    }

    /// Runs a backup job of the workspace's connection; its wall time (from the request
    /// to the first poll that sees it finished) and the longest time its progress stood still.
    fn run_job(&self) -> JobRun {
        let t = Instant::now();
        let cpu = cpu_secs(self.child.id());
        let job = self.call(
            reqwest::Method::POST,
            "/api/v1/run",
            Some(serde_json::json!({ "plan": "git" })),
        );
        let id = job["id"].as_u64().expect("job id");
        let (mut last, mut changed, mut gap) = (Value::Null, Instant::now(), Duration::ZERO);
        loop {
            let j = self.call(reqwest::Method::GET, &format!("/api/v1/jobs/{id}"), None);
            let state = j["state"].as_str().unwrap_or("").to_string();
            if j["progress"] != last {
                gap = gap.max(changed.elapsed());
                changed = Instant::now();
                last = j["progress"].clone();
            }
            if !["queued", "running"].contains(&state.as_str()) {
                let secs = t.elapsed().as_secs_f64();
                assert_eq!(state, "succeeded", "job {id}: {j}");
                return JobRun {
                    secs,
                    cpu: cpu_secs(self.child.id()) - cpu,
                    progress_gap: gap,
                };
            }
            assert!(t.elapsed() < Duration::from_secs(3600), "job {id} hangs");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops it (SIGTERM) and returns its peak RSS in KiB.
    fn stop(mut self) -> u64 {
        if let Some((rss, hwm)) = rss_of(self.child.id()) {
            self.peak_kib.fetch_max(rss.max(hwm), Ordering::SeqCst);
        }
        self.stop.store(true, Ordering::SeqCst);
        terminate(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.peak_kib.load(Ordering::SeqCst)
    }
}

/// SIGTERM through `kill(1)`.
fn terminate(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

/// BENCH_WS_PROFILE, e.g. `perf record -g -o /tmp/ws.perf -p`: a command started with the
/// daemon's pid appended while the unchanged re-run runs, and stopped with SIGINT after it.
fn profile(pid: u32) -> Option<Child> {
    let cmd = std::env::var("BENCH_WS_PROFILE").ok()?;
    let child = std::process::Command::new("sh")
        .args(["-c", &format!("exec {cmd} {pid}")])
        .stdout(Stdio::null())
        .spawn()
        .expect("start the profiler");
    std::thread::sleep(Duration::from_millis(500));
    Some(child)
}

struct JobRun {
    secs: f64,
    /// CPU seconds the daemon used meanwhile.
    cpu: f64,
    progress_gap: Duration,
}

/// Runs `cmd(url, i)` for every URL on `parallel` threads; the wall time.
fn git_for_each(urls: &[String], parallel: usize, cmd: impl Fn(&str, usize) -> bool + Sync) -> f64 {
    let next = AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(url) = urls.get(i) else { break };
                assert!(cmd(url, i), "git failed for {url}");
            });
        }
    });
    t.elapsed().as_secs_f64()
}

/// `http.extraHeader` carrying the token as git sends it to Bitbucket Cloud.
fn git_auth() -> String {
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("x-bitbucket-api-token-auth:{TOKEN}"));
    format!("http.extraHeader=Authorization: Basic {basic}")
}

/// Runs git as a user would: the test kit's isolated environment, but git's own
/// durability settings (the kit turns fsync off for its fixtures), quietly.
fn git_ok(dir: &Path, args: &[&str]) -> bool {
    gitutil::git_command(dir)
        .env_remove("GIT_CONFIG_COUNT")
        .env_remove("GIT_CONFIG_KEY_0")
        .env_remove("GIT_CONFIG_VALUE_0")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// One round at one parallelism: (first backup, git clone --mirror, unchanged re-run,
/// git ls-remote) times, plus what the unchanged run cost and the daemon's figures.
struct Round {
    first: f64,
    first_cpu: f64,
    unchanged_cpu: f64,
    /// The unchanged re-run by `reposafe backup` without a daemon.
    cli_unchanged: f64,
    clone: f64,
    unchanged: f64,
    ls_remote: f64,
    git_requests: usize,
    ref_listings_max: usize,
    api_requests: usize,
    new_bytes: u64,
    peak_kib: u64,
    progress_gap: Duration,
}

fn round(server: &CloudServer, urls: &[String], parallel: usize, git_first: bool) -> Round {
    let rs = Reposafe::new();
    let cred = rs.secret_file("token", TOKEN);
    let cred = cred.to_string_lossy();
    rs.add_cloud(
        server,
        WS,
        &["--api-token-email", EMAIL, "--api-token-file", &cred],
    )
    .ok();
    // Git at scale is measured here; metadata (one API request per kind per repository)
    // has its own benchmark (`full_backup`): this plan backs up git, wikis and LFS only.
    rs.run(&[
        "plan",
        "add",
        "git",
        "--connection",
        WS,
        "--metadata-every",
        "never",
    ])
    .ok();
    let daemon = Daemon::start(&rs, parallel);
    let auth = git_auth();
    let clones = TempDir::new("bench-ws-clones");
    let clone = || {
        git_for_each(urls, parallel, |url, i| {
            let to = format!("{i}.git");
            git_ok(
                clones.path(),
                &["-c", &auth, "clone", "--mirror", "--quiet", url, &to],
            )
        })
    };
    let ls_remote = || {
        git_for_each(urls, parallel, |url, _| {
            git_ok(clones.path(), &["-c", &auth, "ls-remote", "--quiet", url])
        })
    };
    let (clone_secs, first) = if git_first {
        let c = clone();
        (c, daemon.run_job())
    } else {
        let f = daemon.run_job();
        (clone(), f)
    };
    let before = archive_size(rs.data_dir());
    let unchanged_run = || {
        server.clear_log();
        let profiler = profile(daemon.child.id());
        let u = daemon.run_job();
        if let Some(mut p) = profiler {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &p.id().to_string()])
                .status();
            let _ = p.wait();
        }
        (u, server.request_log())
    };
    let (ls_secs, (unchanged, log)) = if git_first {
        let l = ls_remote();
        (l, unchanged_run())
    } else {
        let u = unchanged_run();
        (ls_remote(), u)
    };
    let new_bytes = archive_size(rs.data_dir()).saturating_sub(before);
    let peak_kib = daemon.stop();
    // The same re-run from the command line without a daemon: a new process, which checks
    // each mirror on its first use.
    let t = Instant::now();
    let cli = rs
        .cmd(&["backup", WS, "--parallel", &parallel.to_string()])
        .env("REPOSAFE_LOG", "warn")
        .output()
        .expect("reposafe backup");
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let cli_secs = t.elapsed().as_secs_f64();
    let mut per_repo: std::collections::HashMap<&str, usize> = Default::default();
    for r in log.iter().filter(|r| r.is_git) {
        let repo = r.path.split(".git").next().unwrap_or(&r.path);
        *per_repo.entry(repo).or_default() += usize::from(r.path.contains("/info/refs"));
    }
    Round {
        first: first.secs,
        first_cpu: first.cpu,
        unchanged_cpu: unchanged.cpu,
        cli_unchanged: cli_secs,
        clone: clone_secs,
        unchanged: unchanged.secs,
        ls_remote: ls_secs,
        git_requests: log.iter().filter(|r| r.is_git).count(),
        ref_listings_max: per_repo.values().copied().max().unwrap_or(0),
        api_requests: log.iter().filter(|r| !r.is_git).count(),
        new_bytes,
        peak_kib,
        progress_gap: first.progress_gap.max(unchanged.progress_gap),
    }
}

fn bench_parallelism(server: &CloudServer, urls: &[String], parallel: usize) -> String {
    let n = urls.len();
    let rounds: Vec<Round> = (0..env_usize("BENCH_WS_ROUNDS", 2).max(1))
        .map(|r| {
            let got = round(server, urls, parallel, r % 2 == 0);
            eprintln!(
                "--parallel {parallel}, round {r}: first backup {:.2} s ({:.1} CPU-s) vs git clone --mirror {:.2} s; \
                 unchanged {:.2} s ({:.1} CPU-s; CLI without daemon {:.2} s) vs git ls-remote {:.2} s; peak RSS {} MiB",
                got.first,
                got.first_cpu,
                got.clone,
                got.unchanged,
                got.unchanged_cpu,
                got.cli_unchanged,
                got.ls_remote,
                got.peak_kib / 1024
            );
            got
        })
        .collect();
    let best = |f: fn(&Round) -> f64| rounds.iter().map(f).fold(f64::INFINITY, f64::min);
    let (first, clone) = (best(|r| r.first), best(|r| r.clone));
    let (unchanged, ls) = (best(|r| r.unchanged), best(|r| r.ls_remote));
    let (cli, first_cpu, unchanged_cpu) = (
        best(|r| r.cli_unchanged),
        best(|r| r.first_cpu),
        best(|r| r.unchanged_cpu),
    );
    let worst = |f: fn(&Round) -> u64| rounds.iter().map(f).max().unwrap_or(0);
    let git_requests = worst(|r| r.git_requests as u64);
    let listings = worst(|r| r.ref_listings_max as u64);
    let api = worst(|r| r.api_requests as u64);
    let new_bytes = worst(|r| r.new_bytes);
    let peak = worst(|r| r.peak_kib);
    let gap = rounds
        .iter()
        .map(|r| r.progress_gap)
        .max()
        .unwrap_or_default();
    let api_limit = n.div_ceil(100) as u64 + 1;
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    format!(
        "## {n} repositories, --parallel {parallel} (best of {})\n\
         first backup: reposafe {first:.2} s, git clone --mirror {clone:.2} s: {:.2}x (target <= 1.2x) {}\n\
         unchanged re-run: reposafe {unchanged:.2} s, git ls-remote {ls:.2} s: {:.2}x (target <= 0.8x) {}\n\
         (the same without a daemon, `reposafe backup` in a new process: {cli:.2} s, {:.2}x; \
         daemon CPU: first backup {first_cpu:.1} s, unchanged re-run {unchanged_cpu:.1} s)\n\
         unchanged re-run: {git_requests} git requests, at most {listings} ref listing per repository (target <= 1) {}\n\
         unchanged re-run: {api} API requests (target <= {api_limit}) {}; {new_bytes} bytes stored (target 0) {}\n\
         daemon peak RSS {:.0} MiB (target < 300 MiB) {}; longest progress pause {:.1} s (target <= 2 s) {}\n\n",
        rounds.len(),
        first / clone,
        verdict(first <= 1.2 * clone),
        unchanged / ls,
        verdict(unchanged <= 0.8 * ls),
        cli / ls,
        verdict(listings <= 1 && git_requests <= n as u64),
        verdict(api <= api_limit),
        verdict(new_bytes == 0),
        peak as f64 / 1024.0,
        verdict(peak < RSS_LIMIT_KIB),
        gap.as_secs_f64(),
        verdict(gap <= PROGRESS_GAP_LIMIT),
    )
}

fn main() {
    let n = env_usize("BENCH_WS_REPOS", 1000).max(2);
    let parallels: Vec<usize> = std::env::var("BENCH_WS_PARALLEL")
        .unwrap_or_else(|_| "4,8".into())
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    let server = CloudServer::start();
    let src = TempDir::new("bench-ws-src");
    let t = Instant::now();
    let opts = gitutil::FixtureOptions {
        repos: n,
        commits: env_usize("BENCH_WS_COMMITS", 3),
        binary_bytes: env_usize("BENCH_WS_BINARY_BYTES", 16 * 1024),
        ..gitutil::FixtureOptions::default()
    };
    let repos = gitutil::make_workspace_fixture_with(&server, WS, src.path(), &opts);
    eprintln!(
        "fixture: {n} repositories, {:.1} MiB, made in {:.1} s",
        dir_size(src.path()) as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );
    server.add_api_token("bench", EMAIL, TOKEN);
    server.grant("bench", WS);
    let urls: Vec<String> = repos.iter().map(|r| server.git_url(WS, &r.slug)).collect();
    let mut report = String::from("# reposafe large-workspace benchmark\n\n");
    for p in parallels {
        report.push_str(&bench_parallelism(&server, &urls, p));
    }
    println!("{report}");
    if report.contains("FAIL") {
        std::process::exit(1);
    }
}
