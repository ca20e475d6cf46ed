//! What a Bitbucket Data Center repository holds besides git (world 0.3.0): its
//! LFS server (when LFS is enabled on it; DC has no wikis) and its metadata
//! kinds, listed as pages of JSON documents, and the project-level kinds
//! (`project`, `project-default-reviewers`, `project-access-keys`).
//!
//! Paging uses `start`/`limit` and continues only from `nextPageStart`; the
//! cursor is the `start` of the next call. Pull requests are incremental as far
//! as DC allows: its list cannot be sorted by update time, so every page of the
//! list (`state=ALL`, `LIST_LIMIT` pull requests a request) is read, but only
//! pull requests updated after `since` (epoch-millisecond `updatedDate`,
//! compared as RFC 3339) have their activities fetched: an unchanged repository
//! with at most `LIST_LIMIT` pull requests costs one request. A call fetches
//! the activities of at most `CHANGED_PER_CALL` pull requests (the cursor then
//! points at the next unread one), and fewer once it has spent half the host's
//! per-call limits. Webhook secrets are never included.

use serde_json::{json, Value};

use crate::api::{self, Next};
use crate::documents::{document, empty, get_json, without_secrets};
use crate::reposafe::provider::types::{
    Connection, DocumentPage, MetadataKind, ProviderError, Repository, RepositoryParts,
};
use crate::{budget, time};

/// Pull requests per list request, and entries per page of other lists.
const LIST_LIMIT: u64 = 100;
/// Pull requests whose activities one call fetches.
const CHANGED_PER_CALL: usize = 20;
/// Safety net against pages that never end, per sub-list.
const MAX_SUB_PAGES: usize = 1000;

/// How one kind is read; paths are below the API's `{key}`/`{slug}` prefix.
#[derive(Clone, Copy)]
enum Source {
    /// One object at `/rest/api/1.0/projects/{key}/repos/{slug}{path}`.
    Single(&'static str),
    /// Another REST root (`/rest/<root>/projects/{key}/repos/{slug}<path>`), one object.
    SingleAt(&'static str, &'static str),
    /// A paged list (or a plain JSON array) under a REST root; id at the
    /// pointers; the permission it needs beyond reading, if any.
    ListAt(
        &'static str,
        &'static str,
        &'static [&'static str],
        Option<&'static str>,
    ),
    PullRequests,
}

const API: &str = "api/1.0";
/// What webhooks, branch permissions and access keys need.
const ADMIN: Option<&str> = Some("REPO_ADMIN");

/// The repository kinds.
const KINDS: &[(&str, Source)] = &[
    ("pullrequests", Source::PullRequests),
    ("repository", Source::Single("")),
    (
        "pull-request-settings",
        Source::Single("/settings/pull-requests"),
    ),
    (
        "branch-permissions",
        Source::ListAt("branch-permissions/2.0", "/restrictions", &["/id"], ADMIN),
    ),
    (
        "default-reviewers",
        Source::ListAt("default-reviewers/1.0", "/conditions", &["/id"], None),
    ),
    (
        "branching-model",
        Source::SingleAt("branch-utils/1.0", "/branchmodel/configuration"),
    ),
    (
        "webhooks",
        Source::ListAt(API, "/webhooks", &["/id"], ADMIN),
    ),
    (
        "access-keys",
        Source::ListAt("keys/1.0", "/ssh", &["/key/id"], ADMIN),
    ),
];

/// The project kinds: (name, REST root, path below `projects/{key}`, id pointers; none: one object).
const SCOPE_KINDS: &[(&str, &str, &str, Option<&[&str]>)] = &[
    ("project", API, "", None),
    (
        "project-default-reviewers",
        "default-reviewers/1.0",
        "/conditions",
        Some(&["/id"]),
    ),
    (
        "project-access-keys",
        "keys/1.0",
        "/ssh",
        Some(&["/key/id"]),
    ),
];

/// `{base}/rest/{root}/projects/{key}`.
fn project_url(conn: &Connection, root: &str, key: &str) -> Result<String, ProviderError> {
    let base = crate::base_url(conn)?;
    Ok(format!(
        "{base}/rest/{root}/projects/{}",
        crate::encode_path_segment(key)
    ))
}

/// `{base}/rest/{root}/projects/{key}/repos/{slug}`.
fn repo_url(conn: &Connection, root: &str, repo: &Repository) -> Result<String, ProviderError> {
    Ok(format!(
        "{}/repos/{}",
        project_url(conn, root, &repo.scope)?,
        crate::encode_path_segment(&repo.slug)
    ))
}

