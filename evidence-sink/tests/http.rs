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
use mercator_evidence_sink::{app, AppState, KeyRing, Store, CSV_COLUMNS};
use serde_json::{json, Value};
use tower::ServiceExt;

fn gateway_key() -> SigningKey {
    SigningKey::from_seed(&[7; 32])
}

fn sink_with_limit(max_body_bytes: usize) -> Router {
    let keys = KeyRing::new([gateway_key().verifying_key()]);
    let store = Store::open_in_memory().unwrap();
    app(AppState {
        max_body_bytes,
        ..AppState::new(keys, store)
    })
}

fn sink() -> Router {
    sink_with_limit(mercator_evidence_sink::DEFAULT_MAX_BODY_BYTES)
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

async fn get(sink: &Router, uri: &str) -> Answer {
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

#[tokio::test]
async fn a_good_record_is_accepted_and_fetched_back_byte_identical() {
    let sink = sink();
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

#[tokio::test]
async fn a_stored_record_still_verifies_without_the_sink() {
    let sink = sink();
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

#[tokio::test]
async fn a_record_changed_after_signing_is_refused_with_422_and_not_stored() {
    let sink = sink();
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

#[tokio::test]
async fn a_record_signed_by_an_unknown_key_is_refused_with_unknown_key() {
    let sink = sink();
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

#[tokio::test]
async fn a_record_without_a_signature_is_refused_naming_the_member() {
    let sink = sink();
    let mut unsigned = signed_value(&record("evt_one", "u", "2026-12-03T10:30:00Z"));
    unsigned.as_object_mut().unwrap().remove("signature");

    let answer = post(&sink, unsigned.to_string()).await;

    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.error_code(), "invalid_record");
    assert!(answer.error_message().contains("`signature`"));
}

#[tokio::test]
async fn a_batch_is_stored_whole() {
    let sink = sink();
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

#[tokio::test]
async fn a_batch_with_one_bad_record_stores_nothing() {
    let sink = sink();
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

#[tokio::test]
async fn a_record_sent_twice_is_counted_as_a_duplicate_and_stored_once() {
    let sink = sink();
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

#[tokio::test]
async fn a_different_record_under_a_stored_id_is_refused_with_409_and_its_batch_dropped() {
    let sink = sink();
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

#[tokio::test]
async fn a_query_filters_by_user_id_and_time_range() {
    let sink = sink();
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

#[tokio::test]
async fn a_query_filters_by_request_id_and_decision_and_honours_the_limit() {
    let sink = sink();
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

#[tokio::test]
async fn a_bad_from_is_refused_with_400_naming_from() {
    let sink = sink();

    let answer = get(&sink, "/v1/evidence?from=last-tuesday").await;

    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.error_code(), "invalid_query");
    assert!(answer.error_message().contains("`from`"));
}

#[tokio::test]
async fn bad_limits_formats_and_unknown_parameters_are_refused_by_name() {
    let sink = sink();

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

#[tokio::test]
async fn csv_and_jsonl_exports_hold_the_same_records_as_json() {
    let sink = sink();
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

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let sink = sink_with_limit(1024);
    let text = signed(&record("evt_one", "u", "2026-12-03T10:30:00Z"));
    let padded = format!("{text}{}", " ".repeat(2048));

    let answer = post(&sink, padded).await;

    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.error_code(), "body_too_large");
    assert!(stored_ids(&sink).await.is_empty());
}

#[tokio::test]
async fn a_body_streamed_without_a_length_is_still_limited() {
    let sink = sink_with_limit(1024);
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

#[tokio::test]
async fn garbage_bodies_never_get_a_server_error() {
    let sink = sink();
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

#[tokio::test]
async fn an_unknown_id_is_404_not_found() {
    let sink = sink();

    let answer = get(&sink, "/v1/evidence/evt_nobody").await;

    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.error_code(), "not_found");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_with_json_errors() {
    let sink = sink();

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

#[tokio::test]
async fn the_keys_endpoint_lists_the_trusted_keys() {
    let sink = sink();
    let public = gateway_key().verifying_key();

    let answer = get(&sink, "/v1/keys").await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.json(),
        json!({"keys": [{"key_id": public.key_id().as_str(), "public_key": public.to_base64()}]})
    );
}

#[tokio::test]
async fn health_answers_ok_when_the_database_answers() {
    let answer = get(&sink(), "/healthz").await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), json!({"status": "ok"}));
}
