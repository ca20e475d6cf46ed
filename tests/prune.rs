//! Prune (issue 15): forgetting snapshots and pruning gives their space back, every
//! kept snapshot still restores ref for ref and `fsck`-clean, the mirror keeps one pack,
//! later backups build on the consolidated pack — and a `kill -9` at any moment of a
//! prune leaves every kept snapshot restorable.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const WS: &str = "acme";

/// A source repository with a work clone to push from.
struct Source {
    full_name: String,
    bare: PathBuf,
    work: PathBuf,
}

impl Source {
    /// Commits `bytes` as `file` on the checked-out branch and pushes it.
    fn push_file(&self, file: &str, bytes: &[u8]) {
        std::fs::write(self.work.join(file), bytes).expect("write");
        gitutil::git(&self.work, &["add", "-A"]);
        gitutil::git(&self.work, &["commit", "--quiet", "-m", file]);
        gitutil::git(&self.work, &["push", "--quiet", "origin", "HEAD"]);
    }
}

/// A Cloud test server with one repository, and a data dir connected to it.
fn setup(rs: &Reposafe, scratch: &Path) -> (CloudServer, Source) {
    let server = CloudServer::start();
    let repos = gitutil::make_workspace_fixture(&server, WS, 2, &scratch.join("src"));
    rs.connect_cloud_with_token(&server, WS);
    let (slug, bare) = repos
        .into_iter()
        .find(|(s, _)| s != "empty-repo")
        .expect("a repository with commits");
    let work = scratch.join("work");
    gitutil::git(
        scratch,
        &["clone", "--quiet", &bare.display().to_string(), "work"],
    );
    let source = Source {
        full_name: format!("{WS}/{slug}"),
        bare,
        work,
    };
    (server, source)
}

/// Backs up and returns the new snapshot's id with the source's refs at that moment.
fn backup(rs: &Reposafe, source: &Source) -> (String, BTreeMap<String, String>) {
    rs.run(&["backup", WS]).ok();
    let ids = snapshot_ids(rs, &source.full_name);
    let newest = ids.last().expect("a snapshot").clone();
    (newest, gitutil::refs_of(&source.bare))
}

/// Snapshot ids of a repository, oldest first.
fn snapshot_ids(rs: &Reposafe, repo: &str) -> Vec<String> {
    let run = rs.run(&["snapshots", repo, "--json"]).ok();
    let list: serde_json::Value = serde_json::from_str(&run.stdout).expect("snapshots --json");
    let mut out: Vec<(String, String)> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|s| {
            (
                s["taken_at"].as_str().expect("taken_at").to_string(),
                s["id"].as_str().expect("id").to_string(),
            )
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, id)| id).collect()
}

/// Restores snapshot `id` and checks it: `fsck --full` clean and exactly `refs`.
fn restores_as(rs: &Reposafe, repo: &str, id: &str, refs: &BTreeMap<String, String>, to: &Path) {
    let t = to.display().to_string();
    rs.run(&["restore", repo, "--snapshot", id, "--to", &t])
        .ok();
    gitutil::fsck(to);
    assert_eq!(
        &gitutil::refs_of(to),
        refs,
        "snapshot {id} restores its refs"
    );
    std::fs::remove_dir_all(to).expect("remove restore");
}

