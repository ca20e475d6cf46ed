//! Jobs (a backup or restore the daemon or CLI ran) and their per-repository
//! results. Job ids come from a counter in `meta`, so they only grow. The one
//! place that names a job's state ([`JobState::as_str`]), describes what a job
//! does ([`JobKind::describe`]) and what happened to a repository
//! ([`ResultStatus`]).

use super::{State, StateError, JOBS, JOB_RESULTS, META};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// One connection's part of a backup job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobTarget {
    pub connection: String,
    /// Only these repositories (full names); every selected one when empty.
    #[serde(default)]
    pub only: Vec<String>,
}

/// Where a restore into a provider writes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreTarget {
    /// A connection marked for restore (`connection add … --allow-restore`).
    pub connection: String,
    /// The target repository `scope/slug` (one repository only); default: the source's
    /// slug (with `prefix`) in the connection's scope.
    #[serde(default, rename = "as", skip_serializing_if = "Option::is_none")]
    pub as_name: Option<String>,
    /// The project to create the repository in (Bitbucket Cloud project key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Write into an existing, non-empty repository: never overwriting or deleting a ref
    /// there (refs that differ are pushed under `restored/<snapshot>/`).
    #[serde(default)]
    pub into_existing: bool,
    /// Put before each new slug (`restored-`), e.g. when restoring a whole workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// What a job does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum JobKind {
    Backup {
        /// The plan it runs for, if any (its selection, window and concurrency apply).
        plan: Option<String>,
        targets: Vec<JobTarget>,
    },
    Restore {
        repository: String,
        connection: Option<String>,
        snapshot: Option<String>,
        #[serde(default, with = "time::serde::rfc3339::option")]
        at: Option<OffsetDateTime>,
        to: String,
        force: bool,
    },
    /// A restore into a provider: `repository`, or every repository of `connection`
    /// when it is empty.
    RestoreInto {
        #[serde(default)]
        repository: String,
        connection: Option<String>,
        snapshot: Option<String>,
        #[serde(default, with = "time::serde::rfc3339::option")]
        at: Option<OffsetDateTime>,
        target: RestoreTarget,
    },
}

impl JobKind {
    /// What the job does, in a few words: `plan P`; the connections
    /// (`connection C`) or the chosen repositories (`a,b`) of each target,
    /// separated by spaces; `restore R to T`.
    pub fn describe(&self) -> String {
        match self {
            JobKind::Backup { plan: Some(p), .. } => format!("plan {p}"),
            JobKind::Backup { targets, .. } => targets
                .iter()
                .map(|t| {
                    if t.only.is_empty() {
                        format!("connection {}", t.connection)
                    } else {
                        t.only.join(",")
                    }
                })
                .collect::<Vec<_>>()
                .join(" "),
            JobKind::Restore { repository, to, .. } => format!("restore {repository} to {to}"),
            JobKind::RestoreInto {
                repository,
                connection,
                target,
                ..
            } => {
                let what = match (repository.as_str(), connection) {
                    ("", Some(c)) => format!("connection {c}"),
                    (r, _) => r.to_string(),
                };
                let into = target.as_name.as_deref().unwrap_or("");
                format!("restore {what} into {} {into}", target.connection)
                    .trim_end()
                    .to_string()
            }
        }
    }
}

/// Why a job was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    Manual,
    Schedule,
    /// A scheduled time passed while the daemon was down.
    Missed,
    /// Work left at the end of a backup window.
    Resume,
    /// A push webhook (one repository, after the debounce delay).
    Webhook,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    Queued,
    Running,
    /// Every repository backed up (or unchanged / skipped by the plan).
    Succeeded,
    /// Some repositories failed; the others were backed up.
    Partial,
    Failed,
    Cancelled,
    /// Cut off by a shutdown or crash; earlier snapshots are intact.
    Interrupted,
}

impl JobState {
    pub fn is_finished(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }

