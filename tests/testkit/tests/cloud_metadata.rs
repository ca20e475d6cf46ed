//! The Cloud double's metadata endpoints behave like Bitbucket Cloud's: paging caps, sort,
//! repeated `state`, the scopes 403 body, the 404 of a repository without issue tracker,
//! attachments and downloads as 302s to a second origin that refuses the credential,
//! and the wiki served at `<clone url>/wiki`.

mod common;

use std::path::Path;

use common::*;
use reposafe_testkit::cloud::{MAX_PR_PAGELEN, NO_ISSUE_TRACKER, SCOPES_MESSAGE};
use reposafe_testkit::files::TWO_AUTH_MESSAGE;
use reposafe_testkit::gitutil::{self, WorkRepo};
use reposafe_testkit::metadata::Inline;
use reposafe_testkit::{CloudServer, NewPullRequest, PrState, RepoMeta, Spec, TempDir};
use serde_json::Value;

fn server() -> (CloudServer, String) {
    let s = CloudServer::start();
    s.add_api_token("acc-1", "alice@example.com", "tok-alice");
    s.grant("acc-1", "ws");
    s.add_repo("ws", "repo", Path::new("/nonexistent"), RepoMeta::default());
    (s, basic("alice@example.com", "tok-alice"))
}

fn follow(first: &str, auth: &str) -> (usize, Vec<Value>) {
    follow_pages(first, auth, |j| {
        j.get("next").and_then(Value::as_str).map(str::to_string)
    })
}

