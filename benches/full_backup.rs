//! Full-backup benchmark (issue 12): a Bitbucket Cloud workspace of N repositories (default
//! 100) on the test double, each with pull requests × comments (default 40 × 10), issues ×
//! comments (20 × 5), LFS objects (3 × 1 MiB) and a wiki, backed up with `reposafe backup`
//! (the real binary, parallel 4). Measured in one run:
//!
//! 1. First run: API requests ≤ 1.2 × the minimum number of pages the data needs (computed
//!    from the double's model and its page caps: one page per list of up to its cap —
//!    PR list 50, comments/tasks 100, activity 50, issue lists 100 — plus one request per
//!    single-object endpoint and per scope-level list, once per workspace).
//! 2. Unchanged re-run: ≤ 1 API request per metadata kind per repository, 0 bytes stored,
//!    < 15% of the first run's time.
//! 3. One new comment on one pull request: bytes stored ≤ 2 × that pull request's
//!    document (as stored: its canonical JSON).
//!
//! It prints the API requests a run of the workspace costs, per kind, for the budget of
//! ~1,000 requests per hour per account. Sizes: BENCH_FULL_REPOS, BENCH_FULL_PRS,
//! BENCH_FULL_PR_COMMENTS, BENCH_FULL_ISSUES, BENCH_FULL_ISSUE_COMMENTS, BENCH_FULL_LFS
//! (objects per repository), BENCH_FULL_LFS_BYTES. Run: `cargo bench --bench full_backup`.

#[path = "common/mod.rs"]
mod bench_common;
#[path = "../tests/common/mod.rs"]
mod common;

use common::{gitutil, CloudServer, TempDir};
use reposafe::archive::{Archive, MetadataIndex};
use reposafe_testkit::{RepoMeta, RepoMetadata, Spec, WorkRepo};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

const WS: &str = "acme";
use bench_common::{env_usize, reposafe, EMAIL, TOKEN};

struct Sizes {
    repos: usize,
    lfs: usize,
    lfs_bytes: usize,
    spec: Spec,
}

/// The workspace on the double; returns the directory holding its bare repositories.
fn build(server: &CloudServer, sizes: &Sizes) -> TempDir {
    let src = TempDir::new("bench-full-src");
    let mut wiki = WorkRepo::new();
    wiki.write("Home.md", "# Wiki\n");
    wiki.commit("wiki");
    for r in 0..sizes.repos {
        let slug = format!("repo-{r:03}");
        let mut work = WorkRepo::new();
        work.write(
            ".gitattributes",
            "*.bin filter=lfs diff=lfs merge=lfs -text\n",
        );
        work.write("README", format!("{slug}\n"));
        for i in 0..sizes.lfs {
            let content = gitutil::pseudo_random_bytes((r * 100 + i) as u64 + 1, sizes.lfs_bytes);
            work.write(&format!("asset{i}.bin"), common::lfs_pointer(&content));
            server.lfs().add(WS, &slug, &content);
        }
        work.commit("assets");
        let bare = src.path().join(format!("{slug}.git"));
        gitutil::init_bare(&bare);
        work.push_mirror(&bare);
        server.add_repo(WS, &slug, &bare, RepoMeta::default());
        let wiki_bare = src.path().join(format!("{slug}.wiki.git"));
        gitutil::init_bare(&wiki_bare);
        wiki.push_mirror(&wiki_bare);
        server.add_wiki(WS, &slug, &wiki_bare);
        server.populate(WS, &slug, &sizes.spec);
    }
    src
}

fn pages(items: usize, cap: usize) -> usize {
    items.div_ceil(cap).max(1)
}

