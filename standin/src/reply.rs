//! The deterministic reply and the token estimates that both dialects share.
//!
//! The stand-in runs no model and no tokenizer. Its counts are estimates that tests can
//! recompute by hand: a text of `c` characters is `ceil(c / 4)` tokens, and every prompt
//! message (the Anthropic `system` prompt included) adds 3 tokens of overhead.

use serde_json::{json, Map, Value};

/// The start of every text reply.
pub const REPLY_PREFIX: &str = "Stand-in reply to: ";

/// How many characters of the last user message the reply repeats.
pub const ECHOED_CHARS: usize = 80;

/// Tokens that every prompt message adds on top of its text.
pub const PER_MESSAGE_TOKENS: u64 = 3;

/// Characters per streamed text delta.
pub const DELTA_CHARS: usize = 6;

/// The text of every reply: the prefix and the start of the last user message.
pub fn reply_text(last_user_text: &str) -> String {
    let echoed: String = last_user_text.chars().take(ECHOED_CHARS).collect();
    format!("{REPLY_PREFIX}{echoed}")
}

/// The estimated token count of a text: a quarter of its characters, rounded up.
pub fn estimate_tokens(text: &str) -> u64 {
    u64::try_from(text.chars().count())
        .unwrap_or(u64::MAX)
        .div_ceil(4)
}

/// The estimated prompt tokens of messages given by their texts.
pub fn prompt_tokens<'a>(message_texts: impl IntoIterator<Item = &'a str>) -> u64 {
    message_texts
        .into_iter()
        .map(|text| estimate_tokens(text) + PER_MESSAGE_TOKENS)
        .sum()
}

/// Cuts a reply to at most `max_tokens` estimated tokens; `true` when something was cut.
pub fn limit_to_tokens(text: String, max_tokens: Option<u64>) -> (String, bool) {
    let Some(max_tokens) = max_tokens else {
        return (text, false);
    };
    if estimate_tokens(&text) <= max_tokens {
        return (text, false);
    }
    let max_chars = usize::try_from(max_tokens.saturating_mul(4)).unwrap_or(usize::MAX);
    (text.chars().take(max_chars).collect(), true)
}

/// Splits a text into pieces of a few characters, as a streaming provider sends it.
pub fn delta_pieces(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(DELTA_CHARS)
        .map(|piece| piece.iter().collect())
        .collect()
}

/// Whether a message asks the model to call a tool.
pub fn asks_for_a_tool(text: &str) -> bool {
    text.to_lowercase().contains("use a tool")
}

/// Tool arguments that fit a JSON schema's top-level properties, one plain value per type.
pub fn arguments_for_schema(schema: Option<&Value>) -> Value {
    let mut arguments = Map::new();
    let properties = schema
        .and_then(|schema| schema.get("properties"))
        .and_then(Value::as_object);

    for (name, property) in properties.into_iter().flatten() {
        let value = match property.get("type").and_then(Value::as_str) {
            Some("string") => json!("stand-in"),
            Some("integer" | "number") => json!(1),
            Some("boolean") => json!(true),
            Some("array") => json!([]),
            Some("object") => json!({}),
            _ => Value::Null,
        };
        arguments.insert(name.clone(), value);
    }
    Value::Object(arguments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_a_quarter_of_the_characters_rounded_up() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        assert_eq!(estimate_tokens("éééé"), 1);
    }

    #[test]
    fn prompt_tokens_add_three_per_message() {
        assert_eq!(prompt_tokens(["abcd", ""]), 1 + 3 + 3);
    }

    #[test]
    fn reply_echoes_at_most_eighty_characters() {
        let long = "x".repeat(200);
        assert_eq!(
            reply_text(&long).chars().count(),
            REPLY_PREFIX.len() + ECHOED_CHARS
        );
    }

    #[test]
    fn limiting_cuts_on_character_boundaries() {
        let (text, cut) = limit_to_tokens("ééééééééé".to_owned(), Some(1));
        assert_eq!(text, "éééé");
        assert!(cut);
    }

    #[test]
    fn pieces_join_back_to_the_text() {
        let text = "Stand-in reply to: héllo wörld";
        assert_eq!(delta_pieces(text).concat(), text);
    }

    #[test]
    fn arguments_follow_the_schema_types() {
        let schema = json!({"type": "object", "properties": {
            "city": {"type": "string"}, "days": {"type": "integer"}
        }});
        assert_eq!(
            arguments_for_schema(Some(&schema)),
            json!({"city": "stand-in", "days": 1})
        );
        assert_eq!(arguments_for_schema(None), json!({}));
    }
}
