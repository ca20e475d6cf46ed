//! The audit log end to end: every kind of change made through the CLI, the API
//! (admin token) and a dashboard session is recorded with its actor, in order, and
//! read back through `GET /api/v1/audit` and `reposafe audit`; failed changes leave
//! no entry; no route changes or deletes entries; no secret is ever in one.

mod common;

use common::served::{cloud_workspace, Served};
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const WS: &str = "acme";
const OTHER_EMAIL: &str = "ops@acme.test";
const OTHER_TOKEN: &str = "ATATT3xFfGF0-second-account-token-9a8b7c";

fn entries(d: &Served) -> Vec<Value> {
    d.ok("GET", "/api/v1/audit?limit=1000", None)
        .as_array()
        .expect("entries")
        .clone()
}

/// `(actor, action, object)` of each entry, oldest first.
fn triples(list: &[Value]) -> Vec<(String, String, String)> {
    list.iter()
        .rev()
        .map(|e| {
            let actor = match e["actor"]["name"].as_str() {
                Some(name) => format!("{} {name}", e["actor"]["kind"].as_str().unwrap_or("")),
                None => e["actor"]["kind"].as_str().unwrap_or("").to_string(),
            };
            let field = |k: &str| e[k].as_str().unwrap_or("").to_string();
            (actor, field("action"), field("object"))
        })
        .collect()
}

fn t(actor: &str, action: &str, object: &str) -> (String, String, String) {
    (actor.into(), action.into(), object.into())
}

/// Signs in at /login (a wrong token first); the session cookie and its CSRF token.
fn sign_in(d: &Served) -> (String, String) {
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let wrong = d.send("POST", "/login", &form, b"token=not-the-token");
    assert_eq!(wrong.status, 401);
    let body = format!("token={}", d.token);
    let a = d.send("POST", "/login", &form, body.as_bytes());
    assert_eq!(a.status, 303, "{}", a.body);
    let cookie = a
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("session cookie")
        .to_string();
    let page = d.send("GET", "/", &[("Cookie", &cookie)], b"");
    let html = page.body.as_str().expect("a page").to_string();
    let csrf = [
        "name=csrf value=\"",
        "name=\"csrf\" value=\"",
        "name=\"csrf-token\" content=\"",
    ]
    .iter()
    .find_map(|m| html.split(m).nth(1))
    .and_then(|r| r.split('"').next())
    .expect("the page carries the CSRF token")
    .to_string();
    (cookie, csrf)
}