fn archive_bytes(rs: &Reposafe) -> u64 {
    files_under(&rs.data_dir().join("archive"))
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// The `.pack` files of the repository's mirror.
fn mirror_packs(rs: &Reposafe) -> usize {
    let mirrors = rs.data_dir().join("mirrors");
    files_under(&mirrors)
        .iter()
        .filter(|p| !p.to_string_lossy().contains(".wiki.git/"))
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .count()
}

#[test]
fn prune_frees_forgotten_snapshots_space_and_every_kept_snapshot_still_restores() {
    let rs = Reposafe::new();
    let scratch = TempDir::new("reposafe-prune");
    let (_server, source) = setup(&rs, scratch.path());
    let repo = source.full_name.clone();
    let mut refs_of: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let record = |refs_of: &mut BTreeMap<_, _>, (id, refs): (String, BTreeMap<String, String>)| {
        refs_of.insert(id.clone(), refs);
        id
    };
    record(&mut refs_of, backup(&rs, &source));
    // 1 MiB nobody will need after it is forgotten: pushed on a branch, then deleted.
    gitutil::git(&source.work, &["checkout", "--quiet", "-b", "junk"]);
    source.push_file("junk.bin", &gitutil::pseudo_random_bytes(7, 1 << 20));
    record(&mut refs_of, backup(&rs, &source));
    gitutil::git(&source.work, &["checkout", "--quiet", "-"]);
    gitutil::git(
        &source.work,
        &["push", "--quiet", "origin", "--delete", "junk"],
    );
    source.push_file("a.txt", b"a\n");
    let third = record(&mut refs_of, backup(&rs, &source));
    source.push_file("b.txt", b"b\n");
    let fourth = record(&mut refs_of, backup(&rs, &source));
    assert_eq!(snapshot_ids(&rs, &repo).len(), 4);
    assert!(mirror_packs(&rs) >= 3, "one pack per fetch before prune");
    let before = archive_bytes(&rs);

    // A dry run changes nothing and says what it would do.
    let dry = rs.run(&["prune", "--dry-run"]).ok();
    assert!(dry.stdout.contains("would consolidate"), "{}", dry.stdout);
    assert_eq!(archive_bytes(&rs), before);

    let run = rs
        .run(&["forget", &repo, "--keep-last", "2", "--prune", "--json"])
        .ok();
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(report["removed"], 2, "{report}");
    let pruned = &report["prune"];
    assert_eq!(pruned["histories"][0]["part"], "git", "{report}");
    assert!(
        pruned["bytes_freed"].as_u64().expect("freed") > 900 << 10,
        "{report}"
    );
    let after = archive_bytes(&rs);
    assert!(
        after + (900 << 10) < before,
        "archive {before} → {after} bytes: the junk's space came back"
    );
    assert_eq!(
        mirror_packs(&rs),
        1,
        "the mirror keeps the consolidated pack only"
    );
    let restore_to = scratch.path().join("restored.git");
    assert_eq!(
        snapshot_ids(&rs, &repo),
        vec![third.clone(), fourth.clone()]
    );
    for id in [&third, &fourth] {
        restores_as(&rs, &repo, id, &refs_of[id], &restore_to);
    }
    let check = rs.run(&["check", "--read-data"]).ok();
    assert!(check.stdout.contains("all intact"), "{}", check.all());
    assert!(!check.all().contains("warning"), "{}", check.all());

    // Backups go on from the consolidated pack: the next one adds one small pack.
    source.push_file("c.txt", b"c\n");
    let fifth = record(&mut refs_of, backup(&rs, &source));
    assert_eq!(mirror_packs(&rs), 2);
    restores_as(&rs, &repo, &fifth, &refs_of[&fifth], &restore_to);
    // A prune with nothing forgotten still shortens the chain, and frees nothing needed.
    let again = rs.run(&["prune", "--json"]).ok();
    let again: serde_json::Value = serde_json::from_str(&again.stdout).expect("json");
    assert_eq!(
        again["histories"].as_array().map(Vec::len),
        Some(1),
        "{again}"
    );
    assert_eq!(mirror_packs(&rs), 1);
    for id in [&third, &fourth, &fifth] {
        restores_as(&rs, &repo, id, &refs_of[id], &restore_to);
    }
    let idle = rs.run(&["prune", "--json"]).ok();
    let idle: serde_json::Value = serde_json::from_str(&idle.stdout).expect("json");
    assert_eq!(idle["blobs_removed"], 0, "{idle}");
    assert_eq!(
        idle["histories"].as_array().map(Vec::len),
        Some(0),
        "{idle}"
    );
    let log = rs.run(&["audit"]).ok();
    assert!(log.stdout.contains("archive.prune"), "{}", log.stdout);
}

#[test]
fn a_prune_killed_at_any_moment_leaves_every_kept_snapshot_restorable() {
    let rs = Reposafe::new();
    let scratch = TempDir::new("reposafe-prune-kill");
    let (_server, source) = setup(&rs, scratch.path());
    let repo = source.full_name.clone();
    let restore_to = scratch.path().join("restored.git");
    let mut refs_of: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    // Enough objects (a few thousand files over a few dozen commits) for a prune to last
    // long enough to be killed in each of its steps.
    for commit in 0..40 {
        for f in 0..60 {
            let dir = source.work.join(format!("d{}", f % 12));
            std::fs::create_dir_all(&dir).expect("mkdir");
            let text = format!("file {f} of commit {commit}\n").repeat(20);
            std::fs::write(dir.join(format!("c{commit}-f{f}.txt")), text).expect("write");
        }
        gitutil::git(&source.work, &["add", "-A"]);
        gitutil::git(
            &source.work,
            &["commit", "--quiet", "-m", &format!("bulk {commit}")],
        );
    }
    gitutil::git(&source.work, &["push", "--quiet", "origin", "HEAD"]);
    // How long a whole prune takes here (process start included): round 0 lets it
    // finish, the others kill it at a point spread from its start to just past its end.
    let mut full = Duration::from_secs(3600);
    let (mut killed, mut finished) = (0, 0);
    for round in 0..14u64 {
        let delay = if round == 0 {
            full
        } else {
            full.mul_f64((round as f64 - 0.5) / 12.0)
        };
        // Two new snapshots with some incompressible data, then the oldest forgotten:
        // the chain to consolidate is several packs long every round.
        for i in 0..2 {
            let name = format!("r{round}-{i}.bin");
            source.push_file(
                &name,
                &gitutil::pseudo_random_bytes(round * 2 + i, 96 << 10),
            );
            let (id, refs) = backup(&rs, &source);
            refs_of.insert(id, refs);
        }
        rs.run(&["forget", &repo, "--keep-last", "3"]).ok();
        match rs.killed_after(&["prune"], delay) {
            None => killed += 1,
            Some(took) => {
                finished += 1;
                full = took;
            }
        }
        for id in snapshot_ids(&rs, &repo) {
            restores_as(&rs, &repo, &id, &refs_of[&id], &restore_to);
        }
        let check = rs.run(&["check"]);
        assert_eq!(check.code, 0, "round {round}: {}", check.all());
    }
    println!("a whole prune took {full:?}; {killed} killed, {finished} finished");
    assert!(killed >= 6, "{killed} prunes killed, {finished} finished");
    // A prune that runs to its end after all that leaves a clean, whole archive.
    rs.run(&["prune"]).ok();
    let check = rs.run(&["check", "--read-data"]).ok();
    assert!(check.stdout.contains("all intact"), "{}", check.all());
    for id in snapshot_ids(&rs, &repo) {
        restores_as(&rs, &repo, &id, &refs_of[&id], &restore_to);
    }
    let mirror_files = files_under(&rs.data_dir().join("mirrors"));
    assert_eq!(mirror_packs(&rs), 1, "{mirror_files:?}");
    // What killed prunes left in their scratch space is gone once the data dir is reopened.
    let leftovers: Vec<PathBuf> = files_under(&rs.data_dir().join("tmp"));
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn check_read_data_walks_each_snapshots_refs_through_its_packs() {
    let rs = Reposafe::new();
    let scratch = TempDir::new("reposafe-reach");
    let (_server, source) = setup(&rs, scratch.path());
    let repo = source.full_name.clone();
    backup(&rs, &source);
    source.push_file("one.txt", b"one\n");
    backup(&rs, &source);
    source.push_file("two.txt", b"two\n");
    let (newest, _) = backup(&rs, &source);
    let clean = rs.run(&["check", "--read-data"]).ok();
    assert!(
        clean
            .stdout
            .contains("snapshot parts through their packs: every object they reach is there"),
        "{}",
        clean.all()
    );
    // A manifest naming only its newest pack (as a bug could write it): every blob is
    // there and intact, but the snapshot does not restore.
    let manifest = files_under(&rs.data_dir().join("archive/snapshots"))
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(&format!("{newest}.json")))
        .expect("manifest");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).expect("read")).expect("json");
    let packs = m["parts"]["git"]["packs"]
        .as_array()
        .expect("packs")
        .clone();
    assert_eq!(packs.len(), 3, "{m}");
    m["parts"]["git"]["packs"] = serde_json::json!([packs[2]]);
    std::fs::write(&manifest, m.to_string()).expect("write");
    let structure = rs.run(&["check"]);
    assert_eq!(structure.code, 0, "{}", structure.all());
    let deep = rs.run(&["check", "--read-data"]);
    assert_eq!(deep.code, 1, "{}", deep.all());
    let want = format!("snapshot {newest} of {repo} (git): its packs lack what its refs reach");
    assert!(deep.stderr.contains(&want), "{}", deep.all());
    assert!(
        deep.stdout.contains("1 snapshot parts incomplete"),
        "{}",
        deep.all()
    );
}

