//! The route table: each route is `(method, pattern, handler)`; a handler decodes
//! the request into the engine's request type, calls the daemon's [`Service`] off
//! the async threads and encodes the report. `ROUTES` (and so `docs/API.md`'s
//! check) and the 404/405 answers come from the same table.

use super::auth::{cross_site, token_matches, Signed};
use super::session::SESSION_COOKIE;
use super::{
    blocking, decode, error_response, json_response, read_body, reply, require_json, Api, ApiBody,
    ApiError, ChannelBody, ReqBody,
};
use crate::engine::archive_copy::{CopyEvents, CopyProgress};
use crate::engine::audit::{Actor, AuditQuery};
use crate::engine::prune::{PruneEvents, PruneProgress};
use crate::engine::service::{
    AddConnection, AddCredential, EditConnection, ExportRequest, OAuthBegin, OAuthFinish,
    RestoreRequest, RotateCredential, RunRequest, SetTls, ShowRequest, SnapshotsRequest,
};
use crate::engine::service::{
    CheckRequest, CopyRequest, ForgetRequest, PruneRequest, RegisterWebhook, RetentionQuery,
    SetNotifications,
};
use crate::engine::types::PlanSpec;
use crate::engine::{LocalService, Observer, Quiet, Service};
use http_body_util::BodyExt;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use time::OffsetDateTime;

type Reply = Result<Response<ApiBody>, ApiError>;
type Pending = Pin<Box<dyn Future<Output = Reply> + Send>>;
type Handler = fn(Arc<Api>, Params, Request<ReqBody>) -> Pending;

/// One route of the table.
pub struct Route {
    pub method: Method,
    /// Path with `{name}` parameters.
    pub pattern: &'static str,
    handler: Handler,
}

/// A request's path parameters and query.
pub struct Params {
    path: BTreeMap<&'static str, String>,
    query: BTreeMap<String, String>,
}

impl Params {
    fn path(&self, name: &str) -> String {
        self.path.get(name).cloned().unwrap_or_default()
    }
    fn query(&self, name: &str) -> Option<String> {
        self.query.get(name).cloned()
    }
    fn job_id(&self) -> Result<u64, ApiError> {
        let s = self.path("id");
        s.parse()
            .map_err(|_| ApiError::bad_request(format!("job id {s:?} is not a number")))
    }
}

tokio::task_local! {
    /// Who the request being handled comes from (set by [`dispatch`]).
    static ACTOR: Actor;
}

/// The service as the request's actor (the audit log names it for the changes).
fn acting(api: &Api) -> LocalService {
    let actor = ACTOR.try_with(Actor::clone).unwrap_or(Actor::Token);
    api.service.acting(actor)
}

/// Runs a service call off the async threads and answers its report as JSON.
fn call<T: Serialize + Send + 'static>(
    api: Arc<Api>,
    status: StatusCode,
    f: impl FnOnce(&LocalService) -> Result<T, crate::engine::EngineError> + Send + 'static,
) -> Pending {
    Box::pin(async move {
        let service = acting(&api);
        let v = blocking(move || Ok(f(&service)?)).await?;
        Ok(json_response(status, &v))
    })
}

/// Decodes the JSON body into `B`, then does as [`call`].
fn call_with<B: DeserializeOwned + Send + 'static, T: Serialize + Send + 'static>(
    api: Arc<Api>,
    req: Request<ReqBody>,
    status: StatusCode,
    f: impl FnOnce(&LocalService, B) -> Result<T, crate::engine::EngineError> + Send + 'static,
) -> Pending {
    Box::pin(async move {
        require_json(&req)?;
        let service = acting(&api);
        let body: B = decode(&read_body(&api, req).await?)?;
        let v = blocking(move || Ok(f(&service, body)?)).await?;
        Ok(json_response(status, &v))
    })
}

