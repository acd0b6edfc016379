//! Where accepted evidence lives: the records, append-only, and the Merkle tree over them.
//!
//! [`Store`] is the one seam between the HTTP layer and a database. Everything the sink
//! needs from storage is one of its methods, and none of them leaks the database's types:
//! the HTTP layer, the Merkle proofs ([`mercator_evidence::merkle`]) and the tree heads
//! never know which database answers.
//!
//! Two backends answer: SQLite ([`sqlite`], the default: one file, one sink process) and
//! PostgreSQL ([`postgres`], for several sink replicas writing to one database). Both keep
//! the same tables (`evidence`, `evidence_leaves`, `merkle_nodes`; see [`sqlite`] for their
//! meaning and triggers). [`Store::open_db`] picks one from the sink's `--db` value: a
//! `postgres://` or `postgresql://` URL opens PostgreSQL, anything else is a SQLite path.
//!
//! Several replicas keep one tree because the tree's size is never counted in a process:
//! each append is one PostgreSQL transaction that locks the leaves table against other
//! writers, reads the size from the database, and commits its leaves and nodes before the
//! next append may start (see [`postgres`]). Proofs need the hashes of stored subtrees
//! through [`mercator_evidence::merkle::NodeSource`], whose calls depend only on the tree
//! sizes: the PostgreSQL backend runs a proof once against a recording source to learn
//! which nodes it reads, fetches them in one query, and runs it again against those.
//!
//! # The contract every backend keeps
//!
//! * A record is stored once, with the leaf `SHA-256(0x00 || canonical text)` at the next
//!   leaf index, in the same transaction; a batch is stored whole or not at all.
//! * Records are never updated. A record's content is deleted only by erasure or retention,
//!   which mark its leaf `erased` or `pruned` first; the leaf hash and every tree node stay.
//! * The tree's nodes are derived from the leaves and can be rebuilt from them.
//!
//! `tests/store.rs` checks this contract through [`Store`] on both backends (PostgreSQL
//! when `MERCATOR_TEST_POSTGRES_URL` names a server; `scripts/test-postgres.sh` starts one).

pub mod postgres;
pub mod sqlite;

use mercator_evidence::merkle::Hash;

use crate::error::SinkError;
use crate::intake::VerifiedRecord;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

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

    /// PostgreSQL refused the connection or the schema setup.
    #[error(
        "cannot open evidence database {database}: {}",
        crate::error::postgres_cause(source)
    )]
    Postgres {
        /// The database, without its password.
        database: String,
        /// PostgreSQL's reason.
        source: tokio_postgres::Error,
    },

    /// The database was written by a version of the sink with another schema.
    #[error(
        "evidence database {path} has schema version {found}; this sink knows versions 1 \
         and {}",
        sqlite::SCHEMA_VERSION
    )]
    UnknownSchema {
        /// The database.
        path: String,
        /// The version found in it.
        found: i64,
    },

    /// The tree's leaves do not match the records (a leaf missing, a hash wrong).
    #[error("evidence database {path}: {reason}")]
    Inconsistent {
        /// The database.
        path: String,
        /// What does not match.
        reason: String,
    },
}

/// Whether the sink's `--db` value names a PostgreSQL database rather than a SQLite file.
pub fn is_postgres_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
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
    /// Exact `provider`.
    pub provider: Option<String>,
    /// Exact `model`.
    pub model: Option<String>,
    /// Records at or after this instant (Unix nanoseconds).
    pub from_unix_ns: Option<i64>,
    /// Records strictly before this instant (Unix nanoseconds).
    pub to_unix_ns: Option<i64>,
}

/// Which part of the matching records one read returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Only records stored after this position (a [`StoredRow::position`]); 0 for the start.
    pub after: i64,
    /// At most this many records.
    pub limit: u32,
    /// Stop adding records once their texts reach this many bytes (at least one record is
    /// always returned), so that a page of large records stays small in memory.
    pub max_bytes: usize,
    /// Only records whose leaf index is below this: the tree size of a tree head.
    pub leaves_below: Option<u64>,
}

/// One stored record as a page returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    /// Its position in arrival order: a page cursor, never reused.
    pub position: i64,
    /// Its leaf index in the Merkle tree.
    pub leaf_index: u64,
    /// Its canonical JSON text, exactly as signed and stored.
    pub text: String,
}

/// Why a record's content is gone while its leaf stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Erased on request (the GDPR right to erasure).
    Erased,
    /// Older than the retention period.
    Pruned,
}

impl Removal {
    /// The word stored and shown, also the error code of a removed record: `erased` or
    /// `pruned`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Erased => "erased",
            Self::Pruned => "pruned",
        }
    }
}

/// A record's leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// Its index, from 0.
    pub leaf_index: u64,
    /// `SHA-256(0x00 || canonical text)`.
    pub leaf_hash: Hash,
    /// Whether, how and when its content was removed.
    pub removed: Option<(Removal, String)>,
}

/// What the store knows of a record id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordLookup {
    /// The record, as stored.
    Stored(String),
    /// Its content was removed; its leaf stays.
    Removed {
        /// Erased or pruned.
        how: Removal,
        /// When, RFC 3339.
        at: String,
        /// Its leaf index.
        leaf_index: u64,
    },
    /// The store never accepted this id.
    Unknown,
}

/// The evidence store, cheap to clone and share between requests. See the module docs for
/// how the backends differ.
#[derive(Clone)]
pub enum Store {
    /// SQLite, one file (or memory, for tests).
    Sqlite(SqliteStore),
    /// PostgreSQL, shared by any number of sink replicas.
    Postgres(PostgresStore),
}

