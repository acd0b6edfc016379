//! Anthropic Messages (`POST /v1/messages`): what a valid request is, what the gateway reads
//! from the provider's answer.
//!
//! Requests are read into the same facts as OpenAI chat completions ([`ChatRequest`]), so
//! policies and evidence see one shape whichever API the caller used: the top-level
//! `system` becomes a first message with role `system`, and content blocks give their text.
//! Fields are named in the caller's terms (`messages[1].content[0].text`).

use mercator_evidence::TokenUsage;
use serde_json::{Map, Value};

use crate::openai::{
    field_error, optional_bool, optional_count, parse_strict_json, ChatRequest, ChatResponse,
    ChoiceFacts, MessageFacts, RequestError, ResponseError, ToolCallFacts,
};

/// Roles the Messages API accepts in `messages`; the system prompt is a field of its own.
const ROLES: &[&str] = &["user", "assistant"];

/// Validates a Messages request body and reads what policies and evidence need.
pub fn parse_messages_request(body: &[u8]) -> Result<ChatRequest, RequestError> {
    let value = parse_strict_json(body).map_err(|e| RequestError::NotJson(e.to_string()))?;
    let Value::Object(object) = value else {
        return Err(RequestError::NotObject);
    };

    let model = match object.get("model") {
        Some(Value::String(model)) if !model.trim().is_empty() => model.clone(),
        Some(Value::String(_)) => return Err(field_error("model", "must not be empty")),
        Some(_) => return Err(field_error("model", "must be a string")),
        None => return Err(field_error("model", "is required")),
    };
    let max_tokens = match optional_count(&object, "max_tokens")? {
        Some(0) => return Err(field_error("max_tokens", "must be at least 1")),
        Some(count) => count,
        None => return Err(field_error("max_tokens", "is required")),
    };

    let mut messages = Vec::new();
    match object.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => messages.push(facts("system", text.clone(), "system")),
        Some(Value::Array(blocks)) => {
            messages.push(facts("system", blocks_text("system", blocks)?, "system"));
        }
        Some(_) => {
            return Err(field_error(
                "system",
                "must be a string or an array of text blocks",
            ))
        }
    }
    match object.get("messages") {
        Some(Value::Array(items)) if !items.is_empty() => {
            for (index, item) in items.iter().enumerate() {
                messages.push(parse_message(index, item)?);
            }
        }
        Some(Value::Array(_)) => return Err(field_error("messages", "must not be empty")),
        Some(_) => {
            return Err(field_error(
                "messages",
                "must be an array of message objects",
            ))
        }
        None => return Err(field_error("messages", "is required")),
    }

    let stream = optional_bool(&object, "stream")?.unwrap_or(false);
    let temperature = match object.get("temperature") {
        None | Some(Value::Null) => None,
        Some(Value::Number(number)) => number.as_f64(),
        Some(_) => return Err(field_error("temperature", "must be a number")),
    };
    let tools = match object.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(tools)) => tools
            .iter()
            .enumerate()
            .map(|(index, tool)| tool_name(index, tool))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(field_error("tools", "must be an array")),
    };

    Ok(ChatRequest {
        model,
        messages,
        max_tokens: Some(max_tokens),
        temperature,
        stream,
        // Anthropic streams always report usage, in `message_start` and `message_delta`.
        stream_include_usage: true,
        n: None,
        response_format: None,
        tools,
        body: object,
    })
}

fn facts(role: &str, text: String, source: &str) -> MessageFacts {
    MessageFacts {
        role: role.to_owned(),
        chars: text.chars().count(),
        text,
        source: source.to_owned(),
    }
}

fn parse_message(index: usize, item: &Value) -> Result<MessageFacts, RequestError> {
    let at = |field: &str| format!("messages[{index}].{field}");
    let Value::Object(message) = item else {
        return Err(field_error(
            format!("messages[{index}]"),
            "must be an object",
        ));
    };
    let role = match message.get("role") {
        Some(Value::String(role)) if ROLES.contains(&role.as_str()) => role.clone(),
        Some(Value::String(_)) => {
            return Err(field_error(
                at("role"),
                "must be `user` or `assistant` (the system prompt goes in `system`)",
            ))
        }
        Some(_) => return Err(field_error(at("role"), "must be a string")),
        None => return Err(field_error(at("role"), "is required")),
    };
    let text = match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => blocks_text(&at("content"), blocks)?,
        Some(_) => {
            return Err(field_error(
                at("content"),
                "must be a string or an array of content blocks",
            ))
        }
        None => return Err(field_error(at("content"), "is required")),
    };
    Ok(facts(&role, text, &format!("messages[{index}]")))
}

