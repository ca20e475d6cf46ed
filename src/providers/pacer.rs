//! Learning the rate a server allows from its 429s, and pacing requests to it.
//!
//! A server that rate-limits with a token bucket (Bitbucket Data Center: a bucket per
//! user, refilled at a constant rate) answers 429 exactly when the bucket is empty.
//! So between two requests that were answered 429, the requests that got through
//! used up just what the bucket refilled in that time: their number over the time
//! between the two sends is the refill rate (a little less if the bucket filled up
//! to its size in between, which only happens when the client was idle).
//! [`RateLearner`] keeps the 429s of the last minute (each with the number and send
//! time of its request) and estimates the rate from the oldest to the newest of them.
//!
//! An estimate needs the 429s to lie at least half a second apart and at least
//! three requests to have got through between them; a few 429s in a row with nothing
//! between teach nothing (the server may have stopped limiting). Once it knows a
//! rate, every request waits for its slot: the requests are spread
//! evenly at that rate times a probe factor that starts at 1.1 and grows by 15% a
//! second without a 429. Spread evenly, the requests rarely meet a 429 at all, so a
//! git fetch is not cut between its ref listing and its pack request (a cut fetch
//! starts over and its first request's token is lost). The probe keeps the estimate
//! honest: a rate estimated too low (or a server that stopped limiting) is outgrown
//! within seconds, and the next 429 (cheap: the bucket refills while the cool-down
//! runs) gives a fresh estimate. A 429 before anything is learned is only waited out.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The 429s an estimate looks back on.
const WINDOW: Duration = Duration::from_secs(60);
/// The shortest time between the first and the last 429 an estimate is made from:
/// shorter spans are the same burst of 429s, not a refill.
const MIN_SPAN: Duration = Duration::from_millis(500);
/// The pace starts this much above the estimate...
const PROBE: f64 = 1.1;
/// ...and grows by this factor every second without a 429.
const PROBE_GROWTH: f64 = 1.15;
/// The fewest requests that must have got through between the 429s for an
/// estimate: fewer say more about chance (a few 429s in a row) than about a rate.
const MIN_THROUGH: u64 = 3;

/// What one principal's 429s taught about the rate its server allows.
#[derive(Debug, Default)]
pub(super) struct RateLearner {
    /// Requests sent so far; a request's number is the count before it.
    sent: u64,
    /// The requests answered 429 in the last [`WINDOW`]: (number, sent at), by number.
    limited: VecDeque<(u64, Instant)>,
    /// The estimated refill rate, requests per second.
    rate: Option<f64>,
    /// When the newest request answered 429 was sent.
    last_limited: Option<Instant>,
    /// When the next request may go (paced), once a rate is known.
    next: Option<Instant>,
    /// The rate the caller has not yet been told about.
    untold: Option<f64>,
}

impl RateLearner {
    /// Counts a request sent at `now`; returns its number. Once a rate is known the
    /// next request's slot moves one interval on.
    pub fn sent(&mut self, now: Instant) -> u64 {
        let n = self.sent;
        self.sent += 1;
        if let Some(pace) = self.pace(now) {
            self.next = Some(now + Duration::from_secs_f64(1.0 / pace));
        }
        n
    }

    /// The number the next request will get.
    pub fn next_number(&self) -> u64 {
        self.sent
    }

    /// Request number `n`, sent at `at`, was answered 429: the estimate is renewed.
    pub fn limited(&mut self, n: u64, at: Instant) {
        let pos = self.limited.partition_point(|(m, _)| *m < n);
        if self.limited.get(pos).is_some_and(|(m, _)| *m == n) {
            return;
        }
        self.limited.insert(pos, (n, at));
        if self.last_limited.is_none_or(|l| l < at) {
            self.last_limited = Some(at);
        }
        let newest = self.limited.iter().map(|(_, t)| *t).max().unwrap_or(at);
        while self
            .limited
            .front()
            .is_some_and(|(_, t)| newest.duration_since(*t) > WINDOW)
        {
            self.limited.pop_front();
        }
        if let Some(rate) = self.estimate() {
            if self.rate.is_none() {
                self.untold = Some(rate);
            }
            self.rate = Some(rate);
        }
    }

    /// Requests that got through between the oldest and the newest 429 of the window,
    /// per second of the time between their sends.
    fn estimate(&self) -> Option<f64> {
        let (first_n, first_at) = *self.limited.front()?;
        let (last_n, last_at) = *self.limited.back()?;
        let span = last_at.checked_duration_since(first_at)?;
        if span < MIN_SPAN {
            return None;
        }
        // Sent strictly between the two, less those answered 429.
        let between = last_n.saturating_sub(first_n).saturating_sub(1);
        let limited = self.limited.len().saturating_sub(2) as u64;
        let through = between.saturating_sub(limited);
        if through < MIN_THROUGH {
            return None;
        }
        Some(through as f64 / span.as_secs_f64())
    }