impl Store {
    /// Opens the store that the sink's `--db` value names: a `postgres://` (or
    /// `postgresql://`) URL connects to PostgreSQL, anything else is a SQLite file, created
    /// when missing.
    pub async fn open_db(db: &str) -> Result<Self, StoreError> {
        if is_postgres_url(db) {
            PostgresStore::open(db).await.map(Self::Postgres)
        } else {
            Self::open(std::path::Path::new(db))
        }
    }

    /// Which database answers, for the start-up log line (never a password).
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(store) => format!("sqlite:{}", store.path()),
            Self::Postgres(store) => store.describe(),
        }
    }

    /// Opens (or creates) the SQLite database at `path`.
    pub fn open(path: &std::path::Path) -> Result<Self, StoreError> {
        SqliteStore::open(path).map(Self::Sqlite)
    }

    /// A SQLite store that lives in memory only, for tests.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        SqliteStore::open_in_memory().map(Self::Sqlite)
    }

    /// Stores a verified batch and appends its new records to the tree, all or nothing.
    pub async fn append(&self, records: Vec<VerifiedRecord>) -> Result<BatchOutcome, SinkError> {
        match self {
            Self::Sqlite(store) => store.run(move |c| sqlite::append(c, &records)).await,
            Self::Postgres(store) => store.append(&records).await,
        }
    }

    /// What the store knows of `id`.
    pub async fn record(&self, id: String) -> Result<RecordLookup, SinkError> {
        match self {
            Self::Sqlite(store) => store.run(move |c| sqlite::record(c, &id)).await,
            Self::Postgres(store) => store.record(&id).await,
        }
    }

    /// The leaf of `id`, if the store ever accepted it.
    pub async fn leaf(&self, id: String) -> Result<Option<LeafInfo>, SinkError> {
        match self {
            Self::Sqlite(store) => store.run(move |c| sqlite::leaf(c, &id)).await,
            Self::Postgres(store) => store.leaf(&id).await,
        }
    }

    /// How many leaves the tree has.
    pub async fn tree_size(&self) -> Result<u64, SinkError> {
        match self {
            Self::Sqlite(store) => store.run(|c| sqlite::tree_size(c)).await,
            Self::Postgres(store) => store.tree_size().await,
        }
    }

    /// The root of the tree of the first `size` leaves (`size` at most the tree size).
    pub async fn root(&self, size: u64) -> Result<Hash, SinkError> {
        match self {
            Self::Sqlite(store) => store.run(move |c| sqlite::root(c, size)).await,
            Self::Postgres(store) => store.root(size).await,
        }
    }

    /// The inclusion proof of leaf `index` in the tree of `size` leaves.
    pub async fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, SinkError> {
        match self {
            Self::Sqlite(store) => {
                store
                    .run(move |c| sqlite::inclusion_proof(c, index, size))
                    .await
            }
            Self::Postgres(store) => store.inclusion_proof(index, size).await,
        }
    }

    /// The consistency proof between the trees of `first` and `second` leaves.
    pub async fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, SinkError> {
        match self {
            Self::Sqlite(store) => {
                store
                    .run(move |c| sqlite::consistency_proof(c, first, second))
                    .await
            }
            Self::Postgres(store) => store.consistency_proof(first, second).await,
        }
    }

    /// One page of the records that pass `filter`, in arrival order.
    pub async fn page(
        &self,
        filter: RecordFilter,
        page: Page,
    ) -> Result<Vec<StoredRow>, SinkError> {
        match self {
            Self::Sqlite(store) => store.run(move |c| sqlite::page(c, &filter, page)).await,
            Self::Postgres(store) => store.page(&filter, page).await,
        }
    }

    /// One page of records with each one's inclusion proof in the tree of `size` leaves.
    pub async fn page_with_proofs(
        &self,
        filter: RecordFilter,
        page: Page,
        size: u64,
    ) -> Result<Vec<(StoredRow, Vec<Hash>)>, SinkError> {
        match self {
            Self::Sqlite(store) => {
                store
                    .run(move |c| sqlite::page_with_proofs(c, &filter, page, size))
                    .await
            }
            Self::Postgres(store) => store.page_with_proofs(&filter, page, size).await,
        }
    }

    /// Erases the content of every record of `user_id`; their leaves stay. Returns how many.
    pub async fn erase_user(&self, user_id: String, at: String) -> Result<usize, SinkError> {
        match self {
            Self::Sqlite(store) => {
                store
                    .run(move |c| sqlite::erase_user(c, &user_id, &at))
                    .await
            }
            Self::Postgres(store) => store.erase_user(&user_id, &at).await,
        }
    }

    /// Removes the content of records timestamped before `cutoff_unix_ns`; their leaves
    /// stay. Returns how many.
    pub async fn prune_before(&self, cutoff_unix_ns: i64, at: String) -> Result<usize, SinkError> {
        match self {
            Self::Sqlite(store) => {
                store
                    .run(move |c| sqlite::prune_before(c, cutoff_unix_ns, &at))
                    .await
            }
            Self::Postgres(store) => store.prune_before(cutoff_unix_ns, &at).await,
        }
    }

    /// Shows that the database answers.
    pub async fn ping(&self) -> Result<(), SinkError> {
        match self {
            Self::Sqlite(store) => store.run(sqlite::ping).await,
            Self::Postgres(store) => store.ping().await,
        }
    }
}
