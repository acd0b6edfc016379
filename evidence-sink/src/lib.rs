//! The evidence sink of Mercator Jupiter: it receives the signed evidence records that
//! the gateway's Envoy filter sends, verifies each one, keeps it append-only in SQLite under
//! a Merkle tree, and answers queries, exports, proofs and erasure requests.
//!
//! # How it fits
//!
//! The filter builds one record per request, signs it with the gateway's Ed25519 key
//! (see `mercator_evidence` for the exact bytes signed) and posts it here. The sink
//! trusts only the public keys in its keys file, within each key's validity window
//! ([`keys`](KeyRing)), refuses any record whose signature does not verify, and stores the
//! RFC 8785 canonical JSON of each accepted record, signature included, so that anyone can
//! verify a stored or exported record again without the sink. Stored evidence is never
//! replaced: a record id seen twice with other content is refused.
//!
//! Each accepted record is also a leaf of an RFC 9162 Merkle tree, `SHA-256(0x00 ||
//! canonical text)` ([`mercator_evidence::merkle`]); the sink signs the tree's size and root
//! with its own key ([`mercator_evidence::tree_head`]) and serves inclusion and
//! consistency proofs, so an auditor can show offline that an exported record is the one
//! the sink accepted and that no accepted record was later changed or removed. Erasure and
//! retention delete a record's content but keep its leaf. [`store`] is the storage seam
//! (SQLite today; where a PostgreSQL backend goes is written there).
//!
//! # Endpoints
//!
//! | method and path | operator token | answer |
//! |---|---|---|
//! | `POST /v1/evidence` | no | one record or a JSON array of them, stored atomically: `201 {"accepted":N,"duplicates":M}` |
//! | `GET /v1/keys` | no | the gateway keys with their validity windows |
//! | `GET /v1/tree[?tree_size=N]` | no | the signed tree head |
//! | `GET /v1/tree/key` | no | the sink's tree key |
//! | `GET /v1/evidence/{id}/proof[?tree_size=N]` | no | the record's leaf, inclusion proof and tree head |
//! | `GET /v1/tree/consistency?first=M[&second=N]` | no | the consistency proof between two sizes |
//! | `GET /v1/evidence/{id}` | yes | the stored record, byte for byte; `410` once erased or pruned |
//! | `GET /v1/evidence?…&limit=&cursor=&format=` | yes | a page of records (see [`parse_query`]) |
//! | `GET /v1/evidence/export?…&format=` | yes | every matching record, streamed |
//! | `GET /v1/evidence/bundle?…` | yes | records with their proofs and a tree head, for `mercator audit` |
//! | `POST /v1/erasure` | yes | `{"user_id":…}`: erase that user's records' content |
//! | `POST /v1/retention/prune` | yes | prune now what retention would |
//! | `GET /healthz` | no | `{"status":"ok"}` once the database answers |
//!
//! Every refusal is `{"error":{"code":…,"message":…}}` with a stable code (see
//! [`SinkError`]). Proofs and tree heads are public because they reveal hashes, positions
//! and the number of records, never content.
//!
//! # Running and testing
//!
//! ```text
//! evidence-sink --listen 127.0.0.1:8600 --db evidence.sqlite --keys keys.json \
//!               --tree-key sink-tree.key --operator-token-sha256 <hex> \
//!               [--retention-days 90] [--prune-interval-secs 3600] [--max-body-bytes 16777216]
//! ```
//!
//! `--db postgres://user@host/dbname` stores in PostgreSQL instead of a SQLite file, for
//! several sink replicas sharing one database (see [`store`]).
//!
//! `keys.json` has the shape of `GET /v1/keys` (see [`load_keys`]); `sink-tree.key` holds
//! the base64 seed of the sink's own Ed25519 key. `RUST_LOG` sets the log level (default
//! `info`). The sink stops cleanly on SIGINT or SIGTERM.
//!
//! `cargo test -p mercator-evidence-sink` runs unit tests beside the code, the HTTP tests in
//! `tests/http.rs` (the router without a socket, SQLite in memory) and the auditor's tests
//! in `tests/audit.rs` (a database tampered with behind the sink's back). `tests/store.rs`,
//! `tests/http.rs` and `tests/audit.rs` run on both backends: PostgreSQL comes from
//! `MERCATOR_TEST_POSTGRES_URL`, which `scripts/test-postgres.sh` sets after starting a
//! throwaway server; without it those PostgreSQL variants print that they were skipped.
//!
//! # The operator's tool
//!
//! The package also builds `mercator`, the command-line tool that makes development keys
//! and certificates, API keys and signing keys, turns `config/gateway.yaml` into the
//! filter's configuration and the Envoy configuration, runs the Rego tests, and verifies
//! exported evidence offline. Its logic lives in [`tools`].

mod error;
mod export;
mod http;
mod intake;
mod keys;
mod operator;
mod query;
pub mod store;
pub mod tools;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use error::SinkError;
pub use export::{BUNDLE_SCHEMA, EXPORT_PAGE_RECORDS};
pub use http::{app, AppState, DEFAULT_MAX_BODY_BYTES, DEFAULT_RETENTION};
pub use intake::{verify_body, VerifiedRecord};
pub use keys::{load_keys, KeyEntry, KeyRefusal, KeyRing, KeyWindow, KeysDocument, KeysError};
pub use operator::OperatorToken;
pub use query::{
    parse_query, EvidenceQuery, ExportFormat, QueryKind, CSV_COLUMNS, DEFAULT_LIMIT, MAX_LIMIT,
};
pub use store::{BatchOutcome, RecordFilter, Store, StoreError};

