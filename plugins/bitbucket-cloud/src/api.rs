//! JSON shapes of the Bitbucket Cloud 2.0 REST API answers this provider reads,
//! and their mapping to the provider interface's records.
//!
//! Every function here is pure (no imports are called), so the mapping is unit
//! tested on the host. Nothing is unwrapped: a malformed answer becomes
//! `provider-error::invalid-response` naming what was wrong.

use serde::Deserialize;
use serde_json::Value;

use crate::reposafe::provider::types::{ProviderError, Repository, Scope};

/// One page of a paginated 2.0 collection. `values` is kept as raw JSON so that
/// a bad item can be reported with its position and name.
#[derive(Debug, Deserialize)]
pub struct Page {
    #[serde(default)]
    pub values: Option<Vec<Value>>,
    /// Absolute URL of the next page; absent (or null) on the last page.
    #[serde(default)]
    pub next: Option<String>,
}

/// A workspace object (`type: workspace`), or the part of one we read.
#[derive(Debug, Deserialize)]
struct RawWorkspace {
    #[serde(default)]
    slug: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// A repository object from `GET /2.0/repositories/{workspace}`.
#[derive(Debug, Deserialize)]
struct RawRepository {
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    full_name: Option<String>,
    #[serde(default)]
    slug: Option<String>,
    #[serde(default)]
    is_private: Option<bool>,
    #[serde(default)]
    mainbranch: Option<RawBranch>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    updated_on: Option<String>,
    #[serde(default)]
    has_wiki: Option<bool>,
    #[serde(default)]
    links: Option<RawLinks>,
    #[serde(default)]
    parent: Option<RawParent>,
}

#[derive(Debug, Deserialize)]
struct RawBranch {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawLinks {
    #[serde(default)]
    clone: Option<Vec<RawCloneLink>>,
}

/// One entry of `links.clone`: `{"name": "https" | "ssh", "href": "..."}`.
#[derive(Debug, Deserialize)]
pub struct RawCloneLink {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub href: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawParent {
    #[serde(default)]
    full_name: Option<String>,
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

/// Maps one value of `GET /2.0/user/workspaces` to a scope. Accepts the
/// documented `workspace_access` wrapper (`{"workspace": {...}}`) and, to be
/// tolerant, a bare workspace object.
pub fn workspace_scope(value: &Value, index: usize) -> Result<Scope, ProviderError> {
    let ws_value = match value.get("workspace") {
        Some(inner) if inner.is_object() => inner,
        Some(_) => {
            return Err(invalid(format!(
                "workspace entry #{index}: `workspace` is not an object"
            )))
        }
        None if value.is_object() => value,
        None => {
            return Err(invalid(format!(
                "workspace entry #{index} is not an object"
            )))
        }
    };
    let ws: RawWorkspace = serde_json::from_value(ws_value.clone())
        .map_err(|e| invalid(format!("workspace entry #{index}: {e}")))?;
    let slug = match ws.slug {
        Some(s) if !s.trim().is_empty() => s,
        _ => return Err(invalid(format!("workspace entry #{index} has no `slug`"))),
    };
    let name = match ws.name {
        Some(n) if !n.trim().is_empty() => n,
        _ => slug.clone(),
    };
    Ok(Scope {
        key: slug,
        name,
        kind: "workspace".to_string(),
    })
}

/// Best human label for a repository value in error messages.
fn repo_label(value: &Value, index: usize) -> String {
    let name = value
        .get("full_name")
        .and_then(Value::as_str)
        .or_else(|| value.get("slug").and_then(Value::as_str))
        .or_else(|| value.get("uuid").and_then(Value::as_str));
    match name {
        Some(n) => format!("repository `{n}`"),
        None => format!("repository entry #{index}"),
    }
}

/// Maps one value of `GET /2.0/repositories/{workspace}` to a repository of
/// scope `scope`.
pub fn repository(value: &Value, index: usize, scope: &str) -> Result<Repository, ProviderError> {
    let label = repo_label(value, index);
    if !value.is_object() {
        return Err(invalid(format!("{label} is not an object")));
    }
    let raw: RawRepository =
        serde_json::from_value(value.clone()).map_err(|e| invalid(format!("{label}: {e}")))?;

    let id = non_empty(raw.uuid).ok_or_else(|| invalid(format!("{label} has no `uuid`")))?;
    let full_name =
        non_empty(raw.full_name).ok_or_else(|| invalid(format!("{label} has no `full_name`")))?;
    let slug = match non_empty(raw.slug) {
        Some(s) => s,
        None => match full_name.rsplit_once('/') {
            Some((_, s)) if !s.is_empty() => s.to_string(),
            _ => return Err(invalid(format!("{label} has no `slug`"))),
        },
    };
    let links = raw.links.and_then(|l| l.clone).unwrap_or_default();
    let clone_url = https_clone_url(&links).map_err(|why| invalid(format!("{label}: {why}")))?;

    Ok(Repository {
        id,
        full_name,
        slug,
        scope: scope.to_string(),
        clone_url,
        // Absent only in a malformed answer; assume private, the safer reading.
        is_private: raw.is_private.unwrap_or(true),
        main_branch: raw.mainbranch.and_then(|b| non_empty(b.name)),
        size: raw.size,
        updated: non_empty(raw.updated_on),
        has_wiki: raw.has_wiki.unwrap_or(false),
        // Bitbucket Cloud's API does not say whether a repository uses LFS.
        has_lfs: false,
        fork_parent: raw.parent.and_then(|p| non_empty(p.full_name)),
    })
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

/// Picks the clone link named `https` (never by position) and strips any
/// user info from it.
pub fn https_clone_url(links: &[RawCloneLink]) -> Result<String, String> {
    let link = links
        .iter()
        .find(|l| {
            l.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case("https"))
        })
        .ok_or_else(|| "no clone link named `https`".to_string())?;
    let href = link
        .href
        .as_deref()
        .filter(|h| !h.trim().is_empty())
        .ok_or_else(|| "the `https` clone link has no `href`".to_string())?;
    let lower = href.to_ascii_lowercase();
    if !lower.starts_with("https://") && !lower.starts_with("http://") {
        return Err(format!(
            "the `https` clone link is not an http(s) URL: {href}"
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
            "type": "repository",
            "uuid": "{1111-2222}",
            "full_name": "acme/widgets",
            "slug": "widgets",
            "is_private": true,
            "mainbranch": {"type": "branch", "name": "main"},
            "size": 123456,
            "updated_on": "2026-03-01T10:00:00.000000+00:00",
            "has_wiki": true,
            "links": {"clone": [
                {"name": "ssh", "href": "git@bitbucket.org:acme/widgets.git"},
                {"name": "https", "href": "https://jdoe@bitbucket.org/acme/widgets.git"}
            ]},
            "parent": {"full_name": "upstream/widgets"},
            "workspace": {"slug": "acme"}
        })
    }

    #[test]
    fn maps_a_full_repository() {
        let r = repository(&repo_json(), 0, "acme").expect("valid");
        assert_eq!(r.id, "{1111-2222}");
        assert_eq!(r.full_name, "acme/widgets");
        assert_eq!(r.slug, "widgets");
        assert_eq!(r.scope, "acme");
        assert_eq!(r.clone_url, "https://bitbucket.org/acme/widgets.git");
        assert!(r.is_private);
        assert_eq!(r.main_branch.as_deref(), Some("main"));
        assert_eq!(r.size, Some(123456));
        assert_eq!(
            r.updated.as_deref(),
            Some("2026-03-01T10:00:00.000000+00:00")
        );
        assert!(r.has_wiki);
        assert!(!r.has_lfs);
        assert_eq!(r.fork_parent.as_deref(), Some("upstream/widgets"));
    }

    #[test]
    fn null_mainbranch_and_missing_parent() {
        let mut v = repo_json();
        v["mainbranch"] = Value::Null;
        v["parent"] = Value::Null;
        let r = repository(&v, 0, "acme").expect("valid");
        assert_eq!(r.main_branch, None);
        assert_eq!(r.fork_parent, None);
        v.as_object_mut().map(|o| o.remove("parent"));
        let r = repository(&v, 0, "acme").expect("valid");
        assert_eq!(r.fork_parent, None);
    }

    #[test]
    fn missing_https_link_names_the_repository() {
        let mut v = repo_json();
        v["links"] =
            json!({"clone": [{"name": "ssh", "href": "git@bitbucket.org:acme/widgets.git"}]});
        match repository(&v, 3, "acme") {
            Err(ProviderError::InvalidResponse(m)) => {
                assert!(m.contains("acme/widgets"), "{m}");
                assert!(m.contains("https"), "{m}");
            }
            other => panic!("unexpected {other:?}"),
        }
        v.as_object_mut().map(|o| o.remove("links"));
        assert!(matches!(
            repository(&v, 3, "acme"),
            Err(ProviderError::InvalidResponse(_))
        ));
    }

    #[test]
    fn wrong_types_are_invalid_response() {
        let mut v = repo_json();
        v["size"] = json!("big");
        match repository(&v, 0, "acme") {
            Err(ProviderError::InvalidResponse(m)) => assert!(m.contains("acme/widgets"), "{m}"),
            other => panic!("unexpected {other:?}"),
        }
        match repository(&json!(42), 7, "acme") {
            Err(ProviderError::InvalidResponse(m)) => assert!(m.contains("#7"), "{m}"),
            other => panic!("unexpected {other:?}"),
        }
        let mut v = repo_json();
        v.as_object_mut().map(|o| o.remove("uuid"));
        assert!(matches!(
            repository(&v, 0, "acme"),
            Err(ProviderError::InvalidResponse(m)) if m.contains("uuid")
        ));
    }

    #[test]
    fn clone_link_chosen_by_name_not_position() {
        let links = vec![
            RawCloneLink {
                name: Some("ssh".into()),
                href: Some("git@bitbucket.org:a/b.git".into()),
            },
            RawCloneLink {
                name: Some("https".into()),
                href: Some("https://bitbucket.org/a/b.git".into()),
            },
        ];
        assert_eq!(
            https_clone_url(&links).as_deref(),
            Ok("https://bitbucket.org/a/b.git")
        );
        let only_ssh = vec![RawCloneLink {
            name: Some("ssh".into()),
            href: Some("git@bitbucket.org:a/b.git".into()),
        }];
        assert!(https_clone_url(&only_ssh).is_err());
        let bad = vec![RawCloneLink {
            name: Some("https".into()),
            href: Some("git@x:a/b".into()),
        }];
        assert!(https_clone_url(&bad).is_err());
    }

    #[test]
    fn strips_userinfo() {
        assert_eq!(
            strip_userinfo("https://user@bitbucket.org/ws/r.git"),
            "https://bitbucket.org/ws/r.git"
        );
        assert_eq!(
            strip_userinfo("https://u:p@bitbucket.org/ws/r.git"),
            "https://bitbucket.org/ws/r.git"
        );
        assert_eq!(
            strip_userinfo("https://bitbucket.org/ws/r.git"),
            "https://bitbucket.org/ws/r.git"
        );
        // An @ in the path is not user info.
        assert_eq!(
            strip_userinfo("https://bitbucket.org/ws/r@x.git"),
            "https://bitbucket.org/ws/r@x.git"
        );
        assert_eq!(strip_userinfo("https://a@b@host"), "https://host");
        assert_eq!(strip_userinfo("not a url"), "not a url");
    }

    #[test]
    fn workspace_values() {
        let wrapped = json!({"type": "workspace_access", "permission": "owner",
            "workspace": {"type": "workspace", "slug": "acme", "name": "Acme Inc", "uuid": "{u}"}});
        let s = workspace_scope(&wrapped, 0).expect("valid");
        assert_eq!(
            (s.key.as_str(), s.name.as_str(), s.kind.as_str()),
            ("acme", "Acme Inc", "workspace")
        );
        let bare = json!({"slug": "solo"});
        let s = workspace_scope(&bare, 1).expect("valid");
        assert_eq!((s.key.as_str(), s.name.as_str()), ("solo", "solo"));
        assert!(
            matches!(workspace_scope(&json!({"workspace": {"name": "x"}}), 2),
            Err(ProviderError::InvalidResponse(m)) if m.contains("#2") && m.contains("slug"))
        );
        assert!(matches!(
            workspace_scope(&json!({"workspace": "acme"}), 0),
            Err(ProviderError::InvalidResponse(_))
        ));
        assert!(matches!(
            workspace_scope(&json!("acme"), 0),
            Err(ProviderError::InvalidResponse(_))
        ));
    }

    #[test]
    fn pages() {
        let p = parse_page(br#"{"values": [1, 2], "next": "https://x/n"}"#, "t").expect("valid");
        assert_eq!(p.values.map(|v| v.len()), Some(2));
        assert_eq!(p.next.as_deref(), Some("https://x/n"));
        let p = parse_page(br#"{"values": [], "next": null}"#, "t").expect("valid");
        assert_eq!(p.next, None);
        assert!(matches!(
            parse_page(b"<html>", "t"),
            Err(ProviderError::InvalidResponse(_))
        ));
        assert!(
            matches!(parse_page(br#"{"size": 1}"#, "t"), Err(ProviderError::InvalidResponse(m)) if m.contains("values"))
        );
        assert!(matches!(
            parse_page(br#"{"values": {}}"#, "t"),
            Err(ProviderError::InvalidResponse(_))
        ));
    }
}
