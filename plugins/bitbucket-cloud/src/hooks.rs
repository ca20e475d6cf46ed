//! Registering reposafe's push webhook on a workspace (world 0.5.0).
//!
//! `GET /2.0/workspaces/{workspace}/hooks` (paged, `next` followed) finds a
//! webhook with the same `url`; it is updated with
//! `PUT /2.0/workspaces/{workspace}/hooks/{uid}`, else one is created with
//! `POST /2.0/workspaces/{workspace}/hooks`. The body is
//! `{"description", "url", "active": true, "secret", "events": ["repo:push"]}`
//! where `secret` is the host's placeholder: the host puts the real secret in
//! its place on the way out, so it never reaches this code. Bitbucket answers a
//! `webhook_subscription` (`uuid`, `url`, `events`, `active`, `secret_set`, never
//! the secret). Installing a workspace webhook needs the `webhook` scope (API
//! tokens: `read:webhook:bitbucket` and `write:webhook:bitbucket`) and a
//! workspace owner (admin).

use serde_json::{json, Value};

use crate::reposafe::provider::http::Response;
use crate::reposafe::provider::types::{
    Connection, ProviderError, WebhookRegistered, WebhookRequest,
};
use crate::{api, api_base, encode_path_segment, forbidden_reason, Purpose};

/// The push event of Bitbucket Cloud.
const PUSH_EVENT: &str = "repo:push";

/// What a credential needs to manage a workspace's webhooks, for `forbidden`.
const NEEDED: &str = "it needs the `webhook` scope (OAuth consumer or access token; API token: \
                      `read:webhook:bitbucket` and `write:webhook:bitbucket`) and its account \
                      must be an owner (admin) of the workspace";

