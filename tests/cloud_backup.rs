//! End to end: back up a Bitbucket Cloud workspace through the real binary, the
//! built-in WebAssembly provider, gix over the real `git http-backend`, then change
//! the repositories, back up again and restore both snapshots ref by ref.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::Path;

const WORKSPACE: &str = "acme";

fn setup(n: usize) -> (CloudServer, TempDir, Vec<(String, std::path::PathBuf)>) {
    let server = CloudServer::start();
    let repos_dir = TempDir::new("reposafe-src");
    let repos = gitutil::make_workspace_fixture(&server, WORKSPACE, n, repos_dir.path());
    server.add_api_token("acct-1", EMAIL, API_TOKEN);
    server.grant("acct-1", WORKSPACE);
    (server, repos_dir, repos)
}

fn api_token_args(rs: &Reposafe) -> Vec<String> {
    let tok = rs.secret_file("token.txt", API_TOKEN);
    vec![
        "--api-token-email".into(),
        EMAIL.into(),
        "--api-token-file".into(),
        tok.display().to_string(),
    ]
}

fn add_cloud_with_token(rs: &Reposafe, server: &CloudServer) {
    let args = api_token_args(rs);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    rs.add_cloud(server, WORKSPACE, &args).ok();
}

/// Pushes one new commit on `branch` of a bare repository.
fn push_commit(bare: &Path, branch: &str, file: &str, content: &str) {
    let work = TempDir::new("reposafe-push");
    let w = work.path().join("w");
    gitutil::git(
        work.path(),
        &["clone", "--quiet", &bare.display().to_string(), "w"],
    );
    gitutil::git(&w, &["checkout", "--quiet", branch]);
    std::fs::write(w.join(file), content).expect("write");
    gitutil::git(&w, &["add", "-A"]);
    gitutil::git(&w, &["commit", "--quiet", "-m", &format!("change {file}")]);
    gitutil::git(&w, &["push", "--quiet", "origin", branch]);
}

/// Rewrites `branch` to a new root-based history and force-pushes it.
fn force_push_rewrite(bare: &Path, branch: &str) {
    let work = TempDir::new("reposafe-force");
    let w = work.path().join("w");
    gitutil::git(
        work.path(),
        &["clone", "--quiet", &bare.display().to_string(), "w"],
    );
    gitutil::git(&w, &["checkout", "--quiet", branch]);
    gitutil::git(&w, &["reset", "--quiet", "--hard", "HEAD~1"]);
    std::fs::write(w.join("rewritten.txt"), "history was rewritten\n").expect("write");
    gitutil::git(&w, &["add", "-A"]);
    gitutil::git(&w, &["commit", "--quiet", "-m", "rewrite"]);
    gitutil::git(&w, &["push", "--quiet", "--force", "origin", branch]);
}

fn backup_json(rs: &Reposafe) -> serde_json::Value {
    let run = rs.run(&["backup", WORKSPACE, "--json"]).ok();
    serde_json::from_str(&run.stdout).expect("backup --json prints JSON")
}

fn outcome_counts(report: &serde_json::Value) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in report["repositories"].as_array().expect("repositories") {
        *m.entry(r["outcome"]["status"].as_str().unwrap_or("?").to_string())
            .or_insert(0) += 1;
    }
    m
}

fn restore_and_compare(
    rs: &Reposafe,
    full_name: &str,
    selector: &[&str],
    expected: &BTreeMap<String, String>,
) {
    let out = TempDir::new("reposafe-restore");
    let target = out.path().join("r.git");
    let target_s = target.display().to_string();
    let mut args = vec!["restore", full_name, "--to", &target_s];
    args.extend_from_slice(selector);
    rs.run(&args).ok();
    gitutil::fsck(&target);
    let got = gitutil::refs_of(&target);
    assert_eq!(
        &got, expected,
        "refs of restored {full_name} ({selector:?})"
    );
}

