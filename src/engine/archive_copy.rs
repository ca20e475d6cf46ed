//! `reposafe archive copy --to LOCATION`: a verified, resumable copy of the data dir's
//! archive into an S3 bucket or a directory — to move the archive (then `archive init`
//! the copy) or to keep a second one (3-2-1). The copying itself is
//! [`Archive::copy_to`]; this module opens both ends, keeps prune away from the source
//! (the archive gate) and, on shared storage, from the destination (a `use-` lease),
//! and keeps the journal of blobs verified in each destination
//! (`<data>/copies/<hash of the destination>.verified`) so that a resumed or repeated
//! copy reads back only what it has not checked yet.
//!
//! A destination can be saved under a name (`--save-as NAME`:
//! `<data>/copy-targets/NAME.json`, its S3 secret sealed by the vault like the
//! archive's own location): `archive copy --target NAME` and a plan's `copy_to` (a copy
//! after each successful run, the 3-2-1 rule) use it without credentials again.

use super::archive_gate::ArchiveGate;
use super::archive_location::{self, S3Location, StoredLocation};
use super::{Context, EngineError};
pub use crate::archive::CopyProgress;
use crate::archive::{Archive, Backend, BlobId, CopyJournal, CopyTally, LocalBackend};
use crate::vault::Vault;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Blobs copied at once.
const WORKERS: usize = 4;

const TARGETS_DIR: &str = "copy-targets";

/// Where `archive copy` writes.
#[derive(Debug)]
pub enum CopyDestination {
    /// An S3 bucket and prefix.
    S3(S3Location),
    /// A local directory (absent, empty, or holding a copy made before).
    Directory(PathBuf),
    /// A destination saved by an earlier `archive copy --save-as NAME`.
    Saved(String),
}

/// `archive copy`.
#[derive(Debug)]
pub struct ArchiveCopy {
    pub to: CopyDestination,
    /// Save the destination under this name (for `--target` and plans' `copy_to`).
    pub save_as: Option<String>,
}

/// A saved copy target as `archive show` lists it (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopyTargetInfo {
    pub name: String,
    pub location: String,
}

/// `<data>/copy-targets/NAME.json`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum SavedTarget {
    Directory { path: PathBuf },
    S3 { location: StoredLocation },
}

impl SavedTarget {
    fn location(&self) -> String {
        match self {
            SavedTarget::Directory { path } => path.display().to_string(),
            SavedTarget::S3 { location } => location.url().to_string(),
        }
    }
}

/// What [`copy_archive`] did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchiveCopyReport {
    pub from: String,
    pub to: String,
    #[serde(flatten)]
    pub tally: CopyTally,
    pub seconds: f64,
}

/// Copies the data dir's archive to `req.to`; see the module documentation. The data
/// dir must not be in use by another process (its state database is held meanwhile).
pub fn copy_archive(
    data_dir: &Path,
    req: ArchiveCopy,
    progress: &dyn CopyProgress,
) -> Result<ArchiveCopyReport, EngineError> {
    if let Some(name) = &req.save_as {
        check_target_name(name)?;
    }
    super::data_dir::private_umask();
    // Holding the state database keeps every other reposafe process (and its prune) out.
    let state = crate::state::State::open(data_dir)?;
    let vault = Vault::open_checked(data_dir, &super::data_dir::sealed_credentials(&state)?)?;
    let (backend, record) = destination(data_dir, &vault, req.to)?;
    let source = super::archive_keys::open_archive(data_dir, &vault)?;
    let source_gate = ArchiveGate::for_archive(&source, data_dir)?;
    // Checked (and made an archive when empty) before it is saved under a name.
    let dest = source.copy_target(backend)?;
    if let (Some(name), Some(record)) = (&req.save_as, &record) {
        let path = target_file(data_dir, name);
        std::fs::create_dir_all(data_dir.join(TARGETS_DIR)).map_err(|e| EngineError::DataDir {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        archive_location::write_json_atomically(&path, record)?;
    }
    run_copy(data_dir, &source, &source_gate, &dest, progress)
}

/// Copies the archive of a running appliance (`ctx`) to the saved target `name` (a
/// plan's `copy_to`).
pub(crate) fn copy_to_saved(
    ctx: &Context,
    name: &str,
    progress: &dyn CopyProgress,
) -> Result<ArchiveCopyReport, EngineError> {
    let (backend, _) = destination(
        &ctx.data_dir,
        &ctx.vault,
        CopyDestination::Saved(name.to_string()),
    )?;
    let source = ctx.archive.without_cache();
    let dest = source.copy_target(backend)?;
    run_copy(&ctx.data_dir, &source, &ctx.gate, &dest, progress)
}

/// Copies `source` (prune kept away by `source_gate`) to `dest`.
fn run_copy(
    data_dir: &Path,
    source: &Archive,
    source_gate: &ArchiveGate,
    dest: &Archive,
    progress: &dyn CopyProgress,
) -> Result<ArchiveCopyReport, EngineError> {
    let started = Instant::now();
    let _source_use = source_gate.shared()?;
    let dest_gate = ArchiveGate::for_archive(dest, data_dir)?;
    let _dest_use = dest_gate.shared()?;
    let journal = Journal::open(data_dir, &dest.location())?;
    let tally = source.copy_to(dest, &journal, progress, WORKERS)?;
    journal.flush()?;
    Ok(ArchiveCopyReport {
        from: source.location().display().to_string(),
        to: dest.location().display().to_string(),
        tally,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Whether a copy target of this name is saved.
pub(crate) fn target_exists(data_dir: &Path, name: &str) -> bool {
    check_target_name(name).is_ok() && target_file(data_dir, name).is_file()
}

/// The saved copy targets, by name.
pub(crate) fn saved_targets(data_dir: &Path) -> Result<Vec<CopyTargetInfo>, EngineError> {
    let dir = data_dir.join(TARGETS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(EngineError::DataDir {
                path: dir,
                reason: e.to_string(),
            })
        }
    };
    let mut targets = Vec::new();
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(name) = file.strip_suffix(".json") else {
            continue;
        };
        let saved = read_target(data_dir, name)?;
        targets.push(CopyTargetInfo {
            name: name.to_string(),
            location: saved.location(),
        });
    }
    targets.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(targets)
}

fn target_file(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(TARGETS_DIR).join(format!("{name}.json"))
}

fn check_target_name(name: &str) -> Result<(), EngineError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(EngineError::Field {
            field: "copy_target".into(),
            message: format!("{name:?} is not a copy target name: 1 to 64 letters, digits, - or _"),
        })
    }
}

fn read_target(data_dir: &Path, name: &str) -> Result<SavedTarget, EngineError> {
    check_target_name(name)?;
    let path = target_file(data_dir, name);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(EngineError::NotFound(format!(
                "no copy target named {name}: save one with `reposafe archive copy --to LOCATION --save-as {name}`"
            )))
        }
        Err(e) => {
            return Err(EngineError::DataDir {
                path,
                reason: e.to_string(),
            })
        }
    };
    serde_json::from_str(&text).map_err(|e| EngineError::DataDir {
        path,
        reason: e.to_string(),
    })
}

