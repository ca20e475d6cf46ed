//! `export`: a whole snapshot written out as plain files a person or a script can read
//! without reposafe.
//!
//! ```text
//! DIR/repository.git/                      the bare repository (as `restore` writes it), its
//!                                          Git LFS objects in lfs/objects/<oid[0..2]>/<oid[2..4]>/<oid>
//! DIR/wiki.git/                            the wiki, when the snapshot has one
//! DIR/metadata/<kind>/<id>.json            each document, pretty-printed JSON
//! DIR/metadata/<kind>/<id>.files/<name>    its files (issue attachments, downloads)
//! DIR/snapshot.json                        the manifest, what is missing, and which file
//!                                          holds which document
//! ```
//!
//! Kinds, ids and file names become file names by [`safe_name`]: kept as they are when
//! safe (`{uuid}` braces included); otherwise `/`, `\`, control characters and
//! `: * ? " < > |` are replaced by `_`, a name of only dots gets a leading `_`, a long one
//! is cut to 120 bytes, and `~` plus 8 hex digits of the original's BLAKE3 is appended, so
//! two names never meet (compared ignoring case, for case-insensitive file systems).
//! `snapshot.json` maps every file back to its id.
//!
//! `DIR` must be absent or an empty directory, outside the data dir (the same check as a
//! restore's). Every target is checked and every blob found before anything is written;
//! the export is built in a hidden staging directory beside `DIR` and renamed into place
//! when complete, so `DIR` never holds half an export. Every blob is verified against its
//! BLAKE3 id while read.

use super::restore::{
    blob_to_file, lfs_entries, pick_snapshot, refuse_data_dir_overlap, write_error, GitSource,
};
use super::show::kind_index;
use super::{Context, EngineError};
use crate::archive::{MetadataIndex, Snapshot};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// `export ws/slug --to DIR`: a snapshot (latest, `snapshot` id, or newest at or before
/// `at`) written to `to` (an absolute path on the machine that runs the engine).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    pub repository: String,
    #[serde(default)]
    pub connection: Option<String>,
    #[serde(default)]
    pub snapshot: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub at: Option<OffsetDateTime>,
    pub to: String,
}

/// What an export wrote.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportReport {
    pub repository: String,
    pub snapshot: String,
    #[serde(with = "time::serde::rfc3339")]
    pub taken_at: OffsetDateTime,
    pub target: String,
    pub parts: Vec<String>,
    /// Refs of `repository.git`.
    pub refs: u64,
    /// Refs of `wiki.git`, when the snapshot has a wiki.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wiki_refs: Option<u64>,
    pub lfs_objects: u64,
    pub lfs_bytes: u64,
    /// Documents written per metadata kind.
    pub metadata: BTreeMap<String, u64>,
    /// Files of documents written (attachments, downloads).
    pub files: u64,
    /// What the snapshot lacks (also in `snapshot.json`).
    pub missing: Vec<String>,
}

/// `snapshot.json`: the manifest, what is missing, and where each document went.
#[derive(Serialize)]
struct ExportManifest<'a> {
    exported_by: String,
    #[serde(with = "time::serde::rfc3339")]
    exported_at: OffsetDateTime,
    repository: &'a str,
    snapshot: &'a str,
    parts: Vec<&'static str>,
    missing: Vec<String>,
    /// Kind → its directory under `metadata/` and each document's file.
    metadata: BTreeMap<String, ExportedKind>,
    manifest: &'a Snapshot,
}

#[derive(Serialize)]
struct ExportedKind {
    dir: String,
    items: Vec<ExportedItem>,
}

#[derive(Serialize)]
struct ExportedItem {
    id: String,
    updated_on: Option<String>,
    /// Path below `metadata/`.
    file: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    files: Vec<ExportedFile>,
}

#[derive(Serialize)]
struct ExportedFile {
    name: String,
    size: u64,
    /// Path below `metadata/`.
    file: String,
}

