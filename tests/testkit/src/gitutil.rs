//! Helpers that shell out to `git` for tests, isolated from the machine's and the user's
//! configuration: every command runs with `GIT_CONFIG_NOSYSTEM=1`, `HOME` (and
//! `XDG_CONFIG_HOME`) pointing into a private empty directory, inherited `GIT_*` variables
//! removed, a fixed identity, `LC_ALL=C`, `core.fsync=none` (test data needs no
//! durability) and `GIT_TERMINAL_PROMPT=0` (a failed authentication fails instead of
//! prompting).
//!
//! Also builds workspace fixtures: [`make_workspace_fixture`] creates many varied bare
//! repositories quickly (one `git init` + one `git fast-import` per repository, run on
//! several threads) and registers them with a [`CloudServer`].

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::cloud::{CloudServer, RepoMeta};
use crate::tempdir::TempDir;

/// Author and committer name of every commit made through this module.
pub const GIT_NAME: &str = "Reposafe Test";
/// Author and committer email of every commit made through this module.
pub const GIT_EMAIL: &str = "test@reposafe.invalid";
/// Slug of the empty (no commits) repository in a workspace fixture.
pub const EMPTY_REPO_SLUG: &str = "empty-repo";

fn isolated_home() -> &'static Path {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| TempDir::new("reposafe-testkit-home").keep())
}

/// A `git` command with the isolated environment, running in `dir`.
pub fn git_command(dir: &Path) -> Command {
    let home = isolated_home();
    let mut cmd = Command::new("git");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("GIT_") {
            cmd.env_remove(&k);
        }
    }
    cmd.current_dir(dir)
        .env_remove("SSH_ASKPASS")
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", GIT_NAME)
        .env("GIT_AUTHOR_EMAIL", GIT_EMAIL)
        .env("GIT_COMMITTER_NAME", GIT_NAME)
        .env("GIT_COMMITTER_EMAIL", GIT_EMAIL)
        .env("LC_ALL", "C")
        // Test data needs no durability; fsync is slow on some CI disks.
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "core.fsync")
        .env("GIT_CONFIG_VALUE_0", "none")
        .stdin(Stdio::null());
    cmd
}