#[test]
fn workspace_backup_change_backup_restore_both() {
    let (server, _src, repos) = setup(26);
    let rs = Reposafe::new();
    add_cloud_with_token(&rs, &server);

    let before: BTreeMap<String, BTreeMap<String, String>> = repos
        .iter()
        .map(|(slug, p)| (slug.clone(), gitutil::refs_of(p)))
        .collect();

    let first = backup_json(&rs);
    let counts = outcome_counts(&first);
    assert_eq!(counts.get("snapshot"), Some(&26), "first run: {first}");
    let first_run_secs = first["seconds"].as_f64().unwrap_or(0.0);
    assert!(first_run_secs > 0.0);

    // Second run, nothing changed: nothing stored, every repository unchanged.
    let second = backup_json(&rs);
    assert_eq!(
        outcome_counts(&second).get("unchanged"),
        Some(&26),
        "{second}"
    );

    // The time-based restore of the first snapshots needs a gap between runs.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let between = time::OffsetDateTime::now_utc();
    std::thread::sleep(std::time::Duration::from_millis(1100));

    // Change some repositories: new commits, a force-push, a deleted tag, a deleted branch.
    let non_empty: Vec<&(String, std::path::PathBuf)> =
        repos.iter().filter(|(s, _)| s != "empty-repo").collect();
    assert_eq!(non_empty.len(), 25, "the fixture has one empty repository");
    let (s0, p0) = non_empty[0];
    let (s1, p1) = non_empty[1];
    let (s2, p2) = non_empty[2];
    push_commit(p0, "develop", "new.txt", "one more commit\n");
    force_push_rewrite(p1, "develop");
    gitutil::git(p2, &["tag", "-d", "v1.0-lw"]);
    gitutil::git(p2, &["branch", "-D", "develop"]);
    let after: BTreeMap<String, BTreeMap<String, String>> = repos
        .iter()
        .map(|(slug, p)| (slug.clone(), gitutil::refs_of(p)))
        .collect();
    assert_ne!(before[s0], after[s0]);
    assert_ne!(before[s1], after[s1]);
    assert_ne!(before[s2], after[s2]);

    let third = backup_json(&rs);
    let c = outcome_counts(&third);
    assert_eq!(c.get("snapshot"), Some(&3), "{third}");
    assert_eq!(c.get("unchanged"), Some(&23), "{third}");
    let small_push_bytes: u64 = third["repositories"]
        .as_array()
        .expect("repos")
        .iter()
        .filter(|r| r["full_name"] == format!("{WORKSPACE}/{s0}"))
        .map(|r| r["outcome"]["new_bytes"].as_u64().unwrap_or(u64::MAX))
        .sum();
    assert!(
        small_push_bytes < 8 * 1024,
        "a one-commit push stores about that commit: {small_push_bytes} bytes"
    );

    // Every repository restores to its first state (by time) and its latest state.
    let at = between
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    for (slug, _) in &repos {
        let full = format!("{WORKSPACE}/{slug}");
        restore_and_compare(&rs, &full, &["--at", &at], &before[slug]);
        restore_and_compare(&rs, &full, &[], &after[slug]);
    }

    // By snapshot id, too.
    let list = rs
        .run(&["snapshots", &format!("{WORKSPACE}/{s1}"), "--json"])
        .ok();
    let snaps: serde_json::Value = serde_json::from_str(&list.stdout).expect("json");
    let snaps = snaps.as_array().expect("array");
    assert_eq!(
        snaps.len(),
        2,
        "two snapshots of the force-pushed repository"
    );
    let first_id = snaps[0]["id"].as_str().expect("id").to_string();
    restore_and_compare(
        &rs,
        &format!("{WORKSPACE}/{s1}"),
        &["--snapshot", &first_id],
        &before[s1],
    );

    // The archive verifies, and no secret is on disk in clear.
    let check = rs.run(&["check", "--read-data"]).ok();
    assert!(check.stdout.contains("all intact"), "{}", check.stdout);
    assert_not_on_disk(rs.data_dir(), API_TOKEN);
}

#[test]
fn restore_refuses_a_non_empty_target_unless_forced() {
    let (server, _src, repos) = setup(2);
    let rs = Reposafe::new();
    add_cloud_with_token(&rs, &server);
    rs.run(&["backup", WORKSPACE]).ok();
    let full = format!("{WORKSPACE}/{}", repos[1].0);
    let out = TempDir::new("reposafe-target");
    std::fs::write(out.path().join("precious.txt"), "do not lose me").expect("write");
    let target = out.path().display().to_string();
    let refused = rs.run(&["restore", &full, "--to", &target]);
    assert_ne!(refused.code, 0);
    assert!(refused.all().contains("not empty"), "{}", refused.all());
    assert!(out.path().join("precious.txt").exists());
    // `--force` never replaces what is not a git repository.
    let refused = rs.run(&["restore", &full, "--to", &target, "--force"]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.all().contains("not a git repository"),
        "{}",
        refused.all()
    );
    assert!(out.path().join("precious.txt").exists());
    // A git repository is replaced with `--force` (and moved aside).
    let repo = out.path().join("r.git");
    let repo_s = repo.display().to_string();
    rs.run(&["restore", &full, "--to", &repo_s]).ok();
    let refused = rs.run(&["restore", &full, "--to", &repo_s]);
    assert!(refused.all().contains("not empty"), "{}", refused.all());
    let forced = rs.run(&["restore", &full, "--to", &repo_s, "--force"]).ok();
    assert!(forced.stdout.contains("moved aside"), "{}", forced.stdout);
    gitutil::fsck(&repo);
    assert_eq!(gitutil::refs_of(&repo), gitutil::refs_of(&repos[1].1));
}

