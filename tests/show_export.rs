//! Reading a full backup back, end to end with the real binary: a Bitbucket Cloud
//! repository (the Cloud double) with LFS files, a wiki, pull requests with comments and
//! issues with attachments is backed up, the originals are deleted from the server, and
//! then `export` gives back every pull request, comment, author and date, every issue
//! attachment and LFS file byte for byte and the wiki's refs, and `show` lists the same
//! documents; a daemon serving the data dir prints the same as the CLI in process.

mod common;

use common::{
    gitutil, lfs_and_wiki_repo, start_daemon, CloudServer, Reposafe, TempDir, API_TOKEN, EMAIL,
};
use reposafe_testkit::metadata::{cloud_time, display_name};
use reposafe_testkit::{Inline, NewPullRequest, RepoMetadata, Spec};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const WS: &str = "acme";
const SLUG: &str = "app";
const REPO: &str = "acme/app";

/// What the server had, kept to compare with what comes back once it is gone.
struct Original {
    refs: BTreeMap<String, String>,
    wiki_refs: BTreeMap<String, String>,
    lfs_files: BTreeMap<String, Vec<u8>>,
    metadata: RepoMetadata,
}

/// A repository with LFS files, a wiki, pull requests and issues; backed up once; then
/// deleted from the server (and from disk).
fn backed_up_then_deleted(server: &CloudServer, rs: &Reposafe) -> Original {
    server.add_api_token("acct", EMAIL, API_TOKEN);
    server.grant("acct", WS);
    let src = TempDir::new("show-export-src");
    let repo = lfs_and_wiki_repo(server, WS, SLUG, src.path());
    server.populate(WS, SLUG, &Spec::default());
    server.metadata(WS, SLUG, |m| {
        let pr = m.add_pull_request(NewPullRequest::new("Inline review", "alice"));
        let inline = Inline {
            path: "src/lib.rs".into(),
            from: None,
            to: Some(3),
        };
        let c = m.add_pr_inline_comment(pr, "bob", "off by one?", inline);
        m.add_pr_reply(pr, c, "alice", "fixed");
    });
    let tok = rs.secret_file("token", API_TOKEN);
    let cred = [
        "--api-token-email",
        EMAIL,
        "--api-token-file",
        tok.to_str().expect("path"),
    ];
    rs.add_cloud(server, WS, &cred).ok();
    rs.run(&["backup", WS]).ok();

    let original = Original {
        refs: gitutil::refs_of(&repo.bare),
        wiki_refs: gitutil::refs_of(&repo.wiki_bare),
        lfs_files: repo.lfs_files,
        metadata: server.metadata(WS, SLUG, |m| m.clone()),
    };
    server.remove_repo(WS, SLUG);
    drop(src);
    assert!(
        !repo.bare.exists() && !repo.wiki_bare.exists(),
        "the originals are gone"
    );
    original
}

fn json_file(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Each exported document of `kind` by id, and the paths of its files by name
/// (through `snapshot.json`, which maps files to ids).
fn exported(dir: &Path, kind: &str) -> BTreeMap<String, (Value, BTreeMap<String, PathBuf>)> {
    let manifest = json_file(&dir.join("snapshot.json"));
    let items = manifest["metadata"][kind]["items"]
        .as_array()
        .unwrap_or_else(|| panic!("kind {kind} in snapshot.json: {}", manifest["metadata"]));
    let meta = dir.join("metadata");
    items
        .iter()
        .map(|item| {
            let file = item["file"].as_str().expect("file");
            let files = item["files"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    let name = f["name"].as_str().expect("name").to_string();
                    (name, meta.join(f["file"].as_str().expect("file")))
                })
                .collect();
            let id = item["id"].as_str().expect("id").to_string();
            (id, (json_file(&meta.join(file)), files))
        })
        .collect()
}

/// Every pull request with its comments: title, state, author, dates, text, authors.
fn check_pull_requests(dir: &Path, m: &RepoMetadata) {
    let docs = exported(dir, "pullrequests");
    assert_eq!(docs.len(), m.pull_requests.len(), "{:?}", docs.keys());
    for pr in &m.pull_requests {
        let (doc, _) = &docs[&pr.id.to_string()];
        let p = &doc["pullrequest"];
        assert_eq!(p["id"], pr.id);
        assert_eq!(p["title"], pr.title.as_str());
        assert_eq!(p["state"], pr.state.cloud());
        assert_eq!(
            p["author"]["display_name"],
            display_name(&pr.author).as_str()
        );
        assert_eq!(p["created_on"], cloud_time(pr.created_ms).as_str());
        assert_eq!(p["updated_on"], cloud_time(pr.updated_ms).as_str());
        let comments = doc["comments"].as_array().expect("comments");
        assert_eq!(comments.len(), pr.comments.len(), "PR {}", pr.id);
        for want in &pr.comments {
            let got = comments
                .iter()
                .find(|c| c["id"] == want.id)
                .unwrap_or_else(|| panic!("comment {} of PR {}", want.id, pr.id));
            assert_eq!(got["content"]["raw"], want.text.as_str());
            assert_eq!(
                got["user"]["display_name"],
                display_name(&want.author).as_str()
            );
            assert_eq!(got["created_on"], cloud_time(want.created_ms).as_str());
            assert_eq!(got["updated_on"], cloud_time(want.updated_ms).as_str());
            if let Some(parent) = want.parent {
                assert_eq!(got["parent"]["id"], parent);
            }
        }
    }
}

