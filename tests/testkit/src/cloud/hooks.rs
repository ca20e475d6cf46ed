//! Workspace webhooks of the Cloud double: `GET/POST /2.0/workspaces/{ws}/hooks`,
//! `GET/PUT/DELETE /2.0/workspaces/{ws}/hooks/{uid}`, answered as Bitbucket Cloud does
//! (`webhook_subscription` objects with `secret_set`, never the secret; `pagelen`
//! default 10, capped at 100; `POST` 201 with `Location`, `DELETE` 204). Managing
//! them needs the `webhook` scope (and `repository` for `repo:*` events) and a
//! workspace owner: every principal granted a workspace is one unless
//! [`CloudServer::set_workspace_member`] says otherwise; an access token is one of its
//! own workspace. [`CloudServer::deliver_push`] posts a signed `repo:push` to the
//! active hooks of a repository's workspace, as Bitbucket does after a push.

use hyper::header::{HeaderValue, LOCATION};
use hyper::{Method, Response, StatusCode};
use serde_json::{json, Value};

use super::{
    error, json_response, paginate, scope_denied, uuid_for, ApiCall, CloudServer, Cred, Identity,
    Kind, State,
};
use crate::hookpost;
use crate::httputil::{self, Body};

/// Cloud's answer to a workspace member (not an owner) managing workspace webhooks.
pub const NOT_OWNER_MESSAGE: &str =
    "You must be an admin of this workspace to manage its webhooks.";

/// The events the double accepts (a subset of Cloud's).
const KNOWN_EVENTS: &[&str] = &[
    "repo:push",
    "repo:fork",
    "repo:updated",
    "pullrequest:created",
    "pullrequest:updated",
    "pullrequest:fulfilled",
    "issue:created",
];

/// A stored workspace webhook.
#[derive(Debug, Clone)]
pub(super) struct Hook {
    ws: String,
    uuid: String,
    url: String,
    description: String,
    secret: Option<String>,
    events: Vec<String>,
    active: bool,
}

/// The webhooks of every workspace and the principals that are only members.
#[derive(Debug, Default)]
pub(super) struct Hooks {
    hooks: Vec<Hook>,
    /// (principal, workspace): may see the workspace but not manage its webhooks.
    members: Vec<(String, String)>,
    created: u64,
}

/// `/2.0/workspaces/{ws}/hooks[/{uid}]` (`rest` after `hooks`).
pub(super) fn api(
    base: &str,
    st: &mut State,
    (ident, cred): (&Identity, &Cred),
    call: &ApiCall,
    (ws, rest): (&str, &[&str]),
) -> Response<Body> {
    if !st.workspaces.contains_key(ws) {
        return error(
            StatusCode::NOT_FOUND,
            &format!("No workspace with identifier '{ws}'."),
        );
    }
    if !ident.can_see(st, ws) {
        return error(
            StatusCode::FORBIDDEN,
            "You do not have access to this workspace.",
        );
    }
    if let Some(denied) = scope_denied(st, ident, cred, "webhook") {
        return denied;
    }
    let owner = match &ident.kind {
        Kind::AccessToken(own) => own == ws,
        _ => !st
            .hooks
            .members
            .iter()
            .any(|(p, w)| *p == ident.principal && w == ws),
    };
    if !owner {
        return error(StatusCode::FORBIDDEN, NOT_OWNER_MESSAGE);
    }
    let method = call.method;
    match rest {
        [] if method == Method::GET => {
            let items = st
                .hooks
                .hooks
                .iter()
                .filter(|h| h.ws == ws)
                .map(|h| hook_json(base, h))
                .collect();
            let path = format!("/2.0/workspaces/{}/hooks", httputil::percent_encode(ws));
            paginate(items, base, &path, call.params)
        }
        [] if method == Method::POST => create(base, st, (ident, cred), ws, call.body),
        [uid] => one(base, st, (ident, cred), (ws, uid), call),
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
    }
}

