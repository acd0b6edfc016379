//! `POST /v1/messages` answers as Anthropic does, in every scenario.

// Helpers outside `#[test]` functions are not covered by clippy.toml's test allowances.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use axum::http::StatusCode;
use common::{anthropic_request, send, standin, standin_expecting_key, tokens};
use serde_json::{json, Value};

const EXPECTED_ORDER: [&str; 4] = [
    "message_start",
    "content_block_start",
    "ping",
    "content_block_delta",
];

fn simple_request() -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "What is the capital of France?"}]
    })
}

fn streaming_request() -> Value {
    let mut request = simple_request();
    request["stream"] = json!(true);
    request
}

/// The events as (name, parsed data), checking that each name matches its data's type.
fn events(answer: &common::Answer) -> Vec<(String, Value)> {
    answer
        .events()
        .into_iter()
        .map(|(name, data)| {
            let name = name.expect("Anthropic events are named");
            let data: Value = serde_json::from_str(&data).unwrap();
            assert_eq!(data["type"], name.as_str());
            (name, data)
        })
        .collect()
}

#[tokio::test]
async fn non_streaming_answer_is_a_message_with_usage() {
    let (router, _) = standin();

    let answer = send(&router, anthropic_request(&simple_request(), &[])).await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["x-provider-standin"], "true");
    let body = answer.json();
    assert!(body["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], "claude-sonnet-4-5");
    let reply = "Stand-in reply to: What is the capital of France?";
    assert_eq!(body["content"], json!([{"type": "text", "text": reply}]));
    assert_eq!(body["stop_reason"], "end_turn");
    assert!(body["stop_sequence"].is_null());
    assert_eq!(
        body["usage"]["input_tokens"],
        tokens("Be brief.") + 3 + tokens("What is the capital of France?") + 3
    );
    assert_eq!(body["usage"]["output_tokens"], tokens(reply));
}

#[tokio::test]
async fn content_blocks_and_system_blocks_are_read_as_text() {
    let (router, _) = standin();
    let request = json!({
        "model": "claude",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "sys"}],
        "messages": [{"role": "user", "content": [
            {"type": "image", "source": {
                "type": "base64", "media_type": "image/png", "data": "AAAA"
            }},
            {"type": "text", "text": "Describe this"}
        ]}]
    });

    let body = send(&router, anthropic_request(&request, &[])).await.json();

    assert_eq!(
        body["content"][0]["text"],
        "Stand-in reply to: Describe this"
    );
    assert_eq!(
        body["usage"]["input_tokens"],
        tokens("sys") + 3 + tokens("Describe this") + 3
    );
}

