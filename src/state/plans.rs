//! Backup plans: which connections and repositories, on which schedule, within
//! which window. The user-editable part ([`PlanSpec`]) is stored apart from what
//! the daemon maintains ([`PlanStatus`]) so an edit never clobbers run history.

use super::{State, StateError, PLANS};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

fn yes() -> bool {
    true
}

fn all() -> Vec<String> {
    vec!["*".to_string()]
}

/// What a user writes to create or replace a plan (API JSON, CLI flags).
/// Unknown fields are refused so a typo never silently changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    pub name: String,
    /// Connections whose repositories the plan backs up.
    pub connections: Vec<String>,
    /// Repository full names or glob patterns (`*`, `?`), e.g. `acme/api-*`;
    /// `["*"]` (the default) is every repository.
    #[serde(default = "all")]
    pub include: Vec<String>,
    /// Patterns removed from what `include` selected.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Back up repositories that appear after the plan's first run.
    #[serde(default = "yes")]
    pub auto_add: bool,
    /// 5-field cron line or `@hourly`/`@daily`/`@weekly`/...; none = run only on demand.
    #[serde(default)]
    pub schedule: Option<String>,
    /// IANA time zone of the schedule and window; none = the server's local zone.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Work only within this local time window, e.g. `01:00-06:00`.
    #[serde(default)]
    pub window: Option<String>,
    /// Repositories backed up at once; none = the daemon's default.
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// The plan may never be used to write back to the provider.
    #[serde(default)]
    pub read_only: bool,
    /// A disabled plan keeps its settings but does not run on its schedule.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Run once at start when a scheduled time passed while the daemon was down.
    #[serde(default = "yes")]
    pub run_missed: bool,
    /// Additional credentials of the plan's connections to spread requests over
    /// (`["*"]` = every enabled one, or ids like `c1`); none by default.
    #[serde(default)]
    pub additional_credentials: Vec<String>,
    /// How often the plan reads repositories' metadata (pull requests, issues,
    /// settings): `30m`, `6h`, `1d`, ... (between runs of the plan, metadata read less
    /// than that ago is carried forward), or `never`; every run when unset.
    #[serde(default)]
    pub metadata_every: Option<String>,
    /// The snapshots kept after each successful run, per repository the run backed up
    /// (restic's rules); none: every snapshot is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionPolicy>,
    /// How long after a repository disappeared from Bitbucket `retention` applies to
    /// it (`90d`, `1y`); none: never — a gone repository keeps all its snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_deleted_for: Option<String>,
    /// Check the archive after a successful run when the last check is this long ago
    /// (`7d`, `1d`); none: the plan runs no check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_every: Option<String>,
    /// With `check_every`: the share of blobs read back and re-hashed (percent, in
    /// 1 to 100; 100 also walks every snapshot's refs); none: the structure only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_subset: Option<u32>,
    /// A saved copy target (`archive copy --save-as NAME`) the archive is copied to
    /// after each run that backed something up (succeeded or partial; a second copy,
    /// the 3-2-1 rule); none: no copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_to: Option<String>,
}

/// How many snapshots of each kind to keep after a run (restic's rules; applied by
/// `engine::retention`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,
    /// Seconds before the newest snapshot within which every snapshot is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_secs: Option<u64>,
}

/// What the daemon maintains about a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanStatus {
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// The last scheduled time handled (run, or skipped because a run was active).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_fire: Option<OffsetDateTime>,
    /// With `auto_add` off: the repositories (`connection/full_name`) the plan
    /// adopted on its first run.
    #[serde(default)]
    pub members: Option<Vec<String>>,
    #[serde(default)]
    pub last_job: Option<u64>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_success: Option<OffsetDateTime>,
    /// When the plan's scheduled check last ran (`check_every`).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_check: Option<OffsetDateTime>,
}

/// A stored plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub spec: PlanSpec,
    pub status: PlanStatus,
}

impl State {
    /// Adds a new plan; refuses an existing name.
    pub fn add_plan(&self, plan: &Plan) -> Result<(), StateError> {
        let e = self.db_err();
        let json = self.encode(plan)?;
        let tx = self.db.begin_write().map_err(|x| e(x.into()))?;
        {
            let mut t = tx.open_table(PLANS).map_err(|x| e(x.into()))?;
            let name = plan.spec.name.as_str();
            if t.get(name).map_err(|x| e(x.into()))?.is_some() {
                return Err(StateError::PlanExists(name.to_string()));
            }
            t.insert(name, json.as_slice()).map_err(|x| e(x.into()))?;
        }
        tx.commit().map_err(|x| e(x.into()))
    }

    /// Changes a stored plan in one transaction; `f` sees the current record.
    pub fn update_plan<R>(
        &self,
        name: &str,
        f: impl FnOnce(&mut Plan) -> R,
    ) -> Result<R, StateError> {
        let e = self.db_err();
        let tx = self.db.begin_write().map_err(|x| e(x.into()))?;
        let out;
        {
            let mut t = tx.open_table(PLANS).map_err(|x| e(x.into()))?;
            let bytes = t
                .get(name)
                .map_err(|x| e(x.into()))?
                .ok_or_else(|| StateError::NoSuchPlan(name.to_string()))?
                .value()
                .to_vec();
            let mut plan: Plan = Self::decode("plans", name, &bytes)?;
            out = f(&mut plan);
            let json = self.encode(&plan)?;
            t.insert(name, json.as_slice()).map_err(|x| e(x.into()))?;
        }
        tx.commit().map_err(|x| e(x.into()))?;
        Ok(out)
    }

    pub fn plan(&self, name: &str) -> Result<Plan, StateError> {
        let e = self.db_err();
        let tx = self.db.begin_read().map_err(|x| e(x.into()))?;
        let t = tx.open_table(PLANS).map_err(|x| e(x.into()))?;
        let v = t
            .get(name)
            .map_err(|x| e(x.into()))?
            .ok_or_else(|| StateError::NoSuchPlan(name.to_string()))?;
        Self::decode("plans", name, v.value())
    }

    /// Every plan, by name.
    pub fn plans(&self) -> Result<Vec<Plan>, StateError> {
        self.scan(PLANS, "plans")
    }

    pub fn remove_plan(&self, name: &str) -> Result<(), StateError> {
        let e = self.db_err();
        let tx = self.db.begin_write().map_err(|x| e(x.into()))?;
        {
            let mut t = tx.open_table(PLANS).map_err(|x| e(x.into()))?;
            if t.remove(name).map_err(|x| e(x.into()))?.is_none() {
                return Err(StateError::NoSuchPlan(name.to_string()));
            }
        }
        tx.commit().map_err(|x| e(x.into()))
    }
}
