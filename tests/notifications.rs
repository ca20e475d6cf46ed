//! Notifications end to end with the real binary: a real SMTP server process (Python's
//! `aiosmtpd`, delivering into a Maildir; once plain, once with STARTTLS and a
//! certificate of the testkit CA) and a local HTTP receiver of the webhook. A job that
//! ends partial in the daemon is mailed and posted (failed repository, reason, link);
//! "send test" reports per channel, a wrong SMTP port is named as host:port; the
//! settings come from the config file until set, and no secret is shown or stored in
//! clear.

mod common;

use common::*;
use reposafe_testkit::TestCa;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WS: &str = "acme";
const HOOK_TOKEN: &str = "T0001/B0002/hooksecret4f9a";
const SMTP_PASSWORD: &str = "smtp-pass-8c1e77";

/// `python3 -m aiosmtpd` on a free port, delivering into a Maildir; killed on drop.
struct SmtpServer {
    child: Child,
    port: u16,
    maildir: TempDir,
}

impl SmtpServer {
    /// With `tls`, the server offers (and requires) STARTTLS with a certificate for
    /// 127.0.0.1 signed by that CA.
    fn start(tls: Option<&TestCa>) -> SmtpServer {
        let maildir = TempDir::new("maildir");
        let port = reposafe_testkit::ports::free_port();
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")]);
        if let Some(ca) = tls {
            let (cert, key) = ca.server_pem(&["127.0.0.1"]);
            let (c, k) = (
                maildir.path().join("cert.pem"),
                maildir.path().join("key.pem"),
            );
            std::fs::write(&c, cert).expect("cert");
            std::fs::write(&k, key).expect("key");
            cmd.arg("--tlscert").arg(&c).arg("--tlskey").arg(&k);
        }
        let box_dir = maildir.path().join("box");
        cmd.args(["-c", "aiosmtpd.handlers.Mailbox"]).arg(&box_dir);
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m aiosmtpd (pip install aiosmtpd)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "aiosmtpd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        SmtpServer {
            child,
            port,
            maildir,
        }
    }

    /// The messages delivered so far.
    fn messages(&self) -> Vec<String> {
        let mut out: Vec<String> = files_under(&self.maildir.path().join("box").join("new"))
            .into_iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .collect();
        out.sort();
        out
    }

    fn wait_messages(&self, n: usize) -> Vec<String> {
        wait_for(
            || Some(self.messages()).filter(|m| m.len() >= n),
            "the mail",
        )
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for<T>(mut f: impl FnMut() -> Option<T>, what: &str) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} did not arrive");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An HTTP server that records every request's path and body and answers 200.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<(String, String)>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!(
            "http://{}/services/{HOOK_TOKEN}",
            l.local_addr().expect("addr")
        );
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                if let Some(req) = read_request(conn) {
                    sink.lock().expect("lock").push(req);
                }
            }
        });
        Receiver { url, got }
    }

    fn bodies(&self) -> Vec<(String, String)> {
        self.got.lock().expect("lock").clone()
    }

    fn wait(&self, n: usize) -> Vec<(String, String)> {
        wait_for(
            || Some(self.bodies()).filter(|b| b.len() >= n),
            "the webhook",
        )
    }
}

/// Reads one request (`Content-Length` body), answers 200; returns (path, body).
fn read_request(mut conn: TcpStream) -> Option<(String, String)> {
    let mut r = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    Some((path, String::from_utf8_lossy(&body).into_owned()))
}

fn setup(n: usize) -> (CloudServer, TempDir, Vec<(String, PathBuf)>, Reposafe) {
    let server = CloudServer::start();
    let dir = TempDir::new("reposafe-src");
    let repos = gitutil::make_workspace_fixture(&server, WS, n, dir.path());
    server.add_api_token("acct-1", EMAIL, API_TOKEN);
    server.grant("acct-1", WS);
    let rs = Reposafe::new();
    let token = rs.secret_file("token", API_TOKEN);
    let token = token.display().to_string();
    rs.add_cloud(
        &server,
        WS,
        &["--api-token-email", EMAIL, "--api-token-file", &token],
    )
    .ok();
    (server, dir, repos, rs)
}

/// `notifications set` with the webhook (its URL from a file), the SMTP server on
/// 127.0.0.1:`port`, a sender and a recipient, and `extra`.
fn set_args(rs: &Reposafe, hook: &Receiver, port: &str, extra: &[&str]) -> Vec<String> {
    let hook_file = rs.secret_file("hook", &hook.url).display().to_string();
    let mut args = vec![
        "notifications",
        "set",
        "--webhook-url-file",
        &hook_file,
        "--smtp-host",
        "127.0.0.1",
        "--smtp-port",
        port,
        "--smtp-from",
        "reposafe <backup@example.com>",
        "--smtp-to",
        "ops@example.com",
    ];
    args.extend_from_slice(extra);
    args.into_iter().map(str::to_string).collect()
}

