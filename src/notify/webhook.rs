//! The outgoing webhook: `POST {"text": "…"}` (Slack's incoming-webhook body, which
//! Mattermost, Rocket.Chat, Teams' Slack-compatible connectors and most chat tools
//! accept) to the configured URL. The URL is treated as a secret (Slack's carries
//! its token in the path): errors and views name only its origin.

use super::{field, mail::chain, Message, NotifyError};
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(15);

/// Checks a webhook URL: absolute http(s), no user info.
pub fn check_url(url: &str) -> Result<(), NotifyError> {
    let u = url::Url::parse(url)
        .map_err(|_| field("webhook_url", "is not a URL (https://hooks.example.com/…)"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(field("webhook_url", "is not an http(s) URL"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(field("webhook_url", "must not hold a user or password"));
    }
    Ok(())
}

/// The URL's origin (`https://host[:port]`): what may be shown of it.
pub fn origin(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => "(invalid URL)".into(),
    }
}

/// A masked form for views: the origin and `/…` when there is a path.
pub fn masked(url: &str) -> String {
    let o = origin(url);
    match url::Url::parse(url) {
        Ok(u) if u.path() != "/" || u.query().is_some() => format!("{o}/…"),
        _ => o,
    }
}

/// Posts the message; any 2xx is success.
pub fn send(url: &SecretString, msg: &Message) -> Result<(), NotifyError> {
    let url = url.expose_secret();
    let fail = |reason: String| NotifyError::Webhook {
        origin: origin(url),
        reason,
    };
    check_url(url)?;
    let client = reqwest::blocking::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| {
            fail(format!(
                "cannot build the HTTP client: {}",
                chain(&e.without_url())
            ))
        })?;
    let body = serde_json::json!({ "text": msg.text });
    let resp = client
        .post(url)
        .json(&body)
        .send()
        .map_err(|e| fail(chain(&e.without_url())))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text: String = resp.text().unwrap_or_default().chars().take(200).collect();
    Err(fail(format!(
        "answered HTTP {}{}",
        status.as_u16(),
        if text.trim().is_empty() {
            String::new()
        } else {
            format!(": {}", text.trim())
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_is_shown_only_as_its_origin() {
        let url = "https://hooks.slack.com/services/T000/B000/XXXXSECRET";
        assert_eq!(masked(url), "https://hooks.slack.com/…");
        assert_eq!(origin(url), "https://hooks.slack.com");
        assert!(check_url(url).is_ok());
        assert!(check_url("https://u:p@h/x").is_err());
        assert!(check_url("mailto:x@y").is_err());
    }
}
