//! OAuth 2.0 "Connect" end to end through the real daemon and the Bitbucket Cloud
//! double: `POST /api/v1/oauth/begin` → the double's authorize endpoint (302 with a
//! code, followed by hand) → the daemon's pre-auth `/oauth/callback` → the connection
//! is added and backs up; access tokens are refreshed after they end (a 401), a
//! rotated refresh token survives a restart; wrong and reused states and a denied
//! consent are refused; no consumer secret, code or token appears in an API answer,
//! the daemon's log or a file outside the vault. Also `connection rotate` and
//! `connection edit` through the API.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WORKSPACE: &str = "acme";
const KEY: &str = "consumer-key-7";
const CONSUMER_SECRET: &str = "oauth-consumer-secret-4b7d9e";

/// The daemon, with its log in a file; every answer body is kept to be scanned.
struct Daemon {
    child: Child,
    url: String,
    token: String,
    http: reqwest::blocking::Client,
    answers: Vec<String>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn start(rs: &Reposafe, log: &Path) -> Daemon {
        let _ = std::fs::remove_file(rs.data_dir().join("daemon.json"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let child = rs
            .cmd(&["-vv", "serve", "--listen", "127.0.0.1:0"])
            .env("REPOSAFE_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start serve");
        let (url, token) = wait_for_daemon(rs.data_dir());
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Daemon {
            child,
            url,
            token,
            http,
            answers: Vec::new(),
        }
    }

    /// `method path` with the admin token (none for a full URL); (status, body, location).
    fn call(&mut self, method: &str, path: &str, body: Option<&Value>) -> (u16, String, String) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut rb = if path.starts_with("http") {
            self.http.request(m, path)
        } else {
            self.http
                .request(m, format!("{}{path}", self.url))
                .bearer_auth(&self.token)
        };
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = rb.send().unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = resp.text().expect("body");
        // The daemon's answers (not the double's 302s, which carry the code to the browser).
        if !path.starts_with("http") || path.starts_with(&self.url) {
            self.answers.push(format!("{location}\n{text}"));
        }
        (status, text, location)
    }

    fn json(&mut self, method: &str, path: &str, body: Option<&Value>, want: u16) -> Value {
        let (status, text, _) = self.call(method, path, body);
        assert_eq!(status, want, "{method} {path}: {text}");
        serde_json::from_str(&text).expect("JSON answer")
    }

    /// Starts a Connect flow for connection `name`; the authorize URL.
    fn begin(&mut self, server: &CloudServer, name: &str) -> String {
        let base = server.base_url();
        let body = json!({
            "name": name,
            "provider": "cloud",
            "settings": {"workspace": WORKSPACE, "api-base-url": base, "git-base-url": base},
            "consumer_key": KEY,
            "consumer_secret": CONSUMER_SECRET,
        });
        let started = self.json("POST", "/api/v1/oauth/begin", Some(&body), 200);
        let url = started["authorize_url"].as_str().expect("authorize_url");
        assert!(
            url.starts_with(&format!(
                "{base}/site/oauth2/authorize?client_id={KEY}&response_type=code&state="
            )),
            "{url}"
        );
        url.to_string()
    }

    /// The browser's part: the authorize endpoint's redirect, followed by hand.
    fn consent(&mut self, authorize_url: &str) -> String {
        let (status, text, location) = self.call("GET", authorize_url, None);
        assert_eq!(status, 302, "{text}");
        assert!(
            location.starts_with(&format!("{}/oauth/callback?", self.url)),
            "{location}"
        );
        location
    }

    /// Runs a backup of the connection to its end; the finished job.
    fn backup(&mut self, connection: &str) -> Value {
        let job = self.json(
            "POST",
            "/api/v1/run",
            Some(&json!({"connection": connection})),
            202,
        );
        let id = job["id"].as_u64().expect("job id");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let job = self.json("GET", &format!("/api/v1/jobs/{id}"), None, 200);
            let state = job["state"].as_str().unwrap_or_default().to_string();
            if !["queued", "running"].contains(&state.as_str()) {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id} did not end");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

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

fn grants(server: &CloudServer, kind: &str) -> usize {
    server.oauth_grants().get(kind).copied().unwrap_or(0)
}

fn world() -> (CloudServer, TempDir, Reposafe, TempDir) {
    let server = CloudServer::start();
    let src = TempDir::new("reposafe-oauth-src");
    gitutil::make_workspace_fixture(&server, WORKSPACE, 2, src.path());
    server.grant("acct-1", WORKSPACE);
    (
        server,
        src,
        Reposafe::new(),
        TempDir::new("reposafe-oauth-log"),
    )
}

/// Connect adds a working connection; its access token is refreshed after a 401, and
/// a refresh token the server rotates is resealed, so it works after a restart; no
/// secret shows anywhere but sealed in the vault.
#[test]
fn connect_adds_a_connection_that_backs_up_and_keeps_its_access() {
    let (server, _src, rs, logs) = world();
    let log = logs.path().join("daemon.log");
    let mut d = Daemon::start(&rs, &log);
    server.add_oauth_consumer_with_callback(
        "acct-1",
        KEY,
        CONSUMER_SECRET,
        &format!("{}/oauth/callback", d.url),
        3600,
    );
    server.rotate_refresh_tokens(true);
    let authorize = d.begin(&server, WORKSPACE);
    let callback = d.consent(&authorize);
    let codes: Vec<String> = url_params(&callback, "code");
    // No session: the state is the proof. The page leads on to the connection.
    let (status, page, _) = d.call("GET", &callback, None);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("url=/connections/acme"), "{page}");
    assert_eq!(grants(&server, "authorization_code"), 1);
    let conn = d.json("GET", "/api/v1/connections/acme", None, 200);
    assert_eq!(conn["credential_kind"], "oauth-authorization", "{conn}");
    assert_eq!(conn["credential_identity"], KEY, "{conn}");

    let job = d.backup(WORKSPACE);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["progress"]["snapshots"], 2, "{job}");
    // Every access token ends: the next requests get 401, and a fresh one is fetched.
    let before = grants(&server, "refresh_token");
    server.expire_oauth_access_tokens();
    let job = d.backup(WORKSPACE);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(
        grants(&server, "refresh_token") > before,
        "{:?}",
        server.oauth_grants()
    );
    d.stop();

    // Every refresh rotated the refresh token (the old one stops working): the
    // newest is sealed in the vault, so a restarted daemon still gets access.
    let mut d = Daemon::start(&rs, &log);
    let before = grants(&server, "refresh_token");
    let tested = d.json(
        "POST",
        "/api/v1/connections/acme/test",
        Some(&json!({})),
        200,
    );
    assert_eq!(tested["ok"], true, "{tested}");
    assert_eq!(grants(&server, "refresh_token"), before + 1);
    let answers = d.answers.join("\n");
    d.stop();

    let log_text = std::fs::read_to_string(&log).expect("log");
    let mut secrets = server.oauth_tokens_issued();
    secrets.push(CONSUMER_SECRET.to_string());
    secrets.extend(codes);
    assert!(secrets.len() > 4, "{secrets:?}");
    for s in &secrets {
        assert!(
            !log_text.contains(s.as_str()),
            "a secret is in the daemon's log"
        );
        assert_not_on_disk(rs.data_dir(), s);
    }
    for s in &secrets {
        assert!(
            !answers.contains(s.as_str()),
            "a secret is in an API answer"
        );
    }
}

/// The values of `name` in a URL's query.
fn url_params(url: &str, name: &str) -> Vec<String> {
    url::Url::parse(url)
        .expect("url")
        .query_pairs()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// A wrong state, a used state and a denied consent are refused, naming why; no
/// connection is added by them.
#[test]
fn wrong_used_and_denied_flows_are_refused() {
    let (server, _src, rs, logs) = world();
    let mut d = Daemon::start(&rs, &logs.path().join("daemon.log"));
    server.add_oauth_consumer_with_callback(
        "acct-1",
        KEY,
        CONSUMER_SECRET,
        &format!("{}/oauth/callback", d.url),
        3600,
    );
    // A state never issued (e.g. a forged callback).
    let forged = format!("{}/oauth/callback?state={}&code=abc", d.url, "0".repeat(64));
    let (status, page, _) = d.call("GET", &forged, None);
    assert_eq!(status, 401, "{page}");
    assert!(page.contains("unknown or already used"), "{page}");

    // The right flow once; the same callback again is refused.
    let authorize = d.begin(&server, "first");
    let callback = d.consent(&authorize);
    let (status, page, _) = d.call("GET", &callback, None);
    assert_eq!(status, 200, "{page}");
    let (status, page, _) = d.call("GET", &callback, None);
    assert_eq!(status, 401, "{page}");
    assert!(page.contains("already used"), "{page}");
    assert_eq!(
        grants(&server, "authorization_code"),
        1,
        "the code was not sent twice"
    );

    // The user denies access on the consent page.
    server.set_oauth_consent(false);
    let authorize = d.begin(&server, "denied");
    let callback = d.consent(&authorize);
    assert!(callback.contains("error=access_denied"), "{callback}");
    let (status, page, _) = d.call("GET", &callback, None);
    assert_eq!(status, 422, "{page}");
    assert!(page.contains("access was denied"), "{page}");
    let (status, _, _) = d.call("GET", "/api/v1/connections/denied", None);
    assert_eq!(status, 404);

    // A name in use is refused before the browser is sent anywhere.
    let body = json!({"name": "first", "provider": "cloud", "consumer_key": KEY,
                      "consumer_secret": CONSUMER_SECRET});
    let (status, text, _) = d.call("POST", "/api/v1/oauth/begin", Some(&body));
    assert_eq!(status, 409, "{text}");
    d.stop();
}

/// `connection rotate` replaces the credential (checked first; a bad one changes
/// nothing) and `connection edit` changes the flags; a host setting is refused.
#[test]
fn rotate_and_edit_a_connection() {
    let (server, _src, rs, logs) = world();
    server.add_api_token("acct-1", EMAIL, API_TOKEN);
    server.add_access_token("ws-token", WORKSPACE, "access-token-rotated-1");
    let tok = rs.secret_file("token.txt", API_TOKEN);
    rs.add_cloud(
        &server,
        WORKSPACE,
        &[
            "--api-token-email",
            EMAIL,
            "--api-token-file",
            &tok.display().to_string(),
        ],
    )
    .ok();
    let mut d = Daemon::start(&rs, &logs.path().join("daemon.log"));
    let bad = json!({"credential": {"kind": "access-token", "secret": "not-a-token"}});
    let (status, text, _) = d.call("PUT", "/api/v1/connections/acme/credential", Some(&bad));
    assert_eq!(status, 422, "{text}");
    let conn = d.json("GET", "/api/v1/connections/acme", None, 200);
    assert_eq!(conn["credential_kind"], "api-token", "unchanged: {conn}");
    let good = json!({"credential": {"kind": "access-token", "secret": "access-token-rotated-1"}});
    let rotated = d.json(
        "PUT",
        "/api/v1/connections/acme/credential",
        Some(&good),
        200,
    );
    assert_eq!(
        rotated["connection"]["credential_kind"], "access-token",
        "{rotated}"
    );
    server.revoke_token(API_TOKEN);
    let job = d.backup(WORKSPACE);
    assert_eq!(
        job["state"], "succeeded",
        "the rotated credential works: {job}"
    );

    let edited = d.json(
        "PUT",
        "/api/v1/connections/acme",
        Some(&json!({"read_only": true, "rate_limit": "60/min"})),
        200,
    );
    assert_eq!(edited["read_only"], true, "{edited}");
    assert_eq!(edited["rate_limit"], "60/60s", "{edited}");
    let both = json!({"allow_restore": true});
    let (status, text, _) = d.call("PUT", "/api/v1/connections/acme", Some(&both));
    assert_eq!(status, 400, "{text}");
    let host = json!({"settings": {"api-base-url": "https://evil.example"}});
    let (status, text, _) = d.call("PUT", "/api/v1/connections/acme", Some(&host));
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("fixed when a") && text.contains("api-base-url"),
        "{text}"
    );
    let cleared = d.json(
        "PUT",
        "/api/v1/connections/acme",
        Some(&json!({"read_only": false, "rate_limit": "none"})),
        200,
    );
    assert!(cleared["rate_limit"].is_null(), "{cleared}");
    d.stop();

    // The CLI runs the same through `LocalService` when no daemon runs.
    let run = rs
        .run(&["connection", "edit", "acme", "--allow-restore", "true"])
        .ok();
    assert!(run.stdout.contains("allow-restore=true"), "{}", run.stdout);
    let tok = rs.secret_file("access.txt", "access-token-rotated-1");
    let run = rs
        .run(&[
            "connection",
            "rotate",
            "acme",
            "--access-token-file",
            &tok.display().to_string(),
        ])
        .ok();
    assert!(
        run.stdout
            .contains("now uses its new access-token credential"),
        "{}",
        run.stdout
    );
}
