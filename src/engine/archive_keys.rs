//! The data dir's archive as a whole: opening it (unlocking an encrypted one),
//! creating it encrypted (`archive init --encrypt`), its sealed keys (`archive key
//! add`, `archive key export`), the keys and CA bundle recorded for an archive in an
//! object store (`archive update`) and what `archive show` prints.
//!
//! An encrypted archive's key is stored in the archive only sealed (`keys/<name>`):
//! - `vault-<label>`: to the data dir's vault key (`vault.key`; `label` names its
//!   public key), so the data dir opens its archive with nothing else;
//! - `vault-passphrase-<n>`: with the vault's passphrase, when the vault is in
//!   passphrase mode (`REPOSAFE_PASSPHRASE`);
//! - `passphrase-<n>`: with an archive passphrase (age scrypt), so the archive opens
//!   without the data dir: `REPOSAFE_ARCHIVE_PASSPHRASE`.
//!
//! The key exported by `archive key export` opens it too (`REPOSAFE_ARCHIVE_KEY_FILE`).
//! Opened by a passphrase or an exported key, the archive gets a copy sealed to this
//! data dir's vault, so the next start needs neither.

use super::archive_location::{self, S3Location};
use super::service::{ArchiveInfo, ArchiveKeyInfo};
use super::EngineError;
use crate::archive::{Archive, ArchiveKey, ArchiveLayout, Backend, FileKind};
use crate::vault::Vault;
use secrecy::{ExposeSecret, SecretString};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A passphrase that opens the archive (one added by `init --passphrase-file` or `key add`).
pub const ARCHIVE_PASSPHRASE_ENV: &str = "REPOSAFE_ARCHIVE_PASSPHRASE";
/// A file written by `archive key export`.
pub const ARCHIVE_KEY_FILE_ENV: &str = "REPOSAFE_ARCHIVE_KEY_FILE";

const VAULT_PREFIX: &str = "vault-";
const VAULT_PASSPHRASE_PREFIX: &str = "vault-passphrase-";
const PASSPHRASE_PREFIX: &str = "passphrase-";

/// What to create with [`init_archive`].
#[derive(Debug, Default)]
pub struct ArchiveInit {
    /// An S3 bucket to keep the archive in (created there, or attached when one is
    /// there already); `None`: the data dir's current archive.
    pub location: Option<S3Location>,
    /// Encrypt the archive (its key sealed to the vault).
    pub encrypt: bool,
    /// Also seal the key with this passphrase, to open the archive without the data dir.
    pub passphrase: Option<SecretString>,
}

/// What [`init_archive`] did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ArchiveInitReport {
    /// A new archive was made (else an existing one was attached, or kept).
    pub created: bool,
    pub archive: ArchiveInfo,
}

fn env_secret(name: &str) -> Option<SecretString> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .map(SecretString::from)
}

/// A fresh name for a key file: the prefix and 8 random hex digits.
fn new_key_name(prefix: &str) -> String {
    format!("{prefix}{:08x}", rand::random::<u32>())
}

/// The name of the key file sealed to `vault`.
fn vault_key_name(vault: &Vault) -> String {
    match vault.key_label() {
        Some(label) => format!("{VAULT_PREFIX}{label}"),
        None => new_key_name(VAULT_PASSPHRASE_PREFIX),
    }
}

/// Whether `name` is a key file `vault` opens.
fn sealed_to(vault: &Vault, name: &str) -> bool {
    match vault.key_label() {
        Some(label) => name == format!("{VAULT_PREFIX}{label}"),
        None => name.starts_with(VAULT_PASSPHRASE_PREFIX),
    }
}

/// The key sealed to `vault`, a copy the archive stores.
fn seal_to_vault(vault: &Vault, key: &ArchiveKey) -> Result<(String, Vec<u8>), EngineError> {
    Ok((
        vault_key_name(vault),
        vault.seal_secret(&key.secret_text())?,
    ))
}

