//! The write endpoints of the Data Center double (restore into a provider), as Bitbucket
//! Data Center REST 1.0 answers them:
//!
//! | endpoint | answer |
//! |---|---|
//! | `POST api/1.0/projects/{key}/repos` (`name`, `scmId`, `forkable`, `public`, `description`) | 201 the repository (a new bare repository the double's `git http-backend` serves); 409 when the slug is taken; 401 `AuthorisationException` without admin rights in the project; 400 without `name` or with an `scmId` other than `git` |
//! | `PUT api/1.0/projects/{key}/repos/{slug}` (`description`, `defaultBranch`) | 200 the repository; 401 `AuthorisationException` without admin rights |
//! | `POST …/repos/{slug}/pull-requests` (`title`, `description`, `fromRef.id`, `toRef.id`) | 201 the pull request; 409 `DuplicatePullRequestException` (with `existingPullRequest`) when an open one has the same branches; 404 `NoSuchBranchException` for a branch the repository lacks; 400 for equal branches |
//! | `POST …/pull-requests/{id}/comments` (`text`) | 201 the comment |
//! | `POST …/settings/pull-requests` (`mergeConfig`, `requiredApprovers`, `requiredAllTasksComplete`) | 200 the settings; 401 `AuthorisationException` without admin rights |
//! | `PUT branch-utils/1.0/projects/{key}/repos/{slug}/branchmodel/configuration` (`development`, `production`, `types`) | 200 the branching model; 401 `AuthorisationException` without admin rights |
//! | `POST keys/1.0/projects/{key}/repos/{slug}/ssh` (`key.text`, `key.label`, `permission`) | 201 the access key; 409 when the repository has the key; 401 `AuthorisationException` without admin rights |
//! | `POST branch-permissions/2.0/projects/{key}/repos/{slug}/restrictions` (`type`, `matcher`, `users`, `groups`) | 200 the restriction; 400 for an unknown type; 401 `AuthorisationException` without admin rights |
//! | `POST default-reviewers/1.0/projects/{key}/repos/{slug}/condition` (`sourceMatcher`, `targetMatcher`, `reviewers` by user id, `requiredApprovals`) | 200 the condition; 400 for an unknown user id (and, a limit of the double's model, matchers other than any branch); 401 `AuthorisationException` without admin rights |
//! | `POST …/webhooks` (`name`, `url`, `events`, `active`, `configuration.secret`) | 201 the webhook (without its secret); 400 without `name` or `url`; 401 `AuthorisationException` without admin rights |
//!
//! Errors are DC's `{"errors": [{"context", "message", "exceptionName"}]}`.

use hyper::{HeaderMap, Method, Response, StatusCode};
use serde_json::{json, Value};

use super::{api_out, identify, is_admin, parse_auth, repo_json, Caller, Outcome, Repo, Shared};
use crate::httputil::Body;
use crate::metadata::{NewPullRequest, PrState};

const AUTHORISATION: &str = "com.atlassian.bitbucket.AuthorisationException";
const DUPLICATE_PR: &str = "com.atlassian.bitbucket.pull.DuplicatePullRequestException";
const NO_SUCH_BRANCH: &str = "com.atlassian.bitbucket.repository.NoSuchBranchException";

/// DC's error body with an exception name (and extra fields on the error).
fn error(
    status: StatusCode,
    message: &str,
    exception: Option<&str>,
    extra: Value,
) -> Response<Body> {
    let mut e = json!({"context": null, "message": message, "exceptionName": exception});
    if let (Some(e), Value::Object(extra)) = (e.as_object_mut(), extra) {
        e.extend(extra);
    }
    super::json_response(status, &json!({"errors": [e]}))
}

fn not_permitted(what: &str) -> Response<Body> {
    error(
        StatusCode::UNAUTHORIZED,
        &format!("You are not permitted to {what}"),
        Some(AUTHORISATION),
        json!({}),
    )
}

