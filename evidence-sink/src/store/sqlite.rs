//! The SQLite backend: three tables, appended to in one transaction per batch.
//!
//! | table | what |
//! |---|---|
//! | `evidence` | one row per stored record: `seq` (arrival order, `AUTOINCREMENT`, never reused), `id`, copies of the members queries filter on, and `record`, the canonical JSON text served verbatim |
//! | `evidence_leaves` | one row per leaf of the Merkle tree: `leaf_index` (from 0), the record `id`, `leaf_hash` = `SHA-256(0x00 ‖ record)`, and `removed`/`removed_at` once erasure or retention removed the record's content |
//! | `merkle_nodes` | the hash of every complete interior subtree, by `level` (1 = two leaves) and `idx`: derived from the leaves, kept so that a root or a proof reads O(log n) rows |
//!
//! Triggers make the tables append-only for anyone holding the file, this sink included:
//! `evidence` rows are never updated and are deleted only once their leaf is marked
//! removed (the erasure and retention paths do that first, in the same transaction);
//! leaves are never deleted and only ever change from not removed to removed; tree nodes
//! never change. Someone who drops the triggers can still rewrite the file, which is what
//! the signed tree heads and the auditor's proofs are for.
//!
//! rusqlite is blocking, so the connection sits behind a `std::sync::Mutex` and every use
//! runs on tokio's blocking pool through [`SqliteStore::run`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use mercator_evidence::merkle::{self, node_hash, record_leaf_hash, Hash, NodeSource, ProofError};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, ToSql};

use super::{
    BatchOutcome, LeafInfo, Page, RecordFilter, RecordLookup, Removal, StoreError, StoredRow,
};
use crate::error::SinkError;
use crate::intake::VerifiedRecord;

/// The schema version this code writes, kept in SQLite's `user_version`. Version 1 (records
/// only) is migrated on open: its records become the first leaves, in arrival order.
pub(super) const SCHEMA_VERSION: i64 = 2;

const RECORDS: &str = "
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

const TREE: &str = "
CREATE TABLE IF NOT EXISTS evidence_leaves (
    leaf_index INTEGER PRIMARY KEY,
    id         TEXT    NOT NULL UNIQUE,
    leaf_hash  BLOB    NOT NULL,
    removed    TEXT    CHECK (removed IN ('erased', 'pruned')),
    removed_at TEXT
);
CREATE TABLE IF NOT EXISTS merkle_nodes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB    NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
";

const TRIGGERS: &str = "
CREATE TRIGGER IF NOT EXISTS evidence_is_never_updated BEFORE UPDATE ON evidence
BEGIN
    SELECT RAISE(ABORT, 'evidence records are append-only: UPDATE is refused');
END;
CREATE TRIGGER IF NOT EXISTS evidence_is_deleted_only_when_removed BEFORE DELETE ON evidence
WHEN NOT EXISTS (SELECT 1 FROM evidence_leaves WHERE id = OLD.id AND removed IS NOT NULL)
BEGIN
    SELECT RAISE(ABORT, 'evidence records are append-only: only erasure or retention deletes one');
END;
CREATE TRIGGER IF NOT EXISTS leaves_are_never_deleted BEFORE DELETE ON evidence_leaves
BEGIN
    SELECT RAISE(ABORT, 'Merkle leaves are never deleted');
END;
CREATE TRIGGER IF NOT EXISTS leaves_change_only_to_removed BEFORE UPDATE ON evidence_leaves
WHEN OLD.removed IS NOT NULL OR NEW.removed IS NULL OR NEW.removed_at IS NULL
     OR NEW.leaf_index IS NOT OLD.leaf_index OR NEW.id IS NOT OLD.id
     OR NEW.leaf_hash IS NOT OLD.leaf_hash
BEGIN
    SELECT RAISE(ABORT, 'Merkle leaves only change from kept to erased or pruned');
END;
CREATE TRIGGER IF NOT EXISTS nodes_are_never_updated BEFORE UPDATE ON merkle_nodes
BEGIN
    SELECT RAISE(ABORT, 'Merkle nodes are never updated');
