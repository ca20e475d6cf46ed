//! Mirror caches: creating them, fetching into them, and listing their packs.
//!
//! A mirror is a bare repository whose refs equal the remote's refs (`+refs/*:refs/*` with force,
//! deleted refs pruned, `HEAD` following the remote's). It is never repacked: each fetch that
//! receives objects adds exactly one pack. The refs are listed and the pack is negotiated with
//! gix-protocol; the pack stream itself is taken over by `pack_receive`, which writes and
//! indexes it in memory that does not grow with the pack. Thin packs sent by the server are
//! completed on arrival by inserting the missing base objects (gix's thin-pack lookup), so every
//! pack in a mirror is self-contained and can be indexed on its own during a restore.
//!
//! The first fetch builds the mirror in a temporary directory next to it and renames it into
//! place only on success, so a failed first fetch (bad credentials, missing repository) leaves
//! nothing behind.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use gix::bstr::ByteSlice as _;
use gix::protocol::transport::client::blocking_io::http;
use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};
use secrecy::{ExposeSecret as _, SecretString};

use super::{
    error::chain,
    pack_index::PackError,
    pack_receive::receive_pack,
    progress::{with_reporter, Quiet},
    url::{self, RemoteUrl},
    FetchOptions, FetchOutcome, GitAuth, GitError, PackFile, RefEntry, RefTarget,
};

/// Mirror every ref, forcing updates.
const MIRROR_REFSPEC: &str = "+refs/*:refs/*";
/// How long to wait for a TCP/TLS connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the server may stay silent (waiting for response headers, or between two reads of
/// the response body) before the transfer is abandoned.
const STALL_TIMEOUT: Duration = Duration::from_secs(180);

/// Configuration appended to every mirror we create. It keeps `git` itself, should anyone run it
/// in a mirror, from repacking or pruning, which would break the one-pack-per-fetch invariant.
const MIRROR_CONFIG: &str = "\
[core]
\tlogAllRefUpdates = false
[gc]
\tauto = 0
\tautoDetach = false
[maintenance]
\tauto = false
[receive]
\tautogc = false
[fetch]
\twriteCommitGraph = false
";

/// In-memory configuration for every repository this module opens.
fn config_overrides() -> [&'static str; 2] {
    ["core.logAllRefUpdates=false", "gc.auto=0"]
}

/// Create (if missing) or update the bare mirror at `mirror` from `opts.url`.
///
/// Fetches `+refs/*:refs/*` with force and prunes refs the remote no longer has, then points
/// `HEAD` where the remote's `HEAD` points. The first run clones; later runs negotiate with what
/// the mirror has, and a remote whose refs did not change costs one ref listing and writes
/// nothing. An empty remote repository is not an error. Never repacks.
///
/// The authentication header is only held in memory and attached to HTTP requests; credential
/// helpers and prompts are never used, so a rejected credential fails at once with
/// [`GitError::Unauthorized`].
pub fn fetch_mirror(mirror: &Path, opts: &FetchOptions) -> Result<FetchOutcome, GitError> {
    let remote = url::parse(opts.url)?;
    let auth = match opts.auth {
        GitAuth::Header(value) | GitAuth::Paced { header: value, .. } => Some(value.clone()),
        GitAuth::None => remote.basic_auth.clone(),
    };
    if let Some(value) = &auth {
        validate_header_value(value, &remote.display)?;
    }
    if opts.should_interrupt.load(Ordering::Relaxed) {
        return Err(GitError::Interrupted {
            url: remote.display.clone(),
        });
    }

    let started = Instant::now();
    tracing::info!(target: "reposafe::git", url = %remote.display, mirror = %mirror.display(), "fetching into mirror");
    let outcome = match mirror_state(mirror)? {
        MirrorState::Existing => {
            let repo = open_mirror(mirror)?;
            let mut out = fetch_into(&repo, mirror, &remote, auth.as_ref(), opts)?;
            out.cloned = false;
            out
        }
        state @ (MirrorState::Absent | MirrorState::EmptyDir) => {
            clone_into_new_mirror(mirror, state, &remote, auth.as_ref(), opts)?
        }
    };
    tracing::info!(
        target: "reposafe::git",
        url = %remote.display,
        refs = outcome.refs.len(),
        packs = outcome.packs.len(),
        new_packs = outcome.new_packs,
        bytes = outcome.bytes_received,
        cloned = outcome.cloned,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "fetch finished"
    );
    Ok(outcome)
}

