//! The Data Center provider's write side (world 0.4.0) against the DC test double,
//! driven through the library's `ProviderSession` with a gate that allows writes: a
//! repository is found or created (409 → conflict), the `repository` document and the
//! open pull requests of Data Center and Bitbucket Cloud snapshots are written back
//! (renamed branches followed, the original author and dates quoted, comments as one
//! thread), a second call duplicates nothing, and nothing is written without a gate that
//! allows writes.

mod common;

use common::sessions::gate;
use reposafe::providers::{
    FileSource, LoadedProvider, NewRepository, ProviderError, ProviderRegistry, ProviderSession,
    Repository, RestoreContext, RestoreDocument, RestoreOutcome,
};
use reposafe::vault::CredentialKind;
use reposafe_testkit::gitutil::WorkRepo;
use reposafe_testkit::metadata::NewPullRequest;
use reposafe_testkit::{DcOptions, DcServer, TempDir};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

const KEY: &str = "PRJ";
const USER: &str = "restorer";
const PASSWORD: &str = "restorer-password";

fn provider() -> &'static LoadedProvider {
    static REG: OnceLock<ProviderRegistry> = OnceLock::new();
    let reg = REG.get_or_init(|| {
        ProviderRegistry::load_with(None, Some(&common::component_cache()), &[])
            .expect("the built-in providers load")
    });
    let p = reg.get("bitbucket-dc").expect("built-in provider");
    assert!(p.wit_version() >= "0.4.0", "{}", p.wit_version());
    p
}

fn session(server: &DcServer, writes: bool) -> ProviderSession<'static> {
    let p = provider();
    let given = BTreeMap::from([("base-url".to_string(), server.base_url())]);
    let settings = p.info().resolve_settings(&given).expect("settings");
    let origins = p.info().credential_origins(&given, &settings);
    let g = gate(p, &origins, CredentialKind::Basic, Some(USER), PASSWORD);
    let g = if writes { g.allowing_writes() } else { g };
    p.session(&settings, CredentialKind::Basic, Arc::new(g))
}

struct NoFiles;
impl FileSource for NoFiles {
    fn read(&self, blob: &str, _: u64, _: u32) -> Result<Vec<u8>, String> {
        Err(format!("no file {blob}"))
    }
}

fn server() -> DcServer {
    let server = DcServer::start(DcOptions::default());
    server.add_project(KEY, "Project");
    server.add_user(USER, PASSWORD);
    server.grant(USER, KEY);
    server.grant_admin(USER, KEY);
    server
}

/// A work repository with `main`, `feature/a`, `feature/b`.
fn work() -> WorkRepo {
    let mut w = WorkRepo::new();
    w.write("README", "hello\n").commit("init");
    for b in ["feature/a", "feature/b"] {
        w.branch(b).checkout(b).write(b, b).commit(b);
        w.checkout("main");
    }
    w
}

fn doc(id: &str, json: Value) -> RestoreDocument {
    RestoreDocument {
        id: id.to_string(),
        updated_on: None,
        json: json.to_string(),
        files: Vec::new(),
    }
}

fn ctx(provider: &str, renamed: &[(&str, &str)]) -> RestoreContext {
    RestoreContext {
        source_provider: provider.to_string(),
        source_full_name: "OLD/app".to_string(),
        snapshot_taken_at: "2026-11-01T10:00:00Z".to_string(),
        renamed_refs: renamed
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    }
}

/// The documents of `kind` of `key/slug` as the provider backs them up.
fn backed_up(s: &ProviderSession<'_>, repo: &Repository, kind: &str) -> Vec<RestoreDocument> {
    let page = s.list_documents(repo, kind, None, None).expect("list");
    assert!(page.next.is_none());
    page.documents
        .into_iter()
        .map(|d| RestoreDocument {
            id: d.id,
            updated_on: d.updated_on,
            json: d.json,
            files: Vec::new(),
        })
        .collect()
}

