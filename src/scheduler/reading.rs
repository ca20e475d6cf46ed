//! A plan schedule read aloud: `30 2 * * 1-5` → "at 02:30, Monday to Friday". Only
//! for lines [`super::Schedule::parse`] accepted; the reading covers the common
//! shapes and falls back to naming each field, so it never claims what the line
//! does not say.

const DAYS: [&str; 8] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// The 5 fields of a line, macros expanded.
fn fields(expr: &str) -> Option<[String; 5]> {
    let line = match expr.trim().to_ascii_lowercase().as_str() {
        "@hourly" => "0 * * * *".to_string(),
        "@daily" | "@midnight" => "0 0 * * *".to_string(),
        "@weekly" => "0 0 * * 0".to_string(),
        "@monthly" => "0 0 1 * *".to_string(),
        "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
        other => other.to_string(),
    };
    let v: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    v.try_into().ok()
}

fn number(s: &str) -> Option<u32> {
    s.parse().ok()
}

/// A list of plain numbers (`1,15,30`), if the field is one.
fn numbers(s: &str) -> Option<Vec<u32>> {
    s.split(',').map(number).collect()
}

/// How a line reads; `None` for a line that does not have 5 fields.
pub fn describe(expr: &str) -> Option<String> {
    let [min, hour, dom, month, dow] = fields(expr)?;
    let time = time_part(&min, &hour);
    let mut days = Vec::new();
    if dom != "*" {
        days.push(format!(
            "on day {} of the month",
            list_text(&dom, |n| n.to_string())
        ));
    }
    if dow != "*" {
        let named = list_text(&dow, |n| day_name(n).to_string());
        days.push(if dom != "*" {
            format!("or on {named}")
        } else {
            format!("on {named}")
        });
    }
    if days.is_empty() {
        days.push("every day".into());
    }
    let mut out = format!("{time}, {}", days.join(" "));
    if month != "*" {
        out.push_str(&format!(
            ", in {}",
            list_text(&month, |n| month_name(n).to_string())
        ));
    }
    Some(out)
}

fn day_name(n: u32) -> &'static str {
    DAYS.get(n as usize).copied().unwrap_or("?")
}

fn month_name(n: u32) -> &'static str {
    MONTHS
        .get((n as usize).wrapping_sub(1))
        .copied()
        .unwrap_or("?")
}

/// A field's values in words: `1-5` → "Monday to Friday", `1,3` → "Monday and
/// Wednesday", `*/2` → "every 2nd"; names (`mon-fri`) are kept as written.
fn list_text(field: &str, name: impl Fn(u32) -> String) -> String {
    let parts: Vec<String> = field
        .split(',')
        .map(|part| {
            if let Some(step) = part.strip_prefix("*/") {
                return format!("every {step}{}", ordinal_suffix(step));
            }
            match part.split_once('-') {
                Some((a, b)) => match (number(a), number(b)) {
                    (Some(a), Some(b)) => format!("{} to {}", name(a), name(b)),
                    _ => part.to_string(),
                },
                None => number(part).map(&name).unwrap_or_else(|| part.to_string()),
            }
        })
        .collect();
    match parts.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => parts.concat(),
    }
}

fn ordinal_suffix(n: &str) -> &'static str {
    match n.parse::<u32>().map(|n| (n % 10, n % 100)) {
        Ok((_, 11..=13)) => "th",
        Ok((1, _)) => "st",
        Ok((2, _)) => "nd",
        Ok((3, _)) => "rd",
        _ => "th",
    }
}

fn time_part(min: &str, hour: &str) -> String {
    match (numbers(min), numbers(hour)) {
        (Some(m), Some(h)) if m.len() * h.len() <= 6 => {
            let times: Vec<String> = h
                .iter()
                .flat_map(|h| m.iter().map(move |m| format!("{h:02}:{m:02}")))
                .collect();
            format!("at {}", list_words(&times))
        }
        (Some(m), None) if hour == "*" && m.len() == 1 => {
            format!("every hour at minute {}", m[0])
        }
        (Some(m), None) if m.len() == 1 => match hour.strip_prefix("*/") {
            Some(step) => format!("every {step} hours at minute {}", m[0]),
            None => format!("at minute {} of hours {hour}", m[0]),
        },
        _ if min == "*" && hour == "*" => "every minute".into(),
        _ if hour == "*" => match min.strip_prefix("*/") {
            Some(step) => format!("every {step} minutes"),
            None => format!("at minutes {min} of every hour"),
        },
        _ => format!("at minutes {min} of hours {hour}"),
    }
}

fn list_words(items: &[String]) -> String {
    match items.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => items.concat(),
    }
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn common_lines_read_as_words() {
        let cases = [
            ("30 2 * * *", "at 02:30, every day"),
            ("0 1 * * 1-5", "at 01:00, on Monday to Friday"),
            ("@daily", "at 00:00, every day"),
            ("@weekly", "at 00:00, on Sunday"),
            ("*/15 * * * *", "every 15 minutes, every day"),
            ("0 * * * *", "every hour at minute 0, every day"),
            ("0 */6 * * *", "every 6 hours at minute 0, every day"),
            ("0 0,12 * * *", "at 00:00 and 12:00, every day"),
            ("0 3 1 * *", "at 03:00, on day 1 of the month"),
            (
                "0 0 13 * 5",
                "at 00:00, on day 13 of the month or on Friday",
            ),
            ("0 4 * 1,7 6", "at 04:00, on Saturday, in January and July"),
            ("* * * * *", "every minute, every day"),
        ];
        for (line, want) in cases {
            assert_eq!(describe(line).as_deref(), Some(want), "{line}");
        }
        assert_eq!(describe("1 2 3"), None);
    }
}
