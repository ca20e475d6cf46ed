//! Blobs: content-addressed, verified, optionally compressed files.
//!
//! A blob's id is the BLAKE3 hash of its uncompressed content. It is stored as a
//! [`FileKind::Blob`] (locally `blobs/<first two hex digits>/<64 hex digits>`) as a
//! 13-byte header (`RSB1`, a codec byte: 0 stored, 1 zstd, and the content length
//! as u64 little-endian) followed by the body. Whether zstd pays is measured per blob on its first
//! MiB: git packs are already zlib-compressed and are usually stored as they are.
//! Every read re-hashes the content and fails if it does not match its id.
//!
//! In an encrypted archive the id is BLAKE3 *keyed* with the archive's blob id key,
//! and the file is a 12-byte header (`RSE1` and the content length) followed by an
//! age stream (see `crypt.rs`) holding the codec byte and the body: content and
//! compression are hidden, the length is not (the file's size tells it anyway).

use super::backend::{FileKind, Source};
use super::crypt::{ArchiveKey, Sink};
use super::pipe::{pipe, PipeWriter};
use super::writeback::Writeback;
use super::{io_err, Archive, ArchiveError};
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"RSB1";
const HEADER_LEN: usize = 13;
/// The magic of an encrypted blob, followed by the content length (u64 LE).
const SEALED_MAGIC: &[u8; 4] = b"RSE1";
const CODEC_STORED: u8 = 0;
const CODEC_ZSTD: u8 = 1;
/// How much of a blob is test-compressed to decide whether zstd pays.
const SAMPLE_LEN: usize = 1 << 20;
/// Chunks of 1 MiB between a file's encoder and its upload.
const PIPE_DEPTH: usize = 8;
/// Blobs up to this size are kept in the small-blob cache, when there is one.
const SMALL_BLOB: usize = 256 << 10;
/// zstd must save at least this share of the sample to be used.
const MIN_SAVING: f64 = 0.10;
const ZSTD_LEVEL: i32 = 3;

/// The id of a blob: BLAKE3 of its content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId([u8; 32]);

impl BlobId {
    /// Parses 64 hex digits.
    pub fn parse(s: &str) -> Result<BlobId, ArchiveError> {
        let bytes = hex::decode(s).map_err(|_| ArchiveError::InvalidBlobId(s.to_string()))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| ArchiveError::InvalidBlobId(s.to_string()))?;
        Ok(BlobId(arr))
    }

    /// The id of `content` in a plain archive (see [`Archive::blob_id_of`]).
    pub fn of(content: &[u8]) -> BlobId {
        BlobId(*blake3::hash(content).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({})", self.to_hex())
    }
}

impl serde::Serialize for BlobId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for BlobId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<BlobId, D::Error> {
        let s = String::deserialize(d)?;
        BlobId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The result of storing a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    pub id: BlobId,
    /// Uncompressed length.
    pub len: u64,
    /// Bytes this call added to the archive (0 when the blob was already there).
    pub stored_bytes: u64,
    /// Whether the blob is zstd-compressed on disk.
    pub compressed: bool,
}

/// Counts bytes written through it.
struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn zstd_pays(sample: &[u8]) -> bool {
    if sample.is_empty() {
        return false;
    }
    match zstd::bulk::compress(sample, ZSTD_LEVEL) {
        Ok(c) => (c.len() as f64) <= (sample.len() as f64) * (1.0 - MIN_SAVING),
        Err(_) => false,
    }
}

