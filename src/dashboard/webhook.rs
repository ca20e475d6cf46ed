//! A connection's push webhook on its page (`/connections/{name}`): the URL and
//! secret to paste into Bitbucket (`#webhook-url`, `#webhook-secret`, the secret
//! made on the first view), and a button for a new secret.

use super::layout::post_button;
use super::{redirect_error, redirect_ok, seg, Ctx, Outcome, PageError, Route};
use crate::engine::Service;
use hyper::Method;
use maud::{html, Markup};
use secrecy::ExposeSecret;

pub fn routes() -> Vec<Route> {
    vec![Route {
        method: Method::POST,
        pattern: "/connections/{name}/webhook/rotate",
        handler: rotate,
    }]
}

/// The section of the connection page.
pub fn section(ctx: &Ctx, name: &str) -> Result<Markup, PageError> {
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
