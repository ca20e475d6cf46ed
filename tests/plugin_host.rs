//! The provider host against hostile and broken plugins.
//!
//! Uses the test-fixture components of `tests/fixtures/dist/` (built by
//! `plugins/build.sh` from `tests/fixtures/*-provider/`):
//!
//! * `misbehaving-provider.wasm` (id `misbehaving`) traps, loops, exhausts its
//!   memory or tries to get around the HTTP gate, as its `mode` setting says;
//! * `wrong-version-provider.wasm` is built for `reposafe:provider@9.0.0`;
//! * `cloud-v0-1-provider.wasm` (id `bitbucket-cloud`) is the Bitbucket Cloud
//!   provider as released for world 0.1.0 (`wit/v0.1/`, no `principal` export);
//! * `cloud-v0-2-provider.wasm` (id `bitbucket-cloud`) is the Bitbucket Cloud
//!   provider as released for world 0.2.0 (`wit/v0.2/`, no metadata exports);
//! * `cloud-v0-3-provider.wasm` (id `bitbucket-cloud`) is the Bitbucket Cloud
//!   provider as released for world 0.3.0 (`wit/v0.3/`, no restore exports);
//! * `example-provider.wasm` (id `example`) is the example of `plugins/README.md`.
//!
//! Checks that each misbehaviour becomes a clear error in bounded time, that a
//! failed call does not poison the provider, that the host refuses plugin-set
//! credentials and foreign hosts and adds the credential itself, that bad
//! plugin files are reported by name without stopping the others, that
//! compiled components are cached, and that every released world version keeps
//! loading (a 0.1 provider lists and backs up through the host and the binary, a
//! 0.2 provider lists and has git as its only part) while an unsupported one is
//! refused naming the supported versions; every call but the restore calls of
//! world 0.4.0 only reads, whatever the gate allows, those write only through a
//! gate allowing writes, and `files.read` reads only the files of the documents
//! being restored (a 0.3 provider finds repositories by listing and cannot restore).

mod common;

use reposafe::providers::{
    FileSource, LoadedProvider, NewRepository, ProviderError, ProviderRegistry, ProviderSession,
    RestoreContext, RestoreDocument, RestoreFile, RestoredDocument,
};
use reposafe::vault::CredentialKind;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// The credential's secret; the plugin must never be able to set or see a
/// credential of its own making, and the host must add exactly this one.
const SECRET: &str = "reposafe-test-secret-8c1f0e";

/// A misbehaving call must end well within this.
const BOUND: Duration = Duration::from_secs(30);

const MISBEHAVING_WASM: &[u8] = include_bytes!("fixtures/dist/misbehaving-provider.wasm");
const WRONG_VERSION_WASM: &[u8] = include_bytes!("fixtures/dist/wrong-version-provider.wasm");
const CLOUD_V0_1_WASM: &[u8] = include_bytes!("fixtures/dist/cloud-v0-1-provider.wasm");
const CLOUD_V0_2_WASM: &[u8] = include_bytes!("fixtures/dist/cloud-v0-2-provider.wasm");
const CLOUD_V0_3_WASM: &[u8] = include_bytes!("fixtures/dist/cloud-v0-3-provider.wasm");
const EXAMPLE_WASM: &[u8] = include_bytes!("fixtures/dist/example-provider.wasm");
/// Not WebAssembly at all.
const GARBAGE_WASM: &[u8] = b"this is not a WebAssembly file\n";
/// The smallest valid core WebAssembly module: a module, not a component.
const CORE_MODULE_WASM: &[u8] = b"\0asm\x01\0\0\0";

/// Writes a plugins directory: the fixtures, two broken files and a file that is
/// not `*.wasm` (ignored).
fn write_plugins_dir(dir: &Path) {
    std::fs::write(dir.join("misbehaving-provider.wasm"), MISBEHAVING_WASM).unwrap();
    std::fs::write(dir.join("wrong-version-provider.wasm"), WRONG_VERSION_WASM).unwrap();
    std::fs::write(dir.join("garbage.wasm"), GARBAGE_WASM).unwrap();
    std::fs::write(dir.join("core-module.wasm"), CORE_MODULE_WASM).unwrap();
    std::fs::write(dir.join("README.txt"), "not a plugin").unwrap();
}

/// The registry shared by the tests (compiling the components once).
struct Shared {
    registry: ProviderRegistry,
    plugins_dir: PathBuf,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        // Both directories are removed again right away: the registry keeps the
        // compiled components in memory.
        let plugins = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        write_plugins_dir(plugins.path());
        let t = Instant::now();
        let registry = ProviderRegistry::load(Some(plugins.path()), Some(cache.path()))
            .expect("the registry loads even when some plugins are broken");
        eprintln!("registry loaded in {:?}", t.elapsed());
        Shared {
            registry,
            plugins_dir: plugins.path().to_path_buf(),
        }
    })
}

fn misbehaving() -> &'static LoadedProvider {
    shared()
        .registry
        .get("misbehaving")
        .expect("the misbehaving fixture provider is loaded")
}

/// The address of the fixture's `exfil-url` default (`http://127.0.0.1:47391`).
const EXFIL_ADDR: &str = "127.0.0.1:47391";
/// A URL nothing listens on, for the fixture's URL settings a test does not use.
const UNUSED_URL: &str = "http://127.0.0.1:9";

/// The misbehaving fixture's settings: `mode`, its API at `api_base` (or a URL
/// nothing listens on) and no foreign default.
fn mode_settings(mode: &str, api_base: Option<&str>) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("mode".to_string(), mode.to_string()),
        (
            "api-base-url".to_string(),
            api_base.unwrap_or(UNUSED_URL).to_string(),
        ),
        ("exfil-url".to_string(), UNUSED_URL.to_string()),
    ])
}

/// A session of `provider` for an access token with `SECRET`, built the way
/// `engine::connections::gate_for` does, without retries. Its URL settings are
/// set explicitly (`api_base`, or a URL nothing listens on).
fn session<'a>(
    provider: &'a LoadedProvider,
    mode: &str,
    api_base: Option<&str>,
) -> ProviderSession<'a> {
    let given = mode_settings(mode, api_base);
    let info = provider.info();
    let settings = info.resolve_settings(&given).expect("valid settings");
    let origins = info.credential_origins(&given, &settings);
    gate_session(provider, &settings, &origins, false)
}

/// A session of `provider` with `settings` as stored, whose credential may go to
/// `origins`; `writes`: the gate grants write methods.
fn gate_session<'a>(
    provider: &'a LoadedProvider,
    settings: &BTreeMap<String, String>,
    origins: &[String],
    writes: bool,
) -> ProviderSession<'a> {
    let mut gate =
        common::sessions::gate(provider, origins, CredentialKind::AccessToken, None, SECRET);
    if writes {
        gate = gate.allowing_writes();
    }
    provider.session(settings, CredentialKind::AccessToken, Arc::new(gate))
}