    /// The state's name, as stored and sent by the API (`succeeded`, `partial`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Partial => "partial",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for JobState {
    /// The name from [`JobState::as_str`]; width and alignment apply.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Live counters of a job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobProgress {
    pub repos_total: u64,
    pub repos_done: u64,
    pub snapshots: u64,
    pub unchanged: u64,
    pub failed: u64,
    pub skipped: u64,
    pub deferred: u64,
    /// Repositories whose snapshot lacks a part (counted in `snapshots` or `unchanged` too).
    #[serde(default)]
    pub partial: u64,
    pub bytes_fetched: u64,
    pub bytes_stored: u64,
    /// Repositories in flight.
    #[serde(default)]
    pub current: Vec<String>,
    /// The latest notice, e.g. "rate limited, waiting 30 s".
    #[serde(default)]
    pub notice: Option<String>,
    /// What each credential did (requests, 429s, cool-downs, failure).
    #[serde(default)]
    pub credentials: Vec<CredentialCounters>,
}

/// One credential's counters in a job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialCounters {
    pub connection: String,
    /// `primary` or an additional credential's id.
    pub credential: String,
    pub principal: String,
    pub requests: u64,
    pub rate_limited: u64,
    pub cooldowns: u64,
    /// Why it was taken out of the job (401/403), if it was.
    pub failed: Option<String>,
}

/// A job record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: u64,
    pub kind: JobKind,
    pub trigger: Trigger,
    pub state: JobState,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Not started before this time (the opening of a backup window).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub not_before: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub progress: JobProgress,
    #[serde(default)]
    pub error: Option<String>,
    /// Repositories left for the next window (`connection` + full name).
    #[serde(default)]
    pub deferred: Vec<JobTarget>,
}

impl Job {
    /// Whether the job has ended (done, failed, cancelled, interrupted).
    pub fn is_finished(&self) -> bool {
        self.state.is_finished()
    }

    /// The name of the job's state, as the API and metrics show it.
    pub fn state_name(&self) -> &'static str {
        self.state.as_str()
    }
}

/// What happened to one repository in a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    /// A new snapshot was written.
    Snapshot,
    /// Refs identical to the last snapshot: nothing stored.
    Unchanged,
    Failed,
    /// Listed but deliberately not backed up.
    Skipped,
    /// Left for the next run (window closed, job stopped).
    Deferred,
    /// A restore job wrote the repository.
    Restored,
    /// A snapshot holds the repository's git data but some parts could not be read
    /// (the reason lists them, one per line).
    Partial,
}

impl ResultStatus {
    /// The status's name, as stored and sent by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ResultStatus::Snapshot => "snapshot",
            ResultStatus::Unchanged => "unchanged",
            ResultStatus::Failed => "failed",
            ResultStatus::Skipped => "skipped",
            ResultStatus::Deferred => "deferred",
            ResultStatus::Restored => "restored",
            ResultStatus::Partial => "partial",
        }
    }
}

impl std::fmt::Display for ResultStatus {
    /// The name from [`ResultStatus::as_str`]; width and alignment apply.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl PartialEq<str> for ResultStatus {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ResultStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One repository's result within a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecordResult {
    pub job: u64,
    pub connection: String,
    pub repository: String,
    pub status: ResultStatus,
    #[serde(default)]
    pub snapshot: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub new_bytes: u64,
    #[serde(default)]
    pub fetched_bytes: u64,
    #[serde(default)]
    pub seconds: f64,
    #[serde(default)]
    pub attempts: u32,
    /// The operation's own report of the repository, when it has one (a restore into a
    /// provider: every part's outcome).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

fn result_key(job: u64, connection: &str, repo: &str) -> String {
    format!("{job:020}\u{0}{connection}\u{0}{repo}")
}

impl State {
    /// Creates a queued job with the next id.
    pub fn create_job(
        &self,
        kind: JobKind,
        trigger: Trigger,
        not_before: Option<OffsetDateTime>,
    ) -> Result<Job, StateError> {
        let e = self.db_err();
        let tx = self.db.begin_write().map_err(|x| e(x.into()))?;
        let job;
        {
            let mut meta = tx.open_table(META).map_err(|x| e(x.into()))?;
            let id = meta
                .get("next_job_id")
                .map_err(|x| e(x.into()))?
                .and_then(|v| v.value().parse::<u64>().ok())
                .unwrap_or(1);
            meta.insert("next_job_id", (id + 1).to_string().as_str())
                .map_err(|x| e(x.into()))?;
            job = Job {
                id,
                kind,
                trigger,
                state: JobState::Queued,
                created_at: OffsetDateTime::now_utc(),
                not_before,
                started_at: None,
                finished_at: None,
                progress: JobProgress::default(),
                error: None,
                deferred: Vec::new(),
            };
            let json = self.encode(&job)?;
            let mut t = tx.open_table(JOBS).map_err(|x| e(x.into()))?;
            t.insert(id, json.as_slice()).map_err(|x| e(x.into()))?;
        }
        tx.commit().map_err(|x| e(x.into()))?;
        Ok(job)
    }

