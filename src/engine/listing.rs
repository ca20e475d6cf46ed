//! Listing a connection's repositories, each project through the credential it is
//! to be backed up with: a project's own credential (`connection credential add
//! --project`) when it has one, else the connection's default. Projects that have
//! their own credential are listed even when the default credential cannot see them.

use super::backup::Progress;
use super::connections::gate_for;
use super::{Context, EngineError};
use crate::providers::{HttpGate, ProviderSession, Repository, Scope};
use crate::state::{Connection, CredentialScope};
use crate::tls::TlsTrust;
use std::sync::Arc;

/// The repositories of a connection, each with the gate (credential) to fetch it with.
pub(crate) struct Listed {
    pub repos: Vec<(Repository, Arc<HttpGate>)>,
    /// The gates of the per-project credentials (for their request counters).
    pub project_gates: Vec<Arc<HttpGate>>,
}

/// Lists every scope of `session` (the default credential's) plus the projects that
/// have their own credential, each through the right gate.
pub(crate) fn list_repositories(
    ctx: &Context,
    conn: &Connection,
    tls: &Arc<TlsTrust>,
    default_gate: &Arc<HttpGate>,
    session: &ProviderSession<'_>,
    progress: &Arc<dyn Progress>,
) -> Result<Listed, EngineError> {
    let provider = ctx.providers.get(&conn.provider)?;
    let mut own: Vec<(CredentialScope, Arc<HttpGate>, crate::vault::CredentialKind)> = Vec::new();
    for scoped in ctx.state.scoped_credentials(&conn.name)? {
        if !matches!(scoped.scope, CredentialScope::Project { .. }) || scoped.disabled {
            continue;
        }
        let cred = ctx.vault.unseal(&scoped.sealed)?;
        let kind = cred.kind;
        let progress = progress.clone();
        let gate = gate_for(ctx, conn, cred, tls)?.with_notice(move |m| progress.notice(m));
        own.push((scoped.scope, Arc::new(gate), kind));
    }
    let mut scopes = session.list_scopes()?;
    for (scope, _, _) in &own {
        let CredentialScope::Project { key } = scope else {
            continue;
        };
        if !scopes.iter().any(|s| scope.covers_project(&s.key)) {
            scopes.push(Scope {
                key: key.clone(),
                name: key.clone(),
                kind: "project".into(),
            });
        }
    }
    let mut repos = Vec::new();
    for scope in &scopes {
        let (listed, gate) = match own.iter().find(|(s, _, _)| s.covers_project(&scope.key)) {
            Some((_, gate, kind)) => (
                provider
                    .session(&conn.settings, *kind, gate.clone())
                    .list_repositories(&scope.key)?,
                gate.clone(),
            ),
            None => (session.list_repositories(&scope.key)?, default_gate.clone()),
        };
        repos.extend(listed.into_iter().map(|r| (r, gate.clone())));
    }
    Ok(Listed {
        repos,
        project_gates: own.into_iter().map(|(_, g, _)| g).collect(),
    })
}
