//! The hostile-input suite, secrets part: one end-to-end scenario through the real
//! binary uses a secret of every credential kind (Cloud API token, access token,
//! OAuth consumer secret, app password; Data Center HTTP access token, user
//! password, project token; additional credentials; a refused token and a secret
//! of the wrong kind) plus the daemon's admin token and a dashboard session, on
//! every path a secret could leak by: the CLI with debug logging, the daemon's debug
//! log, every `GET` route of the API, `/metrics`, the dashboard page, a job's
//! Server-Sent Events, failing requests' error bodies. Then it scans everything it
//! captured, the daemon's log and every file under the data dir (redb included: its
//! sealed values never hold the plaintext; only `vault.key` is left out) for each
//! secret in clear and in the base64 forms a leaked `Authorization: Basic` header
//! would take. Zero hits allowed; a hit names the stream or file and the offset.
//! The scanner proves first that it finds a planted secret.

mod common;

use base64::Engine as _;
use common::*;
use reposafe_testkit::gitutil::WorkRepo;
use reposafe_testkit::{DcOptions, DcServer};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const ACCESS_TOKEN: &str = "ws-access-token-Q7r2W9x4Bn";
const OAUTH_KEY: &str = "consumer-key-1";
const OAUTH_SECRET: &str = "oauth-consumer-secret-Lm3N8pVt";
const APP_USER: &str = "legacy";
const APP_PASSWORD: &str = "app-password-legacy-Zt5K1vQs";
const DC_USER: &str = "jdoe";
const DC_TOKEN: &str = "BBDC-http-token-Yh6Jd2QaMw";
const DC_PASSWORD: &str = "dc-user-password-Rb4Xc9WnEp";
const DC_PROJECT_TOKEN: &str = "BBDC-project-token-Pe7Gs3LkUf";
const ADDL_EMAIL: &str = "backup2@acme.test";
const ADDL_TOKEN: &str = "ATATT-additional-token-Vu8Fm2Gh";
const API_ADDL_EMAIL: &str = "backup3@acme.test";
const API_ADDL_TOKEN: &str = "ATATT-additional-via-api-Hw2Ej7Rc";
const API_CONN_EMAIL: &str = "api@acme.test";
const API_CONN_TOKEN: &str = "ATATT-added-through-api-Ko9Dq1Zy";
const WRONG_TOKEN: &str = "ATATT-wrong-refused-token-Ns6Tb4Jx";
const WRONG_KIND_SECRET: &str = "wrong-kind-secret-Cx3Ya8VfPo";

/// Every user name a secret is sent with in `Basic user:secret`.
const IDENTITIES: &[&str] = &[
    EMAIL,
    ADDL_EMAIL,
    API_ADDL_EMAIL,
    API_CONN_EMAIL,
    "x-bitbucket-api-token-auth",
    "x-token-auth",
    OAUTH_KEY,
    APP_USER,
    DC_USER,
];

/// The secrets the tests use, by name.
fn fixed_secrets() -> Vec<(String, String)> {
    [
        ("API token", API_TOKEN),
        ("access token", ACCESS_TOKEN),
        ("OAuth consumer secret", OAUTH_SECRET),
        ("app password", APP_PASSWORD),
        ("DC HTTP access token", DC_TOKEN),
        ("DC password", DC_PASSWORD),
        ("DC project token", DC_PROJECT_TOKEN),
        ("additional credential token", ADDL_TOKEN),
        ("additional credential token (API)", API_ADDL_TOKEN),
        ("connection token (API)", API_CONN_TOKEN),
        ("refused token", WRONG_TOKEN),
        ("wrong-kind secret", WRONG_KIND_SECRET),
    ]
    .iter()
    .map(|(n, s)| (n.to_string(), s.to_string()))
    .collect()
}

// ---------------------------------------------------------------------------------
// The scanner
// ---------------------------------------------------------------------------------

/// One form of one secret to look for.
struct Needle {
    secret: String,
    form: String,
    bytes: Vec<u8>,
}

