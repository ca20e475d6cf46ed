//! Adding, testing and removing connections, their TLS trust and their
//! per-project credentials.

use super::{Context, EngineError};
use crate::providers::{HttpGate, Scope};
use crate::state::{Connection, ConnectionTls, CredentialScope, ScopedCredential};
use crate::tls::TlsTrust;
use crate::vault::Credential;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A connection to be added.
pub struct NewConnection {
    pub name: String,
    pub provider: String,
    pub settings: BTreeMap<String, String>,
    pub credential: Credential,
    /// Never used to write back to the provider.
    pub read_only: bool,
    /// May be written to by a restore (`--allow-restore`); never with `read_only`.
    pub allow_restore: bool,
    /// Request budget of each principal, e.g. `60/min`.
    pub rate_limit: Option<String>,
    /// CA bundle (PEM contents and file name) or insecure mode; default: system roots.
    pub tls: ConnectionTls,
}

fn tls_error(connection: &str, e: crate::tls::TlsError) -> EngineError {
    EngineError::Connection {
        connection: connection.to_string(),
        reason: e.to_string(),
    }
}

/// The TLS trust of a connection as stored.
fn trust_of(name: &str, tls: &ConnectionTls) -> Result<Arc<TlsTrust>, EngineError> {
    let bundle = tls.ca_bundle_pem.as_deref().map(|pem| {
        (
            pem.as_bytes(),
            tls.ca_bundle_file.as_deref().unwrap_or("stored CA bundle"),
        )
    });
    TlsTrust::new(name, bundle, tls.insecure)
        .map(Arc::new)
        .map_err(|e| tls_error(name, e))
}

/// The TLS trust of a stored connection.
pub(crate) fn tls_for(ctx: &Context, connection: &str) -> Result<Arc<TlsTrust>, EngineError> {
    trust_of(connection, &ctx.state.connection_tls(connection)?)
}

pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.')
}

/// The origins a connection's credential may be sent to: those fixed when it was
/// added or, for a connection stored before they were recorded, derived from its
/// settings and built-in defaults (never from a plugin's defaults) and saved
/// with it on this first use.
pub(crate) fn credential_origins(
    ctx: &Context,
    conn: &Connection,
) -> Result<Vec<String>, EngineError> {
    if !conn.allowed_origins.is_empty() {
        return Ok(conn.allowed_origins.clone());
    }
    let derived = ctx
        .providers
        .get(&conn.provider)?
        .info()
        .allowed_origins(&conn.settings);
    if derived.is_empty() {
        return Ok(derived);
    }
    match ctx
        .state
        .save_connection_origins(&conn.name, &conn.id, &derived)
    {
        Ok(stored) => Ok(stored),
        // Not stored (yet): nothing to save.
        Err(crate::state::StateError::NoSuchConnection(_)) => Ok(derived),
        Err(e) => Err(e.into()),
    }
}

/// Builds the authenticated HTTP gate for a connection.
pub(crate) fn gate_for(
    ctx: &Context,
    conn: &Connection,
    cred: Credential,
    tls: &Arc<TlsTrust>,
) -> Result<HttpGate, EngineError> {
    super::credentials::pooled_gate(ctx, conn, cred, &[], tls)
}

/// A provider session of `conn` that sends with `cred` (through its own gate).
pub(crate) fn session_for<'a>(
    ctx: &'a Context,
    conn: &Connection,
    cred: Credential,
    tls: &Arc<TlsTrust>,
) -> Result<crate::providers::ProviderSession<'a>, EngineError> {
    let kind = cred.kind;
    let gate = Arc::new(gate_for(ctx, conn, cred, tls)?);
    Ok(ctx
        .providers
        .get(&conn.provider)?
        .session(&conn.settings, kind, gate))
}

/// Checks the provider accepts the credential's kind and the credential is well
/// formed; returns the warning of a kind retired upstream, if any.
pub(crate) fn admit_credential(
    ctx: &Context,
    conn: &Connection,
    cred: &Credential,
) -> Result<Vec<String>, EngineError> {
    let provider = ctx.providers.get(&conn.provider)?;
    let support = provider.info().support_for(cred.kind)?;
    cred.validate()?;
    Ok(support
        .deprecated
        .as_ref()
        .map(|d| format!("{} credentials: {d}", cred.kind))
        .into_iter()
        .collect())
}

