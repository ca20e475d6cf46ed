//! The Bitbucket Data Center double itself: page shape and `nextPageStart`, personal
//! projects, who sees what with which credential, 429 with `Retry-After`, the context
//! path, and git through `/scm/<key>/<slug>.git` with the real git client, over http
//! and over TLS trusting the test CA.

mod common;

use common::*;
use reposafe_testkit::gitutil::{self, refs_of, try_git, WorkRepo};
use reposafe_testkit::{DcOptions, DcServer, TempDir};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn repo(dir: &Path, name: &str) -> PathBuf {
    let bare = dir.join(format!("{name}.git"));
    gitutil::init_bare(&bare);
    let mut w = WorkRepo::new();
    w.write("a.txt", name);
    w.commit("one");
    w.tag_annotated("v1", "v1");
    w.push_mirror(&bare);
    bare
}

fn server(src: &Path, tls: bool) -> DcServer {
    let s = DcServer::start(DcOptions {
        context_path: "/bitbucket".into(),
        tls,
    });
    for slug in ["a", "b", "c"] {
        s.add_repo("PRJ", slug, &repo(src, &format!("prj-{slug}")), false);
    }
    s.add_repo("OTHER", "x", &repo(src, "other-x"), false);
    s.add_repo("~jdoe", "mine", &repo(src, "jdoe-mine"), false);
    s.add_user("jdoe", "pw");
    s.grant("jdoe", "PRJ");
    s.add_user_token("jdoe", "user-tok");
    s.add_project_token("OTHER", "other-tok");
    s
}

