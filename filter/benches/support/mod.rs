//! What the filter's benchmarks share: the load test's workload, the shipped policy bundle,
//! a gateway configured like `config/gateway.yaml`, and one allowed request driven through
//! an [`Exchange`] as Envoy drives it. Used by `benches/request_path.rs` (criterion, native)
//! and `examples/wasm_steps.rs` (the same steps timed inside a WebAssembly VM).

// A benchmark that cannot set itself up has nothing to measure; failing loudly is right.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    dead_code
)]

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use base64::Engine as _;
use mercator_filter::config::{Gateway, PluginConfig};
use mercator_filter::exchange::{Exchange, RequestHead};
use mercator_filter::policy::PolicyModule;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

pub const FINANCE_KEY: &str = "mj-bench-finance-key";
/// Far above the shipped 50 ms, so that a run under valgrind (`callgrind`, about fifty
/// times slower) is not denied for time. The limit's value does not change the cost of
/// checking it.
pub const EVALUATION_LIMIT: Duration = Duration::from_secs(10);

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The chat body that the load test sends too (`bench/workload.json`).
pub fn workload() -> Vec<u8> {
    std::fs::read(root().join("bench/workload.json")).unwrap()
}

/// An answer of the size the provider stand-in gives.
pub fn answer() -> Vec<u8> {
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
pub fn shipped_bundle() -> Vec<PolicyModule> {
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

pub fn department_only() -> Vec<PolicyModule> {
    shipped_bundle()
        .into_iter()
        .filter(|module| module.path == "policies/department.rego")
        .collect()
}

/// The request-phase input of `docs/policy-input.md`, with the workload's messages.
pub fn policy_input() -> Value {
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

pub fn gateway() -> Gateway {
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

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn request_head() -> RequestHead {
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

/// One allowed request as Envoy drives it, from its headers to its signed record.
pub fn run_exchange(
    gateway: &Rc<Gateway>,
    head: &RequestHead,
    body: &[u8],
    answer: &[u8],
    now: OffsetDateTime,
) -> Option<String> {
    let mut exchange = Exchange::new(gateway.clone());
    exchange.on_request_headers(head, false, now);
    exchange.on_request_body(body, now);
    exchange.on_response_headers(200, None, Some("application/json"), now);
    exchange.on_response_body(answer, now);
    exchange.on_done(now);
    exchange.take_evidence()
}

/// The evidence test vector with the workload's request and the answer above in full, as
/// the gateway records them with `content: full`.
pub fn realistic_record() -> mercator_evidence::EvidenceRecord {
    let vector =
        std::fs::read_to_string(root().join("crates/evidence/testdata/signed-record.json"))
            .unwrap();
    let mut record: Value = serde_json::from_str(&vector).unwrap();
    let request = String::from_utf8(workload()).unwrap();
    let answer = String::from_utf8(answer()).unwrap();
    record["request"]["body_bytes"] = request.len().into();
    record["request"]["body"] = request.into();
    record["response"]["body_bytes"] = answer.len().into();
    record["response"]["body"] = answer.into();
    serde_json::from_value(record).unwrap()
}
