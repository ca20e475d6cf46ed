//! An S3 endpoint that does not keep S3's promises about conditional writes, for the
//! one thing SeaweedFS cannot show: what `archive init` says about such a store.
//!
//! It answers the requests `archive init` makes as an S3 server of that kind does: a
//! bucket listing (empty), `PUT` (always stored, with an `ETag`), `DELETE`. How it
//! treats the conditions is its [`Laxity`]: some stores ignore `If-None-Match` on a
//! `PUT`, others answer `If-Match` there with `501 NotImplemented`, S3's code for a
//! header it does not implement. It checks no signature: it is never given a real
//! secret.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// Which condition the endpoint does not honour.
#[derive(Clone, Copy, Debug)]
pub enum Laxity {
    /// Every `PUT` is stored, `If-None-Match: *` or not.
    IgnoresIfNoneMatch,
    /// `If-None-Match: *` is honoured (412); a `PUT` with `If-Match` gets 501.
    IfMatchNotImplemented,
}

/// A running endpoint on a free loopback port; it stops with the test process.
pub struct LaxS3 {
    pub endpoint: String,
}

impl LaxS3 {
    pub fn start(laxity: Laxity) -> LaxS3 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let stored = Arc::new(Mutex::new(HashSet::new()));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let stored = stored.clone();
                std::thread::spawn(move || serve(stream, laxity, &stored));
            }
        });
        LaxS3 { endpoint }
    }
}

/// One request line, its headers and its body.
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn serve(stream: TcpStream, laxity: Laxity, stored: &Mutex<HashSet<String>>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    while let Some(request) = read_request(&mut reader) {
        let (status, headers, body) = answer(&request, laxity, stored);
        let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let body = if request.method == "HEAD" {
            &[][..]
        } else {
            &body[..]
        };
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(body).is_err() {
            return;
        }
    }
}

fn read_request(reader: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut words = line.split_whitespace();
    let method = words.next()?.to_string();
    let target = words.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let request = Request {
        method,
        target,
        headers,
    };
    let length: usize = request
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(request)
}

type Answer = (&'static str, Vec<(&'static str, String)>, Vec<u8>);

fn answer(request: &Request, laxity: Laxity, stored: &Mutex<HashSet<String>>) -> Answer {
    let key = request.target.split('?').next().unwrap_or("").to_string();
    let etag = || vec![("ETag", format!("\"{:032x}\"", key.len()))];
    match request.method.as_str() {
        "GET" if request.target.contains("list-type=2") => (
            "200 OK",
            vec![("Content-Type", "application/xml".into())],
            br#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>lax</Name><Prefix></Prefix><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>"#
                .to_vec(),
        ),
        "PUT" if request.header("if-match").is_some() => match laxity {
            Laxity::IfMatchNotImplemented => error(
                "501 Not Implemented",
                "NotImplemented",
                "A header you provided implies functionality that is not implemented",
            ),
            Laxity::IgnoresIfNoneMatch => ("200 OK", etag(), Vec::new()),
        },
        "PUT" => {
            let created = stored.lock().expect("lock").insert(key.clone());
            let conditional = request.header("if-none-match") == Some("*");
            match laxity {
                Laxity::IfMatchNotImplemented if conditional && !created => error(
                    "412 Precondition Failed",
                    "PreconditionFailed",
                    "At least one of the pre-conditions you specified did not hold",
                ),
                _ => ("200 OK", etag(), Vec::new()),
            }
        }
        "DELETE" => {
            stored.lock().expect("lock").remove(&key);
            ("204 No Content", Vec::new(), Vec::new())
        }
        _ => error(
            "404 Not Found",
            "NoSuchKey",
            "The specified key does not exist.",
        ),
    }
}

fn error(status: &'static str, code: &str, message: &str) -> Answer {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    (
        status,
        vec![("Content-Type", "application/xml".into())],
        body.into_bytes(),
    )
}
