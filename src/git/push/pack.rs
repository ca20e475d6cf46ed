//! The pack a push sends, made from a snapshot's packs without recompressing anything.
//!
//! * One pack (and a server that takes `ofs-delta`): streamed byte for byte.
//! * Several packs (a fetch chain): each is spooled into a scratch directory and indexed in
//!   bounded memory (`pack_receive`, as a fetch does), which gives every entry's object id.
//!   The packs are then merged into one stream: a header with the total count, the entries
//!   copied as they are (compressed data untouched, deltas reused) except that an object
//!   already sent by an earlier pack is left out (servers with `receive.fsckObjects` refuse
//!   duplicates), and a trailer SHA-1 over the stream. An `OFS_DELTA` gets its distance
//!   recomputed for the new positions, or becomes a `REF_DELTA` when its base was left out
//!   (the base went earlier in the stream, from another pack) or the server does not take
//!   `ofs-delta`.
//!
//! Memory holds a few words per object (its id and where it goes), never pack data beyond a
//! copy buffer. Everything is computed before the first byte is sent, so the request can carry
//! an exact `Content-Length`.

use std::{
    collections::HashSet,
    fs::File,
    io::{self, BufReader, Read},
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
};

use gix::hash::ObjectId;
use gix::odb::pack::data::{entry::Header, Entry};

use super::PackSource;
use crate::git::{pack_index::PackError, pack_receive::receive_pack};

/// Bytes of an object id (SHA-1).
const HASH_LEN: usize = 20;
/// Size of the copy buffer.
const COPY: usize = 256 << 10;

/// What can go wrong while planning or writing the pack.
#[derive(Debug, thiserror::Error)]
pub(super) enum PlanError {
    /// A snapshot pack is unreadable or corrupt.
    #[error("pack #{index}: {message}")]
    Pack {
        /// Position of the pack in the source.
        index: usize,
        /// What is wrong with it.
        message: String,
    },
    /// Reading or writing a scratch file failed, or the connection took no more data.
    #[error("could not {action}: {source}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Interrupted on request.
    #[error("interrupted")]
    Interrupted,
}

/// Where the pack's bytes go.
pub(super) trait Sink {
    /// Takes the next bytes of the pack.
    fn put(&mut self, data: &[u8]) -> Result<(), PlanError>;
}

/// The pack to send: how to write it, its length and object count.
pub(super) struct Plan<'a> {
    source: &'a dyn PackSource,
    kind: Kind,
    objects: u64,
    len: u64,
}

enum Kind {
    /// No packs: a pack without objects.
    Empty,
    /// Pack 0 of the source, as it is.
    Single,
    /// The spooled packs, merged.
    Merged(Vec<Spooled>),
}

/// One snapshot pack in the scratch directory, with what to do with each entry.
struct Spooled {
    path: PathBuf,
    /// In pack order.
    entries: Vec<Planned>,
}

struct Planned {
    /// Where the entry starts in its pack.
    offset: u64,
    /// Length of its header there.
    header_size: u32,
    /// Length of its compressed data.
    data_len: u64,
    decompressed_size: u64,
    /// The header to write, or `None` to leave the entry out.
    out: Option<Header>,
}

impl<'a> Plan<'a> {
    /// Works out the pack for `source` (see the module documentation); several packs are
    /// spooled into `scratch`, which must live until [`Plan::write`] is done.
    pub fn new(
        source: &'a dyn PackSource,
        ofs_delta: bool,
        scratch: &Path,
        interrupt: &AtomicBool,
    ) -> Result<Plan<'a>, PlanError> {
        let (kind, objects, len) = match source.count() {
            0 => (Kind::Empty, 0, 12 + HASH_LEN as u64),
            1 if ofs_delta => {
                let mut header = [0u8; 12];
                source
                    .open(0)
                    .and_then(|mut r| r.read_exact(&mut header))
                    .map_err(|err| corrupt(0, format!("could not read its header: {err}")))?;
                (Kind::Single, pack_count(&header, 0)?, source.size(0))
            }
            count => {
                let mut spooled = Vec::with_capacity(count);
                let mut ids = Vec::with_capacity(count);
                for index in 0..count {
                    let (pack, pack_ids) = spool(source, index, scratch, interrupt)?;
                    spooled.push(pack);
                    ids.push(pack_ids);
                }
                let (objects, len) = merge(&mut spooled, &ids, ofs_delta)?;
                (Kind::Merged(spooled), objects, len)
            }
        };
        Ok(Plan {
            source,
            kind,
            objects,
            len,
        })
    }

    /// Objects in the pack.
    pub fn objects(&self) -> u64 {
        self.objects
    }

    /// Bytes of the pack.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Writes the pack to `sink`.
    pub fn write(&self, sink: &mut dyn Sink, interrupt: &AtomicBool) -> Result<(), PlanError> {
        match &self.kind {
            Kind::Single => {
                let mut reader = self
                    .source
                    .open(0)
                    .map_err(|err| corrupt(0, format!("could not open it: {err}")))?;
                let copied =
                    copy(&mut reader, self.len, sink, interrupt).map_err(|err| relabel(err, 0))?;
                let mut probe = [0u8; 1];
                if copied != self.len || matches!(reader.read(&mut probe), Ok(n) if n > 0) {
                    return Err(corrupt(0, "its size is not what the archive says".into()));
                }
                Ok(())
            }
            Kind::Empty => {
                let mut out = Hashing::new(sink);
                out.put(&pack_header(0))?;
                out.finish()
            }
            Kind::Merged(packs) => {
                let mut out = Hashing::new(sink);
                out.put(&pack_header(self.objects as u32))?;
                for (index, pack) in packs.iter().enumerate() {
                    write_entries(pack, &mut out, interrupt).map_err(|err| relabel(err, index))?;
                }
                out.finish()
            }
        }
    }
}