/// The key sealed with a passphrase (age scrypt).
fn seal_with_passphrase(
    passphrase: &SecretString,
    key: &ArchiveKey,
) -> Result<(String, Vec<u8>), EngineError> {
    let recipient = age::scrypt::Recipient::new(passphrase.clone());
    let sealed = age::encrypt(&recipient, key.secret_text().expose_secret().as_bytes())
        .map_err(|e| EngineError::Internal(format!("cannot seal the archive key: {e}")))?;
    Ok((new_key_name(PASSPHRASE_PREFIX), sealed))
}

fn parse_key(text: &str, what: &str) -> Result<ArchiveKey, EngineError> {
    ArchiveKey::parse(text).map_err(|e| EngineError::Invalid(format!("{what}: {e}")))
}

/// Opens the data dir's archive, creating an empty plain one when there is none. An
/// encrypted archive is unlocked with the vault, else `REPOSAFE_ARCHIVE_KEY_FILE` or
/// `REPOSAFE_ARCHIVE_PASSPHRASE` (and then given a copy of its key sealed to the vault).
pub(crate) fn open_archive(data_dir: &Path, vault: &Vault) -> Result<Archive, EngineError> {
    let backend = archive_location::backend(data_dir, vault)?;
    let layout = Archive::inspect_on(backend.as_ref())?;
    refuse_downgrade(data_dir, &backend, &layout)?;
    match layout {
        ArchiveLayout::Encrypted { .. } => unlock(backend, vault),
        ArchiveLayout::Empty => Ok(Archive::open_or_create_on(backend)?),
        layout @ ArchiveLayout::Plain { .. } => Ok(Archive::open_plain_on(backend, layout)?),
    }
}

/// Refuses an archive recorded as encrypted that now reads as plain or as encrypted to
/// another key: someone with access to the bucket changed it, and writing on would
/// store plaintext (or lock this data dir out).
fn refuse_downgrade(
    data_dir: &Path,
    backend: &Arc<dyn Backend>,
    layout: &ArchiveLayout,
) -> Result<(), EngineError> {
    let Some(expected) = archive_location::encrypted_to(data_dir)? else {
        return Ok(());
    };
    match layout {
        ArchiveLayout::Encrypted { recipient } if *recipient == expected => Ok(()),
        _ => Err(EngineError::Conflict(format!(
            "the archive at {} was encrypted to {expected} when this data dir attached to it, but its FORMAT now says otherwise: \
             someone with access to the store changed it; reposafe does not write to it (check the bucket)",
            backend.root_location().display()
        ))),
    }
}

/// Opens an encrypted archive with the first of its sealed keys this process can open.
fn unlock(backend: Arc<dyn Backend>, vault: &Vault) -> Result<Archive, EngineError> {
    let files = Archive::key_files_on(backend.as_ref())?;
    for (name, sealed) in files.iter().filter(|(n, _)| sealed_to(vault, n)) {
        match vault.unseal_secret(sealed) {
            Ok(text) => {
                let key = parse_key(text.expose_secret(), &format!("archive key file {name}"))?;
                return Ok(Archive::open_encrypted_on(backend, key)?);
            }
            Err(e) => tracing::warn!("archive key file {name} does not open with the vault: {e}"),
        }
    }
    let key = key_from_environment(&files)?.ok_or_else(|| locked(&backend, files.len()))?;
    let archive = Archive::open_encrypted_on(backend, key)?;
    if let Some(key) = archive.key() {
        let (name, sealed) = seal_to_vault(vault, key)?;
        match archive.add_key_file(&name, &sealed) {
            Ok(()) => tracing::info!("archive key sealed to this data dir's vault as keys/{name}"),
            Err(e) => tracing::warn!("cannot seal the archive key to this data dir's vault: {e}"),
        }
    }
    Ok(archive)
}

