//! Connection ids (issue 10, item 12): snapshot histories and mirrors are keyed by a
//! connection's immutable id, not its name. A connection removed and added again under
//! the same name against another server starts new histories, and the old ones stay
//! listed and restorable; a data dir written before ids existed keeps its histories.

mod common;

use common::*;
use reposafe_testkit::RepoMeta;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const WS: &str = "acme";

/// A bare repository `<dir>/<name>.git` with one commit holding `content`.
fn bare_repo(dir: &Path, name: &str, content: &str) -> PathBuf {
    let bare = dir.join(format!("{name}.git"));
    gitutil::init_bare(&bare);
    let mut work = gitutil::WorkRepo::new();
    work.write("README.md", content);
    work.commit(&format!("{name}: first"));
    work.push_all(&bare);
    bare
}

/// A test server with workspace `acme` serving these repositories, and the test token.
fn server_with(repos: &[(&str, &Path)]) -> CloudServer {
    let server = CloudServer::start();
    for (slug, bare) in repos {
        server.add_repo(WS, slug, bare, RepoMeta::default());
    }
    server.add_api_token("acct-1", EMAIL, API_TOKEN);
    server.grant("acct-1", WS);
    server
}

/// Adds connection `acme` against `server`.
fn add_acme(rs: &Reposafe, server: &CloudServer) {
    let tok = rs.secret_file("token.txt", API_TOKEN);
    let tok = tok.display().to_string();
    rs.add_cloud(
        server,
        WS,
        &["--api-token-email", EMAIL, "--api-token-file", &tok],
    )
    .ok();
}

/// `backup acme --json`: each repository's outcome status by full name.
fn backup(rs: &Reposafe) -> BTreeMap<String, String> {
    let run = rs.run(&["backup", WS, "--json"]).ok();
    let report: Value = serde_json::from_str(&run.stdout).expect("backup --json prints JSON");
    report["repositories"]
        .as_array()
        .expect("repositories")
        .iter()
        .map(|r| {
            let name = r["full_name"].as_str().unwrap_or("?").to_string();
            let status = r["outcome"]["status"].as_str().unwrap_or("?").to_string();
            (name, status)
        })
        .collect()
}

fn snapshots(rs: &Reposafe, full_name: &str) -> Vec<Value> {
    let run = rs.run(&["snapshots", full_name, "--json"]).ok();
    let v: Value = serde_json::from_str(&run.stdout).expect("snapshots --json prints JSON");
    v.as_array().expect("array").clone()
}

/// Restores `full_name` with `selector` and returns the restored refs.
fn restore(rs: &Reposafe, full_name: &str, selector: &[&str]) -> BTreeMap<String, String> {
    let out = TempDir::new("reposafe-restore");
    let target = out.path().join("r.git");
    let target_s = target.display().to_string();
    let mut args = vec!["restore", full_name, "--to", &target_s];
    args.extend_from_slice(selector);
    rs.run(&args).ok();
    gitutil::fsck(&target);
    gitutil::refs_of(&target)
}

fn packs(snap: &Value) -> BTreeSet<String> {
    snap["parts"]["git"]["packs"]
        .as_array()
        .expect("packs")
        .iter()
        .map(|p| p.as_str().unwrap_or("?").to_string())
        .collect()
}