/// The provider still answers normally (a failed call must not poison it).
fn assert_still_works(provider: &LoadedProvider) {
    let s = session(provider, "ok", None);
    let scopes = s.list_scopes().expect("mode ok lists its scope");
    assert_eq!(scopes.len(), 1);
    assert_eq!(scopes[0].key, "ws");
    let repos = s
        .list_repositories("ws")
        .expect("mode ok lists its repository");
    assert_eq!(repos.len(), 1);
    assert_eq!(repos[0].full_name, "ws/repo");
}

/// Runs `list_scopes` in `mode` and returns the plugin failure's reason.
fn plugin_failure(mode: &str) -> String {
    let p = misbehaving();
    let s = session(p, mode, None);
    let t = Instant::now();
    let result = s.list_scopes();
    let elapsed = t.elapsed();
    eprintln!("mode {mode}: {elapsed:?}: {result:?}");
    assert!(
        elapsed < BOUND,
        "mode {mode} took {elapsed:?}, more than {BOUND:?}"
    );
    let reason = match result {
        Err(ProviderError::Plugin { provider, reason }) => {
            assert_eq!(provider, "misbehaving");
            reason
        }
        other => panic!("mode {mode}: expected ProviderError::Plugin, got {other:?}"),
    };
    assert!(!reason.contains(SECRET));
    // The same provider, the same list call kind, works right after.
    assert_still_works(p);
    reason
}

/// Runs `list_scopes` in `mode` and returns the `provider-error::http` text the
/// fixture made of what `http.send` answered.
fn http_report(mode: &str, api_base: Option<&str>) -> String {
    let s = session(misbehaving(), mode, api_base);
    match s.list_scopes() {
        Err(ProviderError::Http(text)) => {
            eprintln!("mode {mode}: {text}");
            text
        }
        other => panic!("mode {mode}: expected ProviderError::Http, got {other:?}"),
    }
}

// --- Loading -------------------------------------------------------------------

#[test]
fn builtin_and_plugin_providers_load_and_bad_files_are_reported_by_name() {
    let sh = shared();
    let infos = sh.registry.infos();
    let builtin = infos
        .iter()
        .find(|i| i.id == "bitbucket-cloud")
        .expect("the built-in bitbucket-cloud provider is loaded");
    assert_eq!(builtin.origin, "built-in");
    let dc = infos
        .iter()
        .find(|i| i.id == "bitbucket-dc")
        .expect("the built-in bitbucket-dc provider is loaded");
    assert_eq!(dc.origin, "built-in");
    assert_eq!(dc.display_name, "Bitbucket Data Center");
    let dc_kinds: Vec<CredentialKind> = dc.credential_kinds.iter().map(|c| c.kind).collect();
    assert_eq!(
        dc_kinds,
        [CredentialKind::HttpAccessToken, CredentialKind::Basic]
    );
    assert!(dc
        .settings
        .iter()
        .any(|s| s.name == "base-url" && s.required && s.is_url));

    let m = misbehaving().info();
    assert_eq!(m.display_name, "Misbehaving test provider");
    assert!(
        m.origin.ends_with("misbehaving-provider.wasm"),
        "origin {}",
        m.origin
    );
    let names: Vec<(&str, bool, bool, Option<&str>)> = m
        .settings
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.required,
                s.is_url,
                s.default_value.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("mode", true, false, None),
            ("api-base-url", false, true, Some("http://127.0.0.1:9")),
            ("exfil-url", false, true, Some("http://127.0.0.1:47391")),
        ]
    );
    let support = m.support_for(CredentialKind::AccessToken).unwrap();
    assert_eq!(support.api, reposafe::providers::AuthScheme::Bearer);
    assert_eq!(
        support.git,
        reposafe::providers::AuthScheme::BasicFixedUser("x-token-auth".into())
    );
    assert!(m.support_for(CredentialKind::ApiToken).is_err());
    // `mode` is required.
    match m.resolve_settings(&BTreeMap::new()) {
        Err(ProviderError::InvalidSettings(msg)) => assert!(msg.contains("\"mode\""), "{msg}"),
        other => panic!("expected InvalidSettings, got {other:?}"),
    }

    // Exactly the three broken files failed, each named in its error.
    assert_eq!(infos.len(), 3, "loaded: {infos:?}");
    let errors: Vec<String> = sh
        .registry
        .load_errors
        .iter()
        .map(|e| {
            assert!(matches!(e, ProviderError::Load { .. }), "{e:?}");
            e.to_string()
        })
        .collect();
    for e in &errors {
        eprintln!("load error: {e}");
    }
    assert_eq!(errors.len(), 3, "{errors:#?}");
    let error_for = |file: &str| {
        let path = sh.plugins_dir.join(file).display().to_string();
        errors
            .iter()
            .find(|e| e.contains(&path))
            .unwrap_or_else(|| panic!("no load error names {path}: {errors:#?}"))
            .clone()
    };
    let garbage = error_for("garbage.wasm");
    assert!(
        garbage.contains("not a valid WebAssembly component"),
        "{garbage}"
    );
    let core = error_for("core-module.wasm");
    assert!(core.contains("not a valid WebAssembly component"), "{core}");
    let wrong = error_for("wrong-version-provider.wasm");
    assert!(
        wrong.contains("it is built for reposafe:provider@9.0.0"),
        "names the version it wants: {wrong}"
    );
    assert!(
        wrong.contains("supported versions: 0.5.0, 0.4.0, 0.3.0, 0.2.0, 0.1.0"),
        "names the versions this host implements: {wrong}"
    );
    assert!(!errors.iter().any(|e| e.contains("README.txt")));
}

// --- Containment -----------------------------------------------------------------

#[test]
fn a_trapping_plugin_fails_cleanly() {
    let reason = plugin_failure("trap");
    assert!(
        reason.contains("crashed") || reason.contains("unreachable"),
        "{reason}"
    );
}

#[test]
fn a_looping_plugin_is_stopped_by_the_cpu_budget() {
    let reason = plugin_failure("loop");
    assert!(reason.contains("CPU budget"), "{reason}");
}

#[test]
fn a_plugin_exhausting_memory_is_stopped_by_the_memory_limit() {
    let reason = plugin_failure("oom");
    assert!(reason.contains("memory"), "{reason}");
    assert!(reason.contains("64 MiB"), "{reason}");
}

#[test]
fn misbehaviour_while_listing_repositories_is_contained_too() {
    let p = misbehaving();
    for mode in ["trap", "loop", "oom"] {
        let t = Instant::now();
        let r = session(p, mode, None).list_repositories("ws");
        assert!(t.elapsed() < BOUND, "mode {mode} took {:?}", t.elapsed());
        assert!(
            matches!(r, Err(ProviderError::Plugin { .. })),
            "mode {mode}: {r:?}"
        );
    }
    assert_still_works(p);
}

#[test]
fn an_unknown_mode_is_an_ordinary_provider_error() {
    match session(misbehaving(), "dance", None).list_scopes() {
        Err(ProviderError::InvalidSettings(m)) => assert!(m.contains("dance"), "{m}"),
        other => panic!("expected InvalidSettings, got {other:?}"),
    }
}

// --- The HTTP gate -----------------------------------------------------------------

