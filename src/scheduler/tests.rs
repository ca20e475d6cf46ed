//! Behaviour of schedules and windows as the daemon sees them: fire times, missed runs,
//! DST in Europe/Warsaw (and Lord Howe's half-hour change), window openings.

use super::{Schedule, Window, Zone};
use time::macros::datetime;
use time::{Duration, OffsetDateTime, Weekday};

fn fires(s: &Schedule, from: OffsetDateTime, n: usize) -> Vec<OffsetDateTime> {
    let mut out = Vec::with_capacity(n);
    let mut t = from;
    for _ in 0..n {
        let next = s.next_after(t).expect("a next fire time");
        assert!(next > t, "{s}: next_after({t}) = {next} is not after it");
        assert_eq!(next.offset(), time::UtcOffset::UTC);
        out.push(next);
        t = next;
    }
    out
}

fn utc_schedule(expr: &str) -> Schedule {
    Schedule::parse(expr, Some("UTC")).unwrap()
}

#[test]
fn weekday_range_fires_monday_to_friday_at_three() {
    let s = utc_schedule("0 3 * * 1-5");
    // 2026-11-21 is a Saturday.
    let got = fires(&s, datetime!(2026-11-21 12:00 UTC), 10);
    let days: Vec<(Weekday, u8)> = got.iter().map(|t| (t.weekday(), t.day())).collect();
    use Weekday::*;
    assert_eq!(
        days,
        vec![
            (Monday, 23),
            (Tuesday, 24),
            (Wednesday, 25),
            (Thursday, 26),
            (Friday, 27),
            (Monday, 30),
            (Tuesday, 1),
            (Wednesday, 2),
            (Thursday, 3),
            (Friday, 4)
        ]
    );
    assert!(got
        .iter()
        .all(|t| (t.hour(), t.minute(), t.second()) == (3, 0, 0)));
    // Names mean the same.
    assert_eq!(
        fires(
            &utc_schedule("0 3 * * mon-FRI"),
            datetime!(2026-11-21 12:00 UTC),
            10
        ),
        got
    );
}

#[test]
fn sunday_is_0_and_7_and_sun() {
    let from = datetime!(2026-11-18 00:00 UTC);
    let zero = fires(&utc_schedule("0 0 * * 0"), from, 4);
    assert_eq!(zero[0], datetime!(2026-11-22 00:00 UTC));
    assert!(
        zero.iter().all(|t| t.weekday() == Weekday::Sunday),
        "{zero:?}"
    );
    assert_eq!(fires(&utc_schedule("0 0 * * 7"), from, 4), zero);
    assert_eq!(fires(&utc_schedule("0 0 * * SUN"), from, 4), zero);
    assert_eq!(fires(&utc_schedule("@weekly"), from, 4), zero);
    // Saturday is 6, not Sunday.
    assert!(fires(&utc_schedule("0 0 * * 6"), from, 4)
        .iter()
        .all(|t| t.weekday() == Weekday::Saturday));
}

#[test]
fn day_of_month_and_day_of_week_both_restricted_match_either() {
    let s = utc_schedule("0 0 13 * 5");
    let from = datetime!(2026-11-01 00:00 UTC);
    let got = fires(&s, from, 30);
    let mut expected = Vec::new();
    let mut day = datetime!(2026-11-02 00:00 UTC);
    while expected.len() < 30 {
        if day.day() == 13 || day.weekday() == Weekday::Friday {
            expected.push(day);
        }
        day += Duration::days(1);
    }
    assert_eq!(got, expected);
    // The union really is one: a 13th that is not a Friday, and Fridays that are not the 13th.
    assert!(got
        .iter()
        .any(|t| t.day() == 13 && t.weekday() != Weekday::Friday));
    assert!(got
        .iter()
        .any(|t| t.day() != 13 && t.weekday() == Weekday::Friday));
    // A leading `*` keeps the AND: odd days that are Mondays.
    let and = fires(&utc_schedule("0 0 */2 * 1"), from, 6);
    assert!(
        and.iter()
            .all(|t| t.day() % 2 == 1 && t.weekday() == Weekday::Monday),
        "{and:?}"
    );
}