/// List the packs of the mirror at `mirror`, sorted by pack hash.
///
/// Only complete packs are listed: a `pack-<hash>.pack` with its `.idx` next to it.
pub fn list_packs(mirror: &Path) -> Result<Vec<PackFile>, GitError> {
    let dir = mirror.join("objects").join("pack");
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && mirror.is_dir() => {
            return Err(GitError::InvalidMirror {
                path: mirror.to_owned(),
                message: "it has no objects/pack directory".into(),
            });
        }
        Err(err) => return Err(GitError::io("list packs in", dir, err)),
    };
    let mut packs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|err| GitError::io("list packs in", &dir, err))?;
        let file_name = entry.file_name();
        let Some(hash) = file_name
            .to_str()
            .and_then(|name| name.strip_prefix("pack-"))
            .and_then(|name| name.strip_suffix(".pack"))
        else {
            continue;
        };
        if !is_hex_hash(hash) {
            continue;
        }
        let path = entry.path();
        if !path.with_extension("idx").is_file() {
            // Still being written, or left behind by a crash before its index was in place.
            continue;
        }
        let size = entry
            .metadata()
            .map_err(|err| GitError::io("read metadata of", &path, err))?
            .len();
        packs.push(PackFile {
            path,
            pack_hash: hash.to_owned(),
            size,
        });
    }
    packs.sort_by(|a, b| a.pack_hash.cmp(&b.pack_hash));
    Ok(packs)
}

fn is_hex_hash(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64)
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

enum MirrorState {
    Absent,
    EmptyDir,
    Existing,
}

fn mirror_state(mirror: &Path) -> Result<MirrorState, GitError> {
    match fs::symlink_metadata(mirror) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(MirrorState::Absent),
        Err(err) => Err(GitError::io("inspect", mirror, err)),
        Ok(meta) if meta.is_dir() => {
            let mut entries =
                fs::read_dir(mirror).map_err(|err| GitError::io("read directory", mirror, err))?;
            Ok(if entries.next().is_none() {
                MirrorState::EmptyDir
            } else {
                MirrorState::Existing
            })
        }
        Ok(_) => Err(GitError::InvalidMirror {
            path: mirror.to_owned(),
            message: "it exists but is not a directory".into(),
        }),
    }
}

fn clone_into_new_mirror(
    mirror: &Path,
    state: MirrorState,
    remote: &RemoteUrl,
    auth: Option<&SecretString>,
    opts: &FetchOptions,
) -> Result<FetchOutcome, GitError> {
    let parent = match mirror.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(|err| GitError::io("create directory", &parent, err))?;
    let name = mirror
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "mirror".into());
    let prefix = format!(".{name}.reposafe-new-");
    remove_leftovers(&parent, &prefix);
    let staging = tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(&parent)
        .map_err(|err| GitError::io("create temporary directory in", &parent, err))?;

    init_bare(staging.path(), true)?;
    let repo = open_mirror(staging.path())?;
    let mut out = fetch_into(&repo, staging.path(), remote, auth, opts)?;
    drop(repo);

    if matches!(state, MirrorState::EmptyDir) {
        fs::remove_dir(mirror)
            .map_err(|err| GitError::io("replace empty directory", mirror, err))?;
    }
    sync_tree(staging.path())?;
    let staged = staging.keep();
    if let Err(err) = fs::rename(&staged, mirror) {
        let _ = fs::remove_dir_all(&staged);
        return Err(GitError::io(
            "move the new mirror into place at",
            mirror,
            err,
        ));
    }
    out.packs = list_packs(mirror)?;
    out.cloned = true;
    Ok(out)
}

/// Create an empty bare repository at `dir`; with `mirror_config`, configure it as a mirror.
pub(crate) fn init_bare(dir: &Path, mirror_config: bool) -> Result<(), GitError> {
    gix::ThreadSafeRepository::init_opts(
        dir,
        gix::create::Kind::Bare,
        gix::create::Options::default(),
        gix::open::Options::isolated().config_overrides(config_overrides()),
    )
    .map_err(|err| {
        GitError::repo(
            dir,
            format!("could not create a bare repository: {}", chain(&err)),
        )
    })?;
    if !mirror_config {
        return Ok(());
    }
    let config = dir.join("config");
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(&config)
        .map_err(|err| GitError::io("open", &config, err))?;
    file.write_all(MIRROR_CONFIG.as_bytes())
        .map_err(|err| GitError::io("write", &config, err))?;
    Ok(())
}

/// Open the bare repository at `dir` without reading any global configuration or environment.
pub(crate) fn open_mirror(dir: &Path) -> Result<gix::Repository, GitError> {
    let repo = gix::open_opts(
        dir,
        gix::open::Options::isolated()
            .open_path_as_is(true)
            .config_overrides(config_overrides()),
    )
    .map_err(|err| GitError::InvalidMirror {
        path: dir.to_owned(),
        message: chain(&err),
    })?;
    if !repo.is_bare() {
        return Err(GitError::InvalidMirror {
            path: dir.to_owned(),
            message: "it is not a bare repository".into(),
        });
    }
    Ok(repo)
}

