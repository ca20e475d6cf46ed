//! Additional-credentials benchmark (issue 5), against the Cloud test server limiting each
//! principal to 60 requests per window (API calls and git HTTP requests alike). Run with
//! `cargo bench --bench credentials`.
//!
//! A workspace of BENCH_CRED_REPOS (default 300) small repositories is backed up by the
//! real `reposafe` binary, each run on a fresh data dir with `connection add ...
//! --rate-limit 60/<window>` and `run --plan P --json`:
//! * run A: the primary credential only;
//! * run B: the primary plus two additional credentials of distinct principals, enabled by
//!   the plan (`--additional-credentials all`).
//!
//! Targets: B takes ≤ 0.45× A's time; no failed repository in either run; in the server's
//! request log no principal sends more than its limit + 5% within any window. Also shown:
//! 429s per principal and the job's per-credential counters.
//!
//! The window is BENCH_RATE_WINDOW_SECS (default 60); REPOSAFE_RETRY_BASE_MS is set to
//! half the window so cool-downs scale with it (30 s for the 60 s window, the product's
//! default). Plans run BENCH_CRED_CONCURRENCY (default 8) repositories at once, the same
//! in both runs.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use reposafe_testkit::{gitutil, CloudServer, PrincipalLoad, TempDir};
use serde_json::Value;

const WS: &str = "acme";
/// Requests per principal per window, on the server and in `--rate-limit`.
const LIMIT: u32 = 60;
/// How far over the limit a principal may go within one window.
const TOLERANCE: f64 = 0.05;
const TARGET_RATIO: f64 = 0.45;

struct Account {
    principal: &'static str,
    email: &'static str,
    token: &'static str,
}

const ACCOUNTS: [Account; 3] = [
    Account {
        principal: "bench-principal-1",
        email: "one@acme.test",
        token: "ATATT-bench-cred-token-one",
    },
    Account {
        principal: "bench-principal-2",
        email: "two@acme.test",
        token: "ATATT-bench-cred-token-two",
    },
    Account {
        principal: "bench-principal-3",
        email: "three@acme.test",
        token: "ATATT-bench-cred-token-three",
    },
];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Bench {
    server: CloudServer,
    window: Duration,
    retry_base_ms: u64,
    rate_arg: String,
    concurrency: u64,
    files: TempDir,
}

/// What one timed run produced.
struct RunStats {
    label: &'static str,
    secs: f64,
    code: i32,
    /// The job JSON, or why there is none.
    job: Result<Value, String>,
    load: BTreeMap<String, PrincipalLoad>,
    requests: usize,
    git_requests: usize,
    unauthenticated: usize,
}

impl RunStats {
    fn failed_repos(&self) -> Option<u64> {
        self.job
            .as_ref()
            .ok()
            .and_then(|j| j["progress"]["failed"].as_u64())
    }

    fn state(&self) -> String {
        match &self.job {
            Ok(j) => j["state"].as_str().unwrap_or("?").to_string(),
            Err(_) => "no job".to_string(),
        }
    }

    fn max_in_window(&self) -> usize {
        self.load
            .values()
            .map(|l| l.max_in_window)
            .max()
            .unwrap_or(0)
    }
}

