//! The sink's HTTP contract, exercised through the router without a socket and with
//! SQLite in memory.

// Test helpers outside `#[test]` functions are not covered by clippy.toml's test allowances.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body::Frame;
use http_body_util::BodyExt;
use mercator_evidence::{verify_record, EvidenceRecord, SigningKey};
use mercator_evidence_sink::{app, AppState, KeyRing, OperatorToken, Store, CSV_COLUMNS};
use serde_json::{json, Value};
use tower::ServiceExt;

mod common;

fn gateway_key() -> SigningKey {
    SigningKey::from_seed(&[7; 32])
}

/// The operator token the test sinks are configured with (as its hash).
const OPERATOR_TOKEN: &str = "mjop_test-operator-token";

fn tree_key() -> SigningKey {
    SigningKey::from_seed(&[9; 32])
}

fn state(keys: KeyRing, store: Store) -> AppState {
    AppState {
        operator: Some(OperatorToken::of_token(OPERATOR_TOKEN)),
        ..AppState::new(keys, store, tree_key())
    }
}

async fn sink_with_limit(max_body_bytes: usize) -> Router {
    let keys = KeyRing::new([gateway_key().verifying_key()]);
    let store = common::fresh_store().await;
    app(AppState {
        max_body_bytes,
        ..state(keys, store)
    })
}

async fn sink() -> Router {
    sink_with_limit(mercator_evidence_sink::DEFAULT_MAX_BODY_BYTES).await
}

/// A record as the filter builds it, before signing. Built from JSON so the test reads
/// like the wire format.
fn record(id: &str, user_id: &str, timestamp: &str) -> EvidenceRecord {
    serde_json::from_value(json!({
        "schema": "mercator.evidence.v1",
        "id": id,
        "timestamp": timestamp,
        "request_id": format!("req-{id}"),
        "user_id": user_id,
        "provider": "openai",
        "model": "gpt-4",
        "decision": "allow",
        "auth": {"method": "api_key", "result": "authenticated",
                 "key_name": "finance-demo", "key_fingerprint": "sha256:0123456789ab"},
        "request": {"path": "/v1/chat/completions", "status": null, "body_bytes": 2,
                    "body_sha256": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
                    "body": "{}"},
        "response": {"path": null, "status": 200, "body_bytes": 0,
                     "body_sha256": "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                     "body": null},
        "error": null,
        "policy_bundle": "sha256:abc",
        "policy_decisions": [{"policy": "department", "phase": "request", "decision": "allow",
                              "code": null, "reason": null}],
        "obligations": null,
        "token_usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
        "cost": 0.00039,
        "key_id": ""
    }))
    .unwrap()
}

fn signed(record: &EvidenceRecord) -> String {
    record.sign(&gateway_key()).unwrap()
}

fn signed_value(record: &EvidenceRecord) -> Value {
    serde_json::from_str(&signed(record)).unwrap()
}

struct Answer {
    status: StatusCode,
    content_type: String,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap()
    }

    fn error_code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap().to_owned()
    }

    fn error_message(&self) -> String {
        self.json()["error"]["message"].as_str().unwrap().to_owned()
    }
}

async fn call(sink: &Router, request: Request<Body>) -> Answer {
    let response = sink.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        content_type,
        body,
    }
}

async fn post(sink: &Router, body: impl Into<Body>) -> Answer {
    let request = Request::post("/v1/evidence")
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap();
    call(sink, request).await
}

/// A GET with the operator token.
async fn get(sink: &Router, uri: &str) -> Answer {
    let request = Request::get(uri)
        .header(header::AUTHORIZATION, format!("Bearer {OPERATOR_TOKEN}"))
        .body(Body::empty())
        .unwrap();
    call(sink, request).await
}

/// A GET without any token.
async fn get_anonymously(sink: &Router, uri: &str) -> Answer {
    call(sink, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn stored_ids(sink: &Router) -> Vec<String> {
    let answer = get(sink, "/v1/evidence?limit=1000").await;
    assert_eq!(answer.status, StatusCode::OK);
    answer.json()["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn a_good_record_is_accepted_and_fetched_back_byte_identical() {
    let sink = sink().await;
    let text = signed(&record(
        "evt_one",
        "user_finance",
        "2026-12-03T10:30:00.000Z",
    ));

    let accepted = post(&sink, text.clone()).await;
    let fetched = get(&sink, "/v1/evidence/evt_one").await;

    assert_eq!(accepted.status, StatusCode::CREATED);
    assert_eq!(accepted.json(), json!({"accepted": 1, "duplicates": 0}));
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.content_type, "application/json");
    assert_eq!(fetched.text(), text);
}

async fn a_stored_record_still_verifies_without_the_sink() {
    let sink = sink().await;
    let pretty = serde_json::to_string_pretty(&signed_value(&record(
        "evt_one",
        "u",
        "2026-12-03T10:30:00Z",
    )))
    .unwrap();
    post(&sink, pretty).await;

    let fetched = get(&sink, "/v1/evidence/evt_one").await.json();

    let public = gateway_key().verifying_key();
    assert!(verify_record(&fetched, |_| Some(&public)).is_valid());
}

async fn a_record_changed_after_signing_is_refused_with_422_and_not_stored() {
    let sink = sink().await;
    let mut tampered = signed_value(&record("evt_one", "user_finance", "2026-12-03T10:30:00Z"));
    tampered["user_id"] = json!("user_admin");

    let answer = post(&sink, tampered.to_string()).await;

    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer.error_code(), "signature_invalid");
    assert!(answer.error_message().contains("evt_one"));
    assert!(answer.error_message().contains("does not match"));
    assert_eq!(
        get(&sink, "/v1/evidence/evt_one").await.status,
        StatusCode::NOT_FOUND
    );
}

async fn a_record_signed_by_an_unknown_key_is_refused_with_unknown_key() {
    let sink = sink().await;
    let stranger = SigningKey::from_seed(&[99; 32]);
    let text = record("evt_one", "u", "2026-12-03T10:30:00Z")
        .sign(&stranger)
        .unwrap();

    let answer = post(&sink, text).await;

    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer.error_code(), "unknown_key");
    assert!(answer.error_message().contains(stranger.key_id().as_str()));
    assert!(stored_ids(&sink).await.is_empty());
}

