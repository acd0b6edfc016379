//! `POST /v1/chat/completions` in OpenAI's wire format.

use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::StandinError;
use crate::reply::{self, estimate_tokens};
use crate::scenario::{Scenario, UsageMode};
use crate::sse::{self, Ending, SseEvent};
use crate::AppState;

/// The largest `n` that OpenAI accepts.
const MAX_CHOICES: u32 = 128;

/// The fingerprint that every answer carries, naming the stand-in as its backend.
const SYSTEM_FINGERPRINT: &str = "fp_provider_standin";

/// The parts of a chat completion request that shape the answer; other fields are ignored.
#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<ChatMessage>,
    n: Option<u32>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    tools: Vec<Value>,
    tool_choice: Option<Value>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    content: Option<MessageContent>,
    #[serde(default)]
    tool_calls: Vec<Value>,
}

/// A message's content: a plain string or a list of typed parts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One content part; only `text` parts carry text (images and audio are not read).
#[derive(Debug, Deserialize)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

impl ChatMessage {
    /// The text a message contributes to the prompt: its text parts and tool call arguments.
    fn text(&self) -> String {
        let mut text = match &self.content {
            None => String::new(),
            Some(MessageContent::Text(text)) => text.clone(),
            Some(MessageContent::Parts(parts)) => parts
                .iter()
                .filter(|part| part.kind == "text")
                .filter_map(|part| part.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
        };
        for call in &self.tool_calls {
            let function = call.get("function");
            for field in ["name", "arguments"] {
                if let Some(value) = function.and_then(|f| f.get(field)).and_then(Value::as_str) {
                    text.push_str(value);
                }
            }
        }
        text
    }
}

/// What the model "says" in each choice.
enum Reply {
    Text { content: String, cut_short: bool },
    ToolCall { name: String, arguments: String },
}

impl Reply {
    fn finish_reason(&self) -> &'static str {
        match self {
            Self::Text {
                cut_short: true, ..
            } => "length",
            Self::Text { .. } => "stop",
            Self::ToolCall { .. } => "tool_calls",
        }
    }

    fn completion_tokens(&self) -> u64 {
        match self {
            Self::Text { content, .. } => estimate_tokens(content),
            Self::ToolCall { name, arguments } => {
                estimate_tokens(name) + estimate_tokens(arguments)
            }
        }
    }
}

/// The answer decided for one request, before it is written out.
struct Answer {
    id: String,
    created: u64,
    model: String,
    choices: u32,
    reply: Reply,
    tool_call_id: String,
    prompt_tokens: u64,
    completion_tokens: u64,
}

/// Answers one chat completion request.
pub(crate) async fn answer(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, StandinError> {
    let presented_key = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let scenario = crate::admit(state, headers, presented_key)?;
    crate::play_scenario_before_answer(scenario).await?;

    let request: ChatRequest =
        serde_json::from_slice(body).map_err(|error| StandinError::InvalidRequest {
            message: format!("the body is not a chat completion request: {error}"),
            param: None,
        })?;
    let choices = request.n.unwrap_or(1);
    if choices == 0 || choices > MAX_CHOICES {
        return Err(StandinError::InvalidRequest {
            message: format!("n must be between 1 and {MAX_CHOICES}, not {choices}"),
            param: Some("n"),
        });
    }
    if request.messages.is_empty() {
        return Err(StandinError::InvalidRequest {
            message: "messages must hold at least one message".to_owned(),
            param: Some("messages"),
        });
    }
    let stream = request.stream.unwrap_or(false);
    if scenario.needs_stream() && !stream {
        return Err(StandinError::CutStreamNeedsStream);
    }

    let answer = decide(state, &request, choices);
    tracing::debug!(
        standin.dialect = "openai",
        standin.scenario = scenario.name(),
        standin.stream = stream,
        "provider stand-in answering a chat completion"
    );

    if stream {
        let include_usage = request
            .stream_options
            .as_ref()
            .and_then(|options| options.include_usage)
            == Some(true);
        let ending = match scenario {
            Scenario::Malformed => Ending::Malformed,
            Scenario::CutStream => Ending::CutMidEvent,
            Scenario::KeepAlive => Ending::WithKeepAlives,
            Scenario::SplitEvents => Ending::SplitWrites,
            Scenario::StreamError => Ending::ProviderError(SseEvent::data(
                json!({"error": {"message": "The provider stand-in failed in the middle of the stream (scenario stream-error).",
                                  "type": "server_error", "param": null, "code": null}})
                .to_string(),
            )),
            _ => Ending::Complete,
        };
        let events = stream_events(&answer, include_usage, scenario.usage_mode());
        return Ok(sse::response(events, ending));
    }

    let completion = completion_object(&answer, scenario.usage_mode());
    if scenario == Scenario::Malformed {
        return Ok(crate::malformed_json_response(&completion));
    }
    Ok(axum::Json(completion).into_response())
}

/// Decides the reply, the ids and the token counts.
fn decide(state: &AppState, request: &ChatRequest, choices: u32) -> Answer {
    let last_user_text = request
        .messages
        .iter()
        .rev()
        .find(|message| message.role == "user")
        .map(ChatMessage::text)
        .unwrap_or_default();

    let reply = match chosen_tool(request, &last_user_text) {
        Some(tool) => Reply::ToolCall {
            name: tool
                .pointer("/function/name")
                .and_then(Value::as_str)
                .unwrap_or("standin_tool")
                .to_owned(),
            arguments: reply::arguments_for_schema(tool.pointer("/function/parameters"))
                .to_string(),
        },
        None => {
            let max_tokens = request.max_completion_tokens.or(request.max_tokens);
            let (content, cut_short) =
                reply::limit_to_tokens(reply::reply_text(&last_user_text), max_tokens);
            Reply::Text { content, cut_short }
        }
    };

    let message_texts: Vec<String> = request.messages.iter().map(ChatMessage::text).collect();
    Answer {
        id: state.next_id("chatcmpl-standin"),
        created: crate::unix_now(),
        model: request.model.clone(),
        choices,
        tool_call_id: state.next_id("call_standin"),
        prompt_tokens: reply::prompt_tokens(message_texts.iter().map(String::as_str)),
        completion_tokens: reply.completion_tokens() * u64::from(choices),
        reply,
    }
}

/// The tool to call, when the request offers tools and asks for one (by `tool_choice`
/// `"required"`, by naming a function, or by a last user message that says "use a tool").
fn chosen_tool<'a>(request: &'a ChatRequest, last_user_text: &str) -> Option<&'a Value> {
    let first_tool = request.tools.first()?;
    match &request.tool_choice {
        Some(Value::String(choice)) if choice == "none" => None,
        Some(Value::String(choice)) if choice == "required" => Some(first_tool),
        Some(Value::Object(choice)) => {
            let wanted = choice.get("function").and_then(|f| f.get("name"));
            request
                .tools
                .iter()
                .find(|tool| tool.pointer("/function/name") == wanted)
                .or(Some(first_tool))
        }
        _ => reply::asks_for_a_tool(last_user_text).then_some(first_tool),
    }
}

