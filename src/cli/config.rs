//! The daemon's settings: a TOML file (`--config`, e.g. the packaged
//! `/etc/reposafe/reposafe.toml`), each key overridable by a flag or its
//! `REPOSAFE_<KEY>` environment variable. Precedence: flag/env, file, default.

use crate::engine::s3_keys::{ConfiguredKeys, ConfiguredSecret};
use anyhow::{bail, Context as _, Result};
use secrecy::SecretString;
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
    pub notifications: Option<crate::engine::types::NotificationSettings>,
    /// Seconds a push webhook waits for more pushes before the backup is queued.
    pub hook_delay_secs: Option<u64>,
    /// `[s3]`: the keys of the object store, for an archive or copy target set up
    /// without its own (see `engine::s3_keys` for the order of sources).
    pub s3: Option<S3FileKeys>,
    /// The file read (for messages).
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

/// The `[s3]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3FileKeys {
    pub access_key_id: Option<String>,
    /// Inline: only in a file others cannot read.
    pub secret_access_key: Option<SecretString>,
    /// A file holding the secret access key (one line).
    pub secret_access_key_file: Option<PathBuf>,
}

impl FileConfig {
    /// Reads the file; a missing `--config` file is an error, not a default.
    pub fn load(path: Option<&Path>) -> Result<FileConfig> {
        let Some(path) = path else {
            return Ok(FileConfig::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        // The parser's own text quotes the line, which may hold a secret: the message
        // and the line number only.
        let mut config: FileConfig = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
            anyhow::anyhow!("config file {}: {}{at}", path.display(), e.message().trim())
        })?;
        config.path = Some(path.to_path_buf());
        let inline_secret = config
            .s3
            .as_ref()
            .is_some_and(|s3| s3.secret_access_key.is_some());
        if inline_secret && readable_by_others(path)? {
            bail!(
                "config file {}: [s3] secret_access_key is in a file everyone can read; run `chmod o-r {}`, or use secret_access_key_file",
                path.display(),
                path.display()
            );
        }
        Ok(config)
    }

    /// The keys of `[s3]`, checked: an access key id with exactly one of the secret
    /// and the secret's file (read when a store first needs it). `None` without the
    /// table.
    pub fn s3_keys(&self) -> Result<Option<ConfiguredKeys>> {
        let Some(s3) = &self.s3 else { return Ok(None) };
        let file = self
            .path
            .as_deref()
            .map_or_else(String::new, |p| format!(" {}", p.display()));
        let Some(access_key_id) = s3.access_key_id.clone() else {
            bail!("config file{file}: [s3] needs access_key_id");
        };
        let secret = match (&s3.secret_access_key, &s3.secret_access_key_file) {
            (Some(secret), None) => ConfiguredSecret::Inline(secret.clone()),
            (None, Some(path)) => ConfiguredSecret::File(path.clone()),
            _ => bail!(
                "config file{file}: [s3] needs one of secret_access_key and secret_access_key_file"
            ),
        };
        Ok(Some(ConfiguredKeys {
            access_key_id,
            secret,
        }))
    }
}

/// Whether users other than the owner and group may read the file.
fn readable_by_others(path: &Path) -> Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    Ok(meta.permissions().mode() & 0o004 != 0)
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

    /// The packaged sample documents keys that exist: with every key it shows
    /// uncommented, it is read without an unknown key, and the keys it shows are set.
    #[test]
    fn the_packaged_sample_with_every_key_uncommented_is_read() {
        let sample = include_str!("../../packaging/reposafe.toml");
        let uncommented: String = sample
            .lines()
            .map(|line| {
                let shown = line.strip_prefix('#').unwrap_or(line);
                let is_key = shown.starts_with('[')
                    || shown.split_once(" = ").is_some_and(|(key, _)| {
                        key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    });
                if is_key {
                    shown
                } else {
                    ""
                }
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sample.toml");
        std::fs::write(&f, &uncommented).unwrap();
        let c = FileConfig::load(Some(&f)).unwrap_or_else(|e| panic!("{e:#}\n{uncommented}"));
        assert_eq!(c.hook_delay_secs, Some(30), "{uncommented}");
        assert!(c.grace_period_secs.is_some() && c.parallel.is_some() && c.log.is_some());
        let notifications = c.notifications.as_ref().expect("[notifications]");
        assert!(notifications.dashboard_url.is_some());
        let smtp = notifications.smtp.as_ref().expect("[notifications.smtp]");
        assert!(smtp.ca_bundle_pem.is_some() && smtp.password_file.is_some());
    }

    #[test]
    fn s3_keys_are_read_from_the_table_and_an_inline_secret_only_from_a_private_file() {
        use secrecy::ExposeSecret;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        let secret_file = dir.path().join("s3-secret");
        std::fs::write(&secret_file, "from-a-file\n").unwrap();
        std::fs::write(
            &f,
            format!(
                "[s3]\naccess_key_id = \"AKIA1\"\nsecret_access_key_file = {:?}\n",
                secret_file.display().to_string()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let keys = FileConfig::load(Some(&f))
            .unwrap()
            .s3_keys()
            .unwrap()
            .unwrap();
        assert_eq!(keys.access_key_id, "AKIA1");
        let secret = keys.secret_access_key().unwrap();
        assert_eq!(secret.expose_secret(), "from-a-file");

        std::fs::write(
            &f,
            "[s3]\naccess_key_id = \"AKIA2\"\nsecret_access_key = \"inline-s3cr3t\"\n",
        )
        .unwrap();
        let e = FileConfig::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("chmod o-r"), "{e}");
        assert!(!e.contains("inline-s3cr3t"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let config = FileConfig::load(Some(&f)).unwrap();
        assert!(!format!("{config:?}").contains("inline-s3cr3t"));
        let keys = config.s3_keys().unwrap().unwrap();
        let secret = keys.secret_access_key().unwrap();
        assert_eq!(secret.expose_secret(), "inline-s3cr3t");
        // A typo never quotes the secret back.
        std::fs::write(
            &f,
            "[s3]\naccess_key_id = \"A\"\nsecret_acess_key = \"inline-s3cr3t\"\n",
        )
        .unwrap();
        let e = FileConfig::load(Some(&f)).unwrap_err().to_string();
        assert!(
            e.contains("secret_acess_key") && e.contains("line 3"),
            "{e}"
        );
        assert!(!e.contains("inline-s3cr3t"), "{e}");

        for (table, wanted) in [
            ("[s3]\nsecret_access_key = \"x\"\n", "access_key_id"),
            ("[s3]\naccess_key_id = \"A\"\n", "one of"),
            (
                "[s3]\naccess_key_id = \"A\"\nsecret_key = \"x\"\n",
                "secret_key",
            ),
        ] {
            std::fs::write(&f, table).unwrap();
            let e = FileConfig::load(Some(&f))
                .and_then(|c| c.s3_keys())
                .unwrap_err()
                .to_string();
            assert!(e.contains(wanted), "{table}: {e}");
        }
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
