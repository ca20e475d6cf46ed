//! Prune's sweep against everything else that uses the archive in this process.
//!
//! The sweep deletes blobs no manifest names. A backup names blobs only when its
//! manifest is written, after it stored them or found them already there; a restore,
//! an export or a check reads blobs that a manifest named when it started. So while
//! the sweep runs, none of those may: each holds the gate **shared** for its work on
//! one repository (a backup) or for its whole run (restore, export, check), and the
//! sweep holds it **exclusive**. An `archive copy` holds it shared for each blob and
//! manifest it copies. The data dir is used by one process (its state
//! database is locked), so a lock in this process covers every user of the archive.
//! Nothing holds the gate shared while taking it again, so a waiting sweep (which
//! goes first: the lock prefers writers) never deadlocks anyone.

//!
//! An archive in object storage may be used by other appliances too: there the gate
//! also takes the leases of `archive_lease` (a `use-` lease while shared, the `prune`
//! lease while exclusive), so the sweep waits for them as well.

use super::archive_lease::{Lease, PruneGuard, UseGuard};
use super::EngineError;
use crate::archive::Archive;
use std::path::Path;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The gate (one per [`super::Context`]).
#[derive(Default)]
pub struct ArchiveGate {
    lock: RwLock<()>,
    /// For an archive other appliances may share.
    lease: Option<Lease>,
}

impl std::fmt::Debug for ArchiveGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveGate")
            .field("shared_archive", &self.lease.is_some())
            .finish()
    }
}

/// Held while using the archive's blobs.
pub struct SharedGuard<'a> {
    use_lease: Option<UseGuard>,
    _read: RwLockReadGuard<'a, ()>,
}

impl SharedGuard<'_> {
    /// Whether blobs found in the archive since this guard was taken are still there,
    /// so a manifest may name them: in shared storage, a conflict once this process's
    /// lease lapsed meanwhile (another appliance may have pruned).
    pub fn still_valid(&self) -> Result<(), EngineError> {
        match &self.use_lease {
            Some(lease) => lease.still_valid(),
            None => Ok(()),
        }
    }
}

/// Held by the sweep.
pub struct ExclusiveGuard<'a> {
    prune: Option<PruneGuard>,
    _write: RwLockWriteGuard<'a, ()>,
}

impl ExclusiveGuard<'_> {
    /// Whether the sweep may still delete: in shared storage, whether this process
    /// still holds the prune lease (a conflict once another appliance took it over).
    pub fn still_held(&self) -> Result<(), EngineError> {
        match &self.prune {
            Some(prune) => prune.still_held(),
            None => Ok(()),
        }
    }
}

impl ArchiveGate {
    /// The gate of `archive`, used by the appliance of `data_dir`: with leases when
    /// the archive is in shared storage.
    pub fn for_archive(archive: &Archive, data_dir: &Path) -> Result<ArchiveGate, EngineError> {
        let lease = if archive.is_shared() {
            let me = format!("{}.{:08x}", appliance_id(data_dir)?, rand::random::<u32>());
            Some(Lease::new(archive.clone(), me))
        } else {
            None
        };
        Ok(ArchiveGate {
            lock: RwLock::new(()),
            lease,
        })
    }

    /// Held while using the archive's blobs; many at once. In shared storage it waits
    /// while another appliance prunes.
    pub fn shared(&self) -> Result<SharedGuard<'_>, EngineError> {
        let use_guard = match &self.lease {
            Some(lease) => Some(lease.enter()?),
            None => None,
        };
        // The guarded value is `()`: a panic while it was held leaves nothing broken.
        let read = self.lock.read().unwrap_or_else(|p| p.into_inner());
        Ok(SharedGuard {
            use_lease: use_guard,
            _read: read,
        })
    }

    /// Held by the sweep, alone: in this process, and in shared storage among every
    /// appliance (a conflict when another prunes or keeps using the archive).
    pub fn exclusive(&self) -> Result<ExclusiveGuard<'_>, EngineError> {
        // Other appliances first (that wait may be long), then this process's users.
        let prune = match &self.lease {
            Some(lease) => Some(lease.prune()?),
            None => None,
        };
        let write = self.lock.write().unwrap_or_else(|p| p.into_inner());
        Ok(ExclusiveGuard {
            prune,
            _write: write,
        })
    }
}

/// This appliance's id: 16 random hex digits in `<data>/appliance-id`, made once.
fn appliance_id(data_dir: &Path) -> Result<String, EngineError> {
    let path = data_dir.join("appliance-id");
    let io = |e: std::io::Error| EngineError::DataDir {
        path: path.clone(),
        reason: e.to_string(),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let id = format!("{:016x}", rand::random::<u64>());
    std::fs::write(&path, format!("{id}\n")).map_err(io)?;
    Ok(id)
}
