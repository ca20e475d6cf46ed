//! Building the version 2 index (`.idx`) of a pack file in bounded memory, like `git index-pack`.
//!
//! The entries of the pack (offset, CRC32, type, delta base) are known from streaming it once
//! (see `pack_receive`). Here every object's id is computed: each base object and its tree of
//! deltas is resolved depth-first by one of a few worker threads, reading compressed entries from
//! the pack file with positioned reads (`pread`, never a memory map, so the pack's pages never
//! count towards the process's memory). Only the bases on the current delta chain are held, and
//! when they exceed a budget the oldest are dropped and rebuilt from their own base on demand.
//! Base objects without deltas are inflated and hashed in a streaming fashion, so memory does not
//! depend on the pack size, only (for deltified objects) on the size of the largest object.

use std::{
    collections::HashMap,
    fs::File,
    io::Write,
    os::unix::fs::FileExt as _,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Mutex,
    },
};

use gix::hash::{Kind as HashKind, ObjectId};
use gix::objs::Kind;
use gix::zlib::{Decompress, FlushDecompress, Status};

use super::delta;

/// Bytes of resolved bases all workers together keep on their delta chains before dropping the
/// oldest (each gets an equal share).
pub(crate) const BASE_BUDGET: usize = 64 << 20;
/// Size of the read and inflate buffers.
const CHUNK: usize = 64 << 10;
/// How many base objects a worker takes at a time.
const ROOT_BATCH: usize = 32;

/// What can go wrong while receiving or indexing a pack.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PackError {
    /// The pack is malformed.
    #[error("{0}")]
    Corrupt(String),
    /// Reading or writing a file failed.
    #[error("could not {action}: {source}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The operation was interrupted on request.
    #[error("interrupted")]
    Interrupted,
}

impl PackError {
    pub(crate) fn io(action: &'static str) -> impl FnOnce(std::io::Error) -> PackError {
        move |source| PackError::Io { action, source }
    }
}

/// The kind of one pack entry.
#[derive(Clone, Copy, Debug)]
pub(crate) enum EntryKind {
    /// A whole object.
    Base(Kind),
    /// A delta against the entry starting at this pack offset.
    OfsDelta { base_offset: u64 },
    /// A delta against the object with the id stored in [`PackEntries::ref_bases`].
    RefDelta,
}

/// One entry of a pack, as seen while streaming it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EntryRecord {
    /// Where the entry (its header) starts in the pack.
    pub offset: u64,
    /// Length of the entry header; the compressed data follows it.
    pub header_size: u16,
    /// Size of the inflated entry data (the object, or the delta).
    pub decompressed_size: u64,
    /// CRC32 of the entry's header and compressed data, as stored in the index.
    pub crc32: u32,
    /// Type and base.
    pub kind: EntryKind,
}

/// Everything known about a pack after streaming it.
#[derive(Debug)]
pub(crate) struct PackEntries {
    /// All entries, in pack order (ascending offsets).
    pub records: Vec<EntryRecord>,
    /// The base object ids of `REF_DELTA` entries, by entry index.
    pub ref_bases: Vec<(u32, ObjectId)>,
    /// Where the last entry ends (the trailing checksum starts here).
    pub entries_end: u64,
    /// The pack's checksum, from its trailer.
    pub pack_hash: ObjectId,
    /// The object hash of the pack.
    pub object_hash: HashKind,
}

/// Compute the id of every object in `pack` (whose entries are `entries`) and write the version 2
/// index to `out`. Returns the number of objects.
/// Resolution holds at most `base_budget` bytes of bases in all, plus the objects at hand.
pub(crate) fn write_index(
    pack: &File,
    entries: &PackEntries,
    out: &mut dyn Write,
    base_budget: usize,
    should_interrupt: &AtomicBool,
) -> Result<u32, PackError> {
    let count = u32::try_from(entries.records.len())
        .map_err(|_| PackError::Corrupt("the pack has more than 2^32 objects".into()))?;
    let ids = resolve_all(pack, entries, base_budget, should_interrupt)?;
    write_v2(entries, ids, out)?;
    Ok(count)
}

