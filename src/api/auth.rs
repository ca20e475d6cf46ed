//! Who a request comes from, and whether to let it in. Two ways in: the admin
//! token as `Authorization: Bearer` (API clients, the CLI; nothing else needed),
//! or a dashboard session cookie (a browser). A cookie is something a browser adds
//! on its own, so a cookie-authenticated request must also come from this daemon's
//! own pages: a cross-site `Origin`/`Sec-Fetch-Site` is refused with 403, and a
//! request that changes anything must carry the session's CSRF token (the
//! `X-CSRF-Token` header, or the `csrf` field of a form).

use super::session::{Session, SESSION_COOKIE};
use super::{error_response, read_limited, Api, ApiBody, ApiError, ReqBody};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use secrecy::ExposeSecret;

/// How a request was authenticated (kept in the request's extensions).
#[derive(Clone)]
pub enum Signed {
    /// The admin token as a bearer header.
    Bearer,
    /// A dashboard session cookie.
    Session(Session),
}

impl Signed {
    /// Who the audit log names for this request's changes.
    pub fn actor(&self) -> crate::engine::audit::Actor {
        use crate::engine::audit::Actor;
        match self {
            Signed::Bearer => Actor::Token,
            Signed::Session(s) => Actor::Session(s.tag()),
        }
    }
}

/// Forms (the dashboard's sign-out) are small.
const FORM_LIMIT: usize = 64 << 10;

/// Constant-time equality of two secrets.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `presented` is the admin token.
pub fn token_matches(api: &Api, presented: &str) -> bool {
    ct_eq(
        api.token.expose_secret().as_bytes(),
        presented.trim().as_bytes(),
    )
}

pub fn header<'a, B>(req: &'a Request<B>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The value of a cookie.
pub fn cookie<'a, B>(req: &'a Request<B>, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the method changes something.
pub fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Why a browser request is refused as cross-site, if it is: `Sec-Fetch-Site`
/// `cross-site` (or `same-site`, e.g. another port on this host, for a request that
/// changes something), or an `Origin` other than this daemon's own.
pub fn cross_site<B>(api: &Api, req: &Request<B>) -> Option<String> {
    let writes = changes_state(req.method());
    match header(req, "sec-fetch-site") {
        Some("cross-site") => {
            return Some("cross-site request refused (Sec-Fetch-Site: cross-site)".into())
        }
        Some("same-site") if writes => {
            return Some(
                "request from another site of this host refused (Sec-Fetch-Site: same-site)".into(),
            )
        }
        _ => {}
    }
    let origin = header(req, "origin")?;
    let scheme = if api.tls { "https" } else { "http" };
    let own = header(req, "host").map(|h| format!("{scheme}://{h}"));
    match own {
        Some(own) if own.eq_ignore_ascii_case(origin.trim_end_matches('/')) => None,
        _ => Some(format!(
            "request from origin {origin:?} refused: only this daemon's own pages ({}) may use the dashboard session",
            own.as_deref().unwrap_or("no Host header")
        )),
    }
}

fn forbidden(message: impl Into<String>) -> Response<ApiBody> {
    error_response(ApiError::new(StatusCode::FORBIDDEN, message))
}

fn unauthorized<B>(api: &Api, req: &Request<B>) -> Response<ApiBody> {
    if req.method() == Method::GET && super::pages::is_page(req.method(), req.uri().path()) {
        return super::handlers::login_page(api, None);
    }
    let mut r = error_response(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing or wrong admin token: send `Authorization: Bearer <token>` (the token is in the data dir's api-token file)",
    ));
    if let Ok(v) = "Bearer realm=\"reposafe\"".parse() {
        r.headers_mut().insert(hyper::header::WWW_AUTHENTICATE, v);
    }
    r
}

/// Lets an authenticated request in (with [`Signed`] in its extensions), or
/// answers it: 401 without a valid token or session, 403 for a cross-site or
/// CSRF-less cookie request.
pub async fn admit(
    api: &Api,
    mut req: Request<ReqBody>,
) -> Result<Request<ReqBody>, Response<ApiBody>> {
    if let Some(auth) = header(&req, "authorization") {
        // An Authorization header decides alone, even next to a cookie.
        let ok = auth
            .strip_prefix("Bearer ")
            .is_some_and(|t| token_matches(api, t));
        if !ok {
            return Err(unauthorized(api, &req));
        }
        req.extensions_mut().insert(Signed::Bearer);
        return Ok(req);
    }
    let Some(session) = cookie(&req, SESSION_COOKIE).and_then(|id| api.sessions.get(id)) else {
        return Err(unauthorized(api, &req));
    };
    if let Some(why) = cross_site(api, &req) {
        return Err(forbidden(why));
    }
    if changes_state(req.method()) {
        req = check_csrf(api, req, &session).await?;
    }
    req.extensions_mut().insert(Signed::Session(session));
    Ok(req)
}

fn is_form<B>(req: &Request<B>) -> bool {
    header(req, "content-type").is_some_and(|t| {
        t.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    })
}

/// The session's CSRF token in the `X-CSRF-Token` header or the form's `csrf`
/// field; a form body read here is handed on unchanged.
async fn check_csrf(
    api: &Api,
    req: Request<ReqBody>,
    session: &Session,
) -> Result<Request<ReqBody>, Response<ApiBody>> {
    if let Some(t) = header(&req, "x-csrf-token") {
        return if ct_eq(t.trim().as_bytes(), session.csrf.as_bytes()) {
            Ok(req)
        } else {
            Err(forbidden("wrong X-CSRF-Token for this session"))
        };
    }
    if !is_form(&req) {
        return Err(forbidden(
            "a signed-in browser request that changes something needs the session's \
             X-CSRF-Token header (the dashboard page carries it in <meta name=csrf-token>)",
        ));
    }
    let (parts, body) = req.into_parts();
    let bytes = read_limited(api, body, FORM_LIMIT, &parts.headers)
        .await
        .map_err(error_response)?;
    let ok = url::form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "csrf")
        .is_some_and(|(_, v)| ct_eq(v.trim().as_bytes(), session.csrf.as_bytes()));
    if !ok {
        return Err(forbidden("the form lacks this session's csrf field"));
    }
    let body = Full::new(bytes).map_err(|e| match e {}).boxed();
    Ok(Request::from_parts(parts, body))
}
