//! Webhooks of the doubles: the events a hook may name, and deliveries — the body
//! signed as Bitbucket signs it
//! (`X-Hub-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>`) and POSTed
//! over plain HTTP/1.1 to the hook's URL, one connection per delivery.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A webhook's `events` list when every entry is one of `known`.
pub fn known_events(list: &[serde_json::Value], known: &[&str]) -> Option<Vec<String>> {
    list.iter()
        .map(|e| e.as_str().filter(|e| known.contains(e)).map(String::from))
        .collect()
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`, Bitbucket's `X-Hub-Signature`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// A delivery of `body` to `url` with `headers`, plus `X-Hub-Signature` when the
/// hook has a `secret`; the answer's status (see [`post`]).
pub fn deliver(
    url: &str,
    mut headers: Vec<(&str, String)>,
    secret: Option<&str>,
    body: &[u8],
) -> u16 {
    if let Some(secret) = secret {
        headers.push(("X-Hub-Signature", sign(secret, body)));
    }
    post(url, &headers, body)
}

/// POSTs `body` to the `http://host:port/path` `url` with `headers` (plus
/// `Host`, `Content-Length`, `Connection: close`); the answer's status, `0`
/// when there was none (bad URL, refused connection, no status line).
pub fn post(url: &str, headers: &[(&str, String)], body: &[u8]) -> u16 {
    let Some(rest) = url.strip_prefix("http://") else {
        return 0;
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let Ok(mut stream) = TcpStream::connect(authority) else {
        return 0;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    if stream.write_all(head.as_bytes()).is_err() || stream.write_all(body).is_err() {
        return 0;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_rfc_4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