async fn a_record_without_a_signature_is_refused_naming_the_member() {
    let sink = sink().await;
    let mut unsigned = signed_value(&record("evt_one", "u", "2026-12-03T10:30:00Z"));
    unsigned.as_object_mut().unwrap().remove("signature");

    let answer = post(&sink, unsigned.to_string()).await;

    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.error_code(), "invalid_record");
    assert!(answer.error_message().contains("`signature`"));
}

async fn a_batch_is_stored_whole() {
    let sink = sink().await;
    let batch = json!([
        signed_value(&record("evt_a", "u", "2026-12-03T10:30:00Z")),
        signed_value(&record("evt_b", "u", "2026-12-03T10:31:00Z")),
        signed_value(&record("evt_c", "u", "2026-12-03T10:32:00Z")),
    ]);

    let answer = post(&sink, batch.to_string()).await;

    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.json(), json!({"accepted": 3, "duplicates": 0}));
    assert_eq!(stored_ids(&sink).await, ["evt_a", "evt_b", "evt_c"]);
}

async fn a_batch_with_one_bad_record_stores_nothing() {
    let sink = sink().await;
    let mut bad = signed_value(&record("evt_c", "u", "2026-12-03T10:32:00Z"));
    bad["cost"] = json!(0.0);
    let batch = json!([
        signed_value(&record("evt_a", "u", "2026-12-03T10:30:00Z")),
        signed_value(&record("evt_b", "u", "2026-12-03T10:31:00Z")),
        bad,
    ]);

    let answer = post(&sink, batch.to_string()).await;

    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(answer.error_message().starts_with("record 2 (evt_c)"));
    assert!(stored_ids(&sink).await.is_empty());
}

async fn a_record_sent_twice_is_counted_as_a_duplicate_and_stored_once() {
    let sink = sink().await;
    let text = signed(&record("evt_one", "u", "2026-12-03T10:30:00Z"));
    post(&sink, text.clone()).await;

    let again = post(&sink, text.clone()).await;
    let batch = post(
        &sink,
        format!(
            "[{text},{}]",
            signed(&record("evt_two", "u", "2026-12-03T10:31:00Z"))
        ),
    )
    .await;

    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json(), json!({"accepted": 0, "duplicates": 1}));
    assert_eq!(batch.status, StatusCode::CREATED);
    assert_eq!(batch.json(), json!({"accepted": 1, "duplicates": 1}));
    assert_eq!(stored_ids(&sink).await, ["evt_one", "evt_two"]);
}

async fn a_different_record_under_a_stored_id_is_refused_with_409_and_its_batch_dropped() {
    let sink = sink().await;
    post(
        &sink,
        signed(&record("evt_one", "user_a", "2026-12-03T10:30:00Z")),
    )
    .await;
    let other = signed(&record("evt_one", "user_b", "2026-12-03T10:30:00Z"));
    let fresh = signed(&record("evt_two", "user_a", "2026-12-03T10:31:00Z"));

    let answer = post(&sink, format!("[{fresh},{other}]")).await;

    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert_eq!(answer.error_code(), "conflicting_duplicate");
    assert!(answer.error_message().contains("evt_one"));
    assert_eq!(stored_ids(&sink).await, ["evt_one"]);
    let kept = get(&sink, "/v1/evidence/evt_one").await.json();
    assert_eq!(kept["user_id"], "user_a");
}