/// Restores `docs` of `kind` twice: written the first time, skipped as existing the second.
fn restored_then_skipped(
    s: &ProviderSession<'_>,
    repo: &Repository,
    kind: &str,
    docs: &[RestoreDocument],
) {
    let c = ctx("bitbucket-dc", &[]);
    for round in 0..2 {
        let out = outcomes(
            s.restore_documents(repo, kind, &c, docs, Arc::new(NoFiles))
                .expect(kind),
        );
        assert_eq!(out.len(), docs.len());
        for o in out.values() {
            match round {
                0 => assert!(matches!(o, RestoreOutcome::Restored(_)), "{kind}: {o:?}"),
                _ => assert!(
                    matches!(o, RestoreOutcome::Skipped(m) if m.starts_with("already exists")),
                    "{kind}: {o:?}"
                ),
            }
        }
    }
}

fn outcomes(r: Vec<reposafe::providers::RestoredDocument>) -> BTreeMap<String, RestoreOutcome> {
    r.into_iter().map(|d| (d.id, d.outcome)).collect()
}

/// A DC source repository (pull requests, settings) and a target repository created
/// from it through the provider, with the source's git pushed into it.
struct Target {
    _scratch: TempDir,
    server: DcServer,
    s: ProviderSession<'static>,
    source: Repository,
    created: Repository,
    original: Value,
    pr_docs: Vec<RestoreDocument>,
}

fn target() -> Target {
    let scratch = TempDir::new("dc-restore");
    let server = server();
    // The source: a DC repository with two open pull requests (one with comments) and a
    // merged one.
    let mut w = work();
    let src_bare = scratch.path().join("src.git");
    reposafe_testkit::gitutil::init_bare(&src_bare);
    w.push_mirror(&src_bare);
    server.add_repo(KEY, "src", &src_bare, false);
    server.metadata(KEY, "src", |m| {
        let mut a = NewPullRequest::new("Feature A", "jane");
        a.source = "feature/a".into();
        let a = m.add_pull_request(a);
        m.add_pr_comment(a, "bob", "Looks good\nbut rename it");
        let mut b = NewPullRequest::new("Feature B", "jane");
        b.source = "feature/b".into();
        m.add_pull_request(b);
        let mut c = NewPullRequest::new("Old work", "bob");
        c.source = "feature/b".into();
        c.state = reposafe_testkit::metadata::PrState::Merged;
        m.add_pull_request(c);
        m.settings.required_approvers = 2;
        m.settings.merge_strategies = vec!["squash".into(), "no-ff".into()];
        m.add_webhook(
            "https://ci.example.com/hook",
            &["repo:refs_changed"],
            Some("s3cr3t"),
        );
        m.add_branch_restriction("push", "main", &["jane"], None);
        m.default_reviewers = vec!["jane".to_string()];
        m.branching_model.development = Some("develop".into());
        m.branching_model.types = vec![("feature".into(), "feat/".into())];
        m.add_deploy_key(
            "ci",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIRestoreKey ci@example",
        );
    });
    let s = session(&server, true);
    let source = s
        .find_repository(KEY, "src")
        .expect("find")
        .expect("exists");
    let repo_docs = backed_up(&s, &source, "repository");
    let pr_docs = backed_up(&s, &source, "pullrequests");
    let mut original: Value = serde_json::from_str(&repo_docs[0].json).expect("json");
    original["description"] = json!("The app");
    original["forkable"] = json!(false);

    let kinds: Vec<String> = s
        .restorable_kinds("bitbucket-dc")
        .expect("kinds")
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(
        kinds,
        [
            "repository",
            "pullrequests",
            "pull-request-settings",
            "branch-permissions",
            "default-reviewers",
            "branching-model",
            "webhooks",
            "access-keys"
        ]
    );
    let cloud: Vec<String> = s
        .restorable_kinds("bitbucket-cloud")
        .expect("kinds")
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(
        cloud,
        ["repository", "pullrequests"],
        "no issues: DC has no tracker"
    );

    assert!(s.find_repository(KEY, "app").expect("find").is_none());
    let new = NewRepository {
        scope: KEY.to_string(),
        slug: "app".to_string(),
        project: None,
        source_provider: "bitbucket-dc".to_string(),
        source: source.clone(),
        original: Some(original.to_string()),
    };
    let created = s.create_repository(&new).expect("create");
    assert_eq!(created.full_name, "PRJ/app");
    let again = s.create_repository(&new);
    assert!(
        matches!(&again, Err(ProviderError::Conflict(m)) if m.contains("PRJ/app")),
        "{again:?}"
    );
    // git (the host pushes it; here straight into the double's bare repository), with
    // `main` renamed as if the target had it.
    let bare = server
        .repo_path(KEY, "app")
        .expect("created bare repository");
    w.push_mirror(&bare);
    Target {
        _scratch: scratch,
        server,
        s,
        source,
        created,
        original,
        pr_docs,
    }
}

