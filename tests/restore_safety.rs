//! A restore never destroys anything (issue 10, item 1), through the real binary: a
//! target that is the data dir, inside it or contains it is refused with or without
//! `--force` (CLI and daemon API alike), `--force` never replaces a directory that is not
//! a git repository, and a git repository it replaces is moved aside, not deleted.

mod common;

use common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WS: &str = "acme";

/// A data dir nested one level down (`<outer>/data`), so that a target containing it
/// (`<outer>`) is a directory of this test alone.
struct Nested {
    outer: TempDir,
    files: TempDir,
}

impl Nested {
    fn new() -> Nested {
        Nested {
            outer: TempDir::new("reposafe-outer"),
            files: TempDir::new("reposafe-files"),
        }
    }

    fn data(&self) -> PathBuf {
        self.outer.path().join("data")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_reposafe"));
        c.arg("--data-dir")
            .arg(self.data())
            .args(args)
            .env("REPOSAFE_RETRY_BASE_MS", "20")
            .env_remove("REPOSAFE_PASSPHRASE")
            .env_remove("REPOSAFE_DATA_DIR")
            .env("REPOSAFE_LOG", "info");
        c
    }

    fn run(&self, args: &[&str]) -> Run {
        let out = self.cmd(args).output().expect("run reposafe");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// A connection to the test server, and one backup of its repositories.
    fn backed_up(&self, server: &CloudServer) {
        let tok = self.files.path().join("token.txt");
        std::fs::write(&tok, format!("{API_TOKEN}\n")).expect("token file");
        let tok = tok.display().to_string();
        let args = cloud_add_args(
            server,
            &["--workspace", WS],
            &["--api-token-email", EMAIL, "--api-token-file", &tok],
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args).ok();
        self.run(&["backup", WS]).ok();
    }

    /// `reposafe check` passes, and the archive is where it was.
    fn assert_archive_intact(&self) {
        assert!(self.data().join("archive").is_dir(), "archive is gone");
        let check = self.run(&["check", "--read-data"]).ok();
        assert!(check.stdout.contains("all intact"), "{}", check.all());
    }
}

fn setup(n: usize) -> (CloudServer, TempDir, Vec<(String, PathBuf)>) {
    let server = CloudServer::start();
    let dir = TempDir::new("reposafe-src");
    let repos = gitutil::make_workspace_fixture(&server, WS, n, dir.path());
    server.add_api_token("acct-1", EMAIL, API_TOKEN);
    server.grant("acct-1", WS);
    (server, dir, repos)
}

#[test]
fn cli_restore_into_or_over_the_data_dir_is_refused() {
    let (server, _src, repos) = setup(2);
    let rs = Nested::new();
    rs.backed_up(&server);
    let repo = format!("{WS}/{}", repos[0].0);
    let data = rs.data();
    let targets = [
        data.join("archive"),
        data.clone(),
        data.join("mirrors").join("new.git"),
        rs.outer.path().to_path_buf(),
        // Not existing yet, reaching the archive through `..`.
        rs.outer
            .path()
            .join("absent")
            .join("..")
            .join("data")
            .join("archive"),
    ];
    for target in &targets {
        let t = target.display().to_string();
        for force in [true, false] {
            let mut args = vec!["restore", repo.as_str(), "--to", t.as_str()];
            if force {
                args.push("--force");
            }
            let run = rs.run(&args);
            assert_ne!(run.code, 0, "restore to {t} succeeded: {}", run.all());
            assert!(
                run.stderr.contains(&t) && run.stderr.contains("data dir"),
                "the error names the target: {}",
                run.stderr
            );
        }
    }
    rs.assert_archive_intact();
}

#[test]
fn cli_force_replaces_only_a_git_repository_and_keeps_it_aside() {
    let (server, _src, repos) = setup(2);
    let rs = Nested::new();
    rs.backed_up(&server);
    let (slug, source) = &repos[0];
    let repo = format!("{WS}/{slug}");
    let out = TempDir::new("reposafe-restore");

    // A directory of someone's files: refused, with or without --force, untouched.
    let plain = out.path().join("plain");
    std::fs::create_dir(&plain).expect("mkdir");
    std::fs::write(plain.join("thesis.txt"), "years of work").expect("write");
    let p = plain.display().to_string();
    let run = rs.run(&["restore", &repo, "--to", &p, "--force"]);
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr.contains(&p) && run.stderr.contains("not a git repository"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read_to_string(plain.join("thesis.txt")).expect("still there"),
        "years of work"
    );
    assert_eq!(std::fs::read_dir(&plain).expect("dir").count(), 1);

    // A git repository (another repository's clone): replaced with --force, moved aside.
    let target = out.path().join("repo.git");
    gitutil::git(
        out.path(),
        &[
            "clone",
            "--quiet",
            "--bare",
            &repos[1].1.display().to_string(),
            "repo.git",
        ],
    );
    let old_refs = gitutil::refs_of(&target);
    // Leftovers of a crash in an earlier restore: the original moved aside, and a
    // half-written staging directory.
    let crashed_aside = out.path().join("repo.git.replaced-20260101T000000Z");
    std::fs::create_dir(&crashed_aside).expect("mkdir");
    std::fs::write(crashed_aside.join("HEAD"), "ref: refs/heads/main\n").expect("write");
    let old_style_aside = out
        .path()
        .join(".repo.git.reposafe-restore-Ab12Cd.replaced");
    std::fs::create_dir(&old_style_aside).expect("mkdir");
    std::fs::write(old_style_aside.join("HEAD"), "ref: refs/heads/main\n").expect("write");

    let t = target.display().to_string();
    let run = rs.run(&["restore", &repo, "--to", &t]);
    assert_ne!(run.code, 0, "no --force: {}", run.all());
    let run = rs.run(&["restore", &repo, "--to", &t, "--force"]).ok();
    assert!(run.stdout.contains("moved aside to"), "{}", run.stdout);
    gitutil::fsck(&target);
    assert_eq!(gitutil::refs_of(&target), gitutil::refs_of(source));

    let asides: Vec<PathBuf> = std::fs::read_dir(out.path())
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p != &crashed_aside)
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("repo.git.replaced-"))
        })
        .collect();
    assert_eq!(asides.len(), 1, "{asides:?}");
    assert!(run.stdout.contains(&asides[0].display().to_string()));
    gitutil::fsck(&asides[0]);
    assert_eq!(gitutil::refs_of(&asides[0]), old_refs, "the old repository");
    for kept in [&crashed_aside, &old_style_aside] {
        assert!(
            kept.join("HEAD").is_file(),
            "{} was deleted",
            kept.display()
        );
    }
    rs.assert_archive_intact();
}

