//! [`S3Backend`]: an archive in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW,
//! SeaweedFS, …) through the `object_store` crate, under `s3://<bucket>/<prefix>/` in
//! the same layout as a local archive (`backend::layout`).
//!
//! The contract of [`Backend`] maps onto S3 directly: an object appears whole or not
//! at all (a single PUT, or a multipart upload completed in one step; an interrupted
//! one stays invisible); `create_new` is a PUT with `If-None-Match: *` (412 →
//! `AlreadyExists`); reads stream. Files up to [`SINGLE_PUT_MAX`] go up in one PUT,
//! larger ones as multipart uploads of [`PART_SIZE`] parts, at most [`PARTS_IN_FLIGHT`] in flight,
//! so memory stays bounded whatever the size. `object_store` retries 5xx, 429, refused
//! connections and timed-out idempotent requests with backoff.
//!
//! `object_store` is async; the archive is not. The backend owns a small tokio runtime
//! and hands each request to it, waiting on a channel, so it can be called from any
//! thread (a job's worker, the API's blocking pool) without nesting runtimes.

use super::backend::{layout, Backend, BackendError, FileKind, Source};
use super::blob::read_full;
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::client::HttpErrorKind;
use object_store::path::Path as StorePath;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
    WriteMultipart,
};
use secrecy::{ExposeSecret, SecretString};
use std::future::Future;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Files up to this size are stored with one PUT; larger ones as multipart uploads.
const SINGLE_PUT_MAX: usize = 8 << 20;
/// The part size of multipart uploads (S3's minimum is 5 MiB).
const PART_SIZE: usize = 16 << 20;
/// Parts uploading at once.
const PARTS_IN_FLIGHT: usize = 4;
/// The slowest uplink an upload is given time for, in bytes a second (64 KiB/s, about
/// half a megabit), shared by the parts in flight of one upload (repositories backed
/// up at once upload at once: each needs this much).
const SLOWEST_UPLINK: usize = 64 << 10;
/// A request body up to this size goes with the requests that carry none: at the
/// slowest uplink it is sent in 16 s.
const SMALL_BODY: usize = 1 << 20;
/// How long the store has to answer by default (see [`answer_time`]).
const ANSWER_TIME: Duration = Duration::from_secs(120);
/// No retry starts later than this after a request's first try: a retry sends the
/// request as it was signed, and stores refuse a signature older than 15 minutes.
const RETRY_WITHIN: Duration = Duration::from_secs(600);
/// Batches a streaming read buffers ahead of its reader.
const READ_AHEAD: usize = 4;
/// The size of a streaming read's batches.
const READ_BATCH: usize = 1 << 20;

/// How long the store has to answer a request once it is sent, and a streamed read to
/// go on (`REPOSAFE_S3_TIMEOUT_SECS`, default 120 s). A request that runs over is
/// retried when it can safely be sent again (a read, an overwrite; a create, by
/// [`S3Backend::create`]), as a 5xx is.
fn answer_time() -> Duration {
    std::env::var("REPOSAFE_S3_TIMEOUT_SECS")
        .ok()
        .and_then(|secs| secs.trim().parse::<u64>().ok())
        .filter(|secs| *secs > 0)
        .map_or(ANSWER_TIME, Duration::from_secs)
}

/// How long a request that carries an upload's body has (the time to answer counts
/// from when a request began, body and all): the time to answer plus sending every
/// part in flight over the slowest uplink, 19 minutes by default.
fn upload_time(answer: Duration) -> Duration {
    answer + Duration::from_secs((PARTS_IN_FLIGHT * PART_SIZE / SLOWEST_UPLINK) as u64)
}

/// The client options and retries of requests that may take `limit` to be answered:
/// retried until three times that has passed since the first try, at most
/// [`RETRY_WITHIN`].
fn patience(limit: Duration) -> (ClientOptions, RetryConfig) {
    let options = ClientOptions::new()
        .with_timeout_disabled()
        .with_connect_timeout(Duration::from_secs(10))
        .with_read_timeout(limit)
        .with_allow_http(true);
    let retry = RetryConfig {
        max_retries: 6,
        retry_timeout: limit.saturating_mul(3).min(RETRY_WITHIN),
        ..RetryConfig::default()
    };
    (options, retry)
}

/// The region when none was given: `AWS_REGION`, else `AWS_DEFAULT_REGION` (as read
/// by `lookup`), else `us-east-1`.
fn settled_region(given: Option<&str>, lookup: impl Fn(&str) -> Option<String>) -> String {
    let named = |name: &str| lookup(name).filter(|region| !region.trim().is_empty());
    given
        .map(str::to_string)
        .or_else(|| named("AWS_REGION"))
        .or_else(|| named("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| "us-east-1".to_string())
}

/// Where an S3 archive is and how to reach it.
#[derive(Clone)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix without leading or trailing `/`; may be empty.
    pub prefix: String,
    /// E.g. `https://s3.example:9000`; when absent, the one the AWS variables name,
    /// else AWS ([`settled_endpoint`]).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), as MinIO and SeaweedFS expect.
    pub path_style: bool,
    /// Static credentials; absent: the AWS environment variables.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<SecretString>,
    /// With temporary static credentials, their session token.
    pub session_token: Option<SecretString>,
    /// PEM certificates of the CAs trusted for the endpoint's TLS besides the system's
    /// (a store with a certificate from a private CA); checked by [`ca_certificates`].
    pub ca_bundle_pem: Option<String>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("url", &self.url())
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field("ca_bundle", &self.ca_bundle_pem.is_some())
            .finish_non_exhaustive()
    }
}