/// The clear text of each secret, its base64, and base64 of `identity:secret` for
/// every identity (as in `Authorization: Basic`), without the padding.
fn needles(secrets: &[(String, String)], identities: &[&str]) -> Vec<Needle> {
    let b64 = |s: &str| {
        base64::engine::general_purpose::STANDARD
            .encode(s)
            .trim_end_matches('=')
            .to_string()
    };
    let mut out = Vec::new();
    for (name, secret) in secrets {
        assert!(secret.len() >= 8, "{name} is too short to scan for");
        out.push(Needle {
            secret: name.clone(),
            form: "clear".into(),
            bytes: secret.as_bytes().to_vec(),
        });
        out.push(Needle {
            secret: name.clone(),
            form: "base64".into(),
            bytes: b64(secret).into_bytes(),
        });
        for id in identities {
            out.push(Needle {
                secret: name.clone(),
                form: format!("base64 of {id}:secret"),
                bytes: b64(&format!("{id}:{secret}")).into_bytes(),
            });
        }
    }
    out
}

/// Finds every needle in `data` in one pass: candidates by their first 8 bytes, then
/// compared in full. Returns (needle index, byte offset).
fn find_all(data: &[u8], needles: &[Needle]) -> Vec<(usize, usize)> {
    let key = |b: &[u8]| u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
    let mut by_prefix: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut first_two = vec![false; 1 << 16];
    for (i, n) in needles.iter().enumerate() {
        by_prefix.entry(key(&n.bytes)).or_default().push(i);
        first_two[usize::from(n.bytes[0]) << 8 | usize::from(n.bytes[1])] = true;
    }
    let mut hits = Vec::new();
    for pos in 0..data.len().saturating_sub(7) {
        if !first_two[usize::from(data[pos]) << 8 | usize::from(data[pos + 1])] {
            continue;
        }
        if let Some(list) = by_prefix.get(&key(&data[pos..])) {
            for &i in list {
                if data[pos..].starts_with(&needles[i].bytes) {
                    hits.push((i, pos));
                }
            }
        }
    }
    hits
}

/// Everything to scan: captured streams and files, each under a label.
#[derive(Default)]
struct Evidence {
    items: Vec<(String, Vec<u8>)>,
}

impl Evidence {
    fn add(&mut self, label: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.items.push((label.into(), bytes.into()));
    }

    /// A command's stdout and stderr; returns the run.
    fn run(&mut self, label: &str, run: Run) -> Run {
        self.add(format!("{label}: stdout"), run.stdout.clone());
        self.add(format!("{label}: stderr"), run.stderr.clone());
        run
    }

    /// Every file under `dir` but those named in `skip` (file names).
    fn files_under(&mut self, dir: &Path, skip: &[&str]) -> usize {
        let mut n = 0;
        for f in files_under(dir) {
            let name = f.file_name().and_then(|s| s.to_str()).unwrap_or("");
            if skip.contains(&name) {
                continue;
            }
            let bytes = std::fs::read(&f).unwrap_or_else(|e| panic!("read {}: {e}", f.display()));
            self.add(f.display().to_string(), bytes);
            n += 1;
        }
        n
    }

    fn labels(&self) -> Vec<&str> {
        self.items.iter().map(|(l, _)| l.as_str()).collect()
    }

    /// Every hit, as `secret (form) in LABEL at offset N: …context…`. `allowed` pairs
    /// (label, secret name) are the places a secret legitimately lives.
    fn scan(&self, needles: &[Needle], allowed: &[(String, String)]) -> Vec<String> {
        let mut report = Vec::new();
        for (label, data) in &self.items {
            for (i, pos) in find_all(data, needles) {
                let n = &needles[i];
                if allowed.iter().any(|(l, s)| l == label && *s == n.secret) {
                    continue;
                }
                let from = pos.saturating_sub(60);
                let to = (pos + n.bytes.len() + 60).min(data.len());
                report.push(format!(
                    "{} ({}) in {label} at offset {pos}: …{}…",
                    n.secret,
                    n.form,
                    String::from_utf8_lossy(&data[from..to]).escape_debug()
                ));
            }
        }
        report
    }
}

