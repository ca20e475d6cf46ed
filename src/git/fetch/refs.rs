//! Refs and negotiation: the remote's advertised refs turned into our listing, the
//! mirror's refs read, pruned (refs the remote no longer has) and set to exactly a
//! listing in one `packed-refs` transaction, and the pack negotiation with the remote
//! (wants and haves) whose pack stream is handed to `pack_receive`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

use gix::bstr::ByteSlice as _;
use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};

use crate::git::{
    error::chain, pack_index::PackError, pack_receive::receive_pack, progress::Quiet, GitError,
    RefEntry, RefTarget,
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

/// Negotiate with the remote and receive the pack for everything `ref_map` lists that `repo`
/// lacks, writing it into the mirror's `objects/pack` with [`receive_pack()`]. With
/// `complete_thin`, thin packs are completed from the mirror. Refs are not touched.
#[allow(clippy::too_many_arguments)]
pub(super) fn receive_into_mirror(
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

/// Turn the refs advertised by the remote into our listing: `HEAD` and `refs/*`, sorted by name.
pub(super) fn advertised_refs(
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
pub(super) fn prune_refs(
    repo: &gix::Repository,
    dir: &Path,
    wanted: &[RefEntry],
) -> Result<(), GitError> {
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