#[test]
fn bad_token_gives_a_clear_error_and_writes_no_snapshot() {
    let (server, _src, _repos) = setup(3);
    let rs = Reposafe::new();
    let bad = rs.secret_file("bad.txt", "ATATT-wrong-token-0000");
    let bad_s = bad.display().to_string();
    // Verification at add time refuses it and stores nothing.
    let refused = rs.add_cloud(
        &server,
        WORKSPACE,
        &["--api-token-email", EMAIL, "--api-token-file", &bad_s],
    );
    assert_ne!(refused.code, 0);
    assert!(
        refused.all().contains("refused") || refused.all().contains("401"),
        "{}",
        refused.all()
    );
    assert!(rs
        .run(&["connection", "list"])
        .ok()
        .stdout
        .trim()
        .is_empty());

    // Stored without verification, the backup fails clearly and writes nothing.
    rs.add_cloud(
        &server,
        WORKSPACE,
        &[
            "--api-token-email",
            EMAIL,
            "--api-token-file",
            &bad_s,
            "--no-verify",
        ],
    )
    .ok();
    let run = rs.run(&["backup", WORKSPACE]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("refused"), "{}", run.stderr);
    assert!(!run.all().contains("ATATT-wrong-token-0000"));
    let snaps = files_under(&rs.data_dir().join("archive/snapshots"));
    assert!(snaps.is_empty(), "no snapshot may be written: {snaps:?}");
}

#[test]
fn access_token_oauth_and_app_password_all_back_up() {
    let (server, _src, repos) = setup(3);
    server.add_access_token("ws-token", WORKSPACE, "acc-tok-123");
    server.add_oauth_consumer("oauth-app", "consumer-key", "consumer-secret-xyz", 3600);
    server.grant("oauth-app", WORKSPACE);
    server.add_app_password("legacy-user", "legacy", "app-pass-789");
    server.grant("legacy-user", WORKSPACE);

    // Access token.
    let rs = Reposafe::new();
    let f = rs.secret_file("acc.txt", "acc-tok-123");
    rs.add_cloud(
        &server,
        WORKSPACE,
        &["--access-token-file", &f.display().to_string()],
    )
    .ok();
    let run = rs.run(&["backup", WORKSPACE]).ok();
    assert!(run.stdout.contains("3 new snapshots"), "{}", run.stdout);

    // OAuth consumer: the host exchanges key+secret for a token.
    let rs = Reposafe::new();
    let f = rs.secret_file("oauth.txt", "consumer-secret-xyz");
    rs.add_cloud(
        &server,
        WORKSPACE,
        &[
            "--oauth-key",
            "consumer-key",
            "--oauth-secret-file",
            &f.display().to_string(),
        ],
    )
    .ok();
    let run = rs.run(&["backup", WORKSPACE]).ok();
    assert!(run.stdout.contains("3 new snapshots"), "{}", run.stdout);
    assert!(!run.all().contains("consumer-secret-xyz"));

    // App password: works, with a warning that it is retired.
    let rs = Reposafe::new();
    let f = rs.secret_file("app.txt", "app-pass-789");
    let added = rs
        .add_cloud(
            &server,
            WORKSPACE,
            &[
                "--app-password-user",
                "legacy",
                "--app-password-file",
                &f.display().to_string(),
            ],
        )
        .ok();
    assert!(added.stderr.contains("retired"), "{}", added.stderr);
    let run = rs.run(&["backup", WORKSPACE]).ok();
    assert!(run.stdout.contains("3 new snapshots"), "{}", run.stdout);
    for (slug, path) in &repos {
        let full = format!("{WORKSPACE}/{slug}");
        restore_and_compare(&rs, &full, &[], &gitutil::refs_of(path));
    }
}

