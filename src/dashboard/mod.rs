//! The built-in dashboard: server-rendered HTML pages (maud templates) through
//! which an admin runs the appliance — connections, plans, jobs with live
//! progress, repositories and restores, the audit log, notifications. Each page
//! module owns its routes (`ROUTES`); `routes` joins them into one table. Pages
//! only call the engine's command surface ([`LocalService`]); the API layer
//! authenticates the request (session + CSRF) before a page runs. Assets (CSS and
//! a little plain JavaScript for live progress) are embedded: nothing is loaded
//! from elsewhere.

mod audit;
mod connect;
mod connections;
pub mod form;
mod jobs;
pub mod layout;
pub mod oauth;
mod overview;
mod plans;
mod repositories;
mod routes;
mod settings;
mod webhook;

pub use form::Form;
pub use routes::{find, table};

use crate::engine::{EngineError, ErrorKind, LocalService};
use hyper::Method;
use maud::Markup;
use std::collections::BTreeMap;

/// What a page handler sees of the request.
pub struct Ctx<'a> {
    /// The engine, acting for whoever is signed in.
    pub service: &'a LocalService,
    /// The session's CSRF token (every POST form carries it).
    pub csrf: &'a str,
    /// The query string's parameters.
    pub query: &'a BTreeMap<String, String>,
    /// A POST's urlencoded form (empty for a GET).
    pub form: &'a Form,
    /// The path parameters of the route (`{name}`).
    pub params: &'a BTreeMap<&'static str, String>,
    /// This daemon's origin as the browser sees it, e.g. `http://127.0.0.1:8080`.
    pub origin: &'a str,
}

impl Ctx<'_> {
    /// A path parameter (empty when the route has none of that name).
    pub fn param(&self, name: &str) -> &str {
        self.params.get(name).map(String::as_str).unwrap_or("")
    }

    /// A query parameter.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }
}

/// A page's answer.
pub enum Answer {
    Html(Markup),
    /// 303 See Other to this path (after a form).
    Redirect(String),
}

/// Why a page could not be shown: the engine's error (its class gives the status),
/// or a form field that is missing or wrong.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{field}: {message}")]
    Field { field: String, message: String },
    #[error("no such page: {0}")]
    NotFound(String),
}

impl PageError {
    /// The class of the error, which decides the HTTP status.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PageError::Engine(e) => e.kind(),
            PageError::Field { .. } => ErrorKind::Invalid,
            PageError::NotFound(_) => ErrorKind::NotFound,
        }
    }
}

pub type Outcome = Result<Answer, PageError>;

/// One route of a page module.
pub struct Route {
    pub method: Method,
    /// Path with `{name}` parameters.
    pub pattern: &'static str,
    pub handler: fn(&Ctx) -> Outcome,
}

/// A redirect to `back` with a flash message (`ok`) shown there.
pub fn redirect_ok(back: &str, message: &str) -> Outcome {
    Ok(Answer::Redirect(with_flash(back, "ok", message)))
}

/// The answer to a form whose action failed: back to `back`, with the error shown
/// there (an error the form's user can correct never loses the page).
pub fn redirect_error(back: &str, e: impl std::fmt::Display) -> Outcome {
    Ok(Answer::Redirect(with_flash(back, "error", &e.to_string())))
}

fn with_flash(back: &str, key: &str, message: &str) -> String {
    let sep = if back.contains('?') { '&' } else { '?' };
    let value: String = url::form_urlencoded::byte_serialize(message.as_bytes()).collect();
    format!("{back}{sep}{key}={value}")
}

/// A path segment made safe to put into a URL path.
pub fn seg(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flashes_are_encoded_and_appended() {
        assert_eq!(with_flash("/plans", "ok", "a b&c"), "/plans?ok=a+b%26c");
        assert_eq!(with_flash("/x?y=1", "error", "no"), "/x?y=1&error=no");
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
    }
}
