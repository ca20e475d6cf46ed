//! The repository and project metadata endpoints of the Data Center double, rendering a
//! [`RepoMetadata`] as Bitbucket Data Center REST JSON. Sources: the Bitbucket Data
//! Center REST API reference (developer.atlassian.com/server/bitbucket/rest, groups Pull
//! Requests, Repository, Project, Permission Management) and the plugin REST references
//! (branch-permissions 2.0, default-reviewers 1.0, branch-utils 1.0, keys 1.0, git-lfs).
//!
//! | endpoint | answer |
//! |---|---|
//! | `api/1.0/projects/{key}` | the project |
//! | `api/1.0/projects/{key}/repos/{slug}` | the repository |
//! | `…/pull-requests` | paged; `state` `OPEN` (default), `MERGED`, `DECLINED`, `ALL` (other → 400); `order` `NEWEST` (default) / `OLDEST`, by `updatedDate` (see below) |
//! | `…/pull-requests/{id}` | the pull request |
//! | `…/pull-requests/{id}/activities` | paged, newest first: `OPENED`, `UPDATED`, `MERGED`, `DECLINED`, `REOPENED`, `APPROVED`, `REVIEWED` (needs work), `COMMENTED` (`commentAction: ADDED`, `comment`, `commentAnchor` for inline ones; replies nested in the parent's `comments`; tasks are `BLOCKER` comments, as since DC 7.2) |
//! | `…/settings/pull-requests` | `mergeConfig`, `requiredApprovers`, `requiredAllTasksComplete`, ... |
//! | `…/webhooks` | paged; `configuration` without the secret |
//! | `branch-permissions/2.0/projects/{key}/repos/{slug}/restrictions` | paged |
//! | `default-reviewers/1.0/projects/{key}[/repos/{slug}]/conditions` | a plain JSON array (not paged) |
//! | `branch-utils/1.0/projects/{key}/repos/{slug}/branchmodel/configuration` | `development`, `production`, `types` |
//! | `keys/1.0/projects/{key}[/repos/{slug}]/ssh` | paged `{key: {id, text, label}, repository|project, permission}` |
//! | `git-lfs/admin/projects/{key}/repos/{slug}/enabled` | 204 when LFS is on, else 404 |
//!
//! Permissions: webhooks, branch permissions and access keys need REPO_ADMIN
//! ([`super::DcServer::grant_admin`]); without it they answer 401 with DC's
//! `AuthorisationException` body, as DC does. Paging as everywhere in the double
//! (`start`, `limit`, `size`, `isLastPage`, `nextPageStart`, the server's page cap).
//!
//! Ordering: DC's reference documents `order` as NEWEST/OLDEST without naming the date;
//! the double orders by `updatedDate` (ties by id) unless
//! [`super::DcServer::set_pr_order_by_created`] says `createdDate`. `PARTICIPANT_STATUS`
//! and `CLOSED_DATE` are accepted and treated as `NEWEST`.

use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::{errors, json_response, page, Caller, Project, Repo, State};
use crate::httputil::Body;
use crate::metadata::{display_name, ActivityKind, Comment, PrState, PullRequest, RepoMetadata};

/// What DC answers when the caller lacks a permission.
pub const NOT_PERMITTED: &str = "You are not permitted to access this resource";

pub(super) struct Ctx<'a> {
    pub base: &'a str,
    pub key: &'a str,
    pub project: &'a Project,
    pub slug: &'a str,
    pub repo: &'a Repo,
    /// The user name of Basic callers, for clone links.
    pub user: Option<&'a str>,
}

/// A DC user object.
pub(super) fn user_json(base: &str, name: &str) -> Value {
    let id = name
        .bytes()
        .fold(100u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64))
        % 100_000;
    json!({
        "name": name, "emailAddress": format!("{name}@example.com"), "id": id,
        "displayName": display_name(name), "active": true, "slug": name, "type": "NORMAL",
        "links": {"self": [{"href": format!("{base}/users/{name}")}]},
    })
}

