//! The command line: `reposafe <command>`. Parses arguments, opens the data dir,
//! calls the engine and prints results. The only place (with `main`) that uses
//! `anyhow`.

mod args;
mod commands;
mod config;
mod connection_extras;
mod progress;
mod remote;
mod serve;

use crate::archive::SnapshotId;
use crate::engine::{self, Context, RepoOutcome, SnapshotChoice};
use anyhow::{bail, Context as _, Result};
use args::{Cli, Command, ConnectionCmd};
use clap::Parser;
use secrecy::SecretString;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let file = match config::FileConfig::load(cli.config.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 2;
        }
    };
    init_logging(cli.verbose, file.log.as_deref());
    match run(cli, &file) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn init_logging(verbose: u8, configured: Option<&str>) {
    let default = match verbose {
        0 => configured.unwrap_or("warn"),
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("REPOSAFE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn open(data_dir: &Path) -> Result<Context> {
    Context::open(data_dir).with_context(|| format!("cannot open data dir {}", data_dir.display()))
}

/// Reads a secret from a file (or stdin for `-`), trimming one trailing newline.
fn read_secret(path: &Path, what: &str) -> Result<SecretString> {
    let mut s = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut s)
            .with_context(|| format!("cannot read the {what} from standard input"))?;
    } else {
        s = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the {what} from {}", path.display()))?;
    }
    let trimmed = s.trim_end_matches(['\n', '\r']).to_string();
    if trimmed.trim().is_empty() {
        bail!("the {what} file {} is empty", path.display());
    }
    Ok(SecretString::from(trimmed))
}

fn provider_id(alias: &str) -> &str {
    match alias {
        "cloud" => "bitbucket-cloud",
        "dc" | "datacenter" | "server" => "bitbucket-dc",
        other => other,
    }
}

fn run(cli: Cli, file: &config::FileConfig) -> Result<i32> {
    let data_dir = cli
        .data_dir
        .clone()
        .or(file.data_dir.clone())
        .unwrap_or_else(|| "./reposafe-data".into());
    // With a daemon on the data dir, these commands go through its API.
    let api_capable = matches!(
        cli.command,
        Command::Connection(_)
            | Command::Plan(_)
            | Command::Run(_)
            | Command::Jobs(_)
            | Command::Backup(_)
            | Command::Repositories(_)
            | Command::Snapshots(_)
            | Command::Restore(_)
    );
    if api_capable {
        if let Some(remote) = remote::Remote::discover(&data_dir)? {
            return commands::remote(&remote, cli.command);
        }
    }
    match cli.command {
        Command::Serve(args) => serve::run(&data_dir, args, file),
        Command::Plan(cmd) => commands::plan_local(&open(&data_dir)?, *cmd),
        Command::Run(args) => commands::run_local(open(&data_dir)?, args),
        Command::Jobs(cmd) => commands::jobs_local(&open(&data_dir)?, cmd),
        Command::Providers => {
            let ctx = open(&data_dir)?;
            for p in ctx.providers.infos() {
                println!("{}  {} {} ({})", p.id, p.display_name, p.version, p.origin);
                let kinds: Vec<&str> = p.credential_kinds.iter().map(|c| c.kind.as_str()).collect();
                println!("    credentials: {}", kinds.join(", "));
                for s in &p.settings {
                    let def = s
                        .default_value
                        .as_deref()
                        .map(|d| format!(" [default: {d}]"))
                        .unwrap_or_default();
                    let req = if s.required { " (required)" } else { "" };
                    println!("    --set {}=...{req}{def}  {}", s.name, s.description);
                }
            }
            for e in &ctx.providers.load_errors {
                println!("not loaded: {e}");
            }
            Ok(0)
        }
        Command::Connection(cmd) => connection(&data_dir, *cmd),
        Command::Backup(args) => {
            let ctx = open(&data_dir)?;
            let names: Vec<String> = if args.all {
                ctx.state
                    .connections()?
                    .into_iter()
                    .map(|c| c.name)
                    .collect()
            } else {
                args.connections.clone()
            };
            if names.is_empty() {
                bail!(
                    "name a connection to back up (see `reposafe connection list`) or pass --all"
                );
            }
            let mut failed = 0;
            for name in names {
                let bars = Arc::new(progress::Bars::new(&name));
                let opts = engine::BackupOptions {
                    parallelism: args.parallel,
                    only: args.repo.clone(),
                    progress: bars.clone(),
                    interrupt: progress::interrupt_flag(),
                    ..Default::default()
                };
                let report = engine::backup_connection(&ctx, &name, &opts).with_context(|| {
                    format!("backup of connection {name} failed; nothing was written")
                })?;
                bars.finish();
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    let (mut snaps, mut same) = (0, 0);
                    for r in &report.repositories {
                        match &r.outcome {
                            RepoOutcome::Snapshot { .. } => snaps += 1,
                            RepoOutcome::Unchanged { .. } => same += 1,
                            RepoOutcome::Failed { reason } => {
                                eprintln!("failed: {}: {reason}", r.full_name)
                            }
                            RepoOutcome::Skipped { reason } | RepoOutcome::Deferred { reason } => {
                                eprintln!("not backed up: {}: {reason}", r.full_name)
                            }
                        }
                    }
                    println!(
                        "{name}: {} repositories, {snaps} new snapshots, {same} unchanged, {} failed; {} stored in {:.1} s",
                        report.repositories.len(),
                        report.failed(),
                        human_bytes(report.new_bytes()),
                        report.seconds
                    );
                }
                failed += report.failed();
            }
            Ok(if failed > 0 { 1 } else { 0 })
        }
        Command::Repositories(args) => {
            let ctx = open(&data_dir)?;
            for r in ctx.state.repositories(args.connection.as_deref())? {
                println!(
                    "{}  {}  last snapshot: {}",
                    r.connection,
                    r.full_name,
                    r.last_snapshot.as_deref().unwrap_or("-")
                );
            }
            Ok(0)
        }
        Command::Snapshots(args) => {
            let ctx = open(&data_dir)?;
            let repo = engine::find_repository(&ctx, &args.repository, args.connection.as_deref())?;
            let snaps = engine::snapshots_of(&ctx, &repo)?;
            commands::print_snapshots(&repo, &snaps, args.json)?;
            Ok(0)
        }
        Command::Restore(args) => {
            let ctx = open(&data_dir)?;
            let repo = engine::find_repository(&ctx, &args.repository, args.connection.as_deref())?;
            let choice = match (&args.at, &args.snapshot) {
                (Some(_), Some(_)) => bail!("give either --at or --snapshot, not both"),
                (Some(at), None) => SnapshotChoice::At(args::parse_time(at)?),
                (None, Some(id)) => SnapshotChoice::Id(SnapshotId::parse(id)?),
                (None, None) => SnapshotChoice::Latest,
            };
            let report = engine::restore(&ctx, &repo, &choice, &args.to, args.force)?;
            println!(
                "restored {} snapshot {} (taken {}) to {}: {} refs from {} packs",
                repo.full_name,
                report.snapshot,
                fmt_time(report.taken_at),
                report.target,
                report.refs,
                report.packs
            );
            Ok(0)
        }
        Command::Check => {
            let ctx = open(&data_dir)?;
            let snaps = ctx.archive.all_snapshots()?;
            let mut seen = std::collections::HashSet::new();
            let mut bad = 0;
            for s in &snaps {
                for id in s.packs.iter().chain(std::iter::once(&s.refs)) {
                    if seen.insert(*id) {
                        if let Err(e) = ctx.archive.verify_blob(id) {
                            eprintln!("snapshot {} of {}: {e}", s.id, s.repository.full_name);
                            bad += 1;
                        }
                    }
                }
            }
            println!(
                "checked {} snapshots, {} blobs: {}",
                snaps.len(),
                seen.len(),
                if bad == 0 {
                    "all intact".to_string()
                } else {
                    format!("{bad} damaged")
                }
            );
            Ok(if bad == 0 { 0 } else { 1 })
        }
    }
}

