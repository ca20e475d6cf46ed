//! Additional credentials (issue 5), end to end through the real binary against the Cloud
//! test double: adding (with the same-principal warning) and listing masked, spreading a
//! plan's requests over several principals within their rate limit, a revoked credential
//! failing alone, and plans that do not enable additional credentials using only the primary.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use reposafe_testkit::{FixtureOptions, FixtureRepo};
use serde_json::Value;

const WS: &str = "acme";
const REPOS: usize = 18;
/// The test server's limit per principal and window, and the product's `--rate-limit`.
const LIMIT: u32 = 10;
const WINDOW_SECS: u64 = 2;

/// An account of the test server with one API token.
struct Account {
    principal: &'static str,
    email: &'static str,
    token: &'static str,
}

const ALICE: Account = Account {
    principal: "acct-alice-7f3",
    email: "alice@acme.test",
    token: "ATATT3x-alice-primary-token-0a9b8c",
};
/// A second API token of Alice's account: the same principal.
const ALICE_SECOND: Account = Account {
    principal: "acct-alice-7f3",
    email: "alice@acme.test",
    token: "ATATT3x-alice-second-token-71d2e4",
};
const BOB: Account = Account {
    principal: "acct-bob-19c",
    email: "bob@acme.test",
    token: "ATATT3x-bob-token-55f0aa",
};
const CAROL: Account = Account {
    principal: "acct-carol-5d2",
    email: "carol@acme.test",
    token: "ATATT3x-carol-token-e3c911",
};
const ALL: [&Account; 4] = [&ALICE, &ALICE_SECOND, &BOB, &CAROL];

struct World {
    server: CloudServer,
    _src: TempDir,
    repos: Vec<FixtureRepo>,
    rs: Reposafe,
    /// Every output of the binary so far (checked for secrets at the end).
    outputs: Vec<String>,
    rate_limited: bool,
}

impl World {
    /// A workspace of [`REPOS`] small repositories, the four tokens registered, and a
    /// connection whose primary credential is Alice's first token; with `rate_limit`, the
    /// server limits each principal to [`LIMIT`] requests per [`WINDOW_SECS`] and the
    /// connection is told so.
    fn new(rate_limit: bool) -> World {
        World::with_limits(rate_limit, rate_limit)
    }

    /// `server_limit`: the server limits each principal; `tell_product`: the connection
    /// gets `--rate-limit` (without it the product only learns of the limit from 429s).
    fn with_limits(server_limit: bool, tell_product: bool) -> World {
        let server = CloudServer::start();
        let src = TempDir::new("reposafe-cred-src");
        let opts = FixtureOptions {
            repos: REPOS,
            commits: 2,
            binary_bytes: 1024,
            ..FixtureOptions::default()
        };
        let repos = gitutil::make_workspace_fixture_with(&server, WS, src.path(), &opts);
        for a in ALL {
            server.add_api_token(a.principal, a.email, a.token);
            server.grant(a.principal, WS);
        }
        if server_limit {
            server.set_rate_limit(Some(LIMIT));
            server.set_rate_limit_window(Duration::from_secs(WINDOW_SECS));
        }
        let mut w = World {
            server,
            _src: src,
            repos,
            rs: Reposafe::new(),
            outputs: Vec::new(),
            rate_limited: server_limit,
        };
        let tok = w.rs.secret_file("primary", ALICE.token);
        let tok = tok.display().to_string();
        let mut cred = vec!["--api-token-email", ALICE.email, "--api-token-file", &tok];
        let limit = format!("{LIMIT}/{WINDOW_SECS}s");
        if tell_product {
            cred.extend(["--rate-limit", &limit]);
        }
        let args = cloud_add_args(&w.server, &["--workspace", WS], &cred);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        w.run(&args).ok();
        w
    }

    fn run(&mut self, args: &[&str]) -> Run {
        let r = self.rs.run(args);
        self.outputs.push(r.all());
        r
    }