/// A long call (a prune, a forget, a copy) followed as it goes when the client
/// asks for Server-Sent Events (`Accept: text/event-stream`): `progress` events, then
/// `end` with the report or `error` with the error body. Otherwise one JSON answer.
fn call_following<B: DeserializeOwned + Send + 'static, T: Serialize + Send + 'static>(
    api: Arc<Api>,
    req: Request<ReqBody>,
    f: impl FnOnce(&LocalService, B, &dyn Observer) -> Result<T, crate::engine::EngineError>
        + Send
        + 'static,
) -> Pending {
    if !wants_events(&req) {
        return call_with(api, req, OK, move |s, b| f(s, b, &Quiet));
    }
    Box::pin(async move {
        require_json(&req)?;
        let service = acting(&api);
        let body: B = decode(&read_body(&api, req).await?)?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        let observer = Streamed { tx: tx.clone() };
        let work = tokio::task::spawn_blocking(move || match f(&service, body, &observer) {
            Ok(report) => sse("end", &report),
            Err(e) => sse("error", &ApiError::from(e).body()),
        });
        let beat = heartbeat();
        tokio::spawn(finish_stream(work, tx, beat));
        let mut stream = event_stream(rx);
        stream.headers_mut().insert(
            HEARTBEAT_HEADER,
            hyper::header::HeaderValue::from(beat.as_millis() as u64),
        );
        Ok(stream)
    })
}

/// The header of a followed call's answer that announces, in milliseconds, how often
/// the daemon says it is alive while the call runs: the client times silence by it,
/// not by a setting of its own that may differ.
pub const HEARTBEAT_HEADER: &str = "x-reposafe-heartbeat-ms";

/// How often a followed call says it is alive when a daemon announces nothing.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// How often this daemon's followed calls that report nothing say they are alive:
/// [`DEFAULT_HEARTBEAT`], or `REPOSAFE_HEARTBEAT_MS` (at least 100 ms; tests, which
/// would otherwise wait minutes to see a client give up on a silent daemon). Announced
/// to the client in [`HEARTBEAT_HEADER`].
fn heartbeat() -> Duration {
    std::env::var("REPOSAFE_HEARTBEAT_MS")
        .ok()
        .and_then(|ms| ms.trim().parse::<u64>().ok())
        .map_or(DEFAULT_HEARTBEAT, |ms| Duration::from_millis(ms.max(100)))
}

/// Sends a comment line every `heartbeat` while `work` runs (a prune waiting for
/// other appliances may report nothing for a long time), then its last event; a
/// call that panicked ends with an `error` event, never silently.
async fn finish_stream(
    mut work: tokio::task::JoinHandle<Bytes>,
    tx: tokio::sync::mpsc::Sender<Bytes>,
    heartbeat: Duration,
) {
    let mut beat = tokio::time::interval(heartbeat);
    beat.tick().await;
    let last = loop {
        tokio::select! {
            done = &mut work => break done.unwrap_or_else(|_| {
                let e = ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error: the call stopped unexpectedly (see the daemon's log)",
                );
                sse("error", &e.body())
            }),
            _ = beat.tick() => {
                // A client gone meanwhile: the work is done all the same.
                let _ = tx.send(Bytes::from_static(b": alive\n\n")).await;
            }
        }
    };
    let _ = tx.send(last).await;
}

/// Whether the client asked for Server-Sent Events.
fn wants_events(req: &Request<ReqBody>) -> bool {
    req.headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

/// An observer that streams a prune's or a copy's progress as `progress` events.
struct Streamed {
    tx: tokio::sync::mpsc::Sender<Bytes>,
}

impl Streamed {
    /// Sends one `progress` event (a client gone meanwhile misses it).
    fn sender<E: Serialize>(&self) -> impl Fn(E) + Send + Sync + 'static {
        let tx = self.tx.clone();
        move |event| {
            let _ = tx.blocking_send(sse("progress", &event));
        }
    }
}

impl Observer for Streamed {
    fn prune_progress(&self) -> Arc<dyn PruneProgress> {
        Arc::new(PruneEvents(self.sender()))
    }

    fn copy_progress(&self) -> Arc<dyn CopyProgress> {
        Arc::new(CopyEvents::new(self.sender()))
    }
}

/// One Server-Sent Event with `data` as JSON.
fn sse(event: &str, data: &impl Serialize) -> Bytes {
    let json = serde_json::to_string(data).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    sse_json(event, &json)
}

