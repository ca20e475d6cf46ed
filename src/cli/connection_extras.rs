//! What a connection holds beside its default credential: `reposafe connection
//! credential ...` (the credentials it uses for single projects: Bitbucket Data Center
//! project tokens, another user for one project) and `reposafe connection tls ...` /
//! `connection add --ca-bundle` (its certificate trust).

use super::args::AddArgs;
use crate::engine::{self, Context};
use crate::state::ConnectionTls;
use crate::vault::{Credential, CredentialKind};
use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum CredentialCmd {
    /// Use a credential for one project of a connection instead of its default one.
    /// Secrets are read from files (or `-` for stdin).
    Add(AddCredentialArgs),
    /// List a connection's per-project credentials (masked).
    List { name: String },
    /// Stop using a per-project credential (the default one applies again).
    Remove {
        name: String,
        /// Project key, e.g. PRJ or ~jdoe.
        #[arg(long)]
        project: String,
    },
}

#[derive(Args, Debug)]
pub struct AddCredentialArgs {
    /// Connection name.
    pub name: String,
    /// Project key, e.g. PRJ or ~jdoe for a personal project.
    #[arg(long)]
    pub project: String,
    /// File holding a Bitbucket Data Center HTTP access token (user, project or repository).
    #[arg(long)]
    pub http_access_token_file: Option<PathBuf>,
    /// User name for a user name + password credential.
    #[arg(long, requires = "password_file")]
    pub username: Option<String>,
    /// File holding the password.
    #[arg(long, requires = "username")]
    pub password_file: Option<PathBuf>,
    /// Store it without checking it can list the project's repositories.
    #[arg(long)]
    pub no_verify: bool,
}

impl AddCredentialArgs {
    fn credential(&self) -> Result<Credential> {
        match (
            &self.http_access_token_file,
            &self.username,
            &self.password_file,
        ) {
            (Some(f), None, None) => Ok(Credential {
                kind: CredentialKind::HttpAccessToken,
                identity: None,
                secret: super::read_secret(f, "HTTP access token")?,
            }),
            (None, Some(u), Some(f)) => Ok(Credential {
                kind: CredentialKind::Basic,
                identity: Some(u.clone()),
                secret: super::read_secret(f, "password")?,
            }),
            (None, None, None) => {
                bail!(
                    "give a credential: --http-access-token-file, or --username + --password-file"
                )
            }
            _ => bail!("give exactly one credential; several were given"),
        }
    }
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

/// The TLS trust `connection add` was given: the CA bundle's contents are stored.
pub fn connection_tls(a: &AddArgs) -> Result<ConnectionTls> {
    tls_from(a.ca_bundle.as_ref(), a.insecure_skip_tls_verify)
}

fn tls_from(ca_bundle: Option<&PathBuf>, insecure: bool) -> Result<ConnectionTls> {
    let Some(path) = ca_bundle else {
        return Ok(ConnectionTls {
            insecure,
            ..ConnectionTls::default()
        });
    };
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the CA bundle {}", path.display()))?;
    let shown = path.display().to_string();
    crate::tls::parse_bundle(pem.as_bytes(), &shown)?;
    Ok(ConnectionTls {
        ca_bundle_pem: Some(pem),
        ca_bundle_file: Some(shown),
        insecure: false,
    })
}

/// What `connection list` shows of a connection's TLS trust and project credentials.
pub fn tls_summary(ctx: &Context, name: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let tls = ctx.state.connection_tls(name)?;
    if tls.insecure {
        out.push("tls=INSECURE(no certificate verification)".to_string());
    } else if tls.ca_bundle_pem.is_some() {
        out.push(format!(
            "ca-bundle={}",
            tls.ca_bundle_file.as_deref().unwrap_or("(stored)")
        ));
    }
    let projects = ctx.state.scoped_credentials(name)?;
    if !projects.is_empty() {
        out.push(format!("project-credentials={}", projects.len()));
    }
    Ok(out)
}

/// `reposafe connection tls NAME ...`: replaces a connection's certificate trust.
pub fn set_tls(ctx: &Context, a: TlsArgs) -> Result<i32> {
    let tls = tls_from(a.ca_bundle.as_ref(), a.insecure_skip_tls_verify)?;
    let warnings = engine::set_connection_tls(ctx, &a.name, tls.clone(), !a.no_verify)?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    let what = match (&tls.ca_bundle_file, tls.insecure) {
        (Some(f), _) => format!("the system roots and the CA bundle {f}"),
        (None, true) => "nothing: certificates are not verified".to_string(),
        (None, false) => "the system roots".to_string(),
    };
    println!("connection {} now trusts {what}", a.name);
    Ok(0)
}

pub fn run(ctx: &Context, cmd: CredentialCmd) -> Result<i32> {
    match cmd {
        CredentialCmd::Add(a) => {
            let credential = a.credential()?;
            let kind = credential.kind;
            let warnings =
                engine::add_project_credential(ctx, &a.name, &a.project, credential, !a.no_verify)?;
            for w in warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "connection {} uses a {kind} credential for project {}",
                a.name,
                a.project.trim().to_ascii_uppercase()
            );
            Ok(0)
        }
        CredentialCmd::List { name } => {
            let conn = ctx.state.connection(&name)?;
            println!("{:<24} {:<18} {:<16} SECRET", "SCOPE", "KIND", "IDENTITY");
            println!(
                "{:<24} {:<18} {:<16} ********",
                "default",
                conn.credential_kind.as_str(),
                conn.credential_identity.as_deref().unwrap_or("-")
            );
            for c in engine::project_credentials(ctx, &name)? {
                println!(
                    "{:<24} {:<18} {:<16} ********",
                    c.scope.to_string(),
                    c.kind.as_str(),
                    c.identity.as_deref().unwrap_or("-")
                );
            }
            Ok(0)
        }
        CredentialCmd::Remove { name, project } => {
            engine::remove_project_credential(ctx, &name, &project)?;
            println!(
                "connection {name} uses its default credential for project {} again",
                project.trim().to_ascii_uppercase()
            );
            Ok(0)
        }
    }
}
