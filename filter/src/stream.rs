//! Following a streamed answer (`stream: true`) without holding it back.
//!
//! A [`StreamFollower`] takes the provider's `text/event-stream` body chunk by chunk and
//! says what the client gets in place of each chunk: the chunk's complete events, as the
//! provider wrote them, less the ones the gateway hides (OpenAI's usage-only chunk when the
//! gateway asked for it and the client did not) and less the stream's closing event
//! (`data: [DONE]`, `message_stop`), which is held until the end so that the answer can
//! still be refused once it is whole. Only the one event that has not ended yet is held.
//!
//! Meanwhile it reads every event: it checks it (a chunk that is not JSON, a model that is
//! not named, usage that is not a non-negative integer stop the stream as malformed),
//! assembles the text and tool calls of each choice for the evidence and the response
//! policies, takes the token usage from the stream (OpenAI's usage chunk; Anthropic's
//! `message_start` and `message_delta`), and checks the assembled text against the
//! forbidden-content patterns before each chunk is let through.
//!
//! The follower decides nothing about the exchange: it reports faults, and
//! [`crate::exchange`] turns them into an error event and a record.

use std::collections::BTreeMap;

use mercator_evidence::TokenUsage;
use serde_json::{json, Map, Value};

use crate::forbidden::ForbiddenContent;
use crate::openai::{ChatResponse, ChoiceFacts, ResponseError, ToolCallFacts};
use crate::sse::{SseEvent, SseParser};

/// Which provider's streaming format the answer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// OpenAI: unnamed events of `chat.completion.chunk` objects, then `data: [DONE]`.
    OpenAi,
    /// Anthropic: named events from `message_start` to `message_stop`.
    Anthropic,
}

/// Why a stream must stop before its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamFault {
    /// An event the gateway cannot read or account for.
    Malformed(ResponseError),
    /// The assembled answer matched a forbidden-content pattern (its name).
    Forbidden(String),
    /// The stream grew past the configured limit (bytes).
    TooLarge(usize),
}

/// What the client gets in place of one chunk.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fed {
    /// The bytes to send on, in place of the chunk.
    pub forward: Vec<u8>,
    /// The stream must stop here; `forward` holds what may still go before the error.
    pub fault: Option<StreamFault>,
}

/// How a stream ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamEnd {
    /// The held closing event(s), to send on if the answer stands.
    pub closing: Vec<u8>,
    /// Whether the stream reached its closing event.
    pub complete: bool,
    /// Bytes of an event that the stream never finished.
    pub unfinished_bytes: usize,
    /// A fault that shows only at the end (no model named in the whole stream).
    pub fault: Option<StreamFault>,
}

/// The most choices, tool calls or content blocks one stream may index: far above what any
/// provider sends (OpenAI's `n` is at most 128), low enough to bound what is kept.
const MAX_INDEX: u64 = 1024;

/// One choice as assembled so far.
#[derive(Debug, Clone, Default)]
struct ChoiceAssembly {
    text: String,
    refusal: String,
    finish_reason: Option<String>,
    tool_calls: BTreeMap<u64, ToolCallAssembly>,
}

/// One tool call (OpenAI) or tool-use block (Anthropic) as assembled so far.
#[derive(Debug, Clone, Default)]
struct ToolCallAssembly {
    id: Option<String>,
    name: String,
    arguments: String,
}

/// One Anthropic content block as assembled so far.
#[derive(Debug, Clone)]
enum Block {
    Text(String),
    ToolUse(ToolCallAssembly),
    /// A block whose content the gateway does not read (thinking, server tools), kept as
    /// it started.
    Other(Value),
}

/// Anthropic's usage as reported so far; later reports replace the fields they carry.
#[derive(Debug, Clone, Copy, Default)]
struct AnthropicUsage {
    input: Option<u64>,
    cache_creation: Option<u64>,
    cache_read: Option<u64>,
    output: Option<u64>,
}

