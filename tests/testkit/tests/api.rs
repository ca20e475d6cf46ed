//! REST API behaviour of the Cloud double: pagination, 401/403/404/410/429, OAuth.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use reposafe_testkit::{CloudServer, RepoMeta};

fn server_with_user() -> (CloudServer, String) {
    let s = CloudServer::start();
    s.add_api_token("acc-1", "alice@example.com", "tok-alice");
    (s, basic("alice@example.com", "tok-alice"))
}

fn follow_all(first: &str, auth: &str) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let mut url = first.to_string();
    let mut pages = Vec::new();
    let mut values = Vec::new();
    loop {
        let r = get(&url, auth);
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        values.extend(j["values"].as_array().unwrap().iter().cloned());
        let next = j.get("next").and_then(|n| n.as_str()).map(str::to_string);
        pages.push(j);
        match next {
            Some(n) => url = n,
            None => break,
        }
    }
    (pages, values)
}

#[test]
fn user_workspaces_pagination() {
    let (s, auth) = server_with_user();
    for i in 0..25 {
        s.add_workspace(&format!("ws-{i:02}"));
        s.grant("acc-1", &format!("ws-{i:02}"));
    }
    s.add_workspace("not-granted");
    let base = s.base_url();
    // default pagelen 10
    let (pages, values) = follow_all(&format!("{base}/2.0/user/workspaces"), &auth);
    assert_eq!(pages.len(), 3);
    assert_eq!(values.len(), 25);
    assert_eq!(pages[0]["pagelen"], 10);
    assert_eq!(pages[0]["size"], 25);
    assert_eq!(pages[0]["page"], 1);
    assert!(pages[0]["next"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{base}/2.0/user/workspaces?")));
    assert!(
        pages[2].get("next").is_none(),
        "next must be absent on the last page"
    );
    assert_eq!(pages[2]["values"].as_array().unwrap().len(), 5);
    let v = &values[0];
    assert_eq!(v["type"], "workspace_access");
    assert_eq!(v["permission"], "member");
    assert_eq!(v["workspace"]["type"], "workspace");
    assert_eq!(v["workspace"]["slug"], "ws-00");
    assert!(v["workspace"]["uuid"].as_str().unwrap().starts_with('{'));
    assert!(values
        .iter()
        .all(|v| v["workspace"]["slug"] != "not-granted"));
    // pagelen capped at 100
    let r = get(&format!("{base}/2.0/user/workspaces?pagelen=500"), &auth).json();
    assert_eq!(r["pagelen"], 100);
    assert_eq!(r["values"].as_array().unwrap().len(), 25);
    assert!(r.get("next").is_none());
    // bad paging parameters are 400, not a panic
    for q in [
        "pagelen=abc",
        "pagelen=0",
        "page=0",
        "page=-1",
        "pagelen=99999999999999999999999",
    ] {
        let r = get(&format!("{base}/2.0/user/workspaces?{q}"), &auth);
        assert_eq!(r.status, 400, "{q}");
        assert_eq!(r.json()["type"], "error");
    }
    // a page past the end is empty, without next
    let r = get(&format!("{base}/2.0/user/workspaces?page=9"), &auth).json();
    assert_eq!(r["values"].as_array().unwrap().len(), 0);
    assert!(r.get("next").is_none());
}

#[test]
fn repositories_pagination_and_shape() {
    let (s, auth) = server_with_user();
    s.grant("acc-1", "team");
    let fake = Path::new("/nonexistent/repo.git");
    for i in 0..150 {
        s.add_repo("team", &format!("r{i:03}"), fake, RepoMeta::default());
    }
    s.add_repo(
        "team",
        "zz-empty",
        fake,
        RepoMeta {
            mainbranch: None,
            ..RepoMeta::default()
        },
    );
    s.add_repo(
        "team",
        "zz-fork",
        fake,
        RepoMeta {
            parent: Some("team/r000".into()),
            is_private: false,
            has_wiki: true,
            size: 1234,
            ..RepoMeta::default()
        },
    );
    let base = s.base_url();
    let (pages, values) = follow_all(&format!("{base}/2.0/repositories/team?pagelen=200"), &auth);
    assert_eq!(pages.len(), 2);
    assert_eq!(pages[0]["pagelen"], 100);
    assert_eq!(pages[0]["size"], 152);
    assert_eq!(values.len(), 152);
    assert!(pages[0]["next"].as_str().unwrap().contains("page=2"));
    assert!(pages[0]["next"].as_str().unwrap().contains("pagelen=200"));
    assert!(pages[1].get("next").is_none());
    let r = &values[0];
    assert_eq!(r["type"], "repository");
    assert_eq!(r["full_name"], "team/r000");
    assert_eq!(r["slug"], "r000");
    assert_eq!(r["is_private"], true);
    assert_eq!(r["mainbranch"]["type"], "branch");
    assert_eq!(r["mainbranch"]["name"], "main");
    assert_eq!(r["updated_on"], "2026-11-20T10:00:00.000000+00:00");
    assert_eq!(r["has_issues"], false);
    assert_eq!(r["fork_policy"], "allow_forks");
    assert_eq!(r["workspace"]["slug"], "team");
    assert!(r.get("parent").is_none());
    let clone = r["links"]["clone"].as_array().unwrap();
    assert_eq!(clone[0]["name"], "ssh", "ssh link first");
    assert_eq!(clone[0]["href"], "git@bitbucket.org:team/r000.git");
    assert_eq!(clone[1]["name"], "https");
    let port = s.addr().port();
    assert_eq!(
        clone[1]["href"],
        format!("http://acc-1@127.0.0.1:{port}/team/r000.git")
    );
    let empty = values.iter().find(|v| v["slug"] == "zz-empty").unwrap();
    assert!(empty["mainbranch"].is_null());
    let fork = values.iter().find(|v| v["slug"] == "zz-fork").unwrap();
    assert_eq!(fork["parent"]["full_name"], "team/r000");
    assert_eq!(fork["is_private"], false);
    assert_eq!(fork["has_wiki"], true);
    assert_eq!(fork["size"], 1234);
    // single repository
    let one = get(&format!("{base}/2.0/repositories/team/zz-fork"), &auth);
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["full_name"], "team/zz-fork");
    assert_eq!(
        get(&format!("{base}/2.0/repositories/team/nope"), &auth).status,
        404
    );
    // remove_repo
    s.remove_repo("team", "zz-fork");
    let r = get(
        &format!("{base}/2.0/repositories/team?pagelen=100&page=2"),
        &auth,
    )
    .json();
    assert_eq!(r["size"], 151);
}

#[test]
fn errors_401_403_404_410() {
    let (s, auth) = server_with_user();
    s.add_workspace("mine");
    s.add_workspace("theirs");
    s.grant("acc-1", "mine");
    let base = s.base_url();
    for (url, a) in [
        (format!("{base}/2.0/user"), None),
        (
            format!("{base}/2.0/user"),
            Some(basic("alice@example.com", "wrong")),
        ),
        (
            format!("{base}/2.0/repositories/mine"),
            Some(bearer("nope")),
        ),
        (
            format!("{base}/2.0/repositories/mine"),
            Some("Basic !!!notbase64".to_string()),
        ),
        (
            format!("{base}/2.0/repositories/mine"),
            Some("Digest foo".to_string()),
        ),
    ] {
        let r = match &a {
            Some(a) => get(&url, a),
            None => get_anon(&url),
        };
        assert_eq!(r.status, 401, "{url} {a:?}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Basic realm=\"Bitbucket.org HTTP\"")
        );
        assert_eq!(r.json()["type"], "error");
    }
    let u = get(&format!("{base}/2.0/user"), &auth);
    assert_eq!(u.status, 200);
    let u = u.json();
    assert_eq!(u["type"], "user");
    assert_eq!(u["account_id"], "acc-1");
    assert!(u["uuid"].as_str().unwrap().starts_with('{'));
    assert!(u["display_name"].is_string());

    let r = get(&format!("{base}/2.0/repositories/unknown"), &auth);
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]["message"].is_string());
    assert_eq!(
        get(&format!("{base}/2.0/repositories/theirs"), &auth).status,
        403
    );
    assert_eq!(
        get(&format!("{base}/2.0/repositories/mine"), &auth).status,
        200
    );
    for p in [
        "/2.0/workspaces",
        "/2.0/user/permissions/workspaces",
        "/2.0/repositories",
        "/2.0/repositories/",
    ] {
        let r = get(&format!("{base}{p}"), &auth);
        assert_eq!(r.status, 410, "{p}");
        assert_eq!(r.json()["type"], "error");
    }
    for p in [
        "/2.0/nothing",
        "/",
        "/x",
        "/a/b/c",
        "/site/oauth2/other",
        "/2.0/repositories/mine/a/b/c",
    ] {
        let r = get(&format!("{base}{p}"), &auth);
        assert_eq!(r.status, 404, "{p}");
        assert_eq!(r.json()["type"], "error");
    }
    let r = get(&format!("{base}/2.0/repositories/%zz"), &auth);
    assert_eq!(r.status, 400);
    let r = request(
        "POST",
        &format!("{base}/2.0/user"),
        &[("Authorization", &auth)],
        b"{}",
    );
    assert_eq!(r.status, 405);

    // access tokens: only their workspace, not a user
    s.add_access_token("bot-1", "theirs", "at-1");
    let at = bearer("at-1");
    assert_eq!(
        get(&format!("{base}/2.0/repositories/theirs"), &at).status,
        200
    );
    assert_eq!(
        get(&format!("{base}/2.0/repositories/mine"), &at).status,
        403
    );
    let r = get(&format!("{base}/2.0/user/workspaces"), &at);
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(get(&format!("{base}/2.0/user"), &at).status, 403);

    // app passwords
    s.add_app_password("acc-2", "bob", "app-pw");
    s.grant("acc-2", "theirs");
    let ap = basic("bob", "app-pw");
    assert_eq!(
        get(&format!("{base}/2.0/repositories/theirs"), &ap).status,
        200
    );
    assert_eq!(
        get(&format!("{base}/2.0/user"), &ap).json()["account_id"],
        "acc-2"
    );

    let log = s.request_log();
    assert!(log.iter().all(|l| !l.is_git));
    assert!(log.iter().any(|l| l.status == 401 && l.principal.is_none()));
    assert!(log
        .iter()
        .any(|l| l.status == 200 && l.principal.as_deref() == Some("acc-2")));
    s.clear_log();
    assert!(s.request_log().is_empty());
}

