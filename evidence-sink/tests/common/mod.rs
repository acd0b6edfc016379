//! The two backends that the store, HTTP and audit tests run on.
//!
//! `on_both_backends!(test_a, test_b, …)` makes two tests of each named `async fn`:
//! `on_sqlite::test_a` and `on_postgres::test_a`. Inside a test, [`fresh_db`] and
//! [`fresh_store`] give an empty database of the backend it runs on: a SQLite file (or
//! memory), or a new schema on the PostgreSQL server that `MERCATOR_TEST_POSTGRES_URL`
//! names. Without that URL the PostgreSQL variants print that they were skipped and how to
//! run them, unless `MERCATOR_TEST_POSTGRES_REQUIRED` is set (as `scripts/test-postgres.sh`
//! sets it), in which case they fail.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use mercator_evidence_sink::Store;

/// A storage backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

tokio::task_local! {
    static BACKEND: Backend;
}

/// What provides a PostgreSQL server for the tests.
pub const HOW_TO_RUN_POSTGRES: &str = "run `scripts/test-postgres.sh` (or `make test`), which \
     starts a throwaway PostgreSQL server and sets MERCATOR_TEST_POSTGRES_URL";

/// The test server's URL, if the tests were given one.
pub fn postgres_url() -> Option<String> {
    match std::env::var("MERCATOR_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("MERCATOR_TEST_POSTGRES_REQUIRED").is_some() => panic!(
            "MERCATOR_TEST_POSTGRES_REQUIRED is set but MERCATOR_TEST_POSTGRES_URL is not: \
             {HOW_TO_RUN_POSTGRES}"
        ),
        _ => None,
    }
}

/// Runs `test` with `backend` as the backend of [`fresh_db`] and [`fresh_store`].
pub async fn on(backend: Backend, name: &str, test: impl Future<Output = ()>) {
    if backend == Backend::Postgres && postgres_url().is_none() {
        // Straight to stderr, past the test harness's capture, so that the skip shows.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {name} on PostgreSQL: MERCATOR_TEST_POSTGRES_URL is not set; \
             {HOW_TO_RUN_POSTGRES}"
        );
        return;
    }
    BACKEND.scope(backend, test).await;
}

/// The backend of the running test (SQLite outside [`on`]).
pub fn backend() -> Backend {
    BACKEND
        .try_with(|backend| *backend)
        .unwrap_or(Backend::Sqlite)
}

/// A new, empty database for the sink's `--db`: a SQLite file in `dir`, or a new schema on
/// the PostgreSQL test server (a URL whose `search_path` is that schema).
pub async fn fresh_db(dir: &Path) -> String {
    match backend() {
        Backend::Sqlite => dir.join("evidence.sqlite").display().to_string(),
        Backend::Postgres => fresh_postgres_schema().await,
    }
}

/// A new, empty store: SQLite in memory, or a new PostgreSQL schema.
pub async fn fresh_store() -> Store {
    match backend() {
        Backend::Sqlite => Store::open_in_memory().unwrap(),
        Backend::Postgres => Store::open_db(&fresh_postgres_schema().await)
            .await
            .unwrap(),
    }
}

async fn fresh_postgres_schema() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let url = postgres_url().expect("checked by `on`");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let schema = format!(
        "test_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let client = connect(&url).await;
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-csearch_path%3D{schema}")
}

/// A plain connection to `url`, for tests that reach behind the sink's back.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// Runs `sql` (several statements) on the database `db` as someone holding it would, and
/// returns the database's error, if any.
pub async fn execute_behind_the_sinks_back(db: &str, sql: &str) -> Result<(), String> {
    if mercator_evidence_sink::store::is_postgres_url(db) {
        connect(db)
            .await
            .batch_execute(sql)
            .await
            .map_err(|e| format!("{e:?}"))
    } else {
        rusqlite::Connection::open(db)
            .unwrap()
            .execute_batch(sql)
            .map_err(|e| e.to_string())
    }
}

/// Drops the append-only triggers of `db`, as someone holding the database could.
pub async fn disable_triggers(db: &str) {
    let sql = if mercator_evidence_sink::store::is_postgres_url(db) {
        "ALTER TABLE evidence DISABLE TRIGGER USER;
         ALTER TABLE evidence_leaves DISABLE TRIGGER USER;
         ALTER TABLE merkle_nodes DISABLE TRIGGER USER;"
    } else {
        "DROP TRIGGER evidence_is_never_updated;
         DROP TRIGGER evidence_is_deleted_only_when_removed;
         DROP TRIGGER leaves_are_never_deleted;
         DROP TRIGGER leaves_change_only_to_removed;
         DROP TRIGGER nodes_are_never_deleted;"
    };
    execute_behind_the_sinks_back(db, sql).await.unwrap();
}

/// Makes a SQLite and a PostgreSQL test of each named `async fn`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    $crate::common::on(
                        $crate::common::Backend::Sqlite,
                        stringify!($name),
                        super::$name(),
                    )
                    .await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    $crate::common::on(
                        $crate::common::Backend::Postgres,
                        stringify!($name),
                        super::$name(),
                    )
                    .await;
                }
            )*
        }
    };
}
