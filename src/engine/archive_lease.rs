//! Prune's sweep against *other appliances* using the same archive in object storage
//! (the in-process half is `archive_gate`).
//!
//! Two kinds of lease file live in the archive's `locks/`:
//! - `use-<holder>-<epoch>`: this process is using the archive's blobs (a backup between
//!   finding a blob and naming it in a manifest, a consolidation, a restore, a check).
//!   One per process, held while any of its users is and [`LINGER`] after the last (so
//!   a job going from repository to repository costs no requests), renewed while held,
//!   released when the process closes the archive.
//! - `prune`: one appliance is sweeping. Created only if absent (`If-None-Match`), so
//!   one appliance wins; renewed while held, and taken over only once expired, both
//!   only while the file is still the version the writer read (`If-Match`). So of two
//!   appliances taking over an expired lease one wins, and a pruner that stalled past
//!   the expiry while another took over learns it at its next renewal: the sweep asks
//!   [`PruneGuard::still_held`] before every deletion, which renews first when the
//!   last renewal is older than [`RENEW_EVERY`], and stops deleting once it is lost.
//!
//! A user writes its `use-` lease *before* it looks for `prune`, and a pruner creates
//! `prune` *before* it looks for `use-` leases. Object stores read their own writes in
//! order (S3 is strongly consistent), so of a user and a pruner starting together at
//! least one sees the other: the user waits until the prune is over, or the pruner
//! waits until the user is done (at most [`WAIT_FOR_USERS`], then it gives up and
//! deletes nothing). A process that holds its lease still looks for a pruner every
//! [`RECHECK`] when a new user comes, and lets it in once its current users are done.
//! Its users ask [`UseGuard::still_valid`] before they name blobs in a manifest: if the
//! lease lapsed since they entered (counted by the wall clock, which goes on while the
//! host is suspended), a pruner may have deleted blobs they found, so they commit
//! nothing. A lapsed lease is never renewed; the next user writes a new one under a
//! new name (`use-<holder>-<epoch>`), so a pruner that removes a lease expired long
//! ago ([`STALE_AFTER`], left by a killed process) never removes one in use.
//! A lease expires [`TTL`] after its last renewal, so an appliance that died holding
//! one blocks the others for at most that long. Holders are named
//! `<appliance id>.<process nonce>`: a copied data dir is another holder, and a prune
//! lease left by this appliance's previous process is taken over at once.

use super::EngineError;
use crate::archive::Archive;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// How long a lease lasts after its last renewal, by the writer's clock. Expiries are
/// read by other appliances' clocks, which are assumed to agree with the writer's
/// within 15 minutes (NTP; object stores refuse requests signed more than 15 minutes
/// off their own time, which bounds each clock but not the difference of two): a lease
/// renewed every 2 minutes then stays valid to every other appliance.
const TTL: Duration = Duration::from_secs(1800);
/// How often a held lease is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(120);
/// How long after its last write this process counts on its `use-` lease: from then on
/// an appliance whose clock runs 15 minutes ahead may see it expired. Once that long
/// passed without a renewal (the host slept, or the store could not be reached), or a
/// renewal's write landed only that long after the last one, the lease has *lapsed*:
/// the users that entered before commit nothing, and it is never renewed; the next user
/// writes a new one, under a new name.
const USE_VALID_FOR: i64 = TTL.as_secs() as i64 / 2;
/// How much sooner than [`USE_VALID_FOR`] a user stops counting on the lease when it
/// is about to commit: time for the commit's own requests.
const COMMIT_MARGIN: i64 = 300;
/// A clock set back by more than this counts as a lapse (the lease's age is unknown).
const CLOCK_SET_BACK: i64 = 60;
/// How long after its expiry a pruner removes another process's `use-` lease (left by a
/// process that was killed). Its holder, if alive, counted it lapsed long before and
/// never writes that name again, so the removal cannot hit a lease in use.
const STALE_AFTER: i64 = 3600;
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
    /// This process's hold of `prune`, if any; its lock orders renewal against release.
    pruning: Mutex<Option<PruneHold>>,
    /// Signalled when this process lets go of `prune` (its prunes take turns).
    prune_done: Condvar,
}

