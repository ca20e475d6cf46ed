//! Consolidation: one self-contained pack holding exactly the objects a set of ref tips
//! reaches, written from existing packs — what prune stores in place of a repository's pack
//! chain, and what its mirror keeps instead of one pack per fetch.
//!
//! The source packs are gathered in a scratch bare repository ([`Consolidation::add_pack_file`]
//! hard-links a mirror's pack and index, [`Consolidation::add_pack_stream`] indexes an archived
//! pack in bounded memory, as a restore does). [`Consolidation::write`] then walks every commit
//! the tips reach, counts the objects their trees add (`gix-pack`'s counting, several threads),
//! and streams them into one pack: entries are copied as they are stored (compressed data
//! untouched, deltas reused when their base is in the same source pack), an object whose stored
//! delta base is not copied is written whole. The result is indexed like a received pack and
//! named by its checksum. Memory holds a few words per object plus the odb's delta-base caches,
//! never a whole pack.
//!
//! [`compact_mirror`] puts the consolidated pack into a mirror and removes the packs it
//! replaces, new before old: a kill at any point leaves a mirror with every object it had.

use std::{
    collections::BTreeSet,
    fs,
    io::{BufReader, BufWriter, Read, Write},
    path::{Path, PathBuf},
    sync::atomic::AtomicBool,
};

use gix::hash::ObjectId;
use gix_pack::data::output;

use super::{
    error::chain,
    fetch::{init_bare, open_mirror, sync_file},
    pack_index::PackError,
    pack_receive::receive_pack,
    GitError,
};

/// A scratch repository collecting the packs to consolidate. Removed when dropped.
pub struct Consolidation {
    dir: tempfile::TempDir,
    packs: usize,
}

/// The pack [`Consolidation::write`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsolidatedPack {
    /// Where the `.pack` is (its `.idx` is beside it).
    pub path: PathBuf,
    /// Its checksum, 40 hex digits (its name: `pack-<hash>.pack`).
    pub pack_hash: String,
    /// Objects it holds.
    pub objects: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Objects the source packs held together (duplicates counted once per pack).
    pub source_objects: u64,
    /// Objects copied as stored (deltas reused).
    pub copied: u64,
    /// Objects written whole because their stored delta base was not kept.
    pub recompressed: u64,
}

impl Consolidation {
    /// A new, empty scratch repository in a temporary directory under `parent`.
    pub fn new(parent: &Path) -> Result<Consolidation, GitError> {
        fs::create_dir_all(parent).map_err(|e| GitError::io("create directory", parent, e))?;
        let dir = tempfile::Builder::new()
            .prefix(".reposafe-consolidate-")
            .tempdir_in(parent)
            .map_err(|e| GitError::io("create temporary directory in", parent, e))?;
        init_bare(dir.path(), false)?;
        Ok(Consolidation { dir, packs: 0 })
    }

    fn pack_dir(&self) -> PathBuf {
        self.dir.path().join("objects").join("pack")
    }

    /// Adds a pack that is already indexed (a mirror's `pack-<hash>.pack` with its `.idx`),
    /// hard-linked when possible, else copied.
    pub fn add_pack_file(&mut self, pack: &Path) -> Result<(), GitError> {
        let dir = self.pack_dir();
        for path in [pack.to_path_buf(), pack.with_extension("idx")] {
            let name = path.file_name().ok_or_else(|| {
                GitError::io(
                    "name",
                    &path,
                    std::io::Error::other("a pack path must end in a file name"),
                )
            })?;
            let to = dir.join(name);
            if to.exists() {
                continue;
            }
            if fs::hard_link(&path, &to).is_err() {
                fs::copy(&path, &to).map_err(|e| GitError::io("copy pack", &path, e))?;
            }
        }
        self.packs += 1;
        Ok(())
    }

    /// Adds a pack from a stream (an archived pack), indexing it in bounded memory.
    pub fn add_pack_stream(&mut self, pack: impl Read + Send + 'static) -> Result<(), GitError> {
        super::restore::write_pack(Box::new(pack), &self.pack_dir(), self.packs)?;
        self.packs += 1;
        Ok(())
    }