/// Follows one streamed answer.
#[derive(Debug, Clone)]
pub struct StreamFollower {
    format: StreamFormat,
    parser: SseParser,
    /// Drop OpenAI's usage-only chunk: the gateway asked for it, the client did not.
    hide_usage_chunk: bool,
    max_bytes: usize,
    bytes: usize,
    stopped: bool,
    complete: bool,
    closing: Vec<u8>,
    /// The provider's own error event, by its type, when it sent one.
    provider_error: Option<String>,
    id: Option<String>,
    model: Option<String>,
    created: Option<Value>,
    /// OpenAI: choices by index. Anthropic: choice 0 only, built from `blocks` at the end.
    choices: BTreeMap<u64, ChoiceAssembly>,
    blocks: BTreeMap<u64, Block>,
    openai_usage: Option<TokenUsage>,
    anthropic_usage: AnthropicUsage,
    stop_sequence: Option<Value>,
}

impl StreamFollower {
    /// A follower for one answer in `format`. `hide_usage_chunk` drops OpenAI's usage-only
    /// chunk from what the client gets; `max_bytes` bounds the whole stream.
    pub fn new(format: StreamFormat, hide_usage_chunk: bool, max_bytes: usize) -> Self {
        Self {
            format,
            parser: SseParser::new(max_bytes),
            hide_usage_chunk,
            max_bytes,
            bytes: 0,
            stopped: false,
            complete: false,
            closing: Vec::new(),
            provider_error: None,
            id: None,
            model: None,
            created: None,
            choices: BTreeMap::new(),
            blocks: BTreeMap::new(),
            openai_usage: None,
            anthropic_usage: AnthropicUsage::default(),
            stop_sequence: None,
        }
    }

    /// Takes the next chunk of the body (`last` when the body ends with it) and says what
    /// goes on in its place.
    pub fn feed(&mut self, chunk: &[u8], last: bool, forbidden: &ForbiddenContent) -> Fed {
        if self.stopped {
            return Fed::default();
        }
        self.bytes = self.bytes.saturating_add(chunk.len());
        if self.bytes > self.max_bytes {
            return self.stop(Vec::new(), StreamFault::TooLarge(self.max_bytes));
        }
        let events = match self.parser.feed(chunk, last) {
            Ok(events) => events,
            Err(_) => {
                let error = ResponseError::Stream("has an event longer than the response limit");
                return self.stop(Vec::new(), StreamFault::Malformed(error));
            }
        };

        let mut forward = Vec::new();
        let mut text_changed = false;
        for event in events {
            if self.complete {
                // Whatever follows the closing event waits with it.
                self.closing.extend_from_slice(&event.raw);
                continue;
            }
            let read = match self.format {
                StreamFormat::OpenAi => self.read_openai(&event),
                StreamFormat::Anthropic => self.read_anthropic(&event),
            };
            match read {
                Ok(Disposition::Forward { text }) => {
                    text_changed |= text;
                    forward.extend_from_slice(&event.raw);
                }
                Ok(Disposition::Hide) => {}
                Ok(Disposition::Closing) => {
                    self.complete = true;
                    self.closing.extend_from_slice(&event.raw);
                }
                Err(error) => {
                    // What went before the bad event may go, unless it is itself forbidden.
                    if let Some(name) = self.forbidden_match(forbidden) {
                        return self.stop(Vec::new(), StreamFault::Forbidden(name));
                    }
                    return self.stop(forward, StreamFault::Malformed(error));
                }
            }
        }

        if text_changed {
            if let Some(name) = self.forbidden_match(forbidden) {
                // The chunk that completed the match is withheld whole.
                return self.stop(Vec::new(), StreamFault::Forbidden(name));
            }
        }
        Fed {
            forward,
            fault: None,
        }
    }

    /// The body has ended: what was held, and whether the stream was whole.
    pub fn finish(&mut self) -> StreamEnd {
        let unfinished_bytes = self.parser.finish().map_or(0, |rest| rest.len());
        if self.stopped {
            return StreamEnd::default();
        }
        let fault = (self.complete && self.model.is_none()).then_some(StreamFault::Malformed(
            ResponseError::Stream("never named the model"),
        ));
        StreamEnd {
            closing: std::mem::take(&mut self.closing),
            complete: self.complete,
            unfinished_bytes,
            fault,
        }
    }

    /// The type of the provider's own error event, if the stream carried one.
    pub fn provider_error(&self) -> Option<&str> {
        self.provider_error.as_deref()
    }

    /// Bytes of the stream received so far.
    pub fn bytes_received(&self) -> usize {
        self.bytes
    }