/// Reads until `buf` is full or the stream ends; returns bytes read.
pub(crate) fn read_full(r: &mut (impl Read + ?Sized), buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// What [`encode_blob`] wrote.
struct Encoded {
    id: BlobId,
    len: u64,
    stored: u64,
    compressed: bool,
}

/// Writes `source` to `file` as an encoded blob (header, then the body, zstd when it
/// pays on the first MiB, encrypted to `key` when given) in constant memory. Errors
/// name `tmp`. A `durable` file (one that will be fsynced into the archive, not
/// uploaded) is written out to disk as it fills ([`Writeback`]).
fn encode_blob(
    source: &mut dyn Read,
    file: &mut File,
    tmp: &Path,
    key: Option<&ArchiveKey>,
    durable: bool,
) -> Result<Encoded, ArchiveError> {
    let (sample, compress) = sample_of(source, tmp)?;
    let mut out = CountingWriter {
        inner: BufWriter::with_capacity(1 << 16, Writeback::new(file, durable)),
        count: 0,
    };
    // Header with a placeholder length, patched below.
    let len_offset = write_header(&mut out, key, compress, 0).map_err(io_err(tmp))?;
    let (id, len) = write_body(&mut out, key, compress, sample, source, tmp)?;
    let stored = out.count;
    let file = out
        .inner
        .into_inner()
        .map_err(|e| io_err(tmp)(e.into_error()))?
        .into_inner();
    file.seek(SeekFrom::Start(len_offset))
        .map_err(io_err(tmp))?;
    file.write_all(&len.to_le_bytes()).map_err(io_err(tmp))?;
    Ok(Encoded {
        id,
        len,
        stored,
        compressed: compress,
    })
}

/// The first MiB of `source`, and whether zstd pays on it.
fn sample_of(source: &mut dyn Read, at: &Path) -> Result<(Vec<u8>, bool), ArchiveError> {
    let mut sample = vec![0u8; SAMPLE_LEN];
    let n = read_full(source, &mut sample).map_err(io_err(at))?;
    sample.truncate(n);
    let compress = zstd_pays(&sample);
    Ok((sample, compress))
}

/// Writes a blob's header: `RSB1`, the codec and `len`, or in an encrypted archive
/// `RSE1` and `len`. Returns the offset of the length.
fn write_header(
    out: &mut dyn Write,
    key: Option<&ArchiveKey>,
    compress: bool,
    len: u64,
) -> io::Result<u64> {
    let offset = match key {
        None => {
            out.write_all(MAGIC)?;
            out.write_all(&[codec_of(compress)])?;
            5
        }
        Some(_) => {
            out.write_all(SEALED_MAGIC)?;
            4
        }
    };
    out.write_all(&len.to_le_bytes())?;
    Ok(offset)
}

fn codec_of(compress: bool) -> u8 {
    if compress {
        CODEC_ZSTD
    } else {
        CODEC_STORED
    }
}

/// Writes a blob's body after its header: `sample` and then the rest of `source`,
/// zstd-compressed when `compress`, in an age stream (after the codec byte) when `key`
/// is given. Returns the content's id and length.
fn write_body(
    out: &mut dyn Write,
    key: Option<&ArchiveKey>,
    compress: bool,
    sample: Vec<u8>,
    source: &mut dyn Read,
    at: &Path,
) -> Result<(BlobId, u64), ArchiveError> {
    let mut sink = match key {
        None => Sink::Plain(out),
        Some(k) => {
            let mut sealed = k.encrypt_to(out).map_err(io_err(at))?;
            sealed
                .write_all(&[codec_of(compress)])
                .map_err(io_err(at))?;
            Sink::Sealed(sealed)
        }
    };
    let mut hasher = key.map_or_else(blake3::Hasher::new, ArchiveKey::hasher);
    let len = if compress {
        let mut z = zstd::Encoder::new(&mut sink, ZSTD_LEVEL).map_err(io_err(at))?;
        let len = copy_hashing(sample, source, &mut z, &mut hasher, at)?;
        z.finish().map_err(io_err(at))?;
        len
    } else {
        copy_hashing(sample, source, &mut sink, &mut hasher, at)?
    };
    sink.finish().map_err(io_err(at))?;
    Ok((BlobId(*hasher.finalize().as_bytes()), len))
}

/// Encodes the file at `path` into `pipe` (see [`Archive::put_file`]), ending the
/// stream only when its content still hashes to `id` with length `len`, else failing
/// it. Returns the bytes written and whether they are compressed.
fn encode_into_pipe(
    mut pipe: PipeWriter,
    key: Option<&ArchiveKey>,
    file: &mut File,
    path: &Path,
    (id, len): (BlobId, u64),
) -> Result<(u64, bool), ArchiveError> {
    let mut out = CountingWriter {
        inner: &mut pipe,
        count: 0,
    };
    let mut compressed = false;
    let encoded = sample_of(file, path).and_then(|(sample, compress)| {
        compressed = compress;
        write_header(&mut out, key, compress, len).map_err(io_err(path))?;
        write_body(&mut out, key, compress, sample, file, path)
    });
    let stored = out.count;
    let outcome = match encoded {
        Ok(got) if got == (id, len) => Ok((stored, compressed)),
        Ok(_) => Err(io_err(path)(io::Error::new(
            io::ErrorKind::InvalidData,
            "the file changed while it was stored; nothing was stored",
        ))),
        Err(e) => Err(e),
    };
    match &outcome {
        Ok(_) => pipe.finish().map_err(io_err(path))?,
        Err(e) => pipe.fail(io::Error::other(e.to_string())),
    }
    outcome
}

/// Whether an encoder failed only because the upload it fed stopped.
fn upload_stopped(e: &ArchiveError) -> bool {
    matches!(e, ArchiveError::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
}

/// Writes `sample` and then the rest of `source` to `body`, hashing all of it;
/// returns the length.
fn copy_hashing(
    sample: Vec<u8>,
    source: &mut dyn Read,
    body: &mut dyn Write,
    hasher: &mut blake3::Hasher,
    tmp: &Path,
) -> Result<u64, ArchiveError> {
    hasher.update(&sample);
    let mut len = sample.len() as u64;
    body.write_all(&sample).map_err(io_err(tmp))?;
    drop(sample);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(tmp)(e)),
        };
        hasher.update(&buf[..n]);
        len += n as u64;
        body.write_all(&buf[..n]).map_err(io_err(tmp))?;
    }
    body.flush().map_err(io_err(tmp))?;
    Ok(len)
}

