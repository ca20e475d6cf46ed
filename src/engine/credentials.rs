//! Additional credentials of a connection and the credential pool a job uses.
//!
//! A connection has its primary credential, optional per-project ones (Data
//! Center), and any number of *additional* credentials (`c1`, `c2`, ...). Adding one
//! does not use it: a plan enables them (`additional_credentials`: `["*"]` or ids).
//! Each credential resolves to a *principal*, the account whose rate-limit budget
//! it spends: the user for API tokens, app passwords and user+password (two tokens of
//! one user share one budget), the token itself for access tokens, the consumer for
//! OAuth. Credentials of the same principal are reported when added: they add no
//! budget.

use super::connections::{
    admit_credential, credential_origins, session_for, tls_for, verify_credential,
};
use super::{Context, EngineError};
use crate::providers::auth::CredentialStore;
use crate::providers::{http, Authenticator, CredentialPool, HttpGate, PoolCredential, RateBudget};
use crate::state::{Connection, CredentialScope, ScopedCredential};
use crate::tls::TlsTrust;
use crate::vault::{Credential, CredentialKind};
use std::sync::Arc;

/// The id of a connection's credential for Data Center project `key` (what
/// `credential remove --project KEY` removes).
pub fn project_credential_id(key: &str) -> String {
    CredentialScope::project(key).id()
}

/// Who a credential's requests are counted against.
pub fn principal_of(conn: &Connection, cred: &Credential) -> String {
    let who = |prefix: &str| {
        format!(
            "{prefix}:{}",
            cred.identity
                .as_deref()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        )
    };
    match cred.kind {
        CredentialKind::ApiToken | CredentialKind::AppPassword | CredentialKind::Basic => {
            who(&format!("{}:user", conn.provider))
        }
        CredentialKind::OauthConsumer | CredentialKind::OauthAuthorization => {
            who(&format!("{}:oauth", conn.provider))
        }
        CredentialKind::AccessToken | CredentialKind::HttpAccessToken => {
            use secrecy::ExposeSecret;
            let h = blake3::hash(cred.secret.expose_secret().as_bytes());
            format!("{}:token:{}", conn.provider, &h.to_hex()[..12])
        }
    }
}

/// Asks the provider whose account the credential is (e.g. `GET /2.0/user`); when it
/// cannot tell, the principal is derived from the credential ([`principal_of`]).
/// Returns the principal and a warning when the provider failed to answer.
pub fn resolve_principal(
    ctx: &Context,
    conn: &Connection,
    cred: &Credential,
    tls: &Arc<TlsTrust>,
) -> Result<(String, Option<String>), EngineError> {
    Ok(principal_via(
        &session_for(ctx, conn, cred.clone(), tls)?,
        conn,
        cred,
    ))
}

/// [`resolve_principal`] through an existing session of `cred`.
pub(crate) fn principal_via(
    session: &crate::providers::ProviderSession<'_>,
    conn: &Connection,
    cred: &Credential,
) -> (String, Option<String>) {
    match session.principal() {
        Ok(Some(p)) => (format!("{}:{p}", conn.provider), None),
        Ok(None) => (principal_of(conn, cred), None),
        Err(e) => (
            principal_of(conn, cred),
            Some(format!(
                "could not ask which account the credential belongs to ({e}); credentials are told apart by their user name instead"
            )),
        ),
    }
}

/// The stored principal of the primary credential, or one derived from it.
fn primary_principal(conn: &Connection, primary: &Credential) -> String {
    conn.principal
        .clone()
        .unwrap_or_else(|| principal_of(conn, primary))
}

/// A credential as listed (never its secret).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CredentialView {
    /// `primary`, `project:KEY` or `c1`...
    pub id: String,
    pub role: String,
    pub kind: CredentialKind,
    pub identity: Option<String>,
    pub label: Option<String>,
    pub principal: Option<String>,
    pub enabled: bool,
}

/// Every credential of a connection.
pub fn list_credentials(
    ctx: &Context,
    connection: &str,
) -> Result<Vec<CredentialView>, EngineError> {
    let conn = ctx.state.connection(connection)?;
    let primary = ctx
        .vault
        .unseal(&ctx.state.sealed_credential(connection)?)?;
    let mut out = vec![CredentialView {
        id: "primary".into(),
        role: "primary".into(),
        kind: conn.credential_kind,
        identity: conn.credential_identity.clone(),
        label: None,
        principal: Some(primary_principal(&conn, &primary)),
        enabled: true,
    }];
    for s in ctx.state.scoped_credentials(connection)? {
        out.push(CredentialView {
            id: s.scope.id(),
            role: match &s.scope {
                CredentialScope::Project { key } => format!("project {key}"),
                CredentialScope::Additional { .. } => "additional".into(),
            },
            kind: s.kind,
            identity: s.identity.clone(),
            label: s.label.clone(),
            principal: s.principal.clone(),
            enabled: !s.disabled,
        });
    }
    Ok(out)
}

