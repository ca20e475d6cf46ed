//! Restoring into Bitbucket Data Center (world 0.4.0): finding and creating the
//! repository (`GET`/`POST /rest/api/1.0/projects/{key}/repos`), the kinds that can be
//! written back, and writing the `repository` and `pullrequests` documents of a snapshot
//! (of this provider or of Bitbucket Cloud) into it, and a Data Center snapshot's
//! `pull-request-settings` (`POST …/settings/pull-requests`), `branching-model` (`PUT
//! /rest/branch-utils/1.0/…/branchmodel/configuration`), `webhooks` (`POST …/webhooks`;
//! secrets were never backed up: each created hook `needs-user`), `access-keys`
//! (`POST /rest/keys/1.0/…/ssh`; a key the repository has is skipped) and
//! `branch-permissions` (`POST /rest/branch-permissions/2.0/…/restrictions`; one of the
//! same type on the same branches is skipped) and `default-reviewers` (`POST
//! /rest/default-reviewers/1.0/…/condition`, reviewers by user id: a restore into
//! another server needs the same users; one with the same matchers is skipped).
//!
//! Nothing is overwritten or deleted: a pull request that exists already (DC's 409
//! `DuplicatePullRequestException`) is `skipped` naming it. A 401 or 403 fails the whole
//! call (the kind); any other refusal fails only its document, with the server's message.

use serde_json::{json, Value};

use crate::reposafe::provider::http::{self, Request, Response};
use crate::reposafe::provider::types::{
    Connection, NeedsUser, NewRepository, ProviderError, Repository, RestoreContext,
    RestoreDocument, RestoreKind, RestoreOutcome, RestoredDocument,
};
use crate::{base_url, encode_path_segment};

/// The provider ids of snapshots this provider reads.
const CLOUD: &str = "bitbucket-cloud";
const DC: &str = "bitbucket-dc";

/// The kinds of a snapshot of `source_provider` that can be written back, in order.
/// (A Cloud snapshot's `issues` are not: Data Center has no issue tracker.)
pub fn kinds(source_provider: &str) -> Vec<RestoreKind> {
    let names: &[&str] = match source_provider {
        DC => &[
            "repository",
            "pullrequests",
            "pull-request-settings",
            "branch-permissions",
            "default-reviewers",
            "branching-model",
            "webhooks",
            "access-keys",
        ],
        CLOUD => &["repository", "pullrequests"],
        _ => &[],
    };
    names
        .iter()
        .map(|name| RestoreKind {
            name: (*name).to_string(),
            whole: false,
        })
        .collect()
}

/// `{base}/rest/api/1.0/projects/{key}/repos`.
fn repos_url(conn: &Connection, key: &str) -> Result<String, ProviderError> {
    Ok(format!(
        "{}/rest/api/1.0/projects/{}/repos",
        base_url(conn)?,
        encode_path_segment(key)
    ))
}

/// `GET /rest/api/1.0/projects/{key}/repos/{slug}`; `None` on 404.
pub fn find(conn: &Connection, key: &str, slug: &str) -> Result<Option<Repository>, ProviderError> {
    let url = format!("{}/{}", repos_url(conn, key)?, encode_path_segment(slug));
    let Some(value) = crate::documents::get_json(&url)? else {
        return Ok(None);
    };
    crate::api::repository(&value, 0, key).map(Some)
}

/// The body of `POST /rest/api/1.0/projects/{key}/repos` for `new`.
pub fn new_repository_body(new: &NewRepository) -> Value {
    let original: Value = new
        .original
        .as_deref()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null);
    let mut body = json!({"name": new.slug, "scmId": "git", "public": !new.source.is_private});
    let description = original.get("description").and_then(Value::as_str);
    if let Some(d) = description.filter(|d| !d.is_empty()) {
        body["description"] = json!(d);
    }
    match new.source_provider.as_str() {
        DC => {
            for key in ["public", "forkable"] {
                if let Some(b) = original.get(key).and_then(Value::as_bool) {
                    body[key] = json!(b);
                }
            }
        }
        CLOUD => {
            if let Some(private) = original.get("is_private").and_then(Value::as_bool) {
                body["public"] = json!(!private);
            }
            if let Some(policy) = original.get("fork_policy").and_then(Value::as_str) {
                body["forkable"] = json!(policy != "no_forks");
            }
        }
        _ => {}
    }
    body
}

