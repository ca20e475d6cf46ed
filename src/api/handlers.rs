//! Route handlers: decode the request, call the engine off the async threads,
//! encode the answer.

use super::{
    blocking, decode, json_response, read_body, reply, Api, ApiBody, ApiError, ChannelBody,
};
use crate::engine::plans::{self, RunTarget};
use crate::engine::{self, credentials, EngineError, NewConnection};
use crate::state::{ConnectionTls, JobKind, PlanSpec, Trigger};
use crate::vault::{Credential, CredentialKind};
use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

type Reply = Result<Response<ApiBody>, ApiError>;

fn ok<T: Serialize>(v: &T) -> Reply {
    Ok(json_response(StatusCode::OK, v))
}

fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn not_found(method: &Method, path: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route {method} {path} (see docs/API.md)"),
    )
}

fn job_id(s: &str) -> Result<u64, ApiError> {
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("job id {s:?} is not a number")))
}

/// Dispatches an authenticated request.
pub async fn route(api: Arc<Api>, req: Request<Incoming>, method: &Method, path: &str) -> Reply {
    let segs: Vec<String> = path
        .trim_end_matches('/')
        .split('/')
        .skip(1)
        .map(|s| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = method.clone();
    match (m, segs.as_slice()) {
        (Method::GET, [] | [""]) => dashboard(api).await,
        (Method::GET, ["metrics"]) => {
            let jobs = api.jobs.clone();
            let text = blocking(move || Ok(super::metrics::render(&jobs)?)).await?;
            Ok(reply(StatusCode::OK, "text/plain; version=0.0.4", text))
        }
        (Method::GET, ["api", "v1", "providers"]) => {
            let jobs = api.jobs.clone();
            blocking(move || {
                let infos: Vec<_> = jobs
                    .context()
                    .providers
                    .infos()
                    .into_iter()
                    .cloned()
                    .collect();
                ok(&infos)
            })
            .await
        }
        (Method::GET, ["api", "v1", "connections"]) => {
            let jobs = api.jobs.clone();
            blocking(move || {
                ok(&jobs
                    .context()
                    .state
                    .connections()
                    .map_err(EngineError::from)?)
            })
            .await
        }
        (Method::POST, ["api", "v1", "connections"]) => create_connection(api, req).await,
        (Method::GET, ["api", "v1", "connections", name]) => {
            let (jobs, name) = (api.jobs.clone(), name.to_string());
            blocking(move || {
                ok(&jobs
                    .context()
                    .state
                    .connection(&name)
                    .map_err(EngineError::from)?)
            })
            .await
        }
        (Method::DELETE, ["api", "v1", "connections", name]) => {
            let (jobs, name) = (api.jobs.clone(), name.to_string());
            blocking(move || {
                engine::remove_connection(jobs.context(), &name)?;
                ok(&serde_json::json!({ "removed": name, "snapshots": "kept" }))
            })
            .await
        }
        (Method::POST, ["api", "v1", "connections", name, "test"]) => {
            let (jobs, name) = (api.jobs.clone(), name.to_string());
            blocking(move || {
                let scopes = engine::test_connection(jobs.context(), &name)?;
                ok(&serde_json::json!({ "connection": name, "ok": true, "scopes": scopes }))
            })
            .await
        }
        (Method::GET, ["api", "v1", "connections", name, "credentials"]) => {
            let (jobs, name) = (api.jobs.clone(), name.to_string());
            blocking(move || ok(&credentials::list_credentials(jobs.context(), &name)?)).await
        }
        (Method::POST, ["api", "v1", "connections", name, "credentials"]) => {
            add_credential(api, name.to_string(), req).await
        }
        (Method::DELETE, ["api", "v1", "connections", name, "credentials", id]) => {
            let (jobs, name, id) = (api.jobs.clone(), name.to_string(), id.to_string());
            blocking(move || {
                let ctx = jobs.context();
                match id.strip_prefix("project:") {
                    Some(key) => engine::remove_project_credential(ctx, &name, key)?,
                    None => credentials::remove_additional(ctx, &name, &id)?,
                }
                ok(&serde_json::json!({ "removed": id }))
            })
            .await
        }
        (
            Method::POST,
            ["api", "v1", "connections", name, "credentials", id, action @ ("enable" | "disable")],
        ) => {
            let enable = *action == "enable";
            let (jobs, name, id) = (api.jobs.clone(), name.to_string(), id.to_string());
            blocking(move || {
                credentials::set_additional_enabled(jobs.context(), &name, &id, enable)?;
                ok(&serde_json::json!({ "credential": id, "enabled": enable }))
            })
            .await
        }
        (Method::POST, ["api", "v1", "connections", name, "credentials", id, "test"]) => {
            let (jobs, name, id) = (api.jobs.clone(), name.to_string(), id.to_string());
            blocking(move || {
                let n = credentials::test_credential(jobs.context(), &name, &id)?;
                ok(&serde_json::json!({ "credential": id, "ok": true, "scopes": n }))
            })
            .await
        }
        (Method::GET, ["api", "v1", "plans"]) => {
            let jobs = api.jobs.clone();
            blocking(move || ok(&jobs.context().state.plans().map_err(EngineError::from)?)).await
        }
        (Method::POST, ["api", "v1", "plans"]) => {
            let spec: PlanSpec = decode(&read_body(req).await?)?;
            let jobs = api.jobs.clone();
            let plan = blocking(move || Ok(plans::create_plan(jobs.context(), spec)?)).await?;
            Ok(json_response(StatusCode::CREATED, &plan))
        }
        (Method::GET, ["api", "v1", "plans", name]) => {
            let (jobs, name) = (api.jobs.clone(), name.to_string());
            blocking(move || {
                ok(&jobs
                    .context()
                    .state
                    .plan(&name)
                    .map_err(EngineError::from)?)
            })
            .await
        }
        (Method::PUT, ["api", "v1", "plans", name]) => {
            let name = name.to_string();
            let spec: PlanSpec = decode(&read_body(req).await?)?;
            let jobs = api.jobs.clone();
            blocking(move || ok(&plans::replace_plan(jobs.context(), &name, spec)?)).await
        }
        (Method::DELETE, ["api", "v1", "plans", name]) => {
            let (jobs, name) = (api.jobs.clone(), name.to_string());
            blocking(move || {
                jobs.context()
                    .state
                    .remove_plan(&name)
                    .map_err(EngineError::from)?;
                ok(&serde_json::json!({ "removed": name }))
            })
            .await
        }
        (Method::POST, ["api", "v1", "run"]) => run_now(api, req).await,
        (Method::GET, ["api", "v1", "jobs"]) => {
            let limit = match query(&req).get("limit") {
                Some(l) => l
                    .parse::<usize>()
                    .map_err(|_| ApiError::bad_request(format!("limit {l:?} is not a number")))?,
                None => 50,
            };
            let jobs = api.jobs.clone();
            blocking(move || ok(&jobs.list(limit)?)).await
        }
        (Method::GET, ["api", "v1", "jobs", id]) => {
            let id = job_id(id)?;
            let jobs = api.jobs.clone();
            blocking(move || ok(&jobs.get(id)?)).await
        }
        (Method::GET, ["api", "v1", "jobs", id, "results"]) => {
            let id = job_id(id)?;
            let jobs = api.jobs.clone();
            blocking(move || {
                jobs.get(id)?;
                ok(&jobs
                    .context()
                    .state
                    .job_results(id)
                    .map_err(EngineError::from)?)
            })
            .await
        }
        (Method::GET, ["api", "v1", "jobs", id, "events"]) => events(api, job_id(id)?).await,
        (Method::POST, ["api", "v1", "jobs", id, "cancel"]) => {
            let id = job_id(id)?;
            let jobs = api.jobs.clone();
            blocking(move || ok(&jobs.cancel(id)?)).await
        }
        (Method::GET, ["api", "v1", "repositories"]) => {
            let conn = query(&req).get("connection").cloned();
            let jobs = api.jobs.clone();
            blocking(move || {
                ok(&jobs
                    .context()
                    .state
                    .repositories(conn.as_deref())
                    .map_err(EngineError::from)?)
            })
            .await
        }
        (Method::GET, ["api", "v1", "snapshots"]) => {
            let q = query(&req);
            let repo = q.get("repository").cloned().ok_or_else(|| ApiError {
                field: Some("repository".into()),
                ..ApiError::bad_request("give ?repository=scope/slug")
            })?;
            let conn = q.get("connection").cloned();
            let at = q.get("at").map(|a| parse_time("at", a)).transpose()?;
            let jobs = api.jobs.clone();
            blocking(move || {
                let ctx = jobs.context();
                let id = engine::find_repository(ctx, &repo, conn.as_deref())?;
                let mut snaps = engine::snapshots_of(ctx, &id)?;
                if let Some(at) = at {
                    snaps.retain(|s| s.taken_at <= at);
                }
                ok(&serde_json::json!({ "repository": id, "snapshots": snaps }))
            })
            .await
        }
        (Method::POST, ["api", "v1", "restore"]) => restore(api, req).await,
        _ => {
            let known_path = super::ROUTES.iter().any(|(_, p)| pattern_matches(p, &segs));
            if known_path {
                Err(ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{method} is not allowed on {path} (see docs/API.md)"),
                ))
            } else {
                Err(not_found(method, path))
            }
        }
    }
}

