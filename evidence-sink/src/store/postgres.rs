//! The PostgreSQL backend, for deployments that run several sink replicas on one database.
//!
//! The tables, their meaning and their triggers are those of [`super::sqlite`]: `evidence`
//! (records; `seq` is an identity column), `evidence_leaves` (one row per Merkle leaf) and
//! `merkle_nodes` (every complete interior subtree). PL/pgSQL triggers refuse every UPDATE
//! and DELETE that erasure and retention do not make, and refuse TRUNCATE on all three.
//! `mercator_schema` holds the schema version (2, the same as SQLite's).
//!
//! # Several replicas, one tree
//!
//! Every replica may append. An append runs in one transaction that first takes
//! `LOCK TABLE evidence_leaves IN EXCLUSIVE MODE`: appends (and erasures) from every
//! replica queue on that lock, while reads go on. Under the lock the transaction reads the
//! tree size from the database (`MAX(leaf_index) + 1`, never a counter kept in a process),
//! checks duplicates against what is committed, and writes its records, leaves and nodes.
//! So leaf indices are handed out once, in commit order, and every replica serves the same
//! tree. The `seq` cursor is taken under the same lock, so it grows in commit order too: a
//! reader paging by `seq` never skips a record committed later with a smaller `seq`.
//! Schema setup at start is serialized by a transaction-scoped advisory lock, so replicas
//! may start together.
//!
//! Proofs read only nodes of complete subtrees, which never change: each proof is run once
//! against a recording source to learn which nodes it needs ([`NodeMap`]), those are fetched
//! in one round trip, and the proof is run again against them.
//!
//! Known limits: the connection has no TLS (use a Unix socket, loopback or a private
//! network); each sink process keeps a fixed pool of [`CONNECTIONS`] connections, reopened
//! when the server dropped them; PostgreSQL 14 or newer (`CREATE OR REPLACE TRIGGER`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::TryStreamExt;
use mercator_evidence::merkle::{self, node_hash, record_leaf_hash, Hash, NodeSource, ProofError};
use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, GenericClient, NoTls};

use super::{
    BatchOutcome, LeafInfo, Page, RecordFilter, RecordLookup, Removal, StoreError, StoredRow,
};
use crate::error::SinkError;
use crate::intake::VerifiedRecord;

/// The schema version this code writes, the same as SQLite's version 2.
const SCHEMA_VERSION: i32 = 2;

/// How many connections one sink process keeps.
pub const CONNECTIONS: usize = 4;

/// The advisory lock that serializes schema setup between replicas ("mercator").
const SETUP_LOCK: i64 = 0x6d65_7263_6174_6f72;

/// How many records one retention transaction removes.
const PRUNE_CHUNK: i64 = 1000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS evidence (
    seq               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                TEXT   NOT NULL UNIQUE,
    timestamp         TEXT   NOT NULL,
    timestamp_unix_ns BIGINT NOT NULL,
    request_id        TEXT,
    user_id           TEXT,
    provider          TEXT,
    model             TEXT,
    decision          TEXT,
    key_id            TEXT   NOT NULL,
    record            TEXT   NOT NULL
);
CREATE INDEX IF NOT EXISTS evidence_by_timestamp  ON evidence (timestamp_unix_ns);
CREATE INDEX IF NOT EXISTS evidence_by_request_id ON evidence (request_id);
CREATE INDEX IF NOT EXISTS evidence_by_user_id    ON evidence (user_id, timestamp_unix_ns);
CREATE INDEX IF NOT EXISTS evidence_by_provider   ON evidence (provider);
CREATE INDEX IF NOT EXISTS evidence_by_model      ON evidence (model);
CREATE INDEX IF NOT EXISTS evidence_by_decision   ON evidence (decision, timestamp_unix_ns);
CREATE INDEX IF NOT EXISTS evidence_by_key_id     ON evidence (key_id);

