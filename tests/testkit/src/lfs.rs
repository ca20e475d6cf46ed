//! Git LFS for the Cloud test double, the way Bitbucket Cloud serves it: the batch API at
//! `<clone url>/info/lfs/objects/batch` on the main origin (with the git credential), and
//! the objects themselves from a second origin (like Bitbucket's storage host) at the
//! `href` of each `download` action, with a `header` the client must send exactly as given
//! and without the git credential, which that origin refuses.
//!
//! Batch answers follow the git-lfs batch API: `application/vnd.git-lfs+json`, per-object
//! `actions.download` (`href`, `header`, `expires_in`) or `error` (`404` for an object the
//! repository does not have).
//!
//! `operation: upload` (refused with 403 for a credential that may not write, as Bitbucket
//! does): an object the repository has gets no actions; another gets an `upload` action
//! (a PUT to the storage origin, which checks the header, the size and the SHA-256 before
//! storing it) and a `verify` action (a POST of `{oid, size}` to the storage origin, 200
//! when the object is stored with that size, 404 otherwise), both with `expires_in`.

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
    /// upload id → where the object goes.
    uploads_granted: BTreeMap<String, UploadGrant>,
    /// Objects stored by a PUT, by oid (what a test counts).
    uploads: BTreeMap<String, usize>,
    /// Verify requests that found their object, by oid.
    verified: BTreeMap<String, usize>,
}

/// What an upload grant allows: (oid, (workspace, slug), size).
type Granted = (String, (String, String), u64);

struct UploadGrant {
    repo: (String, String),
    oid: String,
    size: u64,
    header: String,
    expires: Instant,
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

    /// How many times each object was stored by an upload (PUT), by oid.
    pub fn uploads(&self) -> BTreeMap<String, usize> {
        self.lock().uploads.clone()
    }

    /// How many verify requests found each object, by oid.
    pub fn verified(&self) -> BTreeMap<String, usize> {
        self.lock().verified.clone()
    }

    /// The content of object `oid` of `workspace/slug`, if it has it.
    pub fn object(&self, workspace: &str, slug: &str, oid: &str) -> Option<Vec<u8>> {
        let path = self
            .lock()
            .objects
            .get(&(workspace.to_string(), slug.to_string()))?
            .get(oid)?
            .clone();
        std::fs::read(path).ok()
    }

    /// Answers a batch request of `workspace/slug` by a credential that may write (the
    /// caller checked it).
    pub(crate) fn batch(&self, workspace: &str, slug: &str, body: &[u8]) -> Response<Body> {
        self.batch_as(workspace, slug, body, true)
    }

    /// Answers a batch request of `workspace/slug`; `may_write`: whether the caller's
    /// credential may write to the repository (an upload batch is refused with 403 if not).
    pub(crate) fn batch_as(
        &self,
        workspace: &str,
        slug: &str,
        body: &[u8],
        may_write: bool,
    ) -> Response<Body> {
        let Ok(request) = serde_json::from_slice::<Value>(body) else {
            return lfs_error(StatusCode::UNPROCESSABLE_ENTITY, "Malformed batch request");
        };
        let Some(wanted) = request["objects"].as_array() else {
            return lfs_error(StatusCode::UNPROCESSABLE_ENTITY, "objects is required");
        };
        match request["operation"].as_str() {
            Some("download") => {}
            Some("upload") if may_write => return self.upload_batch(workspace, slug, wanted),
            Some("upload") => {
                return lfs_error(
                    StatusCode::FORBIDDEN,
                    "You do not have permission to write to this repository",
                )
            }
            _ => {
                return lfs_error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "operation must be \"download\" or \"upload\"",
                )
            }
        }
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

    /// The answer to an upload batch: no actions for objects the repository has, an
    /// `upload` and a `verify` action for the others, 422 for a malformed object.
    fn upload_batch(&self, workspace: &str, slug: &str, wanted: &[Value]) -> Response<Body> {
        let mut st = self.lock();
        let key = (workspace.to_string(), slug.to_string());
        let mut answers = Vec::new();
        for object in wanted {
            let (oid, size) = (object["oid"].as_str().unwrap_or(""), &object["size"]);
            let valid = oid.len() == 64 && oid.bytes().all(|b| b.is_ascii_hexdigit());
            let answer = match (valid, size.as_u64()) {
                (true, Some(n)) if st.objects.get(&key).is_some_and(|o| o.contains_key(oid)) => {
                    json!({"oid": oid, "size": n, "authenticated": true})
                }
                (true, Some(n)) => {
                    let id = next_id();
                    let header = format!("RemoteAuth {id}");
                    st.uploads_granted.insert(
                        id.clone(),
                        UploadGrant {
                            repo: key.clone(),
                            oid: oid.to_string(),
                            size: n,
                            header: header.clone(),
                            expires: Instant::now() + EXPIRES_IN,
                        },
                    );
                    let action = |path: &str| {
                        json!({"href": format!("{}/{path}/{id}", self.download_base),
                            "header": {GRANT_HEADER: header}, "expires_in": EXPIRES_IN.as_secs()})
                    };
                    json!({"oid": oid, "size": n, "authenticated": true, "actions": {
                        "upload": action("lfs-upload"), "verify": action("lfs-verify")}})
                }
                _ => json!({"oid": oid, "size": size, "error": {
                    "code": 422, "message": "Invalid object"}}),
            };
            answers.push(answer);
        }
        lfs_json(
            StatusCode::OK,
            &json!({"transfer": "basic", "objects": answers}),
        )
    }

