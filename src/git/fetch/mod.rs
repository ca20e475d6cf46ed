//! Fetching into mirror caches: [`fetch_mirror`] and [`list_packs`].
//!
//! A mirror is a bare repository whose refs equal the remote's refs (`+refs/*:refs/*` with force,
//! deleted refs pruned, `HEAD` following the remote's). It is never repacked: each fetch that
//! receives objects adds exactly one pack. The refs are listed and the pack is negotiated with
//! gix-protocol; the pack stream itself is taken over by `pack_receive`, which writes and
//! indexes it in memory that does not grow with the pack. Thin packs sent by the server are
//! completed on arrival by inserting the missing base objects (gix's thin-pack lookup), so every
//! pack in a mirror is self-contained and can be indexed on its own during a restore.
//!
//! This module holds the fetch itself, step by step; its parts live by job in:
//! * `mirror`: opening, creating, and the atomic first clone (built in a temporary directory
//!   next to the mirror, renamed into place only on success);
//! * `refs`: ref listing, pruning, setting, and the pack negotiation;
//! * `transport`: the HTTP(S) transport (credential header, pacing hook, TLS, `Retry-After`)
//!   and the translation of failures into [`GitError`];
//! * `files`: pack listing, fsync of what a fetch wrote, leftovers of interrupted runs;
//! * `recover`: stale lock files of a crashed process, and rebuilding a damaged mirror.

mod files;
mod mirror;
mod recover;
mod refs;
mod transport;

use std::{
    collections::BTreeSet,
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Instant,
};

use secrecy::SecretString;

pub use files::list_packs;
pub(crate) use files::{remove_leftovers, sync_file, sync_tree};
pub(crate) use mirror::{init_bare, open_mirror};
#[cfg(test)]
pub(crate) use recover::forget_prepared;
pub(crate) use refs::{local_refs, set_refs};
pub(in crate::git) use transport::{http_client, validate_header_value};

