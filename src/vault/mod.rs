//! The vault: credentials encrypted at rest with age.
//!
//! Secrets are sealed either to an X25519 identity generated on first use in the
//! data dir (`vault.key`, mode 0600) or, when `REPOSAFE_PASSPHRASE` is set, with
//! that passphrase (age's scrypt recipient). A [`Credential`] never prints its
//! secret: `Debug` redacts it and it is only exposed to the code that builds an
//! `Authorization` header.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Environment variable that switches the vault to passphrase mode.
pub const PASSPHRASE_ENV: &str = "REPOSAFE_PASSPHRASE";
const KEY_FILE: &str = "vault.key";

/// The kinds of credential reposafe knows (mirrors the WIT `credential-kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialKind {
    /// Atlassian API token: account e-mail + token.
    ApiToken,
    /// Bitbucket Cloud workspace/project/repository access token.
    AccessToken,
    /// OAuth consumer: key + secret (client-credentials grant).
    OauthConsumer,
    /// Username + app password (legacy).
    AppPassword,
    /// Bitbucket Data Center HTTP access token.
    HttpAccessToken,
    /// Username + password.
    Basic,
    /// OAuth 2.0 authorization (the dashboard's "Connect"): the consumer key as
    /// identity; the secret is JSON `{"client_secret", "refresh_token"}`, exchanged
    /// for access tokens (refresh-token grant). Presented to providers as
    /// `oauth-consumer` (same API and git schemes).
    OauthAuthorization,
}

/// The secret of an [`CredentialKind::OauthAuthorization`] credential.
#[derive(Serialize, Deserialize)]
pub struct OAuthGrant {
    pub client_secret: String,
    pub refresh_token: String,
}

impl OAuthGrant {
    /// The grant in a credential's secret; the error never shows the secret.
    pub fn parse(secret: &SecretString) -> Result<OAuthGrant, VaultError> {
        let g: OAuthGrant = serde_json::from_str(secret.expose_secret()).map_err(|_| {
            VaultError::Invalid(
                "an oauth-authorization secret is JSON with `client_secret` and `refresh_token`"
                    .into(),
            )
        })?;
        if g.client_secret.trim().is_empty() || g.refresh_token.trim().is_empty() {
            return Err(VaultError::Invalid(
                "an oauth-authorization secret needs a non-empty `client_secret` and `refresh_token`"
                    .into(),
            ));
        }
        Ok(g)
    }

    /// The grant as a credential secret.
    pub fn to_secret(&self) -> SecretString {
        SecretString::from(serde_json::json!(self).to_string())
    }
}

