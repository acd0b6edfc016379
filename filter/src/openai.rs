//! OpenAI chat completions: what a valid request is, what the gateway reads from the
//! provider's answer. The facts read here ([`ChatRequest`], [`ChatResponse`]) are also
//! what [`crate::anthropic`] reads from the Messages API, so policies see one shape.
//!
//! Validation names the first field at fault in the caller's terms (`messages[2].role`), so
//! a client sees what to fix. Only what the gateway needs is read; everything else in the
//! body passes through untouched.

use mercator_evidence::TokenUsage;
use serde_json::{Map, Value};

/// Roles OpenAI accepts in `messages`.
const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// Why a request body was refused. Each names the field, as OpenAI's `param` does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The body is not valid JSON (or not UTF-8).
    #[error("The request body is not valid JSON: {0}")]
    NotJson(String),
    /// The body is JSON but not an object.
    #[error("The request body must be a JSON object.")]
    NotObject,
    /// A field is missing or has the wrong type or value.
    #[error("Invalid `{field}`: {message}")]
    Field {
        /// The dotted path of the field (`messages[0].content`).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A feature the gateway does not govern yet; refused rather than passed unchecked.
    #[error("`{field}` is not supported by this gateway yet: {message}")]
    Unsupported {
        /// The field.
        field: String,
        /// Why.
        message: String,
    },
}

impl RequestError {
    /// The field at fault, for the error's `param`.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Field { field, .. } | Self::Unsupported { field, .. } => Some(field),
            Self::NotJson(_) | Self::NotObject => None,
        }
    }
}

pub(crate) fn field_error(field: impl Into<String>, message: impl Into<String>) -> RequestError {
    RequestError::Field {
        field: field.into(),
        message: message.into(),
    }
}

/// One message, as policies see it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MessageFacts {
    /// Its role.
    pub role: String,
    /// Its text: a string content, or the text parts of an array content, joined by newlines.
    pub text: String,
    /// Characters of text.
    pub chars: usize,
    /// Where it came from in the caller's body (`messages[2]`, `system`), to name it in
    /// errors; not part of the policy input.
    #[serde(skip)]
    pub source: String,
}

/// What the gateway reads from a valid chat completion request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The model asked for.
    pub model: String,
    /// The messages.
    pub messages: Vec<MessageFacts>,
    /// `max_tokens` or `max_completion_tokens`, when given.
    pub max_tokens: Option<u64>,
    /// `temperature`, when given.
    pub temperature: Option<f64>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// Whether the client asked for usage in the stream (`stream_options.include_usage`).
    pub stream_include_usage: bool,
    /// How many choices the client asked for (`n`), when given.
    pub n: Option<u64>,
    /// The `type` of `response_format` (`text`, `json_object`, `json_schema`), when given.
    pub response_format: Option<String>,
    /// The names of the tools offered: each function's `name`, or the tool's `type` when it
    /// has no function name.
    pub tools: Vec<String>,
    /// The body as parsed, so that obligations can rewrite it.
    pub body: Map<String, Value>,
}

/// Validates a request body and reads what policies and evidence need.
pub fn parse_chat_request(body: &[u8]) -> Result<ChatRequest, RequestError> {
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

    let messages = match object.get("messages") {
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(index, item)| parse_message(index, item))
            .collect::<Result<Vec<_>, _>>()?,
        Some(Value::Array(_)) => return Err(field_error("messages", "must not be empty")),
        Some(_) => {
            return Err(field_error(
                "messages",
                "must be an array of message objects",
            ))
        }
        None => return Err(field_error("messages", "is required")),
    };

    let stream = optional_bool(&object, "stream")?.unwrap_or(false);
    let stream_include_usage = match object.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(options)) => match options.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(include)) => *include,
            Some(_) => {
                return Err(field_error(
                    "stream_options.include_usage",
                    "must be a boolean",
                ))
            }
        },
        Some(_) => return Err(field_error("stream_options", "must be an object")),
    };
    let n = match optional_count(&object, "n")? {
        Some(n) if !(1..=MAX_CHOICES).contains(&n) => {
            return Err(field_error(
                "n",
                format!("must be between 1 and {MAX_CHOICES}"),
            ))
        }
        n => n,
    };
    let response_format = match object.get("response_format") {
        None | Some(Value::Null) => None,
        Some(Value::Object(format)) => Some(response_format_type(format)?),
        Some(_) => return Err(field_error("response_format", "must be an object")),
    };

    let max_tokens = match optional_count(&object, "max_completion_tokens")? {
        Some(count) => Some(count),
        None => optional_count(&object, "max_tokens")?,
    };
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
        max_tokens,
        temperature,
        stream,
        stream_include_usage,
        n,
        response_format,
        tools,
        body: object,
    })
}