/// Exports a snapshot to `req.to` (see the module documentation).
pub fn export(ctx: &Context, req: &ExportRequest) -> Result<ExportReport, EngineError> {
    let to = Path::new(&req.to);
    refuse_data_dir_overlap(&ctx.data_dir, to, "export target")?;
    require_empty(to)?;
    // Prune's sweep waits while the snapshot is read.
    let _archive = ctx.gate()?.shared()?;
    let snap = pick_snapshot(
        ctx,
        &req.repository,
        req.connection.as_deref(),
        req.snapshot.as_deref(),
        req.at,
    )?;
    // Everything read and checked before anything is written.
    let (main, wiki) = GitSource::of(ctx, &snap)?;
    let lfs = lfs_entries(ctx, &snap)?;
    let kinds = metadata_indexes(ctx, &snap)?;

    let staging = staging_dir(to)?;
    let root = staging.path();
    let (_, lfs_objects) =
        main.write_with_lfs(&root.join("repository.git"), snap.lfs.as_ref(), false)?;
    if let Some(wiki) = &wiki {
        wiki.write(&root.join("wiki.git"), false)?;
    }
    let (exported, files) = write_metadata(ctx, &root.join("metadata"), &kinds)?;
    let manifest = ExportManifest {
        exported_by: format!("reposafe {}", env!("CARGO_PKG_VERSION")),
        exported_at: OffsetDateTime::now_utc(),
        repository: &snap.repository.full_name,
        snapshot: snap.id.as_str(),
        parts: snap.part_names(),
        missing: snap.missing(),
        metadata: exported,
        manifest: &snap,
    };
    write_new(&root.join("snapshot.json"), &to_pretty(&manifest)?)?;
    crate::git::sync_tree(root)?;
    move_into_place(staging, to)?;
    Ok(ExportReport {
        repository: snap.repository.full_name.clone(),
        snapshot: snap.id.to_string(),
        taken_at: snap.taken_at,
        target: to.display().to_string(),
        parts: snap.part_names().iter().map(|p| p.to_string()).collect(),
        refs: main.refs.len() as u64,
        wiki_refs: wiki.map(|w| w.refs.len() as u64),
        lfs_objects,
        lfs_bytes: lfs.iter().map(|e| e.size).sum(),
        metadata: kinds
            .iter()
            .map(|(k, i)| (k.clone(), i.items.len() as u64))
            .collect(),
        files,
        missing: snap.missing(),
    })
}

/// Refuses a target that exists and is not an empty directory: an export replaces nothing.
fn require_empty(to: &Path) -> Result<(), EngineError> {
    let refused = |what: &str| {
        Err(EngineError::Invalid(format!(
            "export target {} {what}; an export is written into an absent or empty directory \
             and never replaces anything: choose another directory",
            to.display()
        )))
    };
    match fs::symlink_metadata(to) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(EngineError::Invalid(format!(
            "export target {} cannot be inspected: {e}",
            to.display()
        ))),
        Ok(m) if m.is_dir() => match fs::read_dir(to).map(|mut d| d.next().is_none()) {
            Ok(true) => Ok(()),
            Ok(false) => refused("is not empty"),
            Err(e) => Err(EngineError::Invalid(format!(
                "export target {} cannot be read: {e}",
                to.display()
            ))),
        },
        Ok(_) => refused("exists and is not a directory"),
    }
}

/// Every metadata kind's index, each document's and file's blob present.
fn metadata_indexes(
    ctx: &Context,
    snap: &Snapshot,
) -> Result<Vec<(String, MetadataIndex)>, EngineError> {
    let kinds: Vec<&String> = snap.metadata.iter().flat_map(|m| m.kinds.keys()).collect();
    let mut out = Vec::with_capacity(kinds.len());
    for kind in kinds {
        let index = kind_index(ctx, snap, kind)?;
        let blobs = index
            .items
            .iter()
            .flat_map(|i| std::iter::once(&i.blob).chain(i.files.iter().map(|f| &f.blob)));
        ctx.archive()?.require_blobs(blobs)?;
        out.push((kind.clone(), index));
    }
    Ok(out)
}

