//! Where the data dir's archive is: `<data>/archive/` (the default), or an S3 bucket
//! recorded by `reposafe archive init s3://BUCKET/PREFIX …` in
//! `<data>/archive-location.json` (mode 0600; the secret access key in it sealed by
//! the vault, like a Bitbucket secret). A file, not the state database, so that
//! commands run beside a daemon (`archive key …`) find the archive too.

use super::EngineError;
use crate::archive::{Backend, LocalBackend, S3Backend, S3Config};
use crate::vault::Vault;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const LOCATION_FILE: &str = "archive-location.json";

/// An S3 location as `archive init` and `archive copy` are given it. It travels to a
/// daemon in a copy request (`POST /api/v1/archive/copy`, field `s3`); its secret is
/// write-only there, as a connection's, and its `Debug` is redacted.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Location {
    /// `s3://BUCKET/PREFIX`.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default)]
    pub path_style: bool,
    /// Static credentials; without them, the key sources of [`super::s3_keys`] (not in
    /// a copy request to a daemon, which must carry both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "super::service::expose_optional_secret"
    )]
    pub secret_access_key: Option<SecretString>,
    /// PEM certificates of the CAs to trust for the endpoint's TLS besides the system's
    /// (`--ca-bundle FILE`: a store whose certificate a private CA signed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_pem: Option<String>,
}

/// An S3 location as recorded on disk (`archive-location.json`, a saved copy target):
/// the secret access key sealed by the vault.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredLocation {
    /// `s3://bucket/prefix`.
    url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    #[serde(default)]
    path_style: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    access_key_id: Option<String>,
    /// The secret access key sealed by the vault, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret_access_key_sealed: Option<String>,
    /// The recipient of the archive's key when it is encrypted: opening it any other
    /// way (a `FORMAT` changed in the bucket to plain) is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encrypted_to: Option<String>,
    /// The CA bundle given for the endpoint's TLS (PEM; public certificates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca_bundle_pem: Option<String>,
}

fn location_file(data_dir: &Path) -> PathBuf {
    data_dir.join(LOCATION_FILE)
}

/// The default archive: `<data>/archive/`.
pub(crate) fn local_backend(data_dir: &Path) -> Arc<dyn Backend> {
    Arc::new(LocalBackend::new(data_dir.join("archive")))
}

/// Checks an S3 location and makes its configuration (nothing is sent yet).
pub(crate) fn s3_config(loc: &S3Location) -> Result<S3Config, EngineError> {
    let (bucket, prefix) = S3Config::parse_url(&loc.url).map_err(|message| EngineError::Field {
        field: "location".into(),
        message,
    })?;
    let endpoint = match &loc.endpoint {
        Some(given) => {
            check_endpoint(given).map_err(|message| EngineError::Field {
                field: "endpoint".into(),
                message,
            })?;
            Some(given.clone())
        }
        // Settled here (see `settled_endpoint`): recorded, named and compared as where
        // requests go. Not the caller's field.
        None => environment_endpoint_checked("this process's").map_err(EngineError::Invalid)?,
    };
    if let Some(pem) = &loc.ca_bundle_pem {
        check_ca_bundle_field(pem)?;
    }
    if loc.access_key_id.is_some() != loc.secret_access_key.is_some() {
        return Err(EngineError::Invalid(
            "give both --access-key-id and --secret-access-key-file, or neither (the keys then come from the AWS environment variables, the config file's [s3] table or the AWS credentials file)".into(),
        ));
    }
    Ok(S3Config {
        bucket,
        prefix,
        endpoint,
        region: loc.region.clone(),
        path_style: loc.path_style,
        access_key_id: loc.access_key_id.clone(),
        secret_access_key: loc.secret_access_key.clone(),
        session_token: None,
        ca_bundle_pem: loc.ca_bundle_pem.clone(),
    })
}

/// Why `pem` is no CA bundle to trust (it holds no PEM certificate), for a front-end
/// that names the file it read.
pub fn check_ca_bundle(pem: &str) -> Result<(), String> {
    crate::archive::ca_certificates(pem).map(drop)
}

/// [`check_ca_bundle`] for a request: the error names the field `ca_bundle`.
pub(crate) fn check_ca_bundle_field(pem: &str) -> Result<(), EngineError> {
    check_ca_bundle(pem).map_err(|e| EngineError::Field {
        field: "ca_bundle".into(),
        message: format!("the CA bundle {e}"),
    })
}

