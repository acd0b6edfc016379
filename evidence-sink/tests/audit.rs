//! The auditor's side: bundles and consistency proofs from a sink on a real database (a
//! SQLite file, and a PostgreSQL schema), checked by `mercator audit`'s logic, after the
//! database was tampered with behind the sink's back.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use mercator_evidence::{EvidenceRecord, SigningKey};
use mercator_evidence_sink::tools::audit::{
    audit_bundle, audit_consistency, tree_key_from_json, AuditFailure, BundleSummary,
};
use mercator_evidence_sink::{app, AppState, KeyRing, KeysDocument, OperatorToken, Store};
use serde_json::{json, Value};
use tower::ServiceExt;

mod common;

const TOKEN: &str = "mjop_audit-test";

fn gateway_key() -> SigningKey {
    SigningKey::from_seed(&[7; 32])
}

fn tree_key() -> SigningKey {
    SigningKey::from_seed(&[9; 32])
}

fn gateway_keys() -> KeyRing {
    KeyRing::new([gateway_key().verifying_key()])
}

async fn sink_on(db: &str) -> Router {
    let store = Store::open_db(db).await.unwrap();
    app(AppState {
        operator: Some(OperatorToken::of_token(TOKEN)),
        ..AppState::new(gateway_keys(), store, tree_key())
    })
}

fn record(id: &str, user: &str, timestamp: &str) -> String {
    let mut record: EvidenceRecord = serde_json::from_str(include_str!(
        "../../crates/evidence/testdata/signed-record.json"
    ))
    .unwrap();
    record.id = id.to_owned();
    record.user_id = Some(user.to_owned());
    record.timestamp = timestamp.to_owned();
    record.sign(&gateway_key()).unwrap()
}

async fn send(sink: &Router, request: Request<Body>) -> (StatusCode, String) {
    let response = sink.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

async fn get(sink: &Router, uri: &str) -> String {
    let request = Request::get(uri)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let (status, body) = send(sink, request).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    body
}

async fn ingest(sink: &Router, ids: &[&str], user: &str) {
    let texts: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| record(id, user, &format!("2026-12-03T10:00:{i:02}Z")))
        .collect();
    let request = Request::post("/v1/evidence")
        .body(Body::from(format!("[{}]", texts.join(","))))
        .unwrap();
    let (status, body) = send(sink, request).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

fn published_tree_key() -> mercator_evidence::VerifyingKey {
    let public = tree_key().verifying_key();
    let text = json!({"key_id": public.key_id().as_str(), "public_key": public.to_base64(),
                      "role": "tree_head"})
    .to_string();
    tree_key_from_json(&text).unwrap()
}

fn audit(bundle: &str, keys: &KeyRing) -> Result<BundleSummary, AuditFailure> {
    audit_bundle(bundle.as_bytes(), keys, &published_tree_key()).unwrap()
}

async fn consistency(sink: &Router, old: &Value) -> Result<String, AuditFailure> {
    let new: Value = serde_json::from_str(&get(sink, "/v1/tree").await).unwrap();
    let proof: Value = serde_json::from_str(
        &get(
            sink,
            &format!(
                "/v1/tree/consistency?first={}&second={}",
                old["tree_size"], new["tree_size"]
            ),
        )
        .await,
    )
    .unwrap();
    audit_consistency(old, &new, &proof, &published_tree_key())
}

async fn tamper(db: &str, sql: &str) {
    common::disable_triggers(db).await;
    common::execute_behind_the_sinks_back(db, sql)
        .await
        .unwrap();
}

async fn an_untouched_bundle_passes_and_names_what_it_checked() {
    let dir = tempfile::tempdir().unwrap();
    let sink = sink_on(&common::fresh_db(dir.path()).await).await;
    ingest(&sink, &["evt_a1", "evt_a2", "evt_a3"], "alice").await;
    ingest(&sink, &["evt_b1"], "bob").await;

    let all = audit(&get(&sink, "/v1/evidence/bundle").await, &gateway_keys()).unwrap();
    let alice = audit(
        &get(&sink, "/v1/evidence/bundle?user_id=alice").await,
        &gateway_keys(),
    )
    .unwrap();

    assert_eq!(all.records, 4);
    assert_eq!(alice.records, 3);
    assert_eq!(alice.head.tree_size, 4);
    assert!(all.lines().contains("every inclusion proof verified"));
}

async fn a_record_edited_in_the_database_is_caught_by_the_auditor() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::fresh_db(dir.path()).await;
    let sink = sink_on(&path).await;
    ingest(&sink, &["evt_1", "evt_2", "evt_3"], "alice").await;

    tamper(
        &path,
        "UPDATE evidence SET record = replace(record, '\"user_id\":\"alice\"', \
         '\"user_id\":\"mallory\"') WHERE id = 'evt_2';",
    )
    .await;
    let bundle = get(&sink, "/v1/evidence/bundle").await;
    assert!(bundle.contains("mallory"));

    let failure = audit(&bundle, &gateway_keys()).unwrap_err();

    assert_eq!(failure.location, "line 3 (evt_2)");
    assert!(failure.reason.contains("signature"), "{}", failure.reason);
}

async fn a_record_swapped_for_another_validly_signed_one_fails_its_inclusion_proof() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::fresh_db(dir.path()).await;
    let sink = sink_on(&path).await;
    ingest(&sink, &["evt_1", "evt_2", "evt_3"], "alice").await;

    // A genuine, signed record put in place of another: its signature holds, the tree
    // does not.
    let other = record("evt_2", "alice", "2026-12-03T11:11:11Z");
    tamper(
        &path,
        &format!(
            "UPDATE evidence SET record = '{}' WHERE id = 'evt_2';",
            other.replace('\'', "''")
        ),
    )
    .await;
    let failure = audit(&get(&sink, "/v1/evidence/bundle").await, &gateway_keys()).unwrap_err();

    assert_eq!(failure.location, "line 3 (evt_2)");
    assert!(
        failure.reason.contains("inclusion proof"),
        "{}",
        failure.reason
    );
}

