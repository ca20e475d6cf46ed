//! Git LFS for the Cloud test double, the way Bitbucket Cloud serves it: the batch API at
//! `<clone url>/info/lfs/objects/batch` on the main origin (with the git credential), and
//! the objects themselves from a second origin (like Bitbucket's storage host) at the
//! `href` of each `download` action, with a `header` the client must send exactly as given
//! and without the git credential, which that origin refuses.
//!
//! Batch answers follow the git-lfs batch API: `application/vnd.git-lfs+json`, per-object
//! `actions.download` (`href`, `header`, `expires_in`) or `error` (`404` for an object the
//! repository does not have). Only `operation: download` is served.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::httputil::{self, Body};

/// The media type of every batch request and answer.
pub const LFS_MEDIA_TYPE: &str = "application/vnd.git-lfs+json";

/// How long a download `href` stays valid.
const EXPIRES_IN: Duration = Duration::from_secs(3600);

/// The name of the header each download action asks for.
const GRANT_HEADER: &str = "Authorization";

/// The LFS objects of every repository, and the downloads granted for them.
pub struct LfsStore {
    dir: PathBuf,
    /// `http://127.0.0.1:PORT` of the download origin.
    pub download_base: String,
    state: Mutex<LfsState>,
}

#[derive(Default)]
struct LfsState {
    /// (workspace, slug) → oid → file.
    objects: BTreeMap<(String, String), BTreeMap<String, PathBuf>>,
    /// download id → (file, the header value it needs, expiry).
    grants: BTreeMap<String, Grant>,
    /// Objects downloaded, by oid (what a test counts).
    downloads: BTreeMap<String, usize>,
}

struct Grant {
    oid: String,
    path: PathBuf,
    header: String,
    expires: Instant,
}