/// The text of content blocks, joined by newlines: `text` blocks, the text of
/// `tool_result` blocks, and the name and input of `tool_use` blocks. Images, documents
/// and other block types carry no text for policies.
fn blocks_text(at: &str, blocks: &[Value]) -> Result<String, RequestError> {
    let mut texts = Vec::new();
    for (index, block) in blocks.iter().enumerate() {
        let at = format!("{at}[{index}]");
        let Value::Object(block) = block else {
            return Err(field_error(at, "must be an object"));
        };
        let kind = match block.get("type") {
            Some(Value::String(kind)) => kind.as_str(),
            _ => return Err(field_error(format!("{at}.type"), "must be a string")),
        };
        match kind {
            "text" => match block.get("text") {
                Some(Value::String(text)) => texts.push(text.clone()),
                _ => return Err(field_error(format!("{at}.text"), "must be a string")),
            },
            "tool_use" => {
                if !matches!(block.get("id"), Some(Value::String(_))) {
                    return Err(field_error(format!("{at}.id"), "must be a string"));
                }
                match block.get("name") {
                    Some(Value::String(name)) => texts.push(name.clone()),
                    _ => return Err(field_error(format!("{at}.name"), "must be a string")),
                }
                match block.get("input") {
                    Some(input @ Value::Object(_)) => texts.push(input.to_string()),
                    _ => return Err(field_error(format!("{at}.input"), "must be an object")),
                }
            }
            "tool_result" => {
                if !matches!(block.get("tool_use_id"), Some(Value::String(_))) {
                    return Err(field_error(format!("{at}.tool_use_id"), "must be a string"));
                }
                match block.get("content") {
                    None | Some(Value::Null) => {}
                    Some(Value::String(text)) => texts.push(text.clone()),
                    Some(Value::Array(inner)) => {
                        texts.push(blocks_text(&format!("{at}.content"), inner)?);
                    }
                    Some(_) => {
                        return Err(field_error(
                            format!("{at}.content"),
                            "must be a string or an array of content blocks",
                        ))
                    }
                }
            }
            "image" | "document" if !matches!(block.get("source"), Some(Value::Object(_))) => {
                return Err(field_error(format!("{at}.source"), "must be an object"));
            }
            _ => {}
        }
    }
    Ok(texts.join("\n"))
}

fn tool_name(index: usize, tool: &Value) -> Result<String, RequestError> {
    match tool.get("name").or_else(|| tool.get("type")) {
        Some(Value::String(name)) => Ok(name.clone()),
        _ if !tool.is_object() => Err(field_error(format!("tools[{index}]"), "must be an object")),
        _ => Err(field_error(
            format!("tools[{index}].name"),
            "must be a string",
        )),
    }
}

/// Reads and checks a provider's successful Messages answer. Its one "choice" is the
/// message: the text of its text blocks and its `stop_reason`.
pub fn parse_messages_response(body: &[u8]) -> Result<ChatResponse, ResponseError> {
    let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(body) else {
        return Err(ResponseError::NotJson);
    };

    let model = match object.get("model") {
        Some(Value::String(model)) if !model.is_empty() => model.clone(),
        _ => return Err(ResponseError::Field("model")),
    };
    let mut tool_calls = Vec::new();
    let text = match object.get("content") {
        Some(Value::Array(blocks)) => {
            let mut texts = Vec::new();
            for block in blocks {
                let Value::Object(block) = block else {
                    return Err(ResponseError::Field("content"));
                };
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => match block.get("text") {
                        Some(Value::String(text)) => texts.push(text.as_str()),
                        _ => return Err(ResponseError::Field("content.text")),
                    },
                    Some("tool_use") => match (block.get("name"), block.get("input")) {
                        (Some(Value::String(name)), Some(input)) => {
                            tool_calls.push(ToolCallFacts {
                                name: name.clone(),
                                arguments: input.to_string(),
                            })
                        }
                        _ => return Err(ResponseError::Field("content.tool_use")),
                    },
                    Some(_) => {}
                    None => return Err(ResponseError::Field("content.type")),
                }
            }
            texts.join("\n")
        }
        _ => return Err(ResponseError::Field("content")),
    };
    let finish_reason = match object.get("stop_reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(reason)) => Some(reason.clone()),
        Some(_) => return Err(ResponseError::Field("stop_reason")),
    };
    let usage = match object.get("usage") {
        None | Some(Value::Null) => None,
        Some(Value::Object(usage)) => Some(token_usage(usage)?),
        Some(_) => return Err(ResponseError::Field("usage")),
    };

    Ok(ChatResponse {
        model,
        choices: vec![ChoiceFacts {
            index: 0,
            finish_reason,
            text,
            tool_calls,
        }],
        usage,
    })
}