fn forbidden() -> Response<Body> {
    let v = json!({"errors": [{"context": null, "message": NOT_PERMITTED,
        "exceptionName": "com.atlassian.bitbucket.AuthorisationException"}]});
    json_response(StatusCode::UNAUTHORIZED, &v)
}

fn paged(st: &State, params: &[(String, String)], items: Vec<Value>) -> Response<Body> {
    match page(params, st.page_cap, items, false) {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(msg) => errors(StatusCode::BAD_REQUEST, msg),
    }
}

/// Answers a repository-level metadata path (`rest` after `…/repos/{slug}`, or a plugin
/// root); `None` when the path is not one of these.
pub(super) fn repo_endpoint(
    c: &Ctx,
    st: &State,
    caller: &Caller,
    root: &str,
    rest: &[&str],
    params: &[(String, String)],
) -> Option<Response<Body>> {
    let m = &c.repo.metadata;
    let admin = super::is_admin(st, caller, c.key);
    let resp = match (root, rest) {
        ("api", []) => json_response(
            StatusCode::OK,
            &super::repo_json(c.base, c.key, c.project, c.slug, c.repo, c.user),
        ),
        ("api", ["pull-requests", ..]) => pull_requests(c, st, &rest[1..], params),
        ("api", ["settings", "pull-requests"]) => json_response(StatusCode::OK, &pr_settings(m)),
        ("api", ["webhooks"]) if !admin => forbidden(),
        ("api", ["webhooks"]) => paged(
            st,
            params,
            m.webhooks
                .iter()
                .map(|h| {
                    json!({
                        "id": h.id, "name": h.description, "createdDate": h.created_ms,
                        "updatedDate": h.created_ms, "events": h.events, "configuration": {},
                        "url": h.url, "active": h.active, "scopeType": "repository",
                        "sslVerificationRequired": true,
                    })
                })
                .collect(),
        ),
        ("branch-permissions", ["restrictions"]) if !admin => forbidden(),
        ("branch-permissions", ["restrictions"]) => {
            paged(st, params, restrictions(c.base, m, c.repo.id))
        }
        ("default-reviewers", ["conditions"]) => json_response(
            StatusCode::OK,
            &json!(conditions(
                c.base,
                &m.default_reviewers,
                "REPOSITORY",
                c.repo.id
            )),
        ),
        ("branch-utils", ["branchmodel", "configuration"]) => {
            json_response(StatusCode::OK, &branch_model(m))
        }
        ("keys", ["ssh"]) if !admin => forbidden(),
        ("keys", ["ssh"]) => {
            let repo = super::repo_json(c.base, c.key, c.project, c.slug, c.repo, c.user);
            paged(
                st,
                params,
                m.deploy_keys
                    .iter()
                    .map(|k| {
                        json!({
                            "key": {"id": k.id, "text": k.key, "label": k.label},
                            "repository": repo, "permission": "REPO_READ",
                        })
                    })
                    .collect(),
            )
        }
        ("git-lfs", ["enabled"]) if c.repo.lfs => {
            let mut r = Response::new(crate::httputil::full(""));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        ("git-lfs", ["enabled"]) => errors(
            StatusCode::NOT_FOUND,
            &format!("Git LFS is not enabled for repository {}/{}", c.key, c.slug),
        ),
        _ => return None,
    };
    Some(resp)
}

/// Project-level paths: `default-reviewers/1.0/projects/{key}/conditions`,
/// `keys/1.0/projects/{key}/ssh`.
pub(super) fn project_endpoint(
    base: &str,
    st: &State,
    caller: &Caller,
    (key, p): (&str, &Project),
    (root, rest): (&str, &[&str]),
    params: &[(String, String)],
) -> Option<Response<Body>> {
    let resp = match (root, rest) {
        ("api", []) => json_response(StatusCode::OK, &super::project_json(key, p)),
        ("default-reviewers", ["conditions"]) => json_response(
            StatusCode::OK,
            &json!(conditions(base, &p.default_reviewers, "PROJECT", p.id)),
        ),
        ("keys", ["ssh"]) if !super::is_admin(st, caller, key) => forbidden(),
        ("keys", ["ssh"]) => paged(
            st,
            params,
            p.access_keys
                .iter()
                .map(|k| {
                    json!({
                        "key": {"id": k.id, "text": k.key, "label": k.label},
                        "project": super::project_json(key, p), "permission": "PROJECT_READ",
                    })
                })
                .collect(),
        ),
        _ => return None,
    };
    Some(resp)
}

pub(super) fn pr_settings(m: &RepoMetadata) -> Value {
    let strategy = |id: &str| {
        let (name, flag) = match id {
            "no-ff" => ("Merge commit", "--no-ff"),
            "ff" => ("Fast-forward", "--ff"),
            "ff-only" => ("Fast-forward only", "--ff-only"),
            "squash" => ("Squash", "--squash"),
            other => (other, ""),
        };
        json!({"id": id, "name": name, "enabled": true, "flag": flag, "description": name})
    };
    let s = &m.settings;
    json!({
        "mergeConfig": {
            "defaultStrategy": strategy(s.merge_strategies.first().map(String::as_str).unwrap_or("no-ff")),
            "strategies": s.merge_strategies.iter().map(|x| strategy(x)).collect::<Vec<_>>(),
            "type": "REPOSITORY",
        },
        "requiredAllApprovers": false,
        "requiredAllTasksComplete": s.required_all_tasks_complete,
        "requiredApprovers": s.required_approvers,
        "requiredSuccessfulBuilds": 0,
    })
}

fn matcher(pattern: &str) -> Value {
    if pattern.contains('*') {
        json!({"id": pattern, "displayId": pattern, "type": {"id": "PATTERN", "name": "Pattern"}, "active": true})
    } else {
        json!({"id": format!("refs/heads/{pattern}"), "displayId": pattern,
               "type": {"id": "BRANCH", "name": "Branch"}, "active": true})
    }
}

fn restrictions(base: &str, m: &RepoMetadata, repo_id: u64) -> Vec<Value> {
    m.branch_restrictions
        .iter()
        .map(|b| {
            let kind = match b.kind.as_str() {
                "push" => "read-only",
                "delete" => "no-deletes",
                "force" => "fast-forward-only",
                "restrict_merges" => "pull-request-only",
                other => other,
            };
            json!({
                "id": b.id, "scope": {"type": "REPOSITORY", "resourceId": repo_id},
                "type": kind, "matcher": matcher(&b.pattern),
                "users": b.users.iter().map(|u| user_json(base, u)).collect::<Vec<_>>(),
                "groups": b.groups, "accessKeys": [],
            })
        })
        .collect()
}

fn conditions(base: &str, reviewers: &[String], scope: &str, id: u64) -> Vec<Value> {
    if reviewers.is_empty() {
        return Vec::new();
    }
    let any = json!({"id": "ANY_REF_MATCHER_ID", "displayId": "ANY_REF_MATCHER_ID",
                     "type": {"id": "ANY_REF", "name": "Any branch"}, "active": true});
    vec![json!({
        "id": 1, "scope": {"type": scope, "resourceId": id},
        "sourceRefMatcher": any, "targetRefMatcher": any,
        "reviewers": reviewers.iter().map(|u| user_json(base, u)).collect::<Vec<_>>(),
        "requiredApprovals": 0,
    })]
}

pub(super) fn branch_model(m: &RepoMetadata) -> Value {
    let bm = &m.branching_model;
    let branch = |b: &Option<String>| match b {
        Some(name) => json!({"refId": format!("refs/heads/{name}"), "useDefault": false}),
        None => json!({"refId": null, "useDefault": true}),
    };
    json!({
        "development": branch(&bm.development),
        "production": bm.production.as_ref().map(|_| branch(&bm.production)),
        "types": bm.types.iter().map(|(k, p)| {
            json!({"id": k.to_uppercase(), "displayName": display_name(k), "enabled": true, "prefix": p})
        }).collect::<Vec<_>>(),
    })
}

// ---------------------------------------------------------------- pull requests

fn pull_requests(
    c: &Ctx,
    st: &State,
    rest: &[&str],
    params: &[(String, String)],
) -> Response<Body> {
    let m = &c.repo.metadata;
    match rest {
        [] => pr_list(c, st, params),
        [id, tail @ ..] => {
            let Some(p) = id.parse::<u64>().ok().and_then(|id| m.pr(id)) else {
                return errors(
                    StatusCode::NOT_FOUND,
                    &format!("Pull request {id} does not exist in {}/{}.", c.key, c.slug),
                );
            };
            match tail {
                [] => json_response(StatusCode::OK, &pr_json(c, p)),
                ["activities"] => paged(st, params, activities(c, p)),
                _ => errors(StatusCode::NOT_FOUND, "No such REST resource"),
            }
        }
    }
}

fn pr_list(c: &Ctx, st: &State, params: &[(String, String)]) -> Response<Body> {
    let get = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let state = get("state").unwrap_or("OPEN").to_ascii_uppercase();
    if !["OPEN", "MERGED", "DECLINED", "ALL"].contains(&state.as_str()) {
        return errors(
            StatusCode::BAD_REQUEST,
            &format!("Illegal state \"{state}\": use one of OPEN, MERGED, DECLINED or ALL"),
        );
    }
    let newest = match get("order").map(str::to_ascii_uppercase).as_deref() {
        None | Some("NEWEST") | Some("PARTICIPANT_STATUS") | Some("CLOSED_DATE") => true,
        Some("OLDEST") => false,
        Some(other) => {
            return errors(
                StatusCode::BAD_REQUEST,
                &format!("Illegal order \"{other}\""),
            );
        }
    };
    let mut prs: Vec<&PullRequest> = c
        .repo
        .metadata
        .pull_requests
        .iter()
        .filter(|p| state == "ALL" || p.state.dc() == state)
        .collect();
    if st.pr_order_created {
        prs.sort_by_key(|p| (p.created_ms, p.id));
    } else {
        prs.sort_by_key(|p| (p.updated_ms, p.id));
    }
    if newest {
        prs.reverse();
    }
    paged(st, params, prs.into_iter().map(|p| pr_json(c, p)).collect())
}

fn git_ref(c: &Ctx, branch: &str) -> Value {
    let hash = format!(
        "{:040x}",
        branch
            .bytes()
            .fold(7u128, |h, b| h.wrapping_mul(131).wrapping_add(b as u128))
    );
    json!({
        "id": format!("refs/heads/{branch}"), "displayId": branch, "latestCommit": hash, "type": "BRANCH",
        "repository": super::repo_json(c.base, c.key, c.project, c.slug, c.repo, c.user),
    })
}

fn participant(c: &Ctx, p: &PullRequest, name: &str, role: &str) -> Value {
    let status = if p.approvals.iter().any(|a| a == name) {
        "APPROVED"
    } else if p.changes_requested.iter().any(|a| a == name) {
        "NEEDS_WORK"
    } else {
        "UNAPPROVED"
    };
    json!({"user": user_json(c.base, name), "role": role, "approved": status == "APPROVED", "status": status})
}

fn pr_json(c: &Ctx, p: &PullRequest) -> Value {
    let open = p.state == PrState::Open;
    let mut others: Vec<&str> = Vec::new();
    for n in p
        .approvals
        .iter()
        .chain(&p.changes_requested)
        .chain(p.comments.iter().map(|x| &x.author))
    {
        if n != &p.author && !p.reviewers.contains(n) && !others.contains(&n.as_str()) {
            others.push(n);
        }
    }
    let open_tasks = p.tasks.iter().filter(|t| !t.resolved).count();
    let mut v = json!({
        "id": p.id, "version": p.version, "title": p.title, "description": p.description,
        "state": p.state.dc(), "open": open, "closed": !open,
        "createdDate": p.created_ms, "updatedDate": p.updated_ms,
        "fromRef": git_ref(c, &p.source), "toRef": git_ref(c, &p.destination),
        "locked": false,
        "author": participant(c, p, &p.author, "AUTHOR"),
        "reviewers": p.reviewers.iter().map(|r| participant(c, p, r, "REVIEWER")).collect::<Vec<_>>(),
        "participants": others.iter().map(|r| participant(c, p, r, "PARTICIPANT")).collect::<Vec<_>>(),
        "properties": {"commentCount": p.comments.len(), "openTaskCount": open_tasks,
                       "resolvedTaskCount": p.tasks.len() - open_tasks},
        "links": {"self": [{"href": format!("{}/projects/{}/repos/{}/pull-requests/{}", c.base, c.key, c.slug, p.id)}]},
    });
    if !open {
        v["closedDate"] = json!(p.updated_ms);
    }
    v
}

fn comment_json(c: &Ctx, p: &PullRequest, x: &Comment) -> Value {
    let replies: Vec<Value> = p
        .comments
        .iter()
        .filter(|r| r.parent == Some(x.id))
        .map(|r| comment_json(c, p, r))
        .collect();
    json!({
        "id": x.id, "version": 0, "text": x.text, "author": user_json(c.base, &x.author),
        "createdDate": x.created_ms, "updatedDate": x.updated_ms, "comments": replies,
        "tasks": [], "severity": "NORMAL", "state": "OPEN", "threadResolved": false,
        "permittedOperations": {"editable": false, "transitionable": false, "deletable": false},
    })
}

/// Activities newest first, tasks shown as BLOCKER comments.
fn activities(c: &Ctx, p: &PullRequest) -> Vec<Value> {
    let mut out: Vec<(u64, u64, Value)> = Vec::new();
    let mut prev: Option<PrState> = None;
    for a in &p.activity {
        let base = json!({"id": a.id, "createdDate": a.at_ms, "user": user_json(c.base, &a.user)});
        let mut v = base;
        match &a.kind {
            ActivityKind::Update { state } => {
                v["action"] = json!(match (prev, state) {
                    (None, _) => "OPENED",
                    (_, PrState::Merged) => "MERGED",
                    (_, PrState::Declined | PrState::Superseded) => "DECLINED",
                    (Some(PrState::Open), PrState::Open) => "UPDATED",
                    (Some(_), PrState::Open) => "REOPENED",
                });
                prev = Some(*state);
            }
            ActivityKind::Approval => v["action"] = json!("APPROVED"),
            ActivityKind::ChangesRequested => v["action"] = json!("REVIEWED"),
            ActivityKind::Comment(id) => {
                let Some(x) = p.comments.iter().find(|x| x.id == *id) else {
                    continue;
                };
                v["action"] = json!("COMMENTED");
                v["commentAction"] = json!("ADDED");
                v["comment"] = comment_json(c, p, x);
                if let Some(i) = &x.inline {
                    v["commentAnchor"] = json!({
                        "line": i.to.or(i.from), "lineType": if i.to.is_some() { "ADDED" } else { "REMOVED" },
                        "fileType": if i.to.is_some() { "TO" } else { "FROM" },
                        "path": i.path, "srcPath": i.path, "diffType": "EFFECTIVE", "orphaned": false,
                    });
                }
            }
        }
        out.push((a.at_ms, a.id, v));
    }
    for t in &p.tasks {
        out.push((
            t.created_ms,
            t.id,
            json!({
                "id": t.id, "createdDate": t.created_ms, "user": user_json(c.base, &t.creator),
                "action": "COMMENTED", "commentAction": "ADDED",
                "comment": {"id": t.id, "version": 0, "text": t.text,
                            "author": user_json(c.base, &t.creator),
                            "createdDate": t.created_ms, "updatedDate": t.updated_ms,
                            "comments": [], "tasks": [], "severity": "BLOCKER",
                            "state": if t.resolved { "RESOLVED" } else { "OPEN" }},
            }),
        ));
    }
    out.sort_by_key(|(at, id, _)| std::cmp::Reverse((*at, *id)));
    out.into_iter().map(|(_, _, v)| v).collect()
}
