//! The Git LFS batch API: which URL and headers give (download) or take (upload, verify)
//! each object.

use super::{clipped, shown, LfsError, MEDIA_TYPE};
use crate::git::LfsPointer;
use crate::providers::failover::{self, Event, Outcome};
use crate::providers::pool::PoolExhausted;
use crate::providers::HttpGate;
use secrecy::ExposeSecret;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The largest batch answer read (100 objects take a few tens of KiB).
const MAX_ANSWER: u64 = 16 << 20;

/// Where and how to download, upload or verify one object, as the server said (opaque).
#[derive(Clone, Debug)]
pub(crate) struct Action {
    pub href: String,
    pub headers: Vec<(String, String)>,
    /// When the `href` stops working, when the server said (`expires_in`/`expires_at`).
    pub expires: Option<Instant>,
}

/// For each object asked for: its download action, or why the server gives none.
pub(crate) type Answers = Vec<(LfsPointer, Result<Action, String>)>;

/// What a batch request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    Download,
    Upload,
}

/// The actions the server gives one object of an upload batch: none when it has the
/// object already; `verify` only when it wants to be told of the upload.
#[derive(Clone, Debug, Default)]
pub(crate) struct Granted {
    pub upload: Option<Action>,
    pub verify: Option<Action>,
}

/// For each object of an upload batch: its actions, or why the server refuses it.
pub(crate) type Grants = Vec<(LfsPointer, Result<Granted, String>)>;

/// For each object asked for: the actions the server gives, or its error.
type Answered = Vec<(LfsPointer, Result<Actions, String>)>;

#[derive(serde::Deserialize)]
struct BatchAnswer {
    #[serde(default)]
    transfer: Option<String>,
    #[serde(default)]
    objects: Vec<ObjectAnswer>,
}

#[derive(serde::Deserialize)]
struct ObjectAnswer {
    oid: String,
    #[serde(default)]
    actions: Option<Actions>,
    #[serde(default)]
    error: Option<ObjectError>,
}

#[derive(Default, serde::Deserialize)]
struct Actions {
    #[serde(default)]
    download: Option<ActionAnswer>,
    #[serde(default)]
    upload: Option<ActionAnswer>,
    #[serde(default)]
    verify: Option<ActionAnswer>,
}

#[derive(serde::Deserialize)]
struct ActionAnswer {
    href: String,
    #[serde(default)]
    header: BTreeMap<String, String>,
    /// Seconds from now.
    #[serde(default)]
    expires_in: Option<i64>,
    /// RFC 3339.
    #[serde(default)]
    expires_at: Option<String>,
}

impl ActionAnswer {
    fn into_action(self, now: Instant) -> Action {
        Action {
            expires: self.expires(now),
            href: self.href,
            headers: self.header.into_iter().collect(),
        }
    }

    /// When the action stops working (`expires_in` wins, as in git-lfs).
    fn expires(&self, now: Instant) -> Option<Instant> {
        // Beyond what the clock holds: as good as never (`None`).
        if let Some(secs) = self.expires_in.filter(|s| *s != 0) {
            return now.checked_add(Duration::from_secs(secs.max(0) as u64));
        }
        let at = time::OffsetDateTime::parse(
            self.expires_at.as_deref()?,
            &time::format_description::well_known::Rfc3339,
        )
        .ok()?;
        let left = at - time::OffsetDateTime::now_utc();
        now.checked_add(Duration::try_from(left).unwrap_or(Duration::ZERO))
    }
}

#[derive(serde::Deserialize)]
struct ObjectError {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    message: Option<String>,
}

/// Asks the LFS server at `lfs_url` how to download `objects` (at most
/// [`super::BATCH_SIZE`]). `Err(reason)` when the request itself failed; per-object
/// refusals are in the answers.
pub(crate) fn request(
    gate: &HttpGate,
    lfs_url: &str,
    objects: &[LfsPointer],
    policy: &failover::Policy,
    interrupt: &AtomicBool,
) -> Result<Result<Answers, String>, LfsError> {
    let answered = ask(
        gate,
        lfs_url,
        Operation::Download,
        objects,
        policy,
        interrupt,
    )?;
    Ok(answered.map(|answers| {
        answers
            .into_iter()
            .map(|(p, a)| {
                let action = a.and_then(|a| match a.download {
                    Some(d) => Ok(d.into_action(Instant::now())),
                    None => Err("the LFS server gave no download action for it".to_string()),
                });
                (p, action)
            })
            .collect()
    }))
}