impl S3Config {
    /// Parses `s3://BUCKET[/PREFIX]` into (bucket, prefix), naming what is wrong.
    pub fn parse_url(url: &str) -> Result<(String, String), String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{url:?} is not an s3:// URL (s3://BUCKET/PREFIX)"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(format!(
                "{url:?}: the bucket name {bucket:?} must be 3 to 63 lowercase letters, digits, '-' or '.'"
            ));
        }
        let prefix = prefix.trim_matches('/');
        let prefix_ok = prefix.split('/').all(|part| {
            prefix.is_empty()
                || (!part.is_empty()
                    && part != "."
                    && part != ".."
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
        });
        if !prefix_ok {
            return Err(format!(
                "{url:?}: the prefix {prefix:?} may hold letters, digits, '-', '_', '.' and '/' between names"
            ));
        }
        Ok((bucket.to_string(), prefix.to_string()))
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    /// Where requests go, for messages.
    pub fn endpoint_name(&self) -> String {
        self.endpoint.clone().unwrap_or_else(|| "AWS".to_string())
    }
}

/// An archive in an S3 bucket. Cheap to share; requests run on its own runtime.
pub struct S3Backend {
    config: S3Config,
    /// Requests without a large body: answered within [`answer_time`].
    store: Arc<AmazonS3>,
    /// Uploads (PUTs of more than [`SMALL_BODY`], multipart uploads): given
    /// [`upload_time`], since the time to answer includes sending the body.
    uploads: Arc<AmazonS3>,
    runtime: Option<tokio::runtime::Runtime>,
    /// Where temporary files are built before an upload (the data dir's `tmp/s3`).
    scratch: PathBuf,
    /// Requests made (each call to the store; a listing or upload of many parts counts once).
    requests: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Backend")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Drop for S3Backend {
    fn drop(&mut self) {
        tracing::info!(
            "object store: {} requests to {}",
            self.requests.load(std::sync::atomic::Ordering::Relaxed),
            self.config.url()
        );
        // Dropping a runtime inside another one panics; let it wind down on its own.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The endpoint the AWS environment variables name (`AWS_ENDPOINT_URL`, else
/// `AWS_ENDPOINT`), as `object_store` reads it.
pub fn environment_endpoint() -> Option<String> {
    environment_endpoint_named().map(|(_, endpoint)| endpoint)
}

/// [`environment_endpoint`] with the name of the variable it came from.
pub fn environment_endpoint_named() -> Option<(&'static str, String)> {
    ["AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
        .into_iter()
        .find_map(|name| {
            let value = std::env::var(name).ok().filter(|v| !v.is_empty())?;
            Some((name, value))
        })
}

/// Where requests for a location given `endpoint` go: that endpoint, else the one the
/// AWS variables of this process name, else none (AWS). Everything that opens, names
/// or compares a location settles it this way, so they agree.
pub fn settled_endpoint(endpoint: Option<&str>) -> Option<String> {
    endpoint.map(str::to_string).or_else(environment_endpoint)
}

/// The certificates of a CA bundle (PEM), or why it holds none that can be used.
pub fn ca_certificates(pem: &str) -> Result<Vec<object_store::Certificate>, String> {
    let certificates = object_store::Certificate::from_pem_bundle(pem.as_bytes())
        .map_err(|e| format!("is not a PEM certificate bundle: {e}"))?;
    if certificates.is_empty() {
        return Err(
            "holds no certificate (a PEM bundle: -----BEGIN CERTIFICATE----- blocks)".into(),
        );
    }
    Ok(certificates)
}

impl S3Backend {
    /// A backend for `config`, building temporary files in `scratch`. Nothing is sent
    /// until it is used ([`Backend::init`] checks the bucket answers).
    pub fn new(mut config: S3Config, scratch: PathBuf) -> Result<S3Backend, BackendError> {
        let location = PathBuf::from(config.url());
        // Settled as everywhere (the engine's `s3_config` has done so already; a
        // config built elsewhere is settled here): requests, the payload signing below
        // and every message agree on where the store is.
        config.endpoint = settled_endpoint(config.endpoint.as_deref());
        // Keys of its own: none of this process's AWS variables (a session token there
        // belongs to other keys); without, `from_env` reads them all.
        let builder = match config.access_key_id {
            Some(_) => AmazonS3Builder::new(),
            None => AmazonS3Builder::from_env(),
        };
        let mut builder = builder
            .with_bucket_name(&config.bucket)
            .with_virtual_hosted_style_request(!config.path_style)
            // Over TLS the body is protected in transit (and every blob is checked
            // against its id when read), so it is not hashed for the signature, as
            // the AWS SDKs do; over plain http the signature covers it.
            .with_unsigned_payload(
                config
                    .endpoint
                    .as_deref()
                    .is_none_or(|e| e.starts_with("https://")),
            )
            .with_region(settled_region(config.region.as_deref(), |name| {
                std::env::var(name).ok()
            }));
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(id) = &config.access_key_id {
            builder = builder.with_access_key_id(id);
        }
        if let Some(secret) = &config.secret_access_key {
            builder = builder.with_secret_access_key(secret.expose_secret());
        }
        if let Some(token) = &config.session_token {
            builder = builder.with_token(token.expose_secret());
        }
        let certificates = match &config.ca_bundle_pem {
            Some(pem) => ca_certificates(pem).map_err(|e| {
                BackendError::new(
                    &location,
                    io::Error::new(io::ErrorKind::InvalidInput, format!("the CA bundle {e}")),
                )
            })?,
            None => Vec::new(),
        };
        let answer = answer_time();
        let client = |limit: Duration| {
            let (mut options, retry) = patience(limit);
            for certificate in &certificates {
                options = options.with_root_certificate(certificate.clone());
            }
            builder
                .clone()
                .with_client_options(options)
                .with_retry(retry)
                .build()
                .map(Arc::new)
                .map_err(|e| BackendError::new(&location, io::Error::other(e.to_string())))
        };
        let (store, uploads) = (client(answer)?, client(upload_time(answer))?);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("reposafe-s3")
            .enable_all()
            .build()
            .map_err(|e| BackendError::new(&location, e))?;
        Ok(S3Backend {
            config,
            store,
            uploads,
            runtime: Some(runtime),
            scratch,
            requests: Default::default(),
        })
    }

    /// Checks that the bucket answers with these credentials (one listing request):
    /// a missing bucket or refused credentials fail here, naming the endpoint.
    pub fn check_bucket(&self) -> Result<(), BackendError> {
        let store = self.store.clone();
        let prefix = StorePath::from(self.config.prefix.as_str());
        let answer = self
            .run("list bucket", async move {
                store.list_with_delimiter(Some(&prefix)).await
            })
            .map_err(|e| BackendError::new(self.root_location(), e))?;
        answer
            .map(drop)
            .map_err(|e| BackendError::new(self.root_location(), self.io_error(e)))
    }

    /// The endpoint this backend talks to, for messages.
    pub fn endpoint_name(&self) -> String {
        self.config.endpoint_name()
    }

    /// Runs `fut` on the backend's runtime and waits for it (from any thread).
    fn run<T: Send + 'static>(
        &self,
        what: &str,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> io::Result<T> {
        tracing::trace!("object store request: {what}");
        let Some(rt) = &self.runtime else {
            return Err(io::Error::other("the S3 client is shut down"));
        };
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| io::Error::other("the S3 request was dropped"))
    }

    fn key(&self, rel: &str) -> StorePath {
        if self.config.prefix.is_empty() {
            StorePath::from(rel)
        } else {
            StorePath::from(format!("{}/{rel}", self.config.prefix))
        }
    }

    /// The key relative to the archive's prefix.
    fn relative<'a>(&self, key: &'a str) -> Option<&'a str> {
        if self.config.prefix.is_empty() {
            Some(key)
        } else {
            key.strip_prefix(self.config.prefix.as_str())?
                .strip_prefix('/')
        }
    }