/// `reposafe serve` on the nested data dir; its URL and token.
struct Daemon {
    child: std::process::Child,
    url: String,
    token: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_daemon(rs: &Nested) -> Daemon {
    let log = std::fs::File::create(rs.files.path().join("serve.log")).expect("log");
    let child = rs
        .cmd(&["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start serve");
    let (url, token) = common::wait_for_daemon(&rs.data());
    Daemon { child, url, token }
}

fn wait_job(http: &reqwest::blocking::Client, d: &Daemon, id: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let j: Value = http
            .get(format!("{}/api/v1/jobs/{id}", d.url))
            .bearer_auth(&d.token)
            .send()
            .and_then(|r| r.json())
            .expect("job");
        if !["queued", "running"].contains(&j["state"].as_str().unwrap_or("")) {
            return j;
        }
        assert!(Instant::now() < deadline, "job {id} did not finish: {j}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn api_restore_over_the_archive_fails_and_the_archive_stays() {
    let (server, _src, repos) = setup(1);
    let rs = Nested::new();
    rs.backed_up(&server);
    let repo = format!("{WS}/{}", repos[0].0);
    let d = start_daemon(&rs);
    let http = reqwest::blocking::Client::new();
    for target in [rs.data().join("archive"), rs.outer.path().to_path_buf()] {
        let t = target.display().to_string();
        let resp = http
            .post(format!("{}/api/v1/restore", d.url))
            .bearer_auth(&d.token)
            .json(&serde_json::json!({ "repository": repo, "to": t, "force": true }))
            .send()
            .expect("request");
        let status = resp.status().as_u16();
        let body: Value = resp.json().expect("json");
        // Refused at once, or queued as a job that fails: either way naming the path.
        let error = if (200..300).contains(&status) {
            let job = wait_job(&http, &d, body["id"].as_u64().expect("id"));
            assert_eq!(job["state"], "failed", "{job}");
            job["error"].as_str().unwrap_or_default().to_string()
        } else {
            body.to_string()
        };
        assert!(
            error.contains(&t) && error.contains("data dir"),
            "{status}: {error}"
        );
        assert!(rs.data().join("archive").is_dir(), "archive is gone");
    }
    drop(d);
    rs.assert_archive_intact();
}