/// Registers (or updates) the push webhook of workspace `scope`.
pub fn register(
    conn: &Connection,
    scope: &str,
    hook: &WebhookRequest,
) -> Result<WebhookRegistered, ProviderError> {
    let ws = scope.trim();
    if ws.is_empty() {
        return Err(ProviderError::InvalidSettings(
            "the workspace (scope) to register the webhook on is empty".to_string(),
        ));
    }
    let hooks = format!(
        "{}/2.0/workspaces/{}/hooks",
        api_base(conn)?,
        encode_path_segment(ws)
    );
    let existing = find_by_url(&hooks, ws, &hook.url)?;
    let body = hook_body(hook);
    let (method, url) = match &existing {
        Some(uuid) => ("PUT", format!("{hooks}/{}", encode_path_segment(uuid))),
        None => ("POST", hooks.clone()),
    };
    let resp = crate::restore::send_json(method, &url, &body)?;
    let answer = checked(method, &url, ws, &resp)?;
    let id = answer
        .get("uuid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .map(String::from)
        .or(existing.clone())
        .ok_or_else(|| {
            ProviderError::InvalidResponse(format!("{method} {url}: the answer has no `uuid`"))
        })?;
    Ok(WebhookRegistered {
        target: format!("workspace {ws}"),
        id,
        updated: existing.is_some(),
    })
}

/// The JSON body of the create or update request.
pub fn hook_body(hook: &WebhookRequest) -> Value {
    json!({
        "description": hook.description,
        "url": hook.url,
        "active": true,
        "secret": hook.secret_placeholder,
        "events": [PUSH_EVENT],
    })
}

/// The `uuid` of the workspace's webhook posting to `target`, if any.
fn find_by_url(hooks: &str, ws: &str, target: &str) -> Result<Option<String>, ProviderError> {
    let mut url = format!("{hooks}?pagelen=100");
    let mut seen = Vec::new();
    for _ in 0..crate::MAX_SCOPE_PAGES {
        let resp = crate::documents::send_get(&url)?;
        checked("GET", &url, ws, &resp)?;
        let what = format!("the webhooks of workspace `{ws}`");
        let page = api::parse_page(&resp.body, &what)?;
        if let Some(uuid) = matching_uuid(page.values.as_deref().unwrap_or_default(), target) {
            return Ok(Some(uuid));
        }
        seen.push(url);
        match page.next.filter(|n| !n.is_empty()) {
            Some(next) if seen.contains(&next) => {
                return Err(ProviderError::InvalidResponse(format!(
                    "{what}: `next` points back to an earlier page ({next})"
                )))
            }
            Some(next) => url = next,
            None => return Ok(None),
        }
    }
    Err(ProviderError::InvalidResponse(format!(
        "the webhooks of workspace `{ws}`: more than {} pages",
        crate::MAX_SCOPE_PAGES
    )))
}

/// The `uuid` of the first webhook in `values` whose `url` is `target`.
pub fn matching_uuid(values: &[Value], target: &str) -> Option<String> {
    values
        .iter()
        .find(|h| h.get("url").and_then(Value::as_str) == Some(target))
        .and_then(|h| h.get("uuid").and_then(Value::as_str))
        .map(String::from)
}

/// A 2xx answer's JSON (`null` when empty), else the error for it.
fn checked(method: &str, url: &str, ws: &str, resp: &Response) -> Result<Value, ProviderError> {
    if (200..300).contains(&resp.status) {
        return Ok(serde_json::from_slice(&resp.body).unwrap_or(Value::Null));
    }
    Err(status_error(method, url, ws, resp.status, &resp.body))
}

/// The provider error of a refused webhook request.
pub fn status_error(method: &str, url: &str, ws: &str, status: u16, body: &[u8]) -> ProviderError {
    match status {
        401 | 403 | 404 | 410 | 429 => {
            crate::status_error(status, body, url, &Purpose::Webhooks(ws))
        }
        _ => None,
    }
    .unwrap_or_else(|| {
        ProviderError::Http(format!(
            "{method} {url}: HTTP {status}: {}",
            crate::restore::message(body)
        ))
    })
}

/// Why a 403 refused managing the webhooks of `ws`, naming what is needed.
pub fn forbidden(ws: &str, body: &[u8], url: &str) -> String {
    format!(
        "the credential may not manage the webhooks of workspace `{ws}` (403: {}); {NEEDED}",
        forbidden_reason(body, url)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> WebhookRequest {
        WebhookRequest {
            url: "https://backup.example/hooks/cloud".into(),
            secret_placeholder: "@@SECRET@@".into(),
            description: "reposafe".into(),
        }
    }

    #[test]
    fn body_carries_the_placeholder_and_push_event() {
        let body = hook_body(&request());
        assert_eq!(
            body,
            json!({"description": "reposafe", "url": "https://backup.example/hooks/cloud",
                "active": true, "secret": "@@SECRET@@", "events": ["repo:push"]})
        );
    }

    #[test]
    fn finds_the_hook_by_url() {
        let values = vec![
            json!({"uuid": "{a}", "url": "https://other.example/x", "secret_set": false}),
            json!({"uuid": "{b}", "url": "https://backup.example/hooks/cloud", "secret_set": true}),
        ];
        assert_eq!(
            matching_uuid(&values, "https://backup.example/hooks/cloud").as_deref(),
            Some("{b}")
        );
        assert_eq!(matching_uuid(&values, "https://nowhere.example/"), None);
    }

    #[test]
    fn forbidden_names_scope_and_admin() {
        let body = br#"{"type": "error", "error": {"message": "Your credentials lack one or more required privilege scopes.", "detail": {"granted": ["repository"], "required": ["webhook"]}}}"#;
        match status_error("GET", "u", "acme", 403, body) {
            ProviderError::Forbidden(m) => {
                assert!(m.contains("needs webhook"), "{m}");
                assert!(m.contains("write:webhook:bitbucket"), "{m}");
                assert!(m.contains("owner"), "{m}");
                assert!(m.contains("`acme`"), "{m}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            status_error("POST", "u", "acme", 401, b""),
            ProviderError::Unauthorized(_)
        ));
        assert!(
            matches!(status_error("GET", "u", "acme", 404, b""), ProviderError::NotFound(m) if m.contains("acme"))
        );
        let bad = br#"{"type": "error", "error": {"message": "Invalid URL"}}"#;
        assert!(
            matches!(status_error("POST", "u", "acme", 400, bad), ProviderError::Http(m) if m.contains("POST u: HTTP 400: Invalid URL"))
        );
    }
}
