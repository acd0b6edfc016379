//! The stand-in's one error type, and the one place that turns it into a provider-shaped answer.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::scenario::Scenario;

/// Which provider's wire format an answer must use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI chat completions: `{"error":{"message","type","param","code"}}`.
    OpenAi,
    /// Anthropic messages: `{"type":"error","error":{"type","message"}}`.
    Anthropic,
}

impl Dialect {
    /// The dialect of an endpoint, judged by its path (for answers given before a route is known).
    pub fn for_path(path: &str) -> Self {
        if path.starts_with("/v1/messages") {
            Self::Anthropic
        } else {
            Self::OpenAi
        }
    }
}

/// Everything the stand-in refuses or fails, each answered in the caller's provider shape.
#[derive(Debug, thiserror::Error)]
pub enum StandinError {
    /// `--expect-api-key` was given and the request carried no key or another one
    /// (`Authorization: Bearer` for OpenAI, `x-api-key` for Anthropic).
    #[error("the provider stand-in did not receive the API key it expects")]
    InvalidApiKey,

    /// The body is not JSON, misses a field the provider requires, or a field is out of range.
    #[error("{message}")]
    InvalidRequest {
        /// What is wrong, for the caller.
        message: String,
        /// The request field at fault, where one is (OpenAI reports it as `param`).
        param: Option<&'static str>,
    },

    /// `x-standin-scenario` names a scenario that the stand-in does not know.
    #[error(
        "unknown provider stand-in scenario `{0}`; known scenarios: {known}",
        known = Scenario::NAMES.join(", ")
    )]
    UnknownScenario(String),

    /// A stream-only scenario (`cut-stream`, `keep-alive`, `split-events`, `stream-error`)
    /// on a request that did not ask to stream.
    #[error("this provider stand-in scenario needs a streaming request (\"stream\": true)")]
    CutStreamNeedsStream,

    /// `x-standin-scenario: error-500`: the provider failing on its side.
    #[error("the provider stand-in simulated an internal server error (scenario error-500)")]
    SimulatedServerError,

    /// The body could not be read whole: larger than the limit, or the connection broke.
    #[error(
        "the request body could not be read whole; the provider stand-in accepts at most \
         {limit} bytes",
        limit = crate::MAX_BODY_BYTES
    )]
    UnreadableBody,

    /// No endpoint of the stand-in has this method and path.
    #[error("the provider stand-in has no endpoint {method} {path}")]
    NotFound {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
    },
}

impl StandinError {
    fn status(&self) -> StatusCode {
        match self {
            Self::InvalidApiKey => StatusCode::UNAUTHORIZED,
            Self::InvalidRequest { .. } | Self::UnknownScenario(_) | Self::CutStreamNeedsStream => {
                StatusCode::BAD_REQUEST
            }
            Self::SimulatedServerError => StatusCode::INTERNAL_SERVER_ERROR,
            Self::UnreadableBody => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
        }
    }

    /// The `type` of OpenAI's error object and its `code`.
    fn openai_type_and_code(&self) -> (&'static str, Option<&'static str>) {
        match self {
            Self::InvalidApiKey => ("invalid_request_error", Some("invalid_api_key")),
            Self::InvalidRequest { .. } | Self::CutStreamNeedsStream => {
                ("invalid_request_error", None)
            }
            Self::UnknownScenario(_) => ("invalid_request_error", Some("unknown_standin_scenario")),
            Self::SimulatedServerError => ("server_error", None),
            Self::UnreadableBody => ("invalid_request_error", Some("request_too_large")),
            Self::NotFound { .. } => ("invalid_request_error", Some("unknown_url")),
        }
    }

    /// The `error.type` of Anthropic's error object.
    fn anthropic_type(&self) -> &'static str {
        match self {
            Self::InvalidApiKey => "authentication_error",
            Self::InvalidRequest { .. } | Self::UnknownScenario(_) | Self::CutStreamNeedsStream => {
                "invalid_request_error"
            }
            Self::SimulatedServerError => "api_error",
            Self::UnreadableBody => "request_too_large",
            Self::NotFound { .. } => "not_found_error",
        }
    }

    /// The answer to this error, with the status code and body shape of `dialect`.
    pub fn into_response(self, dialect: Dialect) -> Response {
        let status = self.status();
        tracing::debug!(
            standin.dialect = ?dialect,
            http.status = status.as_u16(),
            error = %self,
            "provider stand-in refused a request"
        );

        let body = match dialect {
            Dialect::OpenAi => {
                let (kind, code) = self.openai_type_and_code();
                let param = match &self {
                    Self::InvalidRequest { param, .. } => *param,
                    _ => None,
                };
                json!({
                    "error": {
                        "message": self.to_string(),
                        "type": kind,
                        "param": param,
                        "code": code,
                    }
                })
            }
            Dialect::Anthropic => json!({
                "type": "error",
                "error": { "type": self.anthropic_type(), "message": self.to_string() },
            }),
        };
        (status, Json(body)).into_response()
    }
}
