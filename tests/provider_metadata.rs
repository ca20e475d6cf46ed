//! The built-in providers' metadata (world 0.3.0) against the Bitbucket test
//! doubles of `reposafe-testkit`, driven through the library's
//! `ProviderSession`: every kind returns the double's items with their
//! comments/activity embedded, files as file-refs, no secrets; incremental kinds
//! cost one request for an unchanged repository (counted in the double's request
//! log); a credential without a kind's scope gets `forbidden` naming it.

mod common;

use common::sessions::session;
use reposafe::providers::{
    Document, LoadedProvider, MetadataKind, ProviderError, ProviderRegistry, ProviderSession,
    Repository,
};
use reposafe::vault::CredentialKind;
use reposafe_testkit::metadata::PullRequest;
use reposafe_testkit::{CloudServer, DcOptions, DcServer, RepoMeta, RepoMetadata, Spec};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

const WS: &str = "acme";
const SLUG: &str = "widgets";

fn registry() -> &'static ProviderRegistry {
    static REG: OnceLock<ProviderRegistry> = OnceLock::new();
    REG.get_or_init(|| {
        let reg = ProviderRegistry::load_with(None, Some(&common::component_cache()), &[])
            .expect("the built-in providers load");
        assert!(reg.load_errors.is_empty(), "{:?}", reg.load_errors);
        reg
    })
}

fn provider(id: &str) -> &'static LoadedProvider {
    let p = registry().get(id).expect("built-in provider");
    assert!(p.wit_version() >= "0.3.0", "{id}: {}", p.wit_version());
    p
}

/// Every document of `kind`, following the cursor; and how many calls it took.
fn all_documents(
    s: &ProviderSession<'_>,
    repo: &Repository,
    kind: &str,
    since: Option<&str>,
) -> Result<(Vec<Document>, usize), ProviderError> {
    let (mut docs, mut cursor, mut calls) = (Vec::new(), None::<String>, 0);
    loop {
        let page = s.list_documents(repo, kind, since, cursor.as_deref())?;
        calls += 1;
        assert!(calls < 1000, "{kind}: the cursor never ends");
        assert!(page.documents.iter().all(|d| d.kind == kind));
        docs.extend(page.documents);
        match page.next {
            Some(n) => cursor = Some(n),
            None => return Ok((docs, calls)),
        }
    }
}

/// Every document of each of `kinds`, by kind.
fn every_kind(
    s: &ProviderSession<'_>,
    repo: &Repository,
    kinds: &[MetadataKind],
) -> BTreeMap<String, Vec<Document>> {
    kinds
        .iter()
        .map(|k| {
            let (d, _) =
                all_documents(s, repo, &k.name, None).unwrap_or_else(|e| panic!("{}: {e}", k.name));
            (k.name.clone(), d)
        })
        .collect()
}

/// The document of the double's pull request `pr` among `prs`, and its JSON
/// (checked to hold the pull request's title).
fn pull_request<'d>(prs: &'d [Document], pr: &PullRequest) -> (&'d Document, Value) {
    let d = prs
        .iter()
        .find(|d| d.id == pr.id.to_string())
        .unwrap_or_else(|| panic!("pull request #{} is listed", pr.id));
    let j = json(d);
    assert_eq!(j["pullrequest"]["title"], pr.title.as_str());
    (d, j)
}

/// Repository `slug` as the provider lists scope `scope`.
fn listed(s: &ProviderSession<'_>, scope: &str, slug: &str) -> Repository {
    let repos = s.list_repositories(scope).expect("lists the scope");
    repos
        .into_iter()
        .find(|r| r.slug == slug)
        .unwrap_or_else(|| panic!("{scope}/{slug} is listed"))
}

fn json(d: &Document) -> Value {
    serde_json::from_str(&d.json).unwrap_or_else(|e| panic!("{}: {e}: {}", d.id, d.json))
}

/// The newest `updated_on` of `docs`, as the host keeps it (RFC 3339 of one
/// provider sorts as text).
fn high_water(docs: &[Document]) -> String {
    docs.iter()
        .filter_map(|d| d.updated_on.clone())
        .max()
        .expect("documents with update times")
}

