//! The repository metadata endpoints of the Cloud double (`/2.0/repositories/{ws}/{slug}/…`),
//! rendering a [`RepoMetadata`] as Bitbucket Cloud REST 2.0 JSON. Sources: the Bitbucket
//! Cloud REST API reference (developer.atlassian.com/cloud/bitbucket/rest, groups
//! Pullrequests, Issue tracker, Branch restrictions, Branching model, Deployments,
//! Pipelines, Repositories, Downloads, Webhooks) and the behaviour reported in
//! Bitbucket's own issue tracker where the reference is silent.
//!
//! | endpoint | answer |
//! |---|---|
//! | `pullrequests` | paged; `state` repeatable (default `OPEN`); `sort` honoured; `pagelen` above 50 → 400 (site/master#9659); values WITHOUT `reviewers`/`participants` unless `fields` names them (as on Cloud) |
//! | `pullrequests/{id}` | the full pull request |
//! | `pullrequests/{id}/comments` | paged (max 100), `inline {path,from,to}`, `parent {id}` |
//! | `pullrequests/{id}/activity` | newest first, cursor paging (`ctx`, no `page`/`size`), max 50; entries `update`, `approval`, `changes_requested`, `comment` with `pull_request` |
//! | `pullrequests/{id}/tasks` | paged (max 100) |
//! | `issues`, `issues/{id}`, `/comments`, `/changes`, `/attachments` | tracker off → 404 `Repository has no issue tracker.` |
//! | `issues/{id}/attachments/{name}`, `downloads/{name}` | 302 to the file origin ([`crate::files`]) |
//! | `branch-restrictions`, `branching-model`, `branching-model/settings`, `default-reviewers`, `deploy-keys`, `hooks`, `pipelines_config`, `pipelines_config/variables`, `pipelines_config/schedules`, `environments`, `deployments_config/environments/{uuid}/variables`, `downloads` | as documented; webhook secrets never returned (`secret_set`), secured variables without `value` |
//!
//! `q` (filtering) is ignored: every item is returned. `fields` is honoured only to add
//! `reviewers`/`participants` to the pull request list. Paging elsewhere: `pagelen`
//! default 10, max 100 (more is clamped), 1-based `page`, absolute `next`.

use hyper::header::{HeaderValue, LOCATION};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::{error, json_response, paginate_max, uuid_for};
use crate::files::FileOrigin;
use crate::httputil::{self, Body};
use crate::metadata::{
    cloud_time, display_name, Activity, ActivityKind, Comment, FileItem, Issue, PrState,
    PullRequest, RepoMetadata, Variable,
};

/// The largest `pagelen` of the pull request list (more is a 400).
pub const MAX_PR_PAGELEN: usize = 50;
/// The largest `pagelen` of the activity log.
pub const MAX_ACTIVITY_PAGELEN: usize = 50;
/// The message of a 404 from the issue endpoints of a repository without a tracker.
pub const NO_ISSUE_TRACKER: &str = "Repository has no issue tracker.";

/// Where the request is.
pub(super) struct RepoCtx<'a> {
    pub base: &'a str,
    pub ws: &'a str,
    pub slug: &'a str,
    pub repo_uuid: &'a str,
    pub files: &'a FileOrigin,
}

impl RepoCtx<'_> {
    fn api(&self, rest: &str) -> String {
        format!(
            "{}/2.0/repositories/{}/{}{rest}",
            self.base,
            httputil::percent_encode(self.ws),
            httputil::percent_encode(self.slug)
        )
    }

    fn path(&self, rest: &str) -> String {
        format!(
            "/2.0/repositories/{}/{}{rest}",
            httputil::percent_encode(self.ws),
            httputil::percent_encode(self.slug)
        )
    }

    fn html(&self, rest: &str) -> String {
        format!("{}/{}/{}{rest}", self.base, self.ws, self.slug)
    }

    fn repo_short(&self) -> Value {
        json!({
            "type": "repository",
            "full_name": format!("{}/{}", self.ws, self.slug),
            "name": self.slug,
            "uuid": self.repo_uuid,
            "links": {"self": {"href": self.api("")}, "html": {"href": self.html("")}},
        })
    }

    fn user(&self, name: &str) -> Value {
        user_json(self.base, name)
    }
}

