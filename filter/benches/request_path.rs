//! What the filter's own work costs per request, natively: parsing the OpenAI body, the
//! Rego decision, and the whole governed exchange (which includes building and signing
//! the evidence record). `make bench` runs these beside the Envoy load test, so the
//! difference between Envoy with and without the filter can be split into steps.
//!
//! Native x86-64 code is faster than the same code in Envoy's V8; the numbers rank the
//! steps, they do not predict the in-Envoy latency (`examples/wasm_steps.rs` times the same
//! steps in a WebAssembly VM). Run one group with
//! `cargo bench -p mercator-filter --bench request_path -- policy`.

// A benchmark that cannot set itself up has nothing to measure; failing loudly is right.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::hint::black_box;
use std::rc::Rc;

use criterion::{criterion_group, criterion_main, Criterion};
use mercator_filter::openai::parse_chat_request;
use mercator_filter::policy::Policy;
use time::OffsetDateTime;

use support::{
    answer, department_only, gateway, policy_input, request_head, run_exchange, shipped_bundle,
    workload, EVALUATION_LIMIT,
};

fn parsing(c: &mut Criterion) {
    let body = workload();
    c.bench_function("parse/openai_chat_request", |b| {
        b.iter(|| parse_chat_request(black_box(&body)).unwrap())
    });
}

fn policy(c: &mut Criterion) {
    let input = policy_input();
    for (name, modules) in [
        ("department", department_only()),
        ("shipped_bundle", shipped_bundle()),
    ] {
        let policy = Policy::compile(&modules, EVALUATION_LIMIT).unwrap();
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
    let (head, body, answer) = (request_head(), workload(), answer());
    let now = OffsetDateTime::now_utc();
    let run = || run_exchange(&gateway, &head, &body, &answer, now);
    assert!(
        run().is_some(),
        "the bench request must be allowed and recorded"
    );
    c.bench_function("exchange/allowed_chat_completion", |b| b.iter(run));
}

criterion_group!(benches, parsing, policy, exchange);
criterion_main!(benches);