    fn err(&self, kind: FileKind, id: &str) -> impl Fn(object_store::Error) -> BackendError + '_ {
        let location = self.location(kind, id);
        move |e| BackendError::new(location.clone(), self.io_error(e))
    }

    /// An `object_store` error as an I/O error of the matching kind, naming the
    /// endpoint and what to fix where the S3 error code tells it.
    fn io_error(&self, e: object_store::Error) -> io::Error {
        use object_store::Error as E;
        let text = e.to_string();
        let code = s3_error_code(&text);
        let endpoint = self.config.endpoint_name();
        let bucket = &self.config.bucket;
        if let Some(message) = unanswered(&e) {
            return io::Error::other(format!("{endpoint}: {message}"));
        }
        let (kind, message) = match (code, &e) {
            (Some("NoSuchBucket"), _) => (
                io::ErrorKind::NotFound,
                format!("the bucket {bucket} does not exist (create it, or check the bucket name and --endpoint)"),
            ),
            (Some(c @ "AccessDenied"), _) => (
                io::ErrorKind::PermissionDenied,
                access_denied(c, &text, bucket),
            ),
            (Some(c), _) if CREDENTIAL_CODES.contains(&c) => (
                io::ErrorKind::PermissionDenied,
                format!("the credentials were refused ({c}): check the access key id and secret access key, and that they may use the bucket {bucket}"),
            ),
            (Some(c @ "RequestTimeTooSkewed"), _) => (
                io::ErrorKind::PermissionDenied,
                format!("this machine's clock differs too much from the server's ({c}): set the time, e.g. with NTP"),
            ),
            (Some(c @ "NotImplemented"), _) | (Some(c), E::NotImplemented { .. }) => (
                io::ErrorKind::Unsupported,
                format!("the store does not support a request reposafe needs ({c}); it must support conditional writes (If-None-Match and If-Match)"),
            ),
            (_, E::NotFound { .. }) => (io::ErrorKind::NotFound, "not found".to_string()),
            (_, E::AlreadyExists { .. } | E::Precondition { .. }) => {
                (io::ErrorKind::AlreadyExists, "already exists".to_string())
            }
            (None, E::PermissionDenied { .. } | E::Unauthenticated { .. }) => (
                io::ErrorKind::PermissionDenied,
                format!("access refused: check the access key id and secret access key, and that they may use the bucket {bucket}"),
            ),
            // A refusal for another reason (a quota, a storage cap, object lock): the
            // store's own words say what to fix, not the keys.
            (Some(c), E::PermissionDenied { .. } | E::Unauthenticated { .. }) => (
                io::ErrorKind::PermissionDenied,
                with_store_message(format!("the store refused the request ({c})"), &text),
            ),
            (Some(c), _) => (
                io::ErrorKind::Other,
                with_store_message(format!("S3 error {c}"), &text),
            ),
            (None, _) => (io::ErrorKind::Other, text.chars().take(300).collect()),
        };
        io::Error::new(kind, format!("{endpoint}: {message}"))
    }

    fn put(
        &self,
        kind: FileKind,
        id: &str,
        bytes: Vec<u8>,
        mode: PutMode,
    ) -> Result<(), BackendError> {
        self.put_with_result(kind, id, bytes, mode)?
            .map(drop)
            .map_err(self.err(kind, id))
    }

    /// One PUT; the store's answer as it is (a refused condition is `Precondition` or
    /// `AlreadyExists`).
    fn put_with_result(
        &self,
        kind: FileKind,
        id: &str,
        bytes: Vec<u8>,
        mode: PutMode,
    ) -> Result<Result<object_store::PutResult, object_store::Error>, BackendError> {
        let store = if bytes.len() > SMALL_BODY {
            self.uploads.clone()
        } else {
            self.store.clone()
        };
        let key = self.key(&layout::path_of(kind, id));
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        self.run(&format!("put {key}"), async move {
            store.put_opts(&key, PutPayload::from(bytes), opts).await
        })
        .map_err(|e| BackendError::new(self.location(kind, id), e))
    }

    /// A create-only PUT (`If-None-Match: *`). When the store refuses it because the
    /// object exists with exactly these bytes, the create was this one: its answer was
    /// lost and the client's retry met its own write (the bytes of a manifest or lease
    /// are never those of another writer's). The answer: the object's ETag, if any.
    fn create(
        &self,
        kind: FileKind,
        id: &str,
        bytes: &[u8],
    ) -> Result<Result<Option<String>, object_store::Error>, BackendError> {
        let put = || {
            self.put_with_result(kind, id, bytes.to_vec(), PutMode::Create)
                .map(|answer| answer.map(|put| put.e_tag))
        };
        let mut created = put()?;
        // A create that timed out or broke off is not retried by the client (it is
        // not idempotent to it); here it is, once: the check below makes it safe.
        if created.as_ref().is_err_and(|e| {
            matches!(
                http_error_kind(e),
                Some(HttpErrorKind::Timeout | HttpErrorKind::Interrupted)
            )
        }) {
            created = put()?;
        }
        let Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) = &created
        else {
            return Ok(created);
        };
        match self.read_versioned(kind, id) {
            Ok(Some((there, e_tag))) if there == bytes => {
                tracing::debug!(
                    "{}: the store had made this create already (its answer was lost)",
                    self.location(kind, id).display()
                );
                Ok(Ok(Some(e_tag)))
            }
            Ok(_) => Ok(created),
            Err(e) => {
                tracing::debug!("after a refused create, cannot read it back: {e}");
                Ok(created)
            }
        }
    }

    /// The ETag a store answered with; a store that gives none cannot hold a lease.
    fn e_tag_of(
        &self,
        kind: FileKind,
        id: &str,
        e_tag: Option<String>,
    ) -> Result<String, BackendError> {
        e_tag.ok_or_else(|| {
            BackendError::new(
                self.location(kind, id),
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "{}: the store gave no ETag for a write; reposafe needs ETags for conditional writes (If-Match)",
                        self.config.endpoint_name()
                    ),
                ),
            )
        })
    }

    /// Uploads `first` and the rest of `source` as a multipart upload; aborted (nothing
    /// stored) if the source or a part fails.
    fn put_multipart(
        &self,
        kind: FileKind,
        id: &str,
        first: Vec<u8>,
        source: &mut dyn Read,
    ) -> Result<(), BackendError> {
        let store = self.uploads.clone();
        let key = self.key(&layout::path_of(kind, id));
        let at = |e: io::Error| BackendError::new(self.location(kind, id), e);
        let upload = self
            .run(
                "multipart start",
                async move { store.put_multipart(&key).await },
            )
            .map_err(at)?
            .map_err(self.err(kind, id))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut chunk = first;
        loop {
            if !chunk.is_empty() {
                let sent = self.run("multipart part", async move {
                    let ready = writer.wait_for_capacity(PARTS_IN_FLIGHT).await;
                    writer.write(&chunk);
                    (writer, ready)
                });
                let (w, ready) = sent.map_err(at)?;
                writer = w;
                if let Err(e) = ready {
                    self.abort_upload(writer, kind, id);
                    return Err(self.err(kind, id)(e));
                }
            }
            chunk = vec![0u8; PART_SIZE];
            let n = match read_full(source, &mut chunk) {
                Ok(n) => n,
                Err(e) => {
                    self.abort_upload(writer, kind, id);
                    return Err(at(e));
                }
            };
            if n == 0 {
                break;
            }
            chunk.truncate(n);
        }
        // The parts in flight first, so that a failed one is aborted here (and a failed
        // abort warned about); `finish` then sends the last part and completes.
        let flushed = self.run("multipart flush", async move {
            let flushed = writer.wait_for_capacity(0).await;
            (writer, flushed)
        });
        let (writer, flushed) = flushed.map_err(at)?;
        if let Err(e) = flushed {
            self.abort_upload(writer, kind, id);
            return Err(self.err(kind, id)(e));
        }
        self.run("multipart finish", writer.finish())
            .map_err(at)?
            .map(drop)
            .map_err(self.err(kind, id))
    }

    /// Aborts a multipart upload that failed, so that the store drops its parts. When
    /// that fails too, a warning names the object: its parts stay (and are billed)
    /// until a lifecycle rule that aborts incomplete multipart uploads removes them.
    fn abort_upload(&self, writer: WriteMultipart, kind: FileKind, id: &str) {
        let failed = match self.run("multipart abort", writer.abort()) {
            Ok(Ok(())) => return,
            Ok(Err(e)) => self.io_error(e),
            Err(e) => e,
        };
        tracing::warn!(
            "{}: the failed upload could not be aborted ({failed}); its parts stay in the bucket until a lifecycle rule that aborts incomplete multipart uploads removes them",
            self.location(kind, id).display()
        );
    }

    /// An object's metadata (one `HEAD`), `None` when it is absent.
    fn head(
        &self,
        kind: FileKind,
        id: &str,
    ) -> Result<Option<object_store::ObjectMeta>, BackendError> {
        kind.check_id(id, || self.location(kind, id))?;
        let store = self.store.clone();
        let key = self.key(&layout::path_of(kind, id));
        match self
            .run(
                &format!("head {key}"),
                async move { store.head(&key).await },
            )
            .map_err(|e| BackendError::new(self.location(kind, id), e))?
        {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(kind, id)(e)),
        }
    }

    /// Lists every object under the relative directory `dir` (recursively): (relative key, size).
    fn list_dir(&self, dir: &str) -> Result<Vec<(String, u64)>, BackendError> {
        Ok(self
            .list_dir_versions(dir)?
            .into_iter()
            .map(|(rel, size, _)| (rel, size))
            .collect())
    }

    /// [`S3Backend::list_dir`] with each object's ETag.
    fn list_dir_versions(
        &self,
        dir: &str,
    ) -> Result<Vec<(String, u64, Option<String>)>, BackendError> {
        let store = self.store.clone();
        let prefix = if dir.is_empty() {
            (!self.config.prefix.is_empty()).then(|| StorePath::from(self.config.prefix.as_str()))
        } else {
            Some(self.key(dir))
        };
        let listed = self
            .run(&format!("list {dir}"), async move {
                let mut out = Vec::new();
                let mut stream = store.list(prefix.as_ref());
                while let Some(meta) = stream.next().await {
                    let meta = meta?;
                    out.push((meta.location.to_string(), meta.size, meta.e_tag));
                }
                Ok::<_, object_store::Error>(out)
            })
            .map_err(|e| BackendError::new(self.root_location(), e))?
            .map_err(|e| BackendError::new(self.root_location(), self.io_error(e)))?;
        Ok(listed
            .into_iter()
            .filter_map(|(key, size, tag)| Some((self.relative(&key)?.to_string(), size, tag)))
            .collect())
    }
}

