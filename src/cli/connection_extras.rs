//! What a connection holds beside its default credential: `reposafe connection
//! credential ...` (the credentials it uses for single projects: Bitbucket Data Center
//! project tokens, another user for one project) and `reposafe connection tls ...` /
//! `connection add --ca-bundle` (its certificate trust).

use super::args::AddArgs;
use crate::engine::{self, Context};
use crate::state::ConnectionTls;
use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;

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
    pub cred: super::args::CredentialFlags,
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
            let credential = a.cred.credential()?;
            let kind = credential.kind;
            if a.additional {
                let (view, warnings) = engine::credentials::add_additional_credential(
                    ctx,
                    &a.name,
                    credential,
                    a.label.clone(),
                    !a.no_verify,
                )?;
                for w in warnings {
                    eprintln!("warning: {w}");
                }
                println!(
                    "added additional credential {} ({kind} {}) of connection {}; principal {}",
                    view.id,
                    view.identity.as_deref().unwrap_or(""),
                    a.name,
                    view.principal.as_deref().unwrap_or("?")
                );
                return Ok(0);
            }
            let project = a.project.clone().unwrap_or_default();
            let warnings =
                engine::add_project_credential(ctx, &a.name, &project, credential, !a.no_verify)?;
            for w in warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "connection {} uses a {kind} credential for project {}",
                a.name,
                project.trim().to_ascii_uppercase()
            );
            Ok(0)
        }
        CredentialCmd::List { name } => {
            print_credentials(&engine::credentials::list_credentials(ctx, &name)?);
            Ok(0)
        }
        CredentialCmd::Remove { name, project, id } => {
            match (project, id) {
                (Some(project), _) => {
                    engine::remove_project_credential(ctx, &name, &project)?;
                    println!(
                        "connection {name} uses its default credential for project {} again",
                        project.trim().to_ascii_uppercase()
                    );
                }
                (None, Some(id)) => {
                    engine::credentials::remove_additional(ctx, &name, &id)?;
                    println!("removed additional credential {id} of connection {name}");
                }
                (None, None) => bail!("give --project KEY or --id ID"),
            }
            Ok(0)
        }
        CredentialCmd::Enable { name, id } => {
            engine::credentials::set_additional_enabled(ctx, &name, &id, true)?;
            println!("additional credential {id} of connection {name} enabled");
            Ok(0)
        }
        CredentialCmd::Disable { name, id } => {
            engine::credentials::set_additional_enabled(ctx, &name, &id, false)?;
            println!("additional credential {id} of connection {name} disabled");
            Ok(0)
        }
        CredentialCmd::Test { name, id } => {
            let n = engine::credentials::test_credential(ctx, &name, &id)?;
            println!("credential {id} of connection {name} works; it sees {n} scopes");
            Ok(0)
        }
    }
}

/// Prints credentials, never a secret.
pub fn print_credentials(list: &[engine::credentials::CredentialView]) {
    println!(
        "{:<14} {:<12} {:<18} {:<22} {:<9} {:<32} SECRET",
        "ID", "ROLE", "KIND", "IDENTITY", "STATE", "PRINCIPAL"
    );
    for c in list {
        println!(
            "{:<14} {:<12} {:<18} {:<22} {:<9} {:<32} ********",
            c.id,
            c.role,
            c.kind.as_str(),
            c.identity.as_deref().unwrap_or("-"),
            if c.enabled { "enabled" } else { "disabled" },
            c.principal.as_deref().unwrap_or("-")
        );
    }
}
