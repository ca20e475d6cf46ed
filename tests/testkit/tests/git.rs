//! Git over HTTP through the Cloud double (real `git http-backend`): mirror clones with
//! every credential scheme, protocol v0/v2, gzip request bodies, pushes, auth failures,
//! rate limits, and the workspace fixture.

mod common;

use std::path::Path;
use std::time::Instant;

use common::*;
use reposafe_testkit::gitutil::{self, fsck, git, refs_of, try_git, EMPTY_REPO_SLUG};
use reposafe_testkit::{CloudServer, RepoMeta, TempDir, WorkRepo};

/// A source repository with branches, both tag kinds, a binary file and enough distinct
/// refs that the client's upload-pack request exceeds 1 KiB (so git gzips it).
fn source_repo(bare: &Path) -> WorkRepo {
    let mut w = WorkRepo::with_fixed_dates(1_700_000_000);
    w.write("README.md", "hello\n")
        .write("bin/blob.bin", gitutil::pseudo_random_bytes(7, 2 << 20));
    w.commit("initial");
    w.tag_annotated("v1.0", "first release");
    w.branch("develop").checkout("develop");
    w.write("dev.txt", "dev\n");
    w.commit("dev work");
    w.tag_lightweight("dev-lw");
    w.checkout("main");
    for i in 0..30 {
        w.write("counter.txt", format!("{i}\n"));
        w.commit(&format!("step {i}"));
        w.branch(&format!("feature/f{i:02}"));
    }
    init_bare_at(bare);
    w.push_mirror(bare);
    w
}

fn init_bare_at(p: &Path) {
    gitutil::init_bare(p);
}

fn header_arg(auth: &str) -> String {
    format!("http.extraHeader=Authorization: {auth}")
}

fn with_userinfo(url: &str, user: &str, pass: &str) -> String {
    url.replacen("http://", &format!("http://{user}:{pass}@"), 1)
}