#[tokio::test]
async fn asking_to_use_a_tool_answers_with_a_tool_use_block() {
    let (router, _) = standin();
    let request = json!({
        "model": "claude",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Use a tool to find the weather"}],
        "tools": [{"name": "get_weather", "input_schema": {
            "type": "object", "properties": {"city": {"type": "string"}}
        }}]
    });

    let body = send(&router, anthropic_request(&request, &[])).await.json();

    assert_eq!(body["stop_reason"], "tool_use");
    let block = &body["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(block["name"], "get_weather");
    assert_eq!(block["input"], json!({"city": "stand-in"}));
}

#[tokio::test]
async fn tool_choice_naming_a_tool_calls_that_tool() {
    let (router, _) = standin();
    let request = json!({
        "model": "claude",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hello"}],
        "tools": [{"name": "first", "input_schema": {"type": "object"}},
                  {"name": "second", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "second"}
    });

    let body = send(&router, anthropic_request(&request, &[])).await.json();

    assert_eq!(body["content"][0]["name"], "second");
}

#[tokio::test]
async fn max_tokens_below_the_reply_stops_with_max_tokens() {
    let (router, _) = standin();
    let mut request = simple_request();
    request["max_tokens"] = json!(2);

    let body = send(&router, anthropic_request(&request, &[])).await.json();

    assert_eq!(body["stop_reason"], "max_tokens");
    assert_eq!(body["content"][0]["text"], "Stand-in");
    assert_eq!(body["usage"]["output_tokens"], 2);
}

#[tokio::test]
async fn streaming_sends_the_anthropic_event_sequence_with_usage_at_both_ends() {
    let (router, _) = standin();

    let answer = send(&router, anthropic_request(&streaming_request(), &[])).await;

    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = events(&answer);
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names[..4], EXPECTED_ORDER);
    let tail = &names[names.len() - 3..];
    assert_eq!(
        tail,
        ["content_block_stop", "message_delta", "message_stop"]
    );
    assert!(names[3..names.len() - 3]
        .iter()
        .all(|name| *name == "content_block_delta"));

    let start = &events[0].1["message"];
    assert!(start["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(start["content"], json!([]));
    assert!(start["stop_reason"].is_null());
    assert_eq!(
        start["usage"]["input_tokens"],
        tokens("Be brief.") + 3 + tokens("What is the capital of France?") + 3
    );
    assert_eq!(
        events[1].1["content_block"],
        json!({"type": "text", "text": ""})
    );

    let text: String = events
        .iter()
        .filter(|(name, _)| name == "content_block_delta")
        .map(|(_, data)| {
            assert_eq!(data["index"], 0);
            assert_eq!(data["delta"]["type"], "text_delta");
            data["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    let reply = "Stand-in reply to: What is the capital of France?";
    assert_eq!(text, reply);

    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], tokens(reply));
}

#[tokio::test]
async fn streamed_tool_use_input_joins_into_json() {
    let (router, _) = standin();
    let request = json!({
        "model": "claude",
        "max_tokens": 100,
        "stream": true,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "lookup", "input_schema": {
            "type": "object", "properties": {"id": {"type": "integer"}}
        }}],
        "tool_choice": {"type": "any"}
    });

    let events = events(&send(&router, anthropic_request(&request, &[])).await);

    assert_eq!(events[1].1["content_block"]["type"], "tool_use");
    assert_eq!(events[1].1["content_block"]["name"], "lookup");
    let input: String = events
        .iter()
        .filter(|(name, _)| name == "content_block_delta")
        .map(|(_, data)| data["delta"]["partial_json"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&input).unwrap(),
        json!({"id": 1})
    );
    assert_eq!(
        events[events.len() - 2].1["delta"]["stop_reason"],
        "tool_use"
    );
}

#[tokio::test]
async fn wrong_or_missing_key_is_refused_with_anthropics_401() {
    let router = standin_expecting_key();

    for key in [Some("sk-ant-client-key"), None] {
        let mut request = anthropic_request(&simple_request(), &[]);
        request.headers_mut().remove("x-api-key");
        if let Some(key) = key {
            request
                .headers_mut()
                .insert("x-api-key", key.parse().unwrap());
        }

        let answer = send(&router, request).await;

        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        let body = answer.json();
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "authentication_error");
        assert!(body["error"]["message"].is_string());
    }
}

#[tokio::test]
async fn the_expected_key_is_accepted() {
    let router = standin_expecting_key();

    let answer = send(&router, anthropic_request(&simple_request(), &[])).await;

    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn a_request_without_anthropic_version_is_a_400() {
    let (router, _) = standin();
    let mut request = anthropic_request(&simple_request(), &[]);
    request.headers_mut().remove("anthropic-version");

    let answer = send(&router, request).await;

    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let body = answer.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("anthropic-version"));
}

#[tokio::test]
async fn a_request_without_max_tokens_is_a_400() {
    let (router, _) = standin();
    let mut request = simple_request();
    request.as_object_mut().unwrap().remove("max_tokens");

    let answer = send(&router, anthropic_request(&request, &[])).await;

    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let body = answer.json();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_tokens"));
}

#[tokio::test]
async fn malformed_scenario_answers_200_with_a_body_that_is_not_json() {
    let (router, _) = standin();

    let answer = send(
        &router,
        anthropic_request(&simple_request(), &[("x-standin-scenario", "malformed")]),
    )
    .await;

    assert_eq!(answer.status, StatusCode::OK);
    assert!(serde_json::from_slice::<Value>(&answer.body).is_err());
}

#[tokio::test]
async fn missing_usage_scenario_answers_without_usage_streamed_or_not() {
    let (router, _) = standin();
    let scenario = [("x-standin-scenario", "missing-usage")];

    let body = send(&router, anthropic_request(&simple_request(), &scenario))
        .await
        .json();
    assert_eq!(body["type"], "message");
    assert!(body.get("usage").is_none());

    let events = events(&send(&router, anthropic_request(&streaming_request(), &scenario)).await);
    assert_eq!(events.last().unwrap().0, "message_stop");
    assert!(events[0].1["message"].get("usage").is_none());
    assert!(events[events.len() - 2].1.get("usage").is_none());
}

#[tokio::test]
async fn negative_usage_scenario_reports_negative_counts() {
    let (router, _) = standin();
    let scenario = [("x-standin-scenario", "negative-usage")];

    let body = send(&router, anthropic_request(&simple_request(), &scenario))
        .await
        .json();
    assert!(body["usage"]["input_tokens"].as_i64().unwrap() < 0);
    assert!(body["usage"]["output_tokens"].as_i64().unwrap() < 0);

    let events = events(&send(&router, anthropic_request(&streaming_request(), &scenario)).await);
    assert!(
        events[0].1["message"]["usage"]["input_tokens"]
            .as_i64()
            .unwrap()
            < 0
    );
    assert!(
        events[events.len() - 2].1["usage"]["output_tokens"]
            .as_i64()
            .unwrap()
            < 0
    );
}

#[tokio::test]
async fn error_500_scenario_answers_an_api_error_in_anthropics_shape() {
    let (router, _) = standin();

    let answer = send(
        &router,
        anthropic_request(&simple_request(), &[("x-standin-scenario", "error-500")]),
    )
    .await;

    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    let body = answer.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "api_error");
}

