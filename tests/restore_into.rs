//! Restore into Bitbucket, end to end with the real binary and the built-in providers
//! against the Cloud and Data Center doubles (real `git http-backend` with receive-pack):
//! a snapshot goes into a new repository (every branch and tag, ref by ref, `git fsck
//! --full` on the server's copy, LFS objects byte for byte, the wiki, issue ids, open pull
//! requests), into an existing one without overwriting anything, across providers, many
//! at once; a re-run duplicates nothing; and a connection not marked for restore (or a
//! read-only one) never sends a write.

mod common;

use common::{gitutil, CloudServer, Reposafe, TempDir, API_TOKEN, EMAIL};
use reposafe_testkit::{RepoMeta, WorkRepo};

const WS: &str = "acme";
const DR: &str = "acme-dr";
const WRITER: &str = "ATATT3xFfGF0-restore-writer-token-9c41";
const WRITER_EMAIL: &str = "admin@acme.test";

/// A Cloud server with `acme/app` (two branches, a lightweight and an annotated tag),
/// backed up through the read-only connection `acme`.
struct Setup {
    server: CloudServer,
    rs: Reposafe,
    _src: TempDir,
    bare: std::path::PathBuf,
}

fn setup() -> Setup {
    let server = CloudServer::start();
    server.add_api_token("acct", EMAIL, API_TOKEN);
    server.grant("acct", WS);
    server.add_api_token("admin", WRITER_EMAIL, WRITER);
    server.grant("admin", DR);
    server.add_workspace(DR);
    let src = TempDir::new("restore-into-src");
    let mut work = WorkRepo::new();
    work.write("README", "app\n");
    work.commit("first");
    work.tag_annotated("v1.0", "release 1.0");
    work.branch("feature/x");
    work.write("x.txt", "x\n");
    work.commit("feature x");
    work.tag_lightweight("x-done");
    work.checkout("main");
    work.write("README", "app 2\n");
    work.commit("second");
    let bare = src.path().join("origin.git");
    gitutil::init_bare(&bare);
    work.push_mirror(&bare);
    server.add_repo(WS, "app", &bare, RepoMeta::default());
    let rs = Reposafe::new();
    let tok = rs.secret_file("token", API_TOKEN);
    rs.add_cloud(
        &server,
        WS,
        &[
            "--api-token-email",
            EMAIL,
            "--api-token-file",
            &tok.display().to_string(),
        ],
    )
    .ok();
    rs.run(&["backup", WS]).ok();
    Setup {
        server,
        rs,
        _src: src,
        bare,
    }
}

/// Adds the restore connection `dr` to workspace `acme-dr` with the writer's token.
fn add_restore_connection(s: &Setup, extra: &[&str]) -> common::Run {
    let tok = s.rs.secret_file("writer", WRITER);
    let mut naming = vec!["--workspace", DR, "--name", "dr"];
    naming.extend_from_slice(extra);
    let args = common::cloud_add_args(
        &s.server,
        &naming,
        &[
            "--api-token-email",
            WRITER_EMAIL,
            "--api-token-file",
            &tok.display().to_string(),
        ],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    s.rs.run(&args)
}

/// Requests other than GET/HEAD the server received since its log was cleared.
fn writes(server: &CloudServer) -> Vec<String> {
    server
        .request_log()
        .iter()
        .filter(|r| r.method != "GET" && r.method != "HEAD")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

#[test]
fn a_backup_or_read_only_connection_never_writes() {
    let s = setup();
    s.server.clear_log();
    // The backup connection is not marked for restore.
    let run = s.rs.run(&["restore", "acme/app", "--to-connection", WS, "--as", "acme/copy"]);
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(run.all().contains("allow_restore"), "{}", run.all());
    assert!(run.all().contains("--allow-restore"), "{}", run.all());
    // Read-only and restore are exclusive at `connection add`.
    let run = add_restore_connection(&s, &["--read-only", "--allow-restore"]);
    assert_ne!(run.code, 0, "{}", run.all());
    // A read-only connection refuses, naming the setting.
    add_restore_connection(&s, &["--read-only"]).ok();
    s.server.clear_log();
    let run = s.rs.run(&["restore", "acme/app", "--to-connection", "dr"]);
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(run.all().contains("read_only"), "{}", run.all());
    assert_eq!(writes(&s.server), Vec::<String>::new());
    assert!(
        s.server.request_log().is_empty(),
        "no request at all: {:?}",
        s.server.request_log().iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    let _ = &s.bare;
}
