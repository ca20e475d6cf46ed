//! Push-triggered backups through the real daemon: Bitbucket's webhooks signed with
//! the connection's secret (`X-Hub-Signature: sha256=<HMAC of the raw body>`) queue a
//! backup of the pushed repository after the debounce delay — one for a burst;
//! missing or bad signatures are refused (401) and queue nothing; unknown
//! connections 404; pings answered; floods rate limited (429 + Retry-After); Data
//! Center's `repo:refs_changed` as well as Cloud's `repo:push`. The daemon registers
//! its webhook in Bitbucket itself (Cloud workspace hooks, DC project webhooks) when
//! the credential may, names the missing scope or permission when it may not, and
//! the doubles' own signed deliveries then queue backups.

mod common;

use common::served::{cloud_workspace, Answer, Served};
use common::*;
use hmac::{Hmac, Mac};
use reposafe_testkit::gitutil::WorkRepo;
use reposafe_testkit::{DcOptions, DcServer};
use serde_json::{json, Value};
use sha2::Sha256;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const WS: &str = "acme";

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Bitbucket Cloud's `repo:push` body (the parts a receiver reads, as Cloud sends them).
fn cloud_push(full_name: &str) -> Vec<u8> {
    let (ws, slug) = full_name.split_once('/').expect("ws/slug");
    json!({
        "push": {"changes": [{"new": {"type": "branch", "name": "main"}, "created": false}]},
        "actor": {"type": "user", "display_name": "Jo"},
        "repository": {"type": "repository", "full_name": full_name, "name": slug,
                        "workspace": {"slug": ws, "type": "workspace"}},
    })
    .to_string()
    .into_bytes()
}

/// Posts a webhook body with the event key and (when given) a signature.
fn hook(d: &Served, connection: &str, event: &str, body: &[u8], sig: Option<&str>) -> Answer {
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("X-Event-Key", event),
        ("X-Request-UUID", "0b3e0c6e-2d4f-4bb3-9c2a-2a5e3d1f0c11"),
    ];
    if let Some(s) = sig {
        headers.push(("X-Hub-Signature", s));
    }
    d.send("POST", &format!("/hooks/{connection}"), &headers, body)
}

fn jobs(d: &Served) -> Vec<Value> {
    d.ok("GET", "/api/v1/jobs", None)
        .as_array()
        .expect("jobs")
        .clone()
}

