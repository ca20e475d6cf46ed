//! An HTTP proxy in front of a real S3 server that answers every fourth request with
//! `503 SlowDown`, as S3 does when a prefix is busy: what "a transient 5xx is retried"
//! is tested against; or ([`FlakyProxy::slow_uplink`]) one that takes request bodies
//! no faster than a slow office uplink sends them; or
//! ([`FlakyProxy::losing_create_answers`]) one that loses the answer to the first
//! create-only PUT (`If-None-Match: *`) of each object, after the server made it; or
//! ([`FlakyProxy::passing`]) one that passes everything until told the store is down
//! ([`FlakyProxy::set_down`]: every connection is closed unanswered). Every other request goes to the
//! server unchanged, on one server connection per client connection, so the client's
//! signatures (which cover the `Host` it addressed, the proxy's) still check out there.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Requests seen, and those answered with 503 by method.
#[derive(Default)]
struct Tally {
    requests: AtomicUsize,
    refused: Mutex<HashMap<String, usize>>,
    /// Answer every fourth request with 503.
    refuses: bool,
    /// Request bodies are read at most this fast (bytes a second).
    uplink: Option<u64>,
    /// The longest time a request's body took to arrive.
    slowest_body: Mutex<std::time::Duration>,
    /// Lose the answer to the first create-only PUT of each object.
    loses_create_answers: bool,
    /// The request targets whose create answers were lost.
    lost: Mutex<std::collections::HashSet<String>>,
    /// How long every answer is held back before it is sent.
    answer_delay: Mutex<std::time::Duration>,
    /// The store is down: every connection is closed without an answer.
    down: std::sync::atomic::AtomicBool,
}

pub struct FlakyProxy {
    /// `http://127.0.0.1:<port>`: give this to the client instead of the server's.
    pub endpoint: String,
    tally: Arc<Tally>,
}

impl FlakyProxy {
    /// A proxy to `upstream` (`http://host:port`) on a free loopback port; it stops
    /// with the test process.
    pub fn start(upstream: &str) -> FlakyProxy {
        Self::with(
            upstream,
            Tally {
                refuses: true,
                ..Tally::default()
            },
        )
    }

    /// A proxy to `upstream` that refuses nothing but reads request bodies at most
    /// `bytes_per_sec` fast, as a slow uplink sends them.
    pub fn slow_uplink(upstream: &str, bytes_per_sec: u64) -> FlakyProxy {
        Self::with(
            upstream,
            Tally {
                uplink: Some(bytes_per_sec),
                ..Tally::default()
            },
        )
    }

    /// A proxy to `upstream` that sends the first create-only PUT (`If-None-Match: *`)
    /// of each object to the server and then answers the client `503 SlowDown`, as
    /// when a connection breaks after the server acted: the client's retry then meets
    /// its own write (`412`).
    pub fn losing_create_answers(upstream: &str) -> FlakyProxy {
        Self::with(
            upstream,
            Tally {
                loses_create_answers: true,
                ..Tally::default()
            },
        )
    }

    /// A proxy to `upstream` that passes every request, until [`FlakyProxy::set_down`].
    pub fn passing(upstream: &str) -> FlakyProxy {
        Self::with(upstream, Tally::default())
    }

    /// From now on, closes every connection (and each one open) without an answer, as
    /// a store that went down (`true`); or passes requests again (`false`).
    pub fn set_down(&self, down: bool) {
        self.tally.down.store(down, Ordering::SeqCst);
    }

    fn with(upstream: &str, tally: Tally) -> FlakyProxy {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let tally = Arc::new(tally);
        let shared = tally.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let upstream = upstream.clone();
                let tally = shared.clone();
                std::thread::spawn(move || serve(client, &upstream, &tally));
            }
        });
        FlakyProxy { endpoint, tally }
    }

    /// How many requests of `method` were answered with 503 so far.
    pub fn refused(&self, method: &str) -> usize {
        let refused = self.tally.refused.lock().expect("lock");
        refused.get(method).copied().unwrap_or(0)
    }

    /// From now on, holds every answer back `delay` before sending it (a store slow to
    /// answer).
    pub fn delay_answers(&self, delay: std::time::Duration) {
        *self.tally.answer_delay.lock().expect("lock") = delay;
    }

    /// The objects whose create answers were lost so far (their request targets).
    pub fn lost_answers(&self) -> Vec<String> {
        let lost = self.tally.lost.lock().expect("lock");
        lost.iter().cloned().collect()
    }

    /// The longest time one request's body took to arrive so far.
    pub fn slowest_body(&self) -> std::time::Duration {
        *self.tally.slowest_body.lock().expect("lock")
    }
}

/// A request or response head: its first line and headers, as received.
struct Head {
    raw: Vec<u8>,
    first_line: String,
    content_length: Option<u64>,
    chunked: bool,
    /// `Connection: close`: the sender closes after this message.
    closes: bool,
    /// `If-None-Match: *`: a create-only write.
    create_only: bool,
}