/// What to say of a request the store never answered (every retry refused, timed out or
/// unresolved), with the innermost cause ("Connection refused (os error 111)"); `None`
/// for an error the store answered.
fn unanswered(e: &object_store::Error) -> Option<String> {
    let kind = http_error_kind(e)?;
    let cause = error_chain(e).last()?.to_string();
    if kind == HttpErrorKind::Connect {
        match refused_certificate(&cause) {
            Some(CertificateRefusal::UnknownIssuer) => {
                return Some(format!(
                    "its TLS certificate is not trusted here ({cause}): give the CA that signed it with --ca-bundle FILE (PEM; for the data dir's archive: `reposafe archive update --ca-bundle FILE`), or add it to this system's trust store"
                ))
            }
            Some(CertificateRefusal::Other) => {
                return Some(format!(
                    "its TLS certificate was refused ({cause}): it must name the endpoint's host and be valid now"
                ))
            }
            None => {}
        }
    }
    let what = match kind {
        HttpErrorKind::Connect => "cannot connect",
        HttpErrorKind::Timeout => "the store did not answer in time",
        _ => return None,
    };
    Some(format!(
        "{what} ({cause}): check that the store is running and reachable from this machine, the endpoint, and for https that its certificate is trusted here"
    ))
}

/// Why a connection failed on the server's certificate, from rustls's message.
#[derive(Debug, PartialEq)]
enum CertificateRefusal {
    /// Signed by no CA trusted here ("invalid peer certificate: UnknownIssuer"): a
    /// private CA, or a self-signed certificate; a CA bundle helps.
    UnknownIssuer,
    /// Refused for another reason (another host's name, expired, revoked).
    Other,
}

