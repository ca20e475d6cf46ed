//! The hostile-input suite, API part: a running daemon refuses every route
//! without a valid token or session (401), a cookie request from another origin
//! or without the session's CSRF token (403), a wrong content type (415), an
//! oversize body (413) and deep JSON (400), and cuts off a client that trickles
//! its headers or idles, while a normal client is still served.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// The daemon's connection timeout in these tests (`REPOSAFE_HTTP_TIMEOUT_MS`).
const TIMEOUT_MS: u64 = 1000;

struct Daemon {
    child: Child,
    port: u16,
    token: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(rs: &Reposafe) -> Daemon {
    let child = rs
        .cmd(&["serve", "--listen", "127.0.0.1:0"])
        .env("REPOSAFE_LOG", "warn")
        .env("REPOSAFE_HTTP_TIMEOUT_MS", TIMEOUT_MS.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start serve");
    let (url, token) = wait_for_daemon(rs.data_dir());
    let port = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    Daemon { child, port, token }
}

/// An answer: status, head (lowercase header names) and body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
    }
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n{}", self.head, self.body)
    }
}

/// One request on its own connection; `headers` are full lines.
fn request(d: &Daemon, method: &str, path: &str, headers: &[String], body: &str) -> Answer {
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n", d.port);
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn bearer(d: &Daemon) -> String {
    format!("Authorization: Bearer {}", d.token)
}

const JSON: &str = "Content-Type: application/json";

/// Every route of the route table (path parameters filled in) answers 401
/// without a token, with a wrong token, with a made-up session cookie, and with
/// the admin token itself as a cookie.
#[test]
fn every_route_refuses_strangers() {
    let rs = Reposafe::new();
    let d = start(&rs);
    let strangers = [
        vec![],
        vec![format!("Authorization: Bearer {}", "0".repeat(64))],
        vec![format!("Authorization: Basic {}", d.token)],
        vec![format!("Cookie: reposafe_session={}", "0".repeat(64))],
        vec![format!("Cookie: reposafe_token={}", d.token)],
        vec![format!("Cookie: reposafe_session={}", d.token)],
    ];
    let routes = reposafe::api::routes();
    assert!(routes.len() > 30, "{routes:?}");
    for (method, pattern) in routes {
        if pattern == "/healthz" || pattern.starts_with("/hooks/") {
            continue; // open by design (webhooks prove their signature: tests/webhooks.rs)
        }
        let path = pattern.replace("{name}", "acme").replace("{id}", "1");
        for headers in &strangers {
            let mut headers = headers.clone();
            headers.push(JSON.into());
            let a = request(&d, &method, &path, &headers, "{}");
            assert_eq!(a.status, 401, "{method} {path} with {headers:?}: {a:?}");
        }
    }
}

/// The session cookie from signing in.
fn sign_in(d: &Daemon) -> String {
    let a = request(
        d,
        "POST",
        "/login",
        &["Content-Type: application/x-www-form-urlencoded".into()],
        &format!("token={}", d.token),
    );
    assert_eq!(a.status, 303, "{a:?}");
    let cookie = a.header("set-cookie").expect("cookie").to_string();
    assert!(!cookie.contains(&d.token), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(cookie.contains("Max-Age=43200"), "12 h: {cookie}");
    cookie
        .split(';')
        .next()
        .expect("name=value")
        .trim_start_matches("reposafe_session=")
        .to_string()
}

/// A signed-in browser: reading works; anything that changes state needs the
/// session's CSRF token and this daemon's own origin; signing out ends it.
#[test]
fn a_dashboard_session_needs_csrf_and_its_own_origin() {
    let rs = Reposafe::new();
    let d = start(&rs);
    let session = sign_in(&d);
    let cookie = format!("Cookie: reposafe_session={session}");
    let page = request(&d, "GET", "/", std::slice::from_ref(&cookie), "");
    assert_eq!(page.status, 200, "{page:?}");
    let csrf = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the page carries the CSRF token")
        .to_string();
    assert!(csrf.len() >= 32 && csrf != session);
    assert!(!page.body.contains(&d.token));
    let own = format!("Origin: http://127.0.0.1:{}", d.port);
    let with_csrf = format!("X-CSRF-Token: {csrf}");
    // POST /api/v1/check changes nothing but is a state-changing route.
    let post = |extra: &[&str]| {
        let mut h = vec![cookie.clone(), JSON.to_string()];
        h.extend(extra.iter().map(|s| s.to_string()));
        request(&d, "POST", "/api/v1/check", &h, "{}")
    };

    // Refused: no CSRF token, a wrong one, a foreign origin, a cross-site fetch.
    let cases: [(&[&str], &str); 6] = [
        (&[&own], "no CSRF token"),
        (&["X-CSRF-Token: 0000", &own], "wrong CSRF token"),
        (
            &[&with_csrf, "Origin: http://evil.example"],
            "foreign origin",
        ),
        (
            &[&with_csrf, "Origin: http://127.0.0.1:1"],
            "another local port",
        ),
        (&[&with_csrf, "Sec-Fetch-Site: cross-site"], "cross-site"),
        (&[&with_csrf, "Origin: null"], "opaque origin"),
    ];
    for (extra, what) in cases {
        let a = post(extra);
        assert_eq!(a.status, 403, "{what}: {a:?}");
    }
    // A cross-site page cannot even read with the cookie.
    let a = request(
        &d,
        "GET",
        "/api/v1/plans",
        &[cookie.clone(), "Sec-Fetch-Site: cross-site".into()],
        "",
    );
    assert_eq!(a.status, 403, "{a:?}");
    // A form posted by another page (no CSRF field) to a JSON route.
    let a = request(
        &d,
        "POST",
        "/api/v1/check",
        &[
            cookie.clone(),
            "Content-Type: application/x-www-form-urlencoded".into(),
        ],
        "x=1",
    );
    assert_eq!(a.status, 403, "{a:?}");

    // Accepted: the session's CSRF token from this daemon's own page.
    let a = post(&[&with_csrf, &own, "Sec-Fetch-Site: same-origin"]);
    assert_eq!(a.status, 200, "{a:?}");
    let a = request(
        &d,
        "GET",
        "/api/v1/plans",
        std::slice::from_ref(&cookie),
        "",
    );
    assert_eq!(a.status, 200, "{a:?}");

    // Sign out (the dashboard's form): the session is over.
    let a = request(
        &d,
        "POST",
        "/logout",
        &[
            cookie.clone(),
            own.clone(),
            "Content-Type: application/x-www-form-urlencoded".into(),
        ],
        &format!("csrf={csrf}"),
    );
    assert_eq!(a.status, 303, "{a:?}");
    assert!(
        a.header("set-cookie")
            .is_some_and(|c| c.contains("Max-Age=0")),
        "{a:?}"
    );
    let a = request(
        &d,
        "GET",
        "/api/v1/plans",
        std::slice::from_ref(&cookie),
        "",
    );
    assert_eq!(a.status, 401, "after sign-out: {a:?}");
}

/// Bodies: wrong content type 415, over 1 MiB 413 (at once, from its declared
/// length), 10,000 nested `[` 400; the daemon keeps serving.
#[test]
fn bad_bodies_are_refused() {
    let rs = Reposafe::new();
    let d = start(&rs);
    let plan = "{\"name\": \"p\", \"connections\": []}";
    for ctype in ["text/plain", "application/x-www-form-urlencoded"] {
        let a = request(
            &d,
            "POST",
            "/api/v1/plans",
            &[bearer(&d), format!("Content-Type: {ctype}")],
            plan,
        );
        assert_eq!(a.status, 415, "{ctype}: {a:?}");
    }
    let a = request(&d, "POST", "/api/v1/plans", &[bearer(&d)], plan);
    assert_eq!(a.status, 415, "no content type: {a:?}");

    // Declares 2 MiB and sends none of it: refused without waiting for it.
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "POST /api/v1/plans HTTP/1.1\r\nHost: x\r\n{}\r\n{JSON}\r\nContent-Length: {}\r\n\r\n",
        bearer(&d),
        2 << 20
    )
    .expect("write");
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).expect("an answer before the body");
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");

    let deep = "[".repeat(10_000);
    let a = request(
        &d,
        "POST",
        "/api/v1/plans",
        &[bearer(&d), JSON.into()],
        &deep,
    );
    assert_eq!(a.status, 400, "{a:?}");
    let a = request(&d, "GET", "/healthz", &[], "");
    assert_eq!(a.status, 200, "still serving: {a:?}");
    let plans = request(&d, "GET", "/api/v1/plans", &[bearer(&d)], "");
    assert_eq!(plans.body.trim(), "[]", "{plans:?}");
}

