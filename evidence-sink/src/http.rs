//! The HTTP routes of the sink. Handlers only translate: the checks live in
//! [`crate::intake`] and [`crate::query`], the storage in [`crate::store`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::error::SinkError;
use crate::intake::verify_body;
use crate::keys::{KeyRing, KeysDocument};
use crate::query::{parse_query, render};
use crate::store::{insert_batch, ping, record_by_id, records_matching, Store};

/// The largest body `POST /v1/evidence` takes unless `--max-body-bytes` says otherwise.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// What every request shares.
#[derive(Clone)]
pub struct AppState {
    /// The trusted verifying keys.
    pub keys: Arc<KeyRing>,
    /// The evidence store.
    pub store: Store,
    /// The largest accepted body, in bytes.
    pub max_body_bytes: usize,
}

impl AppState {
    /// State with the default body limit.
    pub fn new(keys: KeyRing, store: Store) -> Self {
        Self {
            keys: Arc::new(keys),
            store,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// The sink's router, callable without a socket (`tower::ServiceExt::oneshot`).
pub fn app(state: AppState) -> Router {
    let body_limit = DefaultBodyLimit::max(state.max_body_bytes);

    Router::new()
        .route("/v1/evidence", post(accept_evidence).get(query_evidence))
        .route("/v1/evidence/{id}", get(evidence_by_id))
        .route("/v1/keys", get(list_keys))
        .route("/healthz", get(health))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(body_limit)
        .with_state(state)
}

async fn accept_evidence(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, SinkError> {
    let body = body.map_err(|rejection| body_error(&rejection, state.max_body_bytes))?;

    // Parsing and verifying a large batch is CPU work of up to a second; keep it off the
    // async workers.
    let keys = Arc::clone(&state.keys);
    let records = tokio::task::spawn_blocking(move || verify_body(&body, &keys))
        .await
        .map_err(|e| SinkError::Internal(format!("verification did not finish: {e}")))??;

    let outcome = state
        .store
        .run(move |connection| insert_batch(connection, &records))
        .await?;

    tracing::info!(
        evidence.accepted = outcome.accepted,
        evidence.duplicates = outcome.duplicates,
        "evidence stored"
    );
    // 201 when something new was kept; a batch of nothing but duplicates created nothing.
    let status = if outcome.accepted > 0 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = json!({ "accepted": outcome.accepted, "duplicates": outcome.duplicates });
    Ok((status, Json(body)).into_response())
}

fn body_error(rejection: &BytesRejection, limit: usize) -> SinkError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        SinkError::BodyTooLarge { limit }
    } else {
        SinkError::BodyUnreadable(rejection.body_text())
    }
}

async fn query_evidence(
    State(state): State<AppState>,
    pairs: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, SinkError> {
    let Query(pairs) = pairs.map_err(|rejection| SinkError::InvalidQuery {
        parameter: "(query string)".to_owned(),
        message: rejection.body_text(),
    })?;
    let query = parse_query(&pairs)?;

    let filter = query.filter;
    let records = state
        .store
        .run(move |connection| records_matching(connection, &filter))
        .await?;

    render(query.format, &records)
}

async fn evidence_by_id(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, SinkError> {
    // An id that does not even decode (bad percent-encoding) names no stored record.
    let Path(id) = id.map_err(|rejection| SinkError::NotFound(rejection.body_text()))?;
    let lookup = id.clone();
    let stored = state
        .store
        .run(move |connection| record_by_id(connection, &lookup))
        .await?;

    match stored {
        Some(text) => Ok(([(CONTENT_TYPE, "application/json")], text).into_response()),
        None => Err(SinkError::NotFound(format!(
            "no evidence record has id `{}`",
            id.chars().take(64).collect::<String>()
        ))),
    }
}

async fn list_keys(State(state): State<AppState>) -> Json<KeysDocument> {
    Json(state.keys.to_document())
}

async fn health(State(state): State<AppState>) -> Result<Response, SinkError> {
    state.store.run(ping).await?;
    Ok(Json(json!({ "status": "ok" })).into_response())
}

async fn no_route(uri: Uri) -> SinkError {
    SinkError::NotFound(format!(
        "no route for {}",
        uri.path().chars().take(128).collect::<String>()
    ))
}

async fn wrong_method(method: Method) -> SinkError {
    SinkError::MethodNotAllowed(method.to_string())
}