/// Fetch from `remote` into the open mirror `repo` at `dir`.
fn fetch_into(
    repo: &gix::Repository,
    dir: &Path,
    remote: &RemoteUrl,
    auth: Option<&SecretString>,
    opts: &FetchOptions,
) -> Result<FetchOutcome, GitError> {
    remove_stale_keep_files(dir)?;
    let packs_before: BTreeSet<String> =
        list_packs(dir)?.into_iter().map(|p| p.pack_hash).collect();
    let total_bytes = Arc::new(AtomicU64::new(0));
    let challenged = AtomicBool::new(false);
    let fail = |err: gix::Error, phase: Phase| {
        map_fetch_error(
            err,
            phase,
            &remote.display,
            challenged.load(Ordering::Relaxed),
            opts.should_interrupt.load(Ordering::Relaxed),
            auth,
            opts.tls,
        )
    };

    let advertised = with_reporter(
        &total_bytes,
        opts.progress,
        || -> Result<Vec<RefEntry>, GitError> {
            let mut progress = Quiet::new();
            let gix_remote = repo
                .remote_at(remote.for_transport.as_str())
                .map_err(|err| GitError::InvalidUrl {
                    url: remote.display.clone(),
                    message: chain(&err),
                })?
                .with_refspecs([MIRROR_REFSPEC], gix::remote::Direction::Fetch)
                .map_err(|err| GitError::repo(dir, chain(&err)))?
                .with_fetch_tags(gix::remote::fetch::Tags::None);
            let refspecs = gix_remote.refspecs(gix::remote::Direction::Fetch).to_vec();
            let mut connection = gix_remote
                .connect(gix::remote::Direction::Fetch)
                .map_err(|err| fail(err, Phase::Connect))?;
            let transport = connection.transport_mut();
            if remote.is_http {
                if auth.is_some() && remote.for_transport.starts_with("http://") {
                    tracing::debug!(target: "reposafe::git", url = %remote.display, "sending credentials over unencrypted HTTP");
                }
                let pacer = match opts.auth {
                    GitAuth::Paced { before_request, .. } => Some(before_request.clone()),
                    _ => None,
                };
                let options = http_options(repo, remote, auth, opts.tls, pacer)?;
                transport
                    .configure(&*options)
                    .map_err(|err| GitError::Transport {
                        url: remote.display.clone(),
                        message: format!("could not configure the HTTP transport: {}", chain(&err)),
                    })?;
            }
            // Never ask a credential helper or a terminal: a 401 is final.
            let authenticate = |action: gix::credentials::helper::Action| {
                if matches!(action, gix::credentials::helper::Action::Get(_)) {
                    challenged.store(true, Ordering::Relaxed);
                }
                Ok(None)
            };
            let mut handshake = gix::protocol::handshake(
                &mut *transport,
                gix::protocol::transport::Service::UploadPack,
                authenticate,
                Vec::new(),
                &mut progress,
            )
            .map_err(|err| fail(err, Phase::Handshake))?;
            // List everything, including HEAD, in one ls-refs round trip.
            let ref_map = handshake
                .prepare_lsrefs_or_extract_refmap(
                    user_agent(),
                    false,
                    gix::protocol::fetch::refmap::init::Context {
                        fetch_refspecs: refspecs,
                        extra_refspecs: Vec::new(),
                    },
                )
                .and_then(|obtain| obtain.fetch_blocking(&mut progress, &mut *transport, false))
                .map_err(|err| fail(err, Phase::Handshake))?;
            let advertised = advertised_refs(&ref_map.remote_refs, &remote.display)?;
            tracing::debug!(target: "reposafe::git", url = %remote.display, refs = advertised.len(), "remote refs listed");

            // Remove refs the remote no longer has before receiving, so new refs can take their place
            // (e.g. `refs/heads/a` deleted, `refs/heads/a/b` created).
            prune_refs(repo, dir, &advertised)?;

            // Only talk pack protocol if an advertised object is missing (like git's "quickfetch"):
            // a remote whose refs did not move, or only moved to objects we already have, costs the
            // ref listing alone, and all ref changes are applied by `set_refs()` below. This also
            // covers an empty remote (nothing advertised but maybe an unborn HEAD).
            let needs_pack = ref_map.mappings.iter().any(|mapping| {
                mapping
                    .remote
                    .as_id()
                    .is_some_and(|id| !repo.has_object(id))
            });
            if needs_pack {
                receive_into_mirror(
                    repo,
                    dir,
                    // Without any objects we send no "have"s, so the server cannot send a thin
                    // pack: store the stream as is, without the thin-pack rewrite.
                    !packs_before.is_empty(),
                    &ref_map,
                    &mut handshake,
                    &mut *transport,
                    progress,
                    &total_bytes,
                    opts.should_interrupt,
                )
                .map_err(|err| match err {
                    ReceiveError::Protocol(err) => fail(err, Phase::Receive),
                    ReceiveError::Pack(PackError::Interrupted) => GitError::Interrupted {
                        url: remote.display.clone(),
                    },
                    ReceiveError::Pack(PackError::Io { action, source }) => GitError::Io {
                        action,
                        path: dir.join("objects").join("pack"),
                        source,
                    },
                    ReceiveError::Pack(err @ PackError::Corrupt(_)) => GitError::Transport {
                        url: remote.display.clone(),
                        message: format!("the received pack is invalid: {err}"),
                    },
                })?;
            }
            if handshake.server_protocol_version == gix::protocol::transport::Protocol::V2 {
                gix::protocol::indicate_end_of_interaction(&mut *transport, false).ok();
            }
            Ok(advertised)
        },
    )?;

    set_refs(repo, dir, &advertised)?;

    let packs = list_packs(dir)?;
    let new: Vec<&PackFile> = packs
        .iter()
        .filter(|p| !packs_before.contains(&p.pack_hash))
        .collect();
    if !new.is_empty() {
        // Make the new pack durable before anyone archives it or relies on it.
        for pack in &new {
            sync_file(&pack.path)?;
            sync_file(&pack.index_path())?;
        }
        sync_file(&dir.join("objects").join("pack"))?;
        let packed_refs = dir.join("packed-refs");
        if packed_refs.is_file() {
            sync_file(&packed_refs)?;
        }
    }
    let new_packs = new.len();
    Ok(FetchOutcome {
        refs: advertised,
        packs,
        new_packs,
        bytes_received: total_bytes.load(Ordering::Relaxed),
        cloned: false,
    })
}