/// The object id of every entry, as `(id, entry index)`.
fn resolve_all(
    pack: &File,
    entries: &PackEntries,
    base_budget: usize,
    should_interrupt: &AtomicBool,
) -> Result<Vec<(ObjectId, u32)>, PackError> {
    let records = &entries.records;
    let mut ofs_children: Vec<(u32, u32)> = Vec::new();
    let mut roots = Vec::new();
    for (index, record) in records.iter().enumerate() {
        match record.kind {
            EntryKind::Base(_) => roots.push(index as u32),
            EntryKind::OfsDelta { base_offset } => {
                let base = records
                    .binary_search_by_key(&base_offset, |r| r.offset)
                    .map_err(|_| {
                        PackError::Corrupt(format!(
                            "the delta at offset {} refers to offset {base_offset}, where no entry starts",
                            record.offset
                        ))
                    })?;
                ofs_children.push((base as u32, index as u32));
            }
            EntryKind::RefDelta => {}
        }
    }
    ofs_children.sort_unstable();
    let mut waiting: HashMap<ObjectId, Vec<u32>> = HashMap::new();
    for (index, base) in &entries.ref_bases {
        waiting.entry(*base).or_default().push(*index);
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
        .min(roots.len().div_ceil(ROOT_BATCH).max(1));
    let shared = Shared {
        pack,
        entries,
        ofs_children,
        waiting_count: AtomicUsize::new(entries.ref_bases.len()),
        waiting: Mutex::new(waiting),
        roots,
        next_root: AtomicUsize::new(0),
        failed: AtomicBool::new(false),
        should_interrupt,
        base_budget: (base_budget / threads).max(1),
    };

    let results: Vec<Result<Vec<(ObjectId, u32)>, PackError>> = if threads == 1 {
        vec![shared.work()]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| scope.spawn(|| shared.work()))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(PackError::Corrupt("a pack indexing thread panicked".into()))
                    })
                })
                .collect()
        })
    };
    let mut ids = Vec::with_capacity(records.len());
    for result in results {
        ids.extend(result?);
    }
    if should_interrupt.load(Ordering::Relaxed) {
        return Err(PackError::Interrupted);
    }
    let waiting = shared
        .waiting
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(base) = waiting.keys().next() {
        return Err(PackError::Corrupt(format!(
            "{} delta(s) refer to base object {base}, which is not in the pack",
            waiting[base].len()
        )));
    }
    if ids.len() != records.len() {
        return Err(PackError::Corrupt(format!(
            "only {} of {} objects could be resolved",
            ids.len(),
            records.len()
        )));
    }
    ids.sort_unstable();
    Ok(ids)
}

/// State shared by the workers.
struct Shared<'a> {
    pack: &'a File,
    entries: &'a PackEntries,
    /// `(base index, delta index)` for every `OFS_DELTA`, sorted.
    ofs_children: Vec<(u32, u32)>,
    /// `REF_DELTA` entries whose base has not been resolved yet, by base id.
    waiting: Mutex<HashMap<ObjectId, Vec<u32>>>,
    waiting_count: AtomicUsize,
    /// Indices of the whole (non-delta) objects, where resolution starts.
    roots: Vec<u32>,
    next_root: AtomicUsize,
    failed: AtomicBool,
    should_interrupt: &'a AtomicBool,
    /// Bytes of bases each worker may hold.
    base_budget: usize,
}

/// One level of the delta chain a worker is descending.
struct Frame {
    index: u32,
    kind: Kind,
    /// The object at this level, unless dropped to stay within the budget.
    data: Option<Vec<u8>>,
    children: Vec<u32>,
    next_child: usize,
}

