//! `show`: what a snapshot holds, read back from the archive.
//!
//! Without a kind, a summary of the snapshot from its manifest alone: its parts, the git
//! and wiki refs and packs, the LFS objects, each metadata kind with its item count, and
//! what is missing. With a kind (`pullrequests`, `issues`, `repository`, ...), that kind's
//! documents: its index blob and every item's blob are read (each verified against its
//! BLAKE3 id while read) and the documents returned as JSON values, with the files they
//! refer to. [`document_title`] is the one line a person sees of a document.

use super::restore::pick_snapshot;
use super::{Context, EngineError};
use crate::archive::{MetadataIndex, Snapshot};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// `show ws/slug [KIND]`: a snapshot (latest, `snapshot` id, or newest at or before `at`),
/// and optionally one metadata kind's documents.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowRequest {
    pub repository: String,
    #[serde(default)]
    pub connection: Option<String>,
    #[serde(default)]
    pub snapshot: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub at: Option<OffsetDateTime>,
    /// A metadata kind: its documents are returned in [`ShowReport::kind`].
    #[serde(default)]
    pub kind: Option<String>,
}

/// What `show` found.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShowReport {
    pub repository: String,
    pub connection: String,
    pub snapshot: String,
    #[serde(with = "time::serde::rfc3339")]
    pub taken_at: OffsetDateTime,
    /// `git`, and `wiki`, `lfs`, `metadata` when the snapshot holds them.
    pub parts: Vec<String>,
    pub git: GitSummary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wiki: Option<GitSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lfs: Option<LfsSummary>,
    /// Metadata kind → items.
    #[serde(default)]
    pub metadata: BTreeMap<String, u64>,
    /// What the snapshot lacks, one line each (a kind the credential may not read, LFS
    /// objects the server did not give).
    #[serde(default)]
    pub missing: Vec<String>,
    /// The kind asked for, with its documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<KindItems>,
}

/// A git repository of a snapshot (the repository itself, or its wiki).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitSummary {
    pub refs: u64,
    pub packs: u64,
}

/// The LFS objects of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LfsSummary {
    pub objects: u64,
    pub bytes: u64,
    /// Objects a pointer names that the server did not give.
    pub missing: u64,
}

/// One metadata kind's documents.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KindItems {
    pub kind: String,
    pub items: Vec<ShownItem>,
}

/// One document, as the server gave it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShownItem {
    pub id: String,
    #[serde(default)]
    pub updated_on: Option<String>,
    pub document: Value,
    /// Files of the document (attachments, downloads).
    #[serde(default)]
    pub files: Vec<ShownFile>,
}

/// A file of a document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShownFile {
    pub name: String,
    pub size: u64,
}

/// Shows a snapshot of a repository, and with `req.kind` that kind's documents.
pub fn show(ctx: &Context, req: &ShowRequest) -> Result<ShowReport, EngineError> {
    let snap = pick_snapshot(
        ctx,
        &req.repository,
        req.connection.as_deref(),
        req.snapshot.as_deref(),
        req.at,
    )?;
    let kind = match &req.kind {
        Some(kind) => {
            let index = kind_index(ctx, &snap, kind)?;
            Some(KindItems {
                kind: kind.clone(),
                items: documents(ctx, &index)?,
            })
        }
        None => None,
    };
    let git = |p: &crate::archive::GitPart| GitSummary {
        refs: u64::from(p.ref_count),
        packs: p.packs.len() as u64,
    };
    Ok(ShowReport {
        repository: snap.repository.full_name.clone(),
        connection: snap.repository.connection.clone(),
        snapshot: snap.id.to_string(),
        taken_at: snap.taken_at,
        parts: snap.part_names().iter().map(|p| p.to_string()).collect(),
        git: git(&snap.git),
        wiki: snap.wiki.as_ref().map(git),
        lfs: snap.lfs.as_ref().map(|l| LfsSummary {
            objects: l.objects,
            bytes: l.bytes,
            missing: l.missing.len() as u64,
        }),
        metadata: snap
            .metadata
            .iter()
            .flat_map(|m| m.kinds.iter().map(|(k, p)| (k.clone(), p.count)))
            .collect(),
        missing: snap.missing(),
        kind,
    })
}

