//! `reposafe archive copy --to LOCATION`: a verified, resumable copy of the data dir's
//! archive into an S3 bucket or a directory — to move the archive (then `archive init`
//! the copy) or to keep a second one (3-2-1). The copying itself is
//! [`Archive::copy_to`]; this module opens both ends, holds a `use-` lease on a shared
//! destination (so another appliance's prune there waits), keeps prune away from the
//! source one blob at a time (the archive gate), and keeps the journal of blobs verified
//! in each destination (`<data>/copies/<hash of the destination>.verified`) so that a
//! resumed or repeated copy reads back only what it has not checked yet.
//!
//! A destination can be saved under a name (`--save-as NAME`:
//! `<data>/copy-targets/NAME.json`, its S3 secret sealed by the vault like the
//! archive's own location): `archive copy --target NAME` and a plan's `copy_to` (a copy
//! after each successful run, the 3-2-1 rule) use it without credentials again.

use super::archive_gate::{ArchiveGate, SharedGuard};
use super::archive_location::{self, S3Location, StoredLocation};
use super::{Context, EngineError};
use crate::archive::{
    Archive, ArchiveError, Backend, BlobId, CopySession, CopyTally, LocalBackend, S3Config,
};
use crate::vault::Vault;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Blobs copied at once.
const WORKERS: usize = 4;

const TARGETS_DIR: &str = "copy-targets";

/// What a copy reports as it goes (a CLI bar, a job's notice).
pub trait CopyProgress: Sync {
    /// What is left to do: blobs to copy or check and their stored bytes.
    fn planned(&self, blobs: u64, bytes: u64);
    /// One blob of `bytes` copied or checked.
    fn blob_done(&self, bytes: u64);
    /// Whether to stop (a cancelled job); what was copied stays, a new copy resumes.
    fn cancelled(&self) -> bool {
        false
    }
}

/// A copy that shows nothing.
pub struct NoCopyProgress;
impl CopyProgress for NoCopyProgress {
    fn planned(&self, _blobs: u64, _bytes: u64) {}
    fn blob_done(&self, _bytes: u64) {}
}

/// A copy's progress as data: what the daemon streams to a CLI that copies through it
/// (`POST /api/v1/archive/copy` with `Accept: text/event-stream`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyEvent {
    Planned {
        blobs: u64,
        bytes: u64,
    },
    /// Stored bytes of the blobs copied or checked since the last event.
    Copied {
        bytes: u64,
    },
}

impl CopyEvent {
    /// Hands the event to `progress`.
    pub fn report_to(self, progress: &dyn CopyProgress) {
        match self {
            CopyEvent::Planned { blobs, bytes } => progress.planned(blobs, bytes),
            CopyEvent::Copied { bytes } => progress.blob_done(bytes),
        }
    }
}

/// A [`CopyProgress`] that hands its steps to a function as [`CopyEvent`]s, the
/// copied bytes gathered over [`CopyEvents::EVERY`] (a blob at a time would be
/// thousands of events).
pub struct CopyEvents<F> {
    send: F,
    /// Bytes not sent yet, and when the last event went.
    pending: Mutex<(u64, Instant)>,
}

impl<F: Fn(CopyEvent) + Sync> CopyEvents<F> {
    const EVERY: Duration = Duration::from_millis(250);

    pub fn new(send: F) -> CopyEvents<F> {
        CopyEvents {
            send,
            pending: Mutex::new((0, Instant::now())),
        }
    }
}

impl<F: Fn(CopyEvent) + Sync> CopyProgress for CopyEvents<F> {
    fn planned(&self, blobs: u64, bytes: u64) {
        (self.send)(CopyEvent::Planned { blobs, bytes })
    }

    fn blob_done(&self, bytes: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.0 += bytes;
        if pending.1.elapsed() >= Self::EVERY {
            let bytes = std::mem::take(&mut pending.0);
            pending.1 = Instant::now();
            (self.send)(CopyEvent::Copied { bytes });
        }
    }
}

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

/// What [`copy_archive`] did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchiveCopyReport {
    pub from: String,
    pub to: String,
    #[serde(flatten)]
    pub tally: CopyTally,
    pub seconds: f64,
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

    fn identity(&self) -> String {
        match self {
            SavedTarget::Directory { path } => path.display().to_string(),
            SavedTarget::S3 { location } => location.identity(),
        }
    }
}

/// A destination opened: its backend, what tells it from other locations, and its
/// record for saving under a name.
struct Destination {
    backend: Arc<dyn Backend>,
    identity: String,
    record: SavedTarget,
}

