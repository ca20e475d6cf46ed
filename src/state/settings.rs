//! Settings the daemon keeps (`settings_v1`: key → bytes, JSON chosen by the engine),
//! e.g. `notifications`. The table is created by its first write, so databases of
//! schema 2 read it as empty without a migration.

use super::{State, StateError};
use redb::{TableDefinition, TableError};

const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings_v1");

impl State {
    /// The value stored under `key`, if any.
    pub fn setting(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let e = self.db_err();
        let tx = self.db.begin_read().map_err(|x| e(x.into()))?;
        let t = match tx.open_table(SETTINGS) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(x) => return Err(e(x.into())),
        };
        let v = t.get(key).map_err(|x| e(x.into()))?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    /// Stores `value` under `key`, replacing what was there.
    pub fn put_setting(&self, key: &str, value: &[u8]) -> Result<(), StateError> {
        let e = self.db_err();
        let tx = self.db.begin_write().map_err(|x| e(x.into()))?;
        {
            let mut t = tx.open_table(SETTINGS).map_err(|x| e(x.into()))?;
            t.insert(key, value).map_err(|x| e(x.into()))?;
        }
        tx.commit().map_err(|x| e(x.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_read_empty_before_the_first_write() {
        let dir = tempfile::tempdir().expect("tmp");
        let state = State::open(dir.path()).expect("open");
        assert_eq!(state.setting("notifications").expect("read"), None);
        state.put_setting("notifications", b"{}").expect("write");
        state
            .put_setting("notifications", b"{\"a\":1}")
            .expect("replace");
        assert_eq!(
            state.setting("notifications").expect("read").as_deref(),
            Some(&b"{\"a\":1}"[..])
        );
    }
}
