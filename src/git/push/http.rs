//! The two HTTP requests of a push: the receive-pack ref advertisement (GET) and the
//! streamed pack upload (POST), with fetch's client settings, and their failures as
//! [`GitError`]s.

use std::{
    io::{self, BufRead, BufReader, Read},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc,
    },
    time::Duration,
};

use secrecy::{ExposeSecret as _, SecretString};

use super::{pack, report, PushOptions, RemoteRefs};
use crate::git::{
    fetch::http_client,
    url::{self, RemoteUrl},
    GitAuth, GitError, Pacer,
};

/// How long the server may take to answer the advertisement.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(180);
/// The slowest upload a push waits for (the POST's time-out grows with the pack).
const SLOWEST_UPLOAD: u64 = 128 << 10;
/// Bytes per chunk handed from the pack writer to the request body.
const CHUNK: usize = 256 << 10;

/// One push's (or advertisement's) connection to its remote.
pub(super) struct Session<'a> {
    pub remote: RemoteUrl,
    auth: Option<SecretString>,
    pacer: Option<&'a Pacer>,
    client: reqwest::blocking::Client,
    opts: &'a PushOptions<'a>,
}

/// Reads the receive-pack ref advertisement of `opts.url`.
pub fn advertised_refs(opts: &PushOptions) -> Result<RemoteRefs, GitError> {
    let session = Session::new(opts)?;
    let url = format!("{}/info/refs?service=git-receive-pack", session.base());
    let mut request = reqwest::blocking::Request::new(reqwest::Method::GET, session.parse(&url)?);
    *request.timeout_mut() = Some(ANSWER_TIMEOUT);
    let answer = session.execute(request)?;
    let content_type = answer
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if content_type != "application/x-git-receive-pack-advertisement" {
        return Err(GitError::Transport {
            url: session.remote.display.clone(),
            message: format!(
                "the server did not answer as a smart-HTTP git server (content type {content_type:?}); \
                 check the URL"
            ),
        });
    }
    report::parse_advertisement(BufReader::new(answer), &session.remote.display)
}