impl Shared<'_> {
    fn work(&self) -> Result<Vec<(ObjectId, u32)>, PackError> {
        let mut worker = Worker {
            inflater: Inflater::new(),
            ids: Vec::new(),
        };
        let result = self.work_inner(&mut worker);
        if result.is_err() {
            self.failed.store(true, Ordering::Relaxed);
        }
        result.map(|()| worker.ids)
    }

    fn work_inner(&self, worker: &mut Worker) -> Result<(), PackError> {
        loop {
            let start = self.next_root.fetch_add(ROOT_BATCH, Ordering::Relaxed);
            if start >= self.roots.len() {
                return Ok(());
            }
            let end = (start + ROOT_BATCH).min(self.roots.len());
            for &root in &self.roots[start..end] {
                if self.failed.load(Ordering::Relaxed) {
                    return Ok(());
                }
                if self.should_interrupt.load(Ordering::Relaxed) {
                    return Err(PackError::Interrupted);
                }
                self.resolve_tree(root, worker)?;
            }
        }
    }

    fn record(&self, index: u32) -> &EntryRecord {
        &self.entries.records[index as usize]
    }

    fn ofs_children_of(&self, index: u32) -> &[(u32, u32)] {
        let start = self.ofs_children.partition_point(|&(base, _)| base < index);
        let end = self
            .ofs_children
            .partition_point(|&(base, _)| base <= index);
        &self.ofs_children[start..end]
    }

    /// The deltas whose base is the object at `index` with id `id`.
    fn children_of(&self, index: u32, id: &ObjectId) -> Vec<u32> {
        let mut children: Vec<u32> = self
            .ofs_children_of(index)
            .iter()
            .map(|&(_, child)| child)
            .collect();
        if self.waiting_count.load(Ordering::Relaxed) > 0 {
            let mut waiting = self
                .waiting
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(more) = waiting.remove(id) {
                self.waiting_count.fetch_sub(more.len(), Ordering::Relaxed);
                children.extend(more);
            }
        }
        children
    }

    /// Resolve the base object at `root` and every delta that depends on it.
    fn resolve_tree(&self, root: u32, worker: &mut Worker) -> Result<(), PackError> {
        let record = *self.record(root);
        let EntryKind::Base(kind) = record.kind else {
            return Err(PackError::Corrupt("internal: root is a delta".into()));
        };
        let (id, data) = if self.ofs_children_of(root).is_empty() {
            // Most likely nothing depends on it: hash it while inflating, holding none of it.
            let mut hasher = gix::hash::hasher(self.entries.object_hash);
            hasher.update(&gix::objs::encode::loose_header(
                kind,
                record.decompressed_size,
            ));
            worker.inflater.inflate(
                self.pack,
                &self.entries.records,
                root,
                self.entries.entries_end,
                |chunk| {
                    hasher.update(chunk);
                    Ok(())
                },
            )?;
            (finalize(hasher)?, None)
        } else {
            let data = worker.inflate_all(self, root)?;
            (
                hash_object(self.entries.object_hash, kind, &data)?,
                Some(data),
            )
        };
        worker.ids.push((id, root));
        let children = self.children_of(root, &id);
        if children.is_empty() {
            return Ok(());
        }
        let data = match data {
            Some(data) => data,
            None => worker.inflate_all(self, root)?,
        };
        self.descend(
            Frame {
                index: root,
                kind,
                data: Some(data),
                children,
                next_child: 0,
            },
            worker,
        )
    }

    /// Resolve all deltas below `first`, depth-first.
    fn descend(&self, first: Frame, worker: &mut Worker) -> Result<(), PackError> {
        let mut stack = vec![first];
        while let Some(top) = stack.last_mut() {
            if top.next_child == top.children.len() {
                stack.pop();
                continue;
            }
            if self.should_interrupt.load(Ordering::Relaxed) {
                return Err(PackError::Interrupted);
            }
            if self.failed.load(Ordering::Relaxed) {
                return Ok(());
            }
            let child = top.children[top.next_child];
            top.next_child += 1;
            let last_child = top.next_child == top.children.len();
            let kind = top.kind;
            self.rebuild_top(&mut stack, worker)?;
            let top = stack.last_mut().expect("stack is not empty");
            let base = top.data.as_deref().expect("rebuilt");
            let object = worker.undeltify(self, base, child)?;
            if last_child {
                // The base is not needed any more, unless its descendants must be rebuilt.
                top.data = None;
            }
            let id = hash_object(self.entries.object_hash, kind, &object)?;
            worker.ids.push((id, child));
            let children = self.children_of(child, &id);
            if !children.is_empty() {
                stack.push(Frame {
                    index: child,
                    kind,
                    data: Some(object),
                    children,
                    next_child: 0,
                });
                prune(&mut stack, self.base_budget);
            }
        }
        Ok(())
    }

    /// Make sure the top of `stack` holds its object, rebuilding it from the nearest level below
    /// that still holds one (or from the root entry).
    fn rebuild_top(&self, stack: &mut [Frame], worker: &mut Worker) -> Result<(), PackError> {
        let top = stack.len() - 1;
        if stack[top].data.is_some() {
            return Ok(());
        }
        // Levels from `first_rebuilt` on are rebuilt here; all but the top are dropped again.
        let (first_rebuilt, from) = match stack[..top].iter().rposition(|f| f.data.is_some()) {
            Some(level) => (level + 1, level + 1),
            None => {
                stack[0].data = Some(worker.inflate_all(self, stack[0].index)?);
                (0, 1)
            }
        };
        for level in from..=top {
            let (below, this) = stack.split_at_mut(level);
            let base = below[level - 1].data.as_deref().expect("rebuilt in order");
            this[0].data = Some(worker.undeltify(self, base, this[0].index)?);
            if level > first_rebuilt {
                below[level - 1].data = None;
            }
        }
        prune(stack, self.base_budget);
        Ok(())
    }
}