/// Adds a connection after validating its settings and credential; with `verify`,
/// first checks the credential can list the connection's scopes. Returns warnings
/// (e.g. a deprecated credential kind).
pub fn add_connection(
    ctx: &Context,
    new: NewConnection,
    verify: bool,
) -> Result<(Connection, Vec<String>), EngineError> {
    if !valid_name(&new.name) {
        return Err(EngineError::Invalid(format!(
            "connection name {:?} must be 1-64 letters, digits, '-', '_' or '.'",
            new.name
        )));
    }
    if new.read_only && new.allow_restore {
        return Err(EngineError::Field {
            field: "allow_restore".into(),
            message: format!(
                "connection {} cannot be both read-only (--read-only) and marked for restore \
                 (--allow-restore): a read-only connection never writes",
                new.name
            ),
        });
    }
    let provider = ctx.providers.get(&new.provider)?;
    let info = provider.info();
    let support = info.support_for(new.credential.kind)?;
    let mut warnings = Vec::new();
    if let Some(d) = &support.deprecated {
        warnings.push(format!("{} credentials: {d}", new.credential.kind));
    }
    new.credential.validate()?;
    let settings = info.resolve_settings(&new.settings)?;
    let allowed_origins = info.credential_origins(&new.settings, &settings);
    let tls = trust_of(&new.name, &new.tls)?;
    if tls.is_insecure() {
        warnings.push(tls.insecure_warning());
    }
    let mut conn = Connection {
        name: new.name.clone(),
        provider: new.provider.clone(),
        settings,
        credential_kind: new.credential.kind,
        credential_identity: new.credential.identity.clone(),
        read_only: new.read_only,
        allow_restore: new.allow_restore,
        rate_limit: match &new.rate_limit {
            Some(r) => Some(
                r.parse::<crate::providers::RateBudget>()
                    .map_err(|e| EngineError::Field {
                        field: "rate_limit".into(),
                        message: e,
                    })?
                    .to_string(),
            ),
            None => None,
        },
        principal: None,
        id: Connection::new_id(),
        allowed_origins,
        created_at: time::OffsetDateTime::now_utc(),
    };
    let mut credential = new.credential;
    if verify {
        let (principal, warning, verified) =
            verify_credential(ctx, &conn, credential, &tls, "the credential")?;
        credential = verified;
        conn.principal = Some(principal);
        warnings.extend(warning);
    }
    let sealed = ctx.vault.seal(&credential)?;
    ctx.state.add_connection(&conn, &sealed)?;
    if new.tls != ConnectionTls::default() {
        if let Err(e) = ctx.state.set_connection_tls(&conn.name, &new.tls) {
            if let Err(undo) = ctx.state.remove_connection(&conn.name) {
                tracing::warn!(
                    "connection {}: its TLS trust could not be stored, and removing the half-added connection failed too: {undo}",
                    conn.name
                );
            }
            return Err(e.into());
        }
    }
    Ok((conn, warnings))
}

/// Checks `cred` (`what`, for the error) can list `conn`'s scopes and asks whose it is. Returns the principal,
/// a warning when the provider could not tell, and the credential as it is after
/// use (an OAuth refresh token the server rotated replaces the one given).
pub(crate) fn verify_credential(
    ctx: &Context,
    conn: &Connection,
    cred: Credential,
    tls: &Arc<TlsTrust>,
    what: &str,
) -> Result<(String, Option<String>, Credential), EngineError> {
    let session = session_for(ctx, conn, cred.clone(), tls)?;
    session.verify().map_err(|e| EngineError::Connection {
        connection: conn.name.clone(),
        reason: format!("{what} could not be verified: {e}"),
    })?;
    let (principal, warning) = super::credentials::principal_via(&session, conn, &cred);
    Ok((
        principal,
        warning,
        session.gate().authenticator().credential()?,
    ))
}

