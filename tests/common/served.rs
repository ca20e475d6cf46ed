//! A `reposafe serve` of a test's data dir, with a small HTTP client for its API
//! (bearer token, JSON) and for requests with their own headers (webhooks, forms).

use super::{gitutil, wait_for_daemon, CloudServer, Reposafe, TempDir, API_TOKEN, EMAIL};
use reqwest::blocking::Client;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub struct Served {
    child: Child,
    pub url: String,
    pub token: String,
    pub http: Client,
    /// The daemon's log (stderr).
    pub log: PathBuf,
}

/// An answer: status, headers and body (JSON when it parses, else a string).
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Served {
    /// Starts the daemon on a free port with `extra` arguments and waits for it.
    pub fn start(rs: &Reposafe, extra: &[&str]) -> Served {
        let _ = std::fs::remove_file(rs.data_dir().join("daemon.json"));
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend(extra);
        let log = rs.files.path().join("serve.log");
        let file = std::fs::File::create(&log).expect("log file");
        let child = rs
            .cmd(&args)
            .env("REPOSAFE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start serve");
        let (url, token) = wait_for_daemon(rs.data_dir());
        let http = Client::builder()
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Served {
            child,
            url,
            token,
            http,
            log,
        }
    }

    /// A request with exactly these headers (no token unless given).
    pub fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut rb = self.http.request(m, format!("{}{path}", self.url));
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let resp = rb.body(body.to_vec()).send().expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().expect("body");
        Answer {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }

    /// An API call with the admin token (and a JSON body).
    pub fn api(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let bearer = format!("Bearer {}", self.token);
        let mut headers = vec![("Authorization", bearer.as_str())];
        let json = body.map(|b| b.to_string()).unwrap_or_default();
        if !json.is_empty() {
            headers.push(("Content-Type", "application/json"));
        }
        self.send(method, path, &headers, json.as_bytes())
    }

    /// An API call that must succeed; its JSON answer.
    pub fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let a = self.api(method, path, body);
        assert!(
            (200..300).contains(&a.status),
            "{method} {path}: {} {}",
            a.status,
            a.body
        );
        a.body
    }

    /// Waits until job `id` has ended; its record.
    pub fn wait_job(&self, id: u64, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let j = self.ok("GET", &format!("/api/v1/jobs/{id}"), None);
            if !["queued", "running"].contains(&j["state"].as_str().unwrap_or("")) {
                return j;
            }
            assert!(Instant::now() < deadline, "job {id} did not finish: {j}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Cloud workspace `ws` of `repos` repositories on a test server, readable with
/// the test API token, and a data dir with a connection to it (added by the CLI).
pub fn cloud_workspace(ws: &str, repos: usize) -> (CloudServer, TempDir, Reposafe) {
    let server = CloudServer::start();
    let src = TempDir::new("reposafe-src");
    gitutil::make_workspace_fixture(&server, ws, repos, src.path());
    server.add_api_token("acct-1", EMAIL, API_TOKEN);
    server.grant("acct-1", ws);
    let rs = Reposafe::new();
    let tok = rs.secret_file("api.tok", API_TOKEN);
    let tok = tok.display().to_string();
    let args = ["--api-token-email", EMAIL, "--api-token-file", &tok];
    rs.add_cloud(&server, ws, &args).ok();
    (server, src, rs)
}