/// A one-purpose HTTP server on the loopback: answers every request with
/// `200 OK` and the request's head (request line and headers) as the body,
/// followed by [`Answer::padding`] bytes, with [`Answer::extra_headers`].
/// Stops when dropped, and after a minute in any case.
struct EchoServer {
    url: String,
    requests: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

/// What an [`EchoServer`] adds to its answers.
#[derive(Clone, Copy)]
struct Answer {
    /// Bytes appended to the echoed head in the body.
    padding: usize,
    /// Extra response header lines (each ending in `\r\n`), given the request's head.
    extra_headers: fn(&str) -> String,
}

impl Answer {
    const PLAIN: Answer = Answer {
        padding: 0,
        extra_headers: |_| String::new(),
    };
}

impl EchoServer {
    fn start() -> EchoServer {
        Self::start_at("127.0.0.1:0")
    }

    fn start_at(addr: &str) -> EchoServer {
        Self::start_answering(addr, Answer::PLAIN)
    }

    fn start_answering(addr: &str, answer: Answer) -> EchoServer {
        // A fixed address may take a moment to be free again after another test.
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(addr) {
                Ok(l) => break l,
                Err(e) if tries < 100 => {
                    tries += 1;
                    eprintln!("{addr}: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("cannot listen on {addr}: {e}"),
            }
        };
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, h, s) = (requests.clone(), heads.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => Self::serve(stream, answer, &r, &h),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(_) => break,
                }
            }
        });
        EchoServer {
            url,
            requests,
            heads,
            stop,
        }
    }

    /// Answers one request. It is counted (and its head kept) before the answer is
    /// written, so a client that has its answer always finds its request counted.
    fn serve(
        stream: TcpStream,
        answer: Answer,
        requests: &AtomicUsize,
        heads: &Mutex<Vec<String>>,
    ) {
        let _ = Self::answer(stream, answer, &|head: &str| {
            requests.fetch_add(1, Ordering::SeqCst);
            heads.lock().unwrap().push(head.to_string());
        });
    }

    fn answer(mut stream: TcpStream, answer: Answer, count: &dyn Fn(&str)) -> Option<()> {
        stream.set_nonblocking(false).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 64 << 10 {
            let n = stream.read(&mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        count(&head);
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n{head}",
            head.len() + answer.padding,
            (answer.extra_headers)(&head)
        );
        stream.write_all(response.as_bytes()).ok()?;
        if answer.padding > 0 {
            stream.write_all(&vec![b'.'; answer.padding]).ok()?;
        }
        Some(())
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn a_plugin_cannot_set_its_own_authorization_header() {
    let server = EchoServer::start();
    let text = http_report("steal-auth", Some(&server.url));
    assert!(text.starts_with("denied: "), "{text}");
    assert!(
        text.contains("may not set the Authorization header"),
        "{text}"
    );
    assert_eq!(server.requests(), 0, "the request must not be sent at all");
}

#[test]
fn a_plugin_cannot_send_cookies() {
    let server = EchoServer::start();
    let text = http_report("cookie", Some(&server.url));
    assert!(text.starts_with("denied: "), "{text}");
    assert!(text.contains("may not set the Cookie header"), "{text}");
    assert_eq!(server.requests(), 0, "the request must not be sent at all");
}

/// Runs `list_scopes` of `s` and returns the reason of the plugin failure the
/// host made of a refused request (whatever the plugin did with the refusal).
fn refused(s: &ProviderSession<'_>, what: &str) -> String {
    match s.list_scopes() {
        Err(ProviderError::Plugin { provider, reason }) => {
            eprintln!("{what}: {reason}");
            assert_eq!(provider, "misbehaving", "names the plugin");
            assert!(
                reason.starts_with("it sent a request the host refused: "),
                "{reason}"
            );
            assert!(reason.contains("nothing was sent"), "{reason}");
            assert!(!reason.contains(SECRET));
            reason
        }
        other => panic!("{what}: expected ProviderError::Plugin, got {other:?}"),
    }
}

#[test]
fn a_plugin_cannot_reach_hosts_outside_the_allow_list() {
    let server = EchoServer::start();
    let reason = refused(
        &session(misbehaving(), "evil-host", Some(&server.url)),
        "evil-host",
    );
    assert!(
        reason.contains("GET http://evil.example.invalid/x"),
        "names the method and URL: {reason}"
    );
    assert!(
        reason.contains("evil.example.invalid is not in this connection's allow-list"),
        "{reason}"
    );
    assert!(
        reason.contains(&server.url),
        "names the allowed origin: {reason}"
    );
    assert_eq!(server.requests(), 0);
}

#[test]
fn a_plugin_cannot_write_while_listing() {
    let server = EchoServer::start();
    for (mode, method) in [("post", "POST"), ("delete", "DELETE")] {
        let s = session(misbehaving(), mode, Some(&server.url));
        let reason = refused(&s, mode);
        assert!(
            reason.contains(&format!("{method} {}/write", server.url)),
            "names the method and the URL: {reason}"
        );
        assert!(reason.contains("only reads (GET and HEAD)"), "{reason}");
        // Listing repositories is read-only too.
        let r = s.list_repositories("ws");
        assert!(
            matches!(&r, Err(ProviderError::Plugin { reason, .. }) if reason.contains(method)),
            "{r:?}"
        );
    }
    assert_eq!(
        server.requests(),
        0,
        "no write request is sent: {:?}",
        server.heads.lock().unwrap()
    );
    assert_still_works(misbehaving());
}

#[test]
fn trace_is_never_sent_even_when_writes_are_granted() {
    let server = EchoServer::start();
    let settings = mode_settings("trace", Some(&server.url));
    let origins = vec![server.url.clone()];
    for writes in [false, true] {
        let s = gate_session(misbehaving(), &settings, &origins, writes);
        let reason = refused(&s, "trace");
        assert!(
            reason.contains(&format!("TRACE {}/trace", server.url)),
            "{reason}"
        );
        assert!(reason.contains("never allowed"), "{reason}");
    }
    assert_eq!(server.requests(), 0);
}

/// A repository for the restore calls of the misbehaving fixture.
fn some_repository() -> reposafe::providers::Repository {
    reposafe::providers::Repository {
        id: "{r}".into(),
        full_name: "ws/r".into(),
        slug: "r".into(),
        scope: "ws".into(),
        clone_url: "http://127.0.0.1:9/ws/r.git".into(),
        is_private: true,
        main_branch: None,
        size: None,
        updated: None,
        has_wiki: false,
        has_lfs: false,
        fork_parent: None,
    }
}

fn restore_context() -> RestoreContext {
    RestoreContext {
        source_provider: "misbehaving".into(),
        source_full_name: "ws/r".into(),
        snapshot_taken_at: "2026-11-30T00:00:00Z".into(),
        renamed_refs: Vec::new(),
    }
}

/// Stored files by blob handle, recording which blobs were asked for.
#[derive(Default)]
struct MemoryFiles {
    blobs: BTreeMap<String, Vec<u8>>,
    asked: Mutex<Vec<String>>,
}

impl FileSource for MemoryFiles {
    fn read(&self, blob: &str, offset: u64, length: u32) -> Result<Vec<u8>, String> {
        self.asked.lock().unwrap().push(blob.to_string());
        let bytes = self.blobs.get(blob).ok_or("no such blob")?;
        let start = (offset as usize).min(bytes.len());
        let end = start.saturating_add(length as usize).min(bytes.len());
        Ok(bytes[start..end].to_vec())
    }
}

/// `restore-documents` of one document `1` of kind `things`, with `files`.
fn restore_things(
    s: &ProviderSession<'_>,
    files: Vec<RestoreFile>,
    source: Arc<MemoryFiles>,
) -> Result<Vec<RestoredDocument>, ProviderError> {
    let doc = RestoreDocument {
        id: "1".into(),
        updated_on: None,
        json: "{}".into(),
        files,
    };
    s.restore_documents(
        &some_repository(),
        "things",
        &restore_context(),
        &[doc],
        source,
    )
}

/// The reason of a call failed for a request the host refused.
fn refusal(r: Result<impl std::fmt::Debug, ProviderError>) -> String {
    match r {
        Err(ProviderError::Plugin { reason, .. }) => {
            assert!(
                reason.starts_with("it sent a request the host refused: "),
                "{reason}"
            );
            reason
        }
        other => panic!("expected a refused request, got {other:?}"),
    }
}

#[test]
fn writes_are_sent_only_inside_the_restore_calls_and_only_through_a_write_gate() {
    let server = EchoServer::start();
    let settings = mode_settings("post", Some(&server.url));
    let origins = vec![server.url.clone()];
    let only_reads = "this operation only reads (GET and HEAD), it may not write";
    // Every other call only reads, even on a gate that allows writes.
    let s = gate_session(misbehaving(), &settings, &origins, true);
    let repo = some_repository();
    for reason in [
        refusal(s.list_scopes()),
        refusal(s.list_documents(&repo, "things", None, None)),
        refusal(s.describe_repository(&repo)),
        refusal(s.find_repository("ws", "r")),
    ] {
        assert!(
            reason.contains(&format!("POST {}/write", server.url)),
            "{reason}"
        );
        assert!(reason.contains(only_reads), "{reason}");
    }
    assert_eq!(server.requests(), 0);
    // The restore calls write only through a gate built with writes.
    let s = gate_session(misbehaving(), &settings, &origins, false);
    let new = NewRepository {
        scope: "ws".into(),
        slug: "new".into(),
        project: None,
        source_provider: "misbehaving".into(),
        source: repo.clone(),
        original: None,
    };
    for reason in [
        refusal(restore_things(&s, Vec::new(), Arc::default())),
        refusal(s.create_repository(&new)),
    ] {
        assert!(reason.contains(only_reads), "{reason}");
    }
    assert_eq!(server.requests(), 0);
    let s = gate_session(misbehaving(), &settings, &origins, true);
    for r in [
        restore_things(&s, Vec::new(), Arc::default()).map(|_| ()),
        s.create_repository(&new).map(|_| ()),
    ] {
        assert!(
            matches!(&r, Err(ProviderError::Http(t)) if t.starts_with("status 200: POST /write ")),
            "{r:?}"
        );
    }
    assert_eq!(server.requests(), 2);
    // `restorable-kinds` has no HTTP at all.
    let kinds = s.restorable_kinds("misbehaving").expect("kinds");
    assert_eq!(kinds.len(), 1);
    assert_eq!(kinds[0].name, "things");
    assert_eq!(server.requests(), 2);
}

#[test]
fn restore_documents_reads_only_the_files_of_its_documents_4_mib_at_a_time() {
    let settings = mode_settings("read-files", None);
    let big = vec![7u8; (5 << 20) + 3];
    let source = Arc::new(MemoryFiles {
        blobs: BTreeMap::from([
            ("blob-big".to_string(), big),
            ("blob-small".to_string(), b"abc".to_vec()),
            ("not-mine".to_string(), b"someone else's".to_vec()),
        ]),
        asked: Mutex::default(),
    });
    let file = |name: &str, blob: &str, size: u64| RestoreFile {
        name: name.into(),
        blob: blob.into(),
        size,
    };
    let s = gate_session(misbehaving(), &settings, &[], true);
    let files = vec![
        file("big.bin", "blob-big", (5 << 20) + 3),
        file("small.txt", "blob-small", 3),
    ];
    let report = match restore_things(&s, files, source.clone()) {
        Err(ProviderError::Http(t)) => t,
        other => panic!("expected the fixture's report, got {other:?}"),
    };
    assert_eq!(
        report,
        format!(
            "big.bin: {} largest {}\nsmall.txt: 3 largest 3\nnot-mine: error: blob \"not-mine\" \
             is not a file of the documents being restored; only those may be read\n",
            (5 << 20) + 3,
            4 << 20
        )
    );
    let asked = source.asked.lock().unwrap().clone();
    assert!(!asked.contains(&"not-mine".to_string()), "{asked:?}");
}

/// The fixture's foreign default origin, listening (so a leak would be seen).
/// Held while it runs: only one test at a time can listen there.
fn exfil_server() -> (std::sync::MutexGuard<'static, ()>, EchoServer) {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    (guard, EchoServer::start_at(EXFIL_ADDR))
}

#[test]
fn a_plugin_default_url_is_never_trusted_with_the_credential() {
    let (_lock, exfil) = exfil_server();
    let api = EchoServer::start();
    let info = misbehaving().info();
    // Adding: an unset plugin URL setting with a default is refused by name.
    let given = BTreeMap::from([
        ("mode".to_string(), "exfil".to_string()),
        ("api-base-url".to_string(), api.url.clone()),
    ]);
    match info.resolve_settings(&given) {
        Err(ProviderError::InvalidSettings(m)) => {
            assert!(m.contains("\"exfil-url\""), "{m}");
            assert!(
                m.contains("set it explicitly with --set exfil-url=URL"),
                "{m}"
            );
            assert!(m.contains("misbehaving"), "names the plugin: {m}");
        }
        other => panic!("expected InvalidSettings, got {other:?}"),
    }
    // A connection stored before origins were fixed, with the default filled in:
    // the plugin's own default does not become an allowed origin.
    let mut stored = given.clone();
    stored.insert("exfil-url".to_string(), format!("http://{EXFIL_ADDR}"));
    let origins = info.allowed_origins(&stored);
    assert_eq!(origins, vec![api.url.clone()]);
    let reason = refused(
        &gate_session(misbehaving(), &stored, &origins, false),
        "exfil",
    );
    assert!(
        reason.contains(&format!("GET http://{EXFIL_ADDR}/steal")),
        "{reason}"
    );
    assert!(reason.contains("allow-list"), "{reason}");
    assert_eq!(
        exfil.requests(),
        0,
        "nothing reached the plugin's default origin"
    );
    assert_eq!(api.requests(), 0);
    // Set explicitly by the user, the same URL is allowed.
    stored.insert("mode".to_string(), "echo".to_string());
    let explicit = info.credential_origins(&stored, &stored);
    assert!(
        explicit.contains(&format!("http://{EXFIL_ADDR}")),
        "{explicit:?}"
    );
}

#[test]
fn the_host_adds_the_credential_and_nothing_else() {
    let server = EchoServer::start();
    let text = http_report("echo", Some(&server.url));
    assert!(
        text.starts_with("status 200: GET /echo HTTP/1.1\r\n"),
        "{text}"
    );
    assert_eq!(server.requests(), 1);
    let head = server.heads.lock().unwrap()[0].clone();
    assert!(text.ends_with(&head), "the plugin got the echoed head back");
    let headers: Vec<(String, String)> = head
        .split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').expect("header line");
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let auth: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k == "authorization")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        auth,
        [format!("Bearer {SECRET}")],
        "exactly the host's Authorization header: {head}"
    );
    for forbidden in ["cookie", "proxy-authorization"] {
        assert!(
            !headers.iter().any(|(k, _)| k == forbidden),
            "{forbidden} sent: {head}"
        );
    }
    // The secret is in the Authorization header and nowhere else.
    assert_eq!(head.matches(SECRET).count(), 1, "{head}");
}