fn pattern_matches(pattern: &str, segs: &[&str]) -> bool {
    let p: Vec<&str> = pattern.trim_end_matches('/').split('/').skip(1).collect();
    p.len() == segs.len()
        && p.iter()
            .zip(segs)
            .all(|(a, b)| a.starts_with('{') || a == b)
}

fn parse_time(field: &str, s: &str) -> Result<OffsetDateTime, ApiError> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).map_err(|e| ApiError {
        field: Some(field.into()),
        ..ApiError::bad_request(format!(
            "field `{field}`: {s:?} is not an RFC 3339 time like 2026-11-20T10:00:00Z ({e})"
        ))
    })
}

/// A credential in a create-connection request. The secret is write-only.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialIn {
    kind: String,
    #[serde(default)]
    identity: Option<String>,
    secret: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectionIn {
    name: String,
    provider: String,
    #[serde(default)]
    settings: BTreeMap<String, String>,
    credential: CredentialIn,
    #[serde(default = "yes")]
    verify: bool,
    #[serde(default)]
    read_only: bool,
    /// Request budget of each principal: `60/min`, `1000/h`, `60/10s`.
    #[serde(default)]
    rate_limit: Option<String>,
    /// `{"ca_bundle_pem": "...", "ca_bundle_file": "...", "insecure": false}`.
    #[serde(default)]
    tls: ConnectionTls,
}

