//! Restore into Bitbucket, end to end with the real binary and the built-in providers
//! against the Cloud and Data Center doubles (real `git http-backend` with receive-pack):
//! a snapshot goes into a new repository (every branch and tag, ref by ref, `git fsck
//! --full` on the server's copy, LFS objects byte for byte, the wiki, issue ids, open pull
//! requests), into an existing one without overwriting anything, across providers, many
//! at once; a re-run duplicates nothing; and a connection not marked for restore (or a
//! read-only one) never sends a write.

mod common;

use common::{gitutil, lfs_pointer, CloudServer, Reposafe, TempDir, API_TOKEN, EMAIL};
use reposafe_testkit::{RepoMeta, Spec, WorkRepo};
use std::collections::BTreeMap;
use std::path::Path;

const WS: &str = "acme";
const DR: &str = "acme-dr";
const WRITER: &str = "ATATT3xFfGF0-restore-writer-token-9c41";
const WRITER_EMAIL: &str = "admin@acme.test";

/// A Cloud server with `acme/app` (three branches, a lightweight and an annotated tag,
/// two Git LFS files, a wiki, pull requests, issues with attachments and settings),
/// backed up through the backup connection `acme`.
struct Setup {
    server: CloudServer,
    rs: Reposafe,
    _src: TempDir,
    bare: std::path::PathBuf,
    wiki: std::path::PathBuf,
    lfs_files: BTreeMap<String, Vec<u8>>,
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
    work.write(
        ".gitattributes",
        "*.bin filter=lfs diff=lfs merge=lfs -text\n",
    );
    work.write("README", "app\n");
    let mut lfs_files = BTreeMap::new();
    for i in 0..2u64 {
        let content = gitutil::pseudo_random_bytes(i + 11, 120_000 + i as usize);
        let name = format!("asset{i}.bin");
        work.write(&name, lfs_pointer(&content));
        server.lfs().add(WS, "app", &content);
        lfs_files.insert(name, content);
    }
    work.commit("first");
    work.tag_annotated("v1.0", "release 1.0");
    // The branch of open pull request #1 (`Spec` names its branches so).
    work.branch("feature/change-number-1");
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
    let mut wiki_work = WorkRepo::new();
    wiki_work.write("Home.md", "# Welcome\n");
    wiki_work.commit("wiki home");
    let wiki = src.path().join("wiki.git");
    gitutil::init_bare(&wiki);
    wiki_work.push_mirror(&wiki);
    server.add_wiki(WS, "app", &wiki);
    server.populate(WS, "app", &Spec::default());
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
        wiki,
        lfs_files,
    }
}

/// Branches and tags of a bare repository.
fn branches_and_tags(repo: &Path) -> BTreeMap<String, String> {
    gitutil::refs_of(repo)
        .into_iter()
        .filter(|(n, _)| n.starts_with("refs/heads/") || n.starts_with("refs/tags/"))
        .collect()
}

