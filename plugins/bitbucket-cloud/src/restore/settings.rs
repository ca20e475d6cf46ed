//! The settings kinds: branch restrictions (`POST branch-restrictions`), the
//! branching model (`PUT branching-model/settings`), default reviewers (`PUT
//! default-reviewers/{uuid}`), deploy keys (`POST deploy-keys`), webhooks
//! (`POST hooks`; one that had a secret needs the user to re-enter it) and
//! pipeline variables (`POST pipelines_config/variables/`; a secured one is not
//! created: its value was never readable, so the user creates it). What the
//! repository has already (the same restriction, reviewer, key, webhook URL and
//! events, variable name) is skipped, naming it.

use serde_json::{json, Value};

use super::{checked, each, send_json};
use crate::reposafe::provider::types::{
    NeedsUser, ProviderError, RestoreDocument, RestoreOutcome, RestoredDocument,
};

/// Every value of a list the repository has now (following `next`); empty on 404.
pub fn existing(url: &str) -> Result<Vec<Value>, ProviderError> {
    crate::meta::sub_list(url)
}

/// Writes the documents of a settings kind.
pub fn restore(
    root: &str,
    kind: &str,
    docs: &[RestoreDocument],
) -> Result<Vec<RestoredDocument>, ProviderError> {
    let list_path = match kind {
        "branch-restrictions" => "/branch-restrictions",
        "default-reviewers" => "/default-reviewers",
        "deploy-keys" => "/deploy-keys",
        "webhooks" => "/hooks",
        "pipeline-variables" => "/pipelines_config/variables",
        "branching-model" => "",
        other => {
            return Err(ProviderError::InvalidSettings(format!(
                "Bitbucket Cloud has no restorable kind `{other}`"
            )))
        }
    };
    let mut have = if list_path.is_empty() {
        Vec::new()
    } else {
        existing(&format!("{root}{list_path}?pagelen=100"))?
    };
    each(docs, |value| match kind {
        "branch-restrictions" => branch_restriction(root, value, &mut have),
        "default-reviewers" => default_reviewer(root, value, &mut have),
        "deploy-keys" => deploy_key(root, value, &mut have),
        "webhooks" => webhook(root, value, &mut have),
        "pipeline-variables" => variable(root, value, &mut have),
        _ => branching_model(root, value),
    })
}

/// POSTs (or PUTs) `body`; the new item's id (`id_field`) as `restored`, or the refusal.
fn create(
    method: &str,
    url: &str,
    body: &Value,
    id_field: &str,
    have: &mut Vec<Value>,
) -> Result<Result<String, String>, ProviderError> {
    let resp = send_json(method, url, body)?;
    Ok(checked(method, url, &resp)?.map(|v| {
        let id = match v.get(id_field) {
            Some(Value::String(s)) => s.clone(),
            Some(other) if !other.is_null() => other.to_string(),
            _ => String::new(),
        };
        have.push(if v.is_null() { body.clone() } else { v });
        id
    }))
}