#[test]
fn a_plan_checks_the_archive_on_its_schedule_and_fails_its_job_on_damage() {
    let rs = Reposafe::new();
    let scratch = TempDir::new("reposafe-plan-check");
    let (_server, source) = setup(&rs, scratch.path());
    let add = |subset: &str| {
        let args = [
            "plan",
            "add",
            "nightly",
            "--connection",
            WS,
            "--check-every",
            "1s",
        ];
        rs.run(&[&args[..], &["--check-subset", subset]].concat())
    };
    let bad = add("0%");
    assert_ne!(bad.code, 0);
    assert!(bad.all().contains("check_subset"), "{}", bad.all());
    add("100%").ok();
    let run = |rs: &Reposafe| -> serde_json::Value {
        let out = rs.run(&["run", "--plan", "nightly", "--json"]);
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.all()))
    };
    let first = run(&rs);
    assert_eq!(first["state"], "succeeded", "{first}");
    let notice = first["progress"]["notice"].as_str().unwrap_or("");
    assert!(
        notice.contains("check: ") && notice.contains("all intact"),
        "{first}"
    );
    // A run within check_every does not check again.
    let second = run(&rs);
    assert!(
        !second["progress"]["notice"]
            .as_str()
            .unwrap_or("")
            .contains("check"),
        "{second}"
    );

    // Damage: a stored pack loses a byte. The next due check fails the job (which notifies).
    let pack = files_under(&rs.data_dir().join("archive/blobs"))
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a blob");
    let mut bytes = std::fs::read(&pack).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&pack, bytes).expect("write");
    std::thread::sleep(Duration::from_millis(1100));
    source.push_file("more.txt", b"more\n");
    let damaged = run(&rs);
    assert_eq!(damaged["state"], "failed", "{damaged}");
    let error = damaged["error"].as_str().unwrap_or("");
    assert!(
        error.contains("the archive check found damage: 1 blobs damaged"),
        "{damaged}"
    );
    let shown = rs.run(&["plan", "show", "nightly"]).ok();
    assert!(shown.stdout.contains("last_check"), "{}", shown.stdout);
}