fn read_head(reader: &mut impl BufRead) -> Option<Head> {
    let mut raw = Vec::new();
    let mut first_line = String::new();
    let (mut content_length, mut chunked, mut closes) = (None, false, false);
    let mut create_only = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        raw.extend_from_slice(line.as_bytes());
        let text = line.trim_end();
        if first_line.is_empty() {
            first_line = text.to_string();
            continue;
        }
        if text.is_empty() {
            break;
        }
        let (name, value) = text.split_once(':')?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "content-length" {
            content_length = value.parse().ok();
        }
        if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
        if name == "connection" && value.eq_ignore_ascii_case("close") {
            closes = true;
        }
        if name == "if-none-match" && value == "*" {
            create_only = true;
        }
    }
    Some(Head {
        raw,
        first_line,
        content_length,
        chunked,
        closes,
        create_only,
    })
}

/// The body that follows `head`, as received (chunked bodies with their framing), read
/// at most `rate` bytes a second.
fn read_body(reader: &mut impl BufRead, head: &Head, rate: Option<u64>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    if head.chunked {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line).ok()?;
            body.extend_from_slice(size_line.as_bytes());
            let size = u64::from_str_radix(size_line.trim().split(';').next()?, 16).ok()?;
            // The chunk and its CRLF; the last (empty) chunk's trailer ends with a CRLF.
            let mut chunk = Vec::new();
            reader.take(size + 2).read_to_end(&mut chunk).ok()?;
            body.extend_from_slice(&chunk);
            if size == 0 {
                return Some(body);
            }
        }
    }
    let length = head.content_length.unwrap_or(0);
    let Some(rate) = rate else {
        reader.take(length).read_to_end(&mut body).ok()?;
        return Some(body);
    };
    let start = std::time::Instant::now();
    while (body.len() as u64) < length {
        let step = (length - body.len() as u64).min(16 << 10);
        reader.take(step).read_to_end(&mut body).ok()?;
        let due = std::time::Duration::from_secs_f64(body.len() as f64 / rate as f64);
        std::thread::sleep(due.saturating_sub(start.elapsed()));
    }
    Some(body)
}

fn serve(client: TcpStream, upstream: &str, tally: &Tally) {
    let mut from_client = BufReader::new(client.try_clone().expect("clone"));
    let mut to_client = client;
    let mut server: Option<(BufReader<TcpStream>, TcpStream)> = None;
    while let Some(request) = read_head(&mut from_client) {
        if tally.down.load(Ordering::SeqCst) {
            break;
        }
        let started = std::time::Instant::now();
        let Some(body) = read_body(&mut from_client, &request, tally.uplink) else {
            break;
        };
        let took = started.elapsed();
        let mut slowest = tally.slowest_body.lock().expect("lock");
        *slowest = (*slowest).max(took);
        drop(slowest);
        let method = request
            .first_line
            .split(' ')
            .next()
            .unwrap_or("")
            .to_string();
        let target = request
            .first_line
            .split(' ')
            .nth(1)
            .unwrap_or("")
            .to_string();
        let loses_answer = tally.loses_create_answers
            && method == "PUT"
            && request.create_only
            && tally.lost.lock().expect("lock").insert(target);
        let answer = if tally.requests.fetch_add(1, Ordering::SeqCst) % 4 == 3 && tally.refuses {
            *tally
                .refused
                .lock()
                .expect("lock")
                .entry(method)
                .or_default() += 1;
            slow_down()
        } else {
            // A server connection that closed (idle, or after `Connection: close`) is
            // opened again, and the request sent once more: it never reached the server.
            let mut answer = None;
            for _ in 0..2 {
                let Some((from_server, to_server)) = connected(&mut server, upstream) else {
                    break;
                };
                match forward(from_server, to_server, &request, &body, &method) {
                    Some((bytes, closes)) => {
                        if closes {
                            server = None;
                        }
                        answer = Some(bytes);
                        break;
                    }
                    None => server = None,
                }
            }
            match answer {
                Some(_) if loses_answer => slow_down(),
                Some(answer) => answer,
                None => break,
            }
        };
        let delay = *tally.answer_delay.lock().expect("lock");
        std::thread::sleep(delay);
        if to_client.write_all(&answer).is_err() {
            break;
        }
    }
    let _ = to_client.shutdown(Shutdown::Both);
}

/// The connection to the server, opened when there is none.
fn connected<'a>(
    server: &'a mut Option<(BufReader<TcpStream>, TcpStream)>,
    upstream: &str,
) -> Option<&'a mut (BufReader<TcpStream>, TcpStream)> {
    if server.is_none() {
        let stream = TcpStream::connect(upstream).ok()?;
        let reader = BufReader::new(stream.try_clone().ok()?);
        *server = Some((reader, stream));
    }
    server.as_mut()
}

/// Sends one request to the server and reads its whole answer; whether the server
/// closes the connection after it.
fn forward(
    from_server: &mut BufReader<TcpStream>,
    to_server: &mut TcpStream,
    request: &Head,
    body: &[u8],
    method: &str,
) -> Option<(Vec<u8>, bool)> {
    to_server.write_all(&request.raw).ok()?;
    to_server.write_all(body).ok()?;
    let response = read_head(from_server)?;
    let status = response.first_line.split(' ').nth(1).unwrap_or("");
    let bodiless = method == "HEAD" || matches!(status, "204" | "304") || status.starts_with('1');
    let mut answer = response.raw.clone();
    if !bodiless {
        answer.extend(read_body(from_server, &response, None)?);
    }
    Some((answer, response.closes))
}

fn slow_down() -> Vec<u8> {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
    format!(
        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