/// The LFS server when LFS is enabled on the repository, and every kind.
pub fn describe(conn: &Connection, repo: &Repository) -> Result<RepositoryParts, ProviderError> {
    let enabled_url = format!("{}/enabled", repo_url(conn, "git-lfs/admin", repo)?);
    let lfs = match crate::get_meta(&enabled_url) {
        Ok(Some(_)) => true,
        Ok(None) => false,
        // Cannot tell (e.g. 403): the host finds out from the batch endpoint,
        // which it only asks when the packs hold LFS pointers.
        Err(e) => {
            crate::log(
                crate::Level::Warn,
                &format!(
                    "cannot tell whether LFS is enabled on {}: {e:?}",
                    repo.full_name
                ),
            );
            true
        }
    };
    Ok(RepositoryParts {
        git: Vec::new(),
        lfs_url: lfs.then(|| format!("{}/info/lfs", repo.clone_url.trim_end_matches('/'))),
        metadata: KINDS
            .iter()
            .map(|(name, source)| MetadataKind {
                name: (*name).to_string(),
                incremental: matches!(source, Source::PullRequests),
            })
            .collect(),
    })
}

/// The project kinds.
pub fn describe_scope() -> Vec<MetadataKind> {
    SCOPE_KINDS
        .iter()
        .map(|(name, ..)| MetadataKind {
            name: (*name).to_string(),
            incremental: false,
        })
        .collect()
}

/// The `start` a cursor names (0 without one).
fn start_of(cursor: Option<&str>) -> Result<u64, ProviderError> {
    cursor.map_or(Ok(0), |c| {
        c.parse::<u64>().map_err(|_| {
            ProviderError::InvalidSettings(format!("page cursor `{c}` is not a start number"))
        })
    })
}

/// One page of the documents of `kind` of `repo`.
pub fn list(
    conn: &Connection,
    repo: &Repository,
    kind: &str,
    since: Option<&str>,
    cursor: Option<&str>,
) -> Result<DocumentPage, ProviderError> {
    let source = KINDS
        .iter()
        .find(|(n, _)| *n == kind)
        .map(|(_, s)| *s)
        .ok_or_else(|| {
            crate::documents::unknown_kind(
                "Bitbucket Data Center",
                kind,
                KINDS.iter().map(|(n, _)| *n),
            )
        })?;
    let start = start_of(cursor)?;
    match source {
        Source::Single(path) => single(kind, &format!("{}{path}", repo_url(conn, API, repo)?)),
        Source::SingleAt(root, path) => {
            single(kind, &format!("{}{path}", repo_url(conn, root, repo)?))
        }
        Source::ListAt(root, path, ids, needs) => {
            let url = format!("{}{path}", repo_url(conn, root, repo)?);
            plain_list(kind, &url, ids, start).map_err(|e| match (e, needs) {
                (ProviderError::Forbidden(m), Some(needs)) => {
                    ProviderError::Forbidden(format!("needs {needs} ({m})"))
                }
                (e, _) => e,
            })
        }
        Source::PullRequests => pull_requests(&repo_url(conn, API, repo)?, since, start),
    }
}

/// One page of the documents of a project kind.
pub fn list_scope(
    conn: &Connection,
    scope: &str,
    kind: &str,
    cursor: Option<&str>,
) -> Result<DocumentPage, ProviderError> {
    let (_, root, path, ids) = SCOPE_KINDS
        .iter()
        .find(|(n, ..)| *n == kind)
        .ok_or_else(|| {
            crate::documents::unknown_kind(
                "Bitbucket Data Center",
                kind,
                SCOPE_KINDS.iter().map(|(n, ..)| *n),
            )
        })?;
    let url = format!("{}{path}", project_url(conn, root, scope)?);
    match ids {
        None => single(kind, &url),
        Some(ids) => plain_list(kind, &url, ids, start_of(cursor)?),
    }
}

/// A page's values and the `start` of the next page, if any.
type ValuesAndNext = (Vec<Value>, Option<u64>);

/// `url?start=..&limit=..` (or `&start=` when `url` has a query).
fn paged(url: &str, start: u64, limit: u64) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}start={start}&limit={limit}")
}