/// The agent we announce to servers.
fn user_agent() -> (&'static str, Option<String>) {
    (
        "agent",
        Some(format!("reposafe/{}", env!("CARGO_PKG_VERSION"))),
    )
}

/// Why receiving a pack failed: in the protocol, or in the pack itself.
enum ReceiveError {
    Protocol(gix::Error),
    Pack(PackError),
}

/// Negotiate with the remote and receive the pack for everything `ref_map` lists that `repo`
/// lacks, writing it into the mirror's `objects/pack` with [`receive_pack()`]. With
/// `complete_thin`, thin packs are completed from the mirror. Refs are not touched.
#[allow(clippy::too_many_arguments)]
fn receive_into_mirror(
    repo: &gix::Repository,
    dir: &Path,
    complete_thin: bool,
    ref_map: &gix::protocol::fetch::RefMap,
    handshake: &mut gix::protocol::Handshake,
    transport: &mut Box<dyn gix::protocol::transport::client::blocking_io::Transport + Send>,
    progress: Quiet,
    total_bytes: &AtomicU64,
    should_interrupt: &AtomicBool,
) -> Result<(), ReceiveError> {
    use gix::protocol::fetch::{self as proto, negotiate};

    struct Mirror<'a> {
        repo: &'a gix::Repository,
        ref_map: &'a proto::RefMap,
        graph: gix::negotiate::Graph<'a, 'a>,
        negotiator: Box<dyn gix::negotiate::Negotiator>,
    }
    impl proto::Negotiate for Mirror<'_> {
        fn mark_complete_and_common_ref(&mut self) -> gix::Result<negotiate::Action> {
            negotiate::mark_complete_and_common_ref(
                &self.repo.objects,
                &self.repo.refs,
                || {
                    Ok(std::iter::empty::<(
                        gix::refs::file::Store,
                        gix::objs::find::Never,
                    )>())
                },
                &mut *self.negotiator,
                &mut self.graph,
                self.ref_map,
                &proto::Shallow::NoChange,
                negotiate::make_refmapping_ignore_predicate(proto::Tags::None, self.ref_map),
            )
        }

        fn add_wants(&mut self, arguments: &mut proto::Arguments, known: &[bool]) -> bool {
            negotiate::add_wants(
                &self.repo.objects,
                arguments,
                self.ref_map,
                known,
                &proto::Shallow::NoChange,
                negotiate::make_refmapping_ignore_predicate(proto::Tags::None, self.ref_map),
            )
        }

        fn one_round(
            &mut self,
            state: &mut negotiate::one_round::State,
            arguments: &mut proto::Arguments,
            previous_response: Option<&proto::Response>,
        ) -> gix::Result<(negotiate::Round, bool)> {
            negotiate::one_round(
                &mut *self.negotiator,
                &mut self.graph,
                state,
                arguments,
                previous_response,
            )
        }
    }

    let shallow_file = repo.shallow_file().map_err(ReceiveError::Protocol)?;
    let mut mirror = Mirror {
        repo,
        ref_map,
        graph: repo.revision_graph(None),
        negotiator: gix::negotiate::Algorithm::Consecutive.into_negotiator(),
    };
    let pack_dir = dir.join("objects").join("pack");
    let mut pack_error = None;
    let result = gix::protocol::fetch(
        &mut mirror,
        |reader, _progress, should_interrupt| -> gix::Result<bool> {
            let mut counted = CountingReader {
                inner: reader,
                total: total_bytes,
            };
            match receive_pack(
                &mut counted,
                &pack_dir,
                complete_thin.then(|| repo.objects.clone()),
                repo.object_hash(),
                should_interrupt,
            ) {
                Ok(received) => {
                    if let Some(received) = received {
                        tracing::debug!(target: "reposafe::git", pack = %received.pack_path.display(), objects = received.num_objects, "pack received");
                    }
                    Ok(true)
                }
                Err(err) => {
                    let message = err.to_string();
                    pack_error = Some(err);
                    Err(gix::Error::from_error(gix::error::validation(message)))
                }
            }
        },
        progress,
        should_interrupt,
        proto::Context {
            handshake,
            transport,
            user_agent: user_agent(),
            trace_packetlines: false,
        },
        proto::Options {
            shallow_file,
            shallow: &proto::Shallow::NoChange,
            tags: proto::Tags::None,
            reject_shallow_remote: false,
        },
    );
    match (result, pack_error) {
        (_, Some(err)) => Err(ReceiveError::Pack(err)),
        (Err(err), None) => Err(ReceiveError::Protocol(err)),
        (Ok(_), None) => Ok(()),
    }
}

