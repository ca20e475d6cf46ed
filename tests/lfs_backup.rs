//! Git LFS objects in backups, end to end with the real binary against the Cloud double
//! (batch API on the git origin, objects from a second storage origin that refuses the git
//! credential): a backup stores every object its pointers name, a missing one is reported
//! per object while the snapshot completes (and fetched on a later run once it is back),
//! an unchanged re-run downloads nothing, a corrupt download is refused, and a restore
//! after the originals are gone gives a bare repository on which `git lfs` checks out
//! every file byte-identical. The same against the Data Center double, over TLS with the
//! connection's CA bundle.

mod common;

use common::{gitutil, lfs_pointer, CloudServer, Reposafe, TempDir, API_TOKEN, EMAIL};
use reposafe_testkit::lfs::sha256_hex;
use reposafe_testkit::{DcOptions, DcServer, RepoMeta, WorkRepo};
use std::collections::BTreeMap;
use std::path::Path;

const WS: &str = "acme";
const SLUG: &str = "media";

struct Setup {
    server: CloudServer,
    rs: Reposafe,
    _src: TempDir,
    /// name → content of the LFS files on `main`.
    files: BTreeMap<String, Vec<u8>>,
}

/// A repository whose `main` has LFS files (every object on the server) and whose
/// branch `extra` has one more whose object the server lacks.
fn setup(files: &[(&str, Vec<u8>)], absent: &[u8]) -> Setup {
    let server = CloudServer::start();
    server.add_api_token("acct", EMAIL, API_TOKEN);
    server.grant("acct", WS);
    let src = TempDir::new("lfs-src");
    let mut work = WorkRepo::new();
    work.write(
        ".gitattributes",
        "*.bin filter=lfs diff=lfs merge=lfs -text\n",
    );
    work.write("README", "LFS files\n");
    for (name, content) in files {
        work.write(name, lfs_pointer(content));
        server.lfs().add(WS, SLUG, content);
    }
    work.commit("LFS files");
    work.branch("extra").checkout("extra");
    work.write("absent.bin", lfs_pointer(absent));
    work.commit("an LFS file whose object is not on the server");
    work.checkout("main");
    let bare = src.path().join("origin.git");
    gitutil::init_bare(&bare);
    work.push_mirror(&bare);
    server.add_repo(WS, SLUG, &bare, RepoMeta::default());
    let rs = Reposafe::new();
    let tok = rs.secret_file("token", API_TOKEN);
    let tok = tok.display().to_string();
    rs.add_cloud(
        &server,
        WS,
        &["--api-token-email", EMAIL, "--api-token-file", &tok],
    )
    .ok();
    Setup {
        server,
        rs,
        _src: src,
        files: files
            .iter()
            .map(|(n, c)| (n.to_string(), c.clone()))
            .collect(),
    }
}

fn backup(rs: &Reposafe) -> (serde_json::Value, String) {
    let run = rs.run(&["backup", WS, "--json"]).ok();
    let report = serde_json::from_str(&run.stdout).expect("backup --json prints JSON");
    (report, run.all())
}

fn outcome(report: &serde_json::Value) -> &serde_json::Value {
    &report["repositories"][0]["outcome"]
}

/// Restores `full_name`, clones it and checks its LFS files out with `git lfs pull`
/// (objects from the restored repository's `lfs/objects`); returns the clone.
fn restore_and_clone(rs: &Reposafe, full_name: &str, out: &Path) -> std::path::PathBuf {
    let target = out.join("restored.git");
    rs.run(&["restore", full_name, "--to", &target.display().to_string()])
        .ok();
    gitutil::fsck(&target);
    let clone = out.join("clone");
    let url = format!("file://{}", target.display());
    gitutil::git(out, &["clone", "--quiet", &url, "clone"]);
    // git-lfs reads a file:// remote's `lfs/objects` itself (standalone transfer).
    gitutil::git(&clone, &["lfs", "install", "--local"]);
    gitutil::git(&clone, &["lfs", "pull"]);
    clone
}

#[test]
fn lfs_objects_are_backed_up_reported_when_missing_and_restored_byte_identical() {
    assert!(
        gitutil::try_git(Path::new("."), &["lfs", "version"]).is_ok(),
        "this test needs git-lfs (Debian package git-lfs)"
    );
    let absent = gitutil::pseudo_random_bytes(99, 70_000);
    let absent_oid = sha256_hex(&absent);
    let s = setup(
        &[
            ("a.bin", gitutil::pseudo_random_bytes(1, 300_000)),
            ("b.bin", gitutil::pseudo_random_bytes(2, 1_200_000)),
            ("c.bin", b"small LFS file\n".to_vec()),
        ],
        &absent,
    );

    // The object the server lacks is named, with why; the snapshot is written anyway.
    let (report, all) = backup(&s.rs);
    let first = outcome(&report);
    assert!(
        first["id"].is_string(),
        "a snapshot despite the missing object: {all}"
    );
    assert!(all.contains(&absent_oid), "{all}");
    assert!(all.contains("404"), "the reason is named: {all}");
    let downloads = s.server.lfs().downloads();
    assert_eq!(downloads.len(), 3, "{downloads:?}");
    assert!(downloads.values().all(|n| *n == 1), "{downloads:?}");

    // The repository is `partial` while an object is missing.
    assert_eq!(first["status"], "partial", "{all}");
    // Unchanged: no object downloaded again, no snapshot written, still partial.
    let (report, all) = backup(&s.rs);
    assert_eq!(outcome(&report)["status"], "partial", "{all}");
    assert_eq!(outcome(&report)["new_bytes"], 0, "{all}");
    assert_eq!(outcome(&report)["id"], first["id"], "{all}");
    assert_eq!(s.server.lfs().downloads(), downloads, "{all}");

    // The missing object is back on the server: the next run fetches it, and only it.
    let oid = s.server.lfs().add(WS, SLUG, &absent);
    let (report, all) = backup(&s.rs);
    assert_eq!(outcome(&report)["status"], "snapshot", "{all}");
    let now = s.server.lfs().downloads();
    assert_eq!(now.get(&oid), Some(&1), "{now:?}");
    assert_eq!(now.values().sum::<usize>(), 4, "{now:?}");

    // The originals are gone; the restore has every file.
    for content in s.files.values().chain([&absent]) {
        s.server.lfs().remove(WS, SLUG, &sha256_hex(content));
    }
    s.server.remove_repo(WS, SLUG);
    let out = TempDir::new("lfs-restore");
    let clone = restore_and_clone(&s.rs, &format!("{WS}/{SLUG}"), out.path());
    for (name, content) in &s.files {
        let got = std::fs::read(clone.join(name)).expect("checked-out LFS file");
        assert!(got == *content, "{name} differs from the original");
    }
    gitutil::git(&clone, &["lfs", "fsck"]);
    gitutil::git(&clone, &["checkout", "--quiet", "extra"]);
    gitutil::git(&clone, &["lfs", "pull"]);
    assert_eq!(
        std::fs::read(clone.join("absent.bin")).expect("absent.bin"),
        absent
    );
}

