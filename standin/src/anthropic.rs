//! `POST /v1/messages` in Anthropic's wire format.

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::StandinError;
use crate::reply::{self, estimate_tokens};
use crate::scenario::{Scenario, UsageMode};
use crate::sse::{self, Ending, SseEvent};
use crate::AppState;

/// The header that carries the API key.
const API_KEY_HEADER: &str = "x-api-key";

/// The header that every Messages API request must carry.
const VERSION_HEADER: &str = "anthropic-version";

/// The parts of a Messages request that shape the answer; other fields are ignored.
#[derive(Debug, Deserialize)]
struct MessagesRequest {
    model: String,
    max_tokens: Option<u64>,
    messages: Vec<Message>,
    system: Option<Content>,
    stream: Option<bool>,
    #[serde(default)]
    tools: Vec<Value>,
    tool_choice: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Message {
    role: String,
    content: Content,
}

/// Message or system content: a plain string or a list of typed blocks.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Blocks(Vec<Value>),
}

impl Content {
    /// The text this content contributes to the prompt: text blocks, tool results and
    /// tool calls (images and documents are not read).
    fn text(&self) -> String {
        match self {
            Self::Text(text) => text.clone(),
            Self::Blocks(blocks) => blocks_text(blocks),
        }
    }
}

fn blocks_text(blocks: &[Value]) -> String {
    let mut texts = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                texts.extend(block.get("text").and_then(Value::as_str).map(str::to_owned));
            }
            Some("tool_result") => match block.get("content") {
                Some(Value::String(text)) => texts.push(text.clone()),
                Some(Value::Array(inner)) => texts.push(blocks_text(inner)),
                _ => {}
            },
            Some("tool_use") => {
                texts.extend(block.get("name").and_then(Value::as_str).map(str::to_owned));
                texts.extend(block.get("input").map(Value::to_string));
            }
            _ => {}
        }
    }
    texts.join("\n")
}

/// What the model "says": one text block or one tool call.
enum Reply {
    Text { text: String, cut_short: bool },
    ToolUse { name: String, input: Value },
}

impl Reply {
    fn stop_reason(&self) -> &'static str {
        match self {
            Self::Text {
                cut_short: true, ..
            } => "max_tokens",
            Self::Text { .. } => "end_turn",
            Self::ToolUse { .. } => "tool_use",
        }
    }

    fn output_tokens(&self) -> u64 {
        match self {
            Self::Text { text, .. } => estimate_tokens(text),
            Self::ToolUse { name, input } => {
                estimate_tokens(name) + estimate_tokens(&input.to_string())
            }
        }
    }
}

/// The answer decided for one request, before it is written out.
struct Answer {
    id: String,
    tool_use_id: String,
    model: String,
    reply: Reply,
    input_tokens: u64,
    output_tokens: u64,
}

/// Answers one Messages API request.
pub(crate) async fn answer(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, StandinError> {
    let presented_key = headers
        .get(API_KEY_HEADER)
        .and_then(|value| value.to_str().ok());
    let scenario = crate::admit(state, headers, presented_key)?;
    if !headers.contains_key(VERSION_HEADER) {
        return Err(StandinError::InvalidRequest {
            message: format!("{VERSION_HEADER}: header is required"),
            param: None,
        });
    }
    crate::play_scenario_before_answer(scenario).await?;

    let request: MessagesRequest =
        serde_json::from_slice(body).map_err(|error| StandinError::InvalidRequest {
            message: format!("the body is not a Messages API request: {error}"),
            param: None,
        })?;
    let max_tokens = match request.max_tokens {
        None => {
            return Err(StandinError::InvalidRequest {
                message: "max_tokens: Field required".to_owned(),
                param: Some("max_tokens"),
            })
        }
        Some(0) => {
            return Err(StandinError::InvalidRequest {
                message: "max_tokens: must be at least 1".to_owned(),
                param: Some("max_tokens"),
            })
        }
        Some(max_tokens) => max_tokens,
    };
    if request.messages.is_empty() {
        return Err(StandinError::InvalidRequest {
            message: "messages: at least one message is required".to_owned(),
            param: Some("messages"),
        });
    }
    let stream = request.stream.unwrap_or(false);
    if scenario.needs_stream() && !stream {
        return Err(StandinError::CutStreamNeedsStream);
    }

    let answer = decide(state, &request, max_tokens);
    tracing::debug!(
        standin.dialect = "anthropic",
        standin.scenario = scenario.name(),
        standin.stream = stream,
        "provider stand-in answering a message"
    );

    if stream {
        let ending = match scenario {
            Scenario::Malformed => Ending::Malformed,
            Scenario::CutStream => Ending::CutMidEvent,
            Scenario::KeepAlive => Ending::WithKeepAlives,
            Scenario::SplitEvents => Ending::SplitWrites,
            Scenario::StreamError => Ending::ProviderError(SseEvent::named(
                "error",
                json!({"type": "error", "error": {"type": "overloaded_error",
                       "message": "The provider stand-in failed in the middle of the stream (scenario stream-error)."}})
                .to_string(),
            )),
            _ => Ending::Complete,
        };
        return Ok(sse::response(
            stream_events(&answer, scenario.usage_mode()),
            ending,
        ));
    }

    let message = message_object(&answer, scenario.usage_mode());
    if scenario == Scenario::Malformed {
        return Ok(crate::malformed_json_response(&message));
    }
    Ok(axum::Json(message).into_response())
}

/// Decides the reply, the ids and the token counts.
fn decide(state: &AppState, request: &MessagesRequest, max_tokens: u64) -> Answer {
    let last_user_text = request
        .messages
        .iter()
        .rev()
        .find(|message| message.role == "user")
        .map(|message| message.content.text())
        .unwrap_or_default();

    let reply = match chosen_tool(request, &last_user_text) {
        Some(tool) => Reply::ToolUse {
            name: tool
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("standin_tool")
                .to_owned(),
            input: reply::arguments_for_schema(tool.get("input_schema")),
        },
        None => {
            let (text, cut_short) =
                reply::limit_to_tokens(reply::reply_text(&last_user_text), Some(max_tokens));
            Reply::Text { text, cut_short }
        }
    };

    let mut prompt_texts: Vec<String> = request.system.iter().map(Content::text).collect();
    prompt_texts.extend(
        request
            .messages
            .iter()
            .map(|message| message.content.text()),
    );
    Answer {
        id: state.next_id("msg_standin"),
        tool_use_id: state.next_id("toolu_standin"),
        model: request.model.clone(),
        input_tokens: reply::prompt_tokens(prompt_texts.iter().map(String::as_str)),
        output_tokens: reply.output_tokens(),
        reply,
    }
}

/// The tool to call, when the request offers tools and asks for one (by `tool_choice`
/// `any` or `tool`, or by a last user message that says "use a tool").
fn chosen_tool<'a>(request: &'a MessagesRequest, last_user_text: &str) -> Option<&'a Value> {
    let first_tool = request.tools.first()?;
    let choice = request.tool_choice.as_ref();
    match choice
        .and_then(|choice| choice.get("type"))
        .and_then(Value::as_str)
    {
        Some("none") => None,
        Some("any") => Some(first_tool),
        Some("tool") => {
            let wanted = choice.and_then(|choice| choice.get("name"));
            request
                .tools
                .iter()
                .find(|tool| tool.get("name") == wanted)
                .or(Some(first_tool))
        }
        _ => reply::asks_for_a_tool(last_user_text).then_some(first_tool),
    }
}

