//! Real-shaped OpenAI and Anthropic streams, fed as Envoy might cut them.

use super::*;
use crate::forbidden::ForbiddenPattern;
use crate::sse::tests::{ANTHROPIC_STREAM, OPENAI_STREAM};

const LIMIT: usize = 1 << 20;

fn nothing_forbidden() -> ForbiddenContent {
    ForbiddenContent::none()
}

fn forbidding(pattern: &str) -> ForbiddenContent {
    ForbiddenContent::compile(&[ForbiddenPattern {
        name: "codeword".to_owned(),
        pattern: pattern.to_owned(),
    }])
    .unwrap()
}

/// Feeds `stream` cut at `cuts`; what the client got (closing included) and the end.
fn follow(
    follower: &mut StreamFollower,
    stream: &[u8],
    cuts: &[usize],
    forbidden: &ForbiddenContent,
) -> (Vec<u8>, Option<StreamFault>, StreamEnd) {
    let mut sent = Vec::new();
    let mut from = 0;
    for &cut in cuts.iter().chain([stream.len()].iter()) {
        let fed = follower.feed(&stream[from..cut], cut == stream.len(), forbidden);
        sent.extend(fed.forward);
        if fed.fault.is_some() {
            return (sent, fed.fault, follower.finish());
        }
        from = cut;
    }
    let end = follower.finish();
    sent.extend(&end.closing);
    (sent, None, end)
}

fn without_usage_chunk(stream: &str) -> String {
    stream
        .split_inclusive("\n\n")
        .filter(|event| !event.contains("\"choices\":[],\"usage\""))
        .collect()
}

#[test]
fn an_openai_stream_cut_anywhere_reaches_the_client_less_the_usage_chunk_it_did_not_ask_for() {
    let expected = without_usage_chunk(OPENAI_STREAM);
    assert_ne!(expected, OPENAI_STREAM);

    for cut in 0..=OPENAI_STREAM.len() {
        let mut follower = StreamFollower::new(StreamFormat::OpenAi, true, LIMIT);

        let (sent, fault, end) = follow(
            &mut follower,
            OPENAI_STREAM.as_bytes(),
            &[cut],
            &nothing_forbidden(),
        );

        assert_eq!(fault, None);
        assert!(end.complete);
        assert_eq!(String::from_utf8(sent).unwrap(), expected, "cut at {cut}");
        let answer = follower.answer();
        assert_eq!(answer.model, "gpt-4");
        assert_eq!(answer.choices[0].text, "Hé éllo");
        assert_eq!(answer.choices[0].finish_reason.as_deref(), Some("stop"));
        let usage = answer.usage.unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens
            ),
            (9, 3, 12)
        );
    }
}

#[test]
fn a_client_that_asked_for_usage_gets_the_usage_chunk() {
    let mut follower = StreamFollower::new(StreamFormat::OpenAi, false, LIMIT);

    let (sent, _, _) = follow(
        &mut follower,
        OPENAI_STREAM.as_bytes(),
        &[],
        &nothing_forbidden(),
    );

    assert_eq!(sent, OPENAI_STREAM.as_bytes());
}

#[test]
fn an_anthropic_stream_cut_anywhere_passes_whole_and_gives_usage_from_start_and_delta() {
    for cut in 0..=ANTHROPIC_STREAM.len() {
        let mut follower = StreamFollower::new(StreamFormat::Anthropic, false, LIMIT);

        let (sent, fault, end) = follow(
            &mut follower,
            ANTHROPIC_STREAM.as_bytes(),
            &[cut],
            &nothing_forbidden(),
        );

        assert_eq!(fault, None);
        assert!(end.complete);
        assert_eq!(sent, ANTHROPIC_STREAM.as_bytes(), "cut at {cut}");
        let answer = follower.answer();
        assert_eq!(answer.model, "claude-3-sonnet");
        assert_eq!(answer.choices[0].text, "Hello ✓");
        assert_eq!(answer.choices[0].finish_reason.as_deref(), Some("end_turn"));
        let usage = answer.usage.unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens
            ),
            (25, 15, 40)
        );
    }
}

#[test]
fn the_closing_event_is_held_until_the_end() {
    let mut follower = StreamFollower::new(StreamFormat::OpenAi, true, LIMIT);

    let fed = follower.feed(OPENAI_STREAM.as_bytes(), false, &nothing_forbidden());
    let end = follower.finish();

    assert!(!String::from_utf8_lossy(&fed.forward).contains("[DONE]"));
    assert_eq!(end.closing, b"data: [DONE]\n\n");
}

