//! The issue import of the Cloud double (`POST/GET /2.0/repositories/{ws}/{slug}/issues/import`):
//! the multipart field `archive` is a ZIP read for real (central directory, local
//! headers, CRC-32 of every entry; stored entries only, which is what reposafe sends)
//! holding `db-2.0.json` (the issue import/export data format: `issues`, `comments`,
//! `logs`, `attachments`, `milestones`, `versions`, `components`, `meta`) and the
//! `attachments/…` it names. The import keeps issue ids, reporters and dates; comments
//! get new ids (as on Cloud). As on Cloud, an import replaces every issue the tracker
//! had (which is why reposafe refuses to import into a tracker that has issues). It
//! runs at once: the next `GET` says `SUCCESS`, or `FAILURE` with the reason.

use std::collections::BTreeMap;
use std::sync::Arc;

use hyper::{Method, Response, StatusCode};
use serde_json::{json, Value};

use super::write::WriteRequest;
use super::{error, json_response, Repo};
use crate::httputil::Body;
use crate::metadata::{parse_cloud_time, FileItem, Issue, IssueChange, IssueComment};

type Answer = Result<Response<Body>, Box<Response<Body>>>;

/// `POST` starts an import, `GET` answers the last job's status.
pub(super) fn answer(repo: &mut Repo, req: &WriteRequest) -> Answer {
    if !repo.metadata.issue_tracker {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            super::NO_ISSUE_TRACKER,
        )));
    }
    if req.method == Method::GET {
        return match &repo.import_job {
            Some(job) => Ok(json_response(StatusCode::OK, job)),
            None => Err(Box::new(error(
                StatusCode::NOT_FOUND,
                "No import job found",
            ))),
        };
    }
    let archive = multipart_field(req.content_type, req.body, "archive").ok_or_else(|| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "Missing the file field \"archive\"",
        ))
    })?;
    let job = match import(repo, &archive) {
        Ok(n) => json!({"type": "issue_job_status", "status": "SUCCESS", "phase": "Attachments",
                        "total": n, "count": n, "pct": 100}),
        Err(why) => json!({"type": "issue_job_status", "status": "FAILURE", "phase": "Import",
                           "total": 0, "count": 0, "pct": 100, "message": why}),
    };
    repo.import_job = Some(job);
    Ok(json_response(
        StatusCode::ACCEPTED,
        &json!({"type": "issue_job_status", "status": "ACCEPTED", "phase": "Attachments",
                "total": 0, "count": 0, "pct": 0}),
    ))
}

/// The content of form field `name` of a `multipart/form-data` body.
fn multipart_field(content_type: &str, body: &[u8], name: &str) -> Option<Vec<u8>> {
    let boundary = content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))?
        .trim_matches('"');
    if !content_type.trim_start().starts_with("multipart/form-data") || boundary.is_empty() {
        return None;
    }
    let delimiter = format!("--{boundary}");
    let mut rest = body;
    loop {
        let start = find(rest, delimiter.as_bytes())? + delimiter.len();
        rest = &rest[start..];
        if rest.starts_with(b"--") {
            return None;
        }
        let head_end = find(rest, b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&rest[..head_end]).to_ascii_lowercase();
        let content = &rest[head_end + 4..];
        let end = find(content, format!("\r\n{delimiter}").as_bytes())?;
        if head.contains(&format!("name=\"{name}\"")) {
            return Some(content[..end].to_vec());
        }
        rest = &content[end..];
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn u16_at(b: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?) as usize)
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The CRC-32 ZIP uses.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// Every entry of a ZIP archive, by name.
fn unzip(zip: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let eocd = (0..zip.len().saturating_sub(21))
        .rev()
        .find(|&i| u32_at(zip, i) == Some(0x0605_4b50))
        .ok_or("not a ZIP archive (no end of central directory)")?;
    let count = u16_at(zip, eocd + 10).ok_or("truncated ZIP")?;
    let mut at = u32_at(zip, eocd + 16).ok_or("truncated ZIP")? as usize;
    let mut out = BTreeMap::new();
    for _ in 0..count {
        if u32_at(zip, at) != Some(0x0201_4b50) {
            return Err("bad central directory entry".into());
        }
        let method = u16_at(zip, at + 10).ok_or("truncated ZIP")?;
        let crc = u32_at(zip, at + 16).ok_or("truncated ZIP")?;
        let size = u32_at(zip, at + 20).ok_or("truncated ZIP")? as usize;
        let name_len = u16_at(zip, at + 28).ok_or("truncated ZIP")?;
        let skip = name_len
            + u16_at(zip, at + 30).ok_or("truncated ZIP")?
            + u16_at(zip, at + 32).ok_or("truncated ZIP")?;
        let local = u32_at(zip, at + 42).ok_or("truncated ZIP")? as usize;
        let name = String::from_utf8(
            zip.get(at + 46..at + 46 + name_len)
                .ok_or("truncated ZIP")?
                .to_vec(),
        )
        .map_err(|_| "an entry name is not UTF-8")?;
        at += 46 + skip;
        if method != 0 {
            return Err(format!(
                "{name}: compression method {method} (the double reads stored entries only)"
            ));
        }
        if u32_at(zip, local) != Some(0x0403_4b50) {
            return Err(format!("{name}: bad local header"));
        }
        let data_at = local
            + 30
            + u16_at(zip, local + 26).ok_or("truncated ZIP")?
            + u16_at(zip, local + 28).ok_or("truncated ZIP")?;
        let data = zip
            .get(data_at..data_at + size)
            .ok_or_else(|| format!("{name}: truncated"))?;
        if crc32(data) != crc {
            return Err(format!("{name}: CRC mismatch"));
        }
        out.insert(name, data.to_vec());
    }
    Ok(out)
}

