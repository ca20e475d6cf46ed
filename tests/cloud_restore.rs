//! Restoring into Bitbucket Cloud (world 0.4.0) through the host's
//! `ProviderSession`, against the Cloud test double: a snapshot's documents (as
//! the built-in provider lists them from a populated repository) written with
//! `create_repository` and `restore_documents` into a new repository of another
//! workspace. Issues keep their ids, reporters and dates (the double parses the
//! issue import's ZIP for real), open pull requests are re-created with the
//! original author and dates quoted and their comments as one thread, webhooks
//! with secrets and secured variables are left for the user, a second restore
//! creates nothing twice, and nothing is written without a write gate or outside
//! the restore calls (the double's request log has no write).

mod common;

use common::gitutil;
use reposafe::providers::{
    Document, FileSource, LoadedProvider, NewRepository, ProviderError, ProviderRegistry,
    ProviderSession, Repository, RestoreContext, RestoreDocument, RestoreFile, RestoreOutcome,
};
use reposafe::vault::CredentialKind;
use reposafe_testkit::metadata::RepoMetadata;
use reposafe_testkit::{CloudServer, RepoMeta, Spec, TempDir};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

const WS: &str = "acme";
const DR: &str = "acme-dr";
const SLUG: &str = "widgets";
const CLOUD: &str = "bitbucket-cloud";

fn provider() -> &'static LoadedProvider {
    static REG: OnceLock<ProviderRegistry> = OnceLock::new();
    let reg = REG.get_or_init(|| {
        ProviderRegistry::load_with(None, Some(&common::component_cache()), &[])
            .expect("the built-in providers load")
    });
    let p = reg.get(CLOUD).expect("built-in provider");
    assert!(p.wit_version() >= "0.4.0", "{}", p.wit_version());
    p
}

/// A Cloud double with `acme/widgets` (git: `main` and the branch of open pull
/// request #1; metadata per the default [`Spec`]) and an empty workspace
/// `acme-dr`, both readable and writable with the API token of `common::EMAIL`.
fn cloud() -> (CloudServer, TempDir) {
    let server = CloudServer::start();
    server.add_api_token("acct-1", common::EMAIL, common::API_TOKEN);
    server.add_workspace(DR);
    server.grant("acct-1", WS);
    server.grant("acct-1", DR);
    let dir = TempDir::new("reposafe-cloud-restore");
    let bare = dir.path().join("widgets.git");
    gitutil::init_bare(&bare);
    let mut w = gitutil::WorkRepo::new();
    w.write("README", "hello\n");
    w.commit("first");
    for branch in ["feature/change-number-1", "topic/dc"] {
        w.git(&["checkout", "-q", "-b", branch, "main"]);
        w.write(&format!("{}.txt", branch.replace('/', "-")), "work\n");
        w.commit(branch);
    }
    w.git(&["checkout", "-q", "main"]);
    w.push_mirror(&bare);
    server.add_repo(WS, SLUG, &bare, RepoMeta::default());
    server.populate(WS, SLUG, &Spec::default());
    (server, dir)
}

/// A session for the API token; its gate allows writes when `writes`.
fn session(server: &CloudServer, writes: bool) -> ProviderSession<'static> {
    let base = server.base_url();
    let given = BTreeMap::from([
        ("api-base-url".to_string(), base.clone()),
        ("git-base-url".to_string(), base),
    ]);
    let p = provider();
    let settings = p.info().resolve_settings(&given).expect("settings");
    let origins = p.info().credential_origins(&given, &settings);
    let (kind, identity) = (CredentialKind::ApiToken, Some(common::EMAIL));
    let mut gate = common::sessions::gate(p, &origins, kind, identity, common::API_TOKEN);
    if writes {
        gate = gate.allowing_writes();
    }
    p.session(&settings, kind, Arc::new(gate))
}

/// The stored files of a snapshot, by blob handle.
#[derive(Default)]
struct Blobs(Mutex<BTreeMap<String, Vec<u8>>>);

impl FileSource for Blobs {
    fn read(&self, blob: &str, offset: u64, length: u32) -> Result<Vec<u8>, String> {
        let map = self.0.lock().unwrap();
        let bytes = map.get(blob).ok_or_else(|| format!("no blob {blob}"))?;
        let start = (offset as usize).min(bytes.len());
        let end = start.saturating_add(length as usize).min(bytes.len());
        Ok(bytes[start..end].to_vec())
    }
}

