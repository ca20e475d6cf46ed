//! Remote URL handling for the `git` module: validating the URLs we support, splitting any
//! credentials off them, and rendering URLs for messages without credentials.

use secrecy::SecretString;

use super::GitError;

/// A remote URL, split into what may be shown and what must stay secret.
pub(crate) struct RemoteUrl {
    /// The URL handed to gix: credentials removed.
    pub for_transport: String,
    /// The URL for messages and logs: credentials removed.
    pub display: String,
    /// `true` for `http://` and `https://`.
    pub is_http: bool,
    /// `Basic …` built from a user name and password embedded in the URL, if there was a password.
    pub basic_auth: Option<SecretString>,
}

/// Return `url` without any `user:password@` part, for messages and logs.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}{}", &url[..authority_start], &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// Validate `raw` and split credentials off it.
pub(crate) fn parse(raw: &str) -> Result<RemoteUrl, GitError> {
    let display = redact(raw);
    let invalid = |message: String| GitError::InvalidUrl {
        url: display.clone(),
        message,
    };
    if raw.trim().is_empty() {
        return Err(invalid("the URL is empty".into()));
    }
    let lower = raw.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        let mut parsed = ::url::Url::parse(raw).map_err(|err| invalid(err.to_string()))?;
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(invalid("the URL has no host".into()));
        }
        let basic_auth = parsed.password().map(|password| {
            use base64::Engine as _;
            let user = percent_decode(parsed.username());
            let password = percent_decode(password);
            let mut pair = user;
            pair.push(b':');
            pair.extend_from_slice(&password);
            SecretString::from(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(&pair)
            ))
        });
        // Neither setter can fail for http(s) URLs with a host.
        let _ = parsed.set_password(None);
        let _ = parsed.set_username("");
        let for_transport = parsed.to_string();
        Ok(RemoteUrl {
            display: for_transport.clone(),
            for_transport,
            is_http: true,
            basic_auth,
        })
    } else if lower.starts_with("file://") || !raw.contains("://") && !looks_like_scp(raw) {
        Ok(RemoteUrl {
            for_transport: raw.to_owned(),
            display,
            is_http: false,
            basic_auth: None,
        })
    } else {
        Err(invalid(
            "unsupported URL scheme: use https://, http://, file:// or a local path".into(),
        ))
    }
}

/// `user@host:path` or `host:path`, which git treats as ssh.
fn looks_like_scp(raw: &str) -> bool {
    match raw.find(':') {
        Some(colon) => {
            let before = &raw[..colon];
            // `C:\…` style drive letters and paths with a slash before the colon are local paths.
            before.len() > 1 && !before.contains('/') && !before.contains('\\')
        }
        None => false,
    }
}

fn percent_decode(input: &str) -> Vec<u8> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(value) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(value);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn redact_removes_userinfo() {
        assert_eq!(
            redact("https://user:secret@bitbucket.org/ws/repo.git"),
            "https://bitbucket.org/ws/repo.git"
        );
        assert_eq!(
            redact("https://bitbucket.org/a@b"),
            "https://bitbucket.org/a@b"
        );
        assert_eq!(redact("/srv/repo.git"), "/srv/repo.git");
        assert_eq!(redact("http://x@h"), "http://h");
    }

    #[test]
    fn parse_splits_credentials() {
        let url = parse("https://me:p%40ss@example.com/r.git").expect("valid");
        assert_eq!(url.for_transport, "https://example.com/r.git");
        assert_eq!(url.display, "https://example.com/r.git");
        assert!(url.is_http);
        // base64("me:p@ss")
        assert_eq!(
            url.basic_auth.expect("password given").expose_secret(),
            "Basic bWU6cEBzcw=="
        );
        let url = parse("https://me@example.com/r.git").expect("valid");
        assert_eq!(url.for_transport, "https://example.com/r.git");
        assert!(url.basic_auth.is_none());
    }

    #[test]
    fn parse_accepts_local_and_rejects_ssh() {
        assert!(!parse("/tmp/x.git").expect("local").is_http);
        assert!(!parse("file:///tmp/x.git").expect("file").is_http);
        assert!(matches!(
            parse("git@bitbucket.org:ws/r.git"),
            Err(GitError::InvalidUrl { .. })
        ));
        assert!(matches!(
            parse("ssh://h/r"),
            Err(GitError::InvalidUrl { .. })
        ));
        assert!(matches!(parse(""), Err(GitError::InvalidUrl { .. })));
        assert_eq!(percent_decode("a%2"), b"a%2");
        assert_eq!(percent_decode("%41%"), b"A%");
    }
}