/// `POST /rest/api/1.0/projects/{key}/repos`: 409 → `conflict`.
pub fn create(conn: &Connection, new: &NewRepository) -> Result<Repository, ProviderError> {
    let url = repos_url(conn, &new.scope)?;
    let resp = send_json("POST", &url, &new_repository_body(new))?;
    match resp.status {
        200..=299 => {
            let value: Value = serde_json::from_slice(&resp.body).map_err(|e| {
                ProviderError::InvalidResponse(format!("POST {url}: not JSON: {e}"))
            })?;
            crate::api::repository(&value, 0, &new.scope)
        }
        409 => Err(ProviderError::Conflict(format!(
            "repository {}/{} exists already: {}",
            new.scope,
            new.slug,
            message(&resp.body)
        ))),
        status => Err(refusal("POST", &url, status, &resp.body)),
    }
}

/// Writes `docs` of `kind` into `repo`.
pub fn restore(
    conn: &Connection,
    repo: &Repository,
    kind: &str,
    ctx: &RestoreContext,
    docs: &[RestoreDocument],
) -> Result<Vec<RestoredDocument>, ProviderError> {
    let at = format!(
        "{}/{}",
        repos_url(conn, &repo.scope)?,
        encode_path_segment(&repo.slug)
    );
    // The repository under another REST root (`branch-utils/1.0`, `keys/1.0`).
    let under = |root: &str| -> Result<String, ProviderError> {
        Ok(format!(
            "{}/rest/{root}/projects/{}/repos/{}",
            base_url(conn)?,
            encode_path_segment(&repo.scope),
            encode_path_segment(&repo.slug)
        ))
    };
    let mut out = Vec::with_capacity(docs.len());
    // The hooks the repository has, as (name, url) → id: never created twice.
    let hooks = match kind {
        "webhooks" => existing_hooks(&at)?,
        _ => Vec::new(),
    };
    let keys_at = under("keys/1.0")?;
    let perms_at = format!("{}/restrictions", under("branch-permissions/2.0")?);
    let perms = match kind {
        "branch-permissions" => existing_restrictions(&perms_at)?,
        _ => Vec::new(),
    };
    let reviewers_at = under("default-reviewers/1.0")?;
    let conditions = match kind {
        "default-reviewers" => existing_conditions(&reviewers_at)?,
        _ => Vec::new(),
    };
    let keys = match kind {
        "access-keys" => existing_keys(&keys_at)?,
        _ => Vec::new(),
    };
    for doc in docs {
        let value: Value = match serde_json::from_str(&doc.json) {
            Ok(v) => v,
            Err(e) => {
                out.push(outcome(
                    doc,
                    RestoreOutcome::Failed(format!("not JSON: {e}")),
                ));
                continue;
            }
        };
        let result = match kind {
            "repository" => repository(&at, &value, ctx)?,
            "pullrequests" => pull_request(&at, repo, &value, ctx)?,
            "pull-request-settings" => pr_settings(&at, &value)?,
            "webhooks" => webhook(&at, &value, &hooks)?,
            "branching-model" => branching_model(&under("branch-utils/1.0")?, &value)?,
            "access-keys" => access_key(&keys_at, &value, &keys)?,
            "branch-permissions" => restriction(&perms_at, &value, &perms)?,
            "default-reviewers" => condition(&reviewers_at, &value, &conditions)?,
            other => RestoreOutcome::Skipped(format!(
                "kind {other} is not restorable into Bitbucket Data Center"
            )),
        };
        out.push(outcome(doc, result));
    }
    Ok(out)
}