/// Every document of `kind` of `repo`, as a restore gets them: files stored in
/// `blobs` (issue attachments, by the model's bytes).
fn snapshot_kind(
    s: &ProviderSession<'_>,
    repo: &Repository,
    kind: &str,
    model: &RepoMetadata,
    blobs: &Blobs,
) -> Vec<RestoreDocument> {
    let mut docs: Vec<Document> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = s
            .list_documents(repo, kind, None, cursor.as_deref())
            .expect("lists");
        docs.extend(page.documents);
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    docs.into_iter()
        .map(|d| {
            let files = d
                .files
                .iter()
                .map(|f| {
                    let issue = model.issue(d.id.parse().unwrap()).expect("issue");
                    let item = issue.attachments.iter().find(|a| a.name == f.name).unwrap();
                    let blob = format!("blob-{}-{}", d.id, f.name);
                    blobs
                        .0
                        .lock()
                        .unwrap()
                        .insert(blob.clone(), item.bytes.to_vec());
                    RestoreFile {
                        name: f.name.clone(),
                        blob,
                        size: item.bytes.len() as u64,
                    }
                })
                .collect();
            RestoreDocument {
                id: d.id,
                updated_on: d.updated_on,
                json: d.json,
                files,
            }
        })
        .collect()
}

fn context(source_provider: &str) -> RestoreContext {
    RestoreContext {
        source_provider: source_provider.into(),
        source_full_name: format!("{WS}/{SLUG}"),
        snapshot_taken_at: "2026-11-30T00:00:00Z".into(),
        renamed_refs: Vec::new(),
    }
}

/// The snapshot: every restorable kind's documents, and the repository as listed.
struct Snapshot {
    source: Repository,
    kinds: Vec<(String, Vec<RestoreDocument>)>,
    blobs: Arc<Blobs>,
}

fn snapshot(server: &CloudServer, s: &ProviderSession<'_>) -> Snapshot {
    let source = s.find_repository(WS, SLUG).expect("finds").expect("exists");
    let model = server.metadata(WS, SLUG, |m| m.clone());
    let blobs = Arc::new(Blobs::default());
    let kinds = s
        .restorable_kinds(CLOUD)
        .expect("kinds")
        .into_iter()
        .map(|k| {
            let docs = snapshot_kind(s, &source, &k.name, &model, &blobs);
            (k.name, docs)
        })
        .collect();
    Snapshot {
        source,
        kinds,
        blobs,
    }
}

fn new_repository(snap: &Snapshot) -> NewRepository {
    let original = snap
        .kinds
        .iter()
        .find(|(k, _)| k == "repository")
        .map(|(_, d)| d[0].json.clone());
    NewRepository {
        scope: DR.into(),
        slug: SLUG.into(),
        project: None,
        source_provider: CLOUD.into(),
        source: snap.source.clone(),
        original,
    }
}

/// Outcomes of restoring every kind of `snap` into `target`, by kind and document id.
fn restore_all(
    s: &ProviderSession<'_>,
    target: &Repository,
    snap: &Snapshot,
) -> BTreeMap<String, BTreeMap<String, RestoreOutcome>> {
    snap.kinds
        .iter()
        .map(|(kind, docs)| {
            let out = s
                .restore_documents(target, kind, &context(CLOUD), docs, snap.blobs.clone())
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(out.len(), docs.len(), "{kind}: one outcome per document");
            let by_id = out.into_iter().map(|o| (o.id, o.outcome)).collect();
            (kind.clone(), by_id)
        })
        .collect()
}

fn restored(o: &RestoreOutcome) -> &str {
    match o {
        RestoreOutcome::Restored(id) => id,
        other => panic!("expected restored, got {other:?}"),
    }
}