#[test]
fn prune_consolidates_the_wiki_too_and_keeps_lfs_objects_the_kept_snapshots_need() {
    let rs = Reposafe::new();
    let scratch = TempDir::new("reposafe-prune-wiki");
    let server = CloudServer::start();
    let repo = lfs_and_wiki_repo(&server, WS, "app", scratch.path());
    rs.connect_cloud_with_token(&server, WS);
    let wiki_work = scratch.path().join("wiki-work");
    gitutil::git(
        scratch.path(),
        &[
            "clone",
            "--quiet",
            &repo.wiki_bare.display().to_string(),
            "wiki-work",
        ],
    );
    for round in 0..3 {
        if round > 0 {
            std::fs::write(
                wiki_work.join(format!("Page{round}.md")),
                format!("# {round}\n"),
            )
            .expect("write");
            gitutil::git(&wiki_work, &["add", "-A"]);
            gitutil::git(&wiki_work, &["commit", "--quiet", "-m", "page"]);
            gitutil::git(&wiki_work, &["push", "--quiet", "origin", "HEAD"]);
        }
        rs.run(&["backup", WS]).ok();
    }
    let run = rs
        .run(&[
            "forget",
            "acme/app",
            "--keep-last",
            "1",
            "--prune",
            "--json",
        ])
        .ok();
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    let parts: Vec<&str> = report["prune"]["histories"]
        .as_array()
        .expect("histories")
        .iter()
        .filter_map(|h| h["part"].as_str())
        .collect();
    assert!(parts.contains(&"wiki"), "{report}");
    let to = scratch.path().join("app.git");
    rs.run(&["restore", "acme/app", "--to", &to.display().to_string()])
        .ok();
    gitutil::fsck(&to);
    assert_eq!(gitutil::refs_of(&to), gitutil::refs_of(&repo.bare));
    let wiki_to = scratch.path().join("app.wiki.git");
    gitutil::fsck(&wiki_to);
    assert_eq!(
        gitutil::refs_of(&wiki_to),
        gitutil::refs_of(&repo.wiki_bare)
    );
    // The LFS objects the kept snapshot names are still there, byte for byte.
    for content in repo.lfs_files.values() {
        let oid = reposafe_testkit::lfs::sha256_hex(content);
        let path = to
            .join("lfs/objects")
            .join(&oid[..2])
            .join(&oid[2..4])
            .join(&oid);
        assert_eq!(&std::fs::read(&path).expect("lfs object"), content);
    }
    let check = rs.run(&["check", "--read-data"]).ok();
    assert!(check.stdout.contains("all intact"), "{}", check.all());
}

