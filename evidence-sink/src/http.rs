//! The HTTP routes of the sink. Handlers only translate: the checks live in
//! [`crate::intake`], [`crate::query`] and [`crate::operator`], the storage and the tree
//! in [`crate::store`], the streamed exports in [`crate::export`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mercator_evidence::merkle::{to_hex, Hash};
use mercator_evidence::{SigningKey, TreeHead};
use serde_json::{json, Value};

use crate::error::SinkError;
use crate::export::{bundle_response, export_response, EXPORT_PAGE_RECORDS};
use crate::intake::verify_body;
use crate::keys::{KeyRing, KeysDocument};
use crate::operator::{Operator, OperatorToken};
use crate::query::{parse_query, render_page, size_parameter, QueryKind};
use crate::store::{Page, RecordLookup, Store};

/// The largest body `POST /v1/evidence` takes unless `--max-body-bytes` says otherwise.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// How long records are kept unless `--retention-days` says otherwise.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// A page, or a chunk of an export, stops growing at this many bytes of records.
pub const PAGE_BYTES: usize = 4 * 1024 * 1024;

/// What every request shares.
#[derive(Clone)]
pub struct AppState {
    /// The trusted verifying keys of the gateways.
    pub keys: Arc<KeyRing>,
    /// The evidence store.
    pub store: Store,
    /// The sink's own key, which signs tree heads.
    pub tree_key: Arc<SigningKey>,
    /// The operator token's hash; without one, operator endpoints refuse everyone.
    pub operator: Option<OperatorToken>,
    /// How long records are kept; `None` keeps them for ever.
    pub retention: Option<Duration>,
    /// The largest accepted body, in bytes.
    pub max_body_bytes: usize,
    /// Records read from the store per page of a streamed export.
    pub export_page_records: u32,
}

impl AppState {
    /// State with the default body limit and retention, and no operator token.
    pub fn new(keys: KeyRing, store: Store, tree_key: SigningKey) -> Self {
        Self {
            keys: Arc::new(keys),
            store,
            tree_key: Arc::new(tree_key),
            operator: None,
            retention: Some(DEFAULT_RETENTION),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            export_page_records: EXPORT_PAGE_RECORDS,
        }
    }
}

/// The sink's router, callable without a socket (`tower::ServiceExt::oneshot`).
///
/// Public: ingestion (every record must be signed by a trusted key), the keys, the tree
/// head, its key, and proofs, which hold hashes and positions but no content. Everything
/// that returns or removes content needs the operator token.
pub fn app(state: AppState) -> Router {
    let body_limit = DefaultBodyLimit::max(state.max_body_bytes);

    Router::new()
        .route("/v1/evidence", post(accept_evidence).get(query_evidence))
        .route("/v1/evidence/export", get(export_evidence))
        .route("/v1/evidence/bundle", get(bundle_evidence))
        .route("/v1/evidence/{id}", get(evidence_by_id))
        .route("/v1/evidence/{id}/proof", get(inclusion_proof))
        .route("/v1/tree", get(tree_head))
        .route("/v1/tree/key", get(tree_key))
        .route("/v1/tree/consistency", get(consistency_proof))
        .route("/v1/erasure", post(erase_user))
        .route("/v1/retention/prune", post(prune_now))
        .route("/v1/keys", get(list_keys))
        .route("/healthz", get(health))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(body_limit)
        .with_state(state)
}

async fn accept_evidence(
    State(state): State<AppState>,
    _length: DeclaredLength,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, SinkError> {
    let body = body.map_err(|rejection| body_error(&rejection, state.max_body_bytes))?;

    // Parsing and verifying a large batch is CPU work of up to a second; keep it off the
    // async workers.
    let keys = Arc::clone(&state.keys);
    let records = tokio::task::spawn_blocking(move || verify_body(&body, &keys))
        .await
        .map_err(|e| SinkError::Internal(format!("verification did not finish: {e}")))??;

    let outcome = state.store.append(records).await?;

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

/// A request whose declared `content-length` is within the body limit. Extracted before
/// the body, so a declared length over the limit is refused before a byte of the body is
/// read; a body without a declared length is cut off as soon as it passes the limit.
struct DeclaredLength;

impl FromRequestParts<AppState> for DeclaredLength {
    type Rejection = SinkError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, SinkError> {
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        match declared {
            Some(length) if length > state.max_body_bytes as u64 => Err(SinkError::BodyTooLarge {
                limit: state.max_body_bytes,
            }),
            _ => Ok(DeclaredLength),
        }
    }
}

fn body_error(rejection: &BytesRejection, limit: usize) -> SinkError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        SinkError::BodyTooLarge { limit }
    } else {
        SinkError::BodyUnreadable(rejection.body_text())
    }
}

