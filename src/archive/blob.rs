//! Blobs: content-addressed, verified, optionally compressed files.
//!
//! A blob's id is the BLAKE3 hash of its uncompressed content. It is stored as a
//! [`FileKind::Blob`] (locally `blobs/<first two hex digits>/<64 hex digits>`) as a
//! 13-byte header (`RSB1`, a codec byte: 0 stored, 1 zstd, and the content length
//! as u64 little-endian) followed by the body. Whether zstd pays is measured per blob on its first
//! MiB: git packs are already zlib-compressed and are usually stored as they are.
//! Every read re-hashes the content and fails if it does not match its id.

use super::backend::{FileKind, Source};
use super::{io_err, Archive, ArchiveError};
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"RSB1";
const HEADER_LEN: usize = 13;
const CODEC_STORED: u8 = 0;
const CODEC_ZSTD: u8 = 1;
/// How much of a blob is test-compressed to decide whether zstd pays.
const SAMPLE_LEN: usize = 1 << 20;
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

    /// The id of `content`.
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
fn read_full(r: &mut (impl Read + ?Sized), buf: &mut [u8]) -> io::Result<usize> {
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

/// Writes `source` to `file` as an encoded blob (header, then the body, zstd when it
/// pays on the first MiB) in constant memory. Returns (id, length, stored bytes,
/// compressed). Errors name `tmp`.
fn encode_blob(
    source: &mut dyn Read,
    file: &mut File,
    tmp: &Path,
) -> Result<(BlobId, u64, u64, bool), ArchiveError> {
    let mut sample = vec![0u8; SAMPLE_LEN];
    let n = read_full(source, &mut sample).map_err(io_err(tmp))?;
    sample.truncate(n);
    let compress = zstd_pays(&sample);

    let mut out = CountingWriter {
        inner: BufWriter::with_capacity(1 << 16, &mut *file),
        count: 0,
    };
    // Header with a placeholder length, patched below.
    out.write_all(MAGIC).map_err(io_err(tmp))?;
    out.write_all(&[if compress { CODEC_ZSTD } else { CODEC_STORED }])
        .map_err(io_err(tmp))?;
    out.write_all(&[0u8; 8]).map_err(io_err(tmp))?;

    let mut hasher = blake3::Hasher::new();
    let mut len = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    let mut body: Box<dyn Write> = if compress {
        Box::new(
            zstd::Encoder::new(&mut out, ZSTD_LEVEL)
                .map_err(io_err(tmp))?
                .auto_finish(),
        )
    } else {
        Box::new(&mut out)
    };
    hasher.update(&sample);
    len += sample.len() as u64;
    body.write_all(&sample).map_err(io_err(tmp))?;
    drop(sample);
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
    drop(body);
    let stored = out.count;
    let file = out
        .inner
        .into_inner()
        .map_err(|e| io_err(tmp)(e.into_error()))?;
    file.seek(SeekFrom::Start(5)).map_err(io_err(tmp))?;
    file.write_all(&len.to_le_bytes()).map_err(io_err(tmp))?;
    Ok((BlobId(*hasher.finalize().as_bytes()), len, stored, compress))
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
            if !self.has_blob(id) {
                return Err(ArchiveError::MissingBlob {
                    id: *id,
                    path: self.blob_location(id),
                });
            }
        }
        Ok(())
    }

    /// Stores a small blob held in memory.
    pub fn put_bytes(&self, content: &[u8]) -> Result<PutOutcome, ArchiveError> {
        let id = BlobId::of(content);
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
        let (id, len, stored, compressed) = encode_blob(&mut source, tmp.as_file_mut(), &tmp_path)?;
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
        let mut file = BufReader::with_capacity(1 << 16, file);
        let mut header = [0u8; HEADER_LEN];
        file.read_exact(&mut header)
            .map_err(|_| ArchiveError::CorruptBlob {
                id: *id,
                path: path.clone(),
                reason: "truncated header".into(),
            })?;
        if &header[..4] != MAGIC {
            return Err(ArchiveError::CorruptBlob {
                id: *id,
                path,
                reason: "bad magic".into(),
            });
        }
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&header[5..13]);
        let expected_len = u64::from_le_bytes(len_bytes);
        let inner: Box<dyn Read + Send> = match header[4] {
            CODEC_STORED => Box::new(file),
            CODEC_ZSTD => Box::new(zstd::Decoder::with_buffer(file).map_err(io_err(&path))?),
            other => {
                return Err(ArchiveError::CorruptBlob {
                    id: *id,
                    path,
                    reason: format!("unknown codec {other}"),
                })
            }
        };
        Ok(BlobReader {
            inner,
            hasher: blake3::Hasher::new(),
            id: *id,
            read: 0,
            expected_len,
            path,
            done: false,
        })
    }

    /// Reads a whole blob into memory, verified. For small blobs only.
    pub fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>, ArchiveError> {
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