/// A plain SMTP server and a webhook receiver, set as `rs`'s channels with `extra`.
fn channels(rs: &Reposafe, extra: &[&str]) -> (SmtpServer, Receiver) {
    let smtp = SmtpServer::start(None);
    let hook = Receiver::start();
    let port = smtp.port.to_string();
    let mut args = vec!["--smtp-security", "none"];
    args.extend_from_slice(extra);
    run(rs, &set_args(rs, &hook, &port, &args)).ok();
    (smtp, hook)
}

fn run(rs: &Reposafe, args: &[String]) -> Run {
    rs.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_partial_job_is_mailed_and_posted_with_the_failed_repository_and_a_link() {
    let (_server, _src, repos, rs) = setup(2);
    let smtp = SmtpServer::start(None);
    let hook = Receiver::start();
    let daemon = Daemon(start_daemon(&rs));
    let (url, _) = wait_for_daemon(rs.data_dir());
    let port = smtp.port.to_string();
    let extra = ["--smtp-security", "none", "--on-partial", "true"];
    let shown = run(&rs, &set_args(&rs, &hook, &port, &extra)).ok();
    assert!(shown.stdout.contains("source: stored"), "{}", shown.stdout);
    let view = rs.run(&["notifications", "show", "--json"]).ok().stdout;
    assert!(
        !view.contains("hooksecret"),
        "the webhook's token is shown: {view}"
    );

    // A job that succeeds sends nothing.
    rs.run(&["run", "--connection", WS]).ok();
    // One repository goes away between listing and fetch: the job ends partial.
    let gone = &repos[1];
    std::fs::rename(&gone.1, gone.1.with_extension("moved")).expect("move");
    let run = rs.run(&["run", "--connection", WS]);
    assert!(run.all().contains("partial"), "{}", run.all());
    let mails = smtp.wait_messages(1);
    let posts = hook.wait(1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(smtp.messages().len(), 1, "only the partial job is mailed");
    assert_eq!(hook.bodies().len(), 1, "only the partial job is posted");

    let jobs: serde_json::Value =
        serde_json::from_str(&rs.run(&["jobs", "list", "--json"]).ok().stdout).expect("json");
    let id = jobs[0]["id"].as_u64().expect("id");
    let mail = &mails[0];
    assert!(
        mail.contains(&format!("Subject: reposafe: job {id} partial")),
        "{mail}"
    );
    assert!(mail.contains("To: ops@example.com"), "{mail}");
    let repo = format!("{WS}/{}", gone.0);
    assert!(
        mail.contains(&repo),
        "the failed repository is named: {mail}"
    );
    assert!(mail.contains(&format!("{url}/jobs/{id}")), "{mail}");

    let (path, body) = &posts[0];
    assert_eq!(path, &format!("/services/{HOOK_TOKEN}"));
    let v: serde_json::Value = serde_json::from_str(body).expect("webhook JSON");
    let text = v["text"].as_str().expect("Slack-compatible {\"text\"}");
    assert!(text.contains(&format!("job {id}")), "{text}");
    assert!(text.contains("partial"), "{text}");
    assert!(text.contains(&repo), "{text}");
    assert!(text.contains(&format!("{url}/jobs/{id}")), "{text}");

    // The outcome is kept and shown.
    let shown = rs.run(&["notifications"]).ok().stdout;
    assert!(
        shown.contains(&format!(
            "last delivery: job {id} partial (email ok, webhook ok)"
        )),
        "{shown}"
    );
    assert_not_on_disk(rs.data_dir(), "hooksecret4f9a");

    // The dashboard's settings page: the settings in force (the webhook only as its
    // origin), "send test" answering per channel, a save that keeps the secrets.
    let (_, token) = wait_for_daemon(rs.data_dir());
    let settings = page(&url, &token, "/settings", None);
    assert!(settings.contains("id=\"notifications\""), "{settings}");
    assert!(settings.contains("id=\"last-delivery\""), "{settings}");
    assert!(!settings.contains("hooksecret"), "{settings}");
    let tested = page(&url, &token, "/settings/notifications/test", Some(&[]));
    assert!(tested.contains("id=\"test-result\""), "{tested}");
    assert!(tested.contains("<b>email</b>: sent"), "{tested}");
    assert!(tested.contains("<b>webhook</b>: sent"), "{tested}");
    assert_eq!(smtp.wait_messages(2).len(), 2);
    assert_eq!(hook.wait(2).len(), 2);
    let masked = format!("http://{}/…", hook.url.split('/').nth(2).expect("host"));
    let saved = page(
        &url,
        &token,
        "/settings/notifications",
        Some(&[
            ("webhook_url", masked.as_str()),
            ("smtp_host", "127.0.0.1"),
            ("smtp_port", port.as_str()),
            ("smtp_security", "none"),
            ("smtp_from", "backup@example.com"),
            ("smtp_to", "ops@example.com\nlead@example.com"),
            ("daily_digest", "06:45"),
        ]),
    );
    assert!(saved.contains("Notification settings saved"), "{saved}");
    let shown = rs.run(&["notifications"]).ok().stdout;
    assert!(
        shown.contains("to ops@example.com, lead@example.com"),
        "{shown}"
    );
    assert!(shown.contains("daily digest: 06:45"), "{shown}");
    assert!(shown.contains("partial jobs: no"), "{shown}");
    rs.run(&["notifications", "test"]).ok();
    assert_eq!(
        hook.wait(3)[2].0,
        format!("/services/{HOOK_TOKEN}"),
        "the URL was kept"
    );
    drop(daemon);
}

/// A dashboard page as an admin-token client sees it: a form POST (urlencoded) or a
/// GET, a redirect followed to its page. (Sessions and CSRF: tests/dashboard_pages.rs.)
fn page(url: &str, token: &str, path: &str, form: Option<&[(&str, &str)]>) -> String {
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let rb = match form {
        Some(fields) => {
            let mut body = url::form_urlencoded::Serializer::new(String::new());
            http.post(format!("{url}{path}"))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body.extend_pairs(fields).finish())
        }
        None => http.get(format!("{url}{path}")),
    };
    let resp = rb.bearer_auth(token).send().expect("request");
    match resp.headers().get("location").and_then(|l| l.to_str().ok()) {
        Some(to) => page(url, token, to, None),
        None => resp.text().expect("page"),
    }
}

#[test]
fn send_test_reports_each_channel_over_starttls_and_names_a_wrong_port() {
    let (_server, _src, _repos, rs) = setup(1);
    let ca = TestCa::new("reposafe test mail CA");
    let smtp = SmtpServer::start(Some(&ca));
    let hook = Receiver::start();
    let ca_file = rs.secret_file("ca.pem", &ca.ca_pem());
    let port = smtp.port.to_string();

    // Until set, the config file's [notifications] applies.
    let config = rs.files.path().join("reposafe.toml");
    let toml = format!(
        "[notifications]\nwebhook_url = \"{}\"\non_partial = true\n",
        hook.url
    );
    std::fs::write(&config, toml).expect("config");
    let config = config.display().to_string();
    let shown = rs.run(&["--config", &config, "notifications"]).ok().stdout;
    assert!(shown.contains("source: the config file"), "{shown}");
    assert!(!shown.contains("hooksecret"), "{shown}");
    let test = rs
        .run(&["--config", &config, "notifications", "test"])
        .ok()
        .stdout;
    assert_eq!(test.trim(), "webhook: sent");
    assert_eq!(hook.wait(1).len(), 1);

    let pw = rs.secret_file("smtp-password", SMTP_PASSWORD);
    let (ca_file, pw) = (ca_file.display().to_string(), pw.display().to_string());
    let extra = ["--smtp-ca-bundle", &ca_file, "--smtp-username", "backup"];
    let mut set = set_args(&rs, &hook, &port, &extra);
    set.extend(["--smtp-password-file".to_string(), pw]);
    run(&rs, &set).ok();
    let shown = rs.run(&["notifications"]).ok();
    assert!(shown.stdout.contains("(starttls)"), "{}", shown.stdout);
    assert!(shown.stdout.contains("password set"), "{}", shown.stdout);
    assert!(!shown.all().contains(SMTP_PASSWORD));
    assert_not_on_disk(rs.data_dir(), SMTP_PASSWORD);
    // This server offers no AUTH: send without a user.
    rs.run(&["notifications", "set", "--smtp-username", ""])
        .ok();

    let test = rs.run(&["notifications", "test"]).ok().stdout;
    assert_eq!(test.trim(), "email: sent\nwebhook: sent");
    let mail = &smtp.wait_messages(1)[0];
    assert!(
        mail.contains("Subject: reposafe test notification"),
        "{mail}"
    );
    assert_eq!(hook.wait(2).len(), 2);

    // A port nothing listens on: the e-mail channel fails naming host:port, the
    // webhook still goes out, and the command says so with exit code 1.
    let closed = reposafe_testkit::ports::free_port().to_string();
    rs.run(&["notifications", "set", "--smtp-port", &closed])
        .ok();
    let test = rs.run(&["notifications", "test"]);
    assert_eq!(test.code, 1, "{}", test.all());
    let want = format!("email: failed: e-mail via SMTP server 127.0.0.1:{closed}: ");
    assert!(test.stdout.contains(&want), "{}", test.stdout);
    assert!(test.stdout.contains("webhook: sent"), "{}", test.stdout);
    assert_eq!(hook.wait(3).len(), 3);
    assert!(!test.all().contains(SMTP_PASSWORD));

    // A wrong field is named.
    let bad = rs.run(&["notifications", "set", "--daily-digest", "7h"]);
    assert_ne!(bad.code, 0);
    assert!(bad.all().contains("daily_digest"), "{}", bad.all());
}

/// A disk running low is mailed and posted once, naming the disk and what it has free,
/// with a link to the overview; a restarted daemon does not say it again while the
/// disk stays low (the threshold forced to 100% so that this machine's disk is low).
#[test]
fn a_disk_running_low_is_mailed_and_posted_once() {
    let rs = Reposafe::new();
    let (smtp, hook) = channels(&rs, &[]);
    let log = rs.data_dir().join("daemon-test.log");
    let env = [("REPOSAFE_WARN_FREE_BELOW_PERCENT", "100")];
    let (daemon, url, _) = start_logged_daemon_with(&rs, &log, &env);
    let daemon = Daemon(daemon);
    let mails = smtp.wait_messages(1);
    let posts = hook.wait(1);
    let dir = std::path::absolute(rs.data_dir()).expect("absolute");
    let disk = format!("the disk of the data dir ({})", dir.display());
    // Its lines as sent, quoted-printable's soft line breaks undone.
    let mail = mails[0].replace("=\r\n", "").replace("=\n", "");
    assert!(mail.contains("Subject: reposafe: disk space low"), "{mail}");
    assert!(mail.contains(&disk) && mail.contains(" free of "), "{mail}");
    assert!(mail.contains(&format!("Overview: {url}/")), "{mail}");
    let v: serde_json::Value = serde_json::from_str(&posts[0].1).expect("webhook JSON");
    let text = v["text"].as_str().expect("text");
    assert!(text.contains(&disk), "{text}");
    drop(daemon);
    let (again, _, _) = start_logged_daemon_with(&rs, &log, &env);
    let again = Daemon(again);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        smtp.messages().len(),
        1,
        "said once while the disk stays low"
    );
    assert_eq!(hook.bodies().len(), 1);
    drop(again);
    let said = std::fs::read_to_string(&log).expect("log");
    assert!(!said.contains("low disk space alert:"), "{said}");
}

