//! `reposafe archive copy --to` (issue 16): the archive copied into a real S3 server
//! (SeaweedFS) and into a directory, every blob verified there; a repeated copy brings
//! only what is new, a damaged or missing blob in the copy is found and written again,
//! a copy killed midway resumes; the copy restores on a fresh appliance, ref for ref
//! and `fsck`-clean; and the data dir moves to its copy with `archive init`.

mod common;

use common::s3::Weed;
use common::*;
use std::path::Path;

const WS: &str = "acme";
const BUCKET: &str = "reposafe-copies";

/// `reposafe <command> s3://BUCKET/<prefix> <S3 options>` with `extra` after it.
fn with_s3(rs: &Reposafe, weed: &Weed, command: &[&str], prefix: &str, extra: &[&str]) -> Run {
    let url = format!("s3://{BUCKET}/{prefix}");
    let options = common::s3::s3_options(&weed.endpoint, rs.files.path());
    let mut args: Vec<&str> = command.to_vec();
    args.push(&url);
    args.extend(options.iter().map(String::as_str));
    args.extend(extra);
    rs.run(&args)
}

/// `archive copy --to s3://BUCKET/copy --json`, which must succeed: its report.
fn copy_to_bucket(rs: &Reposafe, weed: &Weed) -> serde_json::Value {
    let run = with_s3(rs, weed, &["archive", "copy", "--to"], "copy", &["--json"]).ok();
    copy_report(&run)
}

fn copy_report(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.all()))
}

/// The archive at `s3://BUCKET/<prefix>`, raw.
fn bucket(weed: &Weed, prefix: &str, scratch: &Path) -> reposafe::archive::S3Backend {
    weed.store(BUCKET, prefix, scratch)
}

/// A Cloud server with `acme/docs` (LFS files and a wiki), and an appliance that backed
/// it up once.
fn backed_up_docs(scratch: &Path) -> (CloudServer, LfsWikiRepo, Reposafe) {
    let server = CloudServer::start();
    let docs = lfs_and_wiki_repo(&server, WS, "docs", &scratch.join("docs"));
    let rs = Reposafe::new();
    rs.connect_cloud_with_token(&server, WS);
    rs.run(&["backup", WS]).ok();
    (server, docs, rs)
}