// --- Bitbucket Cloud ---------------------------------------------------------------

/// A Cloud double with `acme/widgets` (a wiki, metadata per `spec`), readable
/// with the API token of `common::EMAIL`.
fn cloud(spec: &Spec) -> CloudServer {
    let server = CloudServer::start();
    server.add_api_token("acct-1", common::EMAIL, common::API_TOKEN);
    server.grant("acct-1", WS);
    let meta = RepoMeta {
        has_wiki: true,
        ..RepoMeta::default()
    };
    server.add_repo(WS, SLUG, Path::new("/nonexistent"), meta);
    server.populate(WS, SLUG, spec);
    server
}

fn cloud_session(server: &CloudServer) -> ProviderSession<'static> {
    let base = server.base_url();
    let given = BTreeMap::from([
        ("workspace".to_string(), WS.to_string()),
        ("api-base-url".to_string(), base.clone()),
        ("git-base-url".to_string(), base),
    ]);
    session(
        provider("bitbucket-cloud"),
        &given,
        CredentialKind::ApiToken,
        Some(common::EMAIL),
        common::API_TOKEN,
    )
}

fn cloud_repo(s: &ProviderSession<'_>) -> Repository {
    listed(s, WS, SLUG)
}

fn model(server: &CloudServer) -> RepoMetadata {
    server.metadata(WS, SLUG, |m| m.clone())
}

