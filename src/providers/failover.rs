//! The one failover policy for everything that talks to a provider over HTTP: the API
//! requests a plugin sends through [`HttpGate`](super::HttpGate) and the git fetches of a
//! backup (`engine::backup`).
//!
//! [`classify`] is a pure function from what one attempt came back with ([`Outcome`]:
//! an HTTP status with its `Retry-After`, or a git error class), the attempt's counters
//! ([`Tries`]) and the [`Policy`] to a [`Verdict`]: done, retry after a wait, rotate to
//! another credential (the principal is cooling down after a 429, or the credential was
//! refused with 401/403 and is taken out of the job), or fail. [`run`] is the loop both
//! callers use: it picks a credential from the [`CredentialPool`], makes the attempt,
//! cools the principal down on every 429 (the server's `Retry-After` when it sent one,
//! else the pool's 30 s doubling ±25% back-off; at most 5 min), takes refused credentials
//! out, waits where the verdict says so and tells the caller each step ([`Event`]) so it
//! can say so in the job's progress (`rate limited, waiting N s`) and count it.
//!
//! A 429 that names its wait (`Retry-After`) is a wait, not a failure: the request
//! goes on after it however many it meets, as long as they keep it waiting less than
//! [`Policy::rate_limit_wait`] in all; past that it fails (the caller's error names the
//! server) and the job's progress says how long it waited. Only 429s without
//! `Retry-After` are counted against [`Policy::rate_limit_retries`].

use super::pool::{CredentialPool, PoolExhausted};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What one attempt came back with, as far as failing over is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A usable answer (2xx/3xx, or a git fetch that finished).
    Success,
    /// An answer no retry changes (404, other 4xx, an untrusted certificate, ...):
    /// handed back as it is.
    Final,
    /// 429 Too Many Requests, with the server's `Retry-After` when it sent one.
    RateLimited { retry_after: Option<Duration> },
    /// 401/403: the credential was refused. `renewable`: a 401 of a credential whose
    /// token the host fetches anew (OAuth), worth one more try. `reason` is recorded
    /// as why the credential was taken out of the job.
    Refused {
        status: u16,
        renewable: bool,
        reason: String,
    },
    /// A 5xx answer, with the server's `Retry-After` when it sent one.
    ServerError { retry_after: Option<Duration> },
    /// No answer: the connection failed, was reset or timed out (a git transport error).
    Network,
}

impl Outcome {
    /// The outcome of an HTTP answer with `status`. `renewable` and `reason` are used
    /// for 401/403 (see [`Outcome::Refused`]).
    pub fn from_status(
        status: u16,
        retry_after: Option<Duration>,
        renewable: bool,
        reason: impl FnOnce() -> String,
    ) -> Outcome {
        match status {
            429 => Outcome::RateLimited { retry_after },
            401 | 403 => Outcome::Refused {
                status,
                renewable: renewable && status == 401,
                reason: reason(),
            },
            500..=599 => Outcome::ServerError { retry_after },
            s if s < 400 => Outcome::Success,
            _ => Outcome::Final,
        }
    }
}

/// What a request whose 429s without `Retry-After` outlasted
/// [`Policy::rate_limit_retries`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenExhausted {
    /// Hand the 429 back (an API request: the plugin sees it).
    GiveUp,
    /// Count it as a transient failure: back off and start over (a git fetch).
    BackOff,
}

/// How hard to try.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Retries after the first attempt for transient failures (network, 5xx).
    pub retries: u32,
    /// First back-off when the server names no wait; doubles per retry, ±25% jitter.
    pub backoff: Duration,
    /// Longest back-off after a network failure (or an exhausted rate limit).
    pub network_wait_cap: Duration,
    /// Longest wait after a 5xx (its `Retry-After` or the back-off).
    pub max_wait: Duration,
    /// 429s without `Retry-After` one request may meet and go on (each cools its
    /// principal down); callers add the pool's size so every credential gets its
    /// turn. Also sets how long 429s with `Retry-After` may keep a request waiting
    /// ([`Policy::rate_limit_wait`]).
    pub rate_limit_retries: u32,
    /// What happens after that many.
    pub when_exhausted: WhenExhausted,
}

