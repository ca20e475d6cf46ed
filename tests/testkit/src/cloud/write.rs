//! The write endpoints of the Cloud double, as restore uses them, with the real API's
//! status codes, validation and scopes (a credential without the scope gets 403 with
//! `error.detail.required`). Sources: the Bitbucket Cloud REST API reference (groups
//! Repositories, Issue tracker, Pullrequests, Branch restrictions, Branching model,
//! Deployments, Webhooks, Pipelines) and the issue import/export data format page.
//!
//! | endpoint | answer |
//! |---|---|
//! | `POST /2.0/repositories/{ws}/{slug}` | 200 with the repository; creates the bare repository `git http-backend` serves; 400 `Repository with this Slug and Owner already exists.`; 400 for a bad slug, `scm`, `fork_policy` or unknown project; needs `repository:admin` |
//! | `PUT /2.0/repositories/{ws}/{slug}` | 200; `description`, `mainbranch.name` (400 when the branch does not exist), `is_private`, `fork_policy`, `language`, `has_issues`; needs `repository:admin` |
//! | `GET …/refs/branches/{name}` | 200 `{name, target.hash}` or 404, read from the bare repository |
//! | `POST …/issues/import` | 202 `issue_job_status` `ACCEPTED`; multipart field `archive`, a ZIP (stored entries; CRC checked) with `db-2.0.json` and `attachments/…`, replacing every issue the tracker had; 404 without the tracker; needs `issue:write` |
//! | `GET …/issues/import` | the last job: `SUCCESS` (or `FAILURE` with `message`), `pct` 100 |
//! | `POST …/pullrequests` | 201; `title`, `source.branch.name` (must exist), `destination.branch.name` (default: the main branch); 400 otherwise; the author is the credential's principal; needs `pullrequest:write` |
//! | `POST …/pullrequests/{id}/comments` | 201; `content.raw` required; needs `pullrequest:write` |
//! | `POST …/branch-restrictions` | 201; `kind` one of Cloud's kinds, `pattern` for `glob`; needs `repository:admin` |
//! | `PUT …/branching-model/settings` | 200; needs `repository:admin` |
//! | `PUT …/default-reviewers/{uuid}` | 200 with the user; 404 for an unknown user; needs `repository:admin` |
//! | `POST …/deploy-keys` | 200; `key` must be an SSH public key; 400 for a key the repository has; needs `repository:admin` |
//! | `POST …/hooks` | 201; `url` and non-empty `events` required; needs `webhook` |
//! | `POST …/pipelines_config/variables/` | 201; `key` required; 409 for a key that exists; needs `pipeline:variable` |

use std::collections::BTreeSet;
use std::path::Path;

use hyper::{Method, Response, StatusCode};
use serde_json::{json, Value};

use super::{error, json_response, repo_json, uuid_for, Repo, State, Workspace};
use crate::httputil::Body;
use crate::metadata::{
    BranchRestriction, DeployKey, NewPullRequest, RepoMetadata, Variable, Webhook,
};

/// Most bytes a write request's body may have (an issue import with attachments).
pub const MAX_WRITE_BODY: usize = 64 << 20;

/// The kinds of branch restriction Cloud knows.
const RESTRICTION_KINDS: &[&str] = &[
    "require_tasks_to_be_completed",
    "allow_auto_merge_when_builds_pass",
    "require_passing_builds_to_merge",
    "force",
    "require_all_dependencies_merged",
    "push",
    "require_approvals_to_merge",
    "enforce_merge_checks",
    "restrict_merges",
    "reset_pullrequest_approvals_on_change",
    "smart_reset_pullrequest_approvals",
    "delete",
    "require_default_reviewer_approvals_to_merge",
    "require_no_changes_requested",
    "require_review_group_approvals_to_merge",
];

/// A request to a write endpoint (or one of the two reads restore needs that the
/// metadata endpoints lack).
pub(super) struct WriteRequest<'a> {
    pub base: &'a str,
    pub method: &'a Method,
    /// The path below `/2.0/repositories/{ws}/{slug}` (empty for the repository itself).
    pub rest: &'a [&'a str],
    pub ws: &'a str,
    pub slug: &'a str,
    pub content_type: &'a str,
    pub body: &'a [u8],
    /// The user name in the clone links of the answer.
    pub user: &'a str,
    /// The credential's account: the author of what it creates.
    pub principal: &'a str,
    /// Where repositories created through the API live.
    pub created_root: &'a Path,
    /// The users the double knows ([`known_users`]).
    pub users: &'a BTreeSet<String>,
}