/// The scanner finds a planted secret (clear, inside binary bytes, and as a Basic
/// header's base64) at the right offset, in a planted file as in a stream, and an
/// allowance covers only its own file: a broken scanner cannot pass silently.
fn scanner_self_check() {
    let dir = TempDir::new("reposafe-scan-check");
    let secret = "planted-secret-Gq4Wz8Lm".to_string();
    let secrets = vec![("planted".to_string(), secret.clone())];
    let ns = needles(&secrets, &["someone"]);
    let mut binary = vec![0u8, 0xff, 0xfe, b'x'];
    binary.extend_from_slice(secret.as_bytes());
    std::fs::write(dir.path().join("state.redb"), &binary).expect("plant");
    let header = format!(
        "Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("someone:{secret}"))
    );
    std::fs::create_dir_all(dir.path().join("mirrors/x.git")).expect("mkdir");
    std::fs::write(dir.path().join("mirrors/x.git/config"), &header).expect("plant");
    std::fs::write(dir.path().join("clean"), "nothing here").expect("plant");
    std::fs::write(dir.path().join("vault.key"), &secret).expect("plant");
    let mut ev = Evidence::default();
    assert_eq!(ev.files_under(dir.path(), &["vault.key"]), 3);
    ev.add("stream", format!("error: token {secret} refused"));
    let hits = ev.scan(&ns, &[]);
    assert_eq!(hits.len(), 3, "{hits:#?}");
    assert!(hits[0].contains("state.redb at offset 4"), "{hits:#?}");
    assert!(hits[1].contains("base64 of someone:secret"), "{hits:#?}");
    assert!(hits[1].contains("config at offset 21"), "{hits:#?}");
    assert!(hits[2].contains("stream at offset 13"), "{hits:#?}");
    let redb = dir.path().join("state.redb").display().to_string();
    let allowed = vec![(redb, "planted".to_string())];
    assert_eq!(ev.scan(&ns, &allowed).len(), 2);
}

// ---------------------------------------------------------------------------------
// The servers and the data
// ---------------------------------------------------------------------------------

/// A bare repository with two commits and a tag.
fn make_repo(dir: &Path) -> PathBuf {
    let bare = dir.join("app.git");
    gitutil::init_bare(&bare);
    let mut w = WorkRepo::new();
    w.write("a.txt", "one\n");
    w.commit("one");
    w.tag_annotated("v1", "release 1");
    w.write("b.txt", "two\n");
    w.commit("two");
    w.push_mirror(&bare);
    bare
}

/// Cloud workspaces `acme` (API tokens), `acme-acc` (access token), `acme-oauth`,
/// `acme-app` (app password), each with `app`; DC projects PRJ (jdoe) and OPS
/// (project token only), each with `app`.
fn servers(bare: &Path) -> (CloudServer, DcServer) {
    let cloud = CloudServer::start();
    for ws in ["acme", "acme-acc", "acme-oauth", "acme-app"] {
        cloud.add_repo(ws, "app", bare, Default::default());
    }
    for (principal, email, token) in [
        ("acct-1", EMAIL, API_TOKEN),
        ("acct-2", ADDL_EMAIL, ADDL_TOKEN),
        ("acct-3", API_ADDL_EMAIL, API_ADDL_TOKEN),
        ("acct-4", API_CONN_EMAIL, API_CONN_TOKEN),
    ] {
        cloud.add_api_token(principal, email, token);
        cloud.grant(principal, "acme");
    }
    // The workspace restores write into (through the restore connection `dr`).
    cloud.add_workspace("acme-dr");
    cloud.grant("acct-1", "acme-dr");
    cloud.add_access_token("ws-token", "acme-acc", ACCESS_TOKEN);
    cloud.add_oauth_consumer("oauth-app", OAUTH_KEY, OAUTH_SECRET, 3600);
    cloud.grant("oauth-app", "acme-oauth");
    cloud.add_app_password("legacy-user", APP_USER, APP_PASSWORD);
    cloud.grant("legacy-user", "acme-app");
    let dc = DcServer::start(DcOptions::default());
    dc.add_repo("PRJ", "app", bare, false);
    dc.add_repo("OPS", "app", bare, false);
    dc.add_user(DC_USER, DC_PASSWORD);
    dc.add_user_token(DC_USER, DC_TOKEN);
    dc.grant(DC_USER, "PRJ");
    dc.add_project_token("OPS", DC_PROJECT_TOKEN);
    (cloud, dc)
}

