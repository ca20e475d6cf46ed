//! A repository's metadata in a backup: the provider's documents (pull requests with
//! their comments, issues, settings, ...) stored one blob per item as canonical JSON,
//! with an index blob per kind ([`crate::archive::MetadataIndex`]), and the files they
//! name (attachments, downloads) downloaded into the archive.
//!
//! Incremental by design: an incremental kind is listed from the previous snapshot's
//! high-water mark (the provider stops at the first item not updated since), and the
//! items it does not return are carried forward from the previous index; a document
//! equal to the previous one is the same blob and keeps its files without downloading
//! them again. So an unchanged repository costs one request per kind and stores 0 bytes.
//! Scope-level kinds (the workspace, its projects; a DC project) are read once per scope
//! per job ([`ScopeCache`]) and added to each repository's part (the same blobs).
//!
//! A kind that cannot be read (a credential without the scope: `needs read:pullrequest`)
//! is recorded as missing, never failing the repository.

use super::{Context, EngineError};
use crate::archive::{
    canonical_json, Archive, MetadataIndex, MetadataItem, MetadataKindPart, MetadataPart,
    MissingKind, StoredFile,
};
use crate::providers::{
    Document, DocumentPage, HttpGate, MetadataKind, ProviderError, ProviderSession, Repository,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Most pages read for one kind of one repository: a provider that never ends its
/// listing is stopped.
const MAX_PAGES: usize = 100_000;
/// Longest document id accepted.
const MAX_ID_LEN: usize = 512;

/// Where a repository's documents come from and go to.
pub(super) struct MetadataRun<'a> {
    pub ctx: &'a Context,
    pub session: &'a ProviderSession<'a>,
    /// The credential the repository is read with (for attachment files).
    pub gate: &'a HttpGate,
    pub repo: &'a Repository,
    pub scopes: &'a ScopeCache,
}

/// The scope-level kinds of a job, read once per scope.
#[derive(Default)]
pub(super) struct ScopeCache {
    scopes: Mutex<HashMap<String, Arc<OnceLock<ScopeKinds>>>>,
}

/// One scope's kinds, as read by the first repository of the scope in a job.
#[derive(Clone, Default)]
struct ScopeKinds {
    kinds: BTreeMap<String, MetadataKindPart>,
    missing: Vec<MissingKind>,
}

impl ScopeCache {
    fn get(&self, scope: &str, read: impl FnOnce() -> ScopeKinds) -> ScopeKinds {
        let cell = match self.scopes.lock() {
            Ok(mut m) => m.entry(scope.to_string()).or_default().clone(),
            Err(_) => Arc::new(OnceLock::new()),
        };
        cell.get_or_init(read).clone()
    }
}

