//! The evidence sink of Mercator Jupiter: it receives the signed evidence records that
//! the gateway's Envoy filter sends, verifies each one, keeps it in SQLite, and answers
//! queries and exports.
//!
//! # How it fits
//!
//! The filter builds one record per request, signs it with the gateway's Ed25519 key
//! (see `mercator_evidence` for the exact bytes signed) and posts it here. The sink
//! trusts only the public keys in its keys file, refuses any record whose signature does
//! not verify, and stores the RFC 8785 canonical JSON of each accepted record, signature
//! included, so that anyone can verify a stored or exported record again without the sink.
//! Stored evidence is never replaced: a record id seen twice with other content is refused.
//!
//! # Endpoints
//!
//! | method and path | answer |
//! |---|---|
//! | `POST /v1/evidence` | one record or a JSON array of them, stored atomically: `201 {"accepted":N,"duplicates":M}` |
//! | `GET /v1/evidence/{id}` | the stored record, byte for byte |
//! | `GET /v1/evidence?user_id=&request_id=&decision=&from=&to=&limit=&format=` | records in insertion order as `json`, `jsonl` or `csv` |
//! | `GET /v1/keys` | `{"keys":[{"key_id":…,"public_key":…}]}` |
//! | `GET /healthz` | `{"status":"ok"}` once the database answers |
//!
//! Every refusal is `{"error":{"code":…,"message":…}}` with a stable code (see
//! [`SinkError`]).
//!
//! # Running and testing
//!
//! ```text
//! evidence-sink --listen 127.0.0.1:8600 --db evidence.sqlite --keys keys.json \
//!               [--max-body-bytes 16777216]
//! ```
//!
//! `keys.json` has the shape of `GET /v1/keys` (see [`load_keys`]). `RUST_LOG` sets the
//! log level (default `info`). The sink stops cleanly on SIGINT or SIGTERM.
//!
//! `cargo test -p mercator-evidence-sink` runs unit tests beside the code and the HTTP
//! tests in `tests/`, which call the router without a socket and use SQLite in memory.
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
    /// The SQLite database file, created when missing.
    pub db: PathBuf,
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
    let store = Store::open(&config.db)?;
    let tree_key = load_tree_key(&config.tree_key)?;
    tracing::info!(
        keys.count = keys.len(),
        keys.ids = %keys.ids().collect::<Vec<_>>().join(","),
        tree_key.id = %tree_key.key_id(),
        db.path = %config.db.display(),
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
