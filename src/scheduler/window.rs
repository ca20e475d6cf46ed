//! A plan's backup window: a daily span of local wall-clock time (`01:00-06:00`, or
//! `22:00-04:00` across midnight) in a schedule's time zone, during which work may run.
//!
//! The window is judged by the local clock: `contains` looks at the wall time of an
//! instant. It opens when the clock reaches the start or jumps into the span (DST), and
//! closes when the clock reaches the end or jumps out of the span; `next_open` and
//! `closes_at` find those instants among the instants showing the start/end time and the
//! clock changes nearby, so they agree with `contains` exactly.

use super::zone::{to_chrono, to_time, Resolved, Zone};
use super::ScheduleError;
use chrono::{DateTime, Duration, NaiveDateTime, NaiveTime, Timelike, Utc};
use std::fmt;
use std::str::FromStr;
use time::OffsetDateTime;

/// How far ahead an opening or closing is searched; every zone's clock shows each time of
/// day within two days, so the first span always finds it.
const SPAN: Duration = Duration::days(2);
const SPANS: i32 = 8;

/// A daily backup window, start inclusive, end exclusive. See [`super::SYNTAX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Minutes after local midnight.
    start: u32,
    end: u32,
}

impl Window {
    /// Parses `HH:MM-HH:MM` (24-hour; `00:00` as the end is midnight). Start and end must differ.
    pub fn parse(s: &str) -> Result<Window, ScheduleError> {
        let error = |reason: String| ScheduleError::Window {
            window: s.to_string(),
            reason,
        };
        let Some((a, b)) = s.trim().split_once('-') else {
            return Err(error("it has no \"-\" between start and end".to_string()));
        };
        let start = minute_of_day(a.trim()).map_err(|r| error(format!("start {r}")))?;
        let end = minute_of_day(b.trim()).map_err(|r| error(format!("end {r}")))?;
        if start == end {
            return Err(error(
                "start and end are equal, so the window is empty; to allow any time, set no window"
                    .to_string(),
            ));
        }
        Ok(Window { start, end })
    }

    /// Whether the local clock at `t` is inside the window.
    pub fn contains(&self, t: OffsetDateTime, zone: &Zone) -> bool {
        match to_chrono(t) {
            Some(t) => self.contains_at(&t, zone),
            None => false,
        }
    }

    /// `t` if the window is open at `t`, else the next instant it opens. (Every zone's clock
    /// shows each time of day within two days; should none show the start within 16 days,
    /// `t` is returned.)
    pub fn next_open(&self, t: OffsetDateTime, zone: &Zone) -> OffsetDateTime {
        if self.contains(t, zone) {
            return t;
        }
        to_chrono(t)
            .and_then(|c| self.next_change(c, zone, self.start, true))
            .and_then(to_time)
            .unwrap_or(t)
    }

    /// When `t` is inside the window: the instant it closes; `None` when `t` is outside.
    pub fn closes_at(&self, t: OffsetDateTime, zone: &Zone) -> Option<OffsetDateTime> {
        if !self.contains(t, zone) {
            return None;
        }
        self.next_change(to_chrono(t)?, zone, self.end, false)
            .and_then(to_time)
    }

    fn contains_at(&self, t: &DateTime<Utc>, zone: &Zone) -> bool {
        let wall = zone.wall(t);
        let second = wall.num_seconds_from_midnight();
        let (start, end) = (self.start * 60, self.end * 60);
        if start < end {
            start <= second && second < end
        } else {
            second >= start || second < end
        }
    }

    /// The first instant after `t` at which `contains` becomes `open`: one showing the
    /// wall time `minute` (start or end) or a clock change.
    fn next_change(
        &self,
        t: DateTime<Utc>,
        zone: &Zone,
        minute: u32,
        open: bool,
    ) -> Option<DateTime<Utc>> {
        let time = NaiveTime::from_num_seconds_from_midnight_opt(minute * 60, 0)?;
        for k in 0..SPANS {
            let from = t.checked_add_signed(SPAN * k)?;
            let to = from.checked_add_signed(SPAN)?;
            let first_day = zone.wall(&from).date().pred_opt()?;
            let last_day = zone.wall(&to).date().succ_opt()?;
            let mut candidates = zone.clock_changes(from, to);
            for day in first_day.iter_days().take_while(|d| *d <= last_day) {
                match zone.resolve(&NaiveDateTime::new(day, time)) {
                    Resolved::Single(x) => candidates.push(x),
                    Resolved::Repeated(a, b) => candidates.extend([a, b]),
                    Resolved::Skipped => {}
                }
            }
            let found = candidates
                .into_iter()
                .filter(|x| *x > t && self.contains_at(x, zone) == open)
                .min();
            if found.is_some() {
                return found;
            }
        }
        None
    }
}

impl FromStr for Window {
    type Err = ScheduleError;
    fn from_str(s: &str) -> Result<Window, ScheduleError> {
        Window::parse(s)
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

/// `HH:MM` or `H:MM` as minutes after midnight; the error completes "start ..."/"end ...".
fn minute_of_day(s: &str) -> Result<u32, String> {
    let bad = || format!("{s:?} is not a time HH:MM");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let digits = |x: &str, max_len: usize| {
        if x.is_empty() || x.len() > max_len || !x.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            x.parse::<u32>().ok()
        }
    };
    let hour = digits(h, 2).ok_or_else(bad)?;
    let minute = if m.len() == 2 { digits(m, 2) } else { None }.ok_or_else(bad)?;
    if hour == 24 && minute == 0 {
        return Err(format!(
            "{s:?} is not a time of day; write midnight as 00:00"
        ));
    }
    if hour > 23 {
        return Err(format!("{s:?}: hour {hour} is out of range 00-23"));
    }
    if minute > 59 {
        return Err(format!("{s:?}: minute {minute} is out of range 00-59"));
    }
    Ok(hour * 60 + minute)
}