/// Adds an additional credential after checking it works (it lists the
/// connection's scopes). Returns it and warnings (same principal as another one,
/// deprecated kind).
pub fn add_additional_credential(
    ctx: &Context,
    connection: &str,
    credential: Credential,
    label: Option<String>,
    verify: bool,
) -> Result<(CredentialView, Vec<String>), EngineError> {
    let conn = ctx.state.connection(connection)?;
    let mut warnings = admit_credential(ctx, &conn, &credential)?;
    let mut principal = principal_of(&conn, &credential);
    let mut credential = credential;
    if verify {
        let tls = tls_for(ctx, connection)?;
        let (p, warning, verified) =
            verify_credential(ctx, &conn, credential, &tls, "the additional credential")?;
        principal = p;
        credential = verified;
        warnings.extend(warning);
    }
    let existing = list_credentials(ctx, connection)?;
    for other in &existing {
        if other.principal.as_deref() == Some(principal.as_str()) {
            warnings.push(format!(
                "credential {} has the same principal ({principal}) as this one: both spend one rate-limit budget, so this one adds none",
                other.id
            ));
        }
    }
    let n = existing
        .iter()
        .filter_map(|c| c.id.strip_prefix('c').and_then(|n| n.parse::<u32>().ok()))
        .max()
        .unwrap_or(0)
        + 1;
    let scoped = ScopedCredential {
        connection: conn.name.clone(),
        scope: CredentialScope::Additional {
            id: format!("c{n}"),
        },
        kind: credential.kind,
        identity: credential.identity.clone(),
        sealed: ctx.vault.seal(&credential)?,
        added_at: time::OffsetDateTime::now_utc(),
        label,
        principal: Some(principal.clone()),
        disabled: false,
    };
    ctx.state.put_scoped_credential(&scoped)?;
    Ok((
        CredentialView {
            id: scoped.scope.id(),
            role: "additional".into(),
            kind: scoped.kind,
            identity: scoped.identity,
            label: scoped.label,
            principal: Some(principal),
            enabled: true,
        },
        warnings,
    ))
}

fn additional(ctx: &Context, connection: &str, id: &str) -> Result<ScopedCredential, EngineError> {
    ctx.state.connection(connection)?;
    ctx.state
        .scoped_credentials(connection)?
        .into_iter()
        .find(|s| matches!(&s.scope, CredentialScope::Additional { id: i } if i == id))
        .ok_or_else(|| {
            EngineError::NotFound(format!(
                "connection {connection} has no additional credential {id:?} (see `connection credential list {connection}`)"
            ))
        })
}

/// Enables or disables an additional credential.
pub fn set_additional_enabled(
    ctx: &Context,
    connection: &str,
    id: &str,
    enabled: bool,
) -> Result<(), EngineError> {
    let mut s = additional(ctx, connection, id)?;
    s.disabled = !enabled;
    Ok(ctx.state.put_scoped_credential(&s)?)
}

/// Removes an additional credential.
pub fn remove_additional(ctx: &Context, connection: &str, id: &str) -> Result<(), EngineError> {
    let s = additional(ctx, connection, id)?;
    ctx.state.remove_scoped_credential(connection, &s.scope)?;
    Ok(())
}

/// Checks one credential of a connection (`primary` or an additional id).
pub fn test_credential(ctx: &Context, connection: &str, id: &str) -> Result<usize, EngineError> {
    let conn = ctx.state.connection(connection)?;
    let cred = if id == "primary" {
        ctx.vault
            .unseal(&ctx.state.sealed_credential(connection)?)?
    } else {
        ctx.vault.unseal(&additional(ctx, connection, id)?.sealed)?
    };
    let tls = tls_for(ctx, connection)?;
    Ok(session_for(ctx, &conn, cred, &tls)?.verify()?.len())
}

/// The connection's request budget per principal, if set.
pub fn budget_of(conn: &Connection) -> Result<Option<RateBudget>, EngineError> {
    conn.rate_limit
        .as_deref()
        .map(|r| {
            r.parse::<RateBudget>()
                .map_err(|e| EngineError::Connection {
                    connection: conn.name.clone(),
                    reason: e,
                })
        })
        .transpose()
}