    /// Writes one pack of everything `tips` reach into `out_dir` (an `objects/pack`
    /// directory, or any directory), indexed, and returns it. A tip or an object it reaches
    /// that the added packs lack fails with [`GitError::MissingObject`] /
    /// [`GitError::Repository`]: the packs do not hold what the refs need.
    pub fn write(
        &self,
        tips: &[ObjectId],
        out_dir: &Path,
        interrupt: &AtomicBool,
    ) -> Result<ConsolidatedPack, GitError> {
        let (repo, db, counts) = self.count(tips, interrupt)?;
        let source_objects = source_object_count(&repo);
        let failed = |what: &str, err: gix::Error| {
            GitError::repo(self.dir.path(), format!("{what}: {}", chain(&err)))
        };
        let objects = counts.len() as u32;
        let wanted: Vec<ObjectId> = counts.iter().map(|c| c.id).collect();
        fs::create_dir_all(out_dir).map_err(|e| GitError::io("create directory", out_dir, e))?;
        let mut raw = tempfile::Builder::new()
            .prefix(".tmp-consolidated-")
            .tempfile_in(out_dir)
            .map_err(|e| GitError::io("create temporary file in", out_dir, e))?;
        let stats = write_entries(counts, db, raw.as_file_mut(), objects)
            .map_err(|e| failed("could not write the consolidated pack", e))?;
        if stats.missing_objects > 0 {
            return Err(GitError::repo(
                self.dir.path(),
                format!("{} objects to keep are missing", stats.missing_objects),
            ));
        }
        raw.as_file_mut()
            .flush()
            .map_err(|e| GitError::io("write", raw.path(), e))?;
        let file = fs::File::open(raw.path()).map_err(|e| GitError::io("read", raw.path(), e))?;
        let mut reader = BufReader::with_capacity(256 << 10, file);
        let received = receive_pack(
            &mut reader,
            out_dir,
            None::<gix::objs::find::Never>,
            gix::hash::Kind::Sha1,
            interrupt,
        )
        .map_err(|err| match err {
            PackError::Io { action, source } => GitError::io(action, out_dir, source),
            err => GitError::repo(out_dir, format!("consolidated pack is invalid: {err}")),
        })?
        .ok_or_else(|| GitError::repo(out_dir, "there is nothing to keep: no objects"))?;
        verify_holds(&received.pack_path, &wanted)?;
        let size = fs::metadata(&received.pack_path)
            .map_err(|e| GitError::io("read metadata of", &received.pack_path, e))?
            .len();
        Ok(ConsolidatedPack {
            path: received.pack_path,
            pack_hash: received.pack_hash.to_string(),
            objects: u64::from(received.num_objects),
            size,
            source_objects,
            copied: stats.objects_copied_from_pack as u64,
            recompressed: stats.decoded_and_recompressed_objects as u64,
        })
    }
}

impl Consolidation {
    /// How many objects `tips` reach, failing with [`GitError::MissingObject`] naming the
    /// first one the added packs lack (`check --read-data`: do a snapshot's packs hold
    /// everything its refs need?).
    pub fn reachable(&self, tips: &[ObjectId], interrupt: &AtomicBool) -> Result<u64, GitError> {
        let (_, _, counts) = self.count(tips, interrupt)?;
        let missing = counts.iter().find(|c| {
            !matches!(
                c.entry_pack_location,
                gix_pack::data::output::count::PackLocation::LookedUp(Some(_))
            )
        });
        match missing {
            Some(c) => Err(GitError::MissingObject {
                name: "(an object the refs reach)".into(),
                oid: c.id.to_string(),
                path: self.dir.path().to_path_buf(),
            }),
            None => Ok(counts.len() as u64),
        }
    }