impl CredentialKind {
    pub const ALL: [CredentialKind; 7] = [
        CredentialKind::ApiToken,
        CredentialKind::AccessToken,
        CredentialKind::OauthConsumer,
        CredentialKind::AppPassword,
        CredentialKind::HttpAccessToken,
        CredentialKind::Basic,
        CredentialKind::OauthAuthorization,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::ApiToken => "api-token",
            CredentialKind::AccessToken => "access-token",
            CredentialKind::OauthConsumer => "oauth-consumer",
            CredentialKind::AppPassword => "app-password",
            CredentialKind::HttpAccessToken => "http-access-token",
            CredentialKind::Basic => "basic",
            CredentialKind::OauthAuthorization => "oauth-authorization",
        }
    }

    /// The kind a provider sees (the WIT `credential-kind`): an OAuth authorization
    /// is presented as its consumer's tokens are.
    pub fn provider_kind(self) -> CredentialKind {
        match self {
            CredentialKind::OauthAuthorization => CredentialKind::OauthConsumer,
            other => other,
        }
    }

    /// Whether the secret is exchanged for OAuth access tokens (a 401 then means
    /// "fetch a new token" first).
    pub fn is_oauth(self) -> bool {
        self.provider_kind() == CredentialKind::OauthConsumer
    }

    /// Whether this kind carries an identity (e-mail, user name or OAuth key) beside the secret.
    pub fn needs_identity(self) -> bool {
        matches!(
            self,
            CredentialKind::ApiToken
                | CredentialKind::OauthConsumer
                | CredentialKind::OauthAuthorization
                | CredentialKind::AppPassword
                | CredentialKind::Basic
        )
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CredentialKind {
    type Err = VaultError;
    fn from_str(s: &str) -> Result<Self, VaultError> {
        CredentialKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(VaultError::UnknownKind)
    }
}

/// A credential with its secret. `Debug` never shows the secret.
#[derive(Clone)]
pub struct Credential {
    pub kind: CredentialKind,
    /// E-mail, user name or OAuth key; not secret.
    pub identity: Option<String>,
    pub secret: SecretString,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("kind", &self.kind)
            .field("identity", &self.identity)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Credential {
    /// Checks the credential has what its kind needs.
    pub fn validate(&self) -> Result<(), VaultError> {
        if self.secret.expose_secret().trim().is_empty() {
            return Err(VaultError::Invalid(format!(
                "the {} credential's secret is empty",
                self.kind
            )));
        }
        let identity_empty = self.identity.as_deref().is_none_or(|s| s.trim().is_empty());
        if self.kind.needs_identity() && identity_empty {
            let what = match self.kind {
                CredentialKind::ApiToken => "the Atlassian account e-mail",
                CredentialKind::OauthConsumer | CredentialKind::OauthAuthorization => {
                    "the OAuth consumer key"
                }
                _ => "the user name",
            };
            return Err(VaultError::Invalid(format!(
                "a {} credential needs {what}",
                self.kind
            )));
        }
        if self.secret.expose_secret().contains(['\n', '\r']) {
            return Err(VaultError::Invalid(format!(
                "the {} credential's secret contains a line break (check the token file)",
                self.kind
            )));
        }
        if self.kind == CredentialKind::OauthAuthorization {
            OAuthGrant::parse(&self.secret)?;
        }
        Ok(())
    }

    /// A masked, printable form: kind and identity, never the secret.
    pub fn masked(&self) -> String {
        match &self.identity {
            Some(id) => format!("{} {id} ********", self.kind),
            None => format!("{} ********", self.kind),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    kind: CredentialKind,
    identity: Option<String>,
    secret: String,
}

/// What can go wrong in the vault. Messages never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("vault key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("vault key file {path} is not a valid age X25519 identity")]
    BadKeyFile { path: PathBuf },
    #[error("cannot decrypt a stored credential: {0}")]
    Decrypt(String),
    #[error("cannot encrypt the credential: {0}")]
    Encrypt(String),
    /// The value is not shown: it may be a secret put in the wrong place.
    #[error("unknown credential kind; expected one of api-token, access-token, oauth-consumer, app-password, http-access-token, basic, oauth-authorization")]
    UnknownKind,
    #[error("invalid credential: {0}")]
    Invalid(String),
    /// Credentials are sealed to a key file that is gone; a new key would orphan them.
    #[error("vault key file {path} is missing, but {count} stored credential(s) are sealed to it: restore vault.key from your backup of this data dir (reposafe never creates a new key over sealed credentials)")]
    KeyFileMissing { path: PathBuf, count: usize },
    /// The vault is opened in one mode while the credentials were sealed in the other.
    #[error("{0}")]
    ModeMismatch(String),
    /// The key file or passphrase does not decrypt the stored credentials.
    #[error("{0}")]
    WrongKey(String),
}

/// How a credential was sealed, read from its age header: to the X25519 key in
/// `vault.key`, or with a passphrase (age's scrypt recipient).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealMode {
    KeyFile,
    Passphrase,
}

impl SealMode {
    /// The mode of a sealed credential, from the recipient stanzas of its age
    /// header (`-> X25519 ...` or `-> scrypt ...`); `None` when it is not age.
    pub fn of(sealed: &[u8]) -> Option<SealMode> {
        let header_end = sealed
            .windows(4)
            .position(|w| w == b"\n---")
            .unwrap_or(sealed.len());
        let header = std::str::from_utf8(&sealed[..header_end]).ok()?;
        let mut lines = header.lines();
        if lines.next()? != "age-encryption.org/v1" {
            return None;
        }
        lines.find_map(|l| match l.split(' ').nth(1) {
            Some("X25519") if l.starts_with("-> ") => Some(SealMode::KeyFile),
            Some("scrypt") if l.starts_with("-> ") => Some(SealMode::Passphrase),
            _ => None,
        })
    }
}

/// The passphrase of `REPOSAFE_PASSPHRASE`, when set and not empty.
fn passphrase_from_env() -> Option<SecretString> {
    std::env::var(PASSPHRASE_ENV)
        .ok()
        .filter(|p| !p.is_empty())
        .map(SecretString::from)
}

enum Key {
    Identity(age::x25519::Identity),
    Passphrase(SecretString),
}

/// Seals and opens credentials.
pub struct Vault {
    key: Key,
    key_file: PathBuf,
}

impl Vault {
    /// Opens the vault of a data dir: passphrase mode when `REPOSAFE_PASSPHRASE` is set,
    /// else the identity in `vault.key`, generated (mode 0600) when absent.
    pub fn open(data_dir: &Path) -> Result<Vault, VaultError> {
        Self::open_with(data_dir, passphrase_from_env())
    }

    /// [`Vault::open`] with the passphrase given (passphrase mode) or not.
    fn open_with(data_dir: &Path, passphrase: Option<SecretString>) -> Result<Vault, VaultError> {
        let key_file = data_dir.join(KEY_FILE);
        if let Some(p) = passphrase {
            return Ok(Vault {
                key: Key::Passphrase(p),
                key_file,
            });
        }
        let io = |source| VaultError::Io {
            path: key_file.clone(),
            source,
        };
        let identity = match fs::read_to_string(&key_file) {
            Ok(text) => {
                let line = text
                    .lines()
                    .find(|l| l.starts_with("AGE-SECRET-KEY-"))
                    .ok_or_else(|| VaultError::BadKeyFile {
                        path: key_file.clone(),
                    })?;
                age::x25519::Identity::from_str(line.trim()).map_err(|_| {
                    VaultError::BadKeyFile {
                        path: key_file.clone(),
                    }
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = age::x25519::Identity::generate();
                fs::create_dir_all(data_dir).map_err(io)?;
                let mut opts = fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    opts.mode(0o600);
                }
                let mut f = opts.open(&key_file).map_err(io)?;
                let text = format!(
                    "# reposafe vault key: decrypts the credentials in this data dir. Keep it private and backed up.\n# public key: {}\n{}\n",
                    id.to_public(),
                    id.to_string().expose_secret()
                );
                f.write_all(text.as_bytes()).map_err(io)?;
                f.sync_all().map_err(io)?;
                id
            }
            Err(e) => return Err(io(e)),
        };
        Ok(Vault {
            key: Key::Identity(identity),
            key_file,
        })
    }

    /// Opens the vault of a data dir without creating anything: passphrase mode when
    /// `REPOSAFE_PASSPHRASE` is set, else the existing `vault.key` (an error naming it
    /// when it is absent). For commands that must not change a data dir in use.
    pub fn open_existing(data_dir: &Path) -> Result<Vault, VaultError> {
        let passphrase = passphrase_from_env();
        let key_file = data_dir.join(KEY_FILE);
        if passphrase.is_none() && !key_file.exists() {
            return Err(VaultError::Io {
                path: key_file,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no vault key in this data dir (and REPOSAFE_PASSPHRASE is not set)",
                ),
            });
        }
        Self::open_with(data_dir, passphrase)
    }

    /// A short public name of the vault's key: 16 hex digits of the BLAKE3 of its
    /// public key; `None` in passphrase mode (a passphrase has no public part to name).
    pub fn key_label(&self) -> Option<String> {
        match &self.key {
            Key::Identity(id) => {
                let public = id.to_public().to_string();
                Some(blake3::hash(public.as_bytes()).to_hex()[..16].to_string())
            }
            Key::Passphrase(_) => None,
        }
    }

    /// Opens the vault of a data dir whose database holds the credentials `stored`
    /// (sealed), refusing what would lose or mix them: a missing `vault.key` while
    /// credentials are sealed to it (no new key is generated), the passphrase mode
    /// over credentials sealed to the key file or the other way round, and a key
    /// file or passphrase that does not decrypt them. Errors say what to restore.
    pub fn open_checked(data_dir: &Path, stored: &[Vec<u8>]) -> Result<Vault, VaultError> {
        Self::open_checked_with(data_dir, stored, passphrase_from_env())
    }

    fn open_checked_with(
        data_dir: &Path,
        stored: &[Vec<u8>],
        passphrase: Option<SecretString>,
    ) -> Result<Vault, VaultError> {
        let count = |m: SealMode| stored.iter().filter(|s| SealMode::of(s) == Some(m)).count();
        let (to_key, with_pass) = (count(SealMode::KeyFile), count(SealMode::Passphrase));
        let key_file = data_dir.join(KEY_FILE);
        let mode = passphrase;
        let passphrase = mode.is_some();
        if passphrase && to_key > 0 {
            return Err(VaultError::ModeMismatch(format!(
                "{PASSPHRASE_ENV} is set (passphrase mode), but {to_key} stored credential(s) are sealed to the key file {} (key-file mode): unset {PASSPHRASE_ENV}",
                key_file.display()
            )));
        }
        if !passphrase && with_pass > 0 {
            return Err(VaultError::ModeMismatch(format!(
                "{with_pass} stored credential(s) are sealed with a passphrase (passphrase mode), but {PASSPHRASE_ENV} is not set (key-file mode): set {PASSPHRASE_ENV} to the passphrase they were sealed with"
            )));
        }
        if !passphrase && to_key > 0 && !key_file.exists() {
            return Err(VaultError::KeyFileMissing {
                path: key_file,
                count: to_key,
            });
        }
        let vault = Vault::open_with(data_dir, mode)?;
        let wanted = if passphrase {
            SealMode::Passphrase
        } else {
            SealMode::KeyFile
        };
        if let Some(sample) = stored.iter().find(|s| SealMode::of(s) == Some(wanted)) {
            if vault.unseal(sample).is_err() {
                return Err(VaultError::WrongKey(if passphrase {
                    format!("{PASSPHRASE_ENV} does not decrypt the stored credentials: set it to the passphrase they were sealed with")
                } else {
                    format!(
                        "vault key file {} does not decrypt the stored credentials: it is not the key they were sealed to; restore the vault.key backup of this data dir",
                        key_file.display()
                    )
                }));
            }
        }
        Ok(vault)
    }

    /// Encrypts a credential.
    pub fn seal(&self, cred: &Credential) -> Result<Vec<u8>, VaultError> {
        let plain = serde_json::to_vec(&Sealed {
            kind: cred.kind,
            identity: cred.identity.clone(),
            secret: cred.secret.expose_secret().to_string(),
        })
        .map_err(|e| VaultError::Encrypt(e.to_string()))?;
        self.encrypt(&plain)
    }

    /// Decrypts a credential sealed by [`Vault::seal`].
    pub fn unseal(&self, sealed: &[u8]) -> Result<Credential, VaultError> {
        let plain = self.decrypt(sealed)?;
        let s: Sealed = serde_json::from_slice(&plain)
            .map_err(|_| VaultError::Decrypt("decrypted credential is malformed".into()))?;
        Ok(Credential {
            kind: s.kind,
            identity: s.identity,
            secret: SecretString::from(s.secret),
        })
    }

    /// Encrypts a secret that is not a credential (a webhook secret).
    pub fn seal_secret(&self, secret: &SecretString) -> Result<Vec<u8>, VaultError> {
        self.encrypt(secret.expose_secret().as_bytes())
    }

    /// Decrypts a secret sealed by [`Vault::seal_secret`].
    pub fn unseal_secret(&self, sealed: &[u8]) -> Result<SecretString, VaultError> {
        let plain = self.decrypt(sealed)?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| VaultError::Decrypt("decrypted secret is not UTF-8".into()))
    }

    fn encrypt(&self, plain: &[u8]) -> Result<Vec<u8>, VaultError> {
        let out = match &self.key {
            Key::Identity(id) => age::encrypt(&id.to_public(), plain),
            Key::Passphrase(p) => age::encrypt(&age::scrypt::Recipient::new(p.clone()), plain),
        };
        out.map_err(|e| VaultError::Encrypt(e.to_string()))
    }

    fn decrypt(&self, sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
        match &self.key {
            Key::Identity(id) => age::decrypt(id, sealed).map_err(|e| {
                VaultError::Decrypt(format!(
                    "{e} (with the key in {}; if the credentials were stored with a passphrase, set {PASSPHRASE_ENV})",
                    self.key_file.display()
                ))
            }),
            Key::Passphrase(p) => {
                age::decrypt(&age::scrypt::Identity::new(p.clone()), sealed).map_err(|e| {
                    VaultError::Decrypt(format!(
                        "{e} (with the passphrase from {PASSPHRASE_ENV}; if the credentials were stored without one, unset it)"
                    ))
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred() -> Credential {
        Credential {
            kind: CredentialKind::ApiToken,
            identity: Some("me@acme.test".into()),
            secret: SecretString::from("ATATT-very-secret".to_string()),
        }
    }

    #[test]
    fn seal_round_trip_with_generated_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let v = Vault::open(dir.path()).unwrap();
        let sealed = v.seal(&cred()).unwrap();
        assert!(!String::from_utf8_lossy(&sealed).contains("very-secret"));
        let back = Vault::open(dir.path()).unwrap().unseal(&sealed).unwrap();
        assert_eq!(back.secret.expose_secret(), "ATATT-very-secret");
        assert_eq!(back.identity.as_deref(), Some("me@acme.test"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn another_key_cannot_open_and_error_is_clean() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let sealed = Vault::open(a.path()).unwrap().seal(&cred()).unwrap();
        let err = Vault::open(b.path()).unwrap().unseal(&sealed).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("vault.key"), "{msg}");
        assert!(!msg.contains("very-secret"));
    }

    /// The mode is read from the age header of a sealed credential.
    #[test]
    fn seal_mode_is_read_from_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let key = Vault::open_with(dir.path(), None).unwrap();
        let pass = Vault::open_with(dir.path(), Some("pw".to_string().into())).unwrap();
        let to_key = key.seal(&cred()).unwrap();
        let with_pass = pass.seal(&cred()).unwrap();
        assert_eq!(SealMode::of(&to_key), Some(SealMode::KeyFile));
        assert_eq!(SealMode::of(&with_pass), Some(SealMode::Passphrase));
        assert_eq!(SealMode::of(b"not age"), None);
    }

    /// A missing key file over sealed credentials is refused, naming the file, and
    /// no new key is written; a different key file is refused too.
    #[test]
    fn a_lost_key_file_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let stored = vec![Vault::open_with(dir.path(), None)
            .unwrap()
            .seal(&cred())
            .unwrap()];
        let key_file = dir.path().join(KEY_FILE);
        let original = fs::read(&key_file).unwrap();
        assert!(Vault::open_checked_with(dir.path(), &stored, None).is_ok());
        fs::remove_file(&key_file).unwrap();
        let err = Vault::open_checked_with(dir.path(), &stored, None)
            .err()
            .expect("refused");
        assert!(
            matches!(err, VaultError::KeyFileMissing { count: 1, .. }),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&key_file.display().to_string()), "{msg}");
        assert!(msg.contains("restore vault.key"), "{msg}");
        assert!(
            !key_file.exists(),
            "a new key was generated over sealed credentials"
        );
        // Another key (e.g. a key file from another data dir) does not open them.
        Vault::open_with(dir.path(), None).unwrap();
        let err = Vault::open_checked_with(dir.path(), &stored, None)
            .err()
            .expect("refused");
        assert!(matches!(err, VaultError::WrongKey(_)), "{err}");
        assert!(err.to_string().contains("vault.key"), "{err}");
        fs::write(&key_file, original).unwrap();
        assert!(Vault::open_checked_with(dir.path(), &stored, None).is_ok());
        // No credentials: the first use creates the key.
        fs::remove_file(&key_file).unwrap();
        assert!(Vault::open_checked_with(dir.path(), &[], None).is_ok());
        assert!(key_file.exists());
    }

    /// Passphrase mode over key-file credentials, key-file mode over passphrase
    /// credentials, and a wrong passphrase are refused, naming the modes.
    #[test]
    fn modes_are_never_mixed_and_a_wrong_passphrase_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pw = || Some(SecretString::from("correct horse".to_string()));
        let to_key = vec![Vault::open_with(dir.path(), None)
            .unwrap()
            .seal(&cred())
            .unwrap()];
        let err = Vault::open_checked_with(dir.path(), &to_key, pw())
            .err()
            .expect("refused");
        let msg = err.to_string();
        assert!(
            msg.contains("passphrase mode") && msg.contains("key-file mode"),
            "{msg}"
        );
        assert!(msg.contains(&format!("unset {PASSPHRASE_ENV}")), "{msg}");

        let other = tempfile::tempdir().unwrap();
        let with_pass = vec![Vault::open_with(other.path(), pw())
            .unwrap()
            .seal(&cred())
            .unwrap()];
        let err = Vault::open_checked_with(other.path(), &with_pass, None)
            .err()
            .expect("refused");
        let msg = err.to_string();
        assert!(
            msg.contains("passphrase mode") && msg.contains(PASSPHRASE_ENV),
            "{msg}"
        );
        assert!(
            !other.path().join(KEY_FILE).exists(),
            "a key file was created"
        );
        let wrong = Some(SecretString::from("wrong".to_string()));
        let err = Vault::open_checked_with(other.path(), &with_pass, wrong)
            .err()
            .expect("refused");
        assert!(matches!(err, VaultError::WrongKey(_)), "{err}");
        assert!(Vault::open_checked_with(other.path(), &with_pass, pw()).is_ok());
    }

    #[test]
    fn debug_and_masked_hide_the_secret() {
        let c = cred();
        assert!(!format!("{c:?}").contains("very-secret"));
        assert!(!c.masked().contains("very-secret"));
    }

    #[test]
    fn validation_names_what_is_missing() {
        let mut c = cred();
        c.identity = None;
        assert!(c.validate().unwrap_err().to_string().contains("e-mail"));
        let c = Credential {
            kind: CredentialKind::AccessToken,
            identity: None,
            secret: SecretString::from("tok\nen".to_string()),
        };
        assert!(c.validate().unwrap_err().to_string().contains("line break"));
        assert!("nope".parse::<CredentialKind>().is_err());
    }
}