/// The key from `REPOSAFE_ARCHIVE_KEY_FILE`, else from a `passphrase-*` key file that
/// `REPOSAFE_ARCHIVE_PASSPHRASE` opens; `None` when neither is set.
fn key_from_environment(files: &[(String, Vec<u8>)]) -> Result<Option<ArchiveKey>, EngineError> {
    if let Some(path) = std::env::var_os(ARCHIVE_KEY_FILE_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            EngineError::Invalid(format!(
                "{ARCHIVE_KEY_FILE_ENV}={}: cannot read it: {e}",
                path.display()
            ))
        })?;
        let what = format!("{ARCHIVE_KEY_FILE_ENV}={}", path.display());
        return parse_key(&text, &what).map(Some);
    }
    let Some(passphrase) = env_secret(ARCHIVE_PASSPHRASE_ENV) else {
        return Ok(None);
    };
    let identity = age::scrypt::Identity::new(passphrase);
    let candidates: Vec<_> = files
        .iter()
        .filter(|(n, _)| n.starts_with(PASSPHRASE_PREFIX))
        .collect();
    for (name, sealed) in &candidates {
        if let Ok(text) = age::decrypt(&identity, sealed) {
            let text = String::from_utf8_lossy(&text);
            return parse_key(&text, &format!("archive key file {name}")).map(Some);
        }
    }
    Err(EngineError::Invalid(if candidates.is_empty() {
        format!("{ARCHIVE_PASSPHRASE_ENV} is set, but the archive has no passphrase key (add one with `reposafe archive key add` where the archive opens)")
    } else {
        format!(
            "{ARCHIVE_PASSPHRASE_ENV} opens none of the archive's {} passphrase key file(s): check the passphrase",
            candidates.len()
        )
    }))
}

fn locked(backend: &Arc<dyn Backend>, keys: usize) -> EngineError {
    EngineError::Invalid(format!(
        "the archive at {} is encrypted and this data dir's vault opens none of its {keys} key file(s): \
         set {ARCHIVE_PASSPHRASE_ENV} to a passphrase added with `reposafe archive key add`, \
         or {ARCHIVE_KEY_FILE_ENV} to a key written by `reposafe archive key export` \
         (without one of them the archive cannot be read)",
        backend.root_location().display()
    ))
}

