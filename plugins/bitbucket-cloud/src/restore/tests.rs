//! The pure parts of restoring: kinds, the new repository's body, pull
//! requests read from Cloud and Data Center snapshots, the issue database.

use super::*;
use crate::reposafe::provider::types::Repository;

fn source_repo(scope: &str) -> Repository {
    Repository {
        id: "{r}".into(),
        full_name: format!("{scope}/app"),
        slug: "app".into(),
        scope: scope.into(),
        clone_url: "https://bitbucket.org/acme/app.git".into(),
        is_private: true,
        main_branch: Some("main".into()),
        size: None,
        updated: None,
        has_wiki: false,
        has_lfs: false,
        fork_parent: None,
    }
}

fn new_repo(source_provider: &str, original: Value, scope: &str) -> NewRepository {
    NewRepository {
        scope: scope.into(),
        slug: "app".into(),
        project: None,
        source_provider: source_provider.into(),
        source: source_repo("acme"),
        original: Some(original.to_string()),
    }
}

fn ctx(renamed: &[(&str, &str)]) -> RestoreContext {
    RestoreContext {
        source_provider: "bitbucket-cloud".into(),
        source_full_name: "acme/app".into(),
        snapshot_taken_at: "2026-11-30T00:00:00Z".into(),
        renamed_refs: renamed
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    }
}

#[test]
fn kinds_per_source_in_order() {
    let names = |p: &str| {
        kinds(p)
            .into_iter()
            .map(|k| (k.name, k.whole))
            .collect::<Vec<_>>()
    };
    let cloud = names("bitbucket-cloud");
    assert_eq!(cloud[0], ("repository".to_string(), false));
    assert_eq!(cloud[1], ("issues".to_string(), true));
    assert_eq!(cloud[2], ("pullrequests".to_string(), false));
    assert_eq!(cloud.len(), 9);
    assert_eq!(
        names("bitbucket-dc"),
        [
            ("repository".to_string(), false),
            ("pullrequests".to_string(), false)
        ]
    );
    assert!(names("gitlab").is_empty());
}

#[test]
fn new_repository_from_a_cloud_original() {
    let original = json!({"description": "The app", "language": "rust", "fork_policy": "no_forks",
        "is_private": false, "has_issues": true, "has_wiki": false, "project": {"key": "WEB"}});
    let body = new_repository_body(&new_repo("bitbucket-cloud", original.clone(), "acme"));
    assert_eq!(body["scm"], "git");
    assert_eq!(body["is_private"], false);
    assert_eq!(body["description"], "The app");
    assert_eq!(body["language"], "rust");
    assert_eq!(body["fork_policy"], "no_forks");
    assert_eq!(body["has_issues"], true);
    assert_eq!(body["project"], json!({"key": "WEB"}));
    // Another workspace: the original's project is not there.
    let body = new_repository_body(&new_repo("bitbucket-cloud", original.clone(), "other"));
    assert!(body.get("project").is_none(), "{body}");
    // The asked project wins.
    let mut asked = new_repo("bitbucket-cloud", original, "other");
    asked.project = Some("DR".into());
    assert_eq!(new_repository_body(&asked)["project"], json!({"key": "DR"}));
}

#[test]
fn new_repository_from_a_data_center_original() {
    let original =
        json!({"slug": "app", "public": true, "forkable": false, "description": "DC app"});
    let body = new_repository_body(&new_repo("bitbucket-dc", original, "acme"));
    assert_eq!(body["is_private"], false);
    assert_eq!(body["description"], "DC app");
    assert_eq!(body["fork_policy"], "no_forks");
}

#[test]
fn branches_follow_the_renamed_refs() {
    let c = ctx(&[("refs/heads/main", "refs/heads/restored/s1/main")]);
    assert_eq!(branch_now(&c, "main"), "restored/s1/main");
    assert_eq!(branch_now(&c, "dev"), "dev");
}