#[test]
fn pull_requests_page_sort_filter_and_embed_like_cloud() {
    let (s, auth) = server();
    s.populate(
        "ws",
        "repo",
        &Spec {
            pull_requests: 60,
            comments_per_pr: 12,
            issues: 0,
            ..Spec::default()
        },
    );
    let base = format!("{}/2.0/repositories/ws/repo", s.base_url());
    // Default: OPEN only, pagelen 10.
    let first = get(&format!("{base}/pullrequests"), &auth).json();
    assert_eq!(first["pagelen"], 10);
    assert_eq!(first["size"], 15);
    assert!(first["values"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["state"] == "OPEN"));
    // Above 50 is refused, as Cloud does for this resource.
    let r = get(&format!("{base}/pullrequests?pagelen=51"), &auth);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["type"], "error");
    // Repeated state, newest-updated first, at most 50 a page, absolute next links.
    let all = "state=OPEN&state=MERGED&state=DECLINED&state=SUPERSEDED";
    let url = format!("{base}/pullrequests?{all}&sort=-updated_on&pagelen={MAX_PR_PAGELEN}");
    let (pages, prs) = follow(&url, &auth);
    assert_eq!((pages, prs.len()), (2, 60));
    let times: Vec<&str> = prs
        .iter()
        .map(|p| p["updated_on"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    let p = &prs[0];
    assert_eq!(p["type"], "pullrequest");
    assert!(p["author"]["uuid"].as_str().unwrap().starts_with('{'));
    assert!(p["source"]["branch"]["name"].is_string());
    assert!(
        p.get("reviewers").is_none() && p.get("participants").is_none(),
        "{p}"
    );
    let with = get(
        &format!("{url}&fields=%2Bvalues.reviewers,%2Bvalues.participants"),
        &auth,
    )
    .json();
    assert!(with["values"][0]["reviewers"].is_array());
    // Ascending sort too.
    let asc = get(&format!("{base}/pullrequests?{all}&sort=updated_on"), &auth).json();
    let t0 = asc["values"][0]["updated_on"].as_str().unwrap().to_string();
    assert_eq!(t0, times[59]);
    // A pull request's comments, tasks and activity.
    let id = p["id"].as_u64().unwrap();
    let (cpages, comments) = follow(
        &format!("{base}/pullrequests/{id}/comments?pagelen=5"),
        &auth,
    );
    assert_eq!((cpages, comments.len()), (3, 12));
    assert!(comments.iter().any(|c| c["inline"]["path"].is_string()));
    assert!(comments.iter().any(|c| c["parent"]["id"].is_u64()));
    assert_eq!(comments[0]["type"], "pullrequest_comment");
    let tasks = get(&format!("{base}/pullrequests/{id}/tasks"), &auth).json();
    assert_eq!(tasks["values"][0]["state"], "UNRESOLVED");
    let act = get(
        &format!("{base}/pullrequests/{id}/activity?pagelen=5"),
        &auth,
    )
    .json();
    assert!(act.get("page").is_none() && act.get("size").is_none());
    assert!(act["next"].as_str().unwrap().contains("ctx="));
    let (_, activity) = follow(
        &format!("{base}/pullrequests/{id}/activity?pagelen=5"),
        &auth,
    );
    assert!(activity.iter().all(|a| a["pull_request"]["id"] == id));
    for kind in ["update", "approval", "comment"] {
        assert!(activity.iter().any(|a| a.get(kind).is_some()), "no {kind}");
    }
    assert_eq!(get(&format!("{base}/pullrequests/9999"), &auth).status, 404);
}

#[test]
fn events_bump_updated_on() {
    let (s, auth) = server();
    let pr = s.metadata("ws", "repo", |m| {
        let a = m.add_pull_request(NewPullRequest::new("First", "alice"));
        m.add_pull_request(NewPullRequest::new("Second", "bob"));
        a
    });
    let url = format!(
        "{}/2.0/repositories/ws/repo/pullrequests?sort=-updated_on",
        s.base_url()
    );
    assert_eq!(get(&url, &auth).json()["values"][0]["title"], "Second");
    s.metadata("ws", "repo", |m| {
        m.add_pr_inline_comment(
            pr,
            "carol",
            "here",
            Inline {
                path: "a.rs".into(),
                from: None,
                to: Some(3),
            },
        )
    });
    assert_eq!(get(&url, &auth).json()["values"][0]["title"], "First");
    s.metadata("ws", "repo", |m| {
        m.set_pr_state(pr, "alice", PrState::Merged)
    });
    assert_eq!(get(&url, &auth).json()["values"][0]["title"], "Second");
}

#[test]
fn issue_tracker_off_is_404_and_attachments_redirect_to_a_second_origin() {
    let (s, auth) = server();
    let base = format!("{}/2.0/repositories/ws/repo", s.base_url());
    let r = get(&format!("{base}/issues"), &auth);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["message"], NO_ISSUE_TRACKER);
    assert_eq!(get(&base, &auth).json()["has_issues"], false);
    s.metadata("ws", "repo", |m| {
        m.issue_tracker = true;
        let i = m.add_issue("Broken", "bob");
        m.add_issue_comment(i, "alice", "Confirmed");
        m.change_issue(i, "alice", "state", "resolved");
        m.add_issue_attachment(i, "bob", "trace log.txt", b"stack trace");
        m.add_download("release.zip", "alice", b"zip bytes");
    });
    assert_eq!(get(&base, &auth).json()["has_issues"], true);
    let issues = get(&format!("{base}/issues?sort=-updated_on"), &auth).json();
    assert_eq!(issues["values"][0]["state"], "resolved");
    let changes = get(&format!("{base}/issues/1/changes"), &auth).json();
    assert_eq!(changes["values"][0]["changes"]["state"]["old"], "new");
    let comments = get(&format!("{base}/issues/1/comments"), &auth).json();
    assert_eq!(comments["values"][0]["type"], "issue_comment");
    let att = get(&format!("{base}/issues/1/attachments"), &auth).json();
    let href = att["values"][0]["links"]["self"]["href"]
        .as_str()
        .unwrap()
        .to_string();
    let dl = get(&format!("{base}/downloads"), &auth).json();
    assert_eq!(dl["values"][0]["size"], 9);
    let dl_href = dl["values"][0]["links"]["self"]["href"]
        .as_str()
        .unwrap()
        .to_string();
    for (href, bytes) in [(href, &b"stack trace"[..]), (dl_href, &b"zip bytes"[..])] {
        let r = get(&href, &auth);
        assert_eq!(r.status, 302, "{}", r.text());
        let location = r.header("location").unwrap().to_string();
        assert!(!location.starts_with(&s.base_url()), "{location}");
        let refused = get(&location, &auth);
        assert_eq!(refused.status, 400);
        assert_eq!(refused.text(), TWO_AUTH_MESSAGE);
        let ok = request("GET", &location, &[], b"");
        assert_eq!((ok.status, ok.body.as_slice()), (200, bytes));
    }
    assert_eq!(s.files().refused_with_credentials(), 2);
    assert_eq!(s.files().downloads()["release.zip"], 1);
}

