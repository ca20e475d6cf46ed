//! reposafe provider component for Bitbucket Cloud.
//!
//! Implements the `provider-plugin` world of `wit/v0.5/provider.wit`: it describes
//! the settings and credential kinds a Bitbucket Cloud connection uses, lists
//! the workspaces a credential can see (`GET /2.0/user/workspaces`) and the
//! repositories of one workspace (`GET /2.0/repositories/{workspace}`), (in
//! [`meta`]) what else a repository and a workspace hold: wiki, LFS server,
//! pull requests, issues, settings, and (in [`restore`]) restores into Bitbucket
//! Cloud: finds and creates repositories and writes backed-up metadata back, and
//! (in [`hooks`], world 0.5.0) registers reposafe's push webhook on a workspace.
//!
//! The only capabilities are the host's `http.send`, `log.log` and (inside
//! `restore-documents`) `files.read` imports; the
//! host adds the `Authorization` header, so no secret ever reaches this code.
//! The retired cross-workspace endpoints (`/2.0/workspaces`,
//! `/2.0/user/permissions/workspaces`, `/2.0/repositories`) are never used.

mod api;
#[path = "../../shared/budget.rs"]
mod budget;
#[path = "../../shared/documents.rs"]
mod documents;
mod hooks;
mod meta;
mod restore;
#[path = "../../shared/time.rs"]
mod time;
mod zip;

wit_bindgen::generate!({
    path: "../../wit/v0.5",
    world: "provider-plugin",
});

use exports::reposafe::provider::provider::Guest;
use reposafe::provider::http::HttpError;
use reposafe::provider::log::{self as host_log, Level};
use reposafe::provider::types::{
    AuthScheme, Connection, CredentialKind, CredentialSupport, DocumentPage, MetadataKind,
    NewRepository, ProviderError, ProviderInfo, Repository, RepositoryPage, RepositoryParts,
    RestoreContext, RestoreDocument, RestoreKind, RestoredDocument, Scope, Setting,
    WebhookRegistered, WebhookRequest,
};

/// Setting names.
const SETTING_WORKSPACE: &str = "workspace";
const SETTING_API_BASE: &str = "api-base-url";
const SETTING_GIT_BASE: &str = "git-base-url";

const DEFAULT_API_BASE: &str = "https://api.bitbucket.org";
const DEFAULT_GIT_BASE: &str = "https://bitbucket.org";

/// Safety net against a server whose `next` links never end.
const MAX_SCOPE_PAGES: usize = 1000;

/// Longest excerpt of an error body quoted in a `provider-error::http`.
const BODY_EXCERPT_CHARS: usize = 200;

struct Component;

export!(Component);

impl Guest for Component {
    fn info() -> ProviderInfo {
        ProviderInfo {
            id: "bitbucket-cloud".to_string(),
            display_name: "Bitbucket Cloud".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            credential_kinds: credential_kinds(),
            settings: settings(),
        }
    }

    fn list_scopes(conn: Connection) -> Result<Vec<Scope>, ProviderError> {
        if let Some(ws) = setting(&conn, SETTING_WORKSPACE) {
            return Ok(vec![Scope {
                key: ws.to_string(),
                name: ws.to_string(),
                kind: "workspace".to_string(),
            }]);
        }
        let base = base_url(&conn, SETTING_API_BASE, DEFAULT_API_BASE)?;
        let mut url = format!("{base}/2.0/user/workspaces?pagelen=100");
        let mut scopes = Vec::new();
        let mut seen = Vec::new();
        for _ in 0..MAX_SCOPE_PAGES {
            let body = get(&url, &Purpose::Workspaces)?;
            let page = api::parse_page(&body, "workspace list")?;
            let values = page.values.unwrap_or_default();
            log(
                Level::Debug,
                &format!("fetched {url}: {} workspaces", values.len()),
            );
            let first = scopes.len();
            for (i, v) in values.iter().enumerate() {
                scopes.push(api::workspace_scope(v, first + i)?);
            }
            seen.push(url);
            match page.next {
                Some(next) if !next.is_empty() => {
                    if seen.contains(&next) {
                        return Err(ProviderError::InvalidResponse(format!(
                            "workspace list: `next` points back to an earlier page ({next})"
                        )));
                    }
                    url = next;
                }
                _ => return Ok(scopes),
            }
        }
        Err(ProviderError::InvalidResponse(format!(
            "workspace list: more than {MAX_SCOPE_PAGES} pages"
        )))
    }