    /// The upload grant `id` if `req` carries its header and it has not expired.
    fn upload_grant(
        &self,
        id: &str,
        headers: &hyper::HeaderMap,
    ) -> Result<Granted, Box<Response<Body>>> {
        let given = headers
            .get_all(AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>();
        let st = self.lock();
        let Some(grant) = st.uploads_granted.get(id) else {
            return Err(Box::new(text(StatusCode::NOT_FOUND, "NoSuchUpload\n")));
        };
        if given != [grant.header.as_str()] {
            return Err(Box::new(text(
                StatusCode::BAD_REQUEST,
                "InvalidArgument: only the header of the upload action may authenticate\n",
            )));
        }
        if Instant::now() > grant.expires {
            return Err(Box::new(text(
                StatusCode::FORBIDDEN,
                "AccessDenied: Request has expired\n",
            )));
        }
        Ok((grant.oid.clone(), grant.repo.clone(), grant.size))
    }

    /// A PUT of an object's content: stored when its length and SHA-256 are the ones of
    /// the upload batch.
    fn put(&self, id: &str, headers: &hyper::HeaderMap, body: &[u8]) -> Response<Body> {
        let (oid, repo, size) = match self.upload_grant(id, headers) {
            Ok(grant) => grant,
            Err(resp) => return *resp,
        };
        let length = headers
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if length != Some(size) || body.len() as u64 != size {
            return text(
                StatusCode::BAD_REQUEST,
                "IncompleteBody: Content-Length must be the object's size\n",
            );
        }
        if sha256_hex(body) != oid {
            return text(
                StatusCode::BAD_REQUEST,
                "BadDigest: the content does not match the object id\n",
            );
        }
        let path = self.dir.join(&oid);
        if std::fs::write(&path, body).is_err() {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "InternalError\n");
        }
        let mut st = self.lock();
        st.objects
            .entry(repo)
            .or_default()
            .insert(oid.clone(), path);
        *st.uploads.entry(oid).or_default() += 1;
        text(StatusCode::OK, "")
    }

    /// A verify request: 200 when the object is stored with the size given.
    fn verify(&self, id: &str, headers: &hyper::HeaderMap, body: &[u8]) -> Response<Body> {
        let (oid, repo, size) = match self.upload_grant(id, headers) {
            Ok(grant) => grant,
            Err(resp) => return *resp,
        };
        let asked = serde_json::from_slice::<Value>(body).unwrap_or_default();
        if asked["oid"] != oid.as_str() || asked["size"].as_u64() != Some(size) {
            return lfs_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "oid and size must be those uploaded",
            );
        }
        let mut st = self.lock();
        let stored = st.objects.get(&repo).and_then(|o| o.get(&oid)).cloned();
        match stored.and_then(|p| std::fs::metadata(p).ok()) {
            Some(m) if m.len() == size => {
                *st.verified.entry(oid).or_default() += 1;
                lfs_json(StatusCode::OK, &json!({}))
            }
            _ => lfs_error(StatusCode::NOT_FOUND, "Object does not exist on the server"),
        }
    }

    /// Answers a request to the storage origin: downloads, uploads and verifies.
    async fn storage(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let (write, id) = match path.strip_prefix("/lfs-upload/") {
            Some(id) if req.method() == hyper::Method::PUT => (Some(true), id.to_string()),
            _ => match path.strip_prefix("/lfs-verify/") {
                Some(id) if req.method() == hyper::Method::POST => (Some(false), id.to_string()),
                _ => (None, String::new()),
            },
        };
        let Some(put) = write else {
            return self.download(&req);
        };
        let headers = req.headers().clone();
        let Ok(body) = http_body_util::BodyExt::collect(req.into_body()).await else {
            return text(StatusCode::BAD_REQUEST, "IncompleteBody\n");
        };
        let body = body.to_bytes();
        let done = tokio::task::spawn_blocking(move || match put {
            true => self.put(&id, &headers, &body),
            false => self.verify(&id, &headers, &body),
        })
        .await;
        done.unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "InternalError\n"))
    }

    /// Answers a download request to the storage origin.
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

/// Serves the storage origin (downloads, uploads) until `stop` fires.
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
                async move { Ok::<_, Infallible>(store.storage(req).await) }
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