fn corrupt(index: usize, message: String) -> PlanError {
    PlanError::Pack { index, message }
}

fn relabel(err: PlanError, index: usize) -> PlanError {
    match err {
        PlanError::Pack { message, .. } => PlanError::Pack { index, message },
        other => other,
    }
}

fn pack_header(count: u32) -> [u8; 12] {
    let mut header = [0u8; 12];
    header[..4].copy_from_slice(b"PACK");
    header[4..8].copy_from_slice(&2u32.to_be_bytes());
    header[8..].copy_from_slice(&count.to_be_bytes());
    header
}

fn pack_count(header: &[u8; 12], index: usize) -> Result<u64, PlanError> {
    let version = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if &header[..4] != b"PACK" || !(2..=3).contains(&version) {
        return Err(corrupt(index, "it is not a version 2 or 3 pack".into()));
    }
    Ok(u64::from(u32::from_be_bytes([
        header[8], header[9], header[10], header[11],
    ])))
}

/// Copies `len` bytes (at most) of `reader` to `sink`; returns how many there were.
fn copy(
    reader: &mut dyn Read,
    len: u64,
    sink: &mut dyn Sink,
    interrupt: &AtomicBool,
) -> Result<u64, PlanError> {
    let mut buf = vec![0u8; COPY];
    let mut copied = 0u64;
    while copied < len {
        if interrupt.load(Ordering::Relaxed) {
            return Err(PlanError::Interrupted);
        }
        let want = (len - copied).min(COPY as u64) as usize;
        let n = match reader.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(corrupt(0, format!("could not read it: {err}"))),
        };
        sink.put(&buf[..n])?;
        copied += n as u64;
    }
    Ok(copied)
}

/// Spools pack `index` into `scratch`, indexes it, and reads every entry's header.
fn spool(
    source: &dyn PackSource,
    index: usize,
    scratch: &Path,
    interrupt: &AtomicBool,
) -> Result<(Spooled, Vec<ObjectId>), PlanError> {
    let reader = source
        .open(index)
        .map_err(|err| corrupt(index, format!("could not open it: {err}")))?;
    let mut reader = BufReader::with_capacity(64 << 10, reader);
    let received = receive_pack(
        &mut reader,
        scratch,
        None::<gix::objs::find::Never>,
        gix::hash::Kind::Sha1,
        interrupt,
    )
    .map_err(|err| match err {
        PackError::Interrupted => PlanError::Interrupted,
        PackError::Corrupt(message) => corrupt(index, message),
        PackError::Io { action, source } => PlanError::Io { action, source },
    })?;
    let Some(received) = received else {
        return Ok((
            Spooled {
                path: PathBuf::new(),
                entries: Vec::new(),
            },
            Vec::new(),
        ));
    };
    let idx = gix::odb::pack::index::File::at(
        received.pack_path.with_extension("idx"),
        gix::hash::Kind::Sha1,
    )
    .map_err(|err| corrupt(index, format!("could not read its index: {err}")))?;
    let mut by_offset: Vec<(u64, ObjectId)> = idx.iter().map(|e| (e.pack_offset, e.oid)).collect();
    drop(idx);
    by_offset.sort_unstable_by_key(|&(offset, _)| offset);
    let file = File::open(&received.pack_path).map_err(|source| PlanError::Io {
        action: "open a spooled pack",
        source,
    })?;
    let end = file
        .metadata()
        .map_err(|source| PlanError::Io {
            action: "read a spooled pack",
            source,
        })?
        .len()
        - HASH_LEN as u64;
    let mut reader = BufReader::with_capacity(64 << 10, file);
    reader.seek_relative(12).map_err(|source| PlanError::Io {
        action: "read a spooled pack",
        source,
    })?;
    let mut entries = Vec::with_capacity(by_offset.len());
    for (i, &(offset, _)) in by_offset.iter().enumerate() {
        let entry = Entry::from_read(&mut reader, offset, HASH_LEN)
            .map_err(|err| corrupt(index, format!("entry at offset {offset}: {err}")))?;
        let next = by_offset.get(i + 1).map_or(end, |&(o, _)| o);
        let header_size = entry.header_size() as u64;
        let data_len = next
            .checked_sub(offset + header_size)
            .ok_or_else(|| corrupt(index, format!("entry at offset {offset} overlaps the next")))?;
        reader
            .seek_relative(data_len as i64)
            .map_err(|source| PlanError::Io {
                action: "read a spooled pack",
                source,
            })?;
        entries.push(Planned {
            offset,
            header_size: header_size as u32,
            data_len,
            decompressed_size: entry.decompressed_size,
            out: Some(entry.header),
        });
    }
    let ids = by_offset.into_iter().map(|(_, id)| id).collect();
    Ok((
        Spooled {
            path: received.pack_path,
            entries,
        },
        ids,
    ))
}

