//! The archive a data dir is attached to, and its gate: opened with the data dir, and
//! when that fails (an S3 endpoint down, a network not up yet, a bucket emptied by
//! someone), opened again at its next use, at most every [`RETRY_AFTER`]. So a daemon
//! whose store does not answer at start still starts: its dashboard and API answer,
//! and its plans run, their jobs failing with the reason (and so notifying) until the
//! store answers; from then on it is used without a restart. Nothing is written to a
//! store that did not open: every refusal `open_archive` makes holds at each attempt.
//! The in-flight files an interrupted process left, which the daemon removes at start,
//! are removed at the late opening of an archive that was not open then.

use super::archive_gate::ArchiveGate;
use super::{archive_keys, EngineError};
use crate::archive::Archive;
use crate::vault::Vault;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a failed opening is answered from memory before the next use tries again.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(30);

/// The attached archive, once it opened; else why it last did not.
pub(crate) struct Attachment {
    attached: OnceLock<Attached>,
    failed: Mutex<Option<Failure>>,
    retry_after: Duration,
    /// Whether the archive's in-flight files are to be removed when it opens (the
    /// daemon's start-up clean-up, owed while the archive was not open).
    cleaning_owed: AtomicBool,
}

/// An open archive and the gate that keeps prune's sweep apart from its other users.
pub(crate) struct Attached {
    pub(crate) archive: Archive,
    pub(crate) gate: ArchiveGate,
}

/// A failed opening: when, and the error's text.
struct Failure {
    at: Instant,
    reason: String,
}

impl Attachment {
    /// Opens the archive of `data_dir` now; a failure is kept (and logged), not returned.
    pub(crate) fn open(data_dir: &Path, vault: &Vault) -> Attachment {
        let attachment = Attachment {
            attached: OnceLock::new(),
            failed: Mutex::new(None),
            retry_after: retry_after(),
            cleaning_owed: AtomicBool::new(false),
        };
        let mut failed = attachment.lock_failed();
        if let Err(e) = attachment.try_open(&mut failed, data_dir, vault) {
            tracing::warn!(
                "{e}; everything else works, and every use of the archive tries again (at most every {} s)",
                attachment.retry_after.as_secs()
            );
        }
        drop(failed);
        attachment
    }

    /// An attachment to `archive`, already open (tests).
    #[cfg(test)]
    pub(crate) fn to(archive: Archive, data_dir: &Path) -> Result<Attachment, EngineError> {
        let gate = ArchiveGate::for_archive(&archive, data_dir)?;
        Ok(Attachment {
            attached: OnceLock::from(Attached { archive, gate }),
            failed: Mutex::new(None),
            retry_after: RETRY_AFTER,
            cleaning_owed: AtomicBool::new(false),
        })
    }

    /// The open archive, if it is open now (nothing is tried).
    pub(crate) fn current(&self) -> Option<&Attached> {
        self.attached.get()
    }

    /// Removes the archive's in-flight files left by an interrupted process (the
    /// caller says no other process writes them): now when the archive is open, else
    /// when it opens, before anyone uses it. The files removed now, if any.
    pub(crate) fn clean_tmp(&self) -> Result<usize, EngineError> {
        // Under the lock attempts hold: an opening cannot slip in between.
        let failed = self.lock_failed();
        match self.attached.get() {
            Some(attached) => Ok(attached.archive.clean_tmp()?),
            None => {
                self.cleaning_owed.store(true, Ordering::SeqCst);
                drop(failed);
                Ok(0)
            }
        }
    }

    /// The owed clean-up of `attached`, which just opened and no one uses yet.
    fn clean_when_owed(&self, attached: &Attached) {
        if !self.cleaning_owed.swap(false, Ordering::SeqCst) {
            return;
        }
        match attached.archive.clean_tmp() {
            Ok(0) => {}
            Ok(n) => tracing::info!("removed {n} temporary files left by an interrupted run"),
            Err(e) => tracing::warn!(
                "the temporary files an interrupted run left could not be removed: {e}"
            ),
        }
    }

    /// The open archive; opens it when it is not, unless the last attempt failed less
    /// than [`RETRY_AFTER`] ago (that failure is answered again, saying so).
    pub(crate) fn get(&self, data_dir: &Path, vault: &Vault) -> Result<&Attached, EngineError> {
        if let Some(attached) = self.attached.get() {
            return Ok(attached);
        }
        // One attempt at a time; whoever waited finds its result.
        let mut failed = self.lock_failed();
        if let Some(attached) = self.attached.get() {
            return Ok(attached);
        }
        if let Some(f) = failed
            .as_ref()
            .filter(|f| f.at.elapsed() < self.retry_after)
        {
            let next = self.retry_after.saturating_sub(f.at.elapsed());
            return Err(EngineError::ArchiveUnavailable(format!(
                "{} (last tried {} s ago; a use from {} s on tries again)",
                f.reason,
                f.at.elapsed().as_secs(),
                next.as_secs().max(1)
            )));
        }
        self.try_open(&mut failed, data_dir, vault)
    }

