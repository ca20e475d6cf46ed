//! End to end against the Bitbucket Data Center test double: the real binary, the
//! built-in `bitbucket-dc` WebAssembly provider, gix over the real `git http-backend`,
//! over TLS with a CA made in the test and a context path; per-project credentials,
//! certificate failures, the paging bug, 429 with Retry-After, Basic credentials.

mod common;

use common::*;
use reposafe_testkit::gitutil::WorkRepo;
use reposafe_testkit::{DcOptions, DcServer, TestCa};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const USER_TOKEN: &str = "BBDC-user-token-NjY3ODk0NTYxMjM0";
const ALPHA_TOKEN: &str = "BBDC-alpha-project-token-MTIzNDU2Nzg5MA";
const BETA_TOKEN: &str = "BBDC-beta-project-token-OTg3NjU0MzIxMA";
const PASSWORD: &str = "correct-horse-battery-staple-42";

/// A bare repository with a few branches and tags, made with real git.
fn make_repo(dir: &Path, name: &str, commits: usize) -> PathBuf {
    let bare = dir.join(format!("{name}.git"));
    gitutil::init_bare(&bare);
    let mut w = WorkRepo::new();
    for i in 0..commits {
        w.write(&format!("f{i}.txt"), format!("{name} {i}\n"));
        w.commit(&format!("{name} commit {i}"));
    }
    w.tag_annotated("v1", "release 1");
    w.branch("develop").checkout("develop");
    w.write("dev.txt", format!("{name} develop\n"));
    w.commit("on develop");
    w.tag_lightweight("dev-tag");
    w.push_mirror(&bare);
    bare
}

fn restore_and_compare(rs: &Reposafe, full_name: &str, source: &Path) {
    let out = TempDir::new("reposafe-dc-restore");
    let target = out.path().join("r.git");
    let target_s = target.display().to_string();
    rs.run(&["restore", full_name, "--to", &target_s]).ok();
    gitutil::fsck(&target);
    assert_eq!(
        gitutil::refs_of(&target),
        gitutil::refs_of(source),
        "refs of restored {full_name}"
    );
}