fn file_arg(rs: &Reposafe, name: &str, secret: &str) -> String {
    rs.secret_file(name, secret).display().to_string()
}

/// `reposafe -vv ARGS` (REPOSAFE_LOG=debug too), captured.
fn cli(rs: &Reposafe, ev: &mut Evidence, label: &str, args: &[&str]) -> Run {
    let mut all = vec!["-vv"];
    all.extend(args);
    ev.run(label, rs.run(&all))
}

/// Every connection kind added through the CLI (no daemon), plus the refusals.
fn add_connections(rs: &Reposafe, ev: &mut Evidence, cloud: &CloudServer, dc: &DcServer) {
    let api = file_arg(rs, "api.tok", API_TOKEN);
    let acc = file_arg(rs, "acc.tok", ACCESS_TOKEN);
    let oauth = file_arg(rs, "oauth.secret", OAUTH_SECRET);
    let app = file_arg(rs, "app.pw", APP_PASSWORD);
    let cloud_kinds: [(&str, &str, Vec<&str>); 4] = [
        (
            "acme",
            "acme-tok",
            vec!["--api-token-email", EMAIL, "--api-token-file", &api],
        ),
        ("acme-acc", "acme-acc", vec!["--access-token-file", &acc]),
        (
            "acme-oauth",
            "acme-oauth",
            vec!["--oauth-key", OAUTH_KEY, "--oauth-secret-file", &oauth],
        ),
        (
            "acme-app",
            "acme-app",
            vec!["--app-password-user", APP_USER, "--app-password-file", &app],
        ),
    ];
    for (ws, name, cred) in cloud_kinds {
        let args = cloud_add_args(cloud, &["--workspace", ws, "--name", name], &cred);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(rs, ev, &format!("add {name}"), &args).ok();
    }
    let restore = cloud_add_args(
        cloud,
        &["--workspace", "acme-dr", "--name", "dr", "--allow-restore"],
        &["--api-token-email", EMAIL, "--api-token-file", &api],
    );
    let restore: Vec<&str> = restore.iter().map(String::as_str).collect();
    cli(rs, ev, "add dr", &restore).ok();
    let base = format!("base-url={}", dc.base_url());
    let dc_tok = file_arg(rs, "dc.tok", DC_TOKEN);
    let dc_pw = file_arg(rs, "dc.pw", DC_PASSWORD);
    let dc_kinds: [(&str, Vec<&str>); 2] = [
        ("corp-tok", vec!["--http-access-token-file", &dc_tok]),
        (
            "corp-pw",
            vec!["--username", DC_USER, "--password-file", &dc_pw],
        ),
    ];
    for (name, cred) in dc_kinds {
        let mut args = vec!["connection", "add", "dc", "--name", name, "--set", &base];
        args.extend(cred);
        cli(rs, ev, &format!("add {name}"), &args).ok();
    }
    let f = file_arg(rs, "addl.tok", ADDL_TOKEN);
    cli(
        rs,
        ev,
        "add additional",
        &[
            "connection",
            "credential",
            "add",
            "acme-tok",
            "--additional",
            "--label",
            "backup2",
            "--api-token-email",
            ADDL_EMAIL,
            "--api-token-file",
            &f,
        ],
    )
    .ok();
    add_refused(rs, ev, cloud, &base);
}

/// Refused: a wrong token (verified), a wrong token as an additional credential, a
/// secret of a kind Data Center does not take; and a wrong token stored unchecked
/// (`wrong`), to be refused by the server at backup time.
fn add_refused(rs: &Reposafe, ev: &mut Evidence, cloud: &CloudServer, dc_base: &str) {
    let f = file_arg(rs, "wrong.tok", WRONG_TOKEN);
    let cred = ["--api-token-email", EMAIL, "--api-token-file", &f];
    let args = cloud_add_args(cloud, &["--workspace", "acme", "--name", "refused"], &cred);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = cli(rs, ev, "add refused token", &args);
    assert_ne!(r.code, 0, "{}", r.all());
    let r = cli(
        rs,
        ev,
        "add refused additional",
        &[
            "connection",
            "credential",
            "add",
            "acme-tok",
            "--additional",
            "--api-token-email",
            EMAIL,
            "--api-token-file",
            &f,
        ],
    );
    assert_ne!(r.code, 0, "{}", r.all());
    let k = file_arg(rs, "kind.secret", WRONG_KIND_SECRET);
    let r = cli(
        rs,
        ev,
        "add wrong kind",
        &[
            "connection",
            "add",
            "dc",
            "--name",
            "kind",
            "--set",
            dc_base,
            "--access-token-file",
            &k,
        ],
    );
    assert_ne!(r.code, 0, "{}", r.all());
    let mut cred = cred.to_vec();
    cred.push("--no-verify");
    let args = cloud_add_args(cloud, &["--workspace", "acme", "--name", "wrong"], &cred);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cli(rs, ev, "add unverified wrong", &args).ok();
}