/// Why `endpoint` is no endpoint: not an http(s) URL, or one holding credentials.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let parsed = url::Url::parse(endpoint).ok();
    if parsed
        .as_ref()
        .is_some_and(|u| !u.username().is_empty() || u.password().is_some())
    {
        return Err("the endpoint URL must not hold credentials: use --access-key-id and --secret-access-key-file".into());
    }
    match parsed {
        Some(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
        _ => Err(format!(
            "{endpoint:?} is not an http(s) URL, e.g. https://s3.example:9000"
        )),
    }
}

/// The endpoint the AWS variables of this process name (`archive::settled_endpoint`),
/// checked: one that is no endpoint is refused with a message naming the variable in
/// `whose` environment, its value not repeated (it may hold a secret).
pub(crate) fn environment_endpoint_checked(whose: &str) -> Result<Option<String>, String> {
    let Some((variable, value)) = crate::archive::environment_endpoint_named() else {
        return Ok(None);
    };
    check_endpoint(&value).map_err(|_| {
        format!(
            "{variable} in {whose} environment must be an http(s) URL without credentials, e.g. https://s3.example:9000"
        )
    })?;
    Ok(Some(value))
}

/// A backend for an S3 configuration, its temporary files under `<data>/tmp/s3`;
/// without keys of its own it gets them as `s3_keys` says.
pub(crate) fn s3_backend(data_dir: &Path, config: S3Config) -> Result<Arc<S3Backend>, EngineError> {
    let config = super::s3_keys::with_default_keys(config)?;
    let scratch = data_dir.join("tmp").join("s3");
    let backend = S3Backend::new(config, scratch).map_err(crate::archive::ArchiveError::from)?;
    Ok(Arc::new(backend))
}

/// Checks a store before an archive is created or attached there: the bucket answers
/// with these credentials, and it honours `If-None-Match` (a second create of the same
/// object must fail: manifests and the prune lease rely on it) and `If-Match` (a
/// replace of a version that is no longer current must fail: the prune lease's renewal
/// and takeover rely on it).
pub(crate) fn check_store(s3: &S3Backend) -> Result<(), EngineError> {
    check_conditions(s3, true)
}

/// [`check_store`] for the destination of a copy, which only creates there (its
/// manifests): `If-None-Match` is all it needs.
pub(crate) fn check_copy_store(s3: &S3Backend) -> Result<(), EngineError> {
    check_conditions(s3, false)
}

fn check_conditions(s3: &S3Backend, if_match: bool) -> Result<(), EngineError> {
    use crate::archive::{ArchiveError, FileKind};
    s3.check_bucket().map_err(ArchiveError::from)?;
    let probe = format!("probe-{:08x}", rand::random::<u32>());
    let version = s3
        .create_versioned(FileKind::Lock, &probe, b"probe")
        .map_err(ArchiveError::from)?;
    let honoured = probe_conditions(s3, &probe, &version, if_match);
    let _ = s3.delete(FileKind::Lock, &probe);
    honoured
}

/// Whether the store honours both conditions on the object `probe` (just created,
/// at `version`).
fn probe_conditions(
    s3: &S3Backend,
    probe: &str,
    version: &str,
    if_match: bool,
) -> Result<(), EngineError> {
    use crate::archive::{ArchiveError, FileKind};
    let ignored = |condition: &str| {
        EngineError::Invalid(format!(
            "{} at {}: the store ignores conditional writes ({condition}): reposafe needs them so that no manifest or lease is overwritten; use a store that supports them",
            s3.root_location().display(),
            s3.endpoint_name()
        ))
    };
    // A store that answers a condition with "not implemented" (501) does not honour it.
    let unsupported = |e: crate::archive::BackendError, condition: &str| {
        if e.kind() == std::io::ErrorKind::Unsupported {
            ignored(condition)
        } else {
            ArchiveError::from(e).into()
        }
    };
    match s3.create_new(FileKind::Lock, probe, b"again") {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(unsupported(e, "If-None-Match")),
        Ok(()) => return Err(ignored("If-None-Match")),
    }
    if !if_match {
        return Ok(());
    }
    let stale = "\"00000000000000000000000000000000\"";
    let replaced_stale = s3
        .replace_if(FileKind::Lock, probe, b"stale", stale)
        .map_err(|e| unsupported(e, "If-Match"))?;
    if replaced_stale.is_some() {
        return Err(ignored("If-Match"));
    }
    let renewed = s3
        .replace_if(FileKind::Lock, probe, b"renewed", version)
        .map_err(|e| unsupported(e, "If-Match"))?;
    match renewed {
        Some(_) => Ok(()),
        None => Err(ignored("If-Match: it refused the current version")),
    }
}

