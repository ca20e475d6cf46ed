//! Adding, testing and removing connections.

use super::{Context, EngineError};
use crate::providers::{http, Authenticator, HttpGate, Scope};
use crate::state::Connection;
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
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.')
}

/// Builds the authenticated HTTP gate for a connection.
pub(crate) fn gate_for(
    ctx: &Context,
    conn: &Connection,
    cred: Credential,
) -> Result<HttpGate, EngineError> {
    let provider = ctx.providers.get(&conn.provider)?;
    let support = provider.info().support_for(cred.kind)?;
    let oauth_url = provider.oauth_token_url(&conn.settings, cred.kind)?;
    let mut allowed = provider.info().allowed_origins(&conn.settings);
    if let Some(u) = oauth_url.as_deref().and_then(|u| url::Url::parse(u).ok()) {
        if !allowed.contains(&u.origin()) {
            return Err(EngineError::Connection {
                connection: conn.name.clone(),
                reason: format!(
                    "the provider's OAuth token URL {} is outside the connection's hosts",
                    u.origin().ascii_serialization()
                ),
            });
        }
        allowed.push(u.origin());
    }
    let client = http::client(&ctx.retry);
    let auth = Arc::new(Authenticator::new(
        cred,
        support.api.clone(),
        support.git.clone(),
        oauth_url,
        client.clone(),
    ));
    Ok(HttpGate::new(client, allowed, auth, ctx.retry.clone()))
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
    let provider = ctx.providers.get(&new.provider)?;
    let info = provider.info();
    let support = info.support_for(new.credential.kind)?;
    let mut warnings = Vec::new();
    if let Some(d) = &support.deprecated {
        warnings.push(format!("{} credentials: {d}", new.credential.kind));
    }
    new.credential.validate()?;
    let settings = info.resolve_settings(&new.settings)?;
    let conn = Connection {
        name: new.name.clone(),
        provider: new.provider.clone(),
        settings,
        credential_kind: new.credential.kind,
        credential_identity: new.credential.identity.clone(),
        read_only: new.read_only,
        created_at: time::OffsetDateTime::now_utc(),
    };
    if verify {
        let gate = Arc::new(gate_for(ctx, &conn, new.credential.clone())?);
        provider
            .session(&conn.settings, conn.credential_kind, gate)
            .verify()
            .map_err(|e| EngineError::Connection {
                connection: conn.name.clone(),
                reason: format!("the credential could not be verified: {e}"),
            })?;
    }
    let sealed = ctx.vault.seal(&new.credential)?;
    ctx.state.add_connection(&conn, &sealed)?;
    Ok((conn, warnings))
}

/// Checks a stored connection: decrypts its credential and lists its scopes.
pub fn test_connection(ctx: &Context, name: &str) -> Result<Vec<Scope>, EngineError> {
    let conn = ctx.state.connection(name)?;
    let cred = ctx.vault.unseal(&ctx.state.sealed_credential(name)?)?;
    let gate = Arc::new(gate_for(ctx, &conn, cred)?);
    let provider = ctx.providers.get(&conn.provider)?;
    Ok(provider
        .session(&conn.settings, conn.credential_kind, gate)
        .verify()?)
}

/// Removes a connection and its credential. Snapshots and mirrors stay.
pub fn remove_connection(ctx: &Context, name: &str) -> Result<(), EngineError> {
    Ok(ctx.state.remove_connection(name)?)
}
