//! The configured limits on a valid request: which models, how many messages, how much
//! text, how many tokens. Checked after validation and before the policies, so a request
//! over a limit never costs a policy evaluation and never reaches the provider.

use crate::config::Limits;
use crate::openai::ChatRequest;

/// A request over a configured limit, with the field at fault in the caller's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitViolation {
    /// The field (`messages[3]`, `max_tokens`, `model`).
    pub field: String,
    /// The stable error code (`model_not_allowed`, `too_many_messages`, `content_too_large`,
    /// `max_tokens_too_large`).
    pub code: &'static str,
    /// 400, or 413 for content over a size limit.
    pub status: u16,
    /// The sentence for the caller.
    pub message: String,
}

/// Checks `chat`, bound for `provider`, against `limits`; the first violation found.
pub fn check_request(
    chat: &ChatRequest,
    provider: &str,
    limits: &Limits,
) -> Result<(), LimitViolation> {
    if let Some(allowed) = limits.allowed_models.get(provider) {
        if !allowed
            .iter()
            .any(|entry| model_matches(entry, &chat.model))
        {
            return Err(LimitViolation {
                field: "model".to_owned(),
                code: "model_not_allowed",
                status: 400,
                message: format!(
                    "The model `{}` is not available through this gateway for {provider}.",
                    chat.model
                ),
            });
        }
    }

    if chat.messages.len() > limits.max_messages {
        return Err(LimitViolation {
            field: "messages".to_owned(),
            code: "too_many_messages",
            status: 400,
            message: format!(
                "The request has {} messages; this gateway accepts at most {}.",
                chat.messages.len(),
                limits.max_messages
            ),
        });
    }

    let mut total: usize = 0;
    for message in &chat.messages {
        if message.chars > limits.max_message_chars {
            return Err(LimitViolation {
                field: message.source.clone(),
                code: "content_too_large",
                status: 413,
                message: format!(
                    "`{}` has {} characters of text; this gateway accepts at most {} per message.",
                    message.source, message.chars, limits.max_message_chars
                ),
            });
        }
        total = total.saturating_add(message.chars);
    }
    if total > limits.max_prompt_chars {
        return Err(LimitViolation {
            field: "messages".to_owned(),
            code: "content_too_large",
            status: 413,
            message: format!(
                "The messages have {total} characters of text in all; this gateway accepts at \
                 most {}.",
                limits.max_prompt_chars
            ),
        });
    }

    if let Some(ceiling) = limits.max_tokens {
        for field in ["max_tokens", "max_completion_tokens"] {
            let asked = chat.body.get(field).and_then(serde_json::Value::as_u64);
            if let Some(asked) = asked.filter(|asked| *asked > ceiling) {
                return Err(LimitViolation {
                    field: field.to_owned(),
                    code: "max_tokens_too_large",
                    status: 400,
                    message: format!(
                        "`{field}` is {asked}; this gateway accepts at most {ceiling}."
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Whether `model` is the configured `entry`, or starts with it when it ends in `*`.
fn model_matches(entry: &str, model: &str) -> bool {
    match entry.strip_suffix('*') {
        Some(prefix) => model.starts_with(prefix),
        None => entry == model,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anthropic::parse_messages_request;
    use crate::openai::parse_chat_request;
    use serde_json::json;

    fn limits() -> Limits {
        let mut limits = Limits {
            max_messages: 3,
            max_message_chars: 10,
            max_prompt_chars: 15,
            max_tokens: Some(100),
            ..Limits::default()
        };
        limits.allowed_models.insert(
            "openai".to_owned(),
            vec!["gpt-4o*".to_owned(), "gpt-4".to_owned()],
        );
        limits
    }

    fn check(body: serde_json::Value) -> Result<(), LimitViolation> {
        let chat = parse_chat_request(body.to_string().as_bytes()).unwrap();
        check_request(&chat, "openai", &limits())
    }

    #[test]
    fn a_request_within_every_limit_passes() {
        let ok = json!({"model": "gpt-4o-2024-08-06", "max_tokens": 100,
                        "messages": [{"role": "user", "content": "0123456789"}]});

        assert_eq!(check(ok), Ok(()));
    }

    #[test]
    fn each_limit_names_its_field_code_and_status() {
        let user = |text: &str| json!({"role": "user", "content": text});
        let cases = [
            (
                json!({"model": "gpt-4-turbo", "messages": [user("x")]}),
                ("model", "model_not_allowed", 400),
            ),
            (
                json!({"model": "gpt-4", "messages": [user("a"), user("b"), user("c"), user("d")]}),
                ("messages", "too_many_messages", 400),
            ),
            (
                json!({"model": "gpt-4", "messages": [user("a"), user("0123456789x")]}),
                ("messages[1]", "content_too_large", 413),
            ),
            (
                json!({"model": "gpt-4", "messages": [user("0123456789"), user("0123456")]}),
                ("messages", "content_too_large", 413),
            ),
            (
                json!({"model": "gpt-4", "max_completion_tokens": 101, "messages": [user("x")]}),
                ("max_completion_tokens", "max_tokens_too_large", 400),
            ),
        ];

        for (body, (field, code, status)) in cases {
            let violation = check(body.clone()).unwrap_err();
            assert_eq!(
                (violation.field.as_str(), violation.code, violation.status),
                (field, code, status),
                "{body}"
            );
        }
    }

    #[test]
    fn a_provider_without_a_model_list_takes_any_model_and_system_is_named() {
        let body = json!({"model": "claude-anything", "max_tokens": 5,
                          "system": "a very long system prompt",
                          "messages": [{"role": "user", "content": "x"}]});
        let chat = parse_messages_request(body.to_string().as_bytes()).unwrap();

        let violation = check_request(&chat, "anthropic", &limits()).unwrap_err();

        assert_eq!(violation.field, "system");
    }
}
