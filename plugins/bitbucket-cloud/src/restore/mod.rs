//! Restoring into Bitbucket Cloud (world 0.4.0): finding and creating the
//! repository, the kinds that can be written back, and writing documents of a
//! snapshot (of this provider, or `repository`/`pullrequests` of Bitbucket Data
//! Center) into it through the REST API 2.0.
//!
//! Nothing is overwritten or deleted: an item that exists already is
//! `skipped` naming it, the issue import is refused into a tracker that has
//! issues. A 401, 403 or 429 fails the whole call (the kind); any other
//! refusal fails only its document, with the server's message. Secrets were
//! never backed up: a webhook that had one, and a secured variable, are left
//! for the user (`needs-user`), the variable not created with a made-up value.

mod issues;
mod pulls;
mod settings;

use serde_json::{json, Value};

use crate::reposafe::provider::http::{self, HttpError, Request, Response};
use crate::reposafe::provider::types::{
    Connection, NewRepository, ProviderError, Repository, RestoreContext, RestoreDocument,
    RestoreKind, RestoreOutcome, RestoredDocument,
};

/// The provider ids of snapshots this provider reads.
const CLOUD: &str = "bitbucket-cloud";
const DC: &str = "bitbucket-dc";

/// The kinds of a snapshot of `source_provider` that can be written back, in order.
pub fn kinds(source_provider: &str) -> Vec<RestoreKind> {
    let names: &[(&str, bool)] = match source_provider {
        CLOUD => &[
            ("repository", false),
            ("issues", true),
            ("pullrequests", false),
            ("branch-restrictions", false),
            ("branching-model", false),
            ("default-reviewers", false),
            ("deploy-keys", false),
            ("webhooks", false),
            ("pipeline-variables", false),
        ],
        DC => &[("repository", false), ("pullrequests", false)],
        _ => &[],
    };
    names
        .iter()
        .map(|(name, whole)| RestoreKind {
            name: (*name).to_string(),
            whole: *whole,
        })
        .collect()
}

/// `{api}/2.0/repositories/{workspace}/{slug}`.
fn repo_api(conn: &Connection, scope: &str, slug: &str) -> Result<String, ProviderError> {
    Ok(format!(
        "{}/2.0/repositories/{}/{}",
        crate::api_base(conn)?,
        crate::encode_path_segment(scope),
        crate::encode_path_segment(slug)
    ))
}

/// `GET /2.0/repositories/{workspace}/{slug}`; `None` on 404.
pub fn find(
    conn: &Connection,
    scope: &str,
    slug: &str,
) -> Result<Option<Repository>, ProviderError> {
    let url = repo_api(conn, scope, slug)?;
    let Some(value) = crate::documents::get_json(&url)? else {
        return Ok(None);
    };
    crate::api::repository(&value, 0, scope).map(Some)
}

/// The body of `POST /2.0/repositories/{workspace}/{slug}` for `new`.
pub fn new_repository_body(new: &NewRepository) -> Value {
    let original: Value = new
        .original
        .as_deref()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null);
    let mut body = json!({"scm": "git", "is_private": new.source.is_private});
    let text = |k: &str| original.get(k).and_then(Value::as_str).map(String::from);
    match new.source_provider.as_str() {
        CLOUD => {
            for key in ["description", "language", "fork_policy"] {
                if let Some(v) = text(key).filter(|v| !v.is_empty()) {
                    body[key] = json!(v);
                }
            }
            for key in ["is_private", "has_issues", "has_wiki"] {
                if let Some(b) = original.get(key).and_then(Value::as_bool) {
                    body[key] = json!(b);
                }
            }
            let same_workspace = new.scope == new.source.scope;
            let project = original.pointer("/project/key").and_then(Value::as_str);
            if let (true, Some(key)) = (same_workspace, project) {
                body["project"] = json!({"key": key});
            }
        }
        DC => {
            if let Some(public) = original.get("public").and_then(Value::as_bool) {
                body["is_private"] = json!(!public);
            }
            if let Some(d) = text("description").filter(|d| !d.is_empty()) {
                body["description"] = json!(d);
            }
            if original.get("forkable").and_then(Value::as_bool) == Some(false) {
                body["fork_policy"] = json!("no_forks");
            }
        }
        _ => {}
    }
    if body["is_private"] == json!(false) && body["fork_policy"] == json!("no_public_forks") {
        // Bitbucket refuses that policy for a public repository.
        body["fork_policy"] = json!("allow_forks");
    }
    if let Some(key) = &new.project {
        body["project"] = json!({"key": key});
    }
    body
}