/// A user as Cloud embeds it (author, reviewer, ...).
pub(super) fn user_json(base: &str, name: &str) -> Value {
    let uuid = uuid_for("user", name);
    json!({
        "display_name": display_name(name),
        "links": {
            "self": {"href": format!("{base}/2.0/users/{}", httputil::percent_encode(&uuid))},
            "avatar": {"href": format!("{base}/account/{name}/avatar/")},
            "html": {"href": format!("{base}/{}/", httputil::percent_encode(&uuid))},
        },
        "type": "user",
        "uuid": uuid,
        "account_id": name,
        "nickname": name,
    })
}

fn rendered(raw: &str) -> Value {
    json!({"type": "rendered", "raw": raw, "markup": "markdown", "html": format!("<p>{raw}</p>")})
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn id_of(seg: &str) -> Option<u64> {
    seg.parse().ok()
}

/// Answers `GET /2.0/repositories/{ws}/{slug}/{rest…}` (the caller checked access and scopes).
pub(super) fn repo_endpoint(
    c: &RepoCtx,
    m: &RepoMetadata,
    rest: &[&str],
    params: &[(String, String)],
) -> Response<Body> {
    let result = match rest {
        ["pullrequests", ..] => pullrequests(c, m, &rest[1..], params),
        ["issues", ..] => issues(c, m, &rest[1..], params),
        ["downloads", name] => match m.downloads.iter().find(|f| f.name == *name) {
            Some(f) => Ok(redirect(c.files, f)),
            None => Err(not_found(&format!("No download named {name}"))),
        },
        _ => settings(c, m, rest, params),
    };
    result.unwrap_or_else(|e| *e)
}

/// An answer; `Err` is an error answer (boxed: a `Response` is large).
type Answer = Result<Response<Body>, Box<Response<Body>>>;

fn not_found(msg: &str) -> Box<Response<Body>> {
    Box::new(error(StatusCode::NOT_FOUND, msg))
}

fn bad_request(msg: &str) -> Box<Response<Body>> {
    Box::new(error(StatusCode::BAD_REQUEST, msg))
}

fn redirect(files: &FileOrigin, f: &FileItem) -> Response<Body> {
    let url = files.presign(&f.name, f.bytes.clone());
    let mut r = Response::new(httputil::full(""));
    *r.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(&url) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

/// Sorts by `sort` (`field` or `-field`; any top-level field of the items).
fn sort_values(
    items: &mut [Value],
    params: &[(String, String)],
) -> Result<(), Box<Response<Body>>> {
    let Some(spec) = param(params, "sort") else {
        return Ok(());
    };
    let (desc, field) = match spec.strip_prefix('-') {
        Some(f) => (true, f),
        None => (false, spec),
    };
    if items.first().is_some_and(|v| v.get(field).is_none()) {
        return Err(bad_request(&format!("Invalid field name: {field}")));
    }
    items.sort_by(|a, b| {
        let ord = match (&a[field], &b[field]) {
            (Value::Number(x), Value::Number(y)) => x
                .as_f64()
                .unwrap_or(0.0)
                .total_cmp(&y.as_f64().unwrap_or(0.0)),
            (x, y) => x.as_str().unwrap_or("").cmp(y.as_str().unwrap_or("")),
        };
        if desc {
            ord.reverse()
        } else {
            ord
        }
    });
    Ok(())
}

fn page(c: &RepoCtx, mut items: Vec<Value>, rest: &str, params: &[(String, String)]) -> Answer {
    sort_values(&mut items, params)?;
    Ok(paginate_max(
        items,
        c.base,
        &c.path(rest),
        params,
        100,
        false,
    ))
}

// ---------------------------------------------------------------- pull requests

fn pullrequests(
    c: &RepoCtx,
    m: &RepoMetadata,
    rest: &[&str],
    params: &[(String, String)],
) -> Answer {
    let Some(&first) = rest.first() else {
        return pr_list(c, m, params);
    };
    let Some(p) = id_of(first).and_then(|id| m.pr(id)) else {
        return Err(not_found(&format!(
            "There is no pull request with id {first}"
        )));
    };
    let base = format!("/pullrequests/{}", p.id);
    match &rest[1..] {
        [] => Ok(json_response(StatusCode::OK, &pr_json(c, p, true))),
        ["comments"] => {
            let items = p.comments.iter().map(|x| comment_json(c, p, x)).collect();
            page(c, items, &format!("{base}/comments"), params)
        }
        ["comments", id] => match p.comments.iter().find(|x| id_of(id) == Some(x.id)) {
            Some(x) => Ok(json_response(StatusCode::OK, &comment_json(c, p, x))),
            None => Err(not_found("Comment not found")),
        },
        ["tasks"] => {
            let items = p.tasks.iter().map(|t| task_json(c, p, t)).collect();
            page(c, items, &format!("{base}/tasks"), params)
        }
        ["activity"] => activity(c, p, params),
        _ => Err(not_found("Resource not found")),
    }
}

fn pr_list(c: &RepoCtx, m: &RepoMetadata, params: &[(String, String)]) -> Answer {
    let mut states: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k == "state")
        .map(|(_, v)| v.as_str())
        .collect();
    if states.is_empty() {
        states.push("OPEN");
    }
    for s in &states {
        if !["OPEN", "MERGED", "DECLINED", "SUPERSEDED"].contains(s) {
            return Err(bad_request(&format!(
                "\"{s}\" is not a valid value for state. Valid values are: OPEN, MERGED, DECLINED, SUPERSEDED"
            )));
        }
    }
    if let Some(v) = param(params, "pagelen") {
        if v.parse::<usize>().is_ok_and(|n| n > MAX_PR_PAGELEN) {
            return Err(bad_request(&format!(
                "Invalid pagelen: {v}. The maximum pagelen for this resource is {MAX_PR_PAGELEN}."
            )));
        }
    }
    let fields = param(params, "fields").unwrap_or("");
    let mut items: Vec<Value> = m
        .pull_requests
        .iter()
        .filter(|p| states.contains(&p.state.cloud()))
        .map(|p| {
            let mut v = pr_json(c, p, true);
            if let Some(o) = v.as_object_mut() {
                for f in ["reviewers", "participants"] {
                    if !fields.contains(f) {
                        o.remove(f);
                    }
                }
            }
            v
        })
        .collect();
    sort_values(&mut items, params)?;
    Ok(paginate_max(
        items,
        c.base,
        &c.path("/pullrequests"),
        params,
        MAX_PR_PAGELEN,
        true,
    ))
}

fn pr_links(c: &RepoCtx, id: u64) -> Value {
    let l = |s: &str| json!({"href": c.api(&format!("/pullrequests/{id}{s}"))});
    json!({
        "self": l(""), "html": {"href": c.html(&format!("/pull-requests/{id}"))},
        "commits": l("/commits"), "approve": l("/approve"), "request-changes": l("/request-changes"),
        "diff": l("/diff"), "diffstat": l("/diffstat"), "comments": l("/comments"),
        "activity": l("/activity"), "merge": l("/merge"), "decline": l("/decline"),
        "statuses": l("/statuses"),
    })
}

fn pr_short(c: &RepoCtx, p: &PullRequest) -> Value {
    json!({
        "type": "pullrequest", "id": p.id, "title": p.title,
        "links": {"self": {"href": c.api(&format!("/pullrequests/{}", p.id))},
                  "html": {"href": c.html(&format!("/pull-requests/{}", p.id))}},
    })
}

fn fake_hash(seed: &str) -> String {
    format!(
        "{:012x}",
        super::hash64(7, seed.as_bytes()) & 0xffff_ffff_ffff
    )
}

fn endpoint(c: &RepoCtx, branch: &str) -> Value {
    json!({
        "branch": {"name": branch},
        "commit": {"type": "commit", "hash": fake_hash(branch),
                   "links": {"self": {"href": c.api(&format!("/commit/{}", fake_hash(branch)))}}},
        "repository": c.repo_short(),
    })
}

fn participants(c: &RepoCtx, p: &PullRequest) -> Vec<Value> {
    let mut names: Vec<&str> = p.reviewers.iter().map(String::as_str).collect();
    let others = p
        .approvals
        .iter()
        .chain(&p.changes_requested)
        .map(String::as_str);
    let commenters = p.comments.iter().map(|x| x.author.as_str());
    for n in others.chain(commenters) {
        if !names.contains(&n) && n != p.author {
            names.push(n);
        }
    }
    names
        .into_iter()
        .map(|n| {
            let approved = p.approvals.iter().any(|a| a == n);
            let state = if approved {
                json!("approved")
            } else if p.changes_requested.iter().any(|a| a == n) {
                json!("changes_requested")
            } else {
                Value::Null
            };
            let last = p
                .activity
                .iter()
                .rev()
                .find(|a| a.user == n)
                .map(|a| cloud_time(a.at_ms));
            json!({
                "type": "participant", "user": c.user(n),
                "role": if p.reviewers.iter().any(|r| r == n) { "REVIEWER" } else { "PARTICIPANT" },
                "approved": approved, "state": state, "participated_on": last,
            })
        })
        .collect()
}

fn pr_json(c: &RepoCtx, p: &PullRequest, _full: bool) -> Value {
    let closed = matches!(
        p.state,
        PrState::Merged | PrState::Declined | PrState::Superseded
    );
    json!({
        "type": "pullrequest",
        "id": p.id,
        "title": p.title,
        "description": p.description,
        "summary": rendered(&p.description),
        "rendered": {"title": rendered(&p.title), "description": rendered(&p.description)},
        "state": p.state.cloud(),
        "draft": false,
        "author": c.user(&p.author),
        "source": endpoint(c, &p.source),
        "destination": endpoint(c, &p.destination),
        "merge_commit": if p.state == PrState::Merged {
            json!({"type": "commit", "hash": fake_hash(&format!("merge-{}", p.id))})
        } else { Value::Null },
        "comment_count": p.comments.len(),
        "task_count": p.tasks.len(),
        "close_source_branch": false,
        "closed_by": if closed { c.user(&p.author) } else { Value::Null },
        "reason": "",
        "created_on": cloud_time(p.created_ms),
        "updated_on": cloud_time(p.updated_ms),
        "reviewers": p.reviewers.iter().map(|r| c.user(r)).collect::<Vec<_>>(),
        "participants": participants(c, p),
        "links": pr_links(c, p.id),
    })
}

fn comment_json(c: &RepoCtx, p: &PullRequest, x: &Comment) -> Value {
    let href = c.api(&format!("/pullrequests/{}/comments/{}", p.id, x.id));
    let mut v = json!({
        "id": x.id,
        "created_on": cloud_time(x.created_ms),
        "updated_on": cloud_time(x.updated_ms),
        "content": rendered(&x.text),
        "user": c.user(&x.author),
        "deleted": false,
        "pending": false,
        "type": "pullrequest_comment",
        "links": {"self": {"href": href},
                  "html": {"href": c.html(&format!("/pull-requests/{}/_/diff#comment-{}", p.id, x.id))}},
        "pullrequest": pr_short(c, p),
    });
    if let Some(i) = &x.inline {
        v["inline"] = json!({"from": i.from, "to": i.to, "path": i.path});
    }
    if let Some(parent) = x.parent {
        v["parent"] = json!({"id": parent, "links": {"self": {"href":
            c.api(&format!("/pullrequests/{}/comments/{parent}", p.id))}}});
    }
    v
}

fn task_json(c: &RepoCtx, p: &PullRequest, t: &crate::metadata::Task) -> Value {
    json!({
        "id": t.id,
        "created_on": cloud_time(t.created_ms),
        "updated_on": cloud_time(t.updated_ms),
        "state": if t.resolved { "RESOLVED" } else { "UNRESOLVED" },
        "content": rendered(&t.text),
        "creator": c.user(&t.creator),
        "pending": false,
        "resolved_on": if t.resolved { json!(cloud_time(t.updated_ms)) } else { Value::Null },
        "resolved_by": if t.resolved { c.user(&t.creator) } else { Value::Null },
        "links": {"self": {"href": c.api(&format!("/pullrequests/{}/tasks/{}", p.id, t.id))},
                  "html": {"href": c.html(&format!("/pull-requests/{}", p.id))}},
    })
}

fn activity_json(c: &RepoCtx, p: &PullRequest, a: &Activity) -> Value {
    let date = cloud_time(a.at_ms);
    let short = pr_short(c, p);
    match &a.kind {
        ActivityKind::Update { state } => json!({"update": {
            "state": state.cloud(), "draft": false, "title": p.title, "description": p.description,
            "reason": "", "author": c.user(&a.user), "date": date,
            "source": endpoint(c, &p.source), "destination": endpoint(c, &p.destination),
            "changes": {},
        }, "pull_request": short}),
        ActivityKind::Approval => json!({"approval": {
            "date": date, "pullrequest": short, "user": c.user(&a.user)}, "pull_request": short}),
        ActivityKind::ChangesRequested => json!({"changes_requested": {
            "date": date, "pullrequest": short, "user": c.user(&a.user)}, "pull_request": short}),
        ActivityKind::Comment(id) => match p.comments.iter().find(|x| x.id == *id) {
            Some(x) => json!({"comment": comment_json(c, p, x), "pull_request": short}),
            None => json!({"pull_request": short}),
        },
    }
}

/// Cloud's activity log pages with an opaque `ctx` cursor: no `page`, no `size`.
fn activity(c: &RepoCtx, p: &PullRequest, params: &[(String, String)]) -> Answer {
    let pagelen = match param(params, "pagelen") {
        None => 10,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 => n.min(MAX_ACTIVITY_PAGELEN),
            _ => return Err(bad_request(&format!("Invalid pagelen: {v:?}"))),
        },
    };
    let start = match param(params, "ctx") {
        None => 0,
        Some(ctx) => match decode_ctx(ctx) {
            Some(n) => n,
            None => return Err(bad_request("Invalid ctx")),
        },
    };
    let values: Vec<Value> = p
        .activity
        .iter()
        .rev()
        .skip(start)
        .take(pagelen)
        .map(|a| activity_json(c, p, a))
        .collect();
    let mut body = json!({"values": values, "pagelen": pagelen});
    if start + pagelen < p.activity.len() {
        let pairs = vec![
            ("ctx".to_string(), encode_ctx(start + pagelen)),
            ("pagelen".to_string(), pagelen.to_string()),
        ];
        body["next"] = json!(format!(
            "{}?{}",
            c.api(&format!("/pullrequests/{}/activity", p.id)),
            httputil::encode_form(&pairs)
        ));
    }
    Ok(json_response(StatusCode::OK, &body))
}