#[test]
fn mirror_clone_with_every_credential_scheme() {
    let tmp = TempDir::new("tk-git");
    let bare = tmp.path().join("src.git");
    let _w = source_repo(&bare);
    let s = CloudServer::start();
    s.add_repo("ws", "proj", &bare, RepoMeta::default());
    s.add_api_token("acc-api", "a@example.com", "api-tok");
    s.add_access_token("acc-bot", "ws", "acc-tok");
    s.add_app_password("acc-app", "carol", "app-pw");
    s.add_oauth_consumer("acc-oauth", "k", "sec", 3600);
    for p in ["acc-api", "acc-app", "acc-oauth"] {
        s.grant(p, "ws");
    }
    let tr = request(
        "POST",
        &format!("{}/site/oauth2/access_token", s.base_url()),
        &[
            ("Authorization", &basic("k", "sec")),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        b"grant_type=client_credentials",
    );
    let oauth_tok = tr.json()["access_token"].as_str().unwrap().to_string();
    let url = s.git_url("ws", "proj");
    let expected = refs_of(&bare);
    assert_eq!(expected["HEAD"], "refs/heads/main");
    assert!(expected.len() > 30);

    let cases: Vec<(&str, Vec<String>, String)> = vec![
        (
            "api token v2",
            vec![
                "-c".into(),
                header_arg(&basic("x-bitbucket-api-token-auth", "api-tok")),
                "-c".into(),
                "protocol.version=2".into(),
            ],
            url.clone(),
        ),
        (
            "api token v0",
            vec![
                "-c".into(),
                header_arg(&basic("x-bitbucket-api-token-auth", "api-tok")),
                "-c".into(),
                "protocol.version=0".into(),
            ],
            url.clone(),
        ),
        (
            "access token",
            vec![],
            with_userinfo(&url, "x-token-auth", "acc-tok"),
        ),
        (
            "oauth",
            vec!["-c".into(), header_arg(&basic("x-token-auth", &oauth_tok))],
            url.clone(),
        ),
        (
            "oauth bearer",
            vec!["-c".into(), header_arg(&bearer(&oauth_tok))],
            url.clone(),
        ),
        (
            "app password",
            vec![],
            with_userinfo(&url, "carol", "app-pw"),
        ),
    ];
    for (name, cfg, u) in cases {
        let dest = tmp
            .path()
            .join(format!("clone-{}.git", name.replace(' ', "-")));
        let d = dest.to_string_lossy().to_string();
        let mut args: Vec<&str> = cfg.iter().map(String::as_str).collect();
        args.extend(["clone", "--quiet", "--mirror", u.as_str(), d.as_str()]);
        s.clear_log();
        let t = Instant::now();
        git(tmp.path(), &args);
        eprintln!("{name}: clone took {:?}", t.elapsed());
        assert_eq!(refs_of(&dest), expected, "{name}");
        fsck(&dest);
        let log = s.request_log();
        assert!(log.iter().all(|l| l.is_git), "{name}");
        assert!(
            log.iter()
                .any(|l| l.status == 200 && l.path.ends_with("/info/refs?service=git-upload-pack")),
            "{name}: {log:?}"
        );
        assert!(
            log.iter().any(|l| l.status == 200
                && l.path.ends_with("/git-upload-pack")
                && l.method == "POST"),
            "{name}: {log:?}"
        );
        let principal = log
            .iter()
            .find(|l| l.status == 200)
            .unwrap()
            .principal
            .clone()
            .unwrap();
        let want = match name {
            "access token" => "acc-bot",
            "app password" => "acc-app",
            n if n.starts_with("oauth") => "acc-oauth",
            _ => "acc-api",
        };
        assert_eq!(principal, want, "{name}");
    }

    // bad and missing credentials fail, with 401s logged as git requests
    s.clear_log();
    let dest = tmp.path().join("bad.git");
    let d = dest.to_string_lossy().to_string();
    let bad_url = with_userinfo(&url, "x-token-auth", "wrong");
    let err = try_git(tmp.path(), &["clone", "--quiet", "--mirror", &bad_url, &d]).unwrap_err();
    assert!(
        err.contains("Authentication failed") || err.contains("401"),
        "{err}"
    );
    let err = try_git(tmp.path(), &["clone", "--quiet", "--mirror", &url, &d]).unwrap_err();
    assert!(!err.is_empty());
    let log = s.request_log();
    assert!(!log.is_empty());
    assert!(
        log.iter()
            .all(|l| l.is_git && l.status == 401 && l.principal.is_none()),
        "{log:?}"
    );
    // an access token for another workspace is refused
    s.add_access_token("acc-bot2", "other", "other-tok");
    let other = with_userinfo(&url, "x-token-auth", "other-tok");
    assert!(try_git(tmp.path(), &["ls-remote", &other]).is_err());
    // unknown repository
    let missing = with_userinfo(&s.git_url("ws", "nope"), "carol", "app-pw");
    assert!(try_git(tmp.path(), &["ls-remote", &missing]).is_err());
}

#[test]
fn push_through_server_and_git_rate_limits() {
    let tmp = TempDir::new("tk-push");
    let bare = tmp.path().join("target.git");
    gitutil::init_bare(&bare);
    let s = CloudServer::start();
    s.add_repo("ws", "target", &bare, RepoMeta::default());
    s.add_app_password("acc", "dave", "pw");
    s.grant("acc", "ws");
    let url = with_userinfo(&s.git_url("ws", "target"), "dave", "pw");

    // empty repository clones fine
    let c = tmp.path().join("empty-clone.git");
    git(
        tmp.path(),
        &["clone", "--quiet", "--mirror", &url, &c.to_string_lossy()],
    );

    // push (receive-pack) through the server, then a force push
    let mut w = WorkRepo::new();
    w.write("a.txt", "1\n")
        .write("big.bin", gitutil::pseudo_random_bytes(3, 1 << 20));
    w.commit("one");
    w.tag_annotated("t1", "tag");
    git(
        w.path(),
        &[
            "push",
            "--quiet",
            &url,
            "refs/heads/*:refs/heads/*",
            "refs/tags/*:refs/tags/*",
        ],
    );
    assert_eq!(
        refs_of(&bare),
        refs_of(w.path())
            .into_iter()
            .filter(|(k, _)| !k.starts_with("refs/remotes"))
            .collect()
    );
    git(
        w.path(),
        &["commit", "--quiet", "--amend", "-m", "rewritten"],
    );
    git(w.path(), &["push", "--quiet", "--force", &url, "main"]);
    assert_eq!(refs_of(&bare)["refs/heads/main"], w.head());
    fsck(&bare);
    assert!(s
        .request_log()
        .iter()
        .any(|l| l.is_git && l.path.ends_with("git-receive-pack") && l.status == 200));

    // fail_next_with_429 does not touch git
    s.fail_next_with_429(5);
    git(tmp.path(), &["ls-remote", &url]);
    // rate limit counts git requests: a clone needs 2 requests
    s.set_rate_limit(Some(1));
    s.clear_log();
    let c2 = tmp.path().join("limited.git");
    let err = try_git(
        tmp.path(),
        &["clone", "--quiet", "--mirror", &url, &c2.to_string_lossy()],
    )
    .unwrap_err();
    assert!(err.contains("429") || err.contains("Rate limit"), "{err}");
    let log = s.request_log();
    assert!(
        log.iter()
            .any(|l| l.is_git && l.status == 429 && l.principal.as_deref() == Some("acc")),
        "{log:?}"
    );
    s.set_rate_limit(None);
}

#[test]
fn workspace_fixture() {
    let tmp = TempDir::new("tk-fixture");
    let s = CloudServer::start();
    let t = Instant::now();
    let repos = gitutil::make_workspace_fixture(&s, "acme", 25, tmp.path());
    eprintln!("25-repo fixture built in {:?}", t.elapsed());
    assert_eq!(repos.len(), 25);
    s.add_api_token("acc", "e@x", "t");
    s.grant("acc", "acme");
    let auth = basic("e@x", "t");
    let j = get(
        &format!("{}/2.0/repositories/acme?pagelen=100", s.base_url()),
        &auth,
    )
    .json();
    assert_eq!(j["size"], 25);
    let vals = j["values"].as_array().unwrap();
    let empty = vals.iter().find(|v| v["slug"] == EMPTY_REPO_SLUG).unwrap();
    assert!(empty["mainbranch"].is_null());
    assert!(vals.iter().any(|v| v["mainbranch"]["name"] == "master"));
    assert!(vals.iter().any(|v| v["is_private"] == false));
    assert!(vals.iter().any(|v| v.get("parent").is_some()));
    assert!(vals.iter().all(|v| v["size"].as_u64().unwrap() > 0));

    let mut saw_lw = false;
    let mut saw_annotated = false;
    for (slug, path) in &repos {
        fsck(path);
        let refs = refs_of(path);
        if slug == EMPTY_REPO_SLUG {
            assert_eq!(refs.len(), 1, "{refs:?}"); // only HEAD
            continue;
        }
        assert!(
            refs.keys().filter(|k| k.starts_with("refs/heads/")).count() >= 3,
            "{slug}: {refs:?}"
        );
        let head = &refs["HEAD"];
        assert!(refs.contains_key(head), "{slug}: HEAD {head} must exist");
        let kind = git(path, &["cat-file", "-t", "refs/tags/v1.0"]);
        saw_annotated |= kind == "tag";
        saw_lw |= git(path, &["cat-file", "-t", "refs/tags/v1.0-lw"]) == "commit";
        let size = git(
            path,
            &[
                "cat-file",
                "-s",
                &format!("{}:assets/data.bin", refs["refs/tags/v1.0-lw"]),
            ],
        );
        assert!(size.parse::<u64>().unwrap() > 0);
    }
    assert!(saw_lw && saw_annotated);
    // deterministic content
    let again = TempDir::new("tk-fixture2");
    let opts = gitutil::FixtureOptions {
        repos: 3,
        ..Default::default()
    };
    let a = gitutil::build_fixture_repos("acme", again.path(), &opts);
    assert_eq!(
        refs_of(&a[1].path),
        refs_of(&repos.iter().find(|(s, _)| s == &a[1].slug).unwrap().1)
    );

    // clone two of them (one empty) through the server
    for slug in ["repo-001", EMPTY_REPO_SLUG] {
        let dest = tmp.path().join(format!("clone-{slug}"));
        let url = s.git_url("acme", slug);
        git(
            tmp.path(),
            &[
                "-c",
                &header_arg(&basic("x-bitbucket-api-token-auth", "t")),
                "clone",
                "--quiet",
                "--mirror",
                &url,
                &dest.to_string_lossy(),
            ],
        );
        let src = &repos.iter().find(|(s, _)| s == slug).unwrap().1;
        assert_eq!(refs_of(&dest), refs_of(src), "{slug}");
    }
}

/// Measures fixture build time for 100 repositories: `cargo test -p reposafe-testkit
/// --release -- --ignored --nocapture fixture_100_timing`.
#[test]
#[ignore]
fn fixture_100_timing() {
    let tmp = TempDir::new("tk-fixture100");
    let s = CloudServer::start();
    let t = Instant::now();
    let repos = gitutil::make_workspace_fixture(&s, "big", 100, tmp.path());
    eprintln!("100-repo fixture built in {:?}", t.elapsed());
    assert_eq!(repos.len(), 100);
    let t = Instant::now();
    drop(s);
    eprintln!("server drop {:?}", t.elapsed());
    if std::env::var_os("TK_KEEP").is_some() {
        eprintln!("kept {}", tmp.keep().display());
        return;
    }
    let t = Instant::now();
    drop(tmp);
    eprintln!("tmp drop {:?}", t.elapsed());
}