#[test]
fn macros_fire_when_they_say() {
    let from = datetime!(2026-11-22 03:04:05 UTC);
    assert_eq!(
        utc_schedule("@hourly").next_after(from),
        Some(datetime!(2026-11-22 04:00 UTC))
    );
    assert_eq!(
        utc_schedule("@daily").next_after(from),
        Some(datetime!(2026-11-23 00:00 UTC))
    );
    assert_eq!(
        utc_schedule("@midnight").next_after(from),
        Some(datetime!(2026-11-23 00:00 UTC))
    );
    assert_eq!(
        utc_schedule("@monthly").next_after(from),
        Some(datetime!(2026-12-01 00:00 UTC))
    );
    assert_eq!(
        utc_schedule("@yearly").next_after(from),
        Some(datetime!(2027-01-01 00:00 UTC))
    );
    assert_eq!(
        utc_schedule("* * * * *").next_after(from),
        Some(datetime!(2026-11-22 03:05 UTC))
    );
    // Strictly after, also with a fraction of a second.
    assert_eq!(
        utc_schedule("4 3 * * *").next_after(datetime!(2026-11-22 03:04:00.5 UTC)),
        Some(datetime!(2026-11-23 03:04 UTC))
    );
    assert_eq!(
        utc_schedule("4 3 * * *").next_after(datetime!(2026-11-22 03:03:59.999 UTC)),
        Some(datetime!(2026-11-22 03:04 UTC))
    );
    // The cron library stops at 2100.
    assert_eq!(
        utc_schedule("@yearly").next_after(datetime!(2100-06-01 00:00 UTC)),
        None
    );
}

#[test]
fn named_zone_shifts_fire_times() {
    let s = Schedule::parse("0 3 * * *", Some("Europe/Warsaw")).unwrap();
    // Winter: UTC+1.
    assert_eq!(
        s.next_after(datetime!(2026-11-22 00:00 UTC)),
        Some(datetime!(2026-11-22 02:00 UTC))
    );
    // Summer: UTC+2.
    assert_eq!(
        s.next_after(datetime!(2026-07-01 00:00 UTC)),
        Some(datetime!(2026-07-01 01:00 UTC))
    );
    assert_eq!(s.timezone(), "Europe/Warsaw");
    assert_eq!(s.expression(), "0 3 * * *");
    assert_eq!(s.to_string(), "0 3 * * * (Europe/Warsaw)");
    let ny = Schedule::parse("30 23 * * *", Some("America/New_York")).unwrap();
    assert_eq!(
        ny.next_after(datetime!(2026-11-22 00:00 UTC)),
        Some(datetime!(2026-11-22 04:30 UTC)) // 23:30 EST on the 21st
    );
}

#[test]
fn local_zone_is_the_servers() {
    let s = Schedule::parse("  0 3 * * *  ", None).unwrap();
    assert_eq!(s.timezone(), "local");
    assert_eq!(s.expression(), "0 3 * * *");
    let from = datetime!(2026-11-22 12:00 UTC);
    let next = s.next_after(from).unwrap();
    let local = chrono::DateTime::from_timestamp(next.unix_timestamp(), 0)
        .unwrap()
        .with_timezone(&chrono::Local);
    use chrono::Timelike;
    assert_eq!((local.hour(), local.minute()), (3, 0), "{local}");
    assert!(next > from && next - from <= Duration::hours(24 + 15));
}