/// `GET/PUT/DELETE …/hooks/{uid}`.
fn one(
    base: &str,
    st: &mut State,
    (ident, cred): (&Identity, &Cred),
    (ws, uid): (&str, &str),
    call: &ApiCall,
) -> Response<Body> {
    let Some(i) = st
        .hooks
        .hooks
        .iter()
        .position(|h| h.ws == ws && h.uuid == uid)
    else {
        return error(StatusCode::NOT_FOUND, &format!("Webhook {uid} not found"));
    };
    match *call.method {
        Method::GET => json_response(StatusCode::OK, &hook_json(base, &st.hooks.hooks[i])),
        Method::DELETE => {
            st.hooks.hooks.remove(i);
            let mut r = Response::new(httputil::full(""));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        Method::PUT => {
            let mut hook = st.hooks.hooks[i].clone();
            if let Err(bad) = apply(st, (ident, cred), &mut hook, call.body, false) {
                return *bad;
            }
            st.hooks.hooks[i] = hook.clone();
            json_response(StatusCode::OK, &hook_json(base, &hook))
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
    }
}

/// `POST …/hooks`: 201 with the subscription and its `Location`.
fn create(
    base: &str,
    st: &mut State,
    (ident, cred): (&Identity, &Cred),
    ws: &str,
    body: &[u8],
) -> Response<Body> {
    st.hooks.created += 1;
    let mut hook = Hook {
        ws: ws.to_string(),
        uuid: uuid_for("hook", &format!("{ws}\0{}", st.hooks.created)),
        url: String::new(),
        description: String::new(),
        secret: None,
        events: Vec::new(),
        active: true,
    };
    if let Err(bad) = apply(st, (ident, cred), &mut hook, body, true) {
        return *bad;
    }
    st.hooks.hooks.push(hook.clone());
    let v = hook_json(base, &hook);
    let mut r = json_response(StatusCode::CREATED, &v);
    if let Some(Ok(loc)) = v
        .pointer("/links/self/href")
        .and_then(Value::as_str)
        .map(HeaderValue::from_str)
    {
        r.headers_mut().insert(LOCATION, loc);
    }
    r
}

/// Applies a create (`url` and `events` required) or update body to `hook`.
/// `secret`: a string sets it (an empty one unsets it), `null` removes it, absent
/// keeps it.
fn apply(
    st: &State,
    (ident, cred): (&Identity, &Cred),
    hook: &mut Hook,
    body: &[u8],
    create: bool,
) -> Result<(), Box<Response<Body>>> {
    let bad = |field: &str, msg: &str| {
        Box::new(json_response(
            StatusCode::BAD_REQUEST,
            &json!({"type": "error", "error": {"message": format!("{field}: {msg}"), "fields": {field: [msg]}}}),
        ))
    };
    let v: Value = serde_json::from_slice(body).map_err(|_| bad("body", "Malformed JSON body"))?;
    match v.get("url") {
        Some(Value::String(u)) if u.starts_with("http://") || u.starts_with("https://") => {
            hook.url = u.clone()
        }
        None if !create => {}
        _ => return Err(bad("url", "Enter a valid URL.")),
    }
    match v.get("events").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => {
            let Some(events) = hookpost::known_events(list, KNOWN_EVENTS) else {
                return Err(bad("events", "Unknown event type."));
            };
            hook.events = events;
        }
        None if !create => {}
        _ => return Err(bad("events", "This field is required.")),
    }
    if hook.events.iter().any(|e| e.starts_with("repo:")) {
        if let Some(denied) = scope_denied(st, ident, cred, "repository") {
            return Err(Box::new(denied));
        }
    }
    if let Some(d) = v.get("description").and_then(Value::as_str) {
        hook.description = d.to_string();
    }
    if let Some(a) = v.get("active").and_then(Value::as_bool) {
        hook.active = a;
    }
    match v.get("secret") {
        Some(Value::String(s)) => hook.secret = Some(s.clone()).filter(|s| !s.is_empty()),
        Some(Value::Null) => hook.secret = None,
        _ => {}
    }
    Ok(())
}

/// A `webhook_subscription` as Cloud answers it: `secret_set`, never the secret.
fn hook_json(base: &str, h: &Hook) -> Value {
    let ws = httputil::percent_encode(&h.ws);
    json!({
        "type": "webhook_subscription",
        "uuid": h.uuid,
        "url": h.url,
        "description": h.description,
        "subject_type": "workspace",
        "subject": {"type": "workspace", "slug": h.ws},
        "active": h.active,
        "created_at": "2026-01-01T00:00:00.000000+00:00",
        "events": h.events,
        "secret_set": h.secret.is_some(),
        "skip_cert_verification": false,
        "links": {"self": {"href": format!("{base}/2.0/workspaces/{ws}/hooks/{}", httputil::percent_encode(&h.uuid))}},
    })
}

/// Cloud's `repo:push` body for `full_name` (`ws/slug`): one branch update of `main`.
fn push_payload(full_name: &str, repo_uuid: &str) -> Vec<u8> {
    let (ws, slug) = full_name.split_once('/').unwrap_or((full_name, ""));
    let actor = json!({"type": "user", "display_name": "Jo Doe", "nickname": "jdoe",
        "uuid": "{00000000-0000-4000-8000-000000000001}", "account_id": "557058:jdoe"});
    let target = |hash: &str| {
        json!({"type": "commit", "hash": hash, "message": "change\n",
        "date": "2026-01-01T00:00:00+00:00", "author": {"type": "author", "raw": "Jo Doe <jo@example.com>"}})
    };
    json!({
        "actor": actor,
        "repository": {"type": "repository", "full_name": full_name, "name": slug,
            "uuid": repo_uuid, "is_private": true, "scm": "git",
            "workspace": {"type": "workspace", "slug": ws},
            "links": {"html": {"href": format!("https://bitbucket.org/{full_name}")}}},
        "push": {"changes": [{
            "old": {"type": "branch", "name": "main", "target": target("1111111111111111111111111111111111111111")},
            "new": {"type": "branch", "name": "main", "target": target("2222222222222222222222222222222222222222")},
            "created": false, "forced": false, "closed": false, "truncated": false,
            "commits": [target("2222222222222222222222222222222222222222")],
        }]},
    })
    .to_string()
    .into_bytes()
}

impl CloudServer {
    /// Makes `principal` a member, not an owner, of workspace `ws`: its webhook requests
    /// there answer 403 ([`NOT_OWNER_MESSAGE`]). Principals are owners by default.
    pub fn set_workspace_member(&self, principal: &str, ws: &str) {
        self.shared
            .lock()
            .hooks
            .members
            .push((principal.to_string(), ws.to_string()));
    }

    /// The webhooks of workspace `ws`: (uuid, url, events, whether a secret is set).
    pub fn workspace_hooks(&self, ws: &str) -> Vec<(String, String, Vec<String>, bool)> {
        let st = self.shared.lock();
        st.hooks
            .hooks
            .iter()
            .filter(|h| h.ws == ws)
            .map(|h| {
                (
                    h.uuid.clone(),
                    h.url.clone(),
                    h.events.clone(),
                    h.secret.is_some(),
                )
            })
            .collect()
    }

    /// Delivers, as Bitbucket does after a push, a `repo:push` of `full_name`
    /// (`ws/slug`) to every active hook of its workspace subscribed to `repo:push`,
    /// signed when the hook has a secret; the HTTP status of each delivery, in the
    /// hooks' order (0: no answer).
    pub fn deliver_push(&self, full_name: &str) -> Vec<u16> {
        let ws = full_name
            .split_once('/')
            .map(|(w, _)| w)
            .unwrap_or(full_name);
        let targets: Vec<Hook> = {
            let st = self.shared.lock();
            st.hooks
                .hooks
                .iter()
                .filter(|h| h.ws == ws && h.active && h.events.iter().any(|e| e == "repo:push"))
                .cloned()
                .collect()
        };
        let body = push_payload(full_name, &uuid_for("repo", full_name));
        targets
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let headers = vec![
                    ("Content-Type", "application/json".to_string()),
                    ("User-Agent", "Bitbucket-Webhooks/2.0".to_string()),
                    ("X-Event-Key", "repo:push".to_string()),
                    (
                        "X-Request-UUID",
                        uuid_for("delivery", &format!("{}\0{i}", h.uuid))
                            .trim_matches(['{', '}'])
                            .to_string(),
                    ),
                    ("X-Hook-UUID", h.uuid.trim_matches(['{', '}']).to_string()),
                    ("X-Attempt-Number", "1".to_string()),
                ];
                hookpost::deliver(&h.url, headers, h.secret.as_deref(), &body)
            })
            .collect()
    }
}
