//! `POST /hooks/{connection}`: Bitbucket's push webhooks, the one route reachable
//! without the admin token. Rate limited per connection and overall (429 with
//! `Retry-After`), the body read up to 1 MiB, its `X-Hub-Signature` checked against
//! the connection's webhook secret by the engine before anything else is looked at
//! (401, recorded in the audit log). `X-Event-Key` `repo:push` (Bitbucket Cloud:
//! `repository.full_name`) and `repo:refs_changed` (Data Center: the key of
//! `repository.project`, a slash, `repository.slug`) queue a debounced backup of that
//! repository (202); `diagnostics:ping` answers 200; other events are accepted and
//! ignored (202).

use super::{
    blocking, error_response, json_response, read_limited, Api, ApiBody, ApiError, ReqBody,
    BODY_LIMIT,
};
use crate::engine::Service;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A token bucket's size and refill rate.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    pub burst: f64,
    pub per_sec: f64,
}

/// The limits of webhook requests: per connection and over all of them.
#[derive(Clone, Copy, Debug)]
pub struct HookLimits {
    pub per_connection: Rate,
    pub overall: Rate,
}

impl Default for HookLimits {
    fn default() -> HookLimits {
        HookLimits {
            per_connection: Rate {
                burst: 20.0,
                per_sec: 2.0,
            },
            overall: Rate {
                burst: 120.0,
                per_sec: 20.0,
            },
        }
    }
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: rate.burst,
            at: now,
        }
    }

    /// Takes a token, or says how long until one is there.
    fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * rate.per_sec;
        self.tokens = (self.tokens + earned).min(rate.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64((1.0 - self.tokens) / rate.per_sec))
    }
}

/// At most this many connections' buckets are kept (names come from the request).
const MAX_BUCKETS: usize = 1024;

/// The webhook rate limiter.
pub struct HookLimiter {
    limits: HookLimits,
    buckets: Mutex<(Option<Bucket>, HashMap<String, Bucket>)>,
}

impl HookLimiter {
    pub fn new(limits: HookLimits) -> HookLimiter {
        HookLimiter {
            limits,
            buckets: Mutex::new((None, HashMap::new())),
        }
    }

    /// Lets a request for `connection` through, or says when to retry.
    pub fn admit(&self, connection: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let HookLimits {
            per_connection,
            overall,
        } = self.limits;
        let mut guard = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (all, each) = &mut *guard;
        if each.len() >= MAX_BUCKETS && !each.contains_key(connection) {
            // A bucket left alone long enough to be full again says nothing.
            let refill = Duration::from_secs_f64(per_connection.burst / per_connection.per_sec);
            each.retain(|_, b| now.saturating_duration_since(b.at) < refill);
        }
        all.get_or_insert_with(|| Bucket::full(overall, now))
            .take(overall, now)?;
        each.entry(connection.to_string())
            .or_insert_with(|| Bucket::full(per_connection, now))
            .take(per_connection, now)
    }
}

impl Default for HookLimiter {
    fn default() -> HookLimiter {
        HookLimiter::new(HookLimits::default())
    }
}

/// The repository a push event names, by its event key; `None` for other events.
pub fn pushed_repository(event: &str, body: &[u8]) -> Result<Option<String>, ApiError> {
    let field = match event {
        "repo:push" => "repository.full_name",
        "repo:refs_changed" => "repository.project.key and repository.slug",
        _ => return Ok(None),
    };
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the {event} body is not JSON: {e}")))?;
    let repo = &v["repository"];
    let name = match event {
        "repo:push" => repo["full_name"].as_str().map(str::to_string),
        _ => match (repo["project"]["key"].as_str(), repo["slug"].as_str()) {
            (Some(key), Some(slug)) => Some(format!("{key}/{slug}")),
            _ => None,
        },
    };
    name.map(Some)
        .ok_or_else(|| ApiError::bad_request(format!("the {event} body has no {field}")))
}

fn too_many(retry: Duration) -> Response<ApiBody> {
    let secs = retry.as_secs_f64().ceil().max(1.0) as u64;
    let mut r = error_response(ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many webhook requests; retry after {secs} s"),
    ));
    if let Ok(v) = secs.to_string().parse() {
        r.headers_mut().insert(hyper::header::RETRY_AFTER, v);
    }
    r
}

/// Answers one webhook request for `connection`.
pub async fn handle(api: Arc<Api>, req: Request<ReqBody>, connection: String) -> Response<ApiBody> {
    if req.method() != Method::POST {
        return error_response(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "webhooks are POSTed to /hooks/{connection}",
        ));
    }
    if let Err(retry) = api.hook_limiter.admit(&connection) {
        return too_many(retry);
    }
    match receive(api, req, connection).await {
        Ok(r) => r,
        Err(e) => error_response(e),
    }
}

async fn receive(
    api: Arc<Api>,
    req: Request<ReqBody>,
    connection: String,
) -> Result<Response<ApiBody>, ApiError> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let signature = header("x-hub-signature");
    let event = header("x-event-key").unwrap_or_default();
    let (parts, body) = req.into_parts();
    let body = read_limited(&api, body, BODY_LIMIT, &parts.headers).await?;
    let checked = {
        let (api, connection, body) = (api.clone(), connection.clone(), body.clone());
        blocking(move || {
            Ok(api
                .service
                .check_push_signature(&connection, &body, signature.as_deref())?)
        })
    };
    checked.await?;
    if event == "diagnostics:ping" {
        return Ok(json_response(StatusCode::OK, &json!({ "ok": "ping" })));
    }
    let Some(repository) = pushed_repository(&event, &body)? else {
        return Ok(json_response(
            StatusCode::ACCEPTED,
            &json!({ "ignored": format!("event {event:?} starts no backup") }),
        ));
    };
    let queued = blocking(move || Ok(api.service.push_received(&connection, &repository)?)).await?;
    Ok(json_response(StatusCode::ACCEPTED, &queued))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refuse_beyond_the_burst_and_name_the_wait() {
        let limiter = HookLimiter::new(HookLimits {
            per_connection: Rate {
                burst: 3.0,
                per_sec: 1.0,
            },
            overall: Rate {
                burst: 5.0,
                per_sec: 1.0,
            },
        });
        for _ in 0..3 {
            assert!(limiter.admit("a").is_ok());
        }
        let wait = limiter.admit("a").expect_err("over the burst");
        assert!(wait > Duration::from_millis(500) && wait <= Duration::from_secs(1));
        // Another connection has its own bucket, until the overall one is empty.
        assert!(limiter.admit("b").is_ok());
        assert!(limiter.admit("c").is_err());
    }

    #[test]
    fn push_events_name_their_repository() {
        let cloud = br#"{"repository":{"full_name":"acme/widgets","type":"repository"},"push":{"changes":[]}}"#;
        let dc = br#"{"eventKey":"repo:refs_changed","repository":{"slug":"widgets","project":{"key":"PRJ"}},"changes":[]}"#;
        let name = |e, b| pushed_repository(e, b).expect("parsed");
        assert_eq!(name("repo:push", cloud).as_deref(), Some("acme/widgets"));
        assert_eq!(
            name("repo:refs_changed", dc).as_deref(),
            Some("PRJ/widgets")
        );
        assert_eq!(name("pullrequest:created", cloud), None);
        assert!(pushed_repository("repo:push", dc).is_err());
        assert!(pushed_repository("repo:push", b"not json").is_err());
    }
}