#[test]
fn a_repository_is_created_and_dc_and_cloud_documents_are_restored_once() {
    let Target {
        server,
        s,
        created,
        original,
        pr_docs,
        ..
    } = target();
    let bare = server.repo_path(KEY, "app").expect("created");

    let restored = s
        .restore_documents(
            &created,
            "repository",
            &ctx("bitbucket-dc", &[]),
            &[doc("repository", original.clone())],
            Arc::new(NoFiles),
        )
        .expect("repository");
    assert_eq!(
        outcomes(restored)["repository"],
        RestoreOutcome::Restored("repository".into())
    );
    let head = reposafe_testkit::gitutil::git(&bare, &["symbolic-ref", "HEAD"]);
    assert_eq!(head.trim(), "refs/heads/main");
    let shown: Value = reqwest::blocking::Client::new()
        .get(format!(
            "{}/rest/api/1.0/projects/{KEY}/repos/app",
            server.base_url()
        ))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .and_then(|r| r.json())
        .expect("the repository");
    assert_eq!(
        (&shown["description"], &shown["forkable"]),
        (&json!("The app"), &json!(false))
    );

    let c = ctx("bitbucket-dc", &[]);
    let first = outcomes(
        s.restore_documents(&created, "pullrequests", &c, &pr_docs, Arc::new(NoFiles))
            .expect("prs"),
    );
    let restored_ids: Vec<&RestoreOutcome> = first
        .values()
        .filter(|o| matches!(o, RestoreOutcome::Restored(_)))
        .collect();
    assert_eq!(restored_ids.len(), 2, "{first:?}");
    assert!(
        first
            .values()
            .any(|o| matches!(o, RestoreOutcome::Skipped(m) if m.contains("not open"))),
        "{first:?}"
    );
    let prs = server.metadata(KEY, "app", |m| m.pull_requests.clone());
    assert_eq!(prs.len(), 2);
    let a = prs.iter().find(|p| p.title == "Feature A").expect("A");
    assert!(
        a.description.starts_with("> Originally opened by"),
        "{}",
        a.description
    );
    assert!(a.description.contains("Jane"), "{}", a.description);
    assert_eq!(a.comments.len(), 1, "one quoted thread");
    assert!(
        a.comments[0].text.contains("> Looks good\n> but rename it"),
        "{}",
        a.comments[0].text
    );

    // A second call duplicates nothing.
    let second = outcomes(
        s.restore_documents(&created, "pullrequests", &c, &pr_docs, Arc::new(NoFiles))
            .expect("prs"),
    );
    assert!(
        second
            .values()
            .filter(
                |o| matches!(o, RestoreOutcome::Skipped(m) if m.starts_with("already exists: #"))
            )
            .count()
            == 2,
        "{second:?}"
    );
    assert_eq!(server.metadata(KEY, "app", |m| m.pull_requests.len()), 2);

    // A Cloud snapshot's pull request, its source branch renamed on push.
    let cloud_pr = json!({"pullrequest": {"id": 7, "title": "From Cloud", "state": "OPEN",
        "description": "cloud text", "author": {"display_name": "Ann Cloud"},
        "created_on": "2026-01-02T03:04:05+00:00", "updated_on": "2026-01-03T00:00:00+00:00",
        "source": {"branch": {"name": "topic"}}, "destination": {"branch": {"name": "main"}}},
        "comments": [{"content": {"raw": "first"}, "user": {"display_name": "Carl"}, "created_on": "2026-01-02T05:00:00+00:00"},
                     {"content": {"raw": "gone"}, "user": {"display_name": "Carl"}, "deleted": true}]});
    let cc = ctx(
        "bitbucket-cloud",
        &[("refs/heads/topic", "refs/heads/feature/a")],
    );
    let out = outcomes(
        s.restore_documents(
            &created,
            "pullrequests",
            &cc,
            &[doc("7", cloud_pr.clone())],
            Arc::new(NoFiles),
        )
        .expect("cloud pr"),
    );
    // feature/a → main is open already (Feature A): DC's 409 names it.
    assert!(
        matches!(&out["7"], RestoreOutcome::Skipped(m) if m.starts_with("already exists: #")),
        "{out:?}"
    );
    let cc = ctx(
        "bitbucket-cloud",
        &[
            ("refs/heads/topic", "refs/heads/feature/b"),
            ("refs/heads/main", "refs/heads/feature/a"),
        ],
    );
    let out = outcomes(
        s.restore_documents(
            &created,
            "pullrequests",
            &cc,
            &[doc("7", cloud_pr)],
            Arc::new(NoFiles),
        )
        .expect("cloud pr"),
    );
    assert!(matches!(&out["7"], RestoreOutcome::Restored(_)), "{out:?}");
    let p = server
        .metadata(KEY, "app", |m| {
            m.pull_requests
                .iter()
                .find(|p| p.title == "From Cloud")
                .cloned()
        })
        .expect("cloud PR");
    assert_eq!(
        (p.source.as_str(), p.destination.as_str()),
        ("feature/b", "feature/a")
    );
    assert!(
        p.description
            .contains("Ann Cloud on 2026-01-02T03:04:05+00:00"),
        "{}",
        p.description
    );
    assert!(p.comments[0].text.contains("> first") && !p.comments[0].text.contains("gone"));
    let cloud_repo = json!({"description": "from cloud", "mainbranch": {"name": "main"}});
    let out = outcomes(
        s.restore_documents(
            &created,
            "repository",
            &ctx("bitbucket-cloud", &[]),
            &[doc("repository", cloud_repo)],
            Arc::new(NoFiles),
        )
        .expect("repo"),
    );
    assert_eq!(
        out["repository"],
        RestoreOutcome::Restored("repository".into())
    );

    let v = server.request_log();
    assert!(v
        .iter()
        .any(|r| r.method == "PUT" && r.path.ends_with("/repos/app") && r.status == 200));
}