/// Whether the server closed `s` within `limit` (reading, and writing a byte of
/// a header line every 100 ms when `trickle`).
fn closed_within(s: &mut TcpStream, limit: Duration, trickle: bool) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        if trickle && s.write_all(b"x").is_err() {
            return true;
        }
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {} // an error answer (408) before the close
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

/// Slowloris: a client trickling its headers, and one that connects and says
/// nothing, are cut off within the timeout, while a normal client is served.
#[test]
fn slow_and_idle_clients_are_cut_off() {
    let rs = Reposafe::new();
    let d = start(&rs);
    let limit = Duration::from_millis(TIMEOUT_MS * 4);
    let slow = std::thread::spawn({
        let port = d.port;
        move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .expect("write");
            closed_within(&mut s, limit, true)
        }
    });
    let idle = std::thread::spawn({
        let port = d.port;
        move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            closed_within(&mut s, limit, false)
        }
    });
    // Meanwhile, a normal client.
    std::thread::sleep(Duration::from_millis(300));
    let a = request(&d, "GET", "/healthz", &[], "");
    assert_eq!(a.status, 200, "{a:?}");
    assert!(
        slow.join().expect("join"),
        "a header trickle was not cut off"
    );
    assert!(
        idle.join().expect("join"),
        "an idle connection was not cut off"
    );
    let a = request(&d, "GET", "/healthz", &[], "");
    assert_eq!(a.status, 200, "{a:?}");
}
