//! Listing snapshots and restoring a repository from one.
//!
//! A restore never destroys anything: its target may not be the data dir, lie inside it or
//! contain it (compared as resolved paths), and an existing git repository it replaces is
//! moved aside, never deleted (see [`git::restore_bare`]).

use super::{Context, EngineError};
use crate::archive::{RepoIdentity, Snapshot, SnapshotId};
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
            self.0 = Some(ctx.archive.histories()?);
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
    let mut all = ctx.archive.snapshots_of(repo)?;
    let dir = repo.dir_name();
    for (h, _) in ctx.archive.histories()? {
        if h.connection == repo.connection && h.repo_id == repo.repo_id && h.dir_name() != dir {
            all.extend(ctx.archive.snapshots_of(&h)?);
        }
    }
    all.sort_by(|a, b| (a.taken_at, &a.id).cmp(&(b.taken_at, &b.id)));
    Ok(all)
}

fn choose(
    ctx: &Context,
    repo: &RepoIdentity,
    choice: &SnapshotChoice,
) -> Result<Snapshot, EngineError> {
    if let SnapshotChoice::Id(id) = choice {
        return choose_id(ctx, repo, id);
    }
    let all = ctx.archive.snapshots_of(repo)?;
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

/// A snapshot by id, of any history of `repo`'s connection name.
fn choose_id(ctx: &Context, repo: &RepoIdentity, id: &SnapshotId) -> Result<Snapshot, EngineError> {
    let not_of = || {
        EngineError::NotFound(format!(
            "snapshot {id} is not a snapshot of {} (see `reposafe snapshots {}`)",
            repo.full_name, repo.full_name
        ))
    };
    match ctx.archive.find_snapshot(id) {
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

/// Restores a repository to a bare repository at `target`. Refuses a target that is the
/// data dir, inside it or containing it; refuses a non-empty target unless `overwrite`, and
/// then replaces only a git repository, which is moved aside.
pub fn restore(
    ctx: &Context,
    repo: &RepoIdentity,
    choice: &SnapshotChoice,
    target: &Path,
    overwrite: bool,
) -> Result<RestoreReport, EngineError> {
    refuse_data_dir_overlap(&ctx.data_dir, target)?;
    let snap = choose(ctx, repo, choice)?;
    let refs_bytes = ctx.archive.read_blob(&snap.git.refs)?;
    let refs: Vec<RefEntry> = serde_json::from_slice(&refs_bytes).map_err(|e| {
        EngineError::Internal(format!(
            "snapshot {}: refs blob {} is unreadable: {e}",
            snap.id, snap.git.refs
        ))
    })?;
    // Check every blob is present before writing anything.
    ctx.archive.require_blobs(&snap.git.packs)?;
    let archive = &ctx.archive;
    let mut packs = snap.git.packs.iter().map(|id| {
        archive
            .open_blob(id)
            .map(|r| Box::new(r) as Box<dyn std::io::Read + Send>)
            .map_err(|e| std::io::Error::other(e.to_string()))
    });
    let restored = git::restore_bare(target, &mut packs, &refs, overwrite)?;
    if let Some(lfs) = &snap.lfs {
        super::backup_lfs::write_lfs_objects(ctx, lfs, target)?;
    }
    Ok(RestoreReport {
        snapshot: snap.id.to_string(),
        taken_at: snap.taken_at,
        refs: refs.len(),
        packs: snap.git.packs.len(),
        target: target.display().to_string(),
        replaced: restored.replaced.map(|p| p.display().to_string()),
    })
}

/// Refuses a restore `target` that is the data dir, lies inside it or contains it: a restore
/// there (with `--force` above all) could replace the archive or the mirrors.
fn refuse_data_dir_overlap(data_dir: &Path, target: &Path) -> Result<(), EngineError> {
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
        "restore target {} {relation} {}; a restore there is refused, even with --force: \
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
        let refs = ctx.archive.put_bytes(b"[]").expect("refs").id;
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
            ctx.archive.write_snapshot(&snap).expect("write");
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

    #[test]
    fn targets_overlapping_the_data_dir_are_refused() {
        let tmp = tempfile::tempdir().expect("tmp");
        let data = tmp.path().join("data");
        std::fs::create_dir_all(data.join("archive")).expect("mkdir");
        let refused = |t: PathBuf| {
            let err = refuse_data_dir_overlap(&data, &t).expect_err("refused");
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
        refuse_data_dir_overlap(&data, &tmp.path().join("restored.git")).expect("outside");
        refuse_data_dir_overlap(&data, &tmp.path().join("data2")).expect("sibling");
    }
}
