//! A connection's TLS trust (`connection_tls_v1`, [`ConnectionTls`]): the PEM contents
//! of its CA bundle (copied at `connection add`, so the file may go away) or the
//! explicit insecure flag. Key: connection name; value: JSON. Created by
//! `State::migrate`; a connection's row goes when it is removed.

use super::{State, StateError};
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

pub(super) const CONNECTION_TLS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("connection_tls_v1");

/// How a connection verifies TLS certificates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ConnectionTls {
    /// PEM contents of the CA bundle, added to the system roots.
    pub ca_bundle_pem: Option<String>,
    /// The file the bundle was read from, for messages.
    pub ca_bundle_file: Option<String>,
    /// No certificate verification at all (warned on every use).
    pub insecure: bool,
}

impl State {
    /// The TLS trust of a connection (default: system roots, verified).
    pub fn connection_tls(&self, connection: &str) -> Result<ConnectionTls, StateError> {
        let e = self.db_err();
        let tx = self.db.begin_read().map_err(|x| e(x.into()))?;
        let t = tx.open_table(CONNECTION_TLS).map_err(|x| e(x.into()))?;
        match t.get(connection).map_err(|x| e(x.into()))? {
            Some(v) => Self::decode("connection_tls", connection, v.value()),
            None => Ok(ConnectionTls::default()),
        }
    }

    /// Sets the TLS trust of an existing connection.
    pub fn set_connection_tls(
        &self,
        connection: &str,
        tls: &ConnectionTls,
    ) -> Result<(), StateError> {
        let e = self.db_err();
        let json = serde_json::to_vec(tls).map_err(|x| self.json_err(x))?;
        let tx = self.db.begin_write().map_err(|x| e(x.into()))?;
        {
            let conns = tx.open_table(super::CONNECTIONS).map_err(|x| e(x.into()))?;
            if conns.get(connection).map_err(|x| e(x.into()))?.is_none() {
                return Err(StateError::NoSuchConnection(connection.to_string()));
            }
            let mut t = tx.open_table(CONNECTION_TLS).map_err(|x| e(x.into()))?;
            t.insert(connection, json.as_slice())
                .map_err(|x| e(x.into()))?;
        }
        tx.commit().map_err(|x| e(x.into()))
    }
    /// Deletes a connection's TLS trust (inside the caller's transaction).
    pub(super) fn remove_connection_tls(
        &self,
        tx: &WriteTransaction,
        connection: &str,
    ) -> Result<(), StateError> {
        let e = self.db_err();
        let mut tls = tx.open_table(CONNECTION_TLS).map_err(|x| e(x.into()))?;
        tls.remove(connection).map_err(|x| e(x.into()))?;
        Ok(())
    }
}