/// Checks a stored connection: decrypts its credential and lists its scopes. Also
/// returns which metadata kinds the credential can read ([`probe_kinds`]).
pub fn test_connection(
    ctx: &Context,
    name: &str,
) -> Result<(Vec<Scope>, Vec<KindAccess>), EngineError> {
    let conn = ctx.state.connection(name)?;
    let cred = ctx.vault.unseal(&ctx.state.sealed_credential(name)?)?;
    let tls = tls_for(ctx, name)?;
    if tls.is_insecure() {
        tracing::warn!("{}", tls.insecure_warning());
    }
    let primary = session_for(ctx, &conn, cred, &tls)?;
    let scopes = primary.verify()?;
    let kinds = probe_kinds(&primary, &scopes);
    // Each credential besides the primary must be able to list its project.
    for scoped in ctx.state.scoped_credentials(name)? {
        if scoped.disabled {
            continue;
        }
        let session = session_for(ctx, &conn, ctx.vault.unseal(&scoped.sealed)?, &tls)?;
        match &scoped.scope {
            CredentialScope::Project { key } => session.verify_scope(key).map(|_| ()),
            CredentialScope::Additional { .. } => session.verify().map(|_| ()),
        }
        .map_err(|e| EngineError::Connection {
            connection: conn.name.clone(),
            reason: format!("the credential for {}: {e}", scoped.scope),
        })?;
    }
    Ok((scopes, kinds))
}

/// Whether a connection's credential can read one metadata kind.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KindAccess {
    pub kind: String,
    pub readable: bool,
    /// Why not (e.g. `needs pullrequest`), or what failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Which metadata kinds the credential can read, asked of the first repository of the
/// first scope that has one (and of that scope): one request per kind, an incremental kind
/// asked only for items newer than the far future. Empty when the provider lists no
/// metadata (world < 0.3) or no repository is visible.
fn probe_kinds(
    session: &crate::providers::ProviderSession<'_>,
    scopes: &[Scope],
) -> Vec<KindAccess> {
    const FAR_FUTURE: &str = "9999-12-31T23:59:59Z";
    let access =
        |kind: &str, r: Result<crate::providers::DocumentPage, crate::providers::ProviderError>| {
            match r {
                Ok(_) => KindAccess {
                    kind: kind.to_string(),
                    readable: true,
                    reason: None,
                },
                Err(crate::providers::ProviderError::Forbidden(why)) => KindAccess {
                    kind: kind.to_string(),
                    readable: false,
                    reason: Some(why),
                },
                Err(e) => KindAccess {
                    kind: kind.to_string(),
                    readable: false,
                    reason: Some(e.to_string()),
                },
            }
        };
    for scope in scopes {
        let Ok(repos) = session.list_repositories(&scope.key) else {
            continue;
        };
        let Some(repo) = repos.first() else { continue };
        let Ok(Some(parts)) = session.describe_repository(repo) else {
            return Vec::new();
        };
        let mut out: Vec<KindAccess> = parts
            .metadata
            .iter()
            .map(|k| {
                let since = k.incremental.then_some(FAR_FUTURE);
                access(&k.name, session.list_documents(repo, &k.name, since, None))
            })
            .collect();
        for k in session.describe_scope(&scope.key).unwrap_or_default() {
            out.push(access(
                &k.name,
                session.list_scope_documents(&scope.key, &k.name, None),
            ));
        }
        return out;
    }
    Vec::new()
}

/// Removes a connection and its credential. Snapshots and mirrors stay.
pub fn remove_connection(ctx: &Context, name: &str) -> Result<(), EngineError> {
    Ok(ctx.state.remove_connection(name)?)
}