/// Counts the pack bytes read from the remote.
struct CountingReader<'a> {
    inner: &'a mut dyn std::io::BufRead,
    total: &'a AtomicU64,
}

impl std::io::Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.total.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl std::io::BufRead for CountingReader<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.total.fetch_add(amount as u64, Ordering::Relaxed);
        self.inner.consume(amount);
    }
}

/// Remove directories in `parent` starting with `prefix`, left behind by a crashed earlier run.
pub(crate) fn remove_leftovers(parent: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(prefix))
        {
            let path = entry.path();
            tracing::warn!(target: "reposafe::git", path = %path.display(), "removing leftover of an interrupted earlier run");
            if let Err(err) = remove_path(&path) {
                tracing::warn!(target: "reposafe::git", path = %path.display(), error = %err, "could not remove leftover");
            }
        }
    }
}

/// Remove a file, or a directory with everything below it.
pub(crate) fn remove_path(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

/// `fsync` the file or directory at `path`.
pub(crate) fn sync_file(path: &Path) -> Result<(), GitError> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|err| GitError::io("sync to disk", path, err))
}

/// `fsync` every file and directory below `root`, and `root` itself.
pub(crate) fn sync_tree(root: &Path) -> Result<(), GitError> {
    for entry in fs::read_dir(root).map_err(|err| GitError::io("read directory", root, err))? {
        let entry = entry.map_err(|err| GitError::io("read directory", root, err))?;
        let path = entry.path();
        let file_type = entry
            .file_type()
            .map_err(|err| GitError::io("inspect", &path, err))?;
        if file_type.is_dir() {
            sync_tree(&path)?;
        } else if file_type.is_file() {
            sync_file(&path)?;
        }
    }
    sync_file(root)
}

/// Remove what an interrupted earlier fetch may have left in `objects/pack`: `.keep` files next
/// to complete packs, and temporary files of packs and indices that were never finished.
fn remove_stale_keep_files(dir: &Path) -> Result<(), GitError> {
    let pack_dir = dir.join("objects").join("pack");
    let Ok(entries) = fs::read_dir(&pack_dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let stale = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
            (n.starts_with("pack-") && n.ends_with(".keep")) || n.starts_with(".tmp")
        });
        if stale && entry.file_type().is_ok_and(|t| t.is_file()) {
            tracing::debug!(target: "reposafe::git", path = %path.display(), "removing leftover of an interrupted fetch");
            fs::remove_file(&path).map_err(|err| GitError::io("remove", &path, err))?;
        }
    }
    Ok(())
}

/// The transport configuration for HTTP(S): timeouts, and the authentication header attached to
/// each request by a hook, so that it never appears in any git configuration.
fn http_options(
    repo: &gix::Repository,
    remote: &RemoteUrl,
    auth: Option<&SecretString>,
    tls: Option<&crate::tls::TlsTrust>,
    pacer: Option<super::Pacer>,
) -> Result<Box<dyn std::any::Any>, GitError> {
    let not_http = || GitError::Transport {
        url: remote.display.clone(),
        message: "this build has no HTTP transport for the URL".into(),
    };
    let mut options = repo
        .transport_options(remote.for_transport.as_str(), None)
        .map_err(|err| GitError::Transport {
            url: remote.display.clone(),
            message: format!("could not configure the HTTP transport: {}", chain(&err)),
        })?
        .ok_or_else(not_http)?;
    let http_options = options
        .downcast_mut::<http::Options>()
        .ok_or_else(not_http)?;
    http_options.extra_headers.clear();
    http_options.connect_timeout = Some(CONNECT_TIMEOUT);

    let header = auth.cloned();
    let configure_request: Option<Box<http::reqwest::ConfigureRequestFn>> = header.map(|header| {
        Box::new(move |request: &mut reqwest::blocking::Request| -> gix::Result {
            if let Some(p) = &pacer {
                (p.0)();
            }
            let mut value = reqwest::header::HeaderValue::from_str(header.expose_secret()).map_err(|_| {
                gix::Error::from_error(gix::error::validation(
                    "the Authorization header value contains characters that are not allowed in HTTP headers",
                ))
            })?;
            value.set_sensitive(true);
            request.headers_mut().insert(reqwest::header::AUTHORIZATION, value);
            Ok(())
        }) as Box<http::reqwest::ConfigureRequestFn>
    });
    // The connection's CA bundle (or insecure mode) applies to git as to its API.
    let tls = tls.cloned();
    let backend = http::reqwest::Options {
        configure_client: Some(Box::new(
            move |builder: reqwest::blocking::ClientBuilder| {
                let builder = builder
                    .connect_timeout(CONNECT_TIMEOUT)
                    .timeout(STALL_TIMEOUT);
                Ok(match &tls {
                    Some(tls) => tls.apply(builder),
                    None => builder,
                })
            },
        )),
        configure_request,
    };
    http_options.backend = Some(Arc::new(Mutex::new(backend)));
    Ok(options)
}