impl Policy {
    /// The policy of the host's own transfers (git fetches, LFS batches): `retries`
    /// transient failures backed off from `backoff` up to `cap`, `rate_limit_retries`
    /// 429s, then back off rather than fail at once.
    pub fn backing_off(
        retries: u32,
        backoff: Duration,
        cap: Duration,
        rate_limit_retries: u32,
    ) -> Policy {
        Policy {
            retries,
            backoff,
            network_wait_cap: cap,
            max_wait: cap,
            rate_limit_retries,
            when_exhausted: WhenExhausted::BackOff,
        }
    }

    /// Back-off before retry `n` (1-based): `backoff` doubled each time, times
    /// `jitter` (0.75–1.25), at most `max_wait`.
    pub fn backoff(&self, n: u32, jitter: f64) -> Duration {
        let ms = self.backoff.as_millis() as f64 * 2f64.powi(n.saturating_sub(1).min(16) as i32);
        Duration::from_millis((ms * jitter) as u64).min(self.max_wait)
    }

    /// How long one request may keep meeting 429s that name their wait before it
    /// fails: `rate_limit_retries` of the longest waits (`max_wait`). 7 min for a git
    /// fetch and 35 min for an API request of a job with one credential.
    pub fn rate_limit_wait(&self) -> Duration {
        self.max_wait.saturating_mul(self.rate_limit_retries.max(1))
    }
}

/// A random back-off factor in 0.75–1.25 (±25% jitter).
pub fn jitter() -> f64 {
    0.75 + rand::random::<f64>() * 0.5
}

/// Where a request stands when its attempt's outcome is classified.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tries {
    /// This attempt's number, from 1; each [`Verdict::Retry`] adds one, rotations don't.
    pub attempt: u32,
    /// 429s met since the request (re)started, this one included.
    pub rate_limited: u32,
    /// How long ago the first of those 429s came (zero at the first).
    pub rate_limited_for: Duration,
    /// Credentials of the pool still usable besides the one just used.
    pub others: usize,
    /// The back-off factor for this attempt (see [`jitter`]).
    pub jitter: f64,
}

/// Why a request moves to another credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The credential's principal is cooling down after a 429; the pool gives the
    /// next credential (or this one again once its cool-down ends).
    CoolingDown,
    /// The credential was refused (401/403) and is taken out of the job.
    Refused(String),
}

/// What to do after an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Success: hand the answer back.
    Done,
    /// Wait `after`, then try again (a new attempt; the 429 count starts over).
    Retry { after: Duration },
    /// Try again on the credential the pool gives next (not a new attempt).
    Rotate(Rotation),
    /// Hand the answer back as it is.
    Fail,
}

/// The verdict on `outcome` for a request at `tries` under `policy`.
pub fn classify(outcome: &Outcome, tries: &Tries, policy: &Policy) -> Verdict {
    let retries_left = tries.attempt <= policy.retries;
    let backoff = policy.backoff(tries.attempt, tries.jitter);
    match outcome {
        Outcome::Success => Verdict::Done,
        Outcome::Final => Verdict::Fail,
        Outcome::Network if retries_left => Verdict::Retry {
            after: backoff.min(policy.network_wait_cap),
        },
        Outcome::ServerError { retry_after } if retries_left => Verdict::Retry {
            after: retry_after.unwrap_or(backoff).min(policy.max_wait),
        },
        Outcome::Network | Outcome::ServerError { .. } => Verdict::Fail,
        Outcome::RateLimited { retry_after } => {
            let waiting = tries.rate_limited_for < policy.rate_limit_wait();
            let counted = retry_after.is_some() || tries.rate_limited <= policy.rate_limit_retries;
            if waiting && counted {
                Verdict::Rotate(Rotation::CoolingDown)
            } else if retry_after.is_some() {
                // Waited out every 429 as asked, for as long as a request may:
                // starting over would only wait again.
                Verdict::Fail
            } else {
                exhausted(policy, retries_left, backoff)
            }
        }
        Outcome::Refused {
            renewable: true, ..
        } if tries.attempt == 1 => Verdict::Retry {
            after: Duration::ZERO,
        },
        Outcome::Refused { reason, .. } if tries.others > 0 => {
            Verdict::Rotate(Rotation::Refused(reason.clone()))
        }
        Outcome::Refused { .. } => Verdict::Fail,
    }
}