#[test]
fn cloud_every_kind_returns_the_doubles_items() {
    let spec = Spec {
        pull_requests: 25,
        comments_per_pr: 4,
        tasks_per_pr: 2,
        issues: 3,
        comments_per_issue: 2,
        attachments_per_issue: 1,
        downloads: 2,
        ..Spec::default()
    };
    let server = cloud(&spec);
    let s = cloud_session(&server);
    let repo = cloud_repo(&s);
    let m = model(&server);

    let parts = s.describe_repository(&repo).unwrap().expect("world 0.3");
    assert_eq!(parts.git.len(), 1);
    assert_eq!(parts.git[0].name, "wiki");
    assert_eq!(parts.git[0].url, server.wiki_url(WS, SLUG));
    assert_eq!(parts.lfs_url, Some(format!("{}/info/lfs", repo.clone_url)));
    let docs = every_kind(&s, &repo, &parts.metadata);

    // Pull requests: every state, each with its comments, activity and tasks.
    let prs = &docs["pullrequests"];
    assert_eq!(prs.len(), m.pull_requests.len());
    for pr in &m.pull_requests {
        let (d, j) = pull_request(prs, pr);
        assert_eq!(j["pullrequest"]["state"], pr.state.cloud());
        assert!(j["pullrequest"]["reviewers"].is_array(), "{j}");
        assert_eq!(j["comments"].as_array().unwrap().len(), pr.comments.len());
        assert_eq!(j["activity"].as_array().unwrap().len(), pr.activity.len());
        assert_eq!(j["tasks"].as_array().unwrap().len(), pr.tasks.len());
        assert_eq!(
            d.updated_on.as_deref(),
            j["pullrequest"]["updated_on"].as_str()
        );
        for (c, want) in j["comments"].as_array().unwrap().iter().zip(&pr.comments) {
            assert_eq!(c["content"]["raw"], want.text.as_str());
        }
    }
    // Issues, with comments, changes and attachments (files for the host).
    let issues = &docs["issues"];
    assert_eq!(issues.len(), m.issues.len());
    for issue in &m.issues {
        let d = issues
            .iter()
            .find(|d| d.id == issue.id.to_string())
            .expect("listed");
        let j = json(d);
        assert_eq!(j["issue"]["title"], issue.title.as_str());
        assert_eq!(
            j["comments"].as_array().unwrap().len(),
            issue.comments.len()
        );
        assert_eq!(j["changes"].as_array().unwrap().len(), issue.changes.len());
        let names: Vec<&str> = d.files.iter().map(|f| f.name.as_str()).collect();
        let want: Vec<&str> = issue.attachments.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, want);
        assert!(d
            .files
            .iter()
            .all(|f| f.url.starts_with(&server.base_url())));
    }
    // Settings and lists.
    assert_eq!(docs["repository"].len(), 1);
    assert_eq!(
        json(&docs["repository"][0])["full_name"],
        format!("{WS}/{SLUG}")
    );
    for single in ["branching-model", "pipelines-config"] {
        assert_eq!(docs[single].len(), 1, "{single}");
    }
    let counts = [
        ("branch-restrictions", m.branch_restrictions.len()),
        ("default-reviewers", m.default_reviewers.len()),
        ("deploy-keys", m.deploy_keys.len()),
        ("webhooks", m.webhooks.len()),
        ("pipeline-variables", m.pipeline_variables.len()),
        ("pipeline-schedules", m.pipeline_schedules.len()),
        ("environments", m.environments.len()),
        ("downloads", m.downloads.len()),
    ];
    for (kind, n) in counts {
        assert!(n > 0, "the double has {kind}");
        assert_eq!(docs[kind].len(), n, "{kind}: {:?}", docs[kind]);
    }
    for d in &docs["webhooks"] {
        assert_eq!(json(d)["secret"], "not readable through the API");
    }
    for v in m.pipeline_variables.iter().filter(|v| v.secured) {
        assert!(!docs["pipeline-variables"]
            .iter()
            .any(|d| d.json.contains(&v.value)));
    }
    for env in &m.environments {
        let d = docs["environments"]
            .iter()
            .find(|d| json(d)["environment"]["name"] == env.name.as_str())
            .expect("listed");
        assert_eq!(
            json(d)["variables"].as_array().unwrap().len(),
            env.variables.len()
        );
        for v in env.variables.iter().filter(|v| v.secured) {
            assert!(
                !d.json.contains(&v.value),
                "secured value stored: {}",
                d.json
            );
        }
    }
    let downloads: Vec<&str> = docs["downloads"]
        .iter()
        .flat_map(|d| &d.files)
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(downloads.len(), m.downloads.len());

    // The workspace: itself and its projects with their default reviewers.
    server.set_project_default_reviewers(WS, "PROJ", &["alice", "bob"]);
    let kinds: Vec<String> = s
        .describe_scope(WS)
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(kinds, ["workspace", "projects"]);
    let ws = s.list_scope_documents(WS, "workspace", None).unwrap();
    assert_eq!(ws.documents.len(), 1);
    assert_eq!(json(&ws.documents[0])["slug"], WS);
    let projects = s.list_scope_documents(WS, "projects", None).unwrap();
    let proj = projects
        .documents
        .iter()
        .map(json)
        .find(|j| j["project"]["key"] == "PROJ")
        .expect("PROJ is listed");
    assert_eq!(
        proj["default-reviewers"].as_array().unwrap().len(),
        2,
        "{proj}"
    );
}

/// The requests the double logged per endpoint kind, API only.
fn by_endpoint(server: &CloudServer) -> BTreeMap<String, usize> {
    server.requests_by_endpoint()
}