/// Recognised as the connections' TLS failures are ([`crate::tls::is_certificate_text`]).
fn refused_certificate(cause: &str) -> Option<CertificateRefusal> {
    if !crate::tls::is_certificate_text(cause) {
        None
    } else if cause.contains("UnknownIssuer") {
        Some(CertificateRefusal::UnknownIssuer)
    } else {
        Some(CertificateRefusal::Other)
    }
}

/// An error and its sources, outermost first.
fn error_chain(e: &object_store::Error) -> Vec<&(dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e as &(dyn std::error::Error + 'static)), |err| {
        err.source()
    })
    .collect()
}

/// The kind of transport failure behind `e`, when it is one (no answer came).
fn http_error_kind(e: &object_store::Error) -> Option<HttpErrorKind> {
    let chain = error_chain(e);
    let http = chain
        .iter()
        .rev()
        .find_map(|err| err.downcast_ref::<object_store::client::HttpError>())?;
    Some(http.kind())
}

/// The S3 error codes that say the credentials themselves were refused (wrong or
/// expired); `AccessDenied` (not allowed a request) is [`access_denied`]'s.
const CREDENTIAL_CODES: [&str; 6] = [
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "InvalidSecurity",
];

/// The words for an `AccessDenied`: the request refused and the permission the keys
/// (their own, or the bucket's policy) must grant for it, so a key that may write but
/// not delete is not sent to check its secret; the keys alone when the request is not
/// named in `text`.
fn access_denied(code: &str, text: &str, bucket: &str) -> String {
    match refused_request(text) {
        Some((method, permission)) => {
            let listing = if permission == "s3:GetObject" {
                " (and s3:ListBucket, without which a missing object is refused rather than not found)"
            } else {
                ""
            };
            format!(
                "the credentials were refused a {method} ({code}): check the access key id and secret access key, and that their permissions and the bucket's policy allow {permission}{listing} on the bucket {bucket}"
            )
        }
        None => format!(
            "the credentials were refused ({code}): check the access key id and secret access key, and that they may use the bucket {bucket}"
        ),
    }
}

/// The HTTP method of the request `object_store` names in `text` ("Error performing
/// PUT http://…"), and the S3 permission that allows that request.
fn refused_request(text: &str) -> Option<(&str, &'static str)> {
    const METHODS: [&str; 5] = ["GET", "HEAD", "PUT", "POST", "DELETE"];
    text.match_indices("Error performing ")
        .find_map(|(at, found)| {
            let mut words = text[at + found.len()..].split_whitespace();
            let method = words.next().filter(|m| METHODS.contains(m))?;
            let url = words.next().unwrap_or("");
            let permission = match method {
                "GET" if url.contains("list-type=") => "s3:ListBucket",
                "GET" | "HEAD" => "s3:GetObject",
                "DELETE" if url.contains("uploadId=") => "s3:AbortMultipartUpload",
                "DELETE" => "s3:DeleteObject",
                "POST" if url.contains("?delete") => "s3:DeleteObject",
                _ => "s3:PutObject",
            };
            Some((method, permission))
        })
}

