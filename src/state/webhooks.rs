//! Push-webhook secrets (`webhook_secrets_v1`): per connection (key: its name) the
//! vault-sealed secret Bitbucket signs its webhook bodies with. Created on first
//! ask, replaced by a rotation, removed with the connection.

use super::{State, StateError};
use redb::{ReadableTable, TableDefinition, WriteTransaction};

pub(super) const WEBHOOK_SECRETS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("webhook_secrets_v1");

impl State {
    /// The sealed webhook secret of a connection, if one was made.
    pub fn webhook_secret(&self, connection: &str) -> Result<Option<Vec<u8>>, StateError> {
        let e = self.db_err();
        let tx = self.db.begin_read().map_err(|x| e(x.into()))?;
        let t = tx.open_table(WEBHOOK_SECRETS).map_err(|x| e(x.into()))?;
        let v = t.get(connection).map_err(|x| e(x.into()))?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    /// Stores the sealed webhook secret of an existing connection. With `only_if_absent`
    /// an existing secret is kept (two first asks at once make one secret); returns
    /// whether `sealed` was stored.
    pub fn set_webhook_secret(
        &self,
        connection: &str,
        sealed: &[u8],
        only_if_absent: bool,
    ) -> Result<bool, StateError> {
        let e = self.db_err();
        let tx = self.db.begin_write().map_err(|x| e(x.into()))?;
        {
            let conns = tx.open_table(super::CONNECTIONS).map_err(|x| e(x.into()))?;
            if conns.get(connection).map_err(|x| e(x.into()))?.is_none() {
                return Err(StateError::NoSuchConnection(connection.to_string()));
            }
            let mut t = tx.open_table(WEBHOOK_SECRETS).map_err(|x| e(x.into()))?;
            if only_if_absent && t.get(connection).map_err(|x| e(x.into()))?.is_some() {
                return Ok(false);
            }
            t.insert(connection, sealed).map_err(|x| e(x.into()))?;
        }
        tx.commit().map_err(|x| e(x.into()))?;
        Ok(true)
    }

    /// Deletes a connection's webhook secret (inside the caller's transaction).
    pub(super) fn remove_webhook_secret(
        &self,
        tx: &WriteTransaction,
        connection: &str,
    ) -> Result<(), StateError> {
        let e = self.db_err();
        let mut t = tx.open_table(WEBHOOK_SECRETS).map_err(|x| e(x.into()))?;
        t.remove(connection).map_err(|x| e(x.into()))?;
        Ok(())
    }
}
