//! What a Bitbucket Cloud repository holds besides git (world 0.3.0 on): the wiki,
//! the LFS server and the metadata kinds, listed as pages of JSON documents
//! through `/2.0/repositories/{workspace}/{slug}/...`, and the workspace-level
//! kinds (`workspace`, `projects`).
//!
//! Paging follows the answers' `next` links (`pagelen`: 50 at most for pull
//! requests, 100 for their comments and tasks). Pull requests and issues are
//! incremental: listed newest-updated first (`sort=-updated_on`), they stop at
//! the first item not updated after `since`, so an unchanged repository costs
//! one request per kind; only changed items have their comments, activity,
//! tasks (changes, attachments) fetched. One call handles one page of
//! `ITEMS_PER_CALL` items (the cursor is the next page's URL), keeping each call
//! well within the host's per-call limits; one that has spent half of them
//! (huge comment threads) stops after the current item, its cursor naming the
//! page and the item to go on from. Files (issue attachments, downloads)
//! are returned as `file-ref`s for the host to fetch; secrets are never
//! included (webhook secrets are not readable; secured variables: no value).

use serde_json::{json, Value};

use crate::documents::{document, empty, get_json, without_secrets};
use crate::reposafe::provider::types::{
    Connection, DocumentPage, FileRef, GitPart, MetadataKind, ProviderError, Repository,
    RepositoryParts,
};
use crate::{budget, time};

/// Pull requests or issues (with their sub-lists) handled per call.
const ITEMS_PER_CALL: u32 = 20;
/// Page size of plain lists and sub-lists.
const LIST_PAGELEN: u32 = 100;
/// Page size of pull request activity.
const ACTIVITY_PAGELEN: u32 = 50;
/// Safety net against `next` links that never end, per sub-list.
const MAX_SUB_PAGES: usize = 500;
/// The pull request list leaves out reviewers and participants unless asked
/// (`fields=+values.reviewers,+values.participants`, encoded).
const PR_LIST_FIELDS: &str = "%2Bvalues.reviewers%2C%2Bvalues.participants";
/// Where an item's id is, in order of preference.
const ID_FIELDS: &[&str] = &["/uuid", "/id", "/key", "/name"];

