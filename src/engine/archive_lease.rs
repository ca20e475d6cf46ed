//! Prune's sweep against *other appliances* using the same archive in object storage
//! (the in-process half is `archive_gate`).
//!
//! Two kinds of lease file live in the archive's `locks/`:
//! - `use-<holder>`: this process is using the archive's blobs (a backup between
//!   finding a blob and naming it in a manifest, a consolidation, a restore, a check).
//!   One per process, held while any of its users is and [`LINGER`] after the last (so
//!   a job going from repository to repository costs no requests), renewed while held,
//!   released when the process closes the archive.
//! - `prune`: one appliance is sweeping. Created only if absent (`If-None-Match`), so
//!   one appliance wins; renewed while held; taken over only once expired.
//!
//! A user writes its `use-` lease *before* it looks for `prune`, and a pruner creates
//! `prune` *before* it looks for `use-` leases. Object stores read their own writes in
//! order (S3 is strongly consistent), so of a user and a pruner starting together at
//! least one sees the other: the user waits until the prune is over, or the pruner
//! waits until the user is done (at most [`WAIT_FOR_USERS`], then it gives up and
//! deletes nothing). A process that holds its lease still looks for a pruner every
//! [`RECHECK`] when a new user comes, and lets it in once its current users are done.
//! A lease expires [`TTL`] after its last renewal, so an appliance that died holding
//! one blocks the others for at most that long. Holders are named
//! `<appliance id>.<process nonce>`: a copied data dir is another holder, and a prune
//! lease left by this appliance's previous process is taken over at once.

use super::EngineError;
use crate::archive::Archive;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// How long a lease lasts after its last renewal, by the writer's clock. Object stores
/// refuse requests signed more than 15 minutes off their time, so with 30 minutes a
/// lease renewed every 2 minutes stays valid to every appliance the store accepts.
const TTL: Duration = Duration::from_secs(1800);
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
/// How often a process holding its `use-` lease looks for a pruner as users come.
const RECHECK: Duration = Duration::from_secs(30);

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

/// The appliance part of a holder's name.
fn appliance_of(holder: &str) -> &str {
    holder.split('.').next().unwrap_or(holder)
}

/// This process's leases on one shared archive.
pub(crate) struct Lease {
    inner: Arc<Inner>,
}

struct Inner {
    archive: Archive,
    /// This process: `<appliance id>.<nonce>`.
    me: String,
    users: Mutex<Users>,
    /// Whether this process holds `prune`; its lock orders renewal against release.
    pruning: Mutex<bool>,
}

/// This process's use of the archive.
struct Users {
    count: usize,
    /// Whether the `use-` lease file is written (and not yet released).
    held: bool,
    /// When it was last written successfully.
    renewed: Instant,
    /// When a pruner was last looked for (`None`: look at the next user).
    prune_checked: Option<Instant>,
    /// When the count last fell to zero.
    idle_since: Option<Instant>,
}

impl Inner {
    fn use_name(&self) -> String {
        format!("use-{}", self.me.replace('.', "-"))
    }