/// Runs git and returns stdout, or `Err(message with stderr)` on a non-zero exit.
pub fn try_git_with_env(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<Vec<u8>, String> {
    let mut cmd = git_command(dir);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run git {args:?}: {e}"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "git {args:?} in {} failed ({}):\n{}{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

/// Runs git; `Err` carries the full stderr. Stdout is returned with trailing whitespace
/// trimmed.
pub fn try_git(dir: &Path, args: &[&str]) -> Result<String, String> {
    try_git_with_env(dir, args, &[]).map(|o| String::from_utf8_lossy(&o).trim_end().to_string())
}

/// Runs git and returns its stdout (trailing whitespace trimmed); panics with the full
/// stderr on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    try_git(dir, args).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`git`] with extra environment variables (e.g. `GIT_AUTHOR_DATE`).
pub fn git_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = try_git_with_env(dir, args, env).unwrap_or_else(|e| panic!("{e}"));
    String::from_utf8_lossy(&out).trim_end().to_string()
}

/// Like [`git`] but returns raw stdout bytes.
pub fn git_bytes(dir: &Path, args: &[&str]) -> Vec<u8> {
    try_git_with_env(dir, args, &[]).unwrap_or_else(|e| panic!("{e}"))
}

/// `git init --bare -b main <path>` (parent directories are created; no template, so no
/// sample hooks).
pub fn init_bare(path: &Path) {
    init_bare_with_branch(path, "main");
}

/// `git init --bare -b <branch> <path>`.
pub fn init_bare_with_branch(path: &Path, branch: &str) {
    std::fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    let p = path.to_string_lossy();
    // An empty template: no sample hooks etc. (fewer files to create and delete).
    git(
        path,
        &["init", "--quiet", "--bare", "--template=", "-b", branch, &p],
    );
}

/// An empty bare repository at `path` with HEAD on `branch`, written directly (no `git`
/// process): the files `git init --bare --template= -b <branch>` writes. For fixtures that
/// make hundreds of repositories, where a process per `git init` is most of the cost.
pub fn init_bare_direct(path: &Path, branch: &str) {
    for sub in ["objects/info", "objects/pack", "refs/heads", "refs/tags"] {
        let d = path.join(sub);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
    }
    let files = [
        ("HEAD", format!("ref: refs/heads/{branch}\n")),
        (
            "config",
            "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = true\n".to_string(),
        ),
    ];
    for (name, content) in files {
        let f = path.join(name);
        std::fs::write(&f, content).unwrap_or_else(|e| panic!("write {}: {e}", f.display()));
    }
}

/// Every ref of a repository (`refname → object id`) plus `"HEAD"` → its symbolic target
/// (e.g. `refs/heads/main`), or HEAD's object id if HEAD is detached.
pub fn refs_of(repo: &Path) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let out = git(repo, &["for-each-ref", "--format=%(refname) %(objectname)"]);
    for line in out.lines() {
        if let Some((name, oid)) = line.split_once(' ') {
            map.insert(name.to_string(), oid.to_string());
        }
    }
    let head = match try_git(repo, &["symbolic-ref", "HEAD"]) {
        Ok(target) => target,
        Err(_) => git(repo, &["rev-parse", "HEAD"]),
    };
    map.insert("HEAD".to_string(), head);
    map
}

/// Asserts that `git fsck --full` succeeds on `repo`.
pub fn fsck(repo: &Path) {
    if let Err(e) = try_git(repo, &["fsck", "--full", "--no-progress"]) {
        panic!("fsck failed for {}:\n{e}", repo.display());
    }
}

/// A non-bare working repository in a temporary directory (deleted on drop), initialised
/// with branch `main`. Builder-style helpers return `&mut Self` for chaining.
pub struct WorkRepo {
    dir: TempDir,
    fixed_date: Option<i64>,
    ticks: i64,
}

impl Default for WorkRepo {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkRepo {
    /// `git init -b main` in a fresh temp dir; real dates.
    pub fn new() -> WorkRepo {
        let dir = TempDir::new("reposafe-testkit-work");
        git(
            dir.path(),
            &["init", "--quiet", "--template=", "-b", "main"],
        );
        WorkRepo {
            dir,
            fixed_date: None,
            ticks: 0,
        }
    }

    /// Like [`new`](Self::new) but commits and tags get deterministic dates starting at
    /// `epoch` (Unix seconds) and advancing by one second per commit/tag, so object ids are
    /// reproducible.
    pub fn with_fixed_dates(epoch: i64) -> WorkRepo {
        let mut r = WorkRepo::new();
        r.fixed_date = Some(epoch);
        r
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs git in the work tree (with the fixed date, if any).
    pub fn git(&mut self, args: &[&str]) -> String {
        match self.fixed_date {
            Some(epoch) => {
                let date = format!("{} +0000", epoch + self.ticks);
                self.ticks += 1;
                git_with_env(
                    self.dir.path(),
                    args,
                    &[("GIT_AUTHOR_DATE", &date), ("GIT_COMMITTER_DATE", &date)],
                )
            }
            None => git(self.dir.path(), args),
        }
    }

    /// Writes a file (creating parent directories).
    pub fn write(&mut self, path: &str, bytes: impl AsRef<[u8]>) -> &mut Self {
        let p = self.dir.path().join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
        }
        std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        self
    }

    /// Deletes a file from the work tree.
    pub fn remove(&mut self, path: &str) -> &mut Self {
        let p = self.dir.path().join(path);
        std::fs::remove_file(&p).unwrap_or_else(|e| panic!("remove {}: {e}", p.display()));
        self
    }

    /// `git add -A && git commit --allow-empty -m msg`; returns the new commit id.
    pub fn commit(&mut self, msg: &str) -> String {
        git(self.dir.path(), &["add", "-A"]);
        self.git(&["commit", "--quiet", "--allow-empty", "-m", msg]);
        self.head()
    }

    /// The commit id of HEAD.
    pub fn head(&self) -> String {
        git(self.dir.path(), &["rev-parse", "HEAD"])
    }

    /// `git branch name` (at HEAD, without switching).
    pub fn branch(&mut self, name: &str) -> &mut Self {
        git(self.dir.path(), &["branch", name]);
        self
    }

    /// `git checkout name`.
    pub fn checkout(&mut self, name: &str) -> &mut Self {
        git(self.dir.path(), &["checkout", "--quiet", name]);
        self
    }

    /// `git tag name` at HEAD.
    pub fn tag_lightweight(&mut self, name: &str) -> &mut Self {
        git(self.dir.path(), &["tag", name]);
        self
    }

    /// `git tag -a name -m msg` at HEAD.
    pub fn tag_annotated(&mut self, name: &str, msg: &str) -> &mut Self {
        self.git(&["tag", "-a", name, "-m", msg]);
        self
    }

    /// `git push --mirror <bare>`: the bare repository's refs become exactly ours.
    pub fn push_mirror(&mut self, bare: &Path) -> &mut Self {
        let b = bare.to_string_lossy();
        git(self.dir.path(), &["push", "--quiet", "--mirror", &b]);
        self
    }

    /// Pushes all branches and tags (non-forced).
    pub fn push_all(&mut self, bare: &Path) -> &mut Self {
        let b = bare.to_string_lossy();
        git(
            self.dir.path(),
            &[
                "push",
                "--quiet",
                &b,
                "refs/heads/*:refs/heads/*",
                "refs/tags/*:refs/tags/*",
            ],
        );
        self
    }

    /// `git push --force <bare> branch:branch` (for history rewrites).
    pub fn force_push(&mut self, bare: &Path, branch: &str) -> &mut Self {
        let b = bare.to_string_lossy();
        let spec = format!("+refs/heads/{branch}:refs/heads/{branch}");
        git(self.dir.path(), &["push", "--quiet", &b, &spec]);
        self
    }
}

// ---------------------------------------------------------------- fixtures

/// Knobs of [`make_workspace_fixture_with`].
#[derive(Debug, Clone)]
pub struct FixtureOptions {
    /// Number of repositories, including the empty one.
    pub repos: usize,
    /// Commits on the default branch of each repository (plus 0–2 by index).
    pub commits: usize,
    /// Size of the pseudo-random binary file in each repository (rewritten in the last
    /// commit, so two versions exist).
    pub binary_bytes: usize,
    /// Include one repository with no commits at all (slug [`EMPTY_REPO_SLUG`]).
    pub include_empty: bool,
    /// Slug prefix: repositories are `{prefix}-000`, `{prefix}-001`, ...
    pub slug_prefix: String,
    /// Worker threads (default: available parallelism, at most 4).
    pub threads: usize,
}

impl Default for FixtureOptions {
    fn default() -> Self {
        FixtureOptions {
            repos: 25,
            commits: 3,
            binary_bytes: 16 * 1024,
            include_empty: true,
            slug_prefix: "repo".to_string(),
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .min(4),
        }
    }
}

/// One repository built by a fixture.
#[derive(Debug, Clone)]
pub struct FixtureRepo {
    pub slug: String,
    pub path: PathBuf,
    pub meta: RepoMeta,
    /// `true` for the repository without commits.
    pub empty: bool,
}

/// Builds `n` varied bare repositories under `dir`, registers them in `workspace` on
/// `server` (the workspace is created; grants are up to the caller) and returns
/// `(slug, bare path)` pairs in slug order.
///
/// Variety: every non-empty repository has several commits with text files and a
/// pseudo-random binary file (`assets/data.bin`, two versions), branches `main` (or
/// `master` for every 5th, as `mainbranch`), `develop`, `feature/topic-N`, sometimes
/// `release/1.x`; tags `v1.0` (annotated), `v1.0-lw` (lightweight), sometimes `v2.0`
/// (annotated, on a feature branch). Some repositories are public, some have a wiki, one is
/// a fork of `{prefix}-000`. One repository ([`EMPTY_REPO_SLUG`]) has no commits
/// (`mainbranch: null`). Object ids are deterministic for a given index.
pub fn make_workspace_fixture(
    server: &CloudServer,
    workspace: &str,
    n: usize,
    dir: &Path,
) -> Vec<(String, PathBuf)> {
    let opts = FixtureOptions {
        repos: n,
        ..FixtureOptions::default()
    };
    make_workspace_fixture_with(server, workspace, dir, &opts)
        .into_iter()
        .map(|r| (r.slug, r.path))
        .collect()
}

/// [`make_workspace_fixture`] with options; returns full [`FixtureRepo`] records.
pub fn make_workspace_fixture_with(
    server: &CloudServer,
    workspace: &str,
    dir: &Path,
    opts: &FixtureOptions,
) -> Vec<FixtureRepo> {
    let repos = build_fixture_repos(workspace, dir, opts);
    server.add_workspace(workspace);
    for r in &repos {
        server.add_repo(workspace, &r.slug, &r.path, r.meta.clone());
    }
    repos
}

/// Builds the fixture repositories on disk without registering them anywhere.
/// `workspace` is only used for the fork's `parent` full name.
pub fn build_fixture_repos(workspace: &str, dir: &Path, opts: &FixtureOptions) -> Vec<FixtureRepo> {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let n = opts.repos;
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<FixtureRepo>> = Mutex::new(Vec::with_capacity(n));
    std::thread::scope(|s| {
        for _ in 0..opts.threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let repo = if opts.include_empty && i == n - 1 {
                    build_empty(dir)
                } else {
                    build_one(workspace, dir, opts, i)
                };
                results.lock().unwrap_or_else(|e| e.into_inner()).push(repo);
            });
        }
    });
    let mut repos = results.into_inner().unwrap_or_else(|e| e.into_inner());
    repos.sort_by(|a, b| a.slug.cmp(&b.slug));
    repos
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => total += dir_size(&e.path()),
                Ok(_) => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                Err(_) => {}
            }
        }
    }
    total
}

