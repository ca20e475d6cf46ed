//! Time zones of schedules and windows: an IANA zone (chrono-tz) or the server's local
//! zone (chrono's `Local`, which honours `TZ`), and the local-clock arithmetic around DST:
//! wall time of an instant, instants of a wall time, clock changes in a span.
//! Also the conversions between `time::OffsetDateTime` (the project's API type) and chrono.

use super::ScheduleError;
use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use std::fmt;
use time::OffsetDateTime;

/// The time zone a schedule or window is read in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone {
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Local,
    Named(chrono_tz::Tz),
}

/// The instants at which a local wall-clock time occurs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resolved {
    Single(DateTime<Utc>),
    /// Repeated when the clocks went back: (first, second).
    Repeated(DateTime<Utc>, DateTime<Utc>),
    /// Skipped when the clocks went forward.
    Skipped,
}

/// How far around an instant clock changes are looked for; larger than any change of a
/// zone's UTC offset in the time zone database.
pub(crate) const CLOCK_CHANGE_REACH: Duration = Duration::hours(25);

impl Zone {
    /// `None`: the server's local zone; `Some(name)`: an IANA name such as `Europe/Warsaw` or `UTC`.
    pub fn parse(name: Option<&str>) -> Result<Zone, ScheduleError> {
        match name {
            None => Ok(Zone::local()),
            Some(name) => name
                .trim()
                .parse::<chrono_tz::Tz>()
                .map(|tz| Zone {
                    kind: Kind::Named(tz),
                })
                .map_err(|_| ScheduleError::UnknownZone(name.to_string())),
        }
    }

    /// The server's local time zone (`TZ`, else the system's).
    pub fn local() -> Zone {
        Zone { kind: Kind::Local }
    }

    /// UTC.
    pub fn utc() -> Zone {
        Zone {
            kind: Kind::Named(chrono_tz::UTC),
        }
    }

    /// The IANA name, or `local` for the server's local zone.
    pub fn name(&self) -> &str {
        match &self.kind {
            Kind::Local => "local",
            Kind::Named(tz) => tz.name(),
        }
    }

    /// The same instant as `t`, with this zone's UTC offset at that instant (for
    /// showing a time in the zone a plan is read in).
    pub fn shown_in(&self, t: OffsetDateTime) -> OffsetDateTime {
        let offset = to_chrono(t)
            .and_then(|c| i32::try_from(self.offset_secs(&c)).ok())
            .and_then(|secs| time::UtcOffset::from_whole_seconds(secs).ok());
        offset.map_or(t, |o| t.to_offset(o))
    }

    /// The local wall-clock time of `t`.
    pub(crate) fn wall(&self, t: &DateTime<Utc>) -> NaiveDateTime {
        match &self.kind {
            Kind::Local => t.with_timezone(&chrono::Local).naive_local(),
            Kind::Named(tz) => t.with_timezone(tz).naive_local(),
        }
    }

    /// Seconds the local clock is ahead of UTC at `t`.
    pub(crate) fn offset_secs(&self, t: &DateTime<Utc>) -> i64 {
        let fixed = match &self.kind {
            Kind::Local => chrono::Local.offset_from_utc_datetime(&t.naive_utc()).fix(),
            Kind::Named(tz) => tz.offset_from_utc_datetime(&t.naive_utc()).fix(),
        };
        i64::from(fixed.local_minus_utc())
    }

    /// The instants at which the local clock shows `w`.
    pub(crate) fn resolve(&self, w: &NaiveDateTime) -> Resolved {
        fn resolve_in<Z: TimeZone>(z: &Z, w: &NaiveDateTime) -> Resolved {
            match z.from_local_datetime(w) {
                LocalResult::Single(x) => Resolved::Single(x.with_timezone(&Utc)),
                LocalResult::Ambiguous(a, b) => {
                    let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
                    Resolved::Repeated(a.min(b), a.max(b))
                }
                LocalResult::None => Resolved::Skipped,
            }
        }
        match &self.kind {
            Kind::Local => resolve_in(&chrono::Local, w),
            Kind::Named(tz) => resolve_in(tz, w),
        }
    }

    /// For a wall time skipped by a forward clock change: the instant the clock jumped
    /// (the first local minute at or after `w` that exists, at its first occurrence).
    pub(crate) fn end_of_skip(&self, w: &NaiveDateTime) -> Option<DateTime<Utc>> {
        let mut m = *w;
        // Forward changes are at most a day (Pacific/Apia, 2011).
        for _ in 0..=(2 * 24 * 60) {
            match self.resolve(&m) {
                Resolved::Single(x) | Resolved::Repeated(x, _) => return Some(x),
                Resolved::Skipped => m = m.checked_add_signed(Duration::minutes(1))?,
            }
        }
        None
    }

