//! reposafe provider component for Bitbucket Data Center (and Server).
//!
//! Implements the `provider-plugin` world of `wit/v0.5/provider.wit`: it describes
//! the settings and credential kinds a Data Center connection uses, lists the
//! projects a credential can see (`GET /rest/api/1.0/projects`), the personal
//! projects (`~USER`) of the personal repositories it can see
//! (`GET /rest/api/1.0/repos`), and the repositories of one project
//! (`GET /rest/api/1.0/projects/{key}/repos`); and (in [`meta`]) what else a
//! repository and a project hold: LFS server, pull requests, settings; and (in
//! [`restore`], world 0.4.0) restoring into the server: finding and creating a
//! repository, writing back the `repository` and `pullrequests` documents of a
//! snapshot of this provider or of Bitbucket Cloud; and (in [`hooks`], world
//! 0.5.0) registering reposafe's push webhook on a project.
//!
//! Paging uses `start`/`limit` and continues only from the page's own
//! `nextPageStart`; a page that says `isLastPage: false` without a
//! `nextPageStart` (a known server bug) ends the listing with a warning.
//!
//! The only capabilities are the host's `http.send` and `log.log` imports; the
//! host adds the `Authorization` header, so no secret ever reaches this code.

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

wit_bindgen::generate!({
    path: "../../wit/v0.5",
    world: "provider-plugin",
});

use api::Next;
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
const SETTING_BASE: &str = "base-url";
const SETTING_PROJECTS: &str = "projects";
const SETTING_PERSONAL: &str = "personal-repositories";

/// Page size asked for; the server may cap it (its `page.max.*` settings).
const PAGE_LIMIT: u32 = 100;
/// Page size of the personal-project discovery through `/rest/api/1.0/repos`, which
/// walks every repository the credential sees: as large as the server allows.
const DISCOVERY_PAGE_LIMIT: u32 = 1000;
/// Safety net against a server whose pages never end.
const MAX_SCOPE_PAGES: usize = 10_000;

/// Longest excerpt of an error body quoted in a `provider-error::http`.
const BODY_EXCERPT_CHARS: usize = 200;

struct Component;

export!(Component);

impl Guest for Component {
    fn info() -> ProviderInfo {
        ProviderInfo {
            id: "bitbucket-dc".to_string(),
            display_name: "Bitbucket Data Center".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            credential_kinds: credential_kinds(),
            settings: settings(),
        }
    }

    fn list_scopes(conn: Connection) -> Result<Vec<Scope>, ProviderError> {
        if let Some(keys) = named_projects(&conn)? {
            return Ok(keys
                .into_iter()
                .map(|key| Scope {
                    kind: if key.starts_with('~') {
                        "personal"
                    } else {
                        "project"
                    }
                    .to_string(),
                    name: key.clone(),
                    key,
                })
                .collect());
        }
        let base = base_url(&conn)?;
        let mut scopes: Vec<Scope> = Vec::new();
        each_page(
            &format!("{base}/rest/api/1.0/projects"),
            PAGE_LIMIT,
            &Purpose::Projects,
            |values, first| {
                for (i, v) in values.iter().enumerate() {
                    scopes.push(api::project_scope(v, first + i)?);
                }
                Ok(())
            },
        )?;
        if personal_enabled(&conn)? {
            // Personal projects are not in /projects: find them through the
            // repositories the credential can see.
            let mut personal: Vec<Scope> = Vec::new();
            each_page(
                &format!("{base}/rest/api/1.0/repos"),
                DISCOVERY_PAGE_LIMIT,
                &Purpose::AllRepositories,
                |values, first| {
                    for (i, v) in values.iter().enumerate() {
                        if let Some(s) = api::personal_scope_of(v, first + i)? {
                            if !personal.iter().any(|p| p.key == s.key) {
                                personal.push(s);
                            }
                        }
                    }
                    Ok(())
                },
            )?;
            for p in personal {
                if !scopes.iter().any(|s| s.key == p.key) {
                    scopes.push(p);
                }
            }
        }
        Ok(scopes)
    }