/// Asks the LFS server at `lfs_url` where to upload `objects` (at most
/// [`super::BATCH_SIZE`]); like [`request`].
pub(crate) fn request_upload(
    gate: &HttpGate,
    lfs_url: &str,
    objects: &[LfsPointer],
    policy: &failover::Policy,
    interrupt: &AtomicBool,
) -> Result<Result<Grants, String>, LfsError> {
    let answered = ask(gate, lfs_url, Operation::Upload, objects, policy, interrupt)?;
    let now = Instant::now();
    Ok(answered.map(|answers| {
        answers
            .into_iter()
            .map(|(p, a)| {
                let granted = a.map(|a| Granted {
                    upload: a.upload.map(|u| u.into_action(now)),
                    verify: a.verify.map(|v| v.into_action(now)),
                });
                (p, granted)
            })
            .collect()
    }))
}

/// One batch request of `operation`, with the failover of git fetches.
fn ask(
    gate: &HttpGate,
    lfs_url: &str,
    operation: Operation,
    objects: &[LfsPointer],
    policy: &failover::Policy,
    interrupt: &AtomicBool,
) -> Result<Result<Answered, String>, LfsError> {
    let url = format!("{}/objects/batch", lfs_url.trim_end_matches('/'));
    if !gate.is_allowed(&url) {
        return Err(LfsError::NotAllowed { url: shown(&url) });
    }
    let body = serde_json::json!({
        "operation": match operation {
            Operation::Download => "download",
            Operation::Upload => "upload",
        },
        "transfers": ["basic"],
        "objects": objects.iter().map(|o| serde_json::json!({"oid": o.oid, "size": o.size})).collect::<Vec<_>>(),
        "hash_algo": "sha256",
    })
    .to_string();
    let mut req = BatchRequest {
        gate,
        url: &url,
        body: body.as_bytes(),
        lane: 0,
    };
    let notice = |m: &str| gate.notify(m);
    let finished = failover::run(gate.pool(), policy, Some(interrupt), &notice, &mut req);
    if interrupt.load(Ordering::Relaxed) {
        return Err(LfsError::Interrupted);
    }
    Ok(finished.output.and_then(|resp| answers(resp, objects)))
}

/// The answers of a batch response, in the order of `objects`.
fn answers(resp: reqwest::blocking::Response, objects: &[LfsPointer]) -> Result<Answered, String> {
    let status = resp.status();
    let mut body = Vec::new();
    resp.take(MAX_ANSWER)
        .read_to_end(&mut body)
        .map_err(|e| format!("the batch answer could not be read: {e}"))?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v["message"]
                    .as_str()
                    .map(|m| format!(": {}", clipped(m, 200)))
            })
            .unwrap_or_default();
        let why = match status.as_u16() {
            401 | 403 => "; the credential may not do this to the repository's LFS objects",
            _ => "",
        };
        return Err(format!("the LFS server answered {status}{message}{why}"));
    }
    let answer: BatchAnswer = serde_json::from_slice(&body)
        .map_err(|e| format!("the LFS server's batch answer is not usable: {e}"))?;
    if let Some(t) = answer.transfer.as_deref().filter(|t| *t != "basic") {
        return Err(format!(
            "the LFS server chose transfer {:?}; only \"basic\" is supported",
            clipped(t, 40)
        ));
    }
    let mut by_oid: HashMap<String, ObjectAnswer> = answer
        .objects
        .into_iter()
        .map(|o| (o.oid.clone(), o))
        .collect();
    Ok(objects
        .iter()
        .map(|p| {
            let action = match by_oid.remove(&p.oid) {
                None => Err("the LFS server's batch answer does not name it".to_string()),
                Some(ObjectAnswer { error: Some(e), .. }) => Err(format!(
                    "the LFS server answered {}: {}",
                    e.code
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "an error".into()),
                    clipped(e.message.as_deref().unwrap_or("no message"), 200)
                )),
                Some(ObjectAnswer { actions, .. }) => Ok(actions.unwrap_or_default()),
            };
            (p.clone(), action)
        })
        .collect())
}

/// What one attempt of the batch request gives back.
type Sent = Result<reqwest::blocking::Response, String>;

