//! Tests of the archive format: round trips, verification, dedup, crash safety.
//! Every format test runs on the local file system and on the in-memory backend,
//! which proves `Archive` depends only on the storage seam.

use super::memory::MemoryBackend;
use super::*;
use time::OffsetDateTime;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Runs `test` on a fresh local archive, a fresh in-memory archive and one that
/// presents itself as object storage, each plain and encrypted.
fn on_each_backend(test: impl Fn(&Archive)) {
    let dir = tmp();
    test(&Archive::open_or_create(dir.path()).expect("local archive"));
    let memory = Arc::new(MemoryBackend::default());
    test(&Archive::open_or_create_on(memory).expect("memory archive"));
    let remote = Arc::new(MemoryBackend::remote());
    test(&Archive::open_or_create_on(remote).expect("remote archive"));
    let dir = tmp();
    test(&encrypted(Arc::new(LocalBackend::new(dir.path()))));
    test(&encrypted(Arc::new(MemoryBackend::default())));
    test(&encrypted(Arc::new(MemoryBackend::remote())));
}

/// A new encrypted archive in `backend`, its key "sealed" as plain text (the engine
/// seals it; the archive only stores the bytes).
fn encrypted(backend: Arc<dyn Backend>) -> Archive {
    use age::secrecy::ExposeSecret;
    let key = ArchiveKey::generate();
    let sealed = key.secret_text().expose_secret().as_bytes().to_vec();
    Archive::create_encrypted_on(backend, key, &[("test".into(), sealed)]).expect("encrypted")
}

/// Flips the last stored byte of a blob, through the backend.
fn corrupt_last_byte(a: &Archive, id: &BlobId) {
    let hex = id.to_hex();
    let mut bytes = a.backend.read(FileKind::Blob, &hex).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    a.backend
        .write(FileKind::Blob, &hex, Source::Bytes(&bytes))
        .expect("write");
}

#[test]
fn blob_round_trip_and_dedup() {
    on_each_backend(blob_round_trip_and_dedup_on);
}

fn blob_round_trip_and_dedup_on(a: &Archive) {
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
    on_each_backend(incompressible_blob_is_stored_raw_on);
}

fn incompressible_blob_is_stored_raw_on(a: &Archive) {
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
    on_each_backend(corrupt_blob_is_detected_on);
}

fn corrupt_blob_is_detected_on(a: &Archive) {
    let out = a.put_bytes(&[7u8; 5000][..]).unwrap();
    corrupt_last_byte(a, &out.id);
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
    on_each_backend(snapshot_requires_its_blobs_and_lists_in_order_on);
}

fn snapshot_requires_its_blobs_and_lists_in_order_on(a: &Archive) {
    let refs = a.put_bytes(b"[]").unwrap().id;
    let mk = |t: i64, packs: Vec<BlobId>| snapshot_at(t, refs, packs);
    let repo = mk(0, vec![]).repository;
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
    // A manifest is never replaced.
    let err = a.write_snapshot(&s2).unwrap_err();
    assert!(matches!(err, ArchiveError::SnapshotExists { .. }), "{err}");
    assert_eq!(a.find_snapshot(&s2.id).unwrap(), s2);
    assert_eq!(a.all_snapshots().unwrap().len(), 3);
}

/// `<repo-dir>` comes from the connection id; a manifest written before ids existed
/// (no `connection_id`) keeps the directory its name gave it, which is also the
/// directory of a connection whose id is its name (connections of that time).
#[test]
fn repo_dir_follows_the_connection_id_and_old_manifests_keep_theirs() {
    let old: RepoIdentity = serde_json::from_str(
        r#"{"connection":"acme","provider":"bitbucket-cloud","repo_id":"{1}","full_name":"ws/api"}"#,
    )
    .unwrap();
    assert_eq!(old.connection_id, "");
    assert_eq!(old.history_key(), "acme");
    let mut h = blake3::Hasher::new();
    h.update(b"acme\0{1}");
    assert_eq!(old.dir_name(), hex::encode(&h.finalize().as_bytes()[..8]));
    let migrated = RepoIdentity {
        connection_id: "acme".into(),
        ..old.clone()
    };
    assert_eq!(migrated.dir_name(), old.dir_name());
    let readded = RepoIdentity {
        connection_id: "0123456789abcdef".into(),
        ..old.clone()
    };
    assert_ne!(readded.dir_name(), old.dir_name());
}