/// Whether `method` on `rest` (below a repository) is handled here.
pub(super) fn handles(method: &Method, rest: &[&str]) -> bool {
    let (get, post, put) = (
        method == Method::GET,
        method == Method::POST,
        method == Method::PUT,
    );
    match rest {
        [] => post || put,
        ["refs", "branches", _] => get,
        ["issues", "import"] => get || post,
        ["pullrequests"] | ["pullrequests", _, "comments"] => post,
        ["branch-restrictions"] | ["deploy-keys"] | ["hooks"] => post,
        ["pipelines_config", "variables"] => post,
        ["branching-model", "settings"] | ["default-reviewers", _] => put,
        _ => false,
    }
}

/// The OAuth scope a write needs.
pub(super) fn required_scope(method: &Method, rest: &[&str]) -> &'static str {
    match rest {
        ["refs", ..] => "repository",
        ["issues", ..] if method == Method::GET => "issue",
        ["issues", ..] => "issue:write",
        ["pullrequests", ..] => "pullrequest:write",
        ["hooks"] => "webhook",
        ["pipelines_config", ..] => "pipeline:variable",
        _ => "repository:admin",
    }
}

type Answer = Result<Response<Body>, Box<Response<Body>>>;

fn bad(msg: &str) -> Box<Response<Body>> {
    Box::new(error(StatusCode::BAD_REQUEST, msg))
}

/// 400 with Cloud's `error.fields` naming the field.
fn bad_field(field: &str, msg: &str) -> Box<Response<Body>> {
    Box::new(json_response(
        StatusCode::BAD_REQUEST,
        &json!({"type": "error", "error": {"message": format!("{field}: {msg}"), "fields": {field: [msg]}}}),
    ))
}

fn json_body(body: &[u8]) -> Result<Value, Box<Response<Body>>> {
    let v: Value = serde_json::from_slice(body).map_err(|_| bad("Malformed JSON body"))?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(bad("The request body must be a JSON object"))
    }
}

/// Answers a write on `workspace`'s repository `req.slug` (the caller checked
/// access and scopes).
pub(super) fn answer(st: &mut State, req: &WriteRequest, w_key: &str) -> Response<Body> {
    let result = (|| -> Answer {
        let Some(w) = st.workspaces.get_mut(w_key) else {
            return Err(Box::new(error(
                StatusCode::NOT_FOUND,
                "Workspace not found",
            )));
        };
        if req.rest.is_empty() && req.method == Method::POST {
            return create_repository(w, req);
        }
        let Some(repo) = w.repos.get_mut(req.slug) else {
            return Err(Box::new(error(
                StatusCode::NOT_FOUND,
                &format!("Repository {}/{} not found", req.ws, req.slug),
            )));
        };
        repo_write(repo, req)
    })();
    let resp = result.unwrap_or_else(|e| *e);
    if req.rest.is_empty() && resp.status().is_success() {
        let w = &st.workspaces[w_key];
        let r = &w.repos[req.slug];
        return json_response(
            resp.status(),
            &repo_json(req.base, req.user, req.ws, w, req.slug, r),
        );
    }
    resp
}