/// The most choices OpenAI gives for one request.
const MAX_CHOICES: u64 = 128;

/// `response_format` types OpenAI knows.
const RESPONSE_FORMATS: &[&str] = &["text", "json_object", "json_schema"];

fn response_format_type(format: &Map<String, Value>) -> Result<String, RequestError> {
    let kind = match format.get("type") {
        Some(Value::String(kind)) if RESPONSE_FORMATS.contains(&kind.as_str()) => kind.clone(),
        Some(Value::String(_)) => {
            return Err(field_error(
                "response_format.type",
                format!("must be one of {}", RESPONSE_FORMATS.join(", ")),
            ))
        }
        Some(_) => return Err(field_error("response_format.type", "must be a string")),
        None => return Err(field_error("response_format.type", "is required")),
    };
    if kind == "json_schema" {
        match format.get("json_schema") {
            Some(Value::Object(schema)) => match schema.get("name") {
                Some(Value::String(_)) => {}
                _ => {
                    return Err(field_error(
                        "response_format.json_schema.name",
                        "must be a string",
                    ))
                }
            },
            _ => {
                return Err(field_error(
                    "response_format.json_schema",
                    "must be an object",
                ))
            }
        }
    }
    Ok(kind)
}

/// A boolean field, `None` when absent or `null`.
pub(crate) fn optional_bool(
    object: &Map<String, Value>,
    field: &str,
) -> Result<Option<bool>, RequestError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(value)) => Ok(Some(*value)),
        Some(_) => Err(field_error(field, "must be a boolean")),
    }
}

/// A tool's name as policies see it: `function.name`, else its `type`.
fn tool_name(index: usize, tool: &Value) -> Result<String, RequestError> {
    let Value::Object(tool) = tool else {
        return Err(field_error(format!("tools[{index}]"), "must be an object"));
    };
    let function_name = tool
        .get("function")
        .and_then(|function| function.get("name"))
        .and_then(Value::as_str);
    match (function_name, tool.get("type").and_then(Value::as_str)) {
        (Some(name), _) | (None, Some(name)) => Ok(name.to_owned()),
        (None, None) => Err(field_error(
            format!("tools[{index}].type"),
            "must be a string",
        )),
    }
}

impl ChatRequest {
    /// A rough count of prompt tokens for policies, before the provider has counted: four
    /// characters a token, plus four tokens of framing per message. Real tokenizers differ
    /// by model; policies should treat this as an estimate, never as the bill.
    pub fn estimated_prompt_tokens(&self) -> u64 {
        self.messages
            .iter()
            .map(|message| (message.chars as u64).div_ceil(4) + 4)
            .sum()
    }
}

pub(crate) fn optional_count(
    object: &Map<String, Value>,
    field: &str,
) -> Result<Option<u64>, RequestError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(number)) => number
            .as_u64()
            .map(Some)
            .ok_or_else(|| field_error(field, "must be a non-negative integer")),
        Some(_) => Err(field_error(field, "must be a non-negative integer")),
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
                format!("must be one of {}", ROLES.join(", ")),
            ))
        }
        Some(_) => return Err(field_error(at("role"), "must be a string")),
        None => return Err(field_error(at("role"), "is required")),
    };

    let mut text = match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => content_parts_text(index, parts)?,
        // An assistant turn that only calls tools has no content.
        Some(Value::Null) | None if role == "assistant" => String::new(),
        Some(_) => {
            return Err(field_error(
                at("content"),
                "must be a string or an array of parts",
            ))
        }
        None => return Err(field_error(at("content"), "is required")),
    };
    if role == "tool" && !matches!(message.get("tool_call_id"), Some(Value::String(_))) {
        return Err(field_error(at("tool_call_id"), "must be a string"));
    }
    match message.get("tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(calls)) if role == "assistant" => {
            for (call_index, call) in calls.iter().enumerate() {
                let (name, arguments) = tool_call(&at(&format!("tool_calls[{call_index}]")), call)?;
                for piece in [name, arguments] {
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(piece);
                }
            }
        }
        Some(Value::Array(_)) => {
            return Err(field_error(
                at("tool_calls"),
                "only assistant messages may carry tool calls",
            ))
        }
        Some(_) => return Err(field_error(at("tool_calls"), "must be an array")),
    }

    let chars = text.chars().count();
    Ok(MessageFacts {
        role,
        text,
        chars,
        source: format!("messages[{index}]"),
    })
}