    /// Stores a job's current record.
    pub fn put_job(&self, job: &Job) -> Result<(), StateError> {
        let e = self.db_err();
        let json = self.encode(job)?;
        let tx = self.db.begin_write().map_err(|x| e(x.into()))?;
        {
            let mut t = tx.open_table(JOBS).map_err(|x| e(x.into()))?;
            t.insert(job.id, json.as_slice()).map_err(|x| e(x.into()))?;
        }
        tx.commit().map_err(|x| e(x.into()))
    }

    pub fn job(&self, id: u64) -> Result<Job, StateError> {
        let e = self.db_err();
        let tx = self.db.begin_read().map_err(|x| e(x.into()))?;
        let t = tx.open_table(JOBS).map_err(|x| e(x.into()))?;
        let v = t
            .get(id)
            .map_err(|x| e(x.into()))?
            .ok_or(StateError::NoSuchJob(id))?;
        Self::decode("jobs", &id.to_string(), v.value())
    }

    /// The newest jobs first, at most `limit`.
    pub fn jobs(&self, limit: usize) -> Result<Vec<Job>, StateError> {
        let e = self.db_err();
        let tx = self.db.begin_read().map_err(|x| e(x.into()))?;
        let t = tx.open_table(JOBS).map_err(|x| e(x.into()))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(|x| e(x.into()))?.rev().take(limit) {
            let (k, v) = item.map_err(|x| e(x.into()))?;
            out.push(Self::decode("jobs", &k.value().to_string(), v.value())?);
        }
        Ok(out)
    }

    /// Marks every job still queued or running as interrupted (after a crash or
    /// a shutdown that cut them off). Returns their ids.
    pub fn interrupt_unfinished_jobs(&self, reason: &str) -> Result<Vec<u64>, StateError> {
        let unfinished: Vec<Job> = self
            .jobs(usize::MAX)?
            .into_iter()
            .filter(|j| !j.state.is_finished())
            .collect();
        let mut ids = Vec::new();
        for mut j in unfinished {
            j.state = JobState::Interrupted;
            j.finished_at = Some(OffsetDateTime::now_utc());
            j.error = Some(reason.to_string());
            j.progress.current.clear();
            self.put_job(&j)?;
            ids.push(j.id);
        }
        Ok(ids)
    }

    pub fn put_job_result(&self, r: &JobRecordResult) -> Result<(), StateError> {
        let e = self.db_err();
        let json = self.encode(r)?;
        let key = result_key(r.job, &r.connection, &r.repository);
        let tx = self.db.begin_write().map_err(|x| e(x.into()))?;
        {
            let mut t = tx.open_table(JOB_RESULTS).map_err(|x| e(x.into()))?;
            t.insert(key.as_str(), json.as_slice())
                .map_err(|x| e(x.into()))?;
        }
        tx.commit().map_err(|x| e(x.into()))
    }

