//! The archive on S3-compatible object storage (issue 16), against a real S3 server
//! (SeaweedFS, `tests/common/s3.rs`): `archive init s3://…` keeps the archive in a
//! bucket; backup, restore (ref for ref, `fsck`-clean), check, forget and prune work
//! unchanged, a pack larger than one PUT goes up as a multipart upload, nothing is
//! kept in the data dir's `archive/`, and a fresh appliance pointed at the bucket
//! restores from it alone. Bad settings fail with errors naming what to fix; a kill
//! in the middle of an upload leaves no half snapshot.

mod common;

use common::s3::Weed;
use common::*;
use std::path::Path;

const WS: &str = "acme";
const BUCKET: &str = "reposafe-backups";

/// A Cloud server with `acme/docs` (LFS files and a wiki) and `acme/big` (a 12 MiB
/// random file: its pack goes up as a multipart upload).
fn server(scratch: &Path) -> (CloudServer, LfsWikiRepo, std::path::PathBuf) {
    let server = CloudServer::start();
    let docs = lfs_and_wiki_repo(&server, WS, "docs", &scratch.join("docs"));
    let mut work = reposafe_testkit::WorkRepo::new();
    work.write("big.bin", gitutil::pseudo_random_bytes(11, 12 << 20));
    work.commit("a big file");
    let big = scratch.join("big.git");
    gitutil::init_bare(&big);
    work.push_mirror(&big);
    server.add_repo(WS, "big", &big, reposafe_testkit::RepoMeta::default());
    (server, docs, big)
}

/// Connects `rs` to `server`'s `acme`, backs it up, commits to `docs`, backs up again,
/// and checks both repositories restore as their sources (under `scratch/restored`,
/// returned).
fn backs_up_twice_and_restores(
    rs: &Reposafe,
    server: &CloudServer,
    docs: &LfsWikiRepo,
    big: &Path,
    scratch: &Path,
) -> std::path::PathBuf {
    rs.connect_cloud_with_token(server, WS);
    rs.run(&["backup", WS]).ok();
    commit_on_head(&docs.bare, "second");
    rs.run(&["backup", WS]).ok();
    let to = scratch.join("restored");
    restores_as_source(rs, "acme/docs", &docs.bare, &to);
    restores_as_source(rs, "acme/big", big, &to);
    to
}

fn init(rs: &Reposafe, weed: &Weed, url: &str, extra: &[&str]) -> Run {
    init_at(rs, &weed.endpoint, url, extra)
}

/// `archive init url` of the store at `endpoint` with the test keys, and `extra`.
fn init_at(rs: &Reposafe, endpoint: &str, url: &str, extra: &[&str]) -> Run {
    let mut args = common::s3::init_args_at(endpoint, url, rs.files.path());
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    rs.run(&args)
}

/// The archive at `s3://BUCKET/<prefix>`, raw.
fn bucket(weed: &Weed, prefix: &str, scratch: &Path) -> reposafe::archive::S3Backend {
    weed.store(BUCKET, prefix, scratch)
}

/// The objects of the archive at `s3://BUCKET/<prefix>` that hold `needle`, read raw
/// through the S3 API (the server's own files are compressed: no use grepping them).
fn objects_holding(weed: &Weed, prefix: &str, needle: &str) -> Vec<String> {
    use reposafe::archive::{Backend, FileKind};
    let scratch = TempDir::new("reposafe-s3-read");
    let backend = bucket(weed, prefix, scratch.path());
    let mut found = Vec::new();
    let kinds = [
        FileKind::Blob,
        FileKind::Snapshot,
        FileKind::PackIndex,
        FileKind::Key,
    ];
    for kind in kinds {
        for id in backend.list(kind, "").expect("list") {
            let bytes = backend.read(kind, &id).expect("read");
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                found.push(format!("{kind:?} {id}"));
            }
        }
    }
    found
}

#[test]
fn backup_restore_check_and_prune_on_s3_and_a_fresh_appliance_restores_from_the_bucket_alone() {
    let weed = Weed::start_with_bucket(BUCKET);
    let scratch = TempDir::new("reposafe-s3");
    let (server, docs, big) = server(scratch.path());
    let url = format!("s3://{BUCKET}/appliance-1");

    let rs = Reposafe::new();
    let made = init(&rs, &weed, &url, &[]).ok();
    assert!(made.stdout.contains(&url), "{}", made.stdout);
    let to = backs_up_twice_and_restores(&rs, &server, &docs, &big, scratch.path());
    let check = rs.run(&["check", "--read-data"]).ok();
    assert!(!check.all().contains("damaged"), "{}", check.all());
    rs.run(&["forget", "--all", "--keep-last", "1", "--prune"])
        .ok();
    restores_as_source(&rs, "acme/docs", &docs.bare, &to);
    let local = files_under(&rs.data_dir().join("archive"));
    assert!(
        local.is_empty(),
        "nothing is archived on local disk: {local:?}"
    );
    let show: serde_json::Value =
        serde_json::from_str(&rs.run(&["archive", "show", "--json"]).ok().stdout).expect("json");
    assert_eq!(show["location"], url.as_str(), "{show}");
    assert_eq!(show["endpoint"], weed.endpoint.as_str(), "{show}");
    shows_keys_from(
        &show["s3_keys"].to_string(),
        "recorded with the location (its secret sealed in the vault)",
    );
    assert_eq!(show["snapshots"], 2, "{show}");
    assert_not_on_disk(rs.data_dir(), common::s3::SECRET_ACCESS_KEY);
    // The plain archive's manifests name the repository (the encrypted test checks
    // that its objects do not).
    let named = objects_holding(&weed, "appliance-1", "acme/docs");
    assert!(!named.is_empty(), "a plain manifest names its repository");
    // The big repository's pack went up as a multipart upload (more than one PUT's 8 MiB).
    let read = TempDir::new("reposafe-s3-sizes");
    let sizes = reposafe::archive::Backend::list_with_size(
        &bucket(&weed, "appliance-1", read.path()),
        reposafe::archive::FileKind::Blob,
        "",
    )
    .expect("list");
    let largest = sizes.iter().map(|(_, size)| *size).max().unwrap_or(0);
    assert!(largest > 8 << 20, "largest blob {largest} bytes");

    // A new appliance with only the bucket: attach, list, restore.
    let fresh = Reposafe::new();
    let attached = init(&fresh, &weed, &url, &[]).ok();
    assert!(attached.stdout.contains("attached"), "{}", attached.stdout);
    let listed = fresh.run(&["snapshots", "acme/docs"]).ok();
    assert!(!listed.stdout.trim().is_empty(), "{}", listed.stdout);
    restores_as_source(&fresh, "acme/docs", &docs.bare, &to);
    restores_as_source(&fresh, "acme/big", &big, &to);

    // An archive with snapshots is never left behind for another location.
    let moved = init(&rs, &weed, &format!("s3://{BUCKET}/elsewhere"), &[]);
    assert_ne!(moved.code, 0);
    assert!(
        moved.all().contains("holds 2 snapshot(s)"),
        "{}",
        moved.all()
    );

    // `check --read-data` reads the bucket, not the data dir's copies of small blobs:
    // an LFS index damaged in the bucket is found although a good copy is cached.
    use reposafe::archive::{Backend, FileKind, Source};
    let read = TempDir::new("reposafe-s3-damage");
    let store = bucket(&weed, "appliance-1", read.path());
    let index = store
        .list(FileKind::Blob, "")
        .expect("list")
        .into_iter()
        .find(|id| {
            // "RSB1", the codec (0 stored, 1 zstd), the length, the body.
            let bytes = store.read(FileKind::Blob, id).expect("read");
            let body = match bytes.get(4) {
                Some(1) => zstd::decode_all(&bytes[13..]).unwrap_or_default(),
                _ => bytes[13.min(bytes.len())..].to_vec(),
            };
            body.len() < 4096 && body.windows(6).any(|w| w == b"\"oid\":")
        })
        .expect("an LFS index blob");
    let mut bytes = store.read(FileKind::Blob, &index).expect("read");
    let last = bytes.len() - 2;
    bytes[last] ^= 1;
    store
        .write(FileKind::Blob, &index, Source::Bytes(&bytes))
        .expect("damage");
    let check = rs.run(&["check", "--read-data"]);
    assert_ne!(check.code, 0, "damage found: {}", check.all());
    assert!(check.all().contains(&index), "{}", check.all());
}