fn validate_header_value(value: &SecretString, url: &str) -> Result<(), GitError> {
    match reqwest::header::HeaderValue::from_str(value.expose_secret()) {
        Ok(_) if !value.expose_secret().trim().is_empty() => Ok(()),
        _ => Err(GitError::InvalidAuth {
            url: url.to_owned(),
        }),
    }
}

/// Turn the refs advertised by the remote into our listing: `HEAD` and `refs/*`, sorted by name.
fn advertised_refs(
    remote_refs: &[gix::protocol::handshake::Ref],
    url: &str,
) -> Result<Vec<RefEntry>, GitError> {
    use gix::protocol::handshake::Ref;
    let mut out = BTreeMap::new();
    for r in remote_refs {
        let (name, target) = match r {
            Ref::Direct {
                full_ref_name,
                object,
            } => (full_ref_name, RefTarget::Object(object.to_string())),
            Ref::Peeled {
                full_ref_name, tag, ..
            } => (full_ref_name, RefTarget::Object(tag.to_string())),
            Ref::Symbolic {
                full_ref_name,
                target,
                ..
            }
            | Ref::Unborn {
                full_ref_name,
                target,
            } => {
                let target = target.to_str().map_err(|_| GitError::Transport {
                    url: url.to_owned(),
                    message: format!(
                        "the remote advertised a ref whose target is not UTF-8: {target:?}"
                    ),
                })?;
                (full_ref_name, RefTarget::Symbolic(target.to_owned()))
            }
        };
        let name = name.to_str().map_err(|_| GitError::Transport {
            url: url.to_owned(),
            message: format!("the remote advertised a ref name that is not UTF-8: {name:?}"),
        })?;
        if name != "HEAD" && !name.starts_with("refs/") {
            continue;
        }
        if gix::refs::FullName::try_from(name).is_err() {
            return Err(GitError::Transport {
                url: url.to_owned(),
                message: format!("the remote advertised an invalid ref name {name:?}"),
            });
        }
        out.insert(name.to_owned(), target);
    }
    Ok(out
        .into_iter()
        .map(|(name, target)| RefEntry { name, target })
        .collect())
}

/// All `refs/*` refs of `repo` (not `HEAD`), by name.
pub(crate) fn local_refs(
    repo: &gix::Repository,
    dir: &Path,
) -> Result<BTreeMap<String, RefTarget>, GitError> {
    let platform = repo
        .references()
        .map_err(|err| GitError::repo(dir, chain(&err)))?;
    let iter = platform
        .all()
        .map_err(|err| GitError::repo(dir, chain(&err)))?;
    let mut out = BTreeMap::new();
    for r in iter {
        let r = r.map_err(|err| {
            GitError::repo(dir, format!("could not read references: {}", chain(&err)))
        })?;
        let name = r.name().as_bstr().to_string();
        if !name.starts_with("refs/") {
            continue;
        }
        out.insert(name, target_of(&r.inner.target));
    }
    Ok(out)
}

fn target_of(target: &gix::refs::Target) -> RefTarget {
    match target {
        gix::refs::Target::Object(id) => RefTarget::Object(id.to_string()),
        gix::refs::Target::Symbolic(name) => RefTarget::Symbolic(name.as_bstr().to_string()),
    }
}

/// `HEAD` of `repo`, if it exists.
pub(crate) fn local_head(
    repo: &gix::Repository,
    dir: &Path,
) -> Result<Option<RefTarget>, GitError> {
    repo.try_find_reference("HEAD")
        .map(|head| head.map(|head| target_of(&head.inner.target)))
        .map_err(|err| GitError::repo(dir, format!("could not read HEAD: {}", chain(&err))))
}