const CONNECTIONS: &[&str] = &[
    "acme-tok",
    "acme-acc",
    "acme-oauth",
    "acme-app",
    "corp-tok",
    "corp-pw",
];

/// The repository name of `app` in a connection.
fn repo_of(conn: &str) -> &'static str {
    match conn {
        "acme-tok" | "acme-api" => "acme/app",
        "acme-acc" => "acme-acc/app",
        "acme-oauth" => "acme-oauth/app",
        "acme-app" => "acme-app/app",
        _ => "PRJ/app",
    }
}

/// Lists, tests, backs up, lists snapshots, restores and checks, through the CLI
/// (directly on the data dir, or through the daemon when one runs).
fn operate(rs: &Reposafe, ev: &mut Evidence, tag: &str, out: &Path) {
    let l = |what: &str| format!("{tag} {what}");
    cli(rs, ev, &l("connection list"), &["connection", "list"]).ok();
    cli(rs, ev, &l("providers"), &["providers"]).ok();
    for c in CONNECTIONS {
        cli(rs, ev, &l(&format!("test {c}")), &["connection", "test", c]).ok();
        cli(
            rs,
            ev,
            &l(&format!("credentials {c}")),
            &["connection", "credential", "list", c],
        )
        .ok();
        let json = cli(rs, ev, &l(&format!("backup {c}")), &["backup", c, "--json"]).ok();
        assert!(json.stdout.contains("\"repositories\""), "{}", json.stdout);
        let repo = repo_of(c);
        cli(
            rs,
            ev,
            &l(&format!("snapshots {c}")),
            &["snapshots", repo, "--connection", c],
        )
        .ok();
        cli(
            rs,
            ev,
            &l(&format!("snapshots json {c}")),
            &["snapshots", repo, "--connection", c, "--json"],
        )
        .ok();
        let to = out.join(format!("{tag}-{c}.git")).display().to_string();
        cli(
            rs,
            ev,
            &l(&format!("restore {c}")),
            &["restore", repo, "--connection", c, "--to", &to],
        )
        .ok();
    }
    // A restore into Bitbucket: repository creation, the push's Authorization header.
    let into = format!("acme-dr/app-{tag}");
    cli(
        rs,
        ev,
        &l("restore into"),
        &[
            "restore",
            "acme/app",
            "--connection",
            "acme-tok",
            "--to-connection",
            "dr",
            "--as",
            &into,
        ],
    )
    .ok();
    cli(
        rs,
        ev,
        &l("test additional"),
        &["connection", "credential", "test", "acme-tok", "c1"],
    )
    .ok();
    let r = cli(rs, ev, &l("backup refused"), &["backup", "wrong", "--json"]);
    assert_ne!(r.code, 0, "{}", r.all());
    let r = cli(rs, ev, &l("test refused"), &["connection", "test", "wrong"]);
    assert_ne!(r.code, 0, "{}", r.all());
    cli(
        rs,
        ev,
        &l("backup plain"),
        &["backup", "acme-tok", "corp-tok"],
    )
    .ok();
    cli(rs, ev, &l("repositories"), &["repositories"]).ok();
    cli(rs, ev, &l("check"), &["check"]).ok();
    let jobs = cli(
        rs,
        ev,
        &l("jobs list"),
        &["jobs", "list", "--limit", "100", "--json"],
    )
    .ok();
    let jobs: Value = serde_json::from_str(&jobs.stdout).expect("jobs list --json");
    for j in jobs.as_array().expect("jobs array") {
        let id = j["id"].as_u64().expect("job id").to_string();
        cli(
            rs,
            ev,
            &l(&format!("jobs show {id}")),
            &["jobs", "show", &id, "--json"],
        )
        .ok();
        cli(
            rs,
            ev,
            &l(&format!("jobs show text {id}")),
            &["jobs", "show", &id],
        )
        .ok();
    }
}

