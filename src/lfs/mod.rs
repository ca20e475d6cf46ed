//! Files the host downloads itself, streamed into the archive while verified: Git LFS
//! objects, and the files metadata documents name (issue attachments, repository
//! downloads).
//!
//! This module owns:
//! - `batch`: the Git LFS batch API client: `POST <lfs-url>/objects/batch` with
//!   `application/vnd.git-lfs+json`, `operation: download`, `transfers: ["basic"]`, at
//!   most [`BATCH_SIZE`] objects a request, sent with the git form of the connection's
//!   credential through the job's `CredentialPool` with the failover of git fetches
//!   (`providers::failover`: a 429 cools the principal down, a 401/403 takes the
//!   credential out while others remain, network failures and 5xx are retried);
//! - `transfer`: one GET of a file, redirects followed by hand: the connection's
//!   credential goes only to the connection's own origins (`HttpGate::is_allowed`), a
//!   redirect to another origin is followed without it (and without the other
//!   credential-bearing headers); the body is streamed into the archive
//!   (`Archive::put_reader`, constant memory) while its size and, for LFS objects, its
//!   SHA-256 are checked: a mismatch stores nothing and is reported;
//! - `upload`: the other way (restore into a provider): `operation: upload` batches,
//!   each object PUT with its content streamed from the archive (checked while read),
//!   then its `verify` action; objects the server has already are left alone;
//! - `fetch`: the objects of a repository in batches, each batch's downloads
//!   [`CONCURRENCY`] at a time (like git-lfs's concurrent transfers), an object whose
//!   download URL expired before its turn asked for again. What one object
//!   lacks (404/410, an `error` in the batch answer, a corrupt download) is reported for
//!   that object and never fails the others.
//!
//! The `href` and `header` of each download action are opaque: sent exactly as given.
//! URLs in messages lose their query (signed URLs carry secrets there). Which objects a
//! snapshot needs, and the index of those it holds, is the engine's
//! (`engine::backup_lfs`).

mod batch;
mod fetch;
mod transfer;
mod upload;

pub use fetch::{fetch_objects, FetchOptions, FetchReport};
pub use transfer::download_file;
pub use upload::{upload_objects, UploadOptions, UploadReport};

use crate::archive::ArchiveError;

/// Objects asked for in one batch request (git-lfs sends at most 100).
pub const BATCH_SIZE: usize = 100;

/// Downloads running at once (git-lfs's default `lfs.concurrenttransfers` is 8).
pub const CONCURRENCY: usize = 8;

/// The media type of batch requests and answers.
pub const MEDIA_TYPE: &str = "application/vnd.git-lfs+json";

/// What stops a whole transfer (per-object problems are reported per object instead).
#[derive(Debug, thiserror::Error)]
pub enum LfsError {
    #[error(
        "LFS server {url} is not one of the connection's hosts; refusing to send the credential there"
    )]
    NotAllowed { url: String },
    #[error("download of {url} failed: {reason}")]
    Download { url: String, reason: String },
    #[error("the job was stopped before every LFS object was transferred")]
    Interrupted,
    #[error(
        "refusing to upload LFS objects to {url}: the connection does not allow writes \
         (only a connection added with --allow-restore does); nothing was sent"
    )]
    WritesRefused { url: String },
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

/// `url` without its query and fragment, for messages (a signed URL's query is a secret).
pub(crate) fn shown(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or(url).to_string()
}

/// At most `max` characters of `text`, for server messages in reports.
pub(crate) fn clipped(text: &str, max: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests;
