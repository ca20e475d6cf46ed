//! Plan rules through the library's job runner against the test Bitbucket
//! server: auto-add off keeps a plan to the repositories of its first run, a
//! scheduled job whose window is closed defers its work to a resume job at the
//! window's next opening, and a cron plan fires by itself when the daemon's
//! clock (`engine::daemon::tick`, given the time) passes its next fire time.

mod common;

use common::*;
use reposafe::engine::{self, Context, Jobs, LocalService, NewConnection, RunnerConfig, Service};
use reposafe::state::{JobKind, JobState, JobTarget, PlanSpec, Trigger};
use reposafe::vault::{Credential, CredentialKind};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WS: &str = "acme";

fn setup(
    n: usize,
) -> (
    CloudServer,
    TempDir,
    Vec<(String, std::path::PathBuf)>,
    TempDir,
    Arc<Jobs>,
) {
    let server = CloudServer::start();
    let src = TempDir::new("reposafe-src");
    let repos = gitutil::make_workspace_fixture(&server, WS, n, src.path());
    server.add_api_token("acct-1", EMAIL, API_TOKEN);
    server.grant("acct-1", WS);
    let data = TempDir::new("reposafe-data");
    let ctx = Context::open(data.path()).expect("data dir");
    let base = server.base_url();
    engine::add_connection(
        &ctx,
        NewConnection {
            name: WS.into(),
            provider: "bitbucket-cloud".into(),
            settings: BTreeMap::from([
                ("workspace".to_string(), WS.to_string()),
                ("api-base-url".to_string(), base.clone()),
                ("git-base-url".to_string(), base),
            ]),
            credential: Credential {
                kind: CredentialKind::ApiToken,
                identity: Some(EMAIL.into()),
                secret: API_TOKEN.to_string().into(),
            },
            read_only: false,
            allow_restore: false,
            rate_limit: None,
            tls: Default::default(),
        },
        true,
    )
    .expect("connection");
    let config = RunnerConfig {
        retry_base: std::time::Duration::from_millis(20),
        ..RunnerConfig::default()
    };
    let jobs = Jobs::new(Arc::new(ctx), config).expect("jobs");
    (server, src, repos, data, jobs)
}

fn spec(name: &str) -> PlanSpec {
    PlanSpec {
        name: name.into(),
        connections: vec![WS.into()],
        include: vec!["*".into()],
        exclude: vec![],
        auto_add: true,
        schedule: None,
        timezone: None,
        window: None,
        concurrency: Some(2),
        read_only: false,
        enabled: true,
        run_missed: true,
        additional_credentials: vec![],
        metadata_every: None,
        retention: None,
        keep_deleted_for: None,
        check_every: None,
        check_subset: None,
        copy_to: None,
    }
}

fn plan_job(name: &str) -> JobKind {
    JobKind::Backup {
        plan: Some(name.into()),
        targets: vec![JobTarget {
            connection: WS.into(),
            only: vec![],
        }],
    }
}

#[test]
fn auto_add_off_skips_repositories_that_appear_later() {
    let (server, src, _repos, _data, jobs) = setup(3);
    let mut s = spec("fixed");
    s.auto_add = false;
    engine::plans::create_plan(jobs.context(), s).expect("plan");
    let first = jobs
        .run_now(plan_job("fixed"), Trigger::Manual, &|_| {})
        .expect("first run");
    assert_eq!(first.state, JobState::Succeeded);
    assert_eq!(first.progress.snapshots, 3);

    // A new repository appears in the workspace.
    let newcomer = src.path().join("newcomer.git");
    gitutil::init_bare(&newcomer);
    let mut w = gitutil::WorkRepo::new();
    w.write("a.txt", "new repository\n");
    w.commit("first");
    w.git(&[
        "push",
        "--quiet",
        &newcomer.display().to_string(),
        "HEAD:refs/heads/main",
    ]);
    server.add_repo(WS, "newcomer", &newcomer, Default::default());

    let second = jobs
        .run_now(plan_job("fixed"), Trigger::Manual, &|_| {})
        .expect("second run");
    assert_eq!(second.state, JobState::Succeeded, "{second:?}");
    assert_eq!(second.progress.unchanged, 3);
    assert_eq!(second.progress.skipped, 1);
    let results = LocalService::over(jobs.clone(), false)
        .job_results(second.id)
        .expect("results");
    let skipped = results
        .iter()
        .find(|r| r.repository == "acme/newcomer")
        .expect("newcomer reported");
    assert_eq!(skipped.status, "skipped");
    assert!(
        skipped.reason.as_deref().unwrap_or("").contains("auto-add"),
        "{skipped:?}"
    );

    // With auto-add on, the same plan takes it.
    let mut s = spec("fixed");
    s.auto_add = true;
    engine::plans::replace_plan(jobs.context(), "fixed", s).expect("replace");
    let third = jobs
        .run_now(plan_job("fixed"), Trigger::Manual, &|_| {})
        .expect("third run");
    assert_eq!(third.progress.snapshots, 1, "{third:?}");
}

