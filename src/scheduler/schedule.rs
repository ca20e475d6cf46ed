//! A plan's schedule: a cron line read in a time zone, and its fire times as instants.
//!
//! Fire times come from iterating local wall-clock candidates (the `cron` crate, run on
//! naive local time) and mapping each to instants with [`Zone::resolve`]:
//! - a skipped local time (clocks forward) fires once at the instant of the jump, unless the
//!   line follows the clock (minute or hour field starting with `*`), where it is skipped;
//! - a repeated local time (clocks back) fires at its first occurrence, or at both when the
//!   line follows the clock.
//!
//! Around a backward clock change wall time is not monotonic in real time, so the search
//! starts early enough (lowest offset nearby) and keeps the earliest instant found.

use super::expr::{self, CronLine};
use super::zone::{to_chrono, to_time, Resolved, Zone, CLOCK_CHANGE_REACH};
use super::ScheduleError;
use chrono::{DateTime, Duration, NaiveDateTime, TimeZone, Timelike, Utc};
use std::fmt;
use time::OffsetDateTime;

/// Bounds the candidate loops; real lines need at most a few thousand steps (an
/// every-minute line across a day-long clock change).
const MAX_STEPS: usize = 10_000;

/// A parsed schedule in its time zone. See [`super::SYNTAX`] for what is accepted.
#[derive(Clone, Debug)]
pub struct Schedule {
    expr: String,
    zone: Zone,
    line: CronLine,
}

impl Schedule {
    /// `expr`: a standard 5-field cron line (minute hour day-of-month month day-of-week) or
    /// `@hourly`/`@daily`/`@midnight`/`@weekly`/`@monthly`/`@yearly`/`@annually`.
    /// `timezone`: `None` for the server's local zone (`TZ`, else the system's), or an IANA
    /// name such as `Europe/Warsaw` or `UTC`.
    pub fn parse(expr: &str, timezone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let zone = Zone::parse(timezone)?;
        Schedule::in_zone(expr, zone)
    }

    /// Like [`Schedule::parse`] with an already parsed zone.
    pub fn in_zone(expr: &str, zone: Zone) -> Result<Schedule, ScheduleError> {
        let line = expr::parse(expr)?;
        Ok(Schedule {
            expr: expr.trim().to_string(),
            zone,
            line,
        })
    }

    /// The first fire time strictly after `t`, in UTC; `None` if there is none before 2101.
    pub fn next_after(&self, t: OffsetDateTime) -> Option<OffsetDateTime> {
        let t = to_chrono(t)?;
        self.next_instant_after(t).and_then(to_time)
    }

    /// The latest fire time in `(since, now]`, if any: a run missed while the daemon was
    /// down, to run once at start.
    pub fn missed_since(
        &self,
        since: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        if since >= now {
            return None;
        }
        let (since, now) = (to_chrono(since)?, to_chrono(now)?);
        let mut latest = self.some_fire_at_or_before(now).filter(|x| *x > since);
        // Walk forward to the last one: after a backward clock change, a later wall time can
        // have fired earlier.
        let mut from = latest.unwrap_or(since);
        for _ in 0..MAX_STEPS {
            match self.next_instant_after(from) {
                Some(x) if x <= now => {
                    latest = Some(x);
                    from = x;
                }
                _ => break,
            }
        }
        latest.and_then(to_time)
    }

    /// The expression as given (trimmed).
    pub fn expression(&self) -> &str {
        &self.expr
    }

    /// The time zone's IANA name, or `local`.
    pub fn timezone(&self) -> &str {
        self.zone.name()
    }

    /// The time zone, for evaluating the plan's [`super::Window`].
    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    fn next_instant_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // No instant after `t` shows a wall time before `t` + the lowest offset to come.
        let lowest = self.zone.min_offset(t, CLOCK_CHANGE_REACH);
        let mut wall = floor_second(
            t.naive_utc()
                .checked_add_signed(Duration::seconds(lowest))?,
        );
        let mut best: Option<DateTime<Utc>> = None;
        // Wall times after `bound` cannot fire before `best`.
        let mut bound: Option<NaiveDateTime> = None;
        for _ in 0..MAX_STEPS {
            let Some(candidate) = self.next_wall_after(wall) else {
                break;
            };
            if bound.is_some_and(|b| candidate > b) {
                break;
            }
            for x in self.fires(&candidate) {
                if x > t && best.is_none_or(|b| x < b) {
                    best = Some(x);
                    bound = Some(self.latest_wall_before(t, x));
                }
            }
            wall = candidate;
        }
        best
    }

    /// A fire time at or before `now`, at most a backward clock change before the last one
    /// (`missed_since` walks forward from it). The earliest instant of a wall time at or
    /// before `now`'s is at or before `now`, so the search starts there.
    fn some_fire_at_or_before(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut wall = floor_second(self.zone.wall(&now));
        for _ in 0..MAX_STEPS {
            let candidate = self.wall_at_or_before(wall)?;
            if let Some(x) = self
                .fires(&candidate)
                .into_iter()
                .filter(|x| *x <= now)
                .max()
            {
                return Some(x);
            }
            wall = candidate.checked_sub_signed(Duration::seconds(1))?;
        }
        None
    }

    /// The highest wall time shown in `(t, x]`: `x`'s, or the one just before a backward
    /// clock change in between.
    fn latest_wall_before(&self, t: DateTime<Utc>, x: DateTime<Utc>) -> NaiveDateTime {
        let from = x.checked_sub_signed(CLOCK_CHANGE_REACH).unwrap_or(t).max(t);
        let mut latest = self.zone.wall(&x);
        for change in self.zone.clock_changes(from, x) {
            let just_before = change - Duration::nanoseconds(1);
            latest = latest.max(self.zone.wall(&just_before));
        }
        latest
    }

    /// The instants at which the wall time `w` fires, earliest first.
    fn fires(&self, w: &NaiveDateTime) -> Vec<DateTime<Utc>> {
        match (self.zone.resolve(w), self.line.follows_clock) {
            (Resolved::Single(x), _) => vec![x],
            (Resolved::Repeated(a, b), true) => vec![a, b],
            (Resolved::Repeated(a, _), false) => vec![a],
            (Resolved::Skipped, true) => vec![],
            (Resolved::Skipped, false) => self.zone.end_of_skip(w).into_iter().collect(),
        }
    }

    /// The first wall time of the line strictly after `w`.
    fn next_wall_after(&self, w: NaiveDateTime) -> Option<NaiveDateTime> {
        let w = Utc.from_utc_datetime(&w);
        self.line
            .schedules
            .iter()
            .filter_map(|s| s.after(&w).next())
            .map(|d| d.naive_utc())
            .min()
    }

    /// The last wall time of the line at or before `w`.
    fn wall_at_or_before(&self, w: NaiveDateTime) -> Option<NaiveDateTime> {
        let w = Utc.from_utc_datetime(&w.checked_add_signed(Duration::seconds(1))?);
        self.line
            .schedules
            .iter()
            .filter_map(|s| s.after(&w).next_back())
            .map(|d| d.naive_utc())
            .max()
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.expr, self.zone)
    }
}

fn floor_second(w: NaiveDateTime) -> NaiveDateTime {
    w.with_nanosecond(0).unwrap_or(w)
}
