//! `reposafe archive …`: `init` and `key` run on the data dir in this process (they
//! create the archive or handle its key, which never crosses the API); `show` goes
//! through the service like every other command.

use super::args::{ArchiveCmd, ArchiveInitArgs, ArchiveKeyCmd};
use super::{output, read_secret, remote};
use crate::engine::archive_keys::{self, ArchiveInit};
use crate::engine::archive_location::S3Location;
use crate::engine::Service;
use anyhow::{bail, Result};
use std::path::Path;

/// What [`run_local`] left to do.
pub enum Outcome {
    /// The command ran; its exit code.
    Done(i32),
    /// A command for the service.
    Service(ArchiveCmd),
}

/// Runs the archive commands that work on the data dir itself.
pub fn run_local(data_dir: &Path, cmd: ArchiveCmd) -> Result<Outcome> {
    match cmd {
        ArchiveCmd::Init(args) => init(data_dir, args).map(Outcome::Done),
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
        other => Ok(Outcome::Service(other)),
    }
}

fn init(data_dir: &Path, args: ArchiveInitArgs) -> Result<i32> {
    if remote::Remote::discover(data_dir)?.is_some() {
        bail!(
            "a reposafe daemon serves {}: stop it first (e.g. `systemctl stop reposafe`), run \
             `reposafe archive init` and start it again",
            data_dir.display()
        );
    }
    let passphrase = match &args.passphrase_file {
        Some(f) => Some(read_secret(f, "passphrase")?),
        None => None,
    };
    let secret_access_key = match &args.secret_access_key_file {
        Some(f) => Some(read_secret(f, "secret access key")?),
        None => None,
    };
    let location = args.location.map(|url| S3Location {
        url,
        endpoint: args.endpoint,
        region: args.region,
        path_style: args.path_style,
        access_key_id: args.access_key_id,
        secret_access_key,
    });
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
        if !report.created && info.snapshots > 0 {
            println!("attached to the existing archive");
        }
        output::archive(info);
        if report.created && info.encrypted {
            println!(
                "Losing every key makes the archive unreadable. Export the key now and keep \
                 it safe: reposafe archive key export --out FILE"
            );
        }
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
            Ok(0)
        }
        ArchiveCmd::Init(_) | ArchiveCmd::Key(_) => {
            bail!("internal: `archive init` and `archive key` run on the data dir")
        }
    }
}
