//! Helpers shared by the benchmarks: timing with peak RSS, the reposafe binary with the
//! shared compiled-component cache, a Cloud connection to the test server, sizes on disk.

#![allow(dead_code)]

use reposafe_testkit::CloudServer;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

pub const EMAIL: &str = "bench@acme.test";
pub const TOKEN: &str = "ATATT-bench-token";

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub struct Timed {
    pub secs: f64,
    pub max_rss_kib: u64,
    /// User + system CPU time of the command.
    pub cpu_secs: f64,
    pub stdout: String,
}

/// Runs a command under /usr/bin/time to get wall time and peak RSS.
pub fn timed(cmd: &mut Command) -> Timed {
    let rss_file = tempfile_path("rss");
    let prog = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let envs: Vec<_> = cmd
        .get_envs()
        .map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned())))
        .collect();
    let mut c = Command::new("/usr/bin/time");
    c.arg("-f")
        .arg("%M %U %S")
        .arg("-o")
        .arg(&rss_file)
        .arg(prog)
        .args(args);
    if let Some(dir) = cmd.get_current_dir() {
        c.current_dir(dir);
    }
    for (k, v) in envs {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let t = Instant::now();
    let out = c
        .stderr(Stdio::inherit())
        .output()
        .expect("run /usr/bin/time");
    let secs = t.elapsed().as_secs_f64();
    assert!(out.status.success(), "command failed: {:?}", c);
    let rss = std::fs::read_to_string(&rss_file).unwrap_or_default();
    // The last line is "<max RSS KiB> <user s> <system s>" (earlier ones may be notes).
    let fields: Vec<f64> = rss
        .lines()
        .rev()
        .map(|l| {
            l.split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect::<Vec<f64>>()
        })
        .find(|f| f.len() == 3)
        .unwrap_or_default();
    let max_rss_kib = fields.first().copied().unwrap_or(0.0) as u64;
    let cpu_secs = fields.iter().skip(1).sum();
    let _ = std::fs::remove_file(&rss_file);
    Timed {
        secs,
        max_rss_kib,
        cpu_secs,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

/// Writes every dirty page to disk (`sync`), so a timed run does not share the disk
/// with the writeback of what ran before it (fixtures, the other tool's files).
pub fn settle_disk() {
    let status = Command::new("sync").status().expect("run sync");
    assert!(status.success(), "sync failed");
}

pub fn tempfile_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "reposafe-bench-{tag}-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ))
}

/// The compiled-component cache shared by the benchmark's data dirs (and the tests'):
/// the providers are compiled once, not once per data dir.
pub fn component_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("reposafe-component-cache")
}

/// The reposafe binary: this build's, or the program `BENCH_REPOSAFE` names (another build
/// to compare with, or a wrapper script that profiles it).
pub fn reposafe(data: &Path) -> Command {
    let program =
        std::env::var_os("BENCH_REPOSAFE").unwrap_or_else(|| env!("CARGO_BIN_EXE_reposafe").into());
    let mut c = Command::new(program);
    c.arg("--data-dir")
        .arg(data)
        .env("REPOSAFE_COMPONENT_CACHE", component_cache());
    c
}

pub fn add_connection(server: &CloudServer, data: &Path, workspace: &str, files: &Path) {
    add_connection_as(server, data, workspace, files, &[]);
}

