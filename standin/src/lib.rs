//! # The provider stand-in
//!
//! A **stand-in** for the LLM providers that Mercator Jupiter governs, not a provider. The
//! real OpenAI and Anthropic APIs cannot be reached from the machines where this project is
//! built and tested, so the integration tests, the local demo (`make run`) and the
//! benchmarks point Envoy's upstream here. It speaks each provider's wire format, streaming
//! included, so that the gateway's parsing, validation, token counting and evidence are
//! exercised as they would be against the real thing; but its answers are fixed text, its
//! token counts are estimates, and it says what it is: every response carries
//! `x-provider-standin: true`, every log line names the provider stand-in, and every
//! OpenAI answer has `system_fingerprint: "fp_provider_standin"`.
//!
//! ## Running
//!
//! ```text
//! provider-standin --listen 127.0.0.1:PORT [--expect-api-key KEY]...
//! ```
//!
//! It prints `provider stand-in listening on ADDR` on stdout once the port is bound (port 0
//! picks a free one and prints it), logs to stderr (`RUST_LOG` filters, default `info`), and
//! stops gracefully on SIGINT or SIGTERM. `--expect-api-key` (or the environment variable
//! `PROVIDER_STANDIN_EXPECT_API_KEY`) makes it refuse any call without that key, which
//! proves that the gateway swapped the client's key for the provider key.
//!
//! ## Endpoints
//!
//! - `POST /v1/chat/completions`: OpenAI chat completions. A `chat.completion` object, or
//!   with `"stream": true` unnamed `chat.completion.chunk` events (the role first, then the
//!   content a few characters at a time, then the finish reason), the usage-only chunk with
//!   empty `choices` only when `stream_options.include_usage` is true, then `data: [DONE]`.
//!   The key comes in `Authorization: Bearer`.
//! - `POST /v1/messages`: Anthropic Messages. A `message` object, or with `"stream": true`
//!   the named events `message_start` (with the input tokens), `content_block_start`,
//!   `ping`, `content_block_delta`…, `content_block_stop`, `message_delta` (with the output
//!   tokens) and `message_stop`. The key comes in `x-api-key`; the `anthropic-version`
//!   header and `max_tokens` are required.
//! - `GET /_standin/requests`: the last 1000 requests that reached the two endpoints above,
//!   oldest first, whether answered or refused: `method`, `path`, `headers` as
//!   `[name, value]` pairs, `body` as text. `DELETE /_standin/requests` forgets them.
//! - `GET /_standin/healthz`: `{"status":"ok","provider_standin":true}`.
//!
//! Refusals use the provider's error shape: OpenAI's `{"error":{"message","type","param",
//! "code"}}` (a wrong key is 401 with code `invalid_api_key`), Anthropic's
//! `{"type":"error","error":{"type","message"}}` (a wrong key is 401 `authentication_error`).
//!
//! ## What it answers
//!
//! The reply is `Stand-in reply to: ` followed by the first 80 characters of the last user
//! message. `n` gives that many identical choices. When the request offers tools and asks
//! for one (OpenAI `tool_choice` `"required"` or a named function, Anthropic `tool_choice`
//! `any` or `tool`, or a last user message containing "use a tool"), the answer calls the
//! named or first tool with arguments that fit its schema's top-level property types. A
//! `max_tokens` (or `max_completion_tokens`) below the reply's estimate cuts it short with
//! finish reason `length` / stop reason `max_tokens`. Tokens are estimated as
//! `ceil(characters / 4)`, plus 3 per prompt message (see [`reply`]); OpenAI's
//! `total_tokens` is always the sum of the other two.
//!
//! ## Scenarios
//!
//! The request header `x-standin-scenario` makes one answer misbehave (see
//! [`scenario::Scenario`]); an unknown name is a 400 in the provider's shape.
//!
//! - `malformed`: status 200 and `application/json`, but the body is the first half of a
//!   valid answer. A streaming request gets whole SSE events whose data is cut in half.
//! - `missing-usage`: a valid answer without `usage` (streams: no usage chunk even when
//!   asked; no `usage` in `message_start` or `message_delta`).
//! - `negative-usage`: a valid answer whose token counts are negated.
//! - `error-500`: status 500 with OpenAI's `server_error` or Anthropic's `api_error`.
//! - `slow`: waits two seconds, then answers normally.
//! - `cut-stream`: sends the first half of the stream's events and half of the next one,
//!   then ends the body cleanly, so that a proxy sees an ordinary end of stream with an
//!   incomplete event and without the finish, usage, `[DONE]`, `message_delta` or
//!   `message_stop` events. A non-streaming request with it is a 400.
//! - `keep-alive`: the stream with a `: keep-alive` comment before its first event and an
//!   `event: ping` block without any `data` line in its middle.
//! - `split-events`: the stream written 7 bytes at a time, so that events, lines, JSON
//!   strings and UTF-8 characters fall across writes.
//! - `stream-error`: the first half of the stream's events, then the provider's own error
//!   event (OpenAI: a data event holding an `error` object with type `server_error`;
//!   Anthropic: `event: error` with an `overloaded_error`), then the end of the body.
//!
//! The four stream scenarios answer a non-streaming request with a 400.
//!
//! A request is handled in this order: recorded in the log; scenario name checked; key
//! checked; (Anthropic) `anthropic-version` checked; `slow` waits and `error-500` fails;
//! only then is the body read, so these two scenarios answer whatever the body is.
//!
//! ## Not imitated
//!
//! The stand-in leaves out what the gateway does not depend on: rate-limit and
//! `request-id` headers, 429 and 529 answers, `logprobs`, stop sequences, images, and the order of keys
//! in JSON objects (they come out sorted). Tool definitions are not counted as prompt
//! tokens.
//!
//! ## Testing
//!
//! ```text
//! CARGO_TARGET_DIR=/tmp/target-standin cargo test -p mercator-provider-standin
//! ```
//!
//! The tests drive [`app`] without a socket, through `tower::ServiceExt::oneshot`.