/// Copies the data dir's archive to `req.to`; see the module documentation. The data
/// dir must not be in use by another process (its state database is held meanwhile).
pub fn copy_archive(
    data_dir: &Path,
    req: ArchiveCopy,
    progress: &dyn CopyProgress,
) -> Result<ArchiveCopyReport, EngineError> {
    if let Some(name) = &req.save_as {
        check_target_name(name, "save_as")?;
    }
    super::data_dir::private_umask();
    // Holding the state database keeps every other reposafe process (and its prune) out.
    let state = crate::state::State::open(data_dir)?;
    let vault = Vault::open_checked(data_dir, &super::data_dir::sealed_credentials(&state)?)?;
    let source = super::archive_keys::open_archive(data_dir, &vault)?;
    let source_gate = ArchiveGate::for_archive(&source, data_dir)?;
    let from = Origin {
        data_dir,
        vault: &vault,
        archive: &source,
        gate: &source_gate,
    };
    copy_from(&from, req.to, req.save_as.as_deref(), progress)
}

/// The destination a copy request through the API names: exactly one of a saved
/// target (not saved again), an absolute directory (the daemon's working directory is
/// nobody's business) or an S3 location.
pub(crate) fn requested_destination(
    req: super::service::CopyRequest,
) -> Result<CopyDestination, EngineError> {
    let field = |field: &str, message: String| EngineError::Field {
        field: field.into(),
        message,
    };
    match (req.target, req.to, req.s3) {
        (Some(_), None, None) if req.save_as.is_some() => Err(field(
            "save_as",
            "a saved target is saved already: give save_as with a directory or an S3 location"
                .into(),
        )),
        (Some(name), None, None) => Ok(CopyDestination::Saved(name)),
        (None, Some(dir), None) if dir.is_absolute() => Ok(CopyDestination::Directory(dir)),
        (None, Some(dir), None) => Err(field(
            "to",
            format!(
                "{} is not an absolute directory path: the daemon copies to a directory given as /path/to/dir",
                dir.display()
            ),
        )),
        (None, None, Some(location))
            if location.access_key_id.is_none() || location.secret_access_key.is_none() =>
        {
            Err(field(
                "s3",
                "give access_key_id and secret_access_key: the appliance lends its own S3 keys to no location named in a request (save a target with its keys once, then copy to `target`)".into(),
            ))
        }
        (None, None, Some(location)) => Ok(CopyDestination::S3(location)),
        _ => Err(field(
            "to",
            "give one destination: a saved target (`target`), a directory (`to`) or an S3 location (`s3`)"
                .into(),
        )),
    }
}

/// Copies the archive of a running appliance (`ctx`) to `to` (asked through its API,
/// or a plan's `copy_to`), saving the destination as `save_as` when given.
pub(crate) fn copy_in_process(
    ctx: &Context,
    to: CopyDestination,
    save_as: Option<&str>,
    progress: &dyn CopyProgress,
) -> Result<ArchiveCopyReport, EngineError> {
    let source = ctx.archive()?.without_cache();
    let from = Origin {
        data_dir: &ctx.data_dir,
        vault: &ctx.vault,
        archive: &source,
        gate: ctx.gate()?,
    };
    copy_from(&from, to, save_as, progress)
}

/// The appliance a copy reads from.
struct Origin<'a> {
    data_dir: &'a Path,
    vault: &'a Vault,
    archive: &'a Archive,
    gate: &'a ArchiveGate,
}

/// Copies `from`'s archive to `to`, saving the destination as `save_as` (after it
/// opened, before anything is copied) when given.
fn copy_from(
    from: &Origin<'_>,
    to: CopyDestination,
    save_as: Option<&str>,
    progress: &dyn CopyProgress,
) -> Result<ArchiveCopyReport, EngineError> {
    if let Some(name) = save_as {
        check_target_name(name, "save_as")?;
    }
    let to = destination(from.data_dir, from.vault, to)?;
    if let Some(name) = save_as {
        refuse_renaming(from.data_dir, name, &to)?;
    }
    let dest = from.archive.copy_target(to.backend.clone())?;
    if let Some(name) = save_as {
        save_target(from.data_dir, name, &to.record)?;
    }
    run_copy(
        from.data_dir,
        from.archive,
        from.gate,
        &dest,
        &to.identity,
        progress,
    )
}

/// Refuses a destination that is the data dir's archive, inside it or around it.
fn refuse_the_archive_itself(data_dir: &Path, identity: &str) -> Result<(), EngineError> {
    let current = archive_location::current_identity(data_dir)?;
    if archive_location::overlapping(&current, identity) {
        return Err(EngineError::Field {
            field: "to".into(),
            message: format!(
                "{identity} is this data dir's archive ({current}), or inside it, or holds it"
            ),
        });
    }
    Ok(())
}

