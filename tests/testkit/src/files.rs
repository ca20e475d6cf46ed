//! The file origin of the doubles: where Bitbucket Cloud's issue attachments and
//! repository downloads really live. The API's `links.self.href` of an attachment or a
//! download answers `302 Found` with a `Location` on this SECOND origin (another port), a
//! pre-signed URL like Bitbucket's `bbuseruploads.s3.amazonaws.com` ones: the signature is
//! in the query, and a request that ALSO carries an `Authorization` header (the git/API
//! credential a careless client forwards across the redirect) is refused with `400` and
//! S3's message, so a client that leaks its credential to the storage host fails the test.
//!
//! [`FileOrigin::downloads`] tells how many times each file was fetched (by file name).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use tokio::sync::oneshot;

use crate::httputil::{self, Body};

/// S3's answer to a pre-signed URL that also carries an `Authorization` header.
pub const TWO_AUTH_MESSAGE: &str = "InvalidArgument: Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified";

/// Files handed out by 302 redirects, and what was downloaded.
pub struct FileOrigin {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    state: Mutex<FileState>,
}

#[derive(Default)]
struct FileState {
    /// signature → (name, bytes)
    grants: BTreeMap<String, (String, Arc<Vec<u8>>)>,
    downloads: BTreeMap<String, usize>,
    refused: usize,
}

impl FileOrigin {
    fn lock(&self) -> MutexGuard<'_, FileState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Binds `127.0.0.1:0` and serves on `runtime` until `stop` fires.
    pub(crate) fn start(
        runtime: &tokio::runtime::Runtime,
        stop: oneshot::Receiver<()>,
    ) -> Arc<FileOrigin> {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 (files)");
        listener.set_nonblocking(true).expect("set_nonblocking");
        let addr = listener.local_addr().expect("local_addr");
        let origin = Arc::new(FileOrigin {
            base: format!("http://{addr}"),
            state: Mutex::new(FileState::default()),
        });
        let o = origin.clone();
        runtime.spawn(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => serve(l, o, stop).await,
                Err(e) => eprintln!("[testkit] cannot adopt the file origin's listener: {e}"),
            }
        });
        origin
    }

    /// A fresh pre-signed URL for `bytes` named `name`.
    pub(crate) fn presign(&self, name: &str, bytes: Arc<Vec<u8>>) -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(1);
        let sig = format!("{:016x}", COUNTER.fetch_add(1, Ordering::Relaxed));
        self.lock()
            .grants
            .insert(sig.clone(), (name.to_string(), bytes));
        format!(
            "{}/files/{}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=3600&X-Amz-Signature={sig}",
            self.base,
            httputil::percent_encode(name)
        )
    }

    /// How many times each file was downloaded, by name.
    pub fn downloads(&self) -> BTreeMap<String, usize> {
        self.lock().downloads.clone()
    }

    /// How many requests were refused because they carried an `Authorization` header.
    pub fn refused_with_credentials(&self) -> usize {
        self.lock().refused
    }

    fn answer(&self, req: &Request<Incoming>) -> Response<Body> {
        let sig = req
            .uri()
            .query()
            .and_then(httputil::parse_form)
            .and_then(|q| q.into_iter().find(|(k, _)| k == "X-Amz-Signature"))
            .map(|(_, v)| v)
            .unwrap_or_default();
        let mut st = self.lock();
        if req.headers().contains_key(AUTHORIZATION) {
            st.refused += 1;
            return text(StatusCode::BAD_REQUEST, TWO_AUTH_MESSAGE);
        }
        let Some((name, bytes)) = st.grants.get(&sig).cloned() else {
            return text(StatusCode::FORBIDDEN, "AccessDenied: Request has expired");
        };
        *st.downloads.entry(name).or_default() += 1;
        let mut r = Response::new(httputil::full(Bytes::from(bytes.to_vec())));
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        r
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    origin: Arc<FileOrigin>,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let stream = tokio::select! {
            _ = &mut stop => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
        };
        let origin = origin.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let origin = origin.clone();
                async move { Ok::<_, Infallible>(origin.answer(&req)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(io, svc)
                .await;
        });
    }
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(httputil::full(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    r
}
