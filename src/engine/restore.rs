//! Listing snapshots and restoring a repository from one.
//!
//! A restore never destroys anything: its target may not be the data dir, lie inside it or
//! contain it (compared as resolved paths), and an existing git repository it replaces is
//! moved aside, never deleted (see [`git::restore_bare`]).

use super::{Context, EngineError};
use crate::archive::{BlobId, LfsIndexEntry, LfsPart, RepoIdentity, Snapshot, SnapshotId};
use crate::git::{self, RefEntry};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// Which snapshot to restore.
#[derive(Clone, Debug)]
pub enum SnapshotChoice {
    Latest,
    /// The newest snapshot taken at or before this time.
    At(OffsetDateTime),
    Id(SnapshotId),
}

/// What a restore did.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RestoreReport {
    pub snapshot: String,
    #[serde(with = "time::serde::rfc3339")]
    pub taken_at: OffsetDateTime,
    pub refs: usize,
    pub packs: usize,
    pub target: String,
    /// Where the git repository that was at the target was moved, when one was replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<String>,
    /// The parts of the snapshot (`git`, `wiki`, `lfs`, `metadata`).
    #[serde(default)]
    pub parts: Vec<String>,
    /// Git LFS objects written into the repository's `lfs/objects/`, and their bytes.
    #[serde(default)]
    pub lfs_objects: u64,
    #[serde(default)]
    pub lfs_bytes: u64,
    /// The wiki, restored beside the repository, when the snapshot has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wiki: Option<WikiRestored>,
    /// Metadata documents in the snapshot: a restore does not write them
    /// (`reposafe export` does).
    #[serde(default)]
    pub metadata_documents: u64,
    /// What the snapshot lacks (see [`Snapshot::missing`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

/// Where a restore put the wiki.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct WikiRestored {
    pub target: String,
    pub refs: usize,
    /// Where the git repository that was at the wiki's target was moved, when replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<String>,
}

/// How a restore job's result `reason` says what was moved aside (see
/// [`RestoreReport::replaced_note`]).
const WIKI_REPLACED: &str = "; the wiki that was at its target was moved to ";

impl RestoreReport {
    /// The report of restoring `snap` to `target`, as its manifest describes it (nothing
    /// replaced).
    pub fn of(snap: &Snapshot, target: &Path) -> RestoreReport {
        let lfs = snap.lfs.as_ref();
        RestoreReport {
            snapshot: snap.id.to_string(),
            taken_at: snap.taken_at,
            refs: snap.git.ref_count as usize,
            packs: snap.git.packs.len(),
            target: target.display().to_string(),
            replaced: None,
            parts: snap.part_names().iter().map(|p| p.to_string()).collect(),
            lfs_objects: lfs.map_or(0, |l| l.objects),
            lfs_bytes: lfs.map_or(0, |l| l.bytes),
            wiki: snap.wiki.as_ref().map(|w| WikiRestored {
                target: wiki_target(target).display().to_string(),
                refs: w.ref_count as usize,
                replaced: None,
            }),
            metadata_documents: snap
                .metadata
                .as_ref()
                .map_or(0, |m| m.kinds.values().map(|k| k.count).sum()),
            missing: snap.missing(),
        }
    }

    /// What the restore moved aside, as one line starting with `prefix` (a restore job
    /// keeps it as its result's reason); `None` when nothing was replaced.
    pub(super) fn replaced_note(&self, prefix: &str) -> Option<String> {
        let wiki = self.wiki.as_ref().and_then(|w| w.replaced.as_deref());
        match (self.replaced.as_deref(), wiki) {
            (None, None) => None,
            (main, wiki) => Some(format!(
                "{prefix}{}{}",
                main.unwrap_or("-"),
                wiki.map(|w| format!("{WIKI_REPLACED}{w}"))
                    .unwrap_or_default()
            )),
        }
    }