#[test]
fn cloud_incremental_kinds_cost_one_request_when_unchanged() {
    let spec = Spec {
        pull_requests: 40,
        comments_per_pr: 10,
        tasks_per_pr: 1,
        issues: 20,
        comments_per_issue: 5,
        attachments_per_issue: 1,
        downloads: 1,
        ..Spec::default()
    };
    let server = cloud(&spec);
    let s = cloud_session(&server);
    let repo = cloud_repo(&s);
    let kinds = s.describe_repository(&repo).unwrap().unwrap().metadata;

    server.clear_log();
    let mut marks = BTreeMap::new();
    for k in &kinds {
        let (docs, calls) = all_documents(&s, &repo, &k.name, None).unwrap();
        if k.incremental {
            marks.insert(k.name.clone(), high_water(&docs));
        }
        eprintln!(
            "first run: {} → {} documents in {calls} calls",
            k.name,
            docs.len()
        );
    }
    let first = by_endpoint(&server);
    let first_total: usize = first.values().sum();
    eprintln!("first run: {first_total} API requests: {first:#?}");
    let pr_requests: usize = first
        .iter()
        .filter(|(k, _)| k.contains("/pullrequests"))
        .map(|(_, n)| n)
        .sum();
    // 2 list pages of 20, and per pull request one page each of comments, activity, tasks.
    assert_eq!(pr_requests, 2 + 40 * 3, "{first:#?}");
    let issue_requests: usize = first
        .iter()
        .filter(|(k, _)| k.contains("/issues"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(issue_requests, 1 + 20 * 3, "{first:#?}");

    // Unchanged: one request per incremental kind, no documents.
    for k in kinds.iter().filter(|k| k.incremental) {
        server.clear_log();
        let (docs, calls) = all_documents(&s, &repo, &k.name, Some(&marks[&k.name])).unwrap();
        assert!(docs.is_empty(), "{}: {docs:?}", k.name);
        assert_eq!(calls, 1);
        let log = server.request_log();
        assert_eq!(log.len(), 1, "{}: {log:?}", k.name);
        eprintln!("unchanged: {} → 1 request", k.name);
    }
    // The whole unchanged run: one request a kind, plus the variables of each
    // environment (listed per environment).
    server.clear_log();
    for k in &kinds {
        let since = marks.get(&k.name).map(String::as_str);
        all_documents(&s, &repo, &k.name, since).unwrap();
    }
    let environments = model(&server).environments.len();
    let unchanged: usize = by_endpoint(&server).values().sum();
    eprintln!(
        "unchanged run: {unchanged} API requests for {} kinds (first run: {first_total})",
        kinds.len()
    );
    assert_eq!(unchanged, kinds.len() + environments);

    // One new comment: that pull request alone, with its sub-lists.
    let changed = model(&server).pull_requests[7].id;
    server.metadata(WS, SLUG, |m| m.add_pr_comment(changed, "erin", "one more"));
    server.clear_log();
    let (docs, _) = all_documents(&s, &repo, "pullrequests", Some(&marks["pullrequests"])).unwrap();
    assert_eq!(
        docs.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
        [changed.to_string()]
    );
    assert_eq!(json(&docs[0])["comments"].as_array().unwrap().len(), 11);
    assert_eq!(server.request_log().len(), 4, "{:?}", server.request_log());
}

#[test]
fn cloud_huge_pull_requests_are_paged_within_the_per_call_caps() {
    let server = cloud(&Spec {
        pull_requests: 4,
        comments_per_pr: 0,
        issues: 0,
        ..Spec::default()
    });
    // 3 MiB of comments a pull request: four in one call would return more
    // text than the host takes from one call (16 MiB).
    let ids: Vec<u64> = model(&server).pull_requests.iter().map(|p| p.id).collect();
    server.metadata(WS, SLUG, |m| {
        for (n, id) in ids.iter().enumerate() {
            for c in 0..6 {
                let text = format!("{n}-{c}:{}", "x".repeat(512 << 10));
                m.add_pr_comment(*id, "alice", &text);
            }
        }
    });
    let s = cloud_session(&server);
    let repo = cloud_repo(&s);
    let (docs, calls) = all_documents(&s, &repo, "pullrequests", None).expect("within the caps");
    assert_eq!(docs.len(), 4);
    assert!(calls >= 2, "{calls} calls");
    for d in &docs {
        assert_eq!(
            json(d)["comments"].as_array().unwrap().len(),
            6,
            "#{}",
            d.id
        );
    }
}

#[test]
fn cloud_kinds_without_scope_are_forbidden_naming_it_and_no_tracker_is_empty() {
    let server = cloud(&Spec {
        pull_requests: 2,
        issues: 0,
        ..Spec::default()
    });
    let s = cloud_session(&server);
    let repo = cloud_repo(&s);
    // The issue tracker is off: an empty page, one request.
    server.clear_log();
    let (docs, calls) = all_documents(&s, &repo, "issues", None).unwrap();
    assert_eq!((docs.len(), calls, server.request_log().len()), (0, 1, 1));

    server.restrict_scopes("acct-1", &["repository"]);
    match all_documents(&s, &repo, "pullrequests", None) {
        Err(ProviderError::Forbidden(m)) => assert_eq!(m, "needs pullrequest"),
        other => panic!("expected forbidden, got {other:?}"),
    }
    match all_documents(&s, &repo, "webhooks", None) {
        Err(ProviderError::Forbidden(m)) => assert_eq!(m, "needs webhook"),
        other => panic!("expected forbidden, got {other:?}"),
    }
    // What the scope allows still works.
    let (docs, _) = all_documents(&s, &repo, "repository", None).unwrap();
    assert_eq!(docs.len(), 1);
}

// --- Bitbucket Data Center ------------------------------------------------------------

const KEY: &str = "PRJ";
const REPO: &str = "repo";

/// A DC double (context path `/bitbucket`) with `PRJ/repo` (metadata per
/// `spec`), readable by `jdoe`, who is its admin when `admin`.
fn dc(spec: &Spec, admin: bool) -> DcServer {
    let server = DcServer::start(DcOptions {
        context_path: "/bitbucket".into(),
        tls: false,
    });
    server.add_repo(KEY, REPO, Path::new("/nonexistent"), false);
    server.add_user("jdoe", "pw");
    server.grant("jdoe", KEY);
    if admin {
        server.grant_admin("jdoe", KEY);
    }
    server.populate(KEY, REPO, spec);
    server
}

fn dc_session(server: &DcServer) -> ProviderSession<'static> {
    let given = BTreeMap::from([
        ("base-url".to_string(), server.base_url()),
        ("projects".to_string(), KEY.to_string()),
    ]);
    session(
        provider("bitbucket-dc"),
        &given,
        CredentialKind::Basic,
        Some("jdoe"),
        "pw",
    )
}

fn dc_repo(s: &ProviderSession<'_>) -> Repository {
    listed(s, KEY, REPO)
}

fn dc_model(server: &DcServer) -> RepoMetadata {
    server.metadata(KEY, REPO, |m| m.clone())
}

#[test]
fn dc_every_kind_returns_the_doubles_items() {
    let spec = Spec {
        pull_requests: 25,
        comments_per_pr: 5,
        tasks_per_pr: 1,
        issues: 0,
        ..Spec::default()
    };
    let server = dc(&spec, true);
    let s = dc_session(&server);
    let repo = dc_repo(&s);
    let m = dc_model(&server);

    server.set_lfs_enabled(KEY, REPO, false);
    let parts = s.describe_repository(&repo).unwrap().expect("world 0.3");
    assert_eq!(
        (parts.git.len(), parts.lfs_url.clone()),
        (0, None),
        "no wiki, LFS off"
    );
    server.set_lfs_enabled(KEY, REPO, true);
    let parts = s.describe_repository(&repo).unwrap().unwrap();
    assert_eq!(parts.lfs_url, Some(format!("{}/info/lfs", repo.clone_url)));

    let docs = every_kind(&s, &repo, &parts.metadata);
    let prs = &docs["pullrequests"];
    assert_eq!(prs.len(), m.pull_requests.len());
    for pr in &m.pull_requests {
        let (d, j) = pull_request(prs, pr);
        assert_eq!(j["pullrequest"]["state"], pr.state.dc());
        assert!(!j["activities"].as_array().unwrap().is_empty());
        for c in &pr.comments {
            assert!(
                d.json.contains(&c.text),
                "comment {:?} of #{}",
                c.text,
                pr.id
            );
        }
        // RFC 3339 from DC's epoch milliseconds.
        let updated = d.updated_on.as_deref().expect("updated");
        assert!(
            updated.ends_with('Z') && updated.starts_with("20"),
            "{updated}"
        );
    }
    for single in ["repository", "pull-request-settings", "branching-model"] {
        assert_eq!(docs[single].len(), 1, "{single}");
    }
    assert_eq!(json(&docs["repository"][0])["slug"], REPO);
    assert_eq!(
        docs["branch-permissions"].len(),
        m.branch_restrictions.len()
    );
    assert_eq!(docs["webhooks"].len(), m.webhooks.len());
    assert_eq!(docs["access-keys"].len(), m.deploy_keys.len());
    assert!(!docs["default-reviewers"].is_empty());
    for d in &docs["webhooks"] {
        assert_eq!(json(d)["secret"], "not readable through the API");
    }
    for h in m.webhooks.iter().filter_map(|h| h.secret.as_deref()) {
        assert!(!docs["webhooks"].iter().any(|d| d.json.contains(h)));
    }

    server.set_project_default_reviewers(KEY, &["alice"]);
    server.add_project_access_key(KEY, "ci", "ssh-ed25519 AAAAC3Nza ci@example");
    let kinds: Vec<String> = s
        .describe_scope(KEY)
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(
        kinds,
        [
            "project",
            "project-default-reviewers",
            "project-access-keys"
        ]
    );
    let project = s.list_scope_documents(KEY, "project", None).unwrap();
    assert_eq!(json(&project.documents[0])["key"], KEY);
    for kind in ["project-default-reviewers", "project-access-keys"] {
        let page = s.list_scope_documents(KEY, kind, None).unwrap();
        assert_eq!(page.documents.len(), 1, "{kind}: {page:?}");
    }
}

#[test]
fn dc_pull_requests_cost_one_request_when_unchanged_whatever_the_order() {
    let spec = Spec {
        pull_requests: 40,
        comments_per_pr: 10,
        tasks_per_pr: 1,
        issues: 0,
        ..Spec::default()
    };
    let server = dc(&spec, true);
    let s = dc_session(&server);
    let repo = dc_repo(&s);

    server.clear_log();
    let (docs, calls) = all_documents(&s, &repo, "pullrequests", None).unwrap();
    assert_eq!(docs.len(), 40);
    let first = server.requests_by_endpoint();
    eprintln!("DC first run: {calls} calls, {first:#?}");
    // The list read from each call's position (20 pull requests a call), one
    // page of activities each.
    assert_eq!(server.request_log().len(), 2 + 40, "{first:#?}");
    let mark = high_water(&docs);

    server.clear_log();
    let (docs, _) = all_documents(&s, &repo, "pullrequests", Some(&mark)).unwrap();
    assert!(docs.is_empty(), "{docs:?}");
    assert_eq!(server.request_log().len(), 1, "{:?}", server.request_log());
    // The whole unchanged run (describe, every kind): one request each.
    server.clear_log();
    let kinds = s.describe_repository(&repo).unwrap().unwrap().metadata;
    for k in &kinds {
        let since = k.incremental.then_some(mark.as_str());
        all_documents(&s, &repo, &k.name, since).unwrap();
    }
    let unchanged = server.request_log().len();
    eprintln!(
        "DC unchanged run: {unchanged} API requests for {} kinds and the LFS check",
        kinds.len()
    );
    assert_eq!(unchanged, 1 + kinds.len());

    // A changed pull request is found whatever the list's order, alone.
    server.set_pr_order_by_created(true);
    let changed = dc_model(&server).pull_requests[3].id;
    server.metadata(KEY, REPO, |m| m.add_pr_comment(changed, "erin", "one more"));
    server.clear_log();
    let (docs, _) = all_documents(&s, &repo, "pullrequests", Some(&mark)).unwrap();
    assert_eq!(
        docs.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
        [changed.to_string()]
    );
    assert!(docs[0].json.contains("one more"));
    assert_eq!(server.request_log().len(), 2, "{:?}", server.request_log());
}

#[test]
fn dc_admin_kinds_without_admin_are_forbidden_naming_it() {
    let server = dc(&Spec::default(), false);
    let s = dc_session(&server);
    let repo = dc_repo(&s);
    for kind in ["webhooks", "branch-permissions", "access-keys"] {
        match all_documents(&s, &repo, kind, None) {
            Err(ProviderError::Forbidden(m)) => assert_eq!(
                m, "needs REPO_ADMIN (You are not permitted to access this resource)",
                "{kind}"
            ),
            other => panic!("{kind}: expected forbidden, got {other:?}"),
        }
    }
    let (docs, _) = all_documents(&s, &repo, "pullrequests", None).unwrap();
    assert_eq!(docs.len(), Spec::default().pull_requests);
}