/// Token counts with the scenario's sign, or `None` when the scenario drops usage.
fn signed(mode: UsageMode, tokens: u64) -> Option<i64> {
    let tokens = i64::try_from(tokens).unwrap_or(i64::MAX);
    match mode {
        UsageMode::Reported => Some(tokens),
        UsageMode::Negative => Some(-tokens),
        UsageMode::Missing => None,
    }
}

fn usage(input_tokens: i64, output_tokens: i64) -> Value {
    json!({
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    })
}

fn content_block(answer: &Answer) -> Value {
    match &answer.reply {
        Reply::Text { text, .. } => json!({ "type": "text", "text": text }),
        Reply::ToolUse { name, input } => json!({
            "type": "tool_use",
            "id": answer.tool_use_id,
            "name": name,
            "input": input,
        }),
    }
}

/// A whole `message` object.
fn message_object(answer: &Answer, mode: UsageMode) -> Value {
    let mut message = json!({
        "id": answer.id,
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": [content_block(answer)],
        "stop_reason": answer.reply.stop_reason(),
        "stop_sequence": null,
    });
    let counts = signed(mode, answer.input_tokens).zip(signed(mode, answer.output_tokens));
    if let (Some((input, output)), Some(object)) = (counts, message.as_object_mut()) {
        object.insert("usage".to_owned(), usage(input, output));
    }
    message
}

/// The named events of a streamed answer, from `message_start` to `message_stop`.
fn stream_events(answer: &Answer, mode: UsageMode) -> Vec<SseEvent> {
    let mut message = json!({
        "id": answer.id,
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": [],
        "stop_reason": null,
        "stop_sequence": null,
    });
    // Like Anthropic, the start reports the input and a first output token; the
    // message_delta at the end reports the output of the whole answer.
    let start_counts = signed(mode, answer.input_tokens).zip(signed(mode, 1));
    if let (Some((input, output)), Some(object)) = (start_counts, message.as_object_mut()) {
        object.insert("usage".to_owned(), usage(input, output));
    }

    let mut events = vec![SseEvent::named(
        "message_start",
        json!({ "type": "message_start", "message": message }).to_string(),
    )];

    let (start_block, deltas) = match &answer.reply {
        Reply::Text { text, .. } => (
            json!({ "type": "text", "text": "" }),
            reply::delta_pieces(text)
                .into_iter()
                .map(|piece| json!({ "type": "text_delta", "text": piece }))
                .collect::<Vec<_>>(),
        ),
        Reply::ToolUse { name, input } => (
            json!({ "type": "tool_use", "id": answer.tool_use_id, "name": name, "input": {} }),
            reply::delta_pieces(&input.to_string())
                .into_iter()
                .map(|piece| json!({ "type": "input_json_delta", "partial_json": piece }))
                .collect(),
        ),
    };
    events.push(SseEvent::named(
        "content_block_start",
        json!({ "type": "content_block_start", "index": 0, "content_block": start_block })
            .to_string(),
    ));
    events.push(SseEvent::named(
        "ping",
        json!({ "type": "ping" }).to_string(),
    ));
    for delta in deltas {
        events.push(SseEvent::named(
            "content_block_delta",
            json!({ "type": "content_block_delta", "index": 0, "delta": delta }).to_string(),
        ));
    }
    events.push(SseEvent::named(
        "content_block_stop",
        json!({ "type": "content_block_stop", "index": 0 }).to_string(),
    ));

    let mut message_delta = json!({
        "type": "message_delta",
        "delta": { "stop_reason": answer.reply.stop_reason(), "stop_sequence": null },
    });
    if let (Some(output), Some(object)) = (
        signed(mode, answer.output_tokens),
        message_delta.as_object_mut(),
    ) {
        object.insert("usage".to_owned(), json!({ "output_tokens": output }));
    }
    events.push(SseEvent::named("message_delta", message_delta.to_string()));
    events.push(SseEvent::named(
        "message_stop",
        json!({ "type": "message_stop" }).to_string(),
    ));
    events
}
