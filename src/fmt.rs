//! How numbers and times are shown to people, the same in the CLI and the dashboard.

/// Human-readable byte count (`1.5 MiB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `YYYY-MM-DD HH:MM:SS` in UTC.
pub fn fmt_time(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `YYYY-MM-DD HH:MM` in `t`'s own offset, followed by that offset (`UTC` or
/// `+01:00`): a time shown in the zone it was computed in.
pub fn fmt_time_in_offset(t: time::OffsetDateTime) -> String {
    let offset = t.offset();
    let zone = if offset.is_utc() {
        "UTC".to_string()
    } else {
        let (h, m, _) = offset.as_hms();
        format!(
            "{}{:02}:{:02}",
            if offset.is_negative() { '-' } else { '+' },
            h.abs(),
            m.abs()
        )
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} {zone}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
    )
}

/// Serde for a list of times as RFC 3339 strings (what `time::serde::rfc3339` does
/// for one).
pub mod rfc3339_list {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    pub fn serialize<S: Serializer>(times: &[OffsetDateTime], s: S) -> Result<S::Ok, S::Error> {
        let texts = times
            .iter()
            .map(|t| t.format(&Rfc3339).map_err(serde::ser::Error::custom))
            .collect::<Result<Vec<String>, S::Error>>()?;
        texts.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<OffsetDateTime>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| OffsetDateTime::parse(t, &Rfc3339).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_their_offset_and_as_rfc3339_lists() {
        let t = time::macros::datetime!(2026-12-02 02:00 +01:00);
        assert_eq!(fmt_time_in_offset(t), "2026-12-02 02:00 +01:00");
        let utc = time::macros::datetime!(2026-07-01 23:30 UTC);
        assert_eq!(fmt_time_in_offset(utc), "2026-07-01 23:30 UTC");
        let west = time::macros::datetime!(2026-07-01 09:05 -04:30);
        assert_eq!(fmt_time_in_offset(west), "2026-07-01 09:05 -04:30");

        #[derive(serde::Serialize, serde::Deserialize)]
        struct Runs(#[serde(with = "rfc3339_list")] Vec<time::OffsetDateTime>);
        let json = serde_json::to_string(&Runs(vec![t, utc])).unwrap();
        assert_eq!(
            json,
            r#"["2026-12-02T02:00:00+01:00","2026-07-01T23:30:00Z"]"#
        );
        let back: Runs = serde_json::from_str(&json).unwrap();
        assert_eq!(back.0, vec![t, utc]);
    }

    #[test]
    fn bytes_and_times() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        let t = time::macros::datetime!(2026-11-20 10:05:09 +01:00);
        assert_eq!(fmt_time(t), "2026-11-20 09:05:09");
    }
}