/// How one kind is read.
#[derive(Clone, Copy)]
enum Source {
    /// One object: one document with this id.
    Single(&'static str, &'static str),
    /// A paged list (path below the repository), one document per value.
    List(&'static str),
    PullRequests,
    Issues,
    /// Environments, each with its variables embedded.
    Environments,
}

/// The repository kinds: (name, source). Pull requests and issues are the incremental ones.
const KINDS: &[(&str, Source)] = &[
    ("pullrequests", Source::PullRequests),
    ("issues", Source::Issues),
    ("repository", Source::Single("", "repository")),
    ("branch-restrictions", Source::List("/branch-restrictions")),
    (
        "branching-model",
        Source::Single("/branching-model/settings", "branching-model"),
    ),
    ("default-reviewers", Source::List("/default-reviewers")),
    ("deploy-keys", Source::List("/deploy-keys")),
    ("webhooks", Source::List("/hooks")),
    (
        "pipelines-config",
        Source::Single("/pipelines_config", "pipelines-config"),
    ),
    (
        "pipeline-variables",
        Source::List("/pipelines_config/variables"),
    ),
    (
        "pipeline-schedules",
        Source::List("/pipelines_config/schedules"),
    ),
    ("environments", Source::Environments),
    ("downloads", Source::List("/downloads")),
];

fn incremental(source: Source) -> bool {
    matches!(source, Source::PullRequests | Source::Issues)
}

/// The wiki (when the repository has one), the LFS server and every kind; no request.
pub fn describe(repo: &Repository) -> RepositoryParts {
    let clone = repo.clone_url.trim_end_matches('/');
    RepositoryParts {
        git: if repo.has_wiki {
            vec![GitPart {
                name: "wiki".to_string(),
                url: format!("{clone}/wiki"),
            }]
        } else {
            Vec::new()
        },
        lfs_url: Some(format!("{clone}/info/lfs")),
        metadata: KINDS
            .iter()
            .map(|(name, source)| MetadataKind {
                name: (*name).to_string(),
                incremental: incremental(*source),
            })
            .collect(),
    }
}

/// The workspace kinds.
pub fn describe_scope() -> Vec<MetadataKind> {
    ["workspace", "projects"]
        .iter()
        .map(|n| MetadataKind {
            name: (*n).to_string(),
            incremental: false,
        })
        .collect()
}

/// `{api}/2.0/repositories/{workspace}/{slug}`.
fn repo_url(conn: &Connection, repo: &Repository) -> Result<String, ProviderError> {
    let base = crate::api_base(conn)?;
    Ok(format!(
        "{base}/2.0/repositories/{}/{}",
        crate::encode_path_segment(&repo.scope),
        crate::encode_path_segment(&repo.slug)
    ))
}

/// One page of the documents of `kind` of `repo`.
pub fn list(
    conn: &Connection,
    repo: &Repository,
    kind: &str,
    since: Option<&str>,
    cursor: Option<String>,
) -> Result<DocumentPage, ProviderError> {
    let source = KINDS
        .iter()
        .find(|(n, _)| *n == kind)
        .map(|(_, s)| *s)
        .ok_or_else(|| unknown_kind(kind, KINDS.iter().map(|(n, _)| *n)))?;
    let root = repo_url(conn, repo)?;
    match source {
        Source::Single(path, id) => single(kind, id, &format!("{root}{path}")),
        Source::List(path) => {
            let url = cursor.unwrap_or_else(|| format!("{root}{path}?pagelen={LIST_PAGELEN}"));
            plain_list(kind, &url)
        }
        Source::PullRequests => {
            let url = cursor.unwrap_or_else(|| {
                format!(
                    "{root}/pullrequests?state=OPEN&state=MERGED&state=DECLINED&state=SUPERSEDED\
                     &sort=-updated_on&pagelen={ITEMS_PER_CALL}&fields={PR_LIST_FIELDS}"
                )
            });
            incremental_page(kind, &url, since, |pr| pull_request(&root, pr))
        }
        Source::Issues => {
            let url = cursor.unwrap_or_else(|| {
                format!("{root}/issues?sort=-updated_on&pagelen={ITEMS_PER_CALL}")
            });
            incremental_page(kind, &url, since, |issue| issue_document(&root, issue))
        }
        Source::Environments => {
            let url =
                cursor.unwrap_or_else(|| format!("{root}/environments?pagelen={LIST_PAGELEN}"));
            environments(&root, &url)
        }
    }
}

/// One page of the documents of a workspace kind.
pub fn list_scope(
    conn: &Connection,
    scope: &str,
    kind: &str,
    cursor: Option<String>,
) -> Result<DocumentPage, ProviderError> {
    let base = crate::api_base(conn)?;
    let ws = format!(
        "{base}/2.0/workspaces/{}",
        crate::encode_path_segment(scope)
    );
    match kind {
        "workspace" => single(kind, "workspace", &ws),
        "projects" => {
            let url = cursor.unwrap_or_else(|| format!("{ws}/projects?pagelen={ITEMS_PER_CALL}"));
            let Some(page) = get_page(&url)? else {
                return Ok(empty());
            };
            let mut documents = Vec::new();
            for project in page.values {
                // Projects are addressed by key.
                let key = crate::documents::text_id(&project, &["/key", "/uuid"])?;
                let reviewers = sub_list(&format!(
                    "{ws}/projects/{}/default-reviewers?pagelen={LIST_PAGELEN}",
                    crate::encode_path_segment(&key)
                ))?;
                let updated = updated_on(&project);
                let json = json!({"project": project, "default-reviewers": reviewers});
                documents.push(document(kind, key, updated, &json, Vec::new()));
            }
            Ok(DocumentPage {
                documents,
                next: page.next,
            })
        }
        _ => Err(unknown_kind(kind, ["workspace", "projects"].into_iter())),
    }
}

fn unknown_kind<'a>(kind: &str, known: impl Iterator<Item = &'a str>) -> ProviderError {
    crate::documents::unknown_kind("Bitbucket Cloud", kind, known)
}

fn updated_on(v: &Value) -> Option<String> {
    v.get("updated_on")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(String::from)
}