// --- Per-call caps -------------------------------------------------------------

/// `list_scopes` of `s`, expecting a plugin failure of the misbehaving provider
/// within [`BOUND`]; returns the whole message.
fn capped(s: &ProviderSession<'_>, what: &str) -> String {
    let t = Instant::now();
    let result = s.list_scopes();
    eprintln!("{what}: {:?}: {result:?}", t.elapsed());
    assert!(t.elapsed() < BOUND, "{what} took {:?}", t.elapsed());
    match result {
        Err(e @ ProviderError::Plugin { .. }) => {
            let text = e.to_string();
            assert!(text.starts_with("provider misbehaving failed: "), "{text}");
            assert!(!text.contains(SECRET), "{text}");
            text
        }
        other => panic!("{what}: expected ProviderError::Plugin, got {other:?}"),
    }
}

#[test]
fn a_plugin_sending_too_many_requests_in_one_call_is_stopped_at_the_cap() {
    let server = EchoServer::start();
    let p = misbehaving();
    let text = capped(
        &session(p, "many-requests", Some(&server.url)),
        "many-requests",
    );
    assert!(
        text.contains("made more than 1000 HTTP requests in one call"),
        "{text}"
    );
    assert!(text.contains("no further request was sent"), "{text}");
    // The plugin kept asking 9,000 more times: none of them was sent.
    assert!(server.requests() <= 1001, "{} requests", server.requests());
    assert!(server.requests() >= 1000, "{} requests", server.requests());
    // The cap is per call: the same provider and server work right after.
    assert_still_works(p);
    let text = http_report("echo", Some(&server.url));
    assert!(text.starts_with("status 200: GET /echo"), "{text}");
}

