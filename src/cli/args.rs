//! Command-line arguments.

use anyhow::{bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

use crate::engine::types::{Credential, CredentialKind};

/// reposafe: back up Bitbucket Cloud and Data Center repositories into a
/// deduplicated archive you own, and restore them at any point in time.
#[derive(Parser, Debug)]
#[command(name = "reposafe", version, about, long_about = None)]
pub struct Cli {
    /// Data directory: state, encrypted credentials, archive, mirrors, plugins
    /// [default: ./reposafe-data, or `data_dir` of the config file].
    #[arg(long, global = true, env = "REPOSAFE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML config file (the package uses /etc/reposafe/reposafe.toml).
    #[arg(long, global = true, env = "REPOSAFE_CONFIG")]
    pub config: Option<PathBuf>,
    /// More log output (-v info, -vv debug). REPOSAFE_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon: scheduler, jobs, JSON API and dashboard on localhost.
    Serve(ServeArgs),
    /// Create, list, show or remove backup plans (schedules).
    #[command(subcommand)]
    Plan(Box<PlanCmd>),
    /// Run a plan, a connection or one repository now and follow its progress.
    Run(RunArgs),
    /// Job history: list, show (with per-repository results), watch, cancel.
    #[command(subcommand)]
    Jobs(JobsCmd),
    /// List the installed providers, their settings and credential kinds.
    Providers,
    /// Add, list, test or remove connections.
    #[command(subcommand)]
    Connection(Box<ConnectionCmd>),
    /// Back up every repository of one or more connections now.
    Backup(BackupArgs),
    /// List the repositories seen by backups.
    Repositories(RepositoriesArgs),
    /// List the snapshots of a repository.
    Snapshots(SnapshotsArgs),
    /// Restore a repository from a snapshot: into a local bare repository (--to, with its
    /// LFS objects and its wiki beside it), or back into Bitbucket (--to-connection).
    Restore(RestoreArgs),
    /// Show what a snapshot holds, or one kind of its metadata (pull requests, issues, ...).
    Show(ShowArgs),
    /// Write a whole snapshot out as plain files: bare repositories, JSON documents, files.
    Export(ExportArgs),
    /// Check the archive: every blob every snapshot needs is present (with --read-data:
    /// intact); a damaged blob is named with the snapshots it affects and what still restores.
    Check(CheckArgs),
    /// Remove the snapshots a retention policy does not keep (restic's rules; the
    /// newest snapshot of a repository is always kept). Try it with --dry-run first.
    Forget(ForgetArgs),
    /// Give back the space of forgotten snapshots: each repository's packs are
    /// consolidated into one pack of what its kept snapshots reach (its mirror too), then
    /// every blob no snapshot names is deleted. Kept snapshots restore as before.
    Prune(PruneArgs),
    /// Notifications of failed jobs (e-mail, webhook): show, set, test.
    Notifications(super::notifications::NotificationsArgs),
    /// The audit log: who changed what, newest first.
    Audit(AuditArgs),
    /// The archive: create it (encrypted, in a bucket), show where it is and what protects
    /// it, its keys, copies, and the keys or CA bundle recorded for its bucket.
    #[command(subcommand)]
    Archive(ArchiveCmd),
}

#[derive(Subcommand, Debug)]
pub enum ArchiveCmd {
    /// Create the data dir's archive. With --encrypt, every blob and manifest is
    /// encrypted (age) to a new archive key, sealed to this data dir's vault. Only an
    /// archive without backups can be made encrypted; stop the daemon first.
    Init(ArchiveInitArgs),
    /// Where the archive is, whether it is encrypted, which sealed keys open it.
    Show {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The key of an encrypted archive: add a passphrase that opens it, or export it.
    #[command(subcommand)]
    Key(ArchiveKeyCmd),
    /// Copy the archive to an S3 bucket or a directory, verifying every blob there;
    /// run it again to resume or to bring the copy up to date (nothing is deleted
    /// there). To move the archive, copy it and then `archive init` the copy. Beside a
    /// running daemon, the daemon copies (S3 keys go to it with the request).
    Copy(ArchiveCopyArgs),
    /// Change what is recorded for the archive in an object store: new keys after the
    /// store's keys were rotated, or a new CA bundle after its certificate's CA changed.
    /// The store is checked with them first (nothing changes if it refuses them); stop
    /// the daemon first.
    Update(ArchiveUpdateArgs),
}

#[derive(Args, Debug)]
pub struct ArchiveUpdateArgs {
    /// The new access key id (with --secret-access-key-file).
    #[arg(long, value_name = "ID", requires = "secret_access_key_file")]
    pub access_key_id: Option<String>,
    /// A file holding the new secret access key (`-` for standard input); sealed in the vault.
    #[arg(long, value_name = "FILE", requires = "access_key_id")]
    pub secret_access_key_file: Option<PathBuf>,
    /// CA certificates (PEM) to trust for the endpoint's https besides the system's,
    /// replacing the recorded ones.
    #[arg(long, value_name = "FILE", conflicts_with = "no_ca_bundle")]
    pub ca_bundle: Option<PathBuf>,
    /// Forget the recorded CA bundle (the store's certificate is now one the system trusts).
    #[arg(long)]
    pub no_ca_bundle: bool,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ArchiveInitArgs {
    /// Keep the archive in an S3-compatible bucket: s3://BUCKET/PREFIX. An archive
    /// already there is attached (never overwritten). Default: the data dir's archive.
    #[arg(value_name = "LOCATION")]
    pub location: Option<String>,
    #[command(flatten)]
    pub s3: S3Args,
    /// Encrypt the archive. Losing every key (the data dir's vault.key, the passphrases,
    /// an exported key) makes the backups unreadable: export the key and keep it safe.
    #[arg(long)]
    pub encrypt: bool,
    /// Also seal the archive key with the passphrase in this file (`-` for standard
    /// input), so the archive opens without this data dir (REPOSAFE_ARCHIVE_PASSPHRASE).
    #[arg(long, value_name = "FILE", requires = "encrypt")]
    pub passphrase_file: Option<PathBuf>,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

/// How to reach an S3 location (`archive init s3://…`, `archive copy --to s3://…`).
#[derive(Args, Debug, Default)]
pub struct S3Args {
    /// The S3 endpoint, e.g. https://s3.example:9000 (default: the one AWS_ENDPOINT_URL
    /// or AWS_ENDPOINT names, else AWS).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// The S3 region (default: AWS_REGION, else AWS_DEFAULT_REGION, where the archive is
    /// opened, else us-east-1).
    #[arg(long)]
    pub region: Option<String>,
    /// Path-style requests (ENDPOINT/BUCKET/KEY), as MinIO, Ceph and SeaweedFS expect.
    #[arg(long)]
    pub path_style: bool,
    /// The access key id (with --secret-access-key-file; without both, the AWS
    /// environment variables, the config file's [s3] table or the AWS credentials file).
    #[arg(long, value_name = "ID")]
    pub access_key_id: Option<String>,
    /// A file holding the secret access key (`-` for standard input); sealed in the vault.
    #[arg(long, value_name = "FILE")]
    pub secret_access_key_file: Option<PathBuf>,
    /// CA certificates (PEM) to trust for the endpoint's https besides the system's: a
    /// store whose certificate a private CA signed. Recorded with the location.
    #[arg(long, value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,
}

impl S3Args {
    /// Whether any S3 option was given.
    pub fn any(&self) -> bool {
        self.endpoint.is_some()
            || self.region.is_some()
            || self.path_style
            || self.access_key_id.is_some()
            || self.secret_access_key_file.is_some()
            || self.ca_bundle.is_some()
    }
}

#[derive(Args, Debug)]
pub struct ArchiveCopyArgs {
    /// Where to copy the archive: s3://BUCKET/PREFIX or a directory (absent, empty, or
    /// an earlier copy, which is brought up to date).
    #[arg(long, value_name = "LOCATION", required_unless_present = "target")]
    pub to: Option<String>,
    #[command(flatten)]
    pub s3: S3Args,
    /// Save the destination (with its S3 options, the secret sealed in the vault) under
    /// this name, for `--target NAME` and plans' `--copy-to NAME`.
    #[arg(long, value_name = "NAME", requires = "to")]
    pub save_as: Option<String>,
    /// Copy to a destination saved with --save-as.
    #[arg(long, value_name = "NAME", conflicts_with = "to")]
    pub target: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum ArchiveKeyCmd {
    /// Seal the archive key with one more passphrase (opens the archive through
    /// REPOSAFE_ARCHIVE_PASSPHRASE, e.g. on a new appliance without this data dir).
    Add {
        /// The passphrase, in this file (`-` for standard input).
        #[arg(long, value_name = "FILE")]
        passphrase_file: PathBuf,
    },
    /// Write the archive key to a new file (mode 0600) for safekeeping; it opens the
    /// archive through REPOSAFE_ARCHIVE_KEY_FILE. Whoever holds it can read every backup.
    Export {
        /// The file to create (never overwritten).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

/// Retention rules (restic's), for `forget` and a plan.
#[derive(Args, Debug, Default)]
pub struct KeepArgs {
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// ... of each of the last N days.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// ... of each of the last N ISO weeks.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// ... of each of the last N months.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// ... of each of the last N years.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot within this long of the newest (e.g. 30d, 2w, 1y6m).
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Grandfather-father-son: --keep-daily 7 --keep-weekly 4 --keep-monthly 12
    /// --keep-yearly 3 (other --keep-* flags override its numbers).
    #[arg(long)]
    pub gfs: bool,
    /// Apply the policy to a repository that disappeared from Bitbucket only this long
    /// after it was last listed (default: never; its snapshots are kept).
    #[arg(long, value_name = "DURATION")]
    pub keep_deleted_for: Option<String>,
}

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// The repository (ws/slug), or use --connection / --all.
    pub repository: Option<String>,
    /// Every repository of this connection (or, with a repository, which one).
    #[arg(long)]
    pub connection: Option<String>,
    /// Every repository in the archive.
    #[arg(long, conflicts_with = "repository")]
    pub all: bool,
    #[command(flatten)]
    pub keep: KeepArgs,
    /// The time zone days, weeks, months and years are read in (IANA name) [default: UTC].
    #[arg(long)]
    pub zone: Option<String>,
    /// Say what would be removed and why; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Prune afterwards: free the space of the removed snapshots at once.
    #[arg(long)]
    pub prune: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Say what would be consolidated and freed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Also read back and re-hash every blob (slow: reads the whole archive).
    #[arg(long)]
    pub read_data: bool,
    /// Read back a random share of the blobs, e.g. `10%` (a new choice each run).
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    pub subset: Option<f64>,
}

/// `10%` or `10` → 10 (a plan's check: whole percentages).
fn parse_whole_percent(s: &str) -> Result<u32, String> {
    s.trim()
        .trim_end_matches('%')
        .parse::<u32>()
        .map_err(|_| format!("`{s}` is not a whole percentage, e.g. 10%"))
}

/// `10%` or `10` → 10.0.
fn parse_percent(s: &str) -> Result<f64, String> {
    let n = s.trim().trim_end_matches('%');
    match n.parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 100.0 => Ok(p),
        _ => Err(format!("`{s}` is not a percentage in (0, 100], e.g. 10%")),
    }
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// How many entries (newest first) [default: 100].
    #[arg(long)]
    pub limit: Option<usize>,
    /// Only entries numbered below this one (the next page).
    #[arg(long)]
    pub before: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8720].
    #[arg(long, env = "REPOSAFE_LISTEN")]
    pub listen: Option<String>,
    /// Allow a non-loopback address without TLS (the admin token then travels in clear).
    #[arg(long, env = "REPOSAFE_INSECURE_LISTEN")]
    pub insecure_listen: bool,
    /// PEM certificate chain for HTTPS.
    #[arg(long, env = "REPOSAFE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    #[arg(long, env = "REPOSAFE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Seconds running backups get to finish on SIGTERM [default: 30].
    #[arg(long, env = "REPOSAFE_GRACE_PERIOD_SECS")]
    pub grace_period_secs: Option<u64>,
    /// Run once at start the schedules missed while the daemon was down [default: true].
    #[arg(long, env = "REPOSAFE_RUN_MISSED_ON_START")]
    pub run_missed_on_start: Option<bool>,
    /// Repositories backed up at once per job [default: from the number of cores].
    #[arg(long, env = "REPOSAFE_PARALLEL")]
    pub parallel: Option<usize>,
    /// Seconds a push webhook waits for more pushes to the same repository before
    /// its backup is queued [default: 30].
    #[arg(long = "hook-delay", env = "REPOSAFE_HOOK_DELAY_SECS")]
    pub hook_delay_secs: Option<u64>,
}

#[derive(Subcommand, Debug)]
pub enum PlanCmd {
    /// Create a plan.
    Add(Box<PlanAddArgs>),
    /// List plans.
    List,
    /// Show one plan with its status.
    Show { name: String },
    /// Remove a plan (its jobs' history and snapshots stay).
    Remove { name: String },
}

#[derive(Args, Debug)]
pub struct PlanAddArgs {
    pub name: String,
    /// Connection to back up (repeatable).
    #[arg(long = "connection", required = true)]
    pub connections: Vec<String>,
    /// Repository name or glob, e.g. acme/api-* (repeatable) [default: *].
    #[arg(long)]
    pub include: Vec<String>,
    /// Repository name or glob to leave out (repeatable).
    #[arg(long)]
    pub exclude: Vec<String>,
    /// 5-field cron line (`0 2 * * *`) or @hourly/@daily/@weekly/@monthly.
    #[arg(long)]
    pub schedule: Option<String>,
    /// IANA time zone of the schedule and window [default: the server's].
    #[arg(long)]
    pub timezone: Option<String>,
    /// Work only within this local time window, e.g. 01:00-06:00.
    #[arg(long)]
    pub window: Option<String>,
    /// Repositories backed up at once.
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Do not back up repositories that appear after the plan's first run.
    #[arg(long)]
    pub no_auto_add: bool,
    /// The plan may never write back to the provider.
    #[arg(long)]
    pub read_only: bool,
    /// Create the plan disabled (no scheduled runs).
    #[arg(long)]
    pub disabled: bool,
    /// Do not run at start a schedule missed while the daemon was down.
    #[arg(long)]
    pub no_run_missed: bool,
    /// Spread requests over the connections' additional credentials too: `all`, or
    /// ids like c1,c2 (see `connection credential list`).
    #[arg(long, value_name = "all|ID,...")]
    pub additional_credentials: Option<String>,
    /// Read repositories' metadata (pull requests, issues, settings) at most this often
    /// (e.g. 6h, 1d; `never` for none): each repository costs about one API request per
    /// kind, and Bitbucket Cloud allows about 1,000 an hour. Every run when not given.
    #[arg(long, value_name = "INTERVAL|never")]
    pub metadata_every: Option<String>,
    /// Snapshots kept after each successful run of the plan (none given: all kept).
    #[command(flatten)]
    pub keep: KeepArgs,
    /// Check the archive after a successful run when the last check is this long ago
    /// (e.g. 7d); damage fails the job, which notifies.
    #[arg(long, value_name = "DURATION")]
    pub check_every: Option<String>,
    /// The share of blobs that check reads back, e.g. `10%` (default: the structure
    /// only; `100%`: everything, and every snapshot's refs walked).
    #[arg(long, value_name = "PERCENT", value_parser = parse_whole_percent)]
    pub check_subset: Option<u32>,
    /// Copy the archive after each run that backed something up (succeeded or partial)
    /// to this saved copy target (see
    /// `archive copy --save-as`); a failed copy fails the job, which notifies.
    #[arg(long, value_name = "NAME")]
    pub copy_to: Option<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Repository full name (scope/slug) to back up.
    pub repository: Option<String>,
    /// Run this plan.
    #[arg(long, conflicts_with = "repository")]
    pub plan: Option<String>,
    /// Back up this connection (or, with a repository, find it in this connection).
    #[arg(long)]
    pub connection: Option<String>,
    /// Return once queued (daemon only) instead of following progress.
    #[arg(long)]
    pub detach: bool,
    /// Print the final job as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum JobsCmd {
    /// Recent jobs, newest first.
    List {
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One job and its per-repository results.
    Show {
        id: u64,
        #[arg(long)]
        json: bool,
    },
    /// Follow a job's progress until it ends (daemon only).
    Watch { id: u64 },
    /// Cancel a queued job, or stop a running one after the repositories in flight.
    Cancel { id: u64 },
}

#[derive(Subcommand, Debug)]
pub enum ConnectionCmd {
    /// Add a connection. Secrets are read from files (or `-` for stdin), never from arguments.
    Add(Box<AddArgs>),
    /// List connections (credentials masked).
    List,
    /// Check that a connection's credential works.
    Test { name: String },
    /// Remove a connection and its credential; its snapshots stay.
    Remove { name: String },
    /// Add, list or remove the credentials a connection uses for single projects.
    #[command(subcommand)]
    Credential(Box<CredentialCmd>),
    /// Replace a connection's certificate trust (CA bundle, system roots, or insecure).
    Tls(TlsArgs),
    /// Show the push-webhook URL and secret to paste into Bitbucket (--rotate: a new secret;
    /// --register: have reposafe add it in Bitbucket, if the credential may manage webhooks).
    Webhook {
        name: String,
        /// Replace the secret; the old one stops working at once.
        #[arg(long)]
        rotate: bool,
        /// Register the webhook in Bitbucket through the connection's credential (Cloud: the
        /// `webhook` scope and workspace admin; Data Center: project admin).
        #[arg(long)]
        register: bool,
        /// With --register: this daemon's address as Bitbucket reaches it (default: the
        /// address the daemon serves at).
        #[arg(long, requires = "register")]
        url: Option<String>,
    },
    /// Replace a connection's credential (e.g. a new token); checked against the server
    /// first. Its hosts stay as they were added.
    Rotate(Box<RotateArgs>),
    /// Change a connection's read-only or restore mark, its rate limit, or settings that
    /// name no host (e.g. --set workspace=acme).
    Edit(EditArgs),
}

#[derive(Args, Debug)]
pub struct RotateArgs {
    pub name: String,
    #[command(flatten)]
    pub cred: CredentialFlags,
    /// Store the credential without checking it against the server.
    #[arg(long)]
    pub no_verify: bool,
}

#[derive(Args, Debug)]
pub struct EditArgs {
    pub name: String,
    /// Never use this connection to write back to the provider (true/false).
    #[arg(long, value_name = "BOOL")]
    pub read_only: Option<bool>,
    /// Restores into Bitbucket may write through this connection (true/false).
    #[arg(long, value_name = "BOOL")]
    pub allow_restore: Option<bool>,
    /// Request budget of each principal (60/min, 1000/h), or `none`.
    #[arg(long, value_name = "N/WINDOW")]
    pub rate_limit: Option<String>,
    /// A setting that names no host, e.g. --set workspace=acme (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pub set: Vec<String>,
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// Provider: `cloud` (bitbucket-cloud), or any provider id from `reposafe providers`.
    pub provider: String,
    /// Connection name; defaults to the workspace slug.
    #[arg(long)]
    pub name: Option<String>,
    /// Workspace to back up (Bitbucket Cloud).
    #[arg(long)]
    pub workspace: Option<String>,
    /// Provider setting, e.g. --set api-base-url=https://api.bitbucket.org (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    #[command(flatten)]
    pub cred: CredentialFlags,
    /// Store the connection without checking the credential against the server.
    #[arg(long)]
    pub no_verify: bool,
    /// Never use this connection to write back to the provider.
    #[arg(long)]
    pub read_only: bool,
    /// Mark the connection for restore: restores into Bitbucket may write through it
    /// (create repositories, push, re-create issues and pull requests). Use a credential
    /// with write access, added on purpose; backup connections stay read-only.
    #[arg(long, conflicts_with = "read_only")]
    pub allow_restore: bool,
    /// Request budget of each principal (account) of this connection, API and git
    /// requests alike: 60/min, 1000/h, 60/10s. Requests are paced to stay within it.
    #[arg(long, value_name = "N/WINDOW")]
    pub rate_limit: Option<String>,
    /// PEM file of the certificate authorities that sign the server's certificate
    /// (added to the system roots, for the API and git). Its contents are stored.
    #[arg(long, value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,
    /// Do not verify the server's TLS certificate at all. Dangerous: warned on every use.
    #[arg(long, conflicts_with = "ca_bundle")]
    pub insecure_skip_tls_verify: bool,
}

/// The flags that describe one credential (secrets only from files or stdin).
#[derive(Args, Debug)]
pub struct CredentialFlags {
    /// Atlassian account e-mail of an API token.
    #[arg(long, requires = "api_token_file")]
    pub api_token_email: Option<String>,
    /// File holding an Atlassian API token.
    #[arg(long, requires = "api_token_email")]
    pub api_token_file: Option<PathBuf>,
    /// File holding a workspace, project or repository access token.
    #[arg(long)]
    pub access_token_file: Option<PathBuf>,
    /// OAuth consumer key.
    #[arg(long, requires = "oauth_secret_file")]
    pub oauth_key: Option<String>,
    /// File holding the OAuth consumer secret.
    #[arg(long, requires = "oauth_key")]
    pub oauth_secret_file: Option<PathBuf>,
    /// Bitbucket user name of an app password (legacy).
    #[arg(long, requires = "app_password_file")]
    pub app_password_user: Option<String>,
    /// File holding an app password (legacy).
    #[arg(long, requires = "app_password_user")]
    pub app_password_file: Option<PathBuf>,
    /// File holding a Bitbucket Data Center HTTP access token.
    #[arg(long)]
    pub http_access_token_file: Option<PathBuf>,
    /// User name for a user name + password credential.
    #[arg(long, requires = "password_file")]
    pub username: Option<String>,
    /// File holding the password.
    #[arg(long, requires = "username")]
    pub password_file: Option<PathBuf>,
}

impl CredentialFlags {
    /// The one credential the flags describe.
    pub fn credential(&self) -> Result<Credential> {
        let mut found: Vec<Credential> = Vec::new();
        let mut push =
            |kind, identity: Option<&String>, file: &Option<PathBuf>, what: &str| -> Result<()> {
                if let Some(f) = file {
                    found.push(Credential {
                        kind,
                        identity: identity.cloned(),
                        secret: super::read_secret(f, what)?,
                    });
                }
                Ok(())
            };
        push(
            CredentialKind::ApiToken,
            self.api_token_email.as_ref(),
            &self.api_token_file,
            "API token",
        )?;
        push(
            CredentialKind::AccessToken,
            None,
            &self.access_token_file,
            "access token",
        )?;
        push(
            CredentialKind::OauthConsumer,
            self.oauth_key.as_ref(),
            &self.oauth_secret_file,
            "OAuth secret",
        )?;
        push(
            CredentialKind::AppPassword,
            self.app_password_user.as_ref(),
            &self.app_password_file,
            "app password",
        )?;
        push(
            CredentialKind::HttpAccessToken,
            None,
            &self.http_access_token_file,
            "HTTP access token",
        )?;
        push(
            CredentialKind::Basic,
            self.username.as_ref(),
            &self.password_file,
            "password",
        )?;
        match found.len() {
            0 => bail!(
                "give a credential: --api-token-email + --api-token-file, --access-token-file, \
                 --oauth-key + --oauth-secret-file, --app-password-user + --app-password-file, \
                 --http-access-token-file, or --username + --password-file"
            ),
            1 => Ok(found.remove(0)),
            _ => bail!("give exactly one credential; several were given"),
        }
    }
}

impl AddArgs {
    /// The one credential the flags describe.
    pub fn credential(&self) -> Result<Credential> {
        self.cred.credential()
    }

    /// The provider settings: `--workspace` and every `--set name=value`.
    pub fn settings(&self) -> Result<std::collections::BTreeMap<String, String>> {
        let mut settings = std::collections::BTreeMap::new();
        if let Some(w) = &self.workspace {
            settings.insert("workspace".to_string(), w.clone());
        }
        for kv in &self.set {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--set {kv:?} must look like name=value"))?;
            settings.insert(k.trim().to_string(), v.trim().to_string());
        }
        Ok(settings)
    }

    /// `--name`, else the workspace slug.
    pub fn connection_name(&self) -> Result<String> {
        match (&self.name, &self.workspace) {
            (Some(n), _) => Ok(n.clone()),
            (None, Some(w)) => Ok(w.clone()),
            (None, None) => {
                bail!(
                    "give the connection a --name (or a --workspace, whose slug becomes the name)"
                )
            }
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum CredentialCmd {
    /// Add a credential to a connection: for one project instead of its default
    /// (`--project`), or an additional one that plans may enable to spread requests
    /// over more accounts (`--additional`). Secrets are read from files (or `-`).
    Add(Box<AddCredentialArgs>),
    /// List a connection's credentials (masked).
    List { name: String },
    /// Remove a per-project (`--project KEY`) or additional (`--id c1`) credential.
    Remove {
        name: String,
        /// Project key, e.g. PRJ or ~jdoe.
        #[arg(long, conflicts_with = "id", required_unless_present = "id")]
        project: Option<String>,
        /// Additional credential id, e.g. c1.
        #[arg(long)]
        id: Option<String>,
    },
    /// Let plans use an additional credential again.
    Enable { name: String, id: String },
    /// Keep an additional credential but never use it.
    Disable { name: String, id: String },
    /// Check one credential (`primary` or an additional id) against the server.
    Test { name: String, id: String },
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("role").required(true).args(["project", "additional"])))]
pub struct AddCredentialArgs {
    /// Connection name.
    pub name: String,
    /// Project key, e.g. PRJ or ~jdoe for a personal project.
    #[arg(long)]
    pub project: Option<String>,
    /// An additional credential (another account) for spreading requests.
    #[arg(long)]
    pub additional: bool,
    /// A name for an additional credential.
    #[arg(long, requires = "additional")]
    pub label: Option<String>,
    #[command(flatten)]
    pub cred: CredentialFlags,
    /// Store it without checking it against the server.
    #[arg(long)]
    pub no_verify: bool,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("trust").required(true).args(["ca_bundle", "insecure_skip_tls_verify", "system_roots"])))]
pub struct TlsArgs {
    /// Connection name.
    pub name: String,
    /// PEM file of the certificate authorities that sign the server's certificate
    /// (added to the system roots). Its contents are stored.
    #[arg(long, value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,
    /// Do not verify the server's TLS certificate at all. Dangerous: warned on every use.
    #[arg(long)]
    pub insecure_skip_tls_verify: bool,
    /// Trust the system's roots only (drops a stored CA bundle or insecure mode).
    #[arg(long)]
    pub system_roots: bool,
    /// Store it without checking the connection works with it.
    #[arg(long)]
    pub no_verify: bool,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Connections to back up.
    pub connections: Vec<String>,
    /// Back up every connection.
    #[arg(long, conflicts_with = "connections")]
    pub all: bool,
    /// Only this repository (full name, e.g. acme/api; repeatable).
    #[arg(long)]
    pub repo: Vec<String>,
    /// Repositories fetched in parallel.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Date the new snapshots this time instead of now, as restic's `backup --time`
    /// (UTC unless an offset is given: 2026-11-20T10:00Z, 2026-11-20T10:00:00+01:00).
    /// It must be in the past and after each repository's newest snapshot.
    #[arg(long)]
    pub time: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RepositoriesArgs {
    #[arg(long)]
    pub connection: Option<String>,
}

#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    /// Repository full name, e.g. acme/api.
    pub repository: String,
    #[arg(long)]
    pub connection: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Repository full name, e.g. acme/api. Without it (and with --to-connection), every
    /// repository of --connection is restored.
    #[arg(required_unless_present = "to_connection")]
    pub repository: Option<String>,
    /// Restore the newest snapshot taken at or before this time (UTC unless an
    /// offset is given): 2026-11-20T10:00Z, 2026-11-20T10:00:00+01:00, or a date
    /// (meaning the end of that day).
    #[arg(long)]
    pub at: Option<String>,
    /// Restore this snapshot id (see `reposafe snapshots`).
    #[arg(long)]
    pub snapshot: Option<String>,
    /// Target directory for the bare repository (must be absent or empty, and outside
    /// the data dir).
    #[arg(
        long,
        required_unless_present = "to_connection",
        conflicts_with = "to_connection"
    )]
    pub to: Option<PathBuf>,
    /// Replace a git repository at the target: it is moved aside to
    /// `<target>.replaced-<UTC time>`, never deleted. Anything else is never replaced.
    #[arg(long, conflicts_with = "to_connection")]
    pub force: bool,
    /// The connection the repository was backed up through (with --to-connection and no
    /// repository: restore all of its repositories).
    #[arg(long)]
    pub connection: Option<String>,
    /// Restore into Bitbucket through this connection (added with --allow-restore): the
    /// repository is created (or must be empty), then its branches, tags, LFS objects,
    /// wiki and metadata are written.
    #[arg(long)]
    pub to_connection: Option<String>,
    /// The target repository, scope/slug (default: the same slug in the connection's
    /// workspace or project).
    #[arg(long = "as", requires = "to_connection")]
    pub as_name: Option<String>,
    /// Create the repository in this project (Bitbucket Cloud project key).
    #[arg(long, requires = "to_connection")]
    pub project: Option<String>,
    /// Write into an existing, non-empty repository: nothing there is overwritten or
    /// deleted; refs that differ are pushed under restored/<snapshot>/.
    #[arg(long, requires = "to_connection")]
    pub into_existing: bool,
    /// Put this before each new repository's slug, e.g. restored-.
    #[arg(long, requires = "to_connection")]
    pub prefix: Option<String>,
}

/// Which snapshot `show` and `export` read (the latest unless told).
#[derive(Args, Debug)]
pub struct SnapshotArgs {
    /// Repository full name, e.g. acme/api.
    pub repository: String,
    /// The connection it was backed up through, when several have a repository of that name.
    #[arg(long)]
    pub connection: Option<String>,
    /// The newest snapshot taken at or before this time (as `restore --at`).
    #[arg(long, conflicts_with = "snapshot")]
    pub at: Option<String>,
    /// This snapshot id (see `reposafe snapshots`).
    #[arg(long)]
    pub snapshot: Option<String>,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    #[command(flatten)]
    pub snapshot: SnapshotArgs,
    /// A metadata kind (`pullrequests`, `issues`, `repository`, `webhooks`, ...): list its
    /// items. Without it, a summary of the snapshot.
    pub kind: Option<String>,
    /// Print JSON: the summary, or with a kind its documents
    /// (`[{"id", "updated_on", "document", "files"}]`).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub snapshot: SnapshotArgs,
    /// Directory to write (must be absent or empty, and outside the data dir):
    /// repository.git, wiki.git, metadata/<kind>/<id>.json, snapshot.json.
    #[arg(long)]
    pub to: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Parses the time formats `--at` accepts.
pub fn parse_time(s: &str) -> Result<time::OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    let s = s.trim();
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    // 2026-11-20T10:00Z / 2026-11-20T10:00+01:00: add the seconds.
    if s.len() >= 16
        && s.is_char_boundary(16)
        && s.as_bytes().get(10) == Some(&b'T')
        && s.as_bytes().get(13) == Some(&b':')
    {
        let with_secs = format!("{}:00{}", &s[..16], &s[16..]);
        if let Ok(t) = time::OffsetDateTime::parse(&with_secs, &Rfc3339) {
            return Ok(t);
        }
        // No offset at all: UTC.
        if s.len() == 16 || s.len() == 19 {
            let z = if s.len() == 16 {
                format!("{s}:00Z")
            } else {
                format!("{s}Z")
            };
            if let Ok(t) = time::OffsetDateTime::parse(&z, &Rfc3339) {
                return Ok(t);
            }
        }
    }
    if s.len() == 10 {
        if let Ok(t) = time::OffsetDateTime::parse(&format!("{s}T23:59:59Z"), &Rfc3339) {
            return Ok(t);
        }
    }
    Err(anyhow::anyhow!(
        "{s:?} is not a time; use e.g. 2026-11-20T10:00Z, 2026-11-20T10:00:00+01:00 or 2026-11-20"
    ))
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn time_formats() {
        let a = parse_time("2026-11-20T10:00Z").unwrap();
        assert_eq!(
            a.unix_timestamp(),
            parse_time("2026-11-20T10:00:00Z").unwrap().unix_timestamp()
        );
        assert_eq!(
            a.unix_timestamp(),
            parse_time("2026-11-20T11:00+01:00")
                .unwrap()
                .unix_timestamp()
        );
        assert_eq!(
            a.unix_timestamp(),
            parse_time("2026-11-20T10:00").unwrap().unix_timestamp()
        );
        assert_eq!(parse_time("2026-11-20").unwrap().hour(), 23);
        // Byte 16 inside a character: refused, not a panic.
        assert!(parse_time("2026-11-20T10:0é").is_err());
        assert!(parse_time("yesterday")
            .unwrap_err()
            .to_string()
            .contains("\"yesterday\" is not a time"));
    }
}
