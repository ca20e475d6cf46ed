//! Persistent state in redb: connections, their sealed credentials, the
//! repositories seen, backup plans, and jobs with their per-repository results. Tables are versioned (`name_v1`) and the schema version is
//! kept in the `meta` table; opening a database of a newer schema is refused and
//! older ones are migrated in [`State::open`].
//!
//! redb holds an exclusive lock on the file: a second process opening the same
//! data dir gets [`StateError::Locked`].

mod audit;
mod checks;
mod connection_edit;
mod restored;
mod scoped_credentials;
mod settings;
mod tls_trust;
mod webhooks;

pub use audit::{Actor, AuditEntry};
pub use checks::ConnectionCheck;
pub use restored::{RestoreDestination, RestoredItem};
pub use scoped_credentials::{CredentialScope, ScopedCredential};
pub use tls_trust::ConnectionTls;

use crate::vault::CredentialKind;
use redb::{Database, ReadableTable, TableDefinition, TableHandle};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// Current schema version.
pub const SCHEMA_VERSION: u32 = 2;

mod jobs;
mod plans;
pub use jobs::{
    CredentialCounters, Job, JobKind, JobProgress, JobRecordResult, JobState, JobTarget,
    RestoreTarget, ResultStatus, Trigger,
};
pub use plans::{Plan, PlanSpec, PlanStatus, RetentionPolicy};

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const CONNECTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("connections_v1");
const CREDENTIALS: TableDefinition<&str, &[u8]> = TableDefinition::new("credentials_v1");
const REPOSITORIES: TableDefinition<&str, &[u8]> = TableDefinition::new("repositories_v1");
// Schema 2.
const PLANS: TableDefinition<&str, &[u8]> = TableDefinition::new("plans_v1");
const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs_v1");
const JOB_RESULTS: TableDefinition<&str, &[u8]> = TableDefinition::new("job_results_v1");

/// What can go wrong with the state database.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the data dir's database {path} is in use by another reposafe process (a running `reposafe serve`?); stop it or use its API")]
    Locked { path: PathBuf },
    #[error("state database {path}: {reason}")]
    Db { path: PathBuf, reason: String },
    #[error("state database {path} has schema {found}, newer than this reposafe ({SCHEMA_VERSION}); upgrade reposafe")]
    NewerSchema { path: PathBuf, found: u32 },
    #[error("connection {0:?} does not exist")]
    NoSuchConnection(String),
    #[error("a connection named {0:?} already exists")]
    ConnectionExists(String),
    #[error("plan {0:?} does not exist")]
    NoSuchPlan(String),
    #[error("a plan named {0:?} already exists")]
    PlanExists(String),
    #[error("job {0} does not exist")]
    NoSuchJob(u64),
    #[error("stored record {key:?} in {table} is unreadable: {reason}")]
    Corrupt {
        table: &'static str,
        key: String,
        reason: String,
    },
}

/// A connection to one provider account/workspace. Holds no secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// User-chosen name, e.g. `acme`; also the prefix of repository names in the CLI.
    pub name: String,
    /// Provider id, e.g. `bitbucket-cloud`.
    pub provider: String,
    /// Provider settings (workspace, base URLs...).
    pub settings: BTreeMap<String, String>,
    pub credential_kind: CredentialKind,
    /// E-mail / user name / OAuth key of the credential; not secret.
    pub credential_identity: Option<String>,
    /// Never used to write back to the provider (schema 2; absent means false).
    #[serde(default)]
    pub read_only: bool,
    /// Marked for restore (`--allow-restore`): the only kind of connection a restore
    /// may write to. Absent means false.
    #[serde(default)]
    pub allow_restore: bool,
    /// Request budget of each principal, e.g. `60/min` (none: only 429s slow down).
    #[serde(default)]
    pub rate_limit: Option<String>,
    /// Who the provider counts the primary credential's requests against.
    #[serde(default)]
    pub principal: Option<String>,
    /// Immutable id, created once when the connection is added; keys its repositories'
    /// snapshot histories and mirrors, so a name reused later starts new ones. Records
    /// stored before ids existed read as `id = name`, which keeps their histories.
    #[serde(default)]
    pub id: String,
    /// The origins (`https://host[:port]`) the credential may be sent to, fixed
    /// when the connection is added; changing them needs the secret re-entered.
    /// Empty for connections stored before they were recorded: the engine
    /// derives them from the settings and built-in defaults, never from a
    /// plugin's defaults (`providers::ProviderInfo::allowed_origins`).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl Connection {
    /// A fresh random connection id: 16 hex digits.
    pub fn new_id() -> String {
        format!("{:016x}", rand::random::<u64>())
    }

    /// A record read from the database, with `id = name` if it predates ids.
    fn loaded(mut self) -> Connection {
        if self.id.is_empty() {
            self.id = self.name.clone();
        }
        self
    }
}