/// Anthropic reports input and output tokens; input read from or written to the prompt
/// cache is counted apart, and all of it is prompt.
pub(crate) fn token_usage(usage: &Map<String, Value>) -> Result<TokenUsage, ResponseError> {
    let count = |field: &'static str, required: bool| match usage.get(field) {
        None | Some(Value::Null) if !required => Ok(0),
        Some(value) => value.as_u64().ok_or(ResponseError::Field(field)),
        None => Err(ResponseError::Field(field)),
    };
    let prompt = count("input_tokens", true)?
        .saturating_add(count("cache_creation_input_tokens", false)?)
        .saturating_add(count("cache_read_input_tokens", false)?);
    let completion = count("output_tokens", true)?;
    Ok(TokenUsage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt.saturating_add(completion),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<ChatRequest, RequestError> {
        parse_messages_request(value.to_string().as_bytes())
    }

    #[test]
    fn a_request_with_system_blocks_and_tools_is_read_into_the_shared_facts() {
        let request = parse(json!({
            "model": "claude-3-sonnet", "max_tokens": 100,
            "system": [{"type": "text", "text": "Be brief."}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Oslo"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]}
            ],
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]
        }))
        .unwrap();

        assert_eq!(request.messages[0].role, "system");
        assert_eq!(request.messages[0].text, "Be brief.");
        assert_eq!(request.messages[1].text, "Weather?");
        assert!(request.messages[2].text.contains("get_weather"));
        assert_eq!(request.messages[3].text, "sunny");
        assert_eq!(request.max_tokens, Some(100));
        assert_eq!(request.tools, ["get_weather"]);
    }

    #[test]
    fn each_malformed_body_names_its_field() {
        let ok = json!([{"role": "user", "content": "x"}]);
        let cases = [
            (json!({"max_tokens": 5, "messages": ok}), "model"),
            (json!({"model": "c", "messages": ok}), "max_tokens"),
            (
                json!({"model": "c", "max_tokens": 0, "messages": ok}),
                "max_tokens",
            ),
            (
                json!({"model": "c", "max_tokens": -1, "messages": ok}),
                "max_tokens",
            ),
            (json!({"model": "c", "max_tokens": 5}), "messages"),
            (
                json!({"model": "c", "max_tokens": 5, "messages": []}),
                "messages",
            ),
            (
                json!({"model": "c", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": 3}]}),
                "messages[0].content",
            ),
            (
                json!({"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text"}]}]}),
                "messages[0].content[0].text",
            ),
            (
                json!({"model": "c", "max_tokens": 5, "messages": ok, "system": 7}),
                "system",
            ),
            (
                json!({"model": "c", "max_tokens": 5, "messages": ok, "tools": [{}]}),
                "tools[0].name",
            ),
        ];

        for (body, field) in cases {
            let error = parse(body.clone()).unwrap_err();
            assert_eq!(error.field(), Some(field), "{body}: {error}");
        }
    }

    #[test]
    fn an_answer_gives_model_text_stop_reason_and_usage_with_cache_tokens() {
        let body = json!({"id": "msg_1", "type": "message", "role": "assistant",
            "model": "claude-3-sonnet-20240229",
            "content": [{"type": "text", "text": "Hi"}, {"type": "tool_use", "id": "t", "name": "n", "input": {}}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 10, "output_tokens": 4, "cache_read_input_tokens": 2}});

        let answer = parse_messages_response(body.to_string().as_bytes()).unwrap();

        assert_eq!(answer.model, "claude-3-sonnet-20240229");
        assert_eq!(answer.choices[0].text, "Hi");
        assert_eq!(answer.choices[0].finish_reason.as_deref(), Some("end_turn"));
        let usage = answer.usage.unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens
            ),
            (12, 4, 16)
        );
    }

    #[test]
    fn a_malformed_answer_is_refused() {
        assert_eq!(parse_messages_response(b"[]"), Err(ResponseError::NotJson));
        assert_eq!(
            parse_messages_response(br#"{"model": "m", "content": "x"}"#),
            Err(ResponseError::Field("content"))
        );
        assert_eq!(
            parse_messages_response(
                br#"{"model": "m", "content": [], "usage": {"input_tokens": -1, "output_tokens": 0}}"#
            ),
            Err(ResponseError::Field("input_tokens"))
        );
    }
}
