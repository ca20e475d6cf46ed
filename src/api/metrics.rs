//! `/metrics` in the Prometheus text format, computed from the stored jobs and
//! plans so the counters survive restarts.

use crate::engine::{EngineError, Service};
use crate::state::JobKind;
use std::collections::BTreeMap;
use std::fmt::Write;

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders the metrics.
pub fn render(service: &dyn Service) -> Result<String, EngineError> {
    let all = service.jobs(usize::MAX)?;
    let mut by_state: BTreeMap<&'static str, u64> = BTreeMap::new();
    // (connection, credential) -> (requests, rate limited)
    let mut creds: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    let (mut fetched, mut stored, mut repos_failed) = (0u64, 0u64, 0u64);
    for j in &all {
        *by_state.entry(j.state_name()).or_default() += 1;
        if matches!(j.kind, JobKind::Backup { .. }) {
            fetched += j.progress.bytes_fetched;
            stored += j.progress.bytes_stored;
            repos_failed += j.progress.failed;
            for c in &j.progress.credentials {
                let e = creds
                    .entry((c.connection.clone(), c.credential.clone()))
                    .or_default();
                e.0 += c.requests;
                e.1 += c.rate_limited;
            }
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP reposafe_jobs Jobs by state (queued and running included)."
    );
    let _ = writeln!(out, "# TYPE reposafe_jobs gauge");
    for (s, n) in &by_state {
        let _ = writeln!(out, "reposafe_jobs{{state=\"{s}\"}} {n}");
    }
    let run = all.iter().filter(|j| j.is_finished()).count();
    let failed = by_state.get("failed").copied().unwrap_or(0)
        + by_state.get("partial").copied().unwrap_or(0);
    let _ = writeln!(
        out,
        "# HELP reposafe_jobs_run_total Jobs that ran to an end."
    );
    let _ = writeln!(out, "# TYPE reposafe_jobs_run_total counter");
    let _ = writeln!(out, "reposafe_jobs_run_total {run}");
    let _ = writeln!(
        out,
        "# HELP reposafe_jobs_failed_total Jobs that failed in whole or in part."
    );
    let _ = writeln!(out, "# TYPE reposafe_jobs_failed_total counter");
    let _ = writeln!(out, "reposafe_jobs_failed_total {failed}");
    let _ = writeln!(
        out,
        "# HELP reposafe_repositories_failed_total Repository backups that failed."
    );
    let _ = writeln!(out, "# TYPE reposafe_repositories_failed_total counter");
    let _ = writeln!(out, "reposafe_repositories_failed_total {repos_failed}");
    let _ = writeln!(
        out,
        "# HELP reposafe_bytes_fetched_total Bytes fetched from providers by backup jobs."
    );
    let _ = writeln!(out, "# TYPE reposafe_bytes_fetched_total counter");
    let _ = writeln!(out, "reposafe_bytes_fetched_total {fetched}");
    let _ = writeln!(
        out,
        "# HELP reposafe_bytes_stored_total Bytes added to the archive by backup jobs."
    );
    let _ = writeln!(out, "# TYPE reposafe_bytes_stored_total counter");
    let _ = writeln!(out, "reposafe_bytes_stored_total {stored}");
    let _ = writeln!(out, "# HELP reposafe_credential_requests_total Requests (API and git) sent with each credential by backup jobs.");
    let _ = writeln!(out, "# TYPE reposafe_credential_requests_total counter");
    for ((conn, cred), (n, _)) in &creds {
        let _ = writeln!(
            out,
            "reposafe_credential_requests_total{{connection=\"{}\",credential=\"{}\"}} {n}",
            label(conn),
            label(cred)
        );
    }
    let _ = writeln!(
        out,
        "# HELP reposafe_credential_rate_limited_total 429 answers each credential got."
    );
    let _ = writeln!(out, "# TYPE reposafe_credential_rate_limited_total counter");
    for ((conn, cred), (_, n)) in &creds {
        let _ = writeln!(
            out,
            "reposafe_credential_rate_limited_total{{connection=\"{}\",credential=\"{}\"}} {n}",
            label(conn),
            label(cred)
        );
    }
    let _ = writeln!(out, "# HELP reposafe_plan_last_success_timestamp_seconds End of the plan's last fully successful job.");
    let _ = writeln!(
        out,
        "# TYPE reposafe_plan_last_success_timestamp_seconds gauge"
    );
    for p in service.plans()? {
        let t = p
            .status
            .last_success
            .map(|t| t.unix_timestamp())
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "reposafe_plan_last_success_timestamp_seconds{{plan=\"{}\"}} {t}",
            label(&p.spec.name)
        );
    }
    Ok(out)
}