    /// Sets what was moved aside from a [`replaced_note`](Self::replaced_note).
    pub(super) fn set_replaced(&mut self, note: Option<&str>, prefix: &str) {
        let Some(rest) = note.and_then(|n| n.strip_prefix(prefix)) else {
            return;
        };
        let (main, wiki) = match rest.split_once(WIKI_REPLACED) {
            Some((main, wiki)) => (main, Some(wiki)),
            None => (rest, None),
        };
        self.replaced = (main != "-").then(|| main.to_string());
        if let (Some(w), Some(wiki)) = (self.wiki.as_mut(), wiki) {
            w.replaced = Some(wiki.to_string());
        }
    }
}

/// Finds a repository by full name (`scope/slug`), optionally within one
/// connection. Looks in the state first, then in the archive itself (so an archive
/// restored onto a fresh machine still works).
///
/// One connection name can have several histories of a repository: a connection removed
/// and added again under the same name has a new id and starts a new history. The identity
/// returned is the history of the connection of that name now; for a name no connection has
/// any more, the history backed up last. [`snapshots_of`] lists every history of the name
/// and a restore with a snapshot id reaches any of them.
pub fn find_repository(
    ctx: &Context,
    full_name: &str,
    connection: Option<&str>,
) -> Result<RepoIdentity, EngineError> {
    let mut found: Vec<RepoIdentity> = Vec::new();
    for r in ctx.state.repositories(connection)? {
        if r.full_name == full_name {
            found.push(RepoIdentity {
                connection: r.connection,
                connection_id: String::new(),
                provider: String::new(),
                repo_id: r.repo_id,
                full_name: r.full_name,
            });
        }
    }
    let mut histories = Histories::default();
    if found.is_empty() {
        for (id, _) in histories.get(ctx)? {
            if id.full_name == full_name
                && connection.is_none_or(|c| c == id.connection)
                && !found
                    .iter()
                    .any(|f| f.connection == id.connection && f.repo_id == id.repo_id)
            {
                found.push(id.clone());
            }
        }
    }
    match found.len() {
        0 => Err(EngineError::NotFound(format!(
            "no repository named {full_name}{} has been backed up (names are scope/slug, e.g. acme/api; see `reposafe repositories`)",
            connection
                .map(|c| format!(" in connection {c}"))
                .unwrap_or_default()
        ))),
        1 => current_history(ctx, found.remove(0), &mut histories),
        _ => Err(EngineError::Ambiguous(format!(
            "{full_name} exists in several connections ({}); pass --connection",
            found
                .iter()
                .map(|f| f.connection.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The archive's histories, read once when first needed.
#[derive(Default)]
struct Histories(Option<Vec<(RepoIdentity, OffsetDateTime)>>);

impl Histories {
    fn get(&mut self, ctx: &Context) -> Result<&[(RepoIdentity, OffsetDateTime)], EngineError> {
        if self.0.is_none() {
            self.0 = Some(ctx.archive()?.histories()?);
        }
        Ok(self.0.as_deref().unwrap_or_default())
    }
}

/// `repo` under the history that lookups by name use: the one of the connection of that
/// name now, else the one backed up last.
fn current_history(
    ctx: &Context,
    mut repo: RepoIdentity,
    histories: &mut Histories,
) -> Result<RepoIdentity, EngineError> {
    match ctx.state.connection(&repo.connection) {
        Ok(conn) => {
            repo.connection_id = conn.id;
            repo.provider = conn.provider;
            Ok(repo)
        }
        Err(crate::state::StateError::NoSuchConnection(_)) => {
            let newest = histories
                .get(ctx)?
                .iter()
                .filter(|(h, _)| h.connection == repo.connection && h.repo_id == repo.repo_id)
                .max_by_key(|(_, t)| *t);
            Ok(match newest {
                Some((h, _)) => RepoIdentity {
                    full_name: repo.full_name,
                    ..h.clone()
                },
                None => repo,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Every snapshot of a repository under its connection name, oldest first: the history
/// `repo` names and those of removed connections of the same name (each snapshot's
/// `repository.connection_id` says which).
pub fn snapshots_of(ctx: &Context, repo: &RepoIdentity) -> Result<Vec<Snapshot>, EngineError> {
    let mut all = ctx.archive()?.snapshots_of(repo)?;
    let dir = repo.dir_name();
    for (h, _) in ctx.archive()?.histories()? {
        if h.connection == repo.connection && h.repo_id == repo.repo_id && h.dir_name() != dir {
            all.extend(ctx.archive()?.snapshots_of(&h)?);
        }
    }
    all.sort_by(|a, b| (a.taken_at, &a.id).cmp(&(b.taken_at, &b.id)));
    Ok(all)
}

pub(super) fn choose(
    ctx: &Context,
    repo: &RepoIdentity,
    choice: &SnapshotChoice,
) -> Result<Snapshot, EngineError> {
    if let SnapshotChoice::Id(id) = choice {
        return choose_id(ctx, repo, id);
    }
    let all = ctx.archive()?.snapshots_of(repo)?;
    let none = || no_snapshots(ctx, repo);
    match choice {
        SnapshotChoice::At(t) => {
            let first = all.first().map(|s| s.taken_at);
            all.into_iter()
                .rev()
                .find(|s| s.taken_at <= *t)
                .ok_or_else(|| match first {
                    Some(first) => EngineError::NotFound(format!(
                        "{} has no snapshot at or before {t}; its first snapshot was taken at {first}",
                        repo.full_name
                    )),
                    None => none(),
                })
        }
        _ => all.into_iter().last().ok_or_else(none),
    }
}

/// Which snapshot a request names: `snapshot` (an id), else the newest at or before `at`,
/// else the latest.
pub fn choice_of(
    snapshot: Option<&str>,
    at: Option<OffsetDateTime>,
) -> Result<SnapshotChoice, EngineError> {
    Ok(match (snapshot, at) {
        (Some(_), Some(_)) => {
            return Err(EngineError::Invalid(
                "give either a snapshot id or a time (--at), not both".into(),
            ))
        }
        (Some(id), None) => SnapshotChoice::Id(SnapshotId::parse(id)?),
        (None, Some(at)) => SnapshotChoice::At(at),
        (None, None) => SnapshotChoice::Latest,
    })
}

/// The repository named `full_name` (optionally in `connection`) and its snapshot chosen
/// by `snapshot` id or time `at` (see [`choice_of`]).
pub(super) fn pick_snapshot(
    ctx: &Context,
    full_name: &str,
    connection: Option<&str>,
    snapshot: Option<&str>,
    at: Option<OffsetDateTime>,
) -> Result<Snapshot, EngineError> {
    let choice = choice_of(snapshot, at)?;
    let repo = find_repository(ctx, full_name, connection)?;
    choose(ctx, &repo, &choice)
}

/// A snapshot by id, of any history of `repo`'s connection name.
fn choose_id(ctx: &Context, repo: &RepoIdentity, id: &SnapshotId) -> Result<Snapshot, EngineError> {
    let not_of = || {
        EngineError::NotFound(format!(
            "snapshot {id} is not a snapshot of {} (see `reposafe snapshots {}`)",
            repo.full_name, repo.full_name
        ))
    };
    match ctx.archive()?.find_snapshot(id) {
        Ok(s)
            if s.repository.connection == repo.connection
                && s.repository.repo_id == repo.repo_id =>
        {
            Ok(s)
        }
        Ok(_) | Err(crate::archive::ArchiveError::SnapshotNotFound { .. }) => Err(not_of()),
        Err(e) => Err(e.into()),
    }
}

/// The error for a history without snapshots, pointing at earlier histories of the name.
fn no_snapshots(ctx: &Context, repo: &RepoIdentity) -> EngineError {
    let earlier = snapshots_of(ctx, repo).map(|s| s.len()).unwrap_or(0);
    if earlier > 0 {
        EngineError::NotFound(format!(
            "{} has no snapshots under the current connection {} (id {}) yet; {earlier} snapshots \
             of an earlier connection of that name exist: see `reposafe snapshots {} --connection {}` \
             and restore one with --snapshot ID",
            repo.full_name,
            repo.connection,
            repo.history_key(),
            repo.full_name,
            repo.connection
        ))
    } else {
        EngineError::NotFound(format!(
            "{} has no snapshots yet; run `reposafe backup {}` first",
            repo.full_name, repo.connection
        ))
    }
}

/// Restores a repository to a bare repository at `target`, with its Git LFS objects in the
/// repository's `lfs/objects/` and its wiki beside it ([`wiki_target`]). Refuses a target (or
/// wiki target) that is the data dir, inside it or containing it; refuses a non-empty one
/// unless `overwrite`, and then replaces only a git repository, which is moved aside. Every
/// target is checked and every blob found before anything is written.
pub fn restore(
    ctx: &Context,
    repo: &RepoIdentity,
    choice: &SnapshotChoice,
    target: &Path,
    overwrite: bool,
) -> Result<RestoreReport, EngineError> {
    refuse_data_dir_overlap(&ctx.data_dir, target, "restore target")?;
    // Prune's sweep waits while the snapshot is read.
    let _archive = ctx.gate()?.shared()?;
    let snap = choose(ctx, repo, choice)?;
    let wiki_to = snap.wiki.as_ref().map(|_| wiki_target(target));
    if let Some(wiki_to) = &wiki_to {
        refuse_data_dir_overlap(&ctx.data_dir, wiki_to, "wiki restore target")?;
        git::check_restore_target(wiki_to, overwrite)?;
    }
    git::check_restore_target(target, overwrite)?;
    let (main, wiki) = GitSource::of(ctx, &snap)?;
    lfs_entries(ctx, &snap)?;
    let (replaced, lfs_objects) = main.write_with_lfs(target, snap.lfs.as_ref(), overwrite)?;
    let mut report = RestoreReport::of(&snap, target);
    report.replaced = replaced.map(|p| p.display().to_string());
    report.lfs_objects = lfs_objects;
    if let (Some(wiki), Some(wiki_to)) = (wiki, wiki_to) {
        let replaced = wiki.write(wiki_to.as_path(), overwrite).map_err(|e| {
            EngineError::Internal(format!(
                "the repository was restored to {}, but its wiki could not be restored to {}: {e}",
                target.display(),
                wiki_to.display()
            ))
        })?;
        if let Some(w) = report.wiki.as_mut() {
            w.replaced = replaced.map(|p| p.display().to_string());
        }
    }
    Ok(report)
}

/// Where a repository's wiki is restored beside `target`: `<name>.wiki.git` for a target
/// named `<name>.git`, else `<target>.wiki`.
pub fn wiki_target(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "repository".into());
    let wiki = match name.strip_suffix(".git") {
        Some(stem) if !stem.is_empty() => format!("{stem}.wiki.git"),
        _ => format!("{name}.wiki"),
    };
    target.with_file_name(wiki)
}

/// A git part of a snapshot, read and checked: its refs, every pack present.
pub(super) struct GitSource<'a> {
    ctx: &'a Context,
    part: &'a crate::archive::GitPart,
    pub(super) refs: Vec<RefEntry>,
}

impl<'a> GitSource<'a> {
    /// The repository and the wiki (when it has one) of `snap`.
    pub(super) fn of(
        ctx: &'a Context,
        snap: &'a Snapshot,
    ) -> Result<(GitSource<'a>, Option<GitSource<'a>>), EngineError> {
        let main = GitSource::read(ctx, snap, &snap.git, "git")?;
        let wiki = snap
            .wiki
            .as_ref()
            .map(|w| GitSource::read(ctx, snap, w, "wiki"))
            .transpose()?;
        Ok((main, wiki))
    }

    /// Reads the refs of `part` (`what`: `git`, `wiki`) and checks every pack is present.
    pub(super) fn read(
        ctx: &'a Context,
        snap: &Snapshot,
        part: &'a crate::archive::GitPart,
        what: &str,
    ) -> Result<GitSource<'a>, EngineError> {
        let refs_bytes = ctx.archive()?.read_blob(&part.refs)?;
        let refs: Vec<RefEntry> = serde_json::from_slice(&refs_bytes).map_err(|e| {
            EngineError::Internal(format!(
                "snapshot {}: the {what} refs blob {} is unreadable: {e}",
                snap.id, part.refs
            ))
        })?;
        ctx.archive()?.require_blobs(&part.packs)?;
        Ok(GitSource { ctx, part, refs })
    }

    /// Rebuilds the bare repository at `target`; returns where a replaced repository went.
    pub(super) fn write(
        &self,
        target: &Path,
        overwrite: bool,
    ) -> Result<Option<PathBuf>, EngineError> {
        Ok(self.write_with_lfs(target, None, overwrite)?.0)
    }

    /// Rebuilds the bare repository at `target` with the objects of `lfs` in its
    /// `lfs/objects/` (written before the repository is moved into place); returns where a
    /// replaced repository went, and the LFS objects written.
    pub(super) fn write_with_lfs(
        &self,
        target: &Path,
        lfs: Option<&LfsPart>,
        overwrite: bool,
    ) -> Result<(Option<PathBuf>, u64), EngineError> {
        let archive = self.ctx.archive()?;
        let mut packs = self.part.packs.iter().map(|id| {
            archive
                .open_blob(id)
                .map(|r| Box::new(r) as Box<dyn std::io::Read + Send>)
                .map_err(|e| std::io::Error::other(e.to_string()))
        });
        // The engine's own error, kept for the report (the hook can only give io errors).
        let mut failed: Option<EngineError> = None;
        let mut written = 0;
        let mut add = |repo: &Path| {
            let Some(part) = lfs else { return Ok(()) };
            match super::backup_lfs::write_lfs_objects(self.ctx, part, repo) {
                Ok(n) => {
                    written = n;
                    Ok(())
                }
                Err(e) => {
                    let io = std::io::Error::other(e.to_string());
                    failed = Some(e);
                    Err(io)
                }
            }
        };
        let restored = git::restore_bare_with(target, &mut packs, &self.refs, overwrite, &mut add);
        match (restored, failed) {
            (Ok(r), _) => Ok((r.replaced, written)),
            (Err(_), Some(e)) => Err(e),
            (Err(e), None) => Err(e.into()),
        }
    }
}

/// The LFS index of a snapshot (empty without an LFS part), checked before anything is
/// written: every oid a sha256, every object's blob present.
pub(super) fn lfs_entries(
    ctx: &Context,
    snap: &Snapshot,
) -> Result<Vec<LfsIndexEntry>, EngineError> {
    let Some(part) = &snap.lfs else {
        return Ok(Vec::new());
    };
    let entries: Vec<LfsIndexEntry> = ctx.archive()?.read_json(&part.index)?;
    for e in &entries {
        if !is_lfs_oid(&e.oid) {
            return Err(EngineError::Internal(format!(
                "snapshot {}: its LFS index {} lists {:?}, which is not a sha256 object id",
                snap.id, part.index, e.oid
            )));
        }
    }
    let blobs: Vec<_> = entries.iter().map(|e| e.blob).collect();
    ctx.archive()?.require_blobs(&blobs)?;
    Ok(entries)
}

fn is_lfs_oid(oid: &str) -> bool {
    oid.len() == 64 && oid.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Writes blob `id` to a new file at `path` (which must not exist), verified while read;
/// returns its size.
pub(super) fn blob_to_file(ctx: &Context, id: &BlobId, path: &Path) -> Result<u64, EngineError> {
    use std::io::{Read, Write};
    let mut blob = ctx.archive()?.open_blob(id)?;
    let mut out = std::fs::File::create_new(path).map_err(|e| write_error(path, e))?;
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = match blob.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(crate::archive::ArchiveError::CorruptBlob {
                    id: *id,
                    path: ctx.archive()?.blob_location(id),
                    reason: e.to_string(),
                }
                .into())
            }
        };
        out.write_all(&buf[..n]).map_err(|e| write_error(path, e))?;
        total += n as u64;
    }
    Ok(total)
}

/// The error for a file that could not be written while restoring or exporting.
pub(super) fn write_error(path: &Path, e: std::io::Error) -> EngineError {
    EngineError::Internal(format!("cannot write {}: {e}", path.display()))
}

/// Refuses a restore or export `target` (`what` names it: `restore target`) that is the
/// data dir, lies inside it or contains it: writing there (with `--force` above all) could
/// replace the archive or the mirrors.
pub(super) fn refuse_data_dir_overlap(
    data_dir: &Path,
    target: &Path,
    what: &str,
) -> Result<(), EngineError> {
    let io = |path: &Path, e: std::io::Error| EngineError::DataDir {
        path: path.to_path_buf(),
        reason: format!("cannot resolve the path: {e}"),
    };
    let data = resolved(data_dir).map_err(|e| io(data_dir, e))?;
    let to = resolved(target).map_err(|e| io(target, e))?;
    let relation = if to == data {
        "is the data dir"
    } else if to.starts_with(&data) {
        "is inside the data dir"
    } else if data.starts_with(&to) {
        "contains the data dir"
    } else {
        return Ok(());
    };
    Err(EngineError::Invalid(format!(
        "{what} {} {relation} {}; writing there is refused, even with --force: \
         choose a directory outside the data dir",
        target.display(),
        data.display()
    )))
}

/// `path` made absolute with every symbolic link resolved: its nearest existing ancestor is
/// canonicalized and the components below it (which do not exist, so hold no links) are
/// appended, `..` and `.` applied.
fn resolved(path: &Path) -> std::io::Result<PathBuf> {
    use std::path::Component;
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    let comps: Vec<Component> = abs.components().collect();
    for n in (1..=comps.len()).rev() {
        let existing: PathBuf = comps[..n].iter().collect();
        match std::fs::canonicalize(&existing) {
            Ok(mut out) => {
                for c in &comps[n..] {
                    match c {
                        Component::Normal(name) => out.push(name),
                        Component::ParentDir => {
                            out.pop();
                        }
                        _ => {}
                    }
                }
                return Ok(out);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(abs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One name, three histories: from before ids (keyed by the name), of a removed
    /// connection, and of the connection of that name now.
    #[test]
    fn lookups_by_name_pick_the_current_history_and_reach_any_by_id() {
        use crate::archive::{SnapshotStats, FORMAT_VERSION};
        let tmp = tempfile::tempdir().expect("tmp");
        let ctx = Context::open(tmp.path()).expect("context");
        let refs = ctx
            .archive()
            .expect("archive")
            .put_bytes(b"[]")
            .expect("refs")
            .id;
        let write = |connection_id: &str, t: i64| {
            let at = OffsetDateTime::from_unix_timestamp(t).expect("time");
            let snap = Snapshot {
                format: FORMAT_VERSION,
                id: SnapshotId::new(at),
                repository: RepoIdentity {
                    connection: "acme".into(),
                    connection_id: connection_id.into(),
                    provider: "bitbucket-cloud".into(),
                    repo_id: "{1}".into(),
                    full_name: "ws/app".into(),
                },
                taken_at: at,
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
            ctx.archive()
                .expect("archive")
                .write_snapshot(&snap)
                .expect("write");
            snap
        };
        let old = write("", 100);
        let removed = write("1111111111111111", 200);

        // No connection is named acme: the history backed up last; the listing has all.
        let found = find_repository(&ctx, "ws/app", Some("acme")).expect("found");
        assert_eq!(found.history_key(), "1111111111111111");
        let all = snapshots_of(&ctx, &found).expect("list");
        assert_eq!(all, vec![old.clone(), removed.clone()]);
        let latest = choose(&ctx, &found, &SnapshotChoice::Latest).expect("latest");
        assert_eq!(latest, removed);

        // acme added again: its own history, still empty; the others by id.
        let conn: crate::state::Connection = serde_json::from_str(
            r#"{"name":"acme","provider":"bitbucket-cloud","settings":{},"credential_kind":"api-token",
                "credential_identity":null,"id":"2222222222222222","created_at":"2026-01-01T00:00:00Z"}"#,
        )
        .expect("connection");
        ctx.state.add_connection(&conn, b"sealed").expect("add");
        let found = find_repository(&ctx, "ws/app", None).expect("found");
        assert_eq!(found.history_key(), "2222222222222222");
        let err = choose(&ctx, &found, &SnapshotChoice::Latest).expect_err("none yet");
        assert!(err.to_string().contains("--snapshot"), "{err}");
        assert_eq!(snapshots_of(&ctx, &found).expect("list").len(), 2);
        for s in [&old, &removed] {
            let got = choose(&ctx, &found, &SnapshotChoice::Id(s.id.clone())).expect("by id");
            assert_eq!(&got, s);
        }
        let newest = write("2222222222222222", 300);
        let latest = choose(&ctx, &found, &SnapshotChoice::Latest).expect("latest");
        assert_eq!(latest, newest);
    }

    use crate::engine::snapshot_fixture::Fixture;
    use reposafe_testkit::gitutil::{fsck, git, refs_of, try_git};

    fn restore_latest(
        f: &Fixture,
        to: &Path,
        overwrite: bool,
    ) -> Result<RestoreReport, EngineError> {
        let repo = find_repository(&f.ctx, "ws/app", None).expect("repo");
        restore(&f.ctx, &repo, &SnapshotChoice::Latest, to, overwrite)
    }

    #[test]
    fn a_restore_writes_the_lfs_objects_and_the_wiki_beside_the_repository() {
        let f = Fixture::new();
        let full = f.full();
        let to = f.out("app.git");
        let r = restore_latest(&f, &to, false).expect("restore");
        assert_eq!(r.parts, ["git", "wiki", "lfs", "metadata"]);
        assert_eq!(r.lfs_objects, 2);
        assert_eq!(
            r.lfs_bytes,
            full.lfs.iter().map(|o| o.len() as u64).sum::<u64>()
        );
        assert_eq!(r.metadata_documents, 4);
        let wiki = r.wiki.as_ref().expect("wiki");
        assert_eq!(wiki.target, f.out("app.wiki.git").display().to_string());
        assert_eq!(wiki.refs, full.wiki_refs.len());
        assert_eq!(refs_of(&to), full.refs);
        fsck(&to);
        assert_eq!(refs_of(&f.out("app.wiki.git")), full.wiki_refs);
        for object in &full.lfs {
            let oid = reposafe_testkit::lfs::sha256_hex(object);
            let path = to.join(format!("lfs/objects/{}/{}/{oid}", &oid[0..2], &oid[2..4]));
            assert_eq!(&std::fs::read(&path).expect("lfs object"), object);
        }
        // `git lfs` gets the objects from the restored repository.
        let clone = f.out("clone");
        git(
            f.tmp.path(),
            &["clone", "--quiet", &to.display().to_string(), "clone"],
        );
        git(&clone, &["lfs", "install", "--local"]);
        git(&clone, &["lfs", "pull"]);
        assert_eq!(
            std::fs::read(clone.join("big.bin")).expect("big.bin"),
            full.lfs[0]
        );
    }

    #[test]
    fn the_wiki_target_is_checked_before_anything_is_written() {
        let f = Fixture::new();
        f.full();
        let to = f.out("app");
        let wiki = f.out("app.wiki");
        std::fs::create_dir(&wiki).expect("mkdir");
        std::fs::write(wiki.join("notes.txt"), b"mine").expect("write");
        let err = restore_latest(&f, &to, true).expect_err("wiki target in use");
        assert!(
            err.to_string().contains(&wiki.display().to_string()),
            "{err}"
        );
        assert!(!to.exists(), "nothing restored");
        std::fs::remove_dir_all(&wiki).expect("rm");

        // A git repository there is moved aside with --force, never deleted.
        git(f.tmp.path(), &["init", "--quiet", "--bare", "app.wiki"]);
        let err = restore_latest(&f, &to, false).expect_err("not empty");
        assert!(err.to_string().contains("app.wiki"), "{err}");
        assert!(!to.exists(), "nothing restored");
        let r = restore_latest(&f, &to, true).expect("force");
        let aside = r.wiki.and_then(|w| w.replaced).expect("moved aside");
        assert!(try_git(Path::new(&aside), &["rev-parse", "--git-dir"]).is_ok());
        assert!(refs_of(&wiki).contains_key("refs/heads/main"));
    }

    #[test]
    fn a_damaged_lfs_object_fails_the_restore_and_leaves_no_repository() {
        let f = Fixture::new();
        let full = f.full();
        let lfs = full.snap.lfs.as_ref().expect("lfs");
        let index: Vec<LfsIndexEntry> = f
            .ctx
            .archive()
            .expect("archive")
            .read_json(&lfs.index)
            .expect("index");
        let path = f
            .ctx
            .archive()
            .expect("archive")
            .blob_location(&index[1].blob);
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).expect("write");
        let to = f.out("app.git");
        let err = restore_latest(&f, &to, false).expect_err("damaged");
        assert!(
            err.to_string().contains(&index[1].blob.to_string()),
            "{err}"
        );
        assert!(!to.exists(), "no repository without its LFS objects");
        let left: Vec<_> = std::fs::read_dir(f.tmp.path())
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, ["data"]);
    }

    /// A restore run as a job keeps what it moved aside in its result's reason; the report
    /// rebuilt from the job says the same as the restore did.
    #[test]
    fn a_restore_job_keeps_what_was_moved_aside() {
        let f = Fixture::new();
        let snap = f.full().snap;
        let target = Path::new("/r/app.git");
        let cases = [
            (
                Some("/r/app.git.replaced-1"),
                Some("/r/app.wiki.git.replaced-1"),
            ),
            (None, Some("/r/app.wiki.git.replaced-2")),
            (Some("/r/app.git.replaced-3"), None),
            (None, None),
        ];
        for (main, wiki) in cases {
            let mut done = RestoreReport::of(&snap, target);
            done.replaced = main.map(str::to_owned);
            done.wiki.as_mut().expect("wiki").replaced = wiki.map(str::to_owned);
            let note = done.replaced_note("moved: ");
            assert_eq!(note.is_none(), main.is_none() && wiki.is_none());
            let mut rebuilt = RestoreReport::of(&snap, target);
            rebuilt.set_replaced(note.as_deref(), "moved: ");
            assert_eq!(rebuilt.replaced.as_deref(), main);
            assert_eq!(rebuilt.wiki.and_then(|w| w.replaced).as_deref(), wiki);
        }
    }

    #[test]
    fn the_wiki_goes_beside_the_target() {
        assert_eq!(
            wiki_target(Path::new("/r/app.git")),
            Path::new("/r/app.wiki.git")
        );
        assert_eq!(wiki_target(Path::new("/r/app")), Path::new("/r/app.wiki"));
        assert_eq!(wiki_target(Path::new("/r/.git")), Path::new("/r/.git.wiki"));
    }

    #[test]
    fn targets_overlapping_the_data_dir_are_refused() {
        let tmp = tempfile::tempdir().expect("tmp");
        let data = tmp.path().join("data");
        std::fs::create_dir_all(data.join("archive")).expect("mkdir");
        let refused = |t: PathBuf| {
            let err = refuse_data_dir_overlap(&data, &t, "restore target").expect_err("refused");
            assert!(err.to_string().contains(&t.display().to_string()), "{err}");
        };
        refused(data.clone());
        refused(data.join("archive"));
        refused(data.join("not-yet").join("deeper"));
        refused(tmp.path().to_path_buf());
        refused(
            tmp.path()
                .join("elsewhere")
                .join("..")
                .join("data")
                .join("x"),
        );
        refused(tmp.path().join("data").join(".").join("archive"));
        #[cfg(unix)]
        {
            let link = tmp.path().join("link");
            std::os::unix::fs::symlink(&data, &link).expect("symlink");
            refused(link.join("archive"));
            refused(link.clone());
        }
        refuse_data_dir_overlap(&data, &tmp.path().join("restored.git"), "restore target")
            .expect("outside");
        refuse_data_dir_overlap(&data, &tmp.path().join("data2"), "restore target")
            .expect("sibling");
    }
}