/// The batch request, as [`failover::run`] makes it (like a git fetch).
struct BatchRequest<'a> {
    gate: &'a HttpGate,
    url: &'a str,
    body: &'a [u8],
    /// The credential of the latest attempt.
    lane: usize,
}

impl BatchRequest<'_> {
    /// Whether the attempt's failure was the network's (worth retrying).
    fn network(&self, output: &Sent) -> bool {
        matches!(output, Err(reason) if reason.starts_with(NETWORK))
    }
}

/// How a network failure's reason starts (so [`BatchRequest::outcome`] knows it).
const NETWORK: &str = "network: ";

impl failover::Attempts for BatchRequest<'_> {
    type Output = Sent;

    fn attempt(&mut self, lane: usize, _attempt: u32) -> Sent {
        self.lane = lane;
        let gate = self.gate;
        gate.pool().pace(lane, &|m| gate.notify(m));
        gate.stats.requests.fetch_add(1, Ordering::Relaxed);
        let auth = gate.pool().auth(lane);
        let header = auth.git_header().map_err(|e| e.to_string())?;
        let resp = gate
            .client()
            .post(self.url)
            .header("Accept", MEDIA_TYPE)
            .header("Content-Type", MEDIA_TYPE)
            .header("Authorization", header.expose_secret())
            .body(self.body.to_vec())
            .send()
            .map_err(|e| match gate.describe_unsent(e) {
                (reason, true) => format!("{NETWORK}{reason}"),
                (reason, false) => reason,
            })?;
        if resp.status().as_u16() == 401 && auth.kind().is_oauth() {
            auth.invalidate();
        }
        Ok(resp)
    }

    fn outcome(&self, output: &Sent) -> Outcome {
        match output {
            Err(_) if self.network(output) => Outcome::Network,
            Err(_) => Outcome::Final,
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| failover::parse_retry_after(v, time::OffsetDateTime::now_utc()));
                let oauth = self.gate.pool().auth(self.lane).kind().is_oauth();
                Outcome::from_status(status, retry_after, oauth, || {
                    format!("the LFS server answered {status} to {}", shown(self.url))
                })
            }
        }
    }

    fn event(&mut self, event: &Event<'_>, output: &Sent) {
        let gate = self.gate;
        match event {
            Event::RateLimited {
                credential,
                cooldown,
                others,
                going_on,
            } => {
                gate.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                if *going_on {
                    let secs = failover::secs_ceil(*cooldown);
                    gate.notify(&if *others {
                        format!("credential {credential} rate limited (LFS), cooling down {secs} s; another credential takes over")
                    } else {
                        format!("rate limited (LFS), waiting {secs} s")
                    });
                }
            }
            Event::Refused { credential } => {
                let status = output.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
                gate.notify(&format!(
                    "credential {credential} answered {status} (LFS); continuing with the others"
                ));
            }
            Event::Retrying { after } => {
                let why = match output {
                    Err(reason) => reason.trim_start_matches(NETWORK).to_string(),
                    Ok(resp) => format!("LFS server error {}", resp.status().as_u16()),
                };
                gate.stats.retries.fetch_add(1, Ordering::Relaxed);
                gate.notify(&format!("{why}, waiting {} s", failover::secs_ceil(*after)));
            }
        }
    }

    fn no_credential(&mut self, err: PoolExhausted) -> Sent {
        Err(format!("no usable credential: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(expires_in: Option<i64>, expires_at: Option<&str>) -> ActionAnswer {
        ActionAnswer {
            href: "https://lfs.example/o".into(),
            header: BTreeMap::new(),
            expires_in,
            expires_at: expires_at.map(str::to_string),
        }
    }

    #[test]
    fn an_action_expires_when_the_server_says_and_never_past_what_the_clock_holds() {
        let now = Instant::now();
        assert_eq!(
            answer(Some(60), None).expires(now),
            Some(now + Duration::from_secs(60))
        );
        assert_eq!(answer(Some(-5), None).expires(now), Some(now));
        assert_eq!(answer(None, None).expires(now), None);
        assert!(answer(None, Some("2020-01-01T00:00:00Z"))
            .expires(now)
            .is_some_and(|at| at <= now));
        // A server's absurd figure is no panic: the action is taken as not expiring.
        assert_eq!(answer(Some(i64::MAX), None).expires(now), None);
    }
}