fn encode_ctx(n: usize) -> String {
    format!(
        "c{:x}",
        (n as u64).wrapping_mul(2_654_435_761) ^ 0x5bd1_e995
    )
}

fn decode_ctx(s: &str) -> Option<usize> {
    let x = u64::from_str_radix(s.strip_prefix('c')?, 16).ok()? ^ 0x5bd1_e995;
    (x % 2_654_435_761 == 0).then_some((x / 2_654_435_761) as usize)
}

// ---------------------------------------------------------------- issues

fn issues(c: &RepoCtx, m: &RepoMetadata, rest: &[&str], params: &[(String, String)]) -> Answer {
    if !m.issue_tracker {
        return Err(not_found(NO_ISSUE_TRACKER));
    }
    let Some(&first) = rest.first() else {
        let items = m.issues.iter().map(|i| issue_json(c, i)).collect();
        return page(c, items, "/issues", params);
    };
    let Some(i) = id_of(first).and_then(|id| m.issue(id)) else {
        return Err(not_found(&format!("No issue with id {first}")));
    };
    let base = format!("/issues/{}", i.id);
    match &rest[1..] {
        [] => Ok(json_response(StatusCode::OK, &issue_json(c, i))),
        ["comments"] => {
            let items = i.comments.iter().map(|x| json!({
                "type": "issue_comment", "id": x.id,
                "created_on": cloud_time(x.created_ms), "updated_on": Value::Null,
                "content": rendered(&x.text), "user": c.user(&x.author),
                "issue": issue_short(c, i),
                "links": {"self": {"href": c.api(&format!("{base}/comments/{}", x.id))},
                          "html": {"href": c.html(&format!("/issues/{}#comment-{}", i.id, x.id))}},
            })).collect();
            page(c, items, &format!("{base}/comments"), params)
        }
        ["changes"] => {
            let items = i.changes.iter().map(|x| json!({
                "type": "issue_change", "id": x.id, "name": x.field,
                "created_on": cloud_time(x.created_ms), "user": c.user(&x.user),
                "issue": issue_short(c, i),
                "changes": {x.field.clone(): {"old": x.old, "new": x.new}},
                "message": rendered(""),
                "links": {"self": {"href": c.api(&format!("{base}/changes/{}", x.id))},
                          "issue": {"href": c.api(&base)},
                          "html": {"href": c.html(&format!("/issues/{}#change-{}", i.id, x.id))}},
            })).collect();
            page(c, items, &format!("{base}/changes"), params)
        }
        ["attachments"] => {
            let items = i
                .attachments
                .iter()
                .map(|f| {
                    json!({
                        "type": "issue_attachment", "name": f.name,
                        "links": {"self": {"href": c.api(&format!("{base}/attachments/{}",
                            httputil::percent_encode(&f.name)))}},
                    })
                })
                .collect();
            page(c, items, &format!("{base}/attachments"), params)
        }
        ["attachments", name] => match i.attachments.iter().find(|f| f.name == *name) {
            Some(f) => Ok(redirect(c.files, f)),
            None => Err(not_found(&format!("No attachment named {name}"))),
        },
        _ => Err(not_found("Resource not found")),
    }
}