#[test]
fn a_history_with_a_damaged_pack_is_not_consolidated_and_does_not_stop_the_others() {
    let rs = Reposafe::new();
    let scratch = TempDir::new("reposafe-prune-damaged");
    let server = CloudServer::start();
    let repos = gitutil::make_workspace_fixture(&server, WS, 3, &scratch.path().join("src"));
    rs.connect_cloud_with_token(&server, WS);
    let with_commits: Vec<&(String, PathBuf)> =
        repos.iter().filter(|(s, _)| s != "empty-repo").collect();
    for round in 0..2 {
        if round > 0 {
            for (_, bare) in &with_commits {
                let work = scratch
                    .path()
                    .join(format!("w{}", bare.display().to_string().len()));
                let _ = std::fs::remove_dir_all(&work);
                gitutil::git(
                    scratch.path(),
                    &[
                        "clone",
                        "--quiet",
                        &bare.display().to_string(),
                        &work.display().to_string(),
                    ],
                );
                std::fs::write(work.join("more.txt"), "more\n").expect("write");
                gitutil::git(&work, &["add", "-A"]);
                gitutil::git(&work, &["commit", "--quiet", "-m", "more"]);
                gitutil::git(&work, &["push", "--quiet", "origin", "HEAD"]);
            }
        }
        rs.run(&["backup", WS]).ok();
    }
    // The first repository's oldest pack loses a byte.
    let damaged_repo = format!("{WS}/{}", with_commits[0].0);
    let manifest = files_under(&rs.data_dir().join("archive/snapshots"))
        .into_iter()
        .map(|p| {
            serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(p).expect("read"))
                .expect("json")
        })
        .find(|m| m["repository"]["full_name"] == damaged_repo.as_str())
        .expect("a manifest");
    let pack = manifest["parts"]["git"]["packs"][0]
        .as_str()
        .expect("pack")
        .to_string();
    let blob = rs
        .data_dir()
        .join("archive/blobs")
        .join(&pack[..2])
        .join(&pack);
    let mut bytes = std::fs::read(&blob).expect("blob");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).expect("write");
    // Without the mirrors (a cache), prune reads every pack from the archive.
    std::fs::remove_dir_all(rs.data_dir().join("mirrors")).expect("rm mirrors");

    let run = rs.run(&["prune"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stderr.contains(&format!(
            "{damaged_repo} (connection {WS}): not consolidated"
        )),
        "{}",
        run.all()
    );
    let other = format!("{WS}/{}", with_commits[1].0);
    assert!(
        run.stdout
            .contains(&format!("{other} ({WS}, git): 2 packs")),
        "{}",
        run.all()
    );
    // The damaged history keeps what its manifests name: the blob is still there.
    assert!(blob.exists());
    let to = scratch.path().join("other.git");
    rs.run(&["restore", &other, "--to", &to.display().to_string()])
        .ok();
    gitutil::fsck(&to);
    assert_eq!(gitutil::refs_of(&to), gitutil::refs_of(&with_commits[1].1));
}

