//! Tests of `git::push` against the Bitbucket doubles (the real `git http-backend` behind
//! them), with repositories made by the `git` CLI and checked with `git fsck`.

use std::{
    fs,
    io::Read,
    path::{Path, PathBuf},
    sync::atomic::AtomicBool,
};

use reposafe_testkit::{receive, CloudServer, DcOptions, DcServer, RepoMeta};
use secrecy::SecretString;

use super::{advertised_refs, push, PackSource, PushOptions, RefUpdate, RemoteRefs};
use crate::git::{tests::support::Git, GitAuth, GitError};

const TOKEN: &str = "push-token";

/// Pack files on disk as a [`PackSource`].
pub(super) struct Files(pub Vec<PathBuf>);

impl PackSource for Files {
    fn count(&self) -> usize {
        self.0.len()
    }
    fn size(&self, index: usize) -> u64 {
        fs::metadata(&self.0[index]).map(|m| m.len()).unwrap_or(0)
    }
    fn open(&self, index: usize) -> std::io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(fs::File::open(&self.0[index])?))
    }
}

pub(super) fn basic(user: &str, secret: &str) -> GitAuth {
    use base64::Engine as _;
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
    GitAuth::Header(SecretString::from(format!("Basic {pair}")))
}

fn opts<'a>(url: &'a str, auth: &'a GitAuth, interrupt: &'a AtomicBool) -> PushOptions<'a> {
    PushOptions {
        url,
        auth,
        tls: None,
        progress: None,
        should_interrupt: interrupt,
    }
}

/// A Cloud double with workspace `dr`, a credential that may push, and an empty repository
/// `dr/app`; returns the server, the repository's URL and its bare repository.
fn cloud_with_empty_repo(git: &Git) -> (CloudServer, String, PathBuf) {
    let server = CloudServer::start();
    server.add_api_token("restorer", "restorer@example.com", TOKEN);
    server.grant("restorer", "dr");
    let bare = git.root().join("server-app.git");
    git.run(git.root(), &["init", "--bare", "-q", "server-app.git"]);
    server.add_repo("dr", "app", &bare, RepoMeta::default());
    let url = server.git_url("dr", "app");
    (server, url, bare)
}

fn cloud_auth() -> GitAuth {
    basic("x-bitbucket-api-token-auth", TOKEN)
}

/// A repository with branches, a merge, an annotated and a lightweight tag, and a file that
/// changes a little in every commit (so packs hold deltas).
fn source_repo(git: &Git) -> PathBuf {
    let work = git.root().join("work");
    git.run(git.root(), &["init", "-q", "work"]);
    let mut text: String = (0..400)
        .map(|i| format!("line {i} of the file\n"))
        .collect();
    for i in 0..6 {
        text.push_str(&format!("change {i}\n"));
        fs::write(work.join("file.txt"), &text).expect("write");
        fs::write(work.join(format!("f{i}.txt")), format!("file {i}\n")).expect("write");
        git.run(&work, &["add", "-A"]);
        git.run(&work, &["commit", "-q", "-m", &format!("commit {i}")]);
        if i == 2 {
            git.run(&work, &["branch", "feature"]);
            git.run(&work, &["tag", "-a", "v1.0", "-m", "release 1.0"]);
        }
    }
    git.run(&work, &["checkout", "-q", "feature"]);
    fs::write(work.join("feature.txt"), "feature\n").expect("write");
    git.run(&work, &["add", "-A"]);
    git.run(&work, &["commit", "-q", "-m", "feature work"]);
    git.run(&work, &["tag", "light"]);
    git.run(&work, &["checkout", "-q", "main"]);
    git.run(
        &work,
        &["merge", "-q", "--no-ff", "-m", "merge feature", "feature"],
    );
    git.run(&work, &["branch", "release/2.x", "HEAD~2"]);
    work
}

/// `refname objectname` lines of `git for-each-ref`.
fn for_each_ref(git: &Git, repo: &Path) -> String {
    git.run(repo, &["for-each-ref", "--format=%(refname) %(objectname)"])
}

/// Every ref of `repo` as an update creating it.
pub(super) fn creations(git: &Git, repo: &Path) -> Vec<RefUpdate> {
    for_each_ref(git, repo)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(name, id)| RefUpdate {
            name: name.to_owned(),
            old: None,
            new: id.to_owned(),
        })
        .collect()
}

