//! Runs the real `git http-backend` as a CGI program for one HTTP request, streaming in
//! both directions.
//!
//! * The request body is copied frame by frame from hyper into the CGI's stdin by a
//!   separate task (so a large push never sits in memory, and the CGI can start answering
//!   before its input ends). Gzip-encoded bodies are passed through untouched with
//!   `HTTP_CONTENT_ENCODING` set: http-backend inflates them itself.
//! * The CGI's stdout is read until the blank line that ends its headers; `Status:` becomes
//!   the HTTP status and the other headers are copied. The rest of stdout is then forwarded
//!   in 64 KiB chunks through a bounded channel ([`ChannelBody`]), so a pack of hundreds of
//!   megabytes is never held in memory and a slow client slows the CGI down.
//! * If the client goes away, the CGI is killed; its stderr is echoed to our stderr (test
//!   output) for diagnosis.

use std::io;
use std::path::PathBuf;
use std::process::Stdio;

use bytes::BytesMut;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::httputil::{self, Body, ChannelBody};

/// Where the real backend lives on Debian/Ubuntu.
pub const GIT_HTTP_BACKEND: &str = "/usr/lib/git-core/git-http-backend";

const MAX_HEADER_BYTES: usize = 64 * 1024;
const CHUNK: usize = 64 * 1024;

/// Everything the CGI environment is built from.
#[derive(Debug, Clone, Default)]
pub struct CgiRequest {
    /// `GIT_PROJECT_ROOT`: the directory that `path_info` is resolved against.
    pub project_root: PathBuf,
    /// `PATH_INFO`, e.g. `/repo.git/info/refs` (already percent-decoded).
    pub path_info: String,
    /// `REQUEST_METHOD`.
    pub method: String,
    /// `QUERY_STRING` (raw, without `?`).
    pub query: String,
    pub content_type: Option<String>,
    pub content_length: Option<u64>,
    /// `HTTP_CONTENT_ENCODING` (`gzip` when the git client compressed the body).
    pub content_encoding: Option<String>,
    /// `GIT_PROTOCOL` from the `Git-Protocol` request header (`version=2`).
    pub git_protocol: Option<String>,
    pub remote_user: Option<String>,
    pub remote_addr: String,
    /// `HOME` for the CGI (an empty directory, so no user config is read).
    pub home: PathBuf,
}

/// Runs `git http-backend` for `req`, feeding it `body`, and returns the response whose
/// body streams the CGI's output. Errors starting the process or reading its headers are
/// returned as a 502 response.
pub async fn run_git_http_backend(req: CgiRequest, body: Incoming) -> Response<Body> {
    match run(req, body).await {
        Ok(resp) => resp,
        Err(e) => {
            eprintln!("[testkit] git http-backend failed: {e}");
            let mut r = Response::new(httputil::full(format!("git http-backend failed: {e}\n")));
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            r
        }
    }
}

/// Whether a git request (path segments after the repository, and the query) is part of a
/// push: `info/refs?service=git-receive-pack` or `git-receive-pack`.
pub fn is_receive_pack(rest: &[String], query: &str) -> bool {
    rest.last().is_some_and(|last| last == "git-receive-pack")
        || (rest.last().is_some_and(|last| last == "refs")
            && query.split('&').any(|p| p == "service=git-receive-pack"))
}

async fn run(req: CgiRequest, body: Incoming) -> io::Result<Response<Body>> {
    let mut cmd = Command::new(GIT_HTTP_BACKEND);
    cmd.env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("HOME", &req.home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("LC_ALL", "C")
        .env("GIT_CONFIG_COUNT", "2")
        .env("GIT_CONFIG_KEY_0", "core.fsync")
        .env("GIT_CONFIG_VALUE_0", "none")
        // Pushing is allowed explicitly (http-backend's default also needs REMOTE_USER);
        // the doubles answer 403 themselves to credentials that may not write.
        .env("GIT_CONFIG_KEY_1", "http.receivepack")
        .env("GIT_CONFIG_VALUE_1", "true")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("SERVER_SOFTWARE", "reposafe-testkit")
        .env("GIT_PROJECT_ROOT", &req.project_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", &req.path_info)
        .env("REQUEST_METHOD", &req.method)
        .env("QUERY_STRING", &req.query)
        .env("REMOTE_ADDR", &req.remote_addr)
        .current_dir(&req.project_root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(v) = &req.content_type {
        cmd.env("CONTENT_TYPE", v);
    }
    if let Some(v) = req.content_length {
        cmd.env("CONTENT_LENGTH", v.to_string());
    }
    if let Some(v) = &req.content_encoding {
        cmd.env("HTTP_CONTENT_ENCODING", v);
    }
    if let Some(v) = &req.git_protocol {
        cmd.env("GIT_PROTOCOL", v);
    }
    if let Some(v) = &req.remote_user {
        cmd.env("REMOTE_USER", v);
        cmd.env("AUTH_TYPE", "Basic");
    }
    let mut child = cmd.spawn()?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| io::Error::other("no stdin"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no stdout"))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| io::Error::other("no stderr"))?;

    // Request body -> CGI stdin, concurrently with reading the CGI's output.
    tokio::spawn(async move {
        let mut body = body;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        if stdin.write_all(&data).await.is_err() {
                            break; // the CGI stopped reading (finished or failed)
                        }
                    }
                }
                Err(_) => break, // client aborted the upload
            }
        }
        let _ = stdin.shutdown().await;
        drop(stdin);
    });

    // CGI stderr -> test output.
    let path_info = req.path_info.clone();
    tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf).await;
        if !buf.is_empty() {
            eprintln!(
                "[testkit] git http-backend {path_info}: {}",
                String::from_utf8_lossy(&buf).trim_end()
            );
        }
    });

    // CGI headers.
    let mut reader = BufReader::with_capacity(CHUNK, stdout);
    let mut status = StatusCode::OK;
    let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::new();
    let mut header_bytes = 0usize;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "CGI exited before ending its headers",
            ));
        }
        header_bytes += n;
        if header_bytes > MAX_HEADER_BYTES {
            return Err(io::Error::other("CGI headers too large"));
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            break;
        }
        let Some((name, value)) = text.split_once(':') else {
            return Err(io::Error::other(format!("bad CGI header line {text:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("");
            status = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| io::Error::other(format!("bad CGI status {value:?}")))?;
        } else if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            if n == hyper::header::LOCATION && status == StatusCode::OK {
                status = StatusCode::FOUND;
            }
            headers.push((n, v));
        }
    }

    // CGI body -> client, chunk by chunk with back-pressure.
    let (tx, body) = ChannelBody::new(4);
    tokio::spawn(async move {
        let mut client_gone = false;
        loop {
            let mut buf = BytesMut::with_capacity(CHUNK);
            match reader.read_buf(&mut buf).await {
                Ok(0) => break,
                Ok(_) => {
                    if tx.send(Ok(buf.freeze())).await.is_err() {
                        client_gone = true;
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    break;
                }
            }
        }
        drop(tx);
        if client_gone {
            let _ = child.start_kill();
        }
        let _ = child.wait().await;
    });

    let mut resp = Response::new(body.boxed());
    *resp.status_mut() = status;
    for (n, v) in headers {
        resp.headers_mut().append(n, v);
    }
    Ok(resp)
}
