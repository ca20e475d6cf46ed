//! Changing how a connection signs in: Bitbucket Cloud's OAuth "Connect" (the form
//! posts here, the browser is sent to Bitbucket's consent page and comes back to
//! `/oauth/callback`), rotating the primary credential, and editing a connection's
//! flags, rate limit and host-free settings.

use super::layout::csrf_field;
use super::{redirect_error, redirect_ok, seg, Answer, Ctx, Outcome, PageError, Route};
use crate::engine::oauth::OAuthBegin;
use crate::engine::service::{ConnectionView, CredentialInput, EditConnection, RotateCredential};
use crate::engine::types::ProviderInfo;
use crate::engine::Service;
use hyper::Method;
use maud::{html, Markup};

pub fn routes() -> Vec<Route> {
    vec![
        Route {
            method: Method::POST,
            pattern: "/connections/connect",
            handler: connect,
        },
        Route {
            method: Method::POST,
            pattern: "/connections/{name}/rotate",
            handler: rotate,
        },
        Route {
            method: Method::POST,
            pattern: "/connections/{name}/edit",
            handler: edit,
        },
    ]
}

fn connect(ctx: &Ctx) -> Outcome {
    let f = ctx.form;
    let begin = || -> Result<OAuthBegin, PageError> {
        Ok(OAuthBegin {
            name: f.required("name")?.to_string(),
            provider: "bitbucket-cloud".into(),
            settings: f.prefixed("setting:").into_iter().collect(),
            consumer_key: f.required("oauth_key")?.to_string(),
            consumer_secret: ctx.form.secret("oauth_secret")?,
            redirect_uri: Some(format!("{}/oauth/callback", ctx.origin)),
            read_only: f.checked("read_only"),
            allow_restore: f.checked("allow_restore"),
            rate_limit: f.get("rate_limit").map(str::to_string),
        })
    };
    let started = begin().and_then(|b| Ok(ctx.service.oauth_begin(b)?));
    match started {
        Ok(s) => Ok(Answer::Redirect(s.authorize_url)),
        Err(e) => redirect_error("/connections/new", e),
    }
}

fn rotate(ctx: &Ctx) -> Outcome {
    let name = ctx.param("name");
    let back = format!("/connections/{}", seg(name));
    let req = || -> Result<RotateCredential, PageError> {
        Ok(RotateCredential {
            credential: CredentialInput {
                kind: ctx.form.required("kind")?.to_string(),
                identity: ctx.form.get("identity").map(str::to_string),
                secret: ctx.form.secret("secret")?,
            },
            verify: true,
        })
    };
    match req().and_then(|r| Ok(ctx.service.rotate_credential(name, r)?)) {
        Ok(_) => redirect_ok(
            &back,
            "credential replaced; the old one is no longer stored",
        ),
        Err(e) => redirect_error(&back, e),
    }
}

fn edit(ctx: &Ctx) -> Outcome {
    let name = ctx.param("name");
    let back = format!("/connections/{}", seg(name));
    let req = EditConnection {
        read_only: Some(ctx.form.checked("read_only")),
        allow_restore: Some(ctx.form.checked("allow_restore")),
        rate_limit: Some(ctx.form.get("rate_limit").unwrap_or("none").to_string()),
        settings: Default::default(),
    };
    match ctx.service.edit_connection(name, req) {
        Ok(_) => redirect_ok(&back, "connection settings saved"),
        Err(e) => redirect_error(&back, e),
    }
}

/// The edit and rotate forms of a connection's page.
pub fn forms(ctx: &Ctx, c: &ConnectionView, provider: Option<&ProviderInfo>) -> Markup {
    let k = &c.connection;
    let path = format!("/connections/{}", seg(&k.name));
    html! {
        h2 { "Settings" }
        form #edit-connection method="post" action={ (path) "/edit" } {
            (csrf_field(ctx))
            p { label { input type="checkbox" name="read_only" value="1" checked[k.read_only]; " read-only (never written to)" } }
            p { label { input type="checkbox" name="allow_restore" value="1" checked[k.allow_restore]; " restore target (restores may write to it)" } }
            p { label for="edit-rate" { "Rate limit" } input #edit-rate type="text" name="rate_limit" value=(k.rate_limit.as_deref().unwrap_or("")) placeholder="e.g. 1000/h (empty: none)"; }
            button #save-connection { "Save" }
        }
        h2 { "Rotate the credential" }
        form #rotate-credential method="post" action={ (path) "/rotate" } {
            (csrf_field(ctx))
            p.help { "The new credential is checked before it replaces the old one; the old one is then no longer stored." }
            @if let Some(p) = provider {
                p { label for="rotate-kind" { "Kind" } select #rotate-kind name="kind" {
                    @for s in &p.credential_kinds { option value=(s.kind.as_str()) selected[s.kind == k.credential_kind] { (s.kind.as_str()) } }
                } }
            }
            p { label for="rotate-identity" { "E-mail / user name / key" } input #rotate-identity type="text" name="identity" value=(k.credential_identity.as_deref().unwrap_or("")) autocomplete="off"; }
            p { label for="rotate-secret" { "New token / password / secret" } input #rotate-secret type="password" name="secret" required autocomplete="new-password"; }
            button #rotate { "Replace credential" }
        }
    }
}
