//! Copying an archive to another store (`reposafe archive copy --to`): every file is
//! copied as it is stored (an encrypted archive stays encrypted to the same key, so
//! blob ids and index names stay valid), and every blob is verified in the copy by
//! reading it back and hashing its content against its id.
//!
//! Order makes an interrupted copy harmless and resumable: the key files, then
//! `FORMAT` (the destination is an archive from then on), then blobs and index entries,
//! and the manifests last — each only once the destination holds every blob it needs
//! (directly, and through its LFS and metadata index blobs), so a snapshot is never
//! visible there half copied: a blob counts as there only once it was read back in this
//! copy, or by an earlier one (the caller's journal). A blob the destination has is
//! replaced only when it does not read back as its id *and* the source's copy does;
//! nothing is ever deleted there.
//!
//! The caller's [`CopySession`] keeps prune's sweep away from the source while each blob
//! or manifest is copied (never for the whole copy: a prune, and the backups queued
//! behind it, wait for one blob at most). A blob swept meanwhile is skipped; a manifest
//! rewritten meanwhile (consolidation) brings the blobs it names then. Failures are
//! counted per blob and per snapshot: the rest is still copied, and the tally names them.

use super::{format_line, Archive, ArchiveError, ArchiveLayout, Backend, BlobId, FileKind};
use super::{Snapshot, Source};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Blob failures after which a copy stops trying the rest (the store is likely down).
const MAX_FAILURES: usize = 20;
/// Blobs above this stored size are copied one at a time (each holds multipart buffers).
const LARGE_BLOB: u64 = 8 << 20;

/// What a copy needs from its caller.
pub trait CopySession: Sync {
    /// Whether an earlier copy read the destination's copy of `id` back and it matched.
    fn is_verified(&self, id: &BlobId) -> bool;
    /// Records that the destination's copy of `id` was read back and matched.
    fn verified(&self, id: &BlobId);
    /// What is left to do: blobs to copy or check and their stored bytes.
    fn planned(&self, blobs: u64, bytes: u64);
    /// One blob of `bytes` copied or checked.
    fn blob_done(&self, bytes: u64);
    /// Runs `work` while prune's sweep is kept away from the source.
    fn guarded(
        &self,
        work: &mut dyn FnMut() -> Result<(), ArchiveError>,
    ) -> Result<(), ArchiveError>;
    /// Whether the copy should stop now (a cancelled job, a daemon shutting down).
    fn cancelled(&self) -> bool;
    /// Whether the blobs copied so far are still in the destination, so a manifest
    /// there may name them: an error once prune's sweep may have run there meanwhile
    /// (in shared storage, when the copy's lease on it lapsed).
    fn destination_kept(&self) -> Result<(), ArchiveError>;
}

/// What a copy did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyTally {
    /// Blobs written to the destination and verified there.
    pub blobs_copied: u64,
    /// Stored bytes written (copied and repaired blobs).
    pub bytes_copied: u64,
    /// Blobs the destination had, read back and verified now.
    pub blobs_checked: u64,
    /// Blobs the destination had that did not read back as their id, written again.
    pub blobs_repaired: u64,
    /// Blobs the destination had that an earlier copy verified.
    pub blobs_verified_before: u64,
    /// Snapshot manifests written to the destination.
    pub snapshots_copied: u64,
    /// Snapshot manifests the destination had already.
    pub snapshots_present: u64,
    /// Pack and LFS index entries written.
    pub index_entries_copied: u64,
    /// What could not be copied (a blob, a snapshot), with the reason; the snapshots
    /// named here are not in the destination.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
}

/// One blob to bring to the destination.
struct BlobTask {
    id: BlobId,
    stored: u64,
    /// In the destination already: check it, write it only if damaged.
    present: bool,
}

/// How one blob was brought to the destination.
enum Brought {
    Copied,
    Checked,
    Repaired,
    /// Gone from the source since it was listed (swept by a prune).
    Vanished,
}

/// One copy in progress.
struct Copier<'a> {
    source: &'a Archive,
    dest: &'a Archive,
    session: &'a dyn CopySession,
    /// Held while a large blob is copied.
    large: Mutex<()>,
    /// The destination's blobs when the copy began (there, not necessarily whole).
    listed: HashSet<BlobId>,
    /// Blobs read back in the destination by this copy.
    verified_now: Mutex<HashSet<BlobId>>,
    /// Blobs that could not be brought: a snapshot needing one is left out.
    failed_ids: Mutex<HashSet<BlobId>>,
}