/// A user of `db-2.0.json` (`{"display_name", "account_id"}`): the account id.
fn user(v: Option<&Value>) -> Option<String> {
    v?.get("account_id")?.as_str().map(String::from)
}

fn time(v: Option<&Value>, what: &str) -> Result<u64, String> {
    let s = v
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{what}: no time"))?;
    parse_cloud_time(s).ok_or_else(|| format!("{what}: unreadable time {s:?}"))
}

/// Imports the archive's issues into `repo`; the number imported.
fn import(repo: &mut Repo, zip: &[u8]) -> Result<usize, String> {
    let files = unzip(zip)?;
    let db: Value = serde_json::from_slice(
        files
            .get("db-2.0.json")
            .ok_or("the archive has no db-2.0.json")?,
    )
    .map_err(|e| format!("db-2.0.json: {e}"))?;
    let list = |k: &str| {
        db.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut issues: Vec<Issue> = Vec::new();
    for i in list("issues") {
        let id = i
            .get("id")
            .and_then(Value::as_u64)
            .ok_or("an issue has no id")?;
        let text = |k: &str| i.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        issues.push(Issue {
            id,
            title: text("title"),
            content: text("content"),
            reporter: user(i.get("reporter")).unwrap_or_default(),
            assignee: user(i.get("assignee")),
            state: text("status"),
            kind: text("kind"),
            priority: text("priority"),
            created_ms: time(i.get("created_on"), &format!("issue {id}"))?,
            updated_ms: time(i.get("updated_on"), &format!("issue {id}"))?,
            comments: Vec::new(),
            changes: Vec::new(),
            attachments: Vec::new(),
        });
    }
    let m = &mut repo.metadata;
    let issue_of = |v: &Value, issues: &mut Vec<Issue>| -> Result<usize, String> {
        let id = v
            .get("issue")
            .and_then(Value::as_u64)
            .ok_or("an item has no issue")?;
        issues
            .iter()
            .position(|i| i.id == id)
            .ok_or_else(|| format!("no issue {id}"))
    };
    for c in list("comments") {
        let at = issue_of(&c, &mut issues)?;
        issues[at].comments.push(IssueComment {
            id: m.new_id(),
            author: user(c.get("user")).unwrap_or_default(),
            text: c
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            created_ms: time(c.get("created_on"), "comment")?,
        });
    }
    for l in list("logs") {
        let at = issue_of(&l, &mut issues)?;
        let text = |k: &str| l.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        issues[at].changes.push(IssueChange {
            id: m.new_id(),
            user: user(l.get("user")).unwrap_or_default(),
            created_ms: time(l.get("created_on"), "log")?,
            field: text("field"),
            old: text("changed_from"),
            new: text("changed_to"),
        });
    }
    for a in list("attachments") {
        let at = issue_of(&a, &mut issues)?;
        let path = a.get("path").and_then(Value::as_str).unwrap_or("");
        let bytes = files
            .get(path)
            .ok_or_else(|| format!("attachment {path} is not in the archive"))?;
        let created_ms = issues[at].created_ms;
        issues[at].attachments.push(FileItem {
            name: a
                .get("filename")
                .and_then(Value::as_str)
                .unwrap_or(path)
                .to_string(),
            bytes: Arc::new(bytes.clone()),
            user: user(a.get("user")).unwrap_or_default(),
            created_ms,
        });
    }
    let n = issues.len();
    issues.sort_by_key(|i| i.id);
    m.issues = issues;
    Ok(n)
}