#[test]
fn a_cloud_snapshot_is_restored_into_a_new_repository_once() {
    let (server, _dir) = cloud();
    let s = session(&server, true);
    let snap = snapshot(&server, &s);
    let source = server.metadata(WS, SLUG, |m| m.clone());
    assert!(
        common::write_requests(&server).is_empty(),
        "{:?}",
        common::write_requests(&server)
    );

    // The repository: created with the original's settings, then git pushed.
    assert_eq!(s.find_repository(DR, SLUG).expect("no error"), None);
    let target = s
        .create_repository(&new_repository(&snap))
        .expect("created");
    assert_eq!(target.full_name, format!("{DR}/{SLUG}"));
    assert!(server.has_repo(DR, SLUG));
    match s.create_repository(&new_repository(&snap)) {
        Err(ProviderError::Conflict(m)) => assert!(m.contains("already exists"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    gitutil::git(
        &server.repo_path(WS, SLUG),
        &[
            "push",
            "--quiet",
            "--mirror",
            server.repo_path(DR, SLUG).to_str().unwrap(),
        ],
    );

    let first = restore_all(&s, &target, &snap);
    let m = server.metadata(DR, SLUG, |m| m.clone());
    assert_eq!(restored(&first["repository"]["repository"]), "repository");
    assert_eq!(m.settings.description, source.settings.description);

    // Issues: ids, reporters, dates, comments and attachments kept.
    assert_eq!(m.issues.len(), source.issues.len());
    for (want, got) in source.issues.iter().zip(&m.issues) {
        assert_eq!(
            restored(&first["issues"][&want.id.to_string()]),
            want.id.to_string()
        );
        assert_eq!(
            (got.id, &got.reporter, got.created_ms),
            (want.id, &want.reporter, want.created_ms)
        );
        assert_eq!((&got.title, &got.state), (&want.title, &want.state));
        let texts = |i: &reposafe_testkit::metadata::Issue| {
            i.comments
                .iter()
                .map(|c| (c.author.clone(), c.text.clone(), c.created_ms))
                .collect::<Vec<_>>()
        };
        assert_eq!(texts(got), texts(want));
        assert_eq!(got.attachments.len(), want.attachments.len());
        for (a, b) in got.attachments.iter().zip(&want.attachments) {
            assert_eq!((&a.name, &a.bytes), (&b.name, &b.bytes));
        }
    }

    // Pull requests: the open one with its branch re-created, quoted; the others skipped.
    let prs = &first["pullrequests"];
    let new_id: u64 = restored(&prs["1"]).parse().expect("a number");
    let pr = m.pr(new_id).expect("created");
    let orig = source.pr(1).unwrap();
    assert_eq!(
        (pr.title.as_str(), pr.source.as_str()),
        (orig.title.as_str(), orig.source.as_str())
    );
    assert_eq!(pr.author, "acct-1");
    assert!(
        pr.description.starts_with(&format!(
            "> Originally opened by Alice on {}",
            reposafe_testkit::metadata::cloud_time(orig.created_ms)
        )),
        "{}",
        pr.description
    );
    assert_eq!(pr.comments.len(), 1, "one quoted thread");
    for c in &orig.comments {
        assert!(
            pr.comments[0].text.contains(&format!("> {}", c.text)),
            "{}",
            pr.comments[0].text
        );
    }
    for (id, why) in [
        ("2", "not open (MERGED)"),
        (
            "5",
            "branch feature/change-number-5 is not in the repository",
        ),
    ] {
        assert!(
            matches!(&prs[id], RestoreOutcome::Skipped(t) if t.contains(why)),
            "{id}: {:?}",
            prs[id]
        );
    }

    // Settings: secrets left for the user, the rest restored.
    let hooks = &first["webhooks"];
    assert!(
        matches!(hooks.values().next(), Some(RestoreOutcome::NeedsUser { id: Some(_), what }) if what.contains("secret")),
        "{hooks:?}"
    );
    assert_eq!(m.webhooks.len(), 1);
    assert_eq!(m.webhooks[0].secret, None);
    let vars = &first["pipeline-variables"];
    let secured = vars
        .values()
        .filter(
            |o| matches!(o, RestoreOutcome::NeedsUser { id: None, what } if what.contains("TOKEN")),
        )
        .count();
    assert_eq!(secured, 1, "{vars:?}");
    assert_eq!(
        m.pipeline_variables
            .iter()
            .map(|v| v.key.as_str())
            .collect::<Vec<_>>(),
        ["PLAIN"]
    );
    assert_eq!(
        m.branch_restrictions.len(),
        source.branch_restrictions.len()
    );
    assert_eq!(m.default_reviewers, source.default_reviewers);
    assert_eq!(m.deploy_keys.len(), 1);
    assert_eq!(m.branching_model.development.as_deref(), Some("develop"));

    // Again: nothing is created twice.
    let second = restore_all(&s, &target, &snap);
    let again = server.metadata(DR, SLUG, |m| m.clone());
    assert_eq!(again.issues.len(), m.issues.len());
    assert_eq!(again.pull_requests.len(), m.pull_requests.len());
    assert_eq!(again.webhooks.len(), 1);
    assert_eq!(again.deploy_keys.len(), 1);
    assert_eq!(again.branch_restrictions.len(), m.branch_restrictions.len());
    for kind in [
        "issues",
        "branch-restrictions",
        "default-reviewers",
        "deploy-keys",
        "webhooks",
    ] {
        for (id, o) in &second[kind] {
            assert!(
                matches!(o, RestoreOutcome::Skipped(_)),
                "{kind} {id}: {o:?}"
            );
        }
    }
    assert!(
        matches!(&second["issues"]["1"], RestoreOutcome::Skipped(t) if t.contains("has issues already"))
    );
    assert!(
        matches!(&second["pullrequests"]["1"], RestoreOutcome::Skipped(t) if t == &format!("already exists: #{new_id}"))
    );
}

#[test]
fn pull_requests_of_a_data_center_snapshot_are_re_created() {
    let (server, _dir) = cloud();
    let s = session(&server, true);
    let target = s
        .find_repository(WS, SLUG)
        .expect("no error")
        .expect("exists");
    let doc = serde_json::json!({
        "pullrequest": {"id": 12, "title": "From DC", "description": "dc body", "state": "OPEN",
            "author": {"user": {"displayName": "Dee Sea", "name": "dee"}},
            "createdDate": 1_767_225_600_000_i64, "updatedDate": 1_767_229_200_000_i64,
            "fromRef": {"id": "refs/heads/topic/dc", "displayId": "topic/dc"},
            "toRef": {"id": "refs/heads/main", "displayId": "main"}},
        "activities": [{"action": "COMMENTED", "createdDate": 1_767_226_000_000_i64,
            "comment": {"text": "dc comment", "author": {"displayName": "Eve"}, "createdDate": 1_767_226_000_000_i64}}],
    });
    let docs = [RestoreDocument {
        id: "12".into(),
        updated_on: None,
        json: doc.to_string(),
        files: Vec::new(),
    }];
    let kinds: Vec<String> = s
        .restorable_kinds("bitbucket-dc")
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(kinds, ["repository", "pullrequests"]);
    let out = s
        .restore_documents(
            &target,
            "pullrequests",
            &context("bitbucket-dc"),
            &docs,
            Arc::new(Blobs::default()),
        )
        .expect("restores");
    let id: u64 = restored(&out[0].outcome).parse().unwrap();
    let pr = server
        .metadata(WS, SLUG, |m| m.pr(id).cloned())
        .expect("created");
    assert_eq!(pr.source, "topic/dc");
    assert!(pr.description.starts_with("> Originally opened by Dee Sea on 2026-01-01T00:00:00.000Z, last updated 2026-01-01T01:00:00.000Z (#12 in acme/widgets"), "{}", pr.description);
    assert!(
        pr.comments[0]
            .text
            .contains("> **Eve** on 2026-01-01T00:06:40.000Z"),
        "{}",
        pr.comments[0].text
    );
}

#[test]
fn nothing_is_written_without_a_write_gate_or_outside_the_restore_calls() {
    let (server, _dir) = cloud();
    let reader = session(&server, false);
    let snap = snapshot(&server, &reader);
    // A gate without writes: the restore calls fail before anything is sent (a
    // webhook the repository does not have yet would be created).
    let mut hooks = snap.kinds[7].1.clone();
    assert_eq!(snap.kinds[7].0, "webhooks");
    hooks[0].json = hooks[0]
        .json
        .replace("https://ci.example.com/hook", "https://new.example.com/");
    for r in [
        reader.create_repository(&new_repository(&snap)).map(|_| ()),
        reader
            .restore_documents(
                &snap.source,
                "webhooks",
                &context(CLOUD),
                &hooks,
                snap.blobs.clone(),
            )
            .map(|_| ()),
    ] {
        match r {
            Err(ProviderError::Plugin { reason, .. }) => {
                assert!(
                    reason.contains("only reads (GET and HEAD), it may not write"),
                    "{reason}"
                )
            }
            other => panic!("expected the write to be refused, got {other:?}"),
        }
    }
    // A write gate: the reading calls still only read.
    let writer = session(&server, true);
    let _ = snapshot(&server, &writer);
    assert!(writer
        .find_repository(DR, SLUG)
        .expect("no error")
        .is_none());
    assert!(
        common::write_requests(&server).is_empty(),
        "{:?}",
        common::write_requests(&server)
    );
    assert!(!server.has_repo(DR, SLUG));
}

#[test]
fn a_credential_without_the_scope_is_told_which_it_needs() {
    let (server, _dir) = cloud();
    let s = session(&server, true);
    let snap = snapshot(&server, &s);
    server.restrict_scopes("acct-1", &["repository", "pullrequest", "issue", "webhook"]);
    match s.create_repository(&new_repository(&snap)) {
        Err(ProviderError::Forbidden(m)) => assert_eq!(m, "needs repository:admin"),
        other => panic!("expected forbidden, got {other:?}"),
    }
    assert!(!server.has_repo(DR, SLUG));
    // A tracker with issues: the import is refused for every issue, nothing sent.
    let issues = &snap.kinds.iter().find(|(k, _)| k == "issues").unwrap().1;
    let before = common::write_requests(&server).len();
    let out = s
        .restore_documents(
            &snap.source,
            "issues",
            &context(CLOUD),
            issues,
            snap.blobs.clone(),
        )
        .expect("answers");
    assert!(
        out.iter().all(
            |o| matches!(&o.outcome, RestoreOutcome::Skipped(t) if t.contains("has issues already"))
        ),
        "{out:?}"
    );
    assert_eq!(common::write_requests(&server).len(), before);
}
