//! Project webhooks of the Data Center double, as Bitbucket Data Center answers them
//! under `/rest/api/1.0` (and its alias `/rest/api/latest`):
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET projects/{key}/webhooks` | paged (`start`, `limit`, `nextPageStart`); each webhook without its secret |
//! | `POST projects/{key}/webhooks` (`name`, `url`, `events`, `active`, `configuration.secret`) | 201 the webhook; 400 without `name` or `url`, or with an unknown event |
//! | `GET/PUT/DELETE projects/{key}/webhooks/{id}` | 200 the webhook / 200 the updated one / 204; 404 for an unknown id |
//!
//! Managing them needs PROJECT_ADMIN ([`DcServer::grant_admin`]); without it, 401
//! with an `AuthorisationException`, as DC answers. [`DcServer::deliver_refs_changed`]
//! posts a signed `repo:refs_changed` to the active hooks of a repository's project,
//! as Data Center does after a push.

use hyper::{HeaderMap, Method, Response, StatusCode};
use serde_json::{json, Value};

use super::{api_out, identify, is_admin, page, parse_auth, DcServer, Outcome, Shared};
use crate::hookpost;
use crate::httputil::Body;

const AUTHORISATION: &str = "com.atlassian.bitbucket.AuthorisationException";

/// The events the double accepts (a subset of Data Center's).
const KNOWN_EVENTS: &[&str] = &[
    "repo:refs_changed",
    "repo:modified",
    "repo:forked",
    "pr:opened",
    "pr:merged",
    "pr:declined",
];

/// A project webhook.
#[derive(Debug, Clone)]
pub(super) struct ProjectHook {
    id: u64,
    name: String,
    url: String,
    events: Vec<String>,
    active: bool,
    secret: Option<String>,
}

/// Whether `path` (after `/rest/`) is a project webhook path: its project key and
/// the segments after `webhooks`.
pub(super) fn matches(path: &[String]) -> Option<(&str, &[String])> {
    match path {
        [api, version, projects, key, hooks, rest @ ..]
            if api == "api"
                && (version == "1.0" || version == "latest")
                && projects == "projects"
                && hooks == "webhooks" =>
        {
            Some((key.as_str(), rest))
        }
        _ => None,
    }
}

fn error(status: StatusCode, message: &str, exception: Option<&str>) -> Response<Body> {
    super::json_response(
        status,
        &json!({"errors": [{"context": null, "message": message, "exceptionName": exception}]}),
    )
}

/// A request to `projects/{key}/webhooks[/{id}]` (`rest` after `webhooks`).
pub(super) fn handle(
    shared: &Shared,
    (method, headers): (&Method, &HeaderMap),
    (key, rest): (&str, &[String]),
    params: &[(String, String)],
    body: &[u8],
) -> Outcome {
    let mut st = shared.lock();
    let Some(caller) = identify(&st, &parse_auth(headers)) else {
        return api_out(super::unauthorized(), None);
    };
    let principal = Some(caller.principal.clone());
    let key = key.to_ascii_uppercase();
    if !st.projects.contains_key(&key) {
        let msg = format!("Project {key} does not exist.");
        return api_out(super::errors(StatusCode::NOT_FOUND, &msg), principal);
    }
    if !super::can_see(&st, &caller, &key) || !is_admin(&st, &caller, &key) {
        let msg = format!("You are not permitted to administer project {key}");
        return api_out(
            error(StatusCode::UNAUTHORIZED, &msg, Some(AUTHORISATION)),
            principal,
        );
    }
    let cap = st.page_cap;
    st.next_id += 1;
    let fresh_id = st.next_id;
    let Some(project) = st.projects.get_mut(&key) else {
        return api_out(super::errors(StatusCode::NOT_FOUND, "gone"), principal);
    };
    let hooks = &mut project.hooks;
    let resp = match (method, rest) {
        (&Method::GET, []) => {
            let items = hooks.iter().map(hook_json).collect();
            match page(params, cap, items, false) {
                Ok(v) => super::json_response(StatusCode::OK, &v),
                Err(msg) => super::errors(StatusCode::BAD_REQUEST, msg),
            }
        }
        (&Method::POST, []) => {
            let mut hook = ProjectHook {
                id: fresh_id,
                name: String::new(),
                url: String::new(),
                events: Vec::new(),
                active: true,
                secret: None,
            };
            match apply(&mut hook, body, true) {
                Ok(()) => {
                    hooks.push(hook.clone());
                    super::json_response(StatusCode::CREATED, &hook_json(&hook))
                }
                Err(msg) => super::errors(StatusCode::BAD_REQUEST, msg),
            }
        }
        (_, [id]) => {
            let Some(i) = hooks.iter().position(|h| h.id.to_string() == *id) else {
                let msg = format!("No webhook with id {id} exists in project {key}.");
                return api_out(super::errors(StatusCode::NOT_FOUND, &msg), principal);
            };
            one(hooks, i, method, body)
        }
        _ => super::errors(
            StatusCode::METHOD_NOT_ALLOWED,
            "This method is not supported here",
        ),
    };
    api_out(resp, principal)
}

/// `GET/PUT/DELETE …/webhooks/{id}` of the hook at `i`.
fn one(hooks: &mut Vec<ProjectHook>, i: usize, method: &Method, body: &[u8]) -> Response<Body> {
    match *method {
        Method::GET => super::json_response(StatusCode::OK, &hook_json(&hooks[i])),
        Method::DELETE => {
            hooks.remove(i);
            let mut r = Response::new(crate::httputil::full(""));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        Method::PUT => {
            let mut hook = hooks[i].clone();
            match apply(&mut hook, body, false) {
                Ok(()) => {
                    hooks[i] = hook.clone();
                    super::json_response(StatusCode::OK, &hook_json(&hook))
                }
                Err(msg) => super::errors(StatusCode::BAD_REQUEST, msg),
            }
        }
        _ => super::errors(
            StatusCode::METHOD_NOT_ALLOWED,
            "This method is not supported here",
        ),
    }
}

/// Applies a create (`name`, `url` and `events` required) or update body.
/// `Err` holds the message of the 400 answer.
fn apply(hook: &mut ProjectHook, body: &[u8], create: bool) -> Result<(), &'static str> {
    let bad = |msg: &'static str| msg;
    let v: Value = serde_json::from_slice(body).map_err(|_| bad("The request body is not JSON"))?;
    match v.get("name").and_then(Value::as_str) {
        Some(n) if !n.trim().is_empty() => hook.name = n.to_string(),
        None if !create => {}
        _ => return Err(bad("A webhook name is required.")),
    }
    match v.get("url").and_then(Value::as_str) {
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => hook.url = u.into(),
        None if !create => {}
        _ => return Err(bad("A valid webhook URL is required.")),
    }
    match v.get("events").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => {
            let Some(events) = hookpost::known_events(list, KNOWN_EVENTS) else {
                return Err(bad("The webhook contains an unknown event."));
            };
            hook.events = events;
        }
        None if !create => {}
        _ => return Err(bad("A webhook needs at least one event.")),
    }
    if let Some(a) = v.get("active").and_then(Value::as_bool) {
        hook.active = a;
    }
    if let Some(s) = v.pointer("/configuration/secret").and_then(Value::as_str) {
        hook.secret = Some(s.to_string()).filter(|s| !s.is_empty());
    }
    Ok(())
}

/// A webhook as Data Center answers it: `configuration` without the secret.
fn hook_json(h: &ProjectHook) -> Value {
    json!({
        "id": h.id,
        "name": h.name,
        "createdDate": 1_764_547_200_000u64,
        "updatedDate": 1_764_547_200_000u64,
        "events": h.events,
        "configuration": {},
        "url": h.url,
        "active": h.active,
        "scopeType": "project",
        "sslVerificationRequired": true,
    })
}

impl DcServer {
    /// The webhooks of project `key`: (id, url, events, whether a secret is set).
    pub fn project_hooks(&self, key: &str) -> Vec<(u64, String, Vec<String>, bool)> {
        let st = self.shared.lock();
        st.projects
            .get(&key.to_ascii_uppercase())
            .map(|p| {
                p.hooks
                    .iter()
                    .map(|h| (h.id, h.url.clone(), h.events.clone(), h.secret.is_some()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Delivers, as Data Center does after a push, a `repo:refs_changed` of
    /// `key/slug` to every active hook of the project subscribed to it, signed when
    /// the hook has a secret; the HTTP status of each delivery (0: no answer).
    pub fn deliver_refs_changed(&self, key: &str, slug: &str) -> Vec<u16> {
        let key = key.to_ascii_uppercase();
        let (targets, repo_id, project_id) = {
            let st = self.shared.lock();
            let Some(p) = st.projects.get(&key) else {
                return Vec::new();
            };
            let hooks: Vec<ProjectHook> = p
                .hooks
                .iter()
                .filter(|h| h.active && h.events.iter().any(|e| e == "repo:refs_changed"))
                .cloned()
                .collect();
            (hooks, p.repos.get(slug).map_or(0, |r| r.id), p.id)
        };
        let body = json!({
            "eventKey": "repo:refs_changed",
            "date": "2026-12-01T04:00:00+0000",
            "actor": {"name": "jdoe", "emailAddress": "jo@example.com", "id": 1,
                      "displayName": "Jo Doe", "active": true, "slug": "jdoe", "type": "NORMAL"},
            "repository": {"slug": slug, "id": repo_id, "name": slug, "scmId": "git",
                           "state": "AVAILABLE", "statusMessage": "Available", "forkable": true,
                           "public": false,
                           "project": {"key": key, "id": project_id, "name": key,
                                       "public": false, "type": "NORMAL"}},
            "changes": [{"ref": {"id": "refs/heads/main", "displayId": "main", "type": "BRANCH"},
                         "refId": "refs/heads/main",
                         "fromHash": "1111111111111111111111111111111111111111",
                         "toHash": "2222222222222222222222222222222222222222",
                         "type": "UPDATE"}],
        })
        .to_string()
        .into_bytes();
        targets
            .iter()
            .map(|h| {
                let headers = vec![
                    (
                        "Content-Type",
                        "application/json; charset=utf-8".to_string(),
                    ),
                    ("X-Event-Key", "repo:refs_changed".to_string()),
                    (
                        "X-Request-Id",
                        format!("{:08x}-0000-4000-8000-{:012x}", h.id, repo_id),
                    ),
                ];
                hookpost::deliver(&h.url, headers, h.secret.as_deref(), &body)
            })
            .collect()
    }
}
