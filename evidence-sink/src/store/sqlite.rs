//! The SQLite store: one table of verified records, appended in batches, never updated.
//!
//! `seq` is SQLite's `INTEGER PRIMARY KEY AUTOINCREMENT`, so insertion order is total and
//! a number is never handed out twice, even after old records are pruned. `id` is unique
//! and is the record's identity to clients. `record` holds the canonical JSON text that
//! `GET /v1/evidence/{id}` returns verbatim; the other columns are copies of its members
//! for filtering, never a second source of truth.
//!
//! rusqlite is blocking, so the connection sits behind a `std::sync::Mutex` and every use
//! runs on tokio's blocking pool through [`Store::run`].

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{params, params_from_iter, Connection, OptionalExtension, ToSql};

use crate::error::SinkError;
use crate::intake::VerifiedRecord;

/// The schema version this code writes, kept in SQLite's `user_version`.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS evidence (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT    NOT NULL UNIQUE,
    timestamp         TEXT    NOT NULL,
    timestamp_unix_ns INTEGER NOT NULL,
    request_id        TEXT,
    user_id           TEXT,
    provider          TEXT,
    model             TEXT,
    decision          TEXT,
    key_id            TEXT    NOT NULL,
    record            TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS evidence_by_timestamp  ON evidence (timestamp_unix_ns);
CREATE INDEX IF NOT EXISTS evidence_by_request_id ON evidence (request_id);
CREATE INDEX IF NOT EXISTS evidence_by_user_id    ON evidence (user_id, timestamp_unix_ns);
CREATE INDEX IF NOT EXISTS evidence_by_provider   ON evidence (provider);
CREATE INDEX IF NOT EXISTS evidence_by_model      ON evidence (model);
CREATE INDEX IF NOT EXISTS evidence_by_decision   ON evidence (decision, timestamp_unix_ns);
CREATE INDEX IF NOT EXISTS evidence_by_key_id     ON evidence (key_id);
";

/// Why the store could not be opened at start.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused to open or set up the file.
    #[error("cannot open evidence database {path}: {source}")]
    Open {
        /// The database file.
        path: String,
        /// SQLite's reason.
        source: rusqlite::Error,
    },

    /// The file was written by a version of the sink with another schema.
    #[error("evidence database {path} has schema version {found}; this sink knows version {SCHEMA_VERSION}")]
    UnknownSchema {
        /// The database file.
        path: String,
        /// The version found in the file.
        found: i64,
    },
}

/// What a batch did to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Records newly stored.
    pub accepted: usize,
    /// Records already stored with identical content, and so not stored again.
    pub duplicates: usize,
}

/// A filter over stored records; `None` means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordFilter {
    /// Exact `user_id`.
    pub user_id: Option<String>,
    /// Exact `request_id`.
    pub request_id: Option<String>,
    /// Exact `decision`.
    pub decision: Option<String>,
    /// Records at or after this instant (Unix nanoseconds).
    pub from_unix_ns: Option<i64>,
    /// Records strictly before this instant (Unix nanoseconds).
    pub to_unix_ns: Option<i64>,
    /// At most this many records, oldest first.
    pub limit: u32,
}

/// The evidence store, cheap to clone and share between requests.
#[derive(Clone)]
pub struct Store {
    connection: Arc<Mutex<Connection>>,
}

