//! A TCP proxy in front of a real S3 server that answers the first request of every
//! other connection with `503 SlowDown`, as S3 does when a prefix is busy: what
//! "a transient 5xx is retried" is tested against. The other connections are passed
//! through byte for byte, so the client's signatures (which cover the `Host` it
//! addressed, the proxy's) still check out at the server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct FlakyProxy {
    /// `http://127.0.0.1:<port>`: give this to the client instead of the server's.
    pub endpoint: String,
    refused: Arc<AtomicUsize>,
}

impl FlakyProxy {
    /// A proxy to `upstream` (`http://host:port`) on a free loopback port; it stops
    /// with the test process.
    pub fn start(upstream: &str) -> FlakyProxy {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let refused = Arc::new(AtomicUsize::new(0));
        let counted = refused.clone();
        std::thread::spawn(move || {
            for (n, client) in listener.incoming().flatten().enumerate() {
                let upstream = upstream.clone();
                let refused = counted.clone();
                std::thread::spawn(move || {
                    if n % 2 == 0 {
                        refuse_first_request(client);
                        refused.fetch_add(1, Ordering::SeqCst);
                    } else {
                        pass_through(client, &upstream);
                    }
                });
            }
        });
        FlakyProxy { endpoint, refused }
    }

    /// How many requests were answered with 503 so far.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

/// Reads the first request whole (so the client is not cut off while it sends), then
/// answers it with 503 and closes the connection.
fn refuse_first_request(client: TcpStream) {
    let mut reader = BufReader::new(client.try_clone().expect("clone"));
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let _ = std::io::copy(
        &mut reader.by_ref().take(length as u64),
        &mut std::io::sink(),
    );
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
    let answer = format!(
        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut client = client;
    let _ = client.write_all(answer.as_bytes());
    let _ = client.shutdown(Shutdown::Both);
}

/// Copies bytes both ways between the client and the server until either side closes.
fn pass_through(client: TcpStream, upstream: &str) {
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let (mut client_in, mut server_out) = (
        client.try_clone().expect("clone"),
        server.try_clone().expect("clone"),
    );
    let upward = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_in, &mut server_out);
        let _ = server_out.shutdown(Shutdown::Write);
    });
    let (mut server_in, mut client_out) = (server, client);
    let _ = std::io::copy(&mut server_in, &mut client_out);
    let _ = client_out.shutdown(Shutdown::Write);
    let _ = upward.join();
}