/// How a blob reads back.
enum ReadBack {
    Good,
    /// Absent, or not its id's content (the error says which).
    Damaged(ArchiveError),
}

/// Reads blob `id` of `archive` through, hashing it: a failure to read (the network,
/// the disk) is an error, not damage.
fn read_back(archive: &Archive, id: &BlobId) -> Result<ReadBack, ArchiveError> {
    let mut reader = match archive.open_blob(id) {
        Ok(reader) => reader,
        Err(e @ (ArchiveError::MissingBlob { .. } | ArchiveError::CorruptBlob { .. })) => {
            return Ok(ReadBack::Damaged(e))
        }
        Err(e) => return Err(e),
    };
    match io::copy(&mut reader, &mut io::sink()) {
        Ok(_) => Ok(ReadBack::Good),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            Ok(ReadBack::Damaged(ArchiveError::CorruptBlob {
                id: *id,
                path: archive.blob_location(id),
                reason: e.to_string(),
            }))
        }
        Err(e) => Err(ArchiveError::Io {
            path: archive.blob_location(id),
            source: e,
        }),
    }
}

impl Archive {
    /// Opens `backend` as the destination of a copy of this archive: an empty store is
    /// made an archive of the same kind (the key files first, then the same `FORMAT`);
    /// a store holding an archive must be of the same kind — plain (its `FORMAT` brought
    /// to this version's), or encrypted to this archive's key — else nothing is written
    /// and the error says what is there.
    pub fn copy_target(&self, backend: Arc<dyn Backend>) -> Result<Archive, ArchiveError> {
        let target = Archive {
            backend: backend.clone(),
            key: self.key.clone(),
            small_blobs: None,
        };
        let recipient = self.key.as_ref().map(|k| k.recipient());
        let mut layout = Archive::inspect_on(backend.as_ref())?;
        if layout == ArchiveLayout::Empty {
            backend.init()?;
            self.copy_key_files(&target)?;
            let line = format_line(recipient.as_deref());
            match backend.create_new(FileKind::Format, "", line.as_bytes()) {
                Ok(()) => return Ok(target),
                // Another copy created it meanwhile: check what it wrote.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    layout = Archive::inspect_on(backend.as_ref())?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        match (&layout, &recipient) {
            (ArchiveLayout::Plain { .. }, None) => Archive::open_plain_on(backend, layout),
            (ArchiveLayout::Encrypted { recipient: there }, Some(mine)) if there == mine => {
                backend.init()?;
                Ok(target)
            }
            (there, _) => Err(ArchiveError::Copy {
                path: backend.root_location(),
                reason: format!(
                    "it holds another archive ({}), and this one is {}; copy into an empty location",
                    describe(there),
                    match &recipient {
                        Some(r) => format!("encrypted to {r}"),
                        None => "not encrypted".into(),
                    }
                ),
            }),
        }
    }

    /// Copies everything of this archive that `dest` (from [`Archive::copy_target`])
    /// lacks, `workers` blobs at a time, verifying every blob in `dest`.
    pub fn copy_to(
        &self,
        dest: &Archive,
        session: &dyn CopySession,
        workers: usize,
    ) -> Result<CopyTally, ArchiveError> {
        self.copy_key_files(dest)?;
        let manifests = self.backend.list(FileKind::Snapshot, "")?;
        let listed: HashSet<BlobId> = dest
            .backend
            .list(FileKind::Blob, "")?
            .iter()
            .filter_map(|hex| BlobId::parse(hex).ok())
            .collect();
        let copier = Copier {
            source: self,
            dest,
            session,
            large: Mutex::new(()),
            listed,
            verified_now: Mutex::new(HashSet::new()),
            failed_ids: Mutex::new(HashSet::new()),
        };
        let mut tally = CopyTally::default();
        let tasks = copier.blob_tasks(&mut tally)?;
        session.planned(
            tasks.len() as u64,
            tasks.iter().map(|t| t.stored).sum::<u64>(),
        );
        let stopped = copier.run_blob_tasks(&tasks, workers, &mut tally);
        copier.stop_if_cancelled()?;
        if stopped {
            tally.failed.push(format!(
                "stopped after {MAX_FAILURES} blobs failed: no snapshot was copied (is the destination reachable?)"
            ));
            return Ok(tally);
        }
        for kind in [FileKind::PackIndex, FileKind::LfsIndex] {
            tally.index_entries_copied += self.copy_missing_files(dest, kind, &mut tally.failed)?;
        }
        copier.copy_manifests(&manifests, &mut tally)?;
        Ok(tally)
    }

    /// Key files of this archive that `dest` lacks, written there. A key file of the
    /// same name with other content is refused.
    fn copy_key_files(&self, dest: &Archive) -> Result<(), ArchiveError> {
        for (name, bytes) in Archive::key_files_on(self.backend.as_ref())? {
            match dest.backend.create_new(FileKind::Key, &name, &bytes) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if dest.backend.read(FileKind::Key, &name)? != bytes {
                        return Err(ArchiveError::Copy {
                            path: dest.backend.location(FileKind::Key, &name),
                            reason: "a key file of this name with other content is there".into(),
                        });
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Files of `kind` this archive has and `dest` lacks, copied; their number. One
    /// removed from the source since it was listed (by a prune) is skipped; one that
    /// cannot be copied is named in `failed` (index entries only speed up backups).
    fn copy_missing_files(
        &self,
        dest: &Archive,
        kind: FileKind,
        failed: &mut Vec<String>,
    ) -> Result<u64, ArchiveError> {
        let there: HashSet<String> = dest.backend.list(kind, "")?.into_iter().collect();
        let mut copied = 0;
        for id in self.backend.list(kind, "")? {
            if there.contains(&id) {
                continue;
            }
            let written = match self.backend.read(kind, &id) {
                Ok(bytes) => dest.backend.write(kind, &id, Source::Bytes(&bytes)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => Err(e),
            };
            match written {
                Ok(()) => copied += 1,
                Err(e) => failed.push(format!("{kind:?} {id}: {e}")),
            }
        }
        Ok(copied)
    }

    /// Every blob `snap` needs: those it names, and those its index blobs name (read
    /// once per copy, kept in `indexes`).
    fn blobs_needed(
        &self,
        snap: &Snapshot,
        indexes: &mut HashMap<BlobId, Vec<BlobId>>,
    ) -> Result<Vec<BlobId>, ArchiveError> {
        let mut needed: Vec<BlobId> = snap.blobs().copied().collect();
        let lfs = snap.lfs.iter().map(|l| (l.index, true));
        let meta = snap
            .metadata
            .iter()
            .flat_map(|m| m.kinds.values().map(|k| (k.index, false)));
        for (index, is_lfs) in lfs.chain(meta) {
            let named = match indexes.entry(index) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(self.blobs_named_by_index(&index, is_lfs)?)
                }
            };
            needed.extend(named.iter().copied());
        }
        Ok(needed)
    }
}

impl Copier<'_> {
    /// The blobs to copy (absent from the destination) or check (present, not verified
    /// before). A stored file whose name is no blob id is not a blob: left alone.
    fn blob_tasks(&self, tally: &mut CopyTally) -> Result<Vec<BlobTask>, ArchiveError> {
        let mut tasks = Vec::new();
        for (hex, stored) in self.source.backend.list_with_size(FileKind::Blob, "")? {
            let Ok(id) = BlobId::parse(&hex) else {
                continue;
            };
            let present = self.listed.contains(&id);
            if present && self.session.is_verified(&id) {
                tally.blobs_verified_before += 1;
                continue;
            }
            tasks.push(BlobTask {
                id,
                stored,
                present,
            });
        }
        Ok(tasks)
    }

    /// Runs `tasks` on `workers` threads, counting what happened in `tally`; stops early
    /// when cancelled or after [`MAX_FAILURES`] failures (then `true`).
    fn run_blob_tasks(&self, tasks: &[BlobTask], workers: usize, tally: &mut CopyTally) -> bool {
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let shared = Mutex::new(std::mem::take(tally));
        std::thread::scope(|scope| {
            for _ in 0..workers.clamp(1, 16) {
                scope.spawn(|| {
                    while !stop.load(Ordering::SeqCst) && !self.session.cancelled() {
                        let Some(task) = tasks.get(next.fetch_add(1, Ordering::SeqCst)) else {
                            break;
                        };
                        let brought = self.guarded_blob(task);
                        let mut t = shared.lock().unwrap_or_else(|p| p.into_inner());
                        count(task, brought, &mut t);
                        if t.failed.len() >= MAX_FAILURES {
                            stop.store(true, Ordering::SeqCst);
                        }
                        drop(t);
                        self.session.blob_done(task.stored);
                    }
                });
            }
        });
        *tally = shared.into_inner().unwrap_or_else(|p| p.into_inner());
        stop.load(Ordering::SeqCst)
    }

    /// [`Copier::bring_blob`] with the source guarded, a large blob one at a time;
    /// journaled when it reads back in the destination.
    fn guarded_blob(&self, task: &BlobTask) -> Result<Brought, ArchiveError> {
        let _large = (task.stored > LARGE_BLOB)
            .then(|| self.large.lock().unwrap_or_else(|p| p.into_inner()));
        let mut brought = None;
        let guarded = self.session.guarded(&mut || {
            brought = Some(self.bring_blob(task)?);
            Ok(())
        });
        let brought = guarded.and_then(|()| {
            brought.ok_or_else(|| ArchiveError::Copy {
                path: self.dest.blob_location(&task.id),
                reason: "the copy of a blob did not run".into(),
            })
        });
        match &brought {
            Ok(Brought::Vanished) => {}
            Ok(_) => self.mark_verified(&task.id),
            Err(_) => {
                let mut failed = self.failed_ids.lock().unwrap_or_else(|p| p.into_inner());
                failed.insert(task.id);
            }
        }
        brought
    }

    /// `id` read back in the destination: journaled, and good for the manifests.
    fn mark_verified(&self, id: &BlobId) {
        self.session.verified(id);
        let mut now = self.verified_now.lock().unwrap_or_else(|p| p.into_inner());
        now.insert(*id);
    }

    /// Whether the destination's `id` is known whole: read back by this copy, or by an
    /// earlier one (and still listed).
    fn known_whole(&self, id: &BlobId) -> bool {
        let now = self.verified_now.lock().unwrap_or_else(|p| p.into_inner());
        now.contains(id) || (self.listed.contains(id) && self.session.is_verified(id))
    }

    /// Brings one blob to the destination, verified there. A present one that reads
    /// back is kept; otherwise (damaged, or absent) the source's copy is written — a
    /// present one only once the source's copy reads back, so a good copy is never
    /// replaced by a bad one — and read back, once more on a mismatch. A read that fails
    /// (the network, a disk) is an error and changes nothing.
    fn bring_blob(&self, task: &BlobTask) -> Result<Brought, ArchiveError> {
        if task.present {
            if let ReadBack::Good = read_back(self.dest, &task.id)? {
                return Ok(Brought::Checked);
            }
            match read_back(self.source, &task.id)? {
                ReadBack::Good => {}
                ReadBack::Damaged(ArchiveError::MissingBlob { .. }) => {
                    return Ok(Brought::Vanished)
                }
                ReadBack::Damaged(e) => return Err(e),
            }
        }
        let mut mismatch = None;
        for _ in 0..2 {
            if !self.copy_raw(&task.id)? {
                return Ok(Brought::Vanished);
            }
            match read_back(self.dest, &task.id)? {
                ReadBack::Good if task.present => return Ok(Brought::Repaired),
                ReadBack::Good => return Ok(Brought::Copied),
                ReadBack::Damaged(e) => mismatch = Some(e),
            }
        }
        // Written twice and still not its content: the source's copy is damaged (the
        // error names it), or the destination does not keep what it is given. What was
        // written stays, named by no snapshot of the copy, and is checked next time.
        if let ReadBack::Damaged(e) = read_back(self.source, &task.id)? {
            return Err(e);
        }
        Err(mismatch.unwrap_or_else(|| ArchiveError::Copy {
            path: self.dest.blob_location(&task.id),
            reason: "the copy does not read back as written".into(),
        }))
    }

    /// Streams a blob as it is stored to the destination (replacing what is there);
    /// `false` when the source no longer has it.
    fn copy_raw(&self, id: &BlobId) -> Result<bool, ArchiveError> {
        let hex = id.to_hex();
        let mut reader = match self.source.backend.open_read(FileKind::Blob, &hex) {
            Ok(reader) => reader,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        self.dest
            .backend
            .write(FileKind::Blob, &hex, Source::Reader(&mut reader))?;
        Ok(true)
    }

    fn stop_if_cancelled(&self) -> Result<(), ArchiveError> {
        if self.session.cancelled() {
            return Err(ArchiveError::CopyCancelled {
                path: self.dest.location(),
            });
        }
        Ok(())
    }

    /// Writes each of `manifests` the destination lacks (see [`Copier::copy_manifest`]);
    /// one that cannot be is named in `tally.failed` and the others still go.
    fn copy_manifests(
        &self,
        manifests: &[String],
        tally: &mut CopyTally,
    ) -> Result<(), ArchiveError> {
        let present: HashSet<String> = self
            .dest
            .backend
            .list(FileKind::Snapshot, "")?
            .into_iter()
            .collect();
        let mut indexes = HashMap::new();
        for mid in manifests {
            self.stop_if_cancelled()?;
            if present.contains(mid) {
                tally.snapshots_present += 1;
                continue;
            }
            let mut copied = false;
            let done = self.session.guarded(&mut || {
                copied = self.copy_manifest(mid, &mut indexes)?;
                Ok(())
            });
            match done {
                Ok(()) if copied => tally.snapshots_copied += 1,
                Ok(()) => {}
                Err(e) => tally.failed.push(format!("snapshot {mid}: {e}")),
            }
        }
        Ok(())
    }

    /// Writes manifest `mid` to the destination once every blob the snapshot needs is
    /// known whole there (those not yet, e.g. named by a consolidation since the
    /// listing, are brought now; one that failed already leaves the snapshot out), then
    /// reads it back there. `false`: the source no longer has it (forgotten since the
    /// listing).
    fn copy_manifest(
        &self,
        mid: &str,
        indexes: &mut HashMap<BlobId, Vec<BlobId>>,
    ) -> Result<bool, ArchiveError> {
        let bytes = match self.source.backend.read(FileKind::Snapshot, mid) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let snap: Snapshot = self.source.decode_manifest(mid, bytes.clone())?;
        for id in self.source.blobs_needed(&snap, indexes)? {
            if self.known_whole(&id) {
                continue;
            }
            let failed = self.failed_ids.lock().unwrap_or_else(|p| p.into_inner());
            if failed.contains(&id) {
                return Err(ArchiveError::Copy {
                    path: self.dest.blob_location(&id),
                    reason: format!("it needs blob {id}, which could not be copied"),
                });
            }
            drop(failed);
            let task = BlobTask {
                id,
                stored: 0,
                present: self.listed.contains(&id),
            };
            if let Brought::Vanished = self.bring_blob(&task)? {
                return Err(ArchiveError::MissingBlob {
                    id,
                    path: self.source.blob_location(&id),
                });
            }
            self.mark_verified(&id);
        }
        self.session.destination_kept()?;
        match self
            .dest
            .backend
            .create_new(FileKind::Snapshot, mid, &bytes)
        {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
        let copied = self.dest.read_manifest(mid)?;
        if copied.id != snap.id {
            return Err(ArchiveError::Copy {
                path: self.dest.backend.location(FileKind::Snapshot, mid),
                reason: format!("it reads back as snapshot {}, not {}", copied.id, snap.id),
            });
        }
        Ok(true)
    }
}

/// Adds how one blob went to `tally`.
fn count(task: &BlobTask, brought: Result<Brought, ArchiveError>, tally: &mut CopyTally) {
    match brought {
        Ok(Brought::Copied) => {
            tally.blobs_copied += 1;
            tally.bytes_copied += task.stored;
        }
        Ok(Brought::Checked) => tally.blobs_checked += 1,
        Ok(Brought::Repaired) => {
            tally.blobs_repaired += 1;
            tally.bytes_copied += task.stored;
        }
        Ok(Brought::Vanished) => {}
        Err(e) => tally.failed.push(format!("blob {}: {e}", task.id)),
    }
}

fn describe(layout: &ArchiveLayout) -> String {
    match layout {
        ArchiveLayout::Empty => "nothing".into(),
        ArchiveLayout::Plain { .. } => "not encrypted".into(),
        ArchiveLayout::Encrypted { recipient } => format!("encrypted to {recipient}"),
    }
}