/// A bare copy of `work` repacked into one pack; returns it and the pack.
fn one_pack(git: &Git, work: &Path, name: &str) -> (PathBuf, PathBuf) {
    let bare = git.root().join(name);
    git.clone_mirror(work, &bare);
    git.run(&bare, &["repack", "-adq"]);
    (bare.clone(), packs_of(&bare).remove(0))
}

pub(super) fn packs_of(repo: &Path) -> Vec<PathBuf> {
    let mut packs: Vec<PathBuf> = fs::read_dir(repo.join("objects/pack"))
        .expect("pack dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .collect();
    packs.sort();
    packs
}

fn object_count(git: &Git, repo: &Path) -> u64 {
    git.run(repo, &["cat-file", "--batch-all-objects", "--batch-check"])
        .lines()
        .count() as u64
}

#[test]
fn a_repository_with_branches_and_tags_is_pushed_whole_into_an_empty_cloud_repository() {
    let git = Git::new();
    let work = source_repo(&git);
    let (source, pack) = one_pack(&git, &work, "source.git");
    let (server, url, target) = cloud_with_empty_repo(&git);
    let auth = cloud_auth();
    let interrupt = AtomicBool::new(false);
    let opts = opts(&url, &auth, &interrupt);

    let remote = advertised_refs(&opts).expect("advertisement");
    assert!(remote.refs.is_empty(), "{remote:?}");
    for cap in ["report-status", "side-band-64k", "atomic", "ofs-delta"] {
        assert!(remote.capabilities.iter().any(|c| c == cap), "{remote:?}");
    }
    let updates = creations(&git, &source);
    assert_eq!(updates.len(), 5, "{updates:?}");
    let report = push(&opts, &remote, &updates, &Files(vec![pack.clone()])).expect("push");
    for (name, result) in &report.refs {
        assert_eq!(result, &Ok(()), "{name}");
    }
    assert_eq!(report.refs.len(), updates.len());
    assert_eq!(report.pack_bytes, fs::metadata(&pack).expect("pack").len());
    assert_eq!(report.objects, object_count(&git, &source));
    assert_eq!(for_each_ref(&git, &target), for_each_ref(&git, &source));
    git.fsck(&target);
    // The refs are there now, and an empty update list sends nothing.
    let again = advertised_refs(&opts).expect("advertisement");
    assert_eq!(again.refs.len(), updates.len());
    let before = server.request_log().len();
    let nothing = push(&opts, &again, &[], &Files(vec![pack])).expect("empty push");
    assert!(nothing.refs.is_empty());
    assert_eq!(server.request_log().len(), before);
}

/// Three packs like a fetch chain, where later packs repeat objects of earlier ones.
fn pack_chain(git: &Git, work: &Path) -> Vec<PathBuf> {
    let out = git.root().join("chain");
    fs::create_dir_all(&out).expect("dir");
    let mut packs = Vec::new();
    // main~4 whole; then all of main~1 (repeating everything of the first); then the rest
    // not reachable from main~3 (repeating some of the second).
    for (i, revs) in ["main~4\n", "main~1\n", "main\nfeature\nv1.0\n^main~3\n"]
        .iter()
        .enumerate()
    {
        let mut child = git
            .command(work)
            .args([
                "pack-objects",
                "--revs",
                "-q",
                &format!("{}/p{i}", out.display()),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("pack-objects");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(revs.as_bytes())
            .expect("revs");
        let output = child.wait_with_output().expect("pack-objects");
        assert!(output.status.success());
        let hash = String::from_utf8(output.stdout).expect("utf8");
        packs.push(out.join(format!("p{i}-{}.pack", hash.trim())));
    }
    packs
}

#[test]
fn a_chain_of_packs_with_repeated_objects_sends_each_object_once() {
    let git = Git::new();
    let work = source_repo(&git);
    let packs = pack_chain(&git, &work);
    let (_server, url, target) = cloud_with_empty_repo(&git);
    git.run(&target, &["config", "receive.fsckObjects", "true"]);
    let auth = cloud_auth();
    let interrupt = AtomicBool::new(false);
    let opts = opts(&url, &auth, &interrupt);
    let remote = advertised_refs(&opts).expect("advertisement");
    let updates = creations(&git, &work);
    let in_packs: u64 = packs
        .iter()
        .map(|p| {
            let out = git
                .command(&work)
                .arg("show-index")
                .stdin(fs::File::open(p.with_extension("idx")).expect("idx"))
                .output()
                .expect("show-index");
            String::from_utf8_lossy(&out.stdout).lines().count() as u64
        })
        .sum();
    let distinct = object_count(&git, &work);
    assert!(in_packs > distinct, "the chain must repeat objects");

    let report = push(&opts, &remote, &updates, &Files(packs)).expect("push");
    for (name, result) in &report.refs {
        assert_eq!(result, &Ok(()), "{name}");
    }
    assert_eq!(report.objects, distinct);
    assert_eq!(for_each_ref(&git, &target), for_each_ref(&git, &work));
    git.fsck(&target);
}

/// Pushes every ref of a fresh source repository into `url` and returns the report.
fn push_source(git: &Git, url: &str, auth: &GitAuth) -> Result<super::PushReport, GitError> {
    static COPIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let work = git.root().join("work");
    if !work.exists() {
        source_repo(git);
    }
    let copy = COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (source, pack) = one_pack(git, &work, &format!("source-{copy}.git"));
    let interrupt = AtomicBool::new(false);
    let opts = opts(url, auth, &interrupt);
    let remote = advertised_refs(&opts)?;
    push(&opts, &remote, &creations(git, &source), &Files(vec![pack]))
}

fn assert_nothing_written(git: &Git, target: &Path) {
    assert_eq!(for_each_ref(git, target), "");
    assert!(packs_of(target).is_empty(), "a pack was stored");
}

#[test]
fn bitbucket_refusals_are_reported_per_ref_with_what_to_do() {
    let cases: [(&str, String, &[&str]); 3] = [
        (
            "*",
            receive::CLOUD_REPOSITORY_SIZE_LIMIT.to_owned(),
            &[
                "4 GB size limit",
                "remote: Repository is over the size limit (4 GB)",
            ],
        ),
        (
            "*",
            receive::CLOUD_FILE_SIZE_LIMIT.to_owned(),
            &["100 MB or more", "Repository settings > Advanced"],
        ),
        (
            "refs/heads/main",
            receive::cloud_branch_restriction("main"),
            &[
                "branch permissions",
                "remote: Permission denied to update branch main.",
            ],
        ),
    ];
    for (glob, message, expected) in cases {
        let git = Git::new();
        let (_server, url, target) = cloud_with_empty_repo(&git);
        receive::install_pre_receive(&target, glob, &message);
        let report = push_source(&git, &url, &cloud_auth()).expect("push answered");
        // Atomic: one declined ref keeps every ref out.
        let main = report
            .refs
            .iter()
            .find(|(name, _)| name == "refs/heads/main")
            .expect("main reported");
        let reason = main.1.clone().expect_err("main refused");
        assert!(reason.starts_with("refs/heads/main"), "{reason}");
        for part in expected {
            assert!(reason.contains(part), "{part:?} missing in {reason}");
        }
        assert!(report.refs.iter().all(|(_, r)| r.is_err()), "{report:?}");
        assert_eq!(for_each_ref(&git, &target), "");
    }
}

#[test]
fn data_center_pushes_and_reports_its_branch_permissions() {
    let git = Git::new();
    let server = DcServer::start(DcOptions::default());
    server.add_project("DR", "Disaster recovery");
    server.add_user("restorer", "secret");
    server.grant("restorer", "DR");
    server.add_user("reader", "secret2");
    server.grant("reader", "DR");
    server.set_read_only("reader");
    git.run(git.root(), &["init", "--bare", "-q", "ok.git"]);
    git.run(git.root(), &["init", "--bare", "-q", "refused.git"]);
    server.add_repo("DR", "ok", &git.root().join("ok.git"), false);
    server.add_repo("DR", "refused", &git.root().join("refused.git"), false);
    let refused = git.root().join("refused.git");
    receive::install_pre_receive(
        &refused,
        "refs/heads/main",
        &receive::dc_pull_request_only("refs/heads/main"),
    );
    let url = |slug: &str| format!("{}/scm/dr/{slug}.git", server.base_url());
    let auth = basic("restorer", "secret");

    let report = push_source(&git, &url("ok"), &auth).expect("push");
    assert!(report.refs.iter().all(|(_, r)| r.is_ok()), "{report:?}");
    git.fsck(&git.root().join("ok.git"));

    let report = push_source(&git, &url("refused"), &auth).expect("push answered");
    let (_, main) = &report.refs[1];
    let reason = main.clone().expect_err("main refused");
    assert!(reason.contains("branch permissions"), "{reason}");
    assert!(
        reason
            .contains("remote: Branch refs/heads/main can only be modified through pull requests."),
        "{reason}"
    );
    assert_nothing_written(&git, &refused);

    match push_source(&git, &url("refused"), &basic("reader", "secret2")) {
        Err(GitError::PushForbidden { url: shown }) => assert_eq!(shown, url("refused")),
        other => panic!("expected PushForbidden, got {other:?}"),
    }
}

#[test]
fn a_read_only_credential_gets_a_clear_error_and_nothing_is_written() {
    let git = Git::new();
    let (server, url, target) = cloud_with_empty_repo(&git);
    server.set_read_only("restorer");
    let err = push_source(&git, &url, &cloud_auth()).expect_err("refused");
    assert!(matches!(err, GitError::PushForbidden { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("the credential may not push to {url}")),
        "{err}"
    );
    // Even without the advertisement (a stale one), the POST itself is refused.
    let work = git.root().join("work");
    let (_, pack) = one_pack(&git, &work, "again.git");
    let interrupt = AtomicBool::new(false);
    let auth = cloud_auth();
    let remote = RemoteRefs {
        refs: Vec::new(),
        capabilities: vec!["report-status".into(), "side-band-64k".into()],
    };
    let updates = creations(&git, &work);
    let err = push(
        &opts(&url, &auth, &interrupt),
        &remote,
        &updates,
        &Files(vec![pack]),
    )
    .expect_err("refused");
    assert!(matches!(err, GitError::PushForbidden { .. }), "{err:?}");
    assert_nothing_written(&git, &target);
}

#[test]
fn into_a_repository_with_some_refs_only_the_missing_ones_are_sent() {
    let git = Git::new();
    let work = source_repo(&git);
    let (source, pack) = one_pack(&git, &work, "source.git");
    let (server, url, target) = cloud_with_empty_repo(&git);
    git.run(&target, &["config", "receive.denyNonFastForwards", "true"]);
    // The server already has main and v1.0 (pushed by git itself).
    git.run(
        &source,
        &[
            "push",
            "-q",
            target.to_str().expect("utf8"),
            "refs/heads/main",
            "refs/tags/v1.0",
        ],
    );
    let auth = cloud_auth();
    let interrupt = AtomicBool::new(false);
    let opts = opts(&url, &auth, &interrupt);
    let remote = advertised_refs(&opts).expect("advertisement");
    assert_eq!(remote.refs.len(), 2, "{remote:?}");
    let missing: Vec<RefUpdate> = creations(&git, &source)
        .into_iter()
        .filter(|u| !remote.refs.iter().any(|(name, _)| name == &u.name))
        .collect();
    assert_eq!(missing.len(), 3);
    server.clear_log();
    let report = push(&opts, &remote, &missing, &Files(vec![pack.clone()])).expect("push");
    assert!(report.refs.iter().all(|(_, r)| r.is_ok()), "{report:?}");
    assert_eq!(report.refs.len(), 3);
    assert_eq!(for_each_ref(&git, &target), for_each_ref(&git, &source));
    git.fsck(&target);

    // Moving an existing branch backwards is refused as non-fast-forward, naming the ref.
    let remote = advertised_refs(&opts).expect("advertisement");
    let main = remote
        .refs
        .iter()
        .find(|(n, _)| n == "refs/heads/main")
        .expect("main");
    let older = git.run(&source, &["rev-parse", "main~2"]).trim().to_owned();
    let back = RefUpdate {
        name: "refs/heads/main".into(),
        old: Some(main.1.clone()),
        new: older,
    };
    let report = push(&opts, &remote, &[back], &Files(vec![pack])).expect("push answered");
    let reason = report.refs[0].1.clone().expect_err("refused");
    assert!(reason.contains("refs/heads/main"), "{reason}");
    assert!(reason.contains("non-fast-forward"), "{reason}");
    assert!(reason.contains("--into-existing"), "{reason}");
}