/// Every issue with its comments and its attachments byte for byte.
fn check_issues(dir: &Path, m: &RepoMetadata) {
    let docs = exported(dir, "issues");
    assert_eq!(docs.len(), m.issues.len(), "{:?}", docs.keys());
    for issue in &m.issues {
        let (doc, files) = &docs[&issue.id.to_string()];
        assert_eq!(doc["issue"]["title"], issue.title.as_str());
        assert_eq!(
            doc["issue"]["reporter"]["display_name"],
            display_name(&issue.reporter).as_str()
        );
        assert_eq!(
            doc["issue"]["updated_on"],
            cloud_time(issue.updated_ms).as_str()
        );
        let comments = doc["comments"].as_array().expect("comments");
        let texts: Vec<&str> = comments
            .iter()
            .filter_map(|c| c["content"]["raw"].as_str())
            .collect();
        for c in &issue.comments {
            assert!(texts.contains(&c.text.as_str()), "{} in {texts:?}", c.text);
        }
        assert_eq!(files.len(), issue.attachments.len());
        for a in &issue.attachments {
            let path = &files[&a.name];
            assert_eq!(
                std::fs::read(path).expect("attachment"),
                *a.bytes,
                "{}",
                a.name
            );
        }
    }
}

/// The repository with its LFS files (checked out through `git lfs` from the export) and
/// the wiki.
fn check_git(dir: &Path, original: &Original) {
    let repo = dir.join("repository.git");
    assert_eq!(gitutil::refs_of(&repo), original.refs);
    gitutil::fsck(&repo);
    assert_eq!(gitutil::refs_of(&dir.join("wiki.git")), original.wiki_refs);
    let clone = dir.parent().expect("parent").join("clone");
    gitutil::git_with_env(
        dir.parent().expect("parent"),
        &["clone", "--quiet", repo.to_str().expect("path"), "clone"],
        &[("GIT_LFS_SKIP_SMUDGE", "1")],
    );
    gitutil::git(&clone, &["lfs", "install", "--local"]);
    gitutil::git(&clone, &["lfs", "pull"]);
    for (name, content) in &original.lfs_files {
        assert_eq!(
            &std::fs::read(clone.join(name)).expect("lfs file"),
            content,
            "{name}"
        );
    }
}

/// What the show commands print.
fn shown(rs: &Reposafe) -> Vec<String> {
    [
        vec!["show", REPO],
        vec!["show", REPO, "--json"],
        vec!["show", REPO, "pullrequests"],
        vec!["show", REPO, "pullrequests", "--json"],
        vec!["show", REPO, "issues"],
    ]
    .iter()
    .map(|args| rs.run(args).ok().stdout)
    .collect()
}

/// The `error:` line of a command's stderr (the rest is its log).
fn error_line(stderr: &str) -> String {
    stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in {stderr}"))
        .to_string()
}

#[test]
fn a_deleted_repository_comes_back_whole_from_export_and_show() {
    let server = CloudServer::start();
    let rs = Reposafe::new();
    let original = backed_up_then_deleted(&server, &rs);
    let m = &original.metadata;

    let out = TempDir::new("show-export-out");
    let dir = out.path().join("export");
    let run = rs
        .run(&["export", REPO, "--to", dir.to_str().expect("path")])
        .ok();
    assert!(run.stdout.contains("repository.git"), "{}", run.stdout);
    check_git(&dir, &original);
    check_pull_requests(&dir, m);
    check_issues(&dir, m);

    let local = shown(&rs);
    let summary = &local[0];
    assert!(
        summary.contains("parts: git, wiki, lfs, metadata"),
        "{summary}"
    );
    assert!(summary.contains("lfs: 2 objects"), "{summary}");
    let count = m.pull_requests.len().to_string();
    assert!(
        summary
            .lines()
            .any(|l| l.split_whitespace().eq(["pullrequests", count.as_str()])),
        "{summary}"
    );
    for pr in &m.pull_requests {
        let line = format!(
            "{} [{}] by {}",
            pr.title,
            pr.state.cloud(),
            display_name(&pr.author)
        );
        assert!(local[2].contains(&line), "{line} in\n{}", local[2]);
    }
    let items: Vec<Value> = serde_json::from_str(&local[3]).expect("json");
    let docs = exported(&dir, "pullrequests");
    assert_eq!(items.len(), docs.len());
    for item in &items {
        let id = item["id"].as_str().expect("id");
        assert_eq!(
            item["document"], docs[id].0,
            "show --json and export agree on {id}"
        );
    }
    let unknown = rs.run(&["show", REPO, "nosuchkind"]);
    assert_ne!(unknown.code, 0);
    let error = error_line(&unknown.stderr);
    assert!(
        error.contains("\"nosuchkind\"")
            && error.contains("issues, ")
            && error.contains("pullrequests"),
        "{error}"
    );

    // Through a daemon: the same answers, and an export through its API.
    let mut daemon = start_daemon(&rs);
    let remote = shown(&rs);
    let dir2 = out.path().join("export-remote");
    let run2 = rs.run(&["export", REPO, "--to", dir2.to_str().expect("path")]);
    let unknown2 = rs.run(&["show", REPO, "nosuchkind"]);
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert_eq!(remote, local);
    assert_eq!(
        run2.ok().stdout.replace("export-remote", "export"),
        run.stdout
    );
    assert_eq!(error_line(&unknown2.stderr), error);
    check_pull_requests(&dir2, m);
}