    fn list_repositories(
        conn: Connection,
        scope: String,
        cursor: Option<String>,
    ) -> Result<RepositoryPage, ProviderError> {
        let key = scope.trim();
        if key.is_empty() {
            return Err(ProviderError::InvalidSettings(
                "the project (scope) to list is empty".to_string(),
            ));
        }
        let start = match cursor.as_deref() {
            None => 0,
            Some(c) => c.parse::<u64>().map_err(|_| {
                ProviderError::InvalidSettings(format!(
                    "page cursor `{c}` of project `{key}` is not a nextPageStart number"
                ))
            })?,
        };
        let base = base_url(&conn)?;
        let url = format!(
            "{base}/rest/api/1.0/projects/{}/repos?start={start}&limit={PAGE_LIMIT}",
            encode_path_segment(key)
        );
        let purpose = Purpose::Repositories(key);
        let body = get(&url, &purpose)?;
        let what = format!("repository list of project `{key}`");
        let page = api::parse_page(&body, &what)?;
        let values = page.values.as_deref().unwrap_or_default();
        log(
            Level::Debug,
            &format!("fetched {url}: {} repositories", values.len()),
        );
        let repositories = values
            .iter()
            .enumerate()
            .map(|(i, v)| api::repository(v, start as usize + i, key))
            .collect::<Result<Vec<_>, _>>()?;
        let next = match api::next_of(&page, start, &what)? {
            Next::Start(n) => Some(n.to_string()),
            Next::End => None,
            Next::EndWithoutNextPageStart => {
                warn_missing_next(&url);
                None
            }
        };
        Ok(RepositoryPage { repositories, next })
    }

    fn oauth_token_url(_conn: Connection) -> Option<String> {
        None
    }

    /// Data Center has no rate-limit accounting the host could learn from a
    /// whoami call that works for project and repository tokens alike; the host
    /// counts each credential on its own (user name for `basic`).
    fn principal(_conn: Connection) -> Result<Option<String>, ProviderError> {
        Ok(None)
    }

    fn describe_repository(
        conn: Connection,
        repo: Repository,
    ) -> Result<RepositoryParts, ProviderError> {
        meta::describe(&conn, &repo)
    }