/// What the sink needs to start, as the command line gives it.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// Where records live: a `postgres://` URL, or else a SQLite file, created when missing.
    pub db: String,
    /// The keys file.
    pub keys: PathBuf,
    /// The file holding the base64 seed of the sink's tree key (signs tree heads).
    pub tree_key: PathBuf,
    /// The operator token's SHA-256; `None` turns the operator endpoints off.
    pub operator: Option<OperatorToken>,
    /// How long records are kept; `None` keeps them for ever.
    pub retention: Option<std::time::Duration>,
    /// How often the retention job runs.
    pub prune_interval: std::time::Duration,
    /// The largest accepted body, in bytes.
    pub max_body_bytes: usize,
}

/// Why the sink could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The keys file is missing, unreadable or wrong.
    #[error(transparent)]
    Keys(#[from] KeysError),

    /// The database could not be opened or has an unknown schema.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// The tree key file is missing or does not hold a seed.
    #[error("tree key {path}: {reason}")]
    TreeKey {
        /// The file.
        path: PathBuf,
        /// Why it is unusable; never the key itself.
        reason: String,
    },

    /// The listen address could not be bound (in use, no permission).
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },

    /// The server failed while running.
    #[error("the server stopped with an error: {0}")]
    Serve(std::io::Error),
}

/// Loads the keys, opens the store, and serves until SIGINT or SIGTERM.
pub async fn serve(config: SinkConfig) -> Result<(), StartupError> {
    let keys = load_keys(&config.keys)?;
    let store = Store::open_db(&config.db).await?;
    let tree_key = load_tree_key(&config.tree_key)?;
    tracing::info!(
        keys.count = keys.len(),
        keys.ids = %keys.ids().collect::<Vec<_>>().join(","),
        tree_key.id = %tree_key.key_id(),
        db = %store.describe(),
        retention.days = config.retention.map(|r| r.as_secs() / 86_400),
        "evidence sink ready"
    );
    if config.operator.is_none() {
        tracing::warn!(
            "no operator token configured: query, export, erasure and pruning are refused"
        );
    }

    let state = AppState {
        max_body_bytes: config.max_body_bytes,
        operator: config.operator,
        retention: config.retention,
        ..AppState::new(keys, store.clone(), tree_key)
    };
    if let Some(retention) = config.retention {
        tokio::spawn(retention_job(store, retention, config.prune_interval));
    }

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartupError::Bind {
            address: config.listen,
            source,
        })?;
    tracing::info!(listen.address = %config.listen, "evidence sink listening");

    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(StartupError::Serve)?;

    tracing::info!("evidence sink stopped");
    Ok(())
}

/// Reads the sink's tree key: one line, the standard base64 of a 32-byte Ed25519 seed (the
/// format of `mercator signing-key new`).
pub fn load_tree_key(
    path: &std::path::Path,
) -> Result<mercator_evidence::SigningKey, StartupError> {
    let error = |reason: String| StartupError::TreeKey {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    mercator_evidence::SigningKey::from_base64(&text).map_err(|e| error(e.to_string()))
}

/// Prunes on a schedule, the first time right away. A failed run is logged and the next
/// one tries again.
async fn retention_job(store: Store, retention: std::time::Duration, every: std::time::Duration) {
    let mut ticks = tokio::time::interval(every.max(std::time::Duration::from_secs(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(error) = http::prune(&store, retention).await {
            tracing::error!(%error, "the retention job failed; it runs again at the next interval");
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM. If a handler cannot be installed, that
/// signal is logged and ignored rather than stopping the sink at once.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };

    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received; finishing open requests");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RecordLookup;

    fn verified(id: &str, timestamp_unix_ns: i64) -> VerifiedRecord {
        VerifiedRecord {
            id: id.to_owned(),
            timestamp: "t".to_owned(),
            timestamp_unix_ns,
            request_id: None,
            user_id: Some("u".to_owned()),
            provider: None,
            model: None,
            decision: None,
            key_id: "k".to_owned(),
            canonical: format!(r#"{{"id":"{id}"}}"#),
        }
    }

    #[tokio::test]
    async fn the_retention_job_prunes_old_records_on_its_schedule_and_keeps_recent_ones() {
        let store = Store::open_in_memory().unwrap();
        let now = i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos()).unwrap();
        let day = 86_400 * 1_000_000_000i64;
        store
            .append(vec![
                verified("evt_old", now - 3 * day),
                verified("evt_new", now),
            ])
            .await
            .unwrap();

        let job = tokio::spawn(retention_job(
            store.clone(),
            std::time::Duration::from_secs(2 * 86_400),
            std::time::Duration::from_secs(1),
        ));
        let mut pruned = false;
        for _ in 0..50 {
            if matches!(
                store.record("evt_old".to_owned()).await.unwrap(),
                RecordLookup::Removed { .. }
            ) {
                pruned = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        job.abort();

        assert!(
            pruned,
            "the first run comes at once and prunes the old record"
        );
        assert!(matches!(
            store.record("evt_new".to_owned()).await.unwrap(),
            RecordLookup::Stored(_)
        ));
        assert_eq!(store.tree_size().await.unwrap(), 2);
    }
}
