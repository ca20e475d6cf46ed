//! Prune's sweep against everything else that uses the archive in this process.
//!
//! The sweep deletes blobs no manifest names. A backup names blobs only when its
//! manifest is written, after it stored them or found them already there; a restore,
//! an export or a check reads blobs that a manifest named when it started. So while
//! the sweep runs, none of those may: each holds the gate **shared** for its work on
//! one repository (a backup) or for its whole run (restore, export, check), and the
//! sweep holds it **exclusive**. The data dir is used by one process (its state
//! database is locked), so a lock in this process covers every user of the archive.
//! Nothing holds the gate shared while taking it again, so a waiting sweep (which
//! goes first: the lock prefers writers) never deadlocks anyone.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The gate (one per [`super::Context`]).
#[derive(Debug, Default)]
pub struct ArchiveGate(RwLock<()>);

impl ArchiveGate {
    /// Held while using the archive's blobs; many at once.
    pub fn shared(&self) -> RwLockReadGuard<'_, ()> {
        // The guarded value is `()`: a panic while it was held leaves nothing broken.
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Held by the sweep, alone.
    pub fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }
}
