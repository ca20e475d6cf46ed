//! OAuth 2.0 "Connect" (authorization code grant) for adding a connection.
//!
//! [`begin`] checks what the connection will be, keeps it as a *pending flow* in the
//! daemon's memory under a fresh 256-bit random `state` (single use, 10 minutes, at
//! most [`MAX_PENDING`] at once) and answers the provider's authorize URL for the
//! browser. The provider sends the browser back to `/oauth/callback` with `state` and
//! a `code` (or an `error`); [`finish`] takes the flow out (a state works once),
//! exchanges the code at the provider's token URL (`grant_type=authorization_code`,
//! HTTP Basic with the consumer's key and secret) and adds the connection through
//! [`super::connections::add_connection`] (verified as any other) with an
//! `oauth-authorization` credential: the consumer key, and its secret and the refresh
//! token sealed in the vault. Access tokens are then fetched from the refresh token
//! as they expire ([`crate::providers::Authenticator`]). The consumer secret, the
//! code and every token stay in `SecretString`s and never reach an answer or a log.

use super::connections::{valid_name, NewConnection};
use super::{Context, EngineError};
use crate::providers::http;
use crate::state::{Actor, Connection, ConnectionTls};
use crate::tls::TlsTrust;
use crate::vault::{Credential, CredentialKind, OAuthGrant};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a Connect flow waits for the browser to come back.
pub const FLOW_LIFETIME: Duration = Duration::from_secs(600);
/// Most Connect flows pending at once.
pub const MAX_PENDING: usize = 64;
/// The host-only setting naming the provider's authorize URL (the rest go to the
/// provider); by default the token URL with its last segment replaced by `authorize`.
pub const AUTHORIZE_URL_SETTING: &str = "oauth-authorize-url";

/// `oauth begin`: the connection to add once the user has consented.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthBegin {
    pub name: String,
    /// Provider id or alias (`cloud`).
    pub provider: String,
    /// Provider settings (workspace, base URLs), and optionally `oauth-authorize-url`.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    pub consumer_key: String,
    #[serde(serialize_with = "super::service::expose_secret")]
    pub consumer_secret: SecretString,
    /// Where the provider sends the browser back: this daemon's `/oauth/callback`
    /// (the URL registered as the consumer's callback URL). The API fills it in
    /// from the request's host when absent.
    #[serde(default)]
    pub redirect_uri: Option<String>,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub allow_restore: bool,
    #[serde(default)]
    pub rate_limit: Option<String>,
}

/// Where to send the browser.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OAuthStarted {
    pub authorize_url: String,
    /// When the flow stops being accepted (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: time::OffsetDateTime,
}

/// What the provider sent the browser back with. `Debug` shows neither the state
/// nor the code.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthFinish {
    pub state: String,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

impl std::fmt::Debug for OAuthFinish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthFinish")
            .field("state", &"<redacted>")
            .field("code", &self.code.as_ref().map(|_| "<redacted>"))
            .field("error", &self.error)
            .finish()
    }
}

/// A flow waiting for its callback.
struct Flow {
    begin: OAuthBegin,
    provider: String,
    redirect_uri: String,
    token_url: String,
    started: Instant,
    /// Who began the flow: the callback comes back without a session, so the
    /// connection it adds is recorded as theirs.
    actor: Actor,
}

/// The pending Connect flows of this process, by `state`.
#[derive(Default)]
pub struct PendingFlows {
    flows: Mutex<HashMap<String, Flow>>,
}

impl PendingFlows {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Flow>> {
        self.flows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps a flow; refused when [`MAX_PENDING`] unexpired ones wait.
    fn insert(&self, state: String, flow: Flow) -> Result<(), EngineError> {
        let mut flows = self.lock();
        flows.retain(|_, f| f.started.elapsed() < FLOW_LIFETIME);
        if flows.len() >= MAX_PENDING {
            return Err(EngineError::Conflict(format!(
                "{MAX_PENDING} Connect flows are already waiting for Bitbucket's answer; finish \
                 them or wait up to {} minutes",
                FLOW_LIFETIME.as_secs() / 60
            )));
        }
        flows.insert(state, flow);
        Ok(())
    }