/// Waits (15 s at most) until more than `before` jobs are listed; the newest one.
fn next_job(d: &Served, before: usize, what: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let all = jobs(d);
        if all.len() > before {
            return all[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "{what} queued no backup: {all:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A push-triggered backup of `repo` alone on the Cloud connection, run to success.
fn push_backup_succeeds(d: &Served, job: &Value, repo: &str) {
    assert_eq!(job["trigger"], "webhook");
    assert_eq!(
        job["kind"]["targets"],
        json!([{ "connection": WS, "only": [repo] }])
    );
    let done = d.wait_job(job["id"].as_u64().expect("id"), Duration::from_secs(60));
    assert_eq!(done["state"], "succeeded", "{done}");
}

fn actions(d: &Served) -> Vec<(String, String, String)> {
    d.ok("GET", "/api/v1/audit?limit=1000", None)
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            let actor = format!("{} {}", e["actor"]["kind"], e["actor"]["name"]);
            let field = |k: &str| e[k].as_str().unwrap_or("").to_string();
            (actor.replace('"', ""), field("action"), field("object"))
        })
        .collect()
}

/// A Cloud workspace of two repositories, a connection to it (added by the CLI), and
/// the daemon with a one-second debounce delay.
fn cloud_daemon() -> (CloudServer, TempDir, Reposafe, Served) {
    let (server, src, rs) = cloud_workspace(WS, 2);
    let d = Served::start(&rs, &["--hook-delay", "1"]);
    (server, src, rs, d)
}

fn first_repo(d: &Served) -> String {
    // The repositories are known once the connection was listed: back up once.
    let job = d.ok("POST", "/api/v1/run", Some(json!({ "connection": WS })));
    let done = d.wait_job(job["id"].as_u64().expect("id"), Duration::from_secs(60));
    assert_eq!(done["state"], "succeeded", "{done}");
    let repos = d.ok("GET", "/api/v1/repositories", None);
    repos[0]["full_name"]
        .as_str()
        .expect("a repository")
        .to_string()
}

#[test]
fn a_burst_of_signed_pushes_queues_exactly_one_backup_of_that_repository() {
    let (_server, _src, rs, d) = cloud_daemon();
    let repo = first_repo(&d);
    let info = d.ok("GET", &format!("/api/v1/connections/{WS}/webhook"), None);
    assert_eq!(info["path"], format!("/hooks/{WS}"));
    assert_eq!(info["delay_secs"], 1);
    let secret = info["secret"].as_str().expect("secret").to_string();
    assert_eq!(secret.len(), 64, "32 random bytes as hex");
    // The same secret on every ask; the CLI (through the daemon) prints URL and secret.
    let again = d.ok("GET", &format!("/api/v1/connections/{WS}/webhook"), None);
    assert_eq!(again["secret"], secret.as_str());
    let cli = rs.run(&["connection", "webhook", WS]).ok();
    assert!(
        cli.stdout.contains(&format!("url: {}/hooks/{WS}\n", d.url)),
        "{}",
        cli.stdout
    );
    assert!(
        cli.stdout.contains(&format!("secret: {secret}\n")),
        "{}",
        cli.stdout
    );
    let before = jobs(&d).len();

    // Bitbucket Cloud writes `full_name` in its own case; the backup uses the known name.
    let body = cloud_push(&repo.to_uppercase());
    let sig = sign(&secret, &body);
    for _ in 0..5 {
        let a = hook(&d, WS, "repo:push", &body, Some(&sig));
        assert_eq!(a.status, 202, "{}", a.body);
        assert_eq!(a.body["queued"], repo.as_str());
        assert_eq!(a.body["after_secs"], 1);
        std::thread::sleep(Duration::from_millis(150));
    }
    // Nothing is queued until the delay after the last push has passed.
    assert_eq!(jobs(&d).len(), before, "queued before the debounce delay");
    next_job(&d, before, "the pushes");
    std::thread::sleep(Duration::from_millis(2500));
    let all = jobs(&d);
    assert_eq!(all.len(), before + 1, "one backup for the burst: {all:#?}");
    let job = &all[0];
    push_backup_succeeds(&d, job, &repo);

    let log = actions(&d);
    let accepted = log
        .iter()
        .filter(|(_, a, _)| a == "webhook.accepted")
        .count();
    assert_eq!(accepted, 5, "{log:?}");
    let hook_actor = format!("webhook {WS}");
    let id = format!("job {}", job["id"]);
    assert!(
        log.contains(&(hook_actor, "run.submit".into(), id)),
        "{log:?}"
    );
    assert!(
        !d.log_text().contains(&secret),
        "the secret appeared in the log"
    );
}

/// Asks the daemon to register the connection's webhook in Bitbucket at its own URL.
fn register(d: &Served, connection: &str) -> Answer {
    let path = format!("/api/v1/connections/{connection}/webhook/register");
    d.api("POST", &path, Some(json!({ "url": d.url })))
}

#[test]
fn the_daemon_registers_its_webhook_in_bitbucket_and_the_next_push_is_backed_up() {
    let (server, _src, rs, d) = cloud_daemon();
    let repo = first_repo(&d);
    let hook_url = format!("{}/hooks/{WS}", d.url);

    // A credential without the webhook scope: a clear error naming it, nothing added.
    server.restrict_scopes("acct-1", &["account", "repository", "pullrequest", "issue"]);
    let a = register(&d, WS);
    assert!(a.status >= 400, "{} {}", a.status, a.body);
    let msg = a.body["error"].as_str().unwrap_or("");
    assert!(
        msg.contains("`webhook` scope") && msg.contains("write:webhook:bitbucket"),
        "{msg}"
    );
    assert!(server.workspace_hooks(WS).is_empty());

    // With the scope: one webhook on the workspace, for pushes, with the secret set.
    let scopes = ["account", "repository", "pullrequest", "issue", "webhook"];
    server.restrict_scopes("acct-1", &scopes);
    let a = register(&d, WS);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["url"], hook_url.as_str());
    assert_eq!(a.body["registered"][0]["target"], format!("workspace {WS}"));
    assert_eq!(a.body["registered"][0]["updated"], false);
    assert_eq!(a.body["failed"], json!([]));
    let hooks = server.workspace_hooks(WS);
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    let (uuid, url, events, secret_set) = &hooks[0];
    assert_eq!(
        (url, events, *secret_set),
        (&hook_url, &vec!["repo:push".to_string()], true)
    );
    assert_eq!(a.body["registered"][0]["id"], uuid.as_str());

    // Again, from the CLI (through the daemon): the same webhook is updated, not doubled.
    let cli = rs
        .run(&["connection", "webhook", WS, "--register", "--url", &d.url])
        .ok();
    assert!(
        cli.stdout
            .contains(&format!("updated: webhook {uuid} on workspace {WS}")),
        "{}",
        cli.stdout
    );
    assert!(cli.stdout.contains("loopback address"), "{}", cli.stdout);
    assert_eq!(server.workspace_hooks(WS).len(), 1);

    // Bitbucket signs its delivery with the secret it was given — the real one, not the
    // placeholder the provider saw: the daemon accepts it and backs the repository up.
    let before = jobs(&d).len();
    let statuses = server.deliver_push(&repo);
    assert_eq!(statuses, [202]);
    let job = next_job(&d, before, "the delivered push");
    push_backup_succeeds(&d, &job, &repo);
    let log = actions(&d);
    let registered = log
        .iter()
        .filter(|(_, a, _)| a == "webhook.register")
        .count();
    assert_eq!(registered, 2, "{log:?}");

    // A read-only connection never writes to Bitbucket: refused before any request.
    rs.run(&["connection", "edit", WS, "--read-only", "true"])
        .ok();
    server.clear_log();
    let a = register(&d, WS);
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(
        a.body["error"].as_str().unwrap_or("").contains("read-only"),
        "{}",
        a.body
    );
    assert!(
        server.request_log().is_empty(),
        "{:?}",
        server.request_log().len()
    );

    let secret = d.ok("GET", &format!("/api/v1/connections/{WS}/webhook"), None)["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    assert!(
        !d.log_text().contains(&secret),
        "the secret appeared in the log"
    );
}

