//! Test helpers: running the `git` CLI in isolation, and inspecting directories.

use std::{
    collections::BTreeMap,
    fs,
    io::Read,
    path::{Path, PathBuf},
    process::Command,
    time::SystemTime,
};

use crate::git::{PackFile, RefEntry, RefTarget};

/// A scratch area plus a private `HOME` for the `git` CLI, so no user or system configuration
/// takes part.
pub struct Git {
    root: tempfile::TempDir,
    home: tempfile::TempDir,
}

impl Git {
    pub fn new() -> Self {
        let home = tempfile::tempdir().expect("temp home");
        fs::write(
            home.path().join(".gitconfig"),
            "[user]\n\tname = Test\n\temail = test@example.com\n[init]\n\tdefaultBranch = main\n\
             [advice]\n\tdetachedHead = false\n[gc]\n\tauto = 0\n",
        )
        .expect("write .gitconfig");
        Git {
            root: tempfile::tempdir().expect("temp root"),
            home,
        }
    }

    /// The scratch directory; it starts out empty.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn command(&self, dir: &Path) -> Command {
        let mut cmd = Command::new("git");
        cmd.current_dir(dir)
            .env("HOME", self.home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", self.home.path().join(".gitconfig"))
            .env("GIT_TERMINAL_PROMPT", "0");
        for var in [
            "GIT_DIR",
            "GIT_WORK_TREE",
            "GIT_INDEX_FILE",
            "GIT_OBJECT_DIRECTORY",
            "GIT_COMMON_DIR",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Run `git args…` in `dir` and return its standard output; panic if it fails.
    pub fn run(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.command(dir).args(args).output().expect("run git");
        assert!(
            out.status.success(),
            "git {args:?} in {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8 output")
    }

    /// `git clone --mirror` of `from` into `to`.
    pub fn clone_mirror(&self, from: &Path, to: &Path) {
        self.run(
            self.root(),
            &[
                "clone",
                "--mirror",
                "-q",
                from.to_str().expect("utf8"),
                to.to_str().expect("utf8"),
            ],
        );
    }

    /// `git fsck --full` must succeed without reporting problems.
    pub fn fsck(&self, repo: &Path) {
        let out = self
            .command(repo)
            .args(["fsck", "--full", "--strict", "--no-dangling"])
            .output()
            .expect("run git fsck");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "fsck of {} failed:\n{text}",
            repo.display()
        );
        let problems: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("notice: ") && !l.starts_with("Checking"))
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert!(
            problems.is_empty(),
            "fsck of {} reported:\n{text}",
            repo.display()
        );
    }

    /// All refs of `repo` as `git` sees them, plus `HEAD`, sorted by name.
    pub fn refs_with_head(&self, repo: &Path) -> Vec<RefEntry> {
        let listing = self.run(
            repo,
            &[
                "for-each-ref",
                "--format=%(refname)%00%(objectname)%00%(symref)",
            ],
        );
        let mut refs: Vec<RefEntry> = listing
            .lines()
            .map(|line| {
                let mut parts = line.split('\0');
                let name = parts.next().expect("name").to_owned();
                let oid = parts.next().expect("oid").to_owned();
                let symref = parts.next().unwrap_or_default();
                let target = if symref.is_empty() {
                    RefTarget::Object(oid)
                } else {
                    RefTarget::Symbolic(symref.to_owned())
                };
                RefEntry { name, target }
            })
            .collect();
        let head = self
            .command(repo)
            .args(["symbolic-ref", "-q", "HEAD"])
            .output()
            .expect("git");
        let head_target = if head.status.success() {
            Some(RefTarget::Symbolic(
                String::from_utf8(head.stdout)
                    .expect("utf8")
                    .trim()
                    .to_owned(),
            ))
        } else {
            let detached = self
                .command(repo)
                .args(["rev-parse", "-q", "--verify", "HEAD"])
                .output()
                .expect("git");
            detached.status.success().then(|| {
                RefTarget::Object(
                    String::from_utf8(detached.stdout)
                        .expect("utf8")
                        .trim()
                        .to_owned(),
                )
            })
        };
        if let Some(target) = head_target {
            refs.push(RefEntry {
                name: "HEAD".into(),
                target,
            });
        }
        refs.sort();
        refs
    }
}

/// Every file below `dir` with its size and modification time.
pub fn dir_snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let mut out = BTreeMap::new();
    walk(dir, &mut |path| {
        let meta = fs::metadata(path).expect("metadata");
        out.insert(
            path.to_owned(),
            (meta.len(), meta.modified().expect("mtime")),
        );
    });
    out
}

/// `true` if any file below `dir` contains `needle`.
pub fn file_contains(dir: &Path, needle: &[u8]) -> bool {
    let mut found = false;
    walk(dir, &mut |path| {
        let data = fs::read(path).expect("read");
        if data.windows(needle.len()).any(|w| w == needle) {
            found = true;
        }
    });
    found
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    for entry in fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            walk(&path, f);
        } else {
            f(&path);
        }
    }
}

/// Readers over the given pack files, as an archive would provide them.
pub fn pack_readers(
    packs: &[PackFile],
) -> impl Iterator<Item = std::io::Result<Box<dyn Read + Send>>> + use<> {
    let paths: Vec<PathBuf> = packs.iter().map(|p| p.path.clone()).collect();
    paths
        .into_iter()
        .map(|path| fs::File::open(path).map(|f| Box::new(f) as Box<dyn Read + Send>))
}

/// Deterministic incompressible bytes.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}