/// Delete local `refs/*` refs that are not in `wanted`.
fn prune_refs(repo: &gix::Repository, dir: &Path, wanted: &[RefEntry]) -> Result<(), GitError> {
    let wanted: BTreeSet<&str> = wanted.iter().map(|r| r.name.as_str()).collect();
    let edits: Vec<RefEdit> = local_refs(repo, dir)?
        .into_keys()
        .filter(|name| !wanted.contains(name.as_str()))
        .map(|name| delete_edit(&name))
        .collect::<Result<_, _>>()?;
    if !edits.is_empty() {
        tracing::debug!(target: "reposafe::git", count = edits.len(), "pruning refs the remote no longer has");
    }
    apply_edits(repo, dir, edits)
}

/// Make the refs of `repo` (all `refs/*` and `HEAD`) exactly `wanted`, then verify.
///
/// A `HEAD` missing from `wanted` leaves the local `HEAD` alone.
pub(crate) fn set_refs(
    repo: &gix::Repository,
    dir: &Path,
    wanted: &[RefEntry],
) -> Result<(), GitError> {
    let current = local_refs(repo, dir)?;
    let mut edits = Vec::new();
    let mut wanted_refs = BTreeMap::new();
    let mut wanted_head = None;
    for entry in wanted {
        if entry.name == "HEAD" {
            wanted_head = Some(&entry.target);
        } else {
            wanted_refs.insert(entry.name.as_str(), &entry.target);
        }
    }
    for (name, target) in &wanted_refs {
        if current.get(*name) != Some(*target) {
            edits.push(update_edit(repo, dir, name, target)?);
        }
    }
    for name in current.keys() {
        if !wanted_refs.contains_key(name.as_str()) {
            edits.push(delete_edit(name)?);
        }
    }
    if let Some(target) = wanted_head {
        if local_head(repo, dir)?.as_ref() != Some(target) {
            edits.push(update_edit(repo, dir, "HEAD", target)?);
        }
    }
    apply_edits(repo, dir, edits)?;

    // Verify: the refs on disk must now be exactly what was asked for.
    let after = local_refs(repo, dir)?;
    let expected: BTreeMap<String, RefTarget> = wanted_refs
        .iter()
        .map(|(name, target)| ((*name).to_owned(), (*target).clone()))
        .collect();
    if after != expected {
        let differing = after
            .keys()
            .chain(expected.keys())
            .find(|name| after.get(*name) != expected.get(*name))
            .cloned()
            .unwrap_or_default();
        return Err(GitError::repo(
            dir,
            format!("references do not match the expected listing after updating them (first difference: {differing})"),
        ));
    }
    if let Some(target) = wanted_head {
        if local_head(repo, dir)?.as_ref() != Some(target) {
            return Err(GitError::repo(
                dir,
                "HEAD does not have the expected value after updating it",
            ));
        }
    }
    Ok(())
}

fn full_name(name: &str) -> Result<gix::refs::FullName, GitError> {
    gix::refs::FullName::try_from(name).map_err(|err| GitError::InvalidRef {
        name: name.to_owned(),
        message: err.to_string(),
    })
}

fn update_edit(
    repo: &gix::Repository,
    dir: &Path,
    name: &str,
    target: &RefTarget,
) -> Result<RefEdit, GitError> {
    let full = full_name(name)?;
    if name != "HEAD" && !name.starts_with("refs/") {
        return Err(GitError::InvalidRef {
            name: name.to_owned(),
            message: "only HEAD and names starting with refs/ are allowed".into(),
        });
    }
    let new = match target {
        RefTarget::Object(hex) => {
            let id =
                gix::ObjectId::from_hex(hex.as_bytes()).map_err(|err| GitError::InvalidRef {
                    name: name.to_owned(),
                    message: format!("target {hex:?} is not an object id: {err}"),
                })?;
            if id.kind() != repo.object_hash() {
                return Err(GitError::InvalidRef {
                    name: name.to_owned(),
                    message: format!("target {hex} does not use the repository's object hash"),
                });
            }
            if !repo.has_object(id) {
                return Err(GitError::MissingObject {
                    name: name.to_owned(),
                    oid: hex.clone(),
                    path: dir.to_owned(),
                });
            }
            gix::refs::Target::Object(id)
        }
        RefTarget::Symbolic(target) => {
            let target = full_name(target).map_err(|_| GitError::InvalidRef {
                name: name.to_owned(),
                message: format!("symbolic target {target:?} is not a valid reference name"),
            })?;
            gix::refs::Target::Symbolic(target)
        }
    };
    Ok(RefEdit {
        change: Change::Update {
            log: LogChange {
                mode: RefLog::AndReference,
                force_create_reflog: false,
                message: "reposafe".into(),
            },
            expected: PreviousValue::Any,
            new,
        },
        name: full,
        deref: false,
    })
}