#[test]
fn workspace_discovery_uses_the_current_endpoint_and_rate_limits_are_retried() {
    let (server, _src, _repos) = setup(2);
    let rs = Reposafe::new();
    let tok = rs.secret_file("token.txt", API_TOKEN).display().to_string();
    // No --workspace: discovery through /2.0/user/workspaces.
    let args = cloud_add_args(
        &server,
        &["--name", "discovered"],
        &["--api-token-email", EMAIL, "--api-token-file", &tok],
    );
    rs.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .ok();
    server.clear_log();
    server.fail_next_with_429(2);
    let run = rs.run(&["backup", "discovered"]).ok();
    assert!(run.stdout.contains("2 new snapshots"), "{}", run.stdout);
    let log = server.request_log();
    assert!(log
        .iter()
        .any(|r| r.path.starts_with("/2.0/user/workspaces")));
    assert_eq!(log.iter().filter(|r| r.status == 429).count(), 2);
    assert!(
        !log.iter().any(|r| r.status == 410),
        "no retired endpoint may be called: {:?}",
        log.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    assert!(log.iter().all(|r| r.status != 401));
}

#[test]
fn secrets_never_appear_in_output() {
    let (server, _src, _repos) = setup(2);
    let rs = Reposafe::new();
    add_cloud_with_token(&rs, &server);
    let mut all = String::new();
    for args in [
        vec!["connection", "list"],
        vec!["connection", "test", WORKSPACE],
        vec!["backup", WORKSPACE, "-vv"],
        vec!["providers"],
    ] {
        let run = rs.run(&args).ok();
        all.push_str(&run.all());
    }
    assert!(all.contains(EMAIL), "the identity is shown");
    assert!(!all.contains(API_TOKEN), "the token must never be printed");
    assert_not_on_disk(rs.data_dir(), API_TOKEN);
}

#[test]
fn passphrase_mode_encrypts_with_the_passphrase_and_says_so_when_missing() {
    let (server, _src, _repos) = setup(2);
    let rs = Reposafe::new();
    let tok = rs.secret_file("token.txt", API_TOKEN);
    let with_pass = |args: &[&str], pass: Option<&str>| {
        let mut c = rs.cmd(args);
        if let Some(p) = pass {
            c.env("REPOSAFE_PASSPHRASE", p);
        }
        let out = c.output().expect("run");
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let tok = tok.display().to_string();
    let args = cloud_add_args(
        &server,
        &["--workspace", WORKSPACE],
        &["--api-token-email", EMAIL, "--api-token-file", &tok],
    );
    let (code, out) = with_pass(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        Some("correct horse battery staple"),
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = with_pass(&["backup", WORKSPACE], None);
    assert_ne!(code, 0);
    assert!(out.contains("REPOSAFE_PASSPHRASE"), "{out}");
    let (code, out) = with_pass(&["backup", WORKSPACE], Some("wrong passphrase"));
    assert_ne!(code, 0);
    assert!(!out.contains(API_TOKEN));
    let (code, out) = with_pass(&["backup", WORKSPACE], Some("correct horse battery staple"));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 new snapshots"), "{out}");
    assert_not_on_disk(rs.data_dir(), API_TOKEN);
}

/// The manifests of `full_name`'s snapshots, read from the archive.
fn manifests_of(rs: &Reposafe, full_name: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let root = rs.data_dir().join("archive/snapshots");
    for dir in std::fs::read_dir(&root).expect("snapshots dir") {
        for f in std::fs::read_dir(dir.expect("entry").path()).expect("repo dir") {
            let text = std::fs::read_to_string(f.expect("file").path()).expect("manifest");
            let m: serde_json::Value = serde_json::from_str(&text).expect("json");
            if m["repository"]["full_name"] == full_name {
                out.push(m);
            }
        }
    }
    out
}

/// The fixture's first repository that has commits (not `empty-repo`).
fn with_commits(repos: &[(String, std::path::PathBuf)]) -> (&String, &std::path::PathBuf) {
    let (slug, bare) = repos
        .iter()
        .find(|(s, _)| s != "empty-repo")
        .expect("a repository with commits");
    (slug, bare)
}

fn blob_path(rs: &Reposafe, id: &str) -> std::path::PathBuf {
    rs.data_dir().join("archive/blobs").join(&id[..2]).join(id)
}

#[test]
fn check_names_each_damaged_blob_with_the_snapshots_it_affects_and_what_still_restores() {
    let (server, _src, repos) = setup(2);
    let (slug, bare) = with_commits(&repos);
    let full = format!("{WORKSPACE}/{slug}");
    server.populate(
        WORKSPACE,
        slug,
        &reposafe_testkit::metadata::Spec::default(),
    );
    let rs = Reposafe::new();
    add_cloud_with_token(&rs, &server);
    rs.run(&["backup", WORKSPACE]).ok();
    push_commit(bare, "develop", "more.txt", "more\n");
    rs.run(&["backup", WORKSPACE]).ok();
    let snaps = manifests_of(&rs, &full);
    assert_eq!(snaps.len(), 2, "{snaps:#?}");
    let ids: Vec<&str> = snaps
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();

    let check = rs.run(&["check"]).ok();
    assert!(check.stdout.contains("all intact"), "{}", check.all());
    assert!(
        check.stdout.contains("contents not read"),
        "{}",
        check.stdout
    );
    let full_read = rs.run(&["check", "--read-data"]).ok();
    assert!(
        full_read.stdout.contains("read back"),
        "{}",
        full_read.stdout
    );

    // One byte of the first pack flipped: the file is there, so only reading finds it.
    // (Two snapshots taken in one second sort by their random suffix: find the shared pack.)
    let packs = |m: &serde_json::Value| -> Vec<String> {
        let list = m["parts"]["git"]["packs"].as_array().expect("packs");
        list.iter()
            .filter_map(|p| p.as_str())
            .map(String::from)
            .collect()
    };
    let pack = packs(&snaps[0])
        .into_iter()
        .find(|p| packs(&snaps[1]).contains(p))
        .expect("a pack both snapshots need");
    let path = blob_path(&rs, &pack);
    let mut bytes = std::fs::read(&path).expect("pack blob");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, &bytes).expect("damage");
    assert!(rs.run(&["check"]).ok().stdout.contains("all intact"));
    let damaged = rs.run(&["check", "--read-data"]);
    assert_eq!(damaged.code, 1, "{}", damaged.all());
    let err = damaged.stderr.clone();
    assert!(err.contains(&format!("damaged blob {pack}")), "{err}");
    // Both snapshots need the first pack: both are named, neither restores.
    for id in &ids {
        assert!(
            err.contains(&format!("used by snapshot {id} of {full} (git)")),
            "{err}"
        );
        assert!(
            err.contains(&format!(
                "snapshot {id} of {full}: the repository does not restore"
            )),
            "{err}"
        );
    }
    assert!(
        damaged.stdout.contains("1 damaged, affecting 2 snapshots"),
        "{}",
        damaged.stdout
    );
    let restored = rs.files.path().join("after-damage.git");
    let restore = rs.run(&["restore", &full, "--to", &restored.display().to_string()]);
    assert_ne!(
        restore.code,
        0,
        "a damaged pack restored: {}",
        restore.all()
    );
    std::fs::write(&path, {
        bytes[mid] ^= 0x40;
        &bytes
    })
    .expect("repair");

    // A pull request's document gone: found without reading; git still restores.
    let kinds = snaps[1]["parts"]["metadata"]["kinds"]
        .as_object()
        .expect("kinds");
    let (kind, part) = kinds
        .iter()
        .find(|(k, _)| k.contains("pull"))
        .expect("a pull request kind");
    let index = part["index"].as_str().expect("index blob");
    let index: serde_json::Value =
        serde_json::from_slice(&zstd_or_stored(&blob_path(&rs, index))).expect("index json");
    let item = index["items"][0]["blob"]
        .as_str()
        .expect("item blob")
        .to_string();
    std::fs::remove_file(blob_path(&rs, &item)).expect("remove item");
    let missing = rs.run(&["check"]);
    assert_eq!(missing.code, 1, "{}", missing.all());
    let err = &missing.stderr;
    assert!(
        err.contains(&format!("damaged blob {item}: missing")),
        "{err}"
    );
    let part_name = format!("metadata:{kind}");
    assert!(
        err.contains(&format!(
            "used by snapshot {} of {full} ({part_name})",
            ids[1]
        )),
        "{err}"
    );
    let verdict = format!(
        "snapshot {} of {full}: the repository still restores; damaged: {part_name}; intact: git",
        ids[1]
    );
    assert!(err.contains(&verdict), "{err}");
    let restore = rs.run(&["restore", &full, "--to", &restored.display().to_string()]);
    assert_eq!(restore.code, 0, "{}", restore.all());
    gitutil::git(&restored, &["fsck", "--full"]);

    // An accelerator entry naming a blob the archive lacks is a warning, not damage.
    let stale = "ab".repeat(20);
    let missing_blob = "cd".repeat(32);
    let index = rs.data_dir().join("archive/index/packs").join(&stale);
    std::fs::write(&index, &missing_blob).expect("stale index entry");
    let warned = rs.run(&["check"]);
    let want = format!("warning: index/packs/{stale} names blob {missing_blob}, which is missing");
    assert!(warned.stderr.contains(&want), "{}", warned.all());

    // A random share is read back; a share that is no share is refused by name.
    let subset = rs.run(&["check", "--subset", "50%"]);
    assert!(subset.stdout.contains("50% subset"), "{}", subset.all());
    let bad = rs.run(&["check", "--subset", "0%"]);
    assert_ne!(bad.code, 0);
    assert!(
        bad.all().contains("`0%` is not a percentage"),
        "{}",
        bad.all()
    );
}

/// A blob file's content: "RSB1" | codec (0 stored, 1 zstd) | length u64 LE | body.
fn zstd_or_stored(path: &Path) -> Vec<u8> {
    let raw = std::fs::read(path).expect("blob");
    assert_eq!(&raw[..4], b"RSB1", "{}", path.display());
    let body = &raw[13..];
    match raw[4] {
        0 => body.to_vec(),
        1 => zstd::decode_all(body).expect("zstd"),
        c => panic!("codec {c}"),
    }
}

#[test]
fn forget_removes_what_the_policy_does_not_keep_and_never_a_gone_repositorys_snapshots() {
    let (server, _src, repos) = setup(3);
    let with_commits: Vec<&(String, std::path::PathBuf)> =
        repos.iter().filter(|(s, _)| s != "empty-repo").collect();
    let (kept_slug, kept_bare) = with_commits[0];
    let (gone_slug, gone_bare) = with_commits[1];
    let kept = format!("{WORKSPACE}/{kept_slug}");
    let gone = format!("{WORKSPACE}/{gone_slug}");
    let rs = Reposafe::new();
    add_cloud_with_token(&rs, &server);
    for round in 0..3 {
        if round > 0 {
            let file = format!("round-{round}.txt");
            push_commit(kept_bare, "develop", &file, "more\n");
            push_commit(gone_bare, "develop", &file, "more\n");
        }
        rs.run(&["backup", WORKSPACE]).ok();
    }
    assert_eq!(manifests_of(&rs, &kept).len(), 3);

    // Refused: no rule, nothing named.
    let no_rule = rs.run(&["forget", &kept]);
    assert_ne!(no_rule.code, 0);
    assert!(
        no_rule.all().contains("give at least one rule"),
        "{}",
        no_rule.all()
    );
    let no_target = rs.run(&["forget", "--keep-last", "1"]);
    assert_ne!(no_target.code, 0);
    assert!(
        no_target.all().contains("--connection NAME, or --all"),
        "{}",
        no_target.all()
    );

    // A dry run says what would go and why the rest stays; nothing goes.
    let dry = rs
        .run(&["forget", &kept, "--keep-last", "2", "--dry-run"])
        .ok();
    assert_eq!(
        dry.stdout.matches("  would remove ").count(),
        1,
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("(last, newest)"), "{}", dry.stdout);
    assert!(
        dry.stdout.contains("1 snapshots would be removed, 2 kept"),
        "{}",
        dry.stdout
    );
    assert_eq!(manifests_of(&rs, &kept).len(), 3);

    // For real: the oldest goes; the rest restores and checks clean.
    let json = rs
        .run(&["forget", &kept, "--keep-last", "2", "--json"])
        .ok();
    let report: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(report["removed"], 1, "{report}");
    let snaps = &report["repositories"][0]["snapshots"];
    let removed = snaps[2]["id"].as_str().expect("id");
    assert_eq!(snaps[2]["keep"], false);
    let left: Vec<String> = manifests_of(&rs, &kept)
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(left.len(), 2);
    assert!(!left.iter().any(|id| id == removed));
    let target = rs.files.path().join("kept.git");
    rs.run(&["restore", &kept, "--to", &target.display().to_string()])
        .ok();
    assert_eq!(gitutil::refs_of(&target), gitutil::refs_of(kept_bare));
    gitutil::git(&target, &["fsck", "--full"]);
    let check = rs.run(&["check", "--read-data"]).ok();
    assert!(check.stdout.contains("all intact"), "{}", check.all());
    let log = rs.run(&["audit"]).ok();
    assert!(log.stdout.contains("snapshots.forget"), "{}", log.stdout);

    // A repository gone from Bitbucket keeps every snapshot (keep_deleted_for: forever)…
    server.remove_repo(WORKSPACE, gone_slug);
    rs.run(&["backup", WORKSPACE]).ok();
    let all = rs
        .run(&["forget", "--connection", WORKSPACE, "--keep-last", "1"])
        .ok();
    assert!(
        all.stdout
            .contains("not in its connection's latest listing"),
        "{}",
        all.stdout
    );
    assert_eq!(manifests_of(&rs, &gone).len(), 3, "{}", all.stdout);
    assert_eq!(
        all.stdout.matches("(disappeared)").count(),
        2,
        "{}",
        all.stdout
    );
    assert!(
        all.stdout.contains("(newest, disappeared)"),
        "{}",
        all.stdout
    );
    assert_eq!(manifests_of(&rs, &kept).len(), 1, "{}", all.stdout);
    // …until keep_deleted_for has passed since it was last listed.
    let later = rs
        .run(&[
            "forget",
            "--all",
            "--keep-last",
            "1",
            "--keep-deleted-for",
            "1d",
            "--dry-run",
        ])
        .ok();
    assert!(
        later.stdout.contains("keep_deleted_for has not passed"),
        "{}",
        later.stdout
    );
    rs.run(&[
        "forget",
        "--all",
        "--keep-last",
        "1",
        "--keep-deleted-for",
        "1min",
    ]);
    assert_eq!(manifests_of(&rs, &gone).len(), 3, "a minute has not passed");
}

#[test]
fn a_plan_with_retention_forgets_after_each_successful_run() {
    let (server, _src, repos) = setup(2);
    let (slug, bare) = with_commits(&repos);
    let full = format!("{WORKSPACE}/{slug}");
    let rs = Reposafe::new();
    add_cloud_with_token(&rs, &server);
    // A policy without a usable rule is refused by name.
    let bad = rs.run(&[
        "plan",
        "add",
        "nightly",
        "--connection",
        WORKSPACE,
        "--keep-deleted-for",
        "soon",
    ]);
    assert_ne!(bad.code, 0);
    assert!(bad.all().contains("keep_deleted_for"), "{}", bad.all());
    rs.run(&[
        "plan",
        "add",
        "nightly",
        "--connection",
        WORKSPACE,
        "--keep-last",
        "2",
    ])
    .ok();
    let shown = rs.run(&["plan", "show", "nightly"]).ok();
    assert!(
        shown.stdout.contains("\"keep_last\": 2"),
        "{}",
        shown.stdout
    );
    let mut notices = Vec::new();
    for round in 0..4 {
        if round > 0 {
            push_commit(bare, "develop", &format!("r{round}.txt"), "more\n");
        }
        let run = rs.run(&["run", "--plan", "nightly", "--json"]).ok();
        let job: serde_json::Value = serde_json::from_str(&run.stdout).expect("job json");
        assert_eq!(job["state"], "succeeded", "{job}");
        notices.push(job["progress"]["notice"].as_str().unwrap_or("").to_string());
        assert!(manifests_of(&rs, &full).len() <= 2, "round {round}");
    }
    assert_eq!(manifests_of(&rs, &full).len(), 2);
    assert!(
        notices[3].starts_with("retention: 1 snapshots removed"),
        "{notices:?}"
    );
    // …and pruned: the forgotten snapshot's space came back in the same run.
    assert!(notices[3].contains("; prune freed "), "{notices:?}");
    // The two left are the newest: the latest restores to the source's refs.
    let target = rs.files.path().join("latest.git");
    rs.run(&["restore", &full, "--to", &target.display().to_string()])
        .ok();
    assert_eq!(gitutil::refs_of(&target), gitutil::refs_of(bare));
    let log = rs.run(&["audit"]).ok();
    assert!(log.stdout.contains("plan nightly"), "{}", log.stdout);
}