/// The daily digest says again, every day until it is fixed, what the overview warns
/// of: here a disk below the threshold and a provider plugin that did not load. (The
/// digest is set to the daemon's current minute, so it is due at once.)
#[test]
fn the_daily_digest_repeats_what_needs_attention() {
    let rs = Reposafe::new();
    let now = time::OffsetDateTime::now_utc();
    let at = format!("{:02}:{:02}", now.hour(), now.minute());
    let (smtp, hook) = channels(&rs, &["--daily-digest", &at]);
    let plugins = rs.data_dir().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    std::fs::write(plugins.join("broken.wasm"), b"not a component").expect("plugin");
    let log = rs.data_dir().join("daemon-test.log");
    let env = [("REPOSAFE_WARN_FREE_BELOW_PERCENT", "100"), ("TZ", "UTC")];
    let (daemon, url, _) = start_logged_daemon_with(&rs, &log, &env);
    let daemon = Daemon(daemon);
    // The low-space alert and the digest, in either order.
    let mails = smtp.wait_messages(2);
    let mails: Vec<String> = mails
        .iter()
        .map(|m| m.replace("=\r\n", "").replace("=\n", ""))
        .collect();
    let digest = mails
        .iter()
        .find(|m| m.contains("Subject: reposafe daily digest"))
        .unwrap_or_else(|| panic!("a digest among {mails:#?}"));
    assert!(digest.contains("; 2 to act on"), "{digest}");
    let dir = std::path::absolute(rs.data_dir()).expect("absolute");
    let disk = format!("- the disk of the data dir ({})", dir.display());
    assert!(digest.contains("To act on now:"), "{digest}");
    assert!(digest.contains(&disk), "{digest}");
    assert!(
        digest.contains("- a provider plugin did not load") && digest.contains("broken.wasm"),
        "{digest}"
    );
    assert!(digest.contains(&format!("Overview: {url}/")), "{digest}");
    let posts = hook.wait(2);
    assert!(
        posts
            .iter()
            .any(|(_, body)| body.contains("To act on now:")),
        "{posts:?}"
    );
    drop(daemon);
}
