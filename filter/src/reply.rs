//! The answers the gateway gives itself: one enum of refusals, mapped in one place to a
//! status code and a body in the caller's API shape.

use mercator_evidence::{AuthResult, GatewayError};
use serde_json::json;

use crate::limits::LimitViolation;
use crate::openai::RequestError;

/// Every way the gateway can refuse or fail a request itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// No credential, or one that does not identify an enabled, unexpired key.
    Unauthenticated {
        /// Why.
        result: AuthResult,
        /// The sentence for the caller.
        message: &'static str,
    },
    /// The path is not an API the gateway governs.
    UnknownEndpoint {
        /// The path asked for.
        path: String,
    },
    /// The method is not allowed on the path.
    MethodNotAllowed {
        /// The method used.
        method: String,
    },
    /// The body is over the configured limit.
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body is malformed.
    InvalidRequest(RequestError),
    /// The request is valid but over a configured limit.
    OverLimit(LimitViolation),
    /// A policy denied the request, or could not decide.
    PolicyDenied {
        /// The reasons, joined for the caller.
        reasons: Vec<String>,
    },
    /// A response-phase policy refused the provider's answer; the caller gets this instead.
    ResponseDenied {
        /// The reasons, joined for the caller.
        reasons: Vec<String>,
    },
    /// The provider's answer matched a forbidden-content pattern.
    ForbiddenContent {
        /// The pattern's configured name.
        name: String,
    },
    /// The provider's stream ended before its final event.
    IncompleteStream {
        /// How it ended.
        detail: String,
    },
    /// The provider's answer could not be read or checked.
    BadProviderResponse {
        /// What is wrong with it.
        detail: String,
    },
    /// Evidence cannot be recorded (the backlog to the sink is full); fail closed.
    EvidenceUnavailable,
    /// The gateway itself failed (no entropy, a record that would not sign).
    Internal,
}

/// The error body shape of the API the caller used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorShape {
    /// `{"error": {"message", "type", "param", "code"}}`.
    #[default]
    OpenAi,
    /// `{"type": "error", "error": {"type", "message"}}`, with the gateway's `code` beside.
    Anthropic,
}

/// A complete local reply, ready for the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    /// HTTP status.
    pub status: u16,
    /// Headers besides `content-type`.
    pub headers: Vec<(String, String)>,
    /// The JSON body.
    pub body: Vec<u8>,
}

impl Refusal {
    /// Status, OpenAI error `type`, stable `code`, and `param`.
    fn parts(&self) -> (u16, &'static str, &'static str, Option<String>) {
        match self {
            Self::Unauthenticated { result, .. } => {
                let code = match result {
                    AuthResult::Missing => "missing_api_key",
                    AuthResult::Malformed => "malformed_api_key",
                    AuthResult::Disabled => "api_key_disabled",
                    AuthResult::Expired => "api_key_expired",
                    AuthResult::CertificateMissing => "client_certificate_required",
                    AuthResult::UnknownCertificate => "unknown_client_certificate",
                    AuthResult::IdentityMismatch => "identity_mismatch",
                    AuthResult::UnknownKey | AuthResult::Authenticated => "invalid_api_key",
                };
                (401, "invalid_request_error", code, None)
            }
            Self::UnknownEndpoint { .. } => {
                (404, "invalid_request_error", "unknown_endpoint", None)
            }
            Self::MethodNotAllowed { .. } => {
                (405, "invalid_request_error", "method_not_allowed", None)
            }
            Self::TooLarge { .. } => (413, "invalid_request_error", "request_too_large", None),
            Self::InvalidRequest(error) => {
                let code = match error {
                    RequestError::Unsupported { .. } => "unsupported_parameter",
                    _ => "invalid_request",
                };
                (
                    400,
                    "invalid_request_error",
                    code,
                    error.field().map(str::to_owned),
                )
            }
            Self::OverLimit(violation) => (
                violation.status,
                "invalid_request_error",
                violation.code,
                Some(violation.field.clone()),
            ),
            Self::PolicyDenied { .. } => (403, "permission_error", "policy_denied", None),
            Self::ForbiddenContent { .. } => (403, "permission_error", "forbidden_content", None),
            Self::IncompleteStream { .. } => (502, "api_error", "incomplete_stream", None),
            Self::ResponseDenied { .. } => {
                (403, "permission_error", "response_policy_denied", None)
            }
            Self::BadProviderResponse { .. } => (502, "api_error", "bad_provider_response", None),
            Self::EvidenceUnavailable => (503, "api_error", "evidence_unavailable", None),
            Self::Internal => (500, "api_error", "internal_error", None),
        }
    }

    /// The sentence the caller reads.
    pub fn message(&self) -> String {
        match self {
            Self::Unauthenticated { message, .. } => (*message).to_owned(),
            Self::UnknownEndpoint { path } => {
                format!("The gateway does not serve `{path}`; use POST /v1/chat/completions or POST /v1/messages.")
            }
            Self::MethodNotAllowed { method } => {
                format!("Method {method} is not allowed here; use POST.")
            }
            Self::TooLarge { limit } => format!("The request body is larger than {limit} bytes."),
            Self::InvalidRequest(error) => error.to_string(),
            Self::OverLimit(violation) => violation.message.clone(),
            Self::ForbiddenContent { name } => format!(
                "The provider's answer was withheld: it matched the forbidden-content pattern \
                 `{name}`."
            ),
            Self::IncompleteStream { detail } => {
                format!("The provider's stream ended before it was complete: {detail}.")
            }
            Self::PolicyDenied { reasons } => reasons.join("; "),
            Self::ResponseDenied { reasons } => format!(
                "The provider's answer was withheld by policy: {}",
                reasons.join("; ")
            ),
            Self::BadProviderResponse { detail } => {
                format!("The provider's answer was refused by the gateway: {detail}.")
            }
            Self::EvidenceUnavailable => {
                "The gateway cannot record evidence right now, so it serves no request; retry later."
                    .to_owned()
            }
            Self::Internal => "The gateway failed to process the request.".to_owned(),
        }
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.parts().0
    }

