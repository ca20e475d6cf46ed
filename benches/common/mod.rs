//! Helpers shared by the benchmarks: timing with peak RSS, the reposafe binary with the
//! shared compiled-component cache, a Cloud connection to the test server, sizes on disk.

#![allow(dead_code)]

use reposafe_testkit::CloudServer;
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
        .arg("%M")
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
    let max_rss_kib = rss
        .lines()
        .rev()
        .find_map(|l| l.trim().parse().ok())
        .unwrap_or(0);
    let _ = std::fs::remove_file(&rss_file);
    Timed {
        secs,
        max_rss_kib,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
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
