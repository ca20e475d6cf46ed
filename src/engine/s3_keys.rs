//! Where the keys of an S3 store come from when its location records none (an archive
//! or copy target set up without `--access-key-id`), in this order:
//!
//! 1. the AWS environment variables (`AWS_ACCESS_KEY_ID`, …; for the packaged service
//!    `/etc/reposafe/s3.env`), read by the S3 client itself;
//! 2. the config file's `[s3]` table, handed over once by the binary
//!    ([`use_configured_keys`]);
//! 3. the AWS shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else
//!    `~/.aws/credentials`), profile `AWS_PROFILE` or `default`;
//! 4. the S3 client's own remaining sources (web identity, container and instance
//!    credentials).
//!
//! Keys recorded with the location by `archive init` or `archive update` (sealed in
//! the vault) come before all of these. Nothing found here is ever written to the
//! data dir.

use super::EngineError;
use crate::archive::S3Config;
use secrecy::SecretString;
use std::path::PathBuf;
use std::sync::OnceLock;

/// Static keys of an S3 store.
#[derive(Clone)]
pub struct S3Keys {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    /// A temporary credential's session token.
    pub session_token: Option<SecretString>,
}

impl std::fmt::Debug for S3Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Keys")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// The config file's `[s3]` keys as written there.
#[derive(Debug)]
pub struct ConfiguredKeys {
    pub access_key_id: String,
    pub secret: ConfiguredSecret,
}

/// Where the config file's secret access key is.
pub enum ConfiguredSecret {
    Inline(SecretString),
    /// A file holding it (one line), read when a store first needs it.
    File(PathBuf),
}

impl std::fmt::Debug for ConfiguredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfiguredSecret::Inline(_) => f.write_str("Inline(..)"),
            ConfiguredSecret::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

impl ConfiguredKeys {
    /// The secret access key, read from its file when it is in one.
    pub fn secret_access_key(&self) -> Result<SecretString, EngineError> {
        match &self.secret {
            ConfiguredSecret::Inline(secret) => Ok(secret.clone()),
            ConfiguredSecret::File(path) => {
                let bad = |reason: String| {
                    EngineError::Invalid(format!(
                        "the config file's [s3] secret_access_key_file {}: {reason}",
                        path.display()
                    ))
                };
                let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
                let secret = text.trim_end_matches(['\n', '\r']);
                if secret.trim().is_empty() {
                    return Err(bad("it is empty".into()));
                }
                Ok(SecretString::from(secret.to_string()))
            }
        }
    }
}

static CONFIGURED: OnceLock<ConfiguredKeys> = OnceLock::new();

/// The keys of the config file's `[s3]` table, for every store whose location
/// records none. Set once, by the binary, before any store is opened.
pub fn use_configured_keys(keys: ConfiguredKeys) {
    let _ = CONFIGURED.set(keys);
}

/// `config` with the keys it should use: its own, else none when the AWS environment
/// variables give them (the client reads those), else the config file's, else the
/// shared credentials file's.
pub(crate) fn with_default_keys(config: S3Config) -> Result<S3Config, EngineError> {
    if config.access_key_id.is_some() || env_has_keys() {
        return Ok(config);
    }
    let keys = configured_or_shared_keys()?;
    Ok(match keys {
        Some(keys) => S3Config {
            access_key_id: Some(keys.access_key_id),
            secret_access_key: Some(keys.secret_access_key),
            session_token: keys.session_token,
            ..config
        },
        None => config,
    })
}

/// The static keys this process would use for a store whose location names none: the
/// AWS environment variables', else the config file's `[s3]`, else the shared
/// credentials file's profile; `None` when none of them holds static keys. For a
/// command that hands an S3 location to the daemon with its keys: the daemon never
/// lends its own keys to a location named in a request.
pub fn static_keys_here() -> Result<Option<S3Keys>, EngineError> {
    let variable = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let Some(access_key_id) = variable("AWS_ACCESS_KEY_ID") {
        let secret = variable("AWS_SECRET_ACCESS_KEY").ok_or_else(|| {
            EngineError::Invalid("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into())
        })?;
        return Ok(Some(S3Keys {
            access_key_id,
            secret_access_key: SecretString::from(secret),
            session_token: variable("AWS_SESSION_TOKEN").map(SecretString::from),
        }));
    }
    configured_or_shared_keys()
}

/// Where the keys of a store come from, as `archive show` says it: the source, and the
/// access key ID with all but its last 4 characters hidden (as `aws configure list`
/// shows it). `recorded_key_id`: the one its location records (given at `archive
/// init` or `archive update`, its secret sealed in the vault). Never a secret.
pub(crate) fn describe_keys(recorded_key_id: Option<&str>) -> String {
    let with_id = |id: &str, from: &str| format!("access key {}, {from}", masked(id));
    if let Some(id) = recorded_key_id {
        return with_id(
            id,
            "recorded with the location (its secret sealed in the vault)",
        );
    }
    if let Some(id) = std::env::var("AWS_ACCESS_KEY_ID")
        .ok()
        .filter(|v| !v.is_empty())
    {
        return with_id(&id, "from the environment (AWS_ACCESS_KEY_ID)");
    }
    if let Some(keys) = CONFIGURED.get() {
        return with_id(&keys.access_key_id, "from the config file's [s3]");
    }
    let file = shared_file().map(|(path, profile, _)| (path.display().to_string(), profile));
    match (shared_file_keys(), file) {
        (Ok(Some(keys)), Some((path, profile))) => with_id(
            &keys.access_key_id,
            &format!("from the AWS credentials file {path}, profile {profile}"),
        ),
        (Err(e), _) => format!("none usable: {e}"),
        _ => "none set here: the S3 client's own sources (web identity, container or instance credentials)".to_string(),
    }
}

/// `id` with all but its last 4 characters hidden.
fn masked(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    let shown: String = chars[chars.len().saturating_sub(4)..].iter().collect();
    format!("{}{shown}", "*".repeat(chars.len().saturating_sub(4)))
}

/// The config file's `[s3]` keys, else the shared credentials file's.
fn configured_or_shared_keys() -> Result<Option<S3Keys>, EngineError> {
    match CONFIGURED.get() {
        Some(keys) => Ok(Some(S3Keys {
            access_key_id: keys.access_key_id.clone(),
            secret_access_key: keys.secret_access_key()?,
            session_token: None,
        })),
        None => shared_file_keys(),
    }
}

fn env_has_keys() -> bool {
    std::env::var_os("AWS_ACCESS_KEY_ID").is_some_and(|v| !v.is_empty())
}

/// The shared credentials file and the profile to read, and whether the profile was
/// asked for (`AWS_PROFILE`): then a missing profile is an error, not "no keys".
fn shared_file() -> Option<(PathBuf, String, bool)> {
    let path = match std::env::var_os("AWS_SHARED_CREDENTIALS_FILE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".aws/credentials"),
    };
    let asked = std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty());
    let profile = asked.clone().unwrap_or_else(|| "default".into());
    Some((path, profile, asked.is_some()))
}