#[test]
fn a_corrupt_download_is_refused_and_stores_nothing() {
    let good = gitutil::pseudo_random_bytes(7, 200_000);
    let oid = sha256_hex(&good);
    let s = setup(
        &[
            ("good.bin", gitutil::pseudo_random_bytes(8, 50_000)),
            ("bad.bin", good.clone()),
        ],
        b"unused",
    );
    // Same size, other bytes: only the SHA-256 tells.
    let mut wrong = good.clone();
    wrong[100_000] ^= 0xff;
    s.server.lfs().corrupt(WS, SLUG, &oid, &wrong);

    let (report, all) = backup(&s.rs);
    assert!(outcome(&report)["id"].is_string(), "{all}");
    assert!(all.contains(&oid), "the corrupt object is named: {all}");
    assert!(all.contains("corrupt"), "{all}");
    let blob = reposafe::archive::BlobId::of(&wrong).to_hex();
    let stored =
        s.rs.data_dir()
            .join("archive/blobs")
            .join(&blob[..2])
            .join(&blob);
    assert!(!stored.exists(), "the corrupt content was stored");

    // Repaired on the server: the next run stores the right bytes.
    s.server.lfs().add(WS, SLUG, &good);
    let (report, all) = backup(&s.rs);
    assert!(outcome(&report)["id"].is_string(), "{all}");
    let out = TempDir::new("lfs-restore");
    let clone = restore_and_clone(&s.rs, &format!("{WS}/{SLUG}"), out.path());
    assert!(std::fs::read(clone.join("bad.bin")).expect("bad.bin") == good);
}

#[test]
fn data_center_lfs_objects_over_tls_are_backed_up_and_restored() {
    const TOKEN: &str = "BBDC-lfs-token-MTIzNDU2Nzg5";
    let server = DcServer::start(DcOptions {
        context_path: "/bitbucket".into(),
        tls: true,
    });
    let src = TempDir::new("lfs-dc-src");
    let files = [
        ("a.bin", gitutil::pseudo_random_bytes(31, 150_000)),
        ("b.bin", gitutil::pseudo_random_bytes(32, 20_000)),
    ];
    let mut work = WorkRepo::new();
    work.write(
        ".gitattributes",
        "*.bin filter=lfs diff=lfs merge=lfs -text\n",
    );
    for (name, content) in &files {
        work.write(name, lfs_pointer(content));
        server.lfs().add("ALPHA", "media", content);
    }
    work.commit("LFS files");
    let bare = src.path().join("media.git");
    gitutil::init_bare(&bare);
    work.push_mirror(&bare);
    server.add_repo("ALPHA", "media", &bare, false);
    server.set_lfs_enabled("ALPHA", "media", true);
    server.add_user("jdoe", "unused-password");
    server.add_user_token("jdoe", TOKEN);
    server.grant("jdoe", "ALPHA");

    let rs = Reposafe::new();
    let ca = rs.files.path().join("ca.pem");
    std::fs::write(&ca, server.ca_pem().expect("a TLS server has a CA")).expect("write CA");
    let tok = rs.secret_file("token", TOKEN);
    rs.run(&[
        "connection",
        "add",
        "dc",
        "--name",
        "corp",
        "--set",
        &format!("base-url={}", server.base_url()),
        "--http-access-token-file",
        &tok.display().to_string(),
        "--ca-bundle",
        &ca.display().to_string(),
    ])
    .ok();
    let run = rs.run(&["backup", "corp", "--json"]).ok();
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert!(outcome(&report)["id"].is_string(), "{}", run.all());
    assert_eq!(server.lfs().downloads().len(), 2, "{}", run.all());

    for (_, content) in &files {
        server.lfs().remove("ALPHA", "media", &sha256_hex(content));
    }
    let out = TempDir::new("lfs-dc-restore");
    let clone = restore_and_clone(&rs, "ALPHA/media", out.path());
    for (name, content) in &files {
        let got = std::fs::read(clone.join(name)).expect("checked-out LFS file");
        assert!(got == *content, "{name} differs from the original");
    }
}