/// The S3 error code (`<Code>NoSuchBucket</Code>`) in an error's text, if any.
fn s3_error_code(text: &str) -> Option<&str> {
    xml_element(text, "Code")
}

/// The store's own explanation (`<Message>…</Message>`) in an error's text, at most 200
/// characters; only shown for codes other than [`CREDENTIAL_CODES`] (a refused
/// signature's explanation repeats what was signed).
fn s3_error_message(text: &str) -> Option<String> {
    let said = xml_element(text, "Message")?.trim();
    let said = [
        ("&lt;", "<"),
        ("&gt;", ">"),
        ("&quot;", "\""),
        ("&#34;", "\""),
        ("&apos;", "'"),
        ("&#39;", "'"),
        ("&amp;", "&"),
    ]
    .iter()
    .fold(said.to_string(), |said, (entity, character)| {
        said.replace(entity, character)
    });
    (!said.is_empty()).then(|| said.chars().take(200).collect())
}

/// `head`, followed by the store's own explanation in `text` when it gives one.
fn with_store_message(head: String, text: &str) -> String {
    match s3_error_message(text) {
        Some(said) => format!("{head}: {said}"),
        None => head,
    }
}

/// The text of the first `<name>` element in `text`.
fn xml_element<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = text.find(&open)? + open.len();
    let len = text[start..].find(&format!("</{name}>"))?;
    Some(&text[start..start + len])
}