#[test]
fn a_copy_to_s3_is_verified_resumable_restores_alone_and_the_data_dir_moves_to_it() {
    use reposafe::archive::{Backend, FileKind, Source};
    let weed = Weed::start_with_bucket(BUCKET);
    let scratch = TempDir::new("reposafe-copy");
    let (_server, docs, rs) = backed_up_docs(scratch.path());
    commit_on_head(&docs.bare, "second");
    rs.run(&["backup", WS]).ok();
    let local_blobs = std::fs::read_dir(rs.data_dir().join("archive/blobs"))
        .expect("blobs")
        .flatten()
        .map(|d| std::fs::read_dir(d.path()).expect("fan-out").count())
        .sum::<usize>() as u64;

    // Moving the data dir to an empty bucket is refused: its snapshots are not there.
    let early = with_s3(&rs, &weed, &["archive", "init"], "copy", &[]);
    assert_ne!(early.code, 0);
    assert!(early.all().contains("2 of them not at"), "{}", early.all());
    assert!(early.all().contains("archive copy --to"), "{}", early.all());

    // The first copy brings every blob and both snapshots.
    let first = copy_to_bucket(&rs, &weed);
    assert_eq!(first["blobs_copied"], local_blobs, "{first}");
    assert_eq!(first["snapshots_copied"], 2, "{first}");
    assert_eq!(first["blobs_repaired"], 0, "{first}");

    // A fresh appliance attached to the copy restores and checks it clean.
    let to = scratch.path().join("restored");
    let fresh = Reposafe::new();
    let attached = with_s3(&fresh, &weed, &["archive", "init"], "copy", &[]).ok();
    assert!(attached.stdout.contains("attached"), "{}", attached.stdout);
    restores_as_source(&fresh, "acme/docs", &docs.bare, &to);
    fresh.run(&["check", "--read-data"]).ok();

    // One more backup, copied again: only what is new travels, nothing is read back twice.
    commit_on_head(&docs.bare, "third");
    rs.run(&["backup", WS]).ok();
    let again = copy_to_bucket(&rs, &weed);
    assert_eq!(again["snapshots_copied"], 1, "{again}");
    assert_eq!(again["snapshots_present"], 2, "{again}");
    assert_eq!(again["blobs_verified_before"], local_blobs, "{again}");
    assert_eq!(again["blobs_checked"], 0, "{again}");

    // Damage in the copy: one blob removed, one overwritten. Without the journal (a
    // copy from another data dir would have none), both are found and written again.
    let raw_scratch = TempDir::new("reposafe-copy-raw");
    let store = bucket(&weed, "copy", raw_scratch.path());
    let ids = store.list(FileKind::Blob, "").expect("list");
    store.delete(FileKind::Blob, &ids[0]).expect("delete");
    store
        .write(FileKind::Blob, &ids[1], Source::Bytes(b"not the blob"))
        .expect("overwrite");
    std::fs::remove_dir_all(rs.data_dir().join("copies")).expect("forget the journal");
    let mended = copy_to_bucket(&rs, &weed);
    assert_eq!(mended["blobs_copied"], 1, "{mended}");
    assert_eq!(mended["blobs_repaired"], 1, "{mended}");
    assert_eq!(mended["blobs_checked"], ids.len() as u64 - 2, "{mended}");
    fresh.run(&["check", "--read-data"]).ok();

    // Now the data dir moves to its copy; the old archive stays on disk.
    let moved = with_s3(&rs, &weed, &["archive", "init"], "copy", &[]).ok();
    assert!(moved.stdout.contains("attached"), "{}", moved.all());
    let shown = rs.run(&["archive", "show", "--json"]).ok();
    let shown: serde_json::Value = serde_json::from_str(&shown.stdout).expect("json");
    assert_eq!(shown["location"], format!("s3://{BUCKET}/copy"), "{shown}");
    assert_eq!(shown["snapshots"], 3, "{shown}");
    assert!(rs.data_dir().join("archive/FORMAT").exists());
    restores_as_source(&rs, "acme/docs", &docs.bare, &to);
    // A copy onto the archive or inside it is refused, and writes nothing.
    for prefix in ["copy", "copy/inner"] {
        let onto = with_s3(&rs, &weed, &["archive", "copy", "--to"], prefix, &[]);
        assert_ne!(onto.code, 0, "{}", onto.all());
        assert!(
            onto.all().contains("this data dir's archive"),
            "{}",
            onto.all()
        );
    }
    assert!(
        bucket(&weed, "copy/inner", scratch.path())
            .is_empty()
            .expect("list"),
        "the refused copy wrote nothing"
    );

    // And back: the bucket copied into the `archive/` of a new data dir, which then
    // holds every snapshot, checks clean and restores.
    let back = Reposafe::new();
    let local_copy = back.data_dir().join("archive");
    let copied = rs
        .run(&[
            "archive",
            "copy",
            "--to",
            &local_copy.display().to_string(),
            "--json",
        ])
        .ok();
    let copied: serde_json::Value = serde_json::from_str(&copied.stdout).expect("json");
    assert_eq!(copied["snapshots_copied"], 3, "{copied}");
    let shown = back.run(&["archive", "show", "--json"]).ok();
    let shown: serde_json::Value = serde_json::from_str(&shown.stdout).expect("json");
    assert_eq!(shown["snapshots"], 3, "{shown}");
    back.run(&["check", "--read-data"]).ok();
    restores_as_source(&back, "acme/docs", &docs.bare, &scratch.path().join("back"));
}