/// The recorded location, `None` for the default directory.
fn stored(data_dir: &Path) -> Result<Option<StoredLocation>, EngineError> {
    let path = location_file(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(EngineError::DataDir {
                path,
                reason: e.to_string(),
            })
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| EngineError::DataDir {
            path,
            reason: e.to_string(),
        })
}

/// The recipient the recorded archive was encrypted to, if it was.
pub(crate) fn encrypted_to(data_dir: &Path) -> Result<Option<String>, EngineError> {
    Ok(stored(data_dir)?.and_then(|s| s.encrypted_to))
}

/// The data dir's archive backend: the recorded S3 location, else `<data>/archive/`.
pub(crate) fn backend(data_dir: &Path, vault: &Vault) -> Result<Arc<dyn Backend>, EngineError> {
    let Some((config, _)) = recorded_s3(data_dir, vault)? else {
        return Ok(local_backend(data_dir));
    };
    Ok(s3_backend(data_dir, config)?)
}

/// The recorded S3 location's configuration (its secret unsealed by `vault`) and the
/// recipient it records the archive encrypted to; `None` for the default directory.
pub(crate) fn recorded_s3(
    data_dir: &Path,
    vault: &Vault,
) -> Result<Option<(S3Config, Option<String>)>, EngineError> {
    let Some(stored) = stored(data_dir)? else {
        return Ok(None);
    };
    let config = stored.open(vault, &location_file(data_dir))?;
    Ok(Some((config, stored.encrypted_to)))
}

impl StoredLocation {
    /// The record of `config`, its secret sealed by `vault`.
    pub(crate) fn seal(
        vault: &Vault,
        config: &S3Config,
        encrypted_to: Option<String>,
    ) -> Result<StoredLocation, EngineError> {
        let sealed = match &config.secret_access_key {
            Some(secret) => Some(hex::encode(vault.seal_secret(secret)?)),
            None => None,
        };
        Ok(StoredLocation {
            url: config.url(),
            endpoint: config.endpoint.clone(),
            region: config.region.clone(),
            path_style: config.path_style,
            access_key_id: config.access_key_id.clone(),
            secret_access_key_sealed: sealed,
            encrypted_to,
            ca_bundle_pem: config.ca_bundle_pem.clone(),
        })
    }

    /// The configuration recorded (read from `path`, named in errors), the secret
    /// unsealed by `vault`.
    pub(crate) fn open(&self, vault: &Vault, path: &Path) -> Result<S3Config, EngineError> {
        let secret = match &self.secret_access_key_sealed {
            Some(hex_text) => {
                let sealed = hex::decode(hex_text).map_err(|e| EngineError::DataDir {
                    path: path.to_path_buf(),
                    reason: format!("sealed secret: {e}"),
                })?;
                Some(vault.unseal_secret(&sealed)?)
            }
            None => None,
        };
        s3_config(&S3Location {
            url: self.url.clone(),
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            path_style: self.path_style,
            access_key_id: self.access_key_id.clone(),
            secret_access_key: secret,
            ca_bundle_pem: self.ca_bundle_pem.clone(),
        })
    }

    /// `s3://bucket/prefix`.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// What tells this location from another: the URL and the endpoint (one bucket name
    /// may exist at several providers).
    pub(crate) fn identity(&self) -> String {
        settled_identity(&self.url, self.endpoint.as_deref())
    }
}

impl S3Location {
    /// What tells this location from another (see [`StoredLocation::identity`]).
    pub(crate) fn identity(&self) -> String {
        settled_identity(&self.url, self.endpoint.as_deref())
    }
}

/// The identity of `url` given `endpoint`, settled as its requests are (a location
/// recorded or asked for without one is where the AWS variables point, else AWS).
fn settled_identity(url: &str, endpoint: Option<&str>) -> String {
    identity_of(url, crate::archive::settled_endpoint(endpoint).as_deref())
}

