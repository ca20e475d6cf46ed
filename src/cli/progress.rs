//! Progress bars for long CLI jobs.

use crate::engine::{backup::Progress, Observer, RepoOutcome, RepoResult};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// One bar for the repositories of a job, plus a line for notices.
pub struct Bars {
    _multi: MultiProgress,
    repos: ProgressBar,
}

impl Bars {
    pub fn new(connection: &str) -> Bars {
        let multi = MultiProgress::new();
        let repos = multi.add(bar_with(
            "{prefix} [{bar:30}] {pos}/{len} repositories {wide_msg}",
        ));
        repos.set_prefix(connection.to_string());
        repos.set_message("listing repositories...");
        Bars {
            _multi: multi,
            repos,
        }
    }

    pub fn finish(&self) {
        self.repos.finish_and_clear();
    }
}

impl Progress for Bars {
    fn listed(&self, total: usize) {
        self.repos.set_length(total as u64);
        self.repos.set_message("");
    }
    fn started(&self, repo: &str) {
        self.repos.set_message(repo.to_string());
    }
    fn fetched_bytes(&self, repo: &str, bytes: u64) {
        self.repos.set_message(format!(
            "{repo}: {} received",
            crate::fmt::human_bytes(bytes)
        ));
    }
    fn finished(&self, result: &RepoResult) {
        self.repos.inc(1);
        if let RepoOutcome::Failed { reason } = &result.outcome {
            self.repos
                .println(format!("failed: {}: {reason}", result.full_name));
        }
    }
    fn notice(&self, message: &str) {
        // A hidden bar (stderr not a terminal) drops println: print the line itself.
        if self.repos.is_hidden() {
            eprintln!("{message}");
        } else {
            self.repos.println(message);
        }
    }
}

/// What the CLI shows of long work, for every command alike: a bar per followed job
/// (labelled with what the job does) and per in-process backup of a connection.
#[derive(Default)]
pub struct CliObserver {
    job_bar: Mutex<Option<JobBar>>,
    backup_bars: Mutex<Vec<Arc<Bars>>>,
    prune_bar: Mutex<Option<Arc<PruneBar>>>,
}

impl CliObserver {
    /// Clears every bar (before the command prints its result).
    pub fn finish(&self) {
        if let Ok(mut bar) = self.job_bar.lock() {
            if let Some(b) = bar.take() {
                b.finish();
            }
        }
        if let Ok(mut bars) = self.backup_bars.lock() {
            bars.drain(..).for_each(|b| b.finish());
        }
        if let Ok(mut bar) = self.prune_bar.lock() {
            if let Some(b) = bar.take() {
                b.bar.finish_and_clear();
            }
        }
    }
}

impl Observer for CliObserver {
    fn job(&self, job: &crate::engine::types::Job) {
        if let Ok(mut bar) = self.job_bar.lock() {
            bar.get_or_insert_with(|| JobBar::new(&job.kind.describe()))
                .update(job);
        }
    }

    fn backup_progress(&self, connection: &str) -> Arc<dyn Progress> {
        if let Ok(mut bars) = self.backup_bars.lock() {
            bars.drain(..).for_each(|b| b.finish());
            let bar = Arc::new(Bars::new(connection));
            bars.push(bar.clone());
            return bar;
        }
        Arc::new(crate::engine::backup::NoProgress)
    }

    fn prune_progress(&self) -> Arc<dyn crate::engine::prune::PruneProgress> {
        let bar = Arc::new(PruneBar::new());
        if let Ok(mut slot) = self.prune_bar.lock() {
            *slot = Some(bar.clone());
        }
        bar
    }

    /// Ctrl-C simply ends the process: every write is crash-safe, so nothing
    /// half-written is kept.
    fn interrupt(&self) -> Arc<AtomicBool> {
        Arc::new(AtomicBool::new(false))
    }
}

/// A bar following a job record (daemon jobs, and in-process `run`).
pub struct JobBar {
    bar: ProgressBar,
    last_notice: std::sync::Mutex<Option<String>>,
}

impl JobBar {
    pub fn new(label: &str) -> JobBar {
        let bar = bar_with("{prefix} [{bar:30}] {pos}/{len} repositories {wide_msg}");
        bar.set_prefix(label.to_string());
        bar.set_message("queued");
        JobBar {
            bar,
            last_notice: std::sync::Mutex::new(None),
        }
    }

    pub fn update(&self, job: &crate::engine::types::Job) {
        let p = &job.progress;
        self.bar.set_length(p.repos_total);
        self.bar.set_position(p.repos_done);
        self.bar.set_message(format!(
            "{} received, {} stored {}",
            crate::fmt::human_bytes(p.bytes_fetched),
            crate::fmt::human_bytes(p.bytes_stored),
            p.current.join(", ")
        ));
        if let Ok(mut last) = self.last_notice.lock() {
            if p.notice.is_some() && *last != p.notice {
                if let Some(n) = &p.notice {
                    // A hidden bar (stderr not a terminal) drops println: print the line itself.
                    if self.bar.is_hidden() {
                        eprintln!("{n}");
                    } else {
                        self.bar.println(n);
                    }
                }
                last.clone_from(&p.notice);
            }
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// The bar of `archive copy`: blobs and bytes copied or checked.
pub struct CopyBar {
    bar: ProgressBar,
}

impl CopyBar {
    pub fn new() -> CopyBar {
        CopyBar {
            bar: bar_with("copy [{bar:30}] {bytes}/{total_bytes} {msg}"),
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Default for CopyBar {
    fn default() -> Self {
        Self::new()
    }
}

impl crate::engine::archive_copy::CopyProgress for CopyBar {
    fn planned(&self, blobs: u64, bytes: u64) {
        self.bar.set_length(bytes);
        self.bar
            .set_message(format!("{blobs} blob(s) to copy or check"));
    }

    fn blob_done(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
}

/// The bar of a prune: histories consolidated, then the sweep.
pub struct PruneBar {
    bar: ProgressBar,
    /// Whether a history was named already (the next one means it is done).
    started: AtomicBool,
}

impl PruneBar {
    fn new() -> PruneBar {
        PruneBar {
            bar: bar_with("prune [{bar:30}] {pos}/{len} histories {wide_msg}"),
            started: AtomicBool::new(false),
        }
    }
}

impl crate::engine::prune::PruneProgress for PruneBar {
    fn histories(&self, n: usize) {
        self.bar.set_length(n as u64);
    }

    fn history(&self, full_name: &str) {
        if self.started.swap(true, Ordering::SeqCst) {
            self.bar.inc(1);
        }
        self.bar.set_message(format!("consolidating {full_name}"));
    }

    fn sweeping(&self) {
        self.bar.set_position(self.bar.length().unwrap_or(0));
        self.bar
            .set_message("removing blobs no snapshot names".to_string());
    }
}

/// The style of every bar: `template`, drawn `[==>  ]`.
fn bar_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// A bar of unknown length yet, in `template`'s style.
fn bar_with(template: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(bar_style(template));
    bar
}