/// One Server-Sent Event carrying `json`, already serialized.
fn sse_json(event: &str, json: &str) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {json}\n\n"))
}

/// A response streaming the events sent to `rx`.
fn event_stream(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response<ApiBody> {
    let mut r = Response::new(ChannelBody::new(rx).boxed());
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut().insert(
        "cache-control",
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    r
}

const OK: StatusCode = StatusCode::OK;
const CREATED: StatusCode = StatusCode::CREATED;
const ACCEPTED: StatusCode = StatusCode::ACCEPTED;

fn route(method: Method, pattern: &'static str, handler: Handler) -> Route {
    Route {
        method,
        pattern,
        handler,
    }
}

/// Every route the daemon serves (besides `/login`; `/healthz` is answered before
/// authentication, listed here for the documentation).
pub static TABLE: LazyLock<Vec<Route>> = LazyLock::new(|| {
    use Method as M;
    vec![
        route(M::GET, "/healthz", |api, _, req| {
            Box::pin(async move { Ok(super::health(&api, &req)) })
        }),
        route(M::GET, "/metrics", |api, _, _| {
            Box::pin(async move {
                let text = blocking(move || Ok(super::metrics::render(&api.service)?)).await?;
                Ok(reply(OK, "text/plain; version=0.0.4", text))
            })
        }),
        route(M::POST, "/logout", |api, _, req| {
            let signed = req.extensions().get::<Signed>().cloned();
            Box::pin(async move { Ok(logout(&api, signed).await) })
        }),
        route(M::GET, "/api/v1/status", |api, _, _| {
            call(api, OK, |s| s.overview())
        }),
        route(M::GET, "/api/v1/providers", |api, _, _| {
            call(api, OK, |s| s.providers())
        }),
        route(M::GET, "/api/v1/connections", |api, _, _| {
            call(api, OK, |s| s.connections())
        }),
        route(M::POST, "/api/v1/connections", |api, _, req| {
            call_with(api, req, CREATED, |s, b: AddConnection| s.add_connection(b))
        }),
        route(M::GET, "/api/v1/connections/{name}", |api, p, _| {
            call(api, OK, move |s| s.connection(&p.path("name")))
        }),
        route(M::DELETE, "/api/v1/connections/{name}", |api, p, _| {
            call(api, OK, move |s| s.remove_connection(&p.path("name")))
        }),
        route(M::POST, "/api/v1/connections/{name}/test", |api, p, _| {
            call(api, OK, move |s| s.test_connection(&p.path("name")))
        }),
        route(M::PUT, "/api/v1/connections/{name}/tls", |api, p, req| {
            call_with(api, req, OK, move |s, b: SetTls| {
                s.set_connection_tls(&p.path("name"), b)
            })
        }),
        route(
            M::GET,
            "/api/v1/connections/{name}/credentials",
            |api, p, _| call(api, OK, move |s| s.credentials(&p.path("name"))),
        ),
        route(
            M::POST,
            "/api/v1/connections/{name}/credentials",
            |api, p, req| {
                call_with(api, req, CREATED, move |s, b: AddCredential| {
                    s.add_credential(&p.path("name"), b)
                })
            },
        ),
        route(
            M::DELETE,
            "/api/v1/connections/{name}/credentials/{id}",
            |api, p, _| {
                call(api, OK, move |s| {
                    s.remove_credential(&p.path("name"), &p.path("id"))
                })
            },
        ),
        route(
            M::POST,
            "/api/v1/connections/{name}/credentials/{id}/enable",
            |api, p, _| {
                call(api, OK, move |s| {
                    s.set_credential_enabled(&p.path("name"), &p.path("id"), true)
                })
            },
        ),
        route(
            M::POST,
            "/api/v1/connections/{name}/credentials/{id}/disable",
            |api, p, _| {
                call(api, OK, move |s| {
                    s.set_credential_enabled(&p.path("name"), &p.path("id"), false)
                })
            },
        ),
        route(
            M::POST,
            "/api/v1/connections/{name}/credentials/{id}/test",
            |api, p, _| {
                call(api, OK, move |s| {
                    s.test_credential(&p.path("name"), &p.path("id"))
                })
            },
        ),
        route(M::GET, "/api/v1/plans", |api, _, _| {
            call(api, OK, |s| s.plans())
        }),
        route(M::POST, "/api/v1/plans", |api, _, req| {
            call_with(api, req, CREATED, |s, b: PlanSpec| s.add_plan(b))
        }),
        route(M::GET, "/api/v1/plans/{name}", |api, p, _| {
            call(api, OK, move |s| s.plan(&p.path("name")))
        }),
        route(M::PUT, "/api/v1/plans/{name}", |api, p, req| {
            call_with(api, req, OK, move |s, b: PlanSpec| {
                s.update_plan(&p.path("name"), b)
            })
        }),
        route(M::DELETE, "/api/v1/plans/{name}", |api, p, _| {
            call(api, OK, move |s| s.remove_plan(&p.path("name")))
        }),
        route(M::POST, "/api/v1/run", |api, _, req| {
            call_with(api, req, ACCEPTED, |s, b: RunRequest| s.submit(b))
        }),
        route(M::GET, "/api/v1/jobs", |api, p, _| {
            Box::pin(async move {
                let limit = match p.query("limit") {
                    Some(l) => l.parse::<usize>().map_err(|_| {
                        ApiError::bad_request(format!("limit {l:?} is not a number"))
                    })?,
                    None => 50,
                };
                call(api, OK, move |s| s.jobs(limit)).await
            })
        }),
        route(M::GET, "/api/v1/jobs/{id}", |api, p, _| {
            Box::pin(async move {
                let id = p.job_id()?;
                call(api, OK, move |s| s.job(id)).await
            })
        }),
        route(M::GET, "/api/v1/jobs/{id}/results", |api, p, _| {
            Box::pin(async move {
                let id = p.job_id()?;
                call(api, OK, move |s| s.job_results(id)).await
            })
        }),
        route(M::GET, "/api/v1/jobs/{id}/events", |api, p, _| {
            Box::pin(async move { events(api, p.job_id()?).await })
        }),
        route(M::POST, "/api/v1/jobs/{id}/cancel", |api, p, _| {
            Box::pin(async move {
                let id = p.job_id()?;
                call(api, OK, move |s| s.cancel(id)).await
            })
        }),
        route(M::GET, "/api/v1/repositories", |api, p, _| {
            call(api, OK, move |s| {
                s.repositories(p.query("connection").as_deref())
            })
        }),
        route(M::GET, "/api/v1/snapshots", |api, p, _| {
            Box::pin(async move {
                let req = snapshots_request(&p)?;
                call(api, OK, move |s| s.snapshots(req)).await
            })
        }),
        route(M::POST, "/api/v1/restore", |api, _, req| {
            call_with(api, req, ACCEPTED, |s, b: RestoreRequest| {
                s.submit_restore(b)
            })
        }),
        route(M::POST, "/api/v1/check", |api, _, req| {
            call_with(api, req, OK, |s, b: CheckRequest| s.check(b))
        }),
        route(M::POST, "/api/v1/forget", |api, _, req| {
            call_following(api, req, |s, b: ForgetRequest, o| s.forget(b, o))
        }),
        route(M::GET, "/api/v1/archive", |api, _, _| {
            call(api, OK, |s| s.archive())
        }),
        route(M::POST, "/api/v1/archive/copy", |api, _, req| {
            call_following(api, req, |s, b: CopyRequest, o| s.copy_archive(b, o))
        }),
        route(M::POST, "/api/v1/prune", |api, _, req| {
            call_following(api, req, |s, b: PruneRequest, o| s.prune(b, o))
        }),
        route(M::POST, "/api/v1/retention", |api, _, req| {
            call_with(api, req, OK, |s, b: RetentionQuery| s.retention_view(b))
        }),
        route(M::GET, "/api/v1/show", |api, p, _| {
            Box::pin(async move {
                let req = show_request(&p)?;
                call(api, OK, move |s| s.show(req)).await
            })
        }),
        route(M::POST, "/api/v1/export", |api, _, req| {
            call_with(api, req, OK, |s, b: ExportRequest| s.export(b))
        }),
        // issue 14 (lead)
        route(M::POST, "/api/v1/plans/preview", |api, _, req| {
            call_with(api, req, OK, |s, b: PlanSpec| s.preview_plan(b))
        }),
        // issue 14 (O): OAuth "Connect", credential rotation, connection edits.
        route(M::POST, "/api/v1/oauth/begin", |api, _, req| {
            let callback = callback_url(&api, &req);
            call_with(api, req, OK, move |s, mut b: OAuthBegin| {
                b.redirect_uri = b.redirect_uri.or(callback);
                s.oauth_begin(b)
            })
        }),
        route(M::GET, "/oauth/callback", |api, p, _| {
            Box::pin(async move { Ok(oauth_callback(api, p).await) })
        }),
        route(M::PUT, "/api/v1/connections/{name}", |api, p, req| {
            call_with(api, req, OK, move |s, b: EditConnection| {
                s.edit_connection(&p.path("name"), b)
            })
        }),
        route(
            M::PUT,
            "/api/v1/connections/{name}/credential",
            |api, p, req| {
                call_with(api, req, OK, move |s, b: RotateCredential| {
                    s.rotate_credential(&p.path("name"), b)
                })
            },
        ),
        // issue 14 (N): notifications
        route(M::GET, "/api/v1/notifications", |api, _, _| {
            call(api, OK, |s| s.notifications())
        }),
        route(M::PUT, "/api/v1/notifications", |api, _, req| {
            call_with(api, req, OK, |s, b: SetNotifications| {
                s.set_notifications(b)
            })
        }),
        route(M::POST, "/api/v1/notifications/test", |api, _, _| {
            call(api, OK, |s| s.test_notifications())
        }),
        // issue 14 (W): push-triggered backups and the audit log.
        route(M::GET, "/api/v1/connections/{name}/webhook", |api, p, _| {
            call(api, OK, move |s| s.webhook(&p.path("name")))
        }),
        route(
            M::POST,
            "/api/v1/connections/{name}/webhook/rotate",
            |api, p, _| call(api, OK, move |s| s.rotate_webhook_secret(&p.path("name"))),
        ),
        route(
            M::POST,
            "/api/v1/connections/{name}/webhook/register",
            |api, p, req| {
                call_with(api, req, OK, move |s, b: RegisterWebhook| {
                    s.register_webhook(&p.path("name"), b)
                })
            },
        ),
        route(M::GET, "/api/v1/audit", |api, p, _| {
            Box::pin(async move {
                let number = |name: &str| {
                    p.query(name)
                        .map(|v| {
                            v.parse::<u64>().map_err(|_| ApiError {
                                field: Some(name.into()),
                                ..ApiError::bad_request(format!("{name} {v:?} is not a number"))
                            })
                        })
                        .transpose()
                };
                let query = AuditQuery {
                    limit: number("limit")?.map(|l| l as usize),
                    before: number("before")?,
                };
                call(api, OK, move |s| s.audit(query)).await
            })
        }),
        // Answered before authentication (`super::hooks`); listed for the documentation.
        route(M::POST, "/hooks/{connection}", |api, p, req| {
            Box::pin(async move { Ok(super::hooks::handle(api, req, p.path("connection")).await) })
        }),
    ]
});

/// This daemon's `/oauth/callback` as the browser reaches it (from the request's
/// `Host`), when the request names none.
fn callback_url(api: &Api, req: &Request<ReqBody>) -> Option<String> {
    let host = super::auth::header(req, "host")?;
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    let scheme = if api.tls { "https" } else { "http" };
    valid.then(|| format!("{scheme}://{host}/oauth/callback"))
}

/// `GET /oauth/callback?state&code|error` (before authentication: the flow's state
/// is the proof): finishes the Connect flow and answers the page that leads on to
/// the connection.
async fn oauth_callback(api: Arc<Api>, p: Params) -> Response<ApiBody> {
    let req = OAuthFinish {
        state: p.query("state").unwrap_or_default(),
        code: p.query("code"),
        error: p.query("error"),
    };
    let outcome = blocking(move || Ok(api.service.oauth_finish(req)?)).await;
    let (status, page) = match &outcome {
        Ok(added) => (
            OK,
            crate::dashboard::oauth::callback_page(Ok(&added.connection.name)),
        ),
        Err(e) => (
            e.status,
            crate::dashboard::oauth::callback_page(Err(&e.message)),
        ),
    };
    if let Err(e) = &outcome {
        tracing::warn!("OAuth callback refused: {}", e.message);
    }
    html_reply(status, page.into_string())
}

fn show_request(p: &Params) -> Result<ShowRequest, ApiError> {
    let SnapshotsRequest {
        repository,
        connection,
        at,
    } = snapshots_request(p)?;
    Ok(ShowRequest {
        repository,
        connection,
        snapshot: p.query("snapshot"),
        at,
        kind: p.query("kind"),
    })
}

fn snapshots_request(p: &Params) -> Result<SnapshotsRequest, ApiError> {
    let repository = p.query("repository").ok_or_else(|| ApiError {
        field: Some("repository".into()),
        ..ApiError::bad_request("give ?repository=scope/slug")
    })?;
    let at = p.query("at").map(|a| parse_time("at", &a)).transpose()?;
    Ok(SnapshotsRequest {
        repository,
        connection: p.query("connection"),
        at,
    })
}

/// Path segments, percent-decoded.
fn segments(path: &str) -> Vec<String> {
    path.trim_end_matches('/')
        .split('/')
        .skip(1)
        .map(|s| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
        .collect()
}

/// The parameters of `pattern` in `segs`, if it matches.
fn matches(pattern: &'static str, segs: &[String]) -> Option<BTreeMap<&'static str, String>> {
    let parts: Vec<&'static str> = pattern.trim_end_matches('/').split('/').skip(1).collect();
    let segs: &[String] = if segs.len() == 1 && segs[0].is_empty() {
        &[]
    } else {
        segs
    };
    if parts.len() != segs.len() {
        return None;
    }
    let mut params = BTreeMap::new();
    for (part, seg) in parts.iter().zip(segs) {
        match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(name) => {
                params.insert(name, seg.clone());
            }
            None if part == seg => {}
            None => return None,
        }
    }
    Some(params)
}

pub(super) fn query<B>(req: &Request<B>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Dispatches an authenticated request through the table: 404 for an unknown
/// path, 405 for a known path with another method.
pub async fn dispatch(api: Arc<Api>, req: Request<ReqBody>, method: &Method, path: &str) -> Reply {
    let segs = segments(path);
    let mut known_path = false;
    for r in TABLE.iter() {
        if let Some(path_params) = matches(r.pattern, &segs) {
            known_path = true;
            if r.method == *method {
                let params = Params {
                    path: path_params,
                    query: query(&req),
                };
                let actor = req
                    .extensions()
                    .get::<Signed>()
                    .map_or(Actor::Token, Signed::actor);
                return ACTOR.scope(actor, (r.handler)(api, params, req)).await;
            }
        }
    }
    if known_path {
        Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path} (see docs/API.md)"),
        ))
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no route {method} {path} (see docs/API.md)"),
        ))
    }
}