/// A tool call of an assistant message: its function's name and arguments.
fn tool_call<'a>(at: &str, call: &'a Value) -> Result<(&'a str, &'a str), RequestError> {
    let Value::Object(call) = call else {
        return Err(field_error(at, "must be an object"));
    };
    if !matches!(call.get("id"), Some(Value::String(_))) {
        return Err(field_error(format!("{at}.id"), "must be a string"));
    }
    let Some(Value::Object(function)) = call.get("function") else {
        return Err(field_error(format!("{at}.function"), "must be an object"));
    };
    let Some(Value::String(name)) = function.get("name") else {
        return Err(field_error(
            format!("{at}.function.name"),
            "must be a string",
        ));
    };
    let Some(Value::String(arguments)) = function.get("arguments") else {
        return Err(field_error(
            format!("{at}.function.arguments"),
            "must be a string (JSON text)",
        ));
    };
    Ok((name, arguments))
}

fn content_parts_text(index: usize, parts: &[Value]) -> Result<String, RequestError> {
    let mut texts = Vec::new();
    for (part_index, part) in parts.iter().enumerate() {
        let at = format!("messages[{index}].content[{part_index}]");
        let Value::Object(part) = part else {
            return Err(field_error(at, "must be an object"));
        };
        match part.get("type") {
            Some(Value::String(kind)) if kind == "text" => match part.get("text") {
                Some(Value::String(text)) => texts.push(text.as_str()),
                _ => return Err(field_error(format!("{at}.text"), "must be a string")),
            },
            Some(Value::String(kind)) if kind == "image_url" => match part.get("image_url") {
                Some(Value::Object(image))
                    if matches!(image.get("url"), Some(Value::String(_))) => {}
                Some(Value::Object(_)) => {
                    return Err(field_error(
                        format!("{at}.image_url.url"),
                        "must be a string",
                    ))
                }
                _ => return Err(field_error(format!("{at}.image_url"), "must be an object")),
            },
            // Audio, files, refusals: no text for policies; the provider checks them.
            Some(Value::String(_)) => {}
            _ => return Err(field_error(format!("{at}.type"), "must be a string")),
        }
    }
    Ok(texts.join("\n"))
}

/// Parses JSON, refusing an object with the same key twice. Parsers disagree on which of
/// two `model` keys wins; if the policy saw one and the provider used the other, a
/// denied model could be reached. One meaning or none.
pub(crate) fn parse_strict_json(body: &[u8]) -> Result<Value, serde_json::Error> {
    use serde::de::DeserializeSeed as _;

    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = StrictJson.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// A `serde_json::Value` deserializer that errors on duplicate object keys. Nesting depth
/// is bounded by `serde_json`'s recursion limit, as for `Value`.
struct StrictJson;

impl<'de> serde::de::DeserializeSeed<'de> for StrictJson {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for StrictJson {
    type Value = Value;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictJson)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate key `{key}`"
                )));
            }
            let value = map.next_value_seed(StrictJson)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Why a provider's answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// Not JSON, not an object.
    #[error("the provider's answer is not a JSON object")]
    NotJson,
    /// A field the gateway needs is missing or wrong.
    #[error("the provider's answer has an invalid `{0}`")]
    Field(&'static str),
    /// The answer is compressed although the gateway asked for `identity`.
    #[error("the provider's answer is compressed (`{0}`) although the gateway asked for identity encoding")]
    Encoded(String),
    /// A streamed answer broke the rules of its format (the sentence says how).
    #[error("the provider's stream {0}")]
    Stream(&'static str),
}

/// What the gateway reads from a successful chat completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatResponse {
    /// The model that answered.
    pub model: String,
    /// Each choice, as response policies see it.
    pub choices: Vec<ChoiceFacts>,
    /// Token usage, when reported.
    pub usage: Option<TokenUsage>,
}

/// One choice of an answer, as response policies see it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChoiceFacts {
    /// The choice's `index`, or its position when the provider gave none.
    pub index: u64,
    /// Why the model stopped (`stop`, `length`, `tool_calls`, `content_filter`), if said.
    pub finish_reason: Option<String>,
    /// The message's text content (text parts joined by newlines); empty for tool calls.
    pub text: String,
    /// The tools the model called, in order.
    pub tool_calls: Vec<ToolCallFacts>,
}