pub mod error;
pub mod reply;
pub mod request_log;
pub mod scenario;

mod anthropic;
mod openai;
mod sse;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

pub use error::{Dialect, StandinError};
pub use request_log::{RecordedRequest, RequestLog};
pub use scenario::Scenario;

/// The response header that marks every answer as coming from the stand-in.
pub const STANDIN_HEADER: &str = "x-provider-standin";

/// The largest request body the stand-in reads (Anthropic's limit for the Messages API).
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// How long the `slow` scenario waits before answering.
pub const SLOW_SCENARIO_DELAY: Duration = Duration::from_secs(2);

/// The API key that callers must present, when one is expected. Not `Debug`, so that it
/// cannot reach a log by accident.
pub struct ExpectedApiKey(String);

impl ExpectedApiKey {
    /// Wraps the key that callers must present.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key with all but its first and last four characters hidden, for logs.
    pub fn redacted(&self) -> String {
        redact_secret(&self.0)
    }

    fn matches(&self, presented: Option<&str>) -> bool {
        presented == Some(self.0.as_str())
    }
}

/// A secret shown as `sk-1…9xyz`, or `…` alone when it is too short to show any of it.
pub fn redact_secret(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < 12 {
        return "…".to_owned();
    }
    let head: String = chars.iter().take(4).collect();
    let tail: String = chars.iter().skip(chars.len() - 4).collect();
    format!("{head}…{tail}")
}

/// What the stand-in is told at start.
#[derive(Default)]
pub struct StandinConfig {
    /// The keys that provider calls may carry (one each for OpenAI and Anthropic, say);
    /// empty accepts any key or none.
    pub expected_api_keys: Vec<ExpectedApiKey>,
}

/// The state that every handler shares: the configuration, the request log, the id counter.
#[derive(Clone)]
pub struct AppState {
    shared: Arc<Shared>,
}

