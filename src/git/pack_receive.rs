//! Receiving a pack stream into `objects/pack` as `pack-<hash>.pack` with its `.idx`, in memory
//! that does not grow with the pack.
//!
//! The stream is written to a temporary file while its entries are parsed once (gix-pack's
//! streaming entry iterator, which verifies the trailing checksum); a thin pack is completed on
//! the way by inserting the missing bases from the repository (gix-pack's ref-delta lookup). The
//! index is then built from the file by [`pack_index`](super::pack_index). Both files are synced
//! to disk before they get their final names, the pack first: a pack without its `.idx` is never
//! used by anyone.

use std::{
    fs::File,
    io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
};

use gix::odb::pack::data::{
    entry::Header,
    input::{
        BytesToEntriesIter, EntriesToBytesIter, Entry, EntryDataMode, LookupRefDeltaObjectsIter,
        Mode,
    },
};

use super::pack_index::{self, EntryKind, EntryRecord, PackEntries, PackError};

/// A pack written by [`receive_pack()`].
#[derive(Debug)]
pub(crate) struct ReceivedPack {
    /// The pack's checksum (its name).
    pub pack_hash: gix::hash::ObjectId,
    /// How many objects it holds.
    pub num_objects: u32,
    /// Where the `.pack` is.
    pub pack_path: PathBuf,
}

/// Read one pack from `input` into `pack_dir` and index it.
///
/// With `thin_bases`, `REF_DELTA` entries whose base is not in the pack get their base inserted
/// from there (the pack is rewritten on the fly, so its hash changes); without it, the pack is
/// stored byte for byte. `input` must end where the pack ends. Returns `None` for a pack with no
/// objects, which is not stored.
pub(crate) fn receive_pack(
    input: &mut dyn BufRead,
    pack_dir: &Path,
    thin_bases: Option<impl gix::objs::Find>,
    object_hash: gix::hash::Kind,
    should_interrupt: &AtomicBool,
) -> Result<Option<ReceivedPack>, PackError> {
    receive_pack_with_budget(
        input,
        pack_dir,
        thin_bases,
        object_hash,
        pack_index::BASE_BUDGET,
        should_interrupt,
    )
}