CREATE TABLE IF NOT EXISTS evidence_leaves (
    leaf_index BIGINT PRIMARY KEY,
    id         TEXT   NOT NULL UNIQUE,
    leaf_hash  BYTEA  NOT NULL CHECK (octet_length(leaf_hash) = 32),
    removed    TEXT   CHECK (removed IN ('erased', 'pruned')),
    removed_at TEXT
);
CREATE TABLE IF NOT EXISTS merkle_nodes (
    level INTEGER NOT NULL,
    idx   BIGINT  NOT NULL,
    hash  BYTEA   NOT NULL,
    PRIMARY KEY (level, idx)
);

CREATE OR REPLACE FUNCTION mercator_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', TG_ARGV[0];
END
$$;
CREATE OR REPLACE FUNCTION mercator_evidence_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM evidence_leaves WHERE id = OLD.id AND removed IS NOT NULL) THEN
        RAISE EXCEPTION 'evidence records are append-only: only erasure or retention deletes one';
    END IF;
    RETURN OLD;
END
$$;
CREATE OR REPLACE FUNCTION mercator_leaf_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.removed IS NOT NULL OR NEW.removed IS NULL OR NEW.removed_at IS NULL
       OR NEW.leaf_index IS DISTINCT FROM OLD.leaf_index OR NEW.id IS DISTINCT FROM OLD.id
       OR NEW.leaf_hash IS DISTINCT FROM OLD.leaf_hash THEN
        RAISE EXCEPTION 'Merkle leaves only change from kept to erased or pruned';
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER evidence_is_never_updated BEFORE UPDATE ON evidence FOR EACH ROW
    EXECUTE FUNCTION mercator_refuse('evidence records are append-only: UPDATE is refused');
CREATE OR REPLACE TRIGGER evidence_is_deleted_only_when_removed BEFORE DELETE ON evidence
    FOR EACH ROW EXECUTE FUNCTION mercator_evidence_delete();
CREATE OR REPLACE TRIGGER evidence_is_never_truncated BEFORE TRUNCATE ON evidence
    FOR EACH STATEMENT EXECUTE FUNCTION mercator_refuse('evidence records are never truncated');
CREATE OR REPLACE TRIGGER leaves_are_never_deleted BEFORE DELETE ON evidence_leaves
    FOR EACH ROW EXECUTE FUNCTION mercator_refuse('Merkle leaves are never deleted');
CREATE OR REPLACE TRIGGER leaves_are_never_truncated BEFORE TRUNCATE ON evidence_leaves
    FOR EACH STATEMENT EXECUTE FUNCTION mercator_refuse('Merkle leaves are never deleted');
CREATE OR REPLACE TRIGGER leaves_change_only_to_removed BEFORE UPDATE ON evidence_leaves
    FOR EACH ROW EXECUTE FUNCTION mercator_leaf_update();
CREATE OR REPLACE TRIGGER nodes_are_never_updated BEFORE UPDATE ON merkle_nodes
    FOR EACH ROW EXECUTE FUNCTION mercator_refuse('Merkle nodes are never updated');
CREATE OR REPLACE TRIGGER nodes_are_never_deleted BEFORE DELETE ON merkle_nodes
    FOR EACH ROW EXECUTE FUNCTION mercator_refuse('Merkle nodes are never deleted');
CREATE OR REPLACE TRIGGER nodes_are_never_truncated BEFORE TRUNCATE ON merkle_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION mercator_refuse('Merkle nodes are never deleted');
";

/// The PostgreSQL store, cheap to clone and share between requests.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Pool>,
}

struct Pool {
    config: Config,
    slots: Vec<Mutex<Option<Client>>>,
    next: AtomicUsize,
}

/// A PostgreSQL URL without its password, for messages and logs.
pub fn describe(config: &Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}

async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "a PostgreSQL connection ended with an error");
        }
    });
    Ok(client)
}