/// Creates the repository: `conflict` when it exists.
pub fn create(conn: &Connection, new: &NewRepository) -> Result<Repository, ProviderError> {
    let url = repo_api(conn, &new.scope, &new.slug)?;
    let resp = send_json("POST", &url, &new_repository_body(new))?;
    let name = format!("{}/{}", new.scope, new.slug);
    match resp.status {
        200..=299 => {
            let value: Value = serde_json::from_slice(&resp.body).map_err(|e| {
                ProviderError::InvalidResponse(format!("POST {url}: not JSON: {e}"))
            })?;
            crate::api::repository(&value, 0, &new.scope)
        }
        409 => Err(ProviderError::Conflict(format!(
            "repository {name} exists already: {}",
            message(&resp.body)
        ))),
        400 if message(&resp.body).contains("already exists") => Err(ProviderError::Conflict(
            format!("repository {name} exists already: {}", message(&resp.body)),
        )),
        _ => Err(call_error("POST", &url, &resp)
            .unwrap_or_else(|| ProviderError::Http(refusal("POST", &url, &resp)))),
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
    if !kinds(&ctx.source_provider).iter().any(|k| k.name == kind) {
        return Err(ProviderError::InvalidSettings(format!(
            "Bitbucket Cloud cannot restore `{kind}` of a {} snapshot; it restores: {}",
            ctx.source_provider,
            kinds(&ctx.source_provider)
                .iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let root = repo_api(conn, &repo.scope, &repo.slug)?;
    match kind {
        "repository" => each(docs, |v| repository(&root, ctx, v)),
        "issues" => issues::restore(&root, ctx, docs),
        "pullrequests" => pulls::restore(&root, ctx, docs),
        _ => settings::restore(&root, kind, docs),
    }
}

/// The outcome of one document.
fn outcome(doc: &RestoreDocument, outcome: RestoreOutcome) -> RestoredDocument {
    RestoredDocument {
        id: doc.id.clone(),
        outcome,
    }
}

/// One outcome per document: `f` on each document's JSON (one that is not JSON fails alone).
fn each(
    docs: &[RestoreDocument],
    mut f: impl FnMut(&Value) -> Result<RestoreOutcome, ProviderError>,
) -> Result<Vec<RestoredDocument>, ProviderError> {
    docs.iter()
        .map(|d| match parse(d) {
            Ok(v) => Ok(outcome(d, f(&v)?)),
            Err(o) => Ok(o),
        })
        .collect()
}

/// A document's JSON, or its `failed` outcome.
fn parse(doc: &RestoreDocument) -> Result<Value, RestoredDocument> {
    serde_json::from_str(&doc.json).map_err(|e| {
        outcome(
            doc,
            RestoreOutcome::Failed(format!("document {} is not JSON: {e}", doc.id)),
        )
    })
}

/// The name a branch of the snapshot has in the repository now (the host may
/// have pushed it under another name).
fn branch_now(ctx: &RestoreContext, name: &str) -> String {
    let full = format!("refs/heads/{name}");
    ctx.renamed_refs
        .iter()
        .find(|(from, _)| *from == full)
        .map(|(_, to)| to.strip_prefix("refs/heads/").unwrap_or(to).to_string())
        .unwrap_or_else(|| name.to_string())
}

/// `repository`: `PUT` the description and main branch (when the snapshot's
/// main branch was pushed under its own name).
fn repository(
    root: &str,
    ctx: &RestoreContext,
    value: &Value,
) -> Result<RestoreOutcome, ProviderError> {
    let mut body = json!({});
    if let Some(d) = value.get("description").and_then(Value::as_str) {
        if !d.is_empty() {
            body["description"] = json!(d);
        }
    }
    let main = value
        .pointer("/mainbranch/name")
        .or_else(|| value.pointer("/defaultBranch/displayId"))
        .and_then(Value::as_str);
    if let Some(main) = main {
        if branch_now(ctx, main) == main {
            body["mainbranch"] = json!({"name": main});
        }
    }
    if body.as_object().is_some_and(|o| o.is_empty()) {
        return Ok(RestoreOutcome::Skipped(
            "nothing to set (no description or main branch)".into(),
        ));
    }
    let resp = send_json("PUT", root, &body)?;
    Ok(match checked("PUT", root, &resp)? {
        Ok(_) => RestoreOutcome::Restored("repository".into()),
        Err(why) => RestoreOutcome::Failed(why),
    })
}

/// Sends `method url` with a body of `content_type` (none for `None`).
fn send(method: &str, url: &str, body: Option<(&str, Vec<u8>)>) -> Result<Response, ProviderError> {
    let mut headers = vec![("Accept".to_string(), "application/json".to_string())];
    let body = body.map(|(content_type, bytes)| {
        headers.push(("Content-Type".to_string(), content_type.to_string()));
        bytes
    });
    let req = Request {
        method: method.to_string(),
        url: url.to_string(),
        headers,
        body,
    };
    let resp = http::send(&req).map_err(|e| {
        let detail = match e {
            HttpError::Denied(d) => format!("refused by the host: {d}"),
            HttpError::Timeout(d) => format!("timed out: {d}"),
            HttpError::Transport(d) => format!("failed: {d}"),
            HttpError::TooLarge(d) => format!("answer too large: {d}"),
        };
        ProviderError::Http(format!("{method} {url}: {detail}"))
    })?;
    crate::budget::record(resp.body.len());
    Ok(resp)
}

pub(crate) fn send_json(method: &str, url: &str, body: &Value) -> Result<Response, ProviderError> {
    send(
        method,
        url,
        Some(("application/json", body.to_string().into_bytes())),
    )
}

/// The error failing the whole call for an answer no document gets past
/// (401, 403, 429); `None` for other answers.
fn call_error(method: &str, url: &str, resp: &Response) -> Option<ProviderError> {
    match resp.status {
        401 => Some(ProviderError::Unauthorized(format!(
            "the credential was refused by Bitbucket (401) for {method} {url}"
        ))),
        403 => Some(ProviderError::Forbidden(crate::forbidden_reason(
            &resp.body, url,
        ))),
        429 => Some(ProviderError::RateLimited(format!(
            "Bitbucket kept answering 429 (rate limited) for {method} {url}"
        ))),
        _ => None,
    }
}

/// A 2xx answer's JSON (`null` when empty or not JSON) as `Ok(Ok)`, a refusal
/// of this document as `Ok(Err(message))`, a refusal of the call as `Err`.
fn checked(
    method: &str,
    url: &str,
    resp: &Response,
) -> Result<Result<Value, String>, ProviderError> {
    if (200..300).contains(&resp.status) {
        return Ok(Ok(serde_json::from_slice(&resp.body).unwrap_or(Value::Null)));
    }
    match call_error(method, url, resp) {
        Some(e) => Err(e),
        None => Ok(Err(refusal(method, url, resp))),
    }
}

/// `METHOD path: HTTP status: message` for a refused request.
fn refusal(method: &str, url: &str, resp: &Response) -> String {
    let path = url.split('?').next().unwrap_or(url);
    format!(
        "{method} {path}: HTTP {}: {}",
        resp.status,
        message(&resp.body)
    )
}

/// The server's message (`error.message`, with `error.fields` when given) or an excerpt.
pub(crate) fn message(body: &[u8]) -> String {
    let value: Value = serde_json::from_slice(body).unwrap_or_default();
    let Some(m) = value.pointer("/error/message").and_then(Value::as_str) else {
        return crate::excerpt(body);
    };
    match value.pointer("/error/fields") {
        Some(f) if f.as_object().is_some_and(|o| !o.is_empty()) => format!("{m} {f}"),
        _ => m.to_string(),
    }
}

/// A user's name as a snapshot shows it (Cloud `display_name`, DC `displayName`).
fn user_name(user: Option<&Value>) -> String {
    let Some(u) = user else {
        return "an unknown user".to_string();
    };
    [
        "/display_name",
        "/displayName",
        "/user/displayName",
        "/nickname",
        "/name",
    ]
    .iter()
    .find_map(|p| u.pointer(p).and_then(Value::as_str))
    .filter(|n| !n.is_empty())
    .unwrap_or("an unknown user")
    .to_string()
}

/// A time of a snapshot as text: RFC 3339 as is, DC epoch milliseconds converted.
fn time_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => n.as_i64().map(crate::time::from_epoch_millis),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