fn connection(data_dir: &Path, cmd: ConnectionCmd) -> Result<i32> {
    let ctx = open(data_dir)?;
    match cmd {
        ConnectionCmd::Add(a) => {
            let provider = provider_id(&a.provider).to_string();
            let settings = a.settings()?;
            let credential = a.credential()?;
            let tls = connection_extras::connection_tls(&a)?;
            let name = a.connection_name()?;
            let (conn, warnings) = engine::add_connection(
                &ctx,
                engine::NewConnection {
                    name,
                    provider,
                    settings,
                    credential,
                    read_only: a.read_only,
                    rate_limit: a.rate_limit.clone(),
                    tls,
                },
                !a.no_verify,
            )?;
            for w in warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "added connection {} ({}, {} credential{})",
                conn.name,
                conn.provider,
                conn.credential_kind,
                conn.credential_identity
                    .map(|i| format!(" for {i}"))
                    .unwrap_or_default()
            );
            Ok(0)
        }
        ConnectionCmd::List => {
            for c in ctx.state.connections()? {
                let mut settings: Vec<String> =
                    c.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
                settings.extend(connection_extras::tls_summary(&ctx, &c.name)?);
                println!(
                    "{}  {}  {} {} ********  {}",
                    c.name,
                    c.provider,
                    c.credential_kind,
                    c.credential_identity.as_deref().unwrap_or(""),
                    settings.join(" ")
                );
            }
            Ok(0)
        }
        ConnectionCmd::Test { name } => {
            let scopes = engine::test_connection(&ctx, &name)?;
            println!(
                "connection {name} works; it sees: {}",
                scopes
                    .iter()
                    .map(|s| s.key.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(0)
        }
        ConnectionCmd::Remove { name } => {
            engine::remove_connection(&ctx, &name)?;
            println!("removed connection {name} (its snapshots stay in the archive)");
            Ok(0)
        }
        ConnectionCmd::Credential(cmd) => connection_extras::run(&ctx, *cmd),
        ConnectionCmd::Tls(a) => connection_extras::set_tls(&ctx, a),
    }
}

pub(crate) use crate::dashboard::{fmt_time, human_bytes};