impl Archive {
    /// Where the blob is stored, for messages.
    pub(crate) fn blob_location(&self, id: &BlobId) -> PathBuf {
        self.backend.location(FileKind::Blob, &id.to_hex())
    }

    /// Whether the blob is present (not verified).
    pub fn has_blob(&self, id: &BlobId) -> bool {
        matches!(self.backend.exists(FileKind::Blob, &id.to_hex()), Ok(true))
    }

    /// Every stored blob with its stored size in bytes, sorted by id.
    pub fn list_blobs(&self) -> Result<Vec<(BlobId, u64)>, ArchiveError> {
        self.backend
            .list_with_size(FileKind::Blob, "")?
            .into_iter()
            .map(|(hex, size)| BlobId::parse(&hex).map(|id| (id, size)))
            .collect()
    }

    /// A blob's stored size in bytes, `None` when it is absent.
    pub fn stored_size(&self, id: &BlobId) -> Result<Option<u64>, ArchiveError> {
        let hex = id.to_hex();
        Ok(self
            .backend
            .list_with_size(FileKind::Blob, &hex)?
            .into_iter()
            .find(|(name, _)| *name == hex)
            .map(|(_, size)| size))
    }

    /// Removes a blob. Only prune's sweep calls this, for blobs no manifest names,
    /// while no backup runs.
    pub fn delete_blob(&self, id: &BlobId) -> Result<(), ArchiveError> {
        self.backend.delete(FileKind::Blob, &id.to_hex())?;
        Ok(())
    }