#[test]
fn unsigned_or_badly_signed_pushes_are_refused_and_queue_nothing() {
    let (_server, _src, _rs, d) = cloud_daemon();
    let body = cloud_push(&format!("{WS}/repo-0"));
    // Before any secret exists every push is refused.
    let a = hook(&d, WS, "repo:push", &body, Some(&sign("guess", &body)));
    assert_eq!(a.status, 401, "{}", a.body);
    let info = d.ok("GET", &format!("/api/v1/connections/{WS}/webhook"), None);
    let secret = info["secret"].as_str().expect("secret").to_string();

    let other = cloud_push(&format!("{WS}/repo-1"));
    let refused = [
        (None, "no X-Hub-Signature"),
        (Some(sign("not-the-secret", &body)), "does not match"),
        (Some(sign(&secret, &other)), "does not match"), // another body's signature
        (
            Some(sign(&secret, &body).replace("sha256=", "sha1=")),
            "sha256=",
        ),
        (Some("sha256=zz".to_string()), "sha256="),
    ];
    for (sig, why) in &refused {
        let a = hook(&d, WS, "repo:push", &body, sig.as_deref());
        assert_eq!(a.status, 401, "{why}: {}", a.body);
        let msg = a.body["error"].as_str().unwrap_or("");
        assert!(msg.contains(why), "{msg}");
        assert!(!msg.contains(&secret));
    }
    // An unknown connection is not found (whatever the signature).
    let a = hook(&d, "nope", "repo:push", &body, Some(&sign(&secret, &body)));
    assert_eq!(a.status, 404, "{}", a.body);

    // A rotated secret: the old one is refused, the new one accepted.
    let rotated = d.ok(
        "POST",
        &format!("/api/v1/connections/{WS}/webhook/rotate"),
        None,
    );
    let new = rotated["secret"].as_str().expect("secret");
    assert_ne!(new, secret);
    let a = hook(&d, WS, "repo:push", &body, Some(&sign(&secret, &body)));
    assert_eq!(a.status, 401, "{}", a.body);

    std::thread::sleep(Duration::from_millis(2000));
    assert!(
        jobs(&d).is_empty(),
        "a refused push queued a job: {:?}",
        jobs(&d)
    );
    let log = actions(&d);
    let refusals = log
        .iter()
        .filter(|(_, a, _)| a == "webhook.refused")
        .count();
    assert_eq!(refusals, 1 + refused.len() + 1, "{log:?}");
    let text = d.log_text();
    assert!(
        text.contains("webhook for connection acme refused"),
        "{text}"
    );
    assert!(!text.contains(&secret) && !text.contains(new));
    let audit = d.ok("GET", "/api/v1/audit?limit=1000", None).to_string();
    assert!(!audit.contains(&secret) && !audit.contains(new));
}