    /// `connection credential add acme --additional` with `a`'s token.
    fn add_additional(&mut self, a: &Account, label: &str) -> Run {
        let file = self.rs.secret_file(label, a.token);
        let file = file.display().to_string();
        self.run(&[
            "connection",
            "credential",
            "add",
            WS,
            "--additional",
            "--label",
            label,
            "--api-token-email",
            a.email,
            "--api-token-file",
            &file,
        ])
    }

    /// Adds `a` and returns the id printed in `added additional credential <ID> (...`.
    fn add_additional_ok(&mut self, a: &Account, label: &str) -> (String, Run) {
        let r = self.add_additional(a, label).ok();
        (added_id(&r.stdout), r)
    }

    /// Starts every principal's window afresh and clears the request log, so that the log
    /// holds exactly what the next command sends (the setup's verification requests are
    /// not part of what a run is measured on; waiting one window would do the same).
    fn fresh_window(&self) {
        if self.rate_limited {
            self.server.set_rate_limit(Some(LIMIT));
        }
        self.server.clear_log();
    }

    /// `run --plan NAME --json`: (exit code, job JSON).
    fn run_plan(&mut self, plan: &str) -> (i32, Value) {
        self.run_plan_with_retry_base(plan, None)
    }

    /// Like [`run_plan`](Self::run_plan), with `REPOSAFE_RETRY_BASE_MS` (the first
    /// cool-down) set to `retry_base_ms` instead of the tests' 20 ms.
    fn run_plan_with_retry_base(&mut self, plan: &str, retry_base_ms: Option<u64>) -> (i32, Value) {
        let mut cmd = self.rs.cmd(&["run", "--plan", plan, "--json"]);
        if let Some(ms) = retry_base_ms {
            cmd.env("REPOSAFE_RETRY_BASE_MS", ms.to_string());
        }
        let out = cmd.output().expect("run reposafe");
        let r = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        self.outputs.push(r.all());
        let job: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| {
            panic!(
                "run --json printed no job JSON ({e})\nstdout:\n{}\nstderr:\n{}",
                r.stdout, r.stderr
            )
        });
        (r.code, job)
    }

    /// No secret in any output so far, nor in clear on disk.
    fn assert_no_secret_leaked(&self) {
        for a in ALL {
            for out in &self.outputs {
                assert!(
                    !out.contains(a.token),
                    "the token of {} appeared in output:\n{out}",
                    a.email
                );
            }
            assert_not_on_disk(self.rs.data_dir(), a.token);
        }
    }

    /// Restores every repository and compares it ref by ref with its source.
    fn assert_all_restorable(&mut self) {
        let out = TempDir::new("reposafe-cred-restore");
        let repos: Vec<(String, PathBuf)> = self
            .repos
            .iter()
            .map(|r| (r.slug.clone(), r.path.clone()))
            .collect();
        for (slug, path) in repos {
            let target = out.path().join(format!("{slug}.git"));
            let target_s = target.display().to_string();
            self.run(&["restore", &format!("{WS}/{slug}"), "--to", &target_s])
                .ok();
            gitutil::fsck(&target);
            assert_eq!(gitutil::refs_of(&target), gitutil::refs_of(&path), "{slug}");
        }
    }
}

/// The id in `added additional credential <ID> (<kind> <identity>) of connection ...`.
fn added_id(stdout: &str) -> String {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("added additional credential "))
        .unwrap_or_else(|| panic!("no `added additional credential` line in:\n{stdout}"));
    line["added additional credential ".len()..]
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("no id in {line:?}"))
        .to_string()
}

/// The principal in `added additional credential ... of connection C; principal <P>`.
fn added_principal(stdout: &str) -> String {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("added additional credential "))
        .unwrap_or_else(|| panic!("no `added additional credential` line in:\n{stdout}"));
    let p = line
        .split_once(&format!(" of connection {WS}; principal "))
        .map(|(_, p)| p.trim().to_string())
        .unwrap_or_else(|| panic!("no `of connection {WS}; principal P` in {line:?}"));
    assert!(!p.is_empty() && p != "?", "{line:?}");
    p
}