#[test]
fn a_closed_window_defers_scheduled_work_to_the_next_opening() {
    let (_server, _src, repos, _data, jobs) = setup(2);
    // A one-minute window twelve hours from now (UTC): closed at run time.
    let now = time::OffsetDateTime::now_utc();
    let open = now + time::Duration::hours(12);
    let close = open + time::Duration::minutes(1);
    let mut s = spec("windowed");
    s.schedule = Some("@daily".into());
    s.timezone = Some("UTC".into());
    s.window = Some(format!(
        "{:02}:{:02}-{:02}:{:02}",
        open.hour(),
        open.minute(),
        close.hour(),
        close.minute()
    ));
    engine::plans::create_plan(jobs.context(), s).expect("plan");
    let job = jobs
        .run_now(plan_job("windowed"), Trigger::Schedule, &|_| {})
        .expect("run");
    assert_eq!(job.state, JobState::Partial, "{job:?}");
    assert_eq!(job.progress.deferred, repos.len() as u64);
    assert_eq!(job.progress.snapshots, 0);
    assert_eq!(job.deferred.len(), 1);
    assert_eq!(job.deferred[0].only.len(), repos.len());
    let resume = jobs
        .list(10)
        .expect("jobs")
        .into_iter()
        .find(|j| j.trigger == Trigger::Resume)
        .expect("a resume job is queued");
    assert_eq!(resume.state, JobState::Queued);
    let nb = resume.not_before.expect("waits for the window");
    assert!(
        nb > now + time::Duration::hours(11) && nb <= now + time::Duration::hours(12),
        "{nb}"
    );
    match resume.kind {
        JobKind::Backup { targets, .. } => assert_eq!(targets[0].only.len(), repos.len()),
        other => panic!("{other:?}"),
    }
}

/// Waits for a job queued on the runner's workers to finish.
fn wait_finished(jobs: &Jobs, id: u64, limit: Duration) -> reposafe::state::Job {
    let deadline = Instant::now() + limit;
    loop {
        let job = jobs.get(id).expect("job");
        if job.state.is_finished() {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} did not finish: {job:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What `serve` does every second, with the clock given instead of read: the
/// daemon's wiring (`serve` calls `tick` with the real clock) is covered by the
/// ignored real-minute test `a_cron_plan_runs_on_its_own` in tests/daemon.rs.
#[test]
fn a_cron_plan_fires_by_itself_when_its_time_comes_and_its_job_backs_up() {
    let (_server, _src, repos, _data, jobs) = setup(2);
    jobs.start();
    let mut s = spec("minutely");
    s.schedule = Some("* * * * *".into());
    s.timezone = Some("UTC".into());
    engine::plans::create_plan(jobs.context(), s).expect("plan");
    let service = LocalService::over(jobs.clone(), true);
    let created = service.plan("minutely").expect("plan").status.created_at;
    // Not yet due: the first fire is the minute after the plan's creation.
    let before = engine::daemon::tick(&jobs, created).expect("tick");
    assert!(before.is_empty(), "fired before its time: {before:?}");

    // The clock passes the next minute: one job, queued by the schedule itself.
    let now = created + time::Duration::seconds(61);
    let fired = engine::daemon::tick(&jobs, now).expect("tick");
    assert_eq!(fired.len(), 1, "{fired:?}");
    let done = wait_finished(&jobs, fired[0], Duration::from_secs(120));
    assert_eq!(done.trigger, Trigger::Schedule);
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    assert_eq!(done.progress.snapshots, repos.len() as u64);
    let plan = service.plan("minutely").expect("plan");
    assert!(plan.status.last_success.is_some(), "{plan:?}");
    assert!(
        engine::daemon::tick(&jobs, now).expect("tick").is_empty(),
        "the same minute fires once"
    );
    jobs.shutdown(Duration::from_secs(10));
}

#[test]
fn transient_git_failures_are_retried_and_one_failure_never_fails_the_others() {
    let (server, _src, repos, _data, jobs) = setup(3);
    let conn = || JobKind::Backup {
        plan: None,
        targets: vec![JobTarget {
            connection: WS.into(),
            only: vec![],
        }],
    };
    // Two 503s: the repositories that get them are fetched again.
    server.fail_next_git_with_503(2);
    let job = jobs.run_now(conn(), Trigger::Manual, &|_| {}).expect("run");
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    assert_eq!(job.progress.snapshots, repos.len() as u64);
    let results = LocalService::over(jobs.clone(), false)
        .job_results(job.id)
        .expect("results");
    let attempts: u32 = results.iter().map(|r| r.attempts).sum();
    assert_eq!(attempts, repos.len() as u32 + 2, "{results:?}");

    // A repository that disappears between listing and fetch fails alone, once.
    let gone = format!("{WS}/{}", repos[1].0);
    std::fs::rename(&repos[1].1, repos[1].1.with_extension("moved")).expect("move");
    let job = jobs.run_now(conn(), Trigger::Manual, &|_| {}).expect("run");
    assert_eq!(job.state, JobState::Partial, "{job:?}");
    assert_eq!(job.progress.failed, 1);
    assert_eq!(job.progress.unchanged, repos.len() as u64 - 1);
    let results = LocalService::over(jobs.clone(), false)
        .job_results(job.id)
        .expect("results");
    let failed = results
        .iter()
        .find(|r| r.repository == gone)
        .expect("result");
    assert_eq!(failed.status, "failed");
    assert_eq!(
        failed.attempts, 1,
        "a permanent error is not retried: {failed:?}"
    );
}
