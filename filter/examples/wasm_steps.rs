//! The filter's per-request steps timed inside a WebAssembly VM, to split the in-Envoy cost
//! that `make bench` measures into parts. Criterion (`benches/request_path.rs`) times the
//! same steps natively, but Envoy runs the filter in V8, where the ratios differ (no AVX2
//! for Ed25519, for one).
//!
//! `make bench-wasm` builds this for `wasm32-wasip1` and runs it in Node's V8 through
//! `bench/wasm_steps.mjs`; Node's V8 is not Envoy's, so the numbers are close to, not equal
//! to, the filter's cost inside Envoy. Prints one JSON object per step: microseconds per
//! call. The optional argument is the number of calls per step (default 2000).

// A benchmark that cannot set itself up has nothing to measure; failing loudly is right.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

#[path = "../benches/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::rc::Rc;
use std::time::Instant;

use mercator_evidence::{canonical_json, SigningKey};
use mercator_filter::openai::parse_chat_request;
use mercator_filter::policy::Policy;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use support::{
    answer, department_only, gateway, policy_input, realistic_record, request_head, run_exchange,
    shipped_bundle, workload, EVALUATION_LIMIT,
};

fn time<T>(step: &str, calls: u32, mut work: impl FnMut() -> T) {
    // V8 compiles hot functions again with its optimizing tier; time them after that.
    for _ in 0..calls / 2 + 1 {
        black_box(work());
    }
    let start = Instant::now();
    for _ in 0..calls {
        black_box(work());
    }
    let micros = start.elapsed().as_secs_f64() * 1e6 / f64::from(calls.max(1));
    println!("{{\"step\": \"{step}\", \"us\": {micros:.2}}}");
}

fn main() {
    let calls: u32 = std::env::args()
        .nth(1)
        .map(|text| text.parse().unwrap())
        .unwrap_or(2000);

    let body = workload();
    time("parse/openai_chat_request", calls, || {
        parse_chat_request(&body).unwrap()
    });

    let input = policy_input();
    for (name, modules) in [
        ("department", department_only()),
        ("shipped_bundle", shipped_bundle()),
    ] {
        let policy = Policy::compile(&modules, EVALUATION_LIMIT).unwrap();
        assert!(policy.evaluate(&input).allowed);
        time(&format!("policy/evaluate/{name}"), calls, || {
            policy.evaluate(&input)
        });
    }

    let record = realistic_record();
    let key = SigningKey::from_seed(&[7; 32]);
    let payload = canonical_json(&record).unwrap();
    time("digest/sha256_of_record", calls, || {
        Sha256::digest(&payload)
    });
    time("evidence/canonical_json", calls, || {
        canonical_json(&record).unwrap()
    });
    time("evidence/sign_record", calls, || record.sign(&key).unwrap());

    let gateway = Rc::new(gateway());
    let (head, answer) = (request_head(), answer());
    let now = OffsetDateTime::now_utc();
    assert!(run_exchange(&gateway, &head, &body, &answer, now).is_some());
    time("exchange/allowed_chat_completion", calls, || {
        run_exchange(&gateway, &head, &body, &answer, now)
    });
}
