//! What one evidence record costs to make ready: RFC 8785 canonical JSON and an Ed25519
//! signature over a record of a realistic chat completion (bodies kept in full). Run with
//! `cargo bench -p mercator-evidence`; `make bench` runs it with a short measurement time.

// A benchmark that cannot set itself up has nothing to measure; failing loudly is right.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use mercator_evidence::{canonical_json, verify_record, EvidenceRecord, SigningKey};

/// The test vector, with the load test's request body and an answer of the stand-in's
/// size in place of its tiny bodies.
fn realistic_record() -> EvidenceRecord {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let vector = std::fs::read_to_string(root.join("testdata/signed-record.json")).unwrap();
    let mut record: serde_json::Value = serde_json::from_str(&vector).unwrap();
    let request = std::fs::read_to_string(root.join("../../bench/workload.json")).unwrap();
    let answer = serde_json::json!({
        "id": "chatcmpl-bench", "object": "chat.completion", "model": "gpt-4-0613",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
            "content": "Operating expenses grew faster than revenue, so the operating margin \
                        narrowed by roughly a point."}}],
        "usage": {"prompt_tokens": 92, "completion_tokens": 41, "total_tokens": 133}
    })
    .to_string();
    record["request"]["body"] = request.clone().into();
    record["request"]["body_bytes"] = request.len().into();
    record["response"]["body"] = answer.clone().into();
    record["response"]["body_bytes"] = answer.len().into();
    serde_json::from_value(record).unwrap()
}

fn signing(c: &mut Criterion) {
    let record = realistic_record();
    let key = SigningKey::from_seed(&[7; 32]);
    let public = key.verifying_key();
    let signed: serde_json::Value = serde_json::from_str(&record.sign(&key).unwrap()).unwrap();
    assert!(verify_record(&signed, |_| Some(&public)).is_valid());

    c.bench_function("evidence/canonical_json", |b| {
        b.iter(|| canonical_json(black_box(&record)).unwrap())
    });
    c.bench_function("evidence/sign_record", |b| {
        b.iter(|| black_box(&record).sign(&key).unwrap())
    });
}

criterion_group!(benches, signing);
criterion_main!(benches);