    fn list_repositories(
        conn: Connection,
        scope: String,
        cursor: Option<String>,
    ) -> Result<RepositoryPage, ProviderError> {
        if scope.trim().is_empty() {
            return Err(ProviderError::InvalidSettings(
                "the workspace (scope) to list is empty".to_string(),
            ));
        }
        let url = match cursor {
            Some(next) => next,
            None => {
                let base = base_url(&conn, SETTING_API_BASE, DEFAULT_API_BASE)?;
                format!(
                    "{base}/2.0/repositories/{}?pagelen=100",
                    encode_path_segment(&scope)
                )
            }
        };
        let body = get(&url, &Purpose::Repositories(&scope))?;
        let what = format!("repository list of workspace `{scope}`");
        let page = api::parse_page(&body, &what)?;
        let values = page.values.unwrap_or_default();
        log(
            Level::Debug,
            &format!("fetched {url}: {} repositories", values.len()),
        );
        let repositories = values
            .iter()
            .enumerate()
            .map(|(i, v)| api::repository(v, i, &scope))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RepositoryPage {
            repositories,
            next: page.next.filter(|n| !n.is_empty()),
        })
    }

    /// The Bitbucket account behind API tokens and app passwords (`GET /2.0/user`):
    /// every credential of one account spends that account's rate-limit budget.
    /// Access tokens and OAuth consumers have budgets of their own: `none`.
    fn principal(conn: Connection) -> Result<Option<String>, ProviderError> {
        match conn.credential_kind {
            CredentialKind::ApiToken | CredentialKind::AppPassword => {}
            _ => return Ok(None),
        }
        let base = base_url(&conn, SETTING_API_BASE, DEFAULT_API_BASE)?;
        let url = format!("{base}/2.0/user");
        let body = get(&url, &Purpose::Account)?;
        let user: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| ProviderError::InvalidResponse(format!("GET {url}: not JSON: {e}")))?;
        let id = user
            .get("uuid")
            .and_then(|v| v.as_str())
            .or_else(|| user.get("account_id").and_then(|v| v.as_str()))
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                ProviderError::InvalidResponse(format!(
                    "GET {url}: the answer has neither `uuid` nor `account_id`"
                ))
            })?;
        Ok(Some(format!("account:{id}")))
    }

    fn oauth_token_url(conn: Connection) -> Option<String> {
        let base = base_url(&conn, SETTING_GIT_BASE, DEFAULT_GIT_BASE)
            .unwrap_or_else(|_| DEFAULT_GIT_BASE.to_string());
        Some(format!("{base}/site/oauth2/access_token"))
    }

    fn describe_repository(
        _conn: Connection,
        repo: Repository,
    ) -> Result<RepositoryParts, ProviderError> {
        Ok(meta::describe(&repo))
    }

    fn list_documents(
        conn: Connection,
        repo: Repository,
        kind: String,
        since: Option<String>,
        cursor: Option<String>,
    ) -> Result<DocumentPage, ProviderError> {
        meta::list(&conn, &repo, &kind, since.as_deref(), cursor)
    }

    fn describe_scope(
        _conn: Connection,
        _scope: String,
    ) -> Result<Vec<MetadataKind>, ProviderError> {
        Ok(meta::describe_scope())
    }

    fn list_scope_documents(
        conn: Connection,
        scope: String,
        kind: String,
        cursor: Option<String>,
    ) -> Result<DocumentPage, ProviderError> {
        meta::list_scope(&conn, &scope, &kind, cursor)
    }

    fn find_repository(
        conn: Connection,
        scope: String,
        slug: String,
    ) -> Result<Option<Repository>, ProviderError> {
        restore::find(&conn, &scope, &slug)
    }

    fn create_repository(
        conn: Connection,
        new: NewRepository,
    ) -> Result<Repository, ProviderError> {
        restore::create(&conn, &new)
    }

    fn restorable_kinds(_conn: Connection, source_provider: String) -> Vec<RestoreKind> {
        restore::kinds(&source_provider)
    }

    fn restore_documents(
        conn: Connection,
        repo: Repository,
        kind: String,
        context: RestoreContext,
        documents: Vec<RestoreDocument>,
    ) -> Result<Vec<RestoredDocument>, ProviderError> {
        restore::restore(&conn, &repo, &kind, &context, &documents)
    }

    fn register_webhook(
        conn: Connection,
        scope: String,
        hook: WebhookRequest,
    ) -> Result<WebhookRegistered, ProviderError> {
        hooks::register(&conn, &scope, &hook)
    }
}

