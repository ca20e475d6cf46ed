//! Encryption at rest (issue 15): an archive created with `archive init --encrypt`
//! backs up, restores ref for ref and `fsck`-clean, checks and prunes like a plain one,
//! while no archive file shows the repository's name or its files' bytes (a plain
//! archive of the same repository shows both). It opens elsewhere only with a sealed
//! key: a passphrase added for that, or the exported key file.

mod common;

use common::*;
use std::path::Path;

const WS: &str = "acme";
const SLUG: &str = "secret-name-7c2e91";
const PASSPHRASE: &str = "correct horse battery staple 7c2e";

/// A Cloud server with one repository (two LFS files, a wiki) named [`SLUG`].
fn server(scratch: &Path) -> (CloudServer, LfsWikiRepo) {
    let server = CloudServer::start();
    let repo = lfs_and_wiki_repo(&server, WS, SLUG, scratch);
    (server, repo)
}

fn repo() -> String {
    format!("{WS}/{SLUG}")
}

/// What must not be readable in an encrypted archive: the repository's name (in its
/// manifests) and a stretch of an LFS object (stored as it is, being random).
fn needles(repo: &LfsWikiRepo) -> Vec<Vec<u8>> {
    let object = repo.lfs_files.values().next().expect("an LFS file");
    vec![SLUG.as_bytes().to_vec(), object[5000..5064].to_vec()]
}

/// Archive files (relative paths) that contain one of `needles`.
fn files_showing(archive: &Path, needles: &[Vec<u8>]) -> Vec<String> {
    let mut found = Vec::new();
    for f in files_under(archive) {
        let bytes = std::fs::read(&f).expect("read archive file");
        if needles
            .iter()
            .any(|n| bytes.windows(n.len()).any(|w| w == &n[..]))
        {
            found.push(f.strip_prefix(archive).unwrap_or(&f).display().to_string());
        }
    }
    found
}

fn restores(rs: &Reposafe, bare: &Path, to: &Path) {
    rs.run(&["restore", &repo(), "--to", &to.display().to_string()])
        .ok();
    gitutil::fsck(to);
    assert_eq!(
        gitutil::refs_of(to),
        gitutil::refs_of(bare),
        "refs restored"
    );
}

/// `archive show --json`, without what its disk has free (which other processes change).
fn archive_show(rs: &Reposafe) -> serde_json::Value {
    let run = rs.run(&["archive", "show", "--json"]).ok();
    let mut shown: serde_json::Value =
        serde_json::from_str(&run.stdout).expect("archive show --json");
    if let Some(fields) = shown.as_object_mut() {
        fields.remove("disk_free_bytes");
    }
    shown
}