fn delete_edit(name: &str) -> Result<RefEdit, GitError> {
    Ok(RefEdit {
        change: Change::Delete {
            expected: PreviousValue::Any,
            log: RefLog::AndReference,
        },
        name: full_name(name)?,
        deref: false,
    })
}

/// Apply `edits` in one transaction, writing direct refs to `packed-refs`.
fn apply_edits(repo: &gix::Repository, dir: &Path, edits: Vec<RefEdit>) -> Result<(), GitError> {
    if edits.is_empty() {
        return Ok(());
    }
    use gix::lock::acquire::Fail;
    repo.refs
        .transaction()
        .packed_refs(
            gix::refs::file::transaction::PackedRefs::DeletionsAndNonSymbolicUpdatesRemoveLooseSourceReference(
                Box::new(&repo.objects),
            ),
        )
        .prepare(edits, Fail::Immediately, Fail::Immediately)
        .and_then(|prepared| prepared.commit(None))
        .map_err(|err| GitError::repo(dir, format!("could not update references: {}", chain(&err))))?;
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connect,
    Handshake,
    Receive,
}

fn map_fetch_error(
    err: gix::Error,
    phase: Phase,
    url: &str,
    challenged: bool,
    interrupted: bool,
    auth: Option<&SecretString>,
    tls: Option<&crate::tls::TlsTrust>,
) -> GitError {
    let url = url.to_owned();
    let message = redact_secret(chain(&err), auth);
    tracing::debug!(target: "reposafe::git", %url, error = %message, "fetch failed");
    if interrupted || err.is_cancelled() {
        return GitError::Interrupted { url };
    }
    if crate::tls::is_certificate_text(&message) {
        let message = match tls {
            Some(tls) => tls.describe_failure(&message),
            None => format!("TLS certificate problem: {message}"),
        };
        return GitError::Certificate { url, message };
    }
    if challenged || err.is_unauthenticated() {
        return GitError::Unauthorized { url };
    }
    match http_status(&err).or_else(|| status_from_message(&message)) {
        Some(401) => return GitError::Unauthorized { url },
        Some(403) => return GitError::Forbidden { url },
        Some(404 | 410) => return GitError::NotFound { url },
        Some(429) => return GitError::RateLimited { url },
        _ => {}
    }
    if err.is_permission_denied() {
        return GitError::Forbidden { url };
    }
    if phase != Phase::Receive && err.is_not_found() {
        return GitError::NotFound { url };
    }
    GitError::Transport { url, message }
}

/// The HTTP status of the response that caused `err`, if any.
fn http_status(err: &gix::Error) -> Option<u16> {
    fn visit(err: &(dyn std::error::Error + 'static), depth: usize) -> Option<u16> {
        if depth > 16 {
            return None;
        }
        if let Some(err) = err.downcast_ref::<reqwest::Error>() {
            if let Some(status) = err.status() {
                return Some(status.as_u16());
            }
        }
        if let Some(err) = err.downcast_ref::<gix::Error>() {
            for inner in err.iter_errors() {
                if !std::ptr::addr_eq(inner, err) {
                    if let Some(status) = visit(inner, depth + 1) {
                        return Some(status);
                    }
                }
            }
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(status) = visit(inner, depth + 1) {
                return Some(status);
            }
        }
        err.source().and_then(|source| visit(source, depth + 1))
    }
    err.iter_errors().find_map(|e| visit(e, 0))
}

fn status_from_message(message: &str) -> Option<u16> {
    let rest = &message[message.find("HTTP status ")? + "HTTP status ".len()..];
    rest.get(..3)?.parse().ok()
}

/// Replace the authentication header value (and its credential part) in `message`, should the
/// transport ever have echoed it.
fn redact_secret(mut message: String, auth: Option<&SecretString>) -> String {
    if let Some(auth) = auth {
        let value = auth.expose_secret();
        let credential = value
            .split_once(' ')
            .map(|(_, c)| c)
            .unwrap_or(value)
            .trim();
        for secret in [value, credential] {
            if secret.len() >= 4 && message.contains(secret) {
                message = message.replace(secret, "[REDACTED]");
            }
        }
    }
    message
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn status_parsing() {
        assert_eq!(
            status_from_message("x: Received HTTP status 404: y"),
            Some(404)
        );
        assert_eq!(status_from_message("nothing"), None);
        assert!(is_hex_hash(&"a".repeat(40)));
        assert!(!is_hex_hash(&"A".repeat(40)));
        assert!(!is_hex_hash("abc"));
    }

    #[test]
    fn secrets_are_redacted() {
        let auth = SecretString::from("Basic c2VjcmV0OnRva2Vu");
        assert_eq!(
            redact_secret("header was Basic c2VjcmV0OnRva2Vu!".into(), Some(&auth)),
            "header was [REDACTED]!"
        );
        assert_eq!(
            redact_secret("c2VjcmV0OnRva2Vu".into(), Some(&auth)),
            "[REDACTED]"
        );
    }
}