fn parse_time(field: &str, s: &str) -> Result<OffsetDateTime, ApiError> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).map_err(|e| ApiError {
        field: Some(field.into()),
        ..ApiError::bad_request(format!(
            "field `{field}`: {s:?} is not an RFC 3339 time like 2026-11-20T10:00:00Z ({e})"
        ))
    })
}

/// Server-Sent Events: the job as JSON on every change, until it ends.
async fn events(api: Arc<Api>, id: u64) -> Reply {
    let first = {
        let api = api.clone();
        blocking(move || Ok(api.service.job(id)?)).await?
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let mut last = String::new();
        let mut job = first;
        loop {
            let json = serde_json::to_string(&job).unwrap_or_default();
            if json != last {
                let event = if job.is_finished() { "end" } else { "progress" };
                if tx.send(sse_json(event, &json)).await.is_err() {
                    return;
                }
                last = json;
            }
            if job.is_finished() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            let api = api.clone();
            match tokio::task::spawn_blocking(move || api.service.job(id)).await {
                Ok(Ok(next)) => job = next,
                _ => return,
            }
        }
    });
    Ok(event_stream(rx))
}

/// An HTML page: never cached, never framed.
pub(super) fn html_reply(status: StatusCode, html: String) -> Response<ApiBody> {
    let mut r = reply(status, "text/html; charset=utf-8", html);
    let h = r.headers_mut();
    h.insert(
        "cache-control",
        hyper::header::HeaderValue::from_static("no-store"),
    );
    h.insert(
        "x-frame-options",
        hyper::header::HeaderValue::from_static("DENY"),
    );
    h.insert(
        "content-security-policy",
        hyper::header::HeaderValue::from_static("frame-ancestors 'none'"),
    );
    r
}