#[test]
fn an_encrypted_archive_backs_up_restores_checks_and_prunes_and_shows_no_plaintext() {
    let scratch = TempDir::new("reposafe-encrypted");
    let (server, source) = server(scratch.path());
    let needles = needles(&source);

    // The same repository in a plain archive: the needles are there to be found.
    let plain = Reposafe::new();
    plain.connect_cloud_with_token(&server, WS);
    plain.run(&["backup", WS]).ok();
    let shown = files_showing(&plain.data_dir().join("archive"), &needles);
    assert!(shown.len() >= 2, "the plain archive shows them: {shown:?}");

    let rs = Reposafe::new();
    // A first start leaves an empty plain archive: it may still become encrypted.
    assert_eq!(archive_show(&rs)["encrypted"], false);
    let pass = rs.secret_file("pass.txt", PASSPHRASE);
    let init = rs
        .run(&[
            "archive",
            "init",
            "--encrypt",
            "--passphrase-file",
            &pass.display().to_string(),
        ])
        .ok();
    assert!(init.stdout.contains("encrypted: yes"), "{}", init.stdout);
    assert!(init.stdout.contains("key export"), "{}", init.stdout);
    let info = archive_show(&rs);
    assert_eq!(info["encrypted"], true, "{info}");
    assert!(
        info["recipient"].as_str().unwrap_or("").starts_with("age1"),
        "{info}"
    );
    let keys: Vec<&str> = info["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["name"].as_str().unwrap_or(""))
        .collect();
    assert!(keys.iter().any(|k| k.starts_with("vault-")), "{keys:?}");
    assert!(
        keys.iter().any(|k| k.starts_with("passphrase-")),
        "{keys:?}"
    );
    let again = rs.run(&["archive", "init", "--encrypt"]);
    assert_ne!(again.code, 0);
    assert!(again.all().contains("encrypted already"), "{}", again.all());

    rs.connect_cloud_with_token(&server, WS);
    rs.run(&["backup", WS]).ok();
    restores(&rs, &source.bare, &scratch.path().join("r1"));
    assert!(
        scratch.path().join("r1.wiki").is_dir(),
        "the wiki is restored beside it"
    );

    // A second backup, then forget + prune: consolidation writes an encrypted pack.
    let bare = &source.bare;
    let head = gitutil::git(bare, &["symbolic-ref", "HEAD"])
        .trim()
        .to_string();
    let commit = gitutil::git(
        bare,
        &["commit-tree", "HEAD^{tree}", "-p", "HEAD", "-m", "more"],
    );
    gitutil::git(bare, &["update-ref", &head, commit.trim()]);
    rs.run(&["backup", WS]).ok();
    rs.run(&["forget", &repo(), "--keep-last", "1", "--prune"])
        .ok();
    restores(&rs, &source.bare, &scratch.path().join("r2"));
    let check = rs.run(&["check", "--read-data"]).ok();
    assert!(!check.all().contains("damaged"), "{}", check.all());

    let archive = rs.data_dir().join("archive");
    let shown = files_showing(&archive, &needles);
    assert!(
        shown.is_empty(),
        "plaintext in the encrypted archive: {shown:?}"
    );
    for f in files_under(&archive.join("blobs")) {
        let bytes = std::fs::read(&f).expect("read");
        assert_eq!(&bytes[..4], b"RSE1", "{} is an encrypted blob", f.display());
    }
}

#[test]
fn an_encrypted_archive_opens_elsewhere_only_with_a_passphrase_or_the_exported_key() {
    let scratch = TempDir::new("reposafe-encrypted-elsewhere");
    let (server, source) = server(scratch.path());
    let rs = Reposafe::new();
    let pass = rs.secret_file("pass.txt", PASSPHRASE);
    rs.run(&["archive", "init", "--encrypt"]).ok();
    rs.connect_cloud_with_token(&server, WS);
    rs.run(&["backup", WS]).ok();
    rs.run(&[
        "archive",
        "key",
        "add",
        "--passphrase-file",
        &pass.display().to_string(),
    ])
    .ok();
    let key_file = scratch.path().join("archive-key.txt");
    let key_arg = key_file.display().to_string();
    rs.run(&["archive", "key", "export", "--out", &key_arg])
        .ok();
    let key_text = std::fs::read_to_string(&key_file).expect("exported key");
    assert!(key_text.contains("AGE-SECRET-KEY-1"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let twice = rs.run(&["archive", "key", "export", "--out", &key_arg]);
    assert_ne!(twice.code, 0, "an existing file is never overwritten");
    // No key text anywhere in the archive, in clear.
    let secret_line = key_text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .expect("key line");
    assert_not_on_disk(&rs.data_dir().join("archive"), secret_line);

    // A new appliance with only a copy of the archive.
    let copy_to = |other: &Reposafe| {
        let out = std::process::Command::new("cp")
            .arg("-a")
            .arg(rs.data_dir().join("archive"))
            .arg(other.data_dir().join("archive"))
            .output()
            .expect("cp");
        assert!(out.status.success());
    };
    let fresh = Reposafe::new();
    copy_to(&fresh);
    let locked = fresh.run(&["archive", "show"]);
    assert_ne!(locked.code, 0);
    assert!(
        locked.all().contains("REPOSAFE_ARCHIVE_PASSPHRASE"),
        "{}",
        locked.all()
    );
    assert!(locked.all().contains("is encrypted"), "{}", locked.all());
    // Where it is, and why it does not open, in the listing itself.
    let at = format!("archive: {}", fresh.data_dir().join("archive").display());
    assert!(locked.stdout.contains(&at), "{}", locked.all());
    assert!(locked.stdout.contains("unavailable: "), "{}", locked.all());
    let wrong = fresh
        .cmd(&["archive", "show"])
        .env("REPOSAFE_ARCHIVE_PASSPHRASE", "not it")
        .output()
        .expect("run");
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("opens none"));
    let opened = fresh
        .cmd(&[
            "restore",
            &repo(),
            "--to",
            &scratch.path().join("r1").display().to_string(),
        ])
        .env("REPOSAFE_ARCHIVE_PASSPHRASE", PASSPHRASE)
        .output()
        .expect("run");
    assert!(
        opened.status.success(),
        "{}",
        String::from_utf8_lossy(&opened.stderr)
    );
    gitutil::fsck(&scratch.path().join("r1"));
    assert_eq!(
        gitutil::refs_of(&scratch.path().join("r1")),
        gitutil::refs_of(&source.bare)
    );
    // It now opens with this data dir's own vault.
    let info = archive_show(&fresh);
    assert_eq!(info["keys"].as_array().map(Vec::len), Some(3), "{info}");

    let with_key = Reposafe::new();
    copy_to(&with_key);
    let check = with_key
        .cmd(&["check", "--read-data"])
        .env("REPOSAFE_ARCHIVE_KEY_FILE", &key_file)
        .output()
        .expect("run");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // Another archive's key is named as such.
    let other = Reposafe::new();
    other.run(&["archive", "init", "--encrypt"]).ok();
    let other_key = scratch.path().join("other-key.txt");
    other
        .run(&[
            "archive",
            "key",
            "export",
            "--out",
            &other_key.display().to_string(),
        ])
        .ok();
    let wrong_key = Reposafe::new();
    copy_to(&wrong_key);
    let out = wrong_key
        .cmd(&["archive", "show"])
        .env("REPOSAFE_ARCHIVE_KEY_FILE", &other_key)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not open the archive"));
}

#[test]
fn an_archive_with_backups_is_never_turned_encrypted() {
    let scratch = TempDir::new("reposafe-encrypt-refused");
    let (server, _source) = server(scratch.path());
    let rs = Reposafe::new();
    rs.connect_cloud_with_token(&server, WS);
    rs.run(&["backup", WS]).ok();
    let before = archive_show(&rs);
    let refused = rs.run(&["archive", "init", "--encrypt"]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.all().contains("plain archive with backups"),
        "{}",
        refused.all()
    );
    assert_eq!(archive_show(&rs), before, "the archive is as it was");
    let no_key = rs.run(&["archive", "key", "export", "--out", "/nonexistent/k"]);
    assert!(no_key.all().contains("not encrypted"), "{}", no_key.all());
    let stray = rs.run(&["archive", "init", "--passphrase-file", "x"]);
    assert_ne!(stray.code, 0, "a passphrase without --encrypt is refused");
}