fn text_id(v: &Value) -> Result<String, ProviderError> {
    crate::documents::text_id(v, ID_FIELDS)
}

/// A page of a 2.0 collection.
struct Page {
    values: Vec<Value>,
    next: Option<String>,
}

/// GETs one page of a collection; `None` on 404.
fn get_page(url: &str) -> Result<Option<Page>, ProviderError> {
    let Some(body) = crate::get_meta(url)? else {
        return Ok(None);
    };
    let page = crate::api::parse_page(&body, &format!("GET {url}"))?;
    Ok(Some(Page {
        values: page.values.unwrap_or_default(),
        next: page.next.filter(|n| !n.is_empty()),
    }))
}

/// Every value of a paged sub-list (following `next`); empty on 404.
pub(crate) fn sub_list(first: &str) -> Result<Vec<Value>, ProviderError> {
    let mut out = Vec::new();
    let mut url = first.to_string();
    for _ in 0..MAX_SUB_PAGES {
        let Some(page) = get_page(&url)? else {
            return Ok(out);
        };
        out.extend(page.values);
        match page.next {
            Some(n) if n != url => url = n,
            _ => return Ok(out),
        }
    }
    Err(ProviderError::InvalidResponse(format!(
        "{first}: more than {MAX_SUB_PAGES} pages"
    )))
}

fn single(kind: &str, id: &str, url: &str) -> Result<DocumentPage, ProviderError> {
    let Some(value) = get_json(url)? else {
        return Ok(empty());
    };
    let updated = updated_on(&value);
    Ok(DocumentPage {
        documents: vec![document(kind, id.to_string(), updated, &value, Vec::new())],
        next: None,
    })
}

/// A file-ref from an object with `name`, `links.self.href` and maybe `size`.
fn file_ref(v: &Value) -> Option<FileRef> {
    let name = v.get("name")?.as_str()?.to_string();
    let url = v.pointer("/links/self/href")?.as_str()?.to_string();
    Some(FileRef {
        name,
        url,
        size: v.get("size").and_then(Value::as_u64),
    })
}

fn plain_list(kind: &str, url: &str) -> Result<DocumentPage, ProviderError> {
    let Some(page) = get_page(url)? else {
        return Ok(empty());
    };
    let mut documents = Vec::new();
    for mut value in page.values {
        without_secrets(&mut value, kind == "webhooks");
        let files = if kind == "downloads" {
            file_ref(&value).into_iter().collect()
        } else {
            Vec::new()
        };
        let id = text_id(&value)?;
        let updated = updated_on(&value);
        documents.push(document(kind, id, updated, &value, files));
    }
    Ok(DocumentPage {
        documents,
        next: page.next,
    })
}

/// A page of an incremental kind: items updated after `since` (all without
/// it), each made a document by `build`; stops at the first older item.
fn incremental_page(
    kind: &str,
    cursor: &str,
    since: Option<&str>,
    build: impl Fn(Value) -> Result<(Value, Vec<FileRef>), ProviderError>,
) -> Result<DocumentPage, ProviderError> {
    let (skip, url) = split_cursor(cursor);
    let Some(page) = get_page(url)? else {
        return Ok(empty());
    };
    let total = page.values.len();
    let mut documents = Vec::new();
    for (i, item) in page.values.into_iter().enumerate().skip(skip) {
        let updated = updated_on(&item);
        if let (Some(s), Some(u)) = (since, updated.as_deref()) {
            if !time::is_after(u, s) {
                return Ok(DocumentPage {
                    documents,
                    next: None,
                });
            }
        }
        let id = text_id(&item)?;
        let (json, files) = build(item)?;
        documents.push(document(kind, id, updated, &json, files));
        if budget::spent(budget::returned(&documents)) && i + 1 < total {
            // Half the call's limits spent: the rest of this page in the next call.
            return Ok(DocumentPage {
                documents,
                next: Some(format!("{}|{url}", i + 1)),
            });
        }
    }
    Ok(DocumentPage {
        documents,
        next: page.next,
    })
}

/// A cursor of an incremental kind: a page URL, or `<n>|<url>` for that page
/// from its item `n` on (a call that stopped early).
fn split_cursor(cursor: &str) -> (usize, &str) {
    match cursor.split_once('|') {
        Some((n, url)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            (n.parse().unwrap_or(0), url)
        }
        _ => (0, cursor),
    }
}