/// One tool call of an answer, as response policies see it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ToolCallFacts {
    /// The function's (tool's) name.
    pub name: String,
    /// Its arguments as the model wrote them: JSON text.
    pub arguments: String,
}

/// Reads and checks a provider's successful answer.
pub fn parse_chat_response(body: &[u8]) -> Result<ChatResponse, ResponseError> {
    let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(body) else {
        return Err(ResponseError::NotJson);
    };

    let model = match object.get("model") {
        Some(Value::String(model)) if !model.is_empty() => model.clone(),
        _ => return Err(ResponseError::Field("model")),
    };
    let choices = match object.get("choices") {
        Some(Value::Array(choices)) => choices
            .iter()
            .enumerate()
            .map(|(position, choice)| choice_facts(position, choice))
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(ResponseError::Field("choices")),
    };
    let usage = match object.get("usage") {
        None | Some(Value::Null) => None,
        Some(Value::Object(usage)) => Some(openai_usage(usage)?),
        Some(_) => return Err(ResponseError::Field("usage")),
    };

    Ok(ChatResponse {
        model,
        choices,
        usage,
    })
}

fn choice_facts(position: usize, choice: &Value) -> Result<ChoiceFacts, ResponseError> {
    let Value::Object(choice) = choice else {
        return Err(ResponseError::Field("choices"));
    };
    let index = match choice.get("index") {
        None | Some(Value::Null) => position as u64,
        Some(index) => index
            .as_u64()
            .ok_or(ResponseError::Field("choices.index"))?,
    };
    let finish_reason = match choice.get("finish_reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(reason)) => Some(reason.clone()),
        Some(_) => return Err(ResponseError::Field("choices.finish_reason")),
    };
    let message = match choice.get("message") {
        None | Some(Value::Null) => None,
        Some(Value::Object(message)) => Some(message),
        Some(_) => return Err(ResponseError::Field("choices.message")),
    };
    let text = match message.and_then(|message| message.get("content")) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        Some(_) => return Err(ResponseError::Field("choices.message.content")),
    };
    let tool_calls = match message.and_then(|message| message.get("tool_calls")) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(calls)) => calls
            .iter()
            .map(answer_tool_call)
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(ResponseError::Field("choices.message.tool_calls")),
    };
    Ok(ChoiceFacts {
        index,
        finish_reason,
        text,
        tool_calls,
    })
}

fn answer_tool_call(call: &Value) -> Result<ToolCallFacts, ResponseError> {
    let function = call.get("function");
    let name = function.and_then(|f| f.get("name")).and_then(Value::as_str);
    let arguments = function
        .and_then(|f| f.get("arguments"))
        .and_then(Value::as_str);
    match (name, arguments) {
        (Some(name), Some(arguments)) => Ok(ToolCallFacts {
            name: name.to_owned(),
            arguments: arguments.to_owned(),
        }),
        _ => Err(ResponseError::Field("choices.message.tool_calls.function")),
    }
}

/// A usage object of an answer or a stream: the three counts, non-negative integers.
pub(crate) fn openai_usage(usage: &Map<String, Value>) -> Result<TokenUsage, ResponseError> {
    Ok(TokenUsage {
        prompt_tokens: count(usage, "prompt_tokens")?,
        completion_tokens: count(usage, "completion_tokens")?,
        total_tokens: count(usage, "total_tokens")?,
    })
}