    /// Every object `tips` reach, each with where it is stored, and the odb they were
    /// counted in (its packs held loaded).
    fn count(
        &self,
        tips: &[ObjectId],
        interrupt: &AtomicBool,
    ) -> Result<(gix::Repository, gix::odb::Handle, Vec<output::Count>), GitError> {
        let repo = open_mirror(self.dir.path())?;
        let inputs = walk_inputs(&repo, self.dir.path(), tips)?;
        let mut db = (*repo.objects).clone();
        // Pack generation addresses entries by pack id and offset: the packs must stay
        // loaded for the whole run.
        db.prevent_pack_unload();
        let (counts, _) = output::count::objects(
            db.clone(),
            Box::new(inputs.into_iter().map(Ok)),
            &gix::utils::progress::Discard,
            interrupt,
            output::count::objects::Options {
                thread_limit: None,
                chunk_size: 50,
                input_object_expansion:
                    output::count::objects::ObjectExpansion::TreeAdditionsComparedToAncestor,
            },
        )
        .map_err(|e| {
            GitError::repo(
                self.dir.path(),
                format!("could not walk what the refs reach: {}", chain(&e)),
            )
        })?;
        Ok((repo, db, counts))
    }
}

/// What the counting starts from: every tip (tags included, so annotated tags are kept) and
/// every commit reachable from the tips that peel to commits.
fn walk_inputs(
    repo: &gix::Repository,
    dir: &Path,
    tips: &[ObjectId],
) -> Result<Vec<ObjectId>, GitError> {
    let mut inputs: BTreeSet<ObjectId> = BTreeSet::new();
    let mut commits = Vec::new();
    for tip in tips {
        let object = repo
            .find_object(*tip)
            .map_err(|_| GitError::MissingObject {
                name: "(a kept ref)".into(),
                oid: tip.to_string(),
                path: dir.to_path_buf(),
            })?;
        inputs.insert(*tip);
        let peeled = object
            .peel_tags_to_end()
            .map_err(|e| GitError::repo(dir, format!("cannot peel tag {tip}: {e}")))?;
        if peeled.kind == gix::objs::Kind::Commit {
            commits.push(peeled.id);
        } else {
            inputs.insert(peeled.id);
        }
    }
    if !commits.is_empty() {
        let walk = repo
            .rev_walk(commits)
            .all()
            .map_err(|e| GitError::repo(dir, format!("cannot walk history: {e}")))?;
        for info in walk {
            let info =
                info.map_err(|e| GitError::repo(dir, format!("cannot walk history: {e}")))?;
            inputs.insert(info.id);
        }
    }
    Ok(inputs.into_iter().collect())
}

/// Checks that the written pack's index (computed from the objects' content) names
/// every object that was to be kept: a source pack whose entry inflates to other bytes
/// than its id says (damage a checksum did not catch) would otherwise slip through.
fn verify_holds(pack: &Path, wanted: &[ObjectId]) -> Result<(), GitError> {
    let index = open_index(pack)?;
    match wanted.iter().find(|id| index.lookup(**id).is_none()) {
        None => Ok(()),
        Some(id) => Err(GitError::repo(
            pack,
            format!("the consolidated pack lacks object {id}: a source pack is damaged"),
        )),
    }
}

/// The `.idx` beside a `.pack`, opened for lookups.
fn open_index(pack: &Path) -> Result<gix_pack::index::File, GitError> {
    let idx_path = pack.with_extension("idx");
    gix_pack::index::File::at(&idx_path, gix::hash::Kind::Sha1)
        .map_err(|e| GitError::repo(&idx_path, format!("cannot read the pack index: {e}")))
}

/// Objects in the scratch repository's packs (for the report; 0 when unknown).
fn source_object_count(repo: &gix::Repository) -> u64 {
    repo.objects.packed_object_count().unwrap_or(0)
}

/// Streams the counted objects into `file` as one pack.
fn write_entries(
    counts: Vec<output::Count>,
    db: gix::odb::Handle,
    file: &mut fs::File,
    objects: u32,
) -> Result<output::entry::iter_from_counts::Outcome, gix::Error> {
    let entries = output::entry::iter_from_counts(
        counts,
        db,
        Box::new(gix::utils::progress::Discard),
        output::entry::iter_from_counts::Options {
            thread_limit: None,
            mode: output::entry::iter_from_counts::Mode::PackCopyAndBaseObjects,
            allow_thin_pack: false,
            chunk_size: 64,
            version: gix_pack::data::Version::V2,
            compression: gix::zlib::Compression::DEFAULT,
        },
    )?;
    let mut in_order = gix::parallel::InOrderIter::from(entries);
    let mut writer = output::bytes::FromEntriesIter::new(
        in_order.by_ref(),
        BufWriter::with_capacity(256 << 10, &mut *file),
        objects,
        gix_pack::data::Version::V2,
        gix::hash::Kind::Sha1,
    );
    for step in writer.by_ref() {
        step?;
    }
    drop(writer);
    use gix::parallel::Finalize as _;
    in_order.inner.finalize()
}