#[test]
fn rate_limits() {
    let (s, auth) = server_with_user();
    s.add_app_password("acc-2", "bob", "pw");
    s.add_workspace("w");
    s.grant("acc-1", "w");
    let base = s.base_url();
    let url = format!("{base}/2.0/repositories/w");
    s.set_rate_limit(Some(5));
    for _ in 0..5 {
        assert_eq!(get(&url, &auth).status, 200);
    }
    let r = get(&url, &auth);
    assert_eq!(r.status, 429);
    assert_eq!(r.text(), "Rate limit for this resource has been exceeded");
    assert!(
        r.header("retry-after").is_none(),
        "Cloud sends no Retry-After"
    );
    // another principal has its own window
    assert_eq!(
        get(&format!("{base}/2.0/user"), &basic("bob", "pw")).status,
        200
    );
    s.set_rate_limit(None);
    assert_eq!(get(&url, &auth).status, 200);

    s.fail_next_with_429(2);
    let r = get(&url, &auth);
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_none());
    assert_eq!(get(&url, &auth).status, 429);
    assert_eq!(get(&url, &auth).status, 200);
    let log = s.request_log();
    assert_eq!(log.iter().filter(|l| l.status == 429).count(), 3);
    assert!(log
        .iter()
        .filter(|l| l.status == 429)
        .all(|l| l.principal.as_deref() == Some("acc-1")));
}

