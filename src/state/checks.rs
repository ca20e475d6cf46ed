//! The last check of each connection (`connection_checks_v1`): whether its
//! credential was accepted when it was last tested, why not, and when. Key: the
//! connection name; value: JSON [`ConnectionCheck`]. Removed with the connection.

use super::{State, StateError};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub(super) const CONNECTION_CHECKS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("connection_checks_v1");

/// The outcome of a connection's last test.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionCheck {
    pub ok: bool,
    /// Why it failed (the engine's error, which never holds a secret).
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

impl State {
    /// Records the outcome of testing connection `name`.
    pub fn record_connection_check(
        &self,
        name: &str,
        check: &ConnectionCheck,
    ) -> Result<(), StateError> {
        let e = self.db_err();
        let json = self.encode(check)?;
        let tx = self.db.begin_write().map_err(|x| e(x.into()))?;
        {
            let mut t = tx.open_table(CONNECTION_CHECKS).map_err(|x| e(x.into()))?;
            t.insert(name, json.as_slice()).map_err(|x| e(x.into()))?;
        }
        tx.commit().map_err(|x| e(x.into()))
    }

    /// The last check of connection `name`, if it was ever tested.
    pub fn connection_check(&self, name: &str) -> Result<Option<ConnectionCheck>, StateError> {
        let e = self.db_err();
        let tx = self.db.begin_read().map_err(|x| e(x.into()))?;
        let t = tx.open_table(CONNECTION_CHECKS).map_err(|x| e(x.into()))?;
        match t.get(name).map_err(|x| e(x.into()))? {
            Some(v) => Self::decode("connection_checks", name, v.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Every connection's last check, by name.
    pub fn connection_checks(&self) -> Result<Vec<(String, ConnectionCheck)>, StateError> {
        let e = self.db_err();
        let tx = self.db.begin_read().map_err(|x| e(x.into()))?;
        let t = tx.open_table(CONNECTION_CHECKS).map_err(|x| e(x.into()))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(|x| e(x.into()))? {
            let (k, v) = item.map_err(|x| e(x.into()))?;
            out.push((
                k.value().to_string(),
                Self::decode("connection_checks", k.value(), v.value())?,
            ));
        }
        Ok(out)
    }

    /// Forgets a connection's check, in the transaction removing the connection.
    pub(super) fn remove_connection_check(
        &self,
        tx: &redb::WriteTransaction,
        name: &str,
    ) -> Result<(), StateError> {
        let e = self.db_err();
        let mut t = tx.open_table(CONNECTION_CHECKS).map_err(|x| e(x.into()))?;
        t.remove(name).map_err(|x| e(x.into()))?;
        Ok(())
    }
}
