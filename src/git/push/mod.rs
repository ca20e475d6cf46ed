//! Pushing a snapshot into a repository: send-pack over smart HTTP (protocol v0/v1
//! `git-receive-pack`), in-process, without a `git` binary.
//!
//! [`advertised_refs()`] reads the receive-pack ref advertisement (`GET
//! <url>/info/refs?service=git-receive-pack`); [`push()`] sends the ref commands and one pack
//! in one streamed `POST <url>/git-receive-pack` and reads the server's `report-status`,
//! through `side-band-64k` when offered (band 2: progress and `remote:` lines, band 3: a
//! fatal error). Requests go through the same HTTP client settings as fetch (the connection's
//! TLS trust, no redirects, the `Authorization` header held in memory only, the pacer before
//! each request, `Retry-After` kept for a 429).
//!
//! The pack is built from the snapshot's packs as they are (see [`pack`]): one pack is streamed
//! byte for byte; several are indexed (bounded memory, `pack_index`) and merged into one
//! stream that carries each object once. Nothing is ever held whole in memory.
//!
//! A ref the server refuses is reported per ref with a message that names it and says what to
//! do ([`report`]); a whole-push failure (401/403, an unpack error, a fatal server message, a
//! transport failure) is a [`GitError`].

mod http;
mod pack;
mod report;

#[cfg(test)]
mod tests;

use std::{
    io::Read,
    sync::atomic::{AtomicBool, Ordering},
};

use super::{url, GitAuth, GitError};

pub use http::advertised_refs;

/// The zero object id: the old value of a ref that does not exist.
const ZERO_ID: &str = "0000000000000000000000000000000000000000";

/// Where and how to push.
pub struct PushOptions<'a> {
    /// The repository's HTTPS clone URL (as for fetch; user name and password in it are used
    /// as basic authentication when `auth` is [`GitAuth::None`], never shown).
    pub url: &'a str,
    /// How to authenticate (as for fetch).
    pub auth: &'a GitAuth,
    /// The connection's TLS trust; `None` for the system roots.
    pub tls: Option<&'a crate::tls::TlsTrust>,
    /// Called about every 200 ms while the pack is sent, and once at the end, with the pack
    /// bytes sent so far.
    pub progress: Option<&'a (dyn Fn(u64) + Sync)>,
    /// Set to `true` to abort as soon as possible ([`GitError::PushInterrupted`]).
    pub should_interrupt: &'a AtomicBool,
}

impl std::fmt::Debug for PushOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushOptions")
            .field("url", &url::redact(self.url))
            .field("auth", self.auth)
            .field("progress", &self.progress.is_some())
            .finish_non_exhaustive()
    }
}

/// The receive-pack ref advertisement.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteRefs {
    /// `(full ref name, object id hex)`, sorted by name; without the `capabilities^{}` line of
    /// an empty repository and without `.have` lines.
    pub refs: Vec<(String, String)>,
    /// The server's capabilities: `report-status`, `side-band-64k`, `atomic`, `ofs-delta`, …
    pub capabilities: Vec<String>,
}

impl RemoteRefs {
    fn has(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }
}

/// One ref to create or update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefUpdate {
    /// The full ref name, like `refs/heads/main`.
    pub name: String,
    /// The value the server has now (hex); `None` creates the ref.
    pub old: Option<String>,
    /// The new value (hex); the object must be in the packs or on the server.
    pub new: String,
}

/// Where the snapshot's packs come from: each a complete `.pack` as archived. A pack may be
/// opened more than once.
pub trait PackSource {
    /// How many packs there are.
    fn count(&self) -> usize;
    /// The size in bytes of pack `index`.
    fn size(&self, index: usize) -> u64;
    /// A reader of pack `index` from its first byte.
    fn open(&self, index: usize) -> std::io::Result<Box<dyn Read + Send>>;
}

/// What a push did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Per command, in the order given: `Ok`, or why the server refused it (a message naming
    /// the ref and saying what to do).
    pub refs: Vec<(String, Result<(), String>)>,
    /// Bytes of pack data sent.
    pub pack_bytes: u64,
    /// Objects in the pack sent.
    pub objects: u64,
}