#[test]
fn a_plugin_receiving_too_many_response_bytes_in_one_call_is_stopped_at_the_cap() {
    let server = EchoServer::start_answering(
        "127.0.0.1:0",
        Answer {
            padding: 1 << 20,
            ..Answer::PLAIN
        },
    );
    let p = misbehaving();
    let text = capped(
        &session(p, "many-requests", Some(&server.url)),
        "big bodies",
    );
    assert!(
        text.contains("received more than 64 MiB of HTTP response bodies in one call"),
        "{text}"
    );
    // 64 answers of just over 1 MiB make the 65th byte too many; nothing after it.
    assert!(server.requests() <= 65, "{} requests", server.requests());
    assert_still_works(p);
}

#[test]
fn a_plugin_returning_a_huge_string_is_stopped_and_the_host_keeps_working() {
    let p = misbehaving();
    // 100 MiB: more than the plugin's memory, so it cannot even build it.
    let reason = plugin_failure("huge-string");
    assert!(reason.contains("memory limit of 64 MiB"), "{reason}");
    // 20 MiB fits its memory but not what one call may return.
    let text = capped(&session(p, "big-string", None), "big-string");
    assert!(
        text.contains(
            "its scope list holds 20 MiB of text, more than the 16 MiB one call may return"
        ),
        "{text}"
    );
    for mode in ["huge-string", "big-string"] {
        match session(p, mode, None).list_repositories("ws") {
            Err(ProviderError::Plugin { provider, reason }) => {
                assert_eq!(provider, "misbehaving");
                if mode == "big-string" {
                    assert!(
                        reason.contains("its page of the repositories of ws holds 20 MiB"),
                        "{reason}"
                    );
                }
            }
            other => panic!("mode {mode}: expected ProviderError::Plugin, got {other:?}"),
        }
    }
    assert_still_works(p);
}

/// Response headers that set or carry credentials, and echoes of the request's
/// `Authorization` header (whole, and its token alone).
fn credential_headers(head: &str) -> String {
    let auth = head
        .split("\r\n")
        .find_map(|l| {
            l.strip_prefix("authorization: ")
                .or(l.strip_prefix("Authorization: "))
        })
        .unwrap_or("none");
    let token = auth.split_once(' ').map_or(auth, |(_, t)| t);
    format!(
        "Set-Cookie: session=s3ss10n\r\nSet-Cookie2: old=1\r\n\
         WWW-Authenticate: Bearer realm=\"api\"\r\nAuthentication-Info: nextnonce=\"n\"\r\n\
         X-Echo-Authorization: {auth}\r\nX-Echo-Token: token={token}\r\nX-Plain: visible\r\n"
    )
}

#[test]
fn a_plugin_never_gets_credential_or_cookie_response_headers() {
    let server = EchoServer::start_answering(
        "127.0.0.1:0",
        Answer {
            extra_headers: credential_headers,
            ..Answer::PLAIN
        },
    );
    let text = http_report("echo-headers", Some(&server.url));
    assert_eq!(server.requests(), 1);
    assert!(server.heads.lock().unwrap()[0].contains(SECRET));
    // Ordinary headers pass.
    assert!(text.contains("x-plain: visible\n"), "{text}");
    assert!(text.contains("content-type: text/plain\n"), "{text}");
    assert!(!text.contains(SECRET), "the credential came back: {text}");
    for hidden in [
        "set-cookie",
        "set-cookie2",
        "www-authenticate",
        "authentication-info",
        "x-echo-authorization",
        "x-echo-token",
    ] {
        assert!(
            !text.contains(&format!("{hidden}:")),
            "{hidden} passed: {text}"
        );
    }
}

// --- Compiled-component cache --------------------------------------------------------

