//! The Mercator Jupiter filter: governance for every LLM call, inside Envoy.
//!
//! Built for `wasm32-wasip1` and loaded by Envoy's V8 runtime through the proxy-wasm ABI,
//! it authenticates the caller by API key or client certificate, validates the OpenAI or
//! Anthropic request and checks it against the configured [`limits`], asks the Rego
//! policies (compiled once, default deny), forwards what they allow with the provider's
//! key in place of the caller's, reads the provider's answer (whole, or as a stream it
//! passes on event by event) for token usage, cost and [`forbidden`] content, and signs
//! one evidence record per request, which it queues for the evidence sink.
//!
//! The logic lives in modules that never touch the host ([`exchange`] drives one request,
//! [`config`] builds the shared [`config::Gateway`], [`delivery`] decides what the queue of
//! signed records keeps and sends, [`sse`] and [`stream`] read streamed
//! answers); only `host` talks to Envoy, so `cargo test -p mercator-filter` runs
//! everything natively, and `tests/properties.rs` throws arbitrary input at every parser
//! (`make fuzz` for a long run). Build the `.wasm` with `make filter` (or
//! `cargo build --release --target wasm32-wasip1 -p mercator-filter`).
//!
//! The filter must never panic: one panic kills the VM and, with `fail_open: false`,
//! every request after it fails until Envoy reloads the VM. Clippy denies `unwrap`,
//! `expect`, `panic` and indexing for that reason, and `host` avoids the SDK helpers
//! that unwrap.

pub mod anthropic;
pub mod auth;
pub mod config;
pub mod delivery;
pub mod exchange;
pub mod forbidden;
pub mod identity;
pub mod limits;
pub mod openai;
pub mod policy;
pub mod reply;
pub mod sse;
pub mod stream;

// The proxy-wasm entry points are `extern "C"` and `#[no_mangle]`, which count as unsafe.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod host;

/// Response header that carries the evidence id to the caller, so anyone holding a
/// response can fetch and verify its record.
pub const EVIDENCE_ID_HEADER: &str = "x-mercator-evidence-id";
