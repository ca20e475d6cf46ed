//! `reposafe serve`: the README's first quick-start command starts, answers
//! `/healthz` openly and the dashboard behind the admin token, speaks TLS when
//! configured, and refuses a non-loopback address without TLS.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn get_with(port: u16, path: &str, header: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{header}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn post_form(port: u16, path: &str, body: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn serve_answers_health_and_the_dashboard_behind_the_token() {
    let rs = Reposafe::new();
    let port = reposafe_testkit::ports::free_port();
    let mut child = rs
        .cmd(&["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("REPOSAFE_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let deadline = Instant::now() + Duration::from_secs(60);
    let health = loop {
        if let Some(r) = get(port, "/healthz") {
            break r;
        }
        assert!(Instant::now() < deadline, "serve did not answer in 60 s");
        std::thread::sleep(Duration::from_millis(200));
    };
    let token = std::fs::read_to_string(rs.data_dir().join("api-token"))
        .expect("api-token created on first start")
        .trim()
        .to_string();
    let anonymous = get(port, "/").unwrap_or_default();
    let bad_login = post_form(port, "/login", "token=wrong");
    let login = post_form(port, "/login", &format!("token={token}"));
    // The browser keeps a session id, never the admin token.
    let session = login
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: reposafe_session="))
        .and_then(|c| c.split(';').next())
        .unwrap_or_default()
        .to_string();
    let status = get_with(port, "/", &format!("Cookie: reposafe_session={session}"));
    let token_cookie = get_with(port, "/", &format!("Cookie: reposafe_token={token}"));
    let bearer = format!("Authorization: Bearer {token}");
    let missing = get_with(port, "/nope", &bearer);
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"ok\""), "{health}");
    assert!(
        anonymous.starts_with("HTTP/1.1 401") && anonymous.contains("Sign in"),
        "{anonymous}"
    );
    assert!(bad_login.starts_with("HTTP/1.1 401"), "{bad_login}");
    assert!(
        login.starts_with("HTTP/1.1 303") && !login.contains(&token),
        "{login}"
    );
    assert!(
        login.contains("HttpOnly") && login.contains("SameSite=Strict") && session.len() >= 32,
        "{login}"
    );
    assert!(
        status.starts_with("HTTP/1.1 200") && status.contains("<h1>Overview</h1>"),
        "{status}"
    );
    assert!(token_cookie.starts_with("HTTP/1.1 401"), "{token_cookie}");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    // A daemon's stderr goes to the journal: it says where the token is and how
    // to sign in, never the token itself (that only on a terminal).
    assert_eq!(stderr.matches(&token).count(), 0, "{stderr}");
    let token_path = rs.data_dir().join("api-token");
    assert!(
        stderr.contains(&*token_path.to_string_lossy()) && stderr.contains("Authorization: Bearer"),
        "{stderr}"
    );

    let refused = rs.run(&["serve", "--listen", "0.0.0.0:8720"]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("TLS") && refused.stderr.contains("--insecure-listen"),
        "{}",
        refused.stderr
    );
}

#[test]
fn serve_speaks_tls_and_the_cli_follows_it() {
    let rs = Reposafe::new();
    let cert = rs.files.path().join("cert.pem");
    let key = rs.files.path().join("key.pem");
    let st = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl (package openssl) makes the test certificate");
    assert!(st.success());
    let mut child = rs
        .cmd(&["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("REPOSAFE_LOG", "warn")
        .env("REPOSAFE_HTTP_TIMEOUT_MS", "1000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn serve");
    let deadline = Instant::now() + Duration::from_secs(60);
    let url = loop {
        if let Ok(t) = std::fs::read_to_string(rs.data_dir().join("daemon.json")) {
            let v: serde_json::Value = serde_json::from_str(&t).expect("daemon.json");
            break v["url"].as_str().expect("url").to_string();
        }
        assert!(Instant::now() < deadline, "serve did not start");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(url.starts_with("https://"), "{url}");
    let pem = std::fs::read(&cert).expect("cert");
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let health = client
        .get(format!("{url}/healthz"))
        .send()
        .expect("https healthz");
    assert_eq!(health.status().as_u16(), 200);
    // Under TLS the session cookie is `Secure`.
    let token = std::fs::read_to_string(rs.data_dir().join("api-token")).expect("api-token");
    let login = client
        .post(format!("{url}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", token.trim()))
        .send()
        .expect("https login");
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        cookie.starts_with("reposafe_session=") && cookie.contains("; Secure"),
        "{cookie}"
    );
    // Plain HTTP on the TLS port gets nothing useful.
    let port = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .expect("port");
    assert!(!get(port, "/healthz")
        .unwrap_or_default()
        .starts_with("HTTP/1.1 200"));
    // A client that never finishes the TLS handshake is cut off.
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stalled
        .write_all(&[0x16, 0x03, 0x01])
        .expect("a handshake's first bytes");
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let closed = matches!(stalled.read(&mut buf), Ok(0) | Err(_))
        && started.elapsed() < Duration::from_secs(4);
    assert!(
        closed,
        "an unfinished TLS handshake was not cut off within 4 s"
    );
    // The CLI finds the daemon and talks TLS to it.
    let jobs = rs.run(&["jobs", "list"]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(jobs.code, 0, "{}", jobs.stderr);
    assert!(jobs.stdout.contains("STATE"), "{}", jobs.stdout);
}

/// A stand-in for whatever took the port of a dead daemon: answers every
/// request `200 {"status":"ok"}` (and a made-up `proof`), and keeps each request
/// head it received.
fn impostor() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match s.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            log.lock()
                .expect("log")
                .push(String::from_utf8_lossy(&head).into_owned());
            let body = format!("{{\"status\":\"ok\",\"proof\":\"{}\"}}", "0".repeat(64));
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, seen)
}

/// A stale `daemon.json` whose address something else now answers: the CLI
/// never sends it the admin token. With the recorded pid alive it stops with an
/// error naming daemon.json; with the pid gone it works on the data dir itself.
#[test]
fn a_stale_daemon_file_never_gets_the_token() {
    let rs = Reposafe::new();
    rs.run(&["jobs", "list"]).ok(); // creates the data dir
    std::fs::write(rs.data_dir().join("api-token"), "f".repeat(64)).expect("token");
    let (port, seen) = impostor();
    let daemon_file = rs.data_dir().join("daemon.json");
    let write_info = |pid: u32| {
        let info = serde_json::json!({
            "url": format!("http://127.0.0.1:{port}"),
            "pid": pid,
            "instance": "1".repeat(64),
        });
        std::fs::write(&daemon_file, info.to_string()).expect("daemon.json");
    };

    // The pid is alive (this test's own): a clear error, no token sent.
    write_info(std::process::id());
    let live = rs.run(&["jobs", "list"]);
    // The pid is gone: no daemon, the CLI opens the data dir itself.
    let mut dead = std::process::Command::new("true").spawn().expect("true");
    let dead_pid = dead.id();
    dead.wait().expect("wait");
    write_info(dead_pid);
    let gone = rs.run(&["jobs", "list"]);

    let seen = seen.lock().expect("log").clone();
    assert!(
        seen.iter()
            .all(|h| !h.to_ascii_lowercase().contains("authorization")),
        "the admin token went to an impostor: {seen:?}"
    );
    assert!(!seen.is_empty(), "the CLI asked the address first");
    assert_ne!(live.code, 0, "{}", live.stdout);
    assert!(
        live.stderr.contains("daemon.json") && live.stderr.contains("not sent"),
        "{}",
        live.stderr
    );
    assert_eq!(gone.code, 0, "{}", gone.stderr);
}