    /// The error as the evidence records it.
    pub fn evidence(&self) -> GatewayError {
        let (status, _, code, _) = self.parts();
        GatewayError {
            status,
            code: code.to_owned(),
            message: self.message(),
        }
    }

    /// The error object in the caller's shape, as a reply body or a stream's error event
    /// carries it.
    fn body(&self, shape: ErrorShape) -> serde_json::Value {
        let (status, kind, code, param) = self.parts();
        match shape {
            ErrorShape::OpenAi => json!({
                "error": {"message": self.message(), "type": kind, "param": param, "code": code}
            }),
            ErrorShape::Anthropic => json!({
                "type": "error",
                "error": {"type": anthropic_type(status), "message": self.message(), "code": code}
            }),
        }
    }

    /// The reply in the caller's error shape, with the evidence id so the caller can cite it.
    pub fn reply(&self, evidence_id: Option<&str>, shape: ErrorShape) -> LocalReply {
        let status = self.status();
        let body = self.body(shape);

        let mut headers = Vec::new();
        if let Some(id) = evidence_id {
            headers.push((crate::EVIDENCE_ID_HEADER.to_owned(), id.to_owned()));
        }
        if matches!(self, Self::EvidenceUnavailable) {
            headers.push(("retry-after".to_owned(), "5".to_owned()));
        }
        if status == 401 {
            headers.push(("www-authenticate".to_owned(), "Bearer".to_owned()));
        }

        LocalReply {
            status,
            headers,
            body: body.to_string().into_bytes(),
        }
    }

    /// The last event of a stream that the gateway stops, in the API's own streaming error
    /// shape: OpenAI's SDKs raise on a data event holding an `error` object, Anthropic's on
    /// an `error` event. The status cannot change any more (the answer has begun), so the
    /// event carries the error's code.
    pub fn stream_event(&self, shape: ErrorShape) -> Vec<u8> {
        let body = self.body(shape);
        match shape {
            ErrorShape::OpenAi => format!("data: {body}\n\n"),
            ErrorShape::Anthropic => format!("event: error\ndata: {body}\n\n"),
        }
        .into_bytes()
    }
}

/// Anthropic's error `type` for a status.
fn anthropic_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_anthropic_caller_gets_anthropic_error_shape() {
        let refusal = Refusal::Unauthenticated {
            result: AuthResult::UnknownKey,
            message: "Invalid API key.",
        };

        let reply = refusal.reply(None, ErrorShape::Anthropic);
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();

        assert_eq!(reply.status, 401);
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "authentication_error");
        assert_eq!(body["error"]["message"], "Invalid API key.");
    }

    #[test]
    fn a_policy_denial_is_403_with_the_reason_in_openai_shape() {
        let refusal = Refusal::PolicyDenied {
            reasons: vec!["Department not authorized for this model".to_owned()],
        };

        let reply = refusal.reply(Some("evt_1"), ErrorShape::OpenAi);
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();

        assert_eq!(reply.status, 403);
        assert_eq!(
            body["error"]["message"],
            "Department not authorized for this model"
        );
        assert_eq!(body["error"]["code"], "policy_denied");
        assert!(reply
            .headers
            .contains(&("x-mercator-evidence-id".to_owned(), "evt_1".to_owned())));
    }

    #[test]
    fn a_bad_field_is_400_with_param() {
        let refusal = Refusal::InvalidRequest(RequestError::Field {
            field: "messages".to_owned(),
            message: "is required".to_owned(),
        });

        let reply = refusal.reply(None, ErrorShape::OpenAi);
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();

        assert_eq!(reply.status, 400);
        assert_eq!(body["error"]["param"], "messages");
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn a_stopped_stream_ends_with_an_error_event_in_each_apis_shape() {
        let refusal = Refusal::ForbiddenContent {
            name: "codeword".to_owned(),
        };

        let openai = String::from_utf8(refusal.stream_event(ErrorShape::OpenAi)).unwrap();
        let anthropic = String::from_utf8(refusal.stream_event(ErrorShape::Anthropic)).unwrap();

        let data = openai
            .strip_prefix("data: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        let body: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(body["error"]["code"], "forbidden_content");
        assert!(anthropic.starts_with("event: error\ndata: {"));
        let data = anthropic.split_once("data: ").unwrap().1.trim_end();
        let body: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "permission_error");
    }

    #[test]
    fn a_full_evidence_backlog_asks_the_caller_to_retry() {
        let reply = Refusal::EvidenceUnavailable.reply(None, ErrorShape::OpenAi);

        assert_eq!(reply.status, 503);
        assert!(reply.headers.iter().any(|(name, _)| name == "retry-after"));
    }
}