/// The identity of `s3://bucket/prefix` at `endpoint` (AWS when none), the endpoint
/// as a URL parser writes it (lower-case host, no default port, no trailing `/`), so
/// two spellings of one endpoint are one location.
pub(crate) fn identity_of(url: &str, endpoint: Option<&str>) -> String {
    let parsed = endpoint.and_then(|e| url::Url::parse(e).ok());
    // AWS's bucket names are global: every endpoint of it reaches the same bucket.
    let aws = parsed
        .as_ref()
        .and_then(|u| u.host_str())
        .is_some_and(|h| h == "amazonaws.com" || h.ends_with(".amazonaws.com"));
    let endpoint = match (endpoint, parsed) {
        (None, _) => "AWS".to_string(),
        _ if aws => "AWS".to_string(),
        (Some(_), Some(u)) => u.as_str().trim_end_matches('/').to_string(),
        (Some(e), None) => e.trim_end_matches('/').to_string(),
    };
    format!("{} at {endpoint}", url.trim_end_matches('/'))
}

/// Whether two locations (identities as [`identity_of`] makes them, or absolute
/// directories) are the same or one holds the other: the same endpoint and bucket, and
/// one prefix a leading part of the other's; or one directory inside the other.
pub(crate) fn overlapping(a: &str, b: &str) -> bool {
    fn parts(identity: &str) -> Option<(&str, Vec<&str>)> {
        let (url, endpoint) = identity.strip_prefix("s3://")?.rsplit_once(" at ")?;
        Some((endpoint, url.split('/').filter(|p| !p.is_empty()).collect()))
    }
    match (parts(a), parts(b)) {
        (Some((endpoint_a, path_a)), Some((endpoint_b, path_b))) => {
            let common = path_a.len().min(path_b.len());
            endpoint_a == endpoint_b && path_a[..common] == path_b[..common]
        }
        (None, None) => Path::new(a).starts_with(b) || Path::new(b).starts_with(a),
        _ => false,
    }
}

/// Where the data dir records its archive to be, as `archive show` prints it.
pub(crate) struct RecordedPlace {
    /// `s3://BUCKET/PREFIX`, or the absolute directory of `<data>/archive/`.
    pub(crate) location: String,
    /// The endpoint of an S3 location (`AWS` when none is set anywhere).
    pub(crate) endpoint: Option<String>,
    /// The recipient of the archive's key, when the S3 location records one.
    pub(crate) encrypted_to: Option<String>,
    /// The access key ID an S3 location records (given at `archive init` or `archive update`).
    pub(crate) access_key_id: Option<String>,
    /// The CA bundle an S3 location records (PEM).
    pub(crate) ca_bundle_pem: Option<String>,
}

impl RecordedPlace {
    /// The directory of a local archive (none for a bucket).
    pub(crate) fn local_dir(&self) -> Option<&Path> {
        self.endpoint.is_none().then(|| Path::new(&self.location))
    }

    /// Where an S3 location's keys come from (see [`super::s3_keys::describe_keys`]).
    pub(crate) fn s3_keys(&self) -> Option<String> {
        self.endpoint
            .is_some()
            .then(|| super::s3_keys::describe_keys(self.access_key_id.as_deref()))
    }

    /// What an https endpoint's certificate is checked against (none for a directory
    /// or a plain-http endpoint).
    pub(crate) fn tls_trust(&self) -> Option<String> {
        let endpoint = self.endpoint.as_deref()?;
        if endpoint.starts_with("http://") {
            return None;
        }
        let certificates = self
            .ca_bundle_pem
            .as_deref()
            .and_then(|pem| crate::archive::ca_certificates(pem).ok())
            .map_or(0, |certificates| certificates.len());
        Some(match certificates {
            0 => "the system's trust store".to_string(),
            1 => "the system's trust store and the 1 certificate of the recorded CA bundle"
                .to_string(),
            n => format!(
                "the system's trust store and the {n} certificates of the recorded CA bundle"
            ),
        })
    }
}

/// Where the data dir records its archive to be (nothing is asked of the store).
pub(crate) fn recorded_place(data_dir: &Path) -> Result<RecordedPlace, EngineError> {
    Ok(match stored(data_dir)? {
        Some(s) => RecordedPlace {
            endpoint: Some(
                crate::archive::settled_endpoint(s.endpoint.as_deref())
                    .unwrap_or_else(|| "AWS".to_string()),
            ),
            access_key_id: s.access_key_id,
            ca_bundle_pem: s.ca_bundle_pem,
            location: s.url,
            encrypted_to: s.encrypted_to,
        },
        None => RecordedPlace {
            location: absolute_archive_dir(data_dir)?,
            endpoint: None,
            encrypted_to: None,
            access_key_id: None,
            ca_bundle_pem: None,
        },
    })
}