#[test]
fn pages_follow_next_page_start_and_personal_projects_are_only_in_repos() {
    let src = TempDir::new("dc-src");
    let s = server(src.path(), false);
    let base = s.base_url();
    s.set_page_cap(2);
    let auth = basic("jdoe", "pw");

    let p = get(
        &format!("{base}/rest/api/1.0/projects/PRJ/repos?limit=100"),
        &auth,
    )
    .json();
    assert_eq!(p["size"], 2);
    assert_eq!(
        p["limit"], 100,
        "limit is what was asked; the page is shorter"
    );
    assert_eq!(p["isLastPage"], false);
    assert_eq!(p["start"], 0);
    assert_eq!(p["nextPageStart"], 2);
    let http = p["values"][0]["links"]["clone"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "http")
        .unwrap()["href"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        http.contains("://jdoe@127.0.0.1:") && http.ends_with("/bitbucket/scm/prj/a.git"),
        "{http}"
    );
    assert_eq!(p["values"][0]["links"]["clone"][0]["name"], "ssh");
    let last = get(
        &format!("{base}/rest/api/1.0/projects/PRJ/repos?start=2&limit=100"),
        &auth,
    )
    .json();
    assert_eq!(
        (last["size"].as_u64(), last["isLastPage"].as_bool()),
        (Some(1), Some(true))
    );
    assert!(last.get("nextPageStart").is_none());

    s.omit_next_page_start("PRJ");
    let bug = get(&format!("{base}/rest/api/1.0/projects/PRJ/repos"), &auth).json();
    assert_eq!(bug["isLastPage"], false);
    assert!(bug.get("nextPageStart").is_none());

    s.set_page_cap(1000);
    let projects = get(&format!("{base}/rest/api/1.0/projects?limit=10"), &auth).json();
    let keys: Vec<&str> = projects["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["PRJ"], "no personal project, no ungranted project");
    let repos = get(&format!("{base}/rest/api/1.0/repos?limit=10"), &auth).json();
    let personal: Vec<&Value> = repos["values"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["project"]["type"] == "PERSONAL")
        .collect();
    assert_eq!(personal.len(), 1);
    assert_eq!(personal[0]["project"]["key"], "~JDOE");
}

#[test]
fn credentials_see_what_they_should_and_429_carries_retry_after() {
    let src = TempDir::new("dc-src");
    let s = server(src.path(), false);
    let base = s.base_url();
    let url = |p: &str| format!("{base}/rest/api/1.0/{p}");
    assert_eq!(get_anon(&url("projects")).status, 401);
    assert_eq!(get(&url("projects"), &basic("jdoe", "wrong")).status, 401);
    assert_eq!(
        get(&url("projects/OTHER/repos"), &bearer("user-tok")).status,
        401
    );
    assert_eq!(
        get(&url("projects/PRJ/repos"), &bearer("user-tok")).status,
        200
    );
    assert_eq!(
        get(&url("projects/PRJ/repos"), &basic("jdoe", "user-tok")).status,
        200
    );
    assert_eq!(
        get(&url("projects/OTHER/repos"), &bearer("other-tok")).status,
        200
    );
    assert_eq!(
        get(&url("projects/PRJ/repos"), &bearer("other-tok")).status,
        401
    );
    // Project tokens are Bearer only.
    assert_eq!(
        get(&url("projects/OTHER/repos"), &basic("x", "other-tok")).status,
        401
    );
    assert_eq!(
        get(&url("projects/NOPE/repos"), &bearer("other-tok")).status,
        404
    );
    // Outside the context path there is nothing.
    let outside = base.trim_end_matches("/bitbucket").to_string();
    assert_eq!(
        get(
            &format!("{outside}/rest/api/1.0/projects"),
            &bearer("user-tok")
        )
        .status,
        404
    );

    s.fail_api_with_429(1, 7);
    let r = get(&url("projects"), &bearer("user-tok"));
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
    assert!(r.json()["errors"][0]["message"].is_string());
    assert_eq!(get(&url("projects"), &bearer("user-tok")).status, 200);
}

fn clone(url: &str, header: &str, env: &[(&str, &str)], dest: &Path) -> Result<Vec<u8>, String> {
    let mut args = vec![
        "-c".to_string(),
        format!("http.extraHeader=Authorization: {header}"),
    ];
    args.extend(
        ["clone", "--quiet", "--mirror", url]
            .iter()
            .map(|s| s.to_string()),
    );
    args.push(dest.display().to_string());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    gitutil::try_git_with_env(dest.parent().unwrap(), &a, env)
}

#[test]
fn git_clones_over_http_and_tls_with_the_test_ca() {
    let src = TempDir::new("dc-src");
    for tls in [false, true] {
        let s = server(src.path(), tls);
        let out = TempDir::new("dc-clone");
        let ca = out.path().join("ca.pem");
        let mut env: Vec<(&str, &str)> = Vec::new();
        let ca_s = ca.display().to_string();
        if let Some(pem) = s.ca_pem() {
            std::fs::write(&ca, pem).unwrap();
            env.push(("GIT_SSL_CAINFO", &ca_s));
        }
        let url = format!("{}/scm/prj/a.git", s.base_url());
        let dest = out.path().join("a.git");
        clone(&url, &bearer("user-tok"), &env, &dest).expect("clone with a Bearer user token");
        assert_eq!(refs_of(&dest), refs_of(&src.path().join("prj-a.git")));
        let dest = out.path().join("mine.git");
        clone(
            &format!("{}/scm/~jdoe/mine.git", s.base_url()),
            &basic("jdoe", "pw"),
            &env,
            &dest,
        )
        .expect("clone a personal repository with Basic");
        let dest = out.path().join("denied.git");
        assert!(clone(
            &format!("{}/scm/other/x.git", s.base_url()),
            &bearer("user-tok"),
            &env,
            &dest
        )
        .is_err());
        if tls {
            // Without the CA, git refuses the certificate.
            let dest = out.path().join("untrusted.git");
            let err = clone(
                &url,
                &bearer("user-tok"),
                &[("GIT_SSL_CAINFO", "/dev/null")],
                &dest,
            )
            .expect_err("an untrusted certificate fails");
            assert!(
                err.to_lowercase().contains("certificate") || err.contains("SSL"),
                "{err}"
            );
        }
        s.fail_git_with_429(1, 3);
        let dest = out.path().join("limited.git");
        let err = clone(&url, &bearer("user-tok"), &env, &dest).expect_err("429");
        assert!(err.contains("429"), "{err}");
        assert!(try_git(out.path(), &["--version"]).is_ok());
    }
}