/// `{"pullrequest", "comments", "activity", "tasks"}` of one pull request.
fn pull_request(root: &str, pr: Value) -> Result<(Value, Vec<FileRef>), ProviderError> {
    let id = text_id(&pr)?;
    let at = format!("{root}/pullrequests/{id}");
    let comments = sub_list(&format!("{at}/comments?pagelen={LIST_PAGELEN}"))?;
    let activity = sub_list(&format!("{at}/activity?pagelen={ACTIVITY_PAGELEN}"))?;
    let tasks = sub_list(&format!("{at}/tasks?pagelen={LIST_PAGELEN}"))?;
    let json =
        json!({"pullrequest": pr, "comments": comments, "activity": activity, "tasks": tasks});
    Ok((json, Vec::new()))
}

/// `{"issue", "comments", "changes", "attachments"}` of one issue; the attachments as files.
fn issue_document(root: &str, issue: Value) -> Result<(Value, Vec<FileRef>), ProviderError> {
    let id = text_id(&issue)?;
    let at = format!("{root}/issues/{id}");
    let comments = sub_list(&format!("{at}/comments?pagelen={LIST_PAGELEN}"))?;
    let changes = sub_list(&format!("{at}/changes?pagelen={LIST_PAGELEN}"))?;
    let attachments = sub_list(&format!("{at}/attachments?pagelen={LIST_PAGELEN}"))?;
    let files = attachments.iter().filter_map(file_ref).collect();
    let json = json!({"issue": issue, "comments": comments, "changes": changes, "attachments": attachments});
    Ok((json, files))
}

/// A page of environments, each with its deployment variables (secured ones without value).
fn environments(root: &str, url: &str) -> Result<DocumentPage, ProviderError> {
    let Some(page) = get_page(url)? else {
        return Ok(empty());
    };
    let mut documents = Vec::new();
    for env in page.values {
        let id = text_id(&env)?;
        let mut variables = sub_list(&format!(
            "{root}/deployments_config/environments/{}/variables?pagelen={LIST_PAGELEN}",
            crate::encode_path_segment(&id)
        ))?;
        for v in &mut variables {
            without_secrets(v, false);
        }
        let json = json!({"environment": env, "variables": variables});
        documents.push(document("environments", id, None, &json, Vec::new()));
    }
    Ok(DocumentPage {
        documents,
        next: page.next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_resume_within_a_page() {
        assert_eq!(
            split_cursor("https://x/pr?page=2"),
            (0, "https://x/pr?page=2")
        );
        assert_eq!(
            split_cursor("7|https://x/pr?page=2"),
            (7, "https://x/pr?page=2")
        );
        assert_eq!(split_cursor("|https://x"), (0, "|https://x"));
    }

    #[test]
    fn files() {
        let f = file_ref(
            &json!({"name": "a.bin", "size": 3, "links": {"self": {"href": "https://x/a.bin"}}}),
        );
        let f = f.map(|f| (f.name, f.url, f.size));
        assert_eq!(f, Some(("a.bin".into(), "https://x/a.bin".into(), Some(3))));
    }

    #[test]
    fn wiki_and_lfs_urls() {
        let repo = Repository {
            id: "{r}".into(),
            full_name: "acme/w".into(),
            slug: "w".into(),
            scope: "acme".into(),
            clone_url: "https://bitbucket.org/acme/w.git".into(),
            is_private: true,
            main_branch: None,
            size: None,
            updated: None,
            has_wiki: true,
            has_lfs: false,
            fork_parent: None,
        };
        let parts = describe(&repo);
        assert_eq!(parts.git[0].url, "https://bitbucket.org/acme/w.git/wiki");
        assert_eq!(
            parts.lfs_url.as_deref(),
            Some("https://bitbucket.org/acme/w.git/info/lfs")
        );
        let inc: Vec<_> = parts
            .metadata
            .iter()
            .filter(|k| k.incremental)
            .map(|k| k.name.as_str())
            .collect();
        assert_eq!(inc, ["pullrequests", "issues"]);
    }
}