/// Whether `line` has `word` as one of its words (ignoring `:,()[]` around it).
fn has_token(line: &str, word: &str) -> bool {
    line.split_whitespace()
        .any(|t| t.trim_matches(|c: char| ":,()[]".contains(c)) == word)
}

/// `job.progress.credentials`.
fn credential_counters(job: &Value) -> Vec<Value> {
    job["progress"]["credentials"]
        .as_array()
        .unwrap_or_else(|| panic!("job.progress.credentials is not a list: {job:#}"))
        .clone()
}

fn counter<'a>(counters: &'a [Value], id: &str) -> &'a Value {
    counters
        .iter()
        .find(|c| c["credential"] == id)
        .unwrap_or_else(|| panic!("no counters for credential {id}: {counters:#?}"))
}

/// Asserts the job backed up all [`REPOS`] repositories without a failure.
fn assert_job_complete(code: i32, job: &Value) {
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert_eq!(code, 0, "{job:#}");
    let p = &job["progress"];
    assert_eq!(p["failed"], 0, "{job:#}");
    assert_eq!(p["repos_total"], REPOS as u64, "{job:#}");
    assert_eq!(p["repos_done"], REPOS as u64, "{job:#}");
    assert_eq!(p["snapshots"], REPOS as u64, "{job:#}");
}

fn principals_in_log(server: &CloudServer) -> BTreeSet<String> {
    server
        .request_log()
        .into_iter()
        .filter_map(|r| r.principal)
        .collect()
}

/// (a) A second token of the same account is accepted with a `same principal` warning; a
/// wrong token is refused and nothing is stored; list, disable, enable and remove show
/// every credential masked; no secret appears anywhere.
#[test]
fn additional_credentials_add_list_same_principal_warning_masked() {
    let mut w = World::new(false);

    // A wrong token: refused, named, not stored.
    let bad = Account {
        principal: "none",
        email: BOB.email,
        token: "ATATT3x-wrong-token-000000",
    };
    let r = w.add_additional(&bad, "wrong");
    assert_ne!(r.code, 0, "a wrong token must be refused:\n{}", r.all());
    assert!(
        r.stderr.to_lowercase().contains("credential") || r.stderr.contains(bad.email),
        "the error must say which credential was refused:\n{}",
        r.stderr
    );
    assert!(!r.all().contains(bad.token), "{}", r.all());

    let (same_id, same) = w.add_additional_ok(&ALICE_SECOND, "alice-2");
    let alice_principal = added_principal(&same.stdout);
    let warning = same
        .stderr
        .lines()
        .find(|l| l.starts_with("warning: "))
        .unwrap_or_else(|| panic!("no warning on stderr:\n{}", same.stderr));
    assert!(warning.contains("same principal"), "{warning}");

    let (bob_id, bob) = w.add_additional_ok(&BOB, "bob");
    assert_ne!(bob_id, same_id);
    let bob_principal = added_principal(&bob.stdout);
    assert_ne!(bob_principal, alice_principal, "Bob is another account");
    assert!(
        !bob.stderr.contains("same principal"),
        "Bob is another principal:\n{}",
        bob.stderr
    );

    let list = w.run(&["connection", "credential", "list", WS]).ok().stdout;
    let line_of = |list: &str, id: &str| -> String {
        list.lines()
            .find(|l| has_token(l, id))
            .unwrap_or_else(|| panic!("no line for {id} in:\n{list}"))
            .to_string()
    };
    let primary = line_of(&list, "primary");
    assert!(has_token(&primary, &alice_principal), "{list}");
    let same_line = line_of(&list, &same_id);
    assert!(has_token(&same_line, &alice_principal), "{list}");
    assert!(same_line.contains("enabled"), "{list}");
    let bob_line = line_of(&list, &bob_id);
    assert!(has_token(&bob_line, &bob_principal), "{list}");
    assert!(bob_line.contains("enabled"), "{list}");
    assert!(
        !list.contains("wrong"),
        "the refused one is not stored:\n{list}"
    );

    w.run(&["connection", "credential", "disable", WS, &bob_id])
        .ok();
    let list = w.run(&["connection", "credential", "list", WS]).ok().stdout;
    assert!(line_of(&list, &bob_id).contains("disabled"), "{list}");
    w.run(&["connection", "credential", "enable", WS, &bob_id])
        .ok();
    let list = w.run(&["connection", "credential", "list", WS]).ok().stdout;
    let bob_line = line_of(&list, &bob_id);
    assert!(
        bob_line.contains("enabled") && !bob_line.contains("disabled"),
        "{list}"
    );

    w.run(&["connection", "credential", "remove", WS, "--id", &same_id])
        .ok();
    let list = w.run(&["connection", "credential", "list", WS]).ok().stdout;
    assert!(
        !list.lines().any(|l| has_token(l, &same_id)),
        "{same_id} was removed:\n{list}"
    );
    line_of(&list, &bob_id);
    let unknown = w.run(&["connection", "credential", "disable", WS, "c999"]);
    assert_ne!(unknown.code, 0);
    assert!(unknown.stderr.contains("c999"), "{}", unknown.stderr);

    w.assert_no_secret_leaked();
}