    /// Fails with [`ArchiveError::MissingBlob`] naming the first of `ids` that is
    /// absent (not verified; checks presence only).
    pub fn require_blobs<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a BlobId>,
    ) -> Result<(), ArchiveError> {
        for id in ids {
            // A failure to ask (a network error) is that error, not "missing".
            if !self.backend.exists(FileKind::Blob, &id.to_hex())? {
                return Err(ArchiveError::MissingBlob {
                    id: *id,
                    path: self.blob_location(id),
                });
            }
        }
        Ok(())
    }

    /// The id `content` has in this archive: its BLAKE3, keyed in an encrypted archive.
    pub fn blob_id_of(&self, content: &[u8]) -> BlobId {
        match &self.key {
            Some(k) => BlobId(*k.hasher().update(content).finalize().as_bytes()),
            None => BlobId::of(content),
        }
    }

    /// The cached copy of a small blob, if there is one that hashes to `id`.
    fn cached(&self, id: &BlobId) -> Option<Vec<u8>> {
        let path = self.small_blobs.as_ref()?.join(id.to_hex());
        let bytes = std::fs::read(path).ok()?;
        (self.blob_id_of(&bytes) == *id).then_some(bytes)
    }

    /// Keeps a copy of a small blob (best effort).
    fn cache(&self, id: &BlobId, content: &[u8]) {
        let Some(dir) = &self.small_blobs else { return };
        let path = dir.join(id.to_hex());
        if content.len() <= SMALL_BLOB && !path.exists() {
            super::keep_copy(&path, content);
        }
    }

    /// Stores a small blob held in memory.
    pub fn put_bytes(&self, content: &[u8]) -> Result<PutOutcome, ArchiveError> {
        let id = self.blob_id_of(content);
        let outcome = self.put_bytes_as(content, id)?;
        self.cache(&id, content);
        Ok(outcome)
    }

    fn put_bytes_as(&self, content: &[u8], id: BlobId) -> Result<PutOutcome, ArchiveError> {
        if self.has_blob(&id) {
            return Ok(PutOutcome {
                id,
                len: content.len() as u64,
                stored_bytes: 0,
                compressed: false,
            });
        }
        self.put_reader(content)
    }

    /// Stores a blob streamed from `source` in constant memory: it is encoded into a
    /// temporary file of the backend, then stored under its id unless already present.
    pub fn put_reader(&self, mut source: impl Read) -> Result<PutOutcome, ArchiveError> {
        let mut tmp = self.backend.temp_file()?;
        let tmp_path = tmp.path().to_path_buf();
        // On error `tmp` is dropped, which removes it.
        let Encoded {
            id,
            len,
            stored,
            compressed,
        } = encode_blob(
            &mut source,
            tmp.as_file_mut(),
            &tmp_path,
            self.key.as_deref(),
            !self.backend.is_remote(),
        )?;
        if self.has_blob(&id) {
            return Ok(PutOutcome {
                id,
                len,
                stored_bytes: 0,
                compressed,
            });
        }
        self.backend
            .write(FileKind::Blob, &id.to_hex(), Source::TempFile(tmp))?;
        Ok(PutOutcome {
            id,
            len,
            stored_bytes: stored,
            compressed,
        })
    }

    /// Stores the file at `path` (a pack) as a blob. To a backend that uploads (object
    /// storage, [`super::Backend::is_remote`]) the file is hashed first, so a blob
    /// already stored costs no upload, and is then encoded straight into the upload,
    /// whose parts go up while the rest is encoded: no temporary copy, and the upload
    /// overlaps the encoding. The content is hashed again as it is encoded; if it
    /// changed, the upload is abandoned and nothing is stored.
    pub fn put_file(&self, path: &Path) -> Result<PutOutcome, ArchiveError> {
        let open = || File::open(path).map_err(io_err(path));
        if !self.backend.is_remote() {
            return self.put_reader(open()?);
        }
        let (id, len) = self.hash_file(&mut open()?, path)?;
        if self.has_blob(&id) {
            return Ok(PutOutcome {
                id,
                len,
                stored_bytes: 0,
                compressed: false,
            });
        }
        let mut file = open()?;
        let (writer, mut reader) = pipe(PIPE_DEPTH);
        let key = self.key.as_deref();
        let (written, encoded) = std::thread::scope(|scope| {
            let encoder =
                scope.spawn(move || encode_into_pipe(writer, key, &mut file, path, (id, len)));
            let written =
                self.backend
                    .write(FileKind::Blob, &id.to_hex(), Source::Reader(&mut reader));
            // Unblocks the encoder when the upload stopped early.
            drop(reader);
            let encoded = encoder.join().unwrap_or_else(|_| {
                Err(io_err(path)(io::Error::other(
                    "the encoder panicked; nothing was stored",
                )))
            });
            (written, encoded)
        });
        match (written, encoded) {
            (Ok(()), Ok((stored, compressed))) => Ok(PutOutcome {
                id,
                len,
                stored_bytes: stored,
                compressed,
            }),
            (Err(e), Err(encoder)) if upload_stopped(&encoder) => Err(e.into()),
            (_, Err(encoder)) => Err(encoder),
            (Err(e), Ok(_)) => Err(e.into()),
        }
    }

    /// The id and length the content of `file` has in this archive.
    fn hash_file(&self, file: &mut File, path: &Path) -> Result<(BlobId, u64), ArchiveError> {
        let mut hasher = self
            .key
            .as_deref()
            .map_or_else(blake3::Hasher::new, ArchiveKey::hasher);
        let mut buf = vec![0u8; 1 << 20];
        let mut len = 0u64;
        loop {
            let n = read_full(file, &mut buf).map_err(io_err(path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
        Ok((BlobId(*hasher.finalize().as_bytes()), len))
    }

    /// Opens a blob for streaming; the reader fails with `InvalidData` at the end if the
    /// content does not hash to `id` or has the wrong length.
    pub fn open_blob(&self, id: &BlobId) -> Result<BlobReader, ArchiveError> {
        let path = self.blob_location(id);
        let file = match self.backend.open_read(FileKind::Blob, &id.to_hex()) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ArchiveError::MissingBlob { id: *id, path })
            }
            Err(e) => return Err(e.into()),
        };
        let file = BufReader::with_capacity(1 << 16, file);
        let corrupt = |reason: String| ArchiveError::CorruptBlob {
            id: *id,
            path: path.clone(),
            reason,
        };
        let (inner, expected_len) = self.decode(file).map_err(corrupt)?;
        Ok(BlobReader {
            inner,
            hasher: self
                .key
                .as_deref()
                .map_or_else(blake3::Hasher::new, ArchiveKey::hasher),
            id: *id,
            read: 0,
            expected_len,
            path,
            done: false,
        })
    }

    /// Reads a blob file's header and returns a reader of its content (decrypted and
    /// decompressed, not yet verified) and the content length the header gives. A
    /// plain blob in an encrypted archive, or the other way round, is refused.
    fn decode(
        &self,
        mut file: BufReader<Box<dyn Read + Send>>,
    ) -> Result<(Box<dyn Read + Send>, u64), String> {
        let mut magic = [0u8; 4];
        file.read_exact(&mut magic)
            .map_err(|_| "truncated header".to_string())?;
        let mut head = [0u8; HEADER_LEN - 4];
        let (codec, len, body): (u8, u64, Box<dyn Read + Send>) = match (&magic, &self.key) {
            (MAGIC, None) => {
                file.read_exact(&mut head)
                    .map_err(|_| "truncated header".to_string())?;
                let len = u64::from_le_bytes(head[1..].try_into().unwrap_or_default());
                (head[0], len, Box::new(file))
            }
            (SEALED_MAGIC, Some(key)) => {
                file.read_exact(&mut head[1..])
                    .map_err(|_| "truncated header".to_string())?;
                let len = u64::from_le_bytes(head[1..].try_into().unwrap_or_default());
                let mut stream = key.decrypt_from(file)?;
                let mut codec = [0u8; 1];
                stream
                    .read_exact(&mut codec)
                    .map_err(|e| format!("cannot decrypt with the archive key: {e}"))?;
                (codec[0], len, Box::new(stream))
            }
            (MAGIC, Some(_)) => return Err("a plain blob in an encrypted archive".into()),
            (SEALED_MAGIC, None) => return Err("an encrypted blob in a plain archive".into()),
            _ => return Err("bad magic".into()),
        };
        let content: Box<dyn Read + Send> = match codec {
            CODEC_STORED => body,
            CODEC_ZSTD => Box::new(zstd::Decoder::new(body).map_err(|e| e.to_string())?),
            other => return Err(format!("unknown codec {other}")),
        };
        Ok((content, len))
    }

    /// Reads a whole blob into memory, verified. For small blobs only.
    pub fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>, ArchiveError> {
        if let Some(bytes) = self.cached(id) {
            return Ok(bytes);
        }
        let bytes = self.read_blob_stored(id)?;
        self.cache(id, &bytes);
        Ok(bytes)
    }

    fn read_blob_stored(&self, id: &BlobId) -> Result<Vec<u8>, ArchiveError> {
        let path = self.blob_location(id);
        let reader = self.open_blob(id)?;
        super::read_all(reader, &path).map_err(|e| match e {
            ArchiveError::Io { source, .. } if source.kind() == io::ErrorKind::InvalidData => {
                ArchiveError::CorruptBlob {
                    id: *id,
                    path: path.clone(),
                    reason: source.to_string(),
                }
            }
            other => other,
        })
    }

    /// Reads and verifies a blob without keeping it; returns its length.
    pub fn verify_blob(&self, id: &BlobId) -> Result<u64, ArchiveError> {
        let path = self.blob_location(id);
        let mut reader = self.open_blob(id)?;
        io::copy(&mut reader, &mut io::sink()).map_err(|e| ArchiveError::CorruptBlob {
            id: *id,
            path,
            reason: e.to_string(),
        })
    }
}

