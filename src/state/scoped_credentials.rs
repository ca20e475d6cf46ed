//! A connection's *scoped* credentials (`connection_credentials_v1`), sealed by the
//! vault: one per Data Center project (used for that project's listing and git
//! fetches instead of the default) and the additional credentials plans may enable
//! ([`CredentialScope`]). Key: `<connection> NUL <scope id>`; value: JSON
//! [`ScopedCredential`]. The table is created by `State::migrate` and emptied of a
//! connection's rows when it is removed.

use super::{State, StateError};
use crate::vault::CredentialKind;
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub(super) const SCOPED_CREDENTIALS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("connection_credentials_v1");
/// What a scoped credential is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum CredentialScope {
    /// One project (Data Center project key, `~user` for a personal project), stored
    /// upper-case: keys are case-insensitive on the server.
    Project { key: String },
    /// An additional credential (`c1`, `c2`, ...) that plans may enable to spread
    /// requests over more accounts' rate-limit budgets.
    Additional { id: String },
}

impl CredentialScope {
    /// A project scope with its key normalised.
    pub fn project(key: &str) -> CredentialScope {
        CredentialScope::Project {
            key: key.trim().to_ascii_uppercase(),
        }
    }

    /// The credential's id in listings and the API: `project:KEY` or `c1`.
    pub fn id(&self) -> String {
        match self {
            CredentialScope::Project { key } => format!("project:{key}"),
            CredentialScope::Additional { id } => id.clone(),
        }
    }

    /// Whether this scope covers the provider scope (project) `key`.
    pub fn covers_project(&self, key: &str) -> bool {
        match self {
            CredentialScope::Project { key: k } => k.eq_ignore_ascii_case(key.trim()),
            CredentialScope::Additional { .. } => false,
        }
    }
}

impl std::fmt::Display for CredentialScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialScope::Project { key } => write!(f, "project {key}"),
            CredentialScope::Additional { id } => write!(f, "additional credential {id}"),
        }
    }
}

/// A credential of a connection used for one scope instead of the default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopedCredential {
    pub connection: String,
    pub scope: CredentialScope,
    pub kind: CredentialKind,
    /// User name of a `basic` credential; not secret.
    pub identity: Option<String>,
    /// The vault-sealed credential (base64 in the stored JSON).
    #[serde(with = "sealed_b64")]
    pub sealed: Vec<u8>,
    #[serde(with = "time::serde::rfc3339")]
    pub added_at: OffsetDateTime,
    /// A name the user gave it.
    #[serde(default)]
    pub label: Option<String>,
    /// Who the provider counts its requests against (additional credentials).
    #[serde(default)]
    pub principal: Option<String>,
    /// A disabled credential is kept but never used.
    #[serde(default)]
    pub disabled: bool,
}

mod sealed_b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

fn key(connection: &str, scope: &CredentialScope) -> String {
    format!("{connection}\u{0}{}", scope.id())
}

impl State {
    /// Deletes a connection's scoped credentials and TLS trust (inside the caller's
    /// transaction).
    pub(super) fn remove_extras(
        &self,
        tx: &WriteTransaction,
        connection: &str,
    ) -> Result<(), StateError> {
        let e = self.db_err();
        let mut t = tx.open_table(SCOPED_CREDENTIALS).map_err(|x| e(x.into()))?;
        let lo = format!("{connection}\u{0}");
        let hi = format!("{connection}\u{1}");
        let keys: Vec<String> = t
            .range(lo.as_str()..hi.as_str())
            .map_err(|x| e(x.into()))?
            .map(|r| r.map(|(k, _)| k.value().to_string()))
            .collect::<Result<_, _>>()
            .map_err(|x| e(x.into()))?;
        for k in keys {
            t.remove(k.as_str()).map_err(|x| e(x.into()))?;
        }
        self.remove_connection_tls(tx, connection)
    }