/// The verdict on a 429 without `Retry-After` past [`Policy::rate_limit_retries`].
fn exhausted(policy: &Policy, retries_left: bool, backoff: Duration) -> Verdict {
    match policy.when_exhausted {
        WhenExhausted::BackOff if retries_left => Verdict::Retry {
            after: backoff.min(policy.network_wait_cap),
        },
        _ => Verdict::Fail,
    }
}

/// The wait a `Retry-After` value asks for: delta-seconds (what Bitbucket sends) or an
/// HTTP-date (a date in the past means no wait). `None` when unreadable. The caller caps it.
pub fn parse_retry_after(value: &str, now: time::OffsetDateTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
    let secs = (at - now).whole_seconds().max(0);
    Some(Duration::from_secs(secs as u64))
}

/// What [`run`] did, told to the caller as it happens (for notices and counters).
#[derive(Clone, Debug, PartialEq)]
pub enum Event<'a> {
    /// A 429 cooled `credential`'s principal down for `cooldown`. `others`: other
    /// credentials are usable; `going_on`: the request is tried again on the next one.
    RateLimited {
        credential: &'a str,
        cooldown: Duration,
        others: bool,
        going_on: bool,
    },
    /// `credential` was refused and is out of the job; the others go on.
    Refused { credential: &'a str },
    /// The next attempt follows after `after`.
    Retrying { after: Duration },
}

