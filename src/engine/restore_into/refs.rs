//! The git parts of a restore into a provider: which refs to push (never overwriting or
//! deleting one on the server), the LFS objects they point to uploaded first, then the
//! push of the snapshot's packs (`git::push`) for the repository and its wiki.

use super::{GitRestored, IntoOptions, PartRestored, PartStatus, Writer};
use crate::archive::{Archive, BlobId, GitPart, Snapshot};
use crate::engine::restore::{lfs_entries, GitSource};
use crate::engine::EngineError;
use crate::git::{self, GitAuth, RefEntry, RefTarget, RefUpdate, RemoteRefs};
use crate::lfs;
use crate::providers::{failover, RepositoryParts};
use std::collections::BTreeMap;
use std::time::Duration;

/// What to push of a snapshot's refs, given the server's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefPlan {
    pub updates: Vec<RefUpdate>,
    /// Refs the server has with the snapshot's target already.
    pub unchanged: usize,
    /// (name in the snapshot, name pushed) for refs the server has with another target.
    pub renamed: Vec<(String, String)>,
    /// Refs not pushed on purpose, and why.
    pub skipped: Vec<(String, String)>,
}

/// Plans the push of `snapshot_refs` to a server that has `remote` (name → object id):
/// only branches and tags; a ref the server has with the same target is left alone; one
/// it has with another target is pushed as `refs/{heads,tags}/restored/<snapshot>/<name>`
/// (never overwritten); nothing is ever deleted.
pub fn plan_ref_updates(
    snapshot_refs: &[RefEntry],
    remote: &[(String, String)],
    snapshot_id: &str,
) -> RefPlan {
    let remote: BTreeMap<&str, &str> = remote
        .iter()
        .map(|(n, o)| (n.as_str(), o.as_str()))
        .collect();
    let mut plan = RefPlan::default();
    for r in snapshot_refs {
        if r.name == "HEAD" {
            continue;
        }
        let RefTarget::Object(oid) = &r.target else {
            plan.skipped.push((
                r.name.clone(),
                "a symbolic ref (the server sets its own)".into(),
            ));
            continue;
        };
        let Some((namespace, short)) = branch_or_tag(&r.name) else {
            let why = if r.name.starts_with("refs/pull-requests/") {
                "pull request refs belong to the server (it makes them for its own pull requests)"
            } else {
                "only branches and tags are pushed"
            };
            plan.skipped.push((r.name.clone(), why.into()));
            continue;
        };
        let name = match remote.get(r.name.as_str()) {
            None => r.name.clone(),
            Some(there) if there == oid => {
                plan.unchanged += 1;
                continue;
            }
            Some(_) => {
                let renamed = format!("{namespace}restored/{snapshot_id}/{short}");
                plan.renamed.push((r.name.clone(), renamed.clone()));
                match remote.get(renamed.as_str()) {
                    None => renamed,
                    Some(there) if there == oid => {
                        plan.unchanged += 1;
                        continue;
                    }
                    Some(_) => {
                        plan.skipped.push((
                            r.name.clone(),
                            format!("the server has it and {renamed}, both with other targets"),
                        ));
                        continue;
                    }
                }
            }
        };
        plan.updates.push(RefUpdate {
            name,
            old: None,
            new: oid.clone(),
        });
    }
    plan
}

/// `("refs/heads/", "main")` for a branch, likewise for a tag; `None` for other refs.
fn branch_or_tag(name: &str) -> Option<(&'static str, &str)> {
    ["refs/heads/", "refs/tags/"]
        .into_iter()
        .find_map(|ns| name.strip_prefix(ns).map(|short| (ns, short)))
        .filter(|(_, short)| !short.is_empty())
}

/// Whether every ref on the server is one the snapshot has with the same target: the
/// state an interrupted restore of this snapshot leaves, which a re-run continues.
fn is_earlier_restore_of(remote: &RemoteRefs, snapshot_refs: &[RefEntry]) -> bool {
    let ours: BTreeMap<&str, &str> = snapshot_refs
        .iter()
        .filter_map(|r| match &r.target {
            RefTarget::Object(o) => Some((r.name.as_str(), o.as_str())),
            RefTarget::Symbolic(_) => None,
        })
        .collect();
    remote
        .refs
        .iter()
        .all(|(n, o)| ours.get(n.as_str()) == Some(&o.as_str()))
}

/// The packs of a snapshot's git part, read from the archive (verified while read).
struct ArchivePacks<'a> {
    archive: &'a Archive,
    packs: &'a [BlobId],
}

impl git::PackSource for ArchivePacks<'_> {
    fn count(&self) -> usize {
        self.packs.len()
    }

    fn size(&self, index: usize) -> u64 {
        self.packs
            .get(index)
            .and_then(|id| self.archive.open_blob(id).ok())
            .map_or(0, |r| r.content_len())
    }

    fn open(&self, index: usize) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        let id = self
            .packs
            .get(index)
            .ok_or_else(|| std::io::Error::other(format!("no pack {index}")))?;
        self.archive
            .open_blob(id)
            .map(|r| Box::new(r) as Box<dyn std::io::Read + Send>)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}