impl PostgresStore {
    /// Connects to the database at `url` (a `postgres://` URL) and creates or checks the
    /// schema.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let config: Config = url.parse().map_err(|source| StoreError::Postgres {
            database: "the --db URL".to_owned(),
            source,
        })?;
        let database = describe(&config);
        let failed = |source| StoreError::Postgres {
            database: database.clone(),
            source,
        };

        let mut client = connect(&config).await.map_err(failed)?;
        let transaction = client.transaction().await.map_err(failed)?;
        transaction
            .execute("SELECT pg_advisory_xact_lock($1)", &[&SETUP_LOCK])
            .await
            .map_err(failed)?;
        transaction
            .batch_execute("CREATE TABLE IF NOT EXISTS mercator_schema (version INTEGER NOT NULL)")
            .await
            .map_err(failed)?;
        let found: Option<i32> = transaction
            .query_opt("SELECT MAX(version) FROM mercator_schema", &[])
            .await
            .map_err(failed)?
            .and_then(|row| row.get(0));
        match found {
            Some(SCHEMA_VERSION) | None => {}
            Some(found) => {
                return Err(StoreError::UnknownSchema {
                    path: database,
                    found: i64::from(found),
                })
            }
        }
        transaction.batch_execute(SCHEMA).await.map_err(failed)?;
        transaction
            .batch_execute("LOCK TABLE evidence_leaves IN EXCLUSIVE MODE")
            .await
            .map_err(failed)?;
        complete_nodes(&transaction)
            .await
            .map_err(|e| StoreError::Inconsistent {
                path: database.clone(),
                reason: e.to_string(),
            })?;
        if found.is_none() {
            transaction
                .execute(
                    "INSERT INTO mercator_schema (version) VALUES ($1)",
                    &[&SCHEMA_VERSION],
                )
                .await
                .map_err(failed)?;
        }
        transaction.commit().await.map_err(failed)?;

        let mut slots = Vec::with_capacity(CONNECTIONS);
        slots.push(Mutex::new(Some(client)));
        slots.extend((1..CONNECTIONS).map(|_| Mutex::new(None)));
        Ok(Self {
            inner: Arc::new(Pool {
                config,
                slots,
                next: AtomicUsize::new(0),
            }),
        })
    }

    /// The database, without its password.
    pub fn describe(&self) -> String {
        describe(&self.inner.config)
    }

    /// A connection of the pool, opened again if the server dropped it: a free one if
    /// there is one, else the next in turn, once it is free.
    async fn checkout(&self) -> Result<MutexGuard<'_, Option<Client>>, SinkError> {
        let slots = &self.inner.slots;
        let free = slots.iter().find_map(|slot| slot.try_lock().ok());
        let mut guard = match free {
            Some(guard) => guard,
            None => {
                let index = self.inner.next.fetch_add(1, Ordering::Relaxed) % slots.len();
                slots
                    .get(index)
                    .ok_or_else(|| SinkError::Internal("the connection pool is empty".to_owned()))?
                    .lock()
                    .await
            }
        };
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = Some(connect(&self.inner.config).await?);
        }
        Ok(guard)
    }

    /// Runs `work` with a connection of the pool.
    async fn with_client<T>(
        &self,
        work: impl AsyncFnOnce(&mut Client) -> Result<T, SinkError>,
    ) -> Result<T, SinkError> {
        let mut guard = self.checkout().await?;
        let client = guard
            .as_mut()
            .ok_or_else(|| SinkError::Internal("no PostgreSQL connection".to_owned()))?;
        work(client).await
    }

    /// See [`super::Store::append`].
    pub async fn append(&self, records: &[VerifiedRecord]) -> Result<BatchOutcome, SinkError> {
        self.with_client(async |c| append(c, records).await).await
    }

    /// See [`super::Store::record`].
    pub async fn record(&self, id: &str) -> Result<RecordLookup, SinkError> {
        self.with_client(async |c| record(c, id).await).await
    }

    /// See [`super::Store::leaf`].
    pub async fn leaf(&self, id: &str) -> Result<Option<LeafInfo>, SinkError> {
        self.with_client(async |c| leaf(c, id).await).await
    }

    /// See [`super::Store::tree_size`].
    pub async fn tree_size(&self) -> Result<u64, SinkError> {
        self.with_client(async |c| tree_size(c).await).await
    }

    /// See [`super::Store::root`].
    pub async fn root(&self, size: u64) -> Result<Hash, SinkError> {
        self.with_client(async |c| {
            prove(c, |nodes| {
                merkle::root(nodes, size).map_err(ProofError::Source)
            })
            .await
        })
        .await
    }

    /// See [`super::Store::inclusion_proof`].
    pub async fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, SinkError> {
        self.with_client(async |c| {
            prove(c, |nodes| merkle::inclusion_proof(nodes, index, size)).await
        })
        .await
    }

    /// See [`super::Store::consistency_proof`].
    pub async fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, SinkError> {
        self.with_client(async |c| {
            prove(c, |nodes| merkle::consistency_proof(nodes, first, second)).await
        })
        .await
    }

    /// See [`super::Store::page`].
    pub async fn page(
        &self,
        filter: &RecordFilter,
        page_of: Page,
    ) -> Result<Vec<StoredRow>, SinkError> {
        self.with_client(async |c| page(c, filter, page_of).await)
            .await
    }

    /// See [`super::Store::page_with_proofs`].
    pub async fn page_with_proofs(
        &self,
        filter: &RecordFilter,
        page_of: Page,
        size: u64,
    ) -> Result<Vec<(StoredRow, Vec<Hash>)>, SinkError> {
        self.with_client(async |c| {
            let rows = page(
                c,
                filter,
                Page {
                    leaves_below: Some(size),
                    ..page_of
                },
            )
            .await?;
            // Learn every node that the page's proofs read, fetch them at once, then prove.
            let mut recorder = NodeMap::recording();
            for row in &rows {
                merkle::inclusion_proof(&mut recorder, row.leaf_index, size)
                    .map_err(proof_error)?;
            }
            let mut nodes = NodeMap::filled(fetch_nodes(c, &recorder.wanted).await?);
            rows.into_iter()
                .map(|row| {
                    let proof = merkle::inclusion_proof(&mut nodes, row.leaf_index, size)
                        .map_err(proof_error)?;
                    Ok((row, proof))
                })
                .collect()
        })
        .await
    }

    /// See [`super::Store::erase_user`].
    pub async fn erase_user(&self, user_id: &str, at: &str) -> Result<usize, SinkError> {
        self.with_client(async |c| {
            let transaction = c.transaction().await?;
            // Erasures queue with appends, so a record being appended is erased or not, whole.
            transaction
                .batch_execute("LOCK TABLE evidence_leaves IN EXCLUSIVE MODE")
                .await?;
            transaction
                .execute(
                    "UPDATE evidence_leaves SET removed = 'erased', removed_at = $1 \
                     WHERE id IN (SELECT id FROM evidence WHERE user_id = $2)",
                    &[&at, &user_id],
                )
                .await?;
            let erased = transaction
                .execute("DELETE FROM evidence WHERE user_id = $1", &[&user_id])
                .await?;
            transaction.commit().await?;
            to_count(erased)
        })
        .await
    }

    /// See [`super::Store::prune_before`].
    pub async fn prune_before(&self, cutoff: i64, at: &str) -> Result<usize, SinkError> {
        self.with_client(async |c| {
            let mut pruned = 0;
            loop {
                let transaction = c.transaction().await?;
                let ids: Vec<String> = transaction
                    .query(
                        "SELECT id FROM evidence WHERE timestamp_unix_ns < $1 ORDER BY seq \
                         LIMIT $2",
                        &[&cutoff, &PRUNE_CHUNK],
                    )
                    .await?
                    .iter()
                    .map(|row| row.try_get(0))
                    .collect::<Result<_, _>>()?;
                if ids.is_empty() {
                    return Ok(pruned);
                }
                transaction
                    .execute(
                        "UPDATE evidence_leaves SET removed = 'pruned', removed_at = $1 \
                         WHERE id = ANY($2) AND removed IS NULL",
                        &[&at, &ids],
                    )
                    .await?;
                let deleted = transaction
                    .execute("DELETE FROM evidence WHERE id = ANY($1)", &[&ids])
                    .await?;
                transaction.commit().await?;
                pruned += to_count(deleted)?;
            }
        })
        .await
    }

    /// See [`super::Store::ping`].
    pub async fn ping(&self) -> Result<(), SinkError> {
        self.with_client(async |c| {
            let _one: i32 = c.query_one("SELECT 1", &[]).await?.try_get(0)?;
            Ok(())
        })
        .await
    }
}

