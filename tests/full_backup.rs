//! A full backup of a Bitbucket Cloud repository, end to end with the real binary and the
//! built-in provider against the Cloud double: git, the wiki (a second git part), LFS
//! objects and the metadata (pull requests with comments/activity/tasks, issues with
//! comments/changes/attachments, settings, workspace-level items) land in one format-2
//! snapshot; an unchanged re-run costs at most one API request per metadata kind and stores
//! nothing; one new comment stores about that pull request's document; a credential without
//! a scope makes the kind `missing` (result `partial`) while git still succeeds; and after
//! the originals are deleted, a restore gives back the repository with its LFS files and the
//! wiki beside it.

mod common;

use common::{gitutil, lfs_pointer, CloudServer, Reposafe, TempDir, API_TOKEN, EMAIL};
use reposafe::archive::{Archive, MetadataIndex, Snapshot};
use reposafe_testkit::lfs::sha256_hex;
use reposafe_testkit::{Inline, NewPullRequest, RepoMeta, Spec, WorkRepo};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

const WS: &str = "acme";
const SLUG: &str = "app";

struct Setup {
    server: CloudServer,
    rs: Reposafe,
    src: TempDir,
    lfs_files: BTreeMap<String, Vec<u8>>,
}

/// A repository with LFS files, a wiki and metadata, and a connection to it.
fn setup() -> Setup {
    let server = CloudServer::start();
    server.add_api_token("acct", EMAIL, API_TOKEN);
    server.grant("acct", WS);
    let src = TempDir::new("full-src");
    let mut lfs_files = BTreeMap::new();
    let mut work = WorkRepo::new();
    work.write(
        ".gitattributes",
        "*.bin filter=lfs diff=lfs merge=lfs -text\n",
    );
    work.write("README", "app\n");
    for i in 0..2u64 {
        let content = gitutil::pseudo_random_bytes(i + 7, 200_000 + i as usize);
        let name = format!("asset{i}.bin");
        work.write(&name, lfs_pointer(&content));
        server.lfs().add(WS, SLUG, &content);
        lfs_files.insert(name, content);
    }
    work.commit("app with LFS assets");
    let bare = src.path().join("origin.git");
    gitutil::init_bare(&bare);
    work.push_mirror(&bare);
    server.add_repo(WS, SLUG, &bare, RepoMeta::default());

    let mut wiki = WorkRepo::new();
    wiki.write("Home.md", "# Welcome\n");
    wiki.commit("wiki home");
    let wiki_bare = src.path().join("wiki.git");
    gitutil::init_bare(&wiki_bare);
    wiki.push_mirror(&wiki_bare);
    server.add_wiki(WS, SLUG, &wiki_bare);

    server.populate(WS, SLUG, &Spec::default());
    server.metadata(WS, SLUG, |m| {
        let pr = m.add_pull_request(NewPullRequest::new("Inline review", "alice"));
        let c = m.add_pr_inline_comment(
            pr,
            "bob",
            "off by one?",
            Inline {
                path: "src/lib.rs".into(),
                from: None,
                to: Some(3),
            },
        );
        m.add_pr_reply(pr, c, "alice", "fixed");
        m.approve_pr(pr, "carol");
    });
    server.set_project_default_reviewers(WS, "PROJ", &["dora"]);

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
    Setup {
        server,
        rs,
        src,
        lfs_files,
    }
}

/// Restores `repo` to `target` and checks it with `git fsck --full`.
fn restore_checked(rs: &Reposafe, repo: &str, target: &Path) -> std::path::PathBuf {
    rs.run(&["restore", repo, "--to", &target.display().to_string()])
        .ok();
    gitutil::fsck(target);
    target.to_path_buf()
}

fn backup(rs: &Reposafe) -> Value {
    let run = rs.run(&["backup", WS, "--json"]).ok();
    serde_json::from_str(&run.stdout).expect("backup --json prints JSON")
}

fn latest(rs: &Reposafe) -> (Archive, Snapshot) {
    let archive = Archive::open(&rs.data_dir().join("archive")).expect("archive");
    let snap = archive
        .all_snapshots()
        .expect("snapshots")
        .into_iter()
        .last()
        .expect("a snapshot");
    (archive, snap)
}