// ---------------------------------------------------------------------------------
// The daemon
// ---------------------------------------------------------------------------------

struct Daemon {
    child: Child,
    url: String,
    token: String,
    http: reqwest::blocking::Client,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// `serve` with the debug log to `log`.
    fn start(rs: &Reposafe, log: &Path) -> Daemon {
        let (child, url, token) = start_logged_daemon(rs, log);
        Daemon {
            child,
            url,
            token,
            http: api_client(),
        }
    }

    /// One request with the admin token (or `cookie`); the whole answer (status,
    /// headers, body) is captured. Returns (status, body).
    fn call(
        &self,
        ev: &mut Evidence,
        method: &str,
        path: &str,
        body: Option<&Value>,
        cookie: Option<&str>,
    ) -> (u16, String) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut rb = self.http.request(m, format!("{}{path}", self.url));
        rb = match cookie {
            Some(c) => rb.header("Cookie", format!("reposafe_session={c}")),
            None => rb.bearer_auth(&self.token),
        };
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = rb.send().unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let mut head = format!("{status}\n");
        for (k, v) in resp.headers() {
            head.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
        }
        let text = resp
            .text()
            .unwrap_or_else(|e| panic!("{method} {path} body: {e}"));
        ev.add(format!("HTTP {method} {path}"), format!("{head}\n{text}"));
        (status, text)
    }

    fn get(&self, ev: &mut Evidence, path: &str) -> Value {
        let (s, t) = self.call(ev, "GET", path, None, None);
        assert_eq!(s, 200, "GET {path}: {t}");
        serde_json::from_str(&t).unwrap_or(Value::String(t))
    }

    /// Signs in at `/login`; the session id. The answer's `Set-Cookie` is the one
    /// place the id is sent, so only its body is captured.
    fn sign_in(&self, ev: &mut Evidence) -> String {
        let resp = self
            .http
            .post(format!("{}/login", self.url))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!("token={}", self.token))
            .send()
            .expect("login");
        assert_eq!(resp.status().as_u16(), 303);
        let cookie = resp.headers()["set-cookie"]
            .to_str()
            .expect("cookie")
            .to_string();
        ev.add("HTTP POST /login body", resp.text().expect("login body"));
        cookie
            .split(';')
            .next()
            .and_then(|kv| kv.strip_prefix("reposafe_session="))
            .expect("session cookie")
            .to_string()
    }

    /// SIGTERM, then the exit.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "daemon did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Through the HTTP API: a connection and an additional credential added with their
