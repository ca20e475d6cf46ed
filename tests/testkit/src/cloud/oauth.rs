//! The double's OAuth 2.0 endpoints, as Bitbucket Cloud documents them:
//! `GET /site/oauth2/authorize?client_id&response_type=code&state[&redirect_uri]`
//! (consent is automatic: a 302 to the consumer's registered callback URL with
//! `code` and `state`, or `error=access_denied` in deny mode) and
//! `POST /site/oauth2/access_token` with HTTP Basic `key:secret` (or `client_id` and
//! `client_secret` in the form) for the `client_credentials`, `authorization_code`
//! (a code works once, for 10 minutes, and needs the authorize request's
//! `redirect_uri` again when that had one) and `refresh_token` grants. Answers are
//! JSON: `access_token`, `scopes`, `token_type` (`bearer`), `expires_in`, `state`
//! (the grant type) and `refresh_token`; errors are RFC 6749 `error` and
//! `error_description`.

use super::{admit, json_response, parse_auth, random_token, too_many, Cred, Outcome, Shared};
use super::{OAuthToken, MAX_FORM_BODY};
use crate::httputil::{self, Body};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, LOCATION};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an authorization code can be exchanged.
pub const CODE_LIFETIME: Duration = Duration::from_secs(600);

/// An authorization code not yet exchanged.
struct AuthCode {
    key: String,
    /// The authorize request's `redirect_uri`, which the exchange must repeat.
    redirect_uri: Option<String>,
    issued: Instant,
}

/// The authorization code grant's state.
#[derive(Default)]
pub(super) struct OAuthState {
    codes: HashMap<String, AuthCode>,
    /// The user denies access on the consent page.
    pub(super) deny: bool,
    /// A refresh token works once.
    pub(super) rotate_refresh: bool,
    /// Grants issued, by `grant_type`.
    pub(super) grants: BTreeMap<String, usize>,
    /// Every access and refresh token issued.
    pub(super) issued: Vec<String>,
}

fn oauth_error(status: StatusCode, code: &str, desc: &str) -> Response<Body> {
    json_response(status, &json!({"error": code, "error_description": desc}))
}

/// An error page of the authorize endpoint (no redirect: the client is unknown or
/// the redirect URI is not the consumer's).
fn page(status: StatusCode, text: &str) -> Outcome {
    let mut r = Response::new(httputil::full(format!(
        "<html><body><p>{text}</p></body></html>"
    )));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Outcome::api(r, None)
}

fn redirect(to: &str, params: &[(&str, &str)]) -> Response<Body> {
    let mut url = to.to_string();
    let mut sep = if url.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        url.push(sep);
        url.push_str(k);
        url.push('=');
        url.push_str(&httputil::percent_encode(v));
        sep = '&';
    }
    let mut r = Response::new(httputil::full(String::new()));
    *r.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(&url) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

/// `GET /site/oauth2/authorize`.
pub(super) fn authorize(
    shared: &Arc<Shared>,
    req: &Request<Incoming>,
    params: &[(String, String)],
) -> Outcome {
    if req.method() != Method::GET {
        return page(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed");
    }
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut st = shared.lock();
    let client_id = get("client_id").unwrap_or_default();
    let Some(consumer) = st.consumers.iter().find(|c| c.key == client_id) else {
        return page(StatusCode::BAD_REQUEST, "Invalid client_id");
    };
    let Some(callback) = consumer.callback.clone() else {
        return page(
            StatusCode::BAD_REQUEST,
            "This OAuth consumer has no callback URL",
        );
    };
    let principal = consumer.principal.clone();
    let given = get("redirect_uri");
    if given.as_deref().is_some_and(|r| !r.starts_with(&callback)) {
        return page(
            StatusCode::BAD_REQUEST,
            "The redirect_uri does not match the consumer's callback URL",
        );
    }
    let target = given.clone().unwrap_or(callback);
    let state = get("state").unwrap_or_default();
    let with_state = |mut p: Vec<(&'static str, String)>| {
        if !state.is_empty() {
            p.push(("state", state.clone()));
        }
        p
    };
    let params = if get("response_type").as_deref() != Some("code") {
        with_state(vec![("error", "unsupported_response_type".into())])
    } else if st.oauth.deny {
        with_state(vec![
            ("error", "access_denied".into()),
            ("error_description", "The user denied access".into()),
        ])
    } else {
        let code = random_token(32);
        st.oauth.codes.insert(
            code.clone(),
            AuthCode {
                key: client_id,
                redirect_uri: given,
                issued: Instant::now(),
            },
        );
        with_state(vec![("code", code)])
    };
    let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Outcome::api(redirect(&target, &pairs), Some(principal))
}

/// Checks an `authorization_code` grant's code (used up whatever the outcome).
fn take_code(
    st: &mut super::State,
    key: &str,
    form: &[(String, String)],
) -> Result<(), &'static str> {
    let get = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let code = get("code").ok_or("Missing code")?;
    let found = st
        .oauth
        .codes
        .remove(code)
        .ok_or("Invalid authorization code")?;
    if found.key != key || found.issued.elapsed() > CODE_LIFETIME {
        return Err("Invalid authorization code");
    }
    if found.redirect_uri.is_some() && found.redirect_uri.as_deref() != get("redirect_uri") {
        return Err("redirect_uri does not match the authorization request");
    }
    Ok(())
}

