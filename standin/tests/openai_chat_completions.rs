//! `POST /v1/chat/completions` answers as OpenAI does, in every scenario.

// Helpers outside `#[test]` functions are not covered by clippy.toml's test allowances.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{openai_request, send, standin, standin_expecting_key, tokens};
use serde_json::{json, Value};

fn simple_request() -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is the capital of France?"}
        ]
    })
}

fn chunks(answer: &common::Answer) -> (Vec<Value>, bool) {
    let events = answer.events();
    let done = events
        .last()
        .map(|(_, data)| data == "[DONE]")
        .unwrap_or(false);
    let chunks = events
        .iter()
        .filter(|(_, data)| data != "[DONE]")
        .map(|(name, data)| {
            assert!(name.is_none(), "OpenAI events are unnamed");
            serde_json::from_str(data).unwrap()
        })
        .collect();
    (chunks, done)
}

#[tokio::test]
async fn non_streaming_answer_is_a_chat_completion_with_consistent_usage() {
    let (router, _) = standin();

    let answer = send(&router, openai_request(&simple_request(), &[])).await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["x-provider-standin"], "true");
    assert!(answer.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let body = answer.json();
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(body["model"], "gpt-4o-mini");
    assert!(body["system_fingerprint"].is_string());

    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 1);
    assert_eq!(choices[0]["index"], 0);
    assert_eq!(choices[0]["message"]["role"], "assistant");
    let reply = "Stand-in reply to: What is the capital of France?";
    assert_eq!(choices[0]["message"]["content"], reply);
    assert_eq!(choices[0]["finish_reason"], "stop");
    assert!(choices[0]["logprobs"].is_null());

    let usage = &body["usage"];
    let prompt = tokens("Be brief.") + 3 + tokens("What is the capital of France?") + 3;
    assert_eq!(usage["prompt_tokens"], prompt);
    assert_eq!(usage["completion_tokens"], tokens(reply));
    assert_eq!(
        usage["total_tokens"].as_i64().unwrap(),
        usage["prompt_tokens"].as_i64().unwrap() + usage["completion_tokens"].as_i64().unwrap()
    );
}

#[tokio::test]
async fn n_gives_that_many_indexed_choices_and_counts_every_one() {
    let (router, _) = standin();
    let mut request = simple_request();
    request["n"] = json!(3);

    let body = send(&router, openai_request(&request, &[])).await.json();

    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (index, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], index);
    }
    let reply = choices[0]["message"]["content"].as_str().unwrap();
    assert_eq!(body["usage"]["completion_tokens"], 3 * tokens(reply));
}

#[tokio::test]
async fn content_parts_are_read_as_text_and_images_are_ignored() {
    let (router, _) = standin();
    let request = json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Describe this"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
        ]}]
    });

    let body = send(&router, openai_request(&request, &[])).await.json();

    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Stand-in reply to: Describe this"
    );
    assert_eq!(body["usage"]["prompt_tokens"], tokens("Describe this") + 3);
}

#[tokio::test]
async fn reply_echoes_only_the_first_eighty_characters_of_the_last_user_message() {
    let (router, _) = standin();
    let long = "a".repeat(300);
    let request = json!({"model": "m", "messages": [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": long}
    ]});

    let body = send(&router, openai_request(&request, &[])).await.json();

    let expected = format!("Stand-in reply to: {}", "a".repeat(80));
    assert_eq!(body["choices"][0]["message"]["content"], expected);
}

#[tokio::test]
async fn asking_to_use_a_tool_answers_with_a_tool_call() {
    let (router, _) = standin();
    let request = json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "Please use a tool to get the weather"}],
        "tools": [{"type": "function", "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}
        }}]
    });

    let body = send(&router, openai_request(&request, &[])).await.json();

    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    let call = &choice["message"]["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"city": "stand-in"}));
}