/// Drop the objects of the lowest levels (never the top) while the chain holds more than the
/// budget.
fn prune(stack: &mut [Frame], budget: usize) {
    let mut held: usize = stack
        .iter()
        .filter_map(|f| f.data.as_ref().map(Vec::len))
        .sum();
    let top = stack.len() - 1;
    for frame in &mut stack[..top] {
        if held <= budget {
            break;
        }
        if let Some(data) = frame.data.take() {
            held -= data.len();
        }
    }
}

struct Worker {
    inflater: Inflater,
    ids: Vec<(ObjectId, u32)>,
}

impl Worker {
    /// The whole inflated data of the entry at `index`.
    fn inflate_all(&mut self, shared: &Shared<'_>, index: u32) -> Result<Vec<u8>, PackError> {
        let size = shared.record(index).decompressed_size;
        let mut out = Vec::new();
        usize::try_from(size)
            .ok()
            .and_then(|size| out.try_reserve_exact(size).ok())
            .ok_or_else(|| {
                PackError::Corrupt(format!(
                    "an object of {size} bytes cannot be held in memory"
                ))
            })?;
        self.inflater.inflate(
            shared.pack,
            &shared.entries.records,
            index,
            shared.entries.entries_end,
            |chunk| {
                out.extend_from_slice(chunk);
                Ok(())
            },
        )?;
        Ok(out)
    }

    /// The object the delta at `index` makes of `base`.
    fn undeltify(
        &mut self,
        shared: &Shared<'_>,
        base: &[u8],
        index: u32,
    ) -> Result<Vec<u8>, PackError> {
        let delta = self.inflate_all(shared, index)?;
        delta::apply(base, &delta).map_err(|err| {
            PackError::Corrupt(format!(
                "the delta at offset {}: {err}",
                shared.record(index).offset
            ))
        })
    }
}

fn hash_object(hash: HashKind, kind: Kind, data: &[u8]) -> Result<ObjectId, PackError> {
    gix::objs::compute_hash(hash, kind, data)
        .map_err(|err| PackError::Corrupt(format!("could not hash an object: {err}")))
}

fn finalize(hasher: gix::hash::Hasher) -> Result<ObjectId, PackError> {
    hasher
        .try_finalize()
        .map_err(|err| PackError::Corrupt(format!("could not hash an object: {err}")))
}

/// Inflates pack entries read with positioned reads.
struct Inflater {
    zlib: Decompress,
    input: Vec<u8>,
    output: Vec<u8>,
}

impl Inflater {
    fn new() -> Self {
        Inflater {
            zlib: Decompress::new(),
            input: vec![0; CHUNK],
            output: vec![0; CHUNK],
        }
    }