/// A repository seen by a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoRecord {
    pub connection: String,
    pub repo_id: String,
    pub full_name: String,
    pub clone_url: String,
    pub main_branch: Option<String>,
    pub is_private: bool,
    pub size: Option<u64>,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// The last snapshot taken, if any.
    pub last_snapshot: Option<String>,
    /// When its metadata was last read (a plan's `metadata_every` counts from it).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub metadata_read_at: Option<OffsetDateTime>,
}

/// The open state database.
pub struct State {
    db: Database,
    path: PathBuf,
}

fn repo_key(connection: &str, repo_id: &str) -> String {
    format!("{connection}\u{0}{repo_id}")
}

impl State {
    /// Opens (or creates) `<data_dir>/state.redb`.
    pub fn open(data_dir: &Path) -> Result<State, StateError> {
        let path = data_dir.join("state.redb");
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StateError::Locked { path: path.clone() },
            other => StateError::Db {
                path: path.clone(),
                reason: other.to_string(),
            },
        })?;
        let state = State { db, path };
        state.migrate()?;
        Ok(state)
    }

    fn db_err(&self) -> impl Fn(redb::Error) -> StateError + '_ {
        |e| StateError::Db {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    /// Whether the database already has this schema version and every table (the usual
    /// open): then opening writes nothing (a write transaction costs a sync of the file).
    fn is_current(&self) -> bool {
        let Ok(tx) = self.db.begin_read() else {
            return false;
        };
        let version = tx.open_table(META).ok().and_then(|meta| {
            meta.get("schema_version")
                .ok()
                .flatten()
                .map(|v| v.value().to_string())
        });
        if version != Some(SCHEMA_VERSION.to_string()) {
            return false;
        }
        let Ok(tables) = tx.list_tables() else {
            return false;
        };
        let present: std::collections::BTreeSet<String> =
            tables.map(|t| t.name().to_string()).collect();
        [
            CONNECTIONS.name(),
            CREDENTIALS.name(),
            REPOSITORIES.name(),
            PLANS.name(),
            JOBS.name(),
            JOB_RESULTS.name(),
            scoped_credentials::SCOPED_CREDENTIALS.name(),
            tls_trust::CONNECTION_TLS.name(),
            restored::RESTORED_ITEMS.name(),
            audit::AUDIT.name(),
            webhooks::WEBHOOK_SECRETS.name(),
            checks::CONNECTION_CHECKS.name(),
        ]
        .iter()
        .all(|name| present.contains(*name))
    }

    fn migrate(&self) -> Result<(), StateError> {
        if self.is_current() {
            return Ok(());
        }
        let e = self.db_err();
        let tx = self.db.begin_write().map_err(|x| e(x.into()))?;
        {
            let mut meta = tx.open_table(META).map_err(|x| e(x.into()))?;
            let found = meta
                .get("schema_version")
                .map_err(|x| e(x.into()))?
                .map(|v| v.value().parse::<u32>().unwrap_or(0));
            match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StateError::NewerSchema {
                        path: self.path.clone(),
                        found: v,
                    })
                }
                // 1 -> 2 added the plans, jobs and job results tables (created
                // below) and `Connection::read_only`, which defaults to false when
                // absent. Later versions add `Some(v) if v < N` steps here.
                Some(v) if v < 2 => tracing::info!("state schema {v} -> {SCHEMA_VERSION}"),
                _ => {}
            }
            meta.insert("schema_version", SCHEMA_VERSION.to_string().as_str())
                .map_err(|x| e(x.into()))?;
            tx.open_table(CONNECTIONS).map_err(|x| e(x.into()))?;
            tx.open_table(CREDENTIALS).map_err(|x| e(x.into()))?;
            tx.open_table(REPOSITORIES).map_err(|x| e(x.into()))?;
            tx.open_table(PLANS).map_err(|x| e(x.into()))?;
            tx.open_table(JOBS).map_err(|x| e(x.into()))?;
            tx.open_table(JOB_RESULTS).map_err(|x| e(x.into()))?;
            tx.open_table(scoped_credentials::SCOPED_CREDENTIALS)
                .map_err(|x| e(x.into()))?;
            tx.open_table(tls_trust::CONNECTION_TLS)
                .map_err(|x| e(x.into()))?;
            tx.open_table(restored::RESTORED_ITEMS)
                .map_err(|x| e(x.into()))?;
            tx.open_table(audit::AUDIT).map_err(|x| e(x.into()))?;
            tx.open_table(webhooks::WEBHOOK_SECRETS)
                .map_err(|x| e(x.into()))?;
            tx.open_table(checks::CONNECTION_CHECKS)
                .map_err(|x| e(x.into()))?;
        }
        tx.commit().map_err(|x| e(x.into()))
    }

    fn encode<T: Serialize>(&self, v: &T) -> Result<Vec<u8>, StateError> {
        serde_json::to_vec(v).map_err(|x| StateError::Db {
            path: self.path.clone(),
            reason: x.to_string(),
        })
    }

    fn decode<T: DeserializeOwned>(
        table: &'static str,
        key: &str,
        bytes: &[u8],
    ) -> Result<T, StateError> {
        serde_json::from_slice(bytes).map_err(|err| StateError::Corrupt {
            table,
            key: key.to_string(),
            reason: err.to_string(),
        })
    }

    /// Adds a connection and its sealed credential in one transaction.
    pub fn add_connection(&self, conn: &Connection, sealed: &[u8]) -> Result<(), StateError> {
        let e = self.db_err();
        let tx = self.db.begin_write().map_err(|x| e(x.into()))?;
        {
            let mut conns = tx.open_table(CONNECTIONS).map_err(|x| e(x.into()))?;
            if conns
                .get(conn.name.as_str())
                .map_err(|x| e(x.into()))?
                .is_some()
            {
                return Err(StateError::ConnectionExists(conn.name.clone()));
            }
            let json = serde_json::to_vec(conn).map_err(|x| StateError::Db {
                path: self.path.clone(),
                reason: x.to_string(),
            })?;
            conns
                .insert(conn.name.as_str(), json.as_slice())
                .map_err(|x| e(x.into()))?;
            let mut creds = tx.open_table(CREDENTIALS).map_err(|x| e(x.into()))?;
            creds
                .insert(conn.name.as_str(), sealed)
                .map_err(|x| e(x.into()))?;
        }
        tx.commit().map_err(|x| e(x.into()))
    }

    /// Removes a connection and its credential (archived snapshots stay).
    pub fn remove_connection(&self, name: &str) -> Result<(), StateError> {
        let e = self.db_err();
        let tx = self.db.begin_write().map_err(|x| e(x.into()))?;
        {
            let mut conns = tx.open_table(CONNECTIONS).map_err(|x| e(x.into()))?;
            if conns.remove(name).map_err(|x| e(x.into()))?.is_none() {
                return Err(StateError::NoSuchConnection(name.to_string()));
            }
            let mut creds = tx.open_table(CREDENTIALS).map_err(|x| e(x.into()))?;
            creds.remove(name).map_err(|x| e(x.into()))?;
            self.remove_extras(&tx, name)?;
            self.remove_webhook_secret(&tx, name)?;
            self.remove_connection_check(&tx, name)?;
        }
        tx.commit().map_err(|x| e(x.into()))
    }

    /// One connection by name.
    pub fn connection(&self, name: &str) -> Result<Connection, StateError> {
        let e = self.db_err();
        let tx = self.db.begin_read().map_err(|x| e(x.into()))?;
        let t = tx.open_table(CONNECTIONS).map_err(|x| e(x.into()))?;
        let v = t
            .get(name)
            .map_err(|x| e(x.into()))?
            .ok_or_else(|| StateError::NoSuchConnection(name.to_string()))?;
        Self::decode::<Connection>("connections", name, v.value()).map(Connection::loaded)
    }

    /// Records the origins a connection's credential may go to, for a connection
    /// stored before they were recorded (its `allowed_origins` empty); origins
    /// already recorded are never replaced. `id`: the connection's id, so that
    /// another connection stored under the same name is never touched
    /// ([`StateError::NoSuchConnection`]). Returns the connection's origins as stored.
    pub fn save_connection_origins(
        &self,
        name: &str,
        id: &str,
        origins: &[String],
    ) -> Result<Vec<String>, StateError> {
        let e = self.db_err();
        let tx = self.db.begin_write().map_err(|x| e(x.into()))?;
        let stored = {
            let mut conns = tx.open_table(CONNECTIONS).map_err(|x| e(x.into()))?;
            let found = match conns.get(name).map_err(|x| e(x.into()))? {
                Some(v) => Some(Self::decode::<Connection>("connections", name, v.value())?),
                None => None,
            };
            let mut conn = match found {
                Some(c) if c.clone().loaded().id == id => c,
                _ => return Err(StateError::NoSuchConnection(name.to_string())),
            };
            if !conn.allowed_origins.is_empty() || origins.is_empty() {
                return Ok(conn.allowed_origins);
            }
            conn.allowed_origins = origins.to_vec();
            let json = serde_json::to_vec(&conn).map_err(|x| self.json_err(x))?;
            conns
                .insert(name, json.as_slice())
                .map_err(|x| e(x.into()))?;
            conn.allowed_origins
        };
        tx.commit().map_err(|x| e(x.into()))?;
        Ok(stored)
    }

    /// Every connection, by name.
    pub fn connections(&self) -> Result<Vec<Connection>, StateError> {
        let all: Vec<Connection> = self.scan(CONNECTIONS, "connections")?;
        Ok(all.into_iter().map(Connection::loaded).collect())
    }

    /// The sealed credential of a connection.
    pub fn sealed_credential(&self, name: &str) -> Result<Vec<u8>, StateError> {
        let e = self.db_err();
        let tx = self.db.begin_read().map_err(|x| e(x.into()))?;
        let t = tx.open_table(CREDENTIALS).map_err(|x| e(x.into()))?;
        let v = t
            .get(name)
            .map_err(|x| e(x.into()))?
            .ok_or_else(|| StateError::NoSuchConnection(name.to_string()))?;
        Ok(v.value().to_vec())
    }

    fn scan<T: DeserializeOwned>(
        &self,
        def: TableDefinition<&str, &[u8]>,
        name: &'static str,
    ) -> Result<Vec<T>, StateError> {
        let e = self.db_err();
        let tx = self.db.begin_read().map_err(|x| e(x.into()))?;
        let t = tx.open_table(def).map_err(|x| e(x.into()))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(|x| e(x.into()))? {
            let (k, v) = item.map_err(|x| e(x.into()))?;
            out.push(Self::decode(name, k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Records repositories seen by a backup (insert or update, keeping `first_seen`).
    pub fn upsert_repositories(&self, repos: &[RepoRecord]) -> Result<(), StateError> {
        let e = self.db_err();
        let tx = self.db.begin_write().map_err(|x| e(x.into()))?;
        {
            let mut t = tx.open_table(REPOSITORIES).map_err(|x| e(x.into()))?;
            for r in repos {
                let key = repo_key(&r.connection, &r.repo_id);
                let mut rec = r.clone();
                let existing = t
                    .get(key.as_str())
                    .map_err(|x| e(x.into()))?
                    .map(|v| v.value().to_vec());
                if let Some(old) = existing {
                    if let Ok(old) = serde_json::from_slice::<RepoRecord>(&old) {
                        rec.first_seen = old.first_seen;
                        if rec.last_snapshot.is_none() {
                            rec.last_snapshot = old.last_snapshot;
                        }
                        if rec.metadata_read_at.is_none() {
                            rec.metadata_read_at = old.metadata_read_at;
                        }
                    }
                }
                let json = serde_json::to_vec(&rec).map_err(|x| StateError::Db {
                    path: self.path.clone(),
                    reason: x.to_string(),
                })?;
                t.insert(key.as_str(), json.as_slice())
                    .map_err(|x| e(x.into()))?;
            }
        }
        tx.commit().map_err(|x| e(x.into()))
    }

    /// The repository `repo_id` of `connection` as last listed, if it was.
    pub fn repository(
        &self,
        connection: &str,
        repo_id: &str,
    ) -> Result<Option<RepoRecord>, StateError> {
        let e = self.db_err();
        let key = repo_key(connection, repo_id);
        let tx = self.db.begin_read().map_err(|x| e(x.into()))?;
        let t = tx.open_table(REPOSITORIES).map_err(|x| e(x.into()))?;
        match t.get(key.as_str()).map_err(|x| e(x.into()))? {
            Some(v) => Self::decode("repositories", &key, v.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Every repository seen, optionally of one connection.
    pub fn repositories(&self, connection: Option<&str>) -> Result<Vec<RepoRecord>, StateError> {
        let all: Vec<RepoRecord> = self.scan(REPOSITORIES, "repositories")?;
        Ok(all
            .into_iter()
            .filter(|r| connection.is_none_or(|c| r.connection == c))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(name: &str) -> Connection {
        Connection {
            name: name.into(),
            provider: "bitbucket-cloud".into(),
            settings: BTreeMap::from([("workspace".to_string(), "acme".to_string())]),
            credential_kind: CredentialKind::ApiToken,
            credential_identity: Some("me@acme.test".into()),
            read_only: false,
            allow_restore: false,
            rate_limit: None,
            principal: None,
            id: "0123456789abcdef".into(),
            allowed_origins: Vec::new(),
            created_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn connections_round_trip_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = State::open(dir.path()).unwrap();
            s.add_connection(&conn("acme"), b"sealed").unwrap();
            assert!(matches!(
                s.add_connection(&conn("acme"), b"x").unwrap_err(),
                StateError::ConnectionExists(_)
            ));
        }
        let s = State::open(dir.path()).unwrap();
        assert_eq!(s.connection("acme").unwrap(), conn("acme"));
        assert_eq!(s.sealed_credential("acme").unwrap(), b"sealed");
        assert_eq!(s.connections().unwrap().len(), 1);
        s.remove_connection("acme").unwrap();
        assert!(matches!(
            s.connection("acme").unwrap_err(),
            StateError::NoSuchConnection(_)
        ));
    }

    #[test]
    fn origins_of_an_old_connection_are_saved_once_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(dir.path()).unwrap();
        s.add_connection(&conn("acme"), b"sealed").unwrap();
        let derived = vec!["https://api.bitbucket.org".to_string()];
        let id = conn("acme").id;
        assert_eq!(
            s.save_connection_origins("acme", &id, &derived).unwrap(),
            derived
        );
        assert_eq!(s.connection("acme").unwrap().allowed_origins, derived);
        // Recorded origins stay: a later call cannot widen or change them.
        let other = vec!["https://evil.example".to_string()];
        assert_eq!(
            s.save_connection_origins("acme", &id, &other).unwrap(),
            derived
        );
        assert_eq!(s.connection("acme").unwrap().allowed_origins, derived);
        assert_eq!(s.sealed_credential("acme").unwrap(), b"sealed");
        // Neither a missing connection nor another one under the same name.
        for (name, id) in [("nope", id.as_str()), ("acme", "another-id")] {
            assert!(matches!(
                s.save_connection_origins(name, id, &derived).unwrap_err(),
                StateError::NoSuchConnection(_)
            ));
        }
    }

    #[test]
    fn second_open_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let _s = State::open(dir.path()).unwrap();
        let err = State::open(dir.path())
            .err()
            .expect("second open must fail");
        assert!(err.to_string().contains("in use"), "{err}");
    }

    #[test]
    fn repositories_keep_first_seen() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(dir.path()).unwrap();
        let mut r = RepoRecord {
            connection: "acme".into(),
            repo_id: "{1}".into(),
            full_name: "acme/api".into(),
            clone_url: "https://bitbucket.org/acme/api.git".into(),
            main_branch: Some("main".into()),
            is_private: true,
            size: None,
            first_seen: OffsetDateTime::UNIX_EPOCH,
            last_seen: OffsetDateTime::UNIX_EPOCH,
            last_snapshot: None,
            metadata_read_at: None,
        };
        s.upsert_repositories(std::slice::from_ref(&r)).unwrap();
        r.first_seen = OffsetDateTime::now_utc();
        r.last_seen = r.first_seen;
        s.upsert_repositories(std::slice::from_ref(&r)).unwrap();
        let got = s.repositories(Some("acme")).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].first_seen, OffsetDateTime::UNIX_EPOCH);
        assert_eq!(got[0].last_seen, r.last_seen);
        assert!(s.repositories(Some("other")).unwrap().is_empty());
    }
}

#[cfg(test)]
mod schema_tests {
    use super::*;

    /// A database written by the first release (schema 1) opens as schema 2: the
    /// new tables exist and old connection records read with `read_only = false`.
    #[test]
    fn schema_1_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::create(dir.path().join("state.redb")).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let mut meta = tx.open_table(META).unwrap();
                meta.insert("schema_version", "1").unwrap();
                let mut conns = tx.open_table(CONNECTIONS).unwrap();
                let v1 = br#"{"name":"acme","provider":"bitbucket-cloud","settings":{},"credential_kind":"api-token","credential_identity":"me@acme.test","created_at":"2026-01-01T00:00:00Z"}"#;
                conns.insert("acme", v1.as_slice()).unwrap();
                tx.open_table(CREDENTIALS)
                    .unwrap()
                    .insert("acme", b"x".as_slice())
                    .unwrap();
                tx.open_table(REPOSITORIES).unwrap();
            }
            tx.commit().unwrap();
        }
        let s = State::open(dir.path()).unwrap();
        let c = s.connection("acme").unwrap();
        assert!(!c.read_only);
        // Stored before connection ids: its id is its name, so its histories stay.
        assert_eq!(c.id, "acme");
        assert_eq!(s.connections().unwrap()[0].id, "acme");
        assert!(s.plans().unwrap().is_empty());
        let job = s
            .create_job(
                JobKind::Backup {
                    plan: None,
                    targets: vec![JobTarget {
                        connection: "acme".into(),
                        only: vec![],
                    }],
                },
                Trigger::Manual,
                None,
            )
            .unwrap();
        assert_eq!(job.id, 1);
        let tx = s.db.begin_read().unwrap();
        let meta = tx.open_table(META).unwrap();
        assert_eq!(meta.get("schema_version").unwrap().unwrap().value(), "2");
    }

    #[test]
    fn jobs_ids_grow_and_unfinished_ones_become_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(dir.path()).unwrap();
        let kind = JobKind::Backup {
            plan: None,
            targets: vec![],
        };
        let a = s.create_job(kind.clone(), Trigger::Manual, None).unwrap();
        let mut b = s.create_job(kind, Trigger::Schedule, None).unwrap();
        assert_eq!((a.id, b.id), (1, 2));
        b.state = JobState::Succeeded;
        s.put_job(&b).unwrap();
        s.put_job_result(&JobRecordResult {
            job: 2,
            connection: "acme".into(),
            repository: "acme/api".into(),
            status: ResultStatus::Snapshot,
            snapshot: Some("x".into()),
            reason: None,
            new_bytes: 1,
            fetched_bytes: 1,
            seconds: 0.1,
            attempts: 1,
            detail: None,
        })
        .unwrap();
        assert_eq!(s.interrupt_unfinished_jobs("stopped").unwrap(), vec![1]);
        assert_eq!(s.job(1).unwrap().state, JobState::Interrupted);
        assert_eq!(s.job(2).unwrap().state, JobState::Succeeded);
        assert_eq!(s.jobs(10).unwrap()[0].id, 2, "newest first");
        assert_eq!(s.job_results(2).unwrap().len(), 1);
        assert!(s.job_results(1).unwrap().is_empty());
    }
}
