//! The metadata of a restore into a provider: each kind the target's provider can write
//! (`restorable-kinds`, in its order) sent to `restore-documents` in batches (a `whole`
//! kind, like Bitbucket Cloud's issue import, in one call), with the documents' stored
//! files readable through the `files` import. What the provider created is recorded in
//! state after each batch, so a re-run never sends a recorded document again.

use super::refs::part;
use super::{PartRestored, PartStatus};
use crate::archive::{Archive, BlobId, MetadataIndex, MetadataKindPart, Snapshot};
use crate::engine::{Context, EngineError};
use crate::providers::{
    FileSource, ProviderError, ProviderSession, Repository, RestoreContext, RestoreDocument,
    RestoreFile, RestoreOutcome,
};
use crate::state::{Connection, RestoreDestination, RestoredItem};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Documents sent in one `restore-documents` call (the world's limit).
const BATCH: usize = 20;

/// The metadata of one snapshot going into one repository.
pub(super) struct Documents<'a> {
    pub ctx: &'a Context,
    pub session: &'a ProviderSession<'a>,
    pub conn: &'a Connection,
    pub snap: &'a Snapshot,
    pub repo: &'a Repository,
    pub renamed: Vec<(String, String)>,
    pub interrupt: &'a AtomicBool,
}

/// The JSON of the first document of `kind` in `snap` (e.g. its `repository` settings).
pub(super) fn single_document(ctx: &Context, snap: &Snapshot, kind: &str) -> Option<String> {
    let index = crate::engine::show::kind_index(ctx, snap, kind).ok()?;
    let item = index.items.first()?;
    String::from_utf8(ctx.archive().ok()?.read_blob(&item.blob).ok()?).ok()
}

/// How one kind's documents went.
#[derive(Default)]
struct KindTally {
    restored: u64,
    already: u64,
    skipped: BTreeMap<String, u64>,
    needs_user: Vec<String>,
    failed: Vec<String>,
    error: Option<String>,
}

impl Documents<'_> {
    /// One part per metadata kind of the snapshot: restored, or why not.
    pub fn restore_all(&self) -> Vec<PartRestored> {
        let Some(meta) = &self.snap.metadata else {
            return Vec::new();
        };
        let source = &self.snap.repository.provider;
        let kinds = match self.session.restorable_kinds(source) {
            Ok(k) => k,
            Err(e) => {
                let status = match e {
                    ProviderError::Unsupported { .. } => PartStatus::Skipped,
                    _ => PartStatus::Failed,
                };
                let detail = format!("no metadata was restored: {e}");
                return vec![part("metadata", status, detail, 0)];
            }
        };
        let mut parts = Vec::new();
        for kind in &kinds {
            if self.interrupt.load(Ordering::Relaxed) {
                break;
            }
            if let Some(entry) = meta.kinds.get(&kind.name) {
                parts.push(self.restore_kind(&kind.name, kind.whole, entry));
            }
        }
        for name in meta.kinds.keys() {
            if !kinds.iter().any(|k| &k.name == name) {
                parts.push(part(
                    &format!("metadata:{name}"),
                    PartStatus::Skipped,
                    format!(
                        "{} does not restore {name} (of a {source} snapshot); it stays in \
                         the snapshot (`reposafe show`, `reposafe export`)",
                        self.conn.provider
                    ),
                    0,
                ));
            }
        }
        parts
    }

    /// Writes one kind; its report.
    fn restore_kind(&self, kind: &str, whole: bool, entry: &MetadataKindPart) -> PartRestored {
        let name = format!("metadata:{kind}");
        let dest = RestoreDestination {
            connection_id: self.conn.id.clone(),
            repository: self.repo.full_name.clone(),
        };
        let mut tally = KindTally::default();
        let docs = match self.pending(kind, entry, &dest, &mut tally) {
            Ok(d) => d,
            Err(e) => return part(&name, PartStatus::Failed, e.to_string(), 0),
        };
        let ctx = RestoreContext {
            source_provider: self.snap.repository.provider.clone(),
            source_full_name: self.snap.repository.full_name.clone(),
            snapshot_taken_at: self
                .snap
                .taken_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            renamed_refs: self.renamed.clone(),
        };
        let archive = match self.ctx.archive() {
            Ok(archive) => archive.clone(),
            Err(e) => return part(&name, PartStatus::Failed, e.to_string(), 0),
        };
        let files: Arc<dyn FileSource> = Arc::new(ArchiveFiles::new(archive));
        let size = if whole { docs.len().max(1) } else { BATCH };
        for batch in docs.chunks(size) {
            if self.interrupt.load(Ordering::Relaxed) {
                tally.error = Some("the restore was stopped".into());
                break;
            }
            match self
                .session
                .restore_documents(self.repo, kind, &ctx, batch, files.clone())
            {
                Ok(outcomes) => self.count(kind, &dest, outcomes, &mut tally),
                Err(e) => {
                    tally.error = Some(e.to_string());
                    break;
                }
            }
        }
        tally.report(name)
    }

    /// The kind's documents not yet restored to `dest` (those recorded are counted).
    fn pending(
        &self,
        kind: &str,
        entry: &MetadataKindPart,
        dest: &RestoreDestination,
        tally: &mut KindTally,
    ) -> Result<Vec<RestoreDocument>, EngineError> {
        let index: MetadataIndex = self.ctx.archive()?.read_json(&entry.index)?;
        let mut docs = Vec::new();
        for item in index.items {
            if self
                .ctx
                .state
                .restored_item(dest, kind, &item.id)?
                .is_some()
            {
                tally.already += 1;
                continue;
            }
            let bytes = self.ctx.archive()?.read_blob(&item.blob)?;
            let json = String::from_utf8(bytes).map_err(|_| {
                EngineError::Internal(format!(
                    "snapshot {}: document {kind}/{} is not UTF-8 JSON",
                    self.snap.id, item.id
                ))
            })?;
            docs.push(RestoreDocument {
                id: item.id,
                updated_on: item.updated_on,
                json,
                files: item
                    .files
                    .iter()
                    .map(|f| RestoreFile {
                        name: f.name.clone(),
                        blob: f.blob.to_hex(),
                        size: f.size,
                    })
                    .collect(),
            });
        }
        Ok(docs)
    }

    /// Counts one batch's outcomes and records what was created.
    fn count(
        &self,
        kind: &str,
        dest: &RestoreDestination,
        outcomes: Vec<crate::providers::RestoredDocument>,
        tally: &mut KindTally,
    ) {
        let now = time::OffsetDateTime::now_utc();
        let item = |id: String| RestoredItem {
            id,
            snapshot: self.snap.id.to_string(),
            at: now,
        };
        let mut created = Vec::new();
        for o in outcomes {
            match o.outcome {
                RestoreOutcome::Restored(id) => {
                    tally.restored += 1;
                    created.push((kind.to_string(), o.id, item(id)));
                }
                RestoreOutcome::NeedsUser { id, what } => {
                    tally.restored += 1;
                    tally.needs_user.push(what);
                    if let Some(id) = id {
                        created.push((kind.to_string(), o.id, item(id)));
                    }
                }
                RestoreOutcome::Skipped(why) => *tally.skipped.entry(why).or_default() += 1,
                RestoreOutcome::Failed(why) => tally.failed.push(format!("{}: {why}", o.id)),
            }
        }
        if let Err(e) = self.ctx.state.record_restored_items(dest, &created) {
            // Not fatal for this run; a re-run may then send these again.
            tally.failed.push(format!(
                "what was created could not be recorded ({e}); a re-run may repeat it"
            ));
        }
    }
}