    fn lock_users(&self) -> MutexGuard<'_, Users> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_pruning(&self) -> MutexGuard<'_, bool> {
        self.pruning.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Renews what this process holds and releases an idle `use-` lease, until the
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
                let mut users = inner.lock_users();
                let idle = users.idle_since.is_some_and(|t| t.elapsed() >= LINGER);
                if users.held && users.count == 0 && idle {
                    inner.release_use(&mut users);
                } else if users.held && renew {
                    match inner
                        .archive
                        .write_lease(&inner.use_name(), &record(&inner.me))
                    {
                        Ok(()) => users.renewed = Instant::now(),
                        Err(e) => tracing::warn!("cannot renew the archive use lease: {e}"),
                    }
                }
            }
            if renew {
                let pruning = inner.lock_pruning();
                if *pruning {
                    if let Err(e) = inner.archive.write_lease(PRUNE, &record(&inner.me)) {
                        tracing::warn!("cannot renew the prune lease: {e}");
                    }
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

    /// Who else holds a valid `prune`, if anyone (this appliance's earlier process
    /// does not count: one process has a data dir at a time).
    fn other_pruner(&self) -> Result<Option<String>, EngineError> {
        let holder = self
            .archive
            .read_lease(PRUNE)?
            .and_then(|b| valid_holder(&b));
        Ok(holder.filter(|h| appliance_of(h) != appliance_of(&self.me)))
    }

    /// The current holder of `prune`, valid or not.
    fn prune_holder(&self) -> Result<Option<String>, EngineError> {
        Ok(self
            .archive
            .read_lease(PRUNE)?
            .and_then(|b| serde_json::from_slice::<Record>(&b).ok().map(|r| r.holder)))
    }

    /// Other processes whose `use-` lease is valid.
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
        let mut users = self.inner.lock_users();
        users.count = users.count.saturating_sub(1);
        if users.count == 0 {
            users.idle_since = Some(Instant::now());
        }
    }
}

/// Held while this process prunes (see [`Lease::prune`]).
pub(crate) struct PruneGuard {
    inner: Arc<Inner>,
    /// Whether the lease is this process's to delete when done.
    release: bool,
}

impl Drop for PruneGuard {
    fn drop(&mut self) {
        let mut pruning = self.inner.lock_pruning();
        *pruning = false;
        if !self.release {
            return;
        }
        // Only our own lease: one taken over meanwhile is the taker's.
        match self.inner.prune_holder() {
            Ok(Some(holder)) if holder != self.inner.me => {}
            _ => {
                if let Err(e) = self.inner.archive.delete_lease(PRUNE) {
                    tracing::warn!("cannot release the prune lease: {e}");
                }
            }
        }
    }
}

impl Drop for Lease {
    /// The archive is closed (the process ends): nothing of it is in use any more.
    fn drop(&mut self) {
        let mut users = self.inner.lock_users();
        if users.held {
            self.inner.release_use(&mut users);
        }
    }
}

impl Lease {
    /// Leases of process `me` (`<appliance id>.<nonce>`) on `archive`; nothing is
    /// written until used.
    pub(crate) fn new(archive: Archive, me: String) -> Lease {
        let inner = Arc::new(Inner {
            archive,
            me,
            users: Mutex::new(Users {
                count: 0,
                held: false,
                renewed: Instant::now(),
                prune_checked: None,
                idle_since: None,
            }),
            pruning: Mutex::new(false),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("reposafe-lease".into())
            .spawn(move || Inner::renew_until_dropped(weak))
            .ok();
        Lease { inner }
    }

    /// Marks this process as using the archive, waiting while another appliance prunes.
    pub(crate) fn enter(&self) -> Result<UseGuard, EngineError> {
        let inner = &self.inner;
        let mut told = false;
        let mut users = inner.lock_users();
        loop {
            // A lease renewed lately is valid to everyone: a pruner that started
            // meanwhile waits for it. Look for one now and then all the same, so new
            // users wait for it instead of keeping it out for ever.
            let fresh = users.held && users.renewed.elapsed() < TTL / 2;
            let checked_lately = users.prune_checked.is_some_and(|t| t.elapsed() < RECHECK);
            if fresh && checked_lately {
                break;
            }
            if !fresh {
                inner
                    .archive
                    .write_lease(&inner.use_name(), &record(&inner.me))?;
                users.held = true;
                users.renewed = Instant::now();
            }
            users.prune_checked = Some(Instant::now());
            let pruner = match inner.other_pruner() {
                Ok(p) => p,
                Err(e) => {
                    if users.count == 0 {
                        inner.release_use(&mut users);
                    }
                    return Err(e);
                }
            };
            let Some(pruner) = pruner else { break };
            // Step aside once this process's current users are done.
            if users.count == 0 && users.held {
                inner.release_use(&mut users);
            }
            if !told {
                tracing::info!(
                    "appliance {} is pruning the archive: waiting",
                    appliance_of(&pruner)
                );
                told = true;
            }
            users.prune_checked = None;
            drop(users);
            std::thread::sleep(POLL);
            users = inner.lock_users();
        }
        users.count += 1;
        users.idle_since = None;
        Ok(UseGuard {
            inner: inner.clone(),
        })
    }

    /// Takes the prune lease and waits until no other process uses the archive.
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
                    "appliance {} is pruning this archive; try again when it is done",
                    appliance_of(&holder)
                )));
            }
            // Expired, or left by this appliance's previous process: take it over.
            inner.archive.write_lease(PRUNE, &record(&inner.me))?;
        }
        *inner.lock_pruning() = true;
        let mut guard = PruneGuard {
            inner: inner.clone(),
            release: true,
        };
        // Two appliances taking over an expired lease at once: the later write wins,
        // and the other sees it here and backs off (leaving the lease to the winner).
        std::thread::sleep(Duration::from_millis(200));
        if inner.prune_holder()?.as_deref() != Some(inner.me.as_str()) {
            guard.release = false;
            return Err(EngineError::Conflict(
                "another appliance took the prune lease of this archive; try again when it is done"
                    .into(),
            ));
        }
        let start = Instant::now();
        loop {
            let users = inner.other_users()?;
            if users.is_empty() {
                return Ok(guard);
            }
            if start.elapsed() >= wait {
                let names: Vec<&str> = users.iter().map(|u| appliance_of(u)).collect();
                return Err(EngineError::Conflict(format!(
                    "appliance(s) {} kept using this archive for {} s; prune deleted nothing, try again later",
                    names.join(", "),
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
            Lease::new(a, "aaaa.1".into()),
            Lease::new(b, "bbbb.1".into()),
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
            holder: "aaaa.0".into(),
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
        assert_eq!(valid_holder(&held).as_deref(), Some("bbbb.1"));
        drop(guard);
    }
}