/// secrets in the body, refused and wrong-kind requests, a job followed by SSE, a
/// restore and a check.
fn api_writes(d: &Daemon, ev: &mut Evidence, cloud: &CloudServer, out: &Path) {
    let settings = json!({
        "workspace": "acme", "api-base-url": cloud.base_url(), "git-base-url": cloud.base_url()
    });
    let conn = |name: &str, kind: &str, identity: &str, secret: &str| {
        json!({"name": name, "provider": "cloud", "settings": settings,
               "credential": {"kind": kind, "identity": identity, "secret": secret}})
    };
    let c = conn("acme-api", "api-token", API_CONN_EMAIL, API_CONN_TOKEN);
    let (s, t) = d.call(ev, "POST", "/api/v1/connections", Some(&c), None);
    assert_eq!(s, 201, "{t}");
    let c = conn("refused-api", "api-token", EMAIL, WRONG_TOKEN);
    let (s, t) = d.call(ev, "POST", "/api/v1/connections", Some(&c), None);
    assert_eq!(s, 422, "refused token: {t}");
    let c = conn("kind-api", "http-access-token", "", WRONG_KIND_SECRET);
    let (s, t) = d.call(ev, "POST", "/api/v1/connections", Some(&c), None);
    assert!((400..500).contains(&s), "wrong kind: {s} {t}");
    // A client that puts the secret where an object belongs.
    let mut c = conn("shape-api", "api-token", EMAIL, WRONG_KIND_SECRET);
    c["credential"] = json!(WRONG_KIND_SECRET);
    let (s, t) = d.call(ev, "POST", "/api/v1/connections", Some(&c), None);
    assert_eq!(s, 400, "malformed: {t}");
    let c = conn("kind-swap", WRONG_KIND_SECRET, EMAIL, "api-token");
    let (s, t) = d.call(ev, "POST", "/api/v1/connections", Some(&c), None);
    assert_eq!(s, 400, "secret as the kind: {t}");
    let path = "/api/v1/connections/acme-tok/credentials";
    let add = json!({"kind": "api-token", "identity": API_ADDL_EMAIL, "secret": API_ADDL_TOKEN, "label": "b3"});
    let (s, t) = d.call(ev, "POST", path, Some(&add), None);
    assert_eq!(s, 201, "{t}");
    let wrong = json!({"kind": "api-token", "identity": EMAIL, "secret": WRONG_TOKEN});
    let (s, t) = d.call(ev, "POST", path, Some(&wrong), None);
    assert_eq!(s, 422, "{t}");
    let wrong = json!({"kind": "app-password", "identity": "x", "secret": WRONG_KIND_SECRET, "project": "PRJ"});
    let (s, t) = d.call(ev, "POST", path, Some(&wrong), None);
    assert!((400..500).contains(&s), "{s} {t}");
    for (id, body) in [("primary", None), ("c1", None), ("c2", None)] {
        let p = format!("/api/v1/connections/acme-tok/credentials/{id}/test");
        let (s, t) = d.call(ev, "POST", &p, body, None);
        assert_eq!(s, 200, "{p}: {t}");
    }
    for name in ["acme-api", "wrong"] {
        let (s, t) = d.call(
            ev,
            "POST",
            "/api/v1/run",
            Some(&json!({"connection": name})),
            None,
        );
        assert_eq!(s, 202, "{t}");
        let job: Value = serde_json::from_str(&t).expect("job");
        let id = job["id"].as_u64().expect("job id");
        let (s, t) = d.call(ev, "GET", &format!("/api/v1/jobs/{id}/events"), None, None);
        assert_eq!(s, 200, "{t}");
        assert!(t.contains("event: end"), "{t}");
    }
    let to = out.join("api-restore.git").display().to_string();
    let r = json!({"repository": "acme/app", "connection": "acme-api", "to": to});
    let (s, t) = d.call(ev, "POST", "/api/v1/restore", Some(&r), None);
    assert_eq!(s, 202, "{t}");
    let (s, t) = d.call(ev, "POST", "/api/v1/check", Some(&json!({})), None);
    assert_eq!(s, 200, "{t}");
}

/// Every `GET` route's answer, `/metrics`, `/healthz` and the dashboard page of a
/// signed-in session.
fn api_reads(d: &Daemon, ev: &mut Evidence) -> String {
    for p in [
        "/api/v1/status",
        "/api/v1/providers",
        "/api/v1/plans",
        "/api/v1/repositories",
        "/metrics",
        "/healthz?challenge=abc",
    ] {
        d.get(ev, p);
    }
    d.get(ev, "/api/v1/plans/nightly");
    let conns = d.get(ev, "/api/v1/connections");
    for c in conns.as_array().expect("connections") {
        let name = c["name"].as_str().expect("name");
        d.get(ev, &format!("/api/v1/connections/{name}"));
        d.get(ev, &format!("/api/v1/connections/{name}/credentials"));
        d.get(ev, &format!("/api/v1/repositories?connection={name}"));
    }
    for c in CONNECTIONS.iter().chain(&["acme-api"]) {
        d.get(
            ev,
            &format!("/api/v1/snapshots?repository={}&connection={c}", repo_of(c)),
        );
    }
    let jobs = d.get(ev, "/api/v1/jobs?limit=500");
    let jobs = jobs.as_array().expect("jobs");
    assert!(jobs.len() >= 10, "{jobs:?}");
    for j in jobs {
        let id = j["id"].as_u64().expect("id");
        d.get(ev, &format!("/api/v1/jobs/{id}"));
        d.get(ev, &format!("/api/v1/jobs/{id}/results"));
        let (s, t) = d.call(ev, "GET", &format!("/api/v1/jobs/{id}/events"), None, None);
        assert_eq!(s, 200, "{t}");
    }
    let session = d.sign_in(ev);
    let (s, page) = d.call(ev, "GET", "/", None, Some(&session));
    assert_eq!(s, 200, "{page}");
    assert!(page.contains("acme-tok"), "{page}");
    let (s, t) = d.call(ev, "GET", "/api/v1/connections", None, Some(&session));
    assert_eq!(s, 200, "{t}");
    session
}