/// (a2) Bitbucket counts app passwords and API tokens against the user: an app password
/// of the account whose API token is the primary credential adds no budget either, and
/// `GET /2.0/user` shows it is the same account, so adding it must warn.
#[test]
fn app_password_of_the_same_account_is_the_same_principal() {
    let mut w = World::new(false);
    w.server
        .add_app_password(ALICE.principal, "alice", "alice-app-password-9f8e7d");
    let file = w.rs.secret_file("alice-app", "alice-app-password-9f8e7d");
    let file = file.display().to_string();
    let r = w
        .run(&[
            "connection",
            "credential",
            "add",
            WS,
            "--additional",
            "--app-password-user",
            "alice",
            "--app-password-file",
            &file,
        ])
        .ok();
    assert!(
        r.stderr
            .lines()
            .any(|l| l.starts_with("warning: ") && l.contains("same principal")),
        "the app password is Alice's account (GET /2.0/user says {}), yet no warning:\n{}",
        ALICE.principal,
        r.all()
    );
    assert!(!r.all().contains("alice-app-password-9f8e7d"));
}

/// (b) A plan with two additional credentials and a rate limit backs up everything; every
/// principal carries part of the load, none goes over its limit, and the job counts
/// requests per credential.
#[test]
fn plan_with_additional_credentials_spreads_load_within_limit() {
    let mut w = World::new(true);
    let (bob_id, _) = w.add_additional_ok(&BOB, "bob");
    let (carol_id, _) = w.add_additional_ok(&CAROL, "carol");
    w.run(&[
        "plan",
        "add",
        "spread",
        "--connection",
        WS,
        "--additional-credentials",
        "all",
    ])
    .ok();
    w.fresh_window();
    let (code, job) = w.run_plan("spread");
    assert_job_complete(code, &job);

    let principals = principals_in_log(&w.server);
    let expected: BTreeSet<String> = [ALICE.principal, BOB.principal, CAROL.principal]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(principals, expected, "every principal must carry load");
    let load = w.server.principal_load();
    for (p, l) in &load {
        assert!(
            l.max_in_window <= LIMIT as usize,
            "{p} sent {} requests within {WINDOW_SECS} s (limit {LIMIT}): {load:#?}",
            l.max_in_window
        );
        assert_eq!(l.rate_limited, 0, "{p} got 429s: {load:#?}");
    }
    let git_principals: BTreeSet<String> = w
        .server
        .request_log()
        .into_iter()
        .filter(|r| r.is_git && r.status == 200)
        .filter_map(|r| r.principal)
        .collect();
    assert_eq!(
        git_principals, expected,
        "git fetches must be spread over every principal"
    );

    let counters = credential_counters(&job);
    eprintln!(
        "server: {:#?}\njob credentials: {counters:#?}",
        w.server.principal_load()
    );
    let mut job_principals = BTreeSet::new();
    for id in ["primary", bob_id.as_str(), carol_id.as_str()] {
        let c = counter(&counters, id);
        assert!(c["requests"].as_u64().unwrap_or(0) > 0, "{c:#}");
        assert_eq!(c["rate_limited"], 0, "{c:#}");
        assert!(c["failed"].is_null(), "{c:#}");
        let p = c["principal"].as_str().unwrap_or_default();
        assert!(!p.is_empty(), "{c:#}");
        job_principals.insert(p.to_string());
    }
    assert_eq!(
        job_principals.len(),
        3,
        "three distinct principals: {counters:#?}"
    );
    // The counters agree with what the server saw: no fewer than the authenticated
    // requests it logged (a little slack), no more than all requests it logged.
    let total_counted: u64 = counters
        .iter()
        .map(|c| c["requests"].as_u64().unwrap_or(0))
        .sum();
    let total_seen: usize = load.values().map(|l| l.requests).sum();
    assert!(
        total_counted as usize >= total_seen.saturating_sub(6)
            && total_counted as usize <= w.server.request_log().len(),
        "job counted {total_counted} requests, server saw {total_seen} authenticated \
         ({} in all): {counters:#?}",
        w.server.request_log().len()
    );

    w.assert_all_restorable();
    w.assert_no_secret_leaked();
}

