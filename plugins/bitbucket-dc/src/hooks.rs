//! Registering reposafe's push webhook on a project (world 0.5.0).
//!
//! `GET /rest/api/latest/projects/{projectKey}/webhooks` (paged with
//! `start`/`nextPageStart`) finds a webhook with the same `url`; it is updated
//! with `PUT …/webhooks/{webhookId}`, else one is created with `POST …/webhooks`.
//! The body is `{"name", "url", "active": true, "events": ["repo:refs_changed"],
//! "configuration": {"secret"}}` where the secret is the host's placeholder: the
//! host puts the real secret in its place on the way out, so it never reaches
//! this code. The server answers the webhook (`id` a number, `configuration`
//! without the secret). Managing a project's webhooks needs PROJECT_ADMIN;
//! Data Center answers a missing permission with 401 or 403 and an
//! `AuthorisationException`, both `forbidden` here. A personal project
//! (`~user`) has no project settings, so no project webhooks: it is refused
//! before any request, naming the per-repository alternative.

use serde_json::{json, Value};

use crate::reposafe::provider::http::Response;
use crate::reposafe::provider::types::{
    Connection, ProviderError, WebhookRegistered, WebhookRequest,
};
use crate::{base_url, each_page, encode_path_segment, Purpose, PAGE_LIMIT};

/// The push event of Bitbucket Data Center.
const PUSH_EVENT: &str = "repo:refs_changed";

/// Registers (or updates) the push webhook of project `scope`.
pub fn register(
    conn: &Connection,
    scope: &str,
    hook: &WebhookRequest,
) -> Result<WebhookRegistered, ProviderError> {
    let key = scope.trim();
    if key.is_empty() {
        return Err(ProviderError::InvalidSettings(
            "the project (scope) to register the webhook on is empty".to_string(),
        ));
    }
    if key.starts_with('~') {
        return Err(ProviderError::InvalidSettings(format!(
            "`{key}` is a personal project: Bitbucket Data Center has webhooks for projects and \
             repositories but none for a personal project; add the webhook to each of its \
             repositories (Repository settings → Webhooks, event \"Push\")"
        )));
    }
    let hooks = format!(
        "{}/rest/api/latest/projects/{}/webhooks",
        base_url(conn)?,
        encode_path_segment(key)
    );
    let existing = find_by_url(&hooks, key, &hook.url)?;
    let (method, url) = match &existing {
        Some(id) => ("PUT", format!("{hooks}/{}", encode_path_segment(id))),
        None => ("POST", hooks.clone()),
    };
    let resp = crate::restore::send_json(method, &url, &hook_body(hook))?;
    let answer = checked(method, &url, key, &resp)?;
    let id = id_of(&answer).or(existing.clone()).ok_or_else(|| {
        ProviderError::InvalidResponse(format!("{method} {url}: the answer has no `id`"))
    })?;
    Ok(WebhookRegistered {
        target: format!("project {key}"),
        id,
        updated: existing.is_some(),
    })
}

/// The JSON body of the create or update request.
pub fn hook_body(hook: &WebhookRequest) -> Value {
    json!({
        "name": hook.description,
        "url": hook.url,
        "active": true,
        "events": [PUSH_EVENT],
        "configuration": {"secret": hook.secret_placeholder},
    })
}

/// A webhook's `id` (a number in the API) as text.
fn id_of(hook: &Value) -> Option<String> {
    match hook.get("id")? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// The `id` of the project's webhook posting to `target`, if any.
fn find_by_url(hooks: &str, key: &str, target: &str) -> Result<Option<String>, ProviderError> {
    let mut found = None;
    each_page(hooks, PAGE_LIMIT, &Purpose::Webhooks(key), |values, _| {
        if found.is_none() {
            found = matching_id(values, target);
        }
        Ok(())
    })?;
    Ok(found)
}

/// The `id` of the first webhook in `values` whose `url` is `target`.
pub fn matching_id(values: &[Value], target: &str) -> Option<String> {
    values
        .iter()
        .find(|h| h.get("url").and_then(Value::as_str) == Some(target))
        .and_then(id_of)
}

/// A 2xx answer's JSON (`null` when empty), else the error for it.
fn checked(method: &str, url: &str, key: &str, resp: &Response) -> Result<Value, ProviderError> {
    if (200..300).contains(&resp.status) {
        return Ok(serde_json::from_slice(&resp.body).unwrap_or(Value::Null));
    }
    Err(
        crate::status_error(resp.status, &resp.body, url, &Purpose::Webhooks(key))
            .map(|e| match e {
                ProviderError::Http(m) => ProviderError::Http(m.replacen("GET", method, 1)),
                other => other,
            })
            .unwrap_or_else(|| {
                ProviderError::Http(format!("{method} {url}: HTTP {}", resp.status))
            }),
    )
}

/// Why the credential may not manage the webhooks of project `key`.
pub fn forbidden(key: &str, body: &[u8]) -> String {
    let server = crate::server_messages(body)
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    format!(
        "the credential may not manage the webhooks of project `{key}`{server}; it needs \
         PROJECT_ADMIN permission on the project (a project or user HTTP access token with \
         Project admin)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> WebhookRequest {
        WebhookRequest {
            url: "https://backup.example/hooks/dc".into(),
            secret_placeholder: "@@SECRET@@".into(),
            description: "reposafe".into(),
        }
    }

    #[test]
    fn body_carries_the_placeholder_and_push_event() {
        assert_eq!(
            hook_body(&request()),
            json!({"name": "reposafe", "url": "https://backup.example/hooks/dc", "active": true,
                "events": ["repo:refs_changed"], "configuration": {"secret": "@@SECRET@@"}})
        );
    }

    #[test]
    fn finds_the_hook_by_url() {
        let values = vec![
            json!({"id": 3, "url": "https://ci.example/"}),
            json!({"id": 7, "url": "https://backup.example/hooks/dc"}),
        ];
        assert_eq!(
            matching_id(&values, "https://backup.example/hooks/dc").as_deref(),
            Some("7")
        );
        assert_eq!(matching_id(&values, "https://x.example/"), None);
    }

    #[test]
    fn permission_errors_name_project_admin() {
        let body = br#"{"errors": [{"context": null, "message": "You are not permitted to access this resource", "exceptionName": "com.atlassian.bitbucket.AuthorisationException"}]}"#;
        for status in [401, 403] {
            let e = crate::status_error(status, body, "u", &Purpose::Webhooks("PRJ"));
            assert!(
                matches!(&e, Some(ProviderError::Forbidden(m)) if m.contains("PROJECT_ADMIN") && m.contains("`PRJ`") && m.contains("not permitted")),
                "{e:?}"
            );
        }
        assert!(matches!(
            crate::status_error(401, b"{}", "u", &Purpose::Webhooks("PRJ")),
            Some(ProviderError::Unauthorized(_))
        ));
        assert!(matches!(
            crate::status_error(404, b"{}", "u", &Purpose::Webhooks("PRJ")),
            Some(ProviderError::NotFound(m)) if m.contains("`PRJ`")
        ));
    }

    #[test]
    fn personal_projects_are_refused_without_a_request() {
        let conn = Connection {
            settings: vec![("base-url".into(), "https://bb.example".into())],
            credential_kind: crate::CredentialKind::HttpAccessToken,
        };
        assert!(matches!(
            register(&conn, "~jdoe", &request()),
            Err(ProviderError::InvalidSettings(m)) if m.contains("personal project")
        ));
    }
}
