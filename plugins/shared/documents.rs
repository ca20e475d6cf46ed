//! Building blocks of the metadata documents of world 0.3.0, shared by the
//! built-in providers (included with `#[path]` into each crate, so the types are
//! that crate's bindings): the GET they are read with, ids, empty pages,
//! secrets left out. The including crate has `get_meta` (its status rules) and
//! `transport_error`.

use serde_json::Value;

use crate::reposafe::provider::http::{self, Request, Response};
use crate::reposafe::provider::types::{Document, DocumentPage, FileRef, ProviderError};

/// What a webhook's secret is recorded as: the APIs never return it.
pub const SECRET_NOT_READABLE: &str = "not readable through the API";

/// `GET url` (JSON accepted), counted against the call's [`crate::budget`].
pub fn send_get(url: &str) -> Result<Response, ProviderError> {
    let req = Request {
        method: "GET".to_string(),
        url: url.to_string(),
        headers: vec![("Accept".to_string(), "application/json".to_string())],
        body: None,
    };
    let resp = http::send(&req).map_err(|e| crate::transport_error(url, e))?;
    crate::budget::record(resp.body.len());
    Ok(resp)
}

/// GETs a metadata URL as JSON; `None` when the kind does not exist there (404).
pub fn get_json(url: &str) -> Result<Option<Value>, ProviderError> {
    let Some(body) = crate::get_meta(url)? else {
        return Ok(None);
    };
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| ProviderError::InvalidResponse(format!("GET {url}: not JSON: {e}")))
}

/// A page without documents: the last one.
pub fn empty() -> DocumentPage {
    DocumentPage {
        documents: Vec::new(),
        next: None,
    }
}

/// A document of `kind` holding `json` as text.
pub fn document(
    kind: &str,
    id: String,
    updated_on: Option<String>,
    json: &Value,
    files: Vec<FileRef>,
) -> Document {
    Document {
        kind: kind.to_string(),
        id,
        updated_on,
        json: json.to_string(),
        files,
    }
}

/// The error for a kind the provider does not have, naming those it has.
pub fn unknown_kind<'a>(
    provider: &str,
    kind: &str,
    known: impl Iterator<Item = &'a str>,
) -> ProviderError {
    ProviderError::InvalidSettings(format!(
        "{provider} has no metadata kind `{kind}`; its kinds are: {}",
        known.collect::<Vec<_>>().join(", ")
    ))
}

/// An item's stable id: the first of `fields` it has (text or number), as text.
pub fn text_id(v: &Value, fields: &[&str]) -> Result<String, ProviderError> {
    for field in fields {
        match v.pointer(field) {
            Some(Value::String(s)) if !s.is_empty() => return Ok(s.clone()),
            Some(Value::Number(n)) => return Ok(n.to_string()),
            _ => {}
        }
    }
    let mut shown: String = v.to_string().chars().take(200).collect();
    if shown.len() >= 200 {
        shown.push('…');
    }
    Err(ProviderError::InvalidResponse(format!(
        "an item has none of {}: {shown}",
        fields.join(", ")
    )))
}

/// Leaves out what must never be stored: a secured variable's value (`secured:
/// true`), and for a webhook (`webhook`) any `secret`, recorded as not readable.
pub fn without_secrets(value: &mut Value, webhook: bool) {
    let Some(obj) = value.as_object_mut() else {
        return;
    };
    if webhook {
        if let Some(Value::Object(config)) = obj.get_mut("configuration") {
            config.remove("secret");
        }
        obj.insert("secret".to_string(), Value::from(SECRET_NOT_READABLE));
    }
    if obj.get("secured").and_then(Value::as_bool) == Some(true) {
        obj.remove("value");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_never_kept() {
        let mut hook = json!({"uuid": "{h}", "secret": "s3cr3t", "configuration": {"secret": "x"}});
        without_secrets(&mut hook, true);
        assert_eq!(hook["secret"], SECRET_NOT_READABLE);
        assert!(hook["configuration"].get("secret").is_none());
        let mut var = json!({"uuid": "{v}", "key": "TOKEN", "secured": true, "value": "x"});
        without_secrets(&mut var, false);
        assert!(var.get("value").is_none());
        let mut plain = json!({"key": "MODE", "secured": false, "value": "fast"});
        without_secrets(&mut plain, false);
        assert_eq!(plain["value"], "fast");
    }

    #[test]
    fn ids() {
        assert_eq!(
            text_id(&json!({"id": 7}), &["/uuid", "/id"])
                .ok()
                .as_deref(),
            Some("7")
        );
        assert_eq!(
            text_id(&json!({"uuid": "{u}", "id": 7}), &["/uuid", "/id"])
                .ok()
                .as_deref(),
            Some("{u}")
        );
        assert_eq!(
            text_id(&json!({"key": {"id": 3}}), &["/key/id"])
                .ok()
                .as_deref(),
            Some("3")
        );
        assert!(text_id(&json!({"x": 1}), &["/id"]).is_err());
    }
}