#[test]
fn a_copy_killed_midway_resumes_and_an_encrypted_copy_in_a_directory_opens_elsewhere() {
    let scratch = TempDir::new("reposafe-copy-dir");
    let server = CloudServer::start();
    let docs = lfs_and_wiki_repo(&server, WS, "docs", &scratch.path().join("docs"));
    // Enough blobs for a kill to land in the middle: 30 repositories.
    gitutil::make_workspace_fixture(&server, WS, 30, &scratch.path().join("many"));
    let rs = Reposafe::new();
    let passphrase = rs.secret_file("passphrase", "correct horse battery staple");
    rs.run(&[
        "archive",
        "init",
        "--encrypt",
        "--passphrase-file",
        &passphrase.display().to_string(),
    ])
    .ok();
    rs.connect_cloud_with_token(&server, WS);
    rs.run(&["backup", WS]).ok();

    // Refused: a copy inside the data dir, and a directory holding another archive.
    let inside = rs.data_dir().join("copy");
    let refused = rs.run(&["archive", "copy", "--to", &inside.display().to_string()]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.all().contains("inside the data dir"),
        "{}",
        refused.all()
    );
    let other = Reposafe::new();
    other.run(&["archive", "show"]).ok();
    let other_archive = other.data_dir().join("archive");
    let refused = rs.run(&[
        "archive",
        "copy",
        "--to",
        &other_archive.display().to_string(),
    ]);
    assert_ne!(refused.code, 0);
    assert!(
        refused
            .all()
            .contains("holds another archive (not encrypted)"),
        "{}",
        refused.all()
    );

    // Killed at several moments, then run to its end: a complete, verified copy.
    let target = scratch.path().join("copy");
    let to = target.display().to_string();
    let mut killed = 0;
    for ms in [30, 60, 120] {
        let finished = rs.killed_after(
            &["archive", "copy", "--to", &to],
            std::time::Duration::from_millis(ms),
        );
        killed += usize::from(finished.is_none());
    }
    assert!(killed > 0, "no copy was killed before its end");
    let done = rs.run(&["archive", "copy", "--to", &to, "--json"]).ok();
    let done = copy_report(&done);
    assert_eq!(done["blobs_repaired"], 0, "{done}");
    let snapshots = rs.run(&["archive", "show", "--json"]).ok();
    let snapshots: serde_json::Value = serde_json::from_str(&snapshots.stdout).expect("json");
    assert_eq!(
        done["snapshots_copied"].as_u64().unwrap_or(0)
            + done["snapshots_present"].as_u64().unwrap_or(0),
        snapshots["snapshots"].as_u64().expect("count"),
        "{done}"
    );
    assert_eq!(
        std::fs::read(target.join("FORMAT")).expect("FORMAT"),
        std::fs::read(rs.data_dir().join("archive/FORMAT")).expect("FORMAT")
    );

    // A fresh data dir whose archive is the copy opens it with the passphrase only.
    let fresh = Reposafe::new();
    std::fs::create_dir_all(fresh.data_dir()).expect("data dir");
    std::fs::rename(&target, fresh.data_dir().join("archive")).expect("move the copy in");
    let locked = fresh.run(&["snapshots", "acme/docs"]);
    assert_ne!(locked.code, 0, "{}", locked.all());
    let listed = fresh
        .cmd(&["check", "--read-data"])
        .env(
            "REPOSAFE_ARCHIVE_PASSPHRASE",
            "correct horse battery staple",
        )
        .output()
        .expect("check");
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    restores_as_source(
        &fresh,
        "acme/docs",
        &docs.bare,
        &scratch.path().join("r.git"),
    );
}

