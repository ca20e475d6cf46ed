//! The daemon's listener, hardened against clients that hold resources: at most
//! `max_connections` connections at once (more wait in the kernel's backlog), an
//! `accept` error backs off instead of spinning, the TLS handshake must finish
//! within the timeout, request headers must arrive within it (which also ends an
//! idle keep-alive connection), a request body within it (`Api::body_timeout`),
//! and a client that stops reading its answer is cut off after it.

use super::Api;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// How long to wait after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The listener's limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// TLS handshake, request headers (and keep-alive idle time), request body,
    /// and a stalled write each get this long. Default 30 s.
    pub timeout: Duration,
    /// Connections served at once. Default 256.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            timeout: Duration::from_secs(30),
            max_connections: 256,
        }
    }
}

impl Limits {
    /// Test knob: the timeout in milliseconds (not a user setting).
    pub const TIMEOUT_ENV: &'static str = "REPOSAFE_HTTP_TIMEOUT_MS";

    /// The defaults, with the timeout from [`Limits::TIMEOUT_ENV`] when set.
    pub fn from_env() -> Limits {
        let mut limits = Limits::default();
        if let Some(ms) = std::env::var(Self::TIMEOUT_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|ms| *ms > 0)
        {
            limits.timeout = Duration::from_millis(ms);
        }
        limits
    }
}

/// Serves `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    api: Arc<Api>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("accept failed: {e}; retrying in {} ms", ACCEPT_BACKOFF.as_millis());
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        tokio::spawn(connection(
            stream,
            acceptor.clone(),
            api.clone(),
            limits.clone(),
            permit,
        ));
    }
}

/// One connection, holding its slot until it ends.
async fn connection(
    stream: TcpStream,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    api: Arc<Api>,
    limits: Limits,
    _slot: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let io = Stall::new(stream, limits.timeout);
    match acceptor {
        Some(a) => match tokio::time::timeout(limits.timeout, a.accept(io)).await {
            Ok(Ok(tls)) => http(TokioIo::new(tls), api, &limits).await,
            Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
            Err(_) => tracing::debug!(
                "TLS handshake not finished within {} ms; connection closed",
                limits.timeout.as_millis()
            ),
        },
        None => http(TokioIo::new(io), api, &limits).await,
    }
}

async fn http<I>(io: I, api: Arc<Api>, limits: &Limits)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| super::handle(api.clone(), req));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.timeout)
        .keep_alive(true);
    if let Err(e) = builder.serve_connection(io, svc).await {
        tracing::debug!("connection ended: {e}");
    }
}

/// A stream whose writes fail once they have been blocked (the client not
/// reading) for longer than the limit.
struct Stall<T> {
    io: T,
    limit: Duration,
    blocked: Option<Pin<Box<Sleep>>>,
}

impl<T> Stall<T> {
    fn new(io: T, limit: Duration) -> Stall<T> {
        Stall {
            io,
            limit,
            blocked: None,
        }
    }

    /// After a write answered `Pending`: an error once the limit has passed.
    fn blocked<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        let limit = self.limit;
        let timer = self
            .blocked
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client read nothing for {} ms; connection closed",
                    limit.as_millis()
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn track<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match r {
            Poll::Pending => self.blocked(cx),
            ready => {
                self.blocked = None;
                ready
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Stall<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stall<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.track(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.track(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.track(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_shutdown(cx);
        self.track(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A peer that never reads: the write fails after the limit instead of
    /// hanging; a peer that reads keeps the stream alive.
    #[test]
    fn a_blocked_write_fails_after_the_limit() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (a, _peer) = tokio::io::duplex(64);
            let mut s = Stall::new(a, Duration::from_millis(100));
            let started = std::time::Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(5), s.write_all(&[0u8; 4096])).await;
            let err = r.expect("cut off, not hanging").expect_err("write fails");
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
            assert!(started.elapsed() < Duration::from_secs(2));

            let (a, mut peer) = tokio::io::duplex(64);
            let reader = tokio::spawn(async move {
                let mut sink = Vec::new();
                tokio::io::AsyncReadExt::read_to_end(&mut peer, &mut sink)
                    .await
                    .map(|_| sink.len())
            });
            let mut s = Stall::new(a, Duration::from_millis(100));
            s.write_all(&[1u8; 4096]).await.expect("write to a reader");
            s.shutdown().await.expect("shutdown");
            drop(s);
            assert_eq!(reader.await.expect("join").expect("read"), 4096);
        });
    }
}
