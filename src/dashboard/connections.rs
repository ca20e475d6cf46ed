//! Connections (the seeds' "Provider installations"): the table of connections
//! with their credential, principal, last check and backups; adding one (Bitbucket
//! Cloud's OAuth "Connect", or any provider's credential kinds in the advanced
//! form); a connection's page with test, edit, rotate, remove and its additional
//! and per-project credentials (add, test, enable/disable, remove).

use super::layout::{csrf_field, page, post_button, when};
use super::{redirect_error, redirect_ok, seg, Answer, Ctx, Outcome, PageError, Route};
use crate::engine::service::{AddConnection, AddCredential, ConnectionView, CredentialInput};
use crate::engine::types::{ConnectionTls, ProviderInfo};
use crate::engine::Service;
use hyper::Method;
use maud::{html, Markup};
use std::collections::BTreeMap;

pub fn routes() -> Vec<Route> {
    use Method as M;
    let r = |method, pattern, handler| Route {
        method,
        pattern,
        handler,
    };
    vec![
        r(M::GET, "/connections", list),
        r(M::GET, "/connections/new", new_page),
        r(M::POST, "/connections/new", add),
        r(M::GET, "/connections/{name}", show),
        r(M::POST, "/connections/{name}/test", test),
        r(M::POST, "/connections/{name}/remove", remove),
        r(M::POST, "/connections/{name}/credentials", add_credential),
        r(
            M::POST,
            "/connections/{name}/credentials/{id}/toggle",
            toggle_credential,
        ),
        r(
            M::POST,
            "/connections/{name}/credentials/{id}/test",
            test_credential,
        ),
        r(
            M::POST,
            "/connections/{name}/credentials/{id}/remove",
            remove_credential,
        ),
    ]
}

fn conn_path(name: &str) -> String {
    format!("/connections/{}", seg(name))
}

/// The scope a connection backs up, from its settings (workspace, base URL, projects).
fn scope_of(c: &ConnectionView) -> String {
    let s = &c.connection.settings;
    ["workspace", "base-url", "projects"]
        .iter()
        .filter_map(|k| s.get(*k).filter(|v| !v.is_empty()).map(|v| v.to_string()))
        .collect::<Vec<_>>()
        .join(" · ")
}

fn check_cell(c: &ConnectionView) -> Markup {
    html! {
        @match &c.last_check {
            None => { span.muted { "not tested" } },
            Some(k) if k.ok => { span.ok { "ok" } " " span.muted { (when(Some(k.at))) } },
            Some(k) => { span.failing { "failing: " (k.reason.as_deref().unwrap_or("")) } " " span.muted { (when(Some(k.at))) } },
        }
    }
}

fn list(ctx: &Ctx) -> Outcome {
    let conns = ctx.service.connections()?;
    let body = html! {
        p { a #add-connection href="/connections/new" { "Add connection" } }
        @if conns.is_empty() {
            p.muted { "No connection yet: add your Bitbucket Cloud workspace or Data Center server to start backing it up." }
        }
        table #connections {
            tr { th { "Name" } th { "Provider" } th { "Workspace / server" } th { "Credential" } th { "Principal" }
                 th { "Last check" } th { "Repositories" } th { "Last backup" } }
            @for c in &conns {
                @let k = &c.connection;
                tr data-connection=(k.name) {
                    td { a href=(conn_path(&k.name)) { (k.name) } @if k.read_only { " " span.muted { "read-only" } } @if k.allow_restore { " " span.warning { "restore target" } } }
                    td { (k.provider) }
                    td { (scope_of(c)) }
                    td { (k.credential_kind) " " (k.credential_identity.as_deref().unwrap_or("")) " ********" }
                    td { (k.principal.as_deref().unwrap_or("-")) }
                    td.check { (check_cell(c)) }
                    td { (c.repositories) }
                    td { (when(c.last_backup)) }
                }
            }
        }
    };
    Ok(Answer::Html(page(ctx, "Connections", "connections", body)))
}

/// The provider's settings as inputs named `setting:<name>`.
fn settings_inputs(p: &ProviderInfo, only: Option<&[&str]>) -> Markup {
    html! {
        @for s in p.settings.iter().filter(|s| only.is_none_or(|o| o.contains(&s.name.as_str()))) {
            p {
                label for={ (p.id) "-" (s.name) } { (s.name) @if s.required { " *" } }
                input type="text" id={ (p.id) "-" (s.name) } name={ "setting:" (s.name) }
                    placeholder=[s.default_value.as_deref()] required[s.required];
                br; small.muted { (s.description) }
            }
        }
    }
}