fn mirrors(rs: &Reposafe) -> BTreeSet<String> {
    std::fs::read_dir(rs.data_dir().join("mirrors"))
        .expect("mirrors dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".git"))
        .collect()
}

/// `acme` backed up from server A, removed, added again against server B (same
/// workspace and slugs, other repositories): B's backups are new histories, full ones,
/// never "unchanged" against A's; restores by name give B; A's snapshots stay listed,
/// restorable by id, and the archive checks.
#[test]
fn a_reused_connection_name_starts_new_histories() {
    let src = TempDir::new("reposafe-src");
    let a_diff = bare_repo(&src.path().join("a"), "app", "server A's app\n");
    let b_diff = bare_repo(
        &src.path().join("b"),
        "app",
        "server B's app, another project\n",
    );
    // The same repository on both servers: it would look "unchanged" in a mixed history.
    let same = bare_repo(&src.path().join("both"), "lib", "a library\n");
    let server_a = server_with(&[("app", &a_diff), ("lib", &same)]);
    let server_b = server_with(&[("app", &b_diff), ("lib", &same)]);
    let rs = Reposafe::new();

    add_acme(&rs, &server_a);
    let first = backup(&rs);
    assert!(first.values().all(|s| s == "snapshot"), "{first:?}");
    let a_app = snapshots(&rs, "acme/app");
    let a_lib = snapshots(&rs, "acme/lib");
    assert_eq!((a_app.len(), a_lib.len()), (1, 1));
    let a_id = a_app[0]["repository"]["connection_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    rs.run(&["connection", "remove", WS]).ok();
    add_acme(&rs, &server_b);
    let second = backup(&rs);
    assert_eq!(
        second.get("acme/lib").map(String::as_str),
        Some("snapshot"),
        "the re-added connection's first backup is a new snapshot, not unchanged against A's: {second:?}"
    );
    assert_eq!(
        second.get("acme/app").map(String::as_str),
        Some("snapshot"),
        "{second:?}"
    );

    // Both histories are listed, each with its connection id.
    for (name, a_snap) in [("acme/app", &a_app[0]), ("acme/lib", &a_lib[0])] {
        let list = snapshots(&rs, name);
        assert_eq!(list.len(), 2, "{name}: A's and B's snapshot: {list:?}");
        assert_eq!(&list[0], a_snap, "{name}: A's snapshot is listed unchanged");
        let b_snap = &list[1];
        let b_id = b_snap["repository"]["connection_id"]
            .as_str()
            .unwrap_or_default();
        assert_ne!(b_id, a_id, "{name}: the re-added connection has a new id");
        assert!(
            !packs(b_snap).is_empty(),
            "{name}: B's snapshot has its packs"
        );
        // A different repository: nothing of A's may be in B's full first snapshot (the
        // same repository may share A's pack blobs: identical packs are stored once).
        if name == "acme/app" {
            assert!(
                packs(b_snap).is_disjoint(&packs(a_snap)),
                "{name}: B's first snapshot is a full one, built on none of A's packs"
            );
        }
    }
    assert_eq!(
        mirrors(&rs).len(),
        4,
        "one mirror per repository and history"
    );

    // By name: the current connection's history. By id: any snapshot.
    assert_eq!(restore(&rs, "acme/app", &[]), gitutil::refs_of(&b_diff));
    let a_snap_id = a_app[0]["id"].as_str().expect("snapshot id");
    assert_eq!(
        restore(&rs, "acme/app", &["--snapshot", a_snap_id]),
        gitutil::refs_of(&a_diff)
    );
    let human = rs.run(&["snapshots", "acme/app"]).ok();
    assert!(
        human.stdout.contains(&a_id) && human.stdout.contains("CONNECTION ID"),
        "the listing tells the histories apart:\n{}",
        human.stdout
    );

    // The next backup of B compares with B's history only.
    let third = backup(&rs);
    assert!(third.values().all(|s| s == "unchanged"), "{third:?}");
    let check = rs.run(&["check"]).ok();
    assert!(check.stdout.contains("all intact"), "{}", check.stdout);
}

/// The `<repo-dir>` a data dir written before connection ids gave a repository.
fn name_keyed_dir(connection: &str, repo_id: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(connection.as_bytes());
    h.update(&[0]);
    h.update(repo_id.as_bytes());
    hex::encode(&h.finalize().as_bytes()[..8])
}

/// Turns a data dir into what the code before connection ids wrote: connection records
/// without `id`, manifests without `connection_id`, under name-keyed `<repo-dir>`s, and
/// mirrors named the same way.
fn make_pre_id_data_dir(data: &Path) {
    use redb::{Database, ReadableTable, TableDefinition};
    const CONNECTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("connections_v1");
    let db = Database::open(data.join("state.redb")).expect("state");
    let tx = db.begin_write().expect("tx");
    {
        let mut t = tx.open_table(CONNECTIONS).expect("connections");
        let mut records = Vec::new();
        for item in t.iter().expect("iter") {
            let (k, v) = item.expect("record");
            records.push((k.value().to_string(), v.value().to_vec()));
        }
        for (name, json) in records {
            let mut v: Value = serde_json::from_slice(&json).expect("json");
            v.as_object_mut().expect("object").remove("id");
            t.insert(
                name.as_str(),
                serde_json::to_vec(&v).expect("json").as_slice(),
            )
            .expect("insert");
        }
    }
    tx.commit().expect("commit");

    let snaps = data.join("archive").join("snapshots");
    let dirs: Vec<_> = std::fs::read_dir(&snaps)
        .expect("snapshots")
        .flatten()
        .collect();
    for dir in dirs {
        let id_dir = dir.file_name().to_string_lossy().into_owned();
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .collect();
        let mut old_dir = id_dir.clone();
        for file in files {
            let mut v: Value =
                serde_json::from_slice(&std::fs::read(file.path()).expect("read")).expect("json");
            let repo = v["repository"].as_object_mut().expect("repository");
            repo.remove("connection_id");
            old_dir = name_keyed_dir(
                repo["connection"].as_str().expect("connection"),
                repo["repo_id"].as_str().expect("repo_id"),
            );
            let bytes = serde_json::to_vec(&v).expect("json");
            std::fs::remove_file(file.path()).expect("remove");
            std::fs::create_dir_all(snaps.join(&old_dir)).expect("mkdir");
            std::fs::write(snaps.join(&old_dir).join(file.file_name()), bytes).expect("write");
        }
        if old_dir != id_dir {
            std::fs::remove_dir(dir.path()).expect("rmdir");
            let mirrors = data.join("mirrors");
            std::fs::rename(
                mirrors.join(format!("{id_dir}.git")),
                mirrors.join(format!("{old_dir}.git")),
            )
            .expect("move the mirror");
        }
    }
}

/// A connection stored before ids existed, with its manifests and mirrors: it reads as
/// `id = name`, its history is found by name, and the next backup of an unchanged
/// repository is "unchanged", in the same mirror.
#[test]
fn connections_and_manifests_from_before_ids_keep_their_histories() {
    let src = TempDir::new("reposafe-src");
    let app = bare_repo(src.path(), "app", "the app\n");
    let server = server_with(&[("app", &app)]);
    let rs = Reposafe::new();
    add_acme(&rs, &server);
    assert_eq!(
        backup(&rs).get("acme/app").map(String::as_str),
        Some("snapshot")
    );
    make_pre_id_data_dir(rs.data_dir());
    let before = snapshots(&rs, "acme/app");
    assert_eq!(before.len(), 1, "{before:?}");
    assert!(before[0]["repository"]["connection_id"]
        .as_str()
        .is_none_or(str::is_empty));
    let mirrors_before = mirrors(&rs);
    assert_eq!(mirrors_before.len(), 1);

    let next = backup(&rs);
    assert_eq!(
        next.get("acme/app").map(String::as_str),
        Some("unchanged"),
        "{next:?}"
    );
    assert_eq!(mirrors(&rs), mirrors_before, "the old mirror is used");
    assert_eq!(restore(&rs, "acme/app", &[]), gitutil::refs_of(&app));

    // A change continues the same history, now recorded under the id `acme`.
    let work = TempDir::new("reposafe-push");
    let w = work.path().join("w");
    gitutil::git(
        work.path(),
        &["clone", "--quiet", &app.display().to_string(), "w"],
    );
    std::fs::write(w.join("CHANGES.md"), "one more\n").expect("write");
    gitutil::git(&w, &["add", "-A"]);
    gitutil::git(&w, &["commit", "--quiet", "-m", "change"]);
    gitutil::git(&w, &["push", "--quiet", "origin", "main"]);
    assert_eq!(
        backup(&rs).get("acme/app").map(String::as_str),
        Some("snapshot")
    );
    let after = snapshots(&rs, "acme/app");
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[0], before[0]);
    assert_eq!(after[1]["repository"]["connection_id"], "acme");
    assert_eq!(mirrors(&rs), mirrors_before);
    assert_eq!(restore(&rs, "acme/app", &[]), gitutil::refs_of(&app));
    let check = rs.run(&["check"]).ok();
    assert!(check.stdout.contains("all intact"), "{}", check.stdout);
}