impl Store {
    /// Opens (or creates) the database at `path`, in WAL mode with full sync.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let name = path.display().to_string();
        let connection = Connection::open(path).map_err(|source| StoreError::Open {
            path: name.clone(),
            source,
        })?;
        Self::set_up(connection, &name)
    }

    /// A store that lives in memory only, for tests.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let name = ":memory:";
        let connection = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: name.to_owned(),
            source,
        })?;
        Self::set_up(connection, name)
    }

    fn set_up(connection: Connection, name: &str) -> Result<Self, StoreError> {
        let open_error = |source| StoreError::Open {
            path: name.to_owned(),
            source,
        };

        // WAL lets readers (an auditor's tool, a backup) work while the sink appends;
        // FULL sync because a 201 tells the gateway that the record is safely kept.
        let _mode: String = connection
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(open_error)?;
        connection
            .execute_batch("PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;")
            .map_err(open_error)?;

        let found: i64 = connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(open_error)?;
        if found != 0 && found != SCHEMA_VERSION {
            return Err(StoreError::UnknownSchema {
                path: name.to_owned(),
                found,
            });
        }
        connection
            .execute_batch(SCHEMA)
            .and_then(|()| connection.pragma_update(None, "user_version", SCHEMA_VERSION))
            .map_err(open_error)?;

        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    /// Runs `work` with the connection on tokio's blocking pool.
    pub async fn run<T, F>(&self, work: F) -> Result<T, SinkError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, SinkError> + Send + 'static,
    {
        let connection = Arc::clone(&self.connection);
        tokio::task::spawn_blocking(move || {
            // A poisoned lock means a panic while it was held; any open transaction was
            // rolled back when the panic dropped it, so the connection is still sound.
            let mut connection = connection.lock().unwrap_or_else(PoisonError::into_inner);
            work(&mut connection)
        })
        .await
        .map_err(|e| SinkError::Internal(format!("a database task did not finish: {e}")))?
    }
}

