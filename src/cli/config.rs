//! The daemon's settings: a TOML file (`--config`, e.g. the packaged
//! `/etc/reposafe/reposafe.toml`), each key overridable by a flag or its
//! `REPOSAFE_<KEY>` environment variable. Precedence: flag/env, file, default.

use anyhow::{Context as _, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The keys of the config file. Unknown keys are refused, naming the key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub insecure_listen: Option<bool>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub grace_period_secs: Option<u64>,
    pub run_missed_on_start: Option<bool>,
    pub parallel: Option<usize>,
    pub log: Option<String>,
    /// `[notifications]`: defaults until settings are stored through the dashboard/API.
    pub notifications: Option<crate::notify::NotificationSettings>,
    /// Seconds a push webhook waits for more pushes before the backup is queued.
    pub hook_delay_secs: Option<u64>,
}

impl FileConfig {
    /// Reads the file; a missing `--config` file is an error, not a default.
    pub fn load(path: Option<&Path>) -> Result<FileConfig> {
        let Some(path) = path else {
            return Ok(FileConfig::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!("config file {}: {}", path.display(), e.to_string().trim())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_packaged_keys_and_names_unknown_ones() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "data_dir = \"/var/lib/reposafe\"\nlisten = \"127.0.0.1:9000\"\ngrace_period_secs = 5\n",
        )
        .unwrap();
        let c = FileConfig::load(Some(&f)).unwrap();
        assert_eq!(c.listen.as_deref(), Some("127.0.0.1:9000"));
        assert_eq!(c.grace_period_secs, Some(5));
        std::fs::write(&f, "listne = \"x\"\n").unwrap();
        let e = FileConfig::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("listne"), "{e}");
        let e = FileConfig::load(Some(&dir.path().join("absent.toml")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("absent.toml"), "{e}");
    }

    #[test]
    fn the_notifications_table_is_read_and_its_unknown_keys_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "[notifications]\non_partial = true\n[notifications.smtp]\nhost = \"smtp.example.com\"\n\
             from = \"backup@example.com\"\nto = [\"ops@example.com\"]\n",
        )
        .unwrap();
        let c = FileConfig::load(Some(&f)).unwrap();
        let n = c.notifications.unwrap();
        assert!(n.on_partial);
        assert_eq!(n.smtp.unwrap().endpoint(), "smtp.example.com:587");
        std::fs::write(&f, "[notifications]\nwebhook = \"x\"\n").unwrap();
        let e = FileConfig::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("webhook"), "{e}");
    }
}