    /// The pace at `now`: the estimate times the probe factor, when a rate is known.
    fn pace(&self, now: Instant) -> Option<f64> {
        let rate = self.rate?;
        let quiet = self
            .last_limited
            .map(|l| now.saturating_duration_since(l).as_secs_f64())
            .unwrap_or(0.0);
        Some(rate * PROBE * PROBE_GROWTH.powf(quiet.min(60.0)))
    }

    /// When the next request may go; `None` while nothing is learned.
    pub fn ready_at(&self) -> Option<Instant> {
        self.next
    }

    /// The estimated rate, if one is known.
    #[cfg(test)]
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// The first estimate, once, for the caller to announce.
    pub fn take_untold(&mut self) -> Option<f64> {
        self.untold.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token bucket like Bitbucket DC's, in simulated time.
    struct Bucket {
        capacity: f64,
        per_second: f64,
        tokens: f64,
        at: f64,
    }

    impl Bucket {
        fn take(&mut self, now: f64) -> bool {
            self.tokens = (self.tokens + (now - self.at) * self.per_second).min(self.capacity);
            self.at = now;
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                true
            } else {
                false
            }
        }
    }

    #[test]
    fn nothing_is_paced_before_a_rate_is_learned() {
        let t0 = Instant::now();
        let mut l = RateLearner::default();
        for i in 0..5 {
            assert_eq!(l.sent(t0), i);
        }
        assert_eq!(l.ready_at(), None);
        // One burst of 429s (all within a moment) teaches nothing.
        for n in 5..9 {
            let at = t0 + Duration::from_millis(n);
            assert_eq!(l.sent(at), n);
            l.limited(n, at);
        }
        assert_eq!(l.rate(), None);
        // Nor do 429s a second apart with only two requests through between them
        // (a server answering a few 429s, then none).
        let later = t0 + Duration::from_secs(1);
        l.sent(later);
        l.sent(later);
        let n = l.sent(later);
        l.limited(n, later);
        assert_eq!(l.rate(), None);
        assert_eq!(l.ready_at(), None);
        assert_eq!(l.take_untold(), None);
    }

    #[test]
    fn the_refill_rate_is_learned_from_the_requests_between_two_429s() {
        // Greedy clients against a bucket of 10 at 5 a second: whatever they send
        // while it is empty is answered 429; after each 429 they wait 1 s.
        let t0 = Instant::now();
        let mut bucket = Bucket {
            capacity: 10.0,
            per_second: 5.0,
            tokens: 10.0,
            at: 0.0,
        };
        let mut l = RateLearner::default();
        let mut now = 0.0;
        for _round in 0..4 {
            loop {
                let at = t0 + Duration::from_secs_f64(now);
                let n = l.sent(at);
                if !bucket.take(now) {
                    l.limited(n, at);
                    break;
                }
                now += 0.01;
            }
            now += 1.0;
        }
        let rate = l.rate().expect("a rate");
        assert!((4.0..=5.5).contains(&rate), "{rate}");
        // The first estimate is told once.
        assert!(l.take_untold().is_some());
        assert_eq!(l.take_untold(), None);
    }

    #[test]
    fn paced_requests_go_evenly_and_the_pace_grows_without_429s() {
        let t0 = Instant::now();
        let mut l = RateLearner::default();
        let a = l.sent(t0);
        l.limited(a, t0);
        let b_at = t0 + Duration::from_secs(2);
        for _ in 0..9 {
            l.sent(t0 + Duration::from_millis(500));
        }
        let b = l.sent(b_at);
        l.limited(b, b_at);
        // 9 got through in 2 s.
        assert_eq!(l.rate(), Some(4.5));
        assert_eq!(l.sent(b_at), b + 1);
        let gap = l.ready_at().unwrap() - b_at;
        let want = 1.0 / (4.5 * PROBE);
        assert!((gap.as_secs_f64() - want).abs() < 1e-3, "{gap:?}");
        // Ten quiet seconds later the pace is 1.15^10 times faster.
        let later = b_at + Duration::from_secs(10);
        l.sent(later);
        let gap = (l.ready_at().unwrap() - later).as_secs_f64();
        let want = 1.0 / (4.5 * PROBE * PROBE_GROWTH.powi(10));
        assert!((gap - want).abs() < 1e-3, "{gap}");
    }
}
