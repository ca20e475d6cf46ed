//! Copying an archive to another store (`reposafe archive copy --to`): every file is
//! copied as it is stored (an encrypted archive stays encrypted to the same key, so
//! blob ids and index names stay valid), and every blob is verified in the copy by
//! reading it back and hashing its content against its id.
//!
//! Order makes an interrupted copy harmless and resumable: the key files, then
//! `FORMAT` (the destination is an archive from then on), then blobs and index entries,
//! and the manifests last — each only once the destination holds every blob it names,
//! so a snapshot is never visible there half copied. The set of manifests is fixed
//! before the blobs are listed: a backup adding a snapshot to the source meanwhile
//! wrote its blobs first, so every listed manifest's blobs are in the listing (the
//! caller keeps prune away with the archive gate). Nothing is ever deleted from the
//! destination; a file already there is kept (content-addressed blobs are checked,
//! a damaged one is written again).

use super::{format_line, Archive, ArchiveError, ArchiveLayout, Backend, BlobId, FileKind};
use super::{Snapshot, Source};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Blobs checked in the destination by an earlier copy to it, so a resumed or repeated
/// copy does not read them back again.
pub trait CopyJournal: Sync {
    fn is_verified(&self, id: &BlobId) -> bool;
    /// Records that the destination's copy of `id` was read back and matched.
    fn verified(&self, id: &BlobId);
}

/// Progress of a copy.
pub trait CopyProgress: Sync {
    /// What is left to do: blobs to copy or check and their stored bytes.
    fn planned(&self, blobs: u64, bytes: u64);
    /// One blob of `bytes` copied (or checked).
    fn blob_done(&self, bytes: u64);
}

/// What a copy did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyTally {
    /// Blobs written to the destination and verified there.
    pub blobs_copied: u64,
    /// Their stored bytes.
    pub bytes_copied: u64,
    /// Blobs the destination had, read back and verified now.
    pub blobs_checked: u64,
    /// Damaged blobs the destination had, written again.
    pub blobs_repaired: u64,
    /// Blobs the destination had that an earlier copy verified.
    pub blobs_verified_before: u64,
    /// Snapshot manifests written to the destination.
    pub snapshots_copied: u64,
    /// Snapshot manifests the destination had already.
    pub snapshots_present: u64,
    /// Pack and LFS index entries and key files written.
    pub other_files_copied: u64,
}

/// One blob to bring to the destination.
struct BlobTask {
    id: BlobId,
    stored: u64,
    /// In the destination already: check it, copy only if damaged.
    present: bool,
}