    /// Takes the flow of `state` out (a state works once), refusing an unknown or
    /// expired one.
    fn take(&self, state: &str) -> Result<Flow, EngineError> {
        let flow = self.lock().remove(state);
        match flow {
            Some(f) if f.started.elapsed() < FLOW_LIFETIME => Ok(f),
            Some(_) => Err(EngineError::Unauthorized(format!(
                "this Connect flow has expired (after {} minutes): start it again",
                FLOW_LIFETIME.as_secs() / 60
            ))),
            None => Err(EngineError::Unauthorized(
                "unknown or already used OAuth state: this callback does not belong to a \
                 Connect flow started here (start it again)"
                    .into(),
            )),
        }
    }
}

/// The authorize URL: the `oauth-authorize-url` setting, else the token URL with
/// its last path segment replaced by `authorize`; with the flow's parameters.
fn authorize_url(
    setting: Option<&str>,
    token_url: &str,
    key: &str,
    state: &str,
    redirect_uri: &str,
) -> Result<String, EngineError> {
    let field = |message: String| EngineError::Field {
        field: format!("settings.{AUTHORIZE_URL_SETTING}"),
        message,
    };
    let mut url = match setting {
        Some(s) => url::Url::parse(s).map_err(|e| field(format!("{s:?} is not a URL ({e})")))?,
        None => {
            let mut u = url::Url::parse(token_url).map_err(|e| {
                EngineError::ProviderAnswer(format!(
                    "the provider's OAuth token URL {token_url:?} is not a URL ({e})"
                ))
            })?;
            if let Ok(mut segs) = u.path_segments_mut() {
                segs.pop().push("authorize");
            }
            u
        }
    };
    if !matches!(url.scheme(), "https" | "http") {
        return Err(field(format!("{url} is not an http(s) URL")));
    }
    url.query_pairs_mut()
        .append_pair("client_id", key)
        .append_pair("response_type", "code")
        .append_pair("state", state)
        .append_pair("redirect_uri", redirect_uri);
    Ok(url.into())
}

fn check_redirect_uri(uri: Option<&str>) -> Result<String, EngineError> {
    let field = |message: &str| EngineError::Field {
        field: "redirect_uri".into(),
        message: message.into(),
    };
    let uri = uri.ok_or_else(|| field("give the daemon's callback URL (…/oauth/callback)"))?;
    let u = url::Url::parse(uri).map_err(|_| field("is not an absolute URL"))?;
    if !matches!(u.scheme(), "https" | "http") || u.path() != "/oauth/callback" {
        return Err(field(
            "must be an http(s) URL of this daemon ending in /oauth/callback",
        ));
    }
    Ok(uri.to_string())
}

/// Starts a Connect flow: checks the connection to be added and answers where to
/// send the browser.
pub fn begin(
    ctx: &Context,
    mut req: OAuthBegin,
    actor: &Actor,
) -> Result<OAuthStarted, EngineError> {
    if !valid_name(&req.name) {
        return Err(EngineError::Field {
            field: "name".into(),
            message: format!(
                "connection name {:?} must be 1-64 letters, digits, '-', '_' or '.'",
                req.name
            ),
        });
    }
    if ctx.state.connection(&req.name).is_ok() {
        return Err(crate::state::StateError::ConnectionExists(req.name).into());
    }
    for (field, value) in [
        ("consumer_key", req.consumer_key.as_str()),
        ("consumer_secret", req.consumer_secret.expose_secret()),
    ] {
        if value.trim().is_empty() || value.contains(['\n', '\r']) {
            return Err(EngineError::Field {
                field: field.into(),
                message: "is empty or has a line break".into(),
            });
        }
    }
    let redirect_uri = check_redirect_uri(req.redirect_uri.as_deref())?;
    let authorize_setting = req.settings.remove(AUTHORIZE_URL_SETTING);
    let provider_id = super::provider_id(&req.provider).to_string();
    let provider = ctx.providers.get(&provider_id)?;
    let info = provider.info();
    info.support_for(CredentialKind::OauthAuthorization)?;
    let settings = info.resolve_settings(&req.settings)?;
    let token_url = provider
        .oauth_token_url(&settings, CredentialKind::OauthAuthorization)?
        .ok_or_else(|| {
            EngineError::Invalid(format!("provider {provider_id} has no OAuth token URL"))
        })?;
    let origins =
        crate::providers::parse_origins(&info.credential_origins(&req.settings, &settings));
    let token_origin = url::Url::parse(&token_url).map(|u| u.origin());
    if !token_origin.as_ref().is_ok_and(|o| origins.contains(o)) {
        return Err(EngineError::ProviderAnswer(format!(
            "the provider's OAuth token URL {token_url} is outside the connection's hosts"
        )));
    }
    let state = hex::encode(rand::random::<[u8; 32]>());
    let authorize_url = authorize_url(
        authorize_setting.as_deref(),
        &token_url,
        &req.consumer_key,
        &state,
        &redirect_uri,
    )?;
    ctx.oauth.insert(
        state,
        Flow {
            begin: req,
            provider: provider_id,
            redirect_uri,
            token_url,
            started: Instant::now(),
            actor: actor.clone(),
        },
    )?;
    Ok(OAuthStarted {
        authorize_url,
        expires_at: time::OffsetDateTime::now_utc() + FLOW_LIFETIME,
    })
}

/// An error code the provider sent back, if it is a plain OAuth code (never echo
/// anything else).
fn shown_code(code: &str) -> String {
    if !code.is_empty()
        && code.len() <= 64
        && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    {
        code.to_string()
    } else {
        "an unrecognised error".into()
    }
}

/// A finished Connect flow: the connection added, its warnings, and who began it.
pub struct Connected {
    pub connection: Connection,
    pub warnings: Vec<String>,
    pub actor: Actor,
}

/// Finishes a Connect flow: checks `state`, exchanges the code and adds the
/// connection (verified).
pub fn finish(ctx: &Context, req: OAuthFinish) -> Result<Connected, EngineError> {
    let flow = ctx.oauth.take(&req.state)?;
    let name = flow.begin.name.clone();
    let refused = |reason: String| EngineError::Connection {
        connection: name.clone(),
        reason,
    };
    if let Some(error) = req.error.as_deref() {
        let code = shown_code(error);
        let why = if code == "access_denied" {
            "access was denied on the consent page".to_string()
        } else {
            code
        };
        return Err(refused(format!(
            "Bitbucket did not authorize reposafe ({why}); the connection was not added"
        )));
    }
    let code = req
        .code
        .filter(|c| !c.trim().is_empty())
        .map(SecretString::from)
        .ok_or_else(|| refused("the callback carried neither a code nor an error".into()))?;
    let refresh_token = exchange_code(ctx, &flow, &code).map_err(&refused)?;
    let grant = OAuthGrant {
        client_secret: flow.begin.consumer_secret.expose_secret().to_string(),
        refresh_token: refresh_token.expose_secret().to_string(),
    };
    let new = NewConnection {
        name: flow.begin.name,
        provider: flow.provider,
        settings: flow.begin.settings,
        credential: Credential {
            kind: CredentialKind::OauthAuthorization,
            identity: Some(flow.begin.consumer_key),
            secret: grant.to_secret(),
        },
        read_only: flow.begin.read_only,
        allow_restore: flow.begin.allow_restore,
        rate_limit: flow.begin.rate_limit,
        tls: ConnectionTls::default(),
    };
    let (connection, warnings) = super::connections::add_connection(ctx, new, true)?;
    Ok(Connected {
        connection,
        warnings,
        actor: flow.actor,
    })
}

/// `grant_type=authorization_code` at the token URL; the refresh token, or why not
/// (never a secret).
fn exchange_code(ctx: &Context, flow: &Flow, code: &SecretString) -> Result<SecretString, String> {
    #[derive(Deserialize)]
    struct Tokens {
        refresh_token: Option<String>,
    }
    #[derive(Deserialize)]
    struct Refused {
        error: String,
    }
    let url = &flow.token_url;
    let client = http::client_with_tls(&ctx.retry, &TlsTrust::system(&flow.begin.name))
        .map_err(|e| e.to_string())?;
    let body = SecretString::from(
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", code.expose_secret())
            .append_pair("redirect_uri", &flow.redirect_uri)
            .finish(),
    );
    let resp = client
        .post(url.as_str())
        .basic_auth(
            &flow.begin.consumer_key,
            Some(flow.begin.consumer_secret.expose_secret()),
        )
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body.expose_secret().to_string())
        .send()
        .map_err(|e| format!("the code exchange at {url} failed: {}", e.without_url()))?;
    let status = resp.status();
    if !status.is_success() {
        let code = resp
            .json::<Refused>()
            .map(|r| shown_code(&r.error))
            .unwrap_or_else(|_| "no OAuth error code".into());
        return Err(format!(
            "{url} refused the authorization code ({status}, {code}): check the consumer's key \
             and secret, and that its callback URL is {}",
            flow.redirect_uri
        ));
    }
    let tokens: Tokens = resp
        .json()
        .map_err(|_| format!("{url} answered the code exchange with no token JSON"))?;
    tokens
        .refresh_token
        .filter(|t| !t.is_empty())
        .map(SecretString::from)
        .ok_or_else(|| {
            format!("{url} answered no refresh_token: reposafe needs one to keep access")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authorize_url_defaults_to_the_token_urls_sibling() {
        let u = authorize_url(
            None,
            "https://bitbucket.org/site/oauth2/access_token",
            "key 1",
            "st",
            "http://127.0.0.1:8080/oauth/callback",
        )
        .expect("url");
        assert_eq!(
            u,
            "https://bitbucket.org/site/oauth2/authorize?client_id=key+1&response_type=code&state=st&redirect_uri=http%3A%2F%2F127.0.0.1%3A8080%2Foauth%2Fcallback"
        );
        let u = authorize_url(
            Some("http://h/auth"),
            "x",
            "k",
            "s",
            "http://d/oauth/callback",
        )
        .expect("url");
        assert!(u.starts_with("http://h/auth?client_id=k&"), "{u}");
        assert!(authorize_url(Some("ftp://h/"), "x", "k", "s", "r").is_err());
    }

    #[test]
    fn a_state_works_once_and_expires() {
        let flows = PendingFlows::default();
        let flow = |started| Flow {
            begin: OAuthBegin {
                name: "n".into(),
                provider: "cloud".into(),
                settings: BTreeMap::new(),
                consumer_key: "k".into(),
                consumer_secret: SecretString::from("s".to_string()),
                redirect_uri: None,
                read_only: false,
                allow_restore: false,
                rate_limit: None,
            },
            provider: "bitbucket-cloud".into(),
            redirect_uri: String::new(),
            token_url: String::new(),
            started,
            actor: Actor::Token,
        };
        flows
            .insert("a".into(), flow(Instant::now()))
            .expect("kept");
        assert!(flows.take("a").is_ok());
        let again = flows.take("a").err().expect("used");
        assert!(again.to_string().contains("already used"), "{again}");
        if let Some(old) = Instant::now().checked_sub(FLOW_LIFETIME + Duration::from_secs(1)) {
            flows.insert("b".into(), flow(old)).expect("kept");
            let e = flows.take("b").err().expect("expired");
            assert!(e.to_string().contains("expired"), "{e}");
        }
        for i in 0..MAX_PENDING {
            flows
                .insert(format!("s{i}"), flow(Instant::now()))
                .expect("kept");
        }
        let full = flows
            .insert("x".into(), flow(Instant::now()))
            .expect_err("full");
        assert!(full.to_string().contains("already waiting"), "{full}");
        assert_eq!(shown_code("access_denied"), "access_denied");
        assert_eq!(shown_code("<script>"), "an unrecognised error");
    }
}