#[tokio::test]
async fn tool_choice_naming_a_function_calls_that_function() {
    let (router, _) = standin();
    let request = json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "hello"}],
        "tools": [
            {"type": "function", "function": {"name": "first"}},
            {"type": "function", "function": {"name": "second"}}
        ],
        "tool_choice": {"type": "function", "function": {"name": "second"}}
    });

    let body = send(&router, openai_request(&request, &[])).await.json();

    assert_eq!(
        body["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "second"
    );
}

#[tokio::test]
async fn tools_without_being_asked_for_get_a_text_answer() {
    let (router, _) = standin();
    let request = json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "hello"}],
        "tools": [{"type": "function", "function": {"name": "first"}}]
    });

    let body = send(&router, openai_request(&request, &[])).await.json();

    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["choices"][0]["message"].get("tool_calls").is_none());
}

#[tokio::test]
async fn max_tokens_below_the_reply_cuts_it_with_finish_reason_length() {
    let (router, _) = standin();
    let mut request = simple_request();
    request["max_completion_tokens"] = json!(2);

    let body = send(&router, openai_request(&request, &[])).await.json();

    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["choices"][0]["message"]["content"], "Stand-in");
    assert_eq!(body["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn streaming_sends_role_then_content_then_finish_then_done_without_usage() {
    let (router, _) = standin();
    let mut request = simple_request();
    request["stream"] = json!(true);

    let answer = send(&router, openai_request(&request, &[])).await;

    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let (chunks, done) = chunks(&answer);
    assert!(done, "the stream ends with data: [DONE]");
    assert!(chunks.len() > 3, "the content comes in several deltas");
    let id = &chunks[0]["id"];
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(&chunk["id"], id);
        assert_eq!(chunk["model"], "gpt-4o-mini");
        assert!(
            chunk.get("usage").is_none(),
            "no usage field without include_usage"
        );
        assert_eq!(chunk["choices"].as_array().unwrap().len(), 1);
    }

    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["choices"][0]["delta"], json!({}));
    let middle = &chunks[1..chunks.len() - 1];
    assert!(middle
        .iter()
        .all(|chunk| chunk["choices"][0]["finish_reason"].is_null()));
    let text: String = middle
        .iter()
        .map(|chunk| chunk["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Stand-in reply to: What is the capital of France?");
}

#[tokio::test]
async fn streaming_with_include_usage_ends_with_a_usage_only_chunk_before_done() {
    let (router, _) = standin();
    let mut request = simple_request();
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});

    let answer = send(&router, openai_request(&request, &[])).await;

    let (chunks, done) = chunks(&answer);
    assert!(done);
    let (usage_chunk, others) = chunks.split_last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    let usage = &usage_chunk["usage"];
    assert_eq!(
        usage["total_tokens"].as_i64().unwrap(),
        usage["prompt_tokens"].as_i64().unwrap() + usage["completion_tokens"].as_i64().unwrap()
    );
    let reply = "Stand-in reply to: What is the capital of France?";
    assert_eq!(usage["completion_tokens"], tokens(reply));
    assert!(others
        .iter()
        .all(|chunk| chunk["usage"].is_null() && chunk.get("usage").is_some()));
}

#[tokio::test]
async fn streamed_tool_call_arguments_join_into_json() {
    let (router, _) = standin();
    let request = json!({
        "model": "gpt-4o",
        "stream": true,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {
            "type": "object", "properties": {"id": {"type": "integer"}, "q": {"type": "string"}}
        }}}],
        "tool_choice": "required"
    });

    let (chunks, done) = chunks(&send(&router, openai_request(&request, &[])).await);

    assert!(done);
    let first = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(first["function"]["name"], "lookup");
    assert!(first["id"].as_str().unwrap().starts_with("call_"));
    let arguments: String = chunks
        .iter()
        .filter_map(|chunk| {
            chunk["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
        })
        .collect();
    let arguments: Value = serde_json::from_str(&arguments).unwrap();
    assert_eq!(arguments, json!({"id": 1, "q": "stand-in"}));
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[tokio::test]
async fn streaming_with_n_sends_each_choice_through_to_its_finish() {
    let (router, _) = standin();
    let mut request = simple_request();
    request["stream"] = json!(true);
    request["n"] = json!(2);

    let (chunks, _) = chunks(&send(&router, openai_request(&request, &[])).await);

    for index in 0..2 {
        let finishes = chunks
            .iter()
            .filter(|chunk| chunk["choices"][0]["index"] == index)
            .filter(|chunk| chunk["choices"][0]["finish_reason"] == "stop")
            .count();
        assert_eq!(finishes, 1);
    }
}

#[tokio::test]
async fn wrong_or_missing_key_is_refused_with_openais_401() {
    let router = standin_expecting_key();

    for authorization in [Some("Bearer sk-client-key"), None] {
        let mut request = openai_request(&simple_request(), &[]);
        request.headers_mut().remove("authorization");
        if let Some(value) = authorization {
            request
                .headers_mut()
                .insert("authorization", value.parse().unwrap());
        }

        let answer = send(&router, request).await;

        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.headers["x-provider-standin"], "true");
        let error = &answer.json()["error"];
        assert_eq!(error["code"], "invalid_api_key");
        assert_eq!(error["type"], "invalid_request_error");
        assert!(error["message"].is_string());
        assert!(error.get("param").is_some());
    }
}