#[test]
fn an_encrypted_archive_on_s3_backs_up_and_restores() {
    let weed = Weed::start_with_bucket(BUCKET);
    let scratch = TempDir::new("reposafe-s3-encrypted");
    let (server, docs, _big) = server(scratch.path());
    let url = format!("s3://{BUCKET}/encrypted");
    let rs = Reposafe::new();
    let pass = rs.secret_file("pass.txt", "an archive passphrase 91c2");
    let made = init(
        &rs,
        &weed,
        &url,
        &[
            "--encrypt",
            "--passphrase-file",
            &pass.display().to_string(),
        ],
    )
    .ok();
    assert!(made.stdout.contains("encrypted: yes"), "{}", made.stdout);
    rs.connect_cloud_with_token(&server, WS);
    rs.run(&["backup", WS]).ok();
    restores_as_source(&rs, "acme/docs", &docs.bare, &scratch.path().join("r"));
    // The repository's name is in no object of the archive.
    let named = objects_holding(&weed, "encrypted", "acme/docs");
    assert!(named.is_empty(), "{named:?}");

    // A FORMAT changed in the bucket to plain is refused, not written to in clear.
    {
        use reposafe::archive::{Backend, FileKind, Source};
        let read = TempDir::new("reposafe-s3-format");
        let store = bucket(&weed, "encrypted", read.path());
        let original = store.read(FileKind::Format, "").expect("format");
        store
            .write(FileKind::Format, "", Source::Bytes(b"reposafe-archive 2\n"))
            .expect("downgrade");
        let refused = rs.run(&["archive", "show"]);
        assert_ne!(refused.code, 0);
        assert!(
            refused.all().contains("now says otherwise"),
            "{}",
            refused.all()
        );
        store
            .write(FileKind::Format, "", Source::Bytes(&original))
            .expect("restore format");
        rs.run(&["archive", "show"]).ok();
    }

    // Another appliance opens it with the passphrase only.
    let fresh = Reposafe::new();
    let locked = init(&fresh, &weed, &url, &[]);
    assert_ne!(locked.code, 0);
    assert!(
        locked.all().contains("REPOSAFE_ARCHIVE_PASSPHRASE"),
        "{}",
        locked.all()
    );
    let args = weed.init_args(&url, fresh.files.path());
    let out = fresh
        .cmd(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .env("REPOSAFE_ARCHIVE_PASSPHRASE", "an archive passphrase 91c2")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    restores_as_source(&fresh, "acme/docs", &docs.bare, &scratch.path().join("r"));
}

#[test]
fn bad_s3_settings_fail_naming_what_to_fix_and_change_nothing() {
    let weed = Weed::start_with_bucket(BUCKET);
    let rs = Reposafe::new();
    let missing = init(&rs, &weed, "s3://no-such-bucket/x", &[]);
    assert_ne!(missing.code, 0);
    assert!(
        missing
            .all()
            .contains("the bucket no-such-bucket does not exist"),
        "{}",
        missing.all()
    );
    assert!(missing.all().contains(&weed.endpoint), "{}", missing.all());

    // `archive init` of `s3://BUCKET/x` with these keys.
    let init_with = |key_id: &str, secret_file: &Path| {
        rs.run(&[
            "archive",
            "init",
            &format!("s3://{BUCKET}/x"),
            "--endpoint",
            &weed.endpoint,
            "--path-style",
            "--access-key-id",
            key_id,
            "--secret-access-key-file",
            &secret_file.display().to_string(),
        ])
    };
    let wrong = rs.secret_file("wrong.txt", "not-the-secret");
    let refused = init_with(common::s3::ACCESS_KEY_ID, &wrong);
    assert_ne!(refused.code, 0);
    assert!(
        refused.all().contains("credentials were refused"),
        "{}",
        refused.all()
    );
    assert!(
        !refused.all().contains("not-the-secret"),
        "{}",
        refused.all()
    );

    // Keys the store knows but that may not do what `archive init` does: the request
    // refused and the permission it needs are named, not only the keys.
    let limited = rs.secret_file("limited.txt", common::s3::LIMITED_SECRET);
    for (key_id, needs) in [
        (
            common::s3::READER_KEY_ID,
            "allow s3:PutObject on the bucket",
        ),
        (
            common::s3::WRITER_KEY_ID,
            "allow s3:ListBucket on the bucket",
        ),
    ] {
        let denied = init_with(key_id, &limited);
        assert_ne!(denied.code, 0, "{key_id}: {}", denied.all());
        let said = denied.all();
        assert!(
            said.contains("(AccessDenied)") && said.contains(needs) && said.contains(BUCKET),
            "{key_id}: {said}"
        );
    }

    // What a command that must fail says.
    let refused = |cmd: &mut std::process::Command| {
        let out = cmd.output().expect("run reposafe");
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{said}");
        said
    };

    // A clock an hour ahead (libfaketime): the store refuses every signature.
    let args = weed.init_args(&format!("s3://{BUCKET}/x"), rs.files.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let said = refused(
        rs.cmd(&args)
            .env("LD_PRELOAD", faketime_library())
            .env("FAKETIME", "+1h")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    );
    assert!(
        said.contains("clock differs too much from the server's"),
        "{said}"
    );
    assert!(said.contains(&weed.endpoint), "{said}");

    // An endpoint where nothing listens: every retry is refused.
    let nowhere = format!("http://127.0.0.1:{}", common::s3::free_port());
    let args = common::s3::init_args_at(&nowhere, &format!("s3://{BUCKET}/x"), rs.files.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let unreachable = rs.run(&args);
    assert_ne!(unreachable.code, 0);
    assert!(
        unreachable
            .all()
            .contains(&format!("{nowhere}: cannot connect (Connection refused"))
            && unreachable
                .all()
                .contains("check that the store is running"),
        "{}",
        unreachable.all()
    );

    let bad_url = rs.run(&[
        "archive",
        "init",
        "s3://UPPER/x",
        "--endpoint",
        &weed.endpoint,
    ]);
    assert_ne!(bad_url.code, 0);
    assert!(bad_url.all().contains("bucket name"), "{}", bad_url.all());

    // An endpoint from the shell's environment that is none: the variable is named, its
    // value (which may hold a secret) not repeated.
    let said = refused(
        rs.cmd(&["archive", "init", &format!("s3://{BUCKET}/x")])
            .env("AWS_ENDPOINT_URL", "id:hidden-secret@store.example:9000"),
    );
    assert!(
        said.contains("AWS_ENDPOINT_URL in this shell's environment must be an http(s) URL"),
        "{said}"
    );
    assert!(!said.contains("hidden-secret"), "{said}");

    // Nothing was recorded: the data dir's archive is still its own directory.
    let show = rs.run(&["archive", "show"]).ok();
    assert!(
        show.stdout
            .contains(&rs.data_dir().join("archive").display().to_string()),
        "{}",
        show.stdout
    );
}

/// libfaketime, which `.ci/run` installs (Debian's `faketime`).
fn faketime_library() -> std::path::PathBuf {
    let arch = std::env::consts::ARCH;
    let library = std::path::PathBuf::from(format!(
        "/usr/lib/{arch}-linux-gnu/faketime/libfaketime.so.1"
    ));
    assert!(
        library.exists(),
        "{} is missing: apt-get install faketime (as .ci/run does)",
        library.display()
    );
    library
}

/// `acme` backed up to `s3://BUCKET/<prefix>` through a proxy in front of SeaweedFS.
struct ThroughProxy {
    _weed: Weed,
    _server: CloudServer,
    proxy: common::flaky::FlakyProxy,
    scratch: TempDir,
    docs: LfsWikiRepo,
    big: std::path::PathBuf,
    rs: Reposafe,
}

/// Starts SeaweedFS and the proxy `proxy` makes in front of it, and backs up `acme`
/// through it to `s3://BUCKET/<prefix>`, `archive init` and `backup` run with `env`.
fn backed_up_through(
    prefix: &str,
    proxy: impl FnOnce(&str) -> common::flaky::FlakyProxy,
    env: &[(&str, &str)],
) -> ThroughProxy {
    let weed = Weed::start_with_bucket(BUCKET);
    let proxy = proxy(&weed.endpoint);
    let scratch = TempDir::new(&format!("reposafe-s3-{prefix}"));
    let (server, docs, big) = server(scratch.path());
    let rs = Reposafe::new();
    let url = format!("s3://{BUCKET}/{prefix}");
    let args = common::s3::init_args_at(&proxy.endpoint, &url, rs.files.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    rs.run_with_env(&args, env).ok();
    rs.connect_cloud_with_token(&server, WS);
    rs.run_with_env(&["backup", WS], env).ok();
    ThroughProxy {
        _weed: weed,
        _server: server,
        proxy,
        scratch,
        docs,
        big,
        rs,
    }
}

impl ThroughProxy {
    /// Both repositories restore from the bucket ref for ref.
    fn restores_both(&self) {
        let to = self.scratch.path().join("restored");
        restores_as_source(&self.rs, "acme/docs", &self.docs.bare, &to);
        restores_as_source(&self.rs, "acme/big", &self.big, &to);
    }
}

/// A store that answers `503 SlowDown` now and then is retried: a backup and a restore
/// through a proxy that refuses every fourth request (uploads, reads) succeed as
/// without it, ref for ref.
#[test]
fn a_store_answering_503_now_and_then_is_retried() {
    let through = backed_up_through("flaky", common::flaky::FlakyProxy::start, &[]);
    assert!(through.proxy.refused("PUT") >= 3, "uploads met 503s");
    let reads = through.proxy.refused("GET");
    through.restores_both();
    assert!(
        through.proxy.refused("GET") > reads,
        "the restores met 503s too"
    );
}

/// An upload that takes longer to send than the store is given to answer
/// (`REPOSAFE_S3_TIMEOUT_SECS`, 120 s by default, here 5 s), over an uplink as slow as
/// a small office's, goes through: the 12 MiB pack of `acme/big` takes about 13 s to
/// send at 1 MB/s. The limit still holds for answers: a store that takes 4 s to answer
/// is given up on with 2 s, naming what happened. The restore reads it back ref for ref.
#[test]
fn an_upload_slower_than_the_time_the_store_has_to_answer_goes_through() {
    let slow = |store: &str| common::flaky::FlakyProxy::slow_uplink(store, 1_000_000);
    let answer_within = [("REPOSAFE_S3_TIMEOUT_SECS", "5")];
    let through = backed_up_through("slow", slow, &answer_within);
    let (proxy, rs) = (&through.proxy, &through.rs);
    let slowest = proxy.slowest_body();
    assert!(
        slowest > std::time::Duration::from_secs(10),
        "an upload took longer to send than the store had to answer: {slowest:?}"
    );
    proxy.delay_answers(std::time::Duration::from_secs(4));
    let to = through.scratch.path().join("restored");
    let late = rs.run_with_env(
        &["restore", "acme/big", "--to", &to.display().to_string()],
        &[("REPOSAFE_S3_TIMEOUT_SECS", "2")],
    );
    assert_ne!(late.code, 0, "{}", late.all());
    assert!(
        late.all().contains("did not answer in time"),
        "{}",
        late.all()
    );
    proxy.delay_answers(std::time::Duration::ZERO);
    let _ = std::fs::remove_dir_all(&to);
    restores_as_source(rs, "acme/big", &through.big, &to);
}

/// A manifest's create that the store made but whose answer was lost (the client
/// retries and meets its own write: `412`) counts as made: the backup succeeds and
/// restores ref for ref (before, the repository failed with "snapshot exists").
#[test]
fn a_create_whose_answer_was_lost_counts_as_made() {
    let through = backed_up_through(
        "lost",
        common::flaky::FlakyProxy::losing_create_answers,
        &[],
    );
    let lost = through.proxy.lost_answers();
    let manifests = lost.iter().filter(|t| t.contains("/snapshots/")).count();
    assert!(
        manifests >= 2,
        "both repositories' manifests lost their answer: {lost:?}"
    );
    through.restores_both();
}

/// A store that does not keep S3's promises about conditional writes is refused at
/// `archive init`, naming the endpoint and the condition, and nothing is recorded.
#[test]
fn a_store_without_conditional_writes_is_refused_naming_the_condition() {
    use common::s3_lax::{LaxS3, Laxity};
    let rs = Reposafe::new();
    for (laxity, condition) in [
        (Laxity::IgnoresIfNoneMatch, "(If-None-Match)"),
        (Laxity::IfMatchNotImplemented, "(If-Match)"),
    ] {
        let lax = LaxS3::start(laxity);
        let args = common::s3::init_args_at(&lax.endpoint, "s3://lax/x", rs.files.path());
        let refused = rs.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_ne!(refused.code, 0, "{laxity:?}: {}", refused.all());
        let said = refused.all();
        assert!(
            said.contains(&format!("the store ignores conditional writes {condition}")),
            "{laxity:?}: {said}"
        );
        assert!(said.contains(&lax.endpoint), "{laxity:?}: {said}");
    }
    let show = rs.run(&["archive", "show"]).ok();
    assert!(
        show.stdout
            .contains(&rs.data_dir().join("archive").display().to_string()),
        "{}",
        show.stdout
    );
}

#[test]
fn a_kill_in_the_middle_of_an_upload_leaves_no_half_snapshot() {
    let weed = Weed::start_with_bucket(BUCKET);
    let scratch = TempDir::new("reposafe-s3-kill");
    let (server, _docs, big) = server(scratch.path());
    let rs = Reposafe::new();
    init(&rs, &weed, &format!("s3://{BUCKET}/killed"), &[]).ok();
    rs.connect_cloud_with_token(&server, WS);
    // Measure one whole backup on a copy, then kill others at points through it.
    let probe = Reposafe::new();
    init(&probe, &weed, &format!("s3://{BUCKET}/probe"), &[]).ok();
    probe.connect_cloud_with_token(&server, WS);
    let start = std::time::Instant::now();
    probe.run(&["backup", WS]).ok();
    let whole = start.elapsed();
    for share in [0.3, 0.6, 0.9] {
        let delay = whole.mul_f64(share);
        if rs.killed_after(&["backup", WS], delay).is_some() {
            continue; // finished before the kill: nothing to see
        }
        let check = rs.run(&["check"]);
        assert_eq!(check.code, 0, "after a kill at {delay:?}: {}", check.all());
    }
    rs.run(&["backup", WS]).ok();
    restores_as_source(&rs, "acme/big", &big, &scratch.path().join("r"));
}

/// Two appliances on one bucket prefix, each backing up its own connection, prune at
/// the same moment: the `prune` lease lets one sweep at a time (the other waits for it
/// or is told another appliance prunes), and every snapshot of both still restores.
#[test]
fn two_appliances_pruning_one_bucket_at_once_lose_nothing() {
    let weed = Weed::start_with_bucket(BUCKET);
    let scratch = TempDir::new("reposafe-s3-two");
    let (server, docs, big) = server(scratch.path());
    let url = format!("s3://{BUCKET}/shared");
    let (a, b) = (Reposafe::new(), Reposafe::new());
    init(&a, &weed, &url, &[]).ok();
    init(&b, &weed, &url, &[]).ok();
    for rs in [&a, &b] {
        rs.connect_cloud_with_token(&server, WS);
        rs.run(&["backup", WS]).ok();
    }
    commit_on_head(&docs.bare, "second");
    for rs in [&a, &b] {
        rs.run(&["backup", WS]).ok();
        rs.run(&["forget", "--all", "--keep-last", "1"]).ok();
    }
    let spawn = |rs: &Reposafe| {
        rs.cmd(&["prune"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("prune")
    };
    let (pa, pb) = (spawn(&a), spawn(&b));
    for out in [
        pa.wait_with_output().expect("a"),
        pb.wait_with_output().expect("b"),
    ] {
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || text.contains("is pruning this archive"),
            "a prune either runs or is told another appliance prunes: {text}"
        );
    }
    for rs in [&a, &b] {
        let check = rs.run(&["check", "--read-data"]).ok();
        assert!(!check.all().contains("damaged"), "{}", check.all());
        restores_as_source(rs, "acme/docs", &docs.bare, &scratch.path().join("r"));
        restores_as_source(rs, "acme/big", &big, &scratch.path().join("r"));
    }
    // Every lease is released once the commands are done.
    let read = TempDir::new("reposafe-s3-leases");
    let leases = reposafe::archive::Backend::list(
        &bucket(&weed, "shared", read.path()),
        reposafe::archive::FileKind::Lock,
        "",
    )
    .expect("list");
    assert!(leases.is_empty(), "{leases:?}");
}

/// Credentials from the standard AWS environment variables (what the systemd unit's
/// optional `EnvironmentFile=/etc/reposafe/s3.env` gives the daemon): nothing about them
/// is recorded in the data dir, and every command works with them.
#[test]
fn s3_credentials_from_the_environment_are_used_and_never_recorded() {
    let weed = Weed::start_with_bucket(BUCKET);
    let scratch = TempDir::new("reposafe-s3-env");
    let (server, docs, _big) = server(scratch.path());
    let rs = Reposafe::new();
    let with_env = |args: &[&str]| {
        let out = common::s3::with_test_keys(&mut rs.cmd(args))
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // Connected before the archive moves to the bucket (every command after needs it).
    rs.connect_cloud_with_token(&server, WS);
    let url = format!("s3://{BUCKET}/from-env");
    with_env(&[
        "archive",
        "init",
        &url,
        "--endpoint",
        &weed.endpoint,
        "--path-style",
    ]);
    let recorded =
        std::fs::read_to_string(rs.data_dir().join("archive-location.json")).expect("location");
    assert!(!recorded.contains("secret"), "{recorded}");
    assert!(!recorded.contains(common::s3::ACCESS_KEY_ID), "{recorded}");
    with_env(&["backup", WS]);
    let shown = common::s3::with_test_keys(&mut rs.cmd(&["archive", "show"]))
        .output()
        .expect("run");
    let said = String::from_utf8_lossy(&shown.stdout);
    shows_keys_from(&said, "from the environment (AWS_ACCESS_KEY_ID)");
    let to = scratch.path().join("r");
    with_env(&["restore", "acme/docs", "--to", &to.display().to_string()]);
    gitutil::fsck(&to);
    assert_eq!(gitutil::refs_of(&to), gitutil::refs_of(&docs.bare));
    assert_not_on_disk(rs.data_dir(), common::s3::SECRET_ACCESS_KEY);
}

/// The prune lease's conditional writes on the real server: created once
/// (`If-None-Match`), replaced only while unchanged (`If-Match`), so of two appliances
/// taking over the same expired lease one wins, and a removed lease is not recreated
/// by a late renewal.
#[test]
fn the_store_replaces_a_lease_only_while_it_is_unchanged() {
    use reposafe::archive::{Backend, FileKind};
    let weed = Weed::start_with_bucket(BUCKET);
    let scratch = TempDir::new("reposafe-s3-if-match");
    let store = bucket(&weed, "leases", scratch.path());
    let first = store
        .create_versioned(FileKind::Lock, "prune", b"one")
        .expect("created");
    let again = store.create_versioned(FileKind::Lock, "prune", b"two");
    assert_eq!(
        again.err().map(|e| e.kind()),
        Some(std::io::ErrorKind::AlreadyExists)
    );
    let (bytes, read) = store
        .read_versioned(FileKind::Lock, "prune")
        .expect("read")
        .expect("there");
    assert_eq!(
        (bytes.as_slice(), read.as_str()),
        (&b"one"[..], first.as_str())
    );
    let taken = store
        .replace_if(FileKind::Lock, "prune", b"taker one", &first)
        .expect("replace")
        .expect("the first taker wins");
    assert_ne!(taken, first);
    let second = store
        .replace_if(FileKind::Lock, "prune", b"taker two", &first)
        .expect("replace");
    assert_eq!(second, None, "the second taker of the same version loses");
    assert_eq!(
        store.read(FileKind::Lock, "prune").expect("read"),
        b"taker one"
    );
    store
        .replace_if(FileKind::Lock, "prune", b"renewed", &taken)
        .expect("replace")
        .expect("the holder renews its own version");
    store.delete(FileKind::Lock, "prune").expect("delete");
    let late = store
        .replace_if(FileKind::Lock, "prune", b"late", &taken)
        .expect("replace");
    assert_eq!(late, None, "a removed lease is not recreated");
    assert!(store
        .read_versioned(FileKind::Lock, "prune")
        .expect("read")
        .is_none());
}

/// Keys from the config file's `[s3]` table (`--config`), and from the AWS shared
/// credentials file (`AWS_SHARED_CREDENTIALS_FILE`, `AWS_PROFILE`): the archive is set
/// up without keys, every command finds them there, a profile asked for but absent is
/// named, and nothing of the keys is recorded in the data dir.
#[test]
fn s3_keys_from_the_config_file_or_the_aws_credentials_file_are_used_and_never_recorded() {
    use std::os::unix::fs::PermissionsExt;
    let weed = Weed::start_with_bucket(BUCKET);
    let scratch = TempDir::new("reposafe-s3-config-keys");
    let (server, docs, _big) = server(scratch.path());
    let rs = Reposafe::new();
    let files = TempDir::new("reposafe-s3-config-files");
    let secret_file = files.path().join("s3-secret");
    std::fs::write(&secret_file, format!("{}\n", common::s3::SECRET_ACCESS_KEY)).expect("secret");
    let config = files.path().join("reposafe.toml");
    std::fs::write(
        &config,
        format!(
            "[s3]\naccess_key_id = {:?}\nsecret_access_key_file = {:?}\n",
            common::s3::ACCESS_KEY_ID,
            secret_file.display().to_string()
        ),
    )
    .expect("config");
    let credentials = files.path().join("aws-credentials");
    std::fs::write(
        &credentials,
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            common::s3::ACCESS_KEY_ID,
            common::s3::SECRET_ACCESS_KEY
        ),
    )
    .expect("credentials");
    std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let absent = files.path().join("no-credentials");
    // No AWS variables: the keys come from where each run says.
    let run = |args: &[&str], credentials_file: &Path, profile: Option<&str>| {
        let mut cmd = rs.cmd(args);
        common::s3::without_keys(&mut cmd, credentials_file);
        if let Some(p) = profile {
            cmd.env("AWS_PROFILE", p);
        }
        let out = cmd.output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), stderr)
    };
    rs.connect_cloud_with_token(&server, WS);
    let url = format!("s3://{BUCKET}/from-config");
    let config_arg = config.display().to_string();
    let init = [
        "--config",
        &config_arg,
        "archive",
        "init",
        &url,
        "--endpoint",
        &weed.endpoint,
        "--path-style",
    ];
    let (ok, err) = run(&init, &absent, None);
    assert!(ok, "init with the config file's keys: {err}");
    let (ok, err) = run(&["--config", &config_arg, "backup", WS], &absent, None);
    assert!(ok, "backup with the config file's keys: {err}");
    let show = |args: &[&str], credentials_file: &Path| {
        let mut cmd = rs.cmd(args);
        common::s3::without_keys(&mut cmd, credentials_file);
        String::from_utf8_lossy(&cmd.output().expect("run").stdout).into_owned()
    };
    let said = show(&["--config", &config_arg, "archive", "show"], &absent);
    shows_keys_from(&said, "from the config file's [s3]");
    let said = show(&["archive", "show"], &credentials);
    let from_file = format!(
        "from the AWS credentials file {}, profile default",
        credentials.display()
    );
    shows_keys_from(&said, &from_file);
    let said = show(&["archive", "show"], &absent);
    assert!(said.contains("S3 keys: none set here"), "{said}");
    // The same archive, the keys now from the AWS credentials file only.
    let to = scratch.path().join("r");
    let restore = ["restore", "acme/docs", "--to", &to.display().to_string()];
    let (ok, _) = run(&restore, &absent, None);
    assert!(!ok, "without any keys the store refuses");
    let (ok, err) = run(&restore, &credentials, None);
    assert!(ok, "restore with the credentials file's keys: {err}");
    gitutil::fsck(&to);
    assert_eq!(gitutil::refs_of(&to), gitutil::refs_of(&docs.bare));
    let (ok, err) = run(&["snapshots", "acme/docs"], &credentials, Some("nightly"));
    assert!(!ok, "a profile asked for but absent fails");
    assert!(
        err.contains("AWS_PROFILE is nightly") && err.contains("aws-credentials"),
        "{err}"
    );
    let recorded =
        std::fs::read_to_string(rs.data_dir().join("archive-location.json")).expect("location");
    assert!(!recorded.contains(common::s3::ACCESS_KEY_ID), "{recorded}");
    assert_not_on_disk(rs.data_dir(), common::s3::SECRET_ACCESS_KEY);
}

/// A prune through the daemon that waits for another appliance's use of the archive
/// hears the daemon's heartbeat, so it keeps waiting past the silence limit; once the
/// daemon stops answering (SIGSTOP: a hung daemon, a dead connection), the command
/// gives up after that limit, naming the daemon, instead of waiting for a week. The
/// limit follows the heartbeat the daemon announces, not a setting of the command's.
#[test]
fn a_followed_prune_waits_while_the_daemon_is_alive_and_gives_up_once_it_falls_silent() {
    use reposafe::archive::{Backend, FileKind};
    use std::time::{Duration, Instant};
    let weed = Weed::start_with_bucket(BUCKET);
    let scratch = TempDir::new("reposafe-s3-silent");
    let rs = Reposafe::new();
    init(&rs, &weed, &format!("s3://{BUCKET}/silent"), &[]).ok();
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    bucket(&weed, "silent", scratch.path())
        .create_new(
            FileKind::Lock,
            "use-other-1",
            format!(r#"{{"holder":"other.1","expires":{expires}}}"#).as_bytes(),
        )
        .expect("another appliance's lease");
    // Heartbeats every 2 s instead of 15 (so a silence limit of 8 s instead of 60): set
    // for the daemon only, which announces it to the command.
    let beat = [("REPOSAFE_HEARTBEAT_MS", "2000")];
    let (mut daemon, url, _token) =
        start_logged_daemon_with(&rs, &scratch.path().join("daemon.log"), &beat);
    let signal = |name: &str| {
        let sent = std::process::Command::new("kill")
            .args([name, &daemon.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill {name}");
    };
    let mut prune = rs
        .cmd(&["prune"])
        .env_remove("REPOSAFE_HEARTBEAT_MS")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("prune");
    // Longer than the silence limit (8 s), with room for the command to start.
    std::thread::sleep(Duration::from_secs(14));
    let waited_while_alive = prune.try_wait().expect("prune").is_none();
    signal("-STOP");
    let stopped = Instant::now();
    while prune.try_wait().expect("prune").is_none() && stopped.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let waited = stopped.elapsed();
    let gave_up = prune.try_wait().expect("prune").is_some();
    let _ = prune.kill();
    let out = prune.wait_with_output().expect("prune");
    signal("-CONT");
    let _ = daemon.kill();
    let _ = daemon.wait();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        waited_while_alive,
        "the prune gave up on a daemon that says it is alive: {said}"
    );
    assert!(gave_up, "still waiting on a silent daemon after {waited:?}");
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "the daemon at {url} said nothing for 8 s, though it says it is alive every 2 s"
        )),
        "{said}"
    );
    assert!(said.contains("may still be running there"), "{said}");
}

/// The keys `archive show` says a store is used with: the access key ID by its last 4
/// characters only, and where the keys come from.
fn shows_keys_from(said: &str, from: &str) {
    let id = common::s3::ACCESS_KEY_ID;
    let masked = format!("{}{}", "*".repeat(id.len() - 4), &id[id.len() - 4..]);
    assert!(
        said.contains(&format!("access key {masked}, {from}")),
        "{said}"
    );
    assert!(!said.contains(id), "{said}");
    assert!(!said.contains(common::s3::SECRET_ACCESS_KEY), "{said}");
}

/// `archive show` while the store is down: where the archive is (bucket and endpoint)
/// and why it cannot be used, and a failure (for scripts), in text and in JSON.
fn shows_where_and_why_while_down(rs: &Reposafe, url: &str, endpoint: &str) {
    let text = rs.run(&["archive", "show"]);
    assert_ne!(text.code, 0, "{}", text.all());
    assert!(
        text.stdout
            .contains(&format!("archive: {url} (endpoint {endpoint})")),
        "{}",
        text.all()
    );
    assert!(text.stdout.contains("unavailable: "), "{}", text.all());
    assert!(
        text.stderr.contains("the archive cannot be used now"),
        "{}",
        text.all()
    );
    let json = rs.run(&["archive", "show", "--json"]);
    assert_ne!(json.code, 0, "{}", json.all());
    let shown: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(shown["location"], url, "{shown}");
    assert_eq!(shown["endpoint"], endpoint, "{shown}");
    let why = shown["unavailable"].as_str().unwrap_or_default();
    assert!(why.contains(endpoint), "{shown}");
    assert!(shown.get("snapshots").is_none(), "not known: {shown}");
}

/// A daemon whose store does not answer when it starts still starts (before, it
/// exited, and under systemd started again and again, with no dashboard and no
/// scheduled backups): its API answers, its status warns naming the store, and a
/// backup fails saying why without touching the backups. Once the store answers
/// again, the next backup goes through without a restart, and restores ref for ref.
#[test]
fn a_daemon_whose_store_is_down_starts_and_backs_up_once_the_store_answers() {
    let through = backed_up_through("down", common::flaky::FlakyProxy::passing, &[]);
    let (proxy, rs) = (&through.proxy, &through.rs);
    proxy.set_down(true);
    // What a killed backup leaves: removed when the archive opens, not at the next start.
    let leftover = rs.data_dir().join("tmp").join("s3").join("left-by-a-kill");
    std::fs::create_dir_all(leftover.parent().expect("dir")).expect("mkdir");
    std::fs::write(&leftover, b"half a pack").expect("write");
    let log = through.scratch.path().join("daemon.log");
    let env = [
        ("REPOSAFE_ARCHIVE_RETRY_SECS", "1"),
        ("REPOSAFE_S3_TIMEOUT_SECS", "1"),
    ];
    let (mut daemon, url, token) = start_logged_daemon_with(rs, &log, &env);
    // It answers while the store is down.
    let status = daemon_status(&url, &token);
    let url_down = format!("s3://{BUCKET}/down");
    assert_eq!(status["archive_location"], url_down.as_str(), "{status}");
    assert_eq!(
        status["archive_endpoint"],
        proxy.endpoint.as_str(),
        "{status}"
    );
    assert_eq!(status["archive_available"], false, "{status}");
    let warnings = status["warnings"].to_string();
    assert!(
        warnings.contains("the archive cannot be used now") && warnings.contains(&proxy.endpoint),
        "{warnings}"
    );
    let failed = rs.run(&["backup", WS]);
    assert_ne!(failed.code, 0, "{}", failed.all());
    assert!(
        failed.all().contains("the archive cannot be used now"),
        "{}",
        failed.all()
    );
    shows_where_and_why_while_down(rs, &url_down, &proxy.endpoint);
    assert!(
        leftover.exists(),
        "nothing removed before the archive opens"
    );
    proxy.set_down(false);
    std::thread::sleep(std::time::Duration::from_secs(2));
    commit_on_head(&through.docs.bare, "while the store was down");
    rs.run(&["backup", WS]).ok();
    assert!(!leftover.exists(), "removed when the archive opened");
    let shown: serde_json::Value =
        serde_json::from_str(&rs.run(&["archive", "show", "--json"]).ok().stdout).expect("json");
    assert!(shown.get("unavailable").is_none(), "{shown}");
    assert!(shown["snapshots"].as_u64() >= Some(3), "{shown}");
    let status = daemon_status(&url, &token);
    assert_eq!(status["archive_available"], true, "{status}");
    assert_eq!(status["archive_location"], url_down.as_str(), "{status}");
    through.restores_both();
    let _ = daemon.kill();
    let _ = daemon.wait();
    let said = std::fs::read_to_string(&log).expect("log");
    assert!(said.contains("the archive opened"), "{said}");
}

/// A store whose https certificate a private CA signed (an on-premises MinIO or Ceph):
/// without that CA `archive init` fails saying the certificate is not trusted and how
/// to give the CA, recording nothing; a file that holds no certificate is refused
/// naming it; with `--ca-bundle` the archive is made there and the bundle recorded, so
/// later processes back up (a multipart upload too) and restore over https with the
/// bundle's file gone, and `archive show` says what is trusted. `archive copy --to`
/// takes the option too.
#[test]
fn a_store_whose_certificate_a_private_ca_signed_is_reached_with_its_ca_bundle() {
    let ca = reposafe_testkit::TestCa::new("reposafe test S3 CA");
    let weed = Weed::start_tls(&ca);
    weed.create_bucket(BUCKET);
    let https = weed.https_endpoint.clone().expect("an https endpoint");
    let scratch = TempDir::new("reposafe-s3-tls");
    let (server, docs, big) = server(scratch.path());
    let rs = Reposafe::new();
    let url = format!("s3://{BUCKET}/private-ca");
    let ca_file = scratch.path().join("ca.pem");
    std::fs::write(&ca_file, ca.ca_pem()).expect("CA file");
    let run_with = |rs: &Reposafe, mut args: Vec<String>, extra: &[&str]| {
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        rs.run(&args)
    };
    let init_here = |extra: &[&str]| init_at(&rs, &https, &url, extra);

    let untrusted = init_here(&[]);
    assert_ne!(untrusted.code, 0, "{}", untrusted.all());
    assert!(
        untrusted.all().contains("certificate is not trusted")
            && untrusted.all().contains("--ca-bundle FILE")
            && untrusted.all().contains(&https),
        "{}",
        untrusted.all()
    );
    let location_file = rs.data_dir().join("archive-location.json");
    assert!(!location_file.exists(), "nothing recorded");

    let not_a_bundle = scratch.path().join("not-a-ca.pem");
    std::fs::write(&not_a_bundle, "not a certificate\n").expect("file");
    let refused = init_here(&["--ca-bundle", &not_a_bundle.display().to_string()]);
    assert_ne!(refused.code, 0);
    assert!(
        refused
            .all()
            .contains(&format!("--ca-bundle {}: ", not_a_bundle.display()))
            && refused.all().contains("holds no certificate"),
        "{}",
        refused.all()
    );
    assert!(!location_file.exists(), "nothing recorded");

    // The right CA, but a host name the certificate does not hold: no CA bundle helps.
    let by_name = https.replace("127.0.0.1", "localhost");
    let ca_path = ca_file.display().to_string();
    let wrong_name = init_at(&rs, &by_name, &url, &["--ca-bundle", &ca_path]);
    assert_ne!(wrong_name.code, 0);
    assert!(
        wrong_name.all().contains("certificate was refused")
            && wrong_name.all().contains("localhost")
            && !wrong_name.all().contains("--ca-bundle FILE"),
        "{}",
        wrong_name.all()
    );
    assert!(!location_file.exists(), "nothing recorded");

    init_here(&["--ca-bundle", &ca_path]).ok();
    std::fs::remove_file(&ca_file).expect("remove the CA file");
    backs_up_twice_and_restores(&rs, &server, &docs, &big, scratch.path());
    let shown = rs.run(&["archive", "show"]).ok();
    assert!(
        shown.stdout.contains(&format!("(endpoint {https})"))
            && shown.stdout.contains(
                "TLS: the endpoint's certificate is checked against the system's trust store and the 1 certificate of the recorded CA bundle"
            ),
        "{}",
        shown.stdout
    );

    // A copy to another prefix of the same store, given the CA the same way.
    let ca_again = scratch.path().join("ca-again.pem");
    std::fs::write(&ca_again, ca.ca_pem()).expect("CA file");
    let copied_url = format!("s3://{BUCKET}/private-ca-copy");
    let mut args = vec![
        "archive".to_string(),
        "copy".into(),
        "--to".into(),
        copied_url,
    ];
    args.extend(common::s3::s3_options(&https, rs.files.path()));
    let untrusted = run_with(&rs, args.clone(), &[]);
    assert_ne!(untrusted.code, 0);
    assert!(
        untrusted.all().contains("--ca-bundle FILE"),
        "{}",
        untrusted.all()
    );
    let copied = run_with(&rs, args, &["--ca-bundle", &ca_again.display().to_string()]).ok();
    assert!(copied.all().contains("copied"), "{}", copied.all());
}

/// After the store's keys were rotated, and again after its certificate was re-issued
/// by another CA, `archive update` records the new keys and then the new CA bundle.
/// Each is checked against the store first: keys it does not know, keys that may only
/// read, and a bundle of the old CA change nothing. A backup refused for the new
/// certificate names the command that fixes it; backups after each update go through
/// and restore ref for ref. A local archive has nothing of a store to update.
#[test]
fn archive_update_records_rotated_keys_and_a_new_ca_bundle_once_the_store_takes_them() {
    use common::s3::{LIMITED_SECRET, READER_KEY_ID, ROTATED_KEY_ID, ROTATED_SECRET};
    let old_ca = reposafe_testkit::TestCa::new("reposafe test S3 CA, first");
    let mut weed = Weed::start_tls(&old_ca);
    weed.create_bucket(BUCKET);
    let https = weed.https_endpoint.clone().expect("an https endpoint");
    let scratch = TempDir::new("reposafe-s3-update");
    let server = CloudServer::start();
    let repo = small_bare_repo(scratch.path(), 3);
    server.add_repo(WS, "app", &repo, reposafe_testkit::RepoMeta::default());
    let pem_file = |name: &str, ca: &reposafe_testkit::TestCa| {
        let file = scratch.path().join(name);
        std::fs::write(&file, ca.ca_pem()).expect("CA file");
        file.display().to_string()
    };
    let old_pem = pem_file("old-ca.pem", &old_ca);

    let local = Reposafe::new();
    let refused = local.run(&["archive", "update", "--no-ca-bundle"]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.all().contains("not in an object store"),
        "{}",
        refused.all()
    );

    let rs = Reposafe::new();
    let update = |extra: &[&str]| {
        let args: Vec<&str> = ["archive", "update"]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        rs.run(&args)
    };
    init_at(
        &rs,
        &https,
        &format!("s3://{BUCKET}/rotated"),
        &["--ca-bundle", &old_pem],
    )
    .ok();
    rs.connect_cloud_with_token(&server, WS);
    rs.run(&["backup", WS]).ok();
    let record = rs.data_dir().join("archive-location.json");
    let recorded = || std::fs::read_to_string(&record).expect("the location record");
    let first = recorded();
    let nothing = update(&[]);
    assert!(
        nothing.code != 0 && nothing.all().contains("nothing to change"),
        "{}",
        nothing.all()
    );

    // Keys the store does not know, and keys that may only read: refused, unrecorded.
    let unknown = rs.secret_file("unknown-secret", "not-a-secret-this-store-knows");
    let reader = rs.secret_file("reader-secret", LIMITED_SECRET);
    for (id, secret) in [("reposafeUnknownKey", &unknown), (READER_KEY_ID, &reader)] {
        let secret = secret.display().to_string();
        let refused = update(&["--access-key-id", id, "--secret-access-key-file", &secret]);
        assert_ne!(refused.code, 0, "{id}: {}", refused.all());
        assert!(
            refused
                .all()
                .contains("the archive's record was not changed")
                && refused.all().contains("credentials were refused"),
            "{id}: {}",
            refused.all()
        );
        assert_eq!(recorded(), first, "{id} changed the record");
    }

    let rotated = rs.secret_file("rotated-secret", ROTATED_SECRET);
    let done = update(&[
        "--access-key-id",
        ROTATED_KEY_ID,
        "--secret-access-key-file",
        &rotated.display().to_string(),
    ])
    .ok();
    assert!(
        done.stdout
            .contains("replaced the keys, checked against the store first"),
        "{}",
        done.stdout
    );
    let masked = format!(
        "{}{}",
        "*".repeat(ROTATED_KEY_ID.len() - 4),
        &ROTATED_KEY_ID[ROTATED_KEY_ID.len() - 4..]
    );
    assert!(
        done.stdout
            .contains(&format!("access key {masked}, recorded with the location")),
        "{}",
        done.stdout
    );
    let with_rotated_keys = recorded();
    assert!(
        with_rotated_keys.contains(ROTATED_KEY_ID)
            && !with_rotated_keys.contains(common::s3::ACCESS_KEY_ID)
    );
    assert_not_on_disk(rs.data_dir(), ROTATED_SECRET);
    commit_on_head(&repo, "with the rotated keys");
    rs.run(&["backup", WS]).ok();

    // The store's certificate re-issued by another CA.
    let new_ca = reposafe_testkit::TestCa::new("reposafe test S3 CA, second");
    weed.restart_tls(&new_ca);
    let failed = rs.run(&["backup", WS]);
    assert_ne!(failed.code, 0);
    assert!(
        failed.all().contains("certificate is not trusted")
            && failed
                .all()
                .contains("reposafe archive update --ca-bundle FILE"),
        "{}",
        failed.all()
    );
    for stale in [
        vec!["--ca-bundle", old_pem.as_str()],
        vec!["--no-ca-bundle"],
    ] {
        let refused = update(&stale);
        assert_ne!(refused.code, 0, "{stale:?}");
        assert!(
            refused.all().contains("certificate is not trusted"),
            "{stale:?}: {}",
            refused.all()
        );
        assert_eq!(
            recorded(),
            with_rotated_keys,
            "{stale:?} changed the record"
        );
    }
    let new_pem = pem_file("new-ca.pem", &new_ca);
    let done = update(&["--ca-bundle", &new_pem]).ok();
    assert!(
        done.stdout
            .contains("replaced the CA bundle, checked against the store first"),
        "{}",
        done.stdout
    );
    assert!(recorded().contains(ROTATED_KEY_ID), "the keys stay");
    commit_on_head(&repo, "after the new CA");
    rs.run(&["backup", WS]).ok();
    restores_as_source(&rs, "acme/app", &repo, &scratch.path().join("restored"));

    // A bundle no longer needed (here: the plain-http endpoint of the same store) is
    // removed, and only it.
    let plain = Reposafe::new();
    init(
        &plain,
        &weed,
        &format!("s3://{BUCKET}/plain"),
        &["--ca-bundle", &new_pem],
    )
    .ok();
    let plain_record = plain.data_dir().join("archive-location.json");
    let before = std::fs::read_to_string(&plain_record).expect("record");
    assert!(before.contains("ca_bundle_pem"), "{before}");
    let removed = plain.run(&["archive", "update", "--no-ca-bundle"]).ok();
    assert!(
        removed
            .stdout
            .contains("removed the CA bundle, checked against the store first"),
        "{}",
        removed.stdout
    );
    let after = std::fs::read_to_string(&plain_record).expect("record");
    assert!(
        !after.contains("ca_bundle_pem") && after.contains(common::s3::ACCESS_KEY_ID),
        "{after}"
    );
}