async fn a_query_filters_by_user_id_and_time_range() {
    let sink = sink().await;
    let batch = json!([
        signed_value(&record("evt_1", "alice", "2026-12-03T09:59:59.999Z")),
        signed_value(&record("evt_2", "alice", "2026-12-03T10:00:00Z")),
        signed_value(&record("evt_3", "bob", "2026-12-03T10:30:00Z")),
        signed_value(&record("evt_4", "alice", "2026-12-03T11:30:00+01:00")),
        signed_value(&record("evt_5", "alice", "2026-12-03T11:00:00Z")),
    ]);
    assert_eq!(
        post(&sink, batch.to_string()).await.status,
        StatusCode::CREATED
    );

    let answer = get(
        &sink,
        "/v1/evidence?user_id=alice&from=2026-12-03T10:00:00Z&to=2026-12-03T11:00:00Z",
    )
    .await;

    assert_eq!(answer.status, StatusCode::OK);
    let body = answer.json();
    let ids: Vec<&str> = body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["evt_2", "evt_4"]);
    assert_eq!(body["count"], 2);
}

async fn a_query_filters_by_request_id_and_decision_and_honours_the_limit() {
    let sink = sink().await;
    let batch = json!([
        signed_value(&record("evt_1", "alice", "2026-12-03T10:00:00Z")),
        signed_value(&record("evt_2", "alice", "2026-12-03T10:01:00Z")),
        signed_value(&record("evt_3", "alice", "2026-12-03T10:02:00Z")),
    ]);
    post(&sink, batch.to_string()).await;

    let by_request = get(&sink, "/v1/evidence?request_id=req-evt_2").await.json();
    let denied = get(&sink, "/v1/evidence?decision=deny").await.json();
    let limited = get(&sink, "/v1/evidence?decision=allow&limit=2")
        .await
        .json();

    assert_eq!(by_request["count"], 1);
    assert_eq!(by_request["records"][0]["id"], "evt_2");
    assert_eq!(denied["count"], 0);
    assert_eq!(limited["count"], 2);
    assert_eq!(limited["records"][1]["id"], "evt_2");
}

async fn a_bad_from_is_refused_with_400_naming_from() {
    let sink = sink().await;

    let answer = get(&sink, "/v1/evidence?from=last-tuesday").await;

    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.error_code(), "invalid_query");
    assert!(answer.error_message().contains("`from`"));
}

async fn bad_limits_formats_and_unknown_parameters_are_refused_by_name() {
    let sink = sink().await;

    for (uri, parameter) in [
        ("/v1/evidence?limit=5000", "`limit`"),
        ("/v1/evidence?limit=ten", "`limit`"),
        ("/v1/evidence?format=xml", "`format`"),
        ("/v1/evidence?to=2026-12-03", "`to`"),
        ("/v1/evidence?userid=alice", "`userid`"),
    ] {
        let answer = get(&sink, uri).await;

        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(answer.error_code(), "invalid_query", "{uri}");
        assert!(answer.error_message().contains(parameter), "{uri}");
    }
}

async fn csv_and_jsonl_exports_hold_the_same_records_as_json() {
    let sink = sink().await;
    let mut tricky = record("evt_2", "bob, \"the\" builder", "2026-12-03T10:01:00Z");
    tricky.model = Some("line\nbreak".to_owned());
    let texts = [
        signed(&record("evt_1", "alice", "2026-12-03T10:00:00Z")),
        signed(&tricky),
    ];
    post(&sink, format!("[{}]", texts.join(","))).await;

    let json = get(&sink, "/v1/evidence?format=json").await;
    let jsonl = get(&sink, "/v1/evidence?format=jsonl").await;
    let csv = get(&sink, "/v1/evidence?format=csv").await;

    let from_json: Vec<Value> = json.json()["records"].as_array().unwrap().clone();
    assert_eq!(json.content_type, "application/json");

    assert_eq!(jsonl.content_type, "application/x-ndjson");
    let jsonl_text = jsonl.text();
    let lines: Vec<&str> = jsonl_text.lines().collect();
    assert_eq!(lines, texts);
    let from_jsonl: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(from_jsonl, from_json);

    assert!(csv.content_type.starts_with("text/csv"));
    let csv_text = csv.text();
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    assert_eq!(
        reader.headers().unwrap(),
        &csv::StringRecord::from(CSV_COLUMNS.to_vec())
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), from_json.len());
    for (row, record) in rows.iter().zip(&from_json) {
        assert_eq!(&row[0], record["id"].as_str().unwrap());
        assert_eq!(&row[1], record["timestamp"].as_str().unwrap());
        assert_eq!(&row[3], record["user_id"].as_str().unwrap());
        assert_eq!(&row[5], record["model"].as_str().unwrap());
        assert_eq!(&row[7], "200");
        assert_eq!(&row[10], "8");
        assert_eq!(&row[11], "0.00039");
        assert_eq!(&row[13], record["signature"].as_str().unwrap());
    }
}

async fn a_body_over_the_limit_is_refused_with_413() {
    let sink = sink_with_limit(1024).await;
    let text = signed(&record("evt_one", "u", "2026-12-03T10:30:00Z"));
    let padded = format!("{text}{}", " ".repeat(2048));

    let answer = post(&sink, padded).await;

    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.error_code(), "body_too_large");
    assert!(stored_ids(&sink).await.is_empty());
}