// ---------------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------------

/// Through the CLI while the daemon serves: a Data Center project credential, a plan
/// with the additional credentials, and a run of it.
fn daemon_cli(rs: &Reposafe, ev: &mut Evidence) {
    let f = file_arg(rs, "ops.tok", DC_PROJECT_TOKEN);
    cli(
        rs,
        ev,
        "daemon add project credential",
        &[
            "connection",
            "credential",
            "add",
            "corp-tok",
            "--project",
            "OPS",
            "--http-access-token-file",
            &f,
        ],
    )
    .ok();
    cli(
        rs,
        ev,
        "daemon plan add",
        &[
            "plan",
            "add",
            "nightly",
            "--connection",
            "acme-tok",
            "--schedule",
            "@daily",
            "--additional-credentials",
            "all",
        ],
    )
    .ok();
    cli(
        rs,
        ev,
        "daemon run plan",
        &["run", "--plan", "nightly", "--json"],
    )
    .ok();
    cli(rs, ev, "daemon plan show", &["plan", "show", "nightly"]).ok();
}

/// The scan saw what it has to see: the debug logs of the CLI and the daemon, the
/// sealed database, the admin token's file, the mirrors and the archive.
fn assert_saw_everything(ev: &Evidence, scanned: usize) {
    let labels = ev.labels();
    for must in [
        "state.redb",
        "api-token",
        "/mirrors/",
        "/archive/",
        "daemon log",
    ] {
        assert!(
            labels.iter().any(|l| l.contains(must)),
            "nothing scanned for {must}: {labels:#?}"
        );
    }
    assert!(scanned > 10, "{labels:#?}");
    let text = |label: &str| -> String {
        ev.items
            .iter()
            .filter(|(l, _)| l.starts_with(label))
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .collect()
    };
    assert!(
        text("daemon log").contains("DEBUG"),
        "the daemon logged at debug"
    );
    assert!(
        text("local backup acme-tok: stderr").contains("DEBUG"),
        "the CLI logged at debug"
    );
}

#[test]
fn no_secret_leaks_into_output_logs_api_answers_or_the_data_dir() {
    scanner_self_check();
    let src = TempDir::new("reposafe-scan-src");
    let bare = make_repo(src.path());
    let (cloud, dc) = servers(&bare);
    let rs = Reposafe::new();
    let out = TempDir::new("reposafe-scan-out");
    let mut ev = Evidence::default();

    add_connections(&rs, &mut ev, &cloud, &dc);
    operate(&rs, &mut ev, "local", out.path());

    let log = rs.files.path().join("serve.log");
    let d = Daemon::start(&rs, &log);
    daemon_cli(&rs, &mut ev);
    operate(&rs, &mut ev, "daemon", out.path());
    api_writes(&d, &mut ev, &cloud, out.path());
    let session = api_reads(&d, &mut ev);
    let token = d.token.clone();
    d.stop();

    let mut secrets = fixed_secrets();
    secrets.push(("admin API token".into(), token));
    secrets.push(("dashboard session".into(), session));
    let daemon_log = std::fs::read(&log).expect("daemon log");
    ev.add(format!("daemon log {}", log.display()), daemon_log);
    let data = rs.data_dir();
    let scanned = ev.files_under(data, &["vault.key"]);
    ev.files_under(out.path(), &[]);
    assert_saw_everything(&ev, scanned);

    let allowed = vec![(
        data.join("api-token").display().to_string(),
        "admin API token".to_string(),
    )];
    let hits = ev.scan(&needles(&secrets, IDENTITIES), &allowed);
    assert!(
        hits.is_empty(),
        "{} secret(s) leaked:\n{}",
        hits.len(),
        hits.join("\n")
    );
}