fn outcome(doc: &RestoreDocument, outcome: RestoreOutcome) -> RestoredDocument {
    RestoredDocument {
        id: doc.id.clone(),
        outcome,
    }
}

/// The name `refs/heads/<branch>` was pushed as (renamed when the target had it).
fn pushed_branch(ctx: &RestoreContext, branch: &str) -> (String, bool) {
    let full = format!("refs/heads/{branch}");
    match ctx.renamed_refs.iter().find(|(from, _)| *from == full) {
        Some((_, to)) => (to.clone(), true),
        None => (full, false),
    }
}

/// `repository`: the description and default branch (`PUT …/repos/{slug}`); the default
/// branch only when it was pushed under its own name.
fn repository(
    at: &str,
    doc: &Value,
    ctx: &RestoreContext,
) -> Result<RestoreOutcome, ProviderError> {
    let mut body = json!({});
    if let Some(d) = doc.get("description").and_then(Value::as_str) {
        body["description"] = json!(d);
    }
    let branch = doc
        .pointer("/mainbranch/name")
        .or_else(|| doc.get("defaultBranch"))
        .and_then(Value::as_str)
        .map(|b| b.strip_prefix("refs/heads/").unwrap_or(b));
    if let Some(b) = branch {
        if let (full, false) = pushed_branch(ctx, b) {
            body["defaultBranch"] = json!(full);
        }
    }
    let resp = send_json("PUT", at, &body)?;
    Ok(match resp.status {
        200..=299 => RestoreOutcome::Restored("repository".to_string()),
        401 | 403 => return Err(refusal("PUT", at, resp.status, &resp.body)),
        status => {
            RestoreOutcome::Failed(format!("PUT {at}: HTTP {status}: {}", message(&resp.body)))
        }
    })
}

/// A pull request of a snapshot, whichever provider it came from.
struct Pull {
    title: String,
    description: String,
    state: String,
    author: String,
    created: Option<String>,
    updated: Option<String>,
    source: Option<String>,
    destination: Option<String>,
    /// (author, date, text).
    comments: Vec<(String, Option<String>, String)>,
}

/// Reads a snapshot's pull request document: Cloud's `{"pullrequest", "comments"}` or
/// Data Center's `{"pullrequest", "activities"}`.
fn read_pull(doc: &Value) -> Pull {
    let pr = doc.get("pullrequest").unwrap_or(&Value::Null);
    let text = |p: &str| {
        pr.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let branch = |cloud: &str, dc: &str| {
        pr.pointer(cloud)
            .or_else(|| pr.pointer(dc))
            .and_then(Value::as_str)
            .map(String::from)
    };
    Pull {
        title: text("/title"),
        description: text("/description"),
        state: text("/state"),
        author: user_name(pr.get("author")),
        created: when(pr.get("created_on").or_else(|| pr.get("createdDate"))),
        updated: when(pr.get("updated_on").or_else(|| pr.get("updatedDate"))),
        source: branch("/source/branch/name", "/fromRef/displayId"),
        destination: branch("/destination/branch/name", "/toRef/displayId"),
        comments: comments(doc),
    }
}

/// A user's display name: Cloud's `display_name`, DC's `displayName`/`name`, or
/// DC's participant `{"user": {...}}`.
fn user_name(v: Option<&Value>) -> String {
    let Some(v) = v else {
        return "an unknown user".to_string();
    };
    let v = v.get("user").unwrap_or(v);
    ["display_name", "displayName", "nickname", "name"]
        .iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str))
        .unwrap_or("an unknown user")
        .to_string()
}

/// A date as text: RFC 3339 as given, DC's epoch milliseconds converted.
fn when(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => n.as_i64().map(crate::time::from_epoch_millis),
        _ => None,
    }
}

