//! Tests' snapshots, built by hand through the archive API: a git part from a real git
//! repository's pack, a wiki, Git LFS objects and metadata documents with files, in the
//! archive of a fresh data dir.

use super::Context;
use crate::archive::memory::MemoryBackend;
use crate::archive::{
    canonical_json, Archive, BlobId, GitPart, LfsIndexEntry, LfsPart, MetadataIndex, MetadataItem,
    MetadataKindPart, MetadataPart, MissingKind, RepoIdentity, Snapshot, SnapshotId, SnapshotStats,
    StoredFile, FORMAT_VERSION,
};
use crate::git::{RefEntry, RefTarget};
use reposafe_testkit::gitutil::{git, WorkRepo};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use time::OffsetDateTime;

/// A data dir in a temporary directory, with room beside it for restores and exports.
pub(super) struct Fixture {
    pub tmp: tempfile::TempDir,
    pub ctx: Context,
}

/// A metadata document to store.
pub(super) struct Doc {
    pub id: &'static str,
    pub updated_on: Option<&'static str>,
    pub json: serde_json::Value,
    pub files: Vec<(&'static str, Vec<u8>)>,
}

/// The parts of a snapshot to write.
#[derive(Default)]
pub(super) struct Parts {
    pub git: Option<GitPart>,
    pub wiki: Option<GitPart>,
    pub lfs: Option<LfsPart>,
    pub metadata: Option<MetadataPart>,
}

impl Fixture {
    pub fn new() -> Fixture {
        let tmp = tempfile::tempdir().expect("tmp");
        let ctx = Context::open(&tmp.path().join("data")).expect("context");
        Fixture { tmp, ctx }
    }

    /// A fresh data dir whose archive is in memory and shared with other appliances;
    /// with that store, to act on it as another appliance.
    pub fn shared() -> (Fixture, Arc<MemoryBackend>) {
        let store = Arc::new(MemoryBackend::shared());
        let Fixture { tmp, ctx } = Fixture::new();
        let archive = Archive::open_or_create_on(store.clone()).expect("archive");
        let ctx = ctx.with_archive(archive);
        (Fixture { tmp, ctx }, store)
    }

    /// A path beside the data dir.
    pub fn out(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// The context's archive (the fixture's is always open).
    pub(crate) fn archive(&self) -> &crate::archive::Archive {
        self.ctx.archive().expect("archive")
    }

    fn put(&self, bytes: &[u8]) -> BlobId {
        self.archive().put_bytes(bytes).expect("put").id
    }

    /// A work repository with `files` committed on `main` and a tag.
    pub fn repo(files: &[(&str, &[u8])]) -> WorkRepo {
        let mut repo = WorkRepo::with_fixed_dates(1_700_000_000);
        for (path, bytes) in files {
            repo.write(path, bytes);
        }
        repo.commit("first");
        repo.tag_lightweight("v1");
        repo
    }

    /// The git part of `repo`: all its objects in one pack, and its refs; with those refs
    /// (name → target, `HEAD` → `refs/heads/main`).
    pub fn git_part(&self, repo: &WorkRepo) -> (GitPart, BTreeMap<String, String>) {
        git(repo.path(), &["repack", "-a", "-d", "-q"]);
        let pack_dir = repo.path().join(".git/objects/pack");
        let pack = std::fs::read_dir(&pack_dir)
            .expect("pack dir")
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "pack"))
            .expect("a pack");
        let pack = self.put(&std::fs::read(pack).expect("read pack"));
        let listed = git(
            repo.path(),
            &["for-each-ref", "--format=%(refname) %(objectname)"],
        );
        let mut refs: Vec<RefEntry> = listed
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(name, oid)| RefEntry {
                name: name.into(),
                target: RefTarget::Object(oid.into()),
            })
            .collect();
        refs.push(RefEntry {
            name: "HEAD".into(),
            target: RefTarget::Symbolic("refs/heads/main".into()),
        });
        let map = refs
            .iter()
            .map(|r| match &r.target {
                RefTarget::Object(t) | RefTarget::Symbolic(t) => (r.name.clone(), t.clone()),
            })
            .collect();
        let part = GitPart {
            refs: self.archive().put_json(&refs).expect("refs").id,
            ref_count: refs.len() as u32,
            packs: vec![pack],
        };
        (part, map)
    }

    /// An LFS part holding `objects` (oid = their sha256).
    pub fn lfs_part(&self, objects: &[&[u8]]) -> LfsPart {
        let mut index: Vec<LfsIndexEntry> = objects
            .iter()
            .map(|bytes| LfsIndexEntry {
                oid: reposafe_testkit::lfs::sha256_hex(bytes),
                size: bytes.len() as u64,
                blob: self.put(bytes),
            })
            .collect();
        index.sort_by(|a, b| a.oid.cmp(&b.oid));
        LfsPart {
            index: self.archive().put_json(&index).expect("index").id,
            objects: index.len() as u64,
            bytes: index.iter().map(|e| e.size).sum(),
            missing: vec![],
        }
    }

    /// A metadata part with these kinds and documents, and `missing` kinds with reasons.
    pub fn metadata(&self, kinds: Vec<(&str, Vec<Doc>)>, missing: &[(&str, &str)]) -> MetadataPart {
        let mut part = MetadataPart::default();
        for (kind, docs) in kinds {
            let mut items: Vec<MetadataItem> = docs
                .into_iter()
                .map(|d| MetadataItem {
                    id: d.id.into(),
                    updated_on: d.updated_on.map(str::to_owned),
                    blob: self.put(&canonical_json(&d.json.to_string()).expect("json")),
                    files: d
                        .files
                        .iter()
                        .map(|(name, bytes)| StoredFile {
                            name: (*name).into(),
                            size: bytes.len() as u64,
                            blob: self.put(bytes),
                        })
                        .collect(),
                })
                .collect();
            items.sort_by(|a, b| a.id.cmp(&b.id));
            let index = MetadataIndex {
                kind: kind.into(),
                high_water: None,
                items,
            };
            let kind_part = MetadataKindPart {
                index: self.archive().put_json(&index).expect("index").id,
                count: index.items.len() as u64,
            };
            part.kinds.insert(kind.into(), kind_part);
        }
        part.missing = missing
            .iter()
            .map(|(kind, reason)| MissingKind {
                kind: (*kind).into(),
                reason: (*reason).into(),
            })
            .collect();
        part
    }

    /// Writes a snapshot of `ws/app` (connection `acme`) taken at `t` (Unix seconds) with
    /// `parts` (an empty git part when none is given).
    pub fn write(&self, t: i64, parts: Parts) -> Snapshot {
        let at = OffsetDateTime::from_unix_timestamp(t).expect("time");
        let git = parts.git.unwrap_or_else(|| GitPart {
            refs: self.put(b"[]"),
            ref_count: 0,
            packs: vec![],
        });
        let snap = Snapshot {
            format: FORMAT_VERSION,
            id: SnapshotId::new(at),
            repository: RepoIdentity {
                connection: "acme".into(),
                connection_id: "1111111111111111".into(),
                provider: "bitbucket-cloud".into(),
                repo_id: "{1}".into(),
                full_name: "ws/app".into(),
            },
            taken_at: at,
            git,
            wiki: parts.wiki,
            lfs: parts.lfs,
            metadata: parts.metadata,
            main_branch: Some("main".into()),
            stats: SnapshotStats::default(),
        };
        self.archive().write_snapshot(&snap).expect("write");
        snap
    }
}