    /// Inflate the entry `index` of `records` from `pack`, passing the data to `consume` in
    /// chunks. Fails unless it inflates to exactly the recorded size.
    fn inflate(
        &mut self,
        pack: &File,
        records: &[EntryRecord],
        index: u32,
        entries_end: u64,
        mut consume: impl FnMut(&[u8]) -> Result<(), PackError>,
    ) -> Result<(), PackError> {
        let record = &records[index as usize];
        let mut pos = record.offset + u64::from(record.header_size);
        let end = records
            .get(index as usize + 1)
            .map_or(entries_end, |next| next.offset);
        let corrupt = |what: &str| {
            PackError::Corrupt(format!("the entry at offset {} {what}", record.offset))
        };
        self.zlib.reset();
        let (mut have, mut used) = (0usize, 0usize);
        let mut produced = 0u64;
        loop {
            if used == have && pos < end {
                let want = (end - pos).min(CHUNK as u64) as usize;
                pack.read_exact_at(&mut self.input[..want], pos)
                    .map_err(PackError::io("read the pack file"))?;
                pos += want as u64;
                have = want;
                used = 0;
            }
            let (in_before, out_before) = (self.zlib.total_in(), self.zlib.total_out());
            let status = self
                .zlib
                .decompress(
                    &self.input[used..have],
                    &mut self.output,
                    FlushDecompress::None,
                )
                .map_err(|err| corrupt(&format!("does not inflate: {err}")))?;
            let consumed = (self.zlib.total_in() - in_before) as usize;
            let written = (self.zlib.total_out() - out_before) as usize;
            used += consumed;
            produced += written as u64;
            if produced > record.decompressed_size {
                return Err(corrupt("inflates to more bytes than its header says"));
            }
            consume(&self.output[..written])?;
            match status {
                Status::StreamEnd => break,
                _ if consumed == 0 && written == 0 && used == have && pos >= end => {
                    return Err(corrupt("is truncated"));
                }
                _ => {}
            }
        }
        if produced != record.decompressed_size {
            return Err(corrupt("inflates to fewer bytes than its header says"));
        }
        Ok(())
    }
}

/// Write the version 2 index of `entries` with `ids` (sorted by id) to `out`.
fn write_v2(
    entries: &PackEntries,
    ids: Vec<(ObjectId, u32)>,
    out: &mut dyn Write,
) -> Result<(), PackError> {
    let mut out = HashingWriter {
        inner: std::io::BufWriter::with_capacity(CHUNK, out),
        hasher: gix::hash::hasher(entries.object_hash),
    };
    let io = PackError::io("write the pack index");
    let mut fanout = [0u32; 256];
    for (id, _) in &ids {
        fanout[usize::from(id.as_slice()[0])] += 1;
    }
    let mut buf = Vec::with_capacity(8 + 256 * 4);
    buf.extend_from_slice(b"\xfftOc");
    buf.extend_from_slice(&2u32.to_be_bytes());
    let mut total = 0u32;
    for n in fanout {
        total += n;
        buf.extend_from_slice(&total.to_be_bytes());
    }
    (|| -> std::io::Result<()> {
        out.write_all(&buf)?;
        for (id, _) in &ids {
            out.write_all(id.as_slice())?;
        }
        for (_, index) in &ids {
            out.write_all(&entries.records[*index as usize].crc32.to_be_bytes())?;
        }
        let mut large = Vec::new();
        for (_, index) in &ids {
            let offset = entries.records[*index as usize].offset;
            if offset > 0x7fff_ffff {
                out.write_all(&(0x8000_0000 | large.len() as u32).to_be_bytes())?;
                large.push(offset);
            } else {
                out.write_all(&(offset as u32).to_be_bytes())?;
            }
        }
        for offset in large {
            out.write_all(&offset.to_be_bytes())?;
        }
        out.write_all(entries.pack_hash.as_slice())?;
        Ok(())
    })()
    .map_err(io)?;
    let HashingWriter { mut inner, hasher } = out;
    let checksum = finalize(hasher)?;
    inner
        .write_all(checksum.as_slice())
        .and_then(|()| inner.flush())
        .map_err(PackError::io("write the pack index"))?;
    Ok(())
}

struct HashingWriter<W: Write> {
    inner: W,
    hasher: gix::hash::Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
