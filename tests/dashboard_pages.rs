//! The dashboard's pages over plain HTTP (the browser test drives the same pages in
//! Chromium): a signed-in session adds a Cloud connection with the advanced form,
//! tests it, adds an additional credential and disables it, creates a plan with a
//! window and previews it (schedule read in words, next runs, matching
//! repositories), runs it now, and sees every page answer; forms without the
//! session's CSRF token change nothing.

mod common;

use common::*;
use reposafe_testkit::cloud::{CloudServer, RepoMeta};
use reposafe_testkit::gitutil::{self, WorkRepo};
use reposafe_testkit::tempdir::TempDir;
use std::time::{Duration, Instant};

const EMAIL: &str = "ops@acme.test";
const TOKEN: &str = "dash-primary-token";
const SECOND_EMAIL: &str = "second@acme.test";
const SECOND: &str = "dash-second-token";

struct Browser {
    url: String,
    http: reqwest::blocking::Client,
    cookie: String,
    csrf: String,
}

fn encode(fields: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

/// The answer to one request: status, `Location`, body.
struct Page {
    status: u16,
    location: Option<String>,
    body: String,
}

impl Browser {
    fn sign_in(url: &str, token: &str) -> Browser {
        let http = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let login = http
            .post(format!("{url}/login"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(encode(&[("token", token)]))
            .send()
            .expect("login");
        assert_eq!(login.status().as_u16(), 303);
        let cookie = login
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|c| c.split(';').next())
            .expect("session cookie")
            .to_string();
        let mut b = Browser {
            url: url.to_string(),
            http,
            cookie,
            csrf: String::new(),
        };
        let home = b.get("/");
        b.csrf = home
            .body
            .split("name=\"csrf-token\" content=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("csrf meta")
            .to_string();
        b
    }

    fn answer(resp: reqwest::blocking::Response) -> Page {
        Page {
            status: resp.status().as_u16(),
            location: resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            body: resp.text().unwrap_or_default(),
        }
    }

    fn get(&self, path: &str) -> Page {
        Self::answer(
            self.http
                .get(format!("{}{path}", self.url))
                .header("Cookie", &self.cookie)
                .send()
                .expect("GET"),
        )
    }

    /// Posts a form with the session's CSRF token, as the page's forms do.
    fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(path, &all)
    }

    fn post_raw(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        Self::answer(
            self.http
                .post(format!("{}{path}", self.url))
                .header("Cookie", &self.cookie)
                .header("Origin", &self.url)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(encode(fields))
                .send()
                .expect("POST"),
        )
    }

    /// Posts, expects a redirect, and returns the page it leads to.
    fn post_follow(&self, path: &str, fields: &[(&str, &str)]) -> (String, Page) {
        let p = self.post(path, fields);
        assert_eq!(p.status, 303, "POST {path}: {}", p.body);
        let to = p.location.expect("Location");
        (to.clone(), self.get(&to))
    }
}

fn cloud_with_repos() -> (CloudServer, TempDir) {
    let server = CloudServer::start();
    server.add_api_token("ops", EMAIL, TOKEN);
    server.grant("ops", "acme");
    server.add_api_token("second", SECOND_EMAIL, SECOND);
    server.grant("second", "acme");
    let src = TempDir::new("dash-src");
    for name in ["app", "lib", "old-tool"] {
        let mut work = WorkRepo::new();
        work.write("README", format!("{name}\n"));
        work.commit("first");
        let bare = src.path().join(format!("{name}.git"));
        gitutil::init_bare(&bare);
        work.push_mirror(&bare);
        server.add_repo("acme", name, &bare, RepoMeta::default());
    }
    (server, src)
}

fn flash(p: &Page) -> String {
    p.body
        .split("id=\"flash\"")
        .nth(1)
        .and_then(|r| r.split('>').nth(1))
        .and_then(|r| r.split('<').next())
        .unwrap_or("")
        .to_string()
}

#[test]
fn an_admin_sets_up_and_runs_a_plan_from_the_dashboard() {
    let (server, _src) = cloud_with_repos();
    let rs = Reposafe::new();
    let mut daemon = start_daemon(&rs);
    let (url, token) = wait_for_daemon(rs.data_dir());
    let b = Browser::sign_in(&url, &token);
    let base = server.base_url();

    // Without signing in, a page is the sign-in form that says where the token is.
    let anon = reqwest::blocking::get(format!("{url}/plans")).expect("anon");
    assert_eq!(anon.status().as_u16(), 401);
    assert!(anon.text().unwrap().contains("api-token"));

    // Add the connection with the advanced form (an API token).
    let (to, page) = b.post_follow(
        "/connections/new",
        &[
            ("provider", "bitbucket-cloud"),
            ("name", "acme"),
            ("kind", "api-token"),
            ("identity", EMAIL),
            ("secret", TOKEN),
            ("setting:workspace", "acme"),
            ("setting:api-base-url", &base),
            ("setting:git-base-url", &base),
        ],
    );
    assert_eq!(to.split('?').next(), Some("/connections/acme"));
    assert!(
        flash(&page).contains("connection acme added"),
        "{}",
        page.body
    );
    assert!(!page.body.contains(TOKEN), "the secret is never shown");

    // A wrong form is refused with a message naming the field, and nothing is added.
    let (_, bad) = b.post_follow("/connections/new", &[("provider", "bitbucket-cloud")]);
    assert!(flash(&bad).contains("name: is required"), "{}", bad.body);

    // Test: the last check shows on the list.
    let (_, tested) = b.post_follow("/connections/acme/test", &[]);
    assert!(flash(&tested).contains("works"), "{}", tested.body);
    let list = b.get("/connections");
    assert!(list.body.contains("data-connection=\"acme\""));
    assert!(
        list.body.contains("class=\"ok\""),
        "last check ok: {}",
        list.body
    );

    // An additional credential, then disabled with its toggle.
    let (_, added) = b.post_follow(
        "/connections/acme/credentials",
        &[
            ("kind", "api-token"),
            ("identity", SECOND_EMAIL),
            ("secret", SECOND),
            ("label", "second"),
        ],
    );
    assert!(flash(&added).contains("credential added"), "{}", added.body);
    let id = added
        .body
        .split("data-credential=\"")
        .skip(1)
        .filter_map(|r| r.split('"').next())
        .find(|id| *id != "primary")
        .expect("the additional credential's row")
        .to_string();
    let (_, toggled) = b.post_follow(
        &format!("/connections/acme/credentials/{id}/toggle"),
        &[("enable", "0")],
    );
    assert!(flash(&toggled).contains("disabled"), "{}", toggled.body);

    // A form without the CSRF token changes nothing.
    let refused = b.post_raw("/connections/acme/remove", &[]);
    assert_eq!(refused.status, 403);
    assert_eq!(b.get("/connections/acme").status, 200);

    // Preview a plan: the schedule in words, 5 next runs, the matching repositories.
    let plan = [
        ("name", "nightly"),
        ("connections", "acme"),
        ("include", "*"),
        ("exclude", "acme/old-*"),
        ("auto_add", "1"),
        ("schedule", "30 2 * * 1-5"),
        ("timezone", "Europe/Warsaw"),
        ("window", "00:00-00:00"),
        ("additional", "all"),
    ];
    let preview = b.post("/plans/preview", &plan);
    assert_eq!(preview.status, 200, "{}", preview.body);
    assert!(preview.body.contains("window"), "{}", preview.body);
    let window_error = preview.body.contains("preview-error");
    assert!(
        window_error,
        "a window whose start equals its end is refused: {}",
        preview.body
    );
    let mut plan = plan.to_vec();
    plan.retain(|(k, _)| *k != "window");
    plan.push(("window", "00:01-00:00"));
    let preview = b.post("/plans/preview", &plan);
    assert!(
        preview.body.contains("at 02:30, on Monday to Friday"),
        "{}",
        preview.body
    );
    let runs = preview
        .body
        .split("id=\"preview-runs\"")
        .nth(1)
        .unwrap_or("");
    let runs = runs.split("</ol>").next().unwrap_or("");
    assert_eq!(runs.matches("<li>").count(), 5, "five next runs: {runs}");
    assert!(
        preview.body.contains("<li>acme/app</li>") && preview.body.contains("<li>acme/lib</li>")
    );
    assert!(!preview.body.contains("<li>acme/old-tool</li>"), "excluded");
    assert!(
        b.get("/plans/nightly").status == 404,
        "a preview saves nothing"
    );

    // Retention rules are checked by name; saved ones show on the plan's page.
    let mut with_bad_rule = plan.clone();
    with_bad_rule.push(("keep_daily", "many"));
    let refused = b.post("/plans/new", &with_bad_rule);
    assert!(refused.body.contains("keep_daily"), "{}", refused.body);
    assert!(
        refused.body.contains("is not a number of snapshots"),
        "{}",
        refused.body
    );
    assert_eq!(b.get("/plans/nightly").status, 404);
    plan.extend([
        ("keep_daily", "7"),
        ("keep_monthly", "12"),
        ("keep_within", "2w"),
        ("keep_deleted_for", "1y"),
        ("check_every", "7d"),
        ("check_subset", "10"),
    ]);

    // Save it, run it now: the job page follows it to the end.
    let (to, saved) = b.post_follow("/plans/new", &plan);
    assert!(
        saved
            .body
            .contains("Retention: keep daily 7, monthly 12, all within 14d of the newest"),
        "{}",
        saved.body
    );
    assert!(
        saved.body.contains("kept 1y, then the same rules"),
        "{}",
        saved.body
    );
    assert!(
        saved
            .body
            .contains("Check: every 7d, 10% read back; last -"),
        "{}",
        saved.body
    );
    assert_eq!(
        to.split('?').next(),
        Some("/plans/nightly"),
        "{}",
        saved.body
    );
    let run = b.post("/plans/nightly/run", &[]);
    assert_eq!(run.status, 303);
    let job_path = run.location.expect("job page");
    assert!(job_path.starts_with("/jobs/"), "{job_path}");
    let id: u64 = job_path["/jobs/".len()..].parse().expect("job id");
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        let j: serde_json::Value = reqwest::blocking::Client::new()
            .get(format!("{url}/api/v1/jobs/{id}"))
            .bearer_auth(&token)
            .send()
            .and_then(|r| r.json())
            .expect("job");
        if j["state"] != "queued" && j["state"] != "running" {
            break j;
        }
        assert!(Instant::now() < deadline, "job did not end: {j}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["progress"]["repos_total"], 2, "{job}");
    // The plan's retention and its first check (10% of the blobs read back) ran.
    let notice = job["progress"]["notice"].as_str().unwrap_or("");
    assert!(
        notice.starts_with("retention: 0 snapshots removed, 2 kept; check: 2 snapshots")
            && notice.ends_with("read back: all intact"),
        "{job}"
    );

    // A repository's page says which plan's retention applies and what it keeps.
    let repo_page = b.get("/repositories/acme/acme/app");
    assert_eq!(repo_page.status, 200, "{}", repo_page.body);
    assert!(
        repo_page
            .body
            .contains("keep daily 7, monthly 12, all within 14d of the newest"),
        "{}",
        repo_page.body
    );
    assert!(
        repo_page
            .body
            .contains("kept: daily, monthly, within, newest"),
        "{}",
        repo_page.body
    );

    // Disable, then every page answers; the overview shows the plan and the archive.
    let (_, disabled) = b.post_follow("/plans/nightly/disable", &[]);
    assert!(flash(&disabled).contains("disabled"), "{}", disabled.body);
    for path in [
        "/",
        "/connections",
        "/connections/new",
        "/connections/acme",
        "/plans",
        "/plans/new",
        "/plans/nightly",
    ] {
        let p = b.get(path);
        assert_eq!(p.status, 200, "{path}: {}", p.body);
        assert!(
            !p.body.contains(TOKEN) && !p.body.contains(SECOND),
            "{path} shows a secret"
        );
    }
    let home = b.get("/");
    assert!(home.body.contains("data-plan=\"nightly\""), "{}", home.body);
    assert!(home.body.contains("id=\"dedup\""));
    assert!(
        home.body.contains("not encrypted"),
        "the overview says whether the archive is encrypted: {}",
        home.body
    );
    assert_eq!(b.get("/plans/nope").status, 404);

    // Delete asks first (data-confirm) and keeps the snapshots.
    assert!(b
        .get("/plans/nightly")
        .body
        .contains("data-confirm=\"Delete plan nightly?"));
    let (_, deleted) = b.post_follow("/plans/nightly/delete", &[]);
    assert!(flash(&deleted).contains("deleted"), "{}", deleted.body);
    daemon.kill().ok();
    daemon.wait().ok();
}
