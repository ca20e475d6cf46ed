//! Turning a stored credential into `Authorization` header values, for the REST API
//! and for git, the way the provider says each kind is applied. OAuth consumers are
//! exchanged for access tokens (client-credentials grant), OAuth authorizations (the
//! dashboard's "Connect") by their refresh token (refresh-token grant); tokens are
//! cached until shortly before they expire and fetched again after a 401. A refresh
//! token the server rotates is saved in the [`CredentialStore`] the engine gave, which
//! reseals it, and read back from it when another holder rotated it. Header values are secrets and stay in `SecretString`.

use super::ProviderError;
use crate::vault::{Credential, CredentialKind, OAuthGrant};
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a credential is presented (host-side copy of the WIT `auth-scheme`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type", content = "user")]
pub enum AuthScheme {
    /// Basic with the credential's own identity as user name.
    BasicIdentity,
    /// Basic with a fixed user name (e.g. `x-token-auth`).
    BasicFixedUser(String),
    /// Bearer.
    Bearer,
}

struct OAuthToken {
    token: SecretString,
    expires: Instant,
}

/// Where an OAuth authorization is kept: a refresh token the server rotated is
/// saved, and the stored credential is read again when the one in hand was refused
/// (another job may have rotated it). Errors say why, never a secret.
pub trait CredentialStore: Send + Sync {
    fn save(&self, cred: &Credential) -> Result<(), String>;
    fn load(&self) -> Result<Credential, String>;
}

/// Produces header values for one credential.
pub struct Authenticator {
    /// Its secret changes when the server rotates an OAuth refresh token.
    cred: Mutex<Credential>,
    kind: CredentialKind,
    api: AuthScheme,
    git: AuthScheme,
    oauth_url: Option<String>,
    oauth: Mutex<Option<OAuthToken>>,
    client: reqwest::blocking::Client,
    store: Option<Arc<dyn CredentialStore>>,
}

/// The token endpoint's answer (RFC 6749 §5.1, as Bitbucket sends it).
#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
    refresh_token: Option<String>,
}

/// How long an access token is used at most, whatever its endpoint says.
const TOKEN_LIFE_MAX: Duration = Duration::from_secs(86_400);

/// When a token issued at `now` for `expires_in` seconds (an hour when the endpoint
/// says nothing) is to be refreshed: at most [`TOKEN_LIFE_MAX`] later, so a figure too
/// large for the clock cannot panic.
fn token_expiry(now: Instant, expires_in: Option<u64>) -> Instant {
    now + Duration::from_secs(expires_in.unwrap_or(3600)).min(TOKEN_LIFE_MAX)
}

/// A token endpoint's error answer (RFC 6749 §5.2): the code, never a secret.
#[derive(serde::Deserialize)]
struct TokenError {
    error: String,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("kind", &self.kind)
            .field("api", &self.api)
            .field("git", &self.git)
            .finish_non_exhaustive()
    }
}

fn basic(user: &str, secret: &str) -> SecretString {
    let raw = format!("{user}:{secret}");
    SecretString::from(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw.as_bytes())
    ))
}

impl Authenticator {
    /// `oauth_url` is where OAuth consumer credentials are exchanged for tokens.
    pub fn new(
        cred: Credential,
        api: AuthScheme,
        git: AuthScheme,
        oauth_url: Option<String>,
        client: reqwest::blocking::Client,
    ) -> Authenticator {
        Authenticator {
            kind: cred.kind,
            cred: Mutex::new(cred),
            api,
            git,
            oauth_url,
            oauth: Mutex::new(None),
            client,
            store: None,
        }
    }

    /// Where the credential is kept (a rotated refresh token is saved there).
    pub fn with_store(mut self, store: Arc<dyn CredentialStore>) -> Authenticator {
        self.store = Some(store);
        self
    }

    pub fn kind(&self) -> CredentialKind {
        self.kind
    }

    /// The credential as it is now (with a refresh token the server rotated).
    pub fn credential(&self) -> Result<Credential, ProviderError> {
        self.cred
            .lock()
            .map(|c| c.clone())
            .map_err(|_| ProviderError::Auth("credential lock poisoned".into()))
    }

    /// The value of `Authorization` for API calls.
    pub fn api_header(&self) -> Result<SecretString, ProviderError> {
        self.header(&self.api)
    }

    /// The value of `Authorization` for git over HTTPS.
    pub fn git_header(&self) -> Result<SecretString, ProviderError> {
        self.header(&self.git)
    }

    /// Forgets a cached OAuth token (after a 401), so the next header fetches a new one.
    pub fn invalidate(&self) {
        if let Ok(mut g) = self.oauth.lock() {
            *g = None;
        }
    }