#[test]
fn a_cloud_pull_request_is_quoted_with_its_comments() {
    let doc = json!({
        "pullrequest": {"id": 7, "title": "Fix", "description": "Body", "state": "OPEN",
            "author": {"display_name": "Jane Doe"}, "created_on": "2026-01-02T10:00:00+00:00",
            "updated_on": "2026-01-03T10:00:00+00:00",
            "source": {"branch": {"name": "feature/fix"}}, "destination": {"branch": {"name": "main"}}},
        "comments": [
            {"content": {"raw": "second\nline"}, "user": {"display_name": "Bob"},
             "created_on": "2026-01-02T12:00:00+00:00", "inline": {"path": "a.rs", "to": 3}},
            {"content": {"raw": "first"}, "user": {"display_name": "Al"},
             "created_on": "2026-01-02T11:00:00+00:00"},
            {"content": {"raw": "gone"}, "deleted": true, "created_on": "2026-01-02T13:00:00+00:00"},
        ],
    });
    let p = pulls::read(&doc);
    assert_eq!(p.number, "7");
    assert_eq!(p.source.as_deref(), Some("feature/fix"));
    let d = pulls::description(&p, &ctx(&[]));
    assert!(
        d.starts_with("> Originally opened by Jane Doe on 2026-01-02T10:00:00+00:00, last updated 2026-01-03T10:00:00+00:00 (#7 in acme/app"),
        "{d}"
    );
    assert!(d.ends_with("\n\nBody"), "{d}");
    let t = pulls::thread(&p).expect("comments");
    assert_eq!(
        t,
        "Comments of the original pull request #7:\n\n> **Al** on 2026-01-02T11:00:00+00:00:\n>\n> first\n\n\
         > **Bob** on 2026-01-02T12:00:00+00:00 (on a.rs line 3):\n>\n> second\n> line"
    );
}

#[test]
fn a_data_center_pull_request_is_read_too() {
    let doc = json!({
        "pullrequest": {"id": 3, "title": "DC", "state": "OPEN",
            "author": {"user": {"displayName": "Dee"}}, "createdDate": 1_767_225_600_000_i64,
            "fromRef": {"displayId": "topic"}, "toRef": {"displayId": "master"}},
        "activities": [{"action": "COMMENTED", "comment": {"text": "hi", "author": {"displayName": "Eve"},
            "createdDate": 1_767_225_660_000_i64}}, {"action": "APPROVED"}],
    });
    let p = pulls::read(&doc);
    assert_eq!(p.author, "Dee");
    assert_eq!(p.created.as_deref(), Some("2026-01-01T00:00:00.000Z"));
    assert_eq!(
        (p.source.as_deref(), p.destination.as_deref()),
        (Some("topic"), Some("master"))
    );
    assert_eq!(p.comments.len(), 1);
    assert_eq!(p.comments[0].0, "Eve");
}

#[test]
fn the_issue_database_keeps_ids_reporters_and_dates() {
    let doc = json!({
        "issue": {"id": 4, "title": "Crash", "content": {"raw": "It crashes"}, "state": "open",
            "kind": "bug", "priority": "major", "reporter": {"display_name": "Rae", "account_id": "rae"},
            "assignee": null, "created_on": "2026-01-01T00:01:00+00:00",
            "updated_on": "2026-01-01T00:05:00+00:00", "milestone": {"name": "M1"}},
        "comments": [{"id": 9, "content": {"raw": "me too"}, "user": {"display_name": "Sam", "account_id": "sam"},
            "created_on": "2026-01-01T00:02:00+00:00"}],
        "changes": [{"changes": {"state": {"old": "new", "new": "open"}}, "user": {"account_id": "rae"},
            "created_on": "2026-01-01T00:03:00+00:00"}],
        "attachments": [{"name": "log.txt"}],
    });
    let (db, files) = issues::database(&[doc]);
    let issue = &db["issues"][0];
    assert_eq!(issue["id"], 4);
    assert_eq!(
        issue["reporter"],
        json!({"display_name": "Rae", "account_id": "rae"})
    );
    assert_eq!(issue["created_on"], "2026-01-01T00:01:00+00:00");
    assert_eq!(issue["status"], "open");
    assert_eq!(issue["milestone"], "M1");
    assert_eq!(db["milestones"], json!([{"name": "M1"}]));
    assert_eq!(db["comments"][0]["issue"], 4);
    assert_eq!(db["logs"][0]["field"], "state");
    assert_eq!(db["logs"][0]["changed_to"], "open");
    assert_eq!(db["attachments"][0]["path"], "attachments/4/0-log.txt");
    assert_eq!(files, [("attachments/4/0-log.txt".to_string(), 0, 0)]);
    assert_eq!(db["meta"]["default_kind"], "bug");
}