impl Writer<'_> {
    /// The git form of the connection's credential, paced like its fetches.
    fn git_auth(&self, opts: &IntoOptions) -> Result<GitAuth, EngineError> {
        let notice = opts.notice.clone();
        crate::engine::credentials::paced_git_auth(self.gate.pool(), 0, move |m| notice(m))
    }

    /// Pushes the git part `part` (`what`: `git`, `wiki`) of `snap` to `url`. A non-empty
    /// target is refused unless the restore goes into an existing repository, it was
    /// created by this restore, or it holds only refs of this snapshot (a re-run).
    fn push_part(
        &self,
        snap: &Snapshot,
        part: &GitPart,
        what: &str,
        url: &str,
        opts: &IntoOptions,
    ) -> Result<GitRestored, EngineError> {
        let source = GitSource::read(self.ctx, snap, part, what)?;
        let auth = self.git_auth(opts)?;
        let repo = &snap.repository.full_name;
        let progress = |sent: u64| {
            (opts.notice)(&format!(
                "{repo}: pushing {what}, {} sent",
                crate::fmt::human_bytes(sent)
            ))
        };
        let push_opts = git::PushOptions {
            url,
            auth: &auth,
            tls: Some(self.tls.as_ref()),
            progress: Some(&progress),
            should_interrupt: &opts.interrupt,
        };
        let remote = git::advertised_refs(&push_opts)?;
        if !remote.refs.is_empty()
            && !self.target.into_existing
            && !is_earlier_restore_of(&remote, &source.refs)
        {
            return Err(EngineError::Conflict(format!(
                "the target {what} repository {url} is not empty ({} refs); nothing was pushed. \
                 Restore into a new repository, or pass --into-existing to add the snapshot's refs \
                 beside what is there (nothing there is overwritten: refs that differ are pushed \
                 under restored/{}/)",
                remote.refs.len(),
                snap.id
            )));
        }
        let plan = plan_ref_updates(&source.refs, &remote.refs, snap.id.as_str());
        let mut done = GitRestored {
            unchanged: plan.unchanged,
            renamed: plan.renamed.clone(),
            skipped: plan.skipped.clone(),
            ..Default::default()
        };
        if plan.updates.is_empty() {
            return Ok(done);
        }
        let packs = ArchivePacks {
            archive: self.ctx.archive()?,
            packs: &part.packs,
        };
        let pushed = git::push(&push_opts, &remote, &plan.updates, &packs)?;
        done.pack_bytes = pushed.pack_bytes;
        for (name, result) in pushed.refs {
            match result {
                Ok(()) => done.pushed.push(name),
                Err(reason) => done.refused.push((name, reason)),
            }
        }
        Ok(done)
    }

    /// Pushes the repository's branches and tags; an error means git was not restored.
    pub(super) fn push_git(
        &self,
        snap: &Snapshot,
        url: &str,
        opts: &IntoOptions,
    ) -> Result<GitRestored, EngineError> {
        let done = self.push_part(snap, &snap.git, "git", url, opts)?;
        (opts.notice)(&format!(
            "{}: {} refs pushed, {} already there, {} refused",
            snap.repository.full_name,
            done.pushed.len(),
            done.unchanged,
            done.refused.len()
        ));
        Ok(done)
    }

    /// Pushes the wiki into the target's wiki, when the target has one.
    pub(super) fn push_wiki(
        &self,
        snap: &Snapshot,
        parts: Option<&RepositoryParts>,
        opts: &IntoOptions,
    ) -> PartRestored {
        let Some(wiki) = &snap.wiki else {
            return part(
                "wiki",
                PartStatus::Skipped,
                "the snapshot has no wiki".into(),
                0,
            );
        };
        let url = parts.and_then(|p| p.git.iter().find(|g| g.name == "wiki"));
        let Some(url) = url else {
            return part(
                "wiki",
                PartStatus::Skipped,
                format!(
                    "the target repository has no wiki ({} repositories have none, or it is \
                     switched off); the wiki is in the snapshot (`reposafe export`)",
                    self.conn.provider
                ),
                0,
            );
        };
        match self.push_part(snap, wiki, "wiki", &url.url, opts) {
            Ok(done) if done.refused.is_empty() => part(
                "wiki",
                PartStatus::Restored,
                format!(
                    "{} refs pushed, {} already there",
                    done.pushed.len(),
                    done.unchanged
                ),
                done.pushed.len() as u64,
            ),
            Ok(done) => PartRestored {
                problems: done
                    .refused
                    .iter()
                    .map(|(r, why)| format!("{r}: {why}"))
                    .collect(),
                ..part(
                    "wiki",
                    PartStatus::Partial,
                    format!(
                        "{} refs pushed, {} refused",
                        done.pushed.len(),
                        done.refused.len()
                    ),
                    done.pushed.len() as u64,
                )
            },
            Err(e) => part("wiki", PartStatus::Failed, e.to_string(), 0),
        }
    }

    /// Uploads the snapshot's LFS objects (before the refs that point to them are
    /// pushed); `None` when the snapshot has none.
    pub(super) fn upload_lfs(
        &self,
        snap: &Snapshot,
        lfs_url: Option<&str>,
        opts: &IntoOptions,
    ) -> Result<Option<PartRestored>, EngineError> {
        if snap.lfs.is_none() {
            return Ok(None);
        }
        let entries = lfs_entries(self.ctx, snap)?;
        let Some(lfs_url) = lfs_url else {
            return Ok(Some(part(
                "lfs",
                PartStatus::Failed,
                format!(
                    "the target repository takes no LFS objects (LFS is off there?); {} objects \
                     were not uploaded",
                    entries.len()
                ),
                0,
            )));
        };
        let objects: Vec<(git::LfsPointer, BlobId)> = entries
            .iter()
            .map(|e| {
                let pointer = git::LfsPointer {
                    oid: e.oid.clone(),
                    size: e.size,
                };
                (pointer, e.blob)
            })
            .collect();
        let upload = lfs::UploadOptions {
            concurrency: lfs::CONCURRENCY,
            policy: failover::Policy::backing_off(
                3,
                Duration::from_secs(2),
                Duration::from_secs(60),
                self.ctx.retry.max_retries + 1,
            ),
            retries: 3,
            retry_base: Duration::from_secs(2),
            interrupt: &opts.interrupt,
            progress: None,
        };
        let report =
            lfs::upload_objects(&self.gate, self.ctx.archive()?, lfs_url, &objects, &upload);
        Ok(Some(match report {
            Err(e) => part("lfs", PartStatus::Failed, e.to_string(), 0),
            Ok(r) => {
                let status = if r.failed.is_empty() {
                    PartStatus::Restored
                } else {
                    PartStatus::Partial
                };
                PartRestored {
                    problems: r
                        .failed
                        .iter()
                        .map(|(p, why)| format!("{}: {why}", p.oid))
                        .collect(),
                    ..part(
                        "lfs",
                        status,
                        format!(
                            "{} objects uploaded ({} bytes), {} already there, {} failed",
                            r.uploaded.len(),
                            r.uploaded_bytes,
                            r.present.len(),
                            r.failed.len()
                        ),
                        (r.uploaded.len() + r.present.len()) as u64,
                    )
                }
            }
        }))
    }
}