/// The REST API base URL of a connection.
fn api_base(conn: &Connection) -> Result<String, ProviderError> {
    base_url(conn, SETTING_API_BASE, DEFAULT_API_BASE)
}

/// GETs a metadata URL; the body of a 2xx answer, `None` for 404 (the kind does
/// not exist for this repository, e.g. its issue tracker is off). A 403 naming
/// the scopes it needs (`error.detail.required`) is `forbidden("needs ...")`.
fn get_meta(url: &str) -> Result<Option<Vec<u8>>, ProviderError> {
    let resp = documents::send_get(url)?;
    match resp.status {
        200..=299 => Ok(Some(resp.body)),
        404 => Ok(None),
        403 => Err(ProviderError::Forbidden(forbidden_reason(&resp.body, url))),
        status => Err(status_error(status, &resp.body, url, &Purpose::Metadata)
            .unwrap_or_else(|| ProviderError::Http(format!("GET {url}: HTTP {status}")))),
    }
}

/// Why a 403 happened: `needs <scopes>` when the body names the required
/// scopes (`{"error": {"detail": {"required": [...]}}}`), else the server's message.
fn forbidden_reason(body: &[u8], url: &str) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let required: Vec<&str> = value
        .pointer("/error/detail/required")
        .and_then(|r| r.as_array())
        .map(|r| r.iter().filter_map(|s| s.as_str()).collect())
        .unwrap_or_default();
    if !required.is_empty() {
        return format!("needs {}", required.join(", "));
    }
    match value.pointer("/error/message").and_then(|m| m.as_str()) {
        Some(m) if !m.is_empty() => m.to_string(),
        _ => format!("GET {url}: 403 {}", excerpt(body)),
    }
}

fn credential_kinds() -> Vec<CredentialSupport> {
    let token_user = |u: &str| AuthScheme::BasicFixedUser(u.to_string());
    vec![
        CredentialSupport {
            kind: CredentialKind::ApiToken,
            api: AuthScheme::BasicIdentity,
            git: token_user("x-bitbucket-api-token-auth"),
            deprecated: None,
        },
        CredentialSupport {
            kind: CredentialKind::AccessToken,
            api: AuthScheme::Bearer,
            git: token_user("x-token-auth"),
            deprecated: None,
        },
        CredentialSupport {
            kind: CredentialKind::OauthConsumer,
            api: AuthScheme::Bearer,
            git: token_user("x-token-auth"),
            deprecated: None,
        },
        CredentialSupport {
            kind: CredentialKind::AppPassword,
            api: AuthScheme::BasicIdentity,
            git: AuthScheme::BasicIdentity,
            deprecated: Some(
                "Bitbucket Cloud has retired app passwords; create an API token instead"
                    .to_string(),
            ),
        },
    ]
}

fn settings() -> Vec<Setting> {
    vec![
        Setting {
            name: SETTING_WORKSPACE.to_string(),
            description: "Workspace slug to back up; when set, it is used even if workspace \
                          discovery is not permitted"
                .to_string(),
            required: false,
            default_value: None,
            is_url: false,
        },
        Setting {
            name: SETTING_API_BASE.to_string(),
            description: "Base URL of the Bitbucket Cloud REST API".to_string(),
            required: false,
            default_value: Some(DEFAULT_API_BASE.to_string()),
            is_url: true,
        },
        Setting {
            name: SETTING_GIT_BASE.to_string(),
            description: "Base URL of the host git clones go to".to_string(),
            required: false,
            default_value: Some(DEFAULT_GIT_BASE.to_string()),
            is_url: true,
        },
    ]
}

/// The trimmed, non-empty value of a connection setting.
fn setting<'a>(conn: &'a Connection, name: &str) -> Option<&'a str> {
    conn.settings
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// A URL setting (default when unset) without trailing slashes.
fn base_url(conn: &Connection, name: &str, default: &str) -> Result<String, ProviderError> {
    let value = setting(conn, name).unwrap_or(default);
    check_base_url(name, value)
}