/// Writes each kind's documents and files under `dir`; returns where each went and how
/// many files were written.
fn write_metadata(
    ctx: &Context,
    dir: &Path,
    kinds: &[(String, MetadataIndex)],
) -> Result<(BTreeMap<String, ExportedKind>, u64), EngineError> {
    let mut exported = BTreeMap::new();
    let mut files = 0;
    let mut kind_names = Names::default();
    for (kind, index) in kinds {
        let kind_dir = kind_names.take(kind);
        let base = dir.join(&kind_dir);
        create_dir(&base)?;
        let mut ids = Names::default();
        let mut items = Vec::with_capacity(index.items.len());
        for item in &index.items {
            let stem = ids.take(&item.id);
            let document: serde_json::Value = ctx.archive()?.read_json(&item.blob)?;
            write_new(&base.join(format!("{stem}.json")), &to_pretty(&document)?)?;
            let mut written = Vec::with_capacity(item.files.len());
            if !item.files.is_empty() {
                let files_dir = base.join(format!("{stem}.files"));
                create_dir(&files_dir)?;
                let mut names = Names::default();
                for f in &item.files {
                    let name = names.take(&f.name);
                    let size = blob_to_file(ctx, &f.blob, &files_dir.join(&name))?;
                    if size != f.size {
                        return Err(EngineError::Internal(format!(
                            "file {:?} of {kind} {} (blob {}) has {size} bytes, its index says {}",
                            f.name, item.id, f.blob, f.size
                        )));
                    }
                    written.push(ExportedFile {
                        name: f.name.clone(),
                        size,
                        file: format!("{kind_dir}/{stem}.files/{name}"),
                    });
                    files += 1;
                }
            }
            items.push(ExportedItem {
                id: item.id.clone(),
                updated_on: item.updated_on.clone(),
                file: format!("{kind_dir}/{stem}.json"),
                files: written,
            });
        }
        exported.insert(
            kind.clone(),
            ExportedKind {
                dir: kind_dir,
                items,
            },
        );
    }
    Ok((exported, files))
}

/// The file names already given in one directory (compared ignoring case).
#[derive(Default)]
struct Names(HashSet<String>);

impl Names {
    /// A safe file name for `name` that no earlier name of this directory has.
    fn take(&mut self, name: &str) -> String {
        let mut out = safe_name(name);
        let mut n = 2;
        while !self.0.insert(out.to_lowercase()) {
            out = format!("{}~{n}", safe_name(name));
            n += 1;
        }
        out
    }
}

/// The longest name kept as it is (in bytes); longer ones are cut, leaving room for the
/// suffixes `~<hash>`, `.json`, `.files` within the usual 255-byte limit.
const MAX_NAME: usize = 120;

/// `name` as a file name (see the module documentation): unchanged when safe, else with
/// unsafe characters replaced by `_` and `~<8 hex of its BLAKE3>` appended.
pub fn safe_name(name: &str) -> String {
    let unsafe_char = |c: char| {
        c.is_control() || matches!(c, '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|')
    };
    let mut out: String = name
        .chars()
        .map(|c| if unsafe_char(c) { '_' } else { c })
        .collect();
    if out.chars().all(|c| c == '.') {
        out.insert(0, '_');
    }
    if out.len() > MAX_NAME {
        let mut cut = MAX_NAME;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    if out != name {
        let hash = blake3::hash(name.as_bytes()).to_hex();
        out.push('~');
        out.push_str(&hash[..8]);
    }
    out
}

/// A hidden staging directory beside `to`, removed unless moved into place; leftovers of
/// an interrupted earlier export of the same name are removed first.
fn staging_dir(to: &Path) -> Result<tempfile::TempDir, EngineError> {
    let parent = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    create_dir(&parent)?;
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into());
    let prefix = format!(".{name}.reposafe-export-");
    crate::git::remove_leftovers(&parent, &prefix);
    tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(&parent)
        .map_err(|e| write_error(&parent, e))
}