#[test]
fn backup_time_dates_snapshots_so_calendar_rules_keep_one_per_day_and_month() {
    let rs = Reposafe::new();
    let scratch = TempDir::new("reposafe-backup-time");
    let (_server, source) = setup(&rs, scratch.path());
    let repo = source.full_name.clone();
    let days = [
        "2026-01-01T09:00Z",
        "2026-01-02T09:00Z",
        "2026-01-03T09:00Z",
        "2026-02-10T09:00Z",
        "2026-03-05T09:00Z",
    ];
    let mut id_of_day = BTreeMap::new();
    for (i, day) in days.iter().enumerate() {
        source.push_file("daily.txt", format!("day {i}\n").as_bytes());
        rs.run(&["backup", WS, "--time", day]).ok();
        let newest = snapshot_ids(&rs, &repo).last().expect("a snapshot").clone();
        id_of_day.insert(*day, newest);
    }
    // Each snapshot carries the time it was given, in its id and its taken_at.
    let run = rs.run(&["snapshots", &repo, "--json"]).ok();
    let list: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    let taken: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s["taken_at"].as_str().expect("taken_at"))
        .collect();
    for day in days {
        let rfc = format!("{}:00Z", day.trim_end_matches('Z'));
        assert!(taken.contains(&rfc.as_str()), "{rfc} in {taken:?}");
        let compact = day.replace(['-', ':'], "").replace("Z", "00Z");
        assert!(id_of_day[day].starts_with(&compact), "{}", id_of_day[day]);
    }

    // A time not after the newest snapshot fails the repository, naming both times.
    source.push_file("daily.txt", b"late\n");
    let older = rs.run(&["backup", WS, "--time", "2026-02-01T00:00Z"]);
    assert_ne!(older.code, 0, "{}", older.all());
    assert!(
        older.all().contains("is not after its newest snapshot"),
        "{}",
        older.all()
    );
    let future = rs.run(&["backup", WS, "--time", "2999-01-01T00:00Z"]);
    assert_ne!(future.code, 0);
    assert!(
        future.all().contains("is in the future"),
        "{}",
        future.all()
    );
    let typo = rs.run(&["backup", WS, "--time", "yesterday"]);
    assert_ne!(typo.code, 0);
    assert!(
        typo.all().contains("--time: \"yesterday\" is not a time"),
        "{}",
        typo.all()
    );
    assert_eq!(
        snapshot_ids(&rs, &repo).len(),
        days.len(),
        "nothing written"
    );

    // 2 daily + 3 monthly: Mar 5 and Feb 10 (days), and Jan 3 (January's newest).
    rs.run(&["forget", &repo, "--keep-daily", "2", "--keep-monthly", "3"])
        .ok();
    let kept: Vec<String> = snapshot_ids(&rs, &repo);
    let want: Vec<String> = [days[2], days[3], days[4]]
        .iter()
        .map(|d| id_of_day[d].clone())
        .collect();
    assert_eq!(kept, want);
}