/// `POST /site/oauth2/access_token`.
pub(super) async fn token(shared: &Arc<Shared>, req: Request<Incoming>) -> Outcome {
    if req.method() != Method::POST {
        return Outcome::api(
            oauth_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                "Method not allowed",
            ),
            None,
        );
    }
    let cred = parse_auth(req.headers());
    let body = match http_body_util::Limited::new(req.into_body(), MAX_FORM_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Outcome::api(
                oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Body too large or unreadable",
                ),
                None,
            )
        }
    };
    let Some(form) = std::str::from_utf8(&body)
        .ok()
        .and_then(httputil::parse_form)
    else {
        return Outcome::api(
            oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Malformed form body",
            ),
            None,
        );
    };
    let get = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let (key, secret) = match cred {
        Cred::Basic(k, s) => (k, s),
        _ => match (get("client_id"), get("client_secret")) {
            (Some(k), Some(s)) => (k, s),
            _ => (String::new(), String::new()),
        },
    };
    let mut st = shared.lock();
    let Some(consumer) = st
        .consumers
        .iter()
        .find(|c| c.key == key && c.secret == secret)
    else {
        return Outcome::api(
            oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Invalid OAuth client credentials",
            ),
            None,
        );
    };
    let principal = consumer.principal.clone();
    let expires_in = consumer.expires_in;
    if !admit(&mut st, &principal) {
        return Outcome::api(too_many(), Some(principal));
    }
    let grant = get("grant_type").unwrap_or_default();
    let refused = |code: &str, desc: &str| {
        Outcome::api(
            oauth_error(StatusCode::BAD_REQUEST, code, desc),
            Some(principal.clone()),
        )
    };
    match grant.as_str() {
        "client_credentials" => {}
        "authorization_code" => {
            if let Err(why) = take_code(&mut st, &key, &form) {
                return refused("invalid_grant", why);
            }
        }
        "refresh_token" => {
            let used = get("refresh_token").unwrap_or_default();
            if st.refresh_tokens.get(&used) != Some(&key) {
                return refused("invalid_grant", "Invalid refresh_token");
            }
            if st.oauth.rotate_refresh {
                st.refresh_tokens.remove(&used);
            }
        }
        "" => return refused("invalid_request", "Missing grant_type"),
        other => {
            return refused(
                "unsupported_grant_type",
                &format!("Unsupported grant type: {other}"),
            )
        }
    }
    let access = random_token(64);
    let refresh = random_token(32);
    st.oauth_tokens.insert(
        access.clone(),
        OAuthToken {
            principal: principal.clone(),
            expires_at: Instant::now() + Duration::from_secs(expires_in),
        },
    );
    st.refresh_tokens.insert(refresh.clone(), key);
    *st.oauth.grants.entry(grant.clone()).or_default() += 1;
    st.oauth.issued.extend([access.clone(), refresh.clone()]);
    let body = json!({
        "access_token": access,
        "scopes": "repository account",
        "token_type": "bearer",
        "expires_in": expires_in,
        "state": grant,
        "refresh_token": refresh,
    });
    Outcome::api(json_response(StatusCode::OK, &body), Some(principal))
}