/// Renames the finished export to `to` (absent, or an empty directory, which it replaces).
fn move_into_place(staging: tempfile::TempDir, to: &Path) -> Result<(), EngineError> {
    let existed = fs::symlink_metadata(to).is_ok();
    if existed {
        // Still empty (checked before): remove_dir refuses anything else.
        fs::remove_dir(to).map_err(|e| write_error(to, e))?;
    }
    let staged = staging.keep();
    if let Err(e) = fs::rename(&staged, to) {
        let _ = fs::remove_dir_all(&staged);
        if existed {
            let _ = fs::create_dir(to);
        }
        return Err(write_error(to, e));
    }
    if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::git::sync_file(parent)?;
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), EngineError> {
    fs::create_dir_all(dir).map_err(|e| write_error(dir, e))
}

fn to_pretty<T: Serialize>(value: &T) -> Result<Vec<u8>, EngineError> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| EngineError::Internal(format!("cannot encode JSON: {e}")))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Writes a new file (never over an existing one).
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), EngineError> {
    use std::io::Write;
    fs::File::create_new(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| write_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::snapshot_fixture::{Doc, Fixture, Parts};
    use reposafe_testkit::gitutil::{fsck, refs_of};

    fn request(to: &Path) -> ExportRequest {
        ExportRequest {
            repository: "ws/app".into(),
            connection: None,
            snapshot: None,
            at: None,
            to: to.display().to_string(),
        }
    }

    fn json_file(path: &Path) -> serde_json::Value {
        let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).expect("json")
    }

    #[test]
    fn an_export_writes_every_part_as_plain_files() {
        let f = Fixture::new();
        let full = f.full();
        let to = f.out("export");
        let r = export(&f.ctx, &request(&to)).expect("export");
        assert_eq!(r.parts, ["git", "wiki", "lfs", "metadata"]);
        assert_eq!((r.lfs_objects, r.files), (2, 1));
        assert_eq!(r.missing, ["pipeline-variables: needs pipeline:variable"]);

        let repo = to.join("repository.git");
        assert_eq!(refs_of(&repo), full.refs);
        fsck(&repo);
        for object in &full.lfs {
            let oid = reposafe_testkit::lfs::sha256_hex(object);
            let path = repo.join(format!("lfs/objects/{}/{}/{oid}", &oid[0..2], &oid[2..4]));
            assert_eq!(&fs::read(&path).expect("lfs object"), object);
        }
        assert_eq!(refs_of(&to.join("wiki.git")), full.wiki_refs);

        let meta = to.join("metadata");
        let prs = crate::engine::snapshot_fixture::pull_requests();
        for doc in &prs {
            assert_eq!(
                json_file(&meta.join(format!("pullrequests/{}.json", doc.id))),
                doc.json
            );
        }
        let text = fs::read_to_string(meta.join("pullrequests/1.json")).expect("read");
        assert!(text.contains("\n  \""), "pretty-printed: {text}");
        let attachment = fs::read(meta.join("issues/7.files/log.txt")).expect("attachment");
        assert_eq!(attachment, full.attachment);
        assert!(meta.join("repository/repository.json").is_file());

        let manifest = json_file(&to.join("snapshot.json"));
        assert_eq!(manifest["snapshot"], full.snap.id.as_str());
        assert_eq!(
            manifest["missing"][0],
            "pipeline-variables: needs pipeline:variable"
        );
        assert_eq!(
            manifest["metadata"]["issues"]["items"][0]["files"][0]["file"],
            "issues/7.files/log.txt"
        );
        assert_eq!(manifest["manifest"]["format"], 2);
        let mut names: Vec<String> = fs::read_dir(f.tmp.path())
            .expect("list")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["data", "export"],
            "no staging left beside the export"
        );
    }

    #[test]
    fn ids_and_file_names_become_safe_file_names_inside_the_export() {
        let f = Fixture::new();
        let doc = |id: &'static str, files: Vec<(&'static str, Vec<u8>)>| Doc {
            id,
            updated_on: None,
            json: serde_json::json!({ "id": id }),
            files,
        };
        let metadata = f.metadata(
            vec![(
                "../kind",
                vec![
                    doc("{0b1c-2d}", vec![]),
                    doc("../../escape", vec![("../../../x", b"a".to_vec())]),
                    doc("a/b", vec![]),
                    doc("a_b", vec![]),
                    doc("A_B", vec![]),
                    doc("..", vec![]),
                    doc(
                        "tab\there",
                        vec![("con:*?", b"b".to_vec()), ("con_", b"c".to_vec())],
                    ),
                ],
            )],
            &[],
        );
        let parts = Parts {
            metadata: Some(metadata),
            ..Parts::default()
        };
        f.write(1_800_000_000, parts);
        let to = f.out("export");
        export(&f.ctx, &request(&to)).expect("export");
        let manifest = json_file(&to.join("snapshot.json"));
        let kind = &manifest["metadata"]["../kind"];
        let dir = kind["dir"].as_str().expect("dir");
        assert!(dir.starts_with(".._kind~") && !dir.contains('/'), "{dir}");
        let mut seen = HashSet::new();
        for item in kind["items"].as_array().expect("items") {
            let file = item["file"].as_str().expect("file");
            assert!(seen.insert(file.to_lowercase()), "{file} twice");
            let (d, name) = file.split_once('/').expect("dir/name");
            assert_eq!(d, dir);
            assert!(
                !name.contains(['/', '\t']) && !name.starts_with("..."),
                "{name}"
            );
            let written = json_file(&to.join("metadata").join(file));
            assert_eq!(written["id"], item["id"], "{file}");
            for f in item["files"].as_array().into_iter().flatten() {
                let path = to.join("metadata").join(f["file"].as_str().expect("file"));
                assert!(
                    path.starts_with(to.join("metadata").join(dir)),
                    "{}",
                    path.display()
                );
                assert_eq!(fs::metadata(&path).expect("file").len(), 1);
            }
        }
        assert!(to
            .join("metadata")
            .join(dir)
            .join("{0b1c-2d}.json")
            .is_file());
        assert!(!f.tmp.path().join("escape.json").exists());
    }

    #[test]
    fn safe_names() {
        assert_eq!(safe_name("{0b1c-2d}"), "{0b1c-2d}");
        assert_eq!(safe_name("issue 12.txt"), "issue 12.txt");
        let hash = |s: &str| blake3::hash(s.as_bytes()).to_hex()[..8].to_string();
        assert_eq!(safe_name("a/b"), format!("a_b~{}", hash("a/b")));
        assert_eq!(safe_name(".."), format!("_..~{}", hash("..")));
        assert_eq!(safe_name(""), format!("_~{}", hash("")));
        assert_eq!(
            safe_name("x\u{0}y\nz"),
            format!("x_y_z~{}", hash("x\u{0}y\nz"))
        );
        let long = "é".repeat(100);
        let safe = safe_name(&long);
        assert!(
            safe.len() <= MAX_NAME + 9 && safe.ends_with(&hash(&long)),
            "{safe}"
        );
        let mut names = Names::default();
        assert_eq!(names.take("Readme"), "Readme");
        assert_eq!(names.take("README"), "README~2");
    }

    #[test]
    fn an_export_never_writes_into_a_used_directory_or_the_data_dir() {
        let f = Fixture::new();
        f.full();
        let used = f.out("used");
        fs::create_dir(&used).expect("mkdir");
        fs::write(used.join("keep.txt"), b"mine").expect("write");
        let err = export(&f.ctx, &request(&used)).expect_err("not empty");
        assert!(err.to_string().contains("is not empty"), "{err}");
        assert_eq!(fs::read_dir(&used).expect("list").count(), 1);

        let file = f.out("file");
        fs::write(&file, b"x").expect("write");
        let err = export(&f.ctx, &request(&file)).expect_err("a file");
        assert!(err.to_string().contains("not a directory"), "{err}");

        for inside in [
            f.out("data"),
            f.out("data").join("exports"),
            f.tmp.path().to_path_buf(),
        ] {
            let err = export(&f.ctx, &request(&inside)).expect_err("data dir");
            assert!(err.to_string().contains("data dir"), "{err}");
        }
        assert!(!f.out("data").join("exports").exists());

        let empty = f.out("empty");
        fs::create_dir(&empty).expect("mkdir");
        export(&f.ctx, &request(&empty)).expect("an empty directory is fine");
        assert!(empty.join("snapshot.json").is_file());
    }
}
