//! Schedules and backup windows of backup plans: pure time logic, no I/O.
//!
//! Owns the meaning of a plan's `schedule` (a standard 5-field cron line or an `@macro`,
//! in the server's local time zone or a named IANA zone) and of its optional backup
//! `window` (e.g. `01:00-06:00`). The daemon asks [`Schedule::next_after`] when to wake up,
//! [`Schedule::missed_since`] at start for a run missed while it was down, and
//! [`Window::contains`] / [`Window::next_open`] / [`Window::closes_at`] whether work may
//! run now and until when. All instants in and out are `time::OffsetDateTime`; results
//! are in UTC. Parsing is done by `expr` (our 5-field dialect, translated for the
//! `cron` crate, which iterates), time zones and DST by `zone`.
//!
//! # Accepted schedule syntax
//!
#![doc = include_str!("SYNTAX.md")]

mod expr;
mod reading;
mod schedule;
mod window;
mod zone;

pub use reading::describe;
pub use schedule::Schedule;
pub use window::Window;
pub use zone::Zone;

/// The accepted schedule and window syntax, as plain text for API docs and `--help`.
pub const SYNTAX: &str = include_str!("SYNTAX.md");

/// A schedule, time zone or window that cannot be used; the message names the bad input
/// and says what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The line as a whole is wrong (empty, wrong number of fields, unknown macro, never fires).
    #[error("schedule {expr:?}: {reason}; expected 5 fields \"minute hour day-of-month month day-of-week\" (e.g. \"0 3 * * *\") or one of @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually")]
    Expression { expr: String, reason: String },
    /// One field of a 5-field line is wrong.
    #[error("schedule {expr:?}: {field} field {value:?}: {reason} (allowed: {allowed})")]
    Field {
        expr: String,
        field: &'static str,
        value: String,
        reason: String,
        allowed: &'static str,
    },
    /// The time zone name is not in the IANA database.
    #[error("time zone {0:?} is not an IANA time zone name (e.g. Europe/Warsaw, UTC)")]
    UnknownZone(String),
    /// A backup window that cannot be parsed or is empty.
    #[error("backup window {window:?}: {reason}; expected \"HH:MM-HH:MM\" in 24-hour local time, e.g. \"01:00-06:00\", or \"22:00-04:00\" across midnight")]
    Window { window: String, reason: String },
}

#[cfg(test)]
mod tests;