#[test]
fn histories_have_one_entry_per_repo_dir() {
    on_each_backend(histories_have_one_entry_per_repo_dir_on);
}

fn histories_have_one_entry_per_repo_dir_on(a: &Archive) {
    let refs = a.put_bytes(b"[]").unwrap().id;
    let repo = |id: &str, name: &str| RepoIdentity {
        connection: "acme".into(),
        connection_id: id.into(),
        provider: "bitbucket-cloud".into(),
        repo_id: "{1}".into(),
        full_name: name.into(),
    };
    let snap = |r: RepoIdentity, t: i64| Snapshot {
        format: FORMAT_VERSION,
        id: SnapshotId::new(OffsetDateTime::from_unix_timestamp(t).unwrap()),
        repository: r,
        taken_at: OffsetDateTime::from_unix_timestamp(t).unwrap(),
        git: crate::archive::GitPart {
            refs,
            ref_count: 0,
            packs: vec![],
        },
        wiki: None,
        lfs: None,
        metadata: None,
        main_branch: None,
        stats: SnapshotStats::default(),
    };
    a.write_snapshot(&snap(repo("", "ws/old-name"), 100))
        .unwrap();
    a.write_snapshot(&snap(repo("acme", "ws/api"), 200))
        .unwrap();
    a.write_snapshot(&snap(repo("fedcba9876543210", "ws/api"), 300))
        .unwrap();
    let mut h = a.histories().unwrap();
    h.sort_by_key(|(_, t)| *t);
    let got: Vec<(&str, &str)> = h
        .iter()
        .map(|(r, _)| (r.history_key(), r.full_name.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![("acme", "ws/api"), ("fedcba9876543210", "ws/api")]
    );
}

#[test]
fn leftover_tmp_files_do_not_leak_into_listing() {
    let dir = tmp();
    let a = Archive::open_or_create(dir.path()).unwrap();
    let kept = a.put_bytes(b"kept").unwrap().id;
    std::fs::write(
        dir.path().join("tmp/1-0123456789abcdef.tmp"),
        b"half written",
    )
    .unwrap();
    assert!(a.all_snapshots().unwrap().is_empty());
    assert_eq!(a.clean_tmp().unwrap(), 1);
    // Reopening an existing archive keeps it.
    let again = Archive::open_or_create(dir.path()).unwrap();
    assert_eq!(again.backend.root_location(), a.backend.root_location());
    assert_eq!(again.read_blob(&kept).unwrap(), b"kept");
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
    on_each_backend(pack_index_maps_pack_hashes_on);
}

fn pack_index_maps_pack_hashes_on(a: &Archive) {
    let id = a.put_bytes(b"PACK....").unwrap().id;
    assert_eq!(a.pack_blob("abc123").unwrap(), None);
    a.record_pack("abc123", &id).unwrap();
    assert_eq!(a.pack_blob("abc123").unwrap(), Some(id));
    assert!(a.record_pack("../x", &id).is_err());
}

#[test]
fn memory_archive_refuses_foreign_stores_and_newer_formats() {
    let foreign = Arc::new(MemoryBackend::default());
    foreign
        .write(FileKind::PackIndex, "abc", Source::Bytes(b"x"))
        .unwrap();
    assert!(matches!(
        Archive::open_or_create_on(foreign).unwrap_err(),
        ArchiveError::NotAnArchive { .. }
    ));
    let newer = Arc::new(MemoryBackend::default());
    newer
        .write(
            FileKind::Format,
            "",
            Source::Bytes(b"reposafe-archive 99\n"),
        )
        .unwrap();
    assert!(matches!(
        Archive::open_or_create_on(newer).unwrap_err(),
        ArchiveError::UnsupportedFormat { .. }
    ));
}

#[test]
fn a_failing_source_stores_nothing() {
    on_each_backend(|a| {
        let before = a.disk_usage().unwrap();
        struct Dies(usize);
        impl Read for Dies {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("source died"));
                }
                let n = buf.len().min(self.0);
                buf[..n].fill(1);
                self.0 -= n;
                Ok(n)
            }
        }
        let err = a.put_reader(Dies(3 << 20)).unwrap_err();
        assert!(err.to_string().contains("source died"), "{err}");
        assert_eq!(a.disk_usage().unwrap(), before);
        assert_eq!(a.clean_tmp().unwrap(), 0, "the temporary file is removed");
    });
}