#[test]
fn oauth_client_credentials() {
    let s = CloudServer::start();
    s.add_oauth_consumer("acc-o", "key1", "secret1", 1);
    s.add_workspace("w");
    s.grant("acc-o", "w");
    let base = s.base_url();
    let token_url = format!("{base}/site/oauth2/access_token");
    let form = [("Content-Type", "application/x-www-form-urlencoded")];

    let bad = request(
        "POST",
        &token_url,
        &[form[0], ("Authorization", &basic("key1", "wrong"))],
        b"grant_type=client_credentials",
    );
    assert_eq!(bad.status, 401);
    assert_eq!(bad.json()["error"], "invalid_client");
    let bad = request(
        "POST",
        &token_url,
        &[form[0], ("Authorization", &basic("key1", "secret1"))],
        b"grant_type=password",
    );
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"], "unsupported_grant_type");
    let bad = request(
        "POST",
        &token_url,
        &[form[0], ("Authorization", &basic("key1", "secret1"))],
        b"grant_type=%zz",
    );
    assert_eq!(bad.status, 400);
    assert_eq!(get_anon(&token_url).status, 405);

    let r = request(
        "POST",
        &token_url,
        &[form[0], ("Authorization", &basic("key1", "secret1"))],
        b"grant_type=client_credentials",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["token_type"], "bearer");
    assert_eq!(j["expires_in"], 1);
    assert!(j["scopes"].is_string());
    assert!(j["refresh_token"].is_string());
    let tok = j["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        get(&format!("{base}/2.0/repositories/w"), &bearer(&tok)).status,
        200
    );
    assert_eq!(
        get(&format!("{base}/2.0/user"), &bearer(&tok)).json()["account_id"],
        "acc-o"
    );

    // client credentials in the form body work too; refresh_token grant
    let body = format!(
        "grant_type=refresh_token&refresh_token={}&client_id=key1&client_secret=secret1",
        j["refresh_token"].as_str().unwrap()
    );
    let r2 = request("POST", &token_url, &form, body.as_bytes());
    assert_eq!(r2.status, 200, "{}", r2.text());
    assert_ne!(r2.json()["access_token"], j["access_token"]);

    std::thread::sleep(Duration::from_millis(1100));
    let r = get(&format!("{base}/2.0/repositories/w"), &bearer(&tok));
    assert_eq!(r.status, 401, "expired token");
}

