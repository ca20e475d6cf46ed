//! The Cloud test double serves Git LFS the way the reference client expects: `git lfs
//! fetch --all` (Debian's git-lfs) downloads every object a repository has through the
//! batch API and the second, storage origin, and names the one it lacks. The storage origin
//! takes the download action's own header and refuses the git credential.

use std::path::Path;

use reposafe_testkit::gitutil::{self, WorkRepo};
use reposafe_testkit::{CloudServer, RepoMeta, TempDir};

const EMAIL: &str = "lfs@acme.test";
const TOKEN: &str = "ATATT-lfs-double-token";
const GIT_USER: &str = "x-bitbucket-api-token-auth";

/// The pointer file git-lfs writes for `content` (`git lfs pointer --file`).
fn pointer_of(dir: &Path, name: &str, content: &[u8]) -> String {
    let file = dir.join(name);
    std::fs::write(&file, content).expect("write");
    gitutil::git(
        dir,
        &["lfs", "pointer", &format!("--file={}", file.display())],
    )
}

fn server_with_lfs_repo(files: &[(String, Vec<u8>)], scratch: &Path) -> (CloudServer, Vec<String>) {
    let server = CloudServer::start();
    server.add_api_token("lfs", EMAIL, TOKEN);
    server.grant("lfs", "acme");
    let mut work = WorkRepo::new();
    work.write(
        ".gitattributes",
        "*.bin filter=lfs diff=lfs merge=lfs -text\n",
    );
    for (name, content) in files {
        let pointer = pointer_of(scratch, name, content);
        work.write(name, pointer);
    }
    work.commit("LFS files (pointers)");
    let bare = scratch.join("origin.git");
    gitutil::init_bare(&bare);
    work.push_mirror(&bare);
    server.add_repo("acme", "media", &bare, RepoMeta::default());
    // The server has every object but the last.
    let oids = files[..files.len() - 1]
        .iter()
        .map(|(_, content)| server.lfs().add("acme", "media", content))
        .collect();
    (server, oids)
}

#[test]
fn git_lfs_fetches_every_object_from_the_storage_origin_and_names_the_missing_one() {
    let lfs = gitutil::try_git(Path::new("."), &["lfs", "version"]);
    assert!(
        lfs.is_ok(),
        "this test needs git-lfs (Debian package git-lfs)"
    );
    let scratch = TempDir::new("lfs-double");
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            (
                format!("f{i}.bin"),
                gitutil::pseudo_random_bytes(i + 1, 100_000 + i as usize),
            )
        })
        .collect();
    let (server, oids) = server_with_lfs_repo(&files, scratch.path());
    let url = server.git_url("acme", "media").replacen(
        "http://",
        &format!("http://{GIT_USER}:{TOKEN}@"),
        1,
    );
    let clone = scratch.path().join("clone");
    gitutil::git_with_env(
        scratch.path(),
        &["clone", "--quiet", &url, "clone"],
        &[("GIT_LFS_SKIP_SMUDGE", "1")],
    );
    let fetched = gitutil::try_git(&clone, &["lfs", "fetch", "--all"]);
    let missing = pointer_of(scratch.path(), "probe", &files[2].1);
    let missing_oid = missing
        .lines()
        .find_map(|l| l.strip_prefix("oid sha256:"))
        .expect("oid line")
        .to_string();
    match &fetched {
        Ok(_) => panic!("git lfs fetch must report the object the server lacks"),
        Err(err) => assert!(err.contains(&missing_oid), "{err}"),
    }
    for ((_, content), oid) in files.iter().zip(&oids) {
        let stored = clone
            .join(".git/lfs/objects")
            .join(&oid[0..2])
            .join(&oid[2..4])
            .join(oid);
        assert_eq!(
            std::fs::read(&stored).ok().as_deref(),
            Some(content.as_slice()),
            "{oid}"
        );
    }
    let downloads = server.lfs().downloads();
    let mut expected: Vec<&String> = oids.iter().collect();
    expected.sort();
    assert_eq!(
        downloads.keys().collect::<Vec<_>>(),
        expected,
        "each object from the storage origin"
    );
    assert!(downloads.values().all(|n| *n == 1), "{downloads:?}");
}

#[test]
fn the_storage_origin_takes_the_actions_header_and_refuses_the_git_credential() {
    let scratch = TempDir::new("lfs-origin");
    let content = gitutil::pseudo_random_bytes(9, 4096);
    let server = CloudServer::start();
    server.add_api_token("lfs", EMAIL, TOKEN);
    server.grant("lfs", "acme");
    let bare = scratch.path().join("origin.git");
    gitutil::init_bare(&bare);
    let mut work = WorkRepo::new();
    work.write("README", "lfs\n");
    work.commit("init");
    work.push_mirror(&bare);
    server.add_repo("acme", "media", &bare, RepoMeta::default());
    let oid = server.lfs().add("acme", "media", &content);

    let client = reqwest::blocking::Client::new();
    let batch_url = format!("{}/info/lfs/objects/batch", server.git_url("acme", "media"));
    let body = serde_json::json!({"operation": "download", "transfers": ["basic"],
        "objects": [{"oid": oid, "size": content.len()}]});
    let unauthenticated = client
        .post(&batch_url)
        .header("Accept", "application/vnd.git-lfs+json")
        .json(&body)
        .send()
        .expect("batch");
    assert_eq!(unauthenticated.status(), 401);
    let answer: serde_json::Value = client
        .post(&batch_url)
        .basic_auth(GIT_USER, Some(TOKEN))
        .header("Accept", "application/vnd.git-lfs+json")
        .json(&body)
        .send()
        .expect("batch")
        .json()
        .expect("json");
    let action = &answer["objects"][0]["actions"]["download"];
    let href = action["href"].as_str().expect("href");
    assert!(
        !href.starts_with(&server.base_url()),
        "another origin: {href}"
    );
    let (name, value) = action["header"]
        .as_object()
        .and_then(|h| h.iter().next())
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
        .expect("a header");

    let with_git_credential = client
        .get(href)
        .basic_auth(GIT_USER, Some(TOKEN))
        .send()
        .expect("get");
    assert_eq!(with_git_credential.status(), 400);
    let without_header = client.get(href).send().expect("get");
    assert_eq!(without_header.status(), 400);
    let got = client
        .get(href)
        .header(name.as_str(), value.as_str())
        .send()
        .expect("get");
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().expect("body").as_ref(), content.as_slice());
}