#[test]
fn disk_usage_counts_blobs_and_manifests() {
    on_each_backend(|a| {
        assert_eq!(a.disk_usage().unwrap(), 0);
        let out = a.put_bytes(&[3u8; 1000]).unwrap();
        assert_eq!(a.disk_usage().unwrap(), out.stored_bytes);
        assert!(a.require_blobs([&out.id]).is_ok());
        let missing = BlobId::of(b"absent");
        let err = a.require_blobs([&out.id, &missing]).unwrap_err();
        assert!(err.to_string().contains(&missing.to_hex()), "{err}");
    });
}

#[test]
fn local_archive_keeps_the_on_disk_format() {
    let dir = tmp();
    let a = Archive::open_or_create(dir.path()).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("FORMAT")).unwrap(),
        "reposafe-archive 2\n"
    );
    for sub in ["blobs", "snapshots", "tmp", "index/packs"] {
        assert!(dir.path().join(sub).is_dir(), "{sub}");
    }
    let id = a.put_bytes(b"content").unwrap().id;
    let hex = id.to_hex();
    let on_disk = std::fs::read(dir.path().join("blobs").join(&hex[..2]).join(&hex)).unwrap();
    assert_eq!(&on_disk[..4], b"RSB1");
    a.record_pack("abc123", &id).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("index/packs/abc123")).unwrap(),
        hex
    );
    let oid = "ab".repeat(32);
    assert_eq!(a.lfs_blob(&oid).unwrap(), None);
    a.record_lfs(&oid, &id).unwrap();
    assert_eq!(a.lfs_blob(&oid).unwrap(), Some(id));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("index/lfs").join(&oid)).unwrap(),
        hex
    );
    assert!(a.record_lfs("../x", &BlobId::parse(&hex).unwrap()).is_err());
}

#[test]
fn local_layout_without_format_is_completed_but_files_without_format_are_refused() {
    // A creator stopped after making the directories and before writing FORMAT.
    let dir = tmp();
    for sub in ["blobs", "snapshots", "tmp", "index/packs"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    let a = Archive::open_or_create(dir.path()).unwrap();
    assert!(a.all_snapshots().unwrap().is_empty());
    assert!(dir.path().join("FORMAT").is_file());
    // Files without FORMAT are someone else's: refused.
    let dir = tmp();
    std::fs::create_dir_all(dir.path().join("blobs/ab")).unwrap();
    assert!(matches!(
        Archive::open_or_create(dir.path()).unwrap_err(),
        ArchiveError::NotAnArchive { .. }
    ));
}

/// A format-1 archive as the previous version wrote it (FORMAT 1, a manifest with the
/// git part's fields at the top level) is read, its snapshot's git part intact, and the
/// archive is marked format 2 so older versions refuse the format-2 manifests that follow.
#[test]
fn format_1_archives_and_manifests_stay_readable() {
    let dir = tmp();
    let root = dir.path();
    let refs = {
        let a = Archive::open_or_create(root).unwrap();
        a.put_bytes(b"[]").unwrap().id
    };
    std::fs::write(root.join("FORMAT"), "reposafe-archive 1\n").unwrap();
    let v1 = format!(
        r#"{{"format":1,"id":"20240101T000000Z-0000abcd","repository":{{"connection":"acme","provider":"bitbucket-cloud","repo_id":"{{1}}","full_name":"ws/app"}},"taken_at":"2024-01-01T00:00:00Z","refs":"{refs}","ref_count":3,"packs":[],"main_branch":"main","stats":{{"new_bytes":1,"pack_bytes":0,"fetched_bytes":0}}}}"#
    );
    std::fs::create_dir_all(root.join("snapshots/acme")).unwrap();
    std::fs::write(
        root.join("snapshots/acme/20240101T000000Z-0000abcd.json"),
        v1,
    )
    .unwrap();

    let a = Archive::open(root).unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("FORMAT")).unwrap(),
        "reposafe-archive 2\n"
    );
    let snaps = a.all_snapshots().unwrap();
    assert_eq!(snaps.len(), 1);
    let s = &snaps[0];
    assert_eq!((s.format, s.git.refs, s.git.ref_count), (1, refs, 3));
    assert_eq!(s.part_names(), vec!["git"]);
    assert!(s.wiki.is_none() && s.lfs.is_none() && s.metadata.is_none());
}