/// (c) An additional credential revoked after it was added answers 401: it is marked
/// failed for the job with a reason, it is not retried as if the failure were
/// transient, and the job succeeds with the others.
#[test]
fn revoked_additional_credential_fails_alone() {
    let mut w = World::new(true);
    let (bob_id, _) = w.add_additional_ok(&BOB, "bob");
    let (carol_id, _) = w.add_additional_ok(&CAROL, "carol");
    w.run(&[
        "plan",
        "add",
        "revoked",
        "--connection",
        WS,
        "--additional-credentials",
        "all",
        "--concurrency",
        "2",
    ])
    .ok();
    assert_eq!(w.server.revoke_token(CAROL.token), 1);
    w.fresh_window();
    let (code, job) = w.run_plan("revoked");
    assert_job_complete(code, &job);

    let counters = credential_counters(&job);
    eprintln!(
        "server: {:#?}\njob credentials: {counters:#?}",
        w.server.principal_load()
    );
    let carol = counter(&counters, &carol_id);
    let reason = carol["failed"]
        .as_str()
        .unwrap_or_else(|| panic!("the revoked credential is not marked failed: {carol:#}"));
    assert!(!reason.trim().is_empty(), "{carol:#}");
    assert!(!reason.contains(CAROL.token), "{reason}");
    for id in ["primary", bob_id.as_str()] {
        let c = counter(&counters, id);
        assert!(c["failed"].is_null(), "{c:#}");
        assert!(c["requests"].as_u64().unwrap_or(0) > 0, "{c:#}");
    }

    let log = w.server.request_log();
    let rejected = log
        .iter()
        .filter(|r| r.revoked_principal.as_deref() == Some(CAROL.principal))
        .count();
    assert!(rejected >= 1, "the revoked token was never tried: {log:#?}");
    // At most what was in flight when the first 401 came back (2 repositories, each
    // API + git), never a retry loop.
    assert!(
        rejected <= 4,
        "the revoked token was tried {rejected} times: a 401 is not transient"
    );
    assert!(
        !principals_in_log(&w.server).contains(CAROL.principal),
        "nothing was admitted for the revoked credential"
    );
    w.assert_no_secret_leaked();
}