impl KindTally {
    fn report(self, name: String) -> PartRestored {
        let mut detail = format!("{} restored", self.restored);
        if self.already > 0 {
            detail.push_str(&format!(", {} restored by an earlier run", self.already));
        }
        let skipped: u64 = self.skipped.values().sum();
        if skipped > 0 {
            let why: Vec<String> = self
                .skipped
                .iter()
                .map(|(reason, n)| format!("{n}× {reason}"))
                .collect();
            detail.push_str(&format!(", {skipped} skipped ({})", why.join("; ")));
        }
        if !self.failed.is_empty() {
            detail.push_str(&format!(", {} failed", self.failed.len()));
        }
        if let Some(e) = &self.error {
            detail.push_str(&format!("; stopped: {e}"));
        }
        let status = if self.error.is_some() && self.restored == 0 {
            PartStatus::Failed
        } else if self.error.is_some() || !self.failed.is_empty() || !self.needs_user.is_empty() {
            PartStatus::Partial
        } else if self.restored == 0 && self.already == 0 && skipped > 0 {
            PartStatus::Skipped
        } else {
            PartStatus::Restored
        };
        PartRestored {
            part: name,
            status,
            detail,
            items: self.restored,
            needs_user: self.needs_user,
            problems: self.failed,
        }
    }
}

/// The `files` import of a restore call: stored files read from the archive (verified),
/// the current one kept in memory while the plugin reads it in pieces.
struct ArchiveFiles {
    archive: Archive,
    current: Mutex<Option<(String, Arc<Vec<u8>>)>>,
}

impl ArchiveFiles {
    fn new(archive: Archive) -> ArchiveFiles {
        ArchiveFiles {
            archive,
            current: Mutex::new(None),
        }
    }

    fn content(&self, blob: &str) -> Result<Arc<Vec<u8>>, String> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((id, bytes)) = current.as_ref() {
            if id == blob {
                return Ok(bytes.clone());
            }
        }
        let id = BlobId::parse(blob).map_err(|e| e.to_string())?;
        let bytes = Arc::new(self.archive.read_blob(&id).map_err(|e| e.to_string())?);
        *current = Some((blob.to_string(), bytes.clone()));
        Ok(bytes)
    }
}

impl FileSource for ArchiveFiles {
    fn read(&self, blob: &str, offset: u64, length: u32) -> Result<Vec<u8>, String> {
        let bytes = self.content(blob)?;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let end = start.saturating_add(length as usize).min(bytes.len());
        Ok(bytes[start..end].to_vec())
    }
}