/// This process's hold of the `prune` lease.
struct PruneHold {
    /// The lease file's version as this process last wrote it (its `If-Match`).
    version: String,
    /// When it was last written successfully, in Unix seconds: the wall clock, which
    /// goes on while the host is suspended (the monotonic clock stands still then).
    written: i64,
    /// The lease ran out (this process stalled near or past its expiry) or another
    /// appliance replaced it: nothing more may be deleted.
    lost: bool,
}

/// How long before its expiry a hold no longer counts: from its expiry on, other
/// appliances' backups no longer wait for it, and another appliance may take it over.
const EXPIRY_MARGIN: i64 = 300;

impl PruneHold {
    fn new(version: String, written: i64) -> PruneHold {
        PruneHold {
            version,
            written,
            lost: false,
        }
    }

    /// Whether the lease is (nearly) expired by the last write that went through.
    fn expired(&self) -> bool {
        now() >= self.written + TTL.as_secs() as i64 - EXPIRY_MARGIN
    }

    /// Whether it is time to renew.
    fn due(&self) -> bool {
        now() - self.written >= RENEW_EVERY.as_secs() as i64
    }
}

fn lost_error() -> EngineError {
    EngineError::Conflict(
        "the prune lease of this archive ran out or another appliance took it over (this prune stalled past its expiry): it deleted nothing more; run prune again".into(),
    )
}

fn pruning_error(holder: &str) -> EngineError {
    EngineError::Conflict(format!(
        "appliance {} is pruning this archive; try again when it is done",
        appliance_of(holder)
    ))
}

/// This process's use of the archive.
struct Users {
    count: usize,
    /// Whether the `use-` lease file is written (and not yet released).
    held: bool,
    /// When its last successful write started, in Unix seconds (the wall clock).
    written: i64,
    /// How many times the lease was written anew (not renewed), the last part of its
    /// name: a user that entered before the last time commits nothing.
    epoch: u64,
    /// The lease lapsed ([`USE_VALID_FOR`]); it stays so until written anew.
    lapsed: bool,
    /// When a pruner was last looked for (`None`: look at the next user).
    prune_checked: Option<Instant>,
    /// When the count last fell to zero.
    idle_since: Option<Instant>,
}

impl Inner {
    /// The name of this process's `use-` lease of `epoch`.
    fn use_name(&self, epoch: u64) -> String {
        format!("use-{}-{epoch}", self.me.replace('.', "-"))
    }

