//! A connection's push webhook on its page (`/connections/{name}`): the URL and
//! secret to paste into Bitbucket (`#webhook-url`, `#webhook-secret`, the secret
//! made on the first view), a button for a new secret, and (not for a read-only
//! connection) a form that has reposafe register it in Bitbucket itself
//! (`form#register-webhook`).

use super::layout::{csrf_field, post_button};
use super::{redirect_error, redirect_ok, seg, Ctx, Outcome, PageError, Route};
use crate::engine::service::RegisterWebhook;
use crate::engine::Service;
use hyper::Method;
use maud::{html, Markup};
use secrecy::ExposeSecret;

pub fn routes() -> Vec<Route> {
    vec![
        Route {
            method: Method::POST,
            pattern: "/connections/{name}/webhook/rotate",
            handler: rotate,
        },
        Route {
            method: Method::POST,
            pattern: "/connections/{name}/webhook/register",
            handler: register,
        },
    ]
}

/// The section of the connection page.
pub fn section(ctx: &Ctx, name: &str, read_only: bool) -> Result<Markup, PageError> {
    let info = ctx.service.webhook(name)?;
    let url = format!("{}{}", ctx.origin, info.path);
    let action = format!("/connections/{}/webhook/rotate", seg(name));
    Ok(html! {
        h2 { "Push webhook" }
        p.muted {
            "Add a webhook in Bitbucket (repository or workspace settings; Data Center: project or repository settings) "
            "with this URL and secret, triggered by pushes. A burst of pushes to one repository is backed up once, "
            (info.delay_secs) " s after the last push."
        }
        table #webhook {
            tr { th { "URL" } td { code #webhook-url { (url) } } }
            tr { th { "Secret" } td { details { summary { "show" } code #webhook-secret { (info.secret.expose_secret()) } } } }
        }
        p { (post_button(ctx, &action, "New secret", "rotate-webhook",
            Some("Make a new webhook secret? Bitbucket's pushes are refused until you paste it there."))) }
        @if !read_only {
            form #register-webhook method="post" action={ "/connections/" (seg(name)) "/webhook/register" } {
                (csrf_field(ctx))
                p.muted {
                    "Or let reposafe add it in Bitbucket, on every workspace or project this connection covers "
                    "(needs a credential that may manage webhooks: Cloud's webhook scope and workspace admin, "
                    "Data Center's project admin). A webhook with the same URL is updated, not duplicated."
                }
                p {
                    label for="register-url" { "This daemon as Bitbucket reaches it" }
                    input #register-url type="url" name="url" value=(ctx.origin) required;
                    " " button #register-webhook-submit { "Register in Bitbucket" }
                }
            }
        }
    })
}

fn rotate(ctx: &Ctx) -> Outcome {
    let name = ctx.param("name");
    let back = format!("/connections/{}", seg(name));
    match ctx.service.rotate_webhook_secret(name) {
        Ok(_) => redirect_ok(
            &back,
            "new webhook secret: paste it into Bitbucket's webhook",
        ),
        Err(e) => redirect_error(&back, e),
    }
}

fn register(ctx: &Ctx) -> Outcome {
    let name = ctx.param("name");
    let back = format!("/connections/{}", seg(name));
    let url = ctx.form.required("url")?.to_string();
    match ctx.service.register_webhook(name, RegisterWebhook { url }) {
        Ok(done) => {
            let mut text = format!("webhook registered: {}", done.url);
            for r in &done.registered {
                let how = if r.updated { "updated" } else { "added" };
                text.push_str(&format!("; {how} on {}", r.target));
            }
            for f in &done.failed {
                text.push_str(&format!("; failed on {}: {}", f.scope, f.error));
            }
            redirect_ok(&back, &text)
        }
        Err(e) => redirect_error(&back, e),
    }
}