fn issue_short(c: &RepoCtx, i: &Issue) -> Value {
    json!({"type": "issue", "id": i.id, "title": i.title, "repository": c.repo_short(),
           "links": {"self": {"href": c.api(&format!("/issues/{}", i.id))}}})
}

fn issue_json(c: &RepoCtx, i: &Issue) -> Value {
    let l = |s: &str| json!({"href": c.api(&format!("/issues/{}{s}", i.id))});
    json!({
        "type": "issue", "id": i.id, "repository": c.repo_short(), "title": i.title,
        "reporter": c.user(&i.reporter),
        "assignee": i.assignee.as_deref().map(|a| c.user(a)),
        "created_on": cloud_time(i.created_ms), "updated_on": cloud_time(i.updated_ms),
        "edited_on": Value::Null, "state": i.state, "kind": i.kind, "priority": i.priority,
        "milestone": Value::Null, "version": Value::Null, "component": Value::Null,
        "votes": 0, "watches": 1, "content": rendered(&i.content),
        "links": {"self": l(""), "html": {"href": c.html(&format!("/issues/{}", i.id))},
                  "comments": l("/comments"), "attachments": l("/attachments"),
                  "watch": l("/watch"), "vote": l("/vote")},
    })
}

// ---------------------------------------------------------------- settings