/// [`receive_pack()`] holding at most `base_budget` bytes of delta bases (all threads together).
pub(crate) fn receive_pack_with_budget(
    input: &mut dyn BufRead,
    pack_dir: &Path,
    thin_bases: Option<impl gix::objs::Find>,
    object_hash: gix::hash::Kind,
    base_budget: usize,
    should_interrupt: &AtomicBool,
) -> Result<Option<ReceivedPack>, PackError> {
    let mut pack_tmp = tempfile::Builder::new()
        .prefix(".tmp-pack-")
        .tempfile_in(pack_dir)
        .map_err(PackError::io("create a temporary pack file"))?;
    let reader = Interruptible {
        inner: input,
        should_interrupt,
    };
    let entries = match thin_bases {
        None => stream_as_is(reader, pack_tmp.as_file(), object_hash),
        Some(find) => stream_completing_thin(reader, pack_tmp.as_file_mut(), find, object_hash),
    }
    .map_err(|err| {
        if should_interrupt.load(Ordering::Relaxed) {
            PackError::Interrupted
        } else {
            err
        }
    })?;
    let Some(entries) = entries else {
        return Ok(None);
    };

    let mut index_tmp = tempfile::Builder::new()
        .prefix(".tmp-idx-")
        .tempfile_in(pack_dir)
        .map_err(PackError::io("create a temporary index file"))?;
    let num_objects = pack_index::write_index(
        pack_tmp.as_file(),
        &entries,
        index_tmp.as_file_mut(),
        base_budget,
        should_interrupt,
    )?;
    pack_tmp
        .as_file()
        .sync_all()
        .map_err(PackError::io("sync the pack file"))?;
    index_tmp
        .as_file()
        .sync_all()
        .map_err(PackError::io("sync the index file"))?;

    let pack_path = pack_dir.join(format!("pack-{}.pack", entries.pack_hash));
    pack_tmp.persist(&pack_path).map_err(|err| PackError::Io {
        action: "move the pack file into place",
        source: err.error,
    })?;
    index_tmp
        .persist(pack_path.with_extension("idx"))
        .map_err(|err| PackError::Io {
            action: "move the index file into place",
            source: err.error,
        })?;
    File::open(pack_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(PackError::io("sync the pack directory"))?;
    Ok(Some(ReceivedPack {
        pack_hash: entries.pack_hash,
        num_objects,
        pack_path,
    }))
}

/// Copy the pack to `file` unchanged while parsing its entries.
fn stream_as_is(
    reader: Interruptible<'_>,
    file: &File,
    object_hash: gix::hash::Kind,
) -> Result<Option<PackEntries>, PackError> {
    let mut tee = Tee {
        inner: reader,
        copy: BufWriter::with_capacity(256 << 10, file),
        copied: 0,
    };
    let entries = {
        // The reader must be buffered on top of the tee so that every byte goes through `read()`.
        let buffered = BufReader::with_capacity(64 << 10, &mut tee);
        let iter = BytesToEntriesIter::new_from_header(
            buffered,
            Mode::Verify,
            EntryDataMode::Crc32,
            object_hash,
        )
        .map_err(corrupt)?;
        collect(iter, object_hash)
    };
    tee.copy
        .flush()
        .map_err(PackError::io("write the pack file"))?;
    let Some(entries) = entries? else {
        return Ok(None);
    };
    let pack_len = entries.entries_end + object_hash.len_in_bytes() as u64;
    let mut probe = [0u8; 1];
    if tee.copied != pack_len || tee.inner.read(&mut probe).map_err(corrupt_io)? != 0 {
        return Err(PackError::Corrupt(
            "unexpected data after the end of the pack".into(),
        ));
    }
    Ok(Some(entries))
}

/// Write the pack to `file` with the bases its `REF_DELTA`s lack inserted from `find`.
fn stream_completing_thin(
    reader: Interruptible<'_>,
    file: &mut File,
    find: impl gix::objs::Find,
    object_hash: gix::hash::Kind,
) -> Result<Option<PackEntries>, PackError> {
    let iter = BytesToEntriesIter::new_from_header(
        BufReader::with_capacity(64 << 10, reader),
        Mode::Verify,
        EntryDataMode::KeepAndCrc32,
        object_hash,
    )
    .map_err(corrupt)?;
    let version = iter.version();
    let iter = LookupRefDeltaObjectsIter::new(iter, find, gix::zlib::Compression::BEST_SPEED);
    let mut out = BufferedFile {
        writer: BufWriter::with_capacity(256 << 10, file),
    };
    let iter = EntriesToBytesIter::new(iter, &mut out, version, object_hash);
    let entries = collect(iter, object_hash)?;
    out.writer
        .flush()
        .map_err(PackError::io("write the pack file"))?;
    Ok(entries)
}

/// Record every entry of `iter`.
fn collect(
    iter: impl Iterator<Item = Result<Entry, gix::Error>>,
    object_hash: gix::hash::Kind,
) -> Result<Option<PackEntries>, PackError> {
    let mut records = Vec::with_capacity(iter.size_hint().0.min(1 << 20));
    let mut ref_bases = Vec::new();
    let mut pack_hash = None;
    let mut entries_end = 0;
    for entry in iter {
        let entry = entry.map_err(corrupt)?;
        let index = u32::try_from(records.len())
            .map_err(|_| PackError::Corrupt("the pack has more than 2^32 objects".into()))?;
        let kind = match entry.header {
            Header::Commit => EntryKind::Base(gix::objs::Kind::Commit),
            Header::Tree => EntryKind::Base(gix::objs::Kind::Tree),
            Header::Blob => EntryKind::Base(gix::objs::Kind::Blob),
            Header::Tag => EntryKind::Base(gix::objs::Kind::Tag),
            Header::OfsDelta { base_distance } => EntryKind::OfsDelta {
                base_offset: Header::verified_base_pack_offset(entry.pack_offset, base_distance)
                    .ok_or_else(|| {
                        PackError::Corrupt(format!(
                            "the delta at offset {} has an invalid base distance {base_distance}",
                            entry.pack_offset
                        ))
                    })?,
            },
            Header::RefDelta { base_id } => {
                ref_bases.push((index, base_id));
                EntryKind::RefDelta
            }
        };
        let crc32 = entry
            .crc32
            .ok_or_else(|| PackError::Corrupt("internal: no CRC32 for an entry".into()))?;
        entries_end = entry.pack_offset + entry.bytes_in_pack();
        records.push(EntryRecord {
            offset: entry.pack_offset,
            header_size: entry.header_size,
            decompressed_size: entry.decompressed_size,
            crc32,
            kind,
        });
        if entry.trailer.is_some() {
            pack_hash = entry.trailer;
        }
    }
    if records.is_empty() {
        return Ok(None);
    }
    let pack_hash =
        pack_hash.ok_or_else(|| PackError::Corrupt("the pack has no trailing checksum".into()))?;
    Ok(Some(PackEntries {
        records,
        ref_bases,
        entries_end,
        pack_hash,
        object_hash,
    }))
}

fn corrupt(err: gix::Error) -> PackError {
    PackError::Corrupt(super::error::chain(&err))
}

fn corrupt_io(err: io::Error) -> PackError {
    PackError::Corrupt(format!("could not read the pack: {err}"))
}

/// A reader that fails once `should_interrupt` is set.
struct Interruptible<'a> {
    inner: &'a mut dyn BufRead,
    should_interrupt: &'a AtomicBool,
}

impl Read for Interruptible<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.should_interrupt.load(Ordering::Relaxed) {
            return Err(io::Error::other("interrupted on request"));
        }
        self.inner.read(buf)
    }
}

impl BufRead for Interruptible<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.should_interrupt.load(Ordering::Relaxed) {
            return Err(io::Error::other("interrupted on request"));
        }
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.inner.consume(amount);
    }
}

/// A reader that copies everything it reads to `copy`.
struct Tee<'a, W: Write> {
    inner: Interruptible<'a>,
    copy: W,
    copied: u64,
}

impl<W: Write> Read for Tee<'_, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        self.copied += n as u64;
        Ok(n)
    }
}

/// A buffered file that can also be read and sought, as gix's pack rewriter needs.
struct BufferedFile<'a> {
    writer: BufWriter<&'a mut File>,
}

impl Write for BufferedFile<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

impl Read for BufferedFile<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.writer.flush()?;
        self.writer.get_mut().read(buf)
    }
}

impl Seek for BufferedFile<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.writer.seek(pos)
    }
}
