//! Early writeback of the temporary files blobs are encoded into.
//!
//! A blob is committed by an fsync of its temporary file before the rename (see
//! `local.rs`). Left to the kernel, the file's pages stay dirty in memory until that
//! fsync, which then waits for all of them: a third of a large LFS download's time.
//! [`Writeback`] asks the kernel to start writing each [`CHUNK`] out as soon as it is
//! written (`sync_file_range(SYNC_FILE_RANGE_WRITE)`: it starts the writes and does
//! not wait for them), so the disk works while the rest of the blob arrives and the
//! fsync finds little left. It is only a hint: the fsync is still what makes the file
//! durable, and a failed hint is left to the fsync to report.

use std::fs::File;
use std::io::{self, Write};

/// Bytes written between two hints.
pub(super) const CHUNK: u64 = 8 << 20;

/// Writes to a file, hinting the kernel to write each [`CHUNK`] to disk as it fills.
pub(super) struct Writeback<'a> {
    file: &'a mut File,
    /// Whether to hint at all (not for a file that is uploaded and deleted).
    enabled: bool,
    /// Bytes written through this writer.
    written: u64,
    /// Bytes already hinted.
    hinted: u64,
}

impl<'a> Writeback<'a> {
    /// Writes to `file` from its current offset, which must be 0.
    pub(super) fn new(file: &'a mut File, enabled: bool) -> Writeback<'a> {
        Writeback {
            file,
            enabled,
            written: 0,
            hinted: 0,
        }
    }

    /// The file, to go on with it.
    pub(super) fn into_inner(self) -> &'a mut File {
        self.file
    }

    fn hint_full_chunks(&mut self) {
        if !self.enabled || self.written - self.hinted < CHUNK {
            return;
        }
        let len = (self.written - self.hinted) / CHUNK * CHUNK;
        start_writeback(self.file, self.hinted, len);
        self.hinted += len;
    }
}

impl Write for Writeback<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        self.hint_full_chunks();
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Starts writing bytes `offset..offset + len` of `file` to disk, without waiting.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor belongs to `file`, which is open for the whole call; the
    // call reads no memory of ours. Its result is a hint's: the fsync that commits the
    // file reports any write error.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom};

    #[test]
    fn every_byte_reaches_the_file_and_only_full_chunks_are_hinted() {
        let mut file = tempfile::tempfile().expect("temp file");
        let content: Vec<u8> = (0..(CHUNK * 2 + 12345)).map(|i| (i % 251) as u8).collect();
        let mut w = Writeback::new(&mut file, true);
        for piece in content.chunks(1 << 16) {
            w.write_all(piece).expect("write");
        }
        assert_eq!(w.written, content.len() as u64);
        assert_eq!(w.hinted, CHUNK * 2, "the two full chunks, not the tail");
        let file = w.into_inner();
        file.seek(SeekFrom::Start(0)).expect("seek");
        let mut back = Vec::new();
        file.read_to_end(&mut back).expect("read");
        assert!(back == content, "the file holds what was written");
    }

    #[test]
    fn a_disabled_writer_hints_nothing() {
        let mut file = tempfile::tempfile().expect("temp file");
        let mut w = Writeback::new(&mut file, false);
        w.write_all(&vec![7u8; (CHUNK * 2) as usize])
            .expect("write");
        assert_eq!(w.hinted, 0);
    }
}