fn valid_slug(slug: &str) -> bool {
    !slug.is_empty()
        && slug.len() <= 62
        && slug.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

fn create_repository(w: &mut Workspace, req: &WriteRequest) -> Answer {
    let v = if req.body.is_empty() {
        json!({})
    } else {
        json_body(req.body)?
    };
    if w.repos.contains_key(req.slug) {
        return Err(bad("Repository with this Slug and Owner already exists."));
    }
    if !valid_slug(req.slug) {
        return Err(bad_field(
            "name",
            "Invalid slug: only lower-case letters, digits, -, _ and . are allowed",
        ));
    }
    match v.get("scm").and_then(Value::as_str) {
        None | Some("git") => {}
        Some(other) => {
            return Err(bad_field(
                "scm",
                &format!("Invalid SCM: {other}; only git is supported"),
            ))
        }
    }
    let project = match v.pointer("/project/key") {
        None => w
            .projects
            .keys()
            .next()
            .cloned()
            .unwrap_or_else(|| "PROJ".to_string()),
        Some(Value::String(k)) if w.projects.contains_key(k) => k.clone(),
        Some(k) => return Err(bad_field("project", &format!("Project {k} not found"))),
    };
    let path = req
        .created_root
        .join(format!("{}-{}.git", req.ws, req.slug));
    init_pushable(&path)?;
    let mut repo = Repo {
        path,
        meta: super::RepoMeta {
            mainbranch: None,
            ..super::RepoMeta::default()
        },
        uuid: uuid_for("repository", &format!("{}/{}", req.ws, req.slug)),
        metadata: RepoMetadata::default(),
        wiki: None,
        project,
        import_job: None,
    };
    apply_settings(&mut repo, &v)?;
    if repo.meta.has_wiki {
        // As on Cloud, a repository with the wiki switched on has an (empty) wiki to push to.
        let wiki = req
            .created_root
            .join(format!("{}-{}.wiki.git", req.ws, req.slug));
        init_pushable(&wiki)?;
        repo.wiki = Some(wiki);
    }
    w.repos.insert(req.slug.to_string(), repo);
    Ok(json_response(StatusCode::OK, &json!({})))
}

/// An empty bare repository at `path` that `git http-backend` accepts pushes into.
fn init_pushable(path: &Path) -> Result<(), Box<Response<Body>>> {
    let init = std::process::Command::new("git")
        .args(["init", "--quiet", "--bare", "--initial-branch=main"])
        .arg(path)
        .status();
    let config = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(path)
        .args(["config", "http.receivepack", "true"])
        .status();
    if init.is_ok_and(|s| s.success()) && config.is_ok_and(|s| s.success()) {
        return Ok(());
    }
    Err(Box::new(error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "cannot create the repository",
    )))
}

/// The repository fields a create or update may set.
fn apply_settings(repo: &mut Repo, v: &Value) -> Result<(), Box<Response<Body>>> {
    let s = &mut repo.metadata.settings;
    if let Some(p) = v.get("is_private") {
        repo.meta.is_private = p
            .as_bool()
            .ok_or_else(|| bad_field("is_private", "must be a boolean"))?;
    }
    if let Some(f) = v.get("fork_policy") {
        let f = f.as_str().unwrap_or("");
        if !["allow_forks", "no_public_forks", "no_forks"].contains(&f) {
            return Err(bad_field(
                "fork_policy",
                &format!("Invalid fork policy: {f}"),
            ));
        }
        if !repo.meta.is_private && f == "no_public_forks" {
            return Err(bad_field(
                "fork_policy",
                "A public repository cannot have the no_public_forks policy",
            ));
        }
        s.fork_policy = f.to_string();
    }
    if let Some(d) = v.get("description").and_then(Value::as_str) {
        s.description = d.to_string();
    }
    if let Some(l) = v.get("language").and_then(Value::as_str) {
        s.language = l.to_string();
    }
    if let Some(h) = v.get("has_issues").and_then(Value::as_bool) {
        repo.metadata.issue_tracker = h;
    }
    if let Some(h) = v.get("has_wiki").and_then(Value::as_bool) {
        repo.meta.has_wiki = h;
    }
    Ok(())
}

/// The commit `refs/heads/{name}` points to in the bare repository at `path`.
fn branch_target(path: &Path, name: &str) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(path)
        .args(["rev-parse", "--verify", "--quiet"])
        .arg(format!("refs/heads/{name}^{{commit}}"))
        .output()
        .ok()?;
    let hash = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !hash.is_empty()).then_some(hash)
}

fn repo_write(repo: &mut Repo, req: &WriteRequest) -> Answer {
    match req.rest {
        [] => {
            let v = json_body(req.body)?;
            if let Some(main) = v.pointer("/mainbranch/name") {
                let main = main.as_str().unwrap_or("");
                if branch_target(&repo.path, main).is_none() {
                    return Err(bad_field(
                        "mainbranch",
                        &format!("Branch \"{main}\" does not exist"),
                    ));
                }
                repo.meta.mainbranch = Some(main.to_string());
            }
            apply_settings(repo, &v)?;
            Ok(json_response(StatusCode::OK, &json!({})))
        }
        ["refs", "branches", name] => match branch_target(&repo.path, name) {
            Some(hash) => Ok(json_response(
                StatusCode::OK,
                &json!({
                "type": "branch", "name": name, "target": {"type": "commit", "hash": hash}}),
            )),
            None => Err(Box::new(error(
                StatusCode::NOT_FOUND,
                &format!("Branch \"{name}\" not found"),
            ))),
        },
        ["issues", "import"] => super::import::answer(repo, req),
        ["pullrequests"] => create_pull_request(repo, req),
        ["pullrequests", id, "comments"] => comment(&mut repo.metadata, id, req),
        _ => settings_write(&mut repo.metadata, req),
    }
}