fn settings(c: &RepoCtx, m: &RepoMetadata, rest: &[&str], params: &[(String, String)]) -> Answer {
    let path = format!("/{}", rest.join("/"));
    let with = |id: u64| uuid_for("item", &format!("{}/{}/{id}", c.ws, c.slug));
    let items: Vec<Value> = match rest {
        ["branch-restrictions"] => m.branch_restrictions.iter().map(|b| json!({
            "type": "branchrestriction", "id": b.id, "kind": b.kind,
            "branch_match_kind": "glob", "pattern": b.pattern,
            "users": b.users.iter().map(|u| c.user(u)).collect::<Vec<_>>(),
            "groups": b.groups, "value": b.value,
            "links": {"self": {"href": c.api(&format!("/branch-restrictions/{}", b.id))}},
        })).collect(),
        ["branching-model"] => return Ok(json_response(StatusCode::OK, &branching_model(c, m, false))),
        ["branching-model", "settings"] => {
            return Ok(json_response(StatusCode::OK, &branching_model(c, m, true)))
        }
        ["default-reviewers"] => m.default_reviewers.iter().map(|u| c.user(u)).collect(),
        ["deploy-keys"] => m.deploy_keys.iter().map(|k| json!({
            "type": "deploy_key", "id": k.id, "key": k.key, "label": k.label,
            "comment": k.key.split_whitespace().nth(2).unwrap_or(""),
            "created_on": cloud_time(k.created_ms), "last_used": Value::Null,
            "repository": c.repo_short(),
            "links": {"self": {"href": c.api(&format!("/deploy-keys/{}", k.id))}},
        })).collect(),
        ["hooks"] => m.webhooks.iter().map(|h| json!({
            "type": "webhook_subscription", "uuid": with(h.id), "url": h.url,
            "description": h.description, "subject_type": "repository",
            "subject": c.repo_short(), "active": h.active,
            "created_at": cloud_time(h.created_ms), "events": h.events,
            "secret_set": h.secret.is_some(), "skip_cert_verification": false,
            "links": {"self": {"href": c.api(&format!("/hooks/{}",
                httputil::percent_encode(&with(h.id))))}},
        })).collect(),
        ["pipelines_config"] => return Ok(json_response(StatusCode::OK, &json!({
            "type": "repository_pipelines_configuration", "enabled": m.pipelines_enabled,
            "repository": c.repo_short(),
        }))),
        ["pipelines_config", "variables"] => m.pipeline_variables.iter()
            .map(|v| variable_json("pipeline_variable", with(v.id), v)).collect(),
        ["pipelines_config", "schedules"] => m.pipeline_schedules.iter().map(|s| json!({
            "type": "pipeline_schedule", "uuid": with(s.id), "enabled": s.enabled,
            "target": {"type": "pipeline_ref_target", "ref_type": "branch", "ref_name": s.branch,
                       "selector": {"type": "branches", "pattern": s.branch}},
            "cron_pattern": s.cron,
            "created_on": cloud_time(s.created_ms), "updated_on": cloud_time(s.created_ms),
        })).collect(),
        ["environments"] => m.environments.iter().enumerate().map(|(rank, e)| {
            let type_rank = ["Test", "Staging", "Production"]
                .iter().position(|t| *t == e.environment_type).unwrap_or(0);
            json!({
                "type": "deployment_environment", "uuid": with(e.id), "name": e.name,
                "slug": e.name.to_lowercase(), "rank": rank, "hidden": false,
                "environment_type": {"type": "deployment_environment_type",
                                     "name": e.environment_type, "rank": type_rank},
                "category": {"name": e.environment_type},
                "restrictions": {"type": "deployment_restrictions_configuration", "admin_only": false},
                "lock": {"type": "deployment_environment_lock_open", "name": "OPEN"},
                "environment_lock_enabled": true, "deployment_gate_enabled": false,
            })
        }).collect(),
        ["deployments_config", "environments", uuid, "variables"] => {
            let Some(e) = m.environments.iter().find(|e| with(e.id) == *uuid) else {
                return Err(not_found("Environment not found."));
            };
            e.variables.iter().map(|v| variable_json("deployment_variable", with(v.id), v)).collect()
        }
        ["downloads"] => m.downloads.iter().map(|f| json!({
            "type": "download", "name": f.name, "size": f.bytes.len(), "downloads": 0,
            "created_on": cloud_time(f.created_ms), "user": c.user(&f.user),
            "links": {"self": {"href": c.api(&format!("/downloads/{}",
                httputil::percent_encode(&f.name)))}},
        })).collect(),
        _ => return Err(not_found(&format!("Resource not found: {}", c.path(&path)))),
    };
    page(c, items, &path, params)
}