/// One page at `start`: its values and the next start. A plain JSON array (as
/// the default-reviewers conditions are) is one complete page. `None` on 404.
fn get_page(url: &str, start: u64, limit: u64) -> Result<Option<ValuesAndNext>, ProviderError> {
    let page_url = paged(url, start, limit);
    let Some(value) = get_json(&page_url)? else {
        return Ok(None);
    };
    if let Value::Array(values) = value {
        return Ok(Some((values, None)));
    }
    let what = format!("GET {page_url}");
    let page: api::Page = serde_json::from_value(value).map_err(|e| {
        ProviderError::InvalidResponse(format!("{what}: not a page of results: {e}"))
    })?;
    if page.values.is_none() {
        return Err(ProviderError::InvalidResponse(format!(
            "{what}: the answer has no `values` list"
        )));
    }
    let next = match api::next_of(&page, start, &what)? {
        Next::Start(n) => Some(n),
        Next::End | Next::EndWithoutNextPageStart => None,
    };
    Ok(Some((page.values.unwrap_or_default(), next)))
}

fn single(kind: &str, url: &str) -> Result<DocumentPage, ProviderError> {
    let Some(value) = get_json(url)? else {
        return Ok(empty());
    };
    Ok(DocumentPage {
        documents: vec![document(kind, kind.to_string(), None, &value, Vec::new())],
        next: None,
    })
}

fn plain_list(
    kind: &str,
    url: &str,
    ids: &[&str],
    start: u64,
) -> Result<DocumentPage, ProviderError> {
    let Some((values, next)) = get_page(url, start, LIST_LIMIT)? else {
        return Ok(empty());
    };
    let mut documents = Vec::new();
    for mut value in values {
        without_secrets(&mut value, kind == "webhooks");
        let id = crate::documents::text_id(&value, ids)?;
        documents.push(document(kind, id, None, &value, Vec::new()));
    }
    Ok(DocumentPage {
        documents,
        next: next.map(|n| n.to_string()),
    })
}

/// Every value of a paged sub-list.
fn sub_list(url: &str) -> Result<Vec<Value>, ProviderError> {
    let mut out = Vec::new();
    let mut start = 0;
    for _ in 0..MAX_SUB_PAGES {
        let Some((values, next)) = get_page(url, start, LIST_LIMIT)? else {
            return Ok(out);
        };
        out.extend(values);
        match next {
            Some(n) => start = n,
            None => return Ok(out),
        }
    }
    Err(ProviderError::InvalidResponse(format!(
        "{url}: more than {MAX_SUB_PAGES} pages"
    )))
}

/// One page of pull requests from list position `start`: those updated after
/// `since` (all without it), each with its activities, at most
/// `CHANGED_PER_CALL` of them; the cursor is the list position to go on from.
fn pull_requests(
    root: &str,
    since: Option<&str>,
    start: u64,
) -> Result<DocumentPage, ProviderError> {
    let list = format!("{root}/pull-requests?state=ALL");
    let Some((values, next)) = get_page(&list, start, LIST_LIMIT)? else {
        return Ok(empty());
    };
    let mut documents = Vec::new();
    for (i, pr) in values.into_iter().enumerate() {
        if documents.len() == CHANGED_PER_CALL {
            return Ok(DocumentPage {
                documents,
                next: Some((start + i as u64).to_string()),
            });
        }
        let updated = pr
            .get("updatedDate")
            .and_then(Value::as_i64)
            .map(time::from_epoch_millis);
        if let (Some(s), Some(u)) = (since, updated.as_deref()) {
            if !time::is_after(u, s) {
                continue;
            }
        }
        let id = crate::documents::text_id(&pr, &["/id"])?;
        let activities = sub_list(&format!("{root}/pull-requests/{id}/activities"))?;
        let json = json!({"pullrequest": pr, "activities": activities});
        documents.push(document("pullrequests", id, updated, &json, Vec::new()));
        if budget::spent(budget::returned(&documents)) {
            // Half the call's limits spent: go on after this one in the next call.
            return Ok(DocumentPage {
                documents,
                next: Some((start + i as u64 + 1).to_string()),
            });
        }
    }
    Ok(DocumentPage {
        documents,
        next: next.map(|n| n.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_query() {
        assert_eq!(
            paged("https://h/x", 0, 100),
            "https://h/x?start=0&limit=100"
        );
        assert_eq!(
            paged("https://h/x?state=ALL", 25, 100),
            "https://h/x?state=ALL&start=25&limit=100"
        );
    }

    #[test]
    fn cursors() {
        assert_eq!(start_of(None).ok(), Some(0));
        assert_eq!(start_of(Some("40")).ok(), Some(40));
        assert!(start_of(Some("x")).is_err());
    }

    #[test]
    fn scope_kinds() {
        let names: Vec<_> = describe_scope().into_iter().map(|k| k.name).collect();
        assert_eq!(
            names,
            [
                "project",
                "project-default-reviewers",
                "project-access-keys"
            ]
        );
    }
}
