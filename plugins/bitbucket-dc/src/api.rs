//! JSON shapes of the Bitbucket Data Center REST API 1.0 answers this provider
//! reads, the paging rule, and their mapping to the provider interface's records.
//!
//! Every function here is pure (no imports are called), so it is unit tested on
//! the host. Nothing is unwrapped: a malformed answer becomes
//! `provider-error::invalid-response` naming what was wrong.

use serde::Deserialize;
use serde_json::Value;

use crate::reposafe::provider::types::{ProviderError, Repository, Scope};

/// One page of a paged 1.0 collection:
/// `{size, limit, isLastPage, start, nextPageStart, values}`. `values` is kept as
/// raw JSON so that a bad item can be reported with its position and name.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    #[serde(default)]
    pub values: Option<Vec<Value>>,
    #[serde(default)]
    pub is_last_page: Option<bool>,
    #[serde(default)]
    pub start: Option<u64>,
    #[serde(default)]
    pub next_page_start: Option<u64>,
}

/// Where listing goes after a page.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// `isLastPage: true` (or no paging fields at all): done.
    End,
    /// Continue with `start=<n>`, the page's own `nextPageStart`.
    Start(u64),
    /// `isLastPage: false` but no `nextPageStart`: a known server bug. Treated
    /// as the end (never guessed as `start + limit`, which can loop); the caller
    /// logs it.
    EndWithoutNextPageStart,
}

fn invalid(msg: String) -> ProviderError {
    ProviderError::InvalidResponse(msg)
}

/// Parses a page body. `what` names the request for error messages.
pub fn parse_page(body: &[u8], what: &str) -> Result<Page, ProviderError> {
    let page: Page = serde_json::from_slice(body).map_err(|e| {
        invalid(format!(
            "{what}: the answer is not a valid page of results: {e}"
        ))
    })?;
    if page.values.is_none() {
        return Err(invalid(format!("{what}: the answer has no `values` list")));
    }
    Ok(page)
}

/// The paging decision for `page`, which was requested with `start=requested`.
/// Only `nextPageStart` is ever followed, and it must move forward.
pub fn next_of(page: &Page, requested: u64, what: &str) -> Result<Next, ProviderError> {
    if page.is_last_page == Some(true) {
        return Ok(Next::End);
    }
    match page.next_page_start {
        Some(n) => {
            let start = page.start.unwrap_or(requested).max(requested);
            if n <= start {
                return Err(invalid(format!(
                    "{what}: nextPageStart {n} does not move past start {start}; refusing to loop"
                )));
            }
            Ok(Next::Start(n))
        }
        None if page.is_last_page == Some(false) => Ok(Next::EndWithoutNextPageStart),
        None => Ok(Next::End),
    }
}