fn variable_json(kind: &str, uuid: String, v: &Variable) -> Value {
    let mut j = json!({"type": kind, "uuid": uuid, "key": v.key, "secured": v.secured});
    if !v.secured {
        j["value"] = json!(v.value);
    }
    j
}

fn branching_model(c: &RepoCtx, m: &RepoMetadata, settings: bool) -> Value {
    let bm = &m.branching_model;
    let types: Vec<Value> = bm
        .types
        .iter()
        .map(|(k, p)| {
            if settings {
                json!({"kind": k, "enabled": true, "prefix": p})
            } else {
                json!({"kind": k, "prefix": p})
            }
        })
        .collect();
    if settings {
        json!({
            "type": "branching_model_settings",
            "development": {"is_valid": true, "name": bm.development, "use_mainbranch": bm.development.is_none()},
            "production": {"is_valid": true, "name": bm.production, "use_mainbranch": false,
                           "enabled": bm.production.is_some()},
            "branch_types": types,
            "links": {"self": {"href": c.api("/branching-model/settings")}},
        })
    } else {
        let branch = |name: &Option<String>| {
            json!({"name": name, "use_mainbranch": name.is_none(),
                   "branch": name.as_deref().map(|n| json!({"type": "branch", "name": n}))})
        };
        let mut v = json!({
            "type": "branching_model",
            "development": branch(&bm.development),
            "branch_types": types,
            "links": {"self": {"href": c.api("/branching-model")}},
        });
        if bm.production.is_some() {
            v["production"] = branch(&bm.production);
        }
        v
    }
}