    /// Token usage as the stream reported it so far.
    pub fn usage(&self) -> Option<TokenUsage> {
        match self.format {
            StreamFormat::OpenAi => self.openai_usage,
            StreamFormat::Anthropic => {
                let usage = self.anthropic_usage;
                if usage.input.is_none() && usage.output.is_none() {
                    return None;
                }
                let prompt = usage
                    .input
                    .unwrap_or(0)
                    .saturating_add(usage.cache_creation.unwrap_or(0))
                    .saturating_add(usage.cache_read.unwrap_or(0));
                let completion = usage.output.unwrap_or(0);
                Some(TokenUsage {
                    prompt_tokens: prompt,
                    completion_tokens: completion,
                    total_tokens: prompt.saturating_add(completion),
                })
            }
        }
    }

    /// The answer assembled so far, as response policies and forbidden patterns see it.
    pub fn answer(&self) -> ChatResponse {
        let choices = match self.format {
            StreamFormat::OpenAi => self
                .choices
                .iter()
                .map(|(index, choice)| ChoiceFacts {
                    index: *index,
                    finish_reason: choice.finish_reason.clone(),
                    text: choice.text.clone(),
                    tool_calls: choice.tool_calls.values().map(tool_call_facts).collect(),
                })
                .collect(),
            StreamFormat::Anthropic => {
                let mut texts = Vec::new();
                let mut tool_calls = Vec::new();
                for block in self.blocks.values() {
                    match block {
                        Block::Text(text) => texts.push(text.as_str()),
                        Block::ToolUse(call) => tool_calls.push(tool_call_facts(call)),
                        Block::Other(_) => {}
                    }
                }
                let finish_reason = self
                    .choices
                    .get(&0)
                    .and_then(|choice| choice.finish_reason.clone());
                vec![ChoiceFacts {
                    index: 0,
                    finish_reason,
                    text: texts.join("\n"),
                    tool_calls,
                }]
            }
        };
        ChatResponse {
            model: self.model.clone().unwrap_or_default(),
            choices,
            usage: self.usage(),
        }
    }

    /// The assembled answer in the API's non-streaming shape (a `chat.completion` or a
    /// `message`), for the evidence.
    pub fn assembled_body(&self) -> Value {
        match self.format {
            StreamFormat::OpenAi => self.openai_body(),
            StreamFormat::Anthropic => self.anthropic_body(),
        }
    }

    fn stop(&mut self, forward: Vec<u8>, fault: StreamFault) -> Fed {
        self.stopped = true;
        Fed {
            forward,
            fault: Some(fault),
        }
    }

    /// The first forbidden pattern that the answer so far matches: each choice's text and
    /// each tool call's arguments (Anthropic: each text block and each tool input), read
    /// in place.
    fn forbidden_match(&self, forbidden: &ForbiddenContent) -> Option<String> {
        if forbidden.is_empty() {
            return None;
        }
        let openai = self.choices.values().flat_map(|choice| {
            std::iter::once(choice.text.as_str()).chain(
                choice
                    .tool_calls
                    .values()
                    .map(|call| call.arguments.as_str()),
            )
        });
        let anthropic = self.blocks.values().filter_map(|block| match block {
            Block::Text(text) => Some(text.as_str()),
            Block::ToolUse(call) => Some(call.arguments.as_str()),
            Block::Other(_) => None,
        });
        forbidden
            .first_match(openai.chain(anthropic))
            .map(str::to_owned)
    }

    fn read_openai(&mut self, event: &SseEvent) -> Result<Disposition, ResponseError> {
        let Some(data) = &event.data else {
            return Ok(Disposition::Forward { text: false });
        };
        if data.as_slice() == b"[DONE]" {
            return Ok(Disposition::Closing);
        }
        let chunk = json_object(data)?;
        if let Some(error) = chunk.get("error").filter(|error| !error.is_null()) {
            self.provider_error = Some(error_type(error));
            return Ok(Disposition::Forward { text: false });
        }

        match chunk.get("model") {
            Some(Value::String(model)) if !model.is_empty() => self.model = Some(model.clone()),
            // Some OpenAI-compatible services send a first chunk with an empty model.
            Some(Value::String(_)) => {}
            _ => return Err(ResponseError::Field("model")),
        }
        if self.id.is_none() {
            self.id = chunk.get("id").and_then(Value::as_str).map(str::to_owned);
            self.created = chunk.get("created").cloned();
        }
        let Some(Value::Array(choices)) = chunk.get("choices") else {
            return Err(ResponseError::Field("choices"));
        };
        let mut text = false;
        for (position, choice) in choices.iter().enumerate() {
            text |= self.read_openai_choice(position, choice)?;
        }

        let usage = match chunk.get("usage") {
            None | Some(Value::Null) => None,
            Some(Value::Object(usage)) => Some(crate::openai::openai_usage(usage)?),
            Some(_) => return Err(ResponseError::Field("usage")),
        };
        if let Some(usage) = usage {
            self.openai_usage = Some(usage);
            if self.hide_usage_chunk && choices.is_empty() {
                return Ok(Disposition::Hide);
            }
        }
        Ok(Disposition::Forward { text })
    }