/// Creates the data dir's archive: encrypted when asked (the key sealed to the vault,
/// and with the passphrase when one is given), in an S3 bucket when one is named (an
/// archive already there is attached, never overwritten). Refuses to encrypt an archive
/// that holds backups (encryption is chosen at creation), to leave behind a current
/// archive with snapshots for another location, and a data dir another process uses.
pub fn init_archive(data_dir: &Path, req: ArchiveInit) -> Result<ArchiveInitReport, EngineError> {
    if req.passphrase.is_some() && !req.encrypt {
        return Err(EngineError::Invalid(
            "a passphrase is for an encrypted archive: add --encrypt".into(),
        ));
    }
    super::data_dir::private_umask();
    std::fs::create_dir_all(data_dir).map_err(|e| EngineError::DataDir {
        path: data_dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    // Holding the state database keeps every other reposafe process out meanwhile.
    let state = crate::state::State::open(data_dir)?;
    let vault = Vault::open_checked(data_dir, &super::data_dir::sealed_credentials(&state)?)?;
    let current = archive_location::backend(data_dir, &vault)?;
    let (backend, s3) = match &req.location {
        Some(loc) => {
            let config = archive_location::s3_config(loc)?;
            let s3 = archive_location::s3_backend(data_dir, config.clone())?;
            archive_location::check_store(&s3)?;
            let backend: Arc<dyn Backend> = s3;
            refuse_leaving_backups(current.as_ref(), backend.as_ref())?;
            (backend, Some(config))
        }
        None => (current, None),
    };
    let layout = Archive::inspect_on(backend.as_ref())?;
    let encrypted = matches!(layout, ArchiveLayout::Encrypted { .. });
    let created = layout == ArchiveLayout::Empty || (req.encrypt && !encrypted);
    let archive = if req.encrypt && !encrypted {
        let key = ArchiveKey::generate();
        let mut sealed = vec![seal_to_vault(&vault, &key)?];
        if let Some(p) = &req.passphrase {
            sealed.push(seal_with_passphrase(p, &key)?);
        }
        Archive::create_encrypted_on(backend, key, &sealed)?
    } else if encrypted && req.encrypt && s3.is_none() {
        let ArchiveLayout::Encrypted { recipient } = layout else {
            return Err(EngineError::Internal(
                "an encrypted layout without a recipient".into(),
            ));
        };
        return Err(EngineError::Conflict(format!(
            "the archive at {} is encrypted already (to {recipient})",
            backend.root_location().display()
        )));
    } else if encrypted {
        unlock(backend, &vault)?
    } else {
        Archive::open_or_create_on(backend)?
    };
    if let Some(config) = &s3 {
        archive_location::save(
            data_dir,
            &vault,
            config,
            archive.key().map(ArchiveKey::recipient),
        )?;
    }
    Ok(ArchiveInitReport {
        created,
        archive: archive_info(&archive, data_dir)?,
    })
}

/// What [`update_archive_store`] changes in the recorded S3 location; what is not
/// given stays as recorded.
#[derive(Debug, Default)]
pub struct ArchiveStoreUpdate {
    /// New static keys (both or neither), e.g. after the store's keys were rotated.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<SecretString>,
    /// The CA bundle (PEM) to trust for the endpoint's TLS: `Some(Some(pem))` replaces
    /// the recorded one (the store's CA changed), `Some(None)` forgets it.
    pub ca_bundle_pem: Option<Option<String>>,
}

impl ArchiveStoreUpdate {
    /// What this update does, in words; empty when nothing.
    fn changes(&self) -> Vec<String> {
        let keys = self.access_key_id.is_some() || self.secret_access_key.is_some();
        let bundle = match &self.ca_bundle_pem {
            None => None,
            Some(Some(_)) => Some("replaced the CA bundle"),
            Some(None) => Some("removed the CA bundle"),
        };
        keys.then_some("replaced the keys")
            .into_iter()
            .chain(bundle)
            .map(String::from)
            .collect()
    }
}

/// What [`update_archive_store`] did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ArchiveStoreUpdateReport {
    /// What was done (`replaced the keys`, `replaced the CA bundle`, `removed the CA
    /// bundle`).
    pub changed: Vec<String>,
    pub archive: ArchiveInfo,
}

/// Changes the keys or the CA bundle recorded for the data dir's S3 archive (after the
/// store's keys were rotated or its certificate's CA changed). The store is checked
/// with the changed settings first, as `archive init` checks it, and must hold the
/// archive there: otherwise nothing is changed. Refuses a local archive and a data
/// dir another process uses.
pub fn update_archive_store(
    data_dir: &Path,
    req: ArchiveStoreUpdate,
) -> Result<ArchiveStoreUpdateReport, EngineError> {
    let changed = req.changes();
    check_store_update(&req, &changed)?;
    if archive_location::recorded_place(data_dir)?
        .endpoint
        .is_none()
    {
        return Err(not_in_a_store(data_dir));
    }
    super::data_dir::private_umask();
    // Holding the state database keeps every other reposafe process out meanwhile.
    let state = crate::state::State::open(data_dir)?;
    let vault = Vault::open_checked(data_dir, &super::data_dir::sealed_credentials(&state)?)?;
    let (mut config, encrypted_to) =
        archive_location::recorded_s3(data_dir, &vault)?.ok_or_else(|| not_in_a_store(data_dir))?;
    if let (Some(id), Some(secret)) = (req.access_key_id, req.secret_access_key) {
        config.access_key_id = Some(id);
        config.secret_access_key = Some(secret);
    }
    if let Some(bundle) = req.ca_bundle_pem {
        config.ca_bundle_pem = bundle;
    }
    let s3 = archive_location::s3_backend(data_dir, config.clone())?;
    archive_location::check_store(&s3)?;
    if Archive::inspect_on(s3.as_ref())? == ArchiveLayout::Empty {
        return Err(EngineError::Conflict(format!(
            "{} at {} holds no archive as these settings see it (check that the keys are \
             for the account the archive is in)",
            s3.root_location().display(),
            s3.endpoint_name()
        )));
    }
    archive_location::save(data_dir, &vault, &config, encrypted_to)?;
    let archive = open_archive(data_dir, &vault)?;
    Ok(ArchiveStoreUpdateReport {
        changed,
        archive: archive_info(&archive, data_dir)?,
    })
}

/// Refuses an update that changes nothing, gives half of the keys, or a CA bundle that
/// holds no certificate.
fn check_store_update(req: &ArchiveStoreUpdate, changed: &[String]) -> Result<(), EngineError> {
    if changed.is_empty() {
        return Err(EngineError::Invalid(
            "nothing to change: give new keys (--access-key-id and --secret-access-key-file), --ca-bundle FILE or --no-ca-bundle".into(),
        ));
    }
    if req.access_key_id.is_some() != req.secret_access_key.is_some() {
        return Err(EngineError::Invalid(
            "give both --access-key-id and --secret-access-key-file".into(),
        ));
    }
    if let Some(Some(pem)) = &req.ca_bundle_pem {
        archive_location::check_ca_bundle_field(pem)?;
    }
    Ok(())
}

fn not_in_a_store(data_dir: &Path) -> EngineError {
    EngineError::Invalid(format!(
        "the archive of {} is its directory archive/, not in an object store: it has no keys or CA bundle to update",
        data_dir.display()
    ))
}

/// Refuses to move the data dir to `target` while its current archive (elsewhere)
/// holds snapshots `target` lacks: they would no longer be seen by restores. A
/// `target` holding all of them (a copy made by `archive copy`) is fine; the current
/// archive is left where it is.
fn refuse_leaving_backups(current: &dyn Backend, target: &dyn Backend) -> Result<(), EngineError> {
    if current.root_location() == target.root_location()
        || Archive::inspect_on(current)? == ArchiveLayout::Empty
    {
        return Ok(());
    }
    let listed = |b: &dyn Backend| -> Result<std::collections::HashSet<String>, EngineError> {
        Ok(b.list(FileKind::Snapshot, "")
            .map_err(crate::archive::ArchiveError::from)?
            .into_iter()
            .collect())
    };
    let mine = listed(current)?;
    if mine.is_empty() {
        return Ok(());
    }
    let there = if Archive::inspect_on(target)? == ArchiveLayout::Empty {
        Default::default()
    } else {
        listed(target)?
    };
    let missing = mine.difference(&there).count();
    if missing == 0 {
        return Ok(());
    }
    Err(EngineError::Conflict(format!(
        "this data dir's archive at {} holds {} snapshot(s), {missing} of them not at {}; \
         copy it there first (`reposafe archive copy --to {}` with the same S3 options), \
         then run this again",
        current.root_location().display(),
        mine.len(),
        target.root_location().display(),
        target.root_location().display()
    )))
}

/// Opens the archive of a data dir that may be in use (by the daemon) to work on its
/// keys: nothing else is created or changed.
fn open_for_keys(data_dir: &Path) -> Result<Archive, EngineError> {
    let vault = Vault::open_existing(data_dir)?;
    let backend = archive_location::backend(data_dir, &vault)?;
    match Archive::inspect_on(backend.as_ref())? {
        ArchiveLayout::Encrypted { .. } => unlock(backend, &vault),
        _ => Err(EngineError::Invalid(format!(
            "the archive at {} is not encrypted: it has no key (encryption is chosen when an archive is created: `reposafe archive init --encrypt`)",
            backend.root_location().display()
        ))),
    }
}

/// Seals the archive key with one more passphrase; returns the new key file's name.
pub fn add_passphrase_key(
    data_dir: &Path,
    passphrase: &SecretString,
) -> Result<String, EngineError> {
    let archive = open_for_keys(data_dir)?;
    let key = archive
        .key()
        .ok_or_else(|| EngineError::Internal("an unlocked archive without its key".into()))?;
    let (name, sealed) = seal_with_passphrase(passphrase, key)?;
    archive.add_key_file(&name, &sealed)?;
    Ok(name)
}

/// Writes the archive key to a new file `out` (mode 0600, never replacing a file), for
/// safekeeping away from the appliance. Returns the archive's recipient.
pub fn export_key(data_dir: &Path, out: &Path) -> Result<String, EngineError> {
    use std::io::Write;
    let archive = open_for_keys(data_dir)?;
    let key = archive
        .key()
        .ok_or_else(|| EngineError::Internal("an unlocked archive without its key".into()))?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let io = |e: std::io::Error| EngineError::Invalid(format!("{}: {e}", out.display()));
    let mut f = opts.open(out).map_err(io)?;
    f.write_all(key.secret_text().expose_secret().as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io)?;
    Ok(key.recipient())
}

/// Where the archive is, whether it is encrypted and with which keys, and what it holds.
pub(crate) fn archive_info(archive: &Archive, data_dir: &Path) -> Result<ArchiveInfo, EngineError> {
    let keys = archive
        .key_file_names()?
        .into_iter()
        .map(|name| {
            let opens_with = if name.starts_with(VAULT_PASSPHRASE_PREFIX) {
                "the vault's passphrase (REPOSAFE_PASSPHRASE)"
            } else if name.starts_with(VAULT_PREFIX) {
                "a data dir's vault.key"
            } else if name.starts_with(PASSPHRASE_PREFIX) {
                "an archive passphrase (REPOSAFE_ARCHIVE_PASSPHRASE)"
            } else {
                "unknown"
            };
            ArchiveKeyInfo {
                name,
                opens_with: opens_with.into(),
            }
        })
        .collect();
    let place = archive_location::recorded_place(data_dir)?;
    let (disk_free_bytes, disk_bytes) = local_disk_space(&place);
    Ok(ArchiveInfo {
        location: archive.location().display().to_string(),
        s3_keys: place.s3_keys(),
        s3_tls_trust: place.tls_trust(),
        endpoint: place.endpoint,
        unavailable: None,
        encrypted: Some(archive.key().is_some()),
        recipient: archive.key().map(ArchiveKey::recipient),
        keys,
        snapshots: Some(archive.snapshot_count()?),
        stored_bytes: Some(archive.disk_usage()?),
        disk_free_bytes,
        disk_bytes,
        copy_targets: super::archive_copy::saved_targets(data_dir),
    })
}

/// What the data dir records of an archive that cannot be used now, and why
/// (`reason`): where it is, and its key's recipient when the location records one.
pub(crate) fn unavailable_archive_info(
    data_dir: &Path,
    reason: String,
) -> Result<ArchiveInfo, EngineError> {
    let place = archive_location::recorded_place(data_dir)?;
    let (disk_free_bytes, disk_bytes) = local_disk_space(&place);
    Ok(ArchiveInfo {
        s3_keys: place.s3_keys(),
        s3_tls_trust: place.tls_trust(),
        location: place.location,
        endpoint: place.endpoint,
        unavailable: Some(reason),
        encrypted: place.encrypted_to.is_some().then_some(true),
        recipient: place.encrypted_to,
        keys: Vec::new(),
        snapshots: None,
        stored_bytes: None,
        disk_free_bytes,
        disk_bytes,
        copy_targets: super::archive_copy::saved_targets(data_dir),
    })
}

/// The bytes free on a local archive's disk and its size (none for a bucket, or a
/// directory whose disk cannot be asked).
fn local_disk_space(place: &archive_location::RecordedPlace) -> (Option<u64>, Option<u64>) {
    match place.local_dir().map(super::disk_space::space_of) {
        Some(Ok(space)) => (Some(space.available), Some(space.total)),
        _ => (None, None),
    }
}