/// A write request to `/rest/…` (`path` after `rest`), with its JSON body.
pub(super) fn handle(
    shared: &Shared,
    method: &Method,
    headers: &HeaderMap,
    path: &[String],
    body: &[u8],
) -> Outcome {
    let cred = parse_auth(headers);
    let mut st = shared.lock();
    let Some(caller) = identify(&st, &cred) else {
        return api_out(super::unauthorized(), None);
    };
    let principal = Some(caller.principal.clone());
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return api_out(
            super::errors(StatusCode::BAD_REQUEST, "The request body is not JSON"),
            principal,
        );
    };
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    let [root @ ("api" | "branch-utils" | "keys" | "branch-permissions" | "default-reviewers"), "1.0" | "2.0", "projects", key, rest @ ..] =
        p.as_slice()
    else {
        return api_out(
            super::errors(StatusCode::NOT_FOUND, "No such REST resource"),
            principal,
        );
    };
    let key = key.to_ascii_uppercase();
    if !st.projects.contains_key(&key) {
        let msg = format!("Project {key} does not exist.");
        return api_out(super::errors(StatusCode::NOT_FOUND, &msg), principal);
    }
    if !super::can_see(&st, &caller, &key) {
        return api_out(not_permitted(&format!("access project {key}")), principal);
    }
    let resp = match (method, rest) {
        (&Method::POST, ["repos"]) if *root == "api" => {
            create_repo(shared, &mut st, &caller, &key, &body)
        }
        (_, ["repos", slug, tail @ ..]) => {
            let admin = is_admin(&st, &caller, &key);
            let users: Vec<String> = st.users.keys().cloned().collect();
            let Some(repo) = st
                .projects
                .get_mut(&key)
                .and_then(|pr| pr.repos.get_mut(*slug))
            else {
                let msg = format!("Repository {key}/{slug} does not exist.");
                return api_out(super::errors(StatusCode::NOT_FOUND, &msg), principal);
            };
            let user = caller.principal.trim_start_matches("token:").to_string();
            match (*root, method, tail) {
                ("default-reviewers", &Method::POST, ["condition"]) if !admin => {
                    not_permitted(&format!("administer repository {key}/{slug}"))
                }
                ("default-reviewers", &Method::POST, ["condition"]) => {
                    condition(repo, &body, &users, &shared.base_url)
                }
                ("branch-utils" | "keys" | "branch-permissions", _, _) if !admin => {
                    not_permitted(&format!("administer repository {key}/{slug}"))
                }
                ("branch-utils", &Method::PUT, ["branchmodel", "configuration"]) => {
                    branch_model(repo, &body)
                }
                ("keys", &Method::POST, ["ssh"]) => {
                    let shown = render(shared, &st, &key, slug, &caller);
                    let Some(repo) = st
                        .projects
                        .get_mut(&key)
                        .and_then(|p| p.repos.get_mut(*slug))
                    else {
                        return api_out(super::errors(StatusCode::NOT_FOUND, "gone"), principal);
                    };
                    access_key(repo, &body, shown)
                }
                ("branch-permissions", &Method::POST, ["restrictions"]) => restriction(repo, &body),
                ("branch-utils" | "keys" | "branch-permissions" | "default-reviewers", _, _) => {
                    super::errors(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "This method is not supported here",
                    )
                }
                (_, &Method::PUT, []) if !admin => {
                    not_permitted(&format!("update repository {key}/{slug}"))
                }
                (_, &Method::PUT, []) => {
                    update_repo(repo, &body);
                    let v = render(shared, &st, &key, slug, &caller);
                    super::json_response(StatusCode::OK, &v)
                }
                (_, &Method::POST, ["pull-requests"]) => create_pr(repo, &key, slug, &user, &body),
                (_, &Method::POST, ["pull-requests", id, "comments"]) => {
                    comment(repo, id, &user, &body)
                }
                (_, &Method::POST, ["settings", "pull-requests"] | ["webhooks"]) if !admin => {
                    not_permitted(&format!("administer repository {key}/{slug}"))
                }
                (_, &Method::POST, ["settings", "pull-requests"]) => pr_settings(repo, &body),
                (_, &Method::POST, ["webhooks"]) => webhook(repo, &body),
                _ => super::errors(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "This method is not supported here",
                ),
            }
        }
        _ => super::errors(
            StatusCode::METHOD_NOT_ALLOWED,
            "This method is not supported here",
        ),
    };
    api_out(resp, principal)
}

/// The repository `key/slug` as GET answers it.
fn render(shared: &Shared, st: &super::State, key: &str, slug: &str, caller: &Caller) -> Value {
    let pr = &st.projects[key];
    let user = caller.basic_user.as_deref();
    repo_json(&shared.base_url, key, pr, slug, &pr.repos[slug], user)
}

