//! `reposafe serve`: the README's first quick-start command starts, answers
//! `/healthz` and the status page on loopback, and refuses non-loopback addresses.

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

#[test]
fn serve_answers_health_and_status_and_refuses_public_addresses() {
    let rs = Reposafe::new();
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut child = rs
        .cmd(&["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
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
    let status = get(port, "/").unwrap_or_default();
    let missing = get(port, "/nope").unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"ok\""), "{health}");
    assert!(
        status.starts_with("HTTP/1.1 200") && status.contains("<h1>reposafe</h1>"),
        "{status}"
    );
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");

    let refused = rs.run(&["serve", "--listen", "0.0.0.0:8720"]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("loopback"), "{}", refused.stderr);
}