    fn lock_users(&self) -> MutexGuard<'_, Users> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_pruning(&self) -> MutexGuard<'_, Option<PruneHold>> {
        self.pruning.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Renews `prune` while it is still the version this process wrote; marks the
    /// hold lost when it (nearly) expired first — other appliances' backups went
    /// ahead meanwhile, whoever holds the file now — or another appliance replaced or
    /// removed it.
    fn renew_prune(&self, hold: &mut PruneHold) -> Result<(), EngineError> {
        if hold.expired() {
            tracing::warn!("{}", lost_error());
            hold.lost = true;
            return Ok(());
        }
        let written = now();
        match self.replace_prune(&hold.version)? {
            Some(version) => {
                hold.version = version;
                hold.written = written;
            }
            None => {
                tracing::warn!("{}", lost_error());
                hold.lost = true;
            }
        }
        Ok(())
    }

    /// Replaces `prune` at `version` with this process's record: its new version, or
    /// `None` when another appliance's write came first.
    fn replace_prune(&self, version: &str) -> Result<Option<String>, EngineError> {
        match self
            .archive
            .replace_lease(PRUNE, &record(&self.me), version)?
        {
            Some(version) => Ok(Some(version)),
            None => self.mine_now(),
        }
    }

    /// The version of `prune` when it names this process as its holder: a
    /// conditional write that was retried after its first try went through is
    /// refused (412), yet the file is this process's.
    fn mine_now(&self) -> Result<Option<String>, EngineError> {
        Ok(self
            .archive
            .read_lease_versioned(PRUNE)?
            .and_then(|(bytes, version)| {
                let r: Record = serde_json::from_slice(&bytes).ok()?;
                (r.holder == self.me).then_some(version)
            }))
    }

    /// Creates `prune`, or takes it over when it expired or was left by this
    /// appliance's previous process: its version. Both writes are conditional, so of
    /// two appliances taking it at once one wins and the other gets a conflict.
    fn take_prune(&self) -> Result<String, EngineError> {
        // A lease released between the create and the read: try again, a few times.
        for _ in 0..3 {
            if let Some(version) = self.archive.create_lease(PRUNE, &record(&self.me))? {
                return Ok(version);
            }
            let Some((bytes, version)) = self.archive.read_lease_versioned(PRUNE)? else {
                continue;
            };
            let holder = valid_holder(&bytes);
            if let Some(holder) = holder.filter(|h| appliance_of(h) != appliance_of(&self.me)) {
                return Err(pruning_error(&holder));
            }
            return match self.replace_prune(&version)? {
                Some(version) => Ok(version),
                None => Err(EngineError::Conflict(
                    "another appliance took the prune lease of this archive; try again when it is done"
                        .into(),
                )),
            };
        }
        Err(EngineError::Conflict(
            "the prune lease of this archive keeps changing; try again later".into(),
        ))
    }

    /// Renews what this process holds and releases an idle `use-` lease, until the
    /// lease is dropped. Renewals go by the wall clock: after the host slept, a lease
    /// is renewed (or found lapsed) at once.
    fn renew_until_dropped(weak: Weak<Inner>) {
        let mut renewed = now();
        loop {
            std::thread::sleep(TICK);
            let Some(inner) = weak.upgrade() else { return };
            // A clock set back counts as time gone by, too.
            let renew = !(0..RENEW_EVERY.as_secs() as i64).contains(&(now() - renewed));
            if renew {
                renewed = now();
            }
            {
                let mut users = inner.lock_users();
                let idle = users.idle_since.is_some_and(|t| t.elapsed() >= LINGER);
                if users.held && users.count == 0 && idle {
                    inner.release_use(&mut users);
                } else if users.held && renew {
                    inner.renew_use(&mut users);
                }
            }
            if renew {
                let mut pruning = inner.lock_pruning();
                if let Some(hold) = pruning.as_mut().filter(|h| !h.lost) {
                    if let Err(e) = inner.renew_prune(hold) {
                        tracing::warn!("cannot renew the prune lease: {e}");
                    }
                }
            }
        }
    }

    /// Renews the `use-` lease, unless it lapsed: its current users commit nothing
    /// ([`UseGuard::still_valid`]) and the next one writes it anew.
    fn renew_use(&self, users: &mut Users) {
        if users.note_lapse() {
            tracing::warn!("{}", lapsed_error());
            return;
        }
        // The new file counts from the time its write starts (`record` reads the clock
        // then), so that is what is recorded; the file it replaces counts from the last
        // renewal, and is checked against when the write lands.
        let started = now();
        match self
            .archive
            .write_lease(&self.use_name(users.epoch), &record(&self.me))
        {
            Ok(()) => users.renewal_landed(started),
            Err(e) => tracing::warn!("cannot renew the archive use lease: {e}"),
        }
    }

    /// Writes a new `use-` lease (the first, or after the last lapsed or was released)
    /// under the next epoch's name, removing a lapsed one's file.
    fn write_use_anew(&self, users: &mut Users) -> Result<(), EngineError> {
        let epoch = users.epoch + 1;
        let written = now();
        self.archive
            .write_lease(&self.use_name(epoch), &record(&self.me))?;
        if users.held {
            if let Err(e) = self.archive.delete_lease(&self.use_name(users.epoch)) {
                tracing::warn!("cannot remove the lapsed archive use lease: {e}");
            }
        }
        users.held = true;
        users.written = written;
        users.epoch = epoch;
        users.lapsed = false;
        Ok(())
    }

    fn release_use(&self, users: &mut Users) {
        match self.archive.delete_lease(&self.use_name(users.epoch)) {
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

    /// Other processes whose `use-` lease is valid. Asked by a pruner holding `prune`,
    /// which also removes `use-` leases expired for over [`STALE_AFTER`] (left by
    /// processes that were killed): no holder renews such a lease, it writes it anew
    /// and looks for a pruner after.
    fn other_users(&self) -> Result<Vec<String>, EngineError> {
        let mut valid = Vec::new();
        for (name, bytes) in self.archive.leases()? {
            if !name.starts_with("use-") {
                continue;
            }
            match serde_json::from_slice::<Record>(&bytes) {
                Ok(r) if r.expires > now() && r.holder != self.me => valid.push(r.holder),
                Ok(r) if now() - r.expires > STALE_AFTER => {
                    if let Err(e) = self.archive.delete_lease(&name) {
                        tracing::warn!("cannot remove the expired lease {name}: {e}");
                    }
                }
                _ => {}
            }
        }
        Ok(valid)
    }
}

impl Users {
    /// Whether the lease lapsed (and is marked so for good, a clock set back after
    /// notwithstanding).
    fn note_lapse(&mut self) -> bool {
        let age = now() - self.written;
        if !(-CLOCK_SET_BACK..USE_VALID_FOR).contains(&age) {
            self.lapsed = true;
        }
        self.lapsed
    }

    /// Records a renewal whose write started at `started` and has landed. One that landed
    /// [`USE_VALID_FOR`] or more after the last renewal (a slow store, retries, the host
    /// slept during the write) replaced a file an appliance whose clock runs ahead may
    /// already have seen expired, and pruned meanwhile: the lease lapsed, although the
    /// new file is fresh.
    fn renewal_landed(&mut self, started: i64) {
        if !self.note_lapse() {
            self.written = started;
        }
    }
}

fn lapsed_error() -> EngineError {
    EngineError::Conflict(format!(
        "this appliance's lease on the shared archive lapsed while this work ran (not renewed for {} minutes or more: the host slept or the store could not be reached), so another appliance may have pruned what it found in the archive; nothing was committed, run it again",
        USE_VALID_FOR / 60
    ))
}

/// Held while this process uses the archive (see [`Lease::enter`]).
pub(crate) struct UseGuard {
    inner: Arc<Inner>,
    /// The lease's epoch when this user entered.
    epoch: u64,
}

impl UseGuard {
    /// Whether this process's `use-` lease stayed valid since this user entered, so
    /// that no other appliance's prune deleted what it found in the archive: asked
    /// before a manifest names those blobs. A conflict once it lapsed.
    pub(crate) fn still_valid(&self) -> Result<(), EngineError> {
        let mut users = self.inner.lock_users();
        let lapsed = users.note_lapse();
        let soon = now() - users.written >= USE_VALID_FOR - COMMIT_MARGIN;
        if users.held && users.epoch == self.epoch && !lapsed && !soon {
            Ok(())
        } else {
            Err(lapsed_error())
        }
    }
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
}

impl PruneGuard {
    /// Whether this process still holds `prune`, so the sweep may delete. A hold not
    /// renewed for [`RENEW_EVERY`] (the process stalled, or the store was unreachable)
    /// is renewed first, conditionally: that is where a stalled pruner learns that
    /// another appliance took the lease over.
    pub(crate) fn still_held(&self) -> Result<(), EngineError> {
        let mut pruning = self.inner.lock_pruning();
        let Some(hold) = pruning.as_mut() else {
            return Err(lost_error());
        };
        if !hold.lost && hold.due() {
            self.inner.renew_prune(hold)?;
        }
        if hold.expired() {
            hold.lost = true;
        }
        if hold.lost {
            Err(lost_error())
        } else {
            Ok(())
        }
    }
}

impl Drop for PruneGuard {
    fn drop(&mut self) {
        let mut pruning = self.inner.lock_pruning();
        pruning.take();
        self.inner.prune_done.notify_all();
        // Only while it names this process: one taken over meanwhile is the taker's.
        match self.inner.mine_now() {
            Ok(Some(_)) => {
                if let Err(e) = self.inner.archive.delete_lease(PRUNE) {
                    tracing::warn!("cannot release the prune lease: {e}");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("cannot release the prune lease: {e}"),
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
                written: 0,
                epoch: 0,
                lapsed: false,
                prune_checked: None,
                idle_since: None,
            }),
            pruning: Mutex::new(None),
            prune_done: Condvar::new(),
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
            let fresh = users.held && !users.note_lapse();
            let checked_lately = users.prune_checked.is_some_and(|t| t.elapsed() < RECHECK);
            if fresh && checked_lately {
                break;
            }
            if !fresh {
                inner.write_use_anew(&mut users)?;
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
            epoch: users.epoch,
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
        // This process's prunes take turns (a sweep waits for the one before it).
        let mut pruning = inner.lock_pruning();
        while pruning.is_some() {
            pruning = inner
                .prune_done
                .wait(pruning)
                .unwrap_or_else(|p| p.into_inner());
        }
        let written = now();
        let version = inner.take_prune()?;
        *pruning = Some(PruneHold::new(version, written));
        drop(pruning);
        let guard = PruneGuard {
            inner: inner.clone(),
        };
        let start = Instant::now();
        loop {
            guard.still_held()?;
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
    use crate::archive::memory::MemoryBackend;
    use crate::archive::{Backend, FileKind, Source};

    /// Two appliances on one store (the in-memory backend stands in for the bucket:
    /// the protocol needs create-if-absent, replace-if-unchanged, write, read, list
    /// and delete).
    fn two_appliances() -> (Arc<MemoryBackend>, Lease, Lease) {
        let store = Arc::new(MemoryBackend::default());
        let a = Archive::open_or_create_on(store.clone()).expect("archive");
        let b = Archive::open_on(store.clone()).expect("archive");
        (
            store,
            Lease::new(a, "aaaa.1".into()),
            Lease::new(b, "bbbb.1".into()),
        )
    }

    fn stale_record(holder: &str) -> Vec<u8> {
        serde_json::to_vec(&Record {
            holder: holder.into(),
            expires: now() - 1,
        })
        .expect("json")
    }

    #[test]
    fn a_renewal_that_lands_too_long_after_the_last_one_is_a_lapse() {
        let (_store, a, _b) = two_appliances();
        let user = a.enter().expect("a uses the archive");
        // Started 14 minutes after the last renewal, landed 16 minutes after it.
        let last = now() - 16 * 60;
        {
            let mut users = a.inner.lock_users();
            users.written = last;
            users.renewal_landed(last + 14 * 60);
            assert!(users.lapsed, "the replaced file may have looked expired");
            assert_eq!(users.written, last, "a lapsed lease is not renewed");
        }
        assert!(user.still_valid().is_err(), "nothing is committed after it");

        let (_store, c, _d) = two_appliances();
        let _user = c.enter().expect("c uses the archive");
        let last = now() - 5 * 60;
        let mut users = c.inner.lock_users();
        users.written = last;
        users.renewal_landed(now() - 60);
        assert!(!users.lapsed, "landed in time");
        assert!(
            (now() - 60 - users.written).abs() <= 1,
            "renewed as of the write's start"
        );
    }

    #[test]
    fn a_prune_waits_for_another_appliances_user_and_one_pruner_wins() {
        let (store, a, b) = two_appliances();
        let using = a.enter().expect("a uses the archive");
        let waited = b.prune_within(Duration::from_secs(3));
        let err = waited
            .err()
            .expect("b's prune gives up while a uses the archive");
        assert!(err.to_string().contains("aaaa"), "{err}");
        assert!(
            !store.exists(FileKind::Lock, PRUNE).expect("exists"),
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
            store.list(FileKind::Lock, "").expect("list").is_empty(),
            "every lease released"
        );
    }

    #[test]
    fn an_expired_prune_lease_is_taken_over_by_one_appliance_only() {
        let (store, a, b) = two_appliances();
        let c = Lease::new(
            Archive::open_on(store.clone()).expect("archive"),
            "cccc.1".into(),
        );
        assert!(a
            .inner
            .archive
            .create_lease(PRUNE, &stale_record("aaaa.0"))
            .expect("create")
            .is_some());
        // b and c both read the expired lease; b replaces it first.
        let (_, read_by_c) = c
            .inner
            .archive
            .read_lease_versioned(PRUNE)
            .expect("read")
            .expect("there");
        let guard = b.prune_within(Duration::from_secs(1)).expect("taken over");
        let lost_race = c
            .inner
            .archive
            .replace_lease(PRUNE, &record("cccc.1"), &read_by_c)
            .expect("replace");
        assert_eq!(lost_race, None, "c's takeover of the version it read fails");
        let err = c
            .prune_within(Duration::from_secs(1))
            .err()
            .expect("b prunes");
        assert!(err.to_string().contains("bbbb is pruning"), "{err}");
        let held = store.read(FileKind::Lock, PRUNE).expect("held");
        assert_eq!(valid_holder(&held).as_deref(), Some("bbbb.1"));
        drop(guard);
        assert!(!store.exists(FileKind::Lock, PRUNE).expect("exists"));
    }

    #[test]
    fn a_pruner_that_stalled_past_the_expiry_learns_it_lost_the_lease_and_stops() {
        let (store, a, b) = two_appliances();
        let guard = a.prune_within(Duration::from_secs(1)).expect("a prunes");
        guard.still_held().expect("held while renewed");
        // a stalls past the expiry: its lease is expired when b looks.
        let (_, version) = store
            .read_versioned(FileKind::Lock, PRUNE)
            .expect("read")
            .expect("there");
        store
            .replace_if(FileKind::Lock, PRUNE, &stale_record("aaaa.1"), &version)
            .expect("age")
            .expect("replaced");
        let b_guard = b
            .prune_within(Duration::from_secs(1))
            .expect("b takes over");
        // a wakes: its next check renews conditionally and finds the lease gone.
        if let Some(hold) = a.inner.lock_pruning().as_mut() {
            hold.written -= RENEW_EVERY.as_secs() as i64;
        }
        let err = guard.still_held().expect_err("lost");
        assert!(
            err.to_string().contains("another appliance took it over"),
            "{err}"
        );
        assert!(guard.still_held().is_err(), "stays lost");
        drop(guard);
        let held = store.read(FileKind::Lock, PRUNE).expect("b's lease stays");
        assert_eq!(valid_holder(&held).as_deref(), Some("bbbb.1"));
        b_guard.still_held().expect("b holds it");
        drop(b_guard);
        assert!(!store.exists(FileKind::Lock, PRUNE).expect("exists"));
    }

    #[test]
    fn one_processs_prunes_take_turns() {
        let (_store, a, _b) = two_appliances();
        let a = Arc::new(a);
        let first = a.prune_within(Duration::from_secs(1)).expect("first");
        let second = {
            let a = a.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                let guard = a.prune_within(Duration::from_secs(1)).expect("second");
                guard.still_held().expect("held");
                t.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(500));
        first
            .still_held()
            .expect("the first is not taken over by the second");
        drop(first);
        let waited = second.join().expect("join");
        assert!(waited >= Duration::from_millis(400), "waited {waited:?}");
    }

    #[test]
    fn a_pruner_stalled_past_the_expiry_stops_even_when_nobody_took_the_lease_over() {
        let (store, a, _b) = two_appliances();
        let guard = a.prune_within(Duration::from_secs(1)).expect("a prunes");
        // The host was suspended for half an hour: the file still names a, but other
        // appliances' backups went ahead once it expired.
        if let Some(hold) = a.inner.lock_pruning().as_mut() {
            hold.written -= TTL.as_secs() as i64;
        }
        let err = guard.still_held().expect_err("ran out");
        assert!(err.to_string().contains("ran out"), "{err}");
        drop(guard);
        assert!(
            !store.exists(FileKind::Lock, PRUNE).expect("exists"),
            "its own file is released all the same"
        );
    }

    #[test]
    fn a_renewal_whose_first_try_went_through_keeps_the_lease() {
        let (store, a, _b) = two_appliances();
        let guard = a.prune_within(Duration::from_secs(1)).expect("a prunes");
        // The store took the renewal, its answer was lost, the retry got 412: the
        // process still knows the version before.
        if let Some(hold) = a.inner.lock_pruning().as_mut() {
            let (_, current) = store
                .read_versioned(FileKind::Lock, PRUNE)
                .expect("read")
                .expect("there");
            let later = serde_json::to_vec(&Record {
                holder: "aaaa.1".into(),
                expires: now() + TTL.as_secs() as i64 + 60,
            })
            .expect("json");
            let renewed = store
                .replace_if(FileKind::Lock, PRUNE, &later, &current)
                .expect("replace")
                .expect("renewed");
            assert_ne!(renewed, hold.version);
            hold.written -= RENEW_EVERY.as_secs() as i64;
        }
        guard.still_held().expect("still a's");
        drop(guard);
        assert!(!store.exists(FileKind::Lock, PRUNE).expect("exists"));
    }

    /// A host suspended past its `use-` lease in the middle of a backup: another
    /// appliance's prune went ahead meanwhile (the lease had expired long before, so
    /// the pruner removed it), so the user that entered before commits nothing, the
    /// lapsed lease is not quietly renewed, and the next user writes a new one under a
    /// new name, waits for the prune and may commit.
    #[test]
    fn a_user_whose_lease_lapsed_commits_nothing_and_the_next_one_takes_it_anew() {
        let (store, a, b) = two_appliances();
        let before = a.enter().expect("a uses the archive");
        before.still_valid().expect("valid while renewed");
        // Eleven minutes without a renewal: too close to a lapse to commit on.
        a.inner.lock_users().written -= 11 * 60;
        assert!(before.still_valid().is_err(), "no commit near a lapse");
        a.inner.lock_users().written += 11 * 60;
        before.still_valid().expect("valid again once renewed");
        // The host slept for three hours: the lease was last written then, and its
        // file no longer keeps other appliances' prunes out.
        a.inner.lock_users().written -= 3 * 3600;
        let old_name = a.inner.use_name(1);
        let long_expired = serde_json::to_vec(&Record {
            holder: a.inner.me.clone(),
            expires: now() - 2 * 3600,
        })
        .expect("json");
        a.inner
            .archive
            .write_lease(&old_name, &long_expired)
            .expect("expired");
        let pruning = b
            .prune_within(Duration::from_secs(1))
            .expect("b prunes: a's lease expired");
        assert!(
            !store.exists(FileKind::Lock, &old_name).expect("exists"),
            "the pruner removed the lease expired for two hours"
        );
        let err = before.still_valid().expect_err("lapsed");
        assert!(
            err.to_string()
                .contains("lease on the shared archive lapsed"),
            "{err}"
        );
        // A clock set back now does not make it valid again.
        a.inner.lock_users().written = now();
        assert!(before.still_valid().is_err(), "a lapse is for good");
        a.inner.renew_use(&mut a.inner.lock_users());
        assert!(
            !store.exists(FileKind::Lock, &old_name).expect("exists"),
            "a lapsed lease is not renewed"
        );
        let next_user = std::thread::spawn(move || {
            let guard = a.enter().expect("a enters after the prune");
            let valid = guard.still_valid();
            (a, guard, valid)
        });
        let new_name = "use-aaaa-1-2";
        let t = Instant::now();
        while !store.exists(FileKind::Lock, new_name).expect("exists") {
            assert!(t.elapsed() < Duration::from_secs(30), "never written anew");
            std::thread::sleep(Duration::from_millis(50));
        }
        let written_anew = store.read(FileKind::Lock, new_name).expect("written anew");
        assert_eq!(valid_holder(&written_anew).as_deref(), Some("aaaa.1"));
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            !next_user.is_finished(),
            "the next user waits for the prune"
        );
        drop(pruning);
        let (_a, after, valid) = next_user.join().expect("join");
        valid.expect("the next user may commit");
        assert!(store.exists(FileKind::Lock, new_name).expect("exists"));
        assert!(
            before.still_valid().is_err(),
            "the user from before the lapse still may not commit"
        );
        drop(after);
    }

    /// A pruner removes `use-` leases expired for over an hour (their processes were
    /// killed) and keeps those expired lately (a holder that slept may not know yet).
    #[test]
    fn a_pruner_removes_use_leases_expired_long_ago_only() {
        let (store, _a, b) = two_appliances();
        let lease = |holder: &str, expires: i64| {
            serde_json::to_vec(&Record {
                holder: holder.into(),
                expires,
            })
            .expect("json")
        };
        let lately = lease("cccc.1", now() - 60);
        let long_ago = lease("dddd.1", now() - STALE_AFTER - 60);
        for (name, bytes) in [("use-cccc-1", &lately), ("use-dddd-1", &long_ago)] {
            store
                .write(FileKind::Lock, name, Source::Bytes(bytes))
                .expect("lease");
        }
        let pruning = b.prune_within(Duration::from_secs(1)).expect("b prunes");
        assert!(store.exists(FileKind::Lock, "use-cccc-1").expect("exists"));
        assert!(!store.exists(FileKind::Lock, "use-dddd-1").expect("exists"));
        drop(pruning);
    }
}
