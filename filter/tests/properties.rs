//! Property tests over everything the filter parses from outside: request bodies, provider
//! answers and event streams. None may panic (one panic kills the filter's VM), and an
//! event stream must mean the same however its chunks are cut.
//!
//! `make test` runs a few cases of each (64, or `PROPTEST_CASES`); `make fuzz` runs many
//! more in release mode. A failure prints the smallest input proptest found.

// Helpers outside `#[test]` functions are not covered by clippy.toml's test allowances.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::rc::Rc;

use mercator_filter::anthropic::{parse_messages_request, parse_messages_response};
use mercator_filter::config::{Gateway, PluginConfig};
use mercator_filter::exchange::{ChunkStep, Exchange, RequestHead, RequestStep, ResponseStep};
use mercator_filter::forbidden::{ForbiddenContent, ForbiddenPattern};
use mercator_filter::openai::{parse_chat_request, parse_chat_response};
use mercator_filter::sse::{SseEvent, SseParser};
use mercator_filter::stream::{StreamFollower, StreamFormat};
use proptest::prelude::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

const KEY: &str = "mj-property-test-key";

/// A gateway with both providers, the shipped department policy, limits and a pattern.
fn gateway() -> Rc<Gateway> {
    let hash: String = Sha256::digest(KEY.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let config = json!({
        "providers": {"openai": {"api_key_env": "OPENAI_API_KEY"},
                      "anthropic": {"api_key_env": "ANTHROPIC_API_KEY"}},
        "api_keys": [{"sha256": hash, "user_id": "eve", "name": "eve-key",
                      "attributes": {"department": "engineering"}}],
        "policies": {"modules": [{"path": "policies/department.rego",
                                  "source": include_str!("../../policies/department.rego")}]},
        "limits": {"max_tokens": 1000, "max_messages": 4},
        "forbidden_content": [{"name": "x", "pattern": "secret"}],
        "evidence": {"sink_cluster": "evidence_sink"}
    });
    let config = PluginConfig::from_json(config.to_string().as_bytes()).unwrap();
    let env = |name: &str| match name {
        "MERCATOR_SIGNING_KEY" => Some("KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=".to_owned()),
        _ => Some("sk-provider".to_owned()),
    };
    Rc::new(Gateway::new(config, env).unwrap())
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        // Failing inputs are printed; no regression files are left in the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any JSON value, a few levels deep, with the keys the parsers look for among others.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("model".to_owned()),
        Just("messages".to_owned()),
        Just("role".to_owned()),
        Just("content".to_owned()),
        Just("type".to_owned()),
        Just("text".to_owned()),
        Just("max_tokens".to_owned()),
        Just("stream".to_owned()),
        Just("tools".to_owned()),
        Just("tool_calls".to_owned()),
        Just("choices".to_owned()),
        Just("usage".to_owned()),
        Just("system".to_owned()),
        "[a-z_]{1,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            Just("user".to_owned()),
            Just("assistant".to_owned()),
            Just("system".to_owned()),
            Just("text".to_owned()),
            Just("gpt-4".to_owned()),
            ".{0,12}",
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// A request that is valid at its top, with anything below.
fn request_like() -> impl Strategy<Value = Value> {
    (json_value(), json_value(), json_value()).prop_map(|(messages, extra, content)| {
        json!({"model": "gpt-4", "max_tokens": 5, "messages": [messages, {"role": "user", "content": content}],
               "tools": extra.clone(), "system": extra})
    })
}

/// A request that often passes validation, policy and limits, so that answers get read.
fn mostly_valid_request() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            Just("gpt-3.5-turbo"),
            Just("claude-3-sonnet"),
            Just("gpt-4")
        ],
        0u64..1200,
        any::<bool>(),
        ".{0,40}",
        proptest::option::of(json_value()),
    )
        .prop_map(|(model, max_tokens, stream, text, extra)| {
            let mut request = json!({"model": model, "max_tokens": max_tokens, "stream": stream,
                                     "messages": [{"role": "user", "content": text}]});
            if let Some(extra) = extra {
                request["metadata"] = extra;
            }
            request
        })
}

