//! The Data Center double's metadata endpoints behave like Bitbucket Data Center's: paged
//! pull requests with `state=ALL` and `order`, activities newest first, the plugin REST
//! roots (branch permissions, default reviewers, branch model, access keys), REPO_ADMIN
//! answers with DC's error body, and Git LFS (`enabled` + the batch API).

mod common;

use std::path::Path;

use common::*;
use reposafe_testkit::dc::NOT_PERMITTED;
use reposafe_testkit::{DcOptions, DcServer, Spec};
use serde_json::Value;

fn server() -> (DcServer, String, String) {
    let s = DcServer::start(DcOptions {
        context_path: "/bitbucket".into(),
        tls: false,
    });
    s.add_repo("PRJ", "repo", Path::new("/nonexistent"), false);
    s.add_user("jdoe", "pw");
    s.grant("jdoe", "PRJ");
    let api = format!("{}/rest/api/1.0/projects/PRJ/repos/repo", s.base_url());
    (s, basic("jdoe", "pw"), api)
}

fn follow(first: &str, auth: &str) -> (usize, Vec<Value>) {
    let sep = if first.contains('?') { '&' } else { '?' };
    follow_pages(first, auth, |j| {
        (j["isLastPage"] != true).then(|| format!("{first}{sep}start={}", j["nextPageStart"]))
    })
}

#[test]
fn pull_requests_and_activities_page_like_dc() {
    let (s, auth, api) = server();
    let spec = Spec {
        pull_requests: 30,
        comments_per_pr: 8,
        tasks_per_pr: 2,
        ..Spec::default()
    };
    s.populate("PRJ", "repo", &spec);
    s.set_page_cap(20);
    let open = get(&format!("{api}/pull-requests"), &auth).json();
    assert_eq!(open["limit"], 25);
    assert!(open["values"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["state"] == "OPEN"));
    let (pages, all) = follow(&format!("{api}/pull-requests?state=ALL&limit=100"), &auth);
    assert_eq!((pages, all.len()), (2, 30), "the server caps pages at 20");
    let dates: Vec<u64> = all
        .iter()
        .map(|p| p["updatedDate"].as_u64().unwrap())
        .collect();
    assert!(
        dates.windows(2).all(|w| w[0] >= w[1]),
        "NEWEST first: {dates:?}"
    );
    assert!(
        all.iter().any(|p| p["state"] == "DECLINED"),
        "SUPERSEDED shows as DECLINED"
    );
    let oldest = get(
        &format!("{api}/pull-requests?state=ALL&order=OLDEST"),
        &auth,
    )
    .json();
    assert_eq!(
        oldest["values"][0]["updatedDate"].as_u64(),
        dates.last().copied()
    );
    assert_eq!(
        get(&format!("{api}/pull-requests?state=BOGUS"), &auth).status,
        400
    );
    let p = &all[0];
    assert!(
        p["createdDate"].is_u64()
            && p["fromRef"]["id"]
                .as_str()
                .unwrap()
                .starts_with("refs/heads/")
    );
    assert_eq!(p["author"]["role"], "AUTHOR");
    let id = p["id"].as_u64().unwrap();
    let (_, acts) = follow(
        &format!("{api}/pull-requests/{id}/activities?limit=5"),
        &auth,
    );
    let when: Vec<u64> = acts
        .iter()
        .map(|a| a["createdDate"].as_u64().unwrap())
        .collect();
    assert!(when.windows(2).all(|w| w[0] >= w[1]), "newest first");
    assert_eq!(acts.last().unwrap()["action"], "OPENED");
    assert!(acts.iter().any(|a| a["action"] == "APPROVED"));
    assert!(acts.iter().any(|a| a["commentAnchor"]["path"].is_string()));
    assert!(
        acts.iter().any(|a| a["comment"]["severity"] == "BLOCKER"),
        "tasks"
    );
    assert!(acts.iter().any(|a| a["comment"]["comments"]
        .as_array()
        .is_some_and(|c| !c.is_empty())));
    let missing = get(&format!("{api}/pull-requests/999"), &auth);
    assert_eq!(missing.status, 404);
    assert!(missing.json()["errors"][0]["message"].is_string());
}