    pub(super) fn json_err(&self, e: serde_json::Error) -> StateError {
        StateError::Db {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    /// Adds or replaces the credential of one scope of an existing connection.
    pub fn put_scoped_credential(&self, cred: &ScopedCredential) -> Result<(), StateError> {
        let e = self.db_err();
        let json = serde_json::to_vec(cred).map_err(|x| self.json_err(x))?;
        let tx = self.db.begin_write().map_err(|x| e(x.into()))?;
        {
            let conns = tx.open_table(super::CONNECTIONS).map_err(|x| e(x.into()))?;
            if conns
                .get(cred.connection.as_str())
                .map_err(|x| e(x.into()))?
                .is_none()
            {
                return Err(StateError::NoSuchConnection(cred.connection.clone()));
            }
            let mut t = tx.open_table(SCOPED_CREDENTIALS).map_err(|x| e(x.into()))?;
            t.insert(key(&cred.connection, &cred.scope).as_str(), json.as_slice())
                .map_err(|x| e(x.into()))?;
        }
        tx.commit().map_err(|x| e(x.into()))
    }

    /// The scoped credentials of a connection, ordered by scope.
    pub fn scoped_credentials(
        &self,
        connection: &str,
    ) -> Result<Vec<ScopedCredential>, StateError> {
        let e = self.db_err();
        let tx = self.db.begin_read().map_err(|x| e(x.into()))?;
        let t = tx.open_table(SCOPED_CREDENTIALS).map_err(|x| e(x.into()))?;
        let lo = format!("{connection}\u{0}");
        let hi = format!("{connection}\u{1}");
        let mut out = Vec::new();
        for item in t.range(lo.as_str()..hi.as_str()).map_err(|x| e(x.into()))? {
            let (k, v) = item.map_err(|x| e(x.into()))?;
            out.push(Self::decode(
                "connection_credentials",
                k.value(),
                v.value(),
            )?);
        }
        Ok(out)
    }

    /// Removes the credential of one scope; `false` when there was none.
    pub fn remove_scoped_credential(
        &self,
        connection: &str,
        scope: &CredentialScope,
    ) -> Result<bool, StateError> {
        let e = self.db_err();
        let tx = self.db.begin_write().map_err(|x| e(x.into()))?;
        let removed = {
            let mut t = tx.open_table(SCOPED_CREDENTIALS).map_err(|x| e(x.into()))?;
            let removed = t
                .remove(key(connection, scope).as_str())
                .map_err(|x| e(x.into()))?
                .is_some();
            removed
        };
        tx.commit().map_err(|x| e(x.into()))?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Connection, ConnectionTls};
    use std::collections::BTreeMap;

    fn conn(name: &str) -> Connection {
        Connection {
            name: name.into(),
            provider: "bitbucket-dc".into(),
            settings: BTreeMap::new(),
            credential_kind: CredentialKind::HttpAccessToken,
            credential_identity: None,
            read_only: false,
            allow_restore: false,
            rate_limit: None,
            principal: None,
            id: Connection::new_id(),
            allowed_origins: Vec::new(),
            created_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn scoped(connection: &str, key: &str) -> ScopedCredential {
        ScopedCredential {
            connection: connection.into(),
            scope: CredentialScope::project(key),
            kind: CredentialKind::HttpAccessToken,
            identity: None,
            sealed: vec![0, 1, 2, 255],
            added_at: OffsetDateTime::UNIX_EPOCH,
            label: None,
            principal: None,
            disabled: false,
        }
    }

    #[test]
    fn scoped_credentials_round_trip_and_go_with_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(dir.path()).unwrap();
        assert!(matches!(
            s.put_scoped_credential(&scoped("dc", "PRJ")).unwrap_err(),
            StateError::NoSuchConnection(_)
        ));
        s.add_connection(&conn("dc"), b"x").unwrap();
        s.add_connection(&conn("dc2"), b"x").unwrap();
        s.put_scoped_credential(&scoped("dc", "prj")).unwrap();
        s.put_scoped_credential(&scoped("dc", "~jdoe")).unwrap();
        s.put_scoped_credential(&scoped("dc2", "OTHER")).unwrap();
        let got = s.scoped_credentials("dc").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].scope, CredentialScope::project("PRJ"));
        assert_eq!(got[0].sealed, vec![0, 1, 2, 255]);
        assert!(got[1].scope.covers_project("~JDOE"));
        assert!(s
            .remove_scoped_credential("dc", &CredentialScope::project("Prj"))
            .unwrap());
        assert!(!s
            .remove_scoped_credential("dc", &CredentialScope::project("PRJ"))
            .unwrap());

        let tls = ConnectionTls {
            ca_bundle_pem: Some("-----BEGIN CERTIFICATE-----".into()),
            ca_bundle_file: Some("ca.pem".into()),
            insecure: false,
        };
        s.set_connection_tls("dc", &tls).unwrap();
        assert_eq!(s.connection_tls("dc").unwrap(), tls);
        assert_eq!(s.connection_tls("dc2").unwrap(), ConnectionTls::default());

        s.remove_connection("dc").unwrap();
        assert!(s.scoped_credentials("dc").unwrap().is_empty());
        assert_eq!(s.connection_tls("dc").unwrap(), ConnectionTls::default());
        assert_eq!(s.scoped_credentials("dc2").unwrap().len(), 1);
    }
}