#[tokio::test]
async fn cut_stream_scenario_stops_mid_event_before_message_delta() {
    let (router, _) = standin();

    let answer = send(
        &router,
        anthropic_request(
            &streaming_request(),
            &[("x-standin-scenario", "cut-stream")],
        ),
    )
    .await;

    assert_eq!(answer.status, StatusCode::OK);
    let text = answer.text();
    assert!(text.starts_with("event: message_start\n"));
    assert!(!text.ends_with("\n\n"), "the last event is cut: {text:?}");
    assert!(!text.contains("message_delta"));
    assert!(!text.contains("message_stop"));
}

#[tokio::test]
async fn unknown_scenario_is_a_400_in_anthropics_shape() {
    let (router, _) = standin();

    let answer = send(
        &router,
        anthropic_request(&simple_request(), &[("x-standin-scenario", "meteor")]),
    )
    .await;

    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let body = answer.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn stream_error_scenario_ends_with_an_anthropic_error_event() {
    let (router, _) = standin();

    let answer = send(
        &router,
        anthropic_request(
            &streaming_request(),
            &[("x-standin-scenario", "stream-error")],
        ),
    )
    .await;

    let events = answer.events();
    let (name, data) = events.last().unwrap();
    assert_eq!(name.as_deref(), Some("error"));
    let error: Value = serde_json::from_str(data).unwrap();
    assert_eq!(error["error"]["type"], "overloaded_error");
    assert_eq!(events[0].0.as_deref(), Some("message_start"));
    assert!(!answer.text().contains("message_stop"));
}

#[tokio::test]
async fn keep_alive_scenario_puts_a_ping_without_data_in_an_anthropic_stream() {
    let (router, _) = standin();

    let answer = send(
        &router,
        anthropic_request(
            &streaming_request(),
            &[("x-standin-scenario", "keep-alive")],
        ),
    )
    .await;

    let text = answer.text();
    assert!(text.starts_with(": keep-alive\n\nevent: message_start\n"));
    assert!(text.contains("\n\nevent: ping\n\nevent: "));
    assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
}