/// The documents of one kind of a snapshot, by id.
fn documents(archive: &Archive, snap: &Snapshot, kind: &str) -> BTreeMap<String, Value> {
    let meta = snap.metadata.as_ref().expect("a metadata part");
    let k = meta
        .kinds
        .get(kind)
        .unwrap_or_else(|| panic!("kind {kind} in {:?}", meta.kinds.keys()));
    let index: MetadataIndex = archive.read_json(&k.index).expect("index");
    index
        .items
        .iter()
        .map(|i| {
            let doc: Value = archive.read_json(&i.blob).expect("document");
            (i.id.clone(), doc)
        })
        .collect()
}

fn api_requests(server: &CloudServer) -> BTreeMap<String, usize> {
    server
        .requests_by_endpoint()
        .into_iter()
        .filter(|(k, _)| {
            k.contains("/repositories/{ws}/{slug}/") || k.starts_with("/2.0/workspaces/")
        })
        .collect()
}

#[test]
fn a_snapshot_holds_git_wiki_lfs_and_metadata_and_restores_after_the_originals_are_gone() {
    let s = setup();
    let report = backup(&s.rs);
    let outcome = &report["repositories"][0]["outcome"];
    assert_eq!(outcome["status"], "snapshot", "{report:#}");

    let (archive, snap) = latest(&s.rs);
    assert_eq!(snap.format, 2);
    assert_eq!(snap.part_names(), vec!["git", "wiki", "lfs", "metadata"]);
    assert!(snap.missing().is_empty(), "{:?}", snap.missing());
    let lfs = snap.lfs.as_ref().expect("lfs part");
    assert_eq!(lfs.objects, 2);

    // Every pull request (in every state) with its comments, authors and dates.
    let prs = documents(&archive, &snap, "pullrequests");
    let want = s.server.metadata(WS, SLUG, |m| m.pull_requests.len());
    assert_eq!(prs.len(), want, "{:?}", prs.keys());
    let states: std::collections::BTreeSet<&str> = prs
        .values()
        .filter_map(|d| d["pullrequest"]["state"].as_str())
        .collect();
    assert!(
        states.len() > 1,
        "pull requests of several states: {states:?}"
    );
    let inline = prs
        .values()
        .find(|d| d["pullrequest"]["title"] == "Inline review")
        .expect("the inline review PR");
    let comments = inline["comments"].as_array().expect("comments");
    assert_eq!(comments.len(), 2);
    assert!(comments.iter().any(|c| c["inline"]["path"] == "src/lib.rs"
        && c["user"]["display_name"].is_string()
        && c["created_on"].is_string()));
    assert!(comments.iter().any(|c| c["parent"]["id"].is_number()));
    assert!(inline["activity"]
        .as_array()
        .expect("activity")
        .iter()
        .any(|a| a.get("approval").is_some()));

    let issues = documents(&archive, &snap, "issues");
    assert_eq!(issues.len(), Spec::default().issues);
    assert!(issues
        .values()
        .all(|d| d["comments"].as_array().is_some_and(|c| c.len() == 2)));
    // Attachment files are stored with their issue.
    let index: MetadataIndex = archive
        .read_json(&snap.metadata.as_ref().unwrap().kinds["issues"].index)
        .unwrap();
    assert!(index.items.iter().all(|i| i.files.len() == 1), "{index:?}");
    for kind in [
        "repository",
        "branch-restrictions",
        "webhooks",
        "pipeline-variables",
        "workspace",
        "projects",
    ] {
        assert!(!documents(&archive, &snap, kind).is_empty(), "{kind}");
    }
    // No webhook secret and no secured variable value in any document.
    for (_, d) in documents(&archive, &snap, "pipeline-variables") {
        if d["secured"] == true {
            assert!(d.get("value").is_none_or(Value::is_null), "{d}");
        }
    }

    // Unchanged: at most one request per kind, nothing stored.
    s.server.clear_log();
    let again = backup(&s.rs);
    assert_eq!(
        again["repositories"][0]["outcome"]["status"], "unchanged",
        "{again:#}"
    );
    let per_endpoint = api_requests(&s.server);
    let kinds = snap.metadata.as_ref().unwrap().kinds.len();
    let total: usize = per_endpoint.values().sum();
    assert!(
        total <= kinds + 2,
        "{total} API requests for {kinds} kinds: {per_endpoint:#?}"
    );
    assert!(
        per_endpoint.keys().all(|k| !k.contains("/comments")),
        "{per_endpoint:#?}"
    );

    // One new comment: about that pull request's document is stored.
    let pr_id = s.server.metadata(WS, SLUG, |m| {
        let id = m.pull_requests[0].id;
        m.add_pr_comment(id, "erin", "one more thing");
        id
    });
    let third = backup(&s.rs);
    let new_bytes = third["repositories"][0]["outcome"]["new_bytes"]
        .as_u64()
        .expect("bytes");
    let (archive, snap) = latest(&s.rs);
    let pr_doc = serde_json::to_vec(&documents(&archive, &snap, "pullrequests")[&pr_id.to_string()])
        .unwrap()
        .len() as u64;
    assert!(
        new_bytes <= 2 * pr_doc + 4096,
        "one comment stored {new_bytes} bytes; the PR's document is {pr_doc} bytes"
    );

    // The originals are deleted; restore gives back git, LFS files and the wiki.
    s.server.remove_repo(WS, SLUG);
    let out = TempDir::new("full-out");
    let target = restore_checked(&s.rs, &format!("{WS}/{SLUG}"), &out.path().join("app.git"));
    assert_eq!(
        gitutil::refs_of(&target),
        gitutil::refs_of(&s.src.path().join("origin.git"))
    );
    let wiki = out.path().join("app.wiki.git");
    gitutil::fsck(&wiki);
    assert_eq!(
        gitutil::refs_of(&wiki),
        gitutil::refs_of(&s.src.path().join("wiki.git"))
    );
    for (name, content) in &s.lfs_files {
        let oid = sha256_hex(content);
        let path = target
            .join("lfs/objects")
            .join(&oid[..2])
            .join(&oid[2..4])
            .join(&oid);
        assert_eq!(&std::fs::read(&path).expect(name), content, "{name}");
    }
}