fn count(usage: &Map<String, Value>, field: &'static str) -> Result<u64, ResponseError> {
    usage
        .get(field)
        .and_then(Value::as_u64)
        .ok_or(ResponseError::Field(field))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<ChatRequest, RequestError> {
        parse_chat_request(value.to_string().as_bytes())
    }

    #[test]
    fn a_plain_request_is_read() {
        let request = parse(json!({
            "model": "gpt-4",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"},
                                             {"type": "image_url", "image_url": {"url": "x"}}]}
            ],
            "max_tokens": 50, "temperature": 0.2, "tools": []
        }))
        .unwrap();

        assert_eq!(request.model, "gpt-4");
        assert_eq!(request.messages[1].text, "Hi");
        assert_eq!(request.messages[0].chars, 9);
        assert_eq!(request.max_tokens, Some(50));
    }

    #[test]
    fn each_malformed_body_names_its_field() {
        let cases = [
            (
                json!({"messages": [{"role": "user", "content": "x"}]}),
                "model",
            ),
            (
                json!({"model": 4, "messages": [{"role": "user", "content": "x"}]}),
                "model",
            ),
            (json!({"model": "gpt-4"}), "messages"),
            (json!({"model": "gpt-4", "messages": []}), "messages"),
            (json!({"model": "gpt-4", "messages": {}}), "messages"),
            (json!({"model": "gpt-4", "messages": ["hi"]}), "messages[0]"),
            (
                json!({"model": "gpt-4", "messages": [{"content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"model": "gpt-4", "messages": [{"role": "boss", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"model": "gpt-4", "messages": [{"role": "user"}]}),
                "messages[0].content",
            ),
            (
                json!({"model": "gpt-4", "messages": [{"role": "user", "content": 5}]}),
                "messages[0].content",
            ),
            (
                json!({"model": "gpt-4",
                       "messages": [{"role": "user", "content": [{"type": "text"}]}]}),
                "messages[0].content[0].text",
            ),
            (
                json!({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}),
                "max_tokens",
            ),
            (
                json!({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}),
                "stream",
            ),
        ];

        for (body, field) in cases {
            let error = parse(body.clone()).unwrap_err();
            assert_eq!(error.field(), Some(field), "{body}: {error}");
        }
    }

    #[test]
    fn not_json_and_not_an_object_are_told_apart() {
        assert!(matches!(
            parse_chat_request(b"{"),
            Err(RequestError::NotJson(_))
        ));
        assert!(matches!(
            parse_chat_request(b"\xff\xfe"),
            Err(RequestError::NotJson(_))
        ));
        assert_eq!(parse_chat_request(b"[1]"), Err(RequestError::NotObject));
    }

    #[test]
    fn a_stream_request_is_read_with_its_usage_option() {
        let request = parse(json!({"model": "gpt-4", "stream": true, "n": 2,
                                    "stream_options": {"include_usage": true},
                                    "response_format": {"type": "json_object"},
                                    "messages": [{"role": "user", "content": "x"}]}))
        .unwrap();

        assert!(request.stream);
        assert!(request.stream_include_usage);
        assert_eq!(request.n, Some(2));
        assert_eq!(request.response_format.as_deref(), Some("json_object"));
    }

    #[test]
    fn an_assistant_turn_with_only_tool_calls_is_valid() {
        let request = parse(json!({"model": "gpt-4", "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": []},
            {"role": "tool", "content": "sunny", "tool_call_id": "c1"}
        ]}));

        assert!(request.is_ok());
    }

    #[test]
    fn a_key_given_twice_is_refused_wherever_it_is() {
        let top = br#"{"model": "gpt-4", "model": "gpt-3.5-turbo", "messages": []}"#;
        let nested = br#"{"model": "gpt-4", "messages": [{"role": "user", "role": "system", "content": "x"}]}"#;

        for body in [top.as_slice(), nested.as_slice()] {
            let error = parse_chat_request(body).unwrap_err();
            assert!(error.to_string().contains("duplicate key"), "{error}");
        }
    }

    #[test]
    fn strict_parsing_reads_what_serde_json_reads() {
        let body = br#"{"a": [1, -2, 3.5, true, null, "x", {"b": {}}], "c": 18446744073709551615}"#;

        assert_eq!(
            parse_strict_json(body).unwrap(),
            serde_json::from_slice::<Value>(body).unwrap()
        );
        assert!(parse_strict_json(b"{} trailing").is_err());
        assert!(parse_strict_json(b"[1e400]").is_err());
    }

    #[test]
    fn deeply_nested_json_is_refused_not_overflowed() {
        let deep = "[".repeat(100_000);

        assert!(parse_chat_request(deep.as_bytes()).is_err());
    }

    #[test]
    fn a_provider_answer_gives_model_choices_and_usage() {
        let body = json!({"id": "c", "model": "gpt-4-0613", "choices": [{"index": 0}],
                          "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}});

        let response = parse_chat_response(body.to_string().as_bytes()).unwrap();

        assert_eq!(response.model, "gpt-4-0613");
        assert_eq!(response.usage.unwrap().total_tokens, 7);
    }

    #[test]
    fn a_malformed_provider_answer_is_refused() {
        assert_eq!(parse_chat_response(b"oops"), Err(ResponseError::NotJson));
        let negative = json!({"model": "m", "choices": [],
                              "usage": {"prompt_tokens": -1, "completion_tokens": 0, "total_tokens": 0}});
        assert_eq!(
            parse_chat_response(negative.to_string().as_bytes()),
            Err(ResponseError::Field("prompt_tokens"))
        );
        assert_eq!(
            parse_chat_response(br#"{"choices": []}"#),
            Err(ResponseError::Field("model"))
        );
    }
}
