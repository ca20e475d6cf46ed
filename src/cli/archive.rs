//! `reposafe archive …`: `init`, `update` and `key` run on the data dir in this process
//! (they create the archive, change its record or handle its key, which never crosses
//! the API); `copy` too,
//! unless a daemon serves the data dir: then the daemon copies (S3 keys read here
//! travel to it in the request, as a connection's secret does, and are sealed there
//! when the destination is saved); `show` goes through the service like every other
//! command.

use super::args::{
    ArchiveCmd, ArchiveCopyArgs, ArchiveInitArgs, ArchiveKeyCmd, ArchiveUpdateArgs, S3Args,
};
use super::{output, read_secret, remote};
use crate::engine::archive_copy::{self, ArchiveCopy, CopyDestination};
use crate::engine::archive_copy::{ArchiveCopyReport, CopyProgress};
use crate::engine::archive_keys::{self, ArchiveInit, ArchiveStoreUpdate};
use crate::engine::archive_location::S3Location;
use crate::engine::service::CopyRequest;
use crate::engine::{Observer, Service};
use anyhow::{bail, Context as _, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What [`run_local`] left to do.
pub enum Outcome {
    /// The command ran; its exit code.
    Done(i32),
    /// A command for the service.
    Service(Box<ArchiveCmd>),
}

/// Runs the archive commands that work on the data dir itself.
pub fn run_local(data_dir: &Path, cmd: ArchiveCmd) -> Result<Outcome> {
    match cmd {
        ArchiveCmd::Init(args) => init(data_dir, args).map(Outcome::Done),
        ArchiveCmd::Copy(args) => copy(data_dir, args).map(Outcome::Done),
        ArchiveCmd::Update(args) => update(data_dir, args).map(Outcome::Done),
        ArchiveCmd::Key(ArchiveKeyCmd::Add { passphrase_file }) => {
            let passphrase = read_secret(&passphrase_file, "passphrase")?;
            let name = archive_keys::add_passphrase_key(data_dir, &passphrase)?;
            println!(
                "added keys/{name}: {} now opens the archive",
                archive_keys::ARCHIVE_PASSPHRASE_ENV
            );
            Ok(Outcome::Done(0))
        }
        ArchiveCmd::Key(ArchiveKeyCmd::Export { out }) => {
            let recipient = archive_keys::export_key(data_dir, &out)?;
            println!(
                "wrote the key of the archive ({recipient}) to {} (mode 0600). Keep it \
                 away from this machine: whoever holds it reads every backup, and without \
                 any key the archive is lost. It opens the archive through {}.",
                out.display(),
                archive_keys::ARCHIVE_KEY_FILE_ENV
            );
            Ok(Outcome::Done(0))
        }
        other => Ok(Outcome::Service(Box::new(other))),
    }
}

/// Refuses to run `archive <command>` beside a daemon serving `data_dir`.
fn refuse_beside_daemon(data_dir: &Path, command: &str) -> Result<()> {
    if remote::Remote::discover(data_dir)?.is_some() {
        bail!(
            "a reposafe daemon serves {}: stop it first (e.g. `systemctl stop reposafe`), run \
             `reposafe archive {command}` and start it again",
            data_dir.display()
        );
    }
    Ok(())
}

/// The S3 location `url` with `s3`'s options; `None` (and no option given) for a
/// location that is not `s3://…`.
fn s3_location(url: Option<String>, s3: S3Args) -> Result<Option<S3Location>> {
    if let Some(other) = url
        .as_deref()
        .filter(|u| u.contains("://") && !u.starts_with("s3://"))
    {
        bail!("{other:?} is not a location: give s3://BUCKET/PREFIX or a directory");
    }
    let Some(url) = url.filter(|u| u.starts_with("s3://")) else {
        if s3.any() {
            bail!("--endpoint, --region, --path-style, --ca-bundle and the keys are for an s3://BUCKET/PREFIX location");
        }
        return Ok(None);
    };
    let secret_access_key = s3
        .secret_access_key_file
        .as_deref()
        .map(|f| read_secret(f, "secret access key"))
        .transpose()?;
    // The endpoint the AWS variables of this shell name, made explicit: it is
    // recorded, and goes with a request to the daemon (whose own would apply instead).
    let endpoint = match s3.endpoint {
        Some(given) => Some(given),
        None => shell_endpoint()?,
    };
    let ca_bundle_pem = s3.ca_bundle.as_deref().map(read_ca_bundle).transpose()?;
    Ok(Some(S3Location {
        url,
        endpoint,
        region: s3.region,
        path_style: s3.path_style,
        access_key_id: s3.access_key_id,
        secret_access_key,
        ca_bundle_pem,
    }))
}

/// The PEM of the CA bundle in `file`, checked to hold a certificate (errors name the file).
fn read_ca_bundle(file: &Path) -> Result<String> {
    let pem = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read --ca-bundle {}", file.display()))?;
    crate::engine::archive_location::check_ca_bundle(&pem)
        .map_err(|e| anyhow::anyhow!("--ca-bundle {}: {e}", file.display()))?;
    Ok(pem)
}

/// The endpoint this shell's `AWS_ENDPOINT_URL` (else `AWS_ENDPOINT`) names, checked
/// as the engine checks its own.
fn shell_endpoint() -> Result<Option<String>> {
    crate::engine::archive_location::environment_endpoint_checked("this shell's")
        .map_err(|message| anyhow::anyhow!("{message} (or give --endpoint)"))
}

fn init(data_dir: &Path, args: ArchiveInitArgs) -> Result<i32> {
    refuse_beside_daemon(data_dir, "init")?;
    let passphrase = args
        .passphrase_file
        .as_deref()
        .map(|f| read_secret(f, "passphrase"))
        .transpose()?;
    if let Some(other) = args.location.as_deref().filter(|l| !l.starts_with("s3://")) {
        bail!("{other:?} is not an s3://BUCKET/PREFIX location (the default archive is the data dir's archive/)");
    }
    let location = s3_location(args.location, args.s3)?;
    let report = archive_keys::init_archive(
        data_dir,
        ArchiveInit {
            location,
            encrypt: args.encrypt,
            passphrase,
        },
    )?;
    let info = &report.archive;
    if args.json {
        output::json(&report)?;
    } else {
        if !report.created && info.snapshots.unwrap_or(0) > 0 {
            println!("attached to the existing archive");
        }
        output::archive(info);
        if report.created && info.encrypted == Some(true) {
            println!(
                "Losing every key makes the archive unreadable. Export the key now and keep \
                 it safe: reposafe archive key export --out FILE"
            );
        }
    }
    Ok(0)
}

fn update(data_dir: &Path, args: ArchiveUpdateArgs) -> Result<i32> {
    refuse_beside_daemon(data_dir, "update")?;
    let secret_access_key = args
        .secret_access_key_file
        .as_deref()
        .map(|f| read_secret(f, "secret access key"))
        .transpose()?;
    let ca_bundle_pem = match (&args.ca_bundle, args.no_ca_bundle) {
        (Some(file), _) => Some(Some(read_ca_bundle(file)?)),
        (None, true) => Some(None),
        (None, false) => None,
    };
    let req = ArchiveStoreUpdate {
        access_key_id: args.access_key_id,
        secret_access_key,
        ca_bundle_pem,
    };
    let report = archive_keys::update_archive_store(data_dir, req)
        .context("the archive's record was not changed")?;
    if args.json {
        output::json(&report)?;
    } else {
        println!(
            "{}, checked against the store first",
            report.changed.join(" and ")
        );
        output::archive(&report.archive);
    }
    Ok(0)
}

/// The archive commands that go through the service.
pub fn execute(service: &dyn Service, cmd: ArchiveCmd) -> Result<i32> {
    match cmd {
        ArchiveCmd::Show { json } => {
            let info = service.archive()?;
            if json {
                output::json(&info)?;
            } else {
                output::archive(&info);
            }
            match &info.unavailable {
                // Shown, and a failure still: a script that checks the archive notices.
                Some(reason) => bail!("the archive cannot be used now: {reason}"),
                None => Ok(0),
            }
        }
        ArchiveCmd::Init(_) | ArchiveCmd::Key(_) | ArchiveCmd::Copy(_) | ArchiveCmd::Update(_) => {
            bail!("internal: `archive init`, `key`, `copy` and `update` run on the data dir")
        }
    }
}

fn copy(data_dir: &Path, args: ArchiveCopyArgs) -> Result<i32> {
    let to = match (args.target, args.to) {
        (Some(name), _) => {
            if args.s3.any() {
                bail!("the S3 options of a saved target are saved with it: give only --target");
            }
            CopyDestination::Saved(name)
        }
        (None, to) => match s3_location(to.clone(), args.s3)? {
            Some(loc) => CopyDestination::S3(loc),
            None => CopyDestination::Directory(PathBuf::from(to.unwrap_or_default())),
        },
    };
    if let Some(daemon) = remote::Remote::discover(data_dir)? {
        return copy_through(&daemon, to, args.save_as, args.json);
    }
    let req = ArchiveCopy {
        to,
        save_as: args.save_as,
    };
    let bar = super::progress::CopyBar::new();
    let report = archive_copy::copy_archive(data_dir, req, &bar);
    bar.finish();
    print_copy(&report?, args.json)
}

/// An S3 destination for the daemon, with the keys this shell would use when the
/// command line gives none (the daemon never lends its own keys to a location named
/// in a request).
fn with_keys_here(mut location: S3Location) -> Result<S3Location> {
    // Keys given (both, or one: the engine then says to give both) are the ones used.
    if location.access_key_id.is_some() || location.secret_access_key.is_some() {
        return Ok(location);
    }
    let Some(keys) = crate::engine::s3_keys::static_keys_here()? else {
        bail!(
            "no S3 keys for {}: give --access-key-id and --secret-access-key-file (a daemon \
             serves this data dir and copies there only with keys given with the request; \
             here they may also come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the \
             config file's [s3] table or the AWS credentials file)",
            location.url
        );
    };
    if keys.session_token.is_some() {
        bail!(
            "the S3 keys here are temporary (they come with a session token): give static \
             keys with --access-key-id and --secret-access-key-file"
        );
    }
    location.access_key_id = Some(keys.access_key_id);
    location.secret_access_key = Some(keys.secret_access_key);
    Ok(location)
}

/// `archive copy` beside a running daemon, which copies.
fn copy_through(
    daemon: &dyn Service,
    to: CopyDestination,
    save_as: Option<String>,
    json: bool,
) -> Result<i32> {
    let mut req = CopyRequest {
        save_as,
        ..CopyRequest::default()
    };
    match to {
        CopyDestination::Saved(name) => req.target = Some(name),
        // The daemon runs elsewhere: a relative directory is this shell's.
        CopyDestination::Directory(dir) => {
            let absolute =
                std::path::absolute(&dir).with_context(|| format!("--to {}", dir.display()))?;
            req.to = Some(absolute);
        }
        CopyDestination::S3(location) => req.s3 = Some(with_keys_here(location)?),
    }
    let bar = Arc::new(super::progress::CopyBar::new());
    let report = daemon.copy_archive(req, &CopyBarObserver(bar.clone()));
    bar.finish();
    print_copy(&report?, json)
}

/// Shows a copy the daemon runs on a bar.
struct CopyBarObserver(Arc<super::progress::CopyBar>);

impl Observer for CopyBarObserver {
    fn copy_progress(&self) -> Arc<dyn CopyProgress> {
        self.0.clone()
    }
}

/// Prints a copy's report; the exit code: 1 when something was left out.
fn print_copy(report: &ArchiveCopyReport, json: bool) -> Result<i32> {
    if json {
        output::json(report)?;
    } else {
        output::archive_copy(report);
    }
    Ok(if report.tally.failed.is_empty() { 0 } else { 1 })
}