fn create_pull_request(repo: &mut Repo, req: &WriteRequest) -> Answer {
    let v = json_body(req.body)?;
    let title = v.get("title").and_then(Value::as_str).unwrap_or("");
    if title.trim().is_empty() {
        return Err(bad_field("title", "This field is required."));
    }
    let Some(source) = v.pointer("/source/branch/name").and_then(Value::as_str) else {
        return Err(bad_field("source", "This field is required."));
    };
    let destination = match v
        .pointer("/destination/branch/name")
        .and_then(Value::as_str)
    {
        Some(d) => d.to_string(),
        None => repo
            .meta
            .mainbranch
            .clone()
            .unwrap_or_else(|| "main".to_string()),
    };
    for (field, b) in [("source", source), ("destination", destination.as_str())] {
        if branch_target(&repo.path, b).is_none() {
            return Err(bad_field(field, &format!("Branch not found: {b}")));
        }
    }
    if source == destination {
        return Err(bad_field(
            "source",
            "The source branch is the same as the destination branch.",
        ));
    }
    let m = &mut repo.metadata;
    let id = m.add_pull_request(NewPullRequest {
        title: title.to_string(),
        description: v
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        author: req.principal.to_string(),
        source: source.to_string(),
        destination,
        state: crate::metadata::PrState::Open,
        reviewers: Vec::new(),
    });
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"type": "pullrequest", "id": id, "title": title,
        "state": "OPEN", "source": {"branch": {"name": source}}}),
    ))
}

fn comment(m: &mut RepoMetadata, id: &str, req: &WriteRequest) -> Answer {
    let Some(pr) = id.parse::<u64>().ok().filter(|n| m.pr(*n).is_some()) else {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            &format!("There is no pull request with id {id}"),
        )));
    };
    let v = json_body(req.body)?;
    let Some(raw) = v
        .pointer("/content/raw")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
    else {
        return Err(bad_field("content", "This field is required."));
    };
    let cid = m.add_pr_comment(pr, req.principal, raw);
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"type": "pullrequest_comment", "id": cid,
        "content": {"raw": raw}}),
    ))
}