fn build_empty(dir: &Path) -> FixtureRepo {
    let path = dir.join(format!("{EMPTY_REPO_SLUG}.git"));
    init_bare_direct(&path, "main");
    let meta = RepoMeta {
        mainbranch: None,
        size: dir_size(&path),
        ..RepoMeta::default()
    };
    FixtureRepo {
        slug: EMPTY_REPO_SLUG.to_string(),
        path,
        meta,
        empty: true,
    }
}

/// Deterministic pseudo-random bytes (xorshift64*).
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A git fast-import stream writer.
struct Stream {
    buf: Vec<u8>,
    mark: usize,
    time: i64,
}

impl Stream {
    fn blob(&mut self, data: &[u8]) -> usize {
        self.mark += 1;
        write!(self.buf, "blob\nmark :{}\ndata {}\n", self.mark, data.len()).ok();
        self.buf.extend_from_slice(data);
        self.buf.push(b'\n');
        self.mark
    }

    fn commit(
        &mut self,
        refname: &str,
        from: Option<usize>,
        msg: &str,
        files: &[(&str, usize)],
    ) -> usize {
        self.mark += 1;
        self.time += 60;
        let who = format!("{GIT_NAME} <{GIT_EMAIL}> {} +0000", self.time);
        write!(
            self.buf,
            "commit {refname}\nmark :{}\nauthor {who}\ncommitter {who}\ndata {}\n{msg}\n",
            self.mark,
            msg.len()
        )
        .ok();
        if let Some(f) = from {
            writeln!(self.buf, "from :{f}").ok();
        }
        for (path, blob) in files {
            writeln!(self.buf, "M 100644 :{blob} {path}").ok();
        }
        self.buf.push(b'\n');
        self.mark
    }

