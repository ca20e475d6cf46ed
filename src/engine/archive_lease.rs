//! Prune's sweep against *other appliances* using the same archive in object storage
//! (the in-process half is `archive_gate`).
//!
//! Two kinds of lease file live in the archive's `locks/`:
//! - `use-<appliance>`: this appliance is using the archive's blobs (a backup between
//!   finding a blob and naming it in a manifest, a restore, a check). One per
//!   appliance, held while any of its users is and [`LINGER`] after the last (so a
//!   job going from repository to repository costs no requests), renewed while held,
//!   released when the process closes the archive.
//! - `prune`: one appliance is sweeping. Created only if absent (`If-None-Match`), so
//!   one appliance wins; renewed while held; taken over only once expired.
//!
//! A user writes its `use-` lease *before* it looks for `prune`, and a pruner creates
//! `prune` *before* it looks for `use-` leases. Object stores read their own writes in
//! order (S3 is strongly consistent), so of a user and a pruner starting together at
//! least one sees the other: the user waits until the prune is over, or the pruner
//! waits until the user is done (at most [`WAIT_FOR_USERS`], then it gives up and
//! deletes nothing). A lease expires [`TTL`] after its last renewal, so an appliance
//! that died holding one blocks the others for at most that long.

use super::EngineError;
use crate::archive::Archive;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How long a lease lasts after its last renewal.
const TTL: Duration = Duration::from_secs(600);
/// How often a held lease is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(120);
/// How often a waiting user or pruner looks again.
const POLL: Duration = Duration::from_secs(2);
/// How long a pruner waits for other appliances to stop using the archive.
const WAIT_FOR_USERS: Duration = Duration::from_secs(1800);
/// How long the `use-` lease stays after the last user is done.
const LINGER: Duration = Duration::from_secs(30);
/// How often the lease thread wakes.
const TICK: Duration = Duration::from_secs(5);

const PRUNE: &str = "prune";

/// What a lease file holds.
#[derive(Serialize, Deserialize)]
struct Record {
    holder: String,
    /// Unix seconds after which the lease no longer counts.
    expires: i64,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn record(holder: &str) -> Vec<u8> {
    let r = Record {
        holder: holder.to_string(),
        expires: now() + TTL.as_secs() as i64,
    };
    serde_json::to_vec(&r).unwrap_or_default()
}

/// A lease's holder when it is still valid (unreadable content counts as expired).
fn valid_holder(bytes: &[u8]) -> Option<String> {
    let r: Record = serde_json::from_slice(bytes).ok()?;
    (r.expires > now()).then_some(r.holder)
}

/// This appliance's leases on one shared archive.
pub(crate) struct Lease {
    inner: Arc<Inner>,
}

struct Inner {
    archive: Archive,
    /// This appliance's id (`<data>/appliance-id`).
    me: String,
    users: Mutex<Users>,
    pruning: AtomicBool,
}

/// This process's use of the archive.
struct Users {
    count: usize,
    /// Whether the `use-` lease file is written (and not yet released).
    held: bool,
    /// When the count last fell to zero.
    idle_since: Option<Instant>,
}

impl Inner {
    fn use_name(&self) -> String {
        format!("use-{}", self.me)
    }

    /// Renews what this appliance holds and releases an idle `use-` lease, until the
    /// lease is dropped.
    fn renew_until_dropped(weak: Weak<Inner>) {
        let mut renewed = Instant::now();
        loop {
            std::thread::sleep(TICK);
            let Some(inner) = weak.upgrade() else { return };
            let renew = renewed.elapsed() >= RENEW_EVERY;
            if renew {
                renewed = Instant::now();
            }
            {
                let mut users = inner.users.lock().unwrap_or_else(|p| p.into_inner());
                let idle = users.idle_since.is_some_and(|t| t.elapsed() >= LINGER);
                if users.held && users.count == 0 && idle {
                    inner.release_use(&mut users);
                } else if users.held && renew {
                    if let Err(e) = inner
                        .archive
                        .write_lease(&inner.use_name(), &record(&inner.me))
                    {
                        tracing::warn!("cannot renew the archive use lease: {e}");
                    }
                }
            }
            if renew && inner.pruning.load(Ordering::SeqCst) {
                if let Err(e) = inner.archive.write_lease(PRUNE, &record(&inner.me)) {
                    tracing::warn!("cannot renew the prune lease: {e}");
                }
            }
        }
    }