    fn list_documents(
        conn: Connection,
        repo: Repository,
        kind: String,
        since: Option<String>,
        cursor: Option<String>,
    ) -> Result<DocumentPage, ProviderError> {
        meta::list(&conn, &repo, &kind, since.as_deref(), cursor.as_deref())
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
        meta::list_scope(&conn, &scope, &kind, cursor.as_deref())
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

/// GETs a metadata URL; the body of a 2xx answer, `None` for 404 (the kind does
/// not exist here, e.g. an app that is not installed). A 403, and a 401 with an
/// `AuthorisationException`, is `forbidden(<server message>)`.
fn get_meta(url: &str) -> Result<Option<Vec<u8>>, ProviderError> {
    let resp = documents::send_get(url)?;
    match resp.status {
        200..=299 => Ok(Some(resp.body)),
        404 => Ok(None),
        403 => Err(ProviderError::Forbidden(forbidden_reason(&resp.body, url))),
        // DC answers a permission it lacks with 401 and an AuthorisationException
        // (a refused credential has no exception name).
        401 if is_authorisation_exception(&resp.body) => {
            Err(ProviderError::Forbidden(forbidden_reason(&resp.body, url)))
        }
        status => Err(
            status_error(status, &resp.body, url, &Purpose::Metadata(url))
                .unwrap_or_else(|| ProviderError::Http(format!("GET {url}: HTTP {status}"))),
        ),
    }
}

/// Whether a DC error body is an `AuthorisationException` (a missing permission).
fn is_authorisation_exception(body: &[u8]) -> bool {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    value
        .get("errors")
        .and_then(|e| e.as_array())
        .is_some_and(|e| {
            e.iter().any(|m| {
                m.get("exceptionName")
                    .and_then(|n| n.as_str())
                    .is_some_and(|n| n.ends_with("AuthorisationException"))
            })
        })
}

/// The server's message of a 403 (`{"errors": [{"message": ...}]}`), else an excerpt.
fn forbidden_reason(body: &[u8], url: &str) -> String {
    server_messages(body).unwrap_or_else(|| format!("GET {url}: 403 {}", excerpt(body)))
}

/// The messages of a DC error body (`{"errors": [{"message": ...}]}`), joined; `None`
/// when it has none.
fn server_messages(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let messages: Vec<&str> = value
        .get("errors")
        .and_then(|e| e.as_array())
        .map(|e| {
            e.iter()
                .filter_map(|m| m.get("message")?.as_str())
                .collect()
        })
        .unwrap_or_default();
    (!messages.is_empty()).then(|| messages.join("; "))
}

fn credential_kinds() -> Vec<CredentialSupport> {
    vec![
        CredentialSupport {
            kind: CredentialKind::HttpAccessToken,
            // Project and repository tokens accept only Bearer; so does git.
            api: AuthScheme::Bearer,
            git: AuthScheme::Bearer,
            deprecated: None,
        },
        CredentialSupport {
            kind: CredentialKind::Basic,
            api: AuthScheme::BasicIdentity,
            git: AuthScheme::BasicIdentity,
            deprecated: None,
        },
    ]
}

fn settings() -> Vec<Setting> {
    vec![
        Setting {
            name: SETTING_BASE.to_string(),
            description: "Base URL of the Bitbucket Data Center server, with its context path \
                          if any, e.g. https://bitbucket.example.com/bitbucket"
                .to_string(),
            required: true,
            default_value: None,
            is_url: true,
        },
        Setting {
            name: SETTING_PROJECTS.to_string(),
            description: "Comma-separated project keys to back up (e.g. PRJ,~JDOE); when set, \
                          only these are backed up and no discovery is made"
                .to_string(),
            required: false,
            default_value: None,
            is_url: false,
        },
        Setting {
            name: SETTING_PERSONAL.to_string(),
            description: "Also back up the personal repositories (~user projects) the \
                          credential can see: true or false"
                .to_string(),
            required: false,
            default_value: Some("true".to_string()),
            is_url: false,
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

/// The `projects` setting as a list of keys, if set.
fn named_projects(conn: &Connection) -> Result<Option<Vec<String>>, ProviderError> {
    let Some(raw) = setting(conn, SETTING_PROJECTS) else {
        return Ok(None);
    };
    let mut keys: Vec<String> = Vec::new();
    for k in raw.split(',').map(str::trim).filter(|k| !k.is_empty()) {
        let body = k.strip_prefix('~').unwrap_or(k);
        if body.is_empty()
            || !body
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'))
        {
            return Err(ProviderError::InvalidSettings(format!(
                "`{SETTING_PROJECTS}`: `{k}` is not a project key (letters, digits, `_`; `~user` for a personal project)"
            )));
        }
        if !keys.iter().any(|x| x.eq_ignore_ascii_case(k)) {
            keys.push(k.to_string());
        }
    }
    if keys.is_empty() {
        return Err(ProviderError::InvalidSettings(format!(
            "`{SETTING_PROJECTS}` names no project key"
        )));
    }
    Ok(Some(keys))
}

fn personal_enabled(conn: &Connection) -> Result<bool, ProviderError> {
    match setting(conn, SETTING_PERSONAL)
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("true") | Some("yes") | Some("1") => Ok(true),
        Some("false") | Some("no") | Some("0") => Ok(false),
        Some(other) => Err(ProviderError::InvalidSettings(format!(
            "`{SETTING_PERSONAL}` must be true or false, got `{other}`"
        ))),
    }
}

/// The `base-url` setting without trailing slashes.
fn base_url(conn: &Connection) -> Result<String, ProviderError> {
    let value = setting(conn, SETTING_BASE).ok_or_else(|| {
        ProviderError::InvalidSettings(format!(
            "`{SETTING_BASE}` is required: the server's URL, e.g. https://bitbucket.example.com"
        ))
    })?;
    check_base_url(value)
}

fn check_base_url(value: &str) -> Result<String, ProviderError> {
    let lower = value.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !value.contains(['?', '#']) => {
            Ok(value.trim_end_matches('/').to_string())
        }
        _ => Err(ProviderError::InvalidSettings(format!(
            "`{SETTING_BASE}` must be an http(s) URL without query, got `{value}`"
        ))),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (`~` stays,
/// as personal project keys start with it).
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

/// GETs every page of the collection at `url` (no query), calling `each` with
/// each page's values and the index of the first one.
fn each_page(
    url: &str,
    limit: u32,
    purpose: &Purpose,
    mut each: impl FnMut(&[serde_json::Value], usize) -> Result<(), ProviderError>,
) -> Result<(), ProviderError> {
    let what = purpose.target();
    let mut start = 0u64;
    let mut seen = 0usize;
    for _ in 0..MAX_SCOPE_PAGES {
        let page_url = format!("{url}?start={start}&limit={limit}");
        let body = get(&page_url, purpose)?;
        let page = api::parse_page(&body, &what)?;
        let values = page.values.as_deref().unwrap_or_default();
        log(
            Level::Debug,
            &format!("fetched {page_url}: {} entries", values.len()),
        );
        each(values, seen)?;
        seen += values.len();
        match api::next_of(&page, start, &what)? {
            Next::Start(n) => start = n,
            Next::End => return Ok(()),
            Next::EndWithoutNextPageStart => {
                warn_missing_next(&page_url);
                return Ok(());
            }
        }
    }
    Err(ProviderError::InvalidResponse(format!(
        "{what}: more than {MAX_SCOPE_PAGES} pages"
    )))
}

fn warn_missing_next(url: &str) {
    log(
        Level::Warn,
        &format!(
            "{url}: the page says isLastPage=false but has no nextPageStart (a known Bitbucket \
             Data Center bug); treating it as the last page"
        ),
    );
}

/// What a request is for; chooses the wording of error messages.
enum Purpose<'a> {
    Projects,
    AllRepositories,
    Repositories(&'a str),
    /// A project's webhooks (world 0.5.0, `register-webhook`).
    Webhooks(&'a str),
    /// A repository's or project's metadata, at this URL.
    Metadata(&'a str),
}

impl Purpose<'_> {
    fn target(&self) -> String {
        match self {
            Purpose::Projects => "the project list".to_string(),
            Purpose::AllRepositories => "the list of repositories (personal ones)".to_string(),
            Purpose::Repositories(key) => format!("the repositories of project `{key}`"),
            Purpose::Webhooks(key) => format!("the webhooks of project `{key}`"),
            Purpose::Metadata(url) => format!("GET {url}"),
        }
    }
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
    let target = purpose.target();
    if let Purpose::Webhooks(key) = purpose {
        if status == 403 || (status == 401 && is_authorisation_exception(body)) {
            return Some(ProviderError::Forbidden(hooks::forbidden(key, body)));
        }
    }
    Some(match status {
        401 => ProviderError::Unauthorized(format!(
            "the credential was refused by Bitbucket Data Center (401) for {target}; check that \
             it is valid, not expired, and of the configured kind ({})",
            excerpt(body)
        )),
        403 => ProviderError::Forbidden(format!(
            "the credential may not read {target} (403); it needs at least PROJECT_READ / \
             REPO_READ permission"
        )),
        404 => ProviderError::NotFound(match purpose {
            Purpose::Repositories(key) | Purpose::Webhooks(key) => {
                format!("project `{key}` was not found (404)")
            }
            _ => format!(
                "{url} was not found (404); check `{SETTING_BASE}` (including any context path)"
            ),
        }),
        429 => ProviderError::RateLimited(format!(
            "Bitbucket Data Center kept answering 429 (rate limited) for {target}"
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
            credential_kind: CredentialKind::HttpAccessToken,
        }
    }

    #[test]
    fn info_is_complete() {
        let info = Component::info();
        assert_eq!(info.id, "bitbucket-dc");
        let names: Vec<_> = info.settings.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["base-url", "projects", "personal-repositories"]);
        assert!(info.settings[0].required && info.settings[0].is_url);
        assert_eq!(info.credential_kinds.len(), 2);
        assert!(matches!(info.credential_kinds[0].api, AuthScheme::Bearer));
        assert!(matches!(info.credential_kinds[0].git, AuthScheme::Bearer));
        assert!(matches!(
            info.credential_kinds[1].api,
            AuthScheme::BasicIdentity
        ));
    }

    #[test]
    fn named_projects_need_no_http() {
        let scopes = Component::list_scopes(conn(&[
            ("base-url", "https://h"),
            ("projects", " PRJ, ~jdoe ,PRJ"),
        ]))
        .expect("ok");
        let keys: Vec<_> = scopes
            .iter()
            .map(|s| (s.key.as_str(), s.kind.as_str()))
            .collect();
        assert_eq!(keys, [("PRJ", "project"), ("~jdoe", "personal")]);
        assert!(matches!(
            Component::list_scopes(conn(&[("projects", "a b")])),
            Err(ProviderError::InvalidSettings(m)) if m.contains("a b")
        ));
        assert!(named_projects(&conn(&[("projects", " , ")])).is_err());
    }

    #[test]
    fn settings_are_checked() {
        assert_eq!(
            base_url(&conn(&[("base-url", "https://h/bitbucket/")]))
                .ok()
                .as_deref(),
            Some("https://h/bitbucket")
        );
        assert!(
            matches!(base_url(&conn(&[])), Err(ProviderError::InvalidSettings(m)) if m.contains("base-url"))
        );
        assert!(check_base_url("ftp://h").is_err());
        assert!(check_base_url("https://h/?x=1").is_err());
        assert!(personal_enabled(&conn(&[])).expect("default"));
        assert!(!personal_enabled(&conn(&[("personal-repositories", "False")])).expect("valid"));
        assert!(personal_enabled(&conn(&[("personal-repositories", "maybe")])).is_err());
        assert_eq!(encode_path_segment("~JDOE"), "~JDOE");
        assert_eq!(encode_path_segment("a/b"), "a%2Fb");
    }

    #[test]
    fn statuses_map_to_errors() {
        let p = Purpose::Repositories("PRJ");
        assert!(status_error(200, b"", "u", &p).is_none());
        assert!(matches!(
            status_error(401, b"", "u", &p),
            Some(ProviderError::Unauthorized(_))
        ));
        assert!(
            matches!(status_error(403, b"", "u", &p), Some(ProviderError::Forbidden(m)) if m.contains("PRJ"))
        );
        assert!(
            matches!(status_error(404, b"", "u", &p), Some(ProviderError::NotFound(m)) if m.contains("PRJ"))
        );
        assert!(matches!(
            status_error(404, b"", "u", &Purpose::Projects),
            Some(ProviderError::NotFound(m)) if m.contains("base-url")
        ));
        assert!(matches!(
            status_error(429, b"", "u", &p),
            Some(ProviderError::RateLimited(_))
        ));
        assert!(
            matches!(status_error(500, b"boom", "u", &p), Some(ProviderError::Http(m)) if m.contains("500") && m.contains("boom"))
        );
    }

    #[test]
    fn permission_errors_are_forbidden_with_the_servers_message() {
        let body = br#"{"errors": [{"context": null, "message": "You are not permitted to access this resource", "exceptionName": "com.atlassian.bitbucket.AuthorisationException"}]}"#;
        assert!(is_authorisation_exception(body));
        assert_eq!(
            forbidden_reason(body, "u"),
            "You are not permitted to access this resource"
        );
        let refused = br#"{"errors": [{"context": null, "message": "Authentication failed.", "exceptionName": null}]}"#;
        assert!(!is_authorisation_exception(refused));
    }
}