    /// One attempt to open the archive, recorded in `failed` (held locked).
    fn try_open(
        &self,
        failed: &mut Option<Failure>,
        data_dir: &Path,
        vault: &Vault,
    ) -> Result<&Attached, EngineError> {
        match open_attached(data_dir, vault) {
            Ok(attached) => {
                self.clean_when_owed(&attached);
                if failed.take().is_some() {
                    tracing::info!(
                        "the archive opened: {}",
                        attached.archive.location().display()
                    );
                }
                Ok(self.attached.get_or_init(|| attached))
            }
            Err(e) => {
                let reason = e.to_string();
                *failed = Some(Failure {
                    at: Instant::now(),
                    reason: reason.clone(),
                });
                Err(EngineError::ArchiveUnavailable(reason))
            }
        }
    }

    fn lock_failed(&self) -> std::sync::MutexGuard<'_, Option<Failure>> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Opens the archive of `data_dir` with its gate.
fn open_attached(data_dir: &Path, vault: &Vault) -> Result<Attached, EngineError> {
    let mut archive = archive_keys::open_archive(data_dir, vault)?;
    if archive.is_shared() {
        // Index blobs read again by every backup cost no requests to the store.
        archive = archive.with_small_blob_cache(data_dir.join("cache").join("blobs"));
    }
    let gate = ArchiveGate::for_archive(&archive, data_dir)?;
    Ok(Attached { archive, gate })
}

/// [`RETRY_AFTER`], or `REPOSAFE_ARCHIVE_RETRY_SECS` when set (tests wait less).
fn retry_after() -> Duration {
    std::env::var("REPOSAFE_ARCHIVE_RETRY_SECS")
        .ok()
        .and_then(|secs| secs.trim().parse::<u64>().ok())
        .map_or(RETRY_AFTER, Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data dir whose archive location is a file, not a directory: it cannot open.
    fn unopenable() -> (tempfile::TempDir, Vault) {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("archive"), b"not a directory").expect("write");
        let vault = Vault::open(dir.path()).expect("vault");
        (dir, vault)
    }

    #[test]
    fn an_archive_that_does_not_open_is_tried_again_at_a_use_after_the_pause() {
        let (dir, vault) = unopenable();
        let attachment = Attachment::open(dir.path(), &vault);
        assert!(attachment.current().is_none());
        // Within the pause: the kept failure, saying when it was met; nothing tried.
        std::fs::remove_file(dir.path().join("archive")).expect("rm");
        let err = attachment
            .get(dir.path(), &vault)
            .err()
            .expect("kept failure");
        assert!(matches!(err, EngineError::ArchiveUnavailable(_)), "{err}");
        assert!(err.to_string().contains("last tried 0 s ago"), "{err}");
        assert!(
            !dir.path().join("archive").exists(),
            "tried within the pause"
        );
        // After it: opened, and kept open.
        let attachment = Attachment {
            retry_after: Duration::ZERO,
            ..attachment
        };
        let attached = attachment.get(dir.path(), &vault).expect("opens now");
        assert!(attached.archive.location().starts_with(dir.path()));
        assert!(attachment.current().is_some());
        assert!(
            attachment.lock_failed().is_none(),
            "the failure is forgotten"
        );
    }

    /// The daemon's start-up clean-up of an archive that was not open then is done
    /// when it opens, not left for the next start.
    #[test]
    fn in_flight_files_are_removed_when_an_archive_opens_late() {
        let (dir, vault) = unopenable();
        let attachment = Attachment {
            retry_after: Duration::ZERO,
            ..Attachment::open(dir.path(), &vault)
        };
        assert_eq!(attachment.clean_tmp().expect("owed"), 0);
        std::fs::remove_file(dir.path().join("archive")).expect("rm");
        let tmp = dir.path().join("archive").join("tmp");
        std::fs::create_dir_all(&tmp).expect("mkdir");
        std::fs::write(tmp.join("left-by-a-kill"), b"half a blob").expect("write");
        attachment.get(dir.path(), &vault).expect("opens now");
        assert!(
            !tmp.join("left-by-a-kill").exists(),
            "removed at the opening"
        );
        std::fs::write(tmp.join("in-use"), b"a blob being written").expect("write");
        attachment.get(dir.path(), &vault).expect("open");
        assert!(tmp.join("in-use").exists(), "removed once only");
    }
}