/// The index of metadata `kind` in `snap`; an error naming the kinds it has otherwise
/// (and why the kind is missing, when the backup recorded a reason).
pub(super) fn kind_index(
    ctx: &Context,
    snap: &Snapshot,
    kind: &str,
) -> Result<MetadataIndex, EngineError> {
    let meta = snap.metadata.as_ref();
    if let Some(part) = meta.and_then(|m| m.kinds.get(kind)) {
        return Ok(ctx.archive()?.read_json(&part.index)?);
    }
    let why = meta
        .and_then(|m| m.missing.iter().find(|k| k.kind == kind))
        .map(|k| format!(" (it could not be backed up: {})", k.reason))
        .unwrap_or_default();
    let has: Vec<&str> = meta
        .map(|m| m.kinds.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let has = if has.is_empty() {
        "it holds no metadata".to_string()
    } else {
        format!("its kinds are {}", has.join(", "))
    };
    Err(EngineError::NotFound(format!(
        "snapshot {} of {} has no {kind:?}{why}; {has}",
        snap.id, snap.repository.full_name
    )))
}

/// Every document of a kind's index, read from its blob (verified while read).
pub(super) fn documents(
    ctx: &Context,
    index: &MetadataIndex,
) -> Result<Vec<ShownItem>, EngineError> {
    index
        .items
        .iter()
        .map(|item| {
            let document: Value = ctx.archive()?.read_json(&item.blob)?;
            Ok(ShownItem {
                id: item.id.clone(),
                updated_on: item.updated_on.clone(),
                document,
                files: item
                    .files
                    .iter()
                    .map(|f| ShownFile {
                        name: f.name.clone(),
                        size: f.size,
                    })
                    .collect(),
            })
        })
        .collect()
}

/// One line about a document: for a pull request (`{"pullrequest": {..}, "comments":
/// [..]}`) or an issue (`{"issue": {..}, ..}`) its title, state, author and comment count;
/// otherwise its `title`, `name`, `key` or `slug` field, if it has one (else empty).
pub fn document_title(doc: &Value) -> String {
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    for wrapper in ["pullrequest", "issue"] {
        let Some(inner) = doc.get(wrapper).filter(|v| v.is_object()) else {
            continue;
        };
        let mut line = text(inner, "title").unwrap_or_default();
        if let Some(state) = text(inner, "state") {
            line.push_str(&format!(" [{state}]"));
        }
        if let Some(author) = author(inner) {
            line.push_str(&format!(" by {author}"));
        }
        if let Some(n) = comment_count(doc) {
            line.push_str(&format!(", {n} comment{}", if n == 1 { "" } else { "s" }));
        }
        return line.trim_start().to_string();
    }
    ["title", "name", "key", "slug"]
        .iter()
        .find_map(|k| text(doc, k))
        .unwrap_or_default()
}

/// The author's display name: Cloud `author.display_name` (issues: `reporter`), Data
/// Center `author.user.displayName`.
fn author(item: &Value) -> Option<String> {
    let pointers = [
        "/author/display_name",
        "/reporter/display_name",
        "/author/user/displayName",
        "/author/user/display_name",
    ];
    pointers
        .iter()
        .find_map(|p| item.pointer(p).and_then(Value::as_str))
        .map(str::to_owned)
}

/// Comments of a document: its `comments` list, else (Data Center) its `COMMENTED`
/// activities.
fn comment_count(doc: &Value) -> Option<usize> {
    if let Some(list) = doc.get("comments").and_then(Value::as_array) {
        return Some(list.len());
    }
    doc.get("activities").and_then(Value::as_array).map(|list| {
        list.iter()
            .filter(|a| a.get("action").and_then(Value::as_str) == Some("COMMENTED"))
            .count()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::snapshot_fixture::Fixture;
    use serde_json::json;

    fn request(kind: Option<&str>) -> ShowRequest {
        ShowRequest {
            repository: "ws/app".into(),
            kind: kind.map(str::to_owned),
            ..ShowRequest::default()
        }
    }

    #[test]
    fn the_summary_names_every_part_kind_and_what_is_missing() {
        let f = Fixture::new();
        let full = f.full();
        let r = show(&f.ctx, &request(None)).expect("show");
        assert_eq!(r.snapshot, full.snap.id.as_str());
        assert_eq!(r.repository, "ws/app");
        assert_eq!(r.parts, ["git", "wiki", "lfs", "metadata"]);
        assert_eq!(r.git.refs, full.refs.len() as u64);
        assert_eq!(r.git.packs, 1);
        assert_eq!(
            r.wiki.as_ref().map(|w| w.refs),
            Some(full.wiki_refs.len() as u64)
        );
        let bytes: u64 = full.lfs.iter().map(|o| o.len() as u64).sum();
        assert_eq!(
            r.lfs,
            Some(LfsSummary {
                objects: 2,
                bytes,
                missing: 0
            })
        );
        let kinds: Vec<(&str, u64)> = r.metadata.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        assert_eq!(
            kinds,
            [("issues", 1), ("pullrequests", 2), ("repository", 1)]
        );
        assert_eq!(r.missing, ["pipeline-variables: needs pipeline:variable"]);
        assert!(r.kind.is_none());
    }

    #[test]
    fn a_kind_lists_its_documents_as_stored() {
        let f = Fixture::new();
        f.full();
        let r = show(&f.ctx, &request(Some("pullrequests"))).expect("show");
        let kind = r.kind.expect("items");
        let ids: Vec<&str> = kind.items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["1", "2"]);
        let expected = crate::engine::snapshot_fixture::pull_requests();
        for (item, doc) in kind.items.iter().zip(&expected) {
            assert_eq!(item.document, doc.json);
            assert_eq!(item.updated_on.as_deref(), doc.updated_on);
        }
        assert_eq!(
            document_title(&kind.items[0].document),
            "Add login [MERGED] by Jane Doe, 2 comments"
        );
        let issues = show(&f.ctx, &request(Some("issues"))).expect("issues");
        let issue = &issues.kind.expect("items").items[0];
        assert_eq!(
            issue.files,
            [ShownFile {
                name: "log.txt".into(),
                size: 15
            }]
        );
        assert_eq!(
            document_title(&issue.document),
            "Crash on start [new] by Eve, 1 comment"
        );
    }

    #[test]
    fn an_unknown_kind_is_an_error_naming_the_kinds_the_snapshot_has() {
        let f = Fixture::new();
        f.full();
        let err = show(&f.ctx, &request(Some("wikis"))).expect_err("unknown");
        assert_eq!(err.kind(), crate::engine::ErrorKind::NotFound);
        let text = err.to_string();
        assert!(text.contains("\"wikis\""), "{text}");
        assert!(text.contains("issues, pullrequests, repository"), "{text}");
        let err = show(&f.ctx, &request(Some("pipeline-variables"))).expect_err("missing");
        assert!(err.to_string().contains("needs pipeline:variable"), "{err}");
    }

    #[test]
    fn a_snapshot_without_metadata_says_so() {
        let f = Fixture::new();
        f.write(1_800_000_000, Default::default());
        let r = show(&f.ctx, &request(None)).expect("show");
        assert_eq!(r.parts, ["git"]);
        assert!(r.metadata.is_empty() && r.missing.is_empty());
        let err = show(&f.ctx, &request(Some("issues"))).expect_err("none");
        assert!(err.to_string().contains("holds no metadata"), "{err}");
    }

    #[test]
    fn a_damaged_document_is_an_error_not_a_wrong_answer() {
        let f = Fixture::new();
        let full = f.full();
        let meta = full.snap.metadata.as_ref().expect("metadata");
        let index: MetadataIndex = f
            .archive()
            .read_json(&meta.kinds["pullrequests"].index)
            .expect("index");
        let path = f.archive().blob_location(&index.items[0].blob);
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).expect("write");
        let err = show(&f.ctx, &request(Some("pullrequests"))).expect_err("damaged");
        assert!(
            err.to_string().contains(&index.items[0].blob.to_string()),
            "{err}"
        );
    }

    #[test]
    fn titles_of_documents() {
        let dc = json!({
            "pullrequest": {"title": "T", "state": "OPEN", "author": {"user": {"displayName": "Al"}}},
            "activities": [{"action": "COMMENTED"}, {"action": "APPROVED"}],
        });
        assert_eq!(document_title(&dc), "T [OPEN] by Al, 1 comment");
        assert_eq!(
            document_title(&json!({"name": "prod", "slug": "p"})),
            "prod"
        );
        assert_eq!(document_title(&json!({"key": "PROJ"})), "PROJ");
        assert_eq!(document_title(&json!({"values": []})), "");
    }
}