fn query_pairs(
    pairs: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Vec<(String, String)>, SinkError> {
    pairs
        .map(|Query(pairs)| pairs)
        .map_err(|rejection| SinkError::InvalidQuery {
            parameter: "(query string)".to_owned(),
            message: rejection.body_text(),
        })
}

async fn query_evidence(
    State(state): State<AppState>,
    _operator: Operator,
    pairs: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, SinkError> {
    let query = parse_query(&query_pairs(pairs)?, QueryKind::Page)?;
    let limit = query.limit;

    // One more than asked shows whether another page follows.
    let mut rows = state
        .store
        .page(
            query.filter,
            Page {
                after: query.cursor,
                limit: limit + 1,
                max_bytes: PAGE_BYTES,
                leaves_below: None,
            },
        )
        .await?;
    let bytes: usize = rows.iter().map(|row| row.text.len()).sum();
    let more = rows.len() > limit as usize || bytes >= PAGE_BYTES;
    rows.truncate(limit as usize);
    let next = if more {
        rows.last().map(|row| row.position)
    } else {
        None
    };

    render_page(query.format, &rows, next)
}

async fn export_evidence(
    State(state): State<AppState>,
    _operator: Operator,
    pairs: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, SinkError> {
    let query = parse_query(&query_pairs(pairs)?, QueryKind::Export)?;
    Ok(export_response(
        state.store.clone(),
        query.filter,
        query.format,
        state.export_page_records,
    ))
}

async fn bundle_evidence(
    State(state): State<AppState>,
    _operator: Operator,
    pairs: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, SinkError> {
    let query = parse_query(&query_pairs(pairs)?, QueryKind::Bundle)?;
    let size = state.store.tree_size().await?;
    let head = signed_head(&state, size).await?;
    bundle_response(
        state.store.clone(),
        query.filter,
        head,
        state.export_page_records,
    )
}

async fn evidence_by_id(
    State(state): State<AppState>,
    _operator: Operator,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, SinkError> {
    // An id that does not even decode (bad percent-encoding) names no stored record.
    let Path(id) = id.map_err(|rejection| SinkError::NotFound(rejection.body_text()))?;
    let shown = shortened(&id);

    match state.store.record(id).await? {
        RecordLookup::Stored(text) => {
            Ok(([(CONTENT_TYPE, "application/json")], text).into_response())
        }
        RecordLookup::Removed {
            how,
            at,
            leaf_index,
        } => Err(SinkError::Removed {
            how,
            message: format!(
                "record {shown} was {} at {at}: its content is gone; its leaf {leaf_index} \
                 stays in the tree, so GET /v1/evidence/{shown}/proof still proves it was there",
                how.as_str()
            ),
        }),
        RecordLookup::Unknown => Err(SinkError::NotFound(format!(
            "no evidence record has id `{shown}`"
        ))),
    }
}

/// The tree head of the current tree, or of the tree size a query names.
async fn signed_head(state: &AppState, size: u64) -> Result<TreeHead, SinkError> {
    let root = state.store.root(size).await?;
    sign_head(&state.tree_key, size, &root)
}

fn sign_head(key: &SigningKey, size: u64, root: &Hash) -> Result<TreeHead, SinkError> {
    TreeHead::sign(size, root, &now_rfc3339(), key)
        .map_err(|e| SinkError::Internal(format!("the tree head cannot be signed: {e}")))
}

/// Now, RFC 3339 in UTC with milliseconds.
pub(crate) fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond()
    )
}

/// `tree_size=N` if the query gives one (at most the current size), else the current size.
async fn requested_size(state: &AppState, pairs: &[(String, String)]) -> Result<u64, SinkError> {
    let current = state.store.tree_size().await?;
    let mut size = current;
    for (name, value) in pairs {
        match name.as_str() {
            "tree_size" => size = size_parameter(name, value)?,
            _ => {
                return Err(SinkError::InvalidQuery {
                    parameter: shortened(name),
                    message: "is not known here; use tree_size".to_owned(),
                })
            }
        }
    }
    if size > current {
        return Err(SinkError::InvalidQuery {
            parameter: "tree_size".to_owned(),
            message: format!("the tree has only {current} leaves"),
        });
    }
    Ok(size)
}

async fn tree_head(
    State(state): State<AppState>,
    pairs: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, SinkError> {
    let size = requested_size(&state, &query_pairs(pairs)?).await?;
    Ok(Json(signed_head(&state, size).await?).into_response())
}

async fn tree_key(State(state): State<AppState>) -> Json<Value> {
    let public = state.tree_key.verifying_key();
    Json(json!({
        "key_id": public.key_id().as_str(),
        "public_key": public.to_base64(),
        "role": "tree_head",
    }))
}

async fn inclusion_proof(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    pairs: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, SinkError> {
    let Path(id) = id.map_err(|rejection| SinkError::NotFound(rejection.body_text()))?;
    let size = requested_size(&state, &query_pairs(pairs)?).await?;

    let Some(leaf) = state.store.leaf(id.clone()).await? else {
        return Err(SinkError::NotFound(format!(
            "no evidence record has id `{}`",
            shortened(&id)
        )));
    };
    if leaf.leaf_index >= size {
        return Err(SinkError::InvalidQuery {
            parameter: "tree_size".to_owned(),
            message: format!(
                "record {} is leaf {}, not inside a tree of {size} leaves",
                shortened(&id),
                leaf.leaf_index
            ),
        });
    }
    let proof = state.store.inclusion_proof(leaf.leaf_index, size).await?;
    let head = signed_head(&state, size).await?;
    let status = leaf
        .removed
        .as_ref()
        .map_or("stored", |(how, _)| how.as_str());

    Ok(Json(json!({
        "id": id,
        "status": status,
        "leaf_index": leaf.leaf_index,
        "leaf_hash": to_hex(&leaf.leaf_hash),
        "tree_size": size,
        "inclusion_proof": proof.iter().map(to_hex).collect::<Vec<_>>(),
        "tree_head": head,
    }))
    .into_response())
}

async fn consistency_proof(
    State(state): State<AppState>,
    pairs: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, SinkError> {
    let pairs = query_pairs(pairs)?;
    let current = state.store.tree_size().await?;
    let mut first = None;
    let mut second = current;
    for (name, value) in &pairs {
        match name.as_str() {
            "first" => first = Some(size_parameter(name, value)?),
            "second" => second = size_parameter(name, value)?,
            _ => {
                return Err(SinkError::InvalidQuery {
                    parameter: shortened(name),
                    message: "is not known here; use first and second".to_owned(),
                })
            }
        }
    }
    let Some(first) = first else {
        return Err(SinkError::InvalidQuery {
            parameter: "first".to_owned(),
            message: "is required: the tree size of the older tree head".to_owned(),
        });
    };
    if second > current {
        return Err(SinkError::InvalidQuery {
            parameter: "second".to_owned(),
            message: format!("the tree has only {current} leaves"),
        });
    }
    if first == 0 || first > second {
        return Err(SinkError::InvalidQuery {
            parameter: "first".to_owned(),
            message: format!("must be from 1 to second ({second})"),
        });
    }

    let proof = state.store.consistency_proof(first, second).await?;
    Ok(Json(json!({
        "first": first,
        "second": second,
        "consistency_proof": proof.iter().map(to_hex).collect::<Vec<_>>(),
    }))
    .into_response())
}

async fn erase_user(
    State(state): State<AppState>,
    _operator: Operator,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, SinkError> {
    let body = body.map_err(|rejection| body_error(&rejection, state.max_body_bytes))?;
    let request: Value =
        serde_json::from_slice(&body).map_err(|e| SinkError::InvalidJson(e.to_string()))?;
    let user_id = match request.as_object() {
        Some(object) if object.keys().all(|name| name == "user_id") => {
            object.get("user_id").and_then(Value::as_str)
        }
        _ => None,
    };
    let Some(user_id) = user_id.filter(|user| !user.is_empty()) else {
        return Err(SinkError::InvalidRecord(
            "an erasure request is {\"user_id\": \"…\"}, a non-empty string and nothing else"
                .to_owned(),
        ));
    };

    let erased = state
        .store
        .erase_user(user_id.to_owned(), now_rfc3339())
        .await?;
    tracing::info!(
        user.id = user_id,
        evidence.erased = erased,
        "user's evidence erased"
    );
    Ok(Json(json!({ "user_id": user_id, "erased": erased })).into_response())
}

async fn prune_now(
    State(state): State<AppState>,
    _operator: Operator,
) -> Result<Response, SinkError> {
    let Some(retention) = state.retention else {
        return Err(SinkError::InvalidRecord(
            "retention is off (--retention-days 0): nothing is pruned".to_owned(),
        ));
    };
    let (pruned, cutoff) = prune(&state.store, retention).await?;
    Ok(Json(json!({ "pruned": pruned, "cutoff": cutoff })).into_response())
}

/// Removes the content of records older than `retention`; returns how many and the cutoff.
pub(crate) async fn prune(
    store: &Store,
    retention: Duration,
) -> Result<(usize, String), SinkError> {
    let now = time::OffsetDateTime::now_utc();
    let cutoff = now - retention;
    let cutoff_ns = i64::try_from(cutoff.unix_timestamp_nanos()).unwrap_or(i64::MIN);
    let cutoff_text = cutoff
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let pruned = store.prune_before(cutoff_ns, now_rfc3339()).await?;
    if pruned > 0 {
        tracing::info!(evidence.pruned = pruned, retention.cutoff = %cutoff_text, "old evidence pruned");
    }
    Ok((pruned, cutoff_text))
}

async fn list_keys(State(state): State<AppState>) -> Json<KeysDocument> {
    Json(state.keys.to_document())
}

async fn health(State(state): State<AppState>) -> Result<Response, SinkError> {
    state.store.ping().await?;
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

/// Text short enough to quote in a message: a hostile request may send a megabyte of id.
fn shortened(text: &str) -> String {
    if text.chars().count() <= 64 {
        text.to_owned()
    } else {
        text.chars().take(64).collect::<String>() + "…"
    }
}