/// Replaces a connection's certificate trust; with `verify`, first checks that its
/// default credential can list its scopes with the new trust. Returns warnings.
pub fn set_connection_tls(
    ctx: &Context,
    name: &str,
    tls: ConnectionTls,
    verify: bool,
) -> Result<Vec<String>, EngineError> {
    let conn = ctx.state.connection(name)?;
    let trust = trust_of(name, &tls)?;
    let mut warnings = Vec::new();
    if trust.is_insecure() {
        warnings.push(trust.insecure_warning());
    }
    if verify {
        let cred = ctx.vault.unseal(&ctx.state.sealed_credential(name)?)?;
        let gate = Arc::new(gate_for(ctx, &conn, cred, &trust)?);
        ctx.providers
            .get(&conn.provider)?
            .session(&conn.settings, conn.credential_kind, gate)
            .verify()
            .map_err(|e| EngineError::Connection {
                connection: conn.name.clone(),
                reason: format!("the connection does not work with the new certificate trust: {e}"),
            })?;
    }
    ctx.state.set_connection_tls(name, &tls)?;
    Ok(warnings)
}

/// Adds (or replaces) the credential a connection uses for one project instead of
/// its default; with `verify`, first checks it can list that project's repositories.
/// Returns warnings.
pub fn add_project_credential(
    ctx: &Context,
    connection: &str,
    project: &str,
    credential: Credential,
    verify: bool,
) -> Result<Vec<String>, EngineError> {
    let conn = ctx.state.connection(connection)?;
    let key = project.trim();
    if key.is_empty() || key.len() > 128 || key.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(EngineError::Invalid(format!(
            "project key {project:?} must be a non-empty key such as PRJ or ~jdoe"
        )));
    }
    let warnings = admit_credential(ctx, &conn, &credential)?;
    if verify {
        let tls = tls_for(ctx, connection)?;
        session_for(ctx, &conn, credential.clone(), &tls)?
            .verify_scope(key)
            .map_err(|e| EngineError::Connection {
                connection: conn.name.clone(),
                reason: format!("the credential for project {key} could not be verified: {e}"),
            })?;
    }
    let scoped = ScopedCredential {
        connection: conn.name.clone(),
        scope: CredentialScope::project(key),
        kind: credential.kind,
        identity: credential.identity.clone(),
        sealed: ctx.vault.seal(&credential)?,
        added_at: time::OffsetDateTime::now_utc(),
        label: None,
        principal: None,
        disabled: false,
    };
    ctx.state.put_scoped_credential(&scoped)?;
    Ok(warnings)
}

/// The per-project credentials of a connection (sealed; list them masked).
pub fn project_credentials(
    ctx: &Context,
    connection: &str,
) -> Result<Vec<ScopedCredential>, EngineError> {
    ctx.state.connection(connection)?;
    Ok(ctx.state.scoped_credentials(connection)?)
}

/// Removes the credential a connection uses for one project.
pub fn remove_project_credential(
    ctx: &Context,
    connection: &str,
    project: &str,
) -> Result<(), EngineError> {
    ctx.state.connection(connection)?;
    if ctx
        .state
        .remove_scoped_credential(connection, &CredentialScope::project(project))?
    {
        Ok(())
    } else {
        Err(EngineError::NotFound(format!(
            "connection {connection} has no credential for project {}",
            project.trim().to_ascii_uppercase()
        )))
    }
}

/// Replaces a connection's primary credential (its kind may change; its hosts
/// never do); with `verify`, first checks the new one can list its scopes. Returns
/// the connection as stored and warnings.
pub fn rotate_credential(
    ctx: &Context,
    name: &str,
    credential: Credential,
    verify: bool,
) -> Result<(Connection, Vec<String>), EngineError> {
    let mut conn = ctx.state.connection(name)?;
    let mut warnings = admit_credential(ctx, &conn, &credential)?;
    conn.allowed_origins = credential_origins(ctx, &conn)?;
    conn.credential_kind = credential.kind;
    conn.credential_identity = credential.identity.clone();
    let mut credential = credential;
    if verify {
        let tls = tls_for(ctx, name)?;
        let (principal, warning, verified) =
            verify_credential(ctx, &conn, credential, &tls, "the new credential")?;
        credential = verified;
        conn.principal = Some(principal);
        warnings.extend(warning);
    } else {
        conn.principal = None;
    }
    let sealed = ctx.vault.seal(&credential)?;
    ctx.state.replace_connection(&conn, Some(&sealed))?;
    Ok((conn, warnings))
}