async fn a_body_streamed_without_a_length_is_still_limited() {
    let sink = sink_with_limit(1024).await;
    let body = Body::new(SpaceChunks { left: 64 });

    let answer = post(&sink, body).await;

    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.error_code(), "body_too_large");
}

/// A body of 100-byte chunks of spaces with no declared length, as a chunked upload is.
struct SpaceChunks {
    left: usize,
}

impl http_body::Body for SpaceChunks {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b' '; 100])))))
    }
}

async fn garbage_bodies_never_get_a_server_error() {
    let sink = sink().await;
    let deep_arrays = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_objects = "{\"a\":".repeat(100_000);
    let bodies: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "invalid_json"),
        (b"".to_vec(), "invalid_json"),
        (b"[]".to_vec(), "invalid_record"),
        (b"[1]".to_vec(), "invalid_record"),
        (b"null".to_vec(), "invalid_record"),
        (b"\"evt_x\"".to_vec(), "invalid_record"),
        (b"{}".to_vec(), "invalid_record"),
        (b"[{}, null]".to_vec(), "invalid_record"),
        (
            br#"{"id":"evt_x","timestamp":"2026-12-03T10:30:00Z","key_id":7}"#.to_vec(),
            "invalid_record",
        ),
        (
            br#"{"id":"evt_x","timestamp":"2026-12-03T10:30:00Z","key_id":"k","signature":"%%"}"#
                .to_vec(),
            "signature_invalid",
        ),
        (vec![0xff, 0xfe, 0x00], "invalid_json"),
        (b"{\"id\":\"\\ud800\"}".to_vec(), "invalid_json"),
        (b"1e999".to_vec(), "invalid_json"),
        (deep_arrays.into_bytes(), "invalid_json"),
        (deep_objects.into_bytes(), "invalid_json"),
    ];

    for (body, code) in bodies {
        let shown = String::from_utf8_lossy(&body)
            .chars()
            .take(40)
            .collect::<String>();

        let answer = post(&sink, body).await;

        assert!(
            answer.status.is_client_error(),
            "{shown}: {}",
            answer.status
        );
        assert_eq!(answer.error_code(), code, "{shown}");
    }
    assert_eq!(get(&sink, "/healthz").await.status, StatusCode::OK);
}

async fn an_unknown_id_is_404_not_found() {
    let sink = sink().await;

    let answer = get(&sink, "/v1/evidence/evt_nobody").await;

    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.error_code(), "not_found");
}

async fn unknown_routes_and_methods_answer_with_json_errors() {
    let sink = sink().await;

    let missing = get(&sink, "/v2/nothing").await;
    let wrong = call(
        &sink,
        Request::delete("/v1/evidence").body(Body::empty()).unwrap(),
    )
    .await;

    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error_code(), "not_found");
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.error_code(), "method_not_allowed");
}

async fn the_keys_endpoint_lists_the_trusted_keys() {
    let sink = sink().await;
    let public = gateway_key().verifying_key();

    let answer = get(&sink, "/v1/keys").await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.json(),
        json!({"keys": [{"key_id": public.key_id().as_str(), "public_key": public.to_base64()}]})
    );
}

async fn health_answers_ok_when_the_database_answers() {
    let answer = get(&sink().await, "/healthz").await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), json!({"status": "ok"}));
}

// ---- The Merkle tree, tree heads and proofs ----

use mercator_evidence::merkle::{
    empty_root, from_hex, record_leaf_hash, verify_consistency, verify_inclusion, MemoryTree,
};
use mercator_evidence::verify_tree_head;

fn hashes(value: &Value) -> Vec<[u8; 32]> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|hex| from_hex(hex.as_str().unwrap()).unwrap())
        .collect()
}

async fn post_batch(sink: &Router, records: &[EvidenceRecord]) -> Answer {
    let texts: Vec<String> = records.iter().map(signed).collect();
    post(sink, format!("[{}]", texts.join(","))).await
}

fn numbered(count: usize, user: &str) -> Vec<EvidenceRecord> {
    (0..count)
        .map(|i| {
            record(
                &format!("evt_{user}_{i:05}"),
                user,
                &format!("2026-12-03T10:{:02}:{:02}Z", (i / 60) % 60, i % 60),
            )
        })
        .collect()
}

/// The verified head of the sink's tree (of `size` leaves when given).
async fn verified_head(sink: &Router, size: Option<u64>) -> mercator_evidence::TreeHead {
    let uri = match size {
        Some(size) => format!("/v1/tree?tree_size={size}"),
        None => "/v1/tree".to_owned(),
    };
    let answer = get_anonymously(sink, &uri).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    verify_tree_head(&answer.json(), &tree_key().verifying_key()).unwrap()
}

