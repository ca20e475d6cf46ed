//! The error type of the `git` module, and the translation of gix errors into it.
//!
//! Every message names the repository URL (always without credentials) or the local path
//! involved, and says what to do where that is clear. No message ever contains a secret: the
//! authentication header never reaches gix, and URLs are redacted before they are stored here.

use std::path::PathBuf;

/// Everything that can go wrong in the `git` module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GitError {
    /// The remote answered 401: no credential, or the credential was rejected.
    #[error(
        "authentication failed for {url}: the server answered 401 Unauthorized; \
         check the credential (token or app password) configured for this repository"
    )]
    Unauthorized {
        /// The remote URL, without credentials.
        url: String,
    },
    /// The remote answered 403: the credential is valid but may not read this repository.
    #[error(
        "access denied to {url}: the server answered 403 Forbidden; \
         the credential needs read access to this repository"
    )]
    Forbidden {
        /// The remote URL, without credentials.
        url: String,
    },
    /// The remote repository does not exist (HTTP 404, or no repository at the local path).
    #[error(
        "repository not found at {url}: check the URL, and that the credential can see the repository"
    )]
    NotFound {
        /// The remote URL, without credentials.
        url: String,
    },
    /// The server's TLS certificate is not trusted (`message` names the connection's trust).
    #[error("git transfer from {url} failed: {message}")]
    Certificate {
        /// The remote URL, without credentials.
        url: String,
        /// What failed and how to fix it.
        message: String,
    },
    /// The remote answered 429 Too Many Requests.
    #[error("rate limited by {url}: the server answered 429 Too Many Requests")]
    RateLimited {
        /// The remote URL, without credentials.
        url: String,
        /// The answer's `Retry-After` as the server sent it (delta-seconds or an
        /// HTTP-date), when it sent one.
        retry_after: Option<String>,
    },
    /// The remote answered 403 to git-receive-pack: the credential may read but not push.
    #[error(
        "the credential may not push to {url}: the server answered 403 Forbidden to \
         git-receive-pack; give it write access to the repository (Bitbucket Cloud: the \
         repository:write scope or permission; Data Center: repository write permission)"
    )]
    PushForbidden {
        /// The remote URL, without credentials.
        url: String,
    },
    /// The server refused the whole push: it could not store the pack, or sent a fatal error.
    #[error("push to {url} failed: {message}")]
    PushRejected {
        /// The remote URL, without credentials.
        url: String,
        /// What the server said (its `remote:` lines quoted).
        message: String,
    },
    /// The push was interrupted through `should_interrupt`; the server updated no ref.
    #[error("push to {url} was interrupted; no ref was updated")]
    PushInterrupted {
        /// The remote URL, without credentials.
        url: String,
    },
    /// Any other failure talking to the remote or processing what it sent.
    #[error("git transfer from {url} failed: {message}")]
    Transport {
        /// The remote URL, without credentials.
        url: String,
        /// What went wrong, as reported by the transport.
        message: String,
    },
    /// The fetch was interrupted through `should_interrupt`. The mirror is left consistent.
    #[error("fetch from {url} was interrupted")]
    Interrupted {
        /// The remote URL, without credentials.
        url: String,
    },
    /// The authentication header value can't be sent (empty, or characters not allowed in HTTP headers).
    #[error(
        "the Authorization header value configured for {url} is empty or contains characters \
         that are not allowed in HTTP headers"
    )]
    InvalidAuth {
        /// The remote URL, without credentials.
        url: String,
    },
    /// The URL is malformed or uses an unsupported scheme.
    #[error("invalid repository URL {url}: {message}")]
    InvalidUrl {
        /// The URL as given, without credentials.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// The mirror path exists but is not a usable bare repository.
    #[error(
        "{path} is not a usable mirror (bare git repository): {message}; \
         move or delete it so that the next fetch re-creates it"
    )]
    InvalidMirror {
        /// The mirror directory.
        path: PathBuf,
        /// Why it can't be used.
        message: String,
    },
    /// Reading or writing the local repository failed.
    #[error("local repository at {path}: {message}")]
    Repository {
        /// The repository directory.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A file system operation failed.
    #[error("could not {action} {path}: {source}")]
    Io {
        /// What was attempted, like "create directory".
        action: &'static str,
        /// The path it was attempted on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// [`restore_bare()`](super::restore_bare) was asked to write into a non-empty directory.
    #[error(
        "restore target {path} exists and is not empty; restore into an absent or empty directory, \
         or allow replacing it (only a git repository is replaced, and it is moved aside to \
         <target>.replaced-<time>, never deleted)"
    )]
    TargetNotEmpty {
        /// The target directory.
        path: PathBuf,
    },
    /// [`restore_bare()`](super::restore_bare) was asked to write over something that is not a
    /// git repository: a non-empty directory, a file or a symbolic link. It is never replaced.
    #[error(
        "restore target {path} exists, is not empty and is not a git repository; it is never \
         replaced, even when overwriting is allowed: restore somewhere else, or move it away \
         yourself"
    )]
    TargetNotRepository {
        /// The target path.
        path: PathBuf,
    },
    /// A pack given to [`restore_bare()`](super::restore_bare) could not be read or is corrupt.
    #[error(
        "pack #{index} (counting from 0) given to the restore is unreadable or corrupt: {message}"
    )]
    InvalidPack {
        /// Position of the pack in the input.
        index: usize,
        /// What is wrong with it.
        message: String,
    },
    /// A reference name or target is not valid.
    #[error("invalid reference {name:?}: {message}")]
    InvalidRef {
        /// The reference name as given.
        name: String,
        /// What is wrong with it.
        message: String,
    },
    /// A reference points to an object that is not in the repository.
    #[error(
        "reference {name} points to object {oid}, which is missing from {path}; \
         the packs are incomplete for this ref listing"
    )]
    MissingObject {
        /// The reference name.
        name: String,
        /// The missing object id (hex).
        oid: String,
        /// The repository that lacks it.
        path: PathBuf,
    },
}

impl GitError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        GitError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn repo(path: impl Into<PathBuf>, err: impl std::fmt::Display) -> Self {
        GitError::Repository {
            path: path.into(),
            message: err.to_string(),
        }
    }

    /// `true` for errors that may go away when retried later without changing anything,
    /// like network failures.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            GitError::Transport { .. } | GitError::RateLimited { .. }
        )
    }
}

/// Render `err` with all its causes on one line: `outer: cause: root cause`.
pub(crate) fn chain(err: &gix::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in err.iter_errors() {
        let text = e.to_string();
        if text.is_empty()
            || parts
                .last()
                .is_some_and(|last| last == &text || last.ends_with(&text))
        {
            continue;
        }
        parts.push(text);
    }
    if parts.is_empty() {
        parts.push(err.to_string());
    }
    parts.join(": ")
}