/// What `edit_connection` may change; `None` keeps the stored value.
#[derive(Debug, Default)]
pub struct ConnectionEdit {
    pub read_only: Option<bool>,
    pub allow_restore: Option<bool>,
    /// `Some(None)` removes the budget.
    pub rate_limit: Option<Option<String>>,
    /// Settings that do not name a host (e.g. `workspace`); a URL setting is refused.
    pub settings: BTreeMap<String, String>,
}

/// Changes a connection's flags, rate limit and host-free settings. The hosts its
/// credential may be sent to are fixed when it is added, so URL settings are refused.
pub fn edit_connection(
    ctx: &Context,
    name: &str,
    edit: ConnectionEdit,
) -> Result<Connection, EngineError> {
    let mut conn = ctx.state.connection(name)?;
    let info = ctx.providers.get(&conn.provider)?.info();
    let mut settings = conn.settings.clone();
    for (key, value) in edit.settings {
        if info.settings.iter().any(|s| s.name == key && s.is_url) {
            return Err(EngineError::Field {
                field: format!("settings.{key}"),
                message: format!(
                    "`{key}` names a host the credential is sent to, which is fixed when a \
                     connection is added: add a new connection with it (and its credential) instead"
                ),
            });
        }
        settings.insert(key, value);
    }
    conn.allowed_origins = credential_origins(ctx, &conn)?;
    conn.settings = info.resolve_settings(&settings)?;
    conn.read_only = edit.read_only.unwrap_or(conn.read_only);
    conn.allow_restore = edit.allow_restore.unwrap_or(conn.allow_restore);
    if conn.read_only && conn.allow_restore {
        return Err(EngineError::Field {
            field: "allow_restore".into(),
            message: format!(
                "connection {name} cannot be both read-only and marked for restore: a read-only \
                 connection never writes"
            ),
        });
    }
    if let Some(rate) = edit.rate_limit {
        conn.rate_limit = match rate.as_deref().map(str::trim) {
            None | Some("") | Some("none") => None,
            Some(r) => Some(
                r.parse::<crate::providers::RateBudget>()
                    .map_err(|e| EngineError::Field {
                        field: "rate_limit".into(),
                        message: e,
                    })?
                    .to_string(),
            ),
        };
    }
    ctx.state.replace_connection(&conn, None)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::CredentialKind;
    use time::OffsetDateTime;

    #[test]
    fn an_old_connection_gets_its_origins_derived_once_and_saved() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = Context::open(dir.path()).expect("context");
        let info = ctx
            .providers
            .get("bitbucket-cloud")
            .expect("built-in")
            .info();
        // Stored settings are the resolved ones (defaults filled in).
        let settings = info
            .resolve_settings(&BTreeMap::from([(
                "workspace".to_string(),
                "acme".to_string(),
            )]))
            .expect("valid settings");
        let old = Connection {
            name: "acme".into(),
            provider: "bitbucket-cloud".into(),
            settings,
            credential_kind: CredentialKind::AccessToken,
            credential_identity: None,
            read_only: false,
            allow_restore: false,
            rate_limit: None,
            principal: None,
            id: Connection::new_id(),
            // Stored before origins were recorded.
            allowed_origins: Vec::new(),
            created_at: OffsetDateTime::UNIX_EPOCH,
        };
        ctx.state.add_connection(&old, b"sealed").expect("stored");
        let derived = info.allowed_origins(&old.settings);
        assert!(!derived.is_empty());
        assert_eq!(credential_origins(&ctx, &old).expect("origins"), derived);
        let stored = ctx.state.connection("acme").expect("connection");
        assert_eq!(stored.allowed_origins, derived, "saved on first use");
        assert_eq!(stored.id, old.id);
        // A connection not stored (being added) gets them derived, nothing saved.
        let unsaved = Connection {
            name: "new".into(),
            ..old.clone()
        };
        assert_eq!(
            credential_origins(&ctx, &unsaved).expect("origins"),
            derived
        );
        assert!(ctx.state.connection("new").is_err());
    }
}