fn statuses(report: &serde_json::Value) -> BTreeMap<String, String> {
    report["repositories"]
        .as_array()
        .expect("repositories")
        .iter()
        .map(|r| {
            (
                r["full_name"].as_str().unwrap_or("?").to_string(),
                r["outcome"]["status"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

/// The final `error: ...` line of a failed command (not the debug log around it).
fn error_line(r: &Run) -> String {
    r.stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_no_secret(text: &str) {
    for s in [USER_TOKEN, ALPHA_TOKEN, BETA_TOKEN, PASSWORD] {
        assert!(!text.contains(s), "a secret appeared in output:\n{text}");
    }
}

#[test]
fn two_projects_with_own_tokens_over_tls_with_context_path_and_personal_repo() {
    let server = DcServer::start(DcOptions {
        context_path: "/bitbucket".into(),
        tls: true,
    });
    assert!(server.base_url().starts_with("https://127.0.0.1:"));
    assert!(server.base_url().ends_with("/bitbucket"));
    let src = TempDir::new("reposafe-dc-src");
    let mut sources: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (key, slug, commits) in [
        ("ALPHA", "api", 3),
        ("ALPHA", "web", 2),
        ("ALPHA", "docs", 1),
        ("BETA", "core", 4),
        ("BETA", "tools", 2),
        ("~jdoe", "scratch", 2),
    ] {
        let bare = make_repo(
            src.path(),
            &format!("{}-{slug}", key.trim_start_matches('~')),
            commits,
        );
        server.add_repo(key, slug, &bare, false);
        sources.insert(format!("{}/{slug}", key.to_ascii_uppercase()), bare);
    }
    // Pages of two values while `limit` says more: only nextPageStart is right.
    server.set_page_cap(2);
    server.add_user("jdoe", PASSWORD);
    server.add_user_token("jdoe", USER_TOKEN);
    // jdoe sees ALPHA (but ALPHA gets its own token) and his personal project; BETA
    // is only reachable with BETA's project token.
    server.grant("jdoe", "ALPHA");
    server.add_project_token("ALPHA", ALPHA_TOKEN);
    server.add_project_token("BETA", BETA_TOKEN);
    // Admin rights: webhooks, branch permissions and access keys are backed up too.
    for (who, key) in [
        ("token:ALPHA", "ALPHA"),
        ("token:BETA", "BETA"),
        ("jdoe", "~JDOE"),
    ] {
        server.grant_admin(who, key);
    }

    let rs = Reposafe::new();
    let ca = rs.files.path().join("corp-ca.pem");
    std::fs::write(&ca, server.ca_pem().expect("TLS server has a CA")).expect("write CA");
    let user_tok = rs.secret_file("user.tok", USER_TOKEN);
    let alpha_tok = rs.secret_file("alpha.tok", ALPHA_TOKEN);
    let beta_tok = rs.secret_file("beta.tok", BETA_TOKEN);
    let base = format!("base-url={}", server.base_url());
    let mut outputs = String::new();

    let add = rs
        .run(&[
            "connection",
            "add",
            "dc",
            "--name",
            "corp",
            "--set",
            &base,
            "--http-access-token-file",
            &user_tok.display().to_string(),
            "--ca-bundle",
            &ca.display().to_string(),
        ])
        .ok();
    outputs.push_str(&add.all());
    for (project, tok) in [("ALPHA", &alpha_tok), ("beta", &beta_tok)] {
        let r = rs
            .run(&[
                "connection",
                "credential",
                "add",
                "corp",
                "--project",
                project,
                "--http-access-token-file",
                &tok.display().to_string(),
            ])
            .ok();
        outputs.push_str(&r.all());
    }
    // A project token of another project is refused when verified.
    let wrong = rs.run(&[
        "connection",
        "credential",
        "add",
        "corp",
        "--project",
        "GAMMA",
        "--http-access-token-file",
        &alpha_tok.display().to_string(),
    ]);
    assert_ne!(wrong.code, 0, "{}", wrong.all());
    assert!(wrong.all().contains("GAMMA"), "{}", wrong.all());
    outputs.push_str(&wrong.all());

    let conns = rs.run(&["connection", "list"]).ok();
    assert!(
        conns.stdout.contains("ca-bundle=") && conns.stdout.contains("project-credentials=2"),
        "{}",
        conns.stdout
    );
    outputs.push_str(&conns.all());
    rs.run(&["connection", "test", "corp"]).ok();
    let list = rs.run(&["connection", "credential", "list", "corp"]).ok();
    outputs.push_str(&list.all());
    assert!(list.stdout.contains("project ALPHA"), "{}", list.stdout);
    assert!(list.stdout.contains("project BETA"), "{}", list.stdout);
    assert!(list.stdout.contains("********"), "{}", list.stdout);
    assert!(!list.stdout.contains("GAMMA"), "{}", list.stdout);

    server.clear_log();
    let backup = rs.run(&["backup", "corp", "--json"]).ok();
    outputs.push_str(&backup.all());
    let report: serde_json::Value = serde_json::from_str(&backup.stdout).expect("JSON report");
    let got = statuses(&report);
    let want: BTreeMap<String, String> = sources
        .keys()
        .map(|k| (k.clone(), "snapshot".to_string()))
        .collect();
    assert_eq!(got, want, "{}", backup.all());

    // Each project's listing and git fetches used that project's credential.
    let log = server.request_log();
    let principals = |needle: &str| -> Vec<String> {
        log.iter()
            .filter(|r| r.path.contains(needle))
            .map(|r| r.principal.clone().unwrap_or_default())
            .collect()
    };
    for (needle, who) in [
        ("/projects/ALPHA/repos", "token:ALPHA"),
        ("/scm/alpha/", "token:ALPHA"),
        ("/projects/BETA/repos", "token:BETA"),
        ("/scm/beta/", "token:BETA"),
        ("/scm/~jdoe/", "token:jdoe"),
    ] {
        let p = principals(needle);
        assert!(!p.is_empty(), "no request to {needle}");
        assert!(p.iter().all(|x| x == who), "{needle}: {p:?}");
    }
    assert!(log.iter().all(|r| r.path.starts_with("/bitbucket/")));
    // Paging went through nextPageStart (ALPHA has 3 repositories, 2 per page).
    assert!(log
        .iter()
        .any(|r| r.path.contains("/projects/ALPHA/repos?start=2&")));

    for (full_name, source) in &sources {
        restore_and_compare(&rs, full_name, source);
    }

    // A second run stores nothing.
    let again = rs.run(&["backup", "corp", "--json"]).ok();
    outputs.push_str(&again.all());
    let report: serde_json::Value = serde_json::from_str(&again.stdout).expect("JSON report");
    assert!(statuses(&report).values().all(|s| s == "unchanged"));

    // Removing a project's credential makes BETA unreachable again.
    rs.run(&[
        "connection",
        "credential",
        "remove",
        "corp",
        "--project",
        "Beta",
    ])
    .ok();
    let after = rs.run(&["backup", "corp", "--json"]).ok();
    let report: serde_json::Value = serde_json::from_str(&after.stdout).expect("JSON report");
    assert!(!statuses(&report).keys().any(|k| k.starts_with("BETA/")));

    assert_no_secret(&outputs);
    assert_not_on_disk(rs.data_dir(), USER_TOKEN);
    assert_not_on_disk(rs.data_dir(), ALPHA_TOKEN);
    assert_not_on_disk(rs.data_dir(), BETA_TOKEN);
}

#[test]
fn missing_or_wrong_ca_bundle_is_a_certificate_problem_and_insecure_warns() {
    let server = DcServer::start(DcOptions {
        context_path: String::new(),
        tls: true,
    });
    let src = TempDir::new("reposafe-dc-src");
    let bare = make_repo(src.path(), "one", 1);
    server.add_repo("PRJ", "one", &bare, false);
    server.add_user_token("jdoe", USER_TOKEN);
    server.grant("jdoe", "PRJ");
    server.grant_admin("jdoe", "PRJ");
    let rs = Reposafe::new();
    let tok = rs.secret_file("user.tok", USER_TOKEN);
    let tok_s = tok.display().to_string();
    let base = format!("base-url={}", server.base_url());
    let add = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "connection",
            "add",
            "dc",
            "--name",
            name,
            "--set",
            &base,
            "--http-access-token-file",
            &tok_s,
        ];
        args.extend_from_slice(extra);
        rs.run(&args)
    };

    // Wrong CA: verification at `connection add` fails and says why, naming the bundle.
    let wrong = rs.files.path().join("other-ca.pem");
    std::fs::write(&wrong, TestCa::new("some other CA").ca_pem()).expect("write");
    let r = add("wrong", &["--ca-bundle", &wrong.display().to_string()]);
    assert_ne!(r.code, 0);
    assert_no_secret(&r.all());
    let all = error_line(&r);
    assert!(all.contains("certificate problem"), "{all}");
    assert!(all.contains("other-ca.pem"), "{all}");
    assert!(all.contains("connection wrong"), "{all}");

    // No CA bundle: stored unverified, the backup fails as a whole and says why.
    add("nobundle", &["--no-verify"]).ok();
    let r = rs.run(&["backup", "nobundle"]);
    assert_ne!(r.code, 0);
    assert_no_secret(&r.all());
    let all = error_line(&r);
    assert!(all.contains("certificate problem"), "{all}");
    assert!(all.contains("nobundle"), "{all}");
    assert!(all.contains("--ca-bundle"), "{all}");

    // Fixing the trust later: a wrong bundle is refused when verified, the right one works.
    let r = rs.run(&[
        "connection",
        "tls",
        "nobundle",
        "--ca-bundle",
        &wrong.display().to_string(),
    ]);
    assert_ne!(r.code, 0);
    assert!(
        error_line(&r).contains("certificate problem"),
        "{}",
        r.all()
    );
    let right = rs.files.path().join("right-ca.pem");
    std::fs::write(&right, server.ca_pem().expect("TLS server")).expect("write");
    rs.run(&[
        "connection",
        "tls",
        "nobundle",
        "--ca-bundle",
        &right.display().to_string(),
    ])
    .ok();
    let r = rs.run(&["backup", "nobundle"]).ok();
    assert_no_secret(&r.all());
    rs.run(&[
        "connection",
        "tls",
        "nobundle",
        "--system-roots",
        "--no-verify",
    ])
    .ok();
    assert_ne!(rs.run(&["backup", "nobundle"]).code, 0);

    // A bundle that is not PEM is refused at once, naming the file.
    let junk = rs.files.path().join("junk.pem");
    std::fs::write(&junk, "this is not a certificate\n").expect("write");
    let r = add("junk", &["--ca-bundle", &junk.display().to_string()]);
    assert_ne!(r.code, 0);
    let err = error_line(&r);
    assert!(
        err.contains("junk.pem") && err.contains("no PEM certificate"),
        "{err}"
    );

    // Insecure works, and warns on every use.
    let r = add("insecure", &["--insecure-skip-tls-verify"]).ok();
    assert!(
        r.all().contains("does not verify TLS certificates"),
        "{}",
        r.all()
    );
    let r = rs.run(&["backup", "insecure"]).ok();
    assert!(
        r.all().contains("does not verify TLS certificates"),
        "{}",
        r.all()
    );
    assert_no_secret(&r.all());
    let restore_target = TempDir::new("reposafe-dc-restore");
    let target = restore_target.path().join("one.git");
    rs.run(&[
        "restore",
        "PRJ/one",
        "--connection",
        "insecure",
        "--to",
        &target.display().to_string(),
    ])
    .ok();
    gitutil::fsck(&target);
    assert_eq!(gitutil::refs_of(&target), gitutil::refs_of(&bare));
}

#[test]
fn paging_bug_ends_listing_429s_are_waited_out_and_basic_auth_works() {
    let server = DcServer::start(DcOptions {
        context_path: "/bb".into(),
        tls: false,
    });
    let src = TempDir::new("reposafe-dc-src");
    let mut sources = BTreeMap::new();
    for slug in ["r1", "r2", "r3", "r4", "r5"] {
        let bare = make_repo(src.path(), slug, 1);
        server.add_repo("LOOP", slug, &bare, true);
        sources.insert(format!("LOOP/{slug}"), bare);
    }
    server.set_page_cap(2);
    server.omit_next_page_start("LOOP");
    server.add_user("alice", PASSWORD);
    server.grant("alice", "LOOP");
    server.grant_admin("alice", "LOOP");

    let rs = Reposafe::new();
    let pw = rs.secret_file("pw.txt", PASSWORD);
    let base = format!("base-url={}", server.base_url());
    rs.run(&[
        "connection",
        "add",
        "dc",
        "--name",
        "plain",
        "--set",
        &base,
        "--set",
        "personal-repositories=false",
        "--username",
        "alice",
        "--password-file",
        &pw.display().to_string(),
    ])
    .ok();

    server.clear_log();
    server.fail_api_with_429(2, 1);
    server.fail_git_with_429(1, 1);
    let t = Instant::now();
    let r = rs.run(&["backup", "plain", "--json"]).ok();
    let took = t.elapsed();
    let all = r.all();
    assert_no_secret(&all);
    // The paging bug: the first page's two repositories, then a logged stop.
    let report: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON report");
    let got = statuses(&report);
    assert_eq!(got.len(), 2, "{all}");
    assert!(got.values().all(|s| s == "snapshot"), "{all}");
    assert!(all.contains("nextPageStart"), "{all}");
    let listings = server
        .request_log()
        .iter()
        .filter(|l| {
            let listing = l.path.split('?').next().unwrap_or("");
            listing.ends_with("/projects/LOOP/repos") && l.status == 200
        })
        .count();
    assert_eq!(listings, 1, "one page, no loop");
    // 429 with Retry-After: 1 s, twice for the API and once for git: waited, and said so.
    assert!(all.contains("rate limited, waiting 1 s"), "{all}");
    assert!(all.contains("rate limited (git), waiting"), "{all}");
    assert!(took >= Duration::from_secs(2), "waited only {took:?}");
    assert!(
        report["rate_limited"].as_u64().unwrap_or(0) >= 3,
        "{report}"
    );
    // Basic for the API and git; the clone link's user name was stripped.
    assert!(server
        .request_log()
        .iter()
        .filter(|l| l.is_git)
        .all(|l| l.principal.as_deref() == Some("alice")));
    for full_name in got.keys() {
        restore_and_compare(&rs, full_name, &sources[full_name]);
    }
}

/// A git 429's `Retry-After` is what the fetch waits (the back-off without one is 20 ms
/// here), said in the job's progress, and the fetch then succeeds.
#[test]
fn a_git_429_waits_what_its_retry_after_asks() {
    let server = DcServer::start(DcOptions {
        context_path: "/bb".into(),
        tls: false,
    });
    let src = TempDir::new("reposafe-dc-src");
    let bare = make_repo(src.path(), "wait", 2);
    server.add_repo("WAIT", "wait", &bare, true);
    server.add_user("alice", PASSWORD);
    server.grant("alice", "WAIT");
    server.grant_admin("alice", "WAIT");

    let rs = Reposafe::new();
    let pw = rs.secret_file("pw.txt", PASSWORD);
    let base = format!("base-url={}", server.base_url());
    rs.run(&[
        "connection",
        "add",
        "dc",
        "--name",
        "waiting",
        "--set",
        &base,
        "--set",
        "personal-repositories=false",
        "--username",
        "alice",
        "--password-file",
        &pw.display().to_string(),
    ])
    .ok();

    server.clear_log();
    server.fail_git_with_429(1, 2);
    let r = rs.run(&["backup", "waiting", "--json"]).ok();
    let all = r.all();
    assert_no_secret(&all);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON report");
    assert_eq!(
        statuses(&report).get("WAIT/wait").map(String::as_str),
        Some("snapshot"),
        "{all}"
    );
    assert!(all.contains("rate limited (git), waiting 2 s"), "{all}");
    assert!(report["rate_limited"].as_u64() >= Some(1), "{report}");
    let git: Vec<_> = server
        .request_log()
        .into_iter()
        .filter(|l| l.is_git)
        .collect();
    let limited = git
        .iter()
        .position(|l| l.status == 429)
        .expect("a git request was answered 429");
    let next = git
        .get(limited + 1)
        .expect("the fetch went on after the 429");
    let waited = next.timestamp.duration_since(git[limited].timestamp);
    assert!(
        waited >= Duration::from_millis(1900),
        "the next git request came {waited:?} after the 429 (Retry-After: 2)"
    );
    restore_and_compare(&rs, "WAIT/wait", &bare);
}