fn openai_chunk(choices: serde_json::Value) -> String {
    let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1,
                       "model": "gpt-4o", "choices": choices});
    format!("data: {chunk}\n\n")
}

#[test]
fn openai_tool_calls_of_two_choices_are_assembled_by_index() {
    let mut stream = String::new();
    for choice in 0..2 {
        stream += &openai_chunk(json!([{"index": choice, "delta": {"role": "assistant",
            "tool_calls": [{"index": 0, "id": format!("call_{choice}"), "type": "function",
                            "function": {"name": "get_weather", "arguments": ""}}]}}]));
    }
    for piece in ["{\"ci", "ty\": \"Oslo\"}"] {
        for choice in 0..2 {
            stream += &openai_chunk(json!([{"index": choice, "delta": {"tool_calls": [
                {"index": 0, "function": {"arguments": piece}}]}}]));
        }
    }
    stream += &openai_chunk(json!([{"index": 1, "delta": {}, "finish_reason": "tool_calls"}]));
    stream += "data: [DONE]\n\n";
    let mut follower = StreamFollower::new(StreamFormat::OpenAi, true, LIMIT);

    let (_, fault, _) = follow(
        &mut follower,
        stream.as_bytes(),
        &[7, 300],
        &nothing_forbidden(),
    );

    assert_eq!(fault, None);
    let answer = follower.answer();
    assert_eq!(answer.choices.len(), 2);
    assert_eq!(answer.choices[1].tool_calls[0].name, "get_weather");
    assert_eq!(
        answer.choices[1].tool_calls[0].arguments,
        "{\"city\": \"Oslo\"}"
    );
    let body = follower.assembled_body();
    assert_eq!(
        body["choices"][0]["message"]["tool_calls"][0]["id"],
        "call_0"
    );
    assert_eq!(body["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(body["choices"][1]["finish_reason"], "tool_calls");
    assert_eq!(body["usage"], Value::Null, "no usage reported");
}

#[test]
fn an_anthropic_tool_use_is_assembled_with_its_input() {
    let events = [
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude-3-sonnet", "usage": {"input_tokens": 5, "output_tokens": 1, "cache_read_input_tokens": 2}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": " \"Oslo\"}"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ];
    let stream: String = events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect();
    let mut follower = StreamFollower::new(StreamFormat::Anthropic, false, LIMIT);

    let (_, fault, end) = follow(&mut follower, stream.as_bytes(), &[], &nothing_forbidden());

    assert_eq!((fault, end.complete), (None, true));
    let body = follower.assembled_body();
    assert_eq!(body["content"][0]["input"], json!({"city": "Oslo"}));
    assert_eq!(body["stop_reason"], "tool_use");
    assert_eq!(body["usage"]["output_tokens"], 9);
    assert_eq!(follower.usage().unwrap().prompt_tokens, 7);
    assert_eq!(
        follower.answer().choices[0].tool_calls[0].arguments,
        "{\"city\": \"Oslo\"}"
    );
}

#[test]
fn a_malformed_event_stops_the_stream_after_what_went_before() {
    let good = openai_chunk(json!([{"index": 0, "delta": {"content": "Hi"}}]));
    let stream = format!("{good}data: {{\"id\": \"c\", \"choi\n\n");
    let mut follower = StreamFollower::new(StreamFormat::OpenAi, true, LIMIT);

    let (sent, fault, _) = follow(&mut follower, stream.as_bytes(), &[], &nothing_forbidden());

    assert_eq!(sent, good.as_bytes());
    assert!(matches!(
        fault,
        Some(StreamFault::Malformed(ResponseError::Stream(_)))
    ));
    assert_eq!(
        follower.feed(b"data: more\n\n", false, &nothing_forbidden()),
        Fed::default()
    );
}

#[test]
fn wrongly_typed_fields_and_negative_usage_are_malformed() {
    let cases = [
        (openai_chunk(json!([{"index": 0, "delta": {"content": 5}}])), "choices.delta.content"),
        (openai_chunk(json!({"index": 0})), "choices"),
        ("data: {\"model\": 7, \"choices\": []}\n\n".to_owned(), "model"),
        (
            "data: {\"model\": \"m\", \"choices\": [], \"usage\": {\"prompt_tokens\": -1, \"completion_tokens\": 0, \"total_tokens\": 0}}\n\n".to_owned(),
            "prompt_tokens",
        ),
        (openai_chunk(json!([{"index": 99999, "delta": {}}])), "choices.index"),
    ];
    for (stream, field) in cases {
        let mut follower = StreamFollower::new(StreamFormat::OpenAi, true, LIMIT);

        let fed = follower.feed(stream.as_bytes(), false, &nothing_forbidden());

        assert_eq!(
            fed.fault,
            Some(StreamFault::Malformed(ResponseError::Field(field))),
            "{stream}"
        );
    }

    let negative = "event: message_start\ndata: {\"type\": \"message_start\", \"message\": {\"model\": \"c\", \"usage\": {\"input_tokens\": -3}}}\n\n";
    let mut follower = StreamFollower::new(StreamFormat::Anthropic, false, LIMIT);
    assert_eq!(
        follower
            .feed(negative.as_bytes(), false, &nothing_forbidden())
            .fault,
        Some(StreamFault::Malformed(ResponseError::Field("input_tokens")))
    );
}

#[test]
fn forbidden_content_split_across_chunks_stops_the_stream_before_the_chunk_that_completes_it() {
    let first = openai_chunk(json!([{"index": 0, "delta": {"content": "the pine"}}]));
    let second = openai_chunk(json!([{"index": 0, "delta": {"content": "apple is"}}]));
    let forbidden = forbidding("(?i)pineapple");
    let mut follower = StreamFollower::new(StreamFormat::OpenAi, true, LIMIT);

    let fed_first = follower.feed(first.as_bytes(), false, &forbidden);
    let fed_second = follower.feed(second.as_bytes(), false, &forbidden);

    assert_eq!(fed_first.forward, first.as_bytes());
    assert_eq!(fed_second.forward, b"");
    assert_eq!(
        fed_second.fault,
        Some(StreamFault::Forbidden("codeword".to_owned()))
    );
    assert_eq!(follower.finish(), StreamEnd::default());
}

#[test]
fn forbidden_tool_arguments_stop_an_anthropic_stream() {
    let stream = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"c\",\"usage\":{\"input_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"exfiltrate\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"k\\\":\\\"AKIA\"}}\n\n",
    );
    let mut follower = StreamFollower::new(StreamFormat::Anthropic, false, LIMIT);

    let (_, fault, _) = follow(&mut follower, stream.as_bytes(), &[], &forbidding("AKIA"));

    assert_eq!(fault, Some(StreamFault::Forbidden("codeword".to_owned())));
}

#[test]
fn a_stream_cut_mid_event_ends_incomplete_with_its_partial_answer() {
    let cut = ANTHROPIC_STREAM.find("event: content_block_stop").unwrap() + 30;
    let mut follower = StreamFollower::new(StreamFormat::Anthropic, false, LIMIT);

    let (sent, fault, end) = follow(
        &mut follower,
        &ANTHROPIC_STREAM.as_bytes()[..cut],
        &[],
        &nothing_forbidden(),
    );

    assert_eq!(fault, None);
    assert!(!end.complete);
    assert_eq!(end.unfinished_bytes, 30);
    assert!(end.closing.is_empty());
    assert_eq!(sent.len(), cut - 30);
    assert_eq!(follower.answer().choices[0].text, "Hello ✓");
    assert_eq!(
        follower.usage().unwrap().completion_tokens,
        1,
        "as message_start said"
    );
}

#[test]
fn the_providers_own_error_event_goes_on_and_is_noted() {
    let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"c\"}}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let mut follower = StreamFollower::new(StreamFormat::Anthropic, false, LIMIT);

    let (sent, fault, end) = follow(&mut follower, stream.as_bytes(), &[], &nothing_forbidden());

    assert_eq!(sent, stream.as_bytes());
    assert_eq!((fault, end.complete), (None, false));
    assert_eq!(follower.provider_error(), Some("overloaded_error"));
}

#[test]
fn events_without_data_pass_and_a_stream_past_the_limit_stops() {
    let mut follower = StreamFollower::new(StreamFormat::OpenAi, true, 64);

    let fed = follower.feed(
        b": keep-alive\n\nevent: ping\n\n",
        false,
        &nothing_forbidden(),
    );
    assert_eq!(fed.forward, b": keep-alive\n\nevent: ping\n\n");

    let fed = follower.feed(&[b' '; 64], false, &nothing_forbidden());
    assert_eq!(fed.fault, Some(StreamFault::TooLarge(64)));
}

#[test]
fn a_stream_that_never_names_its_model_is_malformed_at_the_end() {
    let mut follower = StreamFollower::new(StreamFormat::Anthropic, false, LIMIT);

    follower.feed(
        b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        false,
        &nothing_forbidden(),
    );

    assert!(matches!(
        follower.finish().fault,
        Some(StreamFault::Malformed(_))
    ));
}
