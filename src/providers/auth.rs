//! Turning a stored credential into `Authorization` header values, for the REST API
//! and for git, the way the provider says each kind is applied. OAuth consumers are
//! exchanged for access tokens (client-credentials grant) and refreshed before they
//! expire. Header values are secrets and stay in `SecretString`.

use super::ProviderError;
use crate::vault::{Credential, CredentialKind};
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use std::sync::Mutex;
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

/// Produces header values for one credential.
pub struct Authenticator {
    cred: Credential,
    api: AuthScheme,
    git: AuthScheme,
    oauth_url: Option<String>,
    oauth: Mutex<Option<OAuthToken>>,
    client: reqwest::blocking::Client,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("cred", &self.cred)
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
            cred,
            api,
            git,
            oauth_url,
            oauth: Mutex::new(None),
            client,
        }
    }

    pub fn kind(&self) -> CredentialKind {
        self.cred.kind
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

    fn secret(&self) -> Result<SecretString, ProviderError> {
        if self.cred.kind == CredentialKind::OauthConsumer {
            self.oauth_token()
        } else {
            Ok(self.cred.secret.clone())
        }
    }

    fn header(&self, scheme: &AuthScheme) -> Result<SecretString, ProviderError> {
        let secret = self.secret()?;
        Ok(match scheme {
            AuthScheme::Bearer => SecretString::from(format!("Bearer {}", secret.expose_secret())),
            AuthScheme::BasicFixedUser(user) => basic(user, secret.expose_secret()),
            AuthScheme::BasicIdentity => {
                let id = self.cred.identity.as_deref().ok_or_else(|| {
                    ProviderError::Auth(format!(
                        "the {} credential has no user name/e-mail, which this provider needs",
                        self.cred.kind
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
        let key = self.cred.identity.as_deref().unwrap_or_default();
        let resp = self
            .client
            .post(url)
            .header(
                "Authorization",
                basic(key, self.cred.secret.expose_secret()).expose_secret(),
            )
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .map_err(|e| {
                ProviderError::Auth(format!(
                    "OAuth token request to {url} failed: {}",
                    e.without_url()
                ))
            })?;
        let status = resp.status();
        if status.as_u16() == 401 || status.as_u16() == 400 {
            return Err(ProviderError::Unauthorized(format!(
                "the OAuth consumer {key:?} was refused at {url} ({status}); check its key and secret"
            )));
        }
        if !status.is_success() {
            return Err(ProviderError::Auth(format!(
                "OAuth token request to {url} answered {status}"
            )));
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            access_token: String,
            expires_in: Option<u64>,
        }
        let body: TokenResponse = resp.json().map_err(|_| {
            ProviderError::Auth(format!(
                "OAuth token response from {url} has no access_token"
            ))
        })?;
        let token = SecretString::from(body.access_token);
        *guard = Some(OAuthToken {
            token: token.clone(),
            expires: Instant::now() + Duration::from_secs(body.expires_in.unwrap_or(3600)),
        });
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