impl Archive {
    /// Opens `backend` as the destination of a copy of this archive: an empty store is
    /// made an archive of the same kind (the key files first, then the same `FORMAT`);
    /// a store holding an archive must be of the same kind — plain, or encrypted to this
    /// archive's key — else nothing is written and the error says what is there.
    pub fn copy_target(&self, backend: Arc<dyn Backend>) -> Result<Archive, ArchiveError> {
        let target = Archive {
            backend: backend.clone(),
            key: self.key.clone(),
            small_blobs: None,
        };
        if backend.root_location() == self.backend.root_location() {
            return Err(ArchiveError::Copy {
                path: backend.root_location(),
                reason: "it is the archive itself".into(),
            });
        }
        let recipient = self.key.as_ref().map(|k| k.recipient());
        match (Archive::inspect_on(backend.as_ref())?, &recipient) {
            (ArchiveLayout::Empty, _) => {
                backend.init()?;
                self.copy_key_files(&target)?;
                let line = format_line(recipient.as_deref());
                match backend.create_new(FileKind::Format, "", line.as_bytes()) {
                    Ok(()) => Ok(target),
                    // Another copy created it meanwhile: check what it wrote.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        self.copy_target(backend)
                    }
                    Err(e) => Err(e.into()),
                }
            }
            (ArchiveLayout::Plain { .. }, None) => {
                backend.init()?;
                Ok(target)
            }
            (ArchiveLayout::Encrypted { recipient: there }, Some(mine)) if &there == mine => {
                backend.init()?;
                Ok(target)
            }
            (there, _) => Err(ArchiveError::Copy {
                path: backend.root_location(),
                reason: format!(
                    "it holds another archive ({}), and this one is {}; copy into an empty location",
                    describe(&there),
                    describe(&match recipient {
                        Some(recipient) => ArchiveLayout::Encrypted { recipient },
                        None => ArchiveLayout::Plain {
                            format: super::FORMAT_VERSION,
                        },
                    })
                ),
            }),
        }
    }

    /// Copies everything of this archive that `dest` (from [`Archive::copy_target`])
    /// lacks, `workers` blobs at a time, verifying every blob in `dest`.
    pub fn copy_to(
        &self,
        dest: &Archive,
        journal: &dyn CopyJournal,
        progress: &dyn CopyProgress,
        workers: usize,
    ) -> Result<CopyTally, ArchiveError> {
        let mut tally = CopyTally {
            other_files_copied: self.copy_key_files(dest)?,
            ..CopyTally::default()
        };
        // The manifests first: every blob they name is in the listing that follows.
        let manifests = self.backend.list(FileKind::Snapshot, "")?;
        let tasks = self.blob_tasks(dest, journal, &mut tally)?;
        progress.planned(
            tasks.len() as u64,
            tasks.iter().map(|t| t.stored).sum::<u64>(),
        );
        let done = Mutex::new(CopyTally::default());
        self.run_blob_tasks(dest, &tasks, journal, progress, &done, workers)?;
        let done = done.into_inner().unwrap_or_else(|p| p.into_inner());
        tally.blobs_copied = done.blobs_copied;
        tally.bytes_copied = done.bytes_copied;
        tally.blobs_checked = done.blobs_checked;
        tally.blobs_repaired = done.blobs_repaired;
        for kind in [FileKind::PackIndex, FileKind::LfsIndex] {
            tally.other_files_copied += self.copy_missing_files(dest, kind)?;
        }
        let in_dest: HashSet<String> = dest.backend.list(FileKind::Blob, "")?.into_iter().collect();
        let present: HashSet<String> = dest
            .backend
            .list(FileKind::Snapshot, "")?
            .into_iter()
            .collect();
        for mid in manifests {
            if present.contains(&mid) {
                tally.snapshots_present += 1;
                continue;
            }
            self.copy_manifest(dest, &mid, &in_dest)?;
            tally.snapshots_copied += 1;
        }
        Ok(tally)
    }

    /// Key files of this archive that `dest` lacks, written there; their number. A key
    /// file of the same name with other content is refused.
    fn copy_key_files(&self, dest: &Archive) -> Result<u64, ArchiveError> {
        let mut copied = 0;
        for (name, bytes) in Archive::key_files_on(self.backend.as_ref())? {
            match dest.backend.create_new(FileKind::Key, &name, &bytes) {
                Ok(()) => copied += 1,
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
        Ok(copied)
    }

    /// The blobs to copy (absent from `dest`) or check (present, not verified before).
    fn blob_tasks(
        &self,
        dest: &Archive,
        journal: &dyn CopyJournal,
        tally: &mut CopyTally,
    ) -> Result<Vec<BlobTask>, ArchiveError> {
        let there: HashSet<String> = dest.backend.list(FileKind::Blob, "")?.into_iter().collect();
        let mut tasks = Vec::new();
        for (hex, stored) in self.backend.list_with_size(FileKind::Blob, "")? {
            let id = BlobId::parse(&hex)?;
            let present = there.contains(&hex);
            if present && journal.is_verified(&id) {
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

    /// Runs `tasks` on `workers` threads; the first error stops them all.
    fn run_blob_tasks(
        &self,
        dest: &Archive,
        tasks: &[BlobTask],
        journal: &dyn CopyJournal,
        progress: &dyn CopyProgress,
        done: &Mutex<CopyTally>,
        workers: usize,
    ) -> Result<(), ArchiveError> {
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let first_error: Mutex<Option<ArchiveError>> = Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..workers.clamp(1, 16) {
                scope.spawn(|| {
                    while !failed.load(Ordering::SeqCst) {
                        let Some(task) = tasks.get(next.fetch_add(1, Ordering::SeqCst)) else {
                            break;
                        };
                        match self.bring_blob(dest, task) {
                            Ok(outcome) => {
                                journal.verified(&task.id);
                                progress.blob_done(task.stored);
                                if let Ok(mut d) = done.lock() {
                                    outcome.count(task, &mut d);
                                }
                            }
                            Err(e) => {
                                failed.store(true, Ordering::SeqCst);
                                if let Ok(mut slot) = first_error.lock() {
                                    slot.get_or_insert(e);
                                }
                            }
                        }
                    }
                });
            }
        });
        match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Brings one blob to `dest` verified: a present one is read back, and written
    /// again if damaged; an absent one is copied and read back (once more on a
    /// mismatch, then the source itself is checked and named if it is the damaged one).
    fn bring_blob(&self, dest: &Archive, task: &BlobTask) -> Result<BlobOutcome, ArchiveError> {
        if task.present && dest.verify_blob(&task.id).is_ok() {
            return Ok(BlobOutcome::Checked);
        }
        let mut last = None;
        for _ in 0..2 {
            self.copy_raw(dest, FileKind::Blob, &task.id.to_hex())?;
            match dest.verify_blob(&task.id) {
                Ok(_) => {
                    return Ok(if task.present {
                        BlobOutcome::Repaired
                    } else {
                        BlobOutcome::Copied
                    })
                }
                Err(e) => last = Some(e),
            }
        }
        if let Err(e) = self.verify_blob(&task.id) {
            return Err(ArchiveError::Copy {
                path: self.blob_location(&task.id),
                reason: format!(
                    "blob {} is damaged in the archive being copied ({e}); run `reposafe check --read-data` to see what it affects",
                    task.id
                ),
            });
        }
        Err(last.unwrap_or_else(|| ArchiveError::Copy {
            path: dest.blob_location(&task.id),
            reason: "the copy does not read back as written".into(),
        }))
    }

    /// Streams one stored file as it is to `dest` (replacing what is there).
    fn copy_raw(&self, dest: &Archive, kind: FileKind, id: &str) -> Result<(), ArchiveError> {
        let mut reader = self.backend.open_read(kind, id)?;
        dest.backend.write(kind, id, Source::Reader(&mut reader))?;
        Ok(())
    }

    /// Files of `kind` this archive has and `dest` lacks, copied; their number.
    fn copy_missing_files(&self, dest: &Archive, kind: FileKind) -> Result<u64, ArchiveError> {
        let there: HashSet<String> = dest.backend.list(kind, "")?.into_iter().collect();
        let mut copied = 0;
        for id in self.backend.list(kind, "")? {
            if !there.contains(&id) {
                let bytes = self.backend.read(kind, &id)?;
                dest.backend.write(kind, &id, Source::Bytes(&bytes))?;
                copied += 1;
            }
        }
        Ok(copied)
    }

    /// Writes manifest `mid` to `dest` once `dest` holds every blob it names (`in_dest`),
    /// then reads it back there.
    fn copy_manifest(
        &self,
        dest: &Archive,
        mid: &str,
        in_dest: &HashSet<String>,
    ) -> Result<(), ArchiveError> {
        let bytes = self.backend.read(FileKind::Snapshot, mid)?;
        let snap: Snapshot = self.decode_manifest(mid, bytes.clone())?;
        if let Some(missing) = snap.blobs().find(|b| !in_dest.contains(&b.to_hex())) {
            return Err(ArchiveError::Copy {
                path: dest.blob_location(missing),
                reason: format!(
                    "snapshot {} names blob {missing}, which the copy lacks (it is missing from the archive being copied too: run `reposafe check`)",
                    snap.id
                ),
            });
        }
        match dest.backend.create_new(FileKind::Snapshot, mid, &bytes) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
        let copied = dest.read_manifest(mid)?;
        if copied.id != snap.id {
            return Err(ArchiveError::Copy {
                path: dest.backend.location(FileKind::Snapshot, mid),
                reason: format!("it reads back as snapshot {}, not {}", copied.id, snap.id),
            });
        }
        Ok(())
    }
}

/// How one blob was brought to the destination.
enum BlobOutcome {
    Copied,
    Checked,
    Repaired,
}

impl BlobOutcome {
    fn count(&self, task: &BlobTask, tally: &mut CopyTally) {
        match self {
            BlobOutcome::Copied => {
                tally.blobs_copied += 1;
                tally.bytes_copied += task.stored;
            }
            BlobOutcome::Checked => tally.blobs_checked += 1,
            BlobOutcome::Repaired => {
                tally.blobs_repaired += 1;
                tally.bytes_copied += task.stored;
            }
        }
    }
}

fn describe(layout: &ArchiveLayout) -> String {
    match layout {
        ArchiveLayout::Empty => "nothing".into(),
        ArchiveLayout::Plain { .. } => "not encrypted".into(),
        ArchiveLayout::Encrypted { recipient } => format!("encrypted to {recipient}"),
    }
}
