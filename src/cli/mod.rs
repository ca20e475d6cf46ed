//! The command line: `reposafe <command>`. Parses arguments, picks the service
//! (the daemon's API when one serves the data dir, else the engine in this process),
//! runs the command through it and prints the report. The only place (with `main`)
//! that uses `anyhow`.

mod archive;
mod args;
mod commands;
mod config;
mod notifications;
mod output;
mod progress;
mod remote;
mod serve;

use crate::engine::{LocalService, Service};
use anyhow::{bail, Context as _, Result};
use args::{Cli, Command};
use clap::Parser;
use secrecy::SecretString;
use std::io::Read;
use std::path::Path;

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
    match file.s3_keys() {
        Ok(Some(keys)) => crate::engine::s3_keys::use_configured_keys(keys),
        Ok(None) => {}
        Err(e) => {
            eprintln!("error: {e:#}");
            return 2;
        }
    }
    match run(cli, &file) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            1
        }
    }
}

/// An error with its causes, leaving out a cause whose text the message before it
/// already holds (many errors show their source in their own message).
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
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

fn run(cli: Cli, file: &config::FileConfig) -> Result<i32> {
    let data_dir = cli
        .data_dir
        .clone()
        .or(file.data_dir.clone())
        .unwrap_or_else(|| "./reposafe-data".into());
    if let Command::Serve(args) = cli.command {
        return serve::run(&data_dir, args, file);
    }
    // Creating the archive and its keys work on the data dir itself, never through a
    // daemon's API (a key never crosses it).
    let command = match cli.command {
        Command::Archive(cmd) => match archive::run_local(&data_dir, cmd)? {
            archive::Outcome::Done(code) => return Ok(code),
            archive::Outcome::Service(cmd) => Command::Archive(*cmd),
        },
        other => other,
    };
    // With a daemon on the data dir, every command goes through its API; without
    // one, the engine runs here. Both are the same `Service`.
    let service: Box<dyn Service> = match remote::Remote::discover(&data_dir)? {
        Some(remote) => Box::new(remote),
        None => {
            let local = LocalService::open(&data_dir)
                .with_context(|| format!("cannot open data dir {}", data_dir.display()))?;
            local
                .jobs_queue()
                .notifications()
                .set_defaults(file.notifications.clone());
            Box::new(local)
        }
    };
    commands::execute(service.as_ref(), command)
}