use super::{
    error::chain,
    pack_index::PackError,
    progress::{with_reporter, Quiet},
    url::{self, RemoteUrl},
    FetchOptions, FetchOutcome, GitAuth, GitError, PackFile,
};
use mirror::MirrorState;
use transport::{Phase, Session};

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
        transport::validate_header_value(value, &remote.display)?;
    }
    if opts.should_interrupt.load(Ordering::Relaxed) {
        return Err(GitError::Interrupted {
            url: remote.display.clone(),
        });
    }

    let started = Instant::now();
    tracing::info!(target: "reposafe::git", url = %remote.display, mirror = %mirror.display(), "fetching into mirror");
    let first_use = recover::remove_crash_leftovers_once(mirror)?;
    let outcome = match mirror::mirror_state(mirror)? {
        MirrorState::Existing => fetch_existing(mirror, first_use, &remote, auth.as_ref(), opts)?,
        state @ (MirrorState::Absent | MirrorState::EmptyDir) => {
            mirror::clone_into_new_mirror(mirror, state, &remote, auth.as_ref(), opts)?
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

/// Fetch into the existing mirror at `mirror` (cleaned of a crashed process's leftovers by
/// the caller); a mirror that is unusable is rebuilt by a fresh clone (reported in
/// [`FetchOutcome::rebuilt`]). Its packs and refs are checked on this process's first use
/// only (what a crash can damage; refs only when they are not exactly what the last fetch
/// wrote); later fetches just open it.
fn fetch_existing(
    mirror: &Path,
    first_use: bool,
    remote: &RemoteUrl,
    auth: Option<&SecretString>,
    opts: &FetchOptions,
) -> Result<FetchOutcome, GitError> {
    let opened = if first_use {
        recover::open_checked(mirror)
    } else {
        mirror::open_mirror(mirror)
    };
    let damage = match opened {
        Ok(repo) => match fetch_into(&repo, mirror, remote, auth, opts, first_use) {
            Ok(mut out) => {
                out.cloned = false;
                return Ok(out);
            }
            // On first use the fetch checks refs it finds changed: unreadable ones are damage.
            Err(err @ GitError::InvalidMirror { .. }) if first_use => err,
            Err(err) => return Err(err),
        },
        Err(err) if recover::looks_like_a_repository(mirror) => err,
        Err(err) => return Err(err),
    };
    tracing::warn!(target: "reposafe::git", mirror = %mirror.display(), error = %damage, "mirror is unusable; rebuilding it with a fresh clone");
    let aside = recover::move_aside(mirror)?;
    let result = mirror::clone_into_new_mirror(mirror, MirrorState::Absent, remote, auth, opts);
    recover::finish_rebuild(mirror, &aside, result.is_ok());
    let mut out = result?;
    out.rebuilt = Some(damage.to_string());
    Ok(out)
}

/// Fetch from `remote` into the open mirror `repo` at `dir`. With `check_refs` (a process's
/// first use of the mirror), refs that are not exactly the remote's listing are checked to be
/// readable ([`GitError::InvalidMirror`] if not).
fn fetch_into(
    repo: &gix::Repository,
    dir: &Path,
    remote: &RemoteUrl,
    auth: Option<&SecretString>,
    opts: &FetchOptions,
    check_refs: bool,
) -> Result<FetchOutcome, GitError> {
    // Leftovers of a crashed process were removed when this process first used the mirror
    // (`recover`); never here, where another fetch of this process may be writing.
    let packs_before: BTreeSet<String> =
        list_packs(dir)?.into_iter().map(|p| p.pack_hash).collect();
    let total_bytes = Arc::new(AtomicU64::new(0));
    let session = Session::new(remote, auth, opts);
    // Without any objects we send no "have"s, so the server cannot send a thin pack: store
    // the stream as is, without the thin-pack rewrite.
    let complete_thin = !packs_before.is_empty();
    let (advertised, refs_current) = with_reporter(&total_bytes, opts.progress, || {
        exchange(repo, dir, &session, complete_thin, check_refs, &total_bytes)
    })?;

    if !refs_current {
        refs::set_refs(repo, dir, &advertised.refs)?;
    }

    let packs = list_packs(dir)?;
    let new: Vec<&PackFile> = packs
        .iter()
        .filter(|p| !packs_before.contains(&p.pack_hash))
        .collect();
    files::sync_new_packs(dir, &new)?;
    let new_packs = new.len();
    Ok(FetchOutcome {
        refs: advertised.refs,
        packs,
        new_packs,
        bytes_received: total_bytes.load(Ordering::Relaxed),
        cloned: false,
        rebuilt: None,
    })
}

/// Talk to the remote: list its refs and receive the pack of whatever advertised object the
/// mirror lacks. Returns the listing, and whether the mirror's refs already equal it (else
/// the caller sets them).
fn exchange(
    repo: &gix::Repository,
    dir: &Path,
    session: &Session<'_>,
    complete_thin: bool,
    check_refs: bool,
    total_bytes: &AtomicU64,
) -> Result<(refs::Advertised, bool), GitError> {
    let (remote, opts) = (session.remote(), session.opts());
    let mut progress = Quiet::new();
    let gix_remote = mirror_remote(repo, dir, remote)?;
    let refspecs = gix_remote.refspecs(gix::remote::Direction::Fetch).to_vec();
    let mut connection = session.connect(&gix_remote)?;
    let transport = connection.transport_mut();
    // Never ask a credential helper or a terminal: a 401 is final.
    let authenticate = |action: gix::credentials::helper::Action| {
        if matches!(action, gix::credentials::helper::Action::Get(_)) {
            session.challenged.store(true, Ordering::Relaxed);
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
    .map_err(|err| session.fail(err, Phase::Handshake))?;
    let refmap_context = || gix::protocol::fetch::refmap::init::Context {
        fetch_refspecs: refspecs.clone(),
        extra_refspecs: Vec::new(),
    };
    // Protocol v1 (what fetches speak) advertised the refs in the handshake: the mapping of
    // each to a local name is only built when a pack must be negotiated. v2 lists everything,
    // including HEAD, in one ls-refs round trip.
    let ref_map = match handshake.refs {
        Some(_) => None,
        None => Some(obtain_ref_map(
            &mut handshake,
            &mut *transport,
            session,
            refmap_context(),
        )?),
    };
    let remote_refs = match &ref_map {
        Some(map) => map.remote_refs.as_slice(),
        None => handshake.refs.as_deref().unwrap_or_default(),
    };
    let advertised = refs::advertised_refs(remote_refs, &remote.display)?;
    tracing::debug!(target: "reposafe::git", url = %remote.display, refs = advertised.refs.len(), "remote refs listed");

    // Only talk pack protocol if an advertised object is missing (like git's "quickfetch"):
    // a remote whose refs did not move, or only moved to objects we already have, costs the
    // ref listing alone, and all ref changes are applied by `set_refs()` below. This also
    // covers an empty remote (nothing advertised but maybe an unborn HEAD).
    //
    // Until the pack arrives no object is added, so a lookup that misses is a real miss: by
    // default gix re-reads the pack directory on every miss, which with thousands of new refs
    // is thousands of directory scans. The lookups before the pack use a handle that doesn't.
    //
    // Refs equal to what the last fetch wrote (the usual unchanged repository) need no
    // object lookup at all.
    let refs_current = refs::mirror_is_current(dir, &advertised)?;
    if check_refs && !refs_current {
        // The negotiation reads every ref: an unreadable one makes the mirror unusable.
        recover::check_refs(repo, dir)?;
    }
    let known = (!refs_current).then(|| never_refreshing(repo));
    if let Some(known) = known.filter(|k| refs::lacks_an_advertised_object(k, remote_refs)) {
        let ref_map = match ref_map {
            Some(map) => map,
            None => obtain_ref_map(&mut handshake, &mut *transport, session, refmap_context())?,
        };
        refs::receive_into_mirror(
            &known,
            dir,
            complete_thin,
            &ref_map,
            &mut handshake,
            &mut *transport,
            progress,
            total_bytes,
            opts.should_interrupt,
        )
        .map_err(|err| receive_failed(session, dir, err))?;
    }
    if handshake.server_protocol_version == gix::protocol::transport::Protocol::V2 {
        gix::protocol::indicate_end_of_interaction(&mut *transport, false).ok();
    }
    Ok((advertised, refs_current))
}

/// A handle on `repo` whose object lookups never re-read the pack directory on a miss.
fn never_refreshing(repo: &gix::Repository) -> gix::Repository {
    let mut handle = repo.clone();
    handle.objects.refresh_never();
    handle
}

/// `remote` as gix's remote of the mirror `repo`: every ref, forced, no tag following.
fn mirror_remote<'r>(
    repo: &'r gix::Repository,
    dir: &Path,
    remote: &RemoteUrl,
) -> Result<gix::Remote<'r>, GitError> {
    Ok(repo
        .remote_at(remote.for_transport.as_str())
        .map_err(|err| GitError::InvalidUrl {
            url: remote.display.clone(),
            message: chain(&err),
        })?
        .with_refspecs([refs::MIRROR_REFSPEC], gix::remote::Direction::Fetch)
        .map_err(|err| GitError::repo(dir, chain(&err)))?
        .with_fetch_tags(gix::remote::fetch::Tags::None))
}

/// The remote's refs mapped to the mirror's names (`+refs/*:refs/*`): from the v1
/// handshake, or by an ls-refs round trip in v2.
fn obtain_ref_map(
    handshake: &mut gix::protocol::Handshake,
    transport: &mut Box<dyn gix::protocol::transport::client::blocking_io::Transport + Send>,
    session: &Session<'_>,
    context: gix::protocol::fetch::refmap::init::Context,
) -> Result<gix::protocol::fetch::RefMap, GitError> {
    let mut progress = Quiet::new();
    handshake
        .prepare_lsrefs_or_extract_refmap(refs::user_agent(), false, context)
        .and_then(|obtain| obtain.fetch_blocking(&mut progress, transport, false))
        .map_err(|err| session.fail(err, Phase::Handshake))
}

/// The [`GitError`] for a failure while negotiating or receiving the pack.
fn receive_failed(session: &Session<'_>, dir: &Path, err: refs::ReceiveError) -> GitError {
    let url = || session.remote().display.clone();
    match err {
        refs::ReceiveError::Protocol(err) => session.fail(err, Phase::Receive),
        refs::ReceiveError::Pack(PackError::Interrupted) => GitError::Interrupted { url: url() },
        refs::ReceiveError::Pack(PackError::Io { action, source }) => GitError::Io {
            action,
            path: dir.join("objects").join("pack"),
            source,
        },
        refs::ReceiveError::Pack(err @ PackError::Corrupt(_)) => GitError::Transport {
            url: url(),
            message: format!("the received pack is invalid: {err}"),
        },
    }
}