#[test]
fn pings_other_events_and_floods() {
    let (_server, _src, _rs, d) = cloud_daemon();
    let info = d.ok("GET", &format!("/api/v1/connections/{WS}/webhook"), None);
    let secret = info["secret"].as_str().expect("secret");
    let ping = br#"{"test": true}"#;
    let a = hook(&d, WS, "diagnostics:ping", ping, Some(&sign(secret, ping)));
    assert_eq!(a.status, 200, "{}", a.body);
    let pr = cloud_push(&format!("{WS}/repo-0"));
    let a = hook(&d, WS, "pullrequest:created", &pr, Some(&sign(secret, &pr)));
    assert_eq!(a.status, 202, "{}", a.body);
    assert!(a.body["ignored"].as_str().is_some(), "{}", a.body);
    // A body declared over 1 MiB is refused at once, before any of it is read.
    let addr = d.url.trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let head = format!(
        "POST /hooks/{WS} HTTP/1.1\r\nHost: {addr}\r\nX-Event-Key: repo:push\r\n\
         X-Hub-Signature: sha256=00\r\nContent-Length: {}\r\n\r\n",
        2 << 20
    );
    s.write_all(head.as_bytes()).expect("write");
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).expect("an answer before the body");
    let status = String::from_utf8_lossy(&buf[..n]);
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");

    // A flood of requests to one connection: 429 with Retry-After, and nothing queued.
    let statuses: Vec<(u16, Option<String>)> = (0..30)
        .map(|_| {
            let a = hook(&d, WS, "repo:push", &pr, Some("sha256=00"));
            (a.status, a.header("retry-after").map(str::to_string))
        })
        .collect();
    let limited: Vec<_> = statuses.iter().filter(|(s, _)| *s == 429).collect();
    assert!(!limited.is_empty(), "no 429 in a flood: {statuses:?}");
    for (_, retry) in &limited {
        let secs: u64 = retry
            .as_deref()
            .and_then(|r| r.parse().ok())
            .expect("Retry-After");
        assert!((1..=60).contains(&secs), "{secs}");
    }
    assert!(
        statuses.iter().all(|(s, _)| [401, 429].contains(s)),
        "{statuses:?}"
    );
    assert!(jobs(&d).is_empty());
}

