//! `pullrequests`: the open pull requests of a snapshot (Bitbucket Cloud's
//! `{"pullrequest", "comments", ...}` or Data Center's `{"pullrequest",
//! "activities"}`) re-created with `POST …/pullrequests`, their description
//! opening with a quote of the original author and dates, and every comment
//! posted as one quoted thread (`POST …/pullrequests/{id}/comments`). A pull
//! request that is not open, whose branches are not in the repository, or that
//! exists already (an open one with the same branches) is skipped, saying why.

use serde_json::{json, Value};

use super::{branch_now, checked, each, send_json, time_text, user_name};
use crate::reposafe::provider::types::{
    NeedsUser, ProviderError, RestoreContext, RestoreDocument, RestoreOutcome, RestoredDocument,
};

/// A pull request of a snapshot, whichever provider it came from.
#[derive(Debug, PartialEq)]
pub struct Pull {
    pub number: String,
    pub title: String,
    pub description: String,
    pub state: String,
    pub author: String,
    pub created: Option<String>,
    pub updated: Option<String>,
    pub source: Option<String>,
    pub destination: Option<String>,
    /// (author, date, text, where: `on path line N` for an inline comment).
    pub comments: Vec<(String, Option<String>, String, Option<String>)>,
}

/// Reads a snapshot's pull request document (Cloud or Data Center shape).
pub fn read(doc: &Value) -> Pull {
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
    let number = match pr.get("id") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    Pull {
        number,
        title: text("/title"),
        description: text("/description"),
        state: text("/state"),
        author: user_name(pr.get("author")),
        created: time_text(pr.get("created_on").or_else(|| pr.get("createdDate"))),
        updated: time_text(pr.get("updated_on").or_else(|| pr.get("updatedDate"))),
        source: branch("/source/branch/name", "/fromRef/displayId"),
        destination: branch("/destination/branch/name", "/toRef/displayId"),
        comments: comments(doc),
    }
}