/// The comments of a document, oldest first (deleted ones left out).
fn comments(doc: &Value) -> Vec<(String, Option<String>, String)> {
    let mut out = Vec::new();
    for c in doc
        .get("comments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if c.get("deleted").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        let text = c
            .pointer("/content/raw")
            .and_then(Value::as_str)
            .unwrap_or("");
        out.push((
            user_name(c.get("user")),
            when(c.get("created_on")),
            text.to_string(),
        ));
    }
    let mut dc = Vec::new();
    for a in doc
        .get("activities")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if a.get("action").and_then(Value::as_str) != Some("COMMENTED") {
            continue;
        }
        if let Some(c) = a.get("comment") {
            dc_comment(c, &mut dc);
        }
    }
    dc.sort_by_key(|(at, ..)| *at);
    out.extend(
        dc.into_iter()
            .map(|(at, who, text)| (who, when(Some(&json!(at))), text)),
    );
    out
}

/// A DC comment and its nested replies, as (epoch ms, author, text).
fn dc_comment(c: &Value, out: &mut Vec<(i64, String, String)>) {
    let at = c.get("createdDate").and_then(Value::as_i64).unwrap_or(0);
    let text = c.get("text").and_then(Value::as_str).unwrap_or("");
    out.push((at, user_name(c.get("author")), text.to_string()));
    for reply in c
        .get("comments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        dc_comment(reply, out);
    }
}

