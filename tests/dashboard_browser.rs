//! The dashboard in a real browser: headless Chromium (`reposafe_testkit::browser`)
//! against the real `reposafe serve`. Screenshots of each page go to the test
//! artifacts (`$REPOSAFE_ARTIFACTS`, else `<target>/test-artifacts/screenshots/`).

mod common;

use common::*;
use reposafe_testkit::Browser;
use std::path::PathBuf;

const SIGN_IN: &str = "#sign-in";
const SIGN_OUT: &str = "#sign-out";

/// A daemon on a fresh data dir, killed on drop.
struct Daemon {
    child: std::process::Child,
    url: String,
    token: String,
}

impl Daemon {
    fn start(rs: &Reposafe) -> Daemon {
        let child = start_daemon(rs);
        let (url, token) = wait_for_daemon(rs.data_dir());
        Daemon { child, url, token }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Signs in on the sign-in page the daemon shows at `/`.
fn sign_in(b: &mut Browser, d: &Daemon) {
    b.goto(&format!("{}/", d.url));
    b.type_into(r#"form[action="/login"] input[name=token]"#, &d.token);
    b.click_and_wait(SIGN_IN);
}

/// On a fresh daemon the browser is shown the sign-in page, where the page says
/// where the token is; a wrong token is refused with a message; the right one opens
/// the dashboard, which signs out again.
#[test]
fn sign_in_and_out() {
    let rs = Reposafe::new();
    let d = Daemon::start(&rs);
    let mut b = Browser::start("sign-in");

    b.goto(&format!("{}/", d.url));
    assert!(b.exists(r#"form[action="/login"] input[name=token]"#));
    assert!(
        b.text("body").contains("api-token"),
        "the sign-in page says where the token is"
    );
    b.screenshot("sign-in");

    b.type_into(
        r#"form[action="/login"] input[name=token]"#,
        "not-the-token",
    );
    b.click_and_wait(SIGN_IN);
    assert!(b.text("body").contains("wrong token"));
    assert!(b.exists(r#"form[action="/login"] input[name=token]"#));
    b.screenshot("sign-in-wrong-token");

    sign_in(&mut b, &d);
    assert!(b.exists(SIGN_OUT), "signed in: {}", b.text("body"));
    assert!(!b.exists(r#"form[action="/login"]"#));
    assert!(
        !b.text("body").contains(&d.token),
        "the token is not shown on the page"
    );
    b.screenshot("overview");

    b.click_and_wait(SIGN_OUT);
    assert!(b.exists(r#"form[action="/login"] input[name=token]"#));
    b.goto(&format!("{}/", d.url));
    assert!(
        b.exists(r#"form[action="/login"] input[name=token]"#),
        "signed out: the session is gone"
    );
    assert_eq!(b.js_errors(), Vec::<String>::new());
}

const WORKSPACE: &str = "acme";
const EMAIL2: &str = "backup2@acme.test";
const API_TOKEN2: &str = "ATATT3xFfGF0-second-token-9a8b7c";

/// The Cloud double with `n` repositories in `acme` that two accounts (two API
/// tokens) may read.
fn cloud(n: usize) -> (CloudServer, TempDir, Vec<(String, PathBuf)>) {
    let server = CloudServer::start();
    let dir = TempDir::new("reposafe-src");
    let repos = gitutil::make_workspace_fixture(&server, WORKSPACE, n, dir.path());
    server.add_api_token("acct-1", EMAIL, API_TOKEN);
    server.grant("acct-1", WORKSPACE);
    server.add_api_token("acct-2", EMAIL2, API_TOKEN2);
    server.grant("acct-2", WORKSPACE);
    (server, dir, repos)
}

/// A daily window (UTC) that opened an hour ago and closes in two hours.
fn window_around_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let hour = (secs % 86_400) / 3600;
    format!("{:02}:00-{:02}:00", (hour + 23) % 24, (hour + 2) % 24)
}

const CONSUMER_KEY: &str = "consumer-key-b14";
const CONSUMER_SECRET: &str = "oauth-consumer-secret-b14-5c2e";

/// Adds the Cloud connection `acme` with Bitbucket's "Connect" (OAuth 2.0 authorization
/// code) against the double: the consumer registered with the callback URL the form
/// shows; Connect → the double's consent (auto-granted) → `/oauth/callback` → the
/// connection's page. Paced to 3 requests a second per account, so that its backups
/// take a few seconds.
fn connect_with_oauth(b: &mut Browser, server: &CloudServer, d: &Daemon) {
    b.click_and_wait("#nav-connections");
    b.screenshot("02-connections-empty");
    b.click_and_wait("#add-connection");
    let callback = format!("{}/oauth/callback", d.url);
    assert_eq!(b.text("#callback-url"), callback);
    server.add_oauth_consumer_with_callback(
        "acct-oauth",
        CONSUMER_KEY,
        CONSUMER_SECRET,
        &callback,
        3600,
    );
    server.grant("acct-oauth", WORKSPACE);
    b.type_into("#connect-name", WORKSPACE);
    b.type_into("#connect-workspace", WORKSPACE);
    b.type_into("#oauth-key", CONSUMER_KEY);
    b.type_into("#oauth-secret", CONSUMER_SECRET);
    b.click("#server-settings summary");
    let field = |name: &str| format!(r#"form#connect-form [name="{name}"]"#);
    b.type_into(&field("setting:api-base-url"), &server.base_url());
    b.type_into(&field("setting:git-base-url"), &server.base_url());
    b.type_into(&field("rate_limit"), "3/s");
    b.screenshot("03-connect");
    b.click_and_wait("#connect");
    // The callback's page, then (meta refresh) the connection's page.
    b.wait_for(
        "location.pathname === '/connections/acme' && document.readyState === 'complete' \
         && document.querySelector('table#credentials')",
        "the connection's page after Connect",
    );
    assert!(
        b.text("table#credentials").contains("oauth"),
        "the primary credential is the OAuth authorization: {}",
        b.text("table#credentials")
    );
    assert!(
        b.text("#last-check").starts_with("ok"),
        "Connect checked the connection: {}",
        b.text("#last-check")
    );
    assert!(!b.text("body").contains(CONSUMER_SECRET));
}

/// Adds a second account's API token to `acme` and toggles it off and on again;
/// returns its id.
fn add_and_toggle_credential(b: &mut Browser) -> String {
    b.select("#cred-kind", "api-token");
    b.type_into("#cred-identity", EMAIL2);
    b.type_into("#cred-secret", API_TOKEN2);
    b.type_into("#cred-label", "backup2");
    b.click_and_wait("#add-credential-submit");
    let row = r#"table#credentials tr[data-credential]:not([data-credential="primary"])"#;
    let id = b
        .attr(row, "data-credential")
        .unwrap_or_else(|| panic!("no additional credential listed: {}", b_text(b)));
    let cell = format!(r#"table#credentials tr[data-credential="{id}"] .enabled"#);
    let toggle = format!(r#"table#credentials tr[data-credential="{id}"] button.toggle"#);
    assert_eq!(b.text(&cell), "on");
    assert_eq!(b.text(&toggle), "Disable");
    b.click_and_wait(&toggle);
    assert_eq!(b.text(&cell), "off");
    assert_eq!(b.text(&toggle), "Enable");
    b.screenshot("05-credential-disabled");
    b.click_and_wait(&toggle);
    assert_eq!(b.text(&cell), "on");
    b.screenshot("06-connection");
    id
}

fn b_text(b: &mut Browser) -> String {
    b.text("main")
}

/// Creates the plan `nightly` (acme, every additional credential, a window open now,
/// metadata never read) and returns on its page.
fn create_plan(b: &mut Browser) {
    b.click_and_wait("#nav-plans");
    b.screenshot("07-plans");
    b.click_and_wait("#new-plan");
    b.type_into("#plan-name", "nightly");
    b.set_checked(
        r#"form#plan-form input[name=connections][value="acme"]"#,
        true,
    );
    b.type_into("#schedule", "0 2 * * *");
    b.type_into("#timezone", "UTC");
    b.type_into("#window", &window_around_now());
    b.type_into("#metadata-every", "never");
    b.set_checked(
        r#"form#plan-form input[name=additional][value="all"]"#,
        true,
    );
    b.wait_for(
        "document.querySelectorAll('ol#next-runs li').length === 5",
        "the schedule's next 5 runs",
    );
    assert!(
        b.text("#schedule-reading").contains("UTC"),
        "{}",
        b.text("#schedule-reading")
    );
    let runs = b.texts("ol#next-runs li");
    assert!(
        runs.iter()
            .all(|r| r.len() == 20 && r.ends_with(" 02:00 UTC")),
        "the next runs are shown as times in the plan's zone: {runs:?}"
    );
    b.screenshot("08-new-plan");
    b.click_and_wait("#save");
    assert!(b.exists("#run-now"), "the plan's page: {}", b_text(b));
    b.screenshot("09-plan");
}

/// Records every value `#job-progress` shows from now on (in `window.__progressSeen`).
const WATCH_PROGRESS: &str = "(() => { const bar = document.querySelector('#job-progress');
    window.__progressSeen = [[bar.value, bar.max]];
    new MutationObserver(() => window.__progressSeen.push([bar.value, bar.max]))
        .observe(bar, {attributes: true});
    const live = document.querySelector('#job-live');
    const state = live.getAttribute('data-state');
    window.__servedEnded = state !== 'queued' && state !== 'running'
        && !live.getAttribute('data-ended');
    window.__keptMarker = 'no reload'; return true; })()";

/// On a job's page: waits (up to `secs`) until the job ended and the page re-read its
/// results, checking the page was never reloaded meanwhile; returns the final state.
/// A job that ended before its page was served (a restore can take no time at all) is
/// shown ended as served, with nothing to follow (`window.__servedEnded`).
fn watch_job_to_end(b: &mut Browser, secs: u64) -> String {
    assert_eq!(b.eval(WATCH_PROGRESS), serde_json::json!(true));
    b.wait_for_timeout(
        "window.__servedEnded \
         || document.querySelector('#job-live').getAttribute('data-ended') === '1' \
         && document.documentElement.getAttribute('data-refreshed')",
        std::time::Duration::from_secs(secs),
        "the job to end on its page",
    );
    assert_eq!(
        b.eval("window.__keptMarker"),
        serde_json::json!("no reload"),
        "the page was reloaded"
    );
    b.text("#job-state")
}

/// The issue's scenario, in a real browser: sign in on a fresh daemon, add a Cloud
/// connection with OAuth "Connect", add an additional credential and toggle it, create a plan with a window,
/// run it and watch its progress bar reach the end without a reload, find a repository,
/// restore its snapshot to disk through the confirmation page, and check the restored
/// repository with `git fsck --full` and its refs against the source.
#[test]
fn an_admin_backs_up_and_restores_from_the_browser() {
    let (server, _src, repos) = cloud(4);
    let rs = Reposafe::new();
    let out = TempDir::new("reposafe-restored");
    let d = Daemon::start(&rs);
    let mut b = Browser::start("scenario");
    sign_in(&mut b, &d);
    b.screenshot("01-overview");

    connect_with_oauth(&mut b, &server, &d);
    b.screenshot("04-connected");
    add_and_toggle_credential(&mut b);
    create_plan(&mut b);

    b.click_and_wait("#run-now");
    assert!(
        b.url().contains("/jobs/"),
        "Run now leads to the job: {}",
        b.url()
    );
    let first_state = b.text("#job-state");
    let state = watch_job_to_end(&mut b, 90);
    assert_eq!(state, "succeeded", "{}", b_text(&mut b));
    assert!(
        ["queued", "running"].contains(&first_state.as_str()),
        "the job was still going when its page opened ({first_state}): the test watches it move"
    );
    let seen = b.eval("window.__progressSeen");
    let seen = seen.as_array().cloned().unwrap_or_default();
    assert!(seen.len() >= 2, "the progress bar moved live: {seen:?}");
    assert_eq!(seen.last(), Some(&serde_json::json!([4, 4])), "{seen:?}");
    assert_eq!(b.count("table#results tbody tr"), 4, "{}", b_text(&mut b));
    assert_eq!(b.count("table#results tbody tr .snapshot"), 4);
    assert!(!b.exists("#cancel"), "a finished job has no Cancel");
    b.screenshot("10-job-succeeded");

    b.click_and_wait("#nav-jobs");
    assert!(b.exists("table#jobs tr[data-job] progress.job-progress"));
    assert_eq!(b.text("table#jobs tr[data-job] .job-state"), "succeeded");
    b.screenshot("11-jobs");

    // Find one repository, open it, restore its snapshot to disk.
    let (slug, source) = &repos[1];
    b.click_and_wait("#nav-repositories");
    assert_eq!(b.count("table#repositories tbody tr[data-repo]"), 4);
    b.screenshot("12-repositories");
    b.type_into("form#repo-search input[name=q]", slug);
    b.click_and_wait("#search");
    let row = format!(r#"table#repositories tr[data-repo="acme/{WORKSPACE}/{slug}"]"#);
    assert_eq!(b.count("table#repositories tbody tr[data-repo]"), 1);
    b.click_and_wait(&format!("{row} a"));
    assert_eq!(b.count("table#snapshots tr[data-snapshot]"), 1);
    assert!(b.text("table#snapshots").contains("git"));
    b.screenshot("13-repository");

    let to = out.path().join("restored.git");
    b.type_into(
        "form#restore-disk input[name=to]",
        &to.display().to_string(),
    );
    b.click_and_wait("#restore-disk-submit");
    assert!(
        b.text("#confirm-target")
            .contains(&to.display().to_string()),
        "the confirmation names the target: {}",
        b.text("#confirm-target")
    );
    assert!(!to.exists(), "nothing is restored before the confirmation");
    b.screenshot("14-confirm-restore");
    b.click_and_wait("#confirm");
    assert!(b.url().contains("/jobs/"), "{}", b.url());
    let state = watch_job_to_end(&mut b, 60);
    assert_eq!(state, "succeeded", "{}", b_text(&mut b));
    b.screenshot("15-restore-succeeded");

    gitutil::git(&to, &["fsck", "--full"]);
    assert_eq!(gitutil::refs_of(&to), gitutil::refs_of(source));

    b.click_and_wait("#nav-overview");
    b.screenshot("16-overview-after");
    let archive = b.text("#archive-size");
    assert!(
        archive.contains("4 snapshots"),
        "the overview counts the new snapshots at once: {archive}"
    );
    // Where the backups are: the data dir's archive directory.
    let place = b.text("#archive-location");
    let dir = std::path::absolute(rs.data_dir().join("archive")).expect("absolute");
    assert!(place.contains(&dir.display().to_string()), "{place}");

    // Every change made above is in the audit log, with who made it.
    b.click_and_wait("#nav-audit");
    let actions = b.texts("table#audit td.action");
    for action in [
        "session.sign-in",
        "connection.connect",
        "connection.add",
        "credential.add",
        "plan.add",
        "run.submit",
        "restore.start",
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} is in the audit log: {actions:?}"
        );
    }
    let actors = b.texts("table#audit td.actor");
    assert!(
        actors.iter().all(|a| a.starts_with("session")),
        "every change came from the browser's session: {actors:?}"
    );
    b.screenshot("17-audit");

    b.click_and_wait("#nav-settings");
    assert!(b.exists("form#notifications"));
    b.screenshot("18-settings");

    let page = b.text("body");
    for secret in [API_TOKEN2, CONSUMER_SECRET, d.token.as_str()] {
        assert!(!page.contains(secret), "a secret on the overview");
    }
    assert_eq!(b.js_errors(), Vec::<String>::new());
}

const DR: &str = "acme-dr";
const WRITER_EMAIL: &str = "admin@acme.test";
const WRITER: &str = "ATATT3xFfGF0-restore-writer-token-9c41";

/// Adds a Cloud connection through the daemon (the CLI): `name` reads `workspace` with
/// the API token `token` of `email`, with `extra` flags.
fn cli_add_cloud(
    rs: &Reposafe,
    server: &CloudServer,
    naming: &[&str],
    (email, token): (&str, &str),
    extra: &[&str],
) {
    let file = rs.secret_file(&format!("{email}.token"), token);
    let mut cred = vec![
        "--api-token-email",
        email,
        "--api-token-file",
        file.to_str().expect("utf-8 temp path"),
    ];
    cred.extend_from_slice(extra);
    let args = cloud_add_args(server, naming, &cred);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    rs.run(&args).ok();
}

/// From the browser, with connections and a first backup made by the CLI: a running
/// job is cancelled on its page (the confirmation accepted), a restore to a relative
/// path is refused naming the field before anything is queued, and a snapshot is
/// restored into Bitbucket through the confirmation page naming the target connection
/// and repository.
#[test]
fn cancel_a_job_and_restore_into_bitbucket_from_the_browser() {
    let (server, _src, repos) = cloud(3);
    server.add_api_token("admin", WRITER_EMAIL, WRITER);
    server.grant("admin", DR);
    server.add_workspace(DR);
    let rs = Reposafe::new();
    let d = Daemon::start(&rs);
    cli_add_cloud(
        &rs,
        &server,
        &["--workspace", WORKSPACE],
        (EMAIL, API_TOKEN),
        &[],
    );
    let dr = ["--workspace", DR, "--name", "dr"];
    cli_add_cloud(
        &rs,
        &server,
        &dr,
        (WRITER_EMAIL, WRITER),
        &["--allow-restore"],
    );
    rs.run(&["backup", WORKSPACE]).ok();
    // A slow second connection over the same workspace (git only), for a job to cancel.
    let slow = ["--workspace", WORKSPACE, "--name", "slow"];
    cli_add_cloud(
        &rs,
        &server,
        &slow,
        (EMAIL2, API_TOKEN2),
        &["--rate-limit", "1/2s"],
    );
    rs.run(&[
        "plan",
        "add",
        "slow",
        "--connection",
        "slow",
        "--metadata-every",
        "never",
    ])
    .ok();
    // The browser is up and signed in before the job is queued: the job's
    // page opens while it runs, however long Chromium took to start.
    let mut b = Browser::start("cancel-restore-into");
    sign_in(&mut b, &d);
    let queued = rs.run(&["run", "--plan", "slow", "--detach"]).ok();
    let id = queued
        .stdout
        .trim()
        .strip_prefix("queued job ")
        .expect("run --detach names the job")
        .to_string();
    b.goto(&format!("{}/jobs/{id}", d.url));
    assert!(b.exists("#cancel"), "{}", b_text(&mut b));
    // While it runs, the results of the repositories done so far appear, no reload.
    b.eval("window.__keptMarker = 'no reload'");
    b.wait_for_timeout(
        "document.querySelectorAll('table#results tbody tr').length > 0",
        std::time::Duration::from_secs(45),
        "a first result while the job runs",
    );
    assert_eq!(b.attr("#job-live", "data-ended"), None, "still running");
    assert_eq!(
        b.eval("window.__keptMarker"),
        serde_json::json!("no reload")
    );
    b.click_and_wait("#cancel");
    assert!(
        b.dialogs()
            .iter()
            .any(|m| m.contains(&format!("Cancel job {id}?"))),
        "Cancel asks first: {:?}",
        b.dialogs()
    );
    b.wait_for_timeout(
        "document.querySelector('#job-live').getAttribute('data-ended') === '1'",
        std::time::Duration::from_secs(60),
        "the job to stop",
    );
    assert_eq!(b.text("#job-state"), "cancelled", "{}", b_text(&mut b));
    b.screenshot("20-job-cancelled");

    let (slug, source) = &repos[1];
    b.goto(&format!("{}/repositories?q={slug}", d.url));
    b.click_and_wait(&format!(
        r#"table#repositories tr[data-repo="{WORKSPACE}/{WORKSPACE}/{slug}"] a"#
    ));
    let jobs_before = b_jobs(&rs);
    b.type_into("form#restore-disk input[name=to]", "relative/dir");
    b.click_and_wait("#restore-disk-submit");
    assert!(
        b.text("#flash").contains("`to`"),
        "the error names the field: {}",
        b.text("#flash")
    );
    assert!(b.exists("form#restore-disk"), "back on the repository page");
    assert_eq!(b_jobs(&rs), jobs_before, "nothing was queued");

    b.select("form#restore-into select[name=target]", "dr");
    b.type_into(
        "form#restore-into input[name=as]",
        &format!("{DR}/restored-app"),
    );
    b.screenshot("21-restore-into-form");
    b.click_and_wait("#restore-into-submit");
    let target = b.text("#confirm-target");
    assert!(
        target.contains("connection dr") && target.contains(&format!("{DR}/restored-app")),
        "the confirmation names the target: {target}"
    );
    assert!(
        !server.has_repo(DR, "restored-app"),
        "nothing before the confirmation"
    );
    b.screenshot("22-confirm-restore-into");
    b.click_and_wait("#confirm");
    let state = watch_job_to_end(&mut b, 60);
    assert_eq!(state, "succeeded", "{}", b_text(&mut b));
    b.screenshot("23-restore-into-succeeded");
    let created = server.repo_path(DR, "restored-app");
    gitutil::git(&created, &["fsck", "--full"]);
    let heads_and_tags = |p: &std::path::Path| {
        gitutil::refs_of(p)
            .into_iter()
            .filter(|(n, _)| n.starts_with("refs/heads/") || n.starts_with("refs/tags/"))
            .collect::<Vec<_>>()
    };
    assert_eq!(heads_and_tags(&created), heads_and_tags(source));
    assert_eq!(b.js_errors(), Vec::<String>::new());
}

/// The job list as the CLI prints it.
fn b_jobs(rs: &Reposafe) -> String {
    rs.run(&["jobs", "list"]).ok().stdout
}
