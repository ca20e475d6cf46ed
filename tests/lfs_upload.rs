//! LFS upload (restore into a provider): the objects of a real `git lfs` repository,
//! archived as blobs, are uploaded with `lfs::upload_objects` to the Cloud and Data
//! Center test doubles; `git lfs fetch --all` (the reference client) then gets every
//! object byte for byte from the double. A second upload sends no PUT (the server has
//! them); a gate without writes refuses before any request; a read-only credential gets
//! the server's 403, named per object.

mod common;

use reposafe::archive::{Archive, BlobId};
use reposafe::git::LfsPointer;
use reposafe::lfs::{upload_objects, LfsError, UploadOptions, UploadReport};
use reposafe::providers::http::{self as gate_http, HttpGate, RetryPolicy};
use reposafe::providers::{failover, AuthScheme, Authenticator};
use reposafe::vault::{Credential, CredentialKind};
use reposafe_testkit::gitutil;
use reposafe_testkit::{CloudServer, DcOptions, DcServer, TempDir};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

const EMAIL: &str = "lfs@acme.test";
const TOKEN: &str = "ATATT-lfs-upload-token";
const GIT_USER: &str = "x-bitbucket-api-token-auth";

/// A gate for `base` with a Basic credential (`user` fixed, or the identity), granting
/// writes when `writes`.
fn gate(
    base: &str,
    kind: CredentialKind,
    git: AuthScheme,
    user: &str,
    secret: &str,
    writes: bool,
) -> HttpGate {
    let policy = RetryPolicy {
        max_retries: 0,
        timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let client = gate_http::client(&policy);
    let auth = Authenticator::new(
        Credential {
            kind,
            identity: Some(user.to_string()),
            secret: secret.to_string().into(),
        },
        git.clone(),
        git,
        None,
        client.clone(),
    );
    let origins = reposafe::providers::parse_origins(&[base.to_string()]);
    let gate = HttpGate::new(client, origins, Arc::new(auth), policy);
    if writes {
        gate.allowing_writes()
    } else {
        gate
    }
}

/// The LFS files' contents archived as blobs, with their pointers.
fn archived(archive: &Archive, files: &BTreeMap<String, Vec<u8>>) -> Vec<(LfsPointer, BlobId)> {
    files
        .values()
        .map(|content| {
            let put = archive.put_reader(content.as_slice()).expect("archive");
            let pointer = LfsPointer {
                oid: reposafe_testkit::lfs::sha256_hex(content),
                size: content.len() as u64,
            };
            (pointer, put.id)
        })
        .collect()
}

fn upload(
    gate: &HttpGate,
    archive: &Archive,
    lfs_url: &str,
    objects: &[(LfsPointer, BlobId)],
) -> Result<UploadReport, LfsError> {
    let never = AtomicBool::new(false);
    let opts = UploadOptions {
        concurrency: 4,
        policy: failover::Policy {
            retries: 0,
            backoff: Duration::from_millis(1),
            network_wait_cap: Duration::from_millis(10),
            max_wait: Duration::from_millis(10),
            rate_limit_retries: 1,
            when_exhausted: failover::WhenExhausted::GiveUp,
        },
        retries: 1,
        retry_base: Duration::from_millis(50),
        interrupt: &never,
        progress: None,
    };
    upload_objects(gate, archive, lfs_url, objects, &opts)
}

fn pointers(objects: &[(LfsPointer, BlobId)]) -> Vec<LfsPointer> {
    let mut p: Vec<LfsPointer> = objects.iter().map(|(p, _)| p.clone()).collect();
    p.sort();
    p
}

/// `git lfs fetch --all` of `url` into a fresh clone: the objects it got, by oid.
fn fetched_by_git_lfs(url: &str, scratch: &Path) -> BTreeMap<String, Vec<u8>> {
    let clone = scratch.join("clone");
    gitutil::git_with_env(
        scratch,
        &["clone", "--quiet", url, "clone"],
        &[("GIT_LFS_SKIP_SMUDGE", "1")],
    );
    gitutil::git(&clone, &["lfs", "fetch", "--all"]);
    common::files_under(&clone.join(".git/lfs/objects"))
        .into_iter()
        .map(|f| {
            let oid = f.file_name().expect("name").to_string_lossy().into_owned();
            (oid, std::fs::read(&f).expect("object"))
        })
        .collect()
}

#[test]
fn objects_uploaded_to_the_cloud_double_are_fetched_back_by_git_lfs_and_not_sent_twice() {
    assert!(
        gitutil::try_git(Path::new("."), &["lfs", "version"]).is_ok(),
        "this test needs git-lfs (Debian package git-lfs)"
    );
    let scratch = TempDir::new("lfs-upload");
    let server = CloudServer::start();
    server.add_api_token("lfs", EMAIL, TOKEN);
    server.grant("lfs", "acme");
    let source = common::lfs_and_wiki_repo(&server, "acme", "app", scratch.path());
    // The restore target: the same git history, no LFS objects yet.
    server.add_repo(
        "acme",
        "dr",
        &source.bare,
        reposafe_testkit::RepoMeta::default(),
    );
    let archive_dir = TempDir::new("lfs-upload-archive");
    let archive = Archive::open_or_create(archive_dir.path()).expect("archive");
    let objects = archived(&archive, &source.lfs_files);
    let base = server.git_url("acme", "dr");
    let base = base.split("/acme/").next().expect("origin").to_string();
    let lfs_url = format!("{}/info/lfs", server.git_url("acme", "dr"));

    let read_only = gate(
        &base,
        CredentialKind::ApiToken,
        AuthScheme::BasicFixedUser(GIT_USER.into()),
        EMAIL,
        TOKEN,
        false,
    );
    let before = server.request_log().len();
    let refused = upload(&read_only, &archive, &lfs_url, &objects);
    assert!(
        matches!(&refused, Err(LfsError::WritesRefused { .. })),
        "{refused:?}"
    );
    assert!(refused.unwrap_err().to_string().contains("--allow-restore"));
    assert_eq!(server.request_log().len(), before, "nothing sent");

    let writer = gate(
        &base,
        CredentialKind::ApiToken,
        AuthScheme::BasicFixedUser(GIT_USER.into()),
        EMAIL,
        TOKEN,
        true,
    );
    let report = upload(&writer, &archive, &lfs_url, &objects).expect("upload");
    assert_eq!(report.uploaded, pointers(&objects), "{report:?}");
    assert!(
        report.present.is_empty() && report.failed.is_empty(),
        "{report:?}"
    );
    let total: u64 = objects.iter().map(|(p, _)| p.size).sum();
    assert_eq!(report.uploaded_bytes, total);
    assert_eq!(report.batches, 1);
    let once: BTreeMap<String, usize> = objects.iter().map(|(p, _)| (p.oid.clone(), 1)).collect();
    assert_eq!(server.lfs().uploads(), once, "one PUT per object");
    assert_eq!(server.lfs().verified(), once, "each verified");

    let url =
        server
            .git_url("acme", "dr")
            .replacen("http://", &format!("http://{GIT_USER}:{TOKEN}@"), 1);
    let fetched = fetched_by_git_lfs(&url, scratch.path());
    let expected: BTreeMap<String, Vec<u8>> = source
        .lfs_files
        .values()
        .map(|c| (reposafe_testkit::lfs::sha256_hex(c), c.clone()))
        .collect();
    assert_eq!(
        fetched, expected,
        "git lfs gets every object, byte for byte"
    );

    let again = upload(&writer, &archive, &lfs_url, &objects).expect("second upload");
    assert_eq!(again.present, pointers(&objects), "{again:?}");
    assert!(again.uploaded.is_empty() && again.failed.is_empty());
    assert_eq!(again.uploaded_bytes, 0);
    assert_eq!(server.lfs().uploads(), once, "no PUT the second time");
}

#[test]
fn the_dc_double_takes_uploads_and_refuses_a_read_only_credential_with_403() {
    let scratch = TempDir::new("lfs-upload-dc");
    let server = DcServer::start(DcOptions::default());
    server.add_project("PRJ", "Project");
    server.add_user("writer", "pw-writer");
    server.add_user("reader", "pw-reader");
    server.grant("writer", "PRJ");
    server.grant("reader", "PRJ");
    server.set_read_only("reader");
    let bare = common::small_bare_repo(scratch.path(), 1);
    server.add_repo("PRJ", "app", &bare, false);
    server.set_lfs_enabled("PRJ", "app", true);
    let files: BTreeMap<String, Vec<u8>> = (0..3u64)
        .map(|i| {
            (
                format!("f{i}.bin"),
                gitutil::pseudo_random_bytes(i + 7, 50_000 + i as usize),
            )
        })
        .collect();
    let archive_dir = TempDir::new("lfs-upload-dc-archive");
    let archive = Archive::open_or_create(archive_dir.path()).expect("archive");
    let objects = archived(&archive, &files);
    let base = server.base_url();
    let lfs_url = format!("{base}/scm/prj/app.git/info/lfs");

    let reader = gate(
        &base,
        CredentialKind::Basic,
        AuthScheme::BasicIdentity,
        "reader",
        "pw-reader",
        true,
    );
    let report = upload(&reader, &archive, &lfs_url, &objects).expect("a report");
    assert!(report.uploaded.is_empty(), "{report:?}");
    assert_eq!(report.failed.len(), objects.len());
    for (_, reason) in &report.failed {
        assert!(
            reason.contains("403") && reason.contains("may not"),
            "{reason}"
        );
    }
    assert!(server.lfs().uploads().is_empty());

    let writer = gate(
        &base,
        CredentialKind::Basic,
        AuthScheme::BasicIdentity,
        "writer",
        "pw-writer",
        true,
    );
    let report = upload(&writer, &archive, &lfs_url, &objects).expect("upload");
    assert_eq!(report.uploaded, pointers(&objects), "{report:?}");
    for (pointer, _) in &objects {
        let stored = server.lfs().object("PRJ", "app", &pointer.oid);
        let content = files
            .values()
            .find(|c| reposafe_testkit::lfs::sha256_hex(c) == pointer.oid);
        assert_eq!(stored.as_ref(), content, "{}", pointer.oid);
    }
}
