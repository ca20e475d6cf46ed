//! One command surface: the same CLI scenario run against a data dir directly (the
//! engine in the CLI's process) and through a running daemon (the CLI as an API
//! client) prints the same thing, line by line, once times, ids and paths that
//! differ between two runs are masked.

mod common;

use common::*;
use std::path::Path;

const WS: &str = "acme";
const SECOND_TOKEN: &str = "ATATT3xFfGF0-second-token-77aa01";

/// Replaces what legitimately differs between two runs: clock times, snapshot ids,
/// durations, byte counts, the run's own directories.
fn mask(text: &str, dirs: &[&Path]) -> String {
    let mut out = text.to_string();
    for d in dirs {
        out = out.replace(&d.display().to_string(), "<DIR>");
    }
    let mut masked = String::new();
    for line in out.lines() {
        let words: Vec<String> = line
            .split_inclusive(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')')
            .map(mask_word)
            .collect();
        masked.push_str(&words.concat());
        masked.push('\n');
    }
    masked
}

fn mask_word(w: &str) -> String {
    let core = w.trim_end_matches(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')');
    let tail = &w[core.len()..];
    let digits = core.chars().filter(char::is_ascii_digit).count();
    let is_snapshot_id = core.len() == 25 && core.as_bytes().get(8) == Some(&b'T');
    let is_clock = core.len() == 8 && core.matches(':').count() == 2 && digits == 6;
    let is_date = core.len() == 10 && core.matches('-').count() == 2 && digits == 8;
    let is_number = !core.is_empty() && core.chars().all(|c| c.is_ascii_digit() || c == '.');
    let masked = if is_snapshot_id {
        "<SNAPSHOT>"
    } else if is_clock || is_date {
        "<TIME>"
    } else if is_number && digits > 0 {
        "<N>"
    } else {
        return w.to_string();
    };
    format!("{masked}{tail}")
}

struct Scenario<'a> {
    rs: &'a Reposafe,
    server: &'a CloudServer,
    transcript: String,
}

impl Scenario<'_> {
    /// Runs a command and adds its exit code, stdout and stderr to the transcript.
    fn step(&mut self, args: &[&str]) {
        let out = self
            .rs
            .cmd(args)
            .env("REPOSAFE_LOG", "off")
            .output()
            .expect("run reposafe");
        let dirs = [self.rs.data_dir(), self.rs.files.path()];
        self.transcript.push_str(&format!(
            "$ {}exit {}\n{}--- stderr\n{}",
            mask(&args.join(" "), &dirs),
            out.status.code().unwrap_or(-1),
            mask(&String::from_utf8_lossy(&out.stdout), &dirs),
            mask(&String::from_utf8_lossy(&out.stderr), &dirs),
        ));
    }

    fn run_all(&mut self) {
        let tok = self.rs.secret_file("token.txt", API_TOKEN);
        let tok2 = self.rs.secret_file("token2.txt", SECOND_TOKEN);
        let (tok, tok2) = (tok.display().to_string(), tok2.display().to_string());
        let add = cloud_add_args(
            self.server,
            &["--workspace", WS],
            &["--api-token-email", EMAIL, "--api-token-file", &tok],
        );
        self.step(&add.iter().map(String::as_str).collect::<Vec<_>>());
        self.step(&["connection", "list"]);
        self.step(&["connection", "test", WS]);
        self.step(&["providers"]);
        let cred = [
            "connection",
            "credential",
            "add",
            WS,
            "--additional",
            "--label",
            "second",
            "--api-token-email",
            "two@acme.test",
            "--api-token-file",
            &tok2,
        ];
        self.step(&cred);
        self.step(&["connection", "credential", "disable", WS, "c1"]);
        self.step(&["connection", "credential", "list", WS]);
        self.step(&["connection", "credential", "enable", WS, "c1"]);
        self.step(&["connection", "credential", "test", WS, "c1"]);
        self.step(&["connection", "tls", WS, "--system-roots", "--no-verify"]);
        self.step(&[
            "plan",
            "add",
            "nightly",
            "--connection",
            WS,
            "--schedule",
            "0 2 * * *",
        ]);
        self.step(&[
            "plan",
            "add",
            "bad",
            "--connection",
            WS,
            "--schedule",
            "* * *",
        ]);
        self.step(&["plan", "list"]);
        self.step(&["run", "--connection", WS]);
        self.step(&["jobs", "list"]);
        self.step(&["jobs", "show", "1"]);
        self.step(&["jobs", "show", "99"]);
        self.step(&["repositories"]);
        let repo = format!("{WS}/repo-001");
        self.step(&["snapshots", &repo]);
        self.step(&["snapshots", "acme/nothing-here"]);
        let target = self.rs.files.path().join("restored.git");
        let target = target.display().to_string();
        self.step(&["restore", &repo, "--to", &target]);
        self.step(&["restore", &repo, "--to", &target]);
        self.step(&["restore", &repo, "--to", &target, "--snapshot", "nonsense"]);
        self.step(&["check"]);
        self.step(&["backup", WS]);
        self.step(&["connection", "credential", "remove", WS, "--id", "c1"]);
        self.step(&["plan", "remove", "nightly"]);
        self.step(&["plan", "remove", "nightly"]);
        self.step(&["connection", "remove", WS]);
        self.step(&["connection", "list"]);
    }
}

#[test]
fn local_and_remote_cli_print_the_same() {
    let server = CloudServer::start();
    let src = TempDir::new("reposafe-src");
    let repos = gitutil::make_workspace_fixture(&server, WS, 3, src.path());
    assert!(
        repos.iter().any(|(slug, _)| slug == "repo-001"),
        "{repos:?}"
    );
    server.add_api_token("acct-1", EMAIL, API_TOKEN);
    server.grant("acct-1", WS);
    server.add_api_token("acct-2", "two@acme.test", SECOND_TOKEN);
    server.grant("acct-2", WS);

    let local = Reposafe::new();
    let mut a = Scenario {
        rs: &local,
        server: &server,
        transcript: String::new(),
    };
    a.run_all();

    let remote = Reposafe::new();
    let mut daemon = start_daemon(&remote);
    let mut b = Scenario {
        rs: &remote,
        server: &server,
        transcript: String::new(),
    };
    b.run_all();
    let _ = daemon.kill();
    let _ = daemon.wait();

    // The scenario did what it says, so the comparison compares something.
    for want in [
        "added connection acme",
        "connection acme works; it sees: acme",
        "added additional credential c1",
        "job <N> (connection acme): succeeded; <N> repositories: <N> new snapshots",
        "restored acme/repo-001 snapshot <SNAPSHOT>",
        "all intact",
        "removed connection acme (its snapshots stay in the archive)",
    ] {
        assert!(
            a.transcript.contains(want),
            "{want:?} missing:\n{}",
            a.transcript
        );
    }
    let (la, lb): (Vec<&str>, Vec<&str>) = (
        a.transcript.lines().collect(),
        b.transcript.lines().collect(),
    );
    for (i, (x, y)) in la.iter().zip(&lb).enumerate() {
        assert_eq!(
            x, y,
            "line {i} differs (local vs daemon)\n--- local\n{}\n--- daemon\n{}",
            a.transcript, b.transcript
        );
    }
    assert_eq!(
        la.len(),
        lb.len(),
        "--- local\n{}\n--- daemon\n{}",
        a.transcript,
        b.transcript
    );
}