fn cache_files(dir: &Path) -> Vec<(String, SystemTime, u64)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                meta.modified().unwrap(),
                meta.len(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn compiled_components_are_cached_and_reused() {
    let plugins = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    write_plugins_dir(plugins.path());

    let t = Instant::now();
    let first = ProviderRegistry::load(Some(plugins.path()), Some(cache.path())).unwrap();
    let cold = t.elapsed();
    let after_first = cache_files(cache.path());
    // bitbucket-cloud, bitbucket-dc, misbehaving and wrong-version compile (the last
    // one only fails when linked); the garbage and the core module do not.
    assert_eq!(after_first.len(), 4, "{after_first:?}");
    assert!(
        after_first
            .iter()
            .all(|(name, _, len)| name.ends_with(".cwasm") && *len > 0),
        "{after_first:?}"
    );
    assert!(first.get("misbehaving").is_ok());
    drop(first);

    let t = Instant::now();
    let second = ProviderRegistry::load(Some(plugins.path()), Some(cache.path())).unwrap();
    let warm = t.elapsed();
    eprintln!("registry load: cold (compiling) {cold:?}, warm (from the cache) {warm:?}");
    assert_eq!(
        cache_files(cache.path()),
        after_first,
        "the second load reads the cache and writes nothing"
    );
    assert_eq!(second.infos().len(), 3);
    assert_eq!(second.load_errors.len(), 3);
    assert_still_works(second.get("misbehaving").unwrap());
    // wasmtime maps cache files into memory: damaging one in place under a live
    // registry would crash the process (SIGBUS). reposafe itself only ever
    // replaces them by renaming a new file over them.
    drop(second);

    // A damaged cache file is ignored and replaced.
    let victim = cache.path().join(&after_first[0].0);
    std::fs::write(&victim, b"damaged").unwrap();
    let third = ProviderRegistry::load(Some(plugins.path()), Some(cache.path())).unwrap();
    assert_eq!(third.infos().len(), 3);
    assert_eq!(third.load_errors.len(), 3);
    assert!(std::fs::metadata(&victim).unwrap().len() > 7, "rewritten");
    assert_still_works(third.get("misbehaving").unwrap());
}

// --- World versions --------------------------------------------------------------

const WORKSPACE: &str = "acme";

/// A Cloud test server with `n` repositories in [`WORKSPACE`], readable with
/// the API token of `common::EMAIL`.
fn cloud_server(n: usize) -> (common::CloudServer, common::TempDir) {
    let server = common::CloudServer::start();
    let repos = common::TempDir::new("reposafe-v01-src");
    let made = common::gitutil::make_workspace_fixture(&server, WORKSPACE, n, repos.path());
    assert_eq!(made.len(), n);
    server.add_api_token("acct-1", common::EMAIL, common::API_TOKEN);
    server.grant("acct-1", WORKSPACE);
    (server, repos)
}

/// A session of a Cloud provider against `server` with the API token.
fn cloud_session<'a>(
    provider: &'a LoadedProvider,
    server: &common::CloudServer,
) -> ProviderSession<'a> {
    let base = server.base_url();
    let given = BTreeMap::from([
        ("workspace".to_string(), WORKSPACE.to_string()),
        ("api-base-url".to_string(), base.clone()),
        ("git-base-url".to_string(), base),
    ]);
    common::sessions::session(
        provider,
        &given,
        CredentialKind::ApiToken,
        Some(common::EMAIL),
        common::API_TOKEN,
    )
}

#[test]
fn each_component_is_linked_against_the_world_version_it_exports() {
    let reg = &shared().registry;
    for (id, version) in [
        ("bitbucket-cloud", "0.5.0"),
        ("bitbucket-dc", "0.5.0"),
        ("misbehaving", "0.5.0"),
    ] {
        let p = reg.get(id).expect("loaded");
        assert_eq!(p.wit_version(), version, "{id}");
    }

    let plugins = tempfile::tempdir().unwrap();
    std::fs::write(plugins.path().join("cloud-v0-1.wasm"), CLOUD_V0_1_WASM).unwrap();
    std::fs::write(plugins.path().join("example.wasm"), EXAMPLE_WASM).unwrap();
    let reg = ProviderRegistry::load_with(Some(plugins.path()), None, &override_cloud()).unwrap();
    assert!(reg.load_errors.is_empty(), "{:?}", reg.load_errors);
    let old = reg
        .get("bitbucket-cloud")
        .expect("the 0.1 provider is loaded");
    assert_eq!(old.wit_version(), "0.1.0");
    assert!(
        old.info().origin.ends_with("cloud-v0-1.wasm"),
        "the plugin replaces the built-in provider: {}",
        old.info().origin
    );
    assert_eq!(old.info().display_name, "Bitbucket Cloud");
    assert!(old.info().support_for(CredentialKind::ApiToken).is_ok());
    // The README's example is a provider of the world before (0.4.0): it loads.
    let example = reg.get("example").expect("the README example loads");
    assert_eq!(example.wit_version(), "0.4.0");
    assert_eq!(example.info().display_name, "Example hosting");
}

#[test]
fn a_provider_built_against_world_0_1_lists_through_the_host_and_has_no_principal() {
    let (server, _repos) = cloud_server(3);
    let plugins = tempfile::tempdir().unwrap();
    std::fs::write(plugins.path().join("bitbucket-cloud.wasm"), CLOUD_V0_1_WASM).unwrap();
    let reg = ProviderRegistry::load_with(Some(plugins.path()), None, &override_cloud()).unwrap();
    let old = reg.get("bitbucket-cloud").unwrap();
    assert_eq!(old.wit_version(), "0.1.0");

    let s = cloud_session(old, &server);
    let scopes = s.list_scopes().expect("the 0.1 provider lists its scope");
    assert_eq!(
        scopes.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(),
        [WORKSPACE]
    );
    let repos = s
        .list_repositories(WORKSPACE)
        .expect("the 0.1 provider lists the repositories");
    assert_eq!(repos.len(), 3, "{repos:?}");
    let base = server.base_url();
    for r in &repos {
        assert!(r.full_name.starts_with("acme/"), "{r:?}");
        assert!(r.clone_url.starts_with(&base), "{r:?}");
    }
    assert_eq!(
        s.verify().expect("verify").len(),
        1,
        "verify lists through the 0.1 provider too"
    );
    // World 0.1 has no `principal` export: "not provided", and no request made.
    server.clear_log();
    assert_eq!(s.principal().expect("no error"), None);
    assert!(
        server.request_log().is_empty(),
        "{:?}",
        server.request_log()
    );

    // The built-in 0.2 provider, asked the same, names the account: the 0.1
    // adapter's `None` is the same answer a 0.2 provider gives when it cannot tell.
    let builtin = shared().registry.get("bitbucket-cloud").unwrap();
    assert_eq!(builtin.wit_version(), "0.5.0");
    let principal = cloud_session(builtin, &server)
        .principal()
        .expect("the built-in provider asks /2.0/user");
    assert!(principal.is_some_and(|p| !p.is_empty()));
}