/// A streaming read: chunks arrive from the runtime through a bounded channel, then
/// `None` at the end of the object. A channel that closes without it (the task
/// reading the body stopped) is an error, never a short object.
struct StreamReader {
    chunks: mpsc::Receiver<io::Result<Option<bytes::Bytes>>>,
    current: bytes::Bytes,
    ended: bool,
    /// The object, for the error when its read breaks off.
    location: PathBuf,
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.chunks.recv() {
                Ok(Ok(Some(chunk))) => self.current = chunk,
                Ok(Ok(None)) => self.ended = true,
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(io::Error::other(format!(
                        "the read of {} broke off before its end",
                        self.location.display()
                    )))
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

impl Backend for S3Backend {
    fn root_location(&self) -> PathBuf {
        PathBuf::from(self.config.url())
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn version(&self, kind: FileKind, id: &str) -> Result<Option<String>, BackendError> {
        Ok(self.head(kind, id)?.and_then(|meta| meta.e_tag))
    }

    fn list_with_version(
        &self,
        kind: FileKind,
        prefix: &str,
    ) -> Result<Vec<(String, u64, Option<String>)>, BackendError> {
        let mut out: Vec<_> = self
            .list_dir_versions(&layout::list_dir(kind, prefix))?
            .into_iter()
            .filter_map(|(rel, size, tag)| Some((layout::id_of(kind, &rel)?, size, tag)))
            .filter(|(id, _, _)| id.starts_with(prefix))
            .collect();
        out.sort();
        Ok(out)
    }

    fn location(&self, kind: FileKind, id: &str) -> PathBuf {
        PathBuf::from(format!(
            "{}/{}",
            self.config.url(),
            layout::path_of(kind, id)
        ))
    }

    /// Empty: nothing under the prefix but key files (an interrupted creation) and leases.
    fn is_empty(&self) -> Result<bool, BackendError> {
        Ok(self
            .list_dir("")?
            .iter()
            .all(|(rel, _)| rel.starts_with("keys/") || rel.starts_with("locks/")))
    }

    /// Prepares the scratch directory (no request: [`S3Backend::check_bucket`] is
    /// what `archive init` asks of the bucket).
    fn init(&self) -> Result<(), BackendError> {
        std::fs::create_dir_all(&self.scratch).map_err(|e| BackendError::new(&self.scratch, e))
    }

    fn list_with_size(
        &self,
        kind: FileKind,
        prefix: &str,
    ) -> Result<Vec<(String, u64)>, BackendError> {
        Ok(self
            .list_with_version(kind, prefix)?
            .into_iter()
            .map(|(id, size, _)| (id, size))
            .collect())
    }

    fn exists(&self, kind: FileKind, id: &str) -> Result<bool, BackendError> {
        Ok(self.head(kind, id)?.is_some())
    }

    fn open_read(&self, kind: FileKind, id: &str) -> Result<Box<dyn Read + Send>, BackendError> {
        kind.check_id(id, || self.location(kind, id))?;
        let store = self.store.clone();
        let key = self.key(&layout::path_of(kind, id));
        let got = self
            .run(&format!("get {key}"), async move { store.get(&key).await })
            .map_err(|e| BackendError::new(self.location(kind, id), e))?
            .map_err(self.err(kind, id))?;
        let (tx, rx) = mpsc::sync_channel(READ_AHEAD);
        let endpoint = self.config.endpoint_name();
        let Some(rt) = &self.runtime else {
            let shut = io::Error::other("the S3 client is shut down");
            return Err(BackendError::new(self.location(kind, id), shut));
        };
        rt.spawn_blocking(move || {
            let handle = tokio::runtime::Handle::current();
            let mut stream = got.into_stream();
            // The body arrives in small frames: hand it over in batches of about
            // READ_BATCH, so the reader's thread is woken once per batch.
            let mut batch = bytes::BytesMut::new();
            loop {
                let next = handle.block_on(stream.next());
                let end = match next {
                    Some(Ok(chunk)) => {
                        batch.extend_from_slice(&chunk);
                        if batch.len() < READ_BATCH {
                            continue;
                        }
                        false
                    }
                    Some(Err(e)) => {
                        let _ = tx.send(Err(io::Error::other(format!("{endpoint}: {e}"))));
                        return;
                    }
                    None => true,
                };
                if !batch.is_empty() && tx.send(Ok(Some(batch.split().freeze()))).is_err() {
                    return;
                }
                if end {
                    let _ = tx.send(Ok(None));
                    return;
                }
            }
        });
        Ok(Box::new(StreamReader {
            chunks: rx,
            current: bytes::Bytes::new(),
            ended: false,
            location: self.location(kind, id),
        }))
    }

    fn temp_file(&self) -> Result<tempfile::NamedTempFile, BackendError> {
        std::fs::create_dir_all(&self.scratch).map_err(|e| BackendError::new(&self.scratch, e))?;
        tempfile::Builder::new()
            .prefix(&format!("{}-", std::process::id()))
            .suffix(".tmp")
            .tempfile_in(&self.scratch)
            .map_err(|e| BackendError::new(&self.scratch, e))
    }

    fn write(&self, kind: FileKind, id: &str, source: Source<'_>) -> Result<(), BackendError> {
        kind.check_id(id, || self.location(kind, id))?;
        let at = |e: io::Error| BackendError::new(self.location(kind, id), e);
        let mut file;
        let reader: &mut dyn Read = match source {
            Source::Bytes(bytes) => return self.put(kind, id, bytes.to_vec(), PutMode::Overwrite),
            Source::Reader(r) => r,
            Source::TempFile(t) => {
                file = t.reopen().map_err(at)?;
                &mut file
            }
        };
        let mut first = Vec::new();
        reader
            .take(SINGLE_PUT_MAX as u64 + 1)
            .read_to_end(&mut first)
            .map_err(at)?;
        if first.len() <= SINGLE_PUT_MAX {
            self.put(kind, id, first, PutMode::Overwrite)
        } else {
            self.put_multipart(kind, id, first, reader)
        }
    }

    fn create_new(&self, kind: FileKind, id: &str, bytes: &[u8]) -> Result<(), BackendError> {
        kind.check_id(id, || self.location(kind, id))?;
        self.create(kind, id, bytes)?
            .map(drop)
            .map_err(self.err(kind, id))
    }

    fn create_versioned(
        &self,
        kind: FileKind,
        id: &str,
        bytes: &[u8],
    ) -> Result<String, BackendError> {
        kind.check_id(id, || self.location(kind, id))?;
        let e_tag = self.create(kind, id, bytes)?.map_err(self.err(kind, id))?;
        self.e_tag_of(kind, id, e_tag)
    }

    fn read_versioned(
        &self,
        kind: FileKind,
        id: &str,
    ) -> Result<Option<(Vec<u8>, String)>, BackendError> {
        kind.check_id(id, || self.location(kind, id))?;
        let store = self.store.clone();
        let key = self.key(&layout::path_of(kind, id));
        let got = self
            .run(&format!("get {key}"), async move {
                let got = store.get(&key).await?;
                let e_tag = got.meta.e_tag.clone();
                Ok((got.bytes().await?, e_tag))
            })
            .map_err(|e| BackendError::new(self.location(kind, id), e))?;
        match got {
            Ok((bytes, e_tag)) => Ok(Some((bytes.to_vec(), self.e_tag_of(kind, id, e_tag)?))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(kind, id)(e)),
        }
    }

    fn replace_if(
        &self,
        kind: FileKind,
        id: &str,
        bytes: &[u8],
        version: &str,
    ) -> Result<Option<String>, BackendError> {
        kind.check_id(id, || self.location(kind, id))?;
        let mode = PutMode::Update(object_store::UpdateVersion {
            e_tag: Some(version.to_string()),
            version: None,
        });
        match self.put_with_result(kind, id, bytes.to_vec(), mode)? {
            Ok(put) => Ok(Some(self.e_tag_of(kind, id, put.e_tag)?)),
            // AWS answers an `If-Match` on a removed object with 404, others with 412.
            Err(
                object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
            ) => Ok(None),
            Err(e) => Err(self.err(kind, id)(e)),
        }
    }

    fn delete(&self, kind: FileKind, id: &str) -> Result<(), BackendError> {
        kind.check_id(id, || self.location(kind, id))?;
        let store = self.store.clone();
        let key = self.key(&layout::path_of(kind, id));
        match self
            .run(
                &format!("delete {key}"),
                async move { store.delete(&key).await },
            )
            .map_err(|e| BackendError::new(self.location(kind, id), e))?
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(kind, id)(e)),
        }
    }

    /// Removes leftover temporary files in the scratch directory. An interrupted
    /// multipart upload stays invisible in the bucket (a lifecycle rule that aborts
    /// incomplete uploads after a day reclaims its parts).
    fn clean_tmp(&self) -> Result<usize, BackendError> {
        let mut n = 0;
        let entries = match std::fs::read_dir(&self.scratch) {
            Ok(it) => it,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(BackendError::new(&self.scratch, e)),
        };
        for entry in entries {
            let path = entry
                .map_err(|e| BackendError::new(&self.scratch, e))?
                .path();
            std::fs::remove_file(&path).map_err(|e| BackendError::new(&path, e))?;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::{settled_region, S3Backend, S3Config};
    use std::io;

    #[test]
    fn the_region_is_the_one_given_else_the_aws_variables_else_us_east_1() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let both = env(&[
            ("AWS_REGION", "eu-west-1"),
            ("AWS_DEFAULT_REGION", "eu-north-1"),
        ]);
        assert_eq!(settled_region(Some("ap-south-1"), both), "ap-south-1");
        assert_eq!(settled_region(None, both), "eu-west-1");
        let default_only = env(&[("AWS_REGION", " "), ("AWS_DEFAULT_REGION", "eu-north-1")]);
        assert_eq!(settled_region(None, default_only), "eu-north-1");
        assert_eq!(settled_region(None, env(&[])), "us-east-1");
    }

    /// A certificate from a private CA gets the advice of `--ca-bundle`; one refused
    /// for its name or dates does not (a CA bundle would not help).
    #[test]
    fn a_refused_certificate_is_told_apart_by_why() {
        use super::{refused_certificate, CertificateRefusal};
        assert_eq!(
            refused_certificate("invalid peer certificate: UnknownIssuer"),
            Some(CertificateRefusal::UnknownIssuer)
        );
        assert_eq!(
            refused_certificate(
                "invalid peer certificate: certificate not valid for name \"localhost\"; certificate is only valid for IpAddress(127.0.0.1)"
            ),
            Some(CertificateRefusal::Other)
        );
        assert_eq!(
            refused_certificate("Connection refused (os error 111)"),
            None
        );
    }

    /// A streamed read ends only at the object's end: a body whose reading task stops
    /// early is an error naming the object, not a shorter object.
    #[test]
    fn a_read_that_breaks_off_is_an_error_not_a_short_object() {
        use std::io::Read;
        let read_all = |end: bool| {
            let (tx, rx) = std::sync::mpsc::sync_channel(4);
            tx.send(Ok(Some(bytes::Bytes::from_static(b"the first part"))))
                .unwrap();
            if end {
                tx.send(Ok(None)).unwrap();
            }
            drop(tx);
            let mut reader = super::StreamReader {
                chunks: rx,
                current: bytes::Bytes::new(),
                ended: false,
                location: "s3://bkt/blobs/ab/abcd".into(),
            };
            let mut got = Vec::new();
            reader.read_to_end(&mut got).map(|_| got)
        };
        assert_eq!(read_all(true).unwrap(), b"the first part");
        let broke = read_all(false).unwrap_err().to_string();
        assert!(
            broke.contains("s3://bkt/blobs/ab/abcd") && broke.contains("broke off"),
            "{broke}"
        );
    }

    /// A 403 says what the store said: the keys only for a code about the keys.
    #[test]
    fn a_refusal_names_the_keys_only_when_they_were_refused() {
        let config = S3Config {
            bucket: "bkt".into(),
            prefix: String::new(),
            endpoint: Some("http://127.0.0.1:9".into()),
            region: None,
            path_style: true,
            access_key_id: Some("id".into()),
            secret_access_key: Some("not-a-real-secret".to_string().into()),
            session_token: None,
            ca_bundle_pem: None,
        };
        let scratch = std::env::temp_dir();
        let backend = S3Backend::new(config, scratch).expect("a backend, nothing sent");
        let refused = |code: &str, message: &str| {
            let body = format!("<Error><Code>{code}</Code><Message>{message}</Message></Error>");
            let e = object_store::Error::PermissionDenied {
                path: "blobs/ab/abcd".into(),
                source: body.into(),
            };
            backend.io_error(e)
        };
        let quota = refused(
            "QuotaExceeded",
            "The bucket&#39;s quota of 10 GiB is used up.",
        );
        assert_eq!(quota.kind(), io::ErrorKind::PermissionDenied);
        let said = quota.to_string();
        assert!(
            said.contains("the store refused the request (QuotaExceeded): The bucket's quota of 10 GiB is used up.")
                && said.contains("http://127.0.0.1:9")
                && !said.contains("credentials"),
            "{said}"
        );
        let denied = |code: &str, request: &str| {
            let text = format!("Error performing {request} in 12ms - Server returned non-2xx status code: 403 Forbidden: <Error><Code>{code}</Code><Message>no</Message></Error>");
            backend.io_error(object_store::Error::Generic {
                store: "S3",
                source: text.into(),
            })
        };
        let cases = [
            ("DELETE http://s/bkt/blobs/ab/abcd", "a DELETE", "s3:DeleteObject on the bucket bkt"),
            ("POST http://s/bkt?delete", "a POST", "s3:DeleteObject on"),
            ("DELETE http://s/bkt/b?uploadId=7", "a DELETE", "s3:AbortMultipartUpload on"),
            ("PUT http://s/bkt/blobs/ab/abcd", "a PUT", "s3:PutObject on"),
            ("GET http://s/bkt?list-type=2&prefix=x", "a GET", "s3:ListBucket on"),
            ("GET http://s/bkt/FORMAT", "a GET", "s3:GetObject (and s3:ListBucket, without which a missing object is refused rather than not found) on"),
        ];
        for (request, refused_what, allow) in cases {
            let e = denied("AccessDenied", request);
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{request}");
            let said = e.to_string();
            assert!(
                said.contains(&format!(
                    "the credentials were refused {refused_what} (AccessDenied)"
                )) && said.contains(&format!("the bucket's policy allow {allow}")),
                "{request}: {said}"
            );
        }
        let unnamed = refused("AccessDenied", "Access Denied.").to_string();
        assert!(
            unnamed
                .contains("the credentials were refused (AccessDenied): check the access key id")
                && unnamed.contains("may use the bucket bkt"),
            "{unnamed}"
        );
        let keys = refused("InvalidAccessKeyId", "The key id you gave does not exist.");
        let said = keys.to_string();
        assert!(
            said.contains("the credentials were refused (InvalidAccessKeyId)")
                && !said.contains("does not exist"),
            "{said}"
        );
    }

    #[test]
    fn s3_urls_are_parsed_and_bad_ones_named() {
        assert_eq!(
            S3Config::parse_url("s3://backups/reposafe/main/").unwrap(),
            ("backups".to_string(), "reposafe/main".to_string())
        );
        assert_eq!(
            S3Config::parse_url("s3://backups").unwrap(),
            ("backups".to_string(), String::new())
        );
        for bad in [
            "http://x/y",
            "s3://B/x",
            "s3://ab",
            "s3://okay/../x",
            "s3://okay/a b",
        ] {
            let e = S3Config::parse_url(bad).unwrap_err();
            assert!(e.contains(bad.trim_end_matches('/')), "{e}");
        }
    }
}