    fn lightweight_tag(&mut self, name: &str, at: usize) {
        write!(self.buf, "reset refs/tags/{name}\nfrom :{at}\n\n").ok();
    }

    fn annotated_tag(&mut self, name: &str, at: usize, msg: &str) {
        self.time += 60;
        write!(
            self.buf,
            "tag {name}\nfrom :{at}\ntagger {GIT_NAME} <{GIT_EMAIL}> {} +0000\ndata {}\n{msg}\n",
            self.time,
            msg.len()
        )
        .ok();
    }
}

fn build_one(workspace: &str, dir: &Path, opts: &FixtureOptions, i: usize) -> FixtureRepo {
    let slug = format!("{}-{i:03}", opts.slug_prefix);
    let path = dir.join(format!("{slug}.git"));
    let default_branch = if i % 5 == 2 { "master" } else { "main" };
    init_bare_direct(&path, default_branch);

    let mut s = Stream {
        buf: Vec::new(),
        mark: 0,
        time: 1_700_000_000 + (i as i64) * 86_400,
    };
    let head = format!("refs/heads/{default_branch}");
    let seed = i as u64 + 1;
    let readme = s.blob(format!("# {slug}\n\nFixture repository number {i}.\n").as_bytes());
    let bin1 = s.blob(&pseudo_random_bytes(seed, opts.binary_bytes));
    let commits = opts.commits.max(1) + i % 3;
    let mut tips = Vec::new();
    let mut prev = None;
    for c in 0..commits {
        let src = s.blob(
            format!(
                "// {slug} revision {c}\npub fn value() -> u32 {{ {} }}\n",
                i * 1000 + c
            )
            .as_bytes(),
        );
        let notes = s.blob(format!("notes {c} for {slug}\n").repeat(c + 1).as_bytes());
        let notes_path = format!("docs/notes-{c}.txt");
        let mut files: Vec<(&str, usize)> = vec![("src/lib.rs", src), (notes_path.as_str(), notes)];
        if c == 0 {
            files.push(("README.md", readme));
            files.push(("assets/data.bin", bin1));
        }
        let bin2;
        if c + 1 == commits && c > 0 {
            bin2 = s.blob(&pseudo_random_bytes(
                seed ^ 0xdead_beef,
                opts.binary_bytes / 2 + 1,
            ));
            files.push(("assets/data.bin", bin2));
        }
        let m = s.commit(&head, prev, &format!("Commit {c} of {slug}"), &files);
        prev = Some(m);
        tips.push(m);
    }
    let first = tips[0];
    let last = *tips.last().unwrap_or(&first);

    // develop: one commit ahead of main's tip.
    let dev = s.blob(format!("develop work in {slug}\n").as_bytes());
    s.commit(
        "refs/heads/develop",
        Some(last),
        "Develop work",
        &[("DEVELOP.md", dev)],
    );
    // feature/topic-i off the first commit, two commits.
    let f1 = s.blob(format!("feature {i} part 1\n").as_bytes());
    let fc1 = s.commit(
        &format!("refs/heads/feature/topic-{i}"),
        Some(first),
        "Feature part 1",
        &[("feature.txt", f1)],
    );
    let f2 = s.blob(format!("feature {i} part 2\n").as_bytes());
    let fc2 = s.commit(
        &format!("refs/heads/feature/topic-{i}"),
        Some(fc1),
        "Feature part 2",
        &[("feature.txt", f2)],
    );
    if i.is_multiple_of(2) {
        s.commit("refs/heads/release/1.x", Some(first), "Release branch", &[]);
    }
    s.annotated_tag("v1.0", first, &format!("Release 1.0 of {slug}"));
    s.lightweight_tag("v1.0-lw", last);
    if i.is_multiple_of(4) {
        s.annotated_tag("v2.0", fc2, "Release 2.0 from the feature branch");
    }
    s.buf.extend_from_slice(b"done\n");

    let mut child = git_command(&path)
        // unpackLimit=1: always write one pack (by default small imports become loose
        // objects, which makes fixtures slow to create and delete).
        .args([
            "-c",
            "fastimport.unpackLimit=1",
            "fast-import",
            "--quiet",
            "--done",
        ])
        .env("GIT_DIR", &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn git fast-import: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&s.buf)
            .unwrap_or_else(|e| panic!("write fast-import stream: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("git fast-import: {e}"));
    if !out.status.success() {
        panic!(
            "git fast-import failed for {slug}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let meta = RepoMeta {
        is_private: i % 4 != 3,
        mainbranch: Some(default_branch.to_string()),
        // No wikis: a repository saying it has one gets its wiki fetched (see
        // `CloudServer::add_wiki` for repositories that have one).
        has_wiki: false,
        parent: if i == 4 {
            Some(format!("{workspace}/{}-000", opts.slug_prefix))
        } else {
            None
        },
        size: dir_size(&path),
    };
    FixtureRepo {
        slug,
        path,
        meta,
        empty: false,
    }
}