    /// Adds one choice's delta; true when it added text or tool-call arguments.
    fn read_openai_choice(
        &mut self,
        position: usize,
        choice: &Value,
    ) -> Result<bool, ResponseError> {
        let Value::Object(choice) = choice else {
            return Err(ResponseError::Field("choices"));
        };
        let index = match choice.get("index") {
            None | Some(Value::Null) => position as u64,
            Some(index) => index
                .as_u64()
                .filter(|index| *index < MAX_INDEX)
                .ok_or(ResponseError::Field("choices.index"))?,
        };
        let finish_reason = optional_string(choice, "finish_reason", "choices.finish_reason")?;
        let delta = match choice.get("delta") {
            None | Some(Value::Null) => None,
            Some(Value::Object(delta)) => Some(delta),
            Some(_) => return Err(ResponseError::Field("choices.delta")),
        };
        let content = match delta {
            Some(delta) => optional_string(delta, "content", "choices.delta.content")?,
            None => None,
        };
        let refusal = match delta {
            Some(delta) => optional_string(delta, "refusal", "choices.delta.refusal")?,
            None => None,
        };
        let calls = match delta.and_then(|delta| delta.get("tool_calls")) {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(calls)) => calls.as_slice(),
            Some(_) => return Err(ResponseError::Field("choices.delta.tool_calls")),
        };