fn yes() -> bool {
    true
}

async fn create_connection(api: Arc<Api>, req: Request<Incoming>) -> Reply {
    let body: ConnectionIn = decode(&read_body(req).await?)?;
    let kind: CredentialKind = body.credential.kind.parse().map_err(|e| ApiError {
        field: Some("credential.kind".into()),
        ..ApiError::bad_request(format!("field `credential.kind`: {e}"))
    })?;
    if body.credential.secret.trim().is_empty() {
        return Err(ApiError {
            field: Some("credential.secret".into()),
            ..ApiError::bad_request("field `credential.secret` is empty")
        });
    }
    let provider = match body.provider.as_str() {
        "cloud" => "bitbucket-cloud".to_string(),
        "dc" | "datacenter" => "bitbucket-dc".to_string(),
        other => other.to_string(),
    };
    let new = NewConnection {
        name: body.name,
        provider,
        settings: body.settings,
        credential: Credential {
            kind,
            identity: body.credential.identity,
            secret: SecretString::from(body.credential.secret),
        },
        read_only: body.read_only,
        rate_limit: body.rate_limit,
        tls: body.tls,
    };
    let verify = body.verify;
    let jobs = api.jobs.clone();
    let (conn, warnings) =
        blocking(move || Ok(engine::add_connection(jobs.context(), new, verify)?)).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &serde_json::json!({ "connection": conn, "warnings": warnings }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialAddIn {
    kind: String,
    #[serde(default)]
    identity: Option<String>,
    secret: String,
    /// A project key: the credential is used for that project instead of the default.
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    label: Option<String>,
    #[serde(default = "yes")]
    verify: bool,
}

async fn add_credential(api: Arc<Api>, name: String, req: Request<Incoming>) -> Reply {
    let body: CredentialAddIn = decode(&read_body(req).await?)?;
    let kind: CredentialKind = body.kind.parse().map_err(|e| ApiError {
        field: Some("kind".into()),
        ..ApiError::bad_request(format!("field `kind`: {e}"))
    })?;
    if body.secret.trim().is_empty() {
        return Err(ApiError {
            field: Some("secret".into()),
            ..ApiError::bad_request("field `secret` is empty")
        });
    }
    let cred = Credential {
        kind,
        identity: body.identity,
        secret: SecretString::from(body.secret),
    };
    let jobs = api.jobs.clone();
    let out = blocking(move || {
        let ctx = jobs.context();
        Ok(match body.project {
            Some(project) => {
                let warnings =
                    engine::add_project_credential(ctx, &name, &project, cred, body.verify)?;
                serde_json::json!({ "credential": format!("project:{}", project.trim().to_ascii_uppercase()), "warnings": warnings })
            }
            None => {
                let (view, warnings) = credentials::add_additional_credential(
                    ctx,
                    &name,
                    cred,
                    body.label,
                    body.verify,
                )?;
                serde_json::json!({ "credential": view, "warnings": warnings })
            }
        })
    })
    .await?;
    Ok(json_response(StatusCode::CREATED, &out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunIn {
    #[serde(default)]
    plan: Option<String>,
    #[serde(default)]
    connection: Option<String>,
    #[serde(default)]
    repository: Option<String>,
}

async fn run_now(api: Arc<Api>, req: Request<Incoming>) -> Reply {
    let body: RunIn = decode(&read_body(req).await?)?;
    let jobs = api.jobs.clone();
    let job = blocking(move || {
        let ctx = jobs.context();
        let target = match (body.plan, body.connection, body.repository) {
            (Some(plan), None, None) => RunTarget::Plan(plan),
            (None, Some(connection), None) => RunTarget::Connection(connection),
            (None, connection, Some(repository)) => RunTarget::Repository {
                repository,
                connection,
            },
            _ => {
                return Err(ApiError::bad_request(
                    "give exactly one of `plan`, `connection` or `repository` (optionally with `connection`)",
                ))
            }
        };
        let kind = plans::job_for(ctx, &target)?;
        Ok(jobs.submit(kind, Trigger::Manual, None)?)
    })
    .await?;
    Ok(json_response(StatusCode::ACCEPTED, &job))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreIn {
    repository: String,
    #[serde(default)]
    connection: Option<String>,
    #[serde(default)]
    snapshot: Option<String>,
    #[serde(default)]
    at: Option<String>,
    to: String,
    #[serde(default)]
    force: bool,
}

async fn restore(api: Arc<Api>, req: Request<Incoming>) -> Reply {
    let body: RestoreIn = decode(&read_body(req).await?)?;
    if body.snapshot.is_some() && body.at.is_some() {
        return Err(ApiError::bad_request(
            "give either `snapshot` or `at`, not both",
        ));
    }
    let at = body
        .at
        .as_deref()
        .map(|a| parse_time("at", a))
        .transpose()?;
    let kind = JobKind::Restore {
        repository: body.repository,
        connection: body.connection,
        snapshot: body.snapshot,
        at,
        to: body.to,
        force: body.force,
    };
    let jobs = api.jobs.clone();
    let job = blocking(move || Ok(jobs.submit(kind, Trigger::Manual, None)?)).await?;
    Ok(json_response(StatusCode::ACCEPTED, &job))
}

/// Server-Sent Events: the job as JSON on every change, until it ends.
async fn events(api: Arc<Api>, id: u64) -> Reply {
    let jobs = api.jobs.clone();
    let first = {
        let j = jobs.clone();
        blocking(move || Ok(j.get(id)?)).await?
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let mut last = String::new();
        let mut job = first;
        loop {
            let json = serde_json::to_string(&job).unwrap_or_default();
            if json != last {
                let event = if job.state.is_finished() {
                    "end"
                } else {
                    "progress"
                };
                if tx
                    .send(Bytes::from(format!("event: {event}\ndata: {json}\n\n")))
                    .await
                    .is_err()
                {
                    return;
                }
                last = json;
            }
            if job.state.is_finished() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            let j = jobs.clone();
            match tokio::task::spawn_blocking(move || j.get(id)).await {
                Ok(Ok(next)) => job = next,
                _ => return,
            }
        }
    });
    let mut r = Response::new(ChannelBody::new(rx).boxed());
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut().insert(
        "cache-control",
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    Ok(r)
}

async fn dashboard(api: Arc<Api>) -> Reply {
    let jobs = api.jobs.clone();
    let html = blocking(move || Ok(crate::dashboard::status_page(&jobs)?)).await?;
    Ok(reply(StatusCode::OK, "text/html; charset=utf-8", html))
}

/// The login form of the dashboard (the token is kept in an HttpOnly cookie).
pub fn login_page(error: Option<&str>) -> Response<ApiBody> {
    let mut r = reply(
        StatusCode::UNAUTHORIZED,
        "text/html; charset=utf-8",
        crate::dashboard::login_page(error),
    );
    if let Ok(v) = "Bearer realm=\"reposafe\"".parse() {
        r.headers_mut().insert(hyper::header::WWW_AUTHENTICATE, v);
    }
    r
}

/// `POST /login` with `token=...` (form): sets the cookie when the token is right.
pub async fn login(api: &Api, req: Request<Incoming>) -> Response<ApiBody> {
    if req.method() != Method::POST {
        return login_page(None);
    }
    let Ok(body) = read_body(req).await else {
        return login_page(Some("unreadable form"));
    };
    let token: Option<String> = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.trim().to_string());
    let want = secrecy::ExposeSecret::expose_secret(&api.token).to_string();
    match token {
        Some(t)
            if t.len() == want.len()
                && t.bytes()
                    .zip(want.bytes())
                    .fold(0u8, |a, (x, y)| a | (x ^ y))
                    == 0 =>
        {
            let mut r = reply(StatusCode::SEE_OTHER, "text/plain", "signed in\n");
            if let Ok(v) = format!("reposafe_token={t}; HttpOnly; SameSite=Strict; Path=/").parse()
            {
                r.headers_mut().insert(hyper::header::SET_COOKIE, v);
            }
            r.headers_mut()
                .insert("location", hyper::header::HeaderValue::from_static("/"));
            r
        }
        _ => login_page(Some("wrong token")),
    }
}