async fn the_tree_head_is_signed_by_the_published_tree_key_and_covers_every_record() {
    let sink = sink().await;
    let empty = verified_head(&sink, None).await;
    assert_eq!(empty.tree_size, 0);
    assert_eq!(empty.root(), Some(empty_root()));

    let records = numbered(5, "alice");
    post_batch(&sink, &records).await;
    let head = verified_head(&sink, None).await;

    let key = get_anonymously(&sink, "/v1/tree/key").await.json();
    assert_eq!(key["key_id"], tree_key().key_id().as_str());
    assert_eq!(key["public_key"], tree_key().verifying_key().to_base64());
    assert_eq!(key["role"], "tree_head");
    assert_eq!(head.tree_size, 5);
    // The root is the RFC 9162 root over the records exactly as the sink serves them.
    let mut leaves = MemoryTree::default();
    for record in &records {
        let served = get(&sink, &format!("/v1/evidence/{}", record.id))
            .await
            .text();
        leaves.push(record_leaf_hash(&served));
    }
    assert_eq!(
        head.root(),
        Some(mercator_evidence::merkle::root(&mut leaves, 5).unwrap())
    );
    assert!(!get_anonymously(&sink, "/v1/keys")
        .await
        .text()
        .contains(&tree_key().key_id().to_string()));
}

