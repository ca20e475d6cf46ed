//! Progress plumbing for the `git` module: a gix progress tree that drops all progress (pack
//! bytes are counted by the fetch's own pack reader), and a reporter thread that hands the byte
//! count to the caller's callback.

use std::sync::{
    atomic::{AtomicU64, AtomicUsize, Ordering},
    mpsc, Arc,
};
use std::time::Duration;

use gix::progress::{Count, Id, MessageLevel, NestedProgress, Progress, StepShared, Unit, UNKNOWN};

/// A progress tree node that keeps only its step counter; messages go to `tracing` at debug
/// level.
#[derive(Clone)]
pub(crate) struct Quiet {
    id: Id,
    step: StepShared,
}

impl Quiet {
    pub(crate) fn new() -> Self {
        Quiet {
            id: UNKNOWN,
            step: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn child(&self, id: Id) -> Self {
        Quiet {
            id,
            step: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Count for Quiet {
    fn set(&self, step: usize) {
        self.step.store(step, Ordering::Relaxed);
    }

    fn step(&self) -> usize {
        self.step.load(Ordering::Relaxed)
    }

    fn inc_by(&self, step: usize) {
        self.step.fetch_add(step, Ordering::Relaxed);
    }

    fn counter(&self) -> StepShared {
        self.step.clone()
    }
}

impl Progress for Quiet {
    fn init(&mut self, _max: Option<usize>, _unit: Option<Unit>) {}

    fn set_name(&mut self, _name: String) {}

    fn name(&self) -> Option<String> {
        None
    }

    fn id(&self) -> Id {
        self.id
    }

    fn message(&self, level: MessageLevel, message: String) {
        tracing::debug!(target: "reposafe::git", ?level, "{message}");
    }
}

impl NestedProgress for Quiet {
    type SubProgress = Quiet;

    fn add_child(&mut self, _name: impl Into<String>) -> Self::SubProgress {
        self.child(UNKNOWN)
    }

    fn add_child_with_id(&mut self, _name: impl Into<String>, id: Id) -> Self::SubProgress {
        self.child(id)
    }
}

/// Run `work` while a helper thread reports `total` to `callback` about every 200 ms
/// (only when it changed), plus once at the end.
pub(crate) fn with_reporter<T>(
    total: &Arc<AtomicU64>,
    callback: Option<&(dyn Fn(u64) + Sync)>,
    work: impl FnOnce() -> T,
) -> T {
    let Some(callback) = callback else {
        return work();
    };
    std::thread::scope(|scope| {
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let total_for_thread = total.clone();
        scope.spawn(move || {
            let mut last = 0;
            loop {
                let stop = !matches!(
                    stop_rx.recv_timeout(Duration::from_millis(200)),
                    Err(mpsc::RecvTimeoutError::Timeout)
                );
                let now = total_for_thread.load(Ordering::Relaxed);
                if now != last || stop {
                    last = now;
                    callback(now);
                }
                if stop {
                    break;
                }
            }
        });
        let out = work();
        drop(stop_tx);
        out
    })
}