    fn release_use(&self, users: &mut Users) {
        match self.archive.delete_lease(&self.use_name()) {
            Ok(()) => users.held = false,
            Err(e) => tracing::warn!("cannot release the archive use lease: {e}"),
        }
    }

    /// Who else holds `prune`, if anyone.
    fn other_pruner(&self) -> Result<Option<String>, EngineError> {
        let holder = self
            .archive
            .read_lease(PRUNE)?
            .and_then(|b| valid_holder(&b));
        Ok(holder.filter(|h| *h != self.me))
    }

    /// Other appliances whose `use-` lease is valid.
    fn other_users(&self) -> Result<Vec<String>, EngineError> {
        let mine = self.use_name();
        Ok(self
            .archive
            .leases()?
            .into_iter()
            .filter(|(name, _)| name.starts_with("use-") && *name != mine)
            .filter_map(|(_, bytes)| valid_holder(&bytes))
            .collect())
    }
}

/// Held while this process uses the archive (see [`Lease::enter`]).
pub(crate) struct UseGuard {
    inner: Arc<Inner>,
}

impl Drop for UseGuard {
    fn drop(&mut self) {
        let mut users = self.inner.users.lock().unwrap_or_else(|p| p.into_inner());
        users.count = users.count.saturating_sub(1);
        if users.count == 0 {
            users.idle_since = Some(Instant::now());
        }
    }
}

impl Drop for Lease {
    /// The archive is closed (the process ends): nothing of it is in use any more.
    fn drop(&mut self) {
        let mut users = self.inner.users.lock().unwrap_or_else(|p| p.into_inner());
        if users.held {
            self.inner.release_use(&mut users);
        }
    }
}

/// Held while this appliance prunes (see [`Lease::prune`]).
pub(crate) struct PruneGuard {
    inner: Arc<Inner>,
    /// Whether the lease is this appliance's to delete when done.
    release: bool,
}

impl Drop for PruneGuard {
    fn drop(&mut self) {
        self.inner.pruning.store(false, Ordering::SeqCst);
        if !self.release {
            return;
        }
        if let Err(e) = self.inner.archive.delete_lease(PRUNE) {
            tracing::warn!("cannot release the prune lease: {e}");
        }
    }
}

impl Lease {
    /// Leases of appliance `me` on `archive` (nothing is written until used).
    pub(crate) fn new(archive: Archive, me: String) -> Lease {
        let inner = Arc::new(Inner {
            archive,
            me,
            users: Mutex::new(Users {
                count: 0,
                held: false,
                idle_since: None,
            }),
            pruning: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("reposafe-lease".into())
            .spawn(move || Inner::renew_until_dropped(weak))
            .ok();
        Lease { inner }
    }

    /// Marks this appliance as using the archive, waiting while another prunes.
    pub(crate) fn enter(&self) -> Result<UseGuard, EngineError> {
        let inner = &self.inner;
        let mut users = inner.users.lock().unwrap_or_else(|p| p.into_inner());
        // While the lease stays written, a pruner that started meanwhile waits for it.
        if !users.held {
            let mut told = false;
            loop {
                inner
                    .archive
                    .write_lease(&inner.use_name(), &record(&inner.me))?;
                let Some(pruner) = inner.other_pruner()? else {
                    break;
                };
                inner.archive.delete_lease(&inner.use_name())?;
                if !told {
                    tracing::info!("appliance {pruner} is pruning the archive: waiting");
                    told = true;
                }
                std::thread::sleep(POLL);
            }
            users.held = true;
        }
        users.count += 1;
        users.idle_since = None;
        Ok(UseGuard {
            inner: inner.clone(),
        })
    }

    /// Takes the prune lease and waits until no other appliance uses the archive.
    /// Another appliance pruning, or users that stay past [`WAIT_FOR_USERS`], is a
    /// conflict: nothing is deleted.
    pub(crate) fn prune(&self) -> Result<PruneGuard, EngineError> {
        self.prune_within(WAIT_FOR_USERS)
    }

    fn prune_within(&self, wait: Duration) -> Result<PruneGuard, EngineError> {
        let inner = &self.inner;
        if !inner.archive.create_lease(PRUNE, &record(&inner.me))? {
            if let Some(holder) = inner.other_pruner()? {
                return Err(EngineError::Conflict(format!(
                    "appliance {holder} is pruning this archive; try again when it is done"
                )));
            }
            // Expired (or ours from before a restart): take it over.
            inner.archive.write_lease(PRUNE, &record(&inner.me))?;
        }
        let mut guard = PruneGuard {
            inner: inner.clone(),
            release: true,
        };
        inner.pruning.store(true, Ordering::SeqCst);
        // Two appliances taking over an expired lease at once: the later write wins,
        // and the other sees it here and backs off (leaving the lease to the winner).
        std::thread::sleep(Duration::from_millis(200));
        if let Some(holder) = inner.other_pruner()? {
            guard.release = false;
            return Err(EngineError::Conflict(format!(
                "appliance {holder} took the prune lease of this archive; try again when it is done"
            )));
        }
        let start = Instant::now();
        loop {
            let users = inner.other_users()?;
            if users.is_empty() {
                return Ok(guard);
            }
            if start.elapsed() >= wait {
                return Err(EngineError::Conflict(format!(
                    "appliance(s) {} kept using this archive for {} s; prune deleted nothing, try again later",
                    users.join(", "),
                    wait.as_secs()
                )));
            }
            std::thread::sleep(POLL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{Backend, FileKind};

    /// Two appliances on one store (a local directory stands in for the bucket: the
    /// protocol needs only create-if-absent, write, read, list and delete).
    fn two_appliances() -> (tempfile::TempDir, Lease, Lease) {
        let dir = tempfile::tempdir().expect("tmp");
        let a = Archive::open_or_create(dir.path()).expect("archive");
        let b = Archive::open(dir.path()).expect("archive");
        (
            dir,
            Lease::new(a, "aaaa".into()),
            Lease::new(b, "bbbb".into()),
        )
    }

    #[test]
    fn a_prune_waits_for_another_appliances_user_and_one_pruner_wins() {
        let (dir, a, b) = two_appliances();
        let using = a.enter().expect("a uses the archive");
        let waited = b.prune_within(Duration::from_secs(3));
        let err = waited
            .err()
            .expect("b's prune gives up while a uses the archive");
        assert!(err.to_string().contains("aaaa"), "{err}");
        let local = crate::archive::LocalBackend::new(dir.path());
        assert!(
            !local.exists(FileKind::Lock, PRUNE).expect("exists"),
            "a prune that gave up leaves no lease"
        );
        drop(using);
        // Released when the archive is closed (or LINGER after the last user).
        a.inner
            .release_use(&mut a.inner.users.lock().expect("users"));
        let pruning = b.prune_within(Duration::from_secs(3)).expect("b prunes");
        let second = a.prune_within(Duration::from_secs(1));
        let err = second.err().expect("one pruner at a time");
        assert!(err.to_string().contains("bbbb is pruning"), "{err}");
        // A user waits for the prune to end, then proceeds.
        let waiter = std::thread::spawn(move || {
            let t = Instant::now();
            let guard = a.enter().expect("a enters after the prune");
            drop(guard);
            let waited = t.elapsed();
            drop(a);
            waited
        });
        std::thread::sleep(Duration::from_millis(2500));
        drop(pruning);
        let waited = waiter.join().expect("join");
        assert!(waited >= Duration::from_secs(2), "a waited {waited:?}");
        assert!(
            local.list(FileKind::Lock, "").expect("list").is_empty(),
            "every lease released"
        );
    }

    #[test]
    fn an_expired_prune_lease_is_taken_over() {
        let (_dir, a, b) = two_appliances();
        let stale = serde_json::to_vec(&Record {
            holder: "aaaa".into(),
            expires: now() - 1,
        })
        .expect("json");
        assert!(a.inner.archive.create_lease(PRUNE, &stale).expect("create"));
        let guard = b.prune_within(Duration::from_secs(1)).expect("taken over");
        let held = b
            .inner
            .archive
            .read_lease(PRUNE)
            .expect("read")
            .expect("held");
        assert_eq!(valid_holder(&held).as_deref(), Some("bbbb"));
        drop(guard);
    }
}