    /// The instants in `(from, to]` at which the UTC offset changes, each to the second.
    pub(crate) fn clock_changes(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<DateTime<Utc>> {
        const STEP: Duration = Duration::minutes(15);
        let mut changes = Vec::new();
        let mut prev = from;
        let mut prev_offset = self.offset_secs(&prev);
        while prev < to {
            let next = (prev + STEP).min(to);
            let next_offset = self.offset_secs(&next);
            if next_offset != prev_offset {
                // The offset at `lo` is the old one, at `hi` the new one.
                let (mut lo, mut hi) = (prev, next);
                while hi - lo > Duration::seconds(1) {
                    let mid = lo + (hi - lo) / 2;
                    if self.offset_secs(&mid) == prev_offset {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                let whole = DateTime::from_timestamp(hi.timestamp(), 0).unwrap_or(hi);
                let change = if whole > lo && self.offset_secs(&whole) != prev_offset {
                    whole
                } else {
                    hi
                };
                changes.push(change);
            }
            prev = next;
            prev_offset = next_offset;
        }
        changes
    }

    /// The smallest UTC offset (seconds) in `[from, from + reach]`.
    pub(crate) fn min_offset(&self, from: DateTime<Utc>, reach: Duration) -> i64 {
        self.offsets(from, reach).min().unwrap_or(0)
    }

    fn offsets(&self, from: DateTime<Utc>, reach: Duration) -> impl Iterator<Item = i64> + '_ {
        let to = from.checked_add_signed(reach).unwrap_or(from);
        let changes = self.clock_changes(from, to);
        std::iter::once(from)
            .chain(changes)
            .map(move |t| self.offset_secs(&t))
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `t` in chrono; `None` only outside chrono's range (never for `time`'s default range).
pub(crate) fn to_chrono(t: OffsetDateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond())
}

/// `t` as a UTC `OffsetDateTime`; `None` past `time`'s range.
pub(crate) fn to_time(t: DateTime<Utc>) -> Option<OffsetDateTime> {
    let nanos = i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos());
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn unknown_zone_is_refused_with_an_example() {
        let e = Zone::parse(Some("Mars/Base")).unwrap_err().to_string();
        assert_eq!(
            e,
            "time zone \"Mars/Base\" is not an IANA time zone name (e.g. Europe/Warsaw, UTC)"
        );
        assert!(Zone::parse(Some("")).is_err());
        assert_eq!(Zone::parse(Some("UTC")).unwrap().name(), "UTC");
        assert_eq!(
            Zone::parse(Some("Europe/Warsaw")).unwrap().name(),
            "Europe/Warsaw"
        );
        assert_eq!(Zone::parse(None).unwrap().name(), "local");
    }

    #[test]
    fn finds_warsaw_clock_changes_to_the_second() {
        let z = Zone::parse(Some("Europe/Warsaw")).unwrap();
        // 2026: forward on 29 March 01:00 UTC, back on 25 October 01:00 UTC.
        assert_eq!(
            z.clock_changes(utc(2026, 3, 28, 0, 0), utc(2026, 3, 30, 0, 0)),
            vec![utc(2026, 3, 29, 1, 0)]
        );
        assert_eq!(
            z.clock_changes(utc(2026, 10, 24, 0, 0), utc(2026, 10, 26, 0, 0)),
            vec![utc(2026, 10, 25, 1, 0)]
        );
        assert!(z
            .clock_changes(utc(2026, 6, 1, 0, 0), utc(2026, 6, 3, 0, 0))
            .is_empty());
        assert_eq!(
            z.min_offset(utc(2026, 10, 24, 12, 0), CLOCK_CHANGE_REACH),
            3600
        );
        assert_eq!(
            z.min_offset(utc(2026, 6, 1, 0, 0), CLOCK_CHANGE_REACH),
            7200
        );
    }

    #[test]
    fn resolves_skipped_and_repeated_wall_times() {
        let z = Zone::parse(Some("Europe/Warsaw")).unwrap();
        let at = |d: u32, mo: u32, h: u32, mi: u32| {
            NaiveDate::from_ymd_opt(2026, mo, d)
                .unwrap()
                .and_hms_opt(h, mi, 0)
                .unwrap()
        };
        assert_eq!(z.resolve(&at(29, 3, 2, 30)), Resolved::Skipped);
        assert_eq!(
            z.end_of_skip(&at(29, 3, 2, 30)),
            Some(utc(2026, 3, 29, 1, 0))
        );
        assert_eq!(
            z.resolve(&at(25, 10, 2, 30)),
            Resolved::Repeated(utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30))
        );
        assert_eq!(
            z.resolve(&at(1, 6, 2, 30)),
            Resolved::Single(utc(2026, 6, 1, 0, 30))
        );
    }

    #[test]
    fn converts_between_time_and_chrono() {
        let t = time::macros::datetime!(2026-11-22 03:04:05.123456789 UTC);
        let c = to_chrono(t).unwrap();
        assert_eq!(c.timestamp(), t.unix_timestamp());
        assert_eq!(c.timestamp_subsec_nanos(), 123_456_789);
        assert_eq!(to_time(c), Some(t));
        let offset = time::macros::datetime!(2026-11-22 04:04:05.123456789 +01:00);
        assert_eq!(to_chrono(offset), Some(c));
    }
}
