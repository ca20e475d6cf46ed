//! Git transfer for reposafe: owns everything that speaks git.
//!
//! * [`fetch_mirror()`] keeps one bare *mirror cache* per repository up to date with its remote
//!   (clone on first use, incremental fetch afterwards, refs mirrored exactly, deleted refs pruned).
//!   Mirrors are only ever fetched into and never repacked or garbage-collected, so each fetch adds
//!   at most one new immutable, self-contained pack file `objects/pack/pack-<hash>.pack` (+ `.idx`).
//! * [`list_packs()`] lists those packs so the archive can store each one exactly once.
//! * [`Consolidation`] writes one pack of what a set of tips reaches (prune), and
//!   [`compact_mirror()`] replaces a mirror's pack chain with it.
//! * [`restore_bare()`] rebuilds a bare repository from archived packs and a ref listing.
//! * [`lfs`] finds the Git LFS pointers among a pack's blobs.
//! * [`push()`] sends a snapshot's packs and refs to a repository over smart HTTP (see
//!   [`advertised_refs()`]).
//!
//! Transfer is done in-process with `gix` (no `git` binary is needed for http(s); `file://` and
//! local paths spawn `git-upload-pack` like every git client does). Authentication is a full
//! `Authorization` header value held in memory only: it is attached to each HTTP request by a
//! request hook and never enters git configuration, the mirror on disk, errors or logs.
//!
//! Callers must not run two operations on the same mirror concurrently.

mod consolidate;
mod delta;
mod error;
mod fetch;
pub mod lfs;
mod pack_index;
mod pack_receive;
mod packed_refs;
mod progress;
mod push;
mod restore;
mod url;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use consolidate::{compact_mirror, strays, ConsolidatedPack, Consolidation};
pub use error::GitError;
pub use fetch::{fetch_mirror, list_packs};
pub(crate) use fetch::{remove_leftovers, sync_file, sync_tree};
pub use lfs::LfsPointer;
pub use push::{advertised_refs, push, PackSource, PushOptions, PushReport, RefUpdate, RemoteRefs};
pub use restore::{check_restore_target, restore_bare, restore_bare_with, AddFiles, Restored};

/// How to authenticate against the remote.
#[derive(Clone, Debug)]
pub enum GitAuth {
    /// Send no credentials.
    None,
    /// The full value of the `Authorization` header, e.g. `Basic xxxx` or `Bearer yyy`.
    ///
    /// It is sent with every HTTP(S) request and is ignored for `file://` URLs and local paths.
    Header(secrecy::SecretString),
    /// Like `Header`, and `before_request` is called just before every HTTP request of
    /// the fetch (a request scheduler paces a principal's requests with it).
    Paced {
        header: secrecy::SecretString,
        before_request: Pacer,
    },
}

/// A hook called before each HTTP request of a fetch.
#[derive(Clone)]
pub struct Pacer(pub std::sync::Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pacer")
    }
}

/// What a reference points to.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum RefTarget {
    /// A direct reference to an object, as lowercase hex object id.
    ///
    /// For annotated tags this is the id of the tag object, not of the commit it points to.
    Object(String),
    /// A symbolic reference to another reference, by its full name, like `refs/heads/main`.
    Symbolic(String),
}

/// One reference of a repository.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct RefEntry {
    /// The full name, like `refs/heads/main`, `refs/tags/v1.0` or `HEAD`.
    pub name: String,
    /// What it points to.
    pub target: RefTarget,
}

/// A pack file in a mirror's `objects/pack` directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackFile {
    /// Absolute (or mirror-relative, as the mirror path was given) path of the `.pack` file.
    pub path: PathBuf,
    /// The pack's hash in hex, as it appears in its file name `pack-<hash>.pack`.
    pub pack_hash: String,
    /// Size of the `.pack` file in bytes.
    pub size: u64,
}

impl PackFile {
    /// The path of the pack's index file (`.idx`) next to it.
    pub fn index_path(&self) -> PathBuf {
        self.path.with_extension("idx")
    }
}

/// The result of [`fetch_mirror()`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchOutcome {
    /// The remote's refs as advertised now: every `refs/*` ref (branches, tags — annotated tags
    /// with the id of the tag object — and any other namespace) plus `HEAD`, usually as
    /// [`RefTarget::Symbolic`]. Sorted by name. Equal to the refs now in the mirror.
    pub refs: Vec<RefEntry>,
    /// Every pack now in the mirror, sorted by `pack_hash`.
    pub packs: Vec<PackFile>,
    /// How many of `packs` this fetch added (0 or 1).
    pub new_packs: usize,
    /// Pack bytes received from the remote by this fetch.
    pub bytes_received: u64,
    /// `true` if this was the first fetch, which created the mirror.
    pub cloned: bool,
    /// Set when the existing mirror was unusable (damaged by a crash or on disk) and was
    /// rebuilt by a fresh clone: why it was unusable.
    pub rebuilt: Option<String>,
}

/// Parameters of [`fetch_mirror()`].
pub struct FetchOptions<'a> {
    /// The remote URL: `https://…`, `http://…`, `file://…` or a local path.
    ///
    /// User name and password in the URL are never written anywhere; if there is a password and
    /// `auth` is [`GitAuth::None`], they are sent as HTTP basic authentication.
    pub url: &'a str,
    /// How to authenticate.
    pub auth: &'a GitAuth,
    /// Called from a helper thread about every 200 ms while pack data arrives, and once at the end,
    /// with the number of pack bytes received so far.
    pub progress: Option<&'a (dyn Fn(u64) + Sync)>,
    /// Set to `true` to abort the fetch as soon as possible ([`GitError::Interrupted`]).
    pub should_interrupt: &'a std::sync::atomic::AtomicBool,
    /// The connection's TLS trust (CA bundle, insecure); `None` for the system roots.
    pub tls: Option<&'a crate::tls::TlsTrust>,
}

impl std::fmt::Debug for FetchOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchOptions")
            .field("url", &url::redact(self.url))
            .field("auth", self.auth)
            .field("progress", &self.progress.is_some())
            .finish_non_exhaustive()
    }
}