fn parse_cut(stream: &[u8], cuts: &[usize]) -> (Vec<SseEvent>, Vec<u8>) {
    let mut parser = SseParser::new(usize::MAX);
    let mut events = Vec::new();
    let mut from = 0;
    for &cut in cuts {
        events.extend(parser.feed(&stream[from..cut], false).unwrap());
        from = cut;
    }
    events.extend(parser.feed(&stream[from..], true).unwrap());
    (events, parser.finish().unwrap_or_default())
}

/// One event as a model: an optional name, data lines, and whether a comment leads it.
#[derive(Debug, Clone)]
struct EventModel {
    name: Option<String>,
    data: Vec<String>,
    comment: bool,
}

fn event_model() -> impl Strategy<Value = EventModel> {
    (
        proptest::option::of("[a-z_]{1,12}"),
        prop::collection::vec("[^\r\n]{0,20}", 0..3),
        any::<bool>(),
    )
        .prop_map(|(name, data, comment)| EventModel {
            name,
            data,
            comment,
        })
}

fn encode(events: &[EventModel], newline: &str) -> String {
    let mut stream = String::new();
    for event in events {
        if event.comment {
            stream += &format!(": note{newline}");
        }
        if let Some(name) = &event.name {
            stream += &format!("event: {name}{newline}");
        }
        for line in &event.data {
            stream += &format!("data: {line}{newline}");
        }
        stream += newline;
    }
    stream
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn request_parsers_never_panic_on_any_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_chat_request(&body);
        let _ = parse_messages_request(&body);
    }

    #[test]
    fn request_parsers_never_panic_on_any_json(value in prop_oneof![json_value(), request_like()]) {
        let body = value.to_string();
        let parsed = [parse_chat_request(body.as_bytes()), parse_messages_request(body.as_bytes())];
        for request in parsed.into_iter().flatten() {
            prop_assert!(!request.model.trim().is_empty());
            prop_assert!(!request.messages.is_empty());
        }
    }

    #[test]
    fn response_parsers_never_panic_and_accept_only_answers_that_name_a_model(value in json_value()) {
        let body = value.to_string();
        let parsed = [parse_chat_response(body.as_bytes()), parse_messages_response(body.as_bytes())];
        for answer in parsed.into_iter().flatten() {
            prop_assert!(!answer.model.is_empty());
        }
        let _ = parse_chat_response(&body.as_bytes()[..body.len() / 2]);
    }

    #[test]
    fn an_event_stream_means_the_same_however_it_is_cut(
        events in prop::collection::vec(event_model(), 0..8),
        newline in prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
        cut_seed in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let stream = encode(&events, newline);
        let bytes = stream.as_bytes();
        let mut cuts: Vec<usize> = cut_seed.iter().map(|i| i.index(bytes.len() + 1)).collect();
        cuts.sort_unstable();

        let (whole, whole_rest) = parse_cut(bytes, &[]);
        let (split, split_rest) = parse_cut(bytes, &cuts);

        prop_assert_eq!(&whole, &split);
        prop_assert!(whole_rest.is_empty() && split_rest.is_empty());
        let raw: Vec<u8> = split.iter().flat_map(|e| e.raw.clone()).collect();
        prop_assert_eq!(raw.as_slice(), bytes);
        prop_assert_eq!(whole.len(), events.len());
        for (parsed, model) in whole.iter().zip(&events) {
            prop_assert_eq!(&parsed.name, &model.name);
            let data = (!model.data.is_empty()).then(|| model.data.join("\n").into_bytes());
            prop_assert_eq!(&parsed.data, &data);
        }
    }

    #[test]
    fn any_bytes_in_any_chunks_never_panic_the_parser_or_the_follower(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        cut_seed in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        anthropic in any::<bool>(),
    ) {
        let mut cuts: Vec<usize> = cut_seed.iter().map(|i| i.index(bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let _ = parse_cut(&bytes, &cuts);

        let format = if anthropic { StreamFormat::Anthropic } else { StreamFormat::OpenAi };
        let forbidden = ForbiddenContent::compile(&[ForbiddenPattern {
            name: "x".to_owned(),
            pattern: "secret".to_owned(),
        }]).unwrap();
        let mut follower = StreamFollower::new(format, true, 1 << 20);
        let mut from = 0;
        for &cut in &cuts {
            let _ = follower.feed(&bytes[from..cut], false, &forbidden);
            from = cut;
        }
        let _ = follower.feed(&bytes[from..], true, &forbidden);
        let _ = follower.finish();
        let _ = follower.assembled_body();
    }

    #[test]
    fn a_followed_openai_stream_gives_the_same_bytes_and_answer_however_it_is_cut(
        pieces in prop::collection::vec(".{0,8}", 1..12),
        usage in (0u64..10_000, 0u64..10_000),
        cut_seed in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let mut stream = String::new();
        for piece in &pieces {
            let chunk = json!({"id": "c", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": piece}}]});
            stream += &format!("data: {chunk}\n\n");
        }
        let usage_chunk = json!({"id": "c", "model": "gpt-4o", "choices": [],
            "usage": {"prompt_tokens": usage.0, "completion_tokens": usage.1, "total_tokens": usage.0 + usage.1}});
        stream += &format!("data: {usage_chunk}\n\ndata: [DONE]\n\n");
        let bytes = stream.as_bytes();
        let mut cuts: Vec<usize> = cut_seed.iter().map(|i| i.index(bytes.len() + 1)).collect();
        cuts.sort_unstable();

        let mut follower = StreamFollower::new(StreamFormat::OpenAi, true, 1 << 20);
        let mut sent = Vec::new();
        let mut from = 0;
        for &cut in &cuts {
            sent.extend(follower.feed(&bytes[from..cut], false, &ForbiddenContent::none()).forward);
            from = cut;
        }
        sent.extend(follower.feed(&bytes[from..], true, &ForbiddenContent::none()).forward);
        let end = follower.finish();
        sent.extend(end.closing);

        let expected = stream.replace(&format!("data: {usage_chunk}\n\n"), "");
        prop_assert_eq!(String::from_utf8(sent).unwrap(), expected);
        prop_assert!(end.complete);
        let answer = follower.answer();
        prop_assert_eq!(&answer.choices[0].text, &pieces.concat());
        prop_assert_eq!(answer.usage.unwrap().total_tokens, usage.0 + usage.1);
    }

    #[test]
    fn any_request_and_any_answer_end_in_one_record_and_never_a_5xx_before_the_provider(
        request in prop_oneof![json_value(), request_like(), mostly_valid_request()],
        anthropic in any::<bool>(),
        answer in prop::collection::vec(any::<u8>(), 0..300),
        event_stream in any::<bool>(),
    ) {
        let now = OffsetDateTime::UNIX_EPOCH;
        let path = if anthropic { "/v1/messages" } else { "/v1/chat/completions" };
        let head = RequestHead {
            headers: vec![
                (":method".to_owned(), b"POST".to_vec()),
                (":path".to_owned(), path.as_bytes().to_vec()),
                ("anthropic-version".to_owned(), b"2023-06-01".to_vec()),
                ("x-api-key".to_owned(), KEY.as_bytes().to_vec()),
            ],
            ..RequestHead::default()
        };
        let mut exchange = Exchange::new(gateway());

        let (_, step) = exchange.on_request_headers(&head, false, now);
        prop_assert_eq!(step, RequestStep::WaitForBody);
        match exchange.on_request_body(request.to_string().as_bytes(), now) {
            RequestStep::Reply(reply) => prop_assert!((400..500).contains(&reply.status), "{}", reply.status),
            RequestStep::WaitForBody => prop_assert!(false, "a whole body was not decided"),
            RequestStep::Forward(_) => {
                let content_type = if event_stream { "text/event-stream" } else { "application/json" };
                match exchange.on_response_headers(200, None, Some(content_type), now) {
                    ResponseStep::Stream(_) => {
                        let half = answer.len() / 2;
                        let _ = exchange.on_response_chunk(&answer[..half], false, now);
                        let step = exchange.on_response_chunk(&answer[half..], true, now);
                        prop_assert!(matches!(step, ChunkStep::Pass | ChunkStep::Replace(_)));
                    }
                    ResponseStep::WaitForBody(_) => {
                        let _ = exchange.on_response_body(&answer, now);
                    }
                    other => prop_assert!(false, "unexpected {:?}", other),
                }
            }
        }
        exchange.on_done(now);

        prop_assert!(exchange.take_evidence().is_some(), "a record");
        prop_assert!(exchange.take_evidence().is_none(), "only one");
    }
}