#[test]
fn data_center_refs_changed_backs_up_the_pushed_repository() {
    let server = DcServer::start(DcOptions {
        context_path: String::new(),
        tls: false,
    });
    let src = TempDir::new("reposafe-dc-src");
    for slug in ["one", "two"] {
        let bare = src.path().join(format!("{slug}.git"));
        gitutil::init_bare(&bare);
        let mut w = WorkRepo::new();
        w.write("a.txt", format!("{slug}\n"));
        w.commit("first");
        w.push_mirror(&bare);
        server.add_repo("PRJ", slug, &bare, false);
    }
    server.add_user("jdoe", "correct-horse-battery-staple-42");
    server.grant("jdoe", "PRJ");
    let rs = Reposafe::new();
    let pw = rs.secret_file("pw", "correct-horse-battery-staple-42");
    let args = dc_add_args(&server.base_url(), "dc", "jdoe", &pw);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    rs.run(&args).ok();
    // The secret made through the CLI, without a daemon, is the one the daemon checks.
    let cli = rs.run(&["connection", "webhook", "dc"]).ok();
    let secret = cli
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .expect("secret line")
        .to_string();
    assert!(
        cli.stdout.contains("url: <daemon url>/hooks/dc"),
        "{}",
        cli.stdout
    );
    let d = Served::start(&rs, &["--hook-delay", "1"]);

    // As Data Center sends it (`repo:refs_changed`, project key + slug).
    let body = json!({
        "eventKey": "repo:refs_changed",
        "date": "2026-11-30T22:00:00+0000",
        "actor": {"name": "jdoe", "type": "NORMAL"},
        "repository": {"slug": "two", "id": 2, "name": "two", "scmId": "git", "state": "AVAILABLE",
                        "project": {"key": "PRJ", "id": 1, "name": "Project", "type": "NORMAL"}},
        "changes": [{"ref": {"id": "refs/heads/main", "displayId": "main", "type": "BRANCH"},
                     "refId": "refs/heads/main", "fromHash": "0000000000000000000000000000000000000000",
                     "toHash": "1111111111111111111111111111111111111111", "type": "UPDATE"}],
    })
    .to_string()
    .into_bytes();
    let a = hook(
        &d,
        "dc",
        "repo:refs_changed",
        &body,
        Some(&sign(&secret, &body)),
    );
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(a.body["queued"], "PRJ/two");
    let job = next_job(&d, 0, "the refs_changed event");
    assert_eq!(job["trigger"], "webhook");
    let done = d.wait_job(job["id"].as_u64().expect("id"), Duration::from_secs(60));
    assert_eq!(done["state"], "succeeded", "{done}");
    let results = d.ok("GET", &format!("/api/v1/jobs/{}/results", job["id"]), None);
    let names: Vec<&str> = results
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["repository"].as_str())
        .collect();
    assert_eq!(names, ["PRJ/two"], "{results}");

    // Registering the webhook on the project needs PROJECT_ADMIN: named when missing.
    let a = register(&d, "dc");
    assert!(a.status >= 400, "{} {}", a.status, a.body);
    let msg = a.body["error"].as_str().unwrap_or("");
    assert!(
        msg.contains("PROJECT_ADMIN") && msg.contains("PRJ"),
        "{msg}"
    );
    assert!(server.project_hooks("PRJ").is_empty());
    server.grant_admin("jdoe", "PRJ");
    let hook_url = format!("{}/hooks/dc", d.url);
    for updated in [false, true] {
        let a = register(&d, "dc");
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body["registered"][0]["target"], "project PRJ");
        assert_eq!(a.body["registered"][0]["updated"], updated);
        let hooks = server.project_hooks("PRJ");
        assert_eq!(hooks.len(), 1, "{hooks:?}");
        let (_, url, events, secret_set) = &hooks[0];
        assert_eq!(
            (url, events.as_slice(), *secret_set),
            (&hook_url, &["repo:refs_changed".to_string()][..], true)
        );
    }
    // Data Center's own delivery, signed with the secret it was given, backs `one` up.
    assert_eq!(server.deliver_refs_changed("PRJ", "one"), [202]);
    let second = next_job(&d, 1, "Data Center's delivery");
    let done = d.wait_job(second["id"].as_u64().expect("id"), Duration::from_secs(60));
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        second["kind"]["targets"],
        json!([{ "connection": "dc", "only": ["PRJ/one"] }])
    );
}
