//! A minimal, test-only HTTP/1.1 server that bridges requests to `git http-backend` (CGI).
//!
//! It requires one exact `Authorization` header (401 with a Basic challenge otherwise), answers
//! 403 below `/forbidden/`, 429 with `Retry-After: 7` below `/limited/`, reads
//! `Content-Length` and chunked request bodies, passes `Content-Encoding` and `Git-Protocol` on
//! to the CGI, streams one response per connection (`Connection: close`, close-delimited body),
//! and counts requests.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    thread,
};

const HTTP_BACKEND: &str = "/usr/lib/git-core/git-http-backend";

#[derive(Default)]
struct Stats {
    requests: AtomicUsize,
    fetch_commands: AtomicUsize,
    authorized: AtomicBool,
}

pub struct Server {
    port: u16,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
}

impl Server {
    /// Serve the repositories below `project_root`, requiring `Authorization: <auth_header>`.
    pub fn start(project_root: PathBuf, auth_header: &str) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let auth_header = auth_header.to_owned();
        {
            let stats = stats.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let stats = stats.clone();
                    let root = project_root.clone();
                    let auth = auth_header.clone();
                    thread::spawn(move || {
                        if let Err(err) = handle(stream, &root, &auth, &stats) {
                            eprintln!("test http server: {err}");
                        }
                    });
                }
            });
        }
        Server { port, stats, stop }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> usize {
        self.stats.requests.load(Ordering::Relaxed)
    }

    /// How many protocol v2 `command=fetch` requests were served.
    pub fn fetch_commands(&self) -> usize {
        self.stats.fetch_commands.load(Ordering::Relaxed)
    }

    pub fn saw_authorized_request(&self) -> bool {
        self.stats.authorized.load(Ordering::Relaxed)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn handle(
    stream: TcpStream,
    root: &std::path::Path,
    auth: &str,
    stats: &Stats,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(());
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    stats.requests.fetch_add(1, Ordering::Relaxed);

    let mut body = Vec::new();
    if let Some(len) = header("content-length") {
        let len: usize = len.parse().map_err(std::io::Error::other)?;
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line)?;
            let size_hex = size_line.trim().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(size_hex, 16).map_err(std::io::Error::other)?;
            let mut chunk = vec![0; size];
            reader.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            let mut crlf = String::new();
            reader.read_line(&mut crlf)?;
            if size == 0 {
                break;
            }
        }
    }

    if header("authorization").as_deref() != Some(auth) {
        let msg = b"authentication required\n";
        write!(
            stream,
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"test\"\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            msg.len()
        )?;
        stream.write_all(msg)?;
        return stream.flush();
    }
    stats.authorized.store(true, Ordering::Relaxed);
    if body.windows(13).any(|w| w == b"command=fetch") {
        stats.fetch_commands.fetch_add(1, Ordering::Relaxed);
    }

    let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
    if path.starts_with("/forbidden/") {
        let msg = b"forbidden\n";
        write!(
            stream,
            "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            msg.len()
        )?;
        stream.write_all(msg)?;
        return stream.flush();
    }
    if path.starts_with("/limited/") {
        let msg = b"slow down\n";
        write!(
            stream,
            "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            msg.len()
        )?;
        stream.write_all(msg)?;
        return stream.flush();
    }
    let mut cmd = Command::new(HTTP_BACKEND);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REMOTE_USER", "user")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(v) = header("content-type") {
        cmd.env("CONTENT_TYPE", v);
    }
    if let Some(v) = header("content-encoding") {
        cmd.env("HTTP_CONTENT_ENCODING", v);
    }
    if let Some(v) = header("git-protocol") {
        cmd.env("GIT_PROTOCOL", v);
    }
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let mut stderr = child.stderr.take().expect("stderr");
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // Relay the CGI response: parse its headers, then stream the body (close-delimited), so
    // large packs don't sit in this process's memory.
    let mut cgi_out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut status = "200 OK".to_owned();
    let mut response_headers = String::new();
    loop {
        let mut line = String::new();
        if cgi_out.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("status") {
                status = value.trim().to_owned();
            } else {
                response_headers.push_str(line);
                response_headers.push_str("\r\n");
            }
        }
    }
    write!(
        stream,
        "HTTP/1.1 {status}\r\n{response_headers}Connection: close\r\n\r\n"
    )?;
    let copied = std::io::copy(&mut cgi_out, &mut stream);
    let _ = writer.join();
    let _ = child.wait()?;
    let cgi_stderr = err_reader.join().unwrap_or_default();
    if !cgi_stderr.trim().is_empty() {
        eprintln!("git http-backend: {}", cgi_stderr.trim());
    }
    copied?;
    stream.flush()
}
