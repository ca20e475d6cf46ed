//! The storage backend contract (see [`Backend`]) as test functions over any backend,
//! run here against [`LocalBackend`] and the in-memory [`MemoryBackend`]; a new
//! backend (an object store) adds one line to `contract_tests!` below.
//!
//! Each function gets a fresh, initialised, empty backend.

use super::memory::MemoryBackend;
use super::*;
use std::io::{self, Read, Write};

/// Ids used below, well-formed for their kinds.
fn blob_id(first: &str, n: u64) -> String {
    format!("{first}{n:062x}")
}
const REPO_A: &str = "1111111111111111";
const REPO_B: &str = "2222222222222222";

fn snap_id(repo: &str, day: u32, n: u32) -> String {
    format!("{repo}/202601{day:02}T000000Z-{n:08x}")
}

/// Yields `left` bytes, then fails: a writer's source dying midway.
struct FailingReader {
    left: usize,
}

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::other("source died midway"));
        }
        let n = buf.len().min(self.left);
        buf[..n].fill(0xab);
        self.left -= n;
        Ok(n)
    }
}

/// `create_new` stores once, refuses every later create (also racing ones) with
/// `AlreadyExists`, and never changes the first content.
pub(crate) fn create_if_absent_refuses_a_second_create(b: &dyn Backend) {
    let id = snap_id(REPO_A, 1, 1);
    b.create_new(FileKind::Snapshot, &id, b"first")
        .expect("first create");
    let err = b
        .create_new(FileKind::Snapshot, &id, b"second")
        .expect_err("second create must fail");
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
    assert_eq!(b.read(FileKind::Snapshot, &id).expect("read"), b"first");
    // A plain write of another id does not make a later create of it succeed.
    b.write(FileKind::Format, "", Source::Bytes(b"x"))
        .expect("write");
    assert_eq!(
        b.create_new(FileKind::Format, "", b"y")
            .map_err(|e| e.kind()),
        Err(io::ErrorKind::AlreadyExists)
    );

    // Eight racing creators: exactly one wins and its content is what is stored.
    let id = snap_id(REPO_A, 2, 2);
    let results: Vec<(u8, bool)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8u8)
            .map(|n| {
                let id = &id;
                s.spawn(move || (n, b.create_new(FileKind::Snapshot, id, &[n; 100]).is_ok()))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let winners: Vec<u8> = results.iter().filter(|r| r.1).map(|r| r.0).collect();
    assert_eq!(winners.len(), 1, "exactly one create wins: {results:?}");
    assert_eq!(
        b.read(FileKind::Snapshot, &id).expect("read"),
        vec![winners[0]; 100]
    );
}

/// `list` returns the ids of one kind starting with a prefix, sorted, with sizes.
pub(crate) fn list_by_kind_and_prefix(b: &dyn Backend) {
    let blobs = [blob_id("aa", 1), blob_id("aa", 2), blob_id("bb", 3)];
    for (n, id) in blobs.iter().enumerate() {
        let content = vec![7u8; 10 * (n + 1)];
        b.write(FileKind::Blob, id, Source::Bytes(&content))
            .expect("write blob");
    }
    let snaps = [
        snap_id(REPO_A, 1, 1),
        snap_id(REPO_A, 2, 2),
        snap_id(REPO_B, 1, 3),
    ];
    for id in &snaps {
        b.create_new(FileKind::Snapshot, id, b"{}")
            .expect("manifest");
    }
    b.write(FileKind::PackIndex, "abc123", Source::Bytes(b"x"))
        .expect("pack index");
    b.create_new(FileKind::Format, "", b"f").expect("format");

    let list = |kind: FileKind, prefix: &str| b.list(kind, prefix).expect("list");
    assert_eq!(list(FileKind::Blob, ""), blobs.to_vec());
    assert_eq!(list(FileKind::Blob, "aa"), blobs[..2].to_vec());
    assert_eq!(list(FileKind::Blob, "a"), blobs[..2].to_vec());
    assert_eq!(list(FileKind::Blob, &blobs[2]), vec![blobs[2].clone()]);
    assert!(list(FileKind::Blob, "c").is_empty());
    assert_eq!(list(FileKind::Snapshot, ""), snaps.to_vec());
    assert_eq!(
        list(FileKind::Snapshot, &format!("{REPO_A}/")),
        snaps[..2].to_vec()
    );
    assert_eq!(
        list(FileKind::Snapshot, &format!("{REPO_A}/20260102")),
        vec![snaps[1].clone()]
    );
    assert_eq!(list(FileKind::Snapshot, "2"), vec![snaps[2].clone()]);
    assert_eq!(list(FileKind::PackIndex, ""), vec!["abc123".to_string()]);
    assert_eq!(list(FileKind::Format, ""), vec![String::new()]);
    let sizes = b.list_with_size(FileKind::Blob, "").expect("sizes");
    let expected: Vec<(String, u64)> = blobs
        .iter()
        .enumerate()
        .map(|(n, id)| (id.clone(), 10 * (n as u64 + 1)))
        .collect();
    assert_eq!(sizes, expected);
}

/// A write whose source fails midway leaves nothing visible: no new file, the old
/// content intact, no temporary file left behind.
pub(crate) fn failed_write_leaves_nothing(b: &dyn Backend) {
    let id = blob_id("cc", 4);
    let err = b
        .write(
            FileKind::Blob,
            &id,
            Source::Reader(&mut FailingReader { left: 3 << 20 }),
        )
        .expect_err("a failing source fails the write");
    assert!(err.to_string().contains("source died midway"), "{err}");
    assert!(!b.exists(FileKind::Blob, &id).expect("exists"));
    assert!(b.list(FileKind::Blob, "").expect("list").is_empty());
    assert_eq!(
        b.open_read(FileKind::Blob, &id).err().map(|e| e.kind()),
        Some(io::ErrorKind::NotFound)
    );
    assert_eq!(b.clean_tmp().expect("clean"), 0, "no temporary file left");

    b.write(FileKind::PackIndex, "ab12", Source::Bytes(b"old"))
        .expect("write");
    let failed = b.write(
        FileKind::PackIndex,
        "ab12",
        Source::Reader(&mut FailingReader { left: 10 }),
    );
    assert!(failed.is_err());
    assert_eq!(b.read(FileKind::PackIndex, "ab12").expect("read"), b"old");

    // A prepared temporary file is stored whole and is gone afterwards.
    let mut tmp = b.temp_file().expect("temp file");
    tmp.write_all(b"prepared content").expect("fill");
    let tmp_path = tmp.path().to_path_buf();
    b.write(FileKind::PackIndex, "ab12", Source::TempFile(tmp))
        .expect("write temp file");
    assert_eq!(
        b.read(FileKind::PackIndex, "ab12").expect("read"),
        b"prepared content"
    );
    assert!(!tmp_path.exists(), "{} left behind", tmp_path.display());
    assert_eq!(b.clean_tmp().expect("clean"), 0);
}

/// `delete` removes a file of one kind only; deleting an absent file succeeds.
pub(crate) fn delete_removes_one_file(b: &dyn Backend) {
    let keep = blob_id("dd", 5);
    let gone = blob_id("dd", 6);
    for id in [&keep, &gone] {
        b.write(FileKind::Blob, id, Source::Bytes(b"x"))
            .expect("write");
    }
    b.delete(FileKind::Blob, &gone).expect("delete");
    assert!(!b.exists(FileKind::Blob, &gone).expect("exists"));
    assert!(b.exists(FileKind::Blob, &keep).expect("exists"));
    assert_eq!(b.list(FileKind::Blob, "").expect("list"), vec![keep]);
    assert_eq!(
        b.read(FileKind::Blob, &gone).err().map(|e| e.kind()),
        Some(io::ErrorKind::NotFound)
    );
    b.delete(FileKind::Blob, &gone)
        .expect("deleting an absent file succeeds");
    // A deleted manifest can be created again.
    let s = snap_id(REPO_B, 3, 9);
    b.create_new(FileKind::Snapshot, &s, b"1").expect("create");
    b.delete(FileKind::Snapshot, &s).expect("delete");
    b.create_new(FileKind::Snapshot, &s, b"2")
        .expect("create again");
}

/// Ids that could escape their kind's place are refused and store nothing.
pub(crate) fn invalid_ids_are_refused(b: &dyn Backend) {
    let upper = "A".repeat(64);
    let bad: [(FileKind, &str); 7] = [
        (FileKind::Snapshot, "../../etc/passwd"),
        (FileKind::Snapshot, "a/b/c"),
        (FileKind::Snapshot, "noslash"),
        (FileKind::Blob, "zz"),
        (FileKind::Blob, &upper),
        (FileKind::PackIndex, "../x"),
        (FileKind::Format, "FORMAT"),
    ];
    for (kind, id) in bad {
        let w = b.write(kind, id, Source::Bytes(b"x")).map_err(|e| e.kind());
        assert_eq!(w, Err(io::ErrorKind::InvalidInput), "{kind:?} {id:?}");
        let c = b.create_new(kind, id, b"x").map_err(|e| e.kind());
        assert_eq!(c, Err(io::ErrorKind::InvalidInput), "{kind:?} {id:?}");
        assert!(b.exists(kind, id).is_err(), "{kind:?} {id:?}");
        assert!(b.open_read(kind, id).is_err(), "{kind:?} {id:?}");
        assert!(b.delete(kind, id).is_err(), "{kind:?} {id:?}");
    }
    for kind in [
        FileKind::Format,
        FileKind::Blob,
        FileKind::Snapshot,
        FileKind::PackIndex,
    ] {
        assert!(b.list(kind, "").expect("list").is_empty(), "{kind:?}");
    }
}

/// A multi-MiB blob streams out of the backend in small reads, is verified against its
/// BLAKE3 while read, and a single flipped byte fails the read naming the blob.
pub(crate) fn streamed_blob_is_verified_while_read(backend: Arc<dyn Backend>) {
    let archive = Archive::open_or_create_on(backend.clone()).expect("archive");
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<u8> = (0..6 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let put = archive.put_reader(&data[..]).expect("put");
    assert!(!put.compressed, "random data is stored raw");
    let hex = put.id.to_hex();

    // The stored file streams in 64 KiB reads.
    let mut raw = backend.open_read(FileKind::Blob, &hex).expect("open");
    let mut buf = vec![0u8; 1 << 16];
    let (mut total, mut reads) = (0usize, 0usize);
    loop {
        let n = raw.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        assert!(n <= buf.len());
        total += n;
        reads += 1;
    }
    assert_eq!(total, data.len() + 13, "header + body");
    assert!(reads >= data.len() / buf.len(), "{reads} reads");

    // Through the archive: the content, chunk by chunk, and a clean end.
    let mut reader = archive.open_blob(&put.id).expect("open blob");
    let mut offset = 0;
    loop {
        let n = reader.read(&mut buf).expect("verified read");
        if n == 0 {
            break;
        }
        assert_eq!(&buf[..n], &data[offset..offset + n], "at {offset}");
        offset += n;
    }
    assert_eq!(offset, data.len());

    // Flip one byte in the middle of the stored body.
    let mut stored = backend.read(FileKind::Blob, &hex).expect("read");
    stored[13 + (3 << 20)] ^= 0x01;
    backend
        .write(FileKind::Blob, &hex, Source::Bytes(&stored))
        .expect("overwrite");
    drop(stored);
    let mut reader = archive.open_blob(&put.id).expect("open blob");
    let mut delivered = 0;
    let err = loop {
        match reader.read(&mut buf) {
            Ok(0) => panic!("a corrupt blob must not read cleanly"),
            Ok(n) => delivered += n,
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    assert!(err.to_string().contains(&hex), "{err}");
    assert_eq!(
        delivered,
        data.len(),
        "the check runs while streaming, at the end"
    );
    let err = archive.verify_blob(&put.id).expect_err("verify fails");
    assert!(matches!(err, ArchiveError::CorruptBlob { .. }), "{err}");
}

/// A fresh local backend in `dir`, initialised.
fn local(dir: &tempfile::TempDir) -> LocalBackend {
    let b = LocalBackend::new(dir.path().join("archive"));
    b.init().expect("init");
    b
}

macro_rules! contract_tests {
    ($($name:ident),* ; $($arc_name:ident),*) => {
        mod local_backend {
            use super::*;
            $(#[test]
            fn $name() {
                let dir = tempfile::tempdir().expect("tempdir");
                super::$name(&local(&dir));
            })*
            $(#[test]
            fn $arc_name() {
                let dir = tempfile::tempdir().expect("tempdir");
                super::$arc_name(Arc::new(local(&dir)));
            })*
        }
        mod memory_backend {
            use super::*;
            $(#[test]
            fn $name() {
                super::$name(&MemoryBackend::default());
            })*
            $(#[test]
            fn $arc_name() {
                super::$arc_name(Arc::new(MemoryBackend::default()));
            })*
        }
    };
}

contract_tests!(
    create_if_absent_refuses_a_second_create,
    list_by_kind_and_prefix,
    failed_write_leaves_nothing,
    delete_removes_one_file,
    invalid_ids_are_refused;
    streamed_blob_is_verified_while_read
);

/// The local backend keeps the documented layout and leaves `tmp/` empty.
#[test]
fn local_backend_keeps_the_documented_layout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = local(&dir);
    let root = dir.path().join("archive");
    let blob = blob_id("ef", 7);
    let snap = snap_id(REPO_A, 4, 4);
    b.write(FileKind::Blob, &blob, Source::Bytes(b"b"))
        .expect("blob");
    b.create_new(FileKind::Snapshot, &snap, b"s")
        .expect("manifest");
    b.write(FileKind::PackIndex, "beef", Source::Bytes(b"p"))
        .expect("index");
    b.create_new(FileKind::Format, "", b"f").expect("format");
    for (rel, content) in [
        (format!("blobs/ef/{blob}"), "b"),
        (format!("snapshots/{snap}.json"), "s"),
        ("index/packs/beef".to_string(), "p"),
        ("FORMAT".to_string(), "f"),
    ] {
        let got = std::fs::read_to_string(root.join(&rel)).unwrap_or_default();
        assert_eq!(got, content, "{rel}");
    }
    let tmp_entries = std::fs::read_dir(root.join("tmp")).expect("tmp").count();
    assert_eq!(tmp_entries, 0);
    // Stray files that are no id of a kind are not listed.
    std::fs::write(root.join("blobs/ef/notes.txt"), b"x").expect("stray");
    std::fs::write(root.join(format!("snapshots/{REPO_A}/x.tmp")), b"x").expect("stray");
    assert_eq!(b.list(FileKind::Blob, "").expect("list"), vec![blob]);
    assert_eq!(b.list(FileKind::Snapshot, "").expect("list"), vec![snap]);
}
