//! `issues`: Bitbucket Cloud's issue import (`POST …/issues/import`, a ZIP of
//! `db-2.0.json` and `attachments/…`, then `GET …/issues/import` until it is
//! done), which keeps the issues' ids, reporters and dates. The import
//! replaces the tracker's issues, so it is refused (every issue `skipped`)
//! when the repository has no tracker or its tracker has issues.
//! Attachments are read with `files.read`; past [`MAX_ATTACHMENT_BYTES`] in
//! one import they are left out and their issues need the user.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::{checked, outcome, send, time_text};
use crate::reposafe::provider::files;
use crate::reposafe::provider::types::{
    NeedsUser, ProviderError, RestoreContext, RestoreDocument, RestoreOutcome, RestoredDocument,
};
use crate::zip::ZipWriter;

/// Attachment bytes one import carries at most (the component has 64 MiB of memory).
const MAX_ATTACHMENT_BYTES: u64 = 16 << 20;
/// Bytes asked for per `files.read` (the host's limit).
const READ_CHUNK: u32 = 4 << 20;
/// Status checks of the import before leaving it to run on its own.
const MAX_POLLS: usize = 200;

/// A user as `db-2.0.json` has it.
fn user(v: Option<&Value>) -> Value {
    match v {
        Some(u) if u.is_object() => json!({
            "display_name": u.get("display_name").cloned().unwrap_or(Value::Null),
            "account_id": u.get("account_id").cloned().unwrap_or(Value::Null),
        }),
        _ => Value::Null,
    }
}

/// A name-or-null field (`milestone`, `version`, `component`: objects with `name`).
fn named(v: Option<&Value>) -> Value {
    v.and_then(|x| x.get("name").or(Some(x)))
        .and_then(Value::as_str)
        .map_or(Value::Null, |s| json!(s))
}

/// `db-2.0.json` for the issue documents, and the attachments to add
/// (`(path in the zip, document index, file index)`).
pub fn database(docs: &[Value]) -> (Value, Vec<(String, usize, usize)>) {
    let (mut issues, mut comments, mut logs, mut attachments) = (vec![], vec![], vec![], vec![]);
    let mut names: [BTreeSet<String>; 3] = Default::default();
    let mut files = Vec::new();
    for (di, doc) in docs.iter().enumerate() {
        let i = doc.get("issue").unwrap_or(&Value::Null);
        let id = i.get("id").cloned().unwrap_or(Value::Null);
        for (n, key) in ["component", "milestone", "version"].iter().enumerate() {
            if let Some(s) = named(i.get(*key)).as_str() {
                names[n].insert(s.to_string());
            }
        }
        issues.push(json!({
            "id": id, "title": i.get("title"), "content": i.pointer("/content/raw"),
            "reporter": user(i.get("reporter")), "assignee": user(i.get("assignee")),
            "created_on": i.get("created_on"), "updated_on": i.get("updated_on"),
            "content_updated_on": i.get("updated_on"), "edited_on": i.get("edited_on"),
            "status": i.get("state"), "kind": i.get("kind"), "priority": i.get("priority"),
            "component": named(i.get("component")), "milestone": named(i.get("milestone")),
            "version": named(i.get("version")), "watchers": [], "voters": [],
        }));
        for c in doc
            .get("comments")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            comments.push(json!({
                "id": c.get("id"), "issue": id, "content": c.pointer("/content/raw"),
                "created_on": c.get("created_on"), "updated_on": c.get("updated_on"),
                "user": user(c.get("user")),
            }));
        }
        for ch in doc
            .get("changes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let changes = ch.get("changes").and_then(Value::as_object);
            for (field, change) in changes.into_iter().flatten() {
                logs.push(json!({
                    "issue": id, "field": field, "comment": Value::Null,
                    "changed_from": change.get("old"), "changed_to": change.get("new"),
                    "created_on": ch.get("created_on"), "user": user(ch.get("user")),
                }));
            }
        }
        let listed = doc.get("attachments").and_then(Value::as_array);
        for (fi, a) in listed.into_iter().flatten().enumerate() {
            let name = a
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("attachment");
            let path = format!("attachments/{}/{fi}-{name}", id);
            attachments
                .push(json!({"issue": id, "filename": name, "path": path, "user": Value::Null}));
            files.push((path, di, fi));
        }
    }
    let list = |n: usize| {
        names[n]
            .iter()
            .map(|s| json!({"name": s}))
            .collect::<Vec<_>>()
    };
    let db = json!({
        "issues": issues, "comments": comments, "logs": logs, "attachments": attachments,
        "components": list(0), "milestones": list(1), "versions": list(2),
        "meta": {"default_assignee": null, "default_component": null, "default_kind": "bug",
                 "default_milestone": null, "default_version": null},
    });
    (db, files)
}

/// The whole content of a stored file.
fn read_file(blob: &str, size: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(size.min(MAX_ATTACHMENT_BYTES) as usize);
    loop {
        let chunk = files::read(blob, out.len() as u64, READ_CHUNK)?;
        if chunk.is_empty() {
            return Ok(out);
        }
        out.extend_from_slice(&chunk);
        if out.len() as u64 > MAX_ATTACHMENT_BYTES {
            return Err("larger than one import can carry".into());
        }
    }
}