/// A snapshot with every part: a repository and a wiki (real git packs), two LFS
/// objects, pull requests, an issue with an attachment, the repository document, and a
/// kind the credential could not read.
pub(super) struct Full {
    pub snap: Snapshot,
    pub refs: BTreeMap<String, String>,
    pub wiki_refs: BTreeMap<String, String>,
    pub lfs: Vec<Vec<u8>>,
    pub attachment: Vec<u8>,
}

impl Fixture {
    pub fn full(&self) -> Full {
        let lfs: Vec<Vec<u8>> = vec![b"big file one\n".repeat(1000), vec![7u8; 70_000]];
        let pointer = format!(
            "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize {}\n",
            reposafe_testkit::lfs::sha256_hex(&lfs[0]),
            lfs[0].len()
        );
        let repo = Fixture::repo(&[
            ("README.md", b"hello\n"),
            (
                ".gitattributes",
                b"*.bin filter=lfs diff=lfs merge=lfs -text\n",
            ),
            ("big.bin", pointer.as_bytes()),
        ]);
        let (git, refs) = self.git_part(&repo);
        let wiki_repo = Fixture::repo(&[("Home.md", b"# Wiki\n")]);
        let (wiki, wiki_refs) = self.git_part(&wiki_repo);
        let lfs_part = self.lfs_part(&[&lfs[0], &lfs[1]]);
        let attachment = b"panic at start\n".to_vec();
        let metadata = self.metadata(
            vec![
                ("pullrequests", pull_requests()),
                (
                    "issues",
                    vec![Doc {
                        id: "7",
                        updated_on: Some("2026-11-02T09:00:00+00:00"),
                        json: serde_json::json!({
                            "issue": {"id": 7, "title": "Crash on start", "state": "new",
                                      "reporter": {"display_name": "Eve"}},
                            "comments": [{"id": 1, "content": {"raw": "me too"}}],
                            "attachments": [{"name": "log.txt"}],
                        }),
                        files: vec![("log.txt", attachment.clone())],
                    }],
                ),
                (
                    "repository",
                    vec![Doc {
                        id: "repository",
                        updated_on: None,
                        json: serde_json::json!({"name": "app", "full_name": "ws/app"}),
                        files: vec![],
                    }],
                ),
            ],
            &[("pipeline-variables", "needs pipeline:variable")],
        );
        let snap = self.write(
            1_800_000_000,
            Parts {
                git: Some(git),
                wiki: Some(wiki),
                lfs: Some(lfs_part),
                metadata: Some(metadata),
            },
        );
        Full {
            snap,
            refs,
            wiki_refs,
            lfs,
            attachment,
        }
    }
}

/// Two pull requests as the Cloud API gives them, with their comments.
pub(super) fn pull_requests() -> Vec<Doc> {
    vec![
        Doc {
            id: "1",
            updated_on: Some("2026-11-01T10:00:00+00:00"),
            json: serde_json::json!({
                "pullrequest": {"id": 1, "title": "Add login", "state": "MERGED",
                                "author": {"display_name": "Jane Doe"}},
                "comments": [{"id": 10, "content": {"raw": "LGTM"}}, {"id": 11}],
                "activity": [], "tasks": [],
            }),
            files: vec![],
        },
        Doc {
            id: "2",
            updated_on: Some("2026-11-03T08:30:00+00:00"),
            json: serde_json::json!({
                "pullrequest": {"id": 2, "title": "Fix bug", "state": "OPEN",
                                "author": {"display_name": "Bob"}},
                "comments": [{"id": 12}],
            }),
            files: vec![],
        },
    ]
}
