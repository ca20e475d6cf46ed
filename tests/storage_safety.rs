//! Storage safety through the real binary (issue 10): a lost `vault.key` or a
//! mixed passphrase/key-file setup is refused with what to restore, and a data
//! dir is private (0700/0600) whatever the umask.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

const WORKSPACE: &str = "acme";

fn setup(n: usize) -> (CloudServer, TempDir) {
    let server = CloudServer::start();
    let repos_dir = TempDir::new("reposafe-src");
    gitutil::make_workspace_fixture(&server, WORKSPACE, n, repos_dir.path());
    server.add_api_token("acct-1", EMAIL, API_TOKEN);
    server.grant("acct-1", WORKSPACE);
    (server, repos_dir)
}

fn add_connection(rs: &Reposafe, server: &CloudServer) {
    let tok = rs.secret_file("token.txt", API_TOKEN);
    let tok = tok.display().to_string();
    rs.add_cloud(
        server,
        WORKSPACE,
        &["--api-token-email", EMAIL, "--api-token-file", &tok],
    )
    .ok();
}

/// Commands that open the data dir.
const COMMANDS: &[&[&str]] = &[
    &["connection", "list"],
    &["backup", WORKSPACE],
    &["repositories"],
    &["check"],
    &["plan", "list"],
    &["jobs", "list"],
];

/// `vault.key` deleted after a connection was added: every command fails naming
/// the key file and saying to restore it, and no new key is written over the
/// sealed credential (today a new key is generated and the credential is lost).
#[test]
fn a_lost_vault_key_is_refused_and_never_regenerated() {
    let (server, _src) = setup(2);
    let rs = Reposafe::new();
    add_connection(&rs, &server);
    let key = rs.data_dir().join("vault.key");
    assert!(key.is_file());
    std::fs::remove_file(&key).expect("remove vault.key");
    for args in COMMANDS {
        let run = rs.run(args);
        assert_ne!(run.code, 0, "{args:?} succeeded without vault.key");
        let out = run.all();
        assert!(
            out.contains(&key.display().to_string()) && out.contains("restore vault.key"),
            "{args:?}: {out}"
        );
        assert!(!key.exists(), "{args:?} wrote a new vault.key");
        assert!(!out.contains(API_TOKEN));
    }
}

/// A passphrase set on a data dir whose credentials are sealed to `vault.key` is
/// refused, naming both modes; without it, the data dir works as before.
#[test]
fn a_passphrase_on_a_key_file_data_dir_is_refused() {
    let (server, _src) = setup(2);
    let rs = Reposafe::new();
    add_connection(&rs, &server);
    for args in COMMANDS {
        let out = rs
            .cmd(args)
            .env("REPOSAFE_PASSPHRASE", "a passphrase")
            .output()
            .expect("run");
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("passphrase mode")
                && text.contains("key-file mode")
                && text.contains("unset REPOSAFE_PASSPHRASE"),
            "{args:?}: {text}"
        );
    }
    let run = rs.run(&["backup", WORKSPACE]).ok();
    assert!(run.all().contains("2 new snapshots"), "{}", run.all());
}

/// Every file and directory below `dir` (not `dir` itself) whose mode lets group
/// or others read, write or enter it.
fn loose_entries(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 && !meta.file_type().is_symlink() {
            out.push(format!("{:o} {}", mode, p.display()));
        }
        if meta.is_dir() {
            out.extend(loose_entries(&p));
        }
    }
    out
}

/// Under `umask 022` (a login shell's default) a backup, a second backup and a
/// check leave nothing under the data dir readable by group or others.
#[test]
fn the_data_dir_is_private_whatever_the_umask() {
    let (server, _src) = setup(3);
    let rs = Reposafe::new();
    let data = rs.data_dir().join("private");
    let tok = rs.secret_file("token.txt", API_TOKEN).display().to_string();
    let run = |args: &[String]| {
        let out = Command::new("sh")
            .arg("-c")
            .arg("umask 022; exec \"$@\"")
            .arg("sh")
            .arg(env!("CARGO_BIN_EXE_reposafe"))
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .env_remove("REPOSAFE_PASSPHRASE")
            .env_remove("REPOSAFE_DATA_DIR")
            .env_remove("REPOSAFE_COMPONENT_CACHE")
            .env("REPOSAFE_RETRY_BASE_MS", "20")
            .output()
            .expect("run reposafe");
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let add = cloud_add_args(
        &server,
        &["--workspace", WORKSPACE],
        &["--api-token-email", EMAIL, "--api-token-file", &tok],
    );
    run(&add);
    run(&["backup".into(), WORKSPACE.into()]);
    run(&["check".into()]);
    let loose = loose_entries(&data);
    assert!(
        loose.is_empty(),
        "readable by group or others:\n{}",
        loose.join("\n")
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&data).expect("data").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the data dir itself");
    assert!(data.join("mirrors").is_dir() && data.join("archive/blobs").is_dir());
}

/// An existing data dir that others can read gets a warning naming it and its mode.
#[test]
fn a_loose_existing_data_dir_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let rs = Reposafe::new();
    rs.run(&["connection", "list"]).ok();
    std::fs::set_permissions(rs.data_dir(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let run = rs.run(&["connection", "list"]).ok();
    let want = format!("{} has mode 0755", rs.data_dir().display());
    assert!(run.stderr.contains(&want), "{}", run.stderr);
}

/// A disk running low is said before a backup fails on it: `archive show` gives what
/// the local archive's disk has free, and the daemon's overview warns, naming the data
/// dir's disk, while less than the threshold is free (here forced to 100%, then 0%).
#[test]
fn a_disk_running_low_is_warned_about_before_backups_fail_on_it() {
    let rs = Reposafe::new();
    let shown = rs.run(&["archive", "show"]).ok();
    assert!(shown.stdout.contains("its disk: "), "{}", shown.stdout);
    let json: serde_json::Value =
        serde_json::from_str(&rs.run(&["archive", "show", "--json"]).ok().stdout).expect("json");
    let free = json["disk_free_bytes"].as_u64().expect("free bytes");
    let size = json["disk_bytes"].as_u64().expect("disk bytes");
    assert!(free > 0 && free <= size, "{json}");
    let log = rs.data_dir().join("daemon-test.log");
    let warnings_with = |percent: &str| {
        let env = [("REPOSAFE_WARN_FREE_BELOW_PERCENT", percent)];
        let (mut daemon, url, token) = start_logged_daemon_with(&rs, &log, &env);
        let status = daemon_status(&url, &token);
        let _ = daemon.kill();
        let _ = daemon.wait();
        status["warnings"].to_string()
    };
    let low = warnings_with("100");
    let dir = std::path::absolute(rs.data_dir()).expect("absolute");
    assert!(
        low.contains(&format!("the disk of the data dir ({})", dir.display())),
        "{low}"
    );
    assert!(low.contains(" free of "), "{low}");
    assert_eq!(low.matches("the disk of").count(), 1, "one disk: {low}");
    let enough = warnings_with("0");
    assert!(!enough.contains("the disk of"), "{enough}");
}