async fn a_record_deleted_from_the_database_breaks_the_consistency_proof() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::fresh_db(dir.path()).await;
    let sink = sink_on(&path).await;
    ingest(
        &sink,
        &["evt_1", "evt_2", "evt_3", "evt_4", "evt_5"],
        "alice",
    )
    .await;
    let kept_head: Value = serde_json::from_str(&get(&sink, "/v1/tree").await).unwrap();
    drop(sink);

    // Delete the third record and its leaf, close the gap, drop the derived nodes, and let
    // the sink rebuild a tree that is consistent with itself.
    tamper(
        &path,
        "DELETE FROM evidence WHERE id = 'evt_3';
         DELETE FROM evidence_leaves WHERE id = 'evt_3';
         UPDATE evidence_leaves SET leaf_index = -leaf_index WHERE leaf_index > 2;
         UPDATE evidence_leaves SET leaf_index = -leaf_index - 1 WHERE leaf_index < 0;
         DELETE FROM merkle_nodes;",
    )
    .await;
    let sink = sink_on(&path).await;
    ingest(&sink, &["evt_6", "evt_7"], "alice").await;

    // The rewritten log's own bundle verifies: only the kept tree head shows the deletion.
    assert!(audit(&get(&sink, "/v1/evidence/bundle").await, &gateway_keys()).is_ok());
    let failure = consistency(&sink, &kept_head).await.unwrap_err();

    assert_eq!(failure.location, "consistency");
    assert!(
        failure.reason.contains("changed or removed"),
        "{}",
        failure.reason
    );
}

async fn erasure_keeps_every_other_proof_and_the_tree_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let sink = sink_on(&common::fresh_db(dir.path()).await).await;
    ingest(&sink, &["evt_a1", "evt_a2"], "alice").await;
    ingest(&sink, &["evt_b1", "evt_b2"], "bob").await;
    ingest(&sink, &["evt_a3"], "alice").await;
    let before: Value = serde_json::from_str(&get(&sink, "/v1/tree").await).unwrap();

    let request = Request::post("/v1/erasure")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::from(r#"{"user_id":"alice"}"#))
        .unwrap();
    let (status, body) = send(&sink, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    ingest(&sink, &["evt_b3"], "bob").await;

    let summary = audit(&get(&sink, "/v1/evidence/bundle").await, &gateway_keys()).unwrap();
    assert_eq!(summary.records, 3);
    assert_eq!(summary.head.tree_size, 6);
    assert!(!get(&sink, "/v1/evidence/bundle").await.contains("evt_a"));
    assert!(consistency(&sink, &before).await.is_ok());
}

async fn a_revoked_key_fails_the_audit_of_records_it_signed_after_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let sink = sink_on(&common::fresh_db(dir.path()).await).await;
    ingest(&sink, &["evt_1", "evt_2", "evt_3"], "alice").await;
    // The auditor learns that the key was revoked at 10:00:01, before evt_2 and evt_3.
    let public = gateway_key().verifying_key();
    let document: KeysDocument = serde_json::from_value(json!({"keys": [{
        "key_id": public.key_id().as_str(), "public_key": public.to_base64(),
        "revoked_at": "2026-12-03T10:00:01Z"}]}))
    .unwrap();
    let revoked = KeyRing::from_document(&document, Path::new("keys.json")).unwrap();

    let failure = audit(&get(&sink, "/v1/evidence/bundle").await, &revoked).unwrap_err();

    assert_eq!(failure.location, "line 3 (evt_2)");
    assert!(failure.reason.contains("revoked_at"), "{}", failure.reason);
}

async fn a_cut_off_or_foreign_bundle_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sink = sink_on(&common::fresh_db(dir.path()).await).await;
    ingest(&sink, &["evt_1", "evt_2"], "alice").await;
    let bundle = get(&sink, "/v1/evidence/bundle").await;
    let lines: Vec<&str> = bundle.lines().collect();

    let cut = lines[..2].join("\n");
    let recounted = format!("{}\n{{\"end\":{{\"records\":5}}}}\n", lines[..3].join("\n"));
    let other_key = SigningKey::from_seed(&[1; 32]).verifying_key();

    assert_eq!(audit(&cut, &gateway_keys()).unwrap_err().location, "end");
    assert!(audit(&recounted, &gateway_keys())
        .unwrap_err()
        .reason
        .contains("counts"));
    let foreign = audit_bundle(bundle.as_bytes(), &gateway_keys(), &other_key)
        .unwrap()
        .unwrap_err();
    assert!(foreign.location.starts_with("tree head"));
    assert!(audit("", &gateway_keys()).is_err());
    assert!(tree_key_from_json(r#"{"key_id":"ed25519:0000000000000000","public_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}"#).is_err());
}

on_both_backends!(
    an_untouched_bundle_passes_and_names_what_it_checked,
    a_record_edited_in_the_database_is_caught_by_the_auditor,
    a_record_swapped_for_another_validly_signed_one_fails_its_inclusion_proof,
    a_record_deleted_from_the_database_breaks_the_consistency_proof,
    erasure_keeps_every_other_proof_and_the_tree_consistent,
    a_revoked_key_fails_the_audit_of_records_it_signed_after_revocation,
    a_cut_off_or_foreign_bundle_is_refused,
);
