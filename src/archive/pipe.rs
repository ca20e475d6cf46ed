//! A bounded in-process pipe of byte chunks, from a thread that encodes a blob to the
//! backend that uploads it ([`super::Archive::put_file`] on object storage).
//!
//! The reader sees the end of the stream only when the writer says so
//! ([`PipeWriter::finish`]): a writer that fails ([`PipeWriter::fail`]), panics or is
//! dropped ends the stream with an error, so a backend never stores a truncated file
//! as a whole one.

use std::io::{self, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Bytes gathered before a chunk is handed over.
const CHUNK: usize = 1 << 20;

enum Message {
    Data(Vec<u8>),
    End,
    Failed(io::Error),
}

/// A pipe holding at most `depth` chunks of about 1 MiB in flight.
pub(crate) fn pipe(depth: usize) -> (PipeWriter, PipeReader) {
    let (tx, rx) = sync_channel(depth);
    (
        PipeWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        },
        PipeReader {
            rx,
            current: Vec::new(),
            at: 0,
            ended: false,
        },
    )
}

/// The writing end.
pub(crate) struct PipeWriter {
    tx: SyncSender<Message>,
    buf: Vec<u8>,
}

fn reader_gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped")
}

impl PipeWriter {
    fn send(&self, message: Message) -> io::Result<()> {
        self.tx.send(message).map_err(|_| reader_gone())
    }

    fn hand_over(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.send(Message::Data(full))
    }

    /// Hands over what is left and ends the stream: the reader sees its end.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        self.hand_over()?;
        self.send(Message::End)
    }

    /// Ends the stream with `error`: the reader fails with it.
    pub(crate) fn fail(self, error: io::Error) {
        let _ = self.send(Message::Failed(error));
    }
}

impl Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.hand_over()?;
        }
        Ok(n)
    }

    /// Chunks are handed over when full; `finish` hands over the rest.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The reading end.
pub(crate) struct PipeReader {
    rx: Receiver<Message>,
    current: Vec<u8>,
    at: usize,
    ended: bool,
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Message::Data(chunk)) => {
                    self.current = chunk;
                    self.at = 0;
                }
                Ok(Message::End) => self.ended = true,
                Ok(Message::Failed(e)) => return Err(e),
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the encoder stopped before the end of the blob",
                    ))
                }
            }
        }
        let n = out.len().min(self.current.len() - self.at);
        out[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_gets_everything_then_the_end_only_when_finished() {
        let (mut w, mut r) = pipe(2);
        let data: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = std::thread::spawn(move || {
            w.write_all(&sent).expect("write");
            w.finish().expect("finish");
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).expect("read");
        writer.join().expect("join");
        assert_eq!(got, data);
    }

    #[test]
    fn a_writer_that_fails_or_is_dropped_ends_the_stream_with_an_error() {
        let (mut w, mut r) = pipe(4);
        w.write_all(b"part of a blob").expect("write");
        w.fail(io::Error::other("the pack changed"));
        let err = r.read_to_end(&mut Vec::new()).expect_err("failed");
        assert_eq!(err.to_string(), "the pack changed");

        let (mut w, mut r) = pipe(4);
        w.write_all(&vec![7u8; CHUNK + 1]).expect("write");
        drop(w);
        let err = r.read_to_end(&mut Vec::new()).expect_err("dropped");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn a_writer_learns_that_the_reader_is_gone() {
        let (mut w, r) = pipe(1);
        drop(r);
        let err = w.write_all(&vec![0u8; 2 * CHUNK]).expect_err("gone");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