/// One request as [`run`] sees it.
pub trait Attempts {
    /// What one attempt gives back (and what [`run`] hands back at the end).
    type Output;
    /// Makes attempt number `attempt` with the pool's credential `lane`.
    fn attempt(&mut self, lane: usize, attempt: u32) -> Self::Output;
    /// How the attempt that gave `output` went.
    fn outcome(&self, output: &Self::Output) -> Outcome;
    /// Hears what the loop does next (after `output`): say it, count it.
    fn event(&mut self, event: &Event<'_>, output: &Self::Output);
    /// The output when the pool has no usable credential left.
    fn no_credential(&mut self, err: PoolExhausted) -> Self::Output;
}

/// How a request ended.
#[derive(Debug)]
pub struct Finished<O> {
    /// The last attempt's output (or the pool's refusal).
    pub output: O,
    /// Attempts made: 1 plus the retries (rotations do not count).
    pub attempts: u32,
}

/// Makes `request` with the credentials of `pool` until a verdict ends it. Budget and
/// cool-down waits happen in the pool (told through `notice`), back-off waits here.
/// When `interrupt` is set, nothing is tried again.
pub fn run<A: Attempts>(
    pool: &CredentialPool,
    policy: &Policy,
    interrupt: Option<&AtomicBool>,
    notice: &dyn Fn(&str),
    request: &mut A,
) -> Finished<A::Output> {
    let mut tries = Tries {
        attempt: 1,
        rate_limited: 0,
        rate_limited_for: Duration::ZERO,
        others: 0,
        jitter: 1.0,
    };
    // When the first 429 since the request (re)started came.
    let mut limited_since: Option<Instant> = None;
    loop {
        let lane = match pool.choose(&[], notice) {
            Ok(lane) => lane,
            Err(e) => {
                return Finished {
                    output: request.no_credential(e),
                    attempts: tries.attempt,
                }
            }
        };
        let output = request.attempt(lane, tries.attempt);
        let outcome = request.outcome(&output);
        // Every 429 is counted and cools its principal down, also the last one.
        let cooldown = match &outcome {
            Outcome::RateLimited { retry_after } => {
                let now = Instant::now();
                tries.rate_limited += 1;
                tries.rate_limited_for = now.duration_since(*limited_since.get_or_insert(now));
                Some(pool.rate_limited(lane, *retry_after))
            }
            _ => None,
        };
        tries.others = pool.usable_besides(lane);
        tries.jitter = jitter();
        let mut verdict = classify(&outcome, &tries, policy);
        if interrupt.is_some_and(|i| i.load(Ordering::Relaxed)) && verdict != Verdict::Done {
            verdict = Verdict::Fail;
        }
        if let Some(cooldown) = cooldown {
            let event = Event::RateLimited {
                credential: pool.id(lane),
                cooldown,
                others: tries.others > 0,
                going_on: verdict == Verdict::Rotate(Rotation::CoolingDown),
            };
            request.event(&event, &output);
            if verdict == Verdict::Fail && classify(&outcome, &tries, policy) == Verdict::Fail {
                notice(&gave_up(pool.id(lane), &outcome, &tries));
            }
        }
        match verdict {
            Verdict::Done => {
                pool.ok(lane);
                return Finished {
                    output,
                    attempts: tries.attempt,
                };
            }
            Verdict::Fail => {
                return Finished {
                    output,
                    attempts: tries.attempt,
                }
            }
            Verdict::Rotate(Rotation::CoolingDown) => {}
            Verdict::Rotate(Rotation::Refused(reason)) => {
                pool.fail(lane, &reason);
                request.event(
                    &Event::Refused {
                        credential: pool.id(lane),
                    },
                    &output,
                );
            }
            Verdict::Retry { after } => {
                request.event(&Event::Retrying { after }, &output);
                if !after.is_zero() {
                    std::thread::sleep(after);
                }
                tries.attempt += 1;
                tries.rate_limited = 0;
                limited_since = None;
            }
        }
    }
}

/// What the job's progress says when a request stops on a 429: how long its 429s
/// kept it waiting, or how many came without a wait named.
fn gave_up(credential: &str, outcome: &Outcome, tries: &Tries) -> String {
    match outcome {
        Outcome::RateLimited {
            retry_after: Some(_),
        } => format!(
            "credential {credential} still rate limited after waiting {} s in all, each 429 as its Retry-After asked; giving up on this request",
            secs_ceil(tries.rate_limited_for)
        ),
        _ => format!(
            "credential {credential} rate limited {} times without a Retry-After; giving up on this request",
            tries.rate_limited
        ),
    }
}

/// `d` in whole seconds, rounded up, for notices (`waiting 1 s` for 20 ms).
pub fn secs_ceil(d: Duration) -> u64 {
    d.as_secs_f64().ceil() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::pool::PoolCredential;
    use crate::providers::{AuthScheme, Authenticator};
    use crate::vault::{Credential, CredentialKind};
    use std::sync::Arc;

    fn policy(when_exhausted: WhenExhausted) -> Policy {
        Policy {
            retries: 2,
            backoff: Duration::from_secs(30),
            network_wait_cap: Duration::from_secs(10),
            max_wait: Duration::from_secs(300),
            rate_limit_retries: 3,
            when_exhausted,
        }
    }

    fn at(attempt: u32, rate_limited: u32, others: usize) -> Tries {
        Tries {
            attempt,
            rate_limited,
            rate_limited_for: Duration::ZERO,
            others,
            jitter: 1.0,
        }
    }

    fn refused(status: u16, renewable: bool) -> Outcome {
        Outcome::Refused {
            status,
            renewable,
            reason: format!("the server answered {status}"),
        }
    }

    #[test]
    fn statuses_map_to_outcomes() {
        let r = || "why".to_string();
        let ra = Some(Duration::from_secs(7));
        assert_eq!(Outcome::from_status(200, None, false, r), Outcome::Success);
        assert_eq!(Outcome::from_status(304, None, false, r), Outcome::Success);
        assert_eq!(
            Outcome::from_status(429, ra, false, r),
            Outcome::RateLimited { retry_after: ra }
        );
        assert_eq!(
            Outcome::from_status(503, ra, false, r),
            Outcome::ServerError { retry_after: ra }
        );
        assert_eq!(Outcome::from_status(404, None, true, r), Outcome::Final);
        assert_eq!(Outcome::from_status(400, None, false, r), Outcome::Final);
        // Only a 401 is renewable; a 403 never is.
        assert_eq!(
            Outcome::from_status(401, None, true, r),
            refused_with(401, true)
        );
        assert_eq!(
            Outcome::from_status(403, None, true, r),
            refused_with(403, false)
        );
    }

    fn refused_with(status: u16, renewable: bool) -> Outcome {
        Outcome::Refused {
            status,
            renewable,
            reason: "why".into(),
        }
    }

    #[test]
    fn success_is_done_and_final_answers_fail_at_once() {
        let p = policy(WhenExhausted::GiveUp);
        assert_eq!(classify(&Outcome::Success, &at(3, 9, 0), &p), Verdict::Done);
        assert_eq!(classify(&Outcome::Final, &at(1, 0, 5), &p), Verdict::Fail);
    }

    #[test]
    fn network_failures_back_off_doubling_within_the_cap_then_fail() {
        let mut p = policy(WhenExhausted::GiveUp);
        p.backoff = Duration::from_secs(2);
        p.network_wait_cap = Duration::from_secs(60);
        let wait = |n| match classify(&Outcome::Network, &at(n, 0, 0), &p) {
            Verdict::Retry { after } => after,
            v => panic!("{v:?}"),
        };
        assert_eq!(wait(1), Duration::from_secs(2));
        assert_eq!(wait(2), Duration::from_secs(4));
        assert_eq!(classify(&Outcome::Network, &at(3, 0, 0), &p), Verdict::Fail);
        // The API's cap: 10 s however long the back-off.
        let p = policy(WhenExhausted::GiveUp);
        assert_eq!(
            classify(&Outcome::Network, &at(2, 0, 0), &p),
            Verdict::Retry {
                after: Duration::from_secs(10)
            }
        );
        // Jitter scales the back-off.
        let mut t = at(1, 0, 0);
        t.jitter = 0.75;
        let mut p = policy(WhenExhausted::GiveUp);
        p.network_wait_cap = Duration::from_secs(60);
        assert_eq!(
            classify(&Outcome::Network, &t, &p),
            Verdict::Retry {
                after: Duration::from_millis(22_500)
            }
        );
    }

    #[test]
    fn server_errors_wait_what_the_server_asks_capped_else_back_off() {
        let p = policy(WhenExhausted::GiveUp);
        let with = |secs| Outcome::ServerError {
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(
            classify(&with(7), &at(1, 0, 0), &p),
            Verdict::Retry {
                after: Duration::from_secs(7)
            }
        );
        assert_eq!(
            classify(&with(3600), &at(1, 0, 0), &p),
            Verdict::Retry {
                after: Duration::from_secs(300)
            },
            "Retry-After is capped at 5 min"
        );
        assert_eq!(
            classify(
                &Outcome::ServerError { retry_after: None },
                &at(2, 0, 0),
                &p
            ),
            Verdict::Retry {
                after: Duration::from_secs(60)
            }
        );
        assert_eq!(classify(&with(1), &at(3, 0, 0), &p), Verdict::Fail);
    }

    #[test]
    fn rate_limits_without_retry_after_rotate_until_counted_out_then_give_up_or_back_off() {
        let limited = Outcome::RateLimited { retry_after: None };
        let api = policy(WhenExhausted::GiveUp);
        for n in 1..=3 {
            assert_eq!(
                classify(&limited, &at(1, n, 0), &api),
                Verdict::Rotate(Rotation::CoolingDown),
                "429 number {n}"
            );
        }
        // 429s do not use up the attempts: the third attempt still rotates.
        assert_eq!(
            classify(&limited, &at(3, 1, 0), &api),
            Verdict::Rotate(Rotation::CoolingDown)
        );
        assert_eq!(classify(&limited, &at(1, 4, 2), &api), Verdict::Fail);
        let git = policy(WhenExhausted::BackOff);
        assert_eq!(
            classify(&limited, &at(1, 4, 0), &git),
            Verdict::Retry {
                after: Duration::from_secs(10)
            }
        );
        assert_eq!(classify(&limited, &at(3, 4, 0), &git), Verdict::Fail);
    }

    #[test]
    fn rate_limits_naming_their_wait_go_on_until_the_waiting_adds_up() {
        let limited = Outcome::RateLimited {
            retry_after: Some(Duration::from_secs(1)),
        };
        for p in [
            policy(WhenExhausted::GiveUp),
            policy(WhenExhausted::BackOff),
        ] {
            // 3 × 300 s.
            assert_eq!(p.rate_limit_wait(), Duration::from_secs(900));
            // However many: a 429 that names its wait is waited out, not counted.
            let mut t = at(1, 500, 0);
            t.rate_limited_for = Duration::from_secs(899);
            assert_eq!(
                classify(&limited, &t, &p),
                Verdict::Rotate(Rotation::CoolingDown)
            );
            // Waited as long as a request may: it fails, also for git (starting
            // over would only wait again).
            t.rate_limited_for = Duration::from_secs(900);
            assert_eq!(classify(&limited, &t, &p), Verdict::Fail);
            // A 429 without a wait named is still counted.
            t.rate_limited_for = Duration::ZERO;
            assert_ne!(
                classify(&Outcome::RateLimited { retry_after: None }, &t, &p),
                Verdict::Rotate(Rotation::CoolingDown)
            );
        }
    }

    #[test]
    fn refused_credentials_renew_once_rotate_while_others_remain_else_fail() {
        let p = policy(WhenExhausted::GiveUp);
        assert_eq!(
            classify(&refused(401, true), &at(1, 0, 0), &p),
            Verdict::Retry {
                after: Duration::ZERO
            },
            "an OAuth token is fetched anew once"
        );
        assert_eq!(
            classify(&refused(401, true), &at(2, 0, 1), &p),
            Verdict::Rotate(Rotation::Refused("the server answered 401".into()))
        );
        assert_eq!(
            classify(&refused(403, false), &at(1, 0, 2), &p),
            Verdict::Rotate(Rotation::Refused("the server answered 403".into()))
        );
        assert_eq!(
            classify(&refused(403, false), &at(1, 0, 0), &p),
            Verdict::Fail
        );
        assert_eq!(
            classify(&refused(401, true), &at(2, 0, 0), &p),
            Verdict::Fail
        );
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = time::macros::datetime!(2026-11-22 10:00:00 UTC);
        assert_eq!(
            parse_retry_after(" 30 ", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 10:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    fn pool(n: usize) -> CredentialPool {
        let auth = || {
            Arc::new(Authenticator::new(
                Credential {
                    kind: CredentialKind::AccessToken,
                    identity: None,
                    secret: "t".to_string().into(),
                },
                AuthScheme::Bearer,
                AuthScheme::Bearer,
                None,
                reqwest::blocking::Client::new(),
            ))
        };
        CredentialPool::new(
            (0..n)
                .map(|i| PoolCredential {
                    id: format!("c{i}"),
                    principal: format!("p{i}"),
                    auth: auth(),
                })
                .collect(),
            None,
            Duration::from_millis(10),
            Duration::from_secs(5),
        )
    }

    /// A request answering from a script, one status per attempt.
    struct Scripted {
        answers: Vec<Outcome>,
        lanes: Vec<usize>,
        events: Vec<String>,
    }

    impl Attempts for Scripted {
        type Output = Result<Outcome, String>;
        fn attempt(&mut self, lane: usize, _attempt: u32) -> Self::Output {
            self.lanes.push(lane);
            Ok(self.answers.remove(0))
        }
        fn outcome(&self, output: &Self::Output) -> Outcome {
            output.clone().unwrap_or(Outcome::Final)
        }
        fn event(&mut self, event: &Event<'_>, _output: &Self::Output) {
            self.events.push(match event {
                Event::RateLimited {
                    credential,
                    cooldown,
                    others,
                    going_on,
                } => format!(
                    "429 {credential} {}ms {others} {going_on}",
                    cooldown.as_millis()
                ),
                Event::Refused { credential } => format!("refused {credential}"),
                Event::Retrying { after } => format!("retry {}ms", after.as_millis()),
            });
        }
        fn no_credential(&mut self, err: PoolExhausted) -> Self::Output {
            Err(err.to_string())
        }
    }

    fn fast(when_exhausted: WhenExhausted) -> Policy {
        Policy {
            retries: 2,
            backoff: Duration::ZERO,
            network_wait_cap: Duration::ZERO,
            max_wait: Duration::from_secs(1),
            rate_limit_retries: 2,
            when_exhausted,
        }
    }

    #[test]
    fn the_loop_cools_down_rotates_and_counts_attempts() {
        let p = pool(2);
        let mut req = Scripted {
            answers: vec![
                Outcome::RateLimited {
                    retry_after: Some(Duration::from_secs(1)),
                },
                refused(401, false),
                Outcome::Network,
                Outcome::Success,
            ],
            lanes: vec![],
            events: vec![],
        };
        let done = run(&p, &fast(WhenExhausted::GiveUp), None, &|_| {}, &mut req);
        assert_eq!(done.output, Ok(Outcome::Success));
        assert_eq!(done.attempts, 2, "one retry; rotations are not attempts");
        // c0 cools down (the server's 1 s), c1 is refused and out, then c0 again once
        // its cool-down ends (the pool waits: it is the only one left).
        assert_eq!(req.lanes[..2], [0, 1]);
        assert_eq!(
            req.events,
            ["429 c0 1000ms true true", "refused c1", "retry 0ms"]
        );
        let stats = p.stats();
        assert_eq!(stats[0].rate_limited, 1);
        assert!(stats[1].failed.is_some());
    }

    #[test]
    fn the_loop_waits_out_429s_naming_their_wait_until_the_waiting_adds_up() {
        let limited = |ms| Outcome::RateLimited {
            retry_after: Some(Duration::from_millis(ms)),
        };
        // More 429s than rate_limit_retries (2), each waited out: the request goes on.
        let p = pool(1);
        let mut answers: Vec<Outcome> = (0..5).map(|_| limited(5)).collect();
        answers.push(Outcome::Success);
        let mut req = Scripted {
            answers,
            lanes: vec![],
            events: vec![],
        };
        let done = run(&p, &fast(WhenExhausted::BackOff), None, &|_| {}, &mut req);
        assert_eq!(done.output, Ok(Outcome::Success));
        assert_eq!(done.attempts, 1, "a wait is not a new attempt");
        assert_eq!(p.stats()[0].rate_limited, 5);

        // Until they kept it waiting rate_limit_retries × max_wait (2 × 50 ms): then
        // the last 429 is handed back and the progress says how long it waited.
        let mut policy = fast(WhenExhausted::BackOff);
        policy.max_wait = Duration::from_millis(50);
        let p = pool(1);
        let mut req = Scripted {
            answers: (0..40).map(|_| limited(30)).collect(),
            lanes: vec![],
            events: vec![],
        };
        let said = std::cell::RefCell::new(Vec::new());
        let notice = |m: &str| said.borrow_mut().push(m.to_string());
        let t = std::time::Instant::now();
        let done = run(&p, &policy, None, &notice, &mut req);
        assert_eq!(done.output, Ok(limited(30)));
        assert!(
            t.elapsed() >= Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
        let met = p.stats()[0].rate_limited;
        assert!((4..=6).contains(&met), "{met} 429s");
        assert_eq!(
            said.borrow().last().map(String::as_str),
            Some("credential c0 still rate limited after waiting 1 s in all, each 429 as its Retry-After asked; giving up on this request")
        );
    }

    #[test]
    fn the_loop_hands_back_the_last_429_and_stops_when_interrupted() {
        let p = pool(1);
        let limited = || Outcome::RateLimited { retry_after: None };
        let mut req = Scripted {
            answers: (0..3).map(|_| limited()).collect(),
            lanes: vec![],
            events: vec![],
        };
        let said = std::cell::RefCell::new(Vec::new());
        let notice = |m: &str| said.borrow_mut().push(m.to_string());
        let done = run(&p, &fast(WhenExhausted::GiveUp), None, &notice, &mut req);
        assert_eq!(done.output, Ok(limited()));
        let last = req.events.last().cloned().unwrap_or_default();
        assert!(
            last.starts_with("429 c0 ") && last.ends_with(" false false"),
            "{last}"
        );
        assert_eq!(
            said.borrow().last().map(String::as_str),
            Some("credential c0 rate limited 3 times without a Retry-After; giving up on this request")
        );
        assert_eq!(
            p.stats()[0].rate_limited,
            3,
            "every 429 counted, the last one too"
        );

        let stop = AtomicBool::new(true);
        let mut req = Scripted {
            answers: vec![Outcome::Network, Outcome::Success],
            lanes: vec![],
            events: vec![],
        };
        let done = run(
            &p,
            &fast(WhenExhausted::BackOff),
            Some(&stop),
            &|_| {},
            &mut req,
        );
        assert_eq!(done.output, Ok(Outcome::Network));
        assert!(req.events.is_empty());

        // Every credential refused: the pool's refusal is handed back.
        let p = pool(2);
        p.fail(0, "HTTP 401");
        p.fail(1, "HTTP 403");
        let mut req = Scripted {
            answers: vec![],
            lanes: vec![],
            events: vec![],
        };
        let done = run(&p, &fast(WhenExhausted::GiveUp), None, &|_| {}, &mut req);
        assert!(done.output.unwrap_err().contains("403"));
    }
}