/// The comments of a Cloud (`comments`) or DC (`activities` with `COMMENTED`)
/// document, oldest first, deleted ones left out.
fn comments(doc: &Value) -> Vec<(String, Option<String>, String, Option<String>)> {
    let mut out: Vec<(String, Option<String>, String, Option<String>)> = Vec::new();
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
        let at = c
            .pointer("/inline/path")
            .and_then(Value::as_str)
            .map(|path| {
                match c
                    .pointer("/inline/to")
                    .or_else(|| c.pointer("/inline/from"))
                    .and_then(Value::as_u64)
                {
                    Some(line) => format!("on {path} line {line}"),
                    None => format!("on {path}"),
                }
            });
        out.push((
            user_name(c.get("user")),
            time_text(c.get("created_on")),
            text.to_string(),
            at,
        ));
    }
    let activities = doc.get("activities").and_then(Value::as_array);
    for a in activities.into_iter().flatten() {
        if a.get("action").and_then(Value::as_str) != Some("COMMENTED") {
            continue;
        }
        let Some(c) = a.get("comment") else { continue };
        let text = c.get("text").and_then(Value::as_str).unwrap_or("");
        let at = a
            .pointer("/commentAnchor/path")
            .and_then(Value::as_str)
            .map(|p| format!("on {p}"));
        out.push((
            user_name(c.get("author")),
            time_text(c.get("createdDate")),
            text.to_string(),
            at,
        ));
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

/// `text` as a Markdown quote.
fn quoted(text: &str) -> String {
    text.lines()
        .map(|l| format!("> {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The new pull request's description: the quote of the original, then its text.
pub fn description(p: &Pull, ctx: &RestoreContext) -> String {
    let mut head = format!("> Originally opened by {}", p.author);
    if let Some(c) = &p.created {
        head.push_str(&format!(" on {c}"));
    }
    if let Some(u) = p
        .updated
        .as_ref()
        .filter(|u| Some(*u) != p.created.as_ref())
    {
        head.push_str(&format!(", last updated {u}"));
    }
    head.push_str(&format!(
        " (#{} in {}, restored from the snapshot of {})",
        p.number, ctx.source_full_name, ctx.snapshot_taken_at
    ));
    if p.description.is_empty() {
        head
    } else {
        format!("{head}\n\n{}", p.description)
    }
}

/// Every comment as one quoted thread; `None` when there are none.
pub fn thread(p: &Pull) -> Option<String> {
    if p.comments.is_empty() {
        return None;
    }
    let parts: Vec<String> = p
        .comments
        .iter()
        .map(|(who, when, text, at)| {
            let mut head = format!("> **{who}**");
            if let Some(w) = when {
                head.push_str(&format!(" on {w}"));
            }
            if let Some(a) = at {
                head.push_str(&format!(" ({a})"));
            }
            format!("{head}:\n>\n{}", quoted(text))
        })
        .collect();
    Some(format!(
        "Comments of the original pull request #{}:\n\n{}",
        p.number,
        parts.join("\n\n")
    ))
}

/// Re-creates the open pull requests of `docs`.
pub fn restore(
    root: &str,
    ctx: &RestoreContext,
    docs: &[RestoreDocument],
) -> Result<Vec<RestoredDocument>, ProviderError> {
    let open = super::settings::existing(&format!("{root}/pullrequests?state=OPEN&pagelen=50"))?;
    let mut existing: Vec<(String, String, String)> = open
        .iter()
        .filter_map(|v| {
            let s = v.pointer("/source/branch/name")?.as_str()?;
            let d = v.pointer("/destination/branch/name")?.as_str()?;
            Some((s.to_string(), d.to_string(), v.get("id")?.to_string()))
        })
        .collect();
    each(docs, |v| one(root, ctx, &read(v), &mut existing))
}

/// One pull request; `existing` gains it when created.
fn one(
    root: &str,
    ctx: &RestoreContext,
    p: &Pull,
    existing: &mut Vec<(String, String, String)>,
) -> Result<RestoreOutcome, ProviderError> {
    if p.state != "OPEN" {
        return Ok(RestoreOutcome::Skipped(format!(
            "not open ({}): only open pull requests are re-created",
            p.state
        )));
    }
    let (Some(source), Some(dest)) = (&p.source, &p.destination) else {
        return Ok(RestoreOutcome::Skipped(
            "its branches are not recorded".into(),
        ));
    };
    let (source, dest) = (branch_now(ctx, source), branch_now(ctx, dest));
    for b in [&source, &dest] {
        let url = format!("{root}/refs/branches/{}", crate::encode_path_segment(b));
        if crate::documents::get_json(&url)?.is_none() {
            return Ok(RestoreOutcome::Skipped(format!(
                "branch {b} is not in the repository"
            )));
        }
    }
    if let Some((_, _, id)) = existing.iter().find(|(s, d, _)| *s == source && *d == dest) {
        return Ok(RestoreOutcome::Skipped(format!("already exists: #{id}")));
    }
    let body = json!({
        "title": if p.title.is_empty() { format!("Pull request #{}", p.number) } else { p.title.clone() },
        "description": description(p, ctx),
        "source": {"branch": {"name": source}},
        "destination": {"branch": {"name": dest}},
    });
    let url = format!("{root}/pullrequests");
    let created = match checked("POST", &url, &send_json("POST", &url, &body)?)? {
        Ok(v) => v,
        Err(why) => return Ok(RestoreOutcome::Failed(why)),
    };
    let id = created.get("id").map(Value::to_string).unwrap_or_default();
    existing.push((source, dest, id.clone()));
    if let Some(text) = thread(p) {
        let url = format!("{url}/{id}/comments");
        let resp = send_json("POST", &url, &json!({"content": {"raw": text}}))?;
        if let Err(why) = checked("POST", &url, &resp)? {
            return Ok(RestoreOutcome::NeedsUser(NeedsUser {
                id: Some(id),
                what: format!("the original comments could not be added ({why})"),
            }));
        }
    }
    Ok(RestoreOutcome::Restored(id))
}
