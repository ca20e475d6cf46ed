//! Progress plumbing for the `git` module: a gix progress tree that only counts received pack
//! bytes, and a reporter thread that hands the count to the caller's callback.

use std::sync::{
    atomic::{AtomicU64, AtomicUsize, Ordering},
    mpsc, Arc,
};
use std::time::Duration;

use gix::progress::{Count, Id, MessageLevel, NestedProgress, Progress, StepShared, Unit, UNKNOWN};

/// The id gix-pack gives the progress of reading pack bytes from the remote
/// (`gix_pack::bundle::write::ProgressId::ReadPackBytes`).
const READ_PACK_BYTES: Id = *b"BWRB";

/// A progress tree node. Nodes created for reading pack data add to a shared byte counter;
/// all other progress is dropped, and messages go to `tracing` at debug level.
#[derive(Clone)]
pub(crate) struct PackBytes {
    id: Id,
    counts_bytes: bool,
    step: StepShared,
    total: Arc<AtomicU64>,
}

impl PackBytes {
    pub(crate) fn new(total: Arc<AtomicU64>) -> Self {
        PackBytes {
            id: UNKNOWN,
            counts_bytes: false,
            step: Arc::new(AtomicUsize::new(0)),
            total,
        }
    }

    fn child(&self, id: Id) -> Self {
        PackBytes {
            id,
            counts_bytes: id == READ_PACK_BYTES,
            step: Arc::new(AtomicUsize::new(0)),
            total: self.total.clone(),
        }
    }
}

impl Count for PackBytes {
    fn set(&self, step: usize) {
        let previous = self.step.swap(step, Ordering::Relaxed);
        if self.counts_bytes && step > previous {
            self.total
                .fetch_add((step - previous) as u64, Ordering::Relaxed);
        }
    }

    fn step(&self) -> usize {
        self.step.load(Ordering::Relaxed)
    }

    fn inc_by(&self, step: usize) {
        self.step.fetch_add(step, Ordering::Relaxed);
        if self.counts_bytes {
            self.total.fetch_add(step as u64, Ordering::Relaxed);
        }
    }

    fn counter(&self) -> StepShared {
        self.step.clone()
    }
}

impl Progress for PackBytes {
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

impl NestedProgress for PackBytes {
    type SubProgress = PackBytes;

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
