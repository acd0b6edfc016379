//! What the filter's own work costs per request, natively: parsing the OpenAI body, the
//! Rego decision, and the whole governed exchange (which includes building and signing
//! the evidence record). `make bench` runs these beside the Envoy load test, so the
//! difference between Envoy with and without the filter can be split into steps.
//!
//! Native x86-64 code is faster than the same code in Envoy's V8; the numbers rank the
//! steps, they do not predict the in-Envoy latency. Run one group with
//! `cargo bench -p mercator-filter --bench request_path -- policy`.

// A benchmark that cannot set itself up has nothing to measure; failing loudly is right.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion};
use mercator_filter::config::{Gateway, PluginConfig};
use mercator_filter::exchange::{Exchange, RequestHead};
use mercator_filter::openai::parse_chat_request;
use mercator_filter::policy::{Policy, PolicyModule};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

const FINANCE_KEY: &str = "mj-bench-finance-key";
/// Far above the shipped 50 ms, so that a run under valgrind (`callgrind`, about fifty
/// times slower) is not denied for time. The limit's value does not change the cost of
/// checking it.
const EVALUATION_LIMIT: Duration = Duration::from_secs(10);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The chat body that the load test sends too (`bench/workload.json`).
fn workload() -> Vec<u8> {
    std::fs::read(root().join("bench/workload.json")).unwrap()
}

/// An answer of the size the provider stand-in gives.
fn answer() -> Vec<u8> {
    json!({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1_764_000_000,
        "model": "gpt-4-0613",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
            "content": "Operating expenses grew faster than revenue, so the operating margin \
                        narrowed by roughly a point. Ask which cost centres drove the rise, and \
                        which of those costs recur next quarter."}}],
        "usage": {"prompt_tokens": 92, "completion_tokens": 41, "total_tokens": 133}
    })
    .to_string()
    .into_bytes()
}

/// The shipped bundle as the `mercator` tool reads it: every `.rego` under `policies/`
/// except tests and `examples/`, sorted by path.
fn shipped_bundle() -> Vec<PolicyModule> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<PolicyModule>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "examples") {
                    walk(&path, base, out);
                }
            } else if relative.ends_with(".rego") && !relative.ends_with("_test.rego") {
                let source = std::fs::read_to_string(&path).unwrap();
                out.push(PolicyModule {
                    path: format!("policies/{relative}"),
                    source,
                });
            }
        }
    }
    let base = root().join("policies");
    let mut modules = Vec::new();
    walk(&base, &base, &mut modules);
    modules.sort_by(|a, b| a.path.cmp(&b.path));
    modules
}

fn department_only() -> Vec<PolicyModule> {
    shipped_bundle()
        .into_iter()
        .filter(|module| module.path == "policies/department.rego")
        .collect()
}

/// The request-phase input of `docs/policy-input.md`, with the workload's messages.
fn policy_input() -> Value {
    let docs = std::fs::read_to_string(root().join("docs/policy-input.md")).unwrap();
    let example = docs
        .split("<!-- request-example -->")
        .nth(1)
        .and_then(|rest| rest.split("```json").nth(1))
        .and_then(|rest| rest.split("```").next())
        .unwrap();
    let mut input: Value = serde_json::from_str(example).unwrap();
    let body: Value = serde_json::from_slice(&workload()).unwrap();
    let messages: Vec<Value> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let text = m["content"].as_str().unwrap();
            json!({"role": m["role"], "text": text, "chars": text.chars().count()})
        })
        .collect();
    input["request"]["message_count"] = json!(messages.len());
    input["request"]["messages"] = Value::Array(messages);
    input
}

fn gateway() -> Gateway {
    let key_hash = hex(&Sha256::digest(FINANCE_KEY.as_bytes()));
    let config = json!({
        "providers": {"openai": {"api_key_env": "OPENAI_API_KEY"}},
        "api_keys": [{"sha256": key_hash, "user_id": "bench-finance", "name": "bench-key",
                      "attributes": {"department": "finance"}}],
        "policies": {"modules": shipped_bundle()},
        "pricing": {"gpt-4": {"input_per_million": 30.0, "output_per_million": 60.0}},
        "evidence": {"sink_cluster": "evidence_sink", "content": "full"},
        "limits": {"policy_evaluation_ms": EVALUATION_LIMIT.as_millis() as u64}
    });
    let config = PluginConfig::from_json(config.to_string().as_bytes()).unwrap();
    let seed = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    Gateway::new(config, |name| match name {
        "MERCATOR_SIGNING_KEY" => Some(seed.clone()),
        "OPENAI_API_KEY" => Some("sk-bench-provider".to_owned()),
        _ => None,
    })
    .unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn request_head() -> RequestHead {
    let header = |name: &str, value: &str| (name.to_owned(), value.as_bytes().to_vec());
    RequestHead {
        headers: vec![
            header(":method", "POST"),
            header(":path", "/v1/chat/completions"),
            header(":authority", "gateway.example"),
            header("content-type", "application/json"),
            header("x-request-id", "5f0c2a4e-8d0b-4a43-9a51-0e7c1b2d3f4a"),
            header("authorization", &format!("Bearer {FINANCE_KEY}")),
        ],
        end_of_stream: false,
        peer: None,
        source_address: Some("127.0.0.1:50312".to_owned()),
    }
}

fn parsing(c: &mut Criterion) {
    let body = workload();
    c.bench_function("parse/openai_chat_request", |b| {
        b.iter(|| parse_chat_request(black_box(&body)).unwrap())
    });
}

fn policy(c: &mut Criterion) {
    let input = policy_input();
    let limit = EVALUATION_LIMIT;
    for (name, modules) in [
        ("department", department_only()),
        ("shipped_bundle", shipped_bundle()),
    ] {
        let policy = Policy::compile(&modules, limit).unwrap();
        assert!(
            policy.evaluate(&input).allowed,
            "the bench input must be allowed"
        );
        c.bench_function(&format!("policy/evaluate/{name}"), |b| {
            b.iter(|| policy.evaluate(black_box(&input)))
        });
    }
}

/// One allowed request as Envoy drives it, from its headers to its signed record.
fn exchange(c: &mut Criterion) {
    let gateway = Rc::new(gateway());
    let head = request_head();
    let body = workload();
    let answer = answer();
    let now = OffsetDateTime::now_utc();
    let run = || {
        let mut exchange = Exchange::new(gateway.clone());
        exchange.on_request_headers(&head, false, now);
        exchange.on_request_body(&body, now);
        exchange.on_response_headers(200, None);
        exchange.on_response_body(&answer, now);
        exchange.on_done(now);
        exchange.take_evidence()
    };
    assert!(
        run().is_some(),
        "the bench request must be allowed and recorded"
    );
    c.bench_function("exchange/allowed_chat_completion", |b| b.iter(run));
}

criterion_group!(benches, parsing, policy, exchange);
criterion_main!(benches);
