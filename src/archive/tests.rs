//! Tests of the archive format: round trips, verification, dedup, crash safety.

use super::*;
use time::OffsetDateTime;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

#[test]
fn blob_round_trip_and_dedup() {
    let dir = tmp();
    let a = Archive::open_or_create(dir.path()).unwrap();
    let text = b"hello hello hello hello hello hello hello hello".repeat(1000);
    let first = a.put_bytes(&text).unwrap();
    assert!(first.compressed, "repetitive text should be compressed");
    assert!(first.stored_bytes > 0 && first.stored_bytes < text.len() as u64 / 10);
    let again = a.put_reader(&text[..]).unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(again.stored_bytes, 0, "a second put stores nothing");
    assert_eq!(a.read_blob(&first.id).unwrap(), text);
}

#[test]
fn incompressible_blob_is_stored_raw() {
    let dir = tmp();
    let a = Archive::open_or_create(dir.path()).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..2_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    let out = a.put_reader(&data[..]).unwrap();
    assert!(!out.compressed);
    assert_eq!(out.len, data.len() as u64);
    assert_eq!(a.verify_blob(&out.id).unwrap(), data.len() as u64);
}

#[test]
fn corrupt_blob_is_detected() {
    let dir = tmp();
    let a = Archive::open_or_create(dir.path()).unwrap();
    let out = a.put_bytes(&[7u8; 5000][..]).unwrap();
    let path = a.blob_path(&out.id);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let err = a.read_blob(&out.id).unwrap_err();
    assert!(
        matches!(
            err,
            ArchiveError::CorruptBlob { .. } | ArchiveError::Io { .. }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&out.id.to_hex()), "{err}");
}

#[test]
fn snapshot_requires_its_blobs_and_lists_in_order() {
    let dir = tmp();
    let a = Archive::open_or_create(dir.path()).unwrap();
    let refs = a.put_bytes(b"[]").unwrap().id;
    let repo = RepoIdentity {
        connection: "acme".into(),
        provider: "bitbucket-cloud".into(),
        repo_id: "{1}".into(),
        full_name: "acme/api".into(),
    };
    let mk = |t: i64, packs: Vec<BlobId>| Snapshot {
        format: FORMAT_VERSION,
        id: SnapshotId::new(OffsetDateTime::from_unix_timestamp(t).unwrap()),
        repository: repo.clone(),
        taken_at: OffsetDateTime::from_unix_timestamp(t).unwrap(),
        refs,
        ref_count: 0,
        packs,
        main_branch: None,
        stats: SnapshotStats::default(),
    };
    let missing = BlobId::of(b"not stored");
    let err = a.write_snapshot(&mk(100, vec![missing])).unwrap_err();
    assert!(matches!(err, ArchiveError::MissingBlob { .. }));
    assert!(
        a.snapshots_of(&repo).unwrap().is_empty(),
        "no half snapshot"
    );
    let s2 = mk(200, vec![]);
    let s1 = mk(100, vec![]);
    let size = a.write_snapshot(&s2).unwrap();
    assert!(size < 1024, "a manifest is small: {size}");
    a.write_snapshot(&s1).unwrap();
    let list = a.snapshots_of(&repo).unwrap();
    assert_eq!(list, vec![s1.clone(), s2.clone()]);
    assert_eq!(a.latest_snapshot_of(&repo).unwrap(), Some(s2.clone()));
    // Two snapshots in the same second: the later recorded time wins, whatever the id.
    let mut s3 = mk(200, vec![]);
    s3.taken_at += time::Duration::milliseconds(1);
    a.write_snapshot(&s3).unwrap();
    assert_eq!(a.latest_snapshot_of(&repo).unwrap(), Some(s3.clone()));
    assert_eq!(a.find_snapshot(&s2.id).unwrap(), s2);
    assert_eq!(a.all_snapshots().unwrap().len(), 3);
    let reparsed = SnapshotId::parse(s1.id.as_str()).unwrap();
    assert_eq!(reparsed, s1.id);
    assert!(SnapshotId::parse("../../etc/passwd").is_err());
}

#[test]
fn leftover_tmp_files_do_not_leak_into_listing() {
    let dir = tmp();
    let a = Archive::open_or_create(dir.path()).unwrap();
    std::fs::write(a.tmp_path(), b"half written").unwrap();
    assert!(a.all_snapshots().unwrap().is_empty());
    assert_eq!(a.clean_tmp().unwrap(), 1);
    // Reopening an existing archive keeps it.
    let again = Archive::open_or_create(dir.path()).unwrap();
    assert_eq!(again.root(), a.root());
}

#[test]
fn refuses_foreign_directories_and_newer_formats() {
    let dir = tmp();
    std::fs::write(dir.path().join("something"), b"x").unwrap();
    assert!(matches!(
        Archive::open_or_create(dir.path()).unwrap_err(),
        ArchiveError::NotAnArchive { .. }
    ));
    std::fs::write(dir.path().join("FORMAT"), b"reposafe-archive 99\n").unwrap();
    assert!(matches!(
        Archive::open(dir.path()).unwrap_err(),
        ArchiveError::UnsupportedFormat { .. }
    ));
}

#[test]
fn pack_index_maps_pack_hashes() {
    let dir = tmp();
    let a = Archive::open_or_create(dir.path()).unwrap();
    let id = a.put_bytes(b"PACK....").unwrap().id;
    assert_eq!(a.pack_blob("abc123").unwrap(), None);
    a.record_pack("abc123", &id).unwrap();
    assert_eq!(a.pack_blob("abc123").unwrap(), Some(id));
    assert!(a.record_pack("../x", &id).is_err());
}
