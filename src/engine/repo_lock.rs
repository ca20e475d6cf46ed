//! One backup of a repository at a time: an in-process lock keyed by the
//! repository's mirror directory, held for the whole per-repository backup (the
//! mirror fetch and the archive writes of that repository).
//!
//! Two jobs that overlap (a plan's run and a manual "run now" of the same
//! connection) would otherwise fetch into the same bare mirror at once, and one
//! fetch's clean-up of "leftovers" deletes the other's temporary packs and
//! staging directories. The data dir is locked by one process (redb), so a lock
//! inside this process covers every writer of the mirror.
//!
//! The second job waits for the first (showing "waiting for another job backing
//! up <repo>"), bounded by a maximum wait, its interrupt flag and its deadline;
//! the lock is released when the [`RepoGuard`] is dropped, also on a panic.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The mirror directories whose backup is in progress in this process.
static HELD: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
static RELEASED: Condvar = Condvar::new();

/// Longest a backup waits for another job's backup of the same repository.
pub const MAX_WAIT: Duration = Duration::from_secs(6 * 60 * 60);

/// How often a waiting backup looks at its interrupt flag and deadline.
const POLL: Duration = Duration::from_millis(200);

/// Why a backup did not get its repository's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotAcquired {
    /// The job was stopped while it waited.
    Interrupted,
    /// The job's deadline (end of its backup window) came while it waited.
    Deadline,
    /// The other job held the repository for longer than the maximum wait.
    TimedOut(Duration),
}

/// Holds a repository's lock until dropped.
#[derive(Debug)]
pub struct RepoGuard {
    key: PathBuf,
}

impl Drop for RepoGuard {
    fn drop(&mut self) {
        held().remove(&self.key);
        RELEASED.notify_all();
    }
}

fn held() -> MutexGuard<'static, BTreeSet<PathBuf>> {
    // The set is plain data: a panic while it was held leaves it usable.
    HELD.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a waiting backup checks while it waits.
pub struct Wait<'a> {
    /// Set when the job is asked to stop.
    pub interrupt: &'a AtomicBool,
    /// The job's deadline, if any.
    pub deadline: Option<Instant>,
    /// The longest wait (normally [`MAX_WAIT`]).
    pub max_wait: Duration,
    /// Called once, when the lock is found taken.
    pub on_wait: &'a dyn Fn(),
}

/// Takes the lock of the repository whose mirror is `mirror`, waiting while
/// another backup in this process holds it.
pub fn acquire(mirror: &Path, wait: &Wait<'_>) -> Result<RepoGuard, NotAcquired> {
    let key = mirror.to_path_buf();
    let started = Instant::now();
    let mut set = held();
    let mut told = false;
    while set.contains(&key) {
        if !told {
            told = true;
            (wait.on_wait)();
        }
        if wait.interrupt.load(Ordering::Relaxed) {
            return Err(NotAcquired::Interrupted);
        }
        if wait.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(NotAcquired::Deadline);
        }
        if started.elapsed() >= wait.max_wait {
            return Err(NotAcquired::TimedOut(wait.max_wait));
        }
        set = RELEASED
            .wait_timeout(set, POLL)
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0);
    }
    set.insert(key.clone());
    Ok(RepoGuard { key })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    fn wait<'a>(interrupt: &'a AtomicBool, on_wait: &'a dyn Fn(), max: Duration) -> Wait<'a> {
        Wait {
            interrupt,
            deadline: None,
            max_wait: max,
            on_wait,
        }
    }

    #[test]
    fn the_second_waits_until_the_first_is_done() {
        let dir = tempfile::tempdir().expect("tmp");
        let mirror = dir.path().join("m.git");
        let no = AtomicBool::new(false);
        let waits = Arc::new(AtomicUsize::new(0));
        let first = acquire(&mirror, &wait(&no, &|| (), MAX_WAIT)).expect("first");
        let in_second = Arc::new(AtomicBool::new(false));
        std::thread::scope(|s| {
            let (m, w, inside) = (mirror.clone(), waits.clone(), in_second.clone());
            let h = s.spawn(move || {
                let stop = AtomicBool::new(false);
                let on_wait = || {
                    w.fetch_add(1, Ordering::SeqCst);
                };
                let g = acquire(&m, &wait(&stop, &on_wait, MAX_WAIT)).expect("second");
                inside.store(true, Ordering::SeqCst);
                drop(g);
            });
            std::thread::sleep(Duration::from_millis(300));
            assert!(!in_second.load(Ordering::SeqCst), "both held the lock");
            assert_eq!(
                waits.load(Ordering::SeqCst),
                1,
                "the wait is announced once"
            );
            drop(first);
            h.join().expect("second thread");
        });
        assert!(in_second.load(Ordering::SeqCst));
        // Other repositories never wait.
        let a = acquire(&dir.path().join("a.git"), &wait(&no, &|| (), MAX_WAIT)).expect("a");
        let b = acquire(&dir.path().join("b.git"), &wait(&no, &|| (), MAX_WAIT)).expect("b");
        drop((a, b));
    }

    #[test]
    fn a_wait_ends_on_interrupt_deadline_or_timeout() {
        let dir = tempfile::tempdir().expect("tmp");
        let mirror = dir.path().join("m.git");
        let no = AtomicBool::new(false);
        let _held = acquire(&mirror, &wait(&no, &|| (), MAX_WAIT)).expect("held");
        let stop = AtomicBool::new(true);
        assert_eq!(
            acquire(&mirror, &wait(&stop, &|| (), MAX_WAIT)).unwrap_err(),
            NotAcquired::Interrupted
        );
        let mut w = wait(&no, &|| (), MAX_WAIT);
        w.deadline = Some(Instant::now());
        assert_eq!(acquire(&mirror, &w).unwrap_err(), NotAcquired::Deadline);
        let short = Duration::from_millis(250);
        assert_eq!(
            acquire(&mirror, &wait(&no, &|| (), short)).unwrap_err(),
            NotAcquired::TimedOut(short)
        );
    }
}