/// The fewest API requests that read one repository's metadata (see the module doc).
fn minimum_pages(m: &RepoMetadata) -> usize {
    let mut n = pages(m.pull_requests.len(), 50);
    for p in &m.pull_requests {
        n += pages(p.comments.len(), 100) + pages(p.activity.len(), 50) + pages(p.tasks.len(), 100);
    }
    if m.issue_tracker {
        n += pages(m.issues.len(), 100);
        for i in &m.issues {
            n += pages(i.comments.len(), 100)
                + pages(i.changes.len(), 100)
                + pages(i.attachments.len(), 100);
        }
    } else {
        n += 1; // the 404 that says there is no tracker
    }
    // repository, branch-restrictions, branching-model, default-reviewers, deploy-keys,
    // webhooks, pipelines-config, pipeline-variables, pipeline-schedules, environments,
    // downloads: one page each; each environment's variables.
    n + 11 + m.environments.len()
}

struct Run {
    secs: f64,
    report: Value,
}

fn backup(data: &Path) -> Run {
    let t = Instant::now();
    let out = reposafe(data)
        .args(["backup", WS, "--json", "--parallel", "4"])
        .output()
        .expect("backup");
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Run {
        secs,
        report: serde_json::from_slice(&out.stdout).expect("JSON"),
    }
}

fn statuses(report: &Value) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in report["repositories"].as_array().into_iter().flatten() {
        let s = r["outcome"]["status"].as_str().unwrap_or("?").to_string();
        *out.entry(s).or_default() += 1;
    }
    out
}

fn new_bytes(report: &Value) -> u64 {
    report["repositories"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["outcome"]["new_bytes"].as_u64())
        .sum()
}

/// API requests (not git, not LFS) by endpoint kind, and their total.
fn api_requests(server: &CloudServer) -> (BTreeMap<String, usize>, usize) {
    let by: BTreeMap<String, usize> = server
        .requests_by_endpoint()
        .into_iter()
        .filter(|(k, _)| k.starts_with("/2.0/"))
        .collect();
    let total = by.values().sum();
    (by, total)
}