async fn every_record_has_an_inclusion_proof_in_the_current_and_in_older_tree_heads() {
    let sink = sink().await;
    let records = numbered(7, "alice");
    post_batch(&sink, &records[..3]).await;
    post_batch(&sink, &records[3..]).await;
    let old_head = verified_head(&sink, Some(4)).await;
    let head = verified_head(&sink, None).await;

    for (index, record) in records.iter().enumerate() {
        let answer = get_anonymously(&sink, &format!("/v1/evidence/{}/proof", record.id)).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        let proof = answer.json();
        let leaf = record_leaf_hash(&signed(record));

        assert_eq!(proof["leaf_index"], index);
        assert_eq!(proof["status"], "stored");
        assert_eq!(from_hex(proof["leaf_hash"].as_str().unwrap()), Some(leaf));
        let in_head = verify_tree_head(&proof["tree_head"], &tree_key().verifying_key()).unwrap();
        assert_eq!(in_head.root(), head.root());
        assert!(verify_inclusion(
            &leaf,
            index as u64,
            7,
            &hashes(&proof["inclusion_proof"]),
            &head.root().unwrap()
        ));
        if index < 4 {
            let old = get_anonymously(
                &sink,
                &format!("/v1/evidence/{}/proof?tree_size=4", record.id),
            )
            .await
            .json();
            assert!(verify_inclusion(
                &leaf,
                index as u64,
                4,
                &hashes(&old["inclusion_proof"]),
                &old_head.root().unwrap()
            ));
        }
    }

    let later = get_anonymously(
        &sink,
        &format!("/v1/evidence/{}/proof?tree_size=4", records[5].id),
    )
    .await;
    assert_eq!(later.status, StatusCode::BAD_REQUEST);
    assert!(later.error_message().contains("leaf 5"));
    let too_big = get_anonymously(&sink, "/v1/tree?tree_size=8").await;
    assert_eq!(too_big.status, StatusCode::BAD_REQUEST);
    assert!(too_big.error_message().contains("`tree_size`"));
    let unknown = get_anonymously(&sink, "/v1/evidence/evt_nobody/proof").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

async fn consistency_proofs_link_every_older_tree_head_to_the_newest() {
    let sink = sink().await;
    let records = numbered(9, "alice");
    let mut heads = Vec::new();
    for chunk in records.chunks(2) {
        post_batch(&sink, chunk).await;
        heads.push(verified_head(&sink, None).await);
    }
    let newest = heads.last().unwrap().clone();

    for old in &heads {
        let answer = get_anonymously(
            &sink,
            &format!("/v1/tree/consistency?first={}&second=9", old.tree_size),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        let proof = hashes(&answer.json()["consistency_proof"]);

        assert!(verify_consistency(
            old.tree_size,
            9,
            &old.root().unwrap(),
            &newest.root().unwrap(),
            &proof
        ));
    }

    for (uri, parameter) in [
        ("/v1/tree/consistency", "`first`"),
        ("/v1/tree/consistency?first=0", "`first`"),
        ("/v1/tree/consistency?first=5&second=4", "`first`"),
        ("/v1/tree/consistency?first=2&second=10", "`second`"),
        ("/v1/tree/consistency?first=x", "`first`"),
        ("/v1/tree/consistency?first=1&size=2", "`size`"),
    ] {
        let answer = get_anonymously(&sink, uri).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(
            answer.error_message().contains(parameter),
            "{uri}: {}",
            answer.error_message()
        );
    }
}

// ---- The operator token ----

async fn query_export_reading_and_erasure_need_the_operator_token_and_ingestion_does_not() {
    let sink = sink().await;
    let text = signed(&record("evt_one", "alice", "2026-12-03T10:30:00Z"));
    assert_eq!(post(&sink, text).await.status, StatusCode::CREATED);

    for uri in [
        "/v1/evidence",
        "/v1/evidence/export",
        "/v1/evidence/bundle",
        "/v1/evidence/evt_one",
    ] {
        let anonymous = get_anonymously(&sink, uri).await;
        let wrong = call(
            &sink,
            Request::get(uri)
                .header(header::AUTHORIZATION, "Bearer mjop_not-the-token")
                .body(Body::empty())
                .unwrap(),
        )
        .await;

        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(anonymous.error_code(), "operator_token_required", "{uri}");
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(wrong.error_code(), "operator_token_invalid", "{uri}");
    }
    let erase = call(
        &sink,
        Request::post("/v1/erasure")
            .body(Body::from(r#"{"user_id":"alice"}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(erase.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(&sink, "/v1/evidence/evt_one").await.status,
        StatusCode::OK
    );

    for public in [
        "/v1/tree",
        "/v1/tree/key",
        "/v1/keys",
        "/v1/evidence/evt_one/proof",
        "/healthz",
    ] {
        assert_eq!(
            get_anonymously(&sink, public).await.status,
            StatusCode::OK,
            "{public}"
        );
    }
}

async fn a_sink_without_an_operator_token_refuses_every_operator_endpoint() {
    let keys = KeyRing::new([gateway_key().verifying_key()]);
    let sink = app(AppState::new(keys, common::fresh_store().await, tree_key()));

    let answer = get(&sink, "/v1/evidence").await;

    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.error_code(), "operator_token_not_configured");
}

// ---- Erasure and retention ----

async fn post_operator(sink: &Router, uri: &str, body: &str) -> Answer {
    let request = Request::post(uri)
        .header(header::AUTHORIZATION, format!("Bearer {OPERATOR_TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    call(sink, request).await
}

async fn erasure_removes_a_users_content_and_every_other_proof_still_verifies() {
    let sink = sink().await;
    let mut records = numbered(4, "alice");
    records.extend(numbered(5, "bob"));
    records.swap(1, 6);
    post_batch(&sink, &records).await;
    let before = verified_head(&sink, None).await;

    let answer = post_operator(&sink, "/v1/erasure", r#"{"user_id":"alice"}"#).await;

    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json(), json!({"user_id": "alice", "erased": 4}));
    let after = verified_head(&sink, None).await;
    assert_eq!(after.tree_size, before.tree_size);
    assert_eq!(after.root_hash, before.root_hash);

    for (index, record) in records.iter().enumerate() {
        let fetched = get(&sink, &format!("/v1/evidence/{}", record.id)).await;
        let proof = get_anonymously(&sink, &format!("/v1/evidence/{}/proof", record.id))
            .await
            .json();
        let is_alice = record.user_id.as_deref() == Some("alice");
        if is_alice {
            assert_eq!(fetched.status, StatusCode::GONE);
            assert_eq!(fetched.error_code(), "erased");
            assert!(fetched.error_message().contains("erased at"));
            assert_eq!(proof["status"], "erased");
        } else {
            assert_eq!(fetched.status, StatusCode::OK);
            assert_eq!(proof["status"], "stored");
        }
        let leaf = record_leaf_hash(&signed(record));
        assert!(verify_inclusion(
            &leaf,
            index as u64,
            9,
            &hashes(&proof["inclusion_proof"]),
            &after.root().unwrap()
        ));
    }
    let left = get(&sink, "/v1/evidence?user_id=alice").await.json();
    assert_eq!(left["count"], 0);
    // Sent again, erased records are duplicates: never stored twice, never a new leaf.
    let again = post_batch(&sink, &records[..1]).await;
    assert_eq!(again.json(), json!({"accepted": 0, "duplicates": 1}));
    assert_eq!(verified_head(&sink, None).await.tree_size, 9);

    for bad in [
        r#"{}"#,
        r#"{"user_id":""}"#,
        r#"{"user_id":"a","x":1}"#,
        r#"["a"]"#,
    ] {
        let refused = post_operator(&sink, "/v1/erasure", bad).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

async fn pruning_removes_records_older_than_the_retention_period_and_keeps_their_leaves() {
    let sink = sink().await;
    let old = record("evt_old", "alice", "2020-01-01T00:00:00Z");
    let recent_time = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let recent = record("evt_recent", "alice", &recent_time);
    post_batch(&sink, &[old, recent]).await;
    let before = verified_head(&sink, None).await;

    let answer = post_operator(&sink, "/v1/retention/prune", "").await;

    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json()["pruned"], 1);
    let gone = get(&sink, "/v1/evidence/evt_old").await;
    assert_eq!(gone.status, StatusCode::GONE);
    assert_eq!(gone.error_code(), "pruned");
    assert_eq!(
        get(&sink, "/v1/evidence/evt_recent").await.status,
        StatusCode::OK
    );
    assert_eq!(verified_head(&sink, None).await.root_hash, before.root_hash);
}

// ---- Keys with validity windows ----

async fn a_revoked_key_still_verifies_its_earlier_records_and_refuses_later_ones() {
    let revoked = gateway_key().verifying_key();
    let document: mercator_evidence_sink::KeysDocument = serde_json::from_value(json!({"keys": [{
        "key_id": revoked.key_id().as_str(),
        "public_key": revoked.to_base64(),
        "revoked_at": "2026-12-03T12:00:00Z",
    }]}))
    .unwrap();
    let keys = KeyRing::from_document(&document, std::path::Path::new("keys.json")).unwrap();
    let sink = app(state(keys, common::fresh_store().await));

    let before = post(
        &sink,
        signed(&record("evt_before", "u", "2026-12-03T11:59:59.999Z")),
    )
    .await;
    let after = post(
        &sink,
        signed(&record("evt_after", "u", "2026-12-03T12:00:00Z")),
    )
    .await;

    assert_eq!(before.status, StatusCode::CREATED);
    assert_eq!(after.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(after.error_code(), "key_not_valid");
    assert!(after.error_message().contains("revoked_at"));
    assert!(after.error_message().contains("evt_after"));
    assert_eq!(stored_ids(&sink).await, ["evt_before"]);
    let keys = get_anonymously(&sink, "/v1/keys").await.json();
    assert_eq!(keys["keys"][0]["revoked_at"], "2026-12-03T12:00:00Z");
}

// ---- Queries, pages and streamed exports ----

async fn pages_follow_their_cursors_and_filters_include_provider_and_model() {
    let sink = sink().await;
    let mut records = numbered(5, "alice");
    records[3].model = Some("gpt-3.5-turbo".to_owned());
    records[4].provider = Some("anthropic".to_owned());
    post_batch(&sink, &records).await;

    let mut ids = Vec::new();
    let mut uri = "/v1/evidence?limit=2".to_owned();
    loop {
        let page = get(&sink, &uri).await.json();
        ids.extend(
            page["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/v1/evidence?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    let expected: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, expected);

    let by_model = get(&sink, "/v1/evidence?model=gpt-3.5-turbo").await.json();
    let by_provider = get(&sink, "/v1/evidence?provider=anthropic&user_id=alice")
        .await
        .json();
    assert_eq!(by_model["count"], 1);
    assert_eq!(by_model["records"][0]["id"], records[3].id.as_str());
    assert_eq!(by_provider["count"], 1);
    assert_eq!(by_provider["records"][0]["id"], records[4].id.as_str());
}

async fn a_bad_time_range_is_a_400_naming_to() {
    let sink = sink().await;

    let answer = get(
        &sink,
        "/v1/evidence/export?from=2026-12-03T11:00:00Z&to=2026-12-03T10:00:00Z",
    )
    .await;

    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.error_code(), "invalid_query");
    assert!(answer.error_message().contains("`to`"));
    assert!(answer.error_message().contains("later than `from`"));
}

/// The body's data frames, to see that an export is streamed in pieces.
async fn frames(sink: &Router, uri: &str) -> (StatusCode, Vec<Bytes>) {
    let request = Request::get(uri)
        .header(header::AUTHORIZATION, format!("Bearer {OPERATOR_TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let response = sink.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let mut body = response.into_body();
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            frames.push(data);
        }
    }
    (status, frames)
}

async fn exports_stream_every_matching_record_page_by_page_in_three_formats() {
    let keys = KeyRing::new([gateway_key().verifying_key()]);
    let sink = app(AppState {
        export_page_records: 10,
        ..state(keys, common::fresh_store().await)
    });
    let count = 25;
    let records = numbered(count, "alice");
    assert_eq!(
        post_batch(&sink, &records).await.status,
        StatusCode::CREATED
    );
    post_batch(&sink, &numbered(3, "bob")).await;

    let (status, json_frames) = frames(&sink, "/v1/evidence/export?user_id=alice").await;
    let (_, jsonl_frames) = frames(&sink, "/v1/evidence/export?user_id=alice&format=jsonl").await;
    let (_, csv_frames) = frames(&sink, "/v1/evidence/export?user_id=alice&format=csv").await;

    assert_eq!(status, StatusCode::OK);
    // A prefix, three pages, a suffix: never one buffer of everything.
    assert!(json_frames.len() >= 5, "{} frames", json_frames.len());
    let json: Value = serde_json::from_slice(&json_frames.concat()).unwrap();
    assert_eq!(json["count"], count);
    assert_eq!(json["records"].as_array().unwrap().len(), count);
    let jsonl = String::from_utf8(jsonl_frames.concat()).unwrap();
    assert_eq!(jsonl.lines().count(), count);
    assert_eq!(jsonl.lines().next().unwrap(), signed(&records[0]));
    let csv_text = String::from_utf8(csv_frames.concat()).unwrap();
    assert_eq!(
        csv::Reader::from_reader(csv_text.as_bytes())
            .records()
            .count(),
        count
    );
}

async fn a_bundle_holds_the_tree_head_and_each_records_proof() {
    let sink = sink().await;
    let records = numbered(6, "alice");
    post_batch(&sink, &records).await;
    post_batch(&sink, &numbered(2, "bob")).await;

    let (status, bundle) = frames(&sink, "/v1/evidence/bundle?user_id=alice").await;

    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(bundle.concat()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1 + 6 + 1);
    assert_eq!(lines[0]["bundle"], "mercator.bundle.v1");
    let head = verify_tree_head(&lines[0]["tree_head"], &tree_key().verifying_key()).unwrap();
    assert_eq!(head.tree_size, 8);
    for (line, record) in lines[1..7].iter().zip(&records) {
        let text = mercator_evidence::canonical_json(&line["record"]).unwrap();
        assert_eq!(String::from_utf8(text.clone()).unwrap(), signed(record));
        assert!(verify_inclusion(
            &mercator_evidence::merkle::leaf_hash(&text),
            line["leaf_index"].as_u64().unwrap(),
            head.tree_size,
            &hashes(&line["inclusion_proof"]),
            &head.root().unwrap()
        ));
    }
    assert_eq!(lines[7], json!({"end": {"records": 6}}));
}

// ---- Bad input ----

async fn a_truncated_batch_is_a_400_and_stores_nothing() {
    let sink = sink().await;
    let batch = format!(
        "[{},{}]",
        signed(&record("evt_a", "u", "2026-12-03T10:30:00Z")),
        signed(&record("evt_b", "u", "2026-12-03T10:31:00Z"))
    );
    let truncated = &batch[..batch.len() - 40];

    let answer = post(&sink, truncated.to_owned()).await;

    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.error_code(), "invalid_json");
    assert!(stored_ids(&sink).await.is_empty());
}

async fn a_hundred_megabyte_body_is_refused_with_413_after_reading_little_of_it() {
    let sink = sink().await;
    let polled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // 100 MB in 1 MB chunks, with no declared length.
    let body = Body::new(CountedChunks {
        left: 100,
        polled: std::sync::Arc::clone(&polled),
    });

    let answer = post(&sink, body).await;

    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.error_code(), "body_too_large");
    let read = polled.load(std::sync::atomic::Ordering::SeqCst);
    // The limit is 16 MiB: the sink stops after about 17 chunks of the 100.
    assert!(read <= 18, "read {read} MB of 100");
    assert!(stored_ids(&sink).await.is_empty());
}

/// A body of 1 MB chunks of spaces that counts how many were read.
struct CountedChunks {
    left: usize,
    polled: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl http_body::Body for CountedChunks {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        self.polled
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b' '; 1_000_000])))))
    }
}

async fn a_declared_length_over_the_limit_is_refused_before_the_body_is_read() {
    let sink = sink_with_limit(1024).await;
    let polled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let request = Request::post("/v1/evidence")
        .header(header::CONTENT_LENGTH, "104857600")
        .body(Body::new(CountedChunks {
            left: 100,
            polled: std::sync::Arc::clone(&polled),
        }))
        .unwrap();

    let answer = call(&sink, request).await;

    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.error_code(), "body_too_large");
    assert_eq!(polled.load(std::sync::atomic::Ordering::SeqCst), 0);
}