/// Git smart-HTTP pushes (receive-pack POSTs) in the server's log.
fn pushes(server: &CloudServer) -> usize {
    server
        .request_log()
        .iter()
        .filter(|r| r.method == "POST" && r.path.contains("git-receive-pack"))
        .count()
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

#[test]
fn a_backup_or_read_only_connection_never_writes() {
    let s = setup();
    s.server.clear_log();
    // The backup connection is not marked for restore.
    let run = s.rs.run(&[
        "restore",
        "acme/app",
        "--to-connection",
        WS,
        "--as",
        "acme/copy",
    ]);
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
    assert_eq!(common::write_requests(&s.server), Vec::<String>::new());
    assert!(
        s.server.request_log().is_empty(),
        "no request at all: {:?}",
        s.server
            .request_log()
            .iter()
            .map(|r| &r.path)
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_cloud_snapshot_goes_back_into_a_new_repository_with_everything_once() {
    let s = setup();
    add_restore_connection(&s, &["--allow-restore"]).ok();
    let run =
        s.rs.run(&["restore", "acme/app", "--to-connection", "dr"])
            .ok();
    let out = run.all();
    assert!(out.contains("into dr acme-dr/app (created)"), "{out}");

    // Every branch and tag, ref by ref; the server's copy is fsck-clean.
    let target = s.server.repo_path(DR, "app");
    assert_eq!(branches_and_tags(&target), branches_and_tags(&s.bare));
    gitutil::fsck(&target);
    // The wiki, pushed into the new repository's wiki.
    let wiki = s
        .server
        .wiki_path(DR, "app")
        .expect("the new repository has a wiki");
    assert_eq!(gitutil::refs_of(&wiki), gitutil::refs_of(&s.wiki));
    // Every LFS object, byte for byte, in the target's LFS store.
    for content in s.lfs_files.values() {
        let oid = reposafe_testkit::lfs::sha256_hex(content);
        let stored = s.server.lfs().object(DR, "app", &oid);
        assert!(
            stored.as_deref() == Some(content.as_slice()),
            "LFS object {oid}: {:?} bytes on the server, {} in the snapshot",
            stored.map(|b| b.len()),
            content.len()
        );
    }
    // Issues keep their ids; the open pull request is re-created, its author quoted.
    let source = s.server.metadata(WS, "app", |m| m.clone());
    let copy = s.server.metadata(DR, "app", |m| m.clone());
    let ids = |m: &reposafe_testkit::metadata::RepoMetadata| {
        m.issues
            .iter()
            .map(|i| (i.id, i.reporter.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&copy), ids(&source));
    assert_eq!(copy.pull_requests.len(), 1, "only the open pull request");
    let pr = &copy.pull_requests[0];
    assert_eq!(pr.title, source.pull_requests[0].title);
    assert!(
        pr.description.starts_with("> Originally opened by"),
        "{}",
        pr.description
    );
    // A webhook's secret cannot be restored: the user is told.
    assert!(out.contains("for you to do"), "{out}");

    // A re-run writes nothing new: no push, no second issue or pull request.
    s.server.clear_log();
    let again =
        s.rs.run(&["restore", "acme/app", "--to-connection", "dr"])
            .ok();
    assert_eq!(pushes(&s.server), 0, "{}", again.all());
    let copy2 = s.server.metadata(DR, "app", |m| m.clone());
    assert_eq!(copy2.pull_requests.len(), 1);
    assert_eq!(ids(&copy2), ids(&source));
    assert!(again.all().contains("already there"), "{}", again.all());
}

#[test]
fn into_an_existing_repository_nothing_there_is_overwritten() {
    let s = setup();
    add_restore_connection(&s, &["--allow-restore"]).ok();
    // acme-dr/live exists with its own history on `main`.
    let live = s._src.path().join("live.git");
    gitutil::init_bare(&live);
    let mut other = WorkRepo::new();
    other.write("OTHER", "someone else's work\n");
    other.commit("theirs");
    other.push_mirror(&live);
    gitutil::git(&live, &["config", "http.receivepack", "true"]);
    s.server.add_repo(DR, "live", &live, RepoMeta::default());
    let before = gitutil::refs_of(&live);

    s.server.clear_log();
    let run = s.rs.run(&[
        "restore",
        "acme/app",
        "--to-connection",
        "dr",
        "--as",
        "acme-dr/live",
    ]);
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(run.all().contains("--into-existing"), "{}", run.all());
    assert_eq!(pushes(&s.server), 0);
    assert_eq!(gitutil::refs_of(&live), before);

    let run =
        s.rs.run(&[
            "restore",
            "acme/app",
            "--to-connection",
            "dr",
            "--as",
            "acme-dr/live",
            "--into-existing",
        ])
        .ok();
    let after = gitutil::refs_of(&live);
    // Their `main` is untouched; ours is beside it.
    assert_eq!(after["refs/heads/main"], before["refs/heads/main"]);
    let ours = gitutil::refs_of(&s.bare);
    let renamed: Vec<_> = after
        .iter()
        .filter(|(n, _)| n.starts_with("refs/heads/restored/") && n.ends_with("/main"))
        .collect();
    assert_eq!(renamed.len(), 1, "{after:?}");
    assert_eq!(renamed[0].1, &ours["refs/heads/main"]);
    assert_eq!(after["refs/tags/v1.0"], ours["refs/tags/v1.0"]);
    assert!(
        run.all()
            .contains("differs there: pushed as refs/heads/restored/"),
        "{}",
        run.all()
    );
    gitutil::fsck(&live);
}

#[test]
fn a_whole_workspace_is_restored_at_once_through_the_daemon() {
    let s = setup();
    add_restore_connection(&s, &["--allow-restore"]).ok();
    let lib = common::small_bare_repo(s._src.path(), 3);
    s.server.add_repo(WS, "lib", &lib, RepoMeta::default());
    s.rs.run(&["backup", WS]).ok();
    let mut daemon = common::start_daemon(&s.rs);
    // Through the daemon's API (the CLI finds it), as one job with a result per repository.
    let run = s.rs.run(&[
        "restore",
        "--connection",
        WS,
        "--to-connection",
        "dr",
        "--prefix",
        "restored-",
    ]);
    let _ = daemon.kill();
    let _ = daemon.wait();
    let run = run.ok();
    for (slug, bare) in [("app", &s.bare), ("lib", &lib)] {
        let target = s.server.repo_path(DR, &format!("restored-{slug}"));
        assert_eq!(
            branches_and_tags(&target),
            branches_and_tags(bare),
            "{slug}"
        );
        gitutil::fsck(&target);
    }
    assert!(run.all().contains("acme/lib"), "{}", run.all());
    let jobs = s.rs.run(&["jobs", "list"]).ok();
    assert!(
        jobs.stdout.contains("restore connection acme into dr"),
        "{}",
        jobs.stdout
    );
}

/// A Data Center double with `CORE/svc` (branches, tags, a pull request ref, metadata) and
/// an empty project `DR`; `jdoe` may read `CORE` and administer both.
fn data_center(dir: &Path) -> (reposafe_testkit::DcServer, std::path::PathBuf) {
    use reposafe_testkit::{DcOptions, DcServer};
    let server = DcServer::start(DcOptions::default());
    let mut work = WorkRepo::new();
    work.write("README", "svc\n");
    work.commit("first");
    work.tag_annotated("v1", "release 1");
    work.branch("feature/change-number-1");
    work.write("f.txt", "f\n");
    work.commit("feature");
    work.checkout("main");
    let bare = dir.join("svc.git");
    gitutil::init_bare(&bare);
    work.push_mirror(&bare);
    let head = gitutil::git(&bare, &["rev-parse", "refs/heads/feature/change-number-1"]);
    gitutil::git(
        &bare,
        &["update-ref", "refs/pull-requests/1/from", head.trim()],
    );
    server.add_repo("CORE", "svc", &bare, false);
    server.populate("CORE", "svc", &Spec::default());
    server.add_project("DR", "Disaster recovery");
    server.add_user("jdoe", "secret-pw");
    for key in ["CORE", "DR"] {
        server.grant("jdoe", key);
        server.grant_admin("jdoe", key);
    }
    (server, bare)
}

/// Adds a Data Center connection `name` for `jdoe`, with `extra` flags.
fn add_dc(rs: &Reposafe, server: &reposafe_testkit::DcServer, name: &str, extra: &[&str]) {
    let pw = rs.secret_file(&format!("{name}-pw"), "secret-pw");
    let mut args = common::dc_add_args(&server.base_url(), name, "jdoe", &pw);
    args.extend(extra.iter().map(|s| s.to_string()));
    rs.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .ok();
}

#[test]
fn a_data_center_repository_goes_into_a_new_data_center_repository() {
    let dir = TempDir::new("restore-into-dc");
    let (server, bare) = data_center(dir.path());
    let rs = Reposafe::new();
    add_dc(&rs, &server, "dc", &[]);
    rs.run(&["backup", "dc"]).ok();
    add_dc(&rs, &server, "dcdr", &["--allow-restore"]);
    let run = rs
        .run(&[
            "restore",
            "CORE/svc",
            "--to-connection",
            "dcdr",
            "--as",
            "DR/svc",
        ])
        .ok();
    let out = run.all();
    assert!(out.contains("into dcdr DR/svc (created)"), "{out}");
    // Pull request refs belong to the server: skipped, and said so.
    assert!(out.contains("skipped refs/pull-requests/1/from"), "{out}");
    let target = server
        .repo_path("DR", "svc")
        .expect("created on the server");
    assert_eq!(branches_and_tags(&target), branches_and_tags(&bare));
    gitutil::fsck(&target);
    // The open pull request whose branches exist is re-created.
    let prs = server.metadata("DR", "svc", |m| m.pull_requests.len());
    assert_eq!(prs, 1, "{out}");
}

#[test]
fn a_cloud_snapshot_migrates_into_data_center() {
    let s = setup();
    let dir = TempDir::new("restore-into-migrate");
    let (dc, _) = data_center(dir.path());
    add_dc(&s.rs, &dc, "dcdr", &["--allow-restore"]);
    let run =
        s.rs.run(&[
            "restore",
            "acme/app",
            "--to-connection",
            "dcdr",
            "--as",
            "DR/app",
        ])
        .ok();
    let out = run.all();
    let target = dc.repo_path("DR", "app").expect("created on Data Center");
    assert_eq!(branches_and_tags(&target), branches_and_tags(&s.bare));
    gitutil::fsck(&target);
    // Issues have nowhere to go on Data Center: listed, not dropped silently.
    assert!(out.contains("metadata:issues: skipped"), "{out}");
    // The open pull request maps.
    let prs = dc.metadata("DR", "app", |m| m.pull_requests.clone());
    assert_eq!(prs.len(), 1, "{out}");
    assert!(
        prs[0].description.contains("Originally opened by"),
        "{}",
        prs[0].description
    );
}