/// A format-2 manifest with every part round-trips, names every part's blobs, and a
/// missing index blob refuses the manifest.
#[test]
fn format_2_manifests_hold_named_parts() {
    on_each_backend(format_2_manifests_hold_named_parts_on);
}

fn format_2_manifests_hold_named_parts_on(a: &Archive) {
    let refs = a.put_bytes(b"[]").unwrap().id;
    let pack = a.put_bytes(b"PACK").unwrap().id;
    let lfs_index = a.put_json(&Vec::<LfsIndexEntry>::new()).unwrap().id;
    let meta_index = a.put_json(&MetadataIndex::default()).unwrap().id;
    let git = GitPart {
        refs,
        ref_count: 0,
        packs: vec![pack],
    };
    let mut kinds = std::collections::BTreeMap::new();
    kinds.insert(
        "pullrequests".to_string(),
        MetadataKindPart {
            index: meta_index,
            count: 0,
        },
    );
    let at = OffsetDateTime::from_unix_timestamp(100).unwrap();
    let mut snap = Snapshot {
        format: FORMAT_VERSION,
        id: SnapshotId::new(at),
        repository: RepoIdentity {
            connection: "acme".into(),
            connection_id: "0123456789abcdef".into(),
            provider: "bitbucket-cloud".into(),
            repo_id: "{1}".into(),
            full_name: "ws/app".into(),
        },
        taken_at: at,
        git: git.clone(),
        wiki: Some(git),
        lfs: Some(LfsPart {
            index: lfs_index,
            objects: 0,
            bytes: 0,
            missing: vec![MissingLfsObject {
                oid: "ab".repeat(32),
                size: 3,
                reason: "404 Not Found".into(),
            }],
        }),
        metadata: Some(MetadataPart {
            kinds,
            missing: vec![MissingKind {
                kind: "issues".into(),
                reason: "needs read:issue".into(),
            }],
        }),
        main_branch: None,
        stats: SnapshotStats::default(),
    };
    assert_eq!(snap.blobs().count(), 6);
    assert_eq!(snap.part_names(), vec!["git", "wiki", "lfs", "metadata"]);
    assert_eq!(snap.missing().len(), 2, "{:?}", snap.missing());
    a.write_snapshot(&snap).unwrap();
    assert_eq!(
        a.snapshots_of(&snap.repository).unwrap(),
        vec![snap.clone()]
    );

    snap.id = SnapshotId::new(OffsetDateTime::from_unix_timestamp(200).unwrap());
    if let Some(m) = snap.metadata.as_mut() {
        for k in m.kinds.values_mut() {
            k.index = BlobId::of(b"never stored");
        }
    }
    assert!(matches!(
        a.write_snapshot(&snap),
        Err(ArchiveError::MissingBlob { .. })
    ));
}

