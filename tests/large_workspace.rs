//! A workspace of more than one listing page (250 repositories; Bitbucket Cloud pages
//! hold at most 100): an unchanged re-run lists it with at most ceil(250/100) + 1 API
//! requests, costs one ref listing (one git request) per repository and stores nothing.
//! The repositories are one small bare repository registered 250 times, so the test stays
//! fast; the time of a 1,000-repository workspace is measured in `benches/workspace.rs`.

mod common;

use common::*;
use reposafe_testkit::RepoMeta;

const WS: &str = "wide";
const REPOS: usize = 250;

fn archive_bytes(data: &std::path::Path) -> u64 {
    files_under(&data.join("archive"))
        .iter()
        .filter(|f| !f.starts_with(data.join("archive/tmp")))
        .map(|f| f.metadata().map(|m| m.len()).unwrap_or(0))
        .sum()
}

#[test]
fn unchanged_rerun_of_250_repositories_lists_each_once() {
    let server = CloudServer::start();
    let src = TempDir::new("reposafe-wide-src");
    let opts = gitutil::FixtureOptions {
        repos: 1,
        commits: 1,
        binary_bytes: 512,
        include_empty: false,
        ..gitutil::FixtureOptions::default()
    };
    let bare = gitutil::build_fixture_repos(WS, src.path(), &opts).remove(0);
    for i in 0..REPOS {
        server.add_repo(WS, &format!("r-{i:03}"), &bare.path, RepoMeta::default());
    }
    server.add_api_token("acct-1", EMAIL, API_TOKEN);
    server.grant("acct-1", WS);
    let rs = Reposafe::new();
    let token = rs.secret_file("token", API_TOKEN);
    let token = token.to_string_lossy();
    rs.add_cloud(
        &server,
        WS,
        &["--api-token-email", EMAIL, "--api-token-file", &token],
    )
    .ok();
    rs.run(&["backup", WS, "--parallel", "8"]).ok();

    let before = archive_bytes(rs.data_dir());
    server.clear_log();
    let out = rs.run(&["backup", WS, "--parallel", "8", "--json"]).ok();
    let log = server.request_log();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON report");
    let results = report["repositories"].as_array().expect("results");
    assert_eq!(results.len(), REPOS);
    assert!(
        results
            .iter()
            .all(|r| r["outcome"]["status"] == "unchanged"),
        "{results:?}"
    );

    let api: Vec<&str> = log
        .iter()
        .filter(|r| !r.is_git)
        .map(|r| r.path.as_str())
        .collect();
    let listing: Vec<&&str> = api
        .iter()
        .filter(|p| p.starts_with(&format!("/2.0/repositories/{WS}?")))
        .collect();
    assert!(
        listing.len() <= REPOS.div_ceil(100) + 1,
        "listing requests: {listing:?}"
    );
    // Besides the listing, each repository's metadata: at most one request per kind.
    let archive =
        reposafe::archive::Archive::open(&rs.data_dir().join("archive")).expect("archive");
    let kinds = archive
        .histories()
        .expect("histories")
        .first()
        .and_then(|(id, _)| archive.latest_snapshot_of(id).ok().flatten())
        .and_then(|s| s.metadata)
        .map_or(0, |m| m.kinds.len());
    let mut per_repo: std::collections::BTreeMap<&str, usize> = Default::default();
    for p in api
        .iter()
        .filter(|p| p.starts_with(&format!("/2.0/repositories/{WS}/")))
    {
        let slug = p.split('/').nth(4).unwrap_or("?");
        *per_repo.entry(slug).or_default() += 1;
    }
    assert!(
        per_repo.values().all(|n| *n <= kinds),
        "more than {kinds} metadata requests for a repository: {per_repo:?}"
    );
    let scope_level = api.len() - listing.len() - per_repo.values().sum::<usize>();
    assert!(scope_level <= 4, "API requests: {api:?}");
    let git: Vec<&str> = log
        .iter()
        .filter(|r| r.is_git)
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(git.len(), REPOS, "one git request per repository: {git:?}");
    for i in 0..REPOS {
        let listing = format!("/{WS}/r-{i:03}.git/info/refs?service=git-upload-pack");
        assert_eq!(
            git.iter().filter(|p| **p == listing).count(),
            1,
            "{listing}"
        );
    }
    assert_eq!(archive_bytes(rs.data_dir()), before, "bytes stored");
}