#[test]
fn a_plan_copies_the_archive_to_its_saved_target_after_each_successful_run() {
    let scratch = TempDir::new("reposafe-copy-plan");
    let server = CloudServer::start();
    let docs = lfs_and_wiki_repo(&server, WS, "docs", &scratch.path().join("docs"));
    let rs = Reposafe::new();
    rs.connect_cloud_with_token(&server, WS);
    let offsite = scratch.path().join("offsite");
    let to = offsite.display().to_string();

    // A plan naming a target nobody saved is refused, naming how to save one.
    let refused = rs.run(&[
        "plan",
        "add",
        "nightly",
        "--connection",
        WS,
        "--copy-to",
        "offsite",
    ]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.all().contains("no copy target named \"offsite\""),
        "{}",
        refused.all()
    );
    rs.run(&["archive", "copy", "--to", &to, "--save-as", "offsite"])
        .ok();
    let shown = rs.run(&["archive", "show", "--json"]).ok();
    let shown: serde_json::Value = serde_json::from_str(&shown.stdout).expect("json");
    assert_eq!(shown["copy_targets"][0]["name"], "offsite", "{shown}");
    assert_eq!(shown["copy_targets"][0]["location"], to.as_str(), "{shown}");
    rs.run(&[
        "plan",
        "add",
        "nightly",
        "--connection",
        WS,
        "--copy-to",
        "offsite",
    ])
    .ok();

    for round in 0..2 {
        if round > 0 {
            commit_on_head(&docs.bare, "more");
        }
        let run = rs.run(&["run", "--plan", "nightly", "--json"]).ok();
        let job: serde_json::Value = serde_json::from_str(&run.stdout).expect("job json");
        assert_eq!(job["state"], "succeeded", "{job}");
        let notice = job["progress"]["notice"].as_str().unwrap_or("");
        assert!(notice.contains("copy to offsite"), "{job}");
        assert!(notice.contains("1 snapshots copied"), "{job}");
    }
    // The copy, in a fresh data dir of its own, restores the newest snapshot.
    let snapshots_there = std::fs::read_dir(offsite.join("snapshots"))
        .expect("snapshots")
        .flatten()
        .map(|d| std::fs::read_dir(d.path()).expect("history").count())
        .sum::<usize>();
    assert_eq!(snapshots_there, 2);
    let fresh = Reposafe::new();
    std::fs::create_dir_all(fresh.data_dir()).expect("data dir");
    let copied = scratch.path().join("copied");
    let status = std::process::Command::new("cp")
        .args(["-a", &to, &copied.display().to_string()])
        .status()
        .expect("cp");
    assert!(status.success());
    std::fs::rename(&copied, fresh.data_dir().join("archive")).expect("move in");
    restores_as_source(&fresh, "acme/docs", &docs.bare, &scratch.path().join("r"));

    // A copy that fails fails the job (which notifies), and says why.
    std::fs::remove_dir_all(&offsite).expect("remove the copy");
    std::fs::write(&offsite, b"not a directory").expect("a file in its place");
    commit_on_head(&docs.bare, "again");
    let run = rs.run(&["run", "--plan", "nightly", "--json"]);
    let job: serde_json::Value = serde_json::from_str(&run.stdout).expect("job json");
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        job["error"]
            .as_str()
            .unwrap_or("")
            .contains("the copy of the archive to offsite failed"),
        "{job}"
    );
}

/// Blob file names (ids) under an archive directory.
fn blob_files(archive: &Path) -> std::collections::BTreeMap<String, std::path::PathBuf> {
    files_under(&archive.join("blobs"))
        .into_iter()
        .filter_map(|p| Some((p.file_name()?.to_str()?.to_string(), p)))
        .collect()
}