#[test]
fn canonical_json_sorts_keys_and_drops_whitespace() {
    let a = canonical_json(r#"{ "b": 1, "a": {"d": [ {"z":1,"y":2} ], "c": null} }"#).unwrap();
    assert_eq!(a, br#"{"a":{"c":null,"d":[{"y":2,"z":1}]},"b":1}"#);
    assert!(canonical_json("{not json").is_err());
}

/// Every file of an encrypted archive, read straight from the backend.
fn stored_files(a: &Archive) -> Vec<(FileKind, String, Vec<u8>)> {
    let mut out = Vec::new();
    for kind in [
        FileKind::Format,
        FileKind::Blob,
        FileKind::Snapshot,
        FileKind::PackIndex,
        FileKind::LfsIndex,
        FileKind::Key,
    ] {
        for id in a.backend.list(kind, "").expect("list") {
            let bytes = a.backend.read(kind, &id).expect("read");
            out.push((kind, id, bytes));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Blobs, manifests and index names of an encrypted archive show nothing of what they
/// hold: the same content stored plainly is found, encrypted it is not; ids and index
/// names differ from a plain archive's and from another encrypted archive's.
#[test]
fn an_encrypted_archive_stores_no_plaintext_and_keyed_names() {
    let marker = b"MARKER-6f1d-plaintext-that-must-not-leak";
    let content = [&marker[..], &b" and some more text ".repeat(500)].concat();
    let plain = Archive::open_or_create_on(Arc::new(MemoryBackend::default())).unwrap();
    let (one, two) = (
        encrypted(Arc::new(MemoryBackend::default())),
        encrypted(Arc::new(MemoryBackend::default())),
    );
    let mut ids = Vec::new();
    for a in [&plain, &one, &two] {
        let put = a.put_bytes(&content).unwrap();
        let raw = a.put_bytes(marker).unwrap();
        assert!(!raw.compressed, "a short blob is stored as it is");
        a.record_pack("abcdef0123", &put.id).unwrap();
        let repo = RepoIdentity {
            connection: "acme".into(),
            connection_id: "0123456789abcdef".into(),
            provider: "bitbucket-cloud".into(),
            repo_id: "{1}".into(),
            full_name: "acme/MARKER-6f1d-plaintext-that-must-not-leak".into(),
        };
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        a.write_snapshot(&Snapshot {
            format: FORMAT_VERSION,
            id: SnapshotId::new(at),
            repository: repo.clone(),
            taken_at: at,
            git: GitPart {
                refs: raw.id,
                ref_count: 1,
                packs: vec![put.id],
            },
            wiki: None,
            lfs: None,
            metadata: None,
            main_branch: Some("MARKER-6f1d-plaintext-that-must-not-leak".into()),
            stats: SnapshotStats::default(),
        })
        .unwrap();
        // Everything reads back.
        assert_eq!(a.read_blob(&put.id).unwrap(), content);
        assert_eq!(a.pack_blob("abcdef0123").unwrap(), Some(put.id));
        assert_eq!(a.snapshots_of(&repo).unwrap().len(), 1);
        ids.push(put.id);
    }
    let leaks = |a: &Archive| {
        stored_files(a)
            .into_iter()
            .filter(|(_, id, bytes)| contains(bytes, marker) || id.contains("abcdef0123"))
            .map(|(kind, id, _)| format!("{kind:?} {id}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        leaks(&plain).len(),
        4,
        "the plain archive shows it: {:?}",
        leaks(&plain)
    );
    assert!(leaks(&one).is_empty(), "{:?}", leaks(&one));
    assert!(leaks(&two).is_empty(), "{:?}", leaks(&two));
    assert_eq!(ids[0], BlobId::of(&content));
    assert!(ids[1] != ids[0] && ids[2] != ids[0] && ids[1] != ids[2]);
    assert_eq!(one.blob_id_of(&content), ids[1]);
}

/// An encrypted archive opens only with its key: without one the error says it is
/// encrypted, another key is named as not the archive's, and a store with data is
/// never turned into an encrypted archive.
#[test]
fn an_encrypted_archive_opens_only_with_its_key() {
    use age::secrecy::ExposeSecret;
    let memory: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
    let key = ArchiveKey::generate();
    let text = key.secret_text();
    let recipient = key.recipient();
    let a =
        Archive::create_encrypted_on(memory.clone(), key, &[("vault".into(), b"sealed".to_vec())])
            .unwrap();
    let id = a.put_bytes(b"content").unwrap().id;
    assert_eq!(
        Archive::inspect_on(memory.as_ref()).unwrap(),
        ArchiveLayout::Encrypted {
            recipient: recipient.clone()
        }
    );
    let err = Archive::open_on(memory.clone()).unwrap_err();
    assert!(err.to_string().contains("encrypted"), "{err}");
    let err = Archive::open_encrypted_on(memory.clone(), ArchiveKey::generate()).unwrap_err();
    assert!(matches!(err, ArchiveError::WrongKey { .. }), "{err}");
    assert!(err.to_string().contains(&recipient), "{err}");
    let again = Archive::open_encrypted_on(
        memory.clone(),
        ArchiveKey::parse(text.expose_secret()).unwrap(),
    )
    .unwrap();
    assert_eq!(again.read_blob(&id).unwrap(), b"content");
    assert_eq!(again.key_file_names().unwrap(), ["vault"]);
    again.add_key_file("passphrase-1", b"other").unwrap();
    assert!(again.add_key_file("vault", b"x").is_err(), "never replaced");
    let err =
        Archive::create_encrypted_on(memory, ArchiveKey::generate(), &[("k".into(), vec![1])])
            .unwrap_err();
    assert!(
        err.to_string().contains("already holds an encrypted"),
        "{err}"
    );

    // A plain archive: empty, it may become encrypted; with a blob, never.
    let plain: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
    let p = Archive::open_or_create_on(plain.clone()).unwrap();
    assert!(p.add_key_file("k", b"x").is_err());
    p.put_bytes(b"data").unwrap();
    let err = Archive::create_encrypted_on(
        plain.clone(),
        ArchiveKey::generate(),
        &[("k".into(), vec![1])],
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("plain archive with backups"),
        "{err}"
    );
    assert!(Archive::open_on(plain).is_ok());
    let empty: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
    Archive::open_or_create_on(empty.clone()).unwrap();
    Archive::create_encrypted_on(
        empty.clone(),
        ArchiveKey::generate(),
        &[("k".into(), vec![1])],
    )
    .unwrap();
    assert!(matches!(
        Archive::inspect_on(empty.as_ref()).unwrap(),
        ArchiveLayout::Encrypted { .. }
    ));
}

/// Tampering shows: a flipped byte in an encrypted blob or manifest fails its read, and
/// a plain blob planted in an encrypted archive is refused.
#[test]
fn tampered_or_planted_files_in_an_encrypted_archive_are_refused() {
    let dir = tmp();
    let a = encrypted(Arc::new(LocalBackend::new(dir.path())));
    let id = a.put_bytes(&b"abc".repeat(10_000)).unwrap().id;
    let mut bytes = a.backend.read(FileKind::Blob, &id.to_hex()).unwrap();
    bytes[200] ^= 1;
    a.backend
        .write(FileKind::Blob, &id.to_hex(), Source::Bytes(&bytes))
        .unwrap();
    let err = a.verify_blob(&id).unwrap_err();
    assert!(matches!(err, ArchiveError::CorruptBlob { .. }), "{err}");
    let plain_dir = tmp();
    let plain = Archive::open_or_create(plain_dir.path()).unwrap();
    let planted = plain.put_bytes(b"planted").unwrap().id;
    let planted_bytes = plain
        .backend
        .read(FileKind::Blob, &planted.to_hex())
        .unwrap();
    a.backend
        .write(
            FileKind::Blob,
            &planted.to_hex(),
            Source::Bytes(&planted_bytes),
        )
        .unwrap();
    let err = a.read_blob(&planted).unwrap_err();
    assert!(
        err.to_string()
            .contains("plain blob in an encrypted archive"),
        "{err}"
    );
}

#[test]
fn a_file_is_stored_whole_and_once() {
    on_each_backend(a_file_is_stored_whole_and_once_on);
}

/// `put_file`: on object storage hashed first and encoded into the upload, elsewhere
/// through a temporary file; either way the same id, content that reads back, and no
/// second copy.
fn a_file_is_stored_whole_and_once_on(a: &Archive) {
    let dir = tmp();
    for (name, data) in [
        // Several pipe chunks, compressible (zstd) and not (stored).
        ("text", b"a line of a git pack\n".repeat(200_000)),
        (
            "random",
            reposafe_testkit::gitutil::pseudo_random_bytes(5, 3 << 20),
        ),
        ("empty", Vec::new()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, &data).expect("write");
        let out = a.put_file(&path).expect("put");
        assert_eq!(out.id, a.blob_id_of(&data), "{name}");
        assert_eq!(out.len, data.len() as u64);
        assert!(out.stored_bytes > 0, "{name}");
        assert_eq!(out.compressed, name == "text", "{name}");
        let mut back = Vec::new();
        a.open_blob(&out.id)
            .expect("open")
            .read_to_end(&mut back)
            .expect("read back, verified");
        assert!(back == data, "{name} reads back");
        let again = a.put_file(&path).expect("again");
        assert_eq!((again.id, again.stored_bytes), (out.id, 0), "{name}");
    }
    let missing = a.put_file(&dir.path().join("none")).expect_err("missing");
    assert!(missing.to_string().contains("none"), "{missing}");
}

/// One snapshot of `acme/api` at `t`, naming `packs`.
fn snapshot_at(t: i64, refs: BlobId, packs: Vec<BlobId>) -> Snapshot {
    let at = OffsetDateTime::from_unix_timestamp(t).expect("time");
    Snapshot {
        format: FORMAT_VERSION,
        id: SnapshotId::new(at),
        repository: RepoIdentity {
            connection: "acme".into(),
            connection_id: "0123456789abcdef".into(),
            provider: "bitbucket-cloud".into(),
            repo_id: "{1}".into(),
            full_name: "acme/api".into(),
        },
        taken_at: at,
        git: crate::archive::GitPart {
            refs,
            ref_count: 0,
            packs,
        },
        wiki: None,
        lfs: None,
        metadata: None,
        main_branch: None,
        stats: SnapshotStats::default(),
    }
}

/// Prune's rewrite of a manifest in storage shared with other appliances: it goes
/// through while the manifest is as read, and a manifest that another appliance
/// forgot or rewrote between the read and the write is left as that appliance made
/// it (an unconditional write brought a forgotten snapshot back).
#[test]
fn a_rewrite_leaves_a_manifest_another_appliance_forgot_or_rewrote_meanwhile() {
    let store = Arc::new(MemoryBackend::shared());
    let a = Archive::open_or_create_on(store.clone()).expect("archive");
    let refs = a.put_bytes(b"[]").expect("refs").id;
    let (old_pack, new_pack) = (
        a.put_bytes(b"old pack").expect("pack").id,
        a.put_bytes(b"new pack").expect("pack").id,
    );
    let snap = snapshot_at(100, refs, vec![old_pack]);
    a.write_snapshot(&snap).expect("write");
    let with_packs = |packs: Vec<BlobId>| {
        let mut rewritten = snap.clone();
        rewritten.git.packs = packs;
        rewritten
    };
    let consolidated = with_packs(vec![new_pack]);

    let forget = format!("{}/{}", snap.repository.dir_name(), snap.id.as_str());
    store.after_next_read(FileKind::Snapshot, move |s| {
        s.delete(FileKind::Snapshot, &forget).expect("forget");
    });
    assert_eq!(a.rewrite_snapshot(&consolidated).expect("rewrite"), None);
    assert!(
        a.snapshots_of(&snap.repository).expect("list").is_empty(),
        "the snapshot forgotten meanwhile stays forgotten"
    );

    a.write_snapshot(&snap).expect("write again");
    let other = Archive::open_on(store.clone()).expect("the other appliance");
    let theirs = with_packs(vec![old_pack, new_pack]);
    store.after_next_read(FileKind::Snapshot, move |_| {
        let theirs = other.rewrite_snapshot(&theirs).expect("their rewrite");
        assert!(theirs.is_some(), "their rewrite went through");
    });
    assert_eq!(a.rewrite_snapshot(&consolidated).expect("rewrite"), None);
    let kept = a.snapshots_of(&snap.repository).expect("list");
    assert_eq!(kept.len(), 1);
    assert_eq!(
        kept[0].git.packs,
        vec![old_pack, new_pack],
        "theirs is kept"
    );

    let size = a.rewrite_snapshot(&consolidated).expect("rewrite");
    assert!(size.is_some_and(|n| n > 0), "{size:?}");
    let now = a.snapshots_of(&snap.repository).expect("list");
    assert_eq!(now, vec![consolidated]);
}