#[test]
fn settings_need_the_right_permission_and_hide_secrets() {
    let (s, auth, api) = server();
    s.populate("PRJ", "repo", &Spec::default());
    s.set_project_default_reviewers("PRJ", &["carol"]);
    s.add_project_access_key("PRJ", "deploy", "ssh-ed25519 AAAAproject deploy@example");
    let rest = format!("{}/rest", s.base_url());
    let perms = format!("{rest}/branch-permissions/2.0/projects/PRJ/repos/repo/restrictions");
    let hooks = format!("{api}/webhooks");
    let keys = format!("{rest}/keys/1.0/projects/PRJ/repos/repo/ssh");
    for url in [&perms, &hooks, &keys] {
        let r = get(url, &auth);
        assert_eq!(r.status, 401, "{url}");
        assert_eq!(r.json()["errors"][0]["message"], NOT_PERMITTED);
    }
    s.grant_admin("jdoe", "PRJ");
    let perms = get(&perms, &auth).json();
    assert_eq!(perms["values"][0]["type"], "read-only");
    assert_eq!(perms["values"][0]["matcher"]["type"]["id"], "BRANCH");
    let hooks = get(&hooks, &auth);
    assert!(!hooks.text().contains("hook-secret"));
    assert_eq!(hooks.json()["values"][0]["events"][0], "repo:push");
    assert_eq!(
        get(&keys, &auth).json()["values"][0]["permission"],
        "REPO_READ"
    );
    let pkeys = get(&format!("{rest}/keys/1.0/projects/PRJ/ssh"), &auth).json();
    assert_eq!(pkeys["values"][0]["key"]["label"], "deploy");
    let conds = get(
        &format!("{rest}/default-reviewers/1.0/projects/PRJ/repos/repo/conditions"),
        &auth,
    )
    .json();
    assert_eq!(conds[0]["reviewers"][0]["name"], "bob");
    let pconds = get(
        &format!("{rest}/default-reviewers/1.0/projects/PRJ/conditions"),
        &auth,
    )
    .json();
    assert_eq!(pconds[0]["scope"]["type"], "PROJECT");
    let model = get(
        &format!("{rest}/branch-utils/1.0/projects/PRJ/repos/repo/branchmodel/configuration"),
        &auth,
    )
    .json();
    assert_eq!(model["development"]["refId"], "refs/heads/develop");
    let settings = get(&format!("{api}/settings/pull-requests"), &auth).json();
    assert_eq!(settings["requiredApprovers"], 1);
    assert_eq!(get(&api, &auth).json()["slug"], "repo");
    assert_eq!(
        get(
            &format!("{}/rest/api/1.0/projects/PRJ", s.base_url()),
            &auth
        )
        .json()["key"],
        "PRJ"
    );
    let kinds = s.requests_by_endpoint();
    assert_eq!(
        kinds["/rest/api/1.0/projects/{key}/repos/{slug}/settings/pull-requests"],
        1
    );
    assert_eq!(s.count_requests(|p| p.contains("/webhooks")), 2);
}

#[test]
fn lfs_enabled_endpoint_and_batch_at_the_clone_url() {
    let (s, auth, _) = server();
    let enabled = format!(
        "{}/rest/git-lfs/admin/projects/PRJ/repos/repo/enabled",
        s.base_url()
    );
    let batch = format!("{}/scm/prj/repo.git/info/lfs/objects/batch", s.base_url());
    let body = |oid: &str| {
        format!(
            r#"{{"operation":"download","transfers":["basic"],"objects":[{{"oid":"{oid}","size":5}}]}}"#
        )
    };
    let post = |oid: &str| {
        let headers = [
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/vnd.git-lfs+json"),
            ("Accept", "application/vnd.git-lfs+json"),
        ];
        request("POST", &batch, &headers, body(oid).as_bytes())
    };
    assert_eq!(get(&enabled, &auth).status, 404);
    assert_eq!(post("00").status, 404);
    s.set_lfs_enabled("PRJ", "repo", true);
    assert_eq!(get(&enabled, &auth).status, 204);
    let oid = s.lfs().add("PRJ", "repo", b"hello");
    let r = post(&oid);
    assert_eq!(r.status, 200, "{}", r.text());
    let action = &r.json()["objects"][0]["actions"]["download"];
    let href = action["href"].as_str().unwrap();
    assert!(!href.starts_with(&s.base_url()));
    let header = action["header"]["Authorization"].as_str().unwrap();
    let got = request("GET", href, &[("Authorization", header)], b"");
    assert_eq!((got.status, got.body.as_slice()), (200, &b"hello"[..]));
    assert_eq!(s.lfs().downloads()[&oid], 1);
}
