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
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
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
    let cookie = format!("Cookie: reposafe_token={token}");
    let status = get_with(port, "/", &cookie);
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
        login.starts_with("HTTP/1.1 303") && login.contains("reposafe_token="),
        "{login}"
    );
    assert!(
        status.starts_with("HTTP/1.1 200") && status.contains("<h1>reposafe</h1>"),
        "{status}"
    );
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    // The token is shown once, on creation.
    assert_eq!(stderr.matches(&token).count(), 1, "{stderr}");

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
        .build()
        .expect("client");
    let health = client
        .get(format!("{url}/healthz"))
        .send()
        .expect("https healthz");
    assert_eq!(health.status().as_u16(), 200);
    // Plain HTTP on the TLS port gets nothing useful.
    let port = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .expect("port");
    assert!(!get(port, "/healthz")
        .unwrap_or_default()
        .starts_with("HTTP/1.1 200"));
    // The CLI finds the daemon and talks TLS to it.
    let jobs = rs.run(&["jobs", "list"]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(jobs.code, 0, "{}", jobs.stderr);
    assert!(jobs.stdout.contains("STATE"), "{}", jobs.stdout);
}