/// A verifying reader over one blob's content.
pub struct BlobReader {
    inner: Box<dyn Read + Send>,
    hasher: blake3::Hasher,
    id: BlobId,
    read: u64,
    expected_len: u64,
    path: PathBuf,
    done: bool,
}

impl BlobReader {
    /// Where the blob lives, for error messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The length of the blob's content (from its header; checked at the end of reading).
    pub fn content_len(&self) -> u64 {
        self.expected_len
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.done = true;
            let actual = BlobId(*self.hasher.finalize().as_bytes());
            if actual != self.id || self.read != self.expected_len {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "blob {} at {} failed verification: content hashes to {} ({} bytes, expected {})",
                        self.id,
                        self.path.display(),
                        actual,
                        self.read,
                        self.expected_len
                    ),
                ));
            }
            return Ok(0);
        }
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that changed after it was hashed (so its id would be wrong) ends its
    /// upload with an error: the backend never sees the end of the stream, so it
    /// stores nothing.
    #[test]
    fn a_file_that_changed_since_it_was_hashed_ends_its_upload_with_an_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("pack");
        let data = vec![42u8; 3 << 20];
        std::fs::write(&path, &data).expect("write");
        let (writer, mut reader) = pipe(2);
        let upload = std::thread::spawn(move || reader.read_to_end(&mut Vec::new()));
        let hashed_before = BlobId::of(b"what the file held when it was hashed");
        let mut file = File::open(&path).expect("open");
        let err = encode_into_pipe(writer, None, &mut file, &path, (hashed_before, 3 << 20))
            .expect_err("changed");
        assert!(
            err.to_string().contains("changed while it was stored"),
            "{err}"
        );
        let seen = upload.join().expect("join");
        assert!(seen.is_err(), "the upload saw an end: {seen:?}");

        let (writer, mut reader) = pipe(2);
        let upload = std::thread::spawn(move || {
            let mut all = Vec::new();
            reader.read_to_end(&mut all).map(|_| all.len())
        });
        let mut file = File::open(&path).expect("open");
        let (stored, _) =
            encode_into_pipe(writer, None, &mut file, &path, (BlobId::of(&data), 3 << 20))
                .expect("unchanged");
        assert_eq!(upload.join().expect("join").expect("read") as u64, stored);
    }
}