/// The backend of a destination (a bucket is checked to answer and to honour
/// conditional writes first), and its record for saving under a name.
fn destination(
    data_dir: &Path,
    vault: &Vault,
    to: CopyDestination,
) -> Result<(Arc<dyn Backend>, Option<SavedTarget>), EngineError> {
    match to {
        CopyDestination::S3(loc) => {
            let config = archive_location::s3_config(&loc)?;
            let s3 = archive_location::s3_backend(data_dir, config.clone())?;
            archive_location::check_store(&s3)?;
            let location = StoredLocation::seal(vault, &config, None)?;
            Ok((s3, Some(SavedTarget::S3 { location })))
        }
        CopyDestination::Directory(dir) => {
            let path = copy_directory(data_dir, &dir)?;
            let backend = Arc::new(LocalBackend::new(path.clone()));
            Ok((backend, Some(SavedTarget::Directory { path })))
        }
        CopyDestination::Saved(name) => match read_target(data_dir, &name)? {
            SavedTarget::Directory { path } => Ok((
                Arc::new(LocalBackend::new(copy_directory(data_dir, &path)?)),
                None,
            )),
            SavedTarget::S3 { location } => {
                let config = location.open(vault, &target_file(data_dir, &name))?;
                let s3 = archive_location::s3_backend(data_dir, config)?;
                archive_location::check_store(&s3)?;
                Ok((s3, None))
            }
        },
    }
}

/// `dir` made absolute, refused inside the data dir.
fn copy_directory(data_dir: &Path, dir: &Path) -> Result<PathBuf, EngineError> {
    let field = |message: String| EngineError::Field {
        field: "to".into(),
        message,
    };
    if dir.as_os_str().is_empty() {
        return Err(field("give a directory or s3://BUCKET/PREFIX".into()));
    }
    let absolute =
        std::path::absolute(dir).map_err(|e| field(format!("{}: {e}", dir.display())))?;
    let data =
        std::path::absolute(data_dir).map_err(|e| field(format!("{}: {e}", data_dir.display())))?;
    if absolute.starts_with(&data) {
        return Err(field(format!(
            "{} is inside the data dir {}; a copy belongs elsewhere (another disk)",
            absolute.display(),
            data.display()
        )));
    }
    Ok(absolute)
}

/// The blobs verified in one destination, kept in `<data>/copies/`.
struct Journal {
    verified: HashSet<BlobId>,
    path: PathBuf,
    appended: Mutex<std::io::BufWriter<std::fs::File>>,
}

impl Journal {
    fn open(data_dir: &Path, destination: &Path) -> Result<Journal, EngineError> {
        let dir = data_dir.join("copies");
        let name = blake3::hash(destination.to_string_lossy().as_bytes()).to_hex();
        let path = dir.join(format!("{}.verified", &name[..16]));
        let io = |e: std::io::Error| EngineError::DataDir {
            path: path.clone(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let verified = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .filter_map(|l| BlobId::parse(l.trim()).ok())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashSet::new(),
            Err(e) => return Err(io(e)),
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        Ok(Journal {
            verified,
            appended: Mutex::new(std::io::BufWriter::new(file)),
            path,
        })
    }

    fn flush(&self) -> Result<(), EngineError> {
        let mut out = self.appended.lock().unwrap_or_else(|p| p.into_inner());
        out.flush().map_err(|e| EngineError::DataDir {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }
}

impl CopyJournal for Journal {
    fn is_verified(&self, id: &BlobId) -> bool {
        self.verified.contains(id)
    }

    fn verified(&self, id: &BlobId) {
        // Best effort: a lost line only means the blob is read back once more.
        let mut out = self.appended.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "{}", id.to_hex());
    }
}