    fn header(&self, scheme: &AuthScheme) -> Result<SecretString, ProviderError> {
        let secret = if self.kind.is_oauth() {
            self.oauth_token()?
        } else {
            self.credential()?.secret
        };
        Ok(match scheme {
            AuthScheme::Bearer => SecretString::from(format!("Bearer {}", secret.expose_secret())),
            AuthScheme::BasicFixedUser(user) => basic(user, secret.expose_secret()),
            AuthScheme::BasicIdentity => {
                let cred = self.credential()?;
                let id = cred.identity.as_deref().ok_or_else(|| {
                    ProviderError::Auth(format!(
                        "the {} credential has no user name/e-mail, which this provider needs",
                        self.kind
                    ))
                })?;
                basic(id, secret.expose_secret())
            }
        })
    }

    fn oauth_token(&self) -> Result<SecretString, ProviderError> {
        let mut guard = self
            .oauth
            .lock()
            .map_err(|_| ProviderError::Auth("OAuth token cache poisoned".into()))?;
        if let Some(t) = guard.as_ref() {
            if t.expires > Instant::now() + Duration::from_secs(60) {
                return Ok(t.token.clone());
            }
        }
        let url = self.oauth_url.as_deref().ok_or_else(|| {
            ProviderError::Auth("this provider does not support OAuth consumers".into())
        })?;
        let mut cred = self.credential()?;
        let mut reloaded = false;
        let body = loop {
            match self.token_request(url, &cred)? {
                Ok(body) => break body,
                Err(refused) => match self.stored_instead_of(&cred).filter(|_| !reloaded) {
                    // Another job (or process) rotated the refresh token meanwhile.
                    Some(stored) => {
                        reloaded = true;
                        cred = stored;
                    }
                    None => return Err(ProviderError::Unauthorized(refused)),
                },
            }
        };
        self.keep(cred, body.refresh_token);
        let token = SecretString::from(body.access_token);
        *guard = Some(OAuthToken {
            token: token.clone(),
            expires: token_expiry(Instant::now(), body.expires_in),
        });
        Ok(token)
    }