impl<'a> Session<'a> {
    pub fn new(opts: &'a PushOptions<'a>) -> Result<Session<'a>, GitError> {
        let remote = url::parse(opts.url)?;
        if !remote.is_http {
            return Err(GitError::InvalidUrl {
                url: remote.display.clone(),
                message: "pushing needs an http:// or https:// URL".into(),
            });
        }
        let (auth, pacer) = match opts.auth {
            GitAuth::Header(value) => (Some(value.clone()), None),
            GitAuth::Paced {
                header,
                before_request,
            } => (Some(header.clone()), Some(before_request)),
            GitAuth::None => (remote.basic_auth.clone(), None),
        };
        if let Some(value) = &auth {
            crate::git::fetch::validate_header_value(value, &remote.display)?;
        }
        let client = http_client(&remote, auth.is_some(), opts.tls, None)?;
        Ok(Session {
            remote,
            auth,
            pacer,
            client,
            opts,
        })
    }

    fn base(&self) -> &str {
        self.remote.for_transport.trim_end_matches('/')
    }

    fn parse(&self, url: &str) -> Result<reqwest::Url, GitError> {
        reqwest::Url::parse(url).map_err(|err| GitError::InvalidUrl {
            url: self.remote.display.clone(),
            message: err.to_string(),
        })
    }

    pub fn interrupted(&self) -> GitError {
        GitError::PushInterrupted {
            url: self.remote.display.clone(),
        }
    }

    /// The error for a failure while reading or merging the snapshot's packs.
    pub fn pack_failure(&self, err: pack::PlanError) -> GitError {
        match err {
            pack::PlanError::Interrupted => self.interrupted(),
            pack::PlanError::Pack { index, message } => GitError::InvalidPack { index, message },
            pack::PlanError::Io { action, source } => GitError::Io {
                action,
                path: std::env::temp_dir(),
                source,
            },
        }
    }

    /// Sends `request` (paced, with the credential) and returns a success answer.
    fn execute(
        &self,
        mut request: reqwest::blocking::Request,
    ) -> Result<reqwest::blocking::Response, GitError> {
        if let Some(pacer) = self.pacer {
            (pacer.0)();
        }
        if let Some(auth) = &self.auth {
            let mut value =
                reqwest::header::HeaderValue::from_str(auth.expose_secret()).map_err(|_| {
                    GitError::InvalidAuth {
                        url: self.remote.display.clone(),
                    }
                })?;
            value.set_sensitive(true);
            request
                .headers_mut()
                .insert(reqwest::header::AUTHORIZATION, value);
        }
        let user_agent = format!("git/2.0 (reposafe/{})", env!("CARGO_PKG_VERSION"));
        if let Ok(value) = reqwest::header::HeaderValue::from_str(&user_agent) {
            request
                .headers_mut()
                .insert(reqwest::header::USER_AGENT, value);
        }
        let answer = self.client.execute(request).map_err(|err| {
            if self.opts.should_interrupt.load(Ordering::Relaxed) {
                return self.interrupted();
            }
            self.transport(&err)
        })?;
        self.check_status(answer)
    }

    fn transport(&self, err: &(dyn std::error::Error + 'static)) -> GitError {
        let mut message = err.to_string();
        let mut source = err.source();
        while let Some(inner) = source {
            let text = inner.to_string();
            if !message.ends_with(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = inner.source();
        }
        if let Some(auth) = &self.auth {
            message = message.replace(auth.expose_secret(), "[REDACTED]");
        }
        let url = self.remote.display.clone();
        if crate::tls::is_certificate_text(&message) {
            let message = match self.opts.tls {
                Some(tls) => tls.describe_failure(&message),
                None => format!("TLS certificate problem: {message}"),
            };
            return GitError::Certificate { url, message };
        }
        GitError::Transport { url, message }
    }

    fn check_status(
        &self,
        answer: reqwest::blocking::Response,
    ) -> Result<reqwest::blocking::Response, GitError> {
        let status = answer.status();
        let url = self.remote.display.clone();
        match status.as_u16() {
            200..=299 => Ok(answer),
            401 => Err(GitError::Unauthorized { url }),
            403 => Err(GitError::PushForbidden { url }),
            404 | 410 => Err(GitError::NotFound { url }),
            429 => Err(GitError::RateLimited {
                url,
                retry_after: answer
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            }),
            _ => {
                let mut body = String::new();
                let _ = answer.take(512).read_to_string(&mut body);
                let body = body.trim();
                Err(GitError::Transport {
                    url,
                    message: if body.is_empty() {
                        format!("the server answered HTTP status {}", status.as_u16())
                    } else {
                        format!(
                            "the server answered HTTP status {}: {body}",
                            status.as_u16()
                        )
                    },
                })
            }
        }
    }

    /// POSTs a lone flush packet (no commands: receive-pack does nothing), as git does before
    /// a large push: a credential that may not push is refused here, before the pack is
    /// sent (a server answering 403 to the real POST stops reading its body, and the
    /// client then sees a broken connection instead of the status).
    pub fn probe(&self) -> Result<(), GitError> {
        let url = self.parse(&format!("{}/git-receive-pack", self.base()))?;
        let mut request = reqwest::blocking::Request::new(reqwest::Method::POST, url);
        *request.body_mut() = Some(reqwest::blocking::Body::from(b"0000".to_vec()));
        *request.timeout_mut() = Some(ANSWER_TIMEOUT);
        set_rpc_headers(request.headers_mut());
        let mut answer = self.execute(request)?;
        io::copy(&mut answer, &mut io::sink()).map_err(|err| self.transport(&err))?;
        Ok(())
    }

    /// POSTs `commands` and the pack of `plan` as one streamed body; returns the answer.
    pub fn send_pack(
        &self,
        commands: Vec<u8>,
        plan: &pack::Plan,
        opts: &PushOptions,
    ) -> Result<Box<dyn BufRead + Send>, GitError> {
        let url = self.parse(&format!("{}/git-receive-pack", self.base()))?;
        let total = commands.len() as u64 + plan.len();
        let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(4);
        let sent = Arc::new(AtomicU64::new(0));
        let done = AtomicBool::new(false);
        let body = ChannelReader {
            rx,
            current: io::Cursor::new(commands),
        };
        let mut request = reqwest::blocking::Request::new(reqwest::Method::POST, url);
        *request.body_mut() = Some(reqwest::blocking::Body::sized(body, total));
        *request.timeout_mut() = Some(ANSWER_TIMEOUT + Duration::from_secs(total / SLOWEST_UPLOAD));
        set_rpc_headers(request.headers_mut());
        // The pack is written on this thread (the pack source need not be `Sync`); the
        // request is sent from another one.
        let (answer, written) = std::thread::scope(|scope| {
            let sender = scope.spawn(|| self.execute(request));
            let progress = opts.progress.map(|report| {
                scope.spawn(|| {
                    while !done.load(Ordering::Relaxed) {
                        report(sent.load(Ordering::Relaxed));
                        std::thread::sleep(Duration::from_millis(200));
                    }
                })
            });
            let mut out = ChannelWriter {
                tx,
                buf: Vec::with_capacity(CHUNK),
                sent: &sent,
            };
            let written = plan
                .write(&mut out, opts.should_interrupt)
                .and_then(|()| out.finish());
            if let Err(err) = &written {
                let _ = out.tx.send(Err(io::Error::other(err.to_string())));
            }
            drop(out);
            let answer = sender.join();
            done.store(true, Ordering::Relaxed);
            if let Some(handle) = progress {
                let _ = handle.join();
            }
            (answer, written)
        });
        if let Some(report) = opts.progress {
            report(sent.load(Ordering::Relaxed));
        }
        let answer = answer.map_err(|_| GitError::Transport {
            url: self.remote.display.clone(),
            message: "the HTTP request thread panicked".into(),
        })?;
        match (answer, written) {
            (_, Err(pack::PlanError::Interrupted)) => Err(self.interrupted()),
            (_, Err(err @ pack::PlanError::Pack { .. })) => Err(self.pack_failure(err)),
            (Err(err), _) => Err(err),
            (Ok(_), Err(err)) => Err(self.pack_failure(err)),
            (Ok(answer), Ok(())) => Ok(Box::new(BufReader::with_capacity(64 << 10, answer))),
        }
    }
}

fn set_rpc_headers(headers: &mut reqwest::header::HeaderMap) {
    headers.insert(
        reqwest::header::CONTENT_TYPE,
        reqwest::header::HeaderValue::from_static("application/x-git-receive-pack-request"),
    );
    headers.insert(
        reqwest::header::ACCEPT,
        reqwest::header::HeaderValue::from_static("application/x-git-receive-pack-result"),
    );
}

/// The request body: the commands, then the chunks the pack writer sends.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    current: io::Cursor<Vec<u8>>,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => self.current = io::Cursor::new(chunk),
                Ok(Err(err)) => return Err(err),
                Err(_) => return Ok(0),
            }
        }
    }
}

/// Hands what the pack writer writes to the request body in chunks.
struct ChannelWriter<'a> {
    tx: mpsc::SyncSender<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    sent: &'a AtomicU64,
}

impl ChannelWriter<'_> {
    fn send(&mut self) -> Result<(), pack::PlanError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        let len = chunk.len() as u64;
        self.tx.send(Ok(chunk)).map_err(|_| pack::PlanError::Io {
            action: "send the pack (the connection was closed)",
            source: io::Error::from(io::ErrorKind::BrokenPipe),
        })?;
        self.sent.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    fn finish(&mut self) -> Result<(), pack::PlanError> {
        self.send()
    }
}

impl pack::Sink for ChannelWriter<'_> {
    fn put(&mut self, data: &[u8]) -> Result<(), pack::PlanError> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(())
    }
}