        let assembly = self.choices.entry(index).or_default();
        let mut text = false;
        if let Some(content) = content {
            text |= !content.is_empty();
            assembly.text.push_str(&content);
        }
        if let Some(refusal) = refusal {
            assembly.refusal.push_str(&refusal);
        }
        if finish_reason.is_some() {
            assembly.finish_reason = finish_reason;
        }
        for (position, call) in calls.iter().enumerate() {
            let Value::Object(call) = call else {
                return Err(ResponseError::Field("choices.delta.tool_calls"));
            };
            let call_index = match call.get("index") {
                None | Some(Value::Null) => position as u64,
                Some(index) => index
                    .as_u64()
                    .filter(|index| *index < MAX_INDEX)
                    .ok_or(ResponseError::Field("choices.delta.tool_calls.index"))?,
            };
            let id = optional_string(call, "id", "choices.delta.tool_calls.id")?;
            let function = match call.get("function") {
                None | Some(Value::Null) => None,
                Some(Value::Object(function)) => Some(function),
                Some(_) => return Err(ResponseError::Field("choices.delta.tool_calls.function")),
            };
            let field = "choices.delta.tool_calls.function";
            let name = match function {
                Some(function) => optional_string(function, "name", field)?,
                None => None,
            };
            let arguments = match function {
                Some(function) => optional_string(function, "arguments", field)?,
                None => None,
            };
            let tool = assembly.tool_calls.entry(call_index).or_default();
            if id.is_some() {
                tool.id = id;
            }
            if let Some(name) = name {
                tool.name.push_str(&name);
            }
            if let Some(arguments) = arguments {
                text |= !arguments.is_empty();
                tool.arguments.push_str(&arguments);
            }
        }
        Ok(text)
    }

    fn read_anthropic(&mut self, event: &SseEvent) -> Result<Disposition, ResponseError> {
        let Some(data) = &event.data else {
            return Ok(Disposition::Forward { text: false });
        };
        let object = json_object(data)?;
        let kind = match object.get("type") {
            Some(Value::String(kind)) => kind.as_str(),
            _ => return Err(ResponseError::Field("type")),
        };

        match kind {
            "message_start" => {
                let Some(Value::Object(message)) = object.get("message") else {
                    return Err(ResponseError::Field("message_start.message"));
                };
                match message.get("model") {
                    Some(Value::String(model)) if !model.is_empty() => {
                        self.model = Some(model.clone());
                    }
                    _ => return Err(ResponseError::Field("model")),
                }
                self.id = message.get("id").and_then(Value::as_str).map(str::to_owned);
                match message.get("usage") {
                    None | Some(Value::Null) => {}
                    Some(Value::Object(usage)) => self.read_anthropic_usage(usage, true)?,
                    Some(_) => return Err(ResponseError::Field("usage")),
                }
                Ok(Disposition::Forward { text: false })
            }
            "content_block_start" => {
                let index = block_index(&object)?;
                let block = match object.get("content_block") {
                    Some(Value::Object(block)) => block,
                    _ => return Err(ResponseError::Field("content_block_start.content_block")),
                };
                let started = match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let text = optional_string(block, "text", "content_block.text")?;
                        Block::Text(text.unwrap_or_default())
                    }
                    Some("tool_use") => {
                        let name = optional_string(block, "name", "content_block.name")?;
                        let id = optional_string(block, "id", "content_block.id")?;
                        Block::ToolUse(ToolCallAssembly {
                            id,
                            name: name.ok_or(ResponseError::Field("content_block.name"))?,
                            arguments: String::new(),
                        })
                    }
                    Some(_) => Block::Other(Value::Object(block.clone())),
                    None => return Err(ResponseError::Field("content_block.type")),
                };
                let text = matches!(&started, Block::Text(text) if !text.is_empty());
                self.blocks.insert(index, started);
                Ok(Disposition::Forward { text })
            }
            "content_block_delta" => {
                let index = block_index(&object)?;
                let delta = match object.get("delta") {
                    Some(Value::Object(delta)) => delta,
                    _ => return Err(ResponseError::Field("content_block_delta.delta")),
                };
                let Some(block) = self.blocks.get_mut(&index) else {
                    return Err(ResponseError::Stream(
                        "sent a delta for a block it never started",
                    ));
                };
                let text = match (delta.get("type").and_then(Value::as_str), block) {
                    (Some("text_delta"), Block::Text(text)) => {
                        let piece = optional_string(delta, "text", "delta.text")?
                            .ok_or(ResponseError::Field("delta.text"))?;
                        text.push_str(&piece);
                        !piece.is_empty()
                    }
                    (Some("input_json_delta"), Block::ToolUse(call)) => {
                        let piece = optional_string(delta, "partial_json", "delta.partial_json")?
                            .ok_or(ResponseError::Field("delta.partial_json"))?;
                        call.arguments.push_str(&piece);
                        !piece.is_empty()
                    }
                    (Some("text_delta" | "input_json_delta"), _) => {
                        return Err(ResponseError::Stream(
                            "sent a delta that does not fit its block",
                        ))
                    }
                    // Thinking, signatures, citations: not part of the answer's text.
                    (Some(_), _) => false,
                    (None, _) => return Err(ResponseError::Field("delta.type")),
                };
                Ok(Disposition::Forward { text })
            }
            "message_delta" => {
                if let Some(Value::Object(delta)) = object.get("delta") {
                    let reason = optional_string(delta, "stop_reason", "delta.stop_reason")?;
                    if reason.is_some() {
                        self.choices.entry(0).or_default().finish_reason = reason;
                    }
                    if let Some(sequence) = delta.get("stop_sequence") {
                        self.stop_sequence = Some(sequence.clone());
                    }
                }
                match object.get("usage") {
                    None | Some(Value::Null) => {}
                    Some(Value::Object(usage)) => self.read_anthropic_usage(usage, false)?,
                    Some(_) => return Err(ResponseError::Field("usage")),
                }
                Ok(Disposition::Forward { text: false })
            }
            "message_stop" => Ok(Disposition::Closing),
            "error" => {
                let error = object.get("error").cloned().unwrap_or(Value::Null);
                self.provider_error = Some(error_type(&error));
                Ok(Disposition::Forward { text: false })
            }
            // `ping`, `content_block_stop`, and event types added after this was written.
            _ => Ok(Disposition::Forward { text: false }),
        }
    }

    /// `message_start` must report the input tokens; `message_delta` the output tokens.
    /// Later reports replace what they carry.
    fn read_anthropic_usage(
        &mut self,
        usage: &Map<String, Value>,
        at_start: bool,
    ) -> Result<(), ResponseError> {
        let count = |field: &'static str| match usage.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value.as_u64().map(Some).ok_or(ResponseError::Field(field)),
        };
        let input = count("input_tokens")?;
        let output = count("output_tokens")?;
        let cache_creation = count("cache_creation_input_tokens")?;
        let cache_read = count("cache_read_input_tokens")?;
        if at_start && input.is_none() {
            return Err(ResponseError::Field("input_tokens"));
        }
        if !at_start && output.is_none() {
            return Err(ResponseError::Field("output_tokens"));
        }
        let known = &mut self.anthropic_usage;
        for (slot, value) in [
            (&mut known.input, input),
            (&mut known.output, output),
            (&mut known.cache_creation, cache_creation),
            (&mut known.cache_read, cache_read),
        ] {
            if value.is_some() {
                *slot = value;
            }
        }
        Ok(())
    }

    fn openai_body(&self) -> Value {
        let choices: Vec<Value> = self
            .choices
            .iter()
            .map(|(index, choice)| {
                let mut message = json!({
                    "role": "assistant",
                    "content": (!choice.text.is_empty() || choice.tool_calls.is_empty())
                        .then_some(choice.text.as_str()),
                    "refusal": (!choice.refusal.is_empty()).then_some(choice.refusal.as_str()),
                });
                if !choice.tool_calls.is_empty() {
                    let calls: Vec<Value> = choice
                        .tool_calls
                        .values()
                        .map(|call| {
                            json!({"id": call.id, "type": "function",
                                   "function": {"name": call.name, "arguments": call.arguments}})
                        })
                        .collect();
                    if let Some(object) = message.as_object_mut() {
                        object.insert("tool_calls".to_owned(), Value::Array(calls));
                    }
                }
                json!({"index": index, "message": message, "finish_reason": choice.finish_reason})
            })
            .collect();
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": self.openai_usage,
        })
    }

    fn anthropic_body(&self) -> Value {
        let content: Vec<Value> = self
            .blocks
            .values()
            .map(|block| match block {
                Block::Text(text) => json!({"type": "text", "text": text}),
                Block::ToolUse(call) => {
                    // The arguments arrive as pieces of JSON text; a stream cut short
                    // leaves text that is not JSON, kept as it is.
                    let input = serde_json::from_str::<Value>(&call.arguments)
                        .unwrap_or_else(|_| Value::String(call.arguments.clone()));
                    json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input})
                }
                Block::Other(started) => started.clone(),
            })
            .collect();
        let usage = self.anthropic_usage;
        let usage = (usage.input.is_some() || usage.output.is_some()).then(|| {
            json!({
                "input_tokens": usage.input,
                "output_tokens": usage.output,
                "cache_creation_input_tokens": usage.cache_creation,
                "cache_read_input_tokens": usage.cache_read,
            })
        });
        json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": self.choices.get(&0).and_then(|choice| choice.finish_reason.clone()),
            "stop_sequence": self.stop_sequence,
            "usage": usage,
        })
    }
}