fn to_count(rows: u64) -> Result<usize, SinkError> {
    usize::try_from(rows).map_err(|_| SinkError::Internal(format!("{rows} rows is too many")))
}

fn to_sql_index(index: u64) -> Result<i64, SinkError> {
    i64::try_from(index).map_err(|_| SinkError::Internal(format!("index {index} is too large")))
}

fn from_sql_index(index: i64) -> Result<u64, SinkError> {
    u64::try_from(index).map_err(|_| SinkError::Internal(format!("negative index {index}")))
}

fn to_hash(bytes: &[u8], what: &str) -> Result<Hash, SinkError> {
    Hash::try_from(bytes)
        .map_err(|_| SinkError::Internal(format!("the Merkle tree has no valid hash at {what}")))
}

/// How many leaves the tree has, as committed (or as this transaction sees it).
async fn tree_size(client: &impl GenericClient) -> Result<u64, SinkError> {
    let size: i64 = client
        .query_one(
            "SELECT COALESCE(MAX(leaf_index) + 1, 0) FROM evidence_leaves",
            &[],
        )
        .await?
        .try_get(0)?;
    from_sql_index(size)
}

/// Computes any interior node that is missing, level by level from the leaves (the nodes
/// are derived data; see [`super::sqlite`]). Holds one level in memory while it does.
async fn complete_nodes(client: &impl GenericClient) -> Result<(), SinkError> {
    let size = tree_size(client).await?;
    let expected: u64 = (1..64).map(|level| size >> level).sum();
    let stored: i64 = client
        .query_one("SELECT COUNT(*) FROM merkle_nodes", &[])
        .await?
        .try_get(0)?;
    if u64::try_from(stored).ok() == Some(expected) {
        return Ok(());
    }

    tracing::warn!(
        tree.size = size,
        nodes.expected = expected,
        nodes.stored = stored,
        "Merkle nodes are incomplete; computing the missing ones from the leaves"
    );
    let mut below: Vec<Hash> = client
        .query(
            "SELECT leaf_hash FROM evidence_leaves ORDER BY leaf_index",
            &[],
        )
        .await?
        .iter()
        .map(|row| to_hash(row.try_get(0)?, "a leaf"))
        .collect::<Result<_, _>>()?;
    let insert = client
        .prepare(
            "INSERT INTO merkle_nodes (level, idx, hash) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .await?;
    let mut level = 0i32;
    while below.len() >= 2 {
        level += 1;
        let mut parents = Vec::with_capacity(below.len() / 2);
        for (index, pair) in below.chunks_exact(2).enumerate() {
            let [left, right] = pair else { continue };
            let hash = node_hash(left, right);
            let index = i64::try_from(index)
                .map_err(|_| SinkError::Internal("tree too large".to_owned()))?;
            client
                .execute(&insert, &[&level, &index, &hash.as_slice()])
                .await?;
            parents.push(hash);
        }
        below = parents;
    }
    Ok(())
}

/// Stores a verified batch in one transaction, under the append lock; see the module docs.
async fn append(
    client: &mut Client,
    records: &[VerifiedRecord],
) -> Result<BatchOutcome, SinkError> {
    let transaction = client.transaction().await?;
    transaction
        .batch_execute("LOCK TABLE evidence_leaves IN EXCLUSIVE MODE")
        .await?;
    let mut outcome = BatchOutcome {
        accepted: 0,
        duplicates: 0,
    };
    let mut size = tree_size(&transaction).await?;
    // Nodes written by this batch, which the next leaves' parents may need.
    let mut written: HashMap<(u32, u64), Hash> = HashMap::new();

    let find = transaction
        .prepare("SELECT leaf_hash FROM evidence_leaves WHERE id = $1")
        .await?;
    let insert = transaction
        .prepare(
            "INSERT INTO evidence (id, timestamp, timestamp_unix_ns, request_id, user_id, \
             provider, model, decision, key_id, record) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .await?;
    let insert_leaf = transaction
        .prepare("INSERT INTO evidence_leaves (leaf_index, id, leaf_hash) VALUES ($1, $2, $3)")
        .await?;
    let insert_node = transaction
        .prepare("INSERT INTO merkle_nodes (level, idx, hash) VALUES ($1, $2, $3)")
        .await?;

    for (index, record) in records.iter().enumerate() {
        let leaf = record_leaf_hash(&record.canonical);
        let stored: Option<Vec<u8>> = match transaction.query_opt(&find, &[&record.id]).await? {
            Some(row) => Some(row.try_get(0)?),
            None => None,
        };
        match stored {
            Some(hash) if hash.as_slice() == leaf.as_slice() => outcome.duplicates += 1,
            Some(_) => {
                // Dropping the transaction rolls the whole batch back.
                return Err(SinkError::ConflictingDuplicate(format!(
                    "record {index}: id {} is already stored with different content; \
                     stored evidence is never replaced",
                    record.id
                )));
            }
            None => {
                transaction
                    .execute(
                        &insert,
                        &[
                            &record.id,
                            &record.timestamp,
                            &record.timestamp_unix_ns,
                            &record.request_id,
                            &record.user_id,
                            &record.provider,
                            &record.model,
                            &record.decision,
                            &record.key_id,
                            &record.canonical,
                        ],
                    )
                    .await?;
                transaction
                    .execute(
                        &insert_leaf,
                        &[&to_sql_index(size)?, &record.id, &leaf.as_slice()],
                    )
                    .await?;
                written.insert((0, size), leaf);

                // A right child completes its parent, whose left half is stored already.
                let (mut level, mut position, mut hash) = (0u32, size, leaf);
                while position & 1 == 1 {
                    let left = match written.get(&(level, position - 1)) {
                        Some(left) => *left,
                        None => node_at(&transaction, level, position - 1).await?,
                    };
                    hash = node_hash(&left, &hash);
                    level += 1;
                    position >>= 1;
                    let level_sql = i32::try_from(level)
                        .map_err(|_| SinkError::Internal("tree too deep".to_owned()))?;
                    transaction
                        .execute(
                            &insert_node,
                            &[&level_sql, &to_sql_index(position)?, &hash.as_slice()],
                        )
                        .await?;
                    written.insert((level, position), hash);
                }
                size += 1;
                outcome.accepted += 1;
            }
        }
    }

    transaction.commit().await?;
    Ok(outcome)
}

/// The stored hash of the perfect subtree at `level` and `index`.
async fn node_at(client: &impl GenericClient, level: u32, index: u64) -> Result<Hash, SinkError> {
    let mut nodes = fetch_nodes(client, &[(level, index)]).await?;
    nodes.remove(&(level, index)).ok_or_else(|| {
        SinkError::Internal(format!(
            "the Merkle tree has no hash at level {level}, index {index}"
        ))
    })
}

/// The stored hashes of these subtrees, in one round trip per kind (leaves, nodes).
async fn fetch_nodes(
    client: &impl GenericClient,
    wanted: &[(u32, u64)],
) -> Result<HashMap<(u32, u64), Hash>, SinkError> {
    let mut leaves: Vec<i64> = Vec::new();
    let (mut levels, mut indices): (Vec<i32>, Vec<i64>) = (Vec::new(), Vec::new());
    for &(level, index) in wanted {
        if level == 0 {
            leaves.push(to_sql_index(index)?);
        } else {
            levels.push(
                i32::try_from(level)
                    .map_err(|_| SinkError::Internal("tree too deep".to_owned()))?,
            );
            indices.push(to_sql_index(index)?);
        }
    }

    let mut found = HashMap::with_capacity(wanted.len());
    if !leaves.is_empty() {
        for row in client
            .query(
                "SELECT leaf_index, leaf_hash FROM evidence_leaves WHERE leaf_index = ANY($1)",
                &[&leaves],
            )
            .await?
        {
            let index = from_sql_index(row.try_get(0)?)?;
            let hash: &[u8] = row.try_get(1)?;
            found.insert((0, index), to_hash(hash, &format!("leaf {index}"))?);
        }
    }
    if !levels.is_empty() {
        for row in client
            .query(
                "SELECT n.level, n.idx, n.hash FROM merkle_nodes n \
                 JOIN unnest($1::integer[], $2::bigint[]) AS w(level, idx) \
                 ON n.level = w.level AND n.idx = w.idx",
                &[&levels, &indices],
            )
            .await?
        {
            let level: i32 = row.try_get(0)?;
            let index = from_sql_index(row.try_get(1)?)?;
            let hash: &[u8] = row.try_get(2)?;
            let level = u32::try_from(level)
                .map_err(|_| SinkError::Internal(format!("negative level {level}")))?;
            found.insert(
                (level, index),
                to_hash(hash, &format!("level {level}, index {index}"))?,
            );
        }
    }
    Ok(found)
}

/// A node source that first records which nodes a proof reads, then answers from the
/// nodes fetched for them. A proof's reads depend only on the tree sizes, so the second
/// run reads exactly what the first one recorded.
struct NodeMap {
    wanted: Vec<(u32, u64)>,
    nodes: Option<HashMap<(u32, u64), Hash>>,
}

impl NodeMap {
    fn recording() -> Self {
        Self {
            wanted: Vec::new(),
            nodes: None,
        }
    }

    fn filled(nodes: HashMap<(u32, u64), Hash>) -> Self {
        Self {
            wanted: Vec::new(),
            nodes: Some(nodes),
        }
    }
}

impl NodeSource for NodeMap {
    type Error = SinkError;

    fn node(&mut self, level: u32, index: u64) -> Result<Hash, SinkError> {
        match &self.nodes {
            None => {
                self.wanted.push((level, index));
                Ok([0; 32])
            }
            Some(nodes) => nodes.get(&(level, index)).copied().ok_or_else(|| {
                SinkError::Internal(format!(
                    "the Merkle tree has no hash at level {level}, index {index}"
                ))
            }),
        }
    }
}

/// Runs `proof` once to learn its nodes, fetches them, and runs it again on them.
async fn prove<T>(
    client: &impl GenericClient,
    proof: impl Fn(&mut NodeMap) -> Result<T, ProofError<SinkError>>,
) -> Result<T, SinkError> {
    let mut recorder = NodeMap::recording();
    proof(&mut recorder).map_err(proof_error)?;
    let mut nodes = NodeMap::filled(fetch_nodes(client, &recorder.wanted).await?);
    proof(&mut nodes).map_err(proof_error)
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

/// What the store knows of `id`.
async fn record(client: &impl GenericClient, id: &str) -> Result<RecordLookup, SinkError> {
    if let Some(row) = client
        .query_opt("SELECT record FROM evidence WHERE id = $1", &[&id])
        .await?
    {
        return Ok(RecordLookup::Stored(row.try_get(0)?));
    }
    match leaf(client, id).await? {
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
async fn leaf(client: &impl GenericClient, id: &str) -> Result<Option<LeafInfo>, SinkError> {
    let Some(row) = client
        .query_opt(
            "SELECT leaf_index, leaf_hash, removed, removed_at FROM evidence_leaves \
             WHERE id = $1",
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let bad = || SinkError::Internal(format!("the leaf of {id} is malformed"));
    let leaf_index = u64::try_from(row.try_get::<_, i64>(0)?).map_err(|_| bad())?;
    let leaf_hash = Hash::try_from(row.try_get::<_, &[u8]>(1)?).map_err(|_| bad())?;
    let removed_at: Option<String> = row.try_get(3)?;
    let removed = match row.try_get::<_, Option<&str>>(2)? {
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
async fn page(
    client: &impl GenericClient,
    filter: &RecordFilter,
    page: Page,
) -> Result<Vec<StoredRow>, SinkError> {
    let mut conditions: Vec<String> = vec!["e.seq > $1".to_owned()];
    let mut values: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(page.after)];
    let mut add = |condition: &str, value: Box<dyn ToSql + Sync + Send>| {
        values.push(value);
        conditions.push(format!("{condition} ${}", values.len()));
    };

    for (column, value) in [
        ("e.user_id =", &filter.user_id),
        ("e.request_id =", &filter.request_id),
        ("e.decision =", &filter.decision),
        ("e.provider =", &filter.provider),
        ("e.model =", &filter.model),
    ] {
        if let Some(value) = value {
            add(column, Box::new(value.clone()));
        }
    }
    if let Some(from) = filter.from_unix_ns {
        add("e.timestamp_unix_ns >=", Box::new(from));
    }
    if let Some(to) = filter.to_unix_ns {
        add("e.timestamp_unix_ns <", Box::new(to));
    }
    if let Some(below) = page.leaves_below {
        add("l.leaf_index <", Box::new(to_sql_index(below)?));
    }
    values.push(Box::new(i64::from(page.limit)));

    let sql = format!(
        "SELECT e.seq, l.leaf_index, e.record FROM evidence e \
         JOIN evidence_leaves l ON l.id = e.id WHERE {} ORDER BY e.seq LIMIT ${}",
        conditions.join(" AND "),
        values.len()
    );
    let parameters: Vec<&(dyn ToSql + Sync)> = values
        .iter()
        .map(|value| value.as_ref() as &(dyn ToSql + Sync))
        .collect();
    // Streamed, so that a page cut short by its byte budget never holds the rest.
    let rows = client.query_raw(&sql, parameters).await?;
    let mut rows = std::pin::pin!(rows);

    let mut page_rows = Vec::new();
    let mut bytes = 0usize;
    while let Some(row) = rows.try_next().await? {
        let text: String = row.try_get(2)?;
        bytes += text.len();
        page_rows.push(StoredRow {
            position: row.try_get(0)?,
            leaf_index: from_sql_index(row.try_get(1)?)?,
            text,
        });
        if bytes >= page.max_bytes {
            break;
        }
    }
    Ok(page_rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_database_is_refused_naming_it_without_its_password() {
        // Port 1 on loopback: nothing listens there.
        let url = "postgres://mercator:hunter2@127.0.0.1:1/evidence?connect_timeout=5";

        let Err(error) = PostgresStore::open(url).await else {
            panic!("opening an unreachable database should fail");
        };

        let message = error.to_string();
        assert!(
            message.contains("postgres://mercator@127.0.0.1:1/evidence"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
        assert!(message.contains("error connecting"), "{message}");
    }

    #[tokio::test]
    async fn a_url_that_does_not_parse_is_refused_without_echoing_it() {
        let Err(error) = PostgresStore::open("postgres://u:hunter2@host:notaport/db").await else {
            panic!("a bad URL should be refused");
        };

        let message = error.to_string();
        assert!(message.contains("--db"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }
}
