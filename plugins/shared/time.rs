//! RFC 3339 times for the metadata of world 0.3.0, shared by the built-in
//! providers (included with `#[path]`; no dependency, no clock): comparing two
//! times whatever their offset or fraction digits, and writing Data Center's
//! epoch milliseconds as RFC 3339.
// Each provider uses a part: Data Center writes times, Cloud only compares them.
#![allow(dead_code)]

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn number(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Microseconds since the epoch of an RFC 3339 time (`2024-05-01T12:00:00.123456+00:00`,
/// `...Z`, with or without a fraction); `None` when it is not one.
pub fn micros(s: &str) -> Option<i128> {
    let s = s.trim();
    let (date, rest) = s.split_once(['T', 't', ' '])?;
    let mut d = date.splitn(3, '-');
    let (y, mo, da) = (number(d.next()?)?, number(d.next()?)?, number(d.next()?)?);
    let (clock, offset_secs) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let at = rest.rfind(['+', '-'])?;
        let (c, off) = rest.split_at(at);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':').unwrap_or((&off[1..], "0"));
        (c, sign * (number(oh)? * 3600 + number(om)? * 60))
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut t = hms.splitn(3, ':');
    let (h, mi, se) = (number(t.next()?)?, number(t.next()?)?, number(t.next()?)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut micro: i64 = 0;
    for (i, c) in frac.chars().take(6).enumerate() {
        micro += i64::from(c.to_digit(10)?) * 10_i64.pow(5 - i as u32);
    }
    let secs = days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60 + se - offset_secs;
    Some(i128::from(secs) * 1_000_000 + i128::from(micro))
}

/// Whether `time` is strictly after `since` (both RFC 3339). An unreadable time
/// counts as newer: an item is fetched again rather than missed.
pub fn is_after(time: &str, since: &str) -> bool {
    match (micros(time), micros(since)) {
        (Some(t), Some(s)) => t > s,
        _ => true,
    }
}

/// Epoch milliseconds as RFC 3339 in UTC with milliseconds: `2024-05-01T12:00:00.123Z`.
pub fn from_epoch_millis(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_across_offsets_and_fractions() {
        assert!(is_after(
            "2024-05-01T12:00:00.000001+00:00",
            "2024-05-01T12:00:00Z"
        ));
        assert!(!is_after(
            "2024-05-01T12:00:00+00:00",
            "2024-05-01T12:00:00.000Z"
        ));
        assert!(!is_after(
            "2024-05-01T13:00:00+01:00",
            "2024-05-01T12:00:00Z"
        ));
        assert!(is_after(
            "2024-05-02T00:00:00Z",
            "2024-05-01T23:59:59.999999Z"
        ));
        assert!(is_after("garbage", "2024-05-01T12:00:00Z"));
    }

    #[test]
    fn epoch_millis_round_trip() {
        assert_eq!(from_epoch_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            from_epoch_millis(1_714_564_800_123),
            "2024-05-01T12:00:00.123Z"
        );
        assert_eq!(
            micros(&from_epoch_millis(1_714_564_800_123)),
            Some(1_714_564_800_123_000)
        );
        assert_eq!(
            from_epoch_millis(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
    }
}