fn kind_options(p: &ProviderInfo) -> Markup {
    html! {
        @for k in &p.credential_kinds {
            option value=(k.kind.as_str()) {
                (k.kind.as_str()) @if let Some(d) = &k.deprecated { " (retired: " (d) ")" }
            }
        }
    }
}

/// Secret, identity and the options every way of adding a connection shares.
fn credential_fields(prefix: &str) -> Markup {
    html! {
        p { label for={ (prefix) "identity" } { "E-mail / user name / key" } input type="text" id={ (prefix) "identity" } name="identity" autocomplete="off"; }
        p { label for={ (prefix) "secret" } { "Token / password / secret" } input type="password" id={ (prefix) "secret" } name="secret" autocomplete="new-password" required; }
    }
}

fn connection_options(prefix: &str) -> Markup {
    html! {
        p { label { input type="checkbox" name="read_only" value="1"; " read-only (never written to)" } }
        p { label { input type="checkbox" name="allow_restore" value="1"; " restore target (restores may write to it)" } }
        p { label for={ (prefix) "rate" } { "Rate limit" } input type="text" id={ (prefix) "rate" } name="rate_limit" placeholder="e.g. 1000/h"; }
    }
}

fn new_page(ctx: &Ctx) -> Outcome {
    let providers = ctx.service.providers()?.providers;
    let body = html! {
        (connect_form(ctx, providers.iter().find(|p| p.id == "bitbucket-cloud")))
        h2 { "Advanced: add with a credential" }
        @for p in &providers {
            form #advanced-form .advanced method="post" action="/connections/new" data-provider=(p.id) {
                (csrf_field(ctx))
                input type="hidden" name="provider" value=(p.id);
                fieldset {
                    legend { (p.display_name) }
                    p { label for={ (p.id) "-name" } { "Name" } input type="text" id={ (p.id) "-name" } name="name" required placeholder="e.g. acme"; }
                    p { label for={ (p.id) "-kind" } { "Credential kind" } select id={ (p.id) "-kind" } name="kind" { (kind_options(p)) } }
                    (credential_fields(&format!("{}-", p.id)))
                    (settings_inputs(p, None))
                    details {
                        summary { "Certificate trust (self-signed or internal CA)" }
                        p { label for={ (p.id) "-ca" } { "CA bundle (PEM)" }
                            input type="file" accept=".pem,.crt,.cer" data-fill={ (p.id) "-ca" };
                            br; textarea id={ (p.id) "-ca" } name="ca_bundle_pem" rows="3" placeholder="-----BEGIN CERTIFICATE-----" {} }
                    }
                    (connection_options(&format!("{}-", p.id)))
                    button #add { "Add connection" }
                }
            }
        }
    };
    Ok(Answer::Html(page(
        ctx,
        "Add a connection",
        "connections",
        body,
    )))
}