#[tokio::test]
async fn the_expected_key_is_accepted() {
    let router = standin_expecting_key();

    let answer = send(&router, openai_request(&simple_request(), &[])).await;

    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn a_body_that_is_not_a_chat_request_is_a_400_in_openais_shape() {
    let (router, _) = standin();

    for body in [
        json!("not an object"),
        json!({"model": "m"}),
        json!({"model": "m", "messages": []}),
    ] {
        let answer = send(&router, openai_request(&body, &[])).await;

        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.json()["error"]["type"], "invalid_request_error");
    }
}

#[tokio::test]
async fn malformed_scenario_answers_200_with_a_body_that_is_not_json() {
    let (router, _) = standin();

    let answer = send(
        &router,
        openai_request(&simple_request(), &[("x-standin-scenario", "malformed")]),
    )
    .await;

    assert_eq!(answer.status, StatusCode::OK);
    assert!(serde_json::from_slice::<Value>(&answer.body).is_err());
}

#[tokio::test]
async fn malformed_scenario_streams_events_whose_data_is_not_json() {
    let (router, _) = standin();
    let mut request = simple_request();
    request["stream"] = json!(true);

    let answer = send(
        &router,
        openai_request(&request, &[("x-standin-scenario", "malformed")]),
    )
    .await;

    let events = answer.events();
    assert_eq!(events.last().unwrap().1, "[DONE]");
    for (_, data) in &events[..events.len() - 1] {
        assert!(serde_json::from_str::<Value>(data).is_err());
    }
}

#[tokio::test]
async fn missing_usage_scenario_answers_without_usage() {
    let (router, _) = standin();

    let answer = send(
        &router,
        openai_request(
            &simple_request(),
            &[("x-standin-scenario", "missing-usage")],
        ),
    )
    .await;

    assert_eq!(answer.status, StatusCode::OK);
    let body = answer.json();
    assert_eq!(body["object"], "chat.completion");
    assert!(body.get("usage").is_none());
}

#[tokio::test]
async fn missing_usage_scenario_drops_the_usage_chunk_even_when_asked() {
    let (router, _) = standin();
    let mut request = simple_request();
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});

    let answer = send(
        &router,
        openai_request(&request, &[("x-standin-scenario", "missing-usage")]),
    )
    .await;

    let (chunks, done) = chunks(&answer);
    assert!(done);
    assert!(chunks.iter().all(|chunk| chunk["usage"].is_null()));
}

#[tokio::test]
async fn negative_usage_scenario_reports_negative_counts() {
    let (router, _) = standin();

    let body = send(
        &router,
        openai_request(
            &simple_request(),
            &[("x-standin-scenario", "negative-usage")],
        ),
    )
    .await
    .json();

    let usage = &body["usage"];
    assert!(usage["prompt_tokens"].as_i64().unwrap() < 0);
    assert!(usage["completion_tokens"].as_i64().unwrap() < 0);
    assert!(usage["total_tokens"].as_i64().unwrap() < 0);
}