/// The OAuth scope Cloud requires for `GET /2.0/repositories/{ws}/{slug}/{rest…}`.
pub(super) fn required_scope(rest: &[&str]) -> &'static str {
    match rest {
        [] | ["downloads", ..] | ["branching-model"] => "repository",
        ["pullrequests", ..] | ["default-reviewers", ..] => "pullrequest",
        ["issues", ..] => "issue",
        ["branch-restrictions", ..] | ["branching-model", ..] | ["deploy-keys", ..] => {
            "repository:admin"
        }
        ["hooks", ..] => "webhook",
        ["pipelines_config", "variables", ..] | ["deployments_config", ..] => "pipeline:variable",
        ["pipelines_config", ..] | ["environments", ..] => "pipeline",
        _ => "repository",
    }
}

/// Whether `granted` satisfies `required`, with Cloud's implications (`X:write` implies
/// `X`, `pullrequest` implies `repository`, `pipeline:variable` implies `pipeline`;
/// `repository:admin` implies neither `repository` nor `repository:write`).
pub(super) fn scope_ok(granted: &[String], required: &str) -> bool {
    granted.iter().any(|g| {
        g == required
            || *g == format!("{required}:write")
            || (required == "repository" && g.starts_with("pullrequest"))
            || (required == "repository:write" && g == "pullrequest:write")
            || (required == "pipeline" && g == "pipeline:variable")
            || (required == "project" && g == "project:admin")
    })
}
