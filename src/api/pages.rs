//! Serving the dashboard's pages: finds the page route (`dashboard::find`), reads
//! a form body, runs the page off the async threads with the signed-in session's
//! CSRF token, and turns its answer into HTML or a 303 redirect. Authentication
//! and the CSRF check happened before (`auth::admit`).

use super::auth::{header, Signed};
use super::{blocking, read_limited, reply, Api, ApiBody, ApiError, ReqBody};
use crate::dashboard::{self, layout, Answer, Ctx, Form, PageError};
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use std::sync::Arc;

/// Forms are small (a CA bundle is the largest field).
const FORM_LIMIT: usize = 1 << 20;

/// Whether `path` is a dashboard page (for any method).
pub fn is_page(method: &Method, path: &str) -> bool {
    !path.starts_with("/api/") && !matches!(dashboard::find(method, path), Err(false))
}

/// The embedded assets, served without signing in (the sign-in page uses them too).
pub fn asset(path: &str) -> Option<Response<ApiBody>> {
    let (ctype, body) = match path {
        "/static/app.css" => ("text/css; charset=utf-8", layout::APP_CSS),
        "/static/app.js" => ("text/javascript; charset=utf-8", layout::APP_JS),
        _ => return None,
    };
    let mut r = reply(StatusCode::OK, ctype, body);
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    Some(r)
}

/// Runs the page route of an authenticated request.
pub async fn serve(api: Arc<Api>, req: Request<ReqBody>) -> Result<Response<ApiBody>, ApiError> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let (route, params) = dashboard::find(&method, &path).map_err(|_| {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path} does not answer {method}"),
        )
    })?;
    // The engine acts for whoever is signed in (the audit log names them).
    let service = req
        .extensions()
        .get::<Signed>()
        .map_or(api.service.clone(), |s| api.service.acting(s.actor()));
    let csrf = match req.extensions().get::<Signed>() {
        Some(Signed::Session(s)) => s.csrf.clone(),
        _ => String::new(),
    };
    let scheme = if api.tls { "https" } else { "http" };
    let origin = format!("{scheme}://{}", header(&req, "host").unwrap_or("localhost"));
    let query = super::handlers::query(&req);
    let (parts, body) = req.into_parts();
    let form = if method == Method::POST {
        Form::parse(&read_limited(&api, body, FORM_LIMIT, &parts.headers).await?)
    } else {
        Form::default()
    };
    let handler = route.handler;
    let (status, answer) = blocking(move || {
        let ctx = Ctx {
            service: &service,
            csrf: &csrf,
            query: &query,
            form: &form,
            params: &params,
            origin: &origin,
        };
        Ok(match handler(&ctx) {
            Ok(a) => (StatusCode::OK, a),
            Err(e) => (super::status_of(e.kind()), error_page(&ctx, &e)),
        })
    })
    .await?;
    Ok(match answer {
        Answer::Html(markup) => super::handlers::html_reply(status, markup.into_string()),
        Answer::Redirect(location) => {
            let mut r = reply(StatusCode::SEE_OTHER, "text/plain", "see other\n");
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert("location", v);
            }
            r
        }
    })
}

fn error_page(ctx: &Ctx, e: &PageError) -> Answer {
    if let PageError::Engine(e) = e {
        if e.kind() == crate::engine::ErrorKind::Internal {
            tracing::warn!("dashboard: {e}");
        }
    }
    Answer::Html(layout::page(
        ctx,
        "Something went wrong",
        "",
        maud::html! {
            p.flash.error #error role="alert" { (e.to_string()) }
            p { a href="/" { "Overview" } }
        },
    ))
}