/// A part's report without needs or problems.
pub(super) fn part(name: &str, status: PartStatus, detail: String, items: u64) -> PartRestored {
    PartRestored {
        part: name.to_string(),
        status,
        detail,
        items,
        needs_user: Vec::new(),
        problems: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, oid: &str) -> RefEntry {
        RefEntry {
            name: name.into(),
            target: RefTarget::Object(oid.into()),
        }
    }

    #[test]
    fn only_missing_branches_and_tags_are_pushed_and_nothing_is_overwritten() {
        let ours = vec![
            RefEntry {
                name: "HEAD".into(),
                target: RefTarget::Symbolic("refs/heads/main".into()),
            },
            r("refs/heads/main", "a1"),
            r("refs/heads/feature/x", "b2"),
            r("refs/tags/v1", "c3"),
            r("refs/pull-requests/7/from", "d4"),
            r("refs/notes/commits", "e5"),
        ];
        let remote = vec![
            ("refs/heads/main".to_string(), "zz".to_string()),
            ("refs/tags/v1".to_string(), "c3".to_string()),
        ];
        let plan = plan_ref_updates(&ours, &remote, "S1");
        let names: Vec<&str> = plan.updates.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(
            names,
            ["refs/heads/restored/S1/main", "refs/heads/feature/x"]
        );
        assert!(plan.updates.iter().all(|u| u.old.is_none()));
        assert_eq!(plan.unchanged, 1);
        assert_eq!(
            plan.renamed,
            [(
                "refs/heads/main".to_string(),
                "refs/heads/restored/S1/main".to_string()
            )]
        );
        let skipped: Vec<&str> = plan.skipped.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(skipped, ["refs/pull-requests/7/from", "refs/notes/commits"]);
    }

    #[test]
    fn a_rerun_skips_what_the_first_run_pushed() {
        let ours = vec![r("refs/heads/main", "a1"), r("refs/tags/v1", "c3")];
        let remote = vec![
            ("refs/heads/main".to_string(), "zz".to_string()),
            ("refs/heads/restored/S1/main".to_string(), "a1".to_string()),
        ];
        let plan = plan_ref_updates(&ours, &remote, "S1");
        assert_eq!(plan.unchanged, 1);
        assert_eq!(plan.updates.len(), 1);
        assert_eq!(plan.updates[0].name, "refs/tags/v1");
        let earlier = RemoteRefs {
            refs: vec![("refs/heads/main".into(), "a1".into())],
            capabilities: vec![],
        };
        assert!(is_earlier_restore_of(&earlier, &ours));
        let other = RemoteRefs {
            refs: vec![("refs/heads/main".into(), "zz".into())],
            capabilities: vec![],
        };
        assert!(!is_earlier_restore_of(&other, &ours));
    }
}