/// Bitbucket Cloud's "Connect" (OAuth 2.0 authorization code): the consumer's key
/// and secret; the callback URL to register in Bitbucket is shown.
fn connect_form(ctx: &Ctx, cloud: Option<&ProviderInfo>) -> Markup {
    let callback = format!("{}/oauth/callback", ctx.origin);
    html! {
        @if let Some(p) = cloud {
            form #connect-form method="post" action="/connections/connect" {
                (csrf_field(ctx))
                fieldset {
                    legend { "Bitbucket Cloud: Connect" }
                    p.help {
                        "Create an OAuth consumer in your workspace (Settings → OAuth consumers → Add consumer) with the callback URL "
                        code #callback-url { (callback) }
                        " and the permissions Account: Read, Repositories: Read, Pull requests: Read, Issues: Read, Wiki: Read. Then enter its key and secret and click Connect: Bitbucket asks you to grant access, and reposafe keeps only a refresh token, sealed in its vault."
                    }
                    p { label for="connect-name" { "Name" } input #connect-name type="text" name="name" required placeholder="e.g. acme"; }
                    p { label for="connect-workspace" { "Workspace" } input #connect-workspace type="text" name="setting:workspace" required; }
                    p { label for="oauth-key" { "Consumer key" } input #oauth-key type="text" name="oauth_key" required autocomplete="off"; }
                    p { label for="oauth-secret" { "Consumer secret" } input #oauth-secret type="password" name="oauth_secret" required autocomplete="new-password"; }
                    details #server-settings {
                        summary { "Server addresses" }
                        (settings_inputs(p, Some(&["api-base-url", "git-base-url"])))
                        p { label for="authorize-url" { "oauth-authorize-url" } input #authorize-url type="text" name="setting:oauth-authorize-url" placeholder="https://bitbucket.org/site/oauth2/authorize"; }
                    }
                    (connection_options("connect-"))
                    button #connect { "Connect" }
                }
            }
        }
    }
}

fn settings_of(ctx: &Ctx) -> BTreeMap<String, String> {
    ctx.form.prefixed("setting:").into_iter().collect()
}

fn add(ctx: &Ctx) -> Outcome {
    let req = match advanced_request(ctx) {
        Ok(r) => r,
        Err(e) => return redirect_error("/connections/new", e),
    };
    let name = req.name.clone();
    match ctx.service.add_connection(req) {
        Ok(added) => redirect_ok(
            &conn_path(&name),
            &format!("connection {name} added{}", warnings_text(&added.warnings)),
        ),
        Err(e) => redirect_error("/connections/new", e),
    }
}

fn warnings_text(warnings: &[String]) -> String {
    if warnings.is_empty() {
        String::new()
    } else {
        format!(" — warning: {}", warnings.join("; "))
    }
}

fn advanced_request(ctx: &Ctx) -> Result<AddConnection, PageError> {
    let f = ctx.form;
    Ok(AddConnection {
        name: f.required("name")?.to_string(),
        provider: f.required("provider")?.to_string(),
        settings: settings_of(ctx),
        credential: CredentialInput {
            kind: f.required("kind")?.to_string(),
            identity: f.get("identity").map(str::to_string),
            secret: ctx.form.secret("secret")?,
        },
        verify: true,
        read_only: f.checked("read_only"),
        allow_restore: f.checked("allow_restore"),
        rate_limit: f.get("rate_limit").map(str::to_string),
        tls: ConnectionTls {
            ca_bundle_pem: f.get("ca_bundle_pem").map(str::to_string),
            ca_bundle_file: f
                .get("ca_bundle_pem")
                .map(|_| "uploaded in the dashboard".to_string()),
            insecure: false,
        },
    })
}

fn show(ctx: &Ctx) -> Outcome {
    let name = ctx.param("name");
    let c = ctx.service.connection(name)?;
    let creds = ctx.service.credentials(name)?;
    let kinds = ctx
        .service
        .providers()?
        .providers
        .into_iter()
        .find(|p| p.id == c.connection.provider);
    let path = conn_path(name);
    let k = &c.connection;
    let webhook = super::webhook::section(ctx, name, c.connection.read_only)?;
    let body = html! {
        table #connection-details {
            tr { th { "Provider" } td { (k.provider) } }
            @for (key, value) in &k.settings { tr { th { (key) } td { (value) } } }
            tr { th { "Credential" } td { (k.credential_kind) " " (k.credential_identity.as_deref().unwrap_or("")) " ********" } }
            tr { th { "Principal" } td { (k.principal.as_deref().unwrap_or("-")) } }
            tr { th { "Last check" } td #last-check { (check_cell(&c)) } }
            tr { th { "Repositories" } td { (c.repositories) " · last backup " (when(c.last_backup)) } }
            tr { th { "Certificate trust" } td { @if c.tls.insecure { span.failing { "not verified" } } @else if let Some(f) = &c.tls.ca_bundle { "CA bundle " (f) } @else { "system roots" } } }
            tr { th { "Flags" } td { @if k.read_only { "read-only " } @if k.allow_restore { "restore target " } @if let Some(r) = &k.rate_limit { "rate limit " (r) } } }
        }
        p {
            (post_button(ctx, &format!("{path}/test"), "Test", "test", None))
            " "
            (post_button(ctx, &format!("{path}/remove"), "Remove", "remove",
                Some(&format!("Remove connection {name}? Its snapshots stay in the archive."))))
        }
        h2 { "Credentials" }
        (credentials_table(ctx, &path, &creds))
        @if let Some(p) = &kinds { (add_credential_form(ctx, &path, p)) }
        (super::connect::forms(ctx, &c, kinds.as_ref()))
        (webhook)
    };
    Ok(Answer::Html(page(
        ctx,
        &format!("Connection {name}"),
        "connections",
        body,
    )))
}

fn credentials_table(
    ctx: &Ctx,
    path: &str,
    creds: &[crate::engine::credentials::CredentialView],
) -> Markup {
    let primary = creds
        .iter()
        .find(|c| c.id == "primary")
        .and_then(|c| c.principal.clone());
    html! {
        table #credentials {
            tr { th { "Id" } th { "Role" } th { "Kind" } th { "Identity" } th { "Label" } th { "Principal" } th { "Enabled" } th {} }
            @for cr in creds {
                @let cpath = format!("{path}/credentials/{}", seg(&cr.id));
                @let same = cr.id != "primary" && cr.principal.is_some() && cr.principal == primary;
                tr data-credential=(cr.id) {
                    td { (cr.id) } td { (cr.role) } td { (cr.kind) } td { (cr.identity.as_deref().unwrap_or("")) " ********" }
                    td { (cr.label.as_deref().unwrap_or("")) }
                    td { (cr.principal.as_deref().unwrap_or("-"))
                        @if same { br; span.warning.same-principal { "same account as the primary credential: it shares its rate limit and adds no capacity" } } }
                    td.enabled { @if cr.enabled { span.on { "on" } } @else { span.off { "off" } } }
                    td {
                        @if cr.id != "primary" {
                            form.inline method="post" action={ (cpath) "/toggle" } {
                                (csrf_field(ctx))
                                input type="hidden" name="enable" value=(if cr.enabled { "0" } else { "1" });
                                button.toggle { @if cr.enabled { "Disable" } @else { "Enable" } }
                            }
                            " " (post_button(ctx, &format!("{cpath}/test"), "Test", &format!("test-{}", cr.id), None))
                            " " (post_button(ctx, &format!("{cpath}/remove"), "Remove", &format!("remove-{}", cr.id), Some("Remove this credential?")))
                        }
                    }
                }
            }
        }
    }
}

fn add_credential_form(ctx: &Ctx, path: &str, p: &ProviderInfo) -> Markup {
    html! {
        form #add-credential method="post" action={ (path) "/credentials" } {
            (csrf_field(ctx))
            fieldset {
                legend { "Add a credential" }
                p.help { "An additional credential spreads a plan's requests over more accounts (each has its own rate limit); a per-project credential (Data Center) is used for one project instead of the primary." }
                p { label for="cred-kind" { "Kind" } select #cred-kind name="kind" { (kind_options(p)) } }
                (credential_fields("cred-"))
                p { label for="cred-label" { "Label" } input #cred-label type="text" name="label"; }
                p { label for="cred-project" { "Project key (per-project credential)" } input #cred-project type="text" name="project"; }
                button #add-credential-submit { "Add credential" }
            }
        }
    }
}

fn test(ctx: &Ctx) -> Outcome {
    let name = ctx.param("name");
    match ctx.service.test_connection(name) {
        Ok(t) => redirect_ok(
            &conn_path(name),
            &format!(
                "connection {name} works: it sees {} scope(s)",
                t.scopes.len()
            ),
        ),
        Err(e) => redirect_error(&conn_path(name), e),
    }
}

fn remove(ctx: &Ctx) -> Outcome {
    let name = ctx.param("name");
    match ctx.service.remove_connection(name) {
        Ok(_) => redirect_ok(
            "/connections",
            &format!("connection {name} removed; its snapshots are kept"),
        ),
        Err(e) => redirect_error(&conn_path(name), e),
    }
}

fn add_credential(ctx: &Ctx) -> Outcome {
    let name = ctx.param("name");
    let back = conn_path(name);
    let req = || -> Result<AddCredential, PageError> {
        Ok(AddCredential {
            kind: ctx.form.required("kind")?.to_string(),
            identity: ctx.form.get("identity").map(str::to_string),
            secret: ctx.form.secret("secret")?,
            project: ctx.form.get("project").map(str::to_string),
            label: ctx.form.get("label").map(str::to_string),
            verify: true,
        })
    };
    let req = match req() {
        Ok(r) => r,
        Err(e) => return redirect_error(&back, e),
    };
    match ctx.service.add_credential(name, req) {
        Ok(added) => redirect_ok(
            &back,
            &format!("credential added{}", warnings_text(&added.warnings)),
        ),
        Err(e) => redirect_error(&back, e),
    }
}

fn toggle_credential(ctx: &Ctx) -> Outcome {
    let (name, id) = (ctx.param("name"), ctx.param("id"));
    let enable = ctx.form.checked("enable");
    match ctx.service.set_credential_enabled(name, id, enable) {
        Ok(r) => redirect_ok(
            &conn_path(name),
            &format!(
                "credential {} {}",
                r.credential,
                if r.enabled { "enabled" } else { "disabled" }
            ),
        ),
        Err(e) => redirect_error(&conn_path(name), e),
    }
}

fn test_credential(ctx: &Ctx) -> Outcome {
    let (name, id) = (ctx.param("name"), ctx.param("id"));
    match ctx.service.test_credential(name, id) {
        Ok(t) => redirect_ok(
            &conn_path(name),
            &format!("credential {id} works: it sees {} scope(s)", t.scopes),
        ),
        Err(e) => redirect_error(&conn_path(name), e),
    }
}

fn remove_credential(ctx: &Ctx) -> Outcome {
    let (name, id) = (ctx.param("name"), ctx.param("id"));
    match ctx.service.remove_credential(name, id) {
        Ok(_) => redirect_ok(&conn_path(name), &format!("credential {id} removed")),
        Err(e) => redirect_error(&conn_path(name), e),
    }
}
