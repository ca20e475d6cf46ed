//! Refs and negotiation: the remote's advertised refs turned into our listing, the
//! mirror's refs read and set to exactly a listing (refs the remote no longer has pruned) by
//! writing one `packed-refs` file (`git::packed_refs`), and the pack negotiation with the
//! remote (wants and haves) whose pack stream is handed to `pack_receive`.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

use gix::bstr::ByteSlice as _;
use gix::protocol::fetch::{self as proto, negotiate};

use crate::git::{
    error::chain,
    pack_index::PackError,
    pack_receive::receive_pack,
    packed_refs::{already_written, write_refs},
    progress::Quiet,
    GitError, RefEntry, RefTarget,
};

/// Mirror every ref, forcing updates.
pub(super) const MIRROR_REFSPEC: &str = "+refs/*:refs/*";

/// The agent we announce to servers.
pub(super) fn user_agent() -> (&'static str, Option<String>) {
    (
        "agent",
        Some(format!("reposafe/{}", env!("CARGO_PKG_VERSION"))),
    )
}

/// Why receiving a pack failed: in the protocol, or in the pack itself.
pub(super) enum ReceiveError {
    Protocol(gix::Error),
    Pack(PackError),
}

/// The mirror's side of the pack negotiation.
struct Mirror<'a> {
    repo: &'a gix::Repository,
    /// The mirror has no pack yet: nothing can be known locally.
    empty: bool,
    ref_map: &'a proto::RefMap,
    graph: gix::negotiate::Graph<'a, 'a>,
    negotiator: Box<dyn gix::negotiate::Negotiator>,
}

impl proto::Negotiate for Mirror<'_> {
    fn mark_complete_and_common_ref(&mut self) -> gix::Result<negotiate::Action> {
        if self.empty {
            // A first clone has nothing to compare with; asking the ref store about each
            // of thousands of refs would cost five file probes each.
            return Ok(negotiate::Action::MustNegotiate {
                remote_ref_target_known: vec![false; self.ref_map.mappings.len()],
            });
        }
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

/// Negotiate with the remote and receive the pack for everything `ref_map` lists that `repo`
/// lacks, writing it into the mirror's `objects/pack` with [`receive_pack()`]. With
/// `mirror_has_packs`, thin packs are completed from the mirror (without, no "have" can be
/// sent, so the server sends no thin pack). Refs are not touched.
#[allow(clippy::too_many_arguments)]
pub(super) fn receive_into_mirror(
    repo: &gix::Repository,
    dir: &Path,
    mirror_has_packs: bool,
    ref_map: &gix::protocol::fetch::RefMap,
    handshake: &mut gix::protocol::Handshake,
    transport: &mut Box<dyn gix::protocol::transport::client::blocking_io::Transport + Send>,
    progress: Quiet,
    total_bytes: &AtomicU64,
    should_interrupt: &AtomicBool,
) -> Result<(), ReceiveError> {
    let shallow_file = repo.shallow_file().map_err(ReceiveError::Protocol)?;
    let mut mirror = Mirror {
        repo,
        empty: !mirror_has_packs,
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
                mirror_has_packs.then(|| repo.objects.clone()),
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

/// Whether `repo` lacks the object of an advertised `refs/*` ref (then a pack is needed).
pub(super) fn lacks_an_advertised_object(
    repo: &gix::Repository,
    remote_refs: &[gix::protocol::handshake::Ref],
) -> bool {
    remote_refs.iter().any(|r| {
        let (name, target, _) = r.unpack();
        name.starts_with(b"refs/") && target.is_some_and(|id| !repo.has_object(id))
    })
}

/// The remote's refs as it advertised them.
pub(super) struct Advertised {
    /// `HEAD` and `refs/*`, sorted by name.
    pub refs: Vec<RefEntry>,
    /// The peeled target of each annotated tag, by ref name.
    pub peeled: HashMap<String, gix::ObjectId>,
}

/// Turn the refs advertised by the remote into our listing: `HEAD` and `refs/*`, sorted by name.
pub(super) fn advertised_refs(
    remote_refs: &[gix::protocol::handshake::Ref],
    url: &str,
) -> Result<Advertised, GitError> {
    use gix::protocol::handshake::Ref;
    let mut out = BTreeMap::new();
    let mut peeled = HashMap::new();
    for r in remote_refs {
        let (name, target) = match r {
            Ref::Direct {
                full_ref_name,
                object,
            } => (full_ref_name, RefTarget::Object(object.to_string())),
            Ref::Peeled {
                full_ref_name,
                tag,
                object,
            } => {
                if let Ok(name) = full_ref_name.to_str() {
                    peeled.insert(name.to_owned(), *object);
                }
                (full_ref_name, RefTarget::Object(tag.to_string()))
            }
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
    let refs = out
        .into_iter()
        .map(|(name, target)| RefEntry { name, target })
        .collect();
    Ok(Advertised { refs, peeled })
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

/// Split a listing into its `refs/*` refs by name and its `HEAD`.
fn by_name(wanted: &[RefEntry]) -> (BTreeMap<&str, &RefTarget>, Option<&RefTarget>) {
    let mut refs = BTreeMap::new();
    let mut head = None;
    for entry in wanted {
        if entry.name == "HEAD" {
            head = Some(&entry.target);
        } else {
            refs.insert(entry.name.as_str(), &entry.target);
        }
    }
    (refs, head)
}

/// Whether the mirror at `dir` already holds exactly the refs the remote advertised (as the
/// last fetch left them): then it has every object they need, and nothing is to be written.
/// Reads `packed-refs`, `HEAD` and the `refs/` directory; no object lookup.
pub(super) fn mirror_is_current(dir: &Path, advertised: &Advertised) -> Result<bool, GitError> {
    let (refs, head) = by_name(&advertised.refs);
    already_written(dir, &refs, head, &advertised.peeled)
}

/// Make the refs of `repo` (all `refs/*` and `HEAD`) exactly `wanted`, then verify.
///
/// A `HEAD` missing from `wanted` leaves the local `HEAD` alone.
pub(crate) fn set_refs(
    repo: &gix::Repository,
    dir: &Path,
    wanted: &[RefEntry],
) -> Result<(), GitError> {
    let (wanted_refs, wanted_head) = by_name(wanted);
    write_refs(repo, dir, &wanted_refs, wanted_head)?;

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
