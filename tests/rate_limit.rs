//! Rate-limited git must not stall: a backup of 30 small repositories on the Data
//! Center test double with its rate limiter on (a token bucket per user, as Bitbucket
//! DC has; REST and git share it) completes with every repository backed up, waits
//! each 429 out as its `Retry-After` asks — no sooner, and not the 30 s back-off that
//! a 429 without one gets — and says in the job's progress that it waited and that it
//! paces its requests to the rate the 429s showed. The speed target (≤ 1.3 × the time
//! the bucket's refill rate allows) is checked in `benches/rate_limit.rs`.

mod common;

use common::*;
use reposafe_testkit::dc::DcRequest;
use reposafe_testkit::{DcOptions, DcServer};
use std::time::{Duration, Instant};

const PASSWORD: &str = "rate-limited-password-8c1f";
const REPOS: usize = 30;
/// The bucket: 20 tokens, 10 a second (DC's defaults are 60 and 5).
const CAPACITY: u32 = 20;
const PER_SECOND: f64 = 10.0;

/// Requests of the log that arrived in `(from, to)` (exclusive).
fn arrived_between(log: &[DcRequest], from: Instant, to: Instant) -> Vec<&DcRequest> {
    log.iter()
        .filter(|r| r.received > from && r.received < to)
        .collect()
}

#[test]
fn a_rate_limited_backup_waits_each_retry_after_and_backs_everything_up() {
    let server = DcServer::start(DcOptions::default());
    let src = TempDir::new("reposafe-rate-src");
    let bare = small_bare_repo(src.path(), 2);
    for i in 0..REPOS {
        server.add_repo("RL", &format!("repo-{i:02}"), &bare, false);
    }
    server.add_user("alice", PASSWORD);
    server.grant("alice", "RL");
    server.grant_admin("alice", "RL");

    let rs = Reposafe::new();
    let pw = rs.secret_file("pw.txt", PASSWORD);
    let add = dc_add_args(&server.base_url(), "limited", "alice", &pw);
    rs.run(&add.iter().map(String::as_str).collect::<Vec<_>>())
        .ok();

    server.clear_log();
    server.set_rate_limit(CAPACITY, PER_SECOND);
    // The real back-offs (30 s for a 429 without `Retry-After`), not the tests' 20 ms:
    // a 429 whose `Retry-After` is lost then costs far more than the bucket's time.
    let started = Instant::now();
    let out = rs
        .cmd(&["backup", "limited", "--parallel", "8", "--json"])
        .env_remove("REPOSAFE_RETRY_BASE_MS")
        .output()
        .expect("run reposafe");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let all = format!("{stdout}{stderr}");
    assert!(out.status.success(), "{all}");
    assert!(!all.contains(PASSWORD), "the password appeared in output");

    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    let repos = report["repositories"].as_array().expect("repositories");
    assert_eq!(repos.len(), REPOS, "{report}");
    for r in repos {
        assert_eq!(r["outcome"]["status"], "snapshot", "{r}");
    }

    let log = server.request_log();
    let limited: Vec<&DcRequest> = log.iter().filter(|r| r.status == 429).collect();
    // What the bucket allows: every request that took a token beyond its capacity,
    // at its refill rate.
    let tokens = log
        .iter()
        .filter(|r| r.principal.is_some() && r.status != 429)
        .count();
    let allowed =
        Duration::from_secs_f64(tokens.saturating_sub(CAPACITY as usize) as f64 / PER_SECOND);
    // Fetches cut by a 429 between their ref listing and their pack request start
    // over: more listings than repositories. How few is the benchmark's business.
    let listings = log
        .iter()
        .filter(|r| r.is_git && r.status == 200 && r.path.contains("/info/refs"))
        .count();
    eprintln!(
        "backup: {took:?}; {tokens} requests the bucket allows in {allowed:?}; {} 429s; {listings} ref listings",
        limited.len()
    );
    assert!(
        !limited.is_empty(),
        "the bucket never ran dry; the test proves nothing"
    );
    assert!(report["rate_limited"].as_u64() >= Some(1), "{report}");
    // Every 429 waited out: after the server said "Retry-After: N", nothing came for
    // N seconds, but for requests already on their way when it answered.
    let in_flight = Duration::from_millis(150);
    for r in &limited {
        let wait = Duration::from_secs(r.retry_after.expect("429 without Retry-After"));
        let early = arrived_between(&log, r.timestamp + in_flight, r.received + wait);
        assert!(
            early.is_empty(),
            "{} request(s) came before the Retry-After ({wait:?}) of a 429 was over: {early:#?}",
            early.len()
        );
    }
    // Said in the job's progress: the wait, and the pace learned from the 429s.
    // (Git fetches and the metadata's API requests share the bucket: either waits.)
    assert!(
        all.contains("rate limited (git), waiting 1 s")
            || all.contains("rate limited, waiting 1 s"),
        "{all}"
    );
    assert!(
        all.contains("credential primary rate limited: the server lets about"),
        "{all}"
    );
    // Not stalled: within twice the time the bucket allows, and far from the 30 s a
    // single lost `Retry-After` costs.
    assert!(
        took < allowed * 2 + Duration::from_secs(3),
        "the backup took {took:?}; the bucket allows {tokens} requests in {allowed:?} ({} 429s)\n{stderr}",
        limited.len()
    );
}