/// `<data>/archive/`, absolute.
fn absolute_archive_dir(data_dir: &Path) -> Result<String, EngineError> {
    Ok(std::path::absolute(data_dir.join("archive"))
        .map_err(|e| EngineError::DataDir {
            path: data_dir.to_path_buf(),
            reason: e.to_string(),
        })?
        .display()
        .to_string())
}

/// The identity of the data dir's archive location (see [`StoredLocation::identity`];
/// the absolute directory for `<data>/archive/`).
pub(crate) fn current_identity(data_dir: &Path) -> Result<String, EngineError> {
    Ok(match stored(data_dir)? {
        Some(s) => s.identity(),
        None => absolute_archive_dir(data_dir)?,
    })
}

/// Writes `value` as JSON to `path` (mode 0600 by the data dir's umask), replacing the
/// file atomically.
pub(crate) fn write_json_atomically(
    path: &Path,
    value: &impl Serialize,
) -> Result<(), EngineError> {
    let io = |e: std::io::Error| EngineError::DataDir {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let json = serde_json::to_vec_pretty(value)
        .map_err(|e| EngineError::Internal(format!("{}: {e}", path.display())))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    std::io::Write::write_all(&mut tmp, &json).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// Records an S3 location (the secret sealed by `vault`) and the recipient of the
/// archive there when it is encrypted, replacing the file atomically.
pub(crate) fn save(
    data_dir: &Path,
    vault: &Vault,
    config: &S3Config,
    encrypted_to: Option<String>,
) -> Result<(), EngineError> {
    let stored = StoredLocation::seal(vault, config, encrypted_to)?;
    write_json_atomically(&location_file(data_dir), &stored)
}

#[cfg(test)]
mod tests {
    use super::{identity_of, overlapping};

    /// A copy may not go onto the archive, inside it or around it: same endpoint and
    /// bucket, one prefix leading the other.
    #[test]
    fn locations_overlap_when_one_prefix_leads_the_other_at_one_endpoint() {
        let archive = identity_of("s3://b/team/archive", Some("https://s3.example:9000/"));
        for (other, expected) in [
            (
                identity_of("s3://b/team/archive/", Some("https://s3.example:9000")),
                true,
            ),
            (
                identity_of("s3://b/team/archive/copy", Some("https://s3.example:9000")),
                true,
            ),
            (
                identity_of("s3://b/team", Some("https://s3.example:9000")),
                true,
            ),
            (identity_of("s3://b", Some("https://s3.example:9000")), true),
            (
                identity_of("s3://b/team/archive-2", Some("https://s3.example:9000")),
                false,
            ),
            (
                identity_of("s3://b/other", Some("https://s3.example:9000")),
                false,
            ),
            (
                identity_of("s3://c/team/archive", Some("https://s3.example:9000")),
                false,
            ),
            (
                identity_of("s3://b/team/archive", Some("https://other.example")),
                false,
            ),
            (identity_of("s3://b/team/archive", None), false),
            ("/srv/copies".to_string(), false),
            ("/srv/team/archive".to_string(), false),
        ] {
            assert_eq!(
                overlapping(&archive, &other),
                expected,
                "{archive} / {other}"
            );
            assert_eq!(
                overlapping(&other, &archive),
                expected,
                "{other} / {archive}"
            );
        }
        assert!(overlapping("/srv/archive", "/srv/archive"));
        assert!(overlapping("/srv/data/archive", "/srv"));
        assert!(overlapping("/srv/data/archive", "/srv/data/archive/x"));
        assert!(!overlapping("/srv/data/archive", "/srv/data/archive-2"));
        // Every AWS endpoint reaches the one global bucket namespace.
        let aws = identity_of("s3://b/team", None);
        assert!(overlapping(
            &aws,
            &identity_of("s3://b/team", Some("https://s3.eu-west-1.amazonaws.com"))
        ));
        assert!(overlapping(
            &aws,
            &identity_of("s3://b", Some("https://s3.amazonaws.com/"))
        ));
    }
}