#[test]
fn a_kind_the_credential_may_not_read_is_missing_and_git_still_succeeds() {
    let s = setup();
    s.server.restrict_scopes(
        "acct",
        &["repository", "wiki", "issue", "project", "account"],
    );
    let report = backup(&s.rs);
    let outcome = &report["repositories"][0]["outcome"];
    assert_eq!(outcome["status"], "partial", "{report:#}");
    let missing: Vec<&str> = outcome["missing"]
        .as_array()
        .expect("missing")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        missing
            .iter()
            .any(|m| m.starts_with("pullrequests: needs") && m.contains("pullrequest")),
        "{missing:?}"
    );
    // `connection test` says which kinds the credential can read.
    let tested = s.rs.run(&["connection", "test", WS]).ok().stdout;
    assert!(
        tested.contains("it can read: ") && tested.contains("issues"),
        "{tested}"
    );
    assert!(
        tested.contains("it cannot read pullrequests: needs") && tested.contains("pullrequest"),
        "{tested}"
    );
    let (archive, snap) = latest(&s.rs);
    assert!(archive.has_blob(&snap.git.refs));
    assert!(!snap.git.packs.is_empty());
    assert!(!documents(&archive, &snap, "issues").is_empty());
}

/// Data Center: git, LFS (enabled on the repository), pull requests in every state with
/// their activities, settings and project-level items in one snapshot; unchanged re-run
/// stores nothing; after the originals are deleted the restore has every LFS file.
#[test]
fn data_center_repositories_are_backed_up_whole() {
    use reposafe_testkit::{DcOptions, DcServer, PrState};
    const KEY: &str = "CORE";
    let server = DcServer::start(DcOptions::default());
    let src = TempDir::new("full-dc-src");
    let content = gitutil::pseudo_random_bytes(42, 150_000);
    let mut work = WorkRepo::new();
    work.write(
        ".gitattributes",
        "*.bin filter=lfs diff=lfs merge=lfs -text\n",
    );
    work.write("big.bin", lfs_pointer(&content));
    work.commit("an LFS file");
    let bare = src.path().join("origin.git");
    gitutil::init_bare(&bare);
    work.push_mirror(&bare);
    server.add_repo(KEY, "svc", &bare, false);
    server.set_lfs_enabled(KEY, "svc", true);
    server.lfs().add(KEY, "svc", &content);
    server.populate(KEY, "svc", &Spec::default());
    server.metadata(KEY, "svc", |m| {
        let pr = m.add_pull_request(NewPullRequest::new("Declined idea", "alice"));
        m.add_pr_comment(pr, "bob", "not now");
        m.set_pr_state(pr, "bob", PrState::Declined);
    });
    server.add_user("jdoe", "secret-pw");
    server.grant("jdoe", KEY);
    server.grant_admin("jdoe", KEY);
    server.add_project_access_key(KEY, "deploy", "ssh-ed25519 AAAAC3Nza test@host");

    let rs = Reposafe::new();
    let pw = rs.secret_file("pw", "secret-pw");
    let args = common::dc_add_args(&server.base_url(), "dc", "jdoe", &pw);
    rs.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .ok();
    let run = rs.run(&["backup", "dc", "--json"]).ok();
    let report: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(
        report["repositories"][0]["outcome"]["status"], "snapshot",
        "{report:#}"
    );

    let (archive, snap) = latest(&rs);
    assert_eq!(
        snap.part_names(),
        vec!["git", "lfs", "metadata"],
        "{:?}",
        snap.missing()
    );
    assert!(snap.missing().is_empty(), "{:?}", snap.missing());
    let prs = documents(&archive, &snap, "pullrequests");
    let want = server.metadata(KEY, "svc", |m| m.pull_requests.len());
    assert_eq!(prs.len(), want);
    let declined = prs
        .values()
        .find(|d| d.to_string().contains("Declined idea"))
        .expect("the declined pull request");
    assert!(declined.to_string().contains("not now"), "{declined}");
    for kind in [
        "repository",
        "pull-request-settings",
        "branch-permissions",
        "webhooks",
        "access-keys",
        "project",
        "project-access-keys",
    ] {
        assert!(
            snap.metadata.as_ref().unwrap().kinds.contains_key(kind),
            "{kind} in {:?}",
            snap.metadata.as_ref().unwrap().kinds.keys()
        );
    }

    let again = rs.run(&["backup", "dc", "--json"]).ok();
    let again: Value = serde_json::from_str(&again.stdout).expect("JSON");
    assert_eq!(
        again["repositories"][0]["outcome"]["status"], "unchanged",
        "{again:#}"
    );

    let oid = sha256_hex(&content);
    server.lfs().remove(KEY, "svc", &oid);
    let out = TempDir::new("full-dc-out");
    let target = restore_checked(&rs, &format!("{KEY}/svc"), &out.path().join("svc.git"));
    assert_eq!(gitutil::refs_of(&target), gitutil::refs_of(&bare));
    let path = target
        .join("lfs/objects")
        .join(&oid[..2])
        .join(&oid[2..4])
        .join(&oid);
    assert_eq!(std::fs::read(path).expect("LFS object"), content);
}