/// Decides, pack by pack, which entries go into the merged pack (the first copy of each
/// object) and with which header; returns the object count and the merged pack's length.
fn merge(
    packs: &mut [Spooled],
    ids: &[Vec<ObjectId>],
    ofs_delta: bool,
) -> Result<(u64, u64), PlanError> {
    let mut seen: HashSet<ObjectId> = HashSet::new();
    let mut pos = 12u64;
    let mut objects = 0u64;
    for (index, (pack, ids)) in packs.iter_mut().zip(ids).enumerate() {
        // Where each entry of this pack goes in the merged pack (`None`: left out).
        let mut placed: Vec<Option<u64>> = vec![None; pack.entries.len()];
        for i in 0..pack.entries.len() {
            if !seen.insert(ids[i]) {
                pack.entries[i].out = None;
                continue;
            }
            let entry = &pack.entries[i];
            let header = match entry.out {
                Some(Header::OfsDelta { base_distance }) => {
                    let base = entry
                        .offset
                        .checked_sub(base_distance)
                        .and_then(|offset| {
                            pack.entries
                                .binary_search_by_key(&offset, |e| e.offset)
                                .ok()
                        })
                        .ok_or_else(|| {
                            corrupt(
                                index,
                                format!("the delta at offset {} has no base", entry.offset),
                            )
                        })?;
                    match placed[base] {
                        Some(base_pos) if ofs_delta => Header::OfsDelta {
                            base_distance: pos - base_pos,
                        },
                        _ => Header::RefDelta { base_id: ids[base] },
                    }
                }
                Some(header) => header,
                None => continue,
            };
            placed[i] = Some(pos);
            pos += header.size(entry.decompressed_size) as u64 + entry.data_len;
            pack.entries[i].out = Some(header);
            objects += 1;
        }
    }
    if objects > u64::from(u32::MAX) {
        return Err(corrupt(0, "the packs hold more than 2^32 objects".into()));
    }
    Ok((objects, pos + HASH_LEN as u64))
}

/// Writes the chosen entries of one spooled pack.
fn write_entries(
    pack: &Spooled,
    out: &mut dyn Sink,
    interrupt: &AtomicBool,
) -> Result<(), PlanError> {
    if pack.entries.is_empty() {
        return Ok(());
    }
    let read_failed = |source| PlanError::Io {
        action: "read a spooled pack",
        source,
    };
    let file = File::open(&pack.path).map_err(read_failed)?;
    let mut reader = BufReader::with_capacity(COPY, file);
    reader.seek_relative(12).map_err(read_failed)?;
    let mut header_bytes = Vec::with_capacity(32);
    for entry in &pack.entries {
        let Some(header) = entry.out else {
            reader
                .seek_relative((u64::from(entry.header_size) + entry.data_len) as i64)
                .map_err(read_failed)?;
            continue;
        };
        header_bytes.clear();
        header
            .write_to(entry.decompressed_size, &mut header_bytes)
            .map_err(read_failed)?;
        out.put(&header_bytes)?;
        reader
            .seek_relative(i64::from(entry.header_size))
            .map_err(read_failed)?;
        let copied = copy(&mut reader, entry.data_len, out, interrupt)?;
        if copied != entry.data_len {
            return Err(corrupt(0, "a spooled pack is shorter than indexed".into()));
        }
    }
    Ok(())
}

/// A sink that hashes what passes through and ends the pack with the hash.
struct Hashing<'a> {
    inner: &'a mut dyn Sink,
    hasher: gix::hash::Hasher,
}

impl<'a> Hashing<'a> {
    fn new(inner: &'a mut dyn Sink) -> Hashing<'a> {
        Hashing {
            inner,
            hasher: gix::hash::hasher(gix::hash::Kind::Sha1),
        }
    }

    fn finish(self) -> Result<(), PlanError> {
        let id = self.hasher.try_finalize().map_err(|err| PlanError::Io {
            action: "hash the pack",
            source: io::Error::other(err.to_string()),
        })?;
        self.inner.put(id.as_slice())
    }
}

impl Sink for Hashing<'_> {
    fn put(&mut self, data: &[u8]) -> Result<(), PlanError> {
        self.hasher.update(data);
        self.inner.put(data)
    }
}