/// Sends `updates` and one pack holding the objects of `packs` (each object once) to the
/// repository at `opts.url`, whose advertisement is `remote`.
///
/// Memory does not grow with the packs: the pack is streamed as the request body. Uses
/// `atomic` when offered (all refs or none), `report-status` and `side-band-64k`. A refused
/// ref is in the report (not an `Err`); transport failures, 401/403, an unpack error and a
/// fatal server message are `Err`. An empty `updates` sends nothing.
pub fn push(
    opts: &PushOptions,
    remote: &RemoteRefs,
    updates: &[RefUpdate],
    packs: &dyn PackSource,
) -> Result<PushReport, GitError> {
    if updates.is_empty() {
        return Ok(PushReport::default());
    }
    let session = http::Session::new(opts)?;
    for update in updates {
        check_update(update, &session.remote.display)?;
    }
    if opts.should_interrupt.load(Ordering::Relaxed) {
        return Err(session.interrupted());
    }
    // A credential that may not push is refused before any pack is read.
    session.probe()?;
    let scratch = tempfile::Builder::new()
        .prefix("reposafe-push-")
        .tempdir()
        .map_err(|err| {
            GitError::io("create a temporary directory in", std::env::temp_dir(), err)
        })?;
    let plan = pack::Plan::new(
        packs,
        remote.has("ofs-delta"),
        scratch.path(),
        opts.should_interrupt,
    )
    .map_err(|err| session.pack_failure(err))?;
    let (commands, sideband) = commands(remote, updates);
    tracing::info!(
        target: "reposafe::git",
        url = %session.remote.display,
        refs = updates.len(),
        objects = plan.objects(),
        pack_bytes = plan.len(),
        "pushing"
    );
    let answer = session.send_pack(commands, &plan, opts)?;
    let outcome = report::read(answer, sideband, &session.remote.display)?;
    let refs = report::per_ref(updates, &outcome, remote.has("report-status"));
    Ok(PushReport {
        refs,
        pack_bytes: plan.len(),
        objects: plan.objects(),
    })
}

/// Refuses an update that cannot be sent (bad name or object id).
fn check_update(update: &RefUpdate, url: &str) -> Result<(), GitError> {
    let invalid = |message: String| GitError::InvalidRef {
        name: update.name.clone(),
        message: format!("{message} (pushing to {url})"),
    };
    if !update.name.starts_with("refs/")
        || gix::refs::FullName::try_from(update.name.as_str()).is_err()
    {
        return Err(invalid("not a valid full reference name".into()));
    }
    for id in std::iter::once(&update.new).chain(update.old.as_ref()) {
        if id.len() != ZERO_ID.len() || gix::ObjectId::from_hex(id.as_bytes()).is_err() {
            return Err(invalid(format!("{id:?} is not a hex object id")));
        }
    }
    Ok(())
}

/// The command list (pkt-lines and a flush) and whether side-band-64k was asked for.
fn commands(remote: &RemoteRefs, updates: &[RefUpdate]) -> (Vec<u8>, bool) {
    let mut caps: Vec<String> = ["report-status", "side-band-64k", "atomic", "quiet"]
        .into_iter()
        .filter(|c| remote.has(c))
        .map(str::to_owned)
        .collect();
    caps.push(format!("agent=reposafe/{}", env!("CARGO_PKG_VERSION")));
    let sideband = remote.has("side-band-64k");
    let mut out = Vec::new();
    for (i, update) in updates.iter().enumerate() {
        let old = update.old.as_deref().unwrap_or(ZERO_ID);
        let mut line = format!("{old} {} {}", update.new, update.name);
        if i == 0 {
            line.push('\0');
            line.push_str(&caps.join(" "));
        }
        line.push('\n');
        report::write_pkt(&mut out, line.as_bytes());
    }
    out.extend_from_slice(b"0000");
    (out, sideband)
}