fn check_base_url(name: &str, value: &str) -> Result<String, ProviderError> {
    let lower = value.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') => {
            Ok(value.trim_end_matches('/').to_string())
        }
        _ => Err(ProviderError::InvalidSettings(format!(
            "`{name}` must be an http(s) URL, got `{value}`"
        ))),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a request is for; chooses the wording of error messages.
enum Purpose<'a> {
    Workspaces,
    Repositories(&'a str),
    /// A workspace's webhooks (world 0.5.0, `register-webhook`).
    Webhooks(&'a str),
    /// `GET /2.0/user`: whose account the credential is.
    Account,
    /// A repository's or workspace's metadata.
    Metadata,
}

/// GETs `url` as JSON; returns the body of a 2xx answer.
fn get(url: &str, purpose: &Purpose) -> Result<Vec<u8>, ProviderError> {
    let resp = documents::send_get(url)?;
    match status_error(resp.status, &resp.body, url, purpose) {
        Some(err) => Err(err),
        None => Ok(resp.body),
    }
}

fn transport_error(url: &str, e: HttpError) -> ProviderError {
    let (kind, detail) = match e {
        HttpError::Denied(d) => ("refused by the host", d),
        HttpError::Timeout(d) => ("timed out", d),
        HttpError::Transport(d) => ("failed", d),
        HttpError::TooLarge(d) => ("answer too large", d),
    };
    ProviderError::Http(format!("GET {url}: {kind}: {detail}"))
}

/// Maps a non-2xx status to the provider error; `None` for 2xx.
fn status_error(status: u16, body: &[u8], url: &str, purpose: &Purpose) -> Option<ProviderError> {
    if (200..300).contains(&status) {
        return None;
    }
    let target = match purpose {
        Purpose::Workspaces => "the workspace list".to_string(),
        Purpose::Repositories(ws) => format!("the repositories of workspace `{ws}`"),
        Purpose::Webhooks(ws) => format!("the webhooks of workspace `{ws}`"),
        Purpose::Account => "the credential's account (GET /2.0/user)".to_string(),
        Purpose::Metadata => format!("GET {url}"),
    };
    Some(match status {
        401 => ProviderError::Unauthorized(format!(
            "the credential was refused by Bitbucket (401) for {target}; check that it is \
             valid, not expired, and of the configured kind"
        )),
        403 => ProviderError::Forbidden(match purpose {
            Purpose::Workspaces => "the credential may not list workspaces (403); access tokens \
                                    cannot discover workspaces: set the `workspace` setting"
                .to_string(),
            Purpose::Repositories(ws) => format!(
                "the credential may not list the repositories of workspace `{ws}` (403); check \
                 its permissions and scopes (repository read access is needed)"
            ),
            Purpose::Webhooks(ws) => hooks::forbidden(ws, body, url),
            Purpose::Account => "the credential may not read its account (403); give it the \
                                 `account:read` scope"
                .to_string(),
            Purpose::Metadata => forbidden_reason(body, url),
        }),
        404 => ProviderError::NotFound(match purpose {
            Purpose::Workspaces => format!("{url} was not found (404)"),
            Purpose::Repositories(ws) | Purpose::Webhooks(ws) => {
                format!("workspace `{ws}` was not found (404)")
            }
            Purpose::Account | Purpose::Metadata => format!("{url} was not found (404)"),
        }),
        410 => ProviderError::Gone(format!(
            "{url} is gone (410): Bitbucket has retired this endpoint"
        )),
        429 => ProviderError::RateLimited(format!(
            "Bitbucket kept answering 429 (rate limited) for {target}"
        )),
        _ => ProviderError::Http(format!("GET {url}: HTTP {status}: {}", excerpt(body))),
    })
}

/// The first `BODY_EXCERPT_CHARS` characters of a body, whitespace collapsed.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = collapsed.chars().take(BODY_EXCERPT_CHARS).collect();
    if collapsed.chars().count() > BODY_EXCERPT_CHARS {
        out.push('…');
    }
    if out.is_empty() {
        out.push_str("(empty body)");
    }
    out
}