#[test]
fn unknown_zone_is_refused_naming_it() {
    let e = Schedule::parse("0 3 * * *", Some("Mars/Base")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "time zone \"Mars/Base\" is not an IANA time zone name (e.g. Europe/Warsaw, UTC)"
    );
    let e = Schedule::parse("0 3 * * * *", Some("UTC"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("\"0 3 * * * *\"") && e.contains("6 fields"),
        "{e}"
    );
}

#[test]
fn warsaw_spring_forward_runs_a_skipped_time_once_at_the_jump() {
    // 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC); 02:30 does not exist.
    let s = Schedule::parse("30 2 * * *", Some("Europe/Warsaw")).unwrap();
    assert_eq!(
        fires(&s, datetime!(2026-03-27 00:00 UTC), 4),
        vec![
            datetime!(2026-03-27 01:30 UTC), // 02:30 CET
            datetime!(2026-03-28 01:30 UTC), // 02:30 CET
            datetime!(2026-03-29 01:00 UTC), // 03:00 CEST, the first instant after the gap
            datetime!(2026-03-30 00:30 UTC), // 02:30 CEST
        ]
    );
    // Several skipped times run once; 03:00 itself is the same instant, also once.
    let s = Schedule::parse("0,15,30,45 2,3 * * *", Some("Europe/Warsaw")).unwrap();
    assert_eq!(
        fires(&s, datetime!(2026-03-29 00:50 UTC), 5),
        vec![
            datetime!(2026-03-29 01:00 UTC), // 03:00 CEST, for 02:00-02:45 and 03:00
            datetime!(2026-03-29 01:15 UTC),
            datetime!(2026-03-29 01:30 UTC),
            datetime!(2026-03-29 01:45 UTC),
            datetime!(2026-03-30 00:00 UTC), // 02:00 CEST next day
        ]
    );
    // missed_since agrees.
    let s = Schedule::parse("30 2 * * *", Some("Europe/Warsaw")).unwrap();
    assert_eq!(
        s.missed_since(
            datetime!(2026-03-28 12:00 UTC),
            datetime!(2026-03-29 06:00 UTC)
        ),
        Some(datetime!(2026-03-29 01:00 UTC))
    );
}

#[test]
fn warsaw_fall_back_runs_a_repeated_time_once() {
    // 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00 UTC); 02:30 happens twice.
    let s = Schedule::parse("30 2 * * *", Some("Europe/Warsaw")).unwrap();
    assert_eq!(
        fires(&s, datetime!(2026-10-23 12:00 UTC), 3),
        vec![
            datetime!(2026-10-24 00:30 UTC), // 02:30 CEST
            datetime!(2026-10-25 00:30 UTC), // 02:30 CEST, the first of two
            datetime!(2026-10-26 01:30 UTC), // 02:30 CET
        ]
    );
    // In the second pass of 02:xx, the latest run is this morning's 02:50 CEST, although the
    // clock now shows 02:10 (before 02:50).
    let s50 = Schedule::parse("50 2 * * *", Some("Europe/Warsaw")).unwrap();
    assert_eq!(
        s50.missed_since(
            datetime!(2026-10-24 12:00 UTC),
            datetime!(2026-10-25 01:10 UTC)
        ),
        Some(datetime!(2026-10-25 00:50 UTC))
    );
    // Between the two occurrences, the next one is tomorrow's.
    assert_eq!(
        s.next_after(datetime!(2026-10-25 01:10 UTC)),
        Some(datetime!(2026-10-26 01:30 UTC))
    );
    assert_eq!(
        s.missed_since(
            datetime!(2026-10-25 00:40 UTC),
            datetime!(2026-10-25 02:00 UTC)
        ),
        None
    );
}

#[test]
fn lines_that_follow_the_clock_keep_running_in_real_time_across_dst() {
    let warsaw = Some("Europe/Warsaw");
    // Fall back: hourly fires at 02:00 CEST and again at 02:00 CET, one real hour apart.
    let hourly = Schedule::parse("@hourly", warsaw).unwrap();
    let got = fires(&hourly, datetime!(2026-10-24 22:30 UTC), 5);
    let expected: Vec<_> = (0..5)
        .map(|h| datetime!(2026-10-24 23:00 UTC) + Duration::hours(h))
        .collect();
    assert_eq!(got, expected);
    // Spring forward: 02:00 does not exist and is skipped; still one real hour apart.
    let got = fires(&hourly, datetime!(2026-03-28 23:30 UTC), 3);
    let expected: Vec<_> = (0..3)
        .map(|h| datetime!(2026-03-29 00:00 UTC) + Duration::hours(h))
        .collect();
    assert_eq!(got, expected);
    // Every minute through the repeated hour: every real minute, no gap, no repeat.
    let minutely = Schedule::parse("* * * * *", warsaw).unwrap();
    let from = datetime!(2026-10-24 23:30 UTC);
    let got = fires(&minutely, from, 150);
    for (i, t) in got.iter().enumerate() {
        assert_eq!(*t, from + Duration::minutes(i as i64 + 1));
    }
    // And from inside the second pass.
    assert_eq!(
        minutely.next_after(datetime!(2026-10-25 01:10:30 UTC)),
        Some(datetime!(2026-10-25 01:11 UTC))
    );
    assert_eq!(
        minutely.missed_since(
            datetime!(2026-10-24 12:00 UTC),
            datetime!(2026-10-25 01:10:30 UTC)
        ),
        Some(datetime!(2026-10-25 01:10 UTC))
    );
    // A fixed minute in a wildcard hour in the first pass: the next is within the first pass.
    let s = Schedule::parse("20 * * * *", warsaw).unwrap();
    assert_eq!(
        s.next_after(datetime!(2026-10-25 00:10 UTC)),
        Some(datetime!(2026-10-25 00:20 UTC)) // 02:20 CEST
    );
    assert_eq!(
        s.next_after(datetime!(2026-10-25 00:20 UTC)),
        Some(datetime!(2026-10-25 01:20 UTC)) // 02:20 CET
    );
}

#[test]
fn missed_since_finds_the_latest_fire_in_the_span() {
    let now = datetime!(2026-11-22 03:04:05.5 UTC);
    let minutely = utc_schedule("* * * * *");
    assert_eq!(
        minutely.missed_since(now - Duration::minutes(10), now),
        Some(datetime!(2026-11-22 03:04 UTC))
    );
    assert_eq!(
        minutely.missed_since(now - Duration::seconds(30), now),
        Some(datetime!(2026-11-22 03:04 UTC))
    );
    // `since` is excluded, `now` included.
    assert_eq!(
        minutely.missed_since(datetime!(2026-11-22 03:04 UTC), now),
        None
    );
    assert_eq!(
        minutely.missed_since(
            datetime!(2026-11-22 03:03:59 UTC),
            datetime!(2026-11-22 03:04 UTC)
        ),
        Some(datetime!(2026-11-22 03:04 UTC))
    );
    assert_eq!(minutely.missed_since(now, now), None);
    assert_eq!(minutely.missed_since(now, now - Duration::hours(1)), None);

    let daily = utc_schedule("@daily");
    let midnight = datetime!(2026-11-22 00:00 UTC);
    assert_eq!(
        daily.missed_since(midnight + Duration::seconds(1), now),
        None
    );
    assert_eq!(
        daily.missed_since(midnight - Duration::seconds(1), now),
        Some(midnight)
    );
    // Down for a month: one run, the latest.
    assert_eq!(
        daily.missed_since(now - Duration::days(31), now),
        Some(midnight)
    );
    // Daily in Warsaw: local midnight is 23:00 UTC the day before.
    let warsaw = Schedule::parse("@daily", Some("Europe/Warsaw")).unwrap();
    assert_eq!(
        warsaw.missed_since(now - Duration::days(2), now),
        Some(datetime!(2026-11-21 23:00 UTC))
    );
    assert_eq!(
        warsaw.missed_since(datetime!(2026-11-21 23:00:01 UTC), now),
        None
    );
    // Yearly, down for two years.
    let yearly = utc_schedule("0 12 1 7 *");
    assert_eq!(
        yearly.missed_since(datetime!(2024-01-01 00:00 UTC), now),
        Some(datetime!(2026-07-01 12:00 UTC))
    );
}

/// `next_after` and `missed_since` agree on every fire around DST changes, for lines that
/// follow the clock and lines that do not, in zones with 1-hour and 30-minute changes.
#[test]
fn next_after_and_missed_since_agree_across_dst() {
    let cases = [
        ("Europe/Warsaw", datetime!(2026-03-28 20:00 UTC)),
        ("Europe/Warsaw", datetime!(2026-10-24 20:00 UTC)),
        ("Australia/Lord_Howe", datetime!(2026-04-04 10:00 UTC)),
        ("Australia/Lord_Howe", datetime!(2026-10-03 10:00 UTC)),
        ("America/New_York", datetime!(2026-11-01 00:00 UTC)),
    ];
    let lines = [
        "*/7 * * * *",
        "30 2 * * *",
        "0,20,40 1-3 * * *",
        "@hourly",
        "15 */2 * * *",
    ];
    for (zone, start) in cases {
        for line in lines {
            let s = Schedule::parse(line, Some(zone)).unwrap();
            let all = fires(&s, start, 40);
            let end = start + Duration::hours(12);
            for pair in all.windows(2).take_while(|p| p[0] < end) {
                let (a, b) = (pair[0], pair[1]);
                let ctx = format!("{line} in {zone}, fires {a} and {b}");
                assert_eq!(
                    s.missed_since(a - Duration::seconds(1), a),
                    Some(a),
                    "{ctx}"
                );
                assert_eq!(
                    s.missed_since(start, b - Duration::seconds(1)),
                    Some(a),
                    "{ctx}"
                );
                assert_eq!(s.missed_since(a, b - Duration::seconds(1)), None, "{ctx}");
                assert_eq!(s.next_after(a + Duration::seconds(1)), Some(b), "{ctx}");
            }
        }
    }
}

#[test]
fn window_parse_and_display() {
    assert_eq!(
        Window::parse("01:00-06:00").unwrap().to_string(),
        "01:00-06:00"
    );
    assert_eq!(
        Window::parse(" 1:00 - 6:30 ").unwrap().to_string(),
        "01:00-06:30"
    );
    assert_eq!(
        "22:00-04:00".parse::<Window>().unwrap().to_string(),
        "22:00-04:00"
    );
    assert_eq!(
        Window::parse("22:00-00:00").unwrap().to_string(),
        "22:00-00:00"
    );
    for (bad, says) in [
        ("25:00-06:00", "hour 25 is out of range"),
        ("01:00", "no \"-\""),
        ("01:00-01:00", "equal"),
        ("24:00-06:00", "write midnight as 00:00"),
        ("01:00-06:60", "minute 60 is out of range"),
        ("1:0-2:00", "\"1:0\" is not a time HH:MM"),
        ("ab-cd", "\"ab\" is not a time HH:MM"),
        ("01:00-", "end \"\" is not a time"),
        ("", "no \"-\""),
    ] {
        let e = Window::parse(bad).unwrap_err().to_string();
        assert!(e.contains(&format!("backup window {bad:?}")), "{e}");
        assert!(e.contains(says), "{bad}: {e}");
        assert!(e.contains("HH:MM-HH:MM"), "{e}");
    }
}

#[test]
fn window_contains_opens_and_closes() {
    let utc = Zone::utc();
    let w = Window::parse("01:00-06:00").unwrap();
    assert!(!w.contains(datetime!(2026-11-22 00:59:59 UTC), &utc));
    assert!(w.contains(datetime!(2026-11-22 01:00 UTC), &utc));
    assert!(w.contains(datetime!(2026-11-22 05:59:59.9 UTC), &utc));
    assert!(!w.contains(datetime!(2026-11-22 06:00 UTC), &utc));
    let inside = datetime!(2026-11-22 03:00 UTC);
    assert_eq!(w.next_open(inside, &utc), inside);
    assert_eq!(
        w.closes_at(inside, &utc),
        Some(datetime!(2026-11-22 06:00 UTC))
    );
    assert_eq!(
        w.next_open(datetime!(2026-11-22 07:00 UTC), &utc),
        datetime!(2026-11-23 01:00 UTC)
    );
    assert_eq!(
        w.next_open(datetime!(2026-11-22 00:10 UTC), &utc),
        datetime!(2026-11-22 01:00 UTC)
    );
    assert_eq!(w.closes_at(datetime!(2026-11-22 07:00 UTC), &utc), None);

    let night = Window::parse("22:00-04:00").unwrap();
    assert!(night.contains(datetime!(2026-11-22 23:00 UTC), &utc));
    assert!(night.contains(datetime!(2026-11-22 03:59 UTC), &utc));
    assert!(night.contains(datetime!(2026-11-22 22:00 UTC), &utc));
    assert!(!night.contains(datetime!(2026-11-22 04:00 UTC), &utc));
    assert!(!night.contains(datetime!(2026-11-22 21:59 UTC), &utc));
    assert_eq!(
        night.closes_at(datetime!(2026-11-22 23:00 UTC), &utc),
        Some(datetime!(2026-11-23 04:00 UTC))
    );
    assert_eq!(
        night.next_open(datetime!(2026-11-22 12:00 UTC), &utc),
        datetime!(2026-11-22 22:00 UTC)
    );

    // Evaluated in the schedule's zone: 00:30 UTC is 01:30 in Warsaw in winter.
    let s = Schedule::parse("@daily", Some("Europe/Warsaw")).unwrap();
    assert!(w.contains(datetime!(2026-11-22 00:30 UTC), s.zone()));
    assert!(!w.contains(datetime!(2026-11-22 00:30 UTC), &utc));
    assert_eq!(
        w.closes_at(datetime!(2026-11-22 00:30 UTC), s.zone()),
        Some(datetime!(2026-11-22 05:00 UTC))
    );
}

#[test]
fn window_inside_a_skipped_hour_does_not_open_that_day() {
    let warsaw = Zone::parse(Some("Europe/Warsaw")).unwrap();
    let w = Window::parse("02:15-02:45").unwrap();
    // 2026-03-29 02:15 Warsaw does not exist: the next opening is 02:15 CEST on the 30th.
    assert_eq!(
        w.next_open(datetime!(2026-03-28 23:00 UTC), &warsaw),
        datetime!(2026-03-30 00:15 UTC)
    );
    // A window the jump lands in opens at the jump.
    let w = Window::parse("02:30-05:00").unwrap();
    assert_eq!(
        w.next_open(datetime!(2026-03-28 23:00 UTC), &warsaw),
        datetime!(2026-03-29 01:00 UTC)
    );
}

/// `next_open` and `closes_at` agree with `contains` minute by minute across DST changes.
#[test]
fn window_changes_agree_with_contains_across_dst() {
    let windows = [
        "01:00-06:00",
        "22:00-04:00",
        "02:00-03:00",
        "02:15-02:45",
        "02:30-05:00",
        "01:30-02:30",
        "00:00-02:30",
        "03:00-00:00",
    ];
    let cases = [
        ("Europe/Warsaw", datetime!(2026-03-28 12:00 UTC)),
        ("Europe/Warsaw", datetime!(2026-10-24 12:00 UTC)),
        ("Australia/Lord_Howe", datetime!(2026-04-04 00:00 UTC)),
        ("Australia/Lord_Howe", datetime!(2026-10-03 00:00 UTC)),
    ];
    const MINUTES: i64 = 3 * 24 * 60;
    for (zone_name, start) in cases {
        let zone = Zone::parse(Some(zone_name)).unwrap();
        for text in windows {
            let w = Window::parse(text).unwrap();
            let at = |m: i64| start + Duration::minutes(m);
            let open: Vec<bool> = (0..MINUTES).map(|m| w.contains(at(m), &zone)).collect();
            for m in (0..MINUTES - 2 * 24 * 60).step_by(7) {
                let t = at(m);
                let ctx = format!("{text} in {zone_name} at {t}");
                let first_change = (m + 1..MINUTES)
                    .find(|&n| open[n as usize] != open[m as usize])
                    .map(at)
                    .expect("the window changes within two days");
                if open[m as usize] {
                    assert_eq!(w.next_open(t, &zone), t, "{ctx}");
                    assert_eq!(w.closes_at(t, &zone), Some(first_change), "{ctx}");
                } else {
                    assert_eq!(w.next_open(t, &zone), first_change, "{ctx}");
                    assert_eq!(w.closes_at(t, &zone), None, "{ctx}");
                }
            }
        }
    }
}

#[test]
fn syntax_text_names_every_accepted_form() {
    for needle in [
        "minute hour day-of-month month day-of-week",
        "@hourly",
        "@midnight",
        "0 and 7 are Sunday",
        "EITHER",
        "HH:MM-HH:MM",
        "Europe/Warsaw",
    ] {
        assert!(super::SYNTAX.contains(needle), "{needle}");
    }
}