#[test]
fn a_damaged_blob_in_the_source_keeps_only_its_snapshot_out_of_the_copy() {
    let scratch = TempDir::new("reposafe-copy-damage");
    let server = CloudServer::start();
    let repos = gitutil::make_workspace_fixture(&server, WS, 3, &scratch.path().join("src"));
    let rs = Reposafe::new();
    rs.connect_cloud_with_token(&server, WS);
    rs.run(&["backup", WS]).ok();
    let copy = scratch.path().join("copy");
    let to = copy.display().to_string();
    rs.run(&["archive", "copy", "--to", &to]).ok();

    // Two repositories change; one blob of the new backups is damaged in the source.
    let changed: Vec<&(String, std::path::PathBuf)> = repos
        .iter()
        .filter(|(slug, _)| slug != "empty-repo")
        .take(2)
        .collect();
    for (_, bare) in &changed {
        commit_on_head(bare, "a change");
    }
    rs.run(&["backup", WS]).ok();
    let source = blob_files(&rs.data_dir().join("archive"));
    let there = blob_files(&copy);
    let new: Vec<&String> = source
        .keys()
        .filter(|id| !there.contains_key(*id))
        .collect();
    assert!(new.len() >= 2, "{new:?}");
    std::fs::write(&source[new[0]], b"rotted").expect("damage a source blob");
    // …and a copy killed earlier left those bytes in the copy: listed there, not whole.
    let left = copy.join("blobs").join(&new[0][..2]).join(new[0].as_str());
    std::fs::create_dir_all(left.parent().expect("fan-out")).expect("mkdir");
    std::fs::write(&left, b"rotted").expect("a leftover");

    let run = rs.run(&["archive", "copy", "--to", &to, "--json"]);
    assert_eq!(run.code, 1, "{}", run.all());
    let report = copy_report(&run);
    let failed: Vec<&str> = report["failed"]
        .as_array()
        .expect("failed")
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    assert!(
        failed.iter().any(|f| f.contains(new[0].as_str())),
        "{failed:?}"
    );
    assert!(
        failed.iter().any(|f| f.starts_with("snapshot ")),
        "{report}"
    );
    // The other repository's new snapshot went; the damaged one's did not.
    assert_eq!(report["snapshots_copied"], 1, "{report}");
    // Every snapshot in the copy is whole: a data dir using it checks clean, reading
    // every blob back.
    let fresh = Reposafe::new();
    std::fs::create_dir_all(fresh.data_dir()).expect("data dir");
    std::fs::rename(&copy, fresh.data_dir().join("archive")).expect("move the copy in");
    fresh.run(&["check", "--read-data"]).ok();
}

/// Beside a running daemon, `archive copy` goes through it: to a directory (saved with
/// `--save-as`) and to the saved target, followed on a bar from the daemon's event
/// stream, reported and audited as without a daemon.
#[test]
fn a_copy_beside_the_daemon_goes_through_it_to_a_saved_target_or_a_directory() {
    let scratch = TempDir::new("reposafe-copy-daemon");
    let (_server, docs, rs) = backed_up_docs(scratch.path());
    let log = scratch.path().join("daemon.log");
    let (mut daemon, url, token) = start_logged_daemon(&rs, &log);

    // A relative directory is the caller's, not the daemon's.
    let first = rs
        .cmd(&[
            "archive",
            "copy",
            "--to",
            "offsite",
            "--save-as",
            "offsite",
            "--json",
        ])
        .current_dir(scratch.path())
        .output()
        .expect("copy");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let first: serde_json::Value = serde_json::from_slice(&first.stdout).expect("json");
    assert_eq!(first["snapshots_copied"], 1, "{first}");
    assert!(scratch.path().join("offsite/FORMAT").exists());

    commit_on_head(&docs.bare, "second");
    rs.run(&["backup", WS]).ok();
    let http = api_client();
    let events = http
        .post(format!("{url}/api/v1/archive/copy"))
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .json(&serde_json::json!({"target": "offsite"}))
        .send()
        .expect("copy")
        .text()
        .expect("events");
    assert!(
        events.contains("event: progress\ndata: {\"planned\":{\"blobs\":"),
        "{events}"
    );
    let end = events
        .split("event: end\ndata: ")
        .nth(1)
        .unwrap_or_else(|| panic!("an end event: {events}"));
    let second: serde_json::Value = serde_json::from_str(end.trim()).expect("report");
    assert_eq!(second["snapshots_copied"], 1, "{second}");
    assert_eq!(second["snapshots_present"], 1, "{second}");
    // The daemon's own working directory is nobody's business: a relative path is refused.
    let relative = http
        .post(format!("{url}/api/v1/archive/copy"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"to": "offsite"}))
        .send()
        .expect("copy");
    assert_eq!(relative.status().as_u16(), 400);
    let refusal: serde_json::Value = relative.json().expect("json");
    assert_eq!(refusal["field"], "to", "{refusal}");
    // A directory holding something else is the user's to sort out, not a server fault.
    let foreign = scratch.path().join("photos");
    std::fs::create_dir_all(&foreign).expect("mkdir");
    std::fs::write(foreign.join("holiday.jpg"), b"not an archive").expect("write");
    let refused = http
        .post(format!("{url}/api/v1/archive/copy"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"to": foreign}))
        .send()
        .expect("copy");
    assert_eq!(refused.status().as_u16(), 409);
    let refusal: serde_json::Value = refused.json().expect("json");
    let message = refusal["error"].as_str().unwrap_or_default();
    assert!(message.contains("not a reposafe archive"), "{refusal}");
    assert_eq!(
        std::fs::read_dir(&foreign).expect("list").count(),
        1,
        "the refused copy wrote nothing there"
    );
    let both = rs
        .run(&["archive", "copy", "--target", "offsite", "--json"])
        .ok();
    let both: serde_json::Value = serde_json::from_str(&both.stdout).expect("json");
    assert_eq!(both["snapshots_copied"], 0, "{both}");
    assert_eq!(both["snapshots_present"], 2, "{both}");
    let audit = rs.run(&["audit", "--json"]).ok();
    assert!(audit.stdout.contains("archive.copy"), "{}", audit.stdout);
    let _ = daemon.kill();
    let _ = daemon.wait();

    // The copy holds both snapshots and restores on a fresh appliance.
    let fresh = Reposafe::new();
    let copied = fresh.data_dir().join("archive");
    std::fs::create_dir_all(fresh.data_dir()).expect("data dir");
    std::fs::rename(scratch.path().join("offsite"), &copied).expect("move the copy in");
    let shown = fresh.run(&["archive", "show", "--json"]).ok();
    let shown: serde_json::Value = serde_json::from_str(&shown.stdout).expect("json");
    assert_eq!(shown["snapshots"], 2, "{shown}");
    restores_as_source(&fresh, "acme/docs", &docs.bare, &scratch.path().join("r"));
}