/// Copies `source` (its sweep kept away by `source_gate`, blob by blob) to `dest`,
/// holding a `use-` lease on `dest` when it is shared.
fn run_copy(
    data_dir: &Path,
    source: &Archive,
    source_gate: &ArchiveGate,
    dest: &Archive,
    identity: &str,
    progress: &dyn CopyProgress,
) -> Result<ArchiveCopyReport, EngineError> {
    let started = Instant::now();
    // One copy to a destination at a time in this process (two plans may share one).
    let one_at_a_time = destination_lock(identity);
    let _only_copy = one_at_a_time.lock().unwrap_or_else(|p| p.into_inner());
    // The destination's lease first: that wait (another appliance pruning there) holds
    // nothing of the source.
    let dest_gate = ArchiveGate::for_archive(dest, data_dir)?;
    let dest_use = dest_gate.shared()?;
    let session = Session {
        journal: Journal::open(data_dir, identity)?,
        progress,
        gate: source_gate,
        source_location: source.location(),
        dest_use: &dest_use,
        dest_location: dest.location(),
    };
    let tally = source.copy_to(dest, &session, WORKERS)?;
    if let Err(e) = session.journal.flush() {
        // The copy is whole; only the record that spares a re-read is short.
        tracing::warn!("{e}");
    }
    Ok(ArchiveCopyReport {
        from: source.location().display().to_string(),
        to: dest.location().display().to_string(),
        tally,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The lock that keeps copies to the destination `identity` one at a time.
fn destination_lock(identity: &str) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    locks.entry(identity.to_string()).or_default().clone()
}

/// What [`Archive::copy_to`] is given: the journal, the progress, the source's gate
/// and the hold on the destination.
struct Session<'a> {
    journal: Journal,
    progress: &'a dyn CopyProgress,
    gate: &'a ArchiveGate,
    source_location: PathBuf,
    dest_use: &'a SharedGuard<'a>,
    dest_location: PathBuf,
}

impl CopySession for Session<'_> {
    fn is_verified(&self, id: &BlobId) -> bool {
        self.journal.verified.contains(id)
    }

    fn verified(&self, id: &BlobId) {
        self.journal.append(id);
    }

    fn planned(&self, blobs: u64, bytes: u64) {
        self.progress.planned(blobs, bytes);
    }

    fn blob_done(&self, bytes: u64) {
        self.progress.blob_done(bytes);
    }

    fn guarded(
        &self,
        work: &mut dyn FnMut() -> Result<(), ArchiveError>,
    ) -> Result<(), ArchiveError> {
        let _use = self.gate.shared().map_err(|e| ArchiveError::Copy {
            path: self.source_location.clone(),
            reason: format!("cannot keep prune away from the archive being copied: {e}"),
        })?;
        work()
    }

    fn cancelled(&self) -> bool {
        self.progress.cancelled()
    }

    fn destination_kept(&self) -> Result<(), ArchiveError> {
        self.dest_use.still_valid().map_err(|e| ArchiveError::Copy {
            path: self.dest_location.clone(),
            reason: e.to_string(),
        })
    }
}

/// Whether a copy target of this name is saved.
pub(crate) fn target_exists(data_dir: &Path, name: &str) -> bool {
    check_target_name(name, "copy_to").is_ok() && target_file(data_dir, name).is_file()
}

/// The saved copy targets, by name (a file that cannot be read is skipped, with a
/// warning in the log).
pub(crate) fn saved_targets(data_dir: &Path) -> Vec<CopyTargetInfo> {
    let Ok(entries) = std::fs::read_dir(data_dir.join(TARGETS_DIR)) else {
        return Vec::new();
    };
    let mut targets = Vec::new();
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(name) = file.strip_suffix(".json") else {
            continue;
        };
        match read_target(data_dir, name) {
            Ok(saved) => targets.push(CopyTargetInfo {
                name: name.to_string(),
                location: saved.location(),
            }),
            Err(e) => tracing::warn!("copy target {name}: {e}"),
        }
    }
    targets.sort_by(|a, b| a.name.cmp(&b.name));
    targets
}

fn target_file(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(TARGETS_DIR).join(format!("{name}.json"))
}

fn check_target_name(name: &str, field: &str) -> Result<(), EngineError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(EngineError::Field {
            field: field.into(),
            message: format!("{name:?} is not a copy target name: 1 to 64 letters, digits, - or _"),
        })
    }
}

