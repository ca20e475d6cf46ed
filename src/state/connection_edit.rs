//! Changing a stored connection in place: its record (read-only, restore mark,
//! rate limit; a rotated credential's kind and identity) together with its primary
//! sealed credential, and resealing one credential whose secret changed (an OAuth
//! refresh token the server rotated). Each write checks the connection's id, so a
//! connection removed and added again under the same name is never touched.

use super::scoped_credentials::{ScopedCredential, SCOPED_CREDENTIALS};
use super::{Connection, State, StateError, CONNECTIONS, CREDENTIALS};
use redb::{ReadableTable, WriteTransaction};

impl State {
    /// The stored connection `name` when its id is `id` (inside the caller's transaction).
    fn connection_with_id(
        &self,
        tx: &WriteTransaction,
        name: &str,
        id: &str,
    ) -> Result<Connection, StateError> {
        let e = self.db_err();
        let conns = tx.open_table(CONNECTIONS).map_err(|x| e(x.into()))?;
        let found = match conns.get(name).map_err(|x| e(x.into()))? {
            Some(v) => Some(Self::decode::<Connection>("connections", name, v.value())?),
            None => None,
        };
        match found.map(Connection::loaded) {
            Some(c) if c.id == id => Ok(c),
            _ => Err(StateError::NoSuchConnection(name.to_string())),
        }
    }

    /// Replaces the record of connection `conn.name` (same id) and, when given, its
    /// primary sealed credential, in one transaction.
    pub fn replace_connection(
        &self,
        conn: &Connection,
        sealed: Option<&[u8]>,
    ) -> Result<(), StateError> {
        let e = self.db_err();
        let json = serde_json::to_vec(conn).map_err(|x| self.json_err(x))?;
        let tx = self.db.begin_write().map_err(|x| e(x.into()))?;
        self.connection_with_id(&tx, &conn.name, &conn.id)?;
        {
            let mut conns = tx.open_table(CONNECTIONS).map_err(|x| e(x.into()))?;
            conns
                .insert(conn.name.as_str(), json.as_slice())
                .map_err(|x| e(x.into()))?;
            if let Some(sealed) = sealed {
                let mut creds = tx.open_table(CREDENTIALS).map_err(|x| e(x.into()))?;
                creds
                    .insert(conn.name.as_str(), sealed)
                    .map_err(|x| e(x.into()))?;
            }
        }
        tx.commit().map_err(|x| e(x.into()))
    }

    /// Replaces the sealed secret of one credential (`primary`, or a scoped
    /// credential's id such as `c1`) of connection `name` whose id is `id`.
    pub fn reseal_credential(
        &self,
        name: &str,
        id: &str,
        credential: &str,
        sealed: &[u8],
    ) -> Result<(), StateError> {
        let e = self.db_err();
        let tx = self.db.begin_write().map_err(|x| e(x.into()))?;
        self.connection_with_id(&tx, name, id)?;
        if credential == "primary" {
            let mut creds = tx.open_table(CREDENTIALS).map_err(|x| e(x.into()))?;
            creds.insert(name, sealed).map_err(|x| e(x.into()))?;
        } else {
            let key = format!("{name}\u{0}{credential}");
            let mut t = tx.open_table(SCOPED_CREDENTIALS).map_err(|x| e(x.into()))?;
            let found = match t.get(key.as_str()).map_err(|x| e(x.into()))? {
                Some(v) => {
                    Self::decode::<ScopedCredential>("connection_credentials", &key, v.value())?
                }
                None => return Err(StateError::NoSuchConnection(name.to_string())),
            };
            let updated = ScopedCredential {
                sealed: sealed.to_vec(),
                ..found
            };
            let json = serde_json::to_vec(&updated).map_err(|x| self.json_err(x))?;
            t.insert(key.as_str(), json.as_slice())
                .map_err(|x| e(x.into()))?;
        }
        tx.commit().map_err(|x| e(x.into()))
    }
}