#[test]
fn every_change_is_recorded_with_its_actor_and_never_a_secret() {
    let (server, _src, rs) = cloud_workspace(WS, 1);
    server.add_api_token("acct-2", OTHER_EMAIL, OTHER_TOKEN);
    server.grant("acct-2", WS);
    let d = Served::start(&rs, &[]);

    // Through the API with the admin token.
    let added = d.ok(
        "POST",
        &format!("/api/v1/connections/{WS}/credentials"),
        Some(json!({"kind": "api-token", "identity": OTHER_EMAIL, "secret": OTHER_TOKEN})),
    );
    let cred = added["credential"]["id"].as_str().expect("id").to_string();
    let cred_path = format!("/api/v1/connections/{WS}/credentials/{cred}");
    d.ok("POST", &format!("{cred_path}/disable"), None);
    d.ok("POST", &format!("{cred_path}/enable"), None);
    d.ok("DELETE", &cred_path, None);
    let plan = json!({"name": "nightly", "connections": [WS], "schedule": "0 2 * * *"});
    d.ok("POST", "/api/v1/plans", Some(plan.clone()));
    let mut changed = plan.clone();
    changed["schedule"] = json!("0 3 * * *");
    d.ok("PUT", "/api/v1/plans/nightly", Some(changed));
    d.ok("DELETE", "/api/v1/plans/nightly", None);
    // A failed change leaves no entry.
    assert_eq!(d.api("DELETE", "/api/v1/plans/nightly", None).status, 404);
    let job = d.ok("POST", "/api/v1/run", Some(json!({ "connection": WS })));
    let job_id = job["id"].as_u64().expect("id");
    d.wait_job(job_id, Duration::from_secs(60));
    let repo = d.ok("GET", "/api/v1/repositories", None)[0]["full_name"]
        .as_str()
        .expect("repository")
        .to_string();
    let to = rs.files.path().join("restored.git");
    let restore = json!({"repository": repo, "to": to.display().to_string()});
    let restore_job = d.ok("POST", "/api/v1/restore", Some(restore))["id"]
        .as_u64()
        .expect("id");
    d.wait_job(restore_job, Duration::from_secs(60));
    let webhook = d.ok("GET", &format!("/api/v1/connections/{WS}/webhook"), None);
    let rotated = d.ok(
        "POST",
        &format!("/api/v1/connections/{WS}/webhook/rotate"),
        None,
    );

    // Through a dashboard session: the actor is the session's tag, never its id.
    let (cookie, csrf) = sign_in(&d);
    let origin = d.url.clone();
    let session_headers = [
        ("Cookie", cookie.as_str()),
        ("X-CSRF-Token", csrf.as_str()),
        ("Origin", origin.as_str()),
        ("Content-Type", "application/json"),
    ];
    let body = json!({"name": "weekly", "connections": [WS]}).to_string();
    let a = d.send("POST", "/api/v1/plans", &session_headers, body.as_bytes());
    assert_eq!(a.status, 201, "{}", a.body);
    // The connection page shows the webhook to paste into Bitbucket; its button rotates it.
    let page = d.send(
        "GET",
        &format!("/connections/{WS}"),
        &[("Cookie", cookie.as_str())],
        b"",
    );
    let html = page.body.as_str().expect("html").to_string();
    let url = format!("<code id=\"webhook-url\">{}/hooks/{WS}</code>", d.url);
    assert!(html.contains(&url), "{html}");
    let shown = rotated["secret"].as_str().expect("secret");
    assert!(html.contains(&format!("<code id=\"webhook-secret\">{shown}</code>")));
    let rotate = [
        ("Cookie", cookie.as_str()),
        ("Origin", origin.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let form = format!("csrf={csrf}");
    let path = format!("/connections/{WS}/webhook/rotate");
    let a = d.send("POST", &path, &rotate, form.as_bytes());
    assert_eq!(a.status, 303, "{}", a.body);
    let after = d.ok("GET", &format!("/api/v1/connections/{WS}/webhook"), None);
    assert_ne!(after["secret"], rotated["secret"]);

    // The dashboard's audit page lists the entries, newest first, with their actor.
    let page = d.send("GET", "/audit", &[("Cookie", cookie.as_str())], b"");
    assert_eq!(page.status, 200);
    let html = page.body.as_str().expect("html").to_string();
    let table = html.split("id=\"audit\"").nth(1).expect("table#audit");
    let first_row = table.split("<tr data-seq=").nth(1).expect("a row");
    assert!(first_row.contains("webhook.rotate"), "{first_row}");
    assert!(table.contains("session.sign-in") && table.contains("connection.add"));
    let logout = [
        ("Cookie", cookie.as_str()),
        ("Origin", origin.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    assert_eq!(
        d.send("POST", "/logout", &logout, form.as_bytes()).status,
        303
    );

    let list = entries(&d);
    let seqs: Vec<u64> = list.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seqs:?}"
    );
    let got = triples(&list);
    let tag = got
        .iter()
        .find(|(_, a, _)| a == "session.sign-in")
        .map(|(actor, _, _)| actor.clone())
        .expect("a sign-in");
    let tag = tag
        .strip_prefix("session ")
        .expect("a session actor")
        .to_string();
    assert_eq!(tag.len(), 8, "{tag}");
    assert!(
        !cookie.contains(&tag),
        "the tag must not be a piece of the session id"
    );
    let session = format!("session {tag}");
    let want = vec![
        t("cli", "connection.add", WS),
        t("token", "credential.add", &format!("{WS}/{cred}")),
        t("token", "credential.disable", &format!("{WS}/{cred}")),
        t("token", "credential.enable", &format!("{WS}/{cred}")),
        t("token", "credential.remove", &format!("{WS}/{cred}")),
        t("token", "plan.add", "nightly"),
        t("token", "plan.update", "nightly"),
        t("token", "plan.remove", "nightly"),
        t("token", "run.submit", &format!("job {job_id}")),
        t("token", "restore.start", &format!("job {restore_job}")),
        t("token", "webhook.rotate", WS),
        t("session -", "session.sign-in-refused", "dashboard"),
        t(&session, "session.sign-in", "dashboard"),
        t(&session, "plan.add", "weekly"),
        t(&session, "webhook.rotate", WS),
        t(&session, "session.sign-out", "dashboard"),
    ];
    assert_eq!(got, want);

    // Nothing changes or deletes entries.
    for (method, path, status) in [
        ("DELETE", "/api/v1/audit", 405),
        ("PUT", "/api/v1/audit", 405),
        ("POST", "/api/v1/audit", 405),
        ("DELETE", "/api/v1/audit/1", 404),
    ] {
        assert_eq!(d.api(method, path, None).status, status, "{method} {path}");
    }
    assert_eq!(entries(&d).len(), want.len());
    // Paging: the two entries before the newest.
    let newest = seqs[0];
    let page = d.ok(
        "GET",
        &format!("/api/v1/audit?limit=2&before={newest}"),
        None,
    );
    let page: Vec<u64> = page
        .as_array()
        .expect("page")
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert_eq!(page, [newest - 1, newest - 2]);
    assert_eq!(d.api("GET", "/api/v1/audit?limit=0", None).status, 400);

    // No secret in any entry, nor the session id.
    let text = serde_json::to_string(&list).expect("json");
    let session_id = cookie.split_once('=').map(|(_, v)| v).expect("id");
    for secret in [
        API_TOKEN,
        OTHER_TOKEN,
        d.token.as_str(),
        webhook["secret"].as_str().expect("secret"),
        rotated["secret"].as_str().expect("secret"),
        after["secret"].as_str().expect("secret"),
        session_id,
        csrf.as_str(),
    ] {
        assert!(!text.contains(secret), "a secret is in the audit log");
    }

    // The CLI through the daemon prints them, newest first.
    let out = rs.run(&["audit", "--limit", "3"]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(
        lines[0].contains("session.sign-out") && lines[0].contains(&session),
        "{}",
        lines[0]
    );
    drop(d);

    // The log outlives the daemon: the CLI alone reads it and adds to it.
    rs.run(&["connection", "remove", WS]).ok();
    let out = rs.run(&["audit", "--json", "--limit", "1"]).ok();
    let newest: Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(newest[0]["actor"], json!({"kind": "cli"}));
    assert_eq!(newest[0]["action"], "connection.remove");
    assert_eq!(newest[0]["seq"].as_u64(), Some(want.len() as u64 + 1));
}