on_both_backends!(
    a_good_record_is_accepted_and_fetched_back_byte_identical,
    a_stored_record_still_verifies_without_the_sink,
    a_record_changed_after_signing_is_refused_with_422_and_not_stored,
    a_record_signed_by_an_unknown_key_is_refused_with_unknown_key,
    a_record_without_a_signature_is_refused_naming_the_member,
    a_batch_is_stored_whole,
    a_batch_with_one_bad_record_stores_nothing,
    a_record_sent_twice_is_counted_as_a_duplicate_and_stored_once,
    a_different_record_under_a_stored_id_is_refused_with_409_and_its_batch_dropped,
    a_query_filters_by_user_id_and_time_range,
    a_query_filters_by_request_id_and_decision_and_honours_the_limit,
    a_bad_from_is_refused_with_400_naming_from,
    bad_limits_formats_and_unknown_parameters_are_refused_by_name,
    csv_and_jsonl_exports_hold_the_same_records_as_json,
    a_body_over_the_limit_is_refused_with_413,
    a_body_streamed_without_a_length_is_still_limited,
    garbage_bodies_never_get_a_server_error,
    an_unknown_id_is_404_not_found,
    unknown_routes_and_methods_answer_with_json_errors,
    the_keys_endpoint_lists_the_trusted_keys,
    health_answers_ok_when_the_database_answers,
    the_tree_head_is_signed_by_the_published_tree_key_and_covers_every_record,
    every_record_has_an_inclusion_proof_in_the_current_and_in_older_tree_heads,
    consistency_proofs_link_every_older_tree_head_to_the_newest,
    query_export_reading_and_erasure_need_the_operator_token_and_ingestion_does_not,
    a_sink_without_an_operator_token_refuses_every_operator_endpoint,
    erasure_removes_a_users_content_and_every_other_proof_still_verifies,
    pruning_removes_records_older_than_the_retention_period_and_keeps_their_leaves,
    a_revoked_key_still_verifies_its_earlier_records_and_refuses_later_ones,
    pages_follow_their_cursors_and_filters_include_provider_and_model,
    a_bad_time_range_is_a_400_naming_to,
    exports_stream_every_matching_record_page_by_page_in_three_formats,
    a_bundle_holds_the_tree_head_and_each_records_proof,
    a_truncated_batch_is_a_400_and_stores_nothing,
    a_hundred_megabyte_body_is_refused_with_413_after_reading_little_of_it,
    a_declared_length_over_the_limit_is_refused_before_the_body_is_read,
);