fn log(level: Level, message: &str) {
    host_log::log(level, message);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(settings: &[(&str, &str)]) -> Connection {
        Connection {
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            credential_kind: CredentialKind::AccessToken,
        }
    }

    #[test]
    fn info_is_complete() {
        let info = Component::info();
        assert_eq!(info.id, "bitbucket-cloud");
        assert_eq!(info.display_name, "Bitbucket Cloud");
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        let names: Vec<_> = info.settings.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["workspace", "api-base-url", "git-base-url"]);
        assert!(info.settings.iter().all(|s| !s.required));
        assert_eq!(info.credential_kinds.len(), 4);
        let app = &info.credential_kinds[3];
        assert!(matches!(app.kind, CredentialKind::AppPassword));
        assert!(app.deprecated.is_some());
    }

    #[test]
    fn named_workspace_needs_no_http() {
        // No import is called: on the host the imports would panic.
        let scopes = Component::list_scopes(conn(&[("workspace", " acme ")])).expect("ok");
        assert_eq!(scopes.len(), 1);
        assert_eq!(scopes[0].key, "acme");
        assert_eq!(scopes[0].name, "acme");
        assert_eq!(scopes[0].kind, "workspace");
    }

    #[test]
    fn oauth_url_trims_slash() {
        assert_eq!(
            Component::oauth_token_url(conn(&[("git-base-url", "https://bb.example/")])).as_deref(),
            Some("https://bb.example/site/oauth2/access_token")
        );
        assert_eq!(
            Component::oauth_token_url(conn(&[])).as_deref(),
            Some("https://bitbucket.org/site/oauth2/access_token")
        );
    }

    #[test]
    fn base_urls() {
        assert_eq!(
            check_base_url("x", "https://api.bitbucket.org/")
                .ok()
                .as_deref(),
            Some("https://api.bitbucket.org")
        );
        assert!(
            matches!(check_base_url("x", "ftp://a"), Err(ProviderError::InvalidSettings(m)) if m.contains("`x`"))
        );
        assert!(check_base_url("x", "https://").is_err());
    }

    #[test]
    fn encodes_scope() {
        assert_eq!(encode_path_segment("acme-co_1.x~"), "acme-co_1.x~");
        assert_eq!(encode_path_segment("{a b}/c"), "%7Ba%20b%7D%2Fc");
    }

    #[test]
    fn forbidden_names_the_required_scopes() {
        let body = br#"{"type": "error", "error": {"message": "Your credentials lack one or more required privilege scopes.", "detail": {"granted": ["repository"], "required": ["pullrequest"]}}}"#;
        assert_eq!(forbidden_reason(body, "u"), "needs pullrequest");
        let body = br#"{"type": "error", "error": {"message": "Access denied"}}"#;
        assert_eq!(forbidden_reason(body, "u"), "Access denied");
        assert_eq!(forbidden_reason(b"nope", "u"), "GET u: 403 nope");
    }

    #[test]
    fn status_mapping() {
        let ws = Purpose::Workspaces;
        let repos = Purpose::Repositories("acme");
        assert!(status_error(200, b"", "u", &ws).is_none());
        assert!(
            matches!(status_error(401, b"", "u", &ws), Some(ProviderError::Unauthorized(m)) if m.contains("refused by Bitbucket"))
        );
        assert!(
            matches!(status_error(403, b"", "u", &ws), Some(ProviderError::Forbidden(m)) if m.contains("access tokens") && m.contains("`workspace`"))
        );
        assert!(
            matches!(status_error(403, b"", "u", &repos), Some(ProviderError::Forbidden(m)) if m.contains("acme"))
        );
        assert!(
            matches!(status_error(404, b"", "u", &repos), Some(ProviderError::NotFound(m)) if m.contains("acme"))
        );
        assert!(matches!(
            status_error(410, b"", "u", &ws),
            Some(ProviderError::Gone(_))
        ));
        assert!(matches!(
            status_error(429, b"", "u", &ws),
            Some(ProviderError::RateLimited(_))
        ));
        let long = "x".repeat(500);
        match status_error(500, long.as_bytes(), "u", &ws) {
            Some(ProviderError::Http(m)) => {
                assert!(m.contains("500"));
                assert!(m.chars().filter(|c| *c == 'x').count() == 200, "{m}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            matches!(status_error(302, b"", "u", &ws), Some(ProviderError::Http(m)) if m.contains("302") && m.contains("empty body"))
        );
    }
}