fn restored(r: Result<String, String>) -> RestoreOutcome {
    match r {
        Ok(id) => RestoreOutcome::Restored(id),
        Err(why) => RestoreOutcome::Failed(why),
    }
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn branch_restriction(
    root: &str,
    v: &Value,
    have: &mut Vec<Value>,
) -> Result<RestoreOutcome, ProviderError> {
    let (kind, pattern) = (text(v, "/kind"), text(v, "/pattern"));
    let branch_type = text(v, "/branch_type");
    let same = |h: &&Value| {
        text(h, "/kind") == kind
            && text(h, "/pattern") == pattern
            && text(h, "/branch_type") == branch_type
    };
    if let Some(h) = have.iter().find(same) {
        return Ok(RestoreOutcome::Skipped(format!(
            "already exists: {kind} on {} (#{})",
            if pattern.is_empty() {
                branch_type
            } else {
                pattern
            },
            h.get("id").map(Value::to_string).unwrap_or_default()
        )));
    }
    let mut body = json!({
        "kind": kind,
        "branch_match_kind": v.get("branch_match_kind").cloned().unwrap_or(json!("glob")),
        "users": v.get("users").and_then(Value::as_array).map(|us| us.iter()
            .filter_map(|u| u.get("uuid").cloned()).map(|id| json!({"uuid": id})).collect::<Vec<_>>())
            .unwrap_or_default(),
        "groups": v.get("groups").and_then(Value::as_array).map(|gs| gs.iter()
            .filter_map(|g| g.get("slug").or(Some(g)).cloned()).map(|s| json!({"slug": s})).collect::<Vec<_>>())
            .unwrap_or_default(),
    });
    for key in ["pattern", "branch_type", "value"] {
        if let Some(x) = v.get(key).filter(|x| !x.is_null()) {
            body[key] = x.clone();
        }
    }
    let url = format!("{root}/branch-restrictions");
    Ok(restored(create("POST", &url, &body, "id", have)?))
}

fn default_reviewer(
    root: &str,
    v: &Value,
    have: &mut Vec<Value>,
) -> Result<RestoreOutcome, ProviderError> {
    let uuid = text(v, "/uuid");
    let name = super::user_name(Some(v));
    if uuid.is_empty() {
        return Ok(RestoreOutcome::Failed(format!(
            "default reviewer {name} has no uuid in the snapshot"
        )));
    }
    if have.iter().any(|h| text(h, "/uuid") == uuid) {
        return Ok(RestoreOutcome::Skipped(format!(
            "{name} is a default reviewer already"
        )));
    }
    let url = format!(
        "{root}/default-reviewers/{}",
        crate::encode_path_segment(uuid)
    );
    Ok(restored(create("PUT", &url, &json!({}), "uuid", have)?))
}

fn deploy_key(
    root: &str,
    v: &Value,
    have: &mut Vec<Value>,
) -> Result<RestoreOutcome, ProviderError> {
    let key = text(v, "/key");
    if let Some(h) = have.iter().find(|h| text(h, "/key") == key) {
        return Ok(RestoreOutcome::Skipped(format!(
            "already exists: deploy key \"{}\" (#{})",
            text(h, "/label"),
            h.get("id").map(Value::to_string).unwrap_or_default()
        )));
    }
    let body = json!({"key": key, "label": text(v, "/label")});
    let url = format!("{root}/deploy-keys");
    Ok(restored(create("POST", &url, &body, "id", have)?))
}

fn webhook(root: &str, v: &Value, have: &mut Vec<Value>) -> Result<RestoreOutcome, ProviderError> {
    let (url, events) = (
        text(v, "/url"),
        v.get("events").cloned().unwrap_or(json!([])),
    );
    let name = match text(v, "/description") {
        "" => url.to_string(),
        d => d.to_string(),
    };
    if let Some(h) = have
        .iter()
        .find(|h| text(h, "/url") == url && h.get("events") == Some(&events))
    {
        return Ok(RestoreOutcome::Skipped(format!(
            "already exists: webhook \"{name}\" ({})",
            text(h, "/uuid")
        )));
    }
    let body = json!({
        "description": text(v, "/description"), "url": url,
        "active": v.get("active").and_then(Value::as_bool).unwrap_or(true), "events": events,
    });
    let created = create("POST", &format!("{root}/hooks"), &body, "uuid", have)?;
    let had_secret = v.get("secret_set").and_then(Value::as_bool) == Some(true);
    Ok(match created {
        Ok(id) if had_secret => RestoreOutcome::NeedsUser(NeedsUser {
            id: Some(id),
            what: format!(
                "re-enter the secret of webhook \"{name}\" (Repository settings → Webhooks): \
                 secrets are never readable through the API, so none was restored"
            ),
        }),
        other => restored(other),
    })
}

fn variable(root: &str, v: &Value, have: &mut Vec<Value>) -> Result<RestoreOutcome, ProviderError> {
    let key = text(v, "/key");
    if have.iter().any(|h| text(h, "/key") == key) {
        return Ok(RestoreOutcome::Skipped(format!(
            "already exists: variable {key}"
        )));
    }
    if v.get("secured").and_then(Value::as_bool) == Some(true) {
        return Ok(RestoreOutcome::NeedsUser(NeedsUser {
            id: None,
            what: format!(
                "create the secured variable {key} with its value (Repository settings → \
                 Repository variables): its value was never readable through the API, so it \
                 was not created"
            ),
        }));
    }
    let body = json!({"key": key, "value": text(v, "/value"), "secured": false});
    let url = format!("{root}/pipelines_config/variables/");
    Ok(restored(create("POST", &url, &body, "uuid", have)?))
}

/// `PUT branching-model/settings` with the snapshot's branches and types,
/// unless the repository's model was changed from Bitbucket's default already.
fn branching_model(root: &str, v: &Value) -> Result<RestoreOutcome, ProviderError> {
    let url = format!("{root}/branching-model/settings");
    if let Some(now) = crate::documents::get_json(&url)? {
        let custom_dev = now
            .pointer("/development/use_mainbranch")
            .and_then(Value::as_bool)
            == Some(false);
        let production = now.pointer("/production/enabled").and_then(Value::as_bool) == Some(true);
        if custom_dev || production {
            return Ok(RestoreOutcome::Skipped(
                "the repository's branching model was changed already".into(),
            ));
        }
    }
    let mut body = json!({});
    for key in ["development", "production"] {
        if let Some(b) = v.get(key).and_then(Value::as_object) {
            let mut b = b.clone();
            b.remove("is_valid");
            body[key] = Value::Object(b);
        }
    }
    if let Some(types) = v.get("branch_types") {
        body["branch_types"] = types.clone();
    }
    let resp = send_json("PUT", &url, &body)?;
    Ok(match checked("PUT", &url, &resp)? {
        Ok(_) => RestoreOutcome::Restored("branching-model".into()),
        Err(why) => RestoreOutcome::Failed(why),
    })
}