#[test]
fn restricted_scopes_answer_cloud_403() {
    let (s, auth) = server();
    s.restrict_scopes("tok-alice", &["repository"]);
    let base = format!("{}/2.0/repositories/ws/repo", s.base_url());
    assert_eq!(get(&base, &auth).status, 200);
    let r = get(&format!("{base}/pullrequests"), &auth);
    assert_eq!(r.status, 403);
    let j = r.json();
    assert_eq!(j["type"], "error");
    assert_eq!(j["error"]["message"], SCOPES_MESSAGE);
    assert_eq!(
        j["error"]["detail"]["required"],
        serde_json::json!(["pullrequest"])
    );
    assert_eq!(
        j["error"]["detail"]["granted"],
        serde_json::json!(["repository"])
    );
    assert_eq!(get(&format!("{base}/hooks"), &auth).status, 403);
    s.restrict_scopes("acc-1", &["pullrequest", "webhook"]);
    s.restrict_scopes("tok-alice", &["pullrequest", "webhook"]);
    assert_eq!(get(&format!("{base}/pullrequests"), &auth).status, 200);
    assert_eq!(
        get(&base, &auth).status,
        200,
        "pullrequest implies repository"
    );
}

#[test]
fn settings_never_reveal_secrets() {
    let (s, auth) = server();
    s.populate("ws", "repo", &Spec::default());
    s.set_project_default_reviewers("ws", "PROJ", &["bob"]);
    let base = format!("{}/2.0/repositories/ws/repo", s.base_url());
    let hooks = get(&format!("{base}/hooks"), &auth);
    assert!(!hooks.text().contains("hook-secret"));
    assert_eq!(hooks.json()["values"][0]["secret_set"], true);
    let vars = get(&format!("{base}/pipelines_config/variables"), &auth);
    assert!(!vars.text().contains("secured-value"));
    let envs = get(&format!("{base}/environments"), &auth).json();
    let uuid = envs["values"][0]["uuid"].as_str().unwrap();
    let url = format!(
        "{base}/deployments_config/environments/{}/variables",
        uuid.replace('{', "%7B").replace('}', "%7D")
    );
    let evars = get(&url, &auth);
    assert_eq!(evars.status, 200, "{}", evars.text());
    assert!(!evars.text().contains("deploy-secret") && evars.text().contains("DEPLOY_TOKEN"));
    for path in [
        "branch-restrictions",
        "branching-model/settings",
        "default-reviewers",
        "deploy-keys",
        "pipelines_config",
        "pipelines_config/schedules",
    ] {
        assert_eq!(get(&format!("{base}/{path}"), &auth).status, 200, "{path}");
    }
    let ws = format!("{}/2.0/workspaces/ws", s.base_url());
    assert_eq!(get(&ws, &auth).status, 200);
    let projects = get(&format!("{ws}/projects"), &auth).json();
    assert_eq!(projects["values"][0]["key"], "PROJ");
    let dr = get(&format!("{ws}/projects/PROJ/default-reviewers"), &auth).json();
    assert_eq!(dr["values"][0]["user"]["nickname"], "bob");
    let kinds = s.requests_by_endpoint();
    assert_eq!(kinds["/2.0/repositories/{ws}/{slug}/hooks"], 1);
    assert_eq!(s.count_requests(|p| p.contains("/projects")), 2);
}

#[test]
fn wiki_is_cloned_from_the_clone_url_slash_wiki() {
    let (s, _) = server();
    let tmp = TempDir::new("testkit-wiki");
    let bare = tmp.path().join("wiki.git");
    gitutil::init_bare(&bare);
    let mut w = WorkRepo::new();
    w.write("Home.md", "# Wiki\n");
    w.commit("wiki home");
    w.push_all(&bare);
    s.add_wiki("ws", "repo", &bare);
    assert_eq!(
        s.wiki_url("ws", "repo"),
        format!("{}/wiki", s.git_url("ws", "repo"))
    );
    let api = format!("{}/2.0/repositories/ws/repo", s.base_url());
    let auth = basic("alice@example.com", "tok-alice");
    assert_eq!(get(&api, &auth).json()["has_wiki"], true);
    let git_auth = basic("x-bitbucket-api-token-auth", "tok-alice");
    let dest = tmp.path().join("clone.git");
    let header = format!("http.extraHeader=Authorization: {git_auth}");
    let url = s.wiki_url("ws", "repo");
    let clone = |dest: &Path| {
        let dest = dest.to_str().unwrap();
        let args = ["-c", &header, "clone", "--quiet", "--mirror", &url, dest];
        gitutil::try_git(tmp.path(), &args)
    };
    clone(&dest).expect("wiki clone");
    assert_eq!(gitutil::refs_of(&dest), gitutil::refs_of(&bare));
    // Without the wiki scope the wiki is refused.
    s.restrict_scopes("tok-alice", &["repository"]);
    assert!(clone(&tmp.path().join("clone2.git")).is_err());
}
