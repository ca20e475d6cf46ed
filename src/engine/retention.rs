//! Retention policies: which snapshots of one repository a policy keeps, and why.
//!
//! restic's semantics (`restic forget`), with times read in a given zone:
//! * `keep_last n`: the `n` newest snapshots;
//! * `keep_hourly/daily/weekly/monthly/yearly n`: going from the newest snapshot
//!   back, the newest snapshot of each of the last `n` hours/days/ISO weeks/months/
//!   years that have a snapshot;
//! * `keep_within d`: every snapshot taken within `d` of the newest one.
//!
//! A snapshot is kept when any rule keeps it, and the newest snapshot is always kept,
//! whatever the policy. A policy without any rule keeps everything (and `forget`
//! refuses it: forgetting needs a rule).

use time::{Duration, OffsetDateTime};

use crate::scheduler::Zone;

pub use crate::state::RetentionPolicy as Policy;

impl Policy {
    /// Whether the policy has no rule at all.
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }

    /// Grandfather-father-son: 7 daily, 4 weekly, 12 monthly, 3 yearly.
    pub fn gfs() -> Policy {
        Policy {
            keep_daily: Some(7),
            keep_weekly: Some(4),
            keep_monthly: Some(12),
            keep_yearly: Some(3),
            ..Policy::default()
        }
    }
}

/// The policy in words, e.g. `keep the last 2, daily 7, monthly 12`; `keep every
/// snapshot` for none.
pub fn describe(policy: Option<&Policy>) -> String {
    let Some(p) = policy.filter(|p| !p.is_empty()) else {
        return "keep every snapshot".to_string();
    };
    let mut parts = Vec::new();
    if let Some(n) = p.keep_last {
        parts.push(format!("the last {n}"));
    }
    for (name, n) in [
        ("hourly", p.keep_hourly),
        ("daily", p.keep_daily),
        ("weekly", p.keep_weekly),
        ("monthly", p.keep_monthly),
        ("yearly", p.keep_yearly),
    ] {
        if let Some(n) = n {
            parts.push(format!("{name} {n}"));
        }
    }
    if let Some(s) = p.keep_within_secs {
        parts.push(format!("all within {} of the newest", format_duration(s)));
    }
    format!("keep {}", parts.join(", "))
}

/// Seconds as [`parse_duration`] reads them back, in the largest whole unit
/// (`30d`, `12h`, `90min`, `45s`).
pub fn format_duration(secs: u64) -> String {
    for (unit, size) in [("d", 86_400), ("h", 3600), ("min", 60)] {
        if secs > 0 && secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

/// One snapshot's verdict: kept (with every rule that keeps it) or removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub keep: bool,
    /// The rules that keep it (`last`, `daily`, …, `within`, `newest`).
    pub reasons: Vec<&'static str>,
}

/// The calendar buckets of the bucket rules, in the order they are reported.
const BUCKETS: [&str; 5] = ["hourly", "daily", "weekly", "monthly", "yearly"];

/// The bucket of time `t` (already in the zone) for rule `rule`.
fn bucket(rule: &str, t: OffsetDateTime) -> (i32, u32, u32) {
    let (year, month, day, hour) = (
        t.year(),
        u32::from(u8::from(t.month())),
        u32::from(t.day()),
        u32::from(t.hour()),
    );
    match rule {
        "hourly" => (year, month * 100 + day, hour),
        "daily" => (year, month, day),
        "weekly" => {
            let (iso_year, week, _) = t.to_iso_week_date();
            (iso_year, u32::from(week), 0)
        }
        "monthly" => (year, month, 0),
        _ => (year, 0, 0),
    }
}

fn count(policy: &Policy, rule: &str) -> u32 {
    match rule {
        "hourly" => policy.keep_hourly,
        "daily" => policy.keep_daily,
        "weekly" => policy.keep_weekly,
        "monthly" => policy.keep_monthly,
        _ => policy.keep_yearly,
    }
    .unwrap_or(0)
}

/// The verdict on each of `taken` (snapshot times, **newest first**) under `policy`,
/// calendar rules read in `zone`. A policy without rules keeps everything.
pub fn apply(taken: &[OffsetDateTime], policy: &Policy, zone: &Zone) -> Vec<Verdict> {
    let mut out: Vec<Verdict> = taken
        .iter()
        .map(|_| Verdict {
            keep: policy.is_empty(),
            reasons: Vec::new(),
        })
        .collect();
    let Some(&newest) = taken.first() else {
        return out;
    };
    for (i, v) in out.iter_mut().enumerate() {
        if policy.keep_last.is_some_and(|n| (i as u64) < u64::from(n)) {
            v.reasons.push("last");
        }
    }
    for rule in BUCKETS {
        let mut left = count(policy, rule);
        let mut last_bucket = None;
        for (i, t) in taken.iter().enumerate() {
            if left == 0 {
                break;
            }
            let b = bucket(rule, zone.shown_in(*t));
            if last_bucket != Some(b) {
                last_bucket = Some(b);
                out[i].reasons.push(rule);
                left -= 1;
            }
        }
    }
    if let Some(secs) = policy.keep_within_secs {
        // A window reaching before the first date `time` holds keeps everything.
        let window = Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX));
        let since = newest.checked_sub(window);
        for (i, t) in taken.iter().enumerate() {
            if since.is_none_or(|since| *t >= since) {
                out[i].reasons.push("within");
            }
        }
    }
    out[0].reasons.push("newest");
    for v in &mut out {
        v.keep = v.keep || !v.reasons.is_empty();
    }
    out
}