/// The keys of the shared credentials file's profile, `None` when there is no file
/// or (unless asked for) no such profile.
fn shared_file_keys() -> Result<Option<S3Keys>, EngineError> {
    let Some((path, profile, asked)) = shared_file() else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !asked => return Ok(None),
        Err(e) => {
            return Err(EngineError::Invalid(format!(
                "cannot read the AWS credentials file {} (profile {profile}): {e}",
                path.display()
            )))
        }
    };
    let keys = match profile_keys(&text, &profile) {
        Ok(keys) => keys,
        // A profile without static keys (SSO, a credential process) is for the S3
        // client's other sources, unless it was asked for.
        Err(_) if !asked => None,
        Err(reason) => {
            return Err(EngineError::Invalid(format!(
                "the AWS credentials file {}, profile {profile}: {reason}",
                path.display()
            )))
        }
    };
    if keys.is_none() && asked {
        return Err(EngineError::Invalid(format!(
            "AWS_PROFILE is {profile}, but the AWS credentials file {} has no such profile",
            path.display()
        )));
    }
    Ok(keys)
}

/// The keys of `[profile]` in a shared credentials file's text (INI: `[name]`
/// sections of `key = value` lines, `#` and `;` comments); `None` when the profile
/// is not there. A profile without both keys is an error naming the missing one.
fn profile_keys(text: &str, profile: &str) -> Result<Option<S3Keys>, String> {
    let mut in_profile = false;
    let mut found = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = name.trim() == profile;
            found |= in_profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim().to_string();
        match key.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => id = Some(value),
            "aws_secret_access_key" => secret = Some(SecretString::from(value)),
            "aws_session_token" => token = Some(SecretString::from(value)),
            _ => {}
        }
    }
    if !found {
        return Ok(None);
    }
    match (id, secret) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(Some(S3Keys {
            access_key_id,
            secret_access_key,
            session_token: token,
        })),
        (None, _) => Err("it has no aws_access_key_id".into()),
        (_, None) => Err("it has no aws_secret_access_key".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn an_access_key_id_is_shown_by_its_last_four_characters_only() {
        assert_eq!(masked("AKIAIOSFODNN7EXAMPLE"), "****************MPLE");
        assert_eq!(masked("abc"), "abc");
        assert_eq!(masked(""), "");
        let said = describe_keys(Some("AKIAIOSFODNN7EXAMPLE"));
        assert!(
            said.starts_with("access key ****************MPLE, recorded with the location"),
            "{said}"
        );
        assert!(!said.contains("AKIAIOSFODNN7"), "{said}");
    }

    #[test]
    fn a_profile_of_the_shared_credentials_file_is_read_and_a_partial_one_named() {
        let text =
            "# keys\n[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key=s3cr3t\n\n\
                    [ci]\n; temporary\naws_access_key_id = AKIACI\naws_secret_access_key = other\n\
                    aws_session_token = tok\nregion = eu-west-1\n[broken]\naws_access_key_id = X\n";
        let default = profile_keys(text, "default").expect("ok").expect("there");
        assert_eq!(default.access_key_id, "AKIADEFAULT");
        assert_eq!(default.secret_access_key.expose_secret(), "s3cr3t");
        assert!(default.session_token.is_none());
        let ci = profile_keys(text, "ci").expect("ok").expect("there");
        assert_eq!(ci.access_key_id, "AKIACI");
        assert_eq!(
            ci.session_token.as_ref().map(|t| t.expose_secret()),
            Some("tok")
        );
        assert!(profile_keys(text, "absent").expect("ok").is_none());
        let err = profile_keys(text, "broken").expect_err("partial");
        assert!(err.contains("aws_secret_access_key"), "{err}");
        assert!(
            !format!("{default:?}").contains("s3cr3t"),
            "Debug shows no secret"
        );
    }
}