#[test]
fn a_provider_built_against_world_0_2_lists_and_has_git_as_its_only_part() {
    let (server, _repos) = cloud_server(2);
    let plugins = tempfile::tempdir().unwrap();
    std::fs::write(plugins.path().join("bitbucket-cloud.wasm"), CLOUD_V0_2_WASM).unwrap();
    let reg = ProviderRegistry::load_with(Some(plugins.path()), None, &override_cloud()).unwrap();
    assert!(reg.load_errors.is_empty(), "{:?}", reg.load_errors);
    let old = reg.get("bitbucket-cloud").unwrap();
    assert_eq!(old.wit_version(), "0.2.0");
    assert!(old.info().origin.ends_with("bitbucket-cloud.wasm"));

    let s = cloud_session(old, &server);
    let repos = s
        .list_repositories(WORKSPACE)
        .expect("the 0.2 provider lists the repositories");
    assert_eq!(repos.len(), 2, "{repos:?}");
    assert!(s.principal().expect("0.2 has principal").is_some());

    // World 0.2 has no metadata exports: git only, answered without a request.
    server.clear_log();
    assert_eq!(s.describe_repository(&repos[0]).expect("no error"), None);
    assert_eq!(s.describe_scope(WORKSPACE).expect("no error"), Vec::new());
    for r in [
        s.list_documents(&repos[0], "pullrequests", None, None),
        s.list_scope_documents(WORKSPACE, "projects", None),
    ] {
        match r {
            Err(e @ ProviderError::Unsupported { .. }) => {
                let text = e.to_string();
                assert!(text.contains("bitbucket-cloud"), "{text}");
                assert!(text.contains("reposafe:provider@0.2.0"), "{text}");
                assert!(text.contains("0.3.0 added it"), "{text}");
            }
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }
    assert!(
        server.request_log().is_empty(),
        "{:?}",
        server.request_log()
    );

    // The built-in 0.3 provider describes the same repository: LFS server and
    // metadata kinds, and lists its documents.
    let builtin = shared().registry.get("bitbucket-cloud").unwrap();
    let s = cloud_session(builtin, &server);
    let parts = s
        .describe_repository(&repos[0])
        .expect("no error")
        .expect("a 0.3 provider describes the repository");
    assert_eq!(
        parts.lfs_url.as_deref(),
        Some(format!("{}/info/lfs", repos[0].clone_url).as_str())
    );
    let kinds: Vec<&str> = parts.metadata.iter().map(|k| k.name.as_str()).collect();
    assert!(
        kinds.contains(&"pullrequests") && kinds.contains(&"repository"),
        "{kinds:?}"
    );
    let page = s
        .list_documents(&repos[0], "repository", None, None)
        .expect("the repository object is listed");
    assert_eq!(page.documents.len(), 1, "{page:?}");
    let doc = &page.documents[0];
    assert_eq!(
        (doc.kind.as_str(), doc.id.as_str()),
        ("repository", "repository")
    );
    let json: serde_json::Value = serde_json::from_str(&doc.json).expect("JSON");
    assert_eq!(json["full_name"], repos[0].full_name);
    assert_eq!(page.next, None);
}

#[test]
fn metadata_calls_only_read_even_when_writes_are_granted() {
    let server = EchoServer::start();
    let settings = mode_settings("post", Some(&server.url));
    let origins = vec![server.url.clone()];
    let s = gate_session(misbehaving(), &settings, &origins, true);
    let ok = session(misbehaving(), "ok", None);
    let repo = ok.list_repositories("ws").expect("mode ok lists")[0].clone();
    let results = [
        s.describe_repository(&repo).map(|_| ()),
        s.list_documents(&repo, "things", None, None).map(|_| ()),
        s.describe_scope("ws").map(|_| ()),
        s.list_scope_documents("ws", "things", None).map(|_| ()),
    ];
    for r in results {
        match r {
            Err(ProviderError::Plugin { reason, .. }) => {
                assert!(
                    reason.contains(&format!("POST {}/write", server.url)),
                    "{reason}"
                );
                assert!(reason.contains("only reads (GET and HEAD)"), "{reason}");
            }
            other => panic!("expected a refused write, got {other:?}"),
        }
    }
    assert_eq!(server.requests(), 0, "no write request is sent");
    // Mode ok: the fixture's one kind and document come through.
    let parts = ok.describe_repository(&repo).unwrap().unwrap();
    assert_eq!(parts.metadata[0].name, "things");
    let page = ok.list_documents(&repo, "things", None, None).unwrap();
    assert_eq!(page.documents[0].json, r#"{"id":1}"#);
}

#[test]
fn a_plugin_returning_a_huge_document_is_stopped_at_the_text_cap() {
    let s = session(misbehaving(), "big-string", None);
    let ok = session(misbehaving(), "ok", None);
    let repo = ok.list_repositories("ws").expect("mode ok lists")[0].clone();
    match s.list_documents(&repo, "things", None, None) {
        Err(ProviderError::Plugin { reason, .. }) => {
            assert!(reason.contains("MiB of text"), "{reason}");
            assert!(reason.contains("things"), "{reason}");
        }
        other => panic!("expected the text cap, got {other:?}"),
    }
    assert_still_works(misbehaving());
}

#[test]
fn a_provider_built_against_world_0_1_backs_up_through_the_binary() {
    let (server, _repos) = cloud_server(2);
    let rs = common::Reposafe::new();
    let plugins = rs.data_dir().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let plugin = plugins.join("bitbucket-cloud.wasm");
    std::fs::write(&plugin, CLOUD_V0_1_WASM).unwrap();

    let run = |args: &[&str]| with_override(rs.cmd(args));
    let listed = run(&["providers"]).ok();
    assert!(
        listed.stdout.contains(&format!("({})", plugin.display())),
        "the 0.1 plugin replaces the built-in Cloud provider: {}",
        listed.stdout
    );
    assert!(!listed.stdout.contains("not loaded"), "{}", listed.stdout);

    let token = rs.secret_file("token.txt", common::API_TOKEN);
    let token = token.display().to_string();
    let cred = [
        "--api-token-email",
        common::EMAIL,
        "--api-token-file",
        token.as_str(),
    ];
    let add = common::cloud_add_args(&server, &["--workspace", WORKSPACE], &cred);
    let add: Vec<&str> = add.iter().map(String::as_str).collect();
    let added = run(&add).ok();
    let base = server.base_url();
    assert!(
        added
            .stdout
            .contains(&format!("credential is sent only to: {base}\n")),
        "{}",
        added.stdout
    );
    let run = run(&["backup", WORKSPACE, "--json"]).ok();
    let report: serde_json::Value =
        serde_json::from_str(&run.stdout).expect("backup --json prints JSON");
    let outcomes: Vec<&str> = report["repositories"]
        .as_array()
        .expect("repositories")
        .iter()
        .map(|r| r["outcome"]["status"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(outcomes, ["snapshot", "snapshot"], "{report}");
}

/// The override that lets a plugin replace the built-in `bitbucket-cloud`.
fn override_cloud() -> Vec<String> {
    vec!["bitbucket-cloud".to_string()]
}

/// Runs `cmd` with the override of [`override_cloud`] enabled.
fn with_override(mut cmd: std::process::Command) -> common::Run {
    let out = cmd
        .env(reposafe::providers::OVERRIDE_ENV, "bitbucket-cloud")
        .output()
        .expect("run reposafe");
    common::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

// --- Which plugins load ------------------------------------------------------------

#[test]
fn a_plugin_with_a_builtin_id_is_refused_unless_the_override_is_enabled() {
    let plugins = tempfile::tempdir().unwrap();
    let file = plugins.path().join("cloud-v0-1.wasm");
    std::fs::write(&file, CLOUD_V0_1_WASM).unwrap();
    let reg = ProviderRegistry::load_with(Some(plugins.path()), None, &[]).unwrap();
    assert_eq!(
        reg.get("bitbucket-cloud").unwrap().info().origin,
        "built-in",
        "the built-in provider stays"
    );
    let errors: Vec<String> = reg.load_errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert!(
        e.contains(&file.display().to_string()),
        "names the file: {e}"
    );
    assert!(e.contains("built-in provider"), "{e}");
    assert!(
        e.contains("REPOSAFE_ALLOW_PLUGIN_OVERRIDE=bitbucket-cloud"),
        "says how to allow it: {e}"
    );
    // Enabled for another id, it is still refused.
    let other = ["bitbucket-dc".to_string()];
    let reg = ProviderRegistry::load_with(Some(plugins.path()), None, &other).unwrap();
    assert_eq!(
        reg.get("bitbucket-cloud").unwrap().info().origin,
        "built-in"
    );
    assert_eq!(reg.load_errors.len(), 1);
}

#[test]
fn plugin_files_others_can_write_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let plugins = tempfile::tempdir().unwrap();
    let file = plugins.path().join("misbehaving-provider.wasm");
    std::fs::write(&file, MISBEHAVING_WASM).unwrap();
    for mode in [0o666, 0o620, 0o602] {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let reg = ProviderRegistry::load_with(Some(plugins.path()), None, &[]).unwrap();
        assert!(reg.get("misbehaving").is_err(), "mode {mode:o} loaded");
        let e = reg.load_errors[0].to_string();
        assert!(
            e.contains(&file.display().to_string()),
            "names the file: {e}"
        );
        assert!(
            e.contains(&format!("mode {mode:04o}")),
            "names the mode: {e}"
        );
    }
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let reg = ProviderRegistry::load_with(Some(plugins.path()), None, &[]).unwrap();
    assert!(reg.get("misbehaving").is_ok(), "{:?}", reg.load_errors);
    // Owned by someone else (only root can give a file away).
    if std::os::unix::fs::chown(&file, Some(4242), None).is_ok() {
        let reg = ProviderRegistry::load_with(Some(plugins.path()), None, &[]).unwrap();
        assert!(reg.get("misbehaving").is_err());
        let e = reg.load_errors[0].to_string();
        assert!(e.contains(&file.display().to_string()), "{e}");
        assert!(e.contains("owned by uid 4242"), "{e}");
    } else {
        eprintln!("not root: the ownership check is not exercised here");
    }
}

// --- Where the credential goes, through the binary ------------------------------------

#[test]
fn connection_add_fixes_where_the_credential_goes() {
    let (_lock, exfil) = exfil_server();
    let api = EchoServer::start();
    let rs = common::Reposafe::new();
    let plugins = rs.data_dir().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::write(plugins.join("misbehaving.wasm"), MISBEHAVING_WASM).unwrap();
    let token = rs.secret_file("token.txt", SECRET).display().to_string();
    let api_set = format!("api-base-url={}", api.url);
    let add = |extra: &[&str]| {
        let mut args = vec![
            "connection",
            "add",
            "misbehaving",
            "--name",
            "m",
            "--set",
            "mode=exfil",
            "--set",
            &api_set,
            "--access-token-file",
            &token,
        ];
        args.extend_from_slice(extra);
        rs.run(&args)
    };
    let refused = add(&[]);
    assert_ne!(refused.code, 0, "{}", refused.all());
    assert!(
        refused
            .stderr
            .contains("set it explicitly with --set exfil-url=URL"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains(SECRET));
    assert_eq!(
        exfil.requests(),
        0,
        "nothing reached the plugin's default origin"
    );
    assert_eq!(api.requests(), 0);
    assert!(!rs
        .run(&["connection", "list"])
        .ok()
        .stdout
        .contains("misbehaving"));

    // Set explicitly, the origins are fixed and shown.
    let exfil_set = format!("exfil-url={}", api.url);
    let added = add(&["--set", &exfil_set, "--no-verify"]).ok();
    let line = format!("  credential is sent only to: {}\n", api.url);
    assert!(added.stdout.contains(&line), "{}", added.stdout);
    let listed = rs.run(&["connection", "list"]).ok();
    assert!(listed.stdout.contains(&line), "{}", listed.stdout);
    assert_eq!(exfil.requests(), 0);
}

#[test]
fn a_provider_built_against_world_0_3_finds_by_listing_and_cannot_restore() {
    let (server, _repos) = cloud_server(2);
    let plugins = tempfile::tempdir().unwrap();
    std::fs::write(plugins.path().join("bitbucket-cloud.wasm"), CLOUD_V0_3_WASM).unwrap();
    let reg = ProviderRegistry::load_with(Some(plugins.path()), None, &override_cloud()).unwrap();
    assert!(reg.load_errors.is_empty(), "{:?}", reg.load_errors);
    let old = reg.get("bitbucket-cloud").unwrap();
    assert_eq!(old.wit_version(), "0.3.0");
    let s = cloud_session(old, &server);
    let repos = s.list_repositories(WORKSPACE).expect("lists");
    // No find-repository export: the host looks for it in the scope's listing.
    server.clear_log();
    let found = s.find_repository(WORKSPACE, &repos[1].slug).expect("found");
    assert_eq!(found.as_ref(), Some(&repos[1]));
    assert!(server.request_log().iter().all(|r| r.method == "GET"
        && r.path
            .starts_with(&format!("/2.0/repositories/{WORKSPACE}?"))));
    assert_eq!(
        s.find_repository(WORKSPACE, "nope").expect("no error"),
        None
    );
    // The other restore calls fail naming the world, without calling the plugin.
    server.clear_log();
    let new = NewRepository {
        scope: WORKSPACE.into(),
        slug: "new".into(),
        project: None,
        source_provider: "bitbucket-cloud".into(),
        source: repos[0].clone(),
        original: None,
    };
    let ctx = RestoreContext {
        source_provider: "bitbucket-cloud".into(),
        source_full_name: repos[0].full_name.clone(),
        snapshot_taken_at: "2026-11-30T00:00:00Z".into(),
        renamed_refs: Vec::new(),
    };
    for (what, r) in [
        ("create-repository", s.create_repository(&new).map(|_| ())),
        (
            "restorable-kinds",
            s.restorable_kinds("bitbucket-cloud").map(|_| ()),
        ),
        (
            "restore-documents",
            s.restore_documents(
                &repos[0],
                "issues",
                &ctx,
                &[],
                Arc::new(MemoryFiles::default()),
            )
            .map(|_| ()),
        ),
    ] {
        match r {
            Err(e @ ProviderError::Unsupported { .. }) => {
                let text = e.to_string();
                assert!(text.contains("reposafe:provider@0.3.0"), "{text}");
                assert!(text.contains(what), "{text}");
                assert!(text.contains("0.4.0 added it"), "{text}");
            }
            other => panic!("{what}: expected Unsupported, got {other:?}"),
        }
    }
    // Nor register the push webhook (0.5.0 added it): the user pastes it by hand.
    let secret = secrecy::SecretString::from("a-webhook-secret-0123456789".to_string());
    let hook_url = "https://backup.example.com/hooks/acme";
    match s.register_webhook(WORKSPACE, hook_url, secret, "reposafe") {
        Err(e @ ProviderError::Unsupported { .. }) => {
            let text = e.to_string();
            assert!(text.contains("register-webhook"), "{text}");
            assert!(text.contains("0.5.0 added it"), "{text}");
            assert!(!text.contains("a-webhook-secret"), "{text}");
        }
        other => panic!("register-webhook: expected Unsupported, got {other:?}"),
    }
    assert!(
        server.request_log().is_empty(),
        "{:?}",
        server.request_log()
    );
}