/// Through a running daemon, `prune` and `forget --prune` are followed as they go: the
/// API streams the prune's steps as Server-Sent Events (`Accept: text/event-stream`)
/// and ends with the report, which the CLI prints as it would without a daemon; a
/// client that does not ask gets one JSON answer, as before.
#[test]
fn a_prune_through_the_daemon_streams_its_progress_and_ends_with_its_report() {
    let rs = Reposafe::new();
    let scratch = TempDir::new("reposafe-prune-daemon");
    let (_server, source) = setup(&rs, scratch.path());
    let repo = source.full_name.clone();
    backup(&rs, &source);
    source.push_file("a.txt", b"a\n");
    backup(&rs, &source);
    source.push_file("b.txt", b"b\n");
    let (newest, refs) = backup(&rs, &source);
    let local_dry = rs.run(&["prune", "--dry-run", "--json"]).ok();
    let local_dry: serde_json::Value = serde_json::from_str(&local_dry.stdout).expect("json");

    let log = scratch.path().join("daemon.log");
    let (mut daemon, url, token) = start_logged_daemon(&rs, &log);
    let http = api_client();
    let streamed = http
        .post(format!("{url}/api/v1/prune"))
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .json(&serde_json::json!({"dry_run": true}))
        .send()
        .expect("prune");
    assert_eq!(
        streamed.headers()["content-type"],
        "text/event-stream",
        "{streamed:?}"
    );
    let events = streamed.text().expect("events");
    let steps = [
        "event: progress\ndata: {\"histories\":".to_string(),
        format!("event: progress\ndata: {{\"history\":\"{repo}\"}}\n"),
        "event: progress\ndata: \"sweeping\"\n".to_string(),
        "event: end\ndata: {".to_string(),
    ];
    let mut at = 0;
    for step in &steps {
        let found = events[at..].find(step.as_str());
        assert!(found.is_some(), "{step:?} after byte {at} of:\n{events}");
        at += found.unwrap_or(0) + step.len();
    }
    let end = events
        .split("event: end\ndata: ")
        .nth(1)
        .expect("an end event");
    let report: serde_json::Value = serde_json::from_str(end.trim()).expect("report");
    assert_eq!(report["histories"], local_dry["histories"], "{report}");
    assert_eq!(report["dry_run"], true);
    // Without asking for events: one JSON answer.
    let plain: serde_json::Value = http
        .post(format!("{url}/api/v1/prune"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"dry_run": true}))
        .send()
        .expect("prune")
        .json()
        .expect("json");
    assert_eq!(plain["histories"], local_dry["histories"], "{plain}");

    // The CLI through the daemon: forget and prune, reported as without it.
    let forgot = rs
        .run(&["forget", &repo, "--keep-last", "1", "--prune", "--json"])
        .ok();
    let forgot: serde_json::Value = serde_json::from_str(&forgot.stdout).expect("json");
    assert_eq!(forgot["removed"], 2, "{forgot}");
    assert_eq!(
        forgot["prune"]["histories"].as_array().map(Vec::len),
        Some(1)
    );
    let again = rs.run(&["prune"]).ok();
    assert!(again.stdout.contains("freed"), "{}", again.all());
    let _ = daemon.kill();
    let _ = daemon.wait();
    restores_as(&rs, &repo, &newest, &refs, &scratch.path().join("r"));
}