/// Puts `pack` (and its index) into the mirror at `mirror` and removes the packs it
/// replaces: every other pack when `pack` holds what each of the mirror's refs points to
/// (then it holds everything they reach: it was written as a closure), else — the mirror
/// is ahead of the snapshots — only those in `replaced`. Returns how many packs went.
/// New before old: the consolidated pack is durable in the mirror before any pack goes,
/// and a pack's `.idx` goes before its `.pack`, so a kill leaves a superset or a stray
/// `.pack` the next fetch cleans up.
pub fn compact_mirror(
    mirror: &Path,
    pack: &ConsolidatedPack,
    replaced: &BTreeSet<String>,
) -> Result<usize, GitError> {
    let dir = mirror.join("objects").join("pack");
    for stray in strays(mirror)? {
        fs::remove_file(&stray).map_err(|e| GitError::io("remove", &stray, e))?;
    }
    install_pack(&dir, pack)?;
    let holds_all = holds_every_ref_target(mirror, pack)?;
    let mut removed = 0;
    for old in super::list_packs(mirror)? {
        if old.pack_hash == pack.pack_hash || !(holds_all || replaced.contains(&old.pack_hash)) {
            continue;
        }
        for ext in ["idx", "rev", "keep", "pack"] {
            let path = old.path.with_extension(ext);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(GitError::io("remove", &path, e)),
            }
        }
        removed += 1;
    }
    Ok(removed)
}

/// What an interrupted compaction can leave in a mirror's pack directory: a `.pack`
/// whose `.idx` is gone (or not there yet) and half-copied `.tmp-compact-*` files. Only
/// call under the repository's lock (no fetch is writing a pack meanwhile).
pub fn strays(mirror: &Path) -> Result<Vec<PathBuf>, GitError> {
    let dir = mirror.join("objects").join("pack");
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(GitError::io("list packs in", &dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| GitError::io("list packs in", &dir, e))?
            .path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stray_pack = name.starts_with("pack-")
            && name.ends_with(".pack")
            && !path.with_extension("idx").exists();
        if stray_pack || name.starts_with(".tmp-compact-") {
            out.push(path);
        }
    }
    Ok(out)
}

/// Copies the pack and its index into `dir` (index last), each durable before renamed.
fn install_pack(dir: &Path, pack: &ConsolidatedPack) -> Result<(), GitError> {
    let name = format!("pack-{}", pack.pack_hash);
    let to_idx = dir.join(format!("{name}.idx"));
    if to_idx.is_file() {
        return Ok(());
    }
    let to_pack = dir.join(format!("{name}.pack"));
    for (from, to) in [
        (pack.path.clone(), &to_pack),
        (pack.path.with_extension("idx"), &to_idx),
    ] {
        let tmp = dir.join(format!(".tmp-compact-{}", pack.pack_hash));
        fs::copy(&from, &tmp).map_err(|e| GitError::io("copy pack into", dir, e))?;
        sync_file(&tmp)?;
        fs::rename(&tmp, to).map_err(|e| GitError::io("rename", &tmp, e))?;
    }
    // Each file was synced before its rename: the directory entries are what is left.
    sync_file(dir)
}

/// Whether every object a `refs/*` ref of the mirror points to is in `pack`.
fn holds_every_ref_target(mirror: &Path, pack: &ConsolidatedPack) -> Result<bool, GitError> {
    let repo = open_mirror(mirror)?;
    let refs = super::fetch::local_refs(&repo, mirror)?;
    let index = open_index(&pack.path)?;
    Ok(refs.values().all(|target| match target {
        super::RefTarget::Object(hex) => {
            ObjectId::from_hex(hex.as_bytes()).is_ok_and(|id| index.lookup(id).is_some())
        }
        super::RefTarget::Symbolic(_) => true,
    }))
}