    /// One request to the token endpoint with `cred`: the tokens, or (inner error)
    /// why the endpoint refused them (400/401).
    fn token_request(
        &self,
        url: &str,
        cred: &Credential,
    ) -> Result<Result<TokenResponse, String>, ProviderError> {
        let key = cred.identity.clone().unwrap_or_default();
        let (client_secret, body) = if self.kind == CredentialKind::OauthAuthorization {
            let grant = OAuthGrant::parse(&cred.secret).map_err(|e| {
                ProviderError::Auth(format!("the OAuth authorization of {key:?}: {e}"))
            })?;
            let body = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("grant_type", "refresh_token")
                .append_pair("refresh_token", &grant.refresh_token)
                .finish();
            (SecretString::from(grant.client_secret), body)
        } else {
            (cred.secret.clone(), "grant_type=client_credentials".into())
        };
        let body = SecretString::from(body);
        let resp = self
            .client
            .post(url)
            .header(
                "Authorization",
                basic(&key, client_secret.expose_secret()).expose_secret(),
            )
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body.expose_secret().to_string())
            .send()
            .map_err(|e| {
                ProviderError::Auth(format!(
                    "OAuth token request to {url} failed: {}",
                    e.without_url()
                ))
            })?;
        let status = resp.status();
        if status.as_u16() == 401 || status.as_u16() == 400 {
            let code = resp.json::<TokenError>().map(|e| e.error).ok();
            return Ok(Err(self.refused(url, &key, status, code)));
        }
        if !status.is_success() {
            return Err(ProviderError::Auth(format!(
                "OAuth token request to {url} answered {status}"
            )));
        }
        resp.json().map(Ok).map_err(|_| {
            ProviderError::Auth(format!(
                "OAuth token response from {url} has no access_token"
            ))
        })
    }

    /// The stored credential, when it differs from `used` (an authorization whose
    /// refresh token was rotated by another holder).
    fn stored_instead_of(&self, used: &Credential) -> Option<Credential> {
        let store = self.store.as_ref()?;
        let stored = store
            .load()
            .map_err(|e| tracing::warn!("cannot read the stored OAuth authorization: {e}"))
            .ok()?;
        let token = |c: &Credential| OAuthGrant::parse(&c.secret).ok().map(|g| g.refresh_token);
        let differs = token(&stored).is_some() && token(&stored) != token(used);
        differs.then_some(stored)
    }

    /// Why the token endpoint refused: for an authorization, it was revoked or has
    /// expired (connect again); for a consumer, its key or secret is wrong.
    fn refused(
        &self,
        url: &str,
        key: &str,
        status: reqwest::StatusCode,
        code: Option<String>,
    ) -> String {
        let code = code
            .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_graphic()))
            .map(|c| format!(", {c}"))
            .unwrap_or_default();
        if self.kind == CredentialKind::OauthAuthorization {
            format!(
                "the OAuth authorization of consumer {key:?} was refused at {url} ({status}{code}): \
                 it was revoked or has expired, or the consumer's secret changed; connect again \
                 (`reposafe connection rotate`, or the dashboard's Connect)"
            )
        } else {
            format!(
                "the OAuth consumer {key:?} was refused at {url} ({status}{code}); check its key and secret"
            )
        }
    }

    /// Keeps `cred` (the credential that worked), with the refresh token the server
    /// sent in place of the one used; a changed one is stored (the old one may no
    /// longer work).
    fn keep(&self, cred: Credential, refresh: Option<String>) {
        let mut updated = cred;
        if let (CredentialKind::OauthAuthorization, Some(refresh)) = (self.kind, refresh) {
            if let Ok(old) = OAuthGrant::parse(&updated.secret) {
                if old.refresh_token != refresh {
                    let grant = OAuthGrant {
                        client_secret: old.client_secret,
                        refresh_token: refresh,
                    };
                    updated.secret = grant.to_secret();
                    self.save(&updated);
                }
            }
        }
        if let Ok(mut c) = self.cred.lock() {
            *c = updated;
        }
    }

    fn save(&self, cred: &Credential) {
        if let Some(store) = &self.store {
            if let Err(e) = store.save(cred) {
                tracing::warn!(
                    "the OAuth server rotated the refresh token of consumer {:?}, but the new one could not be stored: {e}",
                    cred.identity.as_deref().unwrap_or_default()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_refreshed_when_its_endpoint_says_and_at_most_a_day_later() {
        let now = Instant::now();
        assert_eq!(
            token_expiry(now, Some(7200)),
            now + Duration::from_secs(7200)
        );
        assert_eq!(token_expiry(now, None), now + Duration::from_secs(3600));
        assert_eq!(token_expiry(now, Some(u64::MAX)), now + TOKEN_LIFE_MAX);
    }

    fn auth(kind: CredentialKind, identity: Option<&str>, api: AuthScheme) -> Authenticator {
        Authenticator::new(
            Credential {
                kind,
                identity: identity.map(str::to_string),
                secret: SecretString::from("s3cret".to_string()),
            },
            api,
            AuthScheme::BasicFixedUser("x-token-auth".into()),
            None,
            reqwest::blocking::Client::new(),
        )
    }

    #[test]
    fn schemes_produce_the_right_headers() {
        let a = auth(
            CredentialKind::ApiToken,
            Some("me@acme.test"),
            AuthScheme::BasicIdentity,
        );
        let expect = base64::engine::general_purpose::STANDARD.encode("me@acme.test:s3cret");
        assert_eq!(
            a.api_header().unwrap().expose_secret(),
            format!("Basic {expect}")
        );
        let git = base64::engine::general_purpose::STANDARD.encode("x-token-auth:s3cret");
        assert_eq!(
            a.git_header().unwrap().expose_secret(),
            format!("Basic {git}")
        );
        let b = auth(CredentialKind::AccessToken, None, AuthScheme::Bearer);
        assert_eq!(b.api_header().unwrap().expose_secret(), "Bearer s3cret");
        assert!(!format!("{b:?}").contains("s3cret"));
    }

    /// A refresh token from the double (any grant answers one).
    fn refresh_token(server: &reposafe_testkit::CloudServer, url: &str) -> String {
        #[derive(serde::Deserialize)]
        struct T {
            refresh_token: String,
        }
        let t: T = reqwest::blocking::Client::new()
            .post(url)
            .basic_auth("ck", Some("cs"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .and_then(|r| r.json())
            .unwrap();
        assert_eq!(server.oauth_grants().get("client_credentials"), Some(&1));
        t.refresh_token
    }

    fn authorization(
        url: &str,
        refresh: &str,
        saved: Arc<Mutex<Vec<Credential>>>,
    ) -> Authenticator {
        let grant = OAuthGrant {
            client_secret: "cs".into(),
            refresh_token: refresh.into(),
        };
        let cred = Credential {
            kind: CredentialKind::OauthAuthorization,
            identity: Some("ck".into()),
            secret: grant.to_secret(),
        };
        Authenticator::new(
            cred,
            AuthScheme::Bearer,
            AuthScheme::BasicFixedUser("x-token-auth".into()),
            Some(url.to_string()),
            reqwest::blocking::Client::new(),
        )
        .with_store(Arc::new(Saved(saved)))
    }

    /// A store keeping every credential saved; the last one is the stored one.
    struct Saved(Arc<Mutex<Vec<Credential>>>);

    impl CredentialStore for Saved {
        fn save(&self, cred: &Credential) -> Result<(), String> {
            self.0.lock().unwrap().push(cred.clone());
            Ok(())
        }
        fn load(&self) -> Result<Credential, String> {
            self.0
                .lock()
                .unwrap()
                .last()
                .cloned()
                .ok_or("nothing stored".into())
        }
    }

    fn refreshes(server: &reposafe_testkit::CloudServer) -> usize {
        server
            .oauth_grants()
            .get("refresh_token")
            .copied()
            .unwrap_or(0)
    }

    /// An OAuth authorization's access token is fetched by its refresh token, kept
    /// until shortly before it expires, fetched again after a 401 (`invalidate`) and
    /// when its `expires_in` is near; a rotated refresh token is handed to the saver
    /// and used from then on.
    #[test]
    fn an_authorization_refreshes_its_access_token_and_keeps_a_rotated_refresh_token() {
        let server = reposafe_testkit::CloudServer::start();
        server.add_oauth_consumer("acct-1", "ck", "cs", 3600);
        server.rotate_refresh_tokens(true);
        let url = format!("{}/site/oauth2/access_token", server.base_url());
        let first = refresh_token(&server, &url);
        let saved = Arc::new(Mutex::new(Vec::new()));
        let a = authorization(&url, &first, saved.clone());
        let h1 = a.api_header().unwrap();
        assert!(h1.expose_secret().starts_with("Bearer "));
        assert_eq!(a.api_header().unwrap().expose_secret(), h1.expose_secret());
        assert_eq!(
            refreshes(&server),
            1,
            "the token is cached until it expires"
        );
        // The server rotated the refresh token: stored and used from now on.
        let stored = saved.lock().unwrap().clone();
        assert_eq!(stored.len(), 1);
        let grant = OAuthGrant::parse(&stored[0].secret).unwrap();
        assert_ne!(grant.refresh_token, first);
        assert_eq!(grant.client_secret, "cs");
        assert_eq!(
            OAuthGrant::parse(&a.credential().unwrap().secret)
                .unwrap()
                .refresh_token,
            grant.refresh_token
        );
        // A 401 (`invalidate`) fetches a new token with the rotated refresh token.
        a.invalidate();
        let h2 = a.api_header().unwrap();
        assert_ne!(h2.expose_secret(), h1.expose_secret());
        assert_eq!(refreshes(&server), 2);
        assert_eq!(saved.lock().unwrap().len(), 2);
        // A holder of the used refresh token (another job) reads the stored one
        // when its own is refused.
        let other = authorization(&url, &first, saved.clone());
        assert!(
            other.api_header().is_ok(),
            "the stored refresh token is used"
        );
        assert_eq!(refreshes(&server), 3);
        assert_eq!(saved.lock().unwrap().len(), 3);
        // Without a newer stored one, the used refresh token fails: a clear error,
        // no secret in it.
        let stale = authorization(&url, &first, Arc::new(Mutex::new(Vec::new())));
        let e = stale.api_header().unwrap_err().to_string();
        assert!(
            e.contains("revoked or has expired") && e.contains("invalid_grant"),
            "{e}"
        );
        assert!(!e.contains(&first) && !e.contains("cs\""), "{e}");

        // Through a gate: a 401 (the token ended early) is answered by a new token and
        // the request sent again.
        let latest = OAuthGrant::parse(&Saved(saved.clone()).load().unwrap().secret).unwrap();
        let auth = Arc::new(authorization(
            &url,
            &latest.refresh_token,
            Arc::new(Mutex::new(Vec::new())),
        ));
        auth.invalidate();
        server.grant("acct-1", "acme");
        let origin = url::Url::parse(&server.base_url()).unwrap().origin();
        let policy = crate::providers::http::RetryPolicy::default();
        let client = crate::providers::http::client(&policy);
        let gate = crate::providers::HttpGate::new(client, vec![origin], auth, policy);
        let get = crate::providers::http::Request {
            method: "GET".into(),
            url: format!("{}/2.0/user", server.base_url()),
            headers: Vec::new(),
            body: None,
        };
        assert_eq!(gate.send(&get).unwrap().status, 200);
        let before = refreshes(&server);
        server.expire_oauth_access_tokens();
        assert_eq!(gate.send(&get).unwrap().status, 200, "renewed after a 401");
        assert_eq!(refreshes(&server), before + 1);

        // A token whose expires_in is within the minute of margin is fetched anew each time.
        let short = reposafe_testkit::CloudServer::start();
        short.add_oauth_consumer("acct-2", "ck", "cs", 30);
        let url = format!("{}/site/oauth2/access_token", short.base_url());
        let a = authorization(&url, &refresh_token(&short, &url), saved);
        a.git_header().unwrap();
        a.git_header().unwrap();
        assert_eq!(refreshes(&short), 2);
    }
}