#[test]
fn the_settings_kinds_are_restored_once() {
    let Target {
        server,
        s,
        source,
        created,
        ..
    } = target();
    let c = ctx("bitbucket-dc", &[]);
    // Settings: the pull request settings, and the webhook (its secret for the user).
    let settings_docs = backed_up(&s, &source, "pull-request-settings");
    let hook_docs = backed_up(&s, &source, "webhooks");
    assert!(!hook_docs[0].json.contains("s3cr3t"));
    let out = outcomes(
        s.restore_documents(
            &created,
            "pull-request-settings",
            &c,
            &settings_docs,
            Arc::new(NoFiles),
        )
        .expect("settings"),
    );
    assert!(
        out.values()
            .all(|o| *o == RestoreOutcome::Restored("pull-request-settings".into())),
        "{out:?}"
    );
    let (approvers, strategies) = server.metadata(KEY, "app", |m| {
        (
            m.settings.required_approvers,
            m.settings.merge_strategies.clone(),
        )
    });
    assert_eq!(
        (approvers, strategies),
        (2, vec!["squash".to_string(), "no-ff".to_string()])
    );
    for round in 0..2 {
        let out = outcomes(
            s.restore_documents(&created, "webhooks", &c, &hook_docs, Arc::new(NoFiles))
                .expect("hooks"),
        );
        let o = out.values().next().expect("one hook");
        match round {
            0 => assert!(
                matches!(o, RestoreOutcome::NeedsUser { id: Some(_), what } if what.contains("secret")),
                "{o:?}"
            ),
            _ => assert!(
                matches!(o, RestoreOutcome::Skipped(m) if m.starts_with("already exists")),
                "{o:?}"
            ),
        }
    }
    let hooks = server.metadata(KEY, "app", |m| m.webhooks.clone());
    assert_eq!(hooks.len(), 1);
    assert_eq!(
        (hooks[0].url.as_str(), hooks[0].secret.as_deref()),
        ("https://ci.example.com/hook", None)
    );

    // The branching model and the access key (once).
    let model = backed_up(&s, &source, "branching-model");
    let out = outcomes(
        s.restore_documents(&created, "branching-model", &c, &model, Arc::new(NoFiles))
            .expect("model"),
    );
    assert!(
        out.values()
            .all(|o| *o == RestoreOutcome::Restored("branching-model".into())),
        "{out:?}"
    );
    let bm = server.metadata(KEY, "app", |m| m.branching_model.clone());
    assert_eq!(bm.development.as_deref(), Some("develop"));
    assert_eq!(bm.types, vec![("feature".to_string(), "feat/".to_string())]);
    let keys = backed_up(&s, &source, "access-keys");
    let out = outcomes(
        s.restore_documents(&created, "access-keys", &c, &keys, Arc::new(NoFiles))
            .expect("keys"),
    );
    assert!(
        out.values()
            .all(|o| matches!(o, RestoreOutcome::Restored(_))),
        "{out:?}"
    );
    let out = outcomes(
        s.restore_documents(&created, "access-keys", &c, &keys, Arc::new(NoFiles))
            .expect("keys"),
    );
    assert!(
        out.values()
            .all(|o| matches!(o, RestoreOutcome::Skipped(m) if m.starts_with("already exists"))),
        "{out:?}"
    );
    assert_eq!(server.metadata(KEY, "app", |m| m.deploy_keys.len()), 1);
    let perms = backed_up(&s, &source, "branch-permissions");
    assert_eq!(perms.len(), 1);
    restored_then_skipped(&s, &created, "branch-permissions", &perms);
    server.add_user("jane", "jane-password");
    let reviewers = backed_up(&s, &source, "default-reviewers");
    assert_eq!(reviewers.len(), 1);
    restored_then_skipped(&s, &created, "default-reviewers", &reviewers);
    assert_eq!(
        server.metadata(KEY, "app", |m| m.default_reviewers.clone()),
        ["jane"]
    );
    let r = server.metadata(KEY, "app", |m| m.branch_restrictions.clone());
    assert_eq!(r.len(), 1);
    assert_eq!(
        (
            r[0].kind.as_str(),
            r[0].pattern.as_str(),
            r[0].users.clone()
        ),
        ("push", "main", vec!["jane".to_string()])
    );
}