struct Shared {
    expected_api_keys: Vec<ExpectedApiKey>,
    requests: RequestLog,
    /// Start time in seconds, so that ids differ between runs of the stand-in.
    boot_stamp: u64,
    next_sequence: AtomicU64,
}

impl AppState {
    /// The state of a freshly started stand-in.
    pub fn new(config: StandinConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                expected_api_keys: config.expected_api_keys,
                requests: RequestLog::default(),
                boot_stamp: unix_now(),
                next_sequence: AtomicU64::new(1),
            }),
        }
    }

    /// The requests received so far, oldest first.
    pub fn recorded_requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.snapshot()
    }

    /// A fresh id such as `chatcmpl-standin67a0c1f3000001`.
    fn next_id(&self, prefix: &str) -> String {
        let sequence = self.shared.next_sequence.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}{:x}{sequence:06}", self.shared.boot_stamp)
    }
}

/// The stand-in's routes, ready to serve or to call in tests.
pub fn app(state: AppState) -> Router {
    let provider_routes = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/messages", post(messages))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_request,
        ));

    let control_routes = Router::new()
        .route(
            "/_standin/requests",
            get(list_requests).delete(clear_requests),
        )
        .route("/_standin/healthz", get(healthz));

    control_routes
        .merge(provider_routes)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::map_response(mark_as_standin))
        .with_state(state)
}

async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    openai::answer(&state, &headers, &body)
        .await
        .unwrap_or_else(|error| error.into_response(Dialect::OpenAi))
}

async fn messages(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    anthropic::answer(&state, &headers, &body)
        .await
        .unwrap_or_else(|error| error.into_response(Dialect::Anthropic))
}

async fn not_found(method: Method, uri: Uri) -> Response {
    let dialect = Dialect::for_path(uri.path());
    StandinError::NotFound {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
    .into_response(dialect)
}

async fn list_requests(State(state): State<AppState>) -> Json<Vec<RecordedRequest>> {
    Json(state.recorded_requests())
}

async fn clear_requests(State(state): State<AppState>) -> StatusCode {
    state.shared.requests.clear();
    StatusCode::NO_CONTENT
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok", "provider_standin": true }))
}

/// Records every request to a provider endpoint, whole, before anything can refuse it.
async fn record_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return StandinError::UnreadableBody.into_response(Dialect::for_path(parts.uri.path()));
    };

    state
        .shared
        .requests
        .push(RecordedRequest::new(&parts, &body));
    next.run(Request::from_parts(parts, Body::from(body))).await
}

async fn mark_as_standin(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(STANDIN_HEADER, HeaderValue::from_static("true"));
    response
}

/// The first steps of every provider call: the scenario it asks for, then its key.
fn admit(
    state: &AppState,
    headers: &HeaderMap,
    presented_key: Option<&str>,
) -> Result<Scenario, StandinError> {
    let scenario = Scenario::from_headers(headers)?;
    let expected = &state.shared.expected_api_keys;
    if !expected.is_empty() && !expected.iter().any(|key| key.matches(presented_key)) {
        return Err(StandinError::InvalidApiKey);
    }
    Ok(scenario)
}

/// The scenarios that act before any answer is written: a delay or a provider failure.
async fn play_scenario_before_answer(scenario: Scenario) -> Result<(), StandinError> {
    match scenario {
        Scenario::Slow => {
            tokio::time::sleep(SLOW_SCENARIO_DELAY).await;
            Ok(())
        }
        Scenario::Error500 => Err(StandinError::SimulatedServerError),
        _ => Ok(()),
    }
}

/// Status 200, `application/json`, and the first half of a valid answer: not JSON.
fn malformed_json_response(valid_answer: &Value) -> Response {
    let text = valid_answer.to_string();
    let half: String = text.chars().take(text.chars().count() / 2).collect();
    ([(header::CONTENT_TYPE, "application/json")], half).into_response()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_to_their_ends() {
        assert_eq!(redact_secret("sk-1234567890abcdef9xyz"), "sk-1…9xyz");
        assert_eq!(redact_secret("short"), "…");
    }
}
