//! What restores into a provider created (`restored_items_v1`), so that re-running an
//! interrupted restore never creates an issue, a pull request or a setting twice.
//!
//! Key: `<target connection id>\0<target scope/slug>\0<kind>\0<id in the snapshot>`;
//! value: JSON [`RestoredItem`] (the id the item has on the server now). Created by
//! `State::migrate`. Rows are never removed with their connection: a connection added
//! again under the same name has a new id, and the records of the old one say what
//! exists on the server.

use super::{State, StateError};
use redb::TableDefinition;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub(super) const RESTORED_ITEMS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("restored_items_v1");

/// Where restored items are recorded: one repository of one target connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreDestination {
    /// The target connection's immutable id.
    pub connection_id: String,
    /// The target repository, `scope/slug`.
    pub repository: String,
}

/// One item a restore created on the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredItem {
    /// Its id on the server (a pull request's number, an issue id...).
    pub id: String,
    /// The snapshot it came from.
    pub snapshot: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

impl RestoreDestination {
    fn key(&self, kind: &str, source_id: &str) -> String {
        format!(
            "{}\0{}\0{kind}\0{source_id}",
            self.connection_id, self.repository
        )
    }
}

impl State {
    /// The item of `kind` with snapshot id `source_id` a restore already created at
    /// `dest`, if any.
    pub fn restored_item(
        &self,
        dest: &RestoreDestination,
        kind: &str,
        source_id: &str,
    ) -> Result<Option<RestoredItem>, StateError> {
        let e = self.db_err();
        let key = dest.key(kind, source_id);
        let tx = self.db.begin_read().map_err(|x| e(x.into()))?;
        let t = tx.open_table(RESTORED_ITEMS).map_err(|x| e(x.into()))?;
        match t.get(key.as_str()).map_err(|x| e(x.into()))? {
            Some(v) => Self::decode("restored_items", &key, v.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Records items a restore created at `dest`: `(kind, snapshot id, item)`.
    pub fn record_restored_items(
        &self,
        dest: &RestoreDestination,
        items: &[(String, String, RestoredItem)],
    ) -> Result<(), StateError> {
        if items.is_empty() {
            return Ok(());
        }
        let e = self.db_err();
        let tx = self.db.begin_write().map_err(|x| e(x.into()))?;
        {
            let mut t = tx.open_table(RESTORED_ITEMS).map_err(|x| e(x.into()))?;
            for (kind, source_id, item) in items {
                let json = self.encode(item)?;
                t.insert(dest.key(kind, source_id).as_str(), json.as_slice())
                    .map_err(|x| e(x.into()))?;
            }
        }
        tx.commit().map_err(|x| e(x.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_items_are_found_per_destination_and_kind() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        let dest = RestoreDestination {
            connection_id: "c1".into(),
            repository: "ws/app".into(),
        };
        let item = RestoredItem {
            id: "7".into(),
            snapshot: "s".into(),
            at: OffsetDateTime::UNIX_EPOCH,
        };
        assert_eq!(
            state.restored_item(&dest, "pullrequests", "3").unwrap(),
            None
        );
        state
            .record_restored_items(&dest, &[("pullrequests".into(), "3".into(), item.clone())])
            .unwrap();
        assert_eq!(
            state.restored_item(&dest, "pullrequests", "3").unwrap(),
            Some(item)
        );
        assert_eq!(state.restored_item(&dest, "issues", "3").unwrap(), None);
        let other = RestoreDestination {
            repository: "ws/other".into(),
            ..dest
        };
        assert_eq!(
            state.restored_item(&other, "pullrequests", "3").unwrap(),
            None
        );
    }
}