/// A project object, or the part of one we read.
#[derive(Debug, Deserialize)]
struct RawProject {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    name: Option<String>,
    /// `NORMAL` or `PERSONAL`.
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// A repository object from `GET /rest/api/1.0/projects/{key}/repos` or `/repos`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRepository {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    slug: Option<String>,
    #[serde(default)]
    scm_id: Option<String>,
    #[serde(default)]
    public: Option<bool>,
    #[serde(default)]
    project: Option<RawProject>,
    #[serde(default)]
    links: Option<RawLinks>,
    #[serde(default)]
    origin: Option<Box<RawOrigin>>,
    #[serde(default)]
    default_branch: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawOrigin {
    #[serde(default)]
    slug: Option<String>,
    #[serde(default)]
    project: Option<RawProject>,
}

#[derive(Debug, Deserialize)]
struct RawLinks {
    #[serde(default)]
    clone: Option<Vec<RawCloneLink>>,
}

/// One entry of `links.clone`: `{"name": "http" | "ssh", "href": "..."}`.
#[derive(Debug, Deserialize)]
pub struct RawCloneLink {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub href: Option<String>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

/// Maps one value of `GET /rest/api/1.0/projects` to a scope.
pub fn project_scope(value: &Value, index: usize) -> Result<Scope, ProviderError> {
    if !value.is_object() {
        return Err(invalid(format!("project entry #{index} is not an object")));
    }
    let p: RawProject = serde_json::from_value(value.clone())
        .map_err(|e| invalid(format!("project entry #{index}: {e}")))?;
    let key =
        non_empty(p.key).ok_or_else(|| invalid(format!("project entry #{index} has no `key`")))?;
    let kind = if p.kind.as_deref() == Some("PERSONAL") || key.starts_with('~') {
        "personal"
    } else {
        "project"
    };
    Ok(Scope {
        name: non_empty(p.name).unwrap_or_else(|| key.clone()),
        key,
        kind: kind.to_string(),
    })
}

/// The personal project (`~USER`) a repository of `GET /rest/api/1.0/repos`
/// belongs to, if it is a personal repository.
pub fn personal_scope_of(value: &Value, index: usize) -> Result<Option<Scope>, ProviderError> {
    let Some(project) = value.get("project") else {
        return Err(invalid(format!(
            "{} has no `project`",
            repo_label(value, index)
        )));
    };
    let scope = project_scope(project, index)?;
    Ok((scope.kind == "personal").then_some(scope))
}

/// Best human label for a repository value in error messages.
fn repo_label(value: &Value, index: usize) -> String {
    let slug = value.get("slug").and_then(Value::as_str);
    let key = value
        .get("project")
        .and_then(|p| p.get("key"))
        .and_then(Value::as_str);
    match (key, slug) {
        (Some(k), Some(s)) => format!("repository `{k}/{s}`"),
        (None, Some(s)) => format!("repository `{s}`"),
        _ => format!("repository entry #{index}"),
    }
}

/// Maps one repository value to a repository of scope `scope` (the project key
/// that was listed).
pub fn repository(value: &Value, index: usize, scope: &str) -> Result<Repository, ProviderError> {
    let label = repo_label(value, index);
    if !value.is_object() {
        return Err(invalid(format!("{label} is not an object")));
    }
    let raw: RawRepository =
        serde_json::from_value(value.clone()).map_err(|e| invalid(format!("{label}: {e}")))?;
    let id = match raw.id {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        _ => return Err(invalid(format!("{label} has no numeric `id`"))),
    };
    let slug = non_empty(raw.slug).ok_or_else(|| invalid(format!("{label} has no `slug`")))?;
    if let Some(scm) = raw.scm_id.as_deref() {
        if scm != "git" {
            return Err(invalid(format!(
                "{label} is a `{scm}` repository; only git is supported"
            )));
        }
    }
    let key = raw
        .project
        .and_then(|p| non_empty(p.key))
        .unwrap_or_else(|| scope.to_string());
    let links = raw.links.and_then(|l| l.clone).unwrap_or_default();
    let clone_url = http_clone_url(&links).map_err(|why| invalid(format!("{label}: {why}")))?;
    let fork_parent = raw.origin.and_then(|o| {
        let k = o.project.and_then(|p| non_empty(p.key))?;
        let s = non_empty(o.slug)?;
        Some(format!("{k}/{s}"))
    });
    Ok(Repository {
        id,
        full_name: format!("{key}/{slug}"),
        slug,
        scope: key,
        clone_url,
        // `public` is absent on older servers for private repositories.
        is_private: !raw.public.unwrap_or(false),
        main_branch: non_empty(raw.default_branch)
            .map(|b| b.strip_prefix("refs/heads/").unwrap_or(&b).to_string()),
        size: None,
        updated: None,
        has_wiki: false,
        has_lfs: false,
        fork_parent,
    })
}

/// Picks the clone link named `http` (Data Center names it `http` even when the
/// URL is https; never chosen by position) and strips any user info from it.
pub fn http_clone_url(links: &[RawCloneLink]) -> Result<String, String> {
    let link = links
        .iter()
        .find(|l| {
            l.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case("http"))
        })
        .ok_or_else(|| "no clone link named `http`".to_string())?;
    let href = link
        .href
        .as_deref()
        .filter(|h| !h.trim().is_empty())
        .ok_or_else(|| "the `http` clone link has no `href`".to_string())?;
    let lower = href.to_ascii_lowercase();
    if !lower.starts_with("https://") && !lower.starts_with("http://") {
        return Err(format!(
            "the `http` clone link is not an http(s) URL: {href}"
        ));
    }
    Ok(strip_userinfo(href))
}

/// Removes `user@` / `user:pass@` from the authority of a URL.
pub fn strip_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    match authority.rfind('@') {
        Some(at) => format!(
            "{}{}{}",
            &url[..authority_start],
            &authority[at + 1..],
            &rest[authority_len..]
        ),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn repo_json() -> Value {
        json!({
            "slug": "widgets",
            "id": 42,
            "name": "Widgets",
            "scmId": "git",
            "state": "AVAILABLE",
            "forkable": true,
            "project": {"key": "PRJ", "id": 1, "name": "Project", "type": "NORMAL"},
            "public": false,
            "links": {"clone": [
                {"href": "ssh://git@bb.example:7999/prj/widgets.git", "name": "ssh"},
                {"href": "https://jdoe@bb.example/bitbucket/scm/prj/widgets.git", "name": "http"}
            ]}
        })
    }

    #[test]
    fn maps_a_repository() {
        let r = repository(&repo_json(), 0, "PRJ").expect("valid");
        assert_eq!(r.id, "42");
        assert_eq!(r.full_name, "PRJ/widgets");
        assert_eq!(r.slug, "widgets");
        assert_eq!(r.scope, "PRJ");
        assert_eq!(
            r.clone_url,
            "https://bb.example/bitbucket/scm/prj/widgets.git"
        );
        assert!(r.is_private);
        assert_eq!(r.main_branch, None);
        assert_eq!(r.fork_parent, None);
    }

    #[test]
    fn fork_public_and_default_branch() {
        let mut v = repo_json();
        v["public"] = json!(true);
        v["defaultBranch"] = json!("refs/heads/develop");
        v["origin"] = json!({"slug": "up", "project": {"key": "UP"}});
        let r = repository(&v, 0, "PRJ").expect("valid");
        assert!(!r.is_private);
        assert_eq!(r.main_branch.as_deref(), Some("develop"));
        assert_eq!(r.fork_parent.as_deref(), Some("UP/up"));
    }

    #[test]
    fn clone_link_by_name_not_position() {
        let mut v = repo_json();
        v["links"] = json!({"clone": [{"href": "ssh://git@h/p/r.git", "name": "ssh"}]});
        assert!(
            matches!(repository(&v, 3, "PRJ"), Err(ProviderError::InvalidResponse(m)) if m.contains("PRJ/widgets") && m.contains("`http`"))
        );
        let links = vec![
            RawCloneLink {
                name: Some("ssh".into()),
                href: Some("ssh://git@h:7999/p/r.git".into()),
            },
            RawCloneLink {
                name: Some("http".into()),
                href: Some("http://h/scm/p/r.git".into()),
            },
        ];
        assert_eq!(
            http_clone_url(&links).as_deref(),
            Ok("http://h/scm/p/r.git")
        );
        let bad = vec![RawCloneLink {
            name: Some("http".into()),
            href: Some("ssh://h/p".into()),
        }];
        assert!(http_clone_url(&bad).is_err());
    }

    #[test]
    fn bad_repositories_are_invalid_response() {
        let mut v = repo_json();
        v.as_object_mut().map(|o| o.remove("id"));
        assert!(
            matches!(repository(&v, 0, "PRJ"), Err(ProviderError::InvalidResponse(m)) if m.contains("id"))
        );
        let mut v = repo_json();
        v["scmId"] = json!("hg");
        assert!(repository(&v, 0, "PRJ").is_err());
        assert!(
            matches!(repository(&json!(7), 5, "PRJ"), Err(ProviderError::InvalidResponse(m)) if m.contains("#5"))
        );
    }

    #[test]
    fn projects_and_personal_scopes() {
        let s = project_scope(&json!({"key": "PRJ", "name": "Project"}), 0).expect("valid");
        assert_eq!((s.key.as_str(), s.kind.as_str()), ("PRJ", "project"));
        let s = project_scope(&json!({"key": "~JDOE", "type": "PERSONAL"}), 0).expect("valid");
        assert_eq!(
            (s.key.as_str(), s.name.as_str(), s.kind.as_str()),
            ("~JDOE", "~JDOE", "personal")
        );
        assert!(project_scope(&json!({"name": "x"}), 2).is_err());
        let personal = personal_scope_of(
            &json!({"slug": "a", "project": {"key": "~JDOE", "type": "PERSONAL", "name": "J"}}),
            0,
        )
        .expect("valid");
        assert_eq!(personal.map(|s| s.key), Some("~JDOE".to_string()));
        assert!(personal_scope_of(&repo_json(), 0).expect("valid").is_none());
    }

    fn page(json: &str) -> Page {
        parse_page(json.as_bytes(), "t").expect("valid page")
    }

    #[test]
    fn paging_follows_only_next_page_start() {
        let p = page(
            r#"{"size":2,"limit":2,"isLastPage":false,"start":0,"nextPageStart":2,"values":[1,2]}"#,
        );
        assert!(matches!(next_of(&p, 0, "t"), Ok(Next::Start(2))));
        // A server whose pages are not limit-sized: still nextPageStart, never start+limit.
        let p = page(
            r#"{"size":1,"limit":25,"isLastPage":false,"start":2,"nextPageStart":7,"values":[1]}"#,
        );
        assert!(matches!(next_of(&p, 2, "t"), Ok(Next::Start(7))));
        let p = page(r#"{"size":1,"limit":2,"isLastPage":true,"start":2,"values":[1]}"#);
        assert!(matches!(next_of(&p, 2, "t"), Ok(Next::End)));
        let p = page(r#"{"size":2,"limit":2,"isLastPage":false,"start":2,"values":[1,2]}"#);
        assert!(matches!(
            next_of(&p, 2, "t"),
            Ok(Next::EndWithoutNextPageStart)
        ));
        let p = page(r#"{"isLastPage":false,"start":4,"nextPageStart":4,"values":[]}"#);
        assert!(
            matches!(next_of(&p, 4, "t"), Err(ProviderError::InvalidResponse(m)) if m.contains("loop"))
        );
        let p = page(r#"{"values":[]}"#);
        assert!(matches!(next_of(&p, 0, "t"), Ok(Next::End)));
        assert!(parse_page(b"<html>", "t").is_err());
        assert!(
            matches!(parse_page(br#"{"size":0}"#, "t"), Err(ProviderError::InvalidResponse(m)) if m.contains("values"))
        );
    }

    #[test]
    fn strips_userinfo() {
        assert_eq!(
            strip_userinfo("https://u:p@h/scm/a/b.git"),
            "https://h/scm/a/b.git"
        );
        assert_eq!(
            strip_userinfo("https://h/scm/a/b@c.git"),
            "https://h/scm/a/b@c.git"
        );
    }
}