fn line(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

fn main() {
    let sizes = Sizes {
        repos: env_usize("BENCH_FULL_REPOS", 100),
        lfs: env_usize("BENCH_FULL_LFS", 3),
        lfs_bytes: env_usize("BENCH_FULL_LFS_BYTES", 1 << 20),
        spec: Spec {
            pull_requests: env_usize("BENCH_FULL_PRS", 40),
            comments_per_pr: env_usize("BENCH_FULL_PR_COMMENTS", 10),
            tasks_per_pr: 1,
            issues: env_usize("BENCH_FULL_ISSUES", 20),
            comments_per_issue: env_usize("BENCH_FULL_ISSUE_COMMENTS", 5),
            attachments_per_issue: 0,
            file_size: 1024,
            downloads: 1,
            settings: true,
        },
    };
    let server = CloudServer::start();
    server.add_api_token("bench", EMAIL, TOKEN);
    server.grant("bench", WS);
    let t = Instant::now();
    let _src = build(&server, &sizes);
    eprintln!("workspace built in {:.1} s", t.elapsed().as_secs_f64());
    let data = TempDir::new("bench-full-data");
    let files = TempDir::new("bench-full-files");
    bench_common::add_connection(&server, data.path(), WS, files.path());

    let minimum: usize = (0..sizes.repos)
        .map(|r| server.metadata(WS, &format!("repo-{r:03}"), |m| minimum_pages(m)))
        .sum::<usize>()
        + 3; // workspace, projects, one project's default reviewers: once per scope
    let listing = sizes.repos.div_ceil(100) + 1;

    server.clear_log();
    let first = backup(data.path());
    let (first_by, first_api) = api_requests(&server);
    let first_ok = statuses(&first.report).get("snapshot") == Some(&sizes.repos);

    server.clear_log();
    let second = backup(data.path());
    let (second_by, second_api) = api_requests(&server);
    let kinds = {
        let archive = Archive::open(&data.path().join("archive")).expect("archive");
        let snap = archive
            .all_snapshots()
            .expect("snapshots")
            .pop()
            .expect("one");
        snap.metadata.map(|m| m.kinds.len()).unwrap_or(0)
    };
    let per_repo = (second_api.saturating_sub(listing)) as f64 / sizes.repos as f64;

    // One new comment on one pull request.
    let pr = server.metadata(WS, "repo-000", |m| {
        let id = m.pull_requests[0].id;
        m.add_pr_comment(id, "erin", "one more remark on this change");
        id
    });
    let third = backup(data.path());
    let pr_doc = pr_document_bytes(data.path(), &pr.to_string());
    let one_comment = new_bytes(&third.report);

    let ratio_pages = first_api as f64 / (minimum + listing) as f64;
    let time_ratio = second.secs / first.secs;
    let mut out = format!(
        "# full backup: {} repositories, {} PRs x {} comments, {} issues x {} comments, {} LFS x {} KiB, wiki\n\n",
        sizes.repos,
        sizes.spec.pull_requests,
        sizes.spec.comments_per_pr,
        sizes.spec.issues,
        sizes.spec.comments_per_issue,
        sizes.lfs,
        sizes.lfs_bytes / 1024
    );
    out += &format!(
        "first run: {:.1} s, statuses {:?}, {} stored\n\
         API requests {first_api} vs minimum pages {} (= {minimum} metadata + {listing} listing): {ratio_pages:.2}x (target <= 1.2x) {}\n",
        first.secs,
        statuses(&first.report),
        reposafe::fmt::human_bytes(new_bytes(&first.report)),
        minimum + listing,
        line(first_ok && ratio_pages <= 1.2)
    );
    out += &format!(
        "unchanged re-run: {:.2} s = {:.1}% of the first (target < 15%) {}\n\
         API requests {second_api}: {per_repo:.2} per repository for {kinds} kinds (target <= 1 per kind) {}\n\
         bytes stored: {} (target 0) {}\n",
        second.secs,
        time_ratio * 100.0,
        line(time_ratio < 0.15),
        line(per_repo <= kinds as f64),
        new_bytes(&second.report),
        line(new_bytes(&second.report) == 0 && statuses(&second.report).get("unchanged") == Some(&sizes.repos))
    );
    out += &format!(
        "one new comment: {one_comment} bytes stored; the pull request's document is {pr_doc} bytes: {:.2}x (target <= 2x) {}\n",
        one_comment as f64 / pr_doc as f64,
        line(one_comment <= 2 * pr_doc)
    );
    out += &format!(
        "\nAPI budget: a first run costs {first_api} requests, an unchanged run {second_api} ({:.0} per repository);\n\
         at ~1,000 requests per hour per account an unchanged run of this workspace needs {:.1} account-hours.\n",
        second_api as f64 / sizes.repos as f64,
        second_api as f64 / 1000.0
    );
    out += "\nfirst run, requests by endpoint:\n";
    for (k, v) in &first_by {
        out += &format!("  {v:>6}  {k}\n");
    }
    out += "unchanged run, requests by endpoint:\n";
    for (k, v) in &second_by {
        out += &format!("  {v:>6}  {k}\n");
    }
    println!("{out}");
    if out.contains("FAIL") {
        std::process::exit(1);
    }
}

/// The stored size of one pull request's document in the newest snapshot of repo-000.
fn pr_document_bytes(data: &Path, id: &str) -> u64 {
    let archive = Archive::open(&data.join("archive")).expect("archive");
    let snap = archive
        .all_snapshots()
        .expect("snapshots")
        .into_iter()
        .rfind(|s| s.repository.full_name == format!("{WS}/repo-000"))
        .expect("a snapshot of repo-000");
    let kind = &snap.metadata.expect("metadata").kinds["pullrequests"];
    let index: MetadataIndex = archive.read_json(&kind.index).expect("index");
    let item = index.items.iter().find(|i| i.id == id).expect("the PR");
    archive.read_blob(&item.blob).expect("document").len() as u64
}
