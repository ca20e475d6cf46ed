//! The named parts of a format-2 snapshot and the index blobs they point to.
//!
//! A snapshot holds a repository's **git** part (refs list + packs) and, when the
//! provider reports them, a **wiki** (a second git part), **lfs** objects and
//! **metadata** (pull requests, issues, settings, ... as JSON documents). A part is a
//! handful of blob ids; the LFS and metadata parts point to an *index blob* each (per
//! metadata kind), which lists the content blobs:
//!
//! * LFS index: JSON list, sorted by oid, of `{"oid", "size", "blob"}`;
//! * metadata index: `{"kind", "high_water", "items": [{"id", "updated_on", "blob",
//!   "files": [{"name", "size", "blob"}]}]}`, items sorted by id; each item's blob is
//!   its document as canonical JSON (keys sorted, no whitespace), so an unchanged item
//!   costs no bytes and an index is equal whenever its items are.
//!
//! The accelerator `index/lfs/<sha256>` → blob id lets a backup skip LFS objects the
//! archive already holds (for any repository); it can be rebuilt from the indexes.

use super::{Archive, ArchiveError, BlobId, PutOutcome};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;

/// A git repository in a snapshot: its refs (a JSON list blob) and every pack needed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitPart {
    /// Blob with the refs (JSON list written by the engine).
    pub refs: BlobId,
    pub ref_count: u32,
    /// Blobs with every git pack the repository needs, in order.
    pub packs: Vec<BlobId>,
}

/// The Git LFS objects of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LfsPart {
    /// Blob with the [`LfsIndexEntry`] list.
    pub index: BlobId,
    /// Objects held (entries of the index).
    pub objects: u64,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Pointers found whose object could not be downloaded, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<MissingLfsObject>,
}

/// One entry of an LFS index blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LfsIndexEntry {
    /// sha256 of the object, 64 lowercase hex digits.
    pub oid: String,
    pub size: u64,
    /// The blob holding the object's bytes.
    pub blob: BlobId,
}

/// An LFS object a pointer names but the server did not give.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingLfsObject {
    pub oid: String,
    pub size: u64,
    pub reason: String,
}

/// The metadata documents of a snapshot, one index blob per kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataPart {
    /// Kind name (`pullrequests`, `issues`, `repository`, ...) → its index.
    pub kinds: BTreeMap<String, MetadataKindPart>,
    /// Kinds that could not be read, with the reason (e.g. `needs read:pullrequest`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<MissingKind>,
}

/// One metadata kind of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataKindPart {
    /// Blob with the [`MetadataIndex`].
    pub index: BlobId,
    /// Items in the index.
    pub count: u64,
}

/// A metadata kind that is not in a snapshot, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingKind {
    pub kind: String,
    pub reason: String,
}

/// The index blob of one metadata kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataIndex {
    pub kind: String,
    /// The newest `updated_on` among the items (RFC 3339 as the server gave it): where
    /// the next incremental listing of the kind stops.
    #[serde(default)]
    pub high_water: Option<String>,
    /// Sorted by id.
    pub items: Vec<MetadataItem>,
}

/// One document of a metadata index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataItem {
    pub id: String,
    #[serde(default)]
    pub updated_on: Option<String>,
    /// The document, as canonical JSON.
    pub blob: BlobId,
    /// Files the document refers to (attachments, downloads), stored as blobs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<StoredFile>,
}

/// A file of a metadata document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFile {
    pub name: String,
    pub size: u64,
    pub blob: BlobId,
}

impl Archive {
    /// Stores `value` as a JSON blob (its bytes as serde writes them: for the index
    /// types above, deterministic).
    pub fn put_json<T: Serialize>(&self, value: &T) -> Result<PutOutcome, ArchiveError> {
        let bytes = serde_json::to_vec(value).map_err(|e| ArchiveError::Io {
            path: "(json)".into(),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })?;
        self.put_bytes(&bytes)
    }

    /// [`put_json`](Self::put_json), skipping the store (no request to an object store)
    /// when `value` equals `present`, a value already in the archive (the previous
    /// snapshot's): its bytes, and so its id, are the same.
    pub fn put_json_unless<T: Serialize + PartialEq>(
        &self,
        value: &T,
        present: Option<&T>,
    ) -> Result<PutOutcome, ArchiveError> {
        if present != Some(value) {
            return self.put_json(value);
        }
        let bytes = serde_json::to_vec(value).map_err(|e| ArchiveError::Io {
            path: "(json)".into(),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })?;
        Ok(PutOutcome {
            id: self.blob_id_of(&bytes),
            len: bytes.len() as u64,
            stored_bytes: 0,
            compressed: false,
        })
    }

    /// Reads a JSON blob written by [`put_json`](Self::put_json).
    pub fn read_json<T: DeserializeOwned>(&self, id: &BlobId) -> Result<T, ArchiveError> {
        let bytes = self.read_blob(id)?;
        serde_json::from_slice(&bytes).map_err(|e| ArchiveError::CorruptBlob {
            id: *id,
            path: self.blob_location(id),
            reason: format!("not the JSON expected: {e}"),
        })
    }

    /// The blob holding the LFS object with this sha256, if archived.
    pub fn lfs_blob(&self, oid: &str) -> Result<Option<BlobId>, ArchiveError> {
        self.indexed_blob(super::FileKind::LfsIndex, oid)
    }

    /// Records that the LFS object with sha256 `oid` is stored as blob `id`.
    pub fn record_lfs(&self, oid: &str, id: &BlobId) -> Result<(), ArchiveError> {
        self.record_index(super::FileKind::LfsIndex, oid, id)
    }
}

/// Canonical JSON of a document: parsed and written back with keys sorted and no
/// whitespace, so equal documents are equal bytes (and one blob).
pub fn canonical_json(text: &str) -> Result<Vec<u8>, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_str(text)?;
    serde_json::to_vec(&sort_keys(value))
}

fn sort_keys(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let sorted: BTreeMap<String, Value> =
                map.into_iter().map(|(k, v)| (k, sort_keys(v))).collect();
            Value::Object(sorted.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

impl Archive {
    /// The blobs an index blob names: an LFS index's objects, or a metadata index's
    /// documents and their files (`lfs` says which kind `index` is).
    pub fn blobs_named_by_index(
        &self,
        index: &BlobId,
        lfs: bool,
    ) -> Result<Vec<BlobId>, ArchiveError> {
        Ok(if lfs {
            self.read_json::<Vec<LfsIndexEntry>>(index)?
                .into_iter()
                .map(|e| e.blob)
                .collect()
        } else {
            self.read_json::<MetadataIndex>(index)?
                .items
                .into_iter()
                .flat_map(|item| {
                    std::iter::once(item.blob).chain(item.files.into_iter().map(|f| f.blob))
                })
                .collect()
        })
    }
}