/// [`add_connection`] with more `connection add` arguments (`--name`, `--allow-restore`, …).
pub fn add_connection_as(
    server: &CloudServer,
    data: &Path,
    workspace: &str,
    files: &Path,
    extra: &[&str],
) {
    let tok = files.join("token");
    std::fs::write(&tok, TOKEN).expect("token");
    let base = server.base_url();
    let out = reposafe(data)
        .args(["connection", "add", "cloud", "--workspace", workspace])
        .args(["--set", &format!("api-base-url={base}")])
        .args(["--set", &format!("git-base-url={base}")])
        .args(["--api-token-email", EMAIL, "--api-token-file"])
        .arg(&tok)
        .args(extra)
        .output()
        .expect("connection add");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `connection add` has compiled the provider component into the shared cache (or
    // found it there), so the timed backups measure backups, not the one-time compilation.
}

pub fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                total += dir_size(&path);
            } else {
                total += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

pub fn packs_size(bare: &Path) -> u64 {
    std::fs::read_dir(bare.join("objects/pack"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().extension().and_then(|x| x.to_str()) == Some("pack"))
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

pub fn archive_size(data: &Path) -> u64 {
    dir_size(&data.join("archive/blobs")) + dir_size(&data.join("archive/snapshots"))
}

pub fn base64_encode(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// The `http.extraHeader=…` configuration that gives git the benchmark's credential.
pub fn git_auth_config() -> String {
    format!(
        "http.extraHeader=Authorization: Basic {}",
        base64_encode(&format!("x-bitbucket-api-token-auth:{TOKEN}"))
    )
}

/// `git fast-import` into the bare repository `bare`, reading its script from stdin.
pub fn fast_import(bare: &Path) -> std::process::Child {
    reposafe_testkit::gitutil::git_command(bare)
        .args(["fast-import", "--quiet"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("fast-import")
}

/// A repository of `commits` commits made with `git fast-import` (the first `random_mb`
/// commits also add 1 MiB of incompressible data each), repacked like a server's repository.
pub fn large_repo(dir: &Path, commits: usize, random_mb: usize) -> PathBuf {
    let bare = dir.join("large.git");
    reposafe_testkit::gitutil::init_bare(&bare);
    let mut child = fast_import(&bare);
    {
        let stdin = child.stdin.as_mut().expect("stdin");
        let mut w = std::io::BufWriter::new(stdin);
        for i in 0..commits {
            // Ten files; each commit rewrites one, with some churn, plus a new small file every 50.
            let file = i % 10;
            let mut content = String::new();
            for line in 0..40 {
                content.push_str(&format!(
                    "file {file} line {line} value {}\n",
                    (i / 10 + line * 7) % 1000
                ));
            }
            let msg = format!("commit {i}\n");
            writeln!(w, "commit refs/heads/main\nmark :{}", i + 1).unwrap();
            writeln!(
                w,
                "committer Bench <bench@acme.test> {} +0000",
                1_700_000_000 + i
            )
            .unwrap();
            writeln!(w, "data {}\n{}", msg.len(), msg).unwrap();
            writeln!(
                w,
                "M 644 inline src/file{file}.txt\ndata {}\n{}",
                content.len(),
                content
            )
            .unwrap();
            if i % 50 == 0 {
                let extra = format!("extra {i}\n");
                writeln!(
                    w,
                    "M 644 inline extra/{i}.txt\ndata {}\n{}",
                    extra.len(),
                    extra
                )
                .unwrap();
            }
            if i < random_mb {
                // Incompressible content, 1 MiB per commit, to reach a large pack.
                let blob = reposafe_testkit::gitutil::pseudo_random_bytes(i as u64 + 1, 1 << 20);
                writeln!(w, "M 644 inline blobs/{i}.bin\ndata {}", blob.len()).unwrap();
                w.write_all(&blob).unwrap();
                writeln!(w).unwrap();
            }
            if i % 5000 == 0 {
                writeln!(w, "reset refs/tags/t{i}\nfrom :{}\n", i + 1).unwrap();
            }
        }
        w.flush().unwrap();
    }
    assert!(child.wait().expect("fast-import").success());
    reposafe_testkit::gitutil::git(&bare, &["symbolic-ref", "HEAD", "refs/heads/main"]);
    reposafe_testkit::gitutil::git(
        &bare,
        &["repack", "-a", "-d", "-q", "--window=10", "--depth=50"],
    );
    bare
}