END;
CREATE TRIGGER IF NOT EXISTS nodes_are_never_deleted BEFORE DELETE ON merkle_nodes
BEGIN
    SELECT RAISE(ABORT, 'Merkle nodes are never deleted');
END;
";

/// How many records one retention transaction removes, so that pruning a large backlog
/// never holds the write lock for long.
const PRUNE_CHUNK: usize = 1000;

/// The SQLite store, cheap to clone and share between requests.
#[derive(Clone)]
pub struct SqliteStore {
    connection: Arc<Mutex<Connection>>,
    path: Arc<str>,
}

impl SqliteStore {
    /// The database file (`:memory:` for a store in memory).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Opens (or creates) the database at `path`, in WAL mode with full sync, migrating a
    /// version 1 database and completing any missing tree nodes.
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

    fn set_up(mut connection: Connection, name: &str) -> Result<Self, StoreError> {
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
        if ![0, 1, SCHEMA_VERSION].contains(&found) {
            return Err(StoreError::UnknownSchema {
                path: name.to_owned(),
                found,
            });
        }

        let transaction = connection.transaction().map_err(open_error)?;
        transaction
            .execute_batch(RECORDS)
            .and_then(|()| transaction.execute_batch(TREE))
            .map_err(open_error)?;
        if found < SCHEMA_VERSION {
            leaves_for_unindexed_records(&transaction).map_err(|e| StoreError::Inconsistent {
                path: name.to_owned(),
                reason: e.to_string(),
            })?;
        }
        transaction
            .execute_batch(TRIGGERS)
            .and_then(|()| transaction.pragma_update(None, "user_version", SCHEMA_VERSION))
            .map_err(open_error)?;
        complete_nodes(&transaction).map_err(|e| StoreError::Inconsistent {
            path: name.to_owned(),
            reason: e.to_string(),
        })?;
        transaction.commit().map_err(open_error)?;

        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
            path: Arc::from(name),
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

/// A version 1 database has records but no tree: give each record its leaf, in arrival
/// order.
fn leaves_for_unindexed_records(connection: &Connection) -> Result<(), SinkError> {
    let size = tree_size(connection)?;
    let mut select = connection.prepare(
        "SELECT id, record FROM evidence WHERE id NOT IN (SELECT id FROM evidence_leaves) \
         ORDER BY seq",
    )?;
    let rows = select
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    for (leaf_index, (id, text)) in (size..).zip(rows) {
        append_leaf(connection, leaf_index, &id, &record_leaf_hash(&text))?;
    }
    Ok(())
}

/// Computes any interior node that is missing (the nodes are derived data: a database
/// whose node table was lost or cut short gets them back from the leaves).
fn complete_nodes(connection: &Connection) -> Result<(), SinkError> {
    let size = tree_size(connection)?;
    let expected: u64 = (1..64).map(|level| size >> level).sum();
    let stored: i64 =
        connection.query_row("SELECT COUNT(*) FROM merkle_nodes", [], |row| row.get(0))?;
    if u64::try_from(stored).ok() == Some(expected) {
        return Ok(());
    }

    tracing::warn!(
        tree.size = size,
        nodes.expected = expected,
        nodes.stored = stored,
        "Merkle nodes are incomplete; computing the missing ones from the leaves"
    );
    let mut insert = connection
        .prepare("INSERT OR IGNORE INTO merkle_nodes (level, idx, hash) VALUES (?1, ?2, ?3)")?;
    let mut level = 0u32;
    let mut width = size;
    while width >= 2 {
        for index in 0..width / 2 {
            let left = node_at(connection, level, 2 * index)?;
            let right = node_at(connection, level, 2 * index + 1)?;
            insert.execute(params![
                level + 1,
                to_sql_index(index)?,
                node_hash(&left, &right).to_vec()
            ])?;
        }
        level += 1;
        width /= 2;
    }
    Ok(())
}

/// Stores a verified batch in one transaction: all of it, or nothing.
///
/// A record whose id is stored already with byte-identical text is counted as a duplicate;
/// with other text, the whole batch is refused, because stored evidence is never replaced.
/// An id whose content was erased or pruned is a duplicate too: it is in the tree already.
pub fn append(
    connection: &mut Connection,
    records: &[VerifiedRecord],
) -> Result<BatchOutcome, SinkError> {
    let transaction = connection.transaction()?;
    let mut outcome = BatchOutcome {
        accepted: 0,
        duplicates: 0,
    };
    let mut size = tree_size(&transaction)?;

    {
        let mut find =
            transaction.prepare_cached("SELECT leaf_hash FROM evidence_leaves WHERE id = ?1")?;
        let mut insert = transaction.prepare_cached(
            "INSERT INTO evidence (id, timestamp, timestamp_unix_ns, request_id, user_id, \
             provider, model, decision, key_id, record) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;

        for (index, record) in records.iter().enumerate() {
            let leaf = record_leaf_hash(&record.canonical);
            let stored: Option<Vec<u8>> =
                find.query_row([&record.id], |row| row.get(0)).optional()?;

            match stored {
                Some(hash) if hash.as_slice() == leaf.as_slice() => outcome.duplicates += 1,
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
                    append_leaf(&transaction, size, &record.id, &leaf)?;
                    size += 1;
                    outcome.accepted += 1;
                }
            }
        }
    }

    transaction.commit()?;
    Ok(outcome)
}

/// Adds leaf `leaf_index` and every interior node that it completes.
fn append_leaf(
    connection: &Connection,
    leaf_index: u64,
    id: &str,
    leaf: &Hash,
) -> Result<(), SinkError> {
    connection
        .prepare_cached(
            "INSERT INTO evidence_leaves (leaf_index, id, leaf_hash) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![to_sql_index(leaf_index)?, id, leaf.to_vec()])?;

    let mut insert = connection
        .prepare_cached("INSERT INTO merkle_nodes (level, idx, hash) VALUES (?1, ?2, ?3)")?;
    let (mut level, mut index, mut hash) = (0u32, leaf_index, *leaf);
    // A right child completes its parent, whose left half is stored already.
    while index & 1 == 1 {
        let left = node_at(connection, level, index - 1)?;
        hash = node_hash(&left, &hash);
        level += 1;
        index >>= 1;
        insert.execute(params![level, to_sql_index(index)?, hash.to_vec()])?;
    }
    Ok(())
}

/// The stored hash of the perfect subtree at `level` and `index`.
fn node_at(connection: &Connection, level: u32, index: u64) -> Result<Hash, SinkError> {
    let index_sql = to_sql_index(index)?;
    let bytes: Option<Vec<u8>> = if level == 0 {
        connection
            .prepare_cached("SELECT leaf_hash FROM evidence_leaves WHERE leaf_index = ?1")?
            .query_row([index_sql], |row| row.get(0))
            .optional()?
    } else {
        connection
            .prepare_cached("SELECT hash FROM merkle_nodes WHERE level = ?1 AND idx = ?2")?
            .query_row(params![level, index_sql], |row| row.get(0))
            .optional()?
    };
    bytes
        .and_then(|bytes| Hash::try_from(bytes.as_slice()).ok())
        .ok_or_else(|| {
            SinkError::Internal(format!(
                "the Merkle tree has no valid hash at level {level}, index {index}"
            ))
        })
}

fn to_sql_index(index: u64) -> Result<i64, SinkError> {
    i64::try_from(index).map_err(|_| SinkError::Internal(format!("index {index} is too large")))
}

/// Reads nodes from the database, remembering them: the proofs of neighbouring leaves
/// share most of their nodes.
struct CachedNodes<'c> {
    connection: &'c Connection,
    cache: HashMap<(u32, u64), Hash>,
}

impl<'c> CachedNodes<'c> {
    fn new(connection: &'c Connection) -> Self {
        Self {
            connection,
            cache: HashMap::new(),
        }
    }
}

impl NodeSource for CachedNodes<'_> {
    type Error = SinkError;

    fn node(&mut self, level: u32, index: u64) -> Result<Hash, SinkError> {
        if let Some(hash) = self.cache.get(&(level, index)) {
            return Ok(*hash);
        }
        let hash = node_at(self.connection, level, index)?;
        // Bounded: a long export must not grow without end.
        if self.cache.len() > 100_000 {
            self.cache.clear();
        }
        self.cache.insert((level, index), hash);
        Ok(hash)
    }
}

fn proof_error(error: ProofError<SinkError>) -> SinkError {
    match error {
        ProofError::Source(error) => error,
        ProofError::LeafOutOfRange { index, size } => SinkError::InvalidQuery {
            parameter: "tree_size".to_owned(),
            message: format!("leaf {index} is not in a tree of {size} leaves"),
        },
        ProofError::BadSizes { first, second } => SinkError::InvalidQuery {
            parameter: "first".to_owned(),
            message: format!("must be at least 1 and at most second ({first}, {second})"),
        },
    }
}

/// How many leaves the tree has.
pub fn tree_size(connection: &Connection) -> Result<u64, SinkError> {
    let size: i64 = connection.query_row(
        "SELECT COALESCE(MAX(leaf_index) + 1, 0) FROM evidence_leaves",
        [],
        |row| row.get(0),
    )?;
    u64::try_from(size).map_err(|_| SinkError::Internal("negative tree size".to_owned()))
}

/// The root of the first `size` leaves.
pub fn root(connection: &mut Connection, size: u64) -> Result<Hash, SinkError> {
    merkle::root(&mut CachedNodes::new(connection), size)
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves.
pub fn inclusion_proof(
    connection: &mut Connection,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, SinkError> {
    merkle::inclusion_proof(&mut CachedNodes::new(connection), index, size).map_err(proof_error)
}

/// The consistency proof between the trees of `first` and `second` leaves.
pub fn consistency_proof(
    connection: &mut Connection,
    first: u64,
    second: u64,
) -> Result<Vec<Hash>, SinkError> {
    merkle::consistency_proof(&mut CachedNodes::new(connection), first, second).map_err(proof_error)
}

/// What the store knows of `id`.
pub fn record(connection: &mut Connection, id: &str) -> Result<RecordLookup, SinkError> {
    let text: Option<String> = connection
        .prepare_cached("SELECT record FROM evidence WHERE id = ?1")?
        .query_row([id], |row| row.get(0))
        .optional()?;
    if let Some(text) = text {
        return Ok(RecordLookup::Stored(text));
    }

    match leaf(connection, id)? {
        None => Ok(RecordLookup::Unknown),
        Some(LeafInfo {
            leaf_index,
            removed: Some((how, at)),
            ..
        }) => Ok(RecordLookup::Removed {
            how,
            at,
            leaf_index,
        }),
        Some(LeafInfo { leaf_index, .. }) => Err(SinkError::Internal(format!(
            "leaf {leaf_index} ({id}) has no record and was never erased or pruned: \
             the database was changed behind the sink's back"
        ))),
    }
}

/// The leaf of `id`.
pub fn leaf(connection: &mut Connection, id: &str) -> Result<Option<LeafInfo>, SinkError> {
    type LeafRow = (i64, Vec<u8>, Option<String>, Option<String>);
    let row: Option<LeafRow> = connection
        .prepare_cached(
            "SELECT leaf_index, leaf_hash, removed, removed_at FROM evidence_leaves WHERE id = ?1",
        )?
        .query_row([id], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .optional()?;
    let Some((index, hash, removed, removed_at)) = row else {
        return Ok(None);
    };

    let bad = || SinkError::Internal(format!("the leaf of {id} is malformed"));
    let leaf_index = u64::try_from(index).map_err(|_| bad())?;
    let leaf_hash = Hash::try_from(hash.as_slice()).map_err(|_| bad())?;
    let removed = match removed.as_deref() {
        None => None,
        Some("erased") => Some((Removal::Erased, removed_at.unwrap_or_default())),
        Some("pruned") => Some((Removal::Pruned, removed_at.unwrap_or_default())),
        Some(_) => return Err(bad()),
    };
    Ok(Some(LeafInfo {
        leaf_index,
        leaf_hash,
        removed,
    }))
}

/// One page of the records that pass `filter`, in arrival order.
pub fn page(
    connection: &mut Connection,
    filter: &RecordFilter,
    page: Page,
) -> Result<Vec<StoredRow>, SinkError> {
    let mut conditions: Vec<&str> = vec!["e.seq > ?"];
    let mut values: Vec<Box<dyn ToSql>> = vec![Box::new(page.after)];

    for (column, value) in [
        ("e.user_id = ?", &filter.user_id),
        ("e.request_id = ?", &filter.request_id),
        ("e.decision = ?", &filter.decision),
        ("e.provider = ?", &filter.provider),
        ("e.model = ?", &filter.model),
    ] {
        if let Some(value) = value {
            conditions.push(column);
            values.push(Box::new(value.clone()));
        }
    }
    if let Some(from) = filter.from_unix_ns {
        conditions.push("e.timestamp_unix_ns >= ?");
        values.push(Box::new(from));
    }
    if let Some(to) = filter.to_unix_ns {
        conditions.push("e.timestamp_unix_ns < ?");
        values.push(Box::new(to));
    }
    if let Some(below) = page.leaves_below {
        conditions.push("l.leaf_index < ?");
        values.push(Box::new(to_sql_index(below)?));
    }
    values.push(Box::new(page.limit));

    let sql = format!(
        "SELECT e.seq, l.leaf_index, e.record FROM evidence e \
         JOIN evidence_leaves l ON l.id = e.id WHERE {} ORDER BY e.seq LIMIT ?",
        conditions.join(" AND ")
    );
    let mut statement = connection.prepare_cached(&sql)?;
    let mut rows = statement.query(params_from_iter(values.iter().map(|v| v.as_ref())))?;

    let mut page_rows = Vec::new();
    let mut bytes = 0usize;
    while let Some(row) = rows.next()? {
        let leaf_index: i64 = row.get(1)?;
        let text: String = row.get(2)?;
        bytes += text.len();
        page_rows.push(StoredRow {
            position: row.get(0)?,
            leaf_index: u64::try_from(leaf_index)
                .map_err(|_| SinkError::Internal("negative leaf index".to_owned()))?,
            text,
        });
        if bytes >= page.max_bytes {
            break;
        }
    }
    Ok(page_rows)
}

/// One page with each record's inclusion proof in the tree of `size` leaves.
pub fn page_with_proofs(
    connection: &mut Connection,
    filter: &RecordFilter,
    page_of: Page,
    size: u64,
) -> Result<Vec<(StoredRow, Vec<Hash>)>, SinkError> {
    let rows = page(
        connection,
        filter,
        Page {
            leaves_below: Some(size),
            ..page_of
        },
    )?;
    let mut nodes = CachedNodes::new(connection);
    rows.into_iter()
        .map(|row| {
            let proof =
                merkle::inclusion_proof(&mut nodes, row.leaf_index, size).map_err(proof_error)?;
            Ok((row, proof))
        })
        .collect()
}

/// Erases the content of every record of `user_id`: marks their leaves, then deletes the
/// rows, in one transaction. Returns how many.
pub fn erase_user(
    connection: &mut Connection,
    user_id: &str,
    at: &str,
) -> Result<usize, SinkError> {
    let transaction = connection.transaction()?;
    transaction.execute(
        "UPDATE evidence_leaves SET removed = 'erased', removed_at = ?1 \
         WHERE id IN (SELECT id FROM evidence WHERE user_id = ?2)",
        params![at, user_id],
    )?;
    let erased = transaction.execute("DELETE FROM evidence WHERE user_id = ?1", [user_id])?;
    transaction.commit()?;
    Ok(erased)
}

/// Removes the content of records timestamped before `cutoff`, a chunk per transaction.
pub fn prune_before(
    connection: &mut Connection,
    cutoff: i64,
    at: &str,
) -> Result<usize, SinkError> {
    let mut pruned = 0;
    loop {
        let transaction = connection.transaction()?;
        let ids: Vec<String> = transaction
            .prepare_cached(
                "SELECT id FROM evidence WHERE timestamp_unix_ns < ?1 ORDER BY seq LIMIT ?2",
            )?
            .query_map(params![cutoff, PRUNE_CHUNK], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        if ids.is_empty() {
            return Ok(pruned);
        }
        for id in &ids {
            transaction.execute(
                "UPDATE evidence_leaves SET removed = 'pruned', removed_at = ?1 WHERE id = ?2",
                params![at, id],
            )?;
            transaction.execute("DELETE FROM evidence WHERE id = ?1", [id])?;
        }
        transaction.commit()?;
        pruned += ids.len();
    }
}

/// A trivial query, to show that the database answers.
pub fn ping(connection: &mut Connection) -> Result<(), SinkError> {
    let _one: i64 = connection.query_row("SELECT 1", [], |row| row.get(0))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mercator_evidence::merkle::{leaf_hash, verify_consistency, verify_inclusion, MemoryTree};

    fn record(id: &str, user: &str, at: i64) -> VerifiedRecord {
        VerifiedRecord {
            id: id.to_owned(),
            timestamp: "t".to_owned(),
            timestamp_unix_ns: at,
            request_id: None,
            user_id: Some(user.to_owned()),
            provider: Some("openai".to_owned()),
            model: Some("gpt-4".to_owned()),
            decision: Some("allow".to_owned()),
            key_id: "ed25519:00".to_owned(),
            canonical: format!(r#"{{"id":"{id}"}}"#),
        }
    }

    fn everything() -> Page {
        Page {
            after: 0,
            limit: 1000,
            max_bytes: usize::MAX,
            leaves_below: None,
        }
    }

    fn texts(connection: &mut Connection, filter: &RecordFilter) -> Vec<String> {
        page(connection, filter, everything())
            .unwrap()
            .into_iter()
            .map(|row| row.text)
            .collect()
    }

    fn connection() -> Connection {
        let store = SqliteStore::open_in_memory().unwrap();
        Arc::try_unwrap(store.connection)
            .ok()
            .unwrap()
            .into_inner()
            .unwrap()
    }

    fn append_many(connection: &mut Connection, ids: std::ops::Range<usize>) {
        let batch: Vec<VerifiedRecord> = ids
            .map(|i| {
                record(
                    &format!("evt_{i}"),
                    if i % 2 == 0 { "a" } else { "b" },
                    i as i64,
                )
            })
            .collect();
        append(connection, &batch).unwrap();
    }

    #[test]
    fn a_batch_that_conflicts_leaves_nothing_behind() {
        let mut c = connection();
        append(&mut c, &[record("evt_1", "a", 1)]).unwrap();

        let mut changed = record("evt_1", "a", 1);
        changed.canonical = r#"{"id":"evt_1","x":1}"#.to_owned();
        let result = append(&mut c, &[record("evt_2", "a", 2), changed]);

        assert!(matches!(result, Err(SinkError::ConflictingDuplicate(_))));
        assert_eq!(
            texts(&mut c, &RecordFilter::default()),
            [r#"{"id":"evt_1"}"#]
        );
        assert_eq!(tree_size(&c).unwrap(), 1);
    }

    #[test]
    fn a_duplicate_inside_one_batch_is_stored_once_with_one_leaf() {
        let mut c = connection();

        let outcome = append(&mut c, &[record("evt_1", "a", 1), record("evt_1", "a", 1)]).unwrap();

        assert_eq!(
            outcome,
            BatchOutcome {
                accepted: 1,
                duplicates: 1
            }
        );
        assert_eq!(tree_size(&c).unwrap(), 1);
    }

    #[test]
    fn filters_combine_and_keep_arrival_order_and_pages_continue_after_the_cursor() {
        let mut c = connection();
        let batch = [
            record("evt_3", "a", 30),
            record("evt_1", "b", 10),
            record("evt_2", "a", 20),
            record("evt_4", "a", 40),
        ];
        append(&mut c, &batch).unwrap();

        let filter = RecordFilter {
            user_id: Some("a".to_owned()),
            from_unix_ns: Some(20),
            to_unix_ns: Some(40),
            ..RecordFilter::default()
        };
        assert_eq!(
            texts(&mut c, &filter),
            [r#"{"id":"evt_3"}"#, r#"{"id":"evt_2"}"#]
        );

        let first = page(
            &mut c,
            &RecordFilter::default(),
            Page {
                limit: 2,
                ..everything()
            },
        )
        .unwrap();
        let second = page(
            &mut c,
            &RecordFilter::default(),
            Page {
                after: first[1].position,
                limit: 2,
                ..everything()
            },
        )
        .unwrap();
        let ids: Vec<u64> = first.iter().chain(&second).map(|r| r.leaf_index).collect();
        assert_eq!(ids, [0, 1, 2, 3]);
    }

    #[test]
    fn a_page_stops_at_its_byte_budget_but_never_returns_nothing() {
        let mut c = connection();
        append_many(&mut c, 0..10);

        let small = page(
            &mut c,
            &RecordFilter::default(),
            Page {
                max_bytes: 30,
                ..everything()
            },
        )
        .unwrap();
        let tiny = page(
            &mut c,
            &RecordFilter::default(),
            Page {
                max_bytes: 1,
                ..everything()
            },
        )
        .unwrap();

        // 14 bytes each: the third reaches the budget and ends the page.
        assert_eq!(small.len(), 3);
        assert_eq!(tiny.len(), 1);
    }

    #[test]
    fn the_stored_tree_matches_a_tree_computed_in_memory_at_every_size() {
        let mut c = connection();
        let mut memory = MemoryTree::default();

        for i in 0..40usize {
            let r = record(&format!("evt_{i}"), "a", i as i64);
            memory.push(leaf_hash(r.canonical.as_bytes()));
            append(&mut c, &[r]).unwrap();

            let size = (i + 1) as u64;
            let root_stored = root(&mut c, size).unwrap();
            assert_eq!(
                root_stored,
                merkle::root(&mut memory, size).unwrap(),
                "size {size}"
            );
            for m in [0, i as u64 / 2, i as u64] {
                let proof = inclusion_proof(&mut c, m, size).unwrap();
                assert_eq!(
                    proof,
                    merkle::inclusion_proof(&mut memory, m, size).unwrap()
                );
            }
        }
        let old = root(&mut c, 17).unwrap();
        let new = root(&mut c, 40).unwrap();
        let proof = consistency_proof(&mut c, 17, 40).unwrap();
        assert!(verify_consistency(17, 40, &old, &new, &proof));
    }

    #[test]
    fn updates_and_deletes_outside_erasure_and_retention_are_refused_by_the_database() {
        let mut c = connection();
        append_many(&mut c, 0..4);

        for sql in [
            "UPDATE evidence SET record = '{}' WHERE id = 'evt_1'",
            "UPDATE evidence SET user_id = 'x'",
            "DELETE FROM evidence WHERE id = 'evt_1'",
            "DELETE FROM evidence_leaves WHERE id = 'evt_1'",
            "UPDATE evidence_leaves SET leaf_hash = x'00' WHERE id = 'evt_1'",
            "UPDATE evidence_leaves SET removed = NULL",
            "UPDATE merkle_nodes SET hash = x'00'",
            "DELETE FROM merkle_nodes",
        ] {
            let error = c.execute(sql, []).unwrap_err();
            assert!(
                error.to_string().contains("never") || error.to_string().contains("only"),
                "{sql}: {error}"
            );
        }
        assert_eq!(texts(&mut c, &RecordFilter::default()).len(), 4);
    }

    #[test]
    fn erasure_removes_content_keeps_leaves_and_every_proof_still_verifies() {
        let mut c = connection();
        append_many(&mut c, 0..9);
        let size = tree_size(&c).unwrap();
        let before = root(&mut c, size).unwrap();

        let erased = erase_user(&mut c, "a", "2026-12-04T00:00:00Z").unwrap();

        assert_eq!(erased, 5);
        assert_eq!(root(&mut c, size).unwrap(), before);
        assert_eq!(texts(&mut c, &RecordFilter::default()).len(), 4);
        assert!(matches!(
            super::record(&mut c, "evt_2").unwrap(),
            RecordLookup::Removed {
                how: Removal::Erased,
                leaf_index: 2,
                ..
            }
        ));
        let kept = leaf(&mut c, "evt_3").unwrap().unwrap();
        let proof = inclusion_proof(&mut c, kept.leaf_index, size).unwrap();
        assert!(verify_inclusion(&kept.leaf_hash, 3, size, &proof, &before));
        // Erased content is a duplicate if it is sent again, never a second leaf.
        let outcome = append(&mut c, &[record("evt_2", "a", 2)]).unwrap();
        assert_eq!(outcome.duplicates, 1);
        assert_eq!(tree_size(&c).unwrap(), size);
    }

    #[test]
    fn pruning_removes_only_older_records_in_chunks() {
        let mut c = connection();
        append_many(&mut c, 0..2500);

        let pruned = prune_before(&mut c, 2100, "2026-12-04T00:00:00Z").unwrap();

        assert_eq!(pruned, 2100);
        assert_eq!(texts(&mut c, &RecordFilter::default()).len(), 400);
        assert_eq!(tree_size(&c).unwrap(), 2500);
        assert!(matches!(
            super::record(&mut c, "evt_0").unwrap(),
            RecordLookup::Removed {
                how: Removal::Pruned,
                ..
            }
        ));
    }

    #[test]
    fn a_database_from_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("evidence.sqlite");
        let connection = Connection::open(&path).unwrap();
        connection.pragma_update(None, "user_version", 7).unwrap();
        drop(connection);

        let result = SqliteStore::open(&path);

        assert!(matches!(
            result,
            Err(StoreError::UnknownSchema { found: 7, .. })
        ));
    }

    #[test]
    fn a_version_one_database_gets_its_records_as_leaves_in_arrival_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("evidence.sqlite");
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(RECORDS).unwrap();
            for i in 0..5 {
                old.execute(
                    "INSERT INTO evidence (id, timestamp, timestamp_unix_ns, key_id, record) \
                     VALUES (?1, 't', 0, 'k', ?2)",
                    params![format!("evt_{i}"), format!(r#"{{"id":"evt_{i}"}}"#)],
                )
                .unwrap();
            }
            old.pragma_update(None, "user_version", 1).unwrap();
        }

        let store = SqliteStore::open(&path).unwrap();
        let mut c = store.connection.lock().unwrap();

        assert_eq!(tree_size(&c).unwrap(), 5);
        let expected: Vec<Hash> = (0..5)
            .map(|i| leaf_hash(format!(r#"{{"id":"evt_{i}"}}"#).as_bytes()))
            .collect();
        assert_eq!(
            root(&mut c, 5).unwrap(),
            merkle::root(&mut MemoryTree::new(expected), 5).unwrap()
        );
        append(&mut c, &[record("evt_new", "a", 1)]).unwrap();
        assert_eq!(leaf(&mut c, "evt_new").unwrap().unwrap().leaf_index, 5);
    }

    #[test]
    fn a_reopened_database_keeps_its_records_and_its_tree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("evidence.sqlite");
        let before = {
            let store = SqliteStore::open(&path).unwrap();
            let mut c = store.connection.lock().unwrap();
            append_many(&mut c, 0..7);
            root(&mut c, 7).unwrap()
        };

        let store = SqliteStore::open(&path).unwrap();
        let mut c = store.connection.lock().unwrap();

        assert!(matches!(
            super::record(&mut c, "evt_1").unwrap(),
            RecordLookup::Stored(_)
        ));
        assert_eq!(root(&mut c, 7).unwrap(), before);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("evidence.sqlite");
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();

        let Err(error) = SqliteStore::open(&path) else {
            panic!("opening a non-database should fail");
        };

        assert!(error.to_string().contains("evidence.sqlite"));
    }
}