#[tokio::test]
async fn error_500_scenario_answers_a_server_error_in_openais_shape() {
    let (router, _) = standin();

    let answer = send(
        &router,
        openai_request(&simple_request(), &[("x-standin-scenario", "error-500")]),
    )
    .await;

    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    let error = &answer.json()["error"];
    assert_eq!(error["type"], "server_error");
    assert!(error["message"].is_string());
}

#[tokio::test]
async fn slow_scenario_waits_two_seconds_then_answers() {
    let (router, _) = standin();
    let started = Instant::now();

    let answer = send(
        &router,
        openai_request(&simple_request(), &[("x-standin-scenario", "slow")]),
    )
    .await;

    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["object"], "chat.completion");
}

#[tokio::test]
async fn cut_stream_scenario_stops_mid_event_without_the_final_events() {
    let (router, _) = standin();
    let mut request = simple_request();
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});

    let answer = send(
        &router,
        openai_request(&request, &[("x-standin-scenario", "cut-stream")]),
    )
    .await;

    assert_eq!(answer.status, StatusCode::OK);
    let text = answer.text();
    assert!(!text.ends_with("\n\n"), "the last event is cut: {text:?}");
    assert!(!text.contains("[DONE]"));
    assert!(!text.contains("\"finish_reason\":\"stop\""));
    assert!(text.starts_with("data: {"));
}

#[tokio::test]
async fn cut_stream_scenario_needs_a_streaming_request() {
    let (router, _) = standin();

    let answer = send(
        &router,
        openai_request(&simple_request(), &[("x-standin-scenario", "cut-stream")]),
    )
    .await;

    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json()["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn unknown_scenario_is_a_400_in_openais_shape() {
    let (router, _) = standin();

    let answer = send(
        &router,
        openai_request(&simple_request(), &[("x-standin-scenario", "meteor")]),
    )
    .await;

    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let error = &answer.json()["error"];
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["code"], "unknown_standin_scenario");
    assert!(error["message"].as_str().unwrap().contains("meteor"));
}

fn streaming_with_usage() -> Value {
    let mut request = simple_request();
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    request
}

#[tokio::test]
async fn keep_alive_scenario_adds_a_comment_and_an_event_without_data() {
    let (router, _) = standin();
    let plain = send(&router, openai_request(&streaming_with_usage(), &[])).await;

    let answer = send(
        &router,
        openai_request(
            &streaming_with_usage(),
            &[("x-standin-scenario", "keep-alive")],
        ),
    )
    .await;

    let text = answer.text();
    assert!(text.starts_with(": keep-alive\n\ndata: {"));
    assert!(text.contains("\n\nevent: ping\n\ndata: {"));
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(
        text.matches("data: ").count(),
        plain.text().matches("data: ").count()
    );
}

#[tokio::test]
async fn split_events_scenario_sends_the_same_stream() {
    let (router, _) = standin();

    let answer = send(
        &router,
        openai_request(
            &streaming_with_usage(),
            &[("x-standin-scenario", "split-events")],
        ),
    )
    .await;

    let events = answer.events();
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let usage: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
    assert!(usage["usage"]["total_tokens"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn stream_error_scenario_ends_with_the_providers_error_event() {
    let (router, _) = standin();

    let answer = send(
        &router,
        openai_request(
            &streaming_with_usage(),
            &[("x-standin-scenario", "stream-error")],
        ),
    )
    .await;

    let events = answer.events();
    let last: Value = serde_json::from_str(&events.last().unwrap().1).unwrap();
    assert_eq!(last["error"]["type"], "server_error");
    assert!(!answer.text().contains("[DONE]"));
    assert!(!answer.text().contains("\"finish_reason\":\"stop\""));
}

#[tokio::test]
async fn stream_scenarios_need_a_streaming_request() {
    let (router, _) = standin();
    for scenario in ["keep-alive", "split-events", "stream-error"] {
        let answer = send(
            &router,
            openai_request(&simple_request(), &[("x-standin-scenario", scenario)]),
        )
        .await;

        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{scenario}");
    }
}