/// A multipart/form-data body with the one file field `archive`.
fn multipart(zip: &[u8]) -> (String, Vec<u8>) {
    let mut boundary = "reposafe-issue-import-5c0b7e1d".to_string();
    while zip
        .windows(boundary.len())
        .any(|w| w == boundary.as_bytes())
    {
        boundary.push('x');
    }
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"archive\"; \
         filename=\"issues.zip\"\r\nContent-Type: application/zip\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(zip);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Why the tracker cannot take the import, if it cannot.
fn refused(root: &str) -> Result<Option<String>, ProviderError> {
    let Some(page) = crate::documents::get_json(&format!("{root}/issues?pagelen=1"))? else {
        return Ok(Some(
            "the repository has no issue tracker: turn it on (Repository settings → Issue \
             tracker) and restore the issues again"
                .into(),
        ));
    };
    let size = page.get("size").and_then(Value::as_u64).unwrap_or(0);
    let listed = page
        .get("values")
        .and_then(Value::as_array)
        .is_some_and(|v| !v.is_empty());
    Ok((size > 0 || listed).then(|| {
        "the issue tracker has issues already, and Bitbucket's issue import would replace \
         them: nothing was imported"
            .to_string()
    }))
}

/// Imports every issue of `docs` in one import.
pub fn restore(
    root: &str,
    _ctx: &RestoreContext,
    docs: &[RestoreDocument],
) -> Result<Vec<RestoredDocument>, ProviderError> {
    if let Some(why) = refused(root)? {
        return Ok(docs
            .iter()
            .map(|d| outcome(d, RestoreOutcome::Skipped(why.clone())))
            .collect());
    }
    let mut values = Vec::new();
    let mut out: Vec<Option<RestoreOutcome>> = Vec::new();
    for d in docs {
        match serde_json::from_str::<Value>(&d.json) {
            Ok(v) => {
                values.push(v);
                out.push(None);
            }
            Err(e) => {
                values.push(Value::Null);
                out.push(Some(RestoreOutcome::Failed(format!("not JSON: {e}"))));
            }
        }
    }
    let (db, attachments) = database(&values);
    let mut zip = ZipWriter::new();
    let db_text = db.to_string();
    zip.add("db-2.0.json", db_text.as_bytes())
        .map_err(ProviderError::Http)?;
    let mut left_out: Vec<(usize, String)> = Vec::new();
    let mut carried: u64 = 0;
    for (path, di, fi) in attachments {
        let doc = &docs[di];
        let name = values[di]
            .pointer(&format!("/attachments/{fi}/name"))
            .and_then(Value::as_str);
        let file = doc.files.iter().find(|f| Some(f.name.as_str()) == name);
        let result = match file {
            None => Err("it was not stored with the snapshot".to_string()),
            Some(f) if carried + f.size > MAX_ATTACHMENT_BYTES => {
                Err(format!("{} bytes more than one import can carry", f.size))
            }
            Some(f) => read_file(&f.blob, f.size),
        };
        match result {
            Ok(bytes) => {
                carried += bytes.len() as u64;
                zip.add(&path, &bytes).map_err(ProviderError::Http)?;
            }
            Err(why) => left_out.push((di, format!("{} ({why})", name.unwrap_or("?")))),
        }
    }
    let zip = zip.finish().map_err(ProviderError::Http)?;
    let done = import(root, multipart(&zip))?;
    for (i, d) in docs.iter().enumerate() {
        if out[i].is_some() {
            continue;
        }
        let id = values[i]
            .pointer("/issue/id")
            .map(Value::to_string)
            .unwrap_or_else(|| d.id.clone());
        let missing: Vec<&str> = left_out
            .iter()
            .filter(|(di, _)| *di == i)
            .map(|(_, w)| w.as_str())
            .collect();
        out[i] = Some(match &done {
            Err(why) => RestoreOutcome::Failed(why.clone()),
            Ok(Some(still)) => RestoreOutcome::NeedsUser(NeedsUser {
                id: Some(id),
                what: still.clone(),
            }),
            Ok(None) if !missing.is_empty() => RestoreOutcome::NeedsUser(NeedsUser {
                id: Some(id),
                what: format!("attach by hand what was left out: {}", missing.join(", ")),
            }),
            Ok(None) => RestoreOutcome::Restored(id),
        });
    }
    Ok(docs
        .iter()
        .zip(out)
        .map(|(d, o)| {
            outcome(
                d,
                o.unwrap_or(RestoreOutcome::Failed("not imported".into())),
            )
        })
        .collect())
}

/// Starts the import and follows it: `Ok(None)` when done, `Ok(Some(what))`
/// when it is still running, `Err` with the server's answer when it failed.
fn import(
    root: &str,
    (content_type, body): (String, Vec<u8>),
) -> Result<Result<Option<String>, String>, ProviderError> {
    let url = format!("{root}/issues/import");
    let resp = send("POST", &url, Some((&content_type, body)))?;
    if let Err(why) = checked("POST", &url, &resp)? {
        return Ok(Err(why));
    }
    for _ in 0..MAX_POLLS {
        let Some(job) = crate::documents::get_json(&url)? else {
            return Ok(Err(format!("GET {url}: the import job is gone (404)")));
        };
        let status = job.get("status").and_then(Value::as_str).unwrap_or("");
        let pct = job.get("pct").and_then(Value::as_f64).unwrap_or(0.0);
        match status {
            "SUCCESS" => return Ok(Ok(None)),
            "FAILURE" => {
                return Ok(Err(format!(
                    "Bitbucket's issue import failed (phase {}): {}",
                    job.get("phase").and_then(Value::as_str).unwrap_or("?"),
                    time_text(job.get("message")).unwrap_or_default()
                )))
            }
            _ if pct >= 100.0 && status != "ACCEPTED" => return Ok(Ok(None)),
            _ => {}
        }
    }
    Ok(Ok(Some(
        "Bitbucket's issue import was still running when reposafe stopped following it: \
         check the issue tracker"
            .into(),
    )))
}