/// The login form of the dashboard (the browser then keeps a session id in an
/// HttpOnly cookie, never the token).
pub fn login_page(api: &Api, error: Option<&str>) -> Response<ApiBody> {
    let mut r = html_reply(
        StatusCode::UNAUTHORIZED,
        crate::dashboard::layout::login_page(error, &api.token_file),
    );
    if let Ok(v) = "Bearer realm=\"reposafe\"".parse() {
        r.headers_mut().insert(hyper::header::WWW_AUTHENTICATE, v);
    }
    r
}

/// The session cookie: `value` for `max_age` seconds (0 ends it).
fn session_cookie(api: &Api, value: &str, max_age: u64) -> Option<hyper::header::HeaderValue> {
    let secure = if api.tls { "; Secure" } else { "" };
    format!(
        "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"
    )
    .parse()
    .ok()
}

fn see_other(text: &'static str, cookie: Option<hyper::header::HeaderValue>) -> Response<ApiBody> {
    let mut r = reply(StatusCode::SEE_OTHER, "text/plain", text);
    if let Some(c) = cookie {
        r.headers_mut().insert(hyper::header::SET_COOKIE, c);
    }
    r.headers_mut()
        .insert("location", hyper::header::HeaderValue::from_static("/"));
    r
}

/// `POST /login` with `token=...` (form): starts a dashboard session when the
/// token is right.
pub async fn login(api: &Api, req: Request<ReqBody>) -> Response<ApiBody> {
    if req.method() != Method::POST {
        return login_page(api, None);
    }
    if let Some(why) = cross_site(api, &req) {
        return error_response(ApiError::new(StatusCode::FORBIDDEN, why));
    }
    let body = match read_body(api, req).await {
        Ok(b) => b,
        Err(e) => return error_response(e),
    };
    let token: Option<String> = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.trim().to_string());
    match token {
        Some(t) if token_matches(api, &t) => {
            let (id, session) = api.sessions.create();
            record_session(api, Actor::Session(session.tag()), Some(true)).await;
            let cookie = session_cookie(api, &id, api.sessions.lifetime().as_secs());
            see_other("signed in\n", cookie)
        }
        _ => {
            record_session(api, Actor::Session("-".into()), Some(false)).await;
            login_page(api, Some("wrong token"))
        }
    }
}

/// Records a sign-in (`Some(ok)`) or a sign-out (`None`) in the audit log.
async fn record_session(api: &Api, actor: Actor, sign_in: Option<bool>) {
    let service = api.service.acting(actor);
    let recorded = blocking(move || {
        Ok(match sign_in {
            Some(ok) => service.record_sign_in(ok),
            None => service.record_sign_out(),
        }?)
    })
    .await;
    if let Err(e) = recorded {
        tracing::warn!("audit log: {}", e.message);
    }
}

/// The connection of a `/hooks/{connection}` path.
pub fn hook_connection(path: &str) -> Option<String> {
    let segs = segments(path);
    match segs.as_slice() {
        [hooks, connection] if hooks == "hooks" && !connection.is_empty() => {
            Some(connection.clone())
        }
        _ => None,
    }
}

/// `POST /logout`: ends the dashboard session (a bearer client has none).
async fn logout(api: &Api, signed: Option<Signed>) -> Response<ApiBody> {
    if let Some(Signed::Session(s)) = signed {
        api.sessions.end(&s);
        record_session(api, Actor::Session(s.tag()), None).await;
    }
    see_other("signed out\n", session_cookie(api, "", 0))
}