fn settings_write(m: &mut RepoMetadata, req: &WriteRequest) -> Answer {
    let v = json_body(req.body)?;
    let text = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    match req.rest {
        ["branch-restrictions"] => {
            let kind = text("/kind");
            if !RESTRICTION_KINDS.contains(&kind.as_str()) {
                return Err(bad_field("kind", &format!("Invalid kind: {kind:?}")));
            }
            let glob = v
                .get("branch_match_kind")
                .and_then(Value::as_str)
                .unwrap_or("glob")
                == "glob";
            if glob && text("/pattern").is_empty() {
                return Err(bad_field("pattern", "This field is required."));
            }
            let users = v.get("users").and_then(Value::as_array).map(|us| {
                us.iter()
                    .filter_map(|u| u.get("uuid").and_then(Value::as_str))
                    .filter_map(|u| user_of_uuid(req.users, u))
                    .collect()
            });
            let id = m.new_id();
            m.branch_restrictions.push(BranchRestriction {
                id,
                kind,
                pattern: text("/pattern"),
                users: users.unwrap_or_default(),
                groups: Vec::new(),
                value: v.get("value").and_then(Value::as_u64),
            });
            Ok(json_response(
                StatusCode::CREATED,
                &json!({"type": "branchrestriction", "id": id}),
            ))
        }
        ["branching-model", "settings"] => {
            let bm = &mut m.branching_model;
            if let Some(d) = v.get("development") {
                bm.development = d
                    .get("name")
                    .and_then(Value::as_str)
                    .map(String::from)
                    .filter(|_| d.get("use_mainbranch").and_then(Value::as_bool) != Some(true));
            }
            if let Some(p) = v.get("production") {
                bm.production = p
                    .get("name")
                    .and_then(Value::as_str)
                    .map(String::from)
                    .filter(|_| p.get("enabled").and_then(Value::as_bool) == Some(true));
            }
            if let Some(types) = v.get("branch_types").and_then(Value::as_array) {
                bm.types = types
                    .iter()
                    .filter(|t| t.get("enabled").and_then(Value::as_bool) != Some(false))
                    .filter_map(|t| {
                        Some((
                            t.get("kind")?.as_str()?.to_string(),
                            t.get("prefix")?.as_str()?.to_string(),
                        ))
                    })
                    .collect();
            }
            Ok(json_response(
                StatusCode::OK,
                &json!({"type": "branching_model_settings"}),
            ))
        }
        ["default-reviewers", uuid] => {
            let Some(name) = user_of_uuid(req.users, uuid) else {
                return Err(Box::new(error(
                    StatusCode::NOT_FOUND,
                    &format!("{uuid} is not a valid user"),
                )));
            };
            if !m.default_reviewers.contains(&name) {
                m.default_reviewers.push(name.clone());
            }
            Ok(json_response(
                StatusCode::OK,
                &json!({"type": "user", "uuid": uuid, "account_id": name}),
            ))
        }
        ["deploy-keys"] => {
            let key = text("/key");
            if !key.starts_with("ssh-") && !key.starts_with("ecdsa-") {
                return Err(bad_field("key", "Invalid SSH key"));
            }
            if m.deploy_keys.iter().any(|k| k.key == key) {
                return Err(bad_field(
                    "key",
                    "Someone has already added that access key to this repository.",
                ));
            }
            let (id, at) = (m.new_id(), m.tick());
            m.deploy_keys.push(DeployKey {
                id,
                label: text("/label"),
                key,
                created_ms: at,
            });
            Ok(json_response(
                StatusCode::OK,
                &json!({"type": "deploy_key", "id": id}),
            ))
        }
        ["hooks"] => {
            let url = text("/url");
            let events: Vec<String> = v
                .get("events")
                .and_then(Value::as_array)
                .map(|e| {
                    e.iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(bad_field("url", "Enter a valid URL."));
            }
            if events.is_empty() {
                return Err(bad_field("events", "This field is required."));
            }
            let (id, at) = (m.new_id(), m.tick());
            m.webhooks.push(Webhook {
                id,
                description: text("/description"),
                url,
                events,
                secret: v.get("secret").and_then(Value::as_str).map(String::from),
                active: v.get("active").and_then(Value::as_bool).unwrap_or(true),
                created_ms: at,
            });
            Ok(json_response(
                StatusCode::CREATED,
                &json!({"type": "webhook_subscription",
                "uuid": uuid_for("item", &format!("{}/{}/{id}", req.ws, req.slug))}),
            ))
        }
        ["pipelines_config", "variables"] => {
            let key = text("/key");
            if key.is_empty() {
                return Err(bad_field("key", "This field is required."));
            }
            if m.pipeline_variables.iter().any(|x| x.key == key) {
                return Err(Box::new(error(
                    StatusCode::CONFLICT,
                    &format!("A variable with the key {key} already exists."),
                )));
            }
            let id = m.new_id();
            let secured = v.get("secured").and_then(Value::as_bool).unwrap_or(false);
            m.pipeline_variables.push(Variable {
                id,
                key,
                value: text("/value"),
                secured,
            });
            Ok(json_response(
                StatusCode::CREATED,
                &json!({"type": "pipeline_variable",
                "uuid": uuid_for("item", &format!("{}/{}/{id}", req.ws, req.slug))}),
            ))
        }
        _ => Err(Box::new(error(StatusCode::NOT_FOUND, "Resource not found"))),
    }
}

/// The known user behind a user uuid the double handed out (`uuid_for("user", name)`).
fn user_of_uuid(users: &BTreeSet<String>, uuid: &str) -> Option<String> {
    users.iter().find(|n| uuid_for("user", n) == uuid).cloned()
}

/// The users the double knows in a workspace: everyone its repositories' metadata
/// names, and every principal (Cloud resolves a user uuid against its accounts).
pub(super) fn known_users(st: &State, ws: &str) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = st.grants.keys().cloned().collect();
    out.extend(crate::metadata::AUTHORS.iter().map(|a| a.to_string()));
    for r in st
        .workspaces
        .get(ws)
        .map(|w| w.repos.values())
        .into_iter()
        .flatten()
    {
        let m = &r.metadata;
        for p in &m.pull_requests {
            out.insert(p.author.clone());
            out.extend(p.reviewers.iter().cloned());
            out.extend(p.comments.iter().map(|c| c.author.clone()));
        }
        for i in &m.issues {
            out.insert(i.reporter.clone());
            out.extend(i.comments.iter().map(|c| c.author.clone()));
        }
        out.extend(m.default_reviewers.iter().cloned());
        for b in &m.branch_restrictions {
            out.extend(b.users.iter().cloned());
        }
    }
    out
}
