//! Spreading one connection's outgoing requests over its credentials.
//!
//! A [`CredentialPool`] holds the credentials a job may use (the primary, and the
//! additional ones a plan enabled), grouped by *principal*: the account a provider
//! counts requests against (two API tokens of one user share one budget; each access
//! token and OAuth consumer has its own). Every request — a provider API call or one
//! HTTP request of a git fetch — first [`choose`](CredentialPool::choose)s the usable
//! credential whose principal has the most budget left and is not cooling down, then
//! [`pace`](CredentialPool::pace)s: with a known budget (e.g. 60 per minute) it waits
//! until the principal's sliding window has room, so the provider never has to say 429.
//! A 429 cools the principal down (`Retry-After` when given, else exponential back-off
//! with jitter) and its work moves to the others; every request waiting on that
//! principal goes on when the cool-down ends. The 429s also teach the pool the rate
//! the server allows the principal ([`RateLearner`]); from then on its requests are
//! paced to that rate, so that later ones rarely meet a 429. A 401/403 marks that
//! credential failed for the job. Counters per credential feed job results and
//! `/metrics`.

use super::pacer::RateLearner;
use super::Authenticator;
use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A request budget per principal: at most `requests` in any `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RateBudget {
    pub requests: u32,
    #[serde(with = "secs")]
    pub window: Duration,
}

mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(d)?))
    }
}

impl std::str::FromStr for RateBudget {
    type Err = String;
    /// `60/min`, `1000/h`, `5/s`, `60/10s`.
    fn from_str(s: &str) -> Result<RateBudget, String> {
        let bad = || {
            format!("rate limit {s:?} must look like 60/min, 1000/h, 5/s or 60/10s (requests per window)")
        };
        let (n, per) = s.trim().split_once('/').ok_or_else(bad)?;
        let requests: u32 = n.trim().parse().map_err(|_| bad())?;
        let per = per.trim();
        let window = match per {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "min" | "m" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => {
                let (num, unit) = other.split_at(
                    other
                        .find(|c: char| !c.is_ascii_digit())
                        .unwrap_or(other.len()),
                );
                let k: u64 = num.parse().map_err(|_| bad())?;
                match unit {
                    "s" => Duration::from_secs(k),
                    "min" | "m" => Duration::from_secs(60 * k),
                    "h" => Duration::from_secs(3600 * k),
                    _ => return Err(bad()),
                }
            }
        };
        if requests == 0 || window.is_zero() {
            return Err(bad());
        }
        Ok(RateBudget { requests, window })
    }
}

impl std::fmt::Display for RateBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}s", self.requests, self.window.as_secs())
    }
}

/// One credential of a pool.
pub struct PoolCredential {
    /// `primary`, or the additional credential's id.
    pub id: String,
    /// Who the provider counts its requests against.
    pub principal: String,
    pub auth: Arc<Authenticator>,
}

/// What one credential did in a job.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CredentialStats {
    pub credential: String,
    pub principal: String,
    pub requests: u64,
    pub rate_limited: u64,
    pub cooldowns: u64,
    /// Why the credential was taken out of the job (401/403), if it was.
    pub failed: Option<String>,
}

/// Why no credential can send.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no usable credential left: {0}")]
pub struct PoolExhausted(pub String);

#[derive(Default)]
struct Principal {
    sent: VecDeque<Instant>,
    cool_until: Option<Instant>,
    strikes: u32,
    learner: RateLearner,
}

/// The latest request this thread sent through a pool: the pool (its address), the
/// credential, the request's number in its principal's [`RateLearner`] and when it
/// went. A request and the 429 it gets are handled on one thread (the git transport
/// and the API gate send on the caller's thread), so [`CredentialPool::rate_limited`]
/// knows which request the 429 answered.
#[derive(Clone, Copy)]
struct LastSent {
    pool: usize,
    lane: usize,
    number: u64,
    at: Instant,
}

thread_local! {
    static LAST_SENT: Cell<Option<LastSent>> = const { Cell::new(None) };
}

struct Inner {
    principals: HashMap<String, Principal>,
    stats: Vec<CredentialStats>,
}

/// The credentials of one connection for one job, and their budgets.
pub struct CredentialPool {
    creds: Vec<PoolCredential>,
    inner: Mutex<Inner>,
    changed: Condvar,
    budget: Option<RateBudget>,
    base_cooldown: Duration,
    max_cooldown: Duration,
}

/// Safety margin on the window: the server stamps a request slightly after we send it.
const WINDOW_MARGIN: Duration = Duration::from_millis(300);

impl CredentialPool {
    /// A pool; `base_cooldown` is the first wait after a 429 without `Retry-After`
    /// (doubling, ±25% jitter, at most `max_cooldown`).
    pub fn new(
        creds: Vec<PoolCredential>,
        budget: Option<RateBudget>,
        base_cooldown: Duration,
        max_cooldown: Duration,
    ) -> CredentialPool {
        let stats = creds
            .iter()
            .map(|c| CredentialStats {
                credential: c.id.clone(),
                principal: c.principal.clone(),
                ..Default::default()
            })
            .collect();
        let principals = creds
            .iter()
            .map(|c| (c.principal.clone(), Principal::default()))
            .collect();
        CredentialPool {
            creds,
            inner: Mutex::new(Inner { principals, stats }),
            changed: Condvar::new(),
            budget,
            base_cooldown,
            max_cooldown,
        }
    }

    /// A pool of one credential.
    pub fn single(
        auth: Arc<Authenticator>,
        base_cooldown: Duration,
        max_cooldown: Duration,
    ) -> CredentialPool {
        CredentialPool::new(
            vec![PoolCredential {
                id: "primary".into(),
                principal: "primary".into(),
                auth,
            }],
            None,
            base_cooldown,
            max_cooldown,
        )
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.creds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.creds.is_empty()
    }

    pub fn auth(&self, i: usize) -> &Arc<Authenticator> {
        &self.creds[i].auth
    }

    pub fn id(&self, i: usize) -> &str {
        &self.creds[i].id
    }

    /// Counters of every credential.
    pub fn stats(&self) -> Vec<CredentialStats> {
        self.lock().stats.clone()
    }

    fn expire(&self, p: &mut Principal, now: Instant) {
        if let Some(b) = self.budget {
            while p
                .sent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= b.window + WINDOW_MARGIN)
            {
                p.sent.pop_front();
            }
        } else {
            // Without a budget only recent history matters for "most budget left".
            while p
                .sent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
            {
                p.sent.pop_front();
            }
        }
        if p.cool_until.is_some_and(|c| c <= now) {
            p.cool_until = None;
        }
    }

    /// When the principal may send next (`now` when it may at once).
    fn ready_at(&self, p: &Principal, now: Instant) -> Instant {
        let mut at = now;
        if let Some(c) = p.cool_until {
            at = at.max(c);
        }
        if let Some(slot) = p.learner.ready_at() {
            at = at.max(slot);
        }
        if let Some(b) = self.budget {
            if p.sent.len() >= b.requests as usize {
                let idx = p.sent.len() - b.requests as usize;
                if let Some(t) = p.sent.get(idx) {
                    at = at.max(*t + b.window + WINDOW_MARGIN);
                }
            }
        }
        at
    }

    /// Picks the credential to use: not failed, not in `avoid`, whose principal can
    /// send soonest, then has the most budget left. Waits (telling `notice`) while
    /// every usable one is cooling down or out of budget.
    pub fn choose(&self, avoid: &[usize], notice: &dyn Fn(&str)) -> Result<usize, PoolExhausted> {
        let mut g = self.lock();
        let mut told = false;
        loop {
            let now = Instant::now();
            let inner = &mut *g;
            for p in inner.principals.values_mut() {
                self.expire(p, now);
            }
            let mut best: Option<(Instant, usize, usize)> = None; // (ready, used, index)
            for (i, c) in self.creds.iter().enumerate() {
                if avoid.contains(&i) || inner.stats[i].failed.is_some() {
                    continue;
                }
                let Some(p) = inner.principals.get(&c.principal) else {
                    continue;
                };
                let key = (self.ready_at(p, now), p.sent.len(), i);
                if best.is_none_or(|b| (key.0, key.1) < (b.0, b.1)) {
                    best = Some(key);
                }
            }
            let Some((ready, _, i)) = best else {
                let reasons: Vec<String> = inner
                    .stats
                    .iter()
                    .filter_map(|s| s.failed.as_ref().map(|f| format!("{}: {f}", s.credential)))
                    .collect();
                return Err(PoolExhausted(if reasons.is_empty() {
                    "every credential was tried".into()
                } else {
                    reasons.join("; ")
                }));
            };
            if ready <= now {
                return Ok(i);
            }
            let wait = ready - now;
            // A cool-down is announced where the 429 arrived; say only budget waits.
            let cooling = inner
                .principals
                .get(&self.creds[i].principal)
                .is_some_and(|p| p.cool_until.is_some());
            if !told && !cooling && wait >= Duration::from_secs(1) {
                told = true;
                notice(&format!(
                    "request budget of every credential used up, waiting {} s",
                    wait.as_secs_f64().ceil() as u64
                ));
            }
            let (ng, _) = self
                .changed
                .wait_timeout(g, wait.min(Duration::from_millis(500)))
                .unwrap_or_else(|p| p.into_inner());
            g = ng;
        }
    }

    /// Waits until credential `i`'s principal may send one more request, and
    /// counts it. Call once per HTTP request, just before sending it.
    pub fn pace(&self, i: usize, notice: &dyn Fn(&str)) {
        let mut g = self.lock();
        let mut told = false;
        loop {
            let now = Instant::now();
            let principal = self.creds[i].principal.clone();
            let (ready, slot) = {
                let Some(p) = g.principals.get_mut(&principal) else {
                    return;
                };
                self.expire(p, now);
                (self.ready_at(p, now), p.learner.ready_at())
            };
            if ready <= now {
                let mut learned = None;
                if let Some(p) = g.principals.get_mut(&principal) {
                    p.sent.push_back(now);
                    let number = p.learner.sent(now);
                    LAST_SENT.set(Some(LastSent {
                        pool: self.addr(),
                        lane: i,
                        number,
                        at: now,
                    }));
                    learned = p.learner.take_untold();
                }
                g.stats[i].requests += 1;
                drop(g);
                if let Some(rate) = learned {
                    notice(&format!(
                        "credential {} rate limited: the server lets about {rate:.1} requests a second through; pacing its requests to that",
                        self.creds[i].id
                    ));
                }
                return;
            }
            let wait = ready - now;
            // Waits for a slot of the learned pace were announced with the pace.
            if !told && wait >= Duration::from_secs(1) && slot != Some(ready) {
                told = true;
                notice(&format!(
                    "credential {} paced, waiting {} s",
                    self.creds[i].id,
                    wait.as_secs_f64().ceil() as u64
                ));
            }
            let (ng, _) = self
                .changed
                .wait_timeout(g, wait.min(Duration::from_millis(500)))
                .unwrap_or_else(|p| p.into_inner());
            g = ng;
        }
    }

    /// This pool's identity for [`LAST_SENT`].
    fn addr(&self) -> usize {
        self as *const CredentialPool as usize
    }

    /// Credential `i` got a 429 (for the latest request this thread sent through
    /// it): its principal cools down, and the pool learns from it what rate the
    /// server allows the principal.
    pub fn rate_limited(&self, i: usize, retry_after: Option<Duration>) -> Duration {
        let mut g = self.lock();
        g.stats[i].rate_limited += 1;
        let now = Instant::now();
        let principal = self.creds[i].principal.clone();
        let Some(p) = g.principals.get_mut(&principal) else {
            return Duration::ZERO;
        };
        let sent = LAST_SENT.get().filter(|s| {
            s.pool == self.addr()
                && self
                    .creds
                    .get(s.lane)
                    .is_some_and(|c| c.principal == principal)
        });
        match sent {
            Some(s) => p.learner.limited(s.number, s.at),
            None => {
                let latest = p.learner.next_number().saturating_sub(1);
                p.learner.limited(latest, now);
            }
        }
        let already = p.cool_until.is_some_and(|c| c > now);
        if !already {
            p.strikes += 1;
        }
        let d = retry_after
            .unwrap_or_else(|| {
                let ms = self.base_cooldown.as_millis() as f64
                    * 2f64.powi(p.strikes.saturating_sub(1).min(16) as i32);
                let jitter = 0.75 + rand::random::<f64>() * 0.5;
                Duration::from_millis((ms * jitter) as u64)
            })
            .min(self.max_cooldown);
        let until = now + d;
        if p.cool_until.is_none_or(|c| c < until) {
            p.cool_until = Some(until);
        }
        if !already {
            g.stats[i].cooldowns += 1;
        }
        drop(g);
        self.changed.notify_all();
        d
    }

    /// Credential `i` answered normally: its principal's back-off resets.
    pub fn ok(&self, i: usize) {
        let mut g = self.lock();
        let principal = self.creds[i].principal.clone();
        if let Some(p) = g.principals.get_mut(&principal) {
            p.strikes = 0;
        }
    }

    /// Takes credential `i` out of the job (it answered 401/403).
    pub fn fail(&self, i: usize, reason: &str) {
        let mut g = self.lock();
        if g.stats[i].failed.is_none() {
            tracing::warn!(
                "credential {} taken out of the job: {reason}",
                self.creds[i].id
            );
            g.stats[i].failed = Some(reason.to_string());
        }
        drop(g);
        self.changed.notify_all();
    }

    /// How many credentials are still usable, not counting `except`.
    pub fn usable_besides(&self, except: usize) -> usize {
        let g = self.lock();
        g.stats
            .iter()
            .enumerate()
            .filter(|(i, s)| *i != except && s.failed.is_none())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::{Credential, CredentialKind};

    fn auth() -> Arc<Authenticator> {
        let cred = Credential {
            kind: CredentialKind::AccessToken,
            identity: None,
            secret: "t".to_string().into(),
        };
        Arc::new(Authenticator::new(
            cred,
            super::super::AuthScheme::Bearer,
            super::super::AuthScheme::Bearer,
            None,
            reqwest::blocking::Client::new(),
        ))
    }

    fn pool(principals: &[&str], budget: Option<RateBudget>) -> CredentialPool {
        CredentialPool::new(
            principals
                .iter()
                .enumerate()
                .map(|(i, p)| PoolCredential {
                    id: format!("c{i}"),
                    principal: p.to_string(),
                    auth: auth(),
                })
                .collect(),
            budget,
            Duration::from_millis(200),
            Duration::from_secs(5),
        )
    }

    #[test]
    fn budgets_parse() {
        assert_eq!(
            "60/min".parse::<RateBudget>().unwrap(),
            RateBudget {
                requests: 60,
                window: Duration::from_secs(60)
            }
        );
        assert_eq!(
            "1000/h".parse::<RateBudget>().unwrap().window,
            Duration::from_secs(3600)
        );
        assert_eq!(
            "60/10s".parse::<RateBudget>().unwrap().window,
            Duration::from_secs(10)
        );
        for bad in ["60", "x/min", "0/min", "60/fortnight"] {
            assert!(
                bad.parse::<RateBudget>().unwrap_err().contains("60/min"),
                "{bad}"
            );
        }
    }

    #[test]
    fn requests_spread_over_principals_and_never_exceed_the_budget() {
        let p = pool(
            &["a", "b", "a"],
            Some(RateBudget {
                requests: 3,
                window: Duration::from_secs(1),
            }),
        );
        let quiet = |_: &str| {};
        let start = Instant::now();
        let mut per_principal: HashMap<String, Vec<Instant>> = HashMap::new();
        for _ in 0..12 {
            let i = p.choose(&[], &quiet).unwrap();
            p.pace(i, &quiet);
            per_principal
                .entry(p.creds[i].principal.clone())
                .or_default()
                .push(Instant::now());
        }
        // 2 principals × 3 per second: 12 requests need at least one more window.
        assert!(start.elapsed() >= Duration::from_secs(1));
        for (_, times) in per_principal {
            assert_eq!(times.len(), 6);
            for w in times.windows(4) {
                assert!(
                    w[3].duration_since(w[0]) >= Duration::from_secs(1),
                    "4 requests inside one window"
                );
            }
        }
        let stats = p.stats();
        assert_eq!(stats.iter().map(|s| s.requests).sum::<u64>(), 12);
    }

    #[test]
    fn a_rate_limited_principal_cools_down_and_work_moves() {
        let p = pool(&["a", "b"], None);
        let quiet = |_: &str| {};
        p.rate_limited(0, Some(Duration::from_secs(30)));
        for _ in 0..5 {
            assert_eq!(p.choose(&[], &quiet).unwrap(), 1, "a is cooling down");
        }
        p.fail(1, "HTTP 401");
        // Only a is left: choose waits for its cool-down; with a short one it returns.
        let p2 = pool(&["a"], None);
        let d = p2.rate_limited(0, None);
        assert!(
            d >= Duration::from_millis(150) && d <= Duration::from_millis(250),
            "{d:?}"
        );
        let t = Instant::now();
        assert_eq!(p2.choose(&[], &quiet).unwrap(), 0);
        assert!(t.elapsed() >= d - Duration::from_millis(20));
        assert_eq!(p2.stats()[0].cooldowns, 1);
        // Everything failed: a clear error naming why.
        p2.fail(0, "HTTP 403 Forbidden");
        let e = p2.choose(&[], &quiet).unwrap_err();
        assert!(e.to_string().contains("403"), "{e}");
    }
}