/// Stores a verified batch in one transaction: all of it, or nothing.
///
/// A record whose id is stored already with byte-identical text is counted as a duplicate;
/// with other text, the whole batch is refused, because stored evidence is never replaced.
pub fn insert_batch(
    connection: &mut Connection,
    records: &[VerifiedRecord],
) -> Result<BatchOutcome, SinkError> {
    let transaction = connection.transaction()?;
    let mut outcome = BatchOutcome {
        accepted: 0,
        duplicates: 0,
    };

    {
        let mut find = transaction.prepare_cached("SELECT record FROM evidence WHERE id = ?1")?;
        let mut insert = transaction.prepare_cached(
            "INSERT INTO evidence (id, timestamp, timestamp_unix_ns, request_id, user_id, \
             provider, model, decision, key_id, record) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;

        for (index, record) in records.iter().enumerate() {
            let stored: Option<String> =
                find.query_row([&record.id], |row| row.get(0)).optional()?;

            match stored {
                Some(text) if text == record.canonical => outcome.duplicates += 1,
                Some(_) => {
                    return Err(SinkError::ConflictingDuplicate(format!(
                        "record {index}: id {} is already stored with different content; \
                         stored evidence is never replaced",
                        record.id
                    )));
                }
                None => {
                    insert.execute(params![
                        record.id,
                        record.timestamp,
                        record.timestamp_unix_ns,
                        record.request_id,
                        record.user_id,
                        record.provider,
                        record.model,
                        record.decision,
                        record.key_id,
                        record.canonical,
                    ])?;
                    outcome.accepted += 1;
                }
            }
        }
    }

    transaction.commit()?;
    Ok(outcome)
}

/// The stored text of the record with this id.
pub fn record_by_id(connection: &mut Connection, id: &str) -> Result<Option<String>, SinkError> {
    let text = connection
        .query_row("SELECT record FROM evidence WHERE id = ?1", [id], |row| {
            row.get(0)
        })
        .optional()?;
    Ok(text)
}

/// The stored texts of the records that pass `filter`, in insertion order.
pub fn records_matching(
    connection: &mut Connection,
    filter: &RecordFilter,
) -> Result<Vec<String>, SinkError> {
    let mut conditions: Vec<&str> = Vec::new();
    let mut values: Vec<&dyn ToSql> = Vec::new();

    if let Some(user_id) = &filter.user_id {
        conditions.push("user_id = ?");
        values.push(user_id);
    }
    if let Some(request_id) = &filter.request_id {
        conditions.push("request_id = ?");
        values.push(request_id);
    }
    if let Some(decision) = &filter.decision {
        conditions.push("decision = ?");
        values.push(decision);
    }
    if let Some(from) = &filter.from_unix_ns {
        conditions.push("timestamp_unix_ns >= ?");
        values.push(from);
    }
    if let Some(to) = &filter.to_unix_ns {
        conditions.push("timestamp_unix_ns < ?");
        values.push(to);
    }
    values.push(&filter.limit);

    let mut sql = "SELECT record FROM evidence".to_owned();
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(" ORDER BY seq LIMIT ?");

    let mut statement = connection.prepare_cached(&sql)?;
    let rows = statement.query_map(params_from_iter(values), |row| row.get(0))?;
    let texts = rows.collect::<Result<Vec<String>, _>>()?;
    Ok(texts)
}

/// A trivial query, to show that the database answers.
pub fn ping(connection: &mut Connection) -> Result<(), SinkError> {
    let _one: i64 = connection.query_row("SELECT 1", [], |row| row.get(0))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, user: &str, at: i64) -> VerifiedRecord {
        VerifiedRecord {
            id: id.to_owned(),
            timestamp: "t".to_owned(),
            timestamp_unix_ns: at,
            request_id: None,
            user_id: Some(user.to_owned()),
            provider: None,
            model: None,
            decision: Some("allow".to_owned()),
            key_id: "ed25519:00".to_owned(),
            canonical: format!(r#"{{"id":"{id}"}}"#),
        }
    }

    fn all(limit: u32) -> RecordFilter {
        RecordFilter {
            limit,
            ..RecordFilter::default()
        }
    }

    #[tokio::test]
    async fn a_batch_that_conflicts_leaves_nothing_behind() {
        let store = Store::open_in_memory().unwrap();
        let first = record("evt_1", "a", 1);
        store.run(move |c| insert_batch(c, &[first])).await.unwrap();

        let mut changed = record("evt_1", "a", 1);
        changed.canonical = r#"{"id":"evt_1","x":1}"#.to_owned();
        let batch = [record("evt_2", "a", 2), changed];
        let result = store.run(move |c| insert_batch(c, &batch)).await;

        assert!(matches!(result, Err(SinkError::ConflictingDuplicate(_))));
        let texts = store.run(|c| records_matching(c, &all(10))).await.unwrap();
        assert_eq!(texts, vec![r#"{"id":"evt_1"}"#.to_owned()]);
    }

    #[tokio::test]
    async fn a_duplicate_inside_one_batch_is_stored_once() {
        let store = Store::open_in_memory().unwrap();
        let batch = [record("evt_1", "a", 1), record("evt_1", "a", 1)];

        let outcome = store.run(move |c| insert_batch(c, &batch)).await.unwrap();

        assert_eq!(
            outcome,
            BatchOutcome {
                accepted: 1,
                duplicates: 1
            }
        );
    }

    #[tokio::test]
    async fn filters_combine_and_keep_insertion_order() {
        let store = Store::open_in_memory().unwrap();
        let batch = [
            record("evt_3", "a", 30),
            record("evt_1", "b", 10),
            record("evt_2", "a", 20),
            record("evt_4", "a", 40),
        ];
        store.run(move |c| insert_batch(c, &batch)).await.unwrap();

        let filter = RecordFilter {
            user_id: Some("a".to_owned()),
            from_unix_ns: Some(20),
            to_unix_ns: Some(40),
            limit: 10,
            ..RecordFilter::default()
        };
        let texts = store
            .run(move |c| records_matching(c, &filter))
            .await
            .unwrap();

        assert_eq!(texts, vec![r#"{"id":"evt_3"}"#, r#"{"id":"evt_2"}"#]);
        let limited = store.run(|c| records_matching(c, &all(1))).await.unwrap();
        assert_eq!(limited.len(), 1);
    }

    #[test]
    fn a_database_from_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("evidence.sqlite");
        let connection = Connection::open(&path).unwrap();
        connection.pragma_update(None, "user_version", 7).unwrap();
        drop(connection);

        let result = Store::open(&path);

        assert!(matches!(
            result,
            Err(StoreError::UnknownSchema { found: 7, .. })
        ));
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("evidence.sqlite");
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();

        let Err(error) = Store::open(&path) else {
            panic!("opening a non-database should fail");
        };

        assert!(error.to_string().contains("evidence.sqlite"));
    }

    #[test]
    fn a_reopened_database_keeps_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("evidence.sqlite");
        {
            let store = Store::open(&path).unwrap();
            let mut connection = store.connection.lock().unwrap();
            insert_batch(&mut connection, &[record("evt_1", "a", 1)]).unwrap();
        }

        let store = Store::open(&path).unwrap();
        let mut connection = store.connection.lock().unwrap();

        assert!(record_by_id(&mut connection, "evt_1").unwrap().is_some());
    }
}