/// (d) A plan that does not enable additional credentials uses only the primary one,
/// though two are stored and enabled on the connection.
#[test]
fn plan_without_additional_credentials_uses_only_the_primary() {
    let mut w = World::new(true);
    w.add_additional_ok(&BOB, "bob");
    w.add_additional_ok(&CAROL, "carol");
    w.run(&["plan", "add", "primary-only", "--connection", WS])
        .ok();
    w.fresh_window();
    let (code, job) = w.run_plan("primary-only");
    assert_job_complete(code, &job);
    let log = w.server.request_log();
    assert!(!log.is_empty());
    let principals = principals_in_log(&w.server);
    assert_eq!(
        principals,
        BTreeSet::from([ALICE.principal.to_string()]),
        "only the primary credential may be used"
    );
    assert!(
        log.iter().all(|r| r.revoked_principal.is_none()),
        "{log:#?}"
    );
    let load = w.server.principal_load();
    let alice = &load[ALICE.principal];
    assert!(
        alice.max_in_window <= LIMIT as usize && alice.rate_limited == 0,
        "{load:#?}"
    );
    let counters = credential_counters(&job);
    eprintln!(
        "server: {:#?}\njob credentials: {counters:#?}",
        w.server.principal_load()
    );
    let primary = counter(&counters, "primary");
    assert!(primary["requests"].as_u64().unwrap_or(0) > 0, "{primary:#}");
    for c in counters.iter().filter(|c| c["credential"] != "primary") {
        assert_eq!(c["requests"], 0, "unused credentials send nothing: {c:#}");
    }
    w.assert_no_secret_leaked();
}

/// (e) Without `--rate-limit` the product learns of the limit from 429s: a principal that
/// gets one cools down, its work moves to the others, and the job still backs up every
/// repository; the job's 429 counters match what the server answered.
#[test]
fn rate_limited_principals_cool_down_and_the_job_completes() {
    let mut w = World::with_limits(true, false);
    let (bob_id, _) = w.add_additional_ok(&BOB, "bob");
    let (carol_id, _) = w.add_additional_ok(&CAROL, "carol");
    w.run(&[
        "plan",
        "add",
        "unpaced",
        "--connection",
        WS,
        "--additional-credentials",
        "all",
    ])
    .ok();
    w.fresh_window();
    // Cool-downs start at 1 s (Cloud's 429 has no Retry-After), the window is 2 s.
    let (code, job) = w.run_plan_with_retry_base("unpaced", Some(1000));
    assert_job_complete(code, &job);
    let load = w.server.principal_load();
    for r in w.server.request_log().iter().filter(|r| r.status == 429) {
        eprintln!(
            "429: {} {} git={} {:?}",
            r.method, r.path, r.is_git, r.principal
        );
    }
    if let Some(out) = w.outputs.last() {
        for l in out.lines().filter(|l| {
            let l = l.to_ascii_lowercase();
            (l.contains("429") || l.contains("rate") || l.contains("retry")) && !l.contains("debug")
        }) {
            eprintln!("reposafe: {l}");
        }
    }
    let total_429: usize = load.values().map(|l| l.rate_limited).sum();
    assert!(
        total_429 >= 1,
        "{} requests for 3 principals of {LIMIT} per {WINDOW_SECS} s must meet a 429: {load:#?}",
        w.server.request_log().len()
    );
    let counters = credential_counters(&job);
    eprintln!(
        "server: {:#?}\njob credentials: {counters:#?}",
        w.server.principal_load()
    );
    let mut cooldowns = 0;
    for (id, principal) in [
        ("primary", ALICE.principal),
        (bob_id.as_str(), BOB.principal),
        (carol_id.as_str(), CAROL.principal),
    ] {
        let c = counter(&counters, id);
        let seen = load.get(principal).map(|l| l.rate_limited).unwrap_or(0);
        assert_eq!(
            c["rate_limited"].as_u64(),
            Some(seen as u64),
            "the job's 429 count of {id} differs from the server's: {c:#} vs {load:#?}"
        );
        assert!(c["failed"].is_null(), "a 429 is not a failure: {c:#}");
        cooldowns += c["cooldowns"].as_u64().unwrap_or(0);
    }
    assert!(cooldowns >= 1, "no cool-down recorded: {counters:#?}");
    w.assert_no_secret_leaked();
}
