//! Small HTTP helpers shared by the test servers: the boxed response body type, a
//! channel-backed streaming body, percent-decoding/encoding and query-string handling
//! (hand-written to keep the crate's dependency list short).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Frame;
use tokio::sync::mpsc;

/// The response body type of every handler.
pub type Body = BoxBody<Bytes, io::Error>;

/// A complete in-memory body.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body fed chunk by chunk through a bounded channel: the producer waits when the
/// client reads slowly, so nothing is buffered beyond the channel's capacity.
pub struct ChannelBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
}

impl ChannelBody {
    /// Creates a body and the sender that feeds it. `capacity` is in chunks.
    pub fn new(capacity: usize) -> (mpsc::Sender<io::Result<Bytes>>, ChannelBody) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (tx, ChannelBody { rx })
    }
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode_bytes(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hi = hex_val(*b.get(i + 1)?)?;
                let lo = hex_val(*b.get(i + 2)?)?;
                out.push(hi * 16 + lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-decodes a path segment; `None` on a malformed escape or non-UTF-8 result.
pub fn percent_decode(s: &str) -> Option<String> {
    decode_bytes(s, false)
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// Parses an `application/x-www-form-urlencoded` string (query strings and form bodies).
/// Pairs that fail to decode make the whole parse fail (`None`).
pub fn parse_form(q: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for part in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        out.push((decode_bytes(k, true)?, decode_bytes(v, true)?));
    }
    Some(out)
}

/// Encodes pairs as a query string (without the leading `?`).
pub fn encode_form(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The endpoint kind of a request path (query dropped): the segment after `repositories`,
/// `workspaces`, `projects`, `repos`, `users` and the one after that after `repositories`
/// become `{ws}`/`{key}`/`{slug}`/`{user}`, numbers and `{uuid}`s become `{id}`, and a file name
/// after `attachments`/`downloads` becomes `{name}`. E.g.
/// `/2.0/repositories/ws/r/pullrequests/7/comments?page=2` →
/// `/2.0/repositories/{ws}/{slug}/pullrequests/{id}/comments`.
pub fn endpoint_kind(path: &str) -> String {
    let path = path.split('?').next().unwrap_or("");
    let segs: Vec<&str> = path.split('/').collect();
    let mut out: Vec<String> = Vec::with_capacity(segs.len());
    for (i, s) in segs.iter().enumerate() {
        let prev = if i > 0 { segs[i - 1] } else { "" };
        let prev2 = if i > 1 { segs[i - 2] } else { "" };
        let kind = match prev {
            "repositories" | "workspaces" if !s.is_empty() => Some("{ws}"),
            "projects" if !s.is_empty() => Some("{key}"),
            "repos" if !s.is_empty() => Some("{slug}"),
            "users" if !s.is_empty() => Some("{user}"),
            "attachments" | "downloads" if !s.is_empty() => Some("{name}"),
            _ if prev2 == "repositories" && !s.is_empty() => Some("{slug}"),
            _ if !s.is_empty()
                && (s.bytes().all(|b| b.is_ascii_digit())
                    || s.starts_with('{')
                    || s.starts_with("%7B")
                    || s.starts_with("%7b")) =>
            {
                Some("{id}")
            }
            _ => None,
        };
        out.push(kind.map(str::to_string).unwrap_or_else(|| s.to_string()));
    }
    out.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_encode() {
        assert_eq!(percent_decode("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(percent_decode("a%2"), None);
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(percent_encode("a b/c:d"), "a%20b%2Fc%3Ad");
        let p = parse_form("a=1&b=x+y&c").unwrap();
        assert_eq!(p[1], ("b".into(), "x y".into()));
        assert_eq!(p[2], ("c".into(), "".into()));
        assert!(parse_form("a=%zz").is_none());
        assert_eq!(encode_form(&p), "a=1&b=x%20y&c=");
        assert_eq!(
            endpoint_kind("/2.0/repositories/ws/r/pullrequests/7/comments?page=2"),
            "/2.0/repositories/{ws}/{slug}/pullrequests/{id}/comments"
        );
        assert_eq!(
            endpoint_kind("/rest/api/1.0/projects/K/repos/r/pull-requests/3/activities"),
            "/rest/api/1.0/projects/{key}/repos/{slug}/pull-requests/{id}/activities"
        );
    }
}
