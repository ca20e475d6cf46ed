//! Shared helpers of the integration tests: run the real `reposafe` binary on a
//! temporary data dir against the test Bitbucket server from `reposafe-testkit`,
//! with one compiled-component cache for every data dir ([`component_cache`]).
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod flaky;
pub mod s3;
pub mod s3_lax;
pub mod served;
pub mod sessions;

pub use reposafe_testkit::gitutil;
pub use reposafe_testkit::{CloudServer, TempDir};

/// Tokens used by the tests; none of them may ever appear in output or on disk in clear.
pub const API_TOKEN: &str = "ATATT3xFfGF0-test-api-token-5f1e2d";
pub const EMAIL: &str = "me@acme.test";

/// The compiled-component cache every `reposafe` the tests run shares
/// (`REPOSAFE_COMPONENT_CACHE`), so the providers are compiled once, not once per
/// data dir. It lives in cargo's tmpdir of the target dir and outlasts the run:
/// entries are named after the component's hash and wasmtime's compatibility hash,
/// so a later run reuses only those that still fit, and an unusable one is replaced.
pub fn component_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("reposafe-component-cache")
}

/// A data dir and the binary.
pub struct Reposafe {
    pub data: TempDir,
    pub files: TempDir,
}

/// The result of one command.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "command failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl Default for Reposafe {
    fn default() -> Self {
        Self::new()
    }
}