fn read_target(data_dir: &Path, name: &str) -> Result<SavedTarget, EngineError> {
    check_target_name(name, "target")?;
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

/// Refuses to save `name` for `to` when it is saved for another location (plans
/// copying to it would go elsewhere without a word). The same location may be saved
/// again (new credentials).
fn refuse_renaming(data_dir: &Path, name: &str, to: &Destination) -> Result<(), EngineError> {
    if !target_file(data_dir, name).exists() {
        return Ok(());
    }
    let saved = read_target(data_dir, name)?;
    if saved.identity() == to.identity {
        return Ok(());
    }
    Err(EngineError::Conflict(format!(
        "copy target {name} is saved for {}; choose another name, or remove {} first",
        saved.location(),
        target_file(data_dir, name).display()
    )))
}

fn save_target(data_dir: &Path, name: &str, record: &SavedTarget) -> Result<(), EngineError> {
    let path = target_file(data_dir, name);
    std::fs::create_dir_all(data_dir.join(TARGETS_DIR)).map_err(|e| EngineError::DataDir {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    archive_location::write_json_atomically(&path, record)
}

/// Opens a destination (a bucket is checked to answer and to honour conditional writes
/// first).
fn destination(
    data_dir: &Path,
    vault: &Vault,
    to: CopyDestination,
) -> Result<Destination, EngineError> {
    match to {
        CopyDestination::S3(loc) => {
            let config = archive_location::s3_config(&loc)?;
            let record = SavedTarget::S3 {
                location: StoredLocation::seal(vault, &config, None)?,
            };
            s3_destination(data_dir, config, record)
        }
        CopyDestination::Directory(dir) => directory_destination(data_dir, &dir),
        CopyDestination::Saved(name) => match read_target(data_dir, &name)? {
            SavedTarget::Directory { path } => directory_destination(data_dir, &path),
            SavedTarget::S3 { location } => {
                let config = location.open(vault, &target_file(data_dir, &name))?;
                let record = SavedTarget::S3 { location };
                s3_destination(data_dir, config, record)
            }
        },
    }
}

fn s3_destination(
    data_dir: &Path,
    config: S3Config,
    record: SavedTarget,
) -> Result<Destination, EngineError> {
    let identity = archive_location::identity_of(&config.url(), config.endpoint.as_deref());
    // Before anything is sent there: the store check writes a probe.
    refuse_the_archive_itself(data_dir, &identity)?;
    let s3 = archive_location::s3_backend(data_dir, config)?;
    archive_location::check_copy_store(&s3)?;
    Ok(Destination {
        backend: s3,
        identity,
        record,
    })
}

/// A directory destination: made absolute, refused inside the data dir (also through a
/// symbolic link).
fn directory_destination(data_dir: &Path, dir: &Path) -> Result<Destination, EngineError> {
    let field = |message: String| EngineError::Field {
        field: "to".into(),
        message,
    };
    if dir.as_os_str().is_empty() {
        return Err(field("give a directory or s3://BUCKET/PREFIX".into()));
    }
    let absolute =
        std::path::absolute(dir).map_err(|e| field(format!("{}: {e}", dir.display())))?;
    let data = std::fs::canonicalize(data_dir)
        .map_err(|e| field(format!("{}: {e}", data_dir.display())))?;
    if resolved(&absolute).starts_with(&data) {
        return Err(field(format!(
            "{} is inside the data dir {}; a copy belongs elsewhere (another disk)",
            absolute.display(),
            data.display()
        )));
    }
    let identity = absolute.display().to_string();
    refuse_the_archive_itself(data_dir, &identity)?;
    Ok(Destination {
        backend: Arc::new(LocalBackend::new(absolute.clone())),
        identity,
        record: SavedTarget::Directory { path: absolute },
    })
}

/// `path` with its deepest existing ancestor's symbolic links resolved.
fn resolved(path: &Path) -> PathBuf {
    let mut existing = path;
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
    let mut out = std::fs::canonicalize(existing).unwrap_or_else(|_| existing.to_path_buf());
    out.extend(rest.iter().rev());
    out
}

/// The blobs verified in one destination, kept in `<data>/copies/`.
struct Journal {
    verified: HashSet<BlobId>,
    path: PathBuf,
    appended: Mutex<std::io::BufWriter<std::fs::File>>,
}

impl Journal {
    fn open(data_dir: &Path, identity: &str) -> Result<Journal, EngineError> {
        let dir = data_dir.join("copies");
        let name = blake3::hash(identity.as_bytes()).to_hex();
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

    /// Best effort: a lost line only means the blob is read back once more.
    fn append(&self, id: &BlobId) {
        let mut out = self.appended.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "{}", id.to_hex());
    }

    fn flush(&self) -> Result<(), EngineError> {
        let mut out = self.appended.lock().unwrap_or_else(|p| p.into_inner());
        out.flush().map_err(|e| EngineError::DataDir {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }
}