impl Bench {
    fn reposafe(&self, data: &Path) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_reposafe"));
        // One compiled-component cache for every data dir (and the tests'): the
        // providers are compiled once, not once per data dir.
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reposafe-component-cache");
        c.arg("--data-dir")
            .arg(data)
            .env("REPOSAFE_COMPONENT_CACHE", cache)
            .env("REPOSAFE_RETRY_BASE_MS", self.retry_base_ms.to_string())
            .env_remove("REPOSAFE_PASSPHRASE")
            .env_remove("REPOSAFE_DATA_DIR");
        c
    }

    /// Runs a setup command; panics with its output if it fails.
    fn setup(&self, data: &Path, args: &[&str]) -> String {
        let out = self
            .reposafe(data)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run reposafe {args:?}: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "reposafe {args:?} failed:\n{text}");
        text
    }

    fn token_file(&self, a: &Account) -> String {
        let p = self.files.path().join(a.principal);
        std::fs::write(&p, a.token).expect("write token file");
        p.display().to_string()
    }

    /// A fresh data dir with the connection (primary = first account) and plan `plan`;
    /// with `additional`, the other two accounts are added and the plan enables them.
    fn prepare(&self, plan: &str, additional: bool) -> TempDir {
        let data = TempDir::new("bench-cred-data");
        let base = self.server.base_url();
        let primary = &ACCOUNTS[0];
        let tok = self.token_file(primary);
        self.setup(
            data.path(),
            &[
                "connection",
                "add",
                "cloud",
                "--workspace",
                WS,
                "--set",
                &format!("api-base-url={base}"),
                "--set",
                &format!("git-base-url={base}"),
                "--api-token-email",
                primary.email,
                "--api-token-file",
                &tok,
                "--rate-limit",
                &self.rate_arg,
            ],
        );
        let mut plan_args = vec![
            "plan".to_string(),
            "add".to_string(),
            plan.to_string(),
            "--connection".to_string(),
            WS.to_string(),
            "--concurrency".to_string(),
            self.concurrency.to_string(),
            // Git and the listing spread over credentials is measured here; metadata's
            // API requests (about 14 a repository) have `benches/full_backup.rs`.
            "--metadata-every".to_string(),
            "never".to_string(),
        ];
        if additional {
            for (i, a) in ACCOUNTS[1..].iter().enumerate() {
                let tok = self.token_file(a);
                let added = self.setup(
                    data.path(),
                    &[
                        "connection",
                        "credential",
                        "add",
                        WS,
                        "--additional",
                        "--label",
                        &format!("extra-{}", i + 1),
                        "--api-token-email",
                        a.email,
                        "--api-token-file",
                        &tok,
                    ],
                );
                eprintln!("{}", added.trim_end());
            }
            plan_args.extend(["--additional-credentials".to_string(), "all".to_string()]);
        }
        let plan_args: Vec<&str> = plan_args.iter().map(String::as_str).collect();
        self.setup(data.path(), &plan_args);
        data
    }

    /// Times `run --plan plan --json` on a fresh window and a cleared request log (the
    /// setup's verification requests are not part of the run; a fresh window is what the
    /// server would have after waiting one window length).
    fn timed_run(&self, label: &'static str, data: &Path, plan: &str) -> RunStats {
        self.server.set_rate_limit(Some(LIMIT));
        self.server.clear_log();
        eprintln!("{label}: running plan {plan} ...");
        let t = Instant::now();
        let out = self
            .reposafe(data)
            .args(["run", "--plan", plan, "--json"])
            .output();
        let secs = t.elapsed().as_secs_f64();
        let log = self.server.request_log();
        let (code, job) = match out {
            Err(e) => (-1, Err(format!("cannot run reposafe: {e}"))),
            Ok(out) => {
                let stdout = String::from_utf8_lossy(&out.stdout);
                let job = serde_json::from_str::<Value>(&stdout).map_err(|e| {
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
                    format!(
                        "no job JSON ({e}); stdout: {stdout:.400}; stderr tail:\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )
                });
                (out.status.code().unwrap_or(-1), job)
            }
        };
        eprintln!("{label}: {secs:.1} s, exit {code}");
        RunStats {
            label,
            secs,
            code,
            job,
            load: self.server.principal_load(),
            requests: log.len(),
            git_requests: log.iter().filter(|r| r.is_git).count(),
            unauthenticated: log.iter().filter(|r| r.principal.is_none()).count(),
        }
    }
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

fn describe_run(r: &RunStats, window: Duration, out: &mut String) {
    let w = window.as_secs();
    out.push_str(&format!(
        "\n### Run {}: {:.1} s, exit code {}, job {}, failed repositories {}\n",
        r.label,
        r.secs,
        r.code,
        r.state(),
        r.failed_repos()
            .map(|n| n.to_string())
            .unwrap_or_else(|| "?".into())
    ));
    if let Ok(j) = &r.job {
        let p = &j["progress"];
        out.push_str(&format!(
            "repositories: {} total, {} done, {} snapshots, {} unchanged, {} skipped\n",
            p["repos_total"], p["repos_done"], p["snapshots"], p["unchanged"], p["skipped"]
        ));
    }
    if let Err(e) = &r.job {
        out.push_str(&format!("job: {e}\n"));
    }
    out.push_str(&format!(
        "server saw {} requests ({} git, {} without valid credentials)\n",
        r.requests, r.git_requests, r.unauthenticated
    ));
    out.push_str(&format!(
        "{:<20} {:>9} {:>16} {:>7}\n",
        "principal",
        "requests",
        format!("max in {w} s"),
        "429s"
    ));
    for (p, l) in &r.load {
        out.push_str(&format!(
            "{:<20} {:>9} {:>11} / {LIMIT:<2} {:>7}\n",
            p, l.requests, l.max_in_window, l.rate_limited
        ));
    }
    let counters = r
        .job
        .as_ref()
        .ok()
        .and_then(|j| j["progress"]["credentials"].as_array().cloned());
    match counters {
        None => out.push_str("job credential counters: none reported\n"),
        Some(cs) => {
            let width = cs
                .iter()
                .filter_map(|c| c["principal"].as_str().map(str::len))
                .max()
                .unwrap_or(9)
                .max(9);
            out.push_str(&format!(
                "{:<10} {:<width$} {:>9} {:>12} {:>10}  failed\n",
                "credential",
                "principal",
                "requests",
                "rate_limited",
                "cooldowns",
                width = width
            ));
            for c in cs {
                out.push_str(&format!(
                    "{:<10} {:<width$} {:>9} {:>12} {:>10}  {}\n",
                    c["credential"].as_str().unwrap_or("?"),
                    c["principal"].as_str().unwrap_or("?"),
                    c["requests"],
                    c["rate_limited"],
                    c["cooldowns"],
                    match &c["failed"] {
                        Value::Null => "-".to_string(),
                        v => v.to_string(),
                    },
                    width = width
                ));
            }
        }
    }
}

fn main() {
    let repos = env_u64("BENCH_CRED_REPOS", 300) as usize;
    let window_secs = env_u64("BENCH_RATE_WINDOW_SECS", 60).max(1);
    let concurrency = env_u64("BENCH_CRED_CONCURRENCY", 8).max(1);
    let window = Duration::from_secs(window_secs);
    let retry_base_ms = window_secs * 1000 / 2;
    let rate_arg = if window_secs == 60 {
        format!("{LIMIT}/min")
    } else {
        format!("{LIMIT}/{window_secs}s")
    };

    let server = CloudServer::start();
    let src = TempDir::new("bench-cred-src");
    let t = Instant::now();
    let opts = gitutil::FixtureOptions {
        repos,
        commits: 1,
        binary_bytes: 256,
        include_empty: false,
        ..gitutil::FixtureOptions::default()
    };
    gitutil::make_workspace_fixture_with(&server, WS, src.path(), &opts);
    eprintln!(
        "fixture of {repos} repositories built in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    for a in &ACCOUNTS {
        server.add_api_token(a.principal, a.email, a.token);
        server.grant(a.principal, WS);
    }
    server.set_rate_limit(Some(LIMIT));
    server.set_rate_limit_window(window);
    let bench = Bench {
        server,
        window,
        retry_base_ms,
        rate_arg,
        concurrency,
        files: TempDir::new("bench-cred-files"),
    };

    let data_a = bench.prepare("primary-only", false);
    let a = bench.timed_run("A (primary only)", data_a.path(), "primary-only");
    let data_b = bench.prepare("three-principals", true);
    let b = bench.timed_run(
        "B (primary + 2 additional)",
        data_b.path(),
        "three-principals",
    );

    let ratio = b.secs / a.secs;
    let allowed = (LIMIT as f64 * (1.0 + TOLERANCE)).floor() as usize;
    let mut report = format!(
        "# Additional credentials: {repos} repositories, limit {LIMIT} requests per principal \
         per {} s window\n\
         server window {} s; --rate-limit {}; REPOSAFE_RETRY_BASE_MS={}; plan concurrency {}\n",
        bench.window.as_secs(),
        bench.window.as_secs(),
        bench.rate_arg,
        bench.retry_base_ms,
        bench.concurrency
    );
    describe_run(&a, bench.window, &mut report);
    describe_run(&b, bench.window, &mut report);
    let principals_b = b.load.len();
    report.push_str(&format!(
        "\n## Results\n\
         {:<34} {:>10} {:>10}\n\
         {:<34} {:>10.1} {:>10.1}\n\
         {:<34} {:>10} {:>10}\n\
         {:<34} {:>10} {:>10}\n\
         {:<34} {:>10} {:>10}\n\
         {:<34} {:>10} {:>10}\n",
        "",
        "run A",
        "run B",
        "wall time (s)",
        a.secs,
        b.secs,
        "failed repositories",
        a.failed_repos()
            .map(|n| n.to_string())
            .unwrap_or("?".into()),
        b.failed_repos()
            .map(|n| n.to_string())
            .unwrap_or("?".into()),
        "principals seen by the server",
        a.load.len(),
        principals_b,
        format!("max requests of a principal/{}s", bench.window.as_secs()),
        a.max_in_window(),
        b.max_in_window(),
        "429s",
        a.load.values().map(|l| l.rate_limited).sum::<usize>(),
        b.load.values().map(|l| l.rate_limited).sum::<usize>(),
    ));
    let ok_ratio = ratio <= TARGET_RATIO;
    let ok_failed = [&a, &b]
        .iter()
        .all(|r| r.failed_repos() == Some(0) && r.code == 0);
    let ok_limit = [&a, &b].iter().all(|r| r.max_in_window() <= allowed);
    let ok_spread = principals_b == ACCOUNTS.len() && a.load.len() == 1;
    report.push_str(&format!(
        "time ratio B/A: {ratio:.3} (target <= {TARGET_RATIO}): {}\n\
         failed repositories: A {}, B {} (target 0 in both, exit code 0): {}\n\
         most requests of any principal in any {} s window: A {}, B {} \
         (target <= {allowed}, the limit {LIMIT} + {:.0}%): {}\n\
         principals used: A {}, B {} (expected 1 and 3): {}\n",
        pass(ok_ratio),
        a.failed_repos()
            .map(|n| n.to_string())
            .unwrap_or("?".into()),
        b.failed_repos()
            .map(|n| n.to_string())
            .unwrap_or("?".into()),
        pass(ok_failed),
        bench.window.as_secs(),
        a.max_in_window(),
        b.max_in_window(),
        TOLERANCE * 100.0,
        pass(ok_limit),
        a.load.len(),
        principals_b,
        pass(ok_spread),
    ));
    println!("{report}");
    drop(src);
    if !(ok_ratio && ok_failed && ok_limit && ok_spread) {
        std::process::exit(1);
    }
}