#[test]
fn nothing_is_written_without_a_gate_that_allows_writes() {
    let scratch = TempDir::new("dc-restore-ro");
    let server = server();
    let bare = scratch.path().join("app.git");
    reposafe_testkit::gitutil::init_bare(&bare);
    work().push_mirror(&bare);
    server.add_repo(KEY, "app", &bare, false);
    let s = session(&server, false);
    let repo = s
        .find_repository(KEY, "app")
        .expect("find")
        .expect("exists");
    let new = NewRepository {
        scope: KEY.to_string(),
        slug: "other".to_string(),
        project: None,
        source_provider: "bitbucket-dc".to_string(),
        source: repo.clone(),
        original: None,
    };
    assert!(s.create_repository(&new).is_err());
    let pr = json!({"pullrequest": {"id": 1, "title": "T", "state": "OPEN",
        "author": {"user": {"displayName": "Jane"}}, "createdDate": 1_700_000_000_000u64,
        "fromRef": {"displayId": "feature/a"}, "toRef": {"displayId": "main"}}, "activities": []});
    let out = s.restore_documents(
        &repo,
        "pullrequests",
        &ctx("bitbucket-dc", &[]),
        &[doc("1", pr)],
        Arc::new(NoFiles),
    );
    let refused = match out {
        Err(e) => e.to_string(),
        Ok(r) => format!("{r:?}"),
    };
    assert!(
        refused.contains("may not write") || refused.contains("only reads"),
        "{refused}"
    );
    assert!(
        server.request_log().iter().all(|r| r.method == "GET"),
        "no write request reached the server"
    );
    assert!(server.metadata(KEY, "app", |m| m.pull_requests.is_empty()));
}