/// The usage object, as the scenario wants it.
fn usage(answer: &Answer, mode: UsageMode) -> Option<Value> {
    let sign: i64 = match mode {
        UsageMode::Missing => return None,
        UsageMode::Reported => 1,
        UsageMode::Negative => -1,
    };
    let prompt = i64::try_from(answer.prompt_tokens).unwrap_or(i64::MAX) * sign;
    let completion = i64::try_from(answer.completion_tokens).unwrap_or(i64::MAX) * sign;
    Some(json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt.saturating_add(completion),
        "prompt_tokens_details": { "cached_tokens": 0, "audio_tokens": 0 },
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        },
    }))
}

/// A whole `chat.completion` object.
fn completion_object(answer: &Answer, mode: UsageMode) -> Value {
    let message = match &answer.reply {
        Reply::Text { content, .. } => json!({
            "role": "assistant",
            "content": content,
            "refusal": null,
            "annotations": [],
        }),
        Reply::ToolCall { name, arguments } => json!({
            "role": "assistant",
            "content": null,
            "refusal": null,
            "annotations": [],
            "tool_calls": [{
                "id": answer.tool_call_id,
                "type": "function",
                "function": { "name": name, "arguments": arguments },
            }],
        }),
    };
    let choices: Vec<Value> = (0..answer.choices)
        .map(|index| {
            json!({
                "index": index,
                "message": message,
                "logprobs": null,
                "finish_reason": answer.reply.finish_reason(),
            })
        })
        .collect();

    let mut completion = json!({
        "id": answer.id,
        "object": "chat.completion",
        "created": answer.created,
        "model": answer.model,
        "choices": choices,
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    });
    if let (Some(usage), Some(object)) = (usage(answer, mode), completion.as_object_mut()) {
        object.insert("usage".to_owned(), usage);
    }
    completion
}

/// The `chat.completion.chunk` events of a streamed answer, ending with `[DONE]`.
fn stream_events(answer: &Answer, include_usage: bool, mode: UsageMode) -> Vec<SseEvent> {
    let chunk = |choices: Vec<Value>| -> SseEvent {
        let mut chunk = json!({
            "id": answer.id,
            "object": "chat.completion.chunk",
            "created": answer.created,
            "model": answer.model,
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
        });
        // With include_usage, OpenAI puts `"usage": null` on every chunk but the last.
        if let (true, Some(object)) = (include_usage, chunk.as_object_mut()) {
            object.insert("usage".to_owned(), Value::Null);
        }
        SseEvent::data(chunk.to_string())
    };
    // OpenAI sends each choice's delta in its own chunk, even when `n` is above 1.
    let per_choice = |delta: &Value, finish_reason: Option<&str>| -> Vec<SseEvent> {
        (0..answer.choices)
            .map(|index| {
                chunk(vec![json!({
                    "index": index,
                    "delta": delta,
                    "logprobs": null,
                    "finish_reason": finish_reason,
                })])
            })
            .collect()
    };

    let mut deltas = Vec::new();
    match &answer.reply {
        Reply::Text { content, .. } => {
            deltas.push(json!({ "role": "assistant", "content": "", "refusal": null }));
            for piece in reply::delta_pieces(content) {
                deltas.push(json!({ "content": piece }));
            }
        }
        Reply::ToolCall { name, arguments } => {
            deltas.push(json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "index": 0,
                    "id": answer.tool_call_id,
                    "type": "function",
                    "function": { "name": name, "arguments": "" },
                }],
            }));
            for piece in reply::delta_pieces(arguments) {
                deltas.push(json!({
                    "tool_calls": [{ "index": 0, "function": { "arguments": piece } }],
                }));
            }
        }
    }

    let mut events: Vec<SseEvent> = deltas
        .iter()
        .flat_map(|delta| per_choice(delta, None))
        .collect();
    events.extend(per_choice(&json!({}), Some(answer.reply.finish_reason())));

    if include_usage {
        if let Some(usage) = usage(answer, mode) {
            let mut last = json!({
                "id": answer.id,
                "object": "chat.completion.chunk",
                "created": answer.created,
                "model": answer.model,
                "service_tier": "default",
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "choices": [],
            });
            if let Some(object) = last.as_object_mut() {
                object.insert("usage".to_owned(), usage);
            }
            events.push(SseEvent::data(last.to_string()));
        }
    }
    events.push(SseEvent::data("[DONE]"));
    events
}