impl Reposafe {
    pub fn new() -> Reposafe {
        Reposafe {
            data: TempDir::new("reposafe-data"),
            files: TempDir::new("reposafe-files"),
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// Writes a secret to a file and returns its path.
    pub fn secret_file(&self, name: &str, secret: &str) -> PathBuf {
        let p = self.files.path().join(name);
        std::fs::write(&p, format!("{secret}\n")).expect("write secret file");
        p
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_reposafe"));
        c.arg("--data-dir")
            .arg(self.data.path())
            .args(args)
            .env("REPOSAFE_RETRY_BASE_MS", "20")
            .env("REPOSAFE_COMPONENT_CACHE", component_cache())
            .env_remove("REPOSAFE_PASSPHRASE")
            .env_remove("REPOSAFE_DATA_DIR")
            // A store named by the runner's environment would change where every
            // location without --endpoint is (a test names its own).
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_ENDPOINT")
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            // The runner's own disk may be nearly full: no test counts on its warning
            // (one that does sets the threshold itself).
            .env("REPOSAFE_WARN_FREE_BELOW_PERCENT", "0")
            .env("REPOSAFE_LOG", "debug");
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_env(args, &[])
    }

    /// [`run`](Self::run) with the environment variables `env` set.
    pub fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = self.cmd(args);
        cmd.envs(env.iter().copied());
        let out: Output = cmd.output().expect("run reposafe");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Grants the test account `workspace` on the server and adds a Cloud connection
    /// for it with the account's API token.
    pub fn connect_cloud_with_token(&self, server: &CloudServer, workspace: &str) {
        server.add_api_token("acct-1", EMAIL, API_TOKEN);
        server.grant("acct-1", workspace);
        let tok = self
            .secret_file("token.txt", API_TOKEN)
            .display()
            .to_string();
        self.add_cloud(
            server,
            workspace,
            &["--api-token-email", EMAIL, "--api-token-file", &tok],
        )
        .ok();
    }

    /// Runs `reposafe ARGS` and kills it with SIGKILL after `delay` unless it finished
    /// first: `None`, or how long it took.
    pub fn killed_after(
        &self,
        args: &[&str],
        delay: std::time::Duration,
    ) -> Option<std::time::Duration> {
        let mut child = self
            .cmd(args)
            .env("REPOSAFE_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start reposafe");
        let start = std::time::Instant::now();
        while start.elapsed() < delay {
            if child.try_wait().expect("wait").is_some() {
                return Some(start.elapsed());
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        child.kill().expect("kill -9");
        child.wait().expect("wait");
        None
    }

    /// Adds a Cloud connection named after the workspace, pointing at the test server.
    pub fn add_cloud(&self, server: &CloudServer, workspace: &str, cred_args: &[&str]) -> Run {
        let args = cloud_add_args(server, &["--workspace", workspace], cred_args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args)
    }
}

/// The arguments of `connection add cloud` against the test server.
pub fn cloud_add_args(server: &CloudServer, naming: &[&str], cred_args: &[&str]) -> Vec<String> {
    let base = server.base_url();
    let mut args: Vec<String> = ["connection", "add", "cloud"]
        .iter()
        .chain(naming)
        .map(|s| s.to_string())
        .collect();
    args.extend([
        "--set".to_string(),
        format!("api-base-url={base}"),
        "--set".to_string(),
        format!("git-base-url={base}"),
    ]);
    args.extend(cred_args.iter().map(|s| s.to_string()));
    args
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Asserts no file under `dir` contains `needle` in clear.
pub fn assert_not_on_disk(dir: &Path, needle: &str) {
    for f in files_under(dir) {
        if let Ok(bytes) = std::fs::read(&f) {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "secret found in clear in {}",
                f.display()
            );
        }
    }
}

/// The arguments of `connection add dc` naming the connection `name`, against the
/// Data Center test double at `base_url`, as `user` with the password in `password_file`
/// (personal repositories left out).
pub fn dc_add_args(base_url: &str, name: &str, user: &str, password_file: &Path) -> Vec<String> {
    [
        "connection",
        "add",
        "dc",
        "--name",
        name,
        "--set",
        &format!("base-url={base_url}"),
        "--set",
        "personal-repositories=false",
        "--username",
        user,
        "--password-file",
        &password_file.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A small bare repository `small.git` in `dir`: `commits` commits on `main` and a
/// tag `v1`, made with real git.
pub fn small_bare_repo(dir: &Path, commits: usize) -> PathBuf {
    let bare = dir.join("small.git");
    gitutil::init_bare(&bare);
    let mut w = gitutil::WorkRepo::new();
    for i in 0..commits {
        w.write(&format!("f{i}.txt"), format!("small {i}\n"));
        w.commit(&format!("commit {i}"));
    }
    w.tag_lightweight("v1");
    w.push_mirror(&bare);
    bare
}

/// Waits (up to 60 s) for the daemon serving `data_dir` to announce itself in
/// `daemon.json`; returns its URL and the admin API token.
pub fn wait_for_daemon(data_dir: &Path) -> (String, String) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let info: serde_json::Value = loop {
        if let Ok(t) = std::fs::read_to_string(data_dir.join("daemon.json")) {
            if let Ok(v) = serde_json::from_str(&t) {
                break v;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let token = std::fs::read_to_string(data_dir.join("api-token")).expect("api-token");
    let url = info["url"]
        .as_str()
        .expect("url in daemon.json")
        .to_string();
    (url, token.trim().to_string())
}

/// Starts `reposafe -vv serve` on a free port for `rs`'s data dir with its debug log
/// appended to `log`, and waits until it announces itself; the child, its URL and the
/// admin API token (the caller kills it).
pub fn start_logged_daemon(rs: &Reposafe, log: &Path) -> (std::process::Child, String, String) {
    start_logged_daemon_with(rs, log, &[])
}

/// [`start_logged_daemon`] with `env` added to the daemon's environment (as a service's
/// `EnvironmentFile` adds it).
pub fn start_logged_daemon_with(
    rs: &Reposafe,
    log: &Path,
    env: &[(&str, &str)],
) -> (std::process::Child, String, String) {
    let _ = std::fs::remove_file(rs.data_dir().join("daemon.json"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("daemon log file");
    let child = rs
        .cmd(&["-vv", "serve", "--listen", "127.0.0.1:0"])
        .env("REPOSAFE_LOG", "debug")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start serve");
    let (url, token) = wait_for_daemon(rs.data_dir());
    (child, url, token)
}

/// The daemon's overview (`GET /api/v1/status`), which must answer `200`.
#[allow(dead_code)]
pub fn daemon_status(url: &str, token: &str) -> serde_json::Value {
    api_client()
        .get(format!("{url}/api/v1/status"))
        .bearer_auth(token)
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.json())
        .expect("the daemon's status")
}

/// An HTTP client for a daemon's API that shows redirects instead of following them.
pub fn api_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Starts `reposafe serve` on a free port for `rs`'s data dir and waits (up to 60 s) until
/// it announces itself in `daemon.json`; the caller kills it.
pub fn start_daemon(rs: &Reposafe) -> std::process::Child {
    let child = rs
        .cmd(&["serve", "--listen", "127.0.0.1:0"])
        .env("REPOSAFE_LOG", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start serve");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !rs.data_dir().join("daemon.json").exists() {
        assert!(std::time::Instant::now() < deadline, "daemon did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child
}

/// The pointer file of `content`, as `git lfs pointer` writes it.
pub fn lfs_pointer(content: &[u8]) -> String {
    format!(
        "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {}\n",
        reposafe_testkit::lfs::sha256_hex(content),
        content.len()
    )
}

/// A Cloud repository with Git LFS files and a wiki, as [`lfs_and_wiki_repo`] makes it.
pub struct LfsWikiRepo {
    pub bare: PathBuf,
    pub wiki_bare: PathBuf,
    /// File name → content of each LFS file (the double's LFS store serves them).
    pub lfs_files: std::collections::BTreeMap<String, Vec<u8>>,
}

/// Adds `workspace/slug` to `server`: two LFS-tracked files (`asset0.bin`, `asset1.bin`,
/// their objects in the double's LFS store) and a wiki, the bare repositories under `dir`.
pub fn lfs_and_wiki_repo(
    server: &CloudServer,
    workspace: &str,
    slug: &str,
    dir: &Path,
) -> LfsWikiRepo {
    let mut work = reposafe_testkit::WorkRepo::new();
    work.write(
        ".gitattributes",
        "*.bin filter=lfs diff=lfs merge=lfs -text\n",
    );
    let mut lfs_files = std::collections::BTreeMap::new();
    for i in 0..2u64 {
        let content = gitutil::pseudo_random_bytes(i + 3, 150_000 + i as usize);
        let name = format!("asset{i}.bin");
        work.write(&name, lfs_pointer(&content));
        server.lfs().add(workspace, slug, &content);
        lfs_files.insert(name, content);
    }
    work.commit("assets");
    let bare = dir.join("origin.git");
    gitutil::init_bare(&bare);
    work.push_mirror(&bare);
    server.add_repo(
        workspace,
        slug,
        &bare,
        reposafe_testkit::RepoMeta::default(),
    );
    let mut wiki = reposafe_testkit::WorkRepo::new();
    wiki.write("Home.md", "# Welcome\n");
    wiki.commit("wiki home");
    let wiki_bare = dir.join("wiki.git");
    gitutil::init_bare(&wiki_bare);
    wiki.push_mirror(&wiki_bare);
    server.add_wiki(workspace, slug, &wiki_bare);
    LfsWikiRepo {
        bare,
        wiki_bare,
        lfs_files,
    }
}

/// Requests other than GET and HEAD in the Cloud double's log ("METHOD path").
pub fn write_requests(server: &CloudServer) -> Vec<String> {
    server
        .request_log()
        .iter()
        .filter(|r| r.method != "GET" && r.method != "HEAD")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// Restores `repo` into `to` and checks it `fsck`-clean and ref for ref equal to
/// `bare`; then removes `to` (and the wiki restored beside it).
#[allow(dead_code)]
pub fn restores_as_source(rs: &Reposafe, repo: &str, bare: &Path, to: &Path) {
    rs.run(&["restore", repo, "--to", &to.display().to_string()])
        .ok();
    gitutil::fsck(to);
    assert_eq!(
        gitutil::refs_of(to),
        gitutil::refs_of(bare),
        "{repo} restored ref for ref"
    );
    std::fs::remove_dir_all(to).expect("remove restore");
    let _ = std::fs::remove_dir_all(to.with_extension("wiki"));
}

/// A new commit (same tree) on the checked-out branch of the bare repository `bare`.
#[allow(dead_code)]
pub fn commit_on_head(bare: &Path, message: &str) {
    let head = gitutil::git(bare, &["symbolic-ref", "HEAD"])
        .trim()
        .to_string();
    let commit = gitutil::git(
        bare,
        &["commit-tree", "HEAD^{tree}", "-p", "HEAD", "-m", message],
    );
    gitutil::git(bare, &["update-ref", &head, commit.trim()]);
}