    /// A job's per-repository results.
    pub fn job_results(&self, job: u64) -> Result<Vec<JobRecordResult>, StateError> {
        let e = self.db_err();
        let tx = self.db.begin_read().map_err(|x| e(x.into()))?;
        let t = tx.open_table(JOB_RESULTS).map_err(|x| e(x.into()))?;
        let lo = format!("{job:020}\u{0}");
        let hi = format!("{job:020}\u{1}");
        let mut out = Vec::new();
        for item in t.range(lo.as_str()..hi.as_str()).map_err(|x| e(x.into()))? {
            let (k, v) = item.map_err(|x| e(x.into()))?;
            out.push(Self::decode("job_results", k.value(), v.value())?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A result as today's code stores it in `job_results_v1` and the API sends it.
    const STORED: &str = r#"{"job":7,"connection":"acme","repository":"acme/api","status":"unchanged","snapshot":"2026-01-02T03-04-05Z-abc","reason":null,"new_bytes":0,"fetched_bytes":0,"seconds":0.25,"attempts":1}"#;

    #[test]
    fn stored_results_decode_and_encode_byte_identical() {
        let r: JobRecordResult = serde_json::from_str(STORED).expect("decode");
        assert_eq!(r.status, ResultStatus::Unchanged);
        assert_eq!(r.snapshot.as_deref(), Some("2026-01-02T03-04-05Z-abc"));
        assert_eq!(serde_json::to_string(&r).expect("encode"), STORED);
        // Every status keeps its stored name, and unknown names are refused.
        for s in [
            ResultStatus::Snapshot,
            ResultStatus::Unchanged,
            ResultStatus::Failed,
            ResultStatus::Skipped,
            ResultStatus::Deferred,
            ResultStatus::Restored,
        ] {
            let json = STORED.replace("\"unchanged\"", &format!("\"{}\"", s.as_str()));
            let r: JobRecordResult = serde_json::from_str(&json).expect("decode");
            assert_eq!(r.status, s);
            assert_eq!(r.status, s.as_str(), "compares with its name");
            assert_eq!(serde_json::to_string(&r).expect("encode"), json);
        }
        let bad = STORED.replace("\"unchanged\"", "\"exploded\"");
        assert!(serde_json::from_str::<JobRecordResult>(&bad).is_err());
    }

    #[test]
    fn statuses_print_their_names_with_padding() {
        assert_eq!(ResultStatus::Failed.to_string(), "failed");
        assert_eq!(format!("[{:<10}]", ResultStatus::Snapshot), "[snapshot  ]");
        assert_eq!(format!("[{:<11}]", JobState::Partial), "[partial    ]");
    }

    #[test]
    fn job_state_names_are_their_serde_names() {
        for s in [
            JobState::Queued,
            JobState::Running,
            JobState::Succeeded,
            JobState::Partial,
            JobState::Failed,
            JobState::Cancelled,
            JobState::Interrupted,
        ] {
            let json = serde_json::to_value(s).expect("encode");
            assert_eq!(json.as_str(), Some(s.as_str()));
            assert_eq!(s.to_string(), s.as_str());
        }
    }

    #[test]
    fn kinds_describe_themselves_as_the_cli_always_did() {
        let target = |c: &str, only: &[&str]| JobTarget {
            connection: c.into(),
            only: only.iter().map(|s| s.to_string()).collect(),
        };
        let plan = JobKind::Backup {
            plan: Some("nightly".into()),
            targets: vec![target("acme", &[])],
        };
        assert_eq!(plan.describe(), "plan nightly");
        let adhoc = JobKind::Backup {
            plan: None,
            targets: vec![target("acme", &[]), target("dc", &["P/a", "P/b"])],
        };
        assert_eq!(adhoc.describe(), "connection acme P/a,P/b");
        let restore = JobKind::Restore {
            repository: "acme/api".into(),
            connection: None,
            snapshot: None,
            at: None,
            to: "/srv/api.git".into(),
            force: false,
        };
        assert_eq!(restore.describe(), "restore acme/api to /srv/api.git");
    }
}