/// The gate a job of `conn` uses: its primary credential plus the enabled
/// additional credentials `enable` names (`*` = all), sharing one pool.
pub(crate) fn pooled_gate(
    ctx: &Context,
    conn: &Connection,
    primary: Credential,
    enable: &[String],
    tls: &Arc<TlsTrust>,
) -> Result<HttpGate, EngineError> {
    let provider = ctx.providers.get(&conn.provider)?;
    let oauth_url_of = |kind| provider.oauth_token_url(&conn.settings, kind);
    let allowed_base = crate::providers::parse_origins(&credential_origins(ctx, conn)?);
    let client = http::client_with_tls(&ctx.retry, tls).map_err(|e| EngineError::Connection {
        connection: conn.name.clone(),
        reason: e.to_string(),
    })?;
    let mut allowed = allowed_base.clone();
    let mut lanes = Vec::new();
    let mut add = |id: String, cred: Credential, principal: String| -> Result<(), EngineError> {
        let support = provider.info().support_for(cred.kind)?;
        let oauth = oauth_url_of(cred.kind)?;
        if let Some(u) = oauth.as_deref().and_then(|u| url::Url::parse(u).ok()) {
            if !allowed_base.contains(&u.origin()) {
                return Err(EngineError::Connection {
                    connection: conn.name.clone(),
                    reason: format!(
                        "the provider's OAuth token URL {} is outside the connection's hosts",
                        u.origin().ascii_serialization()
                    ),
                });
            }
            if !allowed.contains(&u.origin()) {
                allowed.push(u.origin());
            }
        }
        let mut auth = Authenticator::new(
            cred,
            support.api.clone(),
            support.git.clone(),
            oauth,
            client.clone(),
        );
        if auth.kind() == CredentialKind::OauthAuthorization {
            auth = auth.with_store(Arc::new(VaultStore::of(ctx, conn, &id)));
        }
        lanes.push(PoolCredential {
            id,
            principal,
            auth: Arc::new(auth),
        });
        Ok(())
    };
    let p = primary_principal(conn, &primary);
    add("primary".into(), primary, p)?;
    if !enable.is_empty() {
        let all = enable.iter().any(|e| e == "*");
        for s in ctx.state.scoped_credentials(&conn.name)? {
            let CredentialScope::Additional { id } = &s.scope else {
                continue;
            };
            if s.disabled || !(all || enable.contains(id)) {
                continue;
            }
            let cred = ctx.vault.unseal(&s.sealed)?;
            let p = s
                .principal
                .clone()
                .unwrap_or_else(|| principal_of(conn, &cred));
            add(id.clone(), cred, p)?;
        }
    }
    let pool = CredentialPool::new(
        lanes,
        budget_of(conn)?,
        ctx.retry.base_backoff,
        ctx.retry.max_wait,
    );
    Ok(
        HttpGate::with_pool(client, allowed, Arc::new(pool), ctx.retry.clone())
            .with_tls(tls.clone()),
    )
}

/// Credential `id` (`primary` or `c1`...) of a stored connection in the vault: a
/// rotated OAuth refresh token is resealed there, and read back by another job
/// whose own was refused. A connection not stored yet (being added) has nothing to
/// update: its adder seals the credential as it is after verification
/// ([`crate::providers::Authenticator::credential`]).
struct VaultStore {
    state: Arc<crate::state::State>,
    vault: Arc<crate::vault::Vault>,
    connection: String,
    connection_id: String,
    id: String,
}

impl VaultStore {
    fn of(ctx: &Context, conn: &Connection, id: &str) -> VaultStore {
        VaultStore {
            state: ctx.state.clone(),
            vault: ctx.vault.clone(),
            connection: conn.name.clone(),
            connection_id: conn.id.clone(),
            id: id.to_string(),
        }
    }
}

impl CredentialStore for VaultStore {
    fn save(&self, cred: &Credential) -> Result<(), String> {
        let sealed = self.vault.seal(cred).map_err(|e| e.to_string())?;
        let stored =
            self.state
                .reseal_credential(&self.connection, &self.connection_id, &self.id, &sealed);
        match stored {
            Err(crate::state::StateError::NoSuchConnection(_)) => Ok(()),
            other => other.map_err(|e| e.to_string()),
        }
    }

    fn load(&self) -> Result<Credential, String> {
        let err = |e: &dyn std::fmt::Display| e.to_string();
        let conn = self
            .state
            .connection(&self.connection)
            .map_err(|e| err(&e))?;
        if conn.id != self.connection_id {
            return Err(format!("connection {} was replaced", self.connection));
        }
        let sealed = if self.id == "primary" {
            self.state
                .sealed_credential(&self.connection)
                .map_err(|e| err(&e))?
        } else {
            self.state
                .scoped_credentials(&self.connection)
                .map_err(|e| err(&e))?
                .into_iter()
                .find(|s| s.scope.id() == self.id)
                .map(|s| s.sealed)
                .ok_or_else(|| format!("credential {} is gone", self.id))?
        };
        self.vault.unseal(&sealed).map_err(|e| err(&e))
    }
}

/// The git form of credential `lane` of `pool`, each HTTP request paced by the pool
/// (its waits told to `notice`): how fetches and pushes authenticate.
pub(crate) fn paced_git_auth(
    pool: &Arc<CredentialPool>,
    lane: usize,
    notice: impl Fn(&str) + Send + Sync + 'static,
) -> Result<crate::git::GitAuth, EngineError> {
    let header = pool.auth(lane).git_header()?;
    let pool = pool.clone();
    Ok(crate::git::GitAuth::Paced {
        header,
        before_request: crate::git::Pacer(Arc::new(move || pool.pace(lane, &notice))),
    })
}