impl MetadataRun<'_> {
    /// Backs up every kind the provider described (and the repository's scope's kinds);
    /// `new_bytes` grows by what was stored.
    pub fn backup(
        &self,
        kinds: &[MetadataKind],
        previous: Option<&MetadataPart>,
        new_bytes: &mut u64,
    ) -> Result<MetadataPart, EngineError> {
        let mut part = MetadataPart::default();
        for kind in kinds {
            let prev = match previous.and_then(|p| p.kinds.get(&kind.name)) {
                // An unreadable previous index only costs a full listing.
                Some(k) => self
                    .ctx
                    .archive()?
                    .read_json::<MetadataIndex>(&k.index)
                    .ok(),
                None => None,
            };
            let since = prev
                .as_ref()
                .filter(|_| kind.incremental)
                .and_then(|p| p.high_water.clone());
            let listed = self.list_all(&kind.name, |cursor| {
                self.session
                    .list_documents(self.repo, &kind.name, since.as_deref(), cursor)
            });
            match listed {
                Ok(docs) => {
                    let carried = if since.is_some() { prev.as_ref() } else { None };
                    let (k, missing) =
                        self.store_kind(&kind.name, docs, carried, prev.as_ref(), new_bytes)?;
                    part.kinds.insert(kind.name.clone(), k);
                    part.missing.extend(missing);
                }
                Err(e) => part.missing.push(missing_kind(&kind.name, &e)),
            }
        }
        let scope = self
            .scopes
            .get(&self.repo.scope, || self.read_scope(previous, new_bytes));
        for (name, k) in scope.kinds {
            part.kinds.entry(name).or_insert(k);
        }
        part.missing.extend(scope.missing);
        Ok(part)
    }

    /// Reads every kind of the repository's scope (not incremental: few, small items).
    /// `previous`: the repository's previous metadata, which holds the scope's kinds
    /// too (documents found unchanged there are not stored again).
    fn read_scope(&self, previous: Option<&MetadataPart>, new_bytes: &mut u64) -> ScopeKinds {
        let scope = &self.repo.scope;
        let mut out = ScopeKinds::default();
        let kinds = match self.session.describe_scope(scope) {
            Ok(k) => k,
            Err(e) => {
                out.missing
                    .push(missing_kind(&format!("scope {scope}"), &e));
                return out;
            }
        };
        for kind in kinds {
            let listed = self.list_all(&kind.name, |cursor| {
                self.session.list_scope_documents(scope, &kind.name, cursor)
            });
            let stored = listed
                .map_err(|e| missing_kind(&kind.name, &e))
                .and_then(|docs| {
                    let prev = previous
                        .and_then(|p| p.kinds.get(&kind.name))
                        .and_then(|k| {
                            self.ctx
                                .archive()
                                .ok()?
                                .read_json::<MetadataIndex>(&k.index)
                                .ok()
                        });
                    self.store_kind(&kind.name, docs, None, prev.as_ref(), new_bytes)
                        .map_err(|e| MissingKind {
                            kind: kind.name.clone(),
                            reason: e.to_string(),
                        })
                });
            match stored {
                Ok((k, missing)) => {
                    out.kinds.insert(kind.name.clone(), k);
                    out.missing.extend(missing);
                }
                Err(m) => out.missing.push(m),
            }
        }
        out
    }

    /// Every document of a listing, page after page.
    fn list_all(
        &self,
        kind: &str,
        page: impl Fn(Option<&str>) -> Result<DocumentPage, ProviderError>,
    ) -> Result<Vec<Document>, ProviderError> {
        let mut docs = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let p = page(cursor.as_deref())?;
            docs.extend(p.documents);
            match p.next {
                Some(next) if Some(&next) == cursor.as_ref() => {
                    return Err(ProviderError::InvalidResponse(format!(
                        "the provider returned the same cursor twice listing {kind}"
                    )))
                }
                Some(next) => cursor = Some(next),
                None => return Ok(docs),
            }
        }
        Err(ProviderError::InvalidResponse(format!(
            "the provider listed more than {MAX_PAGES} pages of {kind}"
        )))
    }

    /// Stores a kind's documents and its index. `carried`: the previous index whose
    /// items the listing did not return stay (an incremental listing); `previous`: the
    /// previous index, whose files are reused for documents that did not change.
    fn store_kind(
        &self,
        kind: &str,
        docs: Vec<Document>,
        carried: Option<&MetadataIndex>,
        previous: Option<&MetadataIndex>,
        new_bytes: &mut u64,
    ) -> Result<(MetadataKindPart, Vec<MissingKind>), EngineError> {
        let archive = self.ctx.archive()?;
        let mut items: BTreeMap<String, MetadataItem> = carried
            .map(|p| p.items.iter().map(|i| (i.id.clone(), i.clone())).collect())
            .unwrap_or_default();
        let before: HashMap<&str, &MetadataItem> = previous
            .map(|p| p.items.iter().map(|i| (i.id.as_str(), i)).collect())
            .unwrap_or_default();
        let mut missing = Vec::new();
        for doc in docs {
            check_document(kind, &doc)?;
            let json = canonical_json(&doc.json).map_err(|e| {
                EngineError::ProviderAnswer(format!(
                    "{}: {kind} {:?} is not JSON: {e}",
                    self.repo.full_name, doc.id
                ))
            })?;
            // A document as the previous index holds it is in the archive already.
            let id = archive.blob_id_of(&json);
            let known = before.get(doc.id.as_str()).is_some_and(|p| p.blob == id);
            let put_id = if known {
                id
            } else {
                let put = archive.put_bytes(&json)?;
                *new_bytes += put.stored_bytes;
                put.id
            };
            let reuse = before
                .get(doc.id.as_str())
                .filter(|p| p.blob == put_id && p.files.len() == doc.files.len());
            let files = match reuse {
                Some(p) => p.files.clone(),
                None => self.download_files(archive, kind, &doc, new_bytes, &mut missing),
            };
            let item = MetadataItem {
                id: doc.id,
                updated_on: doc.updated_on,
                blob: put_id,
                files,
            };
            items.insert(item.id.clone(), item);
        }
        let index = MetadataIndex {
            kind: kind.to_string(),
            high_water: high_water(items.values()),
            items: items.into_values().collect(),
        };
        let put = archive.put_json_unless(&index, previous)?;
        *new_bytes += put.stored_bytes;
        let part = MetadataKindPart {
            index: put.id,
            count: index.items.len() as u64,
        };
        Ok((part, missing))
    }

    /// Downloads a document's files; one that fails is left out and named in `missing`.
    fn download_files(
        &self,
        archive: &Archive,
        kind: &str,
        doc: &Document,
        new_bytes: &mut u64,
        missing: &mut Vec<MissingKind>,
    ) -> Vec<StoredFile> {
        let mut files = Vec::new();
        for f in &doc.files {
            match crate::lfs::download_file(self.gate, archive, &f.url, f.size) {
                Ok(put) => {
                    *new_bytes += put.stored_bytes;
                    files.push(StoredFile {
                        name: f.name.clone(),
                        size: put.len,
                        blob: put.id,
                    });
                }
                Err(e) => missing.push(MissingKind {
                    kind: kind.to_string(),
                    reason: format!("{} {}: file {:?} not downloaded: {e}", kind, doc.id, f.name),
                }),
            }
        }
        files
    }
}