/// Beside a running daemon (as the package runs it), `archive copy --to s3://… --save-as`
/// with keys goes through the daemon: the keys travel in the request and are sealed in
/// its vault; the saved target then copies what is new; the secret is nowhere in the
/// daemon's log, the audit or the data dir's files; the copy restores on a fresh
/// appliance.
#[test]
fn an_s3_copy_beside_the_daemon_goes_through_it_and_its_keys_are_sealed_there() {
    let weed = Weed::start_with_bucket(BUCKET);
    let scratch = TempDir::new("reposafe-copy-daemon-s3");
    let (_server, docs, rs) = backed_up_docs(scratch.path());
    let log = scratch.path().join("daemon.log");
    // The service's environment names the store, as `/etc/reposafe/s3.env` may.
    let (mut daemon, url, token) =
        start_logged_daemon_with(&rs, &log, &[("AWS_ENDPOINT_URL", weed.endpoint.as_str())]);

    let first = with_s3(
        &rs,
        &weed,
        &["archive", "copy", "--to"],
        "daemon",
        &["--save-as", "offsite", "--json"],
    )
    .ok();
    let first = copy_report(&first);
    assert_eq!(first["snapshots_copied"], 1, "{first}");
    assert_eq!(first["to"], format!("s3://{BUCKET}/daemon"), "{first}");
    let saved = std::fs::read_to_string(rs.data_dir().join("copy-targets/offsite.json"))
        .expect("the target is saved");
    assert!(saved.contains("secret_access_key_sealed"), "{saved}");

    commit_on_head(&docs.bare, "second");
    rs.run(&["backup", WS]).ok();
    let second = rs
        .run(&["archive", "copy", "--target", "offsite", "--json"])
        .ok();
    let second = copy_report(&second);
    assert_eq!(second["snapshots_copied"], 1, "{second}");
    assert_eq!(second["snapshots_present"], 1, "{second}");
    // One destination per request.
    let http = api_client();
    let both = http
        .post(format!("{url}/api/v1/archive/copy"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"to": "/srv/x", "s3": {"url": format!("s3://{BUCKET}/y")}}))
        .send()
        .expect("copy");
    assert_eq!(both.status().as_u16(), 400);
    let both: serde_json::Value = both.json().expect("json");
    assert_eq!(both["field"], "to", "{both}");
    // The appliance lends its own keys to no location named in a request.
    let keyless = http
        .post(format!("{url}/api/v1/archive/copy"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"s3": {"url": format!("s3://{BUCKET}/y"), "endpoint": weed.endpoint, "path_style": true}}))
        .send()
        .expect("copy");
    assert_eq!(keyless.status().as_u16(), 400);
    let keyless: serde_json::Value = keyless.json().expect("json");
    assert_eq!(keyless["field"], "s3", "{keyless}");
    // A request naming no endpoint goes where the service's environment points, and is
    // saved, compared and audited as there (not as AWS).
    let service_env = format!("s3://{BUCKET}/service-env");
    let no_endpoint = http
        .post(format!("{url}/api/v1/archive/copy"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"s3": {
            "url": service_env,
            "path_style": true,
            "access_key_id": common::s3::ACCESS_KEY_ID,
            "secret_access_key": common::s3::SECRET_ACCESS_KEY,
        }, "save_as": "service-env"}))
        .send()
        .expect("copy");
    assert_eq!(
        no_endpoint.status().as_u16(),
        200,
        "{:?}",
        no_endpoint.text()
    );
    let saved = std::fs::read_to_string(rs.data_dir().join("copy-targets/service-env.json"))
        .expect("the target is saved");
    assert!(saved.contains(&format!("{:?}", weed.endpoint)), "{saved}");
    // From the command line, the keys of the shell it runs in go with the request…
    let to_env = format!("s3://{BUCKET}/from-env");
    let copy_without_keys = [
        "archive",
        "copy",
        "--to",
        to_env.as_str(),
        "--endpoint",
        weed.endpoint.as_str(),
        "--path-style",
        "--json",
    ];
    let no_credentials_file = scratch.path().join("no-aws-credentials");
    let with_env = common::s3::with_test_keys(&mut rs.cmd(&copy_without_keys))
        .output()
        .expect("copy");
    assert!(
        with_env.status.success(),
        "{}",
        String::from_utf8_lossy(&with_env.stderr)
    );
    // …and without any, the command says what to give.
    let without = common::s3::without_keys(&mut rs.cmd(&copy_without_keys), &no_credentials_file)
        .output()
        .expect("copy");
    let said = String::from_utf8_lossy(&without.stderr);
    assert!(!without.status.success(), "{said}");
    assert!(said.contains("no S3 keys for"), "{said}");
    assert!(said.contains("--access-key-id"), "{said}");
    let audit = rs.run(&["audit", "--json"]).ok();
    assert!(
        audit
            .stdout
            .contains(&format!("s3://{BUCKET}/daemon at {}", weed.endpoint)),
        "{}",
        audit.stdout
    );
    assert!(
        audit
            .stdout
            .contains(&format!("{service_env} at {}", weed.endpoint)),
        "{}",
        audit.stdout
    );
    let _ = daemon.kill();
    let _ = daemon.wait();

    let secret = common::s3::SECRET_ACCESS_KEY;
    let said = std::fs::read_to_string(&log).expect("log");
    assert!(!said.contains(secret), "the daemon logged the S3 secret");
    assert!(
        !audit.stdout.contains(secret),
        "the audit holds the S3 secret"
    );
    assert_not_on_disk(rs.data_dir(), secret);

    // The bucket alone restores both snapshots on a fresh appliance.
    let fresh = Reposafe::new();
    with_s3(&fresh, &weed, &["archive", "init"], "daemon", &[]).ok();
    let shown = fresh.run(&["archive", "show", "--json"]).ok();
    let shown: serde_json::Value = serde_json::from_str(&shown.stdout).expect("json");
    assert_eq!(shown["snapshots"], 2, "{shown}");
    restores_as_source(&fresh, "acme/docs", &docs.bare, &scratch.path().join("r"));
}
