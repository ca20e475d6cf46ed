//! Free space on the disks the appliance writes to: the data dir's (mirrors, state,
//! scratch files) and a local archive's, when it is mounted on a disk of its own. A
//! backup that meets a full disk fails and loses nothing committed, but it fails: the
//! overview warns while a disk has less than [`WARN_BELOW_PERCENT`] free
//! (`REPOSAFE_WARN_FREE_BELOW_PERCENT`), the daemon notifies once each time a disk runs
//! low (see `notifications`), and `archive show` says what a local archive's disk has
//! free.

use super::archive_location::RecordedPlace;
use crate::fmt::human_bytes;
use std::path::{Path, PathBuf};

/// The share of a disk (in percent) below which its free space is warned about.
pub const WARN_BELOW_PERCENT: u64 = 10;

/// What a disk has free, as `statvfs` says it for a path on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DiskSpace {
    /// The path asked about.
    pub(crate) path: PathBuf,
    /// Bytes an unprivileged writer can still use.
    pub(crate) available: u64,
    /// The file system's size.
    pub(crate) total: u64,
    /// The file system's id: two paths on one disk are warned about once.
    device: u64,
}

impl DiskSpace {
    /// The free share in whole percent (0 for a file system of size 0).
    pub(crate) fn free_percent(&self) -> u64 {
        (u128::from(self.available) * 100)
            .checked_div(u128::from(self.total))
            .map_or(0, |p| p as u64)
    }

    /// "12.0 GiB free of 40.0 GiB (30%)".
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} free of {} ({}%)",
            human_bytes(self.available),
            human_bytes(self.total),
            self.free_percent()
        )
    }
}

/// The space of the file system `path` is on.
// `statvfs`'s counts are 32 bits wide on some platforms, 64 on others.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn space_of(path: &Path) -> std::io::Result<DiskSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated string that lives across the call, and
    // `stat` is memory for one `statvfs`, which the call fills when it returns 0.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the call returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    let block = stat.f_frsize as u64;
    Ok(DiskSpace {
        path: path.to_path_buf(),
        available: (stat.f_bavail as u64).saturating_mul(block),
        total: (stat.f_blocks as u64).saturating_mul(block),
        device: stat.f_fsid as u64,
    })
}

/// The threshold in force: `REPOSAFE_WARN_FREE_BELOW_PERCENT` (0–100), else
/// [`WARN_BELOW_PERCENT`].
fn warn_below_percent() -> u64 {
    std::env::var("REPOSAFE_WARN_FREE_BELOW_PERCENT")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(WARN_BELOW_PERCENT, |p| p.min(100))
}

/// The disks watched: the data dir's, and the local archive's (which may be mounted
/// on a disk of its own; a bucket, as `place` records it, has no disk here).
pub(crate) fn watched(data_dir: &Path, place: &RecordedPlace) -> Vec<(&'static str, PathBuf)> {
    let mut disks = vec![("data dir", data_dir.to_path_buf())];
    if let Some(dir) = place.local_dir() {
        disks.push(("archive", dir.to_path_buf()));
    }
    disks
}

/// A disk with less than the threshold free.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LowSpace {
    /// The path watched on it.
    pub(crate) path: PathBuf,
    /// What to tell the user.
    pub(crate) warning: String,
}

/// Each disk among `paths` (the data dir first) with less than the threshold free; a
/// path whose disk cannot be asked is skipped with a log line (the overview still
/// answers).
pub(crate) fn low_space(paths: &[(&str, PathBuf)]) -> Vec<LowSpace> {
    low_space_below(paths, warn_below_percent())
}

/// Of the disks low now, those not low at the last alert (`alerted`: their paths): a
/// disk is alerted about once each time it runs low.
pub(crate) fn newly_low<'a>(now: &'a [LowSpace], alerted: &[PathBuf]) -> Vec<&'a LowSpace> {
    now.iter().filter(|l| !alerted.contains(&l.path)).collect()
}

fn low_space_below(paths: &[(&str, PathBuf)], percent: u64) -> Vec<LowSpace> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for (what, path) in paths {
        let space = match space_of(path) {
            Ok(space) => space,
            Err(e) => {
                tracing::debug!("free space of {}: {e}", path.display());
                continue;
            }
        };
        if seen.contains(&space.device) {
            continue;
        }
        seen.push(space.device);
        if u128::from(space.available) * 100 < u128::from(space.total) * u128::from(percent) {
            out.push(LowSpace {
                path: path.clone(),
                warning: format!(
                    "the disk of the {what} ({}) has {}: a backup that fills it fails (what is backed up stays); free space on it or give it a larger disk",
                    path.display(),
                    space.describe()
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_space_of_a_real_disk_is_read_and_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let space = space_of(dir.path()).expect("statvfs");
        assert!(
            space.total > 0 && space.available <= space.total,
            "{space:?}"
        );
        assert!(
            space.describe().contains(" free of "),
            "{}",
            space.describe()
        );
        let err = space_of(&dir.path().join("absent")).expect_err("no such path");
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn a_disk_below_the_threshold_is_warned_about_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let archive = dir.path().join("archive");
        std::fs::create_dir(&archive).expect("mkdir");
        let paths = [("data dir", dir.path().to_path_buf()), ("archive", archive)];
        let warned = low_space_below(&paths, 100);
        assert_eq!(warned.len(), 1, "one disk: {warned:?}");
        assert_eq!(warned[0].path, dir.path());
        let text = &warned[0].warning;
        assert!(text.contains("the disk of the data dir"), "{text}");
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert!(low_space_below(&paths, 0).is_empty());
        let gone = [("data dir", dir.path().join("absent"))];
        assert!(low_space_below(&gone, 100).is_empty());
    }

    #[test]
    fn a_disk_is_alerted_about_once_each_time_it_runs_low() {
        let low = |p: &str| LowSpace {
            path: PathBuf::from(p),
            warning: format!("{p} is low"),
        };
        let now = [low("/data"), low("/archive")];
        assert_eq!(newly_low(&now, &[]).len(), 2);
        let after = newly_low(&now, &[PathBuf::from("/data")]);
        assert_eq!(after, vec![&now[1]], "the one alerted already is not again");
        assert!(newly_low(&now, &[PathBuf::from("/data"), PathBuf::from("/archive")]).is_empty());
    }

    #[test]
    fn the_free_share_is_whole_percent() {
        let space = |available, total| DiskSpace {
            path: PathBuf::from("/"),
            available,
            total,
            device: 1,
        };
        assert_eq!(space(5, 100).free_percent(), 5);
        assert_eq!(space(0, 0).free_percent(), 0);
        assert_eq!(space(u64::MAX, u64::MAX).free_percent(), 100, "no overflow");
    }
}
