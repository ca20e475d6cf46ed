//! `/metrics` in the Prometheus text format, computed from the stored jobs and
//! plans so the counters survive restarts.

use crate::engine::types::JobKind;
use crate::engine::{EngineError, Service};
use std::collections::BTreeMap;
use std::fmt::Write;

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// What the stored jobs add up to.
#[derive(Default)]
struct Totals {
    by_state: BTreeMap<&'static str, u64>,
    /// Jobs that ran to an end.
    run: u64,
    fetched: u64,
    stored: u64,
    repos_failed: u64,
    /// (connection, credential) -> (requests, rate limited)
    credentials: BTreeMap<(String, String), (u64, u64)>,
}

fn totals(all: &[crate::engine::types::Job]) -> Totals {
    let mut sum = Totals::default();
    for j in all {
        *sum.by_state.entry(j.state_name()).or_default() += 1;
        if j.is_finished() {
            sum.run += 1;
        }
        if matches!(j.kind, JobKind::Backup { .. }) {
            sum.fetched += j.progress.bytes_fetched;
            sum.stored += j.progress.bytes_stored;
            sum.repos_failed += j.progress.failed;
            for c in &j.progress.credentials {
                let e = sum
                    .credentials
                    .entry((c.connection.clone(), c.credential.clone()))
                    .or_default();
                e.0 += c.requests;
                e.1 += c.rate_limited;
            }
        }
    }
    sum
}

/// Writes the `# HELP` and `# TYPE` lines of metric `name`.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A counter with one value.
fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    family(out, name, "counter", help);
    let _ = writeln!(out, "{name} {value}");
}

/// A metric family per credential: its name, its help and which of the credential's
/// (requests, rate limited) it counts.
type CredentialFamily = (&'static str, &'static str, fn(&(u64, u64)) -> u64);

/// Renders the metrics.
pub fn render(service: &dyn Service) -> Result<String, EngineError> {
    let totals = totals(&service.jobs(usize::MAX)?);
    let mut out = String::new();
    family(
        &mut out,
        "reposafe_jobs",
        "gauge",
        "Jobs by state (queued and running included).",
    );
    for (s, n) in &totals.by_state {
        let _ = writeln!(out, "reposafe_jobs{{state=\"{s}\"}} {n}");
    }
    let failed = totals.by_state.get("failed").copied().unwrap_or(0)
        + totals.by_state.get("partial").copied().unwrap_or(0);
    counter(
        &mut out,
        "reposafe_jobs_run_total",
        "Jobs that ran to an end.",
        totals.run,
    );
    counter(
        &mut out,
        "reposafe_jobs_failed_total",
        "Jobs that failed in whole or in part.",
        failed,
    );
    counter(
        &mut out,
        "reposafe_repositories_failed_total",
        "Repository backups that failed.",
        totals.repos_failed,
    );
    counter(
        &mut out,
        "reposafe_bytes_fetched_total",
        "Bytes fetched from providers by backup jobs.",
        totals.fetched,
    );
    counter(
        &mut out,
        "reposafe_bytes_stored_total",
        "Bytes added to the archive by backup jobs.",
        totals.stored,
    );
    // Each credential's (requests, rate limited), one family each.
    let per_credential: [CredentialFamily; 2] = [
        (
            "reposafe_credential_requests_total",
            "Requests (API and git) sent with each credential by backup jobs.",
            |counts| counts.0,
        ),
        (
            "reposafe_credential_rate_limited_total",
            "429 answers each credential got.",
            |counts| counts.1,
        ),
    ];
    for (name, help, value) in per_credential {
        family(&mut out, name, "counter", help);
        for ((conn, cred), counts) in &totals.credentials {
            let _ = writeln!(
                &mut out,
                "{name}{{connection=\"{}\",credential=\"{}\"}} {}",
                label(conn),
                label(cred),
                value(counts)
            );
        }
    }
    family(
        &mut out,
        "reposafe_plan_last_success_timestamp_seconds",
        "gauge",
        "End of the plan's last fully successful job.",
    );
    for p in service.plans()? {
        let last_success = p
            .status
            .last_success
            .map(|t| t.unix_timestamp())
            .unwrap_or(0);
        let _ = writeln!(
            &mut out,
            "reposafe_plan_last_success_timestamp_seconds{{plan=\"{}\"}} {last_success}",
            label(&p.spec.name)
        );
    }
    Ok(out)
}