/// DC's slug of a repository name: lower case, runs of other characters as `-`.
fn slug_of(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_') {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

fn create_repo(
    shared: &Shared,
    st: &mut super::State,
    caller: &Caller,
    key: &str,
    body: &Value,
) -> Response<Body> {
    if !is_admin(st, caller, key) {
        return not_permitted(&format!("create repositories in project {key}"));
    }
    let name = body["name"].as_str().unwrap_or("").trim();
    if name.is_empty() {
        return super::json_response(
            StatusCode::BAD_REQUEST,
            &json!({"errors": [{"context": "name", "message": "Please enter a name.", "exceptionName": null}]}),
        );
    }
    if body.get("scmId").and_then(Value::as_str).unwrap_or("git") != "git" {
        return super::errors(
            StatusCode::BAD_REQUEST,
            "Only git repositories are supported.",
        );
    }
    let slug = slug_of(name);
    if st.projects[key].repos.contains_key(&slug) {
        return super::json_response(
            StatusCode::CONFLICT,
            &json!({"errors": [{"context": "name",
                "message": format!("This repository URL is already taken by '{slug}' in '{key}'"),
                "exceptionName": null}]}),
        );
    }
    let path = shared
        .cgi_home
        .join("created")
        .join(key)
        .join(format!("{slug}.git"));
    crate::gitutil::init_bare(&path);
    let id = st.next_id;
    st.next_id += 1;
    let repo = Repo {
        id,
        path,
        public: body["public"].as_bool().unwrap_or(false),
        metadata: Default::default(),
        lfs: true,
        description: body["description"].as_str().map(String::from),
        forkable: body["forkable"].as_bool().unwrap_or(true),
    };
    if let Some(p) = st.projects.get_mut(key) {
        p.repos.insert(slug.clone(), repo);
    }
    super::json_response(StatusCode::CREATED, &render(shared, st, key, &slug, caller))
}

/// `PUT …/repos/{slug}`: the description and default branch.
fn update_repo(repo: &mut Repo, body: &Value) {
    if let Some(d) = body["description"].as_str() {
        repo.description = Some(d.to_string());
    }
    if let Some(b) = body["defaultBranch"].as_str() {
        let full = if b.starts_with("refs/") {
            b.to_string()
        } else {
            format!("refs/heads/{b}")
        };
        crate::gitutil::git(&repo.path, &["symbolic-ref", "HEAD", &full]);
    }
}

/// Whether the repository has branch `refs/heads/…` `full`.
fn has_branch(repo: &Repo, full: &str) -> bool {
    crate::gitutil::try_git(&repo.path, &["rev-parse", "--verify", "--quiet", full]).is_ok()
}

fn create_pr(repo: &mut Repo, key: &str, slug: &str, user: &str, body: &Value) -> Response<Body> {
    let from = body
        .pointer("/fromRef/id")
        .and_then(Value::as_str)
        .unwrap_or("");
    let to = body
        .pointer("/toRef/id")
        .and_then(Value::as_str)
        .unwrap_or("");
    let title = body["title"].as_str().unwrap_or("").trim();
    if title.is_empty() || from.is_empty() || to.is_empty() {
        return super::errors(
            StatusCode::BAD_REQUEST,
            "title, fromRef and toRef are required",
        );
    }
    for r in [from, to] {
        if !r.starts_with("refs/heads/") || !has_branch(repo, r) {
            let msg = format!(
                "Repository \"{slug}\" of project with key \"{key}\" has no branch \"{r}\""
            );
            return error(StatusCode::NOT_FOUND, &msg, Some(NO_SUCH_BRANCH), json!({}));
        }
    }
    if from == to {
        return super::errors(
            StatusCode::BAD_REQUEST,
            "The source and target branch must differ",
        );
    }
    let (source, destination) = (&from["refs/heads/".len()..], &to["refs/heads/".len()..]);
    let m = &mut repo.metadata;
    if let Some(existing) = m
        .pull_requests
        .iter()
        .find(|p| p.state == PrState::Open && p.source == source && p.destination == destination)
    {
        return error(
            StatusCode::CONFLICT,
            "Only one pull request may be open for a given source and target branch",
            Some(DUPLICATE_PR),
            json!({"existingPullRequest": {"id": existing.id, "title": existing.title,
                "state": "OPEN", "version": existing.version}}),
        );
    }
    let mut new = NewPullRequest::new(title, user);
    new.description = body["description"].as_str().unwrap_or("").to_string();
    new.source = source.to_string();
    new.destination = destination.to_string();
    let id = m.add_pull_request(new);
    super::json_response(
        StatusCode::CREATED,
        &json!({"id": id, "version": 0, "title": title, "state": "OPEN", "open": true,
            "closed": false, "fromRef": {"id": from}, "toRef": {"id": to}}),
    )
}

fn comment(repo: &mut Repo, id: &str, user: &str, body: &Value) -> Response<Body> {
    let Some(pr) = id
        .parse::<u64>()
        .ok()
        .filter(|n| repo.metadata.pr(*n).is_some())
    else {
        return super::errors(
            StatusCode::NOT_FOUND,
            &format!("Pull request {id} does not exist."),
        );
    };
    let Some(text) = body["text"].as_str().filter(|t| !t.trim().is_empty()) else {
        return super::errors(StatusCode::BAD_REQUEST, "text is required");
    };
    let cid = repo.metadata.add_pr_comment(pr, user, text);
    super::json_response(
        StatusCode::CREATED,
        &json!({"id": cid, "version": 0, "text": text}),
    )
}

impl super::DcServer {
    /// The bare repository `key/slug` is served from (one created through the REST API
    /// too), for tests that push into it or read it.
    pub fn repo_path(&self, key: &str, slug: &str) -> Option<std::path::PathBuf> {
        let st = self.shared.lock();
        let repo = st
            .projects
            .get(&key.to_ascii_uppercase())?
            .repos
            .get(slug)?;
        Some(repo.path.clone())
    }
}

/// `POST …/settings/pull-requests`: the fields given change, the others stay.
fn pr_settings(repo: &mut Repo, body: &Value) -> Response<Body> {
    let s = &mut repo.metadata.settings;
    if let Some(n) = body["requiredApprovers"].as_u64() {
        s.required_approvers = n as u32;
    }
    if let Some(b) = body["requiredAllTasksComplete"].as_bool() {
        s.required_all_tasks_complete = b;
    }
    if let Some(list) = body
        .pointer("/mergeConfig/strategies")
        .and_then(Value::as_array)
    {
        let mut ids: Vec<String> = list
            .iter()
            .filter_map(|x| x["id"].as_str().map(String::from))
            .collect();
        let default = body
            .pointer("/mergeConfig/defaultStrategy/id")
            .and_then(Value::as_str);
        if let Some(d) = default {
            if !ids.iter().any(|i| i == d) {
                let msg =
                    format!("The default merge strategy {d} is not one of the enabled strategies");
                return super::errors(StatusCode::BAD_REQUEST, &msg);
            }
            ids.retain(|i| i != d);
            ids.insert(0, d.to_string());
        }
        s.merge_strategies = ids;
    }
    super::json_response(StatusCode::OK, &super::meta::pr_settings(&repo.metadata))
}

/// `POST …/webhooks`.
fn webhook(repo: &mut Repo, body: &Value) -> Response<Body> {
    let (Some(name), Some(url)) = (body["name"].as_str(), body["url"].as_str()) else {
        return super::errors(StatusCode::BAD_REQUEST, "name and url are required");
    };
    let events: Vec<&str> = body["events"]
        .as_array()
        .map(|e| e.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let secret = body
        .pointer("/configuration/secret")
        .and_then(Value::as_str);
    let m = &mut repo.metadata;
    let id = m.add_webhook(url, &events, secret);
    let active = body["active"].as_bool().unwrap_or(true);
    let created = m.now();
    if let Some(h) = m.webhooks.iter_mut().find(|h| h.id == id) {
        h.description = name.to_string();
        h.active = active;
    }
    super::json_response(
        StatusCode::CREATED,
        &json!({"id": id, "name": name, "url": url, "events": events, "active": active,
            "createdDate": created, "updatedDate": created, "configuration": {},
            "scopeType": "repository", "sslVerificationRequired": true}),
    )
}

/// `PUT …/branchmodel/configuration`: development and production branches, and the
/// enabled branch types.
fn branch_model(repo: &mut Repo, body: &Value) -> Response<Body> {
    let branch = |k: &str| {
        let b = body.get(k).filter(|b| !b.is_null())?;
        if b["useDefault"].as_bool() == Some(true) {
            return None;
        }
        let id = b["refId"].as_str()?;
        Some(id.strip_prefix("refs/heads/").unwrap_or(id).to_string())
    };
    let bm = &mut repo.metadata.branching_model;
    bm.development = branch("development");
    bm.production = branch("production");
    if let Some(types) = body["types"].as_array() {
        bm.types = types
            .iter()
            .filter(|t| t["enabled"].as_bool().unwrap_or(true))
            .filter_map(|t| {
                let id = t["id"].as_str()?.to_ascii_lowercase();
                Some((id, t["prefix"].as_str().unwrap_or("").to_string()))
            })
            .collect();
    }
    super::json_response(StatusCode::OK, &super::meta::branch_model(&repo.metadata))
}

/// `POST keys/1.0/…/ssh`.
fn access_key(repo: &mut Repo, body: &Value, shown: Value) -> Response<Body> {
    let Some(text) = body
        .pointer("/key/text")
        .and_then(Value::as_str)
        .map(str::trim)
    else {
        return super::errors(StatusCode::BAD_REQUEST, "key.text is required");
    };
    let m = &mut repo.metadata;
    if m.deploy_keys.iter().any(|k| k.key.trim() == text) {
        return super::errors(
            StatusCode::CONFLICT,
            "This SSH key is already added to this repository.",
        );
    }
    let label = body
        .pointer("/key/label")
        .and_then(Value::as_str)
        .unwrap_or("");
    let id = m.add_deploy_key(label, text);
    let permission = body["permission"].as_str().unwrap_or("REPO_READ");
    super::json_response(
        StatusCode::CREATED,
        &json!({"key": {"id": id, "text": text, "label": label}, "repository": shown,
            "permission": permission}),
    )
}

/// `POST branch-permissions/2.0/…/restrictions`.
fn restriction(repo: &mut Repo, body: &Value) -> Response<Body> {
    let kind = match body["type"].as_str().unwrap_or("") {
        "read-only" => "push",
        "no-deletes" => "delete",
        "fast-forward-only" => "force",
        "pull-request-only" => "restrict_merges",
        other => {
            let msg = format!("'{other}' is not a valid restriction type");
            return super::errors(StatusCode::BAD_REQUEST, &msg);
        }
    };
    let id = body
        .pointer("/matcher/id")
        .and_then(Value::as_str)
        .unwrap_or("");
    let pattern = id.strip_prefix("refs/heads/").unwrap_or(id);
    if pattern.is_empty() {
        return super::errors(StatusCode::BAD_REQUEST, "matcher.id is required");
    }
    let users: Vec<&str> = body["users"]
        .as_array()
        .map(|u| u.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let m = &mut repo.metadata;
    let rid = m.add_branch_restriction(kind, pattern, &users, None);
    let groups: Vec<String> = body["groups"]
        .as_array()
        .map(|g| {
            g.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if let Some(r) = m.branch_restrictions.iter_mut().find(|r| r.id == rid) {
        r.groups = groups.clone();
    }
    super::json_response(
        StatusCode::OK,
        &json!({"id": rid, "type": body["type"], "matcher": body["matcher"],
            "users": users, "groups": groups, "accessKeys": []}),
    )
}

/// `POST default-reviewers/1.0/…/condition`: reviewers by user id (of `users`); the
/// double's model holds one any-branch to any-branch condition.
fn condition(repo: &mut Repo, body: &Value, users: &[String], base: &str) -> Response<Body> {
    for m in ["sourceMatcher", "targetMatcher"] {
        if body
            .pointer(&format!("/{m}/type/id"))
            .and_then(Value::as_str)
            != Some("ANY_REF")
        {
            return super::errors(
                StatusCode::BAD_REQUEST,
                "The double models any-branch conditions only",
            );
        }
    }
    let mut names = Vec::new();
    for r in body["reviewers"].as_array().into_iter().flatten() {
        let id = &r["id"];
        match users
            .iter()
            .find(|u| super::meta::user_json(base, u)["id"] == *id)
        {
            Some(u) => names.push(u.clone()),
            None => {
                return super::errors(
                    StatusCode::BAD_REQUEST,
                    &format!("No user with id {id} exists."),
                )
            }
        }
    }
    repo.metadata
        .default_reviewers
        .extend(names.iter().cloned());
    let any = json!({"id": "ANY_REF_MATCHER_ID", "displayId": "ANY_REF_MATCHER_ID",
        "type": {"id": "ANY_REF", "name": "Any branch"}, "active": true});
    super::json_response(
        StatusCode::OK,
        &json!({"id": 1, "sourceRefMatcher": any, "targetRefMatcher": any,
            "reviewers": names.iter().map(|u| super::meta::user_json(base, u)).collect::<Vec<_>>(),
            "requiredApprovals": body["requiredApprovals"]}),
    )
}
