//! The 5-field cron dialect of plan schedules: parsing, validation with messages that name
//! the bad field, and translation to the `cron` crate's 6-field form (a leading seconds
//! field, day-of-week numbered 1 = Sunday .. 7 = Saturday), which does the iteration.
//!
//! The `cron` crate ANDs day-of-month and day-of-week; standard (Vixie) cron ORs them when
//! both are restricted, so such a line becomes two crate schedules whose fire times are
//! merged.

use super::ScheduleError;
use std::str::FromStr;

/// A parsed line: its fire times are the union of `schedules`' (one or two).
#[derive(Clone, Debug)]
pub(crate) struct CronLine {
    pub(crate) schedules: Vec<cron::Schedule>,
    /// The minute or hour field starts with `*`: the line follows the clock through DST
    /// changes (skipped times are skipped, repeated times run twice), as Vixie cron does.
    pub(crate) follows_clock: bool,
}

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    names_from: u32,
    allowed: &'static str,
}

const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
    names_from: 0,
    allowed: "0-59, *, ranges a-b, steps */n, lists",
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
    names_from: 0,
    allowed: "0-23, *, ranges a-b, steps */n, lists",
};
const DAY_OF_MONTH: FieldSpec = FieldSpec {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
    names_from: 0,
    allowed: "1-31, *, ranges a-b, steps */n, lists",
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
    names_from: 1,
    allowed: "1-12 or JAN-DEC, *, ranges a-b, steps */n, lists",
};
const DAY_OF_WEEK: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    names_from: 0,
    allowed: "0-7 (0 and 7 are Sunday) or SUN-SAT, *, ranges a-b, steps */n, lists",
};

/// Parses a 5-field line or an `@macro`.
pub(crate) fn parse(expr: &str) -> Result<CronLine, ScheduleError> {
    let line_error = |reason: String| ScheduleError::Expression {
        expr: expr.to_string(),
        reason,
    };
    let trimmed = expr.trim();
    let standard = if let Some(name) = trimmed.strip_prefix('@') {
        match name.to_ascii_lowercase().as_str() {
            "hourly" => "0 * * * *",
            "daily" | "midnight" => "0 0 * * *",
            "weekly" => "0 0 * * 0",
            "monthly" => "0 0 1 * *",
            "yearly" | "annually" => "0 0 1 1 *",
            "reboot" => return Err(line_error(
                "@reboot is not a schedule (running a missed schedule at start is a plan setting)"
                    .to_string(),
            )),
            _ => return Err(line_error(format!("unknown macro @{name}"))),
        }
    } else {
        trimmed
    };
    let fields: Vec<&str> = standard.split_whitespace().collect();
    match fields.len() {
        5 => {}
        0 => return Err(line_error("it is empty".to_string())),
        n @ (6 | 7) => {
            return Err(line_error(format!(
                "it has {n} fields; only standard 5-field lines are accepted, without seconds or year fields"
            )))
        }
        n => return Err(line_error(format!("it has {n} fields, not 5"))),
    }
    let field = |text: &str, spec: &FieldSpec| {
        parse_field(text, spec).map_err(|reason| ScheduleError::Field {
            expr: expr.to_string(),
            field: spec.name,
            value: text.to_string(),
            reason,
            allowed: spec.allowed,
        })
    };
    let minutes = field(fields[0], &MINUTE)?;
    let hours = field(fields[1], &HOUR)?;
    let days = field(fields[2], &DAY_OF_MONTH)?;
    let months = field(fields[3], &MONTH)?;
    let mut weekdays = field(fields[4], &DAY_OF_WEEK)?;
    if weekdays & (1 << 7) != 0 {
        weekdays = (weekdays | 1) & !(1 << 7);
    }
    let days_star = fields[2].starts_with('*');
    let weekdays_star = fields[4].starts_with('*');
    let follows_clock = fields[0].starts_with('*') || fields[1].starts_with('*');

    let all_days = full_mask(&DAY_OF_MONTH);
    let all_weekdays = 0b111_1111;
    let days_possible = months_days_exist(months, days);
    // (days-of-month, days-of-week) pairs whose fire times are merged.
    let parts: Vec<(u64, u64)> = if !days_star && !weekdays_star {
        // Vixie cron: either field matching is enough.
        let mut parts = vec![(all_days, weekdays)];
        if days_possible {
            parts.insert(0, (days, all_weekdays));
        }
        parts
    } else {
        if !days_possible {
            return Err(line_error(format!(
                "it never fires: day-of-month {:?} does not occur in month {:?}",
                fields[2], fields[3]
            )));
        }
        vec![(days, weekdays)]
    };

    let mut schedules = Vec::with_capacity(parts.len());
    for (days, weekdays) in parts {
        let crate_expr = format!(
            "0 {} {} {} {} {}",
            list(minutes, &MINUTE, 0),
            list(hours, &HOUR, 0),
            list(days, &DAY_OF_MONTH, 0),
            list(months, &MONTH, 0),
            // The crate numbers days of the week 1 = Sunday .. 7 = Saturday.
            weekday_list(weekdays),
        );
        let schedule = cron::Schedule::from_str(&crate_expr).map_err(|e| {
            line_error(format!(
                "the cron library refused its translation {crate_expr:?}: {e}"
            ))
        })?;
        schedules.push(schedule);
    }
    Ok(CronLine {
        schedules,
        follows_clock,
    })
}

