//! The control endpoints: the request log that tests read, and the health check.

// Helpers outside `#[test]` functions are not covered by clippy.toml's test allowances.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{anthropic_request, openai_request, send, standin, standin_expecting_key};
use serde_json::{json, Value};

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn request_log_records_method_path_headers_and_body_newest_last() {
    let (router, _) = standin();
    let openai_body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "one"}]});
    let anthropic_body = json!({
        "model": "claude",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "two"}]
    });
    send(&router, openai_request(&openai_body, &[])).await;
    send(&router, anthropic_request(&anthropic_body, &[])).await;

    let answer = send(&router, get("/_standin/requests")).await;

    assert_eq!(answer.status, StatusCode::OK);
    let log = answer.json();
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 2, "the control endpoints are not recorded");
    assert_eq!(log[0]["method"], "POST");
    assert_eq!(log[0]["path"], "/v1/chat/completions");
    assert_eq!(log[1]["path"], "/v1/messages");
    assert_eq!(
        serde_json::from_str::<Value>(log[0]["body"].as_str().unwrap()).unwrap(),
        openai_body
    );
    assert_eq!(
        serde_json::from_str::<Value>(log[1]["body"].as_str().unwrap()).unwrap(),
        anthropic_body
    );

    let headers = log[0]["headers"].as_array().unwrap();
    assert!(headers.contains(&json!([
        "authorization",
        format!("Bearer {}", common::PROVIDER_KEY)
    ])));
    assert!(headers.contains(&json!(["content-type", "application/json"])));
    let headers = log[1]["headers"].as_array().unwrap();
    assert!(headers.contains(&json!(["x-api-key", common::PROVIDER_KEY])));
}

#[tokio::test]
async fn refused_requests_are_recorded_too() {
    let router = standin_expecting_key();
    let mut request = openai_request(&json!({"model": "m", "messages": []}), &[]);
    request
        .headers_mut()
        .insert("authorization", "Bearer sk-client-key".parse().unwrap());
    assert_eq!(
        send(&router, request).await.status,
        StatusCode::UNAUTHORIZED
    );

    let log = send(&router, get("/_standin/requests")).await.json();

    let headers = log[0]["headers"].as_array().unwrap();
    assert!(headers.contains(&json!(["authorization", "Bearer sk-client-key"])));
}

#[tokio::test]
async fn deleting_the_request_log_empties_it() {
    let (router, state) = standin();
    send(
        &router,
        openai_request(&json!({"model": "m", "messages": []}), &[]),
    )
    .await;
    assert_eq!(state.recorded_requests().len(), 1);

    let answer = send(
        &router,
        Request::delete("/_standin/requests")
            .body(Body::empty())
            .unwrap(),
    )
    .await;

    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(
        send(&router, get("/_standin/requests")).await.json(),
        json!([])
    );
}

#[tokio::test]
async fn health_check_names_the_stand_in() {
    let (router, _) = standin();

    let answer = send(&router, get("/_standin/healthz")).await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["x-provider-standin"], "true");
    assert_eq!(answer.json()["provider_standin"], true);
}

#[tokio::test]
async fn unknown_provider_paths_are_404_in_the_providers_shape() {
    let (router, _) = standin();

    let openai = send(&router, get("/v1/models")).await;
    assert_eq!(openai.status, StatusCode::NOT_FOUND);
    assert_eq!(openai.json()["error"]["code"], "unknown_url");

    let anthropic = send(&router, get("/v1/messages/batches")).await;
    assert_eq!(anthropic.status, StatusCode::NOT_FOUND);
    assert_eq!(anthropic.json()["error"]["type"], "not_found_error");
}
