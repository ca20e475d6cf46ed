//! `reposafe-testkit`: test doubles of Bitbucket for reposafe's integration tests and
//! benchmarks. Dev-only; never shipped.
//!
//! * [`cloud::CloudServer`] — an HTTP server that mimics the Bitbucket Cloud REST API
//!   (`/2.0/...`, `/site/oauth2/access_token`) and Bitbucket's git hosting. Git is served by
//!   the real `git http-backend` run as a CGI over real bare repositories, with responses
//!   streamed (see [`cgi`]).
//! * [`dc::DcServer`] — the same for Bitbucket Data Center (`/rest/api/1.0/...`,
//!   `/scm/<key>/<slug>.git`), optionally over TLS with a [`testca::TestCa`] and under a
//!   context path.
//! * [`lfs`] — Git LFS of the Cloud double: the batch API on the main origin, downloads from a
//!   second origin with the action's own header (see [`CloudServer::lfs`]).
//! * [`metadata`] — the metadata of a repository (pull requests, issues, settings, ...) both
//!   doubles serve, with builder methods and a deterministic generator ([`populate`]);
//!   attachments and downloads redirect to a second origin ([`files`]).
//! * [`receive`] — Bitbucket's push refusals as pre-receive hooks, for pushes into the doubles.
//! * [`gitutil`] — helpers that shell out to `git` with an isolated, fixed configuration,
//!   plus [`gitutil::make_workspace_fixture`] that builds many varied repositories quickly.
//! * [`ports`] — ports for the servers tests start as processes (SeaweedFS, SMTP): distinct
//!   within a test process and outside the kernel's ephemeral range.
//! * [`browser`] — headless Chromium over the DevTools protocol, for the dashboard's
//!   browser tests.
//!
//! Tests are plain synchronous `#[test]` functions: the server runs on its own tokio runtime
//! and stops when the [`CloudServer`] is dropped.

pub mod browser;
pub mod cgi;
pub mod cloud;
pub mod dc;
pub mod files;
pub mod gitutil;
pub mod hookpost;
pub mod httputil;
pub mod lfs;
pub mod metadata;
pub mod ports;
pub mod receive;
pub mod tempdir;
pub mod testca;

pub use browser::Browser;
pub use cloud::{CloudServer, LoggedRequest, PrincipalLoad, RepoMeta};
pub use dc::{DcOptions, DcServer};
pub use gitutil::{FixtureOptions, FixtureRepo, WorkRepo};
pub use metadata::{populate, Inline, NewPullRequest, PrState, RepoMetadata, Spec};
pub use tempdir::TempDir;
pub use testca::TestCa;