#[test]
fn rate_limit_window_is_configurable_and_load_is_measured() {
    let (s, auth) = server_with_user();
    s.add_app_password("acc-2", "bob", "pw");
    s.add_workspace("w");
    s.grant("acc-1", "w");
    let url = format!("{}/2.0/repositories/w", s.base_url());
    assert_eq!(s.rate_limit_window(), Duration::from_secs(60));
    s.set_rate_limit(Some(3));
    s.set_rate_limit_window(Duration::from_millis(700));
    assert_eq!(s.rate_limit_window(), Duration::from_millis(700));
    for _ in 0..3 {
        assert_eq!(get(&url, &auth).status, 200);
    }
    assert_eq!(get(&url, &auth).status, 429);
    assert_eq!(get(&url, &auth).status, 429);
    // bob has his own window; an unauthenticated request counts for nobody
    assert_eq!(get(&url, &basic("bob", "pw")).status, 403);
    assert_eq!(get(&url, &basic("nobody", "x")).status, 401);
    // after the (short) window the principal is admitted again
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(get(&url, &auth).status, 200);
    let load = s.principal_load();
    assert_eq!(load.len(), 2, "{load:?}");
    let a = &load["acc-1"];
    assert_eq!(a.requests, 6);
    assert_eq!(a.rate_limited, 2);
    // 3 admitted + 2 rejected arrived within one window; the sixth came after it
    assert_eq!(a.max_in_window, 5);
    assert_eq!(load["acc-2"].requests, 1);
    assert_eq!(load["acc-2"].max_in_window, 1);
    assert_eq!(load["acc-2"].rate_limited, 0);
    let log = s.request_log();
    assert!(log.iter().all(|l| l.received <= l.timestamp));
    // the same log over a longer window puts all six together
    let wide = reposafe_testkit::cloud::principal_load(&log, Duration::from_secs(60));
    assert_eq!(wide["acc-1"].max_in_window, 6);
}

#[test]
fn revoked_token_gets_401_and_is_logged() {
    let (s, auth) = server_with_user();
    s.add_api_token("acc-1", "alice@example.com", "tok-second");
    s.add_workspace("w");
    s.grant("acc-1", "w");
    let url = format!("{}/2.0/repositories/w", s.base_url());
    let second = basic("alice@example.com", "tok-second");
    assert_eq!(get(&url, &second).status, 200);
    assert_eq!(s.revoke_token("tok-second"), 1);
    assert_eq!(s.revoke_token("no-such-token"), 0);
    let r = get(&url, &second);
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
    // the other token of the same account still works
    assert_eq!(get(&url, &auth).status, 200);
    let log = s.request_log();
    let last_two: Vec<_> = log.iter().rev().take(2).collect();
    assert_eq!(last_two[1].status, 401);
    assert_eq!(last_two[1].principal, None);
    assert_eq!(last_two[1].revoked_principal.as_deref(), Some("acc-1"));
    assert_eq!(last_two[0].revoked_principal, None);
    assert_eq!(s.principal_load()["acc-1"].requests, 2);
}