fn full_mask(spec: &FieldSpec) -> u64 {
    (spec.min..=spec.max).fold(0, |m, v| m | (1 << v))
}

/// Whether some selected day-of-month exists in some selected month (February has 29).
fn months_days_exist(months: u64, days: u64) -> bool {
    const LAST_DAY: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    (1..=12u32).any(|m| {
        months & (1 << m) != 0 && (1..=LAST_DAY[m as usize - 1]).any(|d| days & (1 << d) != 0)
    })
}

fn list(mask: u64, spec: &FieldSpec, shift: u32) -> String {
    if mask == full_mask(spec) {
        return "*".to_string();
    }
    (spec.min..=spec.max)
        .filter(|v| mask & (1 << v) != 0)
        .map(|v| (v + shift).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn weekday_list(mask: u64) -> String {
    if mask == 0b111_1111 {
        return "*".to_string();
    }
    (0..7u32)
        .filter(|v| mask & (1 << v) != 0)
        .map(|v| (v + 1).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// One field as a bit set of its values; the error is the reason, without the field name.
fn parse_field(text: &str, spec: &FieldSpec) -> Result<u64, String> {
    let mut mask = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err("a list item is empty".to_string());
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(parse_step(step, spec)?)),
            None => (item, None),
        };
        let (lo, hi) = if range == "*" {
            (spec.min, spec.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let lo = value(a, spec, false)?;
            let hi = value(b, spec, true)?;
            if lo > hi {
                return Err(format!(
                    "range {range} runs backwards; write it as a list of two ranges ({a}-{}, {}-{b})",
                    spec.max, spec.min
                ));
            }
            (lo, hi)
        } else {
            let v = value(range, spec, false)?;
            match step {
                Some(_) => (v, spec.max),
                None => (v, v),
            }
        };
        let step = step.unwrap_or(1) as usize;
        for v in (lo..=hi).step_by(step) {
            mask |= 1 << v;
        }
    }
    Ok(mask)
}

fn parse_step(text: &str, spec: &FieldSpec) -> Result<u32, String> {
    let step = number(text).ok_or_else(|| format!("step {text:?} is not a number"))?;
    if step == 0 || step > spec.max - spec.min {
        return Err(format!(
            "step {step} must be between 1 and {}",
            spec.max - spec.min
        ));
    }
    Ok(step)
}

fn number(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 4 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn value(text: &str, spec: &FieldSpec, range_end: bool) -> Result<u32, String> {
    if let Some(v) = number(text) {
        if v < spec.min || v > spec.max {
            return Err(format!("{v} is out of range {}-{}", spec.min, spec.max));
        }
        return Ok(v);
    }
    let lower = text.to_ascii_lowercase();
    if let Some(i) = spec.names.iter().position(|n| *n == lower) {
        let v = spec.names_from + i as u32;
        // `SAT-SUN`: Sunday at the end of a range is day 7.
        if range_end && spec.name == DAY_OF_WEEK.name && v == 0 {
            return Ok(7);
        }
        return Ok(v);
    }
    if text.is_empty() {
        return Err("a value is missing".to_string());
    }
    Err(format!(
        "{text:?} is not a number{}",
        if spec.names.is_empty() {
            ""
        } else {
            " or a name"
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    impl CronLine {
        fn crate_exprs(&self) -> Vec<&str> {
            self.schedules.iter().map(|s| s.source()).collect()
        }
    }

    #[test]
    fn translation_prepends_seconds_and_numbers_weekdays_from_sunday_as_1() {
        let line = parse("0 3 * * 1-5").unwrap();
        assert_eq!(line.crate_exprs(), vec!["0 0 3 * * 2,3,4,5,6"]);
        let line = parse("*/15 1,2 * JAN-MAR sun").unwrap();
        assert_eq!(line.crate_exprs(), vec!["0 0,15,30,45 1,2 * 1,2,3 1"]);
        assert!(line.follows_clock);
        assert_eq!(
            parse("0 0 * * 7").unwrap().crate_exprs(),
            vec!["0 0 0 * * 1"]
        );
        assert_eq!(
            parse("0 0 * * 5-7").unwrap().crate_exprs(),
            vec!["0 0 0 * * 1,6,7"]
        );
        assert_eq!(
            parse("0 0 * * SAT-SUN").unwrap().crate_exprs(),
            vec!["0 0 0 * * 1,7"]
        );
        assert_eq!(
            parse("0 0 * * 0-7").unwrap().crate_exprs(),
            vec!["0 0 0 * * *"]
        );
        assert_eq!(
            parse("0 0 * * 1-5/2").unwrap().crate_exprs(),
            vec!["0 0 0 * * 2,4,6"]
        );
        assert_eq!(
            parse("5/20 0 * * *").unwrap().crate_exprs(),
            vec!["0 5,25,45 0 * * *"]
        );
        assert!(!parse("30 2 * * *").unwrap().follows_clock);
    }

    #[test]
    fn both_day_fields_restricted_become_two_schedules() {
        let line = parse("0 0 13 * 5").unwrap();
        assert_eq!(line.crate_exprs(), vec!["0 0 0 13 * *", "0 0 0 * * 6"]);
        // A leading `*` keeps the AND (Vixie's rule).
        assert_eq!(parse("0 0 */2 * 1").unwrap().crate_exprs().len(), 1);
        // Feb 30 never exists: only the weekday part remains.
        assert_eq!(
            parse("0 0 30 2 1").unwrap().crate_exprs(),
            vec!["0 0 0 * 2 2"]
        );
    }

    #[test]
    fn macros() {
        for (m, e) in [
            ("@hourly", "0 0 * * * *"),
            ("@daily", "0 0 0 * * *"),
            ("@MIDNIGHT", "0 0 0 * * *"),
            ("@weekly", "0 0 0 * * 1"),
            ("@monthly", "0 0 0 1 * *"),
            ("@yearly", "0 0 0 1 1 *"),
            ("@annually", "0 0 0 1 1 *"),
        ] {
            assert_eq!(parse(m).unwrap().crate_exprs(), vec![e], "{m}");
        }
    }

    fn error(expr: &str) -> String {
        match parse(expr) {
            Ok(line) => panic!("{expr:?} was accepted as {:?}", line.crate_exprs()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn rejects_bad_lines_naming_the_problem() {
        let e = error("0 3 * *");
        assert!(
            e.contains("\"0 3 * *\"") && e.contains("4 fields, not 5"),
            "{e}"
        );
        assert!(e.contains("@daily"), "{e}");
        let e = error("0 0 3 * * *");
        assert!(
            e.contains("6 fields") && e.contains("without seconds"),
            "{e}"
        );
        let e = error("0 0 3 * * * 2030");
        assert!(e.contains("7 fields"), "{e}");
        assert!(error("").contains("empty"));
        assert!(error("   ").contains("empty"));
        let e = error("60 * * * *");
        assert!(
            e.contains("minute field \"60\"") && e.contains("out of range 0-59"),
            "{e}"
        );
        let e = error("0 24 * * *");
        assert!(e.contains("hour field \"24\""), "{e}");
        let e = error("0 0 0 * *");
        assert!(e.contains("day-of-month field \"0\""), "{e}");
        let e = error("0 0 * 13 *");
        assert!(e.contains("month field \"13\""), "{e}");
        let e = error("0 0 * * 8");
        assert!(
            e.contains("day-of-week field \"8\"") && e.contains("0 and 7 are Sunday"),
            "{e}"
        );
        let e = error("0 0 * * FOO");
        assert!(e.contains("\"FOO\" is not a number or a name"), "{e}");
        let e = error("x y z w v");
        assert!(e.contains("minute field \"x\""), "{e}");
        let e = error("0 5-1 * * *");
        assert!(e.contains("runs backwards"), "{e}");
        let e = error("*/0 * * * *");
        assert!(e.contains("step 0"), "{e}");
        let e = error("*/60 * * * *");
        assert!(e.contains("step 60"), "{e}");
        let e = error("1,,2 * * * *");
        assert!(e.contains("empty"), "{e}");
        let e = error("0 0 30 2 *");
        assert!(e.contains("never fires"), "{e}");
        assert!(error("@reboot").contains("@reboot is not a schedule"));
        assert!(error("@often").contains("unknown macro @often"));
        assert!(error("0 0 L * *").contains("day-of-month field \"L\""));
        assert!(error("0 0 ? * *").contains("day-of-month"));
        assert!(error("-1 * * * *").contains("minute"));
        assert!(error("99999999999 * * * *").contains("minute"));
    }
}