/// `> ` before every line.
fn quoted(text: &str) -> String {
    text.lines()
        .map(|l| format!("> {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The description of the re-created pull request: who opened it and when, then the
/// original description.
fn description(pull: &Pull, ctx: &RestoreContext) -> String {
    let mut head = format!("> Originally opened by {}", pull.author);
    if let Some(c) = &pull.created {
        head.push_str(&format!(" on {c}"));
    }
    if let Some(u) = &pull.updated {
        head.push_str(&format!(", last updated {u}"));
    }
    head.push_str(&format!(
        ", in {} (restored from the snapshot of {})",
        ctx.source_full_name, ctx.snapshot_taken_at
    ));
    if pull.description.is_empty() {
        head
    } else {
        format!("{head}\n\n{}", pull.description)
    }
}

/// The one comment holding every original comment, quoted.
fn thread(pull: &Pull) -> String {
    let parts: Vec<String> = pull
        .comments
        .iter()
        .map(|(who, at, text)| {
            let at = at
                .as_deref()
                .map(|a| format!(" on {a}"))
                .unwrap_or_default();
            format!("> **{who}**{at}:\n>\n{}", quoted(text))
        })
        .collect();
    format!(
        "Comments of the original pull request:\n\n{}",
        parts.join("\n\n")
    )
}

/// `pullrequests`: an open pull request re-created (`POST …/pull-requests`), its
/// comments posted as one quoted comment.
fn pull_request(
    at: &str,
    repo: &Repository,
    doc: &Value,
    ctx: &RestoreContext,
) -> Result<RestoreOutcome, ProviderError> {
    let pull = read_pull(doc);
    if !pull.state.eq_ignore_ascii_case("OPEN") {
        return Ok(RestoreOutcome::Skipped(format!(
            "not open ({}); only open pull requests are re-created",
            pull.state
        )));
    }
    let (Some(source), Some(destination)) = (&pull.source, &pull.destination) else {
        return Ok(RestoreOutcome::Failed(
            "the document names no source or destination branch".to_string(),
        ));
    };
    let side = |branch: &str| {
        json!({"id": pushed_branch(ctx, branch).0,
            "repository": {"slug": repo.slug, "project": {"key": repo.scope}}})
    };
    let body = json!({
        "title": pull.title,
        "description": description(&pull, ctx),
        "fromRef": side(source),
        "toRef": side(destination),
    });
    let url = format!("{at}/pull-requests");
    let resp = send_json("POST", &url, &body)?;
    let created: Value = match resp.status {
        200..=299 => serde_json::from_slice(&resp.body).unwrap_or_default(),
        409 if exception(&resp.body).ends_with("DuplicatePullRequestException") => {
            let existing = first_error(&resp.body)
                .and_then(|e| e.pointer("/existingPullRequest/id").cloned())
                .map(|id| format!(": #{id}"))
                .unwrap_or_default();
            return Ok(RestoreOutcome::Skipped(format!("already exists{existing}")));
        }
        404 if exception(&resp.body).contains("NoSuch") => {
            return Ok(RestoreOutcome::Skipped(format!(
                "its branches ({source} → {destination}) are not both in the repository: {}",
                message(&resp.body)
            )))
        }
        401 | 403 => return Err(refusal("POST", &url, resp.status, &resp.body)),
        status => {
            return Ok(RestoreOutcome::Failed(format!(
                "POST {url}: HTTP {status}: {}",
                message(&resp.body)
            )))
        }
    };
    let Some(id) = created.get("id").and_then(Value::as_u64) else {
        return Err(ProviderError::InvalidResponse(format!(
            "POST {url}: the answer names no pull request id"
        )));
    };
    if !pull.comments.is_empty() {
        let curl = format!("{url}/{id}/comments");
        let resp = send_json("POST", &curl, &json!({"text": thread(&pull)}))?;
        if !(200..300).contains(&resp.status) {
            return Ok(RestoreOutcome::Failed(format!(
                "pull request #{id} re-created, but its comments were refused: POST {curl}: HTTP {}: {}",
                resp.status,
                message(&resp.body)
            )));
        }
    }
    Ok(RestoreOutcome::Restored(id.to_string()))
}

/// `pull-request-settings`: `POST …/settings/pull-requests` with the snapshot's merge
/// strategies and merge checks.
fn pr_settings(at: &str, doc: &Value) -> Result<RestoreOutcome, ProviderError> {
    let mut body = json!({});
    for key in [
        "requiredApprovers",
        "requiredAllApprovers",
        "requiredAllTasksComplete",
        "requiredSuccessfulBuilds",
    ] {
        if let Some(v) = doc.get(key).filter(|v| !v.is_null()) {
            body[key] = v.clone();
        }
    }
    if let Some(m) = doc.get("mergeConfig") {
        let id = |v: &Value| v.get("id").cloned().unwrap_or(Value::Null);
        let strategies: Vec<Value> = m
            .get("strategies")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|s| json!({"id": id(s)}))
            .collect();
        let default = m.get("defaultStrategy").map(id).unwrap_or(Value::Null);
        body["mergeConfig"] = json!({"defaultStrategy": {"id": default}, "strategies": strategies});
    }
    let url = format!("{at}/settings/pull-requests");
    let resp = send_json("POST", &url, &body)?;
    Ok(match resp.status {
        200..=299 => RestoreOutcome::Restored("pull-request-settings".to_string()),
        401 | 403 => return Err(refusal("POST", &url, resp.status, &resp.body)),
        status => RestoreOutcome::Failed(format!(
            "POST {url}: HTTP {status}: {}",
            message(&resp.body)
        )),
    })
}

/// Items a repository has, as (what makes two the same, id): webhooks by (name, url),
/// branch permissions by (type, matcher).
type Existing = Vec<((String, String), String)>;

/// The repository's webhooks as ((name, url), id) (`GET …/webhooks`, needs REPO_ADMIN).
fn existing_hooks(at: &str) -> Result<Existing, ProviderError> {
    let page = get_page(&format!("{at}/webhooks?start=0&limit=1000"))?;
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    Ok(page
        .iter()
        .map(|h| {
            let id = h.get("id").map(|i| i.to_string()).unwrap_or_default();
            ((text(h, "name"), text(h, "url")), id)
        })
        .collect())
}

/// `webhooks`: `POST …/webhooks` unless a hook with its name and URL exists; the secret
/// (never backed up) is for the user to re-enter.
fn webhook(at: &str, doc: &Value, existing: &Existing) -> Result<RestoreOutcome, ProviderError> {
    let text = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (name, url) = (text("name"), text("url"));
    if let Some((_, id)) = existing.iter().find(|((n, u), _)| *n == name && *u == url) {
        return Ok(RestoreOutcome::Skipped(format!(
            "already exists: webhook {id}"
        )));
    }
    let body = json!({
        "name": name,
        "url": url,
        "events": doc.get("events").cloned().unwrap_or_else(|| json!([])),
        "active": doc.get("active").and_then(Value::as_bool).unwrap_or(true),
        "sslVerificationRequired": doc.get("sslVerificationRequired").and_then(Value::as_bool).unwrap_or(true),
        "configuration": {},
    });
    let post = format!("{at}/webhooks");
    let resp = send_json("POST", &post, &body)?;
    match resp.status {
        200..=299 => {
            let created: Value = serde_json::from_slice(&resp.body).unwrap_or_default();
            let id = created.get("id").map(|i| i.to_string());
            Ok(RestoreOutcome::NeedsUser(NeedsUser {
                id,
                what: format!(
                    "webhook \"{name}\" ({url}) was created without a secret (secrets are not \
                     readable through the API): re-enter its secret in the repository's webhook \
                     settings if it had one"
                ),
            }))
        }
        401 | 403 => Err(refusal("POST", &post, resp.status, &resp.body)),
        status => Ok(RestoreOutcome::Failed(format!(
            "POST {post}: HTTP {status}: {}",
            message(&resp.body)
        ))),
    }
}

/// `branching-model`: `PUT …/branchmodel/configuration` with the snapshot's development
/// and production branches and branch types.
fn branching_model(at: &str, doc: &Value) -> Result<RestoreOutcome, ProviderError> {
    let branch = |v: Option<&Value>| match v.filter(|v| !v.is_null()) {
        Some(b) => json!({"refId": b.get("refId").cloned().unwrap_or(Value::Null),
            "useDefault": b.get("useDefault").and_then(Value::as_bool).unwrap_or(false)}),
        None => Value::Null,
    };
    let types: Vec<Value> = doc
        .get("types")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| {
            json!({"id": t.get("id"), "prefix": t.get("prefix"),
            "enabled": t.get("enabled").and_then(Value::as_bool).unwrap_or(true)})
        })
        .collect();
    let body = json!({"development": branch(doc.get("development")),
        "production": branch(doc.get("production")), "types": types});
    let url = format!("{at}/branchmodel/configuration");
    let resp = send_json("PUT", &url, &body)?;
    Ok(match resp.status {
        200..=299 => RestoreOutcome::Restored("branching-model".to_string()),
        401 | 403 => return Err(refusal("PUT", &url, resp.status, &resp.body)),
        status => {
            RestoreOutcome::Failed(format!("PUT {url}: HTTP {status}: {}", message(&resp.body)))
        }
    })
}

/// The repository's access keys as (key text, id) (`GET /rest/keys/1.0/…/ssh`).
fn existing_keys(at: &str) -> Result<Vec<(String, String)>, ProviderError> {
    let page = get_page(&format!("{at}/ssh?start=0&limit=1000"))?;
    Ok(page
        .iter()
        .map(|k| {
            let text = k.pointer("/key/text").and_then(Value::as_str).unwrap_or("");
            let id = k
                .pointer("/key/id")
                .map(|i| i.to_string())
                .unwrap_or_default();
            (text.trim().to_string(), id)
        })
        .collect())
}

/// `access-keys`: `POST …/ssh` unless the repository has the key.
fn access_key(
    at: &str,
    doc: &Value,
    existing: &[(String, String)],
) -> Result<RestoreOutcome, ProviderError> {
    let text = doc
        .pointer("/key/text")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim();
    if text.is_empty() {
        return Ok(RestoreOutcome::Failed(
            "the document has no key text".to_string(),
        ));
    }
    if let Some((_, id)) = existing.iter().find(|(t, _)| t == text) {
        return Ok(RestoreOutcome::Skipped(format!("already exists: key {id}")));
    }
    let body = json!({
        "key": {"text": text, "label": doc.pointer("/key/label").cloned().unwrap_or(Value::Null)},
        "permission": doc.get("permission").and_then(Value::as_str).unwrap_or("REPO_READ"),
    });
    let url = format!("{at}/ssh");
    let resp = send_json("POST", &url, &body)?;
    Ok(match resp.status {
        200..=299 => {
            let created: Value = serde_json::from_slice(&resp.body).unwrap_or_default();
            let id = created
                .pointer("/key/id")
                .map(|i| i.to_string())
                .unwrap_or_default();
            RestoreOutcome::Restored(id)
        }
        401 | 403 => return Err(refusal("POST", &url, resp.status, &resp.body)),
        status => RestoreOutcome::Failed(format!(
            "POST {url}: HTTP {status}: {}",
            message(&resp.body)
        )),
    })
}

/// The repository's branch permissions as ((type, matcher id), id).
fn existing_restrictions(url: &str) -> Result<Existing, ProviderError> {
    let page = get_page(&format!("{url}?start=0&limit=1000"))?;
    Ok(page
        .iter()
        .map(|r| {
            (
                restriction_key(r),
                r.get("id").map(|i| i.to_string()).unwrap_or_default(),
            )
        })
        .collect())
}

/// What makes two branch permissions the same: their type and matcher.
fn restriction_key(r: &Value) -> (String, String) {
    let text = |p: &str| {
        r.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    (text("/type"), text("/matcher/id"))
}

/// `branch-permissions`: `POST …/restrictions` (users by name, groups, no access keys:
/// their ids differ on another server) unless one of the same type and matcher exists.
fn restriction(
    url: &str,
    doc: &Value,
    existing: &Existing,
) -> Result<RestoreOutcome, ProviderError> {
    let key = restriction_key(doc);
    if let Some((_, id)) = existing.iter().find(|(k, _)| *k == key) {
        return Ok(RestoreOutcome::Skipped(format!(
            "already exists: restriction {id}"
        )));
    }
    let m = doc.get("matcher").cloned().unwrap_or(Value::Null);
    let users: Vec<Value> = doc
        .get("users")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|u| u.get("slug").or_else(|| u.get("name")).cloned())
        .collect();
    let body = json!({
        "type": key.0,
        "matcher": {"id": m.get("id"), "displayId": m.get("displayId"),
            "type": {"id": m.pointer("/type/id")}, "active": true},
        "users": users,
        "groups": doc.get("groups").cloned().unwrap_or_else(|| json!([])),
        "accessKeys": [],
    });
    let resp = send_json("POST", url, &body)?;
    Ok(match resp.status {
        200..=299 => {
            let created: Value = serde_json::from_slice(&resp.body).unwrap_or_default();
            RestoreOutcome::Restored(created.get("id").map(|i| i.to_string()).unwrap_or_default())
        }
        401 | 403 => return Err(refusal("POST", url, resp.status, &resp.body)),
        status => RestoreOutcome::Failed(format!(
            "POST {url}: HTTP {status}: {}",
            message(&resp.body)
        )),
    })
}

/// What makes two default-reviewer conditions the same: their source and target matchers.
fn condition_key(c: &Value) -> (String, String) {
    let text = |p: &str| {
        c.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    (text("/sourceRefMatcher/id"), text("/targetRefMatcher/id"))
}

/// The repository's default-reviewer conditions (`GET …/conditions`, a plain array).
fn existing_conditions(at: &str) -> Result<Existing, ProviderError> {
    let url = format!("{at}/conditions");
    let resp = crate::documents::send_get(&url)?;
    if !(200..300).contains(&resp.status) {
        return Err(refusal("GET", &url, resp.status, &resp.body));
    }
    let list: Vec<Value> = serde_json::from_slice(&resp.body)
        .map_err(|e| ProviderError::InvalidResponse(format!("GET {url}: not a JSON array: {e}")))?;
    Ok(list
        .iter()
        .map(|c| {
            (
                condition_key(c),
                c.get("id").map(|i| i.to_string()).unwrap_or_default(),
            )
        })
        .collect())
}

/// `default-reviewers`: `POST …/condition` unless one with the same matchers exists.
fn condition(at: &str, doc: &Value, existing: &Existing) -> Result<RestoreOutcome, ProviderError> {
    let key = condition_key(doc);
    if let Some((_, id)) = existing.iter().find(|(k, _)| *k == key) {
        return Ok(RestoreOutcome::Skipped(format!(
            "already exists: condition {id}"
        )));
    }
    let matcher = |p: &str| {
        let m = doc.get(p).cloned().unwrap_or(Value::Null);
        json!({"id": m.get("id"), "displayId": m.get("displayId"),
            "type": {"id": m.pointer("/type/id")}, "active": true})
    };
    let reviewers: Vec<Value> = doc
        .get("reviewers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|u| u.get("id").map(|id| json!({"id": id})))
        .collect();
    let body = json!({
        "sourceMatcher": matcher("sourceRefMatcher"),
        "targetMatcher": matcher("targetRefMatcher"),
        "reviewers": reviewers,
        "requiredApprovals": doc.get("requiredApprovals").cloned().unwrap_or(json!(0)),
    });
    let url = format!("{at}/condition");
    let resp = send_json("POST", &url, &body)?;
    Ok(match resp.status {
        200..=299 => {
            let created: Value = serde_json::from_slice(&resp.body).unwrap_or_default();
            RestoreOutcome::Restored(created.get("id").map(|i| i.to_string()).unwrap_or_default())
        }
        401 | 403 => return Err(refusal("POST", &url, resp.status, &resp.body)),
        status => RestoreOutcome::Failed(format!(
            "POST {url}: HTTP {status}: {}",
            message(&resp.body)
        )),
    })
}

/// The `values` of one page at `url` (which asks for all of them).
fn get_page(url: &str) -> Result<Vec<Value>, ProviderError> {
    let resp = crate::documents::send_get(url)?;
    if !(200..300).contains(&resp.status) {
        return Err(refusal("GET", url, resp.status, &resp.body));
    }
    let page: Value = serde_json::from_slice(&resp.body)
        .map_err(|e| ProviderError::InvalidResponse(format!("GET {url}: not JSON: {e}")))?;
    Ok(page
        .get("values")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default())
}
/// Sends `body` as JSON with `method` to `url`, counted against the call's budget.
pub(crate) fn send_json(method: &str, url: &str, body: &Value) -> Result<Response, ProviderError> {
    let req = Request {
        method: method.to_string(),
        url: url.to_string(),
        headers: vec![
            ("Accept".to_string(), "application/json".to_string()),
            ("Content-Type".to_string(), "application/json".to_string()),
        ],
        body: Some(body.to_string().into_bytes()),
    };
    let resp = http::send(&req).map_err(|e| match crate::transport_error(url, e) {
        ProviderError::Http(m) => ProviderError::Http(m.replacen("GET", method, 1)),
        other => other,
    })?;
    crate::budget::record(resp.body.len());
    Ok(resp)
}

/// The first entry of a DC error body (`{"errors": [{...}]}`).
fn first_error(body: &[u8]) -> Option<Value> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("errors")?.as_array()?.first().cloned()
}

/// The `exceptionName` of a DC error body ("" when none).
fn exception(body: &[u8]) -> String {
    first_error(body)
        .and_then(|e| {
            e.get("exceptionName")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .unwrap_or_default()
}

/// The messages of a DC error body, else an excerpt.
fn message(body: &[u8]) -> String {
    crate::server_messages(body).unwrap_or_else(|| crate::excerpt(body))
}

/// A refused write: 401/403 as `forbidden` (DC answers a missing permission with 401
/// and an `AuthorisationException`), anything else as `http`.
fn refusal(method: &str, url: &str, status: u16, body: &[u8]) -> ProviderError {
    let what = format!("{method} {url}: HTTP {status}: {}", message(body));
    match status {
        401 if !crate::is_authorisation_exception(body) => ProviderError::Unauthorized(what),
        401 | 403 => ProviderError::Forbidden(what),
        404 => ProviderError::NotFound(what),
        _ => ProviderError::Http(what),
    }
}