/// `30d`, `12h`, `2w`, `1y6m`, `90min` (restic's `y`, `m` = month, `d`, `h`; also
/// `w` weeks, `min` and `s`) → seconds; months are 30 days, years 365.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let bad = || format!("`{s}` is not a duration such as 30d, 12h, 2w or 1y6m");
    let mut total: u64 = 0;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        let tail = &rest[digits..];
        let (unit, len) = ["min", "y", "m", "w", "d", "h", "s"]
            .iter()
            .find(|u| tail.starts_with(**u))
            .map(|u| (*u, u.len()))
            .ok_or_else(bad)?;
        let secs = match unit {
            "s" => 1,
            "min" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            "m" => 30 * 86_400,
            _ => 365 * 86_400,
        };
        total = total
            .checked_add(n.checked_mul(secs).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        rest = &tail[len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn kept(taken: &[OffsetDateTime], policy: &Policy) -> Vec<usize> {
        apply(taken, policy, &Zone::utc())
            .iter()
            .enumerate()
            .filter(|(_, v)| v.keep)
            .map(|(i, _)| i)
            .collect()
    }

    /// Daily snapshots at 02:00 UTC for `days` days back from 2026-12-01, newest first.
    fn daily(days: i64) -> Vec<OffsetDateTime> {
        (0..days)
            .map(|d| datetime!(2026-12-01 02:00 UTC) - Duration::days(d))
            .collect()
    }

    #[test]
    fn a_keep_within_longer_than_the_calendar_keeps_everything() {
        for secs in [
            parse_duration("13000y").expect("duration"),
            i64::MAX as u64,
            u64::MAX,
        ] {
            let p = Policy {
                keep_within_secs: Some(secs),
                ..Policy::default()
            };
            assert_eq!(kept(&daily(4), &p), [0, 1, 2, 3], "{secs}");
        }
    }

    #[test]
    fn keep_last_keeps_the_newest_n() {
        let p = Policy {
            keep_last: Some(3),
            ..Policy::default()
        };
        assert_eq!(kept(&daily(10), &p), [0, 1, 2]);
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day_and_counts_days_with_snapshots() {
        // Two snapshots a day: the later one of each of the 3 newest days.
        let taken: Vec<OffsetDateTime> = daily(5)
            .into_iter()
            .flat_map(|t| [t + Duration::hours(12), t])
            .collect();
        let p = Policy {
            keep_daily: Some(3),
            ..Policy::default()
        };
        assert_eq!(kept(&taken, &p), [0, 2, 4]);
        let v = apply(&taken, &p, &Zone::utc());
        assert_eq!(v[0].reasons, ["daily", "newest"]);
        assert_eq!(v[2].reasons, ["daily"]);
        assert!(!v[1].keep && v[1].reasons.is_empty());
    }

    #[test]
    fn a_year_of_dailies_under_7_daily_and_12_monthly() {
        let taken = daily(365);
        let p = Policy {
            keep_daily: Some(7),
            keep_monthly: Some(12),
            ..Policy::default()
        };
        let k = kept(&taken, &p);

        // 7 days, then the newest day of each earlier month back to January: December's
        // (Dec 1) and November's (Nov 30) newest are among the 7 days already.
        assert_eq!(&k[..7], &[0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(k.len(), 7 + 12 - 2, "{k:?}");
        let v = apply(&taken, &p, &Zone::utc());
        assert_eq!(v[0].reasons, ["daily", "monthly", "newest"]);
        assert_eq!(
            v[1].reasons,
            ["daily", "monthly"],
            "Nov 30 is November's newest"
        );
        assert_eq!(v[31].reasons, ["monthly"], "Oct 31");
    }

    #[test]
    fn calendar_rules_read_times_in_the_zone() {
        // 23:30 UTC on Nov 30 and 00:30 UTC on Dec 1: two UTC days, one day in UTC-3.
        let taken = [
            datetime!(2026-12-01 00:30 UTC),
            datetime!(2026-11-30 23:30 UTC),
        ];
        let p = Policy {
            keep_daily: Some(5),
            ..Policy::default()
        };
        assert_eq!(kept(&taken, &p), [0, 1]);
        let zone = Zone::parse(Some("America/Sao_Paulo")).expect("zone");
        let v = apply(&taken, &p, &zone);
        assert!(v[0].keep && !v[1].keep, "{v:?}");
    }

    #[test]
    fn weekly_uses_iso_weeks_and_yearly_years() {
        let taken = daily(30);
        let p = Policy {
            keep_weekly: Some(2),
            ..Policy::default()
        };
        // Tue Dec 1 (ISO week 49), then Sun Nov 29 (week 48).
        assert_eq!(kept(&taken, &p), [0, 2]);
        let p = Policy {
            keep_yearly: Some(5),
            ..Policy::default()
        };
        assert_eq!(kept(&daily(400), &p), [0, 335]);
    }

    #[test]
    fn within_counts_from_the_newest_snapshot() {
        let p = Policy {
            keep_within_secs: Some(parse_duration("2d").unwrap()),
            ..Policy::default()
        };
        assert_eq!(kept(&daily(10), &p), [0, 1, 2]);
    }

    #[test]
    fn the_newest_is_always_kept_and_no_rule_keeps_everything() {
        let p = Policy {
            keep_hourly: Some(0),
            ..Policy::default()
        };
        assert_eq!(kept(&daily(4), &p), [0]);
        assert_eq!(kept(&daily(4), &Policy::default()), [0, 1, 2, 3]);
        assert!(apply(&[], &Policy::gfs(), &Zone::utc()).is_empty());
    }

    #[test]
    fn policies_in_words() {
        assert_eq!(describe(None), "keep every snapshot");
        let p = Policy {
            keep_last: Some(2),
            keep_daily: Some(7),
            ..Policy::default()
        };
        assert_eq!(describe(Some(&p)), "keep the last 2, daily 7");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d"), Ok(30 * 86_400));
        assert_eq!(parse_duration("1y6m"), Ok(365 * 86_400 + 180 * 86_400));
        assert_eq!(parse_duration("90min"), Ok(5400));
        assert_eq!(parse_duration("2w12h"), Ok(14 * 86_400 + 12 * 3600));
        assert_eq!(parse_duration("45s"), Ok(45));
        for secs in [45, 5400, 43_200, 30 * 86_400] {
            assert_eq!(parse_duration(&format_duration(secs)), Ok(secs));
        }
        for bad in ["", "d", "10", "3x", "-1d"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("is not a duration"), "{e}");
        }
    }
}
