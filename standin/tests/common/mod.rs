//! What the stand-in's tests share: building requests, sending them, reading SSE.

// Helpers outside `#[test]` functions are not covered by clippy.toml's test allowances.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use mercator_provider_standin::{app, AppState, ExpectedApiKey, StandinConfig};
use serde_json::Value;
use tower::ServiceExt;

pub const PROVIDER_KEY: &str = "sk-provider-key-for-tests-0001";

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "body is not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap()
    }

    /// The SSE events of the body as (event name, data), checking the framing on the way.
    pub fn events(&self) -> Vec<(Option<String>, String)> {
        let text = self.text();
        assert!(
            text.ends_with("\n\n"),
            "stream does not end with a whole event: {text:?}"
        );
        text.trim_end_matches("\n\n")
            .split("\n\n")
            .map(|frame| {
                let mut name = None;
                let mut data = None;
                for line in frame.lines() {
                    if let Some(value) = line.strip_prefix("event: ") {
                        name = Some(value.to_owned());
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data = Some(value.to_owned());
                    } else {
                        panic!("unexpected SSE line {line:?}");
                    }
                }
                (name, data.expect("every event has data"))
            })
            .collect()
    }
}

pub fn standin() -> (Router, AppState) {
    let state = AppState::new(StandinConfig::default());
    (app(state.clone()), state)
}

pub fn standin_expecting_key() -> Router {
    app(AppState::new(StandinConfig {
        expected_api_keys: vec![ExpectedApiKey::new(PROVIDER_KEY)],
    }))
}

pub async fn send(router: &Router, request: Request<Body>) -> Answer {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Answer {
        status,
        headers,
        body,
    }
}

pub fn openai_request(body: &Value, extra_headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {PROVIDER_KEY}"));
    for (name, value) in extra_headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::from(body.to_string())).unwrap()
}

pub fn anthropic_request(body: &Value, extra_headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::post("/v1/messages")
        .header("content-type", "application/json")
        .header("x-api-key", PROVIDER_KEY)
        .header("anthropic-version", "2023-06-01");
    for (name, value) in extra_headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::from(body.to_string())).unwrap()
}

pub fn tokens(text: &str) -> i64 {
    (text.chars().count() as i64 + 3) / 4
}