/// A document the provider returned for `kind` must be of that kind and have a usable id.
fn check_document(kind: &str, doc: &Document) -> Result<(), EngineError> {
    if doc.kind != kind {
        return Err(EngineError::ProviderAnswer(format!(
            "the provider returned a {:?} document when listing {kind}",
            doc.kind
        )));
    }
    if doc.id.is_empty() || doc.id.len() > MAX_ID_LEN || doc.id.chars().any(char::is_control) {
        return Err(EngineError::ProviderAnswer(format!(
            "the provider returned a {kind} document with an unusable id {:?}",
            doc.id.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

/// The newest `updated_on` among the items (compared as instants; the server's text
/// is kept, as the provider compares it).
fn high_water<'a>(items: impl Iterator<Item = &'a MetadataItem>) -> Option<String> {
    items
        .filter_map(|i| {
            let text = i.updated_on.as_deref()?;
            let at = OffsetDateTime::parse(text, &Rfc3339).ok()?;
            Some((at, text))
        })
        .max_by_key(|(at, _)| *at)
        .map(|(_, text)| text.to_string())
}

/// A kind that could not be listed: the provider's reason (for a 403, the scopes the
/// credential lacks).
fn missing_kind(kind: &str, e: &ProviderError) -> MissingKind {
    let reason = match e {
        ProviderError::Forbidden(why) => why.clone(),
        other => other.to_string(),
    };
    MissingKind {
        kind: kind.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, updated: Option<&str>) -> MetadataItem {
        MetadataItem {
            id: id.into(),
            updated_on: updated.map(str::to_string),
            blob: crate::archive::BlobId::of(id.as_bytes()),
            files: vec![],
        }
    }

    #[test]
    fn the_high_water_mark_is_the_latest_instant_whatever_the_offset() {
        let items = [
            item("1", Some("2026-01-01T10:00:00.000000+00:00")),
            item("2", Some("2026-01-01T11:30:00+02:00")), // 09:30 UTC
            item("3", None),
            item("4", Some("not a time")),
        ];
        assert_eq!(
            high_water(items.iter()).as_deref(),
            Some("2026-01-01T10:00:00.000000+00:00")
        );
        assert_eq!(high_water([].iter()), None);
    }

    #[test]
    fn documents_of_another_kind_or_with_unusable_ids_are_refused() {
        let doc = |kind: &str, id: &str| Document {
            kind: kind.into(),
            id: id.into(),
            updated_on: None,
            json: "{}".into(),
            files: vec![],
        };
        assert!(check_document("issues", &doc("issues", "7")).is_ok());
        let e = check_document("issues", &doc("pullrequests", "7")).unwrap_err();
        assert!(
            e.to_string()
                .contains("\"pullrequests\" document when listing issues"),
            "{e}"
        );
        assert!(check_document("issues", &doc("issues", "")).is_err());
        assert!(check_document("issues", &doc("issues", "a\nb")).is_err());
    }

    #[test]
    fn a_forbidden_kind_is_missing_with_the_scopes_it_needs() {
        let m = missing_kind(
            "pullrequests",
            &ProviderError::Forbidden("needs read:pullrequest:bitbucket".into()),
        );
        assert_eq!(m.reason, "needs read:pullrequest:bitbucket");
    }
}