/// What happens to one event.
enum Disposition {
    /// It goes to the client; `text` says whether it added to the answer's text.
    Forward { text: bool },
    /// It is the usage chunk the client did not ask for.
    Hide,
    /// It closes the stream; held until the end.
    Closing,
}

fn json_object(data: &[u8]) -> Result<Map<String, Value>, ResponseError> {
    match serde_json::from_slice::<Value>(data) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(ResponseError::Stream(
            "has an event whose data is not a JSON object",
        )),
    }
}

/// A string field that may be absent or `null`; any other type is malformed.
fn optional_string(
    object: &Map<String, Value>,
    field: &str,
    name: &'static str,
) -> Result<Option<String>, ResponseError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(ResponseError::Field(name)),
    }
}

fn block_index(object: &Map<String, Value>) -> Result<u64, ResponseError> {
    object
        .get("index")
        .and_then(Value::as_u64)
        .filter(|index| *index < MAX_INDEX)
        .ok_or(ResponseError::Field("index"))
}

/// A provider error object's `type` (or `code`), for the record.
fn error_type(error: &Value) -> String {
    ["type", "code"]
        .iter()
        .find_map(|field| error.get(*field).and_then(Value::as_str))
        .unwrap_or("unknown")
        .to_owned()
}

fn tool_call_facts(call: &ToolCallAssembly) -> ToolCallFacts {
    ToolCallFacts {
        name: call.name.clone(),
        arguments: call.arguments.clone(),
    }
}

#[cfg(test)]
mod tests;