impl LfsStore {
    pub(crate) fn new(dir: &Path, download_base: String) -> LfsStore {
        LfsStore {
            dir: dir.to_path_buf(),
            download_base,
            state: Mutex::new(LfsState::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LfsState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `bytes` as an LFS object of `workspace/slug`; returns its oid (SHA-256).
    pub fn add(&self, workspace: &str, slug: &str, bytes: &[u8]) -> String {
        let oid = sha256_hex(bytes);
        let path = self.dir.join(&oid);
        std::fs::write(&path, bytes).expect("write LFS object");
        self.lock()
            .objects
            .entry((workspace.to_string(), slug.to_string()))
            .or_default()
            .insert(oid.clone(), path);
        oid
    }

    /// Removes an object from `workspace/slug` (later batches answer 404 for it).
    pub fn remove(&self, workspace: &str, slug: &str, oid: &str) {
        if let Some(objects) = self
            .lock()
            .objects
            .get_mut(&(workspace.to_string(), slug.to_string()))
        {
            objects.remove(oid);
        }
    }

    /// Makes the server send `bytes` for the object `oid` of `workspace/slug` from now on
    /// (a storage fault: the content no longer matches its oid).
    pub fn corrupt(&self, workspace: &str, slug: &str, oid: &str, bytes: &[u8]) {
        let path = self.dir.join(format!("corrupt-{oid}"));
        std::fs::write(&path, bytes).expect("write corrupt LFS object");
        self.lock()
            .objects
            .entry((workspace.to_string(), slug.to_string()))
            .or_default()
            .insert(oid.to_string(), path);
    }

    /// How many times each object was downloaded, by oid.
    pub fn downloads(&self) -> BTreeMap<String, usize> {
        self.lock().downloads.clone()
    }

    /// Answers a batch request of `workspace/slug` (the caller checked the credential).
    pub(crate) fn batch(&self, workspace: &str, slug: &str, body: &[u8]) -> Response<Body> {
        let Ok(request) = serde_json::from_slice::<Value>(body) else {
            return lfs_error(StatusCode::UNPROCESSABLE_ENTITY, "Malformed batch request");
        };
        if request["operation"] != "download" {
            return lfs_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "This test double serves operation \"download\" only",
            );
        }
        let Some(wanted) = request["objects"].as_array() else {
            return lfs_error(StatusCode::UNPROCESSABLE_ENTITY, "objects is required");
        };
        let mut st = self.lock();
        let key = (workspace.to_string(), slug.to_string());
        let mut answers = Vec::new();
        for object in wanted {
            let (oid, size) = (object["oid"].as_str().unwrap_or(""), &object["size"]);
            let found = st.objects.get(&key).and_then(|o| o.get(oid)).cloned();
            let answer = match found {
                Some(path) => {
                    let id = next_id();
                    let header = format!("RemoteAuth {id}");
                    st.grants.insert(
                        id.clone(),
                        Grant {
                            oid: oid.to_string(),
                            path,
                            header: header.clone(),
                            expires: Instant::now() + EXPIRES_IN,
                        },
                    );
                    json!({"oid": oid, "size": size, "authenticated": true, "actions": {"download": {
                        "href": format!("{}/lfs-objects/{id}?X-Amz-Expires=3600", self.download_base),
                        "header": {GRANT_HEADER: header},
                        "expires_in": EXPIRES_IN.as_secs(),
                    }}})
                }
                None => json!({"oid": oid, "size": size, "error": {
                    "code": 404, "message": "Object does not exist on the server"}}),
            };
            answers.push(answer);
        }
        lfs_json(
            StatusCode::OK,
            &json!({"transfer": "basic", "objects": answers}),
        )
    }

    /// Answers a request to the download origin.
    fn download(&self, req: &Request<Incoming>) -> Response<Body> {
        let id = req.uri().path().strip_prefix("/lfs-objects/").unwrap_or("");
        let given = req
            .headers()
            .get_all(AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>();
        let mut st = self.lock();
        let Some(grant) = st.grants.get(id) else {
            return text(StatusCode::NOT_FOUND, "NoSuchKey\n");
        };
        // Storage hosts accept one way of authenticating: the action's header. A git
        // credential sent along (Basic/Bearer) is refused, as S3 refuses a second one.
        if given != [grant.header.as_str()] {
            return text(
                StatusCode::BAD_REQUEST,
                "InvalidArgument: only the header of the download action may authenticate\n",
            );
        }
        if Instant::now() > grant.expires {
            return text(StatusCode::FORBIDDEN, "AccessDenied: Request has expired\n");
        }
        let (path, oid) = (grant.path.clone(), grant.oid.clone());
        let Ok(file) = std::fs::File::open(&path) else {
            return text(StatusCode::NOT_FOUND, "NoSuchKey\n");
        };
        *st.downloads.entry(oid).or_default() += 1;
        drop(st);
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        // Streamed from the file in chunks, as a storage host sends it: a 1 GiB object
        // is never held in memory here either.
        let (tx, body) = httputil::ChannelBody::new(8);
        tokio::task::spawn_blocking(move || {
            use std::io::Read as _;
            let mut file = file;
            loop {
                let mut chunk = vec![0u8; 256 << 10];
                let chunk = match file.read(&mut chunk) {
                    Ok(0) => return,
                    Ok(n) => {
                        chunk.truncate(n);
                        Ok(Bytes::from(chunk))
                    }
                    Err(e) => Err(e),
                };
                if tx.blocking_send(chunk).is_err() {
                    return;
                }
            }
        });
        let mut resp = Response::new(http_body_util::BodyExt::boxed(body));
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        resp.headers_mut()
            .insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(len));
        resp
    }
}

/// Serves the download origin until `stop` fires.
pub(crate) async fn serve_downloads(
    listener: tokio::net::TcpListener,
    store: Arc<LfsStore>,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let stream = tokio::select! {
            _ = &mut stop => return,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let store = store.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let store = store.clone();
                async move { Ok::<_, Infallible>(store.download(&req)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(io, svc)
                .await;
        });
    }
}

fn lfs_json(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(httputil::full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(LFS_MEDIA_TYPE));
    r
}

fn lfs_error(status: StatusCode, message: &str) -> Response<Body> {
    lfs_json(status, &json!({"message": message}))
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(httputil::full(body.to_string()));
    *r.status_mut() = status;
    r
}

/// A fresh download id.
fn next_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{n:08x}{nanos:x}")
}

/// SHA-256 of `bytes` in hex (an LFS oid), from coreutils' `sha256sum`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(bytes)
        .expect("write to sha256sum");
    let out = child.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string()
}