/// A plan's `metadata_every` keeps metadata off the API between its intervals: the run
/// after a read carries the metadata forward without a single metadata request, and
/// `never` backs up git, wiki and LFS only. A bad interval is refused naming the field.
#[test]
fn a_plan_reads_metadata_on_its_own_cadence() {
    let s = setup();
    let bad = s.rs.run(&[
        "plan",
        "add",
        "daily",
        "--connection",
        WS,
        "--metadata-every",
        "6 hours",
    ]);
    assert_ne!(bad.code, 0);
    assert!(bad.all().contains("metadata_every"), "{}", bad.all());

    s.rs.run(&[
        "plan",
        "add",
        "daily",
        "--connection",
        WS,
        "--metadata-every",
        "1d",
    ])
    .ok();
    s.rs.run(&["run", "--plan", "daily"]).ok();
    let (_, first) = latest(&s.rs);
    assert!(first.metadata.is_some());

    // A new comment, and a new commit: git is backed up, metadata is not read yet.
    s.server.metadata(WS, SLUG, |m| {
        let id = m.pull_requests[0].id;
        m.add_pr_comment(id, "erin", "later");
    });
    let mut work = WorkRepo::new();
    work.write("new.txt", "new\n");
    work.commit("new work");
    let origin = s.src.path().join("origin.git").display().to_string();
    gitutil::git(
        work.path(),
        &["push", "--quiet", &origin, "HEAD:refs/heads/later"],
    );
    s.server.clear_log();
    s.rs.run(&["run", "--plan", "daily"]).ok();
    let metadata_requests: Vec<String> = api_requests(&s.server)
        .into_iter()
        .filter(|(k, _)| k.contains("/{slug}/") || k.starts_with("/2.0/workspaces/"))
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    assert!(metadata_requests.is_empty(), "{metadata_requests:?}");
    let (_, second) = latest(&s.rs);
    assert_ne!(second.id, first.id, "git changed: a new snapshot");
    assert_eq!(second.metadata, first.metadata, "metadata carried forward");

    s.rs.run(&[
        "plan",
        "add",
        "git-only",
        "--connection",
        WS,
        "--metadata-every",
        "never",
    ])
    .ok();
    s.rs.run(&["run", "--plan", "git-only"]).ok();
    let (_, third) = latest(&s.rs);
    assert!(third.metadata.is_none(), "{:?}", third.part_names());
    assert!(third.wiki.is_some() && third.lfs.is_some());
}
